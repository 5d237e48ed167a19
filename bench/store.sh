#!/usr/bin/env bash
# bench/store.sh — storaged's durable stores, header lookups and memory,
# beside a bare SQLite baseline and Postfix (the peer), all in one run. See
# --help. Results go to stdout only: bench/RESULTS.md is edited by hand.
set -euo pipefail

usage() {
	cat <<'EOF'
usage: bench/store.sh [--help]

Builds (make), then in a temp dir $BENCH_TMP/roost-store.XXXX (a real disk:
durability must mean fsync) starts build/bin/busd and build/bin/storaged as
they ship (WAL, synchronous=FULL), adds bench.test with users load@ and
fill@, and runs build/bin/storebench:

  1. bare SQLite on the same disk: single-row INSERT transactions (WAL,
     synchronous=FULL) and 10 rows per commit, 4 KiB and 100 KiB rows
  2. durable stores into load@'s INBOX: 4 KiB and 100 KiB messages, 1 and
     8 clients, each with one store in flight (the reply comes after the
     COMMIT); storaged's and busd's CPU per store and stores per commit
  3. fill@'s INBOX filled with FILL messages of 4 KiB through the same
     store path (8 clients; the rate of every 10,000 is printed)
  4. header lookups on that mailbox (storaged.message.list with headers):
     random pages of 1000 UIDs and single UIDs, 1 and 8 clients
  5. storaged's PSS (/proc/PID/smaps_rollup) idle after the fill, after the
     lookups, and after a restart plus one lookup
  6. the peer: /work/shared/bench/peer-smtp.sh (Postfix 3.7, SMTP into its
     queue and Maildir, both fsynced) for each size and client count: its
     plain smtp-load.py and smtp-source rates

then prints markdown tables with the ratios.

Environment:
  SECONDS_PER_RUN  measured seconds per storebench run (default 5; +0.5 s warm-up)
  FILL             messages in the lookup mailbox (default 100000)
  BENCH_TMP        where the data goes (default /var/tmp; not a tmpfs)
  PEER             0: skip Postfix (default 1; needs root and peers-install.sh)
  PEER_DIR         the peer scripts (default <repo>/../shared/bench)
  PEER_MSGS        messages per Postfix run (default 2000; a quarter with 1 client)

Total runtime about 8 minutes with the defaults (4 of them Postfix).
Exit status 1 if a run counted errors.
EOF
}

if [[ $# -gt 0 ]]; then
	if [[ $1 == --help || $1 == -h ]]; then
		usage
		exit 0
	fi
	usage >&2
	exit 2
fi

ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"
SECS=${SECONDS_PER_RUN:-5}
FILL=${FILL:-100000}
BENCH_TMP=${BENCH_TMP:-/var/tmp}
PEER=${PEER:-1}
PEER_DIR=${PEER_DIR:-$ROOT/../shared/bench}
PEER_MSGS=${PEER_MSGS:-2000}
BIN=$ROOT/build/bin
SB=$BIN/storebench

make -s >&2

TMP=$(mktemp -d "$BENCH_TMP/roost-store.XXXX")
# shellcheck source=bench/lib.sh
source "$ROOT/bench/lib.sh"

pss_kb() {
	awk '$1 == "Pss:" { s += $2 } END { print s }' "/proc/$1/smaps_rollup"
}

# storaged's group-commit counters: "transactions requests".
commits() {
	/usr/bin/python3 - "$TMP/bus" <<'EOF'
import json, os, sys
sys.path.insert(0, os.path.join(os.getcwd(), "tests", "e2e"))
import bus
c = bus.Client(sys.argv[1])
rep, _ = c.call("storaged.control", {"type": "storaged.control.stats"}, timeout=10)
c.close()
print(rep["stats"]["commits"]["transactions"], rep["stats"]["commits"]["requests"])
EOF
}

export ROOST_BUS_DIR=$TMP/bus ROOST_DATA_DIR=$TMP/data
mkdir -p "$TMP/data"
start busd "$BIN/busd"
wait_for "busd" test -S "$TMP/bus/clients"
start storaged "$BIN/storaged"
wait_for "storaged" bash -c "'$BIN/roostctl' status | grep -q '^storaged '"
"$BIN/roostctl" domain add bench.test >/dev/null
"$BIN/roostctl" user add load@bench.test >/dev/null
"$BIN/roostctl" user add fill@bench.test >/dev/null
FS="$(findmnt -n -o FSTYPE -T "$TMP") on $(findmnt -n -o SOURCE -T "$TMP")"

declare -A R
failed=0

# run KEY storebench-args...: one storebench run, its JSON line kept in R[KEY].
run() {
	local key=$1 out
	shift
	out=$("$SB" "$@" --json) || failed=1
	head -n 1 <<<"$out" >&2
	R[$key]=$(grep '^{' <<<"$out" || true)
}

# ---- 1. bare SQLite ----
for size in 4096 102400; do
	for rows in 1 10; do
		run "sqlite/$size/$rows" sqlite "$TMP" --size "$size" --rows-per-commit "$rows" --seconds "$SECS"
	done
done

# ---- 2. durable stores ----
for size in 4096 102400; do
	for clients in 1 8; do
		read -r c0 q0 < <(commits)
		s0=$(cpu_ticks "$storaged") b0=$(cpu_ticks "$busd")
		run "store/$size/$clients" store "$TMP/bus" --address load@bench.test --clients "$clients" \
			--size "$size" --seconds "$SECS"
		s1=$(cpu_ticks "$storaged") b1=$(cpu_ticks "$busd")
		read -r c1 q1 < <(commits)
		R[cpu/$size/$clients]="$((s1 - s0)) $((b1 - b0)) $((q1 - q0))"
		R[batch/$size/$clients]=$(awk -v c=$((c1 - c0)) -v q=$((q1 - q0)) 'BEGIN { printf "%.1f", (c > 0 ? q / c : 0) }')
	done
done

# ---- 3. the fill ----
echo "filling fill@bench.test with $FILL messages of 4 KiB (8 clients)..." >&2
t0=$(date +%s.%N)
out=$("$SB" fill "$TMP/bus" --address fill@bench.test --clients 8 --size 4096 --count "$FILL" --json) || failed=1
t1=$(date +%s.%N)
grep '^fill:' <<<"$out" >&2 || true
R[fill]=$(grep '^{' <<<"$out" || true)
FILL_SECS=$(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.0f", b - a }')
FILL_RATES=$( (grep '^fill:' <<<"$out" || true) | sed 's/.* at \([0-9]*\)\/s/\1/' | tr '\n' ' ')
sleep 3
PSS_FILL=$(pss_kb "$storaged")
DB_MB=$(du -sm "$TMP/data" | cut -f1)

# ---- 4. header lookups ----
for clients in 1 8; do
	run "page/$clients" list "$TMP/bus" --address fill@bench.test --clients "$clients" --page 1000 --seconds "$SECS"
	run "uid/$clients" list "$TMP/bus" --address fill@bench.test --clients "$clients" --uid --seconds "$SECS"
done
sleep 3
PSS_LIST=$(pss_kb "$storaged")
RSS_LIST=$(awk '$1 == "VmRSS:" { print $2 }' "/proc/$storaged/status")
kill "$storaged"
wait "$storaged" 2>/dev/null || true
start storaged "$BIN/storaged"
wait_for "storaged again" bash -c "'$BIN/roostctl' status | grep -q '^storaged '"
"$SB" list "$TMP/bus" --address fill@bench.test --clients 1 --uid --seconds 1 --warmup 0 >/dev/null || failed=1
sleep 2
PSS_COLD=$(pss_kb "$storaged")
PSS_BUSD=$(pss_kb "$busd")

# ---- 5. the peer ----
declare -A P
if [[ $PEER == 1 && -x $PEER_DIR/peer-smtp.sh && -x /usr/sbin/postfix ]]; then
	for size in 4096 102400; do
		for clients in 1 8; do
			msgs=$PEER_MSGS
			[[ $clients == 1 ]] && msgs=$((PEER_MSGS / 4))
			echo "peer-smtp.sh SIZE=$size CONC=$clients MSGS=$msgs..." >&2
			out=$(MSGS=$msgs CONC=$clients SIZE=$size BENCH_TMP=$BENCH_TMP "$PEER_DIR/peer-smtp.sh" 2>&1) || failed=1
			echo "$out" >"$TMP/peer-$size-$clients.log"
			P[load/$size/$clients]=$(awk '/^  smtp-load -> Postfix / { print $4 }' <<<"$out")
			P[source/$size/$clients]=$(awk '/^  smtp-source -> Postfix / { print $4 }' <<<"$out")
			P[sink/$size/$clients]=$(awk '/^  smtp-source -> smtp-sink / { print $5 }' <<<"$out")
			[[ -z ${PV:-} ]] && PV=$(grep -o 'postfix [0-9.]*' <<<"$out" | head -1)
		done
	done
else
	echo "store.sh: Postfix not run (PEER=$PEER; needs $PEER_DIR/peer-smtp.sh and peers-install.sh)" >&2
fi

# ---- report ----
kib() { [[ $1 == 4096 ]] && echo "4 KiB" || echo "100 KiB"; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (a > 0 && b > 0) printf "%.2f", a / b; else printf "-" }'; }

echo
echo "storaged benchmark, $(date -u +%Y-%m-%dT%H:%MZ), $(nproc) cores, $(uname -r), SQLite $(sqlite3 --version 2>/dev/null | cut -d' ' -f1 || echo '?'), data on $FS, ${SECS} s per run (+0.5 s warm-up); clients, busd and storaged share the cores"
echo
echo "### Durable stores (reply after COMMIT; one store in flight per client)"
echo
echo "| size | clients | storaged stores/s | p50 ms | p99 ms | stores per commit | storaged CPU µs/store | busd CPU µs/store | Postfix smtp-load msgs/s | Postfix smtp-source msgs/s | storaged / smtp-source |"
echo "|-----:|--------:|------------------:|-------:|-------:|------------------:|----------------------:|------------------:|-------------------------:|---------------------------:|-----------------------:|"
for size in 4096 102400; do
	for clients in 1 8; do
		k=$size/$clients
		l=${R[store/$k]}
		read -r sc bc n <<<"${R[cpu/$k]}"
		rate=$(json ops_per_s "$l")
		printf '| %s | %s | %.0f%s | %.1f | %.1f | %s | %.0f | %.0f | %s | %s | %s |\n' "$(kib "$size")" "$clients" \
			"$rate" "$([[ $(json errors "$l") != 0 ]] && echo " ($(json errors "$l") errors)")" \
			"$(awk -v x="$(json p50_us "$l")" 'BEGIN { print x / 1000 }')" \
			"$(awk -v x="$(json p99_us "$l")" 'BEGIN { print x / 1000 }')" "${R[batch/$k]}" \
			"$(awk -v t="$sc" -v n="$n" -v h="$TICKS" 'BEGIN { print (n > 0 ? 1e6 * t / h / n : 0) }')" \
			"$(awk -v t="$bc" -v n="$n" -v h="$TICKS" 'BEGIN { print (n > 0 ? 1e6 * t / h / n : 0) }')" \
			"${P[load/$k]:--}" "${P[source/$k]:--}" "$(ratio "$rate" "${P[source/$k]:-0}")"
	done
done
echo
echo "### Bare SQLite on the same disk (WAL, synchronous=FULL, one INSERT of a blob per row)"
echo
echo "| row size | rows per commit | commits/s | rows/s | p50 µs per commit | storaged 8 clients / this (stores vs rows) |"
echo "|---------:|----------------:|----------:|-------:|------------------:|--------------------------------------------:|"
for size in 4096 102400; do
	for rows in 1 10; do
		l=${R[sqlite/$size/$rows]}
		printf '| %s | %s | %.0f | %.0f | %s | %s |\n' "$(kib "$size")" "$rows" "$(json ops_per_s "$l")" \
			"$(json rows_per_s "$l")" "$(json p50_us "$l")" \
			"$(ratio "$(json ops_per_s "${R[store/$size/8]}")" "$(json rows_per_s "$l")")"
	done
done
echo
echo "### Header lookups on a $FILL-message mailbox (storaged.message.list, headers)"
echo
echo "| lookup | clients | ops/s | headers/s | requests/op | p50 ms | p99 ms |"
echo "|--------|--------:|------:|----------:|------------:|-------:|-------:|"
for op in page uid; do
	for clients in 1 8; do
		l=${R[$op/$clients]}
		printf '| %s | %s | %.0f | %.0f | %s | %.2f | %.2f |\n' \
			"$([[ $op == page ]] && echo "page of 1000 UIDs" || echo "one UID")" "$clients" \
			"$(json ops_per_s "$l")" "$(json rows_per_s "$l")" \
			"$(awk -v r="$(json requests "$l")" -v o="$(json ops_per_s "$l")" -v s="$(json seconds "$l")" \
				'BEGIN { printf "%.1f", (o > 0 ? r / (o * s) : 0) }')" \
			"$(awk -v x="$(json p50_us "$l")" 'BEGIN { print x / 1000 }')" \
			"$(awk -v x="$(json p99_us "$l")" 'BEGIN { print x / 1000 }')"
	done
done
echo
f=${R[fill]}
echo "Fill: $FILL stores of 4 KiB (8 clients) in ${FILL_SECS} s, $(json ops_per_s "$f" | cut -d. -f1)/s overall, p50 $(json p50_us "$f") µs, p99 $(json p99_us "$f") µs, $(json errors "$f") errors; per 10,000: ${FILL_RATES}; data dir ${DB_MB} MB"
echo "storaged PSS idle: ${PSS_FILL} kB after the fill, ${PSS_LIST} kB after the lookups (RSS ${RSS_LIST} kB), ${PSS_COLD} kB after a restart and one lookup; busd ${PSS_BUSD} kB"
echo
s8=$(json ops_per_s "${R[store/4096/8]}" | cut -d. -f1)
echo "Target >= 5000 durable 4 KiB stores/s with 8 clients: ${s8}/s, $([[ $s8 -ge 5000 ]] && echo met || echo "NOT met")"
echo "Target PSS < 20 MB at $FILL messages: $((PSS_LIST / 1024)) MB, $([[ $PSS_LIST -lt 20480 ]] && echo met || echo "NOT met")"
[[ -n ${PV:-} ]] && echo "Peer: $PV via $PEER_DIR/peer-smtp.sh (smtp-source -> smtp-sink ceiling, 4 KiB / 8: ${P[sink/4096/8]:-?} msgs/s)"
exit "$failed"
