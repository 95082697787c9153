/* test_stream.c - live-stream behaviour of the stream API on tiny models:
 *   - flush: A, flush, B gives exactly offline(A) ++ offline(B);
 *   - continuous mode restarts after EOS and keeps transcribing what follows,
 *     the first segment's ids being the offline ones;
 *   - an endless stream (3 hours of audio, time-compressed: a tiny model runs
 *     it in seconds) keeps peak memory flat, and a marked span in its middle,
 *     between two flushes, is transcribed exactly as the span alone.
 * Usage: test_stream [FIXTURES_DIR] [HOURS]; VOX_TEST_BACKEND=cuda runs it on the
 * GPU (where the decoder keeps a step queued: these cover its segment ends).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "testutil.h"

#include "voxtral.h"
#include "voxtral_internal.h"

/* Under ASan (make asan-test) a small quarantine: with the default 256 MB every free
 * grows RSS (364 -> 372 MB over the endless stream's 104 segments) and the peak-memory
 * check below says nothing; with 2 MB freed blocks are reused (2.5 MB of growth, ASan's
 * own). ASAN_OPTIONS still wins; other builds never call this. */
const char *__asan_default_options(void);
const char *__asan_default_options(void) { return "quarantine_size_mb=2"; }

typedef struct {
    int *ids;
    int n, cap;
} idlist;

static void on_token(void *user, const vox_token *t) {
    idlist *l = user;
    if (l->n == l->cap) {
        l->cap = l->cap ? l->cap * 2 : 1024;
        l->ids = realloc(l->ids, sizeof(int) * l->cap);
    }
    l->ids[l->n++] = t->id;
}

static void no_tap(void *user, const char *stage, const float *data, int rows, int width) {}

static int offline_tap(vox_ctx *ctx, const float *x, int64_t n, idlist *out, int tapped) {
    vox_stream *s = vox_stream_new(ctx, on_token, out);
    int rc = !s || (tapped && vox_stream_set_tap(s, no_tap, NULL)) || vox_stream_feed(s, x, n) ||
             vox_stream_finish(s);
    vox_stream_free(s);
    return rc ? -1 : 0;
}

static int offline(vox_ctx *ctx, const float *x, int64_t n, idlist *out) {
    return offline_tap(ctx, x, n, out, 0);
}

static long peak_rss_kb(void) {
    FILE *f = fopen("/proc/self/status", "r");
    char line[256];
    long v = -1;
    while (f && fgets(line, sizeof line, f))
        if (!strncmp(line, "VmHWM:", 6)) v = strtol(line + 6, NULL, 10);
    if (f) fclose(f);
    return v;
}

static vox_ctx *open_model(const char *dir, int delay_ms) {
    vox_options o;
    vox_options_default(&o);
    o.backend = getenv("VOX_TEST_BACKEND") ? getenv("VOX_TEST_BACKEND") : "cpu";
    o.gpu_path = getenv("VOX_TEST_GPU_PATH");
    o.verbose = 0;
    o.delay_ms = delay_ms;
    vox_ctx *ctx = vox_open(dir, &o);
    if (!ctx) tu_check(0, "open model", "%s: %s", dir, vox_last_error());
    return ctx;
}

/* deterministic synthetic audio: tone bursts, noise, silence (1 s patterns) */
static void synth_second(float *out, int rate, int64_t second) {
    unsigned r = (unsigned)second * 2654435761u + 1;
    int kind = (int)(second % 5);
    double f = 200 + 60 * (second % 13);
    for (int i = 0; i < rate; i++) {
        r = r * 1664525u + 1013904223u;
        float noise = ((r >> 9) / 8388608.0f - 1.0f) * 0.05f;
        float tone = (float)(0.3 * sin(2 * M_PI * f * i / rate));
        out[i] = kind == 0 ? 0.0f : kind == 1 ? noise : kind == 2 ? tone : kind == 3 ? tone * 0.5f + noise : noise * 0.2f;
    }
}

int main(int argc, char **argv) {
    const char *root = argc > 1 ? argv[1] : "tests/fixtures";
    double hours = argc > 2 ? atof(argv[2]) : 3.0;
    char dir[2048], wav[2100];
    if (getenv("VOX_TEST_BACKEND") && !strcmp(getenv("VOX_TEST_BACKEND"), "cuda") && !vox_cuda_available()) {
        printf("skipped: no CUDA device\n");
        return 0;
    }

    /* --- flush: A | B == offline(A) ++ offline(B) --------------------------------- */
    snprintf(dir, sizeof dir, "%s/tiny_speech/model", root);
    vox_ctx *ctx = open_model(dir, 480);
    if (!ctx) return tu_done();
    const int rate = vox_sample_rate(ctx);
    float *a = NULL, *b = NULL;
    int64_t na = 0, nb = 0;
    snprintf(wav, sizeof wav, "%s/tiny_speech/input.wav", root);
    int ok = vox_audio_load(wav, rate, &a, &na) == 0;
    snprintf(wav, sizeof wav, "%s/tiny_tone/input.wav", root);
    ok = ok && vox_audio_load(wav, rate, &b, &nb) == 0;
    tu_check(ok, "load fixture audio", ok ? "" : "%s", vox_last_error());
    if (!ok) return tu_done();
    idlist oa = {0}, ob = {0}, ab = {0};
    ok = offline(ctx, a, na, &oa) == 0 && offline(ctx, b, nb, &ob) == 0;
    vox_stream *s = vox_stream_new(ctx, on_token, &ab);
    ok = ok && s && !vox_stream_feed(s, a, na) && !vox_stream_flush(s) && !vox_stream_feed(s, b, nb) &&
         !vox_stream_finish(s);
    int same = ok && ab.n == oa.n + ob.n && !memcmp(ab.ids, oa.ids, sizeof(int) * oa.n) &&
               !memcmp(ab.ids + oa.n, ob.ids, sizeof(int) * ob.n);
    tu_check(same, "flush: A, flush, B gives offline(A) then offline(B)", "%d + %d ids, got %d", oa.n, ob.n, ab.n);
    vox_stream_free(s);
    /* flush, flush again, finish: the empty segments add no ids */
    idlist af = {0};
    s = vox_stream_new(ctx, on_token, &af);
    ok = s && !vox_stream_feed(s, a, na) && !vox_stream_flush(s) && !vox_stream_flush(s) && !vox_stream_finish(s);
    tu_check(ok && af.n == oa.n && !memcmp(af.ids, oa.ids, sizeof(int) * oa.n),
             "flush twice then finish: empty segments add nothing", "%d ids, offline %d", af.n, oa.n);
    vox_stream_free(s);
    free(af.ids);

    /* --- two streams alive at once on one context, fed in turns: each gives its own
     * offline ids (on CUDA each replays only its own captured step graph) --------- */
    {
        idlist t1 = {0}, t2 = {0};
        vox_stream *s1 = vox_stream_new(ctx, on_token, &t1), *s2 = vox_stream_new(ctx, on_token, &t2);
        int tok = s1 && s2;
        for (int64_t o1 = 0, o2 = 0; tok && (o1 < na || o2 < nb);) {
            int64_t l1 = na - o1 < 3000 ? na - o1 : 3000, l2 = nb - o2 < 5000 ? nb - o2 : 5000;
            if (l1 > 0) tok = !vox_stream_feed(s1, a + o1, (size_t)l1);
            if (tok && l2 > 0) tok = !vox_stream_feed(s2, b + o2, (size_t)l2);
            o1 += l1, o2 += l2;
        }
        tok = tok && !vox_stream_finish(s1) && !vox_stream_finish(s2);
        tu_check(tok && t1.n == oa.n && !memcmp(t1.ids, oa.ids, sizeof(int) * oa.n) && t2.n == ob.n &&
                     !memcmp(t2.ids, ob.ids, sizeof(int) * ob.n),
                 "two streams fed in turns: each gives its offline ids", "%d and %d ids, offline %d and %d", t1.n,
                 t2.n, oa.n, ob.n);
        vox_stream_free(s1);
        vox_stream_free(s2);
        free(t1.ids);
        free(t2.ids);
    }

    /* --- pull mode: the same ids, taken with vox_stream_next between feeds --------- */
    {
        idlist pulled = {0};
        vox_stream *ps = vox_stream_new(ctx, NULL, NULL);
        int pok = ps != NULL;
        vox_token t;
        for (int64_t off = 0; pok && off < na; off += 4000) {
            pok = !vox_stream_feed(ps, a + off, (size_t)(na - off < 4000 ? na - off : 4000));
            while (pok && vox_stream_next(ps, &t)) on_token(&pulled, &t);
        }
        pok = pok && !vox_stream_finish(ps);
        double last_time = -1e9;
        int ordered = 1;
        while (pok && vox_stream_next(ps, &t)) {
            on_token(&pulled, &t);
            if (t.time_s < last_time) ordered = 0;
            last_time = t.time_s;
        }
        tu_check(pok && ordered && pulled.n == oa.n && !memcmp(pulled.ids, oa.ids, sizeof(int) * oa.n),
                 "pull mode (vox_stream_next) gives the offline ids in order", "%d ids, offline %d", pulled.n, oa.n);
        vox_stream_free(ps);
        free(pulled.ids);
    }

    /* --- endless stream: flat memory, marked span exact ------------------------- */
    int64_t seconds = (int64_t)(hours * 3600);
    float *sec = malloc(sizeof(float) * rate);
    idlist all = {0};
    s = vox_stream_new(ctx, on_token, &all);
    ok = s && !vox_stream_set_continuous(s, 1);
    long rss_early = 0;
    int64_t mark_at = seconds * 2 / 3, span_first = -1, span_last = -1;
    unsigned r = 12345;
    for (int64_t t = 0; ok && t < seconds; t++) {
        if (t == mark_at) { /* the marked span: fresh segment, the speech, end of segment */
            ok = !vox_stream_flush(s);
            span_first = all.n;
            ok = ok && !vox_stream_feed(s, a, na) && !vox_stream_flush(s);
            span_last = all.n;
        }
        synth_second(sec, rate, t);
        for (int off = 0; ok && off < rate;) { /* random chunk sizes */
            r = r * 1103515245u + 12345u;
            int len = 1 + (int)((r >> 8) % 6000);
            if (len > rate - off) len = rate - off;
            ok = !vox_stream_feed(s, sec + off, len);
            off += len;
        }
        if (t == 600) rss_early = peak_rss_kb();
    }
    ok = ok && !vox_stream_finish(s);
    long rss_end = peak_rss_kb();
    vox_stats st;
    if (s) vox_stream_stats(s, &st);
    tu_check(ok, "endless stream: ran to the end", ok ? "%.1f h of audio, %d ids, %d segments" : "%s",
             ok ? st.audio_s / 3600 : 0.0, all.n, s ? vox_stream_restarts(s) + 1 : 0);
    tu_check(ok && rss_end - rss_early < 4096, "endless stream: peak memory flat after the first 10 minutes",
             "peak RSS %ld kB at 10 min, %ld kB at the end", rss_early, rss_end);
    same = ok && span_last - span_first == oa.n &&
           !memcmp(all.ids + span_first, oa.ids, sizeof(int) * oa.n);
    tu_check(same, "endless stream: the marked span's ids equal the span alone", "%lld ids, offline %d",
             (long long)(span_last - span_first), oa.n);
    vox_stream_free(s);
    vox_close(ctx);

    /* --- continuous mode: EOS starts a new segment --------------------------------- */
    snprintf(dir, sizeof dir, "%s/tiny_mha/model", root);
    ctx = open_model(dir, 960); /* the fixture's delay */
    if (ctx) {
        float *m = NULL;
        int64_t nm = 0;
        snprintf(wav, sizeof wav, "%s/tiny_mha/input.wav", root);
        ok = vox_audio_load(wav, rate, &m, &nm) == 0;
        idlist om = {0}, cm = {0};
        ok = ok && offline(ctx, m, nm, &om) == 0;
        int eos = om.n > 0 && om.ids[om.n - 1] == 2;
        tu_check(ok && eos, "tiny_mha offline run ends with EOS", "%d ids", om.n);
        /* four copies: the model's end-of-audio EOS comes inside the stream now */
        float *m4 = malloc(sizeof(float) * nm * 4);
        for (int rep = 0; rep < 4; rep++) memcpy(m4 + rep * nm, m, sizeof(float) * nm);
        /* twice: as is (CUDA keeps a decoder step queued, discarded at the EOS), then
         * with a tap set, which makes every backend run one step at a time */
        for (int tapped = 0; tapped < 2; tapped++) {
            cm.n = 0;
            s = vox_stream_new(ctx, on_token, &cm);
            int cok = ok && s && !vox_stream_set_continuous(s, 1) &&
                      (!tapped || !vox_stream_set_tap(s, no_tap, NULL)) && !vox_stream_feed(s, m4, nm * 4) &&
                      !vox_stream_finish(s);
            int restarts = s ? vox_stream_restarts(s) : 0;
            /* the first EOS, produced at decoder position L-1+e, leaves audio from token e
             * untranscribed: the next segment must be exactly the offline run from there */
            int e = -1;
            for (int i = 0; i < cm.n && e < 0; i++)
                if (cm.ids[i] == 2) e = i;
            idlist rest = {0};
            int64_t from = (int64_t)(e < 0 ? 0 : e) * (rate / 1000 * 80);
            cok = cok && e >= 0 && offline_tap(ctx, m4 + from, nm * 4 - from, &rest, tapped) == 0;
            int n2 = cm.n - (e + 1), first_diff = -1;
            int match = cok && n2 >= 1;
            for (int i = 0; match && i < n2 && i < rest.n; i++) {
                match = cm.ids[e + 1 + i] == rest.ids[i];
                if (!match) first_diff = i;
                if (rest.ids[i] == 2) break; /* a later EOS may restart again */
            }
            char name[160];
            snprintf(name, sizeof name, "continuous%s: after EOS, the next segment is the offline run of the untranscribed audio",
                     tapped ? " (one step at a time)" : "");
            tu_check(match && restarts >= 1, name,
                     "first EOS at id %d, %d restarts, %d ids after it, offline %d; first difference at %d", e,
                     restarts, n2, rest.n, first_diff);
            free(rest.ids);
            vox_stream_free(s);
            s = NULL;
        }
        free(m4);
        free(m);
        free(om.ids);
        free(cm.ids);
        vox_close(ctx);
    }
    free(a);
    free(b);
    free(sec);
    free(oa.ids);
    free(ob.ids);
    free(ab.ids);
    free(all.ids);
    return tu_done();
}
