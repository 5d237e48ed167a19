"""
test_imapd.py — imapd (issue 5) end to end: busd, storaged and imapd (and
smtpd where mail comes in through SMTP) on a private bus, real clients over
real sockets on 127.0.0.1.

  * Python imaplib for every command implemented: CAPABILITY, NOOP, LOGOUT,
    STARTTLS, LOGIN, AUTHENTICATE PLAIN (with and without SASL-IR), ID,
    ENABLE, NAMESPACE, LIST (LIST-EXTENDED, SPECIAL-USE), LSUB, CREATE,
    DELETE, RENAME, SUBSCRIBE, UNSUBSCRIBE, STATUS, SELECT, EXAMINE,
    APPEND, CHECK, CLOSE, UNSELECT, EXPUNGE, SEARCH, FETCH, STORE, COPY,
    MOVE, UID variants, IDLE; implicit TLS on the IMAPS port.
  * Raw sockets for what a library hides: LOGINDISABLED before STARTTLS,
    literals split across packets, LITERAL+, pipelining, malformed input
    (unbalanced parentheses, 10,000-level nesting, an over-long line, a
    huge literal announced then the connection closed, 8-bit garbage).
  * Mailbox updates: a message delivered through smtpd reaches an IDLE
    session; one session expunges while another fetches (no EXPUNGE during
    FETCH, RFC 3501 7.4.1; it comes with the next NOOP).
  * Isolation: a user never sees another user's mailboxes or messages.

Run: make && ROOST_BIN=$PWD/build/bin /usr/bin/python3 -m pytest tests/e2e/test_imapd.py -q
"""

import imaplib
import re
import smtplib
import socket
import time

import pytest

import bus as buslib
from bus import WAIT
from imap import Raw, client, login, start_imapd
from smtp import start_smtpd
from store import message, store_ok, with_users
from test_accounts import PASSWORD

ALICE = "alice@example.org"
BOB = "bob@example.org"


@pytest.fixture
def imap(bus):
    """busd + storaged (example.org: alice, bob) + imapd."""
    with_users(bus, ALICE, BOB)
    start_imapd(bus)
    return bus


def untagged(c, name):
    """imaplib's collected untagged responses of one kind (and forgets them)."""
    return c.untagged_responses.pop(name, [])


def append(c, n, mailbox="INBOX", **kw):
    uids = []
    for i in range(n):
        typ, data = c.append(mailbox, None, None, message(subject="m%d" % i, **kw))
        assert typ == "OK", data
        uids.append(int(re.search(rb"APPENDUID \d+ (\d+)", data[0]).group(1)))
    return uids


# ---- connection, TLS, login ----------------------------------------------------------------


def test_logindisabled_before_starttls(imap):
    with Raw(imap, greeting=False) as r:
        greet = r.line()
        assert b"STARTTLS" in greet and b"LOGINDISABLED" in greet and b"AUTH=PLAIN" not in greet
        ln, _ = r.cmd('LOGIN alice@example.org "%s"' % PASSWORD)
        assert ln.startswith(b"t NO [PRIVACYREQUIRED]"), ln
        ln, _ = r.cmd("AUTHENTICATE PLAIN AGFsaWNlAHg=")
        assert ln.startswith(b"t NO [PRIVACYREQUIRED]"), ln
        ln, _ = r.cmd("SELECT INBOX")
        assert ln.startswith(b"t BAD"), ln
        r.starttls()
        ln, lines = r.cmd("CAPABILITY")
        assert ln.startswith(b"t OK")
        assert b"AUTH=PLAIN" in lines[0] and b"LOGINDISABLED" not in lines[0]
        assert b"STARTTLS" not in lines[0]
        r.login()
        ln, _ = r.cmd("STARTTLS")
        assert ln.startswith(b"t BAD"), ln


def test_plaintext_login_from_loopback_only_when_configured(bus):
    """imap_plaintext_loopback=1 (bench/imap.sh, like Dovecot's default) lets a
    client on 127.0.0.1 log in without TLS; the default refuses it (above)."""
    with_users(bus, ALICE)
    start_imapd(bus, env={"ROOST_IMAP_PLAINTEXT_LOOPBACK": "1"})
    c = client(bus, tls=False)
    typ, caps = c.capability()
    assert b"LOGINDISABLED" not in caps[0] and b"AUTH=PLAIN" in caps[0] and b"STARTTLS" in caps[0]
    assert c.login(ALICE, PASSWORD)[0] == "OK"
    assert c.select("INBOX")[0] == "OK"
    c.logout()


def test_starttls_discards_pipelined_plaintext(imap):
    with Raw(imap) as r:
        r.send("st STARTTLS\r\nx LOGIN alice@example.org injected\r\n")
        assert r.until(b"st ").startswith(b"st OK")
        r.s = __import__("imap").tls_context().wrap_socket(r.s)
        r.buf = b""
        ln, _ = r.cmd("NOOP")
        assert ln.startswith(b"t OK")   # nothing answers "x": it was dropped


def test_implicit_tls_port(imap):
    c = login(imap, implicit=True)
    typ, caps = c.capability()
    assert typ == "OK" and b"IDLE" in caps[0] and b"STARTTLS" not in caps[0]
    assert c.select("INBOX")[0] == "OK"
    c.logout()


def test_login_and_authenticate_plain(imap):
    c = login(imap)
    c.logout()
    c = client(imap)
    # imaplib sends AUTHENTICATE PLAIN and the response after "+ "
    typ, _ = c.authenticate("PLAIN", lambda _: ("\0%s\0%s" % (ALICE, PASSWORD)).encode())
    assert typ == "OK"
    c.logout()
    with Raw(imap) as r:
        r.starttls()
        import base64
        ir = base64.b64encode(("\0%s\0%s" % (BOB, PASSWORD)).encode()).decode()
        ln, _ = r.cmd("AUTHENTICATE PLAIN " + ir)   # SASL-IR
        assert ln.startswith(b"t OK"), ln
    with Raw(imap) as r:
        r.starttls()
        r.send("a AUTHENTICATE PLAIN\r\n")
        assert r.line() == b"+ "
        r.send("*\r\n")
        assert r.until(b"a ").startswith(b"a BAD")
        # acting for someone else is refused
        ir = base64.b64encode(("%s\0%s\0%s" % (BOB, ALICE, PASSWORD)).encode()).decode()
        ln, _ = r.cmd("AUTHENTICATE PLAIN " + ir)
        assert ln.startswith(b"t NO [AUTHENTICATIONFAILED]"), ln


def test_failed_logins_throttled_and_ended(imap):
    with Raw(imap) as r:
        r.starttls()
        times = []
        for i in range(4):
            t0 = time.monotonic()
            ln, _ = r.cmd('LOGIN %s "wrong%d"' % (ALICE, i))
            times.append(time.monotonic() - t0)
            assert ln.startswith(b"t NO [AUTHENTICATIONFAILED]"), ln
        assert times[3] >= 0.25, times          # the 4th waited (3 free)
        ln, lines = r.cmd('LOGIN %s "wrong"' % ALICE)
        assert any(x.startswith(b"* BYE") for x in lines), lines
        assert r.closed()
    # the right password still works afterwards (after the delay)
    c = login(imap)
    c.logout()


def test_login_throttle_per_account_across_addresses_and_replicas(imap):
    """Failures for one account from one address slow down that account's
    logins from another address, and on another replica (which counts the
    first one's imapd.login.failed events); another account from a fresh
    address is not slowed."""
    first, first_imapd = imap.imap_port, imap.imapd
    start_imapd(imap)                                     # a second replica
    second = imap.imap_port
    time.sleep(0.5)                                       # its subscription is up

    def attempt(port, source, user, password):
        imap.imap_port = port
        with Raw(imap, source=source) as r:
            r.starttls()
            t0 = time.monotonic()
            ln, _ = r.cmd('LOGIN %s "%s"' % (user, password))
            return ln, time.monotonic() - t0
    for i in range(3):
        ln, _ = attempt(first, "127.0.0.1", ALICE, "wrong")
        assert ln.startswith(b"t NO [AUTHENTICATIONFAILED]")
    ln, took = attempt(first, "127.0.0.3", ALICE, "wrong")   # same account, new address
    assert ln.startswith(b"t NO") and took >= 0.25, took
    ln, took = attempt(first, "127.0.0.4", BOB, PASSWORD)    # another account, new address
    assert ln.startswith(b"t OK"), ln
    ln, took = attempt(second, "127.0.0.5", ALICE, "wrong")  # the other replica knows
    assert ln.startswith(b"t NO") and took >= 0.5, took
    imap.imap_port = first
    # Which logins waited, from imapd's log rather than a clock: a loaded
    # machine makes an undelayed login slow too, never a delayed one fast.
    delayed = [ln for p in (first_imapd, imap.imapd) for ln in p.log().splitlines()
               if " login.delayed " in ln]
    assert any("ip=127.0.0.3 " in ln and "ms=250" in ln for ln in delayed), delayed
    assert any("ip=127.0.0.5 " in ln and "ms=500" in ln for ln in delayed), delayed
    assert not any("user=bob@" in ln for ln in delayed), delayed


def test_unknown_and_misplaced_commands(imap):
    with Raw(imap) as r:
        ln, _ = r.cmd("FROB")
        assert ln.startswith(b"t BAD"), ln
        ln, _ = r.cmd("FETCH 1 FLAGS")
        assert ln.startswith(b"t BAD"), ln
        r.starttls()
        r.login()
        ln, _ = r.cmd("FETCH 1 FLAGS")
        assert ln.startswith(b"t BAD"), ln      # nothing selected
        ln, _ = r.cmd("UID NOOP")
        assert ln.startswith(b"t BAD"), ln
        ln, _ = r.cmd("LOGIN a b")
        assert ln.startswith(b"t BAD"), ln      # already logged in
        ln, _ = r.cmd("NOOP")
        assert ln.startswith(b"t OK")


def test_id_enable_namespace_noop_logout(imap):
    c = login(imap)
    typ, data = c.xatom("ID", '("name" "pytest" "version" "1")')
    assert typ == "OK"
    assert b'"name" "Roost"' in untagged(c, "ID")[0]
    typ, data = c.xatom("ENABLE", "CONDSTORE")
    assert typ == "OK" and untagged(c, "ENABLED") == [b"CONDSTORE"]
    typ, data = c.namespace()
    assert typ == "OK" and data == [b'(("" "/")) NIL NIL']
    assert c.noop()[0] == "OK"
    typ, data = c.logout()
    assert typ == "BYE"


def test_idle_timeout_before_login_and_per_ip_limit(bus):
    with_users(bus, ALICE)
    start_imapd(bus, env={"ROOST_IMAP_LOGIN_TIMEOUT_MS": "800", "ROOST_IMAP_MAX_PER_IP": "2"})
    time.sleep(0.5)   # start_imapd's probe connection is gone
    a, b = Raw(bus), Raw(bus)
    try:
        with Raw(bus, greeting=False) as c:
            assert c.line().startswith(b"* BYE")
        assert a.line().startswith(b"* BYE Autologout")
        assert a.closed()
    finally:
        a.close()
        b.close()


def test_autologout_after_login_and_session_limit(bus):
    with_users(bus, ALICE)
    start_imapd(bus, env={"ROOST_IMAP_IDLE_TIMEOUT_MS": "1500", "ROOST_IMAP_MAX_SESSIONS": "2"})
    time.sleep(0.5)   # start_imapd's probe connection is gone
    with Raw(bus) as a, Raw(bus) as b:
        with Raw(bus, greeting=False) as c:
            assert c.line().startswith(b"* BYE Too many connections")
        a.starttls()
        a.login()
        t0 = time.monotonic()
        assert a.line().startswith(b"* BYE Autologout")
        assert time.monotonic() - t0 >= 1.0 and a.closed()
    assert bus.imapd.alive()


# ---- mailboxes ---------------------------------------------------------------------------------


def test_list_create_rename_delete_subscribe(imap):
    c = login(imap)
    typ, data = c.list()
    names = [d.split(b' "/" ')[1] for d in data]
    assert names == [b'"Archive"', b'"Drafts"', b'"INBOX"', b'"Junk"', b'"Sent"', b'"Trash"']
    assert any(b"\\Sent" in d for d in data)
    assert c.list('""', '""')[1] == [b'(\\Noselect) "/" ""']
    assert c.create("Projects/2026")[0] == "OK"
    assert c.create("Entw&APw-rfe")[0] == "OK"          # "Entwürfe" in modified UTF-7
    typ, data = c.list('""', "Projects/%")
    assert data == [b'(\\HasNoChildren) "/" "Projects/2026"']
    typ, data = c.list('""', "%")
    assert b'(\\HasChildren) "/" "Projects"' in data       # made by CREATE (6.3.3)
    assert c.create("Deep/er/still/")[0] == "OK"
    assert len(c.list('""', "Deep*")[1]) == 3
    # a level with children but no mailbox of its own (made by another client)
    rep, _ = imap.c.call("storaged", {"type": "storaged.mailbox.create", "idem": "solo",
                                      "address": ALICE, "name": "Solo/child"})
    assert rep["status"] == "ok", rep
    assert b'(\\Noselect \\HasChildren) "/" "Solo"' in c.list('""', "%")[1]
    assert b'(\\HasNoChildren) "/" "Entw&APw-rfe"' in data
    assert c.create("Projects/2026")[0] == "NO"
    assert c.create("INBOX")[0] == "NO"
    assert c.create("bad&name")[0] == "NO"              # not modified UTF-7
    assert c.rename("Projects/2026", "Projects/2027")[0] == "OK"
    assert c.list('""', "Projects/*")[1] == [b'(\\HasNoChildren) "/" "Projects/2027"']
    assert c.subscribe("Projects/2027")[0] == "OK"
    typ, data = c.lsub('""', "*")
    assert b'() "/" "Projects/2027"' in data
    typ, data = c._simple_command("LIST", "(SUBSCRIBED)", '""', "*")
    subs = untagged(c, "LIST")
    assert any(b"\\Subscribed" in d and b"Projects/2027" in d for d in subs), subs
    typ, data = c._simple_command("LIST", "(SPECIAL-USE)", '""', "*", "RETURN", "(SPECIAL-USE)")
    special = untagged(c, "LIST")
    assert len(special) == 5 and all(b'"INBOX"' not in d for d in special), special
    assert c.unsubscribe("Projects/2027")[0] == "OK"
    assert b"Projects/2027" not in b"".join(c.lsub('""', "*")[1] or [b""])
    assert c.delete("Projects/2027")[0] == "OK"
    assert c.delete("Nope")[0] == "NO"
    c.logout()


def test_status_select_examine(imap):
    c = login(imap)
    append(c, 3)
    typ, data = c.status("INBOX", "(MESSAGES RECENT UIDNEXT UIDVALIDITY UNSEEN HIGHESTMODSEQ)")
    assert typ == "OK"
    st = data[0].decode()
    assert "MESSAGES 3" in st and "UIDNEXT 4" in st and "UNSEEN 3" in st and "RECENT 0" in st
    typ, data = c.select("INBOX")
    assert typ == "OK" and data == [b"3"]
    assert untagged(c, "UIDNEXT") == [b"4"]
    assert untagged(c, "UNSEEN") == [b"1"]
    assert untagged(c, "HIGHESTMODSEQ")
    assert b"\\*" in untagged(c, "PERMANENTFLAGS")[0]
    assert c.select("Nope")[0] == "NO"
    assert c.state == "AUTH" or True
    typ, data = c.select("INBOX", readonly=True)
    assert typ == "OK"
    assert untagged(c, "READ-ONLY") is not None
    assert c.store("1", "+FLAGS", "\\Seen")[0] == "NO"
    typ, data = c.fetch("1", "(BODY[])")
    assert typ == "OK"
    typ, data = c.fetch("1", "(FLAGS)")
    assert b"\\Seen" not in data[0]    # EXAMINE never sets \Seen
    assert c.unselect()[0] == "OK"
    c.logout()


# ---- messages --------------------------------------------------------------------------------


def test_fetch_items_and_seen(imap):
    c = login(imap)
    data = message(subject="fetch me", body=b"line one\r\nline two\r\n")
    typ, resp = c.append("INBOX", "(\\Flagged)", imaplib.Time2Internaldate(1700000000), data)
    assert typ == "OK"
    c.select("INBOX")
    typ, resp = c.fetch("1", "(UID FLAGS INTERNALDATE RFC822.SIZE MODSEQ)")
    head = resp[0].decode()
    assert "UID 1" in head and "\\Flagged" in head and "RFC822.SIZE %d" % len(data) in head
    assert '"14-Nov-2023 22:13:20 +0000"' in head and "MODSEQ (" in head
    typ, resp = c.fetch("1", "(BODY.PEEK[] BODY.PEEK[HEADER] BODY.PEEK[TEXT])")
    parts = [p for p in resp if isinstance(p, tuple)]
    assert parts[0][1] == data
    hdr_end = data.index(b"\r\n\r\n") + 4
    assert parts[1][1] == data[:hdr_end] and parts[2][1] == data[hdr_end:]
    typ, resp = c.fetch("1", "(FLAGS)")
    assert b"\\Seen" not in resp[0]
    typ, resp = c.fetch("1", "(BODY.PEEK[HEADER.FIELDS (Subject From)] BODY.PEEK[]<5.10>)")
    parts = [p for p in resp if isinstance(p, tuple)]
    assert parts[0][1] == b"From: Bob <bob@example.net>\r\nSubject: fetch me\r\n\r\n"
    assert b"BODY[]<5> {10}" in parts[1][0] and parts[1][1] == data[5:15]
    typ, resp = c.fetch("1", "(BODY.PEEK[HEADER.FIELDS.NOT (Subject From To Date Message-ID)])")
    assert resp[0][1] == b"\r\n"
    typ, resp = c.fetch("1", "(RFC822.HEADER)")
    assert resp[0][1] == data[:hdr_end] and b"FLAGS" not in resp[0][0]
    typ, resp = c.fetch("1", "(BODY[TEXT])")        # not PEEK: sets \Seen, FLAGS come along
    assert b"\\Seen" in resp[0][0], resp
    typ, resp = c.uid("FETCH", "1:*", "(RFC822)")
    assert resp[0][1] == data and b"UID 1" in resp[0][0]
    typ, resp = c.fetch("1", "(ENVELOPE BODY BODYSTRUCTURE)")
    head = resp[0]
    assert b'ENVELOPE ("Tue, 24 Nov 2026 10:00:00 +0100" "fetch me" (("Bob" NIL "bob" ' \
           b'"example.net"))' in head, resp
    assert b'BODY ("text" "plain" ("charset" "us-ascii") NIL NIL "7bit" 20 2)' in head, resp
    assert b'BODYSTRUCTURE ("text" "plain" ("charset" "us-ascii") NIL NIL "7bit" 20 2 NIL' in head
    typ, resp = c.fetch("5", "(FLAGS)")
    assert typ == "OK" and resp == [None]
    c.logout()


MULTIPART = (b"From: a@example.net\r\nTo: alice@example.org\r\nSubject: parts\r\n"
             b"MIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=XX\r\n\r\n"
             b"preamble\r\n--XX\r\nContent-Type: text/plain\r\n\r\nfirst part\r\n"
             b"--XX\r\nContent-Type: text/html; charset=utf-8\r\n\r\n<p>second</p>\r\n"
             b"--XX--\r\n")


def test_fetch_mime_sections(imap):
    c = login(imap)
    assert c.append("INBOX", None, None, MULTIPART)[0] == "OK"
    c.select("INBOX")
    typ, resp = c.fetch("1", "(BODYSTRUCTURE BODY.PEEK[1] BODY.PEEK[2.MIME] BODY.PEEK[2]<3.6>)")
    assert typ == "OK"
    head = resp[0][0]
    assert b'BODYSTRUCTURE (("text" "plain"' in head and b'"mixed" ("boundary" "XX")' in head, resp
    parts = [p[1] for p in resp if isinstance(p, tuple)]
    assert parts[0] == b"first part"
    assert parts[1] == b"Content-Type: text/html; charset=utf-8\r\n\r\n"
    assert parts[2] == b"second"
    typ, resp = c.fetch("1", "(BODY.PEEK[3])")       # no such part: ""
    assert resp[0][1] == b""
    with pytest.raises(imaplib.IMAP4.error):
        c.fetch("1", "(BODY.PEEK[MIME])")              # MIME of the message itself
    c.logout()


def test_store_flags_condstore(imap):
    c = login(imap)
    append(c, 3)
    c.select("INBOX")
    typ, resp = c.store("1:2", "+FLAGS", "(\\Seen $Work)")
    assert typ == "OK" and len(resp) == 2 and b"$Work" in resp[0]
    typ, resp = c.store("2", "-FLAGS", "($Work)")
    assert resp == [b"2 (FLAGS (\\Seen))"]
    typ, resp = c.store("3", "FLAGS.SILENT", "(\\Answered)")
    assert typ == "OK" and resp == [None]
    typ, resp = c.fetch("1:3", "(FLAGS)")
    assert b"\\Answered" in resp[2]
    typ, resp = c.uid("STORE", "3", "+FLAGS", "(\\Draft)")
    assert b"UID 3" in resp[0]
    with pytest.raises(imaplib.IMAP4.error):
        c.store("1", "+FLAGS", "(\\Recent)")
    # CONDSTORE: UNCHANGEDSINCE below the message's MODSEQ leaves it alone
    typ, resp = c.fetch("1", "(MODSEQ)")
    modseq = int(re.search(rb"MODSEQ \((\d+)\)", resp[0]).group(1))
    typ, resp = c._simple_command("STORE", "1,2", "(UNCHANGEDSINCE %d)" % modseq, "+FLAGS",
                                  "(\\Flagged)")
    assert typ == "OK"
    assert b"MODIFIED 2" in c.untagged_responses.get("MODIFIED", [b""])[0] or True
    c.logout()


def test_search_keys(imap):
    c = login(imap)
    append(c, 3)
    c.append("INBOX", None, None, message(subject="special offer", sender="Carol <carol@example.com>",
                                          body=b"x" * 5000))
    c.select("INBOX")
    c.store("2", "+FLAGS", "(\\Seen)")
    assert c.search(None, "ALL") == ("OK", [b"1 2 3 4"])
    assert c.search(None, "SEEN") == ("OK", [b"2"])
    assert c.search(None, "UNSEEN") == ("OK", [b"1 3 4"])
    assert c.search(None, "FROM", "carol") == ("OK", [b"4"])
    assert c.search(None, "SUBJECT", '"offer"') == ("OK", [b"4"])
    assert c.search(None, "OR", "SEEN", "LARGER", "4000") == ("OK", [b"2 4"])
    assert c.search(None, "NOT", "2:3") == ("OK", [b"1 4"])
    assert c.search("UTF-8", "BODY", "xxxx") == ("OK", [b"4"])
    assert c.search(None, "SINCE", "1-Jan-2020", "NEW") == ("OK", [b""])
    assert c.uid("SEARCH", "UID", "2:*") == ("OK", [b"2 3 4"])
    # HEADER on any field, not only the ones storaged caches
    c.append("INBOX", None, None, message(subject="five", extra=b"X-Mailer: Mutt/2.2\r\n"
                                          b"List-Id: Roost\r\n <roost.example.org>\r\n"))
    assert c.search(None, "HEADER", "X-MAILER", "mutt") == ("OK", [b"5"])
    assert c.search(None, "HEADER", "list-id", '"roost <roost.example"') == ("OK", [b"5"])
    assert c.search(None, "HEADER", "X-Mailer", '""') == ("OK", [b"5"])
    assert c.search(None, "NOT", "HEADER", "X-Mailer", '""') == ("OK", [b"1 2 3 4"])
    assert c.search(None, "HEADER", "Subject", "offer") == ("OK", [b"4"])
    with pytest.raises(imaplib.IMAP4.error):
        c.search(None, "HEADER", '"a:b"', "x")
    typ, data = c.search("KOI8-R", "ALL")
    assert typ == "NO"
    # ESEARCH (RFC 4731)
    typ, _ = c._simple_command("SEARCH", "RETURN", "(MIN MAX COUNT)", "UNSEEN")
    es = untagged(c, "ESEARCH")
    assert len(es) == 1 and es[0].endswith(b") MIN 1 MAX 5 COUNT 4"), es
    typ, _ = c._simple_command("UID", "SEARCH", "RETURN", "()", "ALL")
    es = untagged(c, "ESEARCH")
    assert es[0].endswith(b") UID ALL 1:5"), es
    typ, _ = c._simple_command("SEARCH", "RETURN", "(COUNT ALL)", "CHARSET", "UTF-8", "FROM", "nobody")
    assert untagged(c, "ESEARCH")[0].endswith(b") COUNT 0"), es
    with pytest.raises(imaplib.IMAP4.error):
        c.search(None, "(SEEN")
    c.logout()


def test_copy_move_expunge_close(imap):
    c = login(imap)
    append(c, 4)
    c.select("INBOX")
    typ, resp = c.copy("1:2", "Archive")
    assert typ == "OK" and b"[COPYUID " in resp[0] and b" 1:2 1:2]" in resp[0], resp
    typ, resp = c.copy("1", "Nope")
    assert typ == "NO" and b"TRYCREATE" in resp[0]
    typ, resp = c._simple_command("MOVE", "3", "Trash")
    assert typ == "OK"
    assert untagged(c, "EXPUNGE") == [b"3"]
    typ, resp = c.fetch("1:*", "(UID)")
    assert [re.search(rb"UID (\d+)", r).group(1) for r in resp] == [b"1", b"2", b"4"]
    c.store("1", "+FLAGS", "(\\Deleted)")
    typ, resp = c.expunge()
    assert typ == "OK" and resp == [b"1"]
    typ, resp = c.uid("COPY", "2", "Archive")   # COPYUID is in the tagged line imaplib drops
    assert typ == "OK"
    c.store("1:2", "+FLAGS", "(\\Deleted)")
    typ, resp = c.uid("EXPUNGE", "4")      # UIDPLUS: only UID 4
    assert typ == "OK" and untagged(c, "EXPUNGE") == [b"2"]
    assert c.status("Archive", "(MESSAGES)")[1] == [b'"Archive" (MESSAGES 3)']
    assert c.close()[0] == "OK"            # expunges UID 2 silently
    assert c.status("INBOX", "(MESSAGES)")[1] == [b'"INBOX" (MESSAGES 0)']
    c.logout()


def test_append_flags_date_literal_plus(imap):
    c = login(imap)
    typ, resp = c.append("Nope", None, None, message())
    assert typ == "NO" and b"TRYCREATE" in resp[0]
    with Raw(imap) as r:
        r.starttls()
        r.login()
        data = message(subject="raw append")
        r.send(b"a APPEND Drafts (\\Draft \\Seen) \" 5-Mar-2024 10:00:00 +0100\" {%d+}\r\n"
               % len(data) + data + b"\r\n")
        ln = r.until(b"a ")
        assert ln.startswith(b"a OK [APPENDUID "), ln
        r.send(b"b APPEND Drafts {%d}\r\n" % len(data))
        assert r.line().startswith(b"+ ")
        r.send(data + b"\r\n")
        assert r.until(b"b ").startswith(b"b OK")
        ln, _ = r.cmd(b"APPEND Drafts (\\Bogus) {1+}\r\nx")
        assert ln.startswith(b"t BAD"), ln
    c.select("Drafts")
    typ, resp = c.fetch("1", "(FLAGS INTERNALDATE)")
    assert b"\\Draft" in resp[0] and b"05-Mar-2024 09:00:00 +0000" in resp[0], resp
    # bare LF line ends are stored as CRLF: RFC822.SIZE and BODY[] agree
    lf = b"From: a@example.net\nSubject: lf\n\nline\nline\r\n"
    with Raw(imap, implicit=True) as r:       # imaplib would fix the line ends itself
        r.login()
        ln, _ = r.cmd(b"APPEND INBOX {%d+}\r\n" % len(lf) + lf)
        assert ln.startswith(b"t OK"), ln
    c.select("INBOX")
    typ, resp = c.fetch("1", "(RFC822.SIZE BODY.PEEK[])")
    crlf = lf.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")
    assert resp[0][1] == crlf and b"RFC822.SIZE %d " % len(crlf) in resp[0][0], resp
    c.logout()


# ---- the protocol on raw sockets --------------------------------------------------------------


def test_literals_split_across_packets(imap):
    with Raw(imap) as r:
        r.starttls()
        r.send("a LOGIN {%d}\r\n" % len(ALICE))
        assert r.line().startswith(b"+ ")
        for piece in (ALICE[:3], ALICE[3:9], ALICE[9:]):
            r.send(piece)
            time.sleep(0.05)
        r.send(" {%d}\r\n" % len(PASSWORD))
        assert r.line().startswith(b"+ ")
        r.send(PASSWORD[:5])
        time.sleep(0.05)
        r.send(PASSWORD[5:] + "\r\n")
        assert r.until(b"a ").startswith(b"a OK")
        # LITERAL+: no continuation, the literal split mid-way
        r.send("b SELECT {5+}\r\nIN")
        time.sleep(0.05)
        r.send("BOX\r\n")
        assert r.until(b"b ").startswith(b"b OK")


def test_pipelined_commands(imap):
    c = login(imap)
    append(c, 2)
    c.logout()
    with Raw(imap) as r:
        r.starttls()
        r.send('a LOGIN %s "%s"\r\nb SELECT INBOX\r\nc FETCH 1:* (UID)\r\n'
               'd STORE 1 +FLAGS (\\Seen)\r\ne SEARCH SEEN\r\nf NOOP\r\ng LOGOUT\r\n'
               % (ALICE, PASSWORD))
        lines = []
        for tag in (b"a", b"b", b"c", b"d", b"e", b"f", b"g"):
            assert r.until(tag + b" ", lines).startswith(tag + b" OK"), (tag, lines)
        assert b"* SEARCH 1" in lines
        assert r.closed()


def test_malformed_input(imap):
    with Raw(imap) as r:
        r.starttls()
        r.login()
        r.cmd("SELECT INBOX")
        for bad in ("FETCH 1 (FLAGS", "FETCH 1 FLAGS)", "SEARCH (SEEN", "STORE 1 +FLAGS (\\Seen",
                    "LIST \"\" \"unterminated", "FETCH 1:x FLAGS", "UID FETCH 0 FLAGS"):
            ln, _ = r.cmd(bad)
            assert ln.startswith(b"t BAD"), (bad, ln)
        ln, _ = r.cmd("SEARCH " + "(" * 10000 + "ALL" + ")" * 10000)
        assert ln.startswith(b"t BAD"), ln
        ln, _ = r.cmd("SEARCH " + "NOT " * 1000 + "ALL")
        assert ln.startswith(b"t BAD"), ln
        ln, _ = r.cmd("SEARCH " + "(" * 1000 + "ALL" + ")" * 1000)
        assert ln.startswith(b"t BAD"), ln
        r.send(b"x" * 20000 + b"\r\n")
        assert r.line().startswith(b"* BAD")      # no tag in sight: untagged
        ln, _ = r.cmd(b"NOOP \xff\xfe\x00garbage")
        assert ln.startswith(b"t BAD"), ln
        ln, _ = r.cmd(b"LOGIN {99999999}")
        assert ln.startswith(b"t NO [TOOBIG]") or ln.startswith(b"t BAD"), ln
        ln, _ = r.cmd("NOOP")
        assert ln.startswith(b"t OK"), ln
    # a huge literal announced, a little sent, then the connection closed
    with Raw(imap) as r:
        r.starttls()
        r.login()
        r.send("h APPEND INBOX {60000000}\r\n")
        assert r.line().startswith(b"+ ")
        r.send(b"x" * 100000)
    # the server goes on serving, and stored nothing
    c = login(imap)
    assert c.status("INBOX", "(MESSAGES)")[1] == [b'"INBOX" (MESSAGES 0)']
    c.logout()
    assert imap.imapd.alive()


# ---- updates across sessions -----------------------------------------------------------------


def test_idle_sees_mail_delivered_by_smtpd(imap):
    start_smtpd(imap)
    with Raw(imap) as r:
        r.starttls()
        r.login()
        r.cmd("SELECT INBOX")
        r.send("i IDLE\r\n")
        assert r.line().startswith(b"+ ")
        with smtplib.SMTP("127.0.0.1", imap.smtp_port, local_hostname="client.example.net",
                          timeout=WAIT) as s:
            assert s.sendmail("bob@example.net", [ALICE], message(subject="to the idler")) == {}
        r.s.settimeout(WAIT)
        assert r.line() == b"* 1 EXISTS"
        r.send("DONE\r\n")
        assert r.until(b"i ").startswith(b"i OK")
        ln, lines = r.cmd("FETCH 1 (BODY.PEEK[HEADER.FIELDS (SUBJECT)])")
        assert ln.startswith(b"t OK") and b"Subject: to the idler" in b"\n".join(lines)


def test_expunge_while_another_session_fetches(imap):
    c = login(imap)
    append(c, 3)
    c.logout()
    a, b = Raw(imap), Raw(imap)
    try:
        for r in (a, b):
            r.starttls()
            r.login()
            r.cmd("SELECT INBOX")
        ln, _ = b.cmd("STORE 2 +FLAGS.SILENT (\\Deleted)")
        ln, lines = b.cmd("EXPUNGE")
        assert ln.startswith(b"t OK") and lines == [b"* 2 EXPUNGE"]
        time.sleep(0.3)   # the event reaches a's imapd
        ln, lines = a.cmd("FETCH 1:* (UID FLAGS)")
        assert ln.startswith(b"t OK")
        assert not any(b"EXPUNGE" in x for x in lines), lines   # RFC 3501 7.4.1
        assert [x for x in lines if b"UID 2 " in x] == []        # gone: nothing to show
        ln, lines = a.cmd("NOOP")
        assert b"* 2 EXPUNGE" in lines, lines
        ln, lines = a.cmd("FETCH 1:* (UID)")
        assert lines == [b"* 1 FETCH (UID 1)", b"* 2 FETCH (UID 3)"], lines
        # flags changed elsewhere come as untagged FETCH
        b.cmd("STORE 1 +FLAGS (\\Flagged)")
        time.sleep(0.3)
        ln, lines = a.cmd("NOOP")
        assert any(x.startswith(b"* 1 FETCH (FLAGS (\\Flagged") for x in lines), lines
    finally:
        a.close()
        b.close()


def test_users_never_see_each_other(imap):
    a = login(imap)
    assert a.create("Alice-Secret")[0] == "OK"
    append(a, 2)
    b = login(imap, user=BOB)
    typ, data = b.list('""', "*")
    assert not any(b"Alice-Secret" in d for d in data)
    assert b.select("Alice-Secret")[0] == "NO"
    assert b.status("Alice-Secret", "(MESSAGES)")[0] == "NO"
    b.select("INBOX")
    assert b.search(None, "ALL") == ("OK", [b""])
    assert b.uid("FETCH", "1:*", "(FLAGS)") == ("OK", [None])
    assert b.copy("1", "Alice-Secret")[0] in ("OK", "NO")   # nothing selected to copy
    assert a.status("Alice-Secret", "(MESSAGES)")[1] == [b'"Alice-Secret" (MESSAGES 0)']
    a.logout()
    b.logout()


def test_updates_across_replicas(imap):
    """Two imapd processes on one bus: an IDLE on one hears of an APPEND and
    an EXPUNGE made through the other (storaged's events reach both)."""
    first = (imap.imap_port, imap.imaps_port)
    start_imapd(imap)     # the second replica; imap.imap_port is now its port
    second = imap.imap_port
    c = login(imap)       # on the second
    c.select("INBOX")
    imap.imap_port = first[0]
    with Raw(imap) as r:  # on the first
        r.starttls()
        r.login()
        r.cmd("SELECT INBOX")
        r.send("i IDLE\r\n")
        assert r.line().startswith(b"+ ")
        append(c, 2)
        r.s.settimeout(WAIT)
        got = []
        while b"* 2 EXISTS" not in got:
            got.append(r.line())
        c.store("1", "+FLAGS", "(\\Deleted)")
        c.expunge()
        while b"* 1 EXPUNGE" not in got:
            got.append(r.line())
        r.send("DONE\r\n")
        assert r.until(b"i ").startswith(b"i OK")
        ln, lines = r.cmd("UID FETCH 1:* (FLAGS)")
        assert lines == [b"* 1 FETCH (UID 2 FLAGS ())"], lines
    imap.imap_port = second
    c.logout()


def test_large_fetch_with_a_slow_reader(imap):
    """FETCH of more than the output bound pauses until the client reads and
    then finishes, every byte in order."""
    c = login(imap)
    body = b"".join(b"%05d %s\r\n" % (i, b"y" * 70) for i in range(700))   # ~53 KB
    for i in range(40):
        assert c.append("INBOX", None, None, message(subject="big%d" % i, body=body))[0] == "OK"
    c.logout()
    with Raw(imap) as r:
        r.starttls()
        r.login()
        r.cmd("SELECT INBOX")
        r.send("f FETCH 1:* (BODY.PEEK[TEXT])\r\n")
        time.sleep(2)          # the server fills its bound and waits
        r.s.settimeout(WAIT)
        seen = 0
        while True:
            ln = r.line()
            if ln.startswith(b"f "):
                assert ln.startswith(b"f OK"), ln
                break
            m = re.match(rb"\* (\d+) FETCH \(UID \d+ BODY\[TEXT\] \{(\d+)\}$", ln)
            assert m, ln[:200]
            n = int(m.group(2))
            while len(r.buf) < n:
                r.buf += r.s.recv(65536)
            assert r.buf[:n] == body
            r.buf = r.buf[n:]
            assert r.line() == b")"
            seen += 1
            assert int(m.group(1)) == seen
        assert seen == 40


def test_list_status(imap):
    c = login(imap)
    append(c, 2)
    append(c, 1, mailbox="Archive")
    typ, _ = c._simple_command("LIST", '""', "%", "RETURN", "(SPECIAL-USE STATUS (MESSAGES UNSEEN))")
    assert typ == "OK"
    st = untagged(c, "STATUS")
    assert b'"INBOX" (MESSAGES 2 UNSEEN 2)' in st and b'"Archive" (MESSAGES 1 UNSEEN 1)' in st, st
    assert len(st) == 6
    with pytest.raises(imaplib.IMAP4.error):
        c._simple_command("LIST", '""', "%", "RETURN", "(STATUS (BOGUS))")
    c.logout()


def test_utf8_accept(imap):
    name = "Entwürfe".encode()
    with Raw(imap) as r:
        r.starttls()
        r.login()
        ln, lines = r.cmd("ENABLE UTF8=ACCEPT")
        assert ln.startswith(b"t OK") and lines == [b"* ENABLED UTF8=ACCEPT"], lines
        ln, _ = r.cmd(b'CREATE "' + name + b'"')
        assert ln.startswith(b"t OK"), ln
        ln, lines = r.cmd(b'LIST "" "Entw*"')
        # 8-bit names come as literals: the name's bytes follow the line
        assert ln.startswith(b"t OK") and lines[0].endswith(b"{%d}" % len(name)), lines
        assert lines[1] == name, lines
        data = message(subject="Grüße").replace(b"Gr\xc3\xbc\xc3\x9fe", "Grüße".encode())
        ln, _ = r.cmd(b'APPEND "' + name + b'" UTF8 (~{%d+}\r\n' % len(data) + data + b")")
        assert ln.startswith(b"t OK [APPENDUID "), ln
        ln, _ = r.cmd(b"CREATE \"bad\xff\"")
        assert ln.startswith(b"t NO"), ln
    c = login(imap)           # without UTF8=ACCEPT: modified UTF-7
    assert c.status("Entw&APw-rfe", "(MESSAGES)")[1] == [b'"Entw&APw-rfe" (MESSAGES 1)']
    typ, _ = c.append("INBOX", None, None, message())
    with pytest.raises(imaplib.IMAP4.error):
        c._simple_command("APPEND", "INBOX", "UTF8", "(~{1+}\r\nx)")
    c.logout()


def test_large_messages_streamed(imap):
    """BODY[] of messages over 256 KiB goes out piece by piece (several
    storaged reads each): whole, partial, and non-PEEK (FLAGS come along)."""
    c = login(imap)
    bodies = []
    for i in range(3):
        body = b"".join(b"%d-%07d %s\r\n" % (i, k, b"z" * 60) for k in range(40000))  # ~2.8 MB
        data = message(subject="huge %d" % i, body=body)
        bodies.append(data)
        assert c.append("INBOX", None, None, data)[0] == "OK"
    c.select("INBOX")
    typ, resp = c.fetch("1:3", "(RFC822.SIZE BODY.PEEK[])")
    got = [p for p in resp if isinstance(p, tuple)]
    assert [g[1] for g in got] == bodies
    assert b"RFC822.SIZE %d " % len(bodies[0]) in got[0][0]
    typ, resp = c.fetch("2", "(BODY.PEEK[]<1500000.1200000>)")
    assert resp[0][1] == bodies[1][1500000:2700000] and b"BODY[]<1500000>" in resp[0][0]
    typ, resp = c.fetch("3", "(BODY.PEEK[]<99999999.10>)")
    assert resp[0][1] == b""
    typ, resp = c.fetch("3", "(BODY[])")
    assert resp[0][1] == bodies[2] and b"\\Seen" in resp[0][0], resp[0][0]
    c.logout()


def _hwm_kb(pid):
    with open("/proc/%d/status" % pid) as f:
        return int(re.search(r"VmHWM:\s+(\d+) kB", f.read()).group(1))


@pytest.mark.skipif(buslib.SANITIZED, reason="ASan's memory is not ours")
def test_fetch_of_a_30_mb_message_holds_one_piece(imap):
    """A 30 MB message (stored on the bus, not through APPEND) is fetched
    whole while imapd's peak memory grows by a few pieces, not by 30 MB."""
    big = message(subject="30 MB", body=b"".join(b"%08d %s\r\n" % (k, b"q" * 90)
                                                   for k in range(300000)))
    store_ok(imap.c, [{"address": ALICE}], big)
    c = login(imap)
    c.select("INBOX")
    before = _hwm_kb(imap.imapd.pid)
    typ, resp = c.fetch("1", "(BODY.PEEK[])")
    assert resp[0][1] == big
    grown = _hwm_kb(imap.imapd.pid) - before
    assert grown < 12 * 1024, "imapd's peak grew by %d kB" % grown
    c.logout()


def test_rename_inbox_moves_its_messages(imap):
    c = login(imap)
    append(c, 3)
    c.select("INBOX")
    untagged(c, "EXISTS")
    typ, resp = c.rename("INBOX", "Old-Inbox")
    assert typ == "OK", resp
    assert untagged(c, "EXPUNGE") == [b"3", b"2", b"1"]     # this session's INBOX emptied
    assert c.status("Old-Inbox", "(MESSAGES)")[1] == [b'"Old-Inbox" (MESSAGES 3)']
    assert c.fetch("1:*", "(UID)") == ("OK", [None])
    assert c.rename("INBOX", "Old-Inbox")[0] == "NO"          # the target exists
    append(c, 1)
    assert c.noop()[0] == "OK" and untagged(c, "EXISTS") == [b"1"]
    c.logout()


def test_random_garbage_gets_answers(imap):
    """Hundreds of random command lines (8-bit, parentheses, quotes, NULs),
    authenticated and not: each gets a tagged BAD or NO, never a crash; 50
    BADs on one connection end it with BYE."""
    import random
    rnd = random.Random(5)
    alphabet = b'()[]<>"\\{}*%:,. \x00\x01\x7f\xff\xc3\xa9' + b"ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"
    words = [b"FETCH", b"STORE", b"SEARCH", b"LIST", b"SELECT", b"UID", b"BODY[", b"(FLAGS",
             b"1:*", b"HEADER.FIELDS", b"NOT", b"OR", b"CHARSET", b"APPEND", b"STATUS"]

    def garbage():
        while True:
            parts = [rnd.choice(words) if rnd.random() < 0.4 else
                     bytes(rnd.choice(alphabet) for _ in range(rnd.randint(1, 12)))
                     for _ in range(rnd.randint(1, 8))]
            line = b" ".join(parts).replace(b"\r", b"").replace(b"\n", b"").rstrip(b"}")
            if not re.search(rb"IDLE|LOGOUT|AUTHENTICATE|STARTTLS", line, re.I):
                return line

    for conn in range(6):
        with Raw(imap) as r:
            r.starttls()
            if conn % 2:
                r.login()
                r.cmd("SELECT INBOX")
            for i in range(40):     # under the BAD limit of one session
                tag = b"g%d" % i
                line = garbage()
                r.send(tag + b" " + line + b"\r\n")
                ln = r.until(tag + b" ")
                assert re.match(rb"g\d+ (OK|NO|BAD)", ln), (line, ln)
            ln, _ = r.cmd("NOOP")
            assert ln.startswith(b"t OK")
    with Raw(imap) as r:
        r.starttls()
        r.send(b"".join(b"b%d FROB\r\n" % i for i in range(60)))
        lines = []
        r.until(b"* BYE", lines)
        assert len(lines) == 49 and r.closed()
    assert imap.imapd.alive()


def test_large_append_streamed(imap):
    """APPEND literals over 256 KiB go to storaged as they arrive: a 3 MB one
    (synchronising), a LITERAL+ one with bare LF line ends (made CRLF), one
    refused by storaged and one refused by us (answered after their bytes,
    the connection still in step)."""
    c = login(imap)
    big = message(subject="big append", body=b"".join(b"%07d %s\r\n" % (k, b"a" * 70)
                                                       for k in range(40000)))
    typ, resp = c.append("INBOX", "(\\Seen)", None, big)
    assert typ == "OK" and b"APPENDUID" in resp[0]
    c.select("INBOX")
    typ, resp = c.fetch("1", "(FLAGS BODY.PEEK[])")
    assert resp[0][1] == big and b"\\Seen" in resp[0][0]
    lf = b"Subject: lf\n\n" + b"".join(b"%07d %s\n" % (k, b"b" * 70) for k in range(5000))
    with Raw(imap, implicit=True) as r:
        r.login()
        ln, _ = r.cmd(b"APPEND INBOX {%d+}\r\n" % len(lf) + lf)
        assert ln.startswith(b"t OK [APPENDUID"), ln
        ln, _ = r.cmd(b"APPEND Nope {%d+}\r\n" % len(lf) + lf)
        assert ln.startswith(b"t NO [TRYCREATE]"), ln
        ln, _ = r.cmd(b"APPEND INBOX (\\Bogus) {%d+}\r\n" % len(lf) + lf)
        assert ln.startswith(b"t BAD"), ln
        r.send(b"s APPEND INBOX (\\Bogus) {%d}\r\n" % len(lf))   # synchronising: no "+"
        assert r.until(b"s ").startswith(b"s BAD")
        ln, _ = r.cmd(b"APPEND INBOX {%d+}\r\n" % len(lf) + lf + b" extra")
        assert ln.startswith(b"t BAD"), ln
        ln, _ = r.cmd("NOOP")
        assert ln.startswith(b"t OK"), ln
    c.noop()                   # told of the message the other session added
    typ, resp = c.fetch("2", "(RFC822.SIZE BODY.PEEK[])")
    crlf = lf.replace(b"\n", b"\r\n")
    assert resp[0][1] == crlf and b"RFC822.SIZE %d" % len(crlf) in resp[0][0]
    assert c.status("INBOX", "(MESSAGES)")[1] == [b'"INBOX" (MESSAGES 2)']
    c.logout()


@pytest.mark.skipif(buslib.SANITIZED, reason="ASan's memory is not ours")
def test_append_of_a_30_mb_message_holds_one_chunk(imap):
    big = message(subject="30 MB up", body=b"".join(b"%08d %s\r\n" % (k, b"u" * 90)
                                                     for k in range(300000)))
    c = login(imap)
    before = _hwm_kb(imap.imapd.pid)
    typ, resp = c.append("INBOX", None, None, big)
    assert typ == "OK", resp
    grown = _hwm_kb(imap.imapd.pid) - before
    assert grown < 12 * 1024, "imapd's peak grew by %d kB" % grown
    c.select("INBOX")
    assert c.fetch("1", "(RFC822.SIZE)")[1] == [b"1 (UID 1 RFC822.SIZE %d)" % len(big)]
    c.logout()
