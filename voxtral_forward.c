/* voxtral_forward.c - the forward pass, stateless over a batch and written once over
 * the backend op table (voxtral_internal.h). All state lives in what the caller
 * passes: the KV pool and each row's slot and position (voxtral_engine.h).
 *
 * Encoder batch: chunks of one or more streams. Each stream's conv stem runs over
 * its own chunk (its left context is its own); the encoder layers and the adapter
 * run over the frames of all streams at once, each frame attending over its own
 * stream's ring at its own position. Decoder batch: rows with their own position,
 * slot, previous id and audio embedding: a prefill (the prompt of one stream) or a
 * step (one row per stream).
 */
#include <string.h>

#include "voxtral_engine.h"

/* Hands a stage's rows to the stream's tap (tests and debugging; slow). */
static void tap(vox_ctx *ctx, vox_stream *s, const char *stage, const float *dev, int rows, int width) {
    if (!s || !s->tap) return;
    ctx->be->download(ctx->be, s->tap_buf, dev, sizeof(float) * rows * width);
    s->tap(s->tap_user, stage, s->tap_buf, rows, width);
}

static void *slot_ring(void *ring, int slot, int cap, int kv_dim, size_t esize) {
    return (char *)ring + (size_t)slot * cap * kv_dim * esize;
}

void vox_encoder_stem(vox_ctx *ctx, vox_pool *pool, const vox_enc_item *it, int n) {
    vox_backend *be = ctx->be;
    vox_work *w = &ctx->work;
    const vox_model *m = &ctx->model;
    const vox_config *c = &m->cfg;
    const int K = c->conv_kernel, nm = c->num_mel_bins, De = c->enc.dim;
    int R = 0;
    for (int j = 0; j < n; j++) R += it[j].tokens * c->mel_per_token;
    const int M = R / 2;

    /* conv0 (stride 1, K-1 rows of left context), conv1 (stride 2, K-2 rows): each
     * stream's context kept in its slot's state from its previous chunk (zeros on a
     * reset: the reference's left padding), its new rows the batch's; each step one
     * launch for all the streams (spans), one GEMM per conv. conv0's rows pass through
     * the gate buffer (free until the layers; sized for them) */
    float *in = pool->conv, *mid = pool->conv + pool->conv_in_floats, *y0 = w->eg;
    const size_t ss = pool->conv_floats;
    be->conv_cols(be, w->conv_cols, in, ss, w->mel, w->enc_spans, n, R, nm, K, 1);
    be->conv_keep(be, in, ss, w->mel, w->enc_spans, n, nm, K - 1);
    be->linear(be, y0, w->conv_cols, &m->conv0_w, &m->conv0_b, R, VOX_ACT_GELU, 0);
    be->conv_cols(be, w->conv_cols, mid, ss, y0, w->enc_spans, n, M, De, K, 2);
    if (K > 2) be->conv_keep(be, mid, ss, y0, w->enc_spans, n, De, K - 2);
    be->linear(be, w->ex, w->conv_cols, &m->conv1_w, &m->conv1_b, M, VOX_ACT_GELU, 0);
    for (int j = 0, f = 0; j < n; f += it[j].tokens * c->mel_per_token / 2, j++)
        tap(ctx, it[j].s, "conv", w->ex + (size_t)f * De, it[j].tokens * c->mel_per_token / 2, De);
}

/* The stem is causal: conv0's row r reads mel rows r-K+1..r, conv1's row g conv0's
 * rows 2g-K+2..2g+1 (left pads K-1, K-2); the layers attend causally, the adapter
 * takes mel_per_token / 2 frames a token. So conv1 rows g <= (f - 2) / 2 see the
 * first f mel frames alone. */
int vox_encoder_prefix_tokens(const vox_config *c, int64_t mel_frames) {
    const int64_t frames = mel_frames / 2, per_token = c->mel_per_token / 2;
    return per_token > 0 && frames > 0 ? (int)(frames / per_token) : 0;
}

void vox_encoder_layers(vox_ctx *ctx, vox_pool *pool, const vox_enc_item *it, int n, int tokens_pad) {
    vox_backend *be = ctx->be;
    vox_work *w = &ctx->work;
    const vox_model *m = &ctx->model;
    const vox_config *c = &m->cfg;
    const vox_tower_config *e = &c->enc;
    const int De = e->dim, e_kv = e->n_kv_heads * e->head_dim;
    int T = 0;
    for (int j = 0; j < n; j++) T += it[j].tokens;
    if (tokens_pad > 0) T = tokens_pad;
    const int M = T * c->mel_per_token / 2;
    /* one stream unpadded: its rings addressed directly (the single-stream kernels);
     * else each frame's slot in enc_slot */
    const int direct = n == 1 && tokens_pad <= 0;
    const int32_t *slot = direct ? NULL : w->enc_slot;
    const int s0 = direct ? it[0].slot : 0;
    for (int l = 0; l < e->n_layers; l++) {
        const vox_enc_layer *L = &m->enc[l];
        void *kc = slot_ring(vox_pool_enc(pool, c, l, 0), s0, pool->enc_cap, e_kv, pool->esize);
        void *vc = slot_ring(vox_pool_enc(pool, c, l, 1), s0, pool->enc_cap, e_kv, pool->esize);
        be->rmsnorm(be, w->exn, w->ex, &L->attn_norm, NULL, M, De, e->norm_eps);
        be->linear(be, w->eq, w->exn, &L->wq, e->use_biases ? &L->bq : NULL, M, VOX_ACT_NONE, 0);
        be->linear(be, w->ek, w->exn, &L->wk, NULL, M, VOX_ACT_NONE, 0);
        be->linear(be, w->ev, w->exn, &L->wv, e->use_biases ? &L->bv : NULL, M, VOX_ACT_NONE, 0);
        be->rope(be, w->eq, w->enc_pos, M, e->n_heads, e->head_dim, e->rope_theta);
        be->rope(be, w->ek, w->enc_pos, M, e->n_kv_heads, e->head_dim, e->rope_theta);
        be->kv_store(be, kc, vc, w->ek, w->ev, w->enc_pos, slot, M, e_kv, pool->enc_cap);
        be->attention(be, w->eattn, w->eq, kc, vc, w->enc_pos, slot, M, e->n_heads, e->n_kv_heads,
                      e->head_dim, pool->enc_cap, e->sliding_window);
        be->linear(be, w->ex, w->eattn, &L->wo, e->use_biases ? &L->bo : NULL, M, VOX_ACT_NONE, 1);
        be->rmsnorm(be, w->exn, w->ex, &L->ffn_norm, NULL, M, De, e->norm_eps);
        be->linear(be, w->eg, w->exn, &L->w1, NULL, M, VOX_ACT_NONE, 0);
        be->linear(be, w->eu, w->exn, &L->w3, NULL, M, VOX_ACT_NONE, 0);
        be->swiglu(be, w->eg, w->eg, w->eu, (int64_t)M * e->hidden_dim);
        be->linear(be, w->ex, w->eg, &L->w2, e->use_biases ? &L->b2 : NULL, M, VOX_ACT_NONE, 1);
    }
    be->rmsnorm(be, w->exn, w->ex, &m->enc_norm, NULL, M, De, e->norm_eps);
    for (int j = 0, r = 0; j < n; r += it[j].tokens * c->downsample_factor, j++)
        tap(ctx, it[j].s, "enc", w->exn + (size_t)r * De, it[j].tokens * c->downsample_factor, De);

    /* downsample: `ds` consecutive frames (one stream's: its chunk is whole tokens)
     * are one row of ds * De (a free reshape), then the adapter */
    be->linear(be, w->eattn, w->exn, &m->adapter0, NULL, T, VOX_ACT_GELU, 0);
    be->linear(be, w->adapt_mid, w->eattn, &m->adapter2, NULL, T, VOX_ACT_NONE, 0);
    for (int j = 0, t = 0; j < n; t += it[j].tokens, j++)
        tap(ctx, it[j].s, "adapter", w->adapt_mid + (size_t)t * c->dec.dim, it[j].tokens, c->dec.dim);
}

void vox_encoder_forward(vox_ctx *ctx, vox_pool *pool, const vox_enc_item *it, int n) {
    vox_encoder_stem(ctx, pool, it, n);
    vox_encoder_layers(ctx, pool, it, n, 0);
}

void vox_decoder_forward(vox_ctx *ctx, vox_pool *pool, int M, int slot0, int heads, int topk) {
    vox_backend *be = ctx->be;
    vox_work *w = &ctx->work;
    const vox_model *m = &ctx->model;
    const vox_config *c = &m->cfg;
    const vox_tower_config *d = &c->dec;
    const int D = d->dim, d_kv = d->n_kv_heads * d->head_dim;
    const int32_t *slot = slot0 >= 0 ? NULL : w->slot;
    const int s0 = slot0 >= 0 ? slot0 : 0;
    be->embed(be, w->dx, &m->tok_emb, w->ids, pool->audio + (size_t)s0 * pool->acap * D, w->pos, slot, M, D,
              pool->acap);
    for (int l = 0; l < d->n_layers; l++) {
        const vox_dec_layer *L = &m->dec[l];
        void *kc = slot_ring(vox_pool_dec(pool, c, l, 0), s0, pool->dec_cap, d_kv, pool->esize);
        void *vc = slot_ring(vox_pool_dec(pool, c, l, 1), s0, pool->dec_cap, d_kv, pool->esize);
        float *qkv[3] = {w->dq, w->dk, w->dv};
        const vox_weight *wqkv[3] = {&L->wq, &L->wk, &L->wv};
        be->norm_linear(be, 3, qkv, w->dx, wqkv, &L->attn_norm, NULL, d->norm_eps, M);
        if (slot && heads > 1) {
            /* several prompts: rows of one slot share its ring, which the fused op (one
             * row per slot: its new key in registers, the ring's for the rest) may read
             * before another row of the same prompt stored its key: store all, then
             * attend (the CPU's rope_attention is exactly these four ops) */
            be->rope(be, w->dq, w->pos, M, d->n_heads, d->head_dim, d->rope_theta);
            be->rope(be, w->dk, w->pos, M, d->n_kv_heads, d->head_dim, d->rope_theta);
            be->kv_store(be, kc, vc, w->dk, w->dv, w->pos, slot, M, d_kv, pool->dec_cap);
            be->attention(be, w->dattn, w->dq, kc, vc, w->pos, slot, M, d->n_heads, d->n_kv_heads, d->head_dim,
                          pool->dec_cap, ctx->dec_window);
        } else {
            be->rope_attention(be, w->dattn, w->dq, w->dk, w->dv, kc, vc, w->pos, slot, M, d->n_heads,
                               d->n_kv_heads, d->head_dim, d->rope_theta, pool->dec_cap, ctx->dec_window);
        }
        be->linear(be, w->dx, w->dattn, &L->wo, NULL, M, VOX_ACT_NONE, 1);
        float *gu[2] = {w->dg, w->du};
        const vox_weight *w13[2] = {&L->w1, &L->w3};
        be->norm_linear(be, 2, gu, w->dx, w13, &L->ffn_norm, &L->ffn_scale, d->norm_eps, M);
        be->swiglu_linear(be, w->dx, w->dg, w->du, &L->w2, M, 1);
    }
    /* a prefill needs its last row's logits only; a step every row's; a batch of
     * prefills (groups of `heads` rows) each group's last, gathered into dg (free now) */
    const int R = heads == 1 ? M : heads > 1 ? M / heads : 1;
    const float *x = heads == 1 ? w->dx : w->dx + (size_t)(M - 1) * D;
    if (heads > 1) {
        for (int g = 0; g < R; g++)
            be->copy(be, w->dg + (size_t)g * D, w->dx + ((size_t)(g + 1) * heads - 1) * D, sizeof(float) * D);
        x = w->dg;
    }
    const vox_weight *head = &m->tok_emb;
    be->norm_linear(be, 1, &w->logits, x, &head, &m->dec_norm, NULL, d->norm_eps, R);
    be->argmax(be, w->ids, w->logits, R, c->vocab_size);
    if (topk) be->topk(be, w->topk_ids, w->topk_vals, w->logits, R, c->vocab_size, topk);
}
