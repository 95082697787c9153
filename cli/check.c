/* cli/check.c - `voxtral --check [-d DIR] [-i FILE]`: a preflight in the order a
 * person debugs a new machine: host, build, CUDA driver (and WSL2's loader path),
 * devices (name, compute capability, versions, free/total memory), whether this
 * build can use them, the model's memory need against free VRAM and host RAM, then
 * a smoke transcription on each usable backend.
 *
 * The GPU part uses the CUDA driver API through dlopen("libcuda.so.1"), so the
 * check behaves the same in CPU-only and CUDA builds and never links libcuda.
 *
 * Output (stdout), one line per check, "STATUS NAME detail", STATUS one of ok, FAIL,
 * warn, info, skip; a FAIL or warn is followed by "      fix: ..." lines; the last
 * line is "result: PASS", "result: PASS on the CPU (...)" or "result: FAIL (N
 * problems: names)".
 *
 * The rule (exit status): --check checks the backend a run with the same --backend
 * would use, and exits 0 when that run would work:
 * - --backend auto (the default): some backend transcribes. A CUDA build on a
 *   machine without a usable GPU passes on the CPU; what keeps the GPU from working
 *   is "warn" (with its fix), and the result line says "PASS on the CPU".
 * - --backend cuda: the GPU must work (its problems are FAIL; exit 1 without one).
 * - --backend cpu: the CPU must work; the GPU lines are information.
 * Problems that break every backend (the model, host memory, the CPU smoke run) are
 * always FAIL.
 */
#include <dlfcn.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <unistd.h>

#include "voxtral.h"
#include "cli.h"

/* ---- report lines ------------------------------------------------------------------ */
typedef struct {
    int verbose;        /* 0: only problems and the result; 2: extra detail */
    int n_fail;
    char failed[256];   /* names of the failed checks, comma-separated */
    const char *gpu_bad; /* the status of a GPU problem: FAIL (--backend cuda), warn, info */
    int n_gpu_warn;
} report;

static void line(report *r, const char *status, const char *name, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
static void line(report *r, const char *status, const char *name, const char *fmt, ...) {
    int problem = !strcmp(status, "FAIL");
    if (!strcmp(status, "warn") && status == r->gpu_bad) r->n_gpu_warn++;
    if (problem) {
        size_t n = strlen(r->failed);
        snprintf(r->failed + n, sizeof r->failed - n, "%s%s", r->n_fail ? ", " : "", name);
        r->n_fail++;
    }
    if (r->verbose == 0 && !problem && strcmp(status, "warn")) return;
    char msg[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    printf("%-5s %-10s %s\n", status, name, msg);
    fflush(stdout);
}

/* the next step, printed under the FAIL/warn line it belongs to */
static void fix(report *r, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void fix(report *r, const char *fmt, ...) {
    (void)r;
    va_list ap;
    va_start(ap, fmt);
    printf("      fix: ");
    vprintf(fmt, ap);
    printf("\n");
    va_end(ap);
    fflush(stdout);
}

static double gib(double bytes) { return bytes / 1073741824.0; }
static double mib(double bytes) { return bytes / 1048576.0; }

/* ---- host ---------------------------------------------------------------------------- */
static void cpu_model(char *out, size_t n) {
    snprintf(out, n, "unknown CPU");
    FILE *f = fopen("/proc/cpuinfo", "r");
    if (!f) return;
    char buf[512];
    while (fgets(buf, sizeof buf, f)) {
        if (!strncmp(buf, "model name", 10) || !strncmp(buf, "Model", 5)) {
            char *p = strchr(buf, ':');
            if (!p) continue;
            p++;
            while (*p == ' ' || *p == '\t') p++;
            p[strcspn(p, "\n")] = 0;
            snprintf(out, n, "%s", p);
            break;
        }
    }
    fclose(f);
}

/* MemTotal / MemAvailable from /proc/meminfo, bytes (0 when unknown) */
static void host_memory(double *total, double *avail) {
    *total = *avail = 0;
    FILE *f = fopen("/proc/meminfo", "r");
    if (!f) return;
    char key[64];
    double kb;
    while (fscanf(f, "%63s %lf kB\n", key, &kb) == 2) {
        if (!strcmp(key, "MemTotal:")) *total = kb * 1024;
        if (!strcmp(key, "MemAvailable:")) *avail = kb * 1024;
    }
    fclose(f);
}

static int is_wsl(void) {
    FILE *f = fopen("/proc/version", "r");
    if (!f) return 0;
    char buf[512] = "";
    if (!fgets(buf, sizeof buf, f)) buf[0] = 0;
    fclose(f);
    for (char *p = buf; *p; p++) *p = (char)(*p | 0x20); /* ASCII lower case */
    return strstr(buf, "microsoft") != NULL || strstr(buf, "wsl") != NULL;
}

/* ---- the CUDA driver API, loaded at run time ------------------------------------------ */
enum {
    CU_ATTR_CLOCK_KHZ = 13, CU_ATTR_SM_COUNT = 16, CU_ATTR_MEM_CLOCK_KHZ = 36,
    CU_ATTR_BUS_WIDTH = 37, CU_ATTR_CC_MAJOR = 75, CU_ATTR_CC_MINOR = 76,
    CU_NO_DEVICE = 100, CU_SYSTEM_DRIVER_MISMATCH = 803, CU_COMPAT_NOT_SUPPORTED = 804,
    BF16_MIN_MAJOR = 8, /* the CUDA backend's BF16 path needs sm_80+; below, its fp16 path
                           (vox_options.gpu_path "auto") */
    MAX_GPUS = 16,
};

typedef struct {
    void *lib;
    int (*Init)(unsigned);
    int (*DriverGetVersion)(int *);
    int (*DeviceGetCount)(int *);
    int (*DeviceGet)(int *, int);
    int (*DeviceGetName)(char *, int, int);
    int (*DeviceGetAttribute)(int *, int, int);
    int (*DeviceTotalMem)(size_t *, int);
    int (*PrimaryCtxRetain)(void **, int);
    int (*PrimaryCtxRelease)(int);
    int (*CtxSetCurrent)(void *);
    int (*MemGetInfo)(size_t *, size_t *);
    int (*GetErrorName)(int, const char **);
} cuda_driver;

typedef struct {
    char name[128];
    int major, minor, sm_count;
    double total, free; /* bytes; free < 0 when unknown */
    double peak_gb_s;   /* from memory clock and bus width, 0 if unknown */
} gpu_info;

static void *sym(void *lib, const char *v2, const char *v1) {
    void *p = v2 ? dlsym(lib, v2) : NULL;
    return p ? p : dlsym(lib, v1);
}

static int cuda_driver_load(cuda_driver *d, char *why, size_t n) {
    memset(d, 0, sizeof *d);
    d->lib = dlopen("libcuda.so.1", RTLD_NOW | RTLD_LOCAL);
    if (!d->lib) {
        snprintf(why, n, "%s", dlerror());
        return -1;
    }
    *(void **)&d->Init = sym(d->lib, NULL, "cuInit");
    *(void **)&d->DriverGetVersion = sym(d->lib, NULL, "cuDriverGetVersion");
    *(void **)&d->DeviceGetCount = sym(d->lib, NULL, "cuDeviceGetCount");
    *(void **)&d->DeviceGet = sym(d->lib, NULL, "cuDeviceGet");
    *(void **)&d->DeviceGetName = sym(d->lib, NULL, "cuDeviceGetName");
    *(void **)&d->DeviceGetAttribute = sym(d->lib, NULL, "cuDeviceGetAttribute");
    *(void **)&d->DeviceTotalMem = sym(d->lib, "cuDeviceTotalMem_v2", "cuDeviceTotalMem");
    *(void **)&d->PrimaryCtxRetain = sym(d->lib, NULL, "cuDevicePrimaryCtxRetain");
    *(void **)&d->PrimaryCtxRelease = sym(d->lib, "cuDevicePrimaryCtxRelease_v2", "cuDevicePrimaryCtxRelease");
    *(void **)&d->CtxSetCurrent = sym(d->lib, NULL, "cuCtxSetCurrent");
    *(void **)&d->MemGetInfo = sym(d->lib, "cuMemGetInfo_v2", "cuMemGetInfo");
    *(void **)&d->GetErrorName = sym(d->lib, NULL, "cuGetErrorName");
    if (!d->Init || !d->DriverGetVersion || !d->DeviceGetCount || !d->DeviceGet || !d->DeviceGetName ||
        !d->DeviceGetAttribute || !d->DeviceTotalMem) {
        snprintf(why, n, "libcuda.so.1 lacks the basic driver API entry points (a stub or broken install)");
        dlclose(d->lib);
        d->lib = NULL;
        return -1;
    }
    return 0;
}

static const char *cu_err(const cuda_driver *d, int rc) {
    const char *s = NULL;
    if (d->GetErrorName && d->GetErrorName(rc, &s) == 0 && s) return s;
    static char buf[32];
    snprintf(buf, sizeof buf, "CUresult %d", rc);
    return buf;
}

static void gpu_query(const cuda_driver *d, int ordinal, gpu_info *g) {
    memset(g, 0, sizeof *g);
    g->free = -1;
    int dev = 0;
    if (d->DeviceGet(&dev, ordinal) != 0) {
        snprintf(g->name, sizeof g->name, "device %d (cuDeviceGet failed)", ordinal);
        return;
    }
    if (d->DeviceGetName(g->name, sizeof g->name, dev) != 0) snprintf(g->name, sizeof g->name, "device %d", ordinal);
    d->DeviceGetAttribute(&g->major, CU_ATTR_CC_MAJOR, dev);
    d->DeviceGetAttribute(&g->minor, CU_ATTR_CC_MINOR, dev);
    d->DeviceGetAttribute(&g->sm_count, CU_ATTR_SM_COUNT, dev);
    int mem_khz = 0, bus_bits = 0;
    d->DeviceGetAttribute(&mem_khz, CU_ATTR_MEM_CLOCK_KHZ, dev);
    d->DeviceGetAttribute(&bus_bits, CU_ATTR_BUS_WIDTH, dev);
    g->peak_gb_s = 2.0 * mem_khz * 1e3 * bus_bits / 8 / 1e9; /* double data rate */
    size_t tot = 0;
    if (d->DeviceTotalMem(&tot, dev) == 0) g->total = (double)tot;
    /* free memory needs a context: the primary one, released again at once */
    void *ctx = NULL;
    size_t fr = 0;
    if (d->PrimaryCtxRetain && d->CtxSetCurrent && d->MemGetInfo && d->PrimaryCtxRelease &&
        d->PrimaryCtxRetain(&ctx, dev) == 0) {
        if (d->CtxSetCurrent(ctx) == 0 && d->MemGetInfo(&fr, &tot) == 0) g->free = (double)fr;
        d->CtxSetCurrent(NULL);
        d->PrimaryCtxRelease(dev);
    }
}

/* the kernel module's version ("550.54.15"), empty when unknown (WSL2 has none) */
static void kernel_driver_version(char *out, size_t n) {
    out[0] = 0;
    FILE *f = fopen("/sys/module/nvidia/version", "r");
    if (!f) return;
    if (fgets(out, (int)n, f)) out[strcspn(out, "\n")] = 0;
    else out[0] = 0;
    fclose(f);
}

/* version of the CUDA runtime this binary runs with (CUDA builds link libcudart
 * dynamically); 0 when there is none */
static int cuda_runtime_version(void) {
    int (*get)(int *);
    *(void **)&get = dlsym(RTLD_DEFAULT, "cudaRuntimeGetVersion");
    int v = 0;
    if (!get || get(&v) != 0) return 0;
    return v;
}

/* ---- the model's memory need: the engine's own formula (vox_model_memory) ---------------- */
static const char *check_quant; /* --quant: the need once quantized, and the smoke runs */
static int check_kv_window;     /* --kv-window: the decoder KV window of the plan and the runs */

/* the CUDA backend's own scratch (cuBLASLt workspace, BF16 inputs, attention partials) */
static const double CUDA_SCRATCH_BYTES = (32 << 20) + (32 << 20) + (16 << 20);
/* quantized weights: the GEMM path's dense tile and output scratch (voxtral_cuda.c:
 * QTILE_ELEMS BF16/FP16 + QOUT_FLOATS fp32) */
static const double CUDA_QTILE_BYTES = (64 << 20) + (16 << 20);

/* ---- smoke transcription ------------------------------------------------------------------ */
typedef struct {
    int ids[4096];
    int n_ids;
    char text[256];
    int text_len;
} smoke_out;

static void smoke_cb(void *user, const vox_token *t) {
    smoke_out *o = user;
    if (o->n_ids < (int)(sizeof o->ids / sizeof o->ids[0])) o->ids[o->n_ids] = t->id;
    o->n_ids++;
    for (int i = 0; i < t->piece_len && o->text_len < (int)sizeof o->text - 1; i++) {
        unsigned char ch = (unsigned char)t->piece[i];
        o->text[o->text_len++] = ch < 0x20 || ch == '"' ? ' ' : (char)ch;
    }
    o->text[o->text_len] = 0;
}

/* the first `max` bytes of s, cut at a UTF-8 character boundary, leading spaces dropped */
static const char *excerpt(char *s, int max) {
    while (*s == ' ') s++;
    int n = (int)strlen(s);
    if (n > max) {
        n = max;
        while (n > 0 && ((unsigned char)s[n] & 0xC0) == 0x80) n--;
        s[n] = 0;
    }
    return s;
}

/* samples/hello.wav beside the working directory or beside the executable */
static int default_audio(char *out, size_t n) {
    if (access("samples/hello.wav", R_OK) == 0) {
        snprintf(out, n, "samples/hello.wav");
        return 1;
    }
    char exe[4096];
    ssize_t len = readlink("/proc/self/exe", exe, sizeof exe - 1);
    if (len <= 0) return 0;
    exe[len] = 0;
    char *slash = strrchr(exe, '/');
    if (!slash) return 0;
    *slash = 0;
    if (strlen(exe) + 20 > n) return 0;
    snprintf(out, n, "%s/samples/hello.wav", exe);
    return access(out, R_OK) == 0;
}

/* Transcribes the audio on `backend`; prints one line; returns 0 on success. */
static int smoke(report *r, const char *dir, const char *backend, const char *audio_path,
                 int vox_verbose, smoke_out *o) {
    const char *bad = strcmp(backend, "cuda") ? "FAIL" : r->gpu_bad;
    char name[32];
    snprintf(name, sizeof name, "smoke %s", backend);
    vox_options opt;
    vox_options_default(&opt);
    opt.backend = backend;
    opt.verbose = vox_verbose;
    opt.quant = check_quant;
    opt.kv_window = check_kv_window;
    vox_ctx *ctx = vox_open(dir, &opt);
    if (!ctx) {
        line(r, bad, name, "loading the model on %s: %s", backend, vox_last_error());
        if (!strcmp(backend, "cuda")) fix(r, "see the driver/gpu lines above; until fixed use --backend cpu");
        else fix(r, "check the model directory (scripts/download_model.sh DIR fetches it again)");
        return -1;
    }
    int rate = vox_sample_rate(ctx);
    float *pcm = NULL;
    int64_t n = 0;
    const char *what = audio_path;
    if (audio_path) {
        if (vox_audio_load(audio_path, rate, &pcm, &n) != 0) {
            line(r, bad, name, "%s", vox_last_error());
            fix(r, "pass a readable audio file with -i (WAV, FLAC, OGG, MP3)");
            vox_close(ctx);
            return -1;
        }
        const char *slash = strrchr(audio_path, '/');
        what = slash ? slash + 1 : audio_path;
    } else { /* no file: 2 s of a 440 Hz tone */
        n = 2 * (int64_t)rate;
        pcm = malloc(sizeof(float) * (size_t)n);
        if (!pcm) {
            vox_close(ctx);
            line(r, bad, name, "out of memory");
            return -1;
        }
        for (int64_t i = 0; i < n; i++) pcm[i] = 0.3f * sinf(2.0f * (float)M_PI * 440.0f * (float)i / rate);
        what = "2 s tone";
    }
    memset(o, 0, sizeof *o);
    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    vox_stream *s = vox_stream_new(ctx, smoke_cb, o);
    int rc = s ? 0 : -1;
    for (int64_t off = 0; !rc && off < n; off += rate)
        rc = vox_stream_feed(s, pcm + off, (size_t)(n - off < rate ? n - off : rate));
    if (!rc) rc = vox_stream_finish(s);
    clock_gettime(CLOCK_MONOTONIC, &t1);
    double run_ms = (t1.tv_sec - t0.tv_sec) * 1e3 + (t1.tv_nsec - t0.tv_nsec) / 1e6;
    if (rc) {
        line(r, bad, name, "transcribing %s: %s", what, vox_last_error());
        if (!strcmp(backend, "cuda")) {
            fix(r, "'no kernel image' means this build lacks the GPU's architecture: rebuild with "
                   "make cuda CUDA_ARCH=<sm, e.g. 75>; otherwise (or on a card this backend does not "
                   "support) use --backend cpu");
        }
    } else {
        vox_stats st;
        vox_stream_stats(s, &st);
        double audio_s = (double)n / rate;
        line(r, "ok", name,
             "%s (%.1f s): load %.0f ms, first token %.0f ms, %.2f ms/step (p95 %.2f, %d steps), "
             "RTF %.3f, %d ids: \"%s\"",
             what, audio_s, vox_load_ms(ctx), st.first_token_ms, st.steps ? st.decode_ms / st.steps : 0.0,
             st.step_ms_p95, st.steps, audio_s > 0 ? run_ms / 1e3 / audio_s : 0.0, o->n_ids,
             excerpt(o->text, 60));
        if (r->verbose >= 2)
            printf("      backend %s, holds %.0f MiB, encoder %.1f ms for %d tokens\n", vox_backend_name(ctx),
                   mib((double)vox_backend_bytes(ctx)), st.encoder_ms, st.encoder_tokens);
    }
    vox_stream_free(s);
    vox_close(ctx);
    free(pcm);
    return rc;
}

/* ---- the preflight ---------------------------------------------------------------------- */
int cli_check(const char *dir, const char *audio, const char *backend, const char *quant, int kv_window,
              int verbose) {
    check_quant = quant;
    check_kv_window = kv_window;
    report r = {.verbose = verbose};
    int built = vox_cuda_built();
    if (!backend) backend = "auto";
    int want_cuda = !strcmp(backend, "cuda"), want_cpu = !strcmp(backend, "cpu");
    static const char GPU_WARN[] = "warn"; /* its own address: line() counts these */
    r.gpu_bad = want_cuda ? "FAIL" : built && !want_cpu ? GPU_WARN : "info";
    const char *gpu_bad = r.gpu_bad;
    int rt = built ? cuda_runtime_version() : 0;
    if (verbose) printf("voxtral --check: preflight\n");

    /* 1. host */
    char cpu[256];
    cpu_model(cpu, sizeof cpu);
    double ram_total, ram_avail;
    host_memory(&ram_total, &ram_avail);
    long cores = sysconf(_SC_NPROCESSORS_ONLN);
    line(&r, "ok", "host", "%s, %ld cores, %.1f GiB RAM (%.1f GiB available)", cpu, cores, gib(ram_total),
         gib(ram_avail));
    line(&r, "ok", "build", "%s", built ? "CPU + CUDA backends" : "CPU backend only (built without CUDA)");
    if (built && rt) line(&r, "info", "runtime", "CUDA runtime %d.%d (libcudart)", rt / 1000, rt % 1000 / 10);

    /* 2. driver */
    int wsl = is_wsl();
    cuda_driver drv;
    char why[512] = "";
    int n_gpus = 0, drv_version = 0, gpu_ok = 0; /* gpu_ok: device 0 can run the CUDA backend */
    gpu_info gpus[MAX_GPUS];
    int have_driver = cuda_driver_load(&drv, why, sizeof why) == 0;
    if (wsl) {
        int wsl_lib = access("/usr/lib/wsl/lib/libcuda.so.1", F_OK) == 0;
        const char *ld = getenv("LD_LIBRARY_PATH");
        Dl_info info = {0};
        const char *loaded = have_driver && dladdr(*(void **)&drv.Init, &info) && info.dli_fname ? info.dli_fname : "";
        if (!wsl_lib) {
            line(&r, gpu_bad, "wsl2", "WSL2, but /usr/lib/wsl/lib/libcuda.so.1 is missing");
            fix(&r, "install the NVIDIA driver for WSL on the Windows side (not inside Linux), then wsl --shutdown");
        } else if (have_driver && !strstr(loaded, "/usr/lib/wsl/lib") && !strstr(loaded, "wsl")) {
            line(&r, "warn", "wsl2", "WSL2, but libcuda.so.1 was loaded from %s, not /usr/lib/wsl/lib", loaded);
            fix(&r, "a Linux driver package inside WSL shadows the Windows one: remove it, or put "
                    "/usr/lib/wsl/lib first in LD_LIBRARY_PATH");
        } else {
            line(&r, "ok", "wsl2", "WSL2, /usr/lib/wsl/lib/libcuda.so.1 %s", have_driver ? "loaded" : "present");
        }
        if (!have_driver && wsl_lib && (!ld || !strstr(ld, "/usr/lib/wsl/lib")))
            snprintf(why + strlen(why), sizeof why - strlen(why), " (/usr/lib/wsl/lib is not on the loader path)");
    }
    if (!have_driver) {
        line(&r, gpu_bad, "driver", "no CUDA driver (%s)", why);
        if (wsl)
            fix(&r, "export LD_LIBRARY_PATH=/usr/lib/wsl/lib:$LD_LIBRARY_PATH (or: echo /usr/lib/wsl/lib | "
                    "sudo tee /etc/ld.so.conf.d/wsl.conf && sudo ldconfig)");
        else if (built)
            fix(&r, "install the NVIDIA driver (Ubuntu: sudo ubuntu-drivers install; then reboot and check "
                    "nvidia-smi), or run on the CPU: voxtral --backend cpu");
    } else {
        int rc = drv.Init(0);
        drv.DriverGetVersion(&drv_version);
        char dvs[32];
        snprintf(dvs, sizeof dvs, "%d.%d", drv_version / 1000, drv_version % 1000 / 10);
        if (rc == CU_NO_DEVICE || (rc == 0 && (drv.DeviceGetCount(&n_gpus) != 0 || n_gpus == 0))) {
            const char *vis = getenv("CUDA_VISIBLE_DEVICES");
            line(&r, gpu_bad, "driver", "driver supports CUDA %s but sees no GPU", dvs);
            if (vis) fix(&r, "CUDA_VISIBLE_DEVICES=\"%s\" hides devices: unset it or name a valid one", vis);
            else if (built)
                fix(&r, "check nvidia-smi; in a container pass --gpus all (docker) or the device nodes; "
                        "or run on the CPU: voxtral --backend cpu");
            n_gpus = 0;
        } else if (rc != 0) {
            line(&r, gpu_bad, "driver", "cuInit failed: %s (driver supports CUDA %s)",
                 cu_err(&drv, rc), dvs);
            if (rc == CU_SYSTEM_DRIVER_MISMATCH)
                fix(&r, "the kernel module and libcuda versions differ (driver updated without a reboot?): reboot");
            else if (rc == CU_COMPAT_NOT_SUPPORTED)
                fix(&r, "a forward-compatibility libcuda is on the loader path for a GPU that does not support it: "
                        "remove cuda-compat from LD_LIBRARY_PATH");
            else
                fix(&r, "run nvidia-smi and check dmesg for NVRM errors; reinstall the driver if needed; "
                        "meanwhile use --backend cpu");
            n_gpus = 0;
        } else {
            char kv[64];
            kernel_driver_version(kv, sizeof kv);
            line(&r, "ok", "driver", "NVIDIA driver %s, supports CUDA %s, %d GPU%s", kv[0] ? kv : "(version unknown)",
                 dvs, n_gpus, n_gpus == 1 ? "" : "s");
            if (built && rt > drv_version) {
                int major_gap = rt / 1000 > drv_version / 1000;
                line(&r, major_gap ? gpu_bad : "warn", "versions", "this build's CUDA runtime %d.%d is newer than "
                     "the driver's CUDA %s", rt / 1000, rt % 1000 / 10, dvs);
                fix(&r, "update the NVIDIA driver, or rebuild with an older toolkit: make cuda CUDA_HOME=/usr/local/cuda-%d.%d",
                    drv_version / 1000, drv_version % 1000 / 10);
            }
        }
    }

    /* 3. devices */
    if (n_gpus > MAX_GPUS) n_gpus = MAX_GPUS;
    for (int i = 0; i < n_gpus; i++) {
        gpu_info *g = &gpus[i];
        gpu_query(&drv, i, g);
        char nm[16], fr[48] = "free unknown";
        snprintf(nm, sizeof nm, "gpu %d", i);
        if (g->free >= 0) snprintf(fr, sizeof fr, "%.1f GiB free", gib(g->free));
        int bf16 = g->major >= BF16_MIN_MAJOR;
        line(&r, "ok", nm, "%s, sm_%d%d, %d SMs, %.1f GiB total, %s%s", g->name, g->major, g->minor, g->sm_count,
             gib(g->total), fr, i == 0 && n_gpus > 1 ? " (the one voxtral uses)" : "");
        if (verbose >= 2 && g->peak_gb_s > 0) printf("      peak memory bandwidth ~%.0f GB/s\n", g->peak_gb_s);
        if (i > 0) continue;
        const char *path = bf16 ? "BF16 GEMV/GEMM path" : "fp16 path (no BF16 below compute capability 8.0; "
                                                          "fp32 where fp16 cannot hold a tensor)";
        if (!built) {
            line(&r, "warn", "support", "sm_%d%d can run the CUDA backend (%s), but this build has none", g->major,
                 g->minor, path);
            fix(&r, "install the CUDA toolkit and rebuild: make cuda (pass CUDA_HOME=/path/to/cuda if nvcc is "
                    "not in /usr/local/cuda; make cuda-check explains what is missing)");
        } else {
            /* below 8.0 the smoke run decides: whether the fp16 path runs there depends on
             * the architectures this build holds */
            line(&r, bf16 ? "ok" : "info", "support", "sm_%d%d: %s", g->major, g->minor, path);
            gpu_ok = 1;
        }
    }

    /* 4. the model's memory need */
    if (!dir) {
        line(&r, "skip", "model", "no -d DIR: memory need and smoke transcription not checked");
    } else {
        vox_memory_estimate cpu_need, gpu_need;
        if (vox_model_memory(dir, "cpu", quant, kv_window, &cpu_need) != 0 ||
            vox_model_memory(dir, "cuda", quant, kv_window, &gpu_need) != 0) {
            line(&r, "FAIL", "model", "%s", vox_last_error());
            fix(&r, "pass the directory with consolidated.safetensors, params.json and tekken.json "
                    "(scripts/download_model.sh DIR fetches them)");
        } else {
            const int quantized = strcmp(gpu_need.format, "bf16") != 0;
            line(&r, "ok", "model", "%s: weights %.0f MiB%s%s, KV %.0f MiB (decoder window %d + prompt %d), "
                 "workspace %.0f MiB (CPU) / %.0f MiB (CUDA); CUDA total %.2f GiB", dir, mib(cpu_need.weights),
                 quantized ? " quantized " : "", quantized ? gpu_need.format : "",
                 mib(cpu_need.kv), cpu_need.dec_window, cpu_need.prompt_len, mib(cpu_need.workspace),
                 mib(gpu_need.workspace + CUDA_SCRATCH_BYTES + (quantized ? CUDA_QTILE_BYTES : 0)),
                 gib(gpu_need.weights + gpu_need.kv + gpu_need.workspace + CUDA_SCRATCH_BYTES +
                     (quantized ? CUDA_QTILE_BYTES : 0)));
            double host = cpu_need.weights + cpu_need.kv + cpu_need.workspace;
            if (ram_avail > 0 && host > ram_avail) {
                line(&r, "FAIL", "host mem", "the CPU backend needs %.1f GiB (weights mmap'd + KV + workspace), "
                     "%.1f GiB available", gib(host), gib(ram_avail));
                fix(&r, "close other programs; the KV cache grows with the decoder window "
                        "(sliding_window in %s/params.json)", dir);
            } else {
                line(&r, "ok", "host mem", "CPU backend needs %.2f GiB of %.1f GiB available", gib(host), gib(ram_avail));
            }
            if (gpu_ok) {
                double need = gpu_need.weights + gpu_need.kv + gpu_need.workspace + CUDA_SCRATCH_BYTES +
                              (strcmp(gpu_need.format, "bf16") ? CUDA_QTILE_BYTES : 0);
                if (gpus[0].free >= 0 && need > gpus[0].free) {
                    line(&r, gpu_bad, "vram", "the CUDA backend needs %.2f GiB, %.2f GiB free on %s", gib(need),
                         gib(gpus[0].free), gpus[0].name);
                    fix(&r, "free GPU memory (nvidia-smi lists the processes holding it), pick a smaller window "
                            "(decoder sliding_window in %s/params.json: KV is %.0f MiB at %d), or use --backend cpu",
                        dir, mib(gpu_need.kv), gpu_need.dec_window);
                    gpu_ok = 0;
                } else {
                    line(&r, "ok", "vram", "CUDA backend needs %.2f GiB of %.1f GiB free", gib(need), gib(gpus[0].free));
                }
            }

            /* 5. smoke transcription on each usable backend */
            char path[4200];
            const char *a = audio ? audio : default_audio(path, sizeof path) ? path : NULL;
            smoke_out *out = calloc(2, sizeof *out);
            if (!out) {
                line(&r, "FAIL", "smoke", "out of memory");
                goto done;
            }
            int cpu_rc = smoke(&r, dir, "cpu", a, verbose >= 2, &out[0]);
            int gpu_rc = -1;
            if (gpu_ok && !want_cpu) gpu_rc = smoke(&r, dir, "cuda", a, verbose >= 2, &out[1]);
            else if (built && !want_cpu) line(&r, "skip", "smoke cuda", "no usable GPU (see above)");
            if (cpu_rc == 0 && gpu_rc == 0) {
                int n = out[0].n_ids < out[1].n_ids ? out[0].n_ids : out[1].n_ids, first = -1;
                if (n > (int)(sizeof out->ids / sizeof out->ids[0])) n = sizeof out->ids / sizeof out->ids[0];
                for (int i = 0; i < n && first < 0; i++)
                    if (out[0].ids[i] != out[1].ids[i]) first = i;
                if (first < 0 && out[0].n_ids == out[1].n_ids)
                    line(&r, "ok", "agree", "cpu and cuda give the same %d ids", n);
                else
                    line(&r, "info", "agree", "cpu and cuda ids differ from id %d (%d vs %d ids): "
                         "scripts/accuracy_regression.sh measures by how much", first < 0 ? n : first,
                         out[0].n_ids, out[1].n_ids);
            }
            free(out);
            if (gpu_rc != 0 && built && !want_cpu && r.n_gpu_warn == 0) r.n_gpu_warn++; /* a failed smoke */
        }
    }
done:
    if (drv.lib) dlclose(drv.lib);
    if (want_cuda && !built) line(&r, "FAIL", "backend", "--backend cuda, but this build has no CUDA backend");
    if (want_cuda && built && !gpu_ok && !r.n_fail) line(&r, "FAIL", "backend", "--backend cuda: no usable GPU");
    if (r.n_fail) printf("result: FAIL (%d problem%s: %s)\n", r.n_fail, r.n_fail == 1 ? "" : "s", r.failed);
    else if (r.n_gpu_warn && dir)
        printf("result: PASS on the CPU (the CUDA backend cannot run here: see the warn lines; "
               "--check --backend cuda fails)\n");
    else if (r.n_gpu_warn)
        printf("result: PASS (no model checked: -d DIR; the CUDA backend cannot run here: see the warn lines)\n");
    else printf("result: PASS\n");
    fflush(stdout);
    return r.n_fail ? 1 : 0;
}
