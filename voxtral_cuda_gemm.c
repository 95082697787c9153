/* voxtral_cuda_gemm.c - the CUDA backend's GEMMs: cuBLASLt plans (one per shape, row
 * bucket, bias, alignment and dtype, cached in cuda_impl.plans) and the matmul of a
 * weight over many rows, with what only it needs: the GEMM input (x rounded to BF16;
 * scaled to FP16, alpha read on the device; or x itself for FP32) and the dequantized
 * tile of a quantized weight. The ops that route rows here live in voxtral_cuda.c.
 *
 * cuBLASLt with fp32 output and a bias epilogue (beta = 1 accumulates): BF16 x BF16
 * with x rounded to BF16; FP16 x FP16 with x scaled by a power of two so max |x| sits
 * just under 2^15 (no FP16 overflow whatever the activations; alpha undoes it, read on
 * the device); FP32 x FP32 on x itself (COMPUTE_32F: no TF32). Quantized weights
 * (Q8 / Q4) dequantize into a dense tile of the path's dtype (BF16, F16 or F32), in
 * row blocks when they do not fit, and run the GEMM of that dtype on it.
 * Everything only enqueues (plans are made on the host, at first use).
 */
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include <cublasLt.h>

#include "voxtral_cuda_impl.h"
#include "voxtral_quant.h"

/* ---- plans ----------------------------------------------------------------------------- */
static int ptr_align(const void *p) {
    uintptr_t u = (uintptr_t)p;
    int a = ARENA_ALIGN;
    while (a > 1 && (u % a)) a >>= 1;
    return a;
}

static cudaDataType_t lt_type(vox_dtype dt) {
    return dt == VOX_DT_BF16 ? CUDA_R_16BF : dt == VOX_DT_F16 ? CUDA_R_16F : CUDA_R_32F;
}

static lt_plan *get_plan(cuda_impl *ci, int M, int N, int K, int bias, int align, vox_dtype dt) {
    vox_backend *be = ci->be;
    for (int i = 0; i < ci->n_plans; i++) {
        lt_plan *p = &ci->plans[i];
        if (p->M == M && p->N == N && p->K == K && p->bias == bias && p->align == align && p->dt == dt)
            return p;
    }
    if (ci->n_plans == MAX_PLANS) { /* never with this model: evict the oldest */
        lt_plan *p = &ci->plans[0];
        cublasLtMatmulDescDestroy(p->desc);
        cublasLtMatrixLayoutDestroy(p->a);
        cublasLtMatrixLayoutDestroy(p->b);
        cublasLtMatrixLayoutDestroy(p->c);
        memmove(ci->plans, ci->plans + 1, sizeof(lt_plan) * (MAX_PLANS - 1));
        ci->n_plans--;
    }
    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    lt_plan *p = &ci->plans[ci->n_plans];
    memset(p, 0, sizeof *p);
    p->M = M, p->N = N, p->K = K, p->bias = bias, p->align = align, p->dt = dt;
    /* column-major view: y^T[N][M] = W[K][N]^T . x^T[K][M]. COMPUTE_32F: fp32 sums,
     * and for fp32 inputs no TF32 (that takes COMPUTE_32F_FAST_TF32) */
    cublasOperation_t opT = CUBLAS_OP_T, opN = CUBLAS_OP_N;
    CUBLAS_CHECK(cublasLtMatmulDescCreate(&p->desc, CUBLAS_COMPUTE_32F, CUDA_R_32F));
    CUBLAS_CHECK(cublasLtMatmulDescSetAttribute(p->desc, CUBLASLT_MATMUL_DESC_TRANSA, &opT, sizeof opT));
    CUBLAS_CHECK(cublasLtMatmulDescSetAttribute(p->desc, CUBLASLT_MATMUL_DESC_TRANSB, &opN, sizeof opN));
    if (dt == VOX_DT_F16) { /* alpha undoes the input's scale, known only on the device */
        cublasLtPointerMode_t pm = CUBLASLT_POINTER_MODE_DEVICE;
        CUBLAS_CHECK(cublasLtMatmulDescSetAttribute(p->desc, CUBLASLT_MATMUL_DESC_POINTER_MODE, &pm, sizeof pm));
    }
    if (bias) {
        cublasLtEpilogue_t epi = CUBLASLT_EPILOGUE_BIAS;
        cudaDataType_t bt = CUDA_R_32F;
        CUBLAS_CHECK(cublasLtMatmulDescSetAttribute(p->desc, CUBLASLT_MATMUL_DESC_EPILOGUE, &epi, sizeof epi));
        CUBLAS_CHECK(cublasLtMatmulDescSetAttribute(p->desc, CUBLASLT_MATMUL_DESC_BIAS_DATA_TYPE, &bt, sizeof bt));
    }
    CUBLAS_CHECK(cublasLtMatrixLayoutCreate(&p->a, lt_type(dt), K, N, K));
    CUBLAS_CHECK(cublasLtMatrixLayoutCreate(&p->b, lt_type(dt), K, M, K));
    CUBLAS_CHECK(cublasLtMatrixLayoutCreate(&p->c, CUDA_R_32F, N, M, N));
    /* The algorithm is chosen for M's bucket (the next power of two from 16) and
     * checked for M: each bucket costs one heuristic query (~ms) per shape, not each
     * row count a stream produces, and a given M always gets the same algorithm. */
    int Mb = 16;
    while (Mb < M) Mb *= 2;
    cublasLtMatrixLayout_t bb = NULL, cb = NULL;
    CUBLAS_CHECK(cublasLtMatrixLayoutCreate(&bb, lt_type(dt), K, Mb, K));
    CUBLAS_CHECK(cublasLtMatrixLayoutCreate(&cb, CUDA_R_32F, N, Mb, N));
    cublasLtMatmulPreference_t pref;
    size_t ws = LT_WORKSPACE;
    uint32_t al = (uint32_t)align;
    CUBLAS_CHECK(cublasLtMatmulPreferenceCreate(&pref));
    CUBLAS_CHECK(cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES, &ws, sizeof ws));
    CUBLAS_CHECK(cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_B_BYTES, &al, sizeof al));
    CUBLAS_CHECK(cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_C_BYTES, &al, sizeof al));
    CUBLAS_CHECK(cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_D_BYTES, &al, sizeof al));
    cublasLtMatmulHeuristicResult_t res;
    int nres = 0, found = 0;
    for (int i = 0; i < ci->n_plans && !found; i++) { /* the bucket's algorithm, if known */
        const lt_plan *q = &ci->plans[i];
        if (q->Mb == Mb && q->N == N && q->K == K && q->bias == bias && q->align == align && q->dt == dt) {
            res.algo = q->algo;
            found = 1;
        }
    }
    if (!found && cublasLtMatmulAlgoGetHeuristic(ci->lt, p->desc, p->a, bb, cb, cb, pref, 1, &res, &nres) ==
                      CUBLAS_STATUS_SUCCESS && nres >= 1)
        found = 1;
    cublasLtMatmulHeuristicResult_t chk;
    if (found && (cublasLtMatmulAlgoCheck(ci->lt, p->desc, p->a, p->b, p->c, p->c, &res.algo, &chk) !=
                      CUBLAS_STATUS_SUCCESS || chk.workspaceSize > ws))
        found = 0;
    if (!found) { /* the bucket's choice does not fit M: ask for M itself */
        Mb = M;
        CUBLAS_CHECK(cublasLtMatmulAlgoGetHeuristic(ci->lt, p->desc, p->a, p->b, p->c, p->c, pref, 1, &res, &nres));
    }
    cublasLtMatrixLayoutDestroy(bb);
    cublasLtMatrixLayoutDestroy(cb);
    cublasLtMatmulPreferenceDestroy(pref);
    if (!found && nres < 1) {
        char what[64];
        snprintf(what, sizeof what, "linear (%s)", vox_cuda_path_name(dt));
        op_fail("%s: no cuBLASLt algorithm for K=%ld", what, K);
        return NULL;
    }
    p->Mb = Mb;
    p->algo = res.algo;
    ci->n_plans++;
    clock_gettime(CLOCK_MONOTONIC, &t1);
    ci->plans_made++;
    ci->plans_ms += (t1.tv_sec - t0.tv_sec) * 1e3 + (t1.tv_nsec - t0.tv_nsec) * 1e-6;
    return p;
}

/* ---- matmul ---------------------------------------------------------------------------- */
/* the dtype a weight's GEMM runs in: its own, or for a quantized one its tile's */
vox_dtype vox_cuda_gemm_dt(const cuda_impl *ci, const vox_weight *w) {
    return vox_dtype_quantized(w->dev_dtype) ? (ci->path == VOX_DT_BF16 ? VOX_DT_BF16 : ci->path) : w->dev_dtype;
}

int vox_cuda_qfmt(vox_dtype dt) { return dt == VOX_DT_Q8 ? VOX_CUDA_Q8 : VOX_CUDA_Q4; }

static void lt_matmul_dense(cuda_impl *ci, float *y, const vox_weight *w, const void *in,
                            const float *bias, int m, int accumulate);

/* a quantized weight: dequantized into the tile (in row blocks when it does not fit,
 * each block's output through qout into y's columns), then the dense GEMM */
static void lt_matmul_q(cuda_impl *ci, float *y, const vox_weight *w, const void *in, const float *bias,
                        int m, int accumulate) {
    vox_backend *be = ci->be;
    const int N = (int)w->rows, K = (int)w->cols;
    const vox_dtype tdt = vox_cuda_gemm_dt(ci, w);
    if (!ci->qtile || !in) {
        op_fail("%s: quantized weight without its tile (%ld columns)", "linear", K);
        return;
    }
    vox_weight t = *w;
    t.dev = ci->qtile;
    t.dev_dtype = tdt;
    t.dev_scales = NULL;
    int64_t tile_rows = (int64_t)QTILE_ELEMS / K / 64 * 64;
    if (tile_rows >= N) {
        vox_cuda_qdequant(ci->qtile, tdt, w->dev, vox_cuda_qfmt(w->dev_dtype), w->dev_scales, 0, N, K, w->group, ci->st);
        LAUNCHED();
        lt_matmul_dense(ci, y, &t, in, bias, m, accumulate);
        return;
    }
    if (tile_rows < 64) tile_rows = 64 < N ? 64 : N;
    const size_t in_es = tdt == VOX_DT_F32 ? 4 : 2;
    for (int n0 = 0; n0 < N; n0 += (int)tile_rows) {
        const int nt = N - n0 < tile_rows ? N - n0 : (int)tile_rows;
        vox_cuda_qdequant(ci->qtile, tdt, w->dev, vox_cuda_qfmt(w->dev_dtype), w->dev_scales, n0, nt, K, w->group,
                          ci->st);
        LAUNCHED();
        t.rows = nt;
        const int rows_per = QOUT_FLOATS / nt > 0 ? QOUT_FLOATS / nt : 1;
        for (int m0 = 0; m0 < m; m0 += rows_per) {
            const int mm = m - m0 < rows_per ? m - m0 : rows_per;
            float *yb = y + (int64_t)m0 * N + n0;
            if (accumulate)
                CUDA_CHECK(cudaMemcpy2DAsync(ci->qout, (size_t)nt * 4, yb, (size_t)N * 4, (size_t)nt * 4, mm,
                                             cudaMemcpyDeviceToDevice, ci->st));
            lt_matmul_dense(ci, ci->qout, &t, (const char *)in + (size_t)m0 * K * in_es, bias ? bias + n0 : NULL,
                            mm, accumulate);
            CUDA_CHECK(cudaMemcpy2DAsync(yb, (size_t)N * 4, ci->qout, (size_t)nt * 4, (size_t)nt * 4, mm,
                                         cudaMemcpyDeviceToDevice, ci->st));
        }
    }
}

/* y[m][N] (= or +=) in[m][K] . w^T (+ bias): cuBLASLt; `in` is what vox_cuda_gemm_input()
 * returned for this weight's GEMM dtype (vox_cuda_gemm_dt). */
void vox_cuda_lt_matmul(cuda_impl *ci, float *y, const vox_weight *w, const void *in, const float *bias,
                        int m, int accumulate) {
    if (vox_dtype_quantized(w->dev_dtype)) lt_matmul_q(ci, y, w, in, bias, m, accumulate);
    else lt_matmul_dense(ci, y, w, in, bias, m, accumulate);
}

static void lt_matmul_dense(cuda_impl *ci, float *y, const vox_weight *w, const void *in,
                            const float *bias, int m, int accumulate) {
    vox_backend *be = ci->be;
    const int N = (int)w->rows, K = (int)w->cols;
    const float one = 1.0f, zero = 0.0f;
    const float *alpha = &one, *beta = accumulate ? &one : &zero;
    if (w->dev_dtype == VOX_DT_F16) alpha = &ci->scal[0], beta = &ci->scal[accumulate ? 2 : 1];
    if (!in) return;
    int ay = ptr_align(y), ax = ptr_align(in);
    lt_plan *p = get_plan(ci, m, N, K, bias != NULL, ay < ax ? ay : ax, w->dev_dtype);
    if (!p) return;
    if (bias)
        CUBLAS_CHECK(cublasLtMatmulDescSetAttribute(p->desc, CUBLASLT_MATMUL_DESC_BIAS_POINTER,
                                                    &bias, sizeof bias));
    CUBLAS_CHECK(cublasLtMatmul(ci->lt, p->desc, alpha, w->dev, p->a, in, p->b, beta, y, p->c,
                                y, p->c, &p->algo, ci->lt_ws, LT_WORKSPACE, ci->st));
}

/* the fp32 input scratch and the FP16 scale words: fp16 and fp32 paths only */
int vox_cuda_have_scratch(cuda_impl *ci, const char *op) {
    vox_backend *be = ci->be;
    if (!ci->xf) op_fail("%s: fp16/fp32 weights on a bf16-path backend (no scratch for them, %ld)", op, 0);
    return ci->xf != NULL;
}

/* The GEMM input for weights of dtype dt from n fp32 values at x: rounded to BF16
 * or scaled to FP16 in the scratch xb (alpha in scal[0]), or x itself for FP32. */
const void *vox_cuda_gemm_input(cuda_impl *ci, vox_dtype dt, const float *x, int64_t n) {
    vox_backend *be = ci->be;
    if (dt == VOX_DT_F32) return x;
    if (dt == VOX_DT_BF16) {
        vox_cuda_f32_to_bf16(ci->xb, x, n, ci->st);
    } else {
        if (!vox_cuda_have_scratch(ci, "linear")) return NULL;
        vox_cuda_f32_to_f16_scaled(ci->xb, x, n, (unsigned *)&ci->scal[3], &ci->scal[0], ci->n_sm, ci->st);
    }
    LAUNCHED();
    return ci->xb;
}
