"""
test_imapd_fetchmail.py — imapd against fetchmail in batch mode: messages
delivered through smtpd are fetched over IMAP with STARTTLS (the
certificate checked against the test CA's copy), handed to an MDA that
appends them to a file, and left on the server marked \\Seen (keep); a
second run fetches nothing new.

Skipped when fetchmail is not installed (make deps installs it).
"""

import os
import shutil
import smtplib
import stat
import subprocess

import pytest

import mta
from bus import WAIT
from imap import login, start_imapd
from smtp import start_smtpd
from store import message, with_users
from test_accounts import PASSWORD

ALICE = "alice@example.org"

pytestmark = pytest.mark.skipif(shutil.which("fetchmail") is None, reason="fetchmail not installed")


def fetchmail(b, out):
    rc = os.path.join(b.tmp, "fetchmailrc")
    with open(rc, "w") as f:
        f.write('poll localhost protocol IMAP port %d:\n'
                '  user "%s" password "%s" is "tester" here\n'
                '  sslproto "TLS1.2+" sslcertck sslcertfile "%s"\n'
                '  keep mda "/bin/sh -c \'cat >> %s\'"\n'
                % (b.imap_port, ALICE, PASSWORD, os.path.join(b.tmp, "tls", "cert.pem"), out))
    os.chmod(rc, stat.S_IRUSR | stat.S_IWUSR)
    env = dict(os.environ, HOME=b.tmp, FETCHMAILHOME=b.tmp)
    r = subprocess.run(["fetchmail", "--nodetach", "--fetchmailrc", rc, "-v"], env=env,
                       capture_output=True, timeout=WAIT * 2)
    # 0: mail fetched; 1: no new mail
    return r.returncode, r.stdout.decode(errors="replace") + r.stderr.decode(errors="replace")


def test_fetchmail_batch(bus):
    with_users(bus, ALICE)
    tdir = os.path.join(bus.tmp, "tls")
    os.makedirs(tdir, exist_ok=True)
    mta.make_cert(tdir, "localhost", "cert", key_file="key.pem", rsa=True)
    start_imapd(bus)
    start_smtpd(bus)
    subjects = ["fetch one", "fetch two", "fetch three"]
    with smtplib.SMTP("127.0.0.1", bus.smtp_port, local_hostname="client.example.net",
                      timeout=WAIT) as s:
        for subj in subjects:
            assert s.sendmail("bob@example.net", [ALICE], message(subject=subj)) == {}
    out = os.path.join(bus.tmp, "fetched.mbox")
    rc, log = fetchmail(bus, out)
    assert rc == 0, log
    with open(out, "rb") as f:
        got = f.read()
    for subj in subjects:
        assert b"Subject: " + subj.encode() in got, (subj, log[-2000:])
    c = login(bus)
    c.select("INBOX")
    assert c.search(None, "SEEN") == ("OK", [b"1 2 3"])     # kept, marked read
    c.logout()
    rc, log = fetchmail(bus, out)
    assert rc == 1, log                                      # nothing new
