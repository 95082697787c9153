#!/usr/bin/python3
"""server_client.py - vLLM-protocol realtime client for tests/test_server.sh.

Modes (all print one JSON line on stdout):
  live URL WAV [N]        N concurrent sessions (default 1) stream WAV (16 kHz PCM16) in
                          small chunks, commit, commit final; each result has the
                          deltas' concatenation and transcription.done's text
  drop URL WAV            a session that streams half the audio, then aborts the TCP
                          connection (no close frame)
  hostile URL WAV         bad messages on one session (each must get its error), then
                          the same session must still transcribe WAV
  busy URL                a session expected to be refused at capacity
  hold URL WAV SECONDS    a session streaming WAV in a loop at real-time pace (drain test)
  openai URL WAV          OpenAI dialect: an empty commit, then two committed items
  commits URL WAV N       OpenAI dialect: N (append 20 ms, commit) pairs at once; every
                          committed item must get its completed event
  flood URL N             a raw socket that sends N invalid messages without reading, then
                          reads: the server must cut it (slow_client, close 1008), not
                          queue N error events
"""
import asyncio, base64, json, sys, wave

import websockets


def pcm_of(path):
    with wave.open(path, "rb") as w:
        assert w.getsampwidth() == 2 and w.getnchannels() == 1, "16-bit mono WAV expected"
        return w.readframes(w.getnframes()), w.getframerate()


async def recv_json(ws, timeout=60):
    return json.loads(await asyncio.wait_for(ws.recv(), timeout))


async def stream(ws, pcm, chunk_bytes=3200, final=True):
    for off in range(0, len(pcm), chunk_bytes):
        await ws.send(json.dumps({"type": "input_audio_buffer.append",
                                  "audio": base64.b64encode(pcm[off:off + chunk_bytes]).decode()}))
    await ws.send(json.dumps({"type": "input_audio_buffer.commit", "final": final}))


async def collect(ws):
    deltas, errors = [], []
    while True:
        ev = await recv_json(ws)
        if ev["type"] == "transcription.delta":
            deltas.append(ev["delta"])
        elif ev["type"] == "transcription.done":
            return {"deltas": "".join(deltas), "text": ev["text"], "usage": ev.get("usage"), "errors": errors}
        elif ev["type"] == "error":
            errors.append(ev)


async def one_live(url, pcm, k):
    async with websockets.connect(url, max_size=None) as ws:
        created = await recv_json(ws)
        assert created["type"] == "session.created" and created["id"].startswith("sess-"), created
        await ws.send(json.dumps({"type": "session.update", "model": "voxtral"}))
        await ws.send(json.dumps({"type": "input_audio_buffer.commit"}))  # vLLM: starts transcription
        # sessions send different chunk sizes: the text must not depend on them
        sender = asyncio.ensure_future(stream(ws, pcm, chunk_bytes=1600 * (1 + k % 4)))
        res = await collect(ws)
        await sender
        return res


async def live(url, wav, n):
    pcm, rate = pcm_of(wav)
    assert rate == 16000
    res = await asyncio.gather(*[one_live(url, pcm, k) for k in range(n)])
    print(json.dumps(res))


async def drop(url, wav):
    pcm, _ = pcm_of(wav)
    ws = await websockets.connect(url, max_size=None)
    await recv_json(ws)
    half = pcm[: len(pcm) // 2 // 2 * 2]
    for off in range(0, len(half), 3200):
        await ws.send(json.dumps({"type": "input_audio_buffer.append",
                                  "audio": base64.b64encode(half[off:off + 3200]).decode()}))
    await asyncio.sleep(0.2)
    ws.transport.abort()  # vanish: no close frame, no FIN handshake
    print(json.dumps({"dropped": True}))


async def hostile(url, wav):
    pcm, _ = pcm_of(wav)
    out = {}
    async with websockets.connect(url, max_size=None) as ws:
        await recv_json(ws)
        cases = {
            "not_json": "{this is not json",
            "not_object": "[1,2,3]",
            "no_type": json.dumps({"audio": "AAAA"}),
            "bad_base64": json.dumps({"type": "input_audio_buffer.append", "audio": "@@@not base64@@@"}),
            "odd_bytes": json.dumps({"type": "input_audio_buffer.append", "audio": base64.b64encode(b"abc").decode()}),
            "no_audio": json.dumps({"type": "input_audio_buffer.append"}),
            "unknown": json.dumps({"type": "response.create"}),
            "clear": json.dumps({"type": "input_audio_buffer.clear"}),
            "binary_utf8": b"\xff\xfe\x00garbage",
            "oversized": json.dumps({"type": "input_audio_buffer.append",
                                     "audio": base64.b64encode(b"\0" * (3 << 20)).decode()}),
        }
        for name, msg in cases.items():
            await ws.send(msg)
            ev = await recv_json(ws, 20)
            out[name] = ev.get("code") if ev.get("type") == "error" else ev
        # the session goes on
        await stream(ws, pcm)
        res = await collect(ws)
        out["after"] = res
    print(json.dumps(out))


async def busy(url):
    try:
        async with websockets.connect(url, max_size=None) as ws:
            ev = await recv_json(ws, 10)
            try:
                await asyncio.wait_for(ws.recv(), 5)
                closed = False
            except websockets.ConnectionClosed as e:
                closed = e.code
            print(json.dumps({"event": ev, "closed": closed}))
    except websockets.InvalidStatusCode as e:
        print(json.dumps({"status": e.status_code}))


async def hold(url, wav, seconds):
    """streams WAV at real-time pace, never sends final; prints what it got by the close"""
    pcm, _ = pcm_of(wav)
    deltas, done = [], None
    async with websockets.connect(url, max_size=None) as ws:
        await recv_json(ws)

        async def send():
            off = 0
            while True:
                chunk = pcm[off % len(pcm): off % len(pcm) + 3200] or pcm[:3200]
                off += 3200
                await ws.send(json.dumps({"type": "input_audio_buffer.append",
                                          "audio": base64.b64encode(chunk).decode()}))
                await asyncio.sleep(0.1)
        sender = asyncio.ensure_future(send())
        try:
            while True:
                ev = await recv_json(ws, seconds + 60)
                if ev["type"] == "transcription.delta":
                    deltas.append(ev["delta"])
                elif ev["type"] == "transcription.done":
                    done = ev
        except websockets.ConnectionClosed as e:
            code = e.code
        sender.cancel()
    print(json.dumps({"deltas": "".join(deltas), "done": done, "close_code": code}))


async def openai_items(url, wav):
    """OpenAI dialect at 16 kHz: an empty commit (error), then two items, each committed"""
    pcm, _ = pcm_of(wav)
    out = {"committed": [], "completed": [], "deltas": {}, "errors": []}
    async with websockets.connect(url + "?intent=transcription", max_size=None) as ws:
        assert (await recv_json(ws))["type"] == "session.created"
        await ws.send(json.dumps({"type": "session.update", "session": {"type": "transcription",
                      "audio": {"input": {"format": {"type": "audio/pcm", "rate": 16000}}}}}))
        assert (await recv_json(ws))["type"] == "session.updated"
        await ws.send(json.dumps({"type": "input_audio_buffer.commit"}))
        half = len(pcm) // 4 * 2
        for part in (pcm[:half], pcm[half:]):
            await stream(ws, part, final=False)  # appends, then a plain commit
        while len(out["completed"]) < 2:
            ev = await recv_json(ws)
            t = ev["type"]
            if t == "input_audio_buffer.committed": out["committed"].append(ev["item_id"])
            elif t == "conversation.item.input_audio_transcription.delta":
                out["deltas"][ev["item_id"]] = out["deltas"].get(ev["item_id"], "") + ev["delta"]
            elif t == "conversation.item.input_audio_transcription.completed":
                out["completed"].append([ev["item_id"], ev["transcript"]])
            elif t == "error": out["errors"].append(ev["error"]["code"])
    print(json.dumps(out))


async def commits(url, wav, n):
    pcm, _ = pcm_of(wav)
    out = {"committed": [], "completed": [], "errors": []}
    async with websockets.connect(url + "?intent=transcription", max_size=None) as ws:
        assert (await recv_json(ws))["type"] == "session.created"
        await ws.send(json.dumps({"type": "session.update", "session": {"type": "transcription",
                      "audio": {"input": {"format": {"type": "audio/pcm", "rate": 16000}}}}}))
        for k in range(n):
            chunk = pcm[640 * k % (len(pcm) - 640):][:640]
            await ws.send(json.dumps({"type": "input_audio_buffer.append", "audio": base64.b64encode(chunk).decode()}))
            await ws.send(json.dumps({"type": "input_audio_buffer.commit"}))
        try:
            while len(out["completed"]) < len(out["committed"]) or len(out["committed"]) + len(out["errors"]) < n:
                ev = await recv_json(ws, timeout=20)
                t = ev["type"]
                if t == "input_audio_buffer.committed": out["committed"].append(ev["item_id"])
                elif t == "conversation.item.input_audio_transcription.completed": out["completed"].append(ev["item_id"])
                elif t == "error": out["errors"].append(ev["error"]["code"])
        except asyncio.TimeoutError:
            out["timeout"] = True
    print(json.dumps(out))


def flood(url, n):
    import socket, struct, time, urllib.parse
    u = urllib.parse.urlparse(url)
    sk = socket.socket()
    sk.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # a client that does not read
    sk.connect((u.hostname, u.port))
    sk.sendall(("GET %s HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
                % (u.path or "/")).encode())
    head = b""
    while b"\r\n\r\n" not in head:
        head += sk.recv(1)
    assert head.startswith(b"HTTP/1.1 101"), head
    sk.sendall(b"\x81\x81\0\0\0\0x" * n)  # masked text frames "x" (mask key 0): invalid JSON each
    time.sleep(3)  # the server's once-a-second check runs
    sk.settimeout(30)
    buf, errors, slow, close_code = b"", 0, 0, None
    while close_code is None:
        try:
            d = sk.recv(1 << 20)
        except socket.timeout:
            break
        if not d:
            break
        buf += d
        while len(buf) >= 2:
            op, ln, h = buf[0] & 15, buf[1] & 127, 2
            if ln == 126:
                if len(buf) < 4: break
                ln, h = struct.unpack(">H", buf[2:4])[0], 4
            elif ln == 127:
                if len(buf) < 10: break
                ln, h = struct.unpack(">Q", buf[2:10])[0], 10
            if len(buf) < h + ln: break
            body, buf = buf[h:h + ln], buf[h + ln:]
            if op == 1:
                errors += 1
                slow += b"slow_client" in body
            elif op == 8:
                close_code = struct.unpack(">H", body[:2])[0] if len(body) >= 2 else 0
                break
    print(json.dumps({"sent": n, "errors": errors, "slow_client": slow, "close": close_code}))


def main():
    mode, url = sys.argv[1], sys.argv[2]
    if mode == "live":
        asyncio.run(live(url, sys.argv[3], int(sys.argv[4]) if len(sys.argv) > 4 else 1))
    elif mode == "drop":
        asyncio.run(drop(url, sys.argv[3]))
    elif mode == "hostile":
        asyncio.run(hostile(url, sys.argv[3]))
    elif mode == "busy":
        asyncio.run(busy(url))
    elif mode == "openai":
        asyncio.run(openai_items(url, sys.argv[3]))
    elif mode == "commits":
        asyncio.run(commits(url, sys.argv[3], int(sys.argv[4])))
    elif mode == "flood":
        flood(url, int(sys.argv[3]))
    elif mode == "hold":
        asyncio.run(hold(url, sys.argv[3], float(sys.argv[4])))


if __name__ == "__main__":
    main()
