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
# wait_handler PID: until PID catches SIGINT (a background job starts with SIGINT
# ignored, so a signal sent before voxtral installs its handler would be lost)
wait_handler() {
    local i
    for i in $(seq 200); do
        local cgt=$(awk '/^SigCgt:/ { print $2 }' /proc/$1/status 2>/dev/null)
        # past the fork (no longer this shell) and with SIGINT caught
        [ "$(readlink /proc/$1/exe)" != "$(readlink /proc/$$/exe)" ] && [ -n "$cgt" ] \
            && [ $(( 0x$cgt & 2 )) -ne 0 ] && return 0
        sleep 0.05
    done
    return 1
}

# --help fits one 80x24 screen and exits 0; --help all lists every flag; --version
out=$($VOX --help); rc=$?
lines=$(printf '%s\n' "$out" | wc -l)
wide=$(printf '%s\n' "$out" | awk '{ if (length($0) > w) w = length($0) } END { print w + 0 }')
[ $rc -eq 0 ] && [ "$lines" -le 24 ] && [ "$wide" -le 80 ] && printf '%s' "$out" | grep -q -- '--stdin'
check "--help: exit 0, fits 80x24 ($lines lines, $wide columns)" $?
out=$($VOX --help all); rc=$?
wide=$(printf '%s\n' "$out" | awk '{ if (length($0) > w) w = length($0) } END { print w + 0 }')
[ $rc -eq 0 ] && [ "$wide" -le 80 ] && for f in --force-tokens --topk --gpu-path --bench -I --device --version; do
    printf '%s' "$out" | grep -q -- " $f" || exit 1; done
check "--help all: every flag, 80 columns" $?
out=$($VOX --version); rc=$?
[ $rc -eq 0 ] && printf '%s' "$out" | grep -Eq '^voxtral [0-9]+\.[0-9]+\.[0-9]+ \((CPU|CPU and CUDA) backend'
check "--version: exit 0, version and backends" $? "$out"

# usage errors: exit 2 with one line on stderr
for args in "--bogus" "-d $M" "-d $M -i $WAV --stdin" "-d $M -i $WAV --delay 100" \
            "-d $M -i $WAV --delay 4000" "-d $M -i $WAV --backend tpu" "-d $M -i $WAV --topk 0" "-d" "-d $M -i $WAV --topk 3"; do
    $VOX $args >/dev/null 2>"$tmp/err"; rc=$?
    n=$(wc -l <"$tmp/err")
    [ $rc -eq 2 ] && [ "$n" -eq 1 ] && grep -q '^voxtral: ' "$tmp/err"
    check "usage error '$args': exit 2, one line" $? "rc=$rc, $(head -c 200 "$tmp/err")"
done

# bad inputs: exit 1, one line naming the file and saying what is wrong
one_line_error() { # one_line_error NAME PATTERN ARGS...: exit 1, one stderr line matching, nothing on stdout
    local name=$1 pat=$2; shift 2
    $VOX "$@" >"$tmp/out" 2>"$tmp/err"; local rc=$?
    [ $rc -eq 1 ] && [ "$(wc -l <"$tmp/err")" -eq 1 ] && grep -q -- "$pat" "$tmp/err" && [ ! -s "$tmp/out" ]
    check "$name" $? "rc=$rc $(head -c 300 "$tmp/err") stdout: $(head -c 100 "$tmp/out")"
}
one_line_error "-i missing file: 'no such file', names it" "missing.wav: no such file" -d "$M" -i "$tmp/missing.wav"
mkdir "$tmp/adir"
one_line_error "-i a directory: 'is a directory'" "adir: is a directory" -d "$M" -i "$tmp/adir"
: >"$tmp/empty.wav"
one_line_error "-i a 0-byte file: 'empty file'" "empty.wav: empty file" -d "$M" -i "$tmp/empty.wav"
printf '\0\0\0\040ftypM4A \0\0\0\0M4A mp42isom' >"$tmp/a.m4a"; head -c 3000 /dev/urandom >>"$tmp/a.m4a"
one_line_error "-i an M4A file: names it, suggests ffmpeg" "MP4/M4A .*ffmpeg -loglevel error -i .*a.m4a" -d "$M" -i "$tmp/a.m4a"
head -c 3000 /dev/urandom >"$tmp/b.webm"
one_line_error "-i a .webm file: suggests ffmpeg" "webm .*ffmpeg" -d "$M" -i "$tmp/b.webm"
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
[ ! -s "$tmp/err" ]
check "--quiet: nothing on stderr (not even the CUDA fallback line)" $? "$(cat "$tmp/err")"

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
wait_handler $pid
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

# --stdin refuses containers and text with the ffmpeg line; empty input says so
for kind in "MP3:ID3\x04\x00\x00\x00\x00\x00\x00" "FLAC:fLaC\x00\x00\x00\x22" "Ogg:OggS\x00\x02" \
            "MP4/M4A:\x00\x00\x00\x20ftypM4A \x00\x00\x00\x00" "WebM/Matroska:\x1a\x45\xdf\xa3\x01\x00" \
            "text:hello, this is not audio\n"; do
    name=${kind%%:*}
    { printf "${kind#*:}"; [ "$name" = text ] || head -c 3000 /dev/urandom; } >"$tmp/sig.bin"
    $VOX -d "$M" --stdin <"$tmp/sig.bin" >"$tmp/out" 2>"$tmp/err"; rc=$?
    [ $rc -eq 1 ] && [ "$(wc -l <"$tmp/err")" -eq 1 ] && grep -q "stdin: this is $name.*ffmpeg -loglevel error" "$tmp/err" \
        && [ ! -s "$tmp/out" ]
    check "--stdin: $name refused with the ffmpeg line, only the error printed" $? "rc=$rc $(cat "$tmp/err" "$tmp/out" | head -c 300)"
done
# a real MP3 frame run (MPEG-1 layer III, 128 kb/s, 44.1 kHz: 417-byte frames) without ID3
$PY -c "import sys; f = b'\xff\xfb\x90\x00' + bytes(413); sys.stdout.buffer.write(f * 6)" >"$tmp/frames.mp3"
$VOX -d "$M" --stdin <"$tmp/frames.mp3" >/dev/null 2>"$tmp/err"; rc=$?
[ $rc -eq 1 ] && grep -q "stdin: this is MP3" "$tmp/err"
check "--stdin: MP3 frames without an ID3 tag are recognised" $? "rc=$rc $(cat "$tmp/err")"
$VOX -d "$M" --stdin </dev/null >"$tmp/out" 2>"$tmp/err"; rc=$?
[ $rc -eq 1 ] && [ "$(cat "$tmp/err")" = "voxtral: no audio on stdin (it is empty)" ] && [ ! -s "$tmp/out" ]
check "--stdin: empty input: 'no audio on stdin', exit 1, nothing on stdout" $? "rc=$rc $(cat "$tmp/err")"

# --stdin: a 44.1 kHz stereo WAV is resampled (streaming) like -i resamples it
$PY - "$WAV" "$tmp/s44.wav" <<'PY'
import sys, wave, array
w = wave.open(sys.argv[1]); x = array.array('h', w.readframes(w.getnframes()))
n = len(x) * 44100 // 16000
y = array.array('h', (x[min(len(x) - 1, i * 16000 // 44100)] for i in range(n) for _ in (0, 1)))
o = wave.open(sys.argv[2], "wb"); o.setnchannels(2); o.setsampwidth(2); o.setframerate(44100); o.writeframes(y.tobytes()); o.close()
PY
$VOX -d "$M" -i "$tmp/s44.wav" --json --quiet >"$tmp/s44i.json"
$VOX -d "$M" --stdin --json --quiet <"$tmp/s44.wav" >"$tmp/s44s.json" 2>"$tmp/err"; rc=$?
$PY - "$tmp/s44i.json" "$tmp/s44s.json" <<'PY'
import json, sys
a, b = (json.load(open(p)) for p in sys.argv[1:3])
assert abs(a["stats"]["audio_s"] - b["stats"]["audio_s"]) < 0.01, (a["stats"]["audio_s"], b["stats"]["audio_s"])
assert len(b["tokens"]) > 0
PY
py=$?
[ $rc -eq 0 ] && [ $py -eq 0 ]
check "--stdin: 44.1 kHz stereo WAV resampled to the model's rate (same audio length as -i)" $? "rc=$rc $(cat "$tmp/err")"

# --stdin: Ctrl-C before or inside the WAV header is not an error
for part in 0 20; do
    rm -f "$tmp/hfifo"; mkfifo "$tmp/hfifo"
    $VOX -d "$M" --stdin --quiet <"$tmp/hfifo" >"$tmp/out" 2>"$tmp/err" &
    pid=$!
    exec 3>"$tmp/hfifo"
    head -c $part "$WAV" >&3
    wait_handler $pid
    sleep 0.3
    kill -INT $pid
    wait $pid; rc=$?
    exec 3>&-
    [ $rc -eq 0 ] && [ ! -s "$tmp/err" ]
    check "--stdin: Ctrl-C after $part header bytes: exit 0, no error" $? "rc=$rc $(cat "$tmp/err")"
done

# Ctrl-C during -i on a long input: stops within a second, text so far, exit 130
/usr/bin/python3 scripts/make_random_model.py --preset small --seed 3 --out "$tmp/small" >/dev/null 2>&1
$PY - "$tmp/long300.wav" <<'PY'
import sys, wave, array, math
x = array.array('h', (int(3000 * math.sin(i * 0.05) + 700 * math.sin(i * 0.0031)) for i in range(16000 * 60)))
o = wave.open(sys.argv[1], "wb"); o.setnchannels(1); o.setsampwidth(2); o.setframerate(16000); o.writeframes(x.tobytes() * 5); o.close()
PY
$PY -c "print(' '.join(['1100'] * 4000))" >"$tmp/keep_going.txt" # no EOS: decodes the whole file
for mode in plain json; do
    extra=; [ $mode = json ] && extra=--json
    load=$(cut -d' ' -f1 /proc/loadavg)
    $VOX -d "$tmp/small" -i "$tmp/long300.wav" -t 1 --force-tokens "$tmp/keep_going.txt" $extra >"$tmp/int.out" 2>"$tmp/int.err" &
    pid=$!
    wait_handler $pid
    sleep 2.5
    env_policy=$(tr '\0' '\n' </proc/$pid/environ 2>/dev/null | grep -E '^(OMP_WAIT_POLICY|GOMP_SPINCOUNT)=' | tr '\n' ' ')
    t0=$(date +%s%N)
    kill -INT $pid
    wait $pid; rc=$?
    ms=$(( ($(date +%s%N) - t0) / 1000000 ))
    [ $rc -eq 130 ] && [ $ms -lt 1500 ] && grep -Eq '^voxtral: interrupted at [0-9]+\.[0-9] s of 300\.0 s$' "$tmp/int.err"
    check "Ctrl-C during -i ($mode): exit 130 after $ms ms, 'interrupted at X s of 300.0 s'" $? "rc=$rc $(cat "$tmp/int.err")"
    if [ $mode = plain ]; then
        [ -s "$tmp/int.out" ] && [ "$(tail -c 1 "$tmp/int.out" | od -An -c | tr -d ' ')" = '\n' ]
        check "Ctrl-C during -i: the text so far is printed, newline-terminated" $?
        # the rule (cli/main.c): 1-minute load average below 0.5 at start -> a bounded spin,
        # else a passive wait; near the threshold the load may have moved: either
        want=$(awk -v l="$load" 'BEGIN { print (l < 0.4) ? "GOMP_SPINCOUNT=10000 " : (l >= 0.6) ? "OMP_WAIT_POLICY=passive " : "either" }')
        [ "$env_policy" = "$want" ] || { [ "$want" = either ] && case $env_policy in "GOMP_SPINCOUNT=10000 "|"OMP_WAIT_POLICY=passive ") true ;; *) false ;; esac; }
        check "wait policy by load (load $load): $env_policy" $? "want $want"
    else
        $PY -c "import json,sys; o=json.load(open('$tmp/int.out')); assert len(o['tokens']) > 10 and o['error'].startswith('interrupted at')"
        check "Ctrl-C during -i --json: the object so far, with the interruption in 'error'" $? "$(head -c 300 "$tmp/int.out")"
    fi
done
OMP_WAIT_POLICY=active $VOX -d "$tmp/small" -i "$tmp/long300.wav" -t 1 --force-tokens "$tmp/keep_going.txt" >/dev/null 2>&1 &
pid=$!
wait_handler $pid
sleep 1
env_policy=$(tr '\0' '\n' </proc/$pid/environ 2>/dev/null | grep '^OMP_WAIT_POLICY=')
t0=$(date +%s%N)
kill -INT $pid; kill -INT $pid
wait $pid; rc=$?
ms=$(( ($(date +%s%N) - t0) / 1000000 ))
[ "$env_policy" = "OMP_WAIT_POLICY=active" ]
check "the user's OMP_WAIT_POLICY is kept" $? "$env_policy"
[ $rc -eq 130 ] && [ $ms -lt 1000 ]
check "two Ctrl-C during -i: exit 130 at once ($ms ms)" $? "rc=$rc"

# lost output: a failed write is an error (exit 1), unlike a closed pipe
for extra in "" "--json"; do
    $VOX -d "$M" -i "$WAV" $extra >/dev/full 2>"$tmp/err"; rc=$?
    [ $rc -eq 1 ] && grep -q "^voxtral: stdout: No space left on device" "$tmp/err"
    check "stdout on a full disk (/dev/full${extra:+, $extra}): exit 1, says so" $? "rc=$rc $(cat "$tmp/err")"
done

# --force-tokens ids are range-checked (4294967298 must not wrap to 2 = EOS)
echo "1100 4294967298 1100" >"$tmp/wrap.txt"
one_line_error "--force-tokens: an id past 2^31 is refused, not wrapped" "wrap.txt: token #2 '4294967298' is not an id" \
    -d "$M" -i "$WAV" --force-tokens "$tmp/wrap.txt"
echo "1100 -3" >"$tmp/neg.txt"
one_line_error "--force-tokens: a negative id is refused" "neg.txt: token #2 '-3' is not an id" -d "$M" -i "$WAV" --force-tokens "$tmp/neg.txt"

# a CUDA build on a machine without an NVIDIA driver says that (not "driver version is
# insufficient"), once, and --quiet silences it
if $VOX --version | grep -q "CPU and CUDA" && ! /sbin/ldconfig -p 2>/dev/null | grep -q 'libcuda\.so\.1 '; then
    $VOX -d "$M" -i "$WAV" >/dev/null 2>"$tmp/err"
    grep -qx "voxtral: CUDA backend unavailable: no NVIDIA driver found (libcuda.so.1); falling back to the CPU" "$tmp/err" \
        && ! grep -qi insufficient "$tmp/err"
    check "CUDA build, no driver: 'no NVIDIA driver found (libcuda.so.1)'" $? "$(cat "$tmp/err")"
    $VOX -d "$M" -i "$WAV" --backend cuda >/dev/null 2>"$tmp/err"
    grep -qx "voxtral: cuda: no NVIDIA driver found (libcuda.so.1)" "$tmp/err"
    check "CUDA build, no driver, --backend cuda: the same reason, exit 1" $? "$(cat "$tmp/err")"
else
    echo "ok - CUDA fallback wording: not a CUDA build without a driver (skipped)"
fi

# --quantize OUT_DIR needs no input: it writes the model directory, which then loads
# without --quant and transcribes exactly as --quant at load does
rm -rf "$tmp/q8"
$VOX -d "$M" --quant q8 --quantize "$tmp/q8" >"$tmp/out" 2>"$tmp/err"; rc=$?
[ $rc -eq 0 ] && [ -f "$tmp/q8/consolidated.safetensors" ] && [ -f "$tmp/q8/params.json" ]
check "--quantize without an input: exit 0, a model directory" $? "rc $rc: $(head -2 "$tmp/err")"
a=$($VOX -d "$M" --quant q8 -i $WAV --backend cpu --json --quiet 2>/dev/null | $PY -c 'import json,sys; print(json.load(sys.stdin)["tokens"])')
b=$($VOX -d "$tmp/q8" -i $WAV --backend cpu --json --quiet 2>/dev/null | $PY -c 'import json,sys; print(json.load(sys.stdin)["tokens"])')
[ -n "$a" ] && [ "$a" = "$b" ]
check "the written q8 model gives the ids of --quant q8 at load" $? "$a / $b"

# --kv-window N: the plan --check prints and the runs use it (the tiny model's own window
# is 16); a window longer than the model's is the model's; 0 is a usage error
$VOX --check -d "$M" --kv-window 8 2>&1 | grep -q "decoder window 8 + prompt" &&
    $VOX --check -d "$M" --kv-window 4000 2>&1 | grep -q "decoder window 16 + prompt"
check "--check --kv-window 8 / 4000: the plan at window 8 / the model's 16" $?
a=$($VOX -d "$M" -i $WAV --backend cpu --json --quiet 2>/dev/null | $PY -c 'import json,sys; print(json.load(sys.stdin)["tokens"])')
b=$($VOX -d "$M" -i $WAV --backend cpu --json --quiet --kv-window 4000 2>/dev/null | $PY -c 'import json,sys; print(json.load(sys.stdin)["tokens"])')
[ -n "$a" ] && [ "$a" = "$b" ]
check "--kv-window longer than the model's window: the same ids" $?
$VOX -d "$M" -i $WAV --kv-window 0 >/dev/null 2>"$tmp/err"; rc=$?
[ $rc -eq 2 ] && grep -q -- "--kv-window 0: must be" "$tmp/err"
check "--kv-window 0: usage error, exit 2" $? "rc $rc: $(cat "$tmp/err")"
# --kv-dtype: bf16 runs (ids may differ from f32's: only that it transcribes is asserted),
# anything else is a usage error naming it
c=$($VOX -d "$M" -i $WAV --backend cpu --json --quiet --kv-dtype bf16 2>/dev/null | $PY -c 'import json,sys; print(len(json.load(sys.stdin)["tokens"]))')
[ -n "$c" ] && [ "$c" -gt 0 ]
check "--kv-dtype bf16: a transcription ($c ids)" $?
$VOX -d "$M" -i $WAV --kv-dtype f16 >/dev/null 2>"$tmp/err"; rc=$?
[ $rc -eq 2 ] && grep -q -- "--kv-dtype f16: use f32 or bf16" "$tmp/err"
check "--kv-dtype f16: usage error, exit 2" $? "rc $rc: $(cat "$tmp/err")"
