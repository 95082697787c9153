/* test_cuda_quant.c - the CUDA ops on quantized weights (Q8 / Q4, cuda/qgemv.cu, cuda/quant.cu) against
 * their CPU twins (the CPU backend on the same quantized bytes), and against the CPU
 * op on the BF16 weights they were quantized from within the format's error bound
 * (sum_k |x_k| * bound_k, bound as in test_quant.c). On the fp16 path's backend (the
 * GEMM path dequantizes to FP16 tiles; pre-Ampere cards), where the device has
 * BF16 on the bf16 path's (BF16 tiles), and on the fp32 path's (FP32 tiles). Outputs
 * poisoned (NaN) before each run.
 *   qgemv (M <= 8): linear (bias, GELU, +=), norm_linear (q/k/v, w1/w3 + scale, the
 *   LM head), swiglu_linear; odd row counts (a warp's row pair across two weights);
 *   with its shared memory capped (VOX_QGEMV_SMEM) the input rows in passes and a wide
 *   K in column slabs; M > 8: the tile + cuBLASLt path, the LM head tiled in row
 *   blocks; embed (exact: the rule then + audio, as the CPU).
 * Tolerances (|got - ref| <= atol * max|ref| + rtol * |ref|): qgemv sums in fp32 as the
 * CPU: 2e-5 / 1e-5; the GEMM path rounds the activations and the tile to BF16 (1e-2)
 * or FP16 (2e-3) as test_cuda_ops' GEMMs, FP32 tiles 2e-5 / 1e-5.
 * Without a CUDA device: "skipped: no CUDA device", exit 0.
 */
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "voxtral_internal.h"
#include "voxtral_quant.h"
#include "cudatest.h"

int vox_cuda_alloc_qtile(vox_backend *be) __attribute__((weak));

static const char *path_tag;
static vox_dtype tile_dt; /* the GEMM path's tile dtype on this backend */

/* frand, to_bf16, rand_f: tests/testutil.h; dev_from, dev_floats, check: tests/cudatest.h */
static void *dev_poisoned(size_t bytes) {
    void *d = gpu->alloc(gpu, bytes), *h = malloc(bytes);
    memset(h, 0xff, bytes);
    gpu->upload(gpu, d, h, bytes);
    free(h);
    return d;
}

/* the BF16 weight (host) and its quantized copy (host + device) */
typedef struct {
    vox_weight b, q;
} qpair;

static qpair make_pair(int64_t rows, int64_t cols, vox_dtype dt, int G) {
    qpair p;
    uint16_t *bf = malloc(sizeof(uint16_t) * rows * cols);
    float *f = malloc(sizeof(float) * rows * cols);
    const float sc = 1.0f / sqrtf((float)cols);
    for (int64_t i = 0; i < rows * cols; i++) {
        bf[i] = to_bf16(frand() * sc);
        f[i] = vox_bf16_to_f32(bf[i]);
    }
    p.b = (vox_weight){.dtype = VOX_DT_BF16, .rows = rows, .cols = cols, .data = bf, .dev_dtype = VOX_DT_BF16};
    const size_t db = (size_t)(rows * vox_q_row_bytes(dt, cols, G)), sb = (size_t)(rows * vox_q_scale_count(dt, cols, G)) * 2;
    void *data = malloc(db);
    uint16_t *s = malloc(sb);
    vox_q_quantize_rows(dt, G, f, rows, cols, data, s);
    free(f);
    p.q = (vox_weight){.dtype = dt, .rows = rows, .cols = cols, .data = data, .dev_dtype = dt, .scales = s, .group = G};
    p.q.dev = dev_from(data, db);
    p.q.dev_scales = dev_from(s, sb);
    return p;
}
static void free_pair(qpair *p) {
    free((void *)p->b.data);
    free((void *)p->q.data);
    free((void *)p->q.scales);
    gpu->free(gpu, p->q.dev);
    gpu->free(gpu, p->q.dev_scales);
}
static vox_weight f32_vec(int64_t n, float scale, float offset) {
    float *p = rand_f(n, scale);
    for (int64_t i = 0; i < n; i++) p[i] += offset;
    vox_weight w = {.dtype = VOX_DT_F32, .rows = n, .cols = 1, .data = p, .dev_dtype = VOX_DT_F32};
    w.dev = dev_from(p, n * 4);
    return w;
}
static void free_vec(vox_weight *w) {
    free((void *)w->data);
    gpu->free(gpu, w->dev);
}

static double elem_bound(const vox_weight *q, int64_t r, int64_t k) {
    const int64_t g = k / q->group, ns = vox_q_scale_count(q->dtype, q->cols, q->group);
    const uint16_t *sc = q->scales + r * ns;
    if (q->dtype == VOX_DT_Q8) {
        double s = vox_f16_to_f32(sc[g]);
        return 0.5 * s + s * 127 * (1.0 / 1024);
    }
    double s = vox_f16_to_f32(sc[2 * g]), m = vox_f16_to_f32(sc[2 * g + 1]);
    return 0.5 * s + (fabs(m) + 15 * s) * (1.0 / 1024);
}


/* got (quantized, GPU) vs the CPU op on the BF16 weight: within sum_k |in_k| bound_k
 * (+ the path's rounding of the result), in = the op's matmul input rows [M][K] */
static void check_bound(const char *name, const qpair *p, const float *in, const float *got, const float *bref,
                        int M, double rtol) {
    double worst = 0, mr = 0;
    const int64_t N = p->q.rows, K = p->q.cols, G = p->q.group, ng = (K + G - 1) / G;
    for (int64_t i = 0; i < M * N; i++) mr = fabs(bref[i]) > mr ? fabs(bref[i]) : mr;
    /* the bound is constant over a group: sum_g bound_g * sum_{k in g} |in_k| (one
     * pass per group, not per element: the LM head's check took minutes) */
    double *ain = calloc((size_t)(M * ng), sizeof(double));
    for (int m = 0; m < M; m++)
        for (int64_t k = 0; k < K; k++) ain[m * ng + k / G] += fabs(in[m * K + k]);
    int ok = 1;
#pragma omp parallel for reduction(max : worst) reduction(& : ok)
    for (int64_t n = 0; n < N; n++)
        for (int m = 0; m < M; m++) {
            double bound = 0;
            for (int64_t g = 0; g < ng; g++) bound += ain[m * ng + g] * elem_bound(&p->q, n, g * G);
            double d = fabs(got[m * N + n] - bref[m * N + n]), lim = bound * 1.01 + rtol * mr + 1e-30;
            if (d / lim > worst) worst = d / lim;
            ok &= d <= lim;
        }
    free(ain);
    tu_check(ok, name, "worst %.3f of the format's bound", worst);
}

static double tol_a(int M) { return M <= 8 ? 2e-5 : tile_dt == VOX_DT_BF16 ? 1e-2 : tile_dt == VOX_DT_F16 ? 2e-3 : 2e-5; }
static double tol_r(int M) { return M <= 8 ? 1e-5 : tile_dt == VOX_DT_BF16 ? 1e-2 : tile_dt == VOX_DT_F16 ? 2e-3 : 1e-5; }

static void test_linear(vox_dtype dt, int G, int M, int N, int K, int bias, vox_act act, int acc) {
    qpair p = make_pair(N, K, dt, G);
    vox_weight b = bias ? f32_vec(N, 0.3f, 0) : (vox_weight){0};
    float *x = rand_f((int64_t)M * K, 1.0f), *y0 = rand_f((int64_t)M * N, 1.0f);
    float *ref = malloc(sizeof(float) * M * N), *bref = malloc(sizeof(float) * M * N);
    memcpy(ref, y0, sizeof(float) * M * N);
    memcpy(bref, y0, sizeof(float) * M * N);
    cpu->linear(cpu, ref, x, &p.q, bias ? &b : NULL, M, act, acc);
    cpu->linear(cpu, bref, x, &p.b, bias ? &b : NULL, M, act, acc);
    float *dx = dev_from(x, sizeof(float) * M * K);
    float *dy = acc ? dev_from(y0, sizeof(float) * M * N) : dev_poisoned(sizeof(float) * M * N);
    gpu->linear(gpu, dy, dx, &p.q, bias ? &b : NULL, M, act, acc);
    float *got = dev_floats(dy, (int64_t)M * N);
    const char *name = tu_name("%s linear %s group %d M=%d N=%d K=%d%s%s%s (%s)", path_tag, vox_dtype_name(dt), G, M, N, K,
                          bias ? " bias" : "", act ? " gelu" : "", acc ? " +=" : "", M <= 8 ? "qgemv" : "tile gemm");
    if (gpu->sync(gpu) != 0) {
        tu_check(0, name, "%s", vox_last_error());
    } else {
        check(name, got, ref, (int64_t)M * N, tol_a(M), tol_r(M));
        if (act == VOX_ACT_NONE) check_bound(tu_name("%s vs bf16", name), &p, x, got, bref, M, tol_a(M));
    }
    free(x), free(y0), free(ref), free(bref), free(got);
    gpu->free(gpu, dx), gpu->free(gpu, dy);
    if (bias) free_vec(&b);
    free_pair(&p);
}

static void test_norm_linear(vox_dtype dt, int G, int M, int D, int n_out, const int *rows, int with_scale) {
    qpair p[3];
    const vox_weight *wq[3], *wb[3];
    float *ref[3], *bref[3], *dy[3];
    for (int i = 0; i < n_out; i++) {
        p[i] = make_pair(rows[i], D, dt, G);
        wq[i] = &p[i].q, wb[i] = &p[i].b;
        ref[i] = malloc(sizeof(float) * M * rows[i]);
        bref[i] = malloc(sizeof(float) * M * rows[i]);
        dy[i] = dev_poisoned(sizeof(float) * M * rows[i]);
    }
    vox_weight norm = f32_vec(D, 0.5f, 1.0f), sc = with_scale ? f32_vec(D, 0.3f, 1.0f) : (vox_weight){0};
    float *x = rand_f((int64_t)M * D, 3.0f), *dx = dev_from(x, sizeof(float) * M * D);
    float *xn = malloc(sizeof(float) * M * D);
    cpu->rmsnorm(cpu, xn, x, &norm, with_scale ? &sc : NULL, M, D, 1e-5f);
    cpu->norm_linear(cpu, n_out, ref, x, wq, &norm, with_scale ? &sc : NULL, 1e-5f, M);
    cpu->norm_linear(cpu, n_out, bref, x, wb, &norm, with_scale ? &sc : NULL, 1e-5f, M);
    gpu->norm_linear(gpu, n_out, dy, dx, wq, &norm, with_scale ? &sc : NULL, 1e-5f, M);
    int err = gpu->sync(gpu);
    for (int i = 0; i < n_out; i++) {
        float *got = dev_floats(dy[i], (int64_t)M * rows[i]);
        const char *name = tu_name("%s norm_linear %s group %d M=%d D=%d out %d/%d (%d rows)%s (%s)", path_tag,
                              vox_dtype_name(dt), G, M, D, i + 1, n_out, rows[i], with_scale ? " scale" : "",
                              M <= 8 ? "qgemv" : "tile gemm");
        if (err) {
            tu_check(0, name, "%s", vox_last_error());
        } else {
            check(name, got, ref[i], (int64_t)M * rows[i], tol_a(M), tol_r(M));
            check_bound(tu_name("%s vs bf16", name), &p[i], xn, got, bref[i], M, tol_a(M));
        }
        free(got), free(ref[i]), free(bref[i]);
        gpu->free(gpu, dy[i]);
        free_pair(&p[i]);
    }
    free(x), free(xn);
    gpu->free(gpu, dx);
    free_vec(&norm);
    if (with_scale) free_vec(&sc);
}

static void test_swiglu_linear(vox_dtype dt, int G, int M, int N, int K) {
    qpair p = make_pair(N, K, dt, G);
    float *g = rand_f((int64_t)M * K, 6.0f), *u = rand_f((int64_t)M * K, 2.0f), *g2 = malloc(sizeof(float) * M * K);
    memcpy(g2, g, sizeof(float) * M * K);
    float *dg = dev_from(g, sizeof(float) * M * K), *du = dev_from(u, sizeof(float) * M * K);
    float *ref = malloc(sizeof(float) * M * N), *bref = malloc(sizeof(float) * M * N);
    float *dy = dev_poisoned(sizeof(float) * M * N);
    cpu->swiglu_linear(cpu, ref, g, u, &p.q, M, 0); /* g becomes silu(g) * u */
    cpu->swiglu_linear(cpu, bref, g2, u, &p.b, M, 0);
    gpu->swiglu_linear(gpu, dy, dg, du, &p.q, M, 0);
    float *got = dev_floats(dy, (int64_t)M * N);
    const char *name = tu_name("%s swiglu_linear %s group %d M=%d N=%d K=%d (%s)", path_tag, vox_dtype_name(dt), G, M, N, K,
                          M <= 8 ? "qgemv" : "tile gemm");
    if (gpu->sync(gpu) != 0) {
        tu_check(0, name, "%s", vox_last_error());
    } else {
        check(name, got, ref, (int64_t)M * N, tol_a(M), tol_r(M));
        check_bound(tu_name("%s vs bf16", name), &p, g, got, bref, M, tol_a(M));
    }
    free(g), free(g2), free(u), free(ref), free(bref), free(got);
    gpu->free(gpu, dg), gpu->free(gpu, du), gpu->free(gpu, dy);
    free_pair(&p);
}

static void test_embed(vox_dtype dt, int G, int V, int D, int M) {
    qpair p = make_pair(V, D, dt, G);
    const int acap = 300;
    float *audio = rand_f((int64_t)acap * D, 1.0f), *ref = malloc(sizeof(float) * M * D);
    int32_t *ids = malloc(4 * M), *pos = malloc(4 * M);
    for (int i = 0; i < M; i++) ids[i] = (int32_t)((frand() + 1) * 0.5f * (V - 1)), pos[i] = i * 37;
    cpu->embed(cpu, ref, &p.q, ids, audio, pos, NULL, M, D, acap);
    float *da = dev_from(audio, (int64_t)acap * D * 4), *dx = dev_poisoned((int64_t)M * D * 4);
    int32_t *di = dev_from(ids, M * 4), *dp = dev_from(pos, M * 4);
    gpu->embed(gpu, dx, &p.q, di, da, dp, NULL, M, D, acap);
    float *got = dev_floats(dx, (int64_t)M * D);
    const char *name = tu_name("%s embed %s group %d vocab %d D=%d M=%d: exactly the CPU's", path_tag, vox_dtype_name(dt), G, V, D, M);
    if (gpu->sync(gpu) != 0) tu_check(0, name, "%s", vox_last_error());
    else check(name, got, ref, (int64_t)M * D, 0, 0);
    free(audio), free(ref), free(ids), free(pos), free(got);
    gpu->free(gpu, da), gpu->free(gpu, dx), gpu->free(gpu, di), gpu->free(gpu, dp);
    free_pair(&p);
}

static void run_all(void) {
    const vox_dtype dts[2] = {VOX_DT_Q8, VOX_DT_Q4};
    const int qkv[3] = {4096, 1024, 1024}, w13[2] = {9216, 9216}, head[1] = {131072};
    const int tiny[3] = {128, 64, 64};
    const int odd[3] = {37, 5, 11}, slab_rows[2] = {301, 212};
    for (int d = 0; d < 2; d++) {
        const vox_dtype dt = dts[d];
        /* the decoder step's shapes, group 64 (the default), 32 and 128 */
        test_norm_linear(dt, 64, 1, 3072, 3, qkv, 0);
        test_norm_linear(dt, 64, 1, 3072, 2, w13, 1);
        test_norm_linear(dt, 64, 1, 3072, 1, head, 0);
        test_linear(dt, 64, 1, 3072, 4096, 0, VOX_ACT_NONE, 1);
        test_swiglu_linear(dt, 64, 1, 3072, 9216);
        test_linear(dt, 32, 1, 1024, 3072, 0, VOX_ACT_NONE, 0);
        test_linear(dt, 128, 1, 1024, 3072, 0, VOX_ACT_NONE, 0);
        /* small M (batched steps, streaming encoder chunks), bias and GELU */
        test_linear(dt, 64, 3, 2048, 1280, 1, VOX_ACT_NONE, 0);
        test_linear(dt, 64, 8, 3072, 5120, 0, VOX_ACT_GELU, 0);
        test_norm_linear(dt, 64, 4, 3072, 3, qkv, 0);
        test_swiglu_linear(dt, 64, 5, 1280, 5120);
        /* widths not a multiple of the group, nor of 32 (the tiny models: 96, 160) */
        test_norm_linear(dt, 64, 1, 96, 3, tiny, 1);
        test_linear(dt, 64, 2, 96, 160, 1, VOX_ACT_NONE, 1);
        test_linear(dt, 32, 1, 64, 200, 0, VOX_ACT_NONE, 0);
        /* odd row counts: a warp's row pair split between two weights, a pair's lone row */
        test_norm_linear(dt, 64, 1, 1280, 3, odd, 1);
        test_norm_linear(dt, 32, 3, 1280, 3, odd, 0);
        test_linear(dt, 96, 1, 333, 480, 1, VOX_ACT_GELU, 0);
        /* the shared memory capped (VOX_QGEMV_SMEM): the input rows in passes (40000
         * bytes: 2 rows of 3072 columns at a time), K = 9216 in column slabs (16384) */
        const char *tag = path_tag;
        static char capped[64];
        setenv("VOX_QGEMV_SMEM", "40000", 1);
        snprintf(capped, sizeof capped, "%s smem<=40000", tag);
        path_tag = capped;
        test_linear(dt, 64, 8, 1024, 3072, 1, VOX_ACT_GELU, 0);
        test_swiglu_linear(dt, 64, 5, 700, 3072);
        test_norm_linear(dt, 64, 3, 3072, 3, odd, 1);
        setenv("VOX_QGEMV_SMEM", "16384", 1);
        snprintf(capped, sizeof capped, "%s smem<=16384", tag);
        test_linear(dt, 64, 2, 512, 9216, 1, VOX_ACT_NONE, 1);
        test_norm_linear(dt, 64, 1, 9216, 2, slab_rows, 1);
        test_swiglu_linear(dt, 128, 3, 300, 9216);
        unsetenv("VOX_QGEMV_SMEM");
        path_tag = tag;
        /* many rows: the tile and cuBLASLt (prefill 39, encoder chunk 512) */
        test_linear(dt, 64, 39, 9216, 3072, 0, VOX_ACT_NONE, 0);
        test_linear(dt, 64, 512, 2048, 1280, 1, VOX_ACT_NONE, 1);
        test_norm_linear(dt, 64, 39, 3072, 2, w13, 1);
        test_swiglu_linear(dt, 64, 39, 3072, 9216);
        test_linear(dt, 64, 13, 96, 160, 1, VOX_ACT_GELU, 0);
        /* the LM head at many rows: tiled in row blocks through the output scratch */
        test_norm_linear(dt, 64, 12, 3072, 1, head, 0);
        test_embed(dt, 64, 131072, 3072, 39);
        test_embed(dt, 32, 1300, 96, 7);
    }
}

int main(void) {
    if (!vox_cuda_available()) {
        printf("skipped: no CUDA device\n");
        return 0;
    }
    cpu = vox_cpu_backend_new(0);
    const char *paths[3] = {"fp16", "bf16", "fp32"};
    const vox_dtype tiles[3] = {VOX_DT_F16, VOX_DT_BF16, VOX_DT_F32};
    for (int i = 0; i < 3; i++) {
        gpu = vox_cuda_backend_new(0, paths[i]);
        if (!gpu) {
            tu_check(i == 1, tu_name("%s path backend", paths[i]), "%s", vox_last_error());
            continue;
        }
        path_tag = paths[i];
        tile_dt = tiles[i];
        if (!vox_cuda_alloc_qtile || vox_cuda_alloc_qtile(gpu) != 0) {
            tu_check(0, tu_name("%s quantized tile", paths[i]), "%s", vox_last_error());
        } else {
            printf("# %s (%s path) vs %s\n", gpu->device_name, paths[i], cpu->device_name);
            run_all();
        }
        gpu->destroy(gpu);
    }
    cpu->destroy(cpu);
    return tu_done();
}
