#!/usr/bin/python3
"""gen_expected.py — Dovecot's answers for the sample messages in this directory.

Starts a private Dovecot (own config, base_dir, Maildir and log under a temp
dir, IMAP only, on 127.0.0.1:PORT), APPENDs every NAME.eml to a fresh mailbox,
FETCHes ENVELOPE, BODY, BODYSTRUCTURE and the BODY.PEEK[section]s of SECTIONS,
and writes NAME.expected. Stops Dovecot by its master pid. Run as root, once,
when a sample is added (Debian package dovecot-imapd); the output is test data
that tests/unit/test_mimefmt.c compares with our own answers, so neither CI nor
the tests need Dovecot.

Format of NAME.expected (byte-exact, values may hold CR, LF, 8-bit bytes):
  one record per item: "ITEM LEN\\n" then LEN bytes then "\\n"; ENVELOPE, BODY
  and BODYSTRUCTURE hold the value exactly as on the wire; a BODY[section]
  holds the section's bytes (literal or quoted string decoded), or the record
  is "BODY[section] NIL" when Dovecot answered NIL.

usage: gen_expected.py [--port N] [NAME.eml ...]
"""
import glob
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
SECTIONS = ["HEADER", "TEXT", "HEADER.FIELDS (From SUBJECT x-nothing)",
            "HEADER.FIELDS.NOT (from Subject)", "1", "1.MIME", "2", "2.MIME",
            "1.1", "1.2", "2.1", "1.HEADER", "1.TEXT", "2.HEADER", "2.TEXT",
            "2.HEADER.FIELDS (subject)", "3", "1.1.1", "2.1.MIME"]


def start_dovecot(tmp, port):
    os.makedirs(f"{tmp}/run")
    os.makedirs(f"{tmp}/state")
    os.makedirs(f"{tmp}/home/t")
    shutil.chown(f"{tmp}/home/t", 65534, 65534)
    os.chmod(tmp, 0o755)
    with open(f"{tmp}/dovecot.conf", "w") as f:
        f.write(f"""base_dir = {tmp}/run
instance_name = roost-mime-gen
state_dir = {tmp}/state
log_path = {tmp}/dovecot.log
protocols = imap
listen = 127.0.0.1
ssl = no
disable_plaintext_auth = no
auth_mechanisms = plain login
default_internal_user = dovecot
default_login_user = dovenull
mail_location = maildir:~/Maildir
mail_uid = 65534
mail_gid = 65534
first_valid_uid = 100
passdb {{
  driver = static
  args = password=t
}}
userdb {{
  driver = static
  args = uid=65534 gid=65534 home={tmp}/home/%u
}}
service imap-login {{
  inet_listener imap {{
    address = 127.0.0.1
    port = {port}
  }}
  inet_listener imaps {{
    port = 0
  }}
}}
""")
    subprocess.run(["/usr/sbin/dovecot", "-c", f"{tmp}/dovecot.conf"], check=True)
    for _ in range(100):
        if os.path.exists(f"{tmp}/run/master.pid") and os.path.getsize(f"{tmp}/run/master.pid"):
            break
        time.sleep(0.1)
    pid = int(open(f"{tmp}/run/master.pid").read().strip())
    for _ in range(100):
        try:
            socket.create_connection(("127.0.0.1", port), 0.2).close()
            break
        except OSError:
            time.sleep(0.1)
    return pid


class Imap:
    def __init__(self, port):
        self.s = socket.create_connection(("127.0.0.1", port), 30)
        self.buf = b""
        self.n = 0
        self.line()  # greeting

    def _fill(self):
        d = self.s.recv(65536)
        if not d:
            raise EOFError("server closed")
        self.buf += d

    def line(self):
        while b"\r\n" not in self.buf:
            self._fill()
        i = self.buf.index(b"\r\n") + 2
        l, self.buf = self.buf[:i], self.buf[i:]
        return l

    def exact(self, n):
        while len(self.buf) < n:
            self._fill()
        d, self.buf = self.buf[:n], self.buf[n:]
        return d

    def response(self):
        """One whole response (line plus its literals)."""
        r = self.line()
        while True:
            m = re.search(rb"\{(\d+)\}\r\n$", r)
            if not m:
                return r
            r += self.exact(int(m.group(1)))
            r += self.line()

    def cmd(self, text, literal=None):
        self.n += 1
        tag = b"g%d" % self.n
        if literal is None:
            self.s.sendall(tag + b" " + text + b"\r\n")
        else:
            self.s.sendall(tag + b" " + text + b" {%d}\r\n" % len(literal))
            r = self.line()
            if not r.startswith(b"+"):
                raise RuntimeError(r)
            self.s.sendall(literal + b"\r\n")
        untagged = []
        while True:
            r = self.response()
            if r.startswith(tag + b" "):
                return r, untagged
            untagged.append(r)


def fetch_value(imap, item):
    status, untagged = imap.cmd(b"FETCH 1 (" + item + b")")
    if b" OK" not in status[:10]:
        return None, status
    for r in untagged:
        m = re.match(rb"\* 1 FETCH \(", r)
        if not m:
            continue
        rest = r[m.end():]
        assert rest.endswith(b")\r\n"), r
        rest = rest[:-3]
        if item.startswith(b"BODY.PEEK["):
            j = rest.index(b"] ") + 2
            return rest[j:], status
        name = item.split(b" ")[0]
        assert rest.startswith(name + b" "), (item, rest[:40])
        return rest[len(name) + 1:], status
    return None, status


def section_bytes(v):
    if v == b"NIL":
        return None
    m = re.match(rb"\{(\d+)\}\r\n", v)
    if m:
        d = v[m.end():]
        assert len(d) == int(m.group(1))
        return d
    assert v.startswith(b'"') and v.endswith(b'"'), v
    return re.sub(rb'\\(.)', rb"\1", v[1:-1])


def generate(imap, path):
    data = open(path, "rb").read()
    imap.cmd(b"DELETE t")
    imap.cmd(b"CREATE t")
    st, _ = imap.cmd(b"APPEND t", data)
    assert b" OK" in st[:10], st
    imap.cmd(b"SELECT t")
    out = []
    for item in (b"ENVELOPE", b"BODY", b"BODYSTRUCTURE"):
        v, st = fetch_value(imap, item)
        assert v is not None, (path, item, st)
        out.append(b"%s %d\n%s\n" % (item, len(v), v))
    for sec in SECTIONS:
        v, st = fetch_value(imap, b"BODY.PEEK[" + sec.encode() + b"]")
        assert v is not None, (path, sec, st)
        d = section_bytes(v)
        name = b"BODY[" + sec.encode() + b"]"
        out.append(name + b" NIL\n" if d is None else b"%s %d\n%s\n" % (name, len(d), d))
    imap.cmd(b"CLOSE")
    with open(path[:-4] + ".expected", "wb") as f:
        f.write(b"# Dovecot's answers for %s, written by gen_expected.py; do not edit\n"
                % os.path.basename(path).encode())
        f.write(b"".join(out))


def main():
    args = sys.argv[1:]
    port = 10243
    if args[:1] == ["--port"]:
        port = int(args[1])
        args = args[2:]
    files = args or sorted(glob.glob(os.path.join(HERE, "*.eml")))
    tmp = tempfile.mkdtemp(prefix="roost-mime-dovecot.")
    pid = start_dovecot(tmp, port)
    try:
        imap = Imap(port)
        st, _ = imap.cmd(b"LOGIN t t")
        assert b" OK" in st[:10], st
        for f in files:
            generate(imap, f)
            print("wrote", os.path.basename(f)[:-4] + ".expected")
        imap.cmd(b"LOGOUT")
    finally:
        os.kill(pid, 15)
        for _ in range(50):
            try:
                os.kill(pid, 0)
            except ProcessLookupError:
                break
            time.sleep(0.1)
        ver = subprocess.run(["/usr/sbin/dovecot", "--version"], capture_output=True, text=True).stdout
        print("dovecot", ver.strip())
        shutil.rmtree(tmp)


if __name__ == "__main__":
    main()
