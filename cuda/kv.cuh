/* cuda/kv.cuh - the KV rings' element types: float (VOX_CUDA_F32) or kv_bf16
 * (VOX_CUDA_BF16: the bits of a bfloat16). The ring kernels (cuda/attention.cu,
 * cuda/norm_rope.cu) are templated on it: loads widen to fp32 (exact), stores round
 * fp32 to nearest even with the CPU twin's bit rule (f32_to_bf16, voxtral_kernels.c:
 * a NaN stays a quiet NaN of the same sign and top payload), so both backends store
 * the same bytes. For float every helper is the plain load or store.
 * Vector loads of n elements need the element offset a multiple of n and the ring
 * 4 * n (float) or 2 * n (bf16) bytes aligned: head dims are multiples of 32, rings
 * come from cudaMalloc.
 */
#ifndef VOXTRAL_CUDA_KV_CUH
#define VOXTRAL_CUDA_KV_CUH

#include <stdint.h>
#include <type_traits>

struct kv_bf16 {
    uint16_t bits;
};

__device__ __forceinline__ uint16_t kv_f32_to_bf16(float f) {
    const uint32_t u = __float_as_uint(f);
    if ((u & 0x7fffffffu) > 0x7f800000u) return (uint16_t)((u >> 16) | 0x40);
    return (uint16_t)((u + 0x7fffu + ((u >> 16) & 1)) >> 16);
}
__device__ __forceinline__ float kv_bf16_to_f32(uint32_t b) { return __uint_as_float(b << 16); }

__device__ __forceinline__ float kv_get(const float *p) { return *p; }
__device__ __forceinline__ float kv_get(const kv_bf16 *p) { return kv_bf16_to_f32(p->bits); }
__device__ __forceinline__ void kv_put(float *p, float v) { *p = v; }
__device__ __forceinline__ void kv_put(kv_bf16 *p, float v) { p->bits = kv_f32_to_bf16(v); }
/* p[0] = v.x, p[1] = v.y: one 8-byte (float) or 4-byte (bf16) store; p 2-element aligned */
__device__ __forceinline__ void kv_put2(float *p, float2 v) { *reinterpret_cast<float2 *>(p) = v; }
__device__ __forceinline__ void kv_put2(kv_bf16 *p, float2 v) {
    *reinterpret_cast<uint32_t *>(p) = (uint32_t)kv_f32_to_bf16(v.x) | (uint32_t)kv_f32_to_bf16(v.y) << 16;
}
/* v as a ring of KV gives it back once stored */
template <typename KV> __device__ __forceinline__ float kv_round(float v) {
    if constexpr (std::is_same<KV, kv_bf16>::value) return kv_bf16_to_f32(kv_f32_to_bf16(v));
    else return v;
}

/* r[0..N) = p[0..N) as fp32, N = 1, 2, 4 or 8: one load (two float4 for 8 floats; p
 * N-element aligned) */
template <int N>
__device__ __forceinline__ void kv_load_vec(float (&r)[N], const float *p) {
    if constexpr (N == 8) {
        const float4 a = *reinterpret_cast<const float4 *>(p), b = *reinterpret_cast<const float4 *>(p + 4);
        r[0] = a.x; r[1] = a.y; r[2] = a.z; r[3] = a.w; r[4] = b.x; r[5] = b.y; r[6] = b.z; r[7] = b.w;
    } else if constexpr (N == 4) {
        float4 v = *reinterpret_cast<const float4 *>(p);
        r[0] = v.x; r[1] = v.y; r[2] = v.z; r[3] = v.w;
    } else if constexpr (N == 2) {
        float2 v = *reinterpret_cast<const float2 *>(p);
        r[0] = v.x; r[1] = v.y;
    } else {
        r[0] = p[0];
    }
}
template <int N>
__device__ __forceinline__ void kv_load_vec(float (&r)[N], const kv_bf16 *p) {
    if constexpr (N == 8) {
        const uint4 v = *reinterpret_cast<const uint4 *>(p);
        const uint32_t w[4] = {v.x, v.y, v.z, v.w};
#pragma unroll
        for (int i = 0; i < 4; i++) {
            r[2 * i] = __uint_as_float(w[i] << 16);
            r[2 * i + 1] = __uint_as_float(w[i] & 0xffff0000u);
        }
    } else if constexpr (N == 4) {
        uint2 v = *reinterpret_cast<const uint2 *>(p);
        r[0] = __uint_as_float(v.x << 16); r[1] = __uint_as_float(v.x & 0xffff0000u);
        r[2] = __uint_as_float(v.y << 16); r[3] = __uint_as_float(v.y & 0xffff0000u);
    } else if constexpr (N == 2) {
        uint32_t v = *reinterpret_cast<const uint32_t *>(p);
        r[0] = __uint_as_float(v << 16); r[1] = __uint_as_float(v & 0xffff0000u);
    } else {
        r[0] = kv_bf16_to_f32(p->bits);
    }
}

#endif
