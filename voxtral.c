/* voxtral.c - contexts: options, the memory plan, KV pools, open and close.
 * The forward pass is voxtral_forward.c, the per-stream schedule voxtral_stream.c,
 * the scheduler (the only code that drives the backend) voxtral_sched.c; their
 * shared structures are in voxtral_engine.h.
 *
 * The model (matches
 * transformers' VoxtralRealtimeForConditionalGeneration 5.17):
 *   audio -> log-mel (voxtral_audio.c) -> causal conv stem (k=3, strides 1 and 2,
 *   left pads k-1 and k-2, GELU) -> encoder layers (RMSNorm, interleaved RoPE,
 *   sliding-window causal attention, SwiGLU) -> final norm -> 4 frames concatenated
 *   -> adapter (linear, GELU, linear) -> decoder: input = adapter[p] + emb(id),
 *   layers with GQA + sliding window and ffn norm scaled by 1 + ada(t_cond(delay)),
 *   final norm, tied LM head, greedy argmax.
 *
 * Everything is incremental: the conv stem keeps its left context, the encoder
 * and decoder keep ring KV caches, the adapter output goes to a ring the decoder
 * reads. An offline run is one stream fed the whole file and finished, so the
 * two always agree. Schedule (as the reference's generate):
 *   prompt = BOS + PAD x (left_pad_tokens + D), L tokens, prefilled at positions
 *   0..L-1; its last row gives the first id. Position p >= L then feeds the
 *   previous id (control ids too) and gives the next one. Position p runs only
 *   when audio token p+1 exists (the reference never feeds the last position),
 *   so at most T - L ids come out of T audio tokens. EOS ends the stream.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "voxtral_engine.h"
#include "voxtral_quant.h"

double vox_now_ms(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1e3 + ts.tv_nsec / 1e6;
}

int vox_step_bin(double ms) {
    int b = ms > 0 ? (int)floor((log10(ms) + 2.0) * 100.0) : 0;
    return b < 0 ? 0 : b >= STEP_HIST_BINS ? STEP_HIST_BINS - 1 : b;
}

/* ---- delay conditioning -------------------------------------------------------- */
static float gelu_erf(float x) { return 0.5f * x * (1.0f + erff(x * 0.70710678118654752f)); }

int vox_model_set_delay(vox_model *m, int delay_tokens) {
    const vox_config *c = &m->cfg;
    const int D = c->dec.dim, half = D / 2, r = c->ada_t_cond_dim;
    float *t = malloc(sizeof(float) * D), *h = malloc(sizeof(float) * (r > 0 ? r : 1));
    if (!t || !h) {
        free(t);
        free(h);
        return vox_error("out of memory");
    }
    /* t_cond = [cos(D * f_j), sin(D * f_j)], f_j = exp(-ln(1e4) * j / half), fp32 as the reference */
    for (int j = 0; j < half; j++) {
        float f = expf(-9.21034049987792969f * (float)j / (float)half);
        float a = (float)delay_tokens * f;
        t[j] = cosf(a);
        t[half + j] = sinf(a);
    }
    for (int l = 0; l < c->dec.n_layers; l++) {
        vox_dec_layer *L = &m->dec[l];
        float *scale = (float *)L->ffn_scale.data;
        if (!c->ada_t_cond) {
            for (int d = 0; d < D; d++) scale[d] = 1.0f;
            continue;
        }
        const uint16_t *w0 = L->ada0.data, *w2 = L->ada2.data; /* [r][D], [D][r] BF16 */
        for (int i = 0; i < r; i++) {
            double s = 0;
            for (int d = 0; d < D; d++) s += (double)vox_bf16_to_f32(w0[(int64_t)i * D + d]) * t[d];
            h[i] = gelu_erf((float)s);
        }
        for (int d = 0; d < D; d++) {
            double s = 0;
            for (int i = 0; i < r; i++) s += (double)vox_bf16_to_f32(w2[(int64_t)d * r + i]) * h[i];
            scale[d] = 1.0f + (float)s;
        }
    }
    m->delay_tokens = delay_tokens;
    free(t);
    free(h);
    return 0;
}

/* ---- context ------------------------------------------------------------------ */
void vox_options_default(vox_options *opt) {
    memset(opt, 0, sizeof *opt);
    opt->backend = "auto";
    opt->verbose = 1;
}

/* Memory a context needs: BF16 matrices, KV rings, and the stream's buffers for
 * encoder chunks of `chunk_tokens` (an upper bound; vox_open checks it against the
 * device, `voxtral --check` reports it). */
vox_need vox_memory_need(const vox_model *m, int prompt_len, int chunk_tokens) {
    const vox_config *c = &m->cfg;
    const vox_tower_config *e = &c->enc, *d = &c->dec;
    vox_need n = {0};
    double enc_layer = (double)e->dim * (e->n_heads * e->head_dim * 2 + e->n_kv_heads * e->head_dim * 2) +
                       (double)e->dim * e->hidden_dim * 3;
    double dec_layer = (double)d->dim * (d->n_heads * d->head_dim * 2 + d->n_kv_heads * d->head_dim * 2) +
                       (double)d->dim * d->hidden_dim * 3;
    n.weights = 2.0 * (enc_layer * e->n_layers + dec_layer * d->n_layers + (double)c->vocab_size * d->dim +
                       (double)d->dim * (e->dim * c->downsample_factor + d->dim) +
                       (double)e->dim * (c->num_mel_bins + e->dim) * c->conv_kernel);
    if (vox_dtype_quantized(m->qfmt) || vox_dtype_quantized(m->qenc)) n.weights = vox_model_weight_bytes(m);
    double rows = (double)chunk_tokens * c->downsample_factor;
    double enc_cap = e->sliding_window + rows, dec_cap = (double)d->sliding_window + prompt_len;
    n.kv = 4.0 * ((double)e->n_layers * 2 * enc_cap * e->n_kv_heads * e->head_dim +
                  (double)d->n_layers * 2 * dec_cap * d->n_kv_heads * d->head_dim);
    double f = rows * 2 * c->num_mel_bins * c->conv_kernel * 2 + rows * 2 * e->dim * 2;
    f += rows * (e->dim * 2 + e->n_heads * e->head_dim * 2 + e->n_kv_heads * e->head_dim * 2 + e->hidden_dim * 2);
    f += (double)(prompt_len + 2 * chunk_tokens) * d->dim * 2;
    f += (double)prompt_len * (d->dim * 2 + d->n_heads * d->head_dim * 2 + d->hidden_dim * 2);
    f += c->vocab_size;
    n.workspace = f * 4 + (64u << 20);
    return n;
}

vox_need vox_memory_plan(const vox_model *m, int prompt_len, int chunk_tokens, int streams,
                         int window, int kv_bytes, int stream_chunk_tokens, int max_batch) {
    const vox_config *c = &m->cfg;
    const vox_tower_config *e = &c->enc, *d = &c->dec;
    vox_need n = vox_memory_need(m, prompt_len, chunk_tokens);
    double srows = (double)stream_chunk_tokens * c->downsample_factor;
    double enc_cap = e->sliding_window + srows, dec_cap = (double)window + prompt_len;
    double kv = (double)kv_bytes * ((double)e->n_layers * 2 * enc_cap * e->n_kv_heads * e->head_dim +
                                    (double)d->n_layers * 2 * dec_cap * d->n_kv_heads * d->head_dim);
    double acap = prompt_len + 2.0 * stream_chunk_tokens + 2;
    double conv = ((c->conv_kernel - 1) + srows * 2) * c->num_mel_bins + ((c->conv_kernel - 2) + srows * 2) * e->dim;
    n.per_stream = kv + 4.0 * (acap * d->dim + conv);
    n.streams = streams;
    n.kv = streams * n.per_stream;
    /* the batched step's rows: activations and logits per row; the batched prompts'
     * rows beyond one prompt's (streams > 1: a serving plan) */
    n.workspace += 4.0 * max_batch * (d->dim * 2 + d->n_heads * d->head_dim * 2 + d->hidden_dim * 2 +
                                      (double)c->vocab_size + 2 * 1024);
    if (max_batch > 1) {
        const int pb = vox_prefill_batch(max_batch);
        n.workspace += 4.0 * prompt_len * (pb - 1) *
                       (d->dim + d->n_heads * d->head_dim * 2 + d->n_kv_heads * d->head_dim * 2 + d->hidden_dim * 2.0);
    }
    return n;
}

static double need_total(const vox_need *n) { return n->weights + n->kv + n->workspace; }

/* MemAvailable, bytes (0 when unknown) */
double vox_host_available(void) {
    FILE *f = fopen("/proc/meminfo", "r");
    char key[64];
    long long kb;
    double avail = 0;
    while (f && fscanf(f, "%63s %lld kB\n", key, &kb) == 2)
        if (!strcmp(key, "MemAvailable:")) avail = kb * 1024.0;
    if (f) fclose(f);
    return avail;
}

/* ---- pools and the workspace ---------------------------------------------------------- */
int vox_pool_alloc(vox_ctx *ctx, vox_pool *p, int slots) {
    vox_backend *be = ctx->be;
    const vox_config *c = &ctx->model.cfg;
    const vox_tower_config *e = &c->enc, *d = &c->dec;
    memset(p, 0, sizeof *p);
    p->slots = slots;
    p->pad_slot = -1;
    p->esize = be->kv_dtype == VOX_DT_BF16 ? 2 : 4;
    p->enc_cap = e->sliding_window + ctx->stream_chunk_tokens * c->mel_per_token / 2;
    p->dec_cap = ctx->dec_window + ctx->prompt_len; /* a prefill never overwrites a visible key */
    p->acap = ctx->prompt_len + 2 * ctx->stream_chunk_tokens + 2;
    size_t enc = (size_t)e->n_layers * 2 * slots * p->enc_cap * e->n_kv_heads * e->head_dim * p->esize;
    size_t dec = (size_t)d->n_layers * 2 * slots * p->dec_cap * d->n_kv_heads * d->head_dim * p->esize;
    size_t au = (size_t)slots * p->acap * d->dim * sizeof(float);
    const int K = c->conv_kernel, mel_rows = ctx->stream_chunk_tokens * c->mel_per_token;
    p->conv_in_floats = (size_t)(K - 1 + mel_rows) * c->num_mel_bins;
    p->conv_floats = p->conv_in_floats + (size_t)(K - 2 + mel_rows) * e->dim;
    size_t cv = (size_t)slots * p->conv_floats * sizeof(float);
    p->used = calloc(slots, 1);
    p->enc_kv = be->alloc(be, enc);
    p->dec_kv = p->enc_kv ? be->alloc(be, dec) : NULL;
    p->audio = p->dec_kv ? be->alloc(be, au) : NULL;
    p->conv = p->audio ? be->alloc(be, cv) : NULL;
    if (!p->used || !p->conv) {
        vox_pool_free(ctx, p);
        return vox_error("KV pool of %d stream%s (%.1f MiB): %s", slots, slots == 1 ? "" : "s",
                         (enc + dec + au + cv) / 1048576.0, p->used ? vox_last_error() : "out of memory");
    }
    p->bytes = enc + dec + au + cv;
    return 0;
}

void vox_pool_free(vox_ctx *ctx, vox_pool *p) {
    vox_backend *be = ctx->be;
    if (p->enc_kv) be->free(be, p->enc_kv);
    if (p->dec_kv) be->free(be, p->dec_kv);
    if (p->audio) be->free(be, p->audio);
    if (p->conv) be->free(be, p->conv);
    free(p->used);
    memset(p, 0, sizeof *p);
}

/* the last slot of a padded context's pool holds padding rows: taken for good, its
 * audio ring zeros (what a padding row's embedding reads) */
static int pool_add_pad_slot(vox_ctx *ctx, vox_pool *p) {
    const size_t n = (size_t)p->acap * ctx->model.cfg.dec.dim;
    float *zeros = calloc(n, sizeof(float));
    if (!zeros) return vox_error("KV pool: out of memory");
    p->pad_slot = p->slots - 1;
    p->used[p->pad_slot] = 1;
    ctx->be->upload(ctx->be, p->audio + (size_t)p->pad_slot * n, zeros, sizeof(float) * n);
    int rc = ctx->be->sync(ctx->be);
    free(zeros);
    return rc;
}

int vox_bucket(int n, int max) {
    int b = 1;
    while (b < n) b = b < 4 ? b + 1 : (b & (b - 1)) ? b / 3 * 4 : b / 2 * 3; /* 4 6 8 12 16 24 */
    return b < max ? b : max;
}

int vox_pool_take(vox_pool *p) {
    for (int i = 0; i < p->slots; i++)
        if (!p->used[i]) {
            p->used[i] = 1;
            return i;
        }
    return -1;
}

void vox_pool_give(vox_pool *p, int slot) {
    if (slot >= 0 && slot < p->slots) p->used[slot] = 0;
}

void *vox_pool_enc(const vox_pool *p, const vox_config *c, int l, int kv) {
    size_t ring = (size_t)p->slots * p->enc_cap * c->enc.n_kv_heads * c->enc.head_dim;
    return (char *)p->enc_kv + ((size_t)l * 2 + kv) * ring * p->esize;
}

void *vox_pool_dec(const vox_pool *p, const vox_config *c, int l, int kv) {
    size_t ring = (size_t)p->slots * p->dec_cap * c->dec.n_kv_heads * c->dec.head_dim;
    return (char *)p->dec_kv + ((size_t)l * 2 + kv) * ring * p->esize;
}

static void work_free(vox_ctx *ctx) {
    vox_backend *be = ctx->be;
    vox_work *w = &ctx->work;
    void *bufs[] = {w->conv_cols, w->ex, w->exn, w->eq, w->ek, w->ev, w->eattn, w->eg, w->eu,
                    w->adapt_mid, w->enc_pos, w->enc_slot, w->mel, w->enc_spans, w->dx, w->dq, w->dk,
                    w->dv, w->dattn, w->dg, w->du, w->logits, w->ids, w->pos, w->slot, w->topk_ids,
                    w->topk_vals};
    for (size_t i = 0; i < sizeof bufs / sizeof bufs[0]; i++)
        if (bufs[i]) be->free(be, bufs[i]);
    void *host[] = {w->out_ids, w->enc_pos_host, w->enc_slot_host, w->ids_host, w->pos_host, w->slot_host, w->mel_host,
                    w->enc_spans_host};
    for (size_t i = 0; i < sizeof host / sizeof host[0]; i++)
        if (host[i]) be->host_free(be, host[i]);
    memset(w, 0, sizeof *w);
}

#define ALLOC(ptr, count)                                                  \
    do {                                                                   \
        (ptr) = be->alloc(be, (size_t)(count) * sizeof(*(ptr)));           \
        if (!(ptr)) goto fail;                                             \
    } while (0)
/* host staging of what the ops upload: be->host_alloc (CUDA: pinned, so an upload is
 * a true async copy, not a staged one that may wait for the stream), zeroed */
#define HALLOC(ptr, count)                                                 \
    do {                                                                   \
        (ptr) = be->host_alloc(be, (size_t)(count) * sizeof(*(ptr)));      \
        if (!(ptr)) { vox_error("out of memory"); goto fail; }             \
        memset((ptr), 0, (size_t)(count) * sizeof(*(ptr)));                \
    } while (0)

/* The forward pass's buffers: one encoder batch, one decoder batch (a prefill or a
 * step of max_batch rows). */
static int work_alloc(vox_ctx *ctx, int max_batch, int topk_max) {
    vox_backend *be = ctx->be;
    vox_work *w = &ctx->work;
    const vox_config *c = &ctx->model.cfg;
    const vox_tower_config *e = &c->enc, *d = &c->dec;
    const int K = c->conv_kernel;
    memset(w, 0, sizeof *w);
    const int mel_rows = ctx->enc_chunk_tokens * c->mel_per_token;
    const int R = w->enc_rows_max = mel_rows / 2;
    const int e_q = e->n_heads * e->head_dim, e_kv = e->n_kv_heads * e->head_dim;
    size_t cols = (size_t)mel_rows * c->num_mel_bins * K, cols1 = (size_t)R * e->dim * K;
    ALLOC(w->conv_cols, cols > cols1 ? cols : cols1);
    ALLOC(w->ex, (size_t)R * e->dim);
    ALLOC(w->exn, (size_t)R * e->dim);
    ALLOC(w->eq, (size_t)R * e_q);
    ALLOC(w->ek, (size_t)R * e_kv);
    ALLOC(w->ev, (size_t)R * e_kv);
    ALLOC(w->eattn, (size_t)R * (e_q > d->dim ? e_q : d->dim));
    ALLOC(w->eg, (size_t)R * (e->hidden_dim > 2 * e->dim ? e->hidden_dim : 2 * e->dim)); /* also conv0's rows */
    ALLOC(w->eu, (size_t)R * e->hidden_dim);
    ALLOC(w->adapt_mid, (size_t)ctx->enc_chunk_tokens * d->dim);
    ALLOC(w->enc_pos, R);
    ALLOC(w->enc_slot, R);
    HALLOC(w->enc_pos_host, R);
    HALLOC(w->enc_slot_host, R);
    HALLOC(w->mel_host, (size_t)mel_rows * c->num_mel_bins);
    ALLOC(w->mel, (size_t)mel_rows * c->num_mel_bins);
    ALLOC(w->enc_spans, ctx->enc_chunk_tokens);
    HALLOC(w->enc_spans_host, ctx->enc_chunk_tokens);

    const int d_q = d->n_heads * d->head_dim, d_kv = d->n_kv_heads * d->head_dim;
    w->max_batch = max_batch;
    /* serving: up to VOX_PREFILL_BATCH streams' prompts in one pass (their heads fit
     * the logits' max_batch rows) */
    w->prefill_batch = ctx->serving ? vox_prefill_batch(max_batch) : 1;
    const int PR = ctx->prompt_len * w->prefill_batch;
    const int DR = w->dec_rows_max = PR > max_batch ? PR : max_batch;
    ALLOC(w->dx, (size_t)DR * d->dim);
    ALLOC(w->dq, (size_t)DR * d_q);
    ALLOC(w->dk, (size_t)DR * d_kv);
    ALLOC(w->dv, (size_t)DR * d_kv);
    ALLOC(w->dattn, (size_t)DR * d_q);
    ALLOC(w->dg, (size_t)DR * d->hidden_dim);
    ALLOC(w->du, (size_t)DR * d->hidden_dim);
    ALLOC(w->logits, (size_t)max_batch * c->vocab_size);
    ALLOC(w->ids, DR);
    ALLOC(w->pos, DR);
    ALLOC(w->slot, DR);
    HALLOC(w->ids_host, DR);
    HALLOC(w->pos_host, DR);
    HALLOC(w->slot_host, DR);
    w->topk_max = topk_max;
    if (topk_max) {
        ALLOC(w->topk_ids, (size_t)max_batch * topk_max);
        ALLOC(w->topk_vals, (size_t)max_batch * topk_max);
    }
    w->out_ids = be->host_alloc(be, sizeof(int32_t) * STEP_QUEUE * max_batch);
    if (!w->out_ids) goto fail;
    return 0;
fail:
    work_free(ctx);
    return -1;
}

/* top-k buffers for k entries per row (plain contexts grow them when a stream asks) */
int vox_work_topk(vox_ctx *ctx, int k) {
    vox_backend *be = ctx->be;
    vox_work *w = &ctx->work;
    if (k <= w->topk_max) return 0;
    if (ctx->serving) return vox_error("top-k %d: more than this serving context holds (%d)", k, w->topk_max);
    int32_t *ids = be->alloc(be, sizeof(int32_t) * w->max_batch * k);
    float *vals = ids ? be->alloc(be, sizeof(float) * w->max_batch * k) : NULL;
    if (!vals) {
        if (ids) be->free(be, ids);
        return -1;
    }
    if (w->topk_ids) be->free(be, w->topk_ids);
    if (w->topk_vals) be->free(be, w->topk_vals);
    w->topk_ids = ids;
    w->topk_vals = vals;
    w->topk_max = k;
    return 0;
}

/* ---- open / close ------------------------------------------------------------------------ */
static int make_need(vox_ctx *ctx, int chunk_tokens, int kv_bytes) {
    const vox_options *o = &ctx->opt;
    ctx->enc_chunk_tokens = chunk_tokens;
    /* a serving context's streams add at most 16 tokens (1.28 s) each to an encoder
     * batch: their conv state stays small, the batch spreads over more streams */
    ctx->stream_chunk_tokens = ctx->serving && chunk_tokens > 16 ? 16 : chunk_tokens;
    int streams = ctx->serving ? o->max_streams : 1;
    int batch = !ctx->serving ? 1 : o->max_batch > 0 ? o->max_batch : o->max_streams < VOX_MAX_BATCH ? o->max_streams : VOX_MAX_BATCH;
    ctx->need = vox_memory_plan(&ctx->model, ctx->prompt_len, chunk_tokens, streams, ctx->dec_window,
                                kv_bytes, ctx->stream_chunk_tokens, batch);
    if (ctx->serving) /* the pad slot of a padded context, the shared prefix's stream (counted on every backend) */
        ctx->need.workspace += 2 * ctx->need.per_stream;
    return batch;
}

/* Per backend: the workspace, the pool (serving), the warm-up. */
static int backend_setup(vox_ctx *ctx, int batch) {
    vox_backend *be = ctx->be;
    be->kv_dtype = ctx->opt.kv_dtype && !strcmp(ctx->opt.kv_dtype, "bf16") ? VOX_DT_BF16 : VOX_DT_F32;
    if (be->kv_dtype == VOX_DT_BF16 && !be->kv_bf16)
        return vox_error("kv_dtype bf16: the %s backend has no BF16 KV cache yet (use f32)", be->name);
    if (work_alloc(ctx, batch, ctx->serving ? 1024 : 0) != 0) return -1;
    /* graphs need fixed shapes: batches padded to buckets, one graph each (voxtral_sched.c) */
    /* (VOX_PAD_BATCHES=1: padded without graphs too: how the CPU tests the padding) */
    const char *pad_env = getenv("VOX_PAD_BATCHES");
    ctx->padded = ctx->serving && (be->graphs || (pad_env && !strcmp(pad_env, "1")));
    if (ctx->serving && vox_pool_alloc(ctx, &ctx->pool, ctx->opt.max_streams + ctx->padded) != 0) return -1;
    if (ctx->padded && pool_add_pad_slot(ctx, &ctx->pool) != 0) return -1;
    if (be->warm_up && vox_sched_warm_up(ctx) != 0) return -1;
    if (ctx->padded && vox_sched_make_graphs(ctx) != 0) return -1;
    if (ctx->serving && vox_sched_make_prefix(ctx) != 0) return -1;
    return 0;
}

static void backend_teardown(vox_ctx *ctx) {
    if (!ctx->be) return;
    vox_stream_free(ctx->prefix);
    ctx->prefix = NULL;
    vox_pool_free(ctx, &ctx->pool);
    work_free(ctx);
    ctx->be->destroy(ctx->be);
    ctx->be = NULL;
}

int vox_model_memory(const char *dir, const char *backend, const char *quant, int kv_window,
                     vox_memory_estimate *out) {
    if (strcmp(backend, "cpu") && strcmp(backend, "cuda"))
        return vox_error("vox_model_memory: backend '%s' (use cpu or cuda)", backend);
    vox_quant q;
    if (quant && vox_quant_parse(quant, &q) != 0) return -1;
    vox_model m;
    if (vox_model_load(&m, dir) != 0) return -1; /* mmaps the checkpoint: reads no weights */
    if (kv_window > 0 && kv_window < m.cfg.dec.sliding_window) m.cfg.dec.sliding_window = kv_window; /* as vox_open */
    int ms_per_token = (int)lround(1000.0 / m.cfg.frame_rate);
    memset(out, 0, sizeof *out);
    out->prompt_len = 1 + m.tok.left_pad_tokens + m.tok.delay_ms / (ms_per_token > 0 ? ms_per_token : 80);
    out->dec_window = m.cfg.dec.sliding_window;
    out->enc_window = m.cfg.enc.sliding_window;
    vox_need n = vox_memory_need(&m, out->prompt_len,
                                 strcmp(backend, "cpu") ? VOX_CUDA_CHUNK_TOKENS : VOX_CPU_CHUNK_TOKENS);
    out->weights = quant ? vox_quant_model_bytes(&m, &q) : n.weights; /* n: the checkpoint's own format */
    out->kv = n.kv;
    out->workspace = n.workspace;
    snprintf(out->format, sizeof out->format, "%s", quant ? quant : vox_dtype_name(m.qfmt));
    vox_model_free(&m);
    return 0;
}


vox_ctx *vox_open(const char *model_dir, const vox_options *opt_in) {
    vox_options opt;
    if (opt_in) opt = *opt_in;
    else vox_options_default(&opt);
    if (!opt.backend) opt.backend = "auto";
    if (strcmp(opt.backend, "auto") && strcmp(opt.backend, "cpu") && strcmp(opt.backend, "cuda")) {
        vox_error("unknown backend '%s' (use auto, cpu or cuda)", opt.backend);
        return NULL;
    }
    if (opt.kv_dtype && strcmp(opt.kv_dtype, "f32") && strcmp(opt.kv_dtype, "bf16")) {
        vox_error("kv_dtype '%s': use f32 or bf16", opt.kv_dtype);
        return NULL;
    }
    if (opt.max_streams < 0 || opt.max_streams > 100000 || opt.max_batch < 0 || opt.max_batch > 255 ||
        opt.kv_window < 0 || opt.tick_ms > 10000) {
        vox_error("max_streams %d, max_batch %d, kv_window %d, tick_ms %d: out of range (0..100000, 0..255, >= 0, "
                  "<= 10000)", opt.max_streams, opt.max_batch, opt.kv_window, opt.tick_ms);
        return NULL;
    }
    double t0 = vox_now_ms();
    vox_ctx *ctx = calloc(1, sizeof *ctx);
    if (!ctx) {
        vox_error("out of memory");
        return NULL;
    }
    ctx->opt = opt;
    ctx->serving = opt.max_streams > 0;
    ctx->tick_ms = opt.tick_ms < 0 ? 0 : opt.tick_ms ? opt.tick_ms : VOX_TICK_MS;
    ctx->drain_rounds = getenv("VOX_DRAIN_ROUNDS") && atoi(getenv("VOX_DRAIN_ROUNDS")) > 0;
    pthread_mutex_init(&ctx->mu, NULL);
    pthread_condattr_t ca; /* the tick gate's timed waits run on the monotonic clock */
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&ctx->cv_work, &ca);
    pthread_condattr_destroy(&ca);
    pthread_cond_init(&ctx->cv_done, NULL);
    vox_model *m = &ctx->model;
    if (vox_model_load(m, model_dir) != 0) goto fail;
    if (opt.quant) {
        vox_quant q;
        if (vox_quant_parse(opt.quant, &q) != 0 || vox_model_quantize(m, &q, opt.verbose) != 0) goto fail;
    }
    const vox_config *c = &m->cfg;
    if (c->mel_per_token != 2 * c->downsample_factor || c->conv_kernel < 2) {
        vox_error("%s/params.json: unsupported geometry: %d mel frames per token, downsample %d, "
                  "conv kernel %d (the conv stem halves the frame rate, so frames per token must be "
                  "2 x downsample)", model_dir, c->mel_per_token, c->downsample_factor, c->conv_kernel);
        goto fail;
    }
    int delay_ms = opt.delay_ms ? opt.delay_ms : m->tok.delay_ms;
    int ms_per_token = (int)lround(1000.0 / c->frame_rate);
    if (delay_ms <= 0 || delay_ms > VOX_MAX_DELAY_MS || delay_ms % ms_per_token != 0) {
        vox_error("delay %d ms: must be a multiple of %d ms, at most %d", delay_ms, ms_per_token,
                  VOX_MAX_DELAY_MS);
        goto fail;
    }
    ctx->delay_tokens = delay_ms / ms_per_token;
    ctx->prompt_len = 1 + m->tok.left_pad_tokens + ctx->delay_tokens;
    ctx->dec_window = opt.kv_window > 0 && opt.kv_window < c->dec.sliding_window ? opt.kv_window
                                                                                : c->dec.sliding_window;
    if (vox_model_set_delay(m, ctx->delay_tokens) != 0) goto fail;
    const int kv_bytes = opt.kv_dtype && !strcmp(opt.kv_dtype, "bf16") ? 2 : 4;

    /* backend: explicit choice fails loudly; auto falls back to the CPU and says so */
    int batch = make_need(ctx, VOX_CPU_CHUNK_TOKENS, kv_bytes);
    if (!strcmp(opt.backend, "cuda") || (!strcmp(opt.backend, "auto") && vox_cuda_built())) {
        batch = make_need(ctx, VOX_CUDA_CHUNK_TOKENS, kv_bytes);
        ctx->be = vox_cuda_backend_new((size_t)need_total(&ctx->need), opt.gpu_path);
        if (ctx->be) ctx->be->verbose = opt.verbose;
        /* the warm-up is the first real use of the device: a failure there falls
         * back like a failed upload */
        if (ctx->be && (ctx->be->upload_weights(ctx->be, m) != 0 || backend_setup(ctx, batch) != 0)) {
            char why[1024];
            snprintf(why, sizeof why, "%s", vox_last_error());
            backend_teardown(ctx);
            vox_error("%s", why);
        }
        if (!ctx->be) {
            if (!strcmp(opt.backend, "cuda")) goto fail;
            const char *why = vox_last_error(); /* an informational line: --quiet drops it */
            if (opt.verbose >= 1)
                fprintf(stderr, "voxtral: CUDA backend unavailable: %s; falling back to the CPU\n",
                        strncmp(why, "cuda: ", 6) ? why : why + 6);
            batch = make_need(ctx, VOX_CPU_CHUNK_TOKENS, kv_bytes);
        }
    }
    if (!ctx->be) {
        if (ctx->serving) {
            double avail = vox_host_available(), need = need_total(&ctx->need);
            if (avail > 0 && need > avail) {
                vox_error("%d streams need %.2f GiB (weights %.2f, workspace %.2f, KV and stream state "
                          "%.2f MiB each) but %.2f GiB of RAM is available: fewer streams, a smaller "
                          "kv_window or kv_dtype bf16", opt.max_streams, need / 1073741824.0,
                          ctx->need.weights / 1073741824.0, ctx->need.workspace / 1073741824.0,
                          ctx->need.per_stream / 1048576.0, avail / 1073741824.0);
                goto fail;
            }
        }
        ctx->be = vox_cpu_backend_new(opt.threads);
        if (!ctx->be || ctx->be->upload_weights(ctx->be, m) != 0 || backend_setup(ctx, batch) != 0) goto fail;
    }
    if (ctx->serving) {
        ctx->streams = calloc(opt.max_streams, sizeof *ctx->streams);
        if (!ctx->streams) {
            vox_error("out of memory");
            goto fail;
        }
        ctx->sstats.max_streams = opt.max_streams;
        ctx->sstats.pool_bytes = (double)ctx->pool.bytes;
        ctx->sstats.stream_bytes = ctx->need.per_stream;
        if (vox_sched_start(ctx) != 0) goto fail;
    }
    snprintf(ctx->backend_desc, sizeof ctx->backend_desc, "%s", ctx->be->device_name);
    ctx->load_ms = vox_now_ms() - t0;
    if (opt.verbose >= 1)
        fprintf(stderr, "voxtral: backend %s, delay %d ms (%d tokens)\n", ctx->backend_desc,
                ctx->delay_tokens * ms_per_token, ctx->delay_tokens);
    if (opt.verbose >= 1 && ctx->serving)
        fprintf(stderr, "voxtral: serving up to %d streams, batches of %d, KV %s window %d: pool %.1f MiB\n",
                opt.max_streams, batch, kv_bytes == 2 ? "bf16" : "f32", ctx->dec_window,
                ctx->pool.bytes / 1048576.0);
    return ctx;
fail:
    vox_close(ctx);
    return NULL;
}

/* Streams still open on a closing serving context are the caller's to free first;
 * the scheduler stops here. */
void vox_close(vox_ctx *ctx) {
    if (!ctx) return;
    vox_sched_stop(ctx);
    free(ctx->streams);
    backend_teardown(ctx);
    vox_model_free(&ctx->model);
    pthread_mutex_destroy(&ctx->mu);
    pthread_cond_destroy(&ctx->cv_work);
    pthread_cond_destroy(&ctx->cv_done);
    free(ctx);
}

const char *vox_backend_name(const vox_ctx *ctx) { return ctx->backend_desc; }
int vox_sample_rate(const vox_ctx *ctx) { return ctx->model.cfg.sampling_rate; }
double vox_load_ms(const vox_ctx *ctx) { return ctx->load_ms; }
size_t vox_feed_block(const vox_ctx *ctx) {
    return (size_t)ctx->enc_chunk_tokens * ctx->model.cfg.samples_per_token;
}
size_t vox_backend_bytes(const vox_ctx *ctx) { return ctx->be->mem_bytes; }
double vox_measure_bandwidth(vox_ctx *ctx) {
    return ctx->be->measure_bandwidth ? ctx->be->measure_bandwidth(ctx->be) : 0.0;
}
/* bytes one pass over w reads: the backend's copy when it has one (fp16/fp32 paths) */
static double weight_read_bytes(const vox_weight *w) { return vox_weight_dev_bytes(w); }

double vox_step_weight_bytes(const vox_ctx *ctx) {
    const vox_model *m = &ctx->model;
    double b = 0;
    for (int l = 0; l < m->cfg.dec.n_layers; l++) {
        const vox_dec_layer *L = &m->dec[l];
        const vox_weight *w[] = {&L->wq, &L->wk, &L->wv, &L->wo, &L->w1, &L->w3, &L->w2};
        for (int i = 0; i < 7; i++) b += weight_read_bytes(w[i]);
    }
    return b + weight_read_bytes(&m->tok_emb); /* the tied LM head */
}

const char *vox_token_piece(const vox_ctx *ctx, int id, int *len) {
    return vox_token_bytes(&ctx->model.tok, id, len);
}

int vox_delay_ms(const vox_ctx *ctx) {
    return ctx->delay_tokens * (int)lround(1000.0 / ctx->model.cfg.frame_rate);
}

void vox_serve_stats_get(vox_ctx *ctx, vox_serve_stats *st) {
    if (!ctx->serving) {
        memset(st, 0, sizeof *st);
        return;
    }
    pthread_mutex_lock(&ctx->mu);
    *st = ctx->sstats;
    pthread_mutex_unlock(&ctx->mu);
}

const char *vox_stream_error(const vox_stream *s) { return s->failed ? s->err.msg : NULL; }
const char *vox_ctx_error(const vox_ctx *ctx) { return ctx->be->err.set ? ctx->be->err.msg : NULL; }
vox_backend *vox_ctx_backend(vox_ctx *ctx) { return ctx->be; }
