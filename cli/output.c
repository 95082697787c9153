/* cli/output.c - what a run writes: the text on stdout as it is decoded (valid UTF-8:
 * the library's streaming decoder holds a split character back until it completes),
 * terminal segment lines ("[00:01.240 --> 00:04.880]  text"), the --json object, the
 * -otxt/-osrt/-ovtt/-ojson files, and the -pp progress line on stderr.
 *
 * Every token goes into a vox_transcript (voxtral_text.h), which turns the raw token
 * bytes into text by Python's decode(errors="replace") rule and groups it into words
 * and segments with audio times; all outputs read from it, so they agree.
 *
 * Output errors: a closed pipe (EPIPE) ends the run quietly; any other failed write
 * (ENOSPC, EIO) is an error. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <cjson/cJSON.h>

#include "cli.h"

volatile sig_atomic_t cli_stdout_closed = 0, cli_stdout_failed = 0;

static double mono_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec / 1e9;
}

void cli_out_bytes(cli_sink *k, const char *p, size_t n) {
    if (cli_stdout_closed || cli_stdout_failed || n == 0) return;
    errno = 0;
    if (fwrite(p, 1, n, stdout) != n || fflush(stdout) != 0) {
        if (errno == EPIPE) cli_stdout_closed = 1;
        else {
            cli_stdout_failed = 1;
            cli_error("stdout: %s", strerror(errno ? errno : EIO));
        }
    }
    k->printed = 1;
    k->at_line_start = p[n - 1] == '\n';
}

/* plain text: a new line starts without the word-leading space */
static void out_text(cli_sink *k, const char *p, size_t n) {
    if (k->at_line_start || !k->printed)
        while (n > 0 && (*p == ' ' || *p == '\t')) p++, n--;
    cli_out_bytes(k, p, n);
}

int cli_sink_begin(cli_sink *k, const vox_text_options *topt) {
    k->tr = vox_transcript_new(topt);
    if (!k->tr) return cli_error("%s", vox_last_error());
    k->printed = 0;
    k->at_line_start = 1;
    k->segs_shown = k->restarts = k->step = 0;
    k->last_time_s = 0;
    k->progress_at = 0;
    k->progress_shown = 0;
    if (k->json) {
        k->tokens = cJSON_CreateArray();
        k->topk = cJSON_CreateArray();
        k->pieces = cJSON_CreateArray();
        if (!k->tokens || !k->topk || !k->pieces) return cli_error("out of memory");
    }
    return 0;
}

void cli_sink_free(cli_sink *k) {
    vox_transcript_free(k->tr);
    cJSON_Delete(k->tokens);
    cJSON_Delete(k->topk);
    cJSON_Delete(k->pieces);
    k->tr = NULL;
    k->tokens = k->topk = k->pieces = NULL;
}

/* a string that may hold U+0000 (valid UTF-8) as a cJSON node */
static cJSON *json_string(const char *s, size_t n) {
    vox_buf b = {0};
    cJSON *o = vox_json_quote(&b, s, n) == 0 ? cJSON_CreateRaw(b.data) : NULL;
    vox_buf_free(&b);
    return o;
}

/* The delta of the last transcript call: stdout (plain) and --json pieces */
static void take_delta(cli_sink *k, double time_s) {
    size_t n;
    const char *d = vox_transcript_delta(k->tr, &n);
    if (n == 0) return;
    if (k->json) {
        cJSON *pc = cJSON_CreateObject();
        cJSON_AddNumberToObject(pc, "time", time_s);
        cJSON_AddItemToObject(pc, "text", json_string(d, n));
        cJSON_AddItemToArray(k->pieces, pc);
    } else if (!k->lines && !k->to_files_only) {
        out_text(k, d, n);
    }
}

/* Segments closed since the last call: terminal lines, or (live, plain) a newline */
static void show_segments(cli_sink *k, int all) {
    int upto = all ? vox_transcript_segments(k->tr) : vox_transcript_closed(k->tr);
    for (; k->segs_shown < upto; k->segs_shown++) {
        if (k->json || k->to_files_only) continue;
        if (k->lines) {
            vox_buf b = {0};
            if (vox_transcript_write_segment(k->tr, k->segs_shown, VOX_FORMAT_LINES, &b) == 0)
                cli_out_bytes(k, b.data, b.len);
            vox_buf_free(&b);
        } else if (k->live && !all && k->printed && !k->at_line_start) {
            cli_out_bytes(k, "\n", 1);
        }
    }
}

static void progress(cli_sink *k, double time_s) {
    double now = mono_s();
    if (now - k->progress_at < 0.25 || k->total_s <= 0) return;
    k->progress_at = now;
    double done = time_s < 0 ? 0 : time_s > k->total_s ? k->total_s : time_s;
    double el = now - k->t_start;
    double speed = el > 0 ? done / el : 0;
    double eta = speed > 0 ? (k->total_s - done) / speed : 0;
    fprintf(stderr, "\r[%3d%%] %.1f s of %.1f s, %.1fx real time, ETA %d:%02d \033[K",
            (int)(100 * done / k->total_s), done, k->total_s, speed, (int)eta / 60, (int)eta % 60);
    fflush(stderr);
    k->progress_shown = 1;
}

void cli_progress_end(cli_sink *k) {
    if (k->progress_shown) fprintf(stderr, "\r\033[K");
    k->progress_shown = 0;
}

void cli_sink_token(cli_sink *k, const vox_token *t) {
    k->last_time_s = t->time_s;
    if (k->json) {
        cJSON_AddItemToArray(k->tokens, cJSON_CreateNumber(t->id));
        if (t->k > 0) {
            cJSON *row = cJSON_CreateArray();
            for (int i = 0; i < t->k; i++) {
                cJSON *pair = cJSON_CreateArray();
                cJSON_AddItemToArray(pair, cJSON_CreateNumber(t->topk_ids[i]));
                cJSON_AddItemToArray(pair, cJSON_CreateNumber(t->topk_logits[i]));
                cJSON_AddItemToArray(row, pair);
            }
            cJSON_AddItemToArray(k->topk, row);
        }
    }
    if (k->live && k->s && vox_stream_restarts(k->s) != k->restarts) { /* a new decoder segment */
        k->restarts = vox_stream_restarts(k->s);
        if (vox_transcript_break(k->tr) == 0) {
            show_segments(k, 0);
            take_delta(k, t->time_s);
        }
    }
    vox_token ft;
    if (k->forced && k->step < k->forced->n) { /* the decoded sequence is the forced one */
        ft = *t;
        ft.id = k->forced->ids[k->step];
        ft.piece = k->forced->bytes[k->step] ? k->forced->bytes[k->step] : "";
        ft.piece_len = k->forced->len[k->step];
        t = &ft;
    }
    k->step++;
    if (vox_transcript_add(k->tr, t) != 0) return;
    show_segments(k, 0); /* a segment this token closed ends before its text */
    take_delta(k, t->time_s);
    if (k->progress) progress(k, t->time_s);
}

int cli_sink_end(cli_sink *k, double duration_s) {
    cli_progress_end(k);
    if (vox_transcript_end(k->tr, duration_s) != 0) return cli_error("%s", vox_last_error());
    take_delta(k, k->last_time_s);
    show_segments(k, 1);
    return 0;
}

int cli_emit_result(cli_sink *k, const char *err, cJSON *stats) {
    if (cli_stdout_closed) {
        cJSON_Delete(stats);
        return 0;
    }
    if (k->json) {
        size_t n;
        const char *text = vox_transcript_text(k->tr, &n);
        cJSON *o = cJSON_CreateObject();
        cJSON_AddItemToObject(o, "text", json_string(text, n));
        cJSON_AddItemToObject(o, "tokens", k->tokens);
        cJSON_AddItemToObject(o, "pieces", k->pieces); /* text pieces with their audio time (s) */
        if (k->topk_on) cJSON_AddItemToObject(o, "topk", k->topk);
        else cJSON_Delete(k->topk);
        k->tokens = k->pieces = k->topk = NULL;
        if (err) cJSON_AddStringToObject(o, "error", err);
        if (stats) cJSON_AddItemToObject(o, "stats", stats);
        char *js = cJSON_PrintUnformatted(o);
        cJSON_Delete(o);
        if (!js) return cli_error("out of memory");
        cli_out_bytes(k, js, strlen(js));
        cli_out_bytes(k, "\n", 1);
        free(js);
    } else {
        cJSON_Delete(stats);
        /* the text's newline; an empty transcript is an empty line; after an error
         * only the error (a line already started is ended) */
        if (!k->to_files_only && !k->lines && (k->printed ? !k->at_line_start : !err)) cli_out_bytes(k, "\n", 1);
    }
    return cli_stdout_failed ? -1 : 0;
}

/* -otxt/-osrt/-ovtt/-ojson: PREFIX.ext for each (PREFIX "-": stdout) */
int cli_write_files(cli_sink *k, const cli_opts *o, const char *input) {
    static const struct { int flag; vox_format f; const char *ext; } fm[] = {
        {CLI_OTXT, VOX_FORMAT_TXT, "txt"}, {CLI_OSRT, VOX_FORMAT_SRT, "srt"},
        {CLI_OVTT, VOX_FORMAT_VTT, "vtt"}, {CLI_OJSON, VOX_FORMAT_JSON, "json"}};
    char prefix[4096];
    if (o->of && o->n_inputs <= 1) snprintf(prefix, sizeof prefix, "%s", o->of);
    else if (o->of && strcmp(o->of, "-")) {
        /* several inputs and one -of: PREFIX.N.ext */
        snprintf(prefix, sizeof prefix, "%s.%d", o->of, k->index + 1);
    } else if (o->of) snprintf(prefix, sizeof prefix, "-");
    else {
        const char *base = !strcmp(input, "-") ? "stdin" : input;
        snprintf(prefix, sizeof prefix, "%s", base);
        char *slash = strrchr(prefix, '/'), *dot = strrchr(prefix, '.');
        if (dot && (!slash || dot > slash + 1)) *dot = 0;
    }
    for (size_t i = 0; i < sizeof fm / sizeof *fm; i++) {
        if (!(o->outputs & fm[i].flag)) continue;
        vox_buf b = {0};
        if (vox_transcript_write(k->tr, fm[i].f, NULL, &b) != 0) return cli_error("%s", vox_last_error());
        if (!strcmp(prefix, "-")) {
            cli_out_bytes(k, b.data, b.len);
            vox_buf_free(&b);
            if (cli_stdout_failed) return -1;
            continue;
        }
        char path[4200];
        snprintf(path, sizeof path, "%s.%s", prefix, fm[i].ext);
        FILE *f = fopen(path, "wb");
        int bad = !f || fwrite(b.data, 1, b.len, f) != b.len;
        int e = errno;
        if (f && fclose(f) != 0) bad = 1, e = errno;
        vox_buf_free(&b);
        if (bad) return cli_error("%s: %s", path, strerror(e));
        if (!o->quiet) fprintf(stderr, "voxtral: wrote %s\n", path);
    }
    return 0;
}
