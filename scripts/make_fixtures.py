#!/usr/bin/env python3
"""Golden test fixtures from the HF transformers reference (VoxtralRealtimeForConditionalGeneration).

Each case: a small random model (make_random_model.py, real Mistral format), an input WAV,
and the reference's intermediate tensors, greedy ids/logits and teacher-forced logits, all
computed in fp32 on the CPU with eager attention.  Layout of tests/fixtures/<case>/:

  model/            consolidated.safetensors, params.json, tekken.json
                    (a symlink to an earlier case's model/ when the model is identical)
  input.wav         16-bit PCM mono 16 kHz; the reference got int16 / 32768
  meta.json         delay_tokens, delay_ms, n_samples, n_audio_tokens (T), prompt_len (L),
                    n_mel_frames (F), command, transformers, torch, seed, preset, overrides, checks
  mel.npy           f32 [F, 128]      feature extractor output on the padded waveform (frames as rows)
  conv.npy          f32 [F/2, enc]    audio_tower.embedder output (both convs + GELU)
  enc.npy           f32 [F/2, enc]    audio_tower last_hidden_state (after the final norm)
  adapter.npy       f32 [T, dec]      multi_modal_projector output
  ids.npy           i32 [n]           generate() ids, prompt excluded (n <= T-L; EOS=2 kept)
  logits.npy        f32 [n, V]        generate()'s per-step logits
  forced_ids.npy    i32 [T-L]         a teacher-forcing id sequence (text ids mixed with 32/33)
  forced_logits.npy f32 [T-L, V]      forward(prompt + forced_ids[:-1], full mel).logits rows L-1..T-2
                                      (row r predicts forced_ids[r])

Padding and prompt (by hand, as the reference processor): left 32*1280 zeros; right zeros to a
multiple of 1280 plus (D+11)*1280; prompt [1] + [32]*(32+D); D = delay_ms // 80.

Usage:
  # here (needs espeak-ng and sox; no torch): make the speech WAVs of the cases
  /usr/bin/python3 scripts/make_fixtures.py --make-wavs
  # on the GPU machine (torch + transformers 5.17):
  PYTHONUNBUFFERED=1 python3 scripts/make_fixtures.py --out /tmp/fx --wav-dir tests/fixtures
"""
import argparse
import json
import os
import shlex
import shutil
import subprocess
import sys
import tempfile
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import make_random_model as mrm  # noqa: E402
import vox_ref as vr  # noqa: E402

# ----------------------------------------------------------------------------- cases
CASES = {
    # the trained small model (samples/tiny-en) on held-out speech: real transcription,
    # so greedy ids are far from ties (a model_dir case links to that model)
    "tiny_trained": dict(model_dir="samples/tiny-en", preset="samples/tiny-en", overrides=[], seed=0,
                         delay_ms=480, wav="samples/synth/seen/000.wav"),
    # default delay, synthetic tones/chirps/clicks
    "tiny_tone": dict(preset="tiny", overrides=[], seed=8, audio="synth", delay_ms=480),
    # espeak speech, ~5 s: crosses the encoder window (24 frames = 6 tokens) and the
    # decoder window (16 tokens) many times
    "tiny_speech": dict(preset="tiny", overrides=[], seed=8, delay_ms=480,
                        text="Hello, this is a test of the voxtral speech to text system. How are you?",
                        voice="en-us", speed=165),
    # non-default delay: 160 ms -> D = 2 (prompt 35, right pad 13 tokens)
    "tiny_delay": dict(preset="tiny", overrides=[], seed=8, delay_ms=160,
                       text="One, two, three. Testing again.", voice="en-us", speed=160),
    # other geometry: MHA decoder (kv heads = heads), head_dim 16 (4*16 != 96), 3 decoder
    # layers, other windows, rope thetas and eps, smaller vocab, long delay (960 ms -> D = 12);
    # EOS row of the embedding scaled up so that generate stops early on EOS
    "tiny_mha": dict(preset="tiny", seed=6, delay_ms=960,
                     overrides=["dec.n_kv_heads=4", "dec.head_dim=16", "dec.n_layers=3",
                                "dec.sliding_window=10", "dec.rope_theta=50000", "dec.norm_eps=1e-6",
                                "enc.n_heads=6", "enc.n_kv_heads=6", "enc.head_dim=16",
                                "enc.sliding_window=20", "enc.rope_theta=10000", "vocab_size=1100",
                                "init.eos_gain=2"],
                     text="Good morning, world.", voice="en-gb", speed=170),
}


def synth_audio(seconds=2.4, rate=16000, seed=7):
    """Deterministic tones, a chirp, clicks and a little noise -> int16."""
    rng = np.random.default_rng(seed)
    n = int(seconds * rate)
    t = np.arange(n) / rate
    x = np.zeros(n)
    a = t < 0.8                                              # chirp 150 -> 3000 Hz
    f0, f1, d = 150.0, 3000.0, 0.8
    x[a] = 0.4 * np.sin(2 * np.pi * (f0 * t[a] + (f1 - f0) * t[a] ** 2 / (2 * d)))
    b = (t >= 1.1)                                           # two tones with 4 Hz AM
    tb = t[b]
    x[b] = (0.25 * np.sin(2 * np.pi * 440 * tb) + 0.15 * np.sin(2 * np.pi * 1320 * tb)) * \
        (0.6 + 0.4 * np.sin(2 * np.pi * 4 * tb))
    for c in np.arange(1.2, seconds, 0.25):                  # clicks
        i = int(c * rate)
        x[i:i + 40] += 0.5 * np.hanning(40)
    x += 0.003 * rng.standard_normal(n)
    return np.clip(np.round(x * 32767), -32768, 32767).astype(np.int16)


def make_wavs(wav_dir):
    for name, c in CASES.items():
        if "text" not in c:
            continue
        d = os.path.join(wav_dir, name)
        os.makedirs(d, exist_ok=True)
        out = os.path.join(d, "input.wav")
        with tempfile.TemporaryDirectory() as td:
            raw = os.path.join(td, "raw.wav")
            subprocess.run(["espeak-ng", "-v", c["voice"], "-s", str(c["speed"]), "-w", raw, c["text"]], check=True)
            subprocess.run(["sox", "-D", raw, "-r", "16000", "-c", "1", "-b", "16", out], check=True)
        x, rate = vr.read_wav(out)
        print("%s: %d samples (%.2f s) at %d Hz: %r" % (out, len(x), len(x) / rate, rate, c["text"]))


# ----------------------------------------------------------------------------- HF glue
def hf_config(cfg):
    from transformers import VoxtralRealtimeConfig
    e, d = cfg["enc"], cfg["dec"]
    if e["n_kv_heads"] != e["n_heads"]:
        raise SystemExit("transformers' encoder has no GQA: enc.n_kv_heads must equal enc.n_heads")
    audio = dict(hidden_size=e["dim"], num_hidden_layers=e["n_layers"], intermediate_size=e["hidden_dim"],
                 num_attention_heads=e["n_heads"], head_dim=e["head_dim"], num_mel_bins=cfg["num_mel_bins"],
                 rms_norm_eps=e["norm_eps"], sliding_window=e["sliding_window"],
                 rope_theta=e["rope_theta"],
                 rope_parameters={"rope_type": "default", "rope_theta": e["rope_theta"]})
    text = dict(hidden_size=d["dim"], num_hidden_layers=d["n_layers"], intermediate_size=d["hidden_dim"],
                num_attention_heads=d["n_heads"], num_key_value_heads=d["n_kv_heads"], head_dim=d["head_dim"],
                vocab_size=cfg["vocab_size"], rms_norm_eps=d["norm_eps"], sliding_window=d["sliding_window"],
                rope_theta=d["rope_theta"], tie_word_embeddings=True, max_position_embeddings=131072,
                rope_parameters={"rope_type": "default", "rope_theta": d["rope_theta"]})
    hc = VoxtralRealtimeConfig(audio_config=audio, text_config=text, projector_hidden_act="gelu",
                               downsample_factor=cfg["downsample_factor"])
    # the rope_theta trap: check what the config ended up with
    for sub, want in ((hc.audio_config, e["rope_theta"]), (hc.text_config, d["rope_theta"])):
        got = sub.rope_parameters["rope_theta"]
        assert abs(got - want) <= 1e-6 * want, ("rope_theta", got, want)
    assert hc.audio_config.sliding_window == e["sliding_window"]
    assert hc.text_config.sliding_window == d["sliding_window"]
    assert hc.text_config.head_dim == d["head_dim"] and hc.audio_config.head_dim == e["head_dim"]
    return hc


def _hf_norm(key):
    return ".".join(p for p in key.split(".") if p != "model")


def _mistral_to_hf(name):
    """Mistral tensor name -> transformers name with every 'model.' component removed."""
    import re
    E, W = mrm.E, mrm.W
    rules = [
        (r"^" + re.escape(E) + r"tok_embeddings\.weight$", "language_model.embed_tokens.weight"),
        (r"^norm\.weight$", "language_model.norm.weight"),
        (r"^layers\.(\d+)\.attention_norm\.weight$", r"language_model.layers.\1.input_layernorm.weight"),
        (r"^layers\.(\d+)\.ffn_norm\.weight$", r"language_model.layers.\1.post_attention_layernorm.weight"),
        (r"^layers\.(\d+)\.attention\.w([qkvo])\.weight$", r"language_model.layers.\1.self_attn.\2_proj.weight"),
        (r"^layers\.(\d+)\.feed_forward\.w1\.weight$", r"language_model.layers.\1.mlp.gate_proj.weight"),
        (r"^layers\.(\d+)\.feed_forward\.w2\.weight$", r"language_model.layers.\1.mlp.down_proj.weight"),
        (r"^layers\.(\d+)\.feed_forward\.w3\.weight$", r"language_model.layers.\1.mlp.up_proj.weight"),
        (r"^layers\.(\d+)\.ada_rms_norm_t_cond\.0\.weight$", r"language_model.layers.\1.ada_rms_norm.linear1.weight"),
        (r"^layers\.(\d+)\.ada_rms_norm_t_cond\.2\.weight$", r"language_model.layers.\1.ada_rms_norm.linear2.weight"),
        (r"^" + re.escape(W) + r"conv_layers\.0\.conv\.(weight|bias)$", r"audio_tower.embedder.conv1.\1"),
        (r"^" + re.escape(W) + r"conv_layers\.1\.conv\.(weight|bias)$", r"audio_tower.embedder.conv2.\1"),
        (r"^" + re.escape(W) + r"transformer\.norm\.weight$", "audio_tower.norm.weight"),
        (r"^" + re.escape(W) + r"transformer\.layers\.(\d+)\.attention\.w([qkvo])\.(weight|bias)$",
         r"audio_tower.layers.\1.self_attn.\2_proj.\3"),
        (r"^" + re.escape(W) + r"transformer\.layers\.(\d+)\.attention_norm\.weight$",
         r"audio_tower.layers.\1.self_attn_layer_norm.weight"),
        (r"^" + re.escape(W) + r"transformer\.layers\.(\d+)\.ffn_norm\.weight$",
         r"audio_tower.layers.\1.final_layer_norm.weight"),
        (r"^" + re.escape(W) + r"transformer\.layers\.(\d+)\.feed_forward\.w1\.(weight|bias)$",
         r"audio_tower.layers.\1.mlp.gate_proj.\2"),
        (r"^" + re.escape(W) + r"transformer\.layers\.(\d+)\.feed_forward\.w2\.(weight|bias)$",
         r"audio_tower.layers.\1.mlp.down_proj.\2"),
        (r"^" + re.escape(W) + r"transformer\.layers\.(\d+)\.feed_forward\.w3\.(weight|bias)$",
         r"audio_tower.layers.\1.mlp.up_proj.\2"),
        (r"^" + re.escape(E) + r"audio_language_projection\.0\.weight$", "multi_modal_projector.linear_1.weight"),
        (r"^" + re.escape(E) + r"audio_language_projection\.2\.weight$", "multi_modal_projector.linear_2.weight"),
    ]
    for pat, rep in rules:
        new, n = re.subn(pat, rep, name)
        if n:
            return new
    raise KeyError(name)


def _rope_perm(t, n_heads, head_dim):
    """Mistral (interleaved) -> HF (rotate-half) row order for q/k weight [n*hd, in] or bias [n*hd]."""
    if t.ndim == 2:
        return t.reshape(n_heads, head_dim // 2, 2, t.shape[1]).transpose(0, 2, 1, 3).reshape(n_heads * head_dim, -1)
    return t.reshape(n_heads, head_dim // 2, 2).transpose(0, 2, 1).reshape(-1)


def load_into_hf(tensors, cfg):
    import torch
    from transformers import VoxtralRealtimeForConditionalGeneration
    hc = hf_config(cfg)
    model = VoxtralRealtimeForConditionalGeneration._from_config(hc, dtype=torch.float32,
                                                                 attn_implementation="eager")
    model.eval()
    params = dict(model.named_parameters(remove_duplicate=False))
    by_norm = {}
    for k in params:
        by_norm.setdefault(_hf_norm(k), []).append(k)
    assigned = set()
    e, d = cfg["enc"], cfg["dec"]
    with torch.no_grad():
        for name, arr in tensors.items():
            hn = _mistral_to_hf(name)
            a = arr
            tower = e if hn.startswith("audio_tower") else d
            if ".self_attn.q_proj." in hn:
                a = _rope_perm(a, tower["n_heads"], tower["head_dim"])
            elif ".self_attn.k_proj." in hn:
                a = _rope_perm(a, tower["n_kv_heads"], tower["head_dim"])
            keys = by_norm.get(hn)
            if not keys:
                raise KeyError("no transformers parameter for %s (-> %s)" % (name, hn))
            for k in keys:
                p = params[k]
                assert tuple(p.shape) == a.shape, (k, tuple(p.shape), a.shape)
                p.copy_(torch.from_numpy(np.ascontiguousarray(a, dtype=np.float32)))
                assigned.add(k)
        emb = params[by_norm["language_model.embed_tokens.weight"][0]]
        for k, p in params.items():
            if k in assigned:
                continue
            if _hf_norm(k).endswith("lm_head.weight"):
                if p.data_ptr() != emb.data_ptr():
                    p.copy_(emb)
                assigned.add(k)
        missing = [k for k in params if k not in assigned]
        if missing:
            raise RuntimeError("parameters not set from the checkpoint: %s" % missing)
    return model


def find_module(model, suffix):
    for n, m in model.named_modules():
        if n == suffix or n.endswith("." + suffix):
            return m
    raise KeyError(suffix)


# ----------------------------------------------------------------------------- one case
def f32(a):
    return np.ascontiguousarray(np.asarray(a, dtype=np.float32))


def run_case(name, c, out_dir, wav_dir, shared_models, numpy_check=True, command=""):
    import torch
    import transformers
    from transformers import VoxtralRealtimeFeatureExtractor

    t0 = time.time()
    cdir = os.path.join(out_dir, name)
    os.makedirs(cdir, exist_ok=True)
    root = os.path.join(HERE, "..")
    if c.get("model_dir"):
        with open(os.path.join(root, c["model_dir"], "params.json")) as f:
            cfg = mrm.config_of_params(json.load(f))
    else:
        cfg = mrm.make_config(c["preset"], c["overrides"])
    key = json.dumps([c["preset"], c["overrides"], c["seed"]])

    # model (shared by identical cases through a relative symlink)
    mdir = os.path.join(cdir, "model")
    if os.path.islink(mdir):
        os.unlink(mdir)
    elif os.path.isdir(mdir):
        shutil.rmtree(mdir)
    if c.get("model_dir"):
        # a relative symlink to the model itself: a retrained model then fails its
        # fixture until the fixture is made again
        src = os.path.abspath(os.path.join(root, c["model_dir"]))
        os.symlink(os.path.relpath(src, os.path.abspath(cdir)), mdir)
        tensors = mrm.read_safetensors(os.path.join(mdir, "consolidated.safetensors"))
        shared_with = None
    elif key in shared_models:
        other, tensors = shared_models[key]
        os.symlink(os.path.join("..", other, "model"), mdir)
        shared_with = other
    else:
        tensors = mrm.write_model(mdir, cfg, c["seed"], keep=True)
        shared_models[key] = (name, tensors)
        shared_with = None

    # audio
    wav_out = os.path.join(cdir, "input.wav")
    if c.get("audio") == "synth":
        samples = synth_audio()
        vr.write_wav(wav_out, samples)
    else:
        src = os.path.join(root, c["wav"]) if c.get("wav") else os.path.join(wav_dir, name, "input.wav")
        samples, rate = vr.read_wav(src)
        assert rate == 16000, (src, rate)
        if os.path.abspath(src) != os.path.abspath(wav_out):
            shutil.copyfile(src, wav_out)
    D = vr.delay_tokens_from_ms(c["delay_ms"])
    x = samples.astype(np.float32) / 32768.0
    padded, T = vr.pad_audio(x, D)
    prompt = vr.prompt_ids(D)
    L = len(prompt)

    model = load_into_hf(tensors, cfg)
    fe = VoxtralRealtimeFeatureExtractor()
    mel_t = fe(padded, sampling_rate=16000, return_tensors="pt").input_features.to(torch.float32)  # [1,128,F]
    F = mel_t.shape[-1]
    assert F == len(padded) // 160 == 8 * T, (F, len(padded), T)

    audio_tower = find_module(model, "audio_tower")
    projector = find_module(model, "multi_modal_projector")
    ed, dd, ds = cfg["enc"]["dim"], cfg["dec"]["dim"], cfg["downsample_factor"]
    with torch.no_grad():
        conv_t = audio_tower.embedder(mel_t)                                  # [1, F/2, enc]
        enc_t = audio_tower(input_features=mel_t).last_hidden_state           # [1, F/2, enc]
        ad_t = projector(enc_t.reshape(1, -1, ed * ds))                       # [1, T, dec]
        checks = {}
        try:
            gaf = model.get_audio_features(input_features=mel_t)
            checks["get_audio_features_vs_manual"] = float((gaf.pooler_output - ad_t).abs().max())
        except Exception as ex:  # noqa: BLE001
            print("  (get_audio_features not comparable: %s)" % ex)
        assert conv_t.shape == (1, F // 2, ed) and enc_t.shape == (1, F // 2, ed) and ad_t.shape == (1, T, dd)
        # time conditioning of the reference vs MODEL.md
        try:
            te = find_module(model, "time_embedding")
            tc = te(torch.full((1,), D, dtype=torch.float32)).numpy()
            checks["t_cond_vs_numpy"] = float(np.abs(tc - vr.t_cond(dd, D)).max())
        except Exception as ex:  # noqa: BLE001
            print("  (time embedding check skipped: %s)" % ex)

        # greedy generation
        ids_in = torch.tensor([prompt], dtype=torch.long)
        gen = model.generate(input_ids=ids_in, attention_mask=torch.ones_like(ids_in), input_features=mel_t,
                             num_delay_tokens=D, do_sample=False, output_logits=True,
                             return_dict_in_generate=True, eos_token_id=2, pad_token_id=11)
        ids = gen.sequences[0, L:].numpy().astype(np.int32)
        logits = torch.stack(list(gen.logits), 0)[:, 0, :].float().numpy()
        assert len(ids) == logits.shape[0] and 1 <= len(ids) <= T - L, (len(ids), T - L)
        if 2 not in ids.tolist():
            assert len(ids) == T - L, (len(ids), T - L)

        # teacher forcing on the generated ids: same logits, argmax = ids
        seq = prompt + ids[:-1].tolist()
        tf = model(input_ids=torch.tensor([seq]), input_features=mel_t[..., :8 * len(seq)],
                   num_delay_tokens=D).logits[0, L - 1:].numpy()
        checks["generate_vs_forced_maxabs"] = float(np.abs(tf - logits).max())
        checks["generate_ids_eq_forced_argmax"] = bool((tf.argmax(1) == ids).all())

        # teacher forcing on a fixed mixed sequence
        V = cfg["vocab_size"]
        rng = np.random.default_rng(1000 + c["seed"] + D)
        forced = rng.integers(1000, V, size=T - L)
        u = rng.random(T - L)
        forced[u < 0.35] = 33
        forced[u < 0.25] = 32
        forced = forced.astype(np.int32)
        seq_f = prompt + forced[:-1].tolist()
        assert len(seq_f) == T - 1
        flog = model(input_ids=torch.tensor([seq_f]), input_features=mel_t[..., :8 * len(seq_f)],
                     num_delay_tokens=D).logits[0, L - 1:].numpy()
        assert flog.shape == (T - L, V)

    mel = f32(mel_t[0].T.numpy())
    arrays = dict(mel=mel, conv=f32(conv_t[0].numpy()), enc=f32(enc_t[0].numpy()), adapter=f32(ad_t[0].numpy()),
                  ids=ids.astype(np.int32), logits=f32(logits), forced_ids=forced,
                  forced_logits=f32(flog))
    for k, a in arrays.items():
        np.save(os.path.join(cdir, k + ".npy"), a)

    # independent numpy (float64) forward from MODEL.md
    if numpy_check:
        ref = vr.VoxRef(mdir)
        r_mel = ref.mel(padded)
        r_conv = ref.conv(mel.astype(np.float64))
        r_enc = ref.encoder(arrays["conv"].astype(np.float64))
        r_ad = ref.adapter(arrays["enc"].astype(np.float64))
        r_fl = ref.decoder_logits(seq_f, arrays["adapter"].astype(np.float64), D)[L - 1:]
        r_ids, r_lg = ref.greedy(arrays["adapter"].astype(np.float64), D)
        spread = float(flog.std())
        checks.update({
            "numpy_mel_maxabs": float(np.abs(r_mel - mel).max()),
            "numpy_conv_maxabs": float(np.abs(r_conv - arrays["conv"]).max()),
            "numpy_enc_maxabs": float(np.abs(r_enc - arrays["enc"]).max()),
            "numpy_adapter_maxabs": float(np.abs(r_ad - arrays["adapter"]).max()),
            "numpy_forced_logits_maxabs_over_std": float(np.abs(r_fl - flog).max() / spread),
            "numpy_greedy_ids_equal": bool(len(r_ids) == len(ids) and (r_ids == ids).all()),
        })
        # end-to-end from audio (mel computed by numpy, float64)
        r_full = ref.adapter(ref.encoder(ref.conv(r_mel)))
        checks["numpy_end_to_end_adapter_maxabs"] = float(np.abs(r_full - arrays["adapter"]).max())

    top2 = np.sort(logits, 1)[:, -2:]
    fl_top2 = np.sort(flog, 1)[:, -2:]
    stats = {
        "n_ids": int(len(ids)), "distinct_ids": int(len(set(ids.tolist()))),
        "id_changes": int((ids[1:] != ids[:-1]).sum()), "text_ids": int((ids >= 1000).sum()),
        "eos": bool(2 in ids.tolist()),
        "logits_std": float(logits.std()), "logits_maxabs": float(np.abs(logits).max()),
        "min_top1_top2_gap": float((top2[:, 1] - top2[:, 0]).min()),
        "forced_min_top1_top2_gap": float((fl_top2[:, 1] - fl_top2[:, 0]).min()),
        "mel_range": [float(mel.min()), float(mel.max())],
        "adapter_rms": float(np.sqrt((arrays["adapter"] ** 2).mean())),
    }
    meta = {
        "case": name, "delay_tokens": D, "delay_ms": c["delay_ms"], "n_samples": int(len(samples)),
        "n_audio_tokens": int(T), "prompt_len": L, "n_mel_frames": int(F),
        "prompt_ids": prompt, "command": command, "transformers": transformers.__version__,
        "torch": torch.__version__, "seed": c["seed"], "preset": c["preset"], "overrides": c["overrides"],
        "model_shared_with": shared_with, "dtype": "float32 (CPU, eager attention)",
        "stats": stats, "checks": checks,
    }
    with open(os.path.join(cdir, "meta.json"), "w") as f:
        json.dump(meta, f, indent=2)
        f.write("\n")
    print("%-12s T=%d L=%d F=%d D=%d ids=%d distinct=%d changes=%d text=%d eos=%s logits std %.2f max %.2f "
          "min gap %.2e (forced %.2e) [%.1fs]"
          % (name, T, L, F, D, len(ids), stats["distinct_ids"], stats["id_changes"], stats["text_ids"],
             stats["eos"], stats["logits_std"], stats["logits_maxabs"], stats["min_top1_top2_gap"],
             stats["forced_min_top1_top2_gap"], time.time() - t0))
    print("  ids:", " ".join(map(str, ids.tolist())))
    print("  checks:", json.dumps(checks))
    ok = checks["generate_ids_eq_forced_argmax"] and checks["generate_vs_forced_maxabs"] < 1e-3
    if numpy_check:
        ok = ok and checks["numpy_forced_logits_maxabs_over_std"] < 1e-3 and checks["numpy_adapter_maxabs"] < 1e-3
    if not ok:
        print("  WARNING: %s failed a consistency check" % name)
    return ok


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default=os.path.join(HERE, "..", "tests", "fixtures"))
    ap.add_argument("--wav-dir", default=os.path.join(HERE, "..", "tests", "fixtures"),
                    help="where <case>/input.wav of the speech cases are read from")
    ap.add_argument("--cases", default=",".join(CASES))
    ap.add_argument("--make-wavs", action="store_true", help="only write the speech WAVs (espeak-ng + sox)")
    ap.add_argument("--no-numpy-check", action="store_true")
    ap.add_argument("--threads", type=int, default=0)
    a = ap.parse_args()
    if a.make_wavs:
        make_wavs(a.wav_dir)
        return
    import torch
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    torch.set_float32_matmul_precision("highest")
    if a.threads:
        torch.set_num_threads(a.threads)
    torch.manual_seed(0)
    command = shlex.join(["python3"] + [os.path.relpath(sys.argv[0]) if i == 0 else s
                                        for i, s in enumerate(sys.argv)])
    shared, all_ok = {}, True
    for name in a.cases.split(","):
        all_ok &= run_case(name, CASES[name], a.out, a.wav_dir, shared, not a.no_numpy_check, command)
    print("ALL OK" if all_ok else "SOME CHECKS FAILED")
    sys.exit(0 if all_ok else 1)


if __name__ == "__main__":
    main()
