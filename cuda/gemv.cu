/* cuda/gemv.cu - linear for few rows (decoder step M=1, short encoder chunks):
 * y[M][N] (= or +=) act(x[M][K] . W^T + b), W [N][K] BF16, F16 or F32 (the GPU
 * path), x/y fp32, fp32 sums.
 * CPU twin: cpu_linear (voxtral_kernels.c), its "few rows" branch.
 * gemv1: the decoder step's M=1 GEMVs with their input stage fused in: up to three
 * weights in one launch (q/k/v, w1/w3), RMSNorm or SwiGLU of the input computed on
 * the fly. CPU twins: cpu_norm_linear, cpu_swiglu_linear, cpu_linear.
 *
 * Memory-bound: every weight byte is read once from HBM with 16-byte streaming
 * loads (8 BF16/F16 each, or 4 F32), several in flight per lane before the first
 * use. A warp owns a slice of one weight row (ksplit warps share a row when N alone
 * would not fill the GPU); the x rows are small and stay in L1/L2. Kernels are
 * templated on the weight dtype (cuda/weights.cuh); one launch reads one dtype.
 */
#include "weights.cuh"

enum { GEMV_THREADS = 256, GEMV_WARPS = GEMV_THREADS / 32 };

__device__ __forceinline__ float gelu_erf(float x) {
    return 0.5f * x * (1.0f + erff(x * 0.70710678118654752f));
}

/* MT: rows of x per pass (M > MT loops, re-reading the weight row from cache). */
template <int WT, int MT>
__global__ void __launch_bounds__(GEMV_THREADS)
gemv_kernel(float *__restrict__ y, const float *__restrict__ x, const uint16_t *__restrict__ W,
            const float *__restrict__ b, int M, int N, int K, int act, int accumulate, int ksplit) {
    constexpr int UNROLL = w_unroll<WT>();
    __shared__ float red[GEMV_WARPS][MT];
    const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
    const int rows_per_block = GEMV_WARPS / ksplit;
    const int row = blockIdx.x * rows_per_block + warp / ksplit;
    const int part = warp % ksplit;
    const int K8 = K >> 3, stride = 32 * ksplit;
    const uint4 *wrow = reinterpret_cast<const uint4 *>(
        W + (int64_t)(row < N ? row : 0) * K * (WT == VOX_CUDA_F32 ? 2 : 1)); /* W: 16-bit units */
    const int c_first = part * 32 + lane;

    for (int m0 = 0; m0 < M; m0 += MT) {
        float acc[MT];
#pragma unroll
        for (int m = 0; m < MT; m++) acc[m] = 0.0f;
        if (row < N) {
            for (int c0 = c_first; c0 < K8; c0 += UNROLL * stride) {
                w8<WT> w[UNROLL];
#pragma unroll
                for (int u = 0; u < UNROLL; u++) {
                    int c = c0 + u * stride;
                    w8_load<WT>(w[u], wrow, c, c < K8);
                }
#pragma unroll
                for (int u = 0; u < UNROLL; u++) {
                    int c = c0 + u * stride;
                    if (c >= K8) break;
#pragma unroll
                    for (int m = 0; m < MT; m++) {
                        if (m0 + m < M) {
                            const float4 *xr =
                                reinterpret_cast<const float4 *>(x + (int64_t)(m0 + m) * K) + 2 * c;
                            acc[m] += w8_dot(w[u], __ldg(xr), __ldg(xr + 1));
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

template <int WT>
static void gemv_launch(float *y, const float *x, const uint16_t *W, const float *b, int M, int N,
                        int K, int act, int accumulate, int ksplit, dim3 grid, cudaStream_t st) {
    if (M == 1)
        gemv_kernel<WT, 1><<<grid, GEMV_THREADS, 0, st>>>(y, x, W, b, M, N, K, act, accumulate, ksplit);
    else if (M == 2)
        gemv_kernel<WT, 2><<<grid, GEMV_THREADS, 0, st>>>(y, x, W, b, M, N, K, act, accumulate, ksplit);
    else if (M <= 4)
        gemv_kernel<WT, 4><<<grid, GEMV_THREADS, 0, st>>>(y, x, W, b, M, N, K, act, accumulate, ksplit);
    else
        gemv_kernel<WT, 8><<<grid, GEMV_THREADS, 0, st>>>(y, x, W, b, M, N, K, act, accumulate, ksplit);
}

extern "C" void vox_cuda_gemv(float *y, const float *x, const void *W, int wtype, const float *b,
                              int M, int N, int K, int act, int accumulate, int n_sm,
                              cudaStream_t st) {
    /* split rows over more warps while the grid is small, keeping >= 2 loads per lane */
    int ksplit = 1;
    const int K8 = K / 8;
    while (ksplit < GEMV_WARPS && (int64_t)N * ksplit < (int64_t)n_sm * 32 &&
           K8 / (ksplit * 2 * 32) >= 2)
        ksplit *= 2;
    int rows_per_block = GEMV_WARPS / ksplit;
    dim3 grid((N + rows_per_block - 1) / rows_per_block);
    const uint16_t *W16 = static_cast<const uint16_t *>(W);
    switch (wtype) {
    case VOX_CUDA_F16: gemv_launch<VOX_CUDA_F16>(y, x, W16, b, M, N, K, act, accumulate, ksplit, grid, st); break;
    case VOX_CUDA_F32: gemv_launch<VOX_CUDA_F32>(y, x, W16, b, M, N, K, act, accumulate, ksplit, grid, st); break;
    default: gemv_launch<VOX_CUDA_BF16>(y, x, W16, b, M, N, K, act, accumulate, ksplit, grid, st); break;
    }
}

/* ---- h = silu(g) * u for the M = 1 swiglu_linear: once, ahead of a plain gemv1 (the
 * fused SwiGLU input made every warp redo all K of it: SFU-bound, 66% of the copy
 * bandwidth). Waits, then lets the GEMV launch (its weight prefetch overlaps this
 * kernel): triggering first let the GEMV's blocks in two kernels early, which cost
 * the step ~130 us on an H100 (tests/test_cuda_ops bench, PDL families). */
__global__ void swiglu1_kernel(float *h, const float *g, const float *u, int n) {
    pdl_wait();
    pdl_trigger();
    int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i < n) {
        float gv = g[i];
        h[i] = gv / (1.0f + expf(-gv)) * u[i];
    }
}

extern "C" void vox_cuda_swiglu1(float *h, const float *g, const float *u, int n, cudaStream_t st) {
    if (n <= 0) return;
    vox_launch(VOX_PDL_SWIGLU, swiglu1_kernel, (n + 255) / 256, 256, 0, st, h, g, u, n);
}

/* ---- gemv1: M = 1, fused input stage, several weights per launch ------------------------
 * Warp = R consecutive rows of one weight (the x fragment it loads serves all R);
 * lanes stride the row in 16-byte steps. The input is formed per element from L1:
 * NORM uses linearity, W.(x*g*s*r) = r * W.(x*g*s), so the block's scalar r is
 * only needed at the end; each block computes it from x (12 KB, L1/L2). The first
 * weights are fetched before pdl_wait(): they overlap the previous kernel's tail. */
enum { G1_WARPS = 4, G1_THREADS = G1_WARPS * 32 };

/* NORM with the input staged in shared memory: each block forms x*norm*scale once
 * (dynamic shared, K floats: low halves of the 8-groups, then the high halves, so
 * a warp's 16-byte reads are conflict-free); the loop then is the plain one, with
 * its registers free for the rolling prefetch (the per-element NORM input spilled
 * with it at the 80-register cap). Used where K * 4 bytes fits G1_SMEM_MAX. */
enum { G1_NORM_SMEM = 3, G1_SMEM_MAX = 32 * 1024 };
extern __shared__ float4 g1_xs[];

template <int MODE>
__device__ __forceinline__ void gemv1_input(const vox_cuda_gemv1_args &a, int c, float4 &i0,
                                            float4 &i1) {
    if (MODE == G1_NORM_SMEM) {
        i0 = g1_xs[c];
        i1 = g1_xs[(a.K >> 3) + c];
        return;
    }
    const float4 *x4 = reinterpret_cast<const float4 *>(a.x) + 2 * c;
    i0 = __ldg(x4);
    i1 = __ldg(x4 + 1);
    if (MODE == VOX_GEMV_NORM) {
        const float4 *g4 = reinterpret_cast<const float4 *>(a.norm) + 2 * c;
        float4 g0 = __ldg(g4), g1 = __ldg(g4 + 1);
        i0.x *= g0.x, i0.y *= g0.y, i0.z *= g0.z, i0.w *= g0.w;
        i1.x *= g1.x, i1.y *= g1.y, i1.z *= g1.z, i1.w *= g1.w;
        if (a.scale) {
            const float4 *s4 = reinterpret_cast<const float4 *>(a.scale) + 2 * c;
            float4 s0 = __ldg(s4), s1 = __ldg(s4 + 1);
            i0.x *= s0.x, i0.y *= s0.y, i0.z *= s0.z, i0.w *= s0.w;
            i1.x *= s1.x, i1.y *= s1.y, i1.z *= s1.z, i1.w *= s1.w;
        }
    } else if (MODE == VOX_GEMV_SWIGLU) {
        const float4 *u4 = reinterpret_cast<const float4 *>(a.u) + 2 * c;
        float4 u0 = __ldg(u4), u1 = __ldg(u4 + 1);
        /* fast exp and divide: the exact ones made this GEMV compute-bound (53% of
         * the copy bandwidth vs 84% plain); ~1e-6 relative, well inside BF16 noise */
#define SILU_MUL(g, u) (g) = __fdividef((g), 1.0f + __expf(-(g))) * (u)
        SILU_MUL(i0.x, u0.x), SILU_MUL(i0.y, u0.y), SILU_MUL(i0.z, u0.z), SILU_MUL(i0.w, u0.w);
        SILU_MUL(i1.x, u1.x), SILU_MUL(i1.y, u1.y), SILU_MUL(i1.z, u1.z), SILU_MUL(i1.w, u1.w);
#undef SILU_MUL
    }
}

/* group g (R rows) -> weight seg and its first row; selects without indexing the
 * parameter arrays at run time (that would go through local memory) */
__device__ __forceinline__ void gemv1_locate(const vox_cuda_gemv1_args &a, int row, int &seg,
                                             int &r0) {
    seg = 0;
    r0 = row;
    if (a.n_out > 1 && r0 >= a.rows[0]) {
        r0 -= a.rows[0];
        seg = 1;
        if (a.n_out > 2 && r0 >= a.rows[1]) {
            r0 -= a.rows[1];
            seg = 2;
        }
    }
}

template <int WT, int R>
__device__ __forceinline__ void gemv1_load(w8<WT> (&w)[R][w_unroll<WT>()], const uint4 *const (&wr)[R],
                                           int c0, int step, int K8) {
#pragma unroll
    for (int u = 0; u < w_unroll<WT>(); u++) {
        int c = c0 + u * step;
#pragma unroll
        for (int r = 0; r < R; r++) w8_load<WT>(w[r][u], wr[r], c, c < K8);
    }
}

/* the R rows r0.. of weight seg */
template <int WT, int R>
__device__ __forceinline__ void gemv1_rows(const uint4 *(&wr)[R], const vox_cuda_gemv1_args &a,
                                           int seg, int r0) {
    const char *W = reinterpret_cast<const char *>(seg == 0 ? a.W[0] : seg == 1 ? a.W[1] : a.W[2]);
#pragma unroll
    for (int r = 0; r < R; r++)
        wr[r] = reinterpret_cast<const uint4 *>(W + (int64_t)(r0 + r) * a.K * (WT == VOX_CUDA_F32 ? 4 : 2));
}

/* 1 / sqrt(mean(x^2) + eps) over K, from each thread's fp32 part of the sum of
 * squares: summed across threads in double, as the CPU twin. Block-wide (both
 * __syncthreads are reached by every thread). */
__device__ __forceinline__ float g1_rms_scale(float part, int K, float eps) {
    __shared__ double red[G1_WARPS];
    __shared__ float r_s;
    double ss = part;
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) ss += __shfl_xor_sync(0xffffffffu, ss, o);
    if ((threadIdx.x & 31) == 0) red[threadIdx.x >> 5] = ss;
    __syncthreads();
    if (threadIdx.x == 0) {
        double t = 0;
        for (int i = 0; i < G1_WARPS; i++) t += red[i];
        r_s = (float)(1.0 / sqrt(t / K + (double)eps));
    }
    __syncthreads();
    return r_s;
}

/* at most 64 registers (8 blocks per SM) where that does not spill; the two-row
 * norm variant gets 80 (6 blocks per SM), the two-row staged norm 72 (7) for BF16
 * and 80 (6) for F16 / F32; the grid adapts to any */
template <int WT, int R, int MODE>
__global__ void __launch_bounds__(G1_THREADS, R == 2 && MODE == VOX_GEMV_NORM ? 6
                                              : R == 2 && MODE == G1_NORM_SMEM ? (WT == VOX_CUDA_BF16 ? 7 : 6)
                                                                               : 8)
gemv1_kernel(const vox_cuda_gemv1_args a, int groups, int ks_arg) {
    constexpr int UNROLL = w_unroll<WT>();
    const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
    /* ks warps share a group, each taking every ks-th 16-byte column of its rows
     * (more loads in flight where the groups alone would leave the SMs half empty);
     * a block takes gpb groups per pass, its passes uniform for __syncthreads.
     * PLAIN and NORM_SMEM only (the other two would spill) */
    constexpr bool SPLIT = MODE == VOX_GEMV_PLAIN || MODE == G1_NORM_SMEM;
    const int ks = SPLIT ? ks_arg : 1;
    const int gpb = G1_WARPS / ks, slot = warp / ks, part = warp - slot * ks;
    const int K8 = a.K >> 3, step = 32 * ks, c_first = part * 32 + lane;
    w8<WT> w[R][UNROLL];
    bool have = false;
    if (blockIdx.x * gpb + slot < groups) { /* weights: no kernel writes them, so before the wait */
        int seg, r0;
        gemv1_locate(a, (blockIdx.x * gpb + slot) * R, seg, r0);
        const uint4 *wr[R];
        gemv1_rows<WT, R>(wr, a, seg, r0);
        gemv1_load<WT, R>(w, wr, c_first, step, K8);
        have = true;
    }
    pdl_wait();
    pdl_trigger();
    float rs = 1.0f;
    if (MODE == VOX_GEMV_NORM) {
        /* sum of squares: a few dozen per thread in fp32, the rest in double as the CPU
         * twin (all-double kept the prefetched weights live across it: spills) */
        float part = 0.0f;
        const float4 *x4 = reinterpret_cast<const float4 *>(a.x);
        for (int i = threadIdx.x; i < a.K / 4; i += G1_THREADS) {
            float4 v = __ldg(x4 + i);
            part = fmaf(v.x, v.x, fmaf(v.y, v.y, fmaf(v.z, v.z, fmaf(v.w, v.w, part))));
        }
        rs = g1_rms_scale(part, a.K, a.eps);
    }
    if (MODE == G1_NORM_SMEM) {
        /* stage x*norm*scale in shared memory while summing the squares of x (one loop
         * with NORM's above, the BF16 two-row instance, the step's q/k/v and w1/w3,
         * spilled 4 bytes at its 72-register cap) */
        float part = 0.0f;
        const float4 *x4 = reinterpret_cast<const float4 *>(a.x);
        const float4 *g4 = reinterpret_cast<const float4 *>(a.norm);
        const float4 *s4 = reinterpret_cast<const float4 *>(a.scale);
        for (int i = threadIdx.x; i < a.K / 4; i += G1_THREADS) {
            float4 v = __ldg(x4 + i), g = __ldg(g4 + i);
            part = fmaf(v.x, v.x, fmaf(v.y, v.y, fmaf(v.z, v.z, fmaf(v.w, v.w, part))));
            v.x *= g.x, v.y *= g.y, v.z *= g.z, v.w *= g.w;
            if (s4) {
                float4 t = __ldg(s4 + i);
                v.x *= t.x, v.y *= t.y, v.z *= t.z, v.w *= t.w;
            }
            g1_xs[(i & 1) * K8 + (i >> 1)] = v;
        }
        rs = g1_rms_scale(part, a.K, a.eps);
    }
    __shared__ float part_sum[G1_WARPS][R];
    for (int bi = blockIdx.x; bi * gpb < groups; bi += gridDim.x) {
        const int grp = bi * gpb + slot;
        const bool valid = grp < groups;
        int seg = 0, r0 = 0;
        float acc[R];
#pragma unroll
        for (int r = 0; r < R; r++) acc[r] = 0.0f;
        if (valid) {
            gemv1_locate(a, grp * R, seg, r0);
            const uint4 *wr[R];
            gemv1_rows<WT, R>(wr, a, seg, r0);
            for (int c0 = c_first; c0 < K8; c0 += UNROLL * step) {
                if (!have) gemv1_load<WT, R>(w, wr, c0, step, K8);
                /* rolling prefetch: each slot is refilled with the next pass's weights as
                 * soon as it is used, so loads stay in flight through the compute */
                have = (MODE == VOX_GEMV_PLAIN || MODE == G1_NORM_SMEM) &&
                       c0 + UNROLL * step < K8; /* NORM / SWIGLU: spills */
#pragma unroll
                for (int u = 0; u < UNROLL; u++) {
                    int c = c0 + u * step;
                    if (c >= K8) break;
                    float4 i0, i1;
                    gemv1_input<MODE>(a, c, i0, i1);
#pragma unroll
                    for (int r = 0; r < R; r++) {
                        acc[r] += w8_dot(w[r][u], i0, i1);
                        if (have) w8_load<WT>(w[r][u], wr[r], c + UNROLL * step, c + UNROLL * step < K8);
                    }
                }
            }
        }
        {   /* the next group's first weights, before this one's reduction */
            const int ng = grp + gridDim.x * gpb;
            have = false;
            if ((MODE == VOX_GEMV_PLAIN || MODE == G1_NORM_SMEM) && ng < groups) {
                int nseg, nr0;
                gemv1_locate(a, ng * R, nseg, nr0);
                const uint4 *nwr[R];
                gemv1_rows<WT, R>(nwr, a, nseg, nr0);
                gemv1_load<WT, R>(w, nwr, c_first, step, K8);
                have = true;
            }
        }
#pragma unroll
        for (int r = 0; r < R; r++) {
            float v = acc[r];
#pragma unroll
            for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
            acc[r] = v;
        }
        if (SPLIT && ks > 1) { /* the ks parts of each group, summed in a fixed order */
            if (lane == 0) {
#pragma unroll
                for (int r = 0; r < R; r++) part_sum[warp][r] = acc[r];
            }
            __syncthreads();
            if (part == 0) {
#pragma unroll
                for (int r = 0; r < R; r++) {
                    float v = part_sum[warp][r];
                    for (int p = 1; p < ks; p++) v += part_sum[warp + p][r];
                    acc[r] = v;
                }
            }
            __syncthreads();
        }
        if (valid && part == 0 && lane == 0) {
            float *y = (seg == 0 ? a.y[0] : seg == 1 ? a.y[1] : a.y[2]) + r0;
#pragma unroll
            for (int r = 0; r < R; r++) y[r] = a.accumulate ? y[r] + acc[r] * rs : acc[r] * rs;
        }
    }
}

/* One wave, balanced: each warp takes ceil(groups / resident warps) groups, and the
 * grid is just large enough for that (a second, partial wave was a 15-30% tail on
 * the 25 MB GEMVs). Blocks per SM from the occupancy API, once per instance. */
template <int WT, int R, int MODE>
static void gemv1_launch(const vox_cuda_gemv1_args *a, int groups, int n_sm, cudaStream_t st) {
    static int per_sm, per_sm_smem; /* 0 until asked; a pure query, safe inside a graph capture */
    const size_t smem = MODE == G1_NORM_SMEM ? (size_t)a->K * sizeof(float) : 0;
    if ((!per_sm || per_sm_smem != (int)smem) &&
        cudaOccupancyMaxActiveBlocksPerMultiprocessor(&per_sm, gemv1_kernel<WT, R, MODE>,
                                                      G1_THREADS, smem) != cudaSuccess)
        per_sm = 1;
    per_sm_smem = (int)smem;
    if (per_sm < 1) per_sm = 1;
    const int warps = n_sm * per_sm * G1_WARPS;
    /* split K over 2 or 4 warps while the groups alone fill under half the resident
     * warps (the 25 and 57 MB GEMVs: wo, w2), keeping >= 1 full unrolled pass each */
    int ks = 1;
    while ((MODE == VOX_GEMV_PLAIN || MODE == G1_NORM_SMEM) && ks < G1_WARPS &&
           (int64_t)groups * ks * 2 <= warps && (a->K >> 3) / (32 * ks * 2) >= w_unroll<WT>())
        ks *= 2;
    const int gpb = G1_WARPS / ks, passes = (groups + gpb - 1) / gpb;
    const int per_block = (passes + n_sm * per_sm - 1) / (n_sm * per_sm);
    const int blocks = (passes + per_block - 1) / per_block;
    vox_launch(VOX_PDL_GEMV, gemv1_kernel<WT, R, MODE>, blocks, G1_THREADS, smem, st, *a, groups, ks);
}

template <int WT, int R>
static void gemv1_mode(const vox_cuda_gemv1_args *a, int groups, int n_sm, cudaStream_t st) {
    switch (a->mode) {
    case VOX_GEMV_NORM:
        if ((int64_t)a->K * 4 <= G1_SMEM_MAX) gemv1_launch<WT, R, G1_NORM_SMEM>(a, groups, n_sm, st);
        else gemv1_launch<WT, R, VOX_GEMV_NORM>(a, groups, n_sm, st);
        break;
    case VOX_GEMV_SWIGLU: gemv1_launch<WT, R, VOX_GEMV_SWIGLU>(a, groups, n_sm, st); break;
    default: gemv1_launch<WT, R, VOX_GEMV_PLAIN>(a, groups, n_sm, st); break;
    }
}

template <int WT>
static void gemv1_pairs(const vox_cuda_gemv1_args *a, int total, int even, int n_sm, cudaStream_t st) {
    /* two rows per warp halve the input traffic (and the norm / SwiGLU work) */
    if (even) gemv1_mode<WT, 2>(a, total / 2, n_sm, st);
    else gemv1_mode<WT, 1>(a, total, n_sm, st);
}

extern "C" void vox_cuda_gemv1(const vox_cuda_gemv1_args *a, int n_sm, cudaStream_t st) {
    int total = 0, even = 1;
    for (int i = 0; i < a->n_out; i++) {
        total += a->rows[i];
        even &= (a->rows[i] & 1) == 0;
    }
    if (total <= 0) return;
    switch (a->wtype) {
    case VOX_CUDA_F16: gemv1_pairs<VOX_CUDA_F16>(a, total, even, n_sm, st); break;
    case VOX_CUDA_F32: gemv1_pairs<VOX_CUDA_F32>(a, total, even, n_sm, st); break;
    default: gemv1_pairs<VOX_CUDA_BF16>(a, total, even, n_sm, st); break;
    }
}
