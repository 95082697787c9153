/* test_text.c - voxtral_text: UTF-8 decoding, words/segments/times, writers.
 *   - UTF-8: against a rule written here (Unicode Table 3-7, longest well-formed
 *     prefix) and against golden data from Python's own decoder
 *     (tests/utf8_cases.txt, made by scripts/make_utf8_cases.py); the streaming
 *     decoder's outputs concatenate to the whole decode for random splits;
 *   - vox_token.time_s on a fixture model at two delays: the delay is already out;
 *   - words, segments and times on synthetic token sequences (pauses, sentence
 *     punctuation, max length, restarts, held-back bytes, past the end, CJK);
 *   - SRT / VTT / TXT / terminal / verbose_json byte-exact against strings written
 *     by hand from the timing rule; the JSON parsed back with cJSON;
 *   - a fuzz loop: random bytes and pauses never give invalid UTF-8, a NUL byte, a
 *     bad cue order or JSON cJSON rejects, and closed segments stay final.
 * Usage: test_text [FIXTURES_DIR]  (default tests/fixtures; the UTF-8 cases are
 * read from tests/utf8_cases.txt, or $VOX_UTF8_CASES)
 */
#include <cjson/cJSON.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "testutil.h"
#include "voxtral.h"

/* ---- the rule, written independently: Unicode Table 3-7 ------------------------ */

static const unsigned char WF[9][4][2] = {
    /* rows of well-formed sequences: [byte][lo, hi]; 0,0 = no such byte */
    {{0x00, 0x7F}}, {{0xC2, 0xDF}, {0x80, 0xBF}}, {{0xE0, 0xE0}, {0xA0, 0xBF}, {0x80, 0xBF}},
    {{0xE1, 0xEC}, {0x80, 0xBF}, {0x80, 0xBF}}, {{0xED, 0xED}, {0x80, 0x9F}, {0x80, 0xBF}},
    {{0xEE, 0xEF}, {0x80, 0xBF}, {0x80, 0xBF}}, {{0xF0, 0xF0}, {0x90, 0xBF}, {0x80, 0xBF}, {0x80, 0xBF}},
    {{0xF1, 0xF3}, {0x80, 0xBF}, {0x80, 0xBF}, {0x80, 0xBF}}, {{0xF4, 0xF4}, {0x80, 0x8F}, {0x80, 0xBF}, {0x80, 0xBF}},
};

static int row_len(int r) {
    int n = 0;
    while (n < 4 && WF[r][n][1]) n++;
    return n;
}

/* Decodes by the rule: at each position take the longest prefix of some
 * well-formed row; a whole row is copied, anything shorter is one U+FFFD and
 * skips max(1, prefix) bytes. Returns the output length (out: 3n bytes). */
static size_t oracle_decode(const unsigned char *in, size_t n, unsigned char *out) {
    size_t o = 0;
    for (size_t i = 0; i < n;) {
        int best = 0, whole = 0;
        for (int r = 0; r < 9; r++) {
            int k = 0, len = row_len(r);
            while (k < len && i + k < n && in[i + k] >= WF[r][k][0] && in[i + k] <= WF[r][k][1]) k++;
            if (k > best) best = k, whole = k == len;
        }
        if (whole) {
            memcpy(out + o, in + i, best);
            o += best;
        } else {
            memcpy(out + o, "\xef\xbf\xbd", 3);
            o += 3;
        }
        i += best ? best : 1;
    }
    return o;
}

static int oracle_valid(const unsigned char *s, size_t n) {
    unsigned char *out = malloc(3 * n + 1);
    size_t m = oracle_decode(s, n, out);
    int ok = m == n && memcmp(out, s, n) == 0;
    free(out);
    return ok;
}

static unsigned rng_state = 12345;
static unsigned rnd(void) {
    rng_state = rng_state * 1664525u + 1013904223u;
    return rng_state >> 8;
}

/* streams `pieces` (n of them, lengths len) through a decoder; output in *out;
 * every chunk must be valid UTF-8 and within VOX_UTF8_MAX_OUT */
static int stream_decode(const unsigned char **pieces, const size_t *len, int n, vox_buf *out) {
    vox_utf8_decoder d;
    vox_utf8_init(&d);
    int ok = 1;
    for (int i = 0; i <= n; i++) {
        size_t cap = i < n ? VOX_UTF8_MAX_OUT(len[i]) : 3;
        char *chunk = malloc(cap + 16);
        memset(chunk, 0x5A, cap + 16);
        size_t m = i < n ? vox_utf8_feed(&d, (const char *)pieces[i], len[i], chunk) : vox_utf8_flush(&d, chunk);
        for (int g = 0; g < 16; g++) ok &= (unsigned char)chunk[cap + g] == 0x5A;
        ok &= m <= cap && vox_utf8_valid(chunk, m);
        vox_buf_append(out, chunk, m);
        free(chunk);
    }
    return ok;
}

static int unhex(const char *h, size_t n, unsigned char *out) {
    if (n == 1 && h[0] == '-') return 0;
    int m = 0;
    for (size_t i = 0; i + 1 < n + 1 && i < n; i += 2) {
        unsigned v;
        sscanf(h + i, "%2x", &v);
        out[m++] = (unsigned char)v;
    }
    return m;
}

static vox_token text_tok(int id, double t, const char *p, int n) {
    vox_token k = {0};
    k.id = id;
    k.time_s = t;
    k.piece = p;
    k.piece_len = n;
    return k;
}

static void test_golden(void) {
    const char *path = getenv("VOX_UTF8_CASES") ? getenv("VOX_UTF8_CASES") : "tests/utf8_cases.txt";
    FILE *f = fopen(path, "r");
    if (!f) {
        tu_check(0, "utf8 golden cases", "cannot open %s", path);
        return;
    }
    char line[4096];
    int cases = 0, bad_whole = 0, bad_stream = 0, bad_oracle = 0, bad_tr = 0;
    while (fgets(line, sizeof line, f)) {
        if (line[0] == '#') continue;
        char *tab = strchr(line, '\t');
        if (!tab) continue;
        unsigned char want[2048], all[1024], pb[64][256];
        const unsigned char *pieces[64];
        size_t plen[64];
        int np = 0, nall = 0;
        for (char *p = line; p < tab && np < 64;) {
            char *bar = memchr(p, '|', tab - p);
            char *e = bar ? bar : tab;
            plen[np] = unhex(p, e - p, pb[np]);
            pieces[np] = pb[np];
            memcpy(all + nall, pb[np], plen[np]);
            nall += plen[np];
            np++;
            p = e + 1;
        }
        char *end = tab + 1 + strcspn(tab + 1, "\r\n");
        int nwant = unhex(tab + 1, end - tab - 1, want);
        cases++;
        vox_buf whole = {0}, st = {0};
        vox_utf8_decode((const char *)all, nall, &whole);
        bad_whole += whole.len != (size_t)nwant || memcmp(whole.data, want, nwant) != 0;
        bad_stream += !stream_decode(pieces, plen, np, &st) || st.len != (size_t)nwant || memcmp(st.data, want, nwant);
        unsigned char ob[3072];
        size_t no = oracle_decode(all, nall, ob);
        bad_oracle += no != (size_t)nwant || memcmp(ob, want, nwant) != 0;
        /* the transcript's text: the same decode, leading whitespace dropped */
        vox_transcript *tr = vox_transcript_new(NULL);
        vox_buf deltas = {0};
        size_t dl;
        const char *d;
        for (int i = 0; i < np; i++) {
            vox_token k = text_tok(1000 + i, 0.08 * i, (const char *)pieces[i], (int)plen[i]);
            vox_transcript_add(tr, &k);
            d = vox_transcript_delta(tr, &dl);
            vox_buf_append(&deltas, d, dl);
        }
        vox_transcript_end(tr, -1);
        d = vox_transcript_delta(tr, &dl);
        vox_buf_append(&deltas, d, dl);
        int skip = 0;
        while (skip < nwant && strchr(" \t\n\r\v\f", want[skip]) && want[skip]) skip++;
        size_t tl;
        const char *tt = vox_transcript_text(tr, &tl);
        bad_tr += tl != (size_t)(nwant - skip) || memcmp(tt, want + skip, tl) != 0 || deltas.len != tl ||
                  memcmp(deltas.data ? deltas.data : "", tt, tl) != 0;
        vox_transcript_free(tr);
        vox_buf_free(&deltas);
        vox_buf_free(&whole);
        vox_buf_free(&st);
    }
    fclose(f);
    tu_check(cases > 500, "utf8 golden cases read", "%d cases from %s", cases, path);
    tu_check(bad_oracle == 0, "the rule written here agrees with Python's decode", "%d of %d differ", bad_oracle, cases);
    tu_check(bad_whole == 0, "vox_utf8_decode equals Python's decode(errors='replace')", "%d of %d differ", bad_whole, cases);
    tu_check(bad_stream == 0, "streamed pieces concatenate to Python's decode, each piece valid", "%d of %d differ",
             bad_stream, cases);
    tu_check(bad_tr == 0, "transcript text and its deltas equal the decode, leading space dropped",
             "%d of %d differ", bad_tr, cases);
}

static void test_utf8_random(void) {
    static const unsigned char alpha[] = {0x00, 0x20, 0x41, 0x7F, 0x80, 0x8F, 0x90, 0x9F, 0xA0, 0xBF, 0xC0, 0xC1,
                                          0xC2, 0xDF, 0xE0, 0xE1, 0xED, 0xEE, 0xEF, 0xF0, 0xF3, 0xF4, 0xF5, 0xFF};
    int bad = 0, bad_valid = 0, runs = 20000;
    for (int r = 0; r < runs; r++) {
        unsigned char data[48];
        int n = rnd() % 48;
        for (int i = 0; i < n; i++) data[i] = rnd() % 3 ? alpha[rnd() % sizeof alpha] : (unsigned char)rnd();
        const unsigned char *pieces[49];
        size_t len[49];
        int np = 0;
        for (int i = 0; i < n;) {
            int k = rnd() % 5;
            if (i + k > n) k = n - i;
            pieces[np] = data + i;
            len[np++] = k;
            i += k;
        }
        vox_buf whole = {0}, st = {0};
        vox_utf8_decode((const char *)data, n, &whole);
        unsigned char ob[200];
        size_t no = oracle_decode(data, n, ob);
        bad += !stream_decode(pieces, len, np, &st) || st.len != whole.len || no != whole.len ||
               memcmp(st.data, whole.data, whole.len) || memcmp(ob, whole.data, no) || !vox_utf8_valid(whole.data, whole.len);
        bad_valid += vox_utf8_valid((const char *)data, n) != oracle_valid(data, n);
        vox_buf_free(&whole);
        vox_buf_free(&st);
    }
    tu_check(bad == 0, "random bytes, random splits: stream == whole decode == rule, output valid",
             "%d of %d differ", bad, runs);
    tu_check(bad_valid == 0, "vox_utf8_valid agrees with the rule", "%d of %d differ", bad_valid, runs);
}

static void test_json_quote(void) {
    vox_buf b = {0};
    const char s[] = "a\"b\\c\nd\te\x01\x1f\x00\x7f\xc3\xa9/";
    vox_json_quote(&b, s, sizeof s - 1);
    const char *want = "\"a\\\"b\\\\c\\nd\\te\\u0001\\u001f\\u0000\x7f\xc3\xa9/\"";
    tu_check(b.len == strlen(want) && !memcmp(b.data, want, b.len), "json quote: escapes, U+0000 as \\u0000",
             "got %s", b.data);
    cJSON *j = cJSON_Parse(b.data);
    tu_check(j && cJSON_IsString(j) && !strcmp(j->valuestring, "a\"b\\c\nd\te\x01\x1f"),
             "json quote parses back (cJSON, up to its NUL)", NULL);
    cJSON_Delete(j);
    b.len = 0;
    vox_json_quote(&b, "\xe2\x82 \xff", 4);
    tu_check(!strcmp(b.data, "\"\xef\xbf\xbd \xef\xbf\xbd\""), "json quote replaces invalid bytes", "got %s", b.data);
    vox_buf_free(&b);
}

static const char *check_invariants(const vox_transcript *tr, double dur);

/* ---- the timing input: vox_token.time_s on a real (tiny) model ---------------- */

static int n_times;
static double first_times[4];
static vox_buf engine_bytes;
static void on_time(void *u, const vox_token *t) {
    if (n_times < 4) first_times[n_times] = t->time_s;
    n_times++;
    vox_buf_append(&engine_bytes, t->piece, (size_t)t->piece_len);
    vox_transcript_add(u, t);
}

static void test_token_times(const char *root) {
    char dir[512];
    snprintf(dir, sizeof dir, "%s/tiny_speech/model", root);
    for (int di = 0; di < 2; di++) {
        int delay = di ? 480 : 160;
        vox_options o;
        vox_options_default(&o);
        o.backend = "cpu";
        o.verbose = 0;
        o.delay_ms = delay;
        vox_ctx *ctx = vox_open(dir, &o);
        if (!ctx) {
            tu_check(0, "open fixture model", "%s: %s", dir, vox_last_error());
            return;
        }
        vox_transcript *tr = vox_transcript_new(NULL);
        vox_stream *s = vox_stream_new(ctx, on_time, tr);
        float *x = calloc(16000, sizeof(float));
        for (int i = 0; i < 16000; i++) x[i] = (float)(0.3 * sin(i * 0.05) * (i / 4000 % 2));
        n_times = 0;
        engine_bytes.len = 0;
        vox_transcript_set_duration(tr, 1.0);
        int rc = !s || vox_stream_feed(s, x, 16000) || vox_stream_finish(s) || vox_transcript_end(tr, -1);
        /* the first token names audio [0, 80 ms) whatever the delay: time_s is
         * already (decode time - delay - 80 ms) */
        int ok = !rc && n_times >= 4;
        for (int k = 0; ok && k < 4; k++) ok = fabs(first_times[k] - 0.08 * k) < 1e-9;
        tu_check(ok, "vox_token.time_s = k * 80 ms: the delay is already subtracted", "delay %d ms: %d tokens, %.3f %.3f",
                 delay, n_times, first_times[0], first_times[1]);
        /* the engine's own tokens through a transcript: text = the whole decode */
        vox_buf want = {0};
        vox_utf8_decode(engine_bytes.data ? engine_bytes.data : "", engine_bytes.len, &want);
        size_t skip = 0, tl;
        while (skip < want.len && strchr(" \t\n\r\v\f", want.data[skip]) && want.data[skip]) skip++;
        const char *text = vox_transcript_text(tr, &tl);
        const char *bad = check_invariants(tr, 1.0);
        tu_check(!rc && tl == want.len - skip && !memcmp(text, want.data + skip, tl) && !bad,
                 "the engine's tokens through a transcript: text, cues, writers", "%zu piece bytes, %d segments%s%s",
                 engine_bytes.len, vox_transcript_segments(tr), bad ? ": " : "", bad ? bad : "");
        vox_buf_free(&want);
        vox_transcript_free(tr);
        vox_stream_free(s);
        vox_close(ctx);
        free(x);
    }
    vox_buf_free(&engine_bytes);
}

/* ---- synthetic transcripts ----------------------------------------------------- */

/* Feeds a script: "@T" sets the time (ms) of the next token, "~N" adds N pads (one
 * per 80 ms), "|" calls vox_transcript_break, anything else is a text piece (at the
 * current time, which then advances 80 ms). Strings may hold \xNN bytes. */
static vox_transcript *run_script(const vox_text_options *o, const char *const *items, int n, double dur_end) {
    vox_transcript *tr = vox_transcript_new(o);
    int64_t t = 0;
    int id = 1000;
    for (int i = 0; i < n; i++) {
        const char *it = items[i];
        if (it[0] == '@') {
            t = atoll(it + 1);
        } else if (it[0] == '~') {
            for (int k = atoi(it + 1); k > 0; k--, t += 80) {
                vox_token p = text_tok(32, t / 1000.0, "", 0);
                vox_transcript_add(tr, &p);
            }
        } else if (it[0] == '|' && !it[1]) {
            vox_transcript_break(tr);
        } else {
            vox_token p = text_tok(id++, t / 1000.0, it, (int)strlen(it));
            vox_transcript_add(tr, &p);
            t += 80;
        }
    }
    vox_transcript_end(tr, dur_end);
    return tr;
}

static char *write_fmt(const vox_transcript *tr, vox_format f, const char *lang) {
    vox_buf b = {0};
    vox_write_options wo = {.language = lang};
    if (vox_transcript_write(tr, f, &wo, &b) != 0) return strdup("<error>");
    if (!b.data) return strdup("");
    return b.data;
}

static void check_fmt(const vox_transcript *tr, vox_format f, const char *want, const char *name) {
    char *got = write_fmt(tr, f, "en");
    int ok = !strcmp(got, want);
    tu_check(ok, name, ok ? NULL : "\n--- got:\n%s\n--- want:\n%s", got, want);
    free(got);
}

static void test_sentences(void) {
    /* Hello(0) world(80) .(160), 4 pads from 240: the pad at 480 has 480 - 160 =
     * 320 ms without text after a full stop -> segment [0, 240]; How(800) are(880)
     * you(960) ?(1040) -> [800, 1120]; duration 2 s */
    const char *const s[] = {" Hello", " world", ".", "~6", "@800", " How", " are", " you", "?", "~3"};
    vox_transcript *tr = run_script(NULL, s, 10, 2.0);
    check_fmt(tr, VOX_FORMAT_SRT,
              "1\n00:00:00,000 --> 00:00:00,240\nHello world.\n\n"
              "2\n00:00:00,800 --> 00:00:01,120\nHow are you?\n\n", "SRT byte-exact (sentence + pause)");
    check_fmt(tr, VOX_FORMAT_VTT,
              "WEBVTT\n\n00:00:00.000 --> 00:00:00.240\nHello world.\n\n"
              "00:00:00.800 --> 00:00:01.120\nHow are you?\n\n", "VTT byte-exact");
    check_fmt(tr, VOX_FORMAT_TXT, "Hello world.\nHow are you?\n", "TXT byte-exact");
    check_fmt(tr, VOX_FORMAT_LINES,
              "[00:00.000 --> 00:00.240]  Hello world.\n[00:00.800 --> 00:01.120]  How are you?\n",
              "terminal lines byte-exact");
    check_fmt(tr, VOX_FORMAT_JSON,
              "{\"task\":\"transcribe\",\"language\":\"en\",\"duration\":2.000,\"text\":\"Hello world. How are you?\","
              "\"segments\":[{\"id\":0,\"seek\":0,\"start\":0.000,\"end\":0.240,\"text\":\"Hello world.\","
              "\"tokens\":[1000,1001,1002],\"temperature\":0.0},"
              "{\"id\":1,\"seek\":0,\"start\":0.800,\"end\":1.120,\"text\":\" How are you?\","
              "\"tokens\":[1003,1004,1005,1006],\"temperature\":0.0}],"
              "\"words\":[{\"word\":\"Hello\",\"start\":0.000,\"end\":0.080},"
              "{\"word\":\"world.\",\"start\":0.080,\"end\":0.240},"
              "{\"word\":\"How\",\"start\":0.800,\"end\":0.880},{\"word\":\"are\",\"start\":0.880,\"end\":0.960},"
              "{\"word\":\"you?\",\"start\":0.960,\"end\":1.120}]}",
              "verbose_json byte-exact");
    char *js = write_fmt(tr, VOX_FORMAT_JSON, "en");
    cJSON *j = cJSON_Parse(js);
    cJSON *segs = cJSON_GetObjectItem(j, "segments"), *words = cJSON_GetObjectItem(j, "words");
    cJSON *s1 = cJSON_GetArrayItem(segs, 1);
    tu_check(j && cJSON_GetArraySize(segs) == 2 && cJSON_GetArraySize(words) == 5 &&
                 fabs(cJSON_GetObjectItem(s1, "start")->valuedouble - 0.8) < 1e-9 &&
                 cJSON_GetArraySize(cJSON_GetObjectItem(s1, "tokens")) == 4 &&
                 !strcmp(cJSON_GetObjectItem(j, "text")->valuestring, "Hello world. How are you?"),
             "verbose_json parses back (cJSON): segments, words, times, tokens", NULL);
    cJSON_Delete(j);
    free(js);
    vox_write_options none = {.language = NULL};
    vox_buf b = {0};
    vox_transcript_write(tr, VOX_FORMAT_JSON, &none, &b);
    tu_check(b.data && !strstr(b.data, "language"), "verbose_json without a language leaves the key out", NULL);
    vox_buf_free(&b);
    vox_write_options nowords = {.language = "en", .omit_words = 1};
    vox_transcript_write(tr, VOX_FORMAT_JSON, &nowords, &b);
    cJSON *jw = cJSON_Parse(b.data);
    tu_check(jw && cJSON_GetArraySize(cJSON_GetObjectItem(jw, "segments")) > 0 && !cJSON_GetObjectItem(jw, "words") &&
                 !strcmp(cJSON_GetObjectItem(jw, "language")->valuestring, "en"),
             "verbose_json with omit_words: valid, segments and language, no words", "%s", b.data);
    cJSON_Delete(jw);
    vox_buf_free(&b);
    vox_transcript_free(tr);

    /* a full stop with only 240 ms without text: no segment end */
    const char *const s2[] = {" Hi", ".", "~3", " there", "~20"};
    tr = run_script(NULL, s2, 5, -1);
    check_fmt(tr, VOX_FORMAT_SRT, "1\n00:00:00,000 --> 00:00:00,480\nHi. there\n\n",
              "short pause after punctuation keeps the segment");
    vox_transcript_free(tr);
}

static void test_pauses(void) {
    /* no punctuation: 880 ms without text keeps, 960 ends (pads, or a time jump) */
    const char *const a[] = {" one", "~10", " two", "~12", " three"};
    vox_transcript *tr = run_script(NULL, a, 5, -1);
    check_fmt(tr, VOX_FORMAT_SRT,
              "1\n00:00:00,000 --> 00:00:00,960\none two\n\n2\n00:00:01,920 --> 00:00:02,000\nthree\n\n",
              "long pause (960 ms without text) ends a segment, 880 ms does not");
    vox_transcript_free(tr);
    const char *const b[] = {" one", "@1040", " two", "@1200", "two"};
    tr = run_script(NULL, b, 5, -1);
    check_fmt(tr, VOX_FORMAT_LINES, "[00:00.000 --> 00:00.080]  one\n[00:01.040 --> 00:01.280]  twotwo\n",
              "a time jump with no pads is a pause too; a piece without a space continues the word");
    vox_transcript_free(tr);
    vox_text_options o;
    vox_text_options_default(&o);
    o.long_pause_ms = 400;
    const char *const c[] = {" one", "~5", " two"};
    tr = run_script(&o, c, 3, -1);
    tu_check(vox_transcript_segments(tr) == 2, "long_pause_ms is an option", NULL);
    vox_transcript_free(tr);
}

static void test_max_len(void) {
    vox_text_options o;
    vox_text_options_default(&o);
    o.max_len = 7;
    const char *const a[] = {" aaa", " bbb", " ccc", " dd", "d", " e"};
    vox_transcript *tr = run_script(&o, a, 6, -1);
    check_fmt(tr, VOX_FORMAT_SRT,
              "1\n00:00:00,000 --> 00:00:00,160\naaa bbb\n\n2\n00:00:00,160 --> 00:00:00,400\nccc ddd\n\n"
              "3\n00:00:00,400 --> 00:00:00,480\ne\n\n",
              "max_len 7 splits at word boundaries (whisper.cpp -ml)");
    vox_transcript_free(tr);
    o.max_len = 3;
    const char *const b[] = {" abc", "def", " g", " h"};
    tr = run_script(&o, b, 4, -1);
    check_fmt(tr, VOX_FORMAT_TXT, "abcdef\ng h\n", "a word longer than max_len stays whole");
    vox_transcript_free(tr);
    o.max_len = 4;
    const char *const c[] = {" \xc3\xa9\xc3\xa9", " \xc3\xa9", " x"};
    tr = run_script(&o, c, 3, -1);
    check_fmt(tr, VOX_FORMAT_TXT, "\xc3\xa9\xc3\xa9 \xc3\xa9\nx\n", "max_len counts characters, not bytes");
    vox_transcript_free(tr);
}

static void test_breaks(void) {
    const char *const a[] = {" one", "|", " two", "|", "|", " three"};
    vox_transcript *tr = run_script(NULL, a, 6, -1);
    check_fmt(tr, VOX_FORMAT_TXT, "one\ntwo\nthree\n", "vox_transcript_break ends a segment (twice: once)");
    vox_transcript_free(tr);
    /* a break while part of a character is held back waits for the next piece */
    const char *const b[] = {" x\xe2\x82", "|", "\xac", " y"};
    tr = run_script(NULL, b, 4, -1);
    size_t n;
    const char *t = vox_transcript_text(tr, &n);
    tu_check(n == 6 && !memcmp(t, "x\xe2\x82\xac y", 6) && vox_transcript_segments(tr) == 2,
             "a break waits for a held-back character (completed: same word)", "%d segments", vox_transcript_segments(tr));
    vox_transcript_free(tr);
    const char *const c[] = {" x\xe2\x82", "|", " y"};
    tr = run_script(NULL, c, 3, -1);
    check_fmt(tr, VOX_FORMAT_TXT, "x\xef\xbf\xbd\ny\n", "a break then a piece that cannot complete: U+FFFD, then the end");
    vox_transcript_free(tr);
    /* a pause too: the segment ends only after the character is resolved */
    const char *const d[] = {" a\xf0\x9f", "~20", "\x98\x80", " b"};
    tr = run_script(NULL, d, 4, -1);
    check_fmt(tr, VOX_FORMAT_TXT, "a\xf0\x9f\x98\x80 b\n", "a pause does not cut a held-back character");
    vox_transcript_free(tr);
}

static void test_times(void) {
    /* past the end: duration 1 s, pieces at 880, 960, 1040 -> capped at 920 */
    const char *const a[] = {"@880", " a", " b", " c", "~4"};
    vox_transcript *tr = run_script(NULL, a, 5, 1.0);
    check_fmt(tr, VOX_FORMAT_JSON,
              "{\"task\":\"transcribe\",\"language\":\"en\",\"duration\":1.000,\"text\":\"a b c\",\"segments\":[{\"id\":0,\"seek\":0,"
              "\"start\":0.880,\"end\":1.000,\"text\":\"a b c\",\"tokens\":[1000,1001,1002],\"temperature\":0.0}],"
              "\"words\":[{\"word\":\"a\",\"start\":0.880,\"end\":0.920},{\"word\":\"b\",\"start\":0.920,\"end\":0.920},"
              "{\"word\":\"c\",\"start\":0.920,\"end\":1.000}]}",
              "times past the end are capped inside the audio");
    vox_transcript_free(tr);
    /* duration known only at the end: a (0) [0, 80]; b (1280) capped at 420, [420, 500];
     * c (2560) would be [500, 500]: it joins b's segment */
    const char *const b[] = {" a", "~15", " b", "~15", " c"};
    tr = run_script(NULL, b, 5, 0.5);
    check_fmt(tr, VOX_FORMAT_SRT, "1\n00:00:00,000 --> 00:00:00,080\na\n\n2\n00:00:00,420 --> 00:00:00,500\nb c\n\n",
              "segments that cannot fit inside the audio join the one before");
    vox_transcript_free(tr);
    /* times that go back (a flushed segment's pad overlapping the next) stay increasing */
    const char *const c[] = {"@800", " a", "@400", " b"};
    tr = run_script(NULL, c, 4, -1);
    check_fmt(tr, VOX_FORMAT_LINES, "[00:00.800 --> 00:00.960]  a b\n", "text times never go back");
    vox_transcript_free(tr);
    /* negative times clamp at 0; an hour and more */
    const char *const d[] = {"@-80", " a", "@3723400", " b"};
    tr = run_script(NULL, d, 4, -1);
    check_fmt(tr, VOX_FORMAT_LINES, "[00:00.000 --> 00:00.080]  a\n[1:02:03.400 --> 1:02:03.480]  b\n",
              "times clamp at 0; H:MM:SS.mmm from an hour");
    check_fmt(tr, VOX_FORMAT_SRT,
              "1\n00:00:00,000 --> 00:00:00,080\na\n\n2\n01:02:03,400 --> 01:02:03,480\nb\n\n", "SRT hours");
    vox_transcript_free(tr);
}

static void test_escapes(void) {
    /* ESC, NUL, newline, tab, C1, DEL; & < > and --> */
    const char *const a[] = {" a\x1b[31m\x00", " b\nc\td\xc2\x9b\x7f", " x-->y", " <i>&amp;</i>", " --->"};
    vox_transcript *tr = vox_transcript_new(NULL);
    for (int i = 0; i < 5; i++) {
        int n = i == 0 ? 8 : (int)strlen(a[i]);
        vox_token k = text_tok(1000 + i, 0.08 * i, a[i], n);
        vox_transcript_add(tr, &k);
    }
    vox_transcript_end(tr, 1.0);
    const char *fffd = "\xef\xbf\xbd";
    char want_line[256];
    snprintf(want_line, sizeof want_line, "a%s[31m%s b c d%s%s x-->y <i>&amp;</i> --->", fffd, fffd, fffd, fffd);
    char want[512];
    snprintf(want, sizeof want, "%s\n", want_line);
    check_fmt(tr, VOX_FORMAT_TXT, want, "TXT: controls to U+FFFD, newline and tab to a space");
    snprintf(want, sizeof want, "1\n00:00:00,000 --> 00:00:00,400\na%s[31m%s b c d%s%s x\xe2\x86\x92y <i>&amp;</i> -\xe2\x86\x92\n\n",
             fffd, fffd, fffd, fffd);
    check_fmt(tr, VOX_FORMAT_SRT, want, "SRT: --> becomes \xe2\x86\x92");
    snprintf(want, sizeof want,
             "WEBVTT\n\n00:00:00.000 --> 00:00:00.400\na%s[31m%s b c d%s%s x--&gt;y &lt;i&gt;&amp;amp;&lt;/i&gt; ---&gt;\n\n",
             fffd, fffd, fffd, fffd);
    check_fmt(tr, VOX_FORMAT_VTT, want, "VTT: & < > as entities (so --> too)");
    char *js = write_fmt(tr, VOX_FORMAT_JSON, "en");
    tu_check(strstr(js, "\"text\":\"a\\u001b[31m\\u0000 b\\nc\\td\xc2\x9b\x7f x-->y") != NULL,
             "JSON keeps the text exactly (\\u0000, \\u001b)", "%s", js);
    cJSON *j = cJSON_Parse(js);
    tu_check(j != NULL, "JSON with control characters parses", NULL);
    cJSON_Delete(j);
    free(js);
    vox_transcript_free(tr);
}

static void test_cjk(void) {
    const char *const a[] = {"\xe4\xbd\xa0", "\xe5\xa5\xbd", "\xe3\x80\x82", "~6", "\xe5\x86\x8d", "\xe8\xa7\x81"};
    vox_transcript *tr = run_script(NULL, a, 6, -1);
    check_fmt(tr, VOX_FORMAT_TXT, "\xe4\xbd\xa0\xe5\xa5\xbd\xe3\x80\x82\n\xe5\x86\x8d\xe8\xa7\x81\n",
              "CJK: 。 and a pause end a segment");
    vox_word w;
    int ok = vox_transcript_words(tr) == 4 && !vox_transcript_word(tr, 1, &w) && w.len == 6 &&
             !memcmp(w.text, "\xe5\xa5\xbd\xe3\x80\x82", 6) && fabs(w.start - 0.08) < 1e-9 && fabs(w.end - 0.24) < 1e-9;
    tu_check(ok, "CJK: each ideograph a word, punctuation stays with it", "%d words", vox_transcript_words(tr));
    vox_transcript_free(tr);
    /* the byte tokens of a split ideograph do not start words mid-character */
    const char *const b[] = {"\xe4", "\xbd\xa0", "\xe5\xa5", "\xbd"};
    tr = run_script(NULL, b, 4, -1);
    tu_check(vox_transcript_words(tr) == 2, "CJK split across byte tokens: 2 words", "%d", vox_transcript_words(tr));
    vox_transcript_free(tr);
}

static void test_live(void) {
    /* closed segments are final: what a live consumer printed stays true */
    vox_transcript *tr = vox_transcript_new(NULL);
    vox_transcript_set_duration(tr, 3.0);
    const char *const w[] = {" Good", " morning", ".", NULL, " Next"};
    int64_t t = 0;
    vox_buf live = {0};
    int printed = 0;
    for (int i = 0; i < 5; i++) {
        if (!w[i]) {
            for (int k = 0; k < 8; k++, t += 80) {
                vox_token p = text_tok(32, t / 1000.0, "", 0);
                vox_transcript_add(tr, &p);
            }
            continue;
        }
        vox_token p = text_tok(1000 + i, t / 1000.0, w[i], (int)strlen(w[i]));
        vox_transcript_add(tr, &p);
        t += 80;
        while (printed < vox_transcript_closed(tr)) vox_transcript_write_segment(tr, printed++, VOX_FORMAT_LINES, &live);
    }
    int closed_before_end = vox_transcript_closed(tr);
    vox_transcript_end(tr, -1);
    while (printed < vox_transcript_closed(tr)) vox_transcript_write_segment(tr, printed++, VOX_FORMAT_LINES, &live);
    char *all = write_fmt(tr, VOX_FORMAT_LINES, NULL);
    int ok = closed_before_end == 1 && live.data && !strcmp(live.data, all) &&
             !strcmp(all, "[00:00.000 --> 00:00.240]  Good morning.\n[00:00.880 --> 00:00.960]  Next\n");
    tu_check(ok, "segments printed as they close equal the final output", ok ? NULL : "%s", all);
    free(all);
    vox_buf_free(&live);
    vox_transcript_free(tr);
}

/* the invariants on any transcript; returns a description of the first failure */
static const char *check_invariants(const vox_transcript *tr, double dur) {
    size_t tl;
    const char *text = vox_transcript_text(tr, &tl);
    if (!vox_utf8_valid(text, tl)) return "text not valid UTF-8";
    size_t off = 0;
    double prev_end = 0;
    int words = 0;
    for (int i = 0; i < vox_transcript_segments(tr); i++) {
        vox_segment s;
        vox_transcript_segment(tr, i, &s);
        if (s.text != text + off) return "segments do not tile the text";
        off += s.len;
        if (!(s.start < s.end) || s.start < prev_end - 1e-9 || s.start < 0 || (dur > 0 && s.end > dur + 1e-9))
            return "cue times not increasing inside the audio";
        prev_end = s.end;
        for (int k = 0; k < s.n_words; k++) {
            vox_word w;
            vox_transcript_word(tr, s.first_word + k, &w);
            if (w.segment != i || w.start < s.start - 1e-9 || w.end > s.end + 1e-9 || w.end < w.start || !w.len)
                return "word outside its segment";
        }
        words += s.n_words;
    }
    if (off != tl) return "segments do not cover the text";
    if (words != vox_transcript_words(tr)) return "words not all in segments";
    for (int f = VOX_FORMAT_TXT; f <= VOX_FORMAT_LINES; f++) {
        vox_buf b = {0};
        vox_write_options wo = {.language = "en"};
        if (vox_transcript_write(tr, (vox_format)f, &wo, &b) != 0) return "writer failed";
        int ok = vox_utf8_valid(b.data ? b.data : "", b.len) && (!b.data || strlen(b.data) == b.len);
        if (ok && f == VOX_FORMAT_JSON) {
            cJSON *j = cJSON_Parse(b.data);
            ok = j && cJSON_GetArraySize(cJSON_GetObjectItem(j, "segments")) == vox_transcript_segments(tr);
            cJSON_Delete(j);
        }
        if (ok && f == VOX_FORMAT_SRT) { /* each cue: number, timing, one line, blank */
            int lines = 0;
            for (size_t i = 0; i < b.len; i++) lines += b.data[i] == '\n';
            ok = lines == 4 * vox_transcript_segments(tr) && (!b.data || !strstr(b.data + 0, "\n\n\n"));
            for (const char *p = b.data; ok && p && (p = strstr(p, "-->")); p += 3)
                ok = p > b.data + 13 && p[-1] == ' ' && p[-5] == ',';
        }
        vox_buf_free(&b);
        if (!ok) return f == VOX_FORMAT_JSON ? "JSON invalid" : f == VOX_FORMAT_SRT ? "SRT malformed" : "writer output invalid";
    }
    return NULL;
}

typedef struct {
    char *text;
    size_t len;
    double start, end;
    int n_tokens;
} seg_snap;

/* VOX_TEXT_DUMP=DIR: the writers' outputs of the first fuzz runs go to DIR/<run>.<ext>,
 * for tests/test_text.sh to check with Python's strict parsers */
static void dump(const vox_transcript *tr, const char *dir, int run) {
    static const char *const ext[] = {"txt", "srt", "vtt", "json", "lines"};
    for (int f = VOX_FORMAT_TXT; f <= VOX_FORMAT_LINES; f++) {
        char path[512];
        snprintf(path, sizeof path, "%s/%03d.%s", dir, run, ext[f]);
        vox_buf b = {0};
        vox_write_options wo = {.language = "en"};
        FILE *fp = fopen(path, "wb");
        if (fp && vox_transcript_write(tr, (vox_format)f, &wo, &b) == 0 && b.len) fwrite(b.data, 1, b.len, fp);
        if (fp) fclose(fp);
        vox_buf_free(&b);
    }
}

static void test_fuzz(void) {
    static const char *const words[] = {" the", " cat", "s", ".", "!", " \xe4\xbd\xa0", "\xe5\xa5\xbd", " ", "\n",
                                        "-->", " <b>", "&", "\xe2\x82", "\xac", "\xf0\x9f\x98", "\x80", "\xff",
                                        " \xc3", "\xa9", "\x00", "\x1b", "?\"", " \xe3\x80\x82"};
    const int nw = (int)(sizeof words / sizeof words[0]);
    int runs = 400, failures = 0, not_final = 0;
    const char *why = NULL;
    for (int r = 0; r < runs; r++) {
        vox_text_options o;
        vox_text_options_default(&o);
        o.max_len = rnd() % 3 ? 0 : 1 + rnd() % 30;
        vox_transcript *tr = vox_transcript_new(&o);
        int steps = 20 + rnd() % 300;
        double dur = (steps - rnd() % 20) * 0.08;
        if (rnd() % 4) vox_transcript_set_duration(tr, dur);
        else dur = -1;
        seg_snap snaps[400];
        int nsnap = 0;
        vox_buf deltas = {0};
        for (int k = 0; k < steps; k++) {
            int64_t t = k * 80;
            vox_token tok;
            if (rnd() % 3 == 0) {
                char piece[8];
                int n = 0;
                if (rnd() % 4 == 0) { /* raw byte tokens */
                    n = 1 + rnd() % 3;
                    for (int i = 0; i < n; i++) piece[i] = (char)rnd();
                    tok = text_tok(1000 + (unsigned char)piece[0], t / 1000.0, piece, n);
                } else {
                    int wi = rnd() % nw;
                    const char *w = words[wi];
                    n = wi == 19 ? 1 : (int)strlen(w);
                    memcpy(piece, w, n);
                    tok = text_tok(1000 + wi, t / 1000.0, piece, n);
                }
                vox_transcript_add(tr, &tok);
            } else {
                tok = text_tok(32, t / 1000.0, "", 0);
                vox_transcript_add(tr, &tok);
                if (rnd() % 40 == 0 && (dur < 0 || t / 1000.0 + 0.16 <= dur)) vox_transcript_break(tr);
            }
            size_t dl;
            const char *d = vox_transcript_delta(tr, &dl);
            vox_buf_append(&deltas, d, dl);
            while (nsnap < vox_transcript_closed(tr) && nsnap < 400) {
                vox_segment s;
                vox_transcript_segment(tr, nsnap, &s);
                snaps[nsnap].text = malloc(s.len + 1);
                memcpy(snaps[nsnap].text, s.text, s.len);
                snaps[nsnap] = (seg_snap){snaps[nsnap].text, s.len, s.start, s.end, s.n_tokens};
                nsnap++;
            }
        }
        vox_transcript_end(tr, dur);
        size_t dl, tl;
        const char *d = vox_transcript_delta(tr, &dl);
        vox_buf_append(&deltas, d, dl);
        const char *text = vox_transcript_text(tr, &tl);
        const char *w = check_invariants(tr, dur);
        if (getenv("VOX_TEXT_DUMP") && r < 100) dump(tr, getenv("VOX_TEXT_DUMP"), r);
        if (!w && (deltas.len != tl || memcmp(deltas.data ? deltas.data : "", text, tl))) w = "deltas do not concatenate to the text";
        if (w) {
            failures++;
            if (!why) why = w;
        }
        for (int i = 0; i < nsnap; i++) {
            vox_segment s;
            int gone = vox_transcript_segment(tr, i, &s) != 0;
            if (dur > 0 && (gone || s.len != snaps[i].len || memcmp(s.text, snaps[i].text, s.len) ||
                            s.start != snaps[i].start || s.end != snaps[i].end || s.n_tokens != snaps[i].n_tokens))
                not_final++;
            free(snaps[i].text);
        }
        vox_buf_free(&deltas);
        vox_transcript_free(tr);
    }
    tu_check(failures == 0, "fuzz: valid UTF-8, no NUL, cues increasing inside the audio, JSON/SRT well formed",
             "%d of %d runs: %s", failures, runs, why ? why : "");
    tu_check(not_final == 0, "fuzz: segments closed before the end stay as they were", "%d changed", not_final);
}

int main(int argc, char **argv) {
    const char *root = argc > 1 ? argv[1] : "tests/fixtures";
    test_golden();
    test_utf8_random();
    test_json_quote();
    test_token_times(root);
    test_sentences();
    test_pauses();
    test_max_len();
    test_breaks();
    test_times();
    test_escapes();
    test_cjk();
    test_live();
    test_fuzz();
    return tu_done();
}
