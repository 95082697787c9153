#!/usr/bin/env python3
"""bench_transformers.py - time the transformers reference on the same weights and
audio as voxtral, for comparison (run where torch + transformers 5.17 are).

    python3 scripts/bench_transformers.py MODEL_DIR WAV [--attn eager|sdpa]
        [--dtype bf16|fp32] [--json OUT] [--max-new N] [--ids-out FILE]

Loads the Mistral-format checkpoint (make_random_model.py or the real one) into
VoxtralRealtimeForConditionalGeneration, pads the audio and builds the prompt as
the reference processor does, then runs greedy generate and reports ms per decoder
step (timed with CUDA events around generate, minus a prefill-only run).
--ids-out writes the generated ids (whitespace-separated) for --force-tokens.
"""
import argparse
import json
import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import make_fixtures as mf  # noqa: E402
import make_random_model as mrm  # noqa: E402
import vox_ref as vr  # noqa: E402


def config_from_dir(model_dir):
    p = json.load(open(os.path.join(model_dir, "params.json")))
    e = p["multimodal"]["whisper_model_args"]["encoder_args"]
    cfg = mrm.make_config("tiny")
    for tower, src in (("dec", p), ("enc", e)):
        for k in ("dim", "n_layers", "head_dim", "hidden_dim", "n_heads", "n_kv_heads", "sliding_window",
                  "rope_theta", "norm_eps"):
            if k in src:
                cfg[tower][k] = src[k]
    cfg["vocab_size"] = p["vocab_size"]
    cfg["downsample_factor"] = p["multimodal"]["whisper_model_args"]["downsample_args"]["downsample_factor"]
    cfg["num_mel_bins"] = e["audio_encoding_args"]["num_mel_bins"]
    return cfg


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("model_dir")
    ap.add_argument("wav")
    ap.add_argument("--attn", default="sdpa")
    ap.add_argument("--dtype", default="bf16")
    ap.add_argument("--delay-ms", type=int, default=480)
    ap.add_argument("--json")
    ap.add_argument("--ids-out")
    ap.add_argument("--max-new", type=int, default=0)
    a = ap.parse_args()

    import torch
    from transformers import VoxtralRealtimeFeatureExtractor
    torch.backends.cuda.matmul.allow_tf32 = False
    dev = "cuda" if torch.cuda.is_available() else "cpu"
    dtype = torch.bfloat16 if a.dtype == "bf16" else torch.float32

    t0 = time.time()
    cfg = config_from_dir(a.model_dir)
    tensors = mrm.read_safetensors(os.path.join(a.model_dir, "consolidated.safetensors"))
    model = mf.load_into_hf(tensors, cfg)
    del tensors
    model = model.to(device=dev, dtype=dtype)
    model.config._attn_implementation = a.attn
    for sub in (model.config.audio_config, model.config.text_config):
        sub._attn_implementation = a.attn
    model.eval()
    load_s = time.time() - t0

    samples, rate = vr.read_wav(a.wav)
    assert rate == 16000, rate
    D = vr.delay_tokens_from_ms(a.delay_ms)
    padded, T = vr.pad_audio(samples.astype(np.float32) / 32768.0, D)
    prompt = vr.prompt_ids(D)
    fe = VoxtralRealtimeFeatureExtractor()
    mel = fe(padded, sampling_rate=16000, return_tensors="pt").input_features.to(device=dev, dtype=dtype)
    ids = torch.tensor([prompt], device=dev)
    n_new = a.max_new or (T - len(prompt))

    def gen(max_new):
        return model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), input_features=mel,
                              num_delay_tokens=D, do_sample=False, max_new_tokens=max_new, min_new_tokens=max_new,
                              eos_token_id=None, pad_token_id=11, return_dict_in_generate=True)

    def timed(max_new):
        torch.cuda.synchronize() if dev == "cuda" else None
        t = time.time()
        with torch.no_grad():
            out = gen(max_new)
        torch.cuda.synchronize() if dev == "cuda" else None
        return time.time() - t, out

    timed(2)  # warm-up
    t1, _ = timed(1)
    tn, out = timed(n_new)
    step_ms = (tn - t1) / max(1, n_new - 1) * 1e3
    new_ids = out.sequences[0, len(prompt):].tolist()
    res = dict(impl="transformers %s %s" % (a.attn, a.dtype), device=torch.cuda.get_device_name() if dev == "cuda" else "cpu",
               load_s=load_s, audio_s=len(samples) / 16000.0, steps=n_new, total_s=tn, first_token_s=t1,
               step_ms=step_ms, rtf=tn / (len(samples) / 16000.0),
               peak_vram_mb=torch.cuda.max_memory_allocated() / 2**20 if dev == "cuda" else 0)
    print(json.dumps(res))
    if a.json:
        json.dump(res, open(a.json, "w"))
    if a.ids_out:
        open(a.ids_out, "w").write(" ".join(map(str, new_ids)) + "\n")


if __name__ == "__main__":
    main()
