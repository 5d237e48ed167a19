"""
test_backup.py — roostctl backup DIR and roostctl restore DIR (issue 3),
and the storaged.backup.* contract underneath: online snapshots fetched
over the bus, restores that check everything before they change anything,
and the data directory's lock (one storaged per data_dir).

Run: make && ROOST_BIN=$PWD/build/bin /usr/bin/python3 -m pytest tests/e2e/test_backup.py -q

Helpers (start_storaged, ctl, ok, ok_json, fails, rows, add_user) come from
test_accounts.py; every test gets its own bus and data directory.
"""

import hashlib
import json
import os
import shutil
import signal
import sqlite3
import threading
import time

import pytest

import bus as buslib
from bus import WAIT
from test_accounts import PASSWORD, add_user, ctl, fails, ok, ok_json, rows, start_storaged, verify

KEYS = {  # tls/ and dkim/ files the operator keeps in data_dir
    "tls/cert.pem": b"-----BEGIN CERTIFICATE-----\nMIIB...\n-----END CERTIFICATE-----\n",
    "tls/key.pem": b"-----BEGIN PRIVATE KEY-----\nsecret\n-----END PRIVATE KEY-----\n",
    "dkim/example.org/default.key": os.urandom(1200),
}


@pytest.fixture
def sd(bus):
    """A bus with storaged on it."""
    bus.storaged = start_storaged(bus)
    return bus


def sha256(path):
    with open(path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


def put_keys(b, keys=KEYS):
    for name, data in keys.items():
        path = os.path.join(b.data_dir, name)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "wb") as f:
            f.write(data)


def populate(b):
    """Domains, users (with and without password), aliases, mailboxes."""
    ok(b, "domain", "add", "example.org")
    ok(b, "domain", "add", "example.net")
    add_user(b, "alice@example.org")
    ok(b, "user", "add", "bob@example.net", "--quota", "1048576")
    ok(b, "alias", "add", "postmaster@example.org", "alice@example.org")
    ok(b, "alias", "add", "info@example.net", "bob@example.net")
    ok(b, "mailbox", "create", "alice@example.org", "Work/2024")
    ok(b, "mailbox", "rename", "alice@example.org", "Archive", "Old")
    ok(b, "mailbox", "unsubscribe", "alice@example.org", "Junk")


def snapshot_lists(b):
    """Every list storaged answers, as JSON (what a restore must bring back)."""
    out = {
        "domains": ok_json(b, "domain", "list")["domains"],
        "users": ok_json(b, "user", "list")["users"],
        "aliases": ok_json(b, "alias", "list")["aliases"],
    }
    for u in out["users"]:
        out["mailboxes " + u["address"]] = ok_json(b, "mailbox", "list", u["address"])["mailboxes"]
    return out


def stop_storaged(b, p=None, sig=signal.SIGTERM):
    """Stops storaged and waits until busd no longer lists it."""
    p = p or b.storaged
    p.kill(sig)
    rc = p.wait(timeout=WAIT)
    assert rc == 0 or sig == signal.SIGKILL, p.log()

    def gone():
        return not any(s["name"] == "storaged" and s["workers"] for s in b.status()["services"])
    buslib.wait_until(gone, what="storaged to leave the bus")


def run_ctl(b, *args, env=None, json_out=False):
    """roostctl with an extra environment (ROOST_CONFIG...)."""
    argv = [buslib.binary("roostctl"), "--timeout", "30000"] + (["--json"] if json_out else []) + list(args)
    return b.run("roostctl", argv, env=env, timeout=WAIT * 2)


def one_line_error(r):
    assert r.returncode == 1, "exit %d\n%s\n%s" % (r.returncode, r.stdout, r.stderr)
    lines = [ln for ln in r.stderr.splitlines() if ln.startswith("roostctl:")]
    assert len(lines) == 1, r.stderr
    return lines[0]


def data_files(b):
    """{relative path: sha256} of every file in data_dir (the lock file aside)."""
    out = {}
    for root, _, files in os.walk(b.data_dir):
        for f in files:
            path = os.path.join(root, f)
            rel = os.path.relpath(path, b.data_dir)
            if rel != "storaged.lock":
                out[rel] = sha256(path)
    return out


def integrity(path):
    con = sqlite3.connect("file:%s?mode=ro" % path, uri=True)
    try:
        return con.execute("PRAGMA integrity_check").fetchone()[0]
    finally:
        con.close()


def fill(b, mbytes):
    """Grows roost.db by mbytes MiB of blobs (storaged stopped), so that a
    snapshot takes many steps."""
    con = sqlite3.connect(os.path.join(b.data_dir, "roost.db"))
    con.execute("CREATE TABLE IF NOT EXISTS filler (b BLOB)")
    for _ in range(mbytes):
        con.execute("INSERT INTO filler VALUES (randomblob(1048576))")
    con.commit()
    con.close()


def make_backup(b, dest, env=None):
    r = run_ctl(b, "backup", dest, env=env)
    assert r.returncode == 0, r.stderr
    return r.stdout


# ---- the round trip ----------------------------------------------------------------------


def test_backup_wipe_restore(sd):
    put_keys(sd)
    os.symlink("/etc/hostname", os.path.join(sd.data_dir, "tls", "link.pem"))   # skipped
    populate(sd)
    before = snapshot_lists(sd)
    conf = os.path.join(sd.tmp, "roost.conf")
    with open(conf, "w") as f:
        f.write("# the operator's configuration\nlog_level = info\n")
    env = {"ROOST_CONFIG": conf}
    dest = os.path.join(sd.tmp, "bk")

    out = make_backup(sd, dest, env=env)
    assert "files" in out and "bytes" in out and dest in out, out
    man = json.load(open(os.path.join(dest, "MANIFEST.json")))
    assert man["format"] == 1 and man["schema"] >= 2 and man["created"] > 0
    names = [f["name"] for f in man["files"]]
    assert names[0] == "roost.db"
    assert sorted(names) == sorted(["roost.db", "roost.conf"] + list(KEYS)), names
    for f in man["files"]:
        path = os.path.join(dest, f["name"])
        assert os.path.getsize(path) == f["size"] and sha256(path) == f["sha256"], f
        assert os.stat(path).st_mode & 0o777 == 0o600, f
    assert integrity(os.path.join(dest, "roost.db")) == "ok"
    assert not [n for n in os.listdir(dest) if n.endswith(".part")]
    # the snapshot is gone from storaged's side
    assert os.listdir(os.path.join(sd.data_dir, "backup")) == []

    stop_storaged(sd)
    shutil.rmtree(sd.data_dir)                      # keep nothing
    r = run_ctl(sd, "restore", dest, env=env)
    assert r.returncode == 0, r.stderr
    assert "restored" in r.stdout and os.path.join(dest, "roost.conf") in r.stdout, r.stdout
    for name, data in KEYS.items():
        path = os.path.join(sd.data_dir, name)
        assert open(path, "rb").read() == data
        assert os.stat(path).st_mode & 0o777 == 0o600, name
    assert not os.path.exists(os.path.join(sd.data_dir, "tls", "link.pem"))
    assert not os.path.exists(os.path.join(sd.data_dir, "roost.conf"))   # never overwritten
    leftovers = [n for n in data_files(sd) if n.endswith(".restore")]
    assert leftovers == []

    sd.storaged = start_storaged(sd)
    assert snapshot_lists(sd) == before
    assert verify(sd, "alice@example.org", PASSWORD)


def test_json_output(sd):
    ok(sd, "domain", "add", "example.org")
    dest = os.path.join(sd.tmp, "bk")
    r = run_ctl(sd, "backup", dest, json_out=True)
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    assert out["dir"] == dest and out["bytes"] > 0 and out["seconds"] >= 0
    assert out["manifest"]["files"][0]["name"] == "roost.db"
    stop_storaged(sd)
    r = run_ctl(sd, "restore", dest, json_out=True)
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    assert out["files"] == 1 and out["data_dir"] == sd.data_dir and out["schema"] >= 2


def test_restore_over_existing_data(sd):
    """A restore replaces newer data, and the old WAL is not replayed into it."""
    ok(sd, "domain", "add", "example.org")
    add_user(sd, "alice@example.org")
    dest = os.path.join(sd.tmp, "bk")
    make_backup(sd, dest)
    ok(sd, "domain", "add", "later.example")
    add_user(sd, "late@later.example")
    stop_storaged(sd)
    r = run_ctl(sd, "restore", dest)
    assert r.returncode == 0, r.stderr
    for suffix in ("-wal", "-shm"):
        assert not os.path.exists(os.path.join(sd.data_dir, "roost.db" + suffix))
    sd.storaged = start_storaged(sd)
    assert [d[0] for d in rows(ok(sd, "domain", "list"))] == ["example.org"]
    assert [u[0] for u in rows(ok(sd, "user", "list"))] == ["alice@example.org"]


# ---- online: storaged keeps serving --------------------------------------------------------


def test_backup_while_aliases_are_added(sd):
    ok(sd, "domain", "add", "example.org")
    add_user(sd, "alice@example.org")
    stop_storaged(sd)
    fill(sd, 24)                # many steps: the writer gets in between them
    sd.storaged = start_storaged(sd)

    stop = threading.Event()
    acked = []
    errors = []

    def writer():
        c = buslib.Client(sd.dir)
        try:
            i = 0
            while not stop.is_set():
                addr = "a%05d@example.org" % i
                env, _ = c.call("storaged", {"type": "storaged.alias.add", "idem": buslib.new_id("al"),
                                             "address": addr, "target": "alice@example.org"},
                                timeout=WAIT)
                if env["status"] != "ok":
                    errors.append(env)
                    return
                acked.append(addr)
                i += 1
        finally:
            c.close()

    t = threading.Thread(target=writer)
    t.start()
    try:
        buslib.wait_until(lambda: len(acked) >= 5, what="the writer to get going")
        dest = os.path.join(sd.tmp, "bk")
        first = len(acked)
        make_backup(sd, dest)
        last = len(acked)
        time.sleep(0.2)
    finally:
        stop.set()
        t.join(WAIT)
    assert not errors, errors
    assert last > first, "no alias was added while the backup ran"
    db = os.path.join(dest, "roost.db")
    assert integrity(db) == "ok"
    con = sqlite3.connect("file:%s?mode=ro" % db, uri=True)
    saved = sorted(r[0] + "@example.org" for r in con.execute("SELECT localpart FROM aliases"))
    con.close()
    # what the copy holds is a prefix of what was acknowledged: a consistent moment
    assert saved == acked[:len(saved)] and len(saved) >= 5, (len(saved), len(acked))

    stop_storaged(sd)
    shutil.rmtree(sd.data_dir)
    r = run_ctl(sd, "restore", dest)
    assert r.returncode == 0, r.stderr
    sd.storaged = start_storaged(sd)
    assert sorted(a[0] for a in rows(ok(sd, "alias", "list"))) == saved


def test_second_start_is_busy(sd):
    ok(sd, "domain", "add", "example.org")
    stop_storaged(sd)
    fill(sd, 32)
    sd.storaged = start_storaged(sd)
    c = sd.client()
    # both sent before either is answered: the second finds the first running
    a = c.request("storaged", {"type": "storaged.backup.start", "idem": "first"})
    b = c.request("storaged", {"type": "storaged.backup.start", "idem": "second"})
    ra, _, _ = c.reply(a["id"])
    rb, _, _ = c.reply(b["id"])
    assert ra["status"] == "ok" and ra["state"] == "running", ra
    assert rb["status"] == "error" and rb["code"] == "busy", rb
    # a resent first start gets the same snapshot
    again, _ = c.call("storaged", {"type": "storaged.backup.start", "idem": "first"})
    assert again["status"] == "ok" and again["backup"] == ra["backup"], again
    env, _ = c.call("storaged", {"type": "storaged.backup.finish", "backup": ra["backup"]})
    assert env["status"] == "ok" and env["deleted"] is True, env
    env, _ = c.call("storaged", {"type": "storaged.backup.finish", "backup": ra["backup"]})
    assert env["status"] == "ok" and env["deleted"] is False, env
    assert os.listdir(os.path.join(sd.data_dir, "backup")) == []


def test_unfinished_snapshots_are_bounded(sd):
    """Done snapshots nobody finished fill the few places: then busy too."""
    c = sd.client()
    ids = []
    for i in range(4):
        st, _ = c.call("storaged", {"type": "storaged.backup.start", "idem": "s%d" % i})
        assert st["status"] == "ok", st
        wait_done(c, st["backup"])
        ids.append(st["backup"])
    assert len(set(ids)) == 4
    st, _ = c.call("storaged", {"type": "storaged.backup.start", "idem": "s4"})
    assert st["status"] == "error" and st["code"] == "busy", st
    line = one_line_error(run_ctl(sd, "backup", os.path.join(sd.tmp, "bk")))
    assert line.startswith("roostctl: backup: busy:"), line
    c.call("storaged", {"type": "storaged.backup.finish", "backup": ids[0]})
    make_backup(sd, os.path.join(sd.tmp, "bk2"))


def wait_done(c, bid):
    def done():
        env, _ = c.call("storaged", {"type": "storaged.backup.status", "backup": bid})
        assert env["status"] == "ok" and env["state"] in ("running", "done"), env
        return env if env["state"] == "done" else None
    return buslib.wait_until(done, interval=0.05, what="the snapshot")


def test_read_checks_names(sd):
    put_keys(sd)
    c = sd.client()
    st, _ = c.call("storaged", {"type": "storaged.backup.start", "idem": "r1"})
    bid = st["backup"]
    files = {f["name"]: f for f in wait_done(c, bid)["files"]}
    assert set(files) == {"roost.db"} | set(KEYS)

    def read(name, offset=0, length=1 << 20, backup=bid):
        return c.call("storaged", {"type": "storaged.backup.read", "backup": backup, "name": name,
                                   "offset": offset, "length": length})
    for bad in ("../roost.db", "/etc/passwd", "tls/../../roost.db", "tls//cert.pem", "./roost.db",
                "tls/", "a\\b"):
        env, raw = read(bad)
        assert env["status"] == "invalid" and env["code"] == "invalid", (bad, env)
        assert raw is None
    env, _ = read("tls/nothere.pem")
    assert env["status"] == "error" and env["code"] == "not_found", env
    env, _ = read("roost.db", backup="20000101T000000Z-00000000")
    assert env["code"] == "not_found", env
    env, _ = read("roost.db", offset=files["roost.db"]["size"] + 1)
    assert env["status"] == "invalid", env
    # pieces put together are the file storaged hashed
    got = b""
    while len(got) < files["roost.db"]["size"]:
        env, raw = read("roost.db", offset=len(got), length=4096)
        assert env["status"] == "ok" and env["length"] == len(raw) == 4096, env
        assert env["offset"] == len(got) - 0 and env["size"] == files["roost.db"]["size"]
        got += raw
    assert hashlib.sha256(got).hexdigest() == files["roost.db"]["sha256"]
    env, raw = read("roost.db", offset=len(got))
    assert env["status"] == "ok" and env["length"] == 0 and not raw, env
    env, raw = read("dkim/example.org/default.key")
    assert raw == KEYS["dkim/example.org/default.key"]
    c.call("storaged", {"type": "storaged.backup.finish", "backup": bid})


def test_snapshots_left_by_a_crash_are_removed(sd):
    c = sd.client()
    st, _ = c.call("storaged", {"type": "storaged.backup.start", "idem": "crash"})
    wait_done(c, st["backup"])
    assert os.listdir(os.path.join(sd.data_dir, "backup")) == [st["backup"]]
    stop_storaged(sd, sig=signal.SIGKILL)
    sd.storaged = start_storaged(sd)
    assert not os.path.exists(os.path.join(sd.data_dir, "backup", st["backup"]))
    env, _ = c.call("storaged", {"type": "storaged.backup.status", "backup": st["backup"]})
    assert env["code"] == "not_found", env


# ---- refusals --------------------------------------------------------------------------------


def test_restore_refused_while_storaged_runs(sd):
    populate(sd)
    dest = os.path.join(sd.tmp, "bk")
    make_backup(sd, dest)
    ok(sd, "domain", "add", "after.example")
    line = one_line_error(run_ctl(sd, "restore", dest))
    assert "storaged is running" in line and "storaged.lock" in line, line
    assert "after.example" in [d[0] for d in rows(ok(sd, "domain", "list"))]
    assert not [n for n in data_files(sd) if n.endswith(".restore")]


def test_restore_refused_while_a_storaged_answers(sd):
    """Another storaged (another data_dir, another host) on the bus: refused too."""
    dest = os.path.join(sd.tmp, "bk")
    make_backup(sd, dest)
    stop_storaged(sd)
    other = os.path.join(sd.tmp, "other")
    os.makedirs(other)
    p = sd.spawn("storaged", [buslib.binary("storaged")], env={"ROOST_DATA_DIR": other})
    buslib.wait_until(lambda: any(s["name"] == "storaged" and s["workers"]
                                  for s in sd.status()["services"]), what="the other storaged")
    before = data_files(sd)
    line = one_line_error(run_ctl(sd, "restore", dest))
    assert "answers on the bus" in line, line
    assert data_files(sd) == before
    p.kill(signal.SIGTERM)


@pytest.mark.parametrize("victim", ["roost.db", "tls/key.pem"])
def test_restore_refused_on_a_tampered_file(sd, victim):
    put_keys(sd)
    populate(sd)
    dest = os.path.join(sd.tmp, "bk")
    make_backup(sd, dest)
    ok(sd, "domain", "add", "after.example")
    stop_storaged(sd)
    before = data_files(sd)
    path = os.path.join(dest, victim)
    data = bytearray(open(path, "rb").read())
    data[len(data) // 2] ^= 0x01
    open(path, "wb").write(bytes(data))
    line = one_line_error(run_ctl(sd, "restore", dest))
    assert victim in line and "does not match" in line, line
    assert data_files(sd) == before
    sd.storaged = start_storaged(sd)
    assert "after.example" in [d[0] for d in rows(ok(sd, "domain", "list"))]


def test_restore_refused_without_manifest(sd):
    dest = os.path.join(sd.tmp, "bk")
    make_backup(sd, dest)
    stop_storaged(sd)
    before = data_files(sd)
    os.rename(os.path.join(dest, "MANIFEST.json"), os.path.join(dest, "manifest.old"))
    line = one_line_error(run_ctl(sd, "restore", dest))
    assert "MANIFEST.json" in line, line
    os.rename(os.path.join(dest, "manifest.old"), os.path.join(dest, "MANIFEST.json"))
    # a manifest that names files a restore must not write
    man = json.load(open(os.path.join(dest, "MANIFEST.json")))
    man["files"].append(dict(man["files"][0], name="../escape"))
    json.dump(man, open(os.path.join(dest, "MANIFEST.json"), "w"))
    line = one_line_error(run_ctl(sd, "restore", dest))
    assert "escape" in line, line
    line = one_line_error(run_ctl(sd, "restore", os.path.join(sd.tmp, "nothere")))
    assert data_files(sd) == before


def break_db(db):
    """Pages after the first overwritten: integrity_check fails."""
    size = os.path.getsize(db)
    with open(db, "r+b") as f:
        f.seek(4096)
        f.write(b"\xff" * (size - 4096))


def newer_schema(db):
    con = sqlite3.connect(db)
    con.execute("PRAGMA user_version = 99")
    con.commit()
    con.close()


@pytest.mark.parametrize("change,schema,needle", [
    (newer_schema, 99, "schema version 99"),
    (break_db, None, "fails its check"),
], ids=["newer schema", "corrupt"])
def test_restore_refused_on_a_bad_database(sd, change, schema, needle):
    """roost.db changed after the backup, with a manifest that agrees."""
    dest = os.path.join(sd.tmp, "bk")
    make_backup(sd, dest)
    stop_storaged(sd)
    before = data_files(sd)
    db = os.path.join(dest, "roost.db")
    change(db)
    path = os.path.join(dest, "MANIFEST.json")
    man = json.load(open(path))
    man["schema"] = schema if schema is not None else man["schema"]
    man["files"][0].update(size=os.path.getsize(db), sha256=sha256(db))
    json.dump(man, open(path, "w"))
    line = one_line_error(run_ctl(sd, "restore", dest))
    assert needle in line, line
    assert data_files(sd) == before


def test_backup_into_a_non_empty_dir_is_refused(sd):
    dest = os.path.join(sd.tmp, "bk")
    os.makedirs(dest)
    open(os.path.join(dest, "x"), "w").close()
    line = one_line_error(run_ctl(sd, "backup", dest))
    assert "not empty" in line, line
    open(os.path.join(sd.tmp, "afile"), "w").close()
    one_line_error(run_ctl(sd, "backup", os.path.join(sd.tmp, "afile")))
    one_line_error(run_ctl(sd, "backup"))
    one_line_error(run_ctl(sd, "restore"))
    # an empty directory is fine
    os.makedirs(os.path.join(sd.tmp, "empty"))
    make_backup(sd, os.path.join(sd.tmp, "empty"))
    for cmd in ("backup", "restore"):
        r = run_ctl(sd, cmd, "--help")
        assert r.returncode == 0 and ("roostctl %s DIR" % cmd) in r.stdout, r.stdout


def test_key_file_names(sd):
    put_keys(sd, {"tls/my cert.pem": b"spaced"})
    dest = os.path.join(sd.tmp, "bk")
    make_backup(sd, dest)
    assert open(os.path.join(dest, "tls", "my cert.pem"), "rb").read() == b"spaced"
    # a name no manifest line can carry fails the backup, saying which
    with open(os.path.join(sd.data_dir.encode(), b"tls/k\xff.key"), "wb") as f:
        f.write(b"x")
    line = one_line_error(run_ctl(sd, "backup", os.path.join(sd.tmp, "bk2")))
    assert "unsupported" in line and "tls/k?.key" in line, line


def test_second_storaged_on_the_data_dir_exits(sd):
    p = sd.spawn("storaged", [buslib.binary("storaged")])
    assert p.wait(timeout=WAIT) != 0
    assert "another storaged uses this data_dir" in p.log(), p.log()
    assert sd.storaged.alive()
    ok(sd, "domain", "list")
