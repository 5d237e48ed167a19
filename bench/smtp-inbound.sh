#!/usr/bin/env bash
# bench/smtp-inbound.sh — smtpd's inbound MX (issue 4): accepted msgs/s with
# durable storage and p99 DATA->250, beside Postfix delivering to Maildir in
# the same run; smtpd's memory with 64 sessions of 100 KiB; CPU per message.
# See --help. Results go to stdout only: bench/RESULTS.md is edited by hand.
set -euo pipefail

usage() {
	cat <<'EOF'
usage: bench/smtp-inbound.sh [--json] [--help]

Builds (make), then in a temp dir $BENCH_TMP/roost-smtp.XXXX (a real disk:
durability must mean fsync) starts build/bin/busd, build/bin/storaged (WAL,
synchronous=FULL, as shipped) and build/bin/smtpd on a free 127.0.0.1 port,
adds the domain bench.test and one user per run (roostctl), and for every
size (4 KiB, 100 KiB) and concurrency (1, 8, 64):

  1. /work/shared/bench/smtp-load.py (plain SMTP, one message per
     connection) sends N messages to smtpd: accepted msgs/s, DATA->250 p99
  2. Postfix's smtp-source -s C -m N -l SIZE-150 the same (the rate from
     the wall time; smtp-source does not count its ~150 header bytes)
  3. after each, storaged.mailbox.status of that run's INBOX must hold
     exactly the messages the generator saw accepted (250 = durable store)
  4. the peer: /work/shared/bench/peer-smtp.sh with MSGS=N CONC=C SIZE
     (a private Postfix 3.7 into its queue and Maildir, both fsynced; it also
     runs its own TLS and --reuse variants, which are not compared here,
     and both generators against smtp-sink, a server that writes nothing:
     that rate is the generator's own ceiling at that size and concurrency)

smtpd, storaged and busd: CPU seconds per message (/proc/PID/stat) in the
8-client runs; PSS (/proc/PID/smaps_rollup) sampled every PSS_INTERVAL s
while 64 sessions send 100 KiB messages (the max is reported), and idle.
With 1 client, also the floor: a bus round trip through busd to
echo-worker (which does nothing) and fdatasync of the message's bytes on the
same disk, added to the generator's time against smtp-sink: the fastest rate
any server behind this bus could reach with 1 client.
Prints a markdown table with the ratios smtpd/Postfix for every size x
concurrency x generator, the targets, and one machine-readable line
"JSON {...}" (with --json, only that line goes to stdout).

smtpd's settings for the bench (said in the output too):
  smtp_greet_delay_ms = 0   (default 1000: an early-talker pause per
                             connection; Postfix's smtpd has none without
                             postscreen, and one message per connection
                             would measure the pause)
  smtp_max_per_ip = 1000    (default 20: every client is 127.0.0.1, and 64
                             sessions would be refused with 421)
Everything else as shipped.

Environment:
  MSGS          messages per run with 8 and 64 clients (default 1000; runs
                with 1 client send MSGS/4). Postfix gets the same N.
  SIZES         message sizes in bytes (default "4096 102400")
  CONCS         concurrencies (default "1 8 64")
  TIMEOUT       smtp-load's overall limit per run, seconds (default 120)
  PSS_INTERVAL  PSS sampling period, seconds (default 0.1)
  BENCH_TMP     where the data goes (default /var/tmp; not a tmpfs)
  PEER          0: skip Postfix (default 1; needs root and peers-install.sh)
  PEER_DIR      the peer scripts (default <repo>/../shared/bench)

About 4 minutes with the defaults on 2 cores (3 of them Postfix's runs).
Exit status 1 if a run counted errors or a mailbox missed a message.
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
MSGS=${MSGS:-1000}
SIZES=${SIZES:-4096 102400}
CONCS=${CONCS:-1 8 64}
TIMEOUT=${TIMEOUT:-120}
PSS_INTERVAL=${PSS_INTERVAL:-0.1}
BENCH_TMP=${BENCH_TMP:-/var/tmp}
PEER=${PEER:-1}
PEER_DIR=${PEER_DIR:-$ROOT/../shared/bench}
PY=/usr/bin/python3
LOAD=$PEER_DIR/smtp-load.py
BIN=$ROOT/build/bin
DOMAIN=bench.test

# With --json the report goes to stderr and only the JSON line to stdout.
if [[ $JSON_ONLY == 1 ]]; then
	exec 3>&1 1>&2
else
	exec 3>&1
fi

make -s >&2

TMP=$(mktemp -d "$BENCH_TMP/roost-smtp.XXXX")
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

# pss_kb PID: the process's PSS in kB.
pss_kb() {
	awk '$1 == "Pss:" { s += $2 } END { print s + 0 }' "/proc/$1/smaps_rollup"
}

# mbox_count ADDRESS: "messages size" of the address's INBOX, from storaged.
mbox_count() {
	"$PY" - "$TMP/bus" "$1" <<'EOF'
import os, sys
sys.path.insert(0, os.path.join(os.getcwd(), "tests", "e2e"))
import bus
c = bus.Client(sys.argv[1])
rep, _ = c.call("storaged", {"type": "storaged.mailbox.status", "address": sys.argv[2],
                             "mailbox": "INBOX"}, timeout=30)
c.close()
if rep.get("status") != "ok":
    sys.exit("mailbox.status: %r" % rep)
print(rep["messages"], rep["size"])
EOF
}

# smtpd's own counters (smtpd.control.stats) as one JSON object.
smtpd_stats() {
	"$PY" - "$TMP/bus" <<'EOF'
import json, os, sys
sys.path.insert(0, os.path.join(os.getcwd(), "tests", "e2e"))
import bus
c = bus.Client(sys.argv[1])
rep, _ = c.call("smtpd.control", {"type": "smtpd.control.stats"}, timeout=30)
c.close()
print(json.dumps(rep.get("stats", rep), sort_keys=True))
EOF
}

# ---- the stack ----
export ROOST_BUS_DIR=$TMP/bus ROOST_DATA_DIR=$TMP/data
mkdir -p "$TMP/data"
PORT=$(free_port)
start busd "$BIN/busd"
wait_for "busd" test -S "$TMP/bus/clients"
start storaged "$BIN/storaged"
wait_for "storaged" bash -c "'$BIN/roostctl' status | grep -q '^storaged '"
ROOST_LISTEN=127.0.0.1 ROOST_SMTP_PORT=$PORT ROOST_HOSTNAME=mx.$DOMAIN \
	ROOST_SMTP_GREET_DELAY_MS=0 ROOST_SMTP_MAX_PER_IP=1000 \
	start smtpd "$BIN/smtpd"
wait_for "smtpd" bash -c "'$BIN/roostctl' status | grep -q '^smtpd.control '"
wait_for "smtpd's greeting" "$PY" -c "import socket; s = socket.create_connection(('127.0.0.1', $PORT), 2); assert s.recv(64).startswith(b'220 ')"
"$BIN/roostctl" domain add "$DOMAIN" >/dev/null
FS="$(findmnt -n -o FSTYPE -T "$TMP") on $(findmnt -n -o SOURCE -T "$TMP")"

# one user per run, so each run's INBOX count is its own
user_of() { echo "$1-$2-$3@$DOMAIN"; } # gen size conc
"$BIN/roostctl" user add "warm@$DOMAIN" >/dev/null
for size in $SIZES; do
	for conc in $CONCS; do
		for gen in load source; do
			"$BIN/roostctl" user add "$(user_of "$gen" "$size" "$conc")" >/dev/null
		done
	done
done

# warm-up: the first sessions, storaged's statement cache, page cache
"$PY" "$LOAD" --port "$PORT" --msgs 100 --conc 8 --size 4096 --rcpt "warm@$DOMAIN" >/dev/null || failed=1
sleep 1
PSS_IDLE="$(pss_kb "$smtpd") $(pss_kb "$storaged") $(pss_kb "$busd")"

ticks3() { echo "$(cpu_ticks "$smtpd") $(cpu_ticks "$storaged") $(cpu_ticks "$busd")"; }

# PSS sampler, started around the 64 x 100 KiB runs: "smtpd storaged busd" kB per line.
SAMPLER=
sampler_start() {
	local out=$1
	(
		while :; do
			echo "$(pss_kb "$smtpd") $(pss_kb "$storaged") $(pss_kb "$busd")"
			sleep "$PSS_INTERVAL"
		done
	) >>"$out" 2>/dev/null &
	SAMPLER=$!
	PIDS+=("$SAMPLER")
}
sampler_stop() {
	kill "$SAMPLER" 2>/dev/null || true
	wait "$SAMPLER" 2>/dev/null || true
	SAMPLER=
}

# record KEY=VALUE...: one JSON object per run into $REC (values: numbers or strings).
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

# roost_run GEN SIZE CONC N: one load run against smtpd, recorded.
roost_run() {
	local gen=$1 size=$2 conc=$3 n=$4 rcpt out rc=0 t0 t1 c0 c1 rate p99=null p50=null ok errs ccpu=null
	rcpt=$(user_of "$gen" "$size" "$conc")
	local pss_file=$TMP/pss-$gen-$size-$conc
	[[ $conc == 64 && $size == 102400 ]] && sampler_start "$pss_file"
	c0=$(ticks3)
	t0=$(date +%s.%N)
	if [[ $gen == load ]]; then
		out=$("$PY" "$LOAD" --port "$PORT" --msgs "$n" --conc "$conc" --size "$size" \
			--rcpt "$rcpt" --timeout "$TIMEOUT" --json 2>&1) || rc=$?
	else
		out=$(smtp-source -s "$conc" -m "$n" -l "$((size - 150))" -f "sender@$DOMAIN" -t "$rcpt" \
			-M bench.localdomain "127.0.0.1:$PORT" 2>&1) || rc=$?
	fi
	t1=$(date +%s.%N)
	c1=$(ticks3)
	[[ -n $SAMPLER ]] && sampler_stop
	echo "$out" >"$TMP/run-$gen-$size-$conc.log"
	if [[ $gen == load ]]; then
		local j
		j=$(sed -n 's/^JSON //p' <<<"$out")
		if [[ -z $j ]]; then
			echo "smtp-load failed:" >&2
			echo "$out" >&2
			j='{}'
		fi
		read -r ok errs rate p50 p99 ccpu < <("$PY" -c '
import json, sys
d = json.loads(sys.argv[1] or "{}")
l = d.get("data_to_250_ms", {})
print(d.get("ok", 0), d.get("errors", 0) + d.get("not_sent", 0), d.get("msgs_per_s", 0),
      l.get("p50", "null"), l.get("p99", "null"), d.get("client_cpu_pct_of_core", "null"))' "$j")
	else
		# smtp-source says nothing on success; any output is a warning or an error
		ok=$n errs=0
		if [[ $rc != 0 || -n $out ]]; then
			errs=$(grep -c . <<<"$out" || true)
			[[ $errs == 0 ]] && errs=1
		fi
		rate=$(awk -v n="$n" -v a="$t0" -v b="$t1" 'BEGIN { printf "%.1f", n / (b - a) }')
	fi
	local stored bytes
	read -r stored bytes < <(mbox_count "$rcpt")
	local avg=$((stored > 0 ? bytes / stored : 0))
	# with smtp-source, what it did not get accepted it reported (errs > 0)
	if [[ $errs != 0 || $stored != "$ok" ]]; then
		failed=1
		echo "!! smtpd $gen size=$size conc=$conc: accepted $ok of $n, errors $errs, in the mailbox $stored" >&2
		head -n 5 <<<"$out" | sed 's/^/   /' >&2
	fi
	local cpu pss_max=null
	cpu=$(awk -v a="$c0" -v b="$c1" -v h="$TICKS" -v n="$stored" 'BEGIN {
		split(a, x, " "); split(b, y, " ");
		printf "[%.1f,%.1f,%.1f]", 1e6 * (y[1] - x[1]) / h / (n ? n : 1), 1e6 * (y[2] - x[2]) / h / (n ? n : 1),
			1e6 * (y[3] - x[3]) / h / (n ? n : 1) }')
	if [[ -s $pss_file ]]; then
		pss_max=$(awk '{ for (i = 1; i <= 3; i++) if ($i > m[i]) m[i] = $i } END { printf "[%d,%d,%d,%d]", m[1], m[2], m[3], NR }' "$pss_file")
	fi
	printf '  smtpd   %-6s %6s B x%-3s %5s msgs: %8s msgs/s  p99 %7s ms  errors %s  stored %s (avg %s B)  CPU us/msg smtpd,storaged,busd %s\n' \
		"$gen" "$size" "$conc" "$n" "$rate" "$p99" "$errs" "$stored" "$avg" "$cpu" >&2
	record side=smtpd gen="$gen" size="$size" conc="$conc" msgs="$n" ok="$ok" errors="$errs" \
		stored="$stored" avg_stored_bytes="$avg" msgs_per_s="$rate" p50_ms="$p50" p99_ms="$p99" \
		client_cpu_pct="$ccpu" wall_s="$(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.3f", b - a }')" \
		cpu_us_per_msg="$cpu" pss_max_kb="$pss_max" loadavg="\"$(cut -d' ' -f1 /proc/loadavg)\""
}

# peer_run SIZE CONC N: peer-smtp.sh once (both generators), recorded.
peer_run() {
	local size=$1 conc=$2 n=$3 out rc=0 log=$TMP/peer-$1-$2.log
	out=$(MSGS=$n CONC=$conc SIZE=$size BENCH_TMP=$BENCH_TMP PORT=$(free_port) SINK_PORT=$(free_port) \
		"$PEER_DIR/peer-smtp.sh" 2>&1) || rc=$?
	echo "$out" >"$log"
	local lrate lp50 lp99 lerr srate ldeliv sdeliv lsize ssize serr=0
	read -r lrate lp50 lp99 ldeliv lerr < <(awk '/^  smtp-load -> Postfix / { print $4, $5, $6, $7, $9 }' <<<"$out")
	read -r srate sdeliv < <(awk '/^  smtp-source -> Postfix / { print $4, $7 }' <<<"$out")
	# the generators against smtp-sink (250 to everything, no disk): their own ceiling
	local lsink ssink
	lsink=$(awk '/^  smtp-load -> smtp-sink / { print $6 }' <<<"$out")
	ssink=$(awk '/^  smtp-source -> smtp-sink / { print $5 }' <<<"$out")
	lsize=$(grep -o 'avg file [0-9]* B' <<<"$out" | sed -n '1s/[^0-9]//gp')
	ssize=$(grep -o 'avg file [0-9]* B' <<<"$out" | sed -n '$s/[^0-9]//gp')
	grep -q 'smtp-source exited' <<<"$out" && serr=1
	if [[ $rc != 0 || -z ${lrate:-} || -z ${srate:-} || ${lerr:-1} != 0 || $serr != 0 || $ldeliv == TIMEOUT || $sdeliv == TIMEOUT ]]; then
		failed=1
		echo "!! peer-smtp.sh SIZE=$size CONC=$conc MSGS=$n: rc=$rc, errors (load) ${lerr:-?}, smtp-source failed: $serr; log kept in the report below" >&2
		tail -n 15 <<<"$out" | sed 's/^/   /' >&2
	fi
	[[ -z $PV ]] && PV=$(grep -o 'postfix [0-9.]*' <<<"$out" | head -1)
	printf '  Postfix load   %6s B x%-3s %5s msgs: %8s msgs/s  p99 %7s ms  errors %s  in Maildir after %s s (avg %s B)\n' \
		"$size" "$conc" "$n" "${lrate:-?}" "${lp99:-?}" "${lerr:-?}" "${ldeliv:-?}" "${lsize:-?}" >&2
	printf '  Postfix source %6s B x%-3s %5s msgs: %8s msgs/s  in Maildir after %s s (avg %s B)\n' \
		"$size" "$conc" "$n" "${srate:-?}" "${sdeliv:-?}" "${ssize:-?}" >&2
	printf '  smtp-sink (no disk): smtp-load %s msgs/s, smtp-source %s msgs/s\n' "${lsink:-?}" "${ssink:-?}" >&2
	record side=postfix gen=load size="$size" conc="$conc" msgs="$n" msgs_per_s="${lrate:-null}" \
		p50_ms="${lp50:-null}" p99_ms="${lp99:-null}" errors="${lerr:-null}" maildir_s="\"${ldeliv:-}\"" \
		avg_file_bytes="${lsize:-null}" sink_msgs_per_s="${lsink:-null}"
	record side=postfix gen=source size="$size" conc="$conc" msgs="$n" msgs_per_s="${srate:-null}" \
		errors="$serr" maildir_s="\"${sdeliv:-}\"" avg_file_bytes="${ssize:-null}" sink_msgs_per_s="${ssink:-null}"
}

DO_PEER=0
PV=
if [[ $PEER == 1 ]]; then
	if [[ $(id -u) == 0 && -x $PEER_DIR/peer-smtp.sh && -x /usr/sbin/postfix ]]; then
		DO_PEER=1
	else
		echo "smtp-inbound.sh: Postfix not run (needs root, $PEER_DIR/peer-smtp.sh and peers-install.sh)" >&2
	fi
fi

echo "smtpd on 127.0.0.1:$PORT, data in $TMP ($FS); load average at start: $LOAD_START" >&2
for size in $SIZES; do
	for conc in $CONCS; do
		n=$MSGS
		[[ $conc == 1 ]] && n=$((MSGS / 4))
		roost_run load "$size" "$conc" "$n"
		roost_run source "$size" "$conc" "$n"
		[[ $DO_PEER == 1 ]] && peer_run "$size" "$conc" "$n"
	done
done

STATS=$(smtpd_stats)
sleep 1

# ---- the floor with one client ----
# With one client every message waits, in turn, on the generator, one bus
# round trip (smtpd -> busd -> storaged -> busd -> smtpd) and one fdatasync.
# Measured here, on the same bus and disk: the round trip with a worker that
# does nothing (echo-worker, busbench, 1 client, the message's size) and
# fdatasync after appending the message's bytes to a file in $TMP. With the
# generator's time against smtp-sink they give the fastest rate any server on
# this bus could reach with 1 client, whatever its SQL and SMTP cost.
FLOOR=
if [[ " $CONCS " == *" 1 "* ]]; then
	start echoworker "$BIN/echo-worker"
	wait_for "echo-worker" bash -c "'$BIN/roostctl' status | grep -q '^echo '"
	for size in $SIZES; do
		j=$("$BIN/busbench" client busd "ipc://$TMP/bus/clients" --clients 1 --size "$size" \
			--seconds 3 --warmup 0.5 --json 2>/dev/null | tail -n 1)
		f=$("$PY" - "$TMP/fsync-probe" "$size" <<'EOF'
import os, sys, time
fd = os.open(sys.argv[1], os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o600)
buf = b"x" * int(sys.argv[2])
ts = []
for i in range(400):
    os.write(fd, buf)
    t = time.perf_counter()
    os.fdatasync(fd)
    ts.append(time.perf_counter() - t)
os.close(fd)
os.unlink(sys.argv[1])
ts.sort()
print("%.1f" % (ts[len(ts) // 2] * 1e6))
EOF
)
		FLOOR+="$size $(json p50_us "$j") $f;"
	done
	kill "$echoworker" 2>/dev/null || true
fi
PSS_AFTER="$(pss_kb "$smtpd") $(pss_kb "$storaged") $(pss_kb "$busd")"
LOAD_END=$(cut -d' ' -f1-3 /proc/loadavg)
T_END=$(date -u +%Y-%m-%dT%H:%M:%SZ)
# a transaction smtpd logged with any result but "stored"
NOT_STORED=$(grep ' smtpd txn ' "$TMP/smtpd.log" | grep -vc 'result="\{0,1\}stored' || true)
# (smtpd's warning that it has no certificate, hence no STARTTLS, is expected)
WARNINGS=$(cat "$TMP/smtpd.log" "$TMP/storaged.log" "$TMP/busd.log" | grep ' \(warn\|error\) ' | grep -vc ' smtpd tls why=' || true)
if [[ $NOT_STORED != 0 ]]; then
	failed=1
	echo "!! smtpd logged $NOT_STORED transactions not stored:" >&2
	grep ' smtpd txn ' "$TMP/smtpd.log" | grep -v 'result="\{0,1\}stored' | head -5 >&2
fi
if [[ $WARNINGS != 0 ]]; then
	failed=1
	echo "!! warnings/errors in the logs ($WARNINGS), first ones:" >&2
	grep -h ' \(warn\|error\) ' "$TMP/smtpd.log" "$TMP/storaged.log" "$TMP/busd.log" | grep -v ' smtpd tls why=' | head -8 >&2 || true
fi

# ---- report ----
export FLOOR SIZES CONCS MSGS DO_PEER PSS_IDLE PSS_AFTER T_START T_END LOAD_START LOAD_END FS STATS NOT_STORED PV PEER_DIR PSS_INTERVAL TMP
R_CORES=$(nproc) R_KERNEL=$(uname -r) "$PY" - "$REC" <<'EOF'
import json, os, sys
recs = [json.loads(l) for l in open(sys.argv[1])]
def get(side, gen, size, conc):
    for r in recs:
        if (r["side"], r["gen"], r["size"], r["conc"]) == (side, gen, size, conc):
            return r
    return {}
def num(x):
    return isinstance(x, (int, float))
def ratio(a, b):
    return round(a / b, 2) if num(a) and num(b) and b > 0 else None
def f(x, fmt="{:.0f}"):
    return fmt.format(x) if num(x) else "-"
sizes = [int(s) for s in os.environ["SIZES"].split()]
concs = [int(c) for c in os.environ["CONCS"].split()]
kib = lambda s: "%d KiB" % (s // 1024) if s % 1024 == 0 else "%d B" % s
peer = os.environ["DO_PEER"] == "1"
pss_idle = [int(x) for x in os.environ["PSS_IDLE"].split()]
pss_after = [int(x) for x in os.environ["PSS_AFTER"].split()]
ratios = []
print()
print("smtpd inbound benchmark, " + os.environ["T_START"] + " to " + os.environ["T_END"] + ", " + os.environ["R_CORES"] + " cores, " + os.environ["R_KERNEL"] + ", data on " + os.environ["FS"] + "; "
      "load average at start " + os.environ["LOAD_START"] + ", at end " + os.environ["LOAD_END"] + "; generators, smtpd, storaged, busd and Postfix share the cores")
print("smtpd: smtp_greet_delay_ms=0, smtp_max_per_ip=1000, the rest as shipped; one message per connection, plain SMTP; "
      "N = " + os.environ["MSGS"] + " messages per run (" + os.environ["MSGS"] + "/4 with 1 client), the same for Postfix")
print()
print("| size | clients | generator | smtpd msgs/s | smtpd p99 DATA→250 ms | Postfix msgs/s | Postfix p99 ms | smtpd / Postfix | stored / accepted | client CPU % (smtpd run) | generator → smtp-sink msgs/s |")
print("|-----:|--------:|-----------|-------------:|----------------------:|---------------:|---------------:|----------------:|------------------:|-------------------------:|-----------------------------:|")
for size in sizes:
    for conc in concs:
        for gen in ("load", "source"):
            r = get("smtpd", gen, size, conc)
            p = get("postfix", gen, size, conc)
            q = ratio(r.get("msgs_per_s"), p.get("msgs_per_s"))
            ratios.append({"size": size, "conc": conc, "gen": gen, "ratio": q})
            err = "" if r.get("errors", 0) == 0 else " (%s errors)" % r.get("errors")
            print("| %s | %d | %s | %s%s | %s | %s | %s | %s | %s / %s | %s | %s |" % (
                kib(size), conc, "smtp-load.py" if gen == "load" else "smtp-source",
                f(r.get("msgs_per_s")), err, f(r.get("p99_ms"), "{:.1f}"),
                f(p.get("msgs_per_s")) if peer else "-", f(p.get("p99_ms"), "{:.1f}") if peer else "-",
                f(q, "{:.2f}"), r.get("stored", "-"), r.get("ok", "-"), f(r.get("client_cpu_pct")),
                f(p.get("sink_msgs_per_s"))))
print()
print("CPU per accepted message, 8 clients (µs, from /proc/PID/stat, 10 ms ticks):")
print()
print("| size | generator | smtpd | storaged | busd | sum |")
print("|-----:|-----------|------:|---------:|-----:|----:|")
for size in sizes:
    for gen in ("load", "source"):
        c = get("smtpd", gen, size, 8).get("cpu_us_per_msg")
        if c:
            print("| %s | %s | %.0f | %.0f | %.0f | %.0f |" % (kib(size), "smtp-load.py" if gen == "load" else "smtp-source", c[0], c[1], c[2], sum(c)))
print()
pm = [0, 0, 0]
for gen in ("load", "source"):
    x = get("smtpd", gen, 102400, 64).get("pss_max_kb")
    if x:
        pm = [max(pm[i], x[i]) for i in range(3)]
print("PSS max while 64 sessions send 100 KiB (both generators, sampled every " + os.environ["PSS_INTERVAL"] + " s): "
      "smtpd %d kB, storaged %d kB, busd %d kB (sum %d kB)" % (pm[0], pm[1], pm[2], sum(pm)))
print("PSS idle after warm-up: smtpd %d kB, storaged %d kB, busd %d kB; after all runs: smtpd %d kB, storaged %d kB, busd %d kB"
      % tuple(pss_idle + pss_after))
print("smtpd counters: " + os.environ["STATS"] + "; transactions logged not stored: " + os.environ["NOT_STORED"])
print()
floor = {}
for part in os.environ["FLOOR"].split(";"):
    if part.strip():
        s, rtt, fs = part.split()
        try:
            floor[int(s)] = (float(rtt), float(fs))
        except ValueError:
            pass
if floor:
    print("The floor with one client (µs per message; p50 of a bus round trip through busd to echo-worker, which does nothing, "
          "and of fdatasync after appending the message's bytes in the data directory's file system):")
    print()
    print("| size | generator | generator → smtp-sink | + bus round trip | + fdatasync | = fastest possible msgs/s | Postfix msgs/s | best possible ratio | smtpd ratio |")
    print("|-----:|-----------|----------------------:|-----------------:|------------:|--------------------------:|---------------:|--------------------:|------------:|")
    for size in sizes:
        if size not in floor or 1 not in concs:
            continue
        rtt, fs = floor[size]
        for gen in ("load", "source"):
            p = get("postfix", gen, size, 1)
            r = get("smtpd", gen, size, 1)
            sink = p.get("sink_msgs_per_s")
            if not num(sink):
                continue
            t = 1e6 / sink + rtt + fs
            best = 1e6 / t
            print("| %s | %s | %.0f | %.0f | %.0f | %.0f | %s | %s | %s |" % (
                kib(size), "smtp-load.py" if gen == "load" else "smtp-source", 1e6 / sink, rtt, fs, best,
                f(p.get("msgs_per_s")), f(ratio(best, p.get("msgs_per_s")), "{:.2f}"),
                f(ratio(r.get("msgs_per_s"), p.get("msgs_per_s")), "{:.2f}")))
    print()
got = [r for r in ratios if r["ratio"] is not None]
if peer and len(got) == len(ratios):
    low = min(got, key=lambda r: r["ratio"])
    met = all(r["ratio"] >= 2 for r in got)
    print("Target >= 2x Postfix's rate, both generators, every size and concurrency: %s (lowest %.2f: %s, %d clients, %s; %d of %d cells >= 2)"
          % ("met" if met else "NOT met", low["ratio"], kib(low["size"]), low["conc"], low["gen"],
             sum(r["ratio"] >= 2 for r in got), len(got)))
else:
    met = None
    print("Target >= 2x Postfix: not measured (no Postfix run)")
if pm[0]:
    print("Target smtpd PSS < 10 MB with 64 sessions of 100 KiB: %.1f MB, %s" % (pm[0] / 1024, "met" if pm[0] < 10240 else "NOT met"))
if peer:
    print("Peer: " + os.environ["PV"] + " via " + os.environ["PEER_DIR"] + "/peer-smtp.sh (same N, size, concurrency)")
out = {"tool": "smtp-inbound", "start": os.environ["T_START"], "end": os.environ["T_END"], "loadavg_start": os.environ["LOAD_START"],
       "loadavg_end": os.environ["LOAD_END"], "fs": os.environ["FS"], "msgs": int(os.environ["MSGS"]), "runs": recs, "ratios": ratios,
       "pss_max_kb": {"smtpd": pm[0], "storaged": pm[1], "busd": pm[2]},
       "pss_idle_kb": dict(zip(("smtpd", "storaged", "busd"), pss_idle)),
       "smtpd_stats": json.loads(os.environ["STATS"]), "not_stored": int(os.environ["NOT_STORED"]),
       "floor_1client_us": {str(k): {"bus_rtt_p50": v[0], "fdatasync_p50": v[1]} for k, v in floor.items()},
       "target_ratio_met": met, "target_pss_met": (pm[0] < 10240) if pm[0] else None}
open(os.environ["TMP"] + "/json", "w").write("JSON " + json.dumps(out, sort_keys=True) + "\n")
EOF
cat "$TMP/json" >&3
exit "$failed"
