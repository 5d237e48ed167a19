"""
test_wg_vps.py — roostctl wg keygen|add-peer and vps-config, and the
server's end of the tunnel (docker/wg-up.sh): issue 7, run for real.

The deployment on one machine, in network namespaces made here:

    remote 203.0.113.77 ---"internet"--- 203.0.113.5 vps ---198.18.0.0/30--- home router
    laptop 198.51.100.2 ---"internet"--- 198.51.100.1 vps                     |        |
                                                            server 10.99.0.2 --+        +-- 192.168.1.50 lanpc
    tunnels: vps roost0 10.44.0.1 === server roostsrv0 10.44.0.2 (wg-up.sh)
             vps roost0 10.44.0.1 === laptop laptop0 10.44.0.10 (wg add-peer)

`vps` runs the script `roostctl vps-config` printed (its files under a temp
root, its public interface named); `server` runs docker/wg-up.sh, the
entrypoint of the container smtpd and imapd share, and smtpd on this
test's bus (the ipc sockets are files, so busd and storaged stay in the
host's namespace). WireGuard is the kernel's where it has it, else
wireguard-go (userspace, /dev/net/tun), which wg-quick and wg-up.sh pick.

Proved: mail from `remote` to the VPS address reaches smtpd with the
remote's own address in the Received header (DNAT without SNAT); a
connection from the server's namespace arrives at `remote` from the VPS
address (egress through the tunnel); a home-LAN client reaches the server
directly and gets its replies (not into the tunnel); a port the script
does not forward stays closed; running the script twice leaves the same
rules; a device added with `wg add-peer` reaches IMAP through the VPS with
its generated configuration and nothing else (not port 25, not the
internet through the VPS); a device added with --bus-tail tails the bus
through the VPS (`roostctl bus tail --remote`, served by `roostctl bus
relay` in the server's namespace), with its filters and busd's redaction,
while a device without it, the VPS itself, the home LAN (even routed to
the tunnel address) and the internet cannot connect to the relay, and
what a device sends to the relay reaches nothing; the keys are real
WireGuard keys (`wg pubkey` agrees). Needs root, iproute2, iptables and wireguard-tools (make deps
installs them); skipped with the reason otherwise.
"""

import json
import os
import shutil
import socket
import subprocess
import threading
import time

import pytest

import bus as buslib
import smtp as smtph
from bus import WAIT
from test_accounts import ok, verify
from store import with_users

VPS_IP = "203.0.113.5"
REMOTE_IP = "203.0.113.77"
SERVER_TUN = "10.44.0.2"
LAPTOP_IP = "198.51.100.2"
SERVER_LAN = "10.99.0.2"
LANPC_IP = "192.168.1.50"
WG_UP = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "docker", "wg-up.sh")


def _missing():
    if os.geteuid() != 0:
        return "needs root (network namespaces, iptables)"
    for tool in ("ip", "iptables", "wg", "wg-quick"):
        if shutil.which(tool) is None:
            return "%s not installed (make deps installs wireguard-tools, iptables)" % tool
    probe = subprocess.run(["ip", "link", "add", "roostprobe0", "type", "wireguard"],
                           capture_output=True)
    if probe.returncode == 0:
        subprocess.run(["ip", "link", "del", "roostprobe0"], capture_output=True)
        return None
    if shutil.which("wireguard-go") is None or not os.path.exists("/dev/net/tun"):
        return "no WireGuard: no kernel module and no wireguard-go with /dev/net/tun"
    return None


pytestmark = pytest.mark.skipif(_missing() is not None, reason=str(_missing()))


def sh(*argv, ns=None, check=True, env=None, timeout=WAIT):
    full = (["ip", "netns", "exec", ns] if ns else []) + list(argv)
    r = subprocess.run(full, capture_output=True, text=True, env=env, timeout=timeout)
    if check and r.returncode != 0:
        raise AssertionError("%s: exit %d\n%s\n%s" % (" ".join(full), r.returncode, r.stdout, r.stderr))
    return r


class Topology:
    """The three namespaces and their links; torn down by close()."""

    def __init__(self, tag):
        self.ns = {k: "roost%s-%s" % (k[:4], tag) for k in ("remote", "vps", "home", "server", "lanpc", "laptop")}
        for n in self.ns.values():
            sh("ip", "netns", "add", n)
            sh("ip", "link", "set", "lo", "up", ns=n)
        self._veth("inet", "remote", REMOTE_IP + "/24", "vps", VPS_IP + "/24")
        self._veth("away", "vps", "198.51.100.1/24", "laptop", LAPTOP_IP + "/24")
        self._veth("isp", "vps", "198.18.0.1/30", "home", "198.18.0.2/30")
        self._veth("up", "home", "10.99.0.1/30", "server", SERVER_LAN + "/30")
        self._veth("lan", "home", "192.168.1.1/24", "lanpc", LANPC_IP + "/24")
        sh("ip", "route", "add", "default", "via", REMOTE_IP, ns=self.ns["vps"])
        sh("ip", "route", "add", "10.99.0.0/30", "via", "198.18.0.2", ns=self.ns["vps"])
        sh("ip", "route", "add", "default", "via", "198.51.100.1", ns=self.ns["laptop"])
        sh("ip", "route", "add", "default", "via", "198.18.0.1", ns=self.ns["home"])
        sh("sysctl", "-q", "-w", "net.ipv4.ip_forward=1", ns=self.ns["home"])
        sh("ip", "route", "add", "default", "via", "10.99.0.1", ns=self.ns["server"])
        sh("ip", "route", "add", "default", "via", "192.168.1.1", ns=self.ns["lanpc"])

    def _veth(self, name, a, addr_a, b, addr_b):
        ia, ib = "%s-%s" % (name, a[:3]), "%s-%s" % (name, b[:3])  # e.g. inet-vps
        sh("ip", "link", "add", ia, "netns", self.ns[a], "type", "veth", "peer", "name", ib,
           "netns", self.ns[b])
        for ns, i, addr in ((a, ia, addr_a), (b, ib, addr_b)):
            sh("ip", "addr", "add", addr, "dev", i, ns=self.ns[ns])
            sh("ip", "link", "set", i, "up", ns=self.ns[ns])

    def run(self, where, *argv, **kw):
        return sh(*argv, ns=self.ns[where], **kw)

    def close(self):
        for n in self.ns.values():
            # wireguard-go and listeners started in the namespace die with it
            pids = subprocess.run(["ip", "netns", "pids", n], capture_output=True, text=True).stdout.split()
            for sig in (15, 9):  # TERM first: wireguard-go removes its control socket
                for pid in pids:
                    try:
                        os.kill(int(pid), sig)
                    except ProcessLookupError:
                        pass
                if sig == 15:
                    deadline = time.time() + 5
                    while time.time() < deadline and any(os.path.exists("/proc/%s" % p) for p in pids):
                        time.sleep(0.05)
            subprocess.run(["ip", "netns", "del", n], capture_output=True)


@pytest.fixture
def topo():
    t = Topology("%x" % (os.getpid() & 0xffff))
    yield t
    t.close()


def keygen(b):
    ok(b, "wg", "keygen")
    return json.loads(ok(b, "--json", "wg", "show"))


def server_side_up(b, t, keys, lan_prefix=None):
    """The server's end: docker/wg-up.sh, as the container runs it (the
    interface named roostsrv0, not roost0: wireguard-go's control socket is
    /var/run/wireguard/<name>.sock, shared by this machine's namespaces)."""
    env = dict(os.environ, ROOST_WG_DIR=keys["dir"], ROOST_VPS_IP=VPS_IP, ROOST_WG_IF="roostsrv0")
    if lan_prefix is not None:
        env["ROOST_LAN_PREFIX"] = lan_prefix
    r = t.run("server", "sh", WG_UP, "true", env=env, timeout=WAIT * 2)
    assert "tunnel roostsrv0 up: 10.44.0.2" in r.stderr, r.stderr
    routes = t.run("server", "ip", "-4", "route", "show").stdout
    assert "default dev roostsrv0" in routes and VPS_IP + " via 10.99.0.1" in routes, routes


def run_vps_script(b, t, script):
    root = os.path.join(b.tmp, "vpsroot")
    os.makedirs(root, exist_ok=True)
    env = dict(os.environ, ROOST_VPS_ROOT=root, ROOST_VPS_PUBLIC_IF="inet-vps",
               WG_I_PREFER_BUGGY_USERSPACE_TO_POLISHED_KMOD="1")
    return t.run("vps", "sh", script, env=env, timeout=WAIT * 2)


def vps_rules(t):
    out = t.run("vps", "iptables-save").stdout
    return sorted(l for l in out.splitlines() if "ROOST" in l and not l.startswith("#"))


def listener(t, where, port):
    """A TCP listener in a namespace; returns (process, path of its log):
    it accepts connections and writes each peer address, one per line."""
    code = ("import socket,sys\ns=socket.socket();s.setsockopt(socket.SOL_SOCKET,socket.SO_REUSEADDR,1)\n"
            "s.bind(('0.0.0.0',%d));s.listen(8);print('ready',flush=True)\n"
            "while True:\n c,a=s.accept();print(a[0],flush=True);c.close()\n" % port)
    p = subprocess.Popen(["ip", "netns", "exec", t.ns[where], "/usr/bin/python3", "-c", code],
                         stdout=subprocess.PIPE, text=True)
    assert p.stdout.readline().strip() == "ready"
    return p


def connect_from(t, where, host, port, timeout=5):
    code = ("import socket,sys\ntry:\n s=socket.create_connection(('%s',%d),%d);print('connected')\n"
            "except OSError as e:\n print('failed',e)\n" % (host, port, timeout))
    return t.run(where, "/usr/bin/python3", "-c", code, timeout=timeout + WAIT).stdout.strip()


def test_keygen_keys_are_wireguard_keys(bus, tmp_path):
    keys = keygen(bus)
    d = keys["dir"]
    assert oct(os.stat(d).st_mode & 0o777) == "0o700"
    for name, pub in (("server.key", keys["server_public_key"]), ("vps.key", keys["vps_public_key"])):
        path = os.path.join(d, name)
        assert oct(os.stat(path).st_mode & 0o777) == "0o600"
        r = subprocess.run(["wg", "pubkey"], stdin=open(path), capture_output=True, text=True)
        assert r.returncode == 0 and r.stdout.strip() == pub
    # a second keygen keeps the keys (the VPS already has them)
    r = bus.roostctl(["wg", "keygen"])
    assert r.returncode != 0 and "exists" in r.stderr and r.stderr.count("\n") == 1
    assert json.loads(ok(bus, "--json", "wg", "show")) == keys
    r = bus.roostctl(["vps-config", "--vps-ip", "300.1.2.3"])
    assert r.returncode != 0 and "not an IPv4 address" in r.stderr
    r = bus.roostctl(["vps-config"])
    assert r.returncode != 0 and "--vps-ip" in r.stderr


def test_vps_config_without_keys_says_keygen(bus):
    r = bus.roostctl(["vps-config", "--vps-ip", VPS_IP])
    assert r.returncode != 0 and "roostctl wg keygen" in r.stderr


def stack(bus, topo, devices=(), bus_tail=(), lan_prefix=None):
    """Keys, devices (those in bus_tail added with --bus-tail), the VPS
    script run (twice: same rules), the server's tunnel, smtpd in the
    server's namespace on port 25. Returns (b, keys, {device: its WireGuard
    configuration})."""
    b = with_users(bus, "alice@example.org")
    keys = keygen(b)
    confs = {d: ok(b, "wg", "add-peer", d, "--vps-ip", VPS_IP, "--no-qr", *(["--bus-tail"] if d in bus_tail else []))
             for d in devices}
    script = os.path.join(b.tmp, "roost-vps.sh")
    with open(script, "w") as f:
        f.write(ok(b, "vps-config", "--vps-ip", VPS_IP))
    out = run_vps_script(b, topo, script)
    assert "ports 25,465,587,143,993 forwarded from %s" % VPS_IP in out.stdout
    rules = vps_rules(topo)
    # idempotent: a second run leaves exactly the same rules
    run_vps_script(b, topo, script)
    assert vps_rules(topo) == rules
    assert topo.run("vps", "sysctl", "-n", "net.ipv4.ip_forward").stdout.strip() == "1"

    server_side_up(b, topo, keys, lan_prefix)
    env = {"ROOST_LISTEN": "0.0.0.0", "ROOST_SMTP_PORT": "25", "ROOST_HOSTNAME": "mx.example.org",
           "ROOST_SMTP_GREET_DELAY_MS": "0"}
    p = b.spawn("smtpd", ["ip", "netns", "exec", topo.ns["server"], buslib.binary("smtpd")], env=env)
    buslib.wait_until(lambda: p.pid in b.worker_pids("smtpd.control"), interval=0.2,
                      what="smtpd registered with busd")
    return b, keys, confs


def laptop_up(b, topo, conf_text, ifname="laptop0"):
    """The laptop's tunnel from the configuration wg add-peer printed."""
    conf = os.path.join(b.tmp, ifname + ".conf")   # the interface is named after the file
    with open(conf, "w") as f:
        f.write(conf_text)
    topo.run("laptop", "wg-quick", "up", conf, env=dict(os.environ, WG_I_PREFER_BUGGY_USERSPACE_TO_POLISHED_KMOD="1"))


def seen_from(t, where, port, client, host, timeout=5):
    """A listener in `where` on port, a connection from `client` to
    host:port: the address the listener saw, or None if it failed."""
    lp = listener(t, where, port)
    try:
        if connect_from(t, client, host, port, timeout=timeout) != "connected":
            return None
        return lp.stdout.readline().strip()
    finally:
        lp.kill()


def test_vps_forwards_mail_with_client_address_and_egress_leaves_from_vps(bus, topo):
    b, keys, _ = stack(bus, topo)

    # mail from the internet to the VPS's address, through the tunnel
    send = ("import smtplib\nc=smtplib.SMTP('%s',25,timeout=30)\n"
            "c.sendmail('bob@remote.example','alice@example.org',b'Subject: via vps\\r\\n\\r\\nhello\\r\\n')\n"
            "c.quit();print('sent')\n" % VPS_IP)
    deadline = time.time() + WAIT * 2
    while True:  # the tunnel's first handshake may take a moment
        r = topo.run("remote", "/usr/bin/python3", "-c", send, check=False, timeout=WAIT * 2)
        if r.returncode == 0 or time.time() > deadline:
            break
        time.sleep(1)
    assert r.stdout.strip() == "sent", r.stderr
    data = smtph.message_get(b, "alice@example.org", 1)
    received, rest = smtph.strip_received(data)
    assert REMOTE_IP.encode() in received, received   # the client's own address, not the VPS's
    assert VPS_IP.encode() not in received and b"10.44.0.1" not in received
    assert rest.endswith(b"hello\r\n")

    # egress: the server's connections leave from the VPS's address
    assert seen_from(topo, "remote", 2525, "server", REMOTE_IP) == VPS_IP

    # the home LAN reaches the server directly (not through the VPS), and the
    # replies come back to it instead of going into the tunnel
    assert seen_from(topo, "server", 143, "lanpc", SERVER_LAN) == LANPC_IP

    # without ROOST_LAN_PREFIX, a connection the server opens to a LAN host
    # that is not on its own link goes into the tunnel and nowhere
    assert seen_from(topo, "lanpc", 2526, "server", LANPC_IP, timeout=3) is None

    # not forwarded: a port the script does not name stays closed, to the
    # VPS and to the server behind it
    lp = listener(topo, "server", 8080)
    try:
        assert connect_from(topo, "remote", VPS_IP, 8080, timeout=3).startswith("failed")
    finally:
        lp.kill()
        got = lp.stdout.read()
    assert got.strip() == ""


def test_lan_prefix_keeps_the_home_lan_out_of_the_tunnel(bus, topo):
    """ROOST_LAN_PREFIX: the server's own connections to the home LAN go the
    home way (from its LAN address), everything else still through the VPS."""
    b, keys, _ = stack(bus, topo, lan_prefix="192.168.1.0/24, 172.31.0.0/16")
    rules = topo.run("server", "ip", "rule", "show").stdout
    assert "102:\tfrom all to 192.168.1.0/24 lookup 51821" in rules, rules
    assert seen_from(topo, "lanpc", 2526, "server", LANPC_IP) == SERVER_LAN
    assert seen_from(topo, "remote", 2525, "server", REMOTE_IP) == VPS_IP
    # a bad prefix stops the script with a clear line instead of a tunnel
    # that sends the LAN's traffic away
    for bad in ("192.168.1.0/33", "192.168.1/24", "lan"):
        env = dict(os.environ, ROOST_WG_DIR=keys["dir"], ROOST_VPS_IP=VPS_IP,
                   ROOST_WG_IF="roostsrv1", ROOST_LAN_PREFIX="10.0.0.0/8 " + bad)
        r = topo.run("server", "sh", WG_UP, "true", env=env, check=False, timeout=WAIT * 2)
        assert r.returncode != 0 and "ROOST_LAN_PREFIX: '%s' is not an IPv4 prefix" % bad in r.stderr, r.stderr
    assert topo.run("server", "ip", "rule", "show").stdout == rules   # nothing changed


def test_device_reaches_imap_through_the_vps_and_nothing_else(bus, topo):
    b, keys, confs = stack(bus, topo, devices=("laptop", "phone"))
    listed = json.loads(ok(b, "--json", "wg", "list"))
    assert [(d["name"], d["address"]) for d in listed] == [("laptop", "10.44.0.10"), ("phone", "10.44.0.11")]
    laptop_up(b, topo, confs["laptop"])
    imap = listener(topo, "server", 993)
    try:
        deadline = time.time() + WAIT * 2
        while True:  # the first handshake
            got = connect_from(topo, "laptop", SERVER_TUN, 993, timeout=3)
            if got == "connected" or time.time() > deadline:
                break
        assert got == "connected"
        assert imap.stdout.readline().strip() == "10.44.0.10"   # the device's own tunnel address
    finally:
        imap.kill()
    # port 25 is for other mail servers, not for devices
    assert connect_from(topo, "laptop", SERVER_TUN, 25, timeout=3).startswith("failed")
    # a device that routes the internet into the tunnel gets nowhere: the VPS
    # forwards devices to the server's IMAP and submission ports only
    topo.run("laptop", "wg", "set", "laptop0", "peer", keys["vps_public_key"], "allowed-ips",
             "%s/32,%s/32" % (SERVER_TUN, REMOTE_IP))
    topo.run("laptop", "ip", "route", "add", REMOTE_IP + "/32", "dev", "laptop0")
    lp = listener(topo, "remote", 2525)
    try:
        assert connect_from(topo, "laptop", REMOTE_IP, 2525, timeout=3).startswith("failed")
    finally:
        lp.kill()
        assert lp.stdout.read().strip() == ""
    # removed: gone from the list, and from the VPS's configuration
    ok(b, "wg", "remove", "laptop")
    assert [d["name"] for d in json.loads(ok(b, "--json", "wg", "list"))] == ["phone"]
    script = ok(b, "vps-config", "--vps-ip", VPS_IP)
    assert "device phone" in script and "device laptop" not in script


RELAY_PORT = 4470


def relay_up(b, topo):
    """roostctl bus relay in the server's namespace, as the compose stack's
    bus-relay runs it: on the tunnel address, the bus through its ipc files."""
    p = b.spawn("relay", ["ip", "netns", "exec", topo.ns["server"], buslib.binary("roostctl"), "bus", "relay"])
    buslib.wait_until(lambda: "relay.listening" in p.log() or not p.alive(), what="the relay listening")
    assert p.alive() and "endpoint=tcp://%s:%d" % (SERVER_TUN, RELAY_PORT) in p.log(), p.log()
    return p


def remote_tail(b, topo, where, *args):
    """roostctl bus tail --remote SERVER_TUN in a namespace (tracked by b)."""
    argv = ["ip", "netns", "exec", topo.ns[where], buslib.binary("roostctl"), "--timeout",
            str(int(WAIT * 2000)), "bus", "tail", "--remote", SERVER_TUN] + list(args)
    return b.spawn("tail-" + where, argv, stdout=subprocess.PIPE)


def relay_drops(topo):
    """Packets dropped by the server namespace's ROOST-RELAY chain."""
    out = topo.run("server", "iptables", "-w", "-L", "ROOST-RELAY", "-v", "-x", "-n").stdout
    return sum(int(l.split()[0]) for l in out.splitlines() if " DROP " in " %s " % l)


INJECT = r"""
import json, socket, sys, time, zmq
c = zmq.Context()
x = c.socket(zmq.XSUB)     # XSUB may send messages to a publisher: the relay must drop them
x.setsockopt(zmq.LINGER, 1000)
x.connect("tcp://%(host)s:%(port)d")
time.sleep(2)
env = {"type": "storaged.domain.add", "v": 1, "id": "inject-1", "name": "evil.example",
       "idem": "0123456789abcdef0123456789abcdef"}
x.send_multipart([b"RBC1", b"storaged", json.dumps(env).encode()])
x.send(b"\x02storaged.domain.add " + json.dumps(env).encode())
x.send(b"\x01" + b"a" * 4000)             # longer than a subscription: connection dropped
time.sleep(1)
x.close()
s = socket.create_connection(("%(host)s", %(port)d), 10)   # not ZMTP at all
s.settimeout(10)
s.sendall(b"EHLO evil.example\r\n" * 8)
got = b""
try:
    while True:
        d = s.recv(4096)
        if not d:
            break
        got += d
    print("closed", len(got))
except ConnectionResetError:
    print("closed (reset)", len(got))
except socket.timeout:
    print("still open", len(got))
"""


def test_device_tails_the_bus_through_the_relay_and_nothing_else_does(bus, topo):
    """wg add-peer --bus-tail: the laptop tails the bus over the tunnel; the
    phone (without), the VPS, the home LAN and the internet cannot."""
    b, keys, confs = stack(bus, topo, devices=("laptop", "phone"), bus_tail=("laptop",))
    # wg add-peer tells the device's owner how to tail, if it may
    assert "roostctl bus tail --remote %s:%d" % (SERVER_TUN, RELAY_PORT) in confs["laptop"]
    assert "bus tail" not in confs["phone"]
    assert [d["bus_tail"] for d in json.loads(ok(b, "--json", "wg", "list"))] == [True, False]
    # the VPS forwards the relay's port from the laptop only
    relay_rules = [l for l in vps_rules(topo) if "--dport %d " % RELAY_PORT in l + " "]
    assert len(relay_rules) == 1 and "-s 10.44.0.10/32" in relay_rules[0], relay_rules
    relay = relay_up(b, topo)
    laptop_up(b, topo, confs["laptop"])

    # the device sees a real envelope, filtered by type; busd's redaction holds
    tail = remote_tail(b, topo, "laptop", "--type", "storaged.user.verify", "--count", "4")
    secret = "relay-secret-51c0"
    deadline = time.time() + WAIT * 2
    while tail.alive() and time.time() < deadline:
        verify(b, "alice@example.org", secret)   # a storaged.user.verify request with a password
        time.sleep(0.5)
    out, _ = tail.popen.communicate(timeout=WAIT)
    assert tail.popen.returncode == 0, tail.log()
    lines = [json.loads(l) for l in out.splitlines()]
    assert len(lines) == 4 and secret not in out, out
    assert {l["env"]["type"] for l in lines} == {"storaged.user.verify"}, out
    requests = [l for l in lines if l["dir"] == "request"]
    assert requests and all(l["env"]["password"] == "[redacted]" for l in requests), out
    assert "relay.device addr=10.44.0.10" in relay.log()

    # the VPS's own tunnel address is no device: through the tunnel, but not
    # from a device's address, so dropped before the relay (ROOST-RELAY in
    # the server's namespace; the relay's own ZAP check would refuse it too,
    # test_bus_relay.py)
    before = relay_drops(topo)
    assert connect_from(topo, "vps", SERVER_TUN, RELAY_PORT, timeout=3).startswith("failed")
    assert relay_drops(topo) > before   # it arrived, and the chain dropped it

    # the home LAN, even routed to the tunnel address, is dropped too: not
    # through the tunnel
    topo.run("home", "ip", "route", "add", "10.44.0.0/24", "via", SERVER_LAN)
    before = relay_drops(topo)
    assert connect_from(topo, "lanpc", SERVER_TUN, RELAY_PORT, timeout=3).startswith("failed")
    assert relay_drops(topo) > before
    assert "relay.refused" not in relay.log() and relay.log().count("relay.device") == 1

    # the VPS's public side: the port is not forwarded, nor routed through
    assert connect_from(topo, "remote", VPS_IP, RELAY_PORT, timeout=3).startswith("failed")
    topo.run("remote", "ip", "route", "add", "10.44.0.0/24", "via", VPS_IP)
    assert connect_from(topo, "remote", SERVER_TUN, RELAY_PORT, timeout=3).startswith("failed")

    # what a device sends to the relay goes nowhere: not to busd, not to storaged
    got = topo.run("laptop", "/usr/bin/python3", "-c", INJECT % {"host": SERVER_TUN, "port": RELAY_PORT},
                   timeout=WAIT * 2).stdout
    assert got.startswith("closed"), got          # not ZMTP: the connection is closed
    buslib.wait_until(lambda: "relay.dropped" in relay.log(), what="the relay dropping what a device sent")
    assert b"evil.example" not in b"".join(line for _, line in b.tap.snapshot())
    assert "evil.example" not in ok(b, "domain", "list")
    # and the relay still serves the device
    tail = remote_tail(b, topo, "laptop", "--service", "busd", "--count", "1")
    deadline = time.time() + WAIT * 2
    while tail.alive() and time.time() < deadline:
        b.roostctl(["bus", "ping", "busd"])
        time.sleep(0.5)
    out, _ = tail.popen.communicate(timeout=WAIT)
    assert tail.popen.returncode == 0 and json.loads(out)["env"]["type"] == "busd.control.ping", tail.log()
    assert relay.alive(), relay.log()

    # the phone, added without --bus-tail, reaches IMAP and not the relay
    topo.run("laptop", "wg-quick", "down", os.path.join(b.tmp, "laptop0.conf"))
    laptop_up(b, topo, confs["phone"], ifname="phone0")
    imap = listener(topo, "server", 993)
    try:
        deadline = time.time() + WAIT * 2
        while connect_from(topo, "laptop", SERVER_TUN, 993, timeout=3) != "connected":
            assert time.time() < deadline, "the phone never reached IMAP"
        assert imap.stdout.readline().strip() == "10.44.0.11"
    finally:
        imap.kill()
    assert connect_from(topo, "laptop", SERVER_TUN, RELAY_PORT, timeout=3).startswith("failed")
    assert "relay.device addr=10.44.0.11" not in relay.log()
