/* test_errors.c - the error channel (voxtral_error.h): a stream keeps the error that
 * failed it (later calls say "stream failed earlier: <that message>", whatever the
 * thread's last error is by then, and any thread can read it); a CPU op's failure
 * (out of memory for its scratch) is reported by the next sync; two backends' failure
 * states are independent; vox_error may format its own buffer into itself.
 *
 * Run from the repository root (uses tests/fixtures/tiny_tone/model). */
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "voxtral_internal.h"
#include "tests/testutil.h"

static const char *MODEL = "tests/fixtures/tiny_tone/model";
static const char *INJECTED = "injected: the device caught fire";

static void test_self_format(void) {
    vox_error("first: %s", "cause");
    vox_error("again: %s", vox_last_error());
    tu_check(!strcmp(vox_last_error(), "again: first: cause"), "vox_error formats its own message into itself",
             "\"%s\"", vox_last_error());
    vox_err e = {0};
    vox_error("the cause");
    vox_err_keep(&e);
    vox_error("something later");
    vox_err_keep(&e); /* the first one sticks */
    vox_err_raise(&e, "failed earlier: ");
    tu_check(e.set && !strcmp(e.msg, "the cause") && !strcmp(vox_last_error(), "failed earlier: the cause"),
             "vox_err keeps the first error", "\"%s\" / \"%s\"", e.msg, vox_last_error());
}

/* An attention op whose scratch cannot be allocated (about 1 TB): the op records the
 * error in its backend; nothing else may touch q/k/v. */
static void failing_attention(vox_backend *be) {
    float q[8 * 64] = {0}, kc[64] = {0}, vc[64] = {0}, out[8 * 64];
    int32_t pos[8] = {0, 1, 2, 3, 4, 5, 6, 2000000000};
    be->attention(be, out, q, kc, vc, pos, NULL, 8, 1, 1, 64, 1, 2000000000);
}

static void test_cpu_backend(void) {
    vox_backend *a = vox_cpu_backend_new(1), *b = vox_cpu_backend_new(1);
    if (!a || !b) {
        tu_check(0, "cpu backends", "%s", vox_last_error());
        return;
    }
    vox_error("unrelated");
    failing_attention(a);
    vox_backend *c = vox_cpu_backend_new(1); /* a new backend must not wipe a's failure */
    int b_rc = b->sync(b), c_rc = c ? c->sync(c) : -1;
    vox_error("unrelated");
    int rc = a->sync(a);
    const char *msg = vox_last_error();
    tu_check(rc == -1 && strstr(msg, "cpu: out of memory for attention scratch"),
             "cpu: an op's out-of-memory is reported by sync", "rc %d \"%s\"", rc, msg);
    tu_check(b_rc == 0 && c_rc == 0, "cpu: another backend's sync is unaffected (before and after a new one)",
             "b %d c %d", b_rc, c_rc);
    rc = a->sync(a);
    tu_check(rc == 0, "cpu: the error is reported once, the backend stays usable", "rc %d", rc);
    failing_attention(a);
    rc = a->wait_fence(a, 0);
    tu_check(rc == -1 && strstr(vox_last_error(), "out of memory"), "cpu: wait_fence reports it too", "rc %d", rc);
    a->destroy(a);
    b->destroy(b);
    if (c) c->destroy(c);
}

typedef struct {
    vox_stream *s;
    int rc;
    char last[VOX_ERR_LEN]; /* the worker thread's own last error */
} feed_job;

static void *feed_worker(void *arg) {
    feed_job *j = arg;
    static float silence[16000];
    j->rc = vox_stream_feed(j->s, silence, 16000);
    snprintf(j->last, sizeof j->last, "%s", vox_last_error());
    return NULL;
}

static void test_stream(void) {
    vox_options o;
    vox_options_default(&o);
    o.backend = "cpu";
    o.verbose = 0;
    o.threads = 1;
    vox_ctx *ctx = vox_open(MODEL, &o);
    if (!ctx) {
        tu_check(0, "open the tiny model", "%s (run from the repository root)", vox_last_error());
        return;
    }
    vox_stream *s = vox_stream_new(ctx, NULL, NULL);
    tu_check(s && vox_stream_error(s) == NULL && vox_ctx_error(ctx) == NULL, "a new stream has no error", NULL);
    if (!s) {
        vox_close(ctx);
        return;
    }
    /* the backend fails under the stream; the stream is fed on another thread */
    vox_backend *be = vox_ctx_backend(ctx);
    vox_err_set(&be->err, "%s", INJECTED);
    tu_check(vox_ctx_error(ctx) && !strcmp(vox_ctx_error(ctx), INJECTED), "vox_ctx_error: the backend's failure",
             "%s", vox_ctx_error(ctx) ? vox_ctx_error(ctx) : "NULL");
    vox_error("main thread's own error");
    feed_job j = {s, 0, ""};
    pthread_t t;
    pthread_create(&t, NULL, feed_worker, &j);
    pthread_join(t, NULL);
    tu_check(j.rc == -1 && !strcmp(j.last, INJECTED), "feed fails on the worker with the backend's message",
             "rc %d \"%s\"", j.rc, j.last);
    const char *se = vox_stream_error(s);
    tu_check(se && !strcmp(se, INJECTED), "vox_stream_error: readable from another thread", "\"%s\"",
             se ? se : "NULL");
    tu_check(!strcmp(vox_last_error(), "main thread's own error"), "the worker's failure leaves this thread's error",
             "\"%s\"", vox_last_error());

    /* later calls: the original message, not the thread's last error formatted into itself */
    char want[2 * VOX_ERR_LEN];
    snprintf(want, sizeof want, "stream failed earlier: %s", INJECTED);
    static float more[4000];
    vox_error("something unrelated happened since");
    int rc = vox_stream_feed(s, more, 4000);
    tu_check(rc == -1 && !strcmp(vox_last_error(), want), "feed after a failure: \"stream failed earlier: <cause>\"",
             "\"%s\"", vox_last_error());
    rc = vox_stream_feed(s, more, 4000); /* twice: no "failed earlier: failed earlier:" */
    tu_check(rc == -1 && !strcmp(vox_last_error(), want), "the same message every time", "\"%s\"", vox_last_error());
    vox_error("x");
    rc = vox_stream_flush(s);
    tu_check(rc == -1 && !strcmp(vox_last_error(), want), "flush after a failure", "\"%s\"", vox_last_error());
    vox_error("x");
    rc = vox_stream_finish(s);
    tu_check(rc == -1 && !strcmp(vox_last_error(), want), "finish after a failure", "\"%s\"", vox_last_error());
    tu_check(vox_ctx_error(ctx) == NULL, "cpu: the context is usable again once the failure was reported", NULL);
    vox_stream_free(s);

    /* a fresh stream on the same context works */
    s = vox_stream_new(ctx, NULL, NULL);
    static float tone[32000];
    rc = s ? vox_stream_feed(s, tone, 32000) : -1;
    if (rc == 0) rc = vox_stream_finish(s);
    tu_check(rc == 0 && vox_stream_error(s) == NULL, "a new stream on the context decodes", "%s",
             rc ? vox_last_error() : "");
    vox_stream_free(s);
    vox_close(ctx);
}

int main(void) {
    test_self_format();
    test_cpu_backend();
    test_stream();
    return tu_done();
}
