/* voxtral_quant.h - quantized weights: the formats, their exact dequantization rule,
 * quantization at load, quantized model directories, and the CPU dot kernels.
 *
 * Formats (a matrix [rows][cols], quantized per row in groups of G columns, G a
 * multiple of 32; ng = ceil(cols / G) groups; the last group covers the
 * cols - (ng - 1) * G columns left, its storage padded to G):
 *   Q8: data int8 [rows][ng * G], symmetric, q in [-127, 127];
 *       scales F16 [rows][ng]:           w[r][k] = s[r][k / G] * q[r][k]
 *   Q4: data uint8 [rows][ng * G / 2]: every 32 columns 16 bytes, byte j holding
 *       column j in its low nibble and column j + 16 in its high one; q in [0, 15];
 *       scales F16 [rows][ng][2] = (s, m): w[r][k] = s * q[r][k] + m
 * s and m are read as fp32 from their F16 bits; every product and sum is fp32.
 * Padding columns hold q = 0 (Q8) / 0 (Q4) and are never read as weights.
 *
 * Quantization (the reference rule, voxtral_quant.c), per group of real columns:
 *   Q8: s = f16(max|w| / 127), q = clamp(rint(w / s), -127, 127) (s = 0: q = 0)
 *   Q4: m = f16(min w), s = f16((max w - m) / 15), q = clamp(rint((w - m) / s), 0, 15)
 *       (s = 0: q = 0)
 * A checkpoint quantized this way (voxtral --quantize) records the format in
 * params.json: "quantization": {"format": "q4", "group_size": 64, "encoder": "q8"}.
 * Matrices quantized: the decoder's wq wk wv wo w1 w2 w3 and the tied embedding /
 * LM head take `format`; the encoder's and the adapter's take `encoder` (bf16 or
 * q8); the conv stem, the ada-norm matrices and every vector stay as they are.
 */
#ifndef VOXTRAL_QUANT_H
#define VOXTRAL_QUANT_H

#include <stdint.h>

#include "voxtral_internal.h"

enum { VOX_QGROUP_MIN = 32, VOX_QGROUP_MAX = 256, VOX_QGROUP_DEFAULT = 64 };

/* F16 bits -> fp32 (every value, subnormals and inf/NaN included) */
static inline float vox_f16_to_f32(uint16_t h) {
    union { uint32_t u; float f; } v;
    uint32_t sign = (uint32_t)(h & 0x8000u) << 16, e = (h >> 10) & 0x1fu, man = h & 0x3ffu;
    if (e == 0x1f) {
        v.u = sign | 0x7f800000u | man << 13;
    } else if (e == 0) {
        v.f = (float)man * 5.9604644775390625e-8f; /* man * 2^-24 */
        v.u |= sign;
    } else {
        v.u = sign | (e + 112) << 23 | man << 13;
    }
    return v.f;
}
/* fp32 -> F16 bits, round to nearest even; overflow gives inf */
uint16_t vox_f32_to_f16(float f);

/* groups per row, stored bytes per row, bytes of the scales per row */
static inline int64_t vox_q_groups(int64_t cols, int group) { return (cols + group - 1) / group; }
static inline int64_t vox_q_row_bytes(vox_dtype dt, int64_t cols, int group) {
    return vox_q_groups(cols, group) * group / (dt == VOX_DT_Q4 ? 2 : 1);
}
static inline int64_t vox_q_scale_count(vox_dtype dt, int64_t cols, int group) {
    return vox_q_groups(cols, group) * (dt == VOX_DT_Q4 ? 2 : 1);
}
static inline int vox_dtype_quantized(vox_dtype dt) { return dt == VOX_DT_Q8 || dt == VOX_DT_Q4; }

/* Bytes a weight occupies in its host dtype (data + scales); its backend copy's
 * bytes with dev (dev_dtype) */
double vox_weight_bytes(const vox_weight *w);
double vox_weight_dev_bytes(const vox_weight *w);
/* The bytes of every matrix and vector of the model as loaded */
double vox_model_weight_bytes(const vox_model *m);
const char *vox_dtype_name(vox_dtype dt); /* "bf16", "q8", ... */

/* Row r of a Q8 / Q4 weight as fp32 (cols values), by the exact rule above */
void vox_q_dequant_row(const vox_weight *w, int64_t r, float *out);
/* Quantizes n_rows rows of fp32 [n_rows][cols] into data (vox_q_row_bytes each) and
 * scales (vox_q_scale_count each), by the reference rule above */
void vox_q_quantize_rows(vox_dtype dt, int group, const float *w, int64_t n_rows, int64_t cols,
                         void *data, uint16_t *scales);

/* A quantization choice: "q8" | "q4" [":" GROUP [":" ENCODER]], ENCODER bf16 | q8
 * (default: q8 for the encoder and adapter, group VOX_QGROUP_DEFAULT) */
typedef struct {
    vox_dtype fmt, enc;
    int group;
} vox_quant;
int vox_quant_parse(const char *spec, vox_quant *q);

/* Quantizes a BF16-loaded model in memory (the mmap'd matrices it replaces are
 * dropped from memory). Fails on a model that is already quantized. */
int vox_model_quantize(vox_model *m, const vox_quant *q, int verbose);
/* Writes the model (BF16 or quantized) as a model directory out_dir (created if
 * needed): consolidated.safetensors, params.json with "quantization", tekken.json
 * copied from src_dir. */
int vox_model_write(const vox_model *m, const char *src_dir, const char *out_dir);

/* The model's weight bytes once quantized by q (its matrices BF16 now) */
double vox_quant_model_bytes(const vox_model *m, const vox_quant *q);
/* vox_quantize_dir and vox_quant_spec_check are public (voxtral.h) */

/* Calls fn on every matrix the quantization policy covers, with its checkpoint name
 * and whether it belongs to the decoder side (1: `format`) or the encoder side (0). */
typedef int (*vox_matrix_fn)(vox_weight *w, const char *name, int decoder, void *arg);
int vox_each_quant_matrix(vox_model *m, vox_matrix_fn fn, void *arg);

/* ---- CPU kernels (voxtral_qdot_<isa>.c: avx512, avx2 or generic, chosen by the
 * build from CPU_ISA; same results up to fp32 summation order) ----------------------
 * y[m * ldy] = dequant(row r of w) . x[m * ldx .. + cols) for m < M */
void vox_qdot_rows(const vox_weight *w, int64_t r, const float *x, int64_t ldx, int M, float *y,
                   int64_t ldy);
extern const char vox_qdot_isa[]; /* "avx512", "avx2", "generic" */

#endif
