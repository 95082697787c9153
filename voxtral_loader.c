/* voxtral_loader.c - loads a Mistral-format Voxtral Realtime model directory.
 *
 *   params.json               -> vox_config (checked for presence and sanity)
 *   tekken.json               -> vox_tokenizer (voxtral_tokenizer.c)
 *   consolidated.safetensors  -> mmap'd read-only; every tensor is found by its Mistral
 *                                name (MODEL.md section 1), its dtype, shape and byte
 *                                range are checked; matrices point into the mapping,
 *                                vectors (norms, biases) are converted to F32.
 * A quantized checkpoint (voxtral_quant.h) names its format in params.json
 * ("quantization"); its quantized matrices are I8 / U8 tensors with F16 "<name>.scales",
 * every shape and scale checked; they point into the mapping as well.
 * Any failure gives one error line naming the file and the problem, frees everything
 * and returns -1; no input makes it crash.
 */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>
#include <cjson/cJSON.h>

#include "voxtral_internal.h"
#include "voxtral_quant.h"

#define PREFIX_E "mm_streams_embeddings.embedding_module."
#define PREFIX_W PREFIX_E "whisper_encoder."

#define MAX_PARAMS_BYTES (1 << 24)
/* Largest value accepted for any size in params.json (dims, layers, heads, vocab,
 * windows), and for products like n_heads * head_dim: keeps every size and the
 * product of a size with a small factor within int. */
#define MAX_SIZE (1 << 24)
#define MAX_NDIM 8
/* Audio samples per 80 ms token (1280 for the released model): bounds every buffer
 * sized per token or per encoder chunk (those products stay far within int). */
#define MAX_SAMPLES_PER_TOKEN (1 << 16)
/* An integer safetensors offset or dimension must be exact in a double (cJSON). */
#define MAX_EXACT_INT 9007199254740992.0 /* 2^53 */
/* 8-byte length + "{}": anything shorter cannot be a safetensors file. */
#define MIN_SAFETENSORS_BYTES 10
#define REQUIRED INT_MIN

/* ---- params.json ----------------------------------------------------------- */

typedef struct {
    const char *file; /* for messages */
    const char *pre;  /* prefix naming the object in messages: "", "encoder_args.", ... */
    const cJSON *obj;
} jobj;

static const cJSON *jget(const jobj *o, const char *key) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o->obj, key);
    return cJSON_IsNull(v) ? NULL : v;
}

/* Integer field in [lo, MAX_SIZE]; def == REQUIRED makes it required. */
static int get_int(const jobj *o, const char *key, int def, int lo, int *out) {
    const cJSON *v = jget(o, key);
    if (!v) {
        if (def == REQUIRED) return vox_error("%s: missing field '%s%s'", o->file, o->pre, key);
        *out = def;
        return 0;
    }
    if (!cJSON_IsNumber(v))
        return vox_error("%s: field '%s%s' is not a number", o->file, o->pre, key);
    double d = v->valuedouble;
    if (!(d >= lo && d <= MAX_SIZE) || d != (double)(int)d)
        return vox_error("%s: field '%s%s' = %g, expected an integer in [%d, %d]", o->file,
                         o->pre, key, d, lo, MAX_SIZE);
    *out = (int)d;
    return 0;
}

/* Number field in (lo, hi]; required when req. */
static int get_float(const jobj *o, const char *key, int req, double def, double lo, double hi,
                     float *out) {
    const cJSON *v = jget(o, key);
    if (!v) {
        if (req) return vox_error("%s: missing field '%s%s'", o->file, o->pre, key);
        *out = (float)def;
        return 0;
    }
    if (!cJSON_IsNumber(v))
        return vox_error("%s: field '%s%s' is not a number", o->file, o->pre, key);
    if (!(v->valuedouble > lo && v->valuedouble <= hi))
        return vox_error("%s: field '%s%s' = %g, expected a value in (%g, %g]", o->file, o->pre,
                         key, v->valuedouble, lo, hi);
    *out = (float)v->valuedouble;
    return 0;
}

/* true/false (or 0/1); absent gives def. */
static int get_bool(const jobj *o, const char *key, int def, int *out) {
    const cJSON *v = jget(o, key);
    if (!v) {
        *out = def;
        return 0;
    }
    if (cJSON_IsBool(v)) {
        *out = cJSON_IsTrue(v);
        return 0;
    }
    if (cJSON_IsNumber(v) && (v->valuedouble == 0 || v->valuedouble == 1)) {
        *out = v->valuedouble == 1;
        return 0;
    }
    return vox_error("%s: field '%s%s' is not a boolean", o->file, o->pre, key);
}

static int get_obj(const jobj *parent, const char *key, const char *pre, jobj *out) {
    const cJSON *v = jget(parent, key);
    if (!v) return vox_error("%s: missing field '%s%s'", parent->file, parent->pre, key);
    if (!cJSON_IsObject(v))
        return vox_error("%s: field '%s%s' is not an object", parent->file, parent->pre, key);
    *out = (jobj){parent->file, pre, v};
    return 0;
}

/* One transformer tower. Required: dim, n_layers, head_dim, hidden_dim, n_heads;
 * n_kv_heads is required for the decoder and defaults to n_heads for the encoder.
 * Optional, with the released model's values: rope_theta 1e6, norm_eps 1e-5,
 * sliding_window (decoder 8192, encoder 750), use_biases (decoder false, encoder true). */
static int parse_tower(const jobj *o, vox_tower_config *c, int kv_required, int def_window,
                       int def_biases) {
    if (get_int(o, "dim", REQUIRED, 1, &c->dim) ||
        get_int(o, "n_layers", REQUIRED, 1, &c->n_layers) ||
        get_int(o, "head_dim", REQUIRED, 1, &c->head_dim) ||
        get_int(o, "hidden_dim", REQUIRED, 1, &c->hidden_dim) ||
        get_int(o, "n_heads", REQUIRED, 1, &c->n_heads) ||
        get_int(o, "n_kv_heads", kv_required ? REQUIRED : c->n_heads, 1, &c->n_kv_heads) ||
        get_float(o, "rope_theta", 0, 1e6, 0, 1e30, &c->rope_theta) ||
        get_float(o, "norm_eps", 0, 1e-5, 0, 1, &c->norm_eps) ||
        get_int(o, "sliding_window", def_window, 1, &c->sliding_window) ||
        get_bool(o, "use_biases", def_biases, &c->use_biases))
        return -1;
    if (c->head_dim % 2)
        return vox_error("%s: %shead_dim = %d must be even (RoPE rotates pairs)", o->file, o->pre,
                         c->head_dim);
    if (c->n_heads % c->n_kv_heads)
        return vox_error("%s: %sn_heads = %d is not a multiple of %sn_kv_heads = %d", o->file,
                         o->pre, c->n_heads, o->pre, c->n_kv_heads);
    if ((int64_t)c->n_heads * c->head_dim > MAX_SIZE)
        return vox_error("%s: %sn_heads * head_dim = %lld is too large", o->file, o->pre,
                         (long long)c->n_heads * c->head_dim);
    return 0;
}

/* Fills the config from params.json, except conv_kernel (from the weights).
 * Required: the towers' sizes (see parse_tower), vocab_size, sampling_rate, frame_rate,
 * num_mel_bins, hop_length, window_size, downsample_factor. Optional, with the released
 * model's values: tied_embeddings true (false is rejected), ada_rms_norm_t_cond true,
 * ada_rms_norm_t_cond_dim 32, global_log_mel_max 1.5. */
static int parse_params(vox_config *c, const cJSON *root, const char *file) {
    jobj top = {file, "", root}, mm = top, wm = top, enc = top, aud = top, ds = top;
    int tied = 1;
    if (parse_tower(&top, &c->dec, 1, 8192, 0) ||
        get_int(&top, "vocab_size", REQUIRED, 1, &c->vocab_size) ||
        get_bool(&top, "tied_embeddings", 1, &tied) ||
        get_bool(&top, "ada_rms_norm_t_cond", 1, &c->ada_t_cond) ||
        get_int(&top, "ada_rms_norm_t_cond_dim", c->ada_t_cond ? 32 : 0, 0, &c->ada_t_cond_dim) ||
        get_obj(&top, "multimodal", "multimodal.", &mm) ||
        get_obj(&mm, "whisper_model_args", "whisper_model_args.", &wm) ||
        get_obj(&wm, "encoder_args", "encoder_args.", &enc) ||
        parse_tower(&enc, &c->enc, 0, 750, 1) ||
        get_obj(&enc, "audio_encoding_args", "audio_encoding_args.", &aud) ||
        get_int(&aud, "sampling_rate", REQUIRED, 1, &c->sampling_rate) ||
        get_float(&aud, "frame_rate", 1, 0, 0, MAX_SIZE, &c->frame_rate) ||
        get_int(&aud, "num_mel_bins", REQUIRED, 1, &c->num_mel_bins) ||
        get_int(&aud, "hop_length", REQUIRED, 1, &c->hop_length) ||
        get_int(&aud, "window_size", REQUIRED, 1, &c->window_size) ||
        get_float(&aud, "global_log_mel_max", 0, 1.5, -1e6, 1e6, &c->global_log_mel_max) ||
        get_obj(&wm, "downsample_args", "downsample_args.", &ds) ||
        get_int(&ds, "downsample_factor", REQUIRED, 1, &c->downsample_factor))
        return -1;
    if (!tied)
        return vox_error("%s: tied_embeddings = false is not supported (the checkpoint has no "
                         "output.weight)", file);
    if (c->dec.use_biases)
        return vox_error("%s: use_biases = true is not supported for the decoder", file);
    if (c->ada_t_cond && c->ada_t_cond_dim < 1)
        return vox_error("%s: ada_rms_norm_t_cond_dim must be positive", file);
    if (c->ada_t_cond && c->dec.dim % 2)
        return vox_error("%s: dim = %d must be even (the delay conditioning of ada_rms_norm_t_cond "
                         "is dim / 2 [cos, sin] pairs)", file, c->dec.dim);
    /* Derived quantities, each checked: every later division and size uses them. */
    double spt = c->sampling_rate / (double)c->frame_rate;
    if (fabs(spt - nearbyint(spt)) > 1e-6 * spt || nearbyint(spt) < 1)
        return vox_error("%s: sampling_rate / frame_rate = %d / %g is not a whole number of samples",
                         file, c->sampling_rate, c->frame_rate);
    if (spt > MAX_SAMPLES_PER_TOKEN)
        return vox_error("%s: sampling_rate / frame_rate = %d / %g = %.0f samples per token, more "
                         "than %d", file, c->sampling_rate, c->frame_rate, spt, MAX_SAMPLES_PER_TOKEN);
    c->samples_per_token = (int)nearbyint(spt);
    double mpt = 1000.0 / c->frame_rate;
    if (fabs(mpt - nearbyint(mpt)) > 1e-6 * mpt || nearbyint(mpt) < 1)
        return vox_error("%s: field 'audio_encoding_args.frame_rate' = %g gives %g ms per token; it "
                         "must be a whole number of milliseconds, at least 1 (the delay is a "
                         "multiple of it)", file,
                         c->frame_rate, mpt);
    c->ms_per_token = (int)nearbyint(mpt);
    if (c->window_size < 2 || c->window_size % 2)
        return vox_error("%s: field 'audio_encoding_args.window_size' = %d must be even and at "
                         "least 2 (the STFT is centred on frames)", file, c->window_size);
    if (c->hop_length > c->window_size)
        return vox_error("%s: field 'audio_encoding_args.hop_length' = %d exceeds window_size %d "
                         "(frames would skip samples)", file, c->hop_length, c->window_size);
    if (c->sampling_rate < 2)
        return vox_error("%s: field 'audio_encoding_args.sampling_rate' = %d is too low", file,
                         c->sampling_rate);
    if (c->samples_per_token % c->hop_length)
        return vox_error("%s: samples per token (%d) is not a multiple of hop_length (%d)", file,
                         c->samples_per_token, c->hop_length);
    c->mel_per_token = c->samples_per_token / c->hop_length;
    /* the conv stem halves the mel rate; the adapter stacks downsample_factor frames */
    if (c->mel_per_token != 2 * c->downsample_factor)
        return vox_error("%s: %d mel frames per token, but the conv stem (stride 2) and "
                         "downsample_factor %d need %d", file, c->mel_per_token,
                         c->downsample_factor, 2 * c->downsample_factor);
    if ((int64_t)c->enc.dim * c->downsample_factor > MAX_SIZE)
        return vox_error("%s: encoder_args.dim * downsample_factor is too large", file);
    return 0;
}

/* Optional "quantization": {"format": "q8"|"q4", "group_size": G, "encoder": "bf16"|"q8"}
 * (voxtral_quant.h); absent: a BF16 checkpoint. */
static int parse_quant(vox_model *m, const cJSON *root, const char *file) {
    m->qfmt = m->qenc = VOX_DT_BF16;
    m->qgroup = 0;
    jobj top = {file, "", root}, q;
    if (!jget(&top, "quantization")) return 0;
    if (get_obj(&top, "quantization", "quantization.", &q)) return -1;
    const cJSON *f = jget(&q, "format"), *e = jget(&q, "encoder");
    if (!cJSON_IsString(f) || (strcmp(f->valuestring, "q8") && strcmp(f->valuestring, "q4")))
        return vox_error("%s: field 'quantization.format' must be \"q8\" or \"q4\"", file);
    m->qfmt = f->valuestring[1] == '8' ? VOX_DT_Q8 : VOX_DT_Q4;
    if (e && (!cJSON_IsString(e) || (strcmp(e->valuestring, "q8") && strcmp(e->valuestring, "bf16"))))
        return vox_error("%s: field 'quantization.encoder' must be \"bf16\" or \"q8\"", file);
    m->qenc = e && !strcmp(e->valuestring, "q8") ? VOX_DT_Q8 : VOX_DT_BF16;
    if (get_int(&q, "group_size", REQUIRED, 1, &m->qgroup)) return -1;
    if (m->qgroup % 32 || m->qgroup < VOX_QGROUP_MIN || m->qgroup > VOX_QGROUP_MAX)
        return vox_error("%s: field 'quantization.group_size' = %d, expected a multiple of 32 in "
                         "[%d, %d]", file, m->qgroup, VOX_QGROUP_MIN, VOX_QGROUP_MAX);
    return 0;
}

static int load_params(vox_model *m, const char *file) {
    vox_config *c = &m->cfg;
    int fd = open(file, O_RDONLY | O_CLOEXEC);
    if (fd < 0) return vox_error("%s: %s", file, strerror(errno));
    struct stat st;
    if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode) || st.st_size > MAX_PARAMS_BYTES) {
        close(fd);
        return vox_error("%s: not a regular file of at most %d bytes", file, MAX_PARAMS_BYTES);
    }
    char *text = malloc((size_t)st.st_size + 1);
    ssize_t n = text ? read(fd, text, (size_t)st.st_size) : -1;
    close(fd);
    if (n != st.st_size) {
        free(text);
        return vox_error("%s: read error", file);
    }
    const char *end = NULL;
    cJSON *root = cJSON_ParseWithLengthOpts(text, (size_t)n, &end, 0);
    int rc;
    if (!root)
        rc = vox_error("%s: not valid JSON (error at byte %td)", file, end ? end - text : 0);
    else if (!cJSON_IsObject(root))
        rc = vox_error("%s: top level is not a JSON object", file);
    else
        rc = parse_params(c, root, file);
    if (rc == 0) rc = parse_quant(m, root, file);
    cJSON_Delete(root);
    free(text);
    return rc;
}

/* ---- safetensors -------------------------------------------------------------- */

typedef struct {
    const char *name; /* points into the parsed header */
    vox_dtype dtype;
    int ndim;
    int64_t shape[MAX_NDIM];
    const void *data; /* into the mapping */
} st_tensor;

typedef struct {
    vox_model *m;
    const char *file;
    cJSON *header;
    st_tensor *t;
    int n;
} loader;

/* In the safetensors layer VOX_DT_Q8 / VOX_DT_Q4 tag raw I8 / U8 tensors (the bytes
 * of quantized matrices), VOX_DT_F16 their scales. */
static const char *dtype_name(vox_dtype d) {
    return d == VOX_DT_BF16 ? "BF16" : d == VOX_DT_F16 ? "F16" : d == VOX_DT_Q8 ? "I8" : d == VOX_DT_Q4 ? "U8" : "F32";
}
static int dtype_size(vox_dtype d) {
    return d == VOX_DT_BF16 || d == VOX_DT_F16 ? 2 : vox_dtype_quantized(d) ? 1 : 4;
}

/* Integer in [0, 2^53] from a JSON number; -1 otherwise. */
static int64_t json_u53(const cJSON *v) {
    if (!cJSON_IsNumber(v)) return -1;
    double d = v->valuedouble;
    if (!(d >= 0 && d <= MAX_EXACT_INT) || d != (double)(int64_t)d) return -1;
    return (int64_t)d;
}

static void format_shape(char *buf, size_t cap, const int64_t *shape, int ndim) {
    size_t k = (size_t)snprintf(buf, cap, "[");
    for (int i = 0; i < ndim && k < cap; i++)
        k += (size_t)(shape[i] < 0 ? snprintf(buf + k, cap - k, "%s?", i ? "," : "")
                                   : snprintf(buf + k, cap - k, "%s%lld", i ? "," : "",
                                              (long long)shape[i]));
    if (k < cap) snprintf(buf + k, cap - k, "]");
}

/* Checks one header entry and fills *t. */
static int parse_entry(loader *L, const cJSON *e, const uint8_t *data, size_t data_size,
                       size_t data_start, st_tensor *t) {
    const char *f = L->file, *name = e->string;
    t->name = name;
    if (!cJSON_IsObject(e)) return vox_error("%s: tensor '%s': entry is not an object", f, name);
    const cJSON *dt = cJSON_GetObjectItemCaseSensitive(e, "dtype");
    const cJSON *shape = cJSON_GetObjectItemCaseSensitive(e, "shape");
    const cJSON *offs = cJSON_GetObjectItemCaseSensitive(e, "data_offsets");
    if (!cJSON_IsString(dt)) return vox_error("%s: tensor '%s': missing 'dtype'", f, name);
    if (strcmp(dt->valuestring, "BF16") == 0)
        t->dtype = VOX_DT_BF16;
    else if (strcmp(dt->valuestring, "F32") == 0)
        t->dtype = VOX_DT_F32;
    else if (strcmp(dt->valuestring, "F16") == 0)
        t->dtype = VOX_DT_F16;
    else if (strcmp(dt->valuestring, "I8") == 0)
        t->dtype = VOX_DT_Q8;
    else if (strcmp(dt->valuestring, "U8") == 0)
        t->dtype = VOX_DT_Q4;
    else
        return vox_error("%s: tensor '%s' has dtype %.32s, expected BF16, F32 (or I8, U8, F16 "
                         "in a quantized checkpoint)", f, name, dt->valuestring);
    if (!cJSON_IsArray(shape) || cJSON_GetArraySize(shape) > MAX_NDIM)
        return vox_error("%s: tensor '%s': 'shape' is not a list of at most %d sizes", f, name,
                         MAX_NDIM);
    int64_t numel = 1;
    int overflow = 0;
    const cJSON *d;
    t->ndim = 0;
    cJSON_ArrayForEach(d, shape) {
        int64_t s = json_u53(d);
        if (s < 0) return vox_error("%s: tensor '%s': bad size in 'shape'", f, name);
        t->shape[t->ndim++] = s;
        overflow |= __builtin_mul_overflow(numel, s, &numel);
    }
    int64_t begin, end;
    if (!cJSON_IsArray(offs) || cJSON_GetArraySize(offs) != 2 ||
        (begin = json_u53(cJSON_GetArrayItem(offs, 0))) < 0 ||
        (end = json_u53(cJSON_GetArrayItem(offs, 1))) < begin)
        return vox_error("%s: tensor '%s': 'data_offsets' is not [begin, end] with begin <= end",
                         f, name);
    if ((uint64_t)end > data_size)
        return vox_error("%s: truncated: data for '%s' ends at byte %llu past the end of the file "
                         "(%llu bytes)", f, name, (unsigned long long)(data_start + end),
                         (unsigned long long)(data_start + data_size));
    char sh[160];
    format_shape(sh, sizeof sh, t->shape, t->ndim);
    if (overflow || __builtin_mul_overflow(numel, dtype_size(t->dtype), &numel))
        return vox_error("%s: tensor '%s': shape %s is too large", f, name, sh);
    if (numel != end - begin)
        return vox_error("%s: tensor '%s': data_offsets span %lld bytes, but %s %s needs %lld",
                         f, name, (long long)(end - begin), dtype_name(t->dtype), sh,
                         (long long)numel);
    if ((data_start + (uint64_t)begin) % (uint64_t)dtype_size(t->dtype))
        return vox_error("%s: tensor '%s': data at byte %llu is not aligned to its %d-byte "
                         "elements", f, name, (unsigned long long)(data_start + begin),
                         dtype_size(t->dtype));
    t->data = data + begin;
    return 0;
}

static int cmp_tensor(const void *a, const void *b) {
    return strcmp(((const st_tensor *)a)->name, ((const st_tensor *)b)->name);
}

/* mmaps the file, parses and checks the header, sorts the entries by name. */
static int open_safetensors(loader *L) {
    vox_model *m = L->m;
    const char *f = L->file;
    int fd = open(f, O_RDONLY | O_CLOEXEC);
    if (fd < 0) return vox_error("%s: %s", f, strerror(errno));
    struct stat st;
    if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
        close(fd);
        return vox_error("%s: not a regular file", f);
    }
    if (st.st_size < MIN_SAFETENSORS_BYTES) {
        close(fd);
        return vox_error("%s: file too small (%lld bytes) to be a safetensors file", f,
                         (long long)st.st_size);
    }
    size_t size = (size_t)st.st_size;
    /* No madvise: weights are read front to back on every pass, which the default
     * readahead serves; WILLNEED would force all of a 9 GB file in at load. */
    void *map = mmap(NULL, size, PROT_READ, MAP_PRIVATE, fd, 0);
    close(fd);
    if (map == MAP_FAILED) return vox_error("%s: mmap: %s", f, strerror(errno));
    m->map = map;
    m->map_size = size;

    const uint8_t *p = map;
    uint64_t hlen = 0;
    for (int i = 7; i >= 0; i--) hlen = hlen << 8 | p[i];
    if (hlen > size - 8)
        return vox_error("%s: header length %llu exceeds file size (%zu bytes)", f,
                         (unsigned long long)hlen, size);
    const char *end = NULL;
    L->header = cJSON_ParseWithLengthOpts((const char *)p + 8, (size_t)hlen, &end, 0);
    if (!L->header)
        return vox_error("%s: header is not valid JSON (error at byte %td)", f,
                         end ? end - (const char *)p : 0);
    if (!cJSON_IsObject(L->header)) return vox_error("%s: header is not a JSON object", f);

    int n = cJSON_GetArraySize(L->header);
    L->t = calloc((size_t)n + 1, sizeof *L->t);
    if (!L->t) return vox_error("%s: out of memory", f);
    size_t data_start = 8 + (size_t)hlen;
    const cJSON *e;
    cJSON_ArrayForEach(e, L->header) {
        if (strcmp(e->string, "__metadata__") == 0) continue;
        if (parse_entry(L, e, p + data_start, size - data_start, data_start, &L->t[L->n]))
            return -1;
        L->n++;
    }
    qsort(L->t, (size_t)L->n, sizeof *L->t, cmp_tensor);
    for (int i = 1; i < L->n; i++)
        if (strcmp(L->t[i - 1].name, L->t[i].name) == 0)
            return vox_error("%s: tensor '%s' appears twice in the header", f, L->t[i].name);
    return 0;
}

/* Finds the tensor and checks its shape (want[i] < 0: any size). */
static const st_tensor *find(loader *L, int ndim, const int64_t *want, const char *name) {
    st_tensor key = {.name = name};
    const st_tensor *t = bsearch(&key, L->t, (size_t)L->n, sizeof *L->t, cmp_tensor);
    if (!t) {
        vox_error("%s: missing tensor '%s'", L->file, name);
        return NULL;
    }
    int ok = t->ndim == ndim;
    for (int i = 0; ok && i < ndim; i++) ok = want[i] < 0 || t->shape[i] == want[i];
    if (!ok) {
        char got[160], exp[160];
        format_shape(got, sizeof got, t->shape, t->ndim);
        format_shape(exp, sizeof exp, want, ndim);
        vox_error("%s: tensor '%s' has shape %s, expected %s", L->file, name, got, exp);
        return NULL;
    }
    return t;
}

#define NAME(buf, ...) (snprintf(buf, sizeof buf, __VA_ARGS__), buf)

/* Matrix [rows][cols] pointing into the mapping, BF16 or F32. */
static int load_mat(loader *L, vox_weight *w, int64_t rows, int64_t cols, const char *name) {
    int64_t want[2] = {rows, cols};
    const st_tensor *t = find(L, 2, want, name);
    if (!t) return -1;
    if (t->dtype != VOX_DT_BF16 && t->dtype != VOX_DT_F32)
        return vox_error("%s: tensor '%s' is %s, expected BF16%s", L->file, name, dtype_name(t->dtype),
                         vox_dtype_quantized(t->dtype) ? " (params.json does not quantize it)" : "");
    *w = (vox_weight){.dtype = t->dtype, .rows = rows, .cols = cols, .data = t->data, .dev_dtype = t->dtype};
    return 0;
}

/* A matrix of the quantization policy: BF16 when fmt is, else fmt's data tensor
 * [rows][row bytes] and its F16 scales "<name>.scales" [rows][groups] (Q8) or
 * [rows][groups][2] (Q4), every scale finite and s >= 0. */
static int load_qmat(loader *L, vox_weight *w, int64_t rows, int64_t cols, vox_dtype fmt,
                     const char *name) {
    if (!vox_dtype_quantized(fmt)) return load_mat(L, w, rows, cols, name);
    const int G = L->m->qgroup;
    int64_t want[3] = {rows, vox_q_row_bytes(fmt, cols, G), 2};
    const st_tensor *t = find(L, 2, want, name);
    if (!t) return -1;
    if (t->dtype != fmt)
        return vox_error("%s: tensor '%s' is %s, but params.json quantizes it to %s (%s)", L->file, name,
                         dtype_name(t->dtype), vox_dtype_name(fmt), dtype_name(fmt));
    char sn[300];
    snprintf(sn, sizeof sn, "%s.scales", name);
    const int64_t ng = vox_q_groups(cols, G);
    int64_t swant[3] = {rows, ng, 2};
    const st_tensor *s = find(L, fmt == VOX_DT_Q4 ? 3 : 2, swant, sn);
    if (!s) return -1;
    if (s->dtype != VOX_DT_F16)
        return vox_error("%s: tensor '%s' is %s, expected F16", L->file, sn, dtype_name(s->dtype));
    const uint16_t *sc = s->data;
    const int64_t n = rows * vox_q_scale_count(fmt, cols, G), stride = fmt == VOX_DT_Q4 ? 2 : 1;
    for (int64_t i = 0; i < n; i++) {
        if ((sc[i] & 0x7c00u) == 0x7c00u)
            return vox_error("%s: tensor '%s': scale %lld is not finite", L->file, sn, (long long)i);
        if (i % stride == 0 && (sc[i] & 0x8000u) && (sc[i] & 0x7fffu))
            return vox_error("%s: tensor '%s': scale %lld is negative", L->file, sn, (long long)i);
    }
    *w = (vox_weight){.dtype = fmt, .rows = rows, .cols = cols, .data = t->data, .dev_dtype = fmt,
                      .scales = sc, .group = G};
    return 0;
}

/* Conv weight [out][in][K], flattened to [out][in * K]. *k == 0 takes K from the file. */
static int load_conv(loader *L, vox_weight *w, int64_t out, int64_t in, int *k,
                     const char *name) {
    int64_t want[3] = {out, in, *k ? *k : -1};
    const st_tensor *t = find(L, 3, want, name);
    if (!t) return -1;
    if (t->shape[2] < 2 || t->shape[2] > MAX_SIZE)
        return vox_error("%s: tensor '%s' has kernel size %lld, expected at least 2", L->file,
                         name, (long long)t->shape[2]);
    *k = (int)t->shape[2];
    if (t->dtype != VOX_DT_BF16 && t->dtype != VOX_DT_F32)
        return vox_error("%s: tensor '%s' is %s, expected BF16", L->file, name, dtype_name(t->dtype));
    *w = (vox_weight){.dtype = t->dtype, .rows = out, .cols = in * *k, .data = t->data, .dev_dtype = t->dtype};
    return 0;
}

/* Vector [n], converted to F32 into the pool. */
static int load_vec(loader *L, vox_weight *w, int64_t n, const char *name) {
    const st_tensor *t = find(L, 1, &n, name);
    if (!t) return -1;
    vox_model *m = L->m;
    float *dst = m->f32_pool + m->f32_used;
    m->f32_used += (size_t)n;
    if (t->dtype == VOX_DT_F32) {
        memcpy(dst, t->data, (size_t)n * sizeof(float));
    } else if (t->dtype == VOX_DT_F16) {
        const uint16_t *src = t->data;
        for (int64_t i = 0; i < n; i++) dst[i] = vox_f16_to_f32(src[i]);
    } else if (t->dtype != VOX_DT_BF16) {
        return vox_error("%s: tensor '%s' is %s, expected BF16 or F32", L->file, name, dtype_name(t->dtype));
    } else {
        const uint8_t *src = t->data;
        for (int64_t i = 0; i < n; i++) dst[i] = vox_bf16_to_f32((uint16_t)(src[2 * i] | src[2 * i + 1] << 8));
    }
    *w = (vox_weight){.dtype = VOX_DT_F32, .rows = n, .cols = 1, .data = dst, .dev_dtype = VOX_DT_F32};
    return 0;
}

/* F32 vectors the loader owns: norms, biases, conv biases, ffn scales. */
static size_t pool_floats(const vox_config *c) {
    const vox_tower_config *e = &c->enc, *d = &c->dec;
    size_t enc_layer = 2 * (size_t)e->dim;
    if (e->use_biases)
        enc_layer += (size_t)e->n_heads * e->head_dim + (size_t)e->n_kv_heads * e->head_dim +
                     2 * (size_t)e->dim;
    return 2 * (size_t)e->dim + (size_t)e->n_layers * enc_layer + (size_t)e->dim +
           (size_t)d->n_layers * 3 * (size_t)d->dim + (size_t)d->dim;
}

static int load_weights(loader *L) {
    vox_model *m = L->m;
    vox_config *c = &m->cfg;
    const vox_tower_config *e = &c->enc, *d = &c->dec;
    char nm[256];
    m->f32_cap = pool_floats(c);
    m->f32_pool = malloc(m->f32_cap * sizeof(float));
    m->enc = calloc((size_t)e->n_layers, sizeof *m->enc);
    m->dec = calloc((size_t)d->n_layers, sizeof *m->dec);
    if (!m->f32_pool || !m->enc || !m->dec) return vox_error("%s: out of memory", L->file);

    c->conv_kernel = 0;
    if (load_conv(L, &m->conv0_w, e->dim, c->num_mel_bins, &c->conv_kernel,
                  PREFIX_W "conv_layers.0.conv.weight") ||
        load_vec(L, &m->conv0_b, e->dim, PREFIX_W "conv_layers.0.conv.bias") ||
        load_conv(L, &m->conv1_w, e->dim, e->dim, &c->conv_kernel,
                  PREFIX_W "conv_layers.1.conv.weight") ||
        load_vec(L, &m->conv1_b, e->dim, PREFIX_W "conv_layers.1.conv.bias"))
        return -1;

    int64_t eq = (int64_t)e->n_heads * e->head_dim, ekv = (int64_t)e->n_kv_heads * e->head_dim;
    for (int i = 0; i < e->n_layers; i++) {
        vox_enc_layer *l = &m->enc[i];
#define EL(s) NAME(nm, PREFIX_W "transformer.layers.%d." s, i)
        if (load_vec(L, &l->attn_norm, e->dim, EL("attention_norm.weight")) ||
            load_qmat(L, &l->wq, eq, e->dim, m->qenc, EL("attention.wq.weight")) ||
            load_qmat(L, &l->wk, ekv, e->dim, m->qenc, EL("attention.wk.weight")) ||
            load_qmat(L, &l->wv, ekv, e->dim, m->qenc, EL("attention.wv.weight")) ||
            load_qmat(L, &l->wo, e->dim, eq, m->qenc, EL("attention.wo.weight")) ||
            load_vec(L, &l->ffn_norm, e->dim, EL("ffn_norm.weight")) ||
            load_qmat(L, &l->w1, e->hidden_dim, e->dim, m->qenc, EL("feed_forward.w1.weight")) ||
            load_qmat(L, &l->w3, e->hidden_dim, e->dim, m->qenc, EL("feed_forward.w3.weight")) ||
            load_qmat(L, &l->w2, e->dim, e->hidden_dim, m->qenc, EL("feed_forward.w2.weight")))
            return -1;
        /* the key projection has no bias even when use_biases is set */
        if (e->use_biases &&
            (load_vec(L, &l->bq, eq, EL("attention.wq.bias")) ||
             load_vec(L, &l->bv, ekv, EL("attention.wv.bias")) ||
             load_vec(L, &l->bo, e->dim, EL("attention.wo.bias")) ||
             load_vec(L, &l->b2, e->dim, EL("feed_forward.w2.bias"))))
            return -1;
#undef EL
    }
    if (load_vec(L, &m->enc_norm, e->dim, PREFIX_W "transformer.norm.weight") ||
        load_qmat(L, &m->adapter0, d->dim, (int64_t)e->dim * c->downsample_factor, m->qenc,
                  PREFIX_E "audio_language_projection.0.weight") ||
        load_qmat(L, &m->adapter2, d->dim, d->dim, m->qenc, PREFIX_E "audio_language_projection.2.weight") ||
        load_qmat(L, &m->tok_emb, c->vocab_size, d->dim, m->qfmt, PREFIX_E "tok_embeddings.weight") ||
        load_vec(L, &m->dec_norm, d->dim, "norm.weight"))
        return -1;

    int64_t dq = (int64_t)d->n_heads * d->head_dim, dkv = (int64_t)d->n_kv_heads * d->head_dim;
    for (int i = 0; i < d->n_layers; i++) {
        vox_dec_layer *l = &m->dec[i];
#define DL(s) NAME(nm, "layers.%d." s, i)
        if (load_vec(L, &l->attn_norm, d->dim, DL("attention_norm.weight")) ||
            load_qmat(L, &l->wq, dq, d->dim, m->qfmt, DL("attention.wq.weight")) ||
            load_qmat(L, &l->wk, dkv, d->dim, m->qfmt, DL("attention.wk.weight")) ||
            load_qmat(L, &l->wv, dkv, d->dim, m->qfmt, DL("attention.wv.weight")) ||
            load_qmat(L, &l->wo, d->dim, dq, m->qfmt, DL("attention.wo.weight")) ||
            load_vec(L, &l->ffn_norm, d->dim, DL("ffn_norm.weight")) ||
            load_qmat(L, &l->w1, d->hidden_dim, d->dim, m->qfmt, DL("feed_forward.w1.weight")) ||
            load_qmat(L, &l->w3, d->hidden_dim, d->dim, m->qfmt, DL("feed_forward.w3.weight")) ||
            load_qmat(L, &l->w2, d->dim, d->hidden_dim, m->qfmt, DL("feed_forward.w2.weight")))
            return -1;
        if (c->ada_t_cond &&
            (load_mat(L, &l->ada0, c->ada_t_cond_dim, d->dim, DL("ada_rms_norm_t_cond.0.weight")) ||
             load_mat(L, &l->ada2, d->dim, c->ada_t_cond_dim, DL("ada_rms_norm_t_cond.2.weight"))))
            return -1;
#undef DL
        float *s = m->f32_pool + m->f32_used;
        m->f32_used += (size_t)d->dim;
        for (int j = 0; j < d->dim; j++) s[j] = 1.0f;
        l->ffn_scale = (vox_weight){.dtype = VOX_DT_F32, .rows = d->dim, .cols = 1, .data = s,
                                    .dev_dtype = VOX_DT_F32};
    }
    return 0;
}

/* ---- the model ------------------------------------------------------------------ */

int vox_model_load(vox_model *m, const char *dir) {
    memset(m, 0, sizeof *m);
    struct stat st;
    if (!dir) return vox_error("vox_model_load: no model directory given");
    if (stat(dir, &st) != 0) return vox_error("%s: %s", dir, strerror(errno));
    if (!S_ISDIR(st.st_mode)) return vox_error("%s: not a directory", dir);
    size_t dl = strlen(dir);
    while (dl > 1 && dir[dl - 1] == '/') dl--;
    char params[4096], tekken[4096];
    if (dl > 4000) return vox_error("%.64s...: model directory path too long", dir);
    snprintf(params, sizeof params, "%.*s/params.json", (int)dl, dir);
    snprintf(tekken, sizeof tekken, "%.*s/tekken.json", (int)dl, dir);
    snprintf(m->path, sizeof m->path, "%.*s/consolidated.safetensors", (int)dl, dir);

    loader L = {m, m->path, NULL, NULL, 0};
    int rc = load_params(m, params);
    if (rc == 0) rc = vox_tokenizer_load(&m->tok, tekken);
    if (rc == 0 && m->tok.n_special + m->tok.n_pieces > m->cfg.vocab_size)
        rc = vox_error("%s: %d special tokens + %d pieces exceed vocab_size %d of %s", tekken,
                       m->tok.n_special, m->tok.n_pieces, m->cfg.vocab_size, params);
    if (rc == 0) rc = open_safetensors(&L);
    if (rc == 0) rc = load_weights(&L);
    cJSON_Delete(L.header);
    free(L.t);
    if (rc) vox_model_free(m);
    return rc ? -1 : 0;
}

void vox_model_free(vox_model *m) {
    if (!m) return;
    if (m->map) munmap(m->map, m->map_size);
    free(m->enc);
    free(m->dec);
    free(m->f32_pool);
    free(m->quant_pool);
    vox_tokenizer_free(&m->tok);
    memset(m, 0, sizeof *m);
}
