/* voxtral_qdot_generic.c - the quantized dot kernels in plain C (CPU_ISA=generic, or
 * a compiler target without AVX2). Formats and rule: voxtral_quant.h. Per group:
 * Q8 adds s * sum(q x), Q4 adds s * sum(q x) + m * sum(x), all fp32.
 *
 * Each group's sums are formed in QG_LANES independent partial sums (lane j takes the
 * columns j, j + QG_LANES, ...), which the compiler can keep in vector registers
 * (SSE2 on x86-64) and which avoid one serial add chain per group; the lanes are then
 * added in a fixed order. Columns past the last whole QG_LANES of a group (a partial
 * last group) are added one by one. With GCC / Clang the weight bytes are prefetched
 * ahead as the AVX kernels do (the decoder step streams its weights from memory and
 * needs misses in flight). Every M input row is done on its own (the weight
 * row is read again from cache for each). */
#include "voxtral_quant.h"

const char vox_qdot_isa[] = "generic";

enum { QG_LANES = 16, QG_PF_NEAR = 512, QG_PF_FAR = 4096 };

/* the line QG_PF_NEAR bytes past p into L1, the one QG_PF_FAR past it into L2 */
#if defined(__GNUC__)
#define qg_prefetch(p) \
    (__builtin_prefetch((const char *)(p) + QG_PF_NEAR, 0, 3), __builtin_prefetch((const char *)(p) + QG_PF_FAR, 0, 1))
#else
#define qg_prefetch(p) ((void)0)
#endif

static float qg_lanes_sum(const float *l) {
    float s = 0.0f;
    for (int j = 0; j < QG_LANES; j++) s += l[j];
    return s;
}

/* Q8 group: sum(q x) over n columns */
static float qg_q8_group(const int8_t *q, const float *x, int64_t n) {
    float l[QG_LANES] = {0};
    int64_t k = 0;
    for (; k + QG_LANES <= n; k += QG_LANES) {
        if (k % 64 == 0) qg_prefetch(q + k);
        for (int j = 0; j < QG_LANES; j++) l[j] += (float)q[k + j] * x[k + j];
    }
    float s = qg_lanes_sum(l);
    for (; k < n; k++) s += (float)q[k] * x[k];
    return s;
}

/* Q4 group (columns c0 .. c0 + n of the row, c0 a multiple of 32): sum(q x) in *sqx,
 * sum(x) in *sx. Each 16 bytes hold 32 columns: byte j column j in its low nibble,
 * column j + 16 in its high one. */
static void qg_q4_group(const uint8_t *row, int64_t c0, const float *x, int64_t n, float *sqx, float *sx) {
    float l[QG_LANES] = {0}, lx[QG_LANES] = {0};
    int64_t k = 0;
    for (; k + 32 <= n; k += 32) {
        const uint8_t *b = row + (c0 + k) / 2;
        const float *xk = x + k;
        if (k % 128 == 0) qg_prefetch(b);
        for (int j = 0; j < 16; j++) {
            l[j] += (float)(b[j] & 15) * xk[j] + (float)(b[j] >> 4) * xk[j + 16];
            lx[j] += xk[j] + xk[j + 16];
        }
    }
    float s = qg_lanes_sum(l), t = qg_lanes_sum(lx);
    for (; k < n; k++) {
        const int64_t c = c0 + k;
        const uint8_t b = row[c / 32 * 16 + (c & 15)];
        s += (float)((c & 16) ? b >> 4 : b & 15) * x[k];
        t += x[k];
    }
    *sqx = s;
    *sx = t;
}

void vox_qdot_rows(const vox_weight *w, int64_t r, const float *x, int64_t ldx, int M, float *y,
                   int64_t ldy) {
    const int G = w->group;
    const int64_t K = w->cols, ng = vox_q_groups(K, G);
    const uint16_t *sc = w->scales + r * vox_q_scale_count(w->dtype, K, G);
    const uint8_t *row = (const uint8_t *)w->data + r * vox_q_row_bytes(w->dtype, K, G);
    for (int m = 0; m < M; m++) {
        const float *xm = x + m * ldx;
        float acc = 0.0f;
        for (int64_t g = 0; g < ng; g++) {
            const int64_t k0 = g * G, n = K - k0 < G ? K - k0 : G;
            if (w->dtype == VOX_DT_Q8) {
                acc += vox_f16_to_f32(sc[g]) * qg_q8_group((const int8_t *)row + k0, xm + k0, n);
            } else {
                float sqx, sx;
                qg_q4_group(row, k0, xm + k0, n, &sqx, &sx);
                acc += vox_f16_to_f32(sc[2 * g]) * sqx + vox_f16_to_f32(sc[2 * g + 1]) * sx;
            }
        }
        y[m * ldy] = acc;
    }
}
