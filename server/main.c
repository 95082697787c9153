/* server/main.c - `voxtral serve`: flags, the libwebsockets context and its service
 * loop, signals and the SIGTERM drain.
 *
 * Drain: SIGTERM (or SIGINT) makes /ready answer 503 and every new request or
 * session get 503 / an error; running sessions go on for --grace seconds; then
 * each live session's input is ended (its text is finished and sent, then the
 * connection closes). The process exits 0 once no session holds a slot (or after
 * grace + 10 s at the latest).
 */
#include <errno.h>
#include <semaphore.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "conn.h"

const srv_config *g_cfg;
atomic_int g_draining;
double g_kv_per_stream;
const char *g_model_id = "voxtral";
time_t g_start_time;

static atomic_int got_term;
static struct lws_context *lws_ctx;
static lws_sorted_usec_list_t tick_sul;

static void usage(FILE *f) {
    fprintf(f,
            "usage: voxtral serve -d DIR [options]\n"
            "  --host H             address to bind (default 127.0.0.1; 0.0.0.0 for all)\n"
            "  --port N             TCP port (default 8000; 0 picks a free one)\n"
            "  --max-streams N      concurrent sessions (files and live; default 8)\n"
            "  --api-key KEY        require 'Authorization: Bearer KEY' (all routes but /health)\n"
            "  --tls-cert F --tls-key F   serve https:// and wss://\n"
            "  --delay MS, --backend B, --gpu-path P, --quant Q, --kv-window N, -t N\n"
            "                       as for transcription\n"
            "  --kv-dtype T         KV cache elements: f32 (default) or bf16 (half the memory\n"
            "                       per session: about twice the sessions)\n"
            "  --max-batch N        decoder rows per batched step (1..255; default: --max-streams,\n"
            "                       at most 128)\n"
            "  --tick-ms MS         least time between two scheduler ticks while sessions wait\n"
            "                       for their neighbours' audio (bigger batches under load;\n"
            "                       0..1000, default 20; 0 = none)\n"
            "  --max-upload MB      upload limit (default 100)\n"
            "  --max-message KB     WebSocket message limit (default 4096)\n"
            "  --max-session S      audio seconds one live session may stream (default 14400)\n"
            "  --idle S             close a live session silent this long (default 60)\n"
            "  --grace S            SIGTERM: time running sessions get to end (default 30)\n"
            "  --quiet              no per-session log lines\n");
}

static int num_arg(const char *flag, const char *v, double lo, double hi, double *out) {
    char *end;
    errno = 0;
    double x = v ? strtod(v, &end) : 0;
    if (!v || *end || errno || x < lo || x > hi) {
        fprintf(stderr, "voxtral: %s %s: must be a number %g..%g\n", flag, v ? v : "(missing)", lo, hi);
        return -1;
    }
    *out = x;
    return 0;
}

/* SIGTERM/SIGINT: the handler (any thread: OpenBLAS starts threads before main,
 * so masks cannot steer the signal) posts a semaphore; this thread wakes the
 * service loop, the one thing a handler may not do itself */
static sem_t sig_sem;

static void on_signal(int sig) {
    (void)sig;
    atomic_store(&got_term, 1);
    sem_post(&sig_sem);
}

static void *signal_thread(void *arg) {
    (void)arg;
    for (;;) {
        while (sem_wait(&sig_sem) != 0) {
        }
        lws_cancel_service(lws_ctx);
    }
    return NULL;
}

static void tick(lws_sorted_usec_list_t *sul) {
    conns_tick();
    lws_sul_schedule(lws_ctx, 0, &tick_sul, tick, 200 * LWS_US_PER_MS);
}

static const struct lws_protocols protocols[] = {
    {"voxtral", http_callback, sizeof(srv_conn), 65536, 0, NULL, 0},
    {NULL, NULL, 0, 0, 0, NULL, 0},
};

int server_main(int argc, char **argv) {
    static srv_config cfg;
    memset(&cfg, 0, sizeof cfg);
    vox_options_default(&cfg.opt);
    cfg.opt.verbose = 0;
    cfg.host = "127.0.0.1";
    cfg.port = 8000;
    cfg.max_streams = 8;
    cfg.verbose = 1;
    cfg.max_upload = (size_t)100 << 20;
    cfg.max_ws_message = (size_t)4 << 20;
    cfg.max_session_s = 4 * 3600;
    cfg.idle_s = 60;
    cfg.grace_s = 30;
    cfg.max_pending_out = (size_t)8 << 20;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        double x;
#define NUM(lo, hi) (num_arg(a, v, lo, hi, &x) ? 2 : (i++, 0))
        if (!strcmp(a, "-h") || !strcmp(a, "--help")) {
            usage(stdout);
            return 0;
        } else if (!strcmp(a, "-d") && v) cfg.model_dir = v, i++;
        else if (!strcmp(a, "--host") && v) cfg.host = v, i++;
        else if (!strcmp(a, "--api-key") && v) cfg.api_key = v, i++;
        else if (!strcmp(a, "--tls-cert") && v) cfg.tls_cert = v, i++;
        else if (!strcmp(a, "--tls-key") && v) cfg.tls_key = v, i++;
        else if (!strcmp(a, "--backend") && v) cfg.opt.backend = v, i++;
        else if (!strcmp(a, "--gpu-path") && v) cfg.opt.gpu_path = v, i++;
        else if (!strcmp(a, "--port")) { if (NUM(0, 65535)) return 2; cfg.port = (int)x; }
        else if (!strcmp(a, "--max-streams")) { if (NUM(1, 4096)) return 2; cfg.max_streams = (int)x; }
        else if (!strcmp(a, "--delay")) {
            if (NUM(80, 2400)) return 2;
            if ((int)x % 80) { fprintf(stderr, "voxtral: --delay %s: must be a multiple of 80\n", v); return 2; }
            cfg.opt.delay_ms = (int)x;
        }
        else if (!strcmp(a, "-t")) { if (NUM(1, 1024)) return 2; cfg.opt.threads = (int)x; }
        else if (!strcmp(a, "--kv-window")) { if (NUM(1, 16777216)) return 2; cfg.opt.kv_window = (int)x; }
        else if (!strcmp(a, "--max-batch")) { if (NUM(1, 255)) return 2; cfg.opt.max_batch = (int)x; }
        else if (!strcmp(a, "--tick-ms")) { if (NUM(0, 1000)) return 2; cfg.opt.tick_ms = x ? (int)x : -1; }
        else if (!strcmp(a, "--kv-dtype") && v) {
            if (strcmp(v, "f32") && strcmp(v, "bf16")) {
                fprintf(stderr, "voxtral: --kv-dtype %s: use f32 or bf16\n", v);
                return 2;
            }
            cfg.opt.kv_dtype = v, i++;
        }
        else if (!strcmp(a, "--quant") && v) {
            if (vox_quant_spec_check(v) != 0) { fprintf(stderr, "voxtral: --quant: %s\n", vox_last_error()); return 2; }
            cfg.opt.quant = v, i++;
        }
        else if (!strcmp(a, "--max-upload")) { if (NUM(0.001, 4096)) return 2; cfg.max_upload = (size_t)(x * 1048576); }
        else if (!strcmp(a, "--max-message")) { if (NUM(1, 65536)) return 2; cfg.max_ws_message = (size_t)(x * 1024); }
        else if (!strcmp(a, "--max-session")) { if (NUM(1, 1e7)) return 2; cfg.max_session_s = x; }
        else if (!strcmp(a, "--idle")) { if (NUM(0.1, 1e6)) return 2; cfg.idle_s = x; }
        else if (!strcmp(a, "--grace")) { if (NUM(0, 3600)) return 2; cfg.grace_s = x; }
        else if (!strcmp(a, "--quiet")) cfg.verbose = 0;
        else if (!strcmp(a, "--verbose")) cfg.opt.verbose = 2;
        else {
            fprintf(stderr, "voxtral: serve: unknown option or missing value '%s' (see voxtral serve --help)\n", a);
            return 2;
        }
#undef NUM
    }
    if (!cfg.model_dir) {
        fprintf(stderr, "voxtral: serve: need -d DIR (see voxtral serve --help)\n");
        return 2;
    }
    if (!!cfg.tls_cert != !!cfg.tls_key) {
        fprintf(stderr, "voxtral: serve: --tls-cert and --tls-key go together\n");
        return 2;
    }
    g_cfg = &cfg;
    g_start_time = time(NULL);
    const char *slash = strrchr(cfg.model_dir, '/');
    g_model_id = slash && slash[1] ? slash + 1 : cfg.model_dir;
    vox_memory_estimate est;
    if (vox_model_memory(cfg.model_dir, "cpu", NULL, cfg.opt.kv_window, &est) == 0) g_kv_per_stream = est.kv;

    signal(SIGPIPE, SIG_IGN);

    lws_set_log_level(LLL_ERR, NULL);
    struct lws_context_creation_info info;
    memset(&info, 0, sizeof info);
    info.port = cfg.port;
    info.iface = cfg.host;
    info.protocols = protocols;
    info.max_http_header_data = 8192;
    info.max_http_header_pool = 256;
    info.timeout_secs = 30;
    info.keepalive_timeout = 30;
    info.options = LWS_SERVER_OPTION_DISABLE_IPV6;
    info.pt_serv_buf_size = 32768;
    if (cfg.tls_cert) {
        info.options |= LWS_SERVER_OPTION_DO_SSL_GLOBAL_INIT;
        info.ssl_cert_filepath = cfg.tls_cert;
        info.ssl_private_key_filepath = cfg.tls_key;
    }
    /* the port first (a port in use fails before a multi-GB load), then the model */
    lws_ctx = lws_create_context(&info);
    if (!lws_ctx) {
        fprintf(stderr, "voxtral: serve: cannot listen on %s:%d (in use, or a bad TLS certificate/key)\n", cfg.host,
                cfg.port);
        return 1;
    }
    if (engine_start(&cfg, lws_ctx) != 0) {
        fprintf(stderr, "voxtral: %s\n", engine_backend());
        lws_context_destroy(lws_ctx);
        return 1;
    }
    sem_init(&sig_sem, 0, 0);
    pthread_t sig_th;
    if (pthread_create(&sig_th, NULL, signal_thread, NULL) == 0) pthread_detach(sig_th);
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_signal;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGINT, &sa, NULL);
    int port = cfg.port;
    struct lws_vhost *vh = lws_get_vhost_by_name(lws_ctx, "default");
    if (vh) port = lws_get_vhost_listen_port(vh);
    fprintf(stderr, "voxtral: listening on %s://%s:%d (%d streams max)\n", cfg.tls_cert ? "https" : "http", cfg.host,
            port, cfg.max_streams);
    lws_sul_schedule(lws_ctx, 0, &tick_sul, tick, 200 * LWS_US_PER_MS);

    double drain_t0 = 0;
    int forced = 0;
    while (1) {
        if (lws_service(lws_ctx, 0) < 0) break;
        if (atomic_load(&got_term) && !drain_t0) {
            drain_t0 = srv_now();
            atomic_store(&g_draining, 1);
            fprintf(stderr, "voxtral: draining: %d sessions running, %.0f s grace\n", engine_active(), cfg.grace_s);
        }
        if (drain_t0) {
            double t = srv_now() - drain_t0;
            if (!forced && t >= cfg.grace_s) {
                forced = 1;
                for (srv_conn *c = conn_first(); c; c = c->next)
                    if (c->is_ws) rt_drain(c);
            }
            if (engine_active() == 0 && conns_busy() == 0) break;
            if (t > cfg.grace_s + 10) {
                fprintf(stderr, "voxtral: drain: %d sessions still running after the grace period; exiting\n",
                        engine_active());
                break;
            }
        }
    }
    lws_sul_cancel(&tick_sul);
    /* the engine first: its release() calls lws_cancel_service(), which must not
     * meet a destroyed context; closing connections afterwards only marks sessions */
    engine_stop();
    lws_context_destroy(lws_ctx);
    fprintf(stderr, "voxtral: server stopped\n");
    return 0;
}
