"""
test_queue.py — the outbound queue (storaged.queue.*) as smtpd's delivery
workers and the operator (roostctl queue) use it, against a real storaged.

Run: make && ROOST_BIN=$PWD/build/bin /usr/bin/python3 -m pytest tests/e2e/test_queue.py -q

The acceptance test of issue 3: "two delivery workers taking queue entries
concurrently never get the same entry" (test_concurrent_workers). Each
worker thread has its own bus client and loops take/update; afterwards the
leases are checked from storaged's own times: take's lease_until minus
lease_ms is when storaged granted it, and no two grants of one entry may
overlap while the first one was valid.

Entries are queued as smtpd's submission does it: storaged.message.store
with no deliveries and an enqueue (seed); the workers read each message by
its blob with storaged.message.fetch.
"""

import hashlib
import json
import os
import random
import signal
import sqlite3
import threading
import time

import pytest

import bus as buslib
from bus import WAIT, new_id
from store import store
from test_accounts import ctl, fails, ok, ok_json, rows, start_storaged

LEASE_MS = 1000
DAY = 86400


@pytest.fixture
def sd(bus):
    """A bus with storaged on it."""
    bus.storaged = start_storaged(bus)
    return bus


def db_path(b):
    return os.path.join(b.data_dir, "roost.db")


def message(i):
    """The i-th test message (bytes)."""
    return ("From: alice@example.org\r\nTo: bob@example.net\r\nSubject: test %d\r\n"
            "Message-ID: <%d@example.org>\r\n\r\nHello %d.\r\n" % (i, i, i)).encode()


def seed(b, n, rcpts=("bob@example.net", "carol@example.com"), sender="alice@example.org"):
    """Queues n messages (storaged.message.store with only an enqueue); their queue ids."""
    c = buslib.Client(b.dir)
    ids = []
    try:
        for i in range(n):
            rep = store(c, [], message(i), enqueue={"sender": sender, "recipients": list(rcpts),
                                                    "origin": "q-%d" % i})
            assert rep["status"] == "ok" and rep["stored"] == [], rep
            ids.append(rep["queued"])
    finally:
        c.close()
    return ids


def db_count(b, sql):
    db = sqlite3.connect(db_path(b), timeout=WAIT)
    try:
        return db.execute(sql).fetchone()[0]
    finally:
        db.close()


def call(client, mtype, timeout=WAIT, **fields):
    """One storaged request (an idem added for the state-changing ones): the reply."""
    if mtype.split(".")[-1] in ("take", "update", "retry", "delete") and "idem" not in fields:
        fields["idem"] = new_id("qi")
    reply, _ = client.call("storaged", dict({"type": mtype}, **fields), timeout=timeout)
    return reply


def must(reply):
    assert reply["status"] == "ok", reply
    return reply


def take(client, worker, max_=10, lease_ms=LEASE_MS, **kw):
    return must(call(client, "storaged.queue.take", worker=worker, max=max_, lease_ms=lease_ms,
                     **kw))["entries"]


def update(client, entry, results, release=True, **kw):
    return call(client, "storaged.queue.update", queue_id=entry["id"], token=entry["token"],
                results=results, release=release, **kw)


# ---- the acceptance test: concurrent workers ----------------------------------------------


class Worker(threading.Thread):
    """A delivery worker: takes, decides per recipient, updates, until all are done.

    Records every lease it got (entry, token, granted and until in storaged's
    ms, when it sent a releasing update) and every update's outcome."""

    def __init__(self, b, name, state, seed_):
        super().__init__(name=name, daemon=True)
        self.b, self.state, self.rnd = b, state, random.Random(seed_)
        self.leases, self.lost, self.failed, self.error = [], [], [], None

    def run(self):
        client = buslib.Client(self.b.dir)
        try:
            while not self.state["stop"].is_set():
                entries = take(client, self.name, max_=self.rnd.randint(1, 10))
                if not entries:
                    # deferred recipients wait 5 min: the operator's retry makes them due
                    must(call(client, "storaged.queue.retry", all=True))
                    time.sleep(0.02)
                for e in entries:
                    self.work(client, e)
        except BaseException as e:  # noqa: BLE001 - reported by the test
            self.error = e
            self.state["stop"].set()
        finally:
            client.close()

    def work(self, client, e):
        lease = {"id": e["id"], "worker": self.name, "token": e["token"],
                 "granted": e["lease_until"] - LEASE_MS, "until": e["lease_until"],
                 "released": None}
        self.leases.append(lease)
        rep, raw = client.call("storaged", {"type": "storaged.message.fetch", "blob": e["blob"]})
        if rep.get("code") == "not_found":
            # an earlier entry of this take stalled us: another worker took
            # this one when the lease ran out, finished it, and the blob went
            got = time.time() * 1000
            assert got > e["lease_until"], (rep, e)
            self.lost.append((lease, got, got))
            return
        assert rep["status"] == "ok" and len(raw) == e["size"] == rep["size"], rep
        assert hashlib.sha256(raw).hexdigest() == e["sha256"]
        if self.rnd.random() < 0.05:
            time.sleep((LEASE_MS + 300) / 1000)   # a stalled worker: its lease runs out
        results = []
        for r in e["rcpts"]:
            p = self.rnd.random()
            if r["attempts"] == 0 and p < 0.3:
                results.append({"rcpt": r["rcpt"], "status": "deferred", "error": "451 4.7.1 later"})
            elif p < 0.4:
                results.append({"rcpt": r["rcpt"], "status": "failed", "error": "550 5.1.1 unknown"})
            else:
                results.append({"rcpt": r["rcpt"], "status": "delivered"})
        release = self.rnd.random() < 0.5
        sent = time.time() * 1000
        reply = update(client, e, results, release=release)
        got = time.time() * 1000
        if reply["status"] != "ok":
            assert reply.get("code") == "lease_lost", reply
            self.lost.append((lease, sent, got))
            return
        if release or reply["done"]:
            lease["released"] = sent
        self.failed += [(e["id"], f["rcpt"], f["error"]) for f in reply["failed"]]
        if reply["done"]:
            with self.state["lock"]:
                assert e["id"] not in self.state["done"], "entry %d done twice" % e["id"]
                self.state["done"].add(e["id"])
                if len(self.state["done"]) == self.state["n"]:
                    self.state["stop"].set()


def check_leases(leases):
    """No entry was granted while an earlier lease of it was still valid."""
    by_entry = {}
    for lease in leases:
        by_entry.setdefault(lease["id"], []).append(lease)
    for qid, ls in by_entry.items():
        ls.sort(key=lambda x: x["granted"])
        assert len({x["token"] for x in ls}) == len(ls), "entry %d: a token given twice" % qid
        for x, y in zip(ls, ls[1:]):
            # x ended at its lease_until, or earlier when storaged processed its
            # releasing update, which it cannot have done before we sent it
            end = x["until"] if x["released"] is None else min(x["until"], x["released"])
            assert y["granted"] >= end, (
                "entry %d held by %s (granted %d, until %d, released %s) and by %s from %d" % (
                    qid, x["worker"], x["granted"], x["until"], x["released"], y["worker"],
                    y["granted"]))


@pytest.mark.parametrize("nworkers", [2, 4])
def test_concurrent_workers(sd, nworkers):
    n = 200
    ids = seed(sd, n)
    state = {"stop": threading.Event(), "lock": threading.Lock(), "done": set(), "n": n}
    workers = [Worker(sd, "smtpd-%d" % i, state, 1000 * nworkers + i) for i in range(nworkers)]
    for w in workers:
        w.start()
    deadline = time.monotonic() + WAIT * 2
    for w in workers:
        w.join(max(0.0, deadline - time.monotonic()))
    state["stop"].set()
    for w in workers:
        w.join(WAIT)
        assert not w.is_alive(), "worker %s hangs" % w.name
        if w.error is not None:
            raise w.error
    assert state["done"] == set(ids), "%d of %d entries done" % (len(state["done"]), n)
    leases = [x for w in workers for x in w.leases]
    check_leases(leases)
    # every worker took part, and every entry was leased at least once
    assert all(w.leases for w in workers), [len(w.leases) for w in workers]
    assert {x["id"] for x in leases} == set(ids)
    # lease_lost only for an update storaged saw after the lease ran out
    for lease, sent, got in (x for w in workers for x in w.lost):
        assert got > lease["until"], (lease, sent, got)
    # every recipient that failed was reported once, with its reason
    failed = [f for w in workers for f in w.failed]
    assert len(failed) == len(set((q, r) for q, r, _ in failed))
    assert all(err == "550 5.1.1 unknown" for _, _, err in failed)
    # entries, recipients and blobs are gone
    assert db_count(sd, "SELECT count(*) FROM queue") == 0
    assert db_count(sd, "SELECT count(*) FROM queue_rcpts") == 0
    assert db_count(sd, "SELECT count(*) FROM blobs") == 0
    assert must(call(sd.client(), "storaged.queue.list"))["entries"] == []


def test_expired_lease_goes_to_the_other_worker(sd):
    [qid] = seed(sd, 1)
    a, b = sd.client(), sd.client()
    [ea] = take(a, "smtpd-a", lease_ms=1000)
    assert ea["id"] == qid and len(ea["rcpts"]) == 2
    assert take(b, "smtpd-b") == []                   # held by a
    buslib.wait_until(lambda: time.time() * 1000 > ea["lease_until"] + 10, what="a's lease to run out")
    [eb] = take(b, "smtpd-b", lease_ms=60000)
    assert eb["id"] == qid and eb["token"] != ea["token"]
    late = update(a, ea, [{"rcpt": "bob@example.net", "status": "delivered"}])
    assert late["status"] == "error" and late["code"] == "lease_lost", late
    r = must(update(b, eb, [{"rcpt": "bob@example.net", "status": "delivered"},
                            {"rcpt": "carol@example.com", "status": "failed",
                             "error": "550 5.1.1 no such user"}]))
    assert r["done"] is True and r["remaining"] == 0 and r["queue_id"] == qid
    assert r["failed"] == [{"rcpt": "carol@example.com", "error": "550 5.1.1 no such user"}]
    again = update(b, eb, [])
    assert again["code"] == "lease_lost", again       # the entry is gone
    assert db_count(sd, "SELECT count(*) FROM blobs") == 0


def test_take_and_update_are_idempotent(sd):
    seed(sd, 3)
    c = sd.client()
    idle_before = db_count(sd, "SELECT count(*) FROM idempotency")
    first = take(c, "w", idem="take-1", lease_ms=600000)
    assert len(first) == 3
    # a retry after a lost reply: the same entries under the same tokens
    assert take(c, "w", idem="take-1", lease_ms=600000) == first
    # the same key for another type is refused
    r = call(c, "storaged.queue.retry", idem="take-1", all=True)
    assert r["status"] == "invalid", r
    e = first[0]
    results = [{"rcpt": "bob@example.net", "status": "deferred", "error": "451 later"},
               {"rcpt": "carol@example.com", "status": "delivered"}]
    u1 = must(update(c, e, results, idem="upd-1"))
    u2 = must(update(c, e, results, idem="upd-1"))
    assert dict(u1, id=None) == dict(u2, id=None)          # the same answer, request ids aside
    show = must(call(c, "storaged.queue.show", queue_id=e["id"]))["entry"]
    bob = [r for r in show["rcpts"] if r["rcpt"] == "bob@example.net"][0]
    assert bob["attempts"] == 1 and bob["last_error"] == "451 later"   # applied once
    # a take that finds nothing writes nothing (no idempotency row, no commit)
    rows_now = db_count(sd, "SELECT count(*) FROM idempotency")
    assert take(c, "w") == []
    assert db_count(sd, "SELECT count(*) FROM idempotency") == rows_now
    assert rows_now == idle_before + 2


# ---- roostctl queue ---------------------------------------------------------------------


def test_roostctl_queue(sd):
    ids = seed(sd, 3)
    bounce = seed(sd, 1, rcpts=("alice@example.org",), sender="")[0]
    lines = rows(ok(sd, "queue", "list"))
    assert [int(r[0]) for r in lines] == ids + [bounce]
    assert all(len(r) == 9 for r in lines), lines
    first = lines[0]
    assert first[1] == "alice@example.org" and first[2] == str(len(message(0)))
    assert first[3:5] == ["2", "2"]
    assert first[5].endswith("Z") and first[6] == "-"
    assert lines[3][1] == "<>"
    # paging: --limit and --after
    assert [int(r[0]) for r in rows(ok(sd, "queue", "list", "--limit", "2"))] == ids[:2]
    assert [int(r[0]) for r in rows(ok(sd, "queue", "list", "--after", str(ids[1])))] == [ids[2], bounce]
    j = ok_json(sd, "queue", "list", "--limit", "2")
    assert [e["id"] for e in j["entries"]] == ids[:2] and j["next"] == ids[1]
    j = ok_json(sd, "queue", "list")
    assert len(j["entries"]) == 4 and "next" not in j and j["status"] == "ok"
    # a worker takes one and defers a recipient
    c = sd.client()
    e = take(c, "smtpd-9", max_=1, lease_ms=600000)[0]
    must(update(c, e, [{"rcpt": "carol@example.com", "status": "deferred",
                        "error": "451 4.7.1 greylisted"}], release=False))
    out = ok(sd, "queue", "show", str(e["id"]))
    kv = {r[0]: r[1:] for r in rows(out) if r[0] != "rcpt"}
    assert kv["id"] == [str(e["id"])] and kv["sender"] == ["alice@example.org"]
    assert kv["origin"] == ["q-0"] and kv["size"] == [str(len(message(0)))]
    assert kv["sha256"] == [hashlib.sha256(message(0)).hexdigest()]
    assert kv["lease"][0].startswith("smtpd-9 until ")
    rc = [r for r in rows(out) if r[0] == "rcpt"]
    assert rc[0][1:4] == ["bob@example.net", "queued", "0"] and rc[0][5] == "-"
    assert rc[1][1:4] == ["carol@example.com", "queued", "1"] and rc[1][5] == "451 4.7.1 greylisted"
    j = ok_json(sd, "queue", "show", str(e["id"]))
    assert j["entry"]["leased"] is True and j["entry"]["lease_owner"] == "smtpd-9"
    assert "token" not in j["entry"]
    # retry: one entry, then all
    assert ok(sd, "queue", "retry", str(e["id"])).strip() == "2 recipients due now"
    assert ok_json(sd, "queue", "retry", "--all")["updated"] == 7
    # delete: the worker holding it learns at its next update
    assert ok(sd, "queue", "delete", str(e["id"])).strip() == "queue entry %d deleted" % e["id"]
    assert update(c, e, [])["code"] == "lease_lost"
    assert [int(r[0]) for r in rows(ok(sd, "queue", "list"))] == ids[1:] + [bounce]
    assert db_count(sd, "SELECT count(*) FROM blobs") == 3
    # errors: one line, exit 1
    fails(sd, "queue", "show", str(e["id"]), code="not_found")
    fails(sd, "queue", "delete", str(e["id"]), code="not_found")
    fails(sd, "queue", "retry", str(e["id"]), code="not_found")
    fails(sd, "queue", "show", "0")
    fails(sd, "queue", "show", "x")
    fails(sd, "queue", "retry")
    fails(sd, "queue", "retry", "1", "--all")
    fails(sd, "queue", "list", "--limit", "0")
    fails(sd, "queue", "frob")
    for verb in ("list", "show", "retry", "delete"):
        r = ctl(sd, "queue", verb, "--help")
        assert r.returncode == 0 and r.stdout.startswith("usage:"), r
    r = ctl(sd, "queue")
    assert r.returncode != 0 and "usage:" in r.stderr


def test_queue_survives_restart(sd):
    ids = seed(sd, 2)
    c = sd.client()
    e = take(c, "w", max_=1, lease_ms=600000)[0]
    sd.storaged.kill(signal.SIGTERM)
    sd.storaged.wait()
    sd.storaged = start_storaged(sd)
    c2 = sd.client()
    # the lease and its token outlive the restart
    assert [x["id"] for x in take(c2, "w2")] == [ids[1]]
    r = must(update(c2, e, [{"rcpt": "bob@example.net", "status": "delivered"},
                            {"rcpt": "carol@example.com", "status": "delivered"}]))
    assert r["done"] is True
    assert json.loads(ctl(sd, "queue", "list", json_out=True).stdout)["entries"][0]["id"] == ids[1]
