#!/usr/bin/env bash
# fuzz_server.sh - builds and runs the server's libFuzzer harnesses
# (tests/fuzz/fuzz_server_event.c: the realtime event parser; fuzz_server_multipart.c:
# the multipart and chunked body parsers) with clang, ASan and UBSan, SECONDS each
# (default 60), from the seeds in tests/fuzz/corpus/server_*.
# New inputs gather in build/fuzz/corpus/server_*; a crash leaves build/fuzz/crash-*.
# Usage: scripts/fuzz_server.sh [SECONDS]     Exits 1 if a harness failed.
set -u
cd "$(dirname "$0")/.." || exit 1
SECS=${1:-60}
CLANG=${CLANG:-clang}
command -v "$CLANG" >/dev/null || { echo "fuzz_server.sh: $CLANG not found"; exit 2; }
B=build/fuzz
mkdir -p "$B"
SAN="-fsanitize=fuzzer,address,undefined -fno-sanitize-recover=all"
CF="-O1 -g -std=c11 -D_GNU_SOURCE -I. $(pkg-config --cflags libcjson)"
SRC="server/rt_parse.c server/multipart.c server/util.c voxtral_text.c"
status=0
for t in server_event server_multipart; do
    $CLANG $CF $SAN -o "$B/fuzz_$t" "tests/fuzz/fuzz_$t.c" $SRC $(pkg-config --libs libcjson) -lm -lpthread || exit 1
    mkdir -p "$B/corpus/$t"
    echo "== fuzz_$t: $SECS s"
    ASAN_OPTIONS=detect_leaks=1 "$B/fuzz_$t" -max_total_time="$SECS" -max_len=65536 -timeout=10 -print_final_stats=1 \
        -artifact_prefix="$B/crash-$t-" "$B/corpus/$t" "tests/fuzz/corpus/$t" >"$B/$t.log" 2>&1
    rc=$?
    grep -E '^stat::number_of_executed_units|^stat::peak_rss_mb' "$B/$t.log" | tr '\n' ' '
    echo
    if [ $rc -ne 0 ]; then
        echo "fuzz_$t: FAILED (exit $rc): $(ls "$B"/crash-$t-* 2>/dev/null | tr '\n' ' ')"
        grep -m5 -E 'ERROR|runtime error|SUMMARY|deadly' "$B/$t.log"
        status=1
    fi
done
exit $status
