#!/usr/bin/env bash
# test_cli.sh - the command-line contract: flags, exit codes, one-line errors,
# plain/JSON output, --topk, --force-tokens, --delay, --stdin (raw and WAV),
# and the CUDA fallback message. Uses a tiny random model made on the fly.
set -u
cd "$(dirname "$0")/.."
VOX=${VOXTRAL:-./voxtral}
PY=/usr/bin/python3
. tests/testlib.sh
tiny_model 3
WAV=samples/hello.wav

# --help fits one screen and exits 0
out=$($VOX --help); rc=$?
lines=$(printf '%s\n' "$out" | wc -l)
[ $rc -eq 0 ] && [ "$lines" -le 24 ] && printf '%s' "$out" | grep -q -- '--force-tokens'
check "--help: exit 0, one screen ($lines lines), lists the flags" $?

# usage errors: exit 2 with one line on stderr
for args in "--bogus" "-d $M" "-d $M -i $WAV --stdin" "-d $M -i $WAV --delay 100" \
            "-d $M -i $WAV --delay 4000" "-d $M -i $WAV --backend tpu" "-d $M -i $WAV --topk 0" "-d"; do
    $VOX $args >/dev/null 2>"$tmp/err"; rc=$?
    n=$(wc -l <"$tmp/err")
    [ $rc -eq 2 ] && [ "$n" -eq 1 ] && grep -q '^voxtral: ' "$tmp/err"
    check "usage error '$args': exit 2, one line" $? "rc=$rc, $(head -c 200 "$tmp/err")"
done

# bad inputs: exit 1, one line naming the file
$VOX -d "$M" -i "$tmp/missing.wav" >/dev/null 2>"$tmp/err"; rc=$?
[ $rc -eq 1 ] && grep -q "missing.wav" "$tmp/err" && [ "$(wc -l <"$tmp/err")" -eq 1 ]
check "missing audio file: exit 1, names the file" $? "$(cat "$tmp/err")"
head -c 5000 /dev/urandom >"$tmp/garbage.wav"
$VOX -d "$M" -i "$tmp/garbage.wav" >/dev/null 2>"$tmp/err"; rc=$?
[ $rc -eq 1 ] && grep -q "garbage.wav" "$tmp/err"
check "garbage audio file: exit 1, names the file" $? "$(cat "$tmp/err")"
$VOX -d "$tmp/nomodel" -i "$WAV" >/dev/null 2>"$tmp/err"; rc=$?
[ $rc -eq 1 ] && grep -q "nomodel" "$tmp/err"
check "missing model dir: exit 1, names it" $? "$(cat "$tmp/err")"
echo "1 2 x" >"$tmp/bad_ids.txt"
$VOX -d "$M" -i "$WAV" --force-tokens "$tmp/bad_ids.txt" >/dev/null 2>"$tmp/err"; rc=$?
[ $rc -eq 1 ] && grep -q "bad_ids.txt" "$tmp/err"
check "malformed --force-tokens file: exit 1, names it" $? "$(cat "$tmp/err")"

# plain output: text then newline; stderr has backend and timing lines
$VOX -d "$M" -i "$WAV" >"$tmp/plain.txt" 2>"$tmp/err"; rc=$?
[ $rc -eq 0 ] && [ "$(tail -c 1 "$tmp/plain.txt" | od -An -c | tr -d ' ')" = '\n' ] \
    && grep -q "backend cpu" "$tmp/err" && grep -q "^timing: " "$tmp/err"
check "plain run: exit 0, newline-terminated, backend and timing on stderr" $? "rc=$rc $(cat "$tmp/err")"
$VOX -d "$M" -i "$WAV" --quiet >/dev/null 2>"$tmp/err"
! grep -v "falling back to the CPU" "$tmp/err" | grep -q .
check "--quiet: nothing on stderr but a CUDA fallback notice" $? "$(cat "$tmp/err")"

# JSON: parses, text/tokens/topk consistent
$VOX -d "$M" -i "$WAV" --json --topk 3 --quiet >"$tmp/a.json"; rc=$?
$PY - "$tmp/a.json" "$tmp/plain.txt" <<'EOF'
import json, sys
o = json.load(open(sys.argv[1]))
plain = open(sys.argv[2], encoding="utf-8", errors="replace").read().rstrip("\n")
assert set(o) >= {"text", "tokens", "topk"}, o.keys()
assert len(o["tokens"]) > 0
assert len(o["topk"]) == len(o["tokens"])
for tok, row in zip(o["tokens"], o["topk"]):
    assert len(row) == 3 and row[0][0] == tok, (tok, row)
    assert row[0][1] >= row[1][1] >= row[2][1]
assert o["text"] == plain, (o["text"], plain)
EOF
check "--json --topk 3: parses; topk[0] is the token; text equals plain mode" $?

# --force-tokens: the forced ids are fed, logits stay those of the model
$PY -c "import json;t=json.load(open('$tmp/a.json'))['tokens'];print(' '.join(str((x*7+1001)%1300) for x in t))" >"$tmp/forced.txt"
$VOX -d "$M" -i "$WAV" --json --topk 1 --force-tokens "$tmp/forced.txt" --quiet >"$tmp/f.json"; rc=$?
$PY - "$tmp/a.json" "$tmp/f.json" <<'EOF'
import json, sys
a, f = json.load(open(sys.argv[1])), json.load(open(sys.argv[2]))
assert len(f["tokens"]) == len(a["tokens"]), (len(f["tokens"]), len(a["tokens"]))
assert f["tokens"][0] == a["tokens"][0]          # the prompt is not forced
assert f["tokens"] != a["tokens"]                # forcing changed what followed
EOF
py=$?
[ $rc -eq 0 ] && [ $py -eq 0 ]
check "--force-tokens: same length, first id unchanged, later ids follow the forced history" $?

# --delay changes the schedule: prompt 1+32+D, T-L ids at most
$VOX -d "$M" -i "$WAV" --json --delay 160 --quiet >"$tmp/d.json"; rc=$?
$PY - "$tmp/a.json" "$tmp/d.json" "$WAV" <<'EOF'
import json, sys, wave, math
a, d = json.load(open(sys.argv[1])), json.load(open(sys.argv[2]))
n = wave.open(sys.argv[3]).getnframes()
def bound(D): T = 32 + math.ceil(n / 1280) + D + 11; return T - (1 + 32 + D)
assert len(a["tokens"]) <= bound(6) and len(d["tokens"]) <= bound(2)
assert 2 in a["tokens"] or len(a["tokens"]) == bound(6)
assert 2 in d["tokens"] or len(d["tokens"]) == bound(2)
EOF
check "--delay 160 vs 480: id counts follow T - L (or stop at EOS)" $?

# --stdin: raw s16le and WAV give the ids of -i
$PY - "$WAV" "$tmp/raw.s16" <<'EOF'
import sys, wave
w = wave.open(sys.argv[1]); open(sys.argv[2], "wb").write(w.readframes(w.getnframes()))
EOF
$VOX -d "$M" --stdin --json --quiet <"$tmp/raw.s16" >"$tmp/raw.json"
cat "$WAV" | $VOX -d "$M" --stdin --json --quiet >"$tmp/wavin.json"
$PY - "$tmp/a.json" "$tmp/raw.json" "$tmp/wavin.json" <<'EOF'
import json, sys
a, r, w = (json.load(open(p))["tokens"] for p in sys.argv[1:4])
assert a == r, "raw stdin differs"
assert a == w, "wav stdin differs"
EOF
check "--stdin raw s16le and WAV: same ids as -i" $?
head -c 4001 "$tmp/raw.s16" | $VOX -d "$M" --stdin --quiet >/dev/null 2>"$tmp/err"
check "--stdin: odd byte count (EOF mid-sample) is fine" $? "$(cat "$tmp/err")"

# backend choice: cuda without a usable device fails with a reason; auto says CPU
if ! "$VOX" -d "$M" -i "$WAV" --backend cuda >/dev/null 2>"$tmp/err"; then
    grep -q -i "cuda" "$tmp/err" && [ "$(wc -l <"$tmp/err")" -eq 1 ]
    check "--backend cuda without a device: one-line reason" $? "$(cat "$tmp/err")"
    $VOX -d "$M" -i "$WAV" --backend auto >/dev/null 2>"$tmp/err"
    grep -q "backend cpu" "$tmp/err"
    check "--backend auto without a device: runs on the CPU and says so" $? "$(cat "$tmp/err")"
else
    echo "ok - --backend cuda: a CUDA device is present (fallback checks skipped)"
fi

# SIGINT while reading live input: finish, flush what was heard, exit 0
mkfifo "$tmp/fifo"
$VOX -d "$M" --stdin --json --quiet <"$tmp/fifo" >"$tmp/int.json" 2>"$tmp/int.err" &
pid=$!
exec 3>"$tmp/fifo"
cat "$tmp/raw.s16" >&3
sleep 1
kill -INT $pid
wait $pid; rc=$?
exec 3>&-
$PY -c "import json,sys; o=json.load(open('$tmp/int.json')); sys.exit(0 if len(o['tokens'])>0 else 1)"
py=$?
[ $rc -eq 0 ] && [ $py -eq 0 ]
check "SIGINT on --stdin: exit 0, text so far flushed" $? "rc=$rc $(cat "$tmp/int.err")"

# a closed stdout (| head) ends quietly
$PY - "$WAV" "$tmp/long.wav" <<'PY'
import sys, wave
w = wave.open(sys.argv[1]); p = w.getparams(); d = w.readframes(w.getnframes())
o = wave.open(sys.argv[2], "wb"); o.setparams(p); o.writeframes(d * 6); o.close()
PY
$VOX -d "$M" -i "$tmp/long.wav" --quiet 2>"$tmp/pipe.err" | head -c 1 >/dev/null
rc=${PIPESTATUS[0]}
[ $rc -eq 0 ] && ! grep -v "falling back to the CPU" "$tmp/pipe.err" | grep -q "^voxtral: "
check "stdout closed early (| head -c 1): exit 0, no error" $? "rc=$rc $(cat "$tmp/pipe.err")"

# WAV on stdin with an unsupported format: one clear line, exit 1
$PY - "$tmp/s8.wav" <<'PY'
import sys, wave
o = wave.open(sys.argv[1], "wb"); o.setnchannels(1); o.setsampwidth(1); o.setframerate(16000); o.writeframes(bytes(16000)); o.close()
PY
$VOX -d "$M" --stdin --quiet <"$tmp/s8.wav" >/dev/null 2>"$tmp/err"; rc=$?
[ $rc -eq 1 ] && grep -q "stdin: WAV" "$tmp/err"
check "--stdin: 8-bit WAV is refused with a clear message" $? "rc=$rc $(cat "$tmp/err")"
head -c 3000 /dev/urandom | $VOX -d "$M" --stdin --quiet >/dev/null 2>"$tmp/err"; rc=$?
[ $rc -eq 0 ]
check "--stdin: garbage is taken as raw audio and does not crash" $? "rc=$rc $(cat "$tmp/err")"
head -c 30 "$WAV" | $VOX -d "$M" --stdin --quiet >/dev/null 2>"$tmp/err"; rc=$?
[ $rc -eq 1 ] && grep -q "stdin: WAV .*truncated" "$tmp/err"
check "--stdin: a truncated WAV header is a clear error" $? "rc=$rc $(cat "$tmp/err")"
