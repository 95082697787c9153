/* server/util.c - byte buffers, JSON string literals, session objects
 * (UTF-8 and text formats are the library's: voxtral_text.h). */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "server.h"
#include "voxtral_text.h"

int sbuf_add(sbuf *b, const void *p, size_t n) {
    if (b->len + n + 1 > b->cap) {
        size_t cap = b->cap ? b->cap : 64;
        while (cap < b->len + n + 1) cap *= 2;
        char *d = realloc(b->data, cap);
        if (!d) return -1;
        b->data = d;
        b->cap = cap;
    }
    if (n) memcpy(b->data + b->len, p, n);
    b->len += n;
    b->data[b->len] = 0;
    return 0;
}

int sbuf_printf(sbuf *b, const char *fmt, ...) {
    char tmp[512];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(tmp, sizeof tmp, fmt, ap);
    va_end(ap);
    if (n < 0) return -1;
    if ((size_t)n < sizeof tmp) return sbuf_add(b, tmp, (size_t)n);
    char *big = malloc((size_t)n + 1);
    if (!big) return -1;
    va_start(ap, fmt);
    vsnprintf(big, (size_t)n + 1, fmt, ap);
    va_end(ap);
    int rc = sbuf_add(b, big, (size_t)n);
    free(big);
    return rc;
}

/* the library's JSON string rule (vox_json_quote: escapes, and any bytes made valid
 * UTF-8), appended to a server buffer */
int sbuf_json_str(sbuf *b, const char *s, size_t n) {
    vox_buf q = {0};
    int rc = vox_json_quote(&q, s, n) || sbuf_add(b, q.data, q.len) ? -1 : 0;
    vox_buf_free(&q);
    return rc;
}

void sbuf_free(sbuf *b) {
    free(b->data);
    b->data = NULL;
    b->len = b->cap = 0;
}

double srv_now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec / 1e9;
}

srv_session *srv_session_new(int kind) {
    static atomic_uint seq;
    srv_session *s = calloc(1, sizeof *s);
    if (!s) return NULL;
    pthread_mutex_init(&s->mu, NULL);
    atomic_init(&s->refs, 1);
    atomic_init(&s->want_write, 0);
    s->kind = kind;
    s->t_open = srv_now();
    /* unique across runs and replicas: wall-clock ns and the pid, mixed (splitmix64);
     * rand() unseeded repeats, and monotonic seconds * 1e6 overflowed unsigned (UB) */
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    uint64_t z = ((uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec) ^ ((uint64_t)getpid() << 40);
    z += 0x9e3779b97f4a7c15u;
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9u;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebu;
    z ^= z >> 31;
    snprintf(s->id, sizeof s->id, "sess-%08x%04x", (unsigned)z, atomic_fetch_add(&seq, 1) & 0xffff);
    return s;
}

void srv_event_free(srv_event *e) {
    if (!e) return;
    sbuf_free(&e->text);
    sbuf_free(&e->extra);
    free(e);
}

void srv_session_unref(srv_session *s) {
    if (!s || atomic_fetch_sub(&s->refs, 1) != 1) return;
    for (srv_event *e = s->ev_head, *n; e; e = n) {
        n = e->next;
        srv_event_free(e);
    }
    if (s->file_path) {
        remove(s->file_path);
        free(s->file_path);
    }
    free(s->in);
    pthread_mutex_destroy(&s->mu);
    free(s);
}

srv_event *srv_session_pop(srv_session *s) {
    pthread_mutex_lock(&s->mu);
    srv_event *e = s->ev_head;
    if (e) {
        s->ev_head = e->next;
        if (!s->ev_head) s->ev_tail = NULL;
        s->ev_bytes -= e->text.len + e->extra.len;
        e->next = NULL;
    }
    pthread_mutex_unlock(&s->mu);
    return e;
}
