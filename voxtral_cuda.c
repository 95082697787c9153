/* voxtral_cuda.c - the CUDA backend: device memory, the one stream, cuBLASLt
 * plans, graphs, and the op table (voxtral_internal.h) over the kernels in cuda/.
 * Every op computes what its CPU twin in voxtral_kernels.c computes.
 *
 * Weights: every matrix stays BF16 and goes to the device once, into one arena
 * (upload_weights). Activations fp32; sums fp32.
 * linear: few rows -> our memory-bound GEMV (cuda/gemv.cu); many rows -> x to BF16
 * in a scratch, cuBLASLt BF16 GEMM with fp32 output and a bias epilogue
 * (beta = 1 accumulates); exact-erf GELU in a separate pass (cuBLASLt's GELU
 * epilogue is the tanh approximation).
 * Fused decoder ops: at M = 1 one launch each (gemv1: norm or SwiGLU computed while
 * the GEMV loads its input, q/k/v or w1/w3 in one grid; rope_kv_store); at M > 1
 * the norm / SwiGLU writes the BF16 GEMM input directly, then cuBLASLt per weight.
 * Decoder-step kernels use programmatic dependent launch (vox_launch, sm_90+).
 * Ops only enqueue; nothing here synchronises except download() and sync(), so
 * the decoder step can be captured into a graph and replayed.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cublasLt.h>

#include "voxtral_internal.h"
#include "voxtral_cuda.h"

enum {
    GEMV_MAX_ROWS = 1,                 /* up to this many rows, the GEMV kernel: measured,
                                          cuBLASLt wins from M = 2 on an H100 */
    SPLIT_MAX_ROWS = 8,                /* up to this many rows, split-key attention */
    LT_WORKSPACE = 32 << 20,           /* cuBLASLt workspace bytes */
    XB_ELEMS = 16 << 20,               /* BF16 scratch for GEMM inputs (32 MB) */
    ATTN_PART_FLOATS = 4 << 20,        /* split-attention partials (16 MB) */
    ATTN_TICKETS = 4096,               /* split-attention tickets: rows x kv heads */
    STAGE_BYTES = 64 << 20,            /* pinned staging for the weight upload, x2 */
    MAX_PLANS = 64,
    MAX_GRAPHS = 16,
    ARENA_ALIGN = 256,
};

typedef struct {
    int M, N, K, bias, align;
    cublasLtMatmulDesc_t desc;
    cublasLtMatrixLayout_t a, b, c;
    cublasLtMatmulAlgo_t algo;
} lt_plan;

typedef struct {
    int key;
    cudaGraphExec_t exec;
} graph_slot;

typedef struct {
    int device, n_sm;
    cudaStream_t st;
    cublasLtHandle_t lt;
    void *lt_ws;
    uint16_t *xb;
    float *attn_part;
    int *attn_tickets;
    lt_plan plans[MAX_PLANS];
    int n_plans;
    graph_slot graphs[MAX_GRAPHS];
    int n_graphs;
    int capturing;
    void *arena; /* weights */
    size_t arena_bytes;
    struct { void *p; size_t n; } *allocs; /* live alloc() blocks, for be->mem_bytes */
    int n_allocs, cap_allocs;
    int gemv_max_rows;
} cuda_impl;

static cuda_impl *impl_of(vox_backend *be) { return (cuda_impl *)be->impl; }

int vox_cuda_pdl;

/* ---- errors ---------------------------------------------------------------------
 * Sticky: the first failure is kept and reported by sync()/download() callers. */
static int cuda_failed;
static char cuda_errmsg[1024];

void vox_cuda_fail(const char *file, int line, const char *stmt, const char *why) {
    if (!cuda_failed) {
        const char *base = strrchr(file, '/');
        snprintf(cuda_errmsg, sizeof cuda_errmsg, "%s:%d: %s: %s", base ? base + 1 : file, line,
                 stmt, why);
        cuda_failed = 1;
    }
    vox_error("%s", cuda_errmsg);
}

static void op_fail(const char *fmt, const char *what, long a) {
    char buf[256];
    snprintf(buf, sizeof buf, fmt, what, a);
    vox_cuda_fail(__FILE__, __LINE__, "op", buf);
}

/* every launch is checked: a bad configuration shows up here, at once */
#define LAUNCHED() CUDA_CHECK(cudaGetLastError())

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

static void drop_graphs(cuda_impl *ci) {
    for (int i = 0; i < ci->n_graphs; i++) CUDA_CHECK(cudaGraphExecDestroy(ci->graphs[i].exec));
    ci->n_graphs = 0;
}

static void cu_free(vox_backend *be, void *p) {
    if (!p) return;
    cuda_impl *ci = impl_of(be);
    /* captured graphs hold raw pointers: any freed buffer may be in one */
    drop_graphs(ci);
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

/* ---- weights ----------------------------------------------------------------------- */
static size_t weight_bytes_of(const vox_weight *w) {
    if (!w->data) return 0;
    return (size_t)(w->rows * w->cols) * (w->dtype == VOX_DT_BF16 ? 2 : 4);
}

/* Calls fn on every weight of the model; returns how many there are. */
static int each_weight(vox_model *m, void (*fn)(vox_weight *, void *), void *arg) {
    const vox_config *c = &m->cfg;
    int n = 0;
#define W(w) (fn((w), arg), n++)
    W(&m->conv0_w), W(&m->conv0_b), W(&m->conv1_w), W(&m->conv1_b);
    for (int l = 0; l < c->enc.n_layers; l++) {
        vox_enc_layer *L = &m->enc[l];
        W(&L->attn_norm), W(&L->wq), W(&L->bq), W(&L->wk), W(&L->wv), W(&L->bv), W(&L->wo);
        W(&L->bo), W(&L->ffn_norm), W(&L->w1), W(&L->w3), W(&L->w2), W(&L->b2);
    }
    W(&m->enc_norm), W(&m->adapter0), W(&m->adapter2), W(&m->tok_emb), W(&m->dec_norm);
    for (int l = 0; l < c->dec.n_layers; l++) {
        vox_dec_layer *L = &m->dec[l];
        W(&L->attn_norm), W(&L->wq), W(&L->wk), W(&L->wv), W(&L->wo), W(&L->ffn_norm);
        W(&L->w1), W(&L->w3), W(&L->w2), W(&L->ada0), W(&L->ada2), W(&L->ffn_scale);
    }
#undef W
    return n;
}

static void add_size(vox_weight *w, void *arg) {
    size_t b = weight_bytes_of(w);
    if (b) *(size_t *)arg += (b + ARENA_ALIGN - 1) / ARENA_ALIGN * ARENA_ALIGN;
}

typedef struct {
    cuda_impl *ci;
    char *arena;
    size_t off, done, total;
    char *stage[2];
    cudaEvent_t ev[2];
    int cur;
    double next_report;
    int tty; /* stderr is a terminal: a \r progress line; else one line at the end */
} upload_state;

static void upload_one(vox_weight *w, void *arg) {
    upload_state *u = arg;
    size_t bytes = weight_bytes_of(w);
    if (!bytes) {
        w->dev = NULL;
        return;
    }
    w->dev = u->arena + u->off;
    const char *src = w->data;
    for (size_t at = 0; at < bytes;) {
        size_t n = bytes - at < STAGE_BYTES ? bytes - at : STAGE_BYTES;
        int b = u->cur;
        u->cur ^= 1;
        CUDA_CHECK(cudaEventSynchronize(u->ev[b])); /* its last copy is done */
        memcpy(u->stage[b], src + at, n);           /* reads the mmap: pages come in here */
        CUDA_CHECK(cudaMemcpyAsync((char *)w->dev + at, u->stage[b], n, cudaMemcpyHostToDevice,
                                   u->ci->st));
        CUDA_CHECK(cudaEventRecord(u->ev[b], u->ci->st));
        at += n;
        u->done += n;
        if (u->tty && u->total > (1u << 30) && u->done >= u->next_report) {
            fprintf(stderr, "\rvoxtral: cuda: uploading weights %.1f / %.1f GB", u->done / 1e9,
                    u->total / 1e9);
            u->next_report += u->total / 20.0;
        }
    }
    u->off += (bytes + ARENA_ALIGN - 1) / ARENA_ALIGN * ARENA_ALIGN;
}

static int cu_upload_weights(vox_backend *be, vox_model *m) {
    cuda_impl *ci = impl_of(be);
    size_t total = 0;
    each_weight(m, add_size, &total);
    drop_graphs(ci);
    if (ci->arena) CUDA_CHECK(cudaFree(ci->arena));
    be->mem_bytes -= ci->arena_bytes;
    ci->arena = NULL;
    ci->arena_bytes = 0;
    cudaError_t e = cudaMalloc(&ci->arena, total ? total : 1);
    if (e != cudaSuccess) {
        ci->arena = NULL;
        return vox_error("cuda: weights need %.2f GiB on the device: %s", total / 1073741824.0,
                         cudaGetErrorString(e));
    }
    ci->arena_bytes = total;
    be->mem_bytes += total;
    upload_state u = {.ci = ci, .arena = ci->arena, .total = total, .tty = isatty(2)};
    for (int b = 0; b < 2; b++) {
        CUDA_CHECK(cudaHostAlloc((void **)&u.stage[b], STAGE_BYTES, cudaHostAllocDefault));
        CUDA_CHECK(cudaEventCreateWithFlags(&u.ev[b], cudaEventDisableTiming));
        CUDA_CHECK(cudaEventRecord(u.ev[b], ci->st));
    }
    if (!cuda_failed) each_weight(m, upload_one, &u);
    CUDA_CHECK(cudaStreamSynchronize(ci->st));
    for (int b = 0; b < 2; b++) {
        if (u.stage[b]) CUDA_CHECK(cudaFreeHost(u.stage[b]));
        if (u.ev[b]) CUDA_CHECK(cudaEventDestroy(u.ev[b]));
    }
    if (total > (1u << 30))
        fprintf(stderr, "%svoxtral: cuda: uploaded weights %.1f GB%s\n", u.tty ? "\r" : "",
                total / 1e9, u.tty ? "        " : "");
    if (cuda_failed) return vox_error("cuda: weight upload: %s", cuda_errmsg);
    return 0;
}

/* ---- linear -------------------------------------------------------------------------- */
static int ptr_align(const void *p) {
    uintptr_t u = (uintptr_t)p;
    int a = ARENA_ALIGN;
    while (a > 1 && (u % a)) a >>= 1;
    return a;
}

static lt_plan *get_plan(cuda_impl *ci, int M, int N, int K, int bias, int align) {
    for (int i = 0; i < ci->n_plans; i++) {
        lt_plan *p = &ci->plans[i];
        if (p->M == M && p->N == N && p->K == K && p->bias == bias && p->align == align) return p;
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
    lt_plan *p = &ci->plans[ci->n_plans];
    memset(p, 0, sizeof *p);
    p->M = M, p->N = N, p->K = K, p->bias = bias, p->align = align;
    /* column-major view: y^T[N][M] = W[K][N]^T . x^T[K][M] */
    cublasOperation_t opT = CUBLAS_OP_T, opN = CUBLAS_OP_N;
    CUBLAS_CHECK(cublasLtMatmulDescCreate(&p->desc, CUBLAS_COMPUTE_32F, CUDA_R_32F));
    CUBLAS_CHECK(cublasLtMatmulDescSetAttribute(p->desc, CUBLASLT_MATMUL_DESC_TRANSA, &opT, sizeof opT));
    CUBLAS_CHECK(cublasLtMatmulDescSetAttribute(p->desc, CUBLASLT_MATMUL_DESC_TRANSB, &opN, sizeof opN));
    if (bias) {
        cublasLtEpilogue_t epi = CUBLASLT_EPILOGUE_BIAS;
        cudaDataType_t bt = CUDA_R_32F;
        CUBLAS_CHECK(cublasLtMatmulDescSetAttribute(p->desc, CUBLASLT_MATMUL_DESC_EPILOGUE, &epi, sizeof epi));
        CUBLAS_CHECK(cublasLtMatmulDescSetAttribute(p->desc, CUBLASLT_MATMUL_DESC_BIAS_DATA_TYPE, &bt, sizeof bt));
    }
    CUBLAS_CHECK(cublasLtMatrixLayoutCreate(&p->a, CUDA_R_16BF, K, N, K));
    CUBLAS_CHECK(cublasLtMatrixLayoutCreate(&p->b, CUDA_R_16BF, K, M, K));
    CUBLAS_CHECK(cublasLtMatrixLayoutCreate(&p->c, CUDA_R_32F, N, M, N));
    cublasLtMatmulPreference_t pref;
    size_t ws = LT_WORKSPACE;
    uint32_t al = (uint32_t)align;
    CUBLAS_CHECK(cublasLtMatmulPreferenceCreate(&pref));
    CUBLAS_CHECK(cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES, &ws, sizeof ws));
    CUBLAS_CHECK(cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_C_BYTES, &al, sizeof al));
    CUBLAS_CHECK(cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_D_BYTES, &al, sizeof al));
    cublasLtMatmulHeuristicResult_t res;
    int nres = 0;
    CUBLAS_CHECK(cublasLtMatmulAlgoGetHeuristic(ci->lt, p->desc, p->a, p->b, p->c, p->c, pref, 1, &res, &nres));
    cublasLtMatmulPreferenceDestroy(pref);
    if (nres < 1) {
        op_fail("%s: no cuBLASLt algorithm for K=%ld", "linear", K);
        return NULL;
    }
    p->algo = res.algo;
    ci->n_plans++;
    return p;
}

/* y[m][N] (= or +=) xb[m][K] . w^T (+ bias): cuBLASLt on the BF16 scratch, which
 * the caller has filled with m rows. */
static void lt_matmul(cuda_impl *ci, float *y, const vox_weight *w, const float *bias, int m,
                      int accumulate) {
    const int N = (int)w->rows, K = (int)w->cols;
    const float alpha = 1.0f, beta = accumulate ? 1.0f : 0.0f;
    lt_plan *p = get_plan(ci, m, N, K, bias != NULL, ptr_align(y));
    if (!p) return;
    if (bias)
        CUBLAS_CHECK(cublasLtMatmulDescSetAttribute(p->desc, CUBLASLT_MATMUL_DESC_BIAS_POINTER,
                                                    &bias, sizeof bias));
    CUBLAS_CHECK(cublasLtMatmul(ci->lt, p->desc, &alpha, w->dev, p->a, ci->xb, p->b, &beta, y, p->c,
                                y, p->c, &p->algo, ci->lt_ws, LT_WORKSPACE, ci->st));
}

static int bf16_on_device(const vox_weight *w) { return w->dev && w->dtype == VOX_DT_BF16; }

static void cu_linear(vox_backend *be, float *y, const float *x, const vox_weight *w,
                      const vox_weight *b, int M, vox_act act, int accumulate) {
    cuda_impl *ci = impl_of(be);
    const int N = (int)w->rows, K = (int)w->cols;
    const float *bias = b ? (const float *)b->dev : NULL;
    if (!bf16_on_device(w) || (b && (!bias || b->dtype != VOX_DT_F32))) {
        op_fail("%s: weight not on the device or not BF16 (%ld columns)", "linear", K);
        return;
    }
    if (M <= 0) return;
    const int gemv_ok = K % 8 == 0 && ((uintptr_t)x & 15) == 0;
    if (gemv_ok && M == 1 && !bias && act == VOX_ACT_NONE) { /* the decoder step's wo */
        vox_cuda_gemv1_args a = {.W = {w->dev}, .y = {y}, .rows = {N}, .n_out = 1, .K = K,
                                 .mode = VOX_GEMV_PLAIN, .accumulate = accumulate, .x = x};
        vox_cuda_gemv1(&a, ci->n_sm, ci->st);
        LAUNCHED();
        return;
    }
    if (gemv_ok && (M <= ci->gemv_max_rows || (accumulate && act != VOX_ACT_NONE))) {
        vox_cuda_gemv(y, x, w->dev, bias, M, N, K, act, accumulate, ci->n_sm, ci->st);
        LAUNCHED();
        return;
    }
    if (accumulate && act != VOX_ACT_NONE) {
        op_fail("%s: accumulate with an activation needs K %% 8 == 0 (K=%ld)", "linear", K);
        return;
    }
    /* many rows: BF16 GEMM in row chunks that fit the BF16 scratch */
    const int rows_per = XB_ELEMS / K > 0 ? XB_ELEMS / K : 1;
    for (int r0 = 0; r0 < M; r0 += rows_per) {
        int m = M - r0 < rows_per ? M - r0 : rows_per;
        float *yr = y + (int64_t)r0 * N;
        vox_cuda_f32_to_bf16(ci->xb, x + (int64_t)r0 * K, (int64_t)m * K, ci->st);
        LAUNCHED();
        lt_matmul(ci, yr, w, bias, m, accumulate);
        if (act == VOX_ACT_GELU) {
            vox_cuda_gelu(yr, (int64_t)m * N, ci->st);
            LAUNCHED();
        }
    }
}

/* ---- fused decoder ops ------------------------------------------------------------------ */
static void cu_norm_linear(vox_backend *be, int n_out, float *const *y, const float *x,
                           const vox_weight *const *w, const vox_weight *norm,
                           const vox_weight *scale, float eps, int M) {
    cuda_impl *ci = impl_of(be);
    const int K = (int)w[0]->cols;
    int ok = n_out >= 1 && n_out <= VOX_GEMV_MAX_OUT && (!norm || norm->dev) && (!scale || scale->dev);
    for (int i = 0; i < n_out && ok; i++) ok = bf16_on_device(w[i]) && w[i]->cols == K;
    if (!ok) {
        op_fail("%s: weights not on the device, not BF16 or of different widths (%ld outputs)",
                "norm_linear", n_out);
        return;
    }
    if (M <= 0) return;
    if (M == 1 && K % 8 == 0 && ((uintptr_t)x & 15) == 0) {
        vox_cuda_gemv1_args a = {.n_out = n_out, .K = K, .x = x, .eps = eps,
                                 .mode = norm ? VOX_GEMV_NORM : VOX_GEMV_PLAIN,
                                 .norm = norm ? norm->dev : NULL, .scale = scale ? scale->dev : NULL};
        for (int i = 0; i < n_out; i++) {
            a.W[i] = w[i]->dev;
            a.y[i] = y[i];
            a.rows[i] = (int)w[i]->rows;
        }
        vox_cuda_gemv1(&a, ci->n_sm, ci->st);
        LAUNCHED();
        return;
    }
    /* many rows: the norm writes the BF16 GEMM input, shared by the n_out GEMMs */
    const int rows_per = XB_ELEMS / K > 0 ? XB_ELEMS / K : 1;
    for (int r0 = 0; r0 < M; r0 += rows_per) {
        int m = M - r0 < rows_per ? M - r0 : rows_per;
        if (norm)
            vox_cuda_rmsnorm_bf16(ci->xb, x + (int64_t)r0 * K, norm->dev, scale ? scale->dev : NULL,
                                  m, K, eps, ci->st);
        else
            vox_cuda_f32_to_bf16(ci->xb, x + (int64_t)r0 * K, (int64_t)m * K, ci->st);
        LAUNCHED();
        for (int i = 0; i < n_out; i++) lt_matmul(ci, y[i] + (int64_t)r0 * w[i]->rows, w[i], NULL, m, 0);
    }
}

static void cu_swiglu_linear(vox_backend *be, float *y, const float *g, const float *u,
                             const vox_weight *w, int M, int accumulate) {
    cuda_impl *ci = impl_of(be);
    const int K = (int)w->cols;
    if (!bf16_on_device(w)) {
        op_fail("%s: weight not on the device or not BF16 (%ld columns)", "swiglu_linear", K);
        return;
    }
    if (M <= 0) return;
    if (M == 1 && K % 8 == 0 && ((uintptr_t)g & 15) == 0 && ((uintptr_t)u & 15) == 0) {
        vox_cuda_gemv1_args a = {.W = {w->dev}, .y = {y}, .rows = {(int)w->rows}, .n_out = 1,
                                 .K = K, .mode = VOX_GEMV_SWIGLU, .accumulate = accumulate,
                                 .x = g, .u = u};
        vox_cuda_gemv1(&a, ci->n_sm, ci->st);
        LAUNCHED();
        return;
    }
    const int rows_per = XB_ELEMS / K > 0 ? XB_ELEMS / K : 1;
    for (int r0 = 0; r0 < M; r0 += rows_per) {
        int m = M - r0 < rows_per ? M - r0 : rows_per;
        vox_cuda_swiglu_bf16(ci->xb, g + (int64_t)r0 * K, u + (int64_t)r0 * K, (int64_t)m * K, ci->st);
        LAUNCHED();
        lt_matmul(ci, y + (int64_t)r0 * w->rows, w, NULL, m, accumulate);
    }
}

/* Test hooks (tests/test_cuda_ops.c): programmatic dependent launch on/off (for
 * timing both); rows up to which linear takes the GEMV path. Return the old value. */
int vox_cuda_set_pdl(vox_backend *be, int on) {
    int old = vox_cuda_pdl;
    vox_cuda_pdl = on;
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
static int inv_freq_of(vox_cuda_inv_freq *f, const char *op, int head_dim, float theta) {
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
    if (inv_freq_of(&f, "rope", head_dim, theta)) return;
    vox_cuda_rope(x, pos, M, n_heads, head_dim, &f, impl_of(be)->st);
    LAUNCHED();
}

static void cu_rope_kv_store(vox_backend *be, float *q, float *k, const float *v, float *kc,
                             float *vc, const int32_t *pos, int M, int n_heads, int n_kv_heads,
                             int head_dim, float theta, int cap, int rows_are_streams) {
    vox_cuda_inv_freq f;
    if (M <= 0 || inv_freq_of(&f, "rope_kv_store", head_dim, theta)) return;
    vox_cuda_rope_kv_store(q, k, v, kc, vc, pos, M, n_heads, n_kv_heads, head_dim, &f, cap,
                           rows_are_streams, impl_of(be)->st);
    LAUNCHED();
}

static void cu_kv_store(vox_backend *be, float *kc, float *vc, const float *k, const float *v,
                        const int32_t *pos, int M, int kv_dim, int cap, int rows_are_streams) {
    vox_cuda_kv_store(kc, vc, k, v, pos, M, kv_dim, cap, rows_are_streams, impl_of(be)->st);
    LAUNCHED();
}

static void cu_attention(vox_backend *be, float *out, const float *q, const float *kc,
                         const float *vc, const int32_t *pos, int M, int n_heads, int n_kv_heads,
                         int head_dim, int cap, int window, int rows_are_streams) {
    cuda_impl *ci = impl_of(be);
    if (M <= 0) return;
    int rc = -1;
    if (rows_are_streams || M <= SPLIT_MAX_ROWS)
        rc = vox_cuda_attention_split(out, q, kc, vc, pos, M, n_heads, n_kv_heads, head_dim, cap,
                                      window, rows_are_streams, ci->attn_part, ATTN_PART_FLOATS,
                                      ci->attn_tickets, ATTN_TICKETS, ci->n_sm, ci->st);
    if (rc && !rows_are_streams)
        rc = vox_cuda_attention_tiled(out, q, kc, vc, pos, M, n_heads, n_kv_heads, head_dim, cap,
                                      window, ci->st);
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

static void cu_im2col(vox_backend *be, float *cols, const float *x, int T_out, int C, int K,
                      int stride) {
    if (T_out <= 0) return;
    vox_cuda_im2col(cols, x, T_out, C, K, stride, impl_of(be)->st);
    LAUNCHED();
}

static void cu_embed(vox_backend *be, float *x, const vox_weight *emb, const int32_t *ids,
                     const float *audio, const int32_t *pos, int M, int D, int acap,
                     int rows_are_streams) {
    if (!emb->dev || emb->dtype != VOX_DT_BF16) {
        op_fail("%s: embedding not on the device or not BF16 (%ld)", "embed", D);
        return;
    }
    vox_cuda_embed(x, emb->dev, ids, audio, pos, M, D, acap, rows_are_streams, impl_of(be)->st);
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
        drop_graphs(ci);
        for (int i = 0; i < ci->n_plans; i++) {
            cublasLtMatmulDescDestroy(ci->plans[i].desc);
            cublasLtMatrixLayoutDestroy(ci->plans[i].a);
            cublasLtMatrixLayoutDestroy(ci->plans[i].b);
            cublasLtMatrixLayoutDestroy(ci->plans[i].c);
        }
        if (ci->lt) cublasLtDestroy(ci->lt);
        cudaFree(ci->lt_ws);
        cudaFree(ci->xb);
        cudaFree(ci->attn_part);
        cudaFree(ci->attn_tickets);
        cudaFree(ci->arena);
        for (int i = 0; i < ci->n_allocs; i++) cudaFree(ci->allocs[i].p);
        free(ci->allocs);
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

vox_backend *vox_cuda_backend_new(size_t need_bytes) {
    int n = 0;
    cudaError_t e = cudaGetDeviceCount(&n);
    if (e != cudaSuccess || n == 0) {
        vox_error("cuda: no usable CUDA device (%s)", e != cudaSuccess ? cudaGetErrorString(e) : "none found");
        return NULL;
    }
    struct cudaDeviceProp prop;
    if ((e = cudaSetDevice(0)) != cudaSuccess || (e = cudaGetDeviceProperties(&prop, 0)) != cudaSuccess) {
        vox_error("cuda: device 0: %s", cudaGetErrorString(e));
        return NULL;
    }
    if (prop.major < 8) {
        vox_error("cuda: %s is sm_%d%d: the BF16 path needs compute capability 8.0+", prop.name,
                  prop.major, prop.minor);
        return NULL;
    }
    size_t fr = 0, tot = 0;
    if ((e = cudaMemGetInfo(&fr, &tot)) != cudaSuccess) {
        vox_error("cuda: cudaMemGetInfo: %s", cudaGetErrorString(e));
        return NULL;
    }
    size_t own = (size_t)LT_WORKSPACE + (size_t)XB_ELEMS * 2 + (size_t)ATTN_PART_FLOATS * 4 +
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
    ci->n_sm = prop.multiProcessorCount;
    vox_cuda_pdl = prop.major >= 9;
    ci->gemv_max_rows = GEMV_MAX_ROWS;
    cuda_failed = 0;
    cuda_errmsg[0] = 0;
    CUDA_CHECK(cudaStreamCreateWithFlags(&ci->st, cudaStreamNonBlocking));
    CUBLAS_CHECK(cublasLtCreate(&ci->lt));
    CUDA_CHECK(cudaMalloc(&ci->lt_ws, LT_WORKSPACE));
    CUDA_CHECK(cudaMalloc((void **)&ci->xb, (size_t)XB_ELEMS * 2));
    CUDA_CHECK(cudaMalloc((void **)&ci->attn_part, (size_t)ATTN_PART_FLOATS * 4));
    CUDA_CHECK(cudaMalloc((void **)&ci->attn_tickets, (size_t)ATTN_TICKETS * 4));
    CUDA_CHECK(cudaMemsetAsync(ci->attn_tickets, 0, (size_t)ATTN_TICKETS * 4, ci->st));
    if (cuda_failed) {
        char why[1024];
        snprintf(why, sizeof why, "%s", cuda_errmsg);
        cu_destroy(be);
        vox_error("cuda: backend setup: %s", why);
        return NULL;
    }
    be->name = "cuda";
    snprintf(be->device_name, sizeof be->device_name, "cuda (%.80s, sm_%d%d, %.0f GiB)", prop.name,
             prop.major, prop.minor, tot / 1073741824.0);
    be->alloc = cu_alloc;
    be->free = cu_free;
    be->upload = cu_upload;
    be->download = cu_download;
    be->copy = cu_copy;
    be->sync = cu_sync;
    be->upload_weights = cu_upload_weights;
    be->destroy = cu_destroy;
    be->measure_bandwidth = cu_measure_bandwidth;
    be->mem_bytes = own;
    be->linear = cu_linear;
    be->rmsnorm = cu_rmsnorm;
    be->rope = cu_rope;
    be->kv_store = cu_kv_store;
    be->attention = cu_attention;
    be->swiglu = cu_swiglu;
    be->im2col = cu_im2col;
    be->embed = cu_embed;
    be->argmax = cu_argmax;
    be->topk = cu_topk;
    be->norm_linear = cu_norm_linear;
    be->swiglu_linear = cu_swiglu_linear;
    be->rope_kv_store = cu_rope_kv_store;
    be->graph_launch = cu_graph_launch;
    be->graph_begin = cu_graph_begin;
    be->graph_end = cu_graph_end;
    return be;
}
