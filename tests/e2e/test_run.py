"""
test_run.py — roost-run, the `make run` supervisor (DESIGN.md "Interfaces"):
it starts busd and the services, prints one ready line when all have
registered with busd, restarts a crashed service with backoff, and on
SIGTERM or Ctrl-C (SIGINT) stops every child, waits for them and exits 0.
Nothing here needs a terminal.

Run: /usr/bin/python3 -m pytest tests/e2e/test_run.py -v
Binaries: $ROOST_BIN (default <repo>/build/bin; `make` builds them).

Every process a test starts runs in its own session, and a finalizer kills
that whole process group, so a failing test leaves nothing behind.
"""

import json
import os
import re
import shutil
import signal
import subprocess
import tempfile
import threading
import time

import pytest

ROOT = os.path.normpath(os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", ".."))
BIN = os.path.abspath(os.environ.get("ROOST_BIN", os.path.join(ROOT, "build", "bin")))
SERVICES = "busd echo-worker"
READY_S = 30        # roost-run alone
MAKE_READY_S = 180  # make run may have to build first
STOP_S = 15


def need(name):
    path = os.path.join(BIN, name)
    if not os.access(path, os.X_OK):
        pytest.skip(f"{path} not built (run make)")
    return path


def alive(pid):
    """True while pid exists and is not a zombie."""
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii", errors="replace") as f:
            state = f.read().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError, IndexError):
        return False
    return state not in ("Z", "X")


def wait_until(what, timeout, fn, interval=0.1):
    deadline = time.monotonic() + timeout
    while True:
        value = fn()
        if value:
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout} s waiting for {what}")
        time.sleep(interval)


class Proc:
    """A process in its own session whose stdout and stderr lines are
    collected by reader threads (so pipes never fill up)."""

    def __init__(self, argv, env, cwd):
        self.p = subprocess.Popen(argv, env=env, cwd=cwd, stdin=subprocess.DEVNULL,
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                  start_new_session=True)
        self.out, self.err = [], []
        self.readers = [self._reader(self.p.stdout, self.out),
                        self._reader(self.p.stderr, self.err)]

    @staticmethod
    def _reader(stream, lines):
        def run():
            for raw in iter(stream.readline, b""):
                lines.append(raw.decode("utf-8", "replace").rstrip("\n"))
        t = threading.Thread(target=run, daemon=True)
        t.start()
        return t

    def ready_line(self, timeout):
        return wait_until("the ready line", timeout,
                          lambda: next((l for l in self.out if l.startswith("roost: ready")), None)
                          or self._died())

    def _died(self):
        if self.p.poll() is not None:
            for t in self.readers:
                t.join(2)
            pytest.fail(f"exited with {self.p.returncode} before ready:\n"
                        + "\n".join(self.out + self.err))
        return None

    def started_pids(self):
        """Every child pid roost-run logged as started."""
        return [int(m.group(1)) for l in list(self.err)
                for m in [re.search(r" roost-run child\.start .*pid=(\d+)", l)] if m]

    def kill_group(self):
        try:
            os.killpg(self.p.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        try:
            self.p.wait(5)
        except subprocess.TimeoutExpired:
            pass
        for t in self.readers:
            t.join(2)


@pytest.fixture
def datadir():
    d = tempfile.mkdtemp(dir="/tmp", prefix="rr")
    yield d
    shutil.rmtree(d, ignore_errors=True)


@pytest.fixture
def env(datadir):
    """The environment of a `make run`: our own data dir, an empty
    roost.conf (so no ./roost.conf or /etc/roost one leaks in)."""
    e = {k: v for k, v in os.environ.items() if not k.startswith("ROOST_")}
    conf = os.path.join(datadir, "roost.conf")
    open(conf, "w").close()
    e.update(ROOST_CONFIG=conf, ROOST_DATA_DIR=os.path.join(datadir, "var"),
             ROOST_SERVICES=SERVICES)
    return e


@pytest.fixture
def spawn():
    """Starts processes; kills each one's process group at the end."""
    procs = []

    def start(argv, env, cwd):
        p = Proc(argv, env, cwd)
        procs.append(p)
        return p
    yield start
    for p in procs:
        p.kill_group()


def status(env):
    """busd.status.get through roostctl, or None while busd does not answer."""
    e = dict(env, ROOST_BUS_DIR=os.path.join(env["ROOST_DATA_DIR"], "bus"))
    r = subprocess.run([need("roostctl"), "--json", "--timeout", "1000", "status"], env=e,
                       stdin=subprocess.DEVNULL, capture_output=True, timeout=20)
    return json.loads(r.stdout) if r.returncode == 0 else None


def worker_pids(st, service):
    for svc in (st or {}).get("services", []):
        if svc["name"] == service:
            return [w["pid"] for w in svc["workers"]]
    return []


def stop_and_check(proc, signo, target=None):
    """Sends signo to target (default roost-run) and checks that every
    child it ever started is gone within STOP_S and it said so."""
    pids = proc.started_pids()
    assert pids, "no child.start lines on stderr"
    os.kill(target or proc.p.pid, signo)
    wait_until("every child to stop", STOP_S,
               lambda: not any(alive(pid) for pid in pids))
    rc = proc.p.wait(STOP_S)
    for t in proc.readers:
        t.join(5)
    assert "roost: stopped" in proc.out, "\n".join(proc.out + proc.err)
    return rc


def run_and_restart(spawn, env, datadir, signo):
    need("busd"), need("echo-worker")
    proc = spawn([need("roost-run")], env, datadir)
    line = proc.ready_line(READY_S)
    assert re.fullmatch(r"roost: ready \S+ busd, echo \(bus /\S+/bus\)", line), line
    st = status(env)
    old = worker_pids(st, "echo")
    assert old, st
    busd_pid = st["busd"]["pid"]
    assert busd_pid in proc.started_pids() and old[0] in proc.started_pids()

    # A crash: the supervisor logs it and starts echo-worker again (1 s backoff).
    os.kill(old[0], signal.SIGKILL)
    new = wait_until("echo to come back with a new pid", 20,
                     lambda: [p for p in worker_pids(status(env), "echo") if p != old[0]],
                     interval=0.3)
    assert alive(new[0]) and not alive(old[0])
    assert any("child.exit program=echo-worker" in l and "signal=KILL" in l for l in proc.err)
    assert status(env)["busd"]["pid"] == busd_pid, "busd must not be restarted"

    rc = stop_and_check(proc, signo)
    assert rc == 0, "\n".join(proc.out + proc.err)


def test_sigterm_stops_everything(spawn, env, datadir):
    run_and_restart(spawn, env, datadir, signal.SIGTERM)
    assert os.stat(env["ROOST_DATA_DIR"]).st_mode & 0o777 == 0o750


def test_sigint_stops_everything(spawn, env, datadir):
    run_and_restart(spawn, env, datadir, signal.SIGINT)


def test_make_run(spawn, env):
    if shutil.which("make") is None:
        pytest.skip("no make")
    need("busd"), need("echo-worker")
    proc = spawn(["make", "-s", "run"], env, ROOT)
    proc.ready_line(MAKE_READY_S)
    assert worker_pids(status(env), "echo")
    # Only make gets the signal; GNU make passes SIGTERM on to roost-run.
    stop_and_check(proc, signal.SIGTERM, target=proc.p.pid)


@pytest.fixture
def fakebin(datadir):
    """A bin directory holding roost-run and busd next to two misbehaving
    programs: roost-run looks for its programs beside its own executable."""
    d = os.path.join(datadir, "bin")
    os.mkdir(d)
    for name in ("roost-run", "busd"):
        shutil.copy2(need(name), d)
    scripts = {
        # exits at once, every time: backoff must grow 1 s, 2 s, 4 s...
        "crasher": "#!/bin/sh\nexit 3\n",
        # ignores SIGTERM: only the SIGKILL after the grace period stops it
        "stubborn": "#!/usr/bin/python3\nimport signal, time\n"
                    "signal.signal(signal.SIGTERM, signal.SIG_IGN)\ntime.sleep(600)\n",
    }
    for name, text in scripts.items():
        with open(os.path.join(d, name), "w") as f:
            f.write(text)
        os.chmod(os.path.join(d, name), 0o755)
    return d


def exits_of(proc, program):
    return [l for l in list(proc.err) if f"child.exit program={program} " in l]


def test_crash_backoff_doubles(spawn, env, datadir, fakebin):
    proc = spawn([os.path.join(fakebin, "roost-run")], dict(env, ROOST_SERVICES="busd crasher"),
                 datadir)
    wait_until("two crashes", 20, lambda: len(exits_of(proc, "crasher")) >= 2)
    first, second = exits_of(proc, "crasher")[:2]
    assert "exit=3" in first and "restart_in_ms=1000" in first, first
    assert "restart_in_ms=2000" in second, second
    assert not any(l.startswith("roost: ready") for l in proc.out), "crasher never registers"
    assert stop_and_check(proc, signal.SIGTERM) == 0


def test_sigkill_after_grace_period(spawn, env, datadir, fakebin):
    proc = spawn([os.path.join(fakebin, "roost-run")], dict(env, ROOST_SERVICES="stubborn"),
                 datadir)
    wait_until("stubborn to start", 20,
               lambda: any("child.start program=stubborn" in l for l in list(proc.err)))
    time.sleep(0.5)  # let python install its SIGTERM handler
    t0 = time.monotonic()
    assert stop_and_check(proc, signal.SIGTERM) == 0
    assert time.monotonic() - t0 >= 9, "SIGKILL came before the 10 s grace period"
    assert any("child.kill program=stubborn" in l for l in proc.err), "\n".join(proc.err)


def test_unknown_service_is_an_error(env, datadir):
    e = dict(env, ROOST_SERVICES="busd no-such-program")
    r = subprocess.run([need("roost-run")], env=e, cwd=datadir, stdin=subprocess.DEVNULL,
                       capture_output=True, text=True, timeout=20)
    assert r.returncode == 1
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and "no-such-program" in lines[0], r.stderr
    assert r.stdout == ""
    assert not os.path.exists(os.path.join(env["ROOST_DATA_DIR"], "bus")), "nothing started"


def test_help_and_bad_arguments(env, datadir):
    r = subprocess.run([need("roost-run"), "--help"], env=env, cwd=datadir,
                       stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=20)
    assert r.returncode == 0 and "ROOST_SERVICES" not in r.stderr
    for word in ("services", "data_dir", "bus_dir", "listen", "ROOST_"):
        assert word in r.stdout
    r = subprocess.run([need("roost-run"), "--bogus"], env=env, cwd=datadir,
                       stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=20)
    assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1, r.stderr
