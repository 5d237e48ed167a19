#!/bin/sh
# mkbase.sh runtime|build|net|peer — makes the local base images the Dockerfile uses
# when no registry is reachable: a debootstrap of Debian bookworm (variant
# minbase) with the libraries Roost's binaries link, imported with
# `docker import`.
#
#   runtime  roost-base:bookworm   libzmq5, libjansson4, libsqlite3-0, libssl3
#   build    roost-build:bookworm  the same plus gcc, make, pkg-config, the -dev
#                                  packages (libstdc++-12-dev: libstdc++.a for
#                                  the static libzmq link) and python3
#                                  (gen_msgtypes.py)
#   net      roost-net:bookworm    iproute2, iptables, wireguard-tools, wireguard-go:
#                                  the wireguard container (the WireGuard end); the
#                                  test VPS of tests/compose/test_wg_topology.py
#   peer     roost-peer:bookworm   postfix, python3, python3-dnslib, iproute2: the
#                                  remote MTA and DNS of that test (tests only)
#
# Cached: an image whose roost.base label matches this script's package list,
# suite and architecture is kept (a second `make up` does not redo it);
# FORCE=1 rebuilds. The architecture is the machine's own (arm64 on a Pi).
# Needs root (or sudo) for debootstrap; the mirror is $DEBIAN_MIRROR.
set -eu
kind=${1:-runtime}
SUITE=bookworm
MIRROR=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
RUNTIME_PKGS="libzmq5,libjansson4,libsqlite3-0,libssl3,ca-certificates"
BUILD_PKGS="$RUNTIME_PKGS,gcc,libc6-dev,make,pkg-config,libzmq3-dev,libjansson-dev,libsqlite3-dev,libssl-dev,libstdc++-12-dev,python3"
NET_PKGS="iproute2,iptables,wireguard-tools,wireguard-go"
case "$kind" in
runtime) tag=roost-base:$SUITE; pkgs=$RUNTIME_PKGS ;;
build)   tag=roost-build:$SUITE; pkgs=$BUILD_PKGS ;;
net)     tag=roost-net:$SUITE; pkgs=$NET_PKGS ;;
peer)    tag=roost-peer:$SUITE; pkgs="postfix,python3,python3-dnslib,iproute2" ;;
*) echo "usage: $0 runtime|build|net|peer" >&2; exit 2 ;;
esac
arch=$(dpkg --print-architecture)
want="v2 $SUITE minbase $arch $pkgs"

have=$(docker image inspect -f '{{index .Config.Labels "roost.base"}}' "$tag" 2>/dev/null || true)
if [ "${FORCE:-0}" != 1 ] && [ "$have" = "$want" ]; then
	echo "mkbase: $tag is up to date (cached)"
	exit 0
fi

if [ "$(id -u)" = 0 ]; then SUDO=""; else SUDO=sudo; fi
command -v debootstrap >/dev/null 2>&1 || [ -x /usr/sbin/debootstrap ] ||
	{ echo "mkbase: debootstrap is missing (apt-get install debootstrap)" >&2; exit 1; }

root=$(mktemp -d "${TMPDIR:-/var/tmp}/roost-base.XXXXXX")
cleanup() { $SUDO rm -rf "$root"; }
trap cleanup EXIT
trap 'exit 1' INT TERM HUP

echo "mkbase: debootstrap $SUITE ($arch, minbase) for $tag ..."
start=$(date +%s)
$SUDO /usr/sbin/debootstrap --variant=minbase --arch="$arch" --include="$pkgs" \
	"$SUITE" "$root" "$MIRROR" >"$root.log" 2>&1 ||
	{ echo "mkbase: debootstrap failed; last lines of $root.log:" >&2; tail -20 "$root.log" >&2; exit 1; }
rm -f "$root.log"
# What a container never needs: package caches, lists, documentation,
# translations (a third of minbase); dpkg keeps them out of later installs too.
$SUDO rm -rf "$root"/var/cache/apt/archives/*.deb "$root"/var/lib/apt/lists/* \
	"$root"/usr/share/doc/* "$root"/usr/share/man/* "$root"/usr/share/info/* \
	"$root"/usr/share/locale/* \
	"$root"/var/log/*.log "$root"/var/cache/debconf/*-old
printf 'path-exclude=/usr/share/doc/*\npath-exclude=/usr/share/man/*\npath-exclude=/usr/share/info/*\npath-exclude=/usr/share/locale/*\n' |
	$SUDO tee "$root/etc/dpkg/dpkg.cfg.d/roost-nodoc" >/dev/null
# apt in the image (for a Dockerfile that installs something more) uses the
# same suite; security updates as a normal Debian image has them.
printf 'deb %s %s main\ndeb %s %s-updates main\ndeb http://deb.debian.org/debian-security %s-security main\n' \
	"$MIRROR" $SUITE "$MIRROR" $SUITE $SUITE | $SUDO tee "$root/etc/apt/sources.list" >/dev/null

$SUDO tar -C "$root" --numeric-owner -c . |
	docker import --change "LABEL roost.base=\"$want\"" --change 'CMD ["/bin/bash"]' \
		--change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' - "$tag" >/dev/null
echo "mkbase: $tag built in $(( $(date +%s) - start )) s, $(docker image inspect -f '{{.Size}}' "$tag" | awk '{printf "%.0f MB", $1/1e6}')"
