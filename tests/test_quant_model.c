/* test_quant_model.c - teacher-forced logits of quantized models against BF16.
 *
 * For a model directory and a clip: a BF16 run gives the greedy ids and the logits of
 * every step; each quantization spec (voxtral_quant.h: q8 / q4, groups 32, 64, 128)
 * then reruns the clip with those ids forced, and its logits are compared with the
 * BF16 ones: error RMS / std of the BF16 logits, and top-1 agreement (steps whose
 * argmax equals the BF16 argmax). One line per spec ("quality: ...").
 *
 *   test_quant_model            the fixtures (tests/fixtures/<name>/model, input.wav)
 *                               with quality gates (about twice the errors measured
 *                               when they were written; a wrong kernel or rule gives
 *                               errors near 1): q8 error <= 5% of the logit std and
 *                               top-1 >= 80%, q4 error <= 45% (random tiny models have
 *                               small logit margins: q4's top-1 is reported, not gated);
 *                               plus: the same spec quantized at load and read
 *                               from a directory written by --quantize give identical
 *                               logits; ends "N passed, N failed"
 *   test_quant_model DIR AUDIO [SPEC...]   the table for any model (not a test; e.g.
 *                               the full-size random model), specs default to all; a
 *                               SPEC with a '/' is a quantized model directory (made by
 *                               --quantize from DIR) run as it is
 *   QUANT_THREADS=N             CPU threads (default all)
 *   QUANT_BACKEND=cuda          the runs on the GPU (default cpu); the table's figures
 *                               are then the GPU's quantized kernels against its BF16
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "voxtral_internal.h"
#include "voxtral_quant.h"
#include "testutil.h"

typedef struct {
    float *logits;
    int rows, cap, width;
    int *ids;
    int n_ids, cap_ids;
} run_out;

static void on_tap(void *user, const char *stage, const float *rows, int n, int width) {
    run_out *o = user;
    if (strcmp(stage, "logits")) return;
    if (o->rows + n > o->cap) {
        o->cap = (o->rows + n) * 2;
        o->logits = realloc(o->logits, sizeof(float) * (size_t)o->cap * width);
    }
    o->width = width;
    memcpy(o->logits + (size_t)o->rows * width, rows, sizeof(float) * (size_t)n * width);
    o->rows += n;
}

static void on_token(void *user, const vox_token *t) {
    run_out *o = user;
    if (o->n_ids == o->cap_ids) {
        o->cap_ids = o->cap_ids ? 2 * o->cap_ids : 256;
        o->ids = realloc(o->ids, sizeof(int) * o->cap_ids);
    }
    o->ids[o->n_ids++] = t->id;
}

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec * 1e-9;
}

/* one run of the clip (forced ids if given); load_s: the open's time (quantization too) */
static int run(const char *dir, const char *quant, const float *x, int64_t n, const int *forced, int n_forced,
               run_out *o, double *load_s) {
    memset(o, 0, sizeof *o);
    vox_options opt;
    vox_options_default(&opt);
    opt.backend = getenv("QUANT_BACKEND") ? getenv("QUANT_BACKEND") : "cpu";
    opt.verbose = 0;
    opt.quant = quant;
    const char *t = getenv("QUANT_THREADS");
    opt.threads = t ? atoi(t) : 0;
    double t0 = now_s();
    vox_ctx *ctx = vox_open(dir, &opt);
    if (!ctx) return -1;
    if (load_s) *load_s = now_s() - t0;
    vox_stream *s = vox_stream_new(ctx, on_token, o);
    int rc = s ? vox_stream_set_tap(s, on_tap, o) : -1;
    if (!rc && forced) rc = vox_stream_force_tokens(s, forced, n_forced);
    if (!rc) rc = vox_stream_feed(s, x, (size_t)n);
    if (!rc) rc = vox_stream_finish(s);
    vox_stream_free(s);
    vox_close(ctx);
    return rc;
}

static void out_free(run_out *o) {
    free(o->logits);
    free(o->ids);
    memset(o, 0, sizeof *o);
}

typedef struct {
    double rel, top1;
    int steps;
} quality;

static quality compare(const run_out *q, const run_out *b) {
    quality r = {NAN, NAN, 0};
    if (q->rows != b->rows || q->width != b->width || b->rows == 0) return r;
    const int64_t n = (int64_t)b->rows * b->width;
    double mean = 0, var = 0, err = 0;
    for (int64_t i = 0; i < n; i++) mean += b->logits[i];
    mean /= n;
    for (int64_t i = 0; i < n; i++) {
        var += (b->logits[i] - mean) * (b->logits[i] - mean);
        err += (double)(q->logits[i] - b->logits[i]) * (q->logits[i] - b->logits[i]);
    }
    int agree = 0;
    for (int s = 0; s < b->rows; s++) {
        const float *lq = q->logits + (int64_t)s * b->width, *lb = b->logits + (int64_t)s * b->width;
        int aq = 0, ab = 0;
        for (int j = 1; j < b->width; j++) {
            if (lq[j] > lq[aq]) aq = j;
            if (lb[j] > lb[ab]) ab = j;
        }
        agree += aq == ab;
    }
    r.rel = sqrt(err / var);
    r.top1 = (double)agree / b->rows;
    r.steps = b->rows;
    return r;
}

static const char *ALL_SPECS[] = {"q8:32", "q8:64", "q8:128", "q8:64:bf16", "q4:32", "q4:64", "q4:128",
                                  "q4:64:bf16", NULL};

/* BF16 reference run, then every spec teacher-forced; gates when gate != 0 */
static int measure(const char *dir, const char *audio, const char *const *specs, int gate) {
    float *x = NULL;
    int64_t n = 0;
    if (vox_audio_load(audio, 16000, &x, &n) != 0) {
        tu_check(0, audio, "%s", vox_last_error());
        return -1;
    }
    run_out b;
    double tb = now_s();
    if (run(dir, NULL, x, n, NULL, 0, &b, NULL) != 0) {
        tu_check(0, dir, "bf16 run: %s", vox_last_error());
        free(x);
        return -1;
    }
    tb = now_s() - tb;
    printf("# %s: bf16 run %d steps, %.1f s\n", dir, b.rows, tb);
    for (int i = 0; specs[i]; i++) {
        run_out q;
        double load_s = 0, t = now_s();
        const int is_dir = strchr(specs[i], '/') != NULL;
        int rc = run(is_dir ? specs[i] : dir, is_dir ? NULL : specs[i], x, n, b.ids, b.n_ids, &q, &load_s);
        t = now_s() - t;
        if (rc) {
            tu_check(0, specs[i], "%s", vox_last_error());
            continue;
        }
        quality r = compare(&q, &b);
        printf("quality: %-40s %-12s error %.4f of the logit std, top-1 %5.1f%% (%d steps), load+quantize %.1f s, run %.1f s\n",
               dir, specs[i], r.rel, 100 * r.top1, r.steps, load_s, t);
        if (gate) {
            const int q8 = specs[i][1] == '8';
            char name[200];
            snprintf(name, sizeof name, "%s %s: teacher-forced logits within the %s gate", dir, specs[i], q8 ? "q8" : "q4");
            tu_check(r.steps > 0 && (q8 ? r.rel <= 0.05 && r.top1 >= 0.8 : r.rel <= 0.45), name,
                     "error %.4f of the logit std, top-1 %.1f%%", r.rel, 100 * r.top1);
        }
        out_free(&q);
    }
    out_free(&b);
    free(x);
    return 0;
}

/* --quant at load and a directory written by vox_quantize_dir: the same logits */
static void test_written_dir(const char *dir, const char *audio) {
    char out[] = "/tmp/vox_test_quant_model_XXXXXX";
    if (!mkdtemp(out)) return;
    float *x = NULL;
    int64_t n = 0;
    run_out a, b;
    int ok = vox_audio_load(audio, 16000, &x, &n) == 0 && vox_quantize_dir(dir, out, "q4:32", 0) == 0 &&
             run(dir, "q4:32", x, n, NULL, 0, &a, NULL) == 0 && run(out, NULL, x, n, NULL, 0, &b, NULL) == 0;
    const char *why = ok ? "" : vox_last_error();
    ok = ok && a.rows == b.rows && a.rows > 0 &&
         !memcmp(a.logits, b.logits, sizeof(float) * (size_t)a.rows * a.width);
    tu_check(ok, "q4:32 quantized at load = read from a --quantize directory (logits bit for bit)", "%s", why);
    if (ok) {
        out_free(&a);
        out_free(&b);
    }
    free(x);
    char p[256];
    const char *files[] = {"consolidated.safetensors", "params.json", "tekken.json"};
    for (int i = 0; i < 3; i++) {
        snprintf(p, sizeof p, "%s/%s", out, files[i]);
        unlink(p);
    }
    rmdir(out);
}

int main(int argc, char **argv) {
    setvbuf(stdout, NULL, _IOLBF, 0);
    if (argc >= 3) {
        const char *const *specs = argc > 3 ? (const char *const *)argv + 3 : ALL_SPECS;
        return measure(argv[1], argv[2], specs, 0) == 0 ? 0 : 1;
    }
    const char *fixtures[] = {"tiny_speech", "tiny_tone", "tiny_mha", "tiny_delay"};
    for (int i = 0; i < 4; i++) {
        char dir[256], audio[256];
        snprintf(dir, sizeof dir, "tests/fixtures/%s/model", fixtures[i]);
        snprintf(audio, sizeof audio, "tests/fixtures/%s/input.wav", fixtures[i]);
        if (access(dir, R_OK) != 0 || access(audio, R_OK) != 0) continue;
        measure(dir, audio, ALL_SPECS, 1);
    }
    test_written_dir("tests/fixtures/tiny_speech/model", "tests/fixtures/tiny_speech/input.wav");
    return tu_done();
}
