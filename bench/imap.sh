#!/usr/bin/env bash
# bench/imap.sh — imapd (issue 5): ops/s and p99 of SELECT, UID FETCH 1:*
# FLAGS, FETCH BODY.PEEK[], UID SEARCH and STORE, one op type at a time,
# beside Dovecot on the same mailbox in the same run; imapd's PSS with 32
# open sessions. See --help. Results go to stdout only: bench/RESULTS.md
# is edited by hand.
set -euo pipefail

usage() {
	cat <<'EOF'
usage: bench/imap.sh [--json] [--help]

Builds (make), then in a temp dir $BENCH_TMP/roost-imap.XXXX starts
build/bin/busd, build/bin/storaged and build/bin/imapd on a free 127.0.0.1
port, adds the domain bench.test and the user bench@bench.test (password
"bench"), and for each mailbox size in NMSGS:

  1. fills the user's INBOX with N messages of about SIZE bytes through
     imapd's APPEND: the same text peer-imap.sh writes into Dovecot's
     Maildir (subject "bench message 000042", one in three \Seen)
  2. times the cold LOGIN+SELECT and the first UID FETCH 1:* (FLAGS)
  3. runs /work/shared/bench/imap-load.py with CLIENTS clients for
     OP_SECONDS s for each op type alone: select, fetch_flags, fetch_body,
     search, store (imapd, storaged and busd CPU per op from /proc)
  4. the peer: /work/shared/bench/peer-imap.sh with the same NMSG, SIZE,
     CLIENTS and ISO_SECONDS=OP_SECONDS (a private Dovecot on its own Maildir;
     its 20 s mixed run is not compared)

Then opens 32 sessions (logged in, INBOX selected) and reads imapd's PSS
(/proc/PID/smaps_rollup). Prints a markdown table with the ratios
imapd/Dovecot per op and mailbox size, and one line "JSON {...}" (with
--json, only that line goes to stdout).

imapd runs as shipped but for imap_plaintext_loopback (said in the output):
the load generator logs in without TLS, as it does into Dovecot, whose
default also allows a plaintext login from the local address.

Environment:
  NMSGS        mailbox sizes (default "5000 50000")
  SIZE         message size in bytes (default 4096)
  CLIENTS      concurrent clients (default 4)
  OP_SECONDS   seconds per op type (default 5)
  SESSIONS     sessions held open for the PSS reading (default 32)
  BENCH_TMP    where the data goes (default /var/tmp; not a tmpfs)
  PEER         0: skip Dovecot (default 1; needs root and peers-install.sh)
  PEER_DIR     the peer scripts (default <repo>/../shared/bench)

Exit status 1 if a run counted errors.
EOF
}

JSON_ONLY=0
for a in "$@"; do
	case $a in
	--help | -h)
		usage
		exit 0
		;;
	--json) JSON_ONLY=1 ;;
	*)
		usage >&2
		exit 2
		;;
	esac
done

ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"
NMSGS=${NMSGS:-5000 50000}
SIZE=${SIZE:-4096}
CLIENTS=${CLIENTS:-4}
SECONDS_PER_OP=${OP_SECONDS:-5}
SESSIONS=${SESSIONS:-32}
BENCH_TMP=${BENCH_TMP:-/var/tmp}
PEER=${PEER:-1}
PEER_DIR=${PEER_DIR:-$ROOT/../shared/bench}
PY=/usr/bin/python3
LOAD=$PEER_DIR/imap-load.py
BIN=$ROOT/build/bin
DOMAIN=bench.test
OPS="select fetch_flags fetch_body search store"

if [[ $JSON_ONLY == 1 ]]; then
	exec 3>&1 1>&2
else
	exec 3>&1
fi

make -s >&2

TMP=$(mktemp -d "$BENCH_TMP/roost-imap.XXXX")
# shellcheck source=bench/lib.sh
source "$ROOT/bench/lib.sh"
REC=$TMP/records.jsonl
: >"$REC"
failed=0
LOAD_START=$(cut -d' ' -f1-3 /proc/loadavg)
T_START=$(date -u +%Y-%m-%dT%H:%M:%SZ)

free_port() {
	"$PY" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}
pss_kb() {
	awk '$1 == "Pss:" { s += $2 } END { print s + 0 }' "/proc/$1/smaps_rollup"
}
ticks3() { echo "$(cpu_ticks "$imapd") $(cpu_ticks "$storaged") $(cpu_ticks "$busd")"; }

# record KEY=VALUE...: one JSON object per run into $REC.
record() {
	"$PY" -c '
import json, sys
d = {}
for kv in sys.argv[1:]:
    k, _, v = kv.partition("=")
    try:
        d[k] = json.loads(v)
    except ValueError:
        d[k] = v
print(json.dumps(d, sort_keys=True))' "$@" >>"$REC"
}

# ---- the stack ----
export ROOST_BUS_DIR=$TMP/bus ROOST_DATA_DIR=$TMP/data
mkdir -p "$TMP/data"
PORT=$(free_port)
start busd "$BIN/busd"
wait_for "busd" test -S "$TMP/bus/clients"
start storaged "$BIN/storaged"
wait_for "storaged" bash -c "'$BIN/roostctl' status | grep -q '^storaged '"
ROOST_LISTEN=127.0.0.1 ROOST_IMAP_PORT=$PORT ROOST_IMAPS_PORT=$(free_port) ROOST_HOSTNAME=imap.$DOMAIN \
	ROOST_IMAP_PLAINTEXT_LOOPBACK=1 ROOST_IMAP_MAX_PER_IP=1000 \
	start imapd "$BIN/imapd"
wait_for "imapd" bash -c "'$BIN/roostctl' status | grep -q '^imapd.control '"
wait_for "imapd's greeting" "$PY" -c "import socket; s = socket.create_connection(('127.0.0.1', $PORT), 2); assert s.recv(64).startswith(b'* OK')"
"$BIN/roostctl" domain add "$DOMAIN" >/dev/null
FS="$(findmnt -n -o FSTYPE -T "$TMP") on $(findmnt -n -o SOURCE -T "$TMP")"

# fill USER N: N messages through APPEND, the text of peer-imap.sh.
fill() {
	"$PY" - "$PORT" "$1" "$2" "$SIZE" <<'EOF'
import imaplib, sys, time
port, user, n, size = int(sys.argv[1]), sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
m = imaplib.IMAP4("127.0.0.1", port, timeout=120)
m.login(user, "bench")
base = int(time.time()) - n
line = b"The quick brown fox jumps over the lazy dog; pack my box with five dozen jugs.\r\n"
t = time.perf_counter()
for i in range(1, n + 1):
    hdr = (f"Return-Path: <sender@bench.test>\r\n"
           f"From: Sender <sender@bench.test>\r\n"
           f"To: Bench <bench@bench.test>\r\n"
           f"Subject: bench message {i:06d}\r\n"
           f"Date: {time.strftime('%a, %d %b %Y %H:%M:%S +0000', time.gmtime(base + i))}\r\n"
           f"Message-ID: <{i:06d}@bench.test>\r\n"
           f"MIME-Version: 1.0\r\nContent-Type: text/plain; charset=us-ascii\r\n\r\n").encode()
    body = (line * (max(0, size - len(hdr)) // len(line) + 1))[: max(0, size - len(hdr))]
    typ, _ = m.append("INBOX", r"(\Seen)" if i % 3 == 0 else "", imaplib.Time2Internaldate(base + i), hdr + body)
    if typ != "OK":
        sys.exit("APPEND %d: %s" % (i, typ))
print("%.1f" % (n / (time.perf_counter() - t)))
m.logout()
EOF
}

# cold USER: "LOGIN+SELECT ms, first UID FETCH 1:* (FLAGS) ms, EXISTS".
cold() {
	"$PY" - "$PORT" "$1" <<'EOF'
import imaplib, sys, time
t = time.perf_counter()
m = imaplib.IMAP4("127.0.0.1", int(sys.argv[1]), timeout=120)
m.login(sys.argv[2], "bench")
typ, d = m.select("INBOX")
t1 = time.perf_counter()
m.uid("FETCH", "1:*", "(FLAGS)")
t2 = time.perf_counter()
print("%.0f %.0f %s" % (1000 * (t1 - t), 1000 * (t2 - t1), d[0].decode()))
m.logout()
EOF
}

# roost_op USER NMSG OP: imap-load.py with one op type against imapd, recorded.
roost_op() {
	local user=$1 nmsg=$2 op=$3 out c0 c1 j
	c0=$(ticks3)
	out=$("$PY" "$LOAD" --port "$PORT" --user "$user" --pass bench --clients "$CLIENTS" \
		--seconds "$SECONDS_PER_OP" --ops "$op" --json 2>&1) || true
	c1=$(ticks3)
	echo "$out" >"$TMP/run-$nmsg-$op.log"
	j=$(sed -n 's/^JSON //p' <<<"$out" | tail -n 1)
	if [[ -z $j ]]; then
		echo "!! imap-load.py $op on $nmsg failed:" >&2
		tail -n 5 <<<"$out" >&2
		failed=1
		j='{}'
	fi
	local rate p50 p99 errs ops ccpu
	read -r rate p50 p99 errs ops ccpu < <("$PY" -c '
import json, sys
d = json.loads(sys.argv[1] or "{}")
o = (list(d.get("per_op", {}).values()) or [{}])[0]
print(o.get("ops_per_s", 0), o.get("p50_ms", "null"), o.get("p99_ms", "null"), o.get("errors", 1),
      o.get("ok", 0), d.get("client_cpu_pct", "null"))' "$j")
	[[ $errs != 0 ]] && failed=1
	local cpu
	cpu=$(awk -v a="$c0" -v b="$c1" -v h="$TICKS" -v n="$ops" 'BEGIN {
		split(a, x, " "); split(b, y, " "); n = n ? n : 1;
		printf "[%.1f,%.1f,%.1f]", 1e6 * (y[1] - x[1]) / h / n, 1e6 * (y[2] - x[2]) / h / n, 1e6 * (y[3] - x[3]) / h / n }')
	printf '  imapd   %6s msgs  %-12s %9s ops/s  p50 %8s ms  p99 %8s ms  errors %s  client CPU %s%%  CPU us/op imapd,storaged,busd %s\n' \
		"$nmsg" "$op" "$rate" "$p50" "$p99" "$errs" "$ccpu" "$cpu" >&2
	record side=imapd nmsg="$nmsg" op="$op" ops_per_s="$rate" p50_ms="$p50" p99_ms="$p99" errors="$errs" \
		ops="$ops" client_cpu_pct="$ccpu" cpu_us_per_op="$cpu" loadavg="\"$(cut -d' ' -f1 /proc/loadavg)\""
}

# peer NMSG: peer-imap.sh's isolated runs, recorded.
peer() {
	local nmsg=$1 out rc=0 op line
	out=$(NMSG=$nmsg SIZE=$SIZE CLIENTS=$CLIENTS ISO_SECONDS=$SECONDS_PER_OP DURATION=5 \
		BENCH_TMP=$BENCH_TMP PORT=$(free_port) "$PEER_DIR/peer-imap.sh" 2>&1) || rc=$?
	echo "$out" >"$TMP/peer-$nmsg.log"
	[[ $rc != 0 ]] && { failed=1; echo "!! peer-imap.sh NMSG=$nmsg: rc=$rc" >&2; tail -n 10 <<<"$out" >&2; }
	[[ -z $DV ]] && DV=$(dovecot --version 2>/dev/null | cut -d' ' -f1)
	grep '^   cold open' <<<"$out" | sed "s/^ */  Dovecot $nmsg msgs /" >&2 || true
	for op in $OPS; do
		# "  fetch_body     1234.5 ops/s   p50 ... ms   p99 ... ms   errors 0 ..."
		line=$(awk -v op="$op" '$1 == op && $3 == "ops/s" { l = $0 } END { print l }' <<<"$out")
		local rate p50 p99 errs
		read -r rate p50 p99 errs < <(awk '{ print $2, $5, $8, $11 }' <<<"$line")
		printf '  Dovecot %6s msgs  %-12s %9s ops/s  p50 %8s ms  p99 %8s ms  errors %s\n' \
			"$nmsg" "$op" "${rate:-?}" "${p50:-?}" "${p99:-?}" "${errs:-?}" >&2
		record side=dovecot nmsg="$nmsg" op="$op" ops_per_s="${rate:-null}" p50_ms="${p50:-null}" \
			p99_ms="${p99:-null}" errors="${errs:-null}"
	done
	local rss
	rss=$(grep -o 'RSS peak during load [0-9]* MiB' <<<"$out" | grep -o '[0-9]*' || true)
	record side=dovecot nmsg="$nmsg" op=rss rss_peak_mib="${rss:-null}"
}

DO_PEER=0
DV=
if [[ $PEER == 1 ]]; then
	if [[ $(id -u) == 0 && -x $PEER_DIR/peer-imap.sh && -x /usr/sbin/dovecot ]]; then
		DO_PEER=1
	else
		echo "imap.sh: Dovecot not run (needs root, $PEER_DIR/peer-imap.sh and peers-install.sh)" >&2
	fi
fi

echo "imapd on 127.0.0.1:$PORT, data in $TMP ($FS); load average at start: $LOAD_START" >&2
for nmsg in $NMSGS; do
	user="bench$nmsg@$DOMAIN"
	"$BIN/roostctl" user add "$user" --password-stdin <<<"bench" >/dev/null
	rate=$(fill "$user" "$nmsg") || { failed=1; rate=null; }
	read -r c_select c_fetch c_exists < <(cold "$user")
	echo "  imapd   $nmsg msgs: APPEND fill $rate msgs/s; cold LOGIN+SELECT $c_select ms ($c_exists msgs), first UID FETCH 1:* (FLAGS) $c_fetch ms" >&2
	record side=imapd nmsg="$nmsg" op=cold append_per_s="$rate" select_ms="$c_select" fetch_flags_ms="$c_fetch" exists="$c_exists"
	for op in $OPS; do
		roost_op "$user" "$nmsg" "$op"
	done
	[[ $DO_PEER == 1 ]] && peer "$nmsg"
done

# ---- memory: SESSIONS sessions logged in with INBOX selected ----
PSS_IDLE="$(pss_kb "$imapd") $(pss_kb "$storaged") $(pss_kb "$busd")"
first_user="bench$(awk '{ print $1 }' <<<"$NMSGS")@$DOMAIN"
PSS_SESSIONS=$("$PY" - "$PORT" "$first_user" "$SESSIONS" "$imapd" <<'EOF'
import imaplib, sys, time
port, user, n, pid = int(sys.argv[1]), sys.argv[2], int(sys.argv[3]), sys.argv[4]
ms = []
for _ in range(n):
    m = imaplib.IMAP4("127.0.0.1", port, timeout=120)
    m.login(user, "bench")
    m.select("INBOX")
    m.uid("FETCH", "1:*", "(FLAGS)")
    ms.append(m)
time.sleep(1)
pss = sum(int(l.split()[1]) for l in open("/proc/%s/smaps_rollup" % pid) if l.startswith("Pss:"))
for m in ms:
    m.logout()
print(pss)
EOF
)
LOAD_END=$(cut -d' ' -f1-3 /proc/loadavg)
T_END=$(date -u +%Y-%m-%dT%H:%M:%SZ)
# (imapd's warning that it has no certificate, hence no TLS, is expected)
WARNINGS=$(cat "$TMP/imapd.log" "$TMP/storaged.log" "$TMP/busd.log" | grep ' \(warn\|error\) ' | grep -vc ' imapd tls why=' || true)
if [[ $WARNINGS != 0 ]]; then
	echo "!! warnings/errors in the logs ($WARNINGS), first ones:" >&2
	grep -h ' \(warn\|error\) ' "$TMP/imapd.log" "$TMP/storaged.log" "$TMP/busd.log" | grep -v ' imapd tls why=' | head -5 >&2 || true
fi

# ---- report ----
export NMSGS OPS DO_PEER PSS_IDLE PSS_SESSIONS SESSIONS T_START T_END LOAD_START LOAD_END FS DV TMP CLIENTS SECONDS_PER_OP SIZE WARNINGS
R_CORES=$(nproc) R_KERNEL=$(uname -r) "$PY" - "$REC" <<'EOF'
import json, os, sys
recs = [json.loads(l) for l in open(sys.argv[1])]
def get(side, nmsg, op):
    for r in recs:
        if (r["side"], r["nmsg"], r["op"]) == (side, nmsg, op):
            return r
    return {}
num = lambda x: isinstance(x, (int, float))
f = lambda x, fmt="{:.0f}": fmt.format(x) if num(x) else "-"
peer = os.environ["DO_PEER"] == "1"
ratios = []
print()
print("imapd benchmark, %s to %s, %s cores, %s, data on %s; load average at start %s, at end %s"
      % (os.environ["T_START"], os.environ["T_END"], os.environ["R_CORES"], os.environ["R_KERNEL"], os.environ["FS"],
         os.environ["LOAD_START"], os.environ["LOAD_END"]))
print("imap-load.py, %s clients, %s s per op type, messages of about %s B; imapd with imap_plaintext_loopback=1, the rest as shipped"
      % (os.environ["CLIENTS"], os.environ["SECONDS_PER_OP"], os.environ["SIZE"]))
print()
print("| messages | op | imapd ops/s | imapd p99 ms | Dovecot ops/s | Dovecot p99 ms | imapd / Dovecot | CPU µs/op imapd, storaged, busd |")
print("|---------:|----|------------:|-------------:|--------------:|---------------:|----------------:|--------------------------------|")
for nmsg in [int(x) for x in os.environ["NMSGS"].split()]:
    for op in os.environ["OPS"].split():
        r, p = get("imapd", nmsg, op), get("dovecot", nmsg, op)
        q = round(r["ops_per_s"] / p["ops_per_s"], 2) if num(r.get("ops_per_s")) and num(p.get("ops_per_s")) and p["ops_per_s"] > 0 else None
        ratios.append({"nmsg": nmsg, "op": op, "ratio": q})
        c = r.get("cpu_us_per_op") or []
        print("| %d | %s | %s | %s | %s | %s | %s | %s |" % (nmsg, op, f(r.get("ops_per_s"), "{:.1f}"), f(r.get("p99_ms"), "{:.1f}"),
              f(p.get("ops_per_s"), "{:.1f}") if peer else "-", f(p.get("p99_ms"), "{:.1f}") if peer else "-",
              f(q, "{:.2f}"), ", ".join("%.0f" % x for x in c)))
print()
idle = [int(x) for x in os.environ["PSS_IDLE"].split()]
pss = int(os.environ["PSS_SESSIONS"] or 0)
print("imapd PSS: %d kB idle after the runs, %d kB with %s sessions logged in and selected (storaged %d kB, busd %d kB idle)"
      % (idle[0], pss, os.environ["SESSIONS"], idle[1], idle[2]))
print("warnings/errors in the logs: " + os.environ["WARNINGS"])
got = [r for r in ratios if r["ratio"] is not None]
met = None
if peer and got and len(got) == len(ratios):
    met = all(r["ratio"] >= 1 for r in got)
    low = min(got, key=lambda r: r["ratio"])
    print("Target >= Dovecot's ops/s on every op: %s (lowest %.2f: %s on %d messages; %d of %d)"
          % ("met" if met else "NOT met", low["ratio"], low["op"], low["nmsg"], sum(r["ratio"] >= 1 for r in got), len(got)))
    print("Peer: Dovecot " + os.environ["DV"] + " via peer-imap.sh (same messages, clients and seconds per op)")
print("Target imapd PSS < 10 MB with %s sessions: %.1f MB, %s" % (os.environ["SESSIONS"], pss / 1024, "met" if pss and pss < 10240 else "NOT met"))
out = {"tool": "imap", "start": os.environ["T_START"], "end": os.environ["T_END"], "runs": recs, "ratios": ratios,
       "pss_sessions_kb": pss, "pss_idle_kb": dict(zip(("imapd", "storaged", "busd"), idle)),
       "target_ops_met": met, "target_pss_met": bool(pss and pss < 10240)}
open(os.environ["TMP"] + "/json", "w").write("JSON " + json.dumps(out, sort_keys=True) + "\n")
EOF
cat "$TMP/json" >&3
exit "$failed"
