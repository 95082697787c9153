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
if ! make CUDA=1 CUDA_ARCH="$ARCH" NVCCFLAGS="$NVF" -j16 "$BIN" >"$OUT/build.log" 2>&1; then
    # the rest of the engine may be mid-edit: build just the backend and its twin
    echo "make failed (see build.log); building the op test alone" | tee -a "$OUT/build.log"
    B=build/cuda-ops
    mkdir -p $B
    CUDA_HOME=${CUDA_HOME:-/usr/local/cuda}
    CF="-O3 -g -std=c11 -D_GNU_SOURCE -Wall -Wextra -Wno-unused-parameter -march=native -fopenmp -I. -I$CUDA_HOME/include $(pkg-config --cflags openblas 2>/dev/null)"
    for f in cuda/*.cu; do $CUDA_HOME/bin/nvcc $NVF -c -o $B/$(basename $f .cu).o $f; done
    printf '#include <stdarg.h>\n#include <stdio.h>\nstatic char e[1024];\nint vox_error(const char *f, ...) { va_list a; va_start(a, f); vsnprintf(e, sizeof e, f, a); va_end(a); return -1; }\nconst char *vox_last_error(void) { return e; }\n' >$B/stub.c
    cc $CF -o $BIN.alone tests/test_cuda_ops.c voxtral_kernels.c voxtral_cuda.c $B/stub.c $B/*.o \
        -L$CUDA_HOME/lib64 -Wl,-rpath,$CUDA_HOME/lib64 -lcublasLt -lcudart \
        $(pkg-config --libs openblas 2>/dev/null || echo -lopenblas) -lm -lpthread 2>&1 | tee -a "$OUT/build.log"
    BIN=$BIN.alone
fi
set +e
if [ "$1" = test ]; then $BIN 2>&1 | tee "$OUT/cuda_ops.log"; else $BIN bench 2>&1 | tee "$OUT/cuda_ops.log"; fi
