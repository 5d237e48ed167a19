"""
test_schemas.py — the bus contract (proto/schemas/) and the C table
generated from it (proto/gen_msgtypes.py).

Run: /usr/bin/python3 -m pytest tests/e2e/test_schemas.py

Every request type needs examples in REQUESTS below (a request, an ok
reply), every event and reply type in EVENTS / REPLIES: a schema added
without them fails test_every_type_has_examples.
"""

import glob
import json
import os
import re
import shutil
import subprocess
import sys

import pytest
from jsonschema import Draft202012Validator

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import schemas  # noqa: E402

ROOT = os.path.normpath(os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", ".."))
SCHEMA_DIR = os.path.join(ROOT, "proto", "schemas")
GEN = os.path.join(ROOT, "proto", "gen_msgtypes.py")
PYTHON = sys.executable or "/usr/bin/python3"
CC = os.environ.get("CC", "gcc")
U53 = 9007199254740991


def schema_files():
    return sorted(glob.glob(os.path.join(SCHEMA_DIR, "*.json")))


def message_schemas():
    out = {}
    for path in schema_files():
        if os.path.basename(path) != "envelope.json":
            with open(path, encoding="utf-8") as f:
                doc = json.load(f)
            out[doc["title"]] = doc
    return out


def env(mtype, mid="r-1", **fields):
    return dict({"type": mtype, "v": 1, "id": mid}, **fields)


def ok(mtype, **fields):
    return env(mtype, status="ok", **fields)


def err(mtype, status="error", code="timeout", error="no worker answered"):
    return env(mtype, status=status, code=code, error=error)


WORKER = {"pid": 4242, "started": 1732540000000, "uptime_ms": 5000, "requests": 7,
          "inflight": 1, "credit": 63, "role": "echo"}
BUSD = {"pid": 100, "started": 1732539990000, "uptime_ms": 15000, "requests": 99,
        "errors": 2, "queued": 0}
MBX = {"name": "INBOX", "special_use": None,
       "subscribed": True, "uidvalidity": 1, "uidnext": 1, "highestmodseq": 1}
SHA = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
BKID = "20241125T130000Z-0123abcd"

# wire type -> (request fields, ok reply fields), one per request schema.
REQUESTS = {
    "busd.status.get": (
        {},
        {"services": [{"name": "echo", "workers": [WORKER]},
                      {"name": "echo.control", "workers": []}],
         "busd": BUSD}),
    "smtpd.control.ping": (
        {},
        {"service": "smtpd", "pid": 77, "started": 1732540000000, "uptime_ms": 1,
         "version": "0.1.0"}),
    "storaged.control.stats": (
        {},
        {"service": "storaged", "pid": 78, "uptime_ms": 10, "requests": 3, "rss_kb": 2048,
         "stats": {"commits": 3, "ratio": 0.5, "state": "ok", "per_domain": {"a.example": 1},
                   "last": [1, 2, 3], "tls": True, "none": None}}),
    "echo.control.reload": ({}, {"reloaded": True}),
    "echo.payload.echo": (
        {"text": "hello", "delay_ms": 10, "fail": "test_failure"},
        {"text": "hello", "worker_pid": 4242, "raw_len": 0, "seq": 1}),
    "echo.stream.put": (
        {"idem": "q-1234", "name": "msg-1", "chunk": {"stream": "s-1", "seq": 0, "last": False}},
        {"bytes": 262144, "worker_pid": 4242}),
    "echo.event.emit": ({"text": "fire"}, {"published": True}),
    "storaged.domain.add": (
        {"idem": "k-1", "name": "example.org"},
        {"domain": {"name": "example.org", "created": 1732540000}}),
    "storaged.domain.del": ({"idem": "k-2", "name": "example.org"}, {"deleted": True}),
    "storaged.domain.list": (
        {},
        {"domains": [{"name": "example.org", "users": 2, "aliases": 1, "postmaster": "alice",
                      "catchall": "alice@example.org", "created": 1732540000},
                     {"name": "mail.example.net", "users": 0, "aliases": 0, "postmaster": None,
                      "catchall": None, "created": 1732540001}]}),
    "storaged.domain.catchall": (
        {"idem": "k-12", "domain": "Example.org", "target": "Alice@Example.org"},
        {"domain": "example.org", "catchall": "alice@example.org"}),
    "storaged.user.add": (
        {"idem": "k-3", "address": "Alice@Example.org", "password": "s3cret", "quota_bytes": 2 ** 30},
        {"user": {"address": "alice@example.org", "quota_bytes": 2 ** 30, "created": 1732540000}}),
    "storaged.user.del": ({"idem": "k-4", "address": "alice@example.org"}, {"deleted": True}),
    "storaged.user.list": (
        {"domain": "example.org"},
        {"users": [{"address": "alice@example.org", "quota_bytes": 0, "used_bytes": 0,
                    "has_password": True, "created": 1732540000},
                   {"address": "b.o-b_2@example.org", "quota_bytes": 2 ** 50,
                    "used_bytes": 1234, "has_password": False, "created": 1732540000}]}),
    "storaged.user.passwd": (
        {"idem": "k-5", "address": "alice@example.org", "password": "n" * 1024},
        {"changed": True}),
    "storaged.user.verify": (
        {"address": "alice@example.org", "password": "s3cret"}, {"valid": False}),
    "storaged.user.quota": (
        {"idem": "k-13", "address": "alice@example.org", "quota_bytes": 2 ** 50},
        {"user": {"address": "alice@example.org", "quota_bytes": 2 ** 50, "used_bytes": 1234}}),
    "storaged.user.usage": (
        {"address": "alice@example.org", "mailbox": "INBOX"},
        {"address": "alice@example.org", "quota_bytes": 2 ** 20, "used_bytes": 1234}),
    "storaged.message.vanished": (
        {"address": "alice@example.org", "mailbox": "INBOX", "changedsince": 7,
         "uids": "1:100,200:*", "uidvalidity": 1732540000},
        {"uids": "3:5,9", "uidvalidity": 1732540000, "highestmodseq": 12, "next": 10}),
    "storaged.rcpt.resolve": (
        {"address": "Info+Web@Example.org"},
        {"address": "info+web@example.org", "local": True, "found": True, "via": "alias",
         "tag": "web", "deliveries": ["alice@example.org", "bob@example.org"],
         "forwards": ["friend@elsewhere.example"]}),
    "storaged.alias.add": (
        {"idem": "k-6", "address": "postmaster@example.org", "target": "alice@example.org"},
        {"alias": {"address": "postmaster@example.org", "target": "alice@example.org"}}),
    "storaged.alias.del": (
        {"idem": "k-7", "address": "postmaster@example.org", "target": "alice@example.org"},
        {"deleted": True}),
    "storaged.alias.list": (
        {},
        {"aliases": [{"address": "postmaster@example.org", "target": "alice@example.org"}]}),
    "storaged.mailbox.create": (
        {"idem": "k-8", "address": "alice@example.org", "name": "Work/2024"},
        {"mailbox": {"name": "Work/2024", "special_use": None, "subscribed": True,
                     "uidvalidity": 1732540000, "uidnext": 1, "highestmodseq": 1}}),
    "storaged.mailbox.delete": (
        {"idem": "k-9", "address": "alice@example.org", "name": "Work/2024"}, {"deleted": True}),
    "storaged.mailbox.rename": (
        {"idem": "k-10", "address": "alice@example.org", "from": "Work", "to": "Old/Work"},
        {"renamed": True}),
    "storaged.mailbox.subscribe": (
        {"idem": "k-11", "address": "alice@example.org", "name": "Junk", "subscribed": False},
        {"subscribed": False}),
    "storaged.mailbox.list": (
        {"address": "alice@example.org"},
        {"mailboxes": [{"name": "INBOX", "special_use": None, "subscribed": True,
                        "uidvalidity": 1732540000, "uidnext": 1, "highestmodseq": 1},
                       {"name": "Sent", "special_use": "\\Sent", "subscribed": False,
                        "uidvalidity": U53, "uidnext": U53, "highestmodseq": U53}],
         "truncated": False}),
    "storaged.mailbox.status": (
        {"address": "alice@example.org", "mailbox": "INBOX"},
        {"mailbox": "INBOX", "uidvalidity": 1732540000, "uidnext": 5, "highestmodseq": 9,
         "messages": 4, "unseen": 1, "deleted": 0, "size": 10240, "first_unseen": 4}),
    "storaged.message.store": (
        {"idem": "q-1", "chunk": {"stream": "st1", "seq": 0, "last": True},
         "deliveries": [{"address": "alice@example.org"},
                        {"address": "bob@example.org", "mailbox": "Work", "flags": ["\\Seen", "$Label1"],
                         "prefix": "Delivered-To: bob@example.org\r\n"}],
         "internaldate": 1732540000,
         "enqueue": {"sender": "alice@example.org", "recipients": ["carol@example.net"],
                     "origin": "Q1A2B3"}},
        {"bytes": 4096, "size": 4096, "sha256": SHA, "queued": 1,
         "stored": [{"address": "alice@example.org", "mailbox": "INBOX", "uidvalidity": 1732540000,
                     "uid": 1, "modseq": 2}]}),
    "storaged.message.fetch": (
        {"address": "alice@example.org", "mailbox": "INBOX", "uid": 1, "offset": 0, "length": 1048576},
        {"size": 4096, "offset": 0, "length": 4096, "body_offset": 120, "sha256": SHA, "uid": 1}),
    "storaged.message.list": (
        {"address": "alice@example.org", "mailbox": "INBOX", "uids": "1:5,7,9:*",
         "changedsince": 3, "headers": True, "limit": 100},
        {"messages": [{"uid": 1, "flags": ["\\Seen"], "modseq": 4, "size": 4096,
                       "internaldate": 1732540000, "date_sent": None, "body_offset": 120,
                       "headers": {"subject": "Hello", "from": "Bob <bob@example.org>"}}],
         "uidvalidity": 1732540000, "uidnext": 10, "highestmodseq": 12, "next": 9}),
    "storaged.backup.start": ({"idem": "k-12"}, {"backup": BKID, "state": "running"}),
    "storaged.backup.status": (
        {"backup": BKID},
        {"backup": BKID, "state": "done", "schema": 2,
         "files": [{"name": "roost.db", "size": 4096, "sha256": SHA},
                   {"name": "tls/live/cert.pem", "size": 0, "sha256": SHA}]}),
    "storaged.backup.read": (
        {"backup": BKID, "name": "tls/live/cert.pem", "offset": 0, "length": 1048576},
        {"size": 3000000, "offset": 2097152, "length": 902848}),
    "storaged.backup.finish": ({"backup": BKID}, {"deleted": True}),
    "storaged.queue.take": (
        {"idem": "k-12", "worker": "smtpd-4242", "max": 10, "lease_ms": 300000},
        {"entries": [{"id": 7, "blob": 3, "sender": "alice@example.org", "origin": "q-1a2b",
                      "created": 1732540000, "expires": 1732972000, "size": 2048, "sha256": SHA,
                      "token": "0123456789abcdef0123456789abcdef", "lease_until": 1732540300000,
                      "rcpts": [{"rcpt": "bob@example.net", "attempts": 0},
                                {"rcpt": "carol@example.com", "attempts": 2}]},
                     {"id": 8, "blob": 4, "sender": "", "origin": None, "created": 0,
                      "expires": 0, "size": 0, "sha256": None,
                      "token": "ffffffffffffffffffffffffffffffff", "lease_until": U53,
                      "rcpts": [{"rcpt": "alice@example.org", "attempts": U53}]}]}),
    "storaged.queue.update": (
        {"idem": "k-13", "queue_id": 7, "token": "0123456789abcdef0123456789abcdef", "release": False,
         "results": [{"rcpt": "bob@example.net", "status": "delivered"},
                     {"rcpt": "carol@example.com", "status": "deferred",
                      "error": "451 4.7.1 greylisted, try again later"},
                     {"rcpt": "dave@example.com", "status": "failed",
                      "error": "550 5.1.1 no such user \u00e9"}]},
        {"queue_id": 7, "remaining": 1, "done": False,
         "failed": [{"rcpt": "dave@example.com", "error": "550 5.1.1 no such user"},
                    {"rcpt": "erin@example.com", "error": "expired: " + "e" * 512}]}),
    "storaged.queue.list": (
        {"after": 6, "limit": 1000},
        {"entries": [{"id": 7, "sender": "alice@example.org", "created": 1732540000,
                      "expires": 1732972000, "size": 2048, "rcpts": 3, "queued": 1,
                      "next_attempt": 1732540300, "leased": True},
                     {"id": 8, "sender": "", "created": 0, "expires": 0, "size": 0,
                      "rcpts": 1, "queued": 0, "next_attempt": None, "leased": False}],
         "next": 8}),
    "storaged.queue.show": (
        {"queue_id": 7},
        {"entry": {"id": 7, "blob": 3, "sender": "alice@example.org", "origin": "q-1a2b",
                   "created": 1732540000, "expires": 1732972000, "size": 2048, "sha256": SHA,
                   "lease_owner": "smtpd-4242", "lease_until": 1732540300000, "leased": True,
                   "rcpts": [{"rcpt": "bob@example.net", "state": "delivered", "attempts": 1,
                              "next_attempt": 1732540000, "last_error": None},
                             {"rcpt": "carol@example.com", "state": "queued", "attempts": 2,
                              "next_attempt": 1732540600, "last_error": "451 4.7.1 later"}]},
         "truncated": False}),
    "storaged.queue.retry": ({"idem": "k-14", "queue_id": 7}, {"updated": 1}),
    "storaged.queue.delete": ({"idem": "k-15", "queue_id": 7}, {"queue_id": 7}),
    "storaged.message.flags": (
        {"idem": "k-12", "address": "alice@example.org", "mailbox": "INBOX", "uids": "1:5,7,9:*",
         "op": "add", "flags": ["\\Seen", "$Work"], "unchangedsince": 12},
        {"highestmodseq": 13, "changed": [{"uid": 1, "flags": ["\\Seen", "$Work"], "modseq": 13}],
         "modified": "7", "truncated": False}),
    "storaged.message.expunge": (
        {"idem": "k-13", "address": "alice@example.org", "mailbox": "INBOX", "uids": "1:*"},
        {"expunged": "1:3,5", "highestmodseq": 14, "truncated": False}),
    "storaged.message.copy": (
        {"idem": "k-14", "address": "alice@example.org", "mailbox": "INBOX", "uids": "1:3,5",
         "to": "Archive", "move": True},
        {"uidvalidity": 1732540000, "src": "1:3,5", "dst": "10:13", "highestmodseq": 7,
         "src_highestmodseq": 15, "truncated": False}),
    "storaged.message.search": (
        {"address": "alice@example.org", "mailbox": "INBOX", "from": 1, "criteria": {"and": [
            {"not": {"flag": "\\Seen"}}, {"keyword": "$Work"}, {"uids": "1:*"},
            {"or": [{"header": {"field": "subject", "contains": "lunch"}}, {"body": "pizza"},
                    {"header": {"field": "X-Spam-Flag", "contains": ""}}]},
            {"since": 1732492800}, {"senton": 1732492800}, {"larger": 100}, {"modseq": 3},
            {"text": "x"}, {"all": True}]}},
        {"uids": "2,4:6", "highestmodseq": 15, "max_modseq": 12, "next": 7}),
}

# Further valid envelopes: events, busd.error, and request variants.
VALID = [
    env("busd.worker.joined", service="echo", pid=4242),
    env("busd.worker.joined", service="echo.control", pid=4242),
    env("busd.worker.left", service="echo", pid=4242, reason="heartbeat expired"),
    env("echo.event.fired", text="fire", worker_pid=4242),
    env("echo.event.fired", text="", worker_pid=1),
    env("busd.error", "-", status="invalid", code="bad_json", error="envelope is not JSON"),
    env("busd.error", "r-9", status="error", code="too_large", error="frame over 65536 bytes"),
    env("echo.payload.echo"),                               # every field optional
    env("echo.payload.echo", text="x" * 4096, idem="k"),    # idem allowed anywhere
    env("echo.stream.put", idem="q", name="m",
        chunk={"stream": "s", "seq": 1000000, "last": True}),
    env("echo.stream.put", idem="q", name="m"),             # one-piece stream
    ok("echo.stream.put", bytes=10, worker_pid=1, sha256=SHA, chunks=2),
    ok("echo.payload.echo", worker_pid=1, raw_len=0, seq=1),  # no text: none sent
    ok("busd.status.get", services=[], busd=BUSD),
    ok("storaged.control.stats", service="storaged", pid=1, uptime_ms=0, requests=0,
       rss_kb=0, stats={}),
    # error replies may still carry message fields
    dict(err("echo.stream.put", code="bad_sequence", error="chunk 3 after 1"),
         bytes=5, worker_pid=2),
    err("echo.payload.echo", status="invalid", code="invalid", error=""),
    env("a" * 39 + ".control.ping"),
    env("x.control.ping", "!~" * 32),
    # storaged: requests carry what the operator typed (storaged checks it)
    env("storaged.user.add", idem="k", address="nodomain"),
    env("storaged.user.verify", address="\u00fc@example.org", password="p"),
    env("storaged.user.list"),
    ok("storaged.domain.list", domains=[]),
    ok("storaged.user.verify", valid=True),
    err("storaged.user.add", code="exists", error="user alice@example.org exists"),
    err("storaged.user.add", code="not_found", error="domain example.com is not hosted"),
    # mailbox names: storaged checks them, the schema only bounds them
    env("storaged.mailbox.create", idem="k", address="a@example.org", name="a//b*%"),
    env("storaged.mailbox.rename", idem="k", address="a@example.org", **{"from": "x", "to": "\u00e9t\u00e9"}),
    ok("storaged.mailbox.list", mailboxes=[]),
    ok("storaged.mailbox.list", mailboxes=[], truncated=True),
    ok("storaged.mailbox.subscribe", subscribed=True),
    err("storaged.mailbox.delete", code="has_children", error="mailbox a has children"),
    # messages
    env("storaged.message.store", idem="q", deliveries=[], enqueue={"sender": "", "recipients": ["a@b.c"]}),
    ok("storaged.message.store", bytes=262144),       # a chunk's acknowledgement
    err("storaged.message.store", code="mailbox_full", error="mailbox full: a@b.c is over quota"),
    env("storaged.message.fetch", blob=7, offset=1048576),
    ok("storaged.message.list", messages=[], uidvalidity=1, uidnext=1, highestmodseq=1),
    env("storaged.message.list", address="a@b.c", mailbox="INBOX", compact=True, limit=8192),
    ok("storaged.message.list", compact="1,4,4096,1732540000,1,0;3,9,512,1732540001,0,1",
       keywords=["", "$Work $Junk"], uidvalidity=1, uidnext=4, highestmodseq=9, next=4),
    ok("storaged.message.list", compact="", keywords=[""], uidvalidity=1, uidnext=1, highestmodseq=1),
    env("storaged.mailbox.changed", address="alice@example.org", mailbox="INBOX",
        uidvalidity=1732540000, kind="new", uids="7", highestmodseq=12),
    env("storaged.mailbox.changed", address="alice@example.org", mailbox="Work/2024",
        uidvalidity=1, kind="expunge", uids="1:3,5", highestmodseq=1),
    env("smtpd.message.received", qid="1A21449316D3557D28E", client="192.0.2.7", size=4158,
        deliveries=2, forwards=0, tls=True),
    # backups: running and failed snapshots have no files; the operator's id is checked by storaged
    ok("storaged.backup.status", backup=BKID, state="running", schema=2),
    ok("storaged.backup.status", backup=BKID, state="failed", schema=2, error="disk full"),
    ok("storaged.backup.start", backup=BKID, state="done"),
    env("storaged.backup.read", backup="../x", name="../roost.db", offset=0, length=0),
    ok("storaged.backup.read", size=0, offset=0, length=0),
    ok("storaged.backup.finish", deleted=False),
    err("storaged.backup.start", code="busy", error="backup 20241125T130000Z-0123abcd is running"),
    # the queue: storaged checks addresses; results may be empty (release only)
    env("storaged.queue.update", idem="k", queue_id=1, token="t", results=[]),
    env("storaged.queue.update", idem="k", queue_id=1, token="t",
        results=[{"rcpt": "Bob@Example.NET", "status": "delivered", "error": "250 ok"}]),
    env("storaged.queue.retry", idem="k", all=True),
    env("storaged.queue.retry", idem="k", queue_id=3, all=False),
    env("storaged.queue.list"),
    ok("storaged.queue.take", entries=[]),
    ok("storaged.queue.update", queue_id=1, remaining=0, done=True, failed=[]),
    ok("storaged.queue.show", entry={
        "id": 1, "blob": 1, "sender": "", "origin": None, "created": 0, "expires": 0, "size": 0,
        "sha256": None, "lease_owner": None, "lease_until": 0, "leased": False, "rcpts": []},
       truncated=True),
    err("storaged.queue.update", code="lease_lost", error="queue entry 1 is gone"),
    err("storaged.queue.delete", code="not_found", error="no queue entry 1"),
    # rcpt: not found, elsewhere, the errors of alias expansion
    ok("storaged.rcpt.resolve", address="nobody@example.org", local=True, found=False,
       deliveries=[], forwards=[]),
    ok("storaged.rcpt.resolve", address="a+b@elsewhere.example", local=False, found=False,
       deliveries=[], forwards=[]),
    ok("storaged.rcpt.resolve", address="postmaster+x@example.org", local=True, found=True,
       via="postmaster", tag="", deliveries=["alice@example.org"], forwards=[]),
    err("storaged.rcpt.resolve", code="alias_loop", error="alias loop: x@example.org reaches alias x@example.org again"),
    err("storaged.rcpt.resolve", code="too_many", error="x@example.org expands to more than 100 addresses"),
    env("storaged.domain.catchall", idem="k", domain="example.org", target=None),
    ok("storaged.domain.catchall", domain="example.org", catchall=None),
    # paged lists
    env("storaged.domain.list", after="example.org"),
    ok("storaged.domain.list", domains=[], truncated=True, next="example.org"),
    env("storaged.user.list", domain="example.org", after="alice@example.org"),
    ok("storaged.user.list", users=[], truncated=True, next="alice@example.org"),
    env("storaged.alias.list", after="info@example.org", after_target="a@elsewhere.example"),
    env("storaged.alias.list", after="info@example.org"),
    ok("storaged.alias.list", aliases=[], truncated=True, next="info@example.org",
       next_target="a@elsewhere.example"),
    env("storaged.mailbox.changed", address="alice@example.org", mailbox="INBOX",
        uidvalidity=1, kind="flags", uids="4", highestmodseq=9),
    # message operations: empty results and the smallest requests
    env("storaged.message.expunge", idem="k", address="a@b.c", mailbox="INBOX"),
    ok("storaged.message.expunge", expunged="", highestmodseq=1, truncated=False),
    ok("storaged.message.flags", highestmodseq=1, changed=[], modified="", truncated=True),
    env("storaged.message.flags", idem="k", address="a@b.c", mailbox="INBOX", uids="*", op="set",
        flags=[]),
    ok("storaged.message.copy", uidvalidity=1, src="", dst="", highestmodseq=1, truncated=False),
    env("storaged.message.search", address="a@b.c", mailbox="INBOX", criteria={"all": True}),
    env("storaged.message.search", address="a@b.c", mailbox="INBOX",
        criteria={"not": {"not": {"header": {"field": "date", "contains": ""}}}}),
    ok("storaged.message.search", uids="", highestmodseq=1),
    env("imapd.login.failed", client="192.0.2.7", user="alice@example.org", instance="mx:4242"),
]

EVENTS = {"busd.worker.joined", "busd.worker.left", "echo.event.fired", "storaged.mailbox.changed",
          "smtpd.message.received", "imapd.login.failed"}
REPLIES = {"busd.error"}

LONG = "x" * 4097
CHUNK = {"stream": "s", "seq": 0, "last": False}
STREAM = {"idem": "q", "name": "m"}


def without(d, key):
    d = dict(d)
    del d[key]
    return d


# (test id, envelope) pairs that every schema set must reject.
INVALID = [
    ("missing id", without(env("echo.payload.echo"), "id")),
    ("missing v", without(env("echo.payload.echo"), "v")),
    ("v=2", dict(env("echo.payload.echo"), v=2)),
    ("v as string", dict(env("echo.payload.echo"), v="1")),
    ("empty id", env("echo.payload.echo", "")),
    ("id too long", env("echo.payload.echo", "r" * 65)),
    ("id with space", env("echo.payload.echo", "r 1")),
    ("id with trailing newline", env("echo.payload.echo", "r1\n")),
    ("id not a string", env("echo.payload.echo", 7)),
    ("empty idem", env("echo.payload.echo", idem="")),
    ("idem too long", env("echo.payload.echo", idem="k" * 129)),
    ("unknown request field", env("echo.payload.echo", colour="red")),
    ("unknown reply field", ok("echo.event.emit", published=True, extra=1)),
    ("unknown event field", env("echo.event.fired", text="t", worker_pid=1, x=1)),
    ("reply field in request", env("echo.event.emit", text="t", published=True)),
    ("text too long", env("echo.payload.echo", text=LONG)),
    ("emit text too long", env("echo.event.emit", text=LONG)),
    ("fired text too long", env("echo.event.fired", text=LONG, worker_pid=1)),
    ("reply text too long", ok("echo.payload.echo", text=LONG, worker_pid=1, raw_len=0, seq=1)),
    ("delay too long", env("echo.payload.echo", delay_ms=60001)),
    ("negative delay", env("echo.payload.echo", delay_ms=-1)),
    ("delay as float", env("echo.payload.echo", delay_ms=1.5)),
    ("bad fail code", env("echo.payload.echo", fail="Bad-Code")),
    ("chunk missing last", env("echo.stream.put", chunk={"stream": "s", "seq": 0}, **STREAM)),
    ("chunk negative seq", env("echo.stream.put", chunk=dict(CHUNK, seq=-1), **STREAM)),
    ("chunk seq too big", env("echo.stream.put", chunk=dict(CHUNK, seq=1000001), **STREAM)),
    ("chunk extra key", env("echo.stream.put", chunk=dict(CHUNK, size=3), **STREAM)),
    ("chunk empty stream", env("echo.stream.put", chunk=dict(CHUNK, stream=""), **STREAM)),
    ("chunk last not bool", env("echo.stream.put", chunk=dict(CHUNK, last=1), **STREAM)),
    ("chunk not an object", env("echo.stream.put", chunk="s:0", **STREAM)),
    ("chunk on a non-stream type", env("echo.payload.echo", chunk=CHUNK)),
    ("stream.put without idem", env("echo.stream.put", name="m", chunk=CHUNK)),
    ("stream.put without name", env("echo.stream.put", idem="q")),
    ("sha256 without chunks", ok("echo.stream.put", bytes=1, worker_pid=1, sha256=SHA)),
    ("sha256 upper case", ok("echo.stream.put", bytes=1, worker_pid=1, sha256=SHA.upper(),
                             chunks=1)),
    ("error without code", without(err("echo.payload.echo"), "code")),
    ("error without error", without(err("echo.payload.echo"), "error")),
    ("error text two lines", err("echo.payload.echo", error="a\nb")),
    ("error text too long", err("echo.payload.echo", error="e" * 1001)),
    ("bad code", err("echo.payload.echo", code="Timeout")),
    ("unknown status", env("echo.payload.echo", status="maybe")),
    ("ok reply missing field", ok("echo.payload.echo", worker_pid=1, raw_len=0)),
    ("ok reply missing busd", ok("busd.status.get", services=[])),
    ("worker missing role", ok("busd.status.get", busd=BUSD, services=[
        {"name": "echo", "workers": [without(WORKER, "role")]}])),
    ("worker negative inflight", ok("busd.status.get", busd=BUSD, services=[
        {"name": "echo", "workers": [dict(WORKER, inflight=-1)]}])),
    ("too many services", ok("busd.status.get", busd=BUSD, services=[
        {"name": "s%d" % i, "workers": []} for i in range(257)])),
    ("uptime too large", ok("smtpd.control.ping", service="smtpd", pid=1, started=0,
                            uptime_ms=U53 + 1, version="1")),
    ("version too long", ok("smtpd.control.ping", service="smtpd", pid=1, started=0,
                            uptime_ms=0, version="v" * 33)),
    ("too many stats", ok("smtpd.control.stats", service="smtpd", pid=1, uptime_ms=0,
                          requests=0, rss_kb=0, stats={"k%d" % i: i for i in range(101)})),
    ("bad control service", env("Smtpd.control.ping")),
    ("control service too long", env("a" * 40 + ".control.ping")),
    ("reload by reply lacks reloaded", ok("smtpd.control.reload")),
    ("busd.error with status ok", env("busd.error", "-", status="ok", code="x", error="y")),
    ("busd.error without code", env("busd.error", "-", status="invalid", error="y")),
    ("event with status", env("busd.worker.joined", service="echo", pid=1, status="ok")),
    ("left without reason", env("busd.worker.left", service="echo", pid=1)),
    ("reason on joined", env("busd.worker.joined", service="echo", pid=1, reason="x")),
    ("pid zero", env("busd.worker.joined", service="echo", pid=0)),
    ("service too long", env("busd.worker.joined", service="s" * 49, pid=1)),
    ("not an object", ["echo.payload.echo"]),
    ("user.add without idem", env("storaged.user.add", address="a@example.org")),
    ("domain.add without name", env("storaged.domain.add", idem="k")),
    ("password too long", env("storaged.user.passwd", idem="k", address="a@example.org",
                              password="p" * 1025)),
    ("empty password", env("storaged.user.verify", address="a@example.org", password="")),
    ("quota over 2^50", env("storaged.user.add", idem="k", address="a@example.org",
                            quota_bytes=2 ** 50 + 1)),
    ("negative quota", env("storaged.user.add", idem="k", address="a@example.org",
                           quota_bytes=-1)),
    ("address too long", env("storaged.user.del", idem="k", address="a" * 513)),
    ("verify without password", env("storaged.user.verify", address="a@example.org")),
    ("alias.add without target", env("storaged.alias.add", idem="k", address="a@example.org")),
    ("verify ok without valid", ok("storaged.user.verify")),
    ("valid not a bool", ok("storaged.user.verify", valid=1)),
    ("deleted false", ok("storaged.user.del", deleted=False)),
    ("listed user upper case", ok("storaged.user.list", users=[
        {"address": "Alice@example.org", "quota_bytes": 0, "used_bytes": 0,
         "has_password": True, "created": 0}])),
    ("listed user without has_password", ok("storaged.user.list", users=[
        {"address": "alice@example.org", "quota_bytes": 0, "used_bytes": 0, "created": 0}])),
    ("password in a reply", ok("storaged.user.add", user={
        "address": "a@example.org", "quota_bytes": 0, "created": 0}, password="x")),
    ("listed domain without dot", ok("storaged.domain.list", domains=[
        {"name": "localhost", "users": 0, "aliases": 0, "postmaster": None, "created": 0}])),
    ("mailbox.create without idem", env("storaged.mailbox.create", address="a@example.org", name="x")),
    ("mailbox.create without name", env("storaged.mailbox.create", idem="k", address="a@example.org")),
    ("empty mailbox name", env("storaged.mailbox.delete", idem="k", address="a@example.org", name="")),
    ("mailbox name too long", env("storaged.mailbox.create", idem="k", address="a@example.org",
                                  name="n" * 1025)),
    ("rename without to", env("storaged.mailbox.rename", idem="k", address="a@example.org",
                              **{"from": "x"})),
    ("subscribe without subscribed", env("storaged.mailbox.subscribe", idem="k",
                                         address="a@example.org", name="x")),
    ("list without address", env("storaged.mailbox.list")),
    ("create ok without mailbox", ok("storaged.mailbox.create")),
    ("renamed false", ok("storaged.mailbox.rename", renamed=False)),
    ("uidvalidity zero", ok("storaged.mailbox.create", mailbox=dict(MBX, uidvalidity=0))),
    ("uidnext over 2^53-1", ok("storaged.mailbox.create", mailbox=dict(MBX, uidnext=U53 + 1))),
    ("modseq not an integer", ok("storaged.mailbox.create", mailbox=dict(MBX, highestmodseq="1"))),
    ("unknown special-use", ok("storaged.mailbox.list", mailboxes=[dict(MBX, special_use="\\Flagged")])),
    ("listed mailbox without subscribed", ok("storaged.mailbox.list", mailboxes=[
        {"name": "INBOX", "special_use": None, "uidvalidity": 1, "uidnext": 1, "highestmodseq": 1}])),
    ("extra mailbox field", ok("storaged.mailbox.list", mailboxes=[dict(MBX, messages=0)])),
    ("truncated not a bool", ok("storaged.mailbox.list", mailboxes=[], truncated=1)),
    ("too many mailboxes", ok("storaged.mailbox.list", mailboxes=[
        dict(MBX, name="m%d" % i) for i in range(10001)])),
    ("store without idem", env("storaged.message.store", deliveries=[])),
    ("store without deliveries", env("storaged.message.store", idem="k")),
    ("delivery without address", env("storaged.message.store", idem="k", deliveries=[{"mailbox": "INBOX"}])),
    ("delivery with unknown field", env("storaged.message.store", idem="k",
                                        deliveries=[{"address": "a@b.c", "folder": "x"}])),
    ("too many deliveries", env("storaged.message.store", idem="k",
                                deliveries=[{"address": "a@b.c"}] * 101)),
    ("prefix too long", env("storaged.message.store", idem="k",
                            deliveries=[{"address": "a@b.c", "prefix": "X" * 4097}])),
    ("enqueue without recipients", env("storaged.message.store", idem="k", deliveries=[],
                                       enqueue={"sender": ""})),
    ("store ok without bytes", ok("storaged.message.store", size=1)),
    ("fetch length over 1 MiB", env("storaged.message.fetch", blob=1, length=1048577)),
    ("fetch uid zero", env("storaged.message.fetch", address="a@b.c", mailbox="INBOX", uid=0)),
    ("fetch with chunk", env("storaged.message.fetch", blob=1, chunk=CHUNK)),
    ("list with bad uids", env("storaged.message.list", address="a@b.c", mailbox="INBOX", uids="1-5")),
    ("list limit 8193", env("storaged.message.list", address="a@b.c", mailbox="INBOX", limit=8193)),
    ("compact row of five numbers", ok("storaged.message.list", compact="1,4,4096,1732540000,1",
                                       keywords=[""], uidvalidity=1, uidnext=2, highestmodseq=4)),
    ("compact without keywords", ok("storaged.message.list", compact="1,4,1,1,0,0", uidvalidity=1,
                                    uidnext=2, highestmodseq=4)),
    ("listed message without flags", ok("storaged.message.list", uidvalidity=1, uidnext=1,
                                        highestmodseq=1, messages=[{"uid": 1, "modseq": 1, "size": 0,
                                                                    "internaldate": 0}])),
    ("status without deleted", ok("storaged.mailbox.status", mailbox="INBOX", uidvalidity=1,
                                  uidnext=1, highestmodseq=1, messages=0, unseen=0, size=0,
                                  first_unseen=None)),
    ("changed of unknown kind", env("storaged.mailbox.changed", address="a@b.c", mailbox="INBOX",
                                    uidvalidity=1, kind="moved", uids="1", highestmodseq=1)),
    ("changed without uids", env("storaged.mailbox.changed", address="a@b.c", mailbox="INBOX",
                                 uidvalidity=1, kind="new", highestmodseq=1)),
    ("received with a lower-case qid", env("smtpd.message.received", qid="1a2b", client="192.0.2.7",
                                           size=1, deliveries=1, forwards=0, tls=False)),
    ("login failed without user", env("imapd.login.failed", client="192.0.2.7", instance="i")),
    ("received without tls", env("smtpd.message.received", qid="1A2B", client="192.0.2.7",
                                 size=1, deliveries=1, forwards=0)),
    ("backup.start without idem", env("storaged.backup.start")),
    ("backup.start with a field", env("storaged.backup.start", idem="k", dir="/tmp")),
    ("backup id malformed", ok("storaged.backup.start", backup="../etc", state="running")),
    ("backup unknown state", ok("storaged.backup.status", backup=BKID, state="paused", schema=1)),
    ("backup done without files", ok("storaged.backup.status", backup=BKID, state="done", schema=1)),
    ("backup file outside", ok("storaged.backup.status", backup=BKID, state="done", schema=1, files=[
        {"name": "../roost.db", "size": 1, "sha256": SHA}])),
    ("backup sha upper case", ok("storaged.backup.status", backup=BKID, state="done", schema=1, files=[
        {"name": "roost.db", "size": 1, "sha256": SHA.upper()}])),
    ("backup read over 1 MiB", env("storaged.backup.read", backup=BKID, name="roost.db", offset=0,
                                   length=1048577)),
    ("backup read without offset", env("storaged.backup.read", backup=BKID, name="roost.db", length=1)),
    ("backup finish without id", env("storaged.backup.finish")),
    ("take without idem", env("storaged.queue.take", worker="w", max=1, lease_ms=1000)),
    ("take max 0", env("storaged.queue.take", idem="k", worker="w", max=0, lease_ms=1000)),
    ("take max over 100", env("storaged.queue.take", idem="k", worker="w", max=101, lease_ms=1000)),
    ("lease too short", env("storaged.queue.take", idem="k", worker="w", max=1, lease_ms=999)),
    ("lease over an hour", env("storaged.queue.take", idem="k", worker="w", max=1,
                               lease_ms=3600001)),
    ("worker with space", env("storaged.queue.take", idem="k", worker="a b", max=1, lease_ms=1000)),
    ("worker too long", env("storaged.queue.take", idem="k", worker="w" * 65, max=1,
                            lease_ms=1000)),
    ("taken entry without token", ok("storaged.queue.take", entries=[{
        "id": 1, "blob": 1, "sender": "", "origin": None, "created": 0, "expires": 0, "size": 0,
        "sha256": None, "lease_until": 0, "rcpts": [{"rcpt": "a@example.org", "attempts": 0}]}])),
    ("taken entry without rcpts", ok("storaged.queue.take", entries=[{
        "id": 1, "blob": 1, "sender": "", "origin": None, "created": 0, "expires": 0, "size": 0,
        "sha256": None, "token": "0" * 32, "lease_until": 0, "rcpts": []}])),
    ("taken sender upper case", ok("storaged.queue.take", entries=[{
        "id": 1, "blob": 1, "sender": "A@example.org", "origin": None, "created": 0,
        "expires": 0, "size": 0, "sha256": None, "token": "0" * 32, "lease_until": 0,
        "rcpts": [{"rcpt": "a@example.org", "attempts": 0}]}])),
    ("update without token", env("storaged.queue.update", idem="k", queue_id=1, results=[])),
    ("update queue_id 0", env("storaged.queue.update", idem="k", queue_id=0, token="t",
                                 results=[])),
    ("deferred without error", env("storaged.queue.update", idem="k", queue_id=1, token="t",
                                   results=[{"rcpt": "a@example.org", "status": "deferred"}])),
    ("failed without error", env("storaged.queue.update", idem="k", queue_id=1, token="t",
                                 results=[{"rcpt": "a@example.org", "status": "failed"}])),
    ("unknown status", env("storaged.queue.update", idem="k", queue_id=1, token="t",
                           results=[{"rcpt": "a@example.org", "status": "bounced", "error": "x"}])),
    ("error over 512", env("storaged.queue.update", idem="k", queue_id=1, token="t",
                           results=[{"rcpt": "a@example.org", "status": "failed",
                                     "error": "e" * 513}])),
    ("error two lines", env("storaged.queue.update", idem="k", queue_id=1, token="t",
                            results=[{"rcpt": "a@example.org", "status": "failed",
                                      "error": "550 a\r\n550 b"}])),
    ("update ok without failed", ok("storaged.queue.update", queue_id=1, remaining=0, done=True)),
    ("list limit 0", env("storaged.queue.list", limit=0)),
    ("list limit over 1000", env("storaged.queue.list", limit=1001)),
    ("list next 0", ok("storaged.queue.list", entries=[], next=0)),
    ("listed entry without leased", ok("storaged.queue.list", entries=[{
        "id": 1, "sender": "", "created": 0, "expires": 0, "size": 0, "rcpts": 1, "queued": 1,
        "next_attempt": 0}])),
    ("show without id", env("storaged.queue.show")),
    ("shown rcpt state deferred", ok("storaged.queue.show", truncated=False, entry={
        "id": 1, "blob": 1, "sender": "", "origin": None, "created": 0, "expires": 0, "size": 0,
        "sha256": None, "lease_owner": None, "lease_until": 0, "leased": False,
        "rcpts": [{"rcpt": "a@example.org", "state": "deferred", "attempts": 1,
                   "next_attempt": 0, "last_error": None}]})),
    ("retry without id or all", env("storaged.queue.retry", idem="k")),
    ("retry with id and all", env("storaged.queue.retry", idem="k", queue_id=1, all=True)),
    ("retry all false", env("storaged.queue.retry", idem="k", all=False)),
    ("delete without idem", env("storaged.queue.delete", queue_id=1)),
    ("delete id as string", env("storaged.queue.delete", idem="k", queue_id="1")),
    ("listed domain without catchall", ok("storaged.domain.list", domains=[
        {"name": "example.org", "users": 0, "aliases": 0, "postmaster": None, "created": 0}])),
    ("catchall not an address", env("storaged.domain.catchall", idem="k", domain="example.org",
                                    target=7)),
    ("catchall without target", env("storaged.domain.catchall", idem="k", domain="example.org")),
    ("catchall without idem", env("storaged.domain.catchall", domain="example.org", target=None)),
    ("quota without quota_bytes", env("storaged.user.quota", idem="k", address="a@example.org")),
    ("quota over 2^50 on quota", env("storaged.user.quota", idem="k", address="a@example.org",
                                     quota_bytes=2 ** 50 + 1)),
    ("usage without address", env("storaged.user.usage", mailbox="INBOX")),
    ("usage ok without used_bytes", ok("storaged.user.usage", address="a@example.org",
                                       quota_bytes=0)),
    ("vanished without changedsince", env("storaged.message.vanished", address="a@example.org",
                                          mailbox="INBOX")),
    ("vanished with a negative modseq", env("storaged.message.vanished", address="a@example.org",
                                            mailbox="INBOX", changedsince=-1)),
    ("vanished ok with * in the answer", ok("storaged.message.vanished", uids="1:*",
                                            uidvalidity=1, highestmodseq=1)),
    ("rcpt without address", env("storaged.rcpt.resolve")),
    ("rcpt unknown via", ok("storaged.rcpt.resolve", address="a@example.org", local=True,
                            found=True, via="magic", deliveries=[], forwards=[])),
    ("rcpt ok without deliveries", ok("storaged.rcpt.resolve", address="a@example.org",
                                      local=True, found=False, forwards=[])),
    ("rcpt delivery upper case", ok("storaged.rcpt.resolve", address="a@example.org", local=True,
                                    found=True, via="user", deliveries=["A@example.org"],
                                    forwards=[])),
    ("rcpt too many forwards", ok("storaged.rcpt.resolve", address="a@example.org", local=True,
                                  found=True, via="alias", deliveries=[],
                                  forwards=["f%d@elsewhere.example" % i for i in range(101)])),
    ("after_target without after", env("storaged.alias.list", after_target="a@example.org")),
    ("empty after", env("storaged.user.list", after="")),
    ("next not a name", ok("storaged.domain.list", domains=[], truncated=True, next="Example.org")),
    ("flags without idem", env("storaged.message.flags", address="a@b.c", mailbox="INBOX",
                               uids="1", op="add", flags=[])),
    ("flags with unknown op", env("storaged.message.flags", idem="k", address="a@b.c",
                                  mailbox="INBOX", uids="1", op="toggle", flags=[])),
    ("flags with bad uids", env("storaged.message.flags", idem="k", address="a@b.c",
                                mailbox="INBOX", uids="1-5", op="add", flags=[])),
    ("negative unchangedsince", env("storaged.message.flags", idem="k", address="a@b.c",
                                    mailbox="INBOX", uids="1", op="add", flags=[],
                                    unchangedsince=-1)),
    ("flags ok without modified", ok("storaged.message.flags", highestmodseq=1, changed=[],
                                     truncated=False)),
    ("changed item without modseq", ok("storaged.message.flags", highestmodseq=1, modified="",
                                       truncated=False, changed=[{"uid": 1, "flags": []}])),
    ("expunge without mailbox", env("storaged.message.expunge", idem="k", address="a@b.c")),
    ("expunged with a star", ok("storaged.message.expunge", expunged="1:*", highestmodseq=1,
                                truncated=False)),
    ("copy without to", env("storaged.message.copy", idem="k", address="a@b.c", mailbox="INBOX",
                            uids="1")),
    ("copy move not a bool", env("storaged.message.copy", idem="k", address="a@b.c",
                                 mailbox="INBOX", uids="1", to="x", move="yes")),
    ("copy ok without dst", ok("storaged.message.copy", uidvalidity=1, src="1", highestmodseq=1,
                               truncated=False)),
    ("search without criteria", env("storaged.message.search", address="a@b.c", mailbox="INBOX")),
    ("search with two keys in a node", env("storaged.message.search", address="a@b.c",
                                           mailbox="INBOX", criteria={"all": True, "uids": "1"})),
    ("search with unknown key", env("storaged.message.search", address="a@b.c", mailbox="INBOX",
                                    criteria={"colour": "red"})),
    ("search with unknown flag", env("storaged.message.search", address="a@b.c", mailbox="INBOX",
                                     criteria={"flag": "\\Recent"})),
    ("search or of one", env("storaged.message.search", address="a@b.c", mailbox="INBOX",
                             criteria={"or": [{"all": True}]})),
    ("search body too long", env("storaged.message.search", address="a@b.c", mailbox="INBOX",
                                 criteria={"body": "x" * 1025})),
    ("search header field with a colon", env("storaged.message.search", address="a@b.c",
                                             mailbox="INBOX", criteria={"header": {
                                                 "field": "x-spam:", "contains": "yes"}})),
    ("search larger as string", env("storaged.message.search", address="a@b.c", mailbox="INBOX",
                                    criteria={"larger": "10"})),
    ("search from zero", env("storaged.message.search", address="a@b.c", mailbox="INBOX",
                             criteria={"all": True}, **{"from": 0})),
    ("search ok without uids", ok("storaged.message.search", highestmodseq=1)),
    ("too many domains", ok("storaged.domain.list", domains=[
        {"name": "d%d.example" % i, "users": 0, "aliases": 0, "postmaster": None, "catchall": None,
         "created": 0} for i in range(10001)])),
]


@pytest.fixture(scope="module")
def sset():
    return schemas.load_schemas(SCHEMA_DIR)


# ---- the schemas themselves ------------------------------------------------

@pytest.mark.parametrize("path", schema_files(), ids=os.path.basename)
def test_schema_is_valid_2020_12(path):
    with open(path, encoding="utf-8") as f:
        doc = json.load(f)
    assert doc["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    assert doc["$id"] == "https://roost.invalid/schemas/" + os.path.basename(path)
    Draft202012Validator.check_schema(doc)


def unbounded(node, where="#"):
    """Paths of string/integer/array/object schemas without an upper bound."""
    out = []
    if isinstance(node, dict):
        types = node.get("type")
        types = types if isinstance(types, list) else [types]
        bounded_by_value = "const" in node or "enum" in node
        if "string" in types and "maxLength" not in node and not bounded_by_value:
            out.append(where + " (string without maxLength)")
        if "integer" in types and not bounded_by_value and (
                "minimum" not in node or "maximum" not in node):
            out.append(where + " (integer without minimum/maximum)")
        if "array" in types and "maxItems" not in node:
            out.append(where + " (array without maxItems)")
        if "object" in types and node.get("additionalProperties", True) is not False \
                and node.get("unevaluatedProperties", True) is not False \
                and "maxProperties" not in node and "chunk" not in where \
                and not where.endswith(("/request", "/reply", "/event")):
            out.append(where + " (open object without maxProperties)")
        for k, v in node.items():
            out += unbounded(v, "%s/%s" % (where, k))
    elif isinstance(node, list):
        for i, v in enumerate(node):
            out += unbounded(v, "%s/%d" % (where, i))
    return out


@pytest.mark.parametrize("path", schema_files(), ids=os.path.basename)
def test_everything_is_bounded(path):
    with open(path, encoding="utf-8") as f:
        doc = json.load(f)
    assert unbounded(doc) == []


def test_every_type_has_examples(sset):
    covered = set()
    for mtype in REQUESTS:
        covered.add(sset.schema_for(mtype)["title"])
    kinds = {t: s["x-roost"]["kind"] for t, s in message_schemas().items()}
    assert covered == {t for t, k in kinds.items() if k == "request"}
    assert EVENTS == {t for t, k in kinds.items() if k == "event"}
    assert REPLIES == {t for t, k in kinds.items() if k == "reply"}
    for t in EVENTS | REPLIES:
        assert any(e["type"] == t for e in VALID), t


# ---- valid and invalid envelopes -------------------------------------------

@pytest.mark.parametrize("mtype", sorted(REQUESTS))
def test_request_and_replies_validate(sset, mtype):
    req, reply = REQUESTS[mtype]
    title = sset.schema_for(mtype)["title"]
    assert sset.validate(env(mtype, **req)) == title
    assert sset.validate(ok(mtype, **reply)) == title
    assert sset.validate(err(mtype)) == title
    assert sset.validate(err(mtype, status="invalid", code="invalid",
                             error="unexpected key \"x\"")) == title


@pytest.mark.parametrize("envelope", VALID, ids=lambda e: e["type"])
def test_valid_examples(sset, envelope):
    sset.validate(envelope)


def test_module_level_validate_uses_default_dir():
    schemas.load_schemas()
    assert schemas.validate(env("echo.payload.echo", text="hi")) == "echo.payload.echo"
    assert schemas.validate(env("imapd.control.ping")) == "*.control.ping"


@pytest.mark.parametrize("envelope", [e for _, e in INVALID], ids=[n for n, _ in INVALID])
def test_invalid_examples(sset, envelope):
    with pytest.raises(schemas.InvalidMessage):
        sset.validate(envelope)


@pytest.mark.parametrize("mtype", ["nosuch.thing.do", "echo", "a.b.control.ping", None, 3])
def test_unknown_type(sset, mtype):
    e = env("x")
    e["type"] = mtype
    with pytest.raises(schemas.UnknownType):
        sset.validate(e)


def test_error_names_the_problem(sset):
    with pytest.raises(schemas.InvalidMessage) as e:
        sset.validate(env("echo.stream.put", name="m"))
    assert "'idem' is a required property" in str(e.value)


# ---- the generator -------------------------------------------------------

def run_gen(schema_dir, out):
    h, c = os.path.join(out, "msgtypes.h"), os.path.join(out, "msgtypes.c")
    p = subprocess.run([PYTHON, GEN, schema_dir, h, c], capture_output=True, text=True)
    return p, h, c


def expected_enums():
    names = []
    for title in message_schemas():  # sorted by file name: titles sort alike
        names.append("MSG_" + re.sub(r"[.-]", "_", title.replace("*.", "", 1)).upper())
    return names


def test_generator_output_compiles(tmp_path):
    p, h, c = run_gen(SCHEMA_DIR, str(tmp_path))
    assert p.returncode == 0, p.stderr
    with open(h, encoding="utf-8") as f:
        header = f.read()
    enums = re.findall(r"^\t(MSG_[A-Z0-9_]+),", header, re.M)
    assert enums == expected_enums()
    assert len(enums) == len(schema_files()) - 1  # envelope.json has none
    assert "#define BUS_PROTOCOL_VERSION 1 " in header
    subprocess.run([CC, "-std=c11", "-Wall", "-Wextra", "-Werror", "-c", c,
                    "-o", str(tmp_path / "msgtypes.o")], check=True)


CHECK_C = r"""
#include <stdio.h>
#include <string.h>
#include "msgtypes.h"

/* Walks the table the way services will, printing one line per type. */
int main(void)
{
	int i, bad = 0;

	if (msgtypes[0].id != MSG_NONE || strcmp(msgtypes[0].name, "") != 0 ||
	    msgtypes[0].callers[0] != NULL || msgtypes[0].sensitive[0] != NULL)
		bad = 1;
	for (i = 1; i < MSG__COUNT; i++) {
		const struct msgtype *t = &msgtypes[i];
		const char *const *p;
		if ((int)t->id != i || !t->name || !t->service || !t->callers[0])
			bad = 1;
		printf("%s %s %d %u", t->name, t->service, (int)t->kind, t->flags);
		for (p = t->callers; *p; p++)
			printf(" %s", *p);
		for (p = t->sensitive; *p; p++)
			printf(" !%s", *p);
		printf("\n");
	}
	for (i = 0; msg_services[i]; i++)
		printf("service %s\n", msg_services[i]);
	return bad;
}
"""


def test_generated_table_matches_schemas(tmp_path):
    p, h, c = run_gen(SCHEMA_DIR, str(tmp_path))
    assert p.returncode == 0, p.stderr
    (tmp_path / "check.c").write_text(CHECK_C)
    exe = str(tmp_path / "check")
    subprocess.run([CC, "-std=c11", "-Wall", "-Wextra", "-Werror", "-I", str(tmp_path),
                    str(tmp_path / "check.c"), c, "-o", exe], check=True)
    out = subprocess.run([exe], capture_output=True, text=True, check=True).stdout
    kinds = {"request": 1, "event": 2, "reply": 3}
    want = []
    for title, s in message_schemas().items():
        xr = s["x-roost"]
        flags = 1 * xr["idempotent"] + 2 * xr["stream"] + 4 * xr.get("test", False)
        want.append(" ".join([title, xr["service"], str(kinds[xr["kind"]]), str(flags)]
                             + xr["callers"] + ["!" + f for f in xr["sensitive"]]))
    services = sorted({s["x-roost"]["service"] for s in message_schemas().values()} - {"*"})
    want += ["service " + s for s in services]
    assert out.splitlines() == want


def test_generator_rewrites_only_on_change(tmp_path):
    p, h, c = run_gen(SCHEMA_DIR, str(tmp_path))
    assert p.returncode == 0, p.stderr
    os.utime(h, (1000000000, 1000000000))
    os.utime(c, (1000000000, 1000000000))
    p, h, c = run_gen(SCHEMA_DIR, str(tmp_path))
    assert p.returncode == 0, p.stderr
    assert os.stat(h).st_mtime == 1000000000
    assert os.stat(c).st_mtime == 1000000000
    with open(c, "a", encoding="utf-8") as f:
        f.write("/* stale */\n")
    p, h, c = run_gen(SCHEMA_DIR, str(tmp_path))
    assert os.stat(h).st_mtime == 1000000000
    assert os.stat(c).st_mtime != 1000000000
    assert "stale" not in open(c, encoding="utf-8").read()


def break_xroost(key, value):
    def f(doc):
        doc["x-roost"][key] = value
    return f


def drop_xroost_key(key):
    def f(doc):
        del doc["x-roost"][key]
    return f


def wrong_title(doc):
    doc["title"] = "echo.payload.other"


def wrong_const(doc):
    doc["$defs"]["reply"]["properties"]["type"]["const"] = "echo.payload.other"


def not_closed(doc):
    del doc["$defs"]["request"]["unevaluatedProperties"]


def no_xroost(doc):
    del doc["x-roost"]


def sensitive_unknown(doc):
    doc["x-roost"]["sensitive"] = ["password"]


def idem_mismatch(doc):
    doc["x-roost"]["idempotent"] = True


# (id, mutation of echo.payload.echo.json, text expected in stderr)
BREAKS = [
    ("unknown kind", break_xroost("kind", "rpc"), "unknown kind"),
    ("bad service", break_xroost("service", "Echo"), "bad service name"),
    ("other service", break_xroost("service", "busd"), "does not start with its service"),
    ("idempotent not bool", break_xroost("idempotent", "yes"), "x-roost.idempotent"),
    ("callers not list", break_xroost("callers", "*"), "x-roost.callers"),
    ("empty callers", break_xroost("callers", []), "x-roost.callers"),
    ("bad caller", break_xroost("callers", ["Root"]), "x-roost.callers"),
    ("unknown x-roost key", break_xroost("owner", "me"), "unknown key"),
    ("missing stream", drop_xroost_key("stream"), "x-roost.stream missing"),
    ("no x-roost", no_xroost, "x-roost missing"),
    ("title mismatch", wrong_title, "title"),
    ("const mismatch", wrong_const, "type.const"),
    ("not closed", not_closed, "unevaluatedProperties"),
    ("sensitive not a field", sensitive_unknown, "sensitive"),
    ("idempotent without idem", idem_mismatch, "idempotent"),
]


@pytest.mark.parametrize("mutate,needle", [(m, n) for _, m, n in BREAKS],
                         ids=[i for i, _, _ in BREAKS])
def test_generator_rejects_broken_schema(tmp_path, mutate, needle):
    sdir = tmp_path / "schemas"
    shutil.copytree(SCHEMA_DIR, sdir)
    path = sdir / "echo.payload.echo.json"
    doc = json.loads(path.read_text())
    mutate(doc)
    path.write_text(json.dumps(doc))
    p, h, c = run_gen(str(sdir), str(tmp_path))
    assert p.returncode != 0
    assert "echo.payload.echo.json: " in p.stderr and needle in p.stderr, p.stderr
    assert not os.path.exists(h) and not os.path.exists(c)


def test_generator_rejects_duplicate_enum(tmp_path):
    # "echo.event-emit" and "echo.event.emit" would both be MSG_ECHO_EVENT_EMIT.
    sdir = tmp_path / "schemas"
    shutil.copytree(SCHEMA_DIR, sdir)
    doc = json.loads((sdir / "echo.event.emit.json").read_text())
    doc = json.loads(json.dumps(doc).replace("echo.event.emit", "echo.event-emit"))
    (sdir / "echo.event-emit.json").write_text(json.dumps(doc))
    p, _, _ = run_gen(str(sdir), str(tmp_path))
    assert p.returncode != 0
    assert "duplicate type enum MSG_ECHO_EVENT_EMIT" in p.stderr, p.stderr


def test_generator_rejects_bad_envelope(tmp_path):
    sdir = tmp_path / "schemas"
    shutil.copytree(SCHEMA_DIR, sdir)
    doc = json.loads((sdir / "envelope.json").read_text())
    doc["x-roost"]["version"] = 2   # but $defs.v still says 1
    (sdir / "envelope.json").write_text(json.dumps(doc))
    p, _, _ = run_gen(str(sdir), str(tmp_path))
    assert p.returncode != 0
    assert "envelope.json: " in p.stderr, p.stderr


def test_generator_rejects_bad_json_and_usage(tmp_path):
    sdir = tmp_path / "schemas"
    shutil.copytree(SCHEMA_DIR, sdir)
    (sdir / "echo.event.fired.json").write_text('{"title": "a", "title": "b"}')
    p, _, _ = run_gen(str(sdir), str(tmp_path))
    assert p.returncode != 0 and "echo.event.fired.json: " in p.stderr, p.stderr
    p = subprocess.run([PYTHON, GEN, str(sdir)], capture_output=True, text=True)
    assert p.returncode == 2 and "usage" in p.stderr



def test_generator_lists_sensitive_fields(tmp_path):
    sdir = tmp_path / "schemas"
    shutil.copytree(SCHEMA_DIR, sdir)
    path = sdir / "echo.payload.echo.json"
    doc = json.loads(path.read_text())
    doc["x-roost"]["sensitive"] = ["text", "fail"]
    path.write_text(json.dumps(doc))
    p, h, c = run_gen(str(sdir), str(tmp_path))
    assert p.returncode == 0, p.stderr
    src = open(c, encoding="utf-8").read()
    assert 'sensitive_echo_payload_echo[] = { "text", "fail", NULL };' in src
    assert ".sensitive = sensitive_echo_payload_echo," in src
    subprocess.run([CC, "-std=c11", "-Wall", "-Wextra", "-Werror", "-c", c,
                    "-o", str(tmp_path / "msgtypes.o")], check=True)
