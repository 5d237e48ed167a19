"""
test_imapd_mbsync.py — imapd against a real synchronising client: mbsync
(Debian isync) keeps a local Maildir and a 1,000-message INBOX in step, both
ways, with flags and deletions:

  1. 1,000 messages written into the local Maildir (some flagged, some seen)
     are uploaded (APPEND, LITERAL+, pipelined by mbsync);
  2. changes on the server (new mail through imaplib, flags set and removed,
     a message expunged) come down;
  3. changes in the Maildir (flags, a deletion, a new message) go up;
  4. a last run changes nothing, and both sides hold the same messages with
     the same flags.

Skipped when mbsync is not installed (make deps installs isync).
"""

import imaplib
import os
import re
import shutil
import subprocess

import pytest

import mta
from bus import WAIT
from imap import login, start_imapd
from store import message, with_users
from test_accounts import PASSWORD

ALICE = "alice@example.org"
N = 1000

pytestmark = pytest.mark.skipif(shutil.which("mbsync") is None, reason="mbsync (isync) not installed")


@pytest.fixture
def imap(bus):
    with_users(bus, ALICE)
    # mbsync matches the certificate's DNS name, not an IP address
    tdir = os.path.join(bus.tmp, "tls")
    os.makedirs(tdir, exist_ok=True)
    mta.make_cert(tdir, "localhost", "cert", key_file="key.pem", rsa=True)
    start_imapd(bus)
    return bus


def mbsync(b, mail):
    conf = os.path.join(b.tmp, "mbsyncrc")
    with open(conf, "w") as f:
        f.write("IMAPAccount roost\nHost localhost\nPort %d\nUser %s\nPass \"%s\"\n"
                "SSLType STARTTLS\nCertificateFile %s\nPipelineDepth 50\n\n"
                "IMAPStore remote\nAccount roost\n\n"
                "MaildirStore local\nPath %s/\nInbox %s/INBOX\nSubFolders Verbatim\n\n"
                "Channel sync\nFar :remote:\nNear :local:\nPatterns INBOX\nCreate Both\n"
                "Sync All\nExpunge Both\nSyncState *\n"
                % (b.imap_port, ALICE, PASSWORD, os.path.join(b.tmp, "tls", "cert.pem"), mail, mail))
    r = subprocess.run(["mbsync", "-c", conf, "-a"], capture_output=True, timeout=WAIT * 5)
    assert r.returncode == 0, (r.stdout.decode()[-2000:], r.stderr.decode()[-2000:])
    return r.stdout.decode()


def maildir(mail):
    """{Subject: flags} of the local INBOX (Maildir flags: F, S, R, T...)."""
    out = {}
    for sub in ("cur", "new"):
        d = os.path.join(mail, "INBOX", sub)
        for name in os.listdir(d):
            with open(os.path.join(d, name), "rb") as f:
                subj = re.search(rb"^Subject: (.*)\r?$", f.read(), re.M).group(1).decode().strip()
            flags = name.split(":2,")[1] if ":2," in name else ""
            assert subj not in out, subj
            out[subj] = flags
    return out


def server(c):
    """{Subject: set of flags} of the server INBOX."""
    c.select("INBOX")
    typ, data = c.fetch("1:*", "(FLAGS BODY.PEEK[HEADER.FIELDS (SUBJECT)])")
    assert typ == "OK"
    out = {}
    for item in data:
        if not isinstance(item, tuple):
            continue
        subj = item[1].decode().split(":", 1)[1].strip()
        flags = set(re.search(rb"FLAGS \(([^)]*)\)", item[0]).group(1).decode().split())
        out[subj] = flags
    return out


MAP = {"F": "\\Flagged", "S": "\\Seen", "R": "\\Answered", "D": "\\Draft"}


def same(local, remote):
    assert set(local) == set(remote), (set(local) ^ set(remote))
    for subj, fl in local.items():
        want = {MAP[ch] for ch in fl if ch in MAP}
        assert want == remote[subj] - {"\\Deleted"}, (subj, fl, remote[subj])


def put_local(mail, i, subj, flags=""):
    d = os.path.join(mail, "INBOX", "cur" if flags else "new")
    name = "%d.local%d.host%s" % (1700000000 + i, i, (":2," + flags) if flags else "")
    with open(os.path.join(d, name), "wb") as f:
        f.write(message(subject=subj))


def test_mbsync_1000_messages_both_ways(imap):
    mail = os.path.join(imap.tmp, "mail")
    for sub in ("cur", "new", "tmp"):
        os.makedirs(os.path.join(mail, "INBOX", sub))
    for i in range(N):
        put_local(mail, i, "local %04d" % i, "FS" if i % 10 == 0 else "S" if i % 3 == 0 else "")
    mbsync(imap, mail)                                   # 1. up
    c = login(imap)
    remote = server(c)
    assert len(remote) == N
    same(maildir(mail), remote)

    c.append("INBOX", None, None, message(subject="from the server"))   # 2. down
    c.store("2:4", "+FLAGS", "(\\Answered)")
    c.store("1", "-FLAGS", "(\\Flagged \\Seen)")
    c.store("5", "+FLAGS", "(\\Deleted)")
    c.expunge()
    gone = "local 0004"
    mbsync(imap, mail)
    local = maildir(mail)
    assert "from the server" in local and gone not in local and len(local) == N
    same(local, server(c))

    inbox = os.path.join(mail, "INBOX", "cur")           # 3. up again
    names = sorted(os.listdir(inbox))
    victim, flag_me = names[10], names[20]
    os.unlink(os.path.join(inbox, victim))
    base, _, fl = flag_me.partition(":2,")
    os.rename(os.path.join(inbox, flag_me), os.path.join(inbox, base + ":2," + "".join(sorted(set(fl + "F")))))
    put_local(mail, N + 1, "late local")
    mbsync(imap, mail)
    local = maildir(mail)
    assert len(local) == N and "late local" in local
    same(local, server(c))

    mbsync(imap, mail)                                   # 4. nothing left to do
    same(maildir(mail), server(c))
    c.logout()
