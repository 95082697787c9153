#!/usr/bin/env bash
# test_serve_padded.sh - the serving scheduler's padded batches (what a graph backend
# runs: every decoder step and encoder batch padded to its bucket, padding rows in
# the pad slot, one graph per bucket made at open) on the CPU, where
# VOX_PAD_BATCHES=1 turns the padding on without graphs: test_serve's checks (every
# stream's ids its solo run's, no cross-talk, joins and leaves, the pool) must pass
# unchanged with padding rows in the batches.
set -u
cd "$(dirname "$0")/.."
. tests/testlib.sh
BUILD=${BUILD:-build/cpu}

VOX_PAD_BATCHES=1 VOX_TEST_VERBOSE=2 "$BUILD/tests/test_serve" tests/fixtures >"$tmp/run.log" 2>&1
rc=$?
grep -q "batch graphs made" "$tmp/run.log"
check "VOX_PAD_BATCHES=1: serving contexts pad their batches (the bucket graphs are made at open)" $? \
    "$(grep -m1 voxtral: "$tmp/run.log")"
passed=$(grep -c '^ok - ' "$tmp/run.log"); failed=$(grep -c '^not ok - ' "$tmp/run.log")
[ "$rc" -eq 0 ] && [ "$failed" -eq 0 ] && [ "$passed" -ge 10 ]
check "test_serve with padded batches: $passed passed, $failed failed" $? \
    "$(grep '^not ok' "$tmp/run.log" | head -3)"
