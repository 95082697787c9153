/* cli/main.c - the voxtral command line: transcribe a file (-i) or standard input
 * (--stdin) with a Voxtral Realtime model directory (-d).
 *
 * Text pieces go to stdout as they are decoded (flushed); diagnostics and
 * timings go to stderr. --json prints one object at the end instead.
 */
#include <ctype.h>
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>
#include <unistd.h>

#include <cjson/cJSON.h>

#include "voxtral.h"
#include "cli.h"

static void usage(FILE *f) {
    fprintf(f,
            "usage: voxtral -d DIR (-i FILE | --stdin | --mic) [options]\n"
            "\n"
            "  -d DIR               model directory (consolidated.safetensors, params.json, tekken.json)\n"
            "  -i FILE              transcribe an audio file (WAV, FLAC, OGG, MP3, ... any rate/channels)\n"
            "  --stdin              transcribe standard input: WAV, or raw s16le 16 kHz mono\n"
            "  --mic                transcribe the microphone (PortAudio); --device N|NAME picks it,\n"
            "                       --list-devices lists them\n"
            "  --check              preflight: drivers, GPUs, memory, a smoke run (-d optional)\n"
            "  -I SEC               live input (--stdin, --mic): audio gathered per engine run (0.16)\n"
            "  --delay MS           transcription delay, 80..2400 in steps of 80 (default: model's, 480)\n"
            "  --backend B          auto (default), cpu or cuda\n"
            "  --gpu-path P         CUDA weights: auto (bf16 on sm_80+, else fp16), bf16, fp16 or fp32\n"
            "  -t N                 CPU threads (default: all cores)\n"
            "  --json               print one JSON object at the end: text, tokens (every id), topk\n"
            "  --topk K             with --json: the K best logits of every step\n"
            "  --force-tokens FILE  feed these ids (whitespace-separated) instead of the argmax\n"
            "  --bench              after the run: measure memory bandwidth, report the decoder\n"
            "                       step against its floor (stderr table; \"bench\" in --json)\n"
            "  --quiet              no diagnostics on stderr\n"
            "  --verbose            more diagnostics on stderr\n"
            "  -h, --help           this help\n");
}

static volatile sig_atomic_t got_signal = 0, stdout_closed = 0;

typedef struct {
    int json, quiet, started;
    FILE *out;
    /* --json accumulators */
    char *text;
    size_t text_len, text_cap;
    cJSON *tokens, *topk, *pieces;
} cli_state;

static void on_token(void *user, const vox_token *t) {
    cli_state *st = user;
    const char *p = t->piece;
    int n = t->piece_len;
    if (!st->started) { /* the first text piece carries the leading space of a word */
        while (n > 0 && isspace((unsigned char)*p)) p++, n--;
        if (n > 0) st->started = 1;
    }
    if (st->json) {
        cJSON_AddItemToArray(st->tokens, cJSON_CreateNumber(t->id));
        if (t->k > 0) {
            cJSON *row = cJSON_CreateArray();
            for (int i = 0; i < t->k; i++) {
                cJSON *pair = cJSON_CreateArray();
                cJSON_AddItemToArray(pair, cJSON_CreateNumber(t->topk_ids[i]));
                cJSON_AddItemToArray(pair, cJSON_CreateNumber(t->topk_logits[i]));
                cJSON_AddItemToArray(row, pair);
            }
            cJSON_AddItemToArray(st->topk, row);
        }
        if (n > 0) {
            cJSON *pc = cJSON_CreateObject();
            char *piece = strndup(p, n);
            cJSON_AddNumberToObject(pc, "time", t->time_s);
            cJSON_AddStringToObject(pc, "text", piece ? piece : "");
            free(piece);
            cJSON_AddItemToArray(st->pieces, pc);
            if (st->text_len + n + 1 > st->text_cap) {
                size_t cap = (st->text_cap + n + 1) * 2;
                char *nt = realloc(st->text, cap);
                if (!nt) return;
                st->text = nt;
                st->text_cap = cap;
            }
            memcpy(st->text + st->text_len, p, n);
            st->text_len += n;
            st->text[st->text_len] = 0;
        }
    } else if (n > 0) {
        if (fwrite(p, 1, n, st->out) != (size_t)n || fflush(st->out) != 0)
            stdout_closed = 1; /* e.g. `| head`: stop quietly */
    }
}

static int read_forced(const char *path, int **ids, int *n) {
    FILE *f = fopen(path, "r");
    if (!f) return cli_error("%s: %s", path, strerror(errno));
    int cap = 256, cnt = 0;
    int *v = malloc(sizeof(int) * cap);
    long x;
    int r;
    while (v && (r = fscanf(f, "%ld", &x)) == 1) {
        if (cnt == cap) {
            int *nv = realloc(v, sizeof(int) * (cap *= 2));
            if (!nv) break;
            v = nv;
        }
        v[cnt++] = (int)x;
    }
    int bad = !feof(f);
    fclose(f);
    if (!v) return cli_error("out of memory");
    if (bad) {
        free(v);
        return cli_error("%s: not a list of whitespace-separated token ids", path);
    }
    *ids = v;
    *n = cnt;
    return 0;
}

static double now_ms(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1e3 + ts.tv_nsec / 1e6;
}

/* --bench: read bandwidth (GB/s) measured before and after the run; the floor
 * uses the larger (a shared machine's bandwidth varies: the floor stays honest) */
static double bench_bw = 0, bench_bw_before = 0, bench_bw_after = 0;
static long peak_rss_kb = 0; /* taken right after the run, before --bench's own buffer */

/* Peak resident memory (kB): VmHWM, which reset_peak_rss() can restart (Linux);
 * elsewhere getrusage's high-water mark. */
static long peak_rss_now(void) {
    FILE *f = fopen("/proc/self/status", "r");
    char line[256];
    long kb = -1;
    while (f && fgets(line, sizeof line, f))
        if (!strncmp(line, "VmHWM:", 6)) kb = strtol(line + 6, NULL, 10);
    if (f) fclose(f);
    if (kb < 0) {
        struct rusage ru;
        getrusage(RUSAGE_SELF, &ru);
        kb = ru.ru_maxrss;
    }
    return kb;
}

static void reset_peak_rss(void) {
    FILE *f = fopen("/proc/self/clear_refs", "w");
    if (f) {
        fputs("5", f);
        fclose(f);
    }
}

/* What a run measured, and the figures derived from it: computed once, reported
 * both in --json's "stats" and in the stderr timing/bench lines. */
typedef struct {
    vox_stats sx;
    double run_ms, rtf, enc_ms_per_s, step_ms, step_bytes, floor_ms, step_vs_floor;
} run_figures;

static run_figures figures_of(vox_ctx *ctx, vox_stream *s, double run_ms) {
    run_figures f = {0};
    vox_stream_stats(s, &f.sx);
    f.run_ms = run_ms;
    f.rtf = f.sx.audio_s > 0 ? run_ms / 1e3 / f.sx.audio_s : 0;
    f.enc_ms_per_s = f.sx.audio_s > 0 ? f.sx.encoder_ms / f.sx.audio_s : 0;
    f.step_ms = f.sx.steps ? f.sx.decode_ms / f.sx.steps : 0;
    f.step_bytes = vox_step_weight_bytes(ctx);
    f.floor_ms = bench_bw > 0 ? f.step_bytes / bench_bw / 1e6 : 0;
    f.step_vs_floor = f.floor_ms > 0 ? f.step_ms / f.floor_ms : 0;
    return f;
}

static cJSON *stats_json(vox_ctx *ctx, const run_figures *f, int bench) {
    const vox_stats *sx = &f->sx;
    cJSON *o = cJSON_CreateObject();
    cJSON_AddStringToObject(o, "backend", vox_backend_name(ctx));
    cJSON_AddNumberToObject(o, "load_ms", vox_load_ms(ctx));
    cJSON_AddNumberToObject(o, "audio_s", sx->audio_s);
    cJSON_AddNumberToObject(o, "run_ms", f->run_ms);
    cJSON_AddNumberToObject(o, "rtf", f->rtf);
    cJSON_AddNumberToObject(o, "encoder_ms", sx->encoder_ms);
    cJSON_AddNumberToObject(o, "encoder_tokens", sx->encoder_tokens);
    cJSON_AddNumberToObject(o, "encoder_ms_per_audio_s", f->enc_ms_per_s);
    cJSON_AddNumberToObject(o, "prefill_ms", sx->prefill_ms);
    cJSON_AddNumberToObject(o, "steps", sx->steps);
    cJSON_AddNumberToObject(o, "step_ms_mean", f->step_ms);
    cJSON_AddNumberToObject(o, "step_ms_p95", sx->step_ms_p95);
    cJSON_AddNumberToObject(o, "first_token_ms", sx->first_token_ms);
    cJSON_AddNumberToObject(o, "peak_rss_mb", peak_rss_kb / 1024.0);
    cJSON_AddNumberToObject(o, "backend_mb", vox_backend_bytes(ctx) / 1048576.0);
    if (bench) {
        cJSON_AddNumberToObject(o, "read_bandwidth_gb_s", bench_bw);
        cJSON_AddNumberToObject(o, "read_bandwidth_before_gb_s", bench_bw_before);
        cJSON_AddNumberToObject(o, "read_bandwidth_after_gb_s", bench_bw_after);
        cJSON_AddNumberToObject(o, "step_weight_bytes", f->step_bytes);
        cJSON_AddNumberToObject(o, "step_floor_ms", f->floor_ms);
        cJSON_AddNumberToObject(o, "step_vs_floor", f->step_vs_floor);
    }
    return o;
}

static void on_signal(int sig) { got_signal = sig; }
static int interrupted(void) { return got_signal != 0 || stdout_closed; }

/* SIGINT/SIGTERM: stop reading, finish the stream and flush what was heard.
 * No SA_RESTART, so a blocking read on stdin returns at once. */
static void catch_signals(void) {
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_signal;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
}

int main(int argc, char **argv) {
    const char *dir = NULL, *input = NULL, *forced_path = NULL;
    int use_stdin = 0, use_mic = 0, topk = 0, bench = 0, check = 0;
    const char *device = NULL;
    double interval = 0.16;
    vox_options opt;
    vox_options_default(&opt);
    cli_state st = {0};
    st.out = stdout;

    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        const char *next = i + 1 < argc ? argv[i + 1] : NULL;
#define NEED_ARG()                                                             \
    do {                                                                       \
        if (!next) {                                                           \
            fprintf(stderr, "voxtral: %s needs a value (see --help)\n", a);   \
            return 2;                                                          \
        }                                                                      \
        i++;                                                                   \
    } while (0)
        if (!strcmp(a, "-h") || !strcmp(a, "--help")) {
            usage(stdout);
            return 0;
        } else if (!strcmp(a, "-d")) {
            NEED_ARG();
            dir = next;
        } else if (!strcmp(a, "-i")) {
            NEED_ARG();
            input = next;
        } else if (!strcmp(a, "--stdin")) {
            use_stdin = 1;
        } else if (!strcmp(a, "-I")) {
            NEED_ARG();
            char *end;
            interval = strtod(next, &end);
            if (*end || !(interval >= 0.01 && interval <= 60)) {
                fprintf(stderr, "voxtral: -I %s: must be 0.01..60 seconds\n", next);
                return 2;
            }
        } else if (!strcmp(a, "--mic")) {
            use_mic = 1;
        } else if (!strcmp(a, "--device")) {
            NEED_ARG();
            device = next;
        } else if (!strcmp(a, "--list-devices")) {
            return cli_list_devices() == 0 ? 0 : 1;
        } else if (!strcmp(a, "--check")) {
            check = 1;
        } else if (!strcmp(a, "--delay")) {
            NEED_ARG();
            char *end;
            long ms = strtol(next, &end, 10);
            if (*end || ms < 80 || ms > 2400 || ms % 80) {
                fprintf(stderr, "voxtral: --delay %s: must be 80..2400 ms in steps of 80\n", next);
                return 2;
            }
            opt.delay_ms = (int)ms;
        } else if (!strcmp(a, "--backend")) {
            NEED_ARG();
            if (strcmp(next, "auto") && strcmp(next, "cpu") && strcmp(next, "cuda")) {
                fprintf(stderr, "voxtral: --backend %s: use auto, cpu or cuda\n", next);
                return 2;
            }
            opt.backend = next;
        } else if (!strcmp(a, "--gpu-path")) {
            NEED_ARG();
            if (strcmp(next, "auto") && strcmp(next, "bf16") && strcmp(next, "fp16") && strcmp(next, "fp32")) {
                fprintf(stderr, "voxtral: --gpu-path %s: use auto, bf16, fp16 or fp32\n", next);
                return 2;
            }
            opt.gpu_path = next;
        } else if (!strcmp(a, "-t")) {
            NEED_ARG();
            char *end;
            long t = strtol(next, &end, 10);
            if (*end || t < 1 || t > 1024) {
                fprintf(stderr, "voxtral: -t %s: must be a thread count 1..1024\n", next);
                return 2;
            }
            opt.threads = (int)t;
        } else if (!strcmp(a, "--json")) {
            st.json = 1;
        } else if (!strcmp(a, "--topk")) {
            NEED_ARG();
            char *end;
            long k = strtol(next, &end, 10);
            if (*end || k < 1 || k > 1024) {
                fprintf(stderr, "voxtral: --topk %s: must be 1..1024\n", next);
                return 2;
            }
            topk = (int)k;
        } else if (!strcmp(a, "--force-tokens")) {
            NEED_ARG();
            forced_path = next;
        } else if (!strcmp(a, "--bench")) {
            bench = 1;
        } else if (!strcmp(a, "--quiet")) {
            opt.verbose = 0;
        } else if (!strcmp(a, "--verbose")) {
            opt.verbose = 2;
        } else {
            fprintf(stderr, "voxtral: unknown option '%s' (see --help)\n", a);
            return 2;
        }
    }
    if (check) return cli_check(dir, input, opt.verbose);
    if (!dir || (!!input + use_stdin + use_mic) != 1) {
        fprintf(stderr, "voxtral: need -d DIR and exactly one of -i FILE / --stdin / --mic (see --help)\n");
        return 2;
    }
    st.quiet = opt.verbose == 0;
    signal(SIGPIPE, SIG_IGN);

    /* read the input first: a bad file fails fast, before a multi-GB load */
    float *audio = NULL;
    int64_t n_audio = 0;
    int *forced = NULL, n_forced = 0;
    if (forced_path && read_forced(forced_path, &forced, &n_forced) != 0) {
        fprintf(stderr, "voxtral: %s\n", cli_last_error());
        return 1;
    }
    if (input && vox_audio_probe(input) != 0) {
        fprintf(stderr, "voxtral: %s\n", vox_last_error());
        free(forced);
        return 1;
    }
    vox_ctx *ctx = vox_open(dir, &opt);
    if (!ctx) {
        fprintf(stderr, "voxtral: %s\n", vox_last_error());
        free(forced);
        return 1;
    }
    if (input && vox_audio_load(input, vox_sample_rate(ctx), &audio, &n_audio) != 0) {
        fprintf(stderr, "voxtral: %s\n", vox_last_error());
        vox_close(ctx);
        free(forced);
        return 1;
    }
    if (st.json) {
        st.tokens = cJSON_CreateArray();
        st.topk = cJSON_CreateArray();
        st.pieces = cJSON_CreateArray();
    }
    if (bench) {
        bench_bw_before = vox_measure_bandwidth(ctx);
        reset_peak_rss(); /* its 1 GiB buffer is not the engine's memory */
    }
    double t_run = now_ms();
    /* every failure below ends up in the CLI error (library messages passed on) */
    vox_stream *s = vox_stream_new(ctx, on_token, &st);
    int rc = s ? 0 : -1;
    if (!rc && topk) rc = vox_stream_set_topk(s, topk);
    if (!rc && forced) rc = vox_stream_force_tokens(s, forced, n_forced);
    if (!rc && (use_stdin || use_mic)) rc = vox_stream_set_continuous(s, 1);
    if (rc) cli_error("%s", vox_last_error());
    if (!rc) {
        catch_signals();
        if (input) {
            /* fed in blocks that fill the encoder's batches; a signal stops it between them */
            int64_t block = (int64_t)vox_feed_block(ctx);
            for (int64_t off = 0; !rc && off < n_audio && !got_signal; off += block)
                if ((rc = vox_stream_feed(s, audio + off, (size_t)(n_audio - off < block ? n_audio - off : block))))
                    cli_error("%s", vox_last_error());
        } else if (use_stdin) {
            rc = cli_stdin(s, vox_sample_rate(ctx), interval, interrupted);
        } else {
            rc = cli_mic(s, device, vox_sample_rate(ctx), interval, opt.verbose, interrupted);
        }
        /* even when the input failed (a device gone), finish: the audio already fed
         * is transcribed to the end; the input's error is what gets reported */
        if (vox_stream_finish(s) != 0 && !rc) rc = cli_error("%s", vox_last_error());
    }
    double t_end = now_ms();
    int exit_code = 0;
    char err[1200] = "";
    if (rc && !stdout_closed) {
        snprintf(err, sizeof err, "%s", cli_last_error());
        exit_code = 1;
    }
    if (stdout_closed) rc = 0;
    peak_rss_kb = peak_rss_now();
    if (bench) {
        bench_bw_after = vox_measure_bandwidth(ctx);
        bench_bw = bench_bw_before > bench_bw_after ? bench_bw_before : bench_bw_after;
    }
    run_figures fig = {0};
    if (s) fig = figures_of(ctx, s, t_end - t_run);
    if (st.json) {
        cJSON *o = cJSON_CreateObject();
        cJSON_AddStringToObject(o, "text", st.text ? st.text : "");
        cJSON_AddItemToObject(o, "tokens", st.tokens);
        cJSON_AddItemToObject(o, "pieces", st.pieces); /* text pieces with their audio time (s) */
        if (topk) cJSON_AddItemToObject(o, "topk", st.topk);
        else cJSON_Delete(st.topk);
        if (rc) cJSON_AddStringToObject(o, "error", err);
        if (s) cJSON_AddItemToObject(o, "stats", stats_json(ctx, &fig, bench));
        char *js = cJSON_PrintUnformatted(o);
        if (js) printf("%s\n", js);
        free(js);
        cJSON_Delete(o);
    } else {
        fputc('\n', stdout);
    }
    fflush(stdout);
    if (rc) fprintf(stderr, "voxtral: %s\n", err);
    if (s && !st.quiet) {
        const vox_stats *sx = &fig.sx;
        fprintf(stderr,
                "timing: encoder %.1f ms (%d tokens, %.2f ms/token), prefill %.1f ms, "
                "decoder %.2f ms/step (%d steps, p95 %.2f), first token %.1f ms\n",
                sx->encoder_ms, sx->encoder_tokens,
                sx->encoder_tokens ? sx->encoder_ms / sx->encoder_tokens : 0.0, sx->prefill_ms,
                fig.step_ms, sx->steps, sx->step_ms_p95, sx->first_token_ms);
        if (bench && bench_bw > 0)
            fprintf(stderr,
                    "bench: %-28s %s\n"
                    "bench: %-28s %.1f ms\n"
                    "bench: %-28s %.2f s audio, RTF %.3f\n"
                    "bench: %-28s %.1f ms/s of audio\n"
                    "bench: %-28s %.2f GB/s (before %.2f, after the run %.2f)\n"
                    "bench: %-28s %.3f GB -> floor %.2f ms\n"
                    "bench: %-28s %.2f ms (p95 %.2f) = %.2fx floor\n"
                    "bench: %-28s %.1f ms\n",
                    "backend", vox_backend_name(ctx), "load", vox_load_ms(ctx), "end to end",
                    sx->audio_s, fig.rtf, "encoder", fig.enc_ms_per_s, "measured read bandwidth", bench_bw,
                    bench_bw_before, bench_bw_after, "decoder weights per step", fig.step_bytes / 1e9,
                    fig.floor_ms, "decoder step", fig.step_ms, sx->step_ms_p95, fig.step_vs_floor,
                    "first token", sx->first_token_ms);
    }
    vox_stream_free(s);
    vox_close(ctx);
    free(audio);
    free(forced);
    free(st.text);
    return exit_code;
}
