/* voxtral_cuda.c - the CUDA backend: device memory, the one stream, the op table
 * (voxtral_internal.h) over the kernels in cuda/, graphs, and the backend's lifetime.
 * Every op computes what its CPU twin in voxtral_kernels.c computes.
 *
 * Weights: every matrix goes to the device once, into one arena (voxtral_cuda_weights.c),
 * in the dtype of the GPU path, chosen from the compute capability or forced
 * (vox_options.gpu_path):
 *   bf16 (sm_80+): as in the checkpoint;
 *   fp16 (sm_6x / 7.x: no BF16 tensor cores): converted on the device, which is
 *        exact for 2^-17 <= |w| <= 65504; a tensor outside that (or losing too
 *        much to FP16 subnormals) stays fp32, said on stderr;
 *   fp32: every matrix converted (twice the memory; checked before the upload).
 * Each weight's device dtype is w->dev_dtype; every op reads any of the three.
 * Activations fp32; sums fp32.
 * linear: few rows -> our memory-bound GEMV (cuda/gemv.cu); many rows -> cuBLASLt
 * (voxtral_cuda_gemm.c: plans, the GEMM input of each dtype, vox_cuda_lt_matmul).
 * Exact-erf GELU in a separate pass (cuBLASLt's GELU epilogue is the tanh approximation).
 * Fused decoder ops: at M = 1 one launch each (gemv1: norm or SwiGLU computed while
 * the GEMV loads its input, q/k/v or w1/w3 in one grid; RoPE + KV store + attention
 * in the split attention kernel); at M > 1
 * the norm / SwiGLU writes the GEMM input (BF16 directly; fp32 for the other
 * dtypes), then cuBLASLt per weight.
 * Quantized weights (Q8 / Q4, voxtral_quant.h) stay quantized on the device (bytes and
 * F16 scales, on every GPU path): up to VOX_QGEMV_MAX_ROWS rows the qgemv kernel
 * dequantizes on the fly (norm / SwiGLU input fused as gemv1's); more rows dequantize
 * the weight into a dense tile of the path's dtype (BF16, F16 or F32) and run the
 * cuBLASLt GEMM of that dtype on it (vox_cuda_lt_matmul).
 * Decoder-step kernels use programmatic dependent launch (vox_launch, sm_90+).
 * Ops only enqueue; nothing here synchronises except download(), sync() and
 * wait_fence() (and host_free(): cudaFreeHost), so the decoder step can be
 * captured into a graph and replayed.
 */
#include <dlfcn.h>
#include <math.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cublasLt.h>

#include "voxtral_cuda_impl.h"
#include "voxtral_quant.h"


int vox_cuda_pdl;

/* ---- errors ---------------------------------------------------------------------
 * Per backend and sticky (be->err): the first failure is kept and reported by every
 * later sync() / wait_fence(); another backend's state is its own. */
void vox_cuda_fail(vox_backend *be, const char *file, int line, const char *stmt, const char *why) {
    const char *base = strrchr(file, '/');
    vox_err_set(&be->err, "%s:%d: %s: %s", base ? base + 1 : file, line, stmt, why);
}

void vox_cuda_op_fail(vox_backend *be, const char *fmt, const char *what, long a) {
    char buf[256];
    snprintf(buf, sizeof buf, fmt, what, a);
    vox_cuda_fail(be, __FILE__, __LINE__, "op", buf);
}

/* ---- memory ---------------------------------------------------------------------- */
static void *cu_alloc(vox_backend *be, size_t bytes) {
    void *p = NULL;
    cudaError_t e = cudaMalloc(&p, bytes ? bytes : 1);
    if (e != cudaSuccess) {
        size_t fr = 0, tot = 0;
        cudaMemGetInfo(&fr, &tot);
        vox_error("cuda: cudaMalloc of %.1f MiB failed (%s; %.1f MiB free)", bytes / 1048576.0,
                  cudaGetErrorString(e), fr / 1048576.0);
        return NULL;
    }
    cuda_impl *ci = impl_of(be);
    CUDA_CHECK(cudaMemsetAsync(p, 0, bytes, ci->st));
    if (ci->n_allocs == ci->cap_allocs) {
        int cap = ci->cap_allocs ? 2 * ci->cap_allocs : 64;
        void *na = realloc(ci->allocs, sizeof(*ci->allocs) * cap);
        if (!na) {
            cudaFree(p);
            vox_error("cuda: out of host memory");
            return NULL;
        }
        ci->allocs = na;
        ci->cap_allocs = cap;
    }
    ci->allocs[ci->n_allocs].p = p;
    ci->allocs[ci->n_allocs++].n = bytes;
    be->mem_bytes += bytes;
    return p;
}

void vox_cuda_drop_graphs(cuda_impl *ci) {
    vox_backend *be = ci->be;
    for (int i = 0; i < ci->n_graphs; i++) CUDA_CHECK(cudaGraphExecDestroy(ci->graphs[i].exec));
    ci->n_graphs = 0;
}

static void cu_free(vox_backend *be, void *p) {
    if (!p) return;
    cuda_impl *ci = impl_of(be);
    /* captured graphs hold raw pointers: any freed buffer may be in one */
    vox_cuda_drop_graphs(ci);
    for (int i = 0; i < ci->n_allocs; i++) {
        if (ci->allocs[i].p == p) {
            be->mem_bytes -= ci->allocs[i].n;
            ci->allocs[i] = ci->allocs[--ci->n_allocs];
            break;
        }
    }
    CUDA_CHECK(cudaFree(p));
}

/* Pageable source: cudaMemcpyAsync returns once the bytes are staged, so the
 * caller may reuse src at once (never called inside a capture). */
static void cu_upload(vox_backend *be, void *dst, const void *src, size_t bytes) {
    if (bytes) CUDA_CHECK(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyHostToDevice, impl_of(be)->st));
}

static void cu_download(vox_backend *be, void *dst, const void *src, size_t bytes) {
    cuda_impl *ci = impl_of(be);
    if (bytes) CUDA_CHECK(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDeviceToHost, ci->st));
    CUDA_CHECK(cudaStreamSynchronize(ci->st));
}

static void cu_copy(vox_backend *be, void *dst, const void *src, size_t bytes) {
    if (bytes) CUDA_CHECK(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDeviceToDevice, impl_of(be)->st));
}

static int cu_sync(vox_backend *be) {
    CUDA_CHECK(cudaStreamSynchronize(impl_of(be)->st));
    if (cuda_failed) return vox_error("%s", cuda_errmsg);
    return 0;
}

static void *cu_host_alloc(vox_backend *be, size_t bytes) {
    void *p = NULL;
    if (cudaHostAlloc(&p, bytes ? bytes : 1, cudaHostAllocDefault) != cudaSuccess) {
        cudaGetLastError();
        vox_error("cuda: cannot pin %zu bytes of host memory", bytes);
        return NULL;
    }
    memset(p, 0, bytes);
    return p;
}

static void cu_host_free(vox_backend *be, void *p) {
    if (p) CUDA_CHECK(cudaFreeHost(p));
}

static void cu_download_async(vox_backend *be, void *dst, const void *src, size_t bytes, int fence) {
    cuda_impl *ci = impl_of(be);
    if (bytes) CUDA_CHECK(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDeviceToHost, ci->st));
    CUDA_CHECK(cudaEventRecord(ci->fences[fence], ci->st));
}

static int cu_wait_fence(vox_backend *be, int fence) {
    CUDA_CHECK(cudaEventSynchronize(impl_of(be)->fences[fence]));
    if (cuda_failed) return vox_error("%s", cuda_errmsg);
    return 0;
}

/* Device-to-device copy of 512 MiB, best of 5, counting bytes read and written:
 * the ceiling the memory-bound GEMV is measured against (it reaches it on the
 * LM head). 0 if the buffers do not fit. Synchronises; not for the token path. */
static double cu_measure_bandwidth(vox_backend *be) {
    cuda_impl *ci = impl_of(be);
    const size_t n = (size_t)512 << 20;
    void *a = NULL, *b = NULL;
    cudaEvent_t e0 = NULL, e1 = NULL;
    double best = 0;
    if (cudaMalloc(&a, n) != cudaSuccess || cudaMalloc(&b, n) != cudaSuccess) {
        cudaGetLastError(); /* a failed allocation is not a sticky error */
        goto done;
    }
    CUDA_CHECK(cudaEventCreate(&e0));
    CUDA_CHECK(cudaEventCreate(&e1));
    CUDA_CHECK(cudaMemsetAsync(a, 1, n, ci->st));
    for (int pass = 0; pass < 6; pass++) { /* the first is a warm-up */
        float ms = 0;
        CUDA_CHECK(cudaEventRecord(e0, ci->st));
        CUDA_CHECK(cudaMemcpyAsync(b, a, n, cudaMemcpyDeviceToDevice, ci->st));
        CUDA_CHECK(cudaEventRecord(e1, ci->st));
        CUDA_CHECK(cudaEventSynchronize(e1));
        CUDA_CHECK(cudaEventElapsedTime(&ms, e0, e1));
        double gbs = ms > 0 ? 2.0 * n / (ms * 1e-3) / 1e9 : 0;
        if (pass > 0 && gbs > best) best = gbs;
    }
done:
    if (e0) cudaEventDestroy(e0);
    if (e1) cudaEventDestroy(e1);
    cudaFree(a);
    cudaFree(b);
    return cuda_failed ? 0.0 : best;
}

/* ---- linear -------------------------------------------------------------------------- */
/* a matrix the kernels can read: on the device as BF16, F16, F32, or Q8 / Q4 with scales */
static int matrix_on_device(const vox_weight *w) {
    return w->dev && (w->dev_dtype == VOX_DT_BF16 || w->dev_dtype == VOX_DT_F16 ||
                      w->dev_dtype == VOX_DT_F32 ||
                      (vox_dtype_quantized(w->dev_dtype) && w->dev_scales && w->group >= 32));
}

static void cu_linear(vox_backend *be, float *y, const float *x, const vox_weight *w,
                      const vox_weight *b, int M, vox_act act, int accumulate) {
    cuda_impl *ci = impl_of(be);
    const int N = (int)w->rows, K = (int)w->cols;
    const float *bias = b ? (const float *)b->dev : NULL;
    if (!matrix_on_device(w) || (b && (!bias || b->dev_dtype != VOX_DT_F32))) {
        op_fail("%s: weight not on the device or of an unknown dtype (%ld columns)", "linear", K);
        return;
    }
    if (M <= 0) return;
    if (vox_dtype_quantized(w->dev_dtype) && M <= VOX_QGEMV_MAX_ROWS) {
        vox_cuda_qgemv_args a = {.W = {w->dev}, .S = {w->dev_scales}, .y = {y}, .rows = {N}, .n_out = 1,
                                 .K = K, .group = w->group, .fmt = vox_cuda_qfmt(w->dev_dtype), .M = M,
                                 .mode = VOX_GEMV_PLAIN, .accumulate = accumulate,
                                 .act = act == VOX_ACT_GELU, .x = x, .bias = bias};
        if (vox_cuda_qgemv(&a, ci->n_sm, ci->st) != 0) op_fail("%s: bad quantized weight (%ld columns)", "linear", K);
        LAUNCHED();
        return;
    }
    const int gemv_ok = K % 8 == 0 && ((uintptr_t)x & 15) == 0 && !vox_dtype_quantized(w->dev_dtype);
    if (gemv_ok && M == 1 && !bias && act == VOX_ACT_NONE) { /* the decoder step's wo */
        vox_cuda_gemv1_args a = {.W = {w->dev}, .wtype = w->dev_dtype, .y = {y}, .rows = {N},
                                 .n_out = 1, .K = K, .mode = VOX_GEMV_PLAIN,
                                 .accumulate = accumulate, .x = x};
        vox_cuda_gemv1(&a, ci->n_sm, ci->st);
        LAUNCHED();
        return;
    }
    if (gemv_ok && (M <= ci->gemv_max_rows || (accumulate && act != VOX_ACT_NONE))) {
        vox_cuda_gemv(y, x, w->dev, w->dev_dtype, bias, M, N, K, act, accumulate, ci->n_sm, ci->st);
        LAUNCHED();
        return;
    }
    if (accumulate && act != VOX_ACT_NONE) {
        op_fail("%s: accumulate with an activation needs K %% 8 == 0 (K=%ld)", "linear", K);
        return;
    }
    /* many rows: GEMM in row chunks that fit the input scratch */
    const int rows_per = XB_ELEMS / K > 0 ? XB_ELEMS / K : 1;
    for (int r0 = 0; r0 < M; r0 += rows_per) {
        int m = M - r0 < rows_per ? M - r0 : rows_per;
        float *yr = y + (int64_t)r0 * N;
        const void *in = vox_cuda_gemm_input(ci, vox_cuda_gemm_dt(ci, w), x + (int64_t)r0 * K, (int64_t)m * K);
        vox_cuda_lt_matmul(ci, yr, w, in, bias, m, accumulate);
        if (act == VOX_ACT_GELU) {
            vox_cuda_gelu(yr, (int64_t)m * N, ci->st);
            LAUNCHED();
        }
    }
}

/* ---- fused decoder ops ------------------------------------------------------------------ */
/* M = 1: one gemv1 launch over the weights w[0..n) (one dtype) */
static void gemv1_of(cuda_impl *ci, int n, float *const *y, const vox_weight *const *w, int mode,
                     const float *x, const float *u, const vox_weight *norm, const vox_weight *scale,
                     float eps, int accumulate) {
    vox_backend *be = ci->be;
    vox_cuda_gemv1_args a = {.n_out = n, .K = (int)w[0]->cols, .wtype = w[0]->dev_dtype,
                             .mode = mode, .accumulate = accumulate, .x = x, .u = u, .eps = eps,
                             .norm = norm ? norm->dev : NULL, .scale = scale ? scale->dev : NULL};
    for (int i = 0; i < n; i++) {
        a.W[i] = w[i]->dev;
        a.y[i] = y[i];
        a.rows[i] = (int)w[i]->rows;
    }
    vox_cuda_gemv1(&a, ci->n_sm, ci->st);
    LAUNCHED();
}

static void cu_norm_linear(vox_backend *be, int n_out, float *const *y, const float *x,
                           const vox_weight *const *w, const vox_weight *norm,
                           const vox_weight *scale, float eps, int M) {
    cuda_impl *ci = impl_of(be);
    const int K = (int)w[0]->cols;
    int ok = n_out >= 1 && n_out <= VOX_GEMV_MAX_OUT && (!norm || norm->dev) && (!scale || scale->dev);
    int one_dtype = 1;
    for (int i = 0; i < n_out && ok; i++) {
        ok = matrix_on_device(w[i]) && w[i]->cols == K;
        one_dtype &= w[i]->dev_dtype == w[0]->dev_dtype;
    }
    if (!ok) {
        op_fail("%s: weights not on the device, of an unknown dtype or of different widths (%ld outputs)",
                "norm_linear", n_out);
        return;
    }
    if (M <= 0) return;
    if (vox_dtype_quantized(w[0]->dev_dtype) && M <= VOX_QGEMV_MAX_ROWS) {
        /* one launch over the weights of one format and group, else one each */
        int same = 1;
        for (int i = 1; i < n_out; i++) same &= w[i]->dev_dtype == w[0]->dev_dtype && w[i]->group == w[0]->group;
        for (int i0 = 0; i0 < n_out; i0 += same ? n_out : 1) {
            const int n = same ? n_out : 1;
            vox_cuda_qgemv_args a = {.n_out = n, .K = K, .group = w[i0]->group, .fmt = vox_cuda_qfmt(w[i0]->dev_dtype),
                                     .M = M, .mode = norm ? VOX_GEMV_NORM : VOX_GEMV_PLAIN, .x = x, .eps = eps,
                                     .norm = norm ? norm->dev : NULL, .scale = scale ? scale->dev : NULL};
            int ok = vox_dtype_quantized(w[i0]->dev_dtype);
            for (int i = 0; i < n; i++) {
                a.W[i] = w[i0 + i]->dev;
                a.S[i] = w[i0 + i]->dev_scales;
                a.y[i] = y[i0 + i];
                a.rows[i] = (int)w[i0 + i]->rows;
            }
            if (!ok || vox_cuda_qgemv(&a, ci->n_sm, ci->st) != 0) {
                op_fail("%s: quantized and unquantized weights mixed, or a bad one (%ld outputs)", "norm_linear", n_out);
                return;
            }
            LAUNCHED();
        }
        return;
    }
    int any_q = 0;
    for (int i = 0; i < n_out; i++) any_q |= vox_dtype_quantized(w[i]->dev_dtype);
    if (M == 1 && K % 8 == 0 && ((uintptr_t)x & 15) == 0 && !any_q) {
        const int mode = norm ? VOX_GEMV_NORM : VOX_GEMV_PLAIN;
        if (one_dtype) gemv1_of(ci, n_out, y, w, mode, x, NULL, norm, scale, eps, 0);
        else /* an fp16-path layer with a tensor kept in fp32: one launch per weight */
            for (int i = 0; i < n_out; i++) gemv1_of(ci, 1, &y[i], &w[i], mode, x, NULL, norm, scale, eps, 0);
        return;
    }
    const int rows_per = XB_ELEMS / K > 0 ? XB_ELEMS / K : 1;
    one_dtype = 1;
    for (int i = 0; i < n_out; i++) one_dtype &= vox_cuda_gemm_dt(ci, w[i]) == vox_cuda_gemm_dt(ci, w[0]);
    if (one_dtype && vox_cuda_gemm_dt(ci, w[0]) == VOX_DT_BF16) {
        /* many rows, BF16: the norm writes the GEMM input, shared by the n_out GEMMs */
        for (int r0 = 0; r0 < M; r0 += rows_per) {
            int m = M - r0 < rows_per ? M - r0 : rows_per;
            if (norm)
                vox_cuda_rmsnorm_bf16(ci->xb, x + (int64_t)r0 * K, norm->dev, scale ? scale->dev : NULL,
                                      m, K, eps, ci->st);
            else
                vox_cuda_f32_to_bf16(ci->xb, x + (int64_t)r0 * K, (int64_t)m * K, ci->st);
            LAUNCHED();
            for (int i = 0; i < n_out; i++)
                vox_cuda_lt_matmul(ci, y[i] + (int64_t)r0 * w[i]->rows, w[i], ci->xb, NULL, m, 0);
        }
        return;
    }
    /* many rows, other dtypes: the norm in fp32, then each weight's input from it */
    if (norm && !vox_cuda_have_scratch(ci, "norm_linear")) return;
    for (int r0 = 0; r0 < M; r0 += rows_per) {
        int m = M - r0 < rows_per ? M - r0 : rows_per;
        const float *xn = x + (int64_t)r0 * K;
        if (norm) {
            vox_cuda_rmsnorm(ci->xf, xn, norm->dev, scale ? scale->dev : NULL, m, K, eps, ci->st);
            LAUNCHED();
            xn = ci->xf;
        }
        int in_dt = -1; /* what the scratch xb holds now */
        for (int i = 0; i < n_out; i++) {
            vox_dtype dt = vox_cuda_gemm_dt(ci, w[i]);
            const void *in = dt == VOX_DT_F32 ? xn : dt == (vox_dtype)in_dt ? ci->xb
                                                     : vox_cuda_gemm_input(ci, dt, xn, (int64_t)m * K);
            if (dt != VOX_DT_F32) in_dt = dt;
            vox_cuda_lt_matmul(ci, y[i] + (int64_t)r0 * w[i]->rows, w[i], in, NULL, m, 0);
        }
    }
}

static void cu_swiglu_linear(vox_backend *be, float *y, const float *g, const float *u,
                             const vox_weight *w, int M, int accumulate) {
    cuda_impl *ci = impl_of(be);
    const int K = (int)w->cols;
    if (!matrix_on_device(w)) {
        op_fail("%s: weight not on the device or of an unknown dtype (%ld columns)", "swiglu_linear", K);
        return;
    }
    if (M <= 0) return;
    if (vox_dtype_quantized(w->dev_dtype) && M <= VOX_QGEMV_MAX_ROWS) {
        vox_cuda_qgemv_args a = {.W = {w->dev}, .S = {w->dev_scales}, .y = {y}, .rows = {(int)w->rows},
                                 .n_out = 1, .K = K, .group = w->group, .fmt = vox_cuda_qfmt(w->dev_dtype), .M = M,
                                 .mode = VOX_GEMV_SWIGLU, .accumulate = accumulate, .x = g, .u = u};
        if (vox_cuda_qgemv(&a, ci->n_sm, ci->st) != 0)
            op_fail("%s: bad quantized weight (%ld columns)", "swiglu_linear", K);
        LAUNCHED();
        return;
    }
    if (M == 1 && K % 8 == 0 && ((uintptr_t)g & 15) == 0 && ((uintptr_t)u & 15) == 0 &&
        !vox_dtype_quantized(w->dev_dtype)) {
        if ((int64_t)K * 4 <= (int64_t)XB_ELEMS * 2) {
            /* h once into the scratch, then a plain GEMV (the fused SwiGLU input
             * recomputed h in every warp: SFU-bound) */
            float *h = (float *)ci->xb;
            vox_cuda_swiglu1(h, g, u, K, ci->st);
            LAUNCHED();
            gemv1_of(ci, 1, &y, &w, VOX_GEMV_PLAIN, h, NULL, NULL, NULL, 0.0f, accumulate);
        } else
            gemv1_of(ci, 1, &y, &w, VOX_GEMV_SWIGLU, g, u, NULL, NULL, 0.0f, accumulate);
        return;
    }
    const vox_dtype wdt = vox_cuda_gemm_dt(ci, w);
    if (wdt != VOX_DT_BF16 && !vox_cuda_have_scratch(ci, "swiglu_linear")) return;
    const int rows_per = XB_ELEMS / K > 0 ? XB_ELEMS / K : 1;
    for (int r0 = 0; r0 < M; r0 += rows_per) {
        int m = M - r0 < rows_per ? M - r0 : rows_per;
        const float *gr = g + (int64_t)r0 * K, *ur = u + (int64_t)r0 * K;
        const void *in = ci->xb;
        if (wdt == VOX_DT_BF16) {
            vox_cuda_swiglu_bf16(ci->xb, gr, ur, (int64_t)m * K, ci->st);
            LAUNCHED();
        } else {
            vox_cuda_swiglu(ci->xf, gr, ur, (int64_t)m * K, ci->st);
            LAUNCHED();
            in = vox_cuda_gemm_input(ci, wdt, ci->xf, (int64_t)m * K);
        }
        vox_cuda_lt_matmul(ci, y + (int64_t)r0 * w->rows, w, in, NULL, m, accumulate);
    }
}

/* Test hooks (tests/test_cuda_ops.c): the kernel families launched with programmatic
 * dependent launch (VOX_PDL_*, for timing the choices); rows up to which linear
 * takes the GEMV path. Return the old value. */
int vox_cuda_set_pdl(vox_backend *be, int families) {
    int old = vox_cuda_pdl;
    vox_cuda_pdl = families;
    return old;
}

int vox_cuda_set_gemv_max_rows(vox_backend *be, int rows) {
    int old = impl_of(be)->gemv_max_rows;
    impl_of(be)->gemv_max_rows = rows;
    return old;
}

/* ---- the other ops ---------------------------------------------------------------------- */
static void cu_rmsnorm(vox_backend *be, float *y, const float *x, const vox_weight *w,
                       const vox_weight *scale, int M, int D, float eps) {
    if (M <= 0) return;
    vox_cuda_rmsnorm(y, x, w->dev, scale ? scale->dev : NULL, M, D, eps, impl_of(be)->st);
    LAUNCHED();
}

/* the same expression as the CPU twin, on the host: bit-identical frequencies */
static int inv_freq_of(vox_backend *be, vox_cuda_inv_freq *f, const char *op, int head_dim, float theta) {
    int half = head_dim / 2;
    if (half > VOX_CUDA_ROPE_MAX_HALF || head_dim % 2) {
        op_fail("%s: head_dim %ld unsupported (even, at most 256)", op, head_dim);
        return -1;
    }
    for (int j = 0; j < half; j++) f->f[j] = 1.0f / powf(theta, (float)(2 * j) / (float)head_dim);
    return 0;
}

static void cu_rope(vox_backend *be, float *x, const int32_t *pos, int M, int n_heads,
                    int head_dim, float theta) {
    vox_cuda_inv_freq f;
    if (inv_freq_of(be, &f, "rope", head_dim, theta)) return;
    vox_cuda_rope(x, pos, M, n_heads, head_dim, &f, impl_of(be)->st);
    LAUNCHED();
}

static void cu_attention(vox_backend *be, float *out, const float *q, const void *kc,
                         const void *vc, const int32_t *pos, const int32_t *slot, int M,
                         int n_heads, int n_kv_heads, int head_dim, int cap, int window);

/* one launch where the split kernel's fused form applies (the decoder step), else
 * rope_kv_store then attention */
static void cu_rope_attention(vox_backend *be, float *out, float *q, float *k, const float *v,
                              void *kc, void *vc, const int32_t *pos, const int32_t *slot, int M,
                              int n_heads, int n_kv_heads, int head_dim, float theta, int cap,
                              int window) {
    cuda_impl *ci = impl_of(be); /* rings of be->kv_dtype (F32 or BF16) */
    vox_cuda_inv_freq f;
    if (M <= 0 || inv_freq_of(be, &f, "rope_attention", head_dim, theta)) return;
    if ((M == 1 || slot) &&
        vox_cuda_attention_split(out, q, kc, vc, be->kv_dtype, pos, M, n_heads, n_kv_heads, head_dim,
                                 cap, window, slot, k, v, &f, ci->attn_part, ATTN_PART_FLOATS,
                                 ci->attn_tickets, ATTN_TICKETS, ci->n_sm, ci->st) == 0) {
        LAUNCHED();
        return;
    }
    vox_cuda_rope_kv_store(q, k, v, kc, vc, be->kv_dtype, pos, M, n_heads, n_kv_heads, head_dim, &f,
                           cap, slot, ci->st);
    LAUNCHED();
    cu_attention(be, out, q, kc, vc, pos, slot, M, n_heads, n_kv_heads, head_dim, cap, window);
}

static void cu_kv_store(vox_backend *be, void *kc, void *vc, const float *k, const float *v,
                        const int32_t *pos, const int32_t *slot, int M, int kv_dim, int cap) {
    vox_cuda_kv_store(kc, vc, be->kv_dtype, k, v, pos, M, kv_dim, cap, slot, impl_of(be)->st);
    LAUNCHED();
}

static void cu_attention(vox_backend *be, float *out, const float *q, const void *kc,
                         const void *vc, const int32_t *pos, const int32_t *slot, int M,
                         int n_heads, int n_kv_heads, int head_dim, int cap, int window) {
    cuda_impl *ci = impl_of(be);
    if (M <= 0) return;
    int rc = -1;
    /* few rows: split over keys; many (an encoder chunk, a batch of several streams'
     * chunks, batched prompts): query tiles, each slot's keys read once per tile */
    if (M <= SPLIT_MAX_ROWS)
        rc = vox_cuda_attention_split(out, q, kc, vc, be->kv_dtype, pos, M, n_heads, n_kv_heads,
                                      head_dim, cap, window, slot, NULL, NULL, NULL, ci->attn_part,
                                      ATTN_PART_FLOATS, ci->attn_tickets, ATTN_TICKETS, ci->n_sm,
                                      ci->st);
    if (rc)
        rc = vox_cuda_attention_rows(out, q, kc, vc, be->kv_dtype, pos, slot, M, n_heads, n_kv_heads,
                                      head_dim, cap, window, ci->st);
    if (rc) {
        op_fail("%s: unsupported shape (head_dim %ld)", "attention", head_dim);
        return;
    }
    LAUNCHED();
}

static void cu_swiglu(vox_backend *be, float *h, const float *g, const float *u, int64_t n) {
    if (n <= 0) return;
    vox_cuda_swiglu(h, g, u, n, impl_of(be)->st);
    LAUNCHED();
}

/* the spans' layout is the kernels' (cuda/stem.cu) */
_Static_assert(sizeof(vox_cuda_span) == sizeof(vox_enc_span) &&
                   offsetof(vox_cuda_span, slot) == offsetof(vox_enc_span, slot) &&
                   offsetof(vox_cuda_span, row0) == offsetof(vox_enc_span, row0) &&
                   offsetof(vox_cuda_span, rows) == offsetof(vox_enc_span, rows) &&
                   offsetof(vox_cuda_span, reset) == offsetof(vox_enc_span, reset) &&
                   offsetof(vox_cuda_span, tok0) == offsetof(vox_enc_span, tok0) &&
                   offsetof(vox_cuda_span, tokens) == offsetof(vox_enc_span, tokens) &&
                   offsetof(vox_cuda_span, at) == offsetof(vox_enc_span, at),
               "vox_cuda_span is vox_enc_span");

static void cu_conv_cols(vox_backend *be, float *cols, const float *state, size_t sstride, const float *x,
                         const vox_enc_span *sp, int n, int M, int C, int K, int stride) {
    if (n <= 0 || M <= 0) return;
    if (stride < 1 || stride > K) {
        op_fail("%s: stride %ld out of 1..K", "conv_cols", stride);
        return;
    }
    vox_cuda_conv_cols(cols, state, (int64_t)sstride, x, (const vox_cuda_span *)sp, n, M, C, K, stride,
                       impl_of(be)->st);
    LAUNCHED();
}

static void cu_conv_keep(vox_backend *be, float *state, size_t sstride, const float *x,
                         const vox_enc_span *sp, int n, int C, int P) {
    if (n <= 0 || P <= 0) return;
    vox_cuda_conv_keep(state, (int64_t)sstride, x, (const vox_cuda_span *)sp, n, C, P, impl_of(be)->st);
    LAUNCHED();
}

static void cu_ring_append(vox_backend *be, float *ring, const float *x, const vox_enc_span *sp, int n,
                           int M, int D, int cap) {
    if (n <= 0 || M <= 0) return;
    vox_cuda_ring_append(ring, x, (const vox_cuda_span *)sp, n, M, D, cap, impl_of(be)->st);
    LAUNCHED();
}

static void cu_embed(vox_backend *be, float *x, const vox_weight *emb, const int32_t *ids,
                     const float *audio, const int32_t *pos, const int32_t *slot, int M, int D,
                     int acap) {
    if (!matrix_on_device(emb)) {
        op_fail("%s: embedding not on the device or of an unknown dtype (%ld)", "embed", D);
        return;
    }
    if (vox_dtype_quantized(emb->dev_dtype))
        vox_cuda_qembed(x, emb->dev, vox_cuda_qfmt(emb->dev_dtype), emb->dev_scales, emb->group, ids, audio, pos, M, D,
                        acap, slot, impl_of(be)->st);
    else
        vox_cuda_embed(x, emb->dev, emb->dev_dtype, ids, audio, pos, M, D, acap, slot,
                       impl_of(be)->st);
    LAUNCHED();
}

static void cu_argmax(vox_backend *be, int32_t *ids, const float *logits, int M, int V) {
    if (M <= 0) return;
    vox_cuda_argmax(ids, logits, M, V, impl_of(be)->st);
    LAUNCHED();
}

static void cu_topk(vox_backend *be, int32_t *ids, float *vals, const float *logits, int M, int V,
                    int k) {
    if (M <= 0 || k <= 0) return;
    if (k > 1024 || k > V) {
        op_fail("%s: k = %ld (at most 1024 and the vocabulary)", "topk", k);
        return;
    }
    vox_cuda_topk(ids, vals, logits, M, V, k, impl_of(be)->st);
    LAUNCHED();
}

/* ---- graphs ------------------------------------------------------------------------------- */
/* the serving scheduler's thread: the runtime's current device is per thread */
static void cu_thread_init(vox_backend *be) { cudaSetDevice(impl_of(be)->device); }

static int cu_graph_launch(vox_backend *be, int key) {
    cuda_impl *ci = impl_of(be);
    for (int i = 0; i < ci->n_graphs; i++) {
        if (ci->graphs[i].key == key) {
            CUDA_CHECK(cudaGraphLaunch(ci->graphs[i].exec, ci->st));
            return 1;
        }
    }
    return 0;
}

static void cu_graph_begin(vox_backend *be, int key) {
    cuda_impl *ci = impl_of(be);
    if (ci->capturing) {
        op_fail("%s: capture %ld begun inside another", "graph_begin", key);
        return;
    }
    /* relaxed: the first capture may build cuBLASLt plans and such on the host */
    CUDA_CHECK(cudaStreamBeginCapture(ci->st, cudaStreamCaptureModeRelaxed));
    ci->capturing = 1;
}

static void cu_graph_end(vox_backend *be, int key) {
    cuda_impl *ci = impl_of(be);
    if (!ci->capturing) return;
    ci->capturing = 0;
    cudaGraph_t g = NULL;
    CUDA_CHECK(cudaStreamEndCapture(ci->st, &g));
    if (!g) return;
    cudaGraphExec_t exec = NULL;
    CUDA_CHECK(cudaGraphInstantiate(&exec, g, 0));
    CUDA_CHECK(cudaGraphDestroy(g));
    if (!exec) return;
    for (int i = 0; i < ci->n_graphs; i++) { /* a re-capture replaces the old graph */
        if (ci->graphs[i].key == key) {
            CUDA_CHECK(cudaGraphExecDestroy(ci->graphs[i].exec));
            ci->graphs[i] = ci->graphs[--ci->n_graphs];
            break;
        }
    }
    if (ci->n_graphs == MAX_GRAPHS) {
        CUDA_CHECK(cudaGraphExecDestroy(ci->graphs[0].exec));
        ci->graphs[0] = ci->graphs[--ci->n_graphs];
    }
    ci->graphs[ci->n_graphs].key = key;
    ci->graphs[ci->n_graphs].exec = exec;
    ci->n_graphs++;
    CUDA_CHECK(cudaGraphLaunch(exec, ci->st)); /* the captured ops have not run yet */
}

/* ---- lifetime ------------------------------------------------------------------------------- */
static void cu_destroy(vox_backend *be) {
    if (!be) return;
    cuda_impl *ci = impl_of(be);
    if (ci) {
        if (ci->st) cudaStreamSynchronize(ci->st);
        if (be->verbose >= 2 && ci->plans_made)
            fprintf(stderr, "voxtral: cuda: %d cuBLASLt plans made, %.1f ms\n", ci->plans_made, ci->plans_ms);
        vox_cuda_drop_graphs(ci);
        for (int i = 0; i < ci->n_plans; i++) {
            cublasLtMatmulDescDestroy(ci->plans[i].desc);
            cublasLtMatrixLayoutDestroy(ci->plans[i].a);
            cublasLtMatrixLayoutDestroy(ci->plans[i].b);
            cublasLtMatrixLayoutDestroy(ci->plans[i].c);
        }
        if (ci->lt) cublasLtDestroy(ci->lt);
        cudaFree(ci->lt_ws);
        cudaFree(ci->xb);
        cudaFree(ci->xf);
        cudaFree(ci->qtile);
        cudaFree(ci->qout);
        cudaFree(ci->scal);
        cudaFree(ci->attn_part);
        cudaFree(ci->attn_tickets);
        cudaFree(ci->arena);
        for (int i = 0; i < ci->n_allocs; i++) cudaFree(ci->allocs[i].p);
        free(ci->allocs);
        for (int i = 0; i < VOX_FENCES; i++)
            if (ci->fences[i]) cudaEventDestroy(ci->fences[i]);
        if (ci->st) cudaStreamDestroy(ci->st);
        free(ci);
    }
    free(be);
}

int vox_cuda_built(void) { return 1; }

int vox_cuda_available(void) {
    int n = 0;
    return cudaGetDeviceCount(&n) == cudaSuccess && n > 0;
}

/* Why cudaGetDeviceCount found no device, in the words a user can act on. The CUDA
 * runtime reports a missing driver library (libcuda.so.1) as "CUDA driver version is
 * insufficient", which sends people to update a driver they do not have. */
static void no_device_error(cudaError_t e) {
    int drv = 0, rt = 0;
    if (e == cudaErrorInsufficientDriver) {
        void *lib = dlopen("libcuda.so.1", RTLD_LAZY | RTLD_LOCAL);
        if (!lib) {
            vox_error("cuda: no NVIDIA driver found (libcuda.so.1)");
            return;
        }
        dlclose(lib);
        cudaDriverGetVersion(&drv);
        cudaRuntimeGetVersion(&rt);
        vox_error("cuda: the NVIDIA driver supports CUDA %d.%d, this build needs %d.%d: update the driver",
                  drv / 1000, drv % 1000 / 10, rt / 1000, rt % 1000 / 10);
    } else if (e == cudaErrorNoDevice || e == cudaSuccess) {
        vox_error("cuda: no NVIDIA GPU found (the driver sees none; check nvidia-smi, CUDA_VISIBLE_DEVICES)");
    } else {
        vox_error("cuda: no usable CUDA device (%s)", cudaGetErrorString(e));
    }
}

/* NULL / "auto" / "" -> -1 (chosen from the device), else the path's dtype; -2 unknown */
static int parse_path(const char *p) {
    if (!p || !*p || !strcmp(p, "auto")) return -1;
    if (!strcmp(p, "bf16")) return VOX_DT_BF16;
    if (!strcmp(p, "fp16")) return VOX_DT_F16;
    if (!strcmp(p, "fp32")) return VOX_DT_F32;
    return -2;
}

vox_backend *vox_cuda_backend_new(size_t need_bytes, const char *gpu_path) {
    _Static_assert((int)VOX_CUDA_F32 == (int)VOX_DT_F32 && (int)VOX_CUDA_BF16 == (int)VOX_DT_BF16 &&
                       (int)VOX_CUDA_F16 == (int)VOX_DT_F16, "kernel dtype tags are vox_dtype values");
    int path = parse_path(gpu_path);
    if (path == -2) {
        vox_error("cuda: unknown GPU path '%s' (use auto, bf16, fp16 or fp32)", gpu_path);
        return NULL;
    }
    int n = 0;
    cudaError_t e = cudaGetDeviceCount(&n);
    if (e != cudaSuccess || n == 0) {
        no_device_error(e);
        return NULL;
    }
    struct cudaDeviceProp prop;
    if ((e = cudaSetDevice(0)) != cudaSuccess || (e = cudaGetDeviceProperties(&prop, 0)) != cudaSuccess) {
        vox_error("cuda: device 0: %s", cudaGetErrorString(e));
        return NULL;
    }
    if (prop.major < 6) {
        vox_error("cuda: %s is sm_%d%d: the CUDA backend needs compute capability 6.0+", prop.name,
                  prop.major, prop.minor);
        return NULL;
    }
    /* BF16 tensor cores (and cuBLASLt BF16 GEMMs) from sm_80 on; FP16 runs anywhere */
    if (path == -1) path = prop.major >= 8 ? VOX_DT_BF16 : VOX_DT_F16;
    if (path == VOX_DT_BF16 && prop.major < 8) {
        vox_error("cuda: %s is sm_%d%d: the bf16 path needs compute capability 8.0+ (use --gpu-path "
                  "fp16 or fp32)", prop.name, prop.major, prop.minor);
        return NULL;
    }
    if ((e = vox_cuda_probe_kernels()) != cudaSuccess) {
        cudaGetLastError();
        vox_error("cuda: this build has no kernels for %s (sm_%d%d): %s; rebuild with `make cuda "
                  "CUDA_ARCH=%d%d` (CUDA 12.x for sm_6x and sm_70)", prop.name, prop.major, prop.minor,
                  cudaGetErrorString(e), prop.major, prop.minor);
        return NULL;
    }
    size_t fr = 0, tot = 0;
    if ((e = cudaMemGetInfo(&fr, &tot)) != cudaSuccess) {
        vox_error("cuda: cudaMemGetInfo: %s", cudaGetErrorString(e));
        return NULL;
    }
    const size_t xf_bytes = path == VOX_DT_BF16 ? 0 : (size_t)XB_ELEMS * 4;
    size_t own = (size_t)LT_WORKSPACE + (size_t)XB_ELEMS * 2 + xf_bytes + (size_t)ATTN_PART_FLOATS * 4 +
                 (size_t)ATTN_TICKETS * 4;
    if (need_bytes + own > fr) {
        vox_error("cuda: needs %.1f GiB, %.1f GiB free on %s", (need_bytes + own) / 1073741824.0,
                  fr / 1073741824.0, prop.name);
        return NULL;
    }
    vox_backend *be = calloc(1, sizeof *be);
    cuda_impl *ci = calloc(1, sizeof *ci);
    if (!be || !ci) {
        free(be);
        free(ci);
        vox_error("cuda: out of memory");
        return NULL;
    }
    be->impl = ci;
    ci->be = be;
    ci->n_sm = prop.multiProcessorCount;
    ci->path = (vox_dtype)path;
    ci->need_bytes = need_bytes;
    snprintf(ci->gpu, sizeof ci->gpu, "%.95s", prop.name);
    vox_cuda_pdl = prop.major >= 9 ? VOX_PDL_ALL : 0;
    const char *pdl_env = getenv("VOX_CUDA_PDL"); /* a developer's knob: families, VOX_PDL_* */
    if (pdl_env && *pdl_env && prop.major >= 9) vox_cuda_pdl = atoi(pdl_env) & VOX_PDL_ALL;
    ci->gemv_max_rows = GEMV_MAX_ROWS;
    CUDA_CHECK(cudaStreamCreateWithFlags(&ci->st, cudaStreamNonBlocking));
    for (int i = 0; i < VOX_FENCES; i++)
        CUDA_CHECK(cudaEventCreateWithFlags(&ci->fences[i], cudaEventDisableTiming));
    CUBLAS_CHECK(cublasLtCreate(&ci->lt));
    CUDA_CHECK(cudaMalloc(&ci->lt_ws, LT_WORKSPACE));
    CUDA_CHECK(cudaMalloc((void **)&ci->xb, (size_t)XB_ELEMS * 2));
    CUDA_CHECK(cudaMalloc((void **)&ci->attn_part, (size_t)ATTN_PART_FLOATS * 4));
    CUDA_CHECK(cudaMalloc((void **)&ci->attn_tickets, (size_t)ATTN_TICKETS * 4));
    CUDA_CHECK(cudaMemsetAsync(ci->attn_tickets, 0, (size_t)ATTN_TICKETS * 4, ci->st));
    if (xf_bytes) {
        const float scal[4] = {1.0f, 0.0f, 1.0f, 0.0f};
        CUDA_CHECK(cudaMalloc((void **)&ci->xf, xf_bytes));
        CUDA_CHECK(cudaMalloc((void **)&ci->scal, sizeof scal));
        CUDA_CHECK(cudaMemcpyAsync(ci->scal, scal, sizeof scal, cudaMemcpyHostToDevice, ci->st));
        CUDA_CHECK(cudaStreamSynchronize(ci->st)); /* scal is a stack array */
    }
    if (cuda_failed) {
        char why[1024];
        snprintf(why, sizeof why, "%s", cuda_errmsg);
        cu_destroy(be);
        vox_error("cuda: backend setup: %s", why);
        return NULL;
    }
    be->name = "cuda";
    snprintf(be->device_name, sizeof be->device_name, "cuda (%.80s, sm_%d%d, %.0f GiB, %s)", prop.name,
             prop.major, prop.minor, tot / 1073741824.0, vox_cuda_path_name(ci->path));
    be->alloc = cu_alloc;
    be->free = cu_free;
    be->upload = cu_upload;
    be->download = cu_download;
    be->copy = cu_copy;
    be->sync = cu_sync;
    be->host_alloc = cu_host_alloc;
    be->host_free = cu_host_free;
    be->download_async = cu_download_async;
    be->wait_fence = cu_wait_fence;
    be->upload_weights = vox_cuda_upload_weights;
    be->destroy = cu_destroy;
    be->measure_bandwidth = cu_measure_bandwidth;
    be->mem_bytes = own;
    be->linear = cu_linear;
    be->rmsnorm = cu_rmsnorm;
    be->rope = cu_rope;
    be->kv_store = cu_kv_store;
    be->attention = cu_attention;
    be->swiglu = cu_swiglu;
    be->conv_cols = cu_conv_cols;
    be->conv_keep = cu_conv_keep;
    be->ring_append = cu_ring_append;
    be->embed = cu_embed;
    be->argmax = cu_argmax;
    be->topk = cu_topk;
    be->norm_linear = cu_norm_linear;
    be->swiglu_linear = cu_swiglu_linear;
    be->rope_attention = cu_rope_attention;
    be->thread_init = cu_thread_init;
    be->kv_bf16 = 1; /* the ring kernels take BF16 rings too (cuda/kv.cuh) */
    be->kv_dtype = VOX_DT_F32; /* vox_open sets the rings' dtype */
    be->warm_up = 1;
    be->async = 1;
    be->graph_launch = cu_graph_launch;
    be->graph_begin = cu_graph_begin;
    be->graph_end = cu_graph_end;
    be->graphs = 1;
    return be;
}
