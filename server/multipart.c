/* server/multipart.c - a streaming multipart/form-data parser (RFC 7578).
 *
 * Input arrives in any chunking (network reads); part bytes are handed out as
 * they are known not to be the start of the next delimiter, so a 25 MB upload
 * goes to its file without ever being held whole. Our own parser rather than
 * lws_spa: it needs no live connection, so a libFuzzer harness can drive it
 * (tests/fuzz/fuzz_server_multipart.c), and it bounds every buffer it keeps.
 *
 * The stream is a virtual CRLF followed by the body, so the first "--boundary"
 * is found by the same search as the later "\r\n--boundary" delimiters.
 */
#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "server.h"

enum { S_PREAMBLE, S_AFTER_DELIM, S_HEADERS, S_BODY, S_DONE, S_FAILED };
enum { MAX_HEADER_LINE = 4096, MAX_HEADER_LINES = 16 };

struct mp_parser {
    char delim[80]; /* "\r\n--" + boundary */
    size_t dlen;
    int state, header_lines;
    char *buf; /* unconsumed bytes [off, len) */
    size_t off, len, cap;
    char name[128], filename[256];
    int has_name;
    mp_callbacks cb;
    char err[160];
};

static int fail(mp_parser *p, const char *msg) {
    snprintf(p->err, sizeof p->err, "%s", msg);
    p->state = S_FAILED;
    return -1;
}

/* the value of parameter `key` in a header value ("form-data; name=\"x\""), unquoted */
static int get_param(const char *v, const char *key, char *out, size_t outsz) {
    size_t klen = strlen(key);
    const char *q = v;
    while (*q) {
        while (*q == ';' || *q == ' ' || *q == '\t') q++;
        const char *tok = q;
        int quoted = 0;
        while (*q && (quoted || *q != ';')) {
            if (*q == '"') quoted = !quoted;
            else if (*q == '\\' && quoted && q[1]) q++;
            q++;
        }
        if ((size_t)(q - tok) > klen && !strncasecmp(tok, key, klen) && tok[klen] == '=') {
            const char *a = tok + klen + 1, *b = q;
            size_t n = 0;
            if (*a == '"') {
                a++;
                for (; a < b && *a != '"'; a++) {
                    if (*a == '\\' && a + 1 < b) a++;
                    if (n + 1 < outsz) out[n++] = *a;
                }
            } else {
                while (b > a && (b[-1] == ' ' || b[-1] == '\t')) b--;
                for (; a < b; a++)
                    if (n + 1 < outsz) out[n++] = *a;
            }
            out[n] = 0;
            return 1;
        }
    }
    return 0;
}

mp_parser *mp_new(const char *content_type, const mp_callbacks *cb) {
    if (!content_type) return NULL;
    const char *ct = content_type;
    while (*ct == ' ') ct++;
    if (strncasecmp(ct, "multipart/form-data", 19) != 0) return NULL;
    char b[80];
    if (!get_param(ct + 19, "boundary", b, sizeof b)) return NULL;
    size_t bl = strlen(b);
    if (bl < 1 || bl > 70) return NULL;
    mp_parser *p = calloc(1, sizeof *p);
    if (!p) return NULL;
    p->dlen = (size_t)snprintf(p->delim, sizeof p->delim, "\r\n--%s", b);
    p->cb = *cb;
    p->cap = 8192;
    p->buf = malloc(p->cap);
    if (!p->buf) {
        free(p);
        return NULL;
    }
    memcpy(p->buf, "\r\n", 2);
    p->len = 2;
    return p;
}

void mp_free(mp_parser *p) {
    if (!p) return;
    free(p->buf);
    free(p);
}

const char *mp_error(const mp_parser *p) { return p->err[0] ? p->err : "malformed multipart body"; }

static const char *find(const char *h, size_t hn, const char *n, size_t nn) {
    if (nn == 0 || hn < nn) return NULL;
    return memmem(h, hn, n, nn);
}

static int header_line(mp_parser *p, char *line) {
    if (strncasecmp(line, "content-disposition:", 20) != 0) return 0;
    const char *v = line + 20;
    while (*v == ' ' || *v == '\t') v++;
    if (strncasecmp(v, "form-data", 9) != 0) return fail(p, "multipart: a part that is not form-data");
    if (get_param(v + 9, "name", p->name, sizeof p->name)) p->has_name = 1;
    get_param(v + 9, "filename", p->filename, sizeof p->filename);
    return 0;
}

/* consumes what it can of [off, len); returns 0 (needs more), 1 done, -1 failed */
static int run(mp_parser *p) {
    for (;;) {
        const char *d = p->buf + p->off;
        size_t n = p->len - p->off;
        switch (p->state) {
        case S_PREAMBLE:
        case S_BODY: {
            const char *hit = find(d, n, p->delim, p->dlen);
            size_t emit = hit ? (size_t)(hit - d) : (n >= p->dlen ? n - (p->dlen - 1) : 0);
            if (p->state == S_BODY && emit && p->cb.data(p->cb.user, d, emit) != 0)
                return fail(p, "multipart: part rejected");
            p->off += emit;
            if (!hit) return 0;
            p->off += p->dlen;
            p->state = S_AFTER_DELIM;
            break;
        }
        case S_AFTER_DELIM: {
            size_t i = 0;
            while (i < n && i <= 256 && (d[i] == ' ' || d[i] == '\t')) i++; /* transport padding */
            if (i > 256) return fail(p, "multipart: junk after a boundary"); /* whatever the chunking */
            if (i + 2 > n) return 0;
            if (d[i] == '-' && d[i + 1] == '-') {
                p->off += i + 2;
                p->state = S_DONE;
                return 1;
            }
            if (d[i] != '\r' || d[i + 1] != '\n') return fail(p, "multipart: junk after a boundary");
            p->off += i + 2;
            p->state = S_HEADERS;
            p->has_name = 0;
            p->name[0] = p->filename[0] = 0;
            p->header_lines = 0;
            break;
        }
        case S_HEADERS: {
            const char *eol = find(d, n, "\r\n", 2);
            if (!eol) {
                if (n > MAX_HEADER_LINE) return fail(p, "multipart: part header too long");
                return 0;
            }
            size_t ll = (size_t)(eol - d);
            if (ll > MAX_HEADER_LINE) return fail(p, "multipart: part header too long");
            p->off += ll + 2;
            if (ll == 0) {
                if (!p->has_name) return fail(p, "multipart: a part without a name");
                if (p->cb.part(p->cb.user, p->name, p->filename[0] ? p->filename : NULL) != 0)
                    return fail(p, "multipart: part rejected");
                p->state = S_BODY;
                break;
            }
            if (++p->header_lines > MAX_HEADER_LINES) return fail(p, "multipart: too many part headers");
            char line[MAX_HEADER_LINE + 1];
            memcpy(line, d, ll);
            line[ll] = 0;
            if (memchr(line, 0, ll)) return fail(p, "multipart: NUL in a part header");
            if (header_line(p, line) != 0) return -1;
            break;
        }
        case S_DONE:
            p->off = p->len; /* the epilogue is ignored */
            return 1;
        default:
            return -1;
        }
    }
}

int mp_feed(mp_parser *p, const char *data, size_t n) {
    if (p->state == S_FAILED) return -1;
    if (p->state == S_DONE) return 1;
    while (n > 0) {
        /* compact, then take as much as fits (the buffer never grows past its cap:
         * the largest thing it must hold whole is a header line or a delimiter) */
        if (p->off) {
            memmove(p->buf, p->buf + p->off, p->len - p->off);
            p->len -= p->off;
            p->off = 0;
        }
        size_t room = p->cap - p->len;
        if (room == 0) return fail(p, "multipart: internal buffer full");
        size_t take = n < room ? n : room;
        memcpy(p->buf + p->len, data, take);
        p->len += take;
        data += take;
        n -= take;
        int rc = run(p);
        if (rc != 0) return rc;
    }
    return 0;
}

/* ---- chunked transfer coding (RFC 9112 7.1) ----
 * libwebsockets 4.1 passes a chunked request body through with its framing and
 * never reports its end: this strips the framing and finds the last chunk. */
enum { C_SIZE, C_EXT, C_SIZE_LF, C_DATA, C_DATA_CR, C_DATA_LF, C_TRAILER, C_TRAILER_LF, C_DONE, C_FAILED };

int chunked_feed(chunked_dec *d, const char *in, size_t n, int (*out)(void *, const char *, size_t), void *user) {
    for (size_t i = 0; i < n;) {
        unsigned char c = (unsigned char)in[i];
        switch (d->state) {
        case C_SIZE: {
            int v = c >= '0' && c <= '9' ? c - '0' : c >= 'a' && c <= 'f' ? c - 'a' + 10 : c >= 'A' && c <= 'F' ? c - 'A' + 10 : -1;
            if (v >= 0) {
                if (d->size > ((uint64_t)1 << 40) || ++d->digits > 12) return d->state = C_FAILED, -1;
                d->size = d->size * 16 + (uint64_t)v;
            } else if (!d->digits) {
                return d->state = C_FAILED, -1;
            } else if (c == ';' || c == ' ' || c == '\t') {
                d->state = C_EXT;
            } else if (c == '\r') {
                d->state = C_SIZE_LF;
            } else {
                return d->state = C_FAILED, -1;
            }
            i++;
            break;
        }
        case C_EXT: /* chunk extensions are ignored */
            if (c == '\r') d->state = C_SIZE_LF;
            else if (++d->line > 4096) return d->state = C_FAILED, -1;
            i++;
            break;
        case C_SIZE_LF:
            if (c != '\n') return d->state = C_FAILED, -1;
            i++;
            d->line = 0;
            d->state = d->size ? C_DATA : C_TRAILER;
            break;
        case C_DATA: {
            size_t take = (uint64_t)(n - i) < d->size ? n - i : (size_t)d->size;
            if (out(user, in + i, take) != 0) return d->state = C_FAILED, -1;
            i += take;
            d->size -= take;
            if (!d->size) d->state = C_DATA_CR;
            break;
        }
        case C_DATA_CR:
            if (c != '\r') return d->state = C_FAILED, -1;
            d->state = C_DATA_LF;
            i++;
            break;
        case C_DATA_LF:
            if (c != '\n') return d->state = C_FAILED, -1;
            d->state = C_SIZE;
            d->digits = 0;
            d->size = 0;
            i++;
            break;
        case C_TRAILER: /* trailer fields until an empty line */
            if (c == '\r') d->state = C_TRAILER_LF;
            else if (++d->line > 8192) return d->state = C_FAILED, -1;
            i++;
            break;
        case C_TRAILER_LF:
            if (c != '\n') return d->state = C_FAILED, -1;
            i++;
            if (d->line == 0) return d->state = C_DONE, 1;
            d->line = 0;
            d->state = C_TRAILER;
            break;
        case C_DONE:
            return 1;
        default:
            return -1;
        }
    }
    return d->state == C_DONE ? 1 : 0;
}
