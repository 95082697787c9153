/* voxtral_qdot_avx512.c - the quantized dot kernels with AVX-512 (F + BW, + VL for the
 * masked scale loads; CPU_ISA avx512, or native on such a CPU). Formats and rule:
 * voxtral_quant.h: per group Q8 adds s * sum(q x), Q4 adds s * sum(q x) + m * sum(x);
 * weights are widened exactly (int8 / nibble -> fp32), x stays fp32, every product and
 * sum is fp32.
 *
 * Memory: the decoder step streams every weight once from DRAM. Q8 / Q4 take 2-4x the
 * instructions per weight byte of the BF16 kernel, so the out-of-order window alone
 * covers too few bytes ahead to keep enough cache misses in flight (measured: Q8 at
 * ~60% of the BF16 kernel's GB/s, its time about memory time + compute time). Every
 * kernel here therefore prefetches its weight bytes ahead (per 64-byte line: PF_NEAR
 * ahead into L1, PF_FAR ahead into L2; past the row's end that is the next row, which
 * the caller's loop over rows reads next) and its scales PF_SCALE_BYTES ahead.
 * M = 1 (row1, the decoder step): the row's whole groups with G a compile-time constant
 * for G = 32 / 64 / 128 (unrolled); a group's sum(q x) is one FMA chain (no horizontal
 * adds per group), scaled into one of 4 accumulators; the F16 scales are converted 16
 * at a time (vcvtph2ps, exact). The last, partial group goes through rows().
 * M > 1 (rows): up to MB input rows per pass (mb a compile-time constant per instance),
 * each 16 (Q8) or 32 (Q4) columns widened once for all of them. Columns past the last
 * whole 16 / 32 of a group (a partial last group) take a scalar tail.
 * Q4's nibbles become fp32 as: low nibble through a 16-entry table (vpermps reads only
 * the low 4 bits of each index: no mask), high nibble shifted down and converted. */
#include <immintrin.h>

#include "voxtral_quant.h"

const char vox_qdot_isa[] = "avx512";

enum { MB = 8,                   /* input rows per pass of rows() (M > 1) */
       PF_NEAR = 512,            /* bytes ahead of the one read: prefetched into L1 */
       PF_FAR = 4096,            /* and further ahead: into L2 */
       PF_SCALE_BYTES = 256 };   /* scale bytes ahead: into L1 (Q8: 8 KB of weights) */

/* Prefetches the line PF_NEAR bytes past p into L1 and the one PF_FAR past it into L2.
 * Measured on the 2-core Xeon (M = 1, decoder-shaped matrices, 2 threads): Q8 reached
 * ~19.5 GB/s with one L1 prefetch 2 KB ahead, ~22.5 GB/s with these two (the BF16
 * kernel, without prefetches: ~18 GB/s). A macro, not a function: GCC 12 dropped the
 * prefetches of a static inline function holding only _mm_prefetch once inlined
 * (seen in the asm: a loop calling it was deleted). */
#define prefetch(p) \
    (_mm_prefetch((const char *)(p) + PF_NEAR, _MM_HINT_T0), _mm_prefetch((const char *)(p) + PF_FAR, _MM_HINT_T2))
#define prefetch_scales(p) _mm_prefetch((const char *)(p) + PF_SCALE_BYTES, _MM_HINT_T0)

/* Up to 16 F16 values at h (n of them, the rest 0) as fp32 in out[16]; exact (a
 * masked load: nothing past h + n is read) */
static inline void f16x16(const uint16_t *h, int64_t n, float *out) {
#if defined(__AVX512VL__)
    const __mmask16 k = n >= 16 ? (__mmask16)0xffff : (__mmask16)((1u << n) - 1);
    _mm512_storeu_ps(out, _mm512_cvtph_ps(_mm256_maskz_loadu_epi16(k, h)));
#else
    for (int64_t i = 0; i < 16; i++) out[i] = i < n ? vox_f16_to_f32(h[i]) : 0.0f;
#endif
}

/* 16 int8 at p as fp32 */
static inline __m512 q8x16(const int8_t *p) {
    return _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(_mm_loadu_si128((const __m128i *)p)));
}

/* ---- M > 1: up to MB input rows per pass ----------------------------------------- */
/* Q8, mb input rows (a compile-time constant in each instance), every group of the row:
 * each 16 columns widened once for the mb rows; scales converted 16 at a time; the
 * columns past the last whole 16 of a group (a partial last group) take the scalar
 * tail, scaled separately */
static inline __attribute__((always_inline)) void rows_q8(const int8_t *row, const uint16_t *sc, int64_t K,
                                                          int G, const float *x, int64_t ldx, const int mb,
                                                          float *y, int64_t ldy) {
    const int64_t ng = vox_q_groups(K, G);
    __m512 acc[MB];
    float tail[MB], s[16];
    for (int m = 0; m < mb; m++) acc[m] = _mm512_setzero_ps(), tail[m] = 0.0f;
    for (int64_t g = 0; g < ng; g++) {
        if (g % 16 == 0) f16x16(sc + g, ng - g, s);
        const int64_t k0 = g * G, n = K - k0 < G ? K - k0 : G;
        const int8_t *q = row + k0;
        __m512 ga[MB];
        for (int m = 0; m < mb; m++) ga[m] = _mm512_setzero_ps();
        int64_t k = 0;
        for (; k + 16 <= n; k += 16) {
            if ((k & 63) == 0) prefetch(q + k);
            const __m512 wv = q8x16(q + k);
            for (int m = 0; m < mb; m++) ga[m] = _mm512_fmadd_ps(wv, _mm512_loadu_ps(x + m * ldx + k0 + k), ga[m]);
        }
        const float sg = s[g % 16];
        const __m512 sv = _mm512_set1_ps(sg);
        for (int m = 0; m < mb; m++) acc[m] = _mm512_fmadd_ps(sv, ga[m], acc[m]);
        if (k < n)
            for (int m = 0; m < mb; m++) {
                float t = 0.0f;
                for (int64_t j = k; j < n; j++) t += (float)q[j] * x[m * ldx + k0 + j];
                tail[m] += sg * t;
            }
    }
    for (int m = 0; m < mb; m++) y[m * ldy] = _mm512_reduce_add_ps(acc[m]) + tail[m];
}

/* Q4, the same: each 32 columns (16 bytes) widened once for the mb rows; per group
 * s * sum(q x) + m * sum(x) */
static inline __attribute__((always_inline)) void rows_q4(const uint8_t *row, const uint16_t *sc, int64_t K,
                                                          int G, const float *x, int64_t ldx, const int mb,
                                                          float *y, int64_t ldy) {
    const int64_t ng = vox_q_groups(K, G);
    const __m512 tab = _mm512_setr_ps(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15);
    __m512 acc[MB];
    float tail[MB], sm[16]; /* (s, m) of 8 groups */
    for (int m = 0; m < mb; m++) acc[m] = _mm512_setzero_ps(), tail[m] = 0.0f;
    for (int64_t g = 0; g < ng; g++) {
        if (g % 8 == 0) f16x16(sc + 2 * g, 2 * (ng - g), sm);
        const int64_t k0 = g * G, n = K - k0 < G ? K - k0 : G;
        __m512 ga[MB], gx[MB];
        for (int m = 0; m < mb; m++) ga[m] = gx[m] = _mm512_setzero_ps();
        int64_t k = 0;
        for (; k + 32 <= n; k += 32) {
            if ((k & 127) == 0) prefetch(row + (k0 + k) / 2);
            const __m512i b = _mm512_cvtepu8_epi32(_mm_loadu_si128((const __m128i *)(row + (k0 + k) / 2)));
            const __m512 w0 = _mm512_permutexvar_ps(b, tab), w1 = _mm512_cvtepi32_ps(_mm512_srli_epi32(b, 4));
            for (int m = 0; m < mb; m++) {
                const float *xp = x + m * ldx + k0 + k;
                const __m512 x0 = _mm512_loadu_ps(xp), x1 = _mm512_loadu_ps(xp + 16);
                ga[m] = _mm512_fmadd_ps(w1, x1, _mm512_fmadd_ps(w0, x0, ga[m]));
                gx[m] = _mm512_add_ps(gx[m], _mm512_add_ps(x0, x1));
            }
        }
        const float sg = sm[2 * (g % 8)], mg = sm[2 * (g % 8) + 1];
        const __m512 sv = _mm512_set1_ps(sg), mv = _mm512_set1_ps(mg);
        for (int m = 0; m < mb; m++) acc[m] = _mm512_fmadd_ps(mv, gx[m], _mm512_fmadd_ps(sv, ga[m], acc[m]));
        if (k < n)
            for (int m = 0; m < mb; m++) {
                float t = 0.0f, tx = 0.0f;
                for (int64_t j = k; j < n; j++) {
                    const int64_t c = k0 + j;
                    const uint8_t bb = row[c / 32 * 16 + (c & 15)];
                    const float xv = x[m * ldx + c];
                    t += (float)((c & 16) ? bb >> 4 : bb & 15) * xv;
                    tx += xv;
                }
                tail[m] += sg * t + mg * tx;
            }
    }
    for (int m = 0; m < mb; m++) y[m * ldy] = _mm512_reduce_add_ps(acc[m]) + tail[m];
}

/* mb (1..MB) input rows of row r: rows_q8 / rows_q4 with mb as a constant */
static void rows(const vox_weight *w, int64_t r, const float *x, int64_t ldx, int mb, float *y, int64_t ldy) {
    const int G = w->group;
    const int64_t K = w->cols;
    const uint16_t *sc = w->scales + r * vox_q_scale_count(w->dtype, K, G);
    const uint8_t *row = (const uint8_t *)w->data + r * vox_q_row_bytes(w->dtype, K, G);
#define ROWS_CASE(n)                                                                        \
    case n:                                                                                 \
        if (w->dtype == VOX_DT_Q8) rows_q8((const int8_t *)row, sc, K, G, x, ldx, n, y, ldy); \
        else rows_q4(row, sc, K, G, x, ldx, n, y, ldy);                                     \
        break;
    switch (mb) {
        ROWS_CASE(1) ROWS_CASE(2) ROWS_CASE(3) ROWS_CASE(4) ROWS_CASE(5) ROWS_CASE(6) ROWS_CASE(7) ROWS_CASE(8)
    }
#undef ROWS_CASE
}

/* ---- M = 1 ----------------------------------------------------------------------- */
/* Q8, group g of the row: sum(q x) over its G columns, one FMA chain. GC > 0: G known
 * at compile time (the common 32 / 64 / 128, unrolled); GC = 0: any G (a multiple of
 * 32), Gr. */
static inline __attribute__((always_inline)) __m512 q8_group(const int8_t *q, const float *x, int64_t g,
                                                             int GC, int Gr) {
    const int G = GC ? GC : Gr;
    const int8_t *qg = q + g * G;
    const float *xg = x + g * G;
    __m512 t = _mm512_setzero_ps();
    for (int k = 0; k < G; k += 16) {
        /* one prefetch per 64-byte line (G = 32: every other group), in the loop that
         * does the work (GCC 12 deleted a loop of prefetches alone, see prefetch) */
        if (k % 64 == 0 && (G >= 64 || g % 2 == 0)) prefetch(qg + k);
        const __m512 wv = q8x16(qg + k), xv = _mm512_loadu_ps(xg + k);
        t = k ? _mm512_fmadd_ps(wv, xv, t) : _mm512_mul_ps(wv, xv);
    }
    return t;
}

/* Q8, M = 1, the `full` whole groups of a row: sum_g s_g * sum(q x), 4 groups at a time
 * into 4 accumulators, the scales converted 16 at a time */
static inline __attribute__((always_inline)) __m512 q8_row_groups(const int8_t *q, const uint16_t *sc,
                                                                  const float *x, int64_t full, int GC, int Gr) {
    __m512 a0 = _mm512_setzero_ps(), a1 = _mm512_setzero_ps(), a2 = _mm512_setzero_ps(), a3 = _mm512_setzero_ps();
    float s[16];
    for (int64_t g0 = 0; g0 < full; g0 += 16) {
        const int64_t gn = full - g0 < 16 ? full - g0 : 16;
        f16x16(sc + g0, gn, s);
        prefetch_scales(sc + g0);
        int64_t j = 0;
        for (; j + 4 <= gn; j += 4) {
            a0 = _mm512_fmadd_ps(_mm512_set1_ps(s[j]), q8_group(q, x, g0 + j, GC, Gr), a0);
            a1 = _mm512_fmadd_ps(_mm512_set1_ps(s[j + 1]), q8_group(q, x, g0 + j + 1, GC, Gr), a1);
            a2 = _mm512_fmadd_ps(_mm512_set1_ps(s[j + 2]), q8_group(q, x, g0 + j + 2, GC, Gr), a2);
            a3 = _mm512_fmadd_ps(_mm512_set1_ps(s[j + 3]), q8_group(q, x, g0 + j + 3, GC, Gr), a3);
        }
        for (; j < gn; j++) a0 = _mm512_fmadd_ps(_mm512_set1_ps(s[j]), q8_group(q, x, g0 + j, GC, Gr), a0);
    }
    return _mm512_add_ps(_mm512_add_ps(a0, a1), _mm512_add_ps(a2, a3));
}

/* Q4, group g of the row: acc + s * sum(q x) + m * sum(x) over its G columns (GC, Gr as
 * in q8_group). Each 16 bytes hold 32 columns: the low nibbles columns 0-15, the high
 * ones 16-31. */
static inline __attribute__((always_inline)) __m512 q4_group(const uint8_t *q, const float *x, int64_t g,
                                                             __m512 s, __m512 m, __m512 acc, int GC, int Gr) {
    const int G = GC ? GC : Gr;
    const __m512 tab = _mm512_setr_ps(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15);
    const uint8_t *qg = q + g * G / 2;
    const float *xg = x + g * G;
    __m512 t = _mm512_setzero_ps(), sx = _mm512_setzero_ps();
    for (int k = 0; k < G; k += 32) {
        /* one prefetch per 64-byte line, as in q8_group (G = 32, 64: every 4th, 2nd
         * group; another G under 128: every group) */
        if (G >= 128 ? k % 128 == 0 : k == 0 && (!GC || g % (128 / G) == 0)) prefetch(qg + k / 2);
        const __m512i b = _mm512_cvtepu8_epi32(_mm_loadu_si128((const __m128i *)(qg + k / 2)));
        const __m512 x0 = _mm512_loadu_ps(xg + k), x1 = _mm512_loadu_ps(xg + k + 16);
        t = _mm512_fmadd_ps(_mm512_permutexvar_ps(b, tab), x0, t);
        t = _mm512_fmadd_ps(_mm512_cvtepi32_ps(_mm512_srli_epi32(b, 4)), x1, t);
        sx = _mm512_add_ps(sx, _mm512_add_ps(x0, x1));
    }
    return _mm512_fmadd_ps(m, sx, _mm512_fmadd_ps(s, t, acc));
}

/* Q4, M = 1, the `full` whole groups of a row: sum_g s_g * sum(q x) + m_g * sum(x), 4
 * groups at a time into 4 accumulators, the (s, m) pairs converted 8 groups at a time */
static inline __attribute__((always_inline)) __m512 q4_row_groups(const uint8_t *q, const uint16_t *sc,
                                                                  const float *x, int64_t full, int GC, int Gr) {
    __m512 a0 = _mm512_setzero_ps(), a1 = _mm512_setzero_ps(), a2 = _mm512_setzero_ps(), a3 = _mm512_setzero_ps();
    float sm[16]; /* (s, m) of 8 groups */
#define Q4G(j, a) a = q4_group(q, x, g0 + (j), _mm512_set1_ps(sm[2 * (j)]), _mm512_set1_ps(sm[2 * (j) + 1]), a, GC, Gr)
    for (int64_t g0 = 0; g0 < full; g0 += 8) {
        const int64_t gn = full - g0 < 8 ? full - g0 : 8;
        f16x16(sc + 2 * g0, 2 * gn, sm);
        prefetch_scales(sc + 2 * g0);
        int64_t j = 0;
        for (; j + 4 <= gn; j += 4) {
            Q4G(j, a0);
            Q4G(j + 1, a1);
            Q4G(j + 2, a2);
            Q4G(j + 3, a3);
        }
        for (; j < gn; j++) Q4G(j, a0);
    }
#undef Q4G
    return _mm512_add_ps(_mm512_add_ps(a0, a1), _mm512_add_ps(a2, a3));
}

/* M = 1: the whole groups above (G by its value: 32, 64, 128 unrolled), the last,
 * partial group through rows() */
static float row1(const vox_weight *w, int64_t r, const float *x) {
    const int G = w->group;
    const int64_t K = w->cols, ng = vox_q_groups(K, G), full = K / G; /* whole groups */
    const uint16_t *sc = w->scales + r * vox_q_scale_count(w->dtype, K, G);
    const uint8_t *row = (const uint8_t *)w->data + r * vox_q_row_bytes(w->dtype, K, G);
    __m512 a;
    if (w->dtype == VOX_DT_Q8) {
        const int8_t *q = (const int8_t *)row;
        switch (G) {
        case 32: a = q8_row_groups(q, sc, x, full, 32, G); break;
        case 64: a = q8_row_groups(q, sc, x, full, 64, G); break;
        case 128: a = q8_row_groups(q, sc, x, full, 128, G); break;
        default: a = q8_row_groups(q, sc, x, full, 0, G); break;
        }
    } else {
        switch (G) {
        case 32: a = q4_row_groups(row, sc, x, full, 32, G); break;
        case 64: a = q4_row_groups(row, sc, x, full, 64, G); break;
        case 128: a = q4_row_groups(row, sc, x, full, 128, G); break;
        default: a = q4_row_groups(row, sc, x, full, 0, G); break;
        }
    }
    float s = _mm512_reduce_add_ps(a);
    if (full < ng) { /* the last, partial group: the general loop on a view of it */
        vox_weight t = *w;
        const int64_t k0 = full * G;
        float rest;
        t.cols = K - k0;
        t.rows = 1;
        t.data = row + (w->dtype == VOX_DT_Q4 ? k0 / 2 : k0);
        t.scales = sc + (w->dtype == VOX_DT_Q4 ? 2 * full : full);
        rows(&t, 0, x + k0, 0, 1, &rest, 0);
        s += rest;
    }
    return s;
}

void vox_qdot_rows(const vox_weight *w, int64_t r, const float *x, int64_t ldx, int M, float *y,
                   int64_t ldy) {
    if (M == 1) {
        y[0] = row1(w, r, x);
        return;
    }
    for (int m0 = 0; m0 < M; m0 += MB)
        rows(w, r, x + m0 * ldx, ldx, M - m0 < MB ? M - m0 : MB, y + m0 * ldy, ldy);
}
