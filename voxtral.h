/* voxtral.h - public C API of the Voxtral Realtime speech-to-text engine.
 *
 * A vox_ctx is a loaded model bound to one backend (CPU or CUDA). A vox_stream
 * transcribes one audio stream on a context: feed 16 kHz mono float samples in
 * any chunk size, and decoded tokens are delivered, in order, to the callback
 * as soon as they are decoded. Streaming and offline give the same ids: an
 * offline run is one stream fed the whole file, then finished.
 *
 * Errors: functions return NULL or -1 and set a one-line message readable with
 * vox_last_error() ("what: why", naming the file where there is one). The library
 * never exits the process. Which thread reads what:
 *   - vox_last_error(): the calling thread's last error (each thread has its own,
 *     like errno): read it on the thread whose call failed, before its next call.
 *   - vox_stream_error(s): the error that failed stream s, kept until
 *     vox_stream_free; later calls on s fail with "stream failed earlier: <it>".
 *     Any thread may read it once the failing call has returned (synchronised with
 *     that call, e.g. after joining the worker that made it).
 *   - vox_ctx_error(ctx): a failure the context's backend keeps (a CUDA error
 *     leaves the device unusable: every stream on it will fail; reopen the model);
 *     NULL while the backend is sound. Same rule as vox_stream_error.
 * A context and its streams are used by one thread at a time.
 *
 * Ownership: the caller frees what it creates (vox_close, vox_stream_free).
 * Strings passed to callbacks are valid only during the call.
 */
#ifndef VOXTRAL_H
#define VOXTRAL_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef struct vox_ctx vox_ctx;
typedef struct vox_stream vox_stream;

typedef struct {
    const char *backend; /* "auto" (default), "cpu" or "cuda" */
    int threads;         /* CPU threads; 0 = all cores */
    int delay_ms;        /* transcription delay; 0 = tekken.json's default (else 480) */
    int verbose;         /* 0 quiet, 1 normal (backend line on stderr), 2 verbose */
    const char *gpu_path; /* NULL/"auto", "bf16", "fp16", "fp32": how the CUDA backend
                             holds the matrices (auto: bf16 on compute capability 8.0+,
                             else fp16 with fp32 for tensors fp16 cannot hold) */
    const char *quant;   /* NULL: weights as in the checkpoint; "q8" or "q4" (optionally
                            "q4:GROUP[:bf16|q8]"): quantize a BF16 checkpoint at load */
    /* Serving many live streams from one context (see "Threads" below). */
    int max_streams;     /* 0 (default): a plain context, each call runs in the caller's
                            thread; > 0: a serving context: a KV pool of this many
                            streams, checked against free RAM / VRAM at open, and one
                            scheduler thread that batches every stream's work */
    int max_batch;       /* decoder rows per batched step (serving; 0 = max_streams,
                            at most VOX_MAX_BATCH) */
    int tick_ms;         /* serving: the least time between the starts of two ticks
                            while streams wait for their neighbours (a tick starts at
                            once when every live stream has audio, a full batch has, or
                            a stream flushes or finishes); 0 = the default
                            (VOX_TICK_MS), < 0 = none: a tick as soon as any audio is in */
    int kv_window;       /* decoder KV window in positions; 0 = the model's sliding
                            window. Smaller: less memory per stream, but attention then
                            sees only the last kv_window positions (changes results) */
    const char *kv_dtype; /* NULL/"f32" (default) or "bf16": the KV caches' element
                             type (bf16 halves their memory; CPU and CUDA) */
} vox_options;

enum { VOX_TICK_MS = 20 };    /* vox_options.tick_ms's default */
enum { VOX_MAX_BATCH = 128 }; /* vox_options.max_batch's default (at most) */

/* One decoded step. `piece` holds the token's bytes (not NUL-terminated, may be
 * part of a UTF-8 character; empty for control ids). `topk_*` hold k entries
 * when vox_stream_set_topk asked for them. */
typedef struct {
    int id;            /* generated id (the argmax) */
    int pos;           /* decoder position whose logits produced it */
    double time_s;     /* audio time the token refers to: (pos + 1 - prompt_len) * 0.08 s */
    const char *piece;
    int piece_len;
    int k;
    const int *topk_ids;
    const float *topk_logits;
    double ready_s;    /* stream time (seconds of samples fed) of the sample whose
                          arrival completed this token's input: its latency is the
                          delivery time minus that sample's arrival time */
} vox_token;

typedef void (*vox_token_cb)(void *user, const vox_token *tok);

/* Threads.
 * A plain context (max_streams = 0) is used from one thread at a time: each call
 * does its work before it returns (vox_stream_feed decodes what the audio allows,
 * calling the callback in the caller's thread; vox_stream_finish returns with every
 * token delivered). Several plain contexts may live in one process.
 *
 * A serving context (max_streams > 0) owns one scheduler thread, the only one that
 * runs the model. vox_stream_new, _feed, _flush, _finish, _next, _done, _wait,
 * _stats and _free may then be called from any thread, one per stream or one for
 * all, at any time; calls on one stream from several threads at once are
 * serialised. They return at once: feed, flush and finish queue the audio / the
 * request (the order of a stream's calls is kept), and the scheduler, each tick,
 * takes every stream's pending audio, runs batched encoder chunks and one batched
 * decoder step for every stream with a new audio token (ticks start at most every
 * tick_ms while some live streams have no audio yet: see vox_options). Callbacks run on the
 * scheduler thread and must not call back into the library for that context (push
 * tokens to your own queue); pull mode (cb = NULL) takes tokens with vox_stream_next
 * from any thread. A stream is complete (vox_stream_done, vox_stream_wait) once its
 * finish has been decoded to the end. set_topk, force_tokens, set_continuous and the
 * tap are set before the stream's first feed. A stream that finds the pool full is
 * refused (vox_stream_new returns NULL, "stream pool full: ..."); one that fails
 * later (a backend error) reports it on its next call. Each stream's ids equal those
 * of the same audio on a plain context (any batch, any neighbours). */

const char *vox_last_error(void);
const char *vox_stream_error(const vox_stream *s); /* NULL unless s failed */
const char *vox_ctx_error(const vox_ctx *ctx);     /* NULL unless the backend failed */
void vox_options_default(vox_options *opt);

vox_ctx *vox_open(const char *model_dir, const vox_options *opt);
void vox_close(vox_ctx *ctx);
const char *vox_backend_name(const vox_ctx *ctx); /* "cpu" or "cuda (<device name>)" */
int vox_sample_rate(const vox_ctx *ctx);            /* 16000 for the released model */
int vox_delay_ms(const vox_ctx *ctx);
/* Samples per feed that keep the backend's encoder batches full (offline input:
 * feeding in blocks of this size is fastest; any size gives the same ids). */
size_t vox_feed_block(const vox_ctx *ctx);

/* The text bytes of token `id` in the model's vocabulary (not NUL-terminated, may be part
 * of a UTF-8 character); NULL and *len = 0 for control ids and ids out of range. Valid
 * until vox_close. */
const char *vox_token_piece(const vox_ctx *ctx, int id, int *len);

/* cb receives every decoded token as soon as it is decoded (push). With cb == NULL
 * the tokens queue up instead and vox_stream_next takes them in order (pull). */
vox_stream *vox_stream_new(vox_ctx *ctx, vox_token_cb cb, void *user);
/* Pull mode: 1 and *tok filled with the oldest pending token, or 0 when none is
 * pending. tok->piece stays valid until vox_close; top-k is not kept (k = 0). */
int vox_stream_next(vox_stream *s, vox_token *tok);
void vox_stream_free(vox_stream *s);
int vox_stream_set_topk(vox_stream *s, int k);              /* before the first feed */
int vox_stream_force_tokens(vox_stream *s, const int *ids, int n); /* teacher forcing */
int vox_stream_feed(vox_stream *s, const float *samples, size_t n);
int vox_stream_finish(vox_stream *s); /* right-pads, decodes the rest; stream then done */
/* Forces out everything pending, as if the audio ended here (e.g. on silence);
 * the stream stays open and later audio starts a fresh segment. */
int vox_stream_flush(vox_stream *s);
/* Continuous mode (live input): when the decoder ends a segment (EOS) or produces
 * no text for ~5 s, a new segment starts from the first audio not yet transcribed.
 * Memory stays flat for endless input either way (ring KV caches, bounded buffers). */
int vox_stream_set_continuous(vox_stream *s, int on);
int vox_stream_restarts(const vox_stream *s); /* segments started after the first */
/* 1 when the stream is complete: finished and every token delivered, or failed
 * (then vox_stream_wait returns -1 with the reason). A plain context's stream is
 * complete when vox_stream_finish returns. */
int vox_stream_done(vox_stream *s);
int vox_stream_wait(vox_stream *s); /* blocks until done: 0, or -1 (error set) */
/* 1 when everything queued on s so far (audio, flushes, a finish) has been decoded as
 * far as that audio allows and its tokens delivered: e.g. a flush has completed. Never
 * blocks; a plain context's stream is always idle between calls. */
int vox_stream_idle(vox_stream *s);

/* Timings gathered by a stream (milliseconds, wall clock, backend synchronised). */
typedef struct {
    double encoder_ms;  /* conv stem + encoder + adapter */
    double prefill_ms;
    double decode_ms;   /* all single steps */
    int encoder_tokens; /* audio tokens (80 ms each) encoded */
    int steps;          /* single decoder steps */
    double first_token_ms; /* from stream creation to the first decoded id */
    double step_ms_p95; /* 95th percentile of single-step times */
    double audio_s;     /* audio fed so far, seconds */
} vox_stats;
void vox_stream_stats(const vox_stream *s, vox_stats *st);

/* For benchmarks: model load time, bytes of weights one decoder step reads (its
 * memory-bandwidth floor is that / vox_measure_bandwidth), the backend's measured
 * read bandwidth in GB/s (0 if unknown; takes a moment), backend memory held. */
/* A serving context's scheduler, so far (zeros for a plain context). */
enum { VOX_BATCH_BINS = 129 };  /* by batch size: [b] for b rows, [128] for 128 or more */
typedef struct {
    int max_streams, streams;   /* pool size, streams holding a slot now */
    long long ticks;
    long long steps, step_rows; /* batched decoder steps; rows over all of them */
    double step_ms;             /* their time (backend synchronised) */
    long long steps_by_batch[VOX_BATCH_BINS];
    double step_ms_by_batch[VOX_BATCH_BINS];
    long long enc_batches, enc_tokens;
    double enc_ms;
    double enc_host_ms;         /* of enc_ms, until the last launch (uploads and launches on the host) */
    long long prefills, prefill_passes; /* prompts run; decoder passes they took */
    double prefill_ms;
    double prep_ms;             /* the host's part: gathering audio, log-mel, restarts, publishing */
    double mel_ms;              /* of prep_ms: computing the log-mel frames (streams in parallel) */
    int host_threads;           /* the scheduler's OpenMP team for that */
    double busy_ms;             /* ticks' wall time (the rest of the time the scheduler waited for work) */
    double pool_bytes, stream_bytes; /* the KV pool; one stream's share of it */
    int prefix_tokens;          /* audio tokens of a segment's left pad shared by every
                                   segment (encoded once at open; 0: none) */
    long long prefix_segments;  /* segments that started from it */
} vox_serve_stats;
void vox_serve_stats_get(vox_ctx *ctx, vox_serve_stats *st);

double vox_load_ms(const vox_ctx *ctx);
double vox_step_weight_bytes(const vox_ctx *ctx);
double vox_measure_bandwidth(vox_ctx *ctx);
size_t vox_backend_bytes(const vox_ctx *ctx);

/* ---- before opening a context ------------------------------------------------ */
/* Memory (bytes) a context on `backend` ("cpu" or "cuda") would need for the model in
 * `dir` at the model's default delay: reads params.json, tekken.json and the checkpoint
 * header only (no weights). 0, or -1 with the error set. */
typedef struct {
    double weights, kv, workspace;
    int dec_window, enc_window, prompt_len;
    char format[32]; /* the weights' format: "bf16", or the quantization ("q4", ...) */
} vox_memory_estimate;
/* quant: NULL (the checkpoint's own format) or a vox_options.quant spec; kv_window:
 * the decoder KV window (vox_options.kv_window; 0: the model's) */
int vox_model_memory(const char *dir, const char *backend, const char *quant, int kv_window,
                     vox_memory_estimate *out);

/* ---- quantized weights (voxtral_quant.c) --------------------------------------- */
/* 0 when `spec` ("q8", "q4", "q4:GROUP[:bf16|q8]") names a quantization this library
 * makes, else -1 with the error set. */
int vox_quant_spec_check(const char *spec);
/* `voxtral --quantize`: loads the BF16 model in src_dir, quantizes it by `spec`, writes
 * a model directory out_dir (safetensors with the quantized tensors and their scales,
 * params.json recording the format) that loads and mmaps directly. */
int vox_quantize_dir(const char *src_dir, const char *out_dir, const char *spec, int verbose);
int vox_cuda_built(void); /* 1 when this library was built with the CUDA backend */

/* ---- audio files (voxtral_audiofile.c) ------------------------------------------
 * Any format libsndfile reads (WAV, FLAC, Ogg, MP3, ...), downmixed to mono (the
 * float32 channel mean); 16-bit input arrives as exactly int16 / 32768. *out is
 * malloc'd (the caller frees it). A file is opened once: FIFOs, pipes, /dev/stdin and
 * <(...) work (a non-seekable input is read into memory first). Refused with a
 * message: sample rates outside VOX_AUDIO_MIN_RATE..VOX_AUDIO_MAX_RATE, more than 2^30
 * samples (before or after resampling; the buffer grows with the audio decoded, never
 * from a header's claim), a missing file ("no such file"), a directory ("is a
 * directory"), an empty file ("empty file"), and containers libsndfile lacks (MP4/M4A,
 * AAC, WebM, ...: the message gives the ffmpeg line). All return 0, or -1 with the
 * error set. */
enum { VOX_AUDIO_MIN_RATE = 1000, VOX_AUDIO_MAX_RATE = 768000 };
/* At the file's own rate (*rate): a program can read the file before loading the model
 * (fails fast, one open), then resample with vox_resample once the rate is known. */
int vox_audio_read(const char *path, float **out, int64_t *n, int *rate);
/* The same from bytes in memory; `name` names them in messages. */
int vox_audio_read_mem(const void *data, size_t size, const char *name, float **out, int64_t *n,
                       int *rate);
/* vox_audio_read, then resampled to `rate` (libsoxr, high quality). */
int vox_audio_load(const char *path, int rate, float **out, int64_t *n);
/* Checks a regular file's header without reading the audio (fails fast); returns 0
 * at once for a FIFO or pipe, which cannot be read twice (vox_audio_read checks it). */
int vox_audio_probe(const char *path);
int vox_resample(const float *in, int64_t n, int in_rate, int out_rate, float **out,
                 int64_t *nout);

#ifdef __cplusplus
}
#endif

/* decoded tokens to text, words, segments, subtitles: voxtral_text.h */
#include "voxtral_text.h"
#endif
