"""
test_rcpt.py — storaged's accounts beyond add/del/list: quotas
(storaged.user.quota, roostctl user quota) and the paged domain, user and
alias lists.

Run: make && ROOST_BIN=$PWD/build/bin /usr/bin/python3 -m pytest tests/e2e/test_rcpt.py -q

Helpers (start_storaged, ctl, ok, ok_json, fails, rows) come from
test_accounts.py; every test gets its own bus and data directory. Users are
added without a password (no KDF), so setting up thousands is quick.
"""

import pytest

from bus import WAIT, new_id
from test_accounts import ctl, fails, ok, ok_json, rows, start_storaged


@pytest.fixture
def sd(bus):
    """storaged with example.org (users alice, the postmaster, and bob) and
    example.net (no users)."""
    bus.storaged = start_storaged(bus)
    ok(bus, "domain", "add", "example.org")
    ok(bus, "domain", "add", "example.net")
    ok(bus, "user", "add", "alice@example.org")
    ok(bus, "user", "add", "bob@example.org")
    bus.c = bus.client()
    return bus


def pipeline(b, reqs, window=50):
    """Sends the requests with up to window of them in flight (busd answers
    unavailable to what waits for a worker over 2 s); all must be ok."""
    inflight = 0
    for req in reqs:
        if inflight == window:
            env, _, _ = b.c.reply(timeout=WAIT * 2)
            assert env["status"] == "ok", env
            inflight -= 1
        b.c.request("storaged", dict(req))
        inflight += 1
    for _ in range(inflight):
        env, _, _ = b.c.reply(timeout=WAIT * 2)
        assert env["status"] == "ok", env


# ---- quotas ------------------------------------------------------------------------------


def quota_of(b, address):
    u = {u["address"]: u for u in ok_json(b, "user", "list")["users"]}[address]
    return u["quota_bytes"], u["used_bytes"]


@pytest.mark.parametrize("arg,want", [
    ("0", 0), ("1", 1), ("1048576", 2 ** 20), ("10K", 10 * 2 ** 10), ("512m", 2 ** 29),
    ("2G", 2 ** 31), ("1024T", 2 ** 50), (str(2 ** 50), 2 ** 50)])
def test_quota_set(sd, arg, want):
    j = ok_json(sd, "user", "quota", "Alice@Example.org", arg)
    assert j["user"] == {"address": "alice@example.org", "quota_bytes": want, "used_bytes": 0}
    assert quota_of(sd, "alice@example.org") == (want, 0)
    assert quota_of(sd, "bob@example.org") == (0, 0)


def test_quota_shown_and_errors(sd):
    assert "unlimited" in ok(sd, "user", "quota", "alice@example.org", "0")
    out = ok(sd, "user", "quota", "alice@example.org", "1G")
    assert "1073741824" in out and "alice@example.org" in out
    line = {r[0]: r for r in rows(ok(sd, "user", "list"))}["alice@example.org"]
    assert line[1] == "1073741824" and line[2] == "0", line
    ok(sd, "user", "add", "carol@example.org", "--quota", "5M")          # add takes suffixes too
    assert quota_of(sd, "carol@example.org") == (5 * 2 ** 20, 0)
    fails(sd, "user", "quota", "nobody@example.org", "1G", code="not_found")
    fails(sd, "user", "quota", "bad address@example.org", "1G", code="invalid")
    for bad in ("-1", "1.5G", "1KB", "G", "", "1025T", str(2 ** 50 + 1), "99999999999999999999999"):
        fails(sd, "user", "quota", "alice@example.org", bad)
    fails(sd, "user", "quota", "alice@example.org")
    assert quota_of(sd, "alice@example.org") == (2 ** 30, 0)
    r = ctl(sd, "user", "quota", "--help")
    assert r.returncode == 0 and "roostctl user quota ADDRESS BYTES" in r.stdout


def test_quota_idempotent(sd):
    req = {"type": "storaged.user.quota", "idem": "q-1", "address": "alice@example.org",
           "quota_bytes": 1000}
    first, _ = sd.c.call("storaged", req, timeout=WAIT)
    ok(sd, "user", "quota", "alice@example.org", "2000")
    again, _ = sd.c.call("storaged", req, timeout=WAIT)
    assert first == dict(again, id=first["id"])
    assert quota_of(sd, "alice@example.org") == (2000, 0)


# ---- paged lists ---------------------------------------------------------------------------


def pages(b, req, key):
    """Every page of a list request through the bus: the list of pages."""
    out = []
    req = dict(req)
    while True:
        env, _ = b.c.call("storaged", req, timeout=WAIT)
        assert env["status"] == "ok", env
        out.append(env)
        if not env["truncated"]:
            assert "next" not in env, env
            return out
        last = env[key][-1]
        assert env["next"] == last.get("address", last.get("name")), env
        req["after"] = env["next"]
        if "next_target" in env:
            assert env["next_target"] == last["target"]
            req["after_target"] = env["next_target"]


def test_user_list_pages(sd):
    ok(sd, "domain", "add", "many.example")
    n = 3000
    pipeline(sd, [{"type": "storaged.user.add", "idem": new_id("u"),
                   "address": "user%04d@many.example" % i} for i in range(n)])
    want = ["user%04d@many.example" % i for i in range(n)]
    ps = pages(sd, {"type": "storaged.user.list", "domain": "many.example"}, "users")
    assert len(ps) >= 3
    assert [u["address"] for p in ps for u in p["users"]] == want
    # every domain: ordered by domain, then local part
    ps = pages(sd, {"type": "storaged.user.list"}, "users")
    got = [u["address"] for p in ps for u in p["users"]]
    assert got == ["alice@example.org", "bob@example.org"] + want, got[:5]
    # roostctl fetches every page and prints them as one list
    r = ctl(sd, "user", "list", "many.example")
    assert r.returncode == 0 and r.stderr == "", r.stderr
    assert [u[0] for u in rows(r.stdout)] == want
    j = ok_json(sd, "user", "list")
    assert len(j["users"]) == n + 2 and j["truncated"] is False and "next" not in j
    # after an address that is not there: the ones after it
    env, _ = sd.c.call("storaged", {"type": "storaged.user.list", "after": "user2999@many.example"})
    assert env["users"] == [] and env["truncated"] is False
    env, _ = sd.c.call("storaged", {"type": "storaged.user.list", "after": "zzz@example.org"})
    assert [u["address"] for u in env["users"]][:1] == ["user0000@many.example"]
    env, _ = sd.c.call("storaged", {"type": "storaged.user.list", "after": "not an address"})
    assert env["status"] == "invalid", env


def test_alias_list_pages(sd):
    """Several targets per address, so that a page ends between two of them."""
    ok(sd, "domain", "add", "many.example")
    want = sorted(("a%04d@many.example" % i, "t%d@elsewhere.example" % t)
                  for i in range(600) for t in range(5))
    pipeline(sd, [{"type": "storaged.alias.add", "idem": new_id("a"), "address": a, "target": t}
                  for a, t in want])
    ps = pages(sd, {"type": "storaged.alias.list", "domain": "many.example"}, "aliases")
    assert len(ps) >= 2
    assert any(p.get("next_target") not in (None, "t4@elsewhere.example") for p in ps[:-1]), \
        "no page ended between two targets of one address"
    assert [(x["address"], x["target"]) for p in ps for x in p["aliases"]] == want
    assert [tuple(r) for r in rows(ok(sd, "alias", "list"))] == want
    # after without after_target skips every target of that address
    env, _ = sd.c.call("storaged", {"type": "storaged.alias.list", "after": "a0000@many.example"})
    assert env["aliases"][0]["address"] == "a0001@many.example", env["aliases"][0]


def test_domain_list_pages(sd):
    n = 600
    pipeline(sd, [{"type": "storaged.domain.add", "idem": new_id("d"), "name": "d%04d.example" % i}
                  for i in range(n)])
    want = sorted(["d%04d.example" % i for i in range(n)] + ["example.net", "example.org"])
    ps = pages(sd, {"type": "storaged.domain.list"}, "domains")
    assert len(ps) >= 2
    assert [d["name"] for p in ps for d in p["domains"]] == want
    assert [r[0] for r in rows(ok(sd, "domain", "list"))] == want
    env, _ = sd.c.call("storaged", {"type": "storaged.domain.list", "after": "Example.NET"})
    assert [d["name"] for d in env["domains"]] == ["example.org"]
