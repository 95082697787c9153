#!/usr/bin/env python3
"""A small byte-level BPE vocabulary in tekken.json's format, trained on the corpus text.

  /usr/bin/python3 scripts/small_tokenizer.py build/corpus/text.json OUT/tekken.json

Layout (as the real tekken.json, so voxtral_tokenizer.c reads it unchanged): 1000
special tokens (ranks 0..999, the real ids: 1 <s>, 2 </s>, 32 [STREAMING_PAD],
33 [STREAMING_WORD], ...), then "vocab": ranks 0..255 are the 256 single bytes (id 1000 =
byte 0x00), then one piece per merge.  Words are spelled with their leading space
(" lord"), as tekken pieces are.  Merges are learned greedily (most frequent adjacent
pair over the training clauses' word counts) until every vocabulary word is one piece,
or --max-merges.

Encoding (encode()): each word is split into bytes and merged by rank, lowest first, as
tiktoken-style BPE does; with the full merge list every corpus word becomes one id.
"""
import base64
import json
import os
import sys
from collections import Counter

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import make_random_model as mrm  # noqa: E402

N_SPECIAL = 1000


def train(word_counts, max_merges=4000):
    """word_counts {" word": n} -> list of merged pieces (bytes), in rank order."""
    seqs = {w.encode(): [bytes([b]) for b in w.encode()] for w in word_counts}
    merges = []
    while len(merges) < max_merges:
        pairs = Counter()
        for w, s in seqs.items():
            for a, b in zip(s, s[1:]):
                pairs[(a, b)] += word_counts[w.decode()]
        if not pairs:
            break
        # most frequent pair; ties broken by the bytes, so the result is deterministic
        (a, b), _ = max(pairs.items(), key=lambda kv: (kv[1], kv[0][0] + kv[0][1]))
        ab = a + b
        merges.append(ab)
        for w, s in seqs.items():
            i, out = 0, []
            while i < len(s):
                if i + 1 < len(s) and s[i] == a and s[i + 1] == b:
                    out.append(ab)
                    i += 2
                else:
                    out.append(s[i])
                    i += 1
            seqs[w] = out
    return merges


def tekken(merges):
    pieces = [bytes([b]) for b in range(256)] + list(merges)
    vocab = []
    for r, b in enumerate(pieces):
        try:
            s = b.decode("utf-8")
        except UnicodeDecodeError:
            s = None
        vocab.append({"rank": r, "token_bytes": base64.b64encode(b).decode(), "token_str": s})
    special = [{"rank": i, "token_str": mrm.SPECIAL_NAMES.get(i, "<SPECIAL_%d>" % i), "is_control": True}
               for i in range(N_SPECIAL)]
    t = mrm.tekken_json({"vocab_size": N_SPECIAL + len(pieces), "num_mel_bins": 128})
    t["vocab"] = vocab
    t["special_tokens"] = special
    t["config"]["num_vocab_tokens"] = N_SPECIAL + len(pieces)
    t["config"]["default_vocab_size"] = N_SPECIAL + len(pieces)
    return t


class Tokenizer:
    def __init__(self, tekken_json):
        self.pieces = [base64.b64decode(v["token_bytes"]) for v in tekken_json["vocab"]]
        self.rank = {p: i for i, p in enumerate(self.pieces)}
        self.vocab_size = N_SPECIAL + len(self.pieces)

    def encode_word(self, w):
        """" word" (str) -> ids (each id = N_SPECIAL + rank)."""
        s = [bytes([b]) for b in w.encode()]
        while len(s) > 1:
            best, bi = None, -1
            for i in range(len(s) - 1):
                r = self.rank.get(s[i] + s[i + 1])
                if r is not None and (best is None or r < best):
                    best, bi = r, i
            if best is None:
                break
            s = s[:bi] + [s[bi] + s[bi + 1]] + s[bi + 2:]
        return [N_SPECIAL + self.rank[p] for p in s]

    def decode(self, ids):
        return b"".join(self.pieces[i - N_SPECIAL] for i in ids if i >= N_SPECIAL).decode("utf-8", "replace")


def main():
    if len(sys.argv) != 3:
        raise SystemExit(__doc__)
    text = json.load(open(sys.argv[1]))
    counts = Counter(" " + w for c in text["train"] for w in c.split())
    for w in text["vocab"]:
        counts.setdefault(" " + w, 1)
    merges = train(counts)
    t = tekken(merges)
    os.makedirs(os.path.dirname(os.path.abspath(sys.argv[2])), exist_ok=True)
    with open(sys.argv[2], "w") as f:
        json.dump(t, f, ensure_ascii=False)
    tok = Tokenizer(t)
    multi = [w for w in counts if len(tok.encode_word(w)) > 1]
    print("tokenizer: %d merges, vocab_size %d, %d words of more than one piece"
          % (len(merges), tok.vocab_size, len(multi)))


if __name__ == "__main__":
    main()
