#!/usr/bin/env bash
# profile_cuda.sh - where the GPU time goes: runs voxtral under Nsight Compute
# (ncu) with one metric (each kernel's duration; clocks left alone), over the first
# LAUNCHES kernels of a transcription, and prints the time per kernel name,
# largest first, in the order the stages run (the conv stem and encoder chunks
# come first, then prefill and the decoder steps). Raw CSV in $OUT/ncu.csv.
#   scripts/profile_cuda.sh MODEL_DIR AUDIO [LAUNCHES (default 1500)] [SKIP (default 0)]
# Kernels run one at a time under ncu, so only the per-kernel figures mean anything,
# not the run's wall time.
set -eu
cd "$(dirname "$0")/.."
[ $# -ge 2 ] || { echo "usage: $0 MODEL_DIR AUDIO [LAUNCHES] [SKIP]" >&2; exit 2; }
OUT=${OUT:-build/profile}
N=${3:-1500}; SKIP=${4:-0}
BIN=${VOXTRAL:-build/cuda/voxtral}
command -v ncu >/dev/null || { echo "profile_cuda.sh: ncu (Nsight Compute) not found" >&2; exit 1; }
mkdir -p "$OUT"
ncu --clock-control none --metrics gpu__time_duration.sum --csv --launch-skip "$SKIP" --launch-count "$N" \
    "$BIN" -d "$1" -i "$2" --backend cuda --quiet >"$OUT/ncu.csv" 2>"$OUT/ncu.err" || {
    tail -5 "$OUT/ncu.err" >&2; exit 1; }
python3 - "$OUT/ncu.csv" <<'PY'
import csv, re, sys
rows = [l for l in open(sys.argv[1]) if l.startswith('"')]
tot, cnt, first = {}, {}, {}
for i, r in enumerate(csv.DictReader(rows)):
    if r.get("Metric Name") != "gpu__time_duration.sum":
        continue
    name = re.sub(r"\(.*", "", r["Kernel Name"]).strip()[:60]
    v = float(r["Metric Value"].replace(",", ""))
    unit = r.get("Metric Unit", "nsecond")
    v *= {"nsecond": 1e-3, "usecond": 1.0, "msecond": 1e3, "second": 1e6}.get(unit, 1e-3)  # -> us
    tot[name] = tot.get(name, 0.0) + v
    cnt[name] = cnt.get(name, 0) + 1
    first.setdefault(name, i)
all_us = sum(tot.values())
print("%-60s %6s %10s %8s %6s" % ("kernel", "count", "total us", "mean us", "share"))
for n in sorted(tot, key=lambda n: -tot[n]):
    print("%-60s %6d %10.1f %8.2f %5.1f%%" % (n, cnt[n], tot[n], tot[n] / cnt[n], 100 * tot[n] / all_us))
print("%-60s %6d %10.1f" % ("all", sum(cnt.values()), all_us))
PY
