"""
conftest.py — fixtures for the end-to-end tests.

  bus          a private bus: temp dir, busd (stderr in <tmp>/NN-busd.log),
               the tap recorder, ready when `roostctl status` answers
  make_bus     the same as a factory, for tests that need their own
               environment (make_bus(env={"ROOST_BUS_HEARTBEAT_MS": "200"}))
  postfix      a factory of throwaway Postfix instances (mta.Postfix) relaying
               to a port, stopped at teardown

At teardown every process the test started on the bus is stopped (SIGTERM,
SIGKILL after 10 s), and every envelope the tap recorder saw must validate
against proto/schemas (schemas.validate): the test fails naming the line
otherwise. A sanitizer report in any process's log fails the test too.
"""

import os
import sys

import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
if HERE not in sys.path:
    sys.path.insert(0, HERE)

import bus as buslib  # noqa: E402
import mta  # noqa: E402
import schemas  # noqa: E402


def _start_bus(env=None, start=True, tap=True):
    b = buslib.Bus(env=env)
    if start:
        try:
            b.start_busd()
            # The recorder connects first: nothing else has talked yet.
            wait_sockets(b)
            if tap:
                b.tap = buslib.TapRecorder(b.dir).start()
            b.wait_ready()
        except BaseException:
            b.close()
            raise
    return b


def wait_sockets(b):
    def ready():
        if not b.busd.alive():
            raise RuntimeError("busd exited with %s:\n%s" % (b.busd.popen.returncode, b.busd.log()))
        return b.sockets_exist()
    buslib.wait_until(ready, what="busd's sockets in %s" % b.dir)


def _finish_bus(b, request):
    problems = []
    try:
        b.close()
    finally:
        failed = getattr(request.node, "rep_call", None)
        failed = failed is not None and failed.failed
        if b.tap is not None:
            if b.tap.error is not None:
                problems.append("tap recorder failed: %r" % (b.tap.error,))
            bad = []
            lines = b.tap.snapshot()
            for i, frames in enumerate(lines):
                why = buslib.check_tap_line(frames, schemas.validate)
                if why is not None:
                    bad.append("tap line %d: %s\n    %r" % (i, why, b"|".join(frames)[:2000]))
            if bad:
                problems.append("%d of %d tap lines are not valid envelopes:\n%s" % (
                    len(bad), len(lines), "\n".join(bad[:20])))
        problems.extend("sanitizer report in %s" % r for r in b.sanitizer_reports())
        if failed or problems:
            b.keep = True
            sys.stderr.write("\nbus directory and logs kept in %s\n" % b.tmp)
        b.cleanup_dir()
    if problems:
        pytest.fail("\n\n".join(problems), pytrace=False)


@pytest.hookimpl(tryfirst=True, hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    rep = outcome.get_result()
    setattr(item, "rep_" + rep.when, rep)


@pytest.fixture
def make_bus(request):
    """Factory: make_bus(env=None, start=True) -> bus.Bus (at most a few per test)."""
    made = []

    def factory(env=None, start=True, tap=True):
        b = _start_bus(env=env, start=start, tap=tap)
        made.append(b)
        return b

    yield factory
    errors = []
    for b in made:
        try:
            _finish_bus(b, request)
        except BaseException as e:  # noqa: BLE001 - report every bus, then fail
            errors.append(e)
    if errors:
        raise errors[0]


@pytest.fixture
def bus(make_bus):
    """A running busd on a private bus directory, with the tap recorded."""
    return make_bus()


def pytest_report_header(config):
    return "roost binaries: %s" % buslib.BIN


@pytest.fixture
def postfix(request):
    """Factory: postfix(relay_port, **kw) -> a started mta.Postfix, stopped at teardown
    (its directory kept and its log's tail shown if the test failed)."""
    made = []

    def factory(relay_port, **kw):
        try:
            mta.Postfix.check_available()
        except mta.PostfixUnavailable as e:
            pytest.skip("Postfix cannot run here: %s" % e)
        pf = mta.Postfix(relay_port, **kw).start()
        made.append(pf)
        return pf
    yield factory
    rep = getattr(request.node, "rep_call", None)
    failed = rep is not None and rep.failed
    for pf in made:
        if failed:
            pf.keep = True
            sys.stderr.write("\nPostfix directory kept in %s; its log ends:\n%s\n" % (pf.dir, pf.log_tail()))
        pf.close()
        assert not mta._group_members(pf.master_pid), "Postfix processes left after stop()"
