#!/usr/bin/python3
"""make_fuzz_corpus.py - writes the libFuzzer seed corpora (tests/fuzz/corpus/<target>/)
and the micro model the loader targets run against (tests/fuzz/model/).

  /usr/bin/python3 scripts/make_fuzz_corpus.py        (from the repository root; numpy)

Targets: safetensors, params, tekken (the model loader, vox_model_load), audio
(vox_audio_read_mem: WAV, FLAC, Ogg Vorbis/Opus, MP3, AIFF, AU, CAF, W64 written
through libsndfile) and stdin (voxtral --stdin's WAV / raw detection). Every file is
small (the micro model is ~60 KB); the same script gives the same files, except the
Ogg streams' random serial numbers.
"""
import ctypes
import ctypes.util
import json
import math
import os
import shutil
import struct
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import make_random_model as mrm  # noqa: E402

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
FUZZ = os.path.join(ROOT, "tests", "fuzz")


def micro_model(out):
    tower = ["n_layers=1", "head_dim=4", "hidden_dim=8", "n_heads=2", "sliding_window=4", "dim=8"]
    sets = ["enc." + t for t in tower] + ["dec." + t for t in tower] + ["enc.n_kv_heads=2", "dec.n_kv_heads=1",
                                                                         "vocab_size=1065"]
    cfg = mrm.make_config("tiny", sets)
    mrm.write_model(out, cfg, seed=7, verbose=False)
    # a shorter tekken.json: only the special tokens the engine looks up
    tk = json.load(open(os.path.join(out, "tekken.json")))
    names = {"<s>", "</s>", "[STREAMING_PAD]"}
    tk["special_tokens"] = [s for s in tk["special_tokens"] if s["token_str"] in names]
    tk["config"].pop("pattern", None)
    for v in tk["vocab"]:
        v.pop("token_str", None)
    with open(os.path.join(out, "tekken.json"), "w") as f:
        json.dump(tk, f, separators=(",", ":"))


def tone(n, rate, f0=440.0, amp=0.3):
    return [amp * math.sin(2 * math.pi * f0 * i / rate) + 0.05 * math.sin(0.37 * i) for i in range(n)]


# ---- audio through libsndfile (ctypes) ----------------------------------------------
class SF_INFO(ctypes.Structure):
    _fields_ = [("frames", ctypes.c_int64), ("samplerate", ctypes.c_int), ("channels", ctypes.c_int),
                ("format", ctypes.c_int), ("sections", ctypes.c_int), ("seekable", ctypes.c_int)]


SF = {"WAV": 0x010000, "AIFF": 0x020000, "AU": 0x030000, "W64": 0x0B0000, "FLAC": 0x170000,
      "CAF": 0x180000, "OGG": 0x200000, "MPEG": 0x230000,
      "PCM_16": 0x0002, "PCM_24": 0x0003, "FLOAT": 0x0006, "ULAW": 0x0010, "IMA_ADPCM": 0x0012,
      "VORBIS": 0x0060, "OPUS": 0x0064, "MPEG_LAYER_III": 0x0082}


def sndfile_write(lib, path, fmt, rate, ch, samples):
    info = SF_INFO(0, rate, ch, fmt, 0, 0)
    lib.sf_open.restype = ctypes.c_void_p
    h = lib.sf_open(path.encode(), 0x20, ctypes.byref(info))
    if not h:
        return False
    n = len(samples) // ch
    buf = (ctypes.c_float * len(samples))(*samples)
    lib.sf_writef_float(ctypes.c_void_p(h), buf, ctypes.c_int64(n))
    lib.sf_close(ctypes.c_void_p(h))
    return True


def audio_corpus(d):
    name = ctypes.util.find_library("sndfile")
    if not name:
        sys.exit("make_fuzz_corpus.py: libsndfile not found")
    lib = ctypes.CDLL(name)
    lib.sf_writef_float.argtypes = [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int64]
    mono = tone(1600, 16000)
    stereo = [v for i, s in enumerate(tone(882, 44100)) for v in (s, -s * 0.5)]
    cases = [("pcm16.wav", "WAV", "PCM_16", 16000, 1, mono), ("float_44k_stereo.wav", "WAV", "FLOAT", 44100, 2, stereo),
             ("ima.wav", "WAV", "IMA_ADPCM", 16000, 1, mono), ("pcm16.flac", "FLAC", "PCM_16", 16000, 1, mono),
             ("pcm24_stereo.flac", "FLAC", "PCM_24", 44100, 2, stereo), ("vorbis.ogg", "OGG", "VORBIS", 16000, 1, mono),
             ("opus.ogg", "OGG", "OPUS", 48000, 1, tone(4800, 48000)), ("mp3.mp3", "MPEG", "MPEG_LAYER_III", 16000, 1, mono),
             ("pcm16.aiff", "AIFF", "PCM_16", 16000, 1, mono), ("ulaw.au", "AU", "ULAW", 8000, 1, tone(800, 8000)),
             ("float.caf", "CAF", "FLOAT", 16000, 1, mono[:400]), ("pcm16.w64", "W64", "PCM_16", 22050, 1, tone(1000, 22050))]
    for fname, major, minor, rate, ch, x in cases:
        if not sndfile_write(lib, os.path.join(d, fname), SF[major] | SF[minor], rate, ch, x):
            print("make_fuzz_corpus.py: this libsndfile cannot write %s (skipped)" % fname)


# ---- stdin: WAV headers as voxtral --stdin parses them, and raw s16le ---------------
def wav_bytes(samples, rate=16000, ch=1, fmt=1, bits=16, data_size=None, extensible=False, extra=b""):
    if fmt == 3:
        data = b"".join(struct.pack("<f", v) for v in samples)
    else:
        data = b"".join(struct.pack("<h", max(-32768, min(32767, int(v * 32767)))) for v in samples)
    block = ch * bits // 8
    if extensible:
        fmt_chunk = struct.pack("<HHIIHHHHIH14s", 0xFFFE, ch, rate, rate * block, block, bits, 22, bits, 4, fmt,
                                b"\x00\x00\x00\x00\x10\x00\x80\x00\x00\xaa\x00\x38\x9b\x71")
    else:
        fmt_chunk = struct.pack("<HHIIHH", fmt, ch, rate, rate * block, block, bits)
    size = len(data) if data_size is None else data_size
    body = b"WAVE" + extra + b"fmt " + struct.pack("<I", len(fmt_chunk)) + fmt_chunk + b"data" + struct.pack("<I", size) + data
    return b"RIFF" + struct.pack("<I", 4 + len(body) - 4 if data_size is None else 0xFFFFFFFF) + body


def stdin_corpus(d):
    x = tone(800, 16000)
    files = {
        "pcm16.wav": wav_bytes(x),
        "float32_stereo.wav": wav_bytes([v for s in x[:400] for v in (s, -s)], ch=2, fmt=3, bits=32),
        "extensible.wav": wav_bytes(x[:400], extensible=True),
        "ffmpeg_pipe.wav": wav_bytes(x[:400], data_size=0xFFFFFFFF),
        "list_chunk.wav": wav_bytes(x[:400], extra=b"LIST" + struct.pack("<I", 5) + b"INFOx\x00"),
        "raw_s16le.raw": b"".join(struct.pack("<h", int(v * 20000)) for v in x),
    }
    for k, v in files.items():
        with open(os.path.join(d, k), "wb") as f:
            f.write(v)


def main():
    model = os.path.join(FUZZ, "model")
    shutil.rmtree(model, ignore_errors=True)
    micro_model(model)
    corp = os.path.join(FUZZ, "corpus")
    for t in ("safetensors", "params", "tekken", "audio", "stdin"):
        shutil.rmtree(os.path.join(corp, t), ignore_errors=True)
        os.makedirs(os.path.join(corp, t))
    shutil.copy(os.path.join(model, "consolidated.safetensors"), os.path.join(corp, "safetensors", "micro.safetensors"))
    shutil.copy(os.path.join(model, "params.json"), os.path.join(corp, "params", "micro.json"))
    p = json.load(open(os.path.join(model, "params.json")))
    p.pop("ada_rms_norm_t_cond", None)  # defaults taken
    p["multimodal"]["whisper_model_args"]["encoder_args"].pop("n_kv_heads", None)
    with open(os.path.join(corp, "params", "defaults.json"), "w") as f:
        json.dump(p, f, separators=(",", ":"))
    shutil.copy(os.path.join(model, "tekken.json"), os.path.join(corp, "tekken", "micro.json"))
    with open(os.path.join(corp, "tekken", "small.json"), "w") as f:
        f.write('{"config": {"default_num_special_tokens": 3, "default_vocab_size": 6}, "vocab": '
                '[{"rank": 1, "token_bytes": "YmM="}, {"rank": 0, "token_bytes": "YQ"}, {"rank": 2, "token_bytes": ""}], '
                '"special_tokens": [{"rank": 0, "token_str": "<s>"}, {"rank": 2, "token_str": "</s>"}, '
                '{"rank": 1, "token_str": "[STREAMING_PAD]"}], "audio": {"transcription_delay_ms": 480}}')
    audio_corpus(os.path.join(corp, "audio"))
    stdin_corpus(os.path.join(corp, "stdin"))
    total = sum(os.path.getsize(os.path.join(r, f)) for r, _, fs in os.walk(FUZZ) for f in fs
                if "corpus" in r or r.endswith("model"))
    print("wrote tests/fuzz/model and tests/fuzz/corpus/{safetensors,params,tekken,audio,stdin}: %d bytes" % total)


if __name__ == "__main__":
    main()
