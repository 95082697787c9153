/* fuzz_audio.c - libFuzzer target: the input is an audio file in memory
 * (vox_audio_read_mem: every format libsndfile reads), then resampled to 16 kHz.
 * vox_audio_max_samples is lowered to 2^22 so that a legitimately long decode (a
 * FLAC of constant frames expands ~50000x) stays within libFuzzer's memory limit. */
#include <stdlib.h>

#include "voxtral_internal.h"

int LLVMFuzzerInitialize(int *argc, char ***argv) {
    vox_audio_max_samples = (int64_t)1 << 22;
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    float *x = NULL, *y = NULL;
    int64_t n = 0, ny = 0;
    int rate = 0;
    if (vox_audio_read_mem(data, size, "fuzz", &x, &n, &rate) == 0) {
        if (n <= 0 || rate < VOX_AUDIO_MIN_RATE || rate > VOX_AUDIO_MAX_RATE) abort();
        volatile float sink = x[0] + x[n - 1];
        (void)sink;
        if (vox_resample(x, n, rate, 16000, &y, &ny) == 0 && ny > vox_audio_max_samples) abort();
        free(y);
    }
    free(x);
    return 0;
}
