"""
mta.py — real SMTP peers for the end-to-end tests, all on 127.0.0.1.

  Postfix   a throwaway Postfix instance owned by one test: its own
            config, queue and data directories in a temp dir, relayhost
            [127.0.0.1]:PORT (the server under test), no DNS, STARTTLS when
            offered (certificate not verified), retries within seconds, its
            log in <dir>/maillog. Submission with its sendmail (-C confdir);
            optionally an SMTP listener on a free loopback port.
  Sink      a tiny real SMTP server (ESMTP, PIPELINING, 8BITMIME, SIZE,
            SMTPUTF8, optional STARTTLS with a self-signed certificate) on a
            free loopback port, in threads; records every transaction. A
            stand-in for the server under test and, later, a fake remote MX.
  swaks()   runs the swaks binary against 127.0.0.1:PORT.
  make_cert() a self-signed certificate and key made by `openssl req`.

Typical use:

    with Sink(tls=True) as sink, Postfix(relay_port=sink.port) as pf:
        pf.send(msg_bytes, "a@example.org", ["b@example.net"])
        pf.wait_empty()                       # fails showing queue and log
        [t] = sink.wait_for(1)                # t.data, t.rcpts, t.tls ...
        body = strip_received(t.data)         # what Postfix added, removed

What Postfix 3.7 (bookworm) does to what it relays, seen here:
  - sendmail submission prepends exactly one header,
      Received: by mta.test (Postfix, from userid 0)\r\n\tid QID; DATE
    and, only when missing, Message-Id (spelled so), Date and From ("root
    <sender>"); never To. SMTP submission's Received is "from HELO (unknown
    [127.0.0.1])\r\n\tby mta.test (Postfix) with ESMTP id QID\r\n\tfor <rcpt>; DATE".
  - LF-only input goes out as CRLF; a bare CR becomes a space; a line over
    998 octets is broken with CRLF SPACE (smtp_line_length_limit): a real
    Postfix never sends over-long lines, bare CR or bare LF — protocol tests
    of those need a raw socket.
  - BODY=8BITMIME only for mail declared 8bit (Content-Transfer-Encoding, or
    received with BODY=8BITMIME); 8-bit text without MIME headers goes out
    without it. To a server without 8BITMIME (and without SMTPUTF8, which
    Postfix takes to imply it) a declared-8bit body is converted to
    quoted-printable and SIZE= is left out.
  - With TLS, connections are not reused (smtp_tls_connection_reuse = no):
    one session, one STARTTLS handshake per delivery. The log says
    "Untrusted TLS connection established to 127.0.0.1[127.0.0.1]:PORT".
  - It logs through postlogd (master.cf's postlog service) to maillog_file,
    which must lie under maillog_file_prefixes; deferrals are lines with
    "status=deferred (reason)", also in postqueue -j as delay_reason.

Processes are stopped by recorded pid (and the Postfix master's own process
group), never by name: other tests run on this machine. Postfix needs root
(its master starts as root and its daemons run as the `postfix` user of the
Debian package); PostfixUnavailable says why it cannot run here, for a
clean skip. Timeouts are generous: a 2-core machine under sanitizers is slow.
"""

import json
import os
import re
import shutil
import signal
import smtplib
import socket
import socketserver
import ssl
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field

WAIT = float(os.environ.get("ROOST_TEST_WAIT", "60"))
LOOPBACK = "127.0.0.1"

POSTFIX = "/usr/sbin/postfix"
POSTCONF = "/usr/sbin/postconf"
POSTQUEUE = "/usr/sbin/postqueue"
SENDMAIL = "/usr/sbin/sendmail"
SWAKS = "/usr/bin/swaks"
OPENSSL = "/usr/bin/openssl"


class PostfixUnavailable(Exception):
    """Postfix cannot run here for a reason outside the test (not installed, not root)."""


def wait_until(pred, timeout=WAIT, interval=0.05, what="condition"):
    """Polls pred() until it returns a true value (returned); raises TimeoutError."""
    deadline = time.monotonic() + timeout
    while True:
        v = pred()
        if v:
            return v
        if time.monotonic() >= deadline:
            raise TimeoutError("timed out after %.0f s waiting for %s" % (timeout, what))
        time.sleep(interval)


def free_port():
    """A loopback TCP port that was free a moment ago (for servers we cannot hand a socket)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((LOOPBACK, 0))
        return s.getsockname()[1]


def make_cert(directory, cn="localhost", name="cert", key_file=None, rsa=False):
    """A self-signed P-256 (or RSA 2048) certificate for cn (and 127.0.0.1), in
    name.pem and name.key (or key_file): returns (cert_path, key_path)."""
    cert = os.path.join(directory, name + ".pem")
    key = os.path.join(directory, key_file or name + ".key")
    alg = ["rsa:2048"] if rsa else ["ec", "-pkeyopt", "ec_paramgen_curve:prime256v1"]
    r = subprocess.run(
        [OPENSSL, "req", "-x509", "-newkey"] + alg +
        ["-nodes", "-days", "2", "-subj", "/CN=" + cn,
         "-addext", "subjectAltName=DNS:%s,IP:127.0.0.1" % cn,
         "-keyout", key, "-out", cert],
        stdin=subprocess.DEVNULL, capture_output=True, timeout=WAIT)
    if r.returncode != 0:
        raise RuntimeError("openssl req failed (%d): %s" % (r.returncode, r.stderr.decode(errors="replace")))
    return cert, key


# ---------------------------------------------------------------------------
# Process helpers: /proc, so a zombie (our PID 1 may not reap) counts as gone.

def _proc_stat(pid):
    """(state, pgrp, starttime) of pid, or None if it does not exist."""
    try:
        with open("/proc/%d/stat" % pid, "rb") as f:
            s = f.read()
    except (FileNotFoundError, ProcessLookupError):
        return None
    rest = s[s.rindex(b")") + 2:].split()
    return rest[0].decode(), int(rest[2]), int(rest[19])


def _alive(pid):
    st = _proc_stat(pid)
    return st is not None and st[0] not in ("Z", "X")


def _group_members(pgid):
    """Live processes in process group pgid."""
    out = []
    for d in os.listdir("/proc"):
        if d.isdigit():
            st = _proc_stat(int(d))
            if st is not None and st[1] == pgid and st[0] not in ("Z", "X"):
                out.append(int(d))
    return out


# ---------------------------------------------------------------------------
# Postfix

# Runs ARGV as its child, as a child subreaper: orphaned descendants (Postfix
# daemons whose master exited first) are adopted and reaped here. Exits with
# ARGV's status once no descendant is left.
_REAPER = r'''
import ctypes, os, sys
if ctypes.CDLL(None, use_errno=True).prctl(36, 1, 0, 0, 0) != 0:  # PR_SET_CHILD_SUBREAPER
    sys.exit("prctl(PR_SET_CHILD_SUBREAPER): %s" % os.strerror(ctypes.get_errno()))
pid = os.fork()
if pid == 0:
    try:
        os.execv(sys.argv[1], sys.argv[1:])
    finally:
        os._exit(127)
code = 1
while True:
    try:
        p, st = os.wait()
    except ChildProcessError:
        break
    except KeyboardInterrupt:
        continue
    if p == pid:
        code = os.waitstatus_to_exitcode(st)
sys.exit(code if code >= 0 else 128 - code)
'''

MAIN_CF = """\
# A throwaway Postfix instance of the Roost end-to-end tests (tests/e2e/mta.py).
compatibility_level = 3.6
queue_directory = {queue}
data_directory = {data}
meta_directory = /etc/postfix
syslog_name = {syslog_name}
maillog_file = {log}
maillog_file_prefixes = {dir}

myhostname = {hostname}
mydomain = {domain}
myorigin = $myhostname
mydestination =
mynetworks = 127.0.0.0/8
inet_interfaces = loopback-only
inet_protocols = ipv4
local_transport = error:5.1.1 local delivery is disabled in this test instance
alias_maps =
alias_database =
biff = no

# Everything goes to the server under test; nothing is looked up, nothing
# leaves the machine.
relayhost = [{relay_host}]:{relay_port}
smtp_dns_support_level = disabled
smtp_host_lookup = native
lmtp_host_lookup = native
smtpd_peername_lookup = no
default_transport = smtp
relay_transport = relay

# STARTTLS whenever the server offers it; its certificate is not verified.
smtp_tls_security_level = may
smtp_tls_loglevel = 1
smtp_tls_note_starttls_offer = yes

# Deferred mail is retried within seconds.
queue_run_delay = 1s
minimal_backoff_time = 1s
maximal_backoff_time = 2s
transport_retry_time = 1s
delay_warning_time = 0
bounce_queue_lifetime = 1d
maximal_queue_lifetime = 1d

# Generous client timeouts: the server under test may run under sanitizers.
smtp_connect_timeout = 60s
smtp_helo_timeout = 120s
smtp_data_done_timeout = 600s
"""

MASTER_CF = """\
# service type  private unpriv  chroot  wakeup  maxproc command
pickup    unix  n       -       n       60      1       pickup
cleanup   unix  n       -       n       -       0       cleanup
qmgr      unix  n       -       n       300     1       qmgr
tlsmgr    unix  -       -       n       1000?   1       tlsmgr
rewrite   unix  -       -       n       -       -       trivial-rewrite
bounce    unix  -       -       n       -       0       bounce
defer     unix  -       -       n       -       0       bounce
trace     unix  -       -       n       -       0       bounce
verify    unix  -       -       n       -       1       verify
flush     unix  n       -       n       1000?   0       flush
proxymap  unix  -       -       n       -       -       proxymap
showq     unix  n       -       n       -       -       showq
error     unix  -       -       n       -       -       error
retry     unix  -       -       n       -       -       error
discard   unix  -       -       n       -       -       discard
smtp      unix  -       -       n       -       -       smtp
relay     unix  -       -       n       -       -       smtp
anvil     unix  -       -       n       -       1       anvil
scache    unix  -       -       n       -       1       scache
postlog   unix-dgram n  -       n       -       1       postlogd
"""

# An SMTP listener for submission over SMTP (Postfix(listen=True)).
MASTER_CF_LISTENER = """\
{addr}:{port} inet n - n - - smtpd
  -o smtpd_recipient_restrictions=permit_mynetworks,reject
  -o smtpd_relay_restrictions=permit_mynetworks,reject
"""

_STATUS_RE = re.compile(
    r"\]: (?P<qid>[0-9A-F]+): to=<(?P<rcpt>[^>]*)>,(?: orig_to=<[^>]*>,)? relay=(?P<relay>\S+),"
    r".* status=(?P<status>\w+) \((?P<reason>.*)\)$")


class Postfix:
    """A throwaway Postfix relaying everything to [relay_host]:relay_port."""

    def __init__(self, relay_port, relay_host=LOOPBACK, hostname="mta.test", listen=False,
                 main_cf=None, keep=False):
        """main_cf: extra main.cf settings (dict), applied last."""
        self.relay_host, self.relay_port = relay_host, relay_port
        self.hostname = hostname
        self.listen = listen
        self.extra = dict(main_cf or {})
        self.keep = keep
        self.dir = None
        self.popen = None
        self.master_pid = None
        self.port = None
        self._started = False

    # -- paths ---------------------------------------------------------------
    @property
    def conf(self):
        return os.path.join(self.dir, "etc")

    @property
    def log_path(self):
        return os.path.join(self.dir, "maillog")

    # -- lifecycle -----------------------------------------------------------
    @staticmethod
    def check_available():
        """Raises PostfixUnavailable when Postfix cannot run here at all."""
        for b in (POSTFIX, POSTCONF, POSTQUEUE, SENDMAIL):
            if not os.access(b, os.X_OK):
                raise PostfixUnavailable("%s is missing: install the Debian package postfix (make deps)" % b)
        if os.geteuid() != 0:
            raise PostfixUnavailable("Postfix's master must start as root; these tests run as uid %d"
                                     % os.geteuid())
        try:
            import pwd
            pwd.getpwnam("postfix")
        except KeyError:
            raise PostfixUnavailable("no `postfix` user: the Debian package postfix is not "
                                     "properly installed (make deps)") from None

    def start(self, timeout=WAIT):
        self.check_available()
        # A short path: Postfix's Unix sockets live under the queue directory.
        self.dir = tempfile.mkdtemp(prefix="roost-pfx-", dir="/tmp")
        os.chmod(self.dir, 0o755)  # the postfix user reaches data/ through it
        os.mkdir(self.conf)
        os.mkdir(os.path.join(self.dir, "queue"), 0o755)  # post-install fills it, data/ too
        if self.listen:
            self.port = free_port()
        settings = MAIN_CF.format(
            conf=self.conf, queue=os.path.join(self.dir, "queue"), data=os.path.join(self.dir, "data"),
            dir=self.dir, log=self.log_path, hostname=self.hostname,
            domain=self.hostname.split(".", 1)[-1],
            syslog_name="postfix-roost-%s" % os.path.basename(self.dir)[len("roost-pfx-"):],
            relay_host=self.relay_host, relay_port=self.relay_port)
        settings += "".join("%s = %s\n" % kv for kv in self.extra.items())
        with open(os.path.join(self.conf, "main.cf"), "w") as f:
            f.write(settings)
        master = MASTER_CF
        if self.listen:
            master += MASTER_CF_LISTENER.format(addr=LOOPBACK, port=self.port)
        with open(os.path.join(self.conf, "master.cf"), "w") as f:
            f.write(master)
        # start-fg keeps the master our descendant: postfix-script waits for
        # `master -s`, which leads its own process group. (`postfix start`
        # would detach it to PID 1, which here does not reap.) The reaper
        # above it adopts the master's children when the master exits first
        # and exits only when every one of them is gone and reaped.
        self.popen = subprocess.Popen(
            [sys.executable, "-c", _REAPER, POSTFIX, "-c", self.conf, "start-fg"],
            stdin=subprocess.DEVNULL,
            stdout=open(os.path.join(self.dir, "start-fg.out"), "wb"), stderr=subprocess.STDOUT,
            env=self._env())
        self._started = True
        pidfile = os.path.join(self.dir, "queue", "pid", "master.pid")

        def ready():
            if self.popen.poll() is not None:
                raise RuntimeError("postfix start-fg exited with %s:\n%s" % (
                    self.popen.returncode, self._startup_output()))
            try:
                with open(pidfile) as f:
                    pid = int(f.read().strip() or 0)
            except (FileNotFoundError, ValueError):
                return False
            if pid <= 0 or not _alive(pid):
                return False
            self.master_pid = pid
            return "daemon started" in self.log()
        try:
            # The master binds its inet listener before it logs this.
            wait_until(ready, timeout=timeout, what="the Postfix master in %s" % self.dir)
        except BaseException:
            self.close(force_keep=True)
            raise
        return self

    def _startup_output(self):
        out = ""
        for name in ("start-fg.out", "maillog"):
            try:
                with open(os.path.join(self.dir, name), errors="replace") as f:
                    out += "--- %s\n%s" % (name, f.read())
            except FileNotFoundError:
                pass
        return out

    def _env(self):
        env = dict(os.environ)
        env["MAIL_CONFIG"] = self.conf
        env.pop("MAIL_DEBUG", None)
        return env

    def stop(self, timeout=WAIT):
        """Stops the master and every process of its group; when it returns,
        nothing of this instance is left running (or unreaped)."""
        if not self._started:
            return
        self._started = False
        try:
            subprocess.run([POSTFIX, "-c", self.conf, "stop"], stdin=subprocess.DEVNULL,
                           capture_output=True, timeout=timeout, env=self._env())
        except subprocess.TimeoutExpired:
            pass
        try:
            self.popen.wait(timeout=timeout)  # the reaper: every Postfix process is gone
            return
        except subprocess.TimeoutExpired:
            pass
        if self.master_pid:
            try:
                os.killpg(self.master_pid, signal.SIGKILL)  # the master's own group, by its recorded pid
            except ProcessLookupError:
                pass
        try:
            self.popen.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.popen.kill()
            self.popen.wait(timeout=timeout)

    def close(self, force_keep=False):
        try:
            self.stop()
        finally:
            if self.dir and not (self.keep or force_keep):
                shutil.rmtree(self.dir, ignore_errors=True)

    def __enter__(self):
        if not self._started:
            self.start()
        return self

    def __exit__(self, et, ev, tb):
        if et is not None:
            self.keep = True
        self.close()

    # -- submission ----------------------------------------------------------
    def send(self, msg, sender, rcpts, timeout=WAIT):
        """Submits msg (bytes, CRLF or LF lines) with this instance's sendmail -i -f sender rcpts."""
        r = subprocess.run([SENDMAIL, "-C", self.conf, "-i", "-f", sender, "--"] + list(rcpts),
                           input=msg, capture_output=True, timeout=timeout, env=self._env())
        if r.returncode != 0:
            raise RuntimeError("sendmail exited with %d: %s\n%s" % (
                r.returncode, r.stderr.decode(errors="replace"), self.log_tail()))

    def send_smtp(self, msg, sender, rcpts, timeout=WAIT, **kw):
        """Submits msg over SMTP to this instance's own listener (Postfix(listen=True))."""
        assert self.listen, "Postfix(listen=True) is needed for SMTP submission"
        with smtplib.SMTP(LOOPBACK, self.port, local_hostname="client.test", timeout=timeout) as s:
            s.sendmail(sender, list(rcpts), msg, **kw)

    # -- the queue -----------------------------------------------------------
    def queue(self):
        """The queue as postqueue -j: one dict per message (queue_name, queue_id, recipients
        with delay_reason, ...)."""
        r = subprocess.run([POSTQUEUE, "-c", self.conf, "-j"], capture_output=True, timeout=WAIT,
                           env=self._env())
        if r.returncode != 0:
            raise RuntimeError("postqueue -j failed: %s" % r.stderr.decode(errors="replace"))
        return [json.loads(line) for line in r.stdout.decode().splitlines() if line.strip()]

    def flush(self):
        """postqueue -f: retry every deferred message now."""
        subprocess.run([POSTQUEUE, "-c", self.conf, "-f"], capture_output=True, timeout=WAIT,
                       env=self._env())

    def wait_empty(self, timeout=WAIT):
        """Waits until the queue is empty; fails showing the queue and the log.
        Asks for a queue run (postqueue -f) every 3 s meanwhile: with its 1 s
        backoff Postfix retries by itself, but a message deferred while it was
        still being delivered is logged "skipped, still being delivered" and
        may then be left alone for minutes."""
        deadline = time.monotonic() + timeout
        next_flush = time.monotonic() + 3
        while True:
            q = self.queue()
            if not q:
                return
            if time.monotonic() >= next_flush:
                self.flush()
                next_flush = time.monotonic() + 3
            if time.monotonic() >= deadline:
                raise AssertionError("Postfix's queue is not empty after %.0f s: %d message(s)\n%s\n"
                                     "--- deferred reasons: %s\n--- log (%s), last lines:\n%s" % (
                                         timeout, len(q), "\n".join(json.dumps(m) for m in q[:10]),
                                         self.deferred_reasons()[-10:], self.log_path,
                                         self.log_tail()))
            time.sleep(0.2)

    # -- the log -------------------------------------------------------------
    def log(self):
        try:
            with open(self.log_path, errors="replace") as f:
                return f.read()
        except FileNotFoundError:
            return ""

    def log_tail(self, n=60):
        return "\n".join(self.log().splitlines()[-n:])

    def deliveries(self):
        """Every delivery attempt in the log: dicts with qid, rcpt, relay, status, reason."""
        out = []
        for line in self.log().splitlines():
            m = _STATUS_RE.search(line)
            if m:
                out.append(m.groupdict())
        return out

    def deferred_reasons(self):
        """(queue id, recipient, reason) of every deferral in the log, oldest first."""
        return [(d["qid"], d["rcpt"], d["reason"]) for d in self.deliveries() if d["status"] == "deferred"]

    def tls_connections(self):
        """The log's 'TLS connection established' lines (smtp_tls_loglevel = 1)."""
        return [line for line in self.log().splitlines() if "TLS connection established" in line]


def strip_received(data, n=1):
    """data without its first n header fields if they are Received (continuation lines
    included): what a message looked like before n hops each prepended one."""
    for _ in range(n):
        if not data[:9].lower() == b"received:":
            raise AssertionError("no Received header first: %r" % data[:200])
        end = 0
        while True:
            nl = data.index(b"\n", end) + 1
            end = nl
            if data[end:end + 1] not in (b" ", b"\t"):
                break
        data = data[end:]
    return data


# ---------------------------------------------------------------------------
# swaks

def swaks(port, *args, server=LOOPBACK, helo="swaks.test", timeout=WAIT):
    """Runs swaks --server SERVER --port PORT --helo HELO ARGS...: (exit code, transcript)."""
    if not os.access(SWAKS, os.X_OK):
        raise FileNotFoundError("%s is missing: install the Debian package swaks (make deps)" % SWAKS)
    r = subprocess.run([SWAKS, "--server", server, "--port", str(port), "--helo", helo,
                        "--timeout", str(int(timeout))] + list(args),
                       stdin=subprocess.DEVNULL, capture_output=True, timeout=timeout * 2)
    return r.returncode, (r.stdout + r.stderr).decode(errors="replace")


# ---------------------------------------------------------------------------
# The SMTP sink

@dataclass
class Transaction:
    """One mail transaction the sink saw through to the end of DATA."""
    session: int
    peer: tuple
    helo: str
    esmtp: bool
    tls: str          # "" in plain text, else the TLS version ("TLSv1.3")
    mail_from: str    # the reverse path, without <>
    mail_params: list
    rcpts: list
    data: bytes = b""  # dot-unstuffed, CRLF line ends as received, without the final .CRLF
    reply: str = ""    # what the sink answered at the end of DATA
    accepted: bool = False


@dataclass
class Session:
    id: int
    peer: tuple
    log: list = field(default_factory=list)  # ("C"|"S", line) — DATA contents left out
    tls: str = ""
    error: str = ""


class _Reader:
    """Line reader over a socket that can be swapped for its TLS wrapper."""

    def __init__(self, sock):
        self.sock = sock
        self.buf = bytearray()
        self.pos = 0

    def pending(self):
        return len(self.buf) - self.pos

    def drop_pending(self):
        self.buf, self.pos = bytearray(), 0

    def readline(self, limit=1 << 20):
        while True:
            i = self.buf.find(b"\n", self.pos)
            if i >= 0:
                line = bytes(self.buf[self.pos:i + 1])
                self.pos = i + 1
                if self.pos > 65536 and self.pos * 2 > len(self.buf):
                    del self.buf[:self.pos]
                    self.pos = 0
                return line
            if len(self.buf) - self.pos > limit:
                raise ValueError("line longer than %d bytes" % limit)
            chunk = self.sock.recv(65536)
            if not chunk:
                return None
            self.buf += chunk


class Sink:
    """A small ESMTP server on 127.0.0.1:<free port> that records what it receives.

    policy(stage, txn, arg) -> None (the normal reply) or a reply line to send
    instead ("451 4.3.0 try again"); stages: "mail" (arg: the reverse path),
    "rcpt" (arg: the recipient), "data" (before 354), "data_end" (arg: the
    data). It runs in the session's thread; a 4xx or 5xx at "data_end" is
    recorded with accepted=False.
    """

    def __init__(self, tls=False, hostname="sink.test", policy=None, size=50 * 1024 * 1024,
                 smtputf8=True, eightbitmime=True, directory=None):
        self.hostname = hostname
        self.policy = policy
        self.size = size
        self.smtputf8 = smtputf8
        self.eightbitmime = eightbitmime
        self.offer_tls = bool(tls)
        self._own_dir = directory is None
        self.dir = directory or tempfile.mkdtemp(prefix="roost-sink-")
        self.ctx = None
        if tls:
            self.cert, self.key = make_cert(self.dir, hostname, "sink")
            self.ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            self.ctx.minimum_version = ssl.TLSVersion.TLSv1_2
            self.ctx.load_cert_chain(self.cert, self.key)
        self.lock = threading.Lock()
        self.cond = threading.Condition(self.lock)
        self.transactions = []
        self.sessions = []
        self._socks = set()
        self.server = None
        self.thread = None
        self.port = None

    # -- lifecycle -----------------------------------------------------------
    def start(self):
        sink = self

        class Handler(socketserver.BaseRequestHandler):
            def handle(self):
                sink._session(self.request, self.client_address)

        class Server(socketserver.ThreadingTCPServer):
            daemon_threads = True
            allow_reuse_address = True
            request_queue_size = 128

        self.server = Server((LOOPBACK, 0), Handler)
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.1},
                                       name="sink-%d" % self.port, daemon=True)
        self.thread.start()
        return self

    def stop(self):
        if self.server is None:
            return
        self.server.shutdown()
        self.server.server_close()
        with self.lock:
            socks = list(self._socks)
        for s in socks:
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        self.server = None
        if self._own_dir:
            shutil.rmtree(self.dir, ignore_errors=True)

    def __enter__(self):
        if self.server is None:
            self.start()
        return self

    def __exit__(self, *exc):
        self.stop()

    # -- results -------------------------------------------------------------
    def received(self):
        """Accepted transactions, in order of acceptance."""
        with self.lock:
            return [t for t in self.transactions if t.accepted]

    def wait_for(self, n, timeout=WAIT):
        """Waits for n accepted transactions; returns them."""
        deadline = time.monotonic() + timeout
        with self.cond:
            while True:
                got = [t for t in self.transactions if t.accepted]
                if len(got) >= n:
                    return got
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError("the sink got %d of %d messages in %.0f s" % (len(got), n, timeout))
                self.cond.wait(min(left, 0.5))

    def clear(self):
        with self.lock:
            self.transactions.clear()
            self.sessions.clear()

    # -- the protocol --------------------------------------------------------
    def _session(self, sock, peer):
        sock.settimeout(WAIT * 5)
        with self.lock:
            sess = Session(len(self.sessions) + 1, peer)
            self.sessions.append(sess)
            self._socks.add(sock)
        r = _Reader(sock)

        def send(line):
            sess.log.append(("S", line))
            r.sock.sendall(line.encode() + b"\r\n")

        try:
            self._dialog(sess, r, send)
        except (OSError, ValueError, ssl.SSLError) as e:
            sess.error = repr(e)
        finally:
            with self.lock:
                self._socks.discard(sock)
            try:
                r.sock.close()
            except OSError:
                pass

    def _ext(self, sess):
        ext = ["PIPELINING", "SIZE %d" % self.size, "ENHANCEDSTATUSCODES"]
        if self.eightbitmime:
            ext.append("8BITMIME")
        if self.smtputf8:
            ext.append("SMTPUTF8")
        if self.ctx is not None and self.offer_tls and not sess.tls:
            ext.append("STARTTLS")
        return ext

    def _dialog(self, sess, r, send):
        send("220 %s ESMTP Roost test sink" % self.hostname)
        helo, esmtp, txn = "", False, None
        while True:
            raw = r.readline()
            if raw is None:
                return
            line = raw.rstrip(b"\r\n").decode("utf-8", errors="surrogateescape")
            sess.log.append(("C", line))
            verb, _, arg = line.partition(" ")
            verb = verb.upper()
            if verb in ("EHLO", "HELO"):
                helo, esmtp, txn = arg.strip(), verb == "EHLO", None
                if esmtp:
                    lines = [self.hostname] + self._ext(sess)
                    for i, text in enumerate(lines):
                        send("250%s%s" % ("-" if i < len(lines) - 1 else " ", text))
                else:
                    send("250 %s" % self.hostname)
            elif verb == "STARTTLS":
                if self.ctx is None or not self.offer_tls or sess.tls or not esmtp:
                    send("502 5.5.1 STARTTLS not available")
                    continue
                send("220 2.0.0 Ready to start TLS")
                r.drop_pending()  # RFC 3207: nothing pipelined before TLS survives it
                r.sock = self.ctx.wrap_socket(r.sock, server_side=True)
                sess.tls = r.sock.version() or "TLS"
                helo, esmtp, txn = "", False, None
            elif verb == "MAIL":
                if not helo:
                    send("503 5.5.1 EHLO or HELO first")
                    continue
                if txn is not None:
                    send("503 5.5.1 nested MAIL command")
                    continue
                m = re.match(r"(?i)FROM:\s*<([^>]*)>\s*(.*)$", arg)
                if not m:
                    send("501 5.5.4 syntax: MAIL FROM:<address>")
                    continue
                params = m.group(2).split()
                t = Transaction(sess.id, sess.peer, helo, esmtp, sess.tls, m.group(1), params, [])
                rep = self.policy and self.policy("mail", t, m.group(1))
                if rep:
                    send(rep)
                    continue
                txn = t
                send("250 2.1.0 Ok")
            elif verb == "RCPT":
                if txn is None:
                    send("503 5.5.1 MAIL first")
                    continue
                m = re.match(r"(?i)TO:\s*<([^>]*)>", arg)
                if not m:
                    send("501 5.5.4 syntax: RCPT TO:<address>")
                    continue
                rep = self.policy and self.policy("rcpt", txn, m.group(1))
                if rep:
                    send(rep)
                    continue
                txn.rcpts.append(m.group(1))
                send("250 2.1.5 Ok")
            elif verb == "DATA":
                if txn is None or not txn.rcpts:
                    send("503 5.5.1 valid RCPT first" if txn is not None else "503 5.5.1 MAIL first")
                    continue
                rep = self.policy and self.policy("data", txn, None)
                if rep:
                    send(rep)
                    txn = None
                    continue
                send("354 End data with <CR><LF>.<CR><LF>")
                chunks = []
                while True:
                    d = r.readline()
                    if d is None:
                        return  # gone mid-DATA: nothing recorded
                    if d == b".\r\n":
                        break
                    chunks.append(d[1:] if d.startswith(b".") else d)
                txn.data = b"".join(chunks)
                sess.log.append(("C", "<%d bytes of data>" % len(txn.data)))
                rep = self.policy and self.policy("data_end", txn, txn.data)
                with self.cond:
                    txn.reply = rep or "250 2.0.0 Ok: queued as S%d" % (len(self.transactions) + 1)
                    txn.accepted = txn.reply.startswith("2")
                    self.transactions.append(txn)
                    self.cond.notify_all()
                send(txn.reply)
                txn = None
            elif verb == "RSET":
                txn = None
                send("250 2.0.0 Ok")
            elif verb == "NOOP":
                send("250 2.0.0 Ok")
            elif verb == "VRFY":
                send("252 2.5.2 Cannot VRFY user")
            elif verb == "QUIT":
                send("221 2.0.0 Bye")
                return
            else:
                send("500 5.5.2 command not recognized")
