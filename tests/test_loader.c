/* test_loader.c - checks voxtral_loader.c and voxtral_tokenizer.c.
 *
 * Writes a random tiny model with scripts/make_random_model.py (run from the repository
 * root), loads it and compares every config value with params.json, the F32 vectors
 * with the checkpoint bytes and the tokenizer pieces with tekken.json. Then loads
 * broken copies (bad params.json, tekken.json, safetensors header or data) and expects
 * -1 with a one-line message naming the file and the problem, and finally loads a few
 * hundred randomly corrupted copies, which must fail cleanly or load, never crash.
 * Prints "ok - name" / "not ok - name: detail"; exits 1 if any check failed.
 */
#include <ftw.h>
#include <sys/stat.h>
#include <unistd.h>
#include <cjson/cJSON.h>

#include "voxtral_internal.h"
#include "voxtral_quant.h"
#include "tests/testutil.h"

static char root[256]; /* temporary directory of this run */
static char good[300]; /* the valid tiny model */
static char qgood[300]; /* it quantized (voxtral --quantize) */

/* ---- files ------------------------------------------------------------------ */

static char *read_all(const char *path, size_t *n) {
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    fseek(f, 0, SEEK_END);
    long len = ftell(f);
    fseek(f, 0, SEEK_SET);
    char *buf = malloc((size_t)len + 1);
    if (buf && fread(buf, 1, (size_t)len, f) != (size_t)len) {
        free(buf);
        buf = NULL;
    }
    fclose(f);
    if (buf) buf[len] = 0;
    if (n) *n = (size_t)len;
    return buf;
}

static void write_all(const char *path, const void *data, size_t n) {
    FILE *f = fopen(path, "wb");
    if (!f || fwrite(data, 1, n, f) != n) {
        fprintf(stderr, "test_loader: cannot write %s\n", path);
        exit(2);
    }
    fclose(f);
}

static const char *FILES[3] = {"params.json", "tekken.json", "consolidated.safetensors"};

static char *file_in(const char *dir, const char *name) {
    static char buf[4][1024];
    static int k;
    k = (k + 1) % 4;
    snprintf(buf[k], sizeof buf[k], "%s/%s", dir, name);
    return buf[k];
}

/* A fresh copy of the model src in root/name; returns its path (static). */
static const char *make_case_from(const char *src, const char *name) {
    static char dir[512];
    snprintf(dir, sizeof dir, "%s/%s", root, name);
    mkdir(dir, 0755);
    for (int i = 0; i < 3; i++) {
        size_t n;
        char *data = read_all(file_in(src, FILES[i]), &n);
        write_all(file_in(dir, FILES[i]), data, n);
        free(data);
    }
    return dir;
}
static const char *make_case(const char *name) { return make_case_from(good, name); }

/* Sets (or, with json == NULL, deletes) the value at a '/'-separated path. */
static void json_set(cJSON *obj, const char *path, const char *json) {
    char key[256];
    const char *slash;
    while ((slash = strchr(path, '/'))) {
        snprintf(key, sizeof key, "%.*s", (int)(slash - path), path);
        obj = cJSON_GetObjectItemCaseSensitive(obj, key);
        path = slash + 1;
    }
    if (!obj) {
        fprintf(stderr, "test_loader: bad json path\n");
        exit(2);
    }
    cJSON_DeleteItemFromObjectCaseSensitive(obj, path);
    if (json) cJSON_AddItemToObject(obj, path, cJSON_Parse(json));
}

static void edit_json_file(const char *file, const char *path, const char *json) {
    char *text = read_all(file, NULL);
    cJSON *j = cJSON_Parse(text);
    json_set(j, path, json);
    char *out = cJSON_Print(j);
    write_all(file, out, strlen(out));
    free(out);
    cJSON_Delete(j);
    free(text);
}

/* Rewrites the safetensors header with one value changed; the data is kept. */
static void edit_header(const char *dir, const char *path, const char *json) {
    const char *file = file_in(dir, "consolidated.safetensors");
    size_t n;
    unsigned char *buf = (unsigned char *)read_all(file, &n);
    uint64_t hlen = 0;
    for (int i = 7; i >= 0; i--) hlen = hlen << 8 | buf[i];
    cJSON *h = cJSON_ParseWithLength((char *)buf + 8, hlen);
    json_set(h, path, json);
    char *hs = cJSON_PrintUnformatted(h);
    size_t len = strlen(hs), padded = (len + 7) / 8 * 8;
    size_t out_n = 8 + padded + (n - 8 - hlen);
    unsigned char *out = malloc(out_n);
    for (int i = 0; i < 8; i++) out[i] = (unsigned char)((uint64_t)padded >> (8 * i));
    memcpy(out + 8, hs, len);
    memset(out + 8 + len, ' ', padded - len);
    memcpy(out + 8 + padded, buf + 8 + hlen, n - 8 - hlen);
    write_all(file, out, out_n);
    free(out);
    free(hs);
    cJSON_Delete(h);
    free(buf);
}

static int rm_entry(const char *p, const struct stat *s, int flag, struct FTW *f) {
    (void)s, (void)flag, (void)f;
    return remove(p);
}

/* ---- checks ---------------------------------------------------------------------- */

/* Loading dir must fail with a one-line message holding every given substring. */
static void expect_fail(const char *name, const char *dir, const char *s1, const char *s2) {
    vox_model m;
    int rc = vox_model_load(&m, dir);
    const char *e = vox_last_error();
    vox_model zero;
    memset(&zero, 0, sizeof zero);
    if (rc == 0) {
        tu_check(0, name, "loaded, expected an error");
        vox_model_free(&m);
    } else if (!e || strchr(e, '\n')) {
        tu_check(0, name, "no one-line message");
    } else if ((s1 && !strstr(e, s1)) || (s2 && !strstr(e, s2))) {
        tu_check(0, name, "message \"%s\" lacks \"%s\"", e, s1 && !strstr(e, s1) ? s1 : s2);
    } else if (memcmp(&m, &zero, sizeof m) != 0) {
        tu_check(0, name, "model not cleared after the failure");
    } else {
        tu_check(1, name, "%s", e);
    }
}

/* Number at a '/'-separated path (true = 1, false = 0); NAN if absent. */
static double jnum(const cJSON *o, const char *path) {
    char p[256];
    snprintf(p, sizeof p, "%s", path);
    for (char *k = strtok(p, "/"); k && o; k = strtok(NULL, "/"))
        o = cJSON_GetObjectItemCaseSensitive(o, k);
    return cJSON_IsBool(o) ? cJSON_IsTrue(o) : cJSON_IsNumber(o) ? o->valuedouble : NAN;
}

#define ENC "multimodal/whisper_model_args/encoder_args/"
#define AUD ENC "audio_encoding_args/"

/* Every config value against params.json; *why names the first difference. */
static int config_matches(const vox_config *c, const cJSON *p, char *why, size_t cap) {
    const vox_tower_config *d = &c->dec, *e = &c->enc;
    struct { const char *path; double got; } f[] = {
        {"dim", d->dim}, {"n_layers", d->n_layers}, {"head_dim", d->head_dim},
        {"hidden_dim", d->hidden_dim}, {"n_heads", d->n_heads}, {"n_kv_heads", d->n_kv_heads},
        {"sliding_window", d->sliding_window}, {"rope_theta", d->rope_theta},
        {"norm_eps", d->norm_eps}, {"use_biases", d->use_biases},
        {ENC "dim", e->dim}, {ENC "n_layers", e->n_layers}, {ENC "head_dim", e->head_dim},
        {ENC "hidden_dim", e->hidden_dim}, {ENC "n_heads", e->n_heads},
        {ENC "n_kv_heads", e->n_kv_heads}, {ENC "sliding_window", e->sliding_window},
        {ENC "rope_theta", e->rope_theta}, {ENC "norm_eps", e->norm_eps},
        {ENC "use_biases", e->use_biases},
        {"vocab_size", c->vocab_size}, {"ada_rms_norm_t_cond", c->ada_t_cond},
        {"ada_rms_norm_t_cond_dim", c->ada_t_cond_dim},
        {AUD "sampling_rate", c->sampling_rate}, {AUD "frame_rate", c->frame_rate},
        {AUD "num_mel_bins", c->num_mel_bins}, {AUD "hop_length", c->hop_length},
        {AUD "window_size", c->window_size}, {AUD "global_log_mel_max", c->global_log_mel_max},
        {"multimodal/whisper_model_args/downsample_args/downsample_factor", c->downsample_factor}};
    for (size_t i = 0; i < sizeof f / sizeof f[0]; i++) {
        double want = jnum(p, f[i].path);
        if ((float)want != (float)f[i].got) {
            snprintf(why, cap, "%s = %g, params.json has %g", f[i].path, f[i].got, want);
            return 0;
        }
    }
    snprintf(why, cap, "%zu values", sizeof f / sizeof f[0]);
    return 1;
}

static void test_good_model(void) {
    vox_model m;
    int rc = vox_model_load(&m, good);
    tu_check(rc == 0, "valid tiny model loads", "%s", rc ? vox_last_error() : good);
    if (rc) return;
    const vox_config *c = &m.cfg;
    char *text = read_all(file_in(good, "params.json"), NULL);
    cJSON *p = cJSON_Parse(text);
    char why[512];
    tu_check(config_matches(c, p, why, sizeof why), "config matches params.json", "%s", why);
    tu_check(c->conv_kernel == 3 && c->samples_per_token == 1280 && c->mel_per_token == 8,
             "derived config", "conv_kernel %d samples_per_token %d mel_per_token %d",
             c->conv_kernel, c->samples_per_token, c->mel_per_token);
    cJSON_Delete(p);
    free(text);

    /* weights: shapes, pointers into the mapping, F32 vectors equal to the bf16 bytes */
    const vox_dec_layer *d = &m.dec[1];
    const vox_enc_layer *e = &m.enc[1];
    const char *lo = m.map, *hi = lo + m.map_size;
    int in_map = (const char *)d->wq.data >= lo && (const char *)d->wq.data < hi &&
                 (const char *)m.tok_emb.data >= lo && (const char *)m.tok_emb.data < hi;
    tu_check(in_map && d->wq.dtype == VOX_DT_BF16 &&
              d->wq.rows == c->dec.n_heads * c->dec.head_dim && d->wq.cols == c->dec.dim &&
              d->wk.rows == c->dec.n_kv_heads * c->dec.head_dim && d->w2.cols == c->dec.hidden_dim &&
              d->ada0.rows == c->ada_t_cond_dim && d->ada2.cols == c->ada_t_cond_dim &&
              e->wv.rows == c->enc.n_kv_heads * c->enc.head_dim && e->w1.rows == c->enc.hidden_dim &&
              m.conv0_w.rows == c->enc.dim && m.conv0_w.cols == c->num_mel_bins * 3 &&
              m.conv1_w.cols == c->enc.dim * 3 &&
              m.adapter0.cols == c->enc.dim * c->downsample_factor &&
              m.tok_emb.rows == c->vocab_size && m.tok_emb.cols == c->dec.dim,
          "matrix shapes and mapping", "layers.1 wq %lldx%lld", (long long)d->wq.rows,
          (long long)d->wq.cols);
    int vec_ok = e->bq.dtype == VOX_DT_F32 && e->bq.rows == c->enc.n_heads * c->enc.head_dim &&
                 e->bq.cols == 1 && e->bv.rows == c->enc.n_kv_heads * c->enc.head_dim &&
                 e->b2.rows == c->enc.dim && m.dec_norm.rows == c->dec.dim &&
                 m.f32_used == m.f32_cap;
    for (int l = 0; l < c->dec.n_layers; l++)
        for (int j = 0; j < c->dec.dim; j++)
            vec_ok &= ((const float *)m.dec[l].ffn_scale.data)[j] == 1.0f;
    tu_check(vec_ok, "vectors are F32, ffn_scale is ones, pool used exactly", "%zu of %zu floats",
          m.f32_used, m.f32_cap);

    /* norm.weight: compare with the BF16 bytes found through our own header parse */
    size_t n;
    unsigned char *st = (unsigned char *)read_all(file_in(good, FILES[2]), &n);
    uint64_t hlen = 0;
    for (int i = 7; i >= 0; i--) hlen = hlen << 8 | st[i];
    cJSON *h = cJSON_ParseWithLength((char *)st + 8, hlen);
    const cJSON *t = cJSON_GetObjectItemCaseSensitive(h, "norm.weight");
    int begin = (int)cJSON_GetArrayItem(cJSON_GetObjectItem(t, "data_offsets"), 0)->valuedouble;
    const unsigned char *src = st + 8 + hlen + begin;
    int same = 1;
    for (int j = 0; j < c->dec.dim; j++)
        same &= ((const float *)m.dec_norm.data)[j] ==
                vox_bf16_to_f32((uint16_t)(src[2 * j] | src[2 * j + 1] << 8));
    tu_check(same, "norm.weight converted from BF16 exactly", "%d values", c->dec.dim);
    cJSON_Delete(h);
    free(st);

    /* tokenizer against tekken.json */
    const vox_tokenizer *tk = &m.tok;
    tu_check(tk->n_special == 1000 && tk->n_pieces == c->vocab_size - 1000 && tk->bos_id == 1 &&
              tk->eos_id == 2 && tk->pad_id == 32 && tk->delay_ms == 480 &&
              tk->left_pad_tokens == 32,
          "tokenizer header values", "n_special %d n_pieces %d bos %d eos %d pad %d",
          tk->n_special, tk->n_pieces, tk->bos_id, tk->eos_id, tk->pad_id);
    int len = -1;
    const char *b = vox_token_bytes(tk, 999, &len);
    tu_check(!b && len == 0, "control id has no bytes", "len %d", len);
    b = vox_token_bytes(tk, c->vocab_size, &len);
    int ok2 = !b && len == 0 && !vox_token_bytes(tk, -1, &len) && !vox_token_bytes(tk, 1 << 30, &len);
    tu_check(ok2, "out-of-range ids have no bytes", "len %d", len);
    b = vox_token_bytes(tk, 1000, &len);
    tu_check(b && len == 1 && b[0] == 0, "id 1000 is the byte 0x00", "len %d", len);
    text = read_all(file_in(good, "tekken.json"), NULL);
    cJSON *tj = cJSON_Parse(text);
    const cJSON *v;
    int checked = 0, bad = -1;
    cJSON_ArrayForEach(v, cJSON_GetObjectItem(tj, "vocab")) {
        int r = (int)cJSON_GetObjectItem(v, "rank")->valuedouble;
        const cJSON *s = cJSON_GetObjectItem(v, "token_str");
        if (r >= tk->n_pieces || !cJSON_IsString(s)) continue;
        b = vox_token_bytes(tk, 1000 + r, &len);
        if (!b || len != (int)strlen(s->valuestring) || memcmp(b, s->valuestring, len) != 0) {
            if (r) bad = r; /* rank 0 is "\0": token_str is empty as a C string */
        }
        checked++;
    }
    tu_check(bad < 0 && checked > 100, "every text piece equals its token_str", "%d checked, first bad rank %d", checked, bad);
    /* rank 1 is b"\xe2\x82" (token_bytes "4oI=", token_str null): half of a character */
    const cJSON *r1 = cJSON_GetArrayItem(cJSON_GetObjectItem(tj, "vocab"), 1);
    b = vox_token_bytes(tk, 1001, &len);
    tu_check(!strcmp(cJSON_GetObjectItem(r1, "token_bytes")->valuestring, "4oI=") && b && len == 2 &&
              (unsigned char)b[0] == 0xe2 && (unsigned char)b[1] == 0x82,
          "multi-byte non-UTF-8 piece", "len %d", len);
    cJSON_Delete(tj);
    free(text);

    vox_model_free(&m);
    vox_model zero;
    memset(&zero, 0, sizeof zero);
    tu_check(memcmp(&m, &zero, sizeof m) == 0, "free clears the model", NULL);
    vox_model_free(&m); /* twice, and on a zeroed model: must be harmless */
}

/* A hand-written tekken.json: defaults, unordered ranks, unpadded base64. */
static void test_tokenizer_small(void) {
    const char *path = file_in(root, "small_tekken.json");
    const char *txt =
        "{\"config\": {\"default_num_special_tokens\": 3, \"default_vocab_size\": 6},"
        " \"vocab\": [{\"rank\": 1, \"token_bytes\": \"YmM=\"}, {\"rank\": 0, \"token_bytes\": \"YQ\"},"
        "  {\"rank\": 2, \"token_bytes\": \"\"}, {\"rank\": 3, \"token_bytes\": \"eHl6\"}],"
        " \"special_tokens\": [{\"rank\": 0, \"token_str\": \"<s>\"}, {\"rank\": 2, \"token_str\": \"</s>\"},"
        "  {\"rank\": 1, \"token_str\": \"[STREAMING_PAD]\"}]}";
    write_all(path, txt, strlen(txt));
    vox_tokenizer t;
    int rc = vox_tokenizer_load(&t, path), l3 = -1, l4 = -1, l5 = -1, l6 = -1;
    const char *b3 = rc ? NULL : vox_token_bytes(&t, 3, &l3);
    const char *b4 = rc ? NULL : vox_token_bytes(&t, 4, &l4);
    const char *b5 = rc ? NULL : vox_token_bytes(&t, 5, &l5);
    const char *b6 = rc ? NULL : vox_token_bytes(&t, 6, &l6);
    tu_check(rc == 0 && t.n_special == 3 && t.n_pieces == 3 && t.bos_id == 0 && t.eos_id == 2 &&
              t.pad_id == 1 && t.delay_ms == 480 && t.left_pad_tokens == 32 && b3 && l3 == 1 &&
              b3[0] == 'a' && b4 && l4 == 2 && !memcmp(b4, "bc", 2) && b5 && l5 == 0 && !b6,
          "hand-written tekken.json", "rc %d %s", rc, rc ? vox_last_error() : "");
    vox_tokenizer_free(&t);

    struct { const char *name, *json, *want; } bad[] = {
        {"tekken: bad base64", "{\"vocab\": [{\"rank\": 0, \"token_bytes\": \"Y!==\"}]}", "base64"},
        {"tekken: missing rank", "{\"vocab\": [{\"rank\": 1, \"token_bytes\": \"YQ==\"}]}", "no entry for rank 0"},
        {"tekken: duplicate rank", "{\"vocab\": [{\"rank\": 0, \"token_bytes\": \"YQ==\"}, {\"rank\": 0, \"token_bytes\": \"YQ==\"}]}", "twice"},
        {"tekken: no vocab", "{\"config\": {}}", "missing 'vocab'"},
        {"tekken: special id too large", "{\"config\": {\"default_num_special_tokens\": 2}, \"vocab\": []}", "'</s>' has id 2"},
        {"tekken: not an object", "[1, 2]", "not a JSON object"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        write_all(path, bad[i].json, strlen(bad[i].json));
        rc = vox_tokenizer_load(&t, path);
        const char *e = vox_last_error();
        tu_check(rc == -1 && strstr(e, path) && strstr(e, bad[i].want) && !t.blob && !t.offset,
              bad[i].name, "rc %d \"%s\"", rc, e);
    }
}

static void test_bad_models(void) {
    char missing[512];
    snprintf(missing, sizeof missing, "%s/no_such_dir", root);
    expect_fail("missing directory", missing, missing, "No such file");

    const char *d = make_case("no_params");
    unlink(file_in(d, "params.json"));
    expect_fail("missing params.json", d, "no_params/params.json", "No such file");

    d = make_case("params_not_json");
    write_all(file_in(d, "params.json"), "{\"dim\": 96,", 11);
    expect_fail("params.json not JSON", d, "params_not_json/params.json", "not valid JSON");

    d = make_case("params_no_enc_dim");
    edit_json_file(file_in(d, "params.json"), "multimodal/whisper_model_args/encoder_args/dim", NULL);
    expect_fail("params.json missing a field", d, "/params.json",
                "missing field 'encoder_args.dim'");

    d = make_case("params_no_multimodal");
    edit_json_file(file_in(d, "params.json"), "multimodal", NULL);
    expect_fail("params.json missing an object", d, "/params.json", "missing field 'multimodal'");

    d = make_case("params_string_dim");
    edit_json_file(file_in(d, "params.json"), "dim", "\"96\"");
    expect_fail("params.json field of the wrong type", d, "/params.json", "'dim' is not a number");

    d = make_case("params_zero_layers");
    edit_json_file(file_in(d, "params.json"), "n_layers", "0");
    expect_fail("params.json zero layers", d, "/params.json", "'n_layers' = 0");

    d = make_case("params_kv_heads");
    edit_json_file(file_in(d, "params.json"), "n_kv_heads", "3");
    expect_fail("n_heads not divisible by n_kv_heads", d, "/params.json",
                "n_heads = 4 is not a multiple of n_kv_heads = 3");

    d = make_case("params_odd_head_dim");
    edit_json_file(file_in(d, "params.json"), "multimodal/whisper_model_args/encoder_args/head_dim", "23");
    expect_fail("odd head_dim", d, "/params.json", "encoder_args.head_dim = 23 must be even");

    d = make_case("params_hop");
    edit_json_file(file_in(d, "params.json"),
                   "multimodal/whisper_model_args/encoder_args/audio_encoding_args/hop_length", "150");
    expect_fail("samples per token not a multiple of hop_length", d, "/params.json",
                "not a multiple of hop_length (150)");

    d = make_case("params_frame_rate");
    edit_json_file(file_in(d, "params.json"),
                   "multimodal/whisper_model_args/encoder_args/audio_encoding_args/frame_rate", "12.3");
    expect_fail("sampling_rate / frame_rate not whole", d, "/params.json", "not a whole number");

    /* derived quantities: 24000 / 3000 = 8 samples per token, hop 1: 8 mel frames per
     * token as downsample 4 wants, but 1000 / 3000 ms per token rounds to 0 (vox_open
     * divided by it: SIGFPE) */
    d = make_case("params_frame_rate_high");
    edit_json_file(file_in(d, "params.json"), AUD "sampling_rate", "24000");
    edit_json_file(file_in(d, "params.json"), AUD "frame_rate", "3000");
    edit_json_file(file_in(d, "params.json"), AUD "hop_length", "1");
    expect_fail("frame_rate above 1000: ms per token not whole", d, "/params.json",
                "'audio_encoding_args.frame_rate' = 3000 gives 0.333333 ms per token");
    {
        vox_options o;
        vox_options_default(&o);
        o.backend = "cpu";
        o.verbose = 0;
        vox_ctx *ctx = vox_open(d, &o);
        tu_check(!ctx && strstr(vox_last_error(), "params.json") && strstr(vox_last_error(), "frame_rate"),
                 "vox_open: frame_rate 3000 is an error, not a division by zero", "%s",
                 ctx ? "opened" : vox_last_error());
        vox_close(ctx);
    }

    d = make_case("params_window_odd");
    edit_json_file(file_in(d, "params.json"), AUD "window_size", "401");
    expect_fail("odd window_size", d, "/params.json", "'audio_encoding_args.window_size' = 401 must be even");

    d = make_case("params_hop_window");
    edit_json_file(file_in(d, "params.json"), AUD "hop_length", "640");
    edit_json_file(file_in(d, "params.json"), "multimodal/whisper_model_args/downsample_args/downsample_factor", "1");
    expect_fail("hop_length above window_size", d, "/params.json", "hop_length' = 640 exceeds window_size 400");

    d = make_case("params_spt");
    edit_json_file(file_in(d, "params.json"), AUD "sampling_rate", "16000000");
    edit_json_file(file_in(d, "params.json"), AUD "frame_rate", "1");
    expect_fail("samples per token bounded", d, "/params.json", "16000000 samples per token");

    /* the delay conditioning fills dim / 2 [cos, sin] pairs: an odd dim left t[dim-1] unset */
    d = make_case("params_odd_dim");
    edit_json_file(file_in(d, "params.json"), "dim", "97");
    expect_fail("odd decoder dim with ada_rms_norm_t_cond", d, "/params.json", "dim = 97 must be even");

    /* tekken.json's delay: INT_MAX overflowed the prompt length */
    d = make_case("tekken_delay_huge");
    edit_json_file(file_in(d, "tekken.json"), "audio/transcription_delay_ms", "2147483647");
    expect_fail("tekken.json transcription_delay_ms bounded", d, "/tekken.json",
                "audio.transcription_delay_ms must be an integer in [80, 2400]");
    d = make_case("tekken_delay_zero");
    edit_json_file(file_in(d, "tekken.json"), "audio/transcription_delay_ms", "40");
    expect_fail("tekken.json transcription_delay_ms below 80", d, "/tekken.json", "[80, 2400]");
    d = make_case("tekken_left_pad");
    edit_json_file(file_in(d, "tekken.json"), "audio/streaming_n_left_pad_tokens", "16000000");
    expect_fail("tekken.json streaming_n_left_pad_tokens bounded", d, "/tekken.json", "[0, 4096]");
    {
        vox_options o;
        vox_options_default(&o);
        o.backend = "cpu";
        o.verbose = 0;
        o.delay_ms = 2480;
        vox_ctx *ctx = vox_open(good, &o);
        tu_check(!ctx && strstr(vox_last_error(), "at most 2400"), "vox_open: delay above 2400 ms refused",
                 "%s", ctx ? "opened" : vox_last_error());
        vox_close(ctx);
        o.delay_ms = 2400;
        ctx = vox_open(good, &o);
        tu_check(ctx && vox_delay_ms(ctx) == 2400, "vox_open: delay 2400 ms accepted", "%s",
                 ctx ? "" : vox_last_error());
        vox_close(ctx);
    }

    d = make_case("params_hidden_dim");
    edit_json_file(file_in(d, "params.json"), "hidden_dim", "128");
    expect_fail("tensor shape mismatching params.json", d, "/consolidated.safetensors",
                "tensor 'layers.0.feed_forward.w1.weight' has shape [160,96], expected [128,96]");

    d = make_case("params_vocab");
    edit_json_file(file_in(d, "params.json"), "vocab_size", "1200");
    expect_fail("tekken.json pieces exceed vocab_size", d, "/tekken.json", "exceed vocab_size 1200");

    d = make_case("params_no_biases");
    edit_json_file(file_in(d, "params.json"), "multimodal/whisper_model_args/encoder_args/use_biases",
                   "false");
    {
        vox_model m;
        int rc = vox_model_load(&m, d);
        tu_check(rc == 0 && m.enc[0].bq.data == NULL && m.f32_used == m.f32_cap,
              "encoder without biases loads (extra tensors ignored)", "%s",
              rc ? vox_last_error() : m.enc[0].bq.data ? "bq set" : "");
        vox_model_free(&m);
    }

    d = make_case("tekken_corrupt");
    write_all(file_in(d, "tekken.json"), "{\"vocab\": [{\"rank\": 0,", 22);
    expect_fail("corrupt tekken.json", d, "tekken_corrupt/tekken.json", "not valid JSON");

    d = make_case("st_truncated");
    {
        const char *f = file_in(d, FILES[2]);
        struct stat s;
        stat(f, &s);
        if (truncate(f, s.st_size / 2) != 0) perror("truncate");
    }
    expect_fail("safetensors cut in half", d, "st_truncated/consolidated.safetensors",
                "truncated: data for '");

    d = make_case("st_tiny");
    write_all(file_in(d, FILES[2]), "\x02\0\0\0", 4);
    expect_fail("safetensors absurdly small", d, "/consolidated.safetensors", "file too small");

    d = make_case("st_header_len");
    {
        const char *f = file_in(d, FILES[2]);
        size_t n;
        unsigned char *buf = (unsigned char *)read_all(f, &n);
        uint64_t big = 9999999999ULL;
        for (int i = 0; i < 8; i++) buf[i] = (unsigned char)(big >> (8 * i));
        write_all(f, buf, n);
        free(buf);
    }
    expect_fail("header length larger than the file", d, "/consolidated.safetensors",
                "header length 9999999999 exceeds file size");

    d = make_case("st_header_json");
    {
        const char *f = file_in(d, FILES[2]);
        size_t n;
        char *buf = read_all(f, &n);
        char *q = strstr(buf + 8, "\"shape\"");
        q[0] = '\''; /* a single-quoted key is not JSON */
        write_all(f, buf, n);
        free(buf);
    }
    expect_fail("corrupt header JSON", d, "/consolidated.safetensors", "header is not valid JSON");

    d = make_case("st_dtype");
    edit_header(d, "norm.weight/dtype", "\"I16\"");
    expect_fail("tensor with dtype I16", d, "/consolidated.safetensors",
                "tensor 'norm.weight' has dtype I16, expected BF16, F32");

    d = make_case("st_dtype_f16_matrix");
    edit_header(d, "layers.0.attention.wq.weight/dtype", "\"F16\"");
    expect_fail("matrix with dtype F16", d, "/consolidated.safetensors",
                "tensor 'layers.0.attention.wq.weight' is F16, expected BF16");

    d = make_case("st_offsets");
    edit_header(d, "norm.weight/data_offsets", "[2000000, 2000192]");
    expect_fail("data_offsets past the end", d, "/consolidated.safetensors",
                "truncated: data for 'norm.weight' ends at byte");

    d = make_case("st_offsets_order");
    edit_header(d, "norm.weight/data_offsets", "[192, 0]");
    expect_fail("data_offsets reversed", d, "/consolidated.safetensors", "'norm.weight': 'data_offsets'");

    d = make_case("st_size");
    edit_header(d, "norm.weight/shape", "[97]");
    expect_fail("data_offsets inconsistent with dtype x shape", d, "/consolidated.safetensors",
                "data_offsets span 192 bytes, but BF16 [97] needs 194");

    d = make_case("st_shape");
    edit_header(d, "layers.0.attention.wq.weight/shape", "[96,128]");
    expect_fail("tensor shape mismatch", d, "/consolidated.safetensors",
                "tensor 'layers.0.attention.wq.weight' has shape [96,128], expected [128,96]");

    d = make_case("st_missing");
    edit_header(d, "layers.1.attention.wk.weight", NULL);
    expect_fail("missing tensor", d, "/consolidated.safetensors",
                "missing tensor 'layers.1.attention.wk.weight'");

    d = make_case("st_missing_bias");
    edit_header(d, "mm_streams_embeddings.embedding_module.whisper_encoder.transformer.layers.0.attention.wv.bias", NULL);
    expect_fail("missing encoder bias", d, "/consolidated.safetensors",
                "missing tensor 'mm_streams_embeddings.embedding_module.whisper_encoder.transformer.layers.0.attention.wv.bias'");

    d = make_case("st_conv_kernel");
    edit_header(d, "mm_streams_embeddings.embedding_module.whisper_encoder.conv_layers.1.conv.weight/shape",
                "[64,96,2]");
    expect_fail("conv kernels disagree", d, "/consolidated.safetensors", "expected [64,64,3]");

    d = make_case("st_not_object");
    edit_header(d, "norm.weight", "[1, 2]");
    expect_fail("header entry not an object", d, "/consolidated.safetensors", "not an object");
}

/* Random damage must give a clean failure or a load, never a crash. */
/* Absolute file offset of tensor `name`'s data in dir's safetensors */
static long tensor_offset(const char *dir, const char *name) {
    size_t n;
    unsigned char *buf = (unsigned char *)read_all(file_in(dir, "consolidated.safetensors"), &n);
    uint64_t hlen = 0;
    for (int i = 7; i >= 0; i--) hlen = hlen << 8 | buf[i];
    cJSON *h = cJSON_ParseWithLength((char *)buf + 8, hlen);
    const cJSON *t = cJSON_GetObjectItemCaseSensitive(h, name);
    long off = t ? 8 + (long)hlen + (long)cJSON_GetArrayItem(cJSON_GetObjectItemCaseSensitive(t, "data_offsets"), 0)->valuedouble : -1;
    cJSON_Delete(h);
    free(buf);
    return off;
}

static void poke16(const char *dir, long off, uint16_t v) {
    const char *f = file_in(dir, "consolidated.safetensors");
    size_t n;
    char *buf = read_all(f, &n);
    memcpy(buf + off, &v, 2);
    write_all(f, buf, n);
    free(buf);
}

typedef struct {
    vox_weight *w[1024];
    int n;
} qlist;
static int qlist_add(vox_weight *w, const char *name, int decoder, void *arg) {
    qlist *l = arg;
    if (l->n < 1024) l->w[l->n++] = w;
    return 0;
}

/* A quantized checkpoint: written by vox_quantize_dir, it loads with exactly the bytes
 * quantization at load gives; then broken copies of it. */
static void test_quantized(void) {
    snprintf(qgood, sizeof qgood, "%s/qgood", root);
    int rc = vox_quantize_dir(good, qgood, "q4:32", 0);
    tu_check(rc == 0, "quantize the tiny model to q4:32 (encoder q8)", "%s", rc ? vox_last_error() : qgood);
    if (rc) return;
    vox_model a, b;
    vox_quant q;
    rc = vox_model_load(&a, qgood);
    tu_check(rc == 0, "quantized checkpoint loads", "%s", rc ? vox_last_error() : "");
    if (rc) return;
    int same = vox_model_load(&b, good) == 0 && vox_quant_parse("q4:32", &q) == 0 &&
               vox_model_quantize(&b, &q, 0) == 0;
    qlist la = {0}, lb = {0};
    vox_each_quant_matrix(&a, qlist_add, &la);
    vox_each_quant_matrix(&b, qlist_add, &lb);
    int n_q4 = 0, n_q8 = 0;
    same = same && la.n == lb.n && la.n > 0;
    for (int i = 0; same && i < la.n; i++) {
        const vox_weight *x = la.w[i], *y = lb.w[i];
        same = x->dtype == y->dtype && x->group == y->group && x->rows == y->rows && x->cols == y->cols &&
               memcmp(x->data, y->data, (size_t)(x->rows * vox_q_row_bytes(x->dtype, x->cols, x->group))) == 0 &&
               memcmp(x->scales, y->scales, (size_t)(x->rows * vox_q_scale_count(x->dtype, x->cols, x->group) * 2)) == 0;
        n_q4 += x->dtype == VOX_DT_Q4;
        n_q8 += x->dtype == VOX_DT_Q8;
    }
    tu_check(same && n_q4 == 7 * a.cfg.dec.n_layers + 1 && n_q8 == 7 * a.cfg.enc.n_layers + 2,
             "quantized checkpoint = quantization at load, byte for byte",
             "%d q4 (decoder + head), %d q8 (encoder + adapter), group %d", n_q4, n_q8, a.qgroup);
    tu_check(vox_model_quantize(&a, &q, 0) != 0 && strstr(vox_last_error(), "already quantized"),
             "quantizing a quantized model is refused", "%s", vox_last_error());
    vox_model_free(&a);
    vox_model_free(&b);

    const char *d = make_case_from(qgood, "q_group");
    edit_json_file(file_in(d, "params.json"), "quantization/group_size", "48");
    expect_fail("quantized: group size not a multiple of 32", d, "/params.json", "group_size' = 48");
    d = make_case_from(qgood, "q_group64");
    edit_json_file(file_in(d, "params.json"), "quantization/group_size", "64");
    expect_fail("quantized: group size disagreeing with the tensors", d, "/consolidated.safetensors", "expected [");
    d = make_case_from(qgood, "q_format");
    edit_json_file(file_in(d, "params.json"), "quantization/format", "\"q3\"");
    expect_fail("quantized: unknown format", d, "/params.json", "'quantization.format' must be");
    d = make_case_from(qgood, "q_format_q8");
    edit_json_file(file_in(d, "params.json"), "quantization/format", "\"q8\"");
    expect_fail("quantized: params.json q8, tensors q4", d, "/consolidated.safetensors", "has shape");
    d = make_case_from(qgood, "q_encoder");
    edit_json_file(file_in(d, "params.json"), "quantization/encoder", "\"bf16\"");
    expect_fail("quantized: encoder q8 but params.json says bf16", d, "/consolidated.safetensors",
                "is I8, expected BF16 (params.json does not quantize it)");
    d = make_case_from(qgood, "q_none");
    edit_json_file(file_in(d, "params.json"), "quantization", NULL);
    expect_fail("quantized tensors without 'quantization' in params.json", d, "/consolidated.safetensors",
                "params.json does not quantize it");
    d = make_case_from(qgood, "q_no_scales");
    edit_header(d, "layers.1.feed_forward.w2.weight.scales", NULL);
    expect_fail("quantized: missing scales", d, "/consolidated.safetensors",
                "missing tensor 'layers.1.feed_forward.w2.weight.scales'");
    d = make_case_from(qgood, "q_scales_dtype");
    edit_header(d, "layers.0.attention.wq.weight.scales/dtype", "\"BF16\"");
    expect_fail("quantized: scales not F16", d, "/consolidated.safetensors", "is BF16, expected F16");
    d = make_case_from(qgood, "q_scales_shape");
    edit_header(d, "layers.0.attention.wq.weight.scales/shape", "[128,6,1]");
    expect_fail("quantized: scales of the wrong shape", d, "/consolidated.safetensors",
                "'layers.0.attention.wq.weight.scales' has shape [128,6,1], expected [128,3,2]");
    d = make_case_from(qgood, "q_data_dtype");
    edit_header(d, "layers.0.attention.wk.weight/dtype", "\"I8\"");
    expect_fail("quantized: q4 data as I8", d, "/consolidated.safetensors",
                "'layers.0.attention.wk.weight' is I8, but params.json quantizes it to q4");
    d = make_case_from(qgood, "q_scale_inf");
    poke16(d, tensor_offset(d, "layers.1.attention.wo.weight.scales") + 10, 0x7c00);
    expect_fail("quantized: infinite scale", d, "/consolidated.safetensors", "scale 5 is not finite");
    d = make_case_from(qgood, "q_scale_neg");
    poke16(d, tensor_offset(d, "layers.1.attention.wo.weight.scales") + 8, 0xbc00);
    expect_fail("quantized: negative scale", d, "/consolidated.safetensors", "scale 4 is negative");
}

static void test_fuzz(void) {
    size_t n_st, n_par, n_tek;
    char *st = read_all(file_in(good, FILES[2]), &n_st);
    char *par = read_all(file_in(good, FILES[0]), &n_par);
    char *tek = read_all(file_in(good, FILES[1]), &n_tek);
    uint64_t hlen = 0;
    for (int i = 7; i >= 0; i--) hlen = hlen << 8 | (unsigned char)st[i];
    const char *d = make_case("fuzz");
    srand(1234);
    int fails = 0, loads = 0, cleared = 1;
    for (int it = 0; it < 300; it++) {
        char *s = malloc(n_st), *p = malloc(n_par), *t = malloc(n_tek);
        memcpy(s, st, n_st), memcpy(p, par, n_par), memcpy(t, tek, n_tek);
        size_t ns = n_st, np = n_par, nt = n_tek;
        int what = it % 4;
        for (int k = 0; k < 1 + rand() % 4; k++) {
            if (what == 0) s[8 + rand() % hlen] = (char)(rand() % 128);  /* header bytes */
            if (what == 1) p[rand() % n_par] = (char)(rand() % 128);
            if (what == 2) t[rand() % n_tek] = (char)(rand() % 128);
        }
        if (what == 3) ns = (size_t)rand() % n_st; /* truncated anywhere */
        write_all(file_in(d, FILES[2]), s, ns);
        write_all(file_in(d, FILES[0]), p, np);
        write_all(file_in(d, FILES[1]), t, nt);
        vox_model m;
        if (vox_model_load(&m, d) == 0) {
            loads++;
            vox_model_free(&m);
        } else {
            vox_model zero;
            memset(&zero, 0, sizeof zero);
            cleared &= memcmp(&m, &zero, sizeof m) == 0;
            fails++;
        }
        free(s), free(p), free(t);
    }
    tu_check(cleared, "300 corrupted models: no crash, cleared on failure",
             "%d failed cleanly, %d still loaded", fails, loads);
    free(st), free(par), free(tek);
}

int main(void) {
    snprintf(root, sizeof root, "/tmp/vox_test_loader_XXXXXX");
    if (!mkdtemp(root)) {
        perror("mkdtemp");
        return 2;
    }
    snprintf(good, sizeof good, "%s/good", root);
    char cmd[1024];
    snprintf(cmd, sizeof cmd,
             "/usr/bin/python3 scripts/make_random_model.py --preset tiny --out %s >/dev/null", good);
    int made = access("scripts/make_random_model.py", R_OK) == 0 && system(cmd) == 0;
    tu_check(made, "make tiny model", made ? NULL : "'%s' failed (run from the repository root)",
             cmd);
    if (made) {
        test_good_model();
        test_tokenizer_small();
        test_bad_models();
        test_quantized();
        test_fuzz();
    }
    nftw(root, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
    return tu_done();
}
