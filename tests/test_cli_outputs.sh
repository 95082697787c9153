#!/usr/bin/env bash
# test_cli_outputs.sh - issue 12 in the CLI: timed segments, -otxt/-osrt/-ovtt/-ojson
# (golden files derived by hand from the timing rule at the top of voxtral_text.c),
# --timestamps lines, -ml, several inputs with one model load, -of, -i -, -pp
# progress through a pseudo-terminal (script), the default model, valid UTF-8 in
# --json under teacher forcing through byte tokens.
#
# --force-tokens makes the decoded sequence known: step k (time k * 80 ms, the delay
# already taken out by the engine) decodes forced id k. Ids used (tiny random model's
# tekken): 1202 " hello", 1209 " world", 1068 ".", 1124 " this", 1111 " is", 1140 " an",
# 1203 " test", 1093 " café", 1101 "你好", 1001 + 1002 the two halves of "€" (e2 82 | ac),
# 1000 the byte 0x00, 1003 a lone e3 (a truncated character), 33 a control id (no
# text), 2 EOS (ends the transcript).
set -u
cd "$(dirname "$0")/.."
VOX=${VOXTRAL:-./voxtral}
case $VOX in /*) ;; *) VOX=$PWD/$VOX ;; esac
PY=/usr/bin/python3
export OMP_NUM_THREADS=1
. tests/testlib.sh
tiny_model 3
cp samples/hello.wav "$tmp/g.wav" # 3.9265 s
P=33
echo "1202 1209 1068 $P $P $P $P $P 1124 1111 1140 1203 $P $P $P $P $P $P $P $P $P $P $P $P $P 1093 1101 1001 1002 2" \
    >"$tmp/golden.ids"

# The rule, applied by hand: text token k has t = k * 80 ms. A word starts at its first
# piece; it ends at the next word's start in the same segment, else at its last piece
# + 80 ms. "." then 5 steps without text (>= 320 ms) ends segment 1 (hello 0-80, world.
# 80-240). 13 steps without text (>= 960 ms) end segment 2 (this 640, is 720, an 800,
# test 880-960). Segment 3: café at 2000 (k 25), 你好 at 2080 (a CJK piece starts a
# word), "€" completed at k 28 (2240) continues 你好: ends 2240 + 80 = 2320.
cat >"$tmp/want.srt" <<'EOF'
1
00:00:00,000 --> 00:00:00,240
hello world.

2
00:00:00,640 --> 00:00:00,960
this is an test

3
00:00:02,000 --> 00:00:02,320
café你好€

EOF
cat >"$tmp/want.vtt" <<'EOF'
WEBVTT

00:00:00.000 --> 00:00:00.240
hello world.

00:00:00.640 --> 00:00:00.960
this is an test

00:00:02.000 --> 00:00:02.320
café你好€

EOF
printf 'hello world.\nthis is an test\ncafé你好€\n' >"$tmp/want.txt"
cat >"$tmp/want.lines" <<'EOF'
[00:00.000 --> 00:00.240]  hello world.
[00:00.640 --> 00:00.960]  this is an test
[00:02.000 --> 00:02.320]  café你好€
EOF

$VOX -d "$M" -i "$tmp/g.wav" --force-tokens "$tmp/golden.ids" -otxt -osrt -ovtt -ojson --quiet >"$tmp/plain.out" 2>"$tmp/err"
check "-otxt -osrt -ovtt -ojson together: exit 0" $? "$(cat "$tmp/err")"
for ext in srt vtt txt; do
    cmp -s "$tmp/g.$ext" "$tmp/want.$ext"
    check "-o$ext: byte-exact against the hand-derived file" $? "$(diff "$tmp/want.$ext" "$tmp/g.$ext" | head -20)"
done
$PY - "$tmp/g.json" "$tmp/plain.out" <<'EOF'
import json, sys
raw = open(sys.argv[1], "rb").read()
o = json.loads(raw.decode("utf-8"))  # strict UTF-8, strict JSON
plain = open(sys.argv[2], "rb").read().decode("utf-8").rstrip("\n")
assert o["text"] == "hello world. this is an test café你好€" == plain, (o["text"], plain)
assert abs(o["duration"] - 3.9265) < 0.001, o["duration"]
want = [(0.0, 0.24, "hello world.", [1202, 1209, 1068]), (0.64, 0.96, " this is an test", [1124, 1111, 1140, 1203]),
        (2.0, 2.32, " café你好€", [1093, 1101, 1001, 1002])]
got = [(s["start"], s["end"], s["text"], s["tokens"]) for s in o["segments"]]
assert got == want, got
assert [s["id"] for s in o["segments"]] == [0, 1, 2]
words = [(w["word"], w["start"], w["end"]) for w in o["words"]]
assert words == [("hello", 0.0, 0.08), ("world.", 0.08, 0.24), ("this", 0.64, 0.72), ("is", 0.72, 0.8),
                 ("an", 0.8, 0.88), ("test", 0.88, 0.96), ("café", 2.0, 2.08), ("你好€", 2.08, 2.32)], words
assert "".join(s["text"] for s in o["segments"]) == o["text"]
ends = [0.0] + [x for s in o["segments"] for x in (s["start"], s["end"])]
assert all(a <= b for a, b in zip(ends, ends[1:])) and ends[-1] <= o["duration"], ends
EOF
check "-ojson: verbose_json parses (strict UTF-8); segments, words and times as derived; text = plain = concatenated segments" $?
$VOX -d "$M" -i "$tmp/g.wav" --force-tokens "$tmp/golden.ids" --timestamps --quiet >"$tmp/lines.out"
cmp -s "$tmp/lines.out" "$tmp/want.lines"
check "--timestamps: one [mm:ss.mmm --> mm:ss.mmm]  line per segment" $? "$(cat "$tmp/lines.out")"
$VOX -d "$M" -i "$tmp/g.wav" --force-tokens "$tmp/golden.ids" --timestamps -nt --quiet >"$tmp/nt.out"
[ "$(cat "$tmp/nt.out")" = "hello world. this is an test café你好€" ]
check "-nt after --timestamps: plain text" $? "$(cat "$tmp/nt.out")"

# -ml 10: a segment ends before the word that takes it past 10 characters
$VOX -d "$M" -i "$tmp/g.wav" --force-tokens "$tmp/golden.ids" -ml 10 -osrt -of "$tmp/ml" --quiet >/dev/null
cat >"$tmp/want_ml.srt" <<'EOF'
1
00:00:00,000 --> 00:00:00,080
hello

2
00:00:00,080 --> 00:00:00,240
world.

3
00:00:00,640 --> 00:00:00,880
this is an

4
00:00:00,880 --> 00:00:00,960
test

5
00:00:02,000 --> 00:00:02,320
café你好€

EOF
cmp -s "$tmp/ml.srt" "$tmp/want_ml.srt"
check "-ml 10 -of PREFIX: segments split at word boundaries, as derived" $? "$(diff "$tmp/want_ml.srt" "$tmp/ml.srt" | head)"

# ffmpeg reads the subtitles (a real parser), when installed
if command -v ffmpeg >/dev/null 2>&1; then
    for ext in srt vtt; do
        ffmpeg -loglevel error -i "$tmp/g.$ext" -f srt - >"$tmp/ff.$ext" 2>"$tmp/fferr"
        [ $? -eq 0 ] && [ "$(grep -c -- '-->' "$tmp/ff.$ext")" -eq 3 ] && grep -q 'café你好€' "$tmp/ff.$ext"
        check "ffmpeg parses the .$ext (3 cues, text kept)" $? "$(cat "$tmp/fferr")"
    done
else
    echo "ok - ffmpeg not installed: subtitle parsing by ffmpeg skipped"
fi

# --json: valid UTF-8 by the reference rule under byte tokens: 0x00, a split "€", a lone e3
echo "1005 1000 1006 1001 1002 1003 1006 1003 2" >"$tmp/bytes.ids"
$VOX -d "$M" -i "$tmp/g.wav" --force-tokens "$tmp/bytes.ids" --json --quiet >"$tmp/b.json"
$VOX -d "$M" -i "$tmp/g.wav" --force-tokens "$tmp/bytes.ids" --quiet >"$tmp/b.txt"
$PY - "$tmp/b.json" "$tmp/b.txt" <<'EOF'
import json, sys
o = json.loads(open(sys.argv[1], "rb").read().decode("utf-8"))
want = b"a\x00b\xe2\x82\xac\xe3b\xe3".decode("utf-8", errors="replace")
assert o["text"] == want, (o["text"], want)
assert "".join(p["text"] for p in o["pieces"]) == want, o["pieces"]
assert all(p["text"] for p in o["pieces"])  # no empty piece: a held-back byte waits
plain = open(sys.argv[2], "rb").read().decode("utf-8")  # strict
assert plain.rstrip("\n") == want, (plain, want)
EOF
check "--json and plain stdout: byte tokens decoded as Python's errors='replace' (0x00 kept, split char joined, lone bytes U+FFFD)" $?

# several inputs, one model load; -of with several inputs; -i - (a whole file on stdin)
cp samples/hello.flac "$tmp/h2.flac"
$VOX -d "$M" -i "$tmp/g.wav" "$tmp/h2.flac" --force-tokens "$tmp/golden.ids" -osrt >"$tmp/multi.out" 2>"$tmp/multi.err"; rc=$?
[ $rc -eq 0 ] && [ "$(grep -c '^voxtral: backend' "$tmp/multi.err")" -eq 1 ] && cmp -s "$tmp/g.srt" "$tmp/want.srt" \
    && cmp -s "$tmp/h2.srt" "$tmp/want.srt" && [ "$(wc -l <"$tmp/multi.out")" -eq 2 ]
check "two inputs (-i and positional): one model load, a transcript line and an .srt each" $? "rc=$rc $(cat "$tmp/multi.err")"
$VOX -d "$M" -i "$tmp/g.wav" -i "$tmp/h2.flac" --force-tokens "$tmp/golden.ids" -ovtt -of "$tmp/out" --quiet >/dev/null
cmp -s "$tmp/out.1.vtt" "$tmp/want.vtt" && cmp -s "$tmp/out.2.vtt" "$tmp/want.vtt"
check "-of PREFIX with two inputs: PREFIX.1.vtt, PREFIX.2.vtt" $?
$VOX -d "$M" -i "$tmp/g.wav" -i "$tmp/missing.wav" --quiet >/dev/null 2>"$tmp/err"; rc=$?
[ $rc -eq 1 ] && grep -q "missing.wav: no such file" "$tmp/err"
check "a bad input among several: reported, the others transcribed, exit 1" $? "rc=$rc $(cat "$tmp/err")"
$VOX -d "$M" -i - --force-tokens "$tmp/golden.ids" -osrt -of - --quiet <samples/hello.flac >"$tmp/dash.srt"; rc=$?
[ $rc -eq 0 ] && cmp -s "$tmp/dash.srt" "$tmp/want.srt"
check "-i - (FLAC on stdin) with -osrt -of -: the SRT on stdout" $? "rc=$rc $(head -5 "$tmp/dash.srt")"
$VOX -d "$M" -i - </dev/null >/dev/null 2>"$tmp/err"; rc=$?
[ $rc -eq 1 ] && grep -q "no audio on stdin" "$tmp/err"
check "-i - with empty stdin: 'no audio on stdin', exit 1" $? "rc=$rc $(cat "$tmp/err")"

# progress: -pp draws one updating line on a terminal's stderr; none when stderr is a file
$PY - "$tmp/long.wav" <<'PY'
import sys, wave, array, math
x = array.array('h', (int(3000 * math.sin(i * 0.05)) for i in range(16000 * 70)))
o = wave.open(sys.argv[1], "wb"); o.setnchannels(1); o.setsampwidth(2); o.setframerate(16000); o.writeframes(x.tobytes()); o.close()
PY
script -qec "$VOX -d $M -i $tmp/long.wav -pp --quiet -nt" /dev/null >"$tmp/tty.out" 2>&1
grep -aEq $'\r\\[ *[0-9]+%\\] [0-9.]+ s of 70\\.0 s, [0-9.]+x real time, ETA [0-9]+:[0-9]{2}' "$tmp/tty.out"
check "-pp on a terminal: [NN%] X s of 70.0 s, speed, ETA" $? "$(head -c 300 "$tmp/tty.out" | od -c | head -5)"
script -qec "$VOX -d $M -i $tmp/long.wav -nt" /dev/null >"$tmp/tty2.out" 2>&1
grep -aq 'of 70.0 s' "$tmp/tty2.out"
check "progress by default when stderr is a terminal and the input is over a minute" $?
$VOX -d "$M" -i "$tmp/long.wav" >/dev/null 2>"$tmp/err"
! grep -aq $'\r' "$tmp/err" && ! grep -q ' of 70.0 s' "$tmp/err"
check "no progress bytes when stderr is a file" $? "$(head -c 200 "$tmp/err")"
$VOX -d "$M" -i "$tmp/long.wav" -pp >/dev/null 2>"$tmp/err"
grep -q ' of 70.0 s' "$tmp/err"
check "-pp asks for it when stderr is a file" $?

# the default model: $VOXTRAL_MODEL, and a clear line when there is none
VOXTRAL_MODEL=$M $VOX -i "$tmp/g.wav" >/dev/null 2>"$tmp/err"; rc=$?
[ $rc -eq 0 ] && grep -q "^voxtral: no -d: using \$VOXTRAL_MODEL, $M" "$tmp/err"
check "no -d: \$VOXTRAL_MODEL is used and stderr says so" $? "rc=$rc $(cat "$tmp/err")"
cp "$VOX" "$tmp/vox_alone"
env -u VOXTRAL_MODEL "$tmp/vox_alone" -i "$tmp/g.wav" >/dev/null 2>"$tmp/err"; rc=$?
[ $rc -eq 2 ] && grep -q "no model: pass -d DIR or set VOXTRAL_MODEL; get one with scripts/download_model.sh" "$tmp/err"
check "no -d, no \$VOXTRAL_MODEL, no samples/tiny-en beside the binary: says how to get a model (exit 2)" $? \
    "rc=$rc $(cat "$tmp/err")"
mkdir -p "$tmp/tree/samples" && cp -r "$M" "$tmp/tree/samples/tiny-en" && cp "$VOX" "$tmp/tree/voxtral"
env -u VOXTRAL_MODEL "$tmp/tree/voxtral" -i "$tmp/g.wav" >/dev/null 2>"$tmp/err"; rc=$?
[ $rc -eq 0 ] && grep -q "^voxtral: no -d: using the small English model in the source tree, .*samples/tiny-en" "$tmp/err"
check "no -d: samples/tiny-en beside the binary is the default" $? "rc=$rc $(cat "$tmp/err")"

# live input: each segment ends with a newline (the same segments as -ojson's)
$VOX -d "$M" --stdin -ojson -of "$tmp/live" --quiet <"$tmp/g.wav" >"$tmp/live.out"
$PY - "$tmp/live.json" "$tmp/live.out" <<'PY'
import json, sys
o = json.load(open(sys.argv[1]))
lines = open(sys.argv[2], encoding="utf-8").read().split("\n")
assert lines[-1] == "", lines
assert [l.strip() for l in lines[:-1]] == [s["text"].strip() for s in o["segments"]], (lines, o["segments"])
assert len(o["segments"]) >= 2, o["segments"]
PY
check "--stdin: one line per segment (as in its -ojson)" $?
