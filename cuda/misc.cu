/* cuda/misc.cu - the small ops: fp32 -> BF16 or scaled FP16 (cuBLASLt inputs),
 * BF16 -> FP16 / FP32 (weight upload), exact GELU, SwiGLU (fp32, or BF16 for the
 * GEMM input of swiglu_linear), argmax and top-k over the vocabulary (the conv stem's
 * im2col: cuda/stem.cu).
 * CPU twins: cpu_swiglu, cpu_argmax, cpu_topk (voxtral_kernels.c).
 */
#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include "voxtral_cuda.h"

static unsigned blocks_for(int64_t n, int threads) {
    int64_t b = (n + threads - 1) / threads;
    return (unsigned)(b < 1 ? 1 : b);
}

__global__ void f32_to_bf16_kernel(__nv_bfloat16 *dst, const float *src, int64_t n) {
    int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (i < n) dst[i] = __float2bfloat16_rn(src[i]);
}

extern "C" void vox_cuda_f32_to_bf16(uint16_t *dst, const float *src, int64_t n, cudaStream_t st) {
    f32_to_bf16_kernel<<<blocks_for(n, 256), 256, 0, st>>>((__nv_bfloat16 *)dst, src, n);
}

/* ---- scaled FP16 GEMM input: max |x| first, then x * 2^k rounded to FP16 ---------- */
enum { AMAX_THREADS = 256, AMAX_BLOCKS_PER_SM = 4 };

/* |x| of non-negative floats orders as their bits: atomicMax on the bits (NaN, whose
 * bits are above inf's, wins and turns the scale off) */
__global__ void __launch_bounds__(AMAX_THREADS) amax_kernel(const float *x, int64_t n, unsigned *amax) {
    __shared__ unsigned red[AMAX_THREADS / 32];
    unsigned m = 0;
    for (int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += (int64_t)gridDim.x * blockDim.x)
        m = max(m, __float_as_uint(fabsf(x[i])));
    for (int o = 16; o > 0; o >>= 1) m = max(m, __shfl_xor_sync(0xffffffffu, m, o));
    if ((threadIdx.x & 31) == 0) red[threadIdx.x >> 5] = m;
    __syncthreads();
    if (threadIdx.x == 0) {
        for (int i = 1; i < AMAX_THREADS / 32; i++) m = max(m, red[i]);
        atomicMax(amax, m);
    }
}

__device__ __forceinline__ float f16_scale(unsigned amax_bits) {
    float a = __uint_as_float(amax_bits);
    if (!(a > 0.0f) || !isfinite(a)) return 1.0f;
    int e;
    frexpf(a, &e); /* a in [2^(e-1), 2^e) */
    return ldexpf(1.0f, min(max(15 - e, -100), 100));
}

__global__ void f32_to_f16_scaled_kernel(__half *dst, const float *src, int64_t n,
                                         const unsigned *amax, float *alpha) {
    const float s = f16_scale(*amax);
    int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (i == 0) *alpha = 1.0f / s; /* a power of two: exact */
    if (i < n) dst[i] = __float2half_rn(src[i] * s);
}

extern "C" void vox_cuda_f32_to_f16_scaled(uint16_t *dst, const float *src, int64_t n,
                                           unsigned *amax, float *alpha, int n_sm, cudaStream_t st) {
    unsigned blocks = blocks_for(n, AMAX_THREADS);
    if (blocks > (unsigned)(n_sm * AMAX_BLOCKS_PER_SM)) blocks = n_sm * AMAX_BLOCKS_PER_SM;
    cudaMemsetAsync(amax, 0, sizeof(unsigned), st); /* an error here shows in cudaGetLastError() */
    amax_kernel<<<blocks, AMAX_THREADS, 0, st>>>(src, n, amax);
    f32_to_f16_scaled_kernel<<<blocks_for(n, 256), 256, 0, st>>>((__half *)dst, src, n, amax, alpha);
}

/* ---- weight upload: BF16 -> F16 or F32 --------------------------------------------- */
__global__ void bf16_to_f16_kernel(__half *dst, const uint16_t *src, int64_t n) {
    int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (i < n) dst[i] = __float2half_rn(__uint_as_float((unsigned)src[i] << 16));
}

__global__ void bf16_to_f32_kernel(float *dst, const uint16_t *src, int64_t n) {
    int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (i < n) dst[i] = __uint_as_float((unsigned)src[i] << 16);
}

extern "C" void vox_cuda_convert_bf16(void *dst, int wtype, const uint16_t *src, int64_t n,
                                      cudaStream_t st) {
    if (n <= 0) return;
    if (wtype == VOX_CUDA_F16)
        bf16_to_f16_kernel<<<blocks_for(n, 256), 256, 0, st>>>((__half *)dst, src, n);
    else
        bf16_to_f32_kernel<<<blocks_for(n, 256), 256, 0, st>>>((float *)dst, src, n);
}

/* A binary built without SASS or PTX for this device (CUDA 13 builds and sm_6x/7.0)
 * fails every launch: asking for a kernel's attributes says so up front. */
extern "C" cudaError_t vox_cuda_probe_kernels(void) {
    cudaFuncAttributes fa;
    return cudaFuncGetAttributes(&fa, bf16_to_f32_kernel);
}

__global__ void gelu_kernel(float *y, int64_t n) {
    int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (i < n) {
        float v = y[i];
        y[i] = 0.5f * v * (1.0f + erff(v * 0.70710678118654752f));
    }
}

extern "C" void vox_cuda_gelu(float *y, int64_t n, cudaStream_t st) {
    gelu_kernel<<<blocks_for(n, 256), 256, 0, st>>>(y, n);
}

__global__ void swiglu_kernel(float *h, const float *g, const float *u, int64_t n) {
    int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (i < n) {
        float gv = g[i];
        h[i] = gv / (1.0f + expf(-gv)) * u[i];
    }
}

extern "C" void vox_cuda_swiglu(float *h, const float *g, const float *u, int64_t n,
                                cudaStream_t st) {
    swiglu_kernel<<<blocks_for(n, 256), 256, 0, st>>>(h, g, u, n);
}

__global__ void swiglu_bf16_kernel(__nv_bfloat16 *h, const float *g, const float *u, int64_t n) {
    int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (i < n) {
        float gv = g[i];
        h[i] = __float2bfloat16_rn(gv / (1.0f + expf(-gv)) * u[i]);
    }
}

extern "C" void vox_cuda_swiglu_bf16(uint16_t *h, const float *g, const float *u, int64_t n,
                                     cudaStream_t st) {
    swiglu_bf16_kernel<<<blocks_for(n, 256), 256, 0, st>>>((__nv_bfloat16 *)h, g, u, n);
}

/* ---- argmax: one block per row; ties keep the lowest index --------------------- */
enum { ARGMAX_THREADS = 1024 };

__device__ __forceinline__ void better(float &v, int &i, float v2, int i2) {
    if (v2 > v || (v2 == v && i2 < i)) {
        v = v2;
        i = i2;
    }
}

__global__ void __launch_bounds__(ARGMAX_THREADS) argmax_kernel(int32_t *ids, const float *logits, int V) {
    __shared__ float sv[32];
    __shared__ int si[32];
    pdl_wait();
    pdl_trigger();
    const float *l = logits + (int64_t)blockIdx.x * V;
    float bv = -INFINITY;
    int bi = 0x7fffffff;
    for (int j = threadIdx.x; j < V; j += blockDim.x) better(bv, bi, l[j], j);
    for (int o = 16; o > 0; o >>= 1) {
        float v2 = __shfl_xor_sync(0xffffffffu, bv, o);
        int i2 = __shfl_xor_sync(0xffffffffu, bi, o);
        better(bv, bi, v2, i2);
    }
    int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
    if (lane == 0) {
        sv[warp] = bv;
        si[warp] = bi;
    }
    __syncthreads();
    if (warp == 0) {
        int nw = blockDim.x >> 5;
        bv = lane < nw ? sv[lane] : -INFINITY;
        bi = lane < nw ? si[lane] : 0x7fffffff;
        for (int o = 16; o > 0; o >>= 1) {
            float v2 = __shfl_xor_sync(0xffffffffu, bv, o);
            int i2 = __shfl_xor_sync(0xffffffffu, bi, o);
            better(bv, bi, v2, i2);
        }
        /* an all -inf (or NaN) row: the CPU twin answers 0 */
        if (lane == 0) ids[blockIdx.x] = bi == 0x7fffffff ? 0 : bi;
    }
}

extern "C" void vox_cuda_argmax(int32_t *ids, const float *logits, int M, int V, cudaStream_t st) {
    vox_launch(VOX_PDL_PICK, argmax_kernel, M, ARGMAX_THREADS, 0, st, ids, logits, V);
}

/* ---- top-k: exact radix select of the k-th largest (value, -id) key, then a
 * bitonic sort of the k winners. One block per row; k <= TOPK_MAX. ---------- */
enum { TOPK_THREADS = 1024, TOPK_MAX = 1024 };

/* larger key = ranks first: value descending, then id ascending; -0 == +0 as in C */
__device__ __forceinline__ unsigned long long topk_key(float v, int j) {
    unsigned u = __float_as_uint(v == 0.0f ? 0.0f : v);
    u ^= (u >> 31) ? 0xffffffffu : 0x80000000u;
    return ((unsigned long long)u << 32) | (unsigned)(~(unsigned)j);
}

__global__ void __launch_bounds__(TOPK_THREADS)
topk_kernel(int32_t *ids, float *vals, const float *logits, int V, int k) {
    __shared__ unsigned hist[256];
    __shared__ unsigned long long prefix_s;
    __shared__ unsigned remaining_s;
    __shared__ unsigned count_s;
    __shared__ unsigned long long sel[TOPK_MAX];
    pdl_wait();
    pdl_trigger();
    const float *l = logits + (int64_t)blockIdx.x * V;
    const int tid = threadIdx.x;
    unsigned long long prefix = 0, mask = 0;
    unsigned remaining = (unsigned)k;
    for (int shift = 56; shift >= 0; shift -= 8) {
        if (tid < 256) hist[tid] = 0;
        __syncthreads();
        for (int j0 = 0; j0 < V; j0 += blockDim.x) {
            int j = j0 + tid;
            bool in = false;
            unsigned d = 0;
            if (j < V) {
                unsigned long long key = topk_key(l[j], j);
                in = (key & mask) == prefix;
                d = (unsigned)(key >> shift) & 255u;
            }
#if __CUDA_ARCH__ >= 700
            /* aggregate equal digits within the warp: few atomics on skewed data */
            unsigned active = __ballot_sync(0xffffffffu, in);
            if (in) {
                unsigned same = __match_any_sync(active, d);
                if ((tid & 31) == __ffs(same) - 1) atomicAdd(&hist[d], __popc(same));
            }
#else
            if (in) atomicAdd(&hist[d], 1u); /* no __match_any_sync before sm_70 */
#endif
        }
        __syncthreads();
        if (tid == 0) {
            unsigned above = 0;
            int d = 255;
            for (; d > 0; d--) {
                if (above + hist[d] >= remaining) break;
                above += hist[d];
            }
            remaining_s = remaining - above;
            prefix_s = prefix | ((unsigned long long)d << shift);
        }
        __syncthreads();
        remaining = remaining_s;
        prefix = prefix_s;
        mask |= 255ull << shift;
        __syncthreads();
    }
    /* prefix is now the k-th largest key: exactly k keys are >= it */
    if (tid == 0) count_s = 0;
    for (int i = tid; i < TOPK_MAX; i += blockDim.x) sel[i] = 0;
    __syncthreads();
    for (int j = tid; j < V; j += blockDim.x) {
        unsigned long long key = topk_key(l[j], j);
        if (key >= prefix) {
            unsigned at = atomicAdd(&count_s, 1u);
            if (at < TOPK_MAX) sel[at] = key;
        }
    }
    __syncthreads();
    /* bitonic sort, descending */
    for (int size = 2; size <= TOPK_MAX; size <<= 1) {
        for (int stride = size >> 1; stride > 0; stride >>= 1) {
            for (int i = tid; i < TOPK_MAX; i += blockDim.x) {
                int p = i ^ stride;
                if (p > i) {
                    bool desc = (i & size) == 0;
                    unsigned long long a = sel[i], b = sel[p];
                    if (desc ? a < b : a > b) {
                        sel[i] = b;
                        sel[p] = a;
                    }
                }
            }
            __syncthreads();
        }
    }
    for (int i = tid; i < k; i += blockDim.x) {
        int j = (int)(~(unsigned)(sel[i] & 0xffffffffu));
        ids[(int64_t)blockIdx.x * k + i] = j;
        vals[(int64_t)blockIdx.x * k + i] = l[j];
    }
}

extern "C" void vox_cuda_topk(int32_t *ids, float *vals, const float *logits, int M, int V, int k,
                              cudaStream_t st) {
    if (k <= 0) return;
    if (k > TOPK_MAX) k = TOPK_MAX;
    vox_launch(VOX_PDL_PICK, topk_kernel, M, TOPK_THREADS, 0, st, ids, vals, logits, V, k);
}
