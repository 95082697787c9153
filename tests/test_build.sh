#!/usr/bin/env bash
# test_build.sh - build-system checks that need no GPU and no real CUDA toolkit:
# `make cuda` must never hand nvcc an empty NVCC_CCBIN in its environment (nvcc reads
# it as the host compiler: "Failed to preprocess host compiler properties"), with or
# without CXX in the environment. A stand-in nvcc records what it was given.
set -u
cd "$(dirname "$0")/.."
. tests/testlib.sh

src="$tmp/src"
mkdir -p "$src" "$tmp/cuda/bin" "$tmp/cuda/include" "$tmp/cuda/lib64"
cp -r Makefile ./*.c ./*.h cuda cli "$src"/
cat >"$tmp/cuda/bin/nvcc" <<'SH'
#!/bin/sh
case "$*" in *--list-gpu-arch*) echo compute_90; exit 0;; *--version*) echo "release 13.0"; exit 0;; esac
echo "NVCC_CCBIN=${NVCC_CCBIN-<unset>} args=$*" >>"$NVCC_LOG"
exit 1
SH
chmod +x "$tmp/cuda/bin/nvcc"
for cxx in unset g++; do
    log="$tmp/nvcc_$cxx.log"
    : >"$log"
    if [ "$cxx" = unset ]; then
        (cd "$src" && env -u CXX -u NVCC_CCBIN NVCC_LOG="$log" make -k cuda CUDA_HOME="$tmp/cuda" CUDA_ARCH=90 >/dev/null 2>&1)
    else
        (cd "$src" && env -u NVCC_CCBIN CXX=g++ NVCC_LOG="$log" make -k cuda CUDA_HOME="$tmp/cuda" CUDA_ARCH=90 >/dev/null 2>&1)
    fi
    first=$(head -1 "$log")
    case "$cxx:$first" in
        unset:"NVCC_CCBIN=<unset> "*) ok "make cuda without CXX: nvcc gets no NVCC_CCBIN in its environment" ;;
        g++:"NVCC_CCBIN=<unset> "*"-ccbin g++"*) ok "make cuda with CXX=g++: nvcc gets -ccbin g++, no NVCC_CCBIN in its environment" ;;
        *) nok "make cuda (CXX $cxx): nvcc's environment and arguments" "${first:-nvcc never ran}" ;;
    esac
    rm -rf "$src/build"
done
