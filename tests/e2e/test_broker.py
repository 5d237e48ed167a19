"""
busd's bookkeeping under adversarial or unlucky timing (services/busd/broker.c):
tickets (a worker answers only what it was asked, once), streams whose chunk 0
waited in the queue, bindings released when a stream ends, the queue's byte
bound. Run: /usr/bin/python3 -m pytest tests/e2e/test_broker.py
"""
import json
import os
import time

import bus as buslib
from bus import WAIT, new_id, wait_until

W_REQUEST, W_REPLY = b"\x02", b"\x03"


def next_request(worker, timeout=WAIT):
    """The next REQUEST a raw worker gets (heartbeats skipped): its frames."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        f = worker.recv(timeout=max(0.1, deadline - time.monotonic()))
        if f is not None and f[1] == W_REQUEST:
            return f
    raise TimeoutError("no request reached the raw worker")


def echo_reply(req_env):
    return json.dumps({"type": req_env["type"], "v": 1, "id": req_env["id"], "status": "ok",
                       "worker_pid": os.getpid(), "raw_len": 0, "seq": 1}).encode()


def test_worker_answers_only_its_own_tickets_once(make_bus):
    bus = make_bus(env={"ROOST_BUS_HEARTBEAT_MS": "2000"})
    w = buslib.RawWorker(bus.dir)
    try:
        w.ready("echo")
        wait_until(lambda: bus.workers("echo"), what="raw worker registered")
        c = bus.client()
        sent = c.request("echo", {"type": "echo.payload.echo", "text": "t"})
        f = next_request(w)
        ticket, env = f[2], json.loads(f[3])
        assert len(ticket) == 8 and env["id"] == sent["id"]
        # A ticket busd never issued: dropped, the client hears nothing.
        forged = bytes(b ^ 0xFF for b in ticket)
        w.sock.send_multipart([buslib.WORKER_TAG, W_REPLY, forged, echo_reply(env)])
        assert c.recv(timeout=1.5) is None
        # The real one reaches the client that asked...
        w.sock.send_multipart([buslib.WORKER_TAG, W_REPLY, ticket, echo_reply(env)])
        got, _, _ = c.reply(sent["id"])
        assert got["status"] == "ok"
        # ... once: the same ticket again is dropped.
        w.sock.send_multipart([buslib.WORKER_TAG, W_REPLY, ticket, echo_reply(env)])
        assert c.recv(timeout=1.5) is None
        (info,) = bus.workers("echo")
        assert info["inflight"] == 0, info
    finally:
        w.close()


def test_stream_whose_first_chunk_waited_in_the_queue(make_bus):
    bus = make_bus(env={"ROOST_BUS_QUEUE_TIMEOUT_MS": "15000"})
    # No worker yet: chunk 0 waits in busd's queue; the worker that finally
    # takes it must get the rest of the stream.
    p = bus.bus_client(["--stream", 3 * 256 * 1024 + 17, "--timeout-ms", 20000, "--retries", 0])
    time.sleep(0.5)
    bus.start_workers(2)
    assert p.wait(timeout=WAIT * 2) == 0, p.log()
    (line,) = [json.loads(x) for x in p.popen.stdout.read().splitlines() if x.strip()]
    assert line["sha256_ok"] and line["chunks"] == 4, line


def test_finished_streams_release_their_worker_binding(bus):
    bus.start_workers(2)
    for _ in range(5):
        rc, lines, _, log = bus.run_bus_client(["--stream", 300000])
        assert rc == 0 and lines[-1]["sha256_ok"], log
    c = bus.client()
    env, _ = c.call("busd.control", {"type": "busd.control.stats"})
    assert env["status"] == "ok", env
    assert env["stats"]["streams"] == 0, env


def test_queue_is_bounded_in_bytes(make_bus):
    bus = make_bus(env={"ROOST_BUS_QUEUE_TIMEOUT_MS": "30000"})
    c = bus.client()
    raw = os.urandom(1024 * 1024)  # the largest raw frame
    ids = [c.request("echo", {"type": "echo.payload.echo", "id": new_id("q")}, raw)["id"]
           for _ in range(80)]
    # 64 MiB of queue (each request is a little over 1 MiB with its
    # envelope): the requests past it are refused at once, not held.
    refused = []
    while True:
        f = c.recv(timeout=3)
        if f is None:
            break
        env = json.loads(f[2])
        assert env["code"] == "unavailable" and "queue is full" in env["error"], env
        refused.append(env["id"])
    assert 80 - 64 <= len(refused) <= 80 - 56 and set(refused) <= set(ids), refused
    # The queued ones are served once a worker comes.
    bus.start_workers(1)
    served = 0
    while served < 80 - len(refused):
        f = c.recv(timeout=WAIT)
        assert f is not None, "queued requests were not served (%d of them)" % served
        env = json.loads(f[2])
        assert env["status"] == "ok", env
        served += 1
