#!/usr/bin/python3
"""Write a random Voxtral Realtime checkpoint in the real Mistral format.

numpy only (no torch). Run it with a Python that has numpy: the shebang names
Debian's /usr/bin/python3 (python3-numpy, installed by scripts/setup.sh), so
`scripts/make_random_model.py ...` works; a python3 without numpy (a pyenv or venv
first on PATH) stops with a message saying so.  Output directory gets:
  consolidated.safetensors  all tensors BF16, Mistral names (MODEL.md section 1)
  params.json               same structure/keys as the real one
  tekken.json               1000 special tokens + (vocab_size - 1000) text pieces

Examples:
  /usr/bin/python3 scripts/make_random_model.py --preset tiny --out models/tiny
  /usr/bin/python3 scripts/make_random_model.py --preset tiny --set dec.sliding_window=12 --out /tmp/m
  /usr/bin/python3 scripts/make_random_model.py --preset full --out models/random-full   (~8.9 GB)

Overrides (--set, repeatable): enc.<field>=V / dec.<field>=V with field in
dim n_layers head_dim hidden_dim n_heads n_kv_heads sliding_window rope_theta norm_eps;
vocab_size=V; init.<name>=V for the weight statistics (see INIT_DEFAULTS).

The same seed, preset and overrides always give the same bytes.

Importable API (used by make_fixtures.py):
  make_config(preset, overrides) -> cfg
  tensor_specs(cfg) -> [(name, shape, kind)]
  draw_tensor(cfg, spec, seed, index) -> float32 array holding bf16-exact values
  write_model(out_dir, cfg, seed, keep=False) -> {name: float32 array} if keep
  params_json(cfg), tekken_json(cfg), read_safetensors(path) -> {name: float32}
"""
import argparse
import base64
import json
import math
import os
import struct
import sys
import time

try:
    import numpy as np
except ImportError:
    sys.exit("make_random_model.py: numpy is missing for %s; run it with /usr/bin/python3 "
             "(Debian's python3-numpy: scripts/setup.sh installs it) or `pip install numpy`" % sys.executable)

E = "mm_streams_embeddings.embedding_module."
W = E + "whisper_encoder."

TOWER_FIELDS = ("dim", "n_layers", "head_dim", "hidden_dim", "n_heads", "n_kv_heads",
                "sliding_window", "rope_theta", "norm_eps")

PRESETS = {
    "tiny": {
        "enc": dict(dim=64, n_layers=2, head_dim=24, hidden_dim=128, n_heads=4, n_kv_heads=4,
                    sliding_window=24, rope_theta=1e6, norm_eps=1e-5),
        "dec": dict(dim=96, n_layers=2, head_dim=32, hidden_dim=160, n_heads=4, n_kv_heads=2,
                    sliding_window=16, rope_theta=1e6, norm_eps=1e-5),
        "vocab_size": 1000 + 300,
    },
    "small": {
        "enc": dict(dim=256, n_layers=4, head_dim=32, hidden_dim=640, n_heads=6, n_kv_heads=6,
                    sliding_window=100, rope_theta=1e6, norm_eps=1e-5),
        "dec": dict(dim=384, n_layers=4, head_dim=64, hidden_dim=1024, n_heads=8, n_kv_heads=2,
                    sliding_window=64, rope_theta=1e6, norm_eps=1e-5),
        "vocab_size": 1000 + 4000,
    },
    "full": {
        "enc": dict(dim=1280, n_layers=32, head_dim=64, hidden_dim=5120, n_heads=32, n_kv_heads=32,
                    sliding_window=750, rope_theta=1e6, norm_eps=1e-5),
        "dec": dict(dim=3072, n_layers=26, head_dim=128, hidden_dim=9216, n_heads=32, n_kv_heads=8,
                    sliding_window=8192, rope_theta=1e6, norm_eps=1e-5),
        "vocab_size": 131072,
    },
}

# Weight statistics (ORACLE.md "Building a random model").
INIT_DEFAULTS = {
    "norm_std": 0.1,        # norm gains 1 + N(0, norm_std)
    "bias_std": 0.05,       # biases N(0, bias_std)
    "lin_gain": 1.0,        # linear weights N(0, lin_gain / sqrt(fan_in))
    "emb_gain": 4.0,        # tied embedding N(0, emb_gain / sqrt(dec.dim)) -> logits std ~emb_gain
    "dec_out_gain": 12.0,   # decoder wo / w2 scaled by this
    "adapter_ratio": 0.5,   # adapter output rms ~ adapter_ratio * embedding std (larger values
                            # make tiny models' greedy ids repeat more; audio still dominates)
    "eos_gain": 1.0,        # embedding row 2 (EOS) scaled by this: > 1 makes EOS come earlier
    "ada_gain": 0.5,        # ada_rms_norm_t_cond.2 gain (ffn scale 1 + s, s ~ +-0.2)
}


def make_config(preset="tiny", overrides=()):
    p = PRESETS[preset]
    cfg = {"preset": preset, "enc": dict(p["enc"]), "dec": dict(p["dec"]),
           "vocab_size": p["vocab_size"], "init": dict(INIT_DEFAULTS),
           "downsample_factor": 4, "num_mel_bins": 128, "ada_t_cond_dim": 32}
    for ov in overrides:
        key, _, val = ov.partition("=")
        if not _:
            raise SystemExit("bad --set %r (want key=value)" % ov)
        parts = key.split(".")
        if len(parts) == 2 and parts[0] in ("enc", "dec") and parts[1] in TOWER_FIELDS:
            t = float if parts[1] in ("rope_theta", "norm_eps") else int
            cfg[parts[0]][parts[1]] = t(val)
        elif len(parts) == 2 and parts[0] == "init" and parts[1] in INIT_DEFAULTS:
            cfg["init"][parts[1]] = float(val)
        elif key in ("vocab_size", "downsample_factor"):
            cfg[key] = int(val)
        else:
            raise SystemExit("unknown --set key %r" % key)
    if cfg["vocab_size"] <= 1000 + 64:
        raise SystemExit("vocab_size must exceed 1064")
    for t in ("enc", "dec"):
        if cfg[t]["n_heads"] % cfg[t]["n_kv_heads"]:
            raise SystemExit("%s.n_heads must be a multiple of n_kv_heads" % t)
        if cfg[t]["head_dim"] % 2:
            raise SystemExit("%s.head_dim must be even" % t)
    return cfg


def tensor_specs(cfg):
    """Ordered [(name, shape, kind)], Mistral names, as in the real checkpoint."""
    enc, dec = cfg["enc"], cfg["dec"]
    ed, dd = enc["dim"], dec["dim"]
    eq, ekv = enc["n_heads"] * enc["head_dim"], enc["n_kv_heads"] * enc["head_dim"]
    dq, dkv = dec["n_heads"] * dec["head_dim"], dec["n_kv_heads"] * dec["head_dim"]
    eh, dh = enc["hidden_dim"], dec["hidden_dim"]
    nm, ds, ada = cfg["num_mel_bins"], cfg["downsample_factor"], cfg["ada_t_cond_dim"]
    s = []
    s.append((E + "tok_embeddings.weight", (cfg["vocab_size"], dd), "emb"))
    s.append((W + "conv_layers.0.conv.weight", (ed, nm, 3), "lin"))
    s.append((W + "conv_layers.0.conv.bias", (ed,), "bias"))
    s.append((W + "conv_layers.1.conv.weight", (ed, ed, 3), "lin"))
    s.append((W + "conv_layers.1.conv.bias", (ed,), "bias"))
    for i in range(enc["n_layers"]):
        p = W + "transformer.layers.%d." % i
        s += [(p + "attention.wq.weight", (eq, ed), "lin"), (p + "attention.wq.bias", (eq,), "bias"),
              (p + "attention.wk.weight", (ekv, ed), "lin"),
              (p + "attention.wv.weight", (ekv, ed), "lin"), (p + "attention.wv.bias", (ekv,), "bias"),
              (p + "attention.wo.weight", (ed, eq), "lin"), (p + "attention.wo.bias", (ed,), "bias"),
              (p + "attention_norm.weight", (ed,), "norm"),
              (p + "feed_forward.w1.weight", (eh, ed), "lin"),
              (p + "feed_forward.w2.weight", (ed, eh), "lin"), (p + "feed_forward.w2.bias", (ed,), "bias"),
              (p + "feed_forward.w3.weight", (eh, ed), "lin"),
              (p + "ffn_norm.weight", (ed,), "norm")]
    s.append((W + "transformer.norm.weight", (ed,), "norm"))
    s.append((E + "audio_language_projection.0.weight", (dd, ed * ds), "lin"))
    s.append((E + "audio_language_projection.2.weight", (dd, dd), "adapter_out"))
    for i in range(dec["n_layers"]):
        p = "layers.%d." % i
        s += [(p + "attention.wq.weight", (dq, dd), "lin"), (p + "attention.wk.weight", (dkv, dd), "lin"),
              (p + "attention.wv.weight", (dkv, dd), "lin"), (p + "attention.wo.weight", (dd, dq), "dec_out"),
              (p + "attention_norm.weight", (dd,), "norm"),
              (p + "feed_forward.w1.weight", (dh, dd), "lin"), (p + "feed_forward.w2.weight", (dd, dh), "dec_out"),
              (p + "feed_forward.w3.weight", (dh, dd), "lin"),
              (p + "ffn_norm.weight", (dd,), "norm"),
              (p + "ada_rms_norm_t_cond.0.weight", (ada, dd), "lin"),
              (p + "ada_rms_norm_t_cond.2.weight", (dd, ada), "ada_out")]
    s.append(("norm.weight", (dd,), "norm"))
    return s


def _std(cfg, shape, kind):
    ini = cfg["init"]
    fan_in = int(np.prod(shape[1:])) if len(shape) > 1 else 1
    if kind == "lin":
        return ini["lin_gain"] / math.sqrt(fan_in)
    if kind == "dec_out":
        return ini["dec_out_gain"] / math.sqrt(fan_in)
    if kind == "ada_out":
        return ini["ada_gain"] / math.sqrt(fan_in)
    if kind == "emb":
        return ini["emb_gain"] / math.sqrt(cfg["dec"]["dim"])
    if kind == "adapter_out":
        # GELU(A1 z) with z rms ~1 and A1 ~ 1/sqrt(fan_in): elements ~N(0,1) -> GELU rms ~0.65
        emb_std = ini["emb_gain"] / math.sqrt(cfg["dec"]["dim"])
        return ini["adapter_ratio"] * emb_std / (0.65 * math.sqrt(fan_in))
    if kind == "bias":
        return ini["bias_std"]
    if kind == "norm":
        return ini["norm_std"]
    raise ValueError(kind)


def bf16_bits(x):
    """float32 array -> uint16 bf16 bits, round to nearest even."""
    u = np.ascontiguousarray(x, dtype=np.float32).view(np.uint32)
    r = (u + np.uint32(0x7FFF) + ((u >> np.uint32(16)) & np.uint32(1))) >> np.uint32(16)
    return r.astype(np.uint16)


def bf16_to_f32(bits):
    return (bits.astype(np.uint32) << np.uint32(16)).view(np.float32)


CHUNK = 1 << 24  # elements per drawing chunk


def iter_tensor_chunks(cfg, spec, seed, index):
    """Yields uint16 bf16 chunks (flattened, C order) of one tensor."""
    name, shape, kind = spec
    n = int(np.prod(shape))
    rng = np.random.default_rng([int(seed), int(index)])
    std = np.float32(_std(cfg, shape, kind))
    done = 0
    while done < n:
        m = min(CHUNK, n - done)
        x = rng.standard_normal(m, dtype=np.float32)
        x *= std
        if kind == "norm":
            x += np.float32(1.0)
        if kind == "emb" and done == 0 and cfg["init"]["eos_gain"] != 1.0:
            d = shape[1]
            x[2 * d:3 * d] *= np.float32(cfg["init"]["eos_gain"])
        yield bf16_bits(x)
        done += m


def draw_tensor(cfg, spec, seed, index):
    """float32 array (bf16-exact values) of one tensor."""
    bits = np.concatenate(list(iter_tensor_chunks(cfg, spec, seed, index)))
    return bf16_to_f32(bits).reshape(spec[1])


def write_safetensors(path, cfg, seed, keep=False):
    specs = tensor_specs(cfg)
    header, off = {}, 0
    for name, shape, _ in specs:
        nb = int(np.prod(shape)) * 2
        header[name] = {"dtype": "BF16", "shape": list(shape), "data_offsets": [off, off + nb]}
        off += nb
    header["__metadata__"] = {"format": "pt"}
    hb = json.dumps(header, separators=(",", ":")).encode()
    hb += b" " * ((8 - len(hb) % 8) % 8)
    kept = {}
    tmp = path + ".tmp"  # then renamed: never overwrite in place a file a run has mmap'd
    with open(tmp, "wb") as f:
        f.write(struct.pack("<Q", len(hb)))
        f.write(hb)
        for i, spec in enumerate(specs):
            parts = []
            for bits in iter_tensor_chunks(cfg, spec, seed, i):
                f.write(bits.astype("<u2", copy=False).tobytes())
                if keep:
                    parts.append(bits)
            if keep:
                kept[spec[0]] = bf16_to_f32(np.concatenate(parts)).reshape(spec[1])
    os.replace(tmp, path)
    return kept, 8 + len(hb) + off


def read_safetensors(path):
    """{name: float32 array} from a BF16/F32 safetensors file (numpy only)."""
    with open(path, "rb") as f:
        n = struct.unpack("<Q", f.read(8))[0]
        header = json.loads(f.read(n))
        base = 8 + n
    mm = np.memmap(path, dtype=np.uint8, mode="r")
    out = {}
    for name, h in header.items():
        if name == "__metadata__":
            continue
        a, b = h["data_offsets"]
        raw = mm[base + a: base + b]
        if h["dtype"] == "BF16":
            arr = bf16_to_f32(raw.view("<u2"))
        elif h["dtype"] == "F32":
            arr = np.array(raw.view("<f4"), dtype=np.float32)
        else:
            raise ValueError("dtype %s" % h["dtype"])
        out[name] = arr.reshape(h["shape"])
    return out


def config_of_params(p):
    """The config dict (as make_config gives) of a params.json: params_json's inverse."""
    ea = p["multimodal"]["whisper_model_args"]["encoder_args"]
    tower = lambda t: {k: t[k] for k in ("dim", "n_layers", "head_dim", "hidden_dim", "n_heads", "n_kv_heads",
                                          "sliding_window", "rope_theta", "norm_eps")}
    return {"enc": tower(ea), "dec": tower(p), "vocab_size": p["vocab_size"],
            "num_mel_bins": ea["audio_encoding_args"]["num_mel_bins"],
            "downsample_factor": p["multimodal"]["whisper_model_args"]["downsample_args"]["downsample_factor"],
            "ada_t_cond_dim": p["ada_rms_norm_t_cond_dim"]}


def params_json(cfg):
    enc, dec = cfg["enc"], cfg["dec"]
    return {
        "dim": dec["dim"], "n_layers": dec["n_layers"], "head_dim": dec["head_dim"],
        "hidden_dim": dec["hidden_dim"], "n_heads": dec["n_heads"], "n_kv_heads": dec["n_kv_heads"],
        "use_biases": False, "causal": True, "rope_theta": float(dec["rope_theta"]),
        "norm_eps": float(dec["norm_eps"]), "vocab_size": cfg["vocab_size"], "model_parallel": 1,
        "tied_embeddings": True, "sliding_window": dec["sliding_window"],
        "model_max_length": 131072,
        "multimodal": {
            "whisper_model_args": {
                "encoder_args": {
                    "audio_encoding_args": {
                        "sampling_rate": 16000, "frame_rate": 12.5,
                        "num_mel_bins": cfg["num_mel_bins"], "hop_length": 160,
                        "window_size": 400, "chunk_length_s": None,
                        "global_log_mel_max": 1.5, "transcription_format": "streaming",
                    },
                    "dim": enc["dim"], "n_layers": enc["n_layers"], "head_dim": enc["head_dim"],
                    "hidden_dim": enc["hidden_dim"], "n_heads": enc["n_heads"],
                    "vocab_size": cfg["vocab_size"], "n_kv_heads": enc["n_kv_heads"],
                    "use_biases": True, "use_cache": False, "rope_theta": float(enc["rope_theta"]),
                    "causal": True, "norm_eps": float(enc["norm_eps"]), "pos_embed": "rope",
                    "max_source_positions": None, "ffn_type": "swiglu", "norm_type": "rms_norm",
                    "sliding_window": enc["sliding_window"],
                },
                "downsample_args": {"downsample_factor": cfg["downsample_factor"]},
            }
        },
        "ada_rms_norm_t_cond": True,
        "ada_rms_norm_t_cond_dim": cfg["ada_t_cond_dim"],
    }


SPECIAL_NAMES = {0: "<unk>", 1: "<s>", 2: "</s>", 24: "[AUDIO]", 25: "[BEGIN_AUDIO]",
                 32: "[STREAMING_PAD]", 33: "[STREAMING_WORD]"}

_WORDS = ("the of and to in is that it was for on are as with his they at be this from have "
          "or by one had not but what all were when we there can an your which their said if "
          "do will each about how up out them then she many some so these would other into has "
          "more her two like him see time could no make than first been its who now people my "
          "made over did down only way find use may water long little very after words called "
          "just where most know hello test speech text system voice model world").split()
_PUNCT = [".", ",", "!", "?", ";", ":", "'", "\"", "-", "(", ")", "...", "'s", "n't", " -", ".\n"]
_UTF8 = ["é", "è", "à", "ü", "ö", "ß", "ñ", "ç", " über", " café", "ł", "€", "—", "…",
         "日", "本", "語", "你好", "Привет", " мир", "ا", "😀"]
_SYL = [c + v for c in "bcdfghjklmnprstvwz" for v in "aeiou"]


def text_pieces(n):
    """n distinct byte strings in the style of tekken pieces (deterministic)."""
    out, seen = [], set()

    def add(b):
        if b not in seen and len(out) < n:
            seen.add(b)
            out.append(b)

    add(b"\x00")                                  # id 1000 = raw byte 0 (as in tekken)
    # a 3-byte character split over two pieces: U+20AC (E2 82 AC) -> b"\xe2\x82" + b"\xac",
    # and U+3042 (E3 81 82) -> b"\xe3" + b"\x81\x82"
    for b in (b"\xe2\x82", b"\xac", b"\xe3", b"\x81\x82"):
        add(b)
    for c in "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789":
        add(c.encode())
    add(b" ")
    for p in _PUNCT:
        add(p.encode())
    for u in _UTF8:
        add(u.encode())
    for w in _WORDS:
        add((" " + w).encode())
    for w in _WORDS:
        add(w.encode())
    for w in _WORDS:
        add((" " + w.capitalize()).encode())
    k = 0
    while len(out) < n:                            # synthetic syllable words
        a, k2 = k % len(_SYL), k // len(_SYL)
        word = _SYL[a]
        while k2:
            word += _SYL[k2 % len(_SYL)]
            k2 //= len(_SYL)
        add(word.encode())
        add((" " + word).encode())
        k += 1
    return out


def tekken_json(cfg, n_extra=16):
    n_special = 1000
    n_text = cfg["vocab_size"] - n_special
    pieces = text_pieces(n_text + n_extra)  # extra entries beyond the model vocab (ignored)
    vocab = []
    for r, b in enumerate(pieces):
        try:
            s = b.decode("utf-8")
        except UnicodeDecodeError:
            s = None
        vocab.append({"rank": r, "token_bytes": base64.b64encode(b).decode(), "token_str": s})
    special = [{"rank": i, "token_str": SPECIAL_NAMES.get(i, "<SPECIAL_%d>" % i), "is_control": True}
               for i in range(n_special)]
    return {
        "config": {"pattern": r"[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]*[\p{Ll}\p{Lm}\p{Lo}\p{M}]+|[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]+[\p{Ll}\p{Lm}\p{Lo}\p{M}]*|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n/]*|\s*[\r\n]+|\s+(?!\S)|\s+",
                   "num_vocab_tokens": len(vocab) + n_special,
                   "default_vocab_size": cfg["vocab_size"],
                   "default_num_special_tokens": n_special, "version": "v13"},
        "vocab": vocab,
        "special_tokens": special,
        "audio": {"sampling_rate": 16000, "frame_rate": 12.5,
                  "audio_encoding_config": {"num_mel_bins": cfg["num_mel_bins"], "hop_length": 160,
                                            "window_size": 400},
                  "transcription_delay_ms": 480, "streaming_n_left_pad_tokens": 32,
                  "streaming_look_ahead_ms": 2.5, "streaming_look_back_ms": 52.5},
    }


def write_atomic(path, text):
    """Writes path through a temporary name and a rename, as the weights are: a running
    voxtral keeps the file it opened (overwriting a mmap'd file in place kills it)."""
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        f.write(text)
    os.replace(tmp, path)


def write_model(out_dir, cfg, seed, keep=False, verbose=True):
    os.makedirs(out_dir, exist_ok=True)
    t0 = time.time()
    kept, nbytes = write_safetensors(os.path.join(out_dir, "consolidated.safetensors"), cfg, seed, keep)
    write_atomic(os.path.join(out_dir, "params.json"), json.dumps(params_json(cfg), indent=2) + "\n")
    write_atomic(os.path.join(out_dir, "tekken.json"), json.dumps(tekken_json(cfg), ensure_ascii=False))
    if verbose:
        e, d = cfg["enc"], cfg["dec"]
        nparams = sum(int(np.prod(s[1])) for s in tensor_specs(cfg))
        print("wrote %s: preset=%s seed=%d %d tensors %.3g params %.1f MB "
              "enc %d/%dL/%dx%d(kv%d)/ff%d/win%d dec %d/%dL/%dx%d(kv%d)/ff%d/win%d vocab %d (%.1fs)"
              % (out_dir, cfg["preset"], seed, len(tensor_specs(cfg)), nparams, nbytes / 1e6,
                 e["dim"], e["n_layers"], e["n_heads"], e["head_dim"], e["n_kv_heads"], e["hidden_dim"],
                 e["sliding_window"], d["dim"], d["n_layers"], d["n_heads"], d["head_dim"],
                 d["n_kv_heads"], d["hidden_dim"], d["sliding_window"], cfg["vocab_size"],
                 time.time() - t0))
    return kept


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--preset", choices=sorted(PRESETS), default="tiny")
    ap.add_argument("--out", required=True)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    a = ap.parse_args(argv)
    cfg = make_config(a.preset, a.set)
    write_model(a.out, cfg, a.seed)


if __name__ == "__main__":
    main()
