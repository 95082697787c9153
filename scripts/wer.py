#!/usr/bin/env python3
"""Word and character error rates, and a word diff a person can read.

Python 3 standard library only.  Used by scripts/accuracy_regression.sh; tested by
tests/test_wer.py.

Normalisation (both texts, before any comparison):
  1. Unicode NFKC, then case-folded ("Hello" == "hello");
  2. apostrophes (' U+2019 U+02BC) are deleted, so "don't" -> "dont", "'em" -> "em";
  3. every other punctuation, symbol or control character (Unicode categories P*,
     S*, C*) becomes a space, so "well-known" -> "well known", "Hello, world!" -> "hello world";
  4. runs of whitespace collapse to one space; leading/trailing space is dropped.

WER = (substitutions + deletions + insertions) / reference words, from a
Levenshtein alignment over the normalised words (each edit costs 1).
CER = the same over the characters of the normalised text (words joined by one
space), so a space counts as a character.  With an empty reference the rate is
0.0 when the hypothesis is empty too, else 1.0.

Usage:
  wer.py REF.txt HYP.txt [--json]         files
  wer.py --text "REF" "HYP" [--json]      strings
prints "WER 12.50% (S 1, D 0, I 0 / 8 words)  CER ...", then the word diff.
"""
import json
import sys
import unicodedata

APOSTROPHES = "'\u2019\u02bc"


def normalize(text):
    """The normalised words of text (a list of str)."""
    text = unicodedata.normalize("NFKC", text).casefold()
    out = []
    for ch in text:
        if ch in APOSTROPHES:
            continue
        cat = unicodedata.category(ch)
        out.append(" " if cat[0] in "PSZC" or ch.isspace() else ch)
    return "".join(out).split()


def align(ref, hyp):
    """Levenshtein alignment of two sequences.  Returns a list of operations
    ("=", r, h), ("S", r, h), ("D", r, None), ("I", None, h) in order.  Ties prefer
    a match/substitution, then a deletion, then an insertion."""
    n, m = len(ref), len(hyp)
    # d[i][j]: edits to turn ref[:i] into hyp[:j]
    d = [[0] * (m + 1) for _ in range(n + 1)]
    for i in range(n + 1):
        d[i][0] = i
    for j in range(m + 1):
        d[0][j] = j
    for i in range(1, n + 1):
        ri, row, prev = ref[i - 1], d[i], d[i - 1]
        for j in range(1, m + 1):
            sub = prev[j - 1] + (ri != hyp[j - 1])
            dele = prev[j] + 1
            ins = row[j - 1] + 1
            row[j] = min(sub, dele, ins)
    ops = []
    i, j = n, m
    while i > 0 or j > 0:
        if i > 0 and j > 0 and d[i][j] == d[i - 1][j - 1] + (ref[i - 1] != hyp[j - 1]):
            ops.append(("=" if ref[i - 1] == hyp[j - 1] else "S", ref[i - 1], hyp[j - 1]))
            i, j = i - 1, j - 1
        elif i > 0 and d[i][j] == d[i - 1][j] + 1:
            ops.append(("D", ref[i - 1], None))
            i -= 1
        else:
            ops.append(("I", None, hyp[j - 1]))
            j -= 1
    ops.reverse()
    return ops


def _rate(errors, n_ref, n_hyp):
    if n_ref == 0:
        return 0.0 if n_hyp == 0 else 1.0
    return errors / n_ref


def edit_counts(ref, hyp):
    """(substitutions, deletions, insertions) of the alignment of two sequences."""
    s = dl = ins = 0
    for op, _, _ in align(ref, hyp):
        s += op == "S"
        dl += op == "D"
        ins += op == "I"
    return s, dl, ins


def distance(ref, hyp):
    """Levenshtein distance of two sequences in O(len(hyp)) memory (for characters)."""
    prev = list(range(len(hyp) + 1))
    for i, r in enumerate(ref, 1):
        row = [i] + [0] * len(hyp)
        for j, h in enumerate(hyp, 1):
            row[j] = min(prev[j - 1] + (r != h), prev[j] + 1, row[j - 1] + 1)
        prev = row
    return prev[-1]


def wer(ref_text, hyp_text):
    """Word error rate of hyp_text against ref_text, with its parts."""
    r, h = normalize(ref_text), normalize(hyp_text)
    s, dl, ins = edit_counts(r, h)
    return {"wer": _rate(s + dl + ins, len(r), len(h)), "errors": s + dl + ins, "sub": s, "del": dl,
            "ins": ins, "ref_words": len(r), "hyp_words": len(h)}


def cer(ref_text, hyp_text):
    """Character error rate over the normalised texts (words joined by one space)."""
    r, h = " ".join(normalize(ref_text)), " ".join(normalize(hyp_text))
    e = distance(r, h)
    return {"cer": _rate(e, len(r), len(h)), "errors": e, "ref_chars": len(r), "hyp_chars": len(h)}


def word_diff(ref_text, hyp_text):
    """The normalised reference with the hypothesis' edits marked the way wdiff does:
    [-deleted-] {+inserted+}, a substitution as [-ref-]{+hyp+}.  Runs of edits are merged."""
    out, dels, inss = [], [], []

    def flush():
        if dels:
            out.append("[-" + " ".join(dels) + "-]")
        if inss:
            if dels:
                out[-1] += "{+" + " ".join(inss) + "+}"
            else:
                out.append("{+" + " ".join(inss) + "+}")
        dels.clear()
        inss.clear()

    for op, r, h in align(normalize(ref_text), normalize(hyp_text)):
        if op == "=":
            flush()
            out.append(r)
        else:
            if r is not None:
                dels.append(r)
            if h is not None:
                inss.append(h)
    flush()
    return " ".join(out)


def main(argv):
    args = [a for a in argv if a != "--json"]
    as_json = len(args) != len(argv)
    if len(args) == 3 and args[0] == "--text":
        ref, hyp = args[1], args[2]
    elif len(args) == 2 and not args[0].startswith("-"):
        with open(args[0], encoding="utf-8") as f:
            ref = f.read()
        with open(args[1], encoding="utf-8") as f:
            hyp = f.read()
    else:
        sys.stderr.write("usage: wer.py REF.txt HYP.txt [--json] | wer.py --text REF HYP [--json]\n")
        return 2
    w, c = wer(ref, hyp), cer(ref, hyp)
    if as_json:
        print(json.dumps({"wer": w, "cer": c, "diff": word_diff(ref, hyp)}))
    else:
        print("WER %.2f%% (S %d, D %d, I %d / %d words)  CER %.2f%% (%d / %d chars)"
              % (100 * w["wer"], w["sub"], w["del"], w["ins"], w["ref_words"], 100 * c["cer"], c["errors"],
                 c["ref_chars"]))
        print(word_diff(ref, hyp))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
