#!/bin/sh
# test-compose.sh — `make test-compose`: the containers end to end
# (tests/compose/): per-run project and image tag, images built from
# scratch, internal networks, mail in and out, restarts under load,
# scaling; everything the run made is removed at the end. Ends with
# pytest's summary line.
set -u
top=$(cd "$(dirname "$0")/../.." && pwd)
cd "$top" || exit 1
# Docker, compose, debootstrap and pytest, as make up installs them; Debian's
# docker-compose even where the v2 plugin is there: tests/compose/test_spec.py
# validates against the Compose Specification schema that package ships.
tools/docker/need.sh python3-pytest python3-jsonschema python3-yaml docker-compose || exit 1
export PYTHONDONTWRITEBYTECODE=1
exec /usr/bin/python3 -m pytest tests/compose -p no:cacheprovider -v -rs -s ${PYTEST_ARGS:-}
