/* voxtral_qdot_avx512.c - the quantized dot kernels with AVX-512 (F + BW; CPU_ISA
 * avx512, or native on such a CPU). Formats and rule: voxtral_quant.h. Each 16- or
 * 32-column block is widened to fp32 once and used for up to 4 input rows; per group
 * Q8 adds s * sum(q x), Q4 adds s * sum(q x) + m * sum(x), all fp32. Columns past the
 * last whole block (cols not a multiple of 16 / 32) take the scalar tail. */
#include <immintrin.h>

#include "voxtral_quant.h"

const char vox_qdot_isa[] = "avx512";

enum { MB = 4 };

static void rows4(const vox_weight *w, int64_t r, const float *x, int64_t ldx, int mb, float *y,
                  int64_t ldy) {
    const int G = w->group;
    const int64_t K = w->cols, ng = vox_q_groups(K, G);
    const uint16_t *sc = w->scales + r * vox_q_scale_count(w->dtype, K, G);
    const uint8_t *row = (const uint8_t *)w->data + r * vox_q_row_bytes(w->dtype, K, G);
    __m512 acc[MB];
    float tail[MB];
    for (int m = 0; m < MB; m++) acc[m] = _mm512_setzero_ps(), tail[m] = 0.0f;
    if (w->dtype == VOX_DT_Q8) {
        for (int64_t g = 0; g < ng; g++) {
            const int64_t k0 = g * G, n = K - k0 < G ? K - k0 : G;
            const int8_t *q = (const int8_t *)row + k0;
            __m512 ga[MB];
            for (int m = 0; m < MB; m++) ga[m] = _mm512_setzero_ps();
            int64_t k = 0;
            for (; k + 16 <= n; k += 16) {
                __m512 wv = _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(_mm_loadu_si128((const __m128i *)(q + k))));
#pragma GCC unroll 4
                for (int m = 0; m < MB; m++)
                    if (m < mb) ga[m] = _mm512_fmadd_ps(wv, _mm512_loadu_ps(x + m * ldx + k0 + k), ga[m]);
            }
            const float s = vox_f16_to_f32(sc[g]);
            const __m512 sv = _mm512_set1_ps(s);
            for (int m = 0; m < mb; m++) {
                acc[m] = _mm512_fmadd_ps(sv, ga[m], acc[m]);
                float t = 0.0f;
                for (int64_t j = k; j < n; j++) t += (float)q[j] * x[m * ldx + k0 + j];
                tail[m] += s * t;
            }
        }
    } else {
        const __m512i lo4 = _mm512_set1_epi32(15);
        for (int64_t g = 0; g < ng; g++) {
            const int64_t k0 = g * G, n = K - k0 < G ? K - k0 : G;
            __m512 ga[MB], gx[MB];
            for (int m = 0; m < MB; m++) ga[m] = gx[m] = _mm512_setzero_ps();
            int64_t k = 0;
            for (; k + 32 <= n; k += 32) {
                __m512i b = _mm512_cvtepu8_epi32(_mm_loadu_si128((const __m128i *)(row + (k0 + k) / 2)));
                __m512 w0 = _mm512_cvtepi32_ps(_mm512_and_si512(b, lo4));
                __m512 w1 = _mm512_cvtepi32_ps(_mm512_srli_epi32(b, 4));
#pragma GCC unroll 4
                for (int m = 0; m < MB; m++)
                    if (m < mb) {
                        const float *xp = x + m * ldx + k0 + k;
                        __m512 x0 = _mm512_loadu_ps(xp), x1 = _mm512_loadu_ps(xp + 16);
                        ga[m] = _mm512_fmadd_ps(w1, x1, _mm512_fmadd_ps(w0, x0, ga[m]));
                        gx[m] = _mm512_add_ps(gx[m], _mm512_add_ps(x0, x1));
                    }
            }
            const float s = vox_f16_to_f32(sc[2 * g]), mn = vox_f16_to_f32(sc[2 * g + 1]);
            const __m512 sv = _mm512_set1_ps(s), mv = _mm512_set1_ps(mn);
            for (int m = 0; m < mb; m++) {
                acc[m] = _mm512_fmadd_ps(mv, gx[m], _mm512_fmadd_ps(sv, ga[m], acc[m]));
                float t = 0.0f, tx = 0.0f;
                for (int64_t j = k; j < n; j++) {
                    const int64_t c = k0 + j;
                    const uint8_t bb = row[c / 32 * 16 + (c & 15)];
                    const float xv = x[m * ldx + c];
                    t += (float)((c & 16) ? bb >> 4 : bb & 15) * xv;
                    tx += xv;
                }
                tail[m] += s * t + mn * tx;
            }
        }
    }
    for (int m = 0; m < mb; m++) y[m * ldy] = _mm512_reduce_add_ps(acc[m]) + tail[m];
}

/* M = 1, the decoder step: independent accumulators (one FMA chain per 16 columns
 * would be latency-bound), whole 64-column blocks, the rest through rows4 */
static float row1(const vox_weight *w, int64_t r, const float *x) {
    const int G = w->group;
    const int64_t K = w->cols, ng = vox_q_groups(K, G), full = K / G; /* whole groups */
    const uint16_t *sc = w->scales + r * vox_q_scale_count(w->dtype, K, G);
    const uint8_t *row = (const uint8_t *)w->data + r * vox_q_row_bytes(w->dtype, K, G);
    __m512 acc0 = _mm512_setzero_ps(), acc1 = _mm512_setzero_ps();
    if (w->dtype == VOX_DT_Q8) {
        for (int64_t g = 0; g < full; g++) {
            const int8_t *q = (const int8_t *)row + g * G;
            const float *xg = x + g * G;
            __m512 a0 = _mm512_setzero_ps(), a1 = _mm512_setzero_ps(), a2 = _mm512_setzero_ps(), a3 = _mm512_setzero_ps();
            for (int k = 0; k < G; k += 64) {
#define Q8V(o) _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(_mm_loadu_si128((const __m128i *)(q + k + (o)))))
                a0 = _mm512_fmadd_ps(Q8V(0), _mm512_loadu_ps(xg + k), a0);
                a1 = _mm512_fmadd_ps(Q8V(16), _mm512_loadu_ps(xg + k + 16), a1);
                a2 = _mm512_fmadd_ps(Q8V(32), _mm512_loadu_ps(xg + k + 32), a2);
                a3 = _mm512_fmadd_ps(Q8V(48), _mm512_loadu_ps(xg + k + 48), a3);
#undef Q8V
            }
            const __m512 sv = _mm512_set1_ps(vox_f16_to_f32(sc[g]));
            const __m512 t = _mm512_add_ps(_mm512_add_ps(a0, a1), _mm512_add_ps(a2, a3));
            if (g & 1) acc1 = _mm512_fmadd_ps(sv, t, acc1);
            else acc0 = _mm512_fmadd_ps(sv, t, acc0);
        }
    } else {
        const __m512i lo4 = _mm512_set1_epi32(15);
        for (int64_t g = 0; g < full; g++) {
            const uint8_t *q = row + g * G / 2;
            const float *xg = x + g * G;
            __m512 a0 = _mm512_setzero_ps(), a1 = _mm512_setzero_ps(), a2 = _mm512_setzero_ps(), a3 = _mm512_setzero_ps();
            __m512 s0 = _mm512_setzero_ps(), s1 = _mm512_setzero_ps();
            for (int k = 0; k < G; k += 64) {
                __m512i b0 = _mm512_cvtepu8_epi32(_mm_loadu_si128((const __m128i *)(q + k / 2)));
                __m512i b1 = _mm512_cvtepu8_epi32(_mm_loadu_si128((const __m128i *)(q + k / 2 + 16)));
                __m512 x0 = _mm512_loadu_ps(xg + k), x1 = _mm512_loadu_ps(xg + k + 16);
                __m512 x2 = _mm512_loadu_ps(xg + k + 32), x3 = _mm512_loadu_ps(xg + k + 48);
                a0 = _mm512_fmadd_ps(_mm512_cvtepi32_ps(_mm512_and_si512(b0, lo4)), x0, a0);
                a1 = _mm512_fmadd_ps(_mm512_cvtepi32_ps(_mm512_srli_epi32(b0, 4)), x1, a1);
                a2 = _mm512_fmadd_ps(_mm512_cvtepi32_ps(_mm512_and_si512(b1, lo4)), x2, a2);
                a3 = _mm512_fmadd_ps(_mm512_cvtepi32_ps(_mm512_srli_epi32(b1, 4)), x3, a3);
                s0 = _mm512_add_ps(s0, _mm512_add_ps(x0, x1));
                s1 = _mm512_add_ps(s1, _mm512_add_ps(x2, x3));
            }
            const __m512 sv = _mm512_set1_ps(vox_f16_to_f32(sc[2 * g])), mv = _mm512_set1_ps(vox_f16_to_f32(sc[2 * g + 1]));
            const __m512 t = _mm512_add_ps(_mm512_add_ps(a0, a1), _mm512_add_ps(a2, a3));
            if (g & 1) acc1 = _mm512_fmadd_ps(mv, _mm512_add_ps(s0, s1), _mm512_fmadd_ps(sv, t, acc1));
            else acc0 = _mm512_fmadd_ps(mv, _mm512_add_ps(s0, s1), _mm512_fmadd_ps(sv, t, acc0));
        }
    }
    float s = _mm512_reduce_add_ps(_mm512_add_ps(acc0, acc1));
    if (full < ng) { /* the last, partial group: the general loop on a view of it */
        vox_weight t = *w;
        const int64_t k0 = full * G;
        float rest;
        t.cols = K - k0;
        t.rows = 1;
        t.data = row + (w->dtype == VOX_DT_Q4 ? k0 / 2 : k0);
        t.scales = sc + (w->dtype == VOX_DT_Q4 ? 2 * full : full);
        rows4(&t, 0, x + k0, 0, 1, &rest, 0);
        s += rest;
    }
    return s;
}

void vox_qdot_rows(const vox_weight *w, int64_t r, const float *x, int64_t ldx, int M, float *y,
                   int64_t ldy) {
    if (M == 1 && w->group % 64 == 0) {
        y[0] = row1(w, r, x);
        return;
    }
    for (int m0 = 0; m0 < M; m0 += MB)
        rows4(w, r, x + m0 * ldx, ldx, M - m0 < MB ? M - m0 : MB, y + m0 * ldy, ldy);
}
