#!/bin/bash
# run-tests.sh BUILD_DIR — runs every C unit test binary and the end-to-end
# pytest suite, then prints one summary line CI can read:
#   total: N passed, N failed, N skipped
# Exit status non-zero if anything failed.
set -u
build=${1:-build}
top=$(cd "$(dirname "$0")/.." && pwd)
cd "$top" || exit 1
passed=0 failed=0 skipped=0
failures=()

# C units: cmocka prints "[  PASSED  ] N test(s)." and "[  FAILED  ] N test(s)".
for t in "$build"/tests/test_*; do
	[ -x "$t" ] || continue
	out=$("$t" 2>&1); rc=$?
	printf '%s\n' "$out"
	p=$(printf '%s\n' "$out" | sed -n 's/^\[  PASSED  \] \([0-9]*\) test.*/\1/p' | tail -1)
	f=$(printf '%s\n' "$out" | sed -n 's/^\[  FAILED  \] \([0-9]*\) test.*/\1/p' | tail -1)
	s=$(printf '%s\n' "$out" | sed -n 's/^\[  SKIPPED \] \([0-9]*\) test.*/\1/p' | tail -1)
	passed=$((passed + ${p:-0})); failed=$((failed + ${f:-0})); skipped=$((skipped + ${s:-0}))
	if [ $rc -ne 0 ] && [ "${f:-0}" = 0 ]; then
		failed=$((failed + 1))  # crashed before cmocka could count
	fi
	[ $rc -ne 0 ] && failures+=("$(basename "$t")")
done

# End to end: pytest against the binaries of this build.
export ROOST_BIN="$top/$build/bin"
export PYTHONDONTWRITEBYTECODE=1
log=$(mktemp)
/usr/bin/python3 -m pytest tests/e2e -p no:cacheprovider -q -rs ${PYTEST_ARGS:-} 2>&1 | tee "$log"
rc=${PIPESTATUS[0]}
line=$(grep -E '[0-9]+ (passed|failed|error)' "$log" | tail -1)
n() { printf '%s' "$line" | grep -oE "[0-9]+ $1" | grep -oE '[0-9]+' || echo 0; }
passed=$((passed + $(n passed))); failed=$((failed + $(n failed) + $(n error))); skipped=$((skipped + $(n skipped)))
[ $rc -ne 0 ] && [ $rc -ne 5 ] && failures+=("pytest")
[ $rc -ne 0 ] && [ "$(n failed)" = 0 ] && [ "$(n error)" = 0 ] && [ $rc -ne 5 ] && failed=$((failed + 1))
rm -f "$log"

[ ${#failures[@]} -gt 0 ] && echo "failed suites: ${failures[*]}"
echo "total: $passed passed, $failed failed, $skipped skipped"
[ "$failed" -eq 0 ] && [ ${#failures[@]} -eq 0 ]
