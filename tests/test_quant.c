/* test_quant.c - quantized weights on the CPU (formats: voxtral_quant.h).
 *
 *   - F16 conversion: every F16 value round-trips; fp32 -> F16 rounds to nearest even
 *     (against the test's own rounding);
 *   - the quantization rule: every dequantized weight within the format's bound of the
 *     BF16 one (Q8: s/2, Q4: s/2, plus the F16 rounding of s and m), q in range, and
 *     padding columns zero; for widths that are not a multiple of the group (96, 160,
 *     200 with groups of 32 .. 128);
 *   - the dot kernels: this build's (avx512 / avx2 / generic) and the other ISA files
 *     this CPU runs, compiled in here under other names, against the exact rule
 *     (double sums over vox_q_dequant_row): |err| <= 1e-5 * sum |w x|;
 *   - the backend ops (linear at M = 1, 3, 8, 20 with bias / GELU / accumulate,
 *     norm_linear, swiglu_linear, embed) with Q8 / Q4 weights: against the exact rule,
 *     and against the same op on the BF16 weights within the format's error bound
 *     (sum_k |x_k| * bound_k).
 */
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "voxtral_internal.h"
#include "voxtral_quant.h"
#include "testutil.h"

/* the portable kernels, and AVX2 on a CPU that has it, under their own names */
#define vox_qdot_rows generic_qdot_rows
#define vox_qdot_isa generic_qdot_isa
#include "../voxtral_qdot_generic.c"
#undef vox_qdot_rows
#undef vox_qdot_isa
#if defined(__AVX2__) && defined(__FMA__)
#define vox_qdot_rows avx2_qdot_rows
#define vox_qdot_isa avx2_qdot_isa
#define rows4 avx2_rows4
#define hsum8 avx2_hsum8
#define i8x8 avx2_i8x8
#define MB AVX2_MB
#define row1 avx2_row1
#include "../voxtral_qdot_avx2.c"
#undef vox_qdot_rows
#undef vox_qdot_isa
#define HAVE_AVX2_KERNELS 1
#else
#define HAVE_AVX2_KERNELS 0
#endif
#undef vox_qdot_rows
void vox_qdot_rows(const vox_weight *w, int64_t r, const float *x, int64_t ldx, int M, float *y,
                   int64_t ldy);


/* frand, to_bf16, rand_f: tests/testutil.h */
/* the test's own F16 rounding (normal range and subnormals, nearest even) */
static uint16_t ref_f16(float f) {
    union { float f; uint32_t u; } v = {f};
    uint32_t sign = (v.u >> 16) & 0x8000u, a = v.u & 0x7fffffffu;
    if (a >= 0x477ff000u) return (uint16_t)(sign | 0x7c00u);
    if (a < 0x38800000u) return (uint16_t)(sign | lrintf(fabsf(f) * 16777216.0f));
    return (uint16_t)(sign | (((a + 0xfffu + ((a >> 13) & 1)) >> 13) - (112u << 10)));
}

/* a BF16 matrix of gaussian-ish rows with a few outliers, some rows all zero or constant */
static vox_weight bf16_matrix(int64_t rows, int64_t cols, float scale) {
    uint16_t *p = malloc(sizeof(uint16_t) * rows * cols);
    for (int64_t r = 0; r < rows; r++)
        for (int64_t k = 0; k < cols; k++) {
            float v = (frand() + frand() + frand()) * scale;
            if (frand() > 0.995f) v *= 8;
            if (r == 1) v = 0;
            if (r == 2) v = 0.25f * scale;
            p[r * cols + k] = to_bf16(v);
        }
    return (vox_weight){.dtype = VOX_DT_BF16, .rows = rows, .cols = cols, .data = p, .dev_dtype = VOX_DT_BF16};
}

static vox_weight quantized(const vox_weight *b, vox_dtype dt, int G) {
    const int64_t R = b->rows, K = b->cols;
    float *f = malloc(sizeof(float) * R * K);
    for (int64_t i = 0; i < R * K; i++) f[i] = vox_bf16_to_f32(((const uint16_t *)b->data)[i]);
    void *data = malloc((size_t)(R * vox_q_row_bytes(dt, K, G)));
    uint16_t *sc = malloc(sizeof(uint16_t) * R * vox_q_scale_count(dt, K, G));
    vox_q_quantize_rows(dt, G, f, R, K, data, sc);
    free(f);
    return (vox_weight){.dtype = dt, .rows = R, .cols = K, .data = data, .dev_dtype = dt, .scales = sc, .group = G};
}
static void qfree(vox_weight *w) {
    free((void *)w->data);
    free((void *)w->scales);
}

/* bound on |dequant - bf16| for column k of row r */
static double elem_bound(const vox_weight *q, int64_t r, int64_t k) {
    const int64_t g = k / q->group, ns = vox_q_scale_count(q->dtype, q->cols, q->group);
    const uint16_t *sc = q->scales + r * ns;
    if (q->dtype == VOX_DT_Q8) {
        double s = vox_f16_to_f32(sc[g]);
        return 0.5 * s + s * 127 * (1.0 / 1024) + 1e-30; /* the F16 rounding of s can clamp */
    }
    double s = vox_f16_to_f32(sc[2 * g]), m = vox_f16_to_f32(sc[2 * g + 1]);
    return 0.5 * s + (fabs(m) + 15 * s) * (1.0 / 1024) + 1e-30;
}

static void test_f16(void) {
    int bad = 0;
    for (uint32_t h = 0; h < 65536; h++) {
        if ((h & 0x7c00u) == 0x7c00u && (h & 0x3ffu)) continue; /* NaN */
        if (vox_f32_to_f16(vox_f16_to_f32((uint16_t)h)) != h) bad++;
    }
    tu_check(bad == 0, "f16: every value round-trips", "%d wrong", bad);
    bad = 0;
    for (int i = 0; i < 1000000; i++) {
        float f = frand() * powf(2.0f, (float)(i % 40 - 26));
        if (vox_f32_to_f16(f) != ref_f16(f)) bad++;
    }
    tu_check(bad == 0, "f16: fp32 rounds to nearest even (1M values, 2^-26 .. 2^13)", "%d wrong", bad);
}

static void test_rule(vox_dtype dt, int64_t K, int G) {
    vox_weight b = bf16_matrix(37, K, 0.02f);
    vox_weight q = quantized(&b, dt, G);
    float *row = malloc(sizeof(float) * K);
    int64_t bad = -1, range_bad = 0, pad_bad = 0;
    double worst = 0;
    for (int64_t r = 0; r < b.rows; r++) {
        vox_q_dequant_row(&q, r, row);
        for (int64_t k = 0; k < K; k++) {
            double d = fabs(row[k] - vox_bf16_to_f32(((const uint16_t *)b.data)[r * K + k]));
            double lim = elem_bound(&q, r, k);
            if (d / lim > worst) worst = d / lim;
            if (!(d <= lim) && bad < 0) bad = r * K + k;
        }
        const uint8_t *d = (const uint8_t *)q.data + r * vox_q_row_bytes(dt, K, G);
        for (int64_t k = 0; k < vox_q_groups(K, G) * G; k++) {
            int v = dt == VOX_DT_Q8 ? (int8_t)d[k] : (d[k / 32 * 16 + (k & 15)] >> ((k & 16) ? 4 : 0)) & 15;
            if (dt == VOX_DT_Q8 && v == -128) range_bad++;
            if (k >= K && v != 0) pad_bad++;
        }
    }
    tu_check(bad < 0 && !range_bad && !pad_bad, tu_name("%s rule, K=%lld group %d: |w - deq| within bound",
             vox_dtype_name(dt), (long long)K, G), "worst %.3f of the bound; %lld q out of range, %lld padding "
             "non-zero", worst, (long long)range_bad, (long long)pad_bad);
    free(row);
    qfree(&q);
    free((void *)b.data);
}

/* exact rule in double: ref[m][n] = sum_k deq[n][k] x[m][k]; mag = sum |deq x| */
static void rule_ref(const vox_weight *q, const float *x, int M, double *ref, double *mag) {
    float *row = malloc(sizeof(float) * q->cols);
    for (int64_t n = 0; n < q->rows; n++) {
        vox_q_dequant_row(q, n, row);
        for (int m = 0; m < M; m++) {
            double s = 0, a = 0;
            for (int64_t k = 0; k < q->cols; k++) {
                s += (double)row[k] * x[m * q->cols + k];
                a += fabs((double)row[k] * x[m * q->cols + k]);
            }
            ref[m * q->rows + n] = s;
            mag[m * q->rows + n] = a;
        }
    }
    free(row);
}

typedef void (*qdot_fn)(const vox_weight *, int64_t, const float *, int64_t, int, float *, int64_t);

static void test_kernel(const char *isa, qdot_fn fn, vox_dtype dt, int64_t K, int G) {
    const int M = 9;
    vox_weight b = bf16_matrix(19, K, 0.05f);
    vox_weight q = quantized(&b, dt, G);
    float *x = malloc(sizeof(float) * M * K), *y = malloc(sizeof(float) * M * q.rows);
    for (int64_t i = 0; i < M * K; i++) x[i] = frand() + 0.3f; /* a mean: Q4's min term matters */
    double *ref = malloc(sizeof(double) * M * q.rows), *mag = malloc(sizeof(double) * M * q.rows);
    rule_ref(&q, x, M, ref, mag);
    int ok = 1;
    double worst = 0;
    for (int mm = 1; mm <= M; mm += 4) /* M = 1, 5, 9: one block, a part, two blocks + 1 */
        for (int64_t n = 0; n < q.rows; n++) {
            for (int m = 0; m < mm; m++) y[m * q.rows + n] = NAN;
            fn(&q, n, x, K, mm, y + n, q.rows);
            for (int m = 0; m < mm; m++) {
                double d = fabs(y[m * q.rows + n] - ref[m * q.rows + n]), lim = 1e-5 * mag[m * q.rows + n] + 1e-30;
                if (d / lim > worst) worst = d / lim;
                ok &= d <= lim;
            }
        }
    tu_check(ok, tu_name("%s %s dot, K=%lld group %d, M=1,5,9 = exact rule", isa, vox_dtype_name(dt),
                         (long long)K, G), "worst %.3f of 1e-5 sum|w x|", worst);
    free(x), free(y), free(ref), free(mag);
    qfree(&q);
    free((void *)b.data);
}

/* ---- backend ops ---------------------------------------------------------------- */
static vox_backend *cpu;

/* got vs the rule (1e-5 relative to sum |w x|, + the op's own rounding) and vs the BF16
 * op within sum_k |x_k| bound_k (+ 1e-5 of the BF16 result's magnitude) */
static void compare(const char *name, const vox_weight *q, const float *x, const float *got_q,
                    const float *got_b, const double *ref, const double *mag, int M, double slack) {
    double wr = 0, wb = 0;
    int ok = 1;
    for (int m = 0; m < M; m++)
        for (int64_t n = 0; n < q->rows; n++) {
            const int64_t i = m * q->rows + n;
            double dr = fabs(got_q[i] - ref[i]), lr = 1e-5 * mag[i] + slack + 1e-30;
            double bound = 0;
            for (int64_t k = 0; k < q->cols; k++) bound += fabs(x[m * q->cols + k]) * elem_bound(q, n, k);
            double db = fabs(got_q[i] - got_b[i]), lb = bound + 1e-5 * mag[i] + slack + 1e-30;
            if (dr / lr > wr) wr = dr / lr;
            if (db / lb > wb) wb = db / lb;
            ok &= dr <= lr && db <= lb;
        }
    tu_check(ok, name, "worst %.3f of the rule's tolerance, %.3f of the format's bound vs BF16", wr, wb);
}

static void test_linear(vox_dtype dt, int64_t N, int64_t K, int G, int M, int with_bias, vox_act act, int acc) {
    vox_weight b = bf16_matrix(N, K, 0.03f);
    vox_weight q = quantized(&b, dt, G);
    float *bias = malloc(sizeof(float) * N);
    for (int64_t n = 0; n < N; n++) bias[n] = frand() * 0.1f;
    vox_weight bw = {.dtype = VOX_DT_F32, .rows = N, .cols = 1, .data = bias, .dev_dtype = VOX_DT_F32};
    float *x = malloc(sizeof(float) * M * K), *yq = malloc(sizeof(float) * M * N), *yb = malloc(sizeof(float) * M * N);
    for (int64_t i = 0; i < M * K; i++) x[i] = frand();
    double *ref = malloc(sizeof(double) * M * N), *mag = malloc(sizeof(double) * M * N);
    rule_ref(&q, x, M, ref, mag);
    for (int64_t i = 0; i < M * N; i++) {
        yq[i] = yb[i] = acc ? 0.5f : NAN;
        double v = ref[i] + (with_bias ? bias[i % N] : 0);
        if (act == VOX_ACT_GELU) v = 0.5 * v * (1 + erf(v / sqrt(2.0)));
        ref[i] = v + (acc ? 0.5 : 0);
    }
    cpu->linear(cpu, yq, x, &q, with_bias ? &bw : NULL, M, act, acc);
    cpu->linear(cpu, yb, x, &b, with_bias ? &bw : NULL, M, act, acc);
    /* GELU has slope <= 1.13: the bounds carry over with that factor */
    double slack = act == VOX_ACT_GELU ? 1e-6 : 1e-6;
    if (act == VOX_ACT_GELU)
        for (int64_t i = 0; i < M * N; i++) mag[i] *= 1.13;
    compare(tu_name("cpu linear %s N=%lld K=%lld group %d M=%d%s%s%s", vox_dtype_name(dt), (long long)N,
                    (long long)K, G, M, with_bias ? " bias" : "", act ? " gelu" : "", acc ? " +=" : ""),
            &q, x, yq, yb, ref, mag, M, slack);
    free(x), free(yq), free(yb), free(ref), free(mag), free(bias);
    qfree(&q);
    free((void *)b.data);
}

static void test_norm_linear(vox_dtype dt, int64_t K, int G, int M) {
    vox_weight b[3], q[3];
    const int64_t rows[3] = {128, 64, 64};
    for (int i = 0; i < 3; i++) b[i] = bf16_matrix(rows[i], K, 0.04f), q[i] = quantized(&b[i], dt, G);
    float *g = malloc(sizeof(float) * K), *s = malloc(sizeof(float) * K), *x = malloc(sizeof(float) * M * K);
    for (int64_t k = 0; k < K; k++) g[k] = 1 + 0.2f * frand(), s[k] = 1 + 0.1f * frand();
    for (int64_t i = 0; i < M * K; i++) x[i] = 3 * frand();
    vox_weight gw = {.dtype = VOX_DT_F32, .rows = K, .cols = 1, .data = g, .dev_dtype = VOX_DT_F32};
    vox_weight sw = gw;
    sw.data = s;
    float *xn = malloc(sizeof(float) * M * K);
    cpu->rmsnorm(cpu, xn, x, &gw, &sw, M, (int)K, 1e-5f);
    float *yq[3], *yb[3];
    const vox_weight *wq[3] = {&q[0], &q[1], &q[2]}, *wb[3] = {&b[0], &b[1], &b[2]};
    for (int i = 0; i < 3; i++) yq[i] = malloc(sizeof(float) * M * rows[i]), yb[i] = malloc(sizeof(float) * M * rows[i]);
    cpu->norm_linear(cpu, 3, yq, x, wq, &gw, &sw, 1e-5f, M);
    cpu->norm_linear(cpu, 3, yb, x, wb, &gw, &sw, 1e-5f, M);
    for (int i = 0; i < 3; i++) {
        double *ref = malloc(sizeof(double) * M * rows[i]), *mag = malloc(sizeof(double) * M * rows[i]);
        rule_ref(&q[i], xn, M, ref, mag);
        compare(tu_name("cpu norm_linear %s K=%lld group %d M=%d, output %d", vox_dtype_name(dt), (long long)K, G, M, i),
                &q[i], xn, yq[i], yb[i], ref, mag, M, 1e-6);
        free(ref), free(mag), free(yq[i]), free(yb[i]);
        qfree(&q[i]);
        free((void *)b[i].data);
    }
    free(g), free(s), free(x), free(xn);
}

static void test_swiglu_linear(vox_dtype dt, int64_t K, int G, int M) {
    vox_weight b = bf16_matrix(96, K, 0.03f), q = quantized(&b, dt, G);
    float *gq = malloc(sizeof(float) * M * K), *gb = malloc(sizeof(float) * M * K), *u = malloc(sizeof(float) * M * K);
    float *h = malloc(sizeof(float) * M * K);
    for (int64_t i = 0; i < M * K; i++) {
        gq[i] = gb[i] = 2 * frand();
        u[i] = frand();
        h[i] = gq[i] / (1.0f + expf(-gq[i])) * u[i];
    }
    float *yq = malloc(sizeof(float) * M * 96), *yb = malloc(sizeof(float) * M * 96);
    double *ref = malloc(sizeof(double) * M * 96), *mag = malloc(sizeof(double) * M * 96);
    rule_ref(&q, h, M, ref, mag);
    for (int i = 0; i < M * 96; i++) yq[i] = yb[i] = 1.0f, ref[i] += 1.0;
    cpu->swiglu_linear(cpu, yq, gq, u, &q, M, 1);
    cpu->swiglu_linear(cpu, yb, gb, u, &b, M, 1);
    compare(tu_name("cpu swiglu_linear %s K=%lld group %d M=%d +=", vox_dtype_name(dt), (long long)K, G, M), &q, h,
            yq, yb, ref, mag, M, 1e-6);
    free(gq), free(gb), free(u), free(h), free(yq), free(yb), free(ref), free(mag);
    qfree(&q);
    free((void *)b.data);
}

static void test_embed(vox_dtype dt, int64_t D, int G) {
    vox_weight b = bf16_matrix(50, D, 0.05f), q = quantized(&b, dt, G);
    const int M = 4, acap = 3;
    int32_t ids[4] = {0, 49, 1, 17}, pos[4] = {5, 6, 7, 8};
    float *audio = malloc(sizeof(float) * acap * D), *xq = malloc(sizeof(float) * M * D), *xb = malloc(sizeof(float) * M * D);
    for (int64_t i = 0; i < acap * D; i++) audio[i] = frand();
    cpu->embed(cpu, xq, &q, ids, audio, pos, NULL, M, (int)D, acap);
    cpu->embed(cpu, xb, &b, ids, audio, pos, NULL, M, (int)D, acap);
    float *row = malloc(sizeof(float) * D);
    int ok = 1;
    for (int i = 0; i < M; i++) {
        vox_q_dequant_row(&q, ids[i], row);
        for (int64_t d = 0; d < D; d++) {
            float want = row[d] + audio[(pos[i] % acap) * D + d];
            ok &= xq[i * D + d] == want && fabs(xq[i * D + d] - xb[i * D + d]) <= elem_bound(&q, ids[i], d) * 1.0001;
        }
    }
    tu_check(ok, tu_name("cpu embed %s D=%lld group %d: the dequantized row + audio, exactly", vox_dtype_name(dt),
                         (long long)D, G), NULL);
    free(audio), free(xq), free(xb), free(row);
    qfree(&q);
    free((void *)b.data);
}

int main(void) {
    test_f16();
    const vox_dtype dts[2] = {VOX_DT_Q8, VOX_DT_Q4};
    const int64_t widths[4] = {96, 160, 200, 3072};
    const int groups[3] = {32, 64, 128};
    for (int d = 0; d < 2; d++)
        for (int w = 0; w < 4; w++)
            for (int g = 0; g < 3; g++) test_rule(dts[d], widths[w], groups[g]);
    for (int d = 0; d < 2; d++)
        for (int w = 0; w < 4; w++)
            for (int g = 0; g < 3; g++) {
                test_kernel(vox_qdot_isa, vox_qdot_rows, dts[d], widths[w], groups[g]);
                if (strcmp(vox_qdot_isa, "generic"))
                    test_kernel("generic", generic_qdot_rows, dts[d], widths[w], groups[g]);
#if HAVE_AVX2_KERNELS
                if (strcmp(vox_qdot_isa, "avx2")) test_kernel("avx2", avx2_qdot_rows, dts[d], widths[w], groups[g]);
#endif
            }
    cpu = vox_cpu_backend_new(0);
    for (int d = 0; d < 2; d++) {
        test_linear(dts[d], 160, 96, 64, 1, 0, VOX_ACT_NONE, 0);
        test_linear(dts[d], 96, 160, 64, 3, 1, VOX_ACT_NONE, 1);
        test_linear(dts[d], 192, 200, 32, 8, 1, VOX_ACT_GELU, 0);
        test_linear(dts[d], 300, 3072, 128, 20, 0, VOX_ACT_NONE, 1);
        test_linear(dts[d], 64, 96, 32, 10, 1, VOX_ACT_GELU, 1);
        test_norm_linear(dts[d], 96, 64, 1);
        test_norm_linear(dts[d], 3072, 64, 2);
        test_norm_linear(dts[d], 160, 32, 12);
        test_swiglu_linear(dts[d], 160, 64, 1);
        test_swiglu_linear(dts[d], 9216 / 8, 128, 9);
        test_embed(dts[d], 96, 64);
        test_embed(dts[d], 200, 32);
    }
    cpu->destroy(cpu);
    return tu_done();
}
