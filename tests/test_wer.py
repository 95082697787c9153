#!/usr/bin/env python3
"""test_wer.py - scripts/wer.py on known pairs: normalisation, WER and its S/D/I parts,
CER, the word diff, edge cases (empty texts).  Prints "ok - name" / "not ok - name: detail"."""
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "scripts"))
import wer as W  # noqa: E402

failed = 0


def check(name, got, want, tol=1e-9):
    global failed
    good = abs(got - want) <= tol if isinstance(want, float) else got == want
    if good:
        print("ok - %s" % name)
    else:
        failed += 1
        print("not ok - %s: got %r, want %r" % (name, got, want))


# normalisation: case, punctuation, apostrophes, whitespace, Unicode forms
check("normalize: case and punctuation", W.normalize("Hello, World!"), ["hello", "world"])
check("normalize: apostrophes deleted", W.normalize("Don't worry about 'em \u2019til then"),
      ["dont", "worry", "about", "em", "til", "then"])
check("normalize: hyphen and dash split", W.normalize("well-known \u2014 really"), ["well", "known", "really"])
check("normalize: whitespace runs", W.normalize("  a \t b\n\nc  "), ["a", "b", "c"])
check("normalize: NFKC + casefold", W.normalize("\uff21BC Stra\u00dfe"), ["abc", "strasse"])
check("normalize: digits kept", W.normalize("It's 10:30."), ["its", "10", "30"])

# WER on known pairs
check("wer: identical", W.wer("the cat sat", "the cat sat")["wer"], 0.0)
check("wer: identical after normalisation", W.wer("Hello, world.", "hello world")["wer"], 0.0)
r = W.wer("the quick brown fox jumps over the lazy dog", "the quick brown fox jumped over a lazy dog")
check("wer: two substitutions of nine", (r["sub"], r["del"], r["ins"], r["ref_words"]), (2, 0, 0, 9))
check("wer: 2/9", r["wer"], 2 / 9)
r = W.wer("a b c d", "a x c")
check("wer: one sub + one deletion", (r["sub"], r["del"], r["ins"]), (1, 1, 0))
check("wer: 2/4", r["wer"], 0.5)
r = W.wer("a b", "a b c")
check("wer: one insertion", (r["sub"], r["del"], r["ins"], r["wer"]), (0, 0, 1, 0.5))
r = W.wer("one two three", "")
check("wer: empty hypothesis = all deletions", (r["del"], r["wer"]), (3, 1.0))
r = W.wer("a", "b c d e")
check("wer: can exceed 1", (r["errors"], r["wer"]), (4, 4.0))
check("wer: empty reference, empty hypothesis", W.wer("", "  ")["wer"], 0.0)
check("wer: empty reference, some hypothesis", W.wer("...", "word")["wer"], 1.0)
r = W.wer("i can handle him", "i can can handle him")
check("wer: repeated word is one insertion", (r["sub"], r["del"], r["ins"]), (0, 0, 1))

# CER on known pairs (Levenshtein kitten/sitting = 3)
check("cer: kitten/sitting", W.cer("kitten", "sitting")["errors"], 3)
check("cer: 3/6", W.cer("kitten", "sitting")["cer"], 0.5)
check("cer: case and punctuation ignored", W.cer("Kitten!", "kitten")["cer"], 0.0)
check("cer: space counts", W.cer("ab cd", "abcd")["errors"], 1)
check("cer: distance symmetric", W.distance("flaw", "lawn"), W.distance("lawn", "flaw"))
check("cer: flaw/lawn = 2", W.distance("flaw", "lawn"), 2)

# the alignment's edit count equals the independent two-row distance, on random pairs
import random  # noqa: E402
rng = random.Random(7)
bad = 0
for _ in range(300):
    a = [rng.choice("abcd") for _ in range(rng.randrange(0, 12))]
    b = [rng.choice("abcd") for _ in range(rng.randrange(0, 12))]
    if sum(W.edit_counts(a, b)) != W.distance(a, b):
        bad += 1
check("align agrees with distance on 300 random pairs", bad, 0)

# word diff
check("diff: substitution", W.word_diff("the quick fox", "the quack fox"), "the [-quick-]{+quack+} fox")
check("diff: deletion", W.word_diff("a b c", "a c"), "a [-b-] c")
check("diff: insertion", W.word_diff("a c", "a b c"), "a {+b+} c")
check("diff: merged run", W.word_diff("a b c d", "a x y d"), "a [-b c-]{+x y+} d")
check("diff: identical", W.word_diff("Same text.", "same text"), "same text")

# the command line
import subprocess  # noqa: E402
out = subprocess.run([sys.executable, os.path.join(os.path.dirname(W.__file__), "wer.py"), "--text",
                      "a b c d", "a x c", "--json"], capture_output=True, text=True)
import json  # noqa: E402
try:
    o = json.loads(out.stdout)
    check("cli: --json", (o["wer"]["wer"], o["diff"]), (0.5, "a [-b-]{+x+} c [-d-]"))
except ValueError:
    check("cli: --json parses", out.stdout, "JSON")

sys.exit(1 if failed else 0)
