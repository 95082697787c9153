#!/usr/bin/env bash
# test_install.sh - `make install PREFIX=...` installs the CLI, libvoxtral.a, the shared
# libvoxtral.so (with its soname), voxtral.h and voxtral.pc; the archive defines every
# project symbol it uses; a small C program using only voxtral.h links against the
# shared library (pkg-config) and against the archive, and transcribes with both.
set -u
cd "$(dirname "$0")/.."
. tests/testlib.sh

if make install PREFIX="$tmp/prefix" >"$tmp/install.log" 2>&1 \
   && [ -x "$tmp/prefix/bin/voxtral" ] && [ -f "$tmp/prefix/lib/libvoxtral.a" ] \
   && [ -f "$tmp/prefix/include/voxtral.h" ] && [ -f "$tmp/prefix/lib/pkgconfig/voxtral.pc" ] \
   && [ -f "$tmp/prefix/lib/libvoxtral.so.0" ] && [ -L "$tmp/prefix/lib/libvoxtral.so" ]; then
    ok "make install PREFIX=...: binary, static and shared library, header, pkg-config file"
else
    nok "make install" "$(tail -5 "$tmp/install.log")"
fi
soname=$(objdump -p "$tmp/prefix/lib/libvoxtral.so.0" 2>/dev/null | awk '$1 == "SONAME" {print $2}')
[ "$soname" = libvoxtral.so.0 ] && ok "libvoxtral.so carries the soname libvoxtral.so.0" \
    || nok "soname" "got '$soname'"
# every project symbol (vox_*, cli_*) the archive uses, it defines: the installed library links alone
a="$tmp/prefix/lib/libvoxtral.a"
undef=$(comm -23 <(nm -u "$a" 2>/dev/null | awk '$2 ~ /^(vox|cli)_/ {print $2}' | sort -u) \
                 <(nm --defined-only "$a" 2>/dev/null | awk '$3 ~ /^(vox|cli)_/ {print $3}' | sort -u))
[ -z "$undef" ] && nm "$a" >/dev/null 2>&1 && ok "nm -u libvoxtral.a: no project symbol used but not defined" \
    || nok "libvoxtral.a is not self-contained" "$undef"
nm --defined-only "$a" 2>/dev/null | awk '$3 ~ /^cli_/' | grep -q . \
    && nok "libvoxtral.a holds CLI code (cli_*)" || ok "libvoxtral.a holds no CLI code"
grep -q voxtral_internal.h cli/*.c cli/*.h && nok "cli/ includes the engine's internal header" \
    || ok "cli/ uses only the public header"

"$tmp/prefix/bin/voxtral" --help >/dev/null 2>&1 && ok "installed voxtral runs" || nok "installed voxtral runs"

cat >"$tmp/app.c" <<'C'
#include <stdio.h>
#include <stdlib.h>
#include <voxtral.h>
static int n_ids = 0;
static void on_token(void *u, const vox_token *t) { (void)u; (void)t; n_ids++; }
int main(int argc, char **argv) {
    vox_options o;
    vox_options_default(&o);
    o.backend = "cpu";
    o.verbose = 0;
    vox_ctx *ctx = vox_open(argv[1], &o);
    if (!ctx) { fprintf(stderr, "%s\n", vox_last_error()); return 1; }
    vox_stream *s = vox_stream_new(ctx, on_token, NULL);
    float *x = calloc(16000, sizeof(float));
    for (int i = 0; i < 16000; i++) x[i] = (i % 40 < 20) ? 0.1f : -0.1f;
    int rc = !s || vox_stream_feed(s, x, 16000) || vox_stream_finish(s);
    printf("%d ids\n", n_ids);
    vox_stream_free(s);
    vox_close(ctx);
    free(x);
    return rc || n_ids == 0;
}
C
flags=$(PKG_CONFIG_PATH="$tmp/prefix/lib/pkgconfig" pkg-config --cflags --libs voxtral 2>&1)
if cc -std=c11 -o "$tmp/app" "$tmp/app.c" $flags >"$tmp/cc.log" 2>&1; then
    ok "a C program links libvoxtral via pkg-config"
    out=$("$tmp/app" tests/fixtures/tiny_tone/model 2>&1)
    [ $? -eq 0 ] && ok "it transcribes with the installed library ($out)" || nok "installed library run" "$out"
else
    nok "a C program links libvoxtral via pkg-config" "$(head -5 "$tmp/cc.log")"
fi
# the same program against the archive, by its path (pkg-config's private libraries)
sflags=$(PKG_CONFIG_PATH="$tmp/prefix/lib/pkgconfig" pkg-config --static --libs voxtral 2>&1 | sed 's/-lvoxtral//')
if cc -std=c11 -I"$tmp/prefix/include" -o "$tmp/app_static" "$tmp/app.c" "$a" $sflags >"$tmp/cc2.log" 2>&1; then
    ok "the program links the static archive"
    out=$("$tmp/app_static" tests/fixtures/tiny_tone/model 2>&1)
    [ $? -eq 0 ] && ok "it transcribes with the static archive ($out)" || nok "static archive run" "$out"
else
    nok "the program links the static archive" "$(head -5 "$tmp/cc2.log")"
fi
ldd "$tmp/app" 2>/dev/null | grep -q "libvoxtral.so.0 => $tmp/prefix/lib" \
    && ok "the pkg-config build uses the installed libvoxtral.so.0" || nok "shared link" "$(ldd "$tmp/app" 2>&1 | grep voxtral)"
make uninstall PREFIX="$tmp/prefix" >/dev/null 2>&1 && [ ! -e "$tmp/prefix/bin/voxtral" ] \
    && ok "make uninstall removes them" || nok "make uninstall"
