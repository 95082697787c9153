#!/usr/bin/env python3
"""Trains a small Voxtral Realtime model on the synthetic corpus (CPU or one GPU).

  /usr/bin/python3 scripts/make_speech_corpus.py --out build/corpus
  /usr/bin/python3 scripts/small_tokenizer.py build/corpus/text.json build/tiny-en/tekken.json
  nice -n 19 /usr/bin/python3 scripts/train_small_model.py --corpus build/corpus \\
      --work build/train --out build/tiny-en --steps 1050

On a GPU (--device cuda, the default when torch sees one) the whole corpus's mel is held
in GPU memory, batches are gathered there, and the forward pass runs under bf16 autocast
(the loss in fp32); --minutes stops the run (and saves) after that much wall time, for
machines lent in runs of limited length.  --config picks the size (CONFIGS below);
--init DIR starts from a model directory's weights (a fresh optimiser and warm-up).

Resumable: the state (model, optimiser, step, data order) goes to --work/state.pt every
--save-min minutes and at the end; running the same command again continues from it.
--out gets the model directory (consolidated.safetensors BF16, params.json, tekken.json)
at every save.  Needs torch (Debian python3-torch 1.13 works) and numpy.

Streaming training target (one id per 80 ms decoder position; the engine's schedule,
MODEL.md section 4, delay D = 6 tokens = 480 ms, prompt L = 1 + 32 + D = 39):
  * the audio is padded as the engine pads a file: 32 tokens of zeros on the left, zeros
    to a whole token plus D + 11 tokens on the right; position p holds audio token p - 32;
  * ids[0] = BOS, ids[1..38] = [STREAMING_PAD] (the prompt);
  * a word whose first sample is at time s (from the start of the real audio) belongs to
    audio token k = floor(s / 80 ms); its first piece is the id at index 39 + k, i.e. the
    prediction of row 38 + k = 32 + D + k.  The engine reports the id of row `pos` at
    (pos + 1 - L) * 80 ms = k * 80 ms, so the printed word time lies within 80 ms before
    the synthesiser's word start, and the model has heard D = 480 ms of audio from the
    word's start when it must emit it;
  * further pieces of the word follow at the next indices; a piece that would land on an
    index already taken moves to the next free one (order is kept);
  * EOS at index 39 + ceil(n / 1280) (the first row past the real audio), or right after
    the last piece if that is later;
  * [STREAMING_PAD] at every other index; the model is trained with the true ids fed back
    (teacher forcing), as the engine feeds back its own argmax, controls included;
  * loss: cross entropy on rows 38 .. eos-1 (the ids the engine generates, EOS included);
    rows of the prompt and rows after EOS are not scored.  Items of a batch are padded on
    the right with silent mel and PAD ids; every tower is causal, so this changes nothing
    for the real positions.
"""
import argparse
import contextlib
import json
import math
import os
import sys
import time

import numpy as np

# OpenBLAS 0.3.21's AVX-512 sgemm kernels (Debian 12, picked on Zen 4 / Skylake-X) can leave
# inf/NaN from the uninitialised output buffer when beta = 0: seen here as sporadic
# infinite gradients.  The Haswell (AVX2) kernels do not.  Must be set before torch loads.
os.environ.setdefault("OPENBLAS_CORETYPE", "Haswell")
import torch  # noqa: E402
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import make_random_model as mrm  # noqa: E402
import small_tokenizer  # noqa: E402
import voxtral_torch as vt  # noqa: E402

BOS, EOS, PAD = 1, 2, 32
LEFT = 32
SPT = 1280
MEL_SILENCE = (1.5 - 8.0 + 4.0) / 4.0   # log-mel of zeros

CONFIGS = {
    # 1.44 M parameters, 2.9 MB: what a 2-core CPU trains in half an hour
    "tiny": {
        "enc": dict(dim=128, n_layers=3, head_dim=32, hidden_dim=384, n_heads=4, n_kv_heads=4,
                    sliding_window=750, rope_theta=1e6, norm_eps=1e-5),
        "dec": dict(dim=128, n_layers=2, head_dim=32, hidden_dim=384, n_heads=4, n_kv_heads=2,
                    sliding_window=8192, rope_theta=1e6, norm_eps=1e-5),
        "num_mel_bins": 128, "downsample_factor": 4, "ada_t_cond_dim": 32,
    },
    # about 4.6 M parameters, 9 MB: for a GPU run
    "base": {
        "enc": dict(dim=192, n_layers=4, head_dim=64, hidden_dim=576, n_heads=4, n_kv_heads=4,
                    sliding_window=750, rope_theta=1e6, norm_eps=1e-5),
        "dec": dict(dim=192, n_layers=4, head_dim=64, hidden_dim=576, n_heads=4, n_kv_heads=2,
                    sliding_window=8192, rope_theta=1e6, norm_eps=1e-5),
        "num_mel_bins": 128, "downsample_factor": 4, "ada_t_cond_dim": 32,
    },
}
CONFIG = CONFIGS["tiny"]


def targets(item, tok, delay):
    """ids [T] and the scored row range [lo, hi) of one corpus item."""
    T, L = item["T"], 1 + LEFT + delay
    ids = np.full(T, PAD, np.int64)
    ids[0] = BOS
    nxt = L
    for w, s in zip(item["words"], item["start"]):
        k = int(math.floor(s / 0.08 + 1e-9))
        i = max(L + k, nxt)
        for t in tok.encode_word(" " + w):
            ids[i] = t
            i += 1
        nxt = i
    eos = max(L + (item["n"] + SPT - 1) // SPT, nxt)
    assert eos < T, (eos, T)
    ids[eos] = EOS
    return ids, L - 1, eos


class Corpus:
    """The training items, their targets and their mel: a whole corpus (train_index.json +
    train_mel.npy), or with stream=True the chunks make_speech_corpus.py --stream writes as
    it goes (chunk_NNNNN.npy, then .json), taken as they appear (refresh()). On a GPU every
    item's mel is held there (fp16), one silent row last for the padding."""

    def __init__(self, path, tok, dev, stream, wait_s=900):
        self.path, self.tok, self.dev, self.stream = path, tok, dev, stream
        self.gpu = dev.type == "cuda"
        self.items, self.tg, self.T, self.parts, self.rows, self.seen = [], [], [], [], 0, set()
        self.delay = None
        if not stream:
            meta = json.load(open(os.path.join(path, "train_index.json")))
            self._add(meta["items"], np.load(os.path.join(path, "train_mel.npy"), mmap_mode="r"),
                      meta["delay_tokens"])
        else:
            t0 = time.time()
            while not self.refresh():
                if time.time() - t0 > wait_s:
                    raise SystemExit("no chunk_*.json in %s after %d s" % (path, wait_s))
                time.sleep(2)
        self._upload()

    def _add(self, items, mel, delay):
        if self.delay is not None and delay != self.delay:
            raise SystemExit("corpus chunks disagree on the delay (%s, %s)" % (self.delay, delay))
        self.delay = delay
        for it in items:
            it = dict(it, row=self.rows + it["off"], src=None if self.gpu else mel)
            self.items.append(it)
            self.tg.append(targets(it, self.tok, delay))
            self.T.append(it["T"])
        if self.gpu:
            self.parts.append(torch.from_numpy(np.asarray(mel, np.float16)))
        self.rows += mel.shape[0]

    def _upload(self):
        if self.gpu:
            self.mel = torch.cat(self.parts + [torch.full((1, 128), MEL_SILENCE, dtype=torch.float16)]).to(self.dev)
            self.sil_row = self.mel.shape[0] - 1

    def refresh(self):
        """stream: takes the chunks written since; returns how many it added."""
        if not self.stream:
            return 0
        new = sorted(f for f in os.listdir(self.path) if f.startswith("chunk_") and f.endswith(".json")
                     and f not in self.seen)
        for f in new:
            meta = json.load(open(os.path.join(self.path, f)))
            self._add(meta["items"], np.load(os.path.join(self.path, f[:-5] + ".npy")), meta["delay_tokens"])
            self.seen.add(f)
        if new and self.parts and hasattr(self, "mel"):
            self._upload()
        return len(new)


def lr_at(step, a):
    if step < a.warmup or a.steps == 0:   # (steps 0: not fitted yet, still warming up)
        return a.lr * min(step + 1, a.warmup) / a.warmup
    f = min(1.0, (step - a.warmup) / max(1, a.steps - a.warmup))
    return a.lr * (0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * f)))


def init_weights(model):
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if p.dim() == 1:
                continue  # norms (ones) and biases (PyTorch default) stay
            if name == "tok_embeddings.weight":
                p.normal_(0, 0.05, generator=g)
            else:
                fan_in = p[0].numel()
                p.normal_(0, 1.0 / math.sqrt(fan_in), generator=g)
        for L in list(model.enc.layers) + list(model.dec.layers):   # residual branches small
            L.attention.wo.weight.mul_(0.5)
            L.feed_forward.w2.weight.mul_(0.5)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--corpus", default="build/corpus")
    ap.add_argument("--work", default="build/train")
    ap.add_argument("--out", default="build/tiny-en")
    ap.add_argument("--tekken", default=None, help="default: OUT/tekken.json")
    ap.add_argument("--steps", type=int, default=1050,
                    help="0: as many as --minutes allows, fitted from the speed of the first 30 steps")
    ap.add_argument("--batch", type=int, default=6)
    ap.add_argument("--lr", type=float, default=1.5e-3)
    ap.add_argument("--warmup", type=int, default=80)
    ap.add_argument("--threads", type=int, default=1,
                    help="1 is fastest on a shared machine (more threads spin against other jobs)")
    ap.add_argument("--save-min", type=float, default=4.0)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--config", choices=sorted(CONFIGS), default="tiny")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--minutes", type=float, default=0, help="stop (and save) after this wall time")
    ap.add_argument("--init", help="model directory whose weights start the run")
    ap.add_argument("--stream", action="store_true",
                    help="--corpus is being written by make_speech_corpus.py --stream: take its chunks "
                         "as they appear (waits for the first)")
    a = ap.parse_args()
    if a.steps == 0 and not a.minutes:
        ap.error("--steps 0 needs --minutes")
    t_start = time.time()
    dev = torch.device(a.device)
    gpu = dev.type == "cuda"
    torch.set_num_threads(a.threads)
    torch.manual_seed(a.seed)
    os.makedirs(a.work, exist_ok=True)

    tekken = json.load(open(a.tekken or os.path.join(a.out, "tekken.json")))
    tok = small_tokenizer.Tokenizer(tekken)
    corpus = Corpus(a.corpus, tok, dev, a.stream)
    delay, items, tg = corpus.delay, corpus.items, corpus.tg

    state_path = os.path.join(a.work, "state.pt")
    st = torch.load(state_path, map_location="cpu") if os.path.exists(state_path) else None
    cfg = st["cfg"] if st else dict(CONFIGS[a.config], vocab_size=tok.vocab_size)
    model = vt.VoxtralSmall(cfg)
    init_weights(model)
    if a.init and not st:
        model.load_mistral(mrm.read_safetensors(os.path.join(a.init, "consolidated.safetensors")))
        print("weights from %s" % a.init)
    model.to(dev)
    opt = torch.optim.AdamW(model.parameters(), lr=a.lr, betas=(0.9, 0.98), weight_decay=0.01,
                            **({"fused": True} if gpu else {}))
    nparam = sum(p.numel() for p in model.parameters())
    step, spent, log = 0, 0.0, []
    rng = np.random.default_rng(a.seed)
    if st:
        model.load_state_dict(st["model"])
        opt.load_state_dict(st["opt"])
        step, spent, log = st["step"], st["spent"], st["log"]
        rng.bit_generator.state = st["rng"]
        print("resumed at step %d (%.1f min spent)" % (step, spent / 60))
    print("model: %d params (%.1f MB bf16), %d items%s, vocab %d" % (
        nparam, nparam * 2 / 1e6, len(items), " so far (streamed)" if a.stream else "", tok.vocab_size), flush=True)

    def save():
        torch.save({"model": model.state_dict(), "opt": opt.state_dict(), "step": step, "spent": spent,
                    "log": log, "rng": rng.bit_generator.state, "cfg": cfg}, state_path + ".tmp")
        os.replace(state_path + ".tmp", state_path)
        m2 = vt.VoxtralSmall(cfg)
        m2.load_state_dict({k: v.cpu() for k, v in model.state_dict().items()})
        vt.write_checkpoint(m2, a.out, tekken, mrm)
        with open(os.path.join(a.work, "log.json"), "w") as f:
            json.dump(log, f)

    # batches: sorted by length in groups so a batch's items are alike, order shuffled;
    # a streamed corpus grows between passes (each pass: the items there so far)
    last_save, t_mark, run_loss, run_n = time.time(), time.time(), 0.0, 0
    model.train()
    while (a.steps == 0 or step < a.steps) and not (a.minutes and time.time() - t_start > a.minutes * 60):
        if corpus.refresh():
            print("corpus: %d items" % len(items), flush=True)
        order_T = np.array(corpus.T)
        perm = rng.permutation(len(items))
        chunks = [perm[i:i + a.batch * 16] for i in range(0, len(perm), a.batch * 16)]
        batches = []
        for c in chunks:
            c = c[np.argsort(order_T[c])]
            batches += [c[i:i + a.batch] for i in range(0, len(c), a.batch)]
        for bi in rng.permutation(len(batches)):
            if a.steps and step >= a.steps:
                break
            if a.minutes and time.time() - t_start > a.minutes * 60:
                break
            b = batches[bi]
            Tm = int(max(items[i]["T"] for i in b))
            ids = np.full((len(b), Tm), PAD, np.int64)
            tgt = np.full((len(b), Tm), -100, np.int64)
            if gpu:
                rows = np.full((len(b), 8 * Tm), corpus.sil_row, np.int64)
            else:
                mel = np.full((len(b), 8 * Tm, 128), MEL_SILENCE, np.float32)
            for j, i in enumerate(b):
                it = items[i]
                T = it["T"]
                if gpu:
                    rows[j, :8 * T] = np.arange(it["row"], it["row"] + 8 * T)
                else:
                    mel[j, :8 * T] = it["src"][it["off"]:it["off"] + 8 * T]
                x, lo, eos = tg[i]
                ids[j, :T] = x
                tgt[j, lo:eos] = x[lo + 1:eos + 1]
            for g in opt.param_groups:
                g["lr"] = lr_at(step, a)
            t0 = time.time()
            if gpu:
                mel_t = corpus.mel[torch.from_numpy(rows).to(dev, non_blocking=True)].float()
            else:
                mel_t = torch.from_numpy(mel)
            with torch.autocast("cuda", dtype=torch.bfloat16) if gpu else contextlib.nullcontext():
                logits = model(mel_t, torch.from_numpy(ids).to(dev), delay)
            loss = F.cross_entropy(logits.float().reshape(-1, logits.shape[-1]),
                                   torch.from_numpy(tgt).to(dev).reshape(-1), ignore_index=-100)
            opt.zero_grad()
            loss.backward()
            gn = torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            if not (torch.isfinite(loss) and torch.isfinite(gn)):
                badp = [n for n, p in model.named_parameters() if p.grad is not None and not torch.isfinite(p.grad).all()]
                print("step %d: non-finite loss %s or gradient norm %s (%s), batch skipped"
                      % (step, loss.item(), gn.item(), " ".join(badp[:4])), flush=True)
                if os.environ.get("TRAIN_DEBUG"):
                    torch.save({"model": model.state_dict(), "mel": mel, "ids": ids, "tgt": tgt}, "/tmp/w6/bad.pt")
                    sys.exit(3)
                continue
            opt.step()
            spent += time.time() - t0
            step += 1
            run_loss += loss.item()
            run_n += 1
            if a.steps == 0 and step == 30:   # fit the schedule to the time left
                per = (time.time() - t_fit) / 29
                a.steps = int(30 + (a.minutes * 60 - (time.time() - t_start) - 30) / per)
                print("schedule: %d steps (%.3f s/step, %.1f min left)" % (
                    a.steps, per, a.minutes - (time.time() - t_start) / 60), flush=True)
            if step == 1:
                t_fit = time.time()
            if step % 20 == 0 or step == a.steps:
                log.append({"step": step, "loss": run_loss / run_n, "lr": lr_at(step, a), "spent_s": round(spent)})
                print("step %d loss %.4f lr %.2e %.2f s/step (%.1f min)" % (
                    step, run_loss / run_n, lr_at(step, a), (time.time() - t_mark) / run_n, spent / 60),
                    flush=True)
                run_loss, run_n, t_mark = 0.0, 0, time.time()
            if time.time() - last_save > a.save_min * 60:
                save()
                last_save = time.time()
    save()
    print("done: %d steps, %.1f min of training; model in %s" % (step, spent / 60, a.out))


if __name__ == "__main__":
    main()
