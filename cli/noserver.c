/* cli/noserver.c - `voxtral serve` in a build without libwebsockets (the Makefile uses
 * it when pkg-config finds no libwebsockets, or with SERVER=0): says how to get it. */
#include <stdio.h>

#include "cli.h"

int server_main(int argc, char **argv); /* cli/main.c calls it */

int server_main(int argc, char **argv) {
    (void)argc;
    (void)argv;
    fprintf(stderr, "voxtral: serve: built without libwebsockets, so there is no server: install "
                    "it (apt-get install libwebsockets-dev) and rebuild (make clean && make)\n");
    return 1;
}
