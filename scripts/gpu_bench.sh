#!/usr/bin/env bash
# gpu_bench.sh - the GPU figures of one lent run (a benchmark, never a test), logs in
# $OUT (default build/gpu-bench; the lent machine returns at most 8 files). PARTS
# (default "streams server quant") picks and orders the parts:
#   streams   bench_streams on the serving scheduler: KV bf16 at decoder window W
#             (default 2048) for N = NS_BF16, the same with --max-batch 64 for N =
#             NS_MB64, then KV f32 with the unbatched baseline for N = NS_F32, then KV
#             bf16 at window 8192 for N = NS_8192 (an empty list skips its run):
#             streams.txt (all three) and streams.json (the first)
#   server    `voxtral serve` (KV bf16, window W) under scripts/bench_server.py's live
#             sessions for N = NS_SERVER: server.txt, server.json
#   quant     single-stream --bench on the 60 s clip at BF16, q8 and q4, each step
#             against its own floor (bench_quant.sh, BACKEND=cuda): quant.md; and
#             vram.txt: the most GPU memory in use (nvidia-smi every 0.1 s) while q4
#             with a 2048-token window (--kv-window) transcribes the 60 s clip, with
#             the --check plans
# Makes the full-size random model at $M (default /tmp/random-full) when missing,
# builds unless NOBUILD=1. Each part is skipped when fewer than its seconds are left
# of BUDGET_S (default 580).
#   source .devkit/env.sh && scripts/gpu_bench.sh [AUDIO_60S]
set -u
cd "$(dirname "$0")/.."
OUT=${OUT:-build/gpu-bench}; M=${M:-/tmp/random-full}; A60=${1:-.devaudio/60s.wav}
W=${W:-2048}; SECS=${SECS:-8}; BUDGET_S=${BUDGET_S:-580}
PARTS=${PARTS:-"streams server quant"}
NS_BF16=${NS_BF16:-64,128,192,288}; NS_F32=${NS_F32-1,8,32}; NS_8192=${NS_8192-64,96,116}
NS_MB64=${NS_MB64-192,288}
NS_SERVER=${NS_SERVER:-32,64,128}
mkdir -p "$OUT"
say() { echo "== $* ($SECONDS s)"; }
room() { [ $((SECONDS + $1)) -le "$BUDGET_S" ] || { say "skipped: $2 (~$1 s more needed)"; return 1; }; }
( [ -f "$M/consolidated.safetensors" ] || python3 scripts/make_random_model.py --preset full --out "$M" >/tmp/model.log 2>&1 ) &
MP=$!
if [ "${NOBUILD:-0}" != 1 ]; then
    say build
    { make cuda CUDA_ARCH=90 -j16 && make CUDA=1 CUDA_ARCH=90 tests bench-streams -j16; } >/tmp/build.log 2>&1 || { tail -30 /tmp/build.log; exit 1; }
fi
wait $MP || { tail -5 /tmp/model.log; exit 1; }

streams() {
    say "streams: KV bf16, window $W, N = $NS_BF16"
    scripts/bench_streams.sh "$M" "$A60" -n "$NS_BF16" -s "$SECS" -w "$W" --kv bf16 --no-baseline --backend cuda \
        --json "$OUT/streams.json" >"$OUT/streams.txt" 2>&1
    cat "$OUT/streams.txt"
    if [ -n "$NS_MB64" ] && room 80 "streams max-batch 64"; then
        say "streams: KV bf16, window $W, --max-batch 64, N = $NS_MB64"
        scripts/bench_streams.sh "$M" "$A60" -n "$NS_MB64" -s "$SECS" -w "$W" --kv bf16 --max-batch 64 --no-baseline \
            --backend cuda >"$OUT/streams_mb.tmp" 2>&1
        cat "$OUT/streams_mb.tmp" | tee -a "$OUT/streams.txt"
    fi
    [ -n "$NS_F32" ] && room 120 "streams f32" || return 0
    say "streams: KV f32, window $W, N = $NS_F32, with the unbatched baseline"
    scripts/bench_streams.sh "$M" "$A60" -n "$NS_F32" -s "$SECS" -w "$W" --backend cuda >"$OUT/streams_f32.tmp" 2>&1
    cat "$OUT/streams_f32.tmp" | tee -a "$OUT/streams.txt"
    [ -n "$NS_8192" ] && room 90 "streams 8192" || return 0
    say "streams: KV bf16, window 8192, N = $NS_8192"
    scripts/bench_streams.sh "$M" "$A60" -n "$NS_8192" -s "$SECS" -w 8192 --kv bf16 --no-baseline --backend cuda \
        >"$OUT/streams_8192.tmp" 2>&1
    cat "$OUT/streams_8192.tmp" | tee -a "$OUT/streams.txt"
    rm -f "$OUT"/streams_*.tmp
}

server() {
    local nmax=${NS_SERVER##*,}
    say "server: voxtral serve, KV bf16, window $W, N = $NS_SERVER"
    ./voxtral serve -d "$M" --port 0 --backend cuda --max-streams "$nmax" --kv-window "$W" --kv-dtype bf16 --quiet \
        2>/tmp/serve.err &
    local sp=$! port=
    for _ in $(seq 600); do
        port=$(sed -n 's/^voxtral: listening on http:\/\/127.0.0.1:\([0-9]*\) .*/\1/p' /tmp/serve.err)
        [ -n "$port" ] && break
        kill -0 $sp 2>/dev/null || break
        sleep 0.1
    done
    if [ -z "$port" ]; then
        { echo "server did not start:"; cat /tmp/serve.err; } | tee "$OUT/server.txt"
        return 0
    fi
    python3 scripts/bench_server.py "http://127.0.0.1:$port" "$A60" -n "$NS_SERVER" -s "$SECS" --json "$OUT/server.json" \
        >"$OUT/server.txt" 2>&1
    cat "$OUT/server.txt"
    kill -TERM $sp; wait $sp
    tail -3 /tmp/serve.err >>"$OUT/server.txt"
}

quant() {
    say "quantized CUDA against the CPU: greedy ids on a fixture model"
    local F=tests/fixtures/tiny_speech
    for Q in q8 q4; do
        ./voxtral -d $F/model -i $F/input.wav --backend cpu --quant $Q --json --quiet >/tmp/qc.json 2>/dev/null
        ./voxtral -d $F/model -i $F/input.wav --backend cuda --quant $Q --json --quiet >/tmp/qg.json 2>/dev/null
        python3 -c "import json,sys; c,g=(json.load(open(p))['tokens'] for p in sys.argv[1:3]); n=next((i for i,(a,b) in enumerate(zip(c,g)) if a!=b),min(len(c),len(g))); print('   $Q: %d cpu ids, %d cuda ids, equal for the first %d' % (len(c),len(g),n))" /tmp/qc.json /tmp/qg.json
    done
    say "single stream: BF16, q8, q4 (60 s clip)"
    ROUNDS=1 BACKEND=cuda scripts/bench_quant.sh "$M" "$A60" q8 q4 >"$OUT/quant.md" 2>/tmp/quant.err
    cat "$OUT/quant.md"; grep "wrote" /tmp/quant.err
    room 40 "vram" || return 0
    say "VRAM: q4, decoder window 2048"
    base=$(nvidia-smi --query-gpu=memory.used --format=csv,noheader,nounits | head -1)
    ./voxtral -d "$M-q4" --kv-window 2048 -i "$A60" --backend cuda --quiet >/dev/null 2>"$OUT/vram.txt" &
    local vp=$! peak=0
    while kill -0 $vp 2>/dev/null; do
        u=$(nvidia-smi --query-gpu=memory.used --format=csv,noheader,nounits | head -1); [ "$u" -gt "$peak" ] && peak=$u; sleep 0.1
    done
    echo "q4, window 2048: peak GPU memory in use $peak MiB (before the run $base MiB)" | tee -a "$OUT/vram.txt"
    { ./voxtral --check -d "$M-q4" --kv-window 2048 --backend cuda 2>&1; ./voxtral --check -d "$M" --backend cuda 2>&1; } >>"$OUT/vram.txt"
    tail -12 "$OUT/vram.txt"
}

for P in $PARTS; do
    case $P in
        streams) room 150 streams && streams ;;
        server) room 100 server && server ;;
        quant) room 150 quant && quant ;;
    esac
done
say done
