/* cuda/gemv.cu - linear for few rows (decoder step M=1, short encoder chunks):
 * y[M][N] (= or +=) act(x[M][K] . W^T + b), W BF16 [N][K], x/y fp32, fp32 sums.
 * CPU twin: cpu_linear (voxtral_kernels.c), its "few rows" branch.
 *
 * Memory-bound: every weight byte is read once from HBM with 16-byte streaming
 * loads (8 BF16 each), several in flight per lane before the first use. A warp
 * owns a slice of one weight row (ksplit warps share a row when N alone would
 * not fill the GPU); the x rows are small and stay in L1/L2.
 */
#include "voxtral_cuda.h"

enum { GEMV_THREADS = 256, GEMV_WARPS = GEMV_THREADS / 32, GEMV_UNROLL = 4 };

__device__ __forceinline__ float gelu_erf(float x) {
    return 0.5f * x * (1.0f + erff(x * 0.70710678118654752f));
}

__device__ __forceinline__ float dot8(uint4 w, float4 a, float4 b) {
    /* a BF16 is the top half of an fp32: widening is a shift */
    float s = __uint_as_float(w.x << 16) * a.x;
    s = fmaf(__uint_as_float(w.x & 0xffff0000u), a.y, s);
    s = fmaf(__uint_as_float(w.y << 16), a.z, s);
    s = fmaf(__uint_as_float(w.y & 0xffff0000u), a.w, s);
    s = fmaf(__uint_as_float(w.z << 16), b.x, s);
    s = fmaf(__uint_as_float(w.z & 0xffff0000u), b.y, s);
    s = fmaf(__uint_as_float(w.w << 16), b.z, s);
    s = fmaf(__uint_as_float(w.w & 0xffff0000u), b.w, s);
    return s;
}

/* MT: rows of x per pass (M > MT loops, re-reading the weight row from cache). */
template <int MT>
__global__ void __launch_bounds__(GEMV_THREADS)
gemv_kernel(float *__restrict__ y, const float *__restrict__ x, const uint16_t *__restrict__ W,
            const float *__restrict__ b, int M, int N, int K, int act, int accumulate, int ksplit) {
    __shared__ float red[GEMV_WARPS][MT];
    const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
    const int rows_per_block = GEMV_WARPS / ksplit;
    const int row = blockIdx.x * rows_per_block + warp / ksplit;
    const int part = warp % ksplit;
    const int K8 = K >> 3, stride = 32 * ksplit;
    const uint4 *wrow = reinterpret_cast<const uint4 *>(W + (int64_t)(row < N ? row : 0) * K);
    const int c_first = part * 32 + lane;

    for (int m0 = 0; m0 < M; m0 += MT) {
        float acc[MT];
#pragma unroll
        for (int m = 0; m < MT; m++) acc[m] = 0.0f;
        if (row < N) {
            for (int c0 = c_first; c0 < K8; c0 += GEMV_UNROLL * stride) {
                uint4 w[GEMV_UNROLL];
#pragma unroll
                for (int u = 0; u < GEMV_UNROLL; u++) {
                    int c = c0 + u * stride;
                    w[u] = c < K8 ? __ldcs(wrow + c) : make_uint4(0, 0, 0, 0);
                }
#pragma unroll
                for (int u = 0; u < GEMV_UNROLL; u++) {
                    int c = c0 + u * stride;
                    if (c >= K8) break;
#pragma unroll
                    for (int m = 0; m < MT; m++) {
                        if (m0 + m < M) {
                            const float4 *xr =
                                reinterpret_cast<const float4 *>(x + (int64_t)(m0 + m) * K) + 2 * c;
                            acc[m] += dot8(w[u], __ldg(xr), __ldg(xr + 1));
                        }
                    }
                }
            }
        }
#pragma unroll
        for (int m = 0; m < MT; m++) {
            float v = acc[m];
#pragma unroll
            for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
            if (lane == 0) red[warp][m] = v;
        }
        __syncthreads();
        int t = threadIdx.x;
        if (t < rows_per_block * MT) {
            int r = t / MT, m = t % MT;
            int n = blockIdx.x * rows_per_block + r;
            if (n < N && m0 + m < M) {
                float s = 0.0f;
                for (int p = 0; p < ksplit; p++) s += red[r * ksplit + p][m];
                if (b) s += b[n];
                if (act == 1) s = gelu_erf(s);
                float *o = y + (int64_t)(m0 + m) * N + n;
                *o = accumulate ? *o + s : s;
            }
        }
        __syncthreads();
    }
}

extern "C" void vox_cuda_gemv(float *y, const float *x, const uint16_t *W, const float *b, int M,
                              int N, int K, int act, int accumulate, int n_sm, cudaStream_t st) {
    /* split rows over more warps while the grid is small, keeping >= 2 loads per lane */
    int ksplit = 1;
    const int K8 = K / 8;
    while (ksplit < GEMV_WARPS && (int64_t)N * ksplit < (int64_t)n_sm * 32 &&
           K8 / (ksplit * 2 * 32) >= 2)
        ksplit *= 2;
    int rows_per_block = GEMV_WARPS / ksplit;
    dim3 grid((N + rows_per_block - 1) / rows_per_block);
    if (M == 1)
        gemv_kernel<1><<<grid, GEMV_THREADS, 0, st>>>(y, x, W, b, M, N, K, act, accumulate, ksplit);
    else if (M == 2)
        gemv_kernel<2><<<grid, GEMV_THREADS, 0, st>>>(y, x, W, b, M, N, K, act, accumulate, ksplit);
    else if (M <= 4)
        gemv_kernel<4><<<grid, GEMV_THREADS, 0, st>>>(y, x, W, b, M, N, K, act, accumulate, ksplit);
    else
        gemv_kernel<8><<<grid, GEMV_THREADS, 0, st>>>(y, x, W, b, M, N, K, act, accumulate, ksplit);
}
