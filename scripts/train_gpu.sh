#!/usr/bin/env bash
# train_gpu.sh - the small model's GPU run, fitted to one lent run of a GPU machine
# (which has torch but neither the `bible` text nor espeak-ng: carry .devkit, made by
# scripts/devkit.sh, and the clause split text.json of a CPU corpus run):
#   1. the speech corpus, ITEMS items (default 30000) on every core
#      (make_speech_corpus.py --text TEXT --jobs $(nproc) --no-eval);
#   2. training for the minutes left of MINUTES (train_small_model.py --config base
#      --steps 0: the cosine schedule fitted to the time), from INIT_DIR's weights when
#      given (a warm restart); the model directory goes to OUT_DIR.
#   source .devkit/env.sh && scripts/train_gpu.sh OUT_DIR MINUTES [TEXT_JSON] [INIT_DIR]
# The model card (samples/tiny-en/MODEL_CARD.md) records the runs the shipped model had.
set -euo pipefail
cd "$(dirname "$0")/.."
OUTD=${1:?out dir}; MIN=${2:?minutes}; TEXT=${3:-.devdata/text.json}; INIT=${4:-}
PY=${PYTHON:-python3}
W=build/gpu-train
t0=$(date +%s)
[ -f $W/corpus/train_index.json ] ||
    $PY scripts/make_speech_corpus.py --text "$TEXT" --out $W/corpus --train-items "${ITEMS:-30000}" \
        --jobs "$(nproc)" --no-eval
left=$($PY -c "print(round($MIN - ($(date +%s) - $t0) / 60, 2))")
echo "train_gpu: corpus in $(( $(date +%s) - t0 )) s; training for $left min"
$PY scripts/train_small_model.py --corpus $W/corpus --work $W/train --out "$OUTD" \
    --tekken samples/tiny-en/tekken.json --config base --batch "${BATCH:-64}" --lr "${LR:-2e-3}" \
    --warmup 300 --steps 0 --minutes "$left" --save-min 2 ${INIT:+--init "$INIT"}
