/* cli/tekken.c - the bytes of forced ids, for --force-tokens. Under teacher forcing
 * the decoded sequence is the forced one (the engine feeds it; vox_token.id and the
 * top-k stay the model's own argmax and logits), so the transcript and the -o*
 * outputs are built from the forced ids' bytes, read here from tekken.json (ids
 * below default_num_special_tokens are control ids: no bytes; text ids follow in
 * vocab rank order, base64 token_bytes). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cjson/cJSON.h>

#include "cli.h"

static int b64(int c) {
    if (c >= 'A' && c <= 'Z') return c - 'A';
    if (c >= 'a' && c <= 'z') return c - 'a' + 26;
    if (c >= '0' && c <= '9') return c - '0' + 52;
    if (c == '+') return 62;
    if (c == '/') return 63;
    return -1;
}

/* decodes base64 s into out (room for 3/4 of strlen(s)); returns the length */
static int unb64(const char *s, char *out) {
    int n = 0, acc = 0, bits = 0;
    for (; *s && *s != '='; s++) {
        int v = b64((unsigned char)*s);
        if (v < 0) return -1;
        acc = acc << 6 | v;
        bits += 6;
        if (bits >= 8) {
            bits -= 8;
            out[n++] = (char)(acc >> bits & 0xFF);
        }
    }
    return n;
}

int cli_pieces_load(const char *dir, const int *ids, int n_ids, cli_pieces *out) {
    memset(out, 0, sizeof *out);
    char path[4200];
    snprintf(path, sizeof path, "%s/tekken.json", dir);
    FILE *f = fopen(path, "rb");
    if (!f) return cli_error("%s: cannot read (needed for --force-tokens text)", path);
    fseek(f, 0, SEEK_END);
    long sz = ftell(f);
    fseek(f, 0, SEEK_SET);
    char *txt = sz > 0 ? malloc((size_t)sz + 1) : NULL;
    if (!txt || fread(txt, 1, (size_t)sz, f) != (size_t)sz) {
        fclose(f);
        free(txt);
        return cli_error("%s: cannot read", path);
    }
    fclose(f);
    txt[sz] = 0;
    cJSON *root = cJSON_Parse(txt);
    free(txt);
    if (!root) return cli_error("%s: not JSON", path);
    const cJSON *cfg = cJSON_GetObjectItem(root, "config");
    const cJSON *ns = cfg ? cJSON_GetObjectItem(cfg, "default_num_special_tokens") : NULL;
    const cJSON *vocab = cJSON_GetObjectItem(root, "vocab");
    int special = cJSON_IsNumber(ns) ? ns->valueint : 1000;
    out->n = n_ids;
    out->bytes = calloc((size_t)n_ids + 1, sizeof *out->bytes);
    out->len = calloc((size_t)n_ids + 1, sizeof *out->len);
    if (!out->bytes || !out->len) {
        cJSON_Delete(root);
        return cli_error("out of memory");
    }
    for (int i = 0; i < n_ids; i++) {
        int rank = ids[i] - special;
        const cJSON *e = rank >= 0 ? cJSON_GetArrayItem(vocab, rank) : NULL;
        const cJSON *tb = e ? cJSON_GetObjectItem(e, "token_bytes") : NULL;
        if (!cJSON_IsString(tb)) continue; /* a control id (or past the vocabulary: the engine refuses it) */
        out->bytes[i] = malloc(strlen(tb->valuestring) + 1);
        if (!out->bytes[i]) continue;
        out->len[i] = unb64(tb->valuestring, out->bytes[i]);
        if (out->len[i] < 0) out->len[i] = 0;
    }
    cJSON_Delete(root);
    return 0;
}

void cli_pieces_free(cli_pieces *p) {
    for (int i = 0; p->bytes && i < p->n; i++) free(p->bytes[i]);
    free(p->bytes);
    free(p->len);
    memset(p, 0, sizeof *p);
}
