/* voxtral_quant.c - quantized weights (formats: voxtral_quant.h): the reference
 * quantization and dequantization rules, sizes, quantization of a loaded BF16 model
 * (--quant) and writing a model directory (--quantize OUT_DIR).
 */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <math.h>
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>
#include <cjson/cJSON.h>

#include "voxtral_quant.h"

uint16_t vox_f32_to_f16(float f) {
    union { float f; uint32_t u; } v = {f};
    uint32_t sign = (v.u >> 16) & 0x8000u, a = v.u & 0x7fffffffu;
    if (a >= 0x7f800000u) return (uint16_t)(sign | 0x7c00u | (a > 0x7f800000u ? 0x200u : 0));
    if (a >= 0x477ff000u) return (uint16_t)(sign | 0x7c00u); /* rounds past 65504 */
    if (a < 0x38800000u) {                                   /* below 2^-14: subnormal */
        float r = rintf(fabsf(f) * 16777216.0f);             /* multiples of 2^-24, ties even */
        return (uint16_t)(sign | (uint32_t)r);
    }
    uint32_t e = (a >> 23) - 112, man = a & 0x7fffffu;
    uint32_t h = e << 10 | man >> 13, rest = man & 0x1fffu;
    if (rest > 0x1000u || (rest == 0x1000u && (h & 1))) h++; /* a carry into e is right */
    return (uint16_t)(sign | h);
}

const char *vox_dtype_name(vox_dtype dt) {
    switch (dt) {
    case VOX_DT_F32: return "f32";
    case VOX_DT_F16: return "f16";
    case VOX_DT_Q8: return "q8";
    case VOX_DT_Q4: return "q4";
    default: return "bf16";
    }
}

static double bytes_of(vox_dtype dt, const vox_weight *w) {
    if (vox_dtype_quantized(dt))
        return (double)w->rows * (vox_q_row_bytes(dt, w->cols, w->group) +
                                  2 * vox_q_scale_count(dt, w->cols, w->group));
    return (double)w->rows * w->cols * (dt == VOX_DT_F32 ? 4 : 2);
}
double vox_weight_bytes(const vox_weight *w) { return w->data ? bytes_of(w->dtype, w) : 0; }
double vox_weight_dev_bytes(const vox_weight *w) {
    return w->data ? bytes_of(w->dev ? w->dev_dtype : w->dtype, w) : 0;
}

/* ---- the rules ---------------------------------------------------------------------- */
void vox_q_dequant_row(const vox_weight *w, int64_t r, float *out) {
    const int G = w->group;
    const int64_t K = w->cols, ng = vox_q_groups(K, G);
    const uint16_t *sc = w->scales + r * vox_q_scale_count(w->dtype, K, G);
    if (w->dtype == VOX_DT_Q8) {
        const int8_t *q = (const int8_t *)w->data + r * vox_q_row_bytes(VOX_DT_Q8, K, G);
        for (int64_t g = 0; g < ng; g++) {
            const float s = vox_f16_to_f32(sc[g]);
            const int64_t k0 = g * G, n = K - k0 < G ? K - k0 : G;
            for (int64_t k = 0; k < n; k++) out[k0 + k] = s * (float)q[k0 + k];
        }
        return;
    }
    const uint8_t *q = (const uint8_t *)w->data + r * vox_q_row_bytes(VOX_DT_Q4, K, G);
    for (int64_t g = 0; g < ng; g++) {
        const float s = vox_f16_to_f32(sc[2 * g]), mn = vox_f16_to_f32(sc[2 * g + 1]);
        for (int b = 0; b < G / 32; b++) {
            const int64_t k0 = g * G + 32 * b;
            const uint8_t *p = q + k0 / 2;
            if (k0 + 32 <= K) {
                for (int j = 0; j < 16; j++) {
                    out[k0 + j] = s * (float)(p[j] & 15) + mn;
                    out[k0 + 16 + j] = s * (float)(p[j] >> 4) + mn;
                }
            } else {
                for (int j = 0; j < 32 && k0 + j < K; j++)
                    out[k0 + j] = s * (float)(j < 16 ? p[j] & 15 : p[j - 16] >> 4) + mn;
            }
        }
    }
}

void vox_q_quantize_rows(vox_dtype dt, int G, const float *w, int64_t n_rows, int64_t K, void *data,
                         uint16_t *scales) {
    const int64_t ng = vox_q_groups(K, G), rb = vox_q_row_bytes(dt, K, G);
    const int64_t ns = vox_q_scale_count(dt, K, G);
    for (int64_t r = 0; r < n_rows; r++) {
        const float *x = w + r * K;
        uint8_t *q = (uint8_t *)data + r * rb;
        uint16_t *sc = scales + r * ns;
        memset(q, 0, (size_t)rb);
        for (int64_t g = 0; g < ng; g++) {
            const int64_t k0 = g * G, n = K - k0 < G ? K - k0 : G;
            float lo = x[k0], hi = x[k0], amax = 0;
            for (int64_t k = 0; k < n; k++) {
                float v = x[k0 + k];
                lo = v < lo ? v : lo;
                hi = v > hi ? v : hi;
                amax = fabsf(v) > amax ? fabsf(v) : amax;
            }
            if (dt == VOX_DT_Q8) {
                uint16_t sh = vox_f32_to_f16(amax / 127.0f);
                float s = vox_f16_to_f32(sh);
                sc[g] = sh;
                for (int64_t k = 0; k < n; k++) {
                    float t = s > 0 ? rintf(x[k0 + k] / s) : 0.0f;
                    t = t < -127 ? -127 : t > 127 ? 127 : t;
                    q[k0 + k] = (uint8_t)(int8_t)t;
                }
            } else {
                uint16_t mh = vox_f32_to_f16(lo);
                float mn = vox_f16_to_f32(mh);
                uint16_t sh = vox_f32_to_f16((hi - mn) / 15.0f);
                float s = vox_f16_to_f32(sh);
                sc[2 * g] = sh;
                sc[2 * g + 1] = mh;
                for (int64_t k = 0; k < n; k++) {
                    float t = s > 0 ? rintf((x[k0 + k] - mn) / s) : 0.0f;
                    t = t < 0 ? 0 : t > 15 ? 15 : t;
                    const int64_t c = k0 + k, blk = c / 32, j = c % 32;
                    uint8_t *p = q + blk * 16 + (j & 15);
                    *p |= (uint8_t)((unsigned)t << (j < 16 ? 0 : 4));
                }
            }
        }
    }
}

int vox_quant_spec_check(const char *spec) {
    vox_quant q;
    return vox_quant_parse(spec, &q);
}

int vox_quant_parse(const char *spec, vox_quant *q) {
    *q = (vox_quant){VOX_DT_BF16, VOX_DT_Q8, VOX_QGROUP_DEFAULT};
    if (!spec) return vox_error("quant: no format given (use q8 or q4)");
    char fmt[8] = {0}, enc[8] = {0};
    int group = VOX_QGROUP_DEFAULT, n = 0;
    const char *p = spec;
    while (*p && *p != ':' && n < 7) fmt[n++] = *p++;
    if (!strcmp(fmt, "q8")) q->fmt = VOX_DT_Q8;
    else if (!strcmp(fmt, "q4")) q->fmt = VOX_DT_Q4;
    else return vox_error("quant '%.40s': format must be q8 or q4 (optionally q4:GROUP[:ENCODER])", spec);
    if (*p == ':') {
        char *end;
        long g = strtol(p + 1, &end, 10);
        if (end == p + 1 || g < VOX_QGROUP_MIN || g > VOX_QGROUP_MAX || g % 32)
            return vox_error("quant '%.40s': group size must be a multiple of 32 in [%d, %d]", spec,
                             VOX_QGROUP_MIN, VOX_QGROUP_MAX);
        group = (int)g;
        p = end;
        if (*p == ':') {
            snprintf(enc, sizeof enc, "%.7s", p + 1);
            p += 1 + strlen(enc);
            if (!strcmp(enc, "bf16")) q->enc = VOX_DT_BF16;
            else if (!strcmp(enc, "q8")) q->enc = VOX_DT_Q8;
            else return vox_error("quant '%.40s': encoder format must be bf16 or q8", spec);
        }
    }
    if (*p) return vox_error("quant '%.40s': expected q8 | q4 [:GROUP [:bf16|q8]]", spec);
    q->group = group;
    return 0;
}

/* ---- the matrices the policy covers ----------------------------------------------------- */
#define PREFIX_E "mm_streams_embeddings.embedding_module."
#define PREFIX_W PREFIX_E "whisper_encoder."

int vox_each_quant_matrix(vox_model *m, vox_matrix_fn fn, void *arg) {
    char nm[256];
    const char *enc_names[] = {"attention.wq", "attention.wk", "attention.wv", "attention.wo",
                               "feed_forward.w1", "feed_forward.w3", "feed_forward.w2"};
    for (int i = 0; i < m->cfg.enc.n_layers; i++) {
        vox_enc_layer *L = &m->enc[i];
        vox_weight *w[] = {&L->wq, &L->wk, &L->wv, &L->wo, &L->w1, &L->w3, &L->w2};
        for (int j = 0; j < 7; j++) {
            snprintf(nm, sizeof nm, PREFIX_W "transformer.layers.%d.%s.weight", i, enc_names[j]);
            if (fn(w[j], nm, 0, arg)) return -1;
        }
    }
    if (fn(&m->adapter0, PREFIX_E "audio_language_projection.0.weight", 0, arg) ||
        fn(&m->adapter2, PREFIX_E "audio_language_projection.2.weight", 0, arg) ||
        fn(&m->tok_emb, PREFIX_E "tok_embeddings.weight", 1, arg))
        return -1;
    for (int i = 0; i < m->cfg.dec.n_layers; i++) {
        vox_dec_layer *L = &m->dec[i];
        vox_weight *w[] = {&L->wq, &L->wk, &L->wv, &L->wo, &L->w1, &L->w3, &L->w2};
        for (int j = 0; j < 7; j++) {
            snprintf(nm, sizeof nm, "layers.%d.%s.weight", i, enc_names[j]);
            if (fn(w[j], nm, 1, arg)) return -1;
        }
    }
    return 0;
}

typedef struct {
    const vox_model *m;
    double bytes;
} sum_state;

double vox_model_weight_bytes(const vox_model *m) {
    const vox_config *c = &m->cfg;
    double b = 0;
    const vox_weight *top[] = {&m->conv0_w, &m->conv0_b, &m->conv1_w, &m->conv1_b, &m->enc_norm,
                               &m->adapter0, &m->adapter2, &m->tok_emb, &m->dec_norm};
    for (int i = 0; i < 9; i++) b += vox_weight_bytes(top[i]);
    for (int l = 0; l < c->enc.n_layers && m->enc; l++) {
        const vox_enc_layer *L = &m->enc[l];
        const vox_weight *w[] = {&L->attn_norm, &L->wq, &L->bq, &L->wk, &L->wv, &L->bv, &L->wo,
                                 &L->bo, &L->ffn_norm, &L->w1, &L->w3, &L->w2, &L->b2};
        for (int i = 0; i < 13; i++) b += vox_weight_bytes(w[i]);
    }
    for (int l = 0; l < c->dec.n_layers && m->dec; l++) {
        const vox_dec_layer *L = &m->dec[l];
        const vox_weight *w[] = {&L->attn_norm, &L->wq, &L->wk, &L->wv, &L->wo, &L->ffn_norm,
                                 &L->w1, &L->w3, &L->w2, &L->ada0, &L->ada2, &L->ffn_scale};
        for (int i = 0; i < 12; i++) b += vox_weight_bytes(w[i]);
    }
    return b;
}

/* ---- quantization at load ------------------------------------------------------------------ */
static size_t round64(double b) { return ((size_t)b + 63) / 64 * 64; }

typedef struct {
    const vox_quant *q;
    size_t total; /* pass 1: pool bytes */
    char *pool;   /* pass 2 */
    size_t off;
    long page;
    double n_weights;
} quant_state;

static vox_dtype target_of(const vox_quant *q, int decoder) { return decoder ? q->fmt : q->enc; }

static int size_one(vox_weight *w, const char *name, int decoder, void *arg) {
    quant_state *s = arg;
    vox_dtype dt = target_of(s->q, decoder);
    if (!vox_dtype_quantized(dt)) return 0;
    if (w->dtype != VOX_DT_BF16)
        return vox_error("quant: tensor '%s' is %s, expected BF16 to quantize", name, vox_dtype_name(w->dtype));
    s->total += round64((double)w->rows * vox_q_row_bytes(dt, w->cols, s->q->group)) +
                round64((double)w->rows * vox_q_scale_count(dt, w->cols, s->q->group) * 2);
    return 0;
}

static int quant_one(vox_weight *w, const char *name, int decoder, void *arg) {
    quant_state *s = arg;
    vox_dtype dt = target_of(s->q, decoder);
    if (!vox_dtype_quantized(dt)) return 0;
    const int G = s->q->group;
    const int64_t R = w->rows, K = w->cols, rb = vox_q_row_bytes(dt, K, G), ns = vox_q_scale_count(dt, K, G);
    char *data = s->pool + s->off;
    s->off += round64((double)R * rb);
    uint16_t *scales = (uint16_t *)(s->pool + s->off);
    s->off += round64((double)R * ns * 2);
    const uint16_t *src = w->data;
    int oom = 0;
#pragma omp parallel reduction(| : oom)
    {
        float *row = malloc(sizeof(float) * (size_t)K);
        if (!row) oom = 1;
#pragma omp for schedule(static)
        for (int64_t r = 0; r < R; r++) {
            if (!row) continue;
            for (int64_t k = 0; k < K; k++) row[k] = vox_bf16_to_f32(src[r * K + k]);
            vox_q_quantize_rows(dt, G, row, 1, K, data + r * rb, scales + r * ns);
        }
        free(row);
    }
    if (oom) return vox_error("quant: out of memory");
    /* the BF16 pages it came from are not needed any more */
    uintptr_t a = ((uintptr_t)src + s->page - 1) / s->page * s->page;
    uintptr_t e = ((uintptr_t)src + (uintptr_t)(R * K * 2)) / s->page * s->page;
    if (e > a) madvise((void *)a, e - a, MADV_DONTNEED);
    w->dtype = w->dev_dtype = dt;
    w->data = data;
    w->scales = scales;
    w->group = G;
    s->n_weights += (double)R * K;
    return 0;
}

int vox_model_quantize(vox_model *m, const vox_quant *q, int verbose) {
    if (vox_dtype_quantized(m->qfmt) || vox_dtype_quantized(m->qenc))
        return vox_error("quant: the model is already quantized (%s, encoder %s); load its BF16 "
                         "checkpoint to quantize it again", vox_dtype_name(m->qfmt), vox_dtype_name(m->qenc));
    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    quant_state s = {.q = q, .page = sysconf(_SC_PAGESIZE)};
    if (s.page <= 0) s.page = 4096;
    if (vox_each_quant_matrix(m, size_one, &s)) return -1;
    s.pool = aligned_alloc(64, s.total ? s.total : 64);
    if (!s.pool) return vox_error("quant: out of memory for %.2f GB of quantized weights", s.total / 1e9);
    if (vox_each_quant_matrix(m, quant_one, &s)) {
        free(s.pool); /* the weights quantized so far point into it: the model is unusable */
        return -1;
    }
    m->quant_pool = s.pool;
    m->quant_pool_bytes = s.total;
    m->qfmt = q->fmt;
    m->qenc = q->enc;
    m->qgroup = q->group;
    clock_gettime(CLOCK_MONOTONIC, &t1);
    if (verbose >= 1)
        fprintf(stderr, "voxtral: quantized %.2fG weights to %s (group %d, encoder %s) in %.1f s\n",
                s.n_weights / 1e9, vox_dtype_name(q->fmt), q->group, vox_dtype_name(q->enc),
                (t1.tv_sec - t0.tv_sec) + (t1.tv_nsec - t0.tv_nsec) * 1e-9);
    return 0;
}

/* ---- writing a model directory ---------------------------------------------------------------- */
typedef struct {
    const char *name;
    vox_dtype dt; /* of the output tensor */
    const char *st_dtype;
    int ndim;
    int64_t shape[3];
    const void *data;
    size_t bytes;
    int owned_name;
} out_tensor;

typedef struct {
    const vox_weight **w;
    const char **names;
    int n, cap;
} matrix_list;

static int list_one(vox_weight *w, const char *name, int decoder, void *arg) {
    matrix_list *l = arg;
    if (l->n == l->cap) {
        int cap = l->cap ? 2 * l->cap : 512;
        const vox_weight **nw = realloc(l->w, cap * sizeof *nw);
        if (nw) l->w = nw;
        const char **nn = realloc(l->names, cap * sizeof *nn);
        if (nn) l->names = nn;
        if (!nw || !nn) return vox_error("quantize: out of memory");
        l->cap = cap;
    }
    l->w[l->n] = w;
    l->names[l->n] = strdup(name);
    if (!l->names[l->n]) return vox_error("quantize: out of memory");
    l->n++;
    return 0;
}

static int copy_file(const char *src, const char *dst) {
    FILE *in = fopen(src, "rb");
    if (!in) return vox_error("%s: %s", src, strerror(errno));
    FILE *out = fopen(dst, "wb");
    if (!out) {
        fclose(in);
        return vox_error("%s: %s", dst, strerror(errno));
    }
    char buf[1 << 16];
    size_t n;
    int bad = 0;
    while ((n = fread(buf, 1, sizeof buf, in)) > 0) bad |= fwrite(buf, 1, n, out) != n;
    bad |= ferror(in);
    fclose(in);
    bad |= fclose(out) != 0;
    return bad ? vox_error("%s: write error copying %s", dst, src) : 0;
}

static char *read_text(const char *path, size_t *len) {
    FILE *f = fopen(path, "rb");
    if (!f) {
        vox_error("%s: %s", path, strerror(errno));
        return NULL;
    }
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    char *t = n >= 0 ? malloc((size_t)n + 1) : NULL;
    if (!t || fread(t, 1, (size_t)n, f) != (size_t)n) {
        free(t);
        fclose(f);
        vox_error("%s: read error", path);
        return NULL;
    }
    fclose(f);
    t[n] = 0;
    *len = (size_t)n;
    return t;
}

static int write_params(const vox_model *m, const char *src, const char *dst) {
    size_t len;
    char *text = read_text(src, &len);
    if (!text) return -1;
    cJSON *root = cJSON_ParseWithLength(text, len);
    free(text);
    if (!root) return vox_error("%s: not valid JSON", src);
    cJSON_DeleteItemFromObjectCaseSensitive(root, "quantization");
    if (vox_dtype_quantized(m->qfmt)) {
        cJSON *q = cJSON_CreateObject();
        cJSON_AddStringToObject(q, "format", vox_dtype_name(m->qfmt));
        cJSON_AddNumberToObject(q, "group_size", m->qgroup);
        cJSON_AddStringToObject(q, "encoder", vox_dtype_name(m->qenc));
        cJSON_AddItemToObject(root, "quantization", q);
    }
    char *out = cJSON_Print(root);
    cJSON_Delete(root);
    if (!out) return vox_error("%s: out of memory", dst);
    FILE *f = fopen(dst, "wb");
    int bad = !f || fwrite(out, 1, strlen(out), f) != strlen(out) || fputc('\n', f) == EOF;
    if (f) bad |= fclose(f) != 0;
    free(out);
    return bad ? vox_error("%s: write error", dst) : 0;
}

static int write_safetensors(const vox_model *m, const char *dst) {
    /* the source header: every tensor, in file order (the original bytes of the ones
     * the policy does not touch are copied as they are) */
    const uint8_t *p = m->map;
    uint64_t hlen = 0;
    for (int i = 7; i >= 0; i--) hlen = hlen << 8 | p[i];
    cJSON *hdr = cJSON_ParseWithLength((const char *)p + 8, (size_t)hlen);
    if (!hdr) return vox_error("%s: header is not valid JSON", m->path);
    matrix_list ml = {0};
    out_tensor *t = NULL;
    int n = 0, rc = -1;
    char *hjson = NULL;
    FILE *f = NULL;
    if (vox_each_quant_matrix((vox_model *)m, list_one, &ml)) goto done;
    t = calloc((size_t)cJSON_GetArraySize(hdr) * 2 + 1, sizeof *t);
    if (!t) {
        vox_error("quantize: out of memory");
        goto done;
    }
    const cJSON *e;
    const uint8_t *base = p + 8 + hlen;
    /* pass 1: the quantized data tensors (sizes multiples of 16: aligned in the file),
     * pass 2: their scales and every other tensor */
    for (int pass = 0; pass < 2; pass++) {
        cJSON_ArrayForEach(e, hdr) {
            const size_t nl = strlen(e->string);
            /* scales are written with their matrix (a quantized source's own are not copied) */
            if (!strcmp(e->string, "__metadata__") || (nl > 7 && !strcmp(e->string + nl - 7, ".scales")))
                continue;
            const vox_weight *w = NULL;
            for (int i = 0; i < ml.n && !w; i++)
                if (!strcmp(ml.names[i], e->string)) w = ml.w[i];
            if (w && vox_dtype_quantized(w->dtype)) {
                out_tensor *o = &t[n];
                if (pass == 0) {
                    *o = (out_tensor){e->string, w->dtype, w->dtype == VOX_DT_Q8 ? "I8" : "U8", 2,
                                      {w->rows, vox_q_row_bytes(w->dtype, w->cols, w->group)}, w->data, 0, 0};
                    o->bytes = (size_t)(o->shape[0] * o->shape[1]);
                    n++;
                } else {
                    const int64_t ng = vox_q_groups(w->cols, w->group);
                    *o = (out_tensor){NULL, VOX_DT_F16, "F16", w->dtype == VOX_DT_Q4 ? 3 : 2,
                                      {w->rows, ng, 2}, w->scales,
                                      (size_t)(w->rows * vox_q_scale_count(w->dtype, w->cols, w->group) * 2), 0};
                    char *nm = malloc(strlen(e->string) + 8);
                    if (!nm) {
                        vox_error("quantize: out of memory");
                        goto done;
                    }
                    sprintf(nm, "%s.scales", e->string);
                    o->name = nm;
                    o->owned_name = 1;
                    n++;
                }
                continue;
            }
            if (pass == 0) continue;
            const cJSON *dt = cJSON_GetObjectItemCaseSensitive(e, "dtype");
            const cJSON *sh = cJSON_GetObjectItemCaseSensitive(e, "shape");
            const cJSON *of = cJSON_GetObjectItemCaseSensitive(e, "data_offsets");
            if (!cJSON_IsString(dt) || !cJSON_IsArray(sh) || cJSON_GetArraySize(sh) > 3 ||
                !cJSON_IsArray(of) || cJSON_GetArraySize(of) != 2) {
                vox_error("%s: tensor '%s': unexpected header entry", m->path, e->string);
                goto done;
            }
            out_tensor *o = &t[n++];
            o->name = e->string;
            o->dt = VOX_DT_BF16;
            o->st_dtype = dt->valuestring;
            o->ndim = cJSON_GetArraySize(sh);
            for (int i = 0; i < o->ndim; i++) o->shape[i] = (int64_t)cJSON_GetArrayItem(sh, i)->valuedouble;
            int64_t b0 = (int64_t)cJSON_GetArrayItem(of, 0)->valuedouble;
            int64_t b1 = (int64_t)cJSON_GetArrayItem(of, 1)->valuedouble;
            o->data = base + b0;
            o->bytes = (size_t)(b1 - b0);
        }
    }
    /* the new header */
    cJSON *out = cJSON_CreateObject();
    size_t off = 0;
    for (int i = 0; i < n; i++) {
        cJSON *o = cJSON_CreateObject(), *shape = cJSON_CreateArray(), *offs = cJSON_CreateArray();
        cJSON_AddStringToObject(o, "dtype", t[i].st_dtype);
        for (int d = 0; d < t[i].ndim; d++) cJSON_AddItemToArray(shape, cJSON_CreateNumber((double)t[i].shape[d]));
        cJSON_AddItemToObject(o, "shape", shape);
        cJSON_AddItemToArray(offs, cJSON_CreateNumber((double)off));
        cJSON_AddItemToArray(offs, cJSON_CreateNumber((double)(off + t[i].bytes)));
        cJSON_AddItemToObject(o, "data_offsets", offs);
        cJSON_AddItemToObject(out, t[i].name, o);
        off += t[i].bytes;
    }
    cJSON *meta = cJSON_CreateObject();
    cJSON_AddStringToObject(meta, "format", "pt");
    cJSON_AddItemToObject(out, "__metadata__", meta);
    hjson = cJSON_PrintUnformatted(out);
    cJSON_Delete(out);
    if (!hjson) {
        vox_error("quantize: out of memory");
        goto done;
    }
    size_t hl = strlen(hjson), padded = (8 + hl + 63) / 64 * 64 - 8; /* data starts 64-aligned */
    f = fopen(dst, "wb");
    if (!f) {
        vox_error("%s: %s", dst, strerror(errno));
        goto done;
    }
    uint8_t len8[8];
    for (int i = 0; i < 8; i++) len8[i] = (uint8_t)((uint64_t)padded >> (8 * i));
    int bad = fwrite(len8, 1, 8, f) != 8 || fwrite(hjson, 1, hl, f) != hl;
    for (size_t i = hl; i < padded && !bad; i++) bad = fputc(' ', f) == EOF;
    for (int i = 0; i < n && !bad; i++) bad = fwrite(t[i].data, 1, t[i].bytes, f) != t[i].bytes;
    bad |= fclose(f) != 0;
    f = NULL;
    if (bad) {
        vox_error("%s: write error (disk full?)", dst);
        goto done;
    }
    rc = 0;
done:
    for (int i = 0; i < n; i++)
        if (t[i].owned_name) free((char *)t[i].name);
    for (int i = 0; i < ml.n; i++) free((char *)ml.names[i]);
    free(ml.w);
    free(ml.names);
    free(t);
    free(hjson);
    if (f) fclose(f);
    cJSON_Delete(hdr);
    return rc;
}

int vox_model_write(const vox_model *m, const char *src_dir, const char *out_dir) {
    char a[PATH_MAX], b[PATH_MAX], path[PATH_MAX + 64], src[PATH_MAX + 64];
    if (mkdir(out_dir, 0755) != 0 && errno != EEXIST) return vox_error("%s: %s", out_dir, strerror(errno));
    if (!realpath(src_dir, a) || !realpath(out_dir, b)) return vox_error("%s: %s", out_dir, strerror(errno));
    if (!strcmp(a, b)) return vox_error("%s: the output directory is the model's own directory", out_dir);
    snprintf(path, sizeof path, "%s/consolidated.safetensors.tmp", b);
    if (write_safetensors(m, path)) {
        unlink(path);
        return -1;
    }
    char final[PATH_MAX + 64];
    snprintf(final, sizeof final, "%s/consolidated.safetensors", b);
    if (rename(path, final) != 0) return vox_error("%s: %s", final, strerror(errno));
    snprintf(src, sizeof src, "%s/params.json", a);
    snprintf(path, sizeof path, "%s/params.json", b);
    if (write_params(m, src, path)) return -1;
    snprintf(src, sizeof src, "%s/tekken.json", a);
    snprintf(path, sizeof path, "%s/tekken.json", b);
    return copy_file(src, path);
}

/* ---- sizes under a policy, and the --quantize tool ---------------------------------------------- */
typedef struct {
    const vox_quant *q;
    double delta;
} delta_state;

static int delta_one(vox_weight *w, const char *name, int decoder, void *arg) {
    delta_state *s = arg;
    vox_dtype dt = target_of(s->q, decoder);
    if (!vox_dtype_quantized(dt) || w->dtype != VOX_DT_BF16 || !w->data) return 0;
    vox_weight t = *w;
    t.dtype = dt;
    t.group = s->q->group;
    s->delta += vox_weight_bytes(&t) - vox_weight_bytes(w);
    return 0;
}

double vox_quant_model_bytes(const vox_model *m, const vox_quant *q) {
    delta_state s = {q, 0};
    vox_each_quant_matrix((vox_model *)m, delta_one, &s);
    return vox_model_weight_bytes(m) + s.delta;
}

int vox_quantize_dir(const char *src_dir, const char *out_dir, const char *spec, int verbose) {
    vox_quant q;
    vox_model m;
    if (vox_quant_parse(spec, &q) != 0 || vox_model_load(&m, src_dir) != 0) return -1;
    int rc = vox_model_quantize(&m, &q, verbose);
    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    if (rc == 0) rc = vox_model_write(&m, src_dir, out_dir);
    clock_gettime(CLOCK_MONOTONIC, &t1);
    if (rc == 0 && verbose >= 1)
        fprintf(stderr, "voxtral: wrote %s (%.2f GB of weights) in %.1f s\n", out_dir,
                vox_model_weight_bytes(&m) / 1e9,
                (t1.tv_sec - t0.tv_sec) + (t1.tv_nsec - t0.tv_nsec) * 1e-9);
    vox_model_free(&m);
    return rc;
}
