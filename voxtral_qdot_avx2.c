/* voxtral_qdot_avx2.c - the quantized dot kernels with AVX2 + FMA (+ F16C; CPU_ISA avx2,
 * or native on such a CPU). Formats and rule: voxtral_quant.h: per group Q8 adds
 * s * sum(q x), Q4 adds s * sum(q x) + m * sum(x); weights are widened exactly
 * (int8 / nibble -> fp32), x stays fp32, every product and sum is fp32.
 *
 * The structure is that of voxtral_qdot_avx512.c with 8 lanes (see there why): every
 * kernel prefetches its weight bytes ahead (per 64-byte line: PF_NEAR ahead into L1,
 * PF_FAR ahead into L2) and its scales PF_SCALE_BYTES ahead, so that enough cache
 * misses stay in flight.
 * M = 1 (row1, the decoder step): the row's whole groups, G a compile-time constant for
 * 32 / 64 / 128; a group's sum(q x) is two FMA chains (even / odd 8 columns), scaled
 * into one of 4 accumulators; scales converted 8 at a time (vcvtph2ps, exact). The
 * last, partial group goes through a2_rows().
 * M > 1 (a2_rows): up to MB input rows per pass (mb a compile-time constant per
 * instance: 4 rows keep the accumulators in the 16 ymm registers), each 16 columns
 * widened once for all of them; columns past the last whole 16 (Q8) / 32 (Q4) of a
 * group take a scalar tail. Q4: 8 bytes widened to 8 dwords give 8 columns in the low
 * nibbles (& 15) and the 8 columns 16 further on in the high ones (>> 4). */
#include <immintrin.h>

#include "voxtral_quant.h"

const char vox_qdot_isa[] = "avx2";

enum { MB = 4,                   /* input rows per pass of a2_rows() (M > 1) */
       PF_NEAR = 512,            /* bytes ahead of the one read: prefetched into L1 */
       PF_FAR = 4096,            /* and further ahead: into L2 */
       PF_SCALE_BYTES = 256 };   /* scale bytes ahead: into L1 */

/* The line PF_NEAR bytes past p into L1, the one PF_FAR past it into L2 (the pair the
 * AVX-512 kernels measured best). A macro, not a function: GCC 12 dropped the
 * prefetches of a static inline function holding only _mm_prefetch once inlined
 * (seen in the asm: a loop calling it was deleted). */
#define prefetch(p) \
    (_mm_prefetch((const char *)(p) + PF_NEAR, _MM_HINT_T0), _mm_prefetch((const char *)(p) + PF_FAR, _MM_HINT_T2))
#define prefetch_scales(p) _mm_prefetch((const char *)(p) + PF_SCALE_BYTES, _MM_HINT_T0)

static inline float hsum8(__m256 a) {
    __m128 h = _mm_add_ps(_mm256_castps256_ps128(a), _mm256_extractf128_ps(a, 1));
    h = _mm_add_ps(h, _mm_movehl_ps(h, h));
    h = _mm_add_ss(h, _mm_movehdup_ps(h));
    return _mm_cvtss_f32(h);
}

/* 8 int8 at p as 8 fp32 */
static inline __m256 i8x8(const void *p) {
    return _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_loadl_epi64((const __m128i *)p)));
}

/* 8 bytes at p zero-extended to 8 dwords */
static inline __m256i a2_u8x8(const void *p) { return _mm256_cvtepu8_epi32(_mm_loadl_epi64((const __m128i *)p)); }

/* Up to 8 F16 values at h (n of them, the rest 0) as fp32 in out[8]; exact; nothing
 * past h + n is read */
static inline void a2_f16x8(const uint16_t *h, int64_t n, float *out) {
#if defined(__F16C__)
    __m128i v;
    if (n >= 8) {
        v = _mm_loadu_si128((const __m128i *)h);
    } else {
        uint16_t t[8] = {0};
        for (int64_t i = 0; i < n; i++) t[i] = h[i];
        v = _mm_loadu_si128((const __m128i *)t);
    }
    _mm256_storeu_ps(out, _mm256_cvtph_ps(v));
#else
    for (int64_t i = 0; i < 8; i++) out[i] = i < n ? vox_f16_to_f32(h[i]) : 0.0f;
#endif
}

/* ---- M > 1: up to MB input rows per pass ----------------------------------------- */
/* Q8, mb input rows (a compile-time constant in each instance), every group of the row */
static inline __attribute__((always_inline)) void a2_rows_q8(const int8_t *row, const uint16_t *sc, int64_t K,
                                                             int G, const float *x, int64_t ldx, const int mb,
                                                             float *y, int64_t ldy) {
    const int64_t ng = vox_q_groups(K, G);
    __m256 acc[MB];
    float tail[MB], s[8];
    for (int m = 0; m < mb; m++) acc[m] = _mm256_setzero_ps(), tail[m] = 0.0f;
    for (int64_t g = 0; g < ng; g++) {
        if (g % 8 == 0) a2_f16x8(sc + g, ng - g, s);
        const int64_t k0 = g * G, n = K - k0 < G ? K - k0 : G;
        const int8_t *q = row + k0;
        __m256 ga[MB];
        for (int m = 0; m < mb; m++) ga[m] = _mm256_setzero_ps();
        int64_t k = 0;
        for (; k + 16 <= n; k += 16) {
            if ((k & 63) == 0) prefetch(q + k);
            const __m256 w0 = i8x8(q + k), w1 = i8x8(q + k + 8);
            for (int m = 0; m < mb; m++) {
                const float *xp = x + m * ldx + k0 + k;
                ga[m] = _mm256_fmadd_ps(w1, _mm256_loadu_ps(xp + 8), _mm256_fmadd_ps(w0, _mm256_loadu_ps(xp), ga[m]));
            }
        }
        const float sg = s[g % 8];
        const __m256 sv = _mm256_set1_ps(sg);
        for (int m = 0; m < mb; m++) acc[m] = _mm256_fmadd_ps(sv, ga[m], acc[m]);
        if (k < n)
            for (int m = 0; m < mb; m++) {
                float t = 0.0f;
                for (int64_t j = k; j < n; j++) t += (float)q[j] * x[m * ldx + k0 + j];
                tail[m] += sg * t;
            }
    }
    for (int m = 0; m < mb; m++) y[m * ldy] = hsum8(acc[m]) + tail[m];
}

/* Q4, the same: each 32 columns (16 bytes) widened once for the mb rows, 16 columns at
 * a time (8 bytes: 8 low-nibble columns and the 8 high-nibble ones 16 further on) */
static inline __attribute__((always_inline)) void a2_rows_q4(const uint8_t *row, const uint16_t *sc, int64_t K,
                                                             int G, const float *x, int64_t ldx, const int mb,
                                                             float *y, int64_t ldy) {
    const int64_t ng = vox_q_groups(K, G);
    const __m256i lo4 = _mm256_set1_epi32(15);
    __m256 acc[MB];
    float tail[MB], sm[8]; /* (s, m) of 4 groups */
    for (int m = 0; m < mb; m++) acc[m] = _mm256_setzero_ps(), tail[m] = 0.0f;
    for (int64_t g = 0; g < ng; g++) {
        if (g % 4 == 0) a2_f16x8(sc + 2 * g, 2 * (ng - g), sm);
        const int64_t k0 = g * G, n = K - k0 < G ? K - k0 : G;
        __m256 ga[MB], gx[MB];
        for (int m = 0; m < mb; m++) ga[m] = gx[m] = _mm256_setzero_ps();
        int64_t k = 0;
        for (; k + 32 <= n; k += 32) {
            const uint8_t *b = row + (k0 + k) / 2;
            if ((k & 127) == 0) prefetch(b);
            for (int h = 0; h < 16; h += 8) {
                const __m256i d = a2_u8x8(b + h);
                const __m256 w0 = _mm256_cvtepi32_ps(_mm256_and_si256(d, lo4));
                const __m256 w1 = _mm256_cvtepi32_ps(_mm256_srli_epi32(d, 4));
                for (int m = 0; m < mb; m++) {
                    const float *xp = x + m * ldx + k0 + k + h;
                    const __m256 x0 = _mm256_loadu_ps(xp), x1 = _mm256_loadu_ps(xp + 16);
                    ga[m] = _mm256_fmadd_ps(w1, x1, _mm256_fmadd_ps(w0, x0, ga[m]));
                    gx[m] = _mm256_add_ps(gx[m], _mm256_add_ps(x0, x1));
                }
            }
        }
        const float sg = sm[2 * (g % 4)], mg = sm[2 * (g % 4) + 1];
        const __m256 sv = _mm256_set1_ps(sg), mv = _mm256_set1_ps(mg);
        for (int m = 0; m < mb; m++) acc[m] = _mm256_fmadd_ps(mv, gx[m], _mm256_fmadd_ps(sv, ga[m], acc[m]));
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
    for (int m = 0; m < mb; m++) y[m * ldy] = hsum8(acc[m]) + tail[m];
}

/* mb (1..MB) input rows of row r: a2_rows_q8 / a2_rows_q4 with mb as a constant */
static void a2_rows(const vox_weight *w, int64_t r, const float *x, int64_t ldx, int mb, float *y,
                    int64_t ldy) {
    const int G = w->group;
    const int64_t K = w->cols;
    const uint16_t *sc = w->scales + r * vox_q_scale_count(w->dtype, K, G);
    const uint8_t *row = (const uint8_t *)w->data + r * vox_q_row_bytes(w->dtype, K, G);
#define ROWS_CASE(n)                                                                             \
    case n:                                                                                      \
        if (w->dtype == VOX_DT_Q8) a2_rows_q8((const int8_t *)row, sc, K, G, x, ldx, n, y, ldy); \
        else a2_rows_q4(row, sc, K, G, x, ldx, n, y, ldy);                                       \
        break;
    switch (mb) {
        ROWS_CASE(1) ROWS_CASE(2) ROWS_CASE(3) ROWS_CASE(4)
    }
#undef ROWS_CASE
}

/* ---- M = 1 ----------------------------------------------------------------------- */
/* Q8, group g of the row: sum(q x) over its G columns (GC > 0: G known at compile
 * time, unrolled; GC = 0: any G, a multiple of 32), as two chains */
static inline __attribute__((always_inline)) __m256 a2_q8_group(const int8_t *q, const float *x, int64_t g,
                                                                int GC, int Gr) {
    const int G = GC ? GC : Gr;
    const int8_t *qg = q + g * G;
    const float *xg = x + g * G;
    __m256 t0 = _mm256_setzero_ps(), t1 = _mm256_setzero_ps();
    for (int k = 0; k < G; k += 16) {
        /* one prefetch per 64-byte line (G = 32: every other group), in the loop that
         * does the work */
        if (k % 64 == 0 && (G >= 64 || g % 2 == 0)) prefetch(qg + k);
        t0 = _mm256_fmadd_ps(i8x8(qg + k), _mm256_loadu_ps(xg + k), t0);
        t1 = _mm256_fmadd_ps(i8x8(qg + k + 8), _mm256_loadu_ps(xg + k + 8), t1);
    }
    return _mm256_add_ps(t0, t1);
}

/* Q8, M = 1, the `full` whole groups of a row: sum_g s_g * sum(q x), 4 groups at a time
 * into 4 accumulators, the scales converted 8 at a time */
static inline __attribute__((always_inline)) __m256 a2_q8_row_groups(const int8_t *q, const uint16_t *sc,
                                                                     const float *x, int64_t full, int GC,
                                                                     int Gr) {
    __m256 a0 = _mm256_setzero_ps(), a1 = _mm256_setzero_ps(), a2 = _mm256_setzero_ps(), a3 = _mm256_setzero_ps();
    float s[8];
    for (int64_t g0 = 0; g0 < full; g0 += 8) {
        const int64_t gn = full - g0 < 8 ? full - g0 : 8;
        a2_f16x8(sc + g0, gn, s);
        prefetch_scales(sc + g0);
        int64_t j = 0;
        for (; j + 4 <= gn; j += 4) {
            a0 = _mm256_fmadd_ps(_mm256_set1_ps(s[j]), a2_q8_group(q, x, g0 + j, GC, Gr), a0);
            a1 = _mm256_fmadd_ps(_mm256_set1_ps(s[j + 1]), a2_q8_group(q, x, g0 + j + 1, GC, Gr), a1);
            a2 = _mm256_fmadd_ps(_mm256_set1_ps(s[j + 2]), a2_q8_group(q, x, g0 + j + 2, GC, Gr), a2);
            a3 = _mm256_fmadd_ps(_mm256_set1_ps(s[j + 3]), a2_q8_group(q, x, g0 + j + 3, GC, Gr), a3);
        }
        for (; j < gn; j++) a0 = _mm256_fmadd_ps(_mm256_set1_ps(s[j]), a2_q8_group(q, x, g0 + j, GC, Gr), a0);
    }
    return _mm256_add_ps(_mm256_add_ps(a0, a1), _mm256_add_ps(a2, a3));
}

/* Q4, group g of the row: acc + s * sum(q x) + m * sum(x) over its G columns (GC, Gr as
 * in a2_q8_group), sum(q x) as two chains (low / high nibbles) */
static inline __attribute__((always_inline)) __m256 a2_q4_group(const uint8_t *q, const float *x, int64_t g,
                                                                __m256 s, __m256 m, __m256 acc, int GC,
                                                                int Gr) {
    const int G = GC ? GC : Gr;
    const __m256i lo4 = _mm256_set1_epi32(15);
    const uint8_t *qg = q + g * G / 2;
    const float *xg = x + g * G;
    __m256 t0 = _mm256_setzero_ps(), t1 = _mm256_setzero_ps(), sx = _mm256_setzero_ps();
    for (int k = 0; k < G; k += 32) {
        /* one prefetch per 64-byte line (G = 32, 64: every 4th, 2nd group; another G
         * under 128: every group) */
        if (G >= 128 ? k % 128 == 0 : k == 0 && (!GC || g % (128 / G) == 0)) prefetch(qg + k / 2);
        for (int h = 0; h < 16; h += 8) {
            const __m256i d = a2_u8x8(qg + k / 2 + h);
            const __m256 x0 = _mm256_loadu_ps(xg + k + h), x1 = _mm256_loadu_ps(xg + k + 16 + h);
            t0 = _mm256_fmadd_ps(_mm256_cvtepi32_ps(_mm256_and_si256(d, lo4)), x0, t0);
            t1 = _mm256_fmadd_ps(_mm256_cvtepi32_ps(_mm256_srli_epi32(d, 4)), x1, t1);
            sx = _mm256_add_ps(sx, _mm256_add_ps(x0, x1));
        }
    }
    return _mm256_fmadd_ps(m, sx, _mm256_fmadd_ps(s, _mm256_add_ps(t0, t1), acc));
}

/* Q4, M = 1, the `full` whole groups of a row: sum_g s_g * sum(q x) + m_g * sum(x), 4
 * groups at a time into 4 accumulators, the (s, m) pairs converted 4 groups at a time */
static inline __attribute__((always_inline)) __m256 a2_q4_row_groups(const uint8_t *q, const uint16_t *sc,
                                                                     const float *x, int64_t full, int GC,
                                                                     int Gr) {
    __m256 a0 = _mm256_setzero_ps(), a1 = _mm256_setzero_ps(), a2 = _mm256_setzero_ps(), a3 = _mm256_setzero_ps();
    float sm[8]; /* (s, m) of 4 groups */
    for (int64_t g0 = 0; g0 < full; g0 += 4) {
        const int64_t gn = full - g0 < 4 ? full - g0 : 4;
        a2_f16x8(sc + 2 * g0, 2 * gn, sm);
        prefetch_scales(sc + 2 * g0);
#define Q4G(j, a) a = a2_q4_group(q, x, g0 + (j), _mm256_set1_ps(sm[2 * (j)]), _mm256_set1_ps(sm[2 * (j) + 1]), a, GC, Gr)
        if (gn == 4) {
            Q4G(0, a0);
            Q4G(1, a1);
            Q4G(2, a2);
            Q4G(3, a3);
        } else {
            for (int64_t j = 0; j < gn; j++) Q4G(j, a0);
        }
#undef Q4G
    }
    return _mm256_add_ps(_mm256_add_ps(a0, a1), _mm256_add_ps(a2, a3));
}

/* M = 1: the whole groups above (G by its value: 32, 64, 128 unrolled), the last,
 * partial group through a2_rows() */
static float row1(const vox_weight *w, int64_t r, const float *x) {
    const int G = w->group;
    const int64_t K = w->cols, ng = vox_q_groups(K, G), full = K / G;
    const uint16_t *sc = w->scales + r * vox_q_scale_count(w->dtype, K, G);
    const uint8_t *row = (const uint8_t *)w->data + r * vox_q_row_bytes(w->dtype, K, G);
    __m256 a;
    if (w->dtype == VOX_DT_Q8) {
        const int8_t *q = (const int8_t *)row;
        switch (G) {
        case 32: a = a2_q8_row_groups(q, sc, x, full, 32, G); break;
        case 64: a = a2_q8_row_groups(q, sc, x, full, 64, G); break;
        case 128: a = a2_q8_row_groups(q, sc, x, full, 128, G); break;
        default: a = a2_q8_row_groups(q, sc, x, full, 0, G); break;
        }
    } else {
        switch (G) {
        case 32: a = a2_q4_row_groups(row, sc, x, full, 32, G); break;
        case 64: a = a2_q4_row_groups(row, sc, x, full, 64, G); break;
        case 128: a = a2_q4_row_groups(row, sc, x, full, 128, G); break;
        default: a = a2_q4_row_groups(row, sc, x, full, 0, G); break;
        }
    }
    float s = hsum8(a);
    if (full < ng) { /* the last, partial group: the general loop on a view of it */
        vox_weight t = *w;
        const int64_t k0 = full * G;
        float rest;
        t.cols = K - k0;
        t.rows = 1;
        t.data = row + (w->dtype == VOX_DT_Q4 ? k0 / 2 : k0);
        t.scales = sc + (w->dtype == VOX_DT_Q4 ? 2 * full : full);
        a2_rows(&t, 0, x + k0, 0, 1, &rest, 0);
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
        a2_rows(w, r, x + m0 * ldx, ldx, M - m0 < MB ? M - m0 : MB, y + m0 * ldy, ldy);
}
