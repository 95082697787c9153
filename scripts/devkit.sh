#!/usr/bin/env bash
# devkit.sh - prepare .devkit/ (ignored by git) for a GPU machine that has nvcc and
# the CUDA libraries but not our Debian -dev packages and no network: runs the
# shared device kit when present, then adds what it lacks (libsoxr, cJSON, libgomp).
# On the GPU machine: `source .devkit/env.sh && make cuda ...`.
set -euo pipefail
cd "$(dirname "$0")/.."
kit=../shared/tools/device-kit.sh
[ -x "$kit" ] || [ -f "$kit" ] && bash "$kit"
mkdir -p .devkit
grep -qx '/.devkit/' .git/info/exclude 2>/dev/null || echo '/.devkit/' >> .git/info/exclude
cd .devkit
for p in libsoxr0 libsoxr-dev libcjson1 libcjson-dev libgomp1; do
    ls ${p}_*.deb >/dev/null 2>&1 || apt-get download -qq "$p"
done
echo "devkit: $(ls *.deb | wc -l) packages in .devkit/"
