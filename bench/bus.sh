#!/usr/bin/env bash
# bench/bus.sh — request/reply round trips through busd beside a direct
# DEALER/ROUTER pair and a bare ROUTER-to-ROUTER relay (the ceiling for any
# broker). Run from anywhere; see --help. Results go to stdout only:
# bench/RESULTS.md is edited by hand from them.
set -euo pipefail

usage() {
	cat <<'EOF'
usage: bench/bus.sh [--help]

Builds (make), then in a temp dir /tmp/rbench.XXXX starts, side by side:
  direct  busbench echo-server          (clients' DEALERs -> its ROUTER)
  relay   busbench relay + echo-dealer  (bare ROUTER-to-ROUTER forwarding)
  busd    build/bin/busd + 1 build/bin/echo-worker (service echo), with
          ROOST_BUS_DIR=<tmp>/bus ROOST_DATA_DIR=<tmp>
and for clients in (1 8) x size in (1024 102400) runs busbench client for
each mode back to back (direct, relay, busd: the three see the same machine
conditions), all over ipc://. Then prints a markdown table (mode | clients |
size | rtt/s | p50 µs | p99 µs | busd/relay ratio), the 60% target line
(busd at 8 clients, 1 KiB against the bare relay), the CPU seconds busd
(and the relay, and echo-worker) used during their runs and busd's PSS.

Environment:
  SECONDS_PER_RUN   measured seconds per run (default 5; plus 0.5 s warm-up)
  TAP               1: run `roostctl bus tail` during the runs (busd mirrors
                    every envelope on the tap)
  BUSBENCH_FLAGS    extra busbench client flags, e.g. --fork (one process
                    per client instead of threads sharing one context)

Total runtime about 1.5 minutes with the default. Exit status 1 if a run
counted errors.
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
read -r -a EXTRA <<<"${BUSBENCH_FLAGS:-}"
BIN=build/bin
BB=$BIN/busbench

make -s >&2

TMP=$(mktemp -d /tmp/rbench.XXXX)
# shellcheck source=bench/lib.sh
source "$ROOT/bench/lib.sh"

# ---- start the three setups ----
start srv "$BB" echo-server "ipc://$TMP/direct"
start relay "$BB" relay "ipc://$TMP/front" "ipc://$TMP/back"
start dealer "$BB" echo-dealer "ipc://$TMP/back"
export ROOST_BUS_DIR=$TMP/bus ROOST_DATA_DIR=$TMP
start busd "$BIN/busd"
wait_for "busd" test -S "$TMP/bus/clients"
start worker "$BIN/echo-worker"
wait_for "echo-worker" bash -c "'$BIN/roostctl' status | grep -q '^echo '"
# TAP=1: an operator watches `roostctl bus tail` the whole time, so every
# envelope is parsed and mirrored (the worst case for busd).
if [[ ${TAP:-0} == 1 ]]; then
	start tail bash -c "exec '$BIN/roostctl' bus tail > /dev/null"
	sleep 0.5
fi
wait_for "echo-server" test -S "$TMP/direct"
wait_for "relay" test -S "$TMP/front"

declare -A RATE P50 P99 ERR CPU CPUK
CPU[busd]=0 CPU[relay]=0 CPU[worker]=0
failed=0

endpoint() {
	case $1 in
	direct) echo "ipc://$TMP/direct" ;;
	relay) echo "ipc://$TMP/front" ;;
	busd) echo "ipc://$TMP/bus/clients" ;;
	esac
}

for clients in 1 8; do
	for size in 1024 102400; do
		for mode in direct relay busd; do
			if [[ $mode == busd ]]; then
				b0=$(cpu_ticks "$busd") w0=$(cpu_ticks "$worker")
			elif [[ $mode == relay ]]; then
				r0=$(cpu_ticks "$relay") d0=$(cpu_ticks "$dealer")
			fi
			out=$("$BB" client "$mode" "$(endpoint "$mode")" --clients "$clients" --size "$size" \
				--seconds "$SECS" --json ${EXTRA[@]+"${EXTRA[@]}"}) || failed=1
			k=$mode/$clients/$size
			if [[ $mode == busd ]]; then
				CPUK[$k]=$(($(cpu_ticks "$busd") - b0))
				CPUK[worker/$clients/$size]=$(($(cpu_ticks "$worker") - w0))
				CPU[busd]=$((CPU[busd] + CPUK[$k]))
				CPU[worker]=$((CPU[worker] + CPUK[worker/$clients/$size]))
			elif [[ $mode == relay ]]; then
				CPUK[$k]=$(($(cpu_ticks "$relay") - r0))
				CPUK[dealer/$clients/$size]=$(($(cpu_ticks "$dealer") - d0))
				CPU[relay]=$((CPU[relay] + CPUK[$k]))
			fi
			head -n 1 <<<"$out" >&2
			line=$(grep '^{' <<<"$out" || true)
			RATE[$k]=$(json rtt_per_s "$line")
			P50[$k]=$(json p50_us "$line")
			P99[$k]=$(json p99_us "$line")
			ERR[$k]=$(json errors "$line")
		done
	done
done

PSS=$(awk '$1 == "Pss:" { s += $2 } END { print s }' "/proc/$busd/smaps_rollup")
BUSD_RSS=$(awk '$1 == "VmRSS:" { print $2 }' "/proc/$busd/status")

# ---- report ----
echo
echo "Bus benchmark, $(date -u +%Y-%m-%dT%H:%MZ), $(nproc) cores, libzmq $(pkg-config --modversion libzmq 2>/dev/null || echo '?'), ipc://, ${SECS} s per run (+0.5 s warm-up), clients ${BUSBENCH_FLAGS:-as threads sharing one context}"
echo
echo "| mode | clients | size | rtt/s | p50 µs | p99 µs | busd/relay ratio |"
echo "|------|--------:|-----:|------:|-------:|-------:|-----------------:|"
for clients in 1 8; do
	for size in 1024 102400; do
		for mode in direct relay busd; do
			k=$mode/$clients/$size
			ratio=-
			if [[ $mode == busd ]]; then
				ratio=$(awk -v b="${RATE[$k]}" -v r="${RATE[relay/$clients/$size]}" \
					'BEGIN { if (r > 0) printf "%.0f%%", 100 * b / r; else printf "-" }')
			fi
			errs=
			if [[ ${ERR[$k]:-0} != 0 ]]; then
				errs=" (${ERR[$k]} errors)"
			fi
			printf '| %s | %s | %s | %.0f%s | %s | %s | %s |\n' "$mode" "$clients" \
				"$([[ $size == 1024 ]] && echo "1 KiB" || echo "100 KiB")" "${RATE[$k]:-0}" "$errs" \
				"${P50[$k]:-}" "${P99[$k]:-}" "$ratio"
		done
	done
done
echo
pct=$(awk -v b="${RATE[busd/8/1024]}" -v r="${RATE[relay/8/1024]}" 'BEGIN { printf "%.0f", (r > 0 ? 100 * b / r : 0) }')
verdict=$([[ $pct -ge 60 ]] && echo "met" || echo "NOT met")
echo "busd at 8 clients, 1 KiB: ${pct}% of the bare relay (target >= 60%): ${verdict}"
echo
awk -v b="${CPU[busd]}" -v w="${CPU[worker]}" -v r="${CPU[relay]}" -v t="$TICKS" -v s="$SECS" 'BEGIN {
	wall = 4 * (s + 0.5)
	printf "CPU seconds during the runs (4 runs, about %.0f s wall per mode): busd %.2f s (%.0f%% of one core), echo-worker %.2f s; bare relay %.2f s\n",
		wall, b / t, 100 * b / t / wall, w / t, r / t
}'
awk -v b="${CPUK[busd/8/1024]}" -v w="${CPUK[worker/8/1024]}" -v r="${CPUK[relay/8/1024]}" \
	-v d="${CPUK[dealer/8/1024]}" -v nb="${RATE[busd/8/1024]}" -v nr="${RATE[relay/8/1024]}" \
	-v t="$TICKS" -v s="$SECS" 'BEGIN {
	# round trips in a run, warm-up included (at the measured rate)
	nb *= s + 0.5; nr *= s + 0.5
	printf "CPU per round trip at 8 clients, 1 KiB: busd %.0f µs + echo-worker %.0f µs; bare relay %.0f µs + echo-dealer %.0f µs\n",
		(nb > 0 ? 1e6 * b / t / nb : 0), (nb > 0 ? 1e6 * w / t / nb : 0),
		(nr > 0 ? 1e6 * r / t / nr : 0), (nr > 0 ? 1e6 * d / t / nr : 0)
}'
echo "busd PSS at the end: ${PSS} kB (RSS ${BUSD_RSS} kB)"
exit "$failed"
