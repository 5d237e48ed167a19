"""
test_crash.py — storaged killed with SIGKILL at random moments while
clients store messages (issue 3's crash acceptance test).

CLIENTS threads, each with its own bus.Client, store messages one after
another (varied sizes: some streamed in many chunks, some sent whole
without "chunk", a few 0-byte ones; every 7th or so also delivered to a
second user with a prefix, or put on the outbound queue), each with a
unique idem key and a unique marker in its Subject. A client that gets an
error or no reply sends the same message again with the same idem, from
the first chunk, until it is acknowledged: a retry after a lost reply must
not store it twice. The main thread KILLS times waits until the clients
have made progress, sleeps 50-500 ms, SIGKILLs storaged and, while it is
down, checks the database as the crash left it:

  - PRAGMA integrity_check is ok;
  - every acknowledged message is there, once, with the acknowledged UID and
    SHA-256, and nothing else but the few messages still in flight;
  - UIDs are below uidnext, uidnext never goes back, UIDVALIDITY never
    changes, and no UID is ever acknowledged for two different messages;
    each client's UIDs strictly increase;
  - used_bytes is the sum of the sizes, blob reference counts match the
    rows that use them, and every complete blob's chunks add up to its size;

then restarts it, which must delete exactly the incomplete blobs (its
"ready" line says how many). At the end every message is listed (UIDs
strictly increasing in list order), fetched and compared with what was
acknowledged, mailbox status and quota agree, and after one more restart
no incomplete blob is left.

The seed is printed (pytest -s, or on failure); ROOST_CRASH_SEED=N replays
the same message sizes, kinds and kill delays (thread timing still varies).

Run: make && ROOST_BIN=$PWD/build/bin /usr/bin/python3 -m pytest tests/e2e/test_crash.py -q -s
"""

import hashlib
import os
import random
import re
import signal
import sqlite3
import threading
import time

import bus as buslib
from bus import WAIT, new_id
from store import CHUNK, STORE, chunks, fetch_all, listing, status
from test_accounts import add_user, ok, start_storaged

ALICE = "alice@example.org"
BOB = "bob@example.org"
BOB_PREFIX = "Delivered-To: bob@example.org\r\n"
CLIENTS = 4
KILLS = 20
# No reply within this: the request is taken as lost (storaged died with it).
TRY_TIMEOUT = 4.0 if buslib.SANITIZED else 2.0
# Codes after which a client tries again; any other error is a failure.
RETRY_CODES = {"timeout", "unavailable", "stream_lost", "stream_broken", "busy"}


class Msg:
    """One message a client stores: its bytes, how it is sent, what came back."""

    def __init__(self, cid, n, rng, seed):
        self.cid, self.n = cid, n
        self.idem = "crash-%d-%d-%d" % (seed, cid, n)
        r = rng.random()
        if r < 0.03:
            size = 0
        elif r < 0.70:
            size = rng.randint(300, 8 * 1024)
        elif r < 0.94:
            size = rng.randint(8 * 1024, 120 * 1024)
        else:
            size = rng.randint(CHUNK + 1, 3 * CHUNK)
        self.marker = None
        self.data = b""
        if size:
            self.marker = "marker-%s" % self.idem
            head = ("From: Client %d <c%d@example.net>\r\nTo: %s\r\nSubject: %s\r\n"
                    "Message-ID: <%s@example.net>\r\n\r\n" % (cid, cid, ALICE, self.marker,
                                                               self.idem)).encode()
            body = rng.randbytes(max(0, size - len(head))).replace(self.marker.encode(), b"x")
            self.data = head + body
        self.sha = hashlib.sha256(self.data).hexdigest()
        # small ones sometimes whole, without "chunk"; others in 16 KiB to 256 KiB pieces
        self.whole = len(self.data) < 64 * 1024 and rng.random() < 0.3
        self.chunk = rng.choice([CHUNK, CHUNK, 64 * 1024, 16 * 1024])
        self.deliveries = [{"address": ALICE}]
        self.bob = rng.random() < 0.15
        if self.bob:
            self.deliveries.append({"address": BOB, "prefix": BOB_PREFIX})
        self.enqueue = bool(self.data) and rng.random() < 0.1
        self.tries = 0
        self.reply = None

    def envelopes(self):
        """(envelope, raw) of each request of one try (a new stream each time)."""
        base = {"type": STORE, "idem": self.idem, "deliveries": self.deliveries}
        if self.enqueue:
            base["enqueue"] = {"sender": "c%d@example.org" % self.cid,
                               "recipients": ["far@example.net"], "origin": self.idem}
        if self.whole:
            yield dict(base), self.data
            return
        stream = new_id("st")
        pieces = chunks(self.data, self.chunk)
        for seq, piece in enumerate(pieces):
            yield dict(base, chunk={"stream": stream, "seq": seq, "last": seq == len(pieces) - 1}), piece


class Run:
    """What the clients sent and had acknowledged, shared under one lock."""

    def __init__(self, b, seed):
        self.b, self.seed = b, seed
        self.lock = threading.Lock()
        self.stop = threading.Event()
        self.acked = []                  # Msg, in acknowledgement order
        self.pending = {}                # client id -> Msg being stored
        self.uid_owner = {}              # (address, uidvalidity, uid) -> idem
        self.last_uid = {}               # (client, address) -> last acknowledged UID
        self.errors = []                 # problems found by the client threads
        self.codes = {}                  # retry reason -> count

    def client(self, cid):
        rng = random.Random(self.seed * 1000 + cid)
        c = buslib.Client(self.b.dir)
        deadline_after_stop = None
        try:
            n = 0
            while not self.stop.is_set():
                m = Msg(cid, n, rng, self.seed)
                with self.lock:
                    self.pending[cid] = m
                while True:
                    rep, code = self.try_store(c, m)
                    if rep is not None:
                        break
                    with self.lock:
                        self.codes[code] = self.codes.get(code, 0) + 1
                    if code not in RETRY_CODES:
                        self.errors.append("client %d: %s got %s" % (cid, m.idem, code))
                        return
                    if self.stop.is_set():
                        deadline_after_stop = deadline_after_stop or time.monotonic() + WAIT
                        if time.monotonic() > deadline_after_stop:
                            self.errors.append("client %d: %s never acknowledged" % (cid, m.idem))
                            return
                self.acknowledged(cid, m, rep)
                n += 1
        except Exception as e:  # noqa: BLE001 - reported by the main thread
            self.errors.append("client %d: %r" % (cid, e))
        finally:
            c.close()

    def try_store(self, c, m):
        """One try: (last reply, None) once stored, or (None, why)."""
        m.tries += 1
        for env, raw in m.envelopes():
            try:
                rep, _ = c.call("storaged", env, raw=raw, timeout=TRY_TIMEOUT)
            except TimeoutError:
                return None, "timeout"
            if rep.get("status") != "ok":
                return None, "%s" % rep.get("code")
            if "stored" in rep:     # also the answer to a retry of a stored message
                return rep, None
        return None, "the last chunk's reply has no 'stored'"

    def acknowledged(self, cid, m, rep):
        problems = []
        if rep.get("size") != len(m.data) or rep.get("sha256") != m.sha:
            problems.append("size/sha256 %s/%s, sent %d/%s" % (rep.get("size"), rep.get("sha256"),
                                                                len(m.data), m.sha))
        want = [d["address"] for d in m.deliveries]
        got = [s["address"] for s in rep.get("stored", [])]
        if got != want or any(s["mailbox"] != "INBOX" for s in rep["stored"]):
            problems.append("stored %r" % rep.get("stored"))
        if m.enqueue and not rep.get("queued"):
            problems.append("not queued")
        with self.lock:
            for s in rep.get("stored", []):
                key = (s["address"], s["uidvalidity"], s["uid"])
                other = self.uid_owner.setdefault(key, m.idem)
                if other != m.idem:
                    problems.append("UID %r acknowledged for %s too" % (key, other))
                last = self.last_uid.get((cid, s["address"]), 0)
                if s["uid"] <= last:
                    problems.append("UID %d after this client's UID %d" % (s["uid"], last))
                self.last_uid[(cid, s["address"])] = s["uid"]
            m.reply = rep
            self.acked.append(m)
            self.pending.pop(cid, None)
            if problems:
                self.errors.append("%s: %s" % (m.idem, "; ".join(problems)))

    def snapshot(self):
        with self.lock:
            return list(self.acked), list(self.pending.values())


# ---- the database as a crash left it ----------------------------------------------------


def ro(data_dir):
    return sqlite3.connect("file:%s/roost.db?mode=ro" % data_dir, uri=True, timeout=30)


class DbState:
    """What the checks remember from one crash to the next."""

    def __init__(self):
        self.uidvalidity = {}      # address -> UIDVALIDITY of INBOX
        self.uidnext = {}          # address -> uidnext seen last


def check_db(b, run, state, final=False):
    """Checks roost.db (storaged must not be running, or be idle if
    final); returns the number of blobs storaged must drop at start."""
    con = ro(b.data_dir)
    try:
        assert con.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
        boxes = {"%s@example.org" % lp: (mid, uv, un) for mid, lp, uv, un in con.execute(
            "SELECT mb.id, u.localpart, mb.uidvalidity, mb.uidnext FROM mailboxes mb "
            "JOIN users u ON u.id = mb.user_id WHERE mb.name = 'INBOX'")}
        rows = {}
        for addr, (mid, uv, un) in boxes.items():
            assert state.uidvalidity.setdefault(addr, uv) == uv, "UIDVALIDITY of %s changed" % addr
            assert un >= state.uidnext.get(addr, 1), "uidnext of %s went back" % addr
            state.uidnext[addr] = un
            rows[addr] = con.execute(
                "SELECT m.uid, m.size, b.sha256, b.hdr_subject, b.complete FROM messages m "
                "JOIN blobs b ON b.id = m.blob_id WHERE m.mailbox_id = ? ORDER BY m.uid",
                (mid,)).fetchall()
            assert all(r[0] < un for r in rows[addr]), "a UID >= uidnext %d in %s" % (un, addr)
            assert all(r[4] == 1 for r in rows[addr]), "a message of %s on an incomplete blob" % addr
        queue = dict(con.execute("SELECT q.origin, b.sha256 || ' ' || q.id FROM queue q "
                                 "JOIN blobs b ON b.id = q.blob_id").fetchall())
        bad_used = con.execute("SELECT u.localpart, u.used_bytes, (SELECT coalesce(sum(size), 0) "
                               "FROM messages WHERE user_id = u.id) s FROM users u "
                               "WHERE u.used_bytes != s").fetchall()
        assert bad_used == [], "used_bytes is not the sum of sizes: %r" % bad_used
        bad_refs = con.execute("SELECT id, refs FROM blobs b WHERE complete = 1 AND refs != "
                               "(SELECT count(*) FROM messages WHERE blob_id = b.id) + "
                               "(SELECT count(*) FROM queue WHERE blob_id = b.id)").fetchall()
        assert bad_refs == [], "blob reference counts wrong: %r" % bad_refs
        bad_size = con.execute("SELECT id FROM blobs b WHERE complete = 1 AND size != (SELECT "
                               "coalesce(sum(length(data)), 0) FROM blob_chunks "
                               "WHERE blob_id = b.id)").fetchall()
        assert bad_size == [], "complete blobs whose chunks do not add up: %r" % bad_size
        to_drop = con.execute("SELECT count(*) FROM blobs WHERE complete = 0 OR refs <= 0").fetchone()[0]
    finally:
        con.close()
    # Only now what was acknowledged: an ack that arrives after the read
    # was committed before the kill, so it is in what was read.
    acked, pending = run.snapshot()
    check_rows(rows, queue, acked, pending, final)
    return to_drop


def check_rows(rows, queue, acked, pending, final):
    """Acknowledged messages are there once as acknowledged; the rest are
    messages still in flight (none at the end)."""
    in_flight = {m.marker for m in pending}
    for addr in (ALICE, BOB):
        by_uid = {r[0]: r for r in rows[addr]}
        markers = [r[3] for r in rows[addr] if r[3] is not None]
        assert len(markers) == len(set(markers)), "a marker twice in %s" % addr
        mine = [m for m in acked if addr in [d["address"] for d in m.deliveries]]
        seen = set()
        for m in mine:
            uid = next(s["uid"] for s in m.reply["stored"] if s["address"] == addr)
            r = by_uid.get(uid)
            assert r is not None, "%s (UID %d in %s, acknowledged) is missing" % (m.idem, uid, addr)
            size = len(m.data) + (len(BOB_PREFIX) if addr == BOB else 0)
            assert (r[1], r[2], r[3]) == (size, m.sha, m.marker), "UID %d of %s is not %s: %r" % (
                uid, addr, m.idem, r)
            seen.add(uid)
        extra = [r for uid, r in by_uid.items() if uid not in seen]
        assert not (final and extra), "unacknowledged messages in %s: %r" % (addr, extra[:5])
        assert len(extra) <= CLIENTS and all(r[3] in in_flight for r in extra), (
            "messages in %s nobody is storing: %r" % (addr, extra[:5]))
    queued = [m for m in acked if m.enqueue]
    for m in queued:
        assert queue.get(m.idem) == "%s %d" % (m.sha, m.reply["queued"]), "%s not queued" % m.idem
    extra_q = set(queue) - {m.idem for m in queued}
    assert len(extra_q) <= (0 if final else CLIENTS), "queue entries nobody stored: %r" % extra_q


# ---- storaged's restarts ----------------------------------------------------------------


def restart(b):
    """Starts storaged again (start_storaged waits for the new process, not
    the dead one busd may still list); returns the number of blobs it
    dropped at start (its "ready" line)."""
    b.storaged = start_storaged(b)
    pat = re.compile(r"\bready\b.*\bblobs_dropped=(-?\d+)")
    # storaged registers before its start-up sweep ends and logs "ready"
    # after it: busd may list it a moment before the line is written.
    try:
        buslib.wait_until(lambda: pat.search(b.storaged.log()), what="storaged's ready line")
    except Exception:
        raise AssertionError("no ready line in storaged's log:\n%s" % b.storaged.log()) from None
    return int(pat.search(b.storaged.log()).group(1))


def wait_progress(run, since, n):
    """Waits until n more messages were acknowledged (the clients live)."""
    def moved():
        if run.errors:
            raise AssertionError("; ".join(run.errors[:5]))
        return len(run.snapshot()[0]) >= since + n
    buslib.wait_until(moved, timeout=WAIT, interval=0.02, what="%d more acknowledged stores" % n)


# ---- the end: everything through the bus -------------------------------------------------


def verify_through_bus(c, acked):
    """Lists and fetches every message; compares with what was acknowledged."""
    for addr in (ALICE, BOB):
        want = {}
        for m in acked:
            for s in m.reply["stored"]:
                if s["address"] == addr:
                    want[s["uid"]] = m
        listed, start = [], 1
        while True:
            lst = listing(c, addr, "INBOX", headers=True, uids="%d:*" % start)
            assert lst["status"] == "ok", lst
            listed += lst["messages"]
            if "next" not in lst:
                break
            start = lst["next"]
        uids = [x["uid"] for x in listed]
        assert uids == sorted(set(uids)), "UIDs of %s not strictly increasing in list order" % addr
        assert set(uids) == set(want), "%s: listed %d messages, %d acknowledged" % (
            addr, len(uids), len(want))
        assert all(x["uid"] < lst["uidnext"] for x in listed)
        total = 0
        for x in listed:
            m = want[x["uid"]]
            data = (BOB_PREFIX.encode() if addr == BOB else b"") + m.data
            assert x["size"] == len(data) and x["headers"].get("subject") == m.marker, (x, m.idem)
            assert fetch_all(c, addr, "INBOX", x["uid"]) == data, "%s UID %d" % (addr, x["uid"])
            total += len(data)
        st = status(c, addr)
        assert (st["messages"], st["size"]) == (len(want), total), st
    return len(acked)


def test_sigkill_while_storing(make_bus):
    seed = int(os.environ.get("ROOST_CRASH_SEED") or random.SystemRandom().randrange(1 << 31))
    print("\ncrash test seed %d (replay: ROOST_CRASH_SEED=%d)" % (seed, seed))
    t0 = time.monotonic()
    b = make_bus(env={"ROOST_BUS_HEARTBEAT_MS": "250"})
    restart(b)
    ok(b, "domain", "add", "example.org")
    add_user(b, ALICE)
    add_user(b, BOB)
    run = Run(b, seed)
    killer = random.Random(seed)
    state = DbState()
    threads = [threading.Thread(target=run.client, args=(i,), daemon=True) for i in range(CLIENTS)]
    for t in threads:
        t.start()
    dropped_total = 0
    try:
        for k in range(KILLS):
            wait_progress(run, len(run.snapshot()[0]), CLIENTS)
            time.sleep(killer.uniform(0.05, 0.5))
            b.storaged.kill()
            b.storaged.wait()
            try:
                to_drop = check_db(b, run, state)
            except AssertionError as e:
                raise AssertionError("after kill %d (seed %d): %s" % (k + 1, seed, e)) from None
            dropped = restart(b)
            assert dropped == to_drop, "kill %d: storaged dropped %d blobs at start, %d were " \
                "incomplete or unreferenced" % (k + 1, dropped, to_drop)
            dropped_total += dropped
        wait_progress(run, len(run.snapshot()[0]), CLIENTS)
    finally:
        run.stop.set()
        for t in threads:
            t.join(WAIT * 2)
    assert not run.errors, "\n".join(run.errors[:20])
    acked, pending = run.snapshot()
    assert pending == [] and not any(t.is_alive() for t in threads)
    t_load = time.monotonic() - t0

    c = b.client()
    n = verify_through_bus(c, acked)
    # A clean restart: nothing half-stored is left, and nothing else changed.
    b.storaged.kill(signal.SIGTERM)
    assert b.storaged.wait() == 0, b.storaged.log()
    to_drop = check_db(b, run, state, final=True)
    assert restart(b) == to_drop
    assert check_db(b, run, state, final=True) == 0, "incomplete blobs left after a restart"
    tries = sum(m.tries for m in acked)
    print("crash test seed %d: %d kills, %d messages acknowledged (%d MB, %d 0-byte, %d to two "
          "users, %d queued) in %d tries %r; %d half-stored blobs dropped at restarts; load %.1f s, "
          "all %.1f s" % (seed, KILLS, n, sum(len(m.data) for m in acked) >> 20,
                         sum(1 for m in acked if not m.data), sum(1 for m in acked if m.bob),
                         sum(1 for m in acked if m.enqueue), tries, run.codes, dropped_total,
                         t_load, time.monotonic() - t0))
