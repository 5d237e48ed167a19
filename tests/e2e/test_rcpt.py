"""
test_rcpt.py — storaged's accounts beyond add/del/list: the paged domain,
user and alias lists.

Run: make && ROOST_BIN=$PWD/build/bin /usr/bin/python3 -m pytest tests/e2e/test_rcpt.py -q

Helpers (start_storaged, ctl, ok, ok_json, fails, rows) come from
test_accounts.py; every test gets its own bus and data directory. Users are
added without a password (no KDF), so setting up thousands is quick.
"""

import pytest

from bus import WAIT, new_id
from test_accounts import ctl, ok, ok_json, rows, start_storaged


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
