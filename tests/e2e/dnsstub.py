"""
dnsstub.py — a small authoritative-style DNS server for the tests, on
127.0.0.1 and one free port, over UDP and TCP (python3-dnslib for the
packets, plain sockets and threads for the rest).

    stub = StubDNS()
    stub.load(zone_text)            # zone-file lines (dnslib.RR.fromZone)
    stub.servfail.add("example.org")   # names answered SERVFAIL
    stub.drop.add("example.org")       # names never answered (timeouts)
    stub.truncate.add("x.example.org") # UDP answers with TC set and no records
    stub.start(); ... stub.port ... stub.queries ...; stub.close()

Answers: the records of the asked name and type (CNAMEs of the name too),
NXDOMAIN if no record at all has that name, NOERROR with no data otherwise.
Every query is logged in stub.queries as (proto, name, type name).
"""

import socket
import struct
import threading

from dnslib import QTYPE, RCODE, DNSRecord, RR


class StubDNS:
    def __init__(self):
        self.records = []
        self.servfail = set()
        self.drop = set()
        self.truncate = set()
        self.queries = []
        self.port = None
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._threads = []
        self._udp = self._tcp = None

    @staticmethod
    def _key(name):
        return str(name).lower().rstrip(".")

    def load(self, zone_text):
        """Adds every record of zone_text (comment lines are skipped)."""
        self.records.extend(RR.fromZone(zone_text))
        return self

    def remove(self, name, rtype=None, pred=None):
        """Drops the records of name (and type, and for which pred(rr) holds)."""
        key = self._key(name)
        self.records = [rr for rr in self.records
                        if not (self._key(rr.rname) == key
                                and (rtype is None or QTYPE[rr.rtype] == rtype)
                                and (pred is None or pred(rr)))]

    # ---- serving ----

    def start(self):
        # UDP and TCP on the same free port: pick it over UDP, then try TCP.
        for _ in range(50):
            udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            udp.bind(("127.0.0.1", 0))
            port = udp.getsockname()[1]
            tcp = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            tcp.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                tcp.bind(("127.0.0.1", port))
            except OSError:
                udp.close()
                tcp.close()
                continue
            tcp.listen(16)
            self._udp, self._tcp, self.port = udp, tcp, port
            break
        else:
            raise RuntimeError("no free port for UDP and TCP")
        for fn in (self._serve_udp, self._serve_tcp):
            t = threading.Thread(target=fn, daemon=True)
            t.start()
            self._threads.append(t)
        return self

    def close(self):
        self._stop.set()
        for s in (self._udp, self._tcp):
            if s is not None:
                s.close()
        for t in self._threads:
            t.join(timeout=5)

    def answer(self, data, proto):
        """The reply bytes for one query packet, or None to stay silent."""
        try:
            req = DNSRecord.parse(data)
        except Exception:  # noqa: BLE001 - a broken query gets no answer
            return None
        name, qtype = self._key(req.q.qname), req.q.qtype
        with self._lock:
            self.queries.append((proto, name, QTYPE.get(qtype, str(qtype))))
        if name in self.drop:
            return None
        reply = req.reply()
        if name in self.servfail:
            reply.header.rcode = RCODE.SERVFAIL
            return reply.pack()
        same = [rr for rr in self.records if self._key(rr.rname) == name]
        if not same:
            reply.header.rcode = RCODE.NXDOMAIN
            return reply.pack()
        if proto == "udp" and name in self.truncate:
            reply.header.tc = 1
            return reply.pack()
        for rr in same:
            if rr.rtype in (qtype, QTYPE.CNAME):
                reply.add_answer(rr)
        return reply.pack()

    def _serve_udp(self):
        self._udp.settimeout(0.2)
        while not self._stop.is_set():
            try:
                data, peer = self._udp.recvfrom(65535)
            except socket.timeout:
                continue
            except OSError:
                return
            out = self.answer(data, "udp")
            if out is not None:
                try:
                    self._udp.sendto(out, peer)
                except OSError:
                    pass

    def _serve_tcp(self):
        self._tcp.settimeout(0.2)
        while not self._stop.is_set():
            try:
                conn, _ = self._tcp.accept()
            except socket.timeout:
                continue
            except OSError:
                return
            t = threading.Thread(target=self._tcp_conn, args=(conn,), daemon=True)
            t.start()

    def _tcp_conn(self, conn):
        conn.settimeout(10)
        try:
            with conn:
                while True:
                    head = self._recv_all(conn, 2)
                    if head is None:
                        return
                    data = self._recv_all(conn, struct.unpack("!H", head)[0])
                    if data is None:
                        return
                    out = self.answer(data, "tcp")
                    if out is None:
                        return
                    conn.sendall(struct.pack("!H", len(out)) + out)
        except OSError:
            pass

    @staticmethod
    def _recv_all(conn, n):
        buf = b""
        while len(buf) < n:
            chunk = conn.recv(n - len(buf))
            if not chunk:
                return None
            buf += chunk
        return buf
