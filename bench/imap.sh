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
  3. the peer: /work/shared/bench/peer-imap.sh with the same NMSG, SIZE and
     CLIENTS writes Dovecot's Maildir (its cold open and 5 s mixed run, for
     Dovecot's RSS, are reported, not compared) and is kept (KEEP=1); this
     script then starts that same private Dovecot again from its config
  4. for each op type alone (select, fetch_flags, fetch_body, search,
     store), ROUNDS rounds of /work/shared/bench/imap-load.py with CLIENTS
     clients for OP_SECONDS s against imapd and against Dovecot, the two
     sides alternating (who goes first alternates too), so that both see
     the same machine; the median round of each side is compared (imapd,
     storaged and busd CPU per op from /proc; the clients' CPU per op)

Then the floor of FETCH BODY.PEEK[], which is one storaged round trip:
busbench's CLIENTS clients through busd to echo-worker (a worker that does
nothing) with SIZE-byte replies, and the CPU that costs busd, echo-worker
and busbench per round trip. With imap-load.py's own CPU per fetch_body
against Dovecot, ncpu / (the two) is the most fetch_body/s any server
behind one bus round trip could give this client on this machine.

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
  OP_SECONDS   seconds per op type and round (default 5)
  ROUNDS       rounds per op type and side (default 3)
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
ROUNDS=${ROUNDS:-3}
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

# load_op SIDE PORT USER NMSG OP ROUND: imap-load.py with one op type, recorded.
load_op() {
	local side=$1 port=$2 user=$3 nmsg=$4 op=$5 round=$6 out c0 c1 j
	[[ $side == imapd ]] && c0=$(ticks3)
	out=$("$PY" "$LOAD" --port "$port" --user "$user" --pass bench --clients "$CLIENTS" \
		--seconds "$SECONDS_PER_OP" --ops "$op" --json 2>&1) || true
	[[ $side == imapd ]] && c1=$(ticks3)
	echo "$out" >"$TMP/run-$side-$nmsg-$op-$round.log"
	j=$(sed -n 's/^JSON //p' <<<"$out" | tail -n 1)
	if [[ -z $j ]]; then
		echo "!! imap-load.py $op on $nmsg against $side failed:" >&2
		tail -n 5 <<<"$out" >&2
		failed=1
		j='{}'
	fi
	local rate p50 p99 errs ops ccpu
	read -r rate p50 p99 errs ops ccpu < <("$PY" -c '
import json, sys
d = json.loads(sys.argv[1] or "{}")
o = (list(d.get("per_op", {}).values()) or [{}])[0]
n = o.get("ok", 0)
print(o.get("ops_per_s", 0), o.get("p50_ms", "null"), o.get("p99_ms", "null"), o.get("errors", 1), n,
      round(1e6 * d["client_cpu_s"] / n, 1) if n and "client_cpu_s" in d else "null")' "$j")
	[[ $errs != 0 ]] && failed=1
	local cpu=null
	if [[ $side == imapd ]]; then
		cpu=$(awk -v a="$c0" -v b="$c1" -v h="$TICKS" -v n="$ops" 'BEGIN {
			split(a, x, " "); split(b, y, " "); n = n ? n : 1;
			printf "[%.1f,%.1f,%.1f]", 1e6 * (y[1] - x[1]) / h / n, 1e6 * (y[2] - x[2]) / h / n, 1e6 * (y[3] - x[3]) / h / n }')
	fi
	printf '  %-7s %6s msgs  %-12s round %s %9s ops/s  p50 %8s ms  p99 %8s ms  errors %s  client CPU %s us/op%s\n' \
		"$side" "$nmsg" "$op" "$round" "$rate" "$p50" "$p99" "$errs" "$ccpu" \
		"$([[ $side == imapd ]] && echo "  CPU us/op imapd,storaged,busd $cpu")" >&2
	record side="$side" nmsg="$nmsg" op="$op" round="$round" ops_per_s="$rate" p50_ms="$p50" p99_ms="$p99" \
		errors="$errs" ops="$ops" client_cpu_us_per_op="$ccpu" cpu_us_per_op="$cpu" \
		loadavg="\"$(cut -d' ' -f1 /proc/loadavg)\""
}

# peer_setup NMSG: peer-imap.sh writes Dovecot's Maildir for NMSG messages
# (its cold open and a 5 s mixed run for Dovecot's RSS; no per-op runs) and
# keeps it; the same Dovecot is then started again from its own config
# (DV_DIR, DV_PORT, DV_MASTER).
DV_DIR= DV_PORT= DV_MASTER=
peer_setup() {
	local nmsg=$1 out rc=0
	DV_PORT=$(free_port)
	out=$(NMSG=$nmsg SIZE=$SIZE CLIENTS=$CLIENTS ISO_SECONDS=0 DURATION=5 KEEP=1 \
		BENCH_TMP=$BENCH_TMP PORT=$DV_PORT "$PEER_DIR/peer-imap.sh" 2>&1) || rc=$?
	echo "$out" >"$TMP/peer-$nmsg.log"
	DV_DIR=$(sed -n 's/^peer-imap: kept //p' <<<"$out")
	if [[ $rc != 0 || -z $DV_DIR || ! -f $DV_DIR/dovecot.conf ]]; then
		failed=1
		echo "!! peer-imap.sh NMSG=$nmsg: rc=$rc" >&2
		tail -n 10 <<<"$out" >&2
		[[ -n $DV_DIR ]] && rm -rf "$DV_DIR"
		DV_DIR=
		return 1
	fi
	[[ -z $DV ]] && DV=$(dovecot --version 2>/dev/null | cut -d' ' -f1)
	grep '^   cold open' <<<"$out" | sed "s/^ */  Dovecot $nmsg msgs /" >&2 || true
	local rss
	rss=$(grep -o 'RSS peak during load [0-9]* MiB' <<<"$out" | grep -o '[0-9]*' || true)
	record side=dovecot nmsg="$nmsg" op=rss rss_peak_mib="${rss:-null}"
	/usr/sbin/dovecot -c "$DV_DIR/dovecot.conf"
	wait_for "Dovecot" "$PY" -c "import socket; s = socket.create_connection(('127.0.0.1', $DV_PORT), 2); assert s.recv(64).startswith(b'* OK')"
	DV_MASTER=$(<"$DV_DIR/run/master.pid")
}

# peer_stop: stops the Dovecot peer_setup started (its master, by PID) and
# removes its directory.
peer_stop() {
	local i
	if [[ -n $DV_MASTER ]] && kill "$DV_MASTER" 2>/dev/null; then
		for ((i = 0; i < 50; i++)); do
			kill -0 "$DV_MASTER" 2>/dev/null || break
			sleep 0.1
		done
	fi
	[[ -n $DV_DIR ]] && rm -rf "$DV_DIR"
	DV_DIR= DV_MASTER=
}
trap 'peer_stop; cleanup' EXIT

# bus_floor: busbench's CLIENTS clients through busd to echo-worker with
# SIZE-byte replies for OP_SECONDS s; the CPU per round trip of busd,
# echo-worker and busbench (its forked clients included), recorded.
bus_floor() {
	start echoworker "$BIN/echo-worker"
	wait_for "echo-worker" bash -c "'$BIN/roostctl' status | grep -q '^echo '"
	local b0 e0 b1 e1 out j times
	b0=$(cpu_ticks "$busd") e0=$(cpu_ticks "$echoworker")
	out=$({ "$BIN/busbench" client busd "ipc://$TMP/bus/clients" --clients "$CLIENTS" --size "$SIZE" \
		--seconds "$SECONDS_PER_OP" --warmup 0 --fork --json; times; } 2>&1) || true
	b1=$(cpu_ticks "$busd") e1=$(cpu_ticks "$echoworker")
	j=$(grep '^{' <<<"$out" | tail -n 1)
	# `times`: the shell's user and system time, then its children's.
	times=$(tail -n 2 <<<"$out")
	local rate
	rate=$(json rtt_per_s "$j")
	"$PY" - "$rate" "$SECONDS_PER_OP" "$TICKS" "$((b1 - b0))" "$((e1 - e0))" "$times" >>"$REC" <<'EOF'
import json, re, sys
rate, secs, hz, busd, echo = float(sys.argv[1] or 0), float(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5])
t = [int(m) * 60 + float(s) for m, s in re.findall(r"(\d+)m([\d.]+)s", sys.argv[6])]
n = rate * secs or 1
client = 1e6 * (t[2] + t[3]) / n if len(t) == 4 else None
us = [1e6 * busd / hz / n, 1e6 * echo / hz / n, client]
print(json.dumps({"side": "bus", "op": "floor", "nmsg": 0, "rtt_per_s": rate,
                  "cpu_us_per_rtt": [round(x, 1) if x is not None else None for x in us]}))
EOF
	tail -n 1 "$REC" | sed 's/^/  bus echo: /' >&2
	kill "$echoworker" 2>/dev/null || true
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
	peer_ok=0
	[[ $DO_PEER == 1 ]] && peer_setup "$nmsg" && peer_ok=1
	for op in $OPS; do
		for ((round = 1; round <= ROUNDS; round++)); do
			if [[ $peer_ok == 1 && $((round % 2)) == 0 ]]; then
				load_op dovecot "$DV_PORT" bench "$nmsg" "$op" "$round"
			fi
			load_op imapd "$PORT" "$user" "$nmsg" "$op" "$round"
			if [[ $peer_ok == 1 && $((round % 2)) == 1 ]]; then
				load_op dovecot "$DV_PORT" bench "$nmsg" "$op" "$round"
			fi
		done
	done
	peer_stop
done
bus_floor

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
export ROUNDS NMSGS OPS DO_PEER PSS_IDLE PSS_SESSIONS SESSIONS T_START T_END LOAD_START LOAD_END FS DV TMP CLIENTS SECONDS_PER_OP SIZE WARNINGS
R_CORES=$(nproc) R_KERNEL=$(uname -r) "$PY" - "$REC" <<'EOF'
import json, os, sys
recs = [json.loads(l) for l in open(sys.argv[1])]
num = lambda x: isinstance(x, (int, float))
def get(side, nmsg, op):
    """The median round (by ops/s) of one side, op and mailbox size."""
    rs = sorted((r for r in recs if (r["side"], r["nmsg"], r["op"]) == (side, nmsg, op)),
                key=lambda r: r.get("ops_per_s") if num(r.get("ops_per_s")) else -1)
    if not rs:
        return {}
    m = dict(rs[(len(rs) - 1) // 2])
    m["all"] = [r.get("ops_per_s") for r in rs]
    return m
f = lambda x, fmt="{:.0f}": fmt.format(x) if num(x) else "-"
peer = os.environ["DO_PEER"] == "1"
ratios = []
print()
print("imapd benchmark, %s to %s, %s cores, %s, data on %s; load average at start %s, at end %s"
      % (os.environ["T_START"], os.environ["T_END"], os.environ["R_CORES"], os.environ["R_KERNEL"], os.environ["FS"],
         os.environ["LOAD_START"], os.environ["LOAD_END"]))
print("imap-load.py, %s clients, %s s per op type and round, %s rounds per side alternating with Dovecot's, the median round compared;"
      " messages of about %s B; imapd with imap_plaintext_loopback=1, the rest as shipped"
      % (os.environ["CLIENTS"], os.environ["SECONDS_PER_OP"], os.environ["ROUNDS"], os.environ["SIZE"]))
print()
print("| messages | op | imapd ops/s | imapd p99 ms | Dovecot ops/s | Dovecot p99 ms | imapd / Dovecot | rounds imapd; Dovecot | client CPU µs/op imapd; Dovecot | CPU µs/op imapd, storaged, busd |")
print("|---------:|----|------------:|-------------:|--------------:|---------------:|----------------:|-----------------------|---------------------------------|--------------------------------|")
rounds = lambda r: ", ".join(f(x) for x in r.get("all", []))
for nmsg in [int(x) for x in os.environ["NMSGS"].split()]:
    for op in os.environ["OPS"].split():
        r, p = get("imapd", nmsg, op), get("dovecot", nmsg, op)
        q = round(r["ops_per_s"] / p["ops_per_s"], 2) if num(r.get("ops_per_s")) and num(p.get("ops_per_s")) and p["ops_per_s"] > 0 else None
        ratios.append({"nmsg": nmsg, "op": op, "ratio": q})
        c = r.get("cpu_us_per_op") or []
        print("| %d | %s | %s | %s | %s | %s | %s | %s; %s | %s; %s | %s |" % (nmsg, op, f(r.get("ops_per_s"), "{:.1f}"), f(r.get("p99_ms"), "{:.1f}"),
              f(p.get("ops_per_s"), "{:.1f}") if peer else "-", f(p.get("p99_ms"), "{:.1f}") if peer else "-",
              f(q, "{:.2f}"), rounds(r), rounds(p), f(r.get("client_cpu_us_per_op")), f(p.get("client_cpu_us_per_op")),
              ", ".join("%.0f" % x for x in c)))
print()
fl = next((r for r in recs if r["side"] == "bus"), {})
bus = fl.get("cpu_us_per_rtt") or []
floors = []
if bus and all(num(x) for x in bus):
    ncpu = int(os.environ["R_CORES"])
    print("Bus round trip, %s clients through busd to echo-worker (which does nothing), %s B replies: %s/s; CPU per round trip: busd %.0f, echo-worker %.0f, busbench %.0f = %.0f µs"
          % (os.environ["CLIENTS"], os.environ["SIZE"], f(fl.get("rtt_per_s")), bus[0], bus[1], bus[2], sum(bus)))
    for nmsg in [int(x) for x in os.environ["NMSGS"].split()]:
        p = get("dovecot", nmsg, "fetch_body")
        cl = p.get("client_cpu_us_per_op")
        if not (num(cl) and num(p.get("ops_per_s")) and p["ops_per_s"] > 0):
            continue
        top = ncpu * 1e6 / (sum(bus) + cl)
        floors.append({"nmsg": nmsg, "op": "fetch_body", "max_ops_per_s": round(top), "max_ratio": round(top / p["ops_per_s"], 2)})
        print("FETCH BODY.PEEK[] floor on %d messages: imap-load.py's %.0f µs per fetch (against Dovecot) + one bus round trip's %.0f µs"
              " -> at most %.0f fetches/s on %d cores for any server behind one bus round trip = %.2f x Dovecot's %.0f"
              % (nmsg, cl, sum(bus), top, ncpu, top / p["ops_per_s"], p["ops_per_s"]))
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
    print("Peer: Dovecot " + os.environ["DV"] + " on the Maildir peer-imap.sh wrote (same messages, clients, seconds and rounds per op)")
print("Target imapd PSS < 10 MB with %s sessions: %.1f MB, %s" % (os.environ["SESSIONS"], pss / 1024, "met" if pss and pss < 10240 else "NOT met"))
out = {"tool": "imap", "start": os.environ["T_START"], "end": os.environ["T_END"], "runs": recs, "ratios": ratios,
       "pss_sessions_kb": pss, "fetch_body_floor": floors, "bus_cpu_us_per_rtt": bus, "pss_idle_kb": dict(zip(("imapd", "storaged", "busd"), idle)),
       "target_ops_met": met, "target_pss_met": bool(pss and pss < 10240)}
open(os.environ["TMP"] + "/json", "w").write("JSON " + json.dumps(out, sort_keys=True) + "\n")
EOF
cat "$TMP/json" >&3
exit "$failed"
