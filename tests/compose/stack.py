"""
stack.py — drives one compose project of Roost for the tests: build, up,
restart, scale, container state, roostctl, SMTP senders.

Nothing here talks to anything but this machine: the project's network is
internal, and SMTP goes to the wireguard container's address on it (Docker
publishes no ports of a container on an internal network, so the bridge
address, which lives on this host, is the way in).
"""

import collections
import json
import os
import random
import shutil
import smtplib
import socket
import subprocess
import tempfile
import threading
import time

TOP = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))


def compose_cmd():
    if subprocess.run(["docker", "compose", "version"], capture_output=True).returncode == 0:
        return ["docker", "compose"]
    if shutil.which("docker-compose"):
        return ["docker-compose"]
    raise RuntimeError("neither 'docker compose' nor docker-compose is installed")


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_until(pred, timeout, what, every=0.5):
    deadline = time.monotonic() + timeout
    while True:
        v = pred()
        if v:
            return v
        if time.monotonic() >= deadline:
            raise AssertionError("timed out after %ss waiting for %s" % (timeout, what))
        time.sleep(every)


class Stack:
    def __init__(self):
        run = "%d%04d" % (os.getpid(), random.randrange(10000))
        self.project = "roostct" + run
        self.tag = "test-" + run
        self.busdir = tempfile.mkdtemp(prefix="rct.", dir="/tmp")
        self.wgdir = tempfile.mkdtemp(prefix="rctwg.", dir="/tmp")   # no keys: no tunnel
        self.dc = compose_cmd()
        self.env = dict(os.environ,
                        COMPOSE_PROJECT_NAME=self.project,
                        COMPOSE_FILE="docker-compose.yml:tests/compose/test.yml",
                        ROOST_TAG=self.tag,
                        ROOST_BUS_HOST_DIR=self.busdir,
                        ROOST_WG_HOST_DIR=self.wgdir,
                        ROOST_PUBLISH_ADDR="127.0.0.1",
                        ROOST_SMTP_PUBLISH=str(free_port()),
                        ROOST_BASE=os.environ.get("ROOST_BASE") or "roost-base:bookworm",
                        ROOST_BUILD_BASE=os.environ.get("ROOST_BUILD_BASE") or "roost-build:bookworm",
                        ROOST_NET_BASE=os.environ.get("ROOST_NET_BASE") or "roost-net:bookworm",
                        ROOST_HOSTNAME="mx.roost.test",
                        UP_TIMEOUT="240")
        b = os.environ.get("ROOST_BIN", os.path.join(TOP, "build", "bin"))
        self.host_roostctl = os.path.join(b, "roostctl") if os.access(os.path.join(b, "roostctl"), os.X_OK) else None
        self.timings = {}

    # ---- compose ----
    def compose(self, *args, check=True, timeout=900):
        p = subprocess.run(self.dc + list(args), cwd=TOP, env=self.env, capture_output=True,
                           text=True, timeout=timeout)
        if check and p.returncode != 0:
            raise RuntimeError("%s %s failed (%d):\n%s%s" % (" ".join(self.dc), " ".join(args),
                                                             p.returncode, p.stdout, p.stderr))
        return p

    def build(self):
        t0 = time.monotonic()
        if not os.environ.get("ROOST_BASE"):   # else: the bases named, e.g. debian:bookworm-slim
            for kind in ("runtime", "build", "net"):
                subprocess.run([os.path.join(TOP, "tools/docker/mkbase.sh"), kind], cwd=TOP, check=True)
        self.timings["bases"] = time.monotonic() - t0
        t0 = time.monotonic()
        # A new tag is a new roost.tag label at the top of every stage: nothing
        # from an earlier build is reused (only the bases above).
        self.compose("build", "-q")
        self.timings["images"] = time.monotonic() - t0

    def up(self):
        t0 = time.monotonic()
        p = subprocess.run([os.path.join(TOP, "tools/docker/up.sh"), "up"], cwd=TOP, env=self.env,
                           capture_output=True, text=True, timeout=600)
        if p.returncode != 0:
            raise RuntimeError("up.sh failed:\n" + p.stdout + p.stderr)
        self.timings["up"] = time.monotonic() - t0
        self.up_output = p.stdout

    def destroy(self):
        self.compose("down", "-v", "--remove-orphans", "--rmi", "all", check=False)
        # The untagged images of the stages (build, runtime, ...) of this run.
        subprocess.run(["docker", "image", "prune", "-f", "--filter", "label=roost.tag=" + self.tag],
                       capture_output=True)
        subprocess.run(["rm", "-rf", self.busdir, self.wgdir])

    # ---- containers ----
    def ids(self, service):
        return self.compose("ps", "-q", service).stdout.split()

    def inspect(self, cid):
        return json.loads(subprocess.run(["docker", "inspect", cid], capture_output=True, text=True,
                                         check=True).stdout)[0]

    def state(self, cid):
        st = self.inspect(cid)["State"]
        return st["Status"], (st.get("Health") or {}).get("Status", "none")

    def healthy(self, service, n=1):
        ids = self.ids(service)
        return len(ids) == n and all(self.state(c) == ("running", "healthy") for c in ids)

    def wait_healthy(self, service, n=1, timeout=120):
        wait_until(lambda: self.healthy(service, n), timeout, "%d healthy %s" % (n, service))

    def smtp_addr(self):
        nets = self.inspect(self.ids("wireguard")[0])["NetworkSettings"]["Networks"]
        return next(iter(nets.values()))["IPAddress"], 25

    def logs(self, cid):
        p = subprocess.run(["docker", "logs", cid], capture_output=True, text=True)
        return p.stdout + p.stderr

    # ---- roostctl ----
    def roostctl(self, *args, stdin=None, check=True, host=None):
        if host is None:
            host = self.host_roostctl is not None
        if host:
            cmd = [self.host_roostctl] + list(args)
            env = dict(os.environ, ROOST_BUS_DIR=self.busdir)
        else:
            cmd = self.dc + ["exec", "-T", "busd", "roostctl"] + list(args)
            env = self.env
        p = subprocess.run(cmd, cwd=TOP, env=env, input=stdin, capture_output=True, text=True,
                           timeout=120)
        if check and p.returncode != 0:
            raise RuntimeError("roostctl %s failed (%d): %s" % (" ".join(args), p.returncode, p.stderr))
        return p

    def subjects(self, address, mailbox="INBOX"):
        """Counter of the Subject of every message in the mailbox."""
        out = self.roostctl("message", "list", address, mailbox).stdout
        return collections.Counter(line.split("\t")[5] for line in out.splitlines() if line.count("\t") >= 5)


def message(subject, rcpt):
    return ("From: load@sender.test\r\nTo: %s\r\nSubject: %s\r\nMessage-ID: <%s@sender.test>\r\n\r\n"
            "body of %s\r\n" % (rcpt, subject, subject, subject))


class Sender:
    """Sends the messages named subjects[0..] with `threads` connections, like
    an MTA: anything but a 250 (4xx, a dropped connection, a refused connect)
    means try the same message again on a new connection. `acked` holds the
    subjects that got their 250. rate: messages per second in all (0: as fast
    as it goes)."""

    def __init__(self, addr, rcpt, subjects, threads=8, rate=0, deadline=600):
        self.addr, self.rcpt = addr, rcpt
        self.todo = collections.deque(subjects)
        self.lock = threading.Lock()
        self.acked = []
        self.retries = 0
        self.errors = collections.Counter()
        self.rate = rate
        self.interval = threads / rate if rate else 0
        self.deadline = time.monotonic() + deadline
        self.threads = [threading.Thread(target=self._run, daemon=True) for _ in range(threads)]

    def start(self):
        for t in self.threads:
            t.start()
        return self

    def join(self):
        for t in self.threads:
            t.join(max(1, self.deadline - time.monotonic() + 30))
        return self

    def done(self):
        return not any(t.is_alive() for t in self.threads)

    def _next(self):
        with self.lock:
            return self.todo.popleft() if self.todo else None

    def _run(self):
        conn = None
        subject = self._next()
        while subject is not None and time.monotonic() < self.deadline:
            t0 = time.monotonic()
            try:
                if conn is None:
                    conn = smtplib.SMTP(self.addr[0], self.addr[1], timeout=60)
                    conn.ehlo("sender.test")
                conn.sendmail("load@sender.test", [self.rcpt], message(subject, self.rcpt))
                with self.lock:
                    self.acked.append(subject)
                subject = self._next()
                wait = self.interval - (time.monotonic() - t0)
                if wait > 0:
                    time.sleep(wait)
            except (smtplib.SMTPException, OSError) as e:
                with self.lock:
                    self.retries += 1
                    self.errors[type(e).__name__] += 1
                try:
                    if conn is not None:
                        conn.close()
                except OSError:
                    pass
                conn = None
                time.sleep(0.2)
        if conn is not None:
            try:
                conn.quit()
            except (smtplib.SMTPException, OSError):
                pass
