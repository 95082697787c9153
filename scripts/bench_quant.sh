#!/usr/bin/env bash
# bench_quant.sh - CPU decoder step of quantized models against BF16, measured as
# ratios in the same session (never a test: it prints figures). Runs the BF16 model
# and its quantized copies in turns (ROUNDS rounds: a shared machine's load changes
# between runs), each with `voxtral --bench --json` on a clip, and prints per model the
# best round's step (ms), its floor (the model's own weight bytes per step over the
# bandwidth measured in that run), step / floor, step / the BF16 step of the same
# round, and the load average seen. Quantized copies are made with --quantize if
# missing (their write time is printed).
#
#   scripts/bench_quant.sh [BF16_DIR] [AUDIO] [SPEC...]   (defaults: models/random-full,
#   the 5 s clip, q8 q4; ROUNDS=2 BACKEND=cpu THREADS= (all))
set -euo pipefail
cd "$(dirname "$0")/.."
MODEL=${1:-models/random-full}
AUDIO=${2:-../shared/audio/5s_dont_worry_about_him.wav}
shift $(( $# > 2 ? 2 : $# )) || true
SPECS=("$@")
[ ${#SPECS[@]} -eq 0 ] && SPECS=(q8 q4)
ROUNDS=${ROUNDS:-2}
BACKEND=${BACKEND:-cpu}
VOX=${VOXTRAL:-./voxtral}
[ -x "$VOX" ] || make -j"$(nproc)" >/dev/null
dirs=("$MODEL")
for s in "${SPECS[@]}"; do
    d="$MODEL-${s//:/-}"
    if [ ! -f "$d/consolidated.safetensors" ]; then
        t0=$(date +%s.%N)
        "$VOX" -d "$MODEL" --quant "$s" --quantize "$d" >&2
        echo "bench_quant: wrote $d in $(awk -v a="$t0" -v b="$(date +%s.%N)" 'BEGIN { printf "%.1f", b - a }') s" >&2
    fi
    dirs+=("$d")
done
out=$(mktemp)
trap 'rm -f "$out"' EXIT
for r in $(seq "$ROUNDS"); do
    for d in "${dirs[@]}"; do
        load=$(cut -d' ' -f1 /proc/loadavg)
        args=(-d "$d" -i "$AUDIO" --backend "$BACKEND" --bench --json --quiet)
        [ -n "${THREADS:-}" ] && args+=(-t "$THREADS")
        j=$("$VOX" "${args[@]}" 2>/dev/null)
        echo "{\"round\": $r, \"dir\": \"$d\", \"load\": $load, \"run\": $j}" >>"$out"
    done
done
/usr/bin/python3 - "$out" <<'PY'
import json, sys
runs = [json.loads(l) for l in open(sys.argv[1])]
base = runs[0]["dir"]
bf16 = {r["round"]: r["run"]["stats"]["step_ms_mean"] for r in runs if r["dir"] == base}
print("| model | step (ms) | floor (ms) | step / floor | step / BF16 step (same round) | weights per step (GB) | load avg |")
print("|---|---|---|---|---|---|---|")
for d in dict.fromkeys(r["dir"] for r in runs):
    rs = [r for r in runs if r["dir"] == d]
    best = min(rs, key=lambda r: r["run"]["stats"]["step_ms_mean"] / bf16[r["round"]])
    s = best["run"]["stats"]
    ratios = ", ".join("%.3f" % (r["run"]["stats"]["step_ms_mean"] / bf16[r["round"]]) for r in rs)
    print("| %s | %.1f | %.1f | %.2fx | %s | %.3f | %s |" % (d, s["step_ms_mean"], s["step_floor_ms"],
          s["step_vs_floor"], ratios, s["step_weight_bytes"] / 1e9, ", ".join("%.1f" % r["load"] for r in rs)))
PY
