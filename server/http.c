/* server/http.c - the HTTP side of `voxtral serve` (lws service thread only):
 * routing, auth, POST /v1/audio/transcriptions (multipart upload to a temp file,
 * the engine's text as json / text / srt / vtt / verbose_json, or server-sent
 * events with stream=true), GET /v1/models, /health, /ready, /metrics, and
 * OpenAI-shaped errors. WebSocket reasons are passed to realtime.c.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#include "conn.h"

enum { CHUNK = 16384, MAX_FIELD = 4096 };
/* a body declared at most this far over --max-upload is read and dropped before the
 * 413, so the client gets the answer; beyond it the connection is cut at once */
enum { DRAIN_BYTES = 64 << 20 };

static srv_conn *conns;
static int n_conns;

void conn_link(srv_conn *c) {
    if (c->in_list) return;
    c->prev = NULL;
    c->next = conns;
    if (conns) conns->prev = c;
    conns = c;
    c->in_list = 1;
    n_conns++;
}

void conn_unlink(srv_conn *c) {
    if (!c->in_list) return;
    if (c->prev) c->prev->next = c->next;
    else conns = c->next;
    if (c->next) c->next->prev = c->prev;
    c->in_list = 0;
    n_conns--;
}

srv_conn *conn_first(void) { return conns; }
int conn_count(void) { return n_conns; }

int conns_busy(void) {
    int n = 0;
    for (srv_conn *c = conns; c; c = c->next) n += c->s || c->q_head || c->status;
    return n;
}
size_t conn_size(void) { return sizeof(srv_conn); }

/* engine output pending somewhere: ask for writable callbacks */
void conns_kick(void) {
    for (srv_conn *c = conns; c; c = c->next)
        if (c->s && atomic_exchange(&c->s->want_write, 0)) lws_callback_on_writable(c->wsi);
}

void conns_tick(void) {
    double now = srv_now();
    for (srv_conn *c = conns; c; c = c->next)
        if (c->is_ws) rt_tick(c, now);
}

/* ---- auth ---- */
int srv_auth_ok(struct lws *wsi) {
    if (!g_cfg->api_key) return 1;
    char h[512];
    int n = lws_hdr_copy(wsi, h, sizeof h, WSI_TOKEN_HTTP_AUTHORIZATION);
    if (n <= 7 || strncasecmp(h, "Bearer ", 7) != 0) return 0;
    const char *k = h + 7, *want = g_cfg->api_key;
    size_t kl = strlen(k), wl = strlen(want);
    unsigned diff = (unsigned)(kl ^ wl);
    for (size_t i = 0; i < wl; i++) diff |= (unsigned char)want[i] ^ (unsigned char)(i < kl ? k[i] : 0);
    return diff == 0;
}

/* ---- responses ---- */
void http_error_body(sbuf *b, const char *type, const char *code, const char *msg) {
    b->len = 0;
    sbuf_lit(b, "{\"error\":{\"message\":");
    sbuf_json_str(b, msg, strlen(msg));
    sbuf_printf(b, ",\"type\":\"%s\",\"param\":null,\"code\":\"%s\"}}\n", type, code);
}

static const char *err_type(int status) {
    return status == 401 ? "authentication_error" : status >= 500 ? "server_error" : "invalid_request_error";
}

/* a whole response (headers and body) in one go: used where the body is small */
int http_write_status(struct lws *wsi, int status, const char *ctype, const char *body, size_t len,
                      int retry_after) {
    unsigned char buf[LWS_PRE + 2048], *start = buf + LWS_PRE, *p = start, *end = buf + sizeof buf - 1;
    if (lws_add_http_common_headers(wsi, (unsigned)status, ctype, len, &p, end)) return -1;
    if (retry_after > 0) {
        char v[16];
        int n = snprintf(v, sizeof v, "%d", retry_after);
        if (lws_add_http_header_by_name(wsi, (const unsigned char *)"retry-after:", (unsigned char *)v, n, &p, end))
            return -1;
    }
    if (lws_finalize_write_http_header(wsi, start, &p, end)) return -1;
    metrics_request(status);
    if (len && lws_write(wsi, (unsigned char *)body, len, LWS_WRITE_HTTP_FINAL) != (int)len) return -1;
    return 0;
}

/* sets the response; the writable callback sends it */
static void respond(srv_conn *c, int status, const char *ctype) {
    c->status = status;
    c->ctype = ctype;
    c->body_off = 0;
    c->done = 1;
    c->awaiting = 0;
    lws_callback_on_writable(c->wsi);
}

static void respond_error(srv_conn *c, int status, const char *code, const char *msg) {
    http_error_body(&c->body, err_type(status), code, msg);
    if (status == 503) c->retry_after = 1;
    respond(c, status, "application/json");
}

/* the writable callback of a plain (non-SSE) response: headers, then the body in chunks */
static int write_response(srv_conn *c) {
    struct lws *wsi = c->wsi;
    if (!c->headers_sent) {
        unsigned char hb[LWS_PRE + 1024], *start = hb + LWS_PRE, *p = start, *end = hb + sizeof hb - 1;
        if (lws_add_http_common_headers(wsi, (unsigned)c->status, c->ctype, c->body.len, &p, end)) return -1;
        if (c->retry_after) {
            char v[16];
            int n = snprintf(v, sizeof v, "%d", c->retry_after);
            if (lws_add_http_header_by_name(wsi, (const unsigned char *)"retry-after:", (unsigned char *)v, n, &p,
                                            end))
                return -1;
        }
        if (c->close_after &&
            lws_add_http_header_by_token(wsi, WSI_TOKEN_CONNECTION, (const unsigned char *)"close", 5, &p, end))
            return -1;
        if (lws_finalize_write_http_header(wsi, start, &p, end)) return -1;
        c->headers_sent = 1;
        metrics_request(c->status);
        if (c->body.len) {
            lws_callback_on_writable(wsi);
            return 0;
        }
    }
    size_t left = c->body.len - c->body_off;
    if (left) {
        unsigned char buf[LWS_PRE + CHUNK];
        size_t n = left < CHUNK ? left : CHUNK;
        memcpy(buf + LWS_PRE, c->body.data + c->body_off, n);
        int last = n == left;
        if (lws_write(wsi, buf + LWS_PRE, n, last ? LWS_WRITE_HTTP_FINAL : LWS_WRITE_HTTP) != (int)n) return -1;
        c->body_off += n;
        if (!last) {
            lws_callback_on_writable(wsi);
            return 0;
        }
    }
    if (c->close_after) return -1;
    http_conn_cleanup(c);
    return lws_http_transaction_completed(wsi) ? -1 : 0;
}

/* ---- formats of a finished transcription ---- */
static int fmt_of(const char *v) {
    if (!strcmp(v, "json")) return FMT_JSON;
    if (!strcmp(v, "text")) return FMT_TEXT;
    if (!strcmp(v, "srt")) return FMT_SRT;
    if (!strcmp(v, "vtt")) return FMT_VTT;
    if (!strcmp(v, "verbose_json")) return FMT_VERBOSE;
    return -1;
}

static void done_body(srv_conn *c, srv_event *e) {
    sbuf *b = &c->body;
    b->len = 0;
    const char *t = e->text.data ? e->text.data : "";
    switch (c->fmt) {
    case FMT_TEXT:
        sbuf_add(b, t, e->text.len);
        sbuf_lit(b, "\n");
        respond(c, 200, "text/plain; charset=utf-8");
        return;
    case FMT_SRT:
    case FMT_VTT:
    case FMT_VERBOSE: /* written by the library (vox_transcript_write) in the engine thread */
        sbuf_add(b, e->extra.data ? e->extra.data : "", e->extra.len);
        respond(c, 200, c->fmt == FMT_SRT   ? "application/x-subrip; charset=utf-8"
                        : c->fmt == FMT_VTT ? "text/vtt; charset=utf-8"
                                            : "application/json");
        return;
    default:
        sbuf_lit(b, "{\"text\":");
        sbuf_json_str(b, t, e->text.len);
        sbuf_printf(b, ",\"usage\":{\"type\":\"duration\",\"seconds\":%.3f}}\n", e->duration);
        respond(c, 200, "application/json");
    }
}

/* ---- SSE (stream=true) ---- */
static int sse_write(srv_conn *c) {
    struct lws *wsi = c->wsi;
    if (!c->headers_sent) {
        unsigned char hb[LWS_PRE + 512], *start = hb + LWS_PRE, *p = start, *end = hb + sizeof hb - 1;
        if (lws_add_http_common_headers(wsi, 200, "text/event-stream", LWS_ILLEGAL_HTTP_CONTENT_LEN, &p, end) ||
            lws_add_http_header_by_token(wsi, WSI_TOKEN_HTTP_CACHE_CONTROL, (const unsigned char *)"no-cache", 8, &p,
                                         end) ||
            lws_add_http_header_by_token(wsi, WSI_TOKEN_CONNECTION, (const unsigned char *)"close", 5, &p, end) ||
            lws_finalize_write_http_header(wsi, start, &p, end))
            return -1;
        c->headers_sent = 1;
        metrics_request(200);
        lws_set_timeout(wsi, NO_PENDING_TIMEOUT, 0); /* a long file streams for a while */
    }
    /* gather engine events into SSE lines */
    srv_event *e;
    while (!c->done && c->s && (e = srv_session_pop(c->s))) {
        sbuf *b = &c->body;
        if (e->type == EV_DELTA) {
            sbuf_lit(b, "data: {\"type\":\"transcript.text.delta\",\"delta\":");
            sbuf_json_str(b, e->text.data, e->text.len);
            sbuf_lit(b, "}\n\n");
        } else if (e->type == EV_DONE) {
            sbuf_lit(b, "data: {\"type\":\"transcript.text.done\",\"text\":");
            sbuf_json_str(b, e->text.data ? e->text.data : "", e->text.len);
            sbuf_printf(b, ",\"usage\":{\"type\":\"duration\",\"seconds\":%.3f}}\n\ndata: [DONE]\n\n", e->duration);
            c->done = 1;
        } else if (e->type == EV_ERROR) {
            sbuf tmp = {0};
            http_error_body(&tmp, err_type(e->status), e->code, e->text.data ? e->text.data : "error");
            sbuf_lit(b, "data: ");
            sbuf_add(b, tmp.data, tmp.len - 1);
            sbuf_lit(b, "\n\n");
            sbuf_free(&tmp);
            c->done = 1;
        }
        srv_event_free(e);
    }
    size_t left = c->body.len - c->body_off;
    if (left) {
        unsigned char buf[LWS_PRE + CHUNK];
        size_t n = left < CHUNK ? left : CHUNK;
        memcpy(buf + LWS_PRE, c->body.data + c->body_off, n);
        if (lws_write(wsi, buf + LWS_PRE, n, LWS_WRITE_HTTP) != (int)n) return -1;
        c->body_off += n;
        if (c->body_off == c->body.len) c->body.len = c->body_off = 0;
        lws_callback_on_writable(wsi);
        return 0;
    }
    return c->done ? -1 : 0; /* the end of the stream is the end of the connection */
}

/* ---- upload (multipart) ---- */
static int on_part(void *user, const char *name, const char *filename) {
    srv_conn *c = user;
    if (!strcmp(name, "file")) {
        if (c->have_file) return -1;
        c->have_file = 1;
        c->part = 1;
        return 0;
    }
    c->part = 2;
    snprintf(c->field_name, sizeof c->field_name, "%s", name);
    c->field.len = 0;
    return 0;
}

static void field_done(srv_conn *c) {
    if (c->part != 2) return;
    const char *v = c->field.data ? c->field.data : "";
    const char *n = c->field_name;
    if (!strcmp(n, "response_format")) {
        c->fmt = fmt_of(v);
    } else if (!strcmp(n, "stream")) {
        c->stream = !strcmp(v, "true") || !strcmp(v, "1");
    } else if (!strcmp(n, "timestamp_granularities[]") || !strcmp(n, "timestamp_granularities")) {
        if (strstr(v, "word")) c->words = 1;
    } else if (!strcmp(n, "language")) {
        snprintf(c->language, sizeof c->language, "%s", v);
    } /* model, prompt, temperature: accepted (one model, greedy decoding) */
}

static int on_data(void *user, const char *p, size_t n) {
    srv_conn *c = user;
    if (c->part == 1) {
        if (fwrite(p, 1, n, c->upload) != n) return -1;
        c->upload_bytes += n;
    } else if (c->part == 2) {
        if (c->field.len + n > MAX_FIELD) return -1;
        sbuf_add(&c->field, p, n);
    }
    return 0;
}

/* the multipart callbacks report the end of a field at the next part: track it */
static int on_part_wrap(void *user, const char *name, const char *filename) {
    field_done(user);
    return on_part(user, name, filename);
}

void http_conn_cleanup(srv_conn *c) {
    if (c->s) {
        sess_close(c->s);
        srv_session_unref(c->s);
        c->s = NULL;
    }
    mp_free(c->mp);
    c->mp = NULL;
    if (c->upload) fclose(c->upload);
    c->upload = NULL;
    if (c->upload_path) {
        unlink(c->upload_path);
        free(c->upload_path);
        c->upload_path = NULL;
    }
    sbuf_free(&c->body);
    sbuf_free(&c->field);
    c->status = 0;
}

static void begin_upload(srv_conn *c, struct lws *wsi) {
    char ct[512] = "", cl[32] = "";
    lws_hdr_copy(wsi, ct, sizeof ct, WSI_TOKEN_HTTP_CONTENT_TYPE);
    lws_hdr_copy(wsi, cl, sizeof cl, WSI_TOKEN_HTTP_CONTENT_LENGTH);
    if (!srv_auth_ok(wsi)) {
        c->reject = 401;
        http_error_body(&c->body, err_type(401), "invalid_api_key", "missing or wrong API key (Authorization: Bearer)");
        return;
    }
    if (cl[0] && strtoull(cl, NULL, 10) > g_cfg->max_upload) {
        char m[160];
        snprintf(m, sizeof m, "request body of %s bytes is over the limit of %zu bytes", cl, g_cfg->max_upload);
        if (strtoull(cl, NULL, 10) <= g_cfg->max_upload + DRAIN_BYTES) {
            /* read and dropped, answered at its end: a client still sending when the
             * connection closed would meet a reset instead of the 413 */
            c->reject = 413;
            http_error_body(&c->body, err_type(413), "file_too_large", m);
            return;
        }
        /* far over: answered at once, the connection closes (the body is not read) */
        c->close_after = 1;
        respond_error(c, 413, "file_too_large", m);
        return;
    }
    char te[64] = "";
    lws_hdr_copy(wsi, te, sizeof te, WSI_TOKEN_HTTP_TRANSFER_ENCODING);
    if (strcasestr(te, "chunked")) c->chunked = c->close_after = 1; /* lws cannot resync after it */
    mp_callbacks cb = {on_part_wrap, on_data, c};
    c->mp = mp_new(ct, &cb);
    if (!c->mp) {
        c->reject = 400;
        http_error_body(&c->body, err_type(400), "invalid_request",
                        "expected a multipart/form-data body with a boundary");
        return;
    }
    if (atomic_load(&g_draining)) {
        c->reject = 503;
        metrics_session_refused();
        http_error_body(&c->body, err_type(503), "server_draining", "server is shutting down");
        return;
    }
    c->s = srv_session_new(SESS_FILE);
    if (!c->s || engine_admit(c->s) != 0) {
        c->reject = 503;
        metrics_session_refused();
        char m[160];
        snprintf(m, sizeof m, "server at capacity (%d streams): retry later", g_cfg->max_streams);
        http_error_body(&c->body, err_type(503), "server_busy", m);
        if (c->s) srv_session_unref(c->s);
        c->s = NULL;
        return;
    }
    metrics_session_opened();
    const char *dir = getenv("TMPDIR");
    char path[512];
    snprintf(path, sizeof path, "%s/voxtral-upload-XXXXXX", dir && *dir ? dir : "/tmp");
    int fd = mkstemp(path);
    c->upload = fd >= 0 ? fdopen(fd, "wb") : NULL;
    if (!c->upload) {
        if (fd >= 0) close(fd), unlink(path);
        c->reject = 500;
        http_error_body(&c->body, err_type(500), "server_error", "cannot create a temporary file");
        return;
    }
    c->upload_path = strdup(path);
}

static void upload_complete(srv_conn *c) {
    if (c->reject) {
        c->retry_after = c->reject == 503;
        respond(c, c->reject, "application/json");
        return;
    }
    if (!c->mp) return; /* answered already (413) */
    field_done(c);
    c->part = 0;
    if (mp_feed(c->mp, "", 0) != 1) {
        respond_error(c, 400, "invalid_request", "multipart body ended before its closing boundary");
        return;
    }
    if (fflush(c->upload) != 0 || fclose(c->upload) != 0) {
        c->upload = NULL;
        respond_error(c, 500, "server_error", "cannot write the upload");
        return;
    }
    c->upload = NULL;
    if (!c->have_file) {
        respond_error(c, 400, "invalid_request", "missing the 'file' field");
        return;
    }
    if (c->fmt < 0) {
        respond_error(c, 400, "invalid_request", "response_format must be json, text, srt, vtt or verbose_json");
        return;
    }
    if (vox_audio_probe(c->upload_path) != 0) {
        char m[300];
        snprintf(m, sizeof m, "audio file could not be read (%s)", c->upload_bytes ? "unknown or corrupt format" : "empty");
        respond_error(c, 400, "invalid_audio", m); /* OpenAI answers a bad file with 400 */
        return;
    }
    c->s->fmt = c->fmt;
    c->s->words = c->words;
    /* the language is echoed in verbose_json when it is a plain code ("en", "fr") */
    size_t ll = strspn(c->language, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ-");
    if (ll && !c->language[ll]) snprintf(c->s->language, sizeof c->s->language, "%s", c->language);
    sess_push_file(c->s, c->upload_path); /* the session owns the file now */
    c->upload_path = NULL;
    c->awaiting = 1;
    c->sse = c->stream;
}

/* de-chunked body bytes */
static int body_bytes_in(void *user, const char *p, size_t n) {
    srv_conn *c = user;
    if (c->reject || !c->mp) return 0; /* read and dropped: answered at the end */
    if (mp_feed(c->mp, p, n) < 0) {
        c->reject = 400;
        http_error_body(&c->body, err_type(400), "invalid_request", mp_error(c->mp));
    }
    return 0;
}

static void body_complete(srv_conn *c) {
    if (c->done || c->awaiting) return;
    upload_complete(c);
    if (!c->done && c->awaiting && c->sse) lws_callback_on_writable(c->wsi);
}

/* an engine event for a waiting request */
static void on_engine(srv_conn *c) {
    if (c->sse) {
        lws_callback_on_writable(c->wsi);
        return;
    }
    srv_event *e;
    while (c->awaiting && (e = srv_session_pop(c->s))) {
        if (e->type == EV_DONE) done_body(c, e);
        else if (e->type == EV_ERROR)
            respond_error(c, e->status, e->code, e->text.data ? e->text.data : "error");
        srv_event_free(e);
    }
}

static int route_get(srv_conn *c, struct lws *wsi, const char *uri) {
    sbuf *b = &c->body;
    b->len = 0;
    if (!strcmp(uri, "/health")) {
        sbuf_printf(b, "{\"status\":\"ok\"}\n");
        respond(c, 200, "application/json");
        return 0;
    }
    if (!srv_auth_ok(wsi)) {
        respond_error(c, 401, "invalid_api_key", "missing or wrong API key (Authorization: Bearer)");
        return 0;
    }
    if (!strcmp(uri, "/ready")) {
        int active = engine_active(), draining = atomic_load(&g_draining);
        int ready = !draining && active < g_cfg->max_streams;
        sbuf_printf(b, "{\"ready\":%s,\"active\":%d,\"max_streams\":%d,\"draining\":%s}\n", ready ? "true" : "false",
                    active, g_cfg->max_streams, draining ? "true" : "false");
        respond(c, ready ? 200 : 503, "application/json");
    } else if (!strcmp(uri, "/metrics")) {
        metrics_write(b, engine_active(), g_cfg->max_streams, atomic_load(&g_draining), engine_backend_bytes(),
                      g_kv_per_stream);
        respond(c, 200, "text/plain; version=0.0.4");
    } else if (!strcmp(uri, "/v1/models")) {
        sbuf_printf(b, "{\"object\":\"list\",\"data\":[{\"id\":");
        sbuf_json_str(b, g_model_id, strlen(g_model_id));
        sbuf_printf(b, ",\"object\":\"model\",\"created\":%ld,\"owned_by\":\"voxtral\"}]}\n", (long)g_start_time);
        respond(c, 200, "application/json");
    } else {
        respond_error(c, 404, "not_found", "no such route");
    }
    return 0;
}

int http_callback(struct lws *wsi, enum lws_callback_reasons reason, void *user, void *in, size_t len) {
    srv_conn *c = user;
    switch (reason) {
    case LWS_CALLBACK_HTTP: {
        http_conn_cleanup(c);
        memset(c, 0, sizeof *c);
        c->wsi = wsi;
        c->fmt = FMT_JSON;
        c->t_last = srv_now();
        conn_link(c);
        char uri[256];
        snprintf(uri, sizeof uri, "%s", (const char *)in);
        int post = lws_hdr_total_length(wsi, WSI_TOKEN_POST_URI) > 0;
        int get = lws_hdr_total_length(wsi, WSI_TOKEN_GET_URI) > 0;
        if (post && !strcmp(uri, "/v1/audio/transcriptions")) {
            begin_upload(c, wsi);
            return 0;
        }
        if (post) {
            /* the body is read and dropped; the answer comes at its end */
            c->reject = !strcmp(uri, "/v1/audio/translations") ? 400 : 404;
            http_error_body(&c->body, err_type(c->reject), c->reject == 404 ? "not_found" : "unsupported",
                            c->reject == 404 ? "no such route" : "translations are not supported");
            return 0;
        }
        if (get) return route_get(c, wsi, uri);
        c->close_after = 1;
        respond_error(c, 405, "method_not_allowed", "method not allowed");
        return 0;
    }
    case LWS_CALLBACK_HTTP_BODY: {
        c->t_last = srv_now();
        c->body_bytes += len;
        if (c->done || c->awaiting) return 0;
        if (c->body_bytes > g_cfg->max_upload + (c->reject ? DRAIN_BYTES : 0)) {
            c->close_after = 1;
            respond_error(c, 413, "file_too_large", "request body is over the upload limit");
            return 0;
        }
        int end = 0;
        if (c->chunked) {
            end = chunked_feed(&c->cd, in, len, body_bytes_in, c);
            if (end < 0) {
                c->close_after = 1;
                respond_error(c, 400, "invalid_request", c->reject ? "malformed chunked body" : mp_error(c->mp));
                return 0;
            }
        } else {
            body_bytes_in(c, in, len);
        }
        if (end) body_complete(c);
        return 0;
    }
    case LWS_CALLBACK_HTTP_BODY_COMPLETION:
        body_complete(c);
        return 0;
    case LWS_CALLBACK_HTTP_WRITEABLE:
        if (c->awaiting && !c->done) {
            if (c->sse) {
                /* wait for the engine's verdict on the audio before the 200 goes out */
                if (!c->headers_sent) {
                    srv_event *e = NULL;
                    pthread_mutex_lock(&c->s->mu);
                    e = c->s->ev_head;
                    int started = e && e->type == EV_STARTED, err = e && e->type == EV_ERROR;
                    pthread_mutex_unlock(&c->s->mu);
                    if (err) {
                        c->sse = 0;
                        on_engine(c);
                        if (c->done) return write_response(c);
                        return 0;
                    }
                    if (!started) return 0;
                    srv_event_free(srv_session_pop(c->s));
                }
                return sse_write(c);
            }
            on_engine(c);
            if (!c->done) return 0;
        }
        if (c->done && c->status) return write_response(c);
        if (c->sse && c->headers_sent) return sse_write(c);
        return 0;
    case LWS_CALLBACK_CLOSED_HTTP:
    case LWS_CALLBACK_HTTP_DROP_PROTOCOL:
        if (!c || c->is_ws) break;
        http_conn_cleanup(c);
        conn_unlink(c);
        return 0;
    default:
        break;
    }
    return rt_callback(wsi, reason, user, in, len);
}
