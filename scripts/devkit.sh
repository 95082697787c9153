#!/usr/bin/env bash
# devkit.sh - prepare .devkit/ (ignored by git) for a GPU machine that has nvcc and
# the CUDA libraries but not our Debian -dev packages and no network: runs the
# shared device kit when present, then adds what it lacks (libsoxr, cJSON, libgomp,
# and libespeak-ng with its data for the small model's speech corpus).
# On the GPU machine: `source .devkit/env.sh && make cuda ...`.
set -euo pipefail
cd "$(dirname "$0")/.."
kit=../shared/tools/device-kit.sh
[ -x "$kit" ] || [ -f "$kit" ] && bash "$kit"
mkdir -p .devkit
grep -qx '/.devkit/' .git/info/exclude 2>/dev/null || echo '/.devkit/' >> .git/info/exclude
cd .devkit
# libwebsockets (voxtral serve) with what its headers and .pc need, and Python's
# websockets for scripts/bench_server.py
for p in libsoxr0 libsoxr-dev libcjson1 libcjson-dev libgomp1 libespeak-ng1 espeak-ng-data libsonic0 \
    libwebsockets17 libwebsockets-dev libcap2 libcap-dev libssl-dev python3-websockets; do
    ls ${p}_*.deb >/dev/null 2>&1 || apt-get download -qq "$p"
done
# libespeak-ng links libpcaudio (sound output, which needs PulseAudio, absent there);
# the corpus synthesises to memory and never calls it: a stand-in library takes its place
rm -f libpcaudio0_*.deb
mkdir -p stub
printf '%s\n' '/* stand-in for libpcaudio: no sound output (espeak-ng synthesises to memory) */' \
    'void *create_audio_device_object(const char *a, const char *b, const char *c) { return 0; }' \
    'int audio_object_open(void *o, int f, unsigned r, unsigned char c) { return -1; }' \
    'void audio_object_close(void *o) {}' 'void audio_object_destroy(void *o) {}' \
    'int audio_object_write(void *o, const void *d, unsigned long n) { return -1; }' \
    'int audio_object_drain(void *o) { return 0; }' 'int audio_object_flush(void *o) { return 0; }' \
    'const char *audio_object_strerror(void *o, int e) { return "no sound output"; }' >stub/pcaudio.c
cc -shared -fPIC -Wl,-soname,libpcaudio.so.0 -o stub/libpcaudio.so.0 stub/pcaudio.c
grep -q ESPEAK_DATA_PATH env.sh 2>/dev/null || cat >>env.sh <<'ENV'
export ESPEAK_DATA_PATH=$_lib  # scripts/make_speech_corpus.py: $_lib/espeak-ng-data
export LD_LIBRARY_PATH=$PWD/.devkit/stub:$LD_LIBRARY_PATH
ENV
grep -q PYTHONPATH env.sh 2>/dev/null || cat >>env.sh <<'ENV'
export PYTHONPATH=$_kit/usr/lib/python3/dist-packages${PYTHONPATH:+:$PYTHONPATH}  # websockets
ENV
echo "devkit: $(ls *.deb | wc -l) packages in .devkit/ ($(du -sh . | cut -f1))"
