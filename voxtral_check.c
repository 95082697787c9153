/* placeholder: being written (see the issue); replaced before it is used */
#include "voxtral_internal.h"
int vox_cli_check(const char *d, const char *a, int v) { (void)d; (void)a; (void)v; return 1; }
