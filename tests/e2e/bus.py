"""
bus.py — helpers for the end-to-end bus tests (tests/e2e/test_bus.py).

A Bus is one private bus directory with its busd and every process a test
starts on it (echo-workers, bus-client, roostctl, rogue processes under
other uids). Every process is tracked so that Bus.close() can stop them all
(SIGTERM, then SIGKILL after a grace period), whatever the test did.

Also here: a pyzmq DEALER client speaking the client protocol directly
(Client), a raw worker for protocol tests (RawWorker) and the tap recorder
(TapRecorder) the `bus` fixture runs in the background.

Binaries come from $ROOST_BIN (default <repo>/build/bin): `make test
SANITIZE=1` points it at build/san/bin. Timeouts are generous on purpose:
a 2-core machine running everything under ASan is slow.
"""

import json
import os
import shutil
import signal
import subprocess
import tempfile
import threading
import time
import uuid

import zmq

ROOT = os.path.normpath(os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", ".."))
BIN = os.environ.get("ROOST_BIN") or os.path.join(ROOT, "build", "bin")
PYTHON = "/usr/bin/python3"
# make test SANITIZE=1 runs build/san/bin: memory numbers there are ASan's, not ours.
SANITIZED = os.path.normpath(BIN).endswith(os.path.join("san", "bin"))

CLIENT_TAG = b"RBC1"
WORKER_TAG = b"RBW1"
W_READY, W_REQUEST, W_REPLY, W_HEARTBEAT, W_DISCONNECT = (bytes([i]) for i in range(1, 6))

# How long to wait for things that should happen "at once" (seconds).
WAIT = float(os.environ.get("ROOST_TEST_WAIT", "60"))
STOP_GRACE = 10.0

_ctx = None


def zctx():
    """One pyzmq context for the whole test session."""
    global _ctx
    if _ctx is None:
        _ctx = zmq.Context()
    return _ctx


def binary(name):
    path = os.path.join(BIN, name)
    if not os.access(path, os.X_OK):
        raise RuntimeError("%s not found or not executable (run make first, or set ROOST_BIN)" % path)
    return path


def wait_until(pred, timeout=WAIT, interval=0.1, what="condition"):
    """Polls pred() until it returns a true value (returned); raises on timeout."""
    deadline = time.monotonic() + timeout
    last_exc = None
    while True:
        try:
            v = pred()
            if v:
                return v
        except Exception as e:  # noqa: BLE001 - polled predicates may fail transiently
            last_exc = e
        if time.monotonic() >= deadline:
            raise TimeoutError("timed out after %.0f s waiting for %s%s" % (
                timeout, what, " (last error: %r)" % (last_exc,) if last_exc else ""))
        time.sleep(interval)


def new_id(prefix="py"):
    return "%s-%s" % (prefix, uuid.uuid4().hex[:16])


# ---- processes ------------------------------------------------------------------


class Proc:
    """A process started by a Bus: Popen, its name, its log file."""

    def __init__(self, name, popen, log_path):
        self.name = name
        self.popen = popen
        self.log_path = log_path

    @property
    def pid(self):
        return self.popen.pid

    def alive(self):
        return self.popen.poll() is None

    def log(self):
        try:
            with open(self.log_path, "rb") as f:
                return f.read().decode("utf-8", "replace")
        except OSError:
            return ""

    def kill(self, sig=signal.SIGKILL):
        if self.alive():
            try:
                self.popen.send_signal(sig)
            except ProcessLookupError:
                pass

    def wait(self, timeout=WAIT):
        return self.popen.wait(timeout=timeout)

    def __repr__(self):
        return "<%s pid %d>" % (self.name, self.pid)


def stop_procs(procs, grace=STOP_GRACE):
    """SIGTERM every live process, SIGKILL those still alive after grace."""
    for p in procs:
        p.kill(signal.SIGTERM)
    deadline = time.monotonic() + grace
    for p in procs:
        left = max(0.0, deadline - time.monotonic())
        try:
            p.popen.wait(timeout=left)
        except subprocess.TimeoutExpired:
            p.kill(signal.SIGKILL)
            try:
                p.popen.wait(timeout=grace)
            except subprocess.TimeoutExpired:
                pass
    for p in procs:
        for s in (p.popen.stdout, p.popen.stderr, p.popen.stdin):
            if s is not None:
                try:
                    s.close()
                except OSError:
                    pass


SANITIZER_MARKS = ("ERROR: AddressSanitizer", "ERROR: LeakSanitizer", "runtime error:",
                   "ERROR: UndefinedBehaviorSanitizer")


class Bus:
    """A private bus: temp dir, busd, and every process started on it."""

    def __init__(self, env=None, keep=False):
        self.tmp = tempfile.mkdtemp(dir="/tmp", prefix="rb")
        self.dir = os.path.join(self.tmp, "bus")
        self.data_dir = os.path.join(self.tmp, "data")
        os.makedirs(self.data_dir)
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("ROOST_")}
        self.env.update({
            "ROOST_BUS_DIR": self.dir,
            "ROOST_DATA_DIR": self.data_dir,
            "ROOST_LOG_LEVEL": "info",
        })
        self.env.update(env or {})
        self.procs = []
        self.busd = None
        self.tap = None
        self.keep = keep
        self._n = 0
        self._clients = []

    # -- process management

    def _log_path(self, name):
        self._n += 1
        return os.path.join(self.tmp, "%02d-%s.log" % (self._n, name))

    def spawn(self, name, argv, env=None, stdout=None, preexec_fn=None, stdin=subprocess.DEVNULL,
              user=None):
        """Starts argv with the bus environment (+ env); stderr to a log file.
        stdout: None for the log file too, or subprocess.PIPE. user: (uid,
        gid) to run the process as (the test must run as root); it gets no
        supplementary groups."""
        ids = {}
        if user is not None:
            ids = {"user": user[0], "group": user[1], "extra_groups": []}
        full_env = dict(self.env)
        full_env.update(env or {})
        log_path = self._log_path(name)
        log = open(log_path, "wb")
        try:
            popen = subprocess.Popen(
                argv, env=full_env, cwd=self.tmp, stdin=stdin,
                stdout=log if stdout is None else stdout, stderr=log,
                preexec_fn=preexec_fn, text=(stdout is not None) or None,
                bufsize=1 if stdout is not None else -1, **ids)
        finally:
            log.close()
        p = Proc(name, popen, log_path)
        self.procs.append(p)
        return p

    def start_busd(self, env=None):
        p = self.spawn("busd", [binary("busd")], env=env)
        self.busd = p
        return p

    def sockets_exist(self):
        return all(os.path.exists(os.path.join(self.dir, s))
                   for s in ("clients", "workers", "events.in", "events.out", "tap"))

    def wait_ready(self, timeout=WAIT):
        """Waits for busd's sockets and a successful `roostctl status`."""
        def ready():
            if self.busd is not None and not self.busd.alive():
                raise RuntimeError("busd exited with %s:\n%s" % (self.busd.popen.returncode,
                                                                   self.busd.log()))
            return self.sockets_exist() and self.roostctl(["status"], timeout=20).returncode == 0
        wait_until(ready, timeout=timeout, interval=0.2, what="busd to answer roostctl status")

    def stop_busd(self, sig=signal.SIGTERM, timeout=WAIT):
        p = self.busd
        p.kill(sig)
        return p.wait(timeout=timeout)

    def run(self, name, argv, env=None, timeout=WAIT, preexec_fn=None, stdin_data=None, user=None):
        """Runs a short-lived command to completion (tracked while it runs);
        returns CompletedProcess with text stdout and the log as stderr."""
        p = self.spawn(name, argv, env=env, stdout=subprocess.PIPE, preexec_fn=preexec_fn,
                       stdin=subprocess.PIPE if stdin_data is not None else subprocess.DEVNULL,
                       user=user)
        try:
            out, _ = p.popen.communicate(input=stdin_data, timeout=timeout)
        except subprocess.TimeoutExpired:
            p.kill(signal.SIGKILL)
            out, _ = p.popen.communicate()
            raise TimeoutError("%s did not finish in %.0f s; output so far:\n%s\nlog:\n%s" % (
                " ".join(argv), timeout, out, p.log()))
        self.procs.remove(p)
        return subprocess.CompletedProcess(argv, p.popen.returncode, out, p.log())

    def roostctl(self, args, timeout=WAIT, env=None):
        return self.run("roostctl", [binary("roostctl"), "--timeout", "5000"] + list(args),
                        env=env, timeout=timeout)

    def status(self):
        """busd.status.get through `roostctl --json status` (dict)."""
        r = self.roostctl(["--json", "status"])
        if r.returncode != 0:
            raise RuntimeError("roostctl status failed (%d): %s" % (r.returncode, r.stderr))
        return json.loads(r.stdout)

    def workers(self, service="echo", status=None):
        """The worker entries of one service in busd's status."""
        st = status or self.status()
        for svc in st["services"]:
            if svc["name"] == service:
                return svc["workers"]
        return []

    def worker_pids(self, service="echo", status=None):
        return sorted(w["pid"] for w in self.workers(service, status))

    def start_workers(self, n=1, args=(), env=None, preexec_fn=None, wait=True,
                      service="echo", timeout=WAIT, user=None):
        """Starts n echo-workers; with wait, until busd lists all of them
        under service and service.control."""
        procs = [self.spawn("echo-worker", [binary("echo-worker")] + list(args), env=env,
                            preexec_fn=preexec_fn, user=user) for _ in range(n)]
        if wait:
            self.wait_workers([p.pid for p in procs], service=service, timeout=timeout)
        return procs

    def wait_workers(self, pids, service="echo", timeout=WAIT):
        want = set(pids)

        def registered():
            for p in self.procs:
                if p.pid in want and not p.alive():
                    raise RuntimeError("worker %d exited:\n%s" % (p.pid, p.log()))
            st = self.status()
            return (want <= set(self.worker_pids(service, st)) and
                    want <= set(self.worker_pids(service + ".control", st)))
        wait_until(registered, timeout=timeout, interval=0.2,
                   what="workers %s registered as %s" % (sorted(want), service))

    def bus_client(self, args, env=None):
        """Starts bus-client with stdout piped (text, line-buffered)."""
        return self.spawn("bus-client", [binary("bus-client")] + [str(a) for a in args],
                          env=env, stdout=subprocess.PIPE)

    def run_bus_client(self, args, env=None, timeout=WAIT * 3):
        """Runs bus-client to completion: (returncode, [json lines], summary or None, log)."""
        r = self.run("bus-client", [binary("bus-client")] + [str(a) for a in args], env=env,
                     timeout=timeout)
        lines = [json.loads(line) for line in r.stdout.splitlines() if line.strip()]
        summary = next((x for x in lines if x.get("summary")), None)
        return r.returncode, lines, summary, r.stderr

    def client(self):
        c = Client(self.dir)
        self._clients.append(c)
        return c

    # -- teardown

    def sanitizer_reports(self):
        bad = []
        for p in self.procs:
            text = p.log()
            if any(m in text for m in SANITIZER_MARKS):
                bad.append("%s (pid %d, %s):\n%s" % (p.name, p.pid, p.log_path, text[-4000:]))
        return bad

    def close(self):
        for c in self._clients:
            c.close()
        self._clients = []
        stop_procs(self.procs)
        if self.tap is not None:
            self.tap.stop()

    def cleanup_dir(self):
        if not self.keep:
            shutil.rmtree(self.tmp, ignore_errors=True)

    def logs(self):
        return "\n".join("==== %s pid %d (%s)\n%s" % (p.name, p.pid, p.log_path, p.log()[-3000:])
                         for p in self.procs)


# ---- a client speaking the wire protocol ----------------------------------------------


class Client:
    """A DEALER on <bus>/clients: [RBC1][service][envelope][raw?]."""

    def __init__(self, bus_dir):
        self.sock = zctx().socket(zmq.DEALER)
        self.sock.setsockopt(zmq.LINGER, 0)
        self.sock.connect("ipc://%s/clients" % bus_dir)

    def close(self):
        if self.sock is not None:
            self.sock.close(0)
            self.sock = None

    def send(self, frames):
        self.sock.send_multipart(frames)

    def recv(self, timeout=WAIT):
        """The next message (list of bytes frames) or None after timeout seconds."""
        if self.sock.poll(int(timeout * 1000)):
            return self.sock.recv_multipart()
        return None

    def request(self, service, env, raw=None):
        """Sends a request: env is a dict (id filled in when missing) or bytes."""
        if isinstance(env, dict):
            env = dict(env)
            env.setdefault("v", 1)
            env.setdefault("id", new_id())
            body = json.dumps(env).encode()
        else:
            body = env
        frames = [CLIENT_TAG, service.encode() if isinstance(service, str) else service, body]
        if raw is not None:
            frames.append(raw)
        self.send(frames)
        return env

    def reply(self, id_=None, timeout=WAIT):
        """Waits for a reply (to id_ if given): (envelope dict, raw or None, frames)."""
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            frames = self.recv(max(0.0, left))
            if frames is None:
                raise TimeoutError("no reply%s within %.0f s" % (
                    " to %s" % id_ if id_ else "", timeout))
            env = json.loads(frames[2]) if len(frames) >= 3 else None
            if id_ is None or (isinstance(env, dict) and env.get("id") == id_):
                return env, (frames[3] if len(frames) > 3 else None), frames

    def call(self, service, env, raw=None, timeout=WAIT):
        """request + reply; returns (envelope, raw)."""
        sent = self.request(service, env, raw)
        env_, raw_, _ = self.reply(sent["id"] if isinstance(sent, dict) else None, timeout)
        return env_, raw_

    def echo(self, text="hello", timeout=WAIT, **fields):
        env, raw = self.call("echo", dict({"type": "echo.payload.echo", "text": text}, **fields),
                             timeout=timeout)
        return env


# ---- a raw worker ---------------------------------------------------------------------------


class RawWorker:
    """A DEALER on <bus>/workers speaking the worker protocol by hand."""

    def __init__(self, bus_dir):
        self.sock = zctx().socket(zmq.DEALER)
        self.sock.setsockopt(zmq.LINGER, 0)
        self.sock.connect("ipc://%s/workers" % bus_dir)

    def ready(self, service, info=None):
        info = info or {"pid": os.getpid(), "started": int(time.time() * 1000), "credit": 8}
        self.sock.send_multipart([WORKER_TAG, W_READY, service.encode(), json.dumps(info).encode()])

    def recv(self, timeout=WAIT):
        if self.sock.poll(int(timeout * 1000)):
            return self.sock.recv_multipart()
        return None

    def close(self):
        self.sock.close(0)


# ---- the tap -------------------------------------------------------------------------------


class TapRecorder:
    """A SUB on <bus>/tap in a background thread, keeping every line."""

    def __init__(self, bus_dir, prefix=b""):
        self.endpoint = "ipc://%s/tap" % bus_dir
        self.prefix = prefix
        self.lines = []          # (topic bytes, line bytes)
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._started = threading.Event()
        self._thread = threading.Thread(target=self._run, name="tap-recorder", daemon=True)
        self.error = None

    def start(self):
        self._thread.start()
        self._started.wait(10)
        return self

    def _run(self):
        sock = zctx().socket(zmq.SUB)
        try:
            sock.setsockopt(zmq.LINGER, 0)
            sock.setsockopt(zmq.RCVHWM, 0)
            sock.setsockopt(zmq.SUBSCRIBE, self.prefix)
            sock.connect(self.endpoint)
            self._started.set()
            while not self._stop.is_set():
                if not sock.poll(100):
                    continue
                while True:
                    try:
                        frames = sock.recv_multipart(zmq.NOBLOCK)
                    except zmq.Again:
                        break
                    with self._lock:
                        self.lines.append(frames)
        except Exception as e:  # noqa: BLE001 - reported at teardown
            self.error = e
        finally:
            sock.close(0)
            self._started.set()

    def stop(self):
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(10)

    def snapshot(self):
        with self._lock:
            return list(self.lines)

    def after_replies(self, topic, n=1, timeout=WAIT):
        """A snapshot taken once the tap has shown n replies of type topic.
        busd mirrors an envelope on the tap as it routes it, but this
        recorder's thread may read it a little after the caller has its
        reply; waiting for the reply's own line makes a snapshot complete."""
        def replies():
            snap = self.snapshot()
            got = 0
            for frames in snap:
                if frames[0] == topic and b'"status"' in frames[-1]:
                    try:
                        if "status" in json.loads(frames[-1])["env"]:
                            got += 1
                    except (ValueError, KeyError, TypeError):
                        pass
            return snap if got >= n else None
        return wait_until(replies, timeout=timeout, interval=0.05,
                          what="%d %s replies on the tap" % (n, topic.decode()))

    def parsed(self):
        """Recorded lines that parse, as dicts."""
        out = []
        for frames in self.snapshot():
            try:
                out.append(json.loads(frames[-1]))
            except ValueError:
                pass
        return out

    def wait_for(self, pred, timeout=WAIT, what="a tap line"):
        return wait_until(lambda: [x for x in self.parsed() if pred(x)], timeout=timeout,
                          what=what)


TAP_DIRS = ("request", "reply", "event", "error")


def check_tap_line(frames, validate):
    """Checks one recorded tap message; returns a problem string or None."""
    if len(frames) != 2:
        return "tap message has %d frames, want 2 (type, line)" % len(frames)
    topic, line = frames
    try:
        obj = json.loads(line)
    except ValueError as e:
        return "not JSON (%s)" % e
    if not isinstance(obj, dict):
        return "not a JSON object"
    for key in ("ts", "dir", "from", "service", "raw", "env"):
        if key not in obj:
            return "no %r key" % key
    if obj["dir"] not in TAP_DIRS:
        return "dir %r is not one of %s" % (obj["dir"], TAP_DIRS)
    if not isinstance(obj["raw"], int) or obj["raw"] < 0:
        return "raw %r is not a size" % (obj["raw"],)
    env = obj["env"]
    if not isinstance(env, dict) or env.get("type", "").encode() != topic:
        return "topic %r is not env.type %r" % (topic, env.get("type") if isinstance(env, dict) else env)
    try:
        validate(env)
    except Exception as e:  # noqa: BLE001 - any schema problem is the finding
        return "envelope does not validate: %s" % e
    return None
