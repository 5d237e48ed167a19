"""
conftest.py — the stack of `make test-compose`, built and started once for
the session (tests/compose/, never part of `make test`: it needs Docker).

  stack   a Stack: a per-run compose project (roostct<pid>) and image tag,
          images built from scratch (the run's tag is a label at the top of
          every stage, so no layer of an earlier build is reused; only the
          debootstrap bases of tools/docker/mkbase.sh may come from the
          machine's cache), up on
          an internal network (tests/compose/test.yml) with tools/docker/up.sh
          (the path `make up` takes), the bus in a temporary host directory.

At the end of the session: containers, networks, the run's images and the
project's volumes are removed (docker-compose down -v --rmi all, then
the run's untagged stage images by their roost.tag label).
Environment: ROOST_BASE and ROOST_BUILD_BASE (other bases, e.g.
debian:bookworm-slim: the Dockerfile then installs the libraries with apt),
ROOST_BIN (a host roostctl; else roostctl runs in the busd
container), COMPOSE_TEST_KEEP=1 leaves the stack up for a look.
"""

import os
import sys

import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
if HERE not in sys.path:
    sys.path.insert(0, HERE)

import stack as stacklib  # noqa: E402


@pytest.fixture(scope="session")
def stack():
    s = stacklib.Stack()
    try:
        s.build()
        s.up()
        yield s
    finally:
        if os.environ.get("COMPOSE_TEST_KEEP") != "1":
            s.destroy()
