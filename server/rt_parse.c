/* server/rt_parse.c - one client message of the realtime WebSocket to an action.
 *
 * Accepts vLLM's events (session.update, input_audio_buffer.append / .commit with
 * "final") and OpenAI's (session.update / transcription_session.update with a
 * transcription session and its audio format, input_audio_buffer.clear). Audio is
 * strict base64 of PCM16 little-endian: a bad character, bad padding or an odd
 * byte count is invalid_audio. No connection needed: fuzzed by
 * tests/fuzz/fuzz_server_event.c.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cjson/cJSON.h>

#include "server.h"

static int b64_val(unsigned char c) {
    if (c >= 'A' && c <= 'Z') return c - 'A';
    if (c >= 'a' && c <= 'z') return c - 'a' + 26;
    if (c >= '0' && c <= '9') return c - '0' + 52;
    if (c == '+') return 62;
    if (c == '/') return 63;
    return -1;
}

/* strict base64 (padding optional at the very end); -1 on a bad input */
static long b64_decode(const char *s, size_t n, unsigned char *out) {
    size_t full = n;
    while (n > 0 && s[n - 1] == '=') n--;
    size_t pad = full - n;
    if (n % 4 == 1 || pad > 2) return -1;
    if (pad && full % 4 != 0) return -1;
    long o = 0;
    uint32_t acc = 0;
    int bits = 0;
    for (size_t i = 0; i < n; i++) {
        int v = b64_val((unsigned char)s[i]);
        if (v < 0) return -1;
        acc = (acc << 6) | (uint32_t)v;
        bits += 6;
        if (bits >= 8) {
            bits -= 8;
            out[o++] = (unsigned char)(acc >> bits);
            acc &= (1u << bits) - 1;
        }
    }
    if (acc != 0) return -1; /* non-zero trailing bits: not canonical */
    return o;
}

static void set_err(rt_action *a, const char *code, const char *msg) {
    a->type = RT_ERR;
    snprintf(a->code, sizeof a->code, "%s", code);
    snprintf(a->msg, sizeof a->msg, "%s", msg);
}

static int rate_of(const cJSON *fmt) {
    /* OpenAI GA: {"type":"audio/pcm","rate":24000}; beta: "pcm16" (24 kHz) */
    if (cJSON_IsString(fmt)) return !strcmp(fmt->valuestring, "pcm16") ? 24000 : -1;
    if (!cJSON_IsObject(fmt)) return 0;
    const cJSON *t = cJSON_GetObjectItemCaseSensitive(fmt, "type");
    const cJSON *r = cJSON_GetObjectItemCaseSensitive(fmt, "rate");
    if (cJSON_IsString(t) && strcmp(t->valuestring, "audio/pcm") != 0) return -1;
    if (cJSON_IsNumber(r)) return r->valuedouble >= 1 && r->valuedouble <= 1e6 ? (int)r->valuedouble : -1;
    return 24000;
}

static void session_update(const cJSON *root, rt_action *a) {
    a->type = RT_SESSION_UPDATE;
    const cJSON *sess = cJSON_GetObjectItemCaseSensitive(root, "session");
    if (!cJSON_IsObject(sess)) return; /* vLLM: {"type":"session.update","model":...} */
    const cJSON *t = cJSON_GetObjectItemCaseSensitive(sess, "type");
    if (cJSON_IsString(t) && !strcmp(t->valuestring, "transcription")) a->transcription = 1;
    int rate = 0;
    const cJSON *audio = cJSON_GetObjectItemCaseSensitive(sess, "audio");
    const cJSON *in = cJSON_IsObject(audio) ? cJSON_GetObjectItemCaseSensitive(audio, "input") : NULL;
    const cJSON *fmt = cJSON_IsObject(in) ? cJSON_GetObjectItemCaseSensitive(in, "format") : NULL;
    if (fmt) rate = rate_of(fmt);
    else if ((fmt = cJSON_GetObjectItemCaseSensitive(sess, "input_audio_format"))) rate = rate_of(fmt);
    if (rate < 0 || (rate != 0 && rate != 16000 && rate != 24000))
        set_err(a, "invalid_audio", "session.update: input audio must be audio/pcm at 16000 or 24000 Hz");
    else
        a->rate = rate;
}

void rt_parse(const char *msg, size_t len, size_t max_samples, rt_action *a) {
    memset(a, 0, sizeof *a);
    cJSON *root = cJSON_ParseWithLength(msg, len);
    if (!root || !cJSON_IsObject(root)) {
        set_err(a, "invalid_json", root ? "event must be a JSON object" : "event is not valid JSON");
        cJSON_Delete(root);
        return;
    }
    const cJSON *type = cJSON_GetObjectItemCaseSensitive(root, "type");
    if (!cJSON_IsString(type)) {
        set_err(a, "invalid_json", "event has no \"type\" string");
    } else if (!strcmp(type->valuestring, "session.update") ||
               !strcmp(type->valuestring, "transcription_session.update")) {
        session_update(root, a);
    } else if (!strcmp(type->valuestring, "input_audio_buffer.append")) {
        const cJSON *audio = cJSON_GetObjectItemCaseSensitive(root, "audio");
        size_t n = cJSON_IsString(audio) ? strlen(audio->valuestring) : 0;
        if (!cJSON_IsString(audio)) {
            set_err(a, "invalid_audio", "input_audio_buffer.append needs an \"audio\" base64 string");
        } else if (n / 4 * 3 / 2 > max_samples + 2) {
            set_err(a, "invalid_audio", "input_audio_buffer.append: chunk too large");
        } else {
            unsigned char *bytes = malloc(n / 4 * 3 + 3);
            long got = bytes ? b64_decode(audio->valuestring, n, bytes) : -1;
            if (!bytes) set_err(a, "processing_error", "out of memory");
            else if (got < 0) set_err(a, "invalid_audio", "audio is not valid base64");
            else if (got % 2) set_err(a, "invalid_audio", "audio has an odd number of bytes (PCM16 has 2 per sample)");
            else {
                a->type = RT_APPEND;
                a->n_pcm = (size_t)got / 2;
                a->pcm = malloc(sizeof(int16_t) * (a->n_pcm ? a->n_pcm : 1));
                if (!a->pcm) set_err(a, "processing_error", "out of memory");
                for (size_t i = 0; a->pcm && i < a->n_pcm; i++)
                    a->pcm[i] = (int16_t)(bytes[2 * i] | bytes[2 * i + 1] << 8);
            }
            free(bytes);
        }
    } else if (!strcmp(type->valuestring, "input_audio_buffer.commit")) {
        const cJSON *fin = cJSON_GetObjectItemCaseSensitive(root, "final");
        a->type = cJSON_IsTrue(fin) ? RT_COMMIT_FINAL : RT_COMMIT;
    } else if (!strcmp(type->valuestring, "input_audio_buffer.clear")) {
        a->type = RT_CLEAR;
    } else {
        /* the type is quoted back: decoded (any bytes), cut at a character boundary */
        vox_buf t = {0};
        char m[150] = "unknown event type";
        if (vox_utf8_decode(type->valuestring, strlen(type->valuestring), &t) == 0 && t.data) {
            size_t n = t.len < 80 ? t.len : 80;
            while (n > 0 && n < t.len && ((unsigned char)t.data[n] & 0xC0) == 0x80) n--;
            snprintf(m, sizeof m, "unknown event type '%.*s'", (int)n, t.data);
        }
        vox_buf_free(&t);
        set_err(a, "unknown_event", m);
    }
    cJSON_Delete(root);
}
