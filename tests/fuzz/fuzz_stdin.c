/* fuzz_stdin.c - libFuzzer target: the input is what `voxtral --stdin` reads: WAV
 * (header parsed by cli/stdin.c) or raw s16le. The input is put on file
 * descriptor 0 and cli_stdin() runs over it; the stream it feeds is a stand-in
 * (vox_stream_feed below) that checks every sample, so only the CLI's parsing and
 * conversion are linked (cli/stdin.c + cli/error.c). */
#include <stdlib.h>
#include <sys/mman.h>
#include <unistd.h>

#include "cli/cli.h"

static int never(void) { return 0; }
const char *vox_last_error(void) { return "stand-in"; }

/* reads every sample it is given (ASan sees a read past what was converted) */
int vox_stream_feed(vox_stream *s, const float *samples, size_t n) {
    volatile float sum = 0;
    for (size_t i = 0; i < n; i++) sum += samples[i];
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    int fd = memfd_create("stdin", 0);
    if (fd < 0 || (size && write(fd, data, size) != (ssize_t)size) || lseek(fd, 0, SEEK_SET) != 0) abort();
    if (dup2(fd, 0) != 0) abort();
    close(fd);
    if (cli_stdin_begin(never) == 0) cli_stdin((vox_stream *)1, 16000, 0.01, never);
    return 0;
}
