"""
test_mailboxes.py — a user's mailboxes (storaged.mailbox.*) through
roostctl mailbox, and the contract underneath it: names, UIDVALIDITY,
idempotency, and the upgrade of a database made before mailboxes existed.

Run: make && ROOST_BIN=$PWD/build/bin /usr/bin/python3 -m pytest tests/e2e/test_mailboxes.py -q

Helpers (start_storaged, ctl, ok, ok_json, fails, rows, add_user) come from
test_accounts.py; every test gets its own bus and data directory.
"""

import json
import os
import sqlite3

import pytest

import bus as buslib
from test_accounts import add_user, ctl, fails, ok, ok_json, rows, start_storaged

USER = "alice@example.org"
DEFAULTS = [("Archive", "\\Archive"), ("Drafts", "\\Drafts"), ("INBOX", "-"), ("Junk", "\\Junk"),
            ("Sent", "\\Sent"), ("Trash", "\\Trash")]


@pytest.fixture
def sd(bus):
    """A bus with storaged on it, the domain example.org and the user alice."""
    bus.storaged = start_storaged(bus)
    ok(bus, "domain", "add", "example.org")
    add_user(bus, USER)
    return bus


def mailboxes(b, address=USER):
    """roostctl mailbox list: {name: (special-use, subscribed, uidvalidity, uidnext)}."""
    out = {}
    for r in rows(ok(b, "mailbox", "list", address)):
        assert len(r) == 5, r
        assert r[0] not in out, "listed twice: %r" % r
        out[r[0]] = (r[1], r[2], int(r[3]), int(r[4]))
    return out


def names(b, address=USER):
    return [r[0] for r in rows(ok(b, "mailbox", "list", address))]


def uidvalidity(b, name, address=USER):
    return mailboxes(b, address)[name][2]


def assert_defaults(b, address=USER):
    mb = mailboxes(b, address)
    assert sorted((n, v[0]) for n, v in mb.items()) == DEFAULTS, mb
    assert all(v[1] == "yes" and v[2] >= 1 and v[3] == 1 for v in mb.values()), mb
    assert len({v[2] for v in mb.values()}) == 6, "UIDVALIDITY values not distinct: %r" % mb


# ---- defaults and the list ---------------------------------------------------------------


def test_new_user_has_the_default_mailboxes(sd):
    assert_defaults(sd)
    lst = ok_json(sd, "mailbox", "list", USER)
    assert lst["status"] == "ok" and lst.get("truncated", False) is False
    got = {m["name"]: m for m in lst["mailboxes"]}
    assert got["INBOX"]["special_use"] is None
    assert got["Sent"]["special_use"] == "\\Sent"
    assert all(m["subscribed"] is True and m["uidnext"] == 1 and m["highestmodseq"] == 1
               for m in lst["mailboxes"])
    # sorted by name
    assert [m["name"] for m in lst["mailboxes"]] == sorted(got)


def test_list_is_sorted_and_per_user(sd):
    add_user(sd, "bob@example.org")
    ok(sd, "mailbox", "create", USER, "Zeta")
    ok(sd, "mailbox", "create", USER, "Alpha")
    ns = names(sd)
    assert ns == sorted(ns) and "Zeta" in ns and "Alpha" in ns
    assert "Zeta" not in names(sd, "bob@example.org")
    assert_defaults(sd, "bob@example.org")


def test_user_del_removes_mailboxes(sd):
    ok(sd, "mailbox", "create", USER, "Work")
    ok(sd, "user", "del", USER)
    fails(sd, "mailbox", "list", USER, code="not_found")
    add_user(sd, USER)
    assert_defaults(sd)         # a new user: the defaults only


# ---- create, delete ----------------------------------------------------------------------


def test_create_list_delete(sd):
    out = ok(sd, "mailbox", "create", USER, "Work")
    assert "Work" in out
    mb = mailboxes(sd)
    assert mb["Work"][0] == "-" and mb["Work"][1] == "yes" and mb["Work"][3] == 1
    ok(sd, "mailbox", "create", USER, "Work/2024")
    ok(sd, "mailbox", "create", USER, "INBOX/Lists")      # children of INBOX are allowed
    assert {"Work", "Work/2024", "INBOX/Lists"} <= set(names(sd))
    ok(sd, "mailbox", "delete", USER, "Work/2024")
    ok(sd, "mailbox", "delete", USER, "Work")
    assert sorted((n, v[0]) for n, v in mailboxes(sd).items()) == sorted(
        DEFAULTS + [("INBOX/Lists", "-")])
    fails(sd, "mailbox", "delete", USER, "Work", code="not_found")
    # the defaults are ordinary mailboxes (INBOX excepted)
    ok(sd, "mailbox", "delete", USER, "Archive")
    assert "Archive" not in names(sd)


def test_create_json_reply(sd):
    r = ok_json(sd, "mailbox", "create", USER, "Projects")
    m = r["mailbox"]
    assert m["name"] == "Projects" and m["special_use"] is None and m["subscribed"] is True
    assert m["uidnext"] == 1 and m["highestmodseq"] == 1 and m["uidvalidity"] >= 1
    assert uidvalidity(sd, "Projects") == m["uidvalidity"]


def test_create_existing_is_exists(sd):
    ok(sd, "mailbox", "create", USER, "Work")
    line = fails(sd, "mailbox", "create", USER, "Work", code="exists")
    assert line.startswith("roostctl: mailbox create: exists:"), line
    fails(sd, "mailbox", "create", USER, "Sent", code="exists")
    fails(sd, "mailbox", "create", USER, "INBOX", code="exists")
    fails(sd, "mailbox", "create", USER, "inbox", code="exists")   # INBOX in any case
    assert names(sd).count("Work") == 1


BAD_NAMES = [
    ("leading slash", "/a"),
    ("trailing slash", "a/"),
    ("empty component", "a//b"),
    ("dot-dot component", "a/../b"),
    ("dot component", "a/./b"),
    ("dot-dot alone", ".."),
    ("star", "a*b"),
    ("percent", "a%b"),
    ("control char", "a\x01b"),
    ("tab", "a\tb"),
    ("DEL", "a\x7fb"),
    ("256 bytes", "x" * 256),
    ("256 bytes of 128 characters", "\u00e9" * 128),
    ("17 levels", "/".join(["l"] * 17)),
]


@pytest.mark.parametrize("name", [n for _, n in BAD_NAMES], ids=[i for i, _ in BAD_NAMES])
def test_bad_names_are_invalid(sd, name):
    before = names(sd)
    fails(sd, "mailbox", "create", USER, name, code="invalid")
    fails(sd, "mailbox", "delete", USER, name, code="invalid")
    fails(sd, "mailbox", "rename", USER, "Junk", name, code="invalid")
    fails(sd, "mailbox", "subscribe", USER, name, code="invalid")
    assert names(sd) == before


@pytest.mark.parametrize("name", ["x" * 255, "\u00e9t\u00e9", "a b", "a.b", "...x", "INBOX/x",
                                  "/".join(["l"] * 16), "[Gmail]", "&-"])
def test_good_names(sd, name):
    ok(sd, "mailbox", "create", USER, name)
    # an intermediate level need not exist ("a/b" without "a")
    assert name in names(sd)


def test_empty_name(make_bus):
    """"" is invalid: roostctl refuses it itself (one line, nothing sent) and storaged
    says invalid to a client that sends it. This bus has no tap: an empty name breaks
    the schema (minLength 1), which the tap check would report."""
    b = make_bus(tap=False)
    b.storaged = start_storaged(b)
    ok(b, "domain", "add", "example.org")
    add_user(b, USER)
    fails(b, "mailbox", "create", USER, "")
    fails(b, "mailbox", "rename", USER, "", "x")
    c = b.client()
    for req in ({"type": "storaged.mailbox.create", "idem": "e-1", "address": USER, "name": ""},
                {"type": "storaged.mailbox.delete", "idem": "e-2", "address": USER, "name": ""},
                {"type": "storaged.mailbox.rename", "idem": "e-3", "address": USER, "from": "Junk",
                 "to": ""}):
        env, _ = c.call("storaged", req, timeout=buslib.WAIT)
        assert env["status"] == "invalid", env
    assert sorted(r[0] for r in rows(ok(b, "mailbox", "list", USER))) == sorted(n for n, _ in DEFAULTS)


def test_delete_inbox_is_invalid(sd):
    line = fails(sd, "mailbox", "delete", USER, "INBOX", code="invalid")
    assert "INBOX" in line, line
    fails(sd, "mailbox", "delete", USER, "inbox", code="invalid")
    assert "INBOX" in names(sd)


def test_delete_with_children_is_has_children(sd):
    ok(sd, "mailbox", "create", USER, "a")
    ok(sd, "mailbox", "create", USER, "a/x")
    fails(sd, "mailbox", "delete", USER, "a", code="has_children")
    assert {"a", "a/x"} <= set(names(sd))
    # a sibling that merely shares the prefix is not a child
    ok(sd, "mailbox", "create", USER, "b")
    ok(sd, "mailbox", "create", USER, "bx")
    ok(sd, "mailbox", "delete", USER, "b")
    ok(sd, "mailbox", "delete", USER, "a/x")
    ok(sd, "mailbox", "delete", USER, "a")
    assert not {"a", "a/x", "b"} & set(names(sd))


def test_recreated_mailbox_gets_a_greater_uidvalidity(sd):
    ok(sd, "mailbox", "create", USER, "Work")
    first = uidvalidity(sd, "Work")
    ok(sd, "mailbox", "delete", USER, "Work")
    ok(sd, "mailbox", "create", USER, "Work")
    second = uidvalidity(sd, "Work")
    assert second > first, (first, second)
    assert second > max(v[2] for n, v in mailboxes(sd).items() if n != "Work")


# ---- rename ------------------------------------------------------------------------------


def test_rename_moves_children(sd):
    for n in ("a", "a/x", "a/x/y", "ab"):
        ok(sd, "mailbox", "create", USER, n)
    old = uidvalidity(sd, "a")
    out = ok(sd, "mailbox", "rename", USER, "a", "b")
    assert "b" in out
    ns = set(names(sd))
    assert {"b", "b/x", "b/x/y", "ab"} <= ns, ns
    assert not {"a", "a/x", "a/x/y"} & ns, ns
    assert uidvalidity(sd, "b") > old          # the new name is a new mailbox
    # into a deeper place, and back
    ok(sd, "mailbox", "rename", USER, "b", "c/d")
    assert {"c/d", "c/d/x", "c/d/x/y"} <= set(names(sd))
    r = ok_json(sd, "mailbox", "rename", USER, "c/d/x", "e")
    assert r["renamed"] is True
    assert {"c/d", "e", "e/y"} <= set(names(sd))


def test_rename_keeps_special_use_and_subscription(sd):
    ok(sd, "mailbox", "unsubscribe", USER, "Junk")
    ok(sd, "mailbox", "rename", USER, "Junk", "Spam")
    mb = mailboxes(sd)
    assert "Junk" not in mb
    assert mb["Spam"][0] == "\\Junk" and mb["Spam"][1] == "no", mb["Spam"]


def test_rename_errors(sd):
    ok(sd, "mailbox", "create", USER, "a")
    ok(sd, "mailbox", "create", USER, "b")
    fails(sd, "mailbox", "rename", USER, "a", "b", code="exists")
    fails(sd, "mailbox", "rename", USER, "a", "Sent", code="exists")
    fails(sd, "mailbox", "rename", USER, "a", "INBOX", code="exists")
    fails(sd, "mailbox", "rename", USER, "nope", "c", code="not_found")
    fails(sd, "mailbox", "rename", USER, "a", "a/b", code="invalid")      # into its own child
    fails(sd, "mailbox", "rename", USER, "a", "a/b/c", code="invalid")
    fails(sd, "mailbox", "rename", USER, "INBOX", "Old", code="invalid")  # not yet
    fails(sd, "mailbox", "rename", USER, "inbox", "Old", code="invalid")
    assert {"a", "b", "INBOX"} <= set(names(sd)) and "Old" not in names(sd)
    # "ab" is not a child of "a"
    ok(sd, "mailbox", "rename", USER, "a", "ab")
    assert "ab" in names(sd)


# ---- subscriptions -----------------------------------------------------------------------


def test_subscribe_unsubscribe(sd):
    out = ok(sd, "mailbox", "unsubscribe", USER, "Junk")
    assert "unsubscribed" in out
    assert mailboxes(sd)["Junk"][1] == "no"
    assert mailboxes(sd)["Trash"][1] == "yes"
    r = ok_json(sd, "mailbox", "unsubscribe", USER, "Junk")    # again: still no
    assert r["subscribed"] is False
    ok(sd, "mailbox", "subscribe", USER, "Junk")
    assert mailboxes(sd)["Junk"][1] == "yes"
    r = ok_json(sd, "mailbox", "subscribe", USER, "Junk")
    assert r["subscribed"] is True
    fails(sd, "mailbox", "subscribe", USER, "Nope", code="not_found")
    fails(sd, "mailbox", "unsubscribe", USER, "Nope", code="not_found")


def test_subscribe_sends_the_flag(sd):
    ok(sd, "mailbox", "unsubscribe", USER, "Junk")
    ok(sd, "mailbox", "subscribe", USER, "Trash")
    reqs = [json.loads(line)["env"] for topic, line in sd.tap.after_replies(b"storaged.mailbox.subscribe", 2)
            if topic == b"storaged.mailbox.subscribe"]
    reqs = [e for e in reqs if "status" not in e]
    assert [(e["name"], e["subscribed"]) for e in reqs] == [("Junk", False), ("Trash", True)], reqs
    assert all(e.get("idem") for e in reqs)


# ---- users, errors, usage ----------------------------------------------------------------


def test_unknown_user_is_not_found(sd):
    for addr in ("nobody@example.org", "a@not-hosted.example"):
        fails(sd, "mailbox", "list", addr, code="not_found")
        fails(sd, "mailbox", "create", addr, "x", code="not_found")
        fails(sd, "mailbox", "delete", addr, "Junk", code="not_found")
        fails(sd, "mailbox", "rename", addr, "Junk", "x", code="not_found")
        fails(sd, "mailbox", "subscribe", addr, "Junk", code="not_found")
    fails(sd, "mailbox", "list", "not-an-address", code="invalid")


def test_address_is_case_insensitive(sd):
    ok(sd, "mailbox", "create", "ALICE@Example.ORG", "Work")
    assert "Work" in names(sd)


def test_help_and_usage(sd):
    r = ctl(sd, "mailbox", "--help")
    assert r.returncode == 0
    for verb in ("list", "create", "delete", "rename", "subscribe", "unsubscribe"):
        assert ("roostctl mailbox %s" % verb) in r.stdout, r.stdout
    r = ctl(sd, "mailbox", "rename", "--help")
    assert r.returncode == 0 and "roostctl mailbox rename ADDRESS FROM TO" in r.stdout
    r = ctl(sd, "mailbox", "frobnicate")
    assert r.returncode == 1 and len(r.stderr.strip().splitlines()) == 1
    r = ctl(sd, "mailbox")
    assert r.returncode == 2
    fails(sd, "mailbox", "list")                          # missing ADDRESS
    fails(sd, "mailbox", "create", USER)                  # missing NAME
    fails(sd, "mailbox", "rename", USER, "a")             # missing TO
    fails(sd, "mailbox", "delete", USER, "a", "b")        # one too many
    fails(sd, "mailbox", "subscribe", USER, "Junk", "--quota", "1")
    r = ctl(sd, "--help")
    assert "mailbox" in r.stdout + r.stderr


# ---- the protocol underneath ---------------------------------------------------------------


def test_idempotent_create(sd):
    c = sd.client()
    req = {"type": "storaged.mailbox.create", "idem": "mbx-idem-1", "address": USER, "name": "Work"}
    first, _ = c.call("storaged", req, timeout=buslib.WAIT)
    second, _ = c.call("storaged", req, timeout=buslib.WAIT)
    assert first["status"] == "ok", first
    assert second["status"] == "ok", second
    assert first["mailbox"] == second["mailbox"]
    assert first["mailbox"]["uidvalidity"] == second["mailbox"]["uidvalidity"]
    assert names(sd).count("Work") == 1
    assert uidvalidity(sd, "Work") == first["mailbox"]["uidvalidity"]
    third, _ = c.call("storaged", dict(req, idem="mbx-idem-2"), timeout=buslib.WAIT)
    assert third["status"] == "error" and third["code"] == "exists", third


def test_idempotent_delete_and_rename(sd):
    c = sd.client()
    ok(sd, "mailbox", "create", USER, "a")
    ren = {"type": "storaged.mailbox.rename", "idem": "mbx-r", "address": USER, "from": "a", "to": "b"}
    for _ in range(2):
        env, _ = c.call("storaged", ren, timeout=buslib.WAIT)
        assert env["status"] == "ok" and env["renamed"] is True, env
    dele = {"type": "storaged.mailbox.delete", "idem": "mbx-d", "address": USER, "name": "b"}
    for _ in range(2):
        env, _ = c.call("storaged", dele, timeout=buslib.WAIT)
        assert env["status"] == "ok" and env["deleted"] is True, env
    assert not {"a", "b"} & set(names(sd))


def test_list_carries_no_idem(sd):
    ok(sd, "mailbox", "list", USER)
    ok(sd, "mailbox", "create", USER, "x")
    snap = [(t, json.loads(line)["env"]) for t, line in sd.tap.after_replies(b"storaged.mailbox.create")]
    lists = [e for t, e in snap if t == b"storaged.mailbox.list" and "status" not in e]
    creates = [e for t, e in snap if t == b"storaged.mailbox.create" and "status" not in e]
    assert lists and all("idem" not in e for e in lists)
    assert creates and all(len(e["idem"]) == 32 for e in creates)


# ---- an old database ---------------------------------------------------------------------

# Migration 1 of services/storaged/migrations.c, as it shipped (before mailboxes).
V1_SCHEMA = """
CREATE TABLE domains (
  id INTEGER PRIMARY KEY,
  name TEXT NOT NULL UNIQUE,
  postmaster TEXT,
  catchall TEXT,
  created INTEGER NOT NULL
);
CREATE TABLE users (
  id INTEGER PRIMARY KEY,
  domain_id INTEGER NOT NULL REFERENCES domains(id) ON DELETE CASCADE,
  localpart TEXT NOT NULL,
  password TEXT,
  quota_bytes INTEGER NOT NULL DEFAULT 0,
  used_bytes INTEGER NOT NULL DEFAULT 0,
  created INTEGER NOT NULL,
  UNIQUE (domain_id, localpart)
);
CREATE TABLE aliases (
  id INTEGER PRIMARY KEY,
  domain_id INTEGER NOT NULL REFERENCES domains(id) ON DELETE CASCADE,
  localpart TEXT NOT NULL,
  target TEXT NOT NULL,
  UNIQUE (domain_id, localpart, target)
);
CREATE TABLE idempotency (
  key TEXT PRIMARY KEY,
  type TEXT NOT NULL,
  result TEXT NOT NULL,
  created INTEGER NOT NULL
);
CREATE INDEX idempotency_created ON idempotency(created);
"""


def make_v1_database(path, users):
    db = sqlite3.connect(path)
    try:
        db.executescript(V1_SCHEMA)
        db.execute("INSERT INTO domains (id, name, postmaster, created) VALUES (1, 'old.example', ?, 1700000000)",
                   (users[0],))
        for lp in users:
            db.execute("INSERT INTO users (domain_id, localpart, password, created) "
                       "VALUES (1, ?, NULL, 1700000000)", (lp,))
        db.execute("PRAGMA user_version = 1")
        db.commit()
    finally:
        db.close()
    os.chmod(path, 0o600)


def test_old_database_is_upgraded(bus):
    path = os.path.join(bus.data_dir, "roost.db")
    make_v1_database(path, ["carol", "dave"])
    bus.storaged = start_storaged(bus)
    assert sorted(u[0] for u in rows(ok(bus, "user", "list"))) == ["carol@old.example", "dave@old.example"]
    assert_defaults(bus, "carol@old.example")
    assert_defaults(bus, "dave@old.example")
    all_uv = [v[2] for a in ("carol@old.example", "dave@old.example")
              for v in mailboxes(bus, a).values()]
    assert len(set(all_uv)) == 12, all_uv
    # new mailboxes keep counting upwards from the migrated ones
    ok(bus, "mailbox", "create", "carol@old.example", "New")
    assert uidvalidity(bus, "New", "carol@old.example") > max(all_uv)
    # and new users still get theirs
    add_user(bus, "erin@old.example")
    assert_defaults(bus, "erin@old.example")
    db = sqlite3.connect(path)
    try:
        assert db.execute("PRAGMA user_version").fetchone()[0] >= 2
    finally:
        db.close()
