#!/usr/bin/env bash
# fuzz.sh - builds the libFuzzer targets (tests/fuzz/fuzz_*.c) with clang, ASan and
# UBSan, and runs each for SECONDS (default 60) from its seed corpus
# (tests/fuzz/corpus/<target>, made by scripts/make_fuzz_corpus.py).
# Usage: scripts/fuzz.sh [SECONDS] [TARGET...]      (targets: params tekken safetensors audio stdin
#                                                      server_event server_multipart)
# New inputs gather in build/fuzz/corpus/<target> (the repository's seeds are not touched);
# a crash leaves its input in build/fuzz/crash-<target>-*. Exits 1 if any target crashed.
# For hours: scripts/fuzz.sh 14400 (4 h each), or one target with more workers:
#   build/fuzz/fuzz_audio -jobs=2 -workers=2 -max_total_time=36000 build/fuzz/corpus/audio tests/fuzz/corpus/audio
set -u
cd "$(dirname "$0")/.." || exit 1
SECONDS_EACH=${1:-60}
shift || true
TARGETS=${*:-params tekken safetensors audio stdin server_event server_multipart}
CLANG=${CLANG:-clang}
if ! command -v "$CLANG" >/dev/null; then echo "fuzz.sh: $CLANG not found (apt-get install clang libclang-rt-dev libomp-dev)"; exit 2; fi
B=build/fuzz
mkdir -p "$B/obj"
SAN="-fsanitize=address,undefined -fno-sanitize-recover=all"
CFLAGS="-O1 -g -std=c11 -D_GNU_SOURCE -I. $(pkg-config --cflags sndfile soxr fftw3f libcjson openblas 2>/dev/null) -fopenmp"
LIBS="$(pkg-config --libs sndfile soxr fftw3f libcjson openblas 2>/dev/null || echo -lsndfile -lsoxr -lfftw3f -lcjson -lopenblas) -lm -lpthread"
ENGINE="voxtral.c voxtral_forward.c voxtral_stream.c voxtral_sched.c voxtral_audio.c voxtral_audiofile.c voxtral_kernels.c voxtral_loader.c voxtral_tokenizer.c voxtral_error.c voxtral_quant.c voxtral_qdot_generic.c voxtral_text.c voxtral_nocuda.c"
# the --stdin parser is CLI code: wherever it lives
STDIN_SRC=cli/stdin.c
build() { # build NAME SOURCES...
    local name=$1; shift
    local objs=()
    for src in "$@"; do
        local o="$B/obj/$(echo "$src" | tr / _).o"
        if [ ! -f "$o" ] || [ "$src" -nt "$o" ] || [ voxtral_internal.h -nt "$o" ] || [ voxtral_error.h -nt "$o" ]; then
            $CLANG $CFLAGS $SAN -fsanitize=fuzzer-no-link -c -o "$o" "$src" || return 1
        fi
        objs+=("$o")
    done
    $CLANG $SAN -fsanitize=fuzzer -fopenmp -o "$B/fuzz_$name" "$B/obj/tests_fuzz_fuzz_$name.c.o" "${objs[@]}" $LIBS
}
status=0
for t in $TARGETS; do
    src=tests/fuzz/fuzz_$t.c
    [ -f "$src" ] || { echo "fuzz.sh: no target $t"; exit 2; }
    $CLANG $CFLAGS $SAN -fsanitize=fuzzer-no-link -c -o "$B/obj/tests_fuzz_fuzz_$t.c.o" "$src" || exit 1
    case $t in
        stdin) build "$t" "$STDIN_SRC" cli/sniff.c cli/error.c || exit 1 ;;
        audio) build "$t" voxtral_audiofile.c voxtral_error.c || exit 1 ;;
        server_*) build "$t" server/rt_parse.c server/multipart.c server/util.c voxtral_text.c voxtral_error.c || exit 1 ;;
        *) build "$t" $ENGINE || exit 1 ;;
    esac
    mkdir -p "$B/corpus/$t"
    echo "== fuzz_$t: ${SECONDS_EACH} s"
    # detect_leaks=0: a leak is not what these look for, and LSan needs ptrace
    ASAN_OPTIONS=detect_leaks=0:allocator_may_return_null=1 \
        "$B/fuzz_$t" -max_total_time="$SECONDS_EACH" -rss_limit_mb=4096 -malloc_limit_mb=4096 -timeout=30 \
        -print_final_stats=1 -artifact_prefix="$B/crash-$t-" "$B/corpus/$t" "tests/fuzz/corpus/$t" \
        >"$B/$t.log" 2>&1
    rc=$?
    grep -E '^stat::number_of_executed_units|^stat::peak_rss_mb|^#[0-9]+.*DONE' "$B/$t.log" | tr '\n' ' '
    echo
    if [ $rc -ne 0 ]; then
        echo "fuzz_$t: FAILED (exit $rc): $(ls "$B"/crash-$t-* 2>/dev/null | tr '\n' ' ')"
        grep -m5 -E 'ERROR|runtime error|SUMMARY' "$B/$t.log"
        status=1
    fi
done
exit $status
