/* voxtral_cuda.h - what voxtral_cuda.c (host side of the CUDA backend) and the
 * kernels (cuda/<family>.cu) share: the error-check macros and the kernel launchers.
 *
 * Launchers only enqueue on the stream they are given; they never synchronise
 * and never allocate, so every one of them may be captured into a CUDA graph.
 * Shapes and dtypes follow the CPU twins in voxtral_kernels.c: activations fp32
 * row-major, weights [out][in] of a device dtype (`wtype`, below), positions int32.
 */
#ifndef VOXTRAL_CUDA_H
#define VOXTRAL_CUDA_H

#include <stdint.h>
#include <cuda_runtime.h>

#ifdef __cplusplus
extern "C" {
#endif

/* Device dtypes of weights (the values of vox_dtype, voxtral_internal.h): BF16 on
 * the bf16 path, F16 on the fp16 path (F32 for a tensor FP16 cannot hold), F32 on
 * the fp32 path. Kernels read all three as fp32 and sum in fp32. */
enum { VOX_CUDA_F32 = 0, VOX_CUDA_BF16 = 1, VOX_CUDA_F16 = 2, VOX_CUDA_Q8 = 3, VOX_CUDA_Q4 = 4 };

/* ---- errors ------------------------------------------------------------------
 * A failed CUDA / cuBLAS call records "file:line: statement: reason" in its backend's
 * error (vox_backend.err: per backend, sticky) and the thread's last error; sync()
 * and wait_fence() report it. CUDA_CHECK / CUBLAS_CHECK name the backend `be`, which
 * must be in scope. Ops are void: they never exit and never synchronise. */
struct vox_backend;
void vox_cuda_fail(struct vox_backend *be, const char *file, int line, const char *stmt,
                   const char *why);

#define CUDA_CHECK(stmt)                                                          \
    do {                                                                          \
        cudaError_t err_ = (stmt);                                                \
        if (err_ != cudaSuccess) vox_cuda_fail(be, __FILE__, __LINE__, #stmt, cudaGetErrorString(err_)); \
    } while (0)

/* Programmatic dependent launch (Hopper+): the decoder-step kernels are launched
 * with vox_launch(), which lets a kernel start while its predecessor finishes.
 * Every kernel so launched calls pdl_wait() before it touches any buffer another
 * kernel writes, then pdl_trigger(). Exceptions, read before the wait: weights (the
 * GEMVs fetch their first ones), and in the fused decoder attention the positions
 * (uploaded by memcpy before a step's kernels) and the ring slots of earlier steps;
 * they rely on every kernel waiting before it triggers, so no kernel two back is
 * still running. vox_cuda_pdl: the kernel families (VOX_PDL_*) launched
 * that way, set by the backend at creation (0 before sm_90: plain launches). */
enum { VOX_PDL_GEMV = 1, VOX_PDL_SWIGLU = 2, VOX_PDL_ATTN = 4, VOX_PDL_ROPE = 8, VOX_PDL_EMBED = 16,
       VOX_PDL_PICK = 32, VOX_PDL_ALL = 63 };
extern int vox_cuda_pdl;

#define CUBLAS_CHECK(stmt)                                                        \
    do {                                                                          \
        cublasStatus_t st_ = (stmt);                                              \
        if (st_ != CUBLAS_STATUS_SUCCESS) vox_cuda_fail(be, __FILE__, __LINE__, #stmt, cublasLtGetStatusString(st_)); \
    } while (0)

/* ---- cuda/gemv.cu --------------------------------------------------------------
 * y[M][N] (= or +=) act(x[M][K] . W^T + b), W [N][K] of dtype wtype, fp32 accumulation.
 * Memory-bound path for few rows. Needs K % 8 == 0, x and W 16-byte aligned.
 * act: 0 none, 1 exact (erf) GELU. b may be NULL. */
void vox_cuda_gemv(float *y, const float *x, const void *W, int wtype, const float *b, int M,
                   int N, int K, int act, int accumulate, int n_sm, cudaStream_t st);

/* Fused M=1 GEMVs over up to 3 weights sharing one input (concatenated rows, one
 * launch): y[i][0..rows_i) (= or +=) in . W_i^T, where the input is
 *   VOX_GEMV_PLAIN:  in = x
 *   VOX_GEMV_NORM:   in = rmsnorm(x; norm, scale, eps) (scale may be NULL)
 *   VOX_GEMV_SWIGLU: in = silu(x) * u
 * All weights of one launch share the dtype wtype.
 * Needs K % 8 == 0 and x, u 16-byte aligned. */
enum { VOX_GEMV_PLAIN = 0, VOX_GEMV_NORM = 1, VOX_GEMV_SWIGLU = 2, VOX_GEMV_MAX_OUT = 3 };
typedef struct {
    const uint16_t *W[VOX_GEMV_MAX_OUT]; /* of dtype wtype; typed so only for the kernel's
                                            codegen (void * here costs it spills) */
    float *y[VOX_GEMV_MAX_OUT];
    int rows[VOX_GEMV_MAX_OUT];
    int n_out, K, mode, accumulate;
    const float *x, *u, *norm, *scale;
    float eps;
    int wtype; /* of every W[i] */
} vox_cuda_gemv1_args;
void vox_cuda_gemv1(const vox_cuda_gemv1_args *a, int n_sm, cudaStream_t st);
/* h[0..n) = silu(g) * u (launched with PDL: the M = 1 swiglu_linear's input) */
void vox_cuda_swiglu1(float *h, const float *g, const float *u, int n, cudaStream_t st);

/* ---- cuda/qgemv.cu, cuda/quant.cu: quantized weights (Q8 / Q4, formats in voxtral_quant.h)
 * qgemv: for i < n_out, y[i][m][0..rows_i) (= or +=) act(in[m] . dequant(W_i)^T + bias),
 * m < M <= VOX_QGEMV_MAX_ROWS, in as gemv1's modes (VOX_GEMV_PLAIN / NORM / SWIGLU; x and
 * u [M][K]); bias (n_out == 1 only) may be NULL; act 0 none, 1 erf GELU. Any K; W rows
 * 16-byte aligned. Returns -1 (nothing launched) for arguments it does not take. */
enum { VOX_QGEMV_MAX_ROWS = 8 };
typedef struct {
    const uint8_t *W[VOX_GEMV_MAX_OUT];
    const uint16_t *S[VOX_GEMV_MAX_OUT]; /* F16 scales of each W */
    float *y[VOX_GEMV_MAX_OUT];
    int rows[VOX_GEMV_MAX_OUT];
    int n_out, K, group, fmt; /* fmt: VOX_CUDA_Q8 or VOX_CUDA_Q4, of every W */
    int M, mode, accumulate, act;
    const float *x, *u, *norm, *scale, *bias;
    float eps;
} vox_cuda_qgemv_args;
int vox_cuda_qgemv(const vox_cuda_qgemv_args *a, int n_sm, cudaStream_t st);
/* dst[r][K] (otype BF16, F16 or F32) = dequant(W rows r0 .. r0 + n_rows), the exact rule
 * then rounded to otype (the GEMM path's weight tile) */
void vox_cuda_qdequant(void *dst, int otype, const void *W, int fmt, const uint16_t *S, int r0,
                       int n_rows, int K, int group, cudaStream_t st);
/* x[i] = dequant(emb[ids[i]]) + audio[(slot ? slot[i] * acap : 0) + pos[i] % acap] (rows of D) */
void vox_cuda_qembed(float *x, const void *W, int fmt, const uint16_t *S, int group,
                     const int32_t *ids, const float *audio, const int32_t *pos, int M, int D,
                     int acap, const int32_t *slot, cudaStream_t st);

/* ---- cuda/misc.cu -------------------------------------------------------------- */
void vox_cuda_f32_to_bf16(uint16_t *dst, const float *src, int64_t n, cudaStream_t st);
/* The FP16 GEMM input: dst = f16(src * s), s = 2^(15 - e) for max|src| in
 * [2^(e-1), 2^e) (the largest maps into [2^14, 2^15): no overflow, and values down
 * to 2^-29 of it stay normal); *alpha = 1 / s for the GEMM's output. s = 1 when
 * max|src| is 0 or not finite. amax: one device word of scratch. */
void vox_cuda_f32_to_f16_scaled(uint16_t *dst, const float *src, int64_t n, unsigned *amax,
                                float *alpha, int n_sm, cudaStream_t st);
/* Weight upload: dst[i] (F16 or F32, wtype) = src[i] (BF16); F16 rounds to nearest even */
void vox_cuda_convert_bf16(void *dst, int wtype, const uint16_t *src, int64_t n, cudaStream_t st);
/* cudaSuccess when this binary holds kernels the current device can run */
cudaError_t vox_cuda_probe_kernels(void);
void vox_cuda_gelu(float *y, int64_t n, cudaStream_t st);
/* h = silu(g) * u */
void vox_cuda_swiglu(float *h, const float *g, const float *u, int64_t n, cudaStream_t st);
/* h (BF16) = silu(g) * u: the GEMM input of swiglu_linear */
void vox_cuda_swiglu_bf16(uint16_t *h, const float *g, const float *u, int64_t n, cudaStream_t st);
/* ids[i] = argmax_j logits[i][j], lowest j on ties */
void vox_cuda_argmax(int32_t *ids, const float *logits, int M, int V, cudaStream_t st);
/* the k (<= 1024) largest of each row, descending, lower id first on ties */
void vox_cuda_topk(int32_t *ids, float *vals, const float *logits, int M, int V, int k,
                   cudaStream_t st);

/* ---- cuda/stem.cu: an encoder batch's per-stream parts, every stream in one launch --
 * The spans as vox_enc_span (voxtral_internal.h; voxtral_cuda.c checks the layout is
 * the same), in device memory; the CPU twins cpu_conv_cols, cpu_conv_keep,
 * cpu_ring_append (voxtral_kernels.c) are the spec. */
typedef struct {
    int32_t slot, row0, rows, reset, tok0, tokens, at, unused;
} vox_cuda_span;
/* cols[row0 / stride + t][c*K + k] = (context of P = K - stride rows at state + slot *
 * sstride, zeros when reset; then x rows row0 ..)[t*stride + k][c]; M outputs in all */
void vox_cuda_conv_cols(float *cols, const float *state, int64_t sstride, const float *x,
                        const vox_cuda_span *sp, int n, int M, int C, int K, int stride, cudaStream_t st);
/* each span's P context rows = the last P rows of its input, in place */
void vox_cuda_conv_keep(float *state, int64_t sstride, const float *x, const vox_cuda_span *sp, int n,
                        int C, int P, cudaStream_t st);
/* ring[slot][(at + t) % cap] = x[tok0 + t] (rows of D); M tokens in all */
void vox_cuda_ring_append(float *ring, const float *x, const vox_cuda_span *sp, int n, int M, int D,
                          int cap, cudaStream_t st);

/* ---- cuda/norm_rope.cu ---------------------------------------------------------- */
/* y = x * rsqrt(mean(x^2) + eps) * w (* scale); y may be x */
void vox_cuda_rmsnorm(float *y, const float *x, const float *w, const float *scale, int M, int D,
                      float eps, cudaStream_t st);
/* y (BF16) = rmsnorm(x) rows: the GEMM input of norm_linear */
void vox_cuda_rmsnorm_bf16(uint16_t *y, const float *x, const float *w, const float *scale, int M,
                           int D, float eps, cudaStream_t st);
enum { VOX_CUDA_ROPE_MAX_HALF = 128 };
typedef struct { float f[VOX_CUDA_ROPE_MAX_HALF]; } vox_cuda_inv_freq;
/* interleaved pairs rotated by pos[i] * inv_freq[j] (inv_freq computed on the host,
 * bit-identical to the CPU twin's) */
void vox_cuda_rope(float *x, const int32_t *pos, int M, int n_heads, int head_dim,
                   const vox_cuda_inv_freq *inv_freq, cudaStream_t st);
/* KV rings (here and in cuda/attention*.cu) hold elements of kv_type: VOX_CUDA_F32, or
 * VOX_CUDA_BF16 (stored rounded to nearest even, bit for bit as the CPU twin; read
 * widened to fp32). kv_store / rope_kv_store take any other value as F32. */
/* rope(q, n_heads) and rope(k, n_kv_heads) in place, then kv_store(k, v): one launch */
void vox_cuda_rope_kv_store(float *q, float *k, const float *v, void *kc, void *vc, int kv_type,
                            const int32_t *pos, int M, int n_heads, int n_kv_heads, int head_dim,
                            const vox_cuda_inv_freq *inv_freq, int cap, const int32_t *slot,
                            cudaStream_t st);
void vox_cuda_kv_store(void *kc, void *vc, int kv_type, const float *k, const float *v,
                       const int32_t *pos, int M, int kv_dim, int cap, const int32_t *slot,
                       cudaStream_t st);
/* x[i] = emb[ids[i]] (rows of dtype wtype) + audio[pos[i] % acap] */
void vox_cuda_embed(float *x, const void *emb, int wtype, const int32_t *ids, const float *audio,
                    const int32_t *pos, int M, int D, int acap, const int32_t *slot,
                    cudaStream_t st);

/* ---- cuda/attention.cu (split), cuda/attention_rows.cu (rows) -------------------------
 * Causal sliding-window GQA over ring caches (see the backend table). Two kernels:
 * few rows: split over keys ("flash-decoding"), partials in `part` (floats),
 * combined by the last block of each (row, kv head), found through `tickets`
 * (n_tickets >= M * n_kv_heads ints, zero before the first call, left zero); the
 * grid does not depend on the positions, which the kernel reads on the device,
 * so a captured graph stays valid.
 * many rows: query tiles with key tiles in shared memory, online softmax.
 * Fast paths for head_dim 32, 64, 128 (and q heads per kv head 1, 2, 4); any other
 * shape takes a simple generic kernel (one block per row and head, head_dim <= 256).
 * Both return 0, or -1 for a shape nothing handles (or a kv_type not F32 / BF16).
 * rope != NULL (the split kernel's fused form, one new key per row: M = 1 or rows
 * that are streams): q, knew, vnew are the rows' fresh projections, not rotated;
 * the kernel rotates q and knew (as vox_cuda_rope_kv_store) and stores knew, vnew
 * in the rings before using them (as the rings give them back: BF16 rounded); -1 (nothing launched) where the fast path does
 * not apply, for the caller to run rope_kv_store and attention instead. */
int vox_cuda_attention_split(float *out, const float *q, const void *kc, const void *vc,
                             int kv_type, const int32_t *pos, int M, int n_heads, int n_kv_heads,
                             int head_dim, int cap, int window, const int32_t *slot, const float *knew,
                             const float *vnew, const vox_cuda_inv_freq *rope, float *part,
                             int64_t part_floats, int *tickets, int n_tickets, int n_sm,
                             cudaStream_t st);
/* Many rows (M > SPLIT_MAX_ROWS): query tiles over shared-memory key tiles; slot NULL
 * (one ring) or a slot per row (several streams' rows, each stream's consecutive). */
int vox_cuda_attention_rows(float *out, const float *q, const void *kc, const void *vc,
                             int kv_type, const int32_t *pos, const int32_t *slot, int M, int n_heads,
                             int n_kv_heads, int head_dim, int cap, int window, cudaStream_t st);

#ifdef __cplusplus
}
#endif

#ifdef __CUDACC__
/* waits until the preceding kernel has completed and its writes are visible
 * (a no-op for a plain launch) */
__device__ __forceinline__ void pdl_wait() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
    asm volatile("griddepcontrol.wait;" ::: "memory");
#endif
}
/* lets the next kernel's blocks be scheduled (they wait in their own pdl_wait) */
__device__ __forceinline__ void pdl_trigger() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
    asm volatile("griddepcontrol.launch_dependents;" ::);
#endif
}
/* kernel<<<grid, block, smem, st>>>(args...), with the programmatic-serialisation
 * attribute when vox_cuda_pdl has the kernel's family. Errors surface in
 * cudaGetLastError(). */
template <typename... KArgs, typename... Args>
static inline void vox_launch(int family, void (*kernel)(KArgs...), dim3 grid, dim3 block, size_t smem,
                              cudaStream_t st, Args... args) {
    cudaLaunchConfig_t cfg = {};
    cudaLaunchAttribute attr[1];
    attr[0].id = cudaLaunchAttributeProgrammaticStreamSerialization;
    attr[0].val.programmaticStreamSerializationAllowed = 1;
    cfg.gridDim = grid;
    cfg.blockDim = block;
    cfg.dynamicSmemBytes = smem;
    cfg.stream = st;
    cfg.attrs = attr;
    cfg.numAttrs = (vox_cuda_pdl & family) ? 1 : 0;
    cudaLaunchKernelEx(&cfg, kernel, static_cast<KArgs>(args)...);
}
#endif
#endif
