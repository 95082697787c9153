/* cli/main.c - the voxtral command line: transcribe a file (-i), standard input
 * (--stdin) or the microphone (--mic) with a Voxtral Realtime model directory (-d).
 *
 * Text goes to stdout as it is decoded (output.c: plain, segment lines, --json, the
 * -o* files); diagnostics and timings go to stderr. Several inputs run in turn on
 * one loaded model; without -d the default model is found (default_model).
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



static volatile sig_atomic_t got_signal = 0;

/* one input's run */
typedef struct {
    cli_sink k;
    int interruptible, bench;
    vox_ctx *ctx;
    const cli_opts *o;
    const char *name; /* the input as the user named it */
    double t_run;
} cli_run;

static void interrupt_exit(cli_run *r);

static void on_token(void *user, const vox_token *t) {
    cli_run *r = user;
    cli_sink_token(&r->k, t);
    /* -i and Ctrl-C: this step is done; stop here */
    if (got_signal && r->interruptible) interrupt_exit(r);
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
static int interrupted(void) { return got_signal != 0 || cli_stdout_closed || cli_stdout_failed; }

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

/* -i interrupted (Ctrl-C, SIGTERM): called from the token callback once the step
 * that was running has ended (or between feeds); the text so far (and the -o* files
 * of it), where it stopped, exit 130 */
static void interrupt_exit(cli_run *r) {
    char msg[128];
    cli_progress_end(&r->k);
    snprintf(msg, sizeof msg, "interrupted at %.1f s of %.1f s", r->k.last_time_s > 0 ? r->k.last_time_s : 0,
             r->k.total_s);
    run_figures fig = figures_of(r->ctx, r->k.s, now_ms() - r->t_run);
    int rc = cli_sink_end(&r->k, r->k.total_s);
    if (!rc) rc = cli_emit_result(&r->k, msg, r->k.json ? stats_json(r->ctx, &fig, r->bench) : NULL);
    if (!rc && r->o->outputs) rc = cli_write_files(&r->k, r->o, r->name);
    fprintf(stderr, "voxtral: %s\n", msg);
    if (rc) fprintf(stderr, "voxtral: %s\n", cli_last_error());
    fflush(stderr);
    _exit(rc ? 1 : 128 + (int)got_signal); /* not exit(): the engine is in the middle of a call */
}

/* Without -d: $VOXTRAL_MODEL, else samples/tiny-en beside the binary (the source
 * tree: ./voxtral or build/<cfg>/voxtral), else the installed share/voxtral/tiny-en.
 * NULL when none has a params.json. `why` says where it came from. */
static const char *default_model(char *buf, size_t n, const char **why) {
    const char *env = getenv("VOXTRAL_MODEL");
    if (env && *env) {
        *why = "$VOXTRAL_MODEL";
        return env;
    }
    char exe[3000], probe[3300];
    ssize_t len = readlink("/proc/self/exe", exe, sizeof exe - 1);
    const char *rel[] = {"/samples/tiny-en", "/../../samples/tiny-en", "/../share/voxtral/tiny-en"};
    if (len > 0) {
        exe[len] = 0;
        char *sl = strrchr(exe, '/');
        if (sl) *sl = 0;
        for (size_t i = 0; i < sizeof rel / sizeof *rel; i++) {
            snprintf(buf, n, "%s%s", exe, rel[i]);
            snprintf(probe, sizeof probe, "%s/params.json", buf);
            if (access(probe, R_OK) == 0) {
                *why = i < 2 ? "the small English model in the source tree" : "the installed small English model";
                return buf;
            }
        }
    }
#ifdef VOXTRAL_SHARE
    snprintf(buf, n, "%s/tiny-en", VOXTRAL_SHARE);
    snprintf(probe, sizeof probe, "%s/params.json", buf);
    if (access(probe, R_OK) == 0) {
        *why = "the installed small English model";
        return buf;
    }
#endif
    return NULL;
}

/* -i -: standard input (a whole file, any format libsndfile reads) into a temporary
 * file, so the loader can seek in it. 0, or -1 with the CLI error set. */
static int stdin_to_file(char *path, size_t n) {
    const char *td = getenv("TMPDIR");
    snprintf(path, n, "%s/voxtral-stdin-XXXXXX", td && *td ? td : "/tmp");
    int fd = mkstemp(path);
    if (fd < 0) return cli_error("-i -: temporary file in %s: %s", td && *td ? td : "/tmp", strerror(errno));
    char buf[65536];
    long long total = 0;
    for (;;) {
        ssize_t got = read(0, buf, sizeof buf);
        if (got < 0 && errno == EINTR && !got_signal) continue;
        if (got < 0) {
            int e = errno;
            close(fd);
            unlink(path);
            return got_signal ? cli_error("-i -: interrupted while reading stdin") : cli_error("stdin: %s", strerror(e));
        }
        if (got == 0) break;
        for (ssize_t off = 0; off < got;) {
            ssize_t w = write(fd, buf + off, (size_t)(got - off));
            if (w < 0 && errno == EINTR) continue;
            if (w < 0) {
                int e = errno;
                close(fd);
                unlink(path);
                return cli_error("-i -: %s: %s", path, strerror(e));
            }
            off += w;
        }
        total += got;
    }
    close(fd);
    if (total == 0) {
        unlink(path);
        return cli_error("no audio on stdin (it is empty)");
    }
    return 0;
}

/* Loads an input: path checks, probe (with a hint for foreign formats), decode. */
static int load_input(const char *name, const char *path, int rate, float **audio, int64_t *n) {
    if (check_input(path) != 0) return -1;
    if (vox_audio_probe(path) != 0) {
        explain_probe_failure(path);
        if (strcmp(name, path)) cli_error("%s: %s", name, cli_last_error());
        return -1;
    }
    if (vox_audio_load(path, rate, audio, n) != 0) return cli_error("%s", vox_last_error());
    return 0;
}

static void print_timing(vox_ctx *ctx, const run_figures *fig, int bench) {
    const vox_stats *sx = &fig->sx;
    fprintf(stderr,
            "timing: encoder %.1f ms (%d tokens, %.2f ms/token), prefill %.1f ms, "
            "decoder %.2f ms/step (%d steps, p95 %.2f), first token %.1f ms\n",
            sx->encoder_ms, sx->encoder_tokens, sx->encoder_tokens ? sx->encoder_ms / sx->encoder_tokens : 0.0,
            sx->prefill_ms, fig->step_ms, sx->steps, sx->step_ms_p95, sx->first_token_ms);
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
                sx->audio_s, fig->rtf, "encoder", fig->enc_ms_per_s, "measured read bandwidth", bench_bw,
                bench_bw_before, bench_bw_after, "decoder weights per step", fig->step_bytes / 1e9,
                fig->floor_ms, "decoder step", fig->step_ms, sx->step_ms_p95, fig->step_vs_floor,
                "first token", sx->first_token_ms);

}

/* Transcribes one input (a file already loaded into `audio`, or live input) on ctx.
 * 0, or -1 with the CLI error set (the error is also in --json's "error"). */
static int run_one(vox_ctx *ctx, const cli_opts *o, int index, const char *name, const float *audio,
                   int64_t n_audio, const int *forced, int n_forced, const cli_pieces *forced_pieces) {
    cli_run r = {0};
    r.ctx = ctx;
    r.o = o;
    r.name = name;
    r.bench = o->bench;
    cli_sink *k = &r.k;
    k->index = index;
    k->forced = forced ? forced_pieces : NULL;
    k->json = o->json;
    k->topk_on = o->topk > 0;
    k->live = o->use_stdin || o->use_mic;
    k->to_files_only = o->of && !strcmp(o->of, "-") && o->outputs;
    k->lines = !o->json && !k->to_files_only &&
               (o->timestamps == 1 || (o->timestamps == -1 && !k->live && isatty(1)));
    k->total_s = (double)n_audio / vox_sample_rate(ctx);
    k->progress = !k->live && (o->progress == 1 || (o->progress == -1 && !o->quiet && isatty(2) && k->total_s > 60));
    vox_text_options topt;
    vox_text_options_default(&topt);
    topt.token_ms = 80;
    topt.max_len = o->max_len;
    if (cli_sink_begin(k, &topt) != 0) return -1;
    if (o->bench) {
        bench_bw_before = vox_measure_bandwidth(ctx);
        reset_peak_rss(); /* its 1 GiB buffer is not the engine's memory */
    }
    double t_run = now_ms();
    r.t_run = t_run;
    k->t_start = t_run / 1e3;
    /* every failure below ends up in the CLI error (library messages passed on) */
    vox_stream *s = vox_stream_new(ctx, on_token, &r);
    k->s = s;
    int rc = s ? 0 : -1;
    if (!rc && o->topk) rc = vox_stream_set_topk(s, o->topk);
    if (!rc && forced) rc = vox_stream_force_tokens(s, forced, n_forced);
    if (!rc && (k->live || o->continuous)) rc = vox_stream_set_continuous(s, 1);
    if (rc) cli_error("%s", vox_last_error());
    if (!rc) {
        if (audio) {
            /* Fed in pieces whose encoder work takes about ENC_BUDGET_MS, at most a block
             * that fills the encoder's batches: a signal is seen at the next decoder step
             * (the token callback) or, while the encoder runs, after its piece. */
            enum { ENC_BUDGET_MS = 700, MIN_PIECE_TOKENS = 16 };
            const int64_t spt = vox_sample_rate(ctx) * 2 / 25; /* samples per 80 ms token */
            const int64_t block = (int64_t)vox_feed_block(ctx);
            int64_t piece = block;
            r.interruptible = 1;
            vox_transcript_set_duration(k->tr, k->total_s);
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
            if (got_signal && !rc) interrupt_exit(&r); /* the signal came during the last encoder run */
        } else if (o->use_stdin) {
            rc = cli_stdin(s, vox_sample_rate(ctx), o->interval, interrupted);
        } else {
            rc = cli_mic(s, o->device, vox_sample_rate(ctx), o->interval, o->opt.verbose, interrupted);
        }
        vox_stats fed;
        vox_stream_stats(s, &fed);
        if (k->live) {
            k->total_s = fed.audio_s;
            vox_transcript_set_duration(k->tr, fed.audio_s);
        }
        /* even when the input failed (a device gone), finish: the audio already fed
         * is transcribed to the end; the input's error is what gets reported */
        if (!cli_stdout_closed && !cli_stdout_failed && fed.audio_s > 0 && vox_stream_finish(s) != 0 && !rc)
            rc = cli_error("%s", vox_last_error());
    }
    double t_end = now_ms();
    if (cli_sink_end(k, k->total_s) != 0 && !rc) rc = -1;
    if (cli_stdout_failed) rc = -1; /* cli_error holds the write error */
    if (cli_stdout_closed) rc = 0;
    char err[1200] = "";
    if (rc) snprintf(err, sizeof err, "%s", cli_last_error());
    peak_rss_kb = peak_rss_now();
    if (o->bench) {
        bench_bw_after = vox_measure_bandwidth(ctx);
        bench_bw = bench_bw_before > bench_bw_after ? bench_bw_before : bench_bw_after;
    }
    run_figures fig = {0};
    if (s) fig = figures_of(ctx, s, t_end - t_run);
    if (!cli_stdout_failed && cli_emit_result(k, rc ? err : NULL, s && k->json ? stats_json(ctx, &fig, o->bench) : NULL) != 0) {
        snprintf(err, sizeof err, "%s", cli_last_error());
        rc = -1;
    }
    if (!rc && o->outputs && cli_write_files(k, o, name) != 0) {
        snprintf(err, sizeof err, "%s", cli_last_error());
        rc = -1;
    }
    if (rc) cli_error("%s", err);
    else if (s && !o->quiet) print_timing(ctx, &fig, o->bench);
    vox_stream_free(s);
    cli_sink_free(k);
    return rc;
}

int server_main(int argc, char **argv); /* server/main.c: `voxtral serve ...` */
static int run(cli_opts o);

/* Is the machine quiet as we start: a 1-minute load average below 0.5, i.e. no other
 * busy process for our threads (one per core by default) to contend with? */
static int machine_quiet(void) {
    double load = 1e9;
    FILE *f = fopen("/proc/loadavg", "r");
    if (f) {
        if (fscanf(f, "%lf", &load) != 1) load = 1e9;
        fclose(f);
    }
    return load < 0.5;
}

int main(int argc, char **argv) {
    /* OpenMP reads its wait policy when the program loads. Measured with
     * scripts/bench_threads.sh (full-size model, 5 s clip, CPU decoder ms/step, 2 cores):
     *   quiet machine:       passive 368, active 281, GOMP_SPINCOUNT=10000 298
     *   2 busy processes:    passive 568, active 954, GOMP_SPINCOUNT=10000 683
     * so a machine that is quiet when we start gets a bounded spin (94% of the active
     * speed, and far less lost than active if others start later), a loaded one the
     * passive wait. The user's own setting wins; else run again with the policy in the
     * environment. */
    if (!getenv("OMP_WAIT_POLICY") && !getenv("GOMP_SPINCOUNT")) {
        char self[4096];
        ssize_t n = readlink("/proc/self/exe", self, sizeof self - 1); /* its own name, not "exe" */
        if (n > 0) {
            self[n] = 0;
            if (machine_quiet()) setenv("GOMP_SPINCOUNT", "10000", 1);
            else setenv("OMP_WAIT_POLICY", "passive", 1);
            execv(self, argv); /* on failure, go on with the default policy */
        }
    }
    if (argc > 1 && !strcmp(argv[1], "serve")) return server_main(argc - 1, argv + 1);
    cli_opts o;
    int rc = cli_parse(argc, argv, &o);
    if (rc < 0) rc = run(o);
    free(o.inputs); /* the options' one allocation, whatever way run() ended */
    return rc;
}

/* Everything after the options: one model load, every input in turn. */
static int run(cli_opts o) {
    if (o.list_devices) return cli_list_devices() == 0 ? 0 : 1;
    if (o.check) return cli_check(o.dir, o.n_inputs ? o.inputs[0] : NULL, o.opt.backend, o.opt.quant, o.opt.kv_window,
                                  o.opt.verbose);
    if (o.quantize_out) {
        if (!o.dir || !o.opt.quant) {
            fprintf(stderr, "voxtral: --quantize OUT_DIR needs -d DIR and --quant q8|q4\n");
            return 2;
        }
        if (vox_quantize_dir(o.dir, o.quantize_out, o.opt.quant, o.opt.verbose) != 0) {
            fprintf(stderr, "voxtral: %s\n", vox_last_error());
            return 1;
        }
        return 0;
    }
    signal(SIGPIPE, SIG_IGN);
    catch_signals();

    /* read the inputs first: a bad file fails fast, before a multi-GB load */
    int *forced = NULL, n_forced = 0;
    if (o.forced_path && read_forced(o.forced_path, &forced, &n_forced) != 0) {
        fprintf(stderr, "voxtral: %s\n", cli_last_error());
        return 1;
    }
    char model_buf[3200];
    if (!o.dir) {
        const char *why = NULL;
        o.dir = default_model(model_buf, sizeof model_buf, &why);
        if (!o.dir) {
            fprintf(stderr, "voxtral: no model: pass -d DIR or set VOXTRAL_MODEL; get one with "
                            "scripts/download_model.sh (the real model, into models/voxtral-realtime-4b); the small "
                            "English model samples/tiny-en is not in this tree\n");
            free(forced);
            return 2;
        }
        if (!o.quiet) fprintf(stderr, "voxtral: no -d: using %s, %s\n", why, o.dir);
    }
    char stdin_path[4200] = "";
    int failed = 0, n_ok = 0;
    for (int i = 0; i < o.n_inputs; i++) {
        const char *path = o.inputs[i];
        if (!strcmp(path, "-")) {
            if (stdin_to_file(stdin_path, sizeof stdin_path) != 0) {
                fprintf(stderr, "voxtral: %s\n", cli_last_error());
                o.inputs[i] = NULL, failed++;
                continue;
            }
            path = stdin_path;
        }
        if (check_input(path) != 0 || (vox_audio_probe(path) != 0 && (explain_probe_failure(path), 1))) {
            fprintf(stderr, "voxtral: %s\n", cli_last_error());
            o.inputs[i] = NULL, failed++;
            continue;
        }
        n_ok++;
    }
    if (o.n_inputs && !n_ok) {
        if (stdin_path[0]) unlink(stdin_path);
        free(forced);
        return 1;
    }
    if (o.use_stdin) {
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
    cli_pieces fp = {0};
    vox_ctx *ctx = vox_open(o.dir, &o.opt);
    if (!ctx || (forced && cli_pieces_load(ctx, forced, n_forced, &fp) != 0)) {
        fprintf(stderr, "voxtral: %s\n", ctx ? cli_last_error() : vox_last_error());
        vox_close(ctx);
        if (stdin_path[0]) unlink(stdin_path);
        free(forced);
        return 1;
    }
    if (!o.n_inputs) {
        if (run_one(ctx, &o, 0, o.use_stdin ? "stdin" : "mic", NULL, 0, forced, n_forced, &fp) != 0) {
            fprintf(stderr, "voxtral: %s\n", cli_last_error());
            failed++;
        }
    }
    for (int i = 0; i < o.n_inputs && !got_signal && !cli_stdout_closed && !cli_stdout_failed; i++) {
        if (!o.inputs[i]) continue;
        const char *name = o.inputs[i], *path = strcmp(name, "-") ? name : stdin_path;
        float *audio = NULL;
        int64_t n_audio = 0;
        int rc = load_input(name, path, vox_sample_rate(ctx), &audio, &n_audio);
        if (path == stdin_path) unlink(stdin_path);
        if (!rc) rc = run_one(ctx, &o, i, !strcmp(name, "-") ? "stdin" : name, audio, n_audio, forced, n_forced, &fp);
        free(audio);
        if (rc) {
            fprintf(stderr, "voxtral: %s\n", cli_last_error());
            failed++;
        }
    }
    vox_close(ctx);
    cli_pieces_free(&fp);
    free(forced);
    return failed ? 1 : 0;
}
