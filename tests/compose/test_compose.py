"""
test_compose.py — the containers of docker-compose.yml (issue 6), in order:
the stack as built and hardened, a message in over SMTP and out over IMAP,
every service restarted under load without a lost or duplicated message,
smtpd and imapd scaled to two replicas and an smtpd killed, make up again.

Run by `make test-compose` (tools/docker/test-compose.sh); needs Docker.
"""

import imaplib
import os
import re
import signal
import smtplib
import ssl
import stat
import subprocess
import time

from stack import Sender, message, wait_until

DOMAIN = "roost.test"
USER = "bob@" + DOMAIN
SERVICES = ["busd", "storaged", "smtpd", "imapd"]
PASSWORD = "correct horse battery"


def test_built_and_up(stack):
    print("timings: %s" % {k: round(v, 1) for k, v in stack.timings.items()})
    for svc in SERVICES:
        assert stack.healthy(svc), svc
    ps = stack.roostctl("status").stdout
    for svc in ("busd", "storaged", "storaged.control", "smtpd.control", "imapd.control"):
        assert re.search(r"^%s\s" % re.escape(svc), ps, re.M), ps


def test_hardening(stack):
    wg = stack.ids("wireguard")[0]
    for svc in SERVICES + ["wireguard", "bus-relay"]:
        c = stack.inspect(stack.ids(svc)[0])
        hc = c["HostConfig"]
        user = c["Config"]["User"]
        assert hc["ReadonlyRootfs"] is True, svc
        assert [x.upper() for x in hc["CapDrop"]] in (["ALL"], ["CAP_ALL"]), (svc, hc["CapDrop"])
        if svc == "wireguard":
            # the WireGuard end: root, but with NET_ADMIN as its one capability
            assert [x.upper().replace("CAP_", "") for x in hc.get("CapAdd") or []] == ["NET_ADMIN"], hc.get("CapAdd")
            continue
        assert user and not user.startswith("0") and user != "root", (svc, user)
        assert not hc.get("CapAdd"), svc
        assert hc["RestartPolicy"]["Name"] in ("unless-stopped", "always"), svc
        if svc in ("busd", "storaged"):
            assert hc["NetworkMode"] == "none", svc
        elif svc != "wireguard":
            assert hc["NetworkMode"] == "container:" + wg, (svc, hc["NetworkMode"])
    # Distinct uids per service (the bus relay's too: its bus role is "tap").
    uids = {svc: stack.inspect(stack.ids(svc)[0])["Config"]["User"].split(":")[0]
            for svc in SERVICES + ["bus-relay"]}
    assert len(set(uids.values())) == len(SERVICES) + 1, uids
    # The bus on the host: not reachable by others.
    st = os.stat(stack.busdir)
    assert stat.S_IMODE(st.st_mode) & 0o007 == 0, oct(st.st_mode)
    for name in os.listdir(stack.busdir):
        m = os.stat(os.path.join(stack.busdir, name)).st_mode
        assert m & 0o007 == 0, (name, oct(m))
    # The namespace owner lets smtpd bind port 25 without root.
    assert stack.inspect(wg)["HostConfig"]["Sysctls"].get("net.ipv4.ip_unprivileged_port_start") == "0"
    # No VPS configured: the namespace's owner holds it without a tunnel, and
    # the bus relay listens nowhere (it waits for the tunnel's address).
    assert "no tunnel" in stack.logs(wg), stack.logs(wg)
    relay = stack.ids("bus-relay")[0]
    wait_until(lambda: "relay.waiting" in stack.logs(relay), 60, "the bus relay waiting for the tunnel")
    assert "relay.listening" not in stack.logs(relay), stack.logs(relay)


def test_mail_in_and_out(stack):
    stack.roostctl("domain", "add", DOMAIN)
    stack.roostctl("user", "add", USER, "--password-stdin", stdin=PASSWORD + "\n")
    # roostctl inside a container reaches the bus too.
    assert USER in stack.roostctl("user", "list", DOMAIN, host=False).stdout
    addr = stack.smtp_addr()
    with smtplib.SMTP(addr[0], addr[1], timeout=60) as s:
        code, banner = s.ehlo("sender.test")
        assert code == 250 and banner.startswith(b"mx.roost.test"), banner
        # make up put a self-signed certificate in the tls volume.
        assert s.has_extn("starttls"), banner
        s.starttls(context=ssl._create_unverified_context())
        s.ehlo("sender.test")
        s.sendmail("load@sender.test", [USER], message("first-message", USER))
    out = stack.roostctl("message", "list", USER, "INBOX").stdout
    assert "first-message" in out, out
    uid = out.split("\t")[0]
    raw = stack.roostctl("message", "get", USER, "INBOX", uid).stdout
    assert "Message-ID: <first-message@sender.test>" in raw and "body of first-message" in raw, raw
    # And over IMAP: STARTTLS on 143, and implicit TLS on 993.
    ip = addr[0]
    with imaplib.IMAP4(ip, 143, timeout=60) as m:
        m.starttls(ssl_context=ssl._create_unverified_context())
        m.login(USER, PASSWORD)
        typ, data = m.select("INBOX")
        assert typ == "OK", data
        typ, data = m.uid("FETCH", uid, "(BODY.PEEK[])")
        assert typ == "OK", data
        body = data[0][1].decode()
        assert "Message-ID: <first-message@sender.test>" in body, body
        assert body.replace("\r\n", "\n") == raw.replace("\r\n", "\n"), (body, raw)
    with imaplib.IMAP4_SSL(ip, 993, ssl_context=ssl._create_unverified_context(), timeout=60) as m:
        m.login(USER, PASSWORD)
        typ, data = m.select("INBOX", readonly=True)
        assert typ == "OK" and int(data[0]) >= 1, data


def _restart_and_wait(stack, svc):
    t0 = time.monotonic()
    stack.compose("restart", svc)
    stack.wait_healthy(svc, timeout=120)
    return time.monotonic() - t0


def test_restart_each_service_under_load(stack):
    before = stack.subjects(USER)
    n = 2000
    subjects = ["restart-%04d" % i for i in range(n)]
    # Paced so that the load outlasts the three restarts (about 60 s).
    before_restart = _imap_login(stack)
    before_restart.select("INBOX", readonly=True)
    sender = Sender(stack.smtp_addr(), USER, subjects, threads=8, rate=30, deadline=600).start()
    took = {}
    try:
        wait_until(lambda: len(sender.acked) >= 10 or sender.done(), 60, "the first messages accepted")
        assert len(sender.acked) >= 10, "the load does not get through: %s" % dict(sender.errors)
        for svc in SERVICES:
            assert not sender.done(), "the load ended before %s's restart" % svc
            took[svc] = _restart_and_wait(stack, svc)
            time.sleep(2)
            assert not sender.done(), "the load ended during %s's restart" % svc
    finally:
        sender.join()
    print("restarts took %s s; %d acked, %d retries %s" % (
        {k: round(v, 1) for k, v in took.items()}, len(sender.acked), sender.retries, dict(sender.errors)))
    assert len(sender.acked) == n, "only %d of %d sent before the deadline" % (len(sender.acked), n)
    assert sender.retries > 0, "no restart was felt by the clients: the test proves nothing"
    got = stack.subjects(USER) - before
    lost = [s for s in sender.acked if got[s] == 0]
    dups = {s: c for s, c in got.items() if c > 1}
    strays = [s for s in got if not s.startswith("restart-")]
    assert not lost, "%d acknowledged messages lost, e.g. %s" % (len(lost), lost[:5])
    assert not dups, "%d duplicated, e.g. %s" % (len(dups), list(dups.items())[:5])
    assert not strays, strays[:5]
    for svc in SERVICES:
        assert stack.healthy(svc), svc
    # An IMAP client that was connected before imapd's restart lost its
    # connection; it connects again and sees every message.
    try:
        before_restart.noop()
        raise AssertionError("the IMAP session survived imapd's restart")
    except (imaplib.IMAP4.abort, imaplib.IMAP4.error, OSError):
        pass
    m = _imap_login(stack)
    typ, data = m.select("INBOX", readonly=True)
    assert typ == "OK" and int(data[0]) == sum(stack.subjects(USER).values()), data
    m.logout()


def _imap_login(stack):
    m = imaplib.IMAP4(stack.smtp_addr()[0], 143, timeout=60)
    m.starttls(ssl_context=ssl._create_unverified_context())
    m.login(USER, PASSWORD)
    return m


def _control_workers(stack, name):
    st = stack.roostctl("--json", "status").stdout
    import json
    for s in json.loads(st)["services"]:
        if s["name"] == name:
            return s["workers"]
    return []


def test_scale_smtpd_imapd_and_kill_a_replica(stack):
    stack.compose("up", "-d", "--no-deps", "--no-recreate", "--scale", "smtpd=2", "--scale", "imapd=2",
                  "smtpd", "imapd")
    stack.wait_healthy("smtpd", n=2, timeout=120)
    stack.wait_healthy("imapd", n=2, timeout=120)
    ids = stack.ids("smtpd")
    wait_until(lambda: len(_control_workers(stack, "smtpd.control")) == 2, 60, "two smtpd.control replicas")
    wait_until(lambda: len(_control_workers(stack, "imapd.control")) == 2, 60, "two imapd.control replicas")
    # IMAP connections land on both imapd replicas (port 143 shared too).
    iids = stack.ids("imapd")
    ibefore = {c: stack.logs(c).count("session.open") for c in iids}
    for _ in range(30):
        m = _imap_login(stack)
        typ, data = m.select("INBOX", readonly=True)
        assert typ == "OK", data
        m.logout()
    iserved = {c[:12]: stack.logs(c).count("session.open") - ibefore[c] for c in iids}
    assert all(v > 0 for v in iserved.values()), "IMAP connections per replica: %s" % iserved
    # Pings to smtpd.control spread over both replicas (busd load-balances).
    for _ in range(20):
        stack.roostctl("bus", "ping", "smtpd")
    reqs = [w["requests"] for w in _control_workers(stack, "smtpd.control")]
    assert len(reqs) == 2 and all(r > 0 for r in reqs), reqs

    # Both serve port 25 of the one namespace (SO_REUSEPORT): new connections
    # land on either.
    before = {c: stack.logs(c).count("session.open") for c in ids}
    subjects = ["scale-%03d" % i for i in range(60)]
    s = Sender(stack.smtp_addr(), USER, subjects, threads=6, deadline=300)
    # One connection per message: the kernel spreads connections, not messages.
    s.threads = []
    import threading
    def one(subj):
        for _ in range(20):
            try:
                with smtplib.SMTP(*stack.smtp_addr(), timeout=60) as c:
                    c.sendmail("load@sender.test", [USER], message(subj, USER))
                with s.lock:
                    s.acked.append(subj)
                return
            except (smtplib.SMTPException, OSError):
                time.sleep(0.3)
    ts = [threading.Thread(target=one, args=(x,)) for x in subjects]
    for t in ts:
        t.start()
    for t in ts:
        t.join(300)
    after = {c: stack.logs(c).count("session.open") for c in ids}
    served = {c[:12]: after[c] - before[c] for c in ids}
    assert all(v > 0 for v in served.values()), "connections per replica: %s" % served
    assert len(s.acked) == len(subjects)

    # SIGKILL one replica's smtpd (as a crash would): the restart policy brings
    # it back, and mail keeps flowing meanwhile.
    victim = ids[1]
    restarts = stack.inspect(victim)["RestartCount"]
    pid = stack.inspect(victim)["State"]["Pid"]
    subjects2 = ["kill-%04d" % i for i in range(300)]
    sender = Sender(stack.smtp_addr(), USER, subjects2, threads=4, rate=30, deadline=300).start()
    time.sleep(2)
    os.kill(pid, signal.SIGKILL)
    wait_until(lambda: stack.inspect(victim)["RestartCount"] > restarts, 60, "the killed replica restarted")
    stack.wait_healthy("smtpd", n=2, timeout=120)
    assert not sender.done(), "the load ended before the replica was back"
    sender.join()
    assert len(sender.acked) == len(subjects2)
    got = stack.subjects(USER)
    lost = [x for x in sender.acked + s.acked if got[x] == 0]
    assert not lost, "%d acknowledged messages lost, e.g. %s" % (len(lost), lost[:5])
    wait_until(lambda: len(_control_workers(stack, "smtpd.control")) == 2, 60, "two smtpd.control replicas again")


def test_make_up_again_keeps_mail(stack):
    """make up on a running stack: down (volumes kept; no container is
    recreated, which docker-compose 1.29 cannot do on this engine), up,
    healthy; the mail is still there and the scaled smtpd is back to one.
    A container of a service the file no longer has (`netns`, the wireguard
    container's name before issue 7) is removed as an orphan."""
    before = stack.subjects(USER)
    assert sum(before.values()) > 2000
    old = subprocess.run(["docker", "run", "-d", "--network", "none",
                          "--label", "com.docker.compose.project=" + stack.project,
                          "--label", "com.docker.compose.service=netns",
                          "--label", "com.docker.compose.oneoff=False",
                          "--label", "com.docker.compose.container-number=1",
                          "roost-wireguard:" + stack.tag, "sleep", "infinity"],
                         capture_output=True, text=True, check=True).stdout.strip()
    try:
        stack.up()
        gone = subprocess.run(["docker", "inspect", old], capture_output=True)
        assert gone.returncode != 0, "the old netns container is still there after make up"
    finally:
        subprocess.run(["docker", "rm", "-f", old], capture_output=True)
    for svc in SERVICES:
        assert stack.healthy(svc), svc
    assert stack.subjects(USER) == before
    addr = stack.smtp_addr()
    with smtplib.SMTP(addr[0], addr[1], timeout=60) as s:
        s.sendmail("load@sender.test", [USER], message("after-make-up", USER))
    assert stack.subjects(USER)["after-make-up"] == 1
