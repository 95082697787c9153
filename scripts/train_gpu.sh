#!/usr/bin/env bash
# train_gpu.sh - the small model's GPU run, fitted to one lent run of a GPU machine
# (which has torch but neither the `bible` text nor espeak-ng: carry .devkit, made by
# scripts/devkit.sh, and the clause split text.json of a CPU corpus run):
#   1. the speech corpus, ITEMS items (default 30000), synthesised on every core but one
#      in the background (make_speech_corpus.py --text TEXT --stream): chunks of 50
#      items appear as they are made (synthesis ran at only ~30 items/s on the 16-core
#      GPU machine, so waiting for the whole corpus would spend the run);
#   2. training at once, on the chunks there so far and those that follow, for MINUTES
#      (train_small_model.py --config base --stream --steps 0: the cosine schedule fitted
#      to the time), from INIT_DIR's weights when given (a warm restart); the model
#      directory goes to OUT_DIR.
#   source .devkit/env.sh && scripts/train_gpu.sh OUT_DIR MINUTES [TEXT_JSON] [INIT_DIR]
# The model card (samples/tiny-en/MODEL_CARD.md) records the runs the shipped model had.
set -euo pipefail
cd "$(dirname "$0")/.."
OUTD=${1:?out dir}; MIN=${2:?minutes}; TEXT=${3:-.devdata/text.json}; INIT=${4:-}
PY=${PYTHON:-python3}
W=build/gpu-train
mkdir -p $W/corpus
jobs=$(( $(nproc) > 1 ? $(nproc) - 1 : 1 ))
OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1 $PY scripts/make_speech_corpus.py --text "$TEXT" --out $W/corpus \
    --train-items "${ITEMS:-30000}" --jobs "$jobs" --no-eval --stream >$W/corpus.log 2>&1 &
SYN=$!
trap 'kill $SYN 2>/dev/null || true' EXIT
$PY scripts/train_small_model.py --corpus $W/corpus --stream --work $W/train --out "$OUTD" \
    --tekken samples/tiny-en/tekken.json --config "${CONFIG:-base}" --batch "${BATCH:-64}" --lr "${LR:-2e-3}" \
    --warmup 300 --steps 0 --minutes "$MIN" --save-min 2 ${INIT:+--init "$INIT"}
echo "train_gpu: corpus: $(tail -1 $W/corpus.log)"
