/* cli/main.c - the voxtral command line: transcribe a file (-i), standard input
 * (--stdin) or the microphone (--mic) with a Voxtral Realtime model directory (-d).
 *
 * Text pieces go to stdout as they are decoded (flushed); diagnostics and
 * timings go to stderr. --json prints one object at the end instead.
 *
 * Output errors: a closed pipe (EPIPE, e.g. `| head`) ends the run quietly with
 * exit 0; any other failed write (ENOSPC, EIO) is an error: exit 1.
 * Ctrl-C: during -i the run stops after the current decoder step, prints the text
 * so far, says where it stopped and exits 130; during live input it ends the input
 * and finishes the text (exit 0). A second Ctrl-C exits at once.
 */
#include <ctype.h>
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <cjson/cJSON.h>

#include "voxtral.h"
#include "cli.h"


static volatile sig_atomic_t got_signal = 0, stdout_closed = 0, stdout_failed = 0;

typedef struct {
    int json, quiet, started, printed;
    int interruptible; /* -i: a signal ends the run at the next decoder step */
    FILE *out;
    /* --json accumulators */
    char *text;
    size_t text_len, text_cap;
    cJSON *tokens, *topk, *pieces;
    double last_time_s, total_s; /* audio time of the last token; the input's length */
    int topk_on, bench;
    vox_ctx *ctx;
    vox_stream *s;
    double t_run;
} cli_state;

static void interrupt_exit(cli_state *st);

/* Writes to stdout; a closed pipe stops the run quietly, any other failure is an error */
static void out_bytes(cli_state *st, const char *p, size_t n) {
    if (stdout_closed || stdout_failed) return;
    errno = 0;
    if (fwrite(p, 1, n, st->out) != n || fflush(st->out) != 0) {
        if (errno == EPIPE) stdout_closed = 1;
        else {
            stdout_failed = 1;
            cli_error("stdout: %s", strerror(errno ? errno : EIO));
        }
    }
    st->printed = 1;
}

static void on_token(void *user, const vox_token *t) {
    cli_state *st = user;
    const char *p = t->piece;
    int n = t->piece_len;
    st->last_time_s = t->time_s;
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
        out_bytes(st, p, (size_t)n);
    }
    /* -i and Ctrl-C: this step is done; stop here */
    if (got_signal && st->interruptible) interrupt_exit(st);
}

static int read_forced(const char *path, int **ids, int *n) {
    FILE *f = fopen(path, "r");
    if (!f) return cli_error("%s: %s", path, strerror(errno));
    int cap = 256, cnt = 0, bad = 0;
    int *v = malloc(sizeof(int) * cap);
    char word[64];
    while (v && fscanf(f, "%63s", word) == 1) {
        char *end;
        errno = 0;
        long long x = strtoll(word, &end, 10);
        if (*end || errno || x < 0 || x > INT32_MAX) {
            bad = 1;
            cli_error("%s: token #%d '%.40s' is not an id 0..%d", path, cnt + 1, word, INT32_MAX);
            break;
        }
        if (cnt == cap) {
            int *nv = realloc(v, sizeof(int) * (cap *= 2));
            if (!nv) {
                free(v);
                v = NULL;
                break;
            }
            v = nv;
        }
        v[cnt++] = (int)x;
    }
    fclose(f);
    if (!v) return cli_error("out of memory");
    if (bad) {
        free(v);
        return -1;
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


/* A second signal exits at once (128 + its number); the first sets the flag */
static void on_signal(int sig) {
    if (got_signal) _exit(128 + sig);
    got_signal = sig;
}
static int interrupted(void) { return got_signal != 0 || stdout_closed || stdout_failed; }

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

/* The end of stdout: the JSON object, or the plain text's newline (none when nothing
 * was printed and the run failed: then only the error line is written). `err` is
 * NULL on success. Returns 0, or -1 when writing failed (the CLI error set). */
static int emit_result(cli_state *st, const char *err, const run_figures *fig) {
    if (stdout_closed) return 0;
    if (st->json) {
        cJSON *o = cJSON_CreateObject();
        cJSON_AddStringToObject(o, "text", st->text ? st->text : "");
        cJSON_AddItemToObject(o, "tokens", st->tokens);
        cJSON_AddItemToObject(o, "pieces", st->pieces); /* text pieces with their audio time (s) */
        if (st->topk_on) cJSON_AddItemToObject(o, "topk", st->topk);
        else cJSON_Delete(st->topk);
        st->tokens = st->pieces = st->topk = NULL;
        if (err) cJSON_AddStringToObject(o, "error", err);
        if (fig) cJSON_AddItemToObject(o, "stats", stats_json(st->ctx, fig, st->bench));
        char *js = cJSON_PrintUnformatted(o);
        cJSON_Delete(o);
        if (!js) return cli_error("out of memory");
        out_bytes(st, js, strlen(js));
        out_bytes(st, "\n", 1);
        free(js);
    } else if (!err || st->printed) {
        out_bytes(st, "\n", 1);
    }
    return stdout_failed ? -1 : 0;
}

/* -i interrupted (Ctrl-C, SIGTERM): called from the token callback once the step
 * that was running has ended; the text so far, where it stopped, exit 130 */
static void interrupt_exit(cli_state *st) {
    char msg[128];
    snprintf(msg, sizeof msg, "interrupted at %.1f s of %.1f s", st->last_time_s > 0 ? st->last_time_s : 0,
             st->total_s);
    run_figures fig = figures_of(st->ctx, st->s, now_ms() - st->t_run);
    int rc = emit_result(st, msg, &fig);
    fprintf(stderr, "voxtral: %s\n", msg);
    if (rc) fprintf(stderr, "voxtral: %s\n", cli_last_error());
    fflush(stderr);
    _exit(rc ? 1 : 128 + (int)got_signal); /* not exit(): the engine is in the middle of a call */
}

/* -i FILE: what stat() can tell before libsndfile is asked (it says "Format not
 * recognised" for a directory and an empty file); after a failed probe, the name
 * of a container it cannot read and the ffmpeg line */
static int check_input(const char *path) {
    struct stat sb;
    if (stat(path, &sb) != 0)
        return cli_error("%s: %s", path, errno == ENOENT ? "no such file" : strerror(errno));
    if (S_ISDIR(sb.st_mode)) return cli_error("%s: is a directory (give an audio file)", path);
    if (S_ISREG(sb.st_mode) && sb.st_size == 0) return cli_error("%s: empty file", path);
    return 0;
}

static void explain_probe_failure(const char *path) {
    char why[1024];
    snprintf(why, sizeof why, "%s", vox_last_error());
    const char *what = NULL;
    unsigned char b[4096];
    struct stat sb;
    if (stat(path, &sb) == 0 && S_ISREG(sb.st_mode)) { /* a FIFO could not be read twice */
        FILE *f = fopen(path, "rb");
        size_t n = f ? fread(b, 1, sizeof b, f) : 0;
        if (f) fclose(f);
        what = cli_sniff(b, n, n < sizeof b);
    }
    const char *ext = strrchr(path, '.');
    static const char *foreign[] = {".m4a", ".mp4", ".aac", ".webm", ".mkv", ".mov", ".wma", ".opus", ".amr", ".3gp"};
    for (size_t i = 0; !what && ext && i < sizeof foreign / sizeof *foreign; i++)
        if (!strcasecmp(ext, foreign[i])) what = ext + 1;
    if (what && strcmp(what, "text"))
        cli_error("%s (%s is not a format libsndfile reads: convert it: ffmpeg -loglevel error -i %s -ar 16000 "
                  "-ac 1 out.wav)", why, what, path);
    else if (what)
        cli_error("%s (it is a text file)", why);
    else
        cli_error("%s", why);
}

int main(int argc, char **argv) {
    /* OpenMP reads its wait policy when the program loads: an active wait (spinning
     * threads) on a machine shared with other busy processes made the CPU decoder
     * 2.7x slower; passive waiting costs a quiet machine little. The user's own
     * setting wins; else run again with the policy in the environment. */
    if (!getenv("OMP_WAIT_POLICY") && !getenv("GOMP_SPINCOUNT") && !getenv("VOX_NO_REEXEC")) {
        setenv("OMP_WAIT_POLICY", "passive", 1);
        execv("/proc/self/exe", argv); /* on failure, go on with the default policy */
    }
    cli_opts o;
    int prc = cli_parse(argc, argv, &o);
    if (prc >= 0) return prc;
    if (o.list_devices) return cli_list_devices() == 0 ? 0 : 1;
    if (o.check) return cli_check(o.dir, o.n_inputs ? o.inputs[0] : NULL, o.opt.backend, o.opt.verbose);
    const char *input = o.n_inputs ? o.inputs[0] : NULL;
    cli_state st = {0};
    st.out = stdout;
    st.json = o.json;
    st.quiet = o.quiet;
    st.topk_on = o.topk > 0;
    st.bench = o.bench;
    signal(SIGPIPE, SIG_IGN);

    /* read the input first: a bad file fails fast, before a multi-GB load */
    float *audio = NULL;
    int64_t n_audio = 0;
    int *forced = NULL, n_forced = 0;
    if (o.forced_path && read_forced(o.forced_path, &forced, &n_forced) != 0) {
        fprintf(stderr, "voxtral: %s\n", cli_last_error());
        return 1;
    }
    if (input && (check_input(input) != 0 || (vox_audio_probe(input) != 0 && (explain_probe_failure(input), 1)))) {
        fprintf(stderr, "voxtral: %s\n", cli_last_error());
        free(forced);
        return 1;
    }
    if (o.use_stdin) {
        catch_signals();
        if (cli_stdin_begin(interrupted) != 0) {
            fprintf(stderr, "voxtral: %s\n", cli_last_error());
            free(forced);
            return 1;
        }
        if (got_signal) { /* stopped before any audio came: nothing to transcribe */
            free(forced);
            return 0;
        }
    }
    vox_ctx *ctx = vox_open(o.dir, &o.opt);
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
    st.ctx = ctx;
    st.total_s = (double)n_audio / vox_sample_rate(ctx);
    if (st.json) {
        st.tokens = cJSON_CreateArray();
        st.topk = cJSON_CreateArray();
        st.pieces = cJSON_CreateArray();
    }
    if (o.bench) {
        bench_bw_before = vox_measure_bandwidth(ctx);
        reset_peak_rss(); /* its 1 GiB buffer is not the engine's memory */
    }
    double t_run = now_ms();
    st.t_run = t_run;
    /* every failure below ends up in the CLI error (library messages passed on) */
    vox_stream *s = vox_stream_new(ctx, on_token, &st);
    st.s = s;
    int rc = s ? 0 : -1;
    if (!rc && o.topk) rc = vox_stream_set_topk(s, o.topk);
    if (!rc && forced) rc = vox_stream_force_tokens(s, forced, n_forced);
    if (!rc && (o.use_stdin || o.use_mic)) rc = vox_stream_set_continuous(s, 1);
    if (rc) cli_error("%s", vox_last_error());
    if (!rc) {
        catch_signals();
        if (input) {
            /* Fed in pieces whose encoder work takes about ENC_BUDGET_MS, at most a block
             * that fills the encoder's batches: a signal is seen at the next decoder step
             * (the token callback) or, while the encoder runs, after its piece. */
            enum { ENC_BUDGET_MS = 700, MIN_PIECE_TOKENS = 16 };
            const int64_t spt = vox_sample_rate(ctx) * 2 / 25; /* samples per 80 ms token */
            const int64_t block = (int64_t)vox_feed_block(ctx);
            int64_t piece = block;
            st.interruptible = 1;
            for (int64_t off = 0; !rc && off < n_audio && !interrupted(); off += piece) {
                vox_stats sx;
                vox_stream_stats(s, &sx);
                if (sx.encoder_tokens > 0 && sx.encoder_ms > 0) {
                    int64_t tokens = (int64_t)(ENC_BUDGET_MS / (sx.encoder_ms / sx.encoder_tokens));
                    if (tokens < MIN_PIECE_TOKENS) tokens = MIN_PIECE_TOKENS;
                    piece = tokens * spt < block ? tokens * spt : block;
                }
                int64_t n = n_audio - off < piece ? n_audio - off : piece;
                if ((rc = vox_stream_feed(s, audio + off, (size_t)n))) cli_error("%s", vox_last_error());
            }
            if (got_signal && !rc) interrupt_exit(&st); /* the signal came during the last encoder run */
        } else if (o.use_stdin) {
            rc = cli_stdin(s, vox_sample_rate(ctx), o.interval, interrupted);
        } else {
            rc = cli_mic(s, o.device, vox_sample_rate(ctx), o.interval, o.opt.verbose, interrupted);
        }
        /* even when the input failed (a device gone), finish: the audio already fed
         * is transcribed to the end; the input's error is what gets reported */
        vox_stats fed;
        vox_stream_stats(s, &fed);
        if (!stdout_closed && !stdout_failed && fed.audio_s > 0 && vox_stream_finish(s) != 0 && !rc)
            rc = cli_error("%s", vox_last_error());
    }
    double t_end = now_ms();
    if (stdout_failed) rc = -1; /* cli_error holds the write error */
    if (stdout_closed) rc = 0;
    char err[1200] = "";
    if (rc) snprintf(err, sizeof err, "%s", cli_last_error());
    peak_rss_kb = peak_rss_now();
    if (o.bench) {
        bench_bw_after = vox_measure_bandwidth(ctx);
        bench_bw = bench_bw_before > bench_bw_after ? bench_bw_before : bench_bw_after;
    }
    run_figures fig = {0};
    if (s) fig = figures_of(ctx, s, t_end - t_run);
    if (!stdout_failed && emit_result(&st, rc ? err : NULL, s ? &fig : NULL) != 0) {
        snprintf(err, sizeof err, "%s", cli_last_error());
        rc = -1;
    }
    if (rc) fprintf(stderr, "voxtral: %s\n", err);
    if (s && !st.quiet && !rc) {
        const vox_stats *sx = &fig.sx;
        fprintf(stderr,
                "timing: encoder %.1f ms (%d tokens, %.2f ms/token), prefill %.1f ms, "
                "decoder %.2f ms/step (%d steps, p95 %.2f), first token %.1f ms\n",
                sx->encoder_ms, sx->encoder_tokens,
                sx->encoder_tokens ? sx->encoder_ms / sx->encoder_tokens : 0.0, sx->prefill_ms,
                fig.step_ms, sx->steps, sx->step_ms_p95, sx->first_token_ms);
        if (o.bench && bench_bw > 0)
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
    free(o.inputs);
    cJSON_Delete(st.tokens);
    cJSON_Delete(st.pieces);
    cJSON_Delete(st.topk);
    return rc ? 1 : 0;
}
