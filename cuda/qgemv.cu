/* cuda/qgemv.cu - the GEMV on quantized weights (Q8 / Q4 in groups, F16 scales;
 * formats and the exact rule: voxtral_quant.h): y[m][n] (= or +=)
 * act(in[m] . dequant(W[n]) + b[n]) for M <= 8 rows, up to 3 weights sharing the
 * input (q/k/v, w1/w3), the input as gemv1's modes (plain, rmsnorm(x) * norm * scale,
 * silu(x) * u) formed once per block into shared memory; a block per SM over a range
 * of rows, each warp 2 rows at a time with 3-4 16-byte loads per lane and row in
 * flight (the first issued before the PDL wait), weights dequantized to exact floats
 * by the 0x4B000000 trick (no int -> float conversion; cuda/quant.cuh), per 16 / 32
 * columns s * sum(q in) (+ m * sum(in)) in fp32 (layout and reasons at the kernel).
 * CPU twins: the CPU backend's ops on the same weights (voxtral_kernels.c +
 * voxtral_qdot_*.c).
 * Only integer loads, bit operations (LOP3, PRMT) and fp32 math (F16 scales read with
 * cvt): every architecture from sm_60, so the fp16 path (pre-Ampere) runs it too.
 * Checked on an H200 against the CPU twins (tests/test_cuda_quant.c: this qgemv's first
 * run passed its 166 checks that ran within a 150 s limit, none failed); its decoder
 * step there: q8 1.5 ms = 1.77x its weight bytes' floor (4.9 ms with the kernel before:
 * a warp per row, an I2F per weight), q4 1.4 ms = 3.03x (4.8 ms).
 */
#include <stdint.h>
#include <stdlib.h>

#include "quant.cuh"

/* ---- qgemv ---------------------------------------------------------------------------------
 * Memory-bound at M = 1: every weight byte read once, with 16-byte streaming loads, and
 * enough of them in flight. A block per SM (QG_THREADS threads, up to 128 registers)
 * takes a contiguous range of the output rows (the weights' rows concatenated), its
 * warps take R = 2 rows at a time (a "tuple"); lane L reads the 16-byte chunks L, L + 32,
 * ... of both rows (16 columns for Q8, 32 for Q4; one group each, G being a multiple of
 * 32), so each input float read from shared memory serves R weights of each of the M
 * input rows. A tuple's L = ceil(chunks / 32) items per lane run in batches of U (3 or
 * 4; 2 or 3 at M > 4, for the registers; the host's choice: the one that divides L, or
 * wastes fewer slots); while a batch is
 * summed the loads of the next one (the next tuple's at a tuple's end) are in flight,
 * R * U * 16 bytes per lane. The first batch is loaded before pdl_wait (weights are never
 * written), so it overlaps the previous kernel's end and the input staging.
 *
 * Dequantization without int -> float conversions (I2F runs at 1/8 of the FFMA rate):
 * the float with bits 0x4B000000 | v is 2^23 + v exactly (v < 2^23), so
 *   Q8: x = word ^ 0x80808080 (q + 128 in each byte), one PRMT puts byte b under the
 *       exponent, q = f - (2^23 + 128) (one FADD);
 *   Q4: one LOP3 (w & 0xF << p) | 0x4B000000 gives 2^23 + q 2^p for the nibble at bit
 *       p <= 16 (the three at bits 20, 24, 28 from w >> 12), one FFMA
 *       f * 2^-p - 2^(23-p) gives q.
 * Both exact, so the sums are those of the rule: per chunk sum(q in) in fp32 (two
 * partial sums at M = 1, U = 3), then s * that (+ m * sum(in) for Q4, sum(in) per 32 columns
 * formed once per block), accumulated in fp32 per (row, m); at a tuple's end the lanes'
 * sums are reduced and scattered (lane L ends with value L / (32 / (R M))), the writer
 * lanes apply 1 / rms, bias, GELU, += in parallel.
 *
 * The input (M rows of the columns [k_lo, k_lo + k_n)) is formed once per block into
 * shared memory, by the mode (plain x; x * norm * scale, the 1 / rms applied to the
 * sums: linearity; silu(x) * u), as float4 [chunk / 32][T][MT][chunk % 32] (T float4 per
 * chunk), zero past K and over the padding to a multiple of U items: a warp's 32 lanes
 * read 32 consecutive float4, conflict-free, at offsets known at compile time. M rows
 * that do not fit the shared memory run in passes of fewer rows (the weights re-read),
 * a K too wide for one row in column slabs added into y (not with GELU: -1). */
/* VOX_QG_WARPS (warps per block, 16) and VOX_QG_BLOCKS_PER_SM (1) may be set at build
 * time (NVCCFLAGS=-D...) to try other shapes: 8 warps leave half the register file to
 * the next kernel's blocks (PDL) */
#ifndef VOX_QG_WARPS
#define VOX_QG_WARPS 16
#endif
#ifndef VOX_QG_BLOCKS_PER_SM
#define VOX_QG_BLOCKS_PER_SM 1
#endif
enum { QG_WARPS = VOX_QG_WARPS, QG_THREADS = QG_WARPS * 32, QG_STATIC_SMEM = 2048 /* red[][] below, with room */ };

/* v[0..N) of each lane summed over the warp, scattered: lane L returns the total of
 * v[L / (32 / N)] (N a power of 2 <= 32). The first log2(N) rounds halve the values:
 * lanes with bit `off` set keep the upper half, and get it from their partner. */
template <int N, int OFF> struct q_rs {
    template <int NV> __device__ __forceinline__ static float run(float (&v)[NV], int lane) {
        const bool up = (lane & OFF) != 0;
#pragma unroll
        for (int i = 0; i < N / 2; i++) {
            const float keep = up ? v[i + N / 2] : v[i], send = up ? v[i] : v[i + N / 2];
            v[i] = keep + __shfl_xor_sync(0xffffffffu, send, OFF);
        }
        return q_rs<N / 2, OFF / 2>::run(v, lane);
    }
};
template <int OFF> struct q_rs<1, OFF> {
    template <int NV> __device__ __forceinline__ static float run(float (&v)[NV], int) {
        float t = v[0];
#pragma unroll
        for (int o = OFF; o > 0; o >>= 1) t += __shfl_xor_sync(0xffffffffu, t, o);
        return t;
    }
};
template <int NV> __device__ __forceinline__ float q_reduce_scatter(float (&v)[NV], int lane) {
    return q_rs<NV, 16>::run(v, lane);
}

/* 4 input values from columns k .. k+3 of p (0 at k >= K); vec: 16-byte loads allowed */
__device__ __forceinline__ float4 q_ld4(const float *p, int k, int K, bool vec) {
    if (vec && k + 3 < K) return __ldg(reinterpret_cast<const float4 *>(p + k));
    float4 v;
    v.x = k < K ? __ldg(p + k) : 0.0f;
    v.y = k + 1 < K ? __ldg(p + k + 1) : 0.0f;
    v.z = k + 2 < K ? __ldg(p + k + 2) : 0.0f;
    v.w = k + 3 < K ? __ldg(p + k + 3) : 0.0f;
    return v;
}
__device__ __forceinline__ float q_silu_mul(float g, float u) { return g / (1.0f + expf(-g)) * u; }
__device__ __forceinline__ bool q_al16(const void *p) { return ((uintptr_t)p & 15) == 0; }

/* a's rows concatenated: row -> (weight, row in it) */
__device__ __forceinline__ void q_locate(const vox_cuda_qgemv_args &a, int row, int &seg, int &r) {
    seg = 0;
    r = row;
    if (a.n_out > 1 && r >= a.rows[0]) {
        r -= a.rows[0];
        seg = 1;
        if (a.n_out > 2 && r >= a.rows[1]) {
            r -= a.rows[1];
            seg = 2;
        }
    }
}

/* gmagic: ceil(2^32 / (2 G / CW)), so group(chunk c) = umulhi(2 c, gmagic) exactly */
template <int FMT, int MT, int MODE, int U>
__global__ void __launch_bounds__(QG_THREADS, VOX_QG_BLOCKS_PER_SM)
qgemv_kernel(const vox_cuda_qgemv_args a, int total, int k_lo, int k_n, unsigned gmagic) {
    constexpr bool Q4 = FMT == VOX_CUDA_Q4;
    constexpr int CW = qg_fmt<FMT>::CW, T = qg_fmt<FMT>::T;
    constexpr int R = qg_cfg<MT>::R, NV = R * MT, GL = 32 / NV;
    constexpr int NCH = MT == 1 && U <= 3 ? 2 : 1; /* partial sums per (row, m) and item */
    extern __shared__ float4 xs[];
    __shared__ double red[QG_WARPS][MT];
    const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
    const int K = a.K, M = a.M;
    const int ng = (K + a.group - 1) / a.group;
    const int64_t row_bytes = (int64_t)ng * a.group / (Q4 ? 2 : 1);
    const int sstride = ng * (Q4 ? 2 : 1);
    const int chunks = (k_n + CW - 1) / CW, L = (chunks + 31) / 32;
    const int nbt = (L + U - 1) / U, Lp = nbt * U; /* batches of U items per tuple; items, padded */
    /* this block's rows [rlo, rhi); the warp's tuples: rows rlo + R (warp + QG_WARPS t) + r */
    const int bq = total / (int)gridDim.x, br = total % (int)gridDim.x, bx = (int)blockIdx.x;
    const int rlo = bx * bq + (bx < br ? bx : br), rhi = rlo + bq + (bx < br ? 1 : 0);
    const int ntb = (rhi - rlo + R - 1) / R;
    const int ntup = warp < ntb ? (ntb - warp + QG_WARPS - 1) / QG_WARPS : 0;
    const int nb = ntup * nbt;

    /* ---- the load side of the ring: the batch (lt, ljb) ---- */
    const uint8_t *lw[R];
    const uint16_t *ls[R];
    bool lv[R];
    int lt = 0, ljb = 0;
    unsigned lc2 = 0;
    auto load_at = [&](int t, int jb) {
        lt = t;
        ljb = jb;
        lc2 = 2u * (unsigned)(k_lo / CW + lane + 32 * jb);
#pragma unroll
        for (int r = 0; r < R; r++) {
            const int row = rlo + R * (warp + QG_WARPS * t) + r;
            lv[r] = t < ntup && row < rhi;
            int seg, rr;
            q_locate(a, lv[r] ? row : rlo, seg, rr);
            lw[r] = (seg == 0 ? a.W[0] : seg == 1 ? a.W[1] : a.W[2]) + rr * row_bytes +
                    (int64_t)(k_lo / CW + lane + 32 * jb) * 16;
            ls[r] = (seg == 0 ? a.S[0] : seg == 1 ? a.S[1] : a.S[2]) + (int64_t)rr * sstride;
        }
    };
    auto load_next = [&]() { /* the batch after (lt, ljb) */
        if (ljb + U < L) {
            ljb += U;
            lc2 += 64u * U;
#pragma unroll
            for (int r = 0; r < R; r++) lw[r] += 512 * U;
        } else {
            load_at(lt + 1, 0);
        }
    };
    /* ring slot u <- item ljb + u of the load side's batch (a slot past the rows keeps its
     * old bytes, finite as any, under a zero scale) */
    uint4 rw[U][R];
    unsigned rsc[U][R];
    auto load_slot = [&](int u) {
        const bool okc = lane + 32 * (ljb + u) < chunks;
        const unsigned g = __umulhi(lc2 + 64u * u, gmagic);
#pragma unroll
        for (int r = 0; r < R; r++) {
            rsc[u][r] = 0u;
            if (okc && lv[r]) {
                rw[u][r] = __ldcs(reinterpret_cast<const uint4 *>(lw[r] + 512 * u));
                rsc[u][r] = Q4 ? __ldg(reinterpret_cast<const unsigned *>(ls[r]) + g) : (unsigned)__ldg(ls[r] + g);
            }
        }
    };
#pragma unroll
    for (int u = 0; u < U; u++)
#pragma unroll
        for (int r = 0; r < R; r++) rw[u][r] = make_uint4(0u, 0u, 0u, 0u);
    load_at(0, 0);
#pragma unroll
    for (int u = 0; u < U; u++) load_slot(u);
    load_next();

    pdl_wait();
    pdl_trigger();

    /* ---- the input, formed once into shared memory ---- */
    float *sx = reinterpret_cast<float *>(xs + (size_t)Lp * T * MT * 32);
    {
        const bool full = k_lo == 0 && k_n == K;
        const bool vec = (K & 3) == 0 && q_al16(a.x) && (MODE != VOX_GEMV_SWIGLU || q_al16(a.u)) &&
                         (MODE != VOX_GEMV_NORM || (q_al16(a.norm) && (!a.scale || q_al16(a.scale))));
        const int F = Lp * 32 * T; /* float4 per input row (zeros past K) */
        double ss[MT];
#pragma unroll
        for (int m = 0; m < MT; m++) ss[m] = 0.0;
#pragma unroll
        for (int m = 0; m < MT; m++) {
            if (m >= M) break;
            const float *xm = a.x + (int64_t)m * K;
            for (int f = threadIdx.x; f < F; f += QG_THREADS) {
                const int k = k_lo + 4 * f;
                float4 v = q_ld4(xm, k, K, vec);
                if (MODE == VOX_GEMV_NORM) {
                    if (full) ss[m] += (double)(v.x * v.x + v.y * v.y + v.z * v.z + v.w * v.w);
                    const float4 n = q_ld4(a.norm, k, K, vec);
                    v.x *= n.x, v.y *= n.y, v.z *= n.z, v.w *= n.w;
                    if (a.scale) {
                        const float4 s = q_ld4(a.scale, k, K, vec);
                        v.x *= s.x, v.y *= s.y, v.z *= s.z, v.w *= s.w;
                    }
                } else if (MODE == VOX_GEMV_SWIGLU) {
                    const float4 u = q_ld4(a.u + (int64_t)m * K, k, K, vec);
                    v.x = q_silu_mul(v.x, u.x), v.y = q_silu_mul(v.y, u.y);
                    v.z = q_silu_mul(v.z, u.z), v.w = q_silu_mul(v.w, u.w);
                }
                const int c = f / T, t = f % T;
                xs[(((c >> 5) * T + t) * MT + m) * 32 + (c & 31)] = v;
                if (Q4) { /* the 8 threads of a chunk are 8 consecutive lanes */
                    float p = (v.x + v.y) + (v.z + v.w);
                    p += __shfl_xor_sync(0xffffffffu, p, 1);
                    p += __shfl_xor_sync(0xffffffffu, p, 2);
                    p += __shfl_xor_sync(0xffffffffu, p, 4);
                    if (t == 0) sx[((c >> 5) * MT + m) * 32 + (c & 31)] = p;
                }
            }
            if (MODE == VOX_GEMV_NORM && !full) /* a column slab: 1 / rms over every column */
                for (int k = threadIdx.x; k < K; k += QG_THREADS) ss[m] += (double)xm[k] * xm[k];
        }
        if (MODE == VOX_GEMV_NORM) {
#pragma unroll
            for (int m = 0; m < MT; m++) {
                double v = ss[m];
#pragma unroll
                for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
                if (lane == 0) red[warp][m] = v;
            }
        }
    }
    __syncthreads();
    /* a tuple's end: lane L has the total of value L / GL = r * MT + m (recomputed there,
     * for the registers); its 1 / rms of input row m, summed in double as the CPU */
    float rs = 1.0f;
    if (MODE == VOX_GEMV_NORM && (lane / GL) % MT < M) {
        double t = 0;
        for (int i = 0; i < QG_WARPS; i++) t += red[i][(lane / GL) % MT];
        rs = (float)(1.0 / sqrt(t / K + (double)a.eps));
    }

    /* ---- the compute side: the batch (ct, cjb) ---- */
    float acc[R][MT];
#pragma unroll
    for (int r = 0; r < R; r++)
#pragma unroll
        for (int m = 0; m < MT; m++) acc[r][m] = 0.0f;
    int ct = 0, cjb = 0;
    for (int b = 0; b < nb; b++) {
        const float4 *xb = xs + cjb * (T * MT * 32) + lane;
        const float *sxb = sx + cjb * (MT * 32) + lane;
#pragma unroll
        for (int u = 0; u < U; u++) { /* items past L: zero input and scales (no branch: the
                                          refills stay among the sums) */
            q_item<FMT, MT, NCH>(rw[u], rsc[u], xb + u * (T * MT * 32), sxb + u * (MT * 32), M, acc);
            load_slot(u);
        }
        load_next();
        if (cjb + U < L) {
            cjb += U;
            continue;
        }
        /* the tuple's rows are done: sum the lanes, lane wr * MT + wm writes row wr's output wm */
        float v[NV];
#pragma unroll
        for (int r = 0; r < R; r++)
#pragma unroll
            for (int m = 0; m < MT; m++) {
                v[r * MT + m] = acc[r][m];
                acc[r][m] = 0.0f;
            }
        const float tot = q_reduce_scatter<NV>(v, lane);
        const int vi = lane / GL, wr = vi / MT, wm = vi % MT;
        const int row = rlo + R * (warp + QG_WARPS * ct) + wr;
        if (lane % GL == 0 && wm < M && row < rhi) {
            int seg, r;
            q_locate(a, row, seg, r);
            const int N = seg == 0 ? a.rows[0] : seg == 1 ? a.rows[1] : a.rows[2];
            float *y = (seg == 0 ? a.y[0] : seg == 1 ? a.y[1] : a.y[2]) + (int64_t)wm * N + r;
            float o = tot * rs;
            if (a.bias) o += __ldg(a.bias + r);
            if (a.act == 1) o = 0.5f * o * (1.0f + erff(o * 0.70710678118654752f));
            *y = a.accumulate ? *y + o : o;
        }
        ct++;
        cjb = 0;
    }
}

/* the depth U (items per lane in flight, per batch: umax or umax - 1, umax 4, or 3 at
 * MT = 8 for the registers) for L items per row: the one that leaves fewer idle slots at
 * a row's end, the deeper on a tie */
static int qg_u(int L, int umax) {
    const int lo = umax - 1;
    return (L + umax - 1) / umax * umax - L <= (L + lo - 1) / lo * lo - L ? umax : lo;
}

/* shared memory of a launch: MT input rows of columns [k_lo, k_lo + k_n), the items per row
 * padded to a multiple of U */
template <int FMT> static size_t qg_smem(int MT, int k_n) {
    constexpr int CW = qg_fmt<FMT>::CW, T = qg_fmt<FMT>::T;
    const int L = ((k_n + CW - 1) / CW + 31) / 32, U = qg_u(L, MT == 8 ? 3 : 4), Lp = (L + U - 1) / U * U;
    return (size_t)MT * Lp * (T * 32 * 16 + (FMT == VOX_CUDA_Q4 ? 32 * 4 : 0));
}

/* the opt-in shared memory per block of the current device (48 KB if unknown) */
static int qg_smem_optin() {
    static int cache[32];
    int dev = 0;
    if (cudaGetDevice(&dev) != cudaSuccess) {
        cudaGetLastError();
        dev = 0;
    }
    if (dev < 0 || dev >= 32) dev = 0;
    if (!cache[dev]) {
        int v = 0;
        if (cudaDeviceGetAttribute(&v, cudaDevAttrMaxSharedMemoryPerBlockOptin, dev) != cudaSuccess) {
            cudaGetLastError();
            v = 0;
        }
        cache[dev] = v > 48 * 1024 ? v : 48 * 1024;
    }
    return cache[dev];
}

template <int FMT, int MT, int MODE, int U>
static void qg_launch(const vox_cuda_qgemv_args &a, int total, int k_lo, int k_n, size_t smem, int n_sm,
                      cudaStream_t st) {
    void (*kern)(const vox_cuda_qgemv_args, int, int, int, unsigned) = qgemv_kernel<FMT, MT, MODE, U>;
    static int smem_set[32]; /* per device: the dynamic shared memory allowed so far */
    if (smem > 48 * 1024 - QG_STATIC_SMEM) {
        int dev = 0;
        if (cudaGetDevice(&dev) != cudaSuccess || dev < 0 || dev >= 32) dev = 0;
        if ((size_t)smem_set[dev] < smem) {
            const int want = qg_smem_optin() - QG_STATIC_SMEM;
            cudaFuncSetAttribute(kern, cudaFuncAttributeMaxDynamicSharedMemorySize, want);
            smem_set[dev] = want;
        }
    }
    constexpr int CW = qg_fmt<FMT>::CW;
    const unsigned D = 2u * (unsigned)(a.group / CW);
    const unsigned gmagic = (unsigned)((((uint64_t)1 << 32) + D - 1) / D);
    /* every SM (a wo or w2 of 3072 rows: 23 or 24 rows a block, not 32 on 96 SMs), at
     * least a row pair a block */
    int blocks = (total + qg_cfg<MT>::R - 1) / qg_cfg<MT>::R;
    if (blocks > n_sm * VOX_QG_BLOCKS_PER_SM) blocks = n_sm * VOX_QG_BLOCKS_PER_SM;
    if (blocks < 1) blocks = 1;
    vox_launch(VOX_PDL_GEMV, kern, blocks, QG_THREADS, smem, st, a, total, k_lo, k_n, gmagic);
}

template <int FMT, int MT, int MODE>
static void qg_depth(const vox_cuda_qgemv_args &a, int total, int k_lo, int k_n, size_t smem, int n_sm,
                     cudaStream_t st) {
    constexpr int UM = qg_cfg<MT>::UMAX;
    if (qg_u(((k_n + qg_fmt<FMT>::CW - 1) / qg_fmt<FMT>::CW + 31) / 32, UM) == UM)
        qg_launch<FMT, MT, MODE, UM>(a, total, k_lo, k_n, smem, n_sm, st);
    else
        qg_launch<FMT, MT, MODE, UM - 1>(a, total, k_lo, k_n, smem, n_sm, st);
}

template <int FMT, int MT>
static void qg_mode(const vox_cuda_qgemv_args &a, int total, int k_lo, int k_n, size_t smem, int n_sm,
                    cudaStream_t st) {
    switch (a.mode) {
    case VOX_GEMV_NORM: qg_depth<FMT, MT, VOX_GEMV_NORM>(a, total, k_lo, k_n, smem, n_sm, st); break;
    case VOX_GEMV_SWIGLU: qg_depth<FMT, MT, VOX_GEMV_SWIGLU>(a, total, k_lo, k_n, smem, n_sm, st); break;
    default: qg_depth<FMT, MT, VOX_GEMV_PLAIN>(a, total, k_lo, k_n, smem, n_sm, st); break;
    }
}

/* the dynamic shared memory a launch may take: the device's opt-in limit, or less where
 * VOX_QGEMV_SMEM (bytes) says so (a test hook: the row passes and column slabs on any GPU) */
static size_t qg_avail() {
    size_t v = (size_t)qg_smem_optin();
    const char *e = getenv("VOX_QGEMV_SMEM");
    if (e && *e) {
        const long c = atol(e);
        if (c > 0 && (size_t)c < v) v = (size_t)c;
    }
    return v > QG_STATIC_SMEM ? v - QG_STATIC_SMEM : 0;
}

template <int FMT>
static int qg_run(const vox_cuda_qgemv_args *a, int total, int n_sm, cudaStream_t st) {
    constexpr int CW = qg_fmt<FMT>::CW;
    const size_t avail = qg_avail();
    const size_t per_row = qg_smem<FMT>(1, a->K);
    int fit = (int)(avail / per_row);
    if (fit >= 1) { /* passes of up to `fit` input rows (a power of 2 <= 8) */
        int pmax = 1;
        while (pmax * 2 <= fit && pmax * 2 <= VOX_QGEMV_MAX_ROWS) pmax *= 2;
        for (int m0 = 0; m0 < a->M;) {
            const int cnt = a->M - m0 < pmax ? a->M - m0 : pmax;
            const int MT = cnt <= 1 ? 1 : cnt <= 2 ? 2 : cnt <= 4 ? 4 : 8;
            vox_cuda_qgemv_args p = *a;
            p.M = cnt;
            p.x = a->x + (int64_t)m0 * a->K;
            if (a->u) p.u = a->u + (int64_t)m0 * a->K;
            for (int i = 0; i < a->n_out; i++) p.y[i] = a->y[i] + (int64_t)m0 * a->rows[i];
            const size_t smem = qg_smem<FMT>(MT, a->K);
            if (MT == 1) qg_mode<FMT, 1>(p, total, 0, a->K, smem, n_sm, st);
            else if (MT == 2) qg_mode<FMT, 2>(p, total, 0, a->K, smem, n_sm, st);
            else if (MT == 4) qg_mode<FMT, 4>(p, total, 0, a->K, smem, n_sm, st);
            else qg_mode<FMT, 8>(p, total, 0, a->K, smem, n_sm, st);
            m0 += cnt;
        }
        return 0;
    }
    /* one input row at a time in column slabs of whole 32-chunk blocks, the partial sums
     * added into y (so no activation) */
    const int blk_cols = 32 * CW;
    int nblk = (int)(avail / (qg_smem<FMT>(1, 4 * blk_cols) / 4)); /* 4 blocks: no padding */
    while (nblk > 0 && qg_smem<FMT>(1, nblk * blk_cols) > avail) nblk--;
    const int slab = nblk * blk_cols;
    if (a->act || nblk < 1) return -1;
    for (int m = 0; m < a->M; m++)
        for (int k_lo = 0; k_lo < a->K; k_lo += slab) {
            vox_cuda_qgemv_args p = *a;
            p.M = 1;
            p.x = a->x + (int64_t)m * a->K;
            if (a->u) p.u = a->u + (int64_t)m * a->K;
            for (int i = 0; i < a->n_out; i++) p.y[i] = a->y[i] + (int64_t)m * a->rows[i];
            if (k_lo > 0) {
                p.bias = NULL;
                p.accumulate = 1;
            }
            const int k_n = a->K - k_lo < slab ? a->K - k_lo : slab;
            qg_mode<FMT, 1>(p, total, k_lo, k_n, qg_smem<FMT>(1, k_n), n_sm, st);
        }
    return 0;
}

extern "C" int vox_cuda_qgemv(const vox_cuda_qgemv_args *a, int n_sm, cudaStream_t st) {
    if (a->M < 1 || a->M > VOX_QGEMV_MAX_ROWS || a->n_out < 1 || a->n_out > VOX_GEMV_MAX_OUT ||
        a->group < 32 || a->group % 32 || a->K < 1)
        return -1;
    int total = 0;
    for (int i = 0; i < a->n_out; i++) {
        if (((uintptr_t)a->W[i] & 15) || ((uintptr_t)a->S[i] & 3)) return -1;
        total += a->rows[i];
    }
    if (total <= 0) return 0;
    if (n_sm < 1) n_sm = 1;
    return a->fmt == VOX_CUDA_Q8 ? qg_run<VOX_CUDA_Q8>(a, total, n_sm, st) : qg_run<VOX_CUDA_Q4>(a, total, n_sm, st);
}
