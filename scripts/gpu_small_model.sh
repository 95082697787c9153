#!/usr/bin/env bash
# gpu_small_model.sh - the small model's checks that need the GPU machine (a lent
# run; transformers 5.17 there), outputs in $OUT (default build/gpu-small):
#   fixtures/tiny_trained/   the transformers reference's fixture of samples/tiny-en
#                            (make_fixtures.py --cases tiny_trained): commit it as
#                            tests/fixtures/tiny_trained, test_fixtures then runs it
#   fixtures.log             test_fixtures on that fixture, CPU and CUDA
#   wer_{seen,unseen}_{cpu,cuda}.{json,txt}  eval_small_model.py on the held-out sets
#                            per backend (EVAL, default .devdata/eval: copies of the
#                            corpus's eval/seen and eval/unseen; BACKENDS, default
#                            "cpu cuda")
# Expects `make cuda` and the CUDA tests built (gpu_paths.sh builds them).
#   source .devkit/env.sh && scripts/gpu_small_model.sh
set -u
cd "$(dirname "$0")/.."
OUT=${OUT:-build/gpu-small}; EVAL=${EVAL:-.devdata/eval}; BACKENDS=${BACKENDS:-"cpu cuda"}
mkdir -p "$OUT"
t0=$SECONDS
say() { echo "== $* ($((SECONDS - t0)) s)"; }
say "transformers fixture of samples/tiny-en"
PYTHONUNBUFFERED=1 python3 scripts/make_fixtures.py --cases tiny_trained --out "$OUT/fixtures" \
    --wav-dir tests/fixtures >"$OUT/make_fixtures.log" 2>&1 || tail -20 "$OUT/make_fixtures.log"
for B in cpu cuda; do
    echo "# backend $B" >>"$OUT/fixtures.log"
    VOX_TEST_BACKEND=$B build/cuda/tests/test_fixtures "$OUT/fixtures" >>"$OUT/fixtures.log" 2>&1
    echo "   $B: $(grep -E '^# [0-9]+ passed' "$OUT/fixtures.log" | tail -1)"
    grep "^not ok" "$OUT/fixtures.log" | tail -3
done
for S in seen unseen; do
    for B in $BACKENDS; do
        say "WER, $S, $B"
        python3 scripts/eval_small_model.py samples/tiny-en "$EVAL/$S" --backend $B -t 4 \
            --json "$OUT/wer_${S}_$B.json" >"$OUT/wer_${S}_$B.txt" 2>&1
        tail -2 "$OUT/wer_${S}_$B.txt"
    done
done
say done
