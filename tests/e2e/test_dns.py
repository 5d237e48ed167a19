"""
test_dns.py — roostctl dns-records and check-dns against a real DNS server
(dnsstub.StubDNS: python3-dnslib on 127.0.0.1, UDP and TCP), roostctl run
as a process with ROOST_RESOLVER pointing there.

The complete zone is what dns-records prints (fed to the stub as zone-file
lines) plus the PTR its comment asks for: what roostctl tells the operator
to publish must pass its own check. Each broken zone is that zone with one
record removed or changed, and check-dns must name it.
"""

import base64
import json
import os
import subprocess
import sys

import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
if HERE not in sys.path:
    sys.path.insert(0, HERE)

from bus import BIN  # noqa: E402

dnslib = pytest.importorskip("dnslib", reason="python3-dnslib (make deps) is needed")
from dnsstub import StubDNS  # noqa: E402

DOMAIN = "example.org"
HOST = "mail.example.org"
IP = "203.0.113.7"
IP6 = "2001:db8::7"
PTR = "7.113.0.203.in-addr.arpa"
TIMEOUT = 120  # seconds for one roostctl run: generous for a busy sanitizer build


@pytest.fixture(scope="module")
def keydir(tmp_path_factory):
    """A data dir with an RSA-2048 DKIM key at dkim/example.org/roost.pem,
    and a second key (for the mismatch case) beside it."""
    top = tmp_path_factory.mktemp("dnsdata")
    kdir = top / "dkim" / DOMAIN
    kdir.mkdir(parents=True)
    for name in ("roost.pem", "other.pem"):
        subprocess.run(["openssl", "genpkey", "-algorithm", "RSA", "-pkeyopt",
                        "rsa_keygen_bits:2048", "-out", str(kdir / name)],
                       check=True, capture_output=True, timeout=TIMEOUT)
    return top


def spki_b64(pem):
    der = subprocess.run(["openssl", "pkey", "-in", str(pem), "-pubout", "-outform", "DER"],
                         check=True, capture_output=True, timeout=TIMEOUT).stdout
    return base64.b64encode(der).decode()


def ctl(data_dir, *args, resolver=None, env=None):
    e = {k: v for k, v in os.environ.items() if not k.startswith("ROOST_")}
    e.update({"ROOST_DATA_DIR": str(data_dir), "ROOST_HOSTNAME": HOST})
    if resolver is not None:
        e["ROOST_RESOLVER"] = resolver
    e.update(env or {})
    r = subprocess.run([os.path.join(BIN, "roostctl")] + list(args), cwd=str(data_dir),
                       env=e, capture_output=True, text=True, timeout=TIMEOUT)
    # Under SANITIZE=1 a leak exits 1 too, like a failed check: look for it.
    assert "Sanitizer" not in r.stderr, r.stderr
    return r


def lines_of(out):
    """check-dns output as {check: [(status, message)]}."""
    got = {}
    for line in out.splitlines():
        status, check, msg = line.split(None, 2)
        got.setdefault(check, []).append((status, msg))
    return got


@pytest.fixture
def stub():
    s = StubDNS().start()
    yield s
    s.close()


def complete_zone(keydir):
    r = ctl(keydir, "dns-records", DOMAIN, "--ip", IP)
    assert r.returncode == 0, r.stderr
    return r.stdout + "%s. 3600 IN PTR %s.\n" % (PTR, HOST)


def check(stub, keydir, *extra, env=None):
    return ctl(keydir, "--timeout", "1000", "check-dns", DOMAIN, "--ip", IP, *extra,
               resolver="127.0.0.1:%d" % stub.port, env=env)


# ---- dns-records ----

def test_dns_records_lines(keydir, tmp_path):
    r = ctl(keydir, "dns-records", DOMAIN, "--ip", IP)
    assert r.returncode == 0, r.stderr
    rrs = dnslib.RR.fromZone(r.stdout)
    by = {(str(rr.rname), dnslib.QTYPE[rr.rtype]): rr for rr in rrs}
    assert str(by[(DOMAIN + ".", "MX")].rdata) == "10 %s." % HOST
    assert str(by[(HOST + ".", "A")].rdata) == IP
    assert not any(t == "AAAA" for _, t in by)  # IPv4 only unless IPv6 is given
    spf = by[(DOMAIN + ".", "TXT")].rdata.data
    assert b"".join(spf) == ("v=spf1 ip4:%s -all" % IP).encode()
    dmarc = b"".join(by[("_dmarc.%s." % DOMAIN, "TXT")].rdata.data).decode()
    assert dmarc == "v=DMARC1; p=quarantine"
    # The DKIM key (2048-bit: ~410 characters) split into strings of <= 255
    strings = by[("roost._domainkey.%s." % DOMAIN, "TXT")].rdata.data
    assert len(strings) == 2 and all(len(s) <= 255 for s in strings)
    assert len(strings[0]) == 255
    want = "v=DKIM1; k=rsa; p=" + spki_b64(keydir / "dkim" / DOMAIN / "roost.pem")
    assert b"".join(strings).decode() == want
    ptr_lines = [ln for ln in r.stdout.splitlines() if ln.startswith("; PTR")]
    assert len(ptr_lines) == 1 and IP in ptr_lines[0] and HOST in ptr_lines[0]
    assert "%s. PTR %s." % (PTR, HOST) in ptr_lines[0]

    # IPv6 given: AAAA, ip6: and a second PTR line; rua when configured
    r = ctl(keydir, "dns-records", DOMAIN, "--ip", IP, "--ip", IP6,
            env={"ROOST_DMARC_RUA": "dmarc@example.org"})
    assert r.returncode == 0, r.stderr
    by = {(str(rr.rname), dnslib.QTYPE[rr.rtype]): rr for rr in dnslib.RR.fromZone(r.stdout)}
    assert str(by[(HOST + ".", "AAAA")].rdata) == IP6
    assert b"".join(by[(DOMAIN + ".", "TXT")].rdata.data) == (
        "v=spf1 ip4:%s ip6:%s -all" % (IP, IP6)).encode()
    assert b"".join(by[("_dmarc.%s." % DOMAIN, "TXT")].rdata.data) == \
        b"v=DMARC1; p=quarantine; rua=mailto:dmarc@example.org"
    assert sum(ln.startswith("; PTR") for ln in r.stdout.splitlines()) == 2

    # No key yet: one line saying DKIM comes later, no DKIM record
    r = ctl(tmp_path, "dns-records", DOMAIN, "--ip", IP)
    assert r.returncode == 0, r.stderr
    notes = [ln for ln in r.stdout.splitlines() if "DKIM" in ln]
    assert len(notes) == 1 and notes[0].startswith("; DKIM: no key yet")
    assert "_domainkey" not in "".join(ln for ln in r.stdout.splitlines() if not ln.startswith(";"))

    # trailing dots on the domain and host name change nothing
    r2 = ctl(keydir, "dns-records", DOMAIN + ".", "--ip", IP, env={"ROOST_HOSTNAME": HOST + "."})
    assert r2.returncode == 0 and r2.stdout == ctl(keydir, "dns-records", DOMAIN, "--ip", IP).stdout

    # --json: the same records
    r = ctl(keydir, "--json", "dns-records", DOMAIN, "--ip", IP)
    doc = json.loads(r.stdout)
    dk = [x for x in doc["records"] if x["name"].startswith("roost._domainkey")][0]
    assert dk["value"] == want and "".join(dk["strings"]) == want
    assert all(len(s) <= 255 for s in dk["strings"])


def test_dns_records_errors(keydir):
    r = ctl(keydir, "dns-records", DOMAIN)
    assert r.returncode != 0 and "--ip" in r.stderr and len(r.stderr.splitlines()) == 1
    r = ctl(keydir, "dns-records", DOMAIN, "--ip", "300.1.1.1")
    assert r.returncode != 0 and "300.1.1.1" in r.stderr
    r = ctl(keydir, "dns-records", "not_a domain", "--ip", IP)
    assert r.returncode != 0
    r = ctl(keydir, "dns-records", DOMAIN, "--ip", IP, env={"ROOST_HOSTNAME": "pi"})
    assert r.returncode != 0 and "fully qualified" in r.stderr
    r = ctl(keydir, "dns-records", "--help")
    assert r.returncode == 0 and "usage" in r.stdout
    r = ctl(keydir, "check-dns", DOMAIN, resolver="ns.example.org")
    assert r.returncode != 0 and "resolver" in r.stderr
    r = ctl(keydir, "dns-records", DOMAIN, "--ip", IP, env={"ROOST_DMARC_RUA": "a@b.org;p=none"})
    assert r.returncode != 0 and "dmarc_rua" in r.stderr


# ---- check-dns ----

def test_complete_zone_passes(stub, keydir):
    stub.load(complete_zone(keydir))
    r = check(stub, keydir)
    assert r.returncode == 0, r.stdout + r.stderr
    got = lines_of(r.stdout)
    for name in ("mx", "a", "ptr", "fcrdns", "spf", "dmarc", "dkim"):
        assert [s for s, _ in got[name]] == ["OK"], (name, r.stdout)
    assert "aaaa" not in got  # IPv4 only: no AAAA, no complaint
    # the DKIM TXT (two strings, one of 255) was served back and accepted
    assert ("udp", "roost._domainkey.example.org", "TXT") in stub.queries
    # --json says the same
    r = ctl(keydir, "--json", "check-dns", DOMAIN, "--ip", IP,
            resolver="127.0.0.1:%d" % stub.port)
    doc = json.loads(r.stdout)
    assert r.returncode == 0 and doc["ok"] is True
    assert {c["check"] for c in doc["checks"]} == {"mx", "a", "ptr", "fcrdns", "spf", "dmarc", "dkim"}


def _other_key_record(keydir):
    v = "v=DKIM1; k=rsa; p=" + spki_b64(keydir / "dkim" / DOMAIN / "other.pem")
    return " ".join('"%s"' % v[i:i + 255] for i in range(0, len(v), 255))


# (what to break, the checks that must fail, a phrase the FAIL line must hold)
BROKEN = {
    "missing_mx": (lambda s, k: s.remove(DOMAIN, "MX"), {"mx"}, "no MX record at example.org"),
    "mx_elsewhere": (lambda s, k: (s.remove(DOMAIN, "MX"),
                                   s.load("example.org. 60 IN MX 10 mx.elsewhere.net.")),
                     {"mx"}, "points at 10 mx.elsewhere.net, not at mail.example.org"),
    "no_ptr": (lambda s, k: s.remove(PTR), {"ptr"}, "PTR %s: %s does not exist (NXDOMAIN)" % (PTR, PTR)),
    "ptr_elsewhere": (lambda s, k: (s.remove(PTR), s.load("%s. 60 IN PTR vps-1.provider.net." % PTR)),
                      {"ptr", "fcrdns"}, "PTR of 203.0.113.7 is vps-1.provider.net, not mail.example.org"),
    "spf_without_ip": (lambda s, k: (s.remove(DOMAIN, "TXT"),
                                     s.load('example.org. 60 IN TXT "v=spf1 ip4:198.51.100.0/24 -all"')),
                       {"spf"}, "does not authorize the VPS address 203.0.113.7 (result fail, by -all"),
    "two_spf": (lambda s, k: s.load('example.org. 60 IN TXT "v=spf1 a -all"'),
                {"spf"}, "2 SPF records at example.org"),
    "dkim_mismatch": (lambda s, k: (s.remove("roost._domainkey." + DOMAIN),
                                    s.load("roost._domainkey.example.org. 60 IN TXT " + _other_key_record(k))),
                      {"dkim"}, "holds another public key than"),
    "no_dmarc": (lambda s, k: s.remove("_dmarc." + DOMAIN), {"dmarc"},
                 "DMARC TXT _dmarc.example.org: no DMARC record"),
    "dmarc_without_p": (lambda s, k: (s.remove("_dmarc." + DOMAIN),
                                      s.load('_dmarc.example.org. 60 IN TXT "v=DMARC1; rua=mailto:x@example.org"')),
                        {"dmarc"}, "has no p= tag"),
    "a_elsewhere": (lambda s, k: (s.remove(HOST, "A"), s.load("mail.example.org. 60 IN A 192.0.2.1")),
                    {"a", "fcrdns"}, "A mail.example.org is 192.0.2.1, not the VPS address 203.0.113.7"),
}


@pytest.mark.parametrize("case", sorted(BROKEN))
def test_broken_zone_is_named(stub, keydir, case):
    breaker, failing, phrase = BROKEN[case]
    stub.load(complete_zone(keydir))
    breaker(stub, keydir)
    r = check(stub, keydir)
    assert r.returncode == 1, r.stdout + r.stderr
    got = lines_of(r.stdout)
    failed = {name for name, ls in got.items() for s, _ in ls if s == "FAIL"}
    assert failed == failing, r.stdout
    assert any(phrase in m for name in failing for s, m in got[name] if s == "FAIL"), r.stdout
    assert "problem" in r.stderr


def test_spf_mechanisms_followed(stub, keydir):
    """a, mx, include and redirect are followed with DNS lookups; exists is
    honestly 'cannot verify' (a warning, not a failure)."""
    stub.load(complete_zone(keydir))
    stub.load("_spf.provider.net. 60 IN TXT \"v=spf1 ip4:203.0.113.0/24 -all\"\n"
              "_spf2.provider.net. 60 IN TXT \"v=spf1 redirect=_spf.provider.net\"\n"
              "relay.provider.net. 60 IN A 203.0.113.7\n")
    cases = [
        ("v=spf1 include:_spf.provider.net -all", "OK", "+include:_spf.provider.net"),
        ("v=spf1 include:_spf2.provider.net -all", "OK", "+include:_spf2.provider.net"),
        ("v=spf1 mx -all", "OK", "+mx"),
        ("v=spf1 a:relay.provider.net/32 ~all", "OK", "+a:relay.provider.net/32"),
        ("v=spf1 ip4:203.0.113.0/25 -all", "OK", "ip4:203.0.113.0/25"),
        ("v=spf1 -ip4:203.0.113.7 +all", "FAIL", "result fail, by -ip4:203.0.113.7"),
        ("v=spf1 ~all", "FAIL", "result softfail"),
        ("v=spf1 include:nospf.provider.net -all", "FAIL", "permerror"),
        ("v=spf1 exists:%{i}.spf.provider.net -all", "WARN", "cannot verify"),
        ("v=spf1 ptr -all", "WARN", "cannot verify"),
    ]
    for record, status, phrase in cases:
        stub.remove(DOMAIN, "TXT")
        stub.load('example.org. 60 IN TXT "%s"' % record)
        r = check(stub, keydir)
        spf = lines_of(r.stdout)["spf"]
        assert [s for s, _ in spf] == [status], (record, r.stdout)
        assert phrase in spf[0][1], (record, spf)
        assert r.returncode == (1 if status == "FAIL" else 0), (record, r.stdout)


def test_nxdomain_servfail_timeout_told_apart(stub, keydir):
    # NXDOMAIN: the domain is not in the zone at all
    stub.load("%s. 60 IN A %s\n%s. 60 IN PTR %s." % (HOST, IP, PTR, HOST))
    r = check(stub, keydir)
    got = lines_of(r.stdout)
    assert r.returncode == 1
    assert got["mx"] == [("FAIL", "MX example.org: example.org does not exist (NXDOMAIN)")]
    # SERVFAIL
    stub.records = []
    stub.load(complete_zone(keydir))
    stub.servfail.add(DOMAIN)
    r = check(stub, keydir)
    mx = lines_of(r.stdout)["mx"]
    assert mx[0][0] == "FAIL" and "answered SERVFAIL for example.org MX" in mx[0][1], r.stdout
    assert "NXDOMAIN" not in r.stdout
    # timeout: the server never answers for the domain
    stub.servfail.clear()
    stub.drop.add(DOMAIN)
    r = ctl(keydir, "--timeout", "300", "check-dns", DOMAIN, "--ip", IP,
            resolver="127.0.0.1:%d" % stub.port)
    got = lines_of(r.stdout)
    assert r.returncode == 1
    assert got["mx"][0][0] == "FAIL" and "(timeout: 2 tries of 300 ms)" in got["mx"][0][1]
    assert "no answer from the resolver 127.0.0.1:%d" % stub.port in got["mx"][0][1]
    assert got["a"] == [("OK", "A mail.example.org: 203.0.113.7")]  # other names still answer
    # nobody at all on the resolver's address: connection refused, said so
    port = stub.port
    stub.close()
    r = ctl(keydir, "--timeout", "300", "check-dns", DOMAIN, "--ip", IP,
            resolver="127.0.0.1:%d" % port)
    assert r.returncode == 1 and "connection refused" in lines_of(r.stdout)["mx"][0][1]


def test_truncated_udp_then_tcp(stub, keydir):
    stub.load(complete_zone(keydir))
    name = "roost._domainkey." + DOMAIN
    stub.truncate.add(name)
    r = check(stub, keydir)
    assert r.returncode == 0, r.stdout
    assert lines_of(r.stdout)["dkim"][0][0] == "OK"
    asked = [p for p, n, t in stub.queries if n == name]
    assert asked == ["udp", "tcp"], stub.queries


def test_hostile_txt_bytes_stay_off_the_terminal(stub, keydir):
    """A TXT record may hold any byte: an escape sequence in an SPF record is
    shown as '?', and --json still prints valid JSON."""
    stub.load(complete_zone(keydir))
    stub.remove(DOMAIN, "TXT")
    stub.records.append(dnslib.RR(DOMAIN, dnslib.QTYPE.TXT, ttl=60,
                                  rdata=dnslib.TXT([b"v=spf1 \x1b[31m\xff\x00 -all"])))
    r = check(stub, keydir)
    assert r.returncode == 1
    assert "\x1b" not in r.stdout and "\ufffd" not in r.stdout
    spf = lines_of(r.stdout)["spf"]
    assert spf[0][0] == "FAIL" and "?[31m" in spf[0][1], spf
    r = ctl(keydir, "--json", "check-dns", DOMAIN, "--ip", IP,
            resolver="127.0.0.1:%d" % stub.port)
    doc = json.loads(r.stdout)
    assert doc["ok"] is False
    assert [c["status"] for c in doc["checks"] if c["check"] == "spf"] == ["FAIL"]


def test_dkim_key_forms(tmp_path, keydir):
    """<selector>.pub (public key only) gives the same record as the .pem;
    an Ed25519 key publishes k=ed25519 and its raw 32-byte key (RFC 8463);
    a file that is no key is an error naming it."""
    kdir = tmp_path / "dkim" / DOMAIN
    kdir.mkdir(parents=True)
    pem = keydir / "dkim" / DOMAIN / "roost.pem"
    subprocess.run(["openssl", "pkey", "-in", str(pem), "-pubout", "-out", str(kdir / "roost.pub")],
                   check=True, capture_output=True, timeout=TIMEOUT)
    r = ctl(tmp_path, "--json", "dns-records", DOMAIN, "--ip", IP)
    assert r.returncode == 0, r.stderr
    doc = json.loads(r.stdout)
    dk = [x for x in doc["records"] if "_domainkey" in x["name"]][0]
    assert dk["value"] == "v=DKIM1; k=rsa; p=" + spki_b64(pem)
    assert doc["dkim_key"].endswith("roost.pub")

    subprocess.run(["openssl", "genpkey", "-algorithm", "ED25519", "-out", str(kdir / "ed.pem")],
                   check=True, capture_output=True, timeout=TIMEOUT)
    r = ctl(tmp_path, "dns-records", DOMAIN, "--ip", IP, "--selector", "ed")
    assert r.returncode == 0, r.stderr
    rr = [x for x in dnslib.RR.fromZone(r.stdout) if str(x.rname).startswith("ed._domainkey")][0]
    value = b"".join(rr.rdata.data).decode()
    assert value.startswith("v=DKIM1; k=ed25519; p=")
    raw = base64.b64decode(value.split("p=", 1)[1])
    # the SubjectPublicKeyInfo of an Ed25519 key ends with the raw key
    assert len(raw) == 32 and base64.b64decode(spki_b64(kdir / "ed.pem"))[-32:] == raw

    (kdir / "bad.pem").write_text("not a key\n")
    r = ctl(tmp_path, "dns-records", DOMAIN, "--ip", IP, "--selector", "bad")
    assert r.returncode == 1 and "bad.pem" in r.stderr and len(r.stderr.splitlines()) == 1
    r = ctl(tmp_path, "dns-records", DOMAIN, "--ip", IP, "--selector", "../x")
    assert r.returncode == 1 and "selector" in r.stderr
