/* voxtral_cuda_weights.c - the CUDA backend's weights: every matrix goes to the device
 * once, into one arena, in the dtype of the GPU path (bf16 as in the checkpoint; fp16
 * converted on the device, with fp32 for a tensor fp16 cannot hold; fp32), through
 * pinned double-buffered staging; quantized matrices (Q8 / Q4) keep their bytes and F16
 * scales, with the dense tile of their GEMM path. The layout pass sizes the arena and
 * checks it against free device memory first. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "voxtral_cuda_impl.h"
#include "voxtral_quant.h"

static size_t dtype_size(vox_dtype dt) { return dt == VOX_DT_F32 ? 4 : 2; }

static size_t arena_round(size_t b) { return (b + ARENA_ALIGN - 1) / ARENA_ALIGN * ARENA_ALIGN; }

/* BF16 -> FP16 is exact for 2^-17 <= |w| <= 65504: FP16 keeps 11 significant bits
 * down to 2^-14, and the 8 of a BF16 down to 2^-17 as subnormals; smaller values
 * round to multiples of 2^-24. A tensor stays fp32 when its max |w| is beyond the
 * FP16 range, or when that rounding costs more than F16_MAX_REL_ERR of its L2 norm
 * (a sixteenth of BF16's own rounding unit, 2^-8): only tensors of tiny scale.
 * Returns 1 when FP16 holds the tensor; max |w| and the relative error in *. */
#define F16_MAX 65504.0f
#define F16_MAX_REL_ERR (1.0 / 4096)
#define BF16_2POW_M17 0x3700u /* the BF16 bits of 2^-17 */

int vox_cuda_f16_check(const uint16_t *w, int64_t n, float *max_abs, double *rel_err) {
    unsigned max_bits = 0;
    double ss = 0, es = 0;
#pragma omp parallel for reduction(max : max_bits) reduction(+ : ss, es) schedule(static)
    for (int64_t i = 0; i < n; i++) {
        unsigned b = w[i] & 0x7fffu;
        float v = vox_bf16_to_f32((uint16_t)b);
        max_bits = b > max_bits ? b : max_bits;
        ss += (double)v * v;
        if (b < BF16_2POW_M17) {
            double q = rint((double)v * 16777216.0) / 16777216.0; /* FP16 subnormal: 2^-24 steps */
            es += ((double)v - q) * ((double)v - q);
        }
    }
    *max_abs = vox_bf16_to_f32((uint16_t)max_bits); /* NaN bits sort above inf: both fail */
    *rel_err = ss > 0 ? sqrt(es / ss) : 0.0;
    return *max_abs <= F16_MAX && *rel_err <= F16_MAX_REL_ERR;
}

/* Calls fn on every weight of the model, with a short name ("dec.3.wq"). */
typedef void (*weight_fn)(vox_weight *w, const char *name, void *arg);

static void each_weight(vox_model *m, weight_fn fn, void *arg) {
    const vox_config *c = &m->cfg;
    char nm[64];
#define W(w, ...) (snprintf(nm, sizeof nm, __VA_ARGS__), fn((w), nm, arg))
#define WL(tower, f) W(&L->f, tower ".%d." #f, l)
    W(&m->conv0_w, "conv0_w"), W(&m->conv0_b, "conv0_b"), W(&m->conv1_w, "conv1_w"), W(&m->conv1_b, "conv1_b");
    for (int l = 0; l < c->enc.n_layers; l++) {
        vox_enc_layer *L = &m->enc[l];
        WL("enc", attn_norm), WL("enc", wq), WL("enc", bq), WL("enc", wk), WL("enc", wv), WL("enc", bv);
        WL("enc", wo), WL("enc", bo), WL("enc", ffn_norm), WL("enc", w1), WL("enc", w3), WL("enc", w2);
        WL("enc", b2);
    }
    W(&m->enc_norm, "enc_norm"), W(&m->adapter0, "adapter0"), W(&m->adapter2, "adapter2");
    W(&m->tok_emb, "tok_emb"), W(&m->dec_norm, "dec_norm");
    for (int l = 0; l < c->dec.n_layers; l++) {
        vox_dec_layer *L = &m->dec[l];
        WL("dec", attn_norm), WL("dec", wq), WL("dec", wk), WL("dec", wv), WL("dec", wo);
        WL("dec", ffn_norm), WL("dec", w1), WL("dec", w3), WL("dec", w2), WL("dec", ada0);
        WL("dec", ada2), WL("dec", ffn_scale);
    }
#undef WL
#undef W
}

/* pass 1: each weight's device dtype, the arena size */
typedef struct {
    vox_dtype path;
    size_t arena, host, bf16_host; /* arena bytes; host bytes: all, the BF16 matrices */
    int n_converted, n_kept_f32, n_quant;
} layout_state;

static void layout_one(vox_weight *w, const char *name, void *arg) {
    layout_state *ls = arg;
    w->dev = NULL;
    w->dev_scales = NULL;
    w->dev_dtype = w->dtype;
    if (!w->data) return;
    const int64_t n = w->rows * w->cols;
    if (vox_dtype_quantized(w->dtype)) { /* as it is: data, then the scales */
        const size_t d = (size_t)(w->rows * vox_q_row_bytes(w->dtype, w->cols, w->group));
        const size_t sc = (size_t)(w->rows * vox_q_scale_count(w->dtype, w->cols, w->group)) * 2;
        ls->host += d + sc;
        ls->bf16_host += d + sc;
        ls->arena += arena_round(d) + arena_round(sc);
        ls->n_quant++;
        return;
    }
    if (w->dtype == VOX_DT_BF16 && ls->path != VOX_DT_BF16) {
        w->dev_dtype = ls->path;
        float mx;
        double re;
        if (ls->path == VOX_DT_F16 && !vox_cuda_f16_check(w->data, n, &mx, &re)) {
            w->dev_dtype = VOX_DT_F32;
            ls->n_kept_f32++;
            fprintf(stderr, "voxtral: cuda: tensor %s kept in fp32: max |w| = %g, fp16 relative error %.2g\n",
                    name, mx, re);
        }
        ls->n_converted++;
    }
    ls->host += (size_t)n * dtype_size(w->dtype);
    if (w->dtype == VOX_DT_BF16) ls->bf16_host += (size_t)n * 2;
    ls->arena += arena_round((size_t)n * dtype_size(w->dev_dtype));
}

/* pass 2: copies through pinned double-buffered staging; a converted weight goes
 * BF16 to the device staging buffer, then the conversion kernel writes the arena */
typedef struct {
    cuda_impl *ci;
    char *arena;
    size_t off, done, total;
    char *stage[2];
    uint16_t *dstage; /* device, STAGE_BYTES; NULL on the bf16 path */
    cudaEvent_t ev[2];
    int cur;
    double next_report;
    int tty; /* stderr is a terminal: a \r progress line; else one line at the end */
    int verbose; /* 0: no progress or summary line */
} upload_state;

/* bytes from the host to dst through the pinned staging buffers */
static void stage_copy(upload_state *u, char *dst, const char *src, size_t bytes) {
    vox_backend *be = u->ci->be;
    for (size_t at = 0; at < bytes;) {
        size_t n = bytes - at < STAGE_BYTES ? bytes - at : STAGE_BYTES;
        int b = u->cur;
        u->cur ^= 1;
        CUDA_CHECK(cudaEventSynchronize(u->ev[b]));
        memcpy(u->stage[b], src + at, n);
        CUDA_CHECK(cudaMemcpyAsync(dst + at, u->stage[b], n, cudaMemcpyHostToDevice, u->ci->st));
        CUDA_CHECK(cudaEventRecord(u->ev[b], u->ci->st));
        at += n;
        u->done += n;
    }
}

static void upload_one(vox_weight *w, const char *name, void *arg) {
    upload_state *u = arg;
    vox_backend *be = u->ci->be;
    if (!w->data) return;
    if (vox_dtype_quantized(w->dtype)) {
        const size_t d = (size_t)(w->rows * vox_q_row_bytes(w->dtype, w->cols, w->group));
        const size_t sc = (size_t)(w->rows * vox_q_scale_count(w->dtype, w->cols, w->group)) * 2;
        w->dev = u->arena + u->off;
        stage_copy(u, w->dev, w->data, d);
        u->off += arena_round(d);
        w->dev_scales = u->arena + u->off;
        stage_copy(u, w->dev_scales, (const char *)w->scales, sc);
        u->off += arena_round(sc);
        return;
    }
    const size_t n_el = (size_t)(w->rows * w->cols), bytes = n_el * dtype_size(w->dtype);
    const size_t dsize = dtype_size(w->dev_dtype);
    const int convert = w->dev_dtype != w->dtype;
    w->dev = u->arena + u->off;
    const char *src = w->data;
    for (size_t at = 0; at < bytes;) {
        size_t n = bytes - at < STAGE_BYTES ? bytes - at : STAGE_BYTES;
        int b = u->cur;
        u->cur ^= 1;
        CUDA_CHECK(cudaEventSynchronize(u->ev[b])); /* its last copy is done */
        memcpy(u->stage[b], src + at, n);           /* reads the mmap: pages come in here */
        if (!convert) {
            CUDA_CHECK(cudaMemcpyAsync((char *)w->dev + at, u->stage[b], n, cudaMemcpyHostToDevice,
                                       u->ci->st));
        } else { /* BF16 -> dev_dtype; the next chunk's copy into dstage waits for it (one stream) */
            CUDA_CHECK(cudaMemcpyAsync(u->dstage, u->stage[b], n, cudaMemcpyHostToDevice, u->ci->st));
            vox_cuda_convert_bf16((char *)w->dev + at / 2 * dsize, w->dev_dtype, u->dstage,
                                  (int64_t)(n / 2), u->ci->st);
            CUDA_CHECK(cudaGetLastError());
        }
        CUDA_CHECK(cudaEventRecord(u->ev[b], u->ci->st));
        at += n;
        u->done += n;
        if (u->tty && u->verbose && u->total > (1u << 30) && u->done >= u->next_report) {
            fprintf(stderr, "\rvoxtral: cuda: uploading weights %.1f / %.1f GB", u->done / 1e9,
                    u->total / 1e9);
            u->next_report += u->total / 20.0;
        }
    }
    u->off += arena_round(n_el * dsize);
}

/* The quantized GEMM path's tile and output scratch, once (also a test hook) */
int vox_cuda_alloc_qtile(vox_backend *be) {
    cuda_impl *ci = impl_of(be);
    if (ci->qtile) return 0;
    const size_t tile = (size_t)QTILE_ELEMS * (ci->path == VOX_DT_F32 ? 4 : 2), out = (size_t)QOUT_FLOATS * 4;
    cudaError_t e = cudaMalloc(&ci->qtile, tile);
    if (e == cudaSuccess) e = cudaMalloc((void **)&ci->qout, out);
    if (e != cudaSuccess) {
        cudaFree(ci->qtile);
        ci->qtile = NULL;
        return vox_error("cuda: quantized GEMM tile (%.0f MB): %s", (tile + out) / 1e6, cudaGetErrorString(e));
    }
    be->mem_bytes += tile + out;
    return 0;
}

int vox_cuda_upload_weights(vox_backend *be, vox_model *m) {
    cuda_impl *ci = impl_of(be);
    layout_state ls = {.path = ci->path};
    each_weight(m, layout_one, &ls);
    vox_cuda_drop_graphs(ci);
    if (ci->arena) CUDA_CHECK(cudaFree(ci->arena));
    be->mem_bytes -= ci->arena_bytes;
    ci->arena = NULL;
    ci->arena_bytes = 0;
    /* the arena, the staging buffer, and what the stream will need after it */
    size_t fr = 0, tot = 0;
    size_t buffers = ci->need_bytes > ls.bf16_host ? ci->need_bytes - ls.bf16_host : 0;
    size_t staging = ls.n_converted ? (size_t)STAGE_BYTES : 0;
    /* the quantized GEMM path's tile and output scratch */
    const size_t qtile = ls.n_quant && !ci->qtile ? (size_t)QTILE_ELEMS * (ci->path == VOX_DT_F32 ? 4 : 2) +
                                                        (size_t)QOUT_FLOATS * 4 : 0;
    buffers += qtile;
    CUDA_CHECK(cudaMemGetInfo(&fr, &tot));
    if (ls.arena + buffers + staging > fr)
        return vox_error("cuda: the %s path needs %.2f GiB of weights + %.2f GiB of buffers, %.2f GiB "
                         "free on %s%s", vox_cuda_path_name(ci->path), ls.arena / 1073741824.0,
                         (buffers + staging) / 1073741824.0, fr / 1073741824.0, ci->gpu,
                         ci->path == VOX_DT_F32 ? " (fp32 doubles the weights: --gpu-path fp16, or "
                                                  "bf16 on compute capability 8.0+)" : "");
    cudaError_t e = cudaMalloc(&ci->arena, ls.arena ? ls.arena : 1);
    if (e != cudaSuccess) {
        ci->arena = NULL;
        return vox_error("cuda: weights need %.2f GiB on the device: %s", ls.arena / 1073741824.0,
                         cudaGetErrorString(e));
    }
    ci->arena_bytes = ls.arena;
    be->mem_bytes += ls.arena;
    if (qtile && vox_cuda_alloc_qtile(be) != 0) return -1;
    upload_state u = {.ci = ci, .arena = ci->arena, .total = ls.host, .tty = isatty(2), .verbose = be->verbose};
    if (staging && (e = cudaMalloc((void **)&u.dstage, staging)) != cudaSuccess)
        return vox_error("cuda: weight staging buffer: %s", cudaGetErrorString(e));
    for (int b = 0; b < 2; b++) {
        CUDA_CHECK(cudaHostAlloc((void **)&u.stage[b], STAGE_BYTES, cudaHostAllocDefault));
        CUDA_CHECK(cudaEventCreateWithFlags(&u.ev[b], cudaEventDisableTiming));
        CUDA_CHECK(cudaEventRecord(u.ev[b], ci->st));
    }
    if (!cuda_failed) each_weight(m, upload_one, &u);
    CUDA_CHECK(cudaStreamSynchronize(ci->st));
    for (int b = 0; b < 2; b++) {
        if (u.stage[b]) CUDA_CHECK(cudaFreeHost(u.stage[b]));
        if (u.ev[b]) CUDA_CHECK(cudaEventDestroy(u.ev[b]));
    }
    if (u.dstage) CUDA_CHECK(cudaFree(u.dstage));
    if (ls.arena > (1u << 30) && u.verbose)
        fprintf(stderr, "%svoxtral: cuda: uploaded weights %.1f GB (%s path%s)%s\n", u.tty ? "\r" : "",
                ls.arena / 1e9, vox_cuda_path_name(ci->path),
                ls.n_kept_f32 ? ", some tensors fp32" : "", u.tty ? "        " : "");
    if (cuda_failed) return vox_error("cuda: weight upload: %s", cuda_errmsg);
    return 0;
}

