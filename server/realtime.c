/* server/realtime.c - the realtime WebSocket /v1/realtime (lws service thread only).
 *
 * Two dialects on one endpoint:
 *   vLLM's (the default): session.created {id, created}; client session.update,
 *     input_audio_buffer.append (base64 PCM16 LE, 16 kHz), .commit (the first
 *     starts transcription; later ones are no-ops, as in vLLM) and .commit with
 *     "final": true (the input ended); server transcription.delta and
 *     transcription.done {text, usage}; after done the connection may stream a
 *     new utterance.
 *   OpenAI's realtime transcription (?intent=transcription, or a session.update
 *     with session.type "transcription"): PCM16 at 24 kHz (resampled to 16 kHz,
 *     libsoxr streaming), input_audio_buffer.committed, and
 *     conversation.item.input_audio_transcription.delta / .completed per item
 *     (a commit forces out the pending text: vox_stream_flush).
 * A bad message gets an `error` event and the session goes on. The session runs
 * in continuous mode for as long as the client streams.
 */
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <soxr.h>

#include "conn.h"

/* audio the engine may be behind by (60 s at 16 kHz): past it, appends are refused */
enum { PENDING_MAX = 60 * 16000 };

void conn_queue(srv_conn *c, const char *data, size_t len) {
    srv_msg *m = malloc(sizeof *m + len);
    if (!m) return;
    m->next = NULL;
    m->len = len;
    memcpy(m->data, data, len);
    if (c->q_tail) c->q_tail->next = m;
    else c->q_head = m;
    c->q_tail = m;
    c->q_bytes += len;
    lws_callback_on_writable(c->wsi);
}

static void drop_queue(srv_conn *c) {
    for (srv_msg *m = c->q_head, *n; m; m = n) {
        n = m->next;
        free(m);
    }
    c->q_head = c->q_tail = NULL;
    c->q_bytes = 0;
}

static void queue_sbuf(srv_conn *c, sbuf *b) {
    conn_queue(c, b->data, b->len);
    sbuf_free(b);
}

static unsigned event_seq;

static void ev_id(sbuf *b) { sbuf_printf(b, "\"event_id\":\"event_%08x\",", ++event_seq); }

static void queue_error(srv_conn *c, const char *code, const char *msg) {
    sbuf b = {0};
    if (c->openai) {
        sbuf_lit(&b, "{\"type\":\"error\",");
        ev_id(&b);
        sbuf_printf(&b, "\"error\":{\"type\":\"invalid_request_error\",\"code\":\"%s\",\"message\":", code);
        sbuf_json_str(&b, msg, strlen(msg));
        sbuf_lit(&b, "}}");
    } else {
        sbuf_lit(&b, "{\"type\":\"error\",\"error\":");
        sbuf_json_str(&b, msg, strlen(msg));
        sbuf_printf(&b, ",\"code\":\"%s\"}", code);
    }
    queue_sbuf(c, &b);
}

static void close_soon(srv_conn *c, int code) {
    c->closing = 1;
    c->close_code = code;
    lws_callback_on_writable(c->wsi);
}

int rt_confirm_upgrade(struct lws *wsi) {
    char uri[128] = "";
    lws_hdr_copy(wsi, uri, sizeof uri, WSI_TOKEN_GET_URI);
    sbuf b = {0};
    int status = 0;
    if (strcmp(uri, "/v1/realtime") != 0) {
        status = 404;
        http_error_body(&b, "invalid_request_error", "not_found", "WebSocket endpoint is /v1/realtime");
    } else if (!srv_auth_ok(wsi)) {
        status = 401;
        http_error_body(&b, "authentication_error", "invalid_api_key", "missing or wrong API key (Authorization: Bearer)");
    }
    if (!status) return 0;
    /* written by hand: lws's header helpers answer an upgrade request as HTTP/1.0 */
    sbuf r = {0};
    sbuf_printf(&r, "HTTP/1.1 %d %s\r\ncontent-type: application/json\r\ncontent-length: %zu\r\n"
                    "connection: close\r\n\r\n", status, status == 401 ? "Unauthorized" : "Not Found", b.len);
    sbuf_add(&r, b.data, b.len);
    unsigned char *buf = malloc(LWS_PRE + r.len);
    int rc = -1;
    if (buf) {
        memcpy(buf + LWS_PRE, r.data, r.len);
        rc = lws_write(wsi, buf + LWS_PRE, r.len, LWS_WRITE_HTTP_HEADERS) == (int)r.len ? 0 : -1;
        free(buf);
    }
    metrics_request(status);
    sbuf_free(&r);
    sbuf_free(&b);
    return rc ? -1 : 1;
}

static void session_created(srv_conn *c) {
    sbuf b = {0};
    if (c->openai) {
        sbuf_lit(&b, "{\"type\":\"session.created\",");
        ev_id(&b);
        sbuf_printf(&b, "\"session\":{\"id\":\"%s\",\"object\":\"realtime.transcription_session\",\"type\":\"transcription\","
                        "\"audio\":{\"input\":{\"format\":{\"type\":\"audio/pcm\",\"rate\":%d}}}}}",
                    c->s->id, c->rate);
    } else {
        sbuf_printf(&b, "{\"type\":\"session.created\",\"id\":\"%s\",\"created\":%ld}", c->s->id, (long)time(NULL));
    }
    queue_sbuf(c, &b);
}

static void established(srv_conn *c, struct lws *wsi) {
    memset(c, 0, sizeof *c);
    c->wsi = wsi;
    c->is_ws = 1;
    c->t_last = srv_now();
    conn_link(c);
    char arg[128];
    for (int i = 0; lws_hdr_copy_fragment(wsi, arg, sizeof arg, WSI_TOKEN_HTTP_URI_ARGS, i) > 0; i++)
        if (!strcmp(arg, "intent=transcription")) c->openai = 1;
    if (lws_hdr_total_length(wsi, WSI_TOKEN_HTTP_URI_ARGS) <= 0) {
        char beta[64] = "";
        if (lws_hdr_custom_copy(wsi, beta, sizeof beta, "openai-beta:", 12) > 0 && strstr(beta, "realtime"))
            c->openai = 1;
    }
    c->rate = c->openai ? 24000 : 16000;
    if (atomic_load(&g_draining)) {
        metrics_session_refused();
        queue_error(c, "server_draining", "server is shutting down");
        c->refused = 1;
        close_soon(c, LWS_CLOSE_STATUS_GOINGAWAY);
        return;
    }
    c->s = srv_session_new(SESS_LIVE);
    if (!c->s || engine_admit(c->s) != 0) {
        if (c->s) srv_session_unref(c->s);
        c->s = NULL;
        metrics_session_refused();
        char m[120];
        snprintf(m, sizeof m, "server at capacity (%d streams): retry later", g_cfg->max_streams);
        queue_error(c, "server_busy", m);
        c->refused = 1;
        close_soon(c, 1013); /* try again later */
        return;
    }
    metrics_session_opened();
    session_created(c);
}

void rt_conn_cleanup(srv_conn *c) {
    if (c->s) {
        sess_close(c->s); /* the engine frees the stream and the slot now */
        srv_session_unref(c->s);
        c->s = NULL;
    }
    drop_queue(c);
    if (c->soxr) soxr_delete(c->soxr);
    c->soxr = NULL;
    sbuf_free(&c->rx);
}

/* 24 kHz -> 16 kHz, streaming; in == NULL flushes and ends the resampler */
static int resample_push(srv_conn *c, const float *in, size_t n) {
    if (!c->soxr) {
        soxr_error_t err = NULL;
        soxr_io_spec_t io = soxr_io_spec(SOXR_FLOAT32_I, SOXR_FLOAT32_I);
        soxr_quality_spec_t q = soxr_quality_spec(SOXR_HQ, 0);
        c->soxr = soxr_create(c->rate, engine_sample_rate(), 1, &err, &io, &q, NULL);
        if (err || !c->soxr) return -1;
    }
    float out[4096];
    size_t off = 0;
    for (;;) {
        size_t idone = 0, odone = 0;
        soxr_error_t err = soxr_process(c->soxr, in ? in + off : NULL, in ? n - off : 0, &idone, out, 4096, &odone);
        if (err) return -1;
        off += idone;
        if (odone && sess_push_audio(c->s, out, odone, PENDING_MAX) != 0) return -2;
        if (in ? (off >= n && odone < 4096) : odone == 0) break;
    }
    if (!in) {
        soxr_delete(c->soxr);
        c->soxr = NULL;
    }
    return 0;
}

static void on_append(srv_conn *c, rt_action *a) {
    if (c->final_sent && c->close_after_done) return; /* draining: input is over */
    double secs = (double)a->n_pcm / c->rate;
    if (c->audio_s + secs > g_cfg->max_session_s) {
        char m[120];
        snprintf(m, sizeof m, "session is over its length limit of %.0f s of audio: input ended", g_cfg->max_session_s);
        queue_error(c, "session_too_long", m);
        if (!c->final_sent) {
            if (c->soxr) resample_push(c, NULL, 0);
            sess_push_mark(c->s, MARK_FINAL);
            c->final_sent = c->close_after_done = 1;
        }
        return;
    }
    c->audio_s += secs;
    metrics_audio_in(secs);
    float *x = malloc(sizeof(float) * (a->n_pcm ? a->n_pcm : 1));
    if (!x) {
        queue_error(c, "processing_error", "out of memory");
        return;
    }
    for (size_t i = 0; i < a->n_pcm; i++) x[i] = (float)a->pcm[i] / 32768.0f;
    int rc = c->rate == engine_sample_rate()
                 ? sess_push_audio(c->s, x, a->n_pcm, PENDING_MAX)
                 : resample_push(c, x, a->n_pcm);
    free(x);
    if (rc) queue_error(c, "processing_error", rc == -2 || c->rate == engine_sample_rate()
                                                   ? "the engine is behind: audio dropped"
                                                   : "resampler failed");
    if (!rc) c->since_commit += a->n_pcm;
    c->final_sent = 0; /* a new utterance after a final commit */
}

static void on_message(srv_conn *c, const char *msg, size_t len) {
    rt_action a;
    rt_parse(msg, len, g_cfg->max_ws_message, &a);
    sbuf b = {0};
    switch (a.type) {
    case RT_ERR:
        queue_error(c, a.code, a.msg);
        break;
    case RT_SESSION_UPDATE:
        if (a.transcription) c->openai = 1;
        if (a.rate && a.rate != c->rate) {
            if (c->soxr) resample_push(c, NULL, 0);
            c->rate = a.rate;
        }
        if (c->openai) {
            sbuf_lit(&b, "{\"type\":\"session.updated\",");
            ev_id(&b);
            sbuf_printf(&b, "\"session\":{\"id\":\"%s\",\"object\":\"realtime.transcription_session\",\"type\":\"transcription\","
                            "\"audio\":{\"input\":{\"format\":{\"type\":\"audio/pcm\",\"rate\":%d}}}}}",
                        c->s->id, c->rate);
            queue_sbuf(c, &b);
        }
        break;
    case RT_APPEND:
        on_append(c, &a);
        break;
    case RT_COMMIT:
        if (!c->openai) break; /* vLLM: transcription already runs as audio comes */
        if (!c->since_commit) { /* as OpenAI: an item needs audio */
            queue_error(c, "input_audio_buffer_commit_empty", "input audio buffer is empty: nothing to commit");
            break;
        }
        if (c->soxr) resample_push(c, NULL, 0);
        if (sess_push_mark(c->s, MARK_COMMIT) != 0) { /* no item promised that would never complete */
            queue_error(c, "too_many_pending_commits", "too many commits waiting for the engine: commit dropped, audio kept");
            break;
        }
        c->since_commit = 0;
        sbuf_lit(&b, "{\"type\":\"input_audio_buffer.committed\",");
        ev_id(&b);
        sbuf_printf(&b, "\"previous_item_id\":null,\"item_id\":\"item_%s_%d\"}", c->s->id + 5, c->item_next++);
        queue_sbuf(c, &b);
        break;
    case RT_COMMIT_FINAL:
        if (c->soxr) resample_push(c, NULL, 0);
        if (sess_push_mark(c->s, MARK_FINAL) != 0) {
            queue_error(c, "too_many_pending_commits", "too many commits waiting for the engine: final commit dropped");
            break;
        }
        c->final_sent = 1;
        break;
    case RT_CLEAR:
        /* audio is transcribed as it arrives, so there is no pending buffer to drop:
         * say so rather than answer `cleared` for audio that will still be transcribed */
        queue_error(c, "unsupported_event",
                    "input_audio_buffer.clear: audio is transcribed as it arrives; nothing can be cleared");
        break;
    default:
        break;
    }
    free(a.pcm);
}

/* one engine event as the dialect's JSON; empty when it maps to nothing */
static void serialise(srv_conn *c, srv_event *e, sbuf *b) {
    const char *t = e->text.data ? e->text.data : "";
    if (e->type == EV_ERROR) {
        queue_error(c, e->code, t);
        return;
    }
    if (c->openai) {
        const char *name = e->type == EV_DELTA ? "delta" : e->type == EV_SEGMENT_DONE ? "completed" : NULL;
        if (!name) return;
        sbuf_printf(b, "{\"type\":\"conversation.item.input_audio_transcription.%s\",", name);
        ev_id(b);
        sbuf_printf(b, "\"item_id\":\"item_%s_%d\",\"content_index\":0,\"%s\":", c->s->id + 5, e->item,
                    e->type == EV_DELTA ? "delta" : "transcript");
        sbuf_json_str(b, t, e->text.len);
        sbuf_lit(b, "}");
    } else if (e->type == EV_DELTA) {
        sbuf_lit(b, "{\"type\":\"transcription.delta\",\"delta\":");
        sbuf_json_str(b, t, e->text.len);
        sbuf_lit(b, "}");
    } else if (e->type == EV_DONE) {
        sbuf_lit(b, "{\"type\":\"transcription.done\",\"text\":");
        sbuf_json_str(b, t, e->text.len);
        sbuf_printf(b, ",\"usage\":{\"completion_tokens\":%d,\"total_tokens\":%d,\"input_audio_seconds\":%.3f}}",
                    e->tokens, e->tokens, e->duration);
    }
}

static int ws_send(struct lws *wsi, const char *p, size_t n) {
    unsigned char *buf = malloc(LWS_PRE + n);
    if (!buf) return -1;
    memcpy(buf + LWS_PRE, p, n);
    int rc = lws_write(wsi, buf + LWS_PRE, n, LWS_WRITE_TEXT) < (int)n ? -1 : 0;
    free(buf);
    return rc;
}

static int writable(srv_conn *c, struct lws *wsi) {
    /* engine events become local messages, in order */
    srv_event *e;
    while (c->s && (e = srv_session_pop(c->s))) {
        sbuf b = {0};
        serialise(c, e, &b);
        if (b.len) queue_sbuf(c, &b);
        else sbuf_free(&b);
        if (e->type == EV_DONE && c->close_after_done) close_soon(c, LWS_CLOSE_STATUS_GOINGAWAY);
        srv_event_free(e);
    }
    srv_msg *m = c->q_head;
    if (m) {
        c->q_head = m->next;
        if (!c->q_head) c->q_tail = NULL;
        c->q_bytes -= m->len;
        int rc = ws_send(wsi, m->data, m->len);
        free(m);
        if (rc) return -1;
        if (c->q_head || c->closing) lws_callback_on_writable(wsi);
        return 0;
    }
    if (c->closing) {
        lws_close_reason(wsi, (enum lws_close_status)(c->close_code ? c->close_code : LWS_CLOSE_STATUS_NORMAL),
                         NULL, 0);
        return -1;
    }
    return 0;
}

void rt_tick(srv_conn *c, double now) {
    if (c->closing || !c->s) return;
    if (now - c->t_last > g_cfg->idle_s && !c->close_after_done) {
        char m[100];
        snprintf(m, sizeof m, "no message for %.0f s: closing the session", g_cfg->idle_s);
        queue_error(c, "idle_timeout", m);
        close_soon(c, LWS_CLOSE_STATUS_NORMAL);
    }
    pthread_mutex_lock(&c->s->mu);
    size_t pending = c->s->ev_bytes;
    pthread_mutex_unlock(&c->s->mu);
    /* writable() moves engine events into the connection's own queue: both count,
     * or a client reading a trickle (or flooding bad messages) grows it unbounded */
    if (pending + c->q_bytes > g_cfg->max_pending_out) { /* a client that does not read */
        drop_queue(c); /* what it did not read is dropped: only the error goes out */
        queue_error(c, "slow_client", "client is not reading its events: closing");
        close_soon(c, LWS_CLOSE_STATUS_POLICY_VIOLATION);
        lws_set_timeout(c->wsi, PENDING_TIMEOUT_CLOSE_SEND, 5); /* one that never reads is cut */
    }
}

void rt_drain(srv_conn *c) {
    if (c->closing || c->close_after_done) return;
    if (!c->s) {
        close_soon(c, LWS_CLOSE_STATUS_GOINGAWAY);
        return;
    }
    if (c->soxr) resample_push(c, NULL, 0);
    sess_push_mark(c->s, MARK_FINAL); /* the text so far is finished and sent */
    c->final_sent = c->close_after_done = 1;
}

int rt_callback(struct lws *wsi, enum lws_callback_reasons reason, void *user, void *in, size_t len) {
    srv_conn *c = user;
    switch (reason) {
    case LWS_CALLBACK_HTTP_CONFIRM_UPGRADE:
        return rt_confirm_upgrade(wsi);
    case LWS_CALLBACK_ESTABLISHED:
        established(c, wsi);
        return 0;
    case LWS_CALLBACK_RECEIVE: {
        c->t_last = srv_now();
        if (c->refused || c->closing) return 0;
        int final = lws_is_final_fragment(wsi) && !lws_remaining_packet_payload(wsi);
        if (!c->rx_skip && c->rx.len + len > g_cfg->max_ws_message) {
            c->rx_skip = 1;
            c->rx.len = 0;
            char m[120];
            snprintf(m, sizeof m, "message is over the limit of %zu bytes: dropped", g_cfg->max_ws_message);
            queue_error(c, "message_too_large", m);
        }
        if (!c->rx_skip) sbuf_add(&c->rx, in, len);
        if (final) {
            if (!c->rx_skip && c->rx.len) on_message(c, c->rx.data, c->rx.len);
            c->rx.len = 0;
            c->rx_skip = 0;
        }
        return 0;
    }
    case LWS_CALLBACK_SERVER_WRITEABLE:
        return writable(c, wsi);
    case LWS_CALLBACK_CLOSED:
        rt_conn_cleanup(c);
        conn_unlink(c);
        return 0;
    case LWS_CALLBACK_EVENT_WAIT_CANCELLED:
        conns_kick();
        return 0;
    default:
        break;
    }
    return lws_callback_http_dummy(wsi, reason, user, in, len);
}
