/* fuzz_model.h - the loader harnesses (fuzz_params.c, fuzz_tekken.c,
 * fuzz_safetensors.c): each writes its input as one file of the micro model and
 * loads the model. A model that loads is opened on the CPU and, when its buffers
 * are small, a stream decodes 0.3 s of noise on it: every size, division and
 * derived quantity the engine computes from the files is exercised. */
#ifndef VOX_FUZZ_MODEL_H
#define VOX_FUZZ_MODEL_H

#include "voxtral_internal.h"
#include "tests/fuzz/fuzz_common.h"

#ifndef FUZZ_FILE
#error "define FUZZ_FILE: the model file the input becomes"
#endif

int LLVMFuzzerInitialize(int *argc, char ***argv) {
    fz_setup(FUZZ_FILE);
    return 0;
}

static void run_model(void) {
    vox_model m;
    if (vox_model_load(&m, fz_dir) != 0) return;
    vox_need need = vox_memory_need(&m, 1 + m.tok.left_pad_tokens + m.tok.delay_ms / 80, VOX_CPU_CHUNK_TOKENS);
    int small = need.weights + need.kv + need.workspace < 256e6 && m.cfg.vocab_size < 100000;
    /* every piece readable */
    int len = 0;
    for (int id = -1; id <= m.cfg.vocab_size; id++) {
        const char *b = vox_token_bytes(&m.tok, id, &len);
        if (b && len) (void)*(volatile const char *)&b[len - 1];
    }
    vox_model_free(&m);
    if (!small) return;
    vox_options o;
    vox_options_default(&o);
    o.backend = "cpu";
    o.threads = 1;
    o.verbose = 0;
    vox_ctx *ctx = vox_open(fz_dir, &o);
    if (!ctx) return;
    vox_stream *s = vox_stream_new(ctx, NULL, NULL);
    if (s) {
        static float noise[4800];
        uint32_t r = 1;
        for (int i = 0; i < 4800; i++) noise[i] = (float)((r = r * 1664525u + 1013904223u) >> 8) / 16777216.0f - 0.5f;
        if (vox_stream_feed(s, noise, 4800) == 0) vox_stream_finish(s);
        vox_token t;
        while (vox_stream_next(s, &t)) {
        }
        vox_stream_free(s);
    }
    vox_close(ctx);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    fz_write(FUZZ_FILE, data, size);
    run_model();
    return 0;
}

#endif
