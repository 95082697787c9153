/* fuzz_server_multipart.c - libFuzzer harness for the request-body parsers
 * (server/multipart.c): the multipart/form-data parser and the chunked transfer
 * decoder. Input: a Content-Type line, "\n", then the body. Differential check,
 * besides ASan/UBSan: the body fed whole and fed in pieces (sizes drawn from the
 * input) gives the same parts, the same bytes and the same verdict; the same for
 * the chunked decoder run over the body. Build and run: scripts/fuzz.sh. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "server/server.h"


typedef struct {
    sbuf log; /* "P name|filename\n" per part, then the part's bytes */
} rec;

static int on_part(void *u, const char *name, const char *filename) {
    rec *r = u;
    if (strlen(name) >= 128 || (filename && strlen(filename) >= 256)) abort();
    sbuf_printf(&r->log, "\nP %s|%s\n", name, filename ? filename : "(none)");
    return 0;
}

static int on_data(void *u, const char *p, size_t n) {
    rec *r = u;
    if (n == 0) abort(); /* no empty callbacks */
    return sbuf_add(&r->log, p, n);
}

static int out_bytes(void *u, const char *p, size_t n) { return sbuf_add(u, p, n); }

/* feeds body in pieces; returns the final verdict (max of the return codes seen) */
static int run_mp(const char *ct, const uint8_t *body, size_t n, const uint8_t *sizes, size_t ns, rec *r) {
    mp_callbacks cb = {on_part, on_data, r};
    mp_parser *p = mp_new(ct, &cb);
    if (!p) return -2;
    int rc = 0;
    size_t off = 0, k = 0;
    while (off < n && rc == 0) {
        size_t take = ns ? 1 + sizes[k++ % ns] % 97 : n - off;
        if (take > n - off) take = n - off;
        rc = mp_feed(p, (const char *)body + off, take);
        off += take;
    }
    if (rc == 0) rc = mp_feed(p, "", 0);
    mp_free(p);
    return rc;
}

static int run_chunked(const uint8_t *body, size_t n, const uint8_t *sizes, size_t ns, sbuf *out) {
    chunked_dec d = {0};
    int rc = 0;
    size_t off = 0, k = 0;
    while (off < n && rc == 0) {
        size_t take = ns ? 1 + sizes[k++ % ns] % 13 : n - off;
        if (take > n - off) take = n - off;
        rc = chunked_feed(&d, (const char *)body + off, take, out_bytes, out);
        off += take;
    }
    return rc;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    const uint8_t *nl = memchr(data, '\n', size < 300 ? size : 300);
    if (!nl) return 0;
    char ct[301];
    memcpy(ct, data, (size_t)(nl - data));
    ct[nl - data] = 0;
    const uint8_t *body = nl + 1;
    size_t n = size - (size_t)(body - data);
    rec whole = {{0}}, parts = {{0}};
    int a = run_mp(ct, body, n, NULL, 0, &whole);
    int b = run_mp(ct, body, n, data, (size_t)(nl - data), &parts);
    /* on malformed input the bytes handed out before the error may differ with the
     * chunking; on success everything must agree */
    if (a != b) abort();
    if (a == 1 && (whole.log.len != parts.log.len || (whole.log.len && memcmp(whole.log.data, parts.log.data, whole.log.len))))
        abort();
    sbuf_free(&whole.log);
    sbuf_free(&parts.log);
    sbuf c1 = {0}, c2 = {0};
    int x = run_chunked(body, n, NULL, 0, &c1), y = run_chunked(body, n, data, (size_t)(nl - data), &c2);
    if (x != y) abort();
    if (x == 1 && (c1.len != c2.len || (c1.len && memcmp(c1.data, c2.data, c1.len)))) abort();
    sbuf_free(&c1);
    sbuf_free(&c2);
    return 0;
}
