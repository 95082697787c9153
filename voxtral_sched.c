/* voxtral_sched.c - the scheduler: the only code that drives the backend.
 *
 * Plain context: vox_sched_run_stream runs in the caller's thread for one stream:
 * whole tokens of mel through the encoder in chunks, then every decoder step the
 * audio allows; on an async backend (CUDA) a second step is queued behind the
 * running one. Exactly the single-stream engine as before.
 *
 * Serving context: one thread; each tick it takes every registered stream's pending
 * audio and requests (under ctx->mu), then, outside the lock: batched encoder
 * chunks (up to stream_chunk_tokens per stream, enc_chunk_tokens per batch), the
 * prompts that became possible (batched), and rounds of batched decoder steps, one
 * row for every stream with a new audio token, until none is left (rows of
 * max_batch); delivers the ids as each step ends, then publishes stats and
 * completion. On a graph backend the batches are padded to buckets, one graph each
 * made at open (vox_sched_make_graphs).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <omp.h>

#include "voxtral_engine.h"

vox_stream *vox_stream_new_scratch(vox_ctx *ctx);

/* Graph keys: an owner (a stream: its encoder and, on a plain context, its steps,
 * which hold its own buffers; or the serving pool: batched steps, which read every
 * row's slot and position from the workspace), a kind, and a sub-key (encoder:
 * the chunk's tokens; batched step: the rows). */
enum { GRAPH_STEP = 0, GRAPH_STEP_TOPK = 1, GRAPH_ENCODER = 2, GRAPH_PREFILL = 3, GRAPH_MAX_SUB = 255 };
enum { POOL_OWNER = 0x1fffff }; /* stream ids are masked to 0x1ffffe */

/* a tick's bounds: prompts run (up to work.prefill_batch of them in a decoder pass),
 * rounds of steps (a stream's decodable tokens are at most its audio ring's, acap) */
enum { PREFILLS_PER_TICK = 2 * VOX_PREFILL_BATCH, MAX_ROUNDS = 256 };

static int graph_key(int owner, int kind, int sub) { return (owner * (GRAPH_MAX_SUB + 1) + sub) * 4 + kind; }

/* ---- encoder ------------------------------------------------------------------------ */
/* Encodes n streams' chunks (toks[j] tokens of mel at mels[j]) in one batch and
 * appends each stream's audio embeddings to its ring: encode_enqueue queues the work
 * (mels[j] free on return; the pinned staging is busy until encode_finish), and
 * encode_finish waits for it (its time: *ms since the enqueue, less `overlap` of the
 * host's own work in between). encode_items: both. */
static int encode_enqueue(vox_ctx *ctx, vox_pool *pool, vox_stream **ss, float *const *mels, const int *toks, int n,
                          double *enqueue_ms) {
    vox_backend *be = ctx->be;
    vox_work *w = &ctx->work;
    const vox_config *c = &ctx->model.cfg;
    const int nm = c->num_mel_bins, Dd = c->dec.dim;
    vox_enc_item it[512];
    /* (each stream adds a token at least: the spans' table holds enc_chunk_tokens) */
    if (n > (int)(sizeof it / sizeof it[0]) || n > ctx->enc_chunk_tokens)
        return vox_error("encoder batch of %d streams: too many", n);
    double t0 = vox_now_ms();
    int M = 0, T = 0, tapped = 0;
    for (int j = 0; j < n; j++) {
        vox_stream *s = ss[j];
        const int rows = toks[j] * c->mel_per_token, Mj = rows / 2;
        /* the batch's mel rows side by side in the pinned staging (one async upload; the
         * staging is reused only after this batch's sync) */
        float *mel = w->mel_host + (size_t)T * c->mel_per_token * nm;
        if (mels[j] != mel) memcpy(mel, mels[j], sizeof(float) * rows * nm);
        if (s->tap) s->tap(s->tap_user, "mel", mels[j], rows, nm);
        tapped |= s->tap != NULL;
        for (int i = 0; i < Mj; i++) {
            w->enc_pos_host[M + i] = (int32_t)(s->enc_pos + i);
            w->enc_slot_host[M + i] = s->slot;
        }
        /* its span: the stem's rows and conv state (a new segment's left context reads
         * as zeros: the reference's left padding), its ring's rows */
        w->enc_spans_host[j] = (vox_enc_span){.slot = s->slot, .row0 = T * c->mel_per_token, .rows = rows,
                                              .reset = s->enc_reset, .tok0 = T, .tokens = toks[j],
                                              .at = (int32_t)(s->n_audio % pool->acap)};
        s->enc_reset = 0;
        it[j] = (vox_enc_item){s, toks[j], s->slot};
        M += Mj;
        T += toks[j];
    }
    vox_stream *s0 = ss[0];
    /* the batch's inputs in a few uploads whatever n (each op below takes every stream) */
    be->upload(be, w->mel, w->mel_host, sizeof(float) * T * c->mel_per_token * nm);
    be->upload(be, w->enc_spans, w->enc_spans_host, sizeof(vox_enc_span) * n);
    /* serving on a graph backend: the layers run over a bucket of tokens, padding
     * frames in the pad slot (one graph per bucket, made at open); taps read back
     * mid-way: unpadded, no graph */
    const int pad = ctx->padded && !tapped && pool == &ctx->pool; /* (the warm-up's scratch pool has none) */
    const int Tp = pad ? vox_bucket(T, ctx->enc_chunk_tokens) : T, Mp = pad ? Tp * c->mel_per_token / 2 : M;
    for (int i = M; i < Mp; i++) {
        w->enc_pos_host[i] = i - M;
        w->enc_slot_host[i] = pool->pad_slot;
    }
    be->upload(be, w->enc_pos, w->enc_pos_host, sizeof(int32_t) * Mp);
    if (n > 1 || pad) be->upload(be, w->enc_slot, w->enc_slot_host, sizeof(int32_t) * Mp);
    if (pad) {
        vox_encoder_stem(ctx, pool, it, n);
        const int key = graph_key(POOL_OWNER, GRAPH_ENCODER, Tp);
        if (Tp > GRAPH_MAX_SUB) {
            vox_encoder_layers(ctx, pool, it, n, Tp);
        } else if (!be->graph_launch(be, key)) {
            be->graph_begin(be, key);
            vox_encoder_layers(ctx, pool, it, n, Tp);
            be->graph_end(be, key);
        }
    } else if (n > 1 || tapped || ctx->serving || toks[0] > GRAPH_MAX_SUB || toks[0] != s0->enc_last_tokens) {
        /* a plain context: one stream's chunk the size of its last one (live feeds, a
         * file's full chunks) replays a graph where the backend has graphs; a new size
         * may not recur (and a serving context's streams would each hold a graph) */
        vox_encoder_forward(ctx, pool, it, n);
    } else {
        const int key = graph_key(s0->id, GRAPH_ENCODER, toks[0]);
        if (!be->graph_launch(be, key)) {
            be->graph_begin(be, key);
            vox_encoder_forward(ctx, pool, it, n);
            be->graph_end(be, key);
        }
    }
    /* every stream's audio embeddings into its ring (wrapping) */
    be->ring_append(be, pool->audio, w->adapt_mid, w->enc_spans, n, T, Dd, pool->acap);
    for (int j = 0; j < n; j++) {
        vox_stream *s = ss[j];
        const int tokens = toks[j];
        s->n_audio += tokens;
        s->enc_pos += tokens * c->mel_per_token / 2;
        s->enc_last_tokens = n == 1 ? tokens : 0;
    }
    if (enqueue_ms) *enqueue_ms += vox_now_ms() - t0; /* the host's part: uploads, launches */
    return 0;
}

static int encode_finish(vox_ctx *ctx, vox_stream **ss, const int *toks, int n, double t0, double overlap,
                         double *ms_out) {
    if (ctx->be->sync(ctx->be) != 0) return -1;
    const double ms = vox_now_ms() - t0 - overlap;
    int T = 0;
    for (int j = 0; j < n; j++) T += toks[j];
    if (ctx->opt.verbose >= 2 && !ss[0]->scratch)
        fprintf(stderr, "voxtral: encoder: %d tokens of %d stream%s in %.1f ms\n", T, n, n == 1 ? "" : "s", ms);
    for (int j = 0; j < n; j++) {
        ss[j]->stats.encoder_ms += ms * toks[j] / T;
        ss[j]->stats.encoder_tokens += toks[j];
    }
    if (ms_out) *ms_out = ms;
    return 0;
}

static int encode_items(vox_ctx *ctx, vox_pool *pool, vox_stream **ss, float *const *mels, const int *toks, int n,
                        double *enqueue_ms) {
    const double t0 = vox_now_ms();
    if (encode_enqueue(ctx, pool, ss, mels, toks, n, enqueue_ms) != 0) return -1;
    return encode_finish(ctx, ss, toks, n, t0, 0, NULL);
}

/* ---- decoder, one stream -------------------------------------------------------------- */
static void record_step(vox_stream *s, double dt) {
    s->stats.decode_ms += dt;
    s->stats.steps++;
    s->step_hist[vox_step_bin(dt)]++;
}

/* Hands on the id the last decoder run gave row `row` for the stream's position
 * `pos` (already read back), with that row's top-k (the run's top-k buffers hold
 * kmax per row) and logits for the stream's tap. */
static int deliver_row(vox_stream *s, int64_t pos, int row, int kmax, int32_t id) {
    vox_backend *be = s->ctx->be;
    vox_work *w = &s->ctx->work;
    const int V = s->ctx->model.cfg.vocab_size;
    int32_t tk_ids[1024];
    float tk_vals[1024];
    if (s->topk) {
        be->download(be, tk_ids, w->topk_ids + (size_t)row * kmax, sizeof(int32_t) * s->topk);
        be->download(be, tk_vals, w->topk_vals + (size_t)row * kmax, sizeof(float) * s->topk);
    }
    if (s->tap) {
        be->download(be, s->tap_buf, w->logits + (size_t)row * V, sizeof(float) * V);
        s->tap(s->tap_user, "logits", s->tap_buf, 1, V);
    }
    return vox_sched_deliver(s, pos, id, tk_ids, tk_vals);
}

/* Reads back the id of the last decoder run's row `row` and hands it on. */
static int emit_row(vox_stream *s, int64_t pos, int row, int kmax) {
    vox_backend *be = s->ctx->be;
    int32_t id;
    be->download(be, &id, s->ctx->work.ids + row, sizeof id);
    if (be->sync(be) != 0) return -1;
    return deliver_row(s, pos, row, kmax, id);
}

/* The prompt (BOS, then pads) at positions 0..L-1 through the decoder; delivers the
 * first id. */
static int prefill(vox_stream *s, int deliver) {
    vox_ctx *ctx = s->ctx;
    vox_backend *be = ctx->be;
    vox_work *w = &ctx->work;
    const int L = ctx->prompt_len;
    double t0 = vox_now_ms();
    for (int i = 0; i < L; i++) {
        w->ids_host[i] = i == 0 ? ctx->model.tok.bos_id : ctx->model.tok.pad_id;
        w->pos_host[i] = i;
    }
    be->upload(be, w->ids, w->ids_host, sizeof(int32_t) * L);
    be->upload(be, w->pos, w->pos_host, sizeof(int32_t) * L);
    vox_decoder_forward(ctx, s->pool, L, s->slot, 0, s->topk);
    s->prefilled = 1;
    s->next_pos = L;
    int rc = deliver ? emit_row(s, L - 1, 0, s->topk) : be->sync(be);
    s->stats.prefill_ms += vox_now_ms() - t0;
    return rc;
}

/* Serving: the prompts of n streams (2 .. work.prefill_batch) in one decoder pass,
 * rows of stream j at j * L .. j * L + L - 1 in its own slot, the head over each
 * group's last row; delivers each first id (with its top-k and logits tap as a lone
 * prompt does). A padded context replays a graph per n (made at open; top-k passes
 * run without): only the slots change between passes. ss[j] NULL: padding streams
 * (the graphs' warm-up). */
static int prefill_batch(vox_ctx *ctx, vox_stream **ss, int n) {
    vox_backend *be = ctx->be;
    vox_work *w = &ctx->work;
    const int L = ctx->prompt_len, M = n * L;
    double t0 = vox_now_ms();
    int kmax = 0;
    for (int j = 0; j < n; j++) {
        if (ss[j] && ss[j]->topk > kmax) kmax = ss[j]->topk;
        for (int i = 0; i < L; i++) {
            w->ids_host[j * L + i] = i == 0 ? ctx->model.tok.bos_id : ctx->model.tok.pad_id;
            w->pos_host[j * L + i] = i;
            w->slot_host[j * L + i] = ss[j] ? ss[j]->slot : ctx->pool.pad_slot;
        }
    }
    be->upload(be, w->ids, w->ids_host, sizeof(int32_t) * M);
    be->upload(be, w->pos, w->pos_host, sizeof(int32_t) * M);
    be->upload(be, w->slot, w->slot_host, sizeof(int32_t) * M);
    const int graph = ctx->padded && !kmax, key = graph_key(POOL_OWNER, GRAPH_PREFILL, n);
    if (!graph || !be->graph_launch(be, key)) {
        if (graph) be->graph_begin(be, key);
        vox_decoder_forward(ctx, &ctx->pool, M, -1, L, kmax);
        if (graph) be->graph_end(be, key);
    }
    be->download(be, w->out_ids, w->ids, sizeof(int32_t) * n);
    if (be->sync(be) != 0) return -1;
    const double ms = vox_now_ms() - t0;
    for (int j = 0; j < n; j++) {
        vox_stream *s = ss[j];
        if (!s) continue;
        s->prefilled = 1;
        s->next_pos = L;
        s->stats.prefill_ms += ms / n;
        if (deliver_row(s, L - 1, j, kmax, w->out_ids[j]) != 0) return -1;
    }
    return 0;
}

/* Every decoder step the stream's audio allows (plain contexts). Greedy steps with
 * nothing read back but the id keep a second step queued behind the running one:
 * the next step's input is already on the device, so the GPU does not wait for the
 * host's turnaround. The queued step is wasted when this one ends the segment (its
 * results are never read). Top-k, taps and forced ids read more or feed the host's
 * ids, and a synchronous backend (the CPU) gains nothing: one step at a time. */
static int decode_available(vox_stream *s) {
    vox_ctx *ctx = s->ctx;
    vox_backend *be = ctx->be;
    vox_work *w = &ctx->work;
    const int L = ctx->prompt_len;
    if (s->done) return 0;
    if (!s->prefilled) {
        if (s->n_audio < L + 1) return 0;
        if (prefill(s, 1) != 0) return -1;
    }
    const int depth = !be->async || s->topk || s->tap || s->n_out < s->n_forced ? 1 : STEP_QUEUE;
    int64_t queued[STEP_QUEUE] = {0};
    int n_queued = 0, first = 1;
    double t_last = vox_now_ms();
    for (;;) {
        while (n_queued < depth && !s->done && s->next_pos + 1 < s->n_audio) {
            int32_t p = (int32_t)s->next_pos;
            /* the device holds the previous step's argmax when one is queued; else the
             * host's id (a forced one, or the workspace last held another stream) */
            if (depth == 1 || first) be->upload(be, w->ids, &s->last_id, sizeof(int32_t));
            first = 0;
            be->upload(be, w->pos, &p, sizeof p);
            int key = graph_key(s->id, s->topk ? GRAPH_STEP_TOPK : GRAPH_STEP, 0);
            if (!be->graph_launch(be, key)) {
                be->graph_begin(be, key);
                vox_decoder_forward(ctx, s->pool, 1, s->slot, 1, s->topk);
                be->graph_end(be, key);
            }
            if (depth > 1)
                be->download_async(be, &w->out_ids[p % STEP_QUEUE], w->ids, sizeof(int32_t), p % STEP_QUEUE);
            s->next_pos++;
            queued[n_queued++] = p;
        }
        if (!n_queued) break;
        const int64_t p = queued[0];
        for (int i = 1; i < n_queued; i++) queued[i - 1] = queued[i];
        n_queued--;
        if (depth > 1) {
            if (be->wait_fence(be, (int)(p % STEP_QUEUE)) != 0) return -1;
            if (s->done) continue; /* queued behind the segment's last step: discarded */
            if (vox_sched_deliver(s, p, w->out_ids[p % STEP_QUEUE], NULL, NULL) != 0) return -1;
        } else if (emit_row(s, p, 0, s->topk) != 0) {
            return -1;
        }
        double t = vox_now_ms(), dt = t - t_last; /* a step's time: from output to output */
        t_last = t;
        record_step(s, dt);
    }
    return 0;
}

int vox_sched_run_stream(vox_stream *s) {
    vox_ctx *ctx = s->ctx;
    for (;;) {
        if (vox_sched_restart(s) != 0) return -1;
        int64_t ready = vox_sched_mel_tokens(s);
        if (ready <= 0) break;
        int tokens = ready < ctx->enc_chunk_tokens ? (int)ready : ctx->enc_chunk_tokens;
        float *mel = ctx->work.mel_host;
        if (vox_sched_read_mel(s, mel, tokens) != 0) return -1;
        if (encode_items(ctx, s->pool, &s, &mel, &tokens, 1, NULL) != 0) return -1;
        if (decode_available(s) != 0) return -1;
    }
    return 0;
}

/* A batched step's rows to the backend: the first B filled by the caller, padding
 * rows (the pad slot at position 0) up to Bp. */
static void upload_rows(vox_ctx *ctx, int B, int Bp) {
    vox_backend *be = ctx->be;
    vox_work *w = &ctx->work;
    for (int i = B; i < Bp; i++) {
        w->ids_host[i] = ctx->model.tok.pad_id;
        w->pos_host[i] = 0;
        w->slot_host[i] = ctx->pool.pad_slot;
    }
    be->upload(be, w->ids, w->ids_host, sizeof(int32_t) * Bp);
    be->upload(be, w->pos, w->pos_host, sizeof(int32_t) * Bp);
    be->upload(be, w->slot, w->slot_host, sizeof(int32_t) * Bp);
}

/* A padded serving context's graphs, made at open: the batched step for every row
 * bucket up to max_batch, the batched prompts for 2 .. prefill_batch streams, and the
 * encoder layers for every token bucket up to the encoder batch, each captured (and run) on padding rows alone, so that no stream
 * waits for a capture (the first H200 run captured each new batch size while
 * serving: its rare sizes' steps averaged 8-13 ms against 3.7 ms for the common). */
int vox_sched_make_graphs(vox_ctx *ctx) {
    vox_backend *be = ctx->be;
    vox_work *w = &ctx->work;
    const vox_config *c = &ctx->model.cfg;
    const double t0 = vox_now_ms();
    int made = 0;
    for (int b = 1, last = 0; b <= w->max_batch && b <= GRAPH_MAX_SUB; b++) {
        const int Bp = vox_bucket(b, w->max_batch);
        if (Bp == last) continue;
        last = Bp;
        upload_rows(ctx, 0, Bp);
        const int key = graph_key(POOL_OWNER, GRAPH_STEP, Bp);
        be->graph_begin(be, key);
        vox_decoder_forward(ctx, &ctx->pool, Bp, -1, 1, 0);
        be->graph_end(be, key);
        made++;
    }
    for (int p = 2; p <= w->prefill_batch; p++) { /* batched prompts, on padding streams */
        vox_stream *none[VOX_PREFILL_BATCH] = {0};
        if (prefill_batch(ctx, none, p) != 0) return -1;
        made++;
    }
    for (int t = 1, last = 0; t <= ctx->enc_chunk_tokens && t <= GRAPH_MAX_SUB; t++) {
        const int Tp = vox_bucket(t, ctx->enc_chunk_tokens), Mp = Tp * c->mel_per_token / 2;
        if (Tp == last) continue;
        last = Tp;
        for (int i = 0; i < Mp; i++) {
            w->enc_pos_host[i] = i;
            w->enc_slot_host[i] = ctx->pool.pad_slot;
        }
        be->upload(be, w->enc_pos, w->enc_pos_host, sizeof(int32_t) * Mp);
        be->upload(be, w->enc_slot, w->enc_slot_host, sizeof(int32_t) * Mp);
        const int key = graph_key(POOL_OWNER, GRAPH_ENCODER, Tp);
        be->graph_begin(be, key);
        vox_encoder_layers(ctx, &ctx->pool, NULL, 0, Tp);
        be->graph_end(be, key);
        made++;
    }
    if (be->sync(be) != 0) return -1;
    if (ctx->opt.verbose >= 2)
        fprintf(stderr, "voxtral: serving: %d batch graphs made in %.0f ms\n", made, vox_now_ms() - t0);
    return 0;
}

/* vox_open's warm-up (backends with warm_up set): an encoder chunk of silence, a
 * prefill and one step on a scratch stream, so that the first audio pays none of
 * the one-time costs (on an H100 the first chunk took 85 ms against 20 ms). */
int vox_sched_warm_up(vox_ctx *ctx) {
    vox_stream *s = vox_stream_new_scratch(ctx);
    if (!s) return -1;
    const vox_config *c = &ctx->model.cfg;
    /* the scratch stream's conv state holds a stream's chunk: on a serving context that
     * is less than the encoder's (the whole chunk overran it: a CUDA copy error at open) */
    int tokens = ctx->stream_chunk_tokens;
    float *mel = ctx->work.mel_host;
    memset(mel, 0, sizeof(float) * (size_t)tokens * c->mel_per_token * c->num_mel_bins);
    /* one full chunk: warming every row bucket of the GEMMs as well (a first odd-sized
     * chunk: 29 ms against 12 warm) cost 1.1 s more at open on an H100 */
    int rc = encode_items(ctx, s->pool, &s, &mel, &tokens, 1, NULL);
    if (rc == 0) rc = prefill(s, 0);
    if (rc == 0) {
        int32_t p = ctx->prompt_len;
        ctx->be->upload(ctx->be, ctx->work.pos, &p, sizeof p);
        vox_decoder_forward(ctx, s->pool, 1, s->slot, 1, 0);
        rc = ctx->be->sync(ctx->be);
    }
    vox_stream_free(s);
    return rc;
}

/* ---- the shared prefix ------------------------------------------------------------------
 * Every segment starts with left_pad_tokens of silence: its first prefix_tokens audio
 * tokens (mel frames in the pad alone, vox_mel_pad_frames; through the causal stem and
 * layers, vox_encoder_prefix_tokens) are the same for every stream. A serving context
 * encodes them once at open on a scratch stream, and a new segment copies that
 * stream's encoder rings, conv history and audio embeddings instead of encoding them:
 * 31 of the 32 pad tokens of the released model, a quarter of the encoder's work for
 * 8 s sessions, all of it due at once when many streams join. VOX_PREFIX_TOKENS=n (a
 * developer's knob, for the tests) takes n tokens instead, as if the audio began with
 * silence (0: none). */
int vox_sched_make_prefix(vox_ctx *ctx) {
    const vox_config *c = &ctx->model.cfg;
    const int fpt = c->mel_per_token / 2;
    int n = vox_encoder_prefix_tokens(c, vox_mel_pad_frames(c, (int64_t)ctx->model.tok.left_pad_tokens *
                                                                       c->samples_per_token));
    const char *env = getenv("VOX_PREFIX_TOKENS");
    if (env && *env) n = atoi(env);
    if (n > ctx->pool.acap) n = ctx->pool.acap; /* its embeddings fill the start of an audio ring */
    ctx->prefix_tokens = ctx->sstats.prefix_tokens = 0;
    if (n <= 0 || fpt <= 0) return 0;
    vox_stream *s = vox_stream_new_scratch(ctx);
    if (!s) return -1;
    int rc = vox_mel_push(s->mel, NULL, (int64_t)(n + 1) * c->samples_per_token); /* (the knob's silence) */
    for (int done = 0; !rc && done < n;) {
        int t = n - done < ctx->stream_chunk_tokens ? n - done : ctx->stream_chunk_tokens;
        rc = vox_sched_read_mel(s, s->mel_pend, t);
        if (!rc) rc = encode_items(ctx, s->pool, &s, &s->mel_pend, &t, 1, NULL);
        done += t;
    }
    if (rc) {
        vox_stream_free(s);
        return vox_error("the shared prefix (%d tokens): %s", n, vox_last_error());
    }
    ctx->prefix = s;
    ctx->prefix_tokens = ctx->sstats.prefix_tokens = n;
    return 0;
}

/* a new segment of s (nothing encoded yet) takes the prefix's state: the first
 * prefix_tokens tokens of its mel pass unread */
static int apply_prefix(vox_ctx *ctx, vox_stream *s) {
    vox_backend *be = ctx->be;
    const vox_config *c = &ctx->model.cfg;
    const vox_stream *p = ctx->prefix;
    const int n = ctx->prefix_tokens, frames = n * c->mel_per_token / 2;
    const int K = c->conv_kernel, nm = c->num_mel_bins, De = c->enc.dim, Dd = c->dec.dim;
    const size_t row = (size_t)c->enc.n_kv_heads * c->enc.head_dim * s->pool->esize;
    /* position q is ring row q % enc_cap in both pools: rows 0 .. frames - 1, or the
     * whole ring once the prefix wrapped it */
    const int rows = frames < s->pool->enc_cap ? frames : s->pool->enc_cap;
    if (vox_sched_skip_mel(s, n) != 0) return -1;
    for (int l = 0; l < c->enc.n_layers; l++)
        for (int kv = 0; kv < 2; kv++)
            be->copy(be, (char *)vox_pool_enc(s->pool, c, l, kv) + (size_t)s->slot * s->pool->enc_cap * row,
                     (const char *)vox_pool_enc(p->pool, c, l, kv) + (size_t)p->slot * p->pool->enc_cap * row,
                     rows * row);
    be->copy(be, s->pool->audio + (size_t)s->slot * s->pool->acap * Dd,
             p->pool->audio + (size_t)p->slot * p->pool->acap * Dd, sizeof(float) * n * Dd);
    be->copy(be, s->conv_in, p->conv_in, sizeof(float) * (K - 1) * nm);
    if (K > 2) be->copy(be, s->conv_mid, p->conv_mid, sizeof(float) * (K - 2) * De);
    s->enc_reset = 0;
    s->enc_pos = frames;
    s->n_audio = n;
    s->enc_last_tokens = 0;
    return 0;
}

/* ---- serving ------------------------------------------------------------------------------ */
static int decodable(const vox_stream *s) {
    if (s->done) return 0;
    if (!s->prefilled) return s->n_audio >= s->ctx->prompt_len + 1;
    return s->next_pos + 1 < s->n_audio;
}

/* scheduler-side work left on a stream (scheduler thread) */
static int internal_work(const vox_stream *s) {
    return s->restart_why || vox_sched_mel_tokens(s) > 0 || decodable(s);
}

/* the client's audio or requests the scheduler has not taken yet (under ctx->mu) */
static int queued(const vox_stream *s) { return s->in_len || s->n_flush || (s->finish_req && !s->finished); }

/* work queued on or left for a stream (under ctx->mu) */
static int stream_work(const vox_stream *s) {
    if (s->complete) return 0;
    return queued(s) || s->flushing || internal_work(s) || s->finished;
}

/* under ctx->mu */
static int has_work(vox_ctx *ctx) {
    for (int i = 0; i < ctx->n_streams; i++)
        if (stream_work(ctx->streams[i])) return 1;
    return 0;
}

int vox_stream_idle(vox_stream *s) {
    vox_ctx *ctx = s->ctx;
    if (!ctx->serving || s->pool != &ctx->pool) return 1; /* a plain stream works in its caller's calls */
    pthread_mutex_lock(&ctx->mu);
    int idle = !s->busy && (!s->registered || !stream_work(s));
    pthread_mutex_unlock(&ctx->mu);
    return idle;
}

/* The tick gate (under ctx->mu): how long the next tick should wait, ms (0: now).
 * Each batched step reads all of the decoder's weights whatever its rows (3.7 ms for
 * 2 rows, 4.1 for 64 on an H200), and an encoder batch all of the encoder's, so
 * under load ticks that start as soon as one stream has audio run small batches back
 * to back and fall behind (the first H200 runs: a mean batch of 20 at 256 streams).
 * A tick starts tick_ms after the last one began, or at once when every live stream
 * has audio queued, a full batch has, a stream flushes or finishes, or work is left
 * on the scheduler's side (a backlog). */
static double tick_wait(vox_ctx *ctx, double last_start) {
    const double left = last_start + ctx->tick_ms - vox_now_ms();
    if (left <= 0) return 0;
    int live = 0, ready = 0;
    for (int i = 0; i < ctx->n_streams; i++) {
        const vox_stream *s = ctx->streams[i];
        if (s->complete) continue;
        if (s->n_flush || s->finish_req || s->flushing || s->finished || internal_work(s)) return 0;
        live++;
        ready += s->in_len > 0;
    }
    return ready >= live || ready >= ctx->work.max_batch ? 0 : left;
}

void vox_sched_wake(vox_ctx *ctx) {
    ctx->idle = 0;
    pthread_cond_signal(&ctx->cv_work);
}

/* A stream's part of a tick before the model runs: new audio, a flush or finish
 * reaching its mark, a pending restart. */
typedef struct {
    vox_stream *s;
    float *stage;
    int64_t stage_len;
    int flush_go, finish_go;
} tick_item;

static int stream_prepare(tick_item *t) {
    vox_stream *s = t->s;
    if (t->stage_len && vox_sched_take(s, t->stage, t->stage_len) != 0) return -1;
    if (t->flush_go && s->seg_samples > 0) {
        s->flushing = 1; /* no new audio until its right pad is decoded */
        if (vox_segment_end(s, 1) != 0) return -1;
    }
    if (t->finish_go) {
        s->finished = 1;
        if (vox_segment_end(s, 2) != 0) return -1;
    }
    if (vox_sched_restart(s) != 0) return -1;
    if (s->done && !s->restart_why) { /* the segment ended: its further audio is not decoded */
        int64_t n = vox_sched_mel_tokens(s);
        while (n-- > 0)
            if (vox_sched_read_mel(s, s->mel_pend, 1) != 0) return -1;
    }
    return 0;
}

/* after the model ran: a flush whose right pad is decoded opens the next segment */
static int stream_settle(vox_stream *s) {
    if (s->flushing && !internal_work(s)) {
        s->flushing = 0;
        s->end_pending = 0;
        s->restart_why = NULL;
        if (vox_segment_begin(s, s->n_samples) != 0) return -1;
        s->restarts++;
    }
    return 0;
}

static void add_step_stats(vox_serve_stats *st, int B, double ms) {
    int b = B < VOX_BATCH_BINS - 1 ? B : VOX_BATCH_BINS - 1;
    st->steps++;
    st->step_rows += B;
    st->step_ms += ms;
    st->steps_by_batch[b]++;
    st->step_ms_by_batch[b] += ms;
}

/* One batched decoder step over rows[0..B): each a stream at its next position. */
static int batched_step(vox_ctx *ctx, vox_stream **rows, int B, vox_serve_stats *st) {
    vox_backend *be = ctx->be;
    vox_work *w = &ctx->work;
    double t0 = vox_now_ms();
    int kmax = 0;
    for (int i = 0; i < B; i++) {
        vox_stream *s = rows[i];
        w->ids_host[i] = s->last_id;
        w->pos_host[i] = (int32_t)s->next_pos;
        w->slot_host[i] = s->slot;
        if (s->topk > kmax) kmax = s->topk;
    }
    /* a padded context: padding rows up to the bucket (pad slot, position 0), so that
     * one of the graphs made at open replays the step; top-k steps run unpadded */
    const int Bp = ctx->padded && !kmax ? vox_bucket(B, w->max_batch) : B;
    upload_rows(ctx, B, Bp);
    const int key = graph_key(POOL_OWNER, GRAPH_STEP, Bp);
    if (kmax || !be->graph_launch(be, key)) {
        if (!kmax) be->graph_begin(be, key);
        vox_decoder_forward(ctx, &ctx->pool, Bp, -1, 1, kmax);
        if (!kmax) be->graph_end(be, key);
    }
    be->download(be, w->out_ids, w->ids, sizeof(int32_t) * B);
    if (be->sync(be) != 0) return -1;
    const double ms = vox_now_ms() - t0;
    add_step_stats(st, B, ms);
    for (int i = 0; i < B; i++) {
        vox_stream *s = rows[i];
        int64_t p = s->next_pos++;
        record_step(s, ms);
        if (deliver_row(s, p, i, kmax, w->out_ids[i]) != 0) return -1;
    }
    return 0;
}

/* The log-mel of n streams' next toks[j] tokens into their mel_pend, the streams in
 * parallel (each stream's mel state is its own; frames are computed as they are
 * read: one thread spent 12% of a tick on them for 288 live streams on an H200). */
static int read_mels(vox_stream **ss, const int *toks, int n) {
    int bad = -1;
#pragma omp parallel for schedule(dynamic, 4) if (n >= 8)
    for (int j = 0; j < n; j++)
        if (vox_sched_read_mel(ss[j], ss[j]->mel_pend, toks[j]) != 0) {
#pragma omp critical(vox_read_mels)
            if (bad < 0 || j < bad) bad = j;
        }
    if (bad >= 0) /* (the reader's message stayed on its thread) */
        return vox_error("stream %d: log-mel: short read of %d tokens", ss[bad]->id, toks[bad]);
    return 0;
}

/* an encoder batch: streams ss[j] with toks[j] tokens of mel in mels[j] */
typedef struct {
    vox_stream *ss[512];
    float *mels[512];
    int toks[512];
    int m, total;
} enc_batch;

/* the next batch over the tick's streams (marks them pending); its stream count */
static int select_batch(vox_ctx *ctx, tick_item *items, int n, int start, enc_batch *b) {
    b->m = b->total = 0;
    for (int k = 0; k < n && b->m < 512; k++) {
        vox_stream *s = items[(start + k) % n].s;
        if (s->done || s->pending_tokens) continue;
        int64_t ready = vox_sched_mel_tokens(s);
        int64_t room = s->pool->acap - (s->n_audio - s->next_pos);
        int64_t t = ready < ctx->stream_chunk_tokens ? ready : ctx->stream_chunk_tokens;
        if (t > room) t = room;
        if (t > ctx->enc_chunk_tokens - b->total) t = ctx->enc_chunk_tokens - b->total;
        if (t <= 0) continue;
        s->pending_tokens = (int)t;
        b->ss[b->m] = s;
        b->mels[b->m] = s->mel_pend;
        b->toks[b->m++] = (int)t;
        b->total += (int)t;
    }
    return b->m;
}

static int read_batch_mels(enc_batch *b, vox_serve_stats *st) {
    const double t0 = vox_now_ms();
    if (read_mels(b->ss, b->toks, b->m) != 0) {
        for (int j = 0; j < b->m; j++) b->ss[j]->pending_tokens = 0;
        b->m = 0;
        return -1;
    }
    st->mel_ms += vox_now_ms() - t0;
    return 0;
}

/* audio or a request queued since the tick's gather (takes ctx->mu) */
static int audio_waiting(vox_ctx *ctx) {
    pthread_mutex_lock(&ctx->mu);
    int any = 0;
    for (int i = 0; i < ctx->n_streams && !any; i++) {
        const vox_stream *s = ctx->streams[i];
        any = !s->complete && queued(s);
    }
    pthread_mutex_unlock(&ctx->mu);
    return any;
}

/* The model's part of a tick over n streams. */
static int run_tick(vox_ctx *ctx, tick_item *items, int n, int start, vox_serve_stats *st) {
    vox_work *w = &ctx->work;
    const vox_config *c = &ctx->model.cfg;
    /* new segments start from the shared prefix */
    for (int k = 0; k < n && ctx->prefix; k++) {
        vox_stream *s = items[k].s;
        if (!s->done && !s->enc_pos && !s->pending_tokens && vox_sched_mel_tokens(s) >= ctx->prefix_tokens) {
            if (apply_prefix(ctx, s) != 0) return -1;
            st->prefix_segments++;
        }
    }
    /* encoder batches: every stream's ready mel (up to stream_chunk_tokens each, as
     * its audio ring has room), enc_chunk_tokens per batch; the order rotates. The
     * next batch's log-mel is computed while the GPU runs this one (the log-mel was
     * 5-10 % of a tick for 290 streams on an H200, the host idle in the sync). */
    enc_batch bt[2];
    int cur = 0;
    if (select_batch(ctx, items, n, start, &bt[cur]) && read_batch_mels(&bt[cur], st) != 0) return -1;
    while (bt[cur].m) {
        enc_batch *b = &bt[cur], *nx = &bt[cur ^ 1];
        const double t0 = vox_now_ms();
        int rc = encode_enqueue(ctx, &ctx->pool, b->ss, b->mels, b->toks, b->m, &st->enc_host_ms);
        for (int j = 0; j < b->m; j++) b->ss[j]->pending_tokens = 0;
        nx->m = 0;
        double overlap = 0;
        if (!rc && b->total == ctx->enc_chunk_tokens && select_batch(ctx, items, n, start, nx)) {
            const double t1 = vox_now_ms(); /* (else everyone's ready audio is in) */
            rc = read_batch_mels(nx, st);
            overlap = vox_now_ms() - t1;
        }
        double ms = 0;
        if (!rc) rc = encode_finish(ctx, b->ss, b->toks, b->m, t0, overlap, &ms);
        if (rc) {
            for (int j = 0; j < nx->m; j++) nx->ss[j]->pending_tokens = 0;
            return -1;
        }
        st->enc_batches++;
        st->enc_tokens += b->total;
        st->enc_ms += ms;
        cur ^= 1;
    }
    /* the prompts that became possible, in passes of up to work.prefill_batch streams,
     * at most PREFILLS_PER_TICK a tick (many streams joining at once would hold every
     * running stream's steps back behind all of their prompts) */
    vox_stream *pf[VOX_PREFILL_BATCH];
    int npf = 0;
    for (int k = 0, done = 0; k <= n; k++) {
        vox_stream *s = k < n ? items[(start + k) % n].s : NULL;
        const int due = s && done < PREFILLS_PER_TICK && !s->done && !s->prefilled &&
                        s->n_audio >= ctx->prompt_len + 1;
        double t0 = vox_now_ms();
        if (due) {
            done++;
            pf[npf++] = s;
        }
        if (npf && (npf == w->prefill_batch || !s || done == PREFILLS_PER_TICK)) {
            if ((npf == 1 ? prefill(pf[0], 1) : prefill_batch(ctx, pf, npf)) != 0) return -1;
            st->prefills += npf;
            st->prefill_passes++;
            st->prefill_ms += vox_now_ms() - t0;
            npf = 0;
        }
        if (!s) break;
    }
    /* rounds of decoder steps: in each, one step of every stream with a new audio
     * token (rows of max_batch). A stream behind by k tokens (a long tick, a flush's
     * right pad) catches up in rounds within this tick while a round fills at least a
     * quarter of a batch (of the live streams, when fewer), or holds a stream that is
     * ending (a flush, a finish: its text is awaited). A smaller round costs as much
     * as a full one (a step reads all the weights), so its rows wait for the next
     * tick, where fresh rows join them, when audio is waiting (else no row would join
     * and the round runs now). One step a tick, before, never caught up past 64
     * streams on an H200. */
    vox_stream *rows[256];
    const int full = n < w->max_batch ? n : w->max_batch;
    for (int round = 0; round < MAX_ROUNDS; round++) {
        int total = 0, ending = 0;
        for (int k = 0; k < n; k++) {
            const vox_stream *s = items[k].s;
            if (s->prefilled && decodable(s)) {
                total++;
                ending |= s->flushing || s->finished;
            }
        }
        if (!total || (round && total * 4 < full && !ending && !ctx->drain_rounds && audio_waiting(ctx))) break;
        int B = 0;
        for (int k = 0; k <= n; k++) {
            vox_stream *s = k < n ? items[(start + k) % n].s : NULL;
            if (s && s->prefilled && decodable(s)) rows[B++] = s;
            if (B && (B == w->max_batch || k == n)) {
                if (batched_step(ctx, rows, B, st) != 0) return -1;
                B = 0;
            }
        }
    }
    (void)c;
    return 0;
}

static void publish(vox_stream *s) {
    s->pub_stats = s->stats;
    s->pub_stats.audio_s = (double)s->n_samples / s->ctx->model.cfg.sampling_rate;
    s->pub_restarts = s->restarts;
    memcpy(s->pub_hist, s->step_hist, sizeof s->pub_hist);
}

static void *sched_main(void *arg) {
    vox_ctx *ctx = arg;
    vox_backend *be = ctx->be;
    if (be->thread_init) be->thread_init(be);
    tick_item *items = calloc(ctx->opt.max_streams, sizeof *items);
    float *stage = malloc(sizeof(float) * (size_t)ctx->opt.max_streams * ctx->stream_chunk_tokens *
                          ctx->model.cfg.samples_per_token);
    const int64_t take_max = (int64_t)ctx->stream_chunk_tokens * ctx->model.cfg.samples_per_token;
    int start = 0;
    double last_tick = -1e300;
    const int team = omp_get_max_threads();
    pthread_mutex_lock(&ctx->mu);
    ctx->sstats.host_threads = team;
    if (!items || !stage) snprintf(ctx->fatal, sizeof ctx->fatal, "scheduler: out of memory");
    while (!ctx->stop && !ctx->fatal[0]) {
        if (ctx->hold || !has_work(ctx)) {
            ctx->idle = !ctx->hold;
            pthread_cond_broadcast(&ctx->cv_done);
            pthread_cond_wait(&ctx->cv_work, &ctx->mu);
            continue;
        }
        const double wait_ms = tick_wait(ctx, last_tick);
        if (wait_ms > 0) { /* (a feed wakes it to look again) */
            struct timespec ts;
            clock_gettime(CLOCK_MONOTONIC, &ts);
            const long long ns = ts.tv_nsec + (long long)(wait_ms * 1e6);
            ts.tv_sec += (time_t)(ns / 1000000000);
            ts.tv_nsec = (long)(ns % 1000000000);
            pthread_cond_timedwait(&ctx->cv_work, &ctx->mu, &ts);
            continue;
        }
        /* gather: each stream's new audio (up to its flush mark), flush and finish */
        const double t_tick = last_tick = vox_now_ms();
        int n = 0;
        for (int i = 0; i < ctx->n_streams; i++) {
            vox_stream *s = ctx->streams[i];
            if (s->complete) continue;
            tick_item *t = &items[n];
            memset(t, 0, sizeof *t);
            t->s = s;
            t->stage = stage + (size_t)n * take_max;
            int64_t taken = s->in_total - (int64_t)s->in_len; /* samples the scheduler has */
            if (!s->flushing && s->in_len && vox_sched_mel_tokens(s) < ctx->stream_chunk_tokens) {
                int64_t lim = s->n_flush ? s->flush_at[0] - taken : (int64_t)s->in_len;
                if (lim > take_max) lim = take_max;
                if (lim > 0) {
                    memcpy(t->stage, s->in, sizeof(float) * lim);
                    memmove(s->in, s->in + lim, sizeof(float) * (s->in_len - lim));
                    s->in_len -= lim;
                    t->stage_len = lim;
                    taken += lim;
                }
            }
            if (!s->flushing && s->n_flush && s->flush_at[0] == taken) {
                t->flush_go = 1;
                memmove(s->flush_at, s->flush_at + 1, sizeof(int64_t) * --s->n_flush);
            }
            if (s->finish_req && !s->finished && !s->in_len && !s->n_flush && !s->flushing && !t->flush_go)
                t->finish_go = 1;
            s->busy = 1;
            n++;
        }
        pthread_mutex_unlock(&ctx->mu);

        vox_serve_stats st = {0};
        int rc = 0;
        for (int k = 0; k < n && !rc; k++) rc = stream_prepare(&items[k]);
        const double t_model = vox_now_ms();
        if (!rc) rc = run_tick(ctx, items, n, start, &st);
        const double t_settle = vox_now_ms();
        for (int k = 0; k < n && !rc; k++) rc = stream_settle(items[k].s);
        start = n ? (start + 1) % n : 0;
        char why[512] = "";
        if (rc) snprintf(why, sizeof why, "%s", vox_last_error());

        pthread_mutex_lock(&ctx->mu);
        ctx->sstats.ticks++;
        ctx->sstats.steps += st.steps;
        ctx->sstats.step_rows += st.step_rows;
        ctx->sstats.step_ms += st.step_ms;
        for (int b = 0; b < VOX_BATCH_BINS; b++) {
            ctx->sstats.steps_by_batch[b] += st.steps_by_batch[b];
            ctx->sstats.step_ms_by_batch[b] += st.step_ms_by_batch[b];
        }
        ctx->sstats.enc_batches += st.enc_batches;
        ctx->sstats.enc_tokens += st.enc_tokens;
        ctx->sstats.enc_ms += st.enc_ms;
        ctx->sstats.enc_host_ms += st.enc_host_ms;
        ctx->sstats.prefix_segments += st.prefix_segments;
        ctx->sstats.prefills += st.prefills;
        ctx->sstats.prefill_passes += st.prefill_passes;
        ctx->sstats.prefill_ms += st.prefill_ms;
        ctx->sstats.mel_ms += st.mel_ms;
        ctx->sstats.prep_ms += st.mel_ms; /* the tick's log-mel (below: the rest of the host's part) */
        for (int k = 0; k < n; k++) {
            vox_stream *s = items[k].s;
            publish(s);
            if (rc) { /* the backend failed under a batch: every stream in it fails */
                s->failed = 1;
                vox_err_set(&s->err, "%s", why);
            }
            if (s->failed || (s->finished && !s->flushing && !internal_work(s))) s->complete = 1;
            s->busy = 0;
        }
        if (rc) snprintf(ctx->fatal, sizeof ctx->fatal, "%s", why);
        const double t_end = vox_now_ms();
        ctx->sstats.prep_ms += (t_model - t_tick) + (t_end - t_settle);
        ctx->sstats.busy_ms += t_end - t_tick;
        pthread_cond_broadcast(&ctx->cv_done);
    }
    ctx->idle = 1;
    pthread_cond_broadcast(&ctx->cv_done);
    pthread_mutex_unlock(&ctx->mu);
    free(items);
    free(stage);
    return NULL;
}

int vox_sched_start(vox_ctx *ctx) {
    if (pthread_create(&ctx->thread, NULL, sched_main, ctx) != 0) return vox_error("scheduler thread: cannot start");
    ctx->thread_started = 1;
    return 0;
}

void vox_sched_stop(vox_ctx *ctx) {
    if (!ctx->thread_started) return;
    pthread_mutex_lock(&ctx->mu);
    ctx->stop = 1;
    pthread_cond_signal(&ctx->cv_work);
    pthread_mutex_unlock(&ctx->mu);
    pthread_join(ctx->thread, NULL);
    ctx->thread_started = 0;
}

void vox_sched_hold(vox_ctx *ctx, int hold) {
    if (!ctx->serving) return;
    pthread_mutex_lock(&ctx->mu);
    ctx->hold = hold;
    if (!hold) vox_sched_wake(ctx);
    pthread_mutex_unlock(&ctx->mu);
}

void vox_sched_wait_idle(vox_ctx *ctx) {
    if (!ctx->serving) return;
    pthread_mutex_lock(&ctx->mu);
    while (!ctx->idle && !ctx->fatal[0]) pthread_cond_wait(&ctx->cv_done, &ctx->mu);
    pthread_mutex_unlock(&ctx->mu);
}
