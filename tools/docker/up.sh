#!/bin/sh
# up.sh [up|down] — `make up` and `make down`.
#
# up: installs what is missing (docker.io, docker-compose, debootstrap, from
# Debian), builds the offline base images (tools/docker/mkbase.sh; cached)
# unless ROOST_BASE names another base, builds the images, takes the stack
# down first (volumes kept: docker-compose 1.29 with Docker 20.10 fails with
# KeyError: 'ContainerConfig' when it recreates a container), starts it,
# waits until every container is healthy (1.29 has no --wait) and prints
# where it listens.
# down: stops and removes the containers; the named volumes (mail,
# certificates, keys, config) stay.
#
# The usual compose variables apply (COMPOSE_PROJECT_NAME, COMPOSE_FILE), and
# the ROOST_* ones docker-compose.yml lists. UP_TIMEOUT (s, 180) bounds the wait.
set -eu
cmd=${1:-up}
top=$(cd "$(dirname "$0")/../.." && pwd)
cd "$top"

if [ "$(id -u)" = 0 ]; then SUDO=""; else SUDO=sudo; fi
export ROOST_BUS_HOST_DIR="${ROOST_BUS_HOST_DIR:-$top/var/bus}"

compose_cmd() {
	if docker compose version >/dev/null 2>&1; then echo "docker compose"
	elif command -v docker-compose >/dev/null 2>&1; then echo "docker-compose"
	fi
}

[ "$cmd" = up ] && tools/docker/need.sh
DC=$(compose_cmd)
[ -n "$DC" ] || { echo "up: neither 'docker compose' nor docker-compose found" >&2; exit 1; }

if [ "$cmd" = down ]; then
	$DC down --remove-orphans
	exit 0
fi
[ "$cmd" = up ] || { echo "usage: $0 up|down" >&2; exit 2; }

start=$(date +%s)
if [ -z "${ROOST_BASE:-}" ]; then
	tools/docker/mkbase.sh runtime
	tools/docker/mkbase.sh build
	tools/docker/mkbase.sh net
	export ROOST_BASE=roost-base:bookworm ROOST_BUILD_BASE=roost-build:bookworm ROOST_NET_BASE=roost-net:bookworm
fi

# The bus directory, bind-mounted into every container: busd (uid 7001) must
# own it to set its mode; group roost (7000) may enter; nobody else. -R: a
# busd.lock left by `make run` (same ./var/bus, as root) must be busd's too.
$SUDO mkdir -p "$ROOST_BUS_HOST_DIR"
$SUDO chown -R 7001:7000 "$ROOST_BUS_HOST_DIR"
$SUDO chmod 0750 "$ROOST_BUS_HOST_DIR"

# The classic builder's deprecation notice is noise here; anything else is shown.
if ! out=$($DC build -q 2>&1); then
	printf '%s\n' "$out" >&2
	echo "up: image build failed" >&2
	exit 1
fi
printf '%s\n' "$out" | grep -v -e DEPRECATED -e 'Install the buildx' -e 'docs.docker.com/go/buildx' -e '^$' || true
echo "up: images built ($(( $(date +%s) - start )) s)"
$DC down --remove-orphans >/dev/null 2>&1 || true
# First the services without a listener (storaged creates the volumes) and
# the namespace owner; not `up --no-start`: docker-compose 1.29 gives a
# container created while wireguard is not running the default network
# instead of wireguard's namespace.
$DC up -d --remove-orphans wireguard storaged

# A self-signed certificate in the tls volume, made once, so that smtpd offers
# STARTTLS and imapd IMAPS from the start. Real ones replace cert.pem and
# key.pem in the volume (then: restart smtpd imapd).
cid=$($DC ps -q storaged | head -1)
vol=$(docker inspect -f '{{range .Mounts}}{{if eq .Destination "/var/lib/roost/tls"}}{{.Name}}{{end}}{{end}}' "$cid")
img=$(docker inspect -f '{{.Config.Image}}' "$cid")
if ! docker run --rm --network none -v "$vol:/tls:ro" --entrypoint test "$img" -s /tls/cert.pem; then
	name=${ROOST_HOSTNAME:-localhost.localdomain}
	tmp=$(mktemp -d)
	openssl req -x509 -newkey rsa:2048 -nodes -days 3650 -subj "/CN=$name" \
		-addext "subjectAltName=DNS:$name" -keyout "$tmp/key.pem" -out "$tmp/cert.pem" 2>/dev/null ||
		{ rm -rf "$tmp"; echo "up: openssl could not make a certificate" >&2; exit 1; }
	tar -C "$tmp" -c cert.pem key.pem |
		docker run --rm -i --network none --user 0 -v "$vol:/tls" --entrypoint sh "$img" -c \
		'tar -C /tls -x --no-same-owner && chown 0:7000 /tls/cert.pem /tls/key.pem &&
		 chmod 0644 /tls/cert.pem && chmod 0640 /tls/key.pem'
	rm -rf "$tmp"
	echo "up: made a self-signed certificate for $name (volume $vol)"
fi
$DC up -d --remove-orphans

# Every container of the project running, and healthy where it has a check.
deadline=$(( $(date +%s) + ${UP_TIMEOUT:-180} ))
while :; do
	ids=$($DC ps -q)
	bad=""
	for id in $ids; do
		st=$(docker inspect -f '{{.Name}} {{.State.Status}} {{if .State.Health}}{{.State.Health.Status}}{{else}}none{{end}}' "$id")
		case "$st" in
		*" running healthy"|*" running none") ;;
		*) bad="$bad
  $st" ;;
		esac
	done
	[ -n "$ids" ] && [ -z "$bad" ] && break
	if [ "$(date +%s)" -ge "$deadline" ]; then
		echo "up: not healthy after ${UP_TIMEOUT:-180} s:$bad" >&2
		$DC logs --tail=20 >&2 || true
		exit 1
	fi
	sleep 1
done
echo "roost: up in $(( $(date +%s) - start )) s — every service healthy"
$DC ps
for p in 25:SMTP 143:IMAP 993:IMAPS; do
	port=$($DC port wireguard "${p%%:*}" 2>/dev/null || true)
	echo "roost: ${p#*:} on ${port:-? (not published)} (container port ${p%%:*})"
done
ctl=roostctl
[ -x build/bin/roostctl ] && ctl=build/bin/roostctl
echo "roost: bus at $ROOST_BUS_HOST_DIR — on the host, as root: ROOST_BUS_DIR=$ROOST_BUS_HOST_DIR $ctl status"
echo "       or in a container: $DC exec busd roostctl status"
