#!/usr/bin/env bash
# bench_streams.sh - many live streams on one serving context (never a test: it
# prints figures and JSON, and does not fail for being slow).
#   scripts/bench_streams.sh [MODEL_DIR] [AUDIO] [-n 1,8,32,64,128] [-s SECONDS]
#                            [--backend B] [--kv f32|bf16] [--max-batch B] [--tick-ms T] [-t THREADS] [-w KV_WINDOW]
#                            [--no-baseline] [--offline] [--json FILE]
# N simulated live streams, each fed 80 ms of audio every 80 ms (staggered starts),
# for SECONDS (default 20) each run; per N: real time kept, token latency p50/p95/p99,
# step time per batch size, mean batch size, memory; the largest N with p95 <= 150 ms;
# baselines: the same N with one decoder step per stream (max_batch 1) and one stream
# alone; the memory-bound counts M(W). MODEL_DIR defaults to models/random-full
# (made with make_random_model.py when missing, 8.9 GB), AUDIO to a speech clip in
# ../shared/audio (looped).
set -euo pipefail
cd "$(dirname "$0")/.."
MODEL=models/random-full
AUDIO=../shared/audio/60s_i_dont_want_anyones_life_on_my_hands.wav
args=(); pos=0
while [ $# -gt 0 ]; do
    case $1 in
        -n|-s|-t|-w|--backend|--kv|--max-batch|--tick-ms|--json) args+=("$1" "$2"); shift 2 ;;
        --no-baseline|--offline) args+=("$1"); shift ;;
        -h|--help) sed -n '2,13p' "$0"; exit 0 ;;
        *) if [ $pos -eq 0 ]; then MODEL=$1; else AUDIO=$1; fi; pos=$((pos + 1)); shift ;;
    esac
done
make -s bench-streams >&2
if [ ! -f "$MODEL/consolidated.safetensors" ]; then
    echo "bench_streams: writing a full-size random model to $MODEL (8.9 GB) ..." >&2
    /usr/bin/python3 scripts/make_random_model.py --preset full --out "$MODEL" >&2
fi
[ -f "$AUDIO" ] || { echo "bench_streams: no audio file $AUDIO" >&2; exit 2; }
has_n=0; has_s=0
for a in "${args[@]+"${args[@]}"}"; do [ "$a" = -n ] && has_n=1; [ "$a" = -s ] && has_s=1; done
[ $has_n -eq 1 ] || args+=(-n 1,8,32,64,128)
[ $has_s -eq 1 ] || args+=(-s 20)
exec build/bench_streams -d "$MODEL" -a "$AUDIO" "${args[@]}"
