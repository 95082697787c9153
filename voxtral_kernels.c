/* voxtral_kernels.c - the CPU backend: every op of the backend table
 * (voxtral_internal.h) as plain C over host memory. These are the spec and the
 * test oracle for the CUDA kernels, and the CPU engine.
 *
 * Matmuls: many rows (encoder chunks, prefill) go to OpenBLAS sgemm on BF16
 * weight blocks widened to fp32 in a scratch buffer; few rows (the decoder step)
 * use our own BF16 x fp32 dot kernels (AVX-512 / AVX2 / scalar), which stream
 * the mmap'd BF16 weights once: the decoder step is memory-bound.
 * Threads: OpenMP for our loops, OpenBLAS's own pool for sgemm.
 */
#include <cblas.h>
#include <math.h>
#include <omp.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#if defined(__AVX2__) || defined(__AVX512F__)
#include <immintrin.h>
#endif

#include "voxtral_internal.h"
#include "voxtral_quant.h"

/* openblas_set_num_threads is OpenBLAS-specific and not in every cblas.h */
void openblas_set_num_threads(int num_threads);

enum { SMALL_M_MAX = 32,                   /* up to this many rows, our small-M kernels
                                              (each weight row read once for all rows) */
       ATTN_MIN_ROWS = 8,                  /* one stream's rows from which attention gathers
                                              its keys and runs two sgemms per head */
       PAR_MIN_WORK = 1 << 18,             /* multiply-adds below which threads cost more */
       WIDEN_BLOCK_FLOATS = 1 << 20 };     /* per thread: 4 MB of widened weight rows */

typedef struct {
    int threads;
    float *widen;       /* threads x WIDEN_BLOCK_FLOATS */
    float *scratch;     /* per-thread attention scratch */
    size_t scratch_len; /* floats per thread */
    float *norm_buf;    /* norm_linear's normalised input */
    size_t norm_len;
} cpu_impl;

static cpu_impl *impl_of(vox_backend *be) { return (cpu_impl *)be->impl; }
/* Every parallel region runs on the backend's own team size: the OpenMP default is
 * per thread (omp_set_num_threads), and per-thread buffers are sized for this one,
 * so a stream fed from another thread must not get a bigger team. */
#define THREADS(be) (impl_of(be)->threads)

/* Per-thread scratch of at least `n` floats; grows only when a context needs more.
 * NULL with the backend's error recorded (the next sync reports it). */
static float *thread_scratch(vox_backend *be, size_t n) {
    cpu_impl *ci = impl_of(be);
    if (ci->scratch_len < n) {
        free(ci->scratch);
        ci->scratch = NULL;
        ci->scratch_len = 0;
        size_t bytes;
        if (!__builtin_mul_overflow(n, (size_t)ci->threads * sizeof(float), &bytes))
            ci->scratch = malloc(bytes);
        if (!ci->scratch) {
            vox_err_set(&be->err, "cpu: out of memory for attention scratch (%zu floats x %d threads)",
                        n, ci->threads);
            return NULL;
        }
        ci->scratch_len = n;
    }
    return ci->scratch;
}

/* ---- memory ---------------------------------------------------------------- */
static void *cpu_alloc(vox_backend *be, size_t bytes) {
    /* calloc: large blocks come from mmap as untouched zero pages, so a KV ring
     * sized for the whole window costs memory only as positions fill it. */
    void *p = calloc(1, bytes ? bytes : 1);
    if (!p) vox_error("cpu: out of memory allocating %zu bytes", bytes);
    return p;
}
static void cpu_free(vox_backend *be, void *p) { free(p); }
static void cpu_memcpy(vox_backend *be, void *dst, const void *src, size_t bytes) {
    memmove(dst, src, bytes);
}
/* Ops run at once: an op's failure is reported by the next sync, then forgotten
 * (the backend itself is still sound). */
static int cpu_sync(vox_backend *be) {
    if (!be->err.set) return 0;
    vox_err_raise(&be->err, NULL);
    vox_err_clear(&be->err);
    return -1;
}
static void *cpu_host_alloc(vox_backend *be, size_t bytes) { return cpu_alloc(be, bytes); }
static void cpu_download_async(vox_backend *be, void *dst, const void *src, size_t bytes, int fence) {
    memmove(dst, src, bytes);
}
static int cpu_wait_fence(vox_backend *be, int fence) { return cpu_sync(be); }
static int cpu_upload_weights(vox_backend *be, vox_model *m) { return 0; }

/* ---- dot products ------------------------------------------------------------ */
static inline float dot_bf16(const uint16_t *w, const float *x, int64_t K) {
    int64_t k = 0;
    float s = 0.0f;
#if defined(__AVX512F__)
    __m512 a0 = _mm512_setzero_ps(), a1 = _mm512_setzero_ps();
    for (; k + 32 <= K; k += 32) {
        __m512i w0 = _mm512_cvtepu16_epi32(_mm256_loadu_si256((const __m256i *)(w + k)));
        __m512i w1 = _mm512_cvtepu16_epi32(_mm256_loadu_si256((const __m256i *)(w + k + 16)));
        a0 = _mm512_fmadd_ps(_mm512_castsi512_ps(_mm512_slli_epi32(w0, 16)),
                             _mm512_loadu_ps(x + k), a0);
        a1 = _mm512_fmadd_ps(_mm512_castsi512_ps(_mm512_slli_epi32(w1, 16)),
                             _mm512_loadu_ps(x + k + 16), a1);
    }
    s = _mm512_reduce_add_ps(_mm512_add_ps(a0, a1));
#elif defined(__AVX2__)
    __m256 a0 = _mm256_setzero_ps(), a1 = _mm256_setzero_ps();
    for (; k + 16 <= K; k += 16) {
        __m256i w0 = _mm256_cvtepu16_epi32(_mm_loadu_si128((const __m128i *)(w + k)));
        __m256i w1 = _mm256_cvtepu16_epi32(_mm_loadu_si128((const __m128i *)(w + k + 8)));
        a0 = _mm256_fmadd_ps(_mm256_castsi256_ps(_mm256_slli_epi32(w0, 16)),
                             _mm256_loadu_ps(x + k), a0);
        a1 = _mm256_fmadd_ps(_mm256_castsi256_ps(_mm256_slli_epi32(w1, 16)),
                             _mm256_loadu_ps(x + k + 8), a1);
    }
    __m256 a = _mm256_add_ps(a0, a1);
    __m128 h = _mm_add_ps(_mm256_castps256_ps128(a), _mm256_extractf128_ps(a, 1));
    h = _mm_hadd_ps(h, h);
    h = _mm_hadd_ps(h, h);
    s = _mm_cvtss_f32(h);
#endif
    for (; k < K; k++) s += vox_bf16_to_f32(w[k]) * x[k];
    return s;
}

static inline float dot_f32(const float *w, const float *x, int64_t K) {
    int64_t k = 0;
    float s = 0.0f;
#if defined(__AVX512F__)
    __m512 a0 = _mm512_setzero_ps(), a1 = _mm512_setzero_ps();
    for (; k + 32 <= K; k += 32) {
        a0 = _mm512_fmadd_ps(_mm512_loadu_ps(w + k), _mm512_loadu_ps(x + k), a0);
        a1 = _mm512_fmadd_ps(_mm512_loadu_ps(w + k + 16), _mm512_loadu_ps(x + k + 16), a1);
    }
    for (; k + 16 <= K; k += 16) a0 = _mm512_fmadd_ps(_mm512_loadu_ps(w + k), _mm512_loadu_ps(x + k), a0);
    s = _mm512_reduce_add_ps(_mm512_add_ps(a0, a1));
#elif defined(__AVX2__)
    __m256 a0 = _mm256_setzero_ps();
    for (; k + 8 <= K; k += 8) a0 = _mm256_fmadd_ps(_mm256_loadu_ps(w + k), _mm256_loadu_ps(x + k), a0);
    __m128 h = _mm_add_ps(_mm256_castps256_ps128(a0), _mm256_extractf128_ps(a0, 1));
    h = _mm_hadd_ps(h, h);
    h = _mm_hadd_ps(h, h);
    s = _mm_cvtss_f32(h);
#endif
    for (; k < K; k++) s += w[k] * x[k];
    return s;
}

/* Small-M BF16 kernel: out[m] = w . x[m * ldx ..] for M rows, each weight row read
 * (and widened) once for all of them, four rows per pass. Row m's sum is formed in
 * exactly dot_bf16's order (same accumulators, same reduction), so a row's result
 * does not depend on which other rows share the call: a stream batched with
 * others gets bit for bit its solo result. */
static inline void dot_bf16_rows(const uint16_t *w, const float *x, int64_t ldx, int64_t K, int M,
                                 float *out, int64_t ldo) {
    int m = 0;
#if defined(__AVX512F__)
    for (; m + 4 <= M; m += 4) {
        const float *x0 = x + m * ldx, *x1 = x0 + ldx, *x2 = x1 + ldx, *x3 = x2 + ldx;
        __m512 a0 = _mm512_setzero_ps(), b0 = _mm512_setzero_ps(), a1 = _mm512_setzero_ps(),
               b1 = _mm512_setzero_ps(), a2 = _mm512_setzero_ps(), b2 = _mm512_setzero_ps(),
               a3 = _mm512_setzero_ps(), b3 = _mm512_setzero_ps();
        int64_t k = 0;
        for (; k + 32 <= K; k += 32) {
            __m512 w0 = _mm512_castsi512_ps(_mm512_slli_epi32(
                _mm512_cvtepu16_epi32(_mm256_loadu_si256((const __m256i *)(w + k))), 16));
            __m512 w1 = _mm512_castsi512_ps(_mm512_slli_epi32(
                _mm512_cvtepu16_epi32(_mm256_loadu_si256((const __m256i *)(w + k + 16))), 16));
            a0 = _mm512_fmadd_ps(w0, _mm512_loadu_ps(x0 + k), a0);
            b0 = _mm512_fmadd_ps(w1, _mm512_loadu_ps(x0 + k + 16), b0);
            a1 = _mm512_fmadd_ps(w0, _mm512_loadu_ps(x1 + k), a1);
            b1 = _mm512_fmadd_ps(w1, _mm512_loadu_ps(x1 + k + 16), b1);
            a2 = _mm512_fmadd_ps(w0, _mm512_loadu_ps(x2 + k), a2);
            b2 = _mm512_fmadd_ps(w1, _mm512_loadu_ps(x2 + k + 16), b2);
            a3 = _mm512_fmadd_ps(w0, _mm512_loadu_ps(x3 + k), a3);
            b3 = _mm512_fmadd_ps(w1, _mm512_loadu_ps(x3 + k + 16), b3);
        }
        float s0 = _mm512_reduce_add_ps(_mm512_add_ps(a0, b0)), s1 = _mm512_reduce_add_ps(_mm512_add_ps(a1, b1)),
              s2 = _mm512_reduce_add_ps(_mm512_add_ps(a2, b2)), s3 = _mm512_reduce_add_ps(_mm512_add_ps(a3, b3));
        for (; k < K; k++) {
            float wk = vox_bf16_to_f32(w[k]);
            s0 += wk * x0[k];
            s1 += wk * x1[k];
            s2 += wk * x2[k];
            s3 += wk * x3[k];
        }
        out[m * ldo] = s0;
        out[(m + 1) * ldo] = s1;
        out[(m + 2) * ldo] = s2;
        out[(m + 3) * ldo] = s3;
    }
#elif defined(__AVX2__)
    for (; m + 4 <= M; m += 4) {
        const float *xr[4] = {x + m * ldx, x + (m + 1) * ldx, x + (m + 2) * ldx, x + (m + 3) * ldx};
        __m256 a[4], b[4];
        for (int r = 0; r < 4; r++) a[r] = b[r] = _mm256_setzero_ps();
        int64_t k = 0;
        for (; k + 16 <= K; k += 16) {
            __m256 w0 = _mm256_castsi256_ps(_mm256_slli_epi32(
                _mm256_cvtepu16_epi32(_mm_loadu_si128((const __m128i *)(w + k))), 16));
            __m256 w1 = _mm256_castsi256_ps(_mm256_slli_epi32(
                _mm256_cvtepu16_epi32(_mm_loadu_si128((const __m128i *)(w + k + 8))), 16));
            for (int r = 0; r < 4; r++) {
                a[r] = _mm256_fmadd_ps(w0, _mm256_loadu_ps(xr[r] + k), a[r]);
                b[r] = _mm256_fmadd_ps(w1, _mm256_loadu_ps(xr[r] + k + 8), b[r]);
            }
        }
        for (int r = 0; r < 4; r++) {
            __m256 v = _mm256_add_ps(a[r], b[r]);
            __m128 h = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
            h = _mm_hadd_ps(h, h);
            h = _mm_hadd_ps(h, h);
            float sr = _mm_cvtss_f32(h);
            for (int64_t kk = k; kk < K; kk++) sr += vox_bf16_to_f32(w[kk]) * xr[r][kk];
            out[(m + r) * ldo] = sr;
        }
    }
#endif
    for (; m < M; m++) out[m * ldo] = dot_bf16(w, x + m * ldx, K);
}

static inline float gelu_erf(float x) { return 0.5f * x * (1.0f + erff(x * 0.70710678118654752f)); }

static void bias_act_rows(float *y, const vox_weight *b, int M, int64_t N, int64_t n0, int64_t nb,
                          vox_act act) {
    const float *bias = b ? (const float *)b->data : NULL;
    for (int m = 0; m < M; m++) {
        float *row = y + (int64_t)m * N + n0;
        for (int64_t j = 0; j < nb; j++) {
            float v = row[j] + (bias ? bias[n0 + j] : 0.0f);
            row[j] = act == VOX_ACT_GELU ? gelu_erf(v) : v;
        }
    }
}

/* ---- linear ------------------------------------------------------------------ */
static void cpu_linear(vox_backend *be, float *y, const float *x, const vox_weight *w,
                       const vox_weight *b, int M, vox_act act, int accumulate) {
    const int64_t N = w->rows, K = w->cols;
    const float *bias = b ? (const float *)b->data : NULL;
    if (M <= SMALL_M_MAX || (accumulate && act != VOX_ACT_NONE)) {
        /* Few rows: stream each weight row once, reuse it for the M inputs from cache.
         * (accumulate with an activation is not a real use; handled here for generality.) */
#pragma omp parallel for schedule(dynamic, 64) if (N * K * M >= PAR_MIN_WORK) num_threads(THREADS(be))
        for (int64_t n = 0; n < N; n++) {
            float d[SMALL_M_MAX];
            for (int m0 = 0; m0 < M; m0 += SMALL_M_MAX) {
                const int mb = M - m0 < SMALL_M_MAX ? M - m0 : SMALL_M_MAX;
                if (vox_dtype_quantized(w->dtype)) /* quantized rows: dequantized once for mb inputs */
                    vox_qdot_rows(w, n, x + (int64_t)m0 * K, K, mb, d, 1);
                else if (w->dtype == VOX_DT_BF16)
                    dot_bf16_rows((const uint16_t *)w->data + n * K, x + (int64_t)m0 * K, K, K, mb, d, 1);
                else
                    for (int m = 0; m < mb; m++) d[m] = dot_f32((const float *)w->data + n * K, x + (int64_t)(m0 + m) * K, K);
                for (int m = 0; m < mb; m++) {
                    float s = d[m];
                    if (bias) s += bias[n];
                    if (act == VOX_ACT_GELU) s = gelu_erf(s);
                    float *o = y + (int64_t)(m0 + m) * N + n;
                    *o = accumulate ? *o + s : s;
                }
            }
        }
        return;
    }
    /* Many rows: each thread widens a block of weight rows to fp32 and runs a
     * single-threaded sgemm on it (no oversubscription between OpenMP and
     * OpenBLAS). With accumulate, y += x.Wt (beta = 1) and the bias is added to
     * y first. */
    cpu_impl *ci = impl_of(be);
    int64_t nb = WIDEN_BLOCK_FLOATS / K;
    if (nb > 256) nb = 256;
    if (nb < 1) nb = 1;
    const int64_t nblocks = (N + nb - 1) / nb;
#pragma omp parallel for schedule(dynamic, 1) if (N * K * M >= PAR_MIN_WORK) num_threads(ci->threads)
    for (int64_t blk = 0; blk < nblocks; blk++) {
        const int64_t n0 = blk * nb, cnt = N - n0 < nb ? N - n0 : nb;
        const float *wf;
        if (w->dtype == VOX_DT_BF16) {
            const uint16_t *src = (const uint16_t *)w->data + n0 * K;
            float *dst = ci->widen + (size_t)omp_get_thread_num() * WIDEN_BLOCK_FLOATS;
            for (int64_t r = 0; r < cnt * K; r++) dst[r] = vox_bf16_to_f32(src[r]);
            wf = dst;
        } else if (vox_dtype_quantized(w->dtype)) {
            float *dst = ci->widen + (size_t)omp_get_thread_num() * WIDEN_BLOCK_FLOATS;
            for (int64_t r = 0; r < cnt; r++) vox_q_dequant_row(w, n0 + r, dst + r * K);
            wf = dst;
        } else {
            wf = (const float *)w->data + n0 * K;
        }
        if (accumulate && bias)
            for (int m = 0; m < M; m++)
                for (int64_t j = 0; j < cnt; j++) y[(int64_t)m * N + n0 + j] += bias[n0 + j];
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, M, (int)cnt, (int)K, 1.0f, x, (int)K, wf,
                    (int)K, accumulate ? 1.0f : 0.0f, y + n0, (int)N);
        if (!accumulate) bias_act_rows(y, b, M, N, n0, cnt, act);
    }
}

/* ---- norms, rope, activations ----------------------------------------------- */
static void cpu_rmsnorm(vox_backend *be, float *y, const float *x, const vox_weight *w,
                        const vox_weight *scale, int M, int D, float eps) {
    const float *g = (const float *)w->data;
    const float *sc = scale ? (const float *)scale->data : NULL;
    for (int m = 0; m < M; m++) {
        const float *xi = x + (int64_t)m * D;
        float *yi = y + (int64_t)m * D;
        double ss = 0;
        for (int d = 0; d < D; d++) ss += (double)xi[d] * xi[d];
        float r = (float)(1.0 / sqrt(ss / D + eps));
        for (int d = 0; d < D; d++) {
            float v = g[d] * (xi[d] * r);
            yi[d] = sc ? v * sc[d] : v;
        }
    }
}

static void cpu_rope(vox_backend *be, float *x, const int32_t *pos, int M, int n_heads,
                     int head_dim, float theta) {
    int half = head_dim / 2;
    float inv_freq[512]; /* as the reference: 1 / theta^(fp32(2j) / hd), in fp32 */
    for (int j = 0; j < half && j < 512; j++)
        inv_freq[j] = 1.0f / powf(theta, (float)(2 * j) / (float)head_dim);
    for (int m = 0; m < M; m++) {
        float p = (float)pos[m];
        for (int j = 0; j < half; j++) {
            float ang = p * inv_freq[j];
            float c = cosf(ang), s = sinf(ang);
            for (int h = 0; h < n_heads; h++) {
                float *v = x + ((int64_t)m * n_heads + h) * head_dim + 2 * j;
                float a = v[0], b = v[1];
                v[0] = a * c - b * s;
                v[1] = b * c + a * s;
            }
        }
    }
}

static void cpu_swiglu(vox_backend *be, float *h, const float *g, const float *u, int64_t n) {
#pragma omp parallel for schedule(static) if (n >= PAR_MIN_WORK / 16) num_threads(THREADS(be))
    for (int64_t i = 0; i < n; i++) h[i] = g[i] / (1.0f + expf(-g[i])) * u[i];
}

/* ---- the conv stem and the audio ring over a batch's spans (vox_enc_span) ---------- */
/* the span holding output row t of a conv over the batch: the last with row0 / stride <= t */
static int span_of(const vox_enc_span *sp, int n, int t, int stride) {
    int lo = 0, hi = n - 1;
    while (lo < hi) {
        const int mid = (lo + hi + 1) / 2;
        if (sp[mid].row0 / stride <= t) lo = mid;
        else hi = mid - 1;
    }
    return lo;
}

static void cpu_conv_cols(vox_backend *be, float *cols, const float *state, size_t sstride, const float *x,
                          const vox_enc_span *sp, int n, int M, int C, int K, int stride) {
    const int P = K - stride;
#pragma omp parallel for schedule(static) if ((int64_t)M * C * K >= PAR_MIN_WORK / 16) num_threads(THREADS(be))
    for (int t = 0; t < M; t++) {
        const vox_enc_span *s = &sp[span_of(sp, n, t, stride)];
        const float *ctx = state + (size_t)s->slot * sstride;
        const int tl = t - s->row0 / stride; /* the output row within its span */
        for (int c = 0; c < C; c++)
            for (int k = 0; k < K; k++) {
                const int r = tl * stride + k; /* the row of its input: context, then x */
                cols[((int64_t)t * C + c) * K + k] = r >= P ? x[((int64_t)s->row0 + r - P) * C + c]
                                                   : s->reset ? 0.0f : ctx[(int64_t)r * C + c];
            }
    }
}

static void cpu_conv_keep(vox_backend *be, float *state, size_t sstride, const float *x,
                          const vox_enc_span *sp, int n, int C, int P) {
    for (int j = 0; j < n; j++) {
        const vox_enc_span *s = &sp[j];
        float *ctx = state + (size_t)s->slot * sstride;
        /* row i takes input row rows + i: from x, or (rows < P) a later context row,
         * not yet overwritten in this order */
        for (int i = 0; i < P; i++) {
            const int q = s->rows + i;
            for (int c = 0; c < C; c++)
                ctx[(int64_t)i * C + c] = q >= P ? x[((int64_t)s->row0 + q - P) * C + c]
                                        : s->reset ? 0.0f : ctx[(int64_t)q * C + c];
        }
    }
}

static void cpu_ring_append(vox_backend *be, float *ring, const float *x, const vox_enc_span *sp, int n,
                            int M, int D, int cap) {
    for (int j = 0; j < n; j++) {
        const vox_enc_span *s = &sp[j];
        for (int t = 0; t < s->tokens; t++)
            memcpy(ring + ((int64_t)s->slot * cap + (s->at + t) % cap) * D, x + (int64_t)(s->tok0 + t) * D,
                   sizeof(float) * D);
    }
}

/* ---- KV rings and attention ------------------------------------------------- */
/* fp32 -> bf16, round to nearest even (NaN kept a NaN) */
static inline uint16_t f32_to_bf16(float f) {
    union { float f; uint32_t u; } v = {f};
    if ((v.u & 0x7fffffffu) > 0x7f800000u) return (uint16_t)((v.u >> 16) | 0x40);
    return (uint16_t)((v.u + 0x7fffu + ((v.u >> 16) & 1)) >> 16);
}

/* element offset of row i's ring */
static inline int64_t ring_base(const int32_t *slot, int i, int cap, int kv_dim) {
    return slot ? (int64_t)slot[i] * cap * kv_dim : 0;
}

static void cpu_kv_store(vox_backend *be, void *kc, void *vc, const float *k, const float *v,
                         const int32_t *pos, const int32_t *slot, int M, int kv_dim, int cap) {
    const int bf16 = be->kv_dtype == VOX_DT_BF16;
    for (int i = 0; i < M; i++) {
        int64_t at = ring_base(slot, i, cap, kv_dim) + (int64_t)(pos[i] % cap) * kv_dim;
        const float *ki = k + (int64_t)i * kv_dim, *vi = v + (int64_t)i * kv_dim;
        if (bf16) {
            uint16_t *kd = (uint16_t *)kc + at, *vd = (uint16_t *)vc + at;
            for (int d = 0; d < kv_dim; d++) {
                kd[d] = f32_to_bf16(ki[d]);
                vd[d] = f32_to_bf16(vi[d]);
            }
        } else {
            memcpy((float *)kc + at, ki, kv_dim * sizeof(float));
            memcpy((float *)vc + at, vi, kv_dim * sizeof(float));
        }
    }
}

/* n values of a ring row as fp32 */
static inline void ring_read(float *dst, const void *ring, int64_t at, int n, int bf16) {
    if (bf16) {
        const uint16_t *r = (const uint16_t *)ring + at;
        for (int d = 0; d < n; d++) dst[d] = vox_bf16_to_f32(r[d]);
    } else {
        memcpy(dst, (const float *)ring + at, n * sizeof(float));
    }
}

#if defined(__AVX512F__)
/* e^x for 16 floats: Cody-Waite range reduction and the Cephes polynomial
 * (about 1 ulp over the range softmax uses). */
static inline __m512 exp16(__m512 x) {
    x = _mm512_max_ps(_mm512_min_ps(x, _mm512_set1_ps(88.3762626647949f)), _mm512_set1_ps(-87.0f));
    __m512 n = _mm512_roundscale_ps(_mm512_mul_ps(x, _mm512_set1_ps(1.44269504088896341f)),
                                    _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    __m512 r = _mm512_fnmadd_ps(n, _mm512_set1_ps(0.693359375f), x);
    r = _mm512_fnmadd_ps(n, _mm512_set1_ps(-2.12194440e-4f), r);
    __m512 y = _mm512_set1_ps(1.9875691500e-4f);
    y = _mm512_fmadd_ps(y, r, _mm512_set1_ps(1.3981999507e-3f));
    y = _mm512_fmadd_ps(y, r, _mm512_set1_ps(8.3334519073e-3f));
    y = _mm512_fmadd_ps(y, r, _mm512_set1_ps(4.1665795894e-2f));
    y = _mm512_fmadd_ps(y, r, _mm512_set1_ps(1.6666665459e-1f));
    y = _mm512_fmadd_ps(y, r, _mm512_set1_ps(5.0000001201e-1f));
    y = _mm512_fmadd_ps(y, _mm512_mul_ps(r, r), _mm512_add_ps(r, _mm512_set1_ps(1.0f)));
    return _mm512_scalef_ps(y, n);
}
#endif

/* Softmax of row r[0..n) restricted to [lo, hi] (others become 0). */
static void masked_softmax(float *r, int n, int lo, int hi) {
    float mx = -INFINITY;
    for (int j = lo; j <= hi; j++) if (r[j] > mx) mx = r[j];
    for (int j = 0; j < lo; j++) r[j] = 0.0f;
    for (int j = hi + 1; j < n; j++) r[j] = 0.0f;
    float sum = 0;
    int j = lo;
#if defined(__AVX512F__)
    __m512 vs = _mm512_setzero_ps(), vm = _mm512_set1_ps(mx);
    for (; j + 16 <= hi + 1; j += 16) {
        __m512 e = exp16(_mm512_sub_ps(_mm512_loadu_ps(r + j), vm));
        _mm512_storeu_ps(r + j, e);
        vs = _mm512_add_ps(vs, e);
    }
    sum = _mm512_reduce_add_ps(vs);
#endif
    for (; j <= hi; j++) {
        float e = expf(r[j] - mx);
        r[j] = e;
        sum += e;
    }
    float inv = 1.0f / sum;
    for (j = lo; j <= hi; j++) r[j] *= inv;
}

static void cpu_attention(vox_backend *be, float *out, const float *q, const void *kc,
                          const void *vc, const int32_t *pos, const int32_t *slot, int M,
                          int n_heads, int n_kv_heads, int head_dim, int cap, int window) {
    const int group = n_heads / n_kv_heads;
    const int kv_dim = n_kv_heads * head_dim, q_dim = n_heads * head_dim;
    const float scale = 1.0f / sqrtf((float)head_dim);
    const int bf16 = be->kv_dtype == VOX_DT_BF16;
    if (!slot && M >= ATTN_MIN_ROWS) {
        /* Many rows of one stream: per head, gather the visible keys/values out of
         * the ring, then two sgemms (scores, weighted values). */
        int lo = pos[0], hi = pos[0];
        for (int i = 0; i < M; i++) {
            int l = pos[i] - window + 1;
            if (l < 0) l = 0;
            if (l < lo) lo = l;
            if (pos[i] > hi) hi = pos[i];
        }
        const int nk = hi - lo + 1;
        const size_t per = (size_t)2 * nk * head_dim + (size_t)M * nk;
        float *scr = thread_scratch(be, per);
        if (!scr) return;
#pragma omp parallel for schedule(dynamic, 1) if ((int64_t)M * nk * head_dim * n_heads >= PAR_MIN_WORK) num_threads(THREADS(be))
        for (int h = 0; h < n_heads; h++) {
            float *kb = scr + per * omp_get_thread_num(), *vb = kb + (size_t)nk * head_dim,
                  *S = vb + (size_t)nk * head_dim;
            const int kh = h / group;
            for (int j = 0; j < nk; j++) {
                int64_t src = (int64_t)((lo + j) % cap) * kv_dim + (int64_t)kh * head_dim;
                ring_read(kb + (size_t)j * head_dim, kc, src, head_dim, bf16);
                ring_read(vb + (size_t)j * head_dim, vc, src, head_dim, bf16);
            }
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, M, nk, head_dim, scale,
                        q + (size_t)h * head_dim, q_dim, kb, head_dim, 0.0f, S, nk);
            for (int i = 0; i < M; i++) {
                int l = pos[i] - window + 1;
                masked_softmax(S + (size_t)i * nk, nk, (l < lo ? lo : l) - lo, pos[i] - lo);
            }
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, M, head_dim, nk, 1.0f, S, nk, vb,
                        head_dim, 0.0f, out + (size_t)h * head_dim, q_dim);
        }
        return;
    }
    /* Few rows, or rows of several streams (the decoder step, a batch of streams'
     * encoder chunks): one (row, head) per task over that row's own ring, vectorised
     * dots. A row's result depends on nothing but its own ring and query. */
    size_t need = (size_t)(window < cap ? window : cap) + 1;
    float *scr = thread_scratch(be, need);
    if (!scr) return;
#pragma omp parallel for schedule(dynamic, 1) collapse(2) if ((int64_t)M * n_heads * (window < cap ? window : cap) * head_dim >= PAR_MIN_WORK) \
    num_threads(THREADS(be))
    for (int i = 0; i < M; i++) {
        for (int h = 0; h < n_heads; h++) {
            float *sc = scr + need * omp_get_thread_num();
            int64_t base = ring_base(slot, i, cap, kv_dim);
            int p = pos[i];
            int lo = p - window + 1;
            if (lo < 0) lo = 0;
            if (lo < p - cap + 1) lo = p - cap + 1; /* never read an overwritten slot */
            const float *qi = q + ((int64_t)i * n_heads + h) * head_dim;
            const int kh = h / group;
            for (int j = lo; j <= p; j++) {
                int64_t at = base + (int64_t)(j % cap) * kv_dim + kh * head_dim;
                sc[j - lo] = (bf16 ? dot_bf16((const uint16_t *)kc + at, qi, head_dim)
                                   : dot_f32((const float *)kc + at, qi, head_dim)) * scale;
            }
            masked_softmax(sc, p - lo + 1, 0, p - lo);
            float *o = out + ((int64_t)i * n_heads + h) * head_dim;
            for (int d = 0; d < head_dim; d++) o[d] = 0;
            for (int j = lo; j <= p; j++) {
                int64_t at = base + (int64_t)(j % cap) * kv_dim + kh * head_dim;
                const float a = sc[j - lo];
                if (bf16) {
                    const uint16_t *vj = (const uint16_t *)vc + at;
                    for (int d = 0; d < head_dim; d++) o[d] += a * vox_bf16_to_f32(vj[d]);
                } else {
                    const float *vj = (const float *)vc + at;
                    for (int d = 0; d < head_dim; d++) o[d] += a * vj[d];
                }
            }
        }
    }
}

/* ---- embeddings and token choice --------------------------------------------- */
static void cpu_embed(vox_backend *be, float *x, const vox_weight *emb, const int32_t *ids,
                      const float *audio, const int32_t *pos, const int32_t *slot, int M, int D,
                      int acap) {
    for (int i = 0; i < M; i++) {
        const float *a = audio + ring_base(slot, i, acap, D) + (int64_t)(pos[i] % acap) * D;
        float *xi = x + (int64_t)i * D;
        if (vox_dtype_quantized(emb->dtype)) {
            vox_q_dequant_row(emb, ids[i], xi);
            for (int d = 0; d < D; d++) xi[d] += a[d];
        } else if (emb->dtype == VOX_DT_BF16) {
            const uint16_t *e = (const uint16_t *)emb->data + (int64_t)ids[i] * D;
            for (int d = 0; d < D; d++) xi[d] = vox_bf16_to_f32(e[d]) + a[d];
        } else {
            const float *e = (const float *)emb->data + (int64_t)ids[i] * D;
            for (int d = 0; d < D; d++) xi[d] = e[d] + a[d];
        }
    }
}

static void cpu_argmax(vox_backend *be, int32_t *ids, const float *logits, int M, int V) {
    for (int i = 0; i < M; i++) {
        const float *l = logits + (int64_t)i * V;
        int best = 0;
        for (int j = 1; j < V; j++)
            if (l[j] > l[best]) best = j;
        ids[i] = best;
    }
}

static void cpu_topk(vox_backend *be, int32_t *ids, float *vals, const float *logits, int M,
                     int V, int k) {
    for (int i = 0; i < M; i++) {
        const float *l = logits + (int64_t)i * V;
        int32_t *oi = ids + (int64_t)i * k;
        float *ov = vals + (int64_t)i * k;
        int n = 0;
        for (int j = 0; j < V; j++) {
            if (n == k && !(l[j] > ov[k - 1])) continue;
            int at = n < k ? n++ : k - 1;
            while (at > 0 && l[j] > ov[at - 1]) {
                ov[at] = ov[at - 1];
                oi[at] = oi[at - 1];
                at--;
            }
            ov[at] = l[j];
            oi[at] = j;
        }
    }
}

/* ---- fused decoder ops: the unfused sequences ------------------------------------- */
/* Few-row matvecs of several weights sharing x, in one parallel loop over all their
 * rows (one fork/join instead of n_out, and the load balances across weights). */
static void matvec_multi(int threads, int n_out, float *const *y, const float *x, const vox_weight *const *w,
                         int M) {
    int64_t start[4] = {0};
    for (int i = 0; i < n_out; i++) start[i + 1] = start[i] + w[i]->rows;
    const int64_t total = start[n_out], K = w[0]->cols;
#pragma omp parallel for schedule(dynamic, 64) if (total * K * M >= PAR_MIN_WORK) num_threads(threads)
    for (int64_t r = 0; r < total; r++) {
        int i = 0;
        while (r >= start[i + 1]) i++;
        const int64_t n = r - start[i], N = w[i]->rows;
        if (vox_dtype_quantized(w[i]->dtype))
            vox_qdot_rows(w[i], n, x, K, M, y[i] + n, N);
        else if (w[i]->dtype == VOX_DT_BF16)
            dot_bf16_rows((const uint16_t *)w[i]->data + n * K, x, K, K, M, y[i] + n, N);
        else
            for (int m = 0; m < M; m++)
                y[i][(int64_t)m * N + n] = dot_f32((const float *)w[i]->data + n * K, x + m * K, K);
    }
}

static void cpu_norm_linear(vox_backend *be, int n_out, float *const *y, const float *x,
                            const vox_weight *const *w, const vox_weight *norm,
                            const vox_weight *scale, float eps, int M) {
    cpu_impl *ci = impl_of(be);
    const int D = (int)w[0]->cols;
    const float *xn = x;
    if (norm) {
        if ((size_t)M * D > ci->norm_len) { /* grows once per context size */
            free(ci->norm_buf);
            ci->norm_buf = malloc(sizeof(float) * M * D);
            ci->norm_len = ci->norm_buf ? (size_t)M * D : 0;
            if (!ci->norm_buf) {
                vox_err_set(&be->err, "cpu: out of memory (norm_linear, %d x %d floats)", M, D);
                return;
            }
        }
        cpu_rmsnorm(be, ci->norm_buf, x, norm, scale, M, D, eps);
        xn = ci->norm_buf;
    }
    if (M <= SMALL_M_MAX && n_out <= 3) {
        matvec_multi(ci->threads, n_out, y, xn, w, M);
        return;
    }
    for (int i = 0; i < n_out; i++) cpu_linear(be, y[i], xn, w[i], NULL, M, VOX_ACT_NONE, 0);
}

static void cpu_swiglu_linear(vox_backend *be, float *y, const float *g, const float *u,
                              const vox_weight *w, int M, int accumulate) {
    /* g is the caller's scratch: overwritten with silu(g) * u */
    cpu_swiglu(be, (float *)g, g, u, (int64_t)M * w->cols);
    cpu_linear(be, y, g, w, NULL, M, VOX_ACT_NONE, accumulate);
}

static void cpu_rope_attention(vox_backend *be, float *out, float *q, float *k, const float *v,
                               void *kc, void *vc, const int32_t *pos, const int32_t *slot, int M,
                               int n_heads, int n_kv_heads, int head_dim, float theta, int cap,
                               int window) {
    cpu_rope(be, q, pos, M, n_heads, head_dim, theta);
    cpu_rope(be, k, pos, M, n_kv_heads, head_dim, theta);
    cpu_kv_store(be, kc, vc, k, v, pos, slot, M, n_kv_heads * head_dim, cap);
    cpu_attention(be, out, q, kc, vc, pos, slot, M, n_heads, n_kv_heads, head_dim, cap, window);
}

/* Streams a 1 GiB buffer on all threads, best of 5 passes (see bench/membw.c). */
static double cpu_measure_bandwidth(vox_backend *be) {
    const size_t n = (size_t)1 << 28; /* floats */
    float *a = aligned_alloc(64, n * sizeof(float));
    if (!a) return 0.0;
#pragma omp parallel for schedule(static)
    for (size_t i = 0; i < n; i++) a[i] = (float)(i & 1023);
    double best = 1e30;
    volatile float sink = 0;
    for (int pass = 0; pass < 5; pass++) {
        struct timespec t0, t1;
        clock_gettime(CLOCK_MONOTONIC, &t0);
        float total = 0;
#pragma omp parallel for schedule(static) reduction(+ : total)
        for (size_t c = 0; c < n; c += 4096) total += dot_f32(a + c, a + c, 4096); /* vectorised read */
        clock_gettime(CLOCK_MONOTONIC, &t1);
        double dt = (t1.tv_sec - t0.tv_sec) + (t1.tv_nsec - t0.tv_nsec) * 1e-9;
        sink += total;
        if (dt < best) best = dt;
    }
    free(a);
    return n * sizeof(float) / best / 1e9;
}

/* the serving scheduler's thread: OpenMP's team size is per thread */
static void cpu_thread_init(vox_backend *be) { omp_set_num_threads(impl_of(be)->threads); }

static int cpu_graph_launch(vox_backend *be, int key) { return 0; }
static void cpu_graph_mark(vox_backend *be, int key) {}

static void cpu_destroy(vox_backend *be) {
    if (!be) return;
    cpu_impl *ci = impl_of(be);
    if (ci) {
        free(ci->widen);
        free(ci->scratch);
        free(ci->norm_buf);
        free(ci);
    }
    free(be);
}

vox_backend *vox_cpu_backend_new(int threads) {
    vox_backend *be = calloc(1, sizeof *be);
    cpu_impl *ci = calloc(1, sizeof *ci);
    if (!be || !ci) goto oom;
    if (threads > 0) omp_set_num_threads(threads);
    openblas_set_num_threads(1); /* we parallelise around sgemm calls ourselves */
    ci->threads = omp_get_max_threads();
    ci->widen = aligned_alloc(64, (size_t)ci->threads * WIDEN_BLOCK_FLOATS * sizeof(float));
    if (!ci->widen) goto oom;
    be->name = "cpu";
    snprintf(be->device_name, sizeof be->device_name, "cpu (%d threads)", ci->threads);
    be->impl = ci;
    be->alloc = cpu_alloc;
    be->free = cpu_free;
    be->upload = cpu_memcpy;
    be->download = cpu_memcpy;
    be->copy = cpu_memcpy;
    be->sync = cpu_sync;
    be->host_alloc = cpu_host_alloc;
    be->host_free = cpu_free;
    be->download_async = cpu_download_async;
    be->wait_fence = cpu_wait_fence;
    be->upload_weights = cpu_upload_weights;
    be->destroy = cpu_destroy;
    be->linear = cpu_linear;
    be->rmsnorm = cpu_rmsnorm;
    be->rope = cpu_rope;
    be->kv_store = cpu_kv_store;
    be->attention = cpu_attention;
    be->swiglu = cpu_swiglu;
    be->conv_cols = cpu_conv_cols;
    be->conv_keep = cpu_conv_keep;
    be->ring_append = cpu_ring_append;
    be->embed = cpu_embed;
    be->argmax = cpu_argmax;
    be->topk = cpu_topk;
    be->graph_launch = cpu_graph_launch;
    be->graph_begin = cpu_graph_mark;
    be->graph_end = cpu_graph_mark;
    be->measure_bandwidth = cpu_measure_bandwidth;
    be->norm_linear = cpu_norm_linear;
    be->swiglu_linear = cpu_swiglu_linear;
    be->rope_attention = cpu_rope_attention;
    be->thread_init = cpu_thread_init;
    be->kv_bf16 = 1;
    be->kv_dtype = VOX_DT_F32;
    return be;
oom:
    if (ci) free(ci->widen);
    free(ci);
    free(be);
    vox_error("cpu backend: out of memory");
    return NULL;
}
