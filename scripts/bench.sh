#!/usr/bin/env bash
# bench.sh - benchmark voxtral on a full-size random model (never a test: it prints
# figures and JSON, and does not fail for being slow).
#   scripts/bench.sh [MODEL_DIR] [AUDIO] [--backend B] [--json FILE] [--transformers]
# MODEL_DIR defaults to models/random-full (made with make_random_model.py when
# missing, 8.9 GB); AUDIO to the 60 s clip in ../shared/audio. --transformers also
# times the transformers reference (bf16, eager and sdpa) on the same weights and
# audio, where torch and transformers are installed.
set -euo pipefail
cd "$(dirname "$0")/.."
MODEL=models/random-full
AUDIO=../shared/audio/60s_i_dont_want_anyones_life_on_my_hands.wav
BACKEND=auto; JSON=""; HF=0; pos=0
while [ $# -gt 0 ]; do
    case $1 in
        --backend) BACKEND=$2; shift 2 ;;
        --json) JSON=$2; shift 2 ;;
        --transformers) HF=1; shift ;;
        -h|--help) sed -n '2,9p' "$0"; exit 0 ;;
        *) if [ $pos -eq 0 ]; then MODEL=$1; else AUDIO=$1; fi; pos=$((pos + 1)); shift ;;
    esac
done
PY=$(command -v python3)
[ -x ./voxtral ] || make -j"$(nproc)" >/dev/null
if [ ! -f "$MODEL/consolidated.safetensors" ]; then
    echo "bench: writing a full-size random model to $MODEL (8.9 GB) ..." >&2
    /usr/bin/python3 scripts/make_random_model.py --preset full --out "$MODEL" >&2
fi
out=$(mktemp)
trap 'rm -f "$out"' EXIT
./voxtral -d "$MODEL" -i "$AUDIO" --backend "$BACKEND" --json --bench --quiet >"$out"
results="[$(cat "$out")"
if [ $HF -eq 1 ]; then
    for attn in eager sdpa; do
        r=$($PY scripts/bench_transformers.py "$MODEL" "$AUDIO" --attn $attn 2>/dev/null | tail -1) || r=""
        [ -n "$r" ] && results="$results, {\"transformers\": $r}"
    done
fi
results="$results]"
$PY - "$results" "$JSON" <<'PY'
import json, sys
runs = json.loads(sys.argv[1])
s = runs[0]["stats"]
rows = [("backend", s["backend"]),
        ("model load", "%.0f ms" % s["load_ms"]),
        ("audio", "%.2f s" % s["audio_s"]),
        ("end to end", "%.2f s, real-time factor %.3f" % (s["run_ms"] / 1e3, s["rtf"])),
        ("encoder", "%.1f ms per audio second (%d tokens)" % (s["encoder_ms_per_audio_s"], s["encoder_tokens"])),
        ("prefill", "%.1f ms" % s["prefill_ms"]),
        ("decoder step", "%.2f ms mean, %.2f ms p95 (%d steps)" % (s["step_ms_mean"], s["step_ms_p95"], s["steps"])),
        ("memory read bandwidth", "%.1f GB/s (measured)" % s["read_bandwidth_gb_s"]),
        ("step floor", "%.3f GB of weights -> %.2f ms; step = %.2fx floor" % (s["step_weight_bytes"] / 1e9, s["step_floor_ms"], s["step_vs_floor"])),
        ("time to first token", "%.1f ms" % s["first_token_ms"]),
        ("peak host RSS", "%.0f MB" % s["peak_rss_mb"]),
        ("backend memory", "%.0f MB" % s["backend_mb"])]
for r in runs[1:]:
    t = r["transformers"]
    rows.append((t["impl"], "%.2f ms/step, %.2f s end to end (RTF %.3f)" % (t["step_ms"], t["total_s"], t["rtf"])))
w = max(len(k) for k, _ in rows)
for k, v in rows:
    print("%-*s  %s" % (w, k, v))
if sys.argv[2]:
    json.dump(runs, open(sys.argv[2], "w"), indent=1)
PY
