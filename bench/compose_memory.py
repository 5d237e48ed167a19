#!/usr/bin/python3
"""compose_memory.py roost|pss PID... — helpers of bench/compose-memory.sh.

  roost      the container stack of docker-compose.yml as its own project
             (tests/compose/stack.py: per-run tag, internal network), a
             domain and a user, PSS of every Roost process in the containers
             after start and after MSGS messages (8 SMTP connections) with
             one IMAP client logged in (STARTTLS, SELECT, FETCH 1:* FLAGS); prints
             "JSON {...}" and removes the project.
  pss MASTER...  the PSS of every descendant of the MASTER pids, as JSON.
  peer PORT MASTER...   the same for a Postfix (+ Dovecot) already running:
             PSS of every descendant of the MASTER pids, MSGS messages to
             127.0.0.1:PORT, waits for DIR/new to hold them (DIR: $MAILDIR).
"""
import imaplib
import json
import os
import ssl
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "tests", "compose"))
from stack import Sender, Stack, wait_until  # noqa: E402

MSGS = int(os.environ.get("MSGS", "1000"))


def pss_kb(pid):
    try:
        with open("/proc/%d/smaps_rollup" % pid) as f:
            return sum(int(l.split()[1]) for l in f if l.startswith("Pss:"))
    except OSError:
        return 0


def comm(pid):
    try:
        return open("/proc/%d/comm" % pid).read().strip()
    except OSError:
        return "?"


def tree(roots):
    kids = {}
    for p in os.listdir("/proc"):
        if p.isdigit():
            try:
                st = open("/proc/%s/stat" % p).read()
            except OSError:
                continue
            kids.setdefault(int(st[st.rfind(")") + 2:].split()[1]), []).append(int(p))
    out, todo = [], list(roots)
    while todo:
        p = todo.pop()
        out.append(p)
        todo.extend(kids.get(p, []))
    return out


def maps(pid):
    """{mapping name: (rss kB, pss kB)} from /proc/PID/smaps."""
    out, name = {}, None
    try:
        with open("/proc/%d/smaps" % pid) as f:
            for line in f:
                parts = line.split()
                if "-" in parts[0] and not parts[0].endswith(":"):
                    name = parts[5] if len(parts) > 5 else "[anon]"
                elif parts[0] in ("Rss:", "Pss:"):
                    r, q = out.get(name, (0, 0))
                    out[name] = (r + int(parts[1]), q) if parts[0] == "Rss:" else (r, q + int(parts[1]))
    except OSError:
        pass
    return out


def sample(pids):
    """PSS per process name and in all; also what the sum would be with each
    mapped file (the shared libraries) counted once: on fuse-overlayfs, as on
    this machine, every container maps its own copy of libc, libzmq,
    libcrypto... (PSS = RSS for them); on overlay2 they are shared."""
    by, files, anon = {}, {}, 0
    for p in pids:
        by.setdefault(comm(p), 0)
        by[comm(p)] += pss_kb(p)
        for name, (rss, pss) in maps(p).items():
            if name.startswith("/"):
                files[name] = max(files.get(name, 0), rss)
            else:
                anon += pss
    return {"total_kb": sum(by.values()), "by_process": by, "processes": len(pids),
            "files_once_kb": anon + sum(files.values())}


def roost():
    s = Stack()
    try:
        s.build()
        s.up()
        s.roostctl("domain", "add", "roost.test")
        s.roostctl("user", "add", "bob@roost.test", "--password-stdin", stdin="pw-for-bench\n")
        services = ["busd", "storaged", "smtpd", "imapd", "bus-relay"]

        def pids():
            return [s.inspect(s.ids(svc)[0])["State"]["Pid"] for svc in services]
        time.sleep(3)
        start = sample(pids())
        t0 = time.monotonic()
        snd = Sender(s.smtp_addr(), "bob@roost.test", ["mem-%04d" % i for i in range(MSGS)], threads=8).start().join()
        took = time.monotonic() - t0
        assert len(snd.acked) == MSGS, len(snd.acked)
        wait_until(lambda: sum(s.subjects("bob@roost.test").values()) >= MSGS, 60, "all stored")
        # One IMAP client logged in, as for Dovecot: STARTTLS, SELECT, FLAGS of all.
        m = imaplib.IMAP4(s.smtp_addr()[0], 143, timeout=60)
        m.starttls(ssl_context=ssl._create_unverified_context())
        m.login("bob@roost.test", "pw-for-bench")
        typ, data = m.select("INBOX")
        assert typ == "OK" and int(data[0]) >= MSGS, data
        m.fetch("1:*", "(FLAGS)")
        time.sleep(2)
        after = sample(pids())
        m.logout()
        wg = sample(tree([s.inspect(s.ids("wireguard")[0])["State"]["Pid"]]))
        print("JSON " + json.dumps({"start": start, "after": after, "wireguard": wg,
                                    "send_s": round(took, 1), "msgs": MSGS}))
    finally:
        s.destroy()


def peer(port, masters):
    start = sample(tree(masters))
    snd = Sender(("127.0.0.1", port), "bob@roost.test", ["mem-%04d" % i for i in range(MSGS)], threads=8).start().join()
    assert len(snd.acked) == MSGS, len(snd.acked)
    new = os.path.join(os.environ["MAILDIR"], "new")
    wait_until(lambda: os.path.isdir(new) and len(os.listdir(new)) >= MSGS, 180, "all delivered")
    time.sleep(2)
    after = sample(tree(masters))
    print("JSON " + json.dumps({"start": start, "after": after, "msgs": MSGS}))


if __name__ == "__main__":
    if sys.argv[1] == "roost":
        roost()
    elif sys.argv[1] == "pss":   # pss MASTER...: the tree's PSS as JSON
        print(json.dumps(sample(tree([int(x) for x in sys.argv[2:]]))))
    else:
        peer(int(sys.argv[2]), [int(x) for x in sys.argv[3:]])
