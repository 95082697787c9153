#!/usr/bin/env bash
# test_small_model.sh - the shipped small model (samples/tiny-en) on held-out synthetic
# sentences: samples/synth/seen (training voices) and samples/synth/unseen (the held-out
# voice): WER, word start times against the synthesiser's word times (--json "pieces"),
# the CPU-time real-time factor, and accuracy_regression.sh on the model.
# The shipped model measures 0% / 3.2% WER on these 4-file sets (31 words each: one error
# is 3.2%) and 3.6% / 4.8% on the 60-sentence sets of its model card (the issue's targets
# are 5% / 15%); the gates leave room for two or three errors per set. Every matched word
# must start within 0.16 s of the synthesiser's time (the issue's target).
set -u
cd "$(dirname "$0")/.." || exit 1
VOX=${VOXTRAL:-./voxtral}
case $VOX in /*) ;; *) VOX=$PWD/$VOX ;; esac
export VOXTRAL=$VOX
PY=${PYTHON:-/usr/bin/python3}
export OMP_NUM_THREADS=1 # a model this small runs fastest on one thread, also on a busy machine
. tests/testlib.sh
M=samples/tiny-en
MAX_WER_SEEN=${MAX_WER_SEEN:-0.10}
MAX_WER_UNSEEN=${MAX_WER_UNSEEN:-0.15}
MAX_FILE_WER=${MAX_FILE_WER:-0.40}
MAX_START_ERR=${MAX_START_ERR:-0.16}
MAX_RTF=${MAX_RTF:-0.25} # CPU-time RTF (user + system time / audio, process start included: the CUDA
# build probes the driver even with --backend cpu): measured 0.017 (CPU build) .. 0.075 (CUDA build)

ls "$M"/consolidated.safetensors "$M"/params.json "$M"/tekken.json >/dev/null 2>&1
check "samples/tiny-en holds a model directory" $?
size=$(stat -c %s "$M/consolidated.safetensors" 2>/dev/null || echo 99999999)
[ "$size" -le 16000000 ]
check "checkpoint is at most 16 MB ($size bytes)" $?

"$PY" scripts/eval_small_model.py "$M" samples/synth/seen -t 1 --max-wer "$MAX_WER_SEEN" \
    --max-start-err "$MAX_START_ERR" --max-rtf "$MAX_RTF" --show 4 --json "$tmp/seen.json" \
    >"$tmp/seen.txt" 2>&1
check "held-out sentences, training voices: WER <= $MAX_WER_SEEN, matched word starts within ${MAX_START_ERR} s, CPU-time RTF <= $MAX_RTF" \
    $? "$(cat "$tmp/seen.txt")"
sed 's/^/# seen: /' "$tmp/seen.txt"

"$PY" scripts/eval_small_model.py "$M" samples/synth/unseen -t 1 --max-wer "$MAX_WER_UNSEEN" \
    --max-start-err "$MAX_START_ERR" --show 4 >"$tmp/unseen.txt" 2>&1
check "held-out sentences, held-out voice: WER <= $MAX_WER_UNSEEN, matched word starts within ${MAX_START_ERR} s" \
    $? "$(cat "$tmp/unseen.txt")"
sed 's/^/# unseen: /' "$tmp/unseen.txt"

# a model that prints nothing for a file is broken even if the totals pass
"$PY" -c '
import json, sys
r = json.load(open(sys.argv[1]))
sys.exit(0 if r["per_file"] and all(f["hyp"].strip() for f in r["per_file"]) else 1)
' "$tmp/seen.json"
check "every held-out file gets a transcript" $?

wavs=(samples/synth/seen/*.wav)
scripts/accuracy_regression.sh "$M" "${wavs[@]}" --ref auto --backends cpu --threads 1 \
    --max-wer "$MAX_FILE_WER" --out "$tmp/acc" >"$tmp/acc.txt" 2>&1
check "accuracy_regression.sh on samples/tiny-en passes (WER <= $MAX_FILE_WER per file)" $? \
    "$(cat "$tmp/acc.txt")"

# continuous mode on speech with long pauses: three held-out sentences with 4 s of silence
# between them, through --stdin (continuous mode, as live input is); the transcript's
# segments (verbose_json) must not bridge a pause, each sentence's words must be found
# (WER over the whole), and the restarts the pauses cause must not lose text
"$PY" - "$tmp/pauses.wav" samples/synth/seen/000.wav samples/synth/seen/001.wav samples/synth/seen/002.wav <<'PY'
import sys, wave
out = wave.open(sys.argv[1], "wb"); out.setnchannels(1); out.setsampwidth(2); out.setframerate(16000)
for i, p in enumerate(sys.argv[2:]):
    w = wave.open(p, "rb"); assert w.getframerate() == 16000 and w.getnchannels() == 1
    if i: out.writeframes(b"\0\0" * 16000 * 4)
    out.writeframes(w.readframes(w.getnframes()))
out.close()
PY
cat samples/synth/seen/00{0,1,2}.txt | tr '\n' ' ' >"$tmp/pauses.ref"
OMP_NUM_THREADS=1 $VOX -d $M --stdin --backend cpu -ojson -of "$tmp/pauses" <"$tmp/pauses.wav" >"$tmp/pauses.txt" 2>"$tmp/pauses.err"
rc=$?
"$PY" - "$tmp/pauses.json" samples/synth/seen "$tmp/pauses.ref" "$tmp/pauses.txt" "${MAX_WER_PAUSES:-0.15}" <<'PY'
import json, sys, wave, os
sys.path.insert(0, "scripts")
import wer as werlib
o = json.load(open(sys.argv[1]))
# the pauses: after each sentence's audio, 4 s of silence
t, pauses = 0.0, []
for i in range(3):
    w = wave.open(os.path.join(sys.argv[2], "%03d.wav" % i), "rb")
    t += w.getnframes() / 16000.0
    if i < 2:
        pauses.append((t + 0.5, t + 3.5)); t += 4.0
segs = o["segments"]
bridged = [s for s in segs for a, b in pauses if s["start"] < a and s["end"] > b]
ref = open(sys.argv[3]).read()
hyp = open(sys.argv[4]).read()
r = werlib.wer(ref, hyp)
print("segments %d, bridging a pause %d, WER %.1f%% (%s)" % (len(segs), len(bridged), 100 * r["wer"], hyp.strip()[:120]))
sys.exit(0 if segs and not bridged and r["wer"] <= float(sys.argv[5]) and o["text"].strip() else 1)
PY
check "continuous mode, 3 sentences with 4 s pauses (--stdin): segments end at the pauses, WER <= ${MAX_WER_PAUSES:-0.15}" \
    $(( rc == 0 ? $? : 1 )) "rc $rc: $(head -3 "$tmp/pauses.err")"

# a long file of eight sentences with 0.5 s gaps: -i ends at the model's first EOS (the
# small model was trained on items of 1-3 sentences, so it says EOS after the first);
# -i --continuous goes on past each EOS, and transcribes them all
"$PY" - "$tmp/long.wav" "$tmp/long.ref" samples/synth/seen samples/synth/unseen <<'PY'
import sys, wave, os
out = wave.open(sys.argv[1], "wb"); out.setnchannels(1); out.setsampwidth(2); out.setframerate(16000)
ref = []
for d in sys.argv[3:]:
    for i in range(4):
        w = wave.open(os.path.join(d, "%03d.wav" % i), "rb")
        out.writeframes(w.readframes(w.getnframes()) + b"\0\0" * 8000)
        ref.append(open(os.path.join(d, "%03d.txt" % i)).read().strip())
out.close()
open(sys.argv[2], "w").write(" ".join(ref) + "\n")
PY
OMP_NUM_THREADS=1 $VOX -d $M -i "$tmp/long.wav" --backend cpu --continuous >"$tmp/long.hyp" 2>"$tmp/long.err"
rc=$?
w=$("$PY" scripts/wer.py "$tmp/long.ref" "$tmp/long.hyp" | head -1)
"$PY" -c 'import sys; sys.path.insert(0, "scripts"); import wer; sys.exit(0 if wer.wer(open(sys.argv[1]).read(), open(sys.argv[2]).read())["wer"] <= 0.15 else 1)' "$tmp/long.ref" "$tmp/long.hyp"
check "-i --continuous on 8 sentences with 0.5 s gaps: WER <= 0.15 ($w)" $(( rc == 0 ? $? : 1 )) "rc $rc: $(head -2 "$tmp/long.err")"
