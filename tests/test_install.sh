#!/usr/bin/env bash
# test_install.sh - `make install PREFIX=...` installs the CLI, libvoxtral.a, voxtral.h
# and voxtral.pc; a small C program built with `pkg-config --cflags --libs voxtral`
# links the library and transcribes with it.
set -u
cd "$(dirname "$0")/.."
. tests/testlib.sh

if make install PREFIX="$tmp/prefix" >"$tmp/install.log" 2>&1 \
   && [ -x "$tmp/prefix/bin/voxtral" ] && [ -f "$tmp/prefix/lib/libvoxtral.a" ] \
   && [ -f "$tmp/prefix/include/voxtral.h" ] && [ -f "$tmp/prefix/lib/pkgconfig/voxtral.pc" ]; then
    ok "make install PREFIX=...: binary, library, header, pkg-config file"
else
    nok "make install" "$(tail -5 "$tmp/install.log")"
fi
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
make uninstall PREFIX="$tmp/prefix" >/dev/null 2>&1 && [ ! -e "$tmp/prefix/bin/voxtral" ] \
    && ok "make uninstall removes them" || nok "make uninstall"
