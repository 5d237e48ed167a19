#!/bin/sh
# check-deps.sh [--install] PKG... — are the Debian packages the build and
# tests need installed? Without --install, installs them only if some are
# missing (as `make test` wants); with it, always runs apt-get install.
# Not root and no sudo: says which packages are missing and fails.
#
# postfix (the real sending MTA of the end-to-end tests) is installed
# without questions ("No configuration": no live main.cf), with service
# starts blocked by policy-rc.d during the install, and any system Postfix
# stopped and disabled afterwards: a system MTA on port 25 would collide
# with smtpd's tests. The tests run their own throwaway instances.
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
# Another apt run on this machine (a concurrent make test) holds the lock for
# a while: wait for it instead of failing.
APT="apt-get -o DPkg::Lock::Timeout=600"

postfix=0
case " $missing " in *" postfix "*) postfix=1 ;; esac
policy=/usr/sbin/policy-rc.d
policy_backup=""
restore_policy() { :; }
if [ $postfix = 1 ]; then
	printf '%s\n' "postfix postfix/main_mailer_type select No configuration" \
		"postfix postfix/mailname string localhost.localdomain" |
		$SUDO debconf-set-selections ||
		{ echo "debconf-set-selections failed: cannot preseed postfix" >&2; exit 1; }
	# Forbid service starts during the install; put back what was there.
	if [ -e $policy ]; then
		policy_backup=$(mktemp) && cp -p $policy "$policy_backup" ||
			{ echo "cannot back up $policy" >&2; exit 1; }
	fi
	restore_policy() {
		if [ -n "$policy_backup" ]; then $SUDO cp -p "$policy_backup" $policy; rm -f "$policy_backup"
		else $SUDO rm -f $policy; fi
	}
	trap restore_policy EXIT
	trap 'exit 1' INT TERM HUP
	printf '#!/bin/sh\nexit 101\n' | $SUDO tee $policy >/dev/null && $SUDO chmod 755 $policy ||
		{ echo "cannot write $policy" >&2; exit 1; }
fi

$SUDO $APT update -qq >/dev/null || { echo "apt-get update failed" >&2; exit 1; }
# shellcheck disable=SC2086
$SUDO $APT install -y -qq --no-install-recommends $missing >/dev/null ||
	{ echo "apt-get install failed for:$missing" >&2; exit 1; }

if [ $postfix = 1 ]; then
	restore_policy; trap - EXIT
	# No system Postfix may be left running or start at boot.
	if command -v systemctl >/dev/null 2>&1 && [ -d /run/systemd/system ]; then
		$SUDO systemctl stop postfix >/dev/null 2>&1
		$SUDO systemctl disable postfix >/dev/null 2>&1
	elif [ -x /etc/init.d/postfix ]; then
		$SUDO /etc/init.d/postfix stop >/dev/null 2>&1
		$SUDO update-rc.d postfix disable >/dev/null 2>&1
	fi
	pidf=/var/spool/postfix/pid/master.pid
	if [ -r $pidf ]; then
		pid=$(tr -dc 0-9 <$pidf)
		if [ -n "$pid" ] && $SUDO kill -0 "$pid" 2>/dev/null; then
			$SUDO postfix stop >/dev/null 2>&1 || $SUDO kill "$pid"
		fi
	fi
	if [ -r $pidf ] && pid=$(tr -dc 0-9 <$pidf) && [ -n "$pid" ] && $SUDO kill -0 "$pid" 2>/dev/null; then
		echo "a system Postfix (pid $pid) is still running after the install: stop it (postfix stop)" >&2
		exit 1
	fi
fi
exit 0
