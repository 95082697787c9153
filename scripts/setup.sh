#!/usr/bin/env bash
# setup.sh - installs the Debian/Ubuntu packages voxtral needs and builds it.
# Usage: scripts/setup.sh            (as root, or with sudo available)
# The CUDA backend is built too when nvcc is found (CUDA_HOME, default /usr/local/cuda).
set -euo pipefail
cd "$(dirname "$0")/.."
SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO=sudo
PKGS=(build-essential pkg-config libopenblas-dev libfftw3-dev libsndfile1-dev libsoxr-dev
      libcjson-dev portaudio19-dev python3-numpy espeak-ng sox ffmpeg
      pulseaudio pulseaudio-utils libasound2-plugins
      libwebsockets-dev python3-websockets curl openssl
      clang libclang-rt-dev libomp-dev)  # clang: the libFuzzer targets (scripts/fuzz.sh)
missing=()
for p in "${PKGS[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
    echo "setup: installing ${missing[*]}"
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
make -j"$(nproc)"
echo "setup: built ./voxtral ($(./voxtral --help >/dev/null && echo ok))"
