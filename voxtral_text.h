/* voxtral_text.h - decoded tokens to valid text and timed output (public API,
 * included by voxtral.h; written once for the CLI and the server).
 *
 * Three parts:
 *   1. UTF-8: token pieces are raw bytes (Tekken's byte tokens can split or break
 *      characters). vox_utf8_decode gives exactly Python's
 *      bytes.decode("utf-8", errors="replace") (one U+FFFD per maximal invalid
 *      subsequence, U+0000 kept); vox_utf8_feed/flush do the same piece by piece,
 *      holding an incomplete trailing sequence back, so that no output piece splits
 *      a character and the outputs concatenate to the whole decode.
 *   2. vox_transcript: accumulates vox_tokens into words and segments with audio
 *      times (rules at the top of voxtral_text.c), and hands out text deltas.
 *   3. Writers: plain text, SRT, WebVTT, OpenAI verbose_json and a terminal line
 *      format, appended to a growable buffer (vox_buf); a FILE * user fwrites it.
 *      Every byte they write is valid UTF-8 and valid for its format; no writer
 *      output contains a 0x00 byte (JSON escapes U+0000, line formats replace it).
 *
 * Errors: -1 / NULL and a message in the library's error channel (vox_last_error);
 * the only failure is running out of memory.
 */
#ifndef VOXTRAL_TEXT_H
#define VOXTRAL_TEXT_H

#include "voxtral.h"

#ifdef __cplusplus
extern "C" {
#endif

/* ---- growable output buffer ---- */

/* Zero-initialise (vox_buf b = {0};); functions append to it. data is kept
 * NUL-terminated for convenience, but text may hold U+0000: use len. */
typedef struct {
    char *data;
    size_t len, cap;
} vox_buf;
int vox_buf_append(vox_buf *b, const void *bytes, size_t n); /* 0 or -1 */
void vox_buf_free(vox_buf *b);                               /* frees, zeroes */

/* ---- UTF-8 ---- */

/* Streaming decoder state: zero-initialise or vox_utf8_init. */
typedef struct {
    unsigned char pend[4]; /* a valid prefix of a multi-byte character */
    int n;                 /* bytes in pend (0..3) */
} vox_utf8_decoder;

/* Worst-case output bytes of one vox_utf8_feed of n bytes (flush: 3). */
#define VOX_UTF8_MAX_OUT(n) (3 * ((size_t)(n) + 3))

void vox_utf8_init(vox_utf8_decoder *d);
/* Decodes n bytes (any bytes, 0x00 included) into out (room for VOX_UTF8_MAX_OUT(n));
 * returns the bytes written: only complete, valid characters. No allocation. */
size_t vox_utf8_feed(vox_utf8_decoder *d, const char *in, size_t n, char *out);
/* End of input: a held-back truncated sequence becomes one U+FFFD (out: 3 bytes). */
size_t vox_utf8_flush(vox_utf8_decoder *d, char *out);
/* Whole-buffer decode, appended to out: Python's decode("utf-8", errors="replace"). */
int vox_utf8_decode(const char *in, size_t n, vox_buf *out);
/* 1 when the n bytes are valid UTF-8 (strict: no overlongs, surrogates, > U+10FFFF). */
int vox_utf8_valid(const char *s, size_t n);
/* Appends s (n bytes, valid UTF-8) as a JSON string literal, quotes included:
 * escapes ", \ and U+0000..U+001F. For a cJSON tree, pass the result to
 * cJSON_CreateRaw (cJSON's own strings stop at a 0x00 byte). */
int vox_json_quote(vox_buf *out, const char *s, size_t n);

/* ---- transcript: words, segments, audio times ---- */

typedef struct {
    int token_ms;        /* audio per decoder token: 80 for the released model */
    int max_len;         /* -ml: a segment ends before the word that makes it longer
                            than this many characters (code points); 0 = no limit */
    int sentence_pause_ms; /* sentence punctuation followed by this much time with no
                              text ends a segment (default 320) */
    int long_pause_ms;   /* this much time with no text ends a segment (default 960) */
} vox_text_options;
void vox_text_options_default(vox_text_options *o);

typedef struct vox_transcript vox_transcript;

typedef struct {
    const char *text; /* the word's bytes in the transcript text, leading space and
                         trailing spaces trimmed (valid UTF-8, not NUL-terminated) */
    size_t len;
    double start, end; /* audio seconds, millisecond precision */
    int segment;       /* index of the segment holding it */
} vox_word;

typedef struct {
    const char *text;  /* exact slice of the transcript text (may start with the space
                          before its first word): slices of all segments concatenate
                          to vox_transcript_text */
    size_t len;
    double start, end; /* audio seconds, ms precision: 0 <= start < end <= duration,
                          end <= the next segment's start */
    const int *tokens; /* ids of the text tokens that make up the segment */
    int n_tokens;
    int first_word, n_words; /* its words in vox_transcript_word order */
} vox_segment;

vox_transcript *vox_transcript_new(const vox_text_options *opt); /* NULL opt: defaults */
void vox_transcript_free(vox_transcript *tr);
/* Adds one decoded token (all of them, control ids too: their times measure the
 * pauses). Call it from the token callback. 0 or -1 (out of memory). */
int vox_transcript_add(vox_transcript *tr, const vox_token *tok);
/* The caller's segment end (e.g. vox_stream_restarts grew): closes the open segment. */
int vox_transcript_break(vox_transcript *tr);
/* The audio duration in seconds, once known (<= 0: not known). Text decoded past
 * it (the right pad) gets times clamped inside the audio; call it before
 * vox_stream_finish so that segments closed meanwhile stay final. */
void vox_transcript_set_duration(vox_transcript *tr, double seconds);
/* End of input: flushes the UTF-8 decoder (a truncated tail becomes U+FFFD), closes
 * the last segment. duration_s <= 0: keep the one set before (or none: times are
 * not capped). A segment that cannot fit after the one before it inside the audio
 * joins that one (possible only for segments closed before the duration was set). */
int vox_transcript_end(vox_transcript *tr, double duration_s);

/* Text added by the last add/break/end call: complete characters only, so the
 * deltas concatenate to vox_transcript_text (for stdout, --json pieces, server
 * deltas). May be empty; may hold U+0000 (use len). Valid until the next call. */
const char *vox_transcript_delta(const vox_transcript *tr, size_t *len);
/* Whole text so far: the decoded bytes, leading whitespace dropped. */
const char *vox_transcript_text(const vox_transcript *tr, size_t *len);
double vox_transcript_duration(const vox_transcript *tr); /* as set, else the last end */
/* Segments: the first vox_transcript_closed are final (after end, all of them); the
 * rest (at most the open one) is provisional. Pointers in vox_segment / vox_word
 * are valid until the next add/break/end or free. */
int vox_transcript_segments(const vox_transcript *tr);
int vox_transcript_closed(const vox_transcript *tr);
int vox_transcript_segment(const vox_transcript *tr, int i, vox_segment *seg); /* 0 / -1 */
int vox_transcript_words(const vox_transcript *tr);
int vox_transcript_word(const vox_transcript *tr, int i, vox_word *w); /* 0 / -1 */

/* ---- writers ---- */

typedef enum {
    VOX_FORMAT_TXT,   /* one line per segment */
    VOX_FORMAT_SRT,   /* "1\n00:00:01,240 --> 00:00:04,880\ntext\n\n" */
    VOX_FORMAT_VTT,   /* "WEBVTT\n\n00:00:01.240 --> 00:00:04.880\ntext\n\n" */
    VOX_FORMAT_JSON,  /* OpenAI verbose_json */
    VOX_FORMAT_LINES, /* terminal: "[00:01.240 --> 00:04.880]  text\n" */
} vox_format;

/* Line formats (TXT, SRT, VTT, LINES) write a segment's text on one line, its outer
 * spaces trimmed; tab, CR and LF become a space, other control characters (C0,
 * DEL, C1: they would drive a terminal) U+FFFD. SRT writes "-->" as "→"; VTT
 * escapes & < > as &amp; &lt; &gt;. JSON keeps the text exactly. */
typedef struct {
    const char *language; /* verbose_json "language"; NULL: the key is left out */
    int omit_words;       /* verbose_json: no "words" array (OpenAI's response unless
                             timestamp_granularities[] asks for words) */
} vox_write_options;

/* Appends the whole transcript in `format` (call after vox_transcript_end). */
int vox_transcript_write(const vox_transcript *tr, vox_format format,
                         const vox_write_options *opt, vox_buf *out);
/* Appends segment i alone, for live output as segments close: a TXT line, an SRT
 * cue numbered i + 1, a VTT cue (the "WEBVTT\n\n" header is vox_transcript_write's),
 * a terminal line, or the verbose_json segment object. */
int vox_transcript_write_segment(const vox_transcript *tr, int i, vox_format format, vox_buf *out);

#ifdef __cplusplus
}
#endif
#endif
