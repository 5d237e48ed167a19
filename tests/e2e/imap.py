"""
imap.py — helpers for the imapd end-to-end tests (test_imapd.py).

    b = with_users(bus, "alice@example.org")       # store.py: storaged + users
    start_imapd(b)                                 # imapd on 127.0.0.1:<free ports>
    c = login(b)                                   # imaplib over STARTTLS, logged in
    r = Raw(b)                                     # a raw socket client: exact bytes

start_imapd makes (or reuses) the self-signed certificate smtp.make_cert
writes in the bus's temp dir, picks two free loopback ports (143 and 993
stand-ins), starts imapd on the test's bus and waits until it is registered
as imapd.control and answers a greeting on both ports.
"""

import imaplib
import os
import socket
import ssl

import bus as buslib
from bus import WAIT
from smtp import free_port, make_cert
from test_accounts import PASSWORD


def tls_context():
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    return ctx


def start_imapd(b, env=None, wait=True):
    """Starts imapd on bus b; b.imap_port / b.imaps_port are its ports."""
    port, sport = free_port(), free_port()
    tdir = os.path.join(b.tmp, "tls")
    os.makedirs(tdir, exist_ok=True)
    if not os.path.exists(os.path.join(tdir, "cert.pem")):
        make_cert(tdir)
    e = {"ROOST_LISTEN": "127.0.0.1", "ROOST_IMAP_PORT": str(port),
         "ROOST_IMAPS_PORT": str(sport), "ROOST_HOSTNAME": "mail.example.org",
         "ROOST_TLS_CERT": os.path.join(tdir, "cert.pem"),
         "ROOST_TLS_KEY": os.path.join(tdir, "key.pem")}
    e.update(env or {})
    p = b.spawn("imapd", [buslib.binary("imapd")], env=e)
    b.imap_port, b.imaps_port, b.imapd = port, sport, p
    if wait:
        wait_imapd(b, p)
    return p


def wait_imapd(b, p):
    def ready():
        if not p.alive():
            raise RuntimeError("imapd exited with %s:\n%s" % (p.popen.returncode, p.log()))
        return p.pid in b.worker_pids("imapd.control")
    buslib.wait_until(ready, interval=0.2, what="imapd registered with busd")

    def answers():
        with socket.create_connection(("127.0.0.1", b.imap_port), timeout=WAIT) as s:
            return s.recv(200).startswith(b"* OK ")
    buslib.wait_until(answers, interval=0.2, what="imapd greeting")


def client(b, tls=True):
    """imaplib on the STARTTLS port, TLS started (not logged in)."""
    c = imaplib.IMAP4("127.0.0.1", b.imap_port, timeout=WAIT)
    if tls:
        c.starttls(ssl_context=tls_context())
    return c


def login(b, user="alice@example.org", password=PASSWORD, implicit=False):
    if implicit:
        c = imaplib.IMAP4_SSL("127.0.0.1", b.imaps_port, ssl_context=tls_context(), timeout=WAIT)
    else:
        c = client(b)
    typ, _ = c.login(user, password)
    assert typ == "OK"
    return c


class Raw:
    """A raw IMAP client over one socket (optionally TLS): exact bytes."""

    def __init__(self, b, implicit=False, timeout=WAIT, greeting=True, source="127.0.0.1"):
        s = socket.create_connection(("127.0.0.1", b.imaps_port if implicit else b.imap_port),
                                     timeout=timeout, source_address=(source, 0))
        if implicit:
            s = tls_context().wrap_socket(s)
        self.s, self.buf = s, b""
        if greeting:
            assert self.line().startswith(b"* OK ")

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

    def starttls(self):
        self.send("st STARTTLS\r\n")
        assert self.until(b"st ").startswith(b"st OK")
        self.s = tls_context().wrap_socket(self.s)
        self.buf = b""

    def line(self):
        while b"\r\n" not in self.buf:
            chunk = self.s.recv(65536)
            if not chunk:
                raise EOFError("connection closed; buffered %r" % self.buf)
            self.buf += chunk
        ln, self.buf = self.buf.split(b"\r\n", 1)
        return ln

    def until(self, tag, lines=None):
        """Reads lines until the one starting with tag; returns it (the
        others are appended to lines if given)."""
        while True:
            ln = self.line()
            if ln.startswith(tag):
                return ln
            if lines is not None:
                lines.append(ln)

    def cmd(self, text, tag=b"t"):
        """Sends 'tag text'; returns (tagged line, untagged lines)."""
        if isinstance(tag, str):
            tag = tag.encode()
        self.send(tag + b" " + (text.encode() if isinstance(text, str) else text) + b"\r\n")
        out = []
        return self.until(tag + b" ", out), out

    def login(self, user="alice@example.org", password=PASSWORD):
        ln, _ = self.cmd('LOGIN %s "%s"' % (user, password), tag="lg")
        assert ln.startswith(b"lg OK"), ln

    def closed(self, timeout=WAIT):
        self.s.settimeout(timeout)
        try:
            while True:
                chunk = self.s.recv(65536)
                if not chunk:
                    return True
                self.buf += chunk
        except (ConnectionResetError, BrokenPipeError, ssl.SSLError):
            return True
        except socket.timeout:
            return False
