/* cuda/attention.cu - causal sliding-window GQA over the ring KV caches for few rows
 * (the decoder step), fp32 math over rings of fp32 or BF16 elements (the kernels'
 * template parameter KV, cuda/kv.cuh: read widened to fp32; the fused form's new key
 * and value are rounded as the ring stores them before use). CPU twins:
 * cpu_attention, cpu_rope_attention (voxtral_kernels.c). Row i (query position
 * p = pos[i], read on the device) sees keys j with
 * max(0, p - window + 1, p - cap + 1) <= j <= p, key j living in ring slot j % cap.
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
 * Many rows (attention_rows): cuda/attention_rows.cu. Shapes neither fast kernel takes
 * (attention_generic, the fallback of both) and what they share: cuda/attention.cuh.
 */
#include "attention.cuh"

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
