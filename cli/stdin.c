/* cli/stdin.c - live input from standard input for `voxtral --stdin`.
 *
 * A stream that starts with "RIFF....WAVE" is parsed as WAV (PCM 16-bit or
 * float 32-bit, any channel count, any rate: resampled to the model's with one
 * streaming libsoxr resampler; a data size of 0 or 0xFFFFFFFF, as ffmpeg writes
 * to a pipe, means "until EOF"). Other containers (MP3, FLAC, Ogg, MP4, WebM...)
 * and text are refused with the ffmpeg line that converts them (cli_sniff);
 * anything else is raw s16le mono at the model's rate. Samples are fed to the
 * stream in small blocks as they arrive, so text comes out while audio is still
 * coming in. A stop (Ctrl-C) anywhere, the WAV header included, ends the input
 * without an error.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <soxr.h>
#include <unistd.h>

#include "cli.h"

enum { BLOCK_BYTES = 8192, SNIFF_BYTES = 2048 };
#define STOPPED (-2) /* fill(): the stop flag was raised */

typedef struct {
    int fd;
    unsigned char buf[BLOCK_BYTES];
    size_t len, off; /* pending bytes buf[off..len) */
    int eof;
    int (*stop)(void);
} reader;

/* Ensures `want` bytes are pending (fewer at EOF). Returns pending count or -1. */
static ssize_t fill(reader *r, size_t want) {
    if (r->off && r->off == r->len) r->off = r->len = 0;
    if (r->off + want > sizeof r->buf) {
        memmove(r->buf, r->buf + r->off, r->len - r->off);
        r->len -= r->off;
        r->off = 0;
    }
    while (r->len - r->off < want && !r->eof) {
        ssize_t got = read(r->fd, r->buf + r->len, sizeof r->buf - r->len);
        if (got < 0) {
            if (errno == EINTR) {
                if (r->stop()) return STOPPED;
                continue;
            }
            return cli_error("stdin: %s", strerror(errno));
        }
        if (got == 0) r->eof = 1;
        r->len += (size_t)got;
    }
    return (ssize_t)(r->len - r->off);
}

static uint32_t le32(const unsigned char *p) { return p[0] | p[1] << 8 | p[2] << 16 | (uint32_t)p[3] << 24; }
static uint16_t le16(const unsigned char *p) { return (uint16_t)(p[0] | p[1] << 8); }

/* Skips n bytes of input. */
static int skip(reader *r, uint64_t n) {
    while (n > 0) {
        ssize_t have = fill(r, 1);
        if (have <= 0) return have < 0 ? (int)have : cli_error("stdin: WAV header truncated");
        size_t take = (uint64_t)have < n ? (size_t)have : (size_t)n;
        r->off += take;
        n -= take;
    }
    return 0;
}

/* Resampler state: soxr from the WAV's rate to the model's, output gathered in `out` */
typedef struct {
    vox_stream *s;
    soxr_t soxr; /* NULL at the model's rate */
    float *out;
    size_t len, cap, gather;
} sink;

static int sink_feed(sink *k) {
    if (!k->len) return 0;
    int rc = vox_stream_feed(k->s, k->out, k->len);
    k->len = 0;
    return rc ? cli_error("%s", vox_last_error()) : 0;
}

/* n mono samples at the input rate (x == NULL: the end: drain the resampler) */
static int sink_push(sink *k, const float *x, size_t n) {
    if (!k->soxr) {
        while (x && n > 0) {
            size_t take = k->cap - k->len < n ? k->cap - k->len : n;
            memcpy(k->out + k->len, x, sizeof(float) * take);
            k->len += take, x += take, n -= take;
            if (k->len >= k->gather && sink_feed(k) != 0) return -1;
        }
        return 0;
    }
    for (;;) {
        size_t idone = 0, odone = 0;
        soxr_error_t err = soxr_process(k->soxr, x, n, &idone, k->out + k->len, k->cap - k->len, &odone);
        if (err) return cli_error("stdin: resampler: %s", err);
        k->len += odone;
        if (x) x += idone;
        n -= idone;
        if (k->len >= k->gather && sink_feed(k) != 0) return -1;
        if (x ? n == 0 : odone == 0) return 0;
    }
}

/* The WAV header: fills the format; 0, STOPPED, or -1 with the error set */
static int wav_header(reader *r, int *channels, int *fmt_float, int *bytes_per, uint32_t *wav_rate,
                      uint64_t *remaining) {
    r->off += 12;
    int got_fmt = 0;
    for (;;) {
        ssize_t have = fill(r, 8);
        if (have < 8) return have < 0 ? (int)have : cli_error("stdin: WAV header truncated (no data chunk)");
        const unsigned char *h = r->buf + r->off;
        uint32_t size = le32(h + 4);
        int is_fmt = !memcmp(h, "fmt ", 4), is_data = !memcmp(h, "data", 4);
        r->off += 8;
        if (is_data) {
            if (!got_fmt) return cli_error("stdin: WAV data chunk before its fmt chunk");
            if (size != 0 && size != 0xFFFFFFFFu) *remaining = size;
            return 0;
        }
        if (is_fmt) {
            if (size < 16) return cli_error("stdin: WAV fmt chunk truncated");
            if ((have = fill(r, 16)) < 16) return have < 0 ? (int)have : cli_error("stdin: WAV fmt chunk truncated");
            const unsigned char *f = r->buf + r->off;
            int tag = le16(f), bits = le16(f + 14);
            *channels = le16(f + 2);
            *wav_rate = le32(f + 4);
            if (tag == 0xFFFE && size >= 26) {
                if ((have = fill(r, 26)) < 0) return (int)have;
                if (have >= 26) tag = le16(r->buf + r->off + 24);
            }
            if (tag == 1 && bits == 16) *fmt_float = 0, *bytes_per = 2;
            else if (tag == 3 && bits == 32) *fmt_float = 1, *bytes_per = 4;
            else return cli_error("stdin: WAV format %d with %d-bit samples is not supported (use 16-bit PCM or 32-bit float)", tag, bits);
            if (*channels < 1 || *channels > 64) return cli_error("stdin: WAV with %d channels", *channels);
            if (*wav_rate < 1000 || *wav_rate > 768000)
                return cli_error("stdin: WAV at %u Hz: need 1000..768000 Hz", *wav_rate);
            got_fmt = 1;
        }
        int rc = skip(r, size + (uint64_t)(size & 1));
        if (rc) return rc;
    }
}

/* what cli_stdin_begin read: the reader and the input's format */
static reader rd;
static int channels = 1, fmt_float = 0, bytes_per = 2;
static uint32_t wav_rate;
static uint64_t remaining = UINT64_MAX; /* data bytes left (unknown: until EOF) */
static int began, stopped;

int cli_stdin_begin(int (*stop)(void)) {
    reader *r = &rd;
    /* a fresh input each call (the CLI makes one; the fuzz target one per input) */
    memset(&rd, 0, sizeof rd);
    channels = 1, fmt_float = 0, bytes_per = 2, wav_rate = 0, remaining = UINT64_MAX, stopped = 0;
    r->fd = 0;
    r->stop = stop;
    began = 1;
    ssize_t have = fill(r, SNIFF_BYTES);
    if (have == STOPPED) return stopped = 1, 0;
    if (have < 0) return -1;
    if (have == 0) return cli_error("no audio on stdin (it is empty)");
    if (have >= 12 && !memcmp(r->buf + r->off, "RIFF", 4) && !memcmp(r->buf + r->off + 8, "WAVE", 4)) {
        int rc = wav_header(r, &channels, &fmt_float, &bytes_per, &wav_rate, &remaining);
        if (rc == STOPPED) return stopped = 1, 0;
        return rc ? -1 : 0;
    }
    const char *what = cli_sniff(r->buf + r->off, (size_t)have, r->eof);
    if (what)
        return cli_error("stdin: this is %s, not WAV or raw s16le audio; convert it: ffmpeg -loglevel error "
                         "-i FILE -ar 16000 -ac 1 -f wav - | voxtral --stdin ...%s", what,
                         strcmp(what, "text") ? " (or pass the file with -i)" : "");
    return 0;
}

int cli_stdin(vox_stream *s, int rate, double interval, int (*stop)(void)) {
    if (!began && cli_stdin_begin(stop) != 0) return -1;
    if (stopped) return 0;
    reader *rp = &rd;
    ssize_t have;
    if (!wav_rate) wav_rate = (uint32_t)rate; /* raw input: the model's rate */
    const size_t frame = (size_t)channels * bytes_per;
    sink k = {.s = s};
    k.gather = (size_t)(interval * rate);
    if (k.gather < 1) k.gather = 1;
    size_t max_in = BLOCK_BYTES / 2; /* frames converted per pass */
    k.cap = k.gather + (size_t)((double)max_in * rate / wav_rate) + 64;
    k.out = malloc(sizeof(float) * k.cap);
    float *mono = malloc(sizeof(float) * max_in);
    if ((int)wav_rate != rate) {
        soxr_error_t err;
        soxr_io_spec_t io = soxr_io_spec(SOXR_FLOAT32_I, SOXR_FLOAT32_I);
        soxr_quality_spec_t q = soxr_quality_spec(SOXR_HQ, 0);
        k.soxr = soxr_create(wav_rate, rate, 1, &err, &io, &q, NULL);
        if (!k.soxr) {
            free(k.out);
            free(mono);
            return cli_error("stdin: resampler %u -> %d Hz: %s", wav_rate, rate, err);
        }
    }
    if (!k.out || !mono) {
        free(k.out);
        free(mono);
        if (k.soxr) soxr_delete(k.soxr);
        return cli_error("out of memory");
    }
    int rc = 0;
    while (remaining > 0) {
        if (stop()) break;
        have = fill(rp, frame);
        if (have == STOPPED) break;
        if (have < 0) {
            rc = -1;
            break;
        }
        if ((size_t)have < frame) break; /* EOF; a partial trailing sample is dropped */
        size_t frames = (size_t)have / frame;
        if (frames > max_in) frames = max_in;
        if ((uint64_t)frames * frame > remaining) frames = (size_t)(remaining / frame);
        if (!frames) break;
        const unsigned char *p = rp->buf + rp->off;
        for (size_t i = 0; i < frames; i++) {
            float acc = 0;
            for (int c = 0; c < channels; c++) {
                const unsigned char *q = p + i * frame + (size_t)c * bytes_per;
                if (fmt_float) {
                    float v;
                    memcpy(&v, q, 4);
                    acc += v;
                } else {
                    acc += (float)(int16_t)le16(q) / 32768.0f;
                }
            }
            mono[i] = channels == 1 ? acc : acc / channels;
        }
        rp->off += frames * frame;
        if (remaining != UINT64_MAX) remaining -= frames * frame;
        if (sink_push(&k, mono, frames) != 0) {
            rc = -1;
            break;
        }
    }
    /* what was gathered is fed even when a signal ended the input */
    if (!rc && k.soxr) rc = sink_push(&k, NULL, 0);
    if (!rc) rc = sink_feed(&k);
    free(k.out);
    free(mono);
    if (k.soxr) soxr_delete(k.soxr);
    return rc;
}
