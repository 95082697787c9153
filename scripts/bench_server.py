#!/usr/bin/python3
"""bench_server.py - load generator for `voxtral serve` (a benchmark, never a test).

  scripts/bench_server.py URL WAV [-n 1,4,16] [-s SECONDS] [--json FILE]

URL is the server's base (http://127.0.0.1:8000). Per N: N realtime sessions (vLLM
protocol, /v1/realtime), each streaming WAV (16 kHz PCM16 mono, looped) at real-time
pace, 80 ms per message on an absolute schedule, starts staggered over one 80 ms
period, for SECONDS (default 20); then `commit final` and the wait for
transcription.done. Reported per N:
  * token latency beyond the model delay, p50/p95/p99, from the server's own histogram
    (/metrics voxtral_token_latency_seconds; a quantile is the upper edge of the bucket
    that holds it, so "<= 0.15" means within 150 ms): over the live phase (the
    histogram's difference from the start to the moment the sessions stop streaming:
    what bench_streams measures), and over the whole run (with the tokens decoded
    after the final commits: every session ending at the same moment is a burst of
    right-pad work, which the end lag shows too);
  * the end lag: transcription.done minus the final commit, p50/max over sessions;
  * the client's own lag (how far its sends fell behind their schedule: it must stay
    small for the figures to mean anything), and every session's errors;
  * kept: no errors, live p95 latency <= 150 ms, every end lag <= 2 s.
The largest N kept is printed last. Needs python3-websockets (Debian).
"""
import argparse, asyncio, base64, json, sys, time, urllib.request, wave

import websockets

PERIOD = 0.08


def pcm_of(path):
    with wave.open(path, "rb") as w:
        if w.getsampwidth() != 2 or w.getnchannels() != 1 or w.getframerate() != 16000:
            raise SystemExit("bench_server: %s: 16 kHz 16-bit mono WAV expected" % path)
        return w.readframes(w.getnframes())


def histogram(base):
    """{le: cumulative count} of voxtral_token_latency_seconds"""
    text = urllib.request.urlopen(base + "/metrics", timeout=10).read().decode()
    h = {}
    for line in text.splitlines():
        if line.startswith("voxtral_token_latency_seconds_bucket{le=\""):
            le = line.split('"')[1]
            h[float("inf") if le == "+Inf" else float(le)] = int(float(line.split()[-1]))
    return h


def quantile(before, after, q):
    edges = sorted(after)
    d = [after[e] - before.get(e, 0) for e in edges]
    if not d or d[-1] == 0:
        return None
    for e, c in zip(edges, d):
        if c >= q * d[-1]:
            return e
    return edges[-1]


async def session(url, pcm, seconds, start, out):
    chunk = int(16000 * PERIOD) * 2
    r = {"errors": [], "lag": 0.0}
    try:
        async with websockets.connect(url, max_size=None) as ws:
            ev = json.loads(await asyncio.wait_for(ws.recv(), 30))
            if ev.get("type") != "session.created":
                r["errors"].append(ev.get("error", ev))
                out.append(r)
                return
            await ws.send(json.dumps({"type": "input_audio_buffer.commit"}))  # vLLM: starts transcription

            async def reader():
                while True:
                    e = json.loads(await ws.recv())
                    if e["type"] == "transcription.done":
                        return time.monotonic()
                    if e["type"] == "error":
                        r["errors"].append(e.get("code") or e.get("error"))

            rd = asyncio.ensure_future(reader())
            k, off = 0, 0
            while k * PERIOD < seconds:
                due = start + k * PERIOD
                now = time.monotonic()
                if due > now:
                    await asyncio.sleep(due - now)
                r["lag"] = max(r["lag"], time.monotonic() - due)
                piece = pcm[off:off + chunk]
                if len(piece) < chunk:
                    off = 0
                    piece = pcm[:chunk]
                off += chunk
                await ws.send(json.dumps({"type": "input_audio_buffer.append",
                                          "audio": base64.b64encode(piece).decode()}))
                k += 1
            t_final = time.monotonic()
            await ws.send(json.dumps({"type": "input_audio_buffer.commit", "final": True}))
            t_done = await asyncio.wait_for(rd, 120)
            r["end_lag"] = t_done - t_final
    except Exception as e:  # a refused or broken session is a figure too
        r["errors"].append(repr(e)[:200])
    out.append(r)


async def run(base, pcm, n, seconds):
    url = base.replace("http", "ws", 1) + "/v1/realtime"
    before = histogram(base)
    t0 = time.monotonic() + 0.5
    out = []
    live = {}

    async def live_snapshot():  # when the first session sends its last audio (starts staggered by < 80 ms)
        k = 0
        while k * PERIOD < seconds:
            k += 1
        await asyncio.sleep(max(0.0, t0 + (k - 1) * PERIOD - time.monotonic()))
        live.update(await asyncio.get_running_loop().run_in_executor(None, histogram, base))

    await asyncio.gather(live_snapshot(), *[session(url, pcm, seconds, t0 + i * PERIOD / n, out) for i in range(n)])
    after = histogram(base)
    ends = sorted(r["end_lag"] for r in out if "end_lag" in r)
    errs = [e for r in out for e in r["errors"]]
    qs = (("p50", .5), ("p95", .95), ("p99", .99))
    res = {"streams": n, "seconds": seconds,
           "live_latency_s": {q: quantile(before, live, v) for q, v in qs},
           "latency_s": {q: quantile(before, after, v) for q, v in qs},
           "tokens": (after.get(float("inf"), 0) - before.get(float("inf"), 0)),
           "end_lag_s": {"p50": ends[len(ends) // 2] if ends else None, "max": ends[-1] if ends else None},
           "client_lag_s": max(r["lag"] for r in out), "errors": errs[:10], "n_errors": len(errs)}
    p95 = res["live_latency_s"]["p95"]
    res["kept"] = (not errs and len(ends) == n and p95 is not None and p95 <= 0.15 and ends[-1] <= 2.0)
    return res


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("url")
    ap.add_argument("wav")
    ap.add_argument("-n", default="1,4,16")
    ap.add_argument("-s", type=float, default=20)
    ap.add_argument("--json")
    a = ap.parse_args()
    pcm = pcm_of(a.wav)
    rows = []
    print("%5s  %-4s %20s %20s %8s %10s %10s %8s" % ("N", "kept", "live p50/p95/p99 s", "all p50/p95/p99 s",
                                                     "tokens", "end p50 s", "end max s", "errors"))
    for n in [int(x) for x in a.n.split(",")]:
        r = asyncio.run(run(a.url.rstrip("/"), pcm, n, a.s))
        rows.append(r)
        L, A, E = r["live_latency_s"], r["latency_s"], r["end_lag_s"]
        f = lambda v: "-" if v is None else ("%.3g" % v)
        q3 = lambda d: "%s/%s/%s" % (f(d["p50"]), f(d["p95"]), f(d["p99"]))
        print("%5d  %-4s %20s %20s %8d %10s %10s %8d%s" % (
            n, "yes" if r["kept"] else "NO", q3(L), q3(A), r["tokens"],
            f(E["p50"]), f(E["max"]), r["n_errors"],
            "  (client fell %.2f s behind its schedule)" % r["client_lag_s"] if r["client_lag_s"] > 0.2 else ""),
            flush=True)
    kept = [r["streams"] for r in rows if r["kept"]]
    print("largest N kept (live p95 <= 150 ms beyond the delay, every end within 2 s, no errors): %s"
          % (max(kept) if kept else "none"))
    if a.json:  # a latency past the last bucket edge is null (JSON has no infinity)
        fin = lambda o: ({k: fin(v) for k, v in o.items()} if isinstance(o, dict) else [fin(v) for v in o]
                         if isinstance(o, list) else None if o == float("inf") else o)
        with open(a.json, "w") as f:
            json.dump(fin({"url": a.url, "wav": a.wav, "runs": rows}), f, indent=1)


if __name__ == "__main__":
    main()
