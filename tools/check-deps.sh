#!/bin/sh
# check-deps.sh [--install] PKG... — are the Debian packages the build and
# tests need installed? Without --install, installs them only if some are
# missing (as `make test` wants); with it, always runs apt-get install.
# Not root and no sudo: says which packages are missing and fails.
set -u
install=0
[ "${1:-}" = "--install" ] && { install=1; shift; }
missing=""
for p in "$@"; do
	st=$(dpkg-query -W -f='${Status}' "$p" 2>/dev/null || true)
	case "$st" in *"install ok installed"*) ;; *) missing="$missing $p" ;; esac
done
[ -z "$missing" ] && [ $install = 0 ] && exit 0
[ $install = 1 ] && missing="$*"
if [ "$(id -u)" = 0 ]; then SUDO=""; elif command -v sudo >/dev/null 2>&1; then SUDO="sudo"; else
	echo "missing Debian packages:$missing — install them as root: apt-get install$missing" >&2
	exit 1
fi
echo "installing Debian packages:$missing"
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq >/dev/null || { echo "apt-get update failed" >&2; exit 1; }
# shellcheck disable=SC2086
$SUDO apt-get install -y -qq --no-install-recommends $missing >/dev/null ||
	{ echo "apt-get install failed for:$missing" >&2; exit 1; }
