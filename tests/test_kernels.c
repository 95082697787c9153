/* test_kernels.c - CPU ops whose edge cases the end-to-end tests (fixtures, serving)
 * do not reach, against straightforward reference loops, bit for bit: the encoder
 * batch's span ops (conv_cols, conv_keep, ring_append; voxtral_internal.h).
 *   - conv_cols + conv_keep over several chunks in a row, each stream's context
 *     carried in its slot's state: streams in scattered slots, some reset (zeros),
 *     chunks shorter than the context (K up to 7), K = 2 (stride 2: no context),
 *     strides 1 and 2 over the same spans, enough rows for the threaded loop; the
 *     other slots' state and the cols past the batch's rows untouched;
 *   - ring_append: rows at any ring position, wrapping, a whole ring's worth.
 * The reference is the conv per stream as the reference model runs it: its input is
 * its left context (zeros in a new segment) then its new rows; the next context is
 * the input's last K - stride rows.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "voxtral_internal.h"
#include "testutil.h"
#include "spans.h"

static vox_backend *be;

/* chunks in a row through conv_cols + conv_keep against the per-stream reference */
static void test_conv(int K, int stride, int C, int n, int slots, int max_rows, int chunks) {
    const int P = K - stride;
    const size_t sstride = (size_t)(P > 0 ? P : 1) * C + 7; /* (a gap: state rows need not be packed) */
    float *state = rand_f((int64_t)slots * sstride, 1.0f), *ref_state = malloc(sizeof(float) * slots * sstride);
    memcpy(ref_state, state, sizeof(float) * slots * sstride);
    vox_enc_span *sp = malloc(sizeof *sp * n);
    int ok = 1, rows_seen = 0;
    char why[256] = "";
    for (int ch = 0; ch < chunks && ok; ch++) {
        make_spans(sp, n, slots, 2, max_rows, ch == 0);
        const int R = sp[n - 1].row0 + sp[n - 1].rows, M = R / stride, tail = 5;
        rows_seen += R;
        float *x = rand_f((int64_t)R * C, 1.0f);
        float *cols = malloc(sizeof(float) * ((size_t)M + tail) * C * K);
        float *ref = malloc(sizeof(float) * ((size_t)M + tail) * C * K);
        for (size_t i = 0; i < ((size_t)M + tail) * C * K; i++) cols[i] = ref[i] = NAN;
        /* the reference: each stream's input, its conv columns, its next context */
        for (int j = 0; j < n; j++) {
            const vox_enc_span *s = &sp[j];
            float *ctx = ref_state + (size_t)s->slot * sstride;
            float *in = malloc(sizeof(float) * (size_t)(P + s->rows) * C);
            for (int r = 0; r < P; r++)
                for (int c = 0; c < C; c++) in[r * C + c] = s->reset ? 0.0f : ctx[r * C + c];
            memcpy(in + (size_t)P * C, x + (size_t)s->row0 * C, sizeof(float) * s->rows * C);
            for (int t = 0; t < s->rows / stride; t++)
                for (int c = 0; c < C; c++)
                    for (int k = 0; k < K; k++)
                        ref[((size_t)(s->row0 / stride + t) * C + c) * K + k] = in[(size_t)(t * stride + k) * C + c];
            memcpy(ctx, in + (size_t)s->rows * C, sizeof(float) * P * C);
            free(in);
        }
        be->conv_cols(be, cols, state, sstride, x, sp, n, M, C, K, stride);
        be->conv_keep(be, state, sstride, x, sp, n, C, P);
        /* NaN poison compares equal bitwise: the tail must stay unwritten */
        if (memcmp(cols, ref, sizeof(float) * ((size_t)M + tail) * C * K))
            ok = 0, snprintf(why, sizeof why, "chunk %d: cols differ", ch);
        else if (memcmp(state, ref_state, sizeof(float) * slots * sstride))
            ok = 0, snprintf(why, sizeof why, "chunk %d: state differs", ch);
        free(x), free(cols), free(ref);
    }
    tu_check(ok, tu_name("conv_cols + conv_keep K=%d stride=%d C=%d: %d stream%s in %d slot%s, %d chunks", K, stride,
                         C, n, n == 1 ? "" : "s", slots, slots == 1 ? "" : "s", chunks),
             ok ? "%d rows, bit-identical to the per-stream reference" : "%s", ok ? rows_seen : 0, why);
    free(state), free(ref_state), free(sp);
}

static void test_ring(int D, int cap, int n, int slots, int max_tokens) {
    float *ring = rand_f((int64_t)slots * cap * D, 1.0f), *ref = malloc(sizeof(float) * slots * cap * D);
    memcpy(ref, ring, sizeof(float) * slots * cap * D);
    vox_enc_span *sp = malloc(sizeof *sp * n);
    make_spans(sp, n, slots, 2, 2, 0);
    int T = 0, wraps = 0;
    for (int j = 0; j < n; j++) {
        sp[j].tok0 = T;
        sp[j].tokens = j == 0 ? max_tokens : irand(1, max_tokens);
        sp[j].at = j == 1 ? cap - 1 : irand(0, cap - 1); /* one starts at the ring's last row */
        wraps += sp[j].at + sp[j].tokens > cap;
        T += sp[j].tokens;
    }
    float *x = rand_f((int64_t)T * D, 1.0f);
    for (int j = 0; j < n; j++)
        for (int t = 0, r = sp[j].at; t < sp[j].tokens; t++, r = r + 1 == cap ? 0 : r + 1)
            memcpy(ref + ((size_t)sp[j].slot * cap + r) * D, x + (size_t)(sp[j].tok0 + t) * D, sizeof(float) * D);
    be->ring_append(be, ring, x, sp, n, T, D, cap);
    const int ok = !memcmp(ring, ref, sizeof(float) * slots * cap * D);
    tu_check(ok, tu_name("ring_append D=%d cap=%d: %d streams, up to %d tokens each", D, cap, n, max_tokens),
             "%d tokens, %d span%s wrapping%s", T, wraps, wraps == 1 ? "" : "s", ok ? "" : ": rings differ");
    free(ring), free(ref), free(sp), free(x);
}

int main(void) {
    be = vox_cpu_backend_new(0);
    if (!be) {
        printf("not ok - cpu backend: %s\n", vox_last_error());
        return 1;
    }
    /* the model's conv stem (K = 3): conv0 then conv1 shapes over the same spans */
    test_conv(3, 1, 16, 7, 12, 16, 4);
    test_conv(3, 2, 24, 7, 12, 16, 4);
    /* one stream (a plain context's chunk), many (the threaded loop: M * C * K >= 2^14) */
    test_conv(3, 1, 16, 1, 1, 64, 3);
    test_conv(3, 1, 64, 40, 50, 16, 2);
    test_conv(3, 2, 128, 40, 50, 16, 2);
    /* chunks shorter than the context: its rows shift within it */
    test_conv(5, 1, 8, 6, 9, 4, 5);
    test_conv(7, 2, 8, 6, 9, 4, 5);
    test_conv(7, 1, 3, 3, 3, 2, 6);
    /* K = 2: conv1 has no context (P = 0), conv0 one row */
    test_conv(2, 2, 8, 5, 6, 8, 3);
    test_conv(2, 1, 8, 5, 6, 8, 3);

    test_ring(24, 13, 6, 8, 4);
    test_ring(24, 13, 6, 8, 13); /* a whole ring's worth for the first */
    test_ring(3072, 73, 40, 50, 16);
    test_ring(5, 1, 3, 3, 1);    /* a ring of one row */
    be->destroy(be);
    return tu_done();
}
