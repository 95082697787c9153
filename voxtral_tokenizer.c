/* voxtral_tokenizer.c - reads Mistral's tekken.json for decoding ids to bytes.
 *
 * Only the decoding direction is needed (the model never encodes text): id < n_special
 * is a control token with no text; id n_special + r is the base64-decoded
 * vocab[rank r].token_bytes. Like mistral_common's Tekkenizer, only ranks below
 * config.default_vocab_size - n_special are used. All piece bytes live in one blob.
 * Also picks up the ids of <s>, </s>, [STREAMING_PAD] and the audio block's
 * streaming defaults (MODEL.md section 1).
 */
#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <cjson/cJSON.h>

#include "voxtral_internal.h"

/* Defaults of the released model, used when tekken.json does not say. */
#define DEFAULT_NUM_SPECIAL 1000
#define DEFAULT_BOS_ID 1
#define DEFAULT_EOS_ID 2
#define DEFAULT_PAD_ID 32
#define DEFAULT_DELAY_MS 480
#define DEFAULT_LEFT_PAD_TOKENS 32
#define MAX_TOKENIZER_BYTES (1LL << 30) /* the real tekken.json is 15 MB */
#define MAX_VOCAB (1 << 24)
/* The released model pads with 32 tokens; the bound keeps the prompt (1 + left pad +
 * delay tokens) and the buffers sized from it small. */
#define MAX_LEFT_PAD_TOKENS 4096

/* Whole file as a NUL-terminated string; NULL with the error set. */
static char *read_file(const char *path, size_t *len) {
    FILE *f = fopen(path, "rb");
    if (!f) {
        vox_error("%s: %s", path, strerror(errno));
        return NULL;
    }
    struct stat st;
    if (fstat(fileno(f), &st) != 0 || !S_ISREG(st.st_mode)) {
        fclose(f);
        vox_error("%s: not a regular file", path);
        return NULL;
    }
    if (st.st_size > MAX_TOKENIZER_BYTES) {
        fclose(f);
        vox_error("%s: file too large (%lld bytes)", path, (long long)st.st_size);
        return NULL;
    }
    char *buf = malloc((size_t)st.st_size + 1);
    if (!buf) {
        fclose(f);
        vox_error("%s: out of memory", path);
        return NULL;
    }
    size_t n = fread(buf, 1, (size_t)st.st_size, f);
    int bad = ferror(f);
    fclose(f);
    if (bad || n != (size_t)st.st_size) {
        free(buf);
        vox_error("%s: read error", path);
        return NULL;
    }
    buf[n] = 0;
    *len = n;
    return buf;
}

/* obj[key] as an int in [lo, hi]; absent or null gives def. */
static int get_int(const char *path, const cJSON *obj, const char *what, const char *key,
                   int def, int lo, int hi, int *out) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(obj, key);
    if (!v || cJSON_IsNull(v)) {
        *out = def;
        return 0;
    }
    double d = cJSON_IsNumber(v) ? v->valuedouble : 0.5;
    if (!(d >= lo && d <= hi) || d != (double)(int)d)
        return vox_error("%s: %s%s must be an integer in [%d, %d]", path, what, key, lo, hi);
    *out = (int)d;
    return 0;
}

static int b64_value(int c) {
    if (c >= 'A' && c <= 'Z') return c - 'A';
    if (c >= 'a' && c <= 'z') return c - 'a' + 26;
    if (c >= '0' && c <= '9') return c - '0' + 52;
    if (c == '+') return 62;
    if (c == '/') return 63;
    return -1;
}

/* Standard base64 (padding optional). Writes to out when non-NULL; returns the
 * decoded length, or -1 if s is not base64. */
static long b64_decode(const char *s, unsigned char *out) {
    size_t len = strlen(s), pad = 0;
    while (len > 0 && s[len - 1] == '=' && pad < 2) len--, pad++;
    if (len % 4 == 1 || (pad && (len + pad) % 4)) return -1;
    unsigned acc = 0;
    int bits = 0;
    long n = 0;
    for (size_t i = 0; i < len; i++) {
        int v = b64_value((unsigned char)s[i]);
        if (v < 0) return -1;
        acc = ((acc << 6) | (unsigned)v) & 0xffffu;
        bits += 6;
        if (bits >= 8) {
            bits -= 8;
            if (out) out[n] = (unsigned char)(acc >> bits);
            n++;
        }
    }
    return n;
}

static int parse_vocab(vox_tokenizer *t, const cJSON *root, const char *path, int max_pieces) {
    const cJSON *vocab = cJSON_GetObjectItemCaseSensitive(root, "vocab");
    if (!cJSON_IsArray(vocab)) return vox_error("%s: missing 'vocab' list", path);
    int count = cJSON_GetArraySize(vocab);
    int n = count < max_pieces ? count : max_pieces;
    const char **b64 = calloc((size_t)n + 1, sizeof *b64);
    t->offset = calloc((size_t)n + 1, sizeof *t->offset);
    if (!b64 || !t->offset) {
        free(b64);
        return vox_error("%s: out of memory", path);
    }
    t->n_pieces = n;
    /* pass 1: place each used entry at its rank, lengths into offset[rank + 1] */
    int i = 0, rc = 0;
    const cJSON *e;
    cJSON_ArrayForEach(e, vocab) {
        const cJSON *rank = cJSON_GetObjectItemCaseSensitive(e, "rank");
        const cJSON *bytes = cJSON_GetObjectItemCaseSensitive(e, "token_bytes");
        double r = cJSON_IsObject(e) && cJSON_IsNumber(rank) ? rank->valuedouble : -1;
        if (!(r >= 0) || (r < n && r != (double)(int)r)) {
            rc = vox_error("%s: vocab entry %d has no valid 'rank'", path, i);
            break;
        }
        if (r < n) {
            long len = cJSON_IsString(bytes) ? b64_decode(bytes->valuestring, NULL) : -1;
            if (len < 0) {
                rc = vox_error("%s: vocab rank %d: 'token_bytes' is not a base64 string", path,
                               (int)r);
                break;
            }
            if (b64[(int)r]) {
                rc = vox_error("%s: vocab rank %d appears twice", path, (int)r);
                break;
            }
            b64[(int)r] = bytes->valuestring;
            t->offset[(int)r + 1] = len;
        }
        i++;
    }
    for (int r = 0; rc == 0 && r < n; r++)
        if (!b64[r]) rc = vox_error("%s: vocab has no entry for rank %d", path, r);
    if (rc == 0) {
        for (int r = 0; r < n; r++) t->offset[r + 1] += t->offset[r];
        t->blob = malloc((size_t)t->offset[n] + 1);
        if (!t->blob) rc = vox_error("%s: out of memory", path);
    }
    for (int r = 0; rc == 0 && r < n; r++)
        b64_decode(b64[r], (unsigned char *)t->blob + t->offset[r]);
    free(b64);
    return rc;
}

/* special_tokens: [{rank, token_str, is_control}] -> id of `name`, or def if absent. */
static int find_special(const cJSON *root, const char *path, const char *name, int def,
                        int *out) {
    *out = def;
    const cJSON *list = cJSON_GetObjectItemCaseSensitive(root, "special_tokens");
    const cJSON *e;
    cJSON_ArrayForEach(e, list) {
        const cJSON *s = cJSON_GetObjectItemCaseSensitive(e, "token_str");
        if (!cJSON_IsString(s) || strcmp(s->valuestring, name) != 0) continue;
        const cJSON *rank = cJSON_GetObjectItemCaseSensitive(e, "rank");
        double r = cJSON_IsNumber(rank) ? rank->valuedouble : -1;
        if (!(r >= 0 && r <= INT_MAX) || r != (double)(int)r)
            return vox_error("%s: special token '%s' has no valid 'rank'", path, name);
        *out = (int)r;
        return 0;
    }
    return 0;
}

static int parse(vox_tokenizer *t, const cJSON *root, const char *path) {
    const cJSON *config = cJSON_GetObjectItemCaseSensitive(root, "config");
    if (config && !cJSON_IsObject(config)) return vox_error("%s: 'config' is not an object", path);
    int vocab_size = 0;
    if (get_int(path, config, "config.", "default_num_special_tokens", DEFAULT_NUM_SPECIAL, 0,
                MAX_VOCAB, &t->n_special) ||
        get_int(path, config, "config.", "default_vocab_size", MAX_VOCAB, 0, MAX_VOCAB,
                &vocab_size))
        return -1;
    if (vocab_size < t->n_special)
        return vox_error("%s: config.default_vocab_size (%d) is below the %d special tokens",
                         path, vocab_size, t->n_special);
    if (parse_vocab(t, root, path, vocab_size - t->n_special)) return -1;

    const cJSON *special = cJSON_GetObjectItemCaseSensitive(root, "special_tokens");
    if (special && !cJSON_IsArray(special))
        return vox_error("%s: 'special_tokens' is not a list", path);
    if (find_special(root, path, "<s>", DEFAULT_BOS_ID, &t->bos_id) ||
        find_special(root, path, "</s>", DEFAULT_EOS_ID, &t->eos_id) ||
        find_special(root, path, "[STREAMING_PAD]", DEFAULT_PAD_ID, &t->pad_id))
        return -1;
    int ids[3] = {t->bos_id, t->eos_id, t->pad_id};
    const char *names[3] = {"<s>", "</s>", "[STREAMING_PAD]"};
    for (int k = 0; k < 3; k++)
        if (ids[k] >= t->n_special)
            return vox_error("%s: special token '%s' has id %d, not below the %d special tokens",
                             path, names[k], ids[k], t->n_special);

    const cJSON *audio = cJSON_GetObjectItemCaseSensitive(root, "audio");
    if (audio && !cJSON_IsNull(audio) && !cJSON_IsObject(audio))
        return vox_error("%s: 'audio' is not an object", path);
    return get_int(path, audio, "audio.", "transcription_delay_ms", DEFAULT_DELAY_MS,
                   VOX_MIN_DELAY_MS, VOX_MAX_DELAY_MS, &t->delay_ms) ||
           get_int(path, audio, "audio.", "streaming_n_left_pad_tokens",
                   DEFAULT_LEFT_PAD_TOKENS, 0, MAX_LEFT_PAD_TOKENS, &t->left_pad_tokens);
}

int vox_tokenizer_load(vox_tokenizer *t, const char *path) {
    memset(t, 0, sizeof *t);
    size_t len;
    char *text = read_file(path, &len);
    if (!text) return -1;
    const char *end = NULL;
    cJSON *root = cJSON_ParseWithLengthOpts(text, len, &end, 0);
    int rc;
    if (!root)
        rc = vox_error("%s: not valid JSON (error at byte %td)", path, end ? end - text : (ptrdiff_t)0);
    else if (!cJSON_IsObject(root))
        rc = vox_error("%s: top level is not a JSON object", path);
    else
        rc = parse(t, root, path);
    cJSON_Delete(root);
    free(text);
    if (rc) vox_tokenizer_free(t);
    return rc ? -1 : 0;
}

void vox_tokenizer_free(vox_tokenizer *t) {
    if (!t) return;
    free(t->blob);
    free(t->offset);
    memset(t, 0, sizeof *t);
}

const char *vox_token_bytes(const vox_tokenizer *t, int id, int *len) {
    if (len) *len = 0;
    if (!t || !t->offset || id < t->n_special || id - t->n_special >= t->n_pieces) return NULL;
    int r = id - t->n_special;
    if (len) *len = (int)(t->offset[r + 1] - t->offset[r]);
    return t->blob + t->offset[r];
}
