/* fuzz_safetensors.c - libFuzzer target: the input is the micro model's consolidated.safetensors
 * (vox_model_load, then vox_open and a short stream when it loads: fuzz_model.h). */
#define FUZZ_FILE "consolidated.safetensors"
#include "tests/fuzz/fuzz_model.h"
