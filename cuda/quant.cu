/* cuda/quant.cu - kernels for quantized weights (Q8 / Q4 in groups, F16 scales;
 * formats and the exact rule: voxtral_quant.h). CPU twins: the CPU backend's ops on
 * the same weights (voxtral_kernels.c + voxtral_qdot_*.c).
 *
 *   qgemv:    y[m][n] (= or +=) act(in[m] . dequant(W[n]) + b[n]) for M <= 8 rows,
 *             up to 3 weights sharing the input (q/k/v, w1/w3), the input formed on
 *             the fly as gemv1's modes (plain, rmsnorm(x) * norm * scale, silu(x) * u);
 *             a warp per output row, each lane 32 columns per step (one 16-byte load
 *             for Q4, two for Q8), per 32 columns s * sum(q in) (+ m * sum(in)), fp32;
 *   dequant:  rows of W to a dense BF16 / F16 / F32 tile, the GEMM path's weight
 *             (cuBLASLt then runs as on an unquantized weight);
 *   embed:    x[i] = dequant(emb[ids[i]]) + audio[pos[i] % acap].
 * Only integer loads, shifts and fp32 math (F16 scales read with cvt): every
 * architecture from sm_60, so the fp16 path (pre-Ampere) runs them too.
 * Checked on an H200 against the CPU twins (tests/test_cuda_quant.c).
 */
#include <cuda_fp16.h>
#include <stdint.h>

#include "voxtral_cuda.h"

enum { QG_WARPS = 4, QG_THREADS = QG_WARPS * 32, QG_SMEM_MAX = 46 << 10 /* + the static arrays: under 48 KB, no opt-in */ };

__device__ __forceinline__ float q_f16(uint16_t h) { return __half2float(__ushort_as_half(h)); }

/* input element k of row m (scaled by the NORM scale later: linearity) */
template <int MODE>
__device__ __forceinline__ float q_in(const vox_cuda_qgemv_args &a, int m, int k) {
    float v = __ldg(a.x + (int64_t)m * a.K + k);
    if (MODE == VOX_GEMV_NORM) {
        v *= __ldg(a.norm + k);
        if (a.scale) v *= __ldg(a.scale + k);
    } else if (MODE == VOX_GEMV_SWIGLU) {
        v = v / (1.0f + expf(-v)) * __ldg(a.u + (int64_t)m * a.K + k);
    }
    return v;
}

/* the 32 weights of columns k0 .. k0+31 as q values (Q8: signed; Q4: 0..15) */
template <int FMT>
__device__ __forceinline__ void q_load32(const uint8_t *row, int k0, float (&q)[32]) {
    if (FMT == VOX_CUDA_Q8) {
        const uint4 *p = reinterpret_cast<const uint4 *>(row + k0);
        uint4 v[2] = {__ldcs(p), __ldcs(p + 1)};
        const unsigned *u = reinterpret_cast<const unsigned *>(v);
#pragma unroll
        for (int i = 0; i < 8; i++)
#pragma unroll
            for (int b = 0; b < 4; b++) q[4 * i + b] = (float)(int8_t)((u[i] >> (8 * b)) & 0xffu);
    } else {
        uint4 v = __ldcs(reinterpret_cast<const uint4 *>(row + k0 / 2));
        const unsigned *u = reinterpret_cast<const unsigned *>(&v);
#pragma unroll
        for (int i = 0; i < 4; i++)
#pragma unroll
            for (int b = 0; b < 4; b++) {
                unsigned byte = (u[i] >> (8 * b)) & 0xffu;
                q[4 * i + b] = (float)(byte & 15u);
                q[16 + 4 * i + b] = (float)(byte >> 4);
            }
    }
}

/* STAGED: the block first forms every input element once (q_in, the same fp32 ops)
 * into shared memory, [M][chunk][33] (a 33rd word per 32-column chunk: lane L reads
 * chunk c = L + 32 j, so the 32 lanes' words fall in 32 different banks), and the row
 * loop reads them there. Unstaged, each lane re-formed its 32 inputs per weight row
 * from global memory (norm, scale, SwiGLU's expf every time): the first H200 run's
 * q8 step took 46 ms against a 0.8 ms floor. Staged when M rows fit QG_SMEM_MAX. */
template <int FMT, int MT, int MODE, bool STAGED>
__global__ void __launch_bounds__(QG_THREADS) qgemv_kernel(const vox_cuda_qgemv_args a, int total) {
    pdl_wait();
    pdl_trigger();
    extern __shared__ float xs[];
    const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
    const int K = a.K, G = a.group, chunks = (K + 31) / 32;
    const int64_t row_bytes = (int64_t)((K + G - 1) / G) * G / (FMT == VOX_CUDA_Q4 ? 2 : 1);
    const int scale_stride = ((K + G - 1) / G) * (FMT == VOX_CUDA_Q4 ? 2 : 1);
    __shared__ float rs_s[MT];
    if (MODE == VOX_GEMV_NORM) { /* 1 / rms of each input row, summed in double as the CPU */
        __shared__ double red[QG_WARPS];
        for (int m = 0; m < a.M; m++) {
            double ss = 0;
            for (int k = threadIdx.x; k < K; k += QG_THREADS) {
                double v = a.x[(int64_t)m * K + k];
                ss += v * v;
            }
#pragma unroll
            for (int o = 16; o > 0; o >>= 1) ss += __shfl_xor_sync(0xffffffffu, ss, o);
            if (lane == 0) red[warp] = ss;
            __syncthreads();
            if (threadIdx.x == 0) {
                double t = 0;
                for (int i = 0; i < QG_WARPS; i++) t += red[i];
                rs_s[m] = (float)(1.0 / sqrt(t / K + (double)a.eps));
            }
            __syncthreads();
        }
    }
    const int rstride = chunks * 33;
    if (STAGED) {
        const int per_row = chunks * 32, n = a.M * per_row;
        for (int i = threadIdx.x; i < n; i += QG_THREADS) {
            const int m = i / per_row, k = i - m * per_row;
            xs[m * rstride + (k >> 5) * 33 + (k & 31)] = k < K ? q_in<MODE>(a, m, k) : 0.0f;
        }
        __syncthreads();
    }
    for (int row = blockIdx.x * QG_WARPS + warp; row < total; row += gridDim.x * QG_WARPS) {
        int seg = 0, r = row;
        if (a.n_out > 1 && r >= a.rows[0]) {
            r -= a.rows[0];
            seg = 1;
            if (a.n_out > 2 && r >= a.rows[1]) {
                r -= a.rows[1];
                seg = 2;
            }
        }
        const uint8_t *W = seg == 0 ? a.W[0] : seg == 1 ? a.W[1] : a.W[2];
        const uint16_t *S = (seg == 0 ? a.S[0] : seg == 1 ? a.S[1] : a.S[2]) + (int64_t)r * scale_stride;
        const uint8_t *wr = W + (int64_t)r * row_bytes;
        float acc[MT];
#pragma unroll
        for (int m = 0; m < MT; m++) acc[m] = 0.0f;
        for (int c = lane; c < chunks; c += 32) {
            const int k0 = 32 * c, g = k0 / G;
            float q[32];
            q_load32<FMT>(wr, k0, q);
            const float s = q_f16(S[FMT == VOX_CUDA_Q4 ? 2 * g : g]);
            const float mn = FMT == VOX_CUDA_Q4 ? q_f16(S[2 * g + 1]) : 0.0f;
            const bool full = k0 + 32 <= K;
#pragma unroll
            for (int m = 0; m < MT; m++) {
                if (m >= a.M) break;
                float sq = 0.0f, sx = 0.0f;
                const float *xm = xs + m * rstride + c * 33;
#pragma unroll
                for (int i = 0; i < 32; i++) {
                    float v = STAGED ? xm[i] : full || k0 + i < K ? q_in<MODE>(a, m, k0 + i) : 0.0f;
                    sq = fmaf(q[i], v, sq);
                    sx += v;
                }
                acc[m] = FMT == VOX_CUDA_Q4 ? fmaf(mn, sx, fmaf(s, sq, acc[m])) : fmaf(s, sq, acc[m]);
            }
        }
#pragma unroll
        for (int m = 0; m < MT; m++) {
            float v = acc[m];
#pragma unroll
            for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
            acc[m] = v;
        }
        if (lane == 0) {
            const int N = seg == 0 ? a.rows[0] : seg == 1 ? a.rows[1] : a.rows[2];
            float *y = seg == 0 ? a.y[0] : seg == 1 ? a.y[1] : a.y[2];
#pragma unroll
            for (int m = 0; m < MT; m++) {
                if (m >= a.M) break;
                float v = acc[m] * (MODE == VOX_GEMV_NORM ? rs_s[m] : 1.0f);
                if (a.bias) v += a.bias[r];
                if (a.act == 1) v = 0.5f * v * (1.0f + erff(v * 0.70710678118654752f));
                float *o = y + (int64_t)m * N + r;
                *o = a.accumulate ? *o + v : v;
            }
        }
    }
}

template <int FMT, int MT, int MODE>
static void qgemv_launch(const vox_cuda_qgemv_args *a, int total, int n_sm, cudaStream_t st) {
    const size_t smem = (size_t)a->M * ((a->K + 31) / 32) * 33 * sizeof(float);
    const bool staged = smem <= QG_SMEM_MAX;
    /* staged: fewer blocks (each forms the whole input once), each looping over rows */
    int blocks = (total + QG_WARPS - 1) / QG_WARPS, cap = n_sm * (staged ? 4 : 8);
    if (blocks > cap) blocks = cap;
    if (staged)
        vox_launch(VOX_PDL_GEMV, qgemv_kernel<FMT, MT, MODE, true>, blocks, QG_THREADS, smem, st, *a, total);
    else
        vox_launch(VOX_PDL_GEMV, qgemv_kernel<FMT, MT, MODE, false>, blocks, QG_THREADS, 0, st, *a, total);
}

template <int FMT, int MT>
static void qgemv_mode(const vox_cuda_qgemv_args *a, int total, int n_sm, cudaStream_t st) {
    switch (a->mode) {
    case VOX_GEMV_NORM: qgemv_launch<FMT, MT, VOX_GEMV_NORM>(a, total, n_sm, st); break;
    case VOX_GEMV_SWIGLU: qgemv_launch<FMT, MT, VOX_GEMV_SWIGLU>(a, total, n_sm, st); break;
    default: qgemv_launch<FMT, MT, VOX_GEMV_PLAIN>(a, total, n_sm, st); break;
    }
}

template <int FMT>
static void qgemv_rows(const vox_cuda_qgemv_args *a, int total, int n_sm, cudaStream_t st) {
    if (a->M <= 1) qgemv_mode<FMT, 1>(a, total, n_sm, st);
    else if (a->M <= 2) qgemv_mode<FMT, 2>(a, total, n_sm, st);
    else if (a->M <= 4) qgemv_mode<FMT, 4>(a, total, n_sm, st);
    else qgemv_mode<FMT, 8>(a, total, n_sm, st);
}

extern "C" int vox_cuda_qgemv(const vox_cuda_qgemv_args *a, int n_sm, cudaStream_t st) {
    if (a->M < 1 || a->M > VOX_QGEMV_MAX_ROWS || a->n_out < 1 || a->n_out > VOX_GEMV_MAX_OUT ||
        a->group < 32 || a->group % 32)
        return -1;
    int total = 0;
    for (int i = 0; i < a->n_out; i++) total += a->rows[i];
    if (total <= 0) return 0;
    if (a->fmt == VOX_CUDA_Q8) qgemv_rows<VOX_CUDA_Q8>(a, total, n_sm, st);
    else qgemv_rows<VOX_CUDA_Q4>(a, total, n_sm, st);
    return 0;
}

/* ---- dequantization to a dense tile ---------------------------------------------------- */
template <int OT> __device__ __forceinline__ void q_store(void *dst, int64_t i, float v) {
    if (OT == VOX_CUDA_BF16) {
        unsigned u = __float_as_uint(v);
        static_cast<uint16_t *>(dst)[i] = (uint16_t)((u + 0x7fffu + ((u >> 16) & 1u)) >> 16);
    } else if (OT == VOX_CUDA_F16) {
        static_cast<__half *>(dst)[i] = __float2half_rn(v);
    } else {
        static_cast<float *>(dst)[i] = v;
    }
}

/* weight value (exact rule: s * q, or s * q + m, each step rounded as the CPU's) */
template <int FMT>
__device__ __forceinline__ float q_value(const uint8_t *row, const uint16_t *S, int k, int G) {
    const int g = k / G;
    if (FMT == VOX_CUDA_Q8) return __fmul_rn(q_f16(S[g]), (float)(int8_t)row[k]);
    const uint8_t b = row[k / 32 * 16 + (k & 15)];
    const float q = (float)((k & 16) ? b >> 4 : b & 15);
    return __fadd_rn(__fmul_rn(q_f16(S[2 * g]), q), q_f16(S[2 * g + 1]));
}

template <int FMT, int OT>
__global__ void qdequant_kernel(void *dst, const uint8_t *W, const uint16_t *S, int r0, int n_rows, int K,
                                int G) {
    const int64_t n = (int64_t)n_rows * K;
    const int64_t row_bytes = (int64_t)((K + G - 1) / G) * G / (FMT == VOX_CUDA_Q4 ? 2 : 1);
    const int scale_stride = ((K + G - 1) / G) * (FMT == VOX_CUDA_Q4 ? 2 : 1);
    for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n; i += (int64_t)gridDim.x * blockDim.x) {
        const int r = (int)(i / K), k = (int)(i - (int64_t)r * K);
        const int64_t rr = r0 + r;
        q_store<OT>(dst, i, q_value<FMT>(W + rr * row_bytes, S + rr * scale_stride, k, G));
    }
}

template <int FMT>
static void qdequant_out(void *dst, int otype, const uint8_t *W, const uint16_t *S, int r0, int n_rows, int K,
                         int G, cudaStream_t st) {
    const int64_t n = (int64_t)n_rows * K;
    int blocks = (int)((n + 255) / 256 < 65536 ? (n + 255) / 256 : 65536);
    if (otype == VOX_CUDA_BF16) qdequant_kernel<FMT, VOX_CUDA_BF16><<<blocks, 256, 0, st>>>(dst, W, S, r0, n_rows, K, G);
    else if (otype == VOX_CUDA_F16) qdequant_kernel<FMT, VOX_CUDA_F16><<<blocks, 256, 0, st>>>(dst, W, S, r0, n_rows, K, G);
    else qdequant_kernel<FMT, VOX_CUDA_F32><<<blocks, 256, 0, st>>>(dst, W, S, r0, n_rows, K, G);
}

extern "C" void vox_cuda_qdequant(void *dst, int otype, const void *W, int fmt, const uint16_t *S, int r0,
                                  int n_rows, int K, int group, cudaStream_t st) {
    if (n_rows <= 0 || K <= 0) return;
    const uint8_t *w = static_cast<const uint8_t *>(W);
    if (fmt == VOX_CUDA_Q8) qdequant_out<VOX_CUDA_Q8>(dst, otype, w, S, r0, n_rows, K, group, st);
    else qdequant_out<VOX_CUDA_Q4>(dst, otype, w, S, r0, n_rows, K, group, st);
}

/* ---- embedding gather ----------------------------------------------------------------------- */
template <int FMT>
__global__ void qembed_kernel(float *x, const uint8_t *W, const uint16_t *S, int G, const int32_t *ids,
                              const float *audio, const int32_t *pos, int M, int D, int acap,
                              const int32_t *slot) {
    pdl_wait();
    pdl_trigger();
    const int i = blockIdx.y;
    if (i >= M) return;
    const int64_t row_bytes = (int64_t)((D + G - 1) / G) * G / (FMT == VOX_CUDA_Q4 ? 2 : 1);
    const int scale_stride = ((D + G - 1) / G) * (FMT == VOX_CUDA_Q4 ? 2 : 1);
    const int64_t id = ids[i];
    const float *a = audio + (slot ? (int64_t)slot[i] * acap * D : 0) + (int64_t)(pos[i] % acap) * D;
    for (int d = blockIdx.x * blockDim.x + threadIdx.x; d < D; d += gridDim.x * blockDim.x)
        x[(int64_t)i * D + d] = __fadd_rn(q_value<FMT>(W + id * row_bytes, S + id * scale_stride, d, G), a[d]);
}

extern "C" void vox_cuda_qembed(float *x, const void *W, int fmt, const uint16_t *S, int group,
                                const int32_t *ids, const float *audio, const int32_t *pos, int M, int D,
                                int acap, const int32_t *slot, cudaStream_t st) {
    if (M <= 0) return;
    dim3 grid((D + 255) / 256, M);
    const uint8_t *w = static_cast<const uint8_t *>(W);
    if (fmt == VOX_CUDA_Q8)
        vox_launch(VOX_PDL_EMBED, qembed_kernel<VOX_CUDA_Q8>, grid, 256, 0, st, x, w, S, group, ids, audio, pos, M,
                   D, acap, slot);
    else
        vox_launch(VOX_PDL_EMBED, qembed_kernel<VOX_CUDA_Q4>, grid, 256, 0, st, x, w, S, group, ids, audio, pos, M,
                   D, acap, slot);
}
