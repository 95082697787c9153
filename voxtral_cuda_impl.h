/* voxtral_cuda_impl.h - what the CUDA backend's host files share (voxtral_cuda.c: memory,
 * ops, graphs, lifetime; voxtral_cuda_gemm.c: cuBLASLt plans and GEMMs;
 * voxtral_cuda_weights.c: the weight arena and upload): the backend's state and its
 * sizes. Not part of the op table's interface. */
#ifndef VOXTRAL_CUDA_IMPL_H
#define VOXTRAL_CUDA_IMPL_H

#include <cublasLt.h>

#include "voxtral_internal.h"
#include "voxtral_cuda.h"

enum {
    GEMV_MAX_ROWS = 1,                 /* up to this many rows, the GEMV kernel: measured,
                                          cuBLASLt wins from M = 2 on an H100 */
    SPLIT_MAX_ROWS = 8,                /* up to this many rows, split-key attention */
    LT_WORKSPACE = 32 << 20,           /* cuBLASLt workspace bytes */
    XB_ELEMS = 16 << 20,               /* GEMM-input scratch: BF16/FP16 (32 MB), and
                                          fp32 (64 MB) on the fp16 and fp32 paths */
    ATTN_PART_FLOATS = 4 << 20,        /* split-attention partials (16 MB) */
    ATTN_TICKETS = 1 << 16,            /* split-attention tickets: rows x kv heads (the
                                          fused batched step: max_batch x 8 on the real
                                          model; attention itself takes the split kernel
                                          up to SPLIT_MAX_ROWS rows, query tiles past it) */
    STAGE_BYTES = 64 << 20,            /* pinned staging for the weight upload, x2 */
    QTILE_ELEMS = 32 << 20,            /* quantized GEMM path: dense weight tile (64 MB
                                          BF16/FP16, 128 MB FP32), every decoder and
                                          encoder matrix but the LM head in one */
    QOUT_FLOATS = 4 << 20,             /* its output scratch for a tiled weight (16 MB) */
    MAX_PLANS = 64,
    MAX_GRAPHS = 48,                   /* a serving context's batched steps: one per batch size
                                          (up to 32), beside the plain streams' graphs */
    ARENA_ALIGN = 256,
};

typedef struct {
    int M, N, K, bias, align;
    int Mb;       /* the row bucket whose algorithm this plan uses (M itself: its own) */
    vox_dtype dt; /* of the weight and the input */
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
    vox_dtype path;     /* BF16, F16 or F32: what matrices become on the device */
    char gpu[96];       /* device name, for messages */
    size_t need_bytes;  /* vox_open's estimate: BF16 matrices + one stream's buffers */
    cudaStream_t st;
    cudaEvent_t fences[VOX_FENCES];
    cublasLtHandle_t lt;
    void *lt_ws;
    uint16_t *xb;
    float *xf;          /* fp32 GEMM input (fp16 / fp32 paths: NULL on bf16) */
    float *scal;        /* device: [0] alpha of the scaled FP16 GEMM, [1] 0, [2] 1;
                           [3] the max |x| word of the scaling */
    float *attn_part;
    int *attn_tickets;
    lt_plan plans[MAX_PLANS];
    int n_plans;
    int plans_made;        /* over the backend's life, and the host time they took */
    double plans_ms;
    graph_slot graphs[MAX_GRAPHS];
    int n_graphs;
    int capturing;
    void *arena; /* weights */
    size_t arena_bytes;
    struct { void *p; size_t n; } *allocs; /* live alloc() blocks, for be->mem_bytes */
    int n_allocs, cap_allocs;
    int gemv_max_rows;
    vox_backend *be; /* the backend this is the impl of (its error: CUDA_CHECK) */
    void *qtile;        /* quantized GEMM path (NULL until a model has Q8 / Q4 weights) */
    float *qout;
} cuda_impl;

static inline cuda_impl *impl_of(vox_backend *be) { return (cuda_impl *)be->impl; }

/* a failure recorded in the backend (CUDA_CHECK) */
#define cuda_failed (be->err.set)
#define cuda_errmsg (be->err.msg)

/* voxtral_cuda.c */
void vox_cuda_drop_graphs(cuda_impl *ci);
/* an op's failure (fmt formats what and a) into the caller's backend `be` */
void vox_cuda_op_fail(vox_backend *be, const char *fmt, const char *what, long a);
#define op_fail(fmt, what, a) vox_cuda_op_fail(be, fmt, what, a)
/* every launch is checked: a bad configuration shows up here, at once */
#define LAUNCHED() CUDA_CHECK(cudaGetLastError())
static inline const char *vox_cuda_path_name(vox_dtype dt) {
    return dt == VOX_DT_F16 ? "fp16" : dt == VOX_DT_F32 ? "fp32" : "bf16";
}
/* voxtral_cuda_gemm.c: cuBLASLt over many rows. y[m][N] (= or +=) in[m][K] . w^T (+ bias),
 * `in` from vox_cuda_gemm_input() for the weight's GEMM dtype (vox_cuda_gemm_dt: its own,
 * or for a quantized one its dense tile's); vox_cuda_have_scratch: the fp32 scratch of
 * the fp16 / fp32 paths (an op failure without it); vox_cuda_qfmt: the kernels' tag
 * (VOX_CUDA_Q8 / Q4) of a quantized dtype. */
vox_dtype vox_cuda_gemm_dt(const cuda_impl *ci, const vox_weight *w);
int vox_cuda_qfmt(vox_dtype dt);
int vox_cuda_have_scratch(cuda_impl *ci, const char *op);
const void *vox_cuda_gemm_input(cuda_impl *ci, vox_dtype dt, const float *x, int64_t n);
void vox_cuda_lt_matmul(cuda_impl *ci, float *y, const vox_weight *w, const void *in, const float *bias,
                        int m, int accumulate);
/* voxtral_cuda_weights.c: every matrix into one device arena, in the GPU path's dtype */
int vox_cuda_upload_weights(vox_backend *be, vox_model *m);

#endif
