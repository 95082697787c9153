/* cli/nomic.c - `--mic` and `--list-devices` in a build without PortAudio
 * (the Makefile uses it when pkg-config finds no portaudio-2.0): both explain how
 * to get microphone input. */
#include <stdio.h>

#include "cli.h"

#define NO_PORTAUDIO                                                                    \
    "built without PortAudio, so there is no microphone input: install it "             \
    "(apt-get install portaudio19-dev) and rebuild (make clean && make)"

int cli_mic(vox_stream *s, const char *device, int rate, double interval, int verbose,
            int (*stop)(void)) {
    return cli_error("--mic: " NO_PORTAUDIO);
}

int cli_list_devices(void) {
    fprintf(stderr, "voxtral: --list-devices: " NO_PORTAUDIO "\n");
    return -1;
}
