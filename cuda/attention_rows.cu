/* cuda/attention_rows.cu - causal sliding-window GQA over the ring KV caches for many
 * rows (encoder chunks, prefill, batched prompts), fp32 math over rings of fp32 or
 * BF16 elements (the kernel's template parameter KV, cuda/kv.cuh: read widened to
 * fp32); the keys a row sees as in cuda/attention.cuh. CPU twin: cpu_attention
 * (voxtral_kernels.c).
 *
 * attention_rows: a warp owns 8 query rows of one head (4 with a slot array: several
 * streams' rows) and reads each key and value once for all of them (lanes over keys
 * for the scores, over dims for the values), online softmax; with a slot array it
 * walks each run of one slot's rows over that slot's keys. Head dims other than 32,
 * 64, 128 take attention_generic (cuda/attention.cuh).
 */
#include "attention.cuh"

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
