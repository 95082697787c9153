/* test_audio.c - checks voxtral_audio.c and voxtral_audiofile.c: exact 16-bit input,
 * downmix, soxr resampling, the log-mel against a naive double-precision DFT,
 * incremental == offline mel (bit-exact), error messages, one open per file (FIFOs,
 * memory), bounds on rates and lengths, and the reference's mel fixtures
 * (tests/fixtures/<name>/{input.wav,meta.json,mel.npy}) when present.
 *
 * Run from the repository root (uses samples/ and tests/fixtures/). */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <signal.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <sndfile.h>

#include "voxtral_internal.h"
#include "tests/testutil.h"

static char tmpdir[256];

static vox_config audio_config(void) {
    vox_config c;
    memset(&c, 0, sizeof(c));
    c.sampling_rate = 16000;
    c.hop_length = 160;
    c.window_size = 400;
    c.num_mel_bins = 128;
    c.global_log_mel_max = 1.5f;
    c.frame_rate = 12.5f;
    c.samples_per_token = 1280;
    c.mel_per_token = 8;
    return c;
}

/* xorshift64*: a fixed-seed generator, so every run tests the same data */
static uint64_t rng_state = 0x9E3779B97F4A7C15ull;
static uint64_t rng_u64(void) {
    rng_state ^= rng_state >> 12;
    rng_state ^= rng_state << 25;
    rng_state ^= rng_state >> 27;
    return rng_state * 0x2545F4914F6CDD1Dull;
}
static double rng_unit(void) { return (rng_u64() >> 11) * (1.0 / 9007199254740992.0); }
static int64_t rng_range(int64_t lo, int64_t hi) { return lo + (int64_t)(rng_u64() % (uint64_t)(hi - lo + 1)); }

static int write_pcm16(const char *path, int format, int rate, int ch, const short *x, int64_t frames) {
    SF_INFO info = {.samplerate = rate, .channels = ch, .format = format};
    SNDFILE *sf = sf_open(path, SFM_WRITE, &info);
    if (!sf) return -1;
    sf_count_t w = frames ? sf_writef_short(sf, x, frames) : 0;
    sf_close(sf);
    return w == frames ? 0 : -1;
}

/* ---- 16-bit input ------------------------------------------------------------ */

static void test_pcm16_exact(void) {
    const int64_t n = 65536;
    short *x = malloc(sizeof(short) * n * 2);
    for (int64_t i = 0; i < n; i++) x[i] = (short)(i - 32768);
    char path[512];
    const char *fmts[2] = {"wav", "flac"};
    const int sffmt[2] = {SF_FORMAT_WAV | SF_FORMAT_PCM_16, SF_FORMAT_FLAC | SF_FORMAT_PCM_16};
    for (int f = 0; f < 2; f++) {
        snprintf(path, sizeof(path), "%s/all16.%s", tmpdir, fmts[f]);
        float *y = NULL;
        int64_t ny = 0;
        int ok = write_pcm16(path, sffmt[f], 16000, 1, x, n) == 0 &&
                 vox_audio_load(path, 16000, &y, &ny) == 0 && ny == n;
        int64_t bad = 0;
        for (int64_t i = 0; ok && i < n; i++) bad += y[i] != (float)x[i] / 32768.0f;
        char name[64];
        snprintf(name, sizeof(name), "pcm16 %s mono is int16/32768 exactly", fmts[f]);
        tu_check(ok && bad == 0, name, "%lld samples, %lld differ%s%s", (long long)ny,
                 (long long)bad, ok ? "" : ", load failed: ", ok ? "" : vox_last_error());
        free(y);
    }
    /* stereo: channel average, still exact for 16-bit values */
    for (int64_t i = 0; i < n; i++) {
        x[2 * i] = (short)(i - 32768);
        x[2 * i + 1] = (short)((i * 7919) % 65536 - 32768);
    }
    snprintf(path, sizeof(path), "%s/stereo16.wav", tmpdir);
    float *y = NULL;
    int64_t ny = 0;
    int ok = write_pcm16(path, SF_FORMAT_WAV | SF_FORMAT_PCM_16, 16000, 2, x, n) == 0 &&
             vox_audio_load(path, 16000, &y, &ny) == 0 && ny == n;
    int64_t bad = 0;
    for (int64_t i = 0; ok && i < n; i++)
        bad += y[i] != (float)((x[2 * i] + x[2 * i + 1]) / 65536.0);
    tu_check(ok && bad == 0, "pcm16 stereo is the exact channel mean", "%lld differ", (long long)bad);
    free(y);
    free(x);
}

/* samples/hello.wav read independently as shorts, and its FLAC twin */
static void test_samples(void) {
    const char *wav = "samples/hello.wav", *flac = "samples/hello.flac";
    SF_INFO info;
    memset(&info, 0, sizeof(info));
    SNDFILE *sf = sf_open(wav, SFM_READ, &info);
    if (!sf) {
        tu_check(0, "samples/hello.wav readable", "%s (run from the repo root)", sf_strerror(NULL));
        return;
    }
    short *s = malloc(sizeof(short) * info.frames * info.channels);
    sf_count_t ns = sf_readf_short(sf, s, info.frames);
    sf_close(sf);
    float *a = NULL, *b = NULL;
    int64_t na = 0, nb = 0;
    int ok = info.channels == 1 && info.samplerate == 16000 && vox_audio_load(wav, 16000, &a, &na) == 0 &&
             na == ns;
    int64_t bad = 0;
    for (int64_t i = 0; ok && i < na; i++) bad += a[i] != s[i] / 32768.0f;
    tu_check(ok && bad == 0, "samples/hello.wav loads as int16/32768", "%lld samples (%.2f s), %lld differ",
             (long long)na, na / 16000.0, (long long)bad);
    ok = ok && vox_audio_load(flac, 16000, &b, &nb) == 0 && nb == na;
    bad = 0;
    for (int64_t i = 0; ok && i < na; i++) bad += a[i] != b[i];
    tu_check(ok && bad == 0, "samples/hello.flac == samples/hello.wav", "%lld samples, %lld differ",
             (long long)nb, (long long)bad);
    free(b);
    b = NULL;
    /* the 44.1 kHz stereo twin resampled to 16 kHz: same length, same waveform
     * up to the two resamplers' transition bands */
    ok = ok && vox_audio_load("samples/hello_44k_stereo.wav", 16000, &b, &nb) == 0;
    double num = 0, den = 0;
    for (int64_t i = 0; ok && i < na && i < nb; i++) {
        num += (a[i] - b[i]) * (double)(a[i] - b[i]);
        den += (double)a[i] * a[i];
    }
    double rel = ok ? sqrt(num / (den + 1e-30)) : 1;
    tu_check(ok && llabs(nb - na) <= 2 && rel < 0.05, "samples/hello_44k_stereo.wav -> 16 kHz",
             "%lld samples vs %lld, relative rms difference %.2e", (long long)nb, (long long)na, rel);
    free(a);
    free(b);
    free(s);
}

/* ---- resampling ------------------------------------------------------------ */

/* Frequency from linearly interpolated upward zero crossings. */
static double zero_cross_freq(const float *x, int64_t lo, int64_t hi, int rate) {
    double first = -1, last = -1;
    int64_t count = 0;
    for (int64_t i = lo; i + 1 < hi; i++) {
        if (x[i] < 0 && x[i + 1] >= 0) {
            double t = i + (double)-x[i] / ((double)x[i + 1] - x[i]);
            if (first < 0) first = t;
            last = t;
            count++;
        }
    }
    return count > 1 ? (count - 1) * (double)rate / (last - first) : 0;
}

static void test_resample(void) {
    const int in_rate = 44100, out_rate = 16000;
    const int64_t n = 2 * in_rate;
    const double f0 = 1000.0, amp_l = 0.5, amp_r = 0.3;
    short *x = malloc(sizeof(short) * n * 2);
    for (int64_t i = 0; i < n; i++) {
        double s = sin(2 * M_PI * f0 * i / in_rate);
        x[2 * i] = (short)lrint(32767 * amp_l * s);
        x[2 * i + 1] = (short)lrint(32767 * amp_r * s);
    }
    char path[512];
    snprintf(path, sizeof(path), "%s/sine44k.wav", tmpdir);
    float *y = NULL;
    int64_t ny = 0;
    int ok = write_pcm16(path, SF_FORMAT_WAV | SF_FORMAT_PCM_16, in_rate, 2, x, n) == 0 &&
             vox_audio_load(path, out_rate, &y, &ny) == 0;
    int64_t expect = (int64_t)llround((double)n * out_rate / in_rate);
    tu_check(ok && llabs(ny - expect) <= 1, "resample 44.1 kHz stereo: length",
             "%lld samples, expected %lld", (long long)ny, (long long)expect);
    if (!ok || ny < out_rate) {
        free(x);
        free(y);
        return;
    }
    /* away from the edges (filter ramp-up) */
    const int64_t lo = out_rate / 4, hi = ny - out_rate / 4;
    double f = zero_cross_freq(y, lo, hi, out_rate);
    /* least-squares fit a sin + b cos at f0 and the residual */
    double ss = 0, sc = 0, cc = 0, ys = 0, yc = 0;
    for (int64_t i = lo; i < hi; i++) {
        double s = sin(2 * M_PI * f0 * i / out_rate), c = cos(2 * M_PI * f0 * i / out_rate);
        ss += s * s;
        sc += s * c;
        cc += c * c;
        ys += y[i] * s;
        yc += y[i] * c;
    }
    double det = ss * cc - sc * sc;
    double a = (ys * cc - yc * sc) / det, b = (yc * ss - ys * sc) / det;
    double amp = sqrt(a * a + b * b), res = 0, tot = 0;
    for (int64_t i = lo; i < hi; i++) {
        double m = a * sin(2 * M_PI * f0 * i / out_rate) + b * cos(2 * M_PI * f0 * i / out_rate);
        res += (y[i] - m) * (y[i] - m);
        tot += m * m;
    }
    double rel = sqrt(res / tot), want_amp = 32767.0 / 32768.0 * (amp_l + amp_r) / 2;
    tu_check(fabs(f - f0) < 0.05, "resample 44.1 kHz stereo: sine frequency", "%.4f Hz (want %.0f)", f, f0);
    tu_check(fabs(amp / want_amp - 1) < 1e-3 && rel < 1e-3, "resample 44.1 kHz stereo: sine shape",
             "amplitude %.5f (want %.5f), residual %.2e of rms", amp, want_amp, rel);
    free(x);
    free(y);
}

/* ---- log-mel vs a naive DFT ----------------------------------------------- */

static double slaney_mel(double f) { return f < 1000 ? 3 * f / 200 : 15 + 27 * log(f / 1000) / log(6.4); }
static double slaney_hz(double m) { return m < 15 ? 200 * m / 3 : 1000 * exp((m - 15) * log(6.4) / 27); }

/* Straight from the recipe, all in double: reflect-centred frames, periodic Hann,
 * O(N^2) DFT, Slaney triangles, log10, floor, (x + 4) / 4. */
static void naive_mel(const vox_config *c, const float *x, int64_t n, float *out) {
    const int N = c->window_size, hop = c->hop_length, nb = N / 2 + 1, nm = c->num_mel_bins;
    const int64_t frames = n / hop;
    double *edge = malloc(sizeof(double) * (nm + 2)), *pw = malloc(sizeof(double) * nb);
    double *cosT = malloc(sizeof(double) * N), *sinT = malloc(sizeof(double) * N);
    double *fr = malloc(sizeof(double) * N);
    double top = slaney_mel(c->sampling_rate / 2.0);
    for (int i = 0; i < nm + 2; i++) edge[i] = slaney_hz(top * i / (nm + 1));
    for (int i = 0; i < N; i++) {
        cosT[i] = cos(2 * M_PI * i / N);
        sinT[i] = sin(2 * M_PI * i / N);
    }
    for (int64_t t = 0; t < frames; t++) {
        for (int i = 0; i < N; i++) {
            int64_t j = t * hop + i - N / 2;
            j = j < 0 ? -j : j >= n ? 2 * (n - 1) - j : j;
            fr[i] = x[j] * (0.5 - 0.5 * cosT[i]);
        }
        for (int k = 0; k < nb; k++) {
            double re = 0, im = 0;
            for (int i = 0; i < N; i++) {
                int p = (int)(((int64_t)k * i) % N);
                re += fr[i] * cosT[p];
                im -= fr[i] * sinT[p];
            }
            pw[k] = re * re + im * im;
        }
        for (int m = 0; m < nm; m++) {
            double s = 0;
            for (int k = 0; k < nb; k++) {
                double f = (double)k * c->sampling_rate / N, w = 0;
                if (f > edge[m] && f <= edge[m + 1]) w = (f - edge[m]) / (edge[m + 1] - edge[m]);
                else if (f > edge[m + 1] && f < edge[m + 2]) w = (edge[m + 2] - f) / (edge[m + 2] - edge[m + 1]);
                s += w * 2 / (edge[m + 2] - edge[m]) * pw[k];
            }
            double v = log10(fmax(s, 1e-10));
            v = fmax(v, c->global_log_mel_max - 8.0);
            out[t * nm + m] = (float)((v + 4) / 4);
        }
    }
    free(edge);
    free(pw);
    free(cosT);
    free(sinT);
    free(fr);
}

/* A test signal: chirp + tones + noise at several levels, a silent stretch, a quiet tail. */
static float *make_signal(int64_t n, int rate) {
    float *x = malloc(sizeof(float) * n);
    for (int64_t i = 0; i < n; i++) {
        double t = (double)i / rate;
        double v = 0.3 * sin(2 * M_PI * (100 + 3000 * t) * t) + 0.2 * sin(2 * M_PI * 440 * t) +
                   0.05 * sin(2 * M_PI * 7000 * t) + 0.02 * (rng_unit() - 0.5);
        if (i > n / 2 && i < n / 2 + 3000) v = 0;
        if (i >= n / 2 + 3000 && i < n / 2 + 6000) v *= 1e-3;
        x[i] = (float)v;
    }
    return x;
}

static void test_mel_vs_dft(vox_mel *mel, const vox_config *c) {
    const int64_t n = 16000 + 77;
    float *x = make_signal(n, c->sampling_rate);
    const int64_t frames = n / c->hop_length;
    float *a = malloc(sizeof(float) * (frames + 1) * c->num_mel_bins);
    float *b = malloc(sizeof(float) * frames * c->num_mel_bins);
    for (int i = 0; i < c->num_mel_bins; i++) a[frames * c->num_mel_bins + i] = 1234.5f;
    int rc = vox_mel_compute(mel, x, n, a);
    int extra = 0;
    for (int i = 0; i < c->num_mel_bins; i++) extra |= a[frames * c->num_mel_bins + i] != 1234.5f;
    tu_check(rc == 0 && !extra, "mel frame count is n / hop", "%lld samples -> %lld frames%s", (long long)n,
             (long long)frames, extra ? ", wrote past the end" : "");
    naive_mel(c, x, n, b);
    double err = rc == 0 ? tu_max_abs(a, b, frames * c->num_mel_bins) : 1e9;
    float lo = 1e9f, hi = -1e9f;
    for (int64_t i = 0; i < frames * c->num_mel_bins; i++) {
        lo = fminf(lo, b[i]);
        hi = fmaxf(hi, b[i]);
    }
    tu_check(rc == 0 && err <= 1e-4, "mel == naive double DFT mel",
             "%lld frames, max abs diff %.3g, relative %.3g (values %.3f..%.3f)", (long long)frames, err,
             tu_rel_err(a, b, frames * c->num_mel_bins), lo, hi);
    free(x);
    free(a);
    free(b);
}

/* ---- incremental == offline -------------------------------------------------- */

/* One pattern: pushes of sizes from push_size(), reads of up to read_max frames
 * (0: read everything ready) after each push; compared bit for bit. */
static int incremental_case(vox_mel *mel, const vox_config *c, const float *x, int64_t n,
                            int64_t left, int64_t right, int pattern, char *why, size_t whylen) {
    const int nm = c->num_mel_bins;
    const int64_t total = left + n + right, frames = total / c->hop_length;
    float *padded = calloc(total, sizeof(float));
    memcpy(padded + left, x, sizeof(float) * n);
    float *off = malloc(sizeof(float) * (frames + 1) * nm), *inc = malloc(sizeof(float) * (frames + 1) * nm);
    int ok = vox_mel_compute(mel, padded, total, off) == 0 && vox_mel_begin(mel, left) == 0;
    int64_t got = 0, pos = 0;
    while (ok && pos < n) {
        int64_t k = pattern == 0 ? 1 : pattern == 1 ? rng_range(1, 5000) : pattern == 2 ? n :
                    rng_range(1, 300);
        if (k > n - pos) k = n - pos;
        ok = vox_mel_push(mel, x + pos, k) == 0;
        pos += k;
        int64_t ready = vox_mel_ready(mel);
        if (got + ready > frames) {
            snprintf(why, whylen, "%lld ready after %lld read, only %lld exist", (long long)ready,
                     (long long)got, (long long)frames);
            ok = 0;
        }
        int64_t want = pattern == 3 ? rng_range(0, 3) : ready; /* pattern 3 lags behind */
        if (ok) got += vox_mel_read(mel, inc + got * nm, want);
    }
    ok = ok && vox_mel_end(mel, right) == 0;
    if (ok) got += vox_mel_read(mel, inc + got * nm, frames + 1 - got);
    if (ok && got != frames) {
        snprintf(why, whylen, "%lld frames, offline %lld", (long long)got, (long long)frames);
        ok = 0;
    }
    if (ok && memcmp(off, inc, sizeof(float) * frames * nm) != 0) {
        snprintf(why, whylen, "frames differ, max abs %.3g", tu_max_abs(inc, off, frames * nm));
        ok = 0;
    }
    if (ok && vox_mel_ready(mel) != 0) {
        snprintf(why, whylen, "frames left after the end");
        ok = 0;
    }
    free(padded);
    free(off);
    free(inc);
    return ok;
}

static void test_incremental(vox_mel *mel, const vox_config *c) {
    const int64_t n = 9000 + 123;
    float *x = make_signal(n, c->sampling_rate);
    for (int64_t i = 0; i < n; i++) x[i] += 0.1f * (float)(rng_unit() - 0.5); /* no exact zeros */
    const int64_t lefts[] = {32 * 1280, 0, 1, 37, 199, 200, 201, 1000};
    const int64_t rights[] = {17 * 1280 + 1280 - n % 1280, 0, 1, 39, 200, 333};
    const char *pname[4] = {"1-sample pushes", "random pushes", "one push", "lagging reads"};
    for (int p = 0; p < 4; p++) {
        int ok = 1;
        char why[256] = "", what[128] = "";
        for (size_t l = 0; ok && l < sizeof(lefts) / sizeof(*lefts); l++)
            for (size_t r = 0; ok && r < sizeof(rights) / sizeof(*rights); r++) {
                ok = incremental_case(mel, c, x, n, lefts[l], rights[r], p, why, sizeof(why));
                if (!ok)
                    snprintf(what, sizeof(what), "left %lld right %lld: ", (long long)lefts[l],
                             (long long)rights[r]);
            }
        char name[96];
        snprintf(name, sizeof(name), "incremental mel == offline, bit-exact (%s)", pname[p]);
        tu_check(ok, name, ok ? NULL : "%s%s", what, why);
    }
    /* three minutes in pieces from 1 sample to one minute */
    const int64_t nl = 180 * (int64_t)c->sampling_rate, nm = c->num_mel_bins;
    const int64_t frames = (32 * 1280 + nl) / c->hop_length;
    float *lx = calloc(32 * 1280 + nl, sizeof(float));
    for (int64_t i = 0; i < nl; i++) lx[32 * 1280 + i] = x[i % n] * (float)(1 + (i / n) % 5);
    float *off = malloc(sizeof(float) * frames * nm), *inc = malloc(sizeof(float) * frames * nm);
    int ok = vox_mel_compute(mel, lx, 32 * 1280 + nl, off) == 0 && vox_mel_begin(mel, 32 * 1280) == 0;
    const int64_t sizes[] = {1, 7, 160, 1280, 60 * (int64_t)c->sampling_rate, 4999};
    int64_t got = 0, pos = 0;
    for (int i = 0; ok && pos < nl; i++) {
        int64_t k = sizes[i % 6] < nl - pos ? sizes[i % 6] : nl - pos;
        ok = vox_mel_push(mel, lx + 32 * 1280 + pos, k) == 0;
        pos += k;
        got += vox_mel_read(mel, inc + got * nm, frames - got);
    }
    ok = ok && vox_mel_end(mel, 0) == 0;
    if (ok) got += vox_mel_read(mel, inc + got * nm, frames - got);
    ok = ok && got == frames && memcmp(off, inc, sizeof(float) * frames * nm) == 0;
    tu_check(ok, "incremental mel == offline, bit-exact (3 min, pushes of 1 sample to 1 min)",
             "%lld frames of %lld", (long long)got, (long long)frames);
    free(lx);
    free(off);
    free(inc);
    free(x);
}

/* ---- errors ----------------------------------------------------------------- */

static void expect_load_error(const char *path, const char *name) {
    float *y = (float *)1;
    int64_t ny = -1;
    int rc = vox_audio_load(path, 16000, &y, &ny);
    const char *msg = vox_last_error();
    tu_check(rc == -1 && y == NULL && ny == 0 && strstr(msg, path) != NULL, name, "rc %d, \"%s\"", rc, msg);
}

static void test_errors(void) {
    char path[512];
    snprintf(path, sizeof(path), "%s/does_not_exist.wav", tmpdir);
    expect_load_error(path, "error: missing file");
    snprintf(path, sizeof(path), "%s/garbage.wav", tmpdir);
    FILE *fp = fopen(path, "wb");
    for (int i = 0; i < 4096; i++) fputc((int)(rng_u64() & 255), fp);
    fclose(fp);
    expect_load_error(path, "error: garbage bytes");
    snprintf(path, sizeof(path), "%s/empty.wav", tmpdir);
    write_pcm16(path, SF_FORMAT_WAV | SF_FORMAT_PCM_16, 16000, 1, NULL, 0);
    expect_load_error(path, "error: empty WAV");
}

static void expect_message(const char *path, const char *name, const char *want) {
    float *y = (float *)1;
    int64_t ny = -1;
    int rc = vox_audio_load(path, 16000, &y, &ny);
    const char *msg = vox_last_error();
    tu_check(rc == -1 && y == NULL && ny == 0 && strstr(msg, path) && strstr(msg, want) && !strchr(msg, '\n'),
             name, "rc %d, \"%s\"", rc, msg);
}

static char *read_bytes(const char *path, size_t *n) {
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    fseek(f, 0, SEEK_END);
    long len = ftell(f);
    fseek(f, 0, SEEK_SET);
    char *b = malloc((size_t)len + 1);
    *n = b ? fread(b, 1, (size_t)len, f) : 0;
    fclose(f);
    return b;
}

static void write_bytes(const char *path, const void *data, size_t n) {
    FILE *f = fopen(path, "wb");
    if (f) {
        fwrite(data, 1, n, f);
        fclose(f);
    }
}

static void test_messages(void) {
    char path[512];
    snprintf(path, sizeof(path), "%s/no_such.wav", tmpdir);
    expect_message(path, "error: missing file says \"no such file\"", "no such file");
    snprintf(path, sizeof(path), "%s/adir.wav", tmpdir);
    mkdir(path, 0755);
    expect_message(path, "error: a directory says \"is a directory\"", "is a directory");
    tu_check(vox_audio_probe(path) == -1 && strstr(vox_last_error(), "is a directory"), "probe: a directory",
             "\"%s\"", vox_last_error());
    snprintf(path, sizeof(path), "%s/zero.wav", tmpdir);
    write_bytes(path, "", 0);
    expect_message(path, "error: a 0-byte file says \"empty file\"", "empty file");
    tu_check(vox_audio_probe(path) == -1 && strstr(vox_last_error(), "empty file"), "probe: an empty file",
             "\"%s\"", vox_last_error());
    /* containers libsndfile lacks: by signature and by extension, with the ffmpeg line */
    unsigned char m4a[64] = {0, 0, 0, 0x20, 'f', 't', 'y', 'p', 'M', '4', 'A', ' '};
    snprintf(path, sizeof(path), "%s/song.bin", tmpdir);
    write_bytes(path, m4a, sizeof m4a);
    expect_message(path, "error: MP4/M4A signature suggests ffmpeg", "MP4/M4A is not a format libsndfile reads");
    expect_message(path, "error: the ffmpeg line", "ffmpeg -i ");
    unsigned char adts[64] = {0xff, 0xf1, 0x50, 0x80};
    snprintf(path, sizeof(path), "%s/song.raw", tmpdir);
    write_bytes(path, adts, sizeof adts);
    expect_message(path, "error: AAC (ADTS) signature suggests ffmpeg", "AAC (ADTS)");
    unsigned char webm[64] = {0x1a, 0x45, 0xdf, 0xa3};
    snprintf(path, sizeof(path), "%s/clip.dat", tmpdir);
    write_bytes(path, webm, sizeof webm);
    expect_message(path, "error: WebM signature suggests ffmpeg", "WebM/Matroska");
    snprintf(path, sizeof(path), "%s/voice.aac", tmpdir);
    write_bytes(path, "not really audio, just text in a file", 37);
    expect_message(path, "error: .aac extension suggests ffmpeg", "ffmpeg -i ");
}

/* absurd rates and lengths are refused; nothing is allocated from a header's claim */
static void test_bounds(void) {
    char path[512];
    short x[200] = {0};
    for (int i = 0; i < 200; i++) x[i] = (short)(i * 100);
    snprintf(path, sizeof(path), "%s/one_hz.wav", tmpdir);
    int made = write_pcm16(path, SF_FORMAT_WAV | SF_FORMAT_PCM_16, 1, 1, x, 200) == 0;
    if (made) expect_message(path, "a WAV at 1 Hz is refused (it resampled 16000x)", "sample rate 1 Hz is outside 1000..768000 Hz");
    else tu_check(0, "write a 1 Hz WAV", "%s", sf_strerror(NULL));
    /* patch the rate of a valid WAV to 2 MHz */
    snprintf(path, sizeof(path), "%s/two_mhz.wav", tmpdir);
    write_pcm16(path, SF_FORMAT_WAV | SF_FORMAT_PCM_16, 16000, 1, x, 200);
    size_t n = 0;
    unsigned char *w = (unsigned char *)read_bytes(path, &n);
    if (w && n > 44 && !memcmp(w + 12, "fmt ", 4)) {
        uint32_t r = 2000000, br = r * 2;
        for (int i = 0; i < 4; i++) w[24 + i] = (unsigned char)(r >> (8 * i)), w[28 + i] = (unsigned char)(br >> (8 * i));
        write_bytes(path, w, n);
        expect_message(path, "a WAV at 2 MHz is refused", "sample rate 2000000 Hz is outside");
    } else {
        tu_check(0, "patch a WAV's rate", "unexpected header");
    }
    free(w);

    /* the length bound, before and after resampling */
    int64_t saved = vox_audio_max_samples;
    vox_audio_max_samples = 150;
    snprintf(path, sizeof(path), "%s/long.wav", tmpdir);
    write_pcm16(path, SF_FORMAT_WAV | SF_FORMAT_PCM_16, 16000, 1, x, 200);
    expect_message(path, "more samples than vox_audio_max_samples: refused", "longer than 150 samples");
    vox_audio_max_samples = 300;
    snprintf(path, sizeof(path), "%s/long8k.wav", tmpdir);
    write_pcm16(path, SF_FORMAT_WAV | SF_FORMAT_PCM_16, 8000, 1, x, 200);
    expect_message(path, "resampled beyond vox_audio_max_samples: refused", "gives more than 300");
    vox_audio_max_samples = saved;

    /* a FLAC whose STREAMINFO claims 10^9 frames (4 GB of floats) over 200 real ones:
     * read in a child under a 1 GiB address-space limit (not under ASan, which
     * reserves far more address space itself) */
#if defined(__SANITIZE_ADDRESS__)
    printf("ok - flac claiming 1e9 frames: skipped under ASan (address-space limit)\n");
#else
    snprintf(path, sizeof(path), "%s/claims.flac", tmpdir);
    write_pcm16(path, SF_FORMAT_FLAC | SF_FORMAT_PCM_16, 16000, 1, x, 200);
    unsigned char *f = (unsigned char *)read_bytes(path, &n);
    int ok = f && n > 42 && !memcmp(f, "fLaC", 4) && (f[4] & 0x7f) == 0;
    if (ok) { /* total samples: 36 bits from bit 108 of STREAMINFO (which starts at byte 8) */
        uint64_t total = 1000000000ull;
        unsigned char *si = f + 8;
        si[13] = (unsigned char)((si[13] & 0xf0) | ((total >> 32) & 0x0f));
        for (int i = 0; i < 4; i++) si[14 + i] = (unsigned char)(total >> (24 - 8 * i));
        write_bytes(path, f, n);
    }
    free(f);
    pid_t pid = ok ? fork() : -1;
    if (pid == 0) {
        struct rlimit rl = {(rlim_t)1 << 30, (rlim_t)1 << 30};
        setrlimit(RLIMIT_AS, &rl);
        float *y = NULL;
        int64_t ny = 0;
        int rate = 0;
        int rc = vox_audio_read(path, &y, &ny, &rate);
        _exit(rc == 0 && ny == 200 ? 0 : rc == 0 ? 2 : 1);
    }
    int st = 0;
    if (pid > 0) waitpid(pid, &st, 0);
    tu_check(pid > 0 && WIFEXITED(st) && WEXITSTATUS(st) == 0,
             "flac claiming 1e9 frames: reads its 200 under a 1 GiB limit (no allocation from the header)",
             "%s, child status %d", ok ? "patched" : "could not patch", st);
#endif
}

static int same_audio(const float *a, int64_t na, const float *b, int64_t nb) {
    return na == nb && na > 0 && memcmp(a, b, sizeof(float) * (size_t)na) == 0;
}

/* A child writes `src` into the FIFO at `fifo` (slowly, in pieces). */
static pid_t feed_fifo(const char *fifo, const char *src) {
    pid_t pid = fork();
    if (pid != 0) return pid;
    size_t n = 0;
    char *data = read_bytes(src, &n);
    int fd = open(fifo, O_WRONLY);
    for (size_t off = 0; data && fd >= 0 && off < n;) {
        ssize_t w = write(fd, data + off, n - off < 4000 ? n - off : 4000);
        if (w <= 0) break;
        off += (size_t)w;
    }
    _exit(0);
}

/* One open per file: a FIFO (as -i FIFO, -i <(cat x.wav), -i /dev/stdin) reads like the file. */
static void test_one_open(void) {
    signal(SIGPIPE, SIG_IGN);
    short x[48000];
    for (int i = 0; i < 48000; i++) x[i] = (short)(8000 * sin(i * 0.05) + (i % 7) * 10);
    const char *ext[3] = {"wav", "flac", "ogg"};
    const int fmt[3] = {SF_FORMAT_WAV | SF_FORMAT_PCM_16, SF_FORMAT_FLAC | SF_FORMAT_PCM_16,
                        SF_FORMAT_OGG | SF_FORMAT_VORBIS};
    for (int k = 0; k < 3; k++) {
        char file[512], fifo[512], name[96];
        snprintf(file, sizeof file, "%s/src.%s", tmpdir, ext[k]);
        snprintf(fifo, sizeof fifo, "%s/fifo_%s", tmpdir, ext[k]);
        if (write_pcm16(file, fmt[k], 22050, 1, x, 48000) != 0) {
            printf("ok - fifo %s: skipped (this libsndfile cannot write it)\n", ext[k]);
            continue;
        }
        float *a = NULL, *b = NULL, *c = NULL;
        int64_t na = 0, nb = 0, nc = 0;
        int ra = 0, rb = 0;
        int rc_a = vox_audio_read(file, &a, &na, &ra);
        mkfifo(fifo, 0600);
        pid_t pid = feed_fifo(fifo, file);
        int rc_b = vox_audio_read(fifo, &b, &nb, &rb);
        waitpid(pid, NULL, 0);
        snprintf(name, sizeof name, "vox_audio_read: a FIFO of %s reads like the file", ext[k]);
        tu_check(rc_a == 0 && rc_b == 0 && ra == 22050 && rb == 22050 && same_audio(a, na, b, nb), name,
                 "%lld / %lld samples at %d Hz%s%s", (long long)na, (long long)nb, rb, rc_b ? ": " : "",
                 rc_b ? vox_last_error() : "");
        /* the CLI's current sequence: probe (must not consume the FIFO), then load */
        pid = feed_fifo(fifo, file);
        int rc_p = vox_audio_probe(fifo);
        float *l = NULL, *lf = NULL;
        int64_t nl = 0, nlf = 0;
        int rc_l = vox_audio_load(fifo, 16000, &l, &nl);
        waitpid(pid, NULL, 0);
        int rc_lf = vox_audio_load(file, 16000, &lf, &nlf);
        snprintf(name, sizeof name, "probe + load of a FIFO of %s (-i FIFO) == the file, resampled", ext[k]);
        tu_check(rc_p == 0 && rc_l == 0 && rc_lf == 0 && same_audio(l, nl, lf, nlf), name, "%lld / %lld samples%s%s",
                 (long long)nl, (long long)nlf, rc_l ? ": " : "", rc_l ? vox_last_error() : "");
        /* from memory */
        size_t nbytes = 0;
        char *bytes = read_bytes(file, &nbytes);
        int rm = 0;
        int rc_c = vox_audio_read_mem(bytes, nbytes, "mem", &c, &nc, &rm);
        snprintf(name, sizeof name, "vox_audio_read_mem of %s == the file", ext[k]);
        tu_check(rc_c == 0 && rm == 22050 && same_audio(a, na, c, nc), name, "%lld samples", (long long)nc);
        free(bytes);
        free(a), free(b), free(c), free(l), free(lf);
        unlink(fifo);
    }
    float *y = NULL;
    int64_t ny = 0;
    int rate = 0;
    int rc = vox_audio_read_mem("", 0, "stdin", &y, &ny, &rate);
    tu_check(rc == -1 && strstr(vox_last_error(), "stdin: empty file"), "vox_audio_read_mem: no bytes", "\"%s\"",
             vox_last_error());
}

/* ---- the reference's fixtures ------------------------------------------------- */

static int64_t json_int(const char *js, const char *key) {
    char pat[64];
    snprintf(pat, sizeof(pat), "\"%s\"", key);
    const char *p = strstr(js, pat);
    if (!p) return -1;
    p = strchr(p + strlen(pat), ':');
    return p ? strtoll(p + 1, NULL, 10) : -1;
}

static void test_fixtures(vox_mel *mel, const vox_config *c) {
    DIR *d = opendir("tests/fixtures");
    struct dirent *e;
    int seen = 0;
    while (d && (e = readdir(d)) != NULL) {
        if (e->d_name[0] == '.') continue;
        char path[1024], name[512];
        tu_npy ref;
        snprintf(path, sizeof(path), "tests/fixtures/%s/mel.npy", e->d_name);
        if (access(path, R_OK) != 0) continue;
        seen++;
        snprintf(name, sizeof(name), "fixture %s: mel == reference", e->d_name);
        if (tu_npy_load(path, &ref) != 0 || ref.kind != 'f' || ref.ndim != 2 || ref.shape[1] != c->num_mel_bins) {
            tu_check(0, name, "cannot read %s as float32 [F,%d]", path, c->num_mel_bins);
            continue;
        }
        snprintf(path, sizeof(path), "tests/fixtures/%s/meta.json", e->d_name);
        char js[4096] = "";
        FILE *fp = fopen(path, "rb");
        if (fp) {
            js[fread(js, 1, sizeof(js) - 1, fp)] = 0;
            fclose(fp);
        }
        int64_t delay = json_int(js, "delay_tokens"), ns = json_int(js, "n_samples");
        snprintf(path, sizeof(path), "tests/fixtures/%s/input.wav", e->d_name);
        float *x = NULL;
        int64_t n = 0;
        if (delay < 0 || vox_audio_load(path, c->sampling_rate, &x, &n) != 0 || (ns >= 0 && ns != n)) {
            tu_check(0, name, "delay %lld, %lld samples (meta %lld): %s", (long long)delay, (long long)n,
                     (long long)ns, vox_last_error());
            tu_npy_free(&ref);
            free(x);
            continue;
        }
        const int64_t spt = c->samples_per_token, left = 32 * spt;
        const int64_t right = (spt - n % spt) % spt + (delay + 11) * spt, total = left + n + right;
        const int64_t frames = total / c->hop_length;
        float *padded = calloc(total, sizeof(float)), *mel_out = malloc(sizeof(float) * frames * c->num_mel_bins);
        memcpy(padded + left, x, sizeof(float) * n);
        int ok = frames == ref.shape[0] && vox_mel_compute(mel, padded, total, mel_out) == 0;
        double err = ok ? tu_max_abs(mel_out, ref.f, frames * c->num_mel_bins) : 1e9;
        tu_check(ok && err <= 1e-4, name, "%lld frames (reference %lld), max abs diff %.3g", (long long)frames,
                 (long long)ref.shape[0], err);
        /* as the stream feeds it: 1280-sample pushes, reading as it goes */
        float *inc = malloc(sizeof(float) * frames * c->num_mel_bins);
        int64_t got = 0;
        ok = ok && vox_mel_begin(mel, left) == 0;
        for (int64_t pos = 0; ok && pos < n; pos += spt) {
            ok = vox_mel_push(mel, x + pos, n - pos < spt ? n - pos : spt) == 0;
            got += vox_mel_read(mel, inc + got * c->num_mel_bins, frames - got);
        }
        ok = ok && vox_mel_end(mel, right) == 0;
        if (ok) got += vox_mel_read(mel, inc + got * c->num_mel_bins, frames - got);
        snprintf(name, sizeof(name), "fixture %s: streamed mel == offline", e->d_name);
        tu_check(ok && got == frames && memcmp(inc, mel_out, sizeof(float) * frames * c->num_mel_bins) == 0,
                 name, "%lld of %lld frames", (long long)got, (long long)frames);
        free(inc);
        free(padded);
        free(mel_out);
        free(x);
        tu_npy_free(&ref);
    }
    if (d) closedir(d);
    if (!seen) printf("# no mel fixtures under tests/fixtures: reference comparison skipped\n");
}

int main(void) {
    snprintf(tmpdir, sizeof(tmpdir), "/tmp/vox_test_audio.XXXXXX");
    if (!mkdtemp(tmpdir)) {
        perror("mkdtemp");
        return 1;
    }
    vox_config c = audio_config();
    vox_mel *mel = vox_mel_new(&c);
    tu_check(mel != NULL, "vox_mel_new", mel ? NULL : "%s", vox_last_error());
    if (!mel) return tu_done();

    test_pcm16_exact();
    test_samples();
    test_resample();
    test_mel_vs_dft(mel, &c);
    test_incremental(mel, &c);
    test_errors();
    test_messages();
    test_bounds();
    test_one_open();
    test_fixtures(mel, &c);

    vox_mel_free(mel);
    char cmd[300];
    snprintf(cmd, sizeof(cmd), "rm -rf '%s'", tmpdir);
    if (system(cmd) != 0) fprintf(stderr, "could not remove %s\n", tmpdir);
    return tu_done();
}
