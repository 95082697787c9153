#!/usr/bin/env bash
# test_scripts.sh - the model-writing scripts never overwrite a file in place (a
# running voxtral has consolidated.safetensors mmap'd: overwriting it kills the run
# with SIGBUS; a rename leaves it its old file): make_random_model.py and
# download_model.sh (with a stand-in curl: no network here) write a temporary name,
# then rename. Also: gpu_paths.sh quotes CUDA_ARCH (a list like "80 90").
set -u
cd "$(dirname "$0")/.." || exit 1
. tests/testlib.sh
PY=${PYTHON:-/usr/bin/python3}

# make_random_model.py: every file replaced by a new inode, the old one intact
tiny_model 1
ino() { stat -c %i "$1"; }
declare -A before
for f in params.json tekken.json consolidated.safetensors; do before[$f]=$(ino "$M/$f"); done
exec 9<"$M/consolidated.safetensors"   # as a running voxtral holds it
sum_old=$(md5sum <&9 | cut -d' ' -f1)
$PY scripts/make_random_model.py --preset tiny --seed 2 --out "$M" >/dev/null 2>&1
for f in params.json tekken.json consolidated.safetensors; do
    [ "$(ino "$M/$f")" != "${before[$f]}" ]
    check "make_random_model.py: $f replaced by a rename, not overwritten" $?
done
sum_held=$(md5sum </proc/$$/fd/9 | cut -d' ' -f1)
sum_new=$(md5sum <"$M/consolidated.safetensors" | cut -d' ' -f1)
[ "$sum_held" = "$sum_old" ] && [ "$sum_new" != "$sum_old" ]
check "make_random_model.py: a file held open keeps its old bytes" $?
exec 9<&-
ls "$M" | grep -q '\.tmp$'; [ $? -ne 0 ]
check "make_random_model.py: no temporary file left" $?

# download_model.sh with a curl that writes its -o target
mkdir -p "$tmp/bin"
cat >"$tmp/bin/curl" <<'SH'
#!/usr/bin/env bash
out=
while [ $# -gt 0 ]; do [ "$1" = -o ] && out=$2; shift; done
echo "$out" >>"$CURL_LOG"
echo "bytes of $(basename "$out")" >"$out"
SH
chmod +x "$tmp/bin/curl"
D=$tmp/dl
CURL_LOG=$tmp/curl.log PATH="$tmp/bin:$PATH" bash scripts/download_model.sh "$D" >"$tmp/dl.out" 2>&1
rc=$?
ok_all=0
for f in params.json tekken.json consolidated.safetensors; do
    [ -s "$D/$f" ] || ok_all=1
    grep -qx "$D/$f" "$tmp/curl.log" && ok_all=1
done
[ $rc -eq 0 ] && [ $ok_all -eq 0 ] && ! ls -A "$D" | grep -q part
check "download_model.sh: downloads to a temporary name, renames into place" $? \
    "rc=$rc, curl wrote: $(tr '\n' ' ' <"$tmp/curl.log") $(cat "$tmp/dl.out")"

# gpu_paths.sh: no unquoted ${CUDA_ARCH...} (a list of SMs would split into words)
! grep -n 'CUDA_ARCH=\${CUDA_ARCH' scripts/*.sh
check "scripts quote \${CUDA_ARCH:-...}" $?
