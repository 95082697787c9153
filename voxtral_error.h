/* voxtral_error.h - the engine's error channel, at the bottom of the dependency graph
 * (it calls nothing of the engine; every engine file may use it).
 *
 * Two levels:
 *   - the thread's last error (vox_error, vox_last_error in voxtral.h): the per-call
 *     channel, like errno. Every failing function sets it before it returns -1 / NULL;
 *     it belongs to the calling thread.
 *   - a vox_err held by an object (a backend, a stream): the error that failed it,
 *     kept with the object, so it can be reported later and read from any thread.
 *     The first error recorded sticks until the owner clears it.
 * Messages are one line, "what: why", at most VOX_ERR_LEN - 1 bytes (longer ones are cut).
 * Any argument may point into the thread's own last-error buffer (formatting goes
 * through a scratch copy). */
#ifndef VOXTRAL_ERROR_H
#define VOXTRAL_ERROR_H

enum { VOX_ERR_LEN = 1024 };

typedef struct {
    int set;
    char msg[VOX_ERR_LEN];
} vox_err;

/* Sets the thread's last error (printf format). Always returns -1. */
int vox_error(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
/* Records the error in e unless e already holds one (the first failure is the
 * cause), and sets the thread's last error to e's message. Always returns -1. */
int vox_err_set(vox_err *e, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* e := the thread's last error, unless e already holds one. Always returns -1. */
int vox_err_keep(vox_err *e);
/* The thread's last error := prefix + e's message (e unchanged). Always returns -1. */
int vox_err_raise(const vox_err *e, const char *prefix);
void vox_err_clear(vox_err *e);

#endif
