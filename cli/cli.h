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

/* options.c: the parsed command line */
typedef struct {
    const char *dir, *forced_path, *device;
    const char **inputs; /* -i FILE ... */
    int n_inputs;
    int use_stdin, use_mic, list_devices, check, json, topk, bench, quiet;
    double interval;
    vox_options opt;
} cli_opts;
/* -1: run on; else the exit code (after --help, --version or a usage error) */
int cli_parse(int argc, char **argv, cli_opts *o);

/* sniff.c: the name of a container or text format that is not WAV or raw PCM,
 * from the first n bytes (all of the input when at_eof), else NULL */
const char *cli_sniff(const unsigned char *b, size_t n, int at_eof);

/* stdin.c: WAV (any rate, resampled) or raw s16le; feeds once `interval` seconds of audio have gathered */
int cli_stdin(vox_stream *s, int rate, double interval, int (*stop)(void));
/* reads and checks the start of stdin (format, WAV header) before the model loads,
 * so a wrong input fails fast; cli_stdin calls it when it was not called */
int cli_stdin_begin(int (*stop)(void));
/* mic.c (PortAudio) or nomic.c: capture from `device` (NULL = default; a number or a
 * name substring) at its native rate, resampled to `rate`, fed every `interval` s. */
int cli_mic(vox_stream *s, const char *device, int rate, double interval, int verbose,
            int (*stop)(void));
int cli_list_devices(void); /* prints devices to stdout */
/* check.c: `voxtral --check`: preflight of drivers, GPUs, memory and a smoke
 * transcription (dir/audio may be NULL) for `backend` (auto, cpu, cuda: what must
 * work for exit 0). Returns the process exit code. */
int cli_check(const char *dir, const char *audio, const char *backend, int verbose);

#endif
