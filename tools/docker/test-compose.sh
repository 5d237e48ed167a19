#!/bin/sh
# test-compose.sh — `make test-compose`: the containers end to end
# (tests/compose/): per-run project and image tag, images built from
# scratch, internal networks, mail in and out, restarts under load,
# scaling; everything the run made is removed at the end. Ends with
# pytest's summary line.
set -u
top=$(cd "$(dirname "$0")/../.." && pwd)
cd "$top" || exit 1
# Docker, compose and debootstrap, as make up installs them.
need=""
command -v docker >/dev/null 2>&1 || need="$need docker.io"
docker compose version >/dev/null 2>&1 || command -v docker-compose >/dev/null 2>&1 || need="$need docker-compose"
command -v debootstrap >/dev/null 2>&1 || [ -x /usr/sbin/debootstrap ] || need="$need debootstrap"
dpkg-query -W -f='${Status}' python3-pytest 2>/dev/null | grep -q 'ok installed' || need="$need python3-pytest"
# shellcheck disable=SC2086
[ -z "$need" ] || tools/check-deps.sh $need || exit 1
export PYTHONDONTWRITEBYTECODE=1
exec /usr/bin/python3 -m pytest tests/compose -p no:cacheprovider -v -rs -s ${PYTEST_ARGS:-}
