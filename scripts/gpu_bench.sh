#!/usr/bin/env bash
# gpu_bench.sh - the GPU figures of one lent run (a benchmark, never a test), logs in
# $OUT (default build/gpu-bench; at most 8 files):
#   serve.log    the serving scheduler's batched-stream test on the GPU (test_serve)
#   quant.md     single-stream --bench on the 60 s clip at BF16, q8 and q4, each step
#                against its own floor (bench_quant.sh, BACKEND=cuda), quant.err the runs
#   vram.txt     the most GPU memory in use (nvidia-smi, every 0.1 s) while q4 with a
#                2048-token decoder window transcribes the 60 s clip, and the --check plans
#   streams.txt  bench_streams: N live streams, batched against one step per stream,
#                decoder window W (default 2048), and streams.json
# Makes the full-size random model at $M (default /tmp/random-full) when missing.
#   source .devkit/env.sh && scripts/gpu_bench.sh [AUDIO_60S]
set -u
cd "$(dirname "$0")/.."
OUT=${OUT:-build/gpu-bench}; M=${M:-/tmp/random-full}; A60=${1:-.devaudio/60s.wav}
W=${W:-2048}; NS=${NS:-1,8,32,64}; SECS=${SECS:-8}
mkdir -p "$OUT"
t0=$SECONDS
say() { echo "== $* ($((SECONDS - t0)) s)"; }
say build
( [ -f "$M/consolidated.safetensors" ] || python3 scripts/make_random_model.py --preset full --out "$M" >/tmp/model.log 2>&1 ) &
MP=$!
{ make cuda CUDA_ARCH=90 -j16 && make CUDA=1 CUDA_ARCH=90 tests bench-streams -j16; } >/tmp/build.log 2>&1 || { tail -30 /tmp/build.log; exit 1; }
say "test_serve on the GPU"
VOX_TEST_BACKEND=cuda build/cuda/tests/test_serve tests/fixtures >"$OUT/serve.log" 2>&1
grep -E "^not ok|^# [0-9]+ passed" "$OUT/serve.log"
wait $MP || { tail -5 /tmp/model.log; exit 1; }
say "single stream: BF16, q8, q4 (60 s clip)"
ROUNDS=1 BACKEND=cuda scripts/bench_quant.sh "$M" "$A60" q8 q4 >"$OUT/quant.md" 2>"$OUT/quant.err"
cat "$OUT/quant.md"; grep "wrote" "$OUT/quant.err"
say "VRAM: q4, decoder window 2048"
Q=$M-q4-w2048; mkdir -p $Q
ln -sf "$M-q4/consolidated.safetensors" "$M-q4/tekken.json" $Q/
python3 - "$M-q4/params.json" $Q/params.json <<'PY'
import json, sys
p = json.load(open(sys.argv[1])); p["sliding_window"] = 2048
json.dump(p, open(sys.argv[2], "w"), indent=1)
PY
base=$(nvidia-smi --query-gpu=memory.used --format=csv,noheader,nounits | head -1)
./voxtral -d $Q -i "$A60" --backend cuda --quiet >/dev/null 2>"$OUT/vram.txt" &
VP=$!; peak=0
while kill -0 $VP 2>/dev/null; do
    u=$(nvidia-smi --query-gpu=memory.used --format=csv,noheader,nounits | head -1); [ "$u" -gt "$peak" ] && peak=$u; sleep 0.1
done
echo "q4, window 2048: peak GPU memory in use $peak MiB (before the run $base MiB)" | tee -a "$OUT/vram.txt"
{ ./voxtral --check -d $Q --backend cuda 2>&1; ./voxtral --check -d "$M" --backend cuda 2>&1; } >>"$OUT/vram.txt"
say "streams: N = $NS, window $W"
scripts/bench_streams.sh "$M" "$A60" -n "$NS" -s "$SECS" -w "$W" --backend cuda --json "$OUT/streams.json" >"$OUT/streams.txt" 2>&1
cat "$OUT/streams.txt"
say done
