/* voxtral_internal.h - what the engine's files share: config, weights, tokenizer,
 * the model, the backend op table, audio, and the error channel (voxtral_error.h).
 *
 * Layout conventions (every backend follows them):
 *   - activations are fp32, row-major, one row per time step: x[M][D];
 *   - weights are [out][in] ("rows" = out, "cols" = in) as in the checkpoint;
 *   - positions are int32, absolute (they survive ring-buffer wrap-around);
 *   - KV caches and the audio-embedding buffer are rings: position p lives in
 *     slot p % cap.
 */
#ifndef VOXTRAL_INTERNAL_H
#define VOXTRAL_INTERNAL_H

#include <stddef.h>
#include <stdint.h>
#include "voxtral.h"
#include "voxtral_error.h"

/* ---- weights --------------------------------------------------------------- */
/* The dtype tag every weight carries. BF16 in the checkpoint; F16 only as a device
 * copy (the CUDA backend's pre-Ampere path); Q8 / Q4: quantized matrices in groups
 * of `group` columns with F16 scales (formats: voxtral_quant.h). */
typedef enum { VOX_DT_F32 = 0, VOX_DT_BF16 = 1, VOX_DT_F16 = 2, VOX_DT_Q8 = 3, VOX_DT_Q4 = 4 } vox_dtype;

typedef struct {
    vox_dtype dtype;
    int64_t rows, cols; /* matrices [out][in]; vectors rows = n, cols = 1;
                           conv weights [out][in * kernel] (flattened, as stored) */
    const void *data;   /* host copy: mmap'd checkpoint (BF16) or loader-owned (F32) */
    void *dev;          /* backend copy (CUDA device pointer), NULL for the CPU */
    vox_dtype dev_dtype; /* dtype of the backend copy, set with dev: the CUDA backend
                            may convert BF16 to F16 or F32 (its GPU path) */
    /* Q8 / Q4 only (voxtral_quant.h): F16 scales [rows][groups] (Q8) or
     * [rows][groups][2] (scale, min) (Q4), host and backend copies; columns per group */
    const uint16_t *scales;
    void *dev_scales;
    int group;
} vox_weight;

static inline float vox_bf16_to_f32(uint16_t h) {
    union { uint32_t u; float f; } v;
    v.u = (uint32_t)h << 16;
    return v.f;
}

/* ---- config (every number comes from params.json / tekken.json) ------------ */
typedef struct {
    int dim, n_layers, head_dim, hidden_dim, n_heads, n_kv_heads;
    float rope_theta, norm_eps;
    int sliding_window; /* key j visible from query i iff i - window < j <= i */
    int use_biases;
} vox_tower_config;

typedef struct {
    vox_tower_config enc, dec;
    int vocab_size;
    int ada_t_cond;      /* delay-conditioned ada norm present */
    int ada_t_cond_dim;  /* its bottleneck (32) */
    int num_mel_bins, hop_length, window_size, sampling_rate;
    float frame_rate, global_log_mel_max;
    int downsample_factor;
    int conv_kernel;     /* 3, read from the conv weight shape */
    /* derived */
    int samples_per_token; /* sampling_rate / frame_rate (1280) */
    int mel_per_token;     /* samples_per_token / hop_length (8) */
    int ms_per_token;      /* 1000 / frame_rate (80), a whole number >= 1 */
} vox_config;

/* ---- tokenizer (tekken.json) ---------------------------------------------- */
typedef struct {
    int n_special;     /* ids < n_special are control tokens (no text) */
    int n_pieces;      /* text pieces: id n_special + i -> piece[i] */
    char *blob;        /* all piece bytes */
    int64_t *offset;   /* piece i = blob + offset[i], length offset[i+1] - offset[i] */
    int bos_id, eos_id, pad_id; /* "<s>", "</s>", "[STREAMING_PAD]" */
    int delay_ms;      /* audio.transcription_delay_ms (VOX_MIN..MAX_DELAY_MS), or 480 */
    int left_pad_tokens; /* audio.streaming_n_left_pad_tokens, or 32 */
} vox_tokenizer;

/* Transcription delays the model is trained for (--delay, tekken.json): keeps the
 * prompt length and every size derived from it small. */
enum { VOX_MIN_DELAY_MS = 80, VOX_MAX_DELAY_MS = 2400 };

int vox_tokenizer_load(vox_tokenizer *t, const char *path);
void vox_tokenizer_free(vox_tokenizer *t);
/* Bytes of id (NULL and *len = 0 for control ids and ids out of range). */
const char *vox_token_bytes(const vox_tokenizer *t, int id, int *len);

/* ---- model ----------------------------------------------------------------- */
typedef struct {
    vox_weight attn_norm, wq, bq, wk, wv, bv, wo, bo, ffn_norm, w1, w3, w2, b2;
} vox_enc_layer;

typedef struct {
    vox_weight attn_norm, wq, wk, wv, wo, ffn_norm, w1, w3, w2, ada0, ada2;
    vox_weight ffn_scale; /* F32 [dim]: 1 + ada(t_cond) for the current delay
                             (all ones without ada); set by vox_model_set_delay */
} vox_dec_layer;

typedef struct vox_model {
    vox_config cfg;
    vox_tokenizer tok;
    char path[4096];            /* consolidated.safetensors */
    void *map;
    size_t map_size;
    vox_weight conv0_w, conv0_b, conv1_w, conv1_b;
    vox_enc_layer *enc;
    vox_weight enc_norm;
    vox_weight adapter0, adapter2; /* [dec.dim][enc.dim*ds], [dec.dim][dec.dim] */
    vox_weight tok_emb;            /* [vocab][dec.dim], also the LM head */
    vox_weight dec_norm;
    vox_dec_layer *dec;
    float *f32_pool;               /* loader-owned F32 vectors (norms, biases, scales) */
    size_t f32_used, f32_cap;
    int delay_tokens;              /* delay the ffn_scale vectors were computed for */
    void *quant_pool;              /* quantized matrices made at load (--quant), or NULL */
    size_t quant_pool_bytes;
    vox_dtype qfmt, qenc;          /* the model's quantization: decoder + embedding, and
                                      encoder + adapter (BF16 when not quantized) */
    int qgroup;
} vox_model;

/* Loads params.json, tekken.json and consolidated.safetensors from dir; checks every
 * tensor's presence, dtype and shape against the config. Vectors (norms, biases) are
 * converted to F32; matrices stay BF16 in the mmap. */
int vox_model_load(vox_model *m, const char *dir);
void vox_model_free(vox_model *m);
/* Memory (bytes) a context needs, as vox_open checks it (voxtral.c). */
typedef struct { double weights, kv, workspace, per_stream; int streams; } vox_need;
vox_need vox_memory_need(const vox_model *m, int prompt_len, int chunk_tokens);
double vox_host_available(void); /* MemAvailable from /proc/meminfo, bytes (0 when unknown) */
/* A serving context's plan: `streams` streams with a decoder window of `window`
 * positions, KV elements of kv_bytes (4 or 2), each stream adding at most
 * stream_chunk_tokens to an encoder batch, decoder steps of up to max_batch rows.
 * kv = streams * per_stream (KV rings, audio ring, conv state); vox_open checks
 * weights + workspace + kv against free RAM / VRAM. */
vox_need vox_memory_plan(const vox_model *m, int prompt_len, int chunk_tokens, int streams,
                         int window, int kv_bytes, int stream_chunk_tokens, int max_batch);
/* encoder chunk sizes the backends use (audio tokens) */
enum { VOX_CPU_CHUNK_TOKENS = 64, VOX_CUDA_CHUNK_TOKENS = 128 };
/* a serving context runs up to this many streams' prompts in one decoder pass (and
 * no more than its max_batch: their heads share the logits' rows) */
enum { VOX_PREFILL_BATCH = 16 };
static inline int vox_prefill_batch(int max_batch) { return max_batch < VOX_PREFILL_BATCH ? max_batch : VOX_PREFILL_BATCH; }
/* (Re)computes every layer's ffn_scale for `delay_tokens` (voxtral.c). */
int vox_model_set_delay(vox_model *m, int delay_tokens);

/* ---- backend op table -------------------------------------------------------
 * The forward pass (voxtral.c) is written once over this table. All pointers
 * are backend memory (host for the CPU, device for CUDA). Ops only enqueue
 * work on the backend's single stream; nothing synchronises except download(),
 * sync() and wait_fence(). Every op has a CPU twin in voxtral_kernels.c that is its spec.
 *
 * The batch description of the ring ops (kv_store, attention, rope_attention, embed):
 * `slot` NULL = every row belongs to one stream whose ring starts at the pointer
 * given (a prefill, one stream's encoder chunk); else slot[i] (backend memory) is
 * row i's stream: its ring starts at base + slot[i] * cap * row_width (a KV pool,
 * voxtral_engine.h). Several rows may share a slot in kv_store and attention (an
 * encoder batch of several streams' chunks); rope_attention with a slot array
 * takes one row per stream (the batched decoder step: each row stores one key).
 * KV rings hold be->kv_dtype elements (VOX_DT_F32 or, where be->kv_bf16 says so,
 * VOX_DT_BF16: rounded to nearest even when stored, read back exactly). */
typedef enum { VOX_ACT_NONE = 0, VOX_ACT_GELU = 1 } vox_act;
enum { VOX_FENCES = 4 };

/* One stream's part of an encoder batch, for the ops that take every stream's part
 * in one launch (conv_cols, conv_keep, ring_append): an array in backend memory, in
 * batch order (row0 and tok0 ascending, each span's rows right after the last's). */
typedef struct {
    int32_t slot;         /* its pool slot: conv state and audio ring */
    int32_t row0, rows;   /* its mel rows in the batch (rows > 0, a multiple of 2) */
    int32_t reset;        /* 1: its conv context reads as zeros (a new segment) */
    int32_t tok0, tokens; /* its audio tokens in the batch */
    int32_t at;           /* ring row of its first token (n_audio % cap) */
    int32_t unused;
} vox_enc_span;

typedef struct vox_backend vox_backend;
struct vox_backend {
    const char *name;
    char device_name[128];
    void *impl;

    /* memory. alloc returns zeroed backend memory or NULL (error set); only
     * called when contexts/streams are created, never per token. */
    void *(*alloc)(vox_backend *be, size_t bytes);
    void (*free)(vox_backend *be, void *p);
    void (*upload)(vox_backend *be, void *dst, const void *src, size_t bytes);  /* src reusable on return */
    void (*download)(vox_backend *be, void *dst, const void *src, size_t bytes); /* waits for queued work */
    void (*copy)(vox_backend *be, void *dst, const void *src, size_t bytes);
    int (*sync)(vox_backend *be);                 /* 0, or -1 with the error set */
    /* Step outputs without a stall (the decoder queues a step behind the running one):
     * host_alloc gives host memory the device can copy into asynchronously (CUDA:
     * pinned; stream creation only); download_async enqueues a copy into it, then
     * marks fence k (0 <= k < VOX_FENCES); wait_fence waits for that mark: 0, or -1
     * with the error set. CPU: plain memory, the copy done at once. */
    void *(*host_alloc)(vox_backend *be, size_t bytes);
    void (*host_free)(vox_backend *be, void *p);
    void (*download_async)(vox_backend *be, void *dst, const void *src, size_t bytes, int fence);
    int (*wait_fence)(vox_backend *be, int fence);
    int (*upload_weights)(vox_backend *be, vox_model *m); /* sets w->dev (CPU: nothing) */
    void (*destroy)(vox_backend *be);
    /* Measured read bandwidth of the memory weights live in, GB/s (benchmarks:
     * the decoder step's floor is its weight bytes / this). May be NULL. */
    double (*measure_bandwidth)(vox_backend *be);
    size_t mem_bytes; /* backend memory held now (device backends: weights + buffers) */
    int verbose;      /* set by vox_open: 0 = no progress lines on stderr */
    int async;        /* 1: ops return before the work is done (CUDA): the decoder then
                         keeps a step queued behind the running one */
    int kv_bf16;      /* 1: the ring ops take kv_dtype = VOX_DT_BF16 */
    int graphs;       /* 1: graph_begin/end capture and graph_launch replays (CUDA) */
    vox_dtype kv_dtype; /* element type of the KV rings (set by vox_open) */
    /* Called on a thread before it first drives this backend (the serving
     * scheduler's thread: OpenMP team size, CUDA current device). May be NULL. */
    void (*thread_init)(vox_backend *be);
    int warm_up;      /* 1: vox_open runs a silent chunk through the model once, so the
                         first audio pays no one-time costs (GPU: kernel loading,
                         cuBLASLt algorithm choice, first launches) */
    /* This backend's failure: ops are void, so a failing op records its error here
     * (vox_err_set) and the next sync() / wait_fence() returns -1 with it. CUDA keeps
     * it (the device state is lost); the CPU clears it once reported. */
    vox_err err;

    /* y[M][w.rows] (= or, with accumulate, +=) act(x[M][w.cols] . w^T + b). b may be NULL. */
    void (*linear)(vox_backend *be, float *y, const float *x, const vox_weight *w,
                   const vox_weight *b, int M, vox_act act, int accumulate);
    /* y[i] = x[i] * rsqrt(mean(x[i]^2) + eps) * w (* scale if scale != NULL); y may be x. */
    void (*rmsnorm)(vox_backend *be, float *y, const float *x, const vox_weight *w,
                    const vox_weight *scale, int M, int D, float eps);
    /* In place, interleaved pairs (2j, 2j+1) of each head rotated by angle
     * pos[i] * inv_freq[j], inv_freq[j] = (float)(1 / theta^(2j/head_dim)), fp32 angle. */
    void (*rope)(vox_backend *be, float *x, const int32_t *pos, int M, int n_heads,
                 int head_dim, float theta);
    /* kc/vc[slot pos[i] % cap][kv_dim] = k/v[i][kv_dim] (rings of be->kv_dtype) */
    void (*kv_store)(vox_backend *be, void *kc, void *vc, const float *k, const float *v,
                     const int32_t *pos, const int32_t *slot, int M, int kv_dim, int cap);
    /* out[i][h*hd..] = softmax_j(q[i][h] . k[j][h/(Hq/Hkv)] / sqrt(hd)) v[j], over
     * positions j with pos[i] - window < j <= pos[i], j >= 0, read from the rings. */
    void (*attention)(vox_backend *be, float *out, const float *q, const void *kc,
                      const void *vc, const int32_t *pos, const int32_t *slot, int M, int n_heads,
                      int n_kv_heads, int head_dim, int cap, int window);
    /* h[i] = silu(g[i]) * u[i], n elements */
    void (*swiglu)(vox_backend *be, float *h, const float *g, const float *u, int64_t n);
    /* The conv stem's input over n streams' chunks (spans: vox_enc_span, backend memory).
     * Span j's input is its P = K - stride context rows of C at state + slot * sstride
     * (zeros when reset), then rows row0 .. row0 + rows - 1 of x; its rows / stride
     * outputs start at row row0 / stride: cols[row0 / stride + t][c*K + k] =
     * input[t*stride + k][c]. M: the outputs of all spans (1 <= stride <= K). */
    void (*conv_cols)(vox_backend *be, float *cols, const float *state, size_t sstride, const float *x,
                      const vox_enc_span *sp, int n, int M, int C, int K, int stride);
    /* The context's update, after the conv_cols that read it: span j's P rows become
     * the last P rows of its input (as conv_cols': context, then its x rows), in place. */
    void (*conv_keep)(vox_backend *be, float *state, size_t sstride, const float *x,
                      const vox_enc_span *sp, int n, int C, int P);
    /* ring[slot][(at + t) % cap] = x[tok0 + t] (rows of D), t < tokens, for every span
     * (rings of cap rows per slot); M: the tokens of all spans */
    void (*ring_append)(vox_backend *be, float *ring, const float *x, const vox_enc_span *sp, int n,
                        int M, int D, int cap);
    /* x[i] = emb[ids[i]] + audio[pos[i] % acap] (rows of D; audio rings per slot) */
    void (*embed)(vox_backend *be, float *x, const vox_weight *emb, const int32_t *ids,
                  const float *audio, const int32_t *pos, const int32_t *slot, int M, int D,
                  int acap);
    /* ids[i] = argmax_j logits[i][j] (lowest j on ties) */
    void (*argmax)(vox_backend *be, int32_t *ids, const float *logits, int M, int V);
    /* the k largest logits of each row, descending (ties: lower id first) */
    void (*topk)(vox_backend *be, int32_t *ids, float *vals, const float *logits, int M,
                 int V, int k);

    /* Fused ops of the decoder (each has a CPU twin that is the unfused sequence).
     * norm_linear: xn = rmsnorm(x; norm, scale, eps) (norm may be NULL: xn = x), then
     * for i < n_out (1..3): y[i][M][w[i].rows] = xn . w[i]^T. No bias. */
    void (*norm_linear)(vox_backend *be, int n_out, float *const *y, const float *x,
                        const vox_weight *const *w, const vox_weight *norm,
                        const vox_weight *scale, float eps, int M);
    /* y[M][w.rows] (= or +=) (silu(g) * u) . w^T; g, u [M][w.cols]. */
    void (*swiglu_linear)(vox_backend *be, float *y, const float *g, const float *u,
                          const vox_weight *w, int M, int accumulate);
    /* The decoder's attention core: rope(q, n_heads) and rope(k, n_kv_heads) at pos,
     * kv_store(k, v), then attention(out, q, ...). q and k are left unspecified. */
    void (*rope_attention)(vox_backend *be, float *out, float *q, float *k, const float *v,
                           void *kc, void *vc, const int32_t *pos, const int32_t *slot, int M,
                           int n_heads, int n_kv_heads, int head_dim, float theta, int cap,
                           int window);

    /* Graphs for the decoder step (CUDA); the CPU returns 0 and does nothing.
     * graph_launch: replays the graph captured under `key`, returns 1, or 0 if none.
     * graph_begin/graph_end bracket the ops to capture (they run as well). */
    int (*graph_launch)(vox_backend *be, int key);
    void (*graph_begin)(vox_backend *be, int key);
    void (*graph_end)(vox_backend *be, int key);
};

vox_backend *vox_cpu_backend_new(int threads);
/* voxtral_cuda.c (or voxtral_nocuda.c when built without CUDA): NULL + error if no
 * usable device; `need_bytes` is checked against free device memory first.
 * gpu_path: NULL or "auto" (bf16 from compute capability 8.0, else fp16), "bf16",
 * "fp16" or "fp32": the dtype matrices get on the device (vox_options.gpu_path). */
vox_backend *vox_cuda_backend_new(size_t need_bytes, const char *gpu_path);
int vox_cuda_available(void); /* 1 when built with CUDA and a device is present */

/* ---- test taps (voxtral.c) ---------------------------------------------------
 * Hands each stage's rows to `fn` as they are computed (downloaded to the host):
 * "mel" [frames][n_mel], "conv" and "enc" [frames][enc_dim], "adapter" [tokens][dim],
 * "logits" [1][vocab] per decoded id. For tests and debugging; slow. On a serving
 * context a segment's first prefix tokens (the shared left pad, voxtral_sched.c) have
 * no mel, conv, enc or adapter rows. */
typedef void (*vox_tap_fn)(void *user, const char *stage, const float *rows, int n_rows, int width);
int vox_stream_set_tap(vox_stream *s, vox_tap_fn fn, void *user);
/* The context's backend (tests inject backend failures through it). */
vox_backend *vox_ctx_backend(vox_ctx *ctx);

/* ---- audio files (voxtral_audiofile.c): the API is public (voxtral.h) ------------ */
extern int64_t vox_audio_max_samples; /* 2^30 (4 GiB of floats; 18.6 h at 16 kHz); tests lower it */

/* ---- log-mel (voxtral_audio.c) ------------------------------------------------ */

/* Log-mel spectrogram exactly as the reference feature extractor: periodic Hann
 * window_size, hop, reflect-centred STFT, last frame dropped, Slaney mel
 * filterbank 0..rate/2, log10(max(., 1e-10)), floor global_log_mel_max - 8,
 * (x + 4) / 4. Frames are rows: out[t][n_mel]. */
typedef struct vox_mel vox_mel;
vox_mel *vox_mel_new(const vox_config *cfg);
void vox_mel_free(vox_mel *m);
/* Offline: n samples (already padded as the model wants) -> n / hop frames. */
int vox_mel_compute(vox_mel *m, const float *x, int64_t n, float *out);
/* Incremental, bounded memory; gives exactly vox_mel_compute's frames for the
 * signal zeros(left_pad) ++ pushed samples ++ zeros(right_pad). */
int vox_mel_begin(vox_mel *m, int64_t left_pad);
int vox_mel_push(vox_mel *m, const float *x, int64_t n);
int vox_mel_end(vox_mel *m, int64_t right_pad); /* after it, the remaining frames */
int64_t vox_mel_ready(const vox_mel *m);       /* frames that can be read now */
int64_t vox_mel_read(vox_mel *m, float *out, int64_t max_frames);
/* As vox_mel_read without computing the frames (a prefix whose rows come from
 * elsewhere): the frames skipped */
int64_t vox_mel_skip(vox_mel *m, int64_t max_frames);
/* Frames of a stream's mel that depend on its left pad alone (their window lies in
 * the pad's zeros and their reflection), the same for every stream */
int64_t vox_mel_pad_frames(const vox_config *cfg, int64_t left_pad);

#endif
