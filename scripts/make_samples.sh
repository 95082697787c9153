#!/usr/bin/env bash
# make_samples.sh - regenerates the project's own short speech samples with
# espeak-ng and sox (installs them with apt-get when missing):
#   samples/hello.wav            16 kHz mono 16-bit PCM
#   samples/hello.flac           the same samples, FLAC
#   samples/hello_44k_stereo.wav the same speech at 44.1 kHz, stereo, 16-bit
#   samples/hello.txt            the sentence spoken
# Deterministic: fixed voice and speed, no dither, no random effects.
set -euo pipefail
cd "$(dirname "$0")/.."

need=()
command -v espeak-ng >/dev/null || need+=(espeak-ng)
command -v sox >/dev/null || need+=(sox)
if [ ${#need[@]} -gt 0 ]; then
    apt-get update -qq && apt-get install -y -qq "${need[@]}" libsox-fmt-base >/dev/null
fi

text="Hello, this is a test of the voxtral speech to text system."
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

mkdir -p samples
# espeak-ng speaks at 22050 Hz; pad 0.1 s of silence on each side.
espeak-ng -v en-us -s 175 -w "$tmp/raw.wav" "$text"
sox -D "$tmp/raw.wav" -r 16000 -c 1 -b 16 -e signed-integer samples/hello.wav pad 0.1 0.1
sox -D "$tmp/raw.wav" -r 44100 -c 2 -b 16 -e signed-integer samples/hello_44k_stereo.wav pad 0.1 0.1
# FLAC straight from the 16 kHz WAV: the same samples, losslessly.
rm -f samples/hello.flac
sox -D samples/hello.wav samples/hello.flac
printf '%s\n' "$text" > samples/hello.txt

for f in samples/hello.wav samples/hello.flac samples/hello_44k_stereo.wav; do
    printf '%s: %s\n' "$f" "$(soxi -r "$f") Hz, $(soxi -c "$f") ch, $(soxi -D "$f") s, $(stat -c %s "$f") bytes"
done
