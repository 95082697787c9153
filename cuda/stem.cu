/* cuda/stem.cu - an encoder batch's per-stream parts, all streams in one launch each:
 * the conv stem's im2col over each stream's context and new rows (conv_cols), the
 * context's update (conv_keep), the adapter's rows into each stream's audio ring
 * (ring_append). Each stream's part is a span (vox_cuda_span, in device memory); a
 * block finds its span by binary search over them (a batch holds at most a few
 * hundred), so the grid depends on the batch's size alone. Plain copies: bit for bit
 * the CPU twins cpu_conv_cols, cpu_conv_keep, cpu_ring_append (voxtral_kernels.c).
 */
#include "voxtral_cuda.h"

enum { STEM_THREADS = 256, MAX_GRID_Y = 65535 };

static unsigned blocks_for(int64_t n, int threads) {
    int64_t b = (n + threads - 1) / threads;
    return (unsigned)(b < 1 ? 1 : b);
}

/* the span holding batch row r: the last whose first row (row0 / stride, or tok0 for
 * tokens) is <= r */
template <bool TOKENS>
__device__ __forceinline__ int span_of(const vox_cuda_span *sp, int n, int r, int stride) {
    int lo = 0, hi = n - 1;
    while (lo < hi) {
        const int mid = (lo + hi + 1) >> 1;
        if ((TOKENS ? sp[mid].tok0 : sp[mid].row0 / stride) <= r) lo = mid;
        else hi = mid - 1;
    }
    return lo;
}

/* block (x, y): output row y (and y + gridDim.y ...), columns c*K + k over x */
__global__ void __launch_bounds__(STEM_THREADS)
conv_cols_kernel(float *cols, const float *state, int64_t sstride, const float *x, const vox_cuda_span *sp,
                 int n, int M, int C, int K, int stride) {
    const int P = K - stride, CK = C * K;
    for (int t = blockIdx.y; t < M; t += gridDim.y) {
        const vox_cuda_span s = sp[span_of<false>(sp, n, t, stride)];
        const float *ctx = state + s.slot * sstride;
        const int tl = t - s.row0 / stride;
        for (int i = blockIdx.x * blockDim.x + threadIdx.x; i < CK; i += gridDim.x * blockDim.x) {
            const int c = i / K, k = i - c * K, r = tl * stride + k;
            cols[(int64_t)t * CK + i] = r >= P ? x[((int64_t)s.row0 + r - P) * C + c]
                                      : s.reset ? 0.0f : ctx[(int64_t)r * C + c];
        }
    }
}

extern "C" void vox_cuda_conv_cols(float *cols, const float *state, int64_t sstride, const float *x,
                                   const vox_cuda_span *sp, int n, int M, int C, int K, int stride,
                                   cudaStream_t st) {
    dim3 grid(blocks_for((int64_t)C * K, STEM_THREADS), M < MAX_GRID_Y ? M : MAX_GRID_Y);
    conv_cols_kernel<<<grid, STEM_THREADS, 0, st>>>(cols, state, sstride, x, sp, n, M, C, K, stride);
}

/* block (x, j): span j's columns over x; a thread owns its column, rows in order (a
 * row may read a later context row: rows < P), so the update in place is safe */
__global__ void __launch_bounds__(STEM_THREADS)
conv_keep_kernel(float *state, int64_t sstride, const float *x, const vox_cuda_span *sp, int C, int P) {
    const vox_cuda_span s = sp[blockIdx.y];
    float *ctx = state + s.slot * sstride;
    for (int c = blockIdx.x * blockDim.x + threadIdx.x; c < C; c += gridDim.x * blockDim.x)
        for (int i = 0; i < P; i++) {
            const int q = s.rows + i;
            ctx[(int64_t)i * C + c] = q >= P ? x[((int64_t)s.row0 + q - P) * C + c]
                                    : s.reset ? 0.0f : ctx[(int64_t)q * C + c];
        }
}

extern "C" void vox_cuda_conv_keep(float *state, int64_t sstride, const float *x, const vox_cuda_span *sp,
                                   int n, int C, int P, cudaStream_t st) {
    for (int j0 = 0; j0 < n; j0 += MAX_GRID_Y) { /* (a batch has far fewer spans) */
        const int nj = n - j0 < MAX_GRID_Y ? n - j0 : MAX_GRID_Y;
        conv_keep_kernel<<<dim3(blocks_for(C, STEM_THREADS), nj), STEM_THREADS, 0, st>>>(state, sstride, x,
                                                                                          sp + j0, C, P);
    }
}

/* block (x, y): batch token y (and y + gridDim.y ...), its row's elements over x */
__global__ void __launch_bounds__(STEM_THREADS)
ring_append_kernel(float *ring, const float *x, const vox_cuda_span *sp, int n, int M, int D, int cap) {
    for (int t = blockIdx.y; t < M; t += gridDim.y) {
        const vox_cuda_span s = sp[span_of<true>(sp, n, t, 1)];
        float *dst = ring + ((int64_t)s.slot * cap + (s.at + t - s.tok0) % cap) * D;
        const float *src = x + (int64_t)t * D;
        for (int d = blockIdx.x * blockDim.x + threadIdx.x; d < D; d += gridDim.x * blockDim.x) dst[d] = src[d];
    }
}

extern "C" void vox_cuda_ring_append(float *ring, const float *x, const vox_cuda_span *sp, int n, int M, int D,
                                     int cap, cudaStream_t st) {
    dim3 grid(blocks_for(D, STEM_THREADS), M < MAX_GRID_Y ? M : MAX_GRID_Y);
    ring_append_kernel<<<grid, STEM_THREADS, 0, st>>>(ring, x, sp, n, M, D, cap);
}
