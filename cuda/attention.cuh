/* cuda/attention.cuh - what the attention kernels share (cuda/attention.cu: split over
 * keys, the decoder step; cuda/attention_rows.cu: rows over keys, many rows): the
 * first key a row sees, the warp sum, and attention_generic, the fallback of both for
 * shapes their fast kernels do not take (each file that includes this compiles its own
 * copy of that kernel). CPU twin: cpu_attention (voxtral_kernels.c). Row i (query
 * position p = pos[i], read on the device) sees keys j with
 * max(0, p - window + 1, p - cap + 1) <= j <= p, key j living in ring slot j % cap.
 *
 * attention_generic (any head_dim <= 256, any group size: the tiny test models):
 * one block per (row, head), two passes over the keys (max, then exp-weighted sum).
 * Correct and simple; not tuned.
 */
#ifndef VOXTRAL_CUDA_ATTENTION_CUH
#define VOXTRAL_CUDA_ATTENTION_CUH

#include <math.h>

#include "voxtral_cuda.h"
#include "kv.cuh"

__device__ __forceinline__ int first_key(int p, int window, int cap) {
    int lo = p - window + 1;
    if (lo < 0) lo = 0;
    if (lo < p - cap + 1) lo = p - cap + 1;
    return lo;
}

/* DPL = head_dim / 32 values per lane, loaded by kv_load_vec (cuda/kv.cuh) */
__device__ __forceinline__ float warp_sum(float v) {
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
    return v;
}

/* ---- generic: any head_dim <= GEN_THREADS ------------------------------------------ */
enum { GEN_THREADS = 256 };

__device__ __forceinline__ float block_max(float v, float *red) {
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o));
    if ((threadIdx.x & 31) == 0) red[threadIdx.x >> 5] = v;
    __syncthreads();
    v = red[0];
    for (int w = 1; w < GEN_THREADS / 32; w++) v = fmaxf(v, red[w]);
    return v;
}

/* grid (n_heads, M); dynamic shared memory: head_dim + GEN_THREADS floats */
template <typename KV>
__global__ void __launch_bounds__(GEN_THREADS)
attn_generic_kernel(float *out, const float *q, const KV *kc, const KV *vc,
                    const int32_t *pos, int n_heads, int n_kv_heads, int head_dim, int cap,
                    int window, const int32_t *slot) {
    extern __shared__ float sh[];
    __shared__ float red[GEN_THREADS / 32];
    pdl_wait();
    pdl_trigger();
    const int h = blockIdx.x, i = blockIdx.y, tid = threadIdx.x;
    const int kv_dim = n_kv_heads * head_dim;
    const int64_t koff = (slot ? (int64_t)slot[i] * cap * kv_dim : 0) +
                         (int64_t)(h / (n_heads / n_kv_heads)) * head_dim;
    const int p = pos[i], lo = first_key(p, window, cap), n = p - lo + 1;
    const float scale = 1.0f / sqrtf((float)head_dim);
    float *qs = sh, *es = sh + head_dim;
    for (int d = tid; d < head_dim; d += GEN_THREADS) qs[d] = q[((int64_t)i * n_heads + h) * head_dim + d];
    __syncthreads();
    auto score = [&](int j) {
        const KV *kj = kc + koff + (int64_t)(j % cap) * kv_dim;
        float s = 0.0f;
        for (int d = 0; d < head_dim; d++) s += qs[d] * kv_get(kj + d);
        return s * scale;
    };
    float mx = -INFINITY;
    for (int t = tid; t < n; t += GEN_THREADS) mx = fmaxf(mx, score(lo + t));
    mx = block_max(mx, red);
    float acc = 0.0f, L = 0.0f; /* thread d < head_dim owns out[d] */
    for (int j0 = 0; j0 < n; j0 += GEN_THREADS) {
        es[tid] = j0 + tid < n ? expf(score(lo + j0 + tid) - mx) : 0.0f;
        __syncthreads();
        const int cnt = n - j0 < GEN_THREADS ? n - j0 : GEN_THREADS;
        if (tid < head_dim)
            for (int u = 0; u < cnt; u++) {
                L += es[u];
                acc += es[u] * kv_get(vc + koff + (int64_t)((lo + j0 + u) % cap) * kv_dim + tid);
            }
        __syncthreads();
    }
    if (tid < head_dim) out[((int64_t)i * n_heads + h) * head_dim + tid] = acc / L;
}

template <typename KV>
static int attention_generic(float *out, const float *q, const KV *kc, const KV *vc,
                             const int32_t *pos, int M, int n_heads, int n_kv_heads, int head_dim,
                             int cap, int window, const int32_t *slot, cudaStream_t st) {
    if (head_dim < 1 || head_dim > GEN_THREADS) return -1;
    vox_launch(VOX_PDL_ATTN, attn_generic_kernel<KV>, dim3(n_heads, M), GEN_THREADS,
               sizeof(float) * (head_dim + GEN_THREADS), st, out, q, kc, vc, pos, n_heads,
               n_kv_heads, head_dim, cap, window, slot);
    return 0;
}

#endif
