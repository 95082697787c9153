#!/usr/bin/env bash
# bench_threads.sh - the CPU decoder step under each OpenMP wait policy, on a quiet
# machine and on one made busy by N spinning processes (what a shared machine is): the
# measurement behind the CLI's default (cli/main.c). Benchmark, not a test.
#
#   scripts/bench_threads.sh MODEL_DIR AUDIO [BUSY_PROCS] [REPEATS]
#
# Per policy and load: `voxtral --backend cpu --bench` decoder ms/step (median of
# REPEATS runs, default 2) and its ratio to the read-bandwidth floor measured in the
# same run. Policies: the CLI default (nothing set), OMP_WAIT_POLICY=passive, =active,
# GOMP_SPINCOUNT=10000 / 100000 / 1000000. BUSY_PROCS defaults to the core count.
set -u
cd "$(dirname "$0")/.."
M=${1:?model dir}; A=${2:?audio}; BUSY=${3:-$(nproc)}; REP=${4:-2}
VOX=${VOXTRAL:-./voxtral}
policies=(${POLICIES:-"default" "OMP_WAIT_POLICY=passive" "OMP_WAIT_POLICY=active"
          "GOMP_SPINCOUNT=10000" "GOMP_SPINCOUNT=100000" "GOMP_SPINCOUNT=1000000"})
one() { # $1 policy -> "ms floor_ratio"
    local env=(); [ "$1" = default ] || env=("$1")
    env -u OMP_WAIT_POLICY -u GOMP_SPINCOUNT "${env[@]}" "$VOX" -d "$M" -i "$A" --backend cpu --bench 2>&1 >/dev/null \
        | sed -n 's/^bench: decoder step *\([0-9.]*\) ms .*= *\([0-9.]*\)x floor.*/\1 \2/p'
}
spin() { for _ in $(seq "$BUSY"); do ( while :; do :; done ) & done; }
printf '%-26s %-6s %s\n' policy load "decoder ms/step (x floor), each run"
for load in quiet busy; do
    pids=()
    if [ $load = busy ]; then spin; pids=($(jobs -p)); sleep 1; fi
    for p in "${policies[@]}"; do
        runs=""
        for _ in $(seq "$REP"); do r=$(one "$p"); runs="$runs ${r:-fail}"; done
        printf '%-26s %-6s %s\n' "$p" "$load" "$runs"
    done
    [ ${#pids[@]} -gt 0 ] && kill "${pids[@]}" 2>/dev/null; wait 2>/dev/null
done
