/* cuda/quant.cuh - quantized weights (Q8 / Q4 in groups, F16 scales; formats:
 * voxtral_quant.h) to fp32 in registers, for the kernels of cuda/qgemv.cu and
 * cuda/quant.cu: the F16 scales, the qgemv's chunk geometry (columns per 16-byte
 * chunk, rows per item, the deeper batch depth), a chunk's words to exact floats by
 * the 0x4B000000 trick (one PRMT or LOP3, then one FADD or FFMA a value: no int ->
 * float conversion) and one item's dot products with the input rows (q_item). The
 * layout and the reasons: cuda/qgemv.cu, at the kernel.
 */
#ifndef VOXTRAL_CUDA_QUANT_CUH
#define VOXTRAL_CUDA_QUANT_CUH

#include <cuda_fp16.h>
#include <stdint.h>

#include "voxtral_cuda.h"

__device__ __forceinline__ float q_f16(uint16_t h) { return __half2float(__ushort_as_half(h)); }

template <int FMT> struct qg_fmt {
    static constexpr int CW = FMT == VOX_CUDA_Q4 ? 32 : 16; /* columns per 16-byte chunk */
    static constexpr int T = CW / 4;                        /* input float4 per chunk */
};
template <int MT> struct qg_cfg {
    static constexpr int R = 2;                              /* weight rows per item */
    static constexpr int UMAX = MT == 8 ? 3 : 4;             /* the deeper of the 2 depths */
};

__device__ __forceinline__ unsigned q_word(const uint4 &v, int i) {
    return i == 0 ? v.x : i == 1 ? v.y : i == 2 ? v.z : v.w;
}
/* (w & mask) | 0x4B000000 as one LOP3 (written as C, the mask and the OR take two: the
 * instruction has one immediate) */
__device__ __forceinline__ float q_mag(unsigned w, unsigned mask) {
    unsigned d;
    asm("lop3.b32 %0, %1, %2, %3, 0xEA;" : "=r"(d) : "r"(w), "r"(mask), "r"(0x4B000000u));
    return __uint_as_float(d);
}

/* Q8: the 4 signed bytes of w as exact floats */
__device__ __forceinline__ void q8_word(unsigned w, float (&q)[4]) {
    const unsigned x = w ^ 0x80808080u;
#pragma unroll
    for (int b = 0; b < 4; b++) q[b] = __uint_as_float(__byte_perm(x, 0x4B000000u, 0x7440u | b)) - 8388736.0f;
}
/* Q4: word i of a chunk holds columns 4i..4i+3 (low nibbles: lo) and 16+4i..19+4i (high: hi) */
__device__ __forceinline__ void q4_word(unsigned w, float (&lo)[4], float (&hi)[4]) {
    const unsigned v = w >> 12;
    lo[0] = q_mag(w, 0xFu) - 8388608.0f;
    hi[0] = fmaf(q_mag(w, 0xF0u), 0x1p-4f, -0x1p19f);
    lo[1] = fmaf(q_mag(w, 0xF00u), 0x1p-8f, -0x1p15f);
    hi[1] = fmaf(q_mag(w, 0xF000u), 0x1p-12f, -0x1p11f);
    lo[2] = fmaf(q_mag(w, 0xF0000u), 0x1p-16f, -0x1p7f);
    hi[2] = fmaf(q_mag(v, 0xF00u), 0x1p-8f, -0x1p15f);    /* bits 20..23 */
    lo[3] = fmaf(q_mag(v, 0xF000u), 0x1p-12f, -0x1p11f);  /* bits 24..27 */
    hi[3] = fmaf(q_mag(v, 0xF0000u), 0x1p-16f, -0x1p7f);  /* bits 28..31 */
}
__device__ __forceinline__ float q_dot4(const float (&q)[4], float4 x, float acc) {
    acc = fmaf(q[0], x.x, acc);
    acc = fmaf(q[1], x.y, acc);
    acc = fmaf(q[2], x.z, acc);
    return fmaf(q[3], x.w, acc);
}

/* one item: R chunks (16 bytes each, the same columns of R rows) against the M input rows,
 * in NCH partial sums per (row, m);
 * xp: the chunk's input (float4 (t, m) at xp[(t * MT + m) * 32]), sxp: Q4's per-chunk
 * sum(in) (m at sxp[m * 32]) */
template <int FMT, int MT, int NCH>
__device__ __forceinline__ void q_item(const uint4 (&w)[qg_cfg<MT>::R], const unsigned (&sc)[qg_cfg<MT>::R],
                                       const float4 *xp, const float *sxp, int M,
                                       float (&acc)[qg_cfg<MT>::R][MT]) {
    constexpr int R = qg_cfg<MT>::R;
    float sq[NCH][R][MT];
#pragma unroll
    for (int c = 0; c < NCH; c++)
#pragma unroll
        for (int r = 0; r < R; r++)
#pragma unroll
            for (int m = 0; m < MT; m++) sq[c][r][m] = 0.0f;
#pragma unroll
    for (int i = 0; i < 4; i++) {
        if (FMT == VOX_CUDA_Q8) {
            float q[R][4];
#pragma unroll
            for (int r = 0; r < R; r++) q8_word(q_word(w[r], i), q[r]);
#pragma unroll
            for (int m = 0; m < MT; m++) {
                if (MT > 2 && m >= M) break;
                const float4 x = xp[(i * MT + m) * 32];
#pragma unroll
                for (int r = 0; r < R; r++) sq[i % NCH][r][m] = q_dot4(q[r], x, sq[i % NCH][r][m]);
            }
        } else {
            float lo[R][4], hi[R][4];
#pragma unroll
            for (int r = 0; r < R; r++) q4_word(q_word(w[r], i), lo[r], hi[r]);
#pragma unroll
            for (int m = 0; m < MT; m++) {
                if (MT > 2 && m >= M) break;
                const float4 xa = xp[(i * MT + m) * 32], xb = xp[((4 + i) * MT + m) * 32];
#pragma unroll
                for (int r = 0; r < R; r++) {
                    sq[0][r][m] = q_dot4(lo[r], xa, sq[0][r][m]);
                    sq[NCH - 1][r][m] = q_dot4(hi[r], xb, sq[NCH - 1][r][m]);
                }
            }
        }
    }
#pragma unroll
    for (int r = 0; r < R; r++) {
        const float s = q_f16((uint16_t)(sc[r] & 0xffffu));
        const float mn = FMT == VOX_CUDA_Q4 ? q_f16((uint16_t)(sc[r] >> 16)) : 0.0f;
#pragma unroll
        for (int m = 0; m < MT; m++) {
            if (MT > 2 && m >= M) break;
            const float t = NCH == 2 ? sq[0][r][m] + sq[NCH - 1][r][m] : sq[0][r][m];
            acc[r][m] = fmaf(s, t, acc[r][m]);
            if (FMT == VOX_CUDA_Q4) acc[r][m] = fmaf(mn, sxp[m * 32], acc[r][m]);
        }
    }
}

#endif
