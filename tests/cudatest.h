/* cudatest.h - what the CUDA op tests (test_cuda_ops.c, test_cuda_batched.c,
 * test_cuda_kv.c, test_cuda_quant.c) share: the two backends
 * (cpu, the twin; gpu, the CUDA backend under test), random BF16 / fp32 weights with
 * device copies in each GPU path's dtype (BF16, FP16, FP32), device buffers from host
 * data or poisoned (NaN / -1), and the tolerance check of a GPU output against its CPU
 * reference. Header-only, as testutil.h (which it needs: frand, to_bf16, rand_f, tu_check). */
#ifndef VOX_CUDATEST_H
#define VOX_CUDATEST_H

#include <math.h>
#include <omp.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "voxtral_internal.h"
#include "testutil.h"

static vox_backend *cpu, *gpu;

/* The two backends (gpu_path: the CUDA path, NULL for the device's own): 1 when both
 * are up; 0 after printing the skip line (no CUDA device); -1 after a "not ok" line. */
static inline int cudatest_backends(const char *gpu_path) {
    if (!vox_cuda_available()) {
        printf("skipped: no CUDA device\n");
        return 0;
    }
    cpu = vox_cpu_backend_new(0);
    gpu = vox_cuda_backend_new(0, gpu_path);
    if (!cpu || !gpu) {
        printf("not ok - backends: %s\n", vox_last_error());
        return -1;
    }
    printf("# %s vs %s\n", gpu->device_name, cpu->device_name);
    return 1;
}

/* ---- helpers ------------------------------------------------------------------- */
/* frand, to_bf16, rand_f, rand_bf16: tests/testutil.h */
static inline void *dev_from(const void *host, size_t bytes) {
    void *d = gpu->alloc(gpu, bytes);
    if (d) gpu->upload(gpu, d, host, bytes);
    return d;
}
static inline void poison(void *dev, size_t bytes) {
    void *h = malloc(bytes);
    memset(h, 0xff, bytes); /* NaN as float, -1 as int32 */
    gpu->upload(gpu, dev, h, bytes);
    free(h);
}
static inline float *dev_floats(const void *dev, int64_t n) {
    float *h = malloc(sizeof(float) * n);
    gpu->download(gpu, h, dev, sizeof(float) * n);
    return h;
}
static inline vox_weight weight_bf16(int64_t rows, int64_t cols, float scale) {
    vox_weight w = {.dtype = VOX_DT_BF16, .rows = rows, .cols = cols, .dev_dtype = VOX_DT_BF16};
    w.data = rand_bf16(rows * cols, scale);
    w.dev = dev_from(w.data, rows * cols * 2);
    return w;
}
/* IEEE half of f, round to nearest even (the test's own, independent of the backend's) */
static inline uint16_t to_f16(float f) {
    union { float f; uint32_t u; } v = {f};
    uint32_t sign = (v.u >> 16) & 0x8000u, a = v.u & 0x7fffffffu;
    if (a >= 0x477ff000u) return (uint16_t)(sign | 0x7c00u);            /* rounds past 65504 */
    if (a < 0x38800000u) return (uint16_t)(sign | lrintf(fabsf(f) * 16777216.0f)); /* subnormal */
    return (uint16_t)(sign | (((a + 0xfffu + ((a >> 13) & 1)) >> 13) - (112u << 10)));
}
/* the BF16 weight w with its device copy in dtype dt (host data shared with w) */
static inline vox_weight weight_as(const vox_weight *w, vox_dtype dt) {
    if (dt == VOX_DT_BF16) return *w;
    vox_weight c = *w;
    int64_t n = w->rows * w->cols;
    const uint16_t *b = w->data;
    size_t es = dt == VOX_DT_F32 ? 4 : 2;
    char *h = malloc(es * n);
#pragma omp parallel for
    for (int64_t i = 0; i < n; i++) {
        float f = vox_bf16_to_f32(b[i]);
        if (dt == VOX_DT_F32) ((float *)h)[i] = f;
        else ((uint16_t *)h)[i] = to_f16(f);
    }
    c.dev = dev_from(h, es * n);
    c.dev_dtype = dt;
    free(h);
    return c;
}
static inline void weight_as_free(vox_weight *c) {
    if (c->dev_dtype != VOX_DT_BF16 && c->dev) gpu->free(gpu, c->dev);
    c->dev = NULL;
}
static const vox_dtype dtypes[] __attribute__((unused)) = {VOX_DT_BF16, VOX_DT_F16, VOX_DT_F32};
static inline const char *dt_name(vox_dtype dt) {
    return dt == VOX_DT_F16 ? "fp16" : dt == VOX_DT_F32 ? "fp32" : "bf16";
}
/* (atol, rtol) of a GEMM (cuBLASLt) with this weight dtype; GEMVs: fp32 activations */
static inline double gemm_tol(vox_dtype dt) { return dt == VOX_DT_BF16 ? 1e-2 : dt == VOX_DT_F16 ? 2e-3 : 2e-5; }
static inline double gemm_rtol(vox_dtype dt) { return dt == VOX_DT_BF16 ? 1e-2 : dt == VOX_DT_F16 ? 2e-3 : 1e-5; }
static inline vox_weight weight_f32(int64_t n, float scale, float offset) {
    vox_weight w = {.dtype = VOX_DT_F32, .rows = n, .cols = 1, .dev_dtype = VOX_DT_F32};
    float *p = rand_f(n, scale);
    for (int64_t i = 0; i < n; i++) p[i] += offset;
    w.data = p;
    w.dev = dev_from(p, n * 4);
    return w;
}
static inline void weight_free(vox_weight *w) {
    free((void *)w->data);
    if (w->dev) gpu->free(gpu, w->dev);
    memset(w, 0, sizeof *w);
}

/* |got - ref| <= atol * max|ref| + rtol * |ref| everywhere; NaN fails */
static inline int check(const char *name, const float *got, const float *ref, int64_t n, double atol,
                 double rtol) {
    double mr = 0, worst = 0, md = 0;
    for (int64_t i = 0; i < n; i++)
        if (fabs(ref[i]) > mr) mr = fabs(ref[i]);
    int64_t bad = -1;
    for (int64_t i = 0; i < n; i++) {
        double d = fabs((double)got[i] - ref[i]);
        double lim = atol * mr + rtol * fabs(ref[i]);
        if (!(d <= md)) md = d;
        double r = lim > 0 ? d / lim : (d > 0 ? INFINITY : 0);
        if (!(r <= worst)) {
            worst = r;
            if (!(d <= lim) && bad < 0) bad = i;
        }
    }
    if (bad >= 0)
        tu_check(0, name, "max |err| %.3g (%.3g of max|ref| %.3g); first bad [%lld] got %g want %g",
                 md, md / (mr + 1e-30), mr, (long long)bad, got[bad], ref[bad]);
    else
        tu_check(1, name, "max |err| %.3g (%.3g of max|ref| %.3g)", md, md / (mr + 1e-30), mr);
    return bad < 0;
}

static inline int32_t *rand_pos(int M, int lo, int hi) {
    int32_t *p = malloc(sizeof(int32_t) * M);
    for (int i = 0; i < M; i++) p[i] = lo + (int)((frand() + 1.0f) * 0.5f * (hi - lo));
    return p;
}

#endif
