/* server/metrics.c - counters and histograms for GET /metrics, in the Prometheus
 * text exposition format (0.0.4), written by hand: atomics, so any thread may
 * count without a lock. */
#include <stdio.h>
#include <string.h>

#include "server.h"

typedef struct {
    const char *name, *help;
    int n;
    const double *le;
    atomic_ullong count[16]; /* [i]: observations <= le[i] (not cumulative); [n]: +Inf */
    atomic_ullong total;
    _Atomic double sum;
} hist;

static const double LE_FEED[] = {0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5};
static const double LE_LAT[] = {0.01, 0.025, 0.05, 0.1, 0.15, 0.25, 0.5, 1, 2.5, 5};
static const double LE_ROUND[] = {1, 2, 4, 8, 16, 32, 64, 128, 256};

static hist H_FEED = {"voxtral_engine_feed_seconds",
                      "Engine time of one stream feed/finish call (the step work of one session in a round)",
                      11, LE_FEED, {0}, 0, 0};
static hist H_LAT = {"voxtral_token_latency_seconds",
                     "Live sessions: token out minus arrival of the sample that completed its input (vox_token.ready_s)",
                     10, LE_LAT, {0}, 0, 0};
static hist H_ROUND = {"voxtral_engine_round_sessions", "Sessions served in one engine round (batch-size analogue)",
                       9, LE_ROUND, {0}, 0, 0};

static atomic_ullong sessions_total, sessions_refused, tokens_out, req_2xx, req_4xx, req_5xx;
static _Atomic double audio_in;

static void observe(hist *h, double v) {
    int i = 0;
    while (i < h->n && v > h->le[i]) i++;
    atomic_fetch_add(&h->count[i], 1);
    atomic_fetch_add(&h->total, 1);
    double old = atomic_load(&h->sum);
    while (!atomic_compare_exchange_weak(&h->sum, &old, old + v)) {
    }
}

void metrics_init(void) {}
void metrics_session_opened(void) { atomic_fetch_add(&sessions_total, 1); }
void metrics_session_refused(void) { atomic_fetch_add(&sessions_refused, 1); }
void metrics_tokens_out(int n) { atomic_fetch_add(&tokens_out, (unsigned long long)(n > 0 ? n : 0)); }
void metrics_feed_time(double s) { observe(&H_FEED, s); }
void metrics_round_size(int n) { observe(&H_ROUND, n); }
void metrics_token_latency(double s) { observe(&H_LAT, s); }
void metrics_audio_in(double s) {
    double old = atomic_load(&audio_in);
    while (!atomic_compare_exchange_weak(&audio_in, &old, old + s)) {
    }
}
void metrics_request(int status) {
    if (status < 400) atomic_fetch_add(&req_2xx, 1);
    else if (status < 500) atomic_fetch_add(&req_4xx, 1);
    else atomic_fetch_add(&req_5xx, 1);
}

static void write_hist(sbuf *o, hist *h) {
    sbuf_printf(o, "# HELP %s %s\n# TYPE %s histogram\n", h->name, h->help, h->name);
    unsigned long long cum = 0;
    for (int i = 0; i < h->n; i++) {
        cum += atomic_load(&h->count[i]);
        sbuf_printf(o, "%s_bucket{le=\"%g\"} %llu\n", h->name, h->le[i], cum);
    }
    cum += atomic_load(&h->count[h->n]);
    sbuf_printf(o, "%s_bucket{le=\"+Inf\"} %llu\n%s_sum %.6f\n%s_count %llu\n", h->name, cum, h->name,
                atomic_load(&h->sum), h->name, cum);
}

static long rss_bytes(void) {
    FILE *f = fopen("/proc/self/statm", "r");
    long pages = 0, rss = 0;
    if (f) {
        if (fscanf(f, "%ld %ld", &pages, &rss) != 2) rss = 0;
        fclose(f);
    }
    return rss * 4096;
}

#define GAUGE(name, help, fmt, v) sbuf_printf(out, "# HELP " name " " help "\n# TYPE " name " gauge\n" name " " fmt "\n", v)
#define COUNTER(name, help, fmt, v) sbuf_printf(out, "# HELP " name " " help "\n# TYPE " name " counter\n" name " " fmt "\n", v)

void metrics_write(sbuf *out, int active, int max_streams, int draining, size_t backend_bytes, double kv_per_stream) {
    sbuf_printf(out, "# HELP voxtral_info The engine's backend\n# TYPE voxtral_info gauge\nvoxtral_info{backend=");
    const char *be = engine_backend();
    sbuf_json_str(out, be, strlen(be)); /* a quoted, escaped label value */
    sbuf_printf(out, "} 1\n");
    GAUGE("voxtral_sessions_active", "Sessions holding a stream slot", "%d", active);
    GAUGE("voxtral_sessions_max", "Stream slots (--max-streams)", "%d", max_streams);
    GAUGE("voxtral_draining", "1 while draining after SIGTERM", "%d", draining);
    COUNTER("voxtral_sessions_total", "Sessions admitted (files and live)", "%llu", atomic_load(&sessions_total));
    COUNTER("voxtral_sessions_refused_total", "Sessions refused at capacity or while draining", "%llu",
            atomic_load(&sessions_refused));
    COUNTER("voxtral_audio_seconds_total", "Audio received, seconds", "%.3f", atomic_load(&audio_in));
    COUNTER("voxtral_tokens_total", "Tokens decoded", "%llu", atomic_load(&tokens_out));
    sbuf_printf(out, "# HELP voxtral_http_responses_total HTTP responses by class\n"
                     "# TYPE voxtral_http_responses_total counter\n"
                     "voxtral_http_responses_total{class=\"2xx\"} %llu\n"
                     "voxtral_http_responses_total{class=\"4xx\"} %llu\n"
                     "voxtral_http_responses_total{class=\"5xx\"} %llu\n",
                atomic_load(&req_2xx), atomic_load(&req_4xx), atomic_load(&req_5xx));
    write_hist(out, &H_FEED);
    write_hist(out, &H_ROUND);
    write_hist(out, &H_LAT);
    GAUGE("voxtral_backend_bytes", "Backend memory held by the engine (weights, caches, workspaces)", "%zu",
          backend_bytes);
    GAUGE("voxtral_kv_bytes_in_use", "KV cache memory of the active sessions (estimate per stream x active)",
          "%.0f", kv_per_stream * active);
    GAUGE("voxtral_resident_bytes", "Resident memory of the process", "%ld", rss_bytes());
}
