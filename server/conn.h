/* server/conn.h - per-connection state of the network thread (http.c, realtime.c).
 * Only the lws service thread touches these. */
#ifndef VOXTRAL_SERVER_CONN_H
#define VOXTRAL_SERVER_CONN_H

#include <stdio.h>

#include <libwebsockets.h>

#include "server.h"

/* a message serialised by the network side itself (session.created, committed,
 * parse errors), sent before the engine's events */
typedef struct srv_msg {
    struct srv_msg *next;
    size_t len;
    char data[];
} srv_msg;

enum { FMT_JSON, FMT_TEXT, FMT_SRT, FMT_VTT, FMT_VERBOSE };

struct srv_conn {
    struct lws *wsi;
    srv_conn *next, *prev;
    int in_list, is_ws;
    srv_session *s;
    double t_last; /* last byte received (idle timeout) */

    /* HTTP */
    int status, close_after, retry_after, headers_sent, done, awaiting;
    const char *ctype;
    sbuf body;
    size_t body_off;
    int reject;        /* a deferred error: answered once the body has been read */
    mp_parser *mp;
    int part;          /* the part being read: 0 none, 1 the file, 2 a small field */
    char field_name[64];
    sbuf field;
    FILE *upload;
    char *upload_path;
    size_t upload_bytes, body_bytes;
    int have_file, fmt, stream, words;
    char language[16];
    int sse;           /* stream=true: headers sent, events follow */
    int chunked;       /* Transfer-Encoding: chunked (decoded here: lws 4.1 does not) */
    chunked_dec cd;

    /* WebSocket */
    sbuf rx;
    int rx_skip;       /* dropping the rest of an oversized message */
    int openai;        /* OpenAI realtime events (?intent=transcription or a transcription session) */
    int rate;          /* input rate of appended PCM16 */
    void *soxr;        /* 24 kHz -> 16 kHz resampler (soxr_t) */
    srv_msg *q_head, *q_tail;
    size_t q_bytes;    /* bytes queued in q_head (counted against max_pending_out) */
    int closing, close_code; /* send what is queued, then close */
    int final_sent;    /* a final commit is in; closing waits for transcription.done */
    int close_after_done;
    int item_next;     /* OpenAI items committed so far */
    size_t since_commit; /* samples appended since the last commit */
    double audio_s;    /* appended audio (session length limit) */
    int refused;
};

void conn_link(srv_conn *c);
void conn_unlink(srv_conn *c);
srv_conn *conn_first(void);
int conn_count(void);
int conns_busy(void); /* connections with a session, a response or messages pending */

int http_callback(struct lws *wsi, enum lws_callback_reasons reason, void *user, void *in, size_t len);
int rt_callback(struct lws *wsi, enum lws_callback_reasons reason, void *user, void *in, size_t len);

/* http.c */
void http_conn_cleanup(srv_conn *c);
/* realtime.c */
void rt_conn_cleanup(srv_conn *c);
int rt_confirm_upgrade(struct lws *wsi);
void rt_tick(srv_conn *c, double now);
void rt_drain(srv_conn *c); /* grace over: finish the input, close after the text */
void conn_queue(srv_conn *c, const char *data, size_t len);
void http_error_body(sbuf *b, const char *type, const char *code, const char *msg);
int http_write_status(struct lws *wsi, int status, const char *ctype, const char *body, size_t len,
                      int retry_after);

#endif
