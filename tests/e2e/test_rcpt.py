"""
test_rcpt.py — where mail for a recipient goes (storaged.rcpt.resolve,
roostctl rcpt), the catch-all (storaged.domain.catchall, roostctl domain
catchall), quotas (storaged.user.quota, roostctl user quota) and the paged
domain, user and alias lists.

Run: make && ROOST_BIN=$PWD/build/bin /usr/bin/python3 -m pytest tests/e2e/test_rcpt.py -q

Helpers (start_storaged, ctl, ok, ok_json, fails, rows) come from
test_accounts.py; every test gets its own bus and data directory. Users are
added without a password (no KDF), so setting up thousands is quick.
"""

import json

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


def resolve(b, address):
    """storaged.rcpt.resolve through the bus: the reply envelope."""
    env, _ = b.c.call("storaged", {"type": "storaged.rcpt.resolve", "address": address},
                      timeout=WAIT)
    return env


def found(b, address, via, deliveries=(), forwards=(), tag=None):
    """Asserts that address resolves through via to exactly these; the reply."""
    r = resolve(b, address)
    assert r["status"] == "ok", r
    assert r["local"] is True and r["found"] is True and r["via"] == via, r
    assert r["deliveries"] == list(deliveries) and r["forwards"] == list(forwards), r
    assert r.get("tag") == tag, r
    return r


def not_found(b, address, local=True):
    r = resolve(b, address)
    assert r["status"] == "ok", r
    assert r["local"] is local and r["found"] is False, r
    assert "via" not in r and r["deliveries"] == [] and r["forwards"] == [], r
    return r


def refused(b, address, code):
    r = resolve(b, address)
    assert r["status"] == ("invalid" if code == "invalid" else "error") and r["code"] == code, r
    return r


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


def alias(b, address, *targets):
    for t in targets:
        ok(b, "alias", "add", address, t)


# ---- the rules, one by one ---------------------------------------------------------------


def test_user(sd):
    found(sd, "alice@example.org", "user", ["alice@example.org"])
    r = found(sd, "ALICE@Example.ORG", "user", ["alice@example.org"])
    assert r["address"] == "alice@example.org"
    not_found(sd, "carol@example.org")


def test_alias_targets_expanded(sd):
    ok(sd, "user", "add", "carol@example.net")
    alias(sd, "team@example.org", "alice@example.org", "carol@example.net", "friend@elsewhere.example")
    alias(sd, "info@example.org", "bob@example.org", "alice@example.org", "team@example.org",
          "Friend@Elsewhere.example", "ghost@example.org")
    r = found(sd, "info@example.org", "alias",
              ["alice@example.org", "bob@example.org", "carol@example.net"],
              ["friend@elsewhere.example"])
    assert r["deliveries"] == sorted(set(r["deliveries"]))  # each once
    assert "ghost@example.org" in sd.storaged.log() and "leads nowhere" in sd.storaged.log()
    # an alias can point at postmaster@, which always resolves (carol, the
    # first user of example.net, is its postmaster)
    alias(sd, "abuse@example.org", "postmaster@example.net")
    found(sd, "abuse@example.org", "alias", ["carol@example.net"])
    # only forwards: found, nothing stored here
    alias(sd, "away@example.org", "someone@elsewhere.example")
    found(sd, "away@example.org", "alias", [], ["someone@elsewhere.example"])


def test_alias_that_leads_nowhere_is_not_found(sd):
    alias(sd, "dead@example.org", "gone@example.org")
    not_found(sd, "dead@example.org")
    # ...and falls through to the catch-all
    ok(sd, "domain", "catchall", "example.org", "bob@example.org")
    found(sd, "dead@example.org", "catchall", ["bob@example.org"])


def test_alias_nesting(sd):
    alias(sd, "l1@example.org", "l2@example.org")
    alias(sd, "l2@example.org", "l3@example.net")
    alias(sd, "l3@example.net", "l4@example.org")
    alias(sd, "l4@example.org", "alice@example.org")
    found(sd, "l1@example.org", "alias", ["alice@example.org"])   # four levels: fine
    alias(sd, "l0@example.org", "l1@example.org")
    r = refused(sd, "l0@example.org", "alias_loop")                  # five: too deep
    assert "l0@example.org" in r["error"] and "4" in r["error"], r
    # a diamond is no loop: both ways lead to alice, delivered once
    alias(sd, "d@example.org", "l4@example.org", "l2@example.org")
    found(sd, "d@example.org", "alias", ["alice@example.org"])


def test_alias_loop(sd):
    alias(sd, "x@example.org", "y@example.org")
    alias(sd, "y@example.org", "bob@example.org", "x@example.org")
    r = refused(sd, "x@example.org", "alias_loop")
    assert "loop" in r["error"] and "x@example.org" in r["error"], r
    alias(sd, "self@example.org", "self@example.org")
    refused(sd, "self@example.org", "alias_loop")
    line = fails(sd, "rcpt", "x@example.org", code="alias_loop")
    assert line.startswith("roostctl: rcpt: alias_loop:"), line


def test_too_many_targets(sd):
    ok(sd, "domain", "add", "big.example")
    pipeline(sd, [{"type": "storaged.alias.add", "idem": new_id("a"),
                   "address": "all@big.example", "target": "t%03d@elsewhere.example" % i}
                  for i in range(100)])
    r = found(sd, "all@big.example", "alias", [],
              ["t%03d@elsewhere.example" % i for i in range(100)])
    assert len(r["forwards"]) == 100
    ok(sd, "alias", "add", "all@big.example", "t100@elsewhere.example")
    r = refused(sd, "all@big.example", "too_many")
    assert "100" in r["error"], r
    # the count is over the whole expansion, not per alias
    alias(sd, "more@big.example", "bob@example.org", "half@big.example", "other@big.example")
    pipeline(sd, [{"type": "storaged.alias.add", "idem": new_id("a"),
                   "address": "%s@big.example" % name, "target": "%s%02d@elsewhere.example" % (name, i)}
                  for name in ("half", "other") for i in range(50)])
    refused(sd, "more@big.example", "too_many")
    fails(sd, "rcpt", "more@big.example", code="too_many")


def test_postmaster(sd):
    found(sd, "postmaster@example.org", "postmaster", ["alice@example.org"])
    found(sd, "PostMaster@Example.ORG", "postmaster", ["alice@example.org"])
    # a domain without users: the postmaster of the lowest-id domain that has one
    found(sd, "postmaster@example.net", "postmaster", ["alice@example.org"])
    ok(sd, "user", "add", "root@example.net")                  # now example.net has its own
    found(sd, "postmaster@example.net", "postmaster", ["root@example.net"])
    # an alias or a user named postmaster comes first
    ok(sd, "alias", "add", "postmaster@example.net", "bob@example.org")
    found(sd, "postmaster@example.net", "alias", ["bob@example.org"])
    # the postmaster user deleted: postmaster@ still resolves while anyone exists
    ok(sd, "user", "del", "alice@example.org")
    found(sd, "postmaster@example.org", "postmaster", ["root@example.net"])
    ok(sd, "user", "del", "root@example.net")
    found(sd, "postmaster@example.org", "postmaster", ["bob@example.org"])
    ok(sd, "user", "del", "bob@example.org")
    not_found(sd, "postmaster@example.org")                    # nobody left at all


def test_subaddress(sd):
    found(sd, "alice+news@example.org", "user", ["alice@example.org"], tag="news")
    r = found(sd, "Alice+News@Example.org", "user", ["alice@example.org"], tag="news")
    assert r["address"] == "alice+news@example.org"
    found(sd, "alice+@example.org", "user", ["alice@example.org"], tag="")
    found(sd, "alice+a+b@example.org", "user", ["alice@example.org"], tag="a+b")
    found(sd, "alice+x.y=z#1@example.org", "user", ["alice@example.org"], tag="x.y=z#1")
    found(sd, "postmaster+dmarc@example.net", "postmaster", ["alice@example.org"], tag="dmarc")
    alias(sd, "info@example.org", "bob@example.org")
    found(sd, "info+web@example.org", "alias", ["bob@example.org"], tag="web")
    r = not_found(sd, "nobody+x@example.org")
    assert r["tag"] == "x"
    # a domain we do not host has no tag: its own rules are not ours
    r = not_found(sd, "a+b@elsewhere.example", local=False)
    assert "tag" not in r and r["address"] == "a+b@elsewhere.example"


def test_not_hosted(sd):
    r = not_found(sd, "Someone@Elsewhere.Example", local=False)
    assert r["address"] == "someone@elsewhere.example"
    r = ctl(sd, "rcpt", "someone@elsewhere.example")
    assert r.returncode == 1 and "local\tno" in r.stdout and "found\tno" in r.stdout, r


@pytest.mark.parametrize("address", [
    "nodomain", "a@b", "@example.org", "a@", "a b@example.org", "a..b@example.org",
    "+tag@example.org",                     # no local part before the tag
    "alice+a b@example.org", "alice+a..b@example.org", "alice+x.@example.org",
    "alice+\u00fc@example.org", "alice+(x)@example.org",
    "alice+" + "t" * 59 + "@example.org",   # local part of 65
    "x" * 65 + "@example.org",
])
def test_bad_addresses(sd, address):
    refused(sd, address, "invalid")
    fails(sd, "rcpt", address, code="invalid")


def test_longest_local_part_with_tag(sd):
    found(sd, "alice+" + "t" * 58 + "@example.org", "user", ["alice@example.org"], tag="t" * 58)


def test_roostctl_rcpt(sd):
    alias(sd, "info@example.org", "bob@example.org", "x@elsewhere.example")
    out = ok(sd, "rcpt", "Info+Web@example.org")
    assert rows(out) == [["address", "info+web@example.org"], ["local", "yes"], ["found", "yes"],
                         ["via", "alias"], ["tag", "web"], ["deliver", "bob@example.org"],
                         ["forward", "x@elsewhere.example"]]
    j = ok_json(sd, "rcpt", "info@example.org")
    assert j["status"] == "ok" and j["via"] == "alias" and j["forwards"] == ["x@elsewhere.example"]
    r = ctl(sd, "rcpt", "nobody@example.org")              # not found: exit 1, no error line
    assert r.returncode == 1 and "found\tno" in r.stdout and r.stderr == "", r
    r = ctl(sd, "rcpt", "nobody@example.org", json_out=True)
    assert r.returncode == 1 and json.loads(r.stdout)["found"] is False
    r = ctl(sd, "rcpt", "--help")
    assert r.returncode == 0 and "roostctl rcpt ADDRESS" in r.stdout, r
    assert ctl(sd, "rcpt").returncode != 0
    fails(sd, "rcpt", "a@example.org", "b@example.org")


def test_read_only_and_no_idem(sd):
    resolve(sd, "alice@example.org")
    ok(sd, "rcpt", "alice@example.org")
    reqs = [json.loads(line)["env"] for topic, line in sd.tap.after_replies(b"storaged.rcpt.resolve", 2)
            if topic == b"storaged.rcpt.resolve"]
    assert reqs and all("idem" not in e for e in reqs)


# ---- the catch-all -------------------------------------------------------------------------


def catchalls(b):
    return {d["name"]: d["catchall"] for d in ok_json(b, "domain", "list")["domains"]}


def test_catchall(sd):
    assert catchalls(sd) == {"example.org": None, "example.net": None}
    out = ok(sd, "domain", "catchall", "Example.ORG", "Bob@Example.org")
    assert "bob@example.org" in out and "example.org" in out
    assert catchalls(sd) == {"example.org": "bob@example.org", "example.net": None}
    assert {r[0]: r[5] for r in rows(ok(sd, "domain", "list"))} == {
        "example.org": "bob@example.org", "example.net": "-"}
    found(sd, "nobody@example.org", "catchall", ["bob@example.org"])
    found(sd, "nobody+x@example.org", "catchall", ["bob@example.org"], tag="x")
    found(sd, "alice@example.org", "user", ["alice@example.org"])        # users come first
    found(sd, "postmaster@example.org", "postmaster", ["alice@example.org"])
    not_found(sd, "nobody@example.net")                                    # per domain
    # elsewhere: forwarded; an alias: expanded
    ok(sd, "domain", "catchall", "example.net", "spam@elsewhere.example")
    found(sd, "x@example.net", "catchall", [], ["spam@elsewhere.example"])
    alias(sd, "all@example.org", "alice@example.org", "bob@example.org")
    ok(sd, "domain", "catchall", "example.net", "all@example.org")
    found(sd, "x@example.net", "catchall", ["alice@example.org", "bob@example.org"])
    # a catch-all that leads nowhere finds nothing
    ok(sd, "domain", "catchall", "example.net", "ghost@example.org")
    not_found(sd, "x@example.net")
    # off
    j = ok_json(sd, "domain", "catchall", "example.org", "--off")
    assert j["catchall"] is None and j["domain"] == "example.org"
    assert "off" in ok(sd, "domain", "catchall", "example.org", "--off")
    not_found(sd, "nobody@example.org")
    assert catchalls(sd)["example.org"] is None


def test_catchall_errors(sd):
    fails(sd, "domain", "catchall", "nosuch.example", "bob@example.org", code="not_found")
    fails(sd, "domain", "catchall", "example.org", "not-an-address", code="invalid")
    fails(sd, "domain", "catchall", "example.org", "a+b@example.org", code="invalid")
    fails(sd, "domain", "catchall", "bad_domain", "bob@example.org", code="invalid")
    fails(sd, "domain", "catchall", "example.org")                        # neither
    fails(sd, "domain", "catchall", "example.org", "bob@example.org", "--off")  # both
    fails(sd, "domain", "catchall")
    assert catchalls(sd)["example.org"] is None
    r = ctl(sd, "domain", "catchall", "--help")
    assert r.returncode == 0 and "roostctl domain catchall DOMAIN ADDRESS|--off" in r.stdout


def test_catchall_idempotent(sd):
    req = {"type": "storaged.domain.catchall", "idem": "ca-1", "domain": "example.org",
           "target": "bob@example.org"}
    first, _ = sd.c.call("storaged", req, timeout=WAIT)
    ok(sd, "domain", "catchall", "example.org", "alice@example.org")
    again, _ = sd.c.call("storaged", req, timeout=WAIT)        # a retry: changes nothing
    assert first["status"] == again["status"] == "ok"
    assert again["catchall"] == "bob@example.org"
    assert catchalls(sd)["example.org"] == "alice@example.org"


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
