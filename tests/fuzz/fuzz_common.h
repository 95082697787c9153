/* fuzz_common.h - what the libFuzzer harnesses share: a scratch directory (in
 * /dev/shm when there is one) holding the micro model (tests/fuzz/model, or
 * $VOX_FUZZ_MODEL), into which a harness writes the file it fuzzes. Harnesses run
 * from the repository root (scripts/fuzz.sh). */
#ifndef VOX_FUZZ_COMMON_H
#define VOX_FUZZ_COMMON_H

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static char fz_dir[256];

static void fz_write(const char *name, const void *data, size_t n) {
    char path[512];
    snprintf(path, sizeof path, "%s/%s", fz_dir, name);
    FILE *f = fopen(path, "wb");
    if (!f || (n && fwrite(data, 1, n, f) != n)) {
        fprintf(stderr, "fuzz: cannot write %s\n", path);
        abort();
    }
    fclose(f);
}

static void fz_copy_model_file(const char *name) {
    const char *src = getenv("VOX_FUZZ_MODEL");
    char path[512];
    snprintf(path, sizeof path, "%s/%s", src && *src ? src : "tests/fuzz/model", name);
    FILE *f = fopen(path, "rb");
    if (!f) {
        fprintf(stderr, "fuzz: cannot read %s (run from the repository root, or set VOX_FUZZ_MODEL)\n", path);
        abort();
    }
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    char *buf = malloc((size_t)n + 1);
    if (!buf || fread(buf, 1, (size_t)n, f) != (size_t)n) abort();
    fclose(f);
    fz_write(name, buf, (size_t)n);
    free(buf);
}

static void fz_cleanup(void) {
    const char *files[3] = {"params.json", "tekken.json", "consolidated.safetensors"};
    char path[512];
    for (int i = 0; i < 3; i++) {
        snprintf(path, sizeof path, "%s/%s", fz_dir, files[i]);
        unlink(path);
    }
    rmdir(fz_dir);
}

/* A fresh scratch directory (removed at exit) with the micro model's files except `fuzzed`. */
static void fz_setup(const char *fuzzed) {
    snprintf(fz_dir, sizeof fz_dir, "%s/vox_fuzz_XXXXXX", access("/dev/shm", W_OK) == 0 ? "/dev/shm" : "/tmp");
    if (!mkdtemp(fz_dir)) abort();
    atexit(fz_cleanup);
    const char *files[3] = {"params.json", "tekken.json", "consolidated.safetensors"};
    for (int i = 0; i < 3; i++)
        if (strcmp(files[i], fuzzed)) fz_copy_model_file(files[i]);
}

#endif
