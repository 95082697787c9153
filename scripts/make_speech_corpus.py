#!/usr/bin/env python3
"""Synthetic English speech corpus with exact word timings, for the small Voxtral model.

  /usr/bin/python3 scripts/make_speech_corpus.py --out build/corpus [--train-items 2400] [--jobs N]
  python3 scripts/make_speech_corpus.py --text build/corpus/text.json --out DIR --jobs 16

--text reuses the clause selection of an earlier run (text.json), so a machine without
the `bible` program (the GPU machine) makes the same split; libespeak-ng is found on the
library path and its data under $ESPEAK_DATA_PATH (the folder holding espeak-ng-data).
Training items come in chunks of CHUNK items, chunk c drawn from its own seeded
generator, so the corpus is the same whatever --jobs is.

Text: the King James Bible (public domain; Debian bible-kjv + bible-kjv-text, read with
`bible -f`), split into clauses at punctuation, lower-cased; only clauses of 3..10 plain
words ([a-z]+) whose words are all among the --vocab most frequent words of those
clauses are kept (a modest vocabulary a tiny model can learn).  Nothing needs to be
"normalised" further: such clauses hold no digits or symbols, so the text is exactly the
words espeak-ng speaks.  A fixed, seeded set of clauses is held out (never trained on).

Speech: libespeak-ng through ctypes (AUDIO_OUTPUT_SYNCHRONOUS), one clause per synthesis.
Word timings are exact: the synthesis callback reports an espeakEVENT_WORD per word with
its sample position in the output.  espeak-ng sometimes speaks two words as one phonetic
word ("there be") and then reports one event for both; such renditions are dropped (the
word events must match the words one to one).  22050 Hz output is resampled to 16 kHz
(FFT, band-limited).  Voices: espeak-ng's English voices with its voice variants, random
rate (wpm), pitch and pitch range; the held-out voice (a regional voice AND a variant
never used in training) speaks only the held-out evaluation set.

Augmentation (training items only): random gain, white noise at 20..45 dB SNR (half the
items), a synthetic room reverb (exponentially decaying noise, RT60 0.1..0.4 s; a third
of the items).  A training item is 1..3 clauses in one voice with 0.1..0.7 s pauses.

Output (--out):
  train_mel.npy      float16 [sum F, 128] log-mel of every training item, padded exactly
                     as the engine pads a file (32 tokens left, to a token plus D+11 right)
  train_index.json   per item: mel offset, tokens T, words, word start/end times (s, from
                     the start of the real audio), voice
  eval/<set>/NNN.wav eval sets (16 kHz s16 mono, no augmentation): "seen" = held-out
                     clauses in training voices, "unseen" = held-out clauses in the
                     held-out voice; NNN.txt the words, NNN.words.json word times
  text.json          vocabulary, train and held-out clauses
"""
import argparse
import ctypes
import json
import os
import re
import subprocess
import sys
import time
import wave
from collections import Counter

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import vox_ref  # noqa: E402  (the engine's mel and padding, proven against transformers)

RATE = 16000
TRAIN_VOICES = ["en", "en-us", "en-gb-scotland", "en-gb-x-gbclan", "en-gb-x-gbcwmd", "en-029",
                "en-us-nyc"]
TRAIN_VARIANTS = ["", "m1", "m2", "m3", "m4", "m6", "m7", "f1", "f2", "f3", "f5", "klatt"]
HELDOUT_VOICE = "en-gb-x-rp+f4"   # neither the regional voice nor the variant is trained on
DELAY_TOKENS = 6


# ---------------------------------------------------------------- text
def kjv_clauses():
    out = subprocess.run(["bible", "-f", "gen1:1-rev22:21"], check=True, capture_output=True,
                         text=True).stdout
    cl = []
    for line in out.splitlines():
        m = re.match(r"^\S+\d+:\d+\s+(.*)$", line.strip())
        if not m:
            continue
        for c in re.split(r"[,;:.?!()]", m.group(1)):
            w = c.lower().split()
            if 3 <= len(w) <= 10 and all(re.fullmatch(r"[a-z]+", x) for x in w):
                cl.append(" ".join(w))
    return sorted(set(cl))


def select_text(n_vocab, n_heldout, seed):
    cl = kjv_clauses()
    freq = Counter(x for c in cl for x in c.split())
    vocab = sorted(w for w, _ in freq.most_common(n_vocab))
    vs = set(vocab)
    keep = [c for c in cl if all(x in vs for x in c.split())]
    rng = np.random.default_rng(seed)
    rng.shuffle(keep)
    return vocab, keep[n_heldout:], keep[:n_heldout]


# ---------------------------------------------------------------- espeak-ng
class _Event(ctypes.Structure):
    _fields_ = [("type", ctypes.c_int), ("unique_identifier", ctypes.c_uint),
                ("text_position", ctypes.c_int), ("length", ctypes.c_int),
                ("audio_position", ctypes.c_int), ("sample", ctypes.c_int),
                ("user_data", ctypes.c_void_p), ("id", ctypes.c_char * 8)]


_CB = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.POINTER(ctypes.c_short), ctypes.c_int,
                       ctypes.POINTER(_Event))
EV_WORD, EV_END = 1, 0


class Espeak:
    def __init__(self):
        self.lib = ctypes.CDLL("libespeak-ng.so.1")
        data = os.environ.get("ESPEAK_DATA_PATH")
        self.rate = self.lib.espeak_Initialize(2, 0, data.encode() if data else None, 0)  # SYNCHRONOUS
        if self.rate <= 0:
            raise SystemExit("espeak_Initialize failed")
        self._cb = _CB(self._callback)
        self.lib.espeak_SetSynthCallback(self._cb)
        self.chunks, self.words = [], []
        self.voice = None

    def _callback(self, wav, n, ev):
        if n > 0:
            self.chunks.append(np.ctypeslib.as_array(wav, (n,)).copy())
        i = 0
        while ev[i].type != EV_END:
            if ev[i].type == EV_WORD:
                self.words.append((ev[i].text_position, ev[i].length, ev[i].sample))
            i += 1
        return 0

    def say(self, text, voice, wpm, pitch, pitch_range):
        """-> (int16 samples at self.rate, [word start sample]) or None if events mismatch."""
        # selecting a voice scans espeak-ng's voice files (about 4 ms here, far more on a
        # sandboxed machine's file system): only when it changes
        if voice != self.voice:
            if self.lib.espeak_SetVoiceByName(voice.encode()) != 0:
                raise SystemExit("espeak-ng: no voice %s" % voice)
            self.voice = voice
        for par, val in ((1, wpm), (3, pitch), (4, pitch_range)):   # RATE, PITCH, RANGE
            self.lib.espeak_SetParameter(par, int(val), 0)
        self.chunks, self.words = [], []
        b = text.encode()
        self.lib.espeak_Synth(b, len(b) + 1, 0, 1, 0, 1, None, None)  # POS_CHARACTER, UTF8
        self.lib.espeak_Synchronize()
        x = np.concatenate(self.chunks) if self.chunks else np.zeros(0, np.int16)
        # word i starts at character offset (1-based) of the i-th word
        offs, p = [], 0
        for w in text.split():
            p = text.index(w, p)
            offs.append(p + 1)
            p += len(w)
        if [w[0] for w in self.words] != offs:
            return None
        return x, [w[2] for w in self.words]


def resample(x, r_in, r_out):
    n_out = int(round(len(x) * r_out / r_in))
    X = np.fft.rfft(np.asarray(x, np.float64))
    Y = np.zeros(n_out // 2 + 1, complex)
    k = min(len(X), len(Y))
    Y[:k] = X[:k]
    return np.fft.irfft(Y, n_out) * (n_out / len(x))


def augment(x, rng):
    x = x / max(1e-9, np.abs(x).max())
    if rng.random() < 0.33:                               # room reverb
        rt60 = rng.uniform(0.1, 0.4)
        n = int(rt60 * RATE)
        t = np.arange(n) / RATE
        ir = rng.standard_normal(n) * np.exp(-6.9 * t / rt60)
        ir[0] = 1.0 / rng.uniform(0.15, 0.5)
        y = np.fft.irfft(np.fft.rfft(x, len(x) + n) * np.fft.rfft(ir, len(x) + n))[:len(x)]
        x = y / max(1e-9, np.abs(y).max())
    if rng.random() < 0.5:                                # white noise
        snr = rng.uniform(20, 45)
        p = np.mean(x ** 2)
        x = x + rng.standard_normal(len(x)) * np.sqrt(p / 10 ** (snr / 10))
    return x * rng.uniform(0.1, 0.95) / max(1e-9, np.abs(x).max())


def render(es, clauses, voice, rng, pauses=True):
    """One item: clauses spoken in one voice -> (float audio 16 kHz, words, starts, ends)."""
    wpm = int(rng.integers(135, 211))
    pitch, prange = int(rng.integers(30, 71)), int(rng.integers(30, 81))
    lead = rng.uniform(0.0, 0.4)
    parts, words, starts, ends = [np.zeros(int(lead * RATE))], [], [], []
    t = lead
    for ci, c in enumerate(clauses):
        r = es.say(c, voice, wpm, pitch, prange)
        if r is None:
            return None
        x, ws = r
        y = resample(x.astype(np.float64) / 32768.0, es.rate, RATE)
        st = [t + s / es.rate for s in ws]
        dur = len(y) / RATE
        words += c.split()
        starts += st
        ends += st[1:] + [t + dur]
        parts.append(y)
        t += dur
        if ci + 1 < len(clauses) and pauses:
            gap = rng.uniform(0.1, 0.7)
            parts.append(np.zeros(int(gap * RATE)))
            t += int(gap * RATE) / RATE
    parts.append(np.zeros(int(rng.uniform(0.0, 0.3) * RATE)))
    return np.concatenate(parts), words, starts, ends


def voice_of(rng):
    v = TRAIN_VOICES[rng.integers(len(TRAIN_VOICES))]
    var = TRAIN_VARIANTS[rng.integers(len(TRAIN_VARIANTS))]
    return v + ("+" + var if var else "")


def to_i16(x):
    return np.clip(np.round(x * 32767), -32768, 32767).astype(np.int16)


def write_wav(path, x16):
    with wave.open(path, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(RATE)
        w.writeframes(x16.astype("<i2").tobytes())


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default="build/corpus")
    ap.add_argument("--vocab", type=int, default=200)
    ap.add_argument("--heldout", type=int, default=300, help="held-out clauses")
    ap.add_argument("--train-items", type=int, default=2400)
    ap.add_argument("--eval-items", type=int, default=60, help="per eval set")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--text", help="text.json of an earlier run: its vocabulary and clause split")
    ap.add_argument("--jobs", type=int, default=1, help="synthesis processes")
    ap.add_argument("--no-eval", action="store_true", help="training items only")
    ap.add_argument("--stream", action="store_true",
                    help="write each chunk as it is made (chunk_NNNNN.npy, then .json) for a trainer "
                         "that starts at once (train_small_model.py --stream); no combined files")
    a = ap.parse_args()
    os.makedirs(a.out, exist_ok=True)
    t0 = time.time()
    if a.text:
        tj = json.load(open(a.text))
        vocab, train_cl, held_cl = tj["vocab"], tj["train"], tj["heldout"]
    else:
        vocab, train_cl, held_cl = select_text(a.vocab, a.heldout, a.seed)
    with open(os.path.join(a.out, "text.json"), "w") as f:
        json.dump({"vocab": vocab, "train": train_cl, "heldout": held_cl,
                   "train_voices": TRAIN_VOICES, "train_variants": TRAIN_VARIANTS,
                   "heldout_voice": HELDOUT_VOICE}, f, indent=0)
    print("text: %d words, %d train clauses, %d held out" % (len(vocab), len(train_cl), len(held_cl)))
    rng = np.random.default_rng(a.seed + 100)

    # training items, in seeded chunks (the same corpus for any --jobs)
    n_chunks = (a.train_items + CHUNK - 1) // CHUNK
    work = [(a.seed, c, min(CHUNK, a.train_items - c * CHUNK), train_cl) for c in range(n_chunks)]
    keep = (lambda r, i: write_chunk(a.out, i, r)) if a.stream else (lambda r, i: r)
    if a.jobs > 1:
        import multiprocessing as mp
        with mp.get_context("fork").Pool(a.jobs) as pool:
            done = pool.imap(train_chunk, work)
            parts = [keep(_progress(r, i, n_chunks, t0), i) for i, r in enumerate(done)]
    else:
        parts = [keep(_progress(train_chunk(w), i, n_chunks, t0), i) for i, w in enumerate(work)]
    if a.stream:
        print("train: %d chunks written (%.0f s)" % (n_chunks, time.time() - t0))
        return
    index, mels, off, dropped = [], [], 0, 0
    for ms, ix, dr in parts:
        for m, it in zip(ms, ix):
            it["off"] = off
            off += m.shape[0]
            index.append(it)
            mels.append(m)
        dropped += dr
    np.save(os.path.join(a.out, "train_mel.npy"), np.concatenate(mels))
    with open(os.path.join(a.out, "train_index.json"), "w") as f:
        json.dump({"delay_tokens": DELAY_TOKENS, "items": index}, f)
    secs = sum(it["n"] for it in index) / RATE
    print("train: %d items, %.0f s of speech, %d renditions dropped (joined words), %.0f s"
          % (len(index), secs, dropped, time.time() - t0))

    # eval sets: one held-out clause per file, clean
    for name in () if a.no_eval else ("seen", "unseen"):
        d = os.path.join(a.out, "eval", name)
        os.makedirs(d, exist_ok=True)
        k, i = 0, 0
        while k < a.eval_items and i < len(held_cl):
            c = held_cl[i]
            i += 1
            voice = HELDOUT_VOICE if name == "unseen" else voice_of(rng)
            r = render(_espeak(), [c], voice, rng)
            if r is None:
                continue
            x, words, st, en = r
            x = 0.6 * x / max(1e-9, np.abs(x).max())
            base = os.path.join(d, "%03d" % k)
            write_wav(base + ".wav", to_i16(x))
            with open(base + ".txt", "w") as f:
                f.write(" ".join(words) + "\n")
            with open(base + ".words.json", "w") as f:
                json.dump({"voice": voice, "words": [{"word": w, "start": round(s, 4), "end": round(e, 4)}
                                                     for w, s, e in zip(words, st, en)]}, f)
            k += 1
        print("eval/%s: %d files" % (name, k))


CHUNK = 50
_ES = None


def write_chunk(out, i, r):
    """--stream: chunk i's mel and index (offsets within the chunk); the .json last, so
    that a reader that sees it finds the .npy complete. Returns an empty part."""
    mels, index, dropped = r
    off = 0
    for m, it in zip(mels, index):
        it["off"] = off
        off += m.shape[0]
    base = os.path.join(out, "chunk_%05d" % i)
    with open(base + ".npy.tmp", "wb") as f:
        np.save(f, np.concatenate(mels) if mels else np.zeros((0, 128), np.float16))
    os.replace(base + ".npy.tmp", base + ".npy")
    with open(base + ".json.tmp", "w") as f:
        json.dump({"delay_tokens": DELAY_TOKENS, "items": index, "dropped": dropped}, f)
    os.replace(base + ".json.tmp", base + ".json")
    return [], [], dropped


def _progress(r, i, n, t0):
    if (i + 1) % 20 == 0 or i + 1 == n:
        print("train: %d/%d chunks (%.0f s)" % (i + 1, n, time.time() - t0), flush=True)
    return r


def _espeak():
    """One synthesiser per process (made after the fork: the library keeps global state)."""
    global _ES
    if _ES is None:
        _ES = Espeak()
    return _ES


def train_chunk(w):
    """(seed, chunk, n items, clauses) -> (mels, index entries without "off", dropped)."""
    seed, c, n_items, train_cl = w
    rng = np.random.default_rng([seed, 1000 + c])
    mels, index, dropped = [], [], 0
    while len(index) < n_items:
        n = int(rng.integers(1, 4))
        cls = [train_cl[j] for j in rng.integers(0, len(train_cl), n)]
        voice = voice_of(rng)
        r = render(_espeak(), cls, voice, rng)
        if r is None:
            dropped += 1
            continue
        x, words, st, en = r
        if len(x) / RATE > 10.0:
            continue
        x = to_i16(augment(x, rng)).astype(np.float32) / 32768.0
        padded, T = vox_ref.pad_audio(x, DELAY_TOKENS)
        mel = vox_ref.log_mel(padded).astype(np.float16)
        assert mel.shape[0] == 8 * T
        mels.append(mel)
        index.append({"T": T, "n": len(x), "voice": voice, "words": words,
                      "start": [round(s, 4) for s in st], "end": [round(e, 4) for e in en]})
    return mels, index, dropped

if __name__ == "__main__":
    main()
