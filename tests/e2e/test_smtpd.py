"""
test_smtpd.py — smtpd inbound (issue 4) end to end: busd, storaged and smtpd
on a private bus, real clients over real sockets on 127.0.0.1.

  * Python smtplib: plain, STARTTLS, SMTPUTF8 addresses, an 8-bit body; each
    message read back with `roostctl message get` and compared byte for byte
    after our Received field.
  * Raw-socket protocol tests: pipelining, BDAT, dot-stuffing, bare LF/CR
    (SMTP smuggling), line and size limits, 101 recipients, order, unknown
    commands, TLS garbage, a client gone mid-DATA, hop count, storaged gone,
    unknown users, foreign domains, relay tricks, early talkers, idle
    timeout, the per-IP limit.

Run: make && ROOST_BIN=$PWD/build/bin /usr/bin/python3 -m pytest tests/e2e/test_smtpd.py -q
"""

import smtplib
import socket
import ssl
import time

import pytest

import bus as buslib
from bus import WAIT
from smtp import Raw, message_get, start_smtpd, strip_received
from store import db_query, message, status, with_users
from test_accounts import ok

ALICE = "alice@example.org"
BOB = "bob@example.org"


@pytest.fixture
def mx(bus):
    """busd + storaged (example.org: alice, bob) + smtpd."""
    with_users(bus, ALICE, BOB)
    start_smtpd(bus)
    return bus


def count(b, address=ALICE):
    return status(b.c, address)["messages"]


def smtp_client(b):
    return smtplib.SMTP("127.0.0.1", b.smtp_port, local_hostname="client.example.net",
                        timeout=WAIT)


def check_stored(b, address, uid, data, rcpt=None, proto=b"ESMTP"):
    got = message_get(b, address, uid)
    rec, rest = strip_received(got)
    assert rest == data
    assert b"from client.example.net ([127.0.0.1])" in rec, rec
    assert b"by mx.example.org (Roost) with " + proto + b" id " in rec, rec
    if rcpt:
        assert b"for <" + rcpt.encode() + b">" in rec, rec
    return rec


# ---- real clients: smtplib ----------------------------------------------------------------


def test_smtplib_plain(mx):
    data = message(subject="plain")
    with smtp_client(mx) as s:
        code, text = s.ehlo()
        assert code == 250
        for ext in ("pipelining", "size", "8bitmime", "smtputf8", "enhancedstatuscodes",
                    "chunking", "starttls"):
            assert s.has_extn(ext), ext
        refused = s.sendmail("bob@example.net", [ALICE], data)
        assert refused == {}
    check_stored(mx, ALICE, 1, data, rcpt=ALICE)


def test_smtplib_starttls_two_recipients(mx):
    data = message(subject="tls")
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    with smtp_client(mx) as s:
        s.starttls(context=ctx)
        s.ehlo()
        assert not s.has_extn("starttls")
        assert s.sendmail("bob@example.net", [ALICE, BOB], data) == {}
    rec = check_stored(mx, ALICE, 1, data, proto=b"ESMTPS")
    assert b"for <" not in rec and b"TLSv1." in rec
    check_stored(mx, BOB, 1, data, proto=b"ESMTPS")


def test_smtplib_smtputf8_and_8bit_body(mx):
    body = "Grüße aus Köln — ☃\r\n".encode("utf-8") + bytes(range(0x80, 0x100)) + b"\r\n"
    data = message(subject="utf8", body=body)
    with smtp_client(mx) as s:
        s.ehlo()
        assert s.sendmail("jörg@bücher.example", [ALICE], data,
                          mail_options=["SMTPUTF8", "BODY=8BITMIME"]) == {}
    check_stored(mx, ALICE, 1, data, proto=b"UTF8SMTP")


def test_smtplib_unknown_and_foreign_recipients(mx):
    with smtp_client(mx) as s:
        s.ehlo()
        with pytest.raises(smtplib.SMTPRecipientsRefused) as e:
            s.sendmail("bob@example.net", ["nobody@example.org"], message())
        assert e.value.recipients["nobody@example.org"][0] == 550
        assert b"5.1.1" in e.value.recipients["nobody@example.org"][1]
        s.rset()
        with pytest.raises(smtplib.SMTPRecipientsRefused) as e:
            s.sendmail("bob@example.net", ["someone@gmail.com"], message())
        assert e.value.recipients["someone@gmail.com"][0] == 554
        assert b"5.7.1" in e.value.recipients["someone@gmail.com"][1]
    assert count(mx) == 0
