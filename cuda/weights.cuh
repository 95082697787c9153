/* cuda/weights.cuh - reading weights of any device dtype (VOX_CUDA_BF16, _F16,
 * _F32) as fp32: the GEMV kernels and the embedding gather are templated on it.
 * Everything here is plain loads, shifts and cvt: valid from sm_60 on (no BF16
 * math intrinsics, which need sm_80).
 */
#ifndef VOXTRAL_CUDA_WEIGHTS_CUH
#define VOXTRAL_CUDA_WEIGHTS_CUH

#include <cuda_fp16.h>

#include "voxtral_cuda.h"

/* 8 consecutive weights as raw bits: one 16-byte load for BF16 / F16, two for F32 */
template <int WT> struct w8 {
    uint4 v[WT == VOX_CUDA_F32 ? 2 : 1];
};

/* Loads per lane kept in flight by a GEMV: 4 x 16 bytes whatever the dtype */
template <int WT> __host__ __device__ constexpr int w_unroll() { return WT == VOX_CUDA_F32 ? 2 : 4; }

/* w = row[8c .. 8c+7] (row 16-byte aligned), streamed (read once: not kept in
 * L1/L2); zeros when !in. Fills in place: a struct-valued ?: would go through
 * local memory. */
template <int WT> __device__ __forceinline__ void w8_load(w8<WT> &w, const uint4 *row, int c, bool in) {
    const uint4 *p = row + (WT == VOX_CUDA_F32 ? 2 * c : c);
    w.v[0] = in ? __ldcs(p) : make_uint4(0, 0, 0, 0);
    if constexpr (WT == VOX_CUDA_F32) w.v[1] = in ? __ldcs(p + 1) : make_uint4(0, 0, 0, 0);
}

/* two F16 in one word -> fp32 (cvt.f32.f16: every architecture) */
__device__ __forceinline__ float2 f16x2_to_f32(unsigned u) {
    return make_float2(__half2float(__ushort_as_half((unsigned short)(u & 0xffffu))),
                       __half2float(__ushort_as_half((unsigned short)(u >> 16))));
}

/* sum over the 8 of w[i] * (a, b)[i], fp32 */
__device__ __forceinline__ float w8_dot(const w8<VOX_CUDA_BF16> &w, float4 a, float4 b) {
    /* a BF16 is the top half of an fp32: widening is a shift */
    float s = __uint_as_float(w.v[0].x << 16) * a.x;
    s = fmaf(__uint_as_float(w.v[0].x & 0xffff0000u), a.y, s);
    s = fmaf(__uint_as_float(w.v[0].y << 16), a.z, s);
    s = fmaf(__uint_as_float(w.v[0].y & 0xffff0000u), a.w, s);
    s = fmaf(__uint_as_float(w.v[0].z << 16), b.x, s);
    s = fmaf(__uint_as_float(w.v[0].z & 0xffff0000u), b.y, s);
    s = fmaf(__uint_as_float(w.v[0].w << 16), b.z, s);
    s = fmaf(__uint_as_float(w.v[0].w & 0xffff0000u), b.w, s);
    return s;
}

__device__ __forceinline__ float w8_dot(const w8<VOX_CUDA_F16> &w, float4 a, float4 b) {
    float2 p = f16x2_to_f32(w.v[0].x), q = f16x2_to_f32(w.v[0].y);
    float2 r = f16x2_to_f32(w.v[0].z), t = f16x2_to_f32(w.v[0].w);
    float s = p.x * a.x;
    s = fmaf(p.y, a.y, s);
    s = fmaf(q.x, a.z, s);
    s = fmaf(q.y, a.w, s);
    s = fmaf(r.x, b.x, s);
    s = fmaf(r.y, b.y, s);
    s = fmaf(t.x, b.z, s);
    s = fmaf(t.y, b.w, s);
    return s;
}

__device__ __forceinline__ float w8_dot(const w8<VOX_CUDA_F32> &w, float4 a, float4 b) {
    float s = __uint_as_float(w.v[0].x) * a.x;
    s = fmaf(__uint_as_float(w.v[0].y), a.y, s);
    s = fmaf(__uint_as_float(w.v[0].z), a.z, s);
    s = fmaf(__uint_as_float(w.v[0].w), a.w, s);
    s = fmaf(__uint_as_float(w.v[1].x), b.x, s);
    s = fmaf(__uint_as_float(w.v[1].y), b.y, s);
    s = fmaf(__uint_as_float(w.v[1].z), b.z, s);
    s = fmaf(__uint_as_float(w.v[1].w), b.w, s);
    return s;
}

/* element i of a weight array, as fp32 */
template <int WT> __device__ __forceinline__ float w_load1(const void *w, int64_t i) {
    if constexpr (WT == VOX_CUDA_BF16)
        return __uint_as_float((unsigned)static_cast<const uint16_t *>(w)[i] << 16);
    else if constexpr (WT == VOX_CUDA_F16)
        return __half2float(__ushort_as_half(static_cast<const unsigned short *>(w)[i]));
    else
        return static_cast<const float *>(w)[i];
}

#endif
