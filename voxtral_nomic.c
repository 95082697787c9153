/* placeholder: being written (see the issue); replaced before it is used */
#include "voxtral_internal.h"
int vox_cli_mic(vox_stream *s, const char *d, int r, int v) { (void)s; (void)d; (void)r; (void)v; return vox_error("--mic: not implemented yet"); }
int vox_cli_list_devices(void) { return -1; }
