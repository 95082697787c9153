/* voxtral_nocuda.c - the CUDA entry points of a build without CUDA: they say so,
 * and `--backend auto` then runs on the CPU. */
#include "voxtral_internal.h"

int vox_cuda_available(void) { return 0; }
int vox_cuda_built(void) { return 0; }

vox_backend *vox_cuda_backend_new(size_t need_bytes, const char *gpu_path) {
    (void)need_bytes;
    (void)gpu_path;
    vox_error("this voxtral was built without CUDA (rebuild with `make cuda`)");
    return NULL;
}
