#!/usr/bin/env bash
# gpu_session.sh - everything we need a GPU machine for, in one go: build the CUDA
# backend, run the op tests and the reference fixtures on CUDA, then a full-size
# random model: CUDA vs CPU logits along a teacher-forced sequence, and the
# benchmark (--bench) on a 60 s clip. Results under $OUT (default build/gpu).
#   scripts/gpu_session.sh AUDIO_60S AUDIO_5S [MODEL_DIR]
set -u
cd "$(dirname "$0")/.."
OUT=${OUT:-build/gpu}
mkdir -p "$OUT"
A60=$1; A5=$2; M=${3:-/tmp/random-full}
step() { echo "== $*" | tee -a "$OUT/session.log"; }
step build
make cuda CUDA_ARCH=${CUDA_ARCH:-90} -j16 >"$OUT/build.log" 2>&1 && make CUDA=1 CUDA_ARCH=${CUDA_ARCH:-90} tests -j16 >>"$OUT/build.log" 2>&1 \
    || { tail -40 "$OUT/build.log"; exit 1; }
nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm --format=csv | tee -a "$OUT/session.log"
step op tests
build/cuda/tests/test_cuda_ops >"$OUT/ops.log" 2>&1; grep -E "^not ok|passed" "$OUT/ops.log" | tee -a "$OUT/session.log"
step fixtures on cuda
VOX_TEST_BACKEND=cuda build/cuda/tests/test_fixtures >"$OUT/fixtures_cuda.log" 2>&1; grep -E "^not ok|passed" "$OUT/fixtures_cuda.log" | tee -a "$OUT/session.log"
step full-size random model
[ -f "$M/consolidated.safetensors" ] || python3 scripts/make_random_model.py --preset full --out "$M" | tee -a "$OUT/session.log"
step "cuda: 60 s clip, --bench"
./voxtral -d "$M" -i "$A60" --backend cuda --json --bench >"$OUT/cuda60.json" 2>"$OUT/cuda60.err"
cat "$OUT/cuda60.err" | tee -a "$OUT/session.log"
step "cuda vs cpu: teacher-forced logits, 5 s clip"
./voxtral -d "$M" -i "$A5" --backend cuda --json --quiet >"$OUT/cuda5.json" 2>>"$OUT/session.log"
python3 -c "import json;print(' '.join(map(str,json.load(open('$OUT/cuda5.json'))['tokens'])))" >"$OUT/forced5.txt"
./voxtral -d "$M" -i "$A5" --backend cuda --json --topk 64 --force-tokens "$OUT/forced5.txt" --quiet >"$OUT/cuda5f.json"
./voxtral -d "$M" -i "$A5" --backend cpu --json --topk 64 --force-tokens "$OUT/forced5.txt" >"$OUT/cpu5f.json" 2>"$OUT/cpu5f.err"
cat "$OUT/cpu5f.err" >>"$OUT/session.log"
python3 - "$OUT/cpu5f.json" "$OUT/cuda5f.json" <<'PY' | tee -a "$OUT/session.log"
import json, sys
c, g = (json.load(open(p)) for p in sys.argv[1:3])
worst = 0.0; spread = 0.0; same = 0
for rc, rg in zip(c["topk"], g["topk"]):
    dc = {i: v for i, v in rc}; dg = {i: v for i, v in rg}
    spread = max(spread, rc[0][1] - rc[-1][1])
    for i in dc:
        if i in dg: worst = max(worst, abs(dc[i] - dg[i]))
    same += rc[0][0] == rg[0][0]
n = len(c["topk"])
print("cpu vs cuda, %d teacher-forced steps: top-1 equal in %d; max |logit diff| over shared top-64 ids %.4f; "
      "top-64 logit range %.2f" % (n, same, worst, spread))
PY
echo "== done" | tee -a "$OUT/session.log"
