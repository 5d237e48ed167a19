#!/bin/sh
# need.sh [PKG...] — what make up and make test-compose need before they start:
# Docker (docker.io), a compose (the v2 plugin or Debian's docker-compose),
# debootstrap (for the offline base images; not when ROOST_BASE names another
# base), openssl (make up's self-signed certificate) and the extra Debian
# packages named, installed through check-deps.sh when missing; then a running Docker daemon (started with its init script
# if it is not).
set -eu
top=$(cd "$(dirname "$0")/../.." && pwd)
need=""
command -v docker >/dev/null 2>&1 || need="$need docker.io"
docker compose version >/dev/null 2>&1 || command -v docker-compose >/dev/null 2>&1 ||
	need="$need docker-compose"
if [ -z "${ROOST_BASE:-}" ] && ! command -v debootstrap >/dev/null 2>&1 && [ ! -x /usr/sbin/debootstrap ]; then
	need="$need debootstrap"
fi
command -v openssl >/dev/null 2>&1 || need="$need openssl"   # the self-signed certificate
for p in "$@"; do
	dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'ok installed' || need="$need $p"
done
# shellcheck disable=SC2086
[ -z "$need" ] || "$top/tools/check-deps.sh" $need

docker info >/dev/null 2>&1 && exit 0
if [ "$(id -u)" = 0 ]; then SUDO=""; else SUDO=sudo; fi
echo "need: the Docker daemon is not answering; starting it"
if command -v systemctl >/dev/null 2>&1 && [ -d /run/systemd/system ]; then
	$SUDO systemctl start docker
elif [ -x /etc/init.d/docker ]; then
	$SUDO /etc/init.d/docker start >/dev/null
fi
i=0
until docker info >/dev/null 2>&1; do
	i=$((i + 1))
	[ $i -lt 60 ] || { echo "need: the Docker daemon did not start (docker info fails)" >&2; exit 1; }
	sleep 1
done
