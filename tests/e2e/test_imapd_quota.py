"""
test_imapd_quota.py — IMAP QUOTA (RFC 9208) in imapd, end to end: busd,
storaged and imapd on a private bus, imaplib and a raw socket on 127.0.0.1.

  * CAPABILITY says QUOTA and QUOTA=RES-STORAGE, not QUOTASET.
  * GETQUOTAROOT and GETQUOTA give the logged-in user's STORAGE usage and
    limit in KiB, as storaged counts them (storaged.user.usage); a user
    without a limit has no quota root.
  * SETQUOTA is refused (NO), a malformed one is BAD.
  * APPEND (small and streamed) and COPY over quota are NO [OVERQUOTA] and
    store nothing; MOVE needs no room; after an EXPUNGE there is room again.
  * A session sees its own user's numbers only.

Run: make && ROOST_BIN=$PWD/build/bin /usr/bin/python3 -m pytest tests/e2e/test_imapd_quota.py -q
"""



from imap import Raw, login
from store import db_query, message
from test_accounts import ok
from test_imapd import ALICE, BOB, imap  # noqa: F401 (imap: the fixture, busd + storaged + imapd)


def used_bytes(b, local):
    return db_query(b.data_dir, "SELECT used_bytes FROM users WHERE localpart = ?", (local,))[0][0]


def set_quota(b, address, n):
    ok(b, "user", "quota", address, str(n))


def test_capability(imap):
    c = login(imap)
    caps = c.capability()[1][0].split()
    assert b"QUOTA" in caps and b"QUOTA=RES-STORAGE" in caps
    assert b"QUOTASET" not in caps and b"QUOTA=RES-MESSAGE" not in caps
    c.logout()


def test_getquotaroot_and_getquota_with_a_limit(imap):
    set_quota(imap, ALICE, 200 * 1024)
    c = login(imap)
    for i in range(3):
        assert c.append("INBOX", None, None, message(body=b"x" * 5000))[0] == "OK"
    used = used_bytes(imap, "alice")
    assert used > 15000
    typ, (roots, quotas) = c.getquotaroot("INBOX")
    assert typ == "OK"
    assert roots == [b'"INBOX" ""'], roots
    assert quotas == [b'"" (STORAGE %d 200)' % (used // 1024)], quotas
    typ, data = c.getquota('""')
    assert typ == "OK" and data == [b'"" (STORAGE %d 200)' % (used // 1024)], data
    # any mailbox of the user is under the one root; the name comes back as sent
    typ, (roots, _) = c.getquotaroot("inbox")
    assert typ == "OK" and roots == [b'"INBOX" ""'], roots
    assert c.create("Caf&AOk-")[0] == "OK"
    typ, (roots, quotas) = c.getquotaroot("Caf&AOk-")
    assert typ == "OK" and roots == [b'"Caf&AOk-" ""'] and len(quotas) == 1, roots
    # a mailbox that does not exist, a root that does not exist
    typ, data = c.getquotaroot("No/Such")
    assert typ == "NO" and b"[NONEXISTENT]" in data[0][0], data
    typ, data = c.getquota('"user.bob"')
    assert typ == "NO" and b"[NONEXISTENT]" in data[0], data
    c.logout()


def test_no_limit_no_quota_root(imap):
    c = login(imap)
    assert c.append("INBOX", None, None, message())[0] == "OK"
    typ, (roots, quotas) = c.getquotaroot("INBOX")
    assert typ == "OK" and roots == [b'"INBOX"'] and quotas == [None], (roots, quotas)
    typ, data = c.getquota('""')
    assert typ == "NO" and b"[NONEXISTENT]" in data[0], data
    c.logout()


def test_exact_responses_and_syntax(imap):
    set_quota(imap, ALICE, 10 * 1024 * 1024)
    with Raw(imap) as r:
        r.starttls()
        ln, _ = r.cmd("GETQUOTAROOT INBOX")
        assert ln.startswith(b"t BAD"), ln        # not before login
        r.login()
        ln, lines = r.cmd("GETQUOTAROOT INBOX")
        assert ln.startswith(b"t OK"), ln
        assert lines == [b'* QUOTAROOT "INBOX" ""', b'* QUOTA "" (STORAGE 0 10240)'], lines
        ln, lines = r.cmd('GETQUOTA ""')
        assert ln.startswith(b"t OK") and lines == [b'* QUOTA "" (STORAGE 0 10240)'], lines
        ln, lines = r.cmd('SETQUOTA "" (STORAGE 1)')
        assert ln.startswith(b"t NO") and lines == [], ln
        ln, _ = r.cmd('SETQUOTA "" ()')
        assert ln.startswith(b"t NO"), ln
        for bad in ['SETQUOTA ""', 'SETQUOTA "" (STORAGE)', 'SETQUOTA "" (STORAGE x)',
                    'SETQUOTA "" (STORAGE 1', 'GETQUOTA', 'GETQUOTA "" x', 'GETQUOTAROOT',
                    'GETQUOTAROOT INBOX x', 'SETQUOTA "" (' + " ".join(["S 1"] * 40) + ")"]:
            ln, _ = r.cmd(bad)
            assert ln.startswith(b"t BAD"), (bad, ln)
        ln, _ = r.cmd("NOOP")
        assert ln.startswith(b"t OK"), ln


def test_append_and_copy_over_quota(imap):
    set_quota(imap, ALICE, 20000)
    c = login(imap)
    assert c.append("INBOX", None, None, message(body=b"a" * 12000))[0] == "OK"
    typ, data = c.append("INBOX", None, None, message(body=b"b" * 9000))
    assert typ == "NO" and data[0].startswith(b"[OVERQUOTA]"), data
    # a literal large enough to be streamed to storaged in chunks
    typ, data = c.append("INBOX", None, None, message(body=b"c" * 400000))
    assert typ == "NO" and data[0].startswith(b"[OVERQUOTA]"), data
    assert c.status("INBOX", "(MESSAGES)")[1][0].endswith(b"(MESSAGES 1)")
    assert c.select("INBOX")[0] == "OK"
    typ, data = c.copy("1", "Archive")
    assert typ == "NO" and data[0].startswith(b"[OVERQUOTA]"), data
    assert c.status("Archive", "(MESSAGES)")[1][0].endswith(b"(MESSAGES 0)")
    typ, data = c._simple_command("MOVE", "1", "Archive")   # a move needs no room
    assert typ == "OK", data
    assert c.status("Archive", "(MESSAGES)")[1][0].endswith(b"(MESSAGES 1)")
    assert c.select("Archive")[0] == "OK"
    assert c.store("1", "+FLAGS", "\\Deleted")[0] == "OK"
    assert c.expunge()[0] == "OK"
    typ, (_, quotas) = c.getquotaroot("INBOX")
    assert quotas == [b'"" (STORAGE 0 19)'], quotas
    assert c.append("INBOX", None, None, message(body=b"b" * 9000))[0] == "OK"
    c.logout()


def test_a_session_sees_its_own_numbers_only(imap):
    set_quota(imap, ALICE, 100 * 1024)
    set_quota(imap, BOB, 900 * 1024)
    b = login(imap, user=BOB)
    for _ in range(4):
        assert b.append("INBOX", None, None, message(body=b"y" * 50000))[0] == "OK"
    a = login(imap)
    typ, (_, quotas) = a.getquotaroot("INBOX")
    assert quotas == [b'"" (STORAGE 0 100)'], quotas
    typ, (_, quotas) = b.getquotaroot("INBOX")
    assert quotas == [b'"" (STORAGE %d 900)' % (used_bytes(imap, "bob") // 1024)], quotas
    # no way to name another user's root or mailbox
    for root in ['"bob@example.org"', '"user/bob"', "INBOX"]:
        typ, _ = a.getquota(root)
        assert typ == "NO", root
    typ, data = a.getquotaroot("bob@example.org/INBOX")
    assert typ == "NO" and b"[NONEXISTENT]" in data[0][0], data
    a.logout()
    b.logout()
