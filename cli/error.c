/* cli/error.c - the command line's error message: one line, set where a CLI step
 * fails, printed by main. */
#include <stdarg.h>
#include <stdio.h>

#include "cli.h"

static char cli_errbuf[1024];

int cli_error(const char *fmt, ...) {
    char tmp[sizeof cli_errbuf]; /* the arguments may point into cli_errbuf */
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(tmp, sizeof tmp, fmt, ap);
    va_end(ap);
    snprintf(cli_errbuf, sizeof cli_errbuf, "%s", tmp);
    return -1;
}

const char *cli_last_error(void) { return cli_errbuf[0] ? cli_errbuf : "no error"; }
