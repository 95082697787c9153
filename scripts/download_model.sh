#!/usr/bin/env bash
# download_model.sh - fetch the real Voxtral Realtime 4B weights (8.9 GB) from
# Hugging Face into a directory voxtral can load with -d.
# Usage: scripts/download_model.sh [DIR]   (default models/voxtral-realtime-4b)
# Needs internet access; set HF_TOKEN if the repository asks you to log in.
set -euo pipefail
REPO=mistralai/Voxtral-Mini-4B-Realtime-2602
DIR=${1:-models/voxtral-realtime-4b}
BASE=https://huggingface.co/$REPO/resolve/main
mkdir -p "$DIR"
auth=()
[ -n "${HF_TOKEN:-}" ] && auth=(-H "Authorization: Bearer $HF_TOKEN")
# Each file downloads to DIR/.FILE.part and is renamed into place when complete:
# voxtral mmaps the weights, and overwriting the file under a running voxtral would
# kill it (SIGBUS); a rename leaves the running one its old file.
for f in params.json tekken.json consolidated.safetensors; do
    if [ -s "$DIR/$f" ]; then echo "$f: already there (delete it to download again)"; continue; fi
    echo "downloading $f ..."
    # -C - resumes a partial download of the 8.9 GB file
    curl -fL --retry 5 -C - "${auth[@]}" -o "$DIR/.$f.part" "$BASE/$f"
    mv -f "$DIR/.$f.part" "$DIR/$f"
done
echo "model ready in $DIR: ./voxtral -d $DIR -i samples/hello.wav"
