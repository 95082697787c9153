/* cli/cli.h - what the command line's files share. The CLI is a client of the
 * public API (voxtral.h) only; none of this is part of libvoxtral.
 *
 * Input sources feed a stream until their input ends or stop() returns true (a
 * signal, a closed stdout), and return 0, or -1 with the CLI error set. */
#ifndef VOXTRAL_CLI_H
#define VOXTRAL_CLI_H

#include "voxtral.h"
#include "voxtral_text.h"

/* The CLI's own error message (printf format; returns -1), and its reader. A failed
 * library call is passed on with cli_error("%s", vox_last_error()). */
int cli_error(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
const char *cli_last_error(void);

#include <signal.h>
#include <cjson/cJSON.h>

/* options.c: the parsed command line */
enum { CLI_OTXT = 1, CLI_OSRT = 2, CLI_OVTT = 4, CLI_OJSON = 8 };
typedef struct {
    const char *dir, *forced_path, *device;
    const char **inputs; /* -i FILE ... and positional files; "-": a whole file on stdin */
    int n_inputs;
    int use_stdin, use_mic, list_devices, check, json, topk, bench, quiet;
    int continuous; /* --continuous: files too go on past an end of segment (EOS) */
    int outputs;         /* CLI_O* flags: -otxt -osrt -ovtt -ojson */
    const char *of;      /* -of PREFIX ("-": stdout) */
    const char *quantize_out; /* --quantize OUT_DIR */
    int timestamps;      /* --timestamps 1, -nt 0, default -1: when stdout is a terminal */
    int progress;        /* -pp 1, default -1: stderr a terminal and the input > 1 min */
    int max_len;         /* -ml N */
    double interval;
    vox_options opt;
} cli_opts;

/* output.c: one input's output. A closed pipe sets cli_stdout_closed (quiet end),
 * any other failed stdout write cli_stdout_failed (the CLI error says why). */
extern volatile sig_atomic_t cli_stdout_closed, cli_stdout_failed;
/* forced.c: the bytes of the --force-tokens ids (index i: ids[i]); NULL/0 for control
 * ids; they point into the model's vocabulary (valid until vox_close) */
typedef struct {
    const int *ids;
    const char **bytes;
    int *len;
    int n;
} cli_pieces;
int cli_pieces_load(const vox_ctx *ctx, const int *ids, int n_ids, cli_pieces *out);
void cli_pieces_free(cli_pieces *p);
typedef struct {
    const cli_pieces *forced; /* teacher forcing: step j's text is forced id j's */
    int step;
    int json, topk_on, lines, live, progress, to_files_only, index;
    vox_transcript *tr;
    cJSON *tokens, *topk, *pieces; /* --json */
    int printed, at_line_start, segs_shown, restarts, progress_shown;
    double last_time_s, total_s, t_start, progress_at;
    vox_stream *s;
} cli_sink;
int cli_sink_begin(cli_sink *k, const vox_text_options *topt);
void cli_sink_token(cli_sink *k, const vox_token *t);
int cli_sink_end(cli_sink *k, double duration_s);
void cli_sink_free(cli_sink *k);
void cli_out_bytes(cli_sink *k, const char *p, size_t n);
void cli_progress_end(cli_sink *k);
/* the end of stdout: the --json object (takes `stats`) or the text's newline; err NULL
 * on success. 0, or -1 when writing failed */
int cli_emit_result(cli_sink *k, const char *err, cJSON *stats);
int cli_write_files(cli_sink *k, const cli_opts *o, const char *input);
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
 * transcription (dir/audio/quant may be NULL; quant: vox_options.quant) for `backend`
 * (auto, cpu, cuda: what must work for exit 0). Returns the process exit code. */
int cli_check(const char *dir, const char *audio, const char *backend, const char *quant, int kv_window,
              int verbose);

#endif
