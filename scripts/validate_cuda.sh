#!/usr/bin/env bash
# validate_cuda.sh - will voxtral's CUDA backend work on this machine? The build side
# first (CUDA toolkit, nvidia-smi, whether ./voxtral was built with CUDA), then
# `voxtral --check`: driver (and WSL2's loader path), GPUs, compute capability,
# versions, memory need against free VRAM and host RAM, smoke transcriptions with
# time to first token and ms/step. Every problem comes with the next step to fix it.
#
#   scripts/validate_cuda.sh [DIR] [AUDIO]
#
# DIR defaults to models/voxtral-realtime-4b when it exists (without a model the
# memory and smoke checks are skipped); AUDIO to samples/hello.wav. Exit status 0
# only when the CUDA backend will work: a usable GPU, a CUDA build, and (given a
# model) enough memory and a good smoke run on the GPU. The binary is $VOXTRAL
# (default ./voxtral beside scripts/).
set -u
ROOT=$(cd "$(dirname "$0")/.." && pwd)
VOX=${VOXTRAL:-$ROOT/voxtral}
case ${1:-} in -h|--help) sed -n '2,/^set -u/p' "$0" | sed -e '/^set -u/d' -e 's/^# \{0,1\}//'; exit 0 ;; esac
dir=${1:-}
audio=${2:-}
[ -n "$dir" ] || { [ -f "$ROOT/models/voxtral-realtime-4b/params.json" ] && dir=$ROOT/models/voxtral-realtime-4b; }
fails=()
say() { printf '%-5s %-10s %s\n' "$1" "$2" "$3"; }
fix() { printf '      fix: %s\n' "$1"; }

echo "validate_cuda.sh: build side"
# 1. the toolkit (only needed to build the CUDA backend)
cuda_home=${CUDA_HOME:-/usr/local/cuda}
nvcc=$cuda_home/bin/nvcc
[ -x "$nvcc" ] || nvcc=$(command -v nvcc 2>/dev/null || true)
if [ -n "$nvcc" ] && [ -x "$nvcc" ]; then
    say ok toolkit "$nvcc ($("$nvcc" --version | sed -n 's/.*release \([0-9.]*\).*/CUDA \1/p'))"
else
    say info toolkit "no nvcc under $cuda_home or on PATH (only needed to build the CUDA backend)"
fi
# 2. the driver's own tool
if command -v nvidia-smi >/dev/null 2>&1; then
    q=$(nvidia-smi --query-gpu=index,name,driver_version,compute_cap,memory.used,memory.total --format=csv,noheader 2>&1)
    if [ $? -eq 0 ]; then
        printf '%s\n' "$q" | while IFS= read -r l; do say ok nvidia-smi "$l"; done
    else
        say FAIL nvidia-smi "$(printf '%s' "$q" | head -1)"
        fix "the driver is installed but not working: reboot after a driver update, or reinstall it"
        fails+=(nvidia-smi)
    fi
else
    say info nvidia-smi "not found (the --check below asks the driver directly)"
fi
# 3. the binary
if [ ! -x "$VOX" ]; then
    say FAIL binary "$VOX not found"
    fix "build it: make (builds the CUDA backend when nvcc is found; make cuda-check explains what is missing)"
    echo "result: FAIL (${#fails[@]} problems before: binary)"
    exit 1
fi
if ! "$VOX" --check 2>/dev/null | grep -q '^ok    build      CPU + CUDA'; then
    say FAIL binary "$VOX was built without the CUDA backend"
    if [ -n "$nvcc" ]; then fix "rebuild: make cuda CUDA_HOME=$cuda_home"
    else fix "install the CUDA toolkit, then: make cuda CUDA_HOME=/path/to/cuda (make cuda-check explains what is missing)"; fi
    fails+=(binary)
else
    say ok binary "$VOX (CPU + CUDA backends)"
fi

echo
args=(--check --backend cuda)
if [ -n "$dir" ]; then args+=(-d "$dir"); else echo "(no model: pass DIR to check its memory need and run a smoke transcription)"; fi
[ -n "$audio" ] && args+=(-i "$audio")
"$VOX" "${args[@]}"
rc=$?
[ $rc -eq 0 ] || fails+=("voxtral --check")
echo
if [ ${#fails[@]} -eq 0 ]; then
    echo "validate_cuda.sh: PASS: the CUDA backend works here"
    exit 0
fi
echo "validate_cuda.sh: FAIL ($(IFS=,; echo "${fails[*]}" | sed 's/,/, /g')); see the fix lines above"
exit 1
