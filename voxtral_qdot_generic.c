/* voxtral_qdot_generic.c - the quantized dot kernels in plain C (CPU_ISA=generic, or
 * a compiler target without AVX2). Formats and rule: voxtral_quant.h. Per group:
 * Q8 adds s * sum(q x), Q4 adds s * sum(q x) + m * sum(x), all fp32. */
#include "voxtral_quant.h"

const char vox_qdot_isa[] = "generic";

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
            float sqx = 0.0f, sx = 0.0f;
            if (w->dtype == VOX_DT_Q8) {
                const int8_t *q = (const int8_t *)row + k0;
                for (int64_t k = 0; k < n; k++) sqx += (float)q[k] * xm[k0 + k];
                acc += vox_f16_to_f32(sc[g]) * sqx;
            } else {
                for (int64_t k = 0; k < n; k++) {
                    const int64_t c = k0 + k;
                    const uint8_t b = row[c / 32 * 16 + (c & 15)];
                    sqx += (float)((c & 16) ? b >> 4 : b & 15) * xm[c];
                    sx += xm[c];
                }
                acc += vox_f16_to_f32(sc[2 * g]) * sqx + vox_f16_to_f32(sc[2 * g + 1]) * sx;
            }
        }
        y[m * ldy] = acc;
    }
}
