/* voxtral_cuda.h - what voxtral_cuda.c (host side of the CUDA backend) and the
 * kernels (cuda/<family>.cu) share: the error-check macros and the kernel launchers.
 *
 * Launchers only enqueue on the stream they are given; they never synchronise
 * and never allocate, so every one of them may be captured into a CUDA graph.
 * Shapes and dtypes follow the CPU twins in voxtral_kernels.c: activations fp32
 * row-major, weights BF16 [out][in] (passed as uint16_t bits), positions int32.
 */
#ifndef VOXTRAL_CUDA_H
#define VOXTRAL_CUDA_H

#include <stdint.h>
#include <cuda_runtime.h>

#ifdef __cplusplus
extern "C" {
#endif

/* ---- errors ------------------------------------------------------------------
 * A failed CUDA / cuBLAS call records "file:line: statement: reason" (through
 * vox_error) and sets the backend's sticky error flag, which sync() and
 * download() report. Ops are void: they never exit and never synchronise. */
void vox_cuda_fail(const char *file, int line, const char *stmt, const char *why);

#define CUDA_CHECK(stmt)                                                          \
    do {                                                                          \
        cudaError_t err_ = (stmt);                                                \
        if (err_ != cudaSuccess) vox_cuda_fail(__FILE__, __LINE__, #stmt, cudaGetErrorString(err_)); \
    } while (0)

#define CUBLAS_CHECK(stmt)                                                        \
    do {                                                                          \
        cublasStatus_t st_ = (stmt);                                              \
        if (st_ != CUBLAS_STATUS_SUCCESS) vox_cuda_fail(__FILE__, __LINE__, #stmt, cublasLtGetStatusString(st_)); \
    } while (0)

/* ---- cuda/gemv.cu --------------------------------------------------------------
 * y[M][N] (= or +=) act(x[M][K] . W^T + b), W BF16 [N][K], fp32 accumulation.
 * Memory-bound path for few rows. Needs K % 8 == 0 and x 16-byte aligned.
 * act: 0 none, 1 exact (erf) GELU. b may be NULL. */
void vox_cuda_gemv(float *y, const float *x, const uint16_t *W, const float *b, int M, int N,
                   int K, int act, int accumulate, int n_sm, cudaStream_t st);

/* ---- cuda/misc.cu -------------------------------------------------------------- */
void vox_cuda_f32_to_bf16(uint16_t *dst, const float *src, int64_t n, cudaStream_t st);
void vox_cuda_gelu(float *y, int64_t n, cudaStream_t st);
/* h = silu(g) * u */
void vox_cuda_swiglu(float *h, const float *g, const float *u, int64_t n, cudaStream_t st);
/* cols[t][c*K + k] = x[t*stride + k][c] */
void vox_cuda_im2col(float *cols, const float *x, int T_out, int C, int K, int stride,
                     cudaStream_t st);
/* ids[i] = argmax_j logits[i][j], lowest j on ties */
void vox_cuda_argmax(int32_t *ids, const float *logits, int M, int V, cudaStream_t st);
/* the k (<= 1024) largest of each row, descending, lower id first on ties */
void vox_cuda_topk(int32_t *ids, float *vals, const float *logits, int M, int V, int k,
                   cudaStream_t st);

/* ---- cuda/norm_rope.cu ---------------------------------------------------------- */
/* y = x * rsqrt(mean(x^2) + eps) * w (* scale); y may be x */
void vox_cuda_rmsnorm(float *y, const float *x, const float *w, const float *scale, int M, int D,
                      float eps, cudaStream_t st);
enum { VOX_CUDA_ROPE_MAX_HALF = 128 };
typedef struct { float f[VOX_CUDA_ROPE_MAX_HALF]; } vox_cuda_inv_freq;
/* interleaved pairs rotated by pos[i] * inv_freq[j] (inv_freq computed on the host,
 * bit-identical to the CPU twin's) */
void vox_cuda_rope(float *x, const int32_t *pos, int M, int n_heads, int head_dim,
                   const vox_cuda_inv_freq *inv_freq, cudaStream_t st);
void vox_cuda_kv_store(float *kc, float *vc, const float *k, const float *v, const int32_t *pos,
                       int M, int kv_dim, int cap, int rows_are_streams, cudaStream_t st);
/* x[i] = emb[ids[i]] (BF16 rows) + audio[pos[i] % acap] */
void vox_cuda_embed(float *x, const uint16_t *emb, const int32_t *ids, const float *audio,
                    const int32_t *pos, int M, int D, int acap, int rows_are_streams,
                    cudaStream_t st);

/* ---- cuda/attention.cu ------------------------------------------------------------
 * Causal sliding-window GQA over ring caches (see the backend table). Two kernels:
 * few rows: split over keys ("flash-decoding"), partials in `part` (floats); the
 * grid does not depend on the positions, which the kernels read on the device,
 * so a captured graph stays valid.
 * many rows: query tiles with key tiles in shared memory, online softmax.
 * Both return 0, or -1 for a head_dim they do not handle (32, 64, 128 are). */
int vox_cuda_attention_split(float *out, const float *q, const float *kc, const float *vc,
                             const int32_t *pos, int M, int n_heads, int n_kv_heads, int head_dim,
                             int cap, int window, int rows_are_streams, float *part,
                             int64_t part_floats, int n_sm, cudaStream_t st);
int vox_cuda_attention_tiled(float *out, const float *q, const float *kc, const float *vc,
                             const int32_t *pos, int M, int n_heads, int n_kv_heads,
                             int head_dim, int cap, int window, cudaStream_t st);

#ifdef __cplusplus
}
#endif
#endif
