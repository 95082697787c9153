#!/usr/bin/env bash
# test_tools.sh - the operator tools on the CPU with a tiny random model:
# WER/CER unit tests (tests/test_wer.py); `voxtral --check` and validate_cuda.sh on
# a machine without a usable GPU (clear message, a fix line, the right exit code);
# benchmark_backends.sh's JSON and CSV (parse, every field, every row); and
# accuracy_regression.sh passing on identical transcripts and failing on planted
# differences beyond its thresholds (a stand-in voxtral whose "cuda" backend is the
# CPU, with or without a planted difference).
set -u
cd "$(dirname "$0")/.." || exit 1
VOX=${VOXTRAL:-./voxtral}
case $VOX in /*) ;; *) VOX=$PWD/$VOX ;; esac
PY=${PYTHON:-/usr/bin/python3}
export OMP_NUM_THREADS=1 # tiny model: one thread is fastest, and immune to a busy machine
. tests/testlib.sh
tiny_model 5
WAV=samples/hello.wav

# ---- WER / CER ----------------------------------------------------------------------
$PY tests/test_wer.py
check "test_wer.py: all WER/CER cases" $?

# ---- voxtral --check --------------------------------------------------------------------
"$VOX" --check -d "$M" -i "$WAV" >"$tmp/check.txt" 2>"$tmp/check.err"; rc=$?
cuda_build=0; grep -q '^ok    build      CPU + CUDA' "$tmp/check.txt" && cuda_build=1
gpu_ok=0; grep -q '^ok    support ' "$tmp/check.txt" && gpu_ok=1
# the rule: exit 0 when the backend --backend names (default auto: any) works; the
# CPU works here, so auto passes; --backend cuda needs a usable GPU
want=0; want_cuda=1; [ $cuda_build -eq 1 ] && [ $gpu_ok -eq 1 ] && want_cuda=0
[ $rc -eq $want ]
check "--check: exit $want ($([ $cuda_build -eq 1 ] && echo CUDA || echo CPU-only) build, usable GPU: $gpu_ok)" $? \
    "rc=$rc $(cat "$tmp/check.txt" "$tmp/check.err")"
grep -q '^ok    smoke cpu  hello.wav (3.9 s): load .* first token .* ms/step' "$tmp/check.txt"
check "--check: CPU smoke run with first token and ms/step" $? "$(cat "$tmp/check.txt")"
grep -q '^ok    model      .*weights .* KV .* workspace' "$tmp/check.txt" && grep -q '^ok    host mem ' "$tmp/check.txt"
check "--check: model memory need and host RAM" $? "$(cat "$tmp/check.txt")"
[ "$(tail -1 "$tmp/check.txt" | cut -c1-8)" = "result: " ]
check "--check: last line is the result" $? "$(tail -1 "$tmp/check.txt")"
"$VOX" --check --backend cuda -d "$M" -i "$WAV" >"$tmp/checkc.txt" 2>&1; rc=$?
[ $rc -eq $want_cuda ] && { [ $want_cuda -eq 0 ] || grep -q '^result: FAIL' "$tmp/checkc.txt"; }
check "--check --backend cuda: exit $want_cuda (the GPU must work)" $? "rc=$rc $(cat "$tmp/checkc.txt")"
"$VOX" --check --backend cpu -d "$M" -i "$WAV" >"$tmp/checkp.txt" 2>&1; rc=$?
[ $rc -eq 0 ] && grep -q '^result: PASS$' "$tmp/checkp.txt" && ! grep -q '^skip  smoke cuda' "$tmp/checkp.txt" \
    && ! grep -Eq '^(FAIL|warn)  (driver|support)' "$tmp/checkp.txt"
check "--check --backend cpu: PASS, GPU lines only information" $? "rc=$rc $(cat "$tmp/checkp.txt")"
if [ $gpu_ok -eq 0 ]; then
    # no GPU: says so on the driver/gpu line
    grep -Eq '^(warn|info)  (driver|support) ' "$tmp/check.txt"
    check "--check without a GPU: a driver/support line says why" $? "$(cat "$tmp/check.txt")"
    if [ $cuda_build -eq 1 ]; then
        grep -A1 -E '^warn  (driver|support) ' "$tmp/check.txt" | grep -q '^      fix: .*--backend cpu' \
            && grep -q '^skip  smoke cuda ' "$tmp/check.txt" && grep -q '^result: PASS on the CPU (the CUDA backend cannot run here' "$tmp/check.txt" \
            && grep -A1 -E '^FAIL  (driver|support) ' "$tmp/checkc.txt" | grep -q '^      fix: '
        check "--check without a GPU (CUDA build): warn + fix, cuda smoke skipped, 'PASS on the CPU'; --backend cuda: FAIL" $? \
            "$(cat "$tmp/check.txt")"
    else
        grep -q '^result: PASS$' "$tmp/check.txt" && grep -q '^FAIL  backend    --backend cuda, but this build has no CUDA' "$tmp/checkc.txt"
        check "--check without a GPU (CPU build): PASS; --backend cuda: FAIL (no CUDA backend)" $? "$(cat "$tmp/check.txt" "$tmp/checkc.txt")"
    fi
fi
"$VOX" --check >"$tmp/c2.txt" 2>&1; rc=$?
[ $rc -eq $want ] && grep -q '^skip  model      no -d DIR' "$tmp/c2.txt"
check "--check without -d: model skipped, exit $want" $? "rc=$rc $(cat "$tmp/c2.txt")"
"$VOX" --check -d "$tmp/nomodel" >"$tmp/c3.txt" 2>&1; rc=$?
[ $rc -eq 1 ] && grep -A1 '^FAIL  model      .*nomodel' "$tmp/c3.txt" | grep -q '^      fix: '
check "--check with a missing model: exit 1, FAIL model + fix" $? "rc=$rc $(cat "$tmp/c3.txt")"
"$VOX" --check -d "$M" -i "$tmp/missing.wav" >"$tmp/c4.txt" 2>&1; rc=$?
[ $rc -eq 1 ] && grep -q '^FAIL  smoke cpu  .*missing.wav' "$tmp/c4.txt"
check "--check with a missing audio file: exit 1, FAIL smoke" $? "rc=$rc $(cat "$tmp/c4.txt")"
"$VOX" --check -d "$M" -i "$WAV" --quiet >"$tmp/c5.txt" 2>&1; rc=$?
[ $rc -eq $want ] && ! grep -Eq '^(ok|info|skip) ' "$tmp/c5.txt" && grep -q '^result: ' "$tmp/c5.txt"
check "--check --quiet: only problems and the result" $? "$(cat "$tmp/c5.txt")"
# no audio and no samples/ beside the binary: a generated tone
cp "$VOX" "$tmp/vox"
(cd "$tmp" && ./vox --check -d "$M" >"$tmp/c6.txt" 2>&1)
grep -q '^ok    smoke cpu  2 s tone (2.0 s)' "$tmp/c6.txt"
check "--check without audio or samples/: 2 s tone" $? "$(cat "$tmp/c6.txt")"

# ---- validate_cuda.sh ---------------------------------------------------------------------
VOXTRAL=$VOX scripts/validate_cuda.sh "$M" "$WAV" >"$tmp/v.txt" 2>&1; rc=$?
if [ $gpu_ok -eq 1 ] && [ $cuda_build -eq 1 ]; then
    [ $rc -eq 0 ] && grep -q '^validate_cuda.sh: PASS' "$tmp/v.txt"
    check "validate_cuda.sh with a usable GPU: exit 0" $? "rc=$rc $(tail -20 "$tmp/v.txt")"
else
    [ $rc -eq 1 ] && grep -q '^validate_cuda.sh: FAIL' "$tmp/v.txt" && grep -q '^      fix: ' "$tmp/v.txt" \
        && grep -q '^ok    smoke cpu ' "$tmp/v.txt"
    check "validate_cuda.sh without a usable GPU: exit 1, fix lines, CPU smoke still runs" $? \
        "rc=$rc $(cat "$tmp/v.txt")"
fi
VOXTRAL=$tmp/missing-binary scripts/validate_cuda.sh "$M" >"$tmp/v2.txt" 2>&1; rc=$?
[ $rc -eq 1 ] && grep -A1 '^FAIL  binary ' "$tmp/v2.txt" | grep -q 'fix: build it'
check "validate_cuda.sh without a binary: exit 1, says how to build" $? "rc=$rc $(cat "$tmp/v2.txt")"

# ---- benchmark_backends.sh ------------------------------------------------------------------
VOXTRAL=$VOX scripts/benchmark_backends.sh "$M" "$WAV" samples/hello.flac --runs 2 --threads 1 \
    --json "$tmp/b.json" --csv "$tmp/b.csv" >"$tmp/b.txt" 2>&1; rc=$?
check "benchmark_backends.sh: exit 0" $rc "$(cat "$tmp/b.txt")"
$PY - "$tmp/b.json" "$tmp/b.csv" "$gpu_ok" "$cuda_build" <<'EOF'
import csv, json, sys
o = json.load(open(sys.argv[1]))
rows_csv = list(csv.DictReader(open(sys.argv[2])))
fields = ["backend", "backend_desc", "threads", "file", "run", "audio_s", "load_ms", "encoder_ms_per_audio_s",
          "step_ms_mean", "step_ms_p95", "first_token_ms", "rtf", "peak_rss_mb", "peak_vram_mb", "steps"]
machine = ["cpu_model", "cores", "gpu", "driver"]
assert all(k in o["machine"] for k in machine), o["machine"]
assert o["machine"]["cores"] >= 1 and o["machine"]["cpu_model"]
backends = ["cpu"] + (["cuda"] if sys.argv[3] == "1" and sys.argv[4] == "1" else [])
want = len(backends) * 2 * (2 + 1)  # backends x files x (runs + summary)
assert len(o["rows"]) == want, (len(o["rows"]), want)
assert len(rows_csv) == want, (len(rows_csv), want)
assert list(rows_csv[0].keys()) == fields + machine, list(rows_csv[0].keys())
for r in o["rows"]:
    assert all(k in r for k in fields), r
    for k in fields[5:]:
        assert isinstance(r[k], (int, float)) and r[k] >= 0, (k, r[k])
    assert r["audio_s"] > 3 and r["steps"] > 0 and r["rtf"] > 0 and r["first_token_ms"] > 0, r
    if r["backend"] == "cpu":
        assert r["peak_vram_mb"] == 0 and r["threads"] == 1 and r["peak_rss_mb"] > 0, r
for r in rows_csv:
    for k in fields[5:] + ["cores"]:
        float(r[k])
    assert r["gpu"] and r["driver"] and r["cpu_model"], r
runs = sorted(str(r["run"]) for r in o["rows"] if r["backend"] == "cpu")
assert runs == ["1", "1", "2", "2", "summary", "summary"], runs
EOF
check "benchmark_backends.sh: JSON and CSV parse, every field, one row per (backend, file, run) + summaries" $?
grep -q '^backend .*load ms.*enc ms/s.*step ms.*p95 ms.*TTFT ms.*RTF.*RSS MB.*VRAM MB' "$tmp/b.txt" \
    && grep -q '^cpu/1t .*hello.flac .*summary' "$tmp/b.txt" && grep -q '^machine: ' "$tmp/b.txt"
check "benchmark_backends.sh: human table with the machine" $? "$(cat "$tmp/b.txt")"
if [ $gpu_ok -eq 0 ]; then
    VOXTRAL=$VOX scripts/benchmark_backends.sh "$M" "$WAV" --runs 1 --backends cuda >"$tmp/b2.txt" 2>&1; rc=$?
    [ $rc -eq 1 ] && grep -q 'cuda on .*hello.wav: ' "$tmp/b2.txt"
    check "benchmark_backends.sh --backends cuda without a GPU: exit 1, says why" $? "rc=$rc $(cat "$tmp/b2.txt")"
fi
VOXTRAL=$VOX scripts/benchmark_backends.sh "$M" "$WAV" --runs x >/dev/null 2>&1
check "benchmark_backends.sh --runs x: usage error (2)" $(($? == 2 ? 0 : 1))

# ---- accuracy_regression.sh ------------------------------------------------------------------
# a voxtral whose "cuda" backend is the CPU; PLANT=1 changes 3 of its ids and a word
cat >"$tmp/fakevox" <<EOF
#!/usr/bin/env bash
args=(); cuda=0
for a in "\$@"; do if [ "\$a" = cuda ]; then args+=(cpu); cuda=1; else args+=("\$a"); fi; done
if [ \$cuda = 1 ] && [ "\${PLANT:-0}" = 1 ]; then
    "$VOX" "\${args[@]}" | $PY -c '
import json, sys
o = json.load(sys.stdin)
for k in (4, 5, 6):
    o["tokens"][k] = o["tokens"][k] + 1
o["text"] = "planted " + o["text"]
print(json.dumps(o))'
    exit \${PIPESTATUS[0]}
fi
exec "$VOX" "\${args[@]}"
EOF
chmod +x "$tmp/fakevox"
"$VOX" -d "$M" -i "$WAV" --json --quiet -t 1 >"$tmp/cpu.json" 2>/dev/null
$PY -c "import json,sys; print(json.load(open(sys.argv[1]))['text'])" "$tmp/cpu.json" >"$tmp/cpu_ref.txt"
n_ids=$($PY -c "import json,sys; print(len(json.load(open(sys.argv[1]))['tokens']))" "$tmp/cpu.json")
acc() { VOXTRAL=$tmp/fakevox scripts/accuracy_regression.sh "$M" "$WAV" --threads 1 --out "$tmp/acc" "$@" >"$tmp/a.txt" 2>&1; }

acc --ref "$tmp/cpu_ref.txt" --max-wer 0 --max-diff 0; rc=$?
[ $rc -eq 0 ] && grep -q "^cpu vs cuda: ids: 0 of $n_ids differ (0.00%); text: identical" "$tmp/a.txt" \
    && grep -q '^cpu   vs reference: WER 0.00% ' "$tmp/a.txt" && grep -q '^result: PASS' "$tmp/a.txt"
check "accuracy_regression.sh: identical backends and reference pass (exit 0)" $? "rc=$rc $(cat "$tmp/a.txt")"
$PY - "$tmp/acc/report.json" <<'EOF'
import json, sys
o = json.load(open(sys.argv[1]))
assert o["pass"] is True and o["failures"] == [], o
f = o["files"][0]
assert set(f["results"]) == {"cpu", "cuda"}
assert f["vs_ref"]["cpu"]["wer"] == 0 and f["vs_ref"]["cuda"]["cer"] == 0
p = f["pairs"][0]
assert p["ids_differ"] == 0 and p["first_diff"] is None and p["diff_fraction"] == 0
EOF
check "accuracy_regression.sh: report.json of the passing run" $?

PLANT=1 acc --max-diff 0; rc=$?
first=$(grep -o 'first at id [0-9]*' "$tmp/a.txt")
[ $rc -eq 1 ] && grep -q "^cpu vs cuda: ids: 3 of $n_ids differ" "$tmp/a.txt" && [ "$first" = "first at id 4" ] \
    && grep -q '(cpu -> cuda) {+planted+}' "$tmp/a.txt" && grep -q '^result: FAIL' "$tmp/a.txt"
check "accuracy_regression.sh: 3 planted id differences > --max-diff 0 fail (exit 1), found where" $? \
    "rc=$rc $(cat "$tmp/a.txt")"
$PY -c "import json,sys; o=json.load(open(sys.argv[1])); assert not o['pass'] and o['files'][0]['pairs'][0]['ids_differ'] == 3" \
    "$tmp/acc/report.json"
check "accuracy_regression.sh: report.json records the failure" $?
PLANT=1 acc --max-diff 0.5; rc=$?
check "accuracy_regression.sh: the same difference within --max-diff 0.5 passes" $rc "$(cat "$tmp/a.txt")"

# a reference that differs from the transcript: over --max-wer fails, under passes
acc --backends cpu --ref samples/hello.txt --max-wer 0.5; rc=$?
[ $rc -eq 1 ] && grep -q '^cpu   vs reference: WER .*FAIL: above 50.00%' "$tmp/a.txt" && grep -q '\[-hello' "$tmp/a.txt" \
    && [ -s "$tmp/acc/report.txt" ]
check "accuracy_regression.sh: WER above --max-wer fails (exit 1), word diff in the report" $? \
    "rc=$rc $(cat "$tmp/a.txt")"
acc --backends cpu --ref samples/hello.txt --max-wer 100; rc=$?
check "accuracy_regression.sh: the same WER under --max-wer 100 passes" $rc "$(cat "$tmp/a.txt")"
acc --ref samples/hello.txt --ref samples/hello.txt; rc=$?
[ $rc -eq 2 ]
check "accuracy_regression.sh: two --ref for one file is a usage error (2)" $? "rc=$rc $(cat "$tmp/a.txt")"
# the verdict agrees with the exit status; nothing compared fails; defaults bite
acc_dir() { VOXTRAL=$tmp/fakevox scripts/accuracy_regression.sh "$@" --threads 1 --out "$tmp/acc" >"$tmp/a.txt" 2>&1; }
acc_dir "$tmp/nomodel" "$WAV" --ref samples/hello.txt; rc=$?
[ $rc -eq 1 ] && grep -q '^result: FAIL' "$tmp/a.txt" && ! grep -q '^result: PASS' "$tmp/a.txt"
check "accuracy_regression.sh with a missing model: result FAIL and exit 1" $? "rc=$rc $(cat "$tmp/a.txt")"
echo "completely unrelated words here" >"$tmp/wrong.txt"
acc_dir "$M" "$WAV" --backends cpu --ref "$tmp/wrong.txt"; rc=$?
[ $rc -eq 1 ] && grep -q 'FAIL: above 15.00%' "$tmp/a.txt" && grep -q '^result: FAIL' "$tmp/a.txt"
check "accuracy_regression.sh: a 100% WER fails without --max-wer (default 15%)" $? "rc=$rc $(cat "$tmp/a.txt")"
acc_dir "$M" "$WAV" --backends cpu; rc=$?
[ $rc -eq 1 ] && grep -q "^no reference for .*hello.wav" "$tmp/a.txt" && grep -q '^result: FAIL .*nothing compared' "$tmp/a.txt"
check "accuracy_regression.sh: one backend, no reference: names the file, nothing compared fails" $? "rc=$rc $(cat "$tmp/a.txt")"
cp "$WAV" "$tmp/noref.wav"
acc_dir "$M" "$WAV" "$tmp/noref.wav" --ref auto --max-wer 100; rc=$?
[ $rc -eq 0 ] && grep -q "^no reference for .*noref.wav" "$tmp/a.txt" && grep -q '^result: PASS' "$tmp/a.txt"
check "accuracy_regression.sh --ref auto: a file without a .txt is named, the rest compared" $? "rc=$rc $(cat "$tmp/a.txt")"
# ---- make_random_model.py: runs by its shebang; a Python without numpy says what to do --------
scripts/make_random_model.py --preset tiny --seed 1 --out "$tmp/shebang" >/dev/null 2>"$tmp/err"; rc=$?
[ $rc -eq 0 ] && [ -s "$tmp/shebang/consolidated.safetensors" ]
check "make_random_model.py by its shebang (/usr/bin/python3, Debian's numpy)" $? "rc=$rc $(cat "$tmp/err")"
/usr/bin/python3 -S scripts/make_random_model.py --preset tiny --out "$tmp/nonumpy" >/dev/null 2>"$tmp/err"; rc=$?
[ $rc -eq 1 ] && grep -q 'numpy is missing .*run it with /usr/bin/python3' "$tmp/err" && ! grep -q Traceback "$tmp/err"
check "make_random_model.py under a Python without numpy: one line saying how to run it" $? "rc=$rc $(cat "$tmp/err")"
exit 0
