# testlib.sh - sourced by the shell tests: TAP-like reporting, a scratch dir,
# and a tiny random model (the C tests' counterpart is testutil.h).
ok() { echo "ok - $1"; }
nok() { echo "not ok - $1${2:+: $2}"; }
check() { # check NAME CONDITION-EXIT-CODE [DETAIL]
    if [ "$2" -eq 0 ]; then ok "$1"; else nok "$1" "${3:-}"; fi
}
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
# tiny_model SEED: writes a tiny random model to $tmp/model and sets M
tiny_model() {
    M=$tmp/model
    ${PY:-/usr/bin/python3} scripts/make_random_model.py --preset tiny --seed "$1" --out "$M" >/dev/null 2>&1
    check "make a tiny random model" $?
}
