"""
test_messages.py — storing and reading messages (storaged.message.store,
fetch, list; storaged.mailbox.status; the storaged.mailbox.changed event):
streamed chunks, bytes stored once, per-delivery prefixes, the header
cache, UIDs and MODSEQ, idempotent retries, quota, a full disk, 0-byte and
50 MB messages with storaged's memory measured, and what is left after a
sender or storaged dies half way.

Run: make && ROOST_BIN=$PWD/build/bin /usr/bin/python3 -m pytest tests/e2e/test_messages.py -q
"""

import hashlib
import json
import os
import signal
import subprocess
import threading
import time

import pytest
import zmq

import bus as buslib
from bus import WAIT, new_id
from store import (CHUNK, db_query, fetch, fetch_all, listing, message, status, store, store_ok,
                   with_users)
from conftest import wait_sockets
from test_accounts import PASSWORD, add_user, ok, start_storaged

ALICE = "alice@example.org"
BOB = "bob@example.org"


@pytest.fixture
def sd(bus):
    """A bus with storaged, the domain example.org and the users alice and bob."""
    return with_users(bus, ALICE, BOB)


def blobs(b):
    return db_query(b.data_dir, "SELECT count(*) FROM blobs")[0][0]


def chunk_rows(b):
    return db_query(b.data_dir, "SELECT count(*) FROM blob_chunks")[0][0]


def vm_kb(pid, key):
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1])
    raise KeyError(key)


# ---- store, fetch, list ----------------------------------------------------------------


def test_store_fetch_list_status(sd):
    c = sd.c
    data = message(subject="Lunch?")
    rep = store_ok(c, [{"address": ALICE}], data, internaldate=1700000000)
    st = rep["stored"]
    assert len(st) == 1 and st[0]["address"] == ALICE and st[0]["mailbox"] == "INBOX"
    assert st[0]["uid"] == 1 and st[0]["modseq"] == 2
    assert fetch_all(c, ALICE, "INBOX", 1) == data
    lst = listing(c, ALICE, "INBOX", headers=True)
    assert lst["status"] == "ok" and lst["uidnext"] == 2 and lst["highestmodseq"] == 2, lst
    m = lst["messages"][0]
    assert m["uid"] == 1 and m["flags"] == [] and m["size"] == len(data)
    assert m["internaldate"] == 1700000000 and m["modseq"] == 2
    assert m["headers"]["subject"] == "Lunch?" and m["headers"]["from"] == "Bob <bob@example.net>"
    assert m["headers"]["to"] == ALICE and "cc" not in m["headers"]
    assert m["date_sent"] == 1795510800          # Tue, 24 Nov 2026 10:00:00 +0100
    assert data[m["body_offset"]:] == b"Hi there.\r\n"
    s = status(c, ALICE)
    assert (s["messages"], s["unseen"], s["deleted"], s["size"], s["first_unseen"]) == (
        1, 1, 0, len(data), 1)
    assert s["uidvalidity"] == st[0]["uidvalidity"]


def test_one_request_without_chunk(sd):
    data = message()
    rep, _ = sd.c.call("storaged", {"type": "storaged.message.store", "idem": new_id(),
                                    "deliveries": [{"address": ALICE, "mailbox": "Archive",
                                                    "flags": ["\\Seen", "$Work", "\\flagged"]}]},
                       raw=data)
    assert rep["status"] == "ok" and rep["stored"][0]["mailbox"] == "Archive", rep
    m = listing(sd.c, ALICE, "Archive")["messages"][0]
    assert m["flags"] == ["\\Seen", "\\Flagged", "$Work"]
    assert status(sd.c, ALICE, "Archive")["unseen"] == 0


def test_uids_increase_and_modseq_too(sd):
    uids, seqs = [], []
    for i in range(12):
        rep = store_ok(sd.c, [{"address": ALICE}], message(subject="n%d" % i))
        uids.append(rep["stored"][0]["uid"])
        seqs.append(rep["stored"][0]["modseq"])
    assert uids == list(range(1, 13)) and seqs == sorted(set(seqs))
    lst = listing(sd.c, ALICE, "INBOX", uids="3:5,10:*", limit=5)
    assert [m["uid"] for m in lst["messages"]] == [3, 4, 5, 10, 11] and lst["next"] == 12
    lst = listing(sd.c, ALICE, "INBOX", uids="12:*")
    assert [m["uid"] for m in lst["messages"]] == [12] and "next" not in lst
    assert [m["uid"] for m in listing(sd.c, ALICE, "INBOX", changedsince=seqs[9])["messages"]] == [11, 12]


def test_many_recipients_share_one_blob_with_their_prefix(sd):
    data = message(body=b"x" * 5000)
    rep = store_ok(sd.c, [{"address": ALICE, "prefix": "Delivered-To: alice@example.org\r\n"},
                          {"address": BOB, "prefix": "Delivered-To: bob@example.org\r\n"},
                          {"address": BOB, "mailbox": "Junk"}], data)
    assert [(s["address"], s["mailbox"]) for s in rep["stored"]] == [
        (ALICE, "INBOX"), (BOB, "INBOX"), (BOB, "Junk")]
    assert blobs(sd) == 1
    a = fetch_all(sd.c, ALICE, "INBOX", 1)
    b = fetch_all(sd.c, BOB, "INBOX", 1)
    assert a == b"Delivered-To: alice@example.org\r\n" + data
    assert b == b"Delivered-To: bob@example.org\r\n" + data
    assert fetch_all(sd.c, BOB, "Junk", 1) == data
    m = listing(sd.c, BOB, "INBOX", headers=True)["messages"][0]
    assert m["size"] == len(b) and b[m["body_offset"]:] == b"x" * 5000
    # quota is charged per mailbox copy
    used = dict(db_query(sd.data_dir, "SELECT localpart, used_bytes FROM users"))
    assert used["alice"] == len(a) and used["bob"] == len(b) + len(data)


def test_fetch_ranges(sd):
    data = bytes(range(256)) * 20
    store_ok(sd.c, [{"address": ALICE, "prefix": "X-A: 1\r\n"}], data, chunk=1000)
    whole = b"X-A: 1\r\n" + data
    for off, n in [(0, 3), (5, 10), (8, 1000), (999, 2), (1007, 1), (len(whole) - 3, 100),
                   (len(whole), 10), (len(whole) + 50, 10)]:
        rep, raw = fetch(sd.c, ALICE, "INBOX", 1, off, n)
        assert rep["status"] == "ok", rep
        assert (raw or b"") == whole[off:off + n], (off, n)
        assert rep["size"] == len(whole)


def test_mailbox_changed_event(sd):
    sub = buslib.zctx().socket(zmq.SUB)
    sub.setsockopt(zmq.LINGER, 0)
    sub.setsockopt(zmq.SUBSCRIBE, b"storaged.mailbox.changed")
    sub.connect("ipc://%s/events.out" % sd.dir)
    try:
        time.sleep(0.5)   # the subscription reaches busd asynchronously
        rep = store_ok(sd.c, [{"address": ALICE}, {"address": BOB, "mailbox": "Sent"}], message())
        got = []
        deadline = time.monotonic() + WAIT
        while len(got) < 2 and time.monotonic() < deadline:
            if sub.poll(500):
                frames = sub.recv_multipart()
                got.append(json.loads(frames[1]))
        assert len(got) == 2, got
        by = {(e["address"], e["mailbox"]): e for e in got}
        e = by[(ALICE, "INBOX")]
        assert e["kind"] == "new" and e["uids"] == "1" and e["highestmodseq"] == rep["stored"][0]["modseq"]
        assert by[(BOB, "Sent")]["uidvalidity"] == rep["stored"][1]["uidvalidity"]
    finally:
        sub.close(0)


# ---- retries -----------------------------------------------------------------------------


def test_retry_stores_nothing_new(sd):
    data = message(body=b"y" * (3 * CHUNK))
    idem = new_id("smtp")
    first = store_ok(sd.c, [{"address": ALICE}], data, idem=idem)
    # the whole transaction again (a new stream, the same idem)
    again = store_ok(sd.c, [{"address": ALICE}], data, idem=idem)
    assert again["stored"] == first["stored"]
    assert status(sd.c, ALICE)["messages"] == 1 and blobs(sd) == 1
    # a retry that arrives in one piece, without chunks
    rep, _ = sd.c.call("storaged", {"type": "storaged.message.store", "idem": idem,
                                    "deliveries": [{"address": ALICE}]}, raw=data)
    assert rep["stored"] == first["stored"]
    assert status(sd.c, ALICE)["messages"] == 1 and blobs(sd) == 1


def test_past_deadline_stores_nothing(sd):
    """The sender gave up (smtpd said 451): a store that reaches storaged
    after its deadline is refused, so the remote side's retry is the only
    copy; the same idem later, in time, stores it once."""
    data = message(body=b"d" * (2 * CHUNK + 5))
    idem = new_id("smtp")
    past = int(time.time() * 1000) - 1
    rep = store(sd.c, [{"address": ALICE}], data, idem=idem, deadline=past)
    assert rep["status"] == "error" and rep["code"] == "timeout", rep
    rep, _ = sd.c.call("storaged", {"type": "storaged.message.store", "idem": idem,
                                    "deliveries": [{"address": ALICE}], "deadline": past},
                       raw=message())
    assert rep["status"] == "error" and rep["code"] == "timeout", rep
    assert status(sd.c, ALICE)["messages"] == 0 and blobs(sd) == 0
    store_ok(sd.c, [{"address": ALICE}], data, idem=idem,
             deadline=int(time.time() * 1000) + 600000)
    assert status(sd.c, ALICE)["messages"] == 1 and blobs(sd) == 1


def test_stalled_storaged_does_not_store_after_the_deadline(sd):
    """storaged stalls (stopped) while a store waits in busd's queue; when
    it runs again the deadline has passed: nothing stored."""
    sd.storaged.kill(signal.SIGSTOP)
    try:
        reply = {}

        def send():
            reply["rep"] = store(sd.c, [{"address": ALICE}], message(), timeout=WAIT,
                                 deadline=int(time.time() * 1000) + 500)
        t = threading.Thread(target=send, daemon=True)
        t.start()
        time.sleep(1.5)
    finally:
        sd.storaged.kill(signal.SIGCONT)
    t.join(WAIT)
    rep = reply["rep"]
    assert rep["status"] == "error" and rep["code"] == "timeout", rep
    assert status(sd.c, ALICE)["messages"] == 0


def test_resent_last_chunk_gets_the_first_result(sd):
    data = message(body=b"z" * (CHUNK + 10))
    idem, stream = new_id("smtp"), new_id("st")
    first = store_ok(sd.c, [{"address": ALICE}], data, idem=idem, stream=stream)
    # The reply to the last chunk was lost and the chunk is sent again:
    # busd has closed the stream, so the sender restarts it (same idem).
    env = {"type": "storaged.message.store", "idem": idem, "deliveries": [{"address": ALICE}],
           "chunk": {"stream": stream, "seq": 1, "last": True}}
    rep, _ = sd.c.call("storaged", env, raw=data[CHUNK:])
    assert rep["status"] == "ok" or rep["code"] == "stream_broken", rep
    if rep["status"] == "ok":
        assert rep["stored"] == first["stored"], rep
    again = store_ok(sd.c, [{"address": ALICE}], data, idem=idem)
    assert again["stored"] == first["stored"]
    assert status(sd.c, ALICE)["messages"] == 1 and blobs(sd) == 1


def test_resent_middle_chunk_is_acknowledged_once(sd):
    data = message(body=b"w" * (2 * CHUNK + 10))
    idem, stream = new_id("smtp"), new_id("st")
    rep = store(sd.c, [{"address": ALICE}], data, idem=idem, stream=stream, upto=2)
    assert rep["status"] == "ok" and rep["bytes"] == 2 * CHUNK
    env = {"type": "storaged.message.store", "idem": idem, "deliveries": [{"address": ALICE}],
           "chunk": {"stream": stream, "seq": 1, "last": False}}
    again, _ = sd.c.call("storaged", env, raw=data[CHUNK:2 * CHUNK])
    assert again["status"] == "ok" and again["bytes"] == 2 * CHUNK
    env["chunk"] = {"stream": stream, "seq": 2, "last": True}
    last, _ = sd.c.call("storaged", env, raw=data[2 * CHUNK:])
    assert last["status"] == "ok" and last["size"] == len(data), last
    assert fetch_all(sd.c, ALICE, "INBOX", 1) == data


# ---- bad input -----------------------------------------------------------------------------


@pytest.mark.parametrize("deliveries,code,needle", [
    ([{"address": "nobody@example.org"}], "not_found", "no user nobody@example.org"),
    ([{"address": ALICE, "mailbox": "Nope"}], "not_found", "no mailbox Nope"),
    ([{"address": ALICE, "mailbox": "a/../b"}], "invalid", "mailbox name"),
    ([{"address": "not-an-address"}], "invalid", "deliveries[0]"),
    ([{"address": ALICE, "prefix": "Delivered-To: x\n"}], "invalid", "prefix"),
    ([{"address": ALICE, "prefix": "\r\n"}], "invalid", "prefix"),
    ([{"address": ALICE, "flags": ["\\Recent"]}], "invalid", "flags"),
    ([{"address": ALICE, "flags": ["bad word"]}], "invalid", "flags"),
    ([], "invalid", "nothing to do"),
    ([{"address": ALICE}, {"address": "nobody@example.org"}], "not_found", "nobody"),
])
def test_bad_store_stores_nothing(sd, deliveries, code, needle):
    rep = store(sd.c, deliveries, message(body=b"q" * (CHUNK + 1)))
    assert rep["status"] != "ok" and rep["code"] == code and needle in rep["error"], rep
    assert status(sd.c, ALICE)["messages"] == 0
    assert blobs(sd) == 0 and chunk_rows(sd) == 0


def test_chunks_out_of_order_fail_the_stream(sd):
    data = message(body=b"o" * (3 * CHUNK))
    stream, idem = new_id("st"), new_id()
    env = {"type": "storaged.message.store", "idem": idem, "deliveries": [{"address": ALICE}],
           "chunk": {"stream": stream, "seq": 0, "last": False}}
    assert sd.c.call("storaged", env, raw=data[:CHUNK])[0]["status"] == "ok"
    env["chunk"] = {"stream": stream, "seq": 2, "last": False}
    rep, _ = sd.c.call("storaged", env, raw=data[2 * CHUNK:3 * CHUNK])
    assert rep["status"] == "invalid" and "out of order" in rep["error"], rep
    env["chunk"] = {"stream": stream, "seq": 1, "last": True}
    rep, _ = sd.c.call("storaged", env, raw=data[CHUNK:2 * CHUNK])
    assert rep["code"] == "stream_lost", rep
    assert blobs(sd) == 0


def test_too_big(make_bus):
    b = make_bus(env={"ROOST_MAX_MESSAGE_SIZE": "300000"})
    b.storaged = start_storaged(b)
    ok(b, "domain", "add", "example.org")
    add_user(b, ALICE)
    c = b.client()
    assert store(c, [{"address": ALICE}], b"a" * 300000)["status"] == "ok"
    rep = store(c, [{"address": ALICE}], b"a" * 300001)
    assert rep["code"] == "too_big" and "larger than allowed" in rep["error"], rep
    assert db_query(b.data_dir, "SELECT count(*) FROM blobs")[0][0] == 1


def test_quota_exceeded_is_mailbox_full(sd):
    ok(sd, "domain", "add", "example.net")
    add_user(sd, "small@example.net", PASSWORD, "--quota", "10000")
    small = "small@example.net"
    store_ok(sd.c, [{"address": small}], b"m" * 6000)
    before = db_query(sd.data_dir, "SELECT used_bytes FROM users WHERE localpart = 'small'")[0][0]
    rep = store(sd.c, [{"address": ALICE}, {"address": small}], b"m" * 6000)
    assert rep["code"] == "mailbox_full" and small in rep["error"], rep
    assert status(sd.c, small)["messages"] == 1 and status(sd.c, ALICE)["messages"] == 0
    assert db_query(sd.data_dir, "SELECT used_bytes FROM users WHERE localpart = 'small'")[0][0] == before
    assert blobs(sd) == 1
    store_ok(sd.c, [{"address": small}], b"m" * 4000)     # exactly up to the quota


def usage(c, address, **kw):
    rep, _ = c.call("storaged", dict({"type": "storaged.user.usage", "address": address}, **kw))
    return rep


def test_user_usage_is_one_users_quota_and_usage(sd):
    """storaged.user.usage (imapd's GETQUOTA): the numbers of the user asked
    about, kept by the triggers through store, copy and expunge; with a
    mailbox, that mailbox must exist."""
    ok(sd, "domain", "add", "example.net")
    add_user(sd, "small@example.net", PASSWORD, "--quota", "10000")
    small = "small@example.net"
    rep = usage(sd.c, "Small@Example.NET")
    assert rep["status"] == "ok", rep
    assert (rep["address"], rep["quota_bytes"], rep["used_bytes"]) == (small, 10000, 0)
    store_ok(sd.c, [{"address": small}], b"m" * 6000)
    store_ok(sd.c, [{"address": ALICE}], b"a" * 3000)
    rep = usage(sd.c, small, mailbox="inbox")
    assert (rep["quota_bytes"], rep["used_bytes"]) == (10000, 6000), rep
    rep = usage(sd.c, ALICE)
    assert (rep["quota_bytes"], rep["used_bytes"]) == (0, 3000), rep   # 0: no limit
    # a copy counts again; an expunge gives the bytes back
    cp, _ = sd.c.call("storaged", {"type": "storaged.message.copy", "idem": new_id("cp"),
                                   "address": ALICE, "mailbox": "INBOX", "uids": "1",
                                   "to": "Archive"})
    assert cp["status"] == "ok", cp
    assert usage(sd.c, ALICE)["used_bytes"] == 6000
    fl, _ = sd.c.call("storaged", {"type": "storaged.message.flags", "idem": new_id("fl"),
                                   "address": ALICE, "mailbox": "INBOX", "uids": "1",
                                   "op": "add", "flags": ["\\Deleted"]})
    assert fl["status"] == "ok", fl
    ex, _ = sd.c.call("storaged", {"type": "storaged.message.expunge", "idem": new_id("ex"),
                                   "address": ALICE, "mailbox": "INBOX"})
    assert ex["status"] == "ok" and ex["expunged"] == "1", ex
    assert usage(sd.c, ALICE)["used_bytes"] == 3000
    assert usage(sd.c, small)["used_bytes"] == 6000      # nobody else's numbers moved
    rep = usage(sd.c, ALICE, mailbox="No/Such")
    assert rep["status"] == "error" and rep["code"] == "not_found", rep
    rep = usage(sd.c, "nobody@example.org")
    assert rep["status"] == "error" and rep["code"] == "not_found", rep
    rep = usage(sd.c, "not an address")
    assert rep["status"] == "invalid", rep


# ---- sizes and memory ----------------------------------------------------------------------


def test_zero_byte_message(sd):
    rep = store_ok(sd.c, [{"address": ALICE}], b"")
    assert rep["size"] == 0 and rep["stored"][0]["uid"] == 1
    rep, raw = fetch(sd.c, ALICE, "INBOX", 1)
    assert rep["status"] == "ok" and rep["size"] == 0 and (raw or b"") == b""
    m = listing(sd.c, ALICE, "INBOX", headers=True)["messages"][0]
    assert m["size"] == 0 and m["headers"] == {} and m["date_sent"] is None


def test_50_mb_message_with_bounded_memory(sd):
    pid = sd.storaged.pid
    size = 50 * 1000 * 1000
    seed = hashlib.sha256(b"roost").digest() * 2048           # 64 KiB of noise
    data = (seed * (size // len(seed) + 1))[:size]
    # The peak so far is the password KDF's (scrypt, 32 MiB): start afresh.
    with open("/proc/%d/clear_refs" % pid, "w") as f:
        f.write("5")
    base = vm_kb(pid, "VmRSS")
    rep = store_ok(sd.c, [{"address": ALICE}, {"address": BOB}], data, timeout=WAIT * 4)
    got = hashlib.sha256()
    off = 0
    while off < size:
        r, raw = fetch(sd.c, BOB, "INBOX", rep["stored"][1]["uid"], off, 1024 * 1024, timeout=WAIT * 2)
        assert r["status"] == "ok", r
        got.update(raw)
        off += len(raw)
    assert got.hexdigest() == hashlib.sha256(data).hexdigest()
    peak = vm_kb(pid, "VmHWM")
    grew = peak - base
    print("storaged VmRSS before %d KiB, peak %d KiB (+%d KiB) for a 50 MB message" % (base, peak, grew))
    if buslib.SANITIZED:
        return  # ASan's quarantine keeps freed frames: measured without sanitizers
    # A few 1 MiB frames and chunk buffers and SQLite's cache, not 50 MB.
    assert grew < 16 * 1024, "storaged grew by %d KiB storing 50 MB" % grew
    assert blobs(sd) == 1 and status(sd.c, ALICE)["size"] == size


# ---- failures half way ---------------------------------------------------------------------


def test_abandoned_stream_leaves_nothing_after_restart(sd):
    data = message(body=b"h" * (3 * CHUNK))
    rep = store(sd.c, [{"address": ALICE}], data, upto=2)
    assert rep["status"] == "ok" and rep["bytes"] == 2 * CHUNK
    assert db_query(sd.data_dir, "SELECT count(*) FROM blobs WHERE complete = 0")[0][0] == 1
    sd.storaged.kill()
    sd.storaged.wait()
    sd.storaged = start_storaged(sd)
    assert blobs(sd) == 0 and chunk_rows(sd) == 0
    assert status(sd.c, ALICE)["messages"] == 0
    # and the stream is gone: its next chunk says so
    rep = store(sd.c, [{"address": ALICE}], data)
    assert rep["status"] == "ok"


def mount_tiny(b, size="3m"):
    """Puts b's data dir on a small tmpfs (needs root: mount); unmounted at teardown."""
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=" + size, "tmpfs", b.data_dir],
                       capture_output=True, text=True)
    if r.returncode != 0:
        pytest.skip("cannot mount a tmpfs here: %s" % r.stderr.strip())
    b.unmount = lambda: subprocess.run(["umount", "-l", b.data_dir])


@pytest.fixture
def tiny_bus(make_bus):
    made = []

    def make(min_free):
        b = make_bus(env={"ROOST_MIN_FREE_SPACE": str(min_free)}, start=False)
        mount_tiny(b)
        made.append(b)
        b.start_busd()
        wait_sockets(b)
        b.wait_ready()
        b.storaged = start_storaged(b)
        ok(b, "domain", "add", "example.org")
        add_user(b, ALICE)
        return b
    yield make
    for b in made:
        if getattr(b, "storaged", None) is not None and b.storaged.alive():
            b.storaged.kill()
            b.storaged.wait()
        b.unmount()


def fill_until_refused(c):
    stored = []
    for i in range(60):
        data = os.urandom(200 * 1024)
        rep = store(c, [{"address": ALICE}], data, chunk=64 * 1024)
        if rep["status"] != "ok":
            return stored, rep
        stored.append((rep["stored"][0]["uid"], data))
    raise AssertionError("3 MiB never filled up")


@pytest.mark.parametrize("min_free", [1024 * 1024, 0], ids=["min_free_space", "enospc"])
def test_disk_full_is_a_clear_temporary_failure(tiny_bus, min_free):
    """With min_free_space storaged refuses before the file system is full;
    with 0 SQLite itself hits ENOSPC: the same clear error either way."""
    b = tiny_bus(min_free)
    c = b.client()
    stored, full = fill_until_refused(c)
    assert full["code"] == "disk_full" and full["error"] == "temporary failure: disk full", full
    assert len(stored) >= 3
    # nothing partial: every stored message intact, the refused one nowhere
    for uid, data in stored:
        assert fetch_all(c, ALICE, "INBOX", uid) == data
    assert status(c, ALICE)["messages"] == len(stored)
    assert db_query(b.data_dir, "PRAGMA integrity_check")[0][0] == "ok"
    assert listing(c, ALICE, "INBOX")["status"] == "ok"
    assert "disk_full" in b.storaged.log() or "disk full" in b.storaged.log()
    # room again (the operator freed space): storing works, and the
    # refused message's first chunks are gone after the next commit
    subprocess.run(["mount", "-o", "remount,size=8m", b.data_dir], check=True)
    store_ok(c, [{"address": ALICE}], message())
    buslib.wait_until(lambda: db_query(b.data_dir, "SELECT count(*) FROM blobs WHERE complete = 0")
                      [0][0] == 0, what="the refused message's chunks deleted")
    assert status(c, ALICE)["messages"] == len(stored) + 1
    assert db_query(b.data_dir, "PRAGMA integrity_check")[0][0] == "ok"


# ---- checkpoints (ckpt.c) ---------------------------------------------------------------

def test_checkpoints_run_off_the_loop_and_keep_the_wal_bounded(sd):
    """3,000+ WAL frames of 100 KiB messages: the checkpoint thread copies
    them into the database (storaged.control.stats counts its runs), the
    WAL starts over instead of growing to 12 MB, and every message reads
    back whole."""
    b = sd
    datas = []
    for i in range(110):
        data = message(subject="ckpt %d" % i, body=(b"%06d " % i) * 14600 + b"\r\n")
        store_ok(b.c, [{"address": "alice@example.org"}], data)
        datas.append(data)
    wal = os.path.join(b.data_dir, "roost.db-wal")
    deadline = time.time() + WAIT
    while True:
        rep, _ = b.c.call("storaged.control", {"type": "storaged.control.stats"})
        ck = rep["stats"].get("checkpoints", {})
        if ck.get("thread", 0) >= 1 or time.time() > deadline:
            break
        time.sleep(0.2)
    assert ck.get("thread", 0) >= 1, rep["stats"]
    assert ck.get("loop") == 0, ck   # the thread kept up: the loop never had to
    assert os.path.getsize(wal) < 8 * 1024 * 1024, os.path.getsize(wal)
    for uid in (1, 55, 110):
        assert fetch_all(b.c, "alice@example.org", "INBOX", uid) == datas[uid - 1]
    assert status(b.c, "alice@example.org")["messages"] == 110
