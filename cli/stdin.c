/* cli/stdin.c - live input from standard input for `voxtral --stdin`.
 *
 * A stream that starts with "RIFF....WAVE" is parsed as WAV (PCM 16-bit or
 * float 32-bit, any channel count, at the model's rate; a data size of 0 or
 * 0xFFFFFFFF, as ffmpeg writes to a pipe, means "until EOF"); anything else is
 * raw s16le mono at the model's rate. Samples are fed to the stream in small
 * blocks as they arrive, so text comes out while audio is still coming in.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cli.h"

enum { BLOCK_BYTES = 8192 };

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
                if (r->stop()) return -2;
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
        if (have <= 0) return have < 0 ? -1 : cli_error("stdin: WAV header truncated");
        size_t take = (uint64_t)have < n ? (size_t)have : (size_t)n;
        r->off += take;
        n -= take;
    }
    return 0;
}

int cli_stdin(vox_stream *s, int rate, double interval, int (*stop)(void)) {
    reader r = {0};
    r.stop = stop;
    int channels = 1, fmt_float = 0, bytes_per = 2;
    uint64_t remaining = UINT64_MAX; /* data bytes left (unknown: until EOF) */
    ssize_t have = fill(&r, 12);
    if (have < 0) return -1;
    if (have >= 12 && !memcmp(r.buf + r.off, "RIFF", 4) && !memcmp(r.buf + r.off + 8, "WAVE", 4)) {
        r.off += 12;
        int got_fmt = 0;
        for (;;) {
            have = fill(&r, 8);
            if (have < 8) return have < 0 ? -1 : cli_error("stdin: WAV header truncated (no data chunk)");
            const unsigned char *h = r.buf + r.off;
            uint32_t size = le32(h + 4);
            int is_fmt = !memcmp(h, "fmt ", 4), is_data = !memcmp(h, "data", 4);
            r.off += 8;
            if (is_data) {
                if (!got_fmt) return cli_error("stdin: WAV data chunk before its fmt chunk");
                if (size != 0 && size != 0xFFFFFFFFu) remaining = size;
                break;
            }
            if (is_fmt) {
                if (size < 16 || fill(&r, 16) < 16) return cli_error("stdin: WAV fmt chunk truncated");
                const unsigned char *f = r.buf + r.off;
                int tag = le16(f), bits = le16(f + 14);
                channels = le16(f + 2);
                uint32_t wav_rate = le32(f + 4);
                if (tag == 0xFFFE && size >= 26 && fill(&r, 26) >= 26) tag = le16(r.buf + r.off + 24);
                if (tag == 1 && bits == 16) fmt_float = 0, bytes_per = 2;
                else if (tag == 3 && bits == 32) fmt_float = 1, bytes_per = 4;
                else return cli_error("stdin: WAV format %d with %d-bit samples is not supported (use 16-bit PCM or 32-bit float)", tag, bits);
                if (channels < 1 || channels > 64) return cli_error("stdin: WAV with %d channels", channels);
                if ((int)wav_rate != rate)
                    return cli_error("stdin: WAV at %u Hz; live input must be %d Hz (e.g. ffmpeg ... -ar %d -ac 1 -f wav -)", wav_rate, rate, rate);
                got_fmt = 1;
            }
            if (skip(&r, size + (size & 1)) != 0) return -1;
        }
    }
    const size_t frame = (size_t)channels * bytes_per;
    size_t gather = (size_t)(interval * rate), pending = 0;
    if (gather < 1) gather = 1;
    float *out = malloc(sizeof(float) * (gather + BLOCK_BYTES));
    if (!out) return cli_error("out of memory");
    int rc = 0;
    while (remaining > 0) {
        if (stop()) break;
        have = fill(&r, frame);
        if (have == -2) break;
        if (have < 0) {
            rc = -1;
            break;
        }
        if ((size_t)have < frame) break; /* EOF; a partial trailing sample is dropped */
        size_t frames = (size_t)have / frame;
        if (frames > BLOCK_BYTES / 2) frames = BLOCK_BYTES / 2;
        if ((uint64_t)frames * frame > remaining) frames = (size_t)(remaining / frame);
        if (!frames) break;
        const unsigned char *p = r.buf + r.off;
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
            out[pending + i] = channels == 1 ? acc : acc / channels;
        }
        pending += frames;
        r.off += frames * frame;
        if (remaining != UINT64_MAX) remaining -= frames * frame;
        if (pending >= gather) {
            if (vox_stream_feed(s, out, pending) != 0) {
                rc = cli_error("%s", vox_last_error());
                break;
            }
            pending = 0;
        }
    }
    /* what was gathered is fed even when a signal ended the input */
    if (!rc && pending && vox_stream_feed(s, out, pending) != 0) rc = cli_error("%s", vox_last_error());
    free(out);
    return rc;
}
