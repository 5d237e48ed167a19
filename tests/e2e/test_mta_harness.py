"""
test_mta_harness.py — the real-MTA harness (mta.py) proves itself: a
throwaway Postfix relays to the Python SMTP sink, and swaks talks to it,
all on 127.0.0.1. smtpd's end-to-end tests (issue 4) use the same pieces
with smtpd in the sink's place.
"""

import random
import re
import sys
import time

import pytest

import mta

N_MESSAGES = 100
DATE = "Wed, 25 Nov 2026 12:00:00 +0000"


@pytest.fixture
def sinks():
    made = []

    def factory(**kw):
        s = mta.Sink(**kw).start()
        made.append(s)
        return s
    yield factory
    for s in made:
        s.stop()


def message(i, body_lines, extra_headers=()):
    """A complete message (From, To, Date, Message-ID...), so that Postfix adds only Received."""
    head = ["From: Sender %d <sender%d@example.org>" % (i, i),
            "To: rcpt%d@example.net" % i,
            "Subject: harness message %d" % i,
            "Date: " + DATE,
            "Message-ID: <harness-%d@example.org>" % i,
            "MIME-Version: 1.0"] + list(extra_headers)
    return ("\r\n".join(head) + "\r\n\r\n").encode() + b"".join(l + b"\r\n" for l in body_lines)


def build_messages():
    """N_MESSAGES distinct messages: 8-bit, 998-octet lines, leading dots, one of 1 MiB,
    some for several recipients. Returns [(msg_id, msg_bytes, sender, rcpts, kind)]."""
    out = []
    for i in range(N_MESSAGES):
        rnd = random.Random(i)
        kind = "plain"
        headers = ["Content-Type: text/plain; charset=us-ascii"]
        lines = [b"message %d of the harness test" % i,
                 b"".join(rnd.choice(b"abcdefghij ").to_bytes(1, "big") for _ in range(70))]
        if i == 50:
            kind = "1mib"
            headers = ["Content-Type: application/octet-stream", "Content-Transfer-Encoding: base64"]
            alpha = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
            line = bytes(rnd.choice(alpha) for _ in range(76 * 64))
            lines = [line[k:k + 76] for k in range(0, len(line), 76)]
            lines = [b"%06d" % k + ln[6:] for k, ln in enumerate(lines * (1024 * 1024 // len(line) + 1))]
        elif i % 4 == 0:
            kind = "8bit"
            headers = ["Content-Type: text/plain; charset=utf-8", "Content-Transfer-Encoding: 8bit"]
            lines += [("Grüße aus Köln, ça va ? 日本語のテキスト № %d €" % i).encode(),
                      b"raw latin-1 bytes: \xe9\xe8\xff and a tab\there"]
        elif i % 4 == 1:
            kind = "long"
            # 998 octets: the longest line RFC 5321 allows, which Postfix passes unchanged.
            lines += [bytes(rnd.choice(b"0123456789") for _ in range(998)),
                      b"x" * 997, b"y" * 500]
        elif i % 4 == 2:
            kind = "dots"
            lines += [b".", b"..", b".leading dot", b". ", b"end"]
        msg = message(i, lines, headers)
        rcpts = ["rcpt%d@example.net" % i]
        if i % 10 == 3:
            rcpts += ["other%d@example.net" % i, "third%d@example.com" % i]
        out.append(("<harness-%d@example.org>" % i, msg, "sender%d@example.org" % i, rcpts, kind))
    assert len(out[50][1]) >= 1024 * 1024
    return out


def msg_id(data):
    m = re.search(rb"(?mi)^Message-ID: (<[^>]*>)\r$", data)
    return m.group(1).decode() if m else None


def test_postfix_relays_100_messages_over_starttls(sinks, postfix):
    sink = sinks(tls=True)
    pf = postfix(sink.port)
    msgs = build_messages()
    t0 = time.monotonic()
    for _, data, sender, rcpts, _ in msgs:
        pf.send(data, sender, rcpts)
    pf.wait_empty(timeout=mta.WAIT * 2)
    got = sink.wait_for(N_MESSAGES)
    elapsed = time.monotonic() - t0
    assert pf.deferred_reasons() == []
    assert len(got) == N_MESSAGES, "%d transactions for %d messages" % (len(got), N_MESSAGES)
    by_id = {}
    for t in got:
        by_id.setdefault(msg_id(t.data), []).append(t)
    for mid, data, sender, rcpts, kind in msgs:
        ts = by_id.get(mid, [])
        assert len(ts) == 1, "%s (%s) arrived %d times" % (mid, kind, len(ts))
        t = ts[0]
        assert t.mail_from == sender and sorted(t.rcpts) == sorted(rcpts), (mid, t.mail_from, t.rcpts)
        assert t.tls.startswith("TLSv1."), "%s came in plain text" % mid
        # Postfix prepends exactly one header, Received; every other byte is ours.
        assert t.data.startswith(b"Received: by mta.test (Postfix, from userid 0)\r\n\tid "), t.data[:200]
        assert mta.strip_received(t.data) == data, "%s (%s) changed in transit" % (mid, kind)
        if kind == "8bit":
            assert "BODY=8BITMIME" in t.mail_params, (mid, t.mail_params)
    # Every session went through STARTTLS before MAIL; Postfix logged each handshake.
    for s in sink.sessions:
        cmds = [line for who, line in s.log if who == "C"]
        if any(c.startswith("MAIL") for c in cmds):
            assert "STARTTLS" in cmds, cmds
            assert cmds.index("STARTTLS") < next(i for i, c in enumerate(cmds) if c.startswith("MAIL")), cmds
    assert len(pf.tls_connections()) >= 1
    assert all("Untrusted TLS connection established to 127.0.0.1[127.0.0.1]:%d" % sink.port in line
               for line in pf.tls_connections())
    sent = [d for d in pf.deliveries() if d["status"] == "sent"]
    assert len(sent) == sum(len(m[3]) for m in msgs)
    assert all(d["relay"] == "127.0.0.1[127.0.0.1]:%d" % sink.port for d in sent)
    sys.stderr.write("\n100 messages through Postfix in %.1f s, %d sink sessions\n" % (
        elapsed, len(sink.sessions)))


def test_postfix_plain_text_smtp_submission_and_line_folding(sinks, postfix):
    sink = sinks(tls=False)
    pf = postfix(sink.port, listen=True)
    a = message(1, [b"submitted with sendmail"])
    b = message(2, [b"submitted over SMTP to Postfix's own listener"])
    # A line over RFC 5321's 998 octets: a real Postfix never sends it as is.
    c = message(3, [b"z" * 1500])
    pf.send(a, "a@example.org", ["rcpt@example.net"])
    pf.send_smtp(b, "b@example.org", ["rcpt@example.net"])
    pf.send(c, "c@example.org", ["rcpt@example.net"])
    pf.wait_empty()
    got = {msg_id(t.data): t for t in sink.wait_for(3)}
    assert len(got) == 3
    assert all(t.tls == "" for t in got.values())
    assert pf.tls_connections() == []
    ta, tb, tc = (got["<harness-%d@example.org>" % i] for i in (1, 2, 3))
    assert mta.strip_received(ta.data) == a
    assert ta.data.startswith(b"Received: by mta.test (Postfix, from userid 0)\r\n\tid ")
    assert mta.strip_received(tb.data) == b
    assert tb.data.startswith(b"Received: from client.test (unknown [127.0.0.1])\r\n"
                              b"\tby mta.test (Postfix) with ESMTP id ")
    # Postfix breaks it after 998 octets with CRLF SPACE (smtp_line_length_limit).
    assert mta.strip_received(tc.data) == c.replace(b"z" * 1500, b"z" * 998 + b"\r\n " + b"z" * 502)
    master = pf.master_pid
    pf.stop()
    assert not mta._alive(master) and mta._group_members(master) == []
    assert pf.popen.poll() is not None


def test_postfix_retries_after_4xx(sinks, postfix):
    deferred_once = set()

    def policy(stage, txn, arg):
        # The first attempt of message 1 gets 451 after DATA, the first RCPT of
        # second@ (message 2) gets 450: both must come again within seconds.
        if stage == "data_end" and msg_id(arg) == "<harness-1@example.org>" and 1 not in deferred_once:
            deferred_once.add(1)
            return "451 4.3.0 harness: try again later"
        if stage == "rcpt" and arg == "second@example.net" and 2 not in deferred_once:
            deferred_once.add(2)
            return "450 4.2.0 harness: mailbox busy"
        return None
    sink = sinks(tls=True, policy=policy)
    pf = postfix(sink.port)
    m1 = message(1, [b"deferred once at the end of DATA"])
    m2 = message(2, [b"one recipient deferred once"])
    t0 = time.monotonic()
    pf.send(m1, "a@example.org", ["first@example.net"])
    pf.send(m2, "b@example.org", ["first@example.net", "second@example.net"])
    pf.wait_empty()
    elapsed = time.monotonic() - t0
    got = sink.received()
    ids = sorted(msg_id(t.data) for t in got)
    # m1 once; m2 twice: first@ at once, second@ on the retry.
    assert ids == ["<harness-1@example.org>", "<harness-2@example.org>", "<harness-2@example.org>"], ids
    assert [t.rcpts for t in got if msg_id(t.data) == "<harness-2@example.org>"] in (
        [["first@example.net"], ["second@example.net"]],)
    refused = [t for t in sink.transactions if not t.accepted]
    assert len(refused) == 1 and refused[0].reply.startswith("451 4.3.0")
    assert all(mta.strip_received(t.data) in (m1, m2) for t in got)
    reasons = pf.deferred_reasons()
    assert len(reasons) == 2, reasons
    assert {r[1] for r in reasons} == {"first@example.net", "second@example.net"}
    assert any("451 4.3.0 harness: try again later" in r[2] for r in reasons), reasons
    assert any("450 4.2.0 harness: mailbox busy" in r[2] for r in reasons), reasons
    assert elapsed < 30, "retries took %.1f s" % elapsed


def test_swaks_plain_and_starttls(sinks):
    if not mta.os.access(mta.SWAKS, mta.os.X_OK):
        pytest.skip("swaks is not installed (make deps)")
    sink = sinks(tls=True)
    common = ["--from", "a@example.org", "--to", "b@example.net", "--header", "Subject: swaks"]
    rc, out = mta.swaks(sink.port, *common, "--body", "plain text")
    assert rc == 0, out
    rc, out_tls = mta.swaks(sink.port, *common, "--body", "über STARTTLS", "--tls")
    assert rc == 0, out_tls
    assert "<-  220 2.0.0 Ready to start TLS" in out_tls and "~> MAIL FROM:<a@example.org>" in out_tls
    t1, t2 = sink.wait_for(2)
    assert (t1.tls, t1.mail_from, t1.rcpts, t1.helo) == ("", "a@example.org", ["b@example.net"], "swaks.test")
    assert t2.tls.startswith("TLSv1.") and t2.rcpts == ["b@example.net"]
    assert b"\r\n\r\nplain text\r\n" in t1.data and "über STARTTLS".encode() in t2.data
    # swaks' exit code tells a failure: STARTTLS where none is offered.
    sink.offer_tls = False
    rc, out = mta.swaks(sink.port, *common, "--tls")
    assert rc != 0, out
    assert len(sink.received()) == 2
