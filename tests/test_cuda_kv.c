/* test_cuda_kv.c - the CUDA backend's ring ops over BF16 KV rings (be->kv_dtype =
 * VOX_DT_BF16) against their CPU twins (voxtral_kernels.c) on the same random
 * inputs: kv_store, attention (one stream's ring, and rows of several streams in
 * slots), rope_attention (M = 1 and M > 1: rows of one stream, or rows that are
 * streams, each in its own slot at its own position), positions past the ring's
 * capacity so the windows wrap; the fast kernels (split, fused split, tiled) and the
 * generic fallbacks. Outputs are poisoned (NaN) before each GPU run.
 *
 * What must hold:
 * - stored rings bit-identical to the CPU's: both round fp32 to nearest even with the
 *   same rule (NaN kept a quiet NaN). The one allowance: rope_attention's new keys are
 *   rotated in fp32 by each backend's own cosf/sinf (equal within test_cuda_ops'
 *   rope tolerance, not bit for bit), so a key whose fp32 value lies within that
 *   tolerance of a BF16 rounding midpoint may round to the neighbour (one BF16 ulp; more
 *   for a key that nearly cancels: key_ring_ties);
 *   such "ties" are counted and listed in the check's line, any other difference fails.
 * - attention outputs within |err| <= 1e-5 max|ref| + 1e-4 |ref|: test_cuda_ops' fp32
 *   attention tolerance. Both backends read the same BF16 values, widened exactly, and
 *   compute in fp32, so what differs is only the order of the fp32 sums (dots of
 *   head_dim, softmax sums over up to 8192 keys, weighted sums) and expf (CUDA <= 2 ulp,
 *   the CPU's ~1 ulp): relative errors of order 1e-6, as in the fp32 rings' tests.
 *   With window 1 the output is the stored value itself: exact on both.
 * - BF16 rings against fp32 rings (same inputs, the GPU both times), within a bound
 *   derived from the BF16 rounding (check_bf16_bound).
 * Prints "ok - ..." lines; without a CUDA device: "skipped: no CUDA device", exit 0.
 */
#include <math.h>
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "voxtral_internal.h"
#include "cudatest.h"

static const float THETA = 1e6f;

/* ---- helpers ------------------------------------------------------------------- */
static void set_kv(vox_dtype dt) { cpu->kv_dtype = gpu->kv_dtype = dt; }

static float *widen(const uint16_t *b, int64_t n) {
    float *f = malloc(sizeof(float) * (n ? n : 1));
    for (int64_t i = 0; i < n; i++) f[i] = vox_bf16_to_f32(b[i]);
    return f;
}
static float *copy_f(const float *x, int64_t n) {
    float *c = malloc(sizeof(float) * (n ? n : 1));
    memcpy(c, x, sizeof(float) * n);
    return c;
}
static void *dev_get(const void *dev, size_t bytes) {
    void *h = malloc(bytes);
    gpu->download(gpu, h, dev, bytes);
    return h;
}
static void gfree(void *d) {
    if (d) gpu->free(gpu, d);
}

/* two BF16 rings equal bit for bit */
static int check_bits(const char *name, const uint16_t *got, const uint16_t *ref, int64_t n) {
    int64_t bad = -1, nbad = 0;
    for (int64_t i = 0; i < n; i++)
        if (got[i] != ref[i]) {
            if (bad < 0) bad = i;
            nbad++;
        }
    if (nbad)
        tu_check(0, name, "%lld of %lld elements differ; first [%lld] got 0x%04x want 0x%04x",
                 (long long)nbad, (long long)n, (long long)bad, got[bad], ref[bad]);
    else
        tu_check(1, name, "%lld elements bit-identical", (long long)n);
    return nbad == 0;
}
/* a gpu op's queued work finished without error */
static int gpu_ok(const char *name) {
    if (gpu->sync(gpu) == 0) return 1;
    tu_check(0, name, "%s", vox_last_error());
    return 0;
}

/* Row i's positions and slots for the ring ops. streams = 0: one stream, rows at
 * p0 + i, slot NULL. streams = S > 0: S streams of M / S rows each (consecutive
 * positions from p0 + 53 j), stream j in slot S - j of a pool of S + 1 rings (rows
 * and slots in different orders; slot 0 unused). */
typedef struct {
    int32_t *pos, *slot; /* host; slot NULL without streams */
    int32_t *dpos, *dslot;
    int rings;           /* rings in the pool */
} rows_t;
static rows_t rows_of(int M, int p0, int streams, int step) {
    rows_t r = {malloc(sizeof(int32_t) * M), streams ? malloc(sizeof(int32_t) * M) : NULL, 0, 0,
                streams ? streams + 1 : 1};
    const int per = streams ? M / streams : M;
    for (int i = 0; i < M; i++) {
        int j = i / per, k = i % per;
        r.pos[i] = streams ? p0 + step * j + k : p0 + i;
        if (streams) r.slot[i] = streams - j;
    }
    r.dpos = dev_from(r.pos, sizeof(int32_t) * M);
    r.dslot = streams ? dev_from(r.slot, sizeof(int32_t) * M) : NULL;
    return r;
}
static void rows_free(rows_t *r) {
    free(r->pos), free(r->slot), gfree(r->dpos), gfree(r->dslot);
}

/* ---- kv_store ----------------------------------------------------------------- */
/* fp32 inputs that exercise the rounding rule: the special values first (NaNs of
 * several payloads, signalling included, infinities, zeros, values that round past
 * BF16's largest, exact ties both ways, subnormals), then a quarter of random bit
 * patterns (any NaN, any exponent) and random values of many magnitudes */
static float *kv_inputs(int64_t n) {
    static const uint32_t special[] = {
        0x7fc00000u, 0x7fc00001u, 0x7f800001u, 0x7fbfffffu, 0xffbfffffu, 0xff812345u, 0x7fffffffu,
        0x7f800000u, 0xff800000u, 0x00000000u, 0x80000000u, 0x7f7fffffu, 0xff7f8000u, 0x7f7f7fffu,
        0x3f808000u, 0x3f818000u, 0x3f808001u, 0x3f807fffu, 0xbf808000u, 0xbf818000u, 0x00000001u,
        0x00008000u, 0x00018000u, 0x807fffffu, 0x00800000u, 0x0000ffffu, 0x80008000u, 0x3effffffu};
    const int ns = (int)(sizeof special / sizeof special[0]);
    float *x = malloc(sizeof(float) * n);
    for (int64_t i = 0; i < n; i++) {
        union { uint32_t u; float f; } v;
        if (i < ns) {
            v.u = special[i];
        } else if (i % 4 == 0) {
            frand();
            v.u = (uint32_t)(rng >> 17);
        } else {
            v.f = frand() * ldexpf(1.0f, (int)(frand() * 40.0f));
        }
        x[i] = v.f;
    }
    return x;
}

static void test_kv_store(int M, int kv_dim, int cap, int p0, int streams) {
    rows_t r = rows_of(M, p0, streams, 101);
    const int64_t nc = (int64_t)r.rings * cap * kv_dim, n = (int64_t)M * kv_dim;
    uint16_t *kc = rand_bf16(nc, 1.0f), *vc = rand_bf16(nc, 1.0f);
    float *k = kv_inputs(n), *v = kv_inputs(n);
    void *dkc = dev_from(kc, nc * 2), *dvc = dev_from(vc, nc * 2);
    float *dk = dev_from(k, n * 4), *dv = dev_from(v, n * 4);
    set_kv(VOX_DT_BF16);
    cpu->kv_store(cpu, kc, vc, k, v, r.pos, r.slot, M, kv_dim, cap);
    gpu->kv_store(gpu, dkc, dvc, dk, dv, r.dpos, r.dslot, M, kv_dim, cap);
    uint16_t *gk = dev_get(dkc, nc * 2), *gv = dev_get(dvc, nc * 2);
    const char *name = tu_name("kv_store bf16 M=%d kv_dim=%d cap=%d pos %d..%s: key rings", M, kv_dim,
                               cap, p0, streams ? tu_name(" (%d streams in slots)", streams) : "");
    if (gpu_ok(name)) {
        check_bits(name, gk, kc, nc);
        check_bits(tu_name("kv_store bf16 M=%d: value rings", M), gv, vc, nc);
    }
    free(kc), free(vc), free(k), free(v), free(gk), free(gv);
    gfree(dkc), gfree(dvc), gfree(dk), gfree(dv);
    rows_free(&r);
}

/* ---- attention ---------------------------------------------------------------- */
static void test_attention(const char *tag, int M, int H, int Hkv, int hd, int cap, int window,
                           int p0, int streams) {
    rows_t r = rows_of(M, p0, streams, 53);
    const int64_t nc = (int64_t)r.rings * cap * Hkv * hd, nq = (int64_t)M * H * hd;
    uint16_t *kc = rand_bf16(nc, 1.0f), *vc = rand_bf16(nc, 1.0f);
    float *q = rand_f(nq, 3.0f), *ref = malloc(sizeof(float) * nq);
    set_kv(VOX_DT_BF16);
    cpu->attention(cpu, ref, q, kc, vc, r.pos, r.slot, M, H, Hkv, hd, cap, window);
    void *dkc = dev_from(kc, nc * 2), *dvc = dev_from(vc, nc * 2);
    float *dq = dev_from(q, nq * 4), *dout = gpu->alloc(gpu, nq * 4);
    poison(dout, nq * 4);
    gpu->attention(gpu, dout, dq, dkc, dvc, r.dpos, r.dslot, M, H, Hkv, hd, cap, window);
    float *got = dev_get(dout, nq * 4);
    const char *name = tu_name("attention bf16 %s M=%d heads %d/%d hd=%d cap=%d window=%d pos %d..%d%s",
                               tag, M, H, Hkv, hd, cap, window, r.pos[0], r.pos[M - 1],
                               streams ? tu_name(" (%d streams in slots)", streams) : "");
    if (gpu_ok(name)) check(name, got, ref, nq, window == 1 ? 0 : 1e-5, window == 1 ? 0 : 1e-4);
    free(kc), free(vc), free(q), free(ref), free(got);
    gfree(dkc), gfree(dvc), gfree(dq), gfree(dout);
    rows_free(&r);
}

/* ---- rope_attention ----------------------------------------------------------- */
/* rows_t for rope_attention: one new key per row, so with streams every row is its
 * own stream (slot M - i, position p0 + 37 i), as the batched decoder step */
static rows_t rope_rows(int M, int p0, int streams) {
    return streams ? rows_of(M, p0, M, 37) : rows_of(M, p0, 0, 0);
}

/* The key ring against the CPU's: equal bit for bit, except where the GPU's stored
 * BF16 value is a correct rounding of some value within the fp32 rope tolerance of the
 * CPU's rotation kr (the backends' cos/sin differ within it): |g - kr| <= tol + half
 * an ulp of g (<= |g| 2^-8). Near a rounding midpoint that is one ulp; for a key that
 * nearly cancels (|kr| far below the tolerance's scale) it can be more (the H200 saw
 * 0x3536 against 0x3538, about 7e-7, at M = 39). Returns the count of such ties, or -1
 * for any other difference. */
static int64_t key_ring_ties(const uint16_t *g, const uint16_t *c, const float *kr, const rows_t *r,
                             int M, int kv_dim, int cap, int64_t nc) {
    double mk = 0;
    for (int64_t i = 0; i < (int64_t)M * kv_dim; i++)
        if (fabs(kr[i]) > mk) mk = fabs(kr[i]);
    uint16_t *fixed = malloc(sizeof(uint16_t) * nc);
    memcpy(fixed, g, sizeof(uint16_t) * nc);
    int64_t ties = 0;
    for (int i = 0; i < M; i++) {
        const int64_t at = (r->slot ? (int64_t)r->slot[i] * cap * kv_dim : 0) +
                           (int64_t)(r->pos[i] % cap) * kv_dim;
        for (int e = 0; e < kv_dim; e++) {
            uint16_t a = g[at + e], b = c[at + e];
            if (a == b) continue;
            double x = kr[(int64_t)i * kv_dim + e];
            const double va = vox_bf16_to_f32(a);
            if (fabs(va - x) <= 1e-6 * mk + 1e-5 * fabs(x) + fabs(va) * 0x1p-8) {
                fixed[at + e] = b;
                ties++;
            }
        }
    }
    int same = memcmp(fixed, c, sizeof(uint16_t) * nc) == 0;
    free(fixed);
    return same ? ties : -1;
}

static void test_rope_attention(const char *tag, int M, int H, int Hkv, int hd, int cap,
                                int window, int p0, int streams) {
    rows_t r = rope_rows(M, p0, streams);
    const int kvd = Hkv * hd;
    const int64_t nc = (int64_t)r.rings * cap * kvd, qn = (int64_t)M * H * hd, kn = (int64_t)M * kvd;
    uint16_t *kc = rand_bf16(nc, 1.0f), *vc = rand_bf16(nc, 1.0f);
    float *q = rand_f(qn, 3.0f), *k = rand_f(kn, 1.0f), *v = rand_f(kn, 1.0f);
    float *ref = malloc(sizeof(float) * qn), *qr = copy_f(q, qn), *kr = copy_f(k, kn);
    float *qc = copy_f(q, qn), *kcp = copy_f(k, kn); /* the CPU twin's q and k (left unspecified) */
    cpu->rope(cpu, qr, r.pos, M, H, hd, THETA);
    cpu->rope(cpu, kr, r.pos, M, Hkv, hd, THETA);
    float *dq = dev_from(q, qn * 4), *dk = dev_from(k, kn * 4), *dv = dev_from(v, kn * 4);
    void *dkc = dev_from(kc, nc * 2), *dvc = dev_from(vc, nc * 2);
    float *dout = gpu->alloc(gpu, qn * 4);
    poison(dout, qn * 4);
    set_kv(VOX_DT_BF16);
    cpu->rope_attention(cpu, ref, qc, kcp, v, kc, vc, r.pos, r.slot, M, H, Hkv, hd, THETA, cap, window);
    gpu->rope_attention(gpu, dout, dq, dk, dv, dkc, dvc, r.dpos, r.dslot, M, H, Hkv, hd, THETA, cap,
                        window);
    float *got = dev_get(dout, qn * 4);
    uint16_t *gk = dev_get(dkc, nc * 2), *gv = dev_get(dvc, nc * 2);
    const char *name = tu_name("rope_attention bf16 %s M=%d%s heads %d/%d hd=%d cap=%d window=%d pos %d..",
                               tag, M, streams ? " (rows are streams, slots)" : "", H, Hkv, hd, cap,
                               window, p0);
    if (gpu_ok(name)) {
        int64_t ties = key_ring_ties(gk, kc, kr, &r, M, kvd, cap, nc);
        /* a tie changes one key by one BF16 ulp: the output's reference then reads the
         * rings the GPU left (the CPU twin's attention over them) */
        if (ties > 0) cpu->attention(cpu, ref, qr, gk, gv, r.pos, r.slot, M, H, Hkv, hd, cap, window);
        check(tu_name("%s: out", name), got, ref, qn, window == 1 ? 0 : 1e-5, window == 1 ? 0 : 1e-4);
        if (ties >= 0)
            tu_check(1, tu_name("rope_attention bf16 %s M=%d: key rings", tag, M),
                     "bit-identical but for %lld rope ties of %lld new keys", (long long)ties,
                     (long long)kn);
        else
            check_bits(tu_name("rope_attention bf16 %s M=%d: key rings", tag, M), gk, kc, nc);
        check_bits(tu_name("rope_attention bf16 %s M=%d: value rings", tag, M), gv, vc, nc);
    }
    free(kc), free(vc), free(q), free(k), free(v), free(ref), free(qr), free(kr), free(qc), free(kcp);
    free(got), free(gk), free(gv);
    gfree(dq), gfree(dk), gfree(dv), gfree(dkc), gfree(dvc), gfree(dout);
    rows_free(&r);
}

/* ---- BF16 rings against fp32 rings ---------------------------------------------
 * o32 = attention over fp32 rings, o16 = the same over those rings rounded to BF16
 * (kc16 = kc32 + dk, vc16 = vc32 + dv, |dk|, |dv| <= 2^-8 relative). Row i, head h:
 * each visible key's score moves by at most D = max_j |sum_d q_d dk_jd| / sqrt(hd), so
 * each softmax weight by a factor within [e^-2D, e^2D], and
 *   |o16 - o32| <= (e^2D - 1) max_jd |v16_jd| + max_jd |dv_jd|
 * (the weights' change times the values, plus the values' change), in exact
 * arithmetic; each fp32 run adds its own error: 2 x the fp32 attention tolerance. */
static void check_bf16_bound(const char *name, const float *o16, const float *o32, const float *q,
                             const float *k32, const float *v32, const float *k16,
                             const float *v16, const rows_t *r, int M, int H, int Hkv, int hd,
                             int cap, int window) {
    const int kvd = Hkv * hd;
    const double scale = 1.0 / sqrt((double)hd);
    double mr = 0, worst = 0, mbound = 0, md = 0;
    for (int64_t i = 0; i < (int64_t)M * H * hd; i++)
        if (fabs(o32[i]) > mr) mr = fabs(o32[i]);
    int64_t bad = -1;
    for (int i = 0; i < M; i++) {
        const int p = r->pos[i];
        int lo = p - window + 1;
        if (lo < 0) lo = 0;
        if (lo < p - cap + 1) lo = p - cap + 1;
        const int64_t base = r->slot ? (int64_t)r->slot[i] * cap * kvd : 0;
        for (int h = 0; h < H; h++) {
            const int kh = h / (H / Hkv);
            const float *qi = q + ((int64_t)i * H + h) * hd;
            double D = 0, V = 0, E = 0;
            for (int j = lo; j <= p; j++) {
                const int64_t at = base + (int64_t)(j % cap) * kvd + (int64_t)kh * hd;
                double s = 0;
                for (int d = 0; d < hd; d++) {
                    s += (double)qi[d] * ((double)k16[at + d] - k32[at + d]);
                    if (fabs(v16[at + d]) > V) V = fabs(v16[at + d]);
                    if (fabs((double)v16[at + d] - v32[at + d]) > E) E = fabs((double)v16[at + d] - v32[at + d]);
                }
                if (fabs(s) * scale > D) D = fabs(s) * scale;
            }
            const double bound = expm1(2 * D) * V + E;
            if (bound > mbound) mbound = bound;
            for (int d = 0; d < hd; d++) {
                const int64_t o = ((int64_t)i * H + h) * hd + d;
                const double err = fabs((double)o16[o] - o32[o]);
                const double lim = bound + 2e-5 * mr + 2e-4 * fabs(o32[o]);
                if (!(err <= md)) md = err;
                if (!(err / lim <= worst)) worst = err / lim; /* NaN sticks */
                if (!(err <= lim) && bad < 0) bad = o;
            }
        }
    }
    if (bad >= 0)
        tu_check(0, name, "max |err| %.3g (worst %.3g of the bound, largest bound %.3g); first bad [%lld] "
                 "bf16 %g fp32 %g", md, worst, mbound, (long long)bad, o16[bad], o32[bad]);
    else
        tu_check(1, name, "max |err| %.3g, worst %.3g of the BF16 bound (largest %.3g), max|o| %.3g",
                 md, worst, mbound, mr);
}

/* kv_store into fp32 and BF16 rings (the latter = the former rounded): the stored
 * BF16 values within half a BF16 ulp (2^-8 relative) of the fp32 ones, the rest equal */
static void test_kv_store_vs_f32(int M, int kv_dim, int cap, int p0) {
    rows_t r = rows_of(M, p0, 0, 0);
    const int64_t nc = (int64_t)cap * kv_dim, n = (int64_t)M * kv_dim;
    uint16_t *kc16 = rand_bf16(nc, 1.0f);
    float *kc32 = widen(kc16, nc), *k = rand_f(n, 4.0f), *v = rand_f(n, 1.0f);
    void *d16 = dev_from(kc16, nc * 2), *d32 = dev_from(kc32, nc * 4), *dv16 = dev_from(kc16, nc * 2);
    void *dv32 = dev_from(kc32, nc * 4);
    float *dk = dev_from(k, n * 4), *dv = dev_from(v, n * 4);
    set_kv(VOX_DT_F32);
    gpu->kv_store(gpu, d32, dv32, dk, dv, r.dpos, NULL, M, kv_dim, cap);
    set_kv(VOX_DT_BF16);
    gpu->kv_store(gpu, d16, dv16, dk, dv, r.dpos, NULL, M, kv_dim, cap);
    uint16_t *g16 = dev_get(d16, nc * 2);
    float *g32 = dev_get(d32, nc * 4), *w16 = widen(g16, nc);
    const char *name = tu_name("kv_store bf16 vs fp32 rings M=%d kv_dim=%d cap=%d pos %d.. (wraps)", M,
                               kv_dim, cap, p0);
    if (gpu_ok(name)) check(name, w16, g32, nc, 0, 1.0 / 256);
    free(kc16), free(kc32), free(k), free(v), free(g16), free(g32), free(w16);
    gfree(d16), gfree(d32), gfree(dv16), gfree(dv32), gfree(dk), gfree(dv);
    rows_free(&r);
}

/* attention (rope = 0) or rope_attention (rope = 1) on the GPU over fp32 rings and over
 * the same rings rounded to BF16; the outputs within check_bf16_bound */
static void test_vs_f32(const char *tag, int rope, int M, int H, int Hkv, int hd, int cap,
                        int window, int p0, int streams) {
    rows_t r = rope ? rope_rows(M, p0, streams) : rows_of(M, p0, streams, 53);
    const int kvd = Hkv * hd;
    const int64_t nc = (int64_t)r.rings * cap * kvd, qn = (int64_t)M * H * hd, kn = (int64_t)M * kvd;
    float *kc = rand_f(nc, 1.0f), *vc = rand_f(nc, 1.0f), *q = rand_f(qn, 3.0f);
    float *k = rand_f(kn, 1.0f), *v = rand_f(kn, 1.0f);
    uint16_t *kb = malloc(nc * 2), *vb = malloc(nc * 2);
    for (int64_t i = 0; i < nc; i++) kb[i] = to_bf16(kc[i]), vb[i] = to_bf16(vc[i]);
    void *dk32 = dev_from(kc, nc * 4), *dv32 = dev_from(vc, nc * 4);
    void *dk16 = dev_from(kb, nc * 2), *dv16 = dev_from(vb, nc * 2);
    float *o[2] = {gpu->alloc(gpu, qn * 4), gpu->alloc(gpu, qn * 4)};
    for (int b = 0; b < 2; b++) { /* b = 0: fp32 rings, 1: BF16 */
        set_kv(b ? VOX_DT_BF16 : VOX_DT_F32);
        float *dq = dev_from(q, qn * 4), *dk = dev_from(k, kn * 4), *dv = dev_from(v, kn * 4);
        poison(o[b], qn * 4);
        if (rope)
            gpu->rope_attention(gpu, o[b], dq, dk, dv, b ? dk16 : dk32, b ? dv16 : dv32, r.dpos, r.dslot,
                                M, H, Hkv, hd, THETA, cap, window);
        else
            gpu->attention(gpu, o[b], dq, b ? dk16 : dk32, b ? dv16 : dv32, r.dpos, r.dslot, M, H, Hkv,
                           hd, cap, window);
        gpu->sync(gpu);
        gfree(dq), gfree(dk), gfree(dv);
    }
    float *o32 = dev_get(o[0], qn * 4), *o16 = dev_get(o[1], qn * 4);
    float *g32 = dev_get(dk32, nc * 4), *gv32 = dev_get(dv32, nc * 4); /* rope: the new keys in */
    uint16_t *g16 = dev_get(dk16, nc * 2), *gv16 = dev_get(dv16, nc * 2);
    float *w16 = widen(g16, nc), *wv16 = widen(gv16, nc);
    if (rope) cpu->rope(cpu, q, r.pos, M, H, hd, THETA);
    const char *name = tu_name("%s bf16 vs fp32 rings %s M=%d heads %d/%d hd=%d cap=%d window=%d pos %d..%s",
                               rope ? "rope_attention" : "attention", tag, M, H, Hkv, hd, cap, window,
                               p0, streams ? " (slots)" : "");
    if (gpu_ok(name)) {
        if (rope) { /* the stored new keys and values: BF16 roundings of the fp32 ring's */
            check(tu_name("%s: key rings", name), w16, g32, nc, 0, 1.0 / 256);
            check(tu_name("%s: value rings", name), wv16, gv32, nc, 0, 1.0 / 256);
        }
        check_bf16_bound(name, o16, o32, q, g32, gv32, w16, wv16, &r, M, H, Hkv, hd, cap, window);
    }
    free(kc), free(vc), free(q), free(k), free(v), free(kb), free(vb);
    free(o32), free(o16), free(g32), free(gv32), free(g16), free(gv16), free(w16), free(wv16);
    gfree(dk32), gfree(dv32), gfree(dk16), gfree(dv16), gfree(o[0]), gfree(o[1]);
    rows_free(&r);
}

int main(void) {
    const int up = cudatest_backends(NULL);
    if (up <= 0) return up < 0;
    tu_check(gpu->kv_bf16 == 1 && cpu->kv_bf16 == 1, "both backends take BF16 KV rings", NULL);

    /* kv_store: prefill rows (ring wraps), encoder chunk rows, rows of streams in slots */
    test_kv_store(39, 1024, 8231, 8231 - 20, 0);
    test_kv_store(512, 2048, 1262, 3000, 0);
    test_kv_store(3, 1024, 8231, 9000, 3);     /* the batched decoder step's rows */
    test_kv_store(256, 2048, 780, 700, 4);     /* 4 streams' encoder chunks, rings wrap */
    test_kv_store(13, 48, 26, 20, 0);          /* odd shape: 2 kv heads of 24 */

    /* attention: decoder step shapes (split), prefill (tiled), encoder chunks, slots,
     * generic fallbacks; windows that wrap */
    test_attention("split", 1, 32, 8, 128, 8231, 8192, 8230, 0);
    test_attention("split, ring wrapped", 1, 32, 8, 128, 8231, 8192, 20000, 0);
    test_attention("split, first key", 1, 32, 8, 128, 8231, 8192, 0, 0);
    test_attention("split hd 64", 5, 8, 4, 64, 300, 100, 777, 0);
    test_attention("split hd 32", 3, 4, 4, 32, 50, 40, 123, 0);
    test_attention("split, window 1", 2, 32, 8, 128, 300, 1, 500, 0);
    test_attention("tiled", 39, 32, 8, 128, 8231, 8192, 8231 - 20, 0);
    test_attention("tiled hd 64", 512, 32, 32, 64, 780, 750, 1000, 0);
    test_attention("tiled hd 32", 40, 4, 2, 32, 64, 48, 90, 0);
    test_attention("generic", 1, 4, 2, 24, 26, 16, 25, 0);
    test_attention("generic", 39, 4, 4, 16, 50, 24, 30, 0);
    test_attention("split, slots", 12, 32, 32, 64, 780, 750, 1000, 3);
    test_attention("split, slots, encoder batch", 512, 32, 32, 64, 780, 750, 900, 8); /* 16384 rows x heads */
    test_attention("generic hd 24, slots", 6, 4, 2, 24, 26, 16, 25, 3);

    /* rope_attention: fused split (M = 1, rows that are streams), two launches (no
     * fast path, prefill rows), windows that wrap */
    test_rope_attention("fused", 1, 32, 8, 128, 8231, 8192, 8230, 0);
    test_rope_attention("fused, ring wrapped", 1, 32, 8, 128, 8231, 8192, 20000, 0);
    test_rope_attention("fused, first key", 1, 32, 8, 128, 8231, 8192, 0, 0);
    test_rope_attention("fused hd 64", 1, 8, 4, 64, 300, 100, 777, 0);
    test_rope_attention("fused hd 32", 1, 4, 4, 32, 50, 40, 123, 0);
    test_rope_attention("fused, window 1", 1, 32, 8, 128, 300, 1, 500, 0);
    test_rope_attention("two launches", 1, 4, 2, 24, 26, 16, 25, 0);
    test_rope_attention("prefill", 39, 32, 8, 128, 8231, 8192, 8231 - 20, 0);
    test_rope_attention("prefill hd 16", 39, 4, 4, 16, 50, 24, 30, 0);
    test_rope_attention("fused", 3, 32, 8, 128, 700, 512, 600, 1);
    test_rope_attention("fused", 32, 32, 8, 128, 8231, 8192, 9000, 1); /* the batched step, B = 32 */
    test_rope_attention("fused hd 64", 17, 8, 4, 64, 300, 100, 50, 1);
    test_rope_attention("fused, window 1", 4, 32, 8, 128, 300, 1, 500, 1);
    test_rope_attention("two launches", 3, 4, 2, 24, 26, 16, 25, 1);

    /* BF16 rings against fp32 rings (short windows: outputs of O(0.1..1), so the
     * bound discriminates) */
    test_kv_store_vs_f32(39, 1024, 300, 290);
    test_vs_f32("split", 0, 1, 32, 8, 128, 300, 32, 310, 0);
    test_vs_f32("tiled", 0, 39, 32, 32, 64, 100, 48, 120, 0);
    test_vs_f32("slots", 0, 12, 32, 32, 64, 100, 48, 120, 3);
    test_vs_f32("fused", 1, 1, 32, 8, 128, 300, 32, 310, 0);
    test_vs_f32("fused", 1, 8, 32, 8, 128, 300, 32, 310, 1);
    test_vs_f32("prefill", 1, 39, 32, 8, 128, 300, 64, 320, 0);

    gpu->destroy(gpu);
    cpu->destroy(cpu);
    return tu_done();
}
