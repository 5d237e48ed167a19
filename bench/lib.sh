# bench/lib.sh — helpers the benchmark scripts share (sourced, not run).
# The sourcing script sets TMP (its temp dir) first; every process started
# with `start` is killed, and TMP removed, when the script exits.

PIDS=()
cleanup() {
	local p
	for p in ${PIDS[@]+"${PIDS[@]}"}; do
		kill "$p" 2>/dev/null || true
	done
	for p in ${PIDS[@]+"${PIDS[@]}"}; do
		wait "$p" 2>/dev/null || true
	done
	rm -rf "$TMP"
}
trap cleanup EXIT
trap "exit 130" INT TERM

# start NAME CMD... : runs CMD in the background, logging to $TMP/NAME.log;
# its pid lands in the variable NAME.
start() {
	local name=$1
	shift
	"$@" >>"$TMP/$name.log" 2>&1 &
	PIDS+=("$!")
	printf -v "$name" '%s' "$!"
}

# wait_for DESCRIPTION CMD...: retries CMD for up to 20 s.
wait_for() {
	local what=$1 i
	shift
	for ((i = 0; i < 200; i++)); do
		if "$@" >/dev/null 2>&1; then
			return 0
		fi
		sleep 0.1
	done
	echo "$(basename "$0"): $what did not come up; logs in $TMP:" >&2
	tail -n 5 "$TMP"/*.log >&2 || true
	exit 1
}

# CPU ticks (user + system, all threads) a process has used so far.
cpu_ticks() {
	local stat
	stat=$(<"/proc/$1/stat")
	stat=${stat##*) }  # past the command name, which may hold spaces
	awk '{ print $12 + $13 }' <<<"$stat"
}
TICKS=$(getconf CLK_TCK)

# json FIELD LINE: one field of a flat JSON line (busbench, storebench).
json() {
	sed -n "s/.*\"$1\":\"\{0,1\}\([^,\"}]*\).*/\1/p" <<<"$2"
}
