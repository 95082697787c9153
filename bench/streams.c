/* streams.c - load test of a serving context: N simulated live streams, each fed
 * 80 ms of audio every 80 ms of wall time (starts staggered over one 80 ms period),
 * for a fixed duration; then finished. Run by scripts/bench_streams.sh.
 *
 * Per N: whether every stream kept real time (its decoder's lag behind the audio
 * fed, at the end, within the delay + 0.4 s), token latency p50/p95/p99 (from the
 * arrival of the sample that completed a token's input, vox_token.ready_s, to its
 * delivery), the decoder step time per batch size, the mean batch size, memory;
 * the largest N with p95 <= 150 ms that kept real time. Baselines in the same run:
 * the same N with batches of one row (one step per stream: --no-baseline skips),
 * and one stream alone on a plain context (its step time). The memory-bound stream
 * count M(W) = (free memory before open - weights - workspace) / (per-stream KV and
 * state at decoder window W) is computed from the engine's own plan.
 *
 * streams -d MODEL -a AUDIO [-n 1,2,4,8] [-s SECONDS] [--backend B] [-t THREADS]
 *         [--kv f32|bf16] [--max-batch B] [--tick-ms T] [-w KV_WINDOW] [--no-baseline] [--offline] [--json FILE]
 * -w: the serving contexts' decoder KV window (vox_options.kv_window; 0: the model's).
 * --offline: each stream gets SECONDS of audio at once and the batches run as fast as
 * they go (step time per batch size against one step per stream, no pacing).
 */
#include <dlfcn.h>
#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "voxtral.h"
#include "voxtral_internal.h"
#include "voxtral_text.h"

enum { PIECE = 1280, PERIOD_MS = 80, MAX_N = 1024 };

/* voxtral_sched.c's test hooks: --offline builds batches of a known size */
void vox_sched_hold(vox_ctx *ctx, int hold);

static double now_ms(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1e3 + ts.tv_nsec / 1e6;
}

static void sleep_until(double t_ms) {
    double d = t_ms - now_ms();
    if (d <= 0) return;
    struct timespec ts = {(time_t)(d / 1e3), (long)(fmod(d, 1e3) * 1e6)};
    nanosleep(&ts, NULL);
}

typedef struct {
    double start;      /* wall time of its first feed */
    double *lat;       /* ms, live tokens */
    int n_lat, cap_lat;
    int live;          /* still in the live phase (written by main before finish) */
    double last_ready; /* ready_s of its last token */
    int tokens;
} stream_rec;

static void on_token(void *user, const vox_token *t) {
    stream_rec *r = user; /* the scheduler thread is its only writer */
    double now = now_ms();
    long long need = (long long)llround(t->ready_s * 16000.0);
    long long block = need > 0 ? (need - 1) / PIECE : 0;
    double arrival = r->start + block * PERIOD_MS;
    if (__atomic_load_n(&r->live, __ATOMIC_ACQUIRE)) {
        if (r->n_lat == r->cap_lat) {
            r->cap_lat = r->cap_lat ? r->cap_lat * 2 : 1024;
            r->lat = realloc(r->lat, sizeof(double) * r->cap_lat);
        }
        r->lat[r->n_lat++] = now - arrival;
    }
    r->last_ready = t->ready_s;
    r->tokens++;
}

static int cmp_d(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

static double pct(const double *v, int n, double p) {
    if (!n) return 0;
    int i = (int)ceil(p * n) - 1;
    return v[i < 0 ? 0 : i >= n ? n - 1 : i];
}

typedef struct {
    int n, kept;
    double p50, p95, p99, max_lag_s, mean_batch, step_ms, mem_mb;
    long long tokens, steps;
    /* where the live phase's wall time went (the scheduler's counters) */
    double wall_ms, steps_ms, enc_ms, enc_host_ms, prefill_ms, prep_ms, mel_ms, busy_ms;
    int host_threads;
    long long ticks, enc_batches, enc_tokens, prefills, prefill_passes, prefix_segments;
    int prefix_tokens;
    double step_ms_by_batch[VOX_BATCH_BINS];
    long long steps_by_batch[VOX_BATCH_BINS];
} run_result;

static long rss_mb(void) {
    FILE *f = fopen("/proc/self/status", "r");
    char line[256];
    long v = 0;
    while (f && fgets(line, sizeof line, f))
        if (!strncmp(line, "VmRSS:", 6)) v = strtol(line + 6, NULL, 10) / 1024;
    if (f) fclose(f);
    return v;
}

/* N live streams on ctx for `seconds` of audio each */
static int run_n(vox_ctx *ctx, int N, const float *audio, int64_t n_audio, double seconds, run_result *out) {
    stream_rec *rec = calloc(N, sizeof *rec);
    vox_stream **s = calloc(N, sizeof *s);
    vox_serve_stats a, b;
    vox_serve_stats_get(ctx, &a);
    int rc = 0;
    for (int i = 0; i < N && !rc; i++) {
        rec[i].live = 1;
        s[i] = vox_stream_new(ctx, on_token, &rec[i]);
        if (!s[i] || vox_stream_set_continuous(s[i], 1)) rc = -1;
    }
    const int pieces = (int)(seconds * 1000 / PERIOD_MS);
    double t0 = now_ms() + 20;
    for (int i = 0; i < N; i++) rec[i].start = t0 + (double)PERIOD_MS * i / N;
    float *buf = malloc(sizeof(float) * PIECE);
    /* one feeder: every stream's next piece at its time, in time order */
    for (int k = 0; k < pieces && !rc; k++)
        for (int i = 0; i < N && !rc; i++) {
            sleep_until(rec[i].start + (double)k * PERIOD_MS);
            for (int j = 0; j < PIECE; j++) buf[j] = audio[((int64_t)k * PIECE + j + (int64_t)i * 7919) % n_audio];
            rc = vox_stream_feed(s[i], buf, PIECE);
        }
    const double fed_s = pieces * PERIOD_MS / 1000.0;
    sleep_until(t0 + (double)pieces * PERIOD_MS + PERIOD_MS);
    for (int i = 0; i < N; i++) __atomic_store_n(&rec[i].live, 0, __ATOMIC_RELEASE);
    long mem = rss_mb();
    size_t be_mem = vox_backend_bytes(ctx);
    vox_serve_stats_get(ctx, &b);
    const double wall = now_ms() - t0;
    double max_lag = 0;
    for (int i = 0; i < N && !rc; i++) rc = vox_stream_finish(s[i]);
    for (int i = 0; i < N && !rc; i++) rc = vox_stream_wait(s[i]);
    if (rc) fprintf(stderr, "streams: %s\n", vox_last_error());
    int total = 0;
    for (int i = 0; i < N; i++) total += rec[i].n_lat;
    double *all = malloc(sizeof(double) * (total ? total : 1));
    int at = 0;
    for (int i = 0; i < N; i++) {
        memcpy(all + at, rec[i].lat, sizeof(double) * rec[i].n_lat);
        at += rec[i].n_lat;
    }
    /* a stream's lag: its last live token's latency */
    for (int i = 0; i < N; i++) {
        double l = rec[i].n_lat ? rec[i].lat[rec[i].n_lat - 1] / 1000.0 : fed_s;
        if (l > max_lag) max_lag = l;
    }
    qsort(all, total, sizeof(double), cmp_d);
    memset(out, 0, sizeof *out);
    out->n = N;
    out->p50 = pct(all, total, 0.50);
    out->p95 = pct(all, total, 0.95);
    out->p99 = pct(all, total, 0.99);
    out->max_lag_s = max_lag;
    out->kept = !rc && max_lag <= vox_delay_ms(ctx) / 1000.0 + 0.4;
    out->tokens = total;
    out->steps = b.steps - a.steps;
    out->mean_batch = out->steps ? (double)(b.step_rows - a.step_rows) / out->steps : 0;
    out->step_ms = out->steps ? (b.step_ms - a.step_ms) / out->steps : 0;
    for (int k = 0; k < VOX_BATCH_BINS; k++) {
        out->steps_by_batch[k] = b.steps_by_batch[k] - a.steps_by_batch[k];
        out->step_ms_by_batch[k] = out->steps_by_batch[k] ? (b.step_ms_by_batch[k] - a.step_ms_by_batch[k]) / out->steps_by_batch[k] : 0;
    }
    out->wall_ms = wall;
    out->steps_ms = b.step_ms - a.step_ms;
    out->enc_ms = b.enc_ms - a.enc_ms;
    out->enc_host_ms = b.enc_host_ms - a.enc_host_ms;
    out->prefill_ms = b.prefill_ms - a.prefill_ms;
    out->prep_ms = b.prep_ms - a.prep_ms;
    out->mel_ms = b.mel_ms - a.mel_ms;
    out->host_threads = b.host_threads;
    out->busy_ms = b.busy_ms - a.busy_ms;
    out->ticks = b.ticks - a.ticks;
    out->enc_batches = b.enc_batches - a.enc_batches;
    out->enc_tokens = b.enc_tokens - a.enc_tokens;
    out->prefix_segments = b.prefix_segments - a.prefix_segments;
    out->prefix_tokens = b.prefix_tokens;
    out->prefills = b.prefills - a.prefills;
    out->prefill_passes = b.prefill_passes - a.prefill_passes;
    out->mem_mb = be_mem ? be_mem / 1048576.0 : (double)mem;
    for (int i = 0; i < N; i++) {
        vox_stream_free(s[i]);
        free(rec[i].lat);
    }
    free(all), free(rec), free(s), free(buf);
    return rc;
}

/* --offline: N streams given `seconds` of audio at once (the scheduler held until all
 * is queued), decoded as fast as the batches go: the step time per batch size without
 * real-time pacing. Returns the wall time; fills *st with the scheduler's counters. */
static double run_offline(vox_ctx *ctx, int N, const float *audio, int64_t n_audio, double seconds, vox_serve_stats *d) {
    vox_stream **s = calloc(N, sizeof *s);
    vox_serve_stats a, b;
    vox_serve_stats_get(ctx, &a);
    int64_t n = (int64_t)(seconds * 16000);
    float *x = malloc(sizeof(float) * n);
    vox_sched_hold(ctx, 1);
    int rc = 0;
    for (int i = 0; i < N && !rc; i++) {
        for (int64_t k = 0; k < n; k++) x[k] = audio[(k + (int64_t)i * 7919) % n_audio];
        s[i] = vox_stream_new(ctx, NULL, NULL);
        rc = !s[i] || vox_stream_feed(s[i], x, (size_t)n) || vox_stream_finish(s[i]);
    }
    double t0 = now_ms();
    vox_sched_hold(ctx, 0);
    for (int i = 0; i < N && !rc; i++) rc = vox_stream_wait(s[i]);
    double wall = now_ms() - t0;
    if (rc) fprintf(stderr, "streams: %s\n", vox_last_error());
    vox_serve_stats_get(ctx, &b);
    memset(d, 0, sizeof *d);
    d->steps = b.steps - a.steps;
    d->step_rows = b.step_rows - a.step_rows;
    d->step_ms = b.step_ms - a.step_ms;
    d->enc_ms = b.enc_ms - a.enc_ms;
    for (int k = 0; k < VOX_BATCH_BINS; k++) {
        d->steps_by_batch[k] = b.steps_by_batch[k] - a.steps_by_batch[k];
        d->step_ms_by_batch[k] = b.step_ms_by_batch[k] - a.step_ms_by_batch[k];
    }
    for (int i = 0; i < N; i++) vox_stream_free(s[i]);
    free(s), free(x);
    return rc ? -1 : wall;
}

static void print_offline(const char *mode, int N, double wall, const vox_serve_stats *d) {
    int top = 0;
    for (int k = 1; k < VOX_BATCH_BINS; k++)
        if (d->steps_by_batch[k] > d->steps_by_batch[top]) top = k;
    printf("%-9s %5d  %8.0f ms wall, %6lld steps, mean batch %5.2f, %8.2f ms per step (%d rows: %.2f ms), "
           "%7.2f ms of steps per stream-token, encoder %.0f ms\n",
           mode, N, wall, d->steps, d->steps ? (double)d->step_rows / d->steps : 0, d->steps ? d->step_ms / d->steps : 0,
           top, d->steps_by_batch[top] ? d->step_ms_by_batch[top] / d->steps_by_batch[top] : 0,
           d->step_rows ? d->step_ms / d->step_rows : 0, d->enc_ms);
}

/* free memory now: VRAM through the CUDA runtime when the build links it, else RAM */
static double free_bytes(const char *backend, int *is_gpu) {
    int (*mem_info)(size_t *, size_t *) = (int (*)(size_t *, size_t *))dlsym(RTLD_DEFAULT, "cudaMemGetInfo");
    size_t fr = 0, tot = 0;
    *is_gpu = 0;
    if (strcmp(backend, "cpu") && mem_info && vox_cuda_available() && mem_info(&fr, &tot) == 0) {
        *is_gpu = 1;
        return (double)fr;
    }
    return vox_host_available(); /* the engine's own figure, as vox_open checks it */
}

static void print_row(FILE *o, const char *mode, const run_result *r) {
    fprintf(o, "%-9s %5d  %-4s %9.1f %9.1f %9.1f %8.2f %10.2f %9.2f %8lld %9.0f\n", mode, r->n, r->kept ? "yes" : "NO",
            r->p50, r->p95, r->p99, r->max_lag_s, r->mean_batch, r->step_ms, r->tokens, r->mem_mb);
    const double w = r->wall_ms > 0 ? r->wall_ms / 100 : 1;
    const double other = r->busy_ms - r->steps_ms - r->enc_ms - r->prefill_ms - r->prep_ms;
    fprintf(o, "          live %.1f s: decoder steps %.0f ms (%.0f%%), encoder %.0f ms (%.0f%%: %lld batches, %lld tokens, %.0f ms to the last launch; %lld segments from the shared %d-token prefix), "
               "prompts %.0f ms (%.0f%%: %lld in %lld passes), host %.0f ms (%.0f%%: log-mel %.0f ms on %d threads), "
               "other %.0f ms (%.0f%%), "
               "idle %.0f ms (%.0f%%), %lld ticks\n",
            r->wall_ms / 1000, r->steps_ms, r->steps_ms / w, r->enc_ms, r->enc_ms / w, r->enc_batches, r->enc_tokens,
            r->enc_host_ms, r->prefix_segments, r->prefix_tokens, r->prefill_ms, r->prefill_ms / w, r->prefills, r->prefill_passes, r->prep_ms, r->prep_ms / w, r->mel_ms, r->host_threads, other,
            other / w, r->wall_ms - r->busy_ms, (r->wall_ms - r->busy_ms) / w, r->ticks);
}

static void json_row(FILE *j, const char *mode, const run_result *r, int last) {
    fprintf(j, "    {\"mode\": \"%s\", \"streams\": %d, \"kept_real_time\": %s, \"latency_ms\": {\"p50\": %.3f, "
               "\"p95\": %.3f, \"p99\": %.3f}, \"max_lag_s\": %.3f, \"mean_batch\": %.3f, \"step_ms\": %.4f, "
               "\"tokens\": %lld, \"steps\": %lld, \"memory_mb\": %.1f, \"live_ms\": %.1f, \"steps_total_ms\": %.1f, "
               "\"encoder_ms\": %.1f, \"encoder_batches\": %lld, \"encoder_tokens\": %lld, \"encoder_host_ms\": %.1f, \"prefix_tokens\": %d, \"prefix_segments\": %lld, \"prompts_ms\": %.1f, "
               "\"prompts\": %lld, \"prompt_passes\": %lld, \"host_ms\": %.1f, \"mel_ms\": %.1f, \"busy_ms\": %.1f, \"ticks\": %lld, "
               "\"step_ms_by_batch\": {",
            mode, r->n, r->kept ? "true" : "false", r->p50, r->p95, r->p99, r->max_lag_s, r->mean_batch, r->step_ms,
            r->tokens, r->steps, r->mem_mb, r->wall_ms, r->steps_ms, r->enc_ms, r->enc_batches, r->enc_tokens,
            r->enc_host_ms, r->prefix_tokens, r->prefix_segments, r->prefill_ms, r->prefills, r->prefill_passes, r->prep_ms,
            r->mel_ms, r->busy_ms, r->ticks);
    int first = 1;
    for (int k = 1; k < VOX_BATCH_BINS; k++)
        if (r->steps_by_batch[k]) {
            fprintf(j, "%s\"%d%s\": %.4f", first ? "" : ", ", k, k == VOX_BATCH_BINS - 1 ? "+" : "", r->step_ms_by_batch[k]);
            first = 0;
        }
    fprintf(j, "}}%s\n", last ? "" : ",");
}

int main(int argc, char **argv) {
    const char *dir = NULL, *wav = NULL, *json = NULL, *backend = "auto", *kv = "f32";
    const char *list = "1,2,4,8";
    double seconds = 10;
    int threads = 0, max_batch = 0, baseline = 1, offline = 0, kv_window = 0, tick_ms = 0;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (!strcmp(a, "-d") && v) dir = v, i++;
        else if (!strcmp(a, "-a") && v) wav = v, i++;
        else if (!strcmp(a, "-n") && v) list = v, i++;
        else if (!strcmp(a, "-s") && v) seconds = atof(v), i++;
        else if (!strcmp(a, "-t") && v) threads = atoi(v), i++;
        else if (!strcmp(a, "--backend") && v) backend = v, i++;
        else if (!strcmp(a, "--kv") && v) kv = v, i++;
        else if (!strcmp(a, "--max-batch") && v) max_batch = atoi(v), i++;
        else if (!strcmp(a, "--tick-ms") && v) tick_ms = atoi(v) ? atoi(v) : -1, i++; /* 0: no gate */
        else if (!strcmp(a, "-w") && v) kv_window = atoi(v), i++;
        else if (!strcmp(a, "--json") && v) json = v, i++;
        else if (!strcmp(a, "--no-baseline")) baseline = 0;
        else if (!strcmp(a, "--offline")) offline = 1;
        else {
            fprintf(stderr, "usage: streams -d MODEL -a AUDIO [-n 1,2,4,8] [-s SECONDS] [--backend B] [-t THREADS]\n"
                            "               [--kv f32|bf16] [--max-batch B] [--tick-ms T] [-w KV_WINDOW] [--no-baseline]\n"
                            "               [--offline] [--json FILE]\n");
            return 2;
        }
    }
    if (!dir || !wav) {
        fprintf(stderr, "streams: -d MODEL and -a AUDIO are required\n");
        return 2;
    }
    int ns[64], nn = 0, nmax = 1;
    for (const char *p = list; *p && nn < 64;) {
        ns[nn] = atoi(p);
        if (ns[nn] < 1 || ns[nn] > MAX_N) {
            fprintf(stderr, "streams: -n: counts 1..%d\n", MAX_N);
            return 2;
        }
        if (ns[nn] > nmax) nmax = ns[nn];
        nn++;
        p = strchr(p, ',');
        if (!p) break;
        p++;
    }
    int is_gpu;
    double free0 = free_bytes(backend, &is_gpu);

    vox_options o;
    vox_options_default(&o);
    o.backend = backend;
    o.threads = threads;
    o.verbose = 0;
    o.kv_dtype = kv;
    vox_ctx *plain = vox_open(dir, &o);
    if (!plain) {
        fprintf(stderr, "streams: %s\n", vox_last_error());
        return 1;
    }
    float *audio;
    int64_t n_audio;
    if (vox_audio_load(wav, vox_sample_rate(plain), &audio, &n_audio) != 0 || n_audio < PIECE) {
        fprintf(stderr, "streams: %s\n", vox_last_error());
        return 1;
    }
    /* baseline 1: one stream alone on a plain context, fed as fast as it decodes */
    vox_stream *one = vox_stream_new(plain, NULL, NULL);
    int64_t n1 = n_audio < 16000 * 20 ? n_audio : 16000 * 20;
    for (int64_t off = 0; one && off < n1; off += PIECE) {
        vox_stream_feed(one, audio + off, (size_t)(n1 - off < PIECE ? n1 - off : PIECE));
        vox_token t;
        while (vox_stream_next(one, &t)) {}
    }
    vox_stats st1;
    vox_stream_stats(one, &st1);
    double single_step = st1.steps ? st1.decode_ms / st1.steps : 0;
    vox_stream_free(one);
    vox_close(plain);

    /* the memory-bound counts from the engine's plan */
    double mw[3] = {0};
    const int windows[3] = {8192, 2048, 0};
    int model_window = 0;
    o.max_streams = nmax;
    if (!max_batch) max_batch = nmax < VOX_MAX_BATCH ? nmax : VOX_MAX_BATCH; /* the library's default */
    o.max_batch = max_batch;
    o.tick_ms = tick_ms;
    o.kv_window = kv_window; /* the serving contexts' decoder window (0: the model's) */
    vox_ctx *srv = vox_open(dir, &o);
    if (!srv) {
        fprintf(stderr, "streams: %s\n", vox_last_error());
        return 1;
    }
    {
        vox_model mm;
        if (vox_model_load(&mm, dir) == 0) {
            const int delay_tokens = vox_delay_ms(srv) / PERIOD_MS, L = 1 + mm.tok.left_pad_tokens + delay_tokens;
            const int chunk = is_gpu ? VOX_CUDA_CHUNK_TOKENS : VOX_CPU_CHUNK_TOKENS;
            model_window = mm.cfg.dec.sliding_window;
            for (int k = 0; k < 3; k++) {
                int W = windows[k] ? windows[k] : model_window;
                vox_need nd = vox_memory_plan(&mm, L, chunk, 1, W, !strcmp(kv, "bf16") ? 2 : 4, chunk > 16 ? 16 : chunk,
                                              max_batch);
                mw[k] = (free0 - nd.weights - nd.workspace) / nd.per_stream;
            }
            vox_model_free(&mm);
        }
    }
    vox_ctx *unb = NULL;
    if (baseline) {
        o.max_batch = 1;
        unb = vox_open(dir, &o);
        if (!unb) fprintf(stderr, "streams: baseline context: %s (skipped)\n", vox_last_error());
    }
    const int tick = tick_ms < 0 ? 0 : tick_ms ? tick_ms : VOX_TICK_MS;
    printf("bench streams: %s, %s, KV %s, %.0f s per run, max batch %d, tick gate %d ms, audio %s\n",
           vox_backend_name(srv), dir, kv, seconds, max_batch, tick, wav);
    printf("single stream (plain context): %.2f ms per decoder step\n", single_step);
    printf("memory-bound streams M(W) = (free %s %.2f GiB - weights - workspace) / per-stream: M(8192) %.0f, "
           "M(2048) %.0f, M(%d, the model's) %.0f\n",
           is_gpu ? "VRAM" : "RAM", free0 / 1073741824.0, mw[0], mw[1], model_window, mw[2]);
    if (offline) { /* step times per batch size, no pacing */
        for (int k = 0; k < nn; k++) {
            vox_serve_stats d;
            double w = run_offline(srv, ns[k], audio, n_audio, seconds, &d);
            if (w < 0) return 1;
            print_offline("batched", ns[k], w, &d);
            if (unb) {
                w = run_offline(unb, ns[k], audio, n_audio, seconds, &d);
                if (w < 0) return 1;
                print_offline("unbatched", ns[k], w, &d);
            }
            fflush(stdout);
        }
        vox_close(unb);
        vox_close(srv);
        free(audio);
        return 0;
    }
    printf("%-9s %5s  %-4s %9s %9s %9s %8s %10s %9s %8s %9s\n", "mode", "N", "rt", "p50 ms", "p95 ms", "p99 ms",
           "lag s", "mean batch", "step ms", "tokens", "mem MB");
    run_result rb[64], ru[64];
    int best = 0;
    for (int k = 0; k < nn; k++) {
        if (run_n(srv, ns[k], audio, n_audio, seconds, &rb[k]) != 0) return 1;
        print_row(stdout, "batched", &rb[k]);
        if (rb[k].kept && rb[k].p95 <= 150 && ns[k] > best) best = ns[k];
        if (unb) {
            if (run_n(unb, ns[k], audio, n_audio, seconds, &ru[k]) != 0) return 1;
            print_row(stdout, "unbatched", &ru[k]);
        }
        fflush(stdout);
    }
    printf("step time by batch size (batched runs): ");
    for (int b = 1; b < VOX_BATCH_BINS; b++) {
        double ms = 0;
        long long c = 0;
        for (int k = 0; k < nn; k++) {
            ms += rb[k].step_ms_by_batch[b] * rb[k].steps_by_batch[b];
            c += rb[k].steps_by_batch[b];
        }
        if (c) printf("B=%d%s %.2f ms  ", b, b == VOX_BATCH_BINS - 1 ? "+" : "", ms / c);
    }
    printf("\nlargest N with p95 <= 150 ms in real time: %d\n", best);
    if (json) {
        FILE *j = fopen(json, "w");
        if (!j) {
            fprintf(stderr, "streams: cannot write %s\n", json);
            return 1;
        }
        vox_buf qb = {0}, qd = {0}, qk = {0}; /* strings as JSON, whatever bytes they hold */
        vox_json_quote(&qb, vox_backend_name(srv), strlen(vox_backend_name(srv)));
        vox_json_quote(&qd, dir, strlen(dir));
        vox_json_quote(&qk, kv, strlen(kv));
        fprintf(j, "{\n  \"backend\": %.*s, \"model\": %.*s, \"kv_dtype\": %.*s, \"seconds\": %.1f, \"max_batch\": %d, "
                   "\"tick_ms\": %d,\n",
                (int)qb.len, qb.data, (int)qd.len, qd.data, (int)qk.len, qk.data, seconds, max_batch, tick);
        vox_buf_free(&qb), vox_buf_free(&qd), vox_buf_free(&qk);
        fprintf(j, "  \"single_stream_step_ms\": %.4f, \"free_bytes\": %.0f, \"memory_bound_streams\": {\"8192\": %.1f, "
                   "\"2048\": %.1f}, \"model_window\": %d, \"memory_bound_streams_model_window\": %.1f,\n",
                single_step, free0, mw[0], mw[1], model_window, mw[2]);
        fprintf(j, "  \"largest_n_p95_150ms\": %d,\n  \"runs\": [\n", best);
        for (int k = 0; k < nn; k++) {
            json_row(j, "batched", &rb[k], !unb && k == nn - 1);
            if (unb) json_row(j, "unbatched", &ru[k], k == nn - 1);
        }
        fprintf(j, "  ]\n}\n");
        fclose(j);
    }
    vox_close(unb);
    vox_close(srv);
    free(audio);
    return 0;
}
