/* cli/forced.c - the bytes of forced ids, for --force-tokens. Under teacher forcing
 * the decoded sequence is the forced one (the engine feeds it; vox_token.id and the
 * top-k stay the model's own argmax and logits), so the transcript and the -o*
 * outputs are built from the forced ids' bytes, taken from the model's vocabulary
 * (vox_token_piece). */
#include <stdlib.h>
#include <string.h>

#include "cli.h"

int cli_pieces_load(const vox_ctx *ctx, const int *ids, int n_ids, cli_pieces *out) {
    memset(out, 0, sizeof *out);
    out->ids = ids;
    out->n = n_ids;
    out->bytes = calloc((size_t)n_ids + 1, sizeof *out->bytes);
    out->len = calloc((size_t)n_ids + 1, sizeof *out->len);
    if (!out->bytes || !out->len) {
        cli_pieces_free(out);
        return cli_error("out of memory");
    }
    for (int i = 0; i < n_ids; i++) out->bytes[i] = vox_token_piece(ctx, ids[i], &out->len[i]);
    return 0;
}

void cli_pieces_free(cli_pieces *p) {
    free(p->bytes);
    free(p->len);
    memset(p, 0, sizeof *p);
}
