"""
store.py — helpers for tests that store and read messages through
storaged (storaged.message.store / fetch / list, storaged.mailbox.status),
speaking the bus directly with bus.Client.

    rep = store(c, [{"address": "alice@example.org"}], data)
    data2 = fetch_all(c, "alice@example.org", "INBOX", rep["stored"][0]["uid"])
"""

import hashlib
import sqlite3

from bus import WAIT, new_id

CHUNK = 256 * 1024      # BUS_CHUNK_SIZE
STORE = "storaged.message.store"


def chunks(data, size=CHUNK):
    """The pieces a stream of data sends: at least one (an empty, last one)."""
    if not data:
        return [b""]
    return [data[i:i + size] for i in range(0, len(data), size)]


def store(c, deliveries, data, idem=None, chunk=CHUNK, enqueue=None, internaldate=None,
          stream=None, timeout=WAIT, upto=None, deadline=None):
    """Streams data as one message; returns the last reply's envelope (or
    the first that was not ok). upto: stop after that many chunks (a sender
    that goes away), returning the last acknowledgement. deadline: unix ms
    after which storaged must not store it."""
    idem = idem or new_id("idem")
    stream = stream or new_id("st")
    pieces = chunks(data, chunk)
    rep = None
    for seq, piece in enumerate(pieces):
        if upto is not None and seq >= upto:
            break
        env = {"type": STORE, "idem": idem, "deliveries": deliveries,
               "chunk": {"stream": stream, "seq": seq, "last": seq == len(pieces) - 1}}
        if enqueue is not None:
            env["enqueue"] = enqueue
        if internaldate is not None:
            env["internaldate"] = internaldate
        if deadline is not None:
            env["deadline"] = deadline
        rep, _ = c.call("storaged", env, raw=piece, timeout=timeout)
        if rep.get("status") != "ok":
            return rep
    return rep


def store_ok(c, deliveries, data, **kw):
    rep = store(c, deliveries, data, **kw)
    assert rep["status"] == "ok", rep
    assert rep["size"] == len(data) and rep["sha256"] == hashlib.sha256(data).hexdigest(), rep
    return rep


def fetch(c, address, mailbox, uid, offset=0, length=None, timeout=WAIT):
    env = {"type": "storaged.message.fetch", "address": address, "mailbox": mailbox, "uid": uid,
           "offset": offset}
    if length is not None:
        env["length"] = length
    return c.call("storaged", env, timeout=timeout)


def fetch_all(c, address, mailbox, uid, piece=1024 * 1024, timeout=WAIT):
    """The whole message, read in pieces (bytes), or raises on an error reply."""
    out, off = [], 0
    while True:
        rep, raw = fetch(c, address, mailbox, uid, off, piece, timeout)
        assert rep["status"] == "ok", rep
        raw = raw or b""
        assert len(raw) == rep["length"], rep
        out.append(raw)
        off += len(raw)
        if off >= rep["size"] or not raw:
            return b"".join(out)


def listing(c, address, mailbox, **fields):
    rep, _ = c.call("storaged", dict({"type": "storaged.message.list", "address": address,
                                      "mailbox": mailbox}, **fields))
    return rep


def status(c, address, mailbox="INBOX"):
    rep, _ = c.call("storaged", {"type": "storaged.mailbox.status", "address": address,
                                 "mailbox": mailbox})
    assert rep["status"] == "ok", rep
    return rep


def with_users(b, *addresses):
    """Starts storaged on bus b with the domain example.org and the users
    (password test_accounts.PASSWORD); b.storaged is the process, b.c a bus
    client."""
    from test_accounts import add_user, ok, start_storaged   # test_accounts needs no store
    b.storaged = start_storaged(b)
    ok(b, "domain", "add", "example.org")
    for address in addresses:
        add_user(b, address)
    b.c = b.client()
    return b


def db_query(data_dir, sql, args=()):
    """Reads roost.db directly (WAL readers do not disturb storaged)."""
    con = sqlite3.connect("file:%s/roost.db?mode=ro" % data_dir, uri=True, timeout=30)
    try:
        return con.execute(sql, args).fetchall()
    finally:
        con.close()


def message(subject="Hello", body=b"Hi there.\r\n", sender="Bob <bob@example.net>",
            to="alice@example.org", extra=b""):
    """A small RFC 5322 message (bytes)."""
    head = ("From: %s\r\nTo: %s\r\nSubject: %s\r\nDate: Tue, 24 Nov 2026 10:00:00 +0100\r\n"
            "Message-ID: <%s@example.net>\r\n" % (sender, to, subject, new_id("m"))).encode()
    return head + extra + b"\r\n" + body
