/* voxtral.c - the forward pass and the streaming schedule, written once over the
 * backend op table (voxtral_internal.h).
 *
 * Matches transformers' VoxtralRealtimeForConditionalGeneration (5.17):
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

#include "voxtral_internal.h"
#include "voxtral_quant.h"

static double now_ms(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1e3 + ts.tv_nsec / 1e6;
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
struct vox_ctx {
    vox_model model;
    vox_backend *be;
    vox_options opt;
    int delay_tokens, prompt_len;
    int enc_chunk_tokens; /* audio tokens per encoder chunk */
    char backend_desc[192];
    double load_ms;
    int streams_made; /* each stream's graph keys are its own: ids from this */
};

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

static size_t need_bytes(const vox_ctx *ctx) {
    vox_need n = vox_memory_need(&ctx->model, ctx->prompt_len, ctx->enc_chunk_tokens);
    return (size_t)(n.weights + n.kv + n.workspace);
}

int vox_model_memory(const char *dir, const char *backend, const char *quant, vox_memory_estimate *out) {
    if (strcmp(backend, "cpu") && strcmp(backend, "cuda"))
        return vox_error("vox_model_memory: backend '%s' (use cpu or cuda)", backend);
    vox_quant q;
    if (quant && vox_quant_parse(quant, &q) != 0) return -1;
    vox_model m;
    if (vox_model_load(&m, dir) != 0) return -1; /* mmaps the checkpoint: reads no weights */
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

static int warm_up(vox_ctx *ctx);

vox_ctx *vox_open(const char *model_dir, const vox_options *opt_in) {
    vox_options opt;
    if (opt_in) opt = *opt_in;
    else vox_options_default(&opt);
    if (!opt.backend) opt.backend = "auto";
    if (strcmp(opt.backend, "auto") && strcmp(opt.backend, "cpu") && strcmp(opt.backend, "cuda")) {
        vox_error("unknown backend '%s' (use auto, cpu or cuda)", opt.backend);
        return NULL;
    }
    double t0 = now_ms();
    vox_ctx *ctx = calloc(1, sizeof *ctx);
    if (!ctx) {
        vox_error("out of memory");
        return NULL;
    }
    ctx->opt = opt;
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
    if (vox_model_set_delay(m, ctx->delay_tokens) != 0) goto fail;

    /* backend: explicit choice fails loudly; auto falls back to the CPU and says so */
    ctx->enc_chunk_tokens = VOX_CPU_CHUNK_TOKENS;
    size_t need = need_bytes(ctx);
    if (!strcmp(opt.backend, "cuda") || (!strcmp(opt.backend, "auto") && vox_cuda_built())) {
        ctx->enc_chunk_tokens = VOX_CUDA_CHUNK_TOKENS;
        need = need_bytes(ctx);
        ctx->be = vox_cuda_backend_new(need, opt.gpu_path);
        if (ctx->be) ctx->be->verbose = opt.verbose;
        /* the warm-up is the first real use of the device: a failure there falls
         * back like a failed upload */
        if (ctx->be && (ctx->be->upload_weights(ctx->be, m) != 0 || (ctx->be->warm_up && warm_up(ctx) != 0))) {
            char why[1024];
            snprintf(why, sizeof why, "%s", vox_last_error());
            ctx->be->destroy(ctx->be);
            ctx->be = NULL;
            vox_error("%s", why);
        }
        if (!ctx->be) {
            if (!strcmp(opt.backend, "cuda")) goto fail;
            const char *why = vox_last_error(); /* an informational line: --quiet drops it */
            if (opt.verbose >= 1)
                fprintf(stderr, "voxtral: CUDA backend unavailable: %s; falling back to the CPU\n",
                        strncmp(why, "cuda: ", 6) ? why : why + 6);
            ctx->enc_chunk_tokens = VOX_CPU_CHUNK_TOKENS;
        }
    }
    if (!ctx->be) {
        ctx->be = vox_cpu_backend_new(opt.threads);
        if (!ctx->be || ctx->be->upload_weights(ctx->be, m) != 0) goto fail;
    }
    snprintf(ctx->backend_desc, sizeof ctx->backend_desc, "%s", ctx->be->device_name);
    ctx->load_ms = now_ms() - t0;
    if (opt.verbose >= 1)
        fprintf(stderr, "voxtral: backend %s, delay %d ms (%d tokens)\n", ctx->backend_desc,
                ctx->delay_tokens * ms_per_token, ctx->delay_tokens);
    return ctx;
fail:
    vox_close(ctx);
    return NULL;
}

void vox_close(vox_ctx *ctx) {
    if (!ctx) return;
    if (ctx->be) ctx->be->destroy(ctx->be);
    vox_model_free(&ctx->model);
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

int vox_delay_ms(const vox_ctx *ctx) {
    return ctx->delay_tokens * (int)lround(1000.0 / ctx->model.cfg.frame_rate);
}

/* ---- stream state ---------------------------------------------------------------- */
/* Graph keys: a stream's own (streams alive together on one backend must never
 * replay each other's graph, which holds their buffers), a kind, and for the
 * encoder the chunk's tokens (graph_key below). */
enum { GRAPH_STEP = 0, GRAPH_STEP_TOPK = 1, GRAPH_ENCODER = 2, GRAPH_MAX_SUB = 255 };
/* decoder steps in flight on an async backend: the running one and one queued
 * (each has an output slot and a fence of its own) */
enum { STEP_QUEUE = 2 };
_Static_assert((int)STEP_QUEUE <= (int)VOX_FENCES, "a fence per queued step");
/* step-time histogram: bin b holds times in [10^(b/100 - 2), 10^((b+1)/100 - 2)) ms */
enum { STEP_HIST_BINS = 700 };
/* continuous mode restarts the decoder after this many steps without text (~5 s) */
enum { MAX_SILENT_STEPS = 64 };

static int step_bin(double ms) {
    int b = ms > 0 ? (int)floor((log10(ms) + 2.0) * 100.0) : 0;
    return b < 0 ? 0 : b >= STEP_HIST_BINS ? STEP_HIST_BINS - 1 : b;
}

struct vox_stream {
    vox_ctx *ctx;
    vox_backend *be;
    vox_token_cb cb;
    void *user;
    vox_mel *mel;
    float *mel_host;      /* [chunk mel rows][n_mel] */
    int64_t n_samples;    /* real samples fed, all segments */
    int finished, done, failed;
    vox_err err;          /* what failed the stream (failed = 1), kept until freed */

    /* segments (continuous mode and flush): a segment is what the reference sees
     * as one utterance: left pad, its audio, right pad. A restart begins a new one
     * from the first audio the last one had not transcribed yet. */
    int continuous;
    int64_t seg_sample0;  /* global index of the segment's first real sample */
    int64_t seg_samples;  /* real samples fed into this segment */
    int nontext_run;      /* consecutive steps without text */
    int restarts;
    const char *restart_why; /* pending restart, or NULL */
    int64_t restart_from;    /* global sample index it resumes from */
    float *raw;           /* ring of the last raw_cap real samples (global index % raw_cap) */
    int64_t raw_cap;
    int64_t feed_block;   /* feed() works in pieces of at most this many samples */

    /* encoder (backend memory) */
    int enc_rows_max;     /* encoder frames per chunk */
    int enc_cap;          /* encoder KV ring slots */
    int64_t enc_pos;      /* next encoder frame position */
    float *conv_in;       /* [(K-1) + mel rows][n_mel]: history + new mel */
    float *conv_cols;     /* im2col scratch, max(mel rows * n_mel * K, enc rows * enc_dim * K) */
    float *conv_mid;      /* [(K-2) + mel rows][enc_dim]: history + conv0 out */
    float *ex, *exn, *eq, *ek, *ev, *eattn, *eg, *eu; /* encoder activations */
    float *ekv;           /* [layers][2][enc_cap][kv_dim] */
    float *adapt_mid;     /* [chunk tokens][dec_dim] */
    int32_t *enc_pos_buf; /* [enc_rows_max] */
    int32_t *enc_pos_host;

    /* audio-embedding ring */
    float *audio;         /* [acap][dec_dim] */
    int acap;
    int64_t n_audio;      /* audio tokens produced */

    /* decoder */
    int rows_max;         /* prompt_len */
    int dec_cap;
    float *dx, *dq, *dk, *dv, *dattn, *dg, *du, *logits;
    float *dkv;           /* [layers][2][dec_cap][kv_dim] */
    int32_t *ids_buf, *dpos_buf; /* [rows_max] */
    int32_t *topk_ids_buf;
    float *topk_vals_buf;
    int topk;
    int32_t *topk_ids_host;
    float *topk_vals_host;
    int32_t *out_ids;     /* [STEP_QUEUE] host (be->host_alloc): the ids of queued steps */
    int id;               /* this stream's number in its context (graph keys) */
    int scratch;          /* vox_open's warm-up stream: no timing lines */
    int enc_last_tokens;  /* the previous encoder chunk's size (graph replay) */
    int prefilled;
    int64_t next_pos;     /* next decoder position to run */
    int n_out;            /* ids produced */
    int *forced;
    int n_forced;

    vox_stats stats;
    double t_start;
    unsigned step_hist[STEP_HIST_BINS]; /* step times, log bins: bounded memory */
    vox_tap_fn tap;
    void *tap_user;
    float *tap_buf;
    /* pull mode (no callback): decoded tokens wait here for vox_stream_next */
    vox_token *queue;
    size_t q_head, q_len, q_cap;
};

static int graph_key(const vox_stream *s, int kind, int sub) {
    return (s->id * (GRAPH_MAX_SUB + 1) + sub) * 4 + kind;
}

#define ALLOC(ptr, count)                                                  \
    do {                                                                   \
        (ptr) = be->alloc(be, (size_t)(count) * sizeof(*(ptr)));           \
        if (!(ptr)) goto fail;                                             \
    } while (0)

vox_stream *vox_stream_new(vox_ctx *ctx, vox_token_cb cb, void *user) {
    vox_stream *s = calloc(1, sizeof *s);
    if (!s) {
        vox_error("out of memory");
        return NULL;
    }
    vox_backend *be = ctx->be;
    const vox_config *c = &ctx->model.cfg;
    const vox_tower_config *e = &c->enc, *d = &c->dec;
    const int K = c->conv_kernel;
    s->ctx = ctx;
    s->be = be;
    s->id = ctx->streams_made++ & 0x1fffff;
    s->cb = cb;
    s->user = user;
    s->t_start = now_ms();
    s->mel = vox_mel_new(c);
    if (!s->mel) goto fail;
    s->feed_block = (int64_t)vox_feed_block(ctx);
    s->raw_cap = 2 * s->feed_block + (int64_t)(ctx->prompt_len + 16) * c->samples_per_token;
    s->raw = malloc(sizeof(float) * s->raw_cap);
    if (!s->raw) {
        vox_error("out of memory");
        goto fail;
    }
    if (vox_mel_begin(s->mel, (int64_t)ctx->model.tok.left_pad_tokens * c->samples_per_token) != 0)
        goto fail;

    const int mel_rows = ctx->enc_chunk_tokens * c->mel_per_token;
    s->enc_rows_max = mel_rows / 2;
    s->enc_cap = e->sliding_window + s->enc_rows_max;
    const int e_q = e->n_heads * e->head_dim, e_kv = e->n_kv_heads * e->head_dim;
    s->mel_host = malloc(sizeof(float) * mel_rows * c->num_mel_bins);
    s->enc_pos_host = malloc(sizeof(int32_t) * s->enc_rows_max);
    if (!s->mel_host || !s->enc_pos_host) {
        vox_error("out of memory");
        goto fail;
    }
    ALLOC(s->conv_in, (size_t)(K - 1 + mel_rows) * c->num_mel_bins);
    size_t cols = (size_t)mel_rows * c->num_mel_bins * K;
    size_t cols1 = (size_t)s->enc_rows_max * e->dim * K;
    ALLOC(s->conv_cols, cols > cols1 ? cols : cols1);
    ALLOC(s->conv_mid, (size_t)(K - 2 + mel_rows) * e->dim);
    ALLOC(s->ex, (size_t)s->enc_rows_max * e->dim);
    ALLOC(s->exn, (size_t)s->enc_rows_max * e->dim);
    ALLOC(s->eq, (size_t)s->enc_rows_max * e_q);
    ALLOC(s->ek, (size_t)s->enc_rows_max * e_kv);
    ALLOC(s->ev, (size_t)s->enc_rows_max * e_kv);
    ALLOC(s->eattn, (size_t)s->enc_rows_max * e_q);
    ALLOC(s->eg, (size_t)s->enc_rows_max * e->hidden_dim);
    ALLOC(s->eu, (size_t)s->enc_rows_max * e->hidden_dim);
    ALLOC(s->ekv, (size_t)e->n_layers * 2 * s->enc_cap * e_kv);
    ALLOC(s->adapt_mid, (size_t)ctx->enc_chunk_tokens * d->dim);
    ALLOC(s->enc_pos_buf, s->enc_rows_max);

    s->acap = ctx->prompt_len + 2 * ctx->enc_chunk_tokens + 2;
    ALLOC(s->audio, (size_t)s->acap * d->dim);

    const int d_q = d->n_heads * d->head_dim, d_kv = d->n_kv_heads * d->head_dim;
    s->rows_max = ctx->prompt_len;
    s->dec_cap = d->sliding_window + s->rows_max; /* a prefill never overwrites a visible key */
    ALLOC(s->dx, (size_t)s->rows_max * d->dim);
    ALLOC(s->dq, (size_t)s->rows_max * d_q);
    ALLOC(s->dk, (size_t)s->rows_max * d_kv);
    ALLOC(s->dv, (size_t)s->rows_max * d_kv);
    ALLOC(s->dattn, (size_t)s->rows_max * d_q);
    ALLOC(s->dg, (size_t)s->rows_max * d->hidden_dim);
    ALLOC(s->du, (size_t)s->rows_max * d->hidden_dim);
    ALLOC(s->logits, (size_t)c->vocab_size);
    ALLOC(s->dkv, (size_t)d->n_layers * 2 * s->dec_cap * d_kv);
    ALLOC(s->ids_buf, s->rows_max);
    s->out_ids = be->host_alloc(be, STEP_QUEUE * sizeof(int32_t));
    if (!s->out_ids) goto fail;
    ALLOC(s->dpos_buf, s->rows_max);
    return s;
fail:
    vox_stream_free(s);
    return NULL;
}

void vox_stream_free(vox_stream *s) {
    if (!s) return;
    vox_backend *be = s->be;
    if (be) {
        void *bufs[] = {s->conv_in, s->conv_cols, s->conv_mid, s->ex, s->exn, s->eq, s->ek, s->ev,
                        s->eattn, s->eg, s->eu, s->ekv, s->adapt_mid, s->enc_pos_buf, s->audio,
                        s->dx, s->dq, s->dk, s->dv, s->dattn, s->dg, s->du, s->logits,
                        s->dkv, s->ids_buf, s->dpos_buf, s->topk_ids_buf, s->topk_vals_buf};
        for (size_t i = 0; i < sizeof bufs / sizeof bufs[0]; i++)
            if (bufs[i]) be->free(be, bufs[i]);
    }
    vox_mel_free(s->mel);
    free(s->mel_host);
    free(s->enc_pos_host);
    free(s->topk_ids_host);
    free(s->topk_vals_host);
    if (be && s->out_ids) be->host_free(be, s->out_ids);
    free(s->forced);
    free(s->tap_buf);
    free(s->raw);
    free(s->queue);
    free(s);
}

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
    if (!s->q_len) return 0;
    *tok = s->queue[s->q_head];
    s->q_head = (s->q_head + 1) % s->q_cap;
    s->q_len--;
    return 1;
}

int vox_stream_set_tap(vox_stream *s, vox_tap_fn fn, void *user) {
    const vox_config *c = &s->ctx->model.cfg;
    size_t n = (size_t)s->enc_rows_max * 2 * (c->num_mel_bins > c->enc.dim ? c->num_mel_bins : c->enc.dim);
    if ((size_t)s->ctx->enc_chunk_tokens * c->dec.dim > n) n = (size_t)s->ctx->enc_chunk_tokens * c->dec.dim;
    if ((size_t)c->vocab_size > n) n = c->vocab_size;
    free(s->tap_buf);
    s->tap_buf = malloc(n * sizeof(float));
    if (!s->tap_buf) return vox_error("out of memory");
    s->tap = fn;
    s->tap_user = user;
    return 0;
}

static void tap(vox_stream *s, const char *stage, const float *dev, int rows, int width) {
    if (!s->tap) return;
    s->be->download(s->be, s->tap_buf, dev, sizeof(float) * rows * width);
    s->tap(s->tap_user, stage, s->tap_buf, rows, width);
}

int vox_stream_set_topk(vox_stream *s, int k) {
    vox_backend *be = s->be;
    const int V = s->ctx->model.cfg.vocab_size;
    if (k < 0 || k > V || k > 1024) return vox_error("--topk %d: must be between 0 and %d", k, V < 1024 ? V : 1024);
    if (s->topk || s->n_out) return vox_error("top-k must be set once, before decoding");
    if (!k) return 0;
    s->topk = k;
    ALLOC(s->topk_ids_buf, k);
    ALLOC(s->topk_vals_buf, k);
    s->topk_ids_host = malloc(sizeof(int32_t) * k);
    s->topk_vals_host = malloc(sizeof(float) * k);
    if (!s->topk_ids_host || !s->topk_vals_host) return vox_error("out of memory");
    return 0;
fail:
    return -1;
}

int vox_stream_force_tokens(vox_stream *s, const int *ids, int n) {
    const int V = s->ctx->model.cfg.vocab_size;
    for (int i = 0; i < n; i++)
        if (ids[i] < 0 || ids[i] >= V) return vox_error("forced token #%d: id %d outside the vocabulary (0..%d)", i, ids[i], V - 1);
    free(s->forced);
    s->forced = malloc(sizeof(int) * (n ? n : 1));
    if (!s->forced) return vox_error("out of memory");
    memcpy(s->forced, ids, sizeof(int) * n);
    s->n_forced = n;
    return 0;
}

void vox_stream_stats(const vox_stream *s, vox_stats *st) {
    *st = s->stats;
    st->audio_s = (double)s->n_samples / s->ctx->model.cfg.sampling_rate;
    st->step_ms_p95 = 0;
    unsigned want = (unsigned)ceil(0.95 * s->stats.steps), seen = 0;
    for (int b = 0; b < STEP_HIST_BINS && s->stats.steps; b++) {
        seen += s->step_hist[b];
        if (seen >= want) {
            st->step_ms_p95 = pow(10.0, (b + 1) / 100.0 - 2.0); /* bin's upper edge */
            break;
        }
    }
}

/* ---- encoder ------------------------------------------------------------------------ */
/* The device work of one chunk of `tokens` audio tokens whose mel rows are in
 * conv_in (after its K-1 context rows) and positions in enc_pos_buf: conv stem,
 * encoder, adapter, leaving the audio embeddings in adapt_mid. Fixed buffers and
 * shapes for a given `tokens`: a backend may replay it as a graph. */
static void encoder_forward(vox_stream *s, int tokens) {
    vox_ctx *ctx = s->ctx;
    vox_backend *be = s->be;
    const vox_model *m = &ctx->model;
    const vox_config *c = &m->cfg;
    const vox_tower_config *e = &c->enc;
    const int K = c->conv_kernel, nm = c->num_mel_bins, De = e->dim;
    const int n = tokens * c->mel_per_token; /* mel rows */
    const int M = n / 2;                     /* encoder frames */
    const int e_kv = e->n_kv_heads * e->head_dim;

    /* conv0: stride 1, left context K-1 rows kept from the previous chunk (zeros first) */
    be->im2col(be, s->conv_cols, s->conv_in, n, nm, K, 1);
    be->linear(be, s->conv_mid + (size_t)(K - 2) * De, s->conv_cols, &m->conv0_w, &m->conv0_b, n,
               VOX_ACT_GELU, 0);
    be->copy(be, s->conv_in, s->conv_in + (size_t)n * nm, sizeof(float) * (K - 1) * nm);
    /* conv1: stride 2, left context K-2 rows */
    be->im2col(be, s->conv_cols, s->conv_mid, M, De, K, 2);
    be->linear(be, s->ex, s->conv_cols, &m->conv1_w, &m->conv1_b, M, VOX_ACT_GELU, 0);
    tap(s, "conv", s->ex, M, De);
    if (K > 2) be->copy(be, s->conv_mid, s->conv_mid + (size_t)n * De, sizeof(float) * (K - 2) * De);

    for (int l = 0; l < e->n_layers; l++) {
        const vox_enc_layer *L = &m->enc[l];
        float *kc = s->ekv + (size_t)l * 2 * s->enc_cap * e_kv, *vc = kc + (size_t)s->enc_cap * e_kv;
        be->rmsnorm(be, s->exn, s->ex, &L->attn_norm, NULL, M, De, e->norm_eps);
        be->linear(be, s->eq, s->exn, &L->wq, e->use_biases ? &L->bq : NULL, M, VOX_ACT_NONE, 0);
        be->linear(be, s->ek, s->exn, &L->wk, NULL, M, VOX_ACT_NONE, 0);
        be->linear(be, s->ev, s->exn, &L->wv, e->use_biases ? &L->bv : NULL, M, VOX_ACT_NONE, 0);
        be->rope(be, s->eq, s->enc_pos_buf, M, e->n_heads, e->head_dim, e->rope_theta);
        be->rope(be, s->ek, s->enc_pos_buf, M, e->n_kv_heads, e->head_dim, e->rope_theta);
        be->kv_store(be, kc, vc, s->ek, s->ev, s->enc_pos_buf, M, e_kv, s->enc_cap, 0);
        be->attention(be, s->eattn, s->eq, kc, vc, s->enc_pos_buf, M, e->n_heads, e->n_kv_heads,
                      e->head_dim, s->enc_cap, e->sliding_window, 0);
        be->linear(be, s->ex, s->eattn, &L->wo, e->use_biases ? &L->bo : NULL, M, VOX_ACT_NONE, 1);
        be->rmsnorm(be, s->exn, s->ex, &L->ffn_norm, NULL, M, De, e->norm_eps);
        be->linear(be, s->eg, s->exn, &L->w1, NULL, M, VOX_ACT_NONE, 0);
        be->linear(be, s->eu, s->exn, &L->w3, NULL, M, VOX_ACT_NONE, 0);
        be->swiglu(be, s->eg, s->eg, s->eu, (int64_t)M * e->hidden_dim);
        be->linear(be, s->ex, s->eg, &L->w2, e->use_biases ? &L->b2 : NULL, M, VOX_ACT_NONE, 1);
    }
    be->rmsnorm(be, s->exn, s->ex, &m->enc_norm, NULL, M, De, e->norm_eps);
    tap(s, "enc", s->exn, M, De);

    /* downsample: `ds` consecutive frames are one row of ds * De (a free reshape), adapter */
    be->linear(be, s->eattn, s->exn, &m->adapter0, NULL, tokens, VOX_ACT_GELU, 0);
    be->linear(be, s->adapt_mid, s->eattn, &m->adapter2, NULL, tokens, VOX_ACT_NONE, 0);
    tap(s, "adapter", s->adapt_mid, tokens, c->dec.dim);
}

/* Runs `tokens` audio tokens of mel (in s->mel_host) through the conv stem, the
 * encoder and the adapter, and appends them to the audio ring. A chunk the same
 * size as the one before (live feeds, a file's full chunks) replays a graph of it
 * where the backend has graphs: one launch instead of ~20 per layer. */
static int encode_chunk(vox_stream *s, int tokens) {
    vox_ctx *ctx = s->ctx;
    vox_backend *be = s->be;
    const vox_config *c = &ctx->model.cfg;
    const int K = c->conv_kernel, nm = c->num_mel_bins;
    const int n = tokens * c->mel_per_token, M = n / 2;
    double t0 = now_ms();

    be->upload(be, s->conv_in + (size_t)(K - 1) * nm, s->mel_host, sizeof(float) * n * nm);
    for (int i = 0; i < M; i++) s->enc_pos_host[i] = (int32_t)(s->enc_pos + i);
    be->upload(be, s->enc_pos_buf, s->enc_pos_host, sizeof(int32_t) * M);
    if (s->tap) s->tap(s->tap_user, "mel", s->mel_host, n, nm);
    const int key = graph_key(s, GRAPH_ENCODER, tokens);
    if (s->tap || tokens > GRAPH_MAX_SUB || tokens != s->enc_last_tokens) {
        encoder_forward(s, tokens); /* taps read back mid-way; a new size may not recur */
    } else if (!be->graph_launch(be, key)) {
        be->graph_begin(be, key);
        encoder_forward(s, tokens);
        be->graph_end(be, key);
    }
    s->enc_last_tokens = tokens;
    s->enc_pos += M;

    const int Dd = c->dec.dim;
    int slot = (int)(s->n_audio % s->acap);
    int first = tokens < s->acap - slot ? tokens : s->acap - slot;
    be->copy(be, s->audio + (size_t)slot * Dd, s->adapt_mid, sizeof(float) * first * Dd);
    if (first < tokens)
        be->copy(be, s->audio, s->adapt_mid + (size_t)first * Dd, sizeof(float) * (tokens - first) * Dd);
    s->n_audio += tokens;
    if (be->sync(be) != 0) return -1;
    const double ms = now_ms() - t0;
    if (ctx->opt.verbose >= 2 && !s->scratch) fprintf(stderr, "voxtral: encoder: %d tokens in %.1f ms\n", tokens, ms);
    s->stats.encoder_ms += ms;
    s->stats.encoder_tokens += tokens;
    return 0;
}

/* ---- decoder --------------------------------------------------------------------------- */
/* One pass of the decoder over M rows whose ids and positions are in ids_buf/dpos_buf;
 * leaves the argmax of the last row's logits in ids_buf[0] (and the top-k). */
static void decoder_forward(vox_stream *s, int M) {
    vox_ctx *ctx = s->ctx;
    vox_backend *be = s->be;
    const vox_model *m = &ctx->model;
    const vox_tower_config *d = &m->cfg.dec;
    const int D = d->dim, d_kv = d->n_kv_heads * d->head_dim;
    be->embed(be, s->dx, &m->tok_emb, s->ids_buf, s->audio, s->dpos_buf, M, D, s->acap, 0);
    for (int l = 0; l < d->n_layers; l++) {
        const vox_dec_layer *L = &m->dec[l];
        float *kc = s->dkv + (size_t)l * 2 * s->dec_cap * d_kv, *vc = kc + (size_t)s->dec_cap * d_kv;
        float *qkv[3] = {s->dq, s->dk, s->dv};
        const vox_weight *wqkv[3] = {&L->wq, &L->wk, &L->wv};
        be->norm_linear(be, 3, qkv, s->dx, wqkv, &L->attn_norm, NULL, d->norm_eps, M);
        be->rope_attention(be, s->dattn, s->dq, s->dk, s->dv, kc, vc, s->dpos_buf, M, d->n_heads,
                           d->n_kv_heads, d->head_dim, d->rope_theta, s->dec_cap, d->sliding_window, 0);
        be->linear(be, s->dx, s->dattn, &L->wo, NULL, M, VOX_ACT_NONE, 1);
        float *gu[2] = {s->dg, s->du};
        const vox_weight *w13[2] = {&L->w1, &L->w3};
        be->norm_linear(be, 2, gu, s->dx, w13, &L->ffn_norm, &L->ffn_scale, d->norm_eps, M);
        be->swiglu_linear(be, s->dx, s->dg, s->du, &L->w2, M, 1);
    }
    /* only the last row's logits are needed */
    float *last = s->dx + (size_t)(M - 1) * D;
    const vox_weight *head = &m->tok_emb;
    be->norm_linear(be, 1, &s->logits, last, &head, &m->dec_norm, NULL, d->norm_eps, 1);
    be->argmax(be, s->ids_buf, s->logits, 1, m->cfg.vocab_size);
    if (s->topk) be->topk(be, s->topk_ids_buf, s->topk_vals_buf, s->logits, 1, m->cfg.vocab_size, s->topk);
}

/* The prompt (BOS, then pads) at positions 0..L-1 through the decoder: its last
 * row's argmax is left in ids_buf[0]. */
static int prefill(vox_stream *s) {
    vox_backend *be = s->be;
    const int L = s->ctx->prompt_len;
    int32_t ids[1024] = {0}, pos[1024] = {0}; /* zeroed: gcc cannot see the loop fill them */
    int32_t *idp = L <= 1024 ? ids : malloc(sizeof(int32_t) * L);
    int32_t *pp = L <= 1024 ? pos : malloc(sizeof(int32_t) * L);
    if (!idp || !pp) {
        if (idp != ids) free(idp);
        if (pp != pos) free(pp);
        return vox_error("out of memory");
    }
    for (int i = 0; i < L; i++) {
        idp[i] = i == 0 ? s->ctx->model.tok.bos_id : s->ctx->model.tok.pad_id;
        pp[i] = i;
    }
    be->upload(be, s->ids_buf, idp, sizeof(int32_t) * L);
    be->upload(be, s->dpos_buf, pp, sizeof(int32_t) * L);
    if (idp != ids) free(idp);
    if (pp != pos) free(pp);
    decoder_forward(s, L);
    return 0;
}

/* vox_open's warm-up (backends with warm_up set): an encoder chunk of silence, a
 * prefill and one step on a scratch stream, so that the first audio pays none of
 * the one-time costs (on an H100 the first chunk took 85 ms against 20 ms). */
static int warm_up(vox_ctx *ctx) {
    vox_stream *s = vox_stream_new(ctx, NULL, NULL);
    if (!s) return -1;
    s->scratch = 1;
    const vox_config *c = &ctx->model.cfg;
    const int tokens = ctx->enc_chunk_tokens, L = ctx->prompt_len;
    memset(s->mel_host, 0, sizeof(float) * (size_t)tokens * c->mel_per_token * c->num_mel_bins);
    /* one full chunk: warming every row bucket of the GEMMs as well (a first odd-sized
     * chunk: 29 ms against 12 warm) cost 1.1 s more at open on an H100 */
    int rc = encode_chunk(s, tokens);
    if (rc == 0) rc = prefill(s);
    if (rc == 0) {
        int32_t p = L;
        s->be->upload(s->be, s->dpos_buf, &p, sizeof p);
        decoder_forward(s, 1);
        rc = s->be->sync(s->be);
    }
    vox_stream_free(s);
    return rc;
}

/* Marks the segment to end; process() restarts from global sample `from`. */
static void request_restart(vox_stream *s, const char *why, int64_t from) {
    s->restart_why = why;
    s->restart_from = from;
    s->done = 1; /* no more steps in this segment */
}

static int deliver(vox_stream *s, int64_t pos, int32_t id);

/* Reads back the id just produced at position `pos`, hands it to the callback. */
static int emit(vox_stream *s, int64_t pos) {
    vox_backend *be = s->be;
    int32_t id;
    be->download(be, &id, s->ids_buf, sizeof id);
    if (s->topk) {
        be->download(be, s->topk_ids_host, s->topk_ids_buf, sizeof(int32_t) * s->topk);
        be->download(be, s->topk_vals_host, s->topk_vals_buf, sizeof(float) * s->topk);
    }
    if (be->sync(be) != 0) return -1;
    tap(s, "logits", s->logits, 1, s->ctx->model.cfg.vocab_size);
    return deliver(s, pos, id);
}

/* Hands the id produced at position `pos` to the callback (or the queue); ends or
 * restarts the segment on EOS or a long run without text. */
static int deliver(vox_stream *s, int64_t pos, int32_t id) {
    vox_backend *be = s->be;
    if (s->n_out == 0) s->stats.first_token_ms = now_ms() - s->t_start;
    const vox_model *m = &s->ctx->model;
    vox_token t = {0};
    t.id = id;
    t.pos = (int)pos;
    t.time_s = (double)s->seg_sample0 / m->cfg.sampling_rate +
               (double)(pos + 1 - s->ctx->prompt_len) / m->cfg.frame_rate;
    t.piece = vox_token_bytes(&m->tok, id, &t.piece_len);
    if (!t.piece) t.piece = "";
    t.k = s->topk;
    t.topk_ids = s->topk_ids_host;
    t.topk_logits = s->topk_vals_host;
    s->n_out++;
    /* what the next position is fed: the forced id while forcing, else this one */
    int fed = s->n_out - 1 < s->n_forced ? s->forced[s->n_out - 1] : id;
    if (s->cb) s->cb(s->user, &t);
    else if (enqueue(s, &t) != 0) return -1;
    s->nontext_run = t.piece_len > 0 ? 0 : s->nontext_run + 1;
    /* audio the segment has not transcribed yet starts after this position's token */
    int64_t uncommitted = s->seg_sample0 + (pos + 1 - s->ctx->prompt_len > 0 ? pos + 1 - s->ctx->prompt_len : 0) *
                                               (int64_t)m->cfg.samples_per_token;
    if (fed == m->tok.eos_id) {
        if (s->continuous && !s->finished) request_restart(s, "end of segment (EOS)", uncommitted);
        else s->done = 1;
    } else if (s->continuous && !s->finished && s->nontext_run >= MAX_SILENT_STEPS) {
        request_restart(s, "no text for a while", uncommitted);
    }
    if (fed != id) {
        int32_t f = fed;
        be->upload(be, s->ids_buf, &f, sizeof f);
    }
    return 0;
}

static int decode_available(vox_stream *s) {
    vox_ctx *ctx = s->ctx;
    vox_backend *be = s->be;
    const int L = ctx->prompt_len;
    if (s->done) return 0;
    if (!s->prefilled) {
        if (s->n_audio < L + 1) return 0;
        double t0 = now_ms();
        if (prefill(s) != 0) return -1;
        s->prefilled = 1;
        s->next_pos = L;
        int rc = emit(s, L - 1);
        s->stats.prefill_ms += now_ms() - t0;
        if (rc) return -1;
    }
    /* Greedy steps with nothing read back but the id keep a second step queued
     * behind the running one: the next step's input is already on the device, so
     * the GPU does not wait for the host's turnaround. The queued step is wasted
     * when this one ends the segment (its results are never read). Top-k, taps and
     * forced ids read more or feed the host's ids, and a synchronous backend (the
     * CPU) gains nothing: one step at a time. */
    const int depth = !be->async || s->topk || s->tap || s->n_out < s->n_forced ? 1 : STEP_QUEUE;
    int64_t queued[STEP_QUEUE] = {0};
    int n_queued = 0;
    double t_last = now_ms();
    for (;;) {
        while (n_queued < depth && !s->done && s->next_pos + 1 < s->n_audio) {
            int32_t p = (int32_t)s->next_pos;
            be->upload(be, s->dpos_buf, &p, sizeof p);
            int key = graph_key(s, s->topk ? GRAPH_STEP_TOPK : GRAPH_STEP, 0);
            if (!be->graph_launch(be, key)) {
                be->graph_begin(be, key);
                decoder_forward(s, 1);
                be->graph_end(be, key);
            }
            if (depth > 1)
                be->download_async(be, &s->out_ids[p % STEP_QUEUE], s->ids_buf, sizeof(int32_t), p % STEP_QUEUE);
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
            if (deliver(s, p, s->out_ids[p % STEP_QUEUE]) != 0) return -1;
        } else if (emit(s, p) != 0) {
            return -1;
        }
        double t = now_ms(), dt = t - t_last; /* a step's time: from output to output */
        t_last = t;
        s->stats.decode_ms += dt;
        s->stats.steps++;
        s->step_hist[step_bin(dt)]++;
    }
    return 0;
}

/* Starts a new segment: fresh mel (left pad), conv left context, encoder and
 * decoder positions from 0; re-feeds the retained audio from `from` on. */
static int segment_begin(vox_stream *s, int64_t from) {
    vox_ctx *ctx = s->ctx;
    vox_backend *be = s->be;
    const vox_config *c = &ctx->model.cfg;
    const int K = c->conv_kernel;
    if (from < s->n_samples - s->raw_cap) from = s->n_samples - s->raw_cap; /* cannot happen: feed pieces */
    if (from > s->n_samples) from = s->n_samples;
    if (vox_mel_begin(s->mel, (int64_t)ctx->model.tok.left_pad_tokens * c->samples_per_token) != 0) return -1;
    /* conv left context back to zeros (the reference's left padding) */
    size_t zn = (size_t)(K - 1) * c->num_mel_bins > (size_t)(K - 2) * c->enc.dim ? (size_t)(K - 1) * c->num_mel_bins
                                                                             : (size_t)(K - 2) * c->enc.dim;
    float *zeros = calloc(zn ? zn : 1, sizeof(float));
    if (!zeros) return vox_error("out of memory");
    be->upload(be, s->conv_in, zeros, sizeof(float) * (K - 1) * c->num_mel_bins);
    if (K > 2) be->upload(be, s->conv_mid, zeros, sizeof(float) * (K - 2) * c->enc.dim);
    free(zeros);
    /* KV rings need no clearing: a slot is always written before it is visible */
    s->enc_pos = 0;
    s->n_audio = 0;
    s->prefilled = 0;
    s->next_pos = 0;
    s->done = 0;
    s->nontext_run = 0;
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

/* Encodes every whole token of mel that is ready (all of it once the stream ended),
 * decoding as it goes; handles segment restarts. */
static int process(vox_stream *s) {
    const vox_config *c = &s->ctx->model.cfg;
    const int per_tok = c->mel_per_token;
    for (;;) {
        if (s->restart_why) {
            if (s->ctx->opt.verbose >= 2)
                fprintf(stderr, "voxtral: new segment at %.2f s (%s)\n",
                        (double)s->restart_from / c->sampling_rate, s->restart_why);
            int64_t from = s->restart_from;
            /* a segment that transcribed nothing must not restart where it began */
            if (from <= s->seg_sample0) from = s->n_samples;
            s->restart_why = NULL;
            s->restarts++;
            if (segment_begin(s, from) != 0) return -1;
        }
        int64_t ready = vox_mel_ready(s->mel) / per_tok;
        if (ready <= 0) break;
        int tokens = ready < s->ctx->enc_chunk_tokens ? (int)ready : s->ctx->enc_chunk_tokens;
        int64_t got = vox_mel_read(s->mel, s->mel_host, (int64_t)tokens * per_tok);
        if (got != (int64_t)tokens * per_tok) return vox_error("mel: short read (%lld frames)", (long long)got);
        if (encode_chunk(s, tokens) != 0) return -1;
        if (decode_available(s) != 0) return -1;
    }
    return 0;
}

/* Marks the stream failed, keeping the thread's last error as its cause. */
static int stream_fail(vox_stream *s) {
    s->failed = 1;
    return vox_err_keep(&s->err);
}

int vox_stream_feed(vox_stream *s, const float *samples, size_t n) {
    if (s->failed) return vox_err_raise(&s->err, "stream failed earlier: ");
    if (s->finished) return vox_error("stream already finished");
    /* in pieces, so the retained audio always covers what a restart re-feeds */
    for (size_t off = 0; off < n;) {
        int64_t piece = (int64_t)(n - off) < s->feed_block ? (int64_t)(n - off) : s->feed_block;
        for (int64_t i = 0; i < piece;) {
            int64_t at = (s->n_samples + i) % s->raw_cap, m = s->raw_cap - at;
            if (m > piece - i) m = piece - i;
            memcpy(s->raw + at, samples + off + i, sizeof(float) * m);
            i += m;
        }
        if (vox_mel_push(s->mel, samples + off, piece) != 0) return -1;
        s->n_samples += piece;
        s->seg_samples += piece;
        off += (size_t)piece;
        if (process(s) != 0) return stream_fail(s);
    }
    return 0;
}

/* The segment's right pad: to a whole token, plus delay + 11 tokens (the
 * reference's offline padding). */
static int64_t segment_right_pad(const vox_stream *s) {
    const int64_t spt = s->ctx->model.cfg.samples_per_token;
    return (spt - s->seg_samples % spt) % spt + (int64_t)(s->ctx->delay_tokens + 11) * spt;
}

int vox_stream_set_continuous(vox_stream *s, int on) {
    if (on && s->n_forced) return vox_error("continuous mode and forced tokens do not mix");
    s->continuous = on;
    return 0;
}

/* Ends the current segment as if the audio stopped (right pad, decode it all),
 * then starts a fresh one for what comes next. */
int vox_stream_flush(vox_stream *s) {
    if (s->failed) return vox_err_raise(&s->err, "stream failed earlier: ");
    if (s->finished) return vox_error("stream already finished");
    if (s->seg_samples == 0) return 0; /* nothing since the last segment: nothing to force out */
    int64_t pad = segment_right_pad(s);
    int was = s->continuous;
    s->continuous = 0; /* the flushed segment ends at its EOS or its audio */
    int rc = vox_mel_end(s->mel, pad) != 0 || process(s) != 0;
    s->continuous = was;
    s->restart_why = NULL;
    if (rc || segment_begin(s, s->n_samples) != 0) return stream_fail(s);
    s->restarts++;
    return 0;
}

int vox_stream_restarts(const vox_stream *s) { return s->restarts; }

int vox_stream_finish(vox_stream *s) {
    if (s->failed) return vox_err_raise(&s->err, "stream failed earlier: ");
    if (s->finished) return 0;
    int64_t pad = segment_right_pad(s);
    s->finished = 1;
    /* a segment opened by a flush or restart that got no audio adds nothing (a stream
     * that never got any audio is still decoded, as the reference does) */
    if (s->seg_samples == 0 && s->n_samples > 0) return 0;
    if (vox_mel_end(s->mel, pad) != 0 || process(s) != 0) return stream_fail(s);
    return 0;
}

const char *vox_stream_error(const vox_stream *s) { return s->failed ? s->err.msg : NULL; }
const char *vox_ctx_error(const vox_ctx *ctx) { return ctx->be->err.set ? ctx->be->err.msg : NULL; }
vox_backend *vox_ctx_backend(vox_ctx *ctx) { return ctx->be; }
