/* cli/mic.c - live input from a microphone for `voxtral --mic` (PortAudio).
 *
 * The PortAudio callback only copies frames into a lock-free single-producer /
 * single-consumer ring (memcpy and two atomics; when the ring is full it drops the
 * new frames and counts an overrun). The main thread drains the ring, downmixes to
 * mono, resamples from the device's native rate to the model's with one streaming
 * libsoxr resampler (continuous across blocks, so no clicks at block edges) and
 * feeds the stream. When transcription falls behind real time (more than
 * MAX_BACKLOG_S queued, or an overrun) it says so on stderr once per episode and
 * drops the oldest audio; the callback never waits for the engine.
 *
 * The audio stack is noisy and fragile on machines without sound hardware:
 * - ALSA, JACK and PortAudio print to stderr while probing (a screenful on a
 *   headless box) and from PortAudio's capture thread when a device vanishes.
 *   While PortAudio is in use fd 2 points at /dev/null (not with --verbose); our
 *   own messages go to the real stderr, and errors are one line.
 * - PortAudio 19.6's ALSA host abort()s on some boxes, e.g. in Pa_Initialize when
 *   ALSA has no PCM at all (PortAudio issue #294). An abort inside a PortAudio call
 *   made by this thread jumps back out and the call fails; PortAudio is then left
 *   alone (not even terminated).
 * A device that disappears mid-capture ends the capture with an error, after the
 * audio captured until then has been fed.
 *
 * VOX_MIC_DUMP=file.raw (for tests) writes the samples fed to the stream: float32,
 * native byte order, at the model's rate.
 */
#include <ctype.h>
#include <fcntl.h>
#include <math.h>
#include <portaudio.h>
#include <pthread.h>
#include <setjmp.h>
#include <signal.h>
#include <soxr.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "cli.h"

#define RING_S 16.0          /* ring capacity, seconds at the device rate */
#define MAX_BACKLOG_S 4.0    /* more than this queued: falling behind */
#define KEEP_S 1.0           /* ...then drop all but the newest KEEP_S */
#define CAUGHT_UP_S 0.5      /* an episode ends when the queue is below this */
#define DEVICE_SILENT_S 3.0  /* no callback for this long: the device is gone */
#define POLL_NS 10000000L    /* the main thread looks at the ring every 10 ms */

#define NO_DEVICE(why) "no audio input device found (no sound card, and no PulseAudio/PipeWire server reachable" why ")"

/* ---- the ring: written by the audio callback, read by the main thread ---- */
typedef struct {
    float *buf;                /* cap frames of `channels` floats */
    size_t cap;                /* frames, a power of two */
    int channels;
    _Atomic size_t head;       /* frames written, ever (producer) */
    _Atomic size_t tail;       /* frames read or dropped, ever (consumer) */
    _Atomic unsigned overruns; /* callbacks that found the ring full */
    _Atomic unsigned callbacks;
} ring;

static int on_audio(const void *input, void *output, unsigned long frames,
                    const PaStreamCallbackTimeInfo *time, PaStreamCallbackFlags flags, void *user) {
    ring *r = user;
    size_t head = atomic_load_explicit(&r->head, memory_order_relaxed);
    size_t tail = atomic_load_explicit(&r->tail, memory_order_acquire);
    size_t n = frames, room = r->cap - (head - tail);
    if (n > room) {
        n = room;
        atomic_fetch_add_explicit(&r->overruns, 1, memory_order_relaxed);
    }
    if (input && n) {
        size_t at = head & (r->cap - 1), first = n < r->cap - at ? n : r->cap - at;
        size_t fb = sizeof(float) * r->channels;
        memcpy(r->buf + at * r->channels, input, first * fb);
        memcpy(r->buf, (const float *)input + first * r->channels, (n - first) * fb);
        atomic_store_explicit(&r->head, head + n, memory_order_release);
    }
    atomic_fetch_add_explicit(&r->callbacks, 1, memory_order_relaxed);
    return paContinue;
}

/* ---- a PortAudio session: stderr muted, aborts caught ---- */
static int err_fd = 2;          /* the real stderr while fd 2 is muted */
static int pa_broken;           /* PortAudio abort()ed: never call it again */
static pthread_t pa_caller;
static sigjmp_buf pa_abort_jmp;

static void on_abort(int sig) {
    /* another thread's abort: return, and abort() ends the process as usual */
    if (pthread_equal(pthread_self(), pa_caller)) siglongjmp(pa_abort_jmp, 1);
}

/* fn(arg), a PortAudio call; an abort() inside it gives paInternalError. */
static PaError guarded(PaError (*fn)(void *), void *arg) {
    if (pa_broken) return paInternalError;
    struct sigaction sa = {.sa_handler = on_abort}, old;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGABRT, &sa, &old);
    pa_caller = pthread_self();
    PaError e = paInternalError;
    if (sigsetjmp(pa_abort_jmp, 1) == 0) e = fn(arg);
    else pa_broken = 1;
    sigaction(SIGABRT, &old, NULL);
    return e;
}

static PaError initialize(void *unused) { return Pa_Initialize(); }
static PaError terminate(void *unused) { return Pa_Terminate(); }

typedef struct {
    PaStream **stream;
    const PaStreamParameters *in;
    double rate;
    void *user;
} open_args;
static PaError is_supported(void *arg) {
    open_args *a = arg;
    return Pa_IsFormatSupported(a->in, NULL, a->rate);
}
static PaError open_stream(void *arg) {
    open_args *a = arg;
    return Pa_OpenStream(a->stream, a->in, NULL, a->rate, paFramesPerBufferUnspecified, paNoFlag, on_audio, a->user);
}

/* Mutes fd 2 (unless verbose >= 2) and initialises PortAudio. */
static int session_begin(int verbose) {
    fflush(stderr);
    int saved = verbose >= 2 ? -1 : dup(2), nul = saved >= 0 ? open("/dev/null", O_WRONLY) : -1;
    if (nul >= 0) {
        dup2(nul, 2);
        close(nul);
        err_fd = saved;
    } else if (saved >= 0) {
        close(saved);
    }
    PaError e = guarded(initialize, NULL);
    if (pa_broken) return cli_error("mic: " NO_DEVICE("; PortAudio aborted listing the devices"));
    if (e != paNoError) return cli_error("mic: cannot initialise PortAudio: %s", Pa_GetErrorText(e));
    return 0;
}

static void session_end(int initialised) {
    if (initialised) guarded(terminate, NULL);
    if (err_fd != 2) {
        fflush(stderr);
        dup2(err_fd, 2);
        close(err_fd);
        err_fd = 2;
    }
}

static int pa_fail(const char *what, PaError e) {
    if (pa_broken) return cli_error("mic: %s: PortAudio failed an internal check (device unusable?)", what);
    if (e == paUnanticipatedHostError) {
        const PaHostErrorInfo *h = Pa_GetLastHostErrorInfo();
        if (h && h->errorText && *h->errorText) return cli_error("mic: %s: %s", what, h->errorText);
    }
    return cli_error("mic: %s: %s", what, Pa_GetErrorText(e));
}

static int n_inputs(void) {
    int n = 0, count = Pa_GetDeviceCount();
    for (int i = 0; i < count; i++) {
        const PaDeviceInfo *d = Pa_GetDeviceInfo(i);
        if (d && d->maxInputChannels > 0) n++;
    }
    return n;
}

static const char *api_name(const PaDeviceInfo *d) {
    const PaHostApiInfo *h = Pa_GetHostApiInfo(d->hostApi);
    return h ? h->name : "?";
}

int cli_list_devices(void) {
    int rc = session_begin(0), initialised = !rc;
    if (!rc && n_inputs() == 0) rc = cli_error("mic: " NO_DEVICE(""));
    if (!rc) {
        PaDeviceIndex def = Pa_GetDefaultInputDevice();
        printf("input devices (* = default; --device N or a part of the name):\n");
        for (int i = 0, count = Pa_GetDeviceCount(); i < count; i++) {
            const PaDeviceInfo *d = Pa_GetDeviceInfo(i);
            if (!d || d->maxInputChannels <= 0) continue;
            printf("%c %3d  %-32s %s, %d ch, %.0f Hz\n", i == def ? '*' : ' ', i, d->name, api_name(d),
                   d->maxInputChannels, d->defaultSampleRate);
        }
        fflush(stdout);
    }
    session_end(initialised);
    if (rc) fprintf(stderr, "voxtral: %s\n", cli_last_error());
    return rc;
}

static int name_has(const char *name, const char *part) {
    for (; *name; name++) {
        size_t i = 0;
        while (part[i] && tolower((unsigned char)name[i]) == tolower((unsigned char)part[i])) i++;
        if (!part[i]) return 1;
    }
    return !*part;
}

/* `want`: NULL (the default input), an index, or a name: an exact match, else the
 * only device whose name contains it (case-insensitive). */
static int pick_device(const char *want) {
    if (n_inputs() == 0) return cli_error("mic: " NO_DEVICE(""));
    int count = Pa_GetDeviceCount();
    if (!want) {
        PaDeviceIndex def = Pa_GetDefaultInputDevice();
        if (def == paNoDevice) return cli_error("mic: no default input device (pick one with --device, see --list-devices)");
        return def;
    }
    char *end;
    long idx = strtol(want, &end, 10);
    if (*want && !*end) {
        const PaDeviceInfo *d = idx >= 0 && idx < count ? Pa_GetDeviceInfo((int)idx) : NULL;
        if (!d || d->maxInputChannels <= 0)
            return cli_error("mic: --device %s: no input device has that number (see --list-devices)", want);
        return (int)idx;
    }
    int found = -1, matches = 0;
    for (int i = 0; i < count; i++) {
        const PaDeviceInfo *d = Pa_GetDeviceInfo(i);
        if (!d || d->maxInputChannels <= 0) continue;
        if (!strcmp(d->name, want)) return i;
        if (name_has(d->name, want)) found = i, matches++;
    }
    if (matches == 0) return cli_error("mic: --device %s: no input device has that name (see --list-devices)", want);
    if (matches > 1)
        return cli_error("mic: --device %s: %d input devices match; give the number or the full name (see --list-devices)",
                         want, matches);
    return found;
}

/* ---- capture ---- */
typedef struct {
    vox_stream *s;
    int rate, dev_rate, verbose;
    double interval;      /* seconds of audio per feed (-I) */
    char dev_name[128];
    ring r;
    PaStream *pa;
    soxr_t soxr;          /* NULL when the device runs at the model's rate */
    float *mono;          /* one drained piece, downmixed */
    size_t mono_cap;
    float *feed;          /* resampled samples waiting to be fed */
    size_t feed_len, feed_cap, feed_block;
    FILE *dump;
    int (*stop)(void);    /* the CLI's stop flag: a signal or a closed stdout */
} mic;

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec / 1e9;
}

static int feed_flush(mic *m) {
    if (!m->feed_len) return 0;
    if (m->dump && fwrite(m->feed, sizeof(float), m->feed_len, m->dump) != m->feed_len)
        return cli_error("VOX_MIC_DUMP: write failed");
    int rc = vox_stream_feed(m->s, m->feed, m->feed_len);
    m->feed_len = 0;
    return rc ? cli_error("%s", vox_last_error()) : 0;
}

/* Resamples `n` mono samples (x == NULL: the end, drain the resampler) into the
 * feed buffer, feeding the stream each time a block is full. */
static int push(mic *m, const float *x, size_t n) {
    if (!m->soxr) {
        while (x && n > 0) {
            size_t take = m->feed_cap - m->feed_len < n ? m->feed_cap - m->feed_len : n;
            memcpy(m->feed + m->feed_len, x, sizeof(float) * take);
            m->feed_len += take, x += take, n -= take;
            if (m->feed_len >= m->feed_block && feed_flush(m) != 0) return -1;
        }
        return 0;
    }
    for (;;) {
        size_t idone = 0, odone = 0;
        soxr_error_t err = soxr_process(m->soxr, x, n, &idone, m->feed + m->feed_len,
                                        m->feed_cap - m->feed_len, &odone);
        if (err) return cli_error("mic: resampler: %s", err);
        m->feed_len += odone;
        if (x) x += idone;
        n -= idone;
        if (m->feed_len >= m->feed_block && feed_flush(m) != 0) return -1;
        if (x ? n == 0 : odone == 0) return 0;
    }
}

/* Moves `frames` frames from the ring, downmixed, into the stream. */
static int drain(mic *m, size_t frames) {
    ring *r = &m->r;
    while (frames > 0) {
        size_t tail = atomic_load_explicit(&r->tail, memory_order_relaxed);
        size_t n = frames < m->mono_cap ? frames : m->mono_cap;
        for (size_t i = 0; i < n; i++) {
            const float *f = r->buf + ((tail + i) & (r->cap - 1)) * r->channels;
            float acc = 0;
            for (int c = 0; c < r->channels; c++) acc += f[c];
            m->mono[i] = r->channels == 1 ? acc : acc / r->channels;
        }
        atomic_store_explicit(&r->tail, tail + n, memory_order_release);
        frames -= n;
        if (push(m, m->mono, n) != 0) return -1;
    }
    return 0;
}

static int mic_open(mic *m, const char *want) {
    int dev = pick_device(want);
    if (dev < 0) return -1;
    const PaDeviceInfo *d = Pa_GetDeviceInfo(dev);
    snprintf(m->dev_name, sizeof m->dev_name, "%s", d->name);
    m->dev_rate = (int)lround(d->defaultSampleRate);
    if (m->dev_rate <= 0) return cli_error("mic: %s: reports no sample rate", d->name);
    /* stereo at most: it is downmixed anyway; some devices open only with all channels */
    int tries[3] = {d->maxInputChannels < 2 ? d->maxInputChannels : 2, 1, d->maxInputChannels};
    PaStreamParameters in = {.device = dev, .sampleFormat = paFloat32,
                             .suggestedLatency = d->defaultHighInputLatency};
    open_args args = {&m->pa, &in, d->defaultSampleRate, &m->r};
    PaError e = paInvalidChannelCount;
    for (int t = 0; t < 3 && e != paFormatIsSupported && !pa_broken; t++) {
        in.channelCount = tries[t];
        e = guarded(is_supported, &args);
    }
    if (e != paFormatIsSupported) return pa_fail(m->dev_name, e);

    ring *r = &m->r;
    r->channels = in.channelCount;
    r->cap = 1;
    while (r->cap < (size_t)(RING_S * m->dev_rate)) r->cap <<= 1;
    r->buf = malloc(sizeof(float) * r->cap * r->channels);
    m->mono_cap = (size_t)m->dev_rate / 10 + 1;
    m->mono = malloc(sizeof(float) * m->mono_cap);
    m->feed_block = (size_t)(m->interval * m->rate);
    if (m->feed_block < 1) m->feed_block = 1;
    m->feed_cap = m->feed_block + (size_t)((double)m->mono_cap * m->rate / m->dev_rate) + 1024;
    m->feed = malloc(sizeof(float) * m->feed_cap);
    if (!r->buf || !m->mono || !m->feed) return cli_error("out of memory");
    if (m->dev_rate != m->rate) {
        soxr_error_t err;
        soxr_io_spec_t io = soxr_io_spec(SOXR_FLOAT32_I, SOXR_FLOAT32_I);
        soxr_quality_spec_t q = soxr_quality_spec(SOXR_HQ, 0);
        m->soxr = soxr_create(m->dev_rate, m->rate, 1, &err, &io, &q, NULL);
        if (!m->soxr) return cli_error("mic: resampler %d -> %d Hz: %s", m->dev_rate, m->rate, err);
    }
    const char *dump = getenv("VOX_MIC_DUMP");
    if (dump && *dump && !(m->dump = fopen(dump, "wb"))) return cli_error("VOX_MIC_DUMP %s: cannot write it", dump);

    if ((e = guarded(open_stream, &args)) != paNoError) {
        m->pa = NULL;
        return pa_fail(m->dev_name, e);
    }
    if ((e = guarded(Pa_StartStream, m->pa)) != paNoError) return pa_fail(m->dev_name, e);
    if (m->verbose >= 1)
        dprintf(err_fd, "voxtral: mic: %s (%s), %d Hz, %d ch -> %d Hz mono\n", m->dev_name, api_name(d),
                m->dev_rate, r->channels, m->rate);
    return 0;
}

/* Captures until interrupted or the device fails. */
static int mic_run(mic *m) {
    ring *r = &m->r;
    const size_t max_backlog = (size_t)(MAX_BACKLOG_S * m->dev_rate), keep = (size_t)(KEEP_S * m->dev_rate),
                 caught_up = (size_t)(CAUGHT_UP_S * m->dev_rate);
    unsigned seen_overruns = 0, seen_callbacks = 0;
    double last_audio = now_s(), dropped_s = 0;
    int behind = 0, rc = 0;
    while (!m->stop()) {
        size_t tail = atomic_load_explicit(&r->tail, memory_order_relaxed);
        size_t queued = atomic_load_explicit(&r->head, memory_order_acquire) - tail;
        unsigned overruns = atomic_load_explicit(&r->overruns, memory_order_relaxed);
        if (queued > max_backlog || overruns != seen_overruns) {
            size_t drop = queued > keep ? queued - keep : 0;
            atomic_store_explicit(&r->tail, tail + drop, memory_order_release);
            if (!behind)
                dprintf(err_fd,
                        "voxtral: mic: transcription is falling behind real time (%.1f s of audio queued%s); "
                        "dropping the oldest audio\n",
                        (double)queued / m->dev_rate, overruns != seen_overruns ? ", capture buffer full" : "");
            behind = 1;
            dropped_s += (double)drop / m->dev_rate;
            seen_overruns = overruns;
            queued -= drop;
        } else if (behind && queued < caught_up) {
            if (m->verbose >= 1) dprintf(err_fd, "voxtral: mic: caught up (%.1f s of audio dropped)\n", dropped_s);
            behind = 0;
            dropped_s = 0;
        }
        if (queued > 0) { /* in pieces, so that the backlog is looked at between them */
            if (drain(m, queued < m->mono_cap ? queued : m->mono_cap) != 0) return -1;
            continue;
        }
        unsigned callbacks = atomic_load_explicit(&r->callbacks, memory_order_relaxed);
        double t = now_s();
        if (callbacks != seen_callbacks) seen_callbacks = callbacks, last_audio = t;
        PaError active = Pa_IsStreamActive(m->pa);
        if (active != 1) {
            rc = active < 0 ? pa_fail(m->dev_name, active)
                            : cli_error("mic: %s: the audio device stopped (disconnected?)", m->dev_name);
            break;
        }
        if (t - last_audio > DEVICE_SILENT_S) {
            rc = cli_error("mic: %s: no audio for %.0f s (device disconnected or sound server gone?)", m->dev_name,
                           DEVICE_SILENT_S);
            break;
        }
        nanosleep(&(struct timespec){0, POLL_NS}, NULL);
    }
    /* the audio captured before the stop (or the failure) is still transcribed */
    guarded(rc ? Pa_AbortStream : Pa_StopStream, m->pa);
    size_t queued = atomic_load_explicit(&r->head, memory_order_acquire) - atomic_load_explicit(&r->tail, memory_order_relaxed);
    if (drain(m, queued) != 0 || push(m, NULL, 0) != 0 || feed_flush(m) != 0) return -1;
    return rc;
}

static void mic_free(mic *m) {
    if (m->pa) guarded(Pa_CloseStream, m->pa);
    if (m->soxr) soxr_delete(m->soxr);
    if (m->dump) fclose(m->dump);
    free(m->r.buf);
    free(m->mono);
    free(m->feed);
}

int cli_mic(vox_stream *s, const char *device, int rate, double interval, int verbose,
            int (*stop)(void)) {
    mic m = {.s = s, .rate = rate, .interval = interval, .verbose = verbose, .stop = stop};
    int rc = session_begin(verbose), initialised = !rc;
    if (!rc) rc = mic_open(&m, device);
    if (!rc) rc = mic_run(&m);
    mic_free(&m);
    session_end(initialised);
    return rc;
}
