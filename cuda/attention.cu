/* cuda/attention.cu - causal sliding-window GQA over the ring KV caches, fp32 math
 * over rings of fp32 or BF16 elements (the kernels' template parameter KV, cuda/kv.cuh:
 * read widened to fp32; the fused form's new key and value are rounded as the ring
 * stores them before use). CPU twins: cpu_attention, cpu_rope_attention
 * (voxtral_kernels.c). Row i (query position p = pos[i], read on the device) sees
 * keys j with max(0, p - window + 1, p - cap + 1) <= j <= p, key j living in ring
 * slot j % cap.
 *
 * attention_split ("flash-decoding", few rows: the decoder step): the visible
 * keys are cut into 32-key chunks dealt round-robin to nb blocks per (kv head,
 * row), ~2 blocks per SM; a block handles all the q heads of its group and keeps
 * one running softmax. Partials (max, sum, unnormalised output) go to a scratch;
 * the last block of a (row, kv head) to finish (an atomic ticket per pair, reset
 * by that block) combines them, in a fixed order: one launch, deterministic. The
 * kernel reads the row's position on the device, and blocks without a chunk exit
 * at once, so a captured graph stays valid as the position moves. Its fused form
 * (rope_attention, one new key per row) also rotates q and the new key, block 0
 * stores the new key and value in the rings, and every block uses the new key in
 * place of its ring slot.
 *
 * attention_rows (many rows: encoder chunks, prefill, batched prompts): a warp owns
 * 8 query rows of one head (4 with a slot array: several streams' rows) and reads
 * each key and value once for all of them (lanes over keys for the scores, over
 * dims for the values), online softmax; with a slot array it walks each run of one
 * slot's rows over that slot's keys.
 *
 * attention_generic (any head_dim <= 256, any group size: the tiny test models):
 * one block per (row, head), two passes over the keys (max, then exp-weighted sum).
 * Correct and simple; not tuned.
 */
#include <math.h>

#include "voxtral_cuda.h"
#include "kv.cuh"

__device__ __forceinline__ int first_key(int p, int window, int cap) {
    int lo = p - window + 1;
    if (lo < 0) lo = 0;
    if (lo < p - cap + 1) lo = p - cap + 1;
    return lo;
}

/* DPL = head_dim / 32 values per lane, loaded by kv_load_vec (cuda/kv.cuh) */
__device__ __forceinline__ float warp_sum(float v) {
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
    return v;
}

/* ---- split over keys ------------------------------------------------------------ */
/* A chunk is 32 consecutive keys, 8 per warp. Block b of nb takes chunks b, b + nb,
 * ... of its (row, kv head), keeping one running softmax, and loads the next
 * chunk while it computes the current one. */
enum { SPLIT_WARPS = 4, SPLIT_BATCH = 8, SPLIT_CHUNK = SPLIT_WARPS * SPLIT_BATCH,
       SPLIT_MAX_NB = 128 /* blocks per (row, kv head): the combine's weights in shared memory */ };

template <int DPL, typename KV>
__device__ __forceinline__ void load_chunk(float (&kr)[SPLIT_BATCH][DPL], float (&vr)[SPLIT_BATCH][DPL],
                                           const KV *kc, const KV *vc, int64_t base,
                                           int kv_dim, int koff, int j0, int p, int cap) {
#pragma unroll
    for (int u = 0; u < SPLIT_BATCH; u++) {
        int j = j0 + u * SPLIT_WARPS;
        if (j > p) j = p; /* past the end: a valid key, masked later */
        int64_t off = base + (int64_t)(j % cap) * kv_dim + koff;
        kv_load_vec<DPL>(kr[u], kc + off);
        kv_load_vec<DPL>(vr[u], vc + off);
    }
}

/* interleaved RoPE of a lane's DPL consecutive values of a head (dims lane * DPL..):
 * pairs (2j, 2j+1) rotated by p * inv_freq[j]; with DPL = 1 a pair spans two lanes.
 * The cosines and sines depend on the lane only: computed once, used for every head. */
template <int DPL> struct lane_rot {
    float c[(DPL + 1) / 2], s[(DPL + 1) / 2];
};

template <int DPL>
__device__ __forceinline__ lane_rot<DPL> lane_angles(int p, const vox_cuda_inv_freq &f, int lane) {
    lane_rot<DPL> r;
#pragma unroll
    for (int t = 0; t < (DPL + 1) / 2; t++) {
        float ang = (float)p * f.f[DPL == 1 ? lane >> 1 : (lane * DPL >> 1) + t];
        r.c[t] = cosf(ang);
        r.s[t] = sinf(ang);
    }
    return r;
}

template <int DPL>
__device__ __forceinline__ void rope_lane(float (&x)[DPL], const lane_rot<DPL> &r, int lane) {
    if constexpr (DPL == 1) {
        float other = __shfl_xor_sync(0xffffffffu, x[0], 1);
        x[0] = (lane & 1) ? x[0] * r.c[0] + other * r.s[0] : x[0] * r.c[0] - other * r.s[0];
    } else {
#pragma unroll
        for (int t = 0; t < DPL / 2; t++) {
            float a = x[2 * t], b = x[2 * t + 1];
            x[2 * t] = a * r.c[t] - b * r.s[t];
            x[2 * t + 1] = b * r.c[t] + a * r.s[t];
        }
    }
}

/* ROPE: the fused decoder form (one new key per row: M = 1, or rows that are
 * streams): q and the row's new key arrive un-rotated; every block rotates its q
 * heads and the new key in registers and uses that key in place of ring slot p;
 * block 0 also stores the rotated key and the value in the rings. */
template <int DPL, int G, bool ROPE, typename KV>
__global__ void __launch_bounds__(SPLIT_WARPS * 32)
attn_split_kernel(float *out, float *part, int *tickets, const float *q, const KV *kc,
                  const KV *vc, const int32_t *pos, int n_heads, int n_kv_heads, int cap,
                  int window, const int32_t *slot, int nb, const float *knew, const float *vnew,
                  vox_cuda_inv_freq rope) {
    constexpr int HD = DPL * 32;
    __shared__ float sm[SPLIT_WARPS][G], sl[SPLIT_WARPS][G], sacc[SPLIT_WARPS][G][HD];
    __shared__ float cf[G][SPLIT_MAX_NB], sL[G];
    __shared__ int last_s;
    /* the fused form reads its first keys before waiting for the projections: the
     * rings hold earlier steps' keys only (slot p is replaced by the new key), and
     * positions are uploaded before a step's kernels run; the plain form's rings
     * were just written by rope_kv_store */
    if constexpr (!ROPE) {
        pdl_wait();
        pdl_trigger();
    }
    const int b = blockIdx.x, kh = blockIdx.y, i = blockIdx.z;
    const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
    const int p = pos[i];
    const int lo = first_key(p, window, cap);
    const int nchunks = (p - lo + SPLIT_CHUNK) / SPLIT_CHUNK;
    if (b >= nchunks) return; /* the combine reads min(nb, nchunks) partials */
    const int kv_dim = n_kv_heads * HD, koff = kh * HD + lane * DPL;
    const int64_t base = slot ? (int64_t)slot[i] * cap * kv_dim : 0;
    const float scale = rsqrtf((float)HD);

    float kr[SPLIT_BATCH][DPL], vr[SPLIT_BATCH][DPL];
    if constexpr (ROPE) {
        load_chunk<DPL>(kr, vr, kc, vc, base, kv_dim, koff, lo + b * SPLIT_CHUNK + warp, p, cap);
        pdl_wait();
        pdl_trigger();
    }
    float qr[G][DPL], acc[G][DPL], m[G], l[G];
    float k1[DPL], v1[DPL]; /* ROPE: the new key (rotated) and value, this lane's part */
    lane_rot<DPL> rot;
    if constexpr (ROPE) {
        rot = lane_angles<DPL>(p, rope, lane);
        kv_load_vec<DPL>(k1, knew + (int64_t)i * kv_dim + koff);
        kv_load_vec<DPL>(v1, vnew + (int64_t)i * kv_dim + koff);
        rope_lane<DPL>(k1, rot, lane);
#pragma unroll
        for (int d = 0; d < DPL; d++) { /* as the rings give them back (BF16: rounded) */
            k1[d] = kv_round<KV>(k1[d]);
            v1[d] = kv_round<KV>(v1[d]);
        }
        if (b == 0 && warp == 0) { /* the rings are written only here (the fused form) */
            const int64_t at = base + (int64_t)(p % cap) * kv_dim + koff;
#pragma unroll
            for (int d = 0; d < DPL; d++) { /* exact: k1, v1 are KV values */
                kv_put(const_cast<KV *>(kc) + at + d, k1[d]);
                kv_put(const_cast<KV *>(vc) + at + d, v1[d]);
            }
        }
    }
#pragma unroll
    for (int g = 0; g < G; g++) {
        kv_load_vec<DPL>(qr[g], q + ((int64_t)i * n_heads + kh * G + g) * HD + lane * DPL);
        if constexpr (ROPE) rope_lane<DPL>(qr[g], rot, lane);
        m[g] = -INFINITY;
        l[g] = 0.0f;
#pragma unroll
        for (int d = 0; d < DPL; d++) acc[g][d] = 0.0f;
    }
    if constexpr (!ROPE)
        load_chunk<DPL>(kr, vr, kc, vc, base, kv_dim, koff, lo + b * SPLIT_CHUNK + warp, p, cap);
    for (int c = b; c < nchunks; c += nb) {
        const int j0 = lo + c * SPLIT_CHUNK + warp;
        float kn[SPLIT_BATCH][DPL], vn[SPLIT_BATCH][DPL];
        if (c + nb < nchunks)
            load_chunk<DPL>(kn, vn, kc, vc, base, kv_dim, koff, j0 + nb * SPLIT_CHUNK, p, cap);
#pragma unroll
        for (int g = 0; g < G; g++) {
            float sc[SPLIT_BATCH];
            float mx = m[g];
#pragma unroll
            for (int u = 0; u < SPLIT_BATCH; u++) {
                float d0 = 0.0f;
                const bool fresh = ROPE && j0 + u * SPLIT_WARPS == p; /* the new key */
#pragma unroll
                for (int d = 0; d < DPL; d++) d0 += qr[g][d] * (fresh ? k1[d] : kr[u][d]);
                float sv = warp_sum(d0) * scale;
                sc[u] = j0 + u * SPLIT_WARPS <= p ? sv : -INFINITY;
                mx = fmaxf(mx, sc[u]);
            }
            if (mx == -INFINITY) continue; /* this warp has no key in this chunk */
            float corr = expf(m[g] - mx); /* m = -inf at first: 0 */
            l[g] *= corr;
#pragma unroll
            for (int d = 0; d < DPL; d++) acc[g][d] *= corr;
#pragma unroll
            for (int u = 0; u < SPLIT_BATCH; u++) {
                float e = expf(sc[u] - mx);
                l[g] += e;
                const bool fresh = ROPE && j0 + u * SPLIT_WARPS == p;
#pragma unroll
                for (int d = 0; d < DPL; d++) acc[g][d] += e * (fresh ? v1[d] : vr[u][d]);
            }
            m[g] = mx;
        }
#pragma unroll
        for (int u = 0; u < SPLIT_BATCH; u++)
#pragma unroll
            for (int d = 0; d < DPL; d++) {
                kr[u][d] = kn[u][d];
                vr[u][d] = vn[u][d];
            }
    }
#pragma unroll
    for (int g = 0; g < G; g++) {
        if (lane == 0) {
            sm[warp][g] = m[g];
            sl[warp][g] = l[g];
        }
#pragma unroll
        for (int d = 0; d < DPL; d++) sacc[warp][g][lane * DPL + d] = acc[g][d];
    }
    __syncthreads();
    for (int t = threadIdx.x; t < G * HD; t += blockDim.x) {
        int g = t / HD, d = t - g * HD;
        float mx = -INFINITY;
        for (int w = 0; w < SPLIT_WARPS; w++) mx = fmaxf(mx, sm[w][g]);
        float L = 0.0f, A = 0.0f;
        for (int w = 0; w < SPLIT_WARPS; w++) {
            if (sm[w][g] == -INFINITY) continue; /* a warp that saw no key */
            float c = expf(sm[w][g] - mx);
            L += sl[w][g] * c;
            A += sacc[w][g][d] * c;
        }
        float *o = part + (((int64_t)i * n_heads + kh * G + g) * nb + b) * (HD + 2);
        if (d == 0) {
            o[0] = mx;
            o[1] = L;
        }
        o[2 + d] = A;
    }
    /* the last block of (row, kv head) combines: partials visible, then the ticket */
    const int nvalid = nchunks < nb ? nchunks : nb;
    __threadfence();
    __syncthreads();
    if (threadIdx.x == 0) {
        int *t = tickets + (int64_t)i * n_kv_heads + kh;
        last_s = atomicAdd(t, 1) == nvalid - 1;
        if (last_s) *t = 0; /* ready for the next launch */
    }
    __syncthreads();
    if (!last_s) return;
    __threadfence();
    /* the weights exp(m_s - mx) and the sum L of each q head once (warp g), then the
     * outputs with many independent L2 loads in flight (the serial per-output loops
     * over the partials made this latency-bound) */
    for (int g = warp; g < G; g += SPLIT_WARPS) {
        const float *ph = part + ((int64_t)i * n_heads + kh * G + g) * nb * (HD + 2);
        float mx = -INFINITY;
        for (int s = lane; s < nvalid; s += 32) mx = fmaxf(mx, __ldcg(ph + (int64_t)s * (HD + 2)));
#pragma unroll
        for (int o = 16; o > 0; o >>= 1) mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, o));
        float L = 0.0f;
        for (int s = lane; s < nvalid; s += 32) { /* L2 reads: other blocks wrote these */
            const float *o = ph + (int64_t)s * (HD + 2);
            float c = expf(__ldcg(o) - mx);
            cf[g][s] = c;
            L += __ldcg(o + 1) * c;
        }
        L = warp_sum(L);
        if (lane == 0) sL[g] = L;
    }
    __syncthreads();
    constexpr int PER = (G * HD + SPLIT_WARPS * 32 - 1) / (SPLIT_WARPS * 32);
    float A[PER];
#pragma unroll
    for (int k = 0; k < PER; k++) A[k] = 0.0f;
#pragma unroll 4
    for (int s = 0; s < nvalid; s++) {
#pragma unroll
        for (int k = 0; k < PER; k++) {
            int t = threadIdx.x + k * SPLIT_WARPS * 32;
            if (t < G * HD) {
                int g = t / HD, d = t - g * HD;
                const float *o = part + (((int64_t)i * n_heads + kh * G + g) * nb + s) * (HD + 2);
                A[k] += __ldcg(o + 2 + d) * cf[g][s];
            }
        }
    }
#pragma unroll
    for (int k = 0; k < PER; k++) {
        int t = threadIdx.x + k * SPLIT_WARPS * 32;
        if (t < G * HD) {
            int g = t / HD, d = t - g * HD;
            out[((int64_t)i * n_heads + kh * G + g) * HD + d] = A[k] / sL[g];
        }
    }
}

/* ---- generic: any head_dim <= GEN_THREADS ------------------------------------------ */
enum { GEN_THREADS = 256 };

__device__ __forceinline__ float block_max(float v, float *red) {
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o));
    if ((threadIdx.x & 31) == 0) red[threadIdx.x >> 5] = v;
    __syncthreads();
    v = red[0];
    for (int w = 1; w < GEN_THREADS / 32; w++) v = fmaxf(v, red[w]);
    return v;
}

/* grid (n_heads, M); dynamic shared memory: head_dim + GEN_THREADS floats */
template <typename KV>
__global__ void __launch_bounds__(GEN_THREADS)
attn_generic_kernel(float *out, const float *q, const KV *kc, const KV *vc,
                    const int32_t *pos, int n_heads, int n_kv_heads, int head_dim, int cap,
                    int window, const int32_t *slot) {
    extern __shared__ float sh[];
    __shared__ float red[GEN_THREADS / 32];
    pdl_wait();
    pdl_trigger();
    const int h = blockIdx.x, i = blockIdx.y, tid = threadIdx.x;
    const int kv_dim = n_kv_heads * head_dim;
    const int64_t koff = (slot ? (int64_t)slot[i] * cap * kv_dim : 0) +
                         (int64_t)(h / (n_heads / n_kv_heads)) * head_dim;
    const int p = pos[i], lo = first_key(p, window, cap), n = p - lo + 1;
    const float scale = 1.0f / sqrtf((float)head_dim);
    float *qs = sh, *es = sh + head_dim;
    for (int d = tid; d < head_dim; d += GEN_THREADS) qs[d] = q[((int64_t)i * n_heads + h) * head_dim + d];
    __syncthreads();
    auto score = [&](int j) {
        const KV *kj = kc + koff + (int64_t)(j % cap) * kv_dim;
        float s = 0.0f;
        for (int d = 0; d < head_dim; d++) s += qs[d] * kv_get(kj + d);
        return s * scale;
    };
    float mx = -INFINITY;
    for (int t = tid; t < n; t += GEN_THREADS) mx = fmaxf(mx, score(lo + t));
    mx = block_max(mx, red);
    float acc = 0.0f, L = 0.0f; /* thread d < head_dim owns out[d] */
    for (int j0 = 0; j0 < n; j0 += GEN_THREADS) {
        es[tid] = j0 + tid < n ? expf(score(lo + j0 + tid) - mx) : 0.0f;
        __syncthreads();
        const int cnt = n - j0 < GEN_THREADS ? n - j0 : GEN_THREADS;
        if (tid < head_dim)
            for (int u = 0; u < cnt; u++) {
                L += es[u];
                acc += es[u] * kv_get(vc + koff + (int64_t)((lo + j0 + u) % cap) * kv_dim + tid);
            }
        __syncthreads();
    }
    if (tid < head_dim) out[((int64_t)i * n_heads + h) * head_dim + tid] = acc / L;
}

template <typename KV>
static int attention_generic(float *out, const float *q, const KV *kc, const KV *vc,
                             const int32_t *pos, int M, int n_heads, int n_kv_heads, int head_dim,
                             int cap, int window, const int32_t *slot, cudaStream_t st) {
    if (head_dim < 1 || head_dim > GEN_THREADS) return -1;
    vox_launch(VOX_PDL_ATTN, attn_generic_kernel<KV>, dim3(n_heads, M), GEN_THREADS,
               sizeof(float) * (head_dim + GEN_THREADS), st, out, q, kc, vc, pos, n_heads,
               n_kv_heads, head_dim, cap, window, slot);
    return 0;
}

template <int DPL, bool ROPE, typename KV>
static int launch_split(float *out, float *part, int *tickets, const float *q, const KV *kc,
                        const KV *vc, const int32_t *pos, int M, int n_heads, int n_kv_heads,
                        int cap, int window, const int32_t *slot, int nb, const float *knew,
                        const float *vnew, const vox_cuda_inv_freq &rope, cudaStream_t st) {
    dim3 grid(nb, n_kv_heads, M), block(SPLIT_WARPS * 32);
#define SPLIT_ARGS grid, block, 0, st, out, part, tickets, q, kc, vc, pos, n_heads, n_kv_heads, cap, \
                   window, slot, nb, knew, vnew, rope
    switch (n_heads / n_kv_heads) {
    case 1: vox_launch(VOX_PDL_ATTN, attn_split_kernel<DPL, 1, ROPE, KV>, SPLIT_ARGS); break;
    case 2: vox_launch(VOX_PDL_ATTN, attn_split_kernel<DPL, 2, ROPE, KV>, SPLIT_ARGS); break;
    case 4: vox_launch(VOX_PDL_ATTN, attn_split_kernel<DPL, 4, ROPE, KV>, SPLIT_ARGS); break;
    default: return -1;
    }
#undef SPLIT_ARGS
    return 0;
}

template <bool ROPE, typename KV>
static int split_of(int head_dim, float *out, float *part, int *tickets, const float *q,
                    const KV *kc, const KV *vc, const int32_t *pos, int M, int n_heads,
                    int n_kv_heads, int cap, int window, const int32_t *slot, int nb,
                    const float *knew, const float *vnew, const vox_cuda_inv_freq &rope,
                    cudaStream_t st) {
    switch (head_dim) {
    case 32: return launch_split<1, ROPE, KV>(out, part, tickets, q, kc, vc, pos, M, n_heads, n_kv_heads, cap, window, slot, nb, knew, vnew, rope, st);
    case 64: return launch_split<2, ROPE, KV>(out, part, tickets, q, kc, vc, pos, M, n_heads, n_kv_heads, cap, window, slot, nb, knew, vnew, rope, st);
    case 128: return launch_split<4, ROPE, KV>(out, part, tickets, q, kc, vc, pos, M, n_heads, n_kv_heads, cap, window, slot, nb, knew, vnew, rope, st);
    default: return -1;
    }
}

template <typename KV>
static int attention_split(float *out, const float *q, const KV *kc, const KV *vc,
                           const int32_t *pos, int M, int n_heads, int n_kv_heads, int head_dim,
                           int cap, int window, const int32_t *slot, const float *knew,
                           const float *vnew, const vox_cuda_inv_freq *rope, float *part,
                           int64_t part_floats, int *tickets, int n_tickets, int n_sm,
                           cudaStream_t st) {
    if (n_kv_heads <= 0 || n_heads % n_kv_heads) return -1;
    /* more rows than tickets (a batch of several streams' encoder chunks): the generic
     * kernel, which reads each row's ring through slot as well */
    if ((int64_t)M * n_kv_heads > n_tickets)
        return rope ? -1 : attention_generic(out, q, kc, vc, pos, M, n_heads, n_kv_heads, head_dim,
                                             cap, window, slot, st);
    if (rope && M > 1 && !slot) return -1; /* one new key per row only */
    /* about two blocks per SM when the window is full; never more than its chunks */
    const int max_keys = window < cap ? window : cap;
    int nb = (2 * n_sm + n_kv_heads * M - 1) / (n_kv_heads * M);
    int max_chunks = (max_keys + SPLIT_CHUNK - 1) / SPLIT_CHUNK;
    if (nb > max_chunks) nb = max_chunks;
    if (nb > SPLIT_MAX_NB) nb = SPLIT_MAX_NB;
    while (nb > 1 && (int64_t)M * n_heads * nb * (head_dim + 2) > part_floats) nb /= 2;
    if (nb < 1 || (int64_t)M * n_heads * nb * (head_dim + 2) > part_floats)
        return rope ? -1 : attention_generic(out, q, kc, vc, pos, M, n_heads, n_kv_heads, head_dim,
                                             cap, window, slot, st);
    if (rope) /* no generic fallback: the caller runs rope_kv_store + attention instead */
        return split_of<true, KV>(head_dim, out, part, tickets, q, kc, vc, pos, M, n_heads, n_kv_heads,
                              cap, window, slot, nb, knew, vnew, *rope, st);
    const vox_cuda_inv_freq none = {};
    if (split_of<false, KV>(head_dim, out, part, tickets, q, kc, vc, pos, M, n_heads, n_kv_heads, cap,
                        window, slot, nb, NULL, NULL, none, st) == 0)
        return 0;
    return attention_generic(out, q, kc, vc, pos, M, n_heads, n_kv_heads, head_dim, cap, window,
                             slot, st);
}

extern "C" int vox_cuda_attention_split(float *out, const float *q, const void *kc, const void *vc,
                                        int kv_type, const int32_t *pos, int M, int n_heads,
                                        int n_kv_heads, int head_dim, int cap, int window,
                                        const int32_t *slot, const float *knew, const float *vnew,
                                        const vox_cuda_inv_freq *rope, float *part,
                                        int64_t part_floats, int *tickets, int n_tickets, int n_sm,
                                        cudaStream_t st) {
    if (kv_type == VOX_CUDA_BF16)
        return attention_split(out, q, (const kv_bf16 *)kc, (const kv_bf16 *)vc, pos, M, n_heads,
                               n_kv_heads, head_dim, cap, window, slot, knew, vnew, rope, part,
                               part_floats, tickets, n_tickets, n_sm, st);
    if (kv_type != VOX_CUDA_F32) return -1;
    return attention_split(out, q, (const float *)kc, (const float *)vc, pos, M, n_heads, n_kv_heads,
                           head_dim, cap, window, slot, knew, vnew, rope, part, part_floats, tickets,
                           n_tickets, n_sm, st);
}

/* ---- rows over keys (many rows: encoder chunks, prompts, batched streams) ----------
 * A warp owns R consecutive query rows of one head; its 32 lanes take 32 keys at a
 * time: lane j the dot products of key j (read from the ring straight into registers,
 * 8 elements a load) with the R rows (staged in shared memory, broadcast reads),
 * then one online softmax per row across the warp, then the probabilities (shared
 * memory) times V with lane l owning dims l * DPL .. : each key and value read once
 * for all R rows, fp32 math throughout, R independent dot-product chains per lane.
 * With a slot array a warp's rows may belong to several streams: it takes them in
 * runs of one slot (consecutive rows) and walks each run's keys once; a slot that
 * recurs after another gets a run of its own (correct for any order, fastest when
 * each stream's rows are together: an encoder batch, 4 frames per token). The
 * earlier kernel (16 rows a block over shared-memory key tiles, two shared loads per
 * FMA) ran 364 us a layer for one stream's 512 frames on an H200, and 467 us (4.7x
 * its key bytes' bound) for 128 streams x 4 frames at 400 frames of context; this
 * one 288 us and 230 us (2.3x; bench/cuda_encoder.c). A form that loaded each whole
 * key ahead (the next tile's in flight during this one's softmax, 16 values a batch)
 * took 126 registers instead of 88 and ran 377 us: fewer warps hid less latency. */
enum { ROWS_WARPS = 4 };

template <int HD, int R, typename KV>
__global__ void __launch_bounds__(ROWS_WARPS * 32)
attn_rows_kernel(float *out, const float *q, const KV *kc, const KV *vc, const int32_t *pos,
                 const int32_t *slot, int M, int n_heads, int n_kv_heads, int cap, int window) {
    constexpr int DPL = HD / 32;
    __shared__ __align__(16) float Qs[ROWS_WARPS][R][HD];
    __shared__ __align__(16) float Ps[ROWS_WARPS][32][R];
    pdl_wait();
    pdl_trigger();
    const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
    const int r0 = (blockIdx.x * ROWS_WARPS + warp) * R;
    if (r0 >= M) return; /* no block-wide barrier below: a warp may leave */
    const int h = blockIdx.y, kh = h / (n_heads / n_kv_heads);
    const int nr = M - r0 < R ? M - r0 : R;
    const int kv_dim = n_kv_heads * HD;
    const float scale = rsqrtf((float)HD);
    float(*qs)[HD] = Qs[warp];
    for (int t = lane; t < R * HD; t += 32) {
        const int r = t / HD, d = t - r * HD;
        qs[r][d] = r < nr ? q[((int64_t)(r0 + r) * n_heads + h) * HD + d] * scale : 0.0f;
    }
    int p[R], lo[R], sl[R];
#pragma unroll
    for (int r = 0; r < R; r++) {
        p[r] = r < nr ? pos[r0 + r] : -1;
        lo[r] = r < nr ? first_key(p[r], window, cap) : 0x7fffffff;
        sl[r] = r < nr ? (slot ? slot[r0 + r] : 0) : -1;
    }
    __syncwarp();
    float m[R], l[R], acc[R][DPL];
#pragma unroll
    for (int r = 0; r < R; r++) {
        m[r] = -INFINITY;
        l[r] = 0.0f;
#pragma unroll
        for (int t = 0; t < DPL; t++) acc[r][t] = 0.0f;
    }
    for (int a = 0; a < nr;) {
        /* the run [a, b) of one slot: per-row registers are read by unrolled index */
        int sa = 0;
#pragma unroll
        for (int r = 0; r < R; r++)
            if (r == a) sa = sl[r];
        int b = a;
        bool in[R];
        int kmin = 0x7fffffff, kmax = -1;
#pragma unroll
        for (int r = 0; r < R; r++) {
            in[r] = r >= a && r == b && sl[r] == sa;
            if (in[r]) {
                b++;
                kmin = min(kmin, lo[r]);
                kmax = max(kmax, p[r]);
            }
        }
        const KV *kb = kc + (int64_t)sa * cap * kv_dim + kh * HD;
        const KV *vb = vc + (int64_t)sa * cap * kv_dim + kh * HD + lane * DPL;
        for (int j0 = kmin; j0 <= kmax; j0 += 32) {
            const int j = j0 + lane;
            const int jc = j <= kmax ? j : kmax; /* past the last key: a valid address */
            const KV *kj = kb + (int64_t)(jc % cap) * kv_dim;
            float s[R];
#pragma unroll
            for (int r = 0; r < R; r++) s[r] = 0.0f;
#pragma unroll
            for (int c = 0; c < HD; c += 8) {
                float kf[8];
                kv_load_vec<8>(kf, kj + c);
#pragma unroll
                for (int r = 0; r < R; r++) {
                    const float4 q0 = *reinterpret_cast<const float4 *>(&qs[r][c]);
                    const float4 q1 = *reinterpret_cast<const float4 *>(&qs[r][c + 4]);
                    s[r] = fmaf(q0.x, kf[0], s[r]); s[r] = fmaf(q0.y, kf[1], s[r]);
                    s[r] = fmaf(q0.z, kf[2], s[r]); s[r] = fmaf(q0.w, kf[3], s[r]);
                    s[r] = fmaf(q1.x, kf[4], s[r]); s[r] = fmaf(q1.y, kf[5], s[r]);
                    s[r] = fmaf(q1.z, kf[6], s[r]); s[r] = fmaf(q1.w, kf[7], s[r]);
                }
            }
            bool any = false;
#pragma unroll
            for (int r = 0; r < R; r++) {
                float e = 0.0f;
                if (in[r]) { /* warp-uniform */
                    const bool vis = j <= kmax && j >= lo[r] && j <= p[r];
                    const float sv = vis ? s[r] : -INFINITY;
                    float mx = sv;
#pragma unroll
                    for (int o = 16; o > 0; o >>= 1) mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, o));
                    const float mn = fmaxf(m[r], mx);
                    if (mn != -INFINITY) { /* else: no visible key yet for this row */
                        const float corr = expf(m[r] - mn);
                        e = vis ? expf(sv - mn) : 0.0f;
                        l[r] = l[r] * corr + warp_sum(e);
#pragma unroll
                        for (int t = 0; t < DPL; t++) acc[r][t] *= corr;
                        m[r] = mn;
                    }
                    any |= vis;
                }
                Ps[warp][lane][r] = e;
            }
            const unsigned vis_keys = __ballot_sync(0xffffffffu, any);
            __syncwarp();
            const int nk = kmax - j0 + 1 < 32 ? kmax - j0 + 1 : 32;
#pragma unroll 8
            for (int u = 0; u < nk; u++) {
                float v[DPL];
                kv_load_vec<DPL>(v, vb + (int64_t)((j0 + u) % cap) * kv_dim);
                const bool use = (vis_keys >> u) & 1u; /* a key no row sees may hold anything */
#pragma unroll
                for (int r = 0; r < R; r++) {
                    const float pr = Ps[warp][u][r];
#pragma unroll
                    for (int t = 0; t < DPL; t++) acc[r][t] = fmaf(pr, use ? v[t] : 0.0f, acc[r][t]);
                }
            }
            __syncwarp(); /* Ps is rewritten by the next tile */
        }
        a = b;
    }
#pragma unroll
    for (int r = 0; r < R; r++) {
        if (r >= nr) continue;
        const float inv = 1.0f / l[r];
#pragma unroll
        for (int t = 0; t < DPL; t++)
            out[((int64_t)(r0 + r) * n_heads + h) * HD + lane * DPL + t] = acc[r][t] * inv;
    }
}

/* one stream (no slot array): 8 rows a warp; several (a slot per row): 4, a token's
 * frames, so that a warp's rows are one stream's */
template <int HD, typename KV>
static void launch_rows(float *out, const float *q, const KV *kc, const KV *vc, const int32_t *pos,
                        const int32_t *slot, int M, int n_heads, int n_kv_heads, int cap, int window,
                        cudaStream_t st) {
    const int R = slot ? 4 : 8, per_block = ROWS_WARPS * R;
    const dim3 grid((M + per_block - 1) / per_block, n_heads), block(ROWS_WARPS * 32);
    if (slot)
        vox_launch(VOX_PDL_ATTN, attn_rows_kernel<HD, 4, KV>, grid, block, 0, st, out, q, kc, vc, pos, slot, M,
                   n_heads, n_kv_heads, cap, window);
    else
        vox_launch(VOX_PDL_ATTN, attn_rows_kernel<HD, 8, KV>, grid, block, 0, st, out, q, kc, vc, pos,
                   (const int32_t *)NULL, M, n_heads, n_kv_heads, cap, window);
}

template <typename KV>
static int attention_rows(float *out, const float *q, const KV *kc, const KV *vc, const int32_t *pos,
                          const int32_t *slot, int M, int n_heads, int n_kv_heads, int head_dim, int cap,
                          int window, cudaStream_t st) {
    switch (head_dim) {
    case 32: launch_rows<32, KV>(out, q, kc, vc, pos, slot, M, n_heads, n_kv_heads, cap, window, st); break;
    case 64: launch_rows<64, KV>(out, q, kc, vc, pos, slot, M, n_heads, n_kv_heads, cap, window, st); break;
    case 128: launch_rows<128, KV>(out, q, kc, vc, pos, slot, M, n_heads, n_kv_heads, cap, window, st); break;
    default:
        return attention_generic(out, q, kc, vc, pos, M, n_heads, n_kv_heads, head_dim, cap, window,
                                 slot, st);
    }
    return 0;
}

extern "C" int vox_cuda_attention_rows(float *out, const float *q, const void *kc, const void *vc,
                                        int kv_type, const int32_t *pos, const int32_t *slot, int M,
                                        int n_heads, int n_kv_heads, int head_dim, int cap, int window,
                                        cudaStream_t st) {
    if (n_kv_heads <= 0 || n_heads % n_kv_heads) return -1;
    if (kv_type == VOX_CUDA_BF16)
        return attention_rows(out, q, (const kv_bf16 *)kc, (const kv_bf16 *)vc, pos, slot, M, n_heads,
                              n_kv_heads, head_dim, cap, window, st);
    if (kv_type != VOX_CUDA_F32) return -1;
    return attention_rows(out, q, (const float *)kc, (const float *)vc, pos, slot, M, n_heads, n_kv_heads,
                          head_dim, cap, window, st);
}
