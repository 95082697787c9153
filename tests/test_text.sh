#!/usr/bin/env bash
# test_text.sh - voxtral_text's outputs through Python's strict parsers, and the
# UTF-8 golden data up to date with the script that makes it.
#   - tests/utf8_cases.txt is exactly what scripts/make_utf8_cases.py writes now;
#   - test_text's fuzz transcripts (random bytes, pauses, breaks, -ml), dumped in
#     every format: strict UTF-8; verbose_json through json.loads (control
#     characters refused) with OpenAI's keys; SRT and VTT cues well formed, times
#     increasing inside "duration"; concatenated JSON segment texts equal "text".
set -u
cd "$(dirname "$0")/.."
. tests/testlib.sh
BUILD=${BUILD:-build/cpu}
PY=${PY:-python3}

$PY scripts/make_utf8_cases.py "$tmp/cases.txt" >/dev/null 2>&1 && cmp -s "$tmp/cases.txt" tests/utf8_cases.txt
check "tests/utf8_cases.txt is what scripts/make_utf8_cases.py generates" $?

mkdir -p "$tmp/dump"
VOX_TEXT_DUMP=$tmp/dump "$BUILD/tests/test_text" >"$tmp/run.log" 2>&1
n=$(ls "$tmp/dump" | wc -l)
[ "$n" -ge 400 ]
check "test_text dumps its fuzz transcripts" $? "$n files; $(grep 'not ok' "$tmp/run.log" | head -3)"

$PY - "$tmp/dump" >"$tmp/py.log" 2>&1 <<'PYEOF'
import glob, json, os, re, sys
d = sys.argv[1]
bad = []
def t(s, sep):
    h, m, rest = s.split(":")
    sec, ms = rest.split(sep)
    return int(h) * 3600 + int(m) * 60 + int(sec) + int(ms) / 1000
for path in sorted(glob.glob(os.path.join(d, "*.json"))):
    base = path[:-5]
    try:
        raw = {ext: open(base + "." + ext, "rb").read().decode("utf-8")  # strict
               for ext in ("txt", "srt", "vtt", "json", "lines")}
        if any("\x00" in v for v in raw.values()):
            raise ValueError("a NUL byte")
        j = json.loads(raw["json"])  # strict: no raw control characters
        assert j["task"] == "transcribe" and j["language"] == "en" and isinstance(j["duration"], (int, float))
        assert "".join(s["text"] for s in j["segments"]) == j["text"], "segment texts != text"
        for s in j["segments"]:
            assert set(s) >= {"id", "seek", "start", "end", "text", "tokens", "temperature"}
            assert all(isinstance(x, int) for x in s["tokens"])
        for w in j["words"]:
            assert set(w) == {"word", "start", "end"} and w["word"] == w["word"].strip(" \t\n\r\v\f") and w["word"]
        cues = re.findall(r"(?m)^(\d+)\n(\d\d:\d\d:\d\d,\d\d\d) --> (\d\d:\d\d:\d\d,\d\d\d)\n([^\n]+)\n\n", raw["srt"])
        assert "".join("%s\n%s --> %s\n%s\n\n" % c for c in cues) == raw["srt"], "SRT not only whole cues"
        assert [int(c[0]) for c in cues] == list(range(1, len(cues) + 1)) and len(cues) == len(j["segments"])
        assert raw["vtt"].startswith("WEBVTT\n\n")
        vc = re.findall(r"(\d\d:\d\d:\d\d\.\d\d\d) --> (\d\d:\d\d:\d\d\.\d\d\d)\n([^\n]+)\n\n", raw["vtt"][8:])
        assert "".join("%s --> %s\n%s\n\n" % c for c in vc) == raw["vtt"][8:], "VTT not only whole cues"
        assert not any(re.search(r"[<>]|&(?!amp;|lt;|gt;)", c[2]) for c in vc), "VTT text unescaped"
        assert not any("-->" in c[3] for c in cues), "--> in SRT text"
        prev = 0.0
        for c, s in zip(cues, j["segments"]):
            a, b = t(c[1], ","), t(c[2], ",")
            assert prev <= a < b <= j["duration"] + 1e-9 and abs(a - s["start"]) < 1e-9, "cue times"
            prev = b
        assert raw["txt"].count("\n") == len(j["segments"]) == raw["lines"].count("\n")
    except Exception as e:
        bad.append("%s: line %d: %s" % (os.path.basename(path), e.__traceback__.tb_lineno, e))
print("%d transcripts, %d bad" % (len(glob.glob(os.path.join(d, "*.json"))), len(bad)))
for b in bad[:5]:
    print(b)
sys.exit(1 if bad else 0)
PYEOF
check "writer outputs pass Python's strict UTF-8, json.loads and SRT/VTT cue checks" $? "$(tail -5 "$tmp/py.log")"
