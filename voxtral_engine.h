/* voxtral_engine.h - what the engine's own files share (voxtral.c, voxtral_forward.c,
 * voxtral_stream.c, voxtral_sched.c): the context, the stream, the KV pool, the
 * forward pass's workspace and batch descriptions.
 *
 * Jobs:
 *   voxtral_forward.c  the forward pass, stateless over a batch: an encoder batch
 *                      (chunks of several streams) and a decoder batch (rows, each
 *                      with its position, pool slot, previous id); written once over
 *                      the backend op table.
 *   voxtral_stream.c   the per-stream schedule: mel, segments, restarts, delivery;
 *                      it never calls a backend op.
 *   voxtral_sched.c    the scheduler: the only code that drives the backend. A plain
 *                      context runs it inline in the caller's vox_stream_feed (one
 *                      stream at a time, as fast as before); a serving context
 *                      (max_streams > 0) runs it on a thread of its own that batches
 *                      every stream with pending work.
 *   voxtral.c          context open/close, options, memory plan, pools.
 */
#ifndef VOXTRAL_ENGINE_H
#define VOXTRAL_ENGINE_H

#include <pthread.h>

#include "voxtral_internal.h"

/* ---- KV pool ----------------------------------------------------------------------
 * One allocation holding `slots` streams' rings: encoder and decoder KV
 * ([layer][K|V][slot][cap][kv_dim] of the KV dtype) and the audio-embedding ring
 * ([slot][acap][dec dim], fp32). A plain context gives each stream a pool of one
 * slot; a serving context has one pool of max_streams slots. */
typedef struct {
    void *enc_kv, *dec_kv;
    float *audio;
    float *conv;           /* [slot][conv_floats]: conv_in then conv_mid of each stream */
    size_t conv_in_floats, conv_floats;
    int slots, enc_cap, dec_cap, acap;
    int pad_slot;          /* serving on a graph backend: the slot padding rows use
                              (never handed out; its audio ring zeros), else -1 */
    size_t esize;          /* bytes per KV element */
    unsigned char *used;   /* host: slot taken */
    size_t bytes;
} vox_pool;

/* a free slot (serving: under ctx->mu), or -1; never the pad slot */
int vox_pool_take(vox_pool *p);
void vox_pool_give(vox_pool *p, int slot);
/* top-k buffers for k entries per row */
int vox_work_topk(vox_ctx *ctx, int k);
/* ring for layer l, K (kv = 0) or V (1) of slot 0 */
void *vox_pool_enc(const vox_pool *p, const vox_config *c, int l, int kv);
void *vox_pool_dec(const vox_pool *p, const vox_config *c, int l, int kv);

/* ---- forward workspace (one per context: the scheduler is its only user) --------- */
typedef struct {
    int enc_rows_max;      /* encoder frames in one batch */
    float *conv_cols, *ex, *exn, *eq, *ek, *ev, *eattn, *eg, *eu, *adapt_mid;
    int32_t *enc_pos, *enc_slot;           /* backend [enc_rows_max] */
    int32_t *enc_pos_host, *enc_slot_host; /* host */
    int dec_rows_max;      /* max(prompt_len x prefill_batch, max_batch) */
    int prefill_batch;     /* streams whose prompts run in one decoder pass (serving) */
    int max_batch;         /* decoder rows of one batched step */
    float *dx, *dq, *dk, *dv, *dattn, *dg, *du, *logits; /* logits [max_batch][vocab] */
    int32_t *ids, *pos, *slot;             /* backend [dec_rows_max] */
    int32_t *ids_host, *pos_host, *slot_host;
    int topk_max;          /* top-k entries per row the buffers hold */
    int32_t *topk_ids;     /* backend [max_batch][topk_max] */
    float *topk_vals;
    int32_t *out_ids;      /* host (be->host_alloc) [STEP_QUEUE * max_batch] */
    float *mel_host;       /* [chunk mel rows][n_mel]: the batch's mel, staged */
    float *mel;            /* backend, the same: what the conv stem reads */
    vox_enc_span *enc_spans, *enc_spans_host; /* backend, host [enc_chunk_tokens]: the
                                                 batch's streams (each adds a token at least) */
} vox_work;

/* decoder steps in flight on an async backend: the running one and one queued */
enum { STEP_QUEUE = 2 };
_Static_assert((int)STEP_QUEUE <= (int)VOX_FENCES, "a fence per queued step");

/* ---- context ------------------------------------------------------------------------ */
struct vox_ctx {
    vox_model model;
    vox_backend *be;
    vox_options opt;
    int delay_tokens, prompt_len;
    int enc_chunk_tokens;   /* audio tokens per encoder batch */
    int stream_chunk_tokens; /* audio tokens one stream adds to an encoder batch */
    int dec_window;         /* decoder attention window (kv_window or the model's) */
    int padded;             /* serving on a graph backend: batches padded to buckets
                               (vox_bucket), one graph per bucket captured at open */
    char backend_desc[192];
    double load_ms;
    int streams_made;       /* each stream's graph keys are its own: ids from this */
    vox_work work;
    vox_need need;          /* the plan vox_open checked */

    /* serving (max_streams > 0) */
    int serving;
    vox_pool pool;
    pthread_t thread;
    int thread_started;
    pthread_mutex_t mu;     /* guards everything below and each stream's shared part */
    pthread_cond_t cv_work; /* the scheduler waits here for work */
    pthread_cond_t cv_done; /* clients wait here (stream done, free, idle) */
    int stop, hold, idle;
    int tick_ms;            /* the tick gate (vox_options.tick_ms; 0 = none) */
    int drain_rounds;       /* VOX_DRAIN_ROUNDS=1 (a developer's knob, for timing the
                               rule): every tick's rounds run to the end */
    int prefix_tokens;      /* serving: the first audio tokens of every segment, whose
                               mel lies in the left pad (vox_mel_pad_frames,
                               vox_encoder_prefix_tokens): the same for every stream */
    vox_stream *prefix;     /* ...encoded once at open on this scratch stream; each new
                               segment copies its encoder rings, conv history and
                               audio embeddings (NULL: none) */
    vox_stream **streams;   /* registered streams (serving), max_streams entries */
    int n_streams;
    char fatal[512];        /* a backend failure that ended the scheduler */
    vox_serve_stats sstats; /* published under mu */
};

/* ---- stream ---------------------------------------------------------------------------- */
/* step-time histogram: bin b holds times in [10^(b/100 - 2), 10^((b+1)/100 - 2)) ms */
enum { STEP_HIST_BINS = 700 };
/* continuous mode restarts the decoder after this many steps without text (~5 s) */
enum { MAX_SILENT_STEPS = 64 };
enum { MAX_PENDING_FLUSHES = 64 };

struct vox_stream {
    vox_ctx *ctx;
    vox_token_cb cb;
    void *user;
    int id;               /* this stream's number in its context (graph keys) */
    int scratch;          /* vox_open's warm-up stream: no timing lines */

    /* ---- the schedule (voxtral_stream.c); on a serving context only the scheduler
     * thread touches it ---- */
    vox_mel *mel;
    int64_t n_samples;    /* real samples taken in, all segments */
    int finished, done, failed;
    int continuous;
    int64_t seg_sample0, seg_samples;
    int nontext_run, restarts;
    const char *restart_why;
    int64_t restart_from;
    float *raw;           /* ring of the last raw_cap real samples */
    int64_t raw_cap, feed_block;
    int topk;
    int *forced;
    int n_forced;
    int n_out;            /* ids produced */
    int32_t last_id;      /* what the next decoder position is fed */
    vox_stats stats;
    double t_start;
    unsigned step_hist[STEP_HIST_BINS];
    vox_tap_fn tap;
    void *tap_user;
    float *tap_buf;
    int32_t *topk_ids_host;
    float *topk_vals_host;

    /* ---- model state: positions (schedule) and backend memory (scheduler) ---- */
    vox_pool own_pool;    /* plain context: this stream's pool of one slot */
    vox_pool *pool;       /* the pool its rings live in */
    int slot;             /* its slot there */
    float *conv_in;       /* its pool state: conv0's left context, K-1 rows of n_mel first */
    float *conv_mid;      /* ...conv1's, K-2 rows of enc_dim first (conv_keep writes them) */
    int64_t enc_pos;      /* next encoder frame position */
    int64_t n_audio;      /* audio tokens produced in this segment */
    int prefilled;
    int64_t next_pos;     /* next decoder position to run */
    int enc_last_tokens;  /* the previous encoder chunk's size (graph replay) */
    int enc_reset;        /* conv history reads as zeros in the next chunk (new segment) */
    int pending_tokens;   /* serving: tokens of mel read into mel_pend, not yet encoded */
    float *mel_pend;      /* serving: [stream chunk mel rows][n_mel] */

    /* ---- shared with client threads (serving: under ctx->mu) ---- */
    float *in;            /* samples fed, not yet taken by the scheduler */
    size_t in_len, in_cap;
    int64_t in_total;     /* samples ever fed */
    int64_t flush_at[MAX_PENDING_FLUSHES]; /* in_total at each pending flush */
    int n_flush;
    int finish_req;       /* finish requested (after in_total samples) */
    int registered;       /* in ctx->streams */
    int busy;             /* the scheduler is working on it */
    int complete;         /* finished and drained, or failed */
    int flushing;         /* scheduler: a flush's right pad is being decoded */
    int end_pending;      /* the segment's audio has ended: 1 flush, 2 finish */
    int64_t end_token;    /* ...after this many audio tokens: positions p with
                             p + 1 >= end_token are decoded as a plain context decodes
                             them inside flush/finish (no restarts) */
    vox_err err;          /* why it failed (failed = 1), kept until freed */
    vox_stats pub_stats;  /* stats as of the last tick */
    int pub_restarts;
    unsigned pub_hist[STEP_HIST_BINS];
    /* pull mode: decoded tokens wait here for vox_stream_next */
    vox_token *queue;
    size_t q_head, q_len, q_cap;
};

double vox_now_ms(void);
int vox_step_bin(double ms);

/* the padded size of a batch of n (rows or encoder tokens) on a padded context:
 * 1, 2, 3, 4, 6, 8, 12, 16, 24, ... (at most 1/3 padding), never above max */
int vox_bucket(int n, int max);

/* ---- voxtral_forward.c ---------------------------------------------------------------- */
/* One stream's part of an encoder batch: `tokens` audio tokens, frames from enc_pos,
 * rings and conv state in pool slot `slot`. */
typedef struct {
    vox_stream *s;   /* for taps only (NULL: none) */
    int tokens, slot;
} vox_enc_item;

/* Conv stem, encoder layers and adapter over n items; item j's audio embeddings are
 * left in work.adapt_mid from row (sum of the earlier items' tokens). The items' mel
 * rows must be in work.mel, side by side, their spans in work.enc_spans (row0, rows,
 * slot, reset), the frames' positions and slots in work.enc_pos / enc_slot (all
 * uploaded). With one item the rings are addressed without slots (exactly the
 * single-stream pass). */
void vox_encoder_forward(vox_ctx *ctx, vox_pool *pool, const vox_enc_item *it, int n);
/* Its two parts: the conv stems of the items (frames into work.ex), then the layers
 * and the adapter over those frames. tokens_pad > 0: the layers run over tokens_pad
 * tokens' frames in slot mode (the items' frames first, then padding frames whose
 * positions and slots the caller put in enc_pos / enc_slot too): a fixed shape a
 * graph replays whoever the items are. tokens_pad = 0: exactly the items' frames. */
void vox_encoder_stem(vox_ctx *ctx, vox_pool *pool, const vox_enc_item *it, int n);
void vox_encoder_layers(vox_ctx *ctx, vox_pool *pool, const vox_enc_item *it, int n, int tokens_pad);
/* audio tokens whose embeddings depend on a segment's first mel_frames frames alone */
int vox_encoder_prefix_tokens(const vox_config *c, int64_t mel_frames);

/* The decoder over M rows whose ids, positions (and slots) are in work.ids/pos/slot.
 * slot0 >= 0: every row is that slot's stream (a prefill, one stream's step);
 * slot0 < 0: row i is the stream in work.slot[i] (one row per stream, or groups of
 * rows: several streams' prompts). Leaves logits (at most max_batch rows) and their
 * argmax in work.ids[0..], the top-k (topk > 0) in work.topk_ids/vals, of: heads 0,
 * the last row; 1, every row; g > 1, the last row of every group of g rows. */
void vox_decoder_forward(vox_ctx *ctx, vox_pool *pool, int M, int slot0, int heads, int topk);

/* ---- voxtral_stream.c: the schedule's entry points for the scheduler ------------- */
/* takes up to feed_block real samples into the stream: raw ring and mel */
int vox_sched_take(vox_stream *s, const float *x, int64_t n);
/* starts a pending restart (new segment) if any; 0 or -1 */
int vox_sched_restart(vox_stream *s);
/* whole tokens of mel ready */
int64_t vox_sched_mel_tokens(const vox_stream *s);
/* reads `tokens` tokens of mel into dst */
int vox_sched_read_mel(vox_stream *s, float *dst, int tokens);
/* passes over `tokens` tokens of mel without computing them */
int vox_sched_skip_mel(vox_stream *s, int tokens);
/* hands the id produced at `pos` to the callback/queue; ends or restarts the segment */
int vox_sched_deliver(vox_stream *s, int64_t pos, int32_t id, const int32_t *topk_ids,
                      const float *topk_vals);
/* starts a new segment from global sample `from` (mel side; the scheduler resets the
 * conv history before the next chunk) */
int vox_segment_begin(vox_stream *s, int64_t from);
/* the segment's audio ends here (kind 1 flush, 2 finish): right pad into the mel;
 * nothing for a segment without audio (as a plain context) */
int vox_segment_end(vox_stream *s, int kind);

/* ---- voxtral_sched.c ---------------------------------------------------------------- */
/* plain context: everything pending for this one stream (encode, decode) */
int vox_sched_run_stream(vox_stream *s);
int vox_sched_warm_up(vox_ctx *ctx);
/* serving: encodes the shared left-pad prefix (ctx->prefix_tokens) into ctx->prefix */
int vox_sched_make_prefix(vox_ctx *ctx);
/* a padded serving context: its bucket graphs, made (and run once on padding rows) at open */
int vox_sched_make_graphs(vox_ctx *ctx);
int vox_sched_start(vox_ctx *ctx);      /* serving: the thread */
void vox_sched_stop(vox_ctx *ctx);
void vox_sched_wake(vox_ctx *ctx);      /* under ctx->mu */
int vox_pool_alloc(vox_ctx *ctx, vox_pool *p, int slots);
void vox_pool_free(vox_ctx *ctx, vox_pool *p);

/* ---- test hooks (serving contexts) ----------------------------------------------------
 * hold = 1: the scheduler starts no tick until released (tests build a batch of a
 * known composition); wait_idle: blocks until it has no pending work. */
void vox_sched_hold(vox_ctx *ctx, int hold);
void vox_sched_wait_idle(vox_ctx *ctx);

#endif
