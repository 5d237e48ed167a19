"""
test_imapd_view.py — imapd's shared mailbox view (docs/IMAPD.md, "The
mailbox view"): one picture of a mailbox per imapd process, loaded once and
kept by storaged's events, from which SELECT, FETCH of flags and the
catch-up before each tagged reply are answered. These tests check that
what it answers is what storaged has, at the moments RFC 3501 allows:

  * two sessions on one mailbox of one imapd: one stores, expunges and
    appends; the other sees the FETCH FLAGS, EXPUNGE and EXISTS at the right
    moments, and UID FETCH 1:* (FLAGS) is storaged's truth;
  * a change made through a second imapd process (a replica) or straight
    through storaged (as smtpd delivers) reaches a session on the first;
  * a SELECT after such changes (a fresh session, the view already loaded
    by another) sees them, and a mailbox deleted and made again is not
    confused with the old one.

Every session here is a real client on a real socket (Raw: exact lines).

Run: make && ROOST_BIN=$PWD/build/bin /usr/bin/python3 -m pytest tests/e2e/test_imapd_view.py -q
"""

import re
import time

import bus as buslib
from bus import WAIT, new_id
from imap import Raw, start_imapd
from store import message, store_ok
from test_imapd import ALICE, imap  # noqa: F401 (imap: the fixture, busd + storaged + imapd)


def session(b, mailbox="INBOX"):
    r = Raw(b)
    r.starttls()
    r.login()
    if mailbox is not None:
        ln, lines = r.cmd("SELECT %s" % mailbox, tag="sel")
        assert ln.startswith(b"sel OK"), (ln, lines)
        r.selected = lines
    return r


def exists(lines):
    for ln in lines:
        m = re.match(rb"\* (\d+) EXISTS$", ln)
        if m:
            return int(m.group(1))
    return None


def append(r, n, mailbox="INBOX", flags=""):
    uids = []
    for i in range(n):
        data = message(subject="v%d" % i)
        r.send(b"ap APPEND %s (%s) {%d+}\r\n" % (mailbox.encode(), flags.encode(), len(data)) +
               data + b"\r\n")
        ln = r.until(b"ap ")
        assert ln.startswith(b"ap OK"), ln
        uids.append(int(re.search(rb"APPENDUID \d+ (\d+)", ln).group(1)))
    return uids


def uid_flags(r):
    """{uid: flags text} from UID FETCH 1:* (FLAGS), plus the other lines."""
    ln, lines = r.cmd("UID FETCH 1:* (FLAGS)", tag="uf")
    assert ln.startswith(b"uf OK"), ln
    got, other = {}, []
    for x in lines:
        m = re.match(rb"\* \d+ FETCH \(UID (\d+) FLAGS \(([^)]*)\)\)$", x)
        if m:
            got[int(m.group(1))] = m.group(2).decode()
        else:
            other.append(x)
    return got, other


def storaged_flags(b, who=ALICE, mailbox="INBOX"):
    """{uid: flags text} as storaged has it (every page)."""
    out, frm = {}, 1
    while frm:
        rep, _ = b.c.call("storaged", {"type": "storaged.message.list", "address": who,
                                       "mailbox": mailbox, "uids": "%d:*" % frm, "limit": 1000})
        assert rep["status"] == "ok", rep
        out.update({m["uid"]: " ".join(m["flags"]) for m in rep["messages"]})
        frm = rep.get("next")
    return out


def storaged_call(b, mtype, **fields):
    env = dict({"type": "storaged.message." + mtype, "idem": new_id("t")}, **fields)
    rep, _ = b.c.call("storaged", env)
    assert rep["status"] == "ok", rep
    return rep


def eventually(pred, what):
    buslib.wait_until(pred, timeout=WAIT, interval=0.05, what=what)


def test_two_sessions_on_one_mailbox(imap):
    a, b = session(imap), session(imap)
    try:
        uids = append(b, 5)
        ln, lines = a.cmd("NOOP")
        assert b"* 5 EXISTS" in lines, lines
        # a STORE through b: a's UID FETCH 1:* (FLAGS) has it at once (the
        # same process: the view took it from storaged's reply)
        ln, _ = b.cmd("STORE 2 +FLAGS (\\Flagged $Work)")
        assert ln.startswith(b"t OK")
        got, _ = uid_flags(a)
        assert got[uids[1]] == "\\Flagged $Work", got
        assert got == storaged_flags(imap)
        # a's own STORE reads back at once, and b hears of it as FETCH FLAGS
        ln, lines = a.cmd("STORE 1 +FLAGS.SILENT (\\Answered)")
        assert ln.startswith(b"t OK") and lines == [], lines
        got, _ = uid_flags(a)
        assert got[uids[0]] == "\\Answered"
        ln, lines = b.cmd("NOOP")
        assert b"* 1 FETCH (FLAGS (\\Answered))" in lines, lines
        # an EXPUNGE through b: not during a's sequence-number FETCH (RFC
        # 3501 7.4.1), the gone message not shown; then with a UID command
        b.cmd("STORE 3 +FLAGS.SILENT (\\Deleted)")
        ln, lines = b.cmd("EXPUNGE")
        assert lines == [b"* 3 EXPUNGE"], lines
        time.sleep(0.2)   # the event, for good measure (the view has it already)
        ln, lines = a.cmd("FETCH 1:* (UID FLAGS)")
        assert ln.startswith(b"t OK")
        assert not any(b"EXPUNGE" in x for x in lines), lines
        assert [x for x in lines if b"UID %d " % uids[2] in x] == [], lines
        assert len([x for x in lines if b" FETCH (" in x]) == 4, lines
        got, other = uid_flags(a)
        assert b"* 3 EXPUNGE" in other, other
        assert sorted(got) == [uids[0], uids[1], uids[3], uids[4]]
        ln, lines = a.cmd("FETCH 1:* (UID)")
        assert [x for x in lines if b"FETCH" in x] == [
            b"* %d FETCH (UID %d)" % (i + 1, u)
            for i, u in enumerate([uids[0], uids[1], uids[3], uids[4]])], lines
        # an APPEND through b: a's next command says EXISTS, then FETCHes it
        new = append(b, 1, flags="\\Seen")[0]
        ln, lines = a.cmd("NOOP")
        assert b"* 5 EXISTS" in lines, lines
        got, _ = uid_flags(a)
        assert got[new] == "\\Seen" and got == storaged_flags(imap)
        # sizes, dates and MODSEQ from the view agree with storaged's list
        ln, lines = a.cmd("UID FETCH %d (RFC822.SIZE INTERNALDATE MODSEQ)" % new)
        rep, _ = imap.c.call("storaged", {"type": "storaged.message.list", "address": ALICE,
                                          "mailbox": "INBOX", "uids": str(new)})
        m = rep["messages"][0]
        assert any(b"RFC822.SIZE %d " % m["size"] in x and b"MODSEQ (%d)" % m["modseq"] in x
                   for x in lines), (lines, m)
        t = time.strftime("%d-%b-%Y %H:%M:%S +0000", time.gmtime(m["internaldate"]))
        assert any(t.encode() in x for x in lines), (lines, t)
    finally:
        a.close()
        b.close()


def test_sessions_share_the_view_uids_until_they_differ(imap):
    """SELECT hands every session the view's UIDs without a copy; a session
    that is told of a change, or makes one, gets its own map, and the
    others keep what they were told until they are told."""
    w = session(imap)
    uids = append(w, 6, flags="\\Seen")
    w.cmd("STORE 4 -FLAGS.SILENT (\\Seen)")
    w.close()
    a, b = session(imap), session(imap)
    try:
        for r in (a, b):
            assert exists(r.selected) == 6, r.selected
            assert any(b"[UNSEEN 4]" in x for x in r.selected), r.selected
        b.cmd("STORE 2 +FLAGS.SILENT (\\Deleted)")
        ln, lines = b.cmd("EXPUNGE")
        assert lines == [b"* 2 EXPUNGE"], lines
        ln, lines = b.cmd("FETCH 1:* (UID)")
        assert [x for x in lines if b"FETCH" in x] == [
            b"* %d FETCH (UID %d)" % (i + 1, u) for i, u in enumerate(uids[:1] + uids[2:])], lines
        # a has not been told: its sequence numbers are still the old ones
        ln, lines = a.cmd("FETCH 3 (UID)")
        assert b"* 3 FETCH (UID %d)" % uids[2] in lines, lines
        ln, lines = a.cmd("NOOP")
        assert b"* 2 EXPUNGE" in lines, lines
        ln, lines = a.cmd("FETCH 3 (UID)")
        assert b"* 3 FETCH (UID %d)" % uids[3] in lines, lines
        # a new SELECT sees the view as it is now, UNSEEN moved with it
        c = session(imap)
        assert exists(c.selected) == 5 and any(b"[UNSEEN 3]" in x for x in c.selected), c.selected
        new = append(c, 1)[0]
        for r in (a, b, c):
            ln, lines = r.cmd("NOOP")
            assert r is c or b"* 6 EXISTS" in lines, lines
            ln, lines = r.cmd("UID FETCH %d (UID)" % new)
            assert b"* 6 FETCH (UID %d)" % new in lines, lines
        c.close()
        d = session(imap)
        assert exists(d.selected) == 6 and any(b"[UNSEEN 3]" in x for x in d.selected), d.selected
        d.close()
    finally:
        a.close()
        b.close()


def test_changes_through_a_replica_and_storaged(imap):
    first = imap.imap_port
    a = session(imap)          # on the first imapd: its view is loaded now
    append(a, 3)
    a.cmd("NOOP")
    start_imapd(imap)          # a second imapd: imap.imap_port is its port
    c = session(imap)
    imap.imap_port = first
    try:
        # flags through the second replica reach a (the event, then the
        # view's catch-up): UID FETCH 1:* (FLAGS) shows them
        ln, _ = c.cmd("STORE 1:2 +FLAGS (\\Flagged)")
        assert ln.startswith(b"t OK")
        eventually(lambda: uid_flags(a)[0] == storaged_flags(imap), "flags reached the first imapd")
        # an expunge and an append through the second replica
        c.cmd("STORE 2 +FLAGS.SILENT (\\Deleted)")
        c.cmd("EXPUNGE")
        new = append(c, 1)[0]
        seen = []

        def told():
            ln, lines = a.cmd("NOOP")
            seen.extend(lines)
            # the order depends on when each event came: an EXISTS counting
            # the new message (4 before the expunge is told, 3 after)
            return b"* 2 EXPUNGE" in seen and (b"* 3 EXISTS" in seen or b"* 4 EXISTS" in seen)
        eventually(told, "EXPUNGE and EXISTS reached the first imapd")
        got, _ = uid_flags(a)
        assert sorted(got) == [1, 3, new] and got == storaged_flags(imap)
        # a delivery straight through storaged (smtpd's way), flags set
        # through storaged: a fresh SELECT on the first imapd sees both
        rep = store_ok(imap.c, [{"address": ALICE, "mailbox": "INBOX"}], message(subject="smtp"))
        storaged_call(imap, "flags", address=ALICE, mailbox="INBOX", uids="1", op="add",
                      flags=["$Done"])
        want = storaged_flags(imap)

        def selected():
            d = session(imap)
            try:
                return exists(d.selected) == len(want) and uid_flags(d)[0] == want
            finally:
                d.close()
        eventually(selected, "a fresh SELECT sees the delivery")
        assert rep["status"] == "ok"
    finally:
        a.close()
        c.close()


def test_select_after_changes_and_a_mailbox_made_again(imap):
    keep = session(imap, mailbox=None)
    ln, _ = keep.cmd("CREATE Box")
    assert ln.startswith(b"t OK")
    keep.cmd("SELECT Box")         # holds Box's view for the whole test
    try:
        append(keep, 4, mailbox="Box")
        # changes made outside this imapd (storaged directly, as another
        # replica would): a new session's SELECT agrees with storaged
        storaged_call(imap, "flags", address=ALICE, mailbox="Box", uids="2", op="add",
                      flags=["\\Seen"])
        storaged_call(imap, "flags", address=ALICE, mailbox="Box", uids="3", op="add",
                      flags=["\\Deleted"])
        storaged_call(imap, "expunge", address=ALICE, mailbox="Box", uids="3")

        def agrees():
            d = session(imap, mailbox="Box")
            try:
                got, _ = uid_flags(d)
                return exists(d.selected) == 3 and got == storaged_flags(imap, mailbox="Box")
            finally:
                d.close()
        eventually(agrees, "SELECT after outside changes agrees with storaged")
        # UNSEEN names the first message without \Seen
        d = session(imap, mailbox="Box")
        assert any(x.startswith(b"* OK [UNSEEN 1]") for x in d.selected), d.selected
        d.close()
        # Box deleted and made again through another session while keep
        # still has the old one selected: a new SELECT shows the new, empty
        # one
        other = session(imap, mailbox=None)
        ln, _ = other.cmd("DELETE Box")
        assert ln.startswith(b"t OK"), ln
        ln, _ = other.cmd("CREATE Box")
        assert ln.startswith(b"t OK"), ln
        other.close()

        def fresh():
            d = session(imap, mailbox="Box")
            try:
                return exists(d.selected) == 0 and uid_flags(d)[0] == {}
            finally:
                d.close()
        eventually(fresh, "SELECT of the mailbox made again shows it empty")
    finally:
        keep.close()


def test_many_flags_and_a_large_mailbox_from_the_view(imap):
    """UID FETCH 1:* (FLAGS) of more than one output bound's worth, with
    keyword combinations, is storaged's answer line for line."""
    a = session(imap)
    try:
        n = 1200
        data = message(subject="bulk")
        for i in range(n):
            fl = ["", "\\Seen", "$A", "\\Flagged $B $A"][i % 4]
            a.send(b"ap APPEND INBOX (%s) {%d+}\r\n" % (fl.encode(), len(data)) + data + b"\r\n")
        for i in range(n):
            assert a.until(b"ap ").startswith(b"ap OK")
        got, _ = uid_flags(a)
        want = storaged_flags(imap)
        assert len(got) == n and got == want
    finally:
        a.close()


def test_idle_hears_flags_changed_outside(imap):
    """An IDLE session hears of flags changed outside imapd (the event, the
    view's catch-up, then the idler is woken from the view)."""
    a = session(imap)
    try:
        append(a, 2)
        a.cmd("NOOP")
        a.send("i IDLE\r\n")
        assert a.line().startswith(b"+ ")
        storaged_call(imap, "flags", address=ALICE, mailbox="INBOX", uids="2", op="add",
                      flags=["\\Flagged", "$Later"])
        a.s.settimeout(WAIT)
        ln = a.line()
        assert ln == b"* 2 FETCH (FLAGS (\\Flagged $Later))", ln
        a.send("DONE\r\n")
        assert a.until(b"i ").startswith(b"i OK")
    finally:
        a.close()


def test_more_keyword_sets_than_a_view_holds(imap):
    """A mailbox whose messages carry more distinct keyword sets than a view
    interns (256) is still answered right: the view gives up and its
    sessions ask storaged, as before the view existed."""
    a = session(imap)
    try:
        data = message(subject="kw")
        n = 300
        for i in range(n):
            a.send(b"ap APPEND INBOX ($k%03d) {%d+}\r\n" % (i, len(data)) + data + b"\r\n")
        for i in range(n):
            assert a.until(b"ap ").startswith(b"ap OK")
        a.cmd("NOOP")
        b = session(imap)     # a fresh SELECT: the view (loaded again) gives up
        try:
            assert exists(b.selected) == n
            got, _ = uid_flags(b)
            assert got == storaged_flags(imap) and got[1] == "$k000" and len(got) == n
            ln, _ = b.cmd("STORE 1 +FLAGS (\\Seen)")
            assert ln.startswith(b"t OK")
            got, _ = uid_flags(a)
            assert got[1] == "\\Seen $k000"
        finally:
            b.close()
    finally:
        a.close()
