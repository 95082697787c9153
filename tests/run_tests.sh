#!/usr/bin/env bash
# run_tests.sh - runs every test program and script; each prints "ok - ..." /
# "not ok - ..." lines (or "skipped: ..."). Ends with "N passed, N failed".
set -u
cd "$(dirname "$0")/.."
BUILD=${BUILD:-build/cpu}
export VOXTRAL=${VOXTRAL:-./voxtral}
log=$(mktemp)
trap 'rm -f "$log"' EXIT
status=0
run() {
    local name=$1; shift
    echo "# $name"
    "$@" 2>&1 | tee -a "$log" | sed 's/^/  /'
    local rc=${PIPESTATUS[0]}
    if [ "$rc" -ne 0 ]; then
        echo "not ok - $name exited with status $rc" | tee -a "$log"
        status=1
    fi
}
for t in "$BUILD"/tests/test_*; do
    [ -x "$t" ] || continue
    run "$(basename "$t")" "$t"
done
for t in tests/test_*.sh; do
    [ -f "$t" ] || continue
    run "$(basename "$t")" bash "$t"
done
passed=$(grep -c '^ok - ' "$log")
failed=$(grep -c '^not ok - ' "$log")
grep '^not ok - ' "$log" | sed 's/^/FAILED: /'
echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ] && [ "$status" -eq 0 ]
