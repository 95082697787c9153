/* server/server.h - what the files of `voxtral serve` share.
 *
 * Threads and the boundary between them:
 *   - the network thread (libwebsockets' one service thread: main.c, http.c,
 *     realtime.c) owns every connection (struct lws *) and parses requests;
 *   - the engine thread (engine.c) owns the vox_ctx and every vox_stream.
 * They share only `srv_session`s, and inside one only its two queues: input
 * (audio samples and commit marks, network -> engine) and output (events,
 * engine -> network), each behind the session's mutex. The network side wakes the
 * engine with a condition variable; the engine wakes the network side with
 * lws_cancel_service() (the only lws call that is safe from another thread), and
 * the service thread then asks for a writable callback on each connection with
 * output pending. Nothing else crosses: so replacing engine.c's own round-robin
 * loop with the library's batched scheduler (issue 15) is a change to engine.c
 * alone.
 *
 * The server is a client of the public API (voxtral.h) only.
 */
#ifndef VOXTRAL_SERVER_H
#define VOXTRAL_SERVER_H

#include <pthread.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>
#include <time.h>

#include "voxtral.h"

/* ---- configuration (flags) ---- */
typedef struct {
    const char *model_dir, *host, *api_key, *tls_cert, *tls_key;
    int port, max_streams, verbose;
    vox_options opt;
    size_t max_upload;      /* bytes of one multipart body */
    size_t max_ws_message;  /* bytes of one WebSocket message */
    double max_session_s;   /* audio seconds one session may stream */
    double idle_s;          /* a WebSocket session with no message this long is closed */
    double grace_s;         /* SIGTERM: running sessions get this long to end */
    size_t max_pending_out; /* output bytes a slow client may leave unread */
} srv_config;

/* ---- a growable byte buffer (server side; the library's vox_buf is W1b's) ---- */
typedef struct {
    char *data;
    size_t len, cap;
} sbuf;
int sbuf_add(sbuf *b, const void *p, size_t n);
int sbuf_printf(sbuf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
int sbuf_json_str(sbuf *b, const char *s, size_t n); /* a JSON string literal (vox_json_quote) */
void sbuf_free(sbuf *b);
#define sbuf_lit(b, lit) sbuf_add((b), (lit), sizeof(lit) - 1) /* a string literal */

/* ---- sessions ---- */
enum { SESS_FILE = 0, SESS_LIVE = 1 };
enum { MARK_COMMIT = 1, MARK_FINAL = 2 };
enum { EV_STARTED = 1, EV_DELTA, EV_SEGMENT_DONE, EV_DONE, EV_ERROR };
enum { MAX_MARKS = 32 };

/* One output event. text is valid UTF-8 (never a split character). */
typedef struct srv_event {
    struct srv_event *next;
    int type;
    int item;        /* commit index the text belongs to (OpenAI item) */
    int status;      /* EV_ERROR: the HTTP status it maps to */
    char code[32];   /* EV_ERROR: machine-readable code */
    double duration; /* EV_DONE: audio seconds */
    int tokens;      /* EV_DONE: tokens decoded */
    sbuf text;       /* DELTA: the piece; DONE/SEGMENT_DONE: the whole text; ERROR: message */
    sbuf extra;      /* EV_DONE of a file: timed tokens as "time\tpiece\n" lines */
} srv_event;

typedef struct srv_session {
    pthread_mutex_t mu;
    atomic_int refs;
    char id[40];
    int kind;       /* SESS_FILE or SESS_LIVE */
    double t_open;  /* monotonic seconds */
    struct srv_session *eng_next; /* engine's list (engine thread only) */

    /* input: network -> engine (under mu) */
    float *in;      /* pending samples (16 kHz) */
    size_t in_len, in_cap;
    int64_t in_total;                 /* samples appended so far */
    struct { int64_t at; int type; } marks[MAX_MARKS]; /* commits in order, at sample counts */
    int n_marks;
    char *file_path;                  /* SESS_FILE: the upload, loaded by the engine */
    int closed;                       /* the client is gone: drop everything */
    int drain_now;                    /* grace period over: finish what there is */
    /* arrival times of audio for token latency: a ring of (sample count, time) */
    struct { int64_t end; double t; } arr[64];
    int n_arr;

    /* output: engine -> network (under mu) */
    srv_event *ev_head, *ev_tail;
    size_t ev_bytes;
    atomic_int want_write;            /* set by the engine, cleared by the network side */
    int engine_done;                  /* the engine released its side */
    /* for the per-session log line (written under mu by the engine) */
    double audio_s;
    int tokens, restarts;
    /* request options (set by the network side before the engine sees it) */
    int fmt;           /* response format (http.c's FMT_*) */
    int words;         /* timestamp_granularities[] word */
    char language[16]; /* the request's language (verbose_json echoes it) */
    void *eng;         /* engine-private state (engine thread only) */
} srv_session;

srv_session *srv_session_new(int kind);
void srv_session_unref(srv_session *s);
void srv_event_free(srv_event *e);
/* network side: the oldest output event (caller frees it), or NULL */
srv_event *srv_session_pop(srv_session *s);

struct lws;
struct lws_context;

/* ---- engine (engine.c) ---- */
int engine_start(const srv_config *cfg, struct lws_context *lws);
void engine_stop(void);                /* joins the thread, closes the context */
const char *engine_backend(void);
int engine_sample_rate(void);
int engine_delay_ms(void);
/* Admits a session if a stream slot is free (0), else -1. The engine takes a
 * reference; the slot is released when the engine has freed the stream. */
int engine_admit(srv_session *s);
int engine_active(void);
void engine_wake(void);
/* network side, under no lock: queue audio / marks / a file / the close */
int sess_push_audio(srv_session *s, const float *x, size_t n, size_t max_pending);
int sess_push_mark(srv_session *s, int type);
void sess_push_file(srv_session *s, char *path); /* takes path (malloc'd) */
void sess_close(srv_session *s);
size_t engine_backend_bytes(void);

/* ---- metrics (metrics.c): atomics and histograms, written by any thread ---- */
void metrics_init(void);
void metrics_session_opened(void);
void metrics_session_refused(void);
void metrics_audio_in(double seconds);
void metrics_tokens_out(int n);
void metrics_feed_time(double seconds);
void metrics_round_size(int sessions);
void metrics_token_latency(double seconds);
void metrics_request(int status);
void metrics_write(sbuf *out, int active, int max_streams, int draining, size_t backend_bytes,
                   double kv_per_stream);

/* ---- network side (main.c, http.c, realtime.c) ---- */
extern const srv_config *g_cfg;
extern atomic_int g_draining;
extern double g_kv_per_stream;  /* KV bytes of one stream (vox_model_memory) */
extern const char *g_model_id;  /* the model directory's name: GET /v1/models */
extern time_t g_start_time;
double srv_now(void);                  /* monotonic seconds */
int srv_auth_ok(struct lws *wsi);      /* Bearer key check (1 when no key set) */

/* per-connection state: one struct for HTTP and WebSocket connections (conn.h) */
typedef struct srv_conn srv_conn;
void conns_kick(void);                 /* service thread: writable requests for pending output */
void conns_tick(void);                 /* service thread: timeouts, once a second */
size_t conn_size(void);

/* multipart/form-data parser (multipart.c): streaming, any chunking */
typedef struct mp_parser mp_parser;
typedef struct {
    /* a part begins: its form name and filename (NULL when none); 0 or -1 to stop */
    int (*part)(void *user, const char *name, const char *filename);
    int (*data)(void *user, const char *p, size_t n); /* the part's bytes */
    void *user;
} mp_callbacks;
/* boundary from a Content-Type value ("multipart/form-data; boundary=..."); NULL if none */
mp_parser *mp_new(const char *content_type, const mp_callbacks *cb);
/* 0 more wanted, 1 the closing boundary was seen, -1 malformed (message in mp_error) */
int mp_feed(mp_parser *p, const char *data, size_t n);
const char *mp_error(const mp_parser *p);
void mp_free(mp_parser *p);

/* chunked transfer coding of a request body: strips the framing; 0 more wanted,
 * 1 the last chunk was seen, -1 malformed. Zero-initialise. */
typedef struct {
    int state, digits;
    uint64_t size;
    size_t line;
} chunked_dec;
int chunked_feed(chunked_dec *d, const char *in, size_t n, int (*out)(void *, const char *, size_t), void *user);

/* realtime event parser (rt_parse.c): one client JSON message -> an action */
enum { RT_ERR = -1, RT_SESSION_UPDATE = 1, RT_APPEND, RT_COMMIT, RT_COMMIT_FINAL, RT_CLEAR, RT_IGNORED };
typedef struct {
    int type;
    char code[24];     /* RT_ERR: invalid_json | invalid_audio | unknown_event */
    char msg[160];
    int16_t *pcm;      /* RT_APPEND: decoded samples (malloc'd; caller frees) */
    size_t n_pcm;
    int rate;          /* RT_SESSION_UPDATE: input rate asked (0: unchanged) */
    int transcription; /* RT_SESSION_UPDATE: OpenAI's type "transcription" */
} rt_action;
void rt_parse(const char *msg, size_t len, size_t max_samples, rt_action *a);


int server_main(int argc, char **argv);

#endif
