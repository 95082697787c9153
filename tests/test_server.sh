#!/usr/bin/env bash
# test_server.sh - `voxtral serve` against real clients: curl (multipart, errors,
# operations routes), Python websockets (vLLM's realtime protocol: 1 and 16 live
# sessions, an unclean drop, hostile messages, connect/drop churn, the SIGTERM
# drain) and the official `openai` npm package (every response_format, stream:
# true, and its realtime client over wss:// with a self-signed certificate).
# Expected texts come from the CLI on the same audio: `-i` for files, `--stdin`
# (continuous mode) for live sessions, decoded as Python's errors="replace".
set -u
cd "$(dirname "$0")/.."
VOX=${VOXTRAL:-./voxtral}
PY=/usr/bin/python3
. tests/testlib.sh
M=tests/fixtures/tiny_speech/model
WAV=samples/hello.wav
FIX=tests/fixtures/tiny_speech/input.wav
CLIENT="$PY tests/server_client.py"
PIDS=()
trap 'for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null; done; rm -rf "$tmp"' EXIT

# start_server NAME ARGS...: sets PORT and SPID; stderr in $tmp/NAME.err
start_server() {
    local name=$1; shift
    "$VOX" serve -d "$M" --port 0 "$@" 2>"$tmp/$name.err" &
    SPID=$!
    PIDS+=("$SPID")
    PORT=
    for _ in $(seq 300); do
        PORT=$(sed -n 's/^voxtral: listening on https\?:\/\/127.0.0.1:\([0-9][0-9]*\) .*/\1/p' "$tmp/$name.err")
        [ -n "$PORT" ] && return 0
        kill -0 "$SPID" 2>/dev/null || break
        sleep 0.1
    done
    nok "server $name started" "$(cat "$tmp/$name.err")"
    return 1
}
stop_server() { kill "$SPID" 2>/dev/null; wait "$SPID" 2>/dev/null; }
H=http://127.0.0.1
# expected text: the CLI's bytes, decoded as Python does with errors="replace"
cli_text() { "$VOX" -d "$M" --quiet "$@" | $PY -c 'import sys; sys.stdout.write(sys.stdin.buffer.read().decode("utf-8", "replace").rstrip("\n"))'; }
# a live transcript: the CLI's --stdin text as --json gives it (on a terminal the CLI
# ends each live segment with a newline; the text itself has none)
cli_live_text() { "$VOX" -d "$M" --quiet --stdin --json "$@" | $PY -c 'import json,sys; sys.stdout.write(json.load(sys.stdin)["text"])'; }
jget() { $PY -c 'import json,sys; o=json.load(sys.stdin); print(eval(sys.argv[1]), end="")' "$1"; }

# ---- startup, operations routes ----
start_server main --max-streams 16 || exit 0
grep -qx "voxtral: listening on http://127.0.0.1:$PORT (16 streams max)" "$tmp/main.err"
check "start line: 'voxtral: listening on http://HOST:PORT (N streams max'" $? "$(head -1 "$tmp/main.err")"
[ "$(curl -s $H:$PORT/health)" = '{"status":"ok"}' ]
check "GET /health" $?
curl -s $H:$PORT/ready | jget 'o["ready"] is True and o["max_streams"] == 16' | grep -q True
check "GET /ready: ready, 16 slots" $?
curl -s $H:$PORT/v1/models | jget 'o["object"] == "list" and o["data"][0]["object"] == "model"' | grep -q True
check "GET /v1/models: an OpenAI model list" $?
st=$(curl -s -o /dev/null -w '%{http_code}' $H:$PORT/nope)
[ "$st" = 404 ]
check "unknown route: 404" $? "$st"

# ---- files: each text equals the CLI's -i text ----
for f in "$WAV" samples/hello.flac samples/hello_44k_stereo.wav "$FIX"; do
    want=$(cli_text -i "$f")
    got=$(curl -s -F file=@"$f" -F model=voxtral $H:$PORT/v1/audio/transcriptions | jget 'o["text"]')
    [ -n "$want" ] && [ "$got" = "$want" ]
    check "POST transcriptions json: $(basename "$f") text equals CLI -i" $? "got '$got' want '$want'"
done
want=$(cli_text -i "$WAV")
got=$(curl -s -F file=@"$WAV" -F response_format=text $H:$PORT/v1/audio/transcriptions)
[ "$got" = "$want" ]
check "response_format=text equals CLI -i" $? "$got"
curl -s -F file=@"$WAV" -F response_format=srt $H:$PORT/v1/audio/transcriptions >"$tmp/a.srt"
head -2 "$tmp/a.srt" | $PY -c 'import re,sys; l=sys.stdin.read().split("\n"); assert l[0]=="1" and re.match(r"\d\d:\d\d:\d\d,\d{3} --> \d\d:\d\d:\d\d,\d{3}$", l[1]), l'
check "response_format=srt: numbered cues with SRT times" $? "$(head -3 "$tmp/a.srt")"
curl -s -F file=@"$WAV" -F response_format=vtt $H:$PORT/v1/audio/transcriptions | head -1 | grep -qx WEBVTT
check "response_format=vtt: WEBVTT header" $?
curl -s -F file=@"$WAV" -F response_format=verbose_json -F 'timestamp_granularities[]=word' -F language=en \
    $H:$PORT/v1/audio/transcriptions >"$tmp/v.json"
$PY - "$tmp/v.json" "$want" <<'EOF'
import json, sys
o = json.load(open(sys.argv[1]))
assert o["text"] == sys.argv[2] and o["task"] == "transcribe" and o["language"] == "en", o
assert o["segments"] and all(s["start"] < s["end"] <= o["duration"] + 1e-6 for s in o["segments"])
assert "".join(s["text"] for s in o["segments"]) == o["text"]
assert o["words"] and all(w["start"] <= w["end"] for w in o["words"])
EOF
check "response_format=verbose_json: text, segments and words consistent" $?
curl -s -F file=@"$WAV" -F response_format=verbose_json $H:$PORT/v1/audio/transcriptions >"$tmp/v2.json"
$PY - "$tmp/v2.json" "$want" <<'EOF'
import json, sys
o = json.load(open(sys.argv[1]))
assert o["text"] == sys.argv[2] and o["segments"] and "words" not in o, o
EOF
check "verbose_json without timestamp_granularities[]=word: segments, no words (as OpenAI)" $?
curl -sN -F file=@"$WAV" -F stream=true $H:$PORT/v1/audio/transcriptions >"$tmp/sse.txt"
$PY - "$tmp/sse.txt" "$want" <<'EOF'
import json, sys
lines = [l[6:] for l in open(sys.argv[1], encoding="utf-8").read().split("\n") if l.startswith("data: ")]
assert lines[-1] == "[DONE]", lines[-1:]
ev = [json.loads(l) for l in lines[:-1]]
deltas = "".join(e["delta"] for e in ev if e["type"] == "transcript.text.delta")
done = [e for e in ev if e["type"] == "transcript.text.done"]
assert len(done) == 1 and done[0]["text"] == sys.argv[2] == deltas, (deltas, done)
assert sum(e["type"] == "transcript.text.delta" for e in ev) >= 1
EOF
check "stream=true: SSE deltas concatenate to the done text = CLI -i" $?
curl -s -H 'Transfer-Encoding: chunked' -F file=@"$WAV" $H:$PORT/v1/audio/transcriptions | jget 'o["text"]' >"$tmp/ch.txt"
[ "$(cat "$tmp/ch.txt")" = "$want" ]
check "chunked request body: same text" $?

# ---- HTTP errors: OpenAI-shaped, right status ----
http_err() { # NAME WANT_STATUS WANT_CODE CURL_ARGS...
    local name=$1 ws=$2 wc=$3; shift 3
    local st
    st=$(curl -s -o "$tmp/err.json" -w '%{http_code}' "$@")
    local code
    code=$(jget 'o["error"]["code"] if set(o["error"]) >= {"message","type","code"} else "bad shape"' <"$tmp/err.json" 2>/dev/null)
    [ "$st" = "$ws" ] && [ "$code" = "$wc" ]
    check "error: $name -> $ws $wc" $? "status $st, $(head -c 300 "$tmp/err.json")"
}
head -c 5000 /dev/urandom >"$tmp/garbage.wav"
: >"$tmp/empty.wav"
http_err "no file field" 400 invalid_request -F model=x $H:$PORT/v1/audio/transcriptions
http_err "bad response_format" 400 invalid_request -F file=@"$WAV" -F response_format=xml $H:$PORT/v1/audio/transcriptions
http_err "not multipart" 400 invalid_request -H 'Content-Type: application/json' -d '{}' $H:$PORT/v1/audio/transcriptions
http_err "truncated multipart" 400 invalid_request -H 'Content-Type: multipart/form-data; boundary=XX' \
    --data-binary $'--XX\r\nContent-Disposition: form-data; name="file"; filename="a"\r\n\r\nabc' $H:$PORT/v1/audio/transcriptions
http_err "garbage audio" 400 invalid_audio -F file=@"$tmp/garbage.wav" $H:$PORT/v1/audio/transcriptions
http_err "empty audio" 400 invalid_audio -F file=@"$tmp/empty.wav" $H:$PORT/v1/audio/transcriptions
[ "$(curl -s $H:$PORT/health)" = '{"status":"ok"}' ]
check "server up after the HTTP errors" $?

# ---- live sessions (vLLM protocol): final text and deltas equal the CLI's --stdin text ----
want_live=$(cli_live_text <"$WAV")
$CLIENT live "ws://127.0.0.1:$PORT/v1/realtime" "$WAV" 1 >"$tmp/live1.json"
$PY - "$tmp/live1.json" "$want_live" <<'EOF'
import json, sys
r = json.load(open(sys.argv[1]))[0]
assert r["text"] == sys.argv[2] == r["deltas"] and not r["errors"], (r, sys.argv[2])
assert r["usage"]["completion_tokens"] > 0
EOF
check "live session: transcription.done text and deltas equal CLI --stdin" $? "$(head -c 400 "$tmp/live1.json")"
t0=$(date +%s%N)
$CLIENT live "ws://127.0.0.1:$PORT/v1/realtime" "$WAV" 16 >"$tmp/live16.json"
t1=$(date +%s%N)
$PY - "$tmp/live16.json" "$want_live" <<'EOF'
import json, sys
rs = json.load(open(sys.argv[1]))
bad = [i for i, r in enumerate(rs) if not (r["text"] == sys.argv[2] == r["deltas"])]
assert len(rs) == 16 and not bad, bad
EOF
check "16 concurrent live sessions: all equal CLI --stdin ($(( (t1 - t0) / 1000000 )) ms)" $?

$CLIENT openai "ws://127.0.0.1:$PORT/v1/realtime" "$WAV" >"$tmp/oai.json"
$PY - "$tmp/oai.json" <<'EOF'
import json, sys
o = json.load(open(sys.argv[1]))
assert o["errors"] == ["input_audio_buffer_commit_empty"], o["errors"]
assert len(o["committed"]) == 2 and [c[0] for c in o["completed"]] == o["committed"], o
assert all(o["deltas"].get(i, "") == t for i, t in o["completed"]) and any(t for _, t in o["completed"]), o
EOF
check "OpenAI dialect at 16 kHz: empty commit refused, two items committed and completed (= their deltas)" $? "$(head -c 500 "$tmp/oai.json")"

# ---- an unclean drop frees its slot; the others finish correctly ----
$CLIENT live "ws://127.0.0.1:$PORT/v1/realtime" "$FIX" 3 >"$tmp/others.json" &
others=$!
$CLIENT drop "ws://127.0.0.1:$PORT/v1/realtime" "$WAV" >/dev/null
wait $others
want_fix=$(cli_live_text <"$FIX")
$PY -c 'import json,sys; rs=json.load(open(sys.argv[1])); assert all(r["text"]==sys.argv[2] for r in rs)' "$tmp/others.json" "$want_fix"
check "sessions running beside an unclean drop finish correctly" $?
for _ in $(seq 50); do
    a=$(curl -s $H:$PORT/metrics | sed -n 's/^voxtral_sessions_active //p')
    [ "$a" = 0 ] && break
    sleep 0.1
done
[ "$a" = 0 ]
check "dropped session's slot freed (sessions_active back to 0)" $? "active=$a"
grep -q "client gone mid-stream" "$tmp/main.err"
check "the drop is logged as a client gone mid-stream" $?

# ---- hostile messages: each gets its error; the session and the server go on ----
$CLIENT hostile "ws://127.0.0.1:$PORT/v1/realtime" "$WAV" >"$tmp/hostile.json"
$PY - "$tmp/hostile.json" "$want_live" <<'EOF'
import json, sys
o = json.load(open(sys.argv[1]))
want = {"not_json": "invalid_json", "not_object": "invalid_json", "no_type": "invalid_json",
        "bad_base64": "invalid_audio", "odd_bytes": "invalid_audio", "no_audio": "invalid_audio",
        "unknown": "unknown_event", "clear": "unsupported_event",
        "binary_utf8": "invalid_json", "oversized": "message_too_large"}
bad = {k: o.get(k) for k in want if o.get(k) != want[k]}
assert not bad, bad
assert o["after"]["text"] == sys.argv[2], o["after"]
EOF
check "hostile messages: invalid_json/invalid_audio/unknown_event/unsupported_event (clear)/message_too_large, session goes on" $? "$(head -c 600 "$tmp/hostile.json")"

# ---- OpenAI dialect: a burst of commits; every committed item completes ----
$CLIENT commits "ws://127.0.0.1:$PORT/v1/realtime" "$WAV" 100 >"$tmp/commits.json" 2>&1
$PY -c '
import json, sys
o = json.load(open(sys.argv[1]))
assert not o.get("timeout") and sorted(o["completed"]) == sorted(o["committed"]), (len(o["committed"]), len(o["completed"]))
assert len(o["committed"]) + len(o["errors"]) == 100 and set(o["errors"]) <= {"too_many_pending_commits"}, o["errors"]
' "$tmp/commits.json"
check "OpenAI: 100 commits at once: each committed item completed, the rest refused with an error" $? "$(head -c 300 "$tmp/commits.json")"

# ---- a client that floods bad messages and never reads: cut, its queue not grown ----
# 300000 errors of ~70 bytes are over the 8 MiB of unread output a session may leave
$CLIENT flood "ws://127.0.0.1:$PORT/v1/realtime" 300000 >"$tmp/flood.json" 2>&1
$PY -c 'import json,sys; o=json.load(open(sys.argv[1])); assert o["close"] == 1008 and o["slow_client"] == 1 and o["errors"] < o["sent"], o' "$tmp/flood.json"
check "flooding client that does not read: slow_client, closed 1008, unread events dropped" $? "$(cat "$tmp/flood.json")"

# ---- churn: many connects and drops ----
# batches of 10 at once (1 in 10 with audio: on this CPU a stream's first feed takes
# up to a second); each batch's slots must all come back before the next starts
rss0=$(curl -s $H:$PORT/metrics | sed -n 's/^voxtral_resident_bytes //p')
$PY - "ws://127.0.0.1:$PORT/v1/realtime" "$WAV" "$H:$PORT/metrics" <<'EOF'
import asyncio, base64, json, sys, time, urllib.request, wave
import websockets
url, metrics = sys.argv[1], sys.argv[3]
pcm = wave.open(sys.argv[2]).readframes(8000)
def active():
    for l in urllib.request.urlopen(metrics).read().decode().split("\n"):
        if l.startswith("voxtral_sessions_active "): return int(l.split()[1])
async def one(i):
    ws = await websockets.connect(url)
    ev = json.loads(await ws.recv())
    assert ev["type"] == "session.created", ev
    if i % 10 == 0:
        await ws.send(json.dumps({"type": "input_audio_buffer.append", "audio": base64.b64encode(pcm).decode()}))
    if i % 3: ws.transport.abort()
    else: await ws.close()
async def main():
    worst = 0
    for k in range(0, 200, 10):
        await asyncio.gather(*[one(k + i) for i in range(10)])
        t = time.time()
        while active() and time.time() - t < 20: await asyncio.sleep(0.02)
        worst = max(worst, time.time() - t)
        assert active() == 0, "slots stuck"
    print(f"# churn: 200 sessions; the slowest batch's slots came back in {worst:.2f} s")
asyncio.run(main())
EOF
check "200 connects and drops, 10 at a time: every slot comes back" $?
rss1=$(curl -s $H:$PORT/metrics | sed -n 's/^voxtral_resident_bytes //p')
[ "$a" = 0 ] && [ $((rss1 - rss0)) -lt $((64 << 20)) ]
check "after churn: no session left, resident memory +$(( (rss1 - rss0) >> 20 )) MiB (< 64)" $? "active=$a"
$CLIENT live "ws://127.0.0.1:$PORT/v1/realtime" "$WAV" 1 | jget 'o[0]["text"]' >"$tmp/after.txt"
[ "$(cat "$tmp/after.txt")" = "$want_live" ]
check "a live session after the churn is still correct" $?
curl -s $H:$PORT/metrics >"$tmp/metrics.txt"
for m in voxtral_info voxtral_sessions_total voxtral_sessions_refused_total voxtral_audio_seconds_total voxtral_tokens_total \
         voxtral_engine_feed_seconds_bucket voxtral_token_latency_seconds_count voxtral_engine_round_sessions_bucket \
         voxtral_kv_bytes_in_use voxtral_backend_bytes; do
    grep -q "^$m" "$tmp/metrics.txt" || { nok "metrics: $m"; continue; }
done
$PY - "$tmp/metrics.txt" <<'EOF'
import sys
for line in open(sys.argv[1]):
    if line.startswith("#") or not line.strip(): continue
    name, value = line.rsplit(" ", 1)
    float(value)
EOF
check "GET /metrics: Prometheus text, every sample parses, the named series are there" $?
stop_server
grep -q "^voxtral: server stopped" "$tmp/main.err"
check "SIGTERM with nothing running: clean stop" $?

# ---- --kv-dtype bf16 and --max-batch: the CLI's text with the same KV elements ----
"$VOX" serve -d "$M" --port 0 --kv-dtype f16 >/dev/null 2>"$tmp/kvbad.err"
[ $? -eq 2 ] && grep -q -- "--kv-dtype f16: use f32 or bf16" "$tmp/kvbad.err"
check "serve --kv-dtype f16: exit 2, one line naming it" $? "$(cat "$tmp/kvbad.err")"
start_server kv --max-streams 2 --kv-dtype bf16 --max-batch 2 || exit 0
got=$(curl -s -F file=@"$WAV" $H:$PORT/v1/audio/transcriptions | jget 'o["text"]')
want_bf16=$(cli_text -i "$WAV" --kv-dtype bf16)
[ -n "$got" ] && [ "$got" = "$want_bf16" ]
check "serve --kv-dtype bf16 --max-batch 2: the file's text is the CLI's with --kv-dtype bf16" $? "'$got' vs '$want_bf16'"
stop_server

# ---- capacity and auth ----
start_server cap --max-streams 1 --api-key sekret --max-upload 0.2 || exit 0
AUTH=(-H 'Authorization: Bearer sekret')
st=$(curl -s -o /dev/null -w '%{http_code}' $H:$PORT/health)
[ "$st" = 200 ]
check "--api-key: /health needs no key" $?
http_err "no API key" 401 invalid_api_key -F file=@"$WAV" $H:$PORT/v1/audio/transcriptions
http_err "wrong API key" 401 invalid_api_key -H 'Authorization: Bearer nope' $H:$PORT/ready
got=$(curl -s "${AUTH[@]}" -F file=@"$WAV" $H:$PORT/v1/audio/transcriptions | jget 'o["text"]')
[ "$got" = "$want" ]
check "--api-key: the right key works" $?
http_err "upload over --max-upload" 413 file_too_large "${AUTH[@]}" -F file=@samples/hello_44k_stereo.wav $H:$PORT/v1/audio/transcriptions
$PY - "ws://127.0.0.1:$PORT/v1/realtime" <<'EOF'
import asyncio, sys, websockets
async def main():
    try:
        await websockets.connect(sys.argv[1])
    except websockets.InvalidStatusCode as e:
        assert e.status_code == 401, e.status_code
        return
    raise SystemExit("no 401")
asyncio.run(main())
EOF
check "WebSocket without the key: 401" $?
# hold the one slot with a live session, then everything else is refused at once
$PY - "ws://127.0.0.1:$PORT/v1/realtime" "$H:$PORT" <<'EOF' >"$tmp/cap.json"
import asyncio, json, subprocess, sys, time, websockets
H = {"Authorization": "Bearer sekret"}
async def main():
    out = {}
    async with websockets.connect(sys.argv[1], extra_headers=H) as holder:
        await holder.recv()
        t = time.time()
        r = subprocess.run(["curl", "-s", "-D", "-", "-H", "Authorization: Bearer sekret", "-F", "file=@samples/hello.wav",
                            sys.argv[2] + "/v1/audio/transcriptions"], capture_output=True, text=True)
        out["http"] = r.stdout
        out["http_s"] = time.time() - t
        r = subprocess.run(["curl", "-s", "-w", "%{http_code}", "-H", "Authorization: Bearer sekret", sys.argv[2] + "/ready"],
                           capture_output=True, text=True)
        out["ready"] = r.stdout
        async with websockets.connect(sys.argv[1], extra_headers=H) as ws:
            out["ws"] = json.loads(await asyncio.wait_for(ws.recv(), 5))
            try:
                await asyncio.wait_for(ws.recv(), 5)
            except websockets.ConnectionClosed as e:
                out["ws_close"] = e.code
    print(json.dumps(out))
asyncio.run(main())
EOF
$PY - "$tmp/cap.json" <<'EOF'
import json, sys
o = json.load(open(sys.argv[1]))
h = o["http"]
assert h.startswith("HTTP/1.1 503") and "retry-after: 1" in h.lower() and '"code":"server_busy"' in h, h
assert o["http_s"] < 2, o["http_s"]
assert o["ready"].endswith("503") and '"ready":false' in o["ready"], o["ready"]
assert o["ws"]["type"] == "error" and o["ws"]["code"] == "server_busy" and o.get("ws_close") == 1013, o
EOF
check "at capacity: POST 503 + Retry-After at once, /ready 503, WebSocket error server_busy + close 1013" $? "$(head -c 600 "$tmp/cap.json")"
stop_server

# ---- SIGTERM drain: running sessions get the grace period, their text is flushed ----
start_server drain --grace 2 || exit 0
$CLIENT hold "ws://127.0.0.1:$PORT/v1/realtime" "$FIX" 10 >"$tmp/hold.json" &
holder=$!
sleep 2
kill -TERM "$SPID"
sleep 0.3
st=$(curl -s -o /dev/null -w '%{http_code}' $H:$PORT/ready)
st2=$(curl -s -o /dev/null -w '%{http_code}' -F file=@"$WAV" $H:$PORT/v1/audio/transcriptions)
wait "$SPID"; rc=$?
wait $holder
[ "$st" = 503 ] && [ "$st2" = 503 ]
check "draining: /ready 503, new requests 503" $? "ready $st, POST $st2"
[ $rc -eq 0 ] && grep -q "^voxtral: draining" "$tmp/drain.err" && grep -q "^voxtral: server stopped" "$tmp/drain.err"
check "SIGTERM: drains and exits 0" $? "rc=$rc $(tail -3 "$tmp/drain.err")"
$PY - "$tmp/hold.json" <<'EOF'
import json, sys
o = json.load(open(sys.argv[1]))
assert o["done"] and o["done"]["text"] == o["deltas"] and o["done"]["text"], o
assert o["close_code"] == 1001, o["close_code"]
EOF
check "SIGTERM: the running session got transcription.done (= its deltas) and a 1001 close" $? "$(head -c 400 "$tmp/hold.json")"

# ---- the official openai npm client ----
NODE_DIR=tests/node
if [ ! -d $NODE_DIR/node_modules/openai ] || [ ! -d $NODE_DIR/node_modules/ws ]; then
    (cd $NODE_DIR && timeout 300 npm install --no-audit --no-fund --loglevel=error >"$tmp/npm.log" 2>&1)
fi
if [ ! -d $NODE_DIR/node_modules/openai ] || ! command -v node >/dev/null; then
    echo "skipped: openai npm client tests (npm install failed: $(tail -1 "$tmp/npm.log" 2>/dev/null))"
    exit 0
fi
start_server node --api-key sk-test || exit 0
node $NODE_DIR/clients.mjs files "$H:$PORT/v1" sk-test "$WAV" json text srt vtt verbose_json >"$tmp/node.json"
$PY - "$tmp/node.json" "$want" <<'EOF'
import json, sys
o, want = json.load(open(sys.argv[1])), sys.argv[2]
assert "error" not in o, o["error"]
assert o["json"]["text"] == want, o["json"]
assert o["text"].rstrip("\n") == want, o["text"]
assert o["srt"].startswith("1\n00:00:") and " --> " in o["srt"], o["srt"]
assert o["vtt"].startswith("WEBVTT\n"), o["vtt"]
assert o["verbose_json"]["text"] == want and o["verbose_json"]["segments"], o["verbose_json"]
assert o["stream"]["deltas"] == o["stream"]["done"] == want, o["stream"]
EOF
check "openai npm: audio.transcriptions.create in json/text/srt/vtt/verbose_json and stream:true = CLI -i" $? "$(head -c 600 "$tmp/node.json")"
stop_server
openssl req -x509 -newkey rsa:2048 -nodes -keyout "$tmp/key.pem" -out "$tmp/cert.pem" -days 1 \
    -subj /CN=127.0.0.1 >/dev/null 2>&1
sox "$WAV" -r 24000 "$tmp/h24.wav"
want24=$(cli_text -i "$tmp/h24.wav")
start_server tls --tls-cert "$tmp/cert.pem" --tls-key "$tmp/key.pem" || exit 0
grep -q "^voxtral: listening on https://" "$tmp/tls.err"
check "TLS: start line says https" $?
st=$(curl -sk -o /dev/null -w '%{http_code}' "https://127.0.0.1:$PORT/health")
[ "$st" = 200 ]
check "TLS: https /health" $?
node $NODE_DIR/clients.mjs realtime "https://127.0.0.1:$PORT/v1" sk-test "$tmp/h24.wav" >"$tmp/rt.json"
# the 24 kHz input is resampled by streaming soxr (the CLI's -i: one-shot soxr, same result)
$PY - "$tmp/rt.json" "$want24" <<'EOF'
import json, sys
o = json.load(open(sys.argv[1]))
assert "error" not in o, o["error"]
assert o["completed"] == [sys.argv[2]] and o["deltas"] == sys.argv[2], (o, sys.argv[2])
for t in ("session.created", "session.updated", "input_audio_buffer.committed",
          "conversation.item.input_audio_transcription.delta", "conversation.item.input_audio_transcription.completed"):
    assert t in o["events"], (t, o["events"])
EOF
check "openai npm realtime over wss:// (self-signed), 24 kHz PCM: completed transcript = CLI -i" $? "$(head -c 600 "$tmp/rt.json")"
stop_server

# ---- session ids: each server run (replicas of one Deployment, restarts) its own ----
ids=$(for f in main cap drain node tls; do sed -n 's/^voxtral: session \(sess-[0-9a-f]*\) .*/\1/p' "$tmp/$f.err" | head -1; done)
n=$(printf '%s\n' $ids | wc -l); u=$(printf '%s\n' $ids | sort -u | wc -l)
[ "$n" -ge 4 ] && [ "$n" = "$u" ]
check "first session ids of $n server runs all differ" $? "$(echo $ids)"
