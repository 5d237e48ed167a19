"""
smtp.py — helpers for the smtpd end-to-end tests (test_smtpd.py).

    b = with_users(bus, "alice@example.org")       # store.py: storaged + users
    p = start_smtpd(b)                             # smtpd on 127.0.0.1:<free port>
    c = Raw(b)                                     # a raw socket client
    c.greeting(); c.cmd("EHLO x") ...

start_smtpd makes a self-signed certificate with `openssl req` in the
bus's temp dir (STARTTLS), picks a free loopback port (bind to port 0),
starts smtpd on the test's bus and waits until it answers a greeting and is
registered as smtpd.control. Everything runs on 127.0.0.1 only.
"""

import os
import socket
import subprocess
import time

import bus as buslib
import mta
from bus import WAIT


def free_port():
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def make_cert(dirpath, cn="mx.example.org"):
    """A self-signed RSA pair in dirpath: (cert.pem, key.pem)."""
    return mta.make_cert(dirpath, cn, "cert", key_file="key.pem", rsa=True)


def start_smtpd(b, env=None, greet_delay_ms=50, tls=True, wait=True, preexec_fn=None):
    """Starts smtpd on bus b; b.smtp_port is its port, returns the Proc."""
    port = free_port()
    e = {"ROOST_LISTEN": "127.0.0.1", "ROOST_SMTP_PORT": str(port),
         "ROOST_HOSTNAME": "mx.example.org", "ROOST_SMTP_GREET_DELAY_MS": str(greet_delay_ms)}
    if tls:
        tdir = os.path.join(b.tmp, "tls")
        os.makedirs(tdir, exist_ok=True)
        if not os.path.exists(os.path.join(tdir, "cert.pem")):
            make_cert(tdir)
        e["ROOST_TLS_CERT"] = os.path.join(tdir, "cert.pem")
        e["ROOST_TLS_KEY"] = os.path.join(tdir, "key.pem")
    e.update(env or {})
    p = b.spawn("smtpd", [buslib.binary("smtpd")], env=e, preexec_fn=preexec_fn)
    b.smtp_port = port
    b.smtpd = p
    if wait:
        wait_smtpd(b, p)
    return p


def wait_smtpd(b, p):
    def ready():
        if not p.alive():
            raise RuntimeError("smtpd exited with %s:\n%s" % (p.popen.returncode, p.log()))
        return p.pid in b.worker_pids("smtpd.control")
    buslib.wait_until(ready, interval=0.2, what="smtpd registered with busd")

    def answers():
        with socket.create_connection(("127.0.0.1", b.smtp_port), timeout=WAIT) as s:
            return s.recv(100).startswith(b"220 ")
    buslib.wait_until(answers, interval=0.2, what="smtpd greeting")


class Raw:
    """A raw SMTP client over one socket: exact bytes in and out."""

    def __init__(self, b, timeout=WAIT):
        self.s = socket.create_connection(("127.0.0.1", b.smtp_port), timeout=timeout)
        self.buf = b""

    def close(self):
        try:
            self.s.close()
        except OSError:
            pass

    def __enter__(self):
        return self

    def __exit__(self, *a):
        self.close()

    def send(self, data):
        if isinstance(data, str):
            data = data.encode()
        self.s.sendall(data)

    def line(self):
        while b"\r\n" not in self.buf:
            chunk = self.s.recv(65536)
            if not chunk:
                raise EOFError("connection closed; buffered %r" % self.buf)
            self.buf += chunk
        ln, self.buf = self.buf.split(b"\r\n", 1)
        return ln.decode("utf-8", "replace")

    def reply(self):
        """One whole reply (multi-line too): (code, [texts])."""
        texts = []
        while True:
            ln = self.line()
            texts.append(ln[4:])
            if len(ln) < 4 or ln[3] != "-":
                return int(ln[:3]), texts

    def code(self):
        return self.reply()[0]

    def expect(self, code, needle=None):
        c, texts = self.reply()
        assert c == code, "want %d, got %d %s" % (code, c, texts)
        if needle is not None:
            assert any(needle in t for t in texts), (needle, texts)
        return texts

    def cmd(self, line, code=None, needle=None):
        self.send(line + "\r\n")
        if code is None:
            return self.reply()
        return self.expect(code, needle)

    def greeting(self):
        return self.expect(220)

    def ehlo(self, name="client.example.net"):
        self.greeting()
        return self.cmd("EHLO %s" % name, 250)

    def closed(self, timeout=WAIT):
        """True once the server has closed the connection."""
        self.s.settimeout(timeout)
        try:
            while True:
                chunk = self.s.recv(65536)
                if not chunk:
                    return True
                self.buf += chunk
        except (ConnectionResetError, BrokenPipeError):
            return True
        except socket.timeout:
            return False


def wait_port_free_of(b, pid, timeout=WAIT):
    """Waits until pid no longer runs (used after a kill)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return
        time.sleep(0.1)


def message_get(b, address, uid, mailbox="INBOX"):
    """`roostctl message get` as bytes (exact: no text decoding)."""
    r = subprocess.run([buslib.binary("roostctl"), "--timeout", "30000", "message", "get", address,
                        mailbox, str(uid)], env=b.env, cwd=b.tmp, stdout=subprocess.PIPE,
                       stderr=subprocess.PIPE, timeout=WAIT * 2)
    assert r.returncode == 0, r.stderr
    return r.stdout


def strip_received(data):
    """Splits off our Received field (the first field, folded): (field, rest)."""
    assert data.startswith(b"Received: from "), data[:200]
    i = 0
    while True:
        j = data.index(b"\r\n", i)
        if data[j + 2:j + 3] not in (b"\t", b" "):
            return data[:j + 2], data[j + 2:]
        i = j + 2
