/* test_cuda_batched.c - the CUDA backend's fused decoder ops and its batched rows
 * against their CPU twins (voxtral_kernels.c), as test_cuda_ops.c tests the other ops:
 * norm_linear, swiglu_linear and rope_attention at the decoder step (M = 1: gemv1 and
 * the fused split kernel), prefill rows and the batched decoder step's row counts
 * (small-M GEMVs / cuBLASLt GEMMs), for each device dtype of weights and a mixed
 * fp16-path layer; and the serving rows: rows that are streams, each in its own slot
 * at its own position (rope_attention, kv_store + attention of several streams'
 * encoder chunks, embed with per-row audio rings). Outputs poisoned (NaN / -1) before
 * each run; tolerances as in test_cuda_ops.c. Prints "ok - ..." lines.
 * Without a CUDA device: "skipped: no CUDA device", exit 0.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "voxtral_internal.h"
#include "testutil.h"
#include "cudatest.h"


/* ---- fused decoder ops ---------------------------------------------------------------- */
/* norm_linear: n_out weights [rows[i]][D], optional norm (+ scale) */
/* norm_linear: n_out weights [rows[i]][D] of device dtypes dt[i], optional norm (+ scale) */
static void test_norm_linear_dt(const char *tag, int M, int D, int n_out, const int *rows, int with_norm,
                                int with_scale, const vox_dtype *dt) {
    vox_weight w[3], wd[3], norm = {0}, sc = {0};
    const vox_weight *wp[3];
    float *ref[3], *dy[3], *got[3];
    for (int i = 0; i < n_out; i++) {
        w[i] = weight_bf16(rows[i], D, 1.0f / sqrtf((float)D));
        wd[i] = weight_as(&w[i], dt[i]);
        wp[i] = &wd[i];
        ref[i] = malloc(sizeof(float) * M * rows[i]);
        dy[i] = gpu->alloc(gpu, sizeof(float) * M * rows[i]);
        poison(dy[i], sizeof(float) * M * rows[i]);
    }
    if (with_norm) norm = weight_f32(D, 0.5f, 1.0f);
    if (with_scale) sc = weight_f32(D, 0.3f, 1.0f);
    float *x = rand_f((int64_t)M * D, 3.0f), *dx = dev_from(x, sizeof(float) * M * D);
    cpu->norm_linear(cpu, n_out, ref, x, wp, with_norm ? &norm : NULL, with_scale ? &sc : NULL, 1e-5f, M);
    gpu->norm_linear(gpu, n_out, dy, dx, wp, with_norm ? &norm : NULL, with_scale ? &sc : NULL, 1e-5f, M);
    int err = gpu->sync(gpu);
    for (int i = 0; i < n_out; i++) {
        got[i] = dev_floats(dy[i], (int64_t)M * rows[i]);
        char name[200];
        snprintf(name, sizeof name, "norm_linear %s %s M=%d D=%d out %d/%d (%d rows)%s%s (%s)",
                 dt_name(dt[i]), tag, M, D, i + 1, n_out, rows[i], with_norm ? " norm" : "",
                 with_scale ? " scale" : "", M == 1 ? "gemv1" : "cublasLt");
        if (err) tu_check(0, name, "%s", vox_last_error());
        else check(name, got[i], ref[i], (int64_t)M * rows[i], M == 1 ? 2e-5 : gemm_tol(dt[i]),
                   M == 1 ? 1e-5 : gemm_rtol(dt[i]));
        free(ref[i]), free(got[i]);
        gpu->free(gpu, dy[i]);
        weight_as_free(&wd[i]);
        weight_free(&w[i]);
    }
    free(x);
    gpu->free(gpu, dx);
    if (with_norm) weight_free(&norm);
    if (with_scale) weight_free(&sc);
}

/* every device dtype, all weights of a call in one */
static void test_norm_linear(const char *tag, int M, int D, int n_out, const int *rows, int with_norm,
                             int with_scale) {
    for (int d = 0; d < 3; d++) {
        const vox_dtype dt[3] = {dtypes[d], dtypes[d], dtypes[d]};
        test_norm_linear_dt(tag, M, D, n_out, rows, with_norm, with_scale, dt);
    }
}

static void test_swiglu_linear_dt(int M, int N, int K, int acc, vox_dtype dt) {
    vox_weight wb = weight_bf16(N, K, 1.0f / sqrtf((float)K)), w = weight_as(&wb, dt);
    float *g = rand_f((int64_t)M * K, 6.0f), *u = rand_f((int64_t)M * K, 2.0f);
    float *y0 = rand_f((int64_t)M * N, 1.0f), *ref = malloc(sizeof(float) * M * N);
    float *dg = dev_from(g, sizeof(float) * M * K), *du = dev_from(u, sizeof(float) * M * K);
    float *dy = gpu->alloc(gpu, sizeof(float) * M * N);
    memcpy(ref, y0, sizeof(float) * M * N);
    if (acc) gpu->upload(gpu, dy, y0, sizeof(float) * M * N);
    else poison(dy, sizeof(float) * M * N);
    cpu->swiglu_linear(cpu, ref, g, u, &w, M, acc); /* overwrites g: its scratch */
    gpu->swiglu_linear(gpu, dy, dg, du, &w, M, acc);
    float *got = dev_floats(dy, (int64_t)M * N);
    char name[160];
    snprintf(name, sizeof name, "swiglu_linear %s M=%d N=%d K=%d%s (%s)", dt_name(dt), M, N, K,
             acc ? " +=" : "", M == 1 ? "gemv1" : "cublasLt");
    if (gpu->sync(gpu) != 0) tu_check(0, name, "%s", vox_last_error());
    else check(name, got, ref, (int64_t)M * N, M == 1 ? 2e-5 : gemm_tol(dt), M == 1 ? 1e-5 : gemm_rtol(dt));
    free(g), free(u), free(y0), free(ref), free(got);
    gpu->free(gpu, dg), gpu->free(gpu, du), gpu->free(gpu, dy);
    weight_as_free(&w);
    weight_free(&wb);
}

static void test_swiglu_linear(int M, int N, int K, int acc) {
    for (int d = 0; d < 3; d++) test_swiglu_linear_dt(M, N, K, acc, dtypes[d]);
}

/* rope_attention: rope of q and k, k and v stored into the rings (positions wrap),
 * attention; the output and both rings against the CPU twin. M = 1 takes the fused
 * split kernel where the shape has a fast path, other shapes the two-launch form. */
static void test_rope_attention_s(int M, int H, int Hkv, int hd, int cap, int window, int p0, int streams) {
    /* streams: row i is the stream in slot M - i (a pool of M + 1 rings, slot 0 unused:
     * rows and slots in different orders), at its own position p0 + 37 i */
    const int64_t qn = (int64_t)M * H * hd, kn = (int64_t)M * Hkv * hd,
                  nc = (int64_t)(streams ? M + 1 : 1) * cap * Hkv * hd;
    float *q = rand_f(qn, 3.0f), *k = rand_f(kn, 1.0f), *v = rand_f(kn, 1.0f);
    float *kc = rand_f(nc, 1.0f), *vc = rand_f(nc, 1.0f), *ref = malloc(sizeof(float) * qn);
    int32_t *pos = malloc(sizeof(int32_t) * M), *slot = malloc(sizeof(int32_t) * M);
    for (int i = 0; i < M; i++) pos[i] = p0 + (streams ? 37 * i : i), slot[i] = M - i;
    float *dq = dev_from(q, qn * 4), *dk = dev_from(k, kn * 4), *dv = dev_from(v, kn * 4);
    float *dkc = dev_from(kc, nc * 4), *dvc = dev_from(vc, nc * 4), *dout = gpu->alloc(gpu, qn * 4);
    int32_t *dp = dev_from(pos, sizeof(int32_t) * M), *ds = dev_from(slot, sizeof(int32_t) * M);
    poison(dout, qn * 4);
    cpu->rope_attention(cpu, ref, q, k, v, kc, vc, pos, streams ? slot : NULL, M, H, Hkv, hd, 1e6f, cap, window);
    gpu->rope_attention(gpu, dout, dq, dk, dv, dkc, dvc, dp, streams ? ds : NULL, M, H, Hkv, hd, 1e6f, cap, window);
    float *got = dev_floats(dout, qn), *gkc = dev_floats(dkc, nc), *gvc = dev_floats(dvc, nc);
    char name[160];
    snprintf(name, sizeof name, "rope_attention M=%d%s heads %d/%d hd=%d cap=%d window=%d pos %d..: out", M,
             streams ? " (rows are streams, slots)" : "", H, Hkv, hd, cap, window, p0);
    if (gpu->sync(gpu) != 0) tu_check(0, name, "%s", vox_last_error());
    else check(name, got, ref, qn, 1e-5, 1e-4);
    snprintf(name, sizeof name, "rope_attention M=%d hd=%d: key ring", M, hd);
    check(name, gkc, kc, nc, 1e-6, 1e-5);
    snprintf(name, sizeof name, "rope_attention M=%d hd=%d: value ring", M, hd);
    check(name, gvc, vc, nc, 0, 0);
    free(q), free(k), free(v), free(kc), free(vc), free(ref), free(pos), free(slot), free(got), free(gkc), free(gvc);
    gpu->free(gpu, dq), gpu->free(gpu, dk), gpu->free(gpu, dv), gpu->free(gpu, dkc), gpu->free(gpu, dvc);
    gpu->free(gpu, dp), gpu->free(gpu, ds), gpu->free(gpu, dout);
}

/* A batch of several streams' encoder chunks: `streams` streams of `rows` frames each
 * (consecutive positions from their own start), in slots of a pool of streams + 1
 * rings in reverse order; kv_store then attention with the slot array, against the
 * CPU twin. Up to 8 rows: the split kernel; more: the query tiles, which walk each
 * run of one slot's rows over its keys once (runs crossing tile edges when rows is
 * not a multiple of 4). interleave: row i belongs to stream i % streams (every tile
 * a run per row, slots recurring). Hkv < H: GQA (the decoder's batched prompts). */
static void test_slot_batch(int streams, int rows, int H, int Hkv, int hd, int cap, int window, int interleave) {
    const int M = streams * rows;
    const int64_t kvd = (int64_t)Hkv * hd, nc = (int64_t)(streams + 1) * cap * kvd, nq = (int64_t)M * H * hd,
                  nk = (int64_t)M * kvd;
    float *kc = rand_f(nc, 1.0f), *vc = rand_f(nc, 1.0f), *q = rand_f(nq, 3.0f);
    float *k = rand_f(nk, 1.0f), *v = rand_f(nk, 1.0f), *ref = malloc(sizeof(float) * nq);
    int32_t *pos = malloc(sizeof(int32_t) * M), *slot = malloc(sizeof(int32_t) * M);
    for (int j = 0; j < streams; j++)
        for (int r = 0; r < rows; r++) {
            const int i = interleave ? r * streams + j : j * rows + r;
            pos[i] = 53 * j + 7 + r, slot[i] = streams - j;
        }
    float *dkc = dev_from(kc, nc * 4), *dvc = dev_from(vc, nc * 4), *dq = dev_from(q, nq * 4);
    float *dk = dev_from(k, nk * 4), *dv = dev_from(v, nk * 4), *dout = gpu->alloc(gpu, nq * 4);
    int32_t *dp = dev_from(pos, sizeof(int32_t) * M), *ds = dev_from(slot, sizeof(int32_t) * M);
    poison(dout, nq * 4);
    cpu->kv_store(cpu, kc, vc, k, v, pos, slot, M, (int)kvd, cap);
    cpu->attention(cpu, ref, q, kc, vc, pos, slot, M, H, Hkv, hd, cap, window);
    gpu->kv_store(gpu, dkc, dvc, dk, dv, dp, ds, M, (int)kvd, cap);
    gpu->attention(gpu, dout, dq, dkc, dvc, dp, ds, M, H, Hkv, hd, cap, window);
    float *got = dev_floats(dout, nq), *gkc = dev_floats(dkc, nc);
    char name[160];
    snprintf(name, sizeof name, "kv_store + attention, %d streams x %d rows in slots%s, heads %d/%d hd=%d cap=%d window=%d",
             streams, rows, interleave ? " (interleaved)" : "", H, Hkv, hd, cap, window);
    if (gpu->sync(gpu) != 0) tu_check(0, name, "%s", vox_last_error());
    else check(name, got, ref, nq, 1e-5, 1e-4);
    snprintf(name, sizeof name, "kv_store in slots: %d streams, key rings", streams);
    check(name, gkc, kc, nc, 0, 0);
    free(kc), free(vc), free(q), free(k), free(v), free(ref), free(pos), free(slot), free(got), free(gkc);
    gpu->free(gpu, dkc), gpu->free(gpu, dvc), gpu->free(gpu, dq), gpu->free(gpu, dk), gpu->free(gpu, dv);
    gpu->free(gpu, dp), gpu->free(gpu, ds), gpu->free(gpu, dout);
}

/* embed with per-row audio rings (slots): the batched decoder step's input */
static void test_embed_slots(vox_weight *emb, int M, int acap) {
    const int D = (int)emb->cols, V = (int)emb->rows;
    float *audio = rand_f((int64_t)(M + 1) * acap * D, 1.0f), *ref = malloc(sizeof(float) * M * D);
    int32_t *ids = rand_pos(M, 0, V - 1), *pos = rand_pos(M, 0, 5000), *slot = malloc(sizeof(int32_t) * M);
    for (int i = 0; i < M; i++) slot[i] = M - i;
    cpu->embed(cpu, ref, emb, ids, audio, pos, slot, M, D, acap);
    float *da = dev_from(audio, (int64_t)(M + 1) * acap * D * 4), *dx = gpu->alloc(gpu, (int64_t)M * D * 4);
    int32_t *di = dev_from(ids, M * 4), *dp = dev_from(pos, M * 4), *ds = dev_from(slot, M * 4);
    poison(dx, (int64_t)M * D * 4);
    gpu->embed(gpu, dx, emb, di, da, dp, ds, M, D, acap);
    float *got = dev_floats(dx, (int64_t)M * D);
    char name[96];
    snprintf(name, sizeof name, "embed %s M=%d rows in slots", dt_name(emb->dev_dtype), M);
    check(name, got, ref, (int64_t)M * D, emb->dev_dtype == VOX_DT_F16 ? 3e-8 : 0, 0);
    free(audio), free(ref), free(ids), free(pos), free(slot), free(got);
    gpu->free(gpu, da), gpu->free(gpu, dx), gpu->free(gpu, di), gpu->free(gpu, dp), gpu->free(gpu, ds);
}

static void test_rope_attention(int M, int H, int Hkv, int hd, int cap, int window, int p0) {
    test_rope_attention_s(M, H, Hkv, hd, cap, window, p0, 0);
}

int main(void) {
    const int up = cudatest_backends("fp16"); /* the fp16 path's backend runs weights of every dtype */
    if (up <= 0) return up < 0;

    /* embed with rows in slots (the batched step's input), of the real embedding's shape */
    vox_weight head = weight_bf16(131072, 3072, 1.0f / sqrtf(3072.0f));
    for (int d = 0; d < 3; d++) {
        vox_weight c = weight_as(&head, dtypes[d]);
        test_embed_slots(&c, 32, 100);
        weight_as_free(&c);
    }
    weight_free(&head);

    /* fused decoder ops: M = 1 (gemv1) and prefill rows (cuBLASLt), real and tiny shapes */
    const int qkv[] = {4096, 1024, 1024}, w13[] = {9216, 9216}, head_rows[] = {131072};
    test_norm_linear("q/k/v", 1, 3072, 3, qkv, 1, 0);
    test_norm_linear("w1/w3", 1, 3072, 2, w13, 1, 1);
    test_norm_linear("lm head", 1, 3072, 1, head_rows, 1, 0);
    test_norm_linear("no norm", 1, 3072, 2, qkv, 0, 0);
    test_norm_linear("q/k/v", 39, 3072, 3, qkv, 1, 0);
    test_norm_linear("w1/w3", 39, 3072, 2, w13, 1, 1);
    const int narrow[] = {64, 30}, narrow_odd[] = {33}, narrow64[] = {64};
    test_norm_linear("narrow, K split 4 ways", 1, 8192, 1, narrow64, 1, 0);
    test_norm_linear("narrow, K split", 1, 3072, 2, narrow, 1, 1);
    test_norm_linear("narrow odd, K split", 1, 3072, 1, narrow_odd, 1, 0);
    const int tiny_qkv[] = {128, 64, 64}, tiny_odd[] = {7, 5, 9}, tiny_head[] = {1100};
    test_norm_linear("tiny q/k/v", 1, 96, 3, tiny_qkv, 1, 0);
    test_norm_linear("tiny odd rows", 1, 96, 3, tiny_odd, 1, 1);
    test_norm_linear("tiny lm head", 1, 96, 1, tiny_head, 1, 0);
    test_norm_linear("tiny q/k/v", 39, 96, 3, tiny_qkv, 1, 0);
    test_swiglu_linear(1, 3072, 9216, 1);
    test_swiglu_linear(1, 3072, 9216, 0);
    test_swiglu_linear(39, 3072, 9216, 1);
    test_swiglu_linear(1, 96, 160, 1);
    /* the batched decoder step's row counts (small-M GEMVs / GEMMs) */
    test_norm_linear("q/k/v, batch", 16, 3072, 3, qkv, 1, 0);
    test_norm_linear("w1/w3, batch", 32, 3072, 2, w13, 1, 1);
    test_norm_linear("lm head, batch", 5, 3072, 1, head_rows, 1, 0);
    test_swiglu_linear(32, 3072, 9216, 1);
    test_swiglu_linear(7, 3072, 9216, 1);
    test_swiglu_linear(39, 96, 160, 1);
    test_rope_attention(1, 32, 8, 128, 8231, 8192, 8230);  /* fused: the decoder step */
    test_rope_attention(1, 32, 8, 128, 8231, 8192, 20000); /* ring wrapped, full window */
    test_rope_attention(1, 32, 8, 128, 8231, 8192, 0);     /* the first key only */
    test_rope_attention(1, 8, 4, 64, 300, 100, 777);       /* fused, hd 64, window < cap */
    test_rope_attention(1, 4, 4, 32, 50, 40, 123);         /* fused, hd 32: pairs span lanes */
    test_rope_attention(39, 32, 8, 128, 8231, 8192, 8231 - 20); /* prefill: two launches */
    test_rope_attention(1, 4, 2, 24, 26, 16, 25);          /* no fast path: two launches */
    test_rope_attention(39, 4, 4, 16, 50, 24, 30);
    test_rope_attention_s(3, 32, 8, 128, 700, 512, 600, 1); /* fused, B = 3 streams, rings wrap */
    test_rope_attention_s(3, 4, 2, 24, 26, 16, 25, 1);      /* B = 3, no fast path: two launches */
    test_rope_attention_s(32, 32, 8, 128, 8231, 8192, 9000, 1); /* the batched step, B = 32 */
    test_rope_attention_s(17, 8, 4, 64, 300, 100, 50, 1);   /* B = 17, hd 64 */
    test_slot_batch(2, 4, 32, 32, 64, 780, 750, 0);        /* live encoder chunks of 2 streams: split */
    test_slot_batch(3, 4, 32, 32, 64, 780, 750, 0);        /* 3 streams: tiles of one stream each */
    test_slot_batch(5, 6, 32, 32, 64, 780, 750, 0);        /* runs crossing tile edges */
    test_slot_batch(3, 5, 8, 8, 64, 780, 750, 1);          /* interleaved: slots recur within tiles */
    test_slot_batch(8, 64, 32, 32, 64, 780, 750, 0);       /* 512 rows x 32 heads: a full encoder batch */
    test_slot_batch(128, 4, 8, 8, 64, 100, 90, 0);         /* 128 live streams: a token each */
    test_slot_batch(4, 39, 32, 8, 128, 300, 256, 0);       /* batched prompts: GQA, hd 128 */
    test_slot_batch(3, 20, 6, 2, 32, 55, 16, 0);           /* a small model: window < rows, ring wraps */
    /* an fp16-path layer with one tensor kept in fp32 */
    const vox_dtype mixed[3] = {VOX_DT_F16, VOX_DT_F32, VOX_DT_F16};
    test_norm_linear_dt("mixed q/k/v", 1, 3072, 3, qkv, 1, 0, mixed);
    test_norm_linear_dt("mixed q/k/v", 39, 3072, 3, qkv, 1, 0, mixed);
    test_norm_linear_dt("mixed no norm", 39, 3072, 3, qkv, 0, 0, mixed);

    gpu->destroy(gpu);
    cpu->destroy(cpu);
    return tu_done();
}
