/* membw.c - measures the machine's memory read bandwidth the way the decoder
 * step reads weights: every thread streams its share of a buffer much larger
 * than the caches, summing it. Prints GB/s (best of several passes) and JSON.
 * Usage: membw [MB] [threads] */
#include <omp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#if defined(__AVX512F__)
#include <immintrin.h>
#endif

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec * 1e-9;
}

int main(int argc, char **argv) {
    size_t mb = argc > 1 ? strtoul(argv[1], NULL, 10) : 2048;
    if (argc > 2) omp_set_num_threads(atoi(argv[2]));
    size_t n = mb * (1u << 20) / sizeof(float);
    float *a = aligned_alloc(64, n * sizeof(float));
    if (!a) {
        fprintf(stderr, "membw: cannot allocate %zu MB\n", mb);
        return 1;
    }
#pragma omp parallel for schedule(static)
    for (size_t i = 0; i < n; i++) a[i] = (float)(i & 1023);
    double best = 1e30, sink = 0;
    for (int pass = 0; pass < 6; pass++) {
        double t0 = now_s(), total = 0;
#pragma omp parallel for schedule(static) reduction(+ : total)
        for (size_t c = 0; c < n; c += 4096) {
            size_t end = c + 4096 < n ? c + 4096 : n;
#if defined(__AVX512F__)
            __m512 s0 = _mm512_setzero_ps(), s1 = _mm512_setzero_ps();
            size_t i = c;
            for (; i + 32 <= end; i += 32) {
                s0 = _mm512_add_ps(s0, _mm512_load_ps(a + i));
                s1 = _mm512_add_ps(s1, _mm512_load_ps(a + i + 16));
            }
            total += _mm512_reduce_add_ps(_mm512_add_ps(s0, s1));
#else
            float s = 0;
            for (size_t i = c; i < end; i++) s += a[i];
            total += s;
#endif
        }
        double dt = now_s() - t0;
        sink += total;
        if (dt < best) best = dt;
    }
    double gbs = n * sizeof(float) / best / 1e9;
    printf("memory read bandwidth: %.2f GB/s (%zu MB buffer, %d threads, best of 6)\n", gbs, mb,
           omp_get_max_threads());
    printf("{\"read_gb_s\": %.3f, \"buffer_mb\": %zu, \"threads\": %d, \"checksum\": %.1f}\n", gbs, mb,
           omp_get_max_threads(), sink > 0 ? 1.0 : 0.0);
    free(a);
    return 0;
}
