#!/usr/bin/env python3
"""Independent numpy (float64) forward pass of Voxtral Realtime on a Mistral-format
checkpoint directory.  Written from MODEL.md, not from transformers; make_fixtures.py
compares it with the transformers reference.  Slow: meant for tiny/small models.

  m = VoxRef("tests/fixtures/tiny_tone/model")
  padded, T = pad_audio(samples, delay_tokens)
  mel = m.mel(padded)                    # [F, 128]
  conv = m.conv(mel); enc = m.encoder(conv); ad = m.adapter(enc)
  logits = m.decoder_logits(ids, ad, delay_tokens)   # teacher forced, row p predicts p+1
  ids, logits = m.greedy(ad, delay_tokens)            # like transformers generate

Also usable from the command line:
  /usr/bin/python3 scripts/vox_ref.py MODEL_DIR input.wav [--delay-ms 480]
"""
import json
import math
import os
import struct
import sys
import wave

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import make_random_model as mrm  # noqa: E402

SAMPLES_PER_TOKEN = 1280
LEFT_PAD_TOKENS = 32
BOS, EOS, PAD, WORD = 1, 2, 32, 33

_erf = np.frompyfunc(math.erf, 1, 1)


def gelu(x):
    return 0.5 * x * (1.0 + _erf(x / math.sqrt(2.0)).astype(np.float64))


def silu(x):
    return x / (1.0 + np.exp(-x))


def read_wav(path):
    """16-bit PCM WAV -> (int16 samples mono, rate)."""
    with wave.open(path, "rb") as w:
        nch, sw, rate, n = w.getnchannels(), w.getsampwidth(), w.getframerate(), w.getnframes()
        raw = w.readframes(n)
    if sw != 2:
        raise ValueError("%s: need 16-bit PCM" % path)
    x = np.frombuffer(raw, dtype="<i2").reshape(-1, nch)
    if nch != 1:
        raise ValueError("%s: need mono" % path)
    return x[:, 0].copy(), rate


def write_wav(path, samples_i16, rate=16000):
    with wave.open(path, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(np.asarray(samples_i16, dtype="<i2").tobytes())


def delay_tokens_from_ms(ms):
    return int(ms) // 80


def pad_audio(x, delay_tokens):
    """float waveform -> (padded float32 waveform, n_audio_tokens), as the reference processor."""
    x = np.asarray(x, dtype=np.float32)
    n = len(x)
    right = (-n) % SAMPLES_PER_TOKEN + (delay_tokens + 11) * SAMPLES_PER_TOKEN
    left = LEFT_PAD_TOKENS * SAMPLES_PER_TOKEN
    padded = np.concatenate([np.zeros(left, np.float32), x, np.zeros(right, np.float32)])
    assert len(padded) % SAMPLES_PER_TOKEN == 0
    return padded, len(padded) // SAMPLES_PER_TOKEN


def prompt_ids(delay_tokens):
    return [BOS] + [PAD] * (LEFT_PAD_TOKENS + delay_tokens)


# ---------------------------------------------------------------- mel
def hz_to_mel(f):
    f = np.asarray(f, dtype=np.float64)
    return np.where(f < 1000.0, 3.0 * f / 200.0, 15.0 + np.log(np.maximum(f, 1e-10) / 1000.0) * 27.0 / np.log(6.4))


def mel_to_hz(m):
    m = np.asarray(m, dtype=np.float64)
    return np.where(m < 15.0, 200.0 * m / 3.0, 1000.0 * np.exp(np.log(6.4) * (m - 15.0) / 27.0))


def mel_filters(n_mels=128, n_fft=400, rate=16000, fmax=8000.0):
    """[n_fft/2+1, n_mels] Slaney-scale, Slaney-normalised triangles over 0..fmax."""
    fft_freqs = np.linspace(0, rate // 2, n_fft // 2 + 1)
    mel_pts = np.linspace(hz_to_mel(0.0), hz_to_mel(fmax), n_mels + 2)
    f_pts = mel_to_hz(mel_pts)
    fdiff = np.diff(f_pts)
    slopes = f_pts[None, :] - fft_freqs[:, None]
    down = -slopes[:, :-2] / fdiff[:-1]
    up = slopes[:, 2:] / fdiff[1:]
    fb = np.maximum(0.0, np.minimum(down, up))
    fb *= 2.0 / (f_pts[2:n_mels + 2] - f_pts[:n_mels])
    return fb


def log_mel(x, n_mels=128, n_fft=400, hop=160, log_mel_max=1.5):
    """padded waveform -> [len/hop, n_mels] (frames as rows)."""
    x = np.asarray(x, dtype=np.float64)
    xp = np.pad(x, (n_fft // 2, n_fft // 2), mode="reflect")
    n_frames = 1 + (len(xp) - n_fft) // hop
    idx = np.arange(n_fft)[None, :] + hop * np.arange(n_frames)[:, None]
    win = 0.5 - 0.5 * np.cos(2 * np.pi * np.arange(n_fft) / n_fft)
    spec = np.fft.rfft(xp[idx] * win, axis=1)
    power = (spec.real ** 2 + spec.imag ** 2)[:-1]          # drop the last frame
    mel = power @ mel_filters(n_mels, n_fft)
    lg = np.log10(np.maximum(mel, 1e-10))
    lg = np.maximum(lg, log_mel_max - 8.0)
    return (lg + 4.0) / 4.0


# ---------------------------------------------------------------- model
def t_cond(dim, delay_tokens):
    """[cos(D * w_j), sin(D * w_j)], w_j = 10000^(-j/(dim/2)), j < dim/2."""
    inv = np.exp(-math.log(10000.0) * np.arange(dim // 2) / (dim // 2))
    return np.concatenate([np.cos(delay_tokens * inv), np.sin(delay_tokens * inv)])


def rmsnorm(x, w, eps):
    return x / np.sqrt(np.mean(x * x, axis=-1, keepdims=True) + eps) * w


def rope_interleaved(x, pos, theta):
    """x [T, H, hd], pairs (2i, 2i+1) rotated by pos * theta^(-2i/hd)."""
    hd = x.shape[-1]
    inv = 1.0 / theta ** (np.arange(0, hd, 2, dtype=np.float64) / hd)
    ang = np.asarray(pos, dtype=np.float64)[:, None] * inv[None, :]
    c, s = np.cos(ang)[:, None, :], np.sin(ang)[:, None, :]
    a, b = x[..., 0::2], x[..., 1::2]
    out = np.empty_like(x)
    out[..., 0::2] = a * c - b * s
    out[..., 1::2] = a * s + b * c
    return out


def attention(q, k, v, qpos, kpos, window):
    """q [Tq,H,hd], k/v [Tk,Hkv,hd]; key j visible iff qpos-window < kpos <= qpos."""
    H, Hkv, hd = q.shape[1], k.shape[1], q.shape[2]
    g = H // Hkv
    k = np.repeat(k, g, axis=1)
    v = np.repeat(v, g, axis=1)
    sc = np.einsum("thd,shd->hts", q, k) / math.sqrt(hd)
    qp, kp = np.asarray(qpos)[:, None], np.asarray(kpos)[None, :]
    vis = (kp <= qp) & (kp > qp - window)
    sc = np.where(vis[None], sc, -np.inf)
    sc -= sc.max(axis=-1, keepdims=True)
    p = np.exp(sc)
    p /= p.sum(axis=-1, keepdims=True)
    return np.einsum("hts,shd->thd", p, v)


class VoxRef:
    def __init__(self, model_dir):
        self.dir = model_dir
        with open(os.path.join(model_dir, "params.json")) as f:
            p = json.load(f)
        ea = p["multimodal"]["whisper_model_args"]["encoder_args"]
        self.p = p
        self.enc = dict(dim=ea["dim"], n_layers=ea["n_layers"], head_dim=ea["head_dim"],
                        n_heads=ea["n_heads"], n_kv_heads=ea["n_kv_heads"], theta=float(ea["rope_theta"]),
                        eps=float(ea["norm_eps"]), window=int(ea["sliding_window"]))
        self.dec = dict(dim=p["dim"], n_layers=p["n_layers"], head_dim=p["head_dim"], n_heads=p["n_heads"],
                        n_kv_heads=p["n_kv_heads"], theta=float(p["rope_theta"]), eps=float(p["norm_eps"]),
                        window=int(p["sliding_window"]))
        self.ds = p["multimodal"]["whisper_model_args"]["downsample_args"]["downsample_factor"]
        self.n_mels = ea["audio_encoding_args"]["num_mel_bins"]
        self.log_mel_max = ea["audio_encoding_args"]["global_log_mel_max"]
        t = mrm.read_safetensors(os.path.join(model_dir, "consolidated.safetensors"))
        self.w = {k: v.astype(np.float64) for k, v in t.items()}

    # --- audio
    def mel(self, padded):
        return log_mel(padded, self.n_mels, log_mel_max=self.log_mel_max)

    def conv(self, mel):
        W = mrm.W
        w0, b0 = self.w[W + "conv_layers.0.conv.weight"], self.w[W + "conv_layers.0.conv.bias"]
        w1, b1 = self.w[W + "conv_layers.1.conv.weight"], self.w[W + "conv_layers.1.conv.bias"]
        F = mel.shape[0]
        x = np.concatenate([np.zeros((2, mel.shape[1])), mel])          # left pad 2
        y = b0[None] + sum(x[k:k + F] @ w0[:, :, k].T for k in range(3))
        y = gelu(y)
        x = np.concatenate([np.zeros((1, y.shape[1])), y])               # left pad 1
        n = (x.shape[0] - 3) // 2 + 1
        z = b1[None] + sum(x[k:k + 2 * n:2] @ w1[:, :, k].T for k in range(3))
        return gelu(z)

    def encoder(self, x):
        c, w = self.enc, self.w
        T = x.shape[0]
        pos = np.arange(T)
        for i in range(c["n_layers"]):
            p = mrm.W + "transformer.layers.%d." % i
            n = rmsnorm(x, w[p + "attention_norm.weight"], c["eps"])
            q = (n @ w[p + "attention.wq.weight"].T + w[p + "attention.wq.bias"]).reshape(T, c["n_heads"], -1)
            k = (n @ w[p + "attention.wk.weight"].T).reshape(T, c["n_kv_heads"], -1)
            v = (n @ w[p + "attention.wv.weight"].T + w[p + "attention.wv.bias"]).reshape(T, c["n_kv_heads"], -1)
            q, k = rope_interleaved(q, pos, c["theta"]), rope_interleaved(k, pos, c["theta"])
            a = attention(q, k, v, pos, pos, c["window"]).reshape(T, -1)
            x = x + a @ w[p + "attention.wo.weight"].T + w[p + "attention.wo.bias"]
            m = rmsnorm(x, w[p + "ffn_norm.weight"], c["eps"])
            h = silu(m @ w[p + "feed_forward.w1.weight"].T) * (m @ w[p + "feed_forward.w3.weight"].T)
            x = x + h @ w[p + "feed_forward.w2.weight"].T + w[p + "feed_forward.w2.bias"]
        return rmsnorm(x, w[mrm.W + "transformer.norm.weight"], c["eps"])

    def adapter(self, enc):
        z = enc.reshape(-1, enc.shape[1] * self.ds)
        a0 = self.w[mrm.E + "audio_language_projection.0.weight"]
        a2 = self.w[mrm.E + "audio_language_projection.2.weight"]
        return gelu(z @ a0.T) @ a2.T

    # --- decoder
    def t_cond(self, delay_tokens):
        return t_cond(self.dec["dim"], delay_tokens)

    def ffn_scales(self, delay_tokens):
        tc = self.t_cond(delay_tokens)
        out = []
        for i in range(self.dec["n_layers"]):
            p = "layers.%d." % i
            out.append(1.0 + self.w[p + "ada_rms_norm_t_cond.2.weight"] @ gelu(self.w[p + "ada_rms_norm_t_cond.0.weight"] @ tc))
        return out

    def new_cache(self):
        return {"k": [[] for _ in range(self.dec["n_layers"])], "v": [[] for _ in range(self.dec["n_layers"])],
                "pos": []}

    def decoder_step(self, cache, x, pos, scales):
        """x [M, dim] input embeddings at positions pos; returns logits [M, V]; updates cache."""
        c, w = self.dec, self.w
        M = x.shape[0]
        kpos = np.array(cache["pos"] + list(pos))
        for i in range(c["n_layers"]):
            p = "layers.%d." % i
            n = rmsnorm(x, w[p + "attention_norm.weight"], c["eps"])
            q = (n @ w[p + "attention.wq.weight"].T).reshape(M, c["n_heads"], -1)
            k = (n @ w[p + "attention.wk.weight"].T).reshape(M, c["n_kv_heads"], -1)
            v = (n @ w[p + "attention.wv.weight"].T).reshape(M, c["n_kv_heads"], -1)
            q, k = rope_interleaved(q, pos, c["theta"]), rope_interleaved(k, pos, c["theta"])
            cache["k"][i].append(k)
            cache["v"][i].append(v)
            K, V = np.concatenate(cache["k"][i]), np.concatenate(cache["v"][i])
            a = attention(q, K, V, pos, kpos, c["window"]).reshape(M, -1)
            x = x + a @ w[p + "attention.wo.weight"].T
            m = rmsnorm(x, w[p + "ffn_norm.weight"], c["eps"]) * scales[i]
            h = silu(m @ w[p + "feed_forward.w1.weight"].T) * (m @ w[p + "feed_forward.w3.weight"].T)
            x = x + h @ w[p + "feed_forward.w2.weight"].T
        cache["pos"] += list(pos)
        x = rmsnorm(x, w["norm.weight"], c["eps"])
        return x @ w[mrm.E + "tok_embeddings.weight"].T

    def decoder_logits(self, ids, adapter, delay_tokens):
        """Teacher forced: logits for every position of ids (row p predicts id p+1)."""
        ids = np.asarray(ids)
        emb = self.w[mrm.E + "tok_embeddings.weight"]
        x = emb[ids] + adapter[:len(ids)]
        return self.decoder_step(self.new_cache(), x, np.arange(len(ids)), self.ffn_scales(delay_tokens))

    def greedy(self, adapter, delay_tokens, max_new=None):
        """Like transformers generate: prompt, then at most T - L ids, stop at EOS (kept)."""
        emb = self.w[mrm.E + "tok_embeddings.weight"]
        scales = self.ffn_scales(delay_tokens)
        prompt = prompt_ids(delay_tokens)
        L, T = len(prompt), adapter.shape[0]
        n_max = T - L if max_new is None else min(max_new, T - L)
        cache = self.new_cache()
        lg = self.decoder_step(cache, emb[prompt] + adapter[:L], np.arange(L), scales)[-1]
        ids, logits = [], []
        for step in range(n_max):
            nid = int(np.argmax(lg))
            ids.append(nid)
            logits.append(lg)
            if nid == EOS or step == n_max - 1:
                break
            p = L + step
            lg = self.decoder_step(cache, emb[[nid]] + adapter[p:p + 1], np.array([p]), scales)[0]
        return np.array(ids, dtype=np.int32), np.array(logits)

    def run(self, samples_f32, delay_tokens):
        padded, T = pad_audio(samples_f32, delay_tokens)
        mel = self.mel(padded)
        conv = self.conv(mel)
        enc = self.encoder(conv)
        ad = self.adapter(enc)
        ids, logits = self.greedy(ad, delay_tokens)
        return dict(padded=padded, T=T, mel=mel, conv=conv, enc=enc, adapter=ad, ids=ids, logits=logits)


def main():
    import argparse
    ap = argparse.ArgumentParser()
    ap.add_argument("model_dir")
    ap.add_argument("wav")
    ap.add_argument("--delay-ms", type=int, default=480)
    a = ap.parse_args()
    m = VoxRef(a.model_dir)
    x, rate = read_wav(a.wav)
    assert rate == 16000
    r = m.run(x.astype(np.float32) / 32768.0, delay_tokens_from_ms(a.delay_ms))
    print("T=%d ids(%d)=%s" % (r["T"], len(r["ids"]), " ".join(map(str, r["ids"]))))
    print("distinct ids %d, logits std %.3f" % (len(set(r["ids"].tolist())), r["logits"].std()))


if __name__ == "__main__":
    main()
