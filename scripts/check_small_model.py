#!/usr/bin/env python3
"""Proves scripts/voxtral_torch.py (the training module) equal to the C engine.

  /usr/bin/python3 scripts/check_small_model.py MODEL_DIR a.wav [b.wav ...] [--topk 64]

For each file: the engine decodes greedily (`voxtral --json`), then runs again with those
ids forced (`--force-tokens`, `--topk K`); the PyTorch module loads the same
consolidated.safetensors, computes the mel exactly as the reference (vox_ref.py), and
teacher-forces the same ids (prompt + forced ids).  Compared per step: the engine's K best
ids and logits against the module's logits of those ids, and the argmax.  Prints the worst
absolute logit difference relative to the logits' spread; exits 1 above --tol (1e-3).
The engine is itself proven equal to transformers (tests/test_fixtures.c), so this ties
the trained checkpoint to the reference; running make_fixtures.py on the trained model on
the GPU machine closes the loop directly.
"""
import argparse
import json
import os
import subprocess
import sys
import tempfile

import numpy as np

os.environ.setdefault("OPENBLAS_CORETYPE", "Haswell")  # see train_small_model.py
import torch  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import make_random_model as mrm  # noqa: E402
import vox_ref  # noqa: E402
import voxtral_torch as vt  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def load(model_dir):
    p = json.load(open(os.path.join(model_dir, "params.json")))
    e = p["multimodal"]["whisper_model_args"]["encoder_args"]
    keys = ("dim", "n_layers", "head_dim", "hidden_dim", "n_heads", "n_kv_heads", "sliding_window",
            "rope_theta", "norm_eps")
    cfg = {"enc": {k: e[k] for k in keys}, "dec": {k: p[k] for k in keys}, "vocab_size": p["vocab_size"],
           "num_mel_bins": e["audio_encoding_args"]["num_mel_bins"],
           "downsample_factor": p["multimodal"]["whisper_model_args"]["downsample_args"]["downsample_factor"],
           "ada_t_cond_dim": p["ada_rms_norm_t_cond_dim"]}
    m = vt.VoxtralSmall(cfg)
    m.load_mistral(mrm.read_safetensors(os.path.join(model_dir, "consolidated.safetensors")))
    m.eval()
    return m


def engine(model_dir, wav, topk=0, forced=None):
    cmd = [os.environ.get("VOXTRAL", os.path.join(ROOT, "voxtral")), "-d", model_dir, "-i", wav,
           "--json", "--quiet", "--backend", "cpu"]
    if topk:
        cmd += ["--topk", str(topk)]
    if forced is not None:
        cmd += ["--force-tokens", forced]
    return json.loads(subprocess.run(cmd, check=True, capture_output=True, text=True).stdout)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("model")
    ap.add_argument("wavs", nargs="+")
    ap.add_argument("--topk", type=int, default=64)
    ap.add_argument("--tol", type=float, default=1e-3)
    ap.add_argument("--numpy", action="store_true", help="also compare vox_ref.py's greedy ids")
    a = ap.parse_args()
    torch.set_num_threads(2)
    m = load(a.model)
    delay = 6
    worst, all_ok = 0.0, True
    for wav in a.wavs:
        ids = [t["id"] if isinstance(t, dict) else t for t in engine(a.model, wav)["tokens"]]
        forced = [i for i in ids if i != vox_ref.EOS]
        x16, rate = vox_ref.read_wav(wav)
        assert rate == 16000
        padded, T = vox_ref.pad_audio(x16.astype(np.float32) / 32768.0, delay)
        L = len(vox_ref.prompt_ids(delay))
        V = m.cfg["vocab_size"]
        # an early EOS would leave few steps to compare: go on to the end of the audio with
        # a fixed mix of PAD and text ids
        while len(forced) < T - L:
            j = len(forced)
            forced.append(vox_ref.PAD if j % 3 else 1000 + (j * 37) % (V - 1000))
        with tempfile.NamedTemporaryFile("w", suffix=".txt", delete=False) as f:
            f.write(" ".join(map(str, forced)) + "\n")
        r = engine(a.model, wav, a.topk, f.name)
        os.unlink(f.name)
        mel = torch.tensor(vox_ref.log_mel(padded), dtype=torch.float32)[None]
        seq = vox_ref.prompt_ids(delay) + forced
        n = min(len(seq), T)
        with torch.no_grad():
            lg = m(mel[:, :8 * n], torch.tensor(seq[:n])[None], delay)[0].numpy()
        rows = r["topk"]
        d_max, spread, argmax_same = 0.0, 0.0, 0
        for j, row in enumerate(rows):
            p = L - 1 + j
            if p >= n:
                break
            tid = np.array([int(x[0]) for x in row])
            tv = np.array([float(x[1]) for x in row])
            d_max = max(d_max, float(np.abs(lg[p][tid] - tv).max()))
            spread = max(spread, float(lg[p].std()))
            argmax_same += int(np.argmax(lg[p]) == tid[0])
        rel = d_max / max(spread, 1e-9)
        worst = max(worst, rel)
        ok = rel <= a.tol
        all_ok &= ok
        print("%s %s: %d steps, argmax equal %d/%d, max |dlogit| %.3g (%.2g of the logit std %.3g)"
              % ("ok" if ok else "MISMATCH", os.path.basename(wav), len(rows), argmax_same, len(rows),
                 d_max, rel, spread))
        if a.numpy:
            # vox_ref.py: the independent float64 numpy forward that make_fixtures.py checks
            # against transformers; its greedy ids must be the engine's
            ref = vox_ref.VoxRef(a.model)
            ad = ref.adapter(ref.encoder(ref.conv(ref.mel(padded))))
            r_ids, _ = ref.greedy(ad, delay)
            same = list(map(int, r_ids)) == list(map(int, ids))
            all_ok &= same
            print("%s %s: vox_ref.py (numpy float64) greedy ids %s the engine's (%d ids)"
                  % ("ok" if same else "MISMATCH", os.path.basename(wav), "equal" if same else "differ from",
                     len(ids)))
    print("worst relative logit difference %.3g (tolerance %.g)" % (worst, a.tol))
    sys.exit(0 if all_ok else 1)


if __name__ == "__main__":
    main()
