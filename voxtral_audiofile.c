/* voxtral_audiofile.c - audio files in: libsndfile reads any format it knows, the
 * channels are averaged (float32, as numpy's mean), libsoxr (HQ) resamples.
 *
 * One open per file: a regular file is read through its descriptor, anything else
 * (FIFO, pipe, /dev/stdin, <(...)) is read into memory once and decoded from there,
 * so non-seekable inputs work for every format. The output grows with the audio
 * actually decoded (never from a header's frame count) and is bounded, as are the
 * sample rates (VOX_AUDIO_MIN_RATE..VOX_AUDIO_MAX_RATE): a small file cannot claim
 * or resample into gigabytes.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <unistd.h>

#include <sndfile.h>
#include <soxr.h>

#include "voxtral_internal.h"

int64_t vox_audio_max_samples = (int64_t)1 << 30;

/* Samples (frames x channels) per sf_readf_float call. */
#define READ_BLOCK_SAMPLES (1 << 18)
/* A non-seekable input is read into memory whole: at most this many bytes. */
#define MAX_PIPE_BYTES ((int64_t)4 << 30)

/* ---- containers libsndfile does not read: say how to convert them ------------ */

static const char *unsupported_kind(const unsigned char *h, size_t n, const char *name) {
    if (n >= 8 && !memcmp(h + 4, "ftyp", 4)) return "MP4/M4A";
    if (n >= 4 && !memcmp(h, "\x1a\x45\xdf\xa3", 4)) return "WebM/Matroska";
    if (n >= 4 && !memcmp(h, "ADIF", 4)) return "AAC";
    if (n >= 2 && h[0] == 0xff && (h[1] & 0xf6) == 0xf0) return "AAC (ADTS)"; /* MP3 has layer != 0 */
    if (n >= 4 && !memcmp(h, "\x30\x26\xb2\x75", 4)) return "ASF/WMA";
    if (n >= 5 && !memcmp(h, "#!AMR", 5)) return "AMR";
    static const char *ext[] = {".m4a", ".m4b", ".mp4", ".aac", ".webm", ".mkv", ".mka",
                                ".wma", ".amr", ".3gp", ".mov"};
    size_t nl = name ? strlen(name) : 0;
    for (size_t i = 0; i < sizeof ext / sizeof ext[0]; i++) {
        size_t el = strlen(ext[i]);
        if (nl > el && !strcasecmp(name + nl - el, ext[i])) return ext[i] + 1;
    }
    return NULL;
}

static int open_error(const char *name, const unsigned char *head, size_t n) {
    const char *kind = unsupported_kind(head, n, name);
    if (kind)
        return vox_error("%s: cannot read audio: %s is not a format libsndfile reads; convert it "
                         "first: ffmpeg -i %s -ar 16000 -ac 1 OUT.wav", name, kind, name);
    return vox_error("%s: cannot read audio: %s", name, sf_strerror(NULL));
}

/* ---- memory input (libsndfile virtual I/O) ------------------------------------ */

typedef struct {
    const unsigned char *data;
    sf_count_t size, pos;
} memfile;

static sf_count_t mf_len(void *u) { return ((memfile *)u)->size; }
static sf_count_t mf_tell(void *u) { return ((memfile *)u)->pos; }
static sf_count_t mf_seek(sf_count_t off, int whence, void *u) {
    memfile *m = u;
    sf_count_t base = whence == SEEK_SET ? 0 : whence == SEEK_CUR ? m->pos : m->size;
    if ((off > 0 && base > INT64_MAX - off) || base + off < 0) return -1;
    m->pos = base + off > m->size ? m->size : base + off;
    return m->pos;
}
static sf_count_t mf_read(void *ptr, sf_count_t count, void *u) {
    memfile *m = u;
    sf_count_t left = m->size - m->pos;
    if (count > left) count = left;
    if (count <= 0) return 0;
    memcpy(ptr, m->data + m->pos, (size_t)count);
    m->pos += count;
    return count;
}
static sf_count_t mf_write(const void *ptr, sf_count_t count, void *u) { return 0; }

/* ---- decoding -------------------------------------------------------------------- */

/* Reads every frame of an open file, downmixed; closes sf. */
static int decode(SNDFILE *sf, const SF_INFO *info, const char *name, float **out, int64_t *n,
                  int *rate) {
    const int ch = info->channels;
    if (ch <= 0 || info->samplerate <= 0) {
        sf_close(sf);
        return vox_error("%s: invalid header (%d channels, %d Hz)", name, ch, info->samplerate);
    }
    if (info->samplerate < VOX_AUDIO_MIN_RATE || info->samplerate > VOX_AUDIO_MAX_RATE) {
        sf_close(sf);
        return vox_error("%s: sample rate %d Hz is outside %d..%d Hz", name, info->samplerate,
                         VOX_AUDIO_MIN_RATE, VOX_AUDIO_MAX_RATE);
    }
    /* Normalised float reads scale integer PCM by a power of two (1/32768 for
     * 16-bit), so 16-bit input arrives as exactly int16 / 32768. */
    sf_command(sf, SFC_SET_NORM_FLOAT, NULL, SF_TRUE);
    const int64_t block_frames = READ_BLOCK_SAMPLES / ch > 0 ? READ_BLOCK_SAMPLES / ch : 1;
    float *block = malloc(sizeof(float) * (size_t)block_frames * (size_t)ch);
    int64_t cap = 1 << 16, len = 0; /* grows with what is decoded, not the header's claim */
    float *mono = malloc(sizeof(float) * (size_t)cap);
    int rc = 0;
    if (!block || !mono) rc = vox_error("%s: out of memory", name);
    while (rc == 0) {
        sf_count_t got = sf_readf_float(sf, block, block_frames);
        if (got <= 0) break;
        if (len + got > vox_audio_max_samples) {
            rc = vox_error("%s: longer than %lld samples (%.1f hours at %d Hz): split it or stream "
                           "it (--stdin)", name, (long long)vox_audio_max_samples,
                           (double)vox_audio_max_samples / info->samplerate / 3600.0,
                           info->samplerate);
            break;
        }
        if (len + got > cap) {
            int64_t ncap = cap;
            while (ncap < len + got) ncap *= 2;
            if (ncap > vox_audio_max_samples) ncap = vox_audio_max_samples;
            float *p = realloc(mono, sizeof(float) * (size_t)ncap);
            if (!p) {
                rc = vox_error("%s: out of memory (%lld samples)", name, (long long)ncap);
                break;
            }
            mono = p;
            cap = ncap;
        }
        /* Same arithmetic as numpy's float32 mean over channels: sum, then divide. */
        for (sf_count_t i = 0; i < got; i++) {
            const float *fr = block + (size_t)i * (size_t)ch;
            float s = fr[0];
            for (int c = 1; c < ch; c++) s += fr[c];
            mono[len + i] = ch == 1 ? s : s / (float)ch;
        }
        len += got;
    }
    if (rc == 0 && sf_error(sf) != SF_ERR_NO_ERROR)
        rc = vox_error("%s: read error: %s", name, sf_strerror(sf));
    if (rc == 0 && len == 0) rc = vox_error("%s: no audio frames", name);
    free(block);
    sf_close(sf);
    if (rc) {
        free(mono);
        return -1;
    }
    *out = mono;
    *n = len;
    *rate = info->samplerate;
    return 0;
}

int vox_audio_read_mem(const void *data, size_t size, const char *name, float **out, int64_t *n,
                       int *rate) {
    *out = NULL;
    *n = 0;
    *rate = 0;
    if (!name) name = "audio";
    if (size == 0) return vox_error("%s: empty file", name);
    memfile m = {data, (sf_count_t)size, 0};
    SF_VIRTUAL_IO io = {mf_len, mf_seek, mf_read, mf_write, mf_tell};
    SF_INFO info;
    memset(&info, 0, sizeof info);
    SNDFILE *sf = sf_open_virtual(&io, SFM_READ, &info, &m);
    if (!sf) return open_error(name, data, size);
    return decode(sf, &info, name, out, n, rate);
}

/* The whole of a non-seekable input; NULL with the error set. */
static unsigned char *slurp(int fd, const char *name, size_t *size) {
    size_t cap = 1 << 16, len = 0;
    unsigned char *buf = malloc(cap);
    if (!buf) {
        vox_error("%s: out of memory", name);
        return NULL;
    }
    for (;;) {
        if (len == cap) {
            if ((int64_t)cap >= MAX_PIPE_BYTES) {
                free(buf);
                vox_error("%s: more than %lld bytes from a pipe; give a file", name,
                          (long long)MAX_PIPE_BYTES);
                return NULL;
            }
            unsigned char *p = realloc(buf, cap * 2);
            if (!p) {
                free(buf);
                vox_error("%s: out of memory (%zu bytes)", name, cap * 2);
                return NULL;
            }
            buf = p;
            cap *= 2;
        }
        ssize_t got = read(fd, buf + len, cap - len);
        if (got < 0 && errno == EINTR) continue;
        if (got < 0) {
            free(buf);
            vox_error("%s: %s", name, strerror(errno));
            return NULL;
        }
        if (got == 0) break;
        len += (size_t)got;
    }
    *size = len;
    return buf;
}

static int stat_error(const char *path, int err) {
    if (err == ENOENT) return vox_error("%s: no such file", path);
    return vox_error("%s: %s", path, strerror(err));
}

int vox_audio_read(const char *path, float **out, int64_t *n, int *rate) {
    *out = NULL;
    *n = 0;
    *rate = 0;
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) return stat_error(path, errno);
    struct stat st;
    if (fstat(fd, &st) != 0) {
        int e = errno;
        close(fd);
        return stat_error(path, e);
    }
    if (S_ISDIR(st.st_mode)) {
        close(fd);
        return vox_error("%s: is a directory", path);
    }
    if (!S_ISREG(st.st_mode)) { /* FIFO, pipe, terminal: once, into memory */
        size_t size = 0;
        unsigned char *data = slurp(fd, path, &size);
        close(fd);
        if (!data) return -1;
        int rc = vox_audio_read_mem(data, size, path, out, n, rate);
        free(data);
        return rc;
    }
    if (st.st_size == 0) {
        close(fd);
        return vox_error("%s: empty file", path);
    }
    unsigned char head[16];
    ssize_t hn = pread(fd, head, sizeof head, 0);
    SF_INFO info;
    memset(&info, 0, sizeof info);
    SNDFILE *sf = sf_open_fd(fd, SFM_READ, &info, SF_FALSE);
    if (!sf) {
        int rc = open_error(path, head, hn > 0 ? (size_t)hn : 0);
        close(fd);
        return rc;
    }
    int rc = decode(sf, &info, path, out, n, rate);
    close(fd);
    return rc;
}

int vox_audio_probe(const char *path) {
    struct stat st;
    if (stat(path, &st) != 0) return stat_error(path, errno);
    if (S_ISDIR(st.st_mode)) return vox_error("%s: is a directory", path);
    if (!S_ISREG(st.st_mode)) return 0; /* a pipe cannot be read twice: vox_audio_read checks it */
    if (st.st_size == 0) return vox_error("%s: empty file", path);
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) return stat_error(path, errno);
    unsigned char head[16];
    ssize_t hn = pread(fd, head, sizeof head, 0);
    SF_INFO info;
    memset(&info, 0, sizeof info);
    SNDFILE *sf = sf_open_fd(fd, SFM_READ, &info, SF_FALSE);
    int rc = 0;
    if (!sf) rc = open_error(path, head, hn > 0 ? (size_t)hn : 0);
    else if (info.channels <= 0 || info.samplerate <= 0)
        rc = vox_error("%s: invalid header (%d channels, %d Hz)", path, info.channels, info.samplerate);
    else if (info.samplerate < VOX_AUDIO_MIN_RATE || info.samplerate > VOX_AUDIO_MAX_RATE)
        rc = vox_error("%s: sample rate %d Hz is outside %d..%d Hz", path, info.samplerate,
                       VOX_AUDIO_MIN_RATE, VOX_AUDIO_MAX_RATE);
    if (sf) sf_close(sf);
    close(fd);
    return rc;
}

int vox_audio_load(const char *path, int rate, float **out, int64_t *n) {
    *out = NULL;
    *n = 0;
    if (rate <= 0) return vox_error("%s: invalid target sample rate %d", path, rate);
    float *x = NULL;
    int64_t nx = 0;
    int in_rate = 0;
    if (vox_audio_read(path, &x, &nx, &in_rate) != 0) return -1;
    if (in_rate == rate) {
        *out = x;
        *n = nx;
        return 0;
    }
    int rc = vox_resample(x, nx, in_rate, rate, out, n);
    free(x);
    if (rc < 0) return vox_error("%s: %s", path, vox_last_error());
    if (*n == 0) {
        free(*out);
        *out = NULL;
        return vox_error("%s: no audio frames after resampling to %d Hz", path, rate);
    }
    return 0;
}

/* One-shot soxr at HQ quality, float32 in and out. The output has
 * round(n * out_rate / in_rate) samples (what python-soxr's resample() returns). */
int vox_resample(const float *in, int64_t n, int in_rate, int out_rate, float **out,
                 int64_t *nout) {
    *out = NULL;
    *nout = 0;
    if (in_rate <= 0 || out_rate <= 0 || n < 0)
        return vox_error("vox_resample: invalid arguments (%lld samples, %d -> %d Hz)",
                         (long long)n, in_rate, out_rate);
    double want = (double)n * out_rate / in_rate + 0.5;
    if (want > (double)vox_audio_max_samples)
        return vox_error("resampling %lld samples from %d to %d Hz gives more than %lld",
                         (long long)n, in_rate, out_rate, (long long)vox_audio_max_samples);
    int64_t olen = (int64_t)want;
    float *o = malloc(sizeof(float) * (size_t)(olen > 0 ? olen : 1));
    if (!o) return vox_error("vox_resample: out of memory (%lld samples)", (long long)olen);
    if (in_rate == out_rate) {
        if (n) memcpy(o, in, sizeof(float) * (size_t)n);
        *out = o;
        *nout = n;
        return 0;
    }
    size_t done = 0;
    soxr_io_spec_t io = soxr_io_spec(SOXR_FLOAT32_I, SOXR_FLOAT32_I);
    soxr_quality_spec_t q = soxr_quality_spec(SOXR_HQ, 0);
    soxr_error_t err = soxr_oneshot(in_rate, out_rate, 1, in, (size_t)n, NULL, o,
                                    (size_t)olen, &done, &io, &q, NULL);
    if (err) {
        free(o);
        return vox_error("vox_resample: soxr: %s", err);
    }
    *out = o;
    *nout = (int64_t)done;
    return 0;
}
