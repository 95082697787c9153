/* cli/cli.h - what the command line's files share. The CLI is a client of the
 * public API (voxtral.h) only; none of this is part of libvoxtral.
 *
 * Input sources feed a stream until their input ends or stop() returns true (a
 * signal, a closed stdout), and return 0, or -1 with the CLI error set. */
#ifndef VOXTRAL_CLI_H
#define VOXTRAL_CLI_H

#include "voxtral.h"

/* The CLI's own error message (printf format; returns -1), and its reader. A failed
 * library call is passed on with cli_error("%s", vox_last_error()). */
int cli_error(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
const char *cli_last_error(void);

/* stdin.c: WAV or raw s16le; feeds once `interval` seconds of audio have gathered */
int cli_stdin(vox_stream *s, int rate, double interval, int (*stop)(void));
/* mic.c (PortAudio) or nomic.c: capture from `device` (NULL = default; a number or a
 * name substring) at its native rate, resampled to `rate`, fed every `interval` s. */
int cli_mic(vox_stream *s, const char *device, int rate, double interval, int verbose,
            int (*stop)(void));
int cli_list_devices(void); /* prints devices to stdout */
/* check.c: `voxtral --check`: preflight of drivers, GPUs, memory and a smoke
 * transcription (dir/audio may be NULL). Returns the process exit code. */
int cli_check(const char *dir, const char *audio, int verbose);

#endif
