/* testutil.h - tiny helpers shared by the C test programs: TAP-like check
 * reporting, an .npy reader (version 1.0, little-endian, C order, f4/i4/i8) and
 * relative-error measures. Header-only so each test stays one file. */
#ifndef VOX_TESTUTIL_H
#define VOX_TESTUTIL_H

#include <math.h>
#include <omp.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int tu_failed __attribute__((unused)) = 0, tu_passed __attribute__((unused)) = 0;

static inline void tu_check(int ok, const char *name, const char *fmt, ...) {
    if (ok) {
        tu_passed++;
        printf("ok - %s", name);
    } else {
        tu_failed++;
        printf("not ok - %s", name);
    }
    if (fmt && *fmt) {
        va_list ap;
        va_start(ap, fmt);
        printf(": ");
        vprintf(fmt, ap);
        va_end(ap);
    }
    printf("\n");
    fflush(stdout);
}

/* a check's name, printf-formatted (four rotating buffers: a few may be in use at once) */
static inline const char *tu_name(const char *fmt, ...) __attribute__((format(printf, 1, 2), unused));
static inline const char *tu_name(const char *fmt, ...) {
    static char buf[4][256];
    static int k;
    k = (k + 1) % 4;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(buf[k], sizeof buf[k], fmt, ap);
    va_end(ap);
    return buf[k];
}

/* ---- seeded test data: xorshift64 from one seed, the same sequence in every program ---- */
static uint64_t rng __attribute__((unused)) = 0x9e3779b97f4a7c15ull;
static inline float frand(void) { /* uniform [-1, 1) */
    rng ^= rng << 13;
    rng ^= rng >> 7;
    rng ^= rng << 17;
    return (float)((rng >> 40) * (1.0 / 8388608.0)) - 1.0f;
}
/* float -> bf16 bits, round to nearest even */
static inline uint16_t to_bf16(float f) {
    union { float f; uint32_t u; } v = {f};
    return (uint16_t)((v.u + 0x7fff + ((v.u >> 16) & 1)) >> 16);
}
static inline float *rand_f(int64_t n, float scale) {
    float *p = malloc(sizeof(float) * (size_t)(n > 0 ? n : 1));
    for (int64_t i = 0; i < n; i++) p[i] = frand() * scale;
    return p;
}
/* n BF16 values uniform in [-scale, scale): per-thread xorshift streams seeded from
 * rng (rings and weights of hundreds of millions of elements would take seconds on
 * one core); frand() moves rng on once */
static inline uint16_t *rand_bf16(int64_t n, float scale) {
    uint16_t *p = malloc(sizeof(uint16_t) * (size_t)(n > 0 ? n : 1));
#pragma omp parallel
    {
        uint64_t s = rng ^ (0x2545f4914f6cdd1dull * (uint64_t)(omp_get_thread_num() + 1));
#pragma omp for
        for (int64_t i = 0; i < n; i++) {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            p[i] = to_bf16(((float)((s >> 40) * (1.0 / 8388608.0)) - 1.0f) * scale);
        }
    }
    frand();
    return p;
}

static inline int tu_done(void) {
    printf("# %d passed, %d failed\n", tu_passed, tu_failed);
    return tu_failed ? 1 : 0;
}

typedef struct {
    int ndim;
    int64_t shape[4];
    int64_t n;     /* elements */
    char kind;     /* 'f' or 'i' */
    float *f;      /* data as float (f4) */
    int32_t *i;    /* data as int32 (i4 or i8) */
} tu_npy;

static inline void tu_npy_free(tu_npy *a) {
    free(a->f);
    free(a->i);
    memset(a, 0, sizeof *a);
}

/* Returns 0 on success. */
static inline int tu_npy_load(const char *path, tu_npy *a) {
    memset(a, 0, sizeof *a);
    FILE *fp = fopen(path, "rb");
    if (!fp) return -1;
    unsigned char pre[10];
    if (fread(pre, 1, 10, fp) != 10 || memcmp(pre, "\x93NUMPY", 6) != 0) { fclose(fp); return -1; }
    int hlen = pre[8] | (pre[9] << 8);
    if (pre[6] != 1) { /* v2/v3: 4-byte header length */
        unsigned char b[2];
        if (fread(b, 1, 2, fp) != 2) { fclose(fp); return -1; }
        hlen = pre[8] | (pre[9] << 8) | (b[0] << 16) | (b[1] << 24);
    }
    char *h = calloc(1, hlen + 1);
    if (fread(h, 1, hlen, fp) != (size_t)hlen) { free(h); fclose(fp); return -1; }
    int esize = 0;
    if (strstr(h, "'<f4'")) { a->kind = 'f'; esize = 4; }
    else if (strstr(h, "'<i4'")) { a->kind = 'i'; esize = 4; }
    else if (strstr(h, "'<i8'")) { a->kind = 'i'; esize = 8; }
    if (!esize) { free(h); fclose(fp); return -1; }
    int fortran = strstr(h, "'fortran_order': True") != NULL;
    char *s = strstr(h, "'shape': (");
    if (!s) { free(h); fclose(fp); return -1; }
    s += 10;
    a->n = 1;
    while (*s && *s != ')') {
        while (*s == ' ' || *s == ',') s++;
        if (*s == ')') break;
        int64_t d = strtoll(s, &s, 10);
        if (a->ndim < 4) a->shape[a->ndim++] = d;
        a->n *= d;
    }
    free(h);
    void *raw = malloc(a->n * esize + 1);
    if (fread(raw, esize, a->n, fp) != (size_t)a->n) { free(raw); fclose(fp); return -1; }
    fclose(fp);
    if (fortran && a->ndim == 2) { /* column-major 2-D: transpose to rows */
        char *t = malloc(a->n * esize + 1);
        int64_t R = a->shape[0], C = a->shape[1];
        for (int64_t r = 0; r < R; r++)
            for (int64_t c = 0; c < C; c++)
                memcpy(t + (r * C + c) * esize, (char *)raw + (c * R + r) * esize, esize);
        free(raw);
        raw = t;
    } else if (fortran && a->ndim > 2) {
        free(raw);
        return -1;
    }
    if (a->kind == 'f') {
        a->f = raw;
    } else {
        a->i = malloc(a->n * sizeof(int32_t) + 1);
        for (int64_t k = 0; k < a->n; k++)
            a->i[k] = esize == 4 ? ((int32_t *)raw)[k] : (int32_t)((int64_t *)raw)[k];
        free(raw);
    }
    return 0;
}

/* max |a - b| / (max |b| + tiny): error relative to the reference's scale */
static inline double tu_rel_err(const float *a, const float *ref, int64_t n) {
    double md = 0, mr = 0;
    for (int64_t k = 0; k < n; k++) {
        double d = fabs((double)a[k] - ref[k]);
        if (!(d <= md)) md = d; /* NaN propagates */
        if (fabs(ref[k]) > mr) mr = fabs(ref[k]);
    }
    return md / (mr + 1e-30);
}

static inline double tu_max_abs(const float *a, const float *ref, int64_t n) {
    double md = 0;
    for (int64_t k = 0; k < n; k++) {
        double d = fabs((double)a[k] - ref[k]);
        if (!(d <= md)) md = d;
    }
    return md;
}

#endif
