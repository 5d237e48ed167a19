"""
test_wg_topology.py — issue 7's deployment in containers: the Roost stack
behind its WireGuard tunnel, a VPS set up by the script `roostctl
vps-config` printed, a remote Postfix that finds us through a stub DNS
server, a home-LAN client and the owner's laptop (tests/compose/wg.yml has
the networks, all internal).

Proved, each over the real tunnel (kernel WireGuard, else wireguard-go):
  - mail from the remote Postfix (MX lookup in the stub DNS) to the VPS
    address reaches our user, and its Received field shows the remote's
    own address (DNAT without SNAT);
  - a connection from the namespace smtpd and imapd share arrives at the
    remote host from the VPS address (egress through the tunnel);
  - a client on the home LAN reaches IMAP directly and gets its replies;
  - the laptop, with the configuration `roostctl wg add-peer` printed,
    reaches IMAP through the VPS and not port 25 nor the internet;
  - the laptop (added with --bus-tail) tails the bus (`roostctl bus tail --remote`) through the
    bus-relay container; the VPS's own tunnel address, the home LAN and
    the internet cannot connect to the relay.
Runs in the same pytest session as test_compose.py, as its own compose
project on the images that session built.
"""

import os
import subprocess
import tempfile
import time

import pytest

import stack as stacklib
from stack import TOP, wait_until

VPS_IP = "203.0.113.5"
REMOTE_IP = "203.0.113.77"
SERVER_TUN = "10.44.0.2"
DOMAIN = "roost.test"
USER = "kim@" + DOMAIN

DNS_STUB = r'''
import socketserver, sys
from dnslib import A, MX, PTR, QTYPE, RR, DNSRecord
ZONE = {
    ("roost.test.", "MX"): [RR("roost.test.", QTYPE.MX, rdata=MX("mx.roost.test."), ttl=60)],
    ("mx.roost.test.", "A"): [RR("mx.roost.test.", QTYPE.A, rdata=A("203.0.113.5"), ttl=60)],
    ("5.113.0.203.in-addr.arpa.", "PTR"): [RR("5.113.0.203.in-addr.arpa.", QTYPE.PTR, rdata=PTR("mx.roost.test."), ttl=60)],
}
class H(socketserver.BaseRequestHandler):
    def handle(self):
        data, sock = self.request
        q = DNSRecord.parse(data)
        r = q.reply()
        for rr in ZONE.get((str(q.q.qname), QTYPE[q.q.qtype]), []):
            r.add_answer(rr)
        if not any(n == str(q.q.qname) for n, _ in ZONE):
            r.header.rcode = 3
        sock.sendto(r.pack(), self.client_address)
socketserver.UDPServer(("127.0.0.1", 53), H).serve_forever()
'''

LISTENER = r'''
import socket, sys
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("0.0.0.0", int(sys.argv[1]))); s.listen(4)
c, a = s.accept(); print(a[0], flush=True)
'''


@pytest.fixture(scope="module")
def topo(stack):
    """A second project on the session's images: the stack with wg.yml."""
    t = stacklib.Stack()
    t.tag = stack.tag
    t.keys = tempfile.mkdtemp(prefix="rctkeys.", dir="/tmp")
    t.env.update(COMPOSE_FILE="docker-compose.yml:tests/compose/test.yml:tests/compose/wg.yml",
                 ROOST_TAG=stack.tag, ROOST_WG_HOST_DIR=os.path.join(t.keys, "wg"))
    ctl = [stack.host_roostctl or os.path.join(TOP, "build", "bin", "roostctl")]
    kenv = dict(os.environ, ROOST_DATA_DIR=t.keys)
    def host_ctl(*args):
        p = subprocess.run(ctl + list(args), env=kenv, capture_output=True, text=True, timeout=60)
        assert p.returncode == 0, p.stderr
        return p.stdout
    t.host_ctl = host_ctl
    host_ctl("wg", "keygen")
    t.laptop_conf = host_ctl("wg", "add-peer", "laptop", "--vps-ip", VPS_IP, "--no-qr", "--bus-tail")
    for kind in ("net", "peer"):
        subprocess.run([os.path.join(TOP, "tools/docker/mkbase.sh"), kind], cwd=TOP, check=True)
    try:
        t.up()   # tools/docker/up.sh, as make up: bus directory, certificate, health
        yield t
    finally:
        if os.environ.get("COMPOSE_TEST_KEEP") != "1":
            t.compose("down", "-v", "--remove-orphans", check=False)
            subprocess.run(["rm", "-rf", t.busdir, t.wgdir, t.keys])


def dexec(t, svc, *argv, stdin=None, env=None, check=True, timeout=120):
    cmd = ["docker", "exec", "-i"]
    for k, v in (env or {}).items():
        cmd += ["-e", "%s=%s" % (k, v)]
    cmd += [t.ids(svc)[0]] + list(argv)
    p = subprocess.run(cmd, input=stdin, capture_output=True, text=True, timeout=timeout)
    if check:
        assert p.returncode == 0, "%s: %s\n%s%s" % (svc, " ".join(argv), p.stdout, p.stderr)
    return p


def tcp(t, svc, host, port, read=0, timeout=5):
    """From svc's namespace: connect (and read some bytes): the bytes, or None."""
    script = "exec 3<>/dev/tcp/%s/%d || exit 1; %s" % (host, port, "head -c %d <&3" % read if read else "true")
    p = dexec(t, svc, "timeout", str(timeout), "bash", "-c", script, check=False, timeout=timeout + 30)
    return p.stdout if p.returncode == 0 else None


def test_vps_script_runs_and_tunnel_comes_up(topo):
    script = topo.host_ctl("vps-config", "--vps-ip", VPS_IP)
    pub = dexec(topo, "vps", "sh", "-c", "ip -o -4 addr show | awk '/ %s\\// { print $2 }'" % VPS_IP).stdout.strip()
    assert pub, "no interface holds %s in the vps container" % VPS_IP
    env = {"ROOST_VPS_ROOT": "/tmp/vpsroot", "ROOST_VPS_PUBLIC_IF": pub,
           "WG_I_PREFER_BUGGY_USERSPACE_TO_POLISHED_KMOD": "1"}
    dexec(topo, "vps", "sh", "-c", "cat > /tmp/roost-vps.sh", stdin=script)
    out = dexec(topo, "vps", "sh", "/tmp/roost-vps.sh", env=env, timeout=180)
    assert "forwarded from %s" % VPS_IP in out.stdout, out.stdout + out.stderr
    # the server's end came up from the keys at start (docker/wg-up.sh)
    logs = topo.logs(topo.ids("wireguard")[0])
    assert "tunnel roost0 up: %s" % SERVER_TUN in logs, logs
    # the first handshake (the server's keepalive, every 25 s): then the VPS
    # reaches smtpd through the tunnel
    got = wait_until(lambda: tcp(topo, "vps", SERVER_TUN, 25, read=4), 90, "smtpd through the tunnel")
    assert got == "220 "


def test_remote_postfix_mail_keeps_the_client_address(topo):
    topo.roostctl("domain", "add", DOMAIN)
    topo.roostctl("user", "add", USER)
    dexec(topo, "remote", "sh", "-c", "cat > /tmp/dns.py", stdin=DNS_STUB)
    subprocess.run(["docker", "exec", "-d", topo.ids("remote")[0], "python3", "/tmp/dns.py"], check=True)
    conf = ("postconf -e myhostname=remote.example mydestination= inet_interfaces=loopback-only "
            "inet_protocols=ipv4 smtp_tls_security_level=may maillog_file=/var/log/postfix.log "
            "smtp_dns_support_level=enabled && postconf -F '*/*/chroot=n' && postfix start")
    dexec(topo, "remote", "sh", "-c", conf)
    dexec(topo, "remote", "sh", "-c", "printf 'Subject: through the vps\\n\\nhello\\n' | "
          "sendmail -f bob@remote.example %s" % USER)
    try:
        wait_until(lambda: topo.subjects(USER).get("through the vps"), 180, "the remote's message")
    except AssertionError:
        print(dexec(topo, "remote", "cat", "/var/log/postfix.log", check=False).stdout[-3000:])
        raise
    data = topo.roostctl("message", "get", USER, "INBOX", "1").stdout
    assert data.startswith("Received: from "), data[:300]
    received = data[:data.find("\nReceived:", 1)]   # ours, the first: up to Postfix's own
    assert "[%s]" % REMOTE_IP in received, received     # the remote's own address
    assert VPS_IP not in received and "10.44.0.1" not in received, received


def test_egress_leaves_from_the_vps_address(topo):
    dexec(topo, "remote", "sh", "-c", "cat > /tmp/listen.py", stdin=LISTENER)
    p = subprocess.Popen(["docker", "exec", "-i", topo.ids("remote")[0], "python3", "/tmp/listen.py", "2525"],
                         stdout=subprocess.PIPE, text=True)
    try:
        wait_until(lambda: tcp(topo, "wireguard", REMOTE_IP, 2525) is not None, 60,
                   "a connection from the server's namespace to the remote host")
        assert p.stdout.readline().strip() == VPS_IP
    finally:
        p.kill()


def test_home_lan_reaches_imap_directly(topo):
    assert tcp(topo, "lanpc", "10.99.0.2", 143, read=4) == "* OK"


def test_laptop_reaches_imap_through_the_vps_and_nothing_else(topo):
    # Docker drops what crosses an internal network to an address outside its
    # subnet: the laptop reaches the VPS's WireGuard at its address on "away"
    conf = topo.laptop_conf.replace("Endpoint = %s:" % VPS_IP, "Endpoint = 198.51.100.254:")
    assert conf != topo.laptop_conf
    dexec(topo, "laptop", "sh", "-c", "cat > /tmp/laptop0.conf", stdin=conf)
    dexec(topo, "laptop", "wg-quick", "up", "/tmp/laptop0.conf",
          env={"WG_I_PREFER_BUGGY_USERSPACE_TO_POLISHED_KMOD": "1"}, timeout=60)
    got = wait_until(lambda: tcp(topo, "laptop", SERVER_TUN, 143, read=4), 60, "IMAP from the laptop")
    assert got == "* OK"
    assert tcp(topo, "laptop", SERVER_TUN, 25, timeout=4) is None       # not for devices
    # a laptop that sends the internet into the tunnel gets nowhere: the VPS
    # forwards devices to the server's IMAP and submission ports only
    p = subprocess.Popen(["docker", "exec", "-i", topo.ids("remote")[0], "python3", "/tmp/listen.py", "2526"],
                         stdout=subprocess.PIPE, text=True)
    try:
        vps_pub = [l.split("=", 1)[1].strip() for l in topo.laptop_conf.splitlines() if l.startswith("PublicKey")][0]
        dexec(topo, "laptop", "wg", "set", "laptop0", "peer", vps_pub, "allowed-ips",
              "%s/32,%s/32" % (SERVER_TUN, REMOTE_IP))
        dexec(topo, "laptop", "ip", "route", "add", REMOTE_IP + "/32", "dev", "laptop0")
        assert tcp(topo, "laptop", REMOTE_IP, 2526, timeout=4) is None
    finally:
        p.kill()
        assert p.stdout.read().strip() == ""


def test_laptop_tails_the_bus_through_the_relay_and_nothing_else_does(topo):
    """The bus-relay container: busd's tap on the tunnel address, for devices
    only. Runs after the laptop's tunnel came up (the test above)."""
    relay = topo.ids("bus-relay")[0]
    wait_until(lambda: "relay.listening endpoint=tcp://%s:4470" % SERVER_TUN in topo.logs(relay), 60,
               "the bus relay listening on the tunnel address")
    # roostctl bus tail --remote in the laptop's namespace (its image has no
    # roostctl: the relay's image, sharing the laptop's network)
    tail = subprocess.Popen(["docker", "run", "--rm", "--network", "container:" + topo.ids("laptop")[0],
                             "roost-bus-relay:" + topo.tag, "roostctl", "--timeout", "60000", "bus", "tail",
                             "--remote", SERVER_TUN, "--service", "busd", "--count", "1"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 90
        while tail.poll() is None and time.monotonic() < deadline:
            topo.roostctl("bus", "ping", "busd")
            time.sleep(1)
        out, err = tail.communicate(timeout=30)
    finally:
        if tail.poll() is None:
            tail.kill()
    assert tail.returncode == 0, err
    assert '"type":"busd.control.ping"' in out, out
    assert "relay.device addr=10.44.0.10" in topo.logs(relay)
    # the VPS's own tunnel address is no device, the home LAN is not the
    # tunnel, the internet reaches neither the VPS's port nor the server's
    assert tcp(topo, "vps", SERVER_TUN, 4470, timeout=4) is None
    assert tcp(topo, "lanpc", "10.99.0.2", 4470, timeout=4) is None
    assert tcp(topo, "remote", VPS_IP, 4470, timeout=4) is None
    assert "relay.refused" not in topo.logs(relay)
