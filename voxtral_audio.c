/* voxtral_audio.c - the log-mel frontend (files in: voxtral_audiofile.c).
 *
 * Log-mel: matches transformers' VoxtralRealtimeFeatureExtractor
 * (_torch_extract_fbank_features): periodic Hann, torch.stft(center=True,
 * pad_mode="reflect"), power |X|^2, last frame dropped, Slaney mel filterbank
 * (audio_utils.mel_filter_bank(norm="slaney", mel_scale="slaney")), log10 with a
 * 1e-10 clamp, floor at global_log_mel_max - 8, then (x + 4) / 4.
 *
 * The reference runs the STFT and the filterbank product in float32. We keep its
 * float32 window, float32 frame product and float32-rounded filter weights, but
 * form |X|^2, the filterbank sums and the log in double: that is the exact value
 * the reference approximates, and costs nothing.
 *
 * Offline (vox_mel_compute) and incremental (vox_mel_begin/push/end/read) both
 * gather a frame's raw samples into one buffer and call mel_frame(), so they give
 * bit-identical frames.
 */
#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <fftw3.h>

#include "voxtral_internal.h"

/* ---- log-mel --------------------------------------------------------------- */

struct vox_mel {
    int n_fft, hop, n_mel, n_bins, half; /* half = n_fft / 2: the centre padding */
    double log_floor;                    /* global_log_mel_max - 8 */
    float *window;                       /* periodic Hann [n_fft] */
    float *fb;                           /* filter m's weights for bins lo[m]..hi[m]-1 */
    int *fb_lo, *fb_hi, *fb_off;
    float *frame;                        /* raw samples of one frame [n_fft] */
    float *fft_in;                       /* [n_fft], fftwf_malloc'd */
    fftwf_complex *fft_out;              /* [n_bins] */
    double *power;                       /* [n_bins] */
    fftwf_plan plan;

    /* Incremental state. s = zeros(left_pad) ++ pushed ++ zeros(right_pad);
     * buf holds s[buf_start .. n_have); head holds s[0 .. half] for the
     * start reflection. */
    float *buf;
    int64_t buf_start, buf_len, buf_cap;
    float *head;
    int64_t n_have;     /* samples of s received so far */
    int64_t next_frame; /* frames already read */
    int ended;
    int64_t n_frames;   /* total frames, known once ended */
};

/* FFTW's planner is not thread-safe: serialise plan creation and destruction. */
static pthread_mutex_t fftw_planner_lock = PTHREAD_MUTEX_INITIALIZER;

/* Slaney mel scale as transformers.audio_utils.hertz_to_mel / mel_to_hertz. */
static double hz_to_mel_slaney(double f) {
    if (f >= 1000.0) return 15.0 + log(f / 1000.0) * (27.0 / log(6.4));
    return 3.0 * f / 200.0;
}

static double mel_to_hz_slaney(double mel) {
    if (mel >= 15.0) return 1000.0 * exp(log(6.4) / 27.0 * (mel - 15.0));
    return 200.0 * mel / 3.0;
}

/* transformers mel_filter_bank(n_bins, n_mel, 0, rate/2, rate, norm="slaney",
 * mel_scale="slaney"), in double, then rounded to float32 as the reference does.
 * Stores each filter's nonzero bin range only. */
static int mel_filters_init(vox_mel *m, int rate) {
    const int nb = m->n_bins, nm = m->n_mel;
    double *ff = malloc(sizeof(double) * (size_t)(nm + 2));
    double *fk = malloc(sizeof(double) * (size_t)nb);
    float *full = malloc(sizeof(float) * (size_t)nb * (size_t)nm);
    m->fb_lo = malloc(sizeof(int) * (size_t)nm);
    m->fb_hi = malloc(sizeof(int) * (size_t)nm);
    m->fb_off = malloc(sizeof(int) * (size_t)nm);
    if (!ff || !fk || !full || !m->fb_lo || !m->fb_hi || !m->fb_off) {
        free(ff);
        free(fk);
        free(full);
        return vox_error("vox_mel_new: out of memory");
    }
    /* np.linspace(mel_min, mel_max, nm + 2): i * step + start, last = stop exactly */
    const double mel_min = hz_to_mel_slaney(0.0), mel_max = hz_to_mel_slaney(rate / 2.0);
    const double mstep = (mel_max - mel_min) / (nm + 1);
    for (int i = 0; i < nm + 2; i++)
        ff[i] = mel_to_hz_slaney(i == nm + 1 ? mel_max : i * mstep + mel_min);
    /* np.linspace(0, rate // 2, nb) */
    const double fstep = (double)(rate / 2) / (nb - 1);
    for (int k = 0; k < nb; k++) fk[k] = k == nb - 1 ? (double)(rate / 2) : k * fstep;

    int total = 0;
    for (int j = 0; j < nm; j++) {
        const double enorm = 2.0 / (ff[j + 2] - ff[j]);
        int lo = nb, hi = 0;
        for (int k = 0; k < nb; k++) {
            double down = -(ff[j] - fk[k]) / (ff[j + 1] - ff[j]);
            double up = (ff[j + 2] - fk[k]) / (ff[j + 2] - ff[j + 1]);
            double w = fmax(0.0, fmin(down, up)) * enorm;
            full[(size_t)j * nb + k] = (float)w;
            if (w > 0.0) {
                if (k < lo) lo = k;
                hi = k + 1;
            }
        }
        if (hi <= lo) lo = hi = 0; /* an all-zero filter (too many mels for the FFT) */
        m->fb_lo[j] = lo;
        m->fb_hi[j] = hi;
        m->fb_off[j] = total;
        total += hi - lo;
    }
    m->fb = malloc(sizeof(float) * (size_t)(total > 0 ? total : 1));
    if (!m->fb) {
        free(ff);
        free(fk);
        free(full);
        return vox_error("vox_mel_new: out of memory");
    }
    for (int j = 0; j < nm; j++)
        for (int k = m->fb_lo[j]; k < m->fb_hi[j]; k++)
            m->fb[m->fb_off[j] + k - m->fb_lo[j]] = full[(size_t)j * nb + k];
    free(ff);
    free(fk);
    free(full);
    return 0;
}

vox_mel *vox_mel_new(const vox_config *cfg) {
    if (cfg->window_size < 2 || cfg->hop_length < 1 || cfg->num_mel_bins < 1 ||
        cfg->sampling_rate < 2) {
        vox_error("vox_mel_new: invalid audio config (window %d, hop %d, mels %d, rate %d)",
                  cfg->window_size, cfg->hop_length, cfg->num_mel_bins, cfg->sampling_rate);
        return NULL;
    }
    vox_mel *m = calloc(1, sizeof(*m));
    if (!m) {
        vox_error("vox_mel_new: out of memory");
        return NULL;
    }
    m->n_fft = cfg->window_size;
    m->hop = cfg->hop_length;
    m->n_mel = cfg->num_mel_bins;
    m->n_bins = m->n_fft / 2 + 1;
    m->half = m->n_fft / 2;
    m->log_floor = (double)cfg->global_log_mel_max - 8.0;

    m->window = malloc(sizeof(float) * (size_t)m->n_fft);
    m->frame = malloc(sizeof(float) * (size_t)m->n_fft);
    m->power = malloc(sizeof(double) * (size_t)m->n_bins);
    m->head = malloc(sizeof(float) * (size_t)(m->half + 1));
    m->fft_in = fftwf_malloc(sizeof(float) * (size_t)m->n_fft);
    m->fft_out = fftwf_malloc(sizeof(fftwf_complex) * (size_t)m->n_bins);
    if (!m->window || !m->frame || !m->power || !m->head || !m->fft_in || !m->fft_out) {
        vox_error("vox_mel_new: out of memory");
        vox_mel_free(m);
        return NULL;
    }
    /* torch.hann_window(n_fft) (periodic), rounded to float32 as torch stores it */
    for (int i = 0; i < m->n_fft; i++)
        m->window[i] = (float)(0.5 - 0.5 * cos(2.0 * M_PI * i / m->n_fft));
    if (mel_filters_init(m, cfg->sampling_rate) < 0) {
        vox_mel_free(m);
        return NULL;
    }
    /* FFTW_ESTIMATE: the same algorithm in every process, so frames are reproducible. */
    pthread_mutex_lock(&fftw_planner_lock);
    m->plan = fftwf_plan_dft_r2c_1d(m->n_fft, m->fft_in, m->fft_out, FFTW_ESTIMATE);
    pthread_mutex_unlock(&fftw_planner_lock);
    if (!m->plan) {
        vox_error("vox_mel_new: FFTW could not plan a %d-point real FFT", m->n_fft);
        vox_mel_free(m);
        return NULL;
    }
    vox_mel_begin(m, 0);
    return m;
}

void vox_mel_free(vox_mel *m) {
    if (!m) return;
    if (m->plan) {
        pthread_mutex_lock(&fftw_planner_lock);
        fftwf_destroy_plan(m->plan);
        pthread_mutex_unlock(&fftw_planner_lock);
    }
    fftwf_free(m->fft_in);
    fftwf_free(m->fft_out);
    free(m->window);
    free(m->frame);
    free(m->power);
    free(m->head);
    free(m->fb);
    free(m->fb_lo);
    free(m->fb_hi);
    free(m->fb_off);
    free(m->buf);
    free(m);
}

/* m->frame (n_fft raw samples) -> out[n_mel]. The only place a frame is computed. */
static void mel_frame(vox_mel *m, float *out) {
    for (int i = 0; i < m->n_fft; i++) m->fft_in[i] = m->frame[i] * m->window[i];
    fftwf_execute(m->plan);
    for (int k = 0; k < m->n_bins; k++) {
        double re = m->fft_out[k][0], im = m->fft_out[k][1];
        m->power[k] = re * re + im * im;
    }
    for (int j = 0; j < m->n_mel; j++) {
        const float *w = m->fb + m->fb_off[j] - m->fb_lo[j];
        double s = 0.0;
        for (int k = m->fb_lo[j]; k < m->fb_hi[j]; k++) s += (double)w[k] * m->power[k];
        double v = log10(s > 1e-10 ? s : 1e-10);
        if (v < m->log_floor) v = m->log_floor;
        out[j] = (float)((v + 4.0) / 4.0);
    }
}

/* Frames of an n-sample signal: torch.stft(center=True) gives 1 + n / hop (for an
 * even n_fft), of which the last is dropped. */
static int64_t mel_frames_of(const vox_mel *m, int64_t n) {
    return (n + 2 * (int64_t)m->half - m->n_fft) / m->hop;
}

int vox_mel_compute(vox_mel *m, const float *x, int64_t n, float *out) {
    const int64_t nf = n > 0 ? mel_frames_of(m, n) : 0;
    if (nf <= 0) return 0;
    if (n <= m->half)
        return vox_error("vox_mel_compute: %lld samples is too short for the %d-sample "
                         "reflect padding", (long long)n, m->half);
    for (int64_t t = 0; t < nf; t++) {
        const int64_t start = t * m->hop - m->half;
        for (int i = 0; i < m->n_fft; i++) {
            int64_t j = start + i;
            if (j < 0) j = -j;               /* reflect (edge not repeated) */
            if (j >= n) j = 2 * (n - 1) - j;
            m->frame[i] = x[j];
        }
        mel_frame(m, out + t * m->n_mel);
    }
    return 0;
}

/* ---- incremental log-mel ------------------------------------------------- */

/* Appends n samples of s (x, or zeros when x is NULL). Drops the samples no
 * future frame needs first, so the buffer stays about one window plus what the
 * caller has pushed and not yet read. */
static int mel_append(vox_mel *m, const float *x, int64_t n) {
    if (n <= 0) return 0;
    int64_t keep_from = m->next_frame * m->hop - m->half;
    if (keep_from < 0) keep_from = 0;
    if (keep_from > m->buf_start) {
        int64_t drop = keep_from - m->buf_start;
        if (drop > m->buf_len) drop = m->buf_len;
        memmove(m->buf, m->buf + drop, sizeof(float) * (size_t)(m->buf_len - drop));
        m->buf_len -= drop;
        m->buf_start += drop;
    }
    if (m->buf_len + n > m->buf_cap) {
        int64_t cap = m->buf_cap ? m->buf_cap : 4096;
        while (cap < m->buf_len + n) cap *= 2;
        float *p = realloc(m->buf, sizeof(float) * (size_t)cap);
        if (!p) return vox_error("vox_mel_push: out of memory (%lld samples)", (long long)cap);
        m->buf = p;
        m->buf_cap = cap;
    }
    float *dst = m->buf + m->buf_len;
    if (x) memcpy(dst, x, sizeof(float) * (size_t)n);
    else memset(dst, 0, sizeof(float) * (size_t)n);
    for (int64_t i = 0; i < n && m->n_have + i <= m->half; i++) m->head[m->n_have + i] = dst[i];
    m->buf_len += n;
    m->n_have += n;
    return 0;
}

int vox_mel_begin(vox_mel *m, int64_t left_pad) {
    if (left_pad < 0) return vox_error("vox_mel_begin: negative left pad %lld", (long long)left_pad);
    m->buf_start = m->buf_len = 0;
    m->n_have = m->next_frame = m->n_frames = 0;
    m->ended = 0;
    return mel_append(m, NULL, left_pad);
}

int vox_mel_push(vox_mel *m, const float *x, int64_t n) {
    if (m->ended) return vox_error("vox_mel_push: the signal was already ended");
    if (n < 0) return vox_error("vox_mel_push: negative sample count %lld", (long long)n);
    return mel_append(m, x, n);
}

int vox_mel_end(vox_mel *m, int64_t right_pad) {
    if (m->ended) return vox_error("vox_mel_end: the signal was already ended");
    if (right_pad < 0) return vox_error("vox_mel_end: negative right pad %lld", (long long)right_pad);
    if (mel_append(m, NULL, right_pad) < 0) return -1;
    m->ended = 1;
    m->n_frames = m->n_have > 0 ? mel_frames_of(m, m->n_have) : 0;
    if (m->n_frames > 0 && m->n_have <= m->half) {
        m->n_frames = m->next_frame;
        return vox_error("vox_mel_end: %lld samples is too short for the %d-sample reflect "
                         "padding", (long long)m->n_have, m->half);
    }
    return 0;
}

int64_t vox_mel_ready(const vox_mel *m) {
    if (m->ended) return m->n_frames - m->next_frame;
    /* Before the end, frame t needs s[t*hop - half, t*hop - half + n_fft) and, to
     * be sure it is not the dropped last frame, (t + 1) * hop samples; the start
     * reflection needs s[0..half]. */
    if (m->n_have <= m->half) return 0;
    int64_t need = m->n_fft - m->half; /* samples for frame 0 */
    if (m->n_have < need) return 0;
    int64_t by_window = (m->n_have - need) / m->hop + 1;
    int64_t by_drop = m->n_have / m->hop;
    int64_t avail = by_window < by_drop ? by_window : by_drop;
    return avail > m->next_frame ? avail - m->next_frame : 0;
}

int64_t vox_mel_read(vox_mel *m, float *out, int64_t max_frames) {
    int64_t nf = vox_mel_ready(m);
    if (nf > max_frames) nf = max_frames;
    /* Only after the end can frames reach past the last sample (right reflection). */
    const int64_t L = m->n_have;
    for (int64_t f = 0; f < nf; f++) {
        const int64_t start = m->next_frame * m->hop - m->half;
        for (int i = 0; i < m->n_fft; i++) {
            int64_t j = start + i;
            if (j < 0) j = -j;
            if (j >= L) j = 2 * (L - 1) - j;
            m->frame[i] = j <= m->half && j < m->buf_start ? m->head[j] : m->buf[j - m->buf_start];
        }
        mel_frame(m, out + f * m->n_mel);
        m->next_frame++;
    }
    return nf > 0 ? nf : 0;
}

int64_t vox_mel_skip(vox_mel *m, int64_t max_frames) {
    int64_t nf = vox_mel_ready(m);
    if (nf > max_frames) nf = max_frames;
    if (nf < 0) nf = 0;
    m->next_frame += nf;
    return nf;
}

int64_t vox_mel_pad_frames(const vox_config *cfg, int64_t left_pad) {
    /* frame t reads s[t*hop - half, t*hop - half + n_fft) (|j| for j < 0): all of it in
     * the pad when t*hop - half + n_fft <= left_pad */
    const int64_t half = cfg->window_size / 2, last = left_pad + half - cfg->window_size;
    return cfg->hop_length > 0 && last >= 0 ? last / cfg->hop_length + 1 : 0;
}
