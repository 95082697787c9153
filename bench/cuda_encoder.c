/* cuda_encoder.c - where an encoder batch's GPU time goes (a benchmark, never a
 * test): one encoder layer of the real shape (dim 1280, 32 heads x 64, hidden 5120,
 * window 750; params.json's, typed here as the benchmark's subject) timed op by op
 * on the CUDA backend, each op captured 20 times in a graph and replayed, median of
 * 7. Batches: one stream's 512 frames (a file's chunk), and 128 streams x 4 frames
 * in slots (a serving tick's live tokens), at encoder contexts of 100, 400 and 750
 * frames. Per op: microseconds, and the bound of the same run (GEMMs: FLOPs at the
 * dense BF16 peak measured here by the largest GEMM; attention and KV: bytes at the
 * D2D copy bandwidth measured here); the layer's sum x 32 layers is the encoder's.
 *   build/bench_cuda_encoder          (make bench-cuda-encoder; needs a CUDA build)
 */
#include <stdio.h>
#include <time.h>

#include "../tests/cudatest.h"

enum { D = 1280, H = 32, HD = 64, F = 5120, WIN = 750, LAYERS = 32, REPS = 20 };

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec * 1e-9;
}

/* median seconds of one replay of graph `key` */
static double time_graph(int key) {
    double t[7];
    gpu->graph_launch(gpu, key);
    gpu->sync(gpu);
    for (int r = 0; r < 7; r++) {
        double t0 = now_s();
        gpu->graph_launch(gpu, key);
        gpu->sync(gpu);
        t[r] = now_s() - t0;
    }
    for (int i = 0; i < 7; i++)
        for (int j = i + 1; j < 7; j++)
            if (t[j] < t[i]) { double s = t[i]; t[i] = t[j]; t[j] = s; }
    return t[3];
}

typedef struct {
    vox_weight wq, wk, wv, wo, w1, w3, w2, bq, bv, bo, b2, n1, n2;
} layer_w;

typedef struct {
    int M, streams, ctx;
    float *x, *xn, *q, *k, *v, *att, *g, *u;
    void *kc, *vc;
    int32_t *pos, *slot;
    int cap;
} batch;

static int key_n = 1000;

#define OP(name, bound_s, call)                                                                      \
    do {                                                                                             \
        int key_ = key_n++;                                                                          \
        gpu->graph_begin(gpu, key_);                                                                 \
        for (int r_ = 0; r_ < REPS; r_++) { call; }                                                  \
        gpu->graph_end(gpu, key_);                                                                   \
        double t_ = time_graph(key_) / REPS;                                                         \
        sum += t_;                                                                                   \
        printf("  %-22s %9.1f us  %5.2fx its bound\n", name, t_ * 1e6, (bound_s) > 0 ? t_ / (bound_s) : 0); \
    } while (0)

static void run_layer(const layer_w *L, batch *b, double tflops, double gbs) {
    const int M = b->M, kvd = H * HD;
    double sum = 0;
    const double gf = 2.0 * M / (tflops * 1e12); /* seconds per weight element */
    /* the keys a batch reads: per stream its context (up to the window), K and V, BF16 */
    const double kv_bytes = (double)b->streams * (b->ctx < WIN ? b->ctx : WIN) * kvd * 2 * 2;
    printf("%d stream%s x %d frames, context %d frames:\n", b->streams, b->streams > 1 ? "s" : "",
           M / b->streams, b->ctx);
    OP("rmsnorm", 0, gpu->rmsnorm(gpu, b->xn, b->x, &L->n1, NULL, M, D, 1e-5f));
    OP("wq (+bias)", gf * 2048 * D, gpu->linear(gpu, b->q, b->xn, &L->wq, &L->bq, M, VOX_ACT_NONE, 0));
    OP("wk", gf * 2048 * D, gpu->linear(gpu, b->k, b->xn, &L->wk, NULL, M, VOX_ACT_NONE, 0));
    OP("wv (+bias)", gf * 2048 * D, gpu->linear(gpu, b->v, b->xn, &L->wv, &L->bv, M, VOX_ACT_NONE, 0));
    OP("rope q", 0, gpu->rope(gpu, b->q, b->pos, M, H, HD, 1e6f));
    OP("rope k", 0, gpu->rope(gpu, b->k, b->pos, M, H, HD, 1e6f));
    OP("kv_store", 0, gpu->kv_store(gpu, b->kc, b->vc, b->k, b->v, b->pos, b->slot, M, kvd, b->cap));
    OP("attention", kv_bytes / (gbs * 1e9),
       gpu->attention(gpu, b->att, b->q, b->kc, b->vc, b->pos, b->slot, M, H, H, HD, b->cap, WIN));
    OP("wo (+bias, +=)", gf * D * 2048, gpu->linear(gpu, b->x, b->att, &L->wo, &L->bo, M, VOX_ACT_NONE, 1));
    OP("rmsnorm", 0, gpu->rmsnorm(gpu, b->xn, b->x, &L->n2, NULL, M, D, 1e-5f));
    OP("w1", gf * F * D, gpu->linear(gpu, b->g, b->xn, &L->w1, NULL, M, VOX_ACT_NONE, 0));
    OP("w3", gf * F * D, gpu->linear(gpu, b->u, b->xn, &L->w3, NULL, M, VOX_ACT_NONE, 0));
    OP("swiglu", 0, gpu->swiglu(gpu, b->g, b->g, b->u, (int64_t)M * F));
    OP("w2 (+bias, +=)", gf * D * F, gpu->linear(gpu, b->x, b->g, &L->w2, &L->b2, M, VOX_ACT_NONE, 1));
    const double flops = 2.0 * M * (3.0 * 2048 * D + D * 2048.0 + 3.0 * F * D);
    printf("  layer %.1f us; x %d layers: %.2f ms for %d frames (%.1f us per frame); GEMM bound %.2f ms, "
           "KV bound %.2f ms\n",
           sum * 1e6, LAYERS, sum * LAYERS * 1e3, M, sum * LAYERS * 1e6 / M, flops * LAYERS / (tflops * 1e12) * 1e3,
           kv_bytes * LAYERS / (gbs * 1e9) * 1e3);
    if (gpu->sync(gpu) != 0) printf("  CUDA error: %s\n", vox_last_error());
}

static batch make_batch(int streams, int rows, int ctx) {
    batch b = {.M = streams * rows, .streams = streams, .ctx = ctx, .cap = WIN + 64};
    const int M = b.M, kvd = H * HD;
    float *hx = rand_f((int64_t)M * F, 1.0f);
    b.x = dev_from(hx, (size_t)M * D * 4);
    b.xn = gpu->alloc(gpu, (size_t)M * D * 4);
    b.q = dev_from(hx, (size_t)M * kvd * 4);
    b.k = dev_from(hx, (size_t)M * kvd * 4);
    b.v = dev_from(hx, (size_t)M * kvd * 4);
    b.att = dev_from(hx, (size_t)M * kvd * 4);
    b.g = dev_from(hx, (size_t)M * F * 4);
    b.u = dev_from(hx, (size_t)M * F * 4);
    free(hx);
    size_t ring = (size_t)(streams + 1) * b.cap * kvd * 2; /* BF16 rings */
    b.kc = gpu->alloc(gpu, ring);
    b.vc = gpu->alloc(gpu, ring);
    gpu->copy(gpu, b.kc, b.x, (size_t)M * D * 4 < ring ? (size_t)M * D * 4 : ring);
    int32_t *pos = malloc(4 * M), *slot = malloc(4 * M);
    for (int j = 0; j < streams; j++)
        for (int r = 0; r < rows; r++) pos[j * rows + r] = ctx - rows + r, slot[j * rows + r] = streams - j;
    b.pos = dev_from(pos, 4 * M);
    b.slot = streams > 1 ? dev_from(slot, 4 * M) : NULL;
    free(pos), free(slot);
    return b;
}

static void free_batch(batch *b) {
    void *p[] = {b->x, b->xn, b->q, b->k, b->v, b->att, b->g, b->u, b->kc, b->vc, b->pos, b->slot};
    for (size_t i = 0; i < sizeof p / sizeof p[0]; i++)
        if (p[i]) gpu->free(gpu, p[i]);
}

int main(void) {
    if (!vox_cuda_available()) {
        printf("bench_cuda_encoder: no CUDA device\n");
        return 0;
    }
    gpu = vox_cuda_backend_new(0, NULL);
    if (!gpu) {
        printf("bench_cuda_encoder: %s\n", vox_last_error());
        return 1;
    }
    gpu->kv_dtype = VOX_DT_BF16;
    gpu->kv_bf16 = 1;
    /* the bounds of this run: D2D copy bandwidth; BF16 GEMM peak (M = 4096 through w1) */
    size_t cb = (size_t)1 << 30;
    void *a = gpu->alloc(gpu, cb), *c = gpu->alloc(gpu, cb);
    gpu->copy(gpu, c, a, cb);
    gpu->sync(gpu);
    double t0 = now_s();
    for (int i = 0; i < 10; i++) gpu->copy(gpu, c, a, cb);
    gpu->sync(gpu);
    const double gbs = 2.0 * cb * 10 / (now_s() - t0) / 1e9;
    gpu->free(gpu, a), gpu->free(gpu, c);

    layer_w L = {
        .wq = weight_bf16(2048, D, 0.02f), .wk = weight_bf16(2048, D, 0.02f), .wv = weight_bf16(2048, D, 0.02f),
        .wo = weight_bf16(D, 2048, 0.02f), .w1 = weight_bf16(F, D, 0.02f), .w3 = weight_bf16(F, D, 0.02f),
        .w2 = weight_bf16(D, F, 0.02f), .bq = weight_f32(2048, 0.1f, 0), .bv = weight_f32(2048, 0.1f, 0),
        .bo = weight_f32(D, 0.1f, 0), .b2 = weight_f32(D, 0.1f, 0), .n1 = weight_f32(D, 0.1f, 1),
        .n2 = weight_f32(D, 0.1f, 1),
    };
    {
        const int M = 4096;
        float *x = gpu->alloc(gpu, (size_t)M * D * 4), *y = gpu->alloc(gpu, (size_t)M * F * 4);
        gpu->graph_begin(gpu, 999);
        for (int r = 0; r < 5; r++) gpu->linear(gpu, y, x, &L.w1, NULL, M, VOX_ACT_NONE, 0);
        gpu->graph_end(gpu, 999);
        double t = time_graph(999) / 5;
        const double tflops = 2.0 * M * F * D / t / 1e12;
        printf("bounds of this run: D2D copy %.0f GB/s (read + write); GEMM M=%d through w1: %.0f TFLOP/s\n\n", gbs, M,
               tflops);
        gpu->free(gpu, x), gpu->free(gpu, y);
        const int shapes[][3] = {{1, 512, 750}, {128, 4, 100}, {128, 4, 400}, {128, 4, 750}, {32, 4, 400}};
        for (size_t s = 0; s < sizeof shapes / sizeof shapes[0]; s++) {
            batch b = make_batch(shapes[s][0], shapes[s][1], shapes[s][2]);
            run_layer(&L, &b, tflops, gbs); /* HBM moves the copy's read + write: a read-only op's bound */
            free_batch(&b);
        }
    }
    return 0;
}
