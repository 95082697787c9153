#!/usr/bin/env bash
# test_mic.sh - `voxtral --mic` for real: a private PulseAudio server with a null
# sink (44.1 kHz stereo); samples/hello_44k_stereo.wav is played into it with paplay
# and its monitor is the microphone (ALSA "default" -> pulse plugin -> PortAudio).
# Checks: --list-devices, --device errors, the transcript of the capture equals an
# offline run of the captured samples (VOX_MIC_DUMP) and the capture holds the file
# (band-limited, sub-sample aligned, > 40 dB SNR), falling behind real time (the
# main thread stalled on a FIFO) drops audio with one message, a sound server
# killed mid-capture (error, text so far flushed, exit 1), and no server / no ALSA
# config at all (one clear line, no abort, no ALSA noise).
# Needs pulseaudio, pulseaudio-utils and libasound2-plugins; skipped without them.
set -u
cd "$(dirname "$0")/.."
VOX=${VOXTRAL:-./voxtral}
# under ASan (make asan-test): ALSA's plugins, dlopen'ed and unloaded, leave their
# configuration cache behind (LeakSanitizer cannot even name the module): no leak check
export ASAN_OPTIONS=${ASAN_OPTIONS:+$ASAN_OPTIONS:}detect_leaks=0
PY=/usr/bin/python3
WAV44=samples/hello_44k_stereo.wav
REF16=samples/hello.wav
ok() { echo "ok - $1"; }
nok() { echo "not ok - $1${2:+: $2}"; }
check() { if [ "$2" -eq 0 ]; then ok "$1"; else nok "$1" "${3:-}"; fi; }
skip() { echo "ok - mic test skipped: $1"; exit 0; }

# a build without PortAudio: --mic explains how to get it, nothing else to test
nomic=$($VOX --list-devices 2>&1 >/dev/null); rc=$?
if printf '%s' "$nomic" | grep -q "built without PortAudio"; then
    [ $rc -eq 1 ] && printf '%s' "$nomic" | grep -q "portaudio19-dev"
    check "built without PortAudio: --list-devices exits 1 and names portaudio19-dev" $? "rc=$rc $nomic"
    skip "built without PortAudio"
fi
for c in pulseaudio paplay pactl; do
    command -v $c >/dev/null || skip "$c not installed (apt-get install pulseaudio pulseaudio-utils)"
done
ls /usr/lib/*/alsa-lib/libasound_module_pcm_pulse.so >/dev/null 2>&1 || skip "ALSA pulse plugin not installed (apt-get install libasound2-plugins)"

tmp=$(mktemp -d)
pa_pid=""
cleanup() {
    [ -n "$pa_pid" ] && kill "$pa_pid" 2>/dev/null
    rm -rf "$tmp"
}
trap cleanup EXIT
mkdir -p "$tmp/home" "$tmp/run"
chmod 700 "$tmp/run"
# everything audio lives under $tmp: the server, its socket, the clients' config
export HOME=$tmp/home XDG_RUNTIME_DIR=$tmp/run PULSE_SERVER=unix:$tmp/run/native
export PULSE_CLIENTCONFIG=$tmp/client.conf
unset PULSE_SINK PULSE_SOURCE ALSA_CONFIG_PATH
echo "autospawn = no" >"$PULSE_CLIENTCONFIG"
printf 'pcm.!default { type pulse }\nctl.!default { type pulse }\n' >"$HOME/.asoundrc"
pulseaudio --daemonize=no --exit-idle-time=-1 -n --use-pid-file=no --disallow-exit \
    --load="module-null-sink sink_name=vox rate=44100 channels=2 format=s16le" \
    --load="module-native-protocol-unix socket=$tmp/run/native auth-anonymous=1" \
    >"$tmp/pulse.log" 2>&1 &
pa_pid=$!
for _ in $(seq 50); do pactl info >/dev/null 2>&1 && break; kill -0 $pa_pid 2>/dev/null || break; sleep 0.1; done
pactl info >/dev/null 2>&1 || skip "pulseaudio cannot start: $(grep -m1 '^E:' "$tmp/pulse.log")"
pactl set-default-source vox.monitor

M=$tmp/model
$PY scripts/make_random_model.py --preset tiny --seed 3 --out "$M" >/dev/null 2>&1
check "make a tiny random model" $?

# starts `voxtral ... --mic` in the background (pid in $vox_pid) and waits until
# it captures; usage: start_mic OUT ERR ARGS...
start_mic() {
    local out=$1 err=$2
    shift 2
    $VOX -d "$M" --backend cpu --mic "$@" >"$out" 2>"$err" &
    vox_pid=$!
    for _ in $(seq 150); do
        grep -q "^voxtral: mic: .* Hz mono" "$err" && { sleep 0.5; return 0; }
        kill -0 $vox_pid 2>/dev/null || return 1
        sleep 0.1
    done
    return 1
}
# waits up to $2 seconds for pid $1 to exit by itself; its status in $rc (124: killed)
wait_for() {
    for _ in $(seq $(( $2 * 10 ))); do kill -0 "$1" 2>/dev/null || break; sleep 0.1; done
    if kill -0 "$1" 2>/dev/null; then kill -KILL "$1"; wait "$1"; rc=124; else wait "$1"; rc=$?; fi
}
# float32 16 kHz mono samples (VOX_MIC_DUMP) -> a WAV that --stdin reads
f32_to_wav() {
    $PY - "$1" "$2" <<'EOF'
import struct, sys
d = open(sys.argv[1], "rb").read()
f = open(sys.argv[2], "wb")
f.write(b"RIFF" + struct.pack("<I", 36 + len(d)) + b"WAVEfmt " + struct.pack("<IHHIIHH", 16, 3, 1, 16000, 64000, 4, 32))
f.write(b"data" + struct.pack("<I", len(d)) + d)
EOF
}
only_ours() { ! grep -v -E "^(voxtral: |timing: )" "$1" | grep -q .; } # no ALSA/JACK/PortAudio noise

# --list-devices: the pulse and default devices, default marked
$VOX --list-devices >"$tmp/list.txt" 2>"$tmp/err"; rc=$?
[ $rc -eq 0 ] && grep -q -E '^\* +[0-9]+ +default ' "$tmp/list.txt" && grep -q -E '^  +[0-9]+ +pulse ' "$tmp/list.txt" \
    && ! grep -q . "$tmp/err"
check "--list-devices: lists pulse and default (*), stderr quiet" $? "rc=$rc $(cat "$tmp/list.txt" "$tmp/err")"
default_n=$(awk '$1 == "*" && $3 == "default" { print $2 }' "$tmp/list.txt")

# --device that does not exist: one line, exit 1
$VOX -d "$M" --backend cpu --mic --device nonexistent --quiet >/dev/null 2>"$tmp/err"; rc=$?
[ $rc -eq 1 ] && [ "$(wc -l <"$tmp/err")" -eq 1 ] && grep -q "^voxtral: mic: --device nonexistent: " "$tmp/err"
check "--device nonexistent: exit 1, one line" $? "rc=$rc $(cat "$tmp/err")"
$VOX -d "$M" --backend cpu --mic --device 999 --quiet >/dev/null 2>"$tmp/err"; rc=$?
[ $rc -eq 1 ] && [ "$(wc -l <"$tmp/err")" -eq 1 ] && grep -q "no input device has that number" "$tmp/err"
check "--device 999: exit 1, one line" $? "rc=$rc $(cat "$tmp/err")"

# live: play the file into the sink, capture the monitor, SIGINT
VOX_MIC_DUMP=$tmp/cap.f32 start_mic "$tmp/mic.json" "$tmp/mic.err" --json; started=$?
paplay "$WAV44"; played=$?
sleep 1.5
kill -INT $vox_pid
wait_for $vox_pid 20
[ $started -eq 0 ] && [ $played -eq 0 ] && [ $rc -eq 0 ] && only_ours "$tmp/mic.err"
check "--mic: captures while paplay plays, exit 0 on SIGINT, no audio-stack noise" $? \
    "started=$started played=$played rc=$rc $(cat "$tmp/mic.err")"
f32_to_wav "$tmp/cap.f32" "$tmp/cap.wav"
$VOX -d "$M" --stdin --json --quiet <"$tmp/cap.wav" >"$tmp/off.json"
$PY - "$tmp/mic.json" "$tmp/off.json" <<'EOF'
import json, sys
a, b = (json.load(open(p)) for p in sys.argv[1:3])
assert len(a["tokens"]) > 20, a
assert a["tokens"] == b["tokens"], (a["tokens"], b["tokens"])
EOF
check "--mic transcript ids == offline ids of the captured samples" $?
$PY - "$tmp/cap.f32" "$REF16" <<'EOF'
# The capture is hello_44k_stereo.wav resampled by libsoxr; hello.wav is the same
# speech resampled by sox. Their speech (the file's silent ends trimmed: the sound
# server may already have rendered some of the leading silence when paplay came),
# aligned to a fraction of a sample by a band-limited shift, must agree to > 40 dB;
# the capture must be silent elsewhere.
import sys, wave
import numpy as np
cap = np.fromfile(sys.argv[1], dtype="<f4").astype(np.float64)
w = wave.open(sys.argv[2])
ref = np.frombuffer(w.readframes(w.getnframes()), "<i2") / 32768.0
speech = np.nonzero(ref)[0]
ref = ref[speech[0]:speech[-1] + 1]
assert len(cap) > len(ref), (len(cap), len(ref))
n = 1 << int(np.ceil(np.log2(len(cap) + len(ref))))
C, R = np.fft.rfft(cap, n), np.fft.rfft(ref, n)
lag = int(np.argmax(np.fft.irfft(C * np.conj(R), n)[: len(cap) - len(ref) + 1]))
f = np.fft.rfftfreq(n)
snr = max(
    10 * np.log10(np.sum(ref**2) / np.sum((np.fft.irfft(C * np.exp(2j * np.pi * f * (lag + d)), n)[: len(ref)] - ref) ** 2))
    for d in np.linspace(-0.5, 0.5, 41))
rest = np.r_[cap[:lag], cap[lag + len(ref):]]
print("# the played speech is at %.3f s of the capture, SNR %.1f dB; elsewhere max %.1e" % (lag / 16000, snr, np.abs(rest).max()))
assert snr > 40 and np.abs(rest).max() < 1e-3
EOF
check "the capture holds the played file (sub-sample aligned, > 40 dB SNR), silence elsewhere" $?

# falling behind: the main thread stalls 9 s writing VOX_MIC_DUMP to a FIFO nobody
# reads yet; the callback keeps capturing, the oldest audio is dropped, one message
mkfifo "$tmp/fifo"
(sleep 9; cat >"$tmp/slow.f32") <"$tmp/fifo" &
reader=$!
VOX_MIC_DUMP=$tmp/fifo start_mic "$tmp/slow.json" "$tmp/slow.err" --json --device "$default_n"; started=$?
sleep 10.5
kill -INT $vox_pid
wait_for $vox_pid 20
wait $reader
f32_to_wav "$tmp/slow.f32" "$tmp/slow.wav"
dropped=$(sed -n 's/.*caught up (\([0-9.]*\) s of audio dropped).*/\1/p' "$tmp/slow.err")
[ $started -eq 0 ] && [ $rc -eq 0 ] && [ "$(grep -c "falling behind real time" "$tmp/slow.err")" -eq 1 ] \
    && $PY -c "import sys; sys.exit(not 2.5 <= float('${dropped:-0}') <= 9)" && only_ours "$tmp/slow.err"
check "engine stalled 9 s: one 'falling behind' message, then caught up having dropped ${dropped:-?} s, exit 0" $? \
    "started=$started rc=$rc $(cat "$tmp/slow.err")"
$VOX -d "$M" --stdin --json --quiet <"$tmp/slow.wav" >"$tmp/slow_off.json"
$PY -c "import json,sys; a,b=(json.load(open(p)) for p in sys.argv[1:3]); sys.exit(a['tokens']!=b['tokens'])" \
    "$tmp/slow.json" "$tmp/slow_off.json"
check "after dropping audio, --mic ids == offline ids of what was fed" $?

# the sound server dies mid-capture: error on stderr, text so far on stdout, exit 1
start_mic "$tmp/kill.json" "$tmp/kill.err" --json --device pulse; started=$?
paplay "$WAV44" 2>/dev/null &
sleep 2.5
{ kill -KILL $pa_pid; wait $pa_pid; } 2>/dev/null
pa_pid=""
wait_for $vox_pid 10
$PY -c "import json,sys; o=json.load(open('$tmp/kill.json')); sys.exit(not (o['tokens'] and 'pulse' in o['error']))"
py=$?
[ $started -eq 0 ] && [ $rc -eq 1 ] && [ $py -eq 0 ] && grep -q "^voxtral: mic: pulse: " "$tmp/kill.err" \
    && only_ours "$tmp/kill.err"
check "sound server killed mid-capture: exits 1 by itself, one error, ids so far flushed" $? \
    "started=$started rc=$rc $(cat "$tmp/kill.err")"
wait 2>/dev/null # paplay

# no sound server at all, and an ALSA with no PCM configured (PortAudio asserts there)
if ls /dev/snd/pcmC* >/dev/null 2>&1; then
    ok "no-device checks skipped: this machine has sound cards"
    exit 0
fi
for how in "no server" "no ALSA config"; do
    [ "$how" = "no ALSA config" ] && export ALSA_CONFIG_PATH=$tmp/empty.conf && : >"$ALSA_CONFIG_PATH"
    timeout 30 $VOX -d "$M" --backend cpu --mic --quiet >/dev/null 2>"$tmp/err"; rc=$?
    [ $rc -eq 1 ] && [ "$(wc -l <"$tmp/err")" -eq 1 ] && grep -q "^voxtral: mic: no audio input device found" "$tmp/err"
    check "$how: --mic exits 1 with one clear line, no abort" $? "rc=$rc $(head -c 600 "$tmp/err")"
    timeout 30 $VOX --list-devices >"$tmp/out" 2>"$tmp/err"; rc=$?
    [ $rc -eq 1 ] && [ "$(wc -l <"$tmp/err")" -eq 1 ] && ! grep -q . "$tmp/out"
    check "$how: --list-devices exits 1 with one line" $? "rc=$rc $(head -c 600 "$tmp/err")"
done
