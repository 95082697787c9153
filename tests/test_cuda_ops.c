/* test_cuda_ops.c - the CUDA backend's ops against their CPU twins
 * (voxtral_kernels.c) on fresh random inputs of the real model's shapes, outputs
 * poisoned (NaN / -1) before each run so an unwritten element fails; plus graph
 * capture + replay at a changed device position. Prints "ok - ..." lines.
 * The fused decoder ops (norm_linear, swiglu_linear, rope_attention) and the batched /
 * serving rows (streams in slots) are test_cuda_batched.c's; the helpers both use
 * (weights per device dtype, poisoned buffers, the tolerance check): tests/cudatest.h.
 * Matrix ops run with each device dtype of weights (BF16, FP16, FP32: the GPU paths);
 * the CPU twin always reads the BF16 weight, which FP16 and FP32 hold exactly.
 * Without a CUDA device: "skipped: no CUDA device", exit 0.
 *
 *   test_cuda_ops          the checks
 *   test_cuda_ops bench    the checks, then timings: D2D copy bandwidth, GEMV
 *                          bandwidth per decoder shape (fused ops included),
 *                          attention, a synthetic full decoder step (with and
 *                          without programmatic dependent launch), GEMV vs
 *                          cuBLASLt at a few M.
 * Tolerance per element: |got - ref| <= atol * max|ref| + rtol * |ref|; it depends
 * on how the GPU rounds the activations: not at all in the GEMVs and FP32 GEMMs,
 * to FP16 (11 bits) or BF16 (8 bits) in the cuBLASLt GEMMs of those dtypes.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "voxtral_internal.h"
#include "testutil.h"
#include "cudatest.h"
#include "spans.h"

/* test hooks in voxtral_cuda.c (absent from CPU-only builds) */
int vox_cuda_set_gemv_max_rows(vox_backend *be, int rows) __attribute__((weak));
int vox_cuda_set_pdl(vox_backend *be, int on) __attribute__((weak));
int vox_cuda_f16_check(const uint16_t *w, int64_t n, float *max_abs, double *rel_err) __attribute__((weak));

/* ---- helpers (the shared ones: tests/cudatest.h) ---------------------------- */
/* w's device copy replaced by one in dtype dt */
static void weight_convert(vox_weight *w, vox_dtype dt) {
    if (dt == VOX_DT_BF16) return;
    vox_weight c = weight_as(w, dt);
    gpu->free(gpu, w->dev);
    *w = c;
}

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec * 1e-9;
}

/* ---- linear ------------------------------------------------------------------------ */
static void test_linear_xs(const char *tag, vox_weight *w, int M, int bias, vox_act act, int acc,
                           int force_gemv, float x_scale) {
    const int64_t N = w->rows, K = w->cols;
    vox_weight b = {0};
    if (bias) b = weight_f32(N, 0.5f * x_scale, 0.0f);
    float *x = rand_f(M * K, x_scale), *y0 = rand_f(M * N, x_scale);
    float *ref = malloc(sizeof(float) * M * N);
    memcpy(ref, y0, sizeof(float) * M * N);
    cpu->linear(cpu, ref, x, w, bias ? &b : NULL, M, act, acc);
    float *dx = dev_from(x, sizeof(float) * M * K), *dy = gpu->alloc(gpu, sizeof(float) * M * N);
    if (acc) gpu->upload(gpu, dy, y0, sizeof(float) * M * N);
    else poison(dy, sizeof(float) * M * N);
    int old = -1;
    if (force_gemv && vox_cuda_set_gemv_max_rows) old = vox_cuda_set_gemv_max_rows(gpu, 1 << 20);
    gpu->linear(gpu, dy, dx, w, bias ? &b : NULL, M, act, acc);
    if (old >= 0) vox_cuda_set_gemv_max_rows(gpu, old);
    float *got = dev_floats(dy, M * N);
    /* the GEMV path keeps fp32 activations; the GEMM path rounds them to BF16 */
    int limit = vox_cuda_set_gemv_max_rows ? vox_cuda_set_gemv_max_rows(gpu, 0) : 1;
    if (vox_cuda_set_gemv_max_rows) vox_cuda_set_gemv_max_rows(gpu, limit);
    int gemv = (M <= limit || force_gemv) && K % 8 == 0;
    char name[200];
    snprintf(name, sizeof name, "linear %s %s M=%d N=%lld K=%lld%s%s%s (%s)", dt_name(w->dev_dtype),
             tag, M, (long long)N, (long long)K, bias ? " bias" : "", act ? " gelu" : "",
             acc ? " +=" : "", gemv ? "gemv" : "cublasLt");
    if (gpu->sync(gpu) != 0) tu_check(0, name, "%s", vox_last_error());
    else check(name, got, ref, M * N, gemv ? 2e-5 : gemm_tol(w->dev_dtype),
               gemv ? 1e-5 : gemm_rtol(w->dev_dtype));
    free(x), free(y0), free(ref), free(got);
    gpu->free(gpu, dx), gpu->free(gpu, dy);
    if (bias) weight_free(&b);
}

static void test_linear_w(const char *tag, vox_weight *w, int M, int bias, vox_act act, int acc,
                          int force_gemv) {
    test_linear_xs(tag, w, M, bias, act, acc, force_gemv, 1.0f);
}

/* every device dtype */
static void test_linear(const char *tag, int M, int N, int K, int bias, vox_act act, int acc) {
    vox_weight w = weight_bf16(N, K, 1.0f / sqrtf((float)K));
    for (int d = 0; d < 3; d++) {
        vox_weight c = weight_as(&w, dtypes[d]);
        test_linear_w(tag, &c, M, bias, act, acc, 0);
        /* few rows go to cuBLASLt; the GEMV kernel's multi-row variants still must be right */
        if (M > 1 && M <= 8 && K % 8 == 0 && vox_cuda_set_gemv_max_rows)
            test_linear_w(tag, &c, M, bias, act, acc, 1);
        weight_as_free(&c);
    }
    weight_free(&w);
}

/* ---- the small ops ------------------------------------------------------------------ */
static void test_rmsnorm(int M, int D, int with_scale, int in_place) {
    vox_weight w = weight_f32(D, 0.5f, 1.0f), sc = {0};
    if (with_scale) sc = weight_f32(D, 0.3f, 1.0f);
    float *x = rand_f((int64_t)M * D, 3.0f), *ref = malloc(sizeof(float) * M * D);
    cpu->rmsnorm(cpu, ref, x, &w, with_scale ? &sc : NULL, M, D, 1e-5f);
    float *dx = dev_from(x, sizeof(float) * M * D), *dy = dx;
    if (!in_place) {
        dy = gpu->alloc(gpu, sizeof(float) * M * D);
        poison(dy, sizeof(float) * M * D);
    }
    gpu->rmsnorm(gpu, dy, dx, &w, with_scale ? &sc : NULL, M, D, 1e-5f);
    float *got = dev_floats(dy, (int64_t)M * D);
    char name[128];
    snprintf(name, sizeof name, "rmsnorm M=%d D=%d%s%s", M, D, with_scale ? " scale" : "",
             in_place ? " in place" : "");
    check(name, got, ref, (int64_t)M * D, 1e-6, 1e-6);
    free(x), free(ref), free(got);
    if (dy != dx) gpu->free(gpu, dy);
    gpu->free(gpu, dx);
    weight_free(&w);
    if (with_scale) weight_free(&sc);
}

static void test_rope(int M, int H, int hd, int maxpos) {
    int64_t n = (int64_t)M * H * hd;
    float *x = rand_f(n, 1.0f), *ref = malloc(sizeof(float) * n);
    memcpy(ref, x, sizeof(float) * n);
    int32_t *pos = rand_pos(M, 0, maxpos);
    cpu->rope(cpu, ref, pos, M, H, hd, 1e6f);
    float *dx = dev_from(x, sizeof(float) * n);
    int32_t *dp = dev_from(pos, sizeof(int32_t) * M);
    gpu->rope(gpu, dx, dp, M, H, hd, 1e6f);
    float *got = dev_floats(dx, n);
    char name[128];
    snprintf(name, sizeof name, "rope M=%d heads=%d hd=%d pos<%d", M, H, hd, maxpos);
    check(name, got, ref, n, 1e-6, 1e-5);
    free(x), free(ref), free(got), free(pos);
    gpu->free(gpu, dx), gpu->free(gpu, dp);
}

static void test_kv_store(int M, int kv_dim, int cap, int p0) {
    int64_t nc = (int64_t)cap * kv_dim, n = (int64_t)M * kv_dim;
    float *kc = rand_f(nc, 1.0f), *vc = rand_f(nc, 1.0f), *k = rand_f(n, 1.0f), *v = rand_f(n, 1.0f);
    int32_t *pos = malloc(sizeof(int32_t) * M);
    for (int i = 0; i < M; i++) pos[i] = p0 + i;
    float *dkc = dev_from(kc, nc * 4), *dvc = dev_from(vc, nc * 4);
    float *dk = dev_from(k, n * 4), *dv = dev_from(v, n * 4);
    int32_t *dp = dev_from(pos, sizeof(int32_t) * M);
    cpu->kv_store(cpu, kc, vc, k, v, pos, NULL, M, kv_dim, cap);
    gpu->kv_store(gpu, dkc, dvc, dk, dv, dp, NULL, M, kv_dim, cap);
    float *gk = dev_floats(dkc, nc), *gv = dev_floats(dvc, nc);
    char name[128];
    snprintf(name, sizeof name, "kv_store M=%d kv_dim=%d cap=%d pos %d.. (wraps)", M, kv_dim, cap, p0);
    check(name, gk, kc, nc, 0, 0);
    snprintf(name, sizeof name, "kv_store values M=%d", M);
    check(name, gv, vc, nc, 0, 0);
    free(kc), free(vc), free(k), free(v), free(pos), free(gk), free(gv);
    gpu->free(gpu, dkc), gpu->free(gpu, dvc), gpu->free(gpu, dk), gpu->free(gpu, dv), gpu->free(gpu, dp);
}

/* caches filled with random keys/values; rows at positions p0 + i (or the list) */
static void test_attention(const char *tag, int M, int H, int Hkv, int hd, int cap, int window,
                           const int32_t *pos_list, int p0) {
    int64_t kvd = (int64_t)Hkv * hd, nc = cap * kvd, nq = (int64_t)M * H * hd;
    float *kc = rand_f(nc, 1.0f), *vc = rand_f(nc, 1.0f), *q = rand_f(nq, 3.0f);
    float *ref = malloc(sizeof(float) * nq);
    int32_t *pos = malloc(sizeof(int32_t) * M);
    for (int i = 0; i < M; i++) pos[i] = pos_list ? pos_list[i] : p0 + i;
    cpu->attention(cpu, ref, q, kc, vc, pos, NULL, M, H, Hkv, hd, cap, window);
    float *dkc = dev_from(kc, nc * 4), *dvc = dev_from(vc, nc * 4), *dq = dev_from(q, nq * 4);
    int32_t *dp = dev_from(pos, sizeof(int32_t) * M);
    float *dout = gpu->alloc(gpu, nq * 4);
    poison(dout, nq * 4);
    gpu->attention(gpu, dout, dq, dkc, dvc, dp, NULL, M, H, Hkv, hd, cap, window);
    float *got = dev_floats(dout, nq);
    char name[160];
    snprintf(name, sizeof name, "attention %s M=%d heads %d/%d hd=%d cap=%d window=%d pos %d..%d", tag,
             M, H, Hkv, hd, cap, window, pos[0], pos[M - 1]);
    if (gpu->sync(gpu) != 0) tu_check(0, name, "%s", vox_last_error());
    else check(name, got, ref, nq, 1e-5, 1e-4);
    free(kc), free(vc), free(q), free(ref), free(pos), free(got);
    gpu->free(gpu, dkc), gpu->free(gpu, dvc), gpu->free(gpu, dq), gpu->free(gpu, dp), gpu->free(gpu, dout);
}

static void test_swiglu(int64_t n) {
    float *g = rand_f(n, 6.0f), *u = rand_f(n, 2.0f), *ref = malloc(sizeof(float) * n);
    cpu->swiglu(cpu, ref, g, u, n);
    float *dg = dev_from(g, n * 4), *du = dev_from(u, n * 4), *dh = gpu->alloc(gpu, n * 4);
    poison(dh, n * 4);
    gpu->swiglu(gpu, dh, dg, du, n);
    float *got = dev_floats(dh, n);
    check("swiglu n=359424", got, ref, n, 1e-6, 1e-6);
    gpu->swiglu(gpu, dg, dg, du, n); /* in place, as the forward pass calls it */
    free(got);
    got = dev_floats(dg, n);
    check("swiglu in place", got, ref, n, 1e-6, 1e-6);
    free(g), free(u), free(ref), free(got);
    gpu->free(gpu, dg), gpu->free(gpu, du), gpu->free(gpu, dh);
}

/* ---- the encoder batch's span ops (conv_cols, conv_keep, ring_append) ---------------- */
/* chunks in a row: conv_cols then conv_keep on both backends from the same state,
 * the cols and the whole state compared bit for bit after each */
static void test_conv_spans(const char *tag, int K, int stride, int C, int n, int slots, int min_rows, int max_rows,
                            int64_t sstride, int chunks) {
    const int P = K - stride;
    const int64_t ns = slots * sstride;
    float *state = rand_f(ns, 1.0f), *dstate = dev_from(state, ns * 4);
    int ok = 1;
    for (int ch = 0; ch < chunks && ok; ch++) {
        vox_enc_span *sp = malloc(sizeof *sp * n);
        make_spans(sp, n, slots, min_rows, max_rows, ch == 0);
        const int R = sp[n - 1].row0 + sp[n - 1].rows, M = R / stride;
        const int64_t nc = (int64_t)M * C * K;
        float *x = rand_f((int64_t)R * C, 1.0f), *ref = malloc(sizeof(float) * nc);
        cpu->conv_cols(cpu, ref, state, sstride, x, sp, n, M, C, K, stride);
        cpu->conv_keep(cpu, state, sstride, x, sp, n, C, P);
        float *dx = dev_from(x, (int64_t)R * C * 4), *dc = gpu->alloc(gpu, nc * 4);
        vox_enc_span *dsp = dev_from(sp, sizeof *sp * n);
        poison(dc, nc * 4);
        gpu->conv_cols(gpu, dc, dstate, sstride, dx, dsp, n, M, C, K, stride);
        gpu->conv_keep(gpu, dstate, sstride, dx, dsp, n, C, P);
        float *got = dev_floats(dc, nc), *got_state = dev_floats(dstate, ns);
        ok = check(tu_name("conv_cols %s K=%d stride=%d C=%d: %d span%s, chunk %d", tag, K, stride, C, n,
                           n == 1 ? "" : "s", ch), got, ref, nc, 0, 0);
        ok = check(tu_name("conv_keep %s K=%d stride=%d C=%d: %d span%s' contexts, chunk %d", tag, K, stride, C, n,
                           n == 1 ? "" : "s", ch), got_state, state, ns, 0, 0) && ok;
        free(sp), free(x), free(ref), free(got), free(got_state);
        gpu->free(gpu, dx), gpu->free(gpu, dc), gpu->free(gpu, dsp);
    }
    free(state);
    gpu->free(gpu, dstate);
}

/* streams' tokens into their rings at random rows (some wrapping, one from the last row) */
static void test_ring_append(int D, int cap, int n, int slots, int max_tokens) {
    const int64_t nr = (int64_t)slots * cap * D;
    vox_enc_span *sp = malloc(sizeof *sp * n);
    make_spans(sp, n, slots, 2, 2, 0);
    int T = 0;
    for (int j = 0; j < n; j++) {
        sp[j].tok0 = T;
        sp[j].tokens = j == 0 ? max_tokens : irand(1, max_tokens);
        sp[j].at = j == 1 ? cap - 1 : irand(0, cap - 1);
        T += sp[j].tokens;
    }
    float *ring = rand_f(nr, 1.0f), *x = rand_f((int64_t)T * D, 1.0f);
    float *dring = dev_from(ring, nr * 4), *dx = dev_from(x, (int64_t)T * D * 4);
    vox_enc_span *dsp = dev_from(sp, sizeof *sp * n);
    cpu->ring_append(cpu, ring, x, sp, n, T, D, cap);
    gpu->ring_append(gpu, dring, dx, dsp, n, T, D, cap);
    float *got = dev_floats(dring, nr);
    check(tu_name("ring_append D=%d cap=%d: %d streams, %d tokens", D, cap, n, T), got, ring, nr, 0, 0);
    free(sp), free(ring), free(x), free(got);
    gpu->free(gpu, dring), gpu->free(gpu, dx), gpu->free(gpu, dsp);
}

static void test_embed(vox_weight *emb, int M, int acap) {
    const int D = (int)emb->cols, V = (int)emb->rows;
    float *audio = rand_f((int64_t)acap * D, 1.0f), *ref = malloc(sizeof(float) * M * D);
    int32_t *ids = rand_pos(M, 0, V - 1), *pos = rand_pos(M, 0, 5000);
    cpu->embed(cpu, ref, emb, ids, audio, pos, NULL, M, D, acap);
    float *da = dev_from(audio, (int64_t)acap * D * 4), *dx = gpu->alloc(gpu, (int64_t)M * D * 4);
    int32_t *di = dev_from(ids, M * 4), *dp = dev_from(pos, M * 4);
    poison(dx, (int64_t)M * D * 4);
    gpu->embed(gpu, dx, emb, di, da, dp, NULL, M, D, acap);
    float *got = dev_floats(dx, (int64_t)M * D);
    char name[96];
    snprintf(name, sizeof name, "embed %s M=39 D=3072 vocab 131072", dt_name(emb->dev_dtype));
    /* exact, but FP16 rounds the BF16 values below 2^-17 to 2^-24 steps: off by <= 2^-25 */
    check(name, got, ref, (int64_t)M * D, emb->dev_dtype == VOX_DT_F16 ? 3e-8 : 0, 0);
    free(audio), free(ref), free(ids), free(pos), free(got);
    gpu->free(gpu, da), gpu->free(gpu, dx), gpu->free(gpu, di), gpu->free(gpu, dp);
}

static void test_argmax_topk(int V) {
    const int M = 3;
    float *l = rand_f((int64_t)M * V, 10.0f);
    l[5000] = l[100000] = 50.0f;          /* tie: lowest index wins */
    l[(int64_t)V + V - 1] = 60.0f;        /* last element */
    for (int j = 0; j < V; j++) l[2 * (int64_t)V + j] = -1.5f; /* all equal: 0 */
    int32_t ref[3], got[3];
    cpu->argmax(cpu, ref, l, M, V);
    float *dl = dev_from(l, (int64_t)M * V * 4);
    int32_t *di = gpu->alloc(gpu, M * 4);
    poison(di, M * 4);
    gpu->argmax(gpu, di, dl, M, V);
    gpu->download(gpu, got, di, sizeof got);
    tu_check(!memcmp(got, ref, sizeof ref), "argmax M=3 V=131072 (ties, last, all equal)",
             "got %d %d %d want %d %d %d", got[0], got[1], got[2], ref[0], ref[1], ref[2]);

    /* top-k on values quantised to 0.01: thousands of ties */
    for (int64_t i = 0; i < (int64_t)M * V; i++) l[i] = roundf(l[i] * 100.0f) / 100.0f;
    gpu->upload(gpu, dl, l, (int64_t)M * V * 4);
    const int ks[] = {1, 7, 100, 1024};
    for (int t = 0; t < 4; t++) {
        int k = ks[t];
        int32_t *ri = malloc(sizeof(int32_t) * M * k), *gi = malloc(sizeof(int32_t) * M * k);
        float *rv = malloc(sizeof(float) * M * k), *gv = malloc(sizeof(float) * M * k);
        cpu->topk(cpu, ri, rv, l, M, V, k);
        int32_t *dti = gpu->alloc(gpu, M * k * 4);
        float *dtv = gpu->alloc(gpu, M * k * 4);
        poison(dti, M * k * 4), poison(dtv, M * k * 4);
        gpu->topk(gpu, dti, dtv, dl, M, V, k);
        gpu->download(gpu, gi, dti, M * k * 4);
        gpu->download(gpu, gv, dtv, M * k * 4);
        int ok = !memcmp(gi, ri, M * k * 4) && !memcmp(gv, rv, M * k * 4), at = -1;
        for (int i = 0; i < M * k && at < 0; i++)
            if (gi[i] != ri[i] || gv[i] != rv[i]) at = i;
        char name[96];
        snprintf(name, sizeof name, "topk M=3 V=131072 k=%d (ties)", k);
        if (ok) tu_check(1, name, "ids and values identical");
        else tu_check(0, name, "first mismatch at %d: got (%d, %g) want (%d, %g)", at, gi[at], gv[at], ri[at], rv[at]);
        free(ri), free(gi), free(rv), free(gv);
        gpu->free(gpu, dti), gpu->free(gpu, dtv);
    }
    free(l);
    gpu->free(gpu, dl), gpu->free(gpu, di);
}

/* ---- graphs: capture at one position, replay at another ------------------------------ */
typedef struct {
    vox_weight emb, norm, scale, wq, wk, wv, wo, w1, w3, w2;
    int D, H, Hkv, hd, F, cap, window, acap;
} mini_model;

/* one decoder layer as decoder_forward (voxtral.c) runs it, through the fused ops:
 * embed, norm+q/k/v, rope+kv_store+attention, wo (+=), norm*scale+w1/w3,
 * swiglu+w2 (+=), final norm + LM head, argmax. g, u: F floats of scratch. */
static void mini_step(vox_backend *be, mini_model *m, float *x, float *g, float *u, float *q, float *k,
                      float *v, float *att, float *kc, float *vc, const float *audio,
                      int32_t *ids, const int32_t *pos, float *logits) {
    be->embed(be, x, &m->emb, ids, audio, pos, NULL, 1, m->D, m->acap);
    float *qkv[3] = {q, k, v}, *gu[2] = {g, u};
    const vox_weight *wqkv[3] = {&m->wq, &m->wk, &m->wv}, *w13[2] = {&m->w1, &m->w3}, *head = &m->emb;
    be->norm_linear(be, 3, qkv, x, wqkv, &m->norm, NULL, 1e-5f, 1);
    be->rope_attention(be, att, q, k, v, kc, vc, pos, NULL, 1, m->H, m->Hkv, m->hd, 1e6f, m->cap, m->window);
    be->linear(be, x, att, &m->wo, NULL, 1, VOX_ACT_NONE, 1);
    be->norm_linear(be, 2, gu, x, w13, &m->norm, &m->scale, 1e-5f, 1);
    be->swiglu_linear(be, x, g, u, &m->w2, 1, 1);
    be->norm_linear(be, 1, &logits, x, &head, &m->norm, NULL, 1e-5f, 1);
    be->argmax(be, ids, logits, 1, (int)m->emb.rows);
}

static void test_graph(vox_dtype dt) {
    mini_model m = {.D = 3072, .H = 32, .Hkv = 8, .hd = 128, .F = 2048, .cap = 8231, .window = 8192, .acap = 64};
    const int V = 8192, qd = m.H * m.hd, kvd = m.Hkv * m.hd;
    m.emb = weight_bf16(V, m.D, 1.0f);
    m.norm = weight_f32(m.D, 0.5f, 1.0f);
    m.wq = weight_bf16(qd, m.D, 1.0f / sqrtf(m.D));
    m.wk = weight_bf16(kvd, m.D, 1.0f / sqrtf(m.D));
    m.wv = weight_bf16(kvd, m.D, 1.0f / sqrtf(m.D));
    m.wo = weight_bf16(m.D, qd, 1.0f / sqrtf(qd));
    m.scale = weight_f32(m.D, 0.3f, 1.0f);
    m.w1 = weight_bf16(m.F, m.D, 1.0f / sqrtf(m.D));
    m.w3 = weight_bf16(m.F, m.D, 1.0f / sqrtf(m.D));
    m.w2 = weight_bf16(m.D, m.F, 1.0f / sqrtf(m.F));
    vox_weight *mats[] = {&m.emb, &m.wq, &m.wk, &m.wv, &m.wo, &m.w1, &m.w3, &m.w2};
    for (int i = 0; i < 8; i++) weight_convert(mats[i], dt);
    int64_t nc = (int64_t)m.cap * kvd;
    float *kc0 = rand_f(nc, 1.0f), *vc0 = rand_f(nc, 1.0f), *audio = rand_f((int64_t)m.acap * m.D, 1.0f);
    const int32_t id0 = 1234, P0 = 500, P1 = 9000;
    /* host buffers for the CPU */
    float *x = malloc(4 * m.D), *g = malloc(4 * m.F), *u = malloc(4 * m.F), *q = malloc(4 * qd), *k = malloc(4 * kvd);
    float *v = malloc(4 * kvd), *att = malloc(4 * qd), *lg = malloc(4 * V);
    float *kc = malloc(nc * 4), *vc = malloc(nc * 4);
    memcpy(kc, kc0, nc * 4), memcpy(vc, vc0, nc * 4);
    int32_t id = id0, pos = P1;
    mini_step(cpu, &m, x, g, u, q, k, v, att, kc, vc, audio, &id, &pos, lg);
    /* device buffers */
    float *dx = gpu->alloc(gpu, 4 * m.D), *dg = gpu->alloc(gpu, 4 * m.F), *du = gpu->alloc(gpu, 4 * m.F);
    float *dq = gpu->alloc(gpu, 4 * qd);
    float *dk = gpu->alloc(gpu, 4 * kvd), *dv = gpu->alloc(gpu, 4 * kvd), *datt = gpu->alloc(gpu, 4 * qd);
    float *dlg = gpu->alloc(gpu, 4 * V), *dkc = gpu->alloc(gpu, nc * 4), *dvc = gpu->alloc(gpu, nc * 4);
    float *da = dev_from(audio, (int64_t)m.acap * m.D * 4);
    int32_t *did = gpu->alloc(gpu, 4), *dpos = gpu->alloc(gpu, 4);
    float *direct_x, *graph_x, *direct_lg, *graph_lg;
    int32_t direct_id = -1, graph_id = -1, p;
    /* 1. direct at P1 */
    gpu->upload(gpu, dkc, kc0, nc * 4), gpu->upload(gpu, dvc, vc0, nc * 4);
    gpu->upload(gpu, did, &id0, 4), p = P1, gpu->upload(gpu, dpos, &p, 4);
    mini_step(gpu, &m, dx, dg, du, dq, dk, dv, datt, dkc, dvc, da, did, dpos, dlg);
    gpu->download(gpu, &direct_id, did, 4);
    direct_x = dev_floats(dx, m.D), direct_lg = dev_floats(dlg, V);
    /* 2. capture at P0 (runs once there) */
    gpu->upload(gpu, dkc, kc0, nc * 4), gpu->upload(gpu, dvc, vc0, nc * 4);
    gpu->upload(gpu, did, &id0, 4), p = P0, gpu->upload(gpu, dpos, &p, 4);
    int had = gpu->graph_launch(gpu, 77);
    gpu->graph_begin(gpu, 77);
    mini_step(gpu, &m, dx, dg, du, dq, dk, dv, datt, dkc, dvc, da, did, dpos, dlg);
    gpu->graph_end(gpu, 77);
    int rc = gpu->sync(gpu);
    /* 3. replay at P1 */
    gpu->upload(gpu, dkc, kc0, nc * 4), gpu->upload(gpu, dvc, vc0, nc * 4);
    gpu->upload(gpu, did, &id0, 4), p = P1, gpu->upload(gpu, dpos, &p, 4);
    int launched = gpu->graph_launch(gpu, 77);
    gpu->download(gpu, &graph_id, did, 4);
    graph_x = dev_floats(dx, m.D), graph_lg = dev_floats(dlg, V);
    rc |= gpu->sync(gpu);
    char name[128];
    snprintf(name, sizeof name, "graph %s: captured under a key, replayed", dt_name(dt));
    tu_check(!had && launched && rc == 0, name, "%s", rc ? vox_last_error() : "");
    snprintf(name, sizeof name, "graph %s: replay at a new device position == direct run (bitwise)", dt_name(dt));
    tu_check(direct_id == graph_id && !memcmp(direct_x, graph_x, 4 * m.D) &&
                 !memcmp(direct_lg, graph_lg, 4 * V), name, "ids %d / %d", graph_id, direct_id);
    snprintf(name, sizeof name, "graph %s step vs CPU: hidden state", dt_name(dt));
    check(name, graph_x, x, m.D, 1e-4, 1e-4);
    snprintf(name, sizeof name, "graph %s step vs CPU: logits", dt_name(dt));
    check(name, graph_lg, lg, V, 1e-4, 1e-4);
    snprintf(name, sizeof name, "graph %s step vs CPU: argmax", dt_name(dt));
    tu_check(graph_id == id, name, "got %d want %d", graph_id, id);
    free(kc0), free(vc0), free(audio), free(x), free(g), free(u), free(q), free(k), free(v), free(att);
    free(lg), free(kc), free(vc), free(direct_x), free(graph_x), free(direct_lg), free(graph_lg);
    void *bufs[] = {dx, dg, du, dq, dk, dv, datt, dlg, dkc, dvc, da, did, dpos};
    for (size_t i = 0; i < sizeof bufs / sizeof bufs[0]; i++) gpu->free(gpu, bufs[i]);
    weight_free(&m.emb), weight_free(&m.norm), weight_free(&m.wq), weight_free(&m.wk);
    weight_free(&m.wv), weight_free(&m.wo), weight_free(&m.scale), weight_free(&m.w1);
    weight_free(&m.w3), weight_free(&m.w2);
}

/* ---- the fp16 path's range handling ----------------------------------------------------- */
/* GEMM inputs far outside FP16's range (and deep in its subnormals) are scaled: the
 * result keeps FP16's relative precision */
static void test_f16_input_range(void) {
    vox_weight w = weight_bf16(1280, 2048, 1.0f / sqrtf(2048.0f)), c = weight_as(&w, VOX_DT_F16);
    test_linear_xs("x ~1e6", &c, 39, 1, VOX_ACT_NONE, 0, 0, 1e6f);
    test_linear_xs("x ~1e-6", &c, 39, 1, VOX_ACT_NONE, 1, 0, 1e-6f);
    weight_as_free(&c);
    weight_free(&w);
}

/* which tensors the fp16 path keeps in fp32 */
static void test_f16_check(void) {
    if (!vox_cuda_f16_check) return;
    const int64_t n = 1 << 20;
    uint16_t *w = rand_bf16(n, 0.02f);
    float mx;
    double re;
    int fit = vox_cuda_f16_check(w, n, &mx, &re);
    tu_check(fit && mx < 0.0201f && mx > 0.019f && re < 1e-6, "f16 check: weights of scale 0.02 fit",
             "max %g, relative error %.2g", mx, re);
    w[12345] = to_bf16(-1e5f);
    fit = vox_cuda_f16_check(w, n, &mx, &re);
    tu_check(!fit && mx > 99000, "f16 check: |w| = 1e5 is kept in fp32", "max %g", mx);
    w[12345] = to_bf16(65280.0f); /* the largest BF16 FP16 holds */
    fit = vox_cuda_f16_check(w, n, &mx, &re);
    tu_check(fit && mx == 65280.0f, "f16 check: |w| = 65280 fits", "max %g", mx);
    w[12345] = to_bf16(65536.0f);
    tu_check(!vox_cuda_f16_check(w, n, &mx, &re), "f16 check: |w| = 65536 is kept in fp32", "max %g", mx);
    free(w);
    w = rand_bf16(n, 1e-6f); /* all below FP16's normal range: 2^-24 steps cost bits */
    fit = vox_cuda_f16_check(w, n, &mx, &re);
    tu_check(!fit && re > 1e-3, "f16 check: a tensor of scale 1e-6 is kept in fp32", "relative error %.2g", re);
    free(w);
    w = rand_bf16(n, 1e-4f); /* mostly FP16 subnormals, exact down to 2^-17: a small loss */
    fit = vox_cuda_f16_check(w, n, &mx, &re);
    tu_check(fit, "f16 check: a tensor of scale 1e-4 fits", "relative error %.2g", re);
    free(w);
}

/* ---- benchmarks ------------------------------------------------------------------------ */
/* seconds per replay of graph `key` (median of `reps`) */
static double time_graph(int key, int reps) {
    double t[32];
    if (reps > 32) reps = 32;
    for (int r = 0; r < reps; r++) {
        double t0 = now_s();
        gpu->graph_launch(gpu, key);
        gpu->sync(gpu);
        t[r] = now_s() - t0;
    }
    for (int i = 0; i < reps; i++)
        for (int j = i + 1; j < reps; j++)
            if (t[j] < t[i]) { double s = t[i]; t[i] = t[j]; t[j] = s; }
    return t[reps / 2];
}

/* seconds per replay of graph `key` launched n times back to back, one sync: the
 * GPU's time per step without the host's turnaround between steps */
static double time_graph_b2b(int key, int n) {
    gpu->graph_launch(gpu, key);
    gpu->sync(gpu);
    double t0 = now_s();
    for (int r = 0; r < n; r++) gpu->graph_launch(gpu, key);
    gpu->sync(gpu);
    return (now_s() - t0) / n;
}

static void bench(void) {
    char table[16384];
    int tl = 0;
#define ROW(...) (tl += snprintf(table + tl, sizeof table - tl, __VA_ARGS__))
    /* D2D copy: 1 GiB */
    size_t cb = (size_t)1 << 30;
    void *a = gpu->alloc(gpu, cb), *b = gpu->alloc(gpu, cb);
    for (int i = 0; i < 3; i++) gpu->copy(gpu, b, a, cb);
    gpu->sync(gpu);
    double t0 = now_s();
    for (int i = 0; i < 10; i++) gpu->copy(gpu, b, a, cb);
    gpu->sync(gpu);
    double d2d = 2.0 * cb * 10 / (now_s() - t0) / 1e9;
    gpu->free(gpu, a), gpu->free(gpu, b);
    ROW("%-44s %10s %10s %8s\n", "bench", "us", "GB/s", "% d2d");
    ROW("%-44s %10s %10.0f %8s\n", "cudaMemcpy D2D 1 GiB (read+write)", "", d2d, "100");

    /* GEMV M=1 per decoder shape; weight copies rotated so L2 never holds them */
    const int shapes[][2] = {{4096, 3072}, {1024, 3072}, {3072, 4096}, {9216, 3072}, {3072, 9216}, {131072, 3072}};
    for (int s = 0; s < 6; s++) {
        int N = shapes[s][0], K = shapes[s][1];
        size_t wb = (size_t)N * K * 2;
        int copies = (int)((512u << 20) / wb) + 1;
        if (copies > 32) copies = 32;
        vox_weight w[32];
        w[0] = weight_bf16(N, K, 0.01f);
        for (int c = 1; c < copies; c++) {
            w[c] = w[0];
            w[c].data = NULL;
            w[c].dev = gpu->alloc(gpu, wb);
            gpu->copy(gpu, w[c].dev, w[0].dev, wb);
        }
        float *x = rand_f(K, 1.0f), *dx = dev_from(x, K * 4), *dy = gpu->alloc(gpu, (size_t)N * 4);
        int calls = copies * (int)(1 + (2u << 30) / (wb * copies));
        if (calls > 2000) calls = 2000;
        gpu->graph_begin(gpu, 100 + s);
        for (int c = 0; c < calls; c++) gpu->linear(gpu, dy, dx, &w[c % copies], NULL, 1, VOX_ACT_NONE, 0);
        gpu->graph_end(gpu, 100 + s);
        double t = time_graph(100 + s, 7) / calls;
        ROW("gemv M=1 N=%-6d K=%-5d (%4.1f MB)            %10.1f %10.0f %8.0f\n", N, K, wb / 1e6,
            t * 1e6, wb / t / 1e9, 100.0 * wb / t / 1e9 / d2d);
        free(x);
        gpu->free(gpu, dx), gpu->free(gpu, dy);
        for (int c = 1; c < copies; c++) gpu->free(gpu, w[c].dev);
        weight_free(&w[0]);
    }

    /* synthetic decoder step: 26 layers of distinct weights, real shapes, all ops */
    const int L = 26, D = 3072, H = 32, Hkv = 8, hd = 128, F = 9216, V = 131072, cap = 8192 + 39;
    const int qd = H * hd, kvd = Hkv * hd;
    vox_weight lw[7] = {weight_bf16(qd, D, 0.02f), weight_bf16(kvd, D, 0.02f), weight_bf16(kvd, D, 0.02f),
                        weight_bf16(D, qd, 0.02f), weight_bf16(F, D, 0.02f), weight_bf16(F, D, 0.02f),
                        weight_bf16(D, F, 0.02f)};
    vox_weight (*W)[7] = malloc(sizeof(vox_weight[7]) * L);
    double step_bytes = 0;
    for (int l = 0; l < L; l++)
        for (int i = 0; i < 7; i++) {
            size_t wb = (size_t)lw[i].rows * lw[i].cols * 2;
            W[l][i] = lw[i];
            W[l][i].data = NULL;
            W[l][i].dev = gpu->alloc(gpu, wb);
            gpu->copy(gpu, W[l][i].dev, lw[i].dev, wb);
            step_bytes += wb;
        }
    vox_weight emb = weight_bf16(V, D, 0.02f), norm = weight_f32(D, 0.1f, 1.0f);
    step_bytes += (double)V * D * 2;
    float *kv = gpu->alloc(gpu, (size_t)L * 2 * cap * kvd * 4);
    float *audio = gpu->alloc(gpu, (size_t)64 * D * 4);
    float *x = gpu->alloc(gpu, D * 4), *q = gpu->alloc(gpu, qd * 4);
    float *k = gpu->alloc(gpu, kvd * 4), *v = gpu->alloc(gpu, kvd * 4), *att = gpu->alloc(gpu, qd * 4);
    float *g = gpu->alloc(gpu, F * 4), *u = gpu->alloc(gpu, F * 4), *lg = gpu->alloc(gpu, (size_t)V * 4);
    int32_t *ids = gpu->alloc(gpu, 4), *dpos = gpu->alloc(gpu, 4);
    float *kvh = rand_f((int64_t)cap * kvd, 1.0f); /* keys must not be zeros */
    for (int l = 0; l < L * 2; l++) gpu->upload(gpu, kv + (size_t)l * cap * kvd, kvh, (size_t)cap * kvd * 4);
    free(kvh);
    int32_t p = 800;
    gpu->upload(gpu, dpos, &p, 4);
    /* variants: 0 the whole step as decoder_forward runs it (fused ops), 1 without
     * rope_attention, 2 rope_attention only, 3..6 one op class over the 26 layers */
    const char *vname[] = {"", "", "", "norm+q/k/v (26 x 1 launch)", "wo += (26)", "norm+w1/w3 (26 x 1 launch)",
                           "swiglu+w2 += (26)"};
    const double vbytes[] = {0, 0, 0, 26.0 * 6144 * D * 2, 26.0 * D * qd * 2, 26.0 * 2 * F * D * 2, 26.0 * D * F * 2};
    /* which kernel families get programmatic dependent launch: all, none, all but
     * SwiGLU, all but attention (VOX_PDL_*: 1 GEMV, 2 SwiGLU, 4 attention, 8 rope+kv,
     * 16 embed, 32 argmax) */
    const int masks[] = {63, 0, 61, 59};
    const int n_masks = (int)(sizeof masks / sizeof masks[0]);
    for (int cf = 0; cf < n_masks; cf++) {
        const int pdl = masks[cf];
        int old_pdl = vox_cuda_set_pdl(gpu, pdl);
        for (int variant = 0; variant < 7; variant++) {
            const int all = variant <= 1;
            gpu->graph_begin(gpu, 200 + variant);
            if (all) gpu->embed(gpu, x, &emb, ids, audio, dpos, NULL, 1, D, 64);
            for (int l = 0; l < L; l++) {
                float *kc = kv + (size_t)l * 2 * cap * kvd, *vc = kc + (size_t)cap * kvd;
                float *qkv[3] = {q, k, v}, *gu[2] = {g, u};
                const vox_weight *wqkv[3] = {&W[l][0], &W[l][1], &W[l][2]}, *w13[2] = {&W[l][4], &W[l][5]};
                if (all || variant == 3) gpu->norm_linear(gpu, 3, qkv, x, wqkv, &norm, NULL, 1e-5f, 1);
                if (variant == 0 || variant == 2)
                    gpu->rope_attention(gpu, att, q, k, v, kc, vc, dpos, NULL, 1, H, Hkv, hd, 1e6f, cap, 8192);
                if (all || variant == 4) gpu->linear(gpu, x, att, &W[l][3], NULL, 1, VOX_ACT_NONE, 1);
                if (all || variant == 5) gpu->norm_linear(gpu, 2, gu, x, w13, &norm, &norm, 1e-5f, 1);
                if (all || variant == 6) gpu->swiglu_linear(gpu, x, g, u, &W[l][6], 1, 1);
            }
            if (all) {
                const vox_weight *head = &emb;
                gpu->norm_linear(gpu, 1, &lg, x, &head, &norm, NULL, 1e-5f, 1);
                gpu->argmax(gpu, ids, lg, 1, V);
            }
            gpu->graph_end(gpu, 200 + variant);
        }
        vox_cuda_set_pdl(gpu, old_pdl);
        const int at_pos[] = {100, 800, 8000};
        char label[32];
        snprintf(label, sizeof label, "PDL %2d", pdl);
        for (int pi = 0; pi < (cf < 2 ? 3 : 2); pi++) {
            p = at_pos[pi];
            gpu->upload(gpu, dpos, &p, 4);
            double ts = time_graph(200, 9), tl_ = time_graph(201, 9), ta = time_graph(202, 9);
            double tb = time_graph_b2b(200, 20);
            double kvb = 2.0 * L * (double)(p + 1) * kvd * 4;
            ROW("%s step, pos %-5d (graph, all ops)    %10.1f %10.0f %8.0f\n", label, p,
                ts * 1e6, (step_bytes + kvb) / ts / 1e9, 100.0 * (step_bytes + kvb) / ts / 1e9 / d2d);
            ROW("  the same, 20 replays back to back (GPU only)  %10.1f %10.0f %8.0f\n", tb * 1e6,
                (step_bytes + kvb) / tb / 1e9, 100.0 * (step_bytes + kvb) / tb / 1e9 / d2d);
            if (pi == 0 && cf < 2) {
                ROW("  its GEMVs (%.2f GB), 132 launches          %10.1f %10.0f %8.0f\n", step_bytes / 1e9,
                    tl_ * 1e6, step_bytes / tl_ / 1e9, 100.0 * step_bytes / tl_ / 1e9 / d2d);
                for (int vi = 3; vi < 7; vi++) {
                    double tv = time_graph(200 + vi, 9);
                    ROW("    %-40s %10.1f %10.0f %8.0f\n", vname[vi], tv * 1e6, vbytes[vi] / tv / 1e9,
                        100.0 * vbytes[vi] / tv / 1e9 / d2d);
                }
            }
            ROW("  its 26 attentions, %5d keys (%5.0f MB)    %10.1f %10.0f %8.0f\n", p + 1, kvb / 1e6,
                ta * 1e6, kvb / ta / 1e9, 100.0 * kvb / ta / 1e9 / d2d);
        }
    }
    void *bufs[] = {kv, audio, x, q, k, v, att, g, u, lg, ids, dpos};
    for (size_t i = 0; i < sizeof bufs / sizeof bufs[0]; i++) gpu->free(gpu, bufs[i]);
    for (int l = 0; l < L; l++)
        for (int i = 0; i < 7; i++) gpu->free(gpu, W[l][i].dev);
    free(W);
    for (int i = 0; i < 7; i++) weight_free(&lw[i]);
    weight_free(&emb), weight_free(&norm);

    /* GEMV vs cuBLASLt at a few row counts (the crossover) */
    const int Ms[] = {1, 2, 3, 4, 8, 39, 512};
    vox_weight w = weight_bf16(F, D, 0.02f);
    float *hx = rand_f((int64_t)512 * D, 1.0f), *dx = dev_from(hx, (size_t)512 * D * 4);
    float *dy = gpu->alloc(gpu, (size_t)512 * F * 4);
    free(hx);
    for (int mi = 0; mi < 7; mi++) {
        int M = Ms[mi];
        double t2[2];
        for (int path = 0; path < 2; path++) {
            int old = vox_cuda_set_gemv_max_rows(gpu, path ? 0 : 1 << 20);
            gpu->graph_begin(gpu, 300);
            for (int c = 0; c < 20; c++) gpu->linear(gpu, dy, dx, &w, NULL, M, VOX_ACT_NONE, 0);
            gpu->graph_end(gpu, 300);
            vox_cuda_set_gemv_max_rows(gpu, old);
            t2[path] = time_graph(300, 7) / 20;
        }
        ROW("linear M=%-3d N=9216 K=3072: gemv / cublasLt   %10.1f %10.1f   us (%.0f / %.0f TFLOP/s)\n", M,
            t2[0] * 1e6, t2[1] * 1e6, 2.0 * M * F * D / t2[0] / 1e12, 2.0 * M * F * D / t2[1] / 1e12);
    }
    gpu->free(gpu, dx), gpu->free(gpu, dy);
    weight_free(&w);

    /* encoder-shaped attention: 512 rows, window 750, 32 heads x 64 */
    {
        const int M = 512, eH = 32, ehd = 64, ecap = 750 + 512;
        int64_t nc = (int64_t)ecap * eH * ehd, nq = (int64_t)M * eH * ehd;
        float *hk = rand_f(nc, 1.0f);
        float *dk = dev_from(hk, nc * 4), *dvv = dev_from(hk, nc * 4), *dq = dev_from(hk, nq * 4);
        float *dout = gpu->alloc(gpu, nq * 4);
        int32_t *pp = malloc(4 * M);
        for (int i = 0; i < M; i++) pp[i] = 3000 + i;
        int32_t *dp = dev_from(pp, 4 * M);
        gpu->graph_begin(gpu, 301);
        for (int c = 0; c < 32; c++) gpu->attention(gpu, dout, dq, dk, dvv, dp, NULL, M, eH, eH, ehd, ecap, 750);
        gpu->graph_end(gpu, 301);
        double t = time_graph(301, 7) / 32;
        double fl = 4.0 * M * 750 * ehd * eH;
        ROW("attention encoder M=512 window 750 (1 layer)  %10.1f %10s   (%.1f TFLOP/s)\n", t * 1e6, "",
            fl / t / 1e12);
        free(hk), free(pp);
        gpu->free(gpu, dk), gpu->free(gpu, dvv), gpu->free(gpu, dq), gpu->free(gpu, dout), gpu->free(gpu, dp);
    }
    tu_check(gpu->sync(gpu) == 0, "bench ran without a CUDA error", "%s", "");
    printf("\n%s", table);
#undef ROW
}

int main(int argc, char **argv) {
    const int up = cudatest_backends("fp16"); /* the fp16 path's backend runs weights of every dtype */
    if (up <= 0) return up < 0;

    /* decoder step (M=1): every matrix shape, the LM head */
    test_linear("wq", 1, 4096, 3072, 0, VOX_ACT_NONE, 0);
    test_linear("wk", 1, 1024, 3072, 0, VOX_ACT_NONE, 0);
    test_linear("wo", 1, 3072, 4096, 0, VOX_ACT_NONE, 1);
    test_linear("w1", 1, 9216, 3072, 0, VOX_ACT_NONE, 0);
    test_linear("w2", 1, 3072, 9216, 0, VOX_ACT_NONE, 1);
    test_linear("few rows, K split 4 ways", 1, 256, 8192, 0, VOX_ACT_NONE, 1);
    test_linear("odd rows, K split", 1, 257, 8192, 0, VOX_ACT_NONE, 0);
    vox_weight head = weight_bf16(131072, 3072, 1.0f / sqrtf(3072.0f));
    for (int d = 0; d < 3; d++) {
        vox_weight c = weight_as(&head, dtypes[d]);
        test_linear_w("lm head", &c, 1, 0, VOX_ACT_NONE, 0, 0);
        test_embed(&c, 39, 300);
        weight_as_free(&c);
    }
    weight_free(&head);
    /* few rows: streaming encoder chunks and the adapter */
    test_linear("enc wo", 4, 1280, 2048, 1, VOX_ACT_NONE, 1);
    test_linear("enc wq", 8, 2048, 1280, 1, VOX_ACT_NONE, 0);
    test_linear("adapter0", 3, 3072, 5120, 0, VOX_ACT_GELU, 0);
    test_linear("odd K", 2, 100, 36, 1, VOX_ACT_NONE, 0);
    /* prefill (M=39) and encoder chunks (cuBLASLt) */
    test_linear("w1", 39, 9216, 3072, 0, VOX_ACT_NONE, 0);
    test_linear("w2", 39, 3072, 9216, 0, VOX_ACT_NONE, 1);
    test_linear("enc wq", 512, 2048, 1280, 1, VOX_ACT_NONE, 0);
    test_linear("enc w2", 512, 1280, 5120, 1, VOX_ACT_NONE, 1);
    test_linear("conv0", 1024, 1280, 384, 1, VOX_ACT_GELU, 0);
    test_linear("conv1", 512, 1280, 3840, 1, VOX_ACT_GELU, 0);
    test_linear("adapter0", 128, 3072, 5120, 0, VOX_ACT_GELU, 0);
    test_linear("odd", 13, 100, 36, 1, VOX_ACT_NONE, 1);
    if (vox_cuda_set_gemv_max_rows) {
        vox_weight w = weight_bf16(9216, 3072, 1.0f / sqrtf(3072.0f));
        for (int d = 0; d < 3; d++) {
            vox_weight c = weight_as(&w, dtypes[d]);
            test_linear_w("w1 forced", &c, 39, 0, VOX_ACT_NONE, 0, 1);
            weight_as_free(&c);
        }
        weight_free(&w);
    }
    test_f16_input_range();
    test_f16_check();

    test_rmsnorm(39, 3072, 1, 0);
    test_rmsnorm(512, 1280, 0, 0);
    test_rmsnorm(1, 3072, 0, 1);
    test_rope(39, 32, 128, 20000);
    test_rope(39, 8, 128, 20000);
    test_rope(512, 32, 64, 100000);
    test_kv_store(39, 1024, 8231, 8231 - 20);
    test_kv_store(512, 2048, 1262, 3000);
    test_swiglu((int64_t)39 * 9216);
    /* the conv stem of a serving batch (128 streams of 1-2 tokens, 8 mel rows a token, in
     * a pool of 300: a slot's state is conv_in then conv_mid), one stream's 64 tokens,
     * and the edges: chunks shorter than the context, K = 2 */
    const int64_t conv_in = (2 + 128) * 128, conv_floats = conv_in + (1 + 128) * 1280;
    test_conv_spans("conv0", 3, 1, 128, 128, 300, 8, 16, conv_floats, 2);
    test_conv_spans("conv1", 3, 2, 1280, 128, 300, 8, 16, conv_floats, 2);
    test_conv_spans("one stream", 3, 1, 128, 1, 1, 512, 512, conv_floats, 2);
    test_conv_spans("short chunks", 7, 1, 40, 9, 20, 2, 4, 7 * 40, 4);
    test_conv_spans("short chunks", 7, 2, 40, 9, 20, 2, 4, 7 * 40, 4);
    test_conv_spans("no context", 2, 2, 64, 9, 20, 2, 16, 64, 2);
    test_ring_append(3072, 73, 128, 150, 16);
    test_ring_append(24, 13, 6, 8, 13);

    /* decoder step: 8k-key window over a ring of 8231 */
    const int32_t step_pos[] = {0, 37, 1000, 8230, 20000};
    for (int i = 0; i < 5; i++)
        test_attention("step", 1, 32, 8, 128, 8231, 8192, &step_pos[i], 0);
    test_attention("prefill", 39, 32, 8, 128, 8231, 8192, NULL, 0);
    test_attention("prefill late", 39, 32, 8, 128, 8231, 8192, NULL, 9000);
    test_attention("encoder", 512, 32, 32, 64, 1262, 750, NULL, 3000);
    test_attention("encoder first", 512, 32, 32, 64, 1262, 750, NULL, 0);
    test_attention("encoder small", 4, 32, 32, 64, 1262, 750, NULL, 2000);
    /* any even head_dim (the tiny reference models: 16, 24), GQA groups 1, 2, 3 */
    const int hds[] = {16, 24, 32, 48};
    for (int i = 0; i < 4; i++) {
        int hd = hds[i];
        const int32_t p_step[] = {0, 5, 300};
        for (int j = 0; j < 3; j++) test_attention("small step", 1, 4, 2, hd, 26, 16, &p_step[j], 0);
        test_attention("small prefill", 39, 4, 2, hd, 55, 16, NULL, 0);
        test_attention("small prefill late", 39, 6, 2, hd, 55, 16, NULL, 200);
        test_attention("small encoder", 64, 6, 6, hd, 88, 24, NULL, 40);
        test_attention("small encoder M=5", 5, 6, 6, hd, 88, 24, NULL, 500);
    }
    test_argmax_topk(131072);

    for (int d = 0; d < 3; d++) test_graph(dtypes[d]);

    /* memory accounting and the bandwidth probe */
    size_t before = gpu->mem_bytes;
    void *blk = gpu->alloc(gpu, 100 << 20);
    size_t during = gpu->mem_bytes;
    gpu->free(gpu, blk);
    tu_check(during - before == (100u << 20) && gpu->mem_bytes == before,
             "mem_bytes follows alloc/free", "%zu -> %zu -> %zu", before, during, gpu->mem_bytes);
    double bw = gpu->measure_bandwidth ? gpu->measure_bandwidth(gpu) : 0;
    tu_check(bw > 100 && gpu->sync(gpu) == 0, "measure_bandwidth", "%.0f GB/s (D2D, read+write)", bw);

    if (argc > 1 && !strcmp(argv[1], "bench") && vox_cuda_set_gemv_max_rows && vox_cuda_set_pdl) bench();
    gpu->destroy(gpu);
    cpu->destroy(cpu);
    return tu_done();
}
