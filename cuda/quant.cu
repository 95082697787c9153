/* cuda/quant.cu - kernels for quantized weights (Q8 / Q4 in groups, F16 scales;
 * formats and the exact rule: voxtral_quant.h) other than the GEMV (cuda/qgemv.cu).
 * CPU twins: the CPU backend's ops on the same weights (voxtral_kernels.c +
 * voxtral_qdot_*.c).
 *
 *   dequant:  rows of W to a dense BF16 / F16 / F32 tile, the GEMM path's weight
 *             (cuBLASLt then runs as on an unquantized weight);
 *   embed:    x[i] = dequant(emb[ids[i]]) + audio[pos[i] % acap].
 * Integer loads and fp32 math (F16 scales read with cvt): every architecture from
 * sm_60, so the fp16 path (pre-Ampere) runs them too.
 */
#include <cuda_fp16.h>
#include <stdint.h>

#include "quant.cuh"

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
