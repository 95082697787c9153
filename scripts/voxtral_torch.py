#!/usr/bin/env python3
"""Voxtral Realtime in PyTorch, written from MODEL.md and voxtral.c, for training small models.

Parameters carry the Mistral checkpoint names (MODEL.md section 1) so a state dict IS a
consolidated.safetensors: no renaming, no RoPE permutation (q/k rows stay in the Mistral
order and RoPE rotates interleaved pairs (2i, 2i+1), as the engine does).

  conv stem   conv0 (k3, s1, left pad 2) + GELU, conv1 (k3, s2, left pad 1) + GELU
  encoder     pre-norm layers: RMSNorm, MHA with interleaved RoPE at the absolute frame
              index, causal sliding window (key j visible iff i - W < j <= i), biases on
              q/v/o and w2 only; SwiGLU FFN; final RMSNorm
  adapter     4 consecutive frames concatenated, A2 GELU(A1 z), no biases
  decoder     input at position p = adapter[p] + tok_emb[id_p]; pre-norm layers with GQA
              (head h uses kv head h / (n_heads / n_kv_heads)), causal window, no biases;
              FFN input RMSNorm(h) * (1 + s_l), s_l = A2_l GELU(A1_l t_cond(delay));
              logits = RMSNorm(h) tok_emb^T (tied head)
  GELU is exact (erf) everywhere.

Proven equal to the C engine (which tests/test_fixtures.c proves equal to transformers) by
scripts/check_small_model.py: teacher-forced logits against `voxtral --json --topk`.

Needs torch (Debian python3-torch is enough); only the training scripts import this file.
"""
import json
import math

import torch
import torch.nn as nn
import torch.nn.functional as F

E = "mm_streams_embeddings.embedding_module."
_SDPA = hasattr(F, "scaled_dot_product_attention")
W = E + "whisper_encoder."


def rms_norm(x, w, eps):
    return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps) * w


def rope(x, pos, theta):
    """x [..., T, H, hd]; interleaved pairs (2i, 2i+1) rotated by pos * theta^(-2i/hd)."""
    hd = x.shape[-1]
    inv = 1.0 / (theta ** (torch.arange(0, hd, 2, dtype=torch.float32, device=x.device) / hd))
    ang = pos.to(torch.float32)[:, None] * inv[None, :]           # [T, hd/2]
    c, s = torch.cos(ang)[:, None, :], torch.sin(ang)[:, None, :]  # [T, 1, hd/2]
    a, b = x[..., 0::2], x[..., 1::2]
    return torch.stack((a * c - b * s, b * c + a * s), dim=-1).flatten(-2)


def window_mask(T, window, device=None):
    """[T, T] additive mask: 0 where i - window < j <= i, else -inf."""
    i = torch.arange(T, device=device)[:, None]
    j = torch.arange(T, device=device)[None, :]
    ok = (j <= i) & (j > i - window)
    return torch.zeros(T, T, device=device).masked_fill(~ok, float("-inf"))


def conv1d(x, conv, stride, left):
    """Causal conv as an explicit im2col + matmul: x [B, C, F] -> [B, O, F_out] with
    y[t] = b + sum_{c,k} W[o,c,k] x[c, stride*t - left + k].  (Debian torch 1.13's oneDNN
    conv gave sporadic garbage weight gradients here; a plain matmul does not.)"""
    K = conv.weight.shape[2]
    cols = F.pad(x, (left, 0)).unfold(2, K, stride)             # [B, C, F_out, K]
    B, C, T, _ = cols.shape
    cols = cols.permute(0, 2, 1, 3).reshape(B, T, C * K)
    y = cols @ conv.weight.reshape(conv.weight.shape[0], C * K).t() + conv.bias
    return y.transpose(1, 2)


def t_cond(dim, delay_tokens):
    half = dim // 2
    f = torch.exp(-math.log(1e4) * torch.arange(half, dtype=torch.float32) / half)
    a = float(delay_tokens) * f
    return torch.cat([torch.cos(a), torch.sin(a)])


class Tower(nn.Module):
    """Transformer layers of one tower; names relative to the tower's prefix."""

    def __init__(self, a, biases, ada_dim=0):
        super().__init__()
        self.a = a
        d, hd = a["dim"], a["head_dim"]
        q, kv, ff = a["n_heads"] * hd, a["n_kv_heads"] * hd, a["hidden_dim"]
        self.layers = nn.ModuleList()
        for _ in range(a["n_layers"]):
            L = nn.Module()
            L.attention = nn.Module()
            L.attention.wq = nn.Linear(d, q, bias=biases)
            L.attention.wk = nn.Linear(d, kv, bias=False)
            L.attention.wv = nn.Linear(d, kv, bias=biases)
            L.attention.wo = nn.Linear(q, d, bias=biases)
            L.feed_forward = nn.Module()
            L.feed_forward.w1 = nn.Linear(d, ff, bias=False)
            L.feed_forward.w2 = nn.Linear(ff, d, bias=biases)
            L.feed_forward.w3 = nn.Linear(d, ff, bias=False)
            L.attention_norm = nn.Module()
            L.attention_norm.weight = nn.Parameter(torch.ones(d))
            L.ffn_norm = nn.Module()
            L.ffn_norm.weight = nn.Parameter(torch.ones(d))
            if ada_dim:
                L.ada_rms_norm_t_cond = nn.Sequential(nn.Linear(d, ada_dim, bias=False), nn.GELU(),
                                                      nn.Linear(ada_dim, d, bias=False))
            self.layers.append(L)

    def forward(self, x, mask, ffn_scales=None):
        """x [B, T, d]; mask [T, T] additive; ffn_scales: per layer [d] (1 + s_l) or None."""
        a = self.a
        B, T, _ = x.shape
        H, KV, hd, eps = a["n_heads"], a["n_kv_heads"], a["head_dim"], a["norm_eps"]
        pos = torch.arange(T, device=x.device)
        for li, L in enumerate(self.layers):
            n = rms_norm(x, L.attention_norm.weight, eps)
            q = rope(L.attention.wq(n).view(B, T, H, hd), pos, a["rope_theta"])
            k = rope(L.attention.wk(n).view(B, T, KV, hd), pos, a["rope_theta"])
            v = L.attention.wv(n).view(B, T, KV, hd)
            if KV != H:
                k = k.repeat_interleave(H // KV, dim=2)
                v = v.repeat_interleave(H // KV, dim=2)
            q, k, v = q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2)  # [B, H, T, hd]
            if _SDPA:   # the same softmax(q k^T / sqrt(hd) + mask) v, fused (torch >= 2.0)
                q, k = q.to(v.dtype), k.to(v.dtype)   # under autocast RoPE's fp32 math promotes q, k
                o = F.scaled_dot_product_attention(q, k, v, attn_mask=mask.to(v.dtype))
            else:       # Debian's torch 1.13
                o = ((q @ k.transpose(-1, -2)) / math.sqrt(hd) + mask).softmax(-1) @ v
            o = o.transpose(1, 2).reshape(B, T, H * hd)
            x = x + L.attention.wo(o)
            m = rms_norm(x, L.ffn_norm.weight, eps)
            if ffn_scales is not None:
                m = m * ffn_scales[li]
            x = x + L.feed_forward.w2(F.silu(L.feed_forward.w1(m)) * L.feed_forward.w3(m))
        return x


class VoxtralSmall(nn.Module):
    def __init__(self, cfg):
        """cfg: {"enc": tower args, "dec": tower args, "vocab_size", "num_mel_bins",
        "downsample_factor", "ada_t_cond_dim"} (tower args as make_random_model.PRESETS)."""
        super().__init__()
        self.cfg = cfg
        enc, dec = cfg["enc"], cfg["dec"]
        self.ds = cfg.get("downsample_factor", 4)
        self.conv0 = nn.Conv1d(cfg.get("num_mel_bins", 128), enc["dim"], 3)
        self.conv1 = nn.Conv1d(enc["dim"], enc["dim"], 3, stride=2)
        self.enc = Tower(enc, biases=True)
        self.enc_norm = nn.Parameter(torch.ones(enc["dim"]))
        self.proj0 = nn.Linear(enc["dim"] * self.ds, dec["dim"], bias=False)
        self.proj2 = nn.Linear(dec["dim"], dec["dim"], bias=False)
        self.dec = Tower(dec, biases=False, ada_dim=cfg.get("ada_t_cond_dim", 32))
        self.norm = nn.Parameter(torch.ones(dec["dim"]))
        self.tok_embeddings = nn.Embedding(cfg["vocab_size"], dec["dim"])

    # ---- towers
    def encode(self, mel):
        """mel [B, F, n_mels] (F a multiple of 8) -> adapter output [B, F/8, dec.dim]."""
        x = mel.transpose(1, 2)
        x = F.gelu(conv1d(x, self.conv0, 1, 2))
        x = F.gelu(conv1d(x, self.conv1, 2, 1))
        x = x.transpose(1, 2)                                   # [B, F/2, enc.dim]
        B, T, d = x.shape
        e = self.cfg["enc"]
        x = self.enc(x, window_mask(T, e["sliding_window"], x.device))
        x = rms_norm(x, self.enc_norm, e["norm_eps"])
        x = x.reshape(B, T // self.ds, d * self.ds)
        return self.proj2(F.gelu(self.proj0(x)))

    def ffn_scales(self, delay_tokens):
        tc = t_cond(self.cfg["dec"]["dim"], delay_tokens).to(self.norm.device)
        return [1.0 + L.ada_rms_norm_t_cond(tc) for L in self.dec.layers]

    def decode(self, adapter, ids, delay_tokens):
        """adapter [B, T, d], ids [B, T] -> logits [B, T, vocab] (row p predicts id p+1)."""
        d = self.cfg["dec"]
        x = adapter + self.tok_embeddings(ids)
        T = x.shape[1]
        x = self.dec(x, window_mask(T, d["sliding_window"], x.device), self.ffn_scales(delay_tokens))
        return rms_norm(x, self.norm, d["norm_eps"]) @ self.tok_embeddings.weight.t()

    def forward(self, mel, ids, delay_tokens):
        return self.decode(self.encode(mel), ids, delay_tokens)

    # ---- Mistral checkpoint names
    def mistral_state(self):
        """{Mistral name: tensor} for every tensor of a Voxtral Realtime checkpoint."""
        out = {E + "tok_embeddings.weight": self.tok_embeddings.weight,
               W + "conv_layers.0.conv.weight": self.conv0.weight,
               W + "conv_layers.0.conv.bias": self.conv0.bias,
               W + "conv_layers.1.conv.weight": self.conv1.weight,
               W + "conv_layers.1.conv.bias": self.conv1.bias}
        for i, L in enumerate(self.enc.layers):
            p = W + "transformer.layers.%d." % i
            for nm in ("wq", "wk", "wv", "wo"):
                lin = getattr(L.attention, nm)
                out[p + "attention.%s.weight" % nm] = lin.weight
                if lin.bias is not None:
                    out[p + "attention.%s.bias" % nm] = lin.bias
            for nm in ("w1", "w2", "w3"):
                lin = getattr(L.feed_forward, nm)
                out[p + "feed_forward.%s.weight" % nm] = lin.weight
                if lin.bias is not None:
                    out[p + "feed_forward.%s.bias" % nm] = lin.bias
            out[p + "attention_norm.weight"] = L.attention_norm.weight
            out[p + "ffn_norm.weight"] = L.ffn_norm.weight
        out[W + "transformer.norm.weight"] = self.enc_norm
        out[E + "audio_language_projection.0.weight"] = self.proj0.weight
        out[E + "audio_language_projection.2.weight"] = self.proj2.weight
        for i, L in enumerate(self.dec.layers):
            p = "layers.%d." % i
            for nm in ("wq", "wk", "wv", "wo"):
                out[p + "attention.%s.weight" % nm] = getattr(L.attention, nm).weight
            for nm in ("w1", "w2", "w3"):
                out[p + "feed_forward.%s.weight" % nm] = getattr(L.feed_forward, nm).weight
            out[p + "attention_norm.weight"] = L.attention_norm.weight
            out[p + "ffn_norm.weight"] = L.ffn_norm.weight
            out[p + "ada_rms_norm_t_cond.0.weight"] = L.ada_rms_norm_t_cond[0].weight
            out[p + "ada_rms_norm_t_cond.2.weight"] = L.ada_rms_norm_t_cond[2].weight
        out["norm.weight"] = self.norm
        return out

    def load_mistral(self, tensors):
        """Loads {Mistral name: array} (e.g. read_safetensors) into the parameters."""
        with torch.no_grad():
            for name, p in self.mistral_state().items():
                p.copy_(torch.as_tensor(tensors[name], dtype=torch.float32).reshape(p.shape))


def bf16_round_(model):
    """Rounds every parameter to the nearest bf16 value in place (what the checkpoint holds)."""
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(p.to(torch.bfloat16).to(torch.float32))


def write_checkpoint(model, out_dir, tekken, mrm):
    """consolidated.safetensors (BF16) + params.json + tekken.json, via make_random_model."""
    import os
    import struct
    import numpy as np
    os.makedirs(out_dir, exist_ok=True)
    st = model.mistral_state()
    header, blobs, off = {}, [], 0
    for name, t in st.items():
        bits = mrm.bf16_bits(t.detach().float().cpu().contiguous().numpy())
        b = bits.astype("<u2").tobytes()
        header[name] = {"dtype": "BF16", "shape": list(t.shape), "data_offsets": [off, off + len(b)]}
        blobs.append(b)
        off += len(b)
    header["__metadata__"] = {"format": "pt"}
    hb = json.dumps(header, separators=(",", ":")).encode()
    hb += b" " * ((8 - len(hb) % 8) % 8)
    path = os.path.join(out_dir, "consolidated.safetensors")
    with open(path + ".tmp", "wb") as f:
        f.write(struct.pack("<Q", len(hb)))
        f.write(hb)
        for b in blobs:
            f.write(b)
    os.replace(path + ".tmp", path)
    cfg = dict(model.cfg)
    cfg.setdefault("num_mel_bins", 128)
    cfg.setdefault("downsample_factor", 4)
    cfg.setdefault("ada_t_cond_dim", 32)
    with open(os.path.join(out_dir, "params.json"), "w") as f:
        json.dump(mrm.params_json(cfg), f, indent=2)
        f.write("\n")
    with open(os.path.join(out_dir, "tekken.json"), "w") as f:
        json.dump(tekken, f, ensure_ascii=False)
    return 8 + len(hb) + off
