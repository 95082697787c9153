#!/usr/bin/env bash
# gpu_paths.sh - the CUDA backend's three GPU paths (--gpu-path bf16, fp16, fp32) on
# one GPU, each forced, so the pre-Ampere fp16 path is tested on any card: build;
# the op tests (every matrix op with BF16, FP16 and FP32 weights against its CPU
# twin); the reference fixtures per path, with a tolerance that fits it (bf16 3e-2,
# fp16 1e-2, fp32 3e-4 of the stage's scale); then, on a full-size random model,
# per path: CPU-vs-GPU logits along one teacher-forced sequence (5 s clip) and
# --bench on a 60 s clip. The full-size steps run only while the time budget lasts
# (BUDGET_S, default 290 s from the start; making the model takes ~95 s).
# Summary on stdout and in $OUT/session.log; logs in $OUT (default build/gpu-paths):
# ops.log, fixtures.log, full.log (at most 8 files); scratch in build/gpu-paths-work.
# Also on the GPU: the serving scheduler's batched streams (test_serve), and --quant
# q8/q4 on the fixture models on every path, teacher-forced against the CPU's quantized
# run.
# FULL=0 skips the full-size steps.
#   scripts/gpu_paths.sh [AUDIO_60S] [AUDIO_5S] [MODEL_DIR]
set -u
cd "$(dirname "$0")/.."
OUT=${OUT:-build/gpu-paths}
W=build/gpu-paths-work
BUDGET_S=${BUDGET_S:-290}
A60=${1:-.devaudio/60s.wav}; A5=${2:-.devaudio/5s.wav}; M=${3:-/tmp/random-full}
PATHS=${PATHS:-"fp16 fp32 bf16"}
mkdir -p "$OUT" "$W"
: >"$OUT/session.log"
say() { echo "$*" | tee -a "$OUT/session.log"; }
# has the budget room for a step of about $1 seconds?
room() { [ $((SECONDS + $1)) -le "$BUDGET_S" ] || { say "   skipped (${SECONDS} s used, ~$1 s more needed, budget $BUDGET_S s)"; return 1; }; }

say "== build"
make cuda CUDA_ARCH="${CUDA_ARCH:-90}" -j16 >"$W/build.log" 2>&1 && make CUDA=1 CUDA_ARCH="${CUDA_ARCH:-90}" tests -j16 >>"$W/build.log" 2>&1 \
    || { tail -40 "$W/build.log"; exit 1; }
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader | tee -a "$OUT/session.log"

say "== op tests (${SECONDS} s)"
{ build/cuda/tests/test_cuda_ops; build/cuda/tests/test_cuda_batched; } >"$OUT/ops.log" 2>&1
# worst error / max|ref| per dtype and kind of matrix op, then the failures
python3 - "$OUT/ops.log" <<'PY' | tee -a "$OUT/session.log"
import re, sys
worst = {}
for line in open(sys.argv[1]):
    m = re.match(r"(ok|not ok) - (linear|norm_linear|swiglu_linear) (bf16|fp16|fp32) .*\((gemv1?|cublasLt)\).*\(([0-9.e+-]+) of max", line)
    if m:
        k = (m.group(3), "gemm" if m.group(4) == "cublasLt" else "gemv")
        worst[k] = max(worst.get(k, 0.0), float(m.group(5)))
for dt in ("bf16", "fp16", "fp32"):
    print("   %s weights: worst |err|/max|ref|  gemv %.2g  cuBLASLt %.2g" % (dt, worst.get((dt, "gemv"), float("nan")), worst.get((dt, "gemm"), float("nan"))))
for line in open(sys.argv[1]):
    if line.startswith("not ok") or re.match(r"^# \d+ passed", line):
        print("   " + line.rstrip()[:150])
PY

say "== quantized op tests (${SECONDS} s)"
build/cuda/tests/test_cuda_quant >"$OUT/quant_ops.log" 2>&1
grep -E '^not ok|^# [0-9]+ passed' "$OUT/quant_ops.log" | cut -c1-150 | sed 's/^/   /' | tee -a "$OUT/session.log"

say "== KV ring ops over BF16 rings (${SECONDS} s)"
build/cuda/tests/test_cuda_kv >"$OUT/kv_ops.log" 2>&1
grep -E '^not ok|^# [0-9]+ passed' "$OUT/kv_ops.log" | cut -c1-150 | sed 's/^/   /' | tee -a "$OUT/session.log"

say "== fixtures per path (${SECONDS} s)"
: >"$OUT/fixtures.log"
for P in $PATHS; do
    case $P in bf16) S=1 ;; fp16) S=0.3333333 ;; fp32) S=0.01 ;; esac
    echo "# --gpu-path $P, tolerance scale $S" >>"$OUT/fixtures.log"
    VOX_TEST_BACKEND=cuda VOX_TEST_GPU_PATH=$P VOX_TEST_TOL_SCALE=$S build/cuda/tests/test_fixtures \
        >"$W/fixtures_$P.log" 2>&1
    cat "$W/fixtures_$P.log" >>"$OUT/fixtures.log"
    python3 - "$P" "$W/fixtures_$P.log" <<'PY' | tee -a "$OUT/session.log"
import re, sys
worst, tol = {}, {}
for line in open(sys.argv[2]):
    m = re.match(r"(?:ok|not ok) - [^:]+: (conv stem|encoder|adapter|logits|teacher-forced logits).*?(?:error|std) ([0-9.e+-]+) \(tolerance ([0-9.e+-]+)\)", line)
    if m:
        s = m.group(1).replace("teacher-forced logits", "forced")
        worst[s] = max(worst.get(s, 0.0), float(m.group(2))); tol[s] = float(m.group(3))
tail = [l.strip() for l in open(sys.argv[2]) if re.match(r"^# \d+ passed", l)]
print("   %s: %s; worst: %s (tolerance %s)" % (sys.argv[1], tail[0][2:] if tail else "no result",
      ", ".join("%s %.2g" % (k, v) for k, v in worst.items()), "%.2g" % max(tol.values()) if tol else "?"))
PY
    grep "^not ok" "$W/fixtures_$P.log" | head -5 | sed 's/^/   /' | tee -a "$OUT/session.log"
done

say "== stream behaviour on the GPU: flush, continuous mode, a long stream (${SECONDS} s)"
VOX_TEST_BACKEND=cuda build/cuda/tests/test_stream tests/fixtures 0.5 >"$W/stream.log" 2>&1
grep -E "^not ok|^# [0-9]+ passed" "$W/stream.log" | sed 's/^/   /' | tee -a "$OUT/session.log"

say "== batched streams on the serving scheduler, GPU (${SECONDS} s)"
VOX_TEST_BACKEND=cuda build/cuda/tests/test_serve tests/fixtures >"$W/serve.log" 2>&1
grep -E "^not ok|^# [0-9]+ passed" "$W/serve.log" | sed 's/^/   /' | tee -a "$OUT/session.log"
cat "$W/serve.log" >>"$OUT/fixtures.log"

say "== --quant q8/q4 on the fixture models: CUDA teacher-forced on the CPU's ids (${SECONDS} s)"
for F in tests/fixtures/tiny_speech tests/fixtures/tiny_mha; do
    for Q in q8 q4; do
        ./voxtral -d $F/model -i $F/input.wav --backend cpu --quant $Q --json --topk 16 >"$W/qc.json" 2>>"$OUT/full.log"
        python3 -c "import json;print(' '.join(map(str,json.load(open('$W/qc.json'))['tokens'])))" >"$W/qf.txt"
        for P in $PATHS; do
        ./voxtral -d $F/model -i $F/input.wav --backend cuda --gpu-path $P --quant $Q --json --topk 16 \
            --force-tokens "$W/qf.txt" >"$W/qg.json" 2>>"$OUT/full.log"
        python3 - "$W/qc.json" "$W/qg.json" "$(basename $F) $Q $P path" <<'PY' | tee -a "$OUT/session.log"
import json, sys
try:
    c, g = (json.load(open(p)) for p in sys.argv[1:3])
except Exception as e:
    print("   %s: no result (%s)" % (sys.argv[3], e)); sys.exit()
worst = spread = 0.0; same = 0
for rc, rg in zip(c["topk"], g["topk"]):
    dc, dg = dict(map(tuple, rc)), dict(map(tuple, rg))
    spread = max(spread, rc[0][1] - rc[-1][1])
    worst = max([worst] + [abs(dc[i] - dg[i]) for i in dc if i in dg])
    same += rc[0][0] == rg[0][0]
print("   %s: %d steps, top-1 equal in %d; max |logit diff| over shared top-16 %.4f (top-16 range %.2f)"
      % (sys.argv[3], len(c["topk"]), same, worst, spread))
PY
        done
    done
done

[ "${FULL:-1}" = 0 ] && { say "== done, FULL=0 (${SECONDS} s)"; exit 0; }
say "== full-size random model (${SECONDS} s)"
if [ ! -f "$M/consolidated.safetensors" ]; then
    room 100 && python3 scripts/make_random_model.py --preset full --out "$M" >"$W/model.log" 2>&1 \
        || { say "   no full-size model: $(tail -1 "$W/model.log" 2>/dev/null)"; M=; }
fi
: >"$OUT/full.log"
if [ -n "$M" ] && [ -f "$M/consolidated.safetensors" ]; then
    say "== cpu vs cuda per path: teacher-forced logits, 5 s clip (${SECONDS} s)"
    if room 45; then
        ./voxtral -d "$M" -i "$A5" --backend cuda --gpu-path bf16 --json --quiet >"$W/cuda5.json" 2>>"$OUT/full.log"
        python3 -c "import json;print(' '.join(map(str,json.load(open('$W/cuda5.json'))['tokens'])))" >"$W/forced5.txt"
        ./voxtral -d "$M" -i "$A5" --backend cpu --json --topk 64 --force-tokens "$W/forced5.txt" \
            >"$W/cpu5f.json" 2>>"$OUT/full.log"
        for P in $PATHS; do
            room 15 || break
            ./voxtral -d "$M" -i "$A5" --backend cuda --gpu-path $P --json --topk 64 \
                --force-tokens "$W/forced5.txt" --quiet >"$W/cuda5f_$P.json" 2>>"$OUT/full.log"
            python3 - "$W/cpu5f.json" "$W/cuda5f_$P.json" "$P" "$W/cuda5.json" <<'PY' | tee -a "$OUT/session.log"
import json, sys
try:
    c, g = (json.load(open(p)) for p in sys.argv[1:3])
except Exception as e:
    print("   %s: no result (%s)" % (sys.argv[3], e)); sys.exit()
worst = 0.0; spread = 0.0; same = 0
for rc, rg in zip(c["topk"], g["topk"]):
    dc = {i: v for i, v in rc}; dg = {i: v for i, v in rg}
    spread = max(spread, rc[0][1] - rc[-1][1])
    for i in dc:
        if i in dg: worst = max(worst, abs(dc[i] - dg[i]))
    same += rc[0][0] == rg[0][0]
print("   %s: %d steps, top-1 equal in %d; max |logit diff| over shared top-64 ids %.4f (top-64 range %.2f)"
      % (sys.argv[3], len(c["topk"]), same, worst, spread))
if sys.argv[3] == "bf16":  # the greedy run (steps queued two deep) against its own teacher-forced replay
    greedy = json.load(open(sys.argv[4]))["tokens"]
    top1 = [r[0][0] for r in g["topk"]]
    n = min(len(greedy), len(top1))
    ok = n > 0 and greedy[:n] == top1[:n]
    print("   bf16: greedy ids (queued steps) %s the teacher-forced top-1 over %d steps" % ("EQUAL" if ok else "DIFFER from", n))
PY
        done
    fi
    say "== --bench, 60 s clip, per path (${SECONDS} s)"
    for P in $PATHS; do
        room 40 || break
        ./voxtral -d "$M" -i "$A60" --backend cuda --gpu-path $P --json --bench >"$W/bench_$P.json" 2>"$W/bench_$P.err"
        cat "$W/bench_$P.err" >>"$OUT/full.log"
        echo "   -- $P" | tee -a "$OUT/session.log"
        grep -E "kept in fp32|uploaded|^timing|bench: +(load|end to end|decoder step|measured)|error" "$W/bench_$P.err" \
            | sed 's/^/   /' | tee -a "$OUT/session.log"
    done
fi
say "== done (${SECONDS} s)"
