/* server/engine.c - the server's engine thread: it owns the vox_ctx and every
 * vox_stream, and nothing of the network.
 *
 * Sessions reach it through engine_admit (a stream slot is taken then) and their
 * input queue (server.h); it answers through their output queue and wakes the
 * network thread with lws_cancel_service(). The context is a serving one
 * (max_streams = --max-streams): the library's scheduler thread runs the model,
 * batching every session's encoder chunks and decoder steps. Each round this thread
 * visits every session and queues its new input on its stream (a live session's
 * audio as it comes; a file a block at a time, the next once the last is decoded),
 * turns commits into flushes and the end into a finish, and takes the tokens the
 * scheduler delivered (its callback only queues them and wakes this thread), so the
 * transcript, the deltas and the events stay on this thread. A commit's item closes
 * once its flush has been decoded (vox_stream_idle), the end once the stream is done.
 * A closed session is dropped first thing in a round, so its slot is free again
 * within a round of its close.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <libwebsockets.h>

#include "conn.h"

typedef struct {
    vox_stream *st;
    vox_transcript *tr; /* the stream's text: UTF-8-safe deltas, words, segments */
    sbuf item_text, delta;
    int item, tokens;
    int64_t base;      /* session sample count at which this stream began */
    int64_t fed;       /* samples fed to this stream */
    int64_t since_mark; /* samples fed since the last commit */
    float *file;       /* SESS_FILE: the whole decoded upload */
    int64_t file_n, file_off;
    int file_loaded;
    srv_session *s;
    /* latency: a copy of the session's arrival ring, taken each round */
    struct { int64_t end; double t; } arr[64];
    int n_arr;
    double final_t;
    /* tokens from the scheduler thread (the stream's callback), taken by this one */
    pthread_mutex_t tq_mu;
    vox_token *tq, *tw; /* queued; the engine's (the buffers swap at each drain) */
    int tq_n, tq_cap, tw_cap;
    int last_pos;       /* the last token's position: a lower one begins a new segment */
    int commit_pending, final_pending, block_pending;
    double final_duration;
} eng_state;

static struct {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    srv_session *incoming; /* admitted, not yet seen by the engine */
    srv_session *list;     /* engine thread only */
    int work, stop;
    atomic_int active, closes;
    atomic_size_t backend_bytes;
    int max_streams;
    vox_ctx *ctx;
    struct lws_context *lws;
    const srv_config *cfg;
    pthread_t th;
    int started, open_rc;
    char backend[160];
    int rate, delay_ms;
    size_t block;      /* file feeds: vox_feed_block (full encoder batches) */
    size_t live_block; /* live feeds: 160 ms, so sessions interleave finely */
    float *scratch;
} E = {.mu = PTHREAD_MUTEX_INITIALIZER, .cv = PTHREAD_COND_INITIALIZER};

const char *engine_backend(void) { return E.backend; }
int engine_sample_rate(void) { return E.rate; }
int engine_delay_ms(void) { return E.delay_ms; }
int engine_active(void) { return atomic_load(&E.active); }

void engine_wake(void) {
    pthread_mutex_lock(&E.mu);
    E.work = 1;
    pthread_cond_signal(&E.cv);
    pthread_mutex_unlock(&E.mu);
}

int engine_admit(srv_session *s) {
    int a = atomic_load(&E.active);
    do {
        if (a >= E.max_streams) return -1;
    } while (!atomic_compare_exchange_weak(&E.active, &a, a + 1));
    atomic_fetch_add(&s->refs, 1);
    pthread_mutex_lock(&E.mu);
    s->eng_next = E.incoming;
    E.incoming = s;
    E.work = 1;
    pthread_cond_signal(&E.cv);
    pthread_mutex_unlock(&E.mu);
    return 0;
}

/* ---- network side: input ---- */
int sess_push_audio(srv_session *s, const float *x, size_t n, size_t max_pending) {
    pthread_mutex_lock(&s->mu);
    int rc = 0;
    if (s->in_len + n > max_pending) {
        rc = -1; /* the engine is that far behind: refuse rather than grow */
    } else {
        if (s->in_len + n > s->in_cap) {
            size_t cap = s->in_cap ? s->in_cap : 16384;
            while (cap < s->in_len + n) cap *= 2;
            float *p = realloc(s->in, sizeof(float) * cap);
            if (!p) rc = -1;
            else s->in = p, s->in_cap = cap;
        }
        if (!rc) {
            memcpy(s->in + s->in_len, x, sizeof(float) * n);
            s->in_len += n;
            s->in_total += (int64_t)n;
            int k = s->n_arr < 64 ? s->n_arr++ : 63; /* full: the oldest goes */
            if (k == 63 && s->n_arr == 64 && s->arr[63].end) memmove(s->arr, s->arr + 1, sizeof s->arr[0] * 63);
            s->arr[k].end = s->in_total;
            s->arr[k].t = srv_now();
        }
    }
    pthread_mutex_unlock(&s->mu);
    if (!rc) engine_wake();
    return rc;
}

int sess_push_mark(srv_session *s, int type) {
    pthread_mutex_lock(&s->mu);
    int rc = -1;
    /* a commit with nothing appended since the one before adds nothing */
    int dup = s->n_marks && s->marks[s->n_marks - 1].at == s->in_total &&
              (s->marks[s->n_marks - 1].type == type || type == MARK_COMMIT);
    /* the last slot is kept for the end of the input, so that a drain or a length
     * limit can always end a session whose client filled the queue with commits */
    if (dup) rc = 0;
    else if (s->n_marks < (type == MARK_FINAL ? MAX_MARKS : MAX_MARKS - 1)) {
        s->marks[s->n_marks].at = s->in_total;
        s->marks[s->n_marks].type = type;
        s->n_marks++;
        rc = 0;
    }
    pthread_mutex_unlock(&s->mu);
    engine_wake();
    return rc;
}

void sess_push_file(srv_session *s, char *path) {
    pthread_mutex_lock(&s->mu);
    free(s->file_path);
    s->file_path = path;
    pthread_mutex_unlock(&s->mu);
    engine_wake();
}

void sess_close(srv_session *s) {
    pthread_mutex_lock(&s->mu);
    s->closed = 1;
    pthread_mutex_unlock(&s->mu);
    atomic_fetch_add(&E.closes, 1);
    engine_wake();
}

static void release(srv_session *s, const char *why);

/* a close with audio not yet transcribed and no final commit: the client vanished */
static const char *close_reason(srv_session *s, size_t pending) {
    eng_state *g = s->eng;
    return pending || (g && g->st && g->since_mark) ? "client gone mid-stream" : "closed";
}

/* releases every closed session now (between two feeds: a slot is free within one) */
static void sweep_closed(void) {
    if (!atomic_exchange(&E.closes, 0)) return;
    for (srv_session **pp = &E.list; *pp;) {
        srv_session *s = *pp;
        pthread_mutex_lock(&s->mu);
        int closed = s->closed;
        size_t pending = s->in_len;
        pthread_mutex_unlock(&s->mu);
        if (!closed) {
            pp = &s->eng_next;
            continue;
        }
        *pp = s->eng_next;
        release(s, close_reason(s, pending));
    }
}

/* ---- engine side: output ---- */
static srv_event *ev_new(int type, int item) {
    srv_event *e = calloc(1, sizeof *e);
    if (e) e->type = type, e->item = item;
    return e;
}

static void push(srv_session *s, srv_event *e) {
    if (!e) return;
    pthread_mutex_lock(&s->mu);
    srv_event *t = s->ev_tail;
    if (e->type == EV_DELTA && t && t->type == EV_DELTA && t->item == e->item) {
        /* not sent yet: one larger delta (keeps a slow client's queue short) */
        if (sbuf_add(&t->text, e->text.data, e->text.len) == 0) s->ev_bytes += e->text.len;
        srv_event_free(e);
    } else {
        if (t) t->next = e;
        else s->ev_head = e;
        s->ev_tail = e;
        s->ev_bytes += e->text.len + e->extra.len;
    }
    pthread_mutex_unlock(&s->mu);
    atomic_store(&s->want_write, 1);
    lws_cancel_service(E.lws);
}

static void push_error(srv_session *s, int item, int status, const char *code, const char *msg) {
    srv_event *e = ev_new(EV_ERROR, item);
    if (!e) return;
    e->status = status;
    snprintf(e->code, sizeof e->code, "%s", code);
    vox_buf clean = {0}; /* library messages may quote file names: any bytes */
    if (vox_utf8_decode(msg, strlen(msg), &clean) == 0) sbuf_add(&e->text, clean.data, clean.len);
    vox_buf_free(&clean);
    push(s, e);
}

static void flush_delta(eng_state *g) {
    if (!g->delta.len) return;
    srv_event *e = ev_new(EV_DELTA, g->item);
    if (e) {
        e->text = g->delta;
        memset(&g->delta, 0, sizeof g->delta);
        push(g->s, e);
    } else {
        g->delta.len = 0;
    }
}

static double arrival_of(eng_state *g, int64_t sample) {
    for (int i = 0; i < g->n_arr; i++)
        if (g->arr[i].end >= sample) return g->arr[i].t;
    return g->final_t > 0 ? g->final_t : (g->n_arr ? g->arr[g->n_arr - 1].t : 0);
}

/* text added to the transcript by its last call: into the pending delta and the item */
static void take_delta(eng_state *g) {
    size_t n;
    const char *d = vox_transcript_delta(g->tr, &n);
    if (!n) return;
    sbuf_add(&g->delta, d, n);
    sbuf_add(&g->item_text, d, n);
}

static void on_token(void *user, const vox_token *t) {
    eng_state *g = user;
    g->tokens++;
    if (vox_transcript_add(g->tr, t) == 0) take_delta(g);
    if (g->s->kind == SESS_LIVE) {
        /* the sample whose arrival completed the token's input (the library's ready_s) */
        int64_t need = g->base + (int64_t)(t->ready_s * E.rate);
        double at = arrival_of(g, need);
        if (at > 0) metrics_token_latency(srv_now() - at);
    }
}

/* the scheduler thread: queue the token, wake the engine (no library calls here) */
static void on_token_cb(void *user, const vox_token *t) {
    eng_state *g = user;
    pthread_mutex_lock(&g->tq_mu);
    if (g->tq_n == g->tq_cap) {
        int cap = g->tq_cap ? 2 * g->tq_cap : 64; /* grows to the burst size, then stays */
        vox_token *p = realloc(g->tq, sizeof *p * (size_t)cap);
        if (p) g->tq = p, g->tq_cap = cap;
    }
    if (g->tq_n < g->tq_cap) {
        vox_token c = *t;
        c.k = 0, c.topk_ids = NULL, c.topk_logits = NULL; /* piece: the vocabulary's, valid until close */
        g->tq[g->tq_n++] = c;
    }
    pthread_mutex_unlock(&g->tq_mu);
    engine_wake();
}

/* the tokens delivered so far into the transcript (a position lower than the last
 * begins a new segment: a continuous-mode restart or the audio after a commit) */
static void drain_tokens(eng_state *g) {
    pthread_mutex_lock(&g->tq_mu); /* take the queue whole: the callback fills the other buffer */
    vox_token *t = g->tq;
    int cap = g->tq_cap, n = g->tq_n;
    g->tq = g->tw, g->tq_cap = g->tw_cap, g->tq_n = 0;
    g->tw = t, g->tw_cap = cap;
    pthread_mutex_unlock(&g->tq_mu);
    for (int i = 0; i < n; i++) {
        if (g->last_pos >= 0 && g->tw[i].pos <= g->last_pos && vox_transcript_break(g->tr) == 0) take_delta(g);
        g->last_pos = g->tw[i].pos;
        on_token(g, &g->tw[i]);
    }
    flush_delta(g);
}

static int ensure_stream(eng_state *g) {
    if (g->st) return 0;
    g->tr = vox_transcript_new(NULL);
    g->last_pos = -1;
    g->commit_pending = g->final_pending = g->block_pending = 0;
    g->st = g->tr ? vox_stream_new(E.ctx, on_token_cb, g) : NULL;
    if (g->st && g->s->kind == SESS_LIVE && vox_stream_set_continuous(g->st, 1) != 0) {
        vox_stream_free(g->st);
        g->st = NULL;
    }
    if (!g->st) {
        vox_transcript_free(g->tr);
        g->tr = NULL;
        return -1;
    }
    g->fed = g->since_mark = 0;
    g->tokens = 0;
    g->item_text.len = 0;
    return 0;
}

static void end_stream(eng_state *g) {
    if (!g->st) return;
    vox_stats st;
    vox_stream_stats(g->st, &st);
    pthread_mutex_lock(&g->s->mu);
    g->s->audio_s += st.audio_s;
    g->s->tokens += g->tokens;
    g->s->restarts += vox_stream_restarts(g->st);
    pthread_mutex_unlock(&g->s->mu);
    metrics_tokens_out(g->tokens);
    vox_stream_free(g->st); /* the scheduler is done with it: no callback after this */
    g->st = NULL;
    g->tq_n = 0;
    g->commit_pending = g->final_pending = g->block_pending = 0;
    vox_transcript_free(g->tr);
    g->tr = NULL;
    g->base += g->fed;
    g->fed = g->since_mark = 0;
}

static void fail_stream(eng_state *g, const char *what) {
    char msg[1200];
    snprintf(msg, sizeof msg, "%s: %s", what, vox_last_error());
    flush_delta(g);
    push_error(g->s, g->item, 500, "processing_error", msg);
    end_stream(g); /* the session goes on: the next audio starts a fresh stream */
    g->item_text.len = 0;
}

static int feed(eng_state *g, const float *x, size_t n) {
    if (ensure_stream(g) != 0) {
        fail_stream(g, "stream");
        return -1;
    }
    double t0 = srv_now();
    int rc = vox_stream_feed(g->st, x, n);
    metrics_feed_time(srv_now() - t0);
    g->fed += (int64_t)n;
    g->since_mark += (int64_t)n;
    if (rc) {
        fail_stream(g, "feed");
        return -1;
    }
    return 0;
}

/* OpenAI commit: force out what is pending (queued: the item closes in commit_done
 * once the flush has been decoded) */
static void commit_done(eng_state *g);
static void do_commit(eng_state *g) {
    if (g->st && vox_stream_flush(g->st) != 0) {
        fail_stream(g, "commit");
        return;
    }
    if (g->st) {
        g->commit_pending = 1;
        return;
    }
    commit_done(g);
}

static void commit_done(eng_state *g) {
    g->commit_pending = 0;
    if (g->st) {
        drain_tokens(g);
        if (vox_transcript_break(g->tr) == 0) take_delta(g);
    }
    g->since_mark = 0;
    flush_delta(g);
    srv_event *e = ev_new(EV_SEGMENT_DONE, g->item);
    if (e) sbuf_add(&e->text, g->item_text.data ? g->item_text.data : "", g->item_text.len);
    push(g->s, e);
    g->item++;
    g->item_text.len = 0;
}

/* the input has ended: finish, send the whole text (a file: in its response format) */
static void do_final(eng_state *g, double duration) {
    if (ensure_stream(g) != 0) {
        fail_stream(g, "stream");
        return;
    }
    if (duration < 0) duration = (double)g->fed / E.rate;
    vox_transcript_set_duration(g->tr, duration);
    if (vox_stream_finish(g->st) != 0) { /* queued: final_done once the stream is done */
        fail_stream(g, "finish");
        return;
    }
    g->final_pending = 1;
    g->final_duration = duration;
}

static void final_done(eng_state *g) {
    double duration = g->final_duration;
    g->final_pending = 0;
    drain_tokens(g);
    if (vox_stream_wait(g->st) != 0 || vox_transcript_end(g->tr, duration) != 0) {
        fail_stream(g, "finish");
        return;
    }
    take_delta(g);
    flush_delta(g);
    if (g->s->kind == SESS_LIVE && g->item_text.len) { /* an OpenAI item still open */
        srv_event *c = ev_new(EV_SEGMENT_DONE, g->item);
        if (c) sbuf_add(&c->text, g->item_text.data, g->item_text.len);
        push(g->s, c);
        g->item++;
    }
    srv_event *e = ev_new(EV_DONE, g->item);
    if (e) {
        size_t n;
        const char *text = vox_transcript_text(g->tr, &n);
        sbuf_add(&e->text, text, n);
        e->tokens = g->tokens;
        e->duration = duration;
        int f = g->s->fmt;
        if (g->s->kind == SESS_FILE && f != FMT_JSON && f != FMT_TEXT) {
            vox_buf out = {0};
            vox_write_options wo = {.language = g->s->language[0] ? g->s->language : NULL, .omit_words = !g->s->words};
            vox_format vf = f == FMT_SRT ? VOX_FORMAT_SRT : f == FMT_VTT ? VOX_FORMAT_VTT : VOX_FORMAT_JSON;
            if (vox_transcript_write(g->tr, vf, &wo, &out) == 0) sbuf_add(&e->extra, out.data, out.len);
            else e->type = EV_ERROR, e->status = 500, snprintf(e->code, sizeof e->code, "server_error");
            vox_buf_free(&out);
        }
    }
    end_stream(g);
    push(g->s, e);
    g->item_text.len = 0;
}

/* the session's engine side ends: stream freed, slot back, one log line */
static void release(srv_session *s, const char *why) {
    eng_state *g = s->eng;
    if (g) {
        end_stream(g);
        sbuf_free(&g->item_text);
        sbuf_free(&g->delta);
        free(g->file);
        free(g->tq);
        free(g->tw);
        pthread_mutex_destroy(&g->tq_mu);
        free(g);
        s->eng = NULL;
    }
    pthread_mutex_lock(&s->mu);
    s->engine_done = 1;
    double audio = s->audio_s;
    int tokens = s->tokens, restarts = s->restarts;
    pthread_mutex_unlock(&s->mu);
    atomic_fetch_sub(&E.active, 1);
    if (E.cfg->verbose)
        fprintf(stderr, "voxtral: session %s %s: %.2f s audio, %d tokens, %d restarts, %.2f s, %s\n", s->id,
                s->kind == SESS_FILE ? "file" : "live", audio, tokens, restarts, srv_now() - s->t_open, why);
    atomic_store(&s->want_write, 1); /* the network side logs and may close */
    lws_cancel_service(E.lws);
    srv_session_unref(s);
}

/* One turn of one session. Returns 1 when it did work, 0 when idle, 2 when it waits
 * on the scheduler (a commit's flush, the end, a file's block), -1 released. */
static int turn(srv_session *s) {
    eng_state *g = s->eng;
    if (!g) {
        g = s->eng = calloc(1, sizeof *g);
        if (!g) {
            push_error(s, 0, 500, "processing_error", "out of memory");
            release(s, "out of memory");
            return -1;
        }
        g->s = s;
        g->last_pos = -1;
        pthread_mutex_init(&g->tq_mu, NULL);
    }
    if (g->st) drain_tokens(g);
    if (g->st && (g->commit_pending || g->final_pending || g->block_pending)) {
        pthread_mutex_lock(&s->mu);
        int closed = s->closed;
        size_t pending = s->in_len;
        pthread_mutex_unlock(&s->mu);
        if (closed) {
            release(s, close_reason(s, pending));
            return -1;
        }
        if (g->final_pending) {
            if (!vox_stream_done(g->st)) return 2;
            final_done(g);
            if (s->kind == SESS_FILE) {
                release(s, "done"); /* a file's slot is free as soon as its text is out */
                return -1;
            }
            return 1;
        }
        if (!vox_stream_idle(g->st)) return 2;
        if (g->commit_pending) {
            commit_done(g);
            return 1;
        }
        g->block_pending = 0; /* a file's block is decoded: the next one */
    }
    size_t take = 0;
    int mark = 0;
    char *path = NULL;
    pthread_mutex_lock(&s->mu);
    int closed = s->closed;
    size_t pending = s->in_len;
    if (!closed) {
        if (s->file_path && !g->file_loaded) path = strdup(s->file_path);
        int64_t consumed = s->in_total - (int64_t)s->in_len;
        size_t avail = s->in_len;
        if (s->n_marks && s->marks[0].at - consumed < (int64_t)avail) avail = (size_t)(s->marks[0].at - consumed);
        size_t block = s->kind == SESS_LIVE ? E.live_block : E.block;
        take = avail < block ? avail : block;
        if (take) {
            memcpy(E.scratch, s->in, sizeof(float) * take);
            memmove(s->in, s->in + take, sizeof(float) * (s->in_len - take));
            s->in_len -= take;
        } else if (s->n_marks) {
            mark = s->marks[0].type;
            memmove(s->marks, s->marks + 1, sizeof s->marks[0] * (size_t)(s->n_marks - 1));
            s->n_marks--;
            g->final_t = srv_now();
        }
        memcpy(g->arr, s->arr, sizeof g->arr);
        g->n_arr = s->n_arr;
    }
    pthread_mutex_unlock(&s->mu);
    if (closed) {
        release(s, close_reason(s, pending));
        return -1;
    }
    if (s->kind == SESS_FILE) {
        if (path) {
            g->file_loaded = 1;
            if (vox_audio_load(path, E.rate, &g->file, &g->file_n) != 0) {
                push_error(s, 0, 400, "invalid_audio", vox_last_error()); /* OpenAI: 400 */
                free(path);
                release(s, "unreadable audio");
                return -1;
            }
            free(path);
            metrics_audio_in((double)g->file_n / E.rate);
            if (ensure_stream(g) != 0) {
                fail_stream(g, "stream");
                release(s, "engine error");
                return -1;
            }
            push(s, ev_new(EV_STARTED, 0));
            return 1;
        }
        if (!g->file_loaded) return 0;
        if (g->file_off < g->file_n) {
            size_t n = (size_t)(g->file_n - g->file_off) < E.block ? (size_t)(g->file_n - g->file_off) : E.block;
            if (feed(g, g->file + g->file_off, n) != 0) {
                release(s, "engine error");
                return -1;
            }
            g->file_off += (int64_t)n;
            g->block_pending = 1;
            return 1;
        }
        do_final(g, (double)g->file_n / E.rate);
        if (!g->final_pending) { /* it failed: the error event is out */
            release(s, "engine error");
            return -1;
        }
        return 1;
    }
    if (take) {
        feed(g, E.scratch, take);
        return 1;
    }
    if (mark == MARK_COMMIT) {
        do_commit(g);
        return 1;
    }
    if (mark == MARK_FINAL) {
        do_final(g, -1);
        return 1;
    }
    return 0;
}

static void *engine_main(void *arg) {
    (void)arg;
    vox_options o = E.cfg->opt;
    o.max_streams = E.max_streams; /* a serving context: the library's batched scheduler */
    E.ctx = vox_open(E.cfg->model_dir, &o);
    pthread_mutex_lock(&E.mu);
    if (!E.ctx) {
        snprintf(E.backend, sizeof E.backend, "%s", vox_last_error());
        E.open_rc = -1;
    } else {
        snprintf(E.backend, sizeof E.backend, "%s", vox_backend_name(E.ctx));
        E.rate = vox_sample_rate(E.ctx);
        E.delay_ms = vox_delay_ms(E.ctx);
        E.block = vox_feed_block(E.ctx);
        if (E.block < 1280) E.block = 1280;
        E.live_block = (size_t)E.rate * 160 / 1000;
        if (E.live_block > E.block) E.live_block = E.block;
        E.scratch = malloc(sizeof(float) * E.block);
        if (!E.scratch) E.open_rc = -1, snprintf(E.backend, sizeof E.backend, "out of memory");
    }
    E.started = 1;
    pthread_cond_broadcast(&E.cv);
    pthread_mutex_unlock(&E.mu);
    if (E.open_rc) return NULL;
    int busy = 0, waiting = 0;
    for (;;) {
        pthread_mutex_lock(&E.mu);
        /* idle: sleep until woken (input, a close, a token); a session waiting on the
         * scheduler (which signals no completion) is looked at again every 2 ms */
        while (!busy && !E.work && !E.stop) {
            if (!waiting) {
                pthread_cond_wait(&E.cv, &E.mu);
                continue;
            }
            struct timespec ts;
            clock_gettime(CLOCK_REALTIME, &ts);
            ts.tv_nsec += 2000000;
            if (ts.tv_nsec >= 1000000000) ts.tv_sec++, ts.tv_nsec -= 1000000000;
            if (pthread_cond_timedwait(&E.cv, &E.mu, &ts) != 0) break;
        }
        E.work = 0;
        int stop = E.stop;
        while (E.incoming) { /* admitted sessions join the round */
            srv_session *s = E.incoming;
            E.incoming = s->eng_next;
            s->eng_next = E.list;
            E.list = s;
        }
        pthread_mutex_unlock(&E.mu);
        if (stop) break;
        busy = waiting = 0;
        int served = 0;
        for (srv_session **pp = &E.list; *pp;) {
            srv_session *s = *pp;
            srv_session *next = s->eng_next;
            int r = turn(s);
            if (r < 0) *pp = next; /* released */
            else pp = &s->eng_next;
            if (r == 1) busy = 1, served++;
            if (r == 2) waiting = 1;
            if (atomic_load(&E.closes)) { /* restart the walk: *pp may be released */
                sweep_closed();
                pp = &E.list;
                while (*pp && *pp != next) pp = &(*pp)->eng_next;
                /* next itself may have been released: the walk then ends here and the
                 * sessions after it wait for the next round, which must come (a session
                 * waiting on the scheduler gets no wake-up: 1 in ~10 runs of 16 live
                 * sessions hung 60 s until the idle timeout) */
                busy = 1;
            }
        }
        if (served) metrics_round_size(served);
        atomic_store(&E.backend_bytes, vox_backend_bytes(E.ctx));
    }
    while (E.list) {
        srv_session *s = E.list;
        E.list = s->eng_next;
        release(s, "server stopped");
    }
    while (E.incoming) {
        srv_session *s = E.incoming;
        E.incoming = s->eng_next;
        release(s, "server stopped");
    }
    return NULL;
}

int engine_start(const srv_config *cfg, struct lws_context *lws) {
    E.cfg = cfg;
    E.lws = lws;
    E.max_streams = cfg->max_streams;
    atomic_init(&E.active, 0);
    if (pthread_create(&E.th, NULL, engine_main, NULL) != 0) return -1;
    pthread_mutex_lock(&E.mu);
    while (!E.started) pthread_cond_wait(&E.cv, &E.mu);
    pthread_mutex_unlock(&E.mu);
    if (E.open_rc) {
        pthread_join(E.th, NULL);
        return -1;
    }
    return 0;
}

size_t engine_backend_bytes(void) { return atomic_load(&E.backend_bytes); }

void engine_stop(void) {
    pthread_mutex_lock(&E.mu);
    E.stop = 1;
    pthread_cond_signal(&E.cv);
    pthread_mutex_unlock(&E.mu);
    pthread_join(E.th, NULL);
    vox_close(E.ctx);
    E.ctx = NULL;
    free(E.scratch);
}
