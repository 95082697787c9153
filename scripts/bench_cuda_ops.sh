#!/bin/sh
# bench_cuda_ops.sh - on a GPU machine: build the CUDA backend and its op test,
# run every check against the CPU twins, then the timings (GEMV GB/s against the
# measured D2D copy, attention, a synthetic decoder step, GEMV vs cuBLASLt).
# Logs go to $OUT (or build/) as cuda_ops.log; the summary table prints last.
#   scripts/bench_cuda_ops.sh [test]     (test: the checks only)
set -e
cd "$(dirname "$0")/.."
OUT=${OUT:-build}
ARCH=${CUDA_ARCH:-90}
mkdir -p "$OUT"
# the host stubs nvcc generates need libstdc++ unless built without exceptions
# and thread-safe statics (the engine links with cc)
NVF="-O3 -lineinfo -std=c++17 -gencode arch=compute_$ARCH,code=sm_$ARCH -I. -Xcompiler -Wall,-fno-threadsafe-statics,-fno-exceptions"
BIN=build/cuda/tests/test_cuda_ops
rm -rf build/cuda/cuda # objects from a build with other NVCCFLAGS would not be remade
if ! make CUDA=1 CUDA_ARCH="$ARCH" NVCCFLAGS="$NVF" -j16 "$BIN" build/cuda/tests/test_cuda_batched >"$OUT/build.log" 2>&1; then
    tail -30 "$OUT/build.log"
    echo "bench_cuda_ops: the build failed (whole log: $OUT/build.log)" >&2
    exit 1
fi
set +e
if [ "$1" = test ]; then { $BIN; build/cuda/tests/test_cuda_batched; } 2>&1 | tee "$OUT/cuda_ops.log"
else { $BIN bench; build/cuda/tests/test_cuda_batched; } 2>&1 | tee "$OUT/cuda_ops.log"; fi
