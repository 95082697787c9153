/* spans.h - random encoder-batch span tables for the span ops' tests (test_kernels.c,
 * test_cuda_ops.c); needs testutil.h's frand and voxtral_internal.h's vox_enc_span. */
#ifndef VOXTRAL_TEST_SPANS_H
#define VOXTRAL_TEST_SPANS_H

static int irand(int lo, int hi) { return lo + (int)((frand() + 1.0f) * 0.5f * (hi - lo + 1)) % (hi - lo + 1); }

/* sp[0..n): distinct random slots of `slots`, even row counts in [min_rows, max_rows],
 * side by side from row 0; reset with probability 1/3 (always when first); no tokens */
static void make_spans(vox_enc_span *sp, int n, int slots, int min_rows, int max_rows, int first) {
    int *perm = malloc(sizeof(int) * slots);
    for (int i = 0; i < slots; i++) perm[i] = i;
    for (int i = slots - 1; i > 0; i--) {
        int j = irand(0, i), t = perm[i];
        perm[i] = perm[j], perm[j] = t;
    }
    for (int j = 0, row0 = 0; j < n; j++) {
        const int rows = 2 * irand(min_rows / 2, max_rows / 2);
        sp[j] = (vox_enc_span){.slot = perm[j], .row0 = row0, .rows = rows, .reset = first || irand(0, 2) == 0};
        row0 += rows;
    }
    free(perm);
}

#endif
