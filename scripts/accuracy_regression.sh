#!/usr/bin/env bash
# accuracy_regression.sh - transcribe with each backend and compare: (a) the backends
# with each other (token ids and text: how many differ, where), (b) each backend with
# a reference transcript (WER and CER after normalising case, punctuation and
# whitespace; scripts/wer.py). Writes report.txt (word diffs a person can read) and
# report.json; exits 1 when a threshold is exceeded or a run fails.
#
#   scripts/accuracy_regression.sh [DIR] [AUDIO...] [--ref TXT|auto]... [--max-wer X]
#                                  [--max-diff Y] [--backends cpu,cuda] [--threads N]
#                                  [--out DIR]
#
# DIR defaults to models/voxtral-realtime-4b, AUDIO to samples/hello.wav.
# --ref TXT     reference transcript of the i-th AUDIO (give one per file, in order);
#               --ref auto: the .txt beside each audio file (../shared/audio/*.txt)
# --max-wer X   fail when a backend's WER against its reference exceeds X (0.05 = 5 %;
#               default 0.15: the released model's CPU WER on the bundled samples is
#               well under it, a broken backend is far above it)
# --max-diff Y  fail when the fraction of token ids that differ between two backends
#               exceeds Y (0 = identical ids required; default 0.10: bf16 rounding
#               flips a near-tie now and then, a broken kernel changes most ids);
#               ids past the shorter run count
# The verdict ("result: PASS" / "result: FAIL (...)") always agrees with the exit
# status: a failed run (missing model, bad file) fails, and so does a run that
# compared nothing (one backend and no reference); files without a reference are
# named.
# --backends    default: cpu, plus cuda when it runs (else it says why and goes on)
# --out DIR     where report.txt and report.json go (default build/accuracy)
# The binary is $VOXTRAL (default ./voxtral beside scripts/). With random-weight
# models the transcripts are meaningless, but every comparison still runs.
set -u
ROOT=$(cd "$(dirname "$0")/.." && pwd)
VOX=${VOXTRAL:-$ROOT/voxtral}
PY=${PYTHON:-/usr/bin/python3}
usage() { sed -n '2,/^set -u/p' "$0" | sed -e '/^set -u/d' -e 's/^# \{0,1\}//'; }
die() { echo "accuracy_regression.sh: $*" >&2; exit 2; }

dir= ; files=() ; refs=() ; max_wer=0.15 ; max_diff=0.10 ; backends= ; threads= ; out=$ROOT/build/accuracy
while [ $# -gt 0 ]; do
    case $1 in
        --ref|--max-wer|--max-diff|--backends|--threads|--out)
            [ $# -ge 2 ] || die "$1 needs a value"
            case $1 in
                --ref) refs+=("$2") ;; --max-wer) max_wer=$2 ;; --max-diff) max_diff=$2 ;;
                --backends) backends=$2 ;; --threads) threads=$2 ;; --out) out=$2 ;;
            esac
            shift 2 ;;
        -h|--help) usage; exit 0 ;;
        -*) die "unknown option $1 (see --help)" ;;
        *) if [ -z "$dir" ]; then dir=$1; else files+=("$1"); fi; shift ;;
    esac
done
dir=${dir:-$ROOT/models/voxtral-realtime-4b}
[ ${#files[@]} -gt 0 ] || files=("$ROOT/samples/hello.wav")
for x in "$max_wer" "$max_diff"; do
    [ -z "$x" ] || "$PY" -c "import sys; v = float(sys.argv[1]); assert v >= 0" "$x" 2>/dev/null \
        || die "threshold '$x': need a number >= 0 (a fraction: 0.05 = 5 %)"
done
case $threads in ''|*[!0-9]*) [ -z "$threads" ] || die "--threads $threads: need a positive count" ;; esac
[ -x "$VOX" ] || die "$VOX not found: build it with make"
# one reference per file: --ref auto, or as many --ref as files, or none
if [ ${#refs[@]} -eq 1 ] && [ "${refs[0]}" = auto ]; then
    refs=()
    for f in "${files[@]}"; do
        t=${f%.*}.txt
        [ -r "$t" ] && refs+=("$t") || refs+=("")
    done
elif [ ${#refs[@]} -gt 0 ] && [ ${#refs[@]} -ne ${#files[@]} ]; then
    die "${#refs[@]} --ref for ${#files[@]} audio files: give one per file, in order, or --ref auto"
fi
for f in "${files[@]}"; do [ -r "$f" ] || die "$f: no such audio file"; done
for t in ${refs[@]+"${refs[@]}"}; do [ -z "$t" ] || [ -r "$t" ] || die "$t: no such reference file"; done
explicit=1
[ -n "$backends" ] || { backends=cpu,cuda; explicit=0; }
mkdir -p "$out" || die "$out: cannot create"

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
status=0
: >"$tmp/index"
: >"$tmp/errors"
used=()
for be in ${backends//,/ }; do
    case $be in cpu|cuda) ;; *) die "unknown backend $be (cpu, cuda)" ;; esac
    args=(--backend "$be" --json --quiet)
    [ -n "$threads" ] && [ "$be" = cpu ] && args+=(-t "$threads")
    i=0; ran=0
    for f in "${files[@]}"; do
        res=$tmp/$be.$i.json
        if "$VOX" -d "$dir" -i "$f" "${args[@]}" >"$res" 2>"$tmp/err"; then
            printf '%s\t%s\t%s\t%s\n' "$be" "$f" "${refs[$i]:-}" "$res" >>"$tmp/index"
            ran=1
        elif [ $explicit -eq 0 ] && [ "$be" != cpu ] && [ $i -eq 0 ]; then
            echo "# $be: skipped ($(tail -1 "$tmp/err"))"
            break
        else
            echo "accuracy_regression.sh: $be on $f: $(tail -1 "$tmp/err")" >&2
            printf '%s on %s: %s\n' "$be" "$f" "$(tail -1 "$tmp/err")" >>"$tmp/errors"
            status=1
        fi
        i=$((i + 1))
    done
    [ $ran -eq 1 ] && used+=("$be")
done

MODEL=$dir MAX_WER=$max_wer MAX_DIFF=$max_diff BACKENDS="${used[*]:-}" \
    "$PY" - "$ROOT/scripts" "$tmp/index" "$out" "$tmp/errors" <<'EOF' || status=1
import json, os, sys
sys.path.insert(0, sys.argv[1])
import wer as W

index, out = sys.argv[2], sys.argv[3]
model = os.environ["MODEL"]
max_wer = float(os.environ["MAX_WER"]) if os.environ["MAX_WER"] else None
max_diff = float(os.environ["MAX_DIFF"]) if os.environ["MAX_DIFF"] else None
backends = os.environ["BACKENDS"].split()
try:  # audio seconds per decoder id, for saying where ids start to differ
    p = json.load(open(os.path.join(model, "params.json")))
    frame_rate = p["multimodal"]["whisper_model_args"]["encoder_args"]["audio_encoding_args"]["frame_rate"]
except (OSError, KeyError, ValueError):
    frame_rate = 12.5

files = {}
for line in open(index):
    be, path, ref, res = line.rstrip("\n").split("\t")
    o = json.load(open(res))
    f = files.setdefault(path, {"file": path, "ref": ref or None, "results": {}, "vs_ref": {}, "pairs": []})
    f["results"][be] = {"backend_desc": o["stats"]["backend"], "text": o["text"], "tokens": o["tokens"],
                        "audio_s": o["stats"]["audio_s"]}

failures, lines = [], []
say = lines.append
for e in open(sys.argv[4]):  # runs that failed (the model missing, a bad file)
    failures.append("run failed: " + e.strip())
compared = 0
say("accuracy regression: model %s; backends %s; max WER %s, max id diff %s" % (
    model, ", ".join(backends) or "none",
    "%.2f%%" % (100 * max_wer) if max_wer is not None else "-",
    "%.2f%%" % (100 * max_diff) if max_diff is not None else "-"))
for path, f in files.items():
    res = f["results"]
    any_r = next(iter(res.values()))
    say("")
    say("== %s (%.1f s)%s" % (path, any_r["audio_s"], "  reference " + f["ref"] if f["ref"] else ""))
    if not f["ref"]:
        say("no reference for %s (pass --ref TXT, or --ref auto with a .txt beside it): WER not measured" % path)
    if f["ref"]:
        compared += 1
        ref_text = open(f["ref"], encoding="utf-8").read()
        for be, r in res.items():
            w, c = W.wer(ref_text, r["text"]), W.cer(ref_text, r["text"])
            f["vs_ref"][be] = {"wer": w["wer"], "sub": w["sub"], "del": w["del"], "ins": w["ins"],
                               "ref_words": w["ref_words"], "cer": c["cer"], "char_errors": c["errors"],
                               "ref_chars": c["ref_chars"], "diff": W.word_diff(ref_text, r["text"])}
            bad = max_wer is not None and w["wer"] > max_wer
            say("%-5s vs reference: WER %.2f%% (S %d, D %d, I %d / %d words), CER %.2f%%%s" % (
                be, 100 * w["wer"], w["sub"], w["del"], w["ins"], w["ref_words"], 100 * c["cer"],
                "  FAIL: above %.2f%%" % (100 * max_wer) if bad else ""))
            say("      " + f["vs_ref"][be]["diff"])
            if bad:
                failures.append("%s: %s WER %.2f%% > %.2f%%" % (path, be, 100 * w["wer"], 100 * max_wer))
    names = list(res)
    for i in range(len(names)):
        for j in range(i + 1, len(names)):
            a, b = names[i], names[j]
            ta, tb = res[a]["tokens"], res[b]["tokens"]
            n = max(len(ta), len(tb))
            differ = sum(1 for k in range(n) if k >= len(ta) or k >= len(tb) or ta[k] != tb[k])
            first = next((k for k in range(n) if k >= len(ta) or k >= len(tb) or ta[k] != tb[k]), None)
            frac = differ / n if n else 0.0
            w = W.wer(res[a]["text"], res[b]["text"])
            pair = {"a": a, "b": b, "ids_a": len(ta), "ids_b": len(tb), "ids_differ": differ,
                    "diff_fraction": frac, "first_diff": first,
                    "first_diff_s": first / frame_rate if first is not None else None,
                    "words_differ": w["errors"], "words": w["ref_words"], "text_wer": w["wer"],
                    "diff": W.word_diff(res[a]["text"], res[b]["text"])}
            f["pairs"].append(pair)
            compared += 1
            bad = max_diff is not None and frac > max_diff
            where = ", first at id %d (~%.2f s of audio)" % (first, pair["first_diff_s"]) if first is not None else ""
            say("%s vs %s: ids: %d of %d differ (%.2f%%)%s; text: %s%s" % (
                a, b, differ, n, 100 * frac, where,
                "identical" if res[a]["text"] == res[b]["text"] else
                "%d of %d words differ" % (w["errors"], w["ref_words"]),
                "  FAIL: above %.2f%%" % (100 * max_diff) if bad else ""))
            if res[a]["text"] != res[b]["text"]:
                say("      (%s -> %s) %s" % (a, b, pair["diff"]))
            if bad:
                failures.append("%s: %s vs %s: %.2f%% of ids differ > %.2f%%" % (path, a, b, 100 * frac,
                                                                                 100 * max_diff))
    if len(names) < 2:
        say("(one backend: no backend comparison)")
if not compared:
    failures.append("nothing compared (no run succeeded, or one backend and no reference: give --ref)")
say("")
say("result: " + ("PASS" if not failures else "FAIL (%d): %s" % (len(failures), "; ".join(failures))))
for r in files.values():
    for x in r["results"].values():
        x["n_ids"] = len(x["tokens"])
report = {"model": model, "backends": backends, "max_wer": max_wer, "max_diff": max_diff,
          "files": list(files.values()), "failures": failures, "pass": not failures}
with open(os.path.join(out, "report.json"), "w") as fo:
    json.dump(report, fo, indent=1, ensure_ascii=False)
with open(os.path.join(out, "report.txt"), "w", encoding="utf-8") as fo:
    fo.write("\n".join(lines) + "\n")
print("\n".join(lines))
print("report: %s/report.txt, %s/report.json" % (out, out))
sys.exit(1 if failures else 0)
EOF
exit $status
