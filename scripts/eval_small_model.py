#!/usr/bin/env python3
"""WER, word start times and real-time factor of a model on synthetic speech with word times.

  /usr/bin/python3 scripts/eval_small_model.py MODEL_DIR DIR_OR_WAV... [--threads N]
        [--backend cpu|cuda] [--max-wer X] [--max-start-err S] [--min-within F] [--max-rtf R]
        [--json OUT.json] [--show N]

Each NNN.wav needs NNN.txt (the words) and may have NNN.words.json (the synthesiser's word
start times, scripts/make_speech_corpus.py).  Runs `voxtral -d MODEL -i NNN.wav --json`
(--backend, default cpu) on every file and reports, over all files together:
  * WER: scripts/wer.py's normalisation and alignment, errors summed over the files
    divided by the reference words summed (not a mean of per-file rates);
  * word starts: each hypothesis word that the alignment matches to a reference word
    ("=") has the time of its first piece (--json "pieces"); the error is that time minus
    the synthesiser's start of the word; reported: mean, max |error| and the share
    within 0.16 s;
  * RTF: the engine's own run time (stats, model load excluded) over the audio duration,
    and the CPU-time RTF: the engine processes' user + system CPU time (getrusage, load
    included) over the audio duration, which a busy shared machine does not inflate;
    --max-rtf applies to the CPU-time RTF.
Exits 1 when a --max-* threshold is exceeded.  Python standard library only.
"""
import argparse
import glob
import resource
import json
import os
import subprocess
import sys
import wave

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import wer as werlib  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def words_of_pieces(pieces):
    """[(word, time)] from --json pieces: a piece that starts with a space (or the first
    piece) starts a word; the word's time is that piece's."""
    out = []
    for p in pieces:
        t = p["text"]
        if not out or t[:1].isspace():
            out.append([t.strip(), p["time"]])
        else:
            out[-1][0] += t
    return [(w, t) for w, t in out if w]


def run(vox, model, wav, threads, backend="cpu"):
    cmd = [vox, "-d", model, "-i", wav, "--json", "--quiet", "--backend", backend]
    if threads:
        cmd += ["-t", str(threads)]
    r = subprocess.run(cmd, capture_output=True, text=True, env=dict(os.environ, OMP_NUM_THREADS=str(threads or 1)))
    if r.returncode != 0:
        raise SystemExit("eval_small_model: %s failed: %s" % (" ".join(cmd), r.stderr.strip()))
    return json.loads(r.stdout)


def run_ms(stats):
    """The engine's processing time (ms) from --json stats, whatever its key."""
    for k in ("run_ms", "total_ms", "wall_ms", "elapsed_ms"):
        if k in stats:
            return float(stats[k])
    if "rtf" in stats and "audio_s" in stats:
        return float(stats["rtf"]) * float(stats["audio_s"]) * 1000
    return None


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("model")
    ap.add_argument("inputs", nargs="+")
    ap.add_argument("-t", "--threads", type=int, default=1, help="engine CPU threads (1)")
    ap.add_argument("--backend", default="cpu", help="the engine's --backend (cpu)")
    ap.add_argument("--max-wer", type=float)
    ap.add_argument("--max-start-err", type=float, help="seconds, on every matched word")
    ap.add_argument("--min-within", type=float,
                    help="fraction of matched words whose start is within 0.16 s (e.g. 0.9)")
    ap.add_argument("--max-rtf", type=float)
    ap.add_argument("--json")
    ap.add_argument("--show", type=int, default=0, help="print the diff of the N worst files")
    a = ap.parse_args()
    vox = os.environ.get("VOXTRAL", os.path.join(ROOT, "voxtral"))
    wavs = []
    for x in a.inputs:
        wavs += sorted(glob.glob(os.path.join(x, "*.wav"))) if os.path.isdir(x) else [x]
    if not wavs:
        raise SystemExit("eval_small_model: no .wav files in %s" % " ".join(a.inputs))
    ru0 = resource.getrusage(resource.RUSAGE_CHILDREN)
    total_s = 0.0
    errs = nref = 0
    starts, per_file, audio_s, proc_ms = [], [], 0.0, 0.0
    for wav in wavs:
        base = wav[:-4]
        ref = open(base + ".txt").read()
        with wave.open(wav) as w:
            dur = w.getnframes() / w.getframerate()
        total_s += dur
        r = run(vox, a.model, wav, a.threads, a.backend)
        w = werlib.wer(ref, r["text"])
        errs += w["errors"]
        nref += w["ref_words"]
        ms = run_ms(r.get("stats", {}))
        if ms is not None:
            proc_ms += ms
            audio_s += dur
        f = {"wav": wav, "ref": ref.strip(), "hyp": r["text"], "wer": w["wer"], "errors": w["errors"]}
        if os.path.exists(base + ".words.json"):
            syn = json.load(open(base + ".words.json"))["words"]
            hw = words_of_pieces(r["pieces"])
            # normalised words with their times; pieces' words are normalised one by one
            hyp_norm, hyp_t = [], []
            for word, t in hw:
                for nw in werlib.normalize(word):
                    hyp_norm.append(nw)
                    hyp_t.append(t)
            ref_norm, ref_t = [], []
            for s in syn:
                for nw in werlib.normalize(s["word"]):
                    ref_norm.append(nw)
                    ref_t.append(s["start"])
            i = j = 0
            for op, _, _ in werlib.align(ref_norm, hyp_norm):
                if op == "=":
                    starts.append(hyp_t[j] - ref_t[i])
                if op in "=SD":
                    i += 1
                if op in "=SI":
                    j += 1
        per_file.append(f)
    total_wer = errs / max(1, nref)
    res = {"files": len(wavs), "ref_words": nref, "errors": errs, "wer": total_wer}
    line = "%d files, %d words: WER %.2f%% (%d errors)" % (len(wavs), nref, 100 * total_wer, errs)
    if starts:
        ab = [abs(x) for x in starts]
        res.update(start_mean=sum(starts) / len(starts), start_max_abs=max(ab),
                   start_within_160ms=sum(x <= 0.16 for x in ab) / len(ab), start_words=len(starts))
        line += "; word starts (%d matched): mean %+.3f s, max |err| %.3f s, %.1f%% within 0.16 s" % (
            len(starts), res["start_mean"], res["start_max_abs"], 100 * res["start_within_160ms"])
    ru1 = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (ru1.ru_utime - ru0.ru_utime) + (ru1.ru_stime - ru0.ru_stime)
    res["cpu_rtf"] = cpu / max(total_s, 1e-9)
    if audio_s > 0:
        res["rtf"] = proc_ms / 1000.0 / audio_s
        line += "; RTF %.4f (wall, %d thread%s), CPU-time RTF %.4f" % (
            res["rtf"], a.threads, "s" if a.threads > 1 else "", res["cpu_rtf"])
    print(line)
    for f in sorted(per_file, key=lambda f: -f["errors"])[:a.show]:
        if f["errors"]:
            print("  %s: %s" % (os.path.basename(f["wav"]), werlib.word_diff(f["ref"], f["hyp"])))
    res["per_file"] = per_file
    if a.json:
        with open(a.json, "w") as fo:
            json.dump(res, fo, indent=1)
    bad = []
    if a.max_wer is not None and total_wer > a.max_wer:
        bad.append("WER %.4f > %.4f" % (total_wer, a.max_wer))
    if a.max_start_err is not None and starts and res["start_max_abs"] > a.max_start_err:
        bad.append("word start error %.3f s > %.3f s" % (res["start_max_abs"], a.max_start_err))
    if a.min_within is not None and (not starts or res["start_within_160ms"] < a.min_within):
        bad.append("%.1f%% of matched word starts within 0.16 s < %.1f%%" % (
            100 * res.get("start_within_160ms", 0.0), 100 * a.min_within))
    if a.max_rtf is not None and res["cpu_rtf"] > a.max_rtf:
        bad.append("CPU-time RTF %.4f > %.4f" % (res["cpu_rtf"], a.max_rtf))
    if bad:
        print("FAIL: " + "; ".join(bad))
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
