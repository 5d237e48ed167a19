"""
test_smtpd_peers.py — smtpd inbound (issue 4) against real SMTP peers, all
on 127.0.0.1: a real Postfix relaying to smtpd (mta.Postfix, relayhost
[127.0.0.1]:<smtpd's port>), swaks, and Postfix's smtp-source.

  * Postfix delivers 100 messages (a few bytes up to over 1 MiB, 8-bit bodies
    with and without a MIME declaration, UTF-8 headers and senders, lines
    starting with dots, 998-octet lines, sizes around smtpd's 128 KiB chunk
    boundary, several local recipients: an alias, user+tag, postmaster@, a
    case variant), once over STARTTLS and once with smtpd started without a
    certificate. Every copy is read back with `roostctl message get` and
    compared byte for byte after exactly two Received fields (ours, then
    Postfix's); ours names the queue id smtpd logged and Postfix logged as
    "queued as"; storaged's listing shows each message exactly once per
    final recipient; Postfix's queue ends empty and nothing was deferred.
  * Postfix and an unknown user: 550 5.1.1, Postfix bounces, the bounce (a
    DSN sent with MAIL FROM:<>) lands in the local sender's inbox, nothing
    else is stored.
  * Postfix against smtpd's limits and troubles: storaged down (451 4.3.0 at
    RCPT, deferred, then delivered once), TLS 1.2 only, SIZE (Postfix bounces
    a bigger message without sending it), 120 recipients (452 4.5.3 past
    100, sent again), a certificate reload (SIGHUP) and an smtpd restart
    (SIGTERM) while it delivers.
  * No duplicate after a 4xx at the end of DATA: storaged stalls (SIGSTOP,
    by HoldingProxy, a TCP relay between Postfix and smtpd, the moment
    before smtpd sees the end of DATA). After a 451 (timeout) the late
    commit is refused by its deadline, so Postfix's retry is the only
    copy; at SIGTERM smtpd drains: it waits for the commit and answers 250.
  * swaks: plain, STARTTLS, PIPELINING, an 8-bit body, a non-hosted domain,
    a UTF-8 sender (SMTPUTF8 only if the installed swaks can say it).
  * smtp-source: 50 messages over 4 parallel sessions, and 20 preformatted
    ones over reused sessions, all stored.

Quirks of the peers, seen here: swaks puts a CRLF before its final dot even
when the data ends in one (swaks_data strips it), and its default template
leaves two empty lines after --body; smtp-source speaks HELO and adds an
empty last line to a -F file; Postfix 3.7 reuses plain-text sessions (about
a dozen for 100 messages) but opens one per delivery with TLS, marks mail
with UTF-8 headers or senders SMTPUTF8, and defers (rather than splits at
once) recipients past a 452 4.5.3.

Run: make && ROOST_BIN=$PWD/build/bin /usr/bin/python3 -m pytest tests/e2e/test_smtpd_peers.py -q
(Postfix needs root; without it those tests are skipped.)
"""

import os
import random
import re
import signal
import socket
import subprocess
import sys
import threading
import time

import pytest

import mta
from bus import WAIT
from smtp import message_get, start_smtpd, wait_smtpd
from store import db_query, listing
from test_accounts import ok, start_storaged

ALICE = "alice@example.org"       # the first user: postmaster@example.org is hers
BOB = "bob@example.org"
CAROL = "carol@example.org"
TEAM = "team@example.org"         # an alias: bob and carol
USERS = (ALICE, BOB, CAROL)
SMTP_SOURCE = "/usr/sbin/smtp-source"
DATE = "Wed, 25 Nov 2026 12:00:00 +0000"
N_MESSAGES = 100

# Where each envelope recipient we use ends up (checked against storaged at setup).
FINAL = {
    ALICE: [ALICE], BOB: [BOB], CAROL: [CAROL],
    "alice+news@example.org": [ALICE], "alice+x@example.org": [ALICE],
    TEAM: [BOB, CAROL],
    "postmaster@example.org": [ALICE],
    "Carol@Example.ORG": [CAROL],
}


# ---- fixtures ------------------------------------------------------------------------------


def setup_store(b):
    """storaged with example.org: alice (first, so the postmaster), bob, carol, and the
    alias team@ -> bob, carol. Users without a password: no KDF."""
    b.storaged = start_storaged(b)
    ok(b, "domain", "add", "example.org")
    for u in USERS:
        ok(b, "user", "add", u)
    ok(b, "alias", "add", TEAM, BOB)
    ok(b, "alias", "add", TEAM, CAROL)
    b.c = b.client()
    for address, users in FINAL.items():
        env, _ = b.c.call("storaged", {"type": "storaged.rcpt.resolve", "address": address},
                          timeout=WAIT)
        assert env["status"] == "ok" and env["found"] and env["deliveries"] == users, (address, env)
    return b


@pytest.fixture
def mx(bus):
    """busd + storaged (setup_store) + smtpd with a certificate (STARTTLS)."""
    setup_store(bus)
    start_smtpd(bus)
    return bus


def drain(pf, timeout=WAIT * 2):
    """Waits until Postfix's queue is empty after deferrals (wait_empty asks for
    queue runs meanwhile)."""
    pf.flush()
    pf.wait_empty(timeout=timeout)


def need_swaks():
    if not os.access(mta.SWAKS, os.X_OK):
        pytest.skip("swaks is not installed (make deps)")


# ---- reading back what smtpd stored ------------------------------------------------------


def inbox(b, address, mailbox="INBOX"):
    """storaged's listing of the mailbox, every page: {uid: message (with the header cache)}."""
    out, uids = {}, "1:*"
    while True:
        rep = listing(b.c, address, mailbox, uids=uids, headers=True)
        assert rep["status"] == "ok", rep
        for m in rep["messages"]:
            assert m["uid"] not in out, ("uid listed twice", address, m["uid"])
            out[m["uid"]] = m
        if "next" not in rep:
            return out
        uids = "%d:*" % rep["next"]


def split_received(data):
    """The leading Received fields (each with its continuation lines and CRLF) and the rest."""
    fields = []
    while data[:9].lower() == b"received:":
        end = 0
        while True:
            end = data.index(b"\r\n", end) + 2
            if data[end:end + 1] not in (b" ", b"\t"):
                break
        fields.append(data[:end])
        data = data[end:]
    return fields, data


OUR_RECEIVED = re.compile(
    rb"Received: from (?P<helo>\S+) \(\[(?P<ip>[^\]]+)\]\)\r\n"
    rb"\tby mx\.example\.org \(Roost\) with (?P<proto>[A-Z0-9]+) id (?P<qid>[0-9A-F]+)"
    rb"(?:\r\n\t\((?P<tls>TLSv1\.[23]:[A-Z0-9_-]+)\))?"
    rb"(?:\r\n\tfor <(?P<for>[^>]*)>)?;\r\n"
    rb"\t(?P<date>[A-Z][a-z]{2}, \d\d [A-Z][a-z]{2} \d{4} \d\d:\d\d:\d\d \+0000)\r\n\Z")

POSTFIX_RECEIVED = re.compile(
    rb"Received: by mta\.test \(Postfix, from userid 0\)\r\n\tid (?P<qid>[0-9A-F]+); [^\r\n]+\r\n\Z")


def ours(field):
    m = OUR_RECEIVED.match(field)
    assert m, "not our Received field: %r" % field
    return {k: (v.decode() if v is not None else None) for k, v in m.groupdict().items()}


_Q = r'"(?:[^"\\]|\\.)*"|\S+'
TXN_RE = re.compile(
    r"txn qid=(?P<qid>\S+) ip=(?P<ip>\S+) helo=(?P<helo>%s) from=(?P<from>%s) to=(?P<to>%s) "
    r"nrcpt=(?P<nrcpt>\d+) size=(?P<size>\d+) tls=(?P<tls>\w+) result=(?P<result>%s)" % (_Q, _Q, _Q, _Q))


def unq(s):
    if s.startswith('"') and s.endswith('"'):
        return re.sub(r"\\(.)", r"\1", s[1:-1])
    return s


def smtpd_txns(b):
    """smtpd's transaction log lines as dicts (quotes removed): every smtpd started on
    the bus, each in order."""
    out = []
    logs = "\n".join(p.log() for p in b.procs if p.name == "smtpd")
    for line in logs.splitlines():
        m = TXN_RE.search(line)
        if m:
            d = {k: unq(v) for k, v in m.groupdict().items()}
            d["line"] = line
            out.append(d)
    return out


def stored_by_id(b, users=USERS):
    """{Message-ID: {user: [uid, ...]}} over the users' inboxes."""
    out = {}
    for u in users:
        for uid, m in inbox(b, u).items():
            mid = m.get("headers", {}).get("message_id")
            out.setdefault(mid, {}).setdefault(u, []).append(uid)
    return out


def messages_in_db(b):
    return db_query(b.data_dir, "SELECT count(*) FROM messages")[0][0]


# ---- the 100 messages Postfix sends ----------------------------------------------------------


def rcpts_for(i):
    return [
        [ALICE],
        [BOB],
        [CAROL],
        [ALICE, BOB, CAROL],
        ["alice+news@example.org"],
        [TEAM],
        ["postmaster@example.org"],
        ["alice+x@example.org", TEAM, "postmaster@example.org"],   # alice once, bob, carol
        [BOB, "Carol@Example.ORG"],
        [ALICE],
    ][i % 10]


def text_line(rnd, n, alphabet=b"abcdefghijklmnopqrstuvwxyz ABCDEFGHIJ0123456789.,;-"):
    return bytes(rnd.choice(alphabet) for _ in range(n))


def sized_body(rnd, size, dots=True):
    """A body of exactly size octets (CRLF lines of at most 78+2), some starting with dots."""
    out, left = [], size
    while left > 0:
        n = min(left - 2, rnd.randint(0, 78))
        if left - 2 - n == 1:           # one octet left over cannot be a line (CRLF needs 2)
            n = left - 2
        line = text_line(rnd, n)
        if dots and n and rnd.random() < 0.05:
            line = b"." + line[1:]
        out.append(line + b"\r\n")
        left -= n + 2
    body = b"".join(out)
    assert len(body) == size and body.endswith(b"\r\n") and b"\r\n\n" not in body, size
    return body


def build_messages(tag):
    """N_MESSAGES distinct messages: [(message_id, bytes, sender, rcpts, kind, smtputf8)]."""
    kinds = ["tiny", "dots", "8bit", "long", "8bit-raw", "sized", "utf8-header", "empty-body",
             "dot-last", "utf8-sender"]
    out = []
    for i in range(N_MESSAGES):
        rnd = random.Random("%s-%d" % (tag, i))
        kind = kinds[(i + i // 10) % len(kinds)] if i not in (37, 50, 99) else "1mib"
        mid = "<peers-%s-%d@example.net>" % (tag, i)
        sender = "sender%d@example.net" % i
        utf8 = False
        subject = "peers %s message %d (%s)" % (tag, i, kind)
        head = [b"From: Sender %d <%s>" % (i, sender.encode())]
        ctype = [b"MIME-Version: 1.0", b"Content-Type: text/plain; charset=us-ascii"]
        body = b"message %d\r\n" % i
        if kind == "tiny":
            body = b"x\r\n"
            ctype = []
        elif kind == "empty-body":
            body = b""
            ctype = []
        elif kind == "dots":
            body += b".\r\n..\r\n...\r\n.leading dot\r\n. \r\n.\t\r\nend.\r\n..\r\n"
        elif kind == "dot-last":
            body += b"the last line is a single dot\r\n.\r\n"
        elif kind == "8bit":
            ctype = [b"MIME-Version: 1.0", b"Content-Type: text/plain; charset=utf-8",
                     b"Content-Transfer-Encoding: 8bit"]
            body += ("Grüße aus Köln, ça va ? 日本語のテキスト № %d €\r\n" % i).encode()
            body += b"raw latin-1: \xe9\xe8\xff, C1 bytes \x80\x9f, a tab\there\r\n"
            body += b"." + "über a leading dot".encode() + b"\r\n"
        elif kind == "8bit-raw":
            # 8-bit body without any MIME declaration: Postfix sends it without BODY=8BITMIME.
            ctype = []
            body += "no MIME header, but: Ünïcödé ☃ and \xff\xfe bytes\r\n".encode("utf-8", "surrogateescape")
            body += bytes(range(0x80, 0x100)) + b"\r\n"
        elif kind == "long":
            # 998 octets: the longest line RFC 5321 allows; Postfix passes it unchanged.
            body += text_line(rnd, 998) + b"\r\n" + b"." + text_line(rnd, 997) + b"\r\n"
            body += b"\xc3\xa9" * 499 + b"\r\n"      # 998 octets of 8-bit text
            ctype = [b"MIME-Version: 1.0", b"Content-Type: text/plain; charset=utf-8",
                     b"Content-Transfer-Encoding: 8bit"]
        elif kind == "sized":
            # Around smtpd's 128 KiB chunk, two of them, and small powers of two.
            size = rnd.choice([131072 - 700, 131072 - 300, 131072 - 1, 131072, 131073, 131072 + 400,
                               262144 - 500, 262144 + 17, 4096, 65536, 100 * 1024, 1024])
            body = sized_body(rnd, size)
        elif kind == "utf8-header":
            subject = "peers %s message %d: Grüße ☃ 日本" % (tag, i)
            ctype = [b"MIME-Version: 1.0", b"Content-Type: text/plain; charset=utf-8",
                     b"Content-Transfer-Encoding: 8bit"]
            body += "UTF-8 in the Subject: Postfix asks for SMTPUTF8\r\n".encode()
            utf8 = True
        elif kind == "utf8-sender":
            sender = "jörg%d@bücher.example" % i
            head = [("From: Jörg <%s>" % sender).encode()]
            body += "a UTF-8 envelope sender and From\r\n".encode()
            utf8 = True
        elif kind == "1mib":
            # Over 1 MiB: base64-looking lines, then a mix of everything above.
            alpha = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
            lines = []
            total = 0
            k = 0
            while total < 1024 * 1024 + 3000 * i:
                if k % 97 == 0:
                    ln = b"." + text_line(rnd, 60)
                elif k % 211 == 0:
                    ln = text_line(rnd, 998)
                elif k % 53 == 0 and i != 50:
                    ln = "8-bit: Köln ☃ %d" % k
                    ln = ln.encode()
                else:
                    ln = bytes(rnd.choice(alpha) for _ in range(76))
                lines.append(ln + b"\r\n")
                total += len(ln) + 2
                k += 1
            body = b"".join(lines)
            if i == 50:
                ctype = [b"MIME-Version: 1.0", b"Content-Type: application/octet-stream",
                         b"Content-Transfer-Encoding: base64"]
            else:
                ctype = [b"MIME-Version: 1.0", b"Content-Type: text/plain; charset=utf-8",
                         b"Content-Transfer-Encoding: 8bit"]
        rcpts = rcpts_for(i)
        head += [b"To: " + ", ".join(rcpts).encode(), b"Subject: " + subject.encode(),
                 b"Date: " + DATE.encode(), b"Message-ID: " + mid.encode()] + ctype
        data = b"\r\n".join(head) + b"\r\n\r\n" + body
        out.append((mid, data, sender, rcpts, kind, utf8))
    sizes = sorted(len(m[1]) for m in out)
    assert sizes[0] < 250 and sizes[-1] > 1024 * 1024, sizes[:3] + sizes[-3:]
    return out


def finals(rcpts):
    """The users a transaction to rcpts delivers to, each once."""
    users = []
    for r in rcpts:
        for u in FINAL[r]:
            if u not in users:
                users.append(u)
    return users


def check_postfix_run(mx, pf, msgs, tls):
    """Everything Postfix sent arrived once per final recipient, byte for byte."""
    smtpd_port = mx.smtp_port
    assert pf.queue() == []
    assert pf.deferred_reasons() == [], pf.deferred_reasons()[:10]
    assert "status=deferred" not in pf.log() and "status=bounced" not in pf.log()
    sent = [d for d in pf.deliveries() if d["status"] == "sent"]
    assert len(sent) == sum(len(m[3]) for m in msgs), (len(sent), pf.log_tail())
    relay = "127.0.0.1[127.0.0.1]:%d" % smtpd_port
    assert all(d["relay"] == relay for d in sent), sent[:3]
    # Postfix's queue id -> smtpd's queue id, from "250 2.0.0 ... queued as QID".
    pf_to_ours = {}
    for d in sent:
        m = re.search(r"queued as ([0-9A-F]+)", d["reason"])
        assert m and d["reason"].startswith("250 2.0.0 "), d
        assert pf_to_ours.setdefault(d["qid"], m.group(1)) == m.group(1), d
    if tls:
        tlslines = pf.tls_connections()
        assert len(tlslines) >= N_MESSAGES, len(tlslines)
        assert all("Untrusted TLS connection established to %s" % relay in ln for ln in tlslines), tlslines[:3]
    else:
        assert pf.tls_connections() == []
        assert "STARTTLS" not in pf.log()

    sessions = len(re.findall(r" session\.open ", mx.smtpd.log()))
    if tls:
        # smtp_tls_connection_reuse = no: one session (and handshake) per delivery
        assert sessions >= N_MESSAGES, sessions
    else:
        # plain text: Postfix's connection cache reuses sessions
        assert sessions < N_MESSAGES // 2, sessions
    txns = smtpd_txns(mx)
    by_qid = {}
    for t in txns:
        assert t["qid"] not in by_qid, "queue id logged twice: %s" % t["line"]
        by_qid[t["qid"]] = t
    assert len(txns) == N_MESSAGES, "%d smtpd transactions for %d messages" % (len(txns), N_MESSAGES)
    assert all(t["result"] == "stored" for t in txns), [t["line"] for t in txns if t["result"] != "stored"]

    stored = stored_by_id(mx)
    assert set(stored) == {m[0] for m in msgs}, set(stored) ^ {m[0] for m in msgs}
    want_total = {u: 0 for u in USERS}
    for mid, data, sender, rcpts, kind, utf8 in msgs:
        users = finals(rcpts)
        got = stored[mid]
        assert sorted(got) == sorted(users), (mid, kind, rcpts, got)
        qids = set()
        for u in users:
            assert len(got[u]) == 1, "%s (%s) stored %d times for %s" % (mid, kind, len(got[u]), u)
            want_total[u] += 1
            copy = message_get(mx, u, got[u][0])
            fields, rest = split_received(copy)
            assert len(fields) == 2, (mid, kind, fields)
            r = ours(fields[0])
            pfr = POSTFIX_RECEIVED.match(fields[1])
            assert pfr, (mid, fields[1])
            assert rest == data, "%s (%s) for %s changed in transit (%d octets sent, %d back)" % (
                mid, kind, u, len(data), len(rest))
            assert r["helo"] == "mta.test" and r["ip"] == "127.0.0.1", r
            proto = ("UTF8SMTP" if utf8 else "ESMTP") + ("S" if tls else "")
            assert r["proto"] == proto, (mid, kind, r)
            assert (r["tls"] is not None) == tls, r
            assert r["for"] == (rcpts[0] if len(rcpts) == 1 else None), (mid, rcpts, r)
            assert r["qid"] == pf_to_ours[pfr.group("qid").decode()], (mid, r, pfr.group("qid"))
            t = by_qid.get(r["qid"])
            assert t is not None, "queue id %s of %s not in smtpd's log" % (r["qid"], mid)
            assert t["ip"] == "127.0.0.1" and t["helo"] == "mta.test" and t["from"] == sender, t["line"]
            assert int(t["nrcpt"]) == len(rcpts) and t["tls"] == ("yes" if tls else "no"), t["line"]
            assert int(t["size"]) == len(fields[1]) + len(data), (t["line"], len(fields[1]) + len(data))
            qids.add(r["qid"])
        assert len(qids) == 1, "%s came in %d transactions" % (mid, len(qids))
    for u in USERS:
        assert len(inbox(mx, u)) == want_total[u], u
    # One mailbox row per delivery, one complete blob per transaction, nothing queued.
    assert messages_in_db(mx) == sum(want_total.values())
    assert db_query(mx.data_dir, "SELECT count(*), sum(complete) FROM blobs")[0] == (N_MESSAGES, N_MESSAGES)
    assert db_query(mx.data_dir, "SELECT count(*) FROM queue")[0][0] == 0


# ---- Postfix ------------------------------------------------------------------------------


@pytest.mark.parametrize("tls", [True, False], ids=["starttls", "plain"])
def test_postfix_delivers_100_messages(make_bus, postfix, tls):
    b = make_bus()
    setup_store(b)
    start_smtpd(b, tls=tls)
    # Plain text: connections always go back to Postfix's cache. By default
    # it caches only "on demand" (while a backlog for the destination
    # exists), so how many sessions are reused depends on how fast smtpd
    # answers; the check below is that reused sessions work, not a race.
    pf = postfix(b.smtp_port, main_cf=None if tls else {"smtp_connection_cache_destinations": mta.LOOPBACK})
    msgs = build_messages("tls" if tls else "plain")
    t0 = time.monotonic()
    for mid, data, sender, rcpts, kind, utf8 in msgs:
        pf.send(data, sender, rcpts)
    pf.wait_empty(timeout=WAIT * 3)
    elapsed = time.monotonic() - t0
    check_postfix_run(b, pf, msgs, tls)
    sessions = len(re.findall(r" session\.open ", b.smtpd.log()))
    sys.stderr.write("\n%d messages (%.1f MiB) through Postfix to smtpd (%s) in %.1f s, %d sessions\n" % (
        len(msgs), sum(len(m[1]) for m in msgs) / 1048576, "STARTTLS" if tls else "plain", elapsed, sessions))


def test_postfix_unknown_user_bounces(mx, postfix):
    pf = postfix(mx.smtp_port)
    only = b"From: bob@example.org\r\nTo: nobody@example.org\r\nSubject: to nobody\r\nDate: " + \
        DATE.encode() + b"\r\nMessage-ID: <unknown-1@example.org>\r\n\r\nfor nobody\r\n"
    mixed = b"From: bob@example.org\r\nTo: alice@example.org, ghost@example.org\r\nSubject: mixed\r\n" \
        b"Date: " + DATE.encode() + b"\r\nMessage-ID: <unknown-2@example.org>\r\n\r\none known, one not\r\n"
    pf.send(only, BOB, ["nobody@example.org"])
    pf.send(mixed, BOB, [ALICE, "ghost@example.org"])
    pf.wait_empty()
    bounced = [d for d in pf.deliveries() if d["status"] == "bounced"]
    assert sorted(d["rcpt"] for d in bounced) == ["ghost@example.org", "nobody@example.org"], bounced
    for d in bounced:
        assert d["relay"] == "127.0.0.1[127.0.0.1]:%d" % mx.smtp_port, d
        assert re.match(r"host 127\.0\.0\.1\[127\.0\.0\.1\] said: 550 5\.1\.1 .*\(in reply to RCPT TO command\)$",
                        d["reason"]), d
    assert pf.deferred_reasons() == []
    log = pf.log()
    # Each original gets a non-delivery notification, sent to bob (MAIL FROM:<>) through smtpd.
    ndr = re.findall(r"\]: ([0-9A-F]+): sender non-delivery notification: ([0-9A-F]+)", log)
    assert len(ndr) == 2, log
    for _, dsn_qid in ndr:
        assert re.search(r"\]: %s: from=<>" % dsn_qid, log), dsn_qid
        assert [d["status"] for d in pf.deliveries() if d["qid"] == dsn_qid] == ["sent"], dsn_qid
    # alice got the mixed message once; bob got the two bounces; nothing else anywhere.
    stored = stored_by_id(mx)
    assert stored.pop("<unknown-2@example.org>") == {ALICE: [1]}
    assert "<unknown-1@example.org>" not in stored
    assert sorted(len(v.get(BOB, [])) for v in stored.values()) == [1, 1], stored
    assert all(list(v) == [BOB] for v in stored.values()), stored
    assert messages_in_db(mx) == 3
    rest = split_received(message_get(mx, ALICE, 1))[1]
    assert rest == mixed
    for uid in (1, 2):
        fields, dsn = split_received(message_get(mx, BOB, uid))
        assert len(fields) == 2 and ours(fields[0])["for"] == BOB
        assert b"Content-Type: multipart/report; report-type=delivery-status;" in dsn
        assert re.search(rb"Final-Recipient: rfc822; (nobody|ghost)@example\.org\r\n", dsn), dsn
        assert b"Status: 5.1.1\r\n" in dsn and b"Diagnostic-Code: smtp; 550 5.1.1 " in dsn
    # The transaction whose only recipient was refused ends with RSET or
    # QUIT, depending on whether Postfix keeps the connection for reuse.
    every = smtpd_txns(mx)
    txns = [t for t in every if t["result"] == "stored"]
    assert len(txns) == 3, [t["line"] for t in every]
    assert all(t["result"] in ("rset", "quit") for t in every if t["result"] != "stored"), \
        [t["line"] for t in every]
    assert sorted(t["from"] for t in txns) == ["", "", BOB], [t["line"] for t in txns]
    assert sorted(t["to"] for t in txns) == [ALICE, BOB, BOB], [t["line"] for t in txns]


def test_postfix_defers_while_storaged_is_down_then_delivers_once(mx, postfix):
    """storaged gone: smtpd answers RCPT with 451 4.3.0, Postfix defers and retries; once
    storaged is back every message arrives exactly once per recipient."""
    pf = postfix(mx.smtp_port)
    mx.storaged.kill()
    mx.storaged.wait()
    msgs = []
    for i, rcpts in enumerate(([ALICE], [TEAM], [ALICE, "bob+x@example.org"])):
        data = b"From: s@example.net\r\nTo: x@example.org\r\nSubject: deferred %d\r\nDate: " % i + \
            DATE.encode() + b"\r\nMessage-ID: <deferred-%d@example.net>\r\n\r\nbody %d\r\n" % (i, i)
        msgs.append(("<deferred-%d@example.net>" % i, data, rcpts))
        pf.send(data, "s@example.net", rcpts)
    mta.wait_until(lambda: len({q for q, _, _ in pf.deferred_reasons()}) >= 3,
                   what="Postfix to defer all three messages")
    for qid, rcpt, reason in pf.deferred_reasons():
        assert re.match(r"host 127\.0\.0\.1\[127\.0\.0\.1\] said: 451 4\.3\.0 .*\(in reply to RCPT TO command\)$",
                        reason), (rcpt, reason)
    assert smtpd_txns(mx) == [] or all(t["result"] != "stored" for t in smtpd_txns(mx))
    mx.storaged = start_storaged(mx)
    drain(pf)
    # Each once per final recipient (UIDs in whatever order the retries came; a
    # recipient pipelined after a deferred one may have got through at once).
    stored = stored_by_id(mx)
    assert {mid: {u: len(uids) for u, uids in v.items()} for mid, v in stored.items()} == {
        "<deferred-0@example.net>": {ALICE: 1},
        "<deferred-1@example.net>": {BOB: 1, CAROL: 1},
        "<deferred-2@example.net>": {ALICE: 1, BOB: 1},
    }, stored
    for mid, data, rcpts in msgs:
        for u, uids in stored[mid].items():
            fields, rest = split_received(message_get(mx, u, uids[0]))
            assert len(fields) == 2 and rest == data
    assert messages_in_db(mx) == 5


def test_postfix_tls12_only(mx, postfix):
    """A Postfix that speaks TLS 1.2 at most (as older peers do) gets through as well."""
    pf = postfix(mx.smtp_port, main_cf={"smtp_tls_protocols": "!SSLv2, !SSLv3, !TLSv1, !TLSv1.1, !TLSv1.3"})
    msgs = [m for m in build_messages("tls12") if m[4] in ("8bit", "dots", "long", "utf8-header")][:8]
    for mid, data, sender, rcpts, kind, utf8 in msgs:
        pf.send(data, sender, rcpts)
    pf.wait_empty()
    assert pf.deferred_reasons() == []
    lines = pf.tls_connections()
    assert len(lines) >= len(msgs) and all(": TLSv1.2 with cipher " in ln for ln in lines), lines
    stored = stored_by_id(mx)
    for mid, data, sender, rcpts, kind, utf8 in msgs:
        for u in finals(rcpts):
            [uid] = stored[mid][u]
            fields, rest = split_received(message_get(mx, u, uid))
            r = ours(fields[0])
            assert len(fields) == 2 and rest == data, (mid, kind)
            assert r["tls"].startswith("TLSv1.2:") and r["proto"] == ("UTF8SMTPS" if utf8 else "ESMTPS"), r


def test_postfix_respects_our_size(make_bus, postfix):
    """smtpd advertises SIZE (max_message_size - 4 KiB): Postfix bounces a bigger message
    itself without sending it (5.3.4) and delivers one that fits; nothing is deferred."""
    b = make_bus(env={"ROOST_MAX_MESSAGE_SIZE": "200000"})
    setup_store(b)
    start_smtpd(b)
    pf = postfix(b.smtp_port)
    head = b"From: s@example.net\r\nTo: alice@example.org\r\nDate: " + DATE.encode() + b"\r\n"
    small = head + b"Subject: fits\r\nMessage-ID: <fits@example.net>\r\n\r\n" + sized_body(random.Random(1), 150000)
    big = head + b"Subject: too big\r\nMessage-ID: <big@example.net>\r\n\r\n" + sized_body(random.Random(2), 250000)
    pf.send(small, "s@example.net", [ALICE])
    pf.send(big, BOB, [ALICE])          # its bounce goes to bob, through smtpd
    pf.wait_empty()
    assert pf.deferred_reasons() == []
    [bounced] = [d for d in pf.deliveries() if d["status"] == "bounced"]
    assert bounced["rcpt"] == ALICE and "5.3.4" in pf.log(), bounced
    assert re.search(r"message size \d+ exceeds size limit 195904 of server", bounced["reason"]), bounced
    stored = stored_by_id(b)
    assert stored.pop("<fits@example.net>") == {ALICE: [1]}
    assert "<big@example.net>" not in stored and list(stored.values()) == [{BOB: [1]}], stored
    assert split_received(message_get(b, ALICE, 1))[1] == small
    # Postfix never sent the big one: smtpd saw two transactions (the small one, the bounce).
    assert [t["result"] for t in smtpd_txns(b)] == ["stored", "stored"]


def test_postfix_120_recipients_in_one_message(bus, postfix):
    """Postfix allowed 1000 recipients per delivery meets smtpd's 100: 452 4.5.3 for the
    101st on; Postfix sends those again; every user gets the message exactly once."""
    setup_store(bus)
    users = ["u%03d@example.org" % i for i in range(120)]
    for u in users:
        ok(bus, "user", "add", u)
    start_smtpd(bus)
    pf = postfix(bus.smtp_port, main_cf={"smtp_destination_recipient_limit": "1000",
                                         "relay_destination_recipient_limit": "1000"})
    data = b"From: s@example.net\r\nTo: undisclosed-recipients:;\r\nSubject: many\r\nDate: " + \
        DATE.encode() + b"\r\nMessage-ID: <many@example.net>\r\n\r\nto 120 users\r\n"
    pf.send(data, "s@example.net", users)
    drain(pf)
    sent = [d for d in pf.deliveries() if d["status"] == "sent"]
    assert sorted(d["rcpt"] for d in sent) == users, len(sent)
    txns = smtpd_txns(bus)
    assert [t["result"] for t in txns] == ["stored"] * len(txns) and len(txns) >= 2, [t["line"] for t in txns]
    assert sum(int(t["nrcpt"]) for t in txns) == 120 and max(int(t["nrcpt"]) for t in txns) == 100
    over = [r for r in pf.deferred_reasons()]
    assert all("452 4.5.3 " in r[2] for r in over), over
    for u in users:
        box = inbox(bus, u)
        assert len(box) == 1, (u, box)
    fields, rest = split_received(message_get(bus, users[119], 1))
    assert len(fields) == 2 and rest == data
    sys.stderr.write("\n120 recipients: %d smtpd transactions, %d deferrals, nrcpt %s\n" % (
        len(txns), len(over), [t["nrcpt"] for t in txns]))


def test_postfix_across_a_certificate_reload(mx, postfix):
    """A new certificate (RSA -> ECDSA P-256) put in place and SIGHUP sent while Postfix
    delivers: nothing deferred, every message stored once, and the handshakes after the
    reload show the new key."""
    pf = postfix(mx.smtp_port)
    msgs = build_messages("reload")[:60]
    for mid, data, sender, rcpts, kind, utf8 in msgs[:40]:
        pf.send(data, sender, rcpts)
    mta.wait_until(lambda: stored_count(mx) >= 15, what="15 messages stored")
    tdir = os.path.join(mx.tmp, "tls")
    cert, key = mta.make_cert(tdir, "mx.example.org", "ec")
    os.replace(key, os.path.join(tdir, "key.pem"))
    os.replace(cert, os.path.join(tdir, "cert.pem"))
    mx.smtpd.kill(signal.SIGHUP)
    mta.wait_until(lambda: 'reload tls_cert=' in mx.smtpd.log(), what="smtpd's reload line")
    assert re.search(r"reload tls_cert=\S+ result=ok", mx.smtpd.log()), mx.smtpd.log()[-2000:]
    pf.wait_empty(timeout=WAIT * 2)
    n_before = len(pf.tls_connections())
    for mid, data, sender, rcpts, kind, utf8 in msgs[40:]:
        pf.send(data, sender, rcpts)
    pf.wait_empty(timeout=WAIT * 2)
    assert pf.deferred_reasons() == []
    lines = pf.tls_connections()
    assert "server-signature RSA-PSS" in lines[0], lines[0]
    after = lines[n_before:]
    assert len(after) >= 20 and all("server-signature ECDSA (prime256v1)" in ln for ln in after), after[:3]
    stored = stored_by_id(mx)
    for mid, data, sender, rcpts, kind, utf8 in msgs:
        got = stored.get(mid, {})
        assert {u: len(v) for u, v in got.items()} == {u: 1 for u in finals(rcpts)}, (mid, got)
    assert mx.smtpd.alive() and [p.name for p in mx.procs].count("smtpd") == 1


def restart_smtpd(b, sig=signal.SIGTERM, tls=True):
    """Stops smtpd (sig) and starts a new one on the same port and bus."""
    port = b.smtp_port
    b.smtpd.kill(sig)
    b.smtpd.wait()
    p = start_smtpd(b, env={"ROOST_SMTP_PORT": str(port)}, tls=tls, wait=False)
    b.smtp_port = port
    wait_smtpd(b, p)
    return p


def stored_count(b):
    return sum(1 for t in smtpd_txns(b) if t["result"] == "stored")


def test_postfix_across_an_smtpd_restart(mx, postfix):
    """smtpd stopped (SIGTERM: a commit in flight is answered, every other session gets 421 4.3.2) and started again while
    Postfix delivers 100 messages: Postfix defers and retries; in the end every
    message is stored exactly once per final recipient."""
    pf = postfix(mx.smtp_port)
    msgs = build_messages("restart")
    for mid, data, sender, rcpts, kind, utf8 in msgs:
        pf.send(data, sender, rcpts)
    mta.wait_until(lambda: stored_count(mx) >= 30, what="30 messages stored")
    restart_smtpd(mx)
    drain(pf, timeout=WAIT * 3)
    stored = stored_by_id(mx)
    dups = {}
    for mid, data, sender, rcpts, kind, utf8 in msgs:
        got = stored.get(mid, {})
        assert sorted(got) == sorted(finals(rcpts)), (mid, kind, rcpts, got)
        for u, uids in got.items():
            if len(uids) != 1:
                dups[(mid, u)] = uids
    if dups:
        # what smtpd logged for each copy's queue id, and what Postfix heard
        qids = set()
        for (mid, u), uids in dups.items():
            for uid in uids:
                qids.add(ours(split_received(message_get(mx, u, uid))[0][0])["qid"])
        mids = {mid for mid, _ in dups}
        pf_ids = {q for q, m in re.findall(r"\]: ([0-9A-F]+): message-id=(<[^>]*>)", pf.log()) if m in mids}
        lines = [ln for p in mx.procs if p.name == "smtpd" for ln in p.log().splitlines()
                 if " txn " in ln and any('from="%s"' % m[2] in ln for m in msgs if m[0] in mids)]
        pflines = [ln for ln in pf.log().splitlines() if any(q + ":" in ln for q in pf_ids) and "to=<" in ln]
        pytest.fail("stored more than once: %s (stored copies' queue ids %s)\n--- smtpd's txn lines for "
                    "these senders:\n%s\n--- Postfix:\n%s" % (dups, sorted(qids), "\n".join(lines),
                                                             "\n".join(pflines)), pytrace=False)
    sys.stderr.write("\nrestart: %d stored transactions, %d refused, %d Postfix deferrals\n" % (
        stored_count(mx), sum(1 for t in smtpd_txns(mx) if t["result"] != "stored"),
        len(pf.deferred_reasons())))


class HoldingProxy:
    """A TCP relay 127.0.0.1:port -> 127.0.0.1:target. The first time the client's stream
    holds an end of DATA (CRLF . CRLF) it forwards everything but the last LF, calls
    hook(), then forwards the rest: the hook runs while the server cannot yet have seen
    the end of the message. Plain text only."""

    def __init__(self, target, hook):
        self.target, self.hook = target, hook
        self.fired = threading.Event()
        self.lsock = socket.socket()
        self.lsock.bind(("127.0.0.1", 0))
        self.lsock.listen(16)
        self.port = self.lsock.getsockname()[1]
        self.socks = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        while True:
            try:
                c, _ = self.lsock.accept()
            except OSError:
                return
            try:
                s = socket.create_connection(("127.0.0.1", self.target))
            except OSError:         # the server is not there (restarting): as if refused
                c.close()
                continue
            self.socks += [c, s]
            threading.Thread(target=self._pump, args=(c, s, True), daemon=True).start()
            threading.Thread(target=self._pump, args=(s, c, False), daemon=True).start()

    def _pump(self, src, dst, watch):
        tail = b""
        try:
            while True:
                chunk = src.recv(65536)
                if not chunk:
                    break
                if watch and not self.fired.is_set():
                    w = tail + chunk
                    i = w.find(b"\r\n.\r\n")
                    if i >= 0:
                        lf = i + 4 - len(tail)     # index of the final LF in chunk (>= 0)
                        dst.sendall(chunk[:lf])
                        self.hook()
                        self.fired.set()
                        chunk = chunk[lf:]
                    tail = w[-4:]
                dst.sendall(chunk)
        except OSError:
            pass
        finally:
            try:
                dst.shutdown(socket.SHUT_WR)
            except OSError:
                pass

    def close(self):
        self.lsock.close()
        for s in self.socks:
            try:
                s.close()
            except OSError:
                pass


def test_postfix_retry_after_a_451_at_end_of_data_is_not_a_duplicate(make_bus, postfix):
    """storaged stalls (SIGSTOP) just before smtpd sees the end of DATA: smtpd times out
    and answers 451 4.3.0, Postfix defers and retries. The message must end up stored
    once: a 4xx told Postfix that smtpd did not take responsibility for it."""
    b = make_bus(env={"ROOST_BUS_TIMEOUT_MS": "1000", "ROOST_BUS_RETRIES": "1"})
    setup_store(b)
    start_smtpd(b, tls=False)
    proxy = HoldingProxy(b.smtp_port, lambda: b.storaged.kill(signal.SIGSTOP))
    try:
        pf = postfix(proxy.port)
        data = b"From: s@example.net\r\nTo: alice@example.org\r\nSubject: late commit\r\nDate: " + \
            DATE.encode() + b"\r\nMessage-ID: <late-commit@example.net>\r\n\r\nbody\r\n"
        pf.send(data, "s@example.net", [ALICE])
        try:
            mta.wait_until(lambda: pf.deferred_reasons(), what="Postfix to defer the message")
        finally:
            b.storaged.kill(signal.SIGCONT)
        [(_, _, reason)] = pf.deferred_reasons()
        assert "451 4.3.0 " in reason and "(in reply to end of DATA command)" in reason, reason
        first = smtpd_txns(b)
        assert [t["result"] for t in first] == ["4.3.0"], [t["line"] for t in first]
        drain(pf)
        txns = smtpd_txns(b)
        assert [t["result"] for t in txns] == ["4.3.0", "stored"], [t["line"] for t in txns]
        time.sleep(2)           # storaged has long worked off what waited for it
        stored = stored_by_id(b)
        assert stored == {"<late-commit@example.net>": {ALICE: [1]}}, (
            "stored %s; smtpd: %s" % (stored, [t["line"] for t in txns]))
    finally:
        proxy.close()


def test_postfix_retry_after_a_421_at_shutdown_is_not_a_duplicate(bus, postfix):
    """smtpd gets SIGTERM while the commit of a message is with storaged (stalled by
    SIGSTOP just before smtpd sees the end of DATA). Whatever smtpd answers, the message
    must end up stored once after Postfix's retry: either smtpd waits for the commit and
    answers 250, or, having answered 4xx, the message must not be stored."""
    setup_store(bus)
    start_smtpd(bus, tls=False)
    proxy = HoldingProxy(bus.smtp_port, lambda: bus.storaged.kill(signal.SIGSTOP))
    try:
        pf = postfix(proxy.port)
        data = b"From: s@example.net\r\nTo: alice@example.org\r\nSubject: shutdown\r\nDate: " + \
            DATE.encode() + b"\r\nMessage-ID: <shutdown@example.net>\r\n\r\nbody\r\n"
        pf.send(data, "s@example.net", [ALICE])
        try:
            assert proxy.fired.wait(WAIT), "Postfix never reached the end of DATA"
            time.sleep(0.5)             # smtpd has the end of DATA; its commit waits for storaged
            bus.smtpd.kill(signal.SIGTERM)
            time.sleep(0.5)             # smtpd drains: it must wait for that commit
            assert bus.smtpd.alive(), "smtpd left while a commit was in flight"
        finally:
            bus.storaged.kill(signal.SIGCONT)
        assert bus.smtpd.wait() == 0
        first = smtpd_txns(bus)
        assert [t["result"] for t in first] == ["stored"], [t["line"] for t in first]
        restart_smtpd(bus, tls=False)
        drain(pf)
        time.sleep(1)
        txns = smtpd_txns(bus)
        stored = stored_by_id(bus)
        assert stored == {"<shutdown@example.net>": {ALICE: [1]}}, (
            "stored %s; smtpd: %s; Postfix: %s" % (stored, [t["line"] for t in txns],
                                                    [d["reason"] for d in pf.deliveries()]))
    finally:
        proxy.close()


# ---- swaks --------------------------------------------------------------------------------


def swaks(b, *args):
    return mta.swaks(b.smtp_port, *args)


def swaks_data(b, data, *args, name="data.eml"):
    """swaks --data @FILE plus args, so that swaks sends exactly data. swaks always puts
    a CRLF before the final dot (a file ending in CRLF would gain an empty line), so
    the file has data without its last CRLF. (It also replaces the two characters
    backslash n, and tokens like %DATE%, in the data: none in ours.)"""
    assert data.endswith(b"\r\n") and b"\\n" not in data and b"%" not in data
    path = os.path.join(b.tmp, name)
    with open(path, "wb") as f:
        f.write(data[:-2])
    return swaks(b, "--data", "@" + path, *args)


def msg(subject, body, mid, to=ALICE, extra=b""):
    return (b"From: Swaks <swaks@example.net>\r\nTo: " + to.encode() + b"\r\nSubject: " + subject.encode() +
            b"\r\nDate: " + DATE.encode() + b"\r\nMessage-ID: <" + mid.encode() + b"@example.net>\r\n" +
            extra + b"\r\n" + body)


def one_received(b, user, uid, proto, rcpt=None, helo="swaks.test"):
    fields, rest = split_received(message_get(b, user, uid))
    assert len(fields) == 1, fields
    r = ours(fields[0])
    assert r["helo"] == helo and r["ip"] == "127.0.0.1" and r["proto"] == proto, r
    assert r["for"] == rcpt, r
    t = [t for t in smtpd_txns(b) if t["qid"] == r["qid"]]
    assert len(t) == 1 and t[0]["result"] == "stored", t
    return r, rest


def test_swaks_plain(mx):
    need_swaks()
    rc, out = swaks(mx, "--from", "someone@example.net", "--to", ALICE,
                    "--header", "Subject: swaks plain", "--body", "plain text from swaks")
    assert rc == 0, out
    assert re.search(r"<-  250 2\.0\.0 .*queued as [0-9A-F]+", out), out
    r, rest = one_received(mx, ALICE, 1, "ESMTP", ALICE)
    # swaks' default DATA template ends "%BODY%\n" and swaks puts a CRLF before the final
    # dot: the body is followed by two empty lines (as swaks' transcript shows).
    assert b"\r\nSubject: swaks plain\r\n" in rest
    assert rest.endswith(b"\r\n\r\nplain text from swaks\r\n\r\n\r\n"), rest
    assert "queued as %s" % r["qid"] in out
    # Byte for byte: what swaks printed it sent (" -> " lines of DATA) is what we stored.
    sent = []
    in_data = False
    for line in out.splitlines():
        if line.startswith(" -> ") and in_data:
            if line == " -> .":
                break
            sent.append(line[4:])
        elif line.startswith("<-  354"):
            in_data = True
    assert rest == "".join(s + "\r\n" for s in sent).encode(), (rest, sent)


def test_swaks_exact_data_with_dots_and_long_lines(mx):
    need_swaks()
    body = b".\r\n..leading dots\r\n" + b"y" * 998 + b"\r\n. \r\nend\r\n"
    data = msg("swaks data", body, "swaks-data")
    rc, out = swaks_data(mx, data, "--from", "someone@example.net", "--to", "alice+swaks@example.org")
    assert rc == 0, out
    r, rest = one_received(mx, ALICE, 1, "ESMTP", "alice+swaks@example.org")
    assert rest == data


def test_swaks_starttls(mx):
    need_swaks()
    data = msg("swaks tls", "über STARTTLS\r\n".encode(), "swaks-tls")
    rc, out = swaks_data(mx, data, "--from", "someone@example.net", "--to", BOB, "--tls")
    assert rc == 0, out
    assert "<-  220 2.0.0 " in out and "=== TLS started with cipher TLSv1." in out, out
    r, rest = one_received(mx, BOB, 1, "ESMTPS", BOB)
    assert r["tls"] and r["tls"].startswith("TLSv1."), r
    assert rest == data
    assert [t["tls"] for t in smtpd_txns(mx)] == ["yes"]


def test_swaks_pipeline(mx):
    need_swaks()
    data = msg("swaks pipelined", b"pipelined\r\n", "swaks-pipe")
    rc, out = swaks_data(mx, data, "--from", "someone@example.net",
                         "--to", "%s,nobody@example.org,%s,postmaster@example.org" % (BOB, TEAM), "--pipeline")
    # one recipient refused, the others accepted: swaks goes on and succeeds
    assert rc == 0, out
    # swaks sent MAIL, every RCPT and DATA before reading a reply
    cmds = [ln for ln in out.splitlines() if ln.startswith(("~> ", " -> ", "<-  ", "<** "))]
    i_mail = next(i for i, ln in enumerate(cmds) if "MAIL FROM:" in ln)
    assert [ln[4:].split(":")[0].split(" ")[0] for ln in cmds[i_mail:i_mail + 6]] == \
        ["MAIL", "RCPT", "RCPT", "RCPT", "RCPT", "DATA"], cmds[i_mail:i_mail + 8]
    assert "<** 550 5.1.1 " in out, out
    r, rest = one_received(mx, BOB, 1, "ESMTP", None)
    assert rest == data
    _, rest_c = one_received(mx, CAROL, 1, "ESMTP", None)
    _, rest_a = one_received(mx, ALICE, 1, "ESMTP", None)     # postmaster@
    assert rest_c == data == rest_a
    [t] = smtpd_txns(mx)
    assert t["nrcpt"] == "3" and t["result"] == "stored", t["line"]
    assert len(inbox(mx, BOB)) == 1 and len(inbox(mx, CAROL)) == 1 and len(inbox(mx, ALICE)) == 1


def test_swaks_8bit_body(mx):
    need_swaks()
    # swaks (20201014) never sends BODY=8BITMIME: an undeclared 8-bit body, as much mail is.
    body = "Grüße ☃ 日本語\r\n".encode() + bytes(range(0x80, 0x100)) + b"\r\n"
    data = msg("swaks 8bit", body, "swaks-8bit",
               extra=b"MIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\n"
                     b"Content-Transfer-Encoding: 8bit\r\n")
    rc, out = swaks_data(mx, data, "--from", "someone@example.net", "--to", CAROL)
    assert rc == 0, out
    _, rest = one_received(mx, CAROL, 1, "ESMTP", CAROL)
    assert rest == data
    # --body with 8-bit bytes in the argument
    rc, out = swaks(mx, "--from", "someone@example.net", "--to", CAROL, "--body", "Köln \u00e9\u00e8 ☃")
    assert rc == 0, out
    _, rest = one_received(mx, CAROL, 2, "ESMTP", CAROL)
    assert rest.endswith("\r\n\r\nKöln éè ☃\r\n\r\n\r\n".encode()), rest   # see test_swaks_plain


def test_swaks_foreign_domain_refused(mx):
    need_swaks()
    rc, out = swaks(mx, "--from", "someone@example.net", "--to", "someone@gmail.com")
    assert rc != 0, out
    assert rc == 24, (rc, out)    # swaks: every recipient refused
    assert "<** 554 5.7.1 " in out, out
    rc, out = swaks(mx, "--from", "someone@example.net", "--to", "nobody@example.org")
    assert rc == 24 and "<** 550 5.1.1 " in out, (rc, out)
    assert messages_in_db(mx) == 0
    assert all(len(inbox(mx, u)) == 0 for u in USERS)


def swaks_can_smtputf8():
    r = subprocess.run([mta.SWAKS, "--help"], capture_output=True, timeout=WAIT)
    return b"SMTPUTF8" in r.stdout + r.stderr


def test_swaks_utf8_sender(mx):
    need_swaks()
    # Without SMTPUTF8 on MAIL FROM a UTF-8 sender is refused: 553 5.6.7 (RFC 6531 3.4).
    rc, out = swaks(mx, "--from", "jörg@bücher.example", "--to", ALICE)
    assert rc == 23 and "<** 553 5.6.7 " in out, (rc, out)    # 23: MAIL FROM refused
    assert messages_in_db(mx) == 0
    if not swaks_can_smtputf8():
        pytest.skip("the installed swaks (%s) cannot send SMTPUTF8: its MAIL FROM is always "
                    "'MAIL FROM:<addr>' with no parameter; smtplib covers SMTPUTF8 in test_smtpd.py"
                    % subprocess.run([mta.SWAKS, "--version"], capture_output=True).stdout.split(b"\n")[0]
                    .decode())
    pytest.fail("this swaks advertises SMTPUTF8: write the positive case for it")


# ---- smtp-source -----------------------------------------------------------------------------


def smtp_source(b, *args, timeout=WAIT * 4):
    if not os.access(SMTP_SOURCE, os.X_OK):
        pytest.skip("%s is missing: install the Debian package postfix (make deps)" % SMTP_SOURCE)
    r = subprocess.run([SMTP_SOURCE] + list(args) + ["127.0.0.1:%d" % b.smtp_port],
                       stdin=subprocess.DEVNULL, capture_output=True, timeout=timeout)
    return r.returncode, r.stdout.decode(errors="replace"), r.stderr.decode(errors="replace")


def test_smtp_source_50_messages(mx):
    rc, out, err = smtp_source(mx, "-c", "-m", "50", "-s", "4", "-M", "source.example.net",
                               "-f", "loadgen@example.net", "-t", ALICE, "-S", "smtp-source", "-l", "4096")
    assert rc == 0, (out, err)
    assert "50" in out.split(), out     # the running counter (-c) reached 50
    assert len(inbox(mx, ALICE)) == 50
    txns = smtpd_txns(mx)
    assert len(txns) == 50 and all(t["result"] == "stored" for t in txns), [t["line"] for t in txns]
    assert all(t["helo"] == "source.example.net" and t["from"] == "loadgen@example.net" for t in txns)
    uids = sorted(inbox(mx, ALICE))
    assert uids == list(range(1, 51)), uids
    for uid in (1, 25, 50):
        fields, rest = split_received(message_get(mx, ALICE, uid))
        assert len(fields) == 1
        r = ours(fields[0])
        assert r["helo"] == "source.example.net" and r["for"] == ALICE, r
        assert b"\r\nSubject: smtp-source\r\n" in rest, rest[:300]
        assert any(t["qid"] == r["qid"] for t in txns)


def test_smtp_source_preformatted_reused_sessions(mx):
    data = msg("smtp-source file", b"..dots\r\n.\r\n" + b"z" * 998 + b"\r\nlast\r\n", "source-file")
    path = os.path.join(mx.tmp, "source.eml")
    with open(path, "wb") as f:
        f.write(data.replace(b"\r\n", b"\n"))    # smtp-source appends CRLF to each line
    rc, out, err = smtp_source(mx, "-d", "-m", "20", "-s", "2", "-M", "source.example.net",
                               "-f", "loadgen@example.net", "-t", BOB, "-F", path)
    assert rc == 0, (out, err)
    box = inbox(mx, BOB)
    assert len(box) == 20, len(box)
    for uid in box:
        fields, rest = split_received(message_get(mx, BOB, uid))
        r = ours(fields[0])
        # smtp-source speaks HELO (no ESMTP), and after the file it always sends one
        # more CRLF before the final dot: the message gains an empty last line.
        assert r["for"] == BOB and r["proto"] == "SMTP" and r["helo"] == "source.example.net", r
        assert rest == data + b"\r\n", rest[-100:]
    txns = smtpd_txns(mx)
    assert len(txns) == 20 and all(t["result"] == "stored" for t in txns)
