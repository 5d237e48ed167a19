"""
test_bus_relay.py — roostctl bus relay and bus tail --remote on loopback,
without a tunnel: the relay's own checks. (Through a real WireGuard tunnel,
with the namespace's and the VPS's firewall: test_wg_vps.py.)

wg_net is set to 127.0.0.0/24 here, so the "devices" are 127.0.0.10 to
127.0.0.254 and the relay listens on 127.0.0.2; a client connecting from
127.0.0.1 is no device. Proved: a device gets busd's tap lines, with the
subscription filters of bus tail; an address outside the devices' range
is refused by the relay's ZAP handler (and bus tail says so and exits 1;
bus tail --remote itself, with its filters, runs from a device's
namespace in test_wg_vps.py: here it can only connect from 127.0.0.1);
the relay runs under a uid whose bus role is "tap" (the compose stack's)
and exits with a clear line under a uid busd refuses the tap to; it will
not listen on the wildcard address; it subscribes to busd's tap only while
a device subscribes.
"""

import json
import os
import socket
import subprocess

import pytest

import bus as buslib
from bus import WAIT, wait_until
from test_bus import BUS_GID, STRANGER_UID, TAP_UID, acl_bus, assert_echo_works  # noqa: F401

NET = {"ROOST_WG_NET": "127.0.0.0/24"}

DEVICE = r"""
import json, sys, time, zmq
c = zmq.Context()
s = c.socket(zmq.SUB)
s.setsockopt(zmq.LINGER, 0)
s.setsockopt(zmq.SUBSCRIBE, sys.argv[2].encode())
s.connect("tcp://%s:0;127.0.0.2:%s" % (sys.argv[3], sys.argv[1]))   # from a device's address
print("connected", flush=True)
deadline = time.time() + float(sys.argv[4])
while time.time() < deadline:
    if s.poll(100):
        topic, line = s.recv_multipart()
        print(json.dumps([topic.decode(), json.loads(line)]), flush=True)
        break
"""


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.2", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def start_relay(b, user=None, env=None):
    port = free_port()
    full = dict(NET, ROOST_BUS_RELAY_PORT=str(port))
    full.update(env or {})
    p = b.spawn("relay", [buslib.binary("roostctl"), "bus", "relay"], env=full, user=user)
    wait_until(lambda: "relay.listening" in p.log() or not p.alive(), what="the relay listening")
    assert p.alive(), p.log()
    return p, port


def device_sees(b, port, prefix, source="127.0.0.10", ping=True, seconds=WAIT):
    """A device at source subscribes to prefix and returns the first
    [topic, line] it gets while busd is pinged, or None."""
    d = b.spawn("device", [buslib.PYTHON, "-c", DEVICE, str(port), prefix, source, str(seconds)],
                stdout=subprocess.PIPE)
    assert d.popen.stdout.readline().strip() == "connected", d.log()
    while d.alive() and ping:
        r = b.roostctl(["bus", "ping", "busd"])
        assert r.returncode == 0, r.stderr
        try:
            d.popen.wait(timeout=0.3)
        except subprocess.TimeoutExpired:
            pass
    line = d.popen.stdout.readline()
    d.popen.wait(timeout=WAIT)
    return json.loads(line) if line else None


def test_device_gets_the_tap_and_others_are_refused(bus):
    relay, port = start_relay(bus)
    assert "endpoint=tcp://127.0.0.2:%d" % port in relay.log()
    # nobody subscribed yet: the relay does not ask busd for the tap either
    assert "relay.watching" not in relay.log()
    topic, line = device_sees(bus, port, "busd.control")
    assert topic == "busd.control.ping" and line["env"]["type"] == topic, line
    assert line["dir"] in ("request", "reply") and "ts" in line, line
    assert "relay.device addr=127.0.0.10" in relay.log() and "relay.watching" in relay.log()
    # the device has gone: the relay lets go of the tap
    wait_until(lambda: "relay.idle" in relay.log(), what="the relay idle again")

    # 127.0.0.1 is not in the devices' range: refused, and bus tail says so
    r = bus.roostctl(["bus", "tail", "--remote", "127.0.0.2:%d" % port, "--count", "1"])
    assert r.returncode == 1 and "refused us" in r.stderr, r.stderr
    assert r.stderr.count("\n") == 1 and r.stdout == "", r.stderr
    assert "relay.refused addr=127.0.0.1 " in relay.log()
    # and from 127.0.0.9, just below the range
    assert device_sees(bus, port, "", source="127.0.0.9", seconds=3) is None
    assert "relay.refused addr=127.0.0.9 " in relay.log()


def test_relay_under_the_tap_role(acl_bus):
    acl_bus.start_workers(1)
    relay, port = start_relay(acl_bus, user=(TAP_UID, BUS_GID))
    wait_until(lambda: "relay.tap connected" in relay.log(), what="the relay on busd's tap")
    topic, line = device_sees(acl_bus, port, "")
    assert topic and line["env"]["type"] == topic, line


def test_relay_refused_the_tap_says_so(acl_bus):
    port = free_port()
    p = acl_bus.spawn("relay", [buslib.binary("roostctl"), "bus", "relay"],
                      env=dict(NET, ROOST_BUS_RELAY_PORT=str(port)), user=(STRANGER_UID, BUS_GID))
    assert p.wait(timeout=WAIT) == 1, p.log()
    assert "busd refuses its tap to uid %d" % STRANGER_UID in p.log(), p.log()


def test_relay_settings_are_checked(bus):
    r = bus.roostctl(["bus", "relay", "--listen", "0.0.0.0:4470"])
    assert r.returncode == 1 and "not the wildcard" in r.stderr, r.stderr
    r = bus.roostctl(["bus", "relay", "--listen", "localhost"])
    assert r.returncode == 1 and "ADDR:PORT" in r.stderr, r.stderr
    r = bus.roostctl(["bus", "relay"], env={"ROOST_BUS_RELAY_PORT": "70000"})
    assert r.returncode == 1 and "ROOST_BUS_RELAY_PORT" in r.stderr, r.stderr
    r = bus.roostctl(["bus", "tail", "--remote", "10.44.0.2:x"])
    assert r.returncode == 1 and "--remote" in r.stderr, r.stderr
    # nothing there: tail says so within --timeout instead of waiting forever
    r = bus.roostctl(["--timeout", "1500", "bus", "tail", "--remote", "127.0.0.2:%d" % free_port()])
    assert r.returncode == 1 and "no answer from the relay" in r.stderr, r.stderr


def test_local_tail_refused_says_so(acl_bus):
    """bus tail on the bus itself under a uid busd refuses the tap to: one
    line saying so, not a silent wait (it used to wait forever)."""
    r = acl_bus.run("roostctl", [buslib.binary("roostctl"), "bus", "tail", "--count", "1"],
                    user=(STRANGER_UID, BUS_GID), timeout=WAIT)
    assert r.returncode == 1 and "refused us" in r.stderr and "bus_acl" in r.stderr, r.stderr


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root (a network namespace)")
def test_relay_sleeps_until_its_address_exists(bus):
    """Without a tunnel the relay is a sleeping process: one thread, no
    ZeroMQ context, until the address appears; then it listens."""
    ns = "roostrelay-%x" % (os.getpid() & 0xffff)
    subprocess.run(["ip", "netns", "add", ns], check=True)
    try:
        subprocess.run(["ip", "-n", ns, "link", "set", "lo", "up"], check=True)
        p = bus.spawn("relay", ["ip", "netns", "exec", ns, buslib.binary("roostctl"), "bus", "relay"],
                      env={"ROOST_WG_NET": "10.44.0.0/24"})
        wait_until(lambda: "relay.waiting" in p.log() or not p.alive(), what="the relay waiting")
        assert p.alive(), p.log()
        # `ip netns exec` execs roostctl: p.pid is the relay
        assert len(os.listdir("/proc/%d/task" % p.pid)) == 1   # no zmq I/O threads yet
        subprocess.run(["ip", "-n", ns, "addr", "add", "10.44.0.2/24", "dev", "lo"], check=True)
        wait_until(lambda: "relay.listening" in p.log() or not p.alive(), what="the relay listening")
        assert "endpoint=tcp://10.44.0.2:4470" in p.log(), p.log()
    finally:
        for pid in subprocess.run(["ip", "netns", "pids", ns], capture_output=True, text=True).stdout.split():
            try:
                os.kill(int(pid), 15)
            except ProcessLookupError:
                pass
        subprocess.run(["ip", "netns", "del", ns], capture_output=True)
