/* fuzz_params.c - libFuzzer target: the input is the micro model's params.json
 * (vox_model_load, then vox_open and a short stream when it loads: fuzz_model.h). */
#define FUZZ_FILE "params.json"
#include "tests/fuzz/fuzz_model.h"
