/* voxtral_error.c - the error channel (voxtral_error.h): the thread's last error
 * and the errors objects hold. Depends on nothing but libc. */
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "voxtral.h"
#include "voxtral_error.h"

static _Thread_local char last_error[VOX_ERR_LEN];

static void set_last(const char *msg) {
    if (msg != last_error) snprintf(last_error, sizeof last_error, "%s", msg);
}

int vox_error(const char *fmt, ...) {
    char tmp[VOX_ERR_LEN]; /* an argument may be last_error itself */
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(tmp, sizeof tmp, fmt, ap);
    va_end(ap);
    memcpy(last_error, tmp, sizeof last_error);
    return -1;
}

const char *vox_last_error(void) { return last_error[0] ? last_error : "no error"; }

int vox_err_set(vox_err *e, const char *fmt, ...) {
    if (!e->set) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(e->msg, sizeof e->msg, fmt, ap);
        va_end(ap);
        e->set = 1;
    }
    set_last(e->msg);
    return -1;
}

int vox_err_keep(vox_err *e) {
    if (!e->set) {
        snprintf(e->msg, sizeof e->msg, "%s", vox_last_error());
        e->set = 1;
    }
    return -1;
}

int vox_err_raise(const vox_err *e, const char *prefix) {
    return vox_error("%s%s", prefix ? prefix : "", e->set ? e->msg : "no error");
}

void vox_err_clear(vox_err *e) {
    e->set = 0;
    e->msg[0] = 0;
}
