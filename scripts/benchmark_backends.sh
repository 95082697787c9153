#!/usr/bin/env bash
# benchmark_backends.sh - the same audio through each backend (CPU with N threads,
# CUDA), several runs each, after one warm-up run per (backend, file) that is not
# counted. Per run and per (backend, file) summary: load time, encoder ms per audio
# second, decoder ms/step (mean, p95), time to first token, real-time factor, peak
# host RSS and peak VRAM (backend memory held; 0 on the CPU).
#
#   scripts/benchmark_backends.sh [DIR] [AUDIO...] [--runs N] [--threads N]
#                                 [--backends cpu,cuda] [--json FILE] [--csv FILE]
#
# DIR defaults to models/voxtral-realtime-4b, AUDIO to samples/hello.wav. Backends
# default to cpu, plus cuda when its warm-up run works (otherwise it says why and
# goes on); a backend named with --backends must work. A human table goes to stdout;
# --json / --csv write one row per (backend, file, run) plus a summary row per
# (backend, file) (run = "summary": the mean over runs; p95 and peaks: the max), with
# the machine (CPU model, cores, GPU, driver). Exit status 0, 1 if a run failed,
# 2 for usage errors. The binary is $VOXTRAL (default ./voxtral beside scripts/).
set -u
ROOT=$(cd "$(dirname "$0")/.." && pwd)
VOX=${VOXTRAL:-$ROOT/voxtral}
PY=${PYTHON:-/usr/bin/python3}
usage() { sed -n '2,/^set -u/p' "$0" | sed -e '/^set -u/d' -e 's/^# \{0,1\}//'; }

dir= ; files=() ; runs=3 ; threads=$(nproc) ; backends= ; json_out= ; csv_out=
while [ $# -gt 0 ]; do
    case $1 in
        --runs|--threads|--backends|--json|--csv)
            [ $# -ge 2 ] || { echo "benchmark_backends.sh: $1 needs a value" >&2; exit 2; }
            case $1 in
                --runs) runs=$2 ;; --threads) threads=$2 ;; --backends) backends=$2 ;;
                --json) json_out=$2 ;; --csv) csv_out=$2 ;;
            esac
            shift 2 ;;
        -h|--help) usage; exit 0 ;;
        -*) echo "benchmark_backends.sh: unknown option $1 (see --help)" >&2; exit 2 ;;
        *) if [ -z "$dir" ]; then dir=$1; else files+=("$1"); fi; shift ;;
    esac
done
dir=${dir:-$ROOT/models/voxtral-realtime-4b}
[ ${#files[@]} -gt 0 ] || files=("$ROOT/samples/hello.wav")
case $runs in ''|*[!0-9]*|0) echo "benchmark_backends.sh: --runs $runs: need a positive count" >&2; exit 2 ;; esac
case $threads in ''|*[!0-9]*|0) echo "benchmark_backends.sh: --threads $threads: need a positive count" >&2; exit 2 ;; esac
[ -x "$VOX" ] || { echo "benchmark_backends.sh: $VOX not found: build it with make" >&2; exit 2; }
for f in "${files[@]}"; do
    [ -r "$f" ] || { echo "benchmark_backends.sh: $f: no such audio file" >&2; exit 2; }
done
explicit=1
[ -n "$backends" ] || { backends=cpu,cuda; explicit=0; }

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

# the machine, from /proc and voxtral's own preflight (no model needed)
cpu_model=$(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo | head -1)
cores=$(nproc)
check=$("$VOX" --check 2>/dev/null)
# "ok    gpu 0      NAME, sm_90, 132 SMs, 79.2 GiB total, ..." -> "NAME (sm_90, 79.2 GiB)"
gpu=$(printf '%s\n' "$check" | sed -n 's/^ok    gpu 0      \(.*\), \(sm_[0-9]*\), [0-9]* SMs, \([0-9.]* GiB\) total.*/\1 (\2, \3)/p' | head -1)
# "ok    driver     NVIDIA driver 580.159.04, supports CUDA 13.0, 1 GPU" -> "580.159.04 (CUDA 13.0)"
driver=$(printf '%s\n' "$check" | sed -n 's/^ok    driver     NVIDIA driver \(.*\), supports CUDA \([0-9.]*\),.*/\1 (CUDA \2)/p' | head -1)

status=0
: >"$tmp/index"
for be in ${backends//,/ }; do
    case $be in cpu|cuda) ;; *) echo "benchmark_backends.sh: unknown backend $be (cpu, cuda)" >&2; exit 2 ;; esac
    args=(--backend "$be" --json --quiet)
    [ "$be" = cpu ] && args+=(-t "$threads")
    skip=0
    for f in "${files[@]}"; do
        [ $skip -eq 1 ] && break
        # warm-up: fills the page cache, loads the GPU; also the probe for an unasked backend
        if ! "$VOX" -d "$dir" -i "$f" "${args[@]}" >"$tmp/warm.json" 2>"$tmp/err"; then
            why=$(grep -v '^{' "$tmp/err" | tail -1)
            if [ $explicit -eq 0 ] && [ "$be" != cpu ]; then
                echo "# $be: skipped ($why)"
                skip=1
                continue
            fi
            echo "benchmark_backends.sh: $be on $f: $why" >&2
            status=1
            continue
        fi
        for r in $(seq 1 "$runs"); do
            out=$tmp/$be.$r.$(basename "$f").json
            if "$VOX" -d "$dir" -i "$f" "${args[@]}" >"$out" 2>"$tmp/err"; then
                printf '%s\t%s\t%s\t%s\t%s\n' "$be" "$([ "$be" = cpu ] && echo "$threads" || echo 0)" "$f" "$r" "$out" >>"$tmp/index"
            else
                echo "benchmark_backends.sh: $be on $f, run $r: $(tail -1 "$tmp/err")" >&2
                status=1
            fi
        done
    done
done

CPU_MODEL=$cpu_model CORES=$cores GPU=${gpu:-none} DRIVER=${driver:-none} MODEL=$dir RUNS=$runs \
    "$PY" - "$tmp/index" "$json_out" "$csv_out" <<'EOF' || status=1
import csv, json, os, sys

index, json_out, csv_out = sys.argv[1:4]
machine = {"cpu_model": os.environ["CPU_MODEL"], "cores": int(os.environ["CORES"]),
           "gpu": os.environ["GPU"], "driver": os.environ["DRIVER"]}
FIELDS = ["backend", "backend_desc", "threads", "file", "run", "audio_s", "load_ms",
          "encoder_ms_per_audio_s", "step_ms_mean", "step_ms_p95", "first_token_ms", "rtf",
          "peak_rss_mb", "peak_vram_mb", "steps"]
MAX_FIELDS = {"step_ms_p95", "peak_rss_mb", "peak_vram_mb"}  # summary: max over runs, others the mean

rows, groups = [], {}
for line in open(index):
    be, threads, path, run, out = line.rstrip("\n").split("\t")
    st = json.load(open(out))["stats"]
    row = {"backend": be, "backend_desc": st["backend"], "threads": int(threads), "file": path,
           "run": int(run), "audio_s": st["audio_s"], "load_ms": st["load_ms"],
           "encoder_ms_per_audio_s": st["encoder_ms_per_audio_s"], "step_ms_mean": st["step_ms_mean"],
           "step_ms_p95": st["step_ms_p95"], "first_token_ms": st["first_token_ms"], "rtf": st["rtf"],
           "peak_rss_mb": st["peak_rss_mb"], "peak_vram_mb": st["backend_mb"], "steps": st["steps"]}
    row = {k: round(v, 4) if isinstance(v, float) else v for k, v in row.items()}
    rows.append(row)
    groups.setdefault((be, path), []).append(row)
for (be, path), rs in groups.items():
    s = dict(rs[0], run="summary")
    for k in FIELDS[5:]:
        vals = [r[k] for r in rs]
        s[k] = max(vals) if k in MAX_FIELDS else round(sum(vals) / len(vals), 4)
    rows.append(s)

print("machine: %s, %d cores; GPU: %s; driver: %s" % (machine["cpu_model"], machine["cores"],
                                                      machine["gpu"], machine["driver"]))
print("model: %s, %s runs per (backend, file) after one warm-up" % (os.environ["MODEL"], os.environ["RUNS"]))
head = ("backend", "file", "run", "audio s", "load ms", "enc ms/s", "step ms", "p95 ms", "TTFT ms", "RTF",
        "RSS MB", "VRAM MB")
fmt = "%-9s %-28s %-7s %7s %8s %8s %8s %8s %8s %7s %8s %8s"
print(fmt % head)
for r in sorted(rows, key=lambda r: (r["backend"], r["file"], r["run"] == "summary",
                                        r["run"] if r["run"] != "summary" else 0)):
    be = "cpu/%dt" % r["threads"] if r["backend"] == "cpu" else r["backend"]
    name = os.path.basename(r["file"])
    name = name if len(name) <= 28 else name[:27] + "~"
    print(fmt % (be, name, r["run"], "%.1f" % r["audio_s"], "%.0f" % r["load_ms"],
                 "%.1f" % r["encoder_ms_per_audio_s"], "%.2f" % r["step_ms_mean"], "%.2f" % r["step_ms_p95"],
                 "%.0f" % r["first_token_ms"], "%.3f" % r["rtf"], "%.0f" % r["peak_rss_mb"],
                 "%.0f" % r["peak_vram_mb"]))
if not rows:
    print("(no successful runs)")
if json_out:
    with open(json_out, "w") as f:
        json.dump({"machine": machine, "model": os.environ["MODEL"], "runs": int(os.environ["RUNS"]),
                   "fields": FIELDS, "rows": rows}, f, indent=1)
if csv_out:
    with open(csv_out, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=FIELDS + list(machine))
        w.writeheader()
        for r in rows:
            w.writerow(dict(r, **machine))
sys.exit(0 if rows else 1)
EOF
exit $status
