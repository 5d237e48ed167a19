"""
test_imapd_qresync.py — QRESYNC (RFC 7162 section 3.2) in imapd, end to
end: busd, storaged and imapd on a private bus, raw sockets and imaplib on
127.0.0.1.

  * CAPABILITY QRESYNC; ENABLE QRESYNC (CONDSTORE with it); the QRESYNC
    SELECT parameter only after it (BAD before).
  * SELECT/EXAMINE (QRESYNC (uidvalidity modseq [known-uids]
    [seq-match-data])): VANISHED (EARLIER) of the UIDs expunged in another
    session, FETCH (UID FLAGS MODSEQ) of the changed messages; nothing for
    another UIDVALIDITY or an up-to-date MODSEQ.
  * UID FETCH ... (CHANGEDSINCE n VANISHED), also when every message is gone.
  * After ENABLE QRESYNC expunges (ours, another session's, MOVE) come as
    VANISHED, not EXPUNGE, and never during a FETCH by sequence number.
  * [CLOSED] when a SELECT replaces a selected mailbox.
  * A client that reconnects resyncs its cache and ends up equal to the
    mailbox; malformed QRESYNC parameters are BAD.

Run: make && ROOST_BIN=$PWD/build/bin /usr/bin/python3 -m pytest tests/e2e/test_imapd_qresync.py -q
"""

import re

import pytest

from imap import Raw, login
from store import message
from test_imapd import ALICE, imap  # noqa: F401 (imap: the fixture, busd + storaged + imapd)


def raw(b, enable=True):
    """A logged-in raw session, QRESYNC enabled unless told not to."""
    r = Raw(b)
    r.starttls()
    r.login()
    if enable:
        ln, lines = r.cmd("ENABLE QRESYNC")
        assert ln.startswith(b"t OK") and lines == [b"* ENABLED QRESYNC"], (ln, lines)
    return r


def fill(b, n, mailbox="INBOX"):
    c = login(b)
    for i in range(n):
        assert c.append(mailbox, None, None, message(subject="m%d" % i))[0] == "OK"
    c.logout()


def state(r, mailbox="INBOX"):
    """(UIDVALIDITY, HIGHESTMODSEQ) from a plain SELECT."""
    ln, lines = r.cmd("SELECT " + mailbox)
    assert ln.startswith(b"t OK"), ln
    text = b"\n".join(lines)
    return (int(re.search(rb"UIDVALIDITY (\d+)", text).group(1)),
            int(re.search(rb"HIGHESTMODSEQ (\d+)", text).group(1)))


def change(b, expunge=(), seen=(), add=0):
    """Another session: \\Seen on some UIDs, expunges others, appends."""
    c = login(b)
    assert c.select("INBOX")[0] == "OK"
    for u in seen:
        assert c.uid("STORE", str(u), "+FLAGS", "(\\Seen)")[0] == "OK"
    for u in expunge:
        assert c.uid("STORE", str(u), "+FLAGS", "(\\Deleted)")[0] == "OK"
    if expunge:
        assert c.expunge()[0] == "OK"
    for i in range(add):
        assert c.append("INBOX", None, None, message(subject="new%d" % i))[0] == "OK"
    c.logout()


def fetches(lines):
    """{uid: (seq, flags, modseq)} of the untagged FETCH lines."""
    out = {}
    for ln in lines:
        m = re.match(rb"\* (\d+) FETCH \(UID (\d+) FLAGS \(([^)]*)\) MODSEQ \((\d+)\)\)$", ln)
        if m:
            out[int(m.group(2))] = (int(m.group(1)), m.group(3), int(m.group(4)))
    return out


def test_capability_enable_and_the_parameter_needs_it(imap):
    with raw(imap, enable=False) as r:
        ln, lines = r.cmd("CAPABILITY")
        assert b" QRESYNC" in lines[0] and b" CONDSTORE" in lines[0]
        ln, _ = r.cmd("SELECT INBOX (QRESYNC (1 1))")
        assert ln.startswith(b"t BAD") and b"ENABLE QRESYNC" in ln, ln
        ln, lines = r.cmd("ENABLE QRESYNC")
        assert lines == [b"* ENABLED QRESYNC"], lines
        ln, lines = r.cmd("ENABLE QRESYNC CONDSTORE")     # both on already: nothing new
        assert ln.startswith(b"t OK") and lines == [b"* ENABLED"], lines
        ln, lines = r.cmd("SELECT INBOX (QRESYNC (1 1))")
        assert ln.startswith(b"t OK [READ-WRITE]"), ln
        assert not any(b"VANISHED" in x for x in lines)      # another UIDVALIDITY
        ln, _ = r.cmd("SELECT INBOX (CONDSTORE QRESYNC (1 1))")
        assert ln.startswith(b"t OK"), ln


def test_select_qresync_reports_vanished_and_changes(imap):
    fill(imap, 10)
    with raw(imap) as r:
        uv, hms = state(r)
    change(imap, expunge=[2, 5], seen=[3, 9], add=1)
    with raw(imap) as r:
        ln, lines = r.cmd("SELECT INBOX (QRESYNC (%d %d 1:10))" % (uv, hms))
        assert ln.startswith(b"t OK [READ-WRITE]"), ln
        assert b"* 9 EXISTS" in lines
        v = [x for x in lines if x.startswith(b"* VANISHED")]
        assert v == [b"* VANISHED (EARLIER) 2,5"], lines
        f = fetches(lines)   # the new message 11 changed since too
        assert sorted(f) == [3, 9, 11] and f[3][:2] == (2, b"\\Seen") and f[11][:2] == (9, b"")
        assert f[9][:2] == (7, b"\\Seen")
        assert all(m > hms for _, _, m in f.values())
        # VANISHED after the mailbox's state, the FETCHes after VANISHED
        order = [i for i, x in enumerate(lines) if b"HIGHESTMODSEQ" in x or b"VANISHED" in x
                 or b"FETCH" in x]
        assert b"HIGHESTMODSEQ" in lines[order[0]] and b"VANISHED" in lines[order[1]], lines
        # no known-uids: every UID expunged since; known-uids narrow it
        ln, lines = r.cmd("EXAMINE INBOX (QRESYNC (%d %d))" % (uv, hms))
        assert ln.startswith(b"t OK [READ-ONLY]") and lines[0].startswith(b"* OK [CLOSED]"), lines
        assert b"* VANISHED (EARLIER) 2,5" in lines
        ln, lines = r.cmd("SELECT INBOX (QRESYNC (%d %d 1:4,9))" % (uv, hms))
        assert [x for x in lines if b"VANISHED" in x] == [b"* VANISHED (EARLIER) 2"], lines
        assert sorted(fetches(lines)) == [3, 9, 11]         # changes: the whole mailbox
        # seq-match-data: the client says message 4 was UID 6, and it still
        # is, so nothing below 6 can have gone (3.2.5.2): no VANISHED at all
        ln, lines = r.cmd("SELECT INBOX (QRESYNC (%d %d 1:10 (4 6)))" % (uv, hms))
        assert not any(b"VANISHED" in x for x in lines), lines
        ln, lines = r.cmd("SELECT INBOX (QRESYNC (%d %d 1:10 (4 5)))" % (uv, hms))
        assert [x for x in lines if b"VANISHED" in x] == [b"* VANISHED (EARLIER) 2,5"], lines
        ln, lines = r.cmd("SELECT INBOX (QRESYNC (%d %d 1:10 (1:3 1,3,4)))" % (uv, hms))
        assert [x for x in lines if b"VANISHED" in x] == [b"* VANISHED (EARLIER) 5"], lines
        # an up-to-date client hears nothing; another UIDVALIDITY neither
        _, now = state(r)
        for uvs, ms in [(uv, now), (uv + 1, hms)]:
            ln, lines = r.cmd("SELECT INBOX (QRESYNC (%d %d 1:10))" % (uvs, ms))
            assert ln.startswith(b"t OK"), ln
            assert not any(b"VANISHED" in x or b"FETCH" in x for x in lines), lines


def test_vanished_instead_of_expunge(imap):
    fill(imap, 6)
    with raw(imap) as r, raw(imap, enable=False) as other:
        assert state(r)[0] > 0 and state(other)[0] > 0
        # another session's expunge, and a flag change: UID in the FETCH
        ln, _ = other.cmd("UID STORE 2,3 +FLAGS.SILENT (\\Deleted)")
        ln, lines = other.cmd("UID EXPUNGE 2")
        assert lines == [b"* 2 EXPUNGE"], lines              # no QRESYNC there: EXPUNGE
        ln, lines = r.cmd("NOOP")
        assert b"* VANISHED 2" in lines and not any(b"EXPUNGE" in x for x in lines), lines
        f = [x for x in lines if b"FETCH" in x]
        assert f and all(b"UID 3 " in x and b"MODSEQ" in x for x in f), lines
        # not while a FETCH by sequence number runs; with the next command
        ln, lines = other.cmd("UID EXPUNGE 3")
        ln, lines = r.cmd("FETCH 1:* (FLAGS)")
        assert not any(b"VANISHED" in x for x in lines), lines
        assert len(lines) == 4 and not any(b"UID 3 " in x for x in lines), lines   # gone: nothing
        ln, lines = r.cmd("NOOP")
        assert lines == [b"* VANISHED 3"], lines
        # our own EXPUNGE and MOVE
        r.cmd("UID STORE 4 +FLAGS.SILENT (\\Deleted)")
        ln, lines = r.cmd("EXPUNGE")
        assert ln.startswith(b"t OK") and lines == [b"* VANISHED 4"], lines
        ln, lines = r.cmd("UID MOVE 5:6 Archive")
        assert ln.startswith(b"t OK"), ln
        assert [x for x in lines if not x.startswith(b"* OK [COPYUID")] == [b"* VANISHED 5:6"], lines
        ln, lines = r.cmd("SEARCH ALL")
        assert lines == [b"* SEARCH 1"], lines


def test_uid_fetch_changedsince_vanished(imap):
    fill(imap, 8)
    with raw(imap) as r:
        uv, hms = state(r)
        change(imap, expunge=[3, 4, 8], seen=[6])
        ln, lines = r.cmd("UID FETCH 1:* (FLAGS) (CHANGEDSINCE %d VANISHED)" % hms)
        assert ln.startswith(b"t OK"), ln
        # the expunges this session has not been told of yet are not EARLIER:
        # they come as VANISHED with the update after the command
        assert not any(b"EARLIER" in x for x in lines), lines
        assert b"* VANISHED 3:4,8" in lines, lines
        ln, lines = r.cmd("UID FETCH 1:* (FLAGS) (CHANGEDSINCE %d VANISHED)" % hms)
        assert lines[0] == b"* VANISHED (EARLIER) 3:4,8", lines
        assert [x for x in lines[1:]] == [b"* 4 FETCH (UID 6 FLAGS (\\Seen) MODSEQ (%d))"
                                          % fetches_modseq(lines)], lines
        ln, lines = r.cmd("UID FETCH 1:5 (FLAGS) (VANISHED CHANGEDSINCE %d)" % hms)
        assert lines == [b"* VANISHED (EARLIER) 3:4"], lines
        # every message gone: "*" still reaches the expunged ones
        change(imap, expunge=[1, 2, 5, 6, 7])
        r.cmd("NOOP")
        ln, lines = r.cmd("UID FETCH 1:* (FLAGS) (CHANGEDSINCE %d VANISHED)" % hms)
        assert ln.startswith(b"t OK") and lines == [b"* VANISHED (EARLIER) 1:8"], lines
        for bad in ["FETCH 1:* (FLAGS) (CHANGEDSINCE %d VANISHED)" % hms,
                    "UID FETCH 1:* (FLAGS) (VANISHED)",
                    "UID FETCH 1:* (FLAGS) (CHANGEDSINCE 1 VANISHED VANISHED)",
                    "UID FETCH 1:* (FLAGS) (CHANGEDSINCE 0 VANISHED)"]:
            ln, _ = r.cmd(bad)
            assert ln.startswith(b"t BAD"), (bad, ln)
    with raw(imap, enable=False) as r:
        state(r)
        ln, _ = r.cmd("UID FETCH 1:* (FLAGS) (CHANGEDSINCE 1 VANISHED)")
        assert ln.startswith(b"t BAD") and b"QRESYNC" in ln, ln


def fetches_modseq(lines):
    return int(re.search(rb"MODSEQ \((\d+)\)", lines[1]).group(1))


def test_closed_when_select_replaces_a_mailbox(imap):
    with raw(imap, enable=False) as r:
        ln, lines = r.cmd("SELECT INBOX")
        assert not any(b"CLOSED" in x for x in lines), lines
        ln, lines = r.cmd("EXAMINE Archive")
        assert ln.startswith(b"t OK") and lines[0] == b"* OK [CLOSED] Previous mailbox closed", lines
        ln, lines = r.cmd("SELECT Nope")
        assert ln.startswith(b"t NO") and lines[0].startswith(b"* OK [CLOSED]"), lines
        ln, lines = r.cmd("SELECT INBOX")                   # nothing was selected
        assert not any(b"CLOSED" in x for x in lines), lines
        r.cmd("UNSELECT")
        ln, lines = r.cmd("SELECT INBOX")
        assert not any(b"CLOSED" in x for x in lines), lines


@pytest.mark.parametrize("param", [
    "(QRESYNC)", "(QRESYNC ())", "(QRESYNC (0 5))", "(QRESYNC (5 0))", "(QRESYNC (x 5))",
    "(QRESYNC (5))", "(QRESYNC (5 5 1:*))", "(QRESYNC (5 5 1:5 (1:2 1:3)))",
    "(QRESYNC (5 5 1:5 (1:2)))", "(QRESYNC (5 5 (1 1) 1:5))", "(QRESYNC (5 5)",
    "(QRESYNC (5 5) QRESYNC (5 5))", "(QRESYNC (5 99999999999999999999))",
    "(QRESYNC (4294967296 5))", "(QRESYNC 5 5)", "(QRESYNC (5 5 1:5 (1:* 1:5)))",
    "(QRESYNC (5 5 0:3))", "(QRESYNC (5 5 1:5 ))", "(FOO)", "(CONDSTORE CONDSTORE)", "()",
    "QRESYNC (5 5)"])
def test_malformed_qresync_parameters_are_bad(imap, param):
    with raw(imap) as r:
        ln, _ = r.cmd("SELECT INBOX " + param)
        assert ln.startswith(b"t BAD"), (param, ln)
        ln, _ = r.cmd("NOOP")
        assert ln.startswith(b"t OK"), ln


def test_client_resync_after_reconnect(imap):
    """A client keeps a cache (UIDVALIDITY, HIGHESTMODSEQ, UID -> flags),
    goes away while another client changes the mailbox, comes back and
    resyncs with QRESYNC alone: its cache equals the mailbox."""
    fill(imap, 12)
    c = login(imap)
    assert c.enable("QRESYNC")[0] == "OK"
    typ, data = c._simple_command("SELECT", "INBOX", "(QRESYNC (1 1))")
    assert typ == "OK", data
    c.state = "SELECTED"   # imaplib's select() takes no parameters
    uv = int(c.untagged_responses["UIDVALIDITY"][0])
    hms = int(c.untagged_responses["HIGHESTMODSEQ"][0])
    typ, data = c.uid("FETCH", "1:*", "(FLAGS)")
    cache = {}
    for d in data:
        m = re.search(rb"UID (\d+) FLAGS \(([^)]*)\)", d)
        cache[int(m.group(1))] = set(m.group(2).split())
    c.logout()

    change(imap, expunge=[1, 4, 5, 6, 11], seen=[2, 12], add=2)
    other = login(imap, user=ALICE)
    assert other.select("INBOX")[0] == "OK"
    assert other.uid("STORE", "3", "+FLAGS", "(\\Flagged $Work)")[0] == "OK"
    other.logout()

    c = login(imap)
    assert c.enable("QRESYNC")[0] == "OK"
    known = ",".join(str(u) for u in sorted(cache))
    typ, data = c._simple_command("SELECT", "INBOX", "(QRESYNC (%d %d %s))" % (uv, hms, known))
    assert typ == "OK", data
    c.state = "SELECTED"
    for v in c.untagged_responses.pop("VANISHED", []):
        assert v.startswith(b"(EARLIER) ")
        for part in v[10:].split(b","):
            lo, _, hi = part.partition(b":")
            for u in range(int(lo), int(hi or lo) + 1):
                cache.pop(u, None)
    for f in c.untagged_responses.pop("FETCH", []):
        m = re.search(rb"UID (\d+) FLAGS \(([^)]*)\)", f)
        cache[int(m.group(1))] = set(m.group(2).split())
    exists = int(c.untagged_responses["EXISTS"][-1])
    # new messages: above the highest UID the cache knew
    typ, data = c.uid("FETCH", "%d:*" % (max(cache) + 1), "(FLAGS)")
    for d in data:
        m = re.search(rb"UID (\d+) FLAGS \(([^)]*)\)", d or b"")
        if m:
            cache[int(m.group(1))] = set(m.group(2).split())
    typ, data = c.uid("FETCH", "1:*", "(FLAGS)")
    truth = {}
    for d in data:
        m = re.search(rb"UID (\d+) FLAGS \(([^)]*)\)", d)
        truth[int(m.group(1))] = set(m.group(2).split())
    assert cache == truth and len(truth) == exists == 9
    assert truth[2] == {b"\\Seen"} and truth[3] == {b"\\Flagged", b"$Work"}
    c.logout()
