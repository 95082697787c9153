/* voxtral_text.c - decoded tokens to valid UTF-8 text, words and segments with
 * audio times, and the writers (txt, SRT, WebVTT, OpenAI verbose_json, terminal).
 *
 * UTF-8 (Python's bytes.decode("utf-8", errors="replace"), which follows the
 * Unicode "substitution of maximal subparts" practice): a lead byte C2..DF, E0..EF
 * or F0..F4 opens a sequence whose next byte must be in 80..BF, narrowed for the
 * second byte to A0..BF after E0 (no overlongs), 80..9F after ED (no surrogates),
 * 90..BF after F0, 80..8F after F4 (nothing above U+10FFFF). A byte that fits
 * extends the sequence; one that does not ends it: the bytes so far become one
 * U+FFFD and that byte is looked at afresh. 80..C1 and F5..FF alone are one U+FFFD
 * each. A sequence cut by the end of input is one U+FFFD. 0x00 is U+0000.
 *
 * Times (audio seconds; integer milliseconds inside):
 *   - vox_token.time_s is already an audio time. The engine puts the delay in the
 *     prompt (prompt_len = 1 + left pad + delay tokens), so token k of a decoder
 *     segment (k = 0 the first) has time_s = segment start + k * 80 ms, while it
 *     was decoded once the audio up to segment start + (k + 1) * 80 ms + delay had
 *     been read: time_s = (time the token could be decoded) - delay - 80 ms, the
 *     start of the 80 ms of audio [time_s, time_s + 80 ms) it transcribes. No
 *     delay is subtracted here (tests/test_text.c checks time_s on two delays).
 *   - A text token's time t = max(time_s, 0, previous text token's t + 80 ms):
 *     text times increase (a flushed segment's right pad may overlap the next
 *     segment's first audio). Once the duration D is known, a time is capped at
 *     D - 80 ms (text decoded in the right pad lands on the last token of audio).
 *   - Word start = t of its first piece. Word end = the next word's start when
 *     that word is in the same segment, else t of its last piece + 80 ms, capped
 *     at D.
 *   - Segment start = its first word's start, not before the previous segment's
 *     end; segment end = its last word's end. A segment left with end <= start
 *     (only text decoded past the end of the audio can do that) joins the one
 *     before at vox_transcript_end.
 *
 * Words and segments:
 *   - A piece that starts with an ASCII space (or tab, newline) starts a word, as
 *     does one that starts with a CJK ideograph or kana (those scripts have no
 *     spaces), unless the word so far is only whitespace (then it extends it). A
 *     piece that completes a character held back from the piece before continues
 *     the word, whatever it starts with.
 *   - A segment ends: when the text so far ends with sentence punctuation (. ! ?
 *     … and the CJK 。！？．｡, closing quotes and brackets after it allowed) and
 *     sentence_pause_ms (default 320 ms, 4 tokens) pass with no text; when
 *     long_pause_ms (default 960 ms, 12 tokens) pass with no text; at
 *     vox_transcript_break (the caller's segment restart); before the word that
 *     takes it over max_len characters (whisper.cpp's -ml, split at a word
 *     boundary; a single longer word stays whole). The model writes a word's text
 *     near its onset, so a run of tokens without text includes the word's own
 *     duration (typically 200-500 ms): 320 ms after a full stop means the next
 *     sentence did not follow at once; 960 ms without any text means at least
 *     about half a second of real silence, the usual place for a new subtitle.
 *   - Past the end of the audio (a token whose 80 ms end after D), pauses and
 *     max_len end no segment: text in the right pad joins the open one.
 *   - A segment never ends while the decoder holds back part of a character: the
 *     end waits for the next text piece (which either completes the character, then
 *     the word goes on, or does not, then the held bytes become U+FFFD first). So
 *     the transcript text is exactly the whole decode of all piece bytes, with the
 *     leading whitespace dropped, and segment slices concatenate to it.
 */
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "voxtral_internal.h"
#include "voxtral_text.h"

/* ---- growable buffer ------------------------------------------------------- */

static int buf_reserve(vox_buf *b, size_t extra) {
    if (b->len + extra + 1 <= b->cap) return 0;
    size_t cap = b->cap ? b->cap : 256;
    while (cap < b->len + extra + 1) cap *= 2;
    char *d = realloc(b->data, cap);
    if (!d) return vox_error("text: out of memory (%zu bytes)", cap);
    b->data = d;
    b->cap = cap;
    return 0;
}

int vox_buf_append(vox_buf *b, const void *bytes, size_t n) {
    if (buf_reserve(b, n) != 0) return -1;
    if (n) memcpy(b->data + b->len, bytes, n);
    b->len += n;
    b->data[b->len] = 0;
    return 0;
}

void vox_buf_free(vox_buf *b) {
    free(b->data);
    memset(b, 0, sizeof *b);
}

static int buf_str(vox_buf *b, const char *s) { return vox_buf_append(b, s, strlen(s)); }

static int buf_printf(vox_buf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static int buf_printf(vox_buf *b, const char *fmt, ...) {
    char tmp[96];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(tmp, sizeof tmp, fmt, ap);
    va_end(ap);
    if (n < 0 || n >= (int)sizeof tmp) return vox_error("text: formatting failed");
    return vox_buf_append(b, tmp, (size_t)n);
}

/* ---- UTF-8 ----------------------------------------------------------------- */

static const char REPLACEMENT[3] = {(char)0xEF, (char)0xBF, (char)0xBD}; /* U+FFFD */

/* length of the sequence lead byte c opens; 0 when c cannot start one */
static int utf8_need(unsigned c) {
    return c < 0x80 ? 1 : c < 0xC2 ? 0 : c < 0xE0 ? 2 : c < 0xF0 ? 3 : c < 0xF5 ? 4 : 0;
}

/* whether c may be byte i (1..3) of a sequence opened by `lead` */
static int utf8_fits(unsigned lead, int i, unsigned c) {
    unsigned lo = 0x80, hi = 0xBF;
    if (i == 1) {
        if (lead == 0xE0) lo = 0xA0;
        else if (lead == 0xED) hi = 0x9F;
        else if (lead == 0xF0) lo = 0x90;
        else if (lead == 0xF4) hi = 0x8F;
    }
    return c >= lo && c <= hi;
}

void vox_utf8_init(vox_utf8_decoder *d) { memset(d, 0, sizeof *d); }

size_t vox_utf8_feed(vox_utf8_decoder *d, const char *in, size_t n, char *out) {
    size_t o = 0;
    for (size_t i = 0; i < n; i++) {
        unsigned c = (unsigned char)in[i];
        if (d->n) {
            if (utf8_fits(d->pend[0], d->n, c)) {
                d->pend[d->n++] = (unsigned char)c;
                if (d->n == utf8_need(d->pend[0])) {
                    memcpy(out + o, d->pend, (size_t)d->n);
                    o += (size_t)d->n;
                    d->n = 0;
                }
                continue;
            }
            memcpy(out + o, REPLACEMENT, 3); /* the maximal subpart ends before c */
            o += 3;
            d->n = 0;
        }
        int need = utf8_need(c);
        if (need == 1) {
            out[o++] = (char)c;
        } else if (need == 0) {
            memcpy(out + o, REPLACEMENT, 3);
            o += 3;
        } else {
            d->pend[0] = (unsigned char)c;
            d->n = 1;
        }
    }
    return o;
}

size_t vox_utf8_flush(vox_utf8_decoder *d, char *out) {
    if (!d->n) return 0;
    d->n = 0;
    memcpy(out, REPLACEMENT, 3);
    return 3;
}

int vox_utf8_decode(const char *in, size_t n, vox_buf *out) {
    if (buf_reserve(out, VOX_UTF8_MAX_OUT(n)) != 0) return -1;
    vox_utf8_decoder d = {{0}, 0};
    out->len += vox_utf8_feed(&d, in, n, out->data + out->len);
    out->len += vox_utf8_flush(&d, out->data + out->len);
    out->data[out->len] = 0;
    return 0;
}

int vox_utf8_valid(const char *s, size_t n) {
    for (size_t i = 0; i < n;) {
        unsigned c = (unsigned char)s[i];
        int need = utf8_need(c);
        if (need == 0 || i + (size_t)need > n) return 0;
        for (int k = 1; k < need; k++)
            if (!utf8_fits(c, k, (unsigned char)s[i + (size_t)k])) return 0;
        i += (size_t)need;
    }
    return 1;
}

/* code point at s (valid UTF-8, n > 0 bytes left); *len its byte length */
static unsigned utf8_cp(const unsigned char *s, size_t n, int *len) {
    int k = utf8_need(s[0]);
    if (k == 0 || (size_t)k > n) k = 1;
    *len = k;
    if (k == 1) return s[0];
    unsigned cp = s[0] & (0x7F >> k);
    for (int i = 1; i < k; i++) cp = cp << 6 | (s[i] & 0x3F);
    return cp;
}

int vox_json_quote(vox_buf *out, const char *s, size_t n) {
    vox_buf tmp = {0};
    if (!vox_utf8_valid(s, n)) { /* whatever the caller passes, the output stays valid */
        if (vox_utf8_decode(s, n, &tmp) != 0) return -1;
        s = tmp.data;
        n = tmp.len;
    }
    int rc = buf_reserve(out, n + 2);
    if (rc == 0) out->data[out->len++] = '"';
    size_t run = 0; /* bytes copied as they are, pending */
    for (size_t i = 0; rc == 0 && i <= n; i++) {
        unsigned c = i < n ? (unsigned char)s[i] : 0;
        if (i < n && c >= 0x20 && c != '"' && c != '\\') {
            run++;
            continue;
        }
        rc = vox_buf_append(out, s + i - run, run);
        run = 0;
        if (i == n || rc) break;
        const char *esc = c == '"' ? "\\\"" : c == '\\' ? "\\\\" : c == '\n' ? "\\n" : c == '\r' ? "\\r"
                        : c == '\t' ? "\\t" : c == '\b' ? "\\b" : c == '\f' ? "\\f" : NULL;
        rc = esc ? buf_str(out, esc) : buf_printf(out, "\\u%04x", c);
    }
    if (rc == 0) rc = vox_buf_append(out, "\"", 1);
    vox_buf_free(&tmp);
    return rc;
}

/* ---- transcript -------------------------------------------------------------- */

typedef struct {
    size_t off, len;           /* its bytes in the text, leading space included */
    int64_t first_ms, last_ms; /* times of its first and last piece (uncapped) */
    int tok0, ntok;            /* its text tokens */
    int seg;
    int blank;                 /* only ASCII whitespace so far */
} word_t;

typedef struct {
    int w0, nw;      /* its words */
    int text_words;  /* of them, not blank */
    int64_t start_ms, end_ms; /* stored when it closes */
} seg_t;

struct vox_transcript {
    vox_text_options o;
    vox_utf8_decoder dec;
    vox_buf text;
    size_t delta0;       /* where the last call's text began */
    int *tok;            /* ids of the text tokens */
    int ntok, tokcap;
    word_t *w;
    int nw, wcap;
    seg_t *s;
    int ns, scap;
    int open;            /* s[ns - 1] is open */
    int closed;          /* segments final */
    int64_t dur_ms;      /* -1: not known */
    int have_text;
    int64_t last_raw_ms; /* time_s of the last text token */
    int64_t last_t_ms;   /* its monotone time */
    int break_wanted;    /* a segment end waits for held-back bytes */
    int ended;
};

void vox_text_options_default(vox_text_options *o) {
    o->token_ms = 80;
    o->max_len = 0;
    o->sentence_pause_ms = 320;
    o->long_pause_ms = 960;
}

vox_transcript *vox_transcript_new(const vox_text_options *opt) {
    vox_transcript *tr = calloc(1, sizeof *tr);
    if (!tr) {
        vox_error("transcript: out of memory");
        return NULL;
    }
    vox_text_options_default(&tr->o);
    if (opt) tr->o = *opt;
    if (tr->o.token_ms <= 0) tr->o.token_ms = 80;
    if (tr->o.max_len < 0) tr->o.max_len = 0;
    tr->dur_ms = -1;
    return tr;
}

void vox_transcript_free(vox_transcript *tr) {
    if (!tr) return;
    vox_buf_free(&tr->text);
    free(tr->tok);
    free(tr->w);
    free(tr->s);
    free(tr);
}

/* grows the array whose pointer is at arrp (elements of `size`, *cap of them) to
 * room for n + 1; 0, or -1 with the array unchanged. memcpy: arrp points to a
 * pointer of any object type. */
static int grow(void *arrp, int *cap, int n, size_t size) {
    if (n < *cap) return 0;
    void *arr;
    memcpy(&arr, arrp, sizeof arr);
    int nc = *cap ? *cap * 2 : 64;
    void *p = realloc(arr, (size_t)nc * size);
    if (!p) return vox_error("transcript: out of memory");
    memcpy(arrp, &p, sizeof p);
    *cap = nc;
    return 0;
}

static int is_space(unsigned c) { return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\v' || c == '\f'; }

/* the piece starts with an ideograph or kana: every character its first bytes can
 * begin (a byte token may hold only the lead byte or two) is one */
static int starts_cjk(const char *p, size_t n) {
    static const unsigned range[][2] = {{0x3040, 0x30FF}, {0x31F0, 0x31FF}, {0x3400, 0x4DBF},
                                        {0x4E00, 0x9FFF}, {0xF900, 0xFAFF}, {0x20000, 0x3FFFF}};
    const unsigned char *s = (const unsigned char *)p;
    int need = utf8_need(s[0]), k = 1;
    if (need < 3) return 0;
    while (k < need && (size_t)k < n && utf8_fits(s[0], k, s[k])) k++;
    if ((size_t)k < n && k < need) return 0; /* broken: not a character */
    unsigned lo = s[0] & (0x7F >> need);
    for (int i = 1; i < k; i++) lo = lo << 6 | (s[i] & 0x3F);
    lo <<= 6 * (need - k);
    unsigned hi = lo | ((1u << 6 * (need - k)) - 1);
    for (size_t r = 0; r < sizeof range / sizeof range[0]; r++)
        if (lo >= range[r][0] && hi <= range[r][1]) return 1;
    return 0;
}

/* times capped inside the audio */
static int64_t cap_start(const vox_transcript *tr, int64_t t) {
    if (tr->dur_ms >= 0 && t > tr->dur_ms - tr->o.token_ms) t = tr->dur_ms - tr->o.token_ms;
    return t < 0 ? 0 : t;
}
static int64_t cap_end(const vox_transcript *tr, int64_t t) {
    return tr->dur_ms >= 0 && t > tr->dur_ms ? tr->dur_ms : t;
}

/* the end of segment i - 1 (0 for the first): no segment starts before it */
static int64_t seg_floor(const vox_transcript *tr, int i) { return i > 0 ? tr->s[i - 1].end_ms : 0; }

static void word_times(const vox_transcript *tr, int k, int64_t *start, int64_t *end) {
    const word_t *w = &tr->w[k];
    const seg_t *s = &tr->s[w->seg];
    int64_t st = cap_start(tr, w->first_ms), en;
    if (k == s->w0 && st < seg_floor(tr, w->seg)) st = seg_floor(tr, w->seg);
    if (k + 1 < s->w0 + s->nw && !tr->w[k + 1].blank) en = cap_start(tr, tr->w[k + 1].first_ms);
    else en = cap_end(tr, cap_start(tr, w->last_ms) + tr->o.token_ms);
    *start = st;
    *end = en > st ? en : st;
}

/* the last word of segment i that is not blank (only a segment's last word can be) */
static int seg_last_word(const vox_transcript *tr, int i) {
    const seg_t *s = &tr->s[i];
    int k = s->w0 + s->nw - 1;
    return tr->w[k].blank && k > s->w0 ? k - 1 : k;
}

static void seg_times(const vox_transcript *tr, int i, int64_t *start, int64_t *end) {
    int64_t a, b;
    word_times(tr, tr->s[i].w0, start, &b);
    word_times(tr, seg_last_word(tr, i), &a, end);
    if (*end < *start) *end = *start;
}

static size_t seg_off(const vox_transcript *tr, const seg_t *s) { return tr->w[s->w0].off; }
static size_t seg_end_off(const vox_transcript *tr, const seg_t *s) {
    const word_t *w = &tr->w[s->w0 + s->nw - 1];
    return w->off + w->len;
}

/* code points of segment i's text, outer whitespace trimmed */
static size_t seg_chars(const vox_transcript *tr, const seg_t *s) {
    const unsigned char *p = (const unsigned char *)tr->text.data;
    size_t a = seg_off(tr, s), b = seg_end_off(tr, s), n = 0;
    while (a < b && is_space(p[a])) a++;
    while (b > a && is_space(p[b - 1])) b--;
    for (; a < b; a++) n += (p[a] & 0xC0) != 0x80;
    return n;
}

/* the open segment's text ends with sentence punctuation (closers after it allowed) */
static int ends_sentence(const vox_transcript *tr) {
    const seg_t *s = &tr->s[tr->ns - 1];
    const unsigned char *p = (const unsigned char *)tr->text.data;
    size_t a = seg_off(tr, s), b = seg_end_off(tr, s);
    while (b > a) {
        size_t c = b - 1;
        while (c > a && (p[c] & 0xC0) == 0x80) c--;
        int len;
        unsigned cp = utf8_cp(p + c, b - c, &len);
        if (cp == '.' || cp == '!' || cp == '?' || cp == 0x2026 || cp == 0x3002 || cp == 0xFF01 ||
            cp == 0xFF1F || cp == 0xFF0E || cp == 0xFF61)
            return 1;
        if (!(is_space(cp) || cp == '"' || cp == '\'' || cp == ')' || cp == ']' || cp == 0x2019 ||
              cp == 0x201D || cp == 0xBB || cp == 0x300D || cp == 0x300F || cp == 0xFF09))
            return 0;
        b = c;
    }
    return 0;
}

/* whether the token at `raw_ms` lies past the end of the audio */
static int past_end(const vox_transcript *tr, int64_t raw_ms) {
    return tr->dur_ms >= 0 && raw_ms + tr->o.token_ms > tr->dur_ms;
}

/* a pause ends the open segment at a token at raw_ms (text: is_text) */
static int pause_ends(const vox_transcript *tr, int64_t raw_ms, int is_text) {
    if (!tr->open || tr->s[tr->ns - 1].text_words == 0 || past_end(tr, raw_ms)) return 0;
    int64_t silent = raw_ms - tr->last_raw_ms - (is_text ? tr->o.token_ms : 0);
    return silent >= tr->o.long_pause_ms || (silent >= tr->o.sentence_pause_ms && ends_sentence(tr));
}

static int push_segment(vox_transcript *tr, int w0) {
    if (grow(&tr->s, &tr->scap, tr->ns, sizeof *tr->s) != 0) return -1;
    tr->s[tr->ns++] = (seg_t){.w0 = w0};
    tr->open = 1;
    return 0;
}

/* segment i becomes final: times stored */
static void seal(vox_transcript *tr, int i) {
    seg_times(tr, i, &tr->s[i].start_ms, &tr->s[i].end_ms);
    tr->closed = i + 1;
}

/* with max_len, the open segment's last word made it too long: that word starts a
 * new segment and the one before is final */
static int split_before_last(vox_transcript *tr) {
    seg_t *s = &tr->s[tr->ns - 1];
    int k = s->w0 + s->nw - 1;
    if (!tr->o.max_len || s->text_words < 2 || tr->w[k].blank || seg_chars(tr, s) <= (size_t)tr->o.max_len)
        return 0;
    s->nw--;
    s->text_words--;
    seal(tr, tr->ns - 1);
    if (push_segment(tr, k) != 0) return -1;
    tr->s[tr->ns - 1].nw = 1;
    tr->s[tr->ns - 1].text_words = 1;
    tr->w[k].seg = tr->ns - 1;
    return 0;
}

/* appends the decoder's output for n bytes (flush when p is NULL) to the last word */
static int feed_word(vox_transcript *tr, const char *p, size_t n) {
    if (buf_reserve(&tr->text, VOX_UTF8_MAX_OUT(n)) != 0) return -1;
    char *out = tr->text.data + tr->text.len;
    size_t got = p ? vox_utf8_feed(&tr->dec, p, n, out) : vox_utf8_flush(&tr->dec, out);
    if (tr->text.len == 0) { /* the transcript starts at its first non-space */
        size_t skip = 0;
        while (skip < got && is_space((unsigned char)out[skip])) skip++;
        memmove(out, out + skip, got - skip);
        got -= skip;
    }
    tr->text.len += got;
    tr->text.data[tr->text.len] = 0;
    if (!tr->nw) return 0;
    word_t *w = &tr->w[tr->nw - 1];
    w->len += got;
    if (w->blank) {
        int blank = tr->dec.n == 0;
        for (size_t i = 0; i < got && blank; i++) blank = is_space((unsigned char)out[i]);
        if (!blank) {
            w->blank = 0;
            tr->s[w->seg].text_words++;
        }
    }
    return 0;
}

/* ends the open segment (nothing held back in the decoder) */
static int close_open(vox_transcript *tr) {
    int i = tr->ns - 1;
    seg_t *s = &tr->s[i];
    tr->break_wanted = 0;
    if (s->text_words == 0) return 0; /* only whitespace: stays open */
    word_t *last = &tr->w[s->w0 + s->nw - 1];
    if (last->blank) { /* trailing whitespace joins the word before */
        word_t *prev = last - 1;
        prev->len += last->len;
        prev->ntok += last->ntok;
        tr->nw--;
        s->nw--;
    }
    if (split_before_last(tr) != 0) return -1;
    seal(tr, tr->ns - 1);
    tr->open = 0;
    return 0;
}

static int start_word(vox_transcript *tr, int64_t t) {
    if (grow(&tr->w, &tr->wcap, tr->nw, sizeof *tr->w) != 0) return -1;
    tr->w[tr->nw++] = (word_t){.off = tr->text.len, .first_ms = t, .last_ms = t, .tok0 = tr->ntok,
                               .seg = tr->ns - 1, .blank = 1};
    tr->s[tr->ns - 1].nw++;
    return 0;
}

int vox_transcript_add(vox_transcript *tr, const vox_token *tok) {
    tr->delta0 = tr->text.len;
    if (tr->ended) return vox_error("transcript: token added after the end");
    int64_t raw = llround(tok->time_s * 1000.0);
    if (tok->piece_len <= 0 || !tok->piece) {
        if (tr->dec.n == 0 && pause_ends(tr, raw, 0)) return close_open(tr);
        return 0;
    }
    const char *p = tok->piece;
    size_t n = (size_t)tok->piece_len;
    unsigned c0 = (unsigned char)p[0];
    int cont = tr->dec.n && utf8_fits(tr->dec.pend[0], tr->dec.n, c0);
    if (!cont && tr->open && (tr->break_wanted || pause_ends(tr, raw, 1))) {
        if (feed_word(tr, NULL, 0) != 0 || close_open(tr) != 0) return -1;
    }
    int64_t t = raw < 0 ? 0 : raw;
    if (tr->have_text && t < tr->last_t_ms + tr->o.token_ms) t = tr->last_t_ms + tr->o.token_ms;
    if (!tr->open) {
        if (push_segment(tr, tr->nw) != 0 || start_word(tr, t) != 0) return -1;
    } else if (!cont && tr->nw && !tr->w[tr->nw - 1].blank && (is_space(c0) || starts_cjk(p, n))) {
        if (feed_word(tr, NULL, 0) != 0) return -1; /* what the new word's byte ends */
        if (!past_end(tr, raw) && split_before_last(tr) != 0) return -1;
        if (start_word(tr, t) != 0) return -1;
    }
    if (grow(&tr->tok, &tr->tokcap, tr->ntok, sizeof *tr->tok) != 0) return -1;
    tr->tok[tr->ntok++] = tok->id;
    word_t *w = &tr->w[tr->nw - 1];
    w->ntok++;
    w->last_ms = t;
    tr->have_text = 1;
    tr->last_raw_ms = raw;
    tr->last_t_ms = t;
    if (feed_word(tr, p, n) != 0) return -1;
    if (tr->break_wanted && tr->dec.n == 0) return close_open(tr);
    return 0;
}

int vox_transcript_break(vox_transcript *tr) {
    tr->delta0 = tr->text.len;
    if (tr->ended || !tr->open || tr->s[tr->ns - 1].text_words == 0) return 0;
    if (tr->dec.n) { /* the next piece may complete the character: decide then */
        tr->break_wanted = 1;
        return 0;
    }
    return close_open(tr);
}

void vox_transcript_set_duration(vox_transcript *tr, double seconds) {
    tr->dur_ms = seconds > 0 ? llround(seconds * 1000.0) : -1;
}

int vox_transcript_end(vox_transcript *tr, double duration_s) {
    tr->delta0 = tr->text.len;
    if (tr->ended) return 0;
    if (duration_s > 0) vox_transcript_set_duration(tr, duration_s);
    if (tr->open && feed_word(tr, NULL, 0) != 0) return -1;
    if (tr->open && close_open(tr) != 0) return -1;
    if (tr->open) { /* only whitespace: it joins the segment before, or goes */
        seg_t *s = &tr->s[tr->ns - 1];
        if (tr->ns > 1) {
            word_t *prev = &tr->w[s->w0 - 1];
            for (int k = s->w0; k < s->w0 + s->nw; k++) {
                prev->len += tr->w[k].len;
                prev->ntok += tr->w[k].ntok;
            }
        }
        tr->nw -= s->nw;
        tr->ns--;
        tr->open = 0;
    }
    /* the final times; a segment with no room left joins the one before */
    for (int i = 0; i < tr->ns;) {
        seg_times(tr, i, &tr->s[i].start_ms, &tr->s[i].end_ms);
        if (i > 0 && tr->s[i].end_ms <= tr->s[i].start_ms) {
            seg_t *prev = &tr->s[i - 1];
            for (int k = tr->s[i].w0; k < tr->s[i].w0 + tr->s[i].nw; k++) tr->w[k].seg = i - 1;
            prev->nw += tr->s[i].nw;
            prev->text_words += tr->s[i].text_words;
            memmove(&tr->s[i], &tr->s[i + 1], sizeof(seg_t) * (size_t)(tr->ns - i - 1));
            for (int j = i; j < tr->ns - 1; j++)
                for (int k = tr->s[j].w0; k < tr->s[j].w0 + tr->s[j].nw; k++) tr->w[k].seg = j;
            tr->ns--;
            i--;
            continue;
        }
        i++;
    }
    tr->closed = tr->ns;
    tr->ended = 1;
    return 0;
}

const char *vox_transcript_delta(const vox_transcript *tr, size_t *len) {
    *len = tr->text.len - tr->delta0;
    return tr->text.data ? tr->text.data + tr->delta0 : "";
}

const char *vox_transcript_text(const vox_transcript *tr, size_t *len) {
    *len = tr->text.len;
    return tr->text.data ? tr->text.data : "";
}

int vox_transcript_segments(const vox_transcript *tr) {
    return tr->ns - (tr->open && tr->s[tr->ns - 1].text_words == 0);
}

int vox_transcript_closed(const vox_transcript *tr) { return tr->closed; }

int vox_transcript_words(const vox_transcript *tr) {
    return tr->nw - (tr->nw && tr->w[tr->nw - 1].blank);
}

double vox_transcript_duration(const vox_transcript *tr) {
    if (tr->dur_ms >= 0) return tr->dur_ms / 1000.0;
    int n = vox_transcript_segments(tr);
    vox_segment s;
    return n > 0 && vox_transcript_segment(tr, n - 1, &s) == 0 ? s.end : 0.0;
}

int vox_transcript_segment(const vox_transcript *tr, int i, vox_segment *seg) {
    if (i < 0 || i >= vox_transcript_segments(tr)) return vox_error("transcript: no segment %d", i);
    const seg_t *s = &tr->s[i];
    int64_t a, b;
    if (i < tr->closed) a = s->start_ms, b = s->end_ms;
    else seg_times(tr, i, &a, &b);
    size_t off = seg_off(tr, s);
    const word_t *w0 = &tr->w[s->w0], *w1 = &tr->w[s->w0 + s->nw - 1];
    *seg = (vox_segment){.text = tr->text.data + off, .len = seg_end_off(tr, s) - off,
                         .start = a / 1000.0, .end = b / 1000.0, .tokens = tr->tok + w0->tok0,
                         .n_tokens = w1->tok0 + w1->ntok - w0->tok0, .first_word = s->w0,
                         .n_words = s->nw - (w1->blank && s->nw > 1)};
    return 0;
}

int vox_transcript_word(const vox_transcript *tr, int i, vox_word *w) {
    if (i < 0 || i >= vox_transcript_words(tr)) return vox_error("transcript: no word %d", i);
    const word_t *x = &tr->w[i];
    const char *p = tr->text.data + x->off;
    size_t n = x->len;
    while (n && is_space((unsigned char)*p)) p++, n--;
    while (n && is_space((unsigned char)p[n - 1])) n--;
    int64_t a, b;
    word_times(tr, i, &a, &b);
    *w = (vox_word){.text = p, .len = n, .start = a / 1000.0, .end = b / 1000.0, .segment = x->seg};
    return 0;
}

/* ---- writers ------------------------------------------------------------------ */

static int64_t ms_of(double s) { return llround(s * 1000.0); }

/* SRT "HH:MM:SS,mmm", VTT "HH:MM:SS.mmm", terminal "MM:SS.mmm" (H:MM:SS.mmm from an hour) */
static int write_time(vox_buf *b, double s, vox_format f) {
    int64_t ms = ms_of(s);
    long long h = ms / 3600000, m = ms / 60000 % 60, sec = ms / 1000 % 60, r = ms % 1000;
    if (f == VOX_FORMAT_LINES)
        return h ? buf_printf(b, "%lld:%02lld:%02lld.%03lld", h, m, sec, r) : buf_printf(b, "%02lld:%02lld.%03lld", m, sec, r);
    return buf_printf(b, "%02lld:%02lld:%02lld%c%03lld", h, m, sec, f == VOX_FORMAT_SRT ? ',' : '.', r);
}

/* one line of segment text for the line formats (rules in voxtral_text.h) */
static int write_line_text(vox_buf *b, const char *s, size_t n, vox_format f) {
    const unsigned char *p = (const unsigned char *)s;
    while (n && is_space(*p)) p++, n--;
    while (n && is_space(p[n - 1])) n--;
    for (size_t i = 0; i < n;) {
        int len;
        unsigned cp = utf8_cp(p + i, n - i, &len);
        int rc;
        if (is_space(cp)) rc = vox_buf_append(b, " ", 1);
        else if (cp < 0x20 || (cp >= 0x7F && cp <= 0x9F)) rc = vox_buf_append(b, REPLACEMENT, 3);
        else if (f == VOX_FORMAT_SRT && cp == '-' && n - i >= 3 && p[i + 1] == '-' && p[i + 2] == '>') {
            rc = buf_str(b, "\xe2\x86\x92"); /* "-->" would end the timing line's syntax */
            len = 3;
        } else if (f == VOX_FORMAT_VTT && (cp == '&' || cp == '<' || cp == '>'))
            rc = buf_str(b, cp == '&' ? "&amp;" : cp == '<' ? "&lt;" : "&gt;");
        else rc = vox_buf_append(b, p + i, (size_t)len);
        if (rc) return -1;
        i += (size_t)len;
    }
    return 0;
}

static int write_json_time(vox_buf *b, double s) {
    int64_t ms = ms_of(s);
    return buf_printf(b, "%lld.%03lld", (long long)(ms / 1000), (long long)(ms % 1000));
}

static int write_json_segment(vox_buf *b, int i, const vox_segment *s) {
    if (buf_printf(b, "{\"id\":%d,\"seek\":0,\"start\":", i) || write_json_time(b, s->start) ||
        buf_str(b, ",\"end\":") || write_json_time(b, s->end) || buf_str(b, ",\"text\":") ||
        vox_json_quote(b, s->text, s->len) || buf_str(b, ",\"tokens\":["))
        return -1;
    for (int k = 0; k < s->n_tokens; k++)
        if (buf_printf(b, k ? ",%d" : "%d", s->tokens[k])) return -1;
    return buf_str(b, "],\"temperature\":0.0}");
}

int vox_transcript_write_segment(const vox_transcript *tr, int i, vox_format f, vox_buf *out) {
    vox_segment s = {0};
    if (vox_transcript_segment(tr, i, &s) != 0) return -1;
    switch (f) {
    case VOX_FORMAT_TXT:
        return write_line_text(out, s.text, s.len, f) || vox_buf_append(out, "\n", 1) ? -1 : 0;
    case VOX_FORMAT_SRT:
    case VOX_FORMAT_VTT:
        if ((f == VOX_FORMAT_SRT && buf_printf(out, "%d\n", i + 1)) || write_time(out, s.start, f) ||
            buf_str(out, " --> ") || write_time(out, s.end, f) || vox_buf_append(out, "\n", 1) ||
            write_line_text(out, s.text, s.len, f) || buf_str(out, "\n\n"))
            return -1;
        return 0;
    case VOX_FORMAT_LINES:
        if (buf_str(out, "[") || write_time(out, s.start, f) || buf_str(out, " --> ") ||
            write_time(out, s.end, f) || buf_str(out, "]  ") || write_line_text(out, s.text, s.len, f) ||
            vox_buf_append(out, "\n", 1))
            return -1;
        return 0;
    case VOX_FORMAT_JSON:
        return write_json_segment(out, i, &s);
    }
    return vox_error("transcript: unknown format %d", (int)f);
}

static int write_json(const vox_transcript *tr, const vox_write_options *opt, vox_buf *out) {
    size_t tlen;
    const char *text = vox_transcript_text(tr, &tlen);
    if (buf_str(out, "{\"task\":\"transcribe\",")) return -1;
    if (opt && opt->language &&
        (buf_str(out, "\"language\":") || vox_json_quote(out, opt->language, strlen(opt->language)) ||
         buf_str(out, ",")))
        return -1;
    if (buf_str(out, "\"duration\":") || write_json_time(out, vox_transcript_duration(tr)) ||
        buf_str(out, ",\"text\":") || vox_json_quote(out, text, tlen) || buf_str(out, ",\"segments\":["))
        return -1;
    for (int i = 0, n = vox_transcript_segments(tr); i < n; i++)
        if ((i && buf_str(out, ",")) || vox_transcript_write_segment(tr, i, VOX_FORMAT_JSON, out)) return -1;
    if (opt && opt->omit_words) return buf_str(out, "]}");
    if (buf_str(out, "],\"words\":[")) return -1;
    for (int i = 0, n = vox_transcript_words(tr); i < n; i++) {
        vox_word w;
        if (vox_transcript_word(tr, i, &w) || (i && buf_str(out, ",")) || buf_str(out, "{\"word\":") ||
            vox_json_quote(out, w.text, w.len) || buf_str(out, ",\"start\":") || write_json_time(out, w.start) ||
            buf_str(out, ",\"end\":") || write_json_time(out, w.end) || buf_str(out, "}"))
            return -1;
    }
    return buf_str(out, "]}");
}

int vox_transcript_write(const vox_transcript *tr, vox_format f, const vox_write_options *opt, vox_buf *out) {
    if (f == VOX_FORMAT_JSON) return write_json(tr, opt, out);
    if (f == VOX_FORMAT_VTT && buf_str(out, "WEBVTT\n\n")) return -1;
    for (int i = 0, n = vox_transcript_segments(tr); i < n; i++)
        if (vox_transcript_write_segment(tr, i, f, out) != 0) return -1;
    return 0;
}
