/* cuda/norm_rope.cu - per-row ops around attention: RMSNorm (fp32 out, or BF16
 * for the GEMM input of norm_linear), interleaved RoPE, the KV ring store, RoPE +
 * store fused (rope_kv_store) and the decoder input embedding (BF16, F16 or F32
 * rows, cuda/weights.cuh). The ring stores take rings of fp32 or BF16 elements
 * (cuda/kv.cuh: rounded to nearest even as the CPU twin does). Positions and token ids are read from device memory,
 * so a captured decoder-step graph replays correctly after the host uploads new ones.
 * CPU twins: cpu_rmsnorm, cpu_rope, cpu_kv_store, cpu_rope_attention's first half, cpu_embed,
 * cpu_norm_linear's norm (voxtral_kernels.c).
 */
#include <cuda_bf16.h>

#include "kv.cuh"
#include "weights.cuh"

enum { NORM_THREADS = 256 };

/* Sum of squares in double, as the CPU twin, so both round the same scale. */
__device__ __forceinline__ void store(float *p, float v) { *p = v; }
__device__ __forceinline__ void store(__nv_bfloat16 *p, float v) { *p = __float2bfloat16_rn(v); }

template <typename T>
__global__ void __launch_bounds__(NORM_THREADS)
rmsnorm_kernel(T *y, const float *x, const float *w, const float *scale, int D, float eps) {
    __shared__ double part[NORM_THREADS / 32];
    __shared__ float r_s;
    const float *xi = x + (int64_t)blockIdx.x * D;
    T *yi = y + (int64_t)blockIdx.x * D;
    double ss = 0;
    for (int d = threadIdx.x; d < D; d += blockDim.x) ss += (double)xi[d] * xi[d];
    for (int o = 16; o > 0; o >>= 1) ss += __shfl_xor_sync(0xffffffffu, ss, o);
    if ((threadIdx.x & 31) == 0) part[threadIdx.x >> 5] = ss;
    __syncthreads();
    if (threadIdx.x == 0) {
        double t = 0;
        for (int i = 0; i < NORM_THREADS / 32; i++) t += part[i];
        r_s = (float)(1.0 / sqrt(t / D + eps));
    }
    __syncthreads();
    const float r = r_s;
    for (int d = threadIdx.x; d < D; d += blockDim.x) {
        float v = w[d] * (xi[d] * r);
        store(yi + d, scale ? v * scale[d] : v);
    }
}

extern "C" void vox_cuda_rmsnorm(float *y, const float *x, const float *w, const float *scale,
                                 int M, int D, float eps, cudaStream_t st) {
    rmsnorm_kernel<float><<<M, NORM_THREADS, 0, st>>>(y, x, w, scale, D, eps);
}

extern "C" void vox_cuda_rmsnorm_bf16(uint16_t *y, const float *x, const float *w,
                                      const float *scale, int M, int D, float eps,
                                      cudaStream_t st) {
    rmsnorm_kernel<__nv_bfloat16><<<M, NORM_THREADS, 0, st>>>((__nv_bfloat16 *)y, x, w, scale, D, eps);
}

/* one thread per (row, pair j, head) */
__global__ void rope_kernel(float *x, const int32_t *pos, int M, int n_heads, int head_dim,
                            vox_cuda_inv_freq inv_freq) {
    const int half = head_dim / 2;
    int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= (int64_t)M * n_heads * half) return;
    int j = (int)(i % half);
    int64_t mh = i / half; /* row * n_heads + head */
    int m = (int)(mh / n_heads);
    float ang = (float)pos[m] * inv_freq.f[j];
    float c = cosf(ang), s = sinf(ang);
    float2 *v = reinterpret_cast<float2 *>(x + mh * head_dim) + j;
    float2 ab = *v;
    *v = make_float2(ab.x * c - ab.y * s, ab.y * c + ab.x * s);
}

extern "C" void vox_cuda_rope(float *x, const int32_t *pos, int M, int n_heads, int head_dim,
                              const vox_cuda_inv_freq *inv_freq, cudaStream_t st) {
    int64_t n = (int64_t)M * n_heads * (head_dim / 2);
    if (n <= 0) return;
    rope_kernel<<<(unsigned)((n + 255) / 256), 256, 0, st>>>(x, pos, M, n_heads, head_dim, *inv_freq);
}

/* one thread per (row, head of q then k, pair j), then one per float2 of v */
template <typename KV>
__global__ void rope_kv_store_kernel(float *q, float *k, const float *v, KV *kc, KV *vc,
                                     const int32_t *pos, int M, int n_heads, int n_kv_heads,
                                     int head_dim, vox_cuda_inv_freq inv_freq, int cap,
                                     const int32_t *slot) {
    pdl_wait();
    pdl_trigger();
    const int half = head_dim / 2, nh = n_heads + n_kv_heads, kv_dim = n_kv_heads * head_dim;
    const int64_t n_rope = (int64_t)M * nh * half;
    int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (i < n_rope) {
        int j = (int)(i % half);
        int64_t t = i / half;
        int h = (int)(t % nh), m = (int)(t / nh);
        float ang = (float)pos[m] * inv_freq.f[j];
        float c = cosf(ang), s = sinf(ang);
        float2 *p = h < n_heads
                        ? reinterpret_cast<float2 *>(q + ((int64_t)m * n_heads + h) * head_dim) + j
                        : reinterpret_cast<float2 *>(k + (int64_t)m * kv_dim + (h - n_heads) * head_dim) + j;
        float2 ab = *p;
        float2 r = make_float2(ab.x * c - ab.y * s, ab.y * c + ab.x * s);
        *p = r;
        if (h >= n_heads) {
            int64_t base = slot ? (int64_t)slot[m] * cap * kv_dim : 0;
            int64_t at = base + (int64_t)(pos[m] % cap) * kv_dim + (h - n_heads) * head_dim + 2 * j;
            kv_put2(kc + at, r);
        }
        return;
    }
    i -= n_rope;
    if (i >= (int64_t)M * kv_dim / 2) return;
    int64_t e2 = 2 * i;
    int m = (int)(e2 / kv_dim), e = (int)(e2 - (int64_t)m * kv_dim);
    int64_t base = slot ? (int64_t)slot[m] * cap * kv_dim : 0;
    int64_t at = base + (int64_t)(pos[m] % cap) * kv_dim + e;
    kv_put2(vc + at, *reinterpret_cast<const float2 *>(v + e2));
}

extern "C" void vox_cuda_rope_kv_store(float *q, float *k, const float *v, void *kc, void *vc,
                                       int kv_type, const int32_t *pos, int M, int n_heads,
                                       int n_kv_heads, int head_dim,
                                       const vox_cuda_inv_freq *inv_freq, int cap,
                                       const int32_t *slot, cudaStream_t st) {
    int64_t n = (int64_t)M * (n_heads + n_kv_heads) * (head_dim / 2) +
                (int64_t)M * n_kv_heads * head_dim / 2;
    if (n <= 0) return;
    const unsigned blocks = (unsigned)((n + 255) / 256);
    if (kv_type == VOX_CUDA_BF16)
        vox_launch(VOX_PDL_ROPE, rope_kv_store_kernel<kv_bf16>, blocks, 256, 0, st, q, k, v,
                   (kv_bf16 *)kc, (kv_bf16 *)vc, pos, M, n_heads, n_kv_heads, head_dim, *inv_freq,
                   cap, slot);
    else
        vox_launch(VOX_PDL_ROPE, rope_kv_store_kernel<float>, blocks, 256, 0, st, q, k, v,
                   (float *)kc, (float *)vc, pos, M, n_heads, n_kv_heads, head_dim, *inv_freq, cap,
                   slot);
}

template <typename KV>
__global__ void kv_store_kernel(KV *kc, KV *vc, const float *k, const float *v,
                                const int32_t *pos, int M, int kv_dim, int cap,
                                const int32_t *slot) {
    int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= (int64_t)M * kv_dim) return;
    int m = (int)(i / kv_dim), e = (int)(i - (int64_t)m * kv_dim);
    int64_t base = slot ? (int64_t)slot[m] * cap * kv_dim : 0;
    int64_t at = base + (int64_t)(pos[m] % cap) * kv_dim + e;
    const float ki = k[i];
    kv_put(kc + at, ki);
    const float vi = v[i];
    kv_put(vc + at, vi);
}

extern "C" void vox_cuda_kv_store(void *kc, void *vc, int kv_type, const float *k, const float *v,
                                  const int32_t *pos, int M, int kv_dim, int cap,
                                  const int32_t *slot, cudaStream_t st) {
    int64_t n = (int64_t)M * kv_dim;
    if (n <= 0) return;
    const unsigned blocks = (unsigned)((n + 255) / 256);
    if (kv_type == VOX_CUDA_BF16)
        kv_store_kernel<<<blocks, 256, 0, st>>>((kv_bf16 *)kc, (kv_bf16 *)vc, k, v, pos, M, kv_dim,
                                                cap, slot);
    else
        kv_store_kernel<<<blocks, 256, 0, st>>>((float *)kc, (float *)vc, k, v, pos, M, kv_dim, cap,
                                                slot);
}

template <int WT>
__global__ void embed_kernel(float *x, const void *emb, const int32_t *ids, const float *audio,
                             const int32_t *pos, int M, int D, int acap, const int32_t *slot) {
    pdl_wait();
    pdl_trigger();
    int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= (int64_t)M * D) return;
    int m = (int)(i / D), d = (int)(i - (int64_t)m * D);
    const float *a = audio + (slot ? (int64_t)slot[m] * acap * D : 0) +
                     (int64_t)(pos[m] % acap) * D;
    x[i] = w_load1<WT>(emb, (int64_t)ids[m] * D + d) + a[d];
}

extern "C" void vox_cuda_embed(float *x, const void *emb, int wtype, const int32_t *ids,
                               const float *audio, const int32_t *pos, int M, int D, int acap,
                               const int32_t *slot, cudaStream_t st) {
    int64_t n = (int64_t)M * D;
    if (n <= 0) return;
    unsigned blocks = (unsigned)((n + 255) / 256);
    if (wtype == VOX_CUDA_F16)
        vox_launch(VOX_PDL_EMBED, embed_kernel<VOX_CUDA_F16>, blocks, 256, 0, st, x, emb, ids, audio, pos, M, D,
                   acap, slot);
    else if (wtype == VOX_CUDA_F32)
        vox_launch(VOX_PDL_EMBED, embed_kernel<VOX_CUDA_F32>, blocks, 256, 0, st, x, emb, ids, audio, pos, M, D,
                   acap, slot);
    else
        vox_launch(VOX_PDL_EMBED, embed_kernel<VOX_CUDA_BF16>, blocks, 256, 0, st, x, emb, ids, audio, pos, M, D,
                   acap, slot);
}
