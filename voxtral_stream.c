/* voxtral_stream.c - the per-stream schedule: audio in (raw ring, incremental mel),
 * segments and restarts, delivery of ids (callback or pull queue), and the public
 * stream API. It never calls a backend op: the scheduler (voxtral_sched.c) runs the
 * model and calls back in here (vox_sched_*).
 *
 * Schedule (as the reference's generate): prompt = BOS + PAD x (left_pad_tokens + D),
 * L tokens, prefilled at positions 0..L-1; its last row gives the first id. Position
 * p >= L then feeds the previous id (control ids too) and gives the next one.
 * Position p runs only when audio token p+1 exists (the reference never feeds the
 * last position), so at most T - L ids come out of T audio tokens. EOS ends the
 * segment. An offline run is one stream fed the whole file and finished.
 *
 * On a serving context the client's calls only queue samples and requests (under
 * ctx->mu); everything else here runs on the scheduler thread.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "voxtral_engine.h"

static void lock(vox_ctx *ctx) {
    if (ctx->serving) pthread_mutex_lock(&ctx->mu);
}
static void unlock(vox_ctx *ctx) {
    if (ctx->serving) pthread_mutex_unlock(&ctx->mu);
}

/* ---- create / free ------------------------------------------------------------------ */
static vox_stream *stream_create(vox_ctx *ctx, vox_token_cb cb, void *user, int scratch) {
    vox_stream *s = calloc(1, sizeof *s);
    if (!s) {
        vox_error("out of memory");
        return NULL;
    }
    const vox_config *c = &ctx->model.cfg;
    s->ctx = ctx;
    s->cb = cb;
    s->user = user;
    s->scratch = scratch;
    s->slot = -1;
    s->t_start = vox_now_ms();
    s->mel = vox_mel_new(c);
    if (!s->mel) goto fail;
    s->feed_block = (int64_t)ctx->stream_chunk_tokens * c->samples_per_token;
    if (!ctx->serving || scratch) s->feed_block = (int64_t)vox_feed_block(ctx);
    s->raw_cap = 2 * (int64_t)vox_feed_block(ctx) + (int64_t)(ctx->prompt_len + 16) * c->samples_per_token;
    s->raw = malloc(sizeof(float) * s->raw_cap);
    s->mel_pend = malloc(sizeof(float) * ctx->stream_chunk_tokens * c->mel_per_token * c->num_mel_bins);
    if (!s->raw || !s->mel_pend) {
        vox_error("out of memory");
        goto fail;
    }
    if (vox_mel_begin(s->mel, (int64_t)ctx->model.tok.left_pad_tokens * c->samples_per_token) != 0) goto fail;
    if (ctx->serving && !scratch) {
        /* a slot of the context's pool, or a refusal now */
        pthread_mutex_lock(&ctx->mu);
        s->slot = vox_pool_take(&ctx->pool);
        s->id = ctx->streams_made++ & 0x1ffffe;
        if (s->slot >= 0) ctx->sstats.streams++;
        pthread_mutex_unlock(&ctx->mu);
        if (s->slot < 0) {
            vox_error("stream pool full: all %d streams of this context (max_streams) are in use",
                      ctx->opt.max_streams);
            goto fail;
        }
        s->pool = &ctx->pool;
    } else {
        /* a plain context: a pool of one slot per stream, in the caller's thread */
        if (vox_pool_alloc(ctx, &s->own_pool, 1) != 0) goto fail;
        s->pool = &s->own_pool;
        s->slot = 0;
        s->id = ctx->streams_made++ & 0x1ffffe;
    }
    s->conv_in = s->pool->conv + (size_t)s->slot * s->pool->conv_floats;
    s->conv_mid = s->conv_in + s->pool->conv_in_floats;
    s->enc_reset = 1; /* conv history zeroed before the first chunk */
    return s;
fail:
    vox_stream_free(s);
    return NULL;
}

vox_stream *vox_stream_new(vox_ctx *ctx, vox_token_cb cb, void *user) { return stream_create(ctx, cb, user, 0); }
vox_stream *vox_stream_new_scratch(vox_ctx *ctx) { return stream_create(ctx, NULL, NULL, 1); }

void vox_stream_free(vox_stream *s) {
    if (!s) return;
    vox_ctx *ctx = s->ctx;
    if (s->pool == &ctx->pool) {
        /* leave the scheduler first: wait out a tick that is working on it */
        pthread_mutex_lock(&ctx->mu);
        while (s->busy) pthread_cond_wait(&ctx->cv_done, &ctx->mu);
        if (s->registered) {
            for (int i = 0; i < ctx->n_streams; i++)
                if (ctx->streams[i] == s) {
                    ctx->streams[i] = ctx->streams[--ctx->n_streams];
                    break;
                }
        }
        vox_pool_give(&ctx->pool, s->slot);
        ctx->sstats.streams--;
        pthread_mutex_unlock(&ctx->mu);
    } else if (s->own_pool.slots) {
        vox_pool_free(ctx, &s->own_pool);
    }
    vox_mel_free(s->mel);
    free(s->topk_ids_host);
    free(s->topk_vals_host);
    free(s->forced);
    free(s->tap_buf);
    free(s->raw);
    free(s->mel_pend);
    free(s->in);
    free(s->queue);
    free(s);
}

/* ---- settings (before the first feed) ---------------------------------------------- */
static int started(const vox_stream *s) { return s->registered || s->n_samples || s->in_total || s->finished; }

int vox_stream_set_tap(vox_stream *s, vox_tap_fn fn, void *user) {
    const vox_config *c = &s->ctx->model.cfg;
    if (started(s)) return vox_error("the tap must be set before the first feed");
    size_t rows = (size_t)s->ctx->enc_chunk_tokens * c->mel_per_token;
    size_t n = rows * (c->num_mel_bins > c->enc.dim ? c->num_mel_bins : c->enc.dim);
    if ((size_t)s->ctx->enc_chunk_tokens * c->dec.dim > n) n = (size_t)s->ctx->enc_chunk_tokens * c->dec.dim;
    if ((size_t)c->vocab_size > n) n = c->vocab_size;
    free(s->tap_buf);
    s->tap_buf = malloc(n * sizeof(float));
    if (!s->tap_buf) return vox_error("out of memory");
    s->tap = fn;
    s->tap_user = user;
    return 0;
}

int vox_stream_set_topk(vox_stream *s, int k) {
    const int V = s->ctx->model.cfg.vocab_size;
    if (k < 0 || k > V || k > 1024) return vox_error("--topk %d: must be between 0 and %d", k, V < 1024 ? V : 1024);
    if (s->topk || s->n_out || started(s)) return vox_error("top-k must be set once, before decoding");
    if (!k) return 0;
    if (vox_work_topk(s->ctx, k) != 0) return -1;
    s->topk_ids_host = malloc(sizeof(int32_t) * k);
    s->topk_vals_host = malloc(sizeof(float) * k);
    if (!s->topk_ids_host || !s->topk_vals_host) return vox_error("out of memory");
    s->topk = k;
    return 0;
}

int vox_stream_force_tokens(vox_stream *s, const int *ids, int n) {
    const int V = s->ctx->model.cfg.vocab_size;
    if (started(s)) return vox_error("forced tokens must be set before the first feed");
    for (int i = 0; i < n; i++)
        if (ids[i] < 0 || ids[i] >= V) return vox_error("forced token #%d: id %d outside the vocabulary (0..%d)", i, ids[i], V - 1);
    free(s->forced);
    s->forced = malloc(sizeof(int) * (n ? n : 1));
    if (!s->forced) return vox_error("out of memory");
    memcpy(s->forced, ids, sizeof(int) * n);
    s->n_forced = n;
    return 0;
}

int vox_stream_set_continuous(vox_stream *s, int on) {
    if (on && s->n_forced) return vox_error("continuous mode and forced tokens do not mix");
    if (s->ctx->serving && started(s)) return vox_error("continuous mode must be set before the first feed");
    s->continuous = on;
    return 0;
}

/* ---- pull queue ------------------------------------------------------------------------ */
static int enqueue(vox_stream *s, const vox_token *t) {
    if (s->q_len == s->q_cap) { /* grows only while the caller does not pull */
        size_t cap = s->q_cap ? s->q_cap * 2 : 256;
        vox_token *q = malloc(sizeof *q * cap);
        if (!q) return vox_error("out of memory (%zu tokens not pulled)", s->q_len);
        for (size_t i = 0; i < s->q_len; i++) q[i] = s->queue[(s->q_head + i) % s->q_cap];
        free(s->queue);
        s->queue = q;
        s->q_head = 0;
        s->q_cap = cap;
    }
    vox_token c = *t;
    c.k = 0; /* top-k rows are not kept in pull mode */
    c.topk_ids = NULL;
    c.topk_logits = NULL;
    s->queue[(s->q_head + s->q_len++) % s->q_cap] = c;
    return 0;
}

int vox_stream_next(vox_stream *s, vox_token *tok) {
    lock(s->ctx);
    int got = s->q_len > 0;
    if (got) {
        *tok = s->queue[s->q_head];
        s->q_head = (s->q_head + 1) % s->q_cap;
        s->q_len--;
    }
    unlock(s->ctx);
    return got;
}

/* ---- stats ---------------------------------------------------------------------------------- */
static double hist_p95(const unsigned *hist, int steps) {
    unsigned want = (unsigned)ceil(0.95 * steps), seen = 0;
    for (int b = 0; b < STEP_HIST_BINS && steps; b++) {
        seen += hist[b];
        if (seen >= want) return pow(10.0, (b + 1) / 100.0 - 2.0); /* bin's upper edge */
    }
    return 0;
}

void vox_stream_stats(const vox_stream *s, vox_stats *st) {
    vox_ctx *ctx = s->ctx;
    if (ctx->serving && s->pool == &ctx->pool) {
        pthread_mutex_lock(&ctx->mu);
        *st = s->pub_stats;
        st->step_ms_p95 = hist_p95(s->pub_hist, st->steps);
        pthread_mutex_unlock(&ctx->mu);
        return;
    }
    *st = s->stats;
    st->audio_s = (double)s->n_samples / ctx->model.cfg.sampling_rate;
    st->step_ms_p95 = hist_p95(s->step_hist, s->stats.steps);
}

int vox_stream_restarts(const vox_stream *s) {
    vox_ctx *ctx = s->ctx;
    if (!ctx->serving || s->pool != &ctx->pool) return s->restarts;
    pthread_mutex_lock(&ctx->mu);
    int r = s->pub_restarts;
    pthread_mutex_unlock(&ctx->mu);
    return r;
}

/* ---- the schedule's steps (called by the scheduler) ------------------------------------- */
int vox_sched_take(vox_stream *s, const float *x, int64_t n) {
    for (int64_t i = 0; i < n;) {
        int64_t at = (s->n_samples + i) % s->raw_cap, m = s->raw_cap - at;
        if (m > n - i) m = n - i;
        memcpy(s->raw + at, x + i, sizeof(float) * m);
        i += m;
    }
    if (vox_mel_push(s->mel, x, n) != 0) return -1;
    s->n_samples += n;
    s->seg_samples += n;
    return 0;
}

int64_t vox_sched_mel_tokens(const vox_stream *s) {
    return vox_mel_ready(s->mel) / s->ctx->model.cfg.mel_per_token;
}

int vox_sched_read_mel(vox_stream *s, float *dst, int tokens) {
    const int per_tok = s->ctx->model.cfg.mel_per_token;
    int64_t got = vox_mel_read(s->mel, dst, (int64_t)tokens * per_tok);
    if (got != (int64_t)tokens * per_tok) return vox_error("mel: short read (%lld frames)", (long long)got);
    return 0;
}

int vox_sched_skip_mel(vox_stream *s, int tokens) {
    const int per_tok = s->ctx->model.cfg.mel_per_token;
    int64_t got = vox_mel_skip(s->mel, (int64_t)tokens * per_tok);
    if (got != (int64_t)tokens * per_tok) return vox_error("mel: short skip (%lld frames)", (long long)got);
    return 0;
}

/* Starts a new segment: fresh mel (left pad), encoder and decoder positions from 0
 * (the scheduler zeroes the conv history before the next chunk); re-feeds the
 * retained audio from `from` on. */
int vox_segment_begin(vox_stream *s, int64_t from) {
    vox_ctx *ctx = s->ctx;
    const vox_config *c = &ctx->model.cfg;
    if (from < s->n_samples - s->raw_cap) from = s->n_samples - s->raw_cap; /* cannot happen: feed pieces */
    if (from > s->n_samples) from = s->n_samples;
    if (vox_mel_begin(s->mel, (int64_t)ctx->model.tok.left_pad_tokens * c->samples_per_token) != 0) return -1;
    /* KV rings need no clearing: a slot is always written before it is visible */
    s->enc_reset = 1;
    s->enc_pos = 0;
    s->n_audio = 0;
    s->prefilled = 0;
    s->next_pos = 0;
    s->done = 0;
    s->nontext_run = 0;
    s->pending_tokens = 0;
    s->seg_sample0 = from;
    s->seg_samples = s->n_samples - from;
    for (int64_t i = from; i < s->n_samples;) { /* the ring may wrap: push in pieces */
        int64_t at = i % s->raw_cap, n = s->raw_cap - at;
        if (n > s->n_samples - i) n = s->n_samples - i;
        if (vox_mel_push(s->mel, s->raw + at, n) != 0) return -1;
        i += n;
    }
    return 0;
}

int vox_sched_restart(vox_stream *s) {
    if (!s->restart_why) return 0;
    const vox_config *c = &s->ctx->model.cfg;
    if (s->ctx->opt.verbose >= 2)
        fprintf(stderr, "voxtral: new segment at %.2f s (%s)\n", (double)s->restart_from / c->sampling_rate,
                s->restart_why);
    int64_t from = s->restart_from;
    /* a segment that transcribed nothing must not restart where it began */
    if (from <= s->seg_sample0) from = s->n_samples;
    s->restart_why = NULL;
    s->restarts++;
    if (vox_segment_begin(s, from) != 0) return -1;
    /* a flush or finish already queued behind the restart point ends the new segment
     * too (as it would have on a plain context, decoding up to it first) */
    return s->end_pending ? vox_segment_end(s, s->end_pending) : 0;
}

/* Marks the segment to end; the next run restarts from global sample `from`. */
static void request_restart(vox_stream *s, const char *why, int64_t from) {
    s->restart_why = why;
    s->restart_from = from;
    s->done = 1; /* no more steps in this segment */
}

int vox_sched_deliver(vox_stream *s, int64_t pos, int32_t id, const int32_t *topk_ids, const float *topk_vals) {
    vox_ctx *ctx = s->ctx;
    if (s->n_out == 0) s->stats.first_token_ms = vox_now_ms() - s->t_start;
    const vox_model *m = &ctx->model;
    const vox_config *c = &m->cfg;
    vox_token t = {0};
    t.id = id;
    t.pos = (int)pos;
    t.time_s = (double)s->seg_sample0 / c->sampling_rate + (double)(pos + 1 - ctx->prompt_len) / c->frame_rate;
    t.piece = vox_token_bytes(&m->tok, id, &t.piece_len);
    if (!t.piece) t.piece = "";
    if (s->topk) {
        memcpy(s->topk_ids_host, topk_ids, sizeof(int32_t) * s->topk);
        memcpy(s->topk_vals_host, topk_vals, sizeof(float) * s->topk);
    }
    t.k = s->topk;
    t.topk_ids = s->topk_ids_host;
    t.topk_logits = s->topk_vals_host;
    /* the last real sample audio token pos+1 needs: its last mel frame's window end */
    int64_t need = (pos + 2) * (int64_t)c->samples_per_token - c->hop_length + c->window_size / 2 -
                   (int64_t)m->tok.left_pad_tokens * c->samples_per_token;
    if (need > s->seg_samples) need = s->seg_samples;
    if (need < 0) need = 0;
    t.ready_s = (double)(s->seg_sample0 + need) / c->sampling_rate;
    s->n_out++;
    /* what the next position is fed: the forced id while forcing, else this one */
    int fed = s->n_out - 1 < s->n_forced ? s->forced[s->n_out - 1] : id;
    s->last_id = fed;
    if (s->cb) {
        s->cb(s->user, &t);
    } else {
        lock(ctx);
        int rc = enqueue(s, &t);
        unlock(ctx);
        if (rc) return -1;
    }
    s->nontext_run = t.piece_len > 0 ? 0 : s->nontext_run + 1;
    /* audio the segment has not transcribed yet starts after this position's token */
    int64_t uncommitted = s->seg_sample0 + (pos + 1 - ctx->prompt_len > 0 ? pos + 1 - ctx->prompt_len : 0) *
                                               (int64_t)c->samples_per_token;
    /* inside a flush or finish (positions whose audio came with the right pad) the
     * segment ends at its EOS or its audio */
    const int may_restart = s->continuous && !(s->end_pending && pos + 1 >= s->end_token);
    if (fed == m->tok.eos_id) {
        if (may_restart) request_restart(s, "end of segment (EOS)", uncommitted);
        else s->done = 1;
    } else if (may_restart && s->nontext_run >= MAX_SILENT_STEPS) {
        request_restart(s, "no text for a while", uncommitted);
    }
    return 0;
}

/* The segment's right pad: to a whole token, plus delay + 11 tokens (the
 * reference's offline padding). */
static int64_t segment_right_pad(const vox_stream *s) {
    const int64_t spt = s->ctx->model.cfg.samples_per_token;
    return (spt - s->seg_samples % spt) % spt + (int64_t)(s->ctx->delay_tokens + 11) * spt;
}

int vox_segment_end(vox_stream *s, int kind) {
    s->end_pending = kind;
    /* flush: nothing since the last segment, nothing to force out; finish: a segment
     * opened by a flush or restart that got no audio adds nothing (a stream that never
     * got any audio is still decoded, as the reference does) */
    if (s->seg_samples == 0 && (kind == 1 || s->n_samples > 0)) {
        s->end_token = 0;
        return 0;
    }
    s->end_token = s->n_audio + s->pending_tokens + vox_sched_mel_tokens(s);
    return vox_mel_end(s->mel, segment_right_pad(s));
}

/* ---- feeding: plain contexts run the schedule here; serving ones queue ------------------ */
static int failed_error(vox_stream *s) {
    return vox_err_raise(&s->err, "stream failed earlier: ");
}

static void mark_failed(vox_stream *s) {
    s->failed = 1;
    s->complete = 1;
    vox_err_keep(&s->err);
}

static int serve_queue(vox_stream *s, const float *x, size_t n, int flush, int finish) {
    vox_ctx *ctx = s->ctx;
    pthread_mutex_lock(&ctx->mu);
    int rc = 0;
    if (s->failed) rc = failed_error(s);
    else if (s->finish_req) rc = vox_error("stream already finished");
    else if (ctx->fatal[0]) rc = vox_error("serving context failed: %s", ctx->fatal);
    if (!rc && n) {
        if (s->in_len + n > s->in_cap) {
            size_t cap = s->in_cap ? s->in_cap : 16384;
            while (cap < s->in_len + n) cap *= 2;
            float *b = realloc(s->in, sizeof(float) * cap);
            if (!b) rc = vox_error("out of memory queueing %zu samples", n);
            else s->in = b, s->in_cap = cap;
        }
        if (!rc) {
            memcpy(s->in + s->in_len, x, sizeof(float) * n);
            s->in_len += n;
            s->in_total += (int64_t)n;
        }
    }
    if (!rc && flush) {
        if (s->n_flush == MAX_PENDING_FLUSHES) rc = vox_error("too many flushes pending (%d)", MAX_PENDING_FLUSHES);
        else s->flush_at[s->n_flush++] = s->in_total;
    }
    if (!rc && finish) s->finish_req = 1;
    if (!rc && !s->registered) {
        ctx->streams[ctx->n_streams++] = s; /* never more than the pool's slots */
        s->registered = 1;
    }
    if (!rc) vox_sched_wake(ctx);
    pthread_mutex_unlock(&ctx->mu);
    return rc;
}

static int serving_stream(const vox_stream *s) { return s->ctx->serving && s->pool == &s->ctx->pool; }

int vox_stream_feed(vox_stream *s, const float *samples, size_t n) {
    if (serving_stream(s)) return serve_queue(s, samples, n, 0, 0);
    if (s->failed) return failed_error(s);
    if (s->finished) return vox_error("stream already finished");
    /* in pieces, so the retained audio always covers what a restart re-feeds */
    for (size_t off = 0; off < n;) {
        int64_t piece = (int64_t)(n - off) < s->feed_block ? (int64_t)(n - off) : s->feed_block;
        if (vox_sched_take(s, samples + off, piece) != 0 || vox_sched_run_stream(s) != 0) {
            mark_failed(s);
            return -1;
        }
        off += (size_t)piece;
    }
    return 0;
}

/* Ends the current segment as if the audio stopped (right pad, decode it all),
 * then starts a fresh one for what comes next (plain contexts; the scheduler does
 * the same for a serving one). */
int vox_stream_flush(vox_stream *s) {
    if (serving_stream(s)) return serve_queue(s, NULL, 0, 1, 0);
    if (s->failed) return failed_error(s);
    if (s->finished) return vox_error("stream already finished");
    if (s->seg_samples == 0) return 0; /* nothing since the last segment: nothing to force out */
    int rc = vox_segment_end(s, 1) != 0 || vox_sched_run_stream(s) != 0;
    s->end_pending = 0;
    s->restart_why = NULL;
    if (rc || vox_segment_begin(s, s->n_samples) != 0) {
        mark_failed(s);
        return -1;
    }
    s->restarts++;
    return 0;
}

int vox_stream_finish(vox_stream *s) {
    if (serving_stream(s)) {
        if (s->finish_req) return 0;
        return serve_queue(s, NULL, 0, 0, 1);
    }
    if (s->failed) return failed_error(s);
    if (s->finished) return 0;
    s->finished = 1;
    s->complete = 1;
    if (vox_segment_end(s, 2) != 0 || vox_sched_run_stream(s) != 0) {
        mark_failed(s);
        return -1;
    }
    return 0;
}

int vox_stream_done(vox_stream *s) {
    lock(s->ctx);
    int d = s->complete;
    unlock(s->ctx);
    return d;
}

int vox_stream_wait(vox_stream *s) {
    vox_ctx *ctx = s->ctx;
    if (!serving_stream(s)) {
        if (s->failed) return failed_error(s);
        return s->complete ? 0 : vox_error("stream not finished (a plain context's stream is done when vox_stream_finish returns)");
    }
    pthread_mutex_lock(&ctx->mu);
    while (!s->complete && !ctx->fatal[0]) {
        if (!s->finish_req) {
            pthread_mutex_unlock(&ctx->mu);
            return vox_error("stream not finished: vox_stream_wait waits for vox_stream_finish's end");
        }
        pthread_cond_wait(&ctx->cv_done, &ctx->mu);
    }
    int rc = s->failed ? failed_error(s) : !s->complete ? vox_error("serving context failed: %s", ctx->fatal) : 0;
    pthread_mutex_unlock(&ctx->mu);
    return rc;
}
