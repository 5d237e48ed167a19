#!/usr/bin/env bash
# compose-memory.sh — memory of the whole stack in containers beside
# Postfix + Dovecot (issue 6): the sum of PSS (/proc/PID/smaps_rollup) of
# every Roost process in the containers after start and after MSGS messages
# (1000, 8 SMTP connections; then one IMAP client logged in), then the same for a throwaway Postfix
# (delivering into a Maildir with virtual(8)) and a throwaway Dovecot (IMAP
# on that Maildir; one login and SELECT after the messages, so that its imap
# process exists) on 127.0.0.1. Run as root; about 3 minutes. Peers:
# /work/shared/bench/peers-install.sh once. Prints a summary and one JSON line.
#
# Roost runs as its own compose project (tests/compose/stack.py: a per-run
# image tag, an internal network) and is removed afterwards, as are the
# peers' temp dir and processes (by their master pids).
set -euo pipefail
case "${1:-}" in
-h | --help)
	sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'
	exit 0
	;;
"") ;;
*)
	echo "usage: bench/compose-memory.sh [--help]" >&2
	exit 2
	;;
esac
HERE=$(cd "$(dirname "$0")" && pwd)
PY=/usr/bin/python3
export MSGS=${MSGS:-1000}
SMTP_PORT=${SMTP_PORT:-2625}
IMAP_PORT=${IMAP_PORT:-10243}
[ "$(id -u)" -eq 0 ] || { echo "compose-memory: run as root" >&2; exit 1; }
for b in /usr/sbin/postfix /usr/sbin/dovecot; do
	[ -x "$b" ] || { echo "compose-memory: missing $b - run /work/shared/bench/peers-install.sh" >&2; exit 1; }
done

echo "== compose-memory: $(date -u +%FT%TZ), $(nproc) cores, load $(cut -d' ' -f1-3 /proc/loadavg)"
echo "== Roost in containers (busd, storaged, smtpd, imapd, bus-relay), $MSGS messages"
# ROOST_JSON: the JSON line of an earlier Roost part (measure the peers only).
roost=${ROOST_JSON:-$("$PY" "$HERE/compose_memory.py" roost | grep '^JSON ' | cut -c6-)}

T=$(mktemp -d /var/tmp/compose-memory.XXXXXX)
chmod 755 "$T"
PF_MASTER="" DC_MASTER=""
cleanup() {
	set +e
	[ -n "$PF_MASTER" ] && postfix -c "$T/conf" stop >/dev/null 2>&1
	[ -n "$DC_MASTER" ] && kill "$DC_MASTER" 2>/dev/null
	for p in $PF_MASTER $DC_MASTER; do
		for _ in $(seq 50); do kill -0 "$p" 2>/dev/null || break; sleep 0.1; done
	done
	[ "${KEEP:-0}" = 1 ] && echo "kept $T" || rm -rf "$T"
}
trap cleanup EXIT
mkdir -p "$T/conf" "$T/spool" "$T/vmail" "$T/run" "$T/state"
chown 65534:65534 "$T/vmail"
echo "bob@roost.test bob/" > "$T/conf/vmailbox"
cat > "$T/conf/main.cf" <<EOT
compatibility_level = 3.6
queue_directory = $T/spool
data_directory = $T/data
mail_owner = postfix
setgid_group = postdrop
myhostname = mx.roost.test
mydestination =
inet_interfaces = 127.0.0.1
inet_protocols = ipv4
mynetworks = 127.0.0.0/8
relayhost =
alias_maps =
alias_database =
local_recipient_maps =
smtpd_peername_lookup = no
smtputf8_enable = no
maillog_file = $T/maillog
virtual_mailbox_domains = roost.test
virtual_mailbox_base = $T/vmail
virtual_mailbox_maps = texthash:$T/conf/vmailbox
virtual_uid_maps = static:65534
virtual_gid_maps = static:65534
EOT
cat > "$T/conf/master.cf" <<EOT
127.0.0.1:$SMTP_PORT inet n - n - - smtpd
pickup    unix  n - n 60    1 pickup
cleanup   unix  n - n -     0 cleanup
qmgr      unix  n - n 300   1 qmgr
rewrite   unix  - - n -     - trivial-rewrite
bounce    unix  - - n -     0 bounce
defer     unix  - - n -     0 bounce
trace     unix  - - n -     0 bounce
verify    unix  - - n -     1 verify
flush     unix  n - n 1000? 0 flush
proxymap  unix  - - n -     - proxymap
showq     unix  n - n -     - showq
error     unix  - - n -     - error
retry     unix  - - n -     - error
discard   unix  - - n -     - discard
virtual   unix  - n n -     - virtual
anvil     unix  - - n -     1 anvil
scache    unix  - - n -     1 scache
postlog   unix-dgram n - n - 1 postlogd
EOT
cat > "$T/dovecot.conf" <<EOT
base_dir = $T/run
instance_name = compose-memory
state_dir = $T/state
log_path = $T/dovecot.log
protocols = imap
listen = 127.0.0.1
ssl = no
disable_plaintext_auth = no
auth_mechanisms = plain
default_internal_user = dovecot
default_login_user = dovenull
mail_location = maildir:~
first_valid_uid = 100
passdb {
  driver = static
  args = password=bench
}
userdb {
  driver = static
  args = uid=65534 gid=65534 home=$T/vmail/%n
}
service imap-login {
  inet_listener imap {
    address = 127.0.0.1
    port = $IMAP_PORT
  }
  inet_listener imaps {
    port = 0
  }
}
EOT
postfix -c "$T/conf" check
postfix -c "$T/conf" start
dovecot -c "$T/dovecot.conf"
for _ in $(seq 50); do [ -s "$T/spool/pid/master.pid" ] && [ -s "$T/run/master.pid" ] && break; sleep 0.1; done
PF_MASTER=$(tr -dc 0-9 < "$T/spool/pid/master.pid")
DC_MASTER=$(tr -dc 0-9 < "$T/run/master.pid")
sleep 2
echo "== Postfix (master $PF_MASTER) + Dovecot (master $DC_MASTER), $MSGS messages"
peer=$(MAILDIR=$T/vmail/bob "$PY" "$HERE/compose_memory.py" peer "$SMTP_PORT" "$PF_MASTER" | grep '^JSON ' | cut -c6-)
# Dovecot alone, idle and after a login + SELECT of the 1000 messages
# (the imap process stays while the client is logged in).
dc_idle=$("$PY" "$HERE/compose_memory.py" pss $(echo "$DC_MASTER"))
dc_after=$("$PY" - "$IMAP_PORT" "$HERE" "$DC_MASTER" <<'EOT'
import imaplib, sys, time, subprocess
port, here, master = int(sys.argv[1]), sys.argv[2], sys.argv[3]
m = imaplib.IMAP4("127.0.0.1", port)
m.login("bob", "bench")
typ, data = m.select("INBOX")
assert typ == "OK", data
m.fetch("1:*", "(FLAGS)")
time.sleep(1)
print(subprocess.run(["/usr/bin/python3", here + "/compose_memory.py", "pss", master], capture_output=True,
                     text=True, check=True).stdout.strip())
m.logout()
EOT
)
"$PY" - "$roost" "$peer" "$dc_idle" "$dc_after" <<'EOT'
import json, sys
r, p, di, da = (json.loads(x) for x in sys.argv[1:5])
mb = lambda kb: "%.1f MB" % (kb / 1024)
print()
print("%-40s %12s %12s" % ("PSS, sum over processes", "after start", "after %d msgs" % r["msgs"]))
print("%-40s %12s %12s" % ("Roost: busd+storaged+smtpd+imapd+relay", mb(r["start"]["total_kb"]), mb(r["after"]["total_kb"])))
for k in sorted(r["after"]["by_process"]):
    print("%-40s %12s %12s" % ("  " + k, mb(r["start"]["by_process"].get(k, 0)), mb(r["after"]["by_process"][k])))
print("%-40s %12s %12s" % ("  with each library counted once", mb(r["start"]["files_once_kb"]), mb(r["after"]["files_once_kb"])))
print("%-40s %12s %12s" % ("  (wireguard, no tunnel: docker-init + sleep)", "", mb(r["wireguard"]["total_kb"])))
print("%-40s %12s %12s" % ("Postfix (%d processes after)" % p["after"]["processes"], mb(p["start"]["total_kb"]), mb(p["after"]["total_kb"])))
print("%-40s %12s %12s" % ("Dovecot (after: 1 client logged in)", mb(di["total_kb"]), mb(da["total_kb"])))
print("%-40s %12s %12s" % ("Postfix + Dovecot", mb(p["start"]["total_kb"] + di["total_kb"]), mb(p["after"]["total_kb"] + da["total_kb"])))
print("JSON " + json.dumps({"roost": r, "postfix": p, "dovecot_idle": di, "dovecot_after": da}))
EOT
