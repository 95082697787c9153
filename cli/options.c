/* cli/options.c - the command line's flags: parsing, --help (one 80x24 screen),
 * --help all (every flag) and --version. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"

#ifndef VOXTRAL_VERSION
#define VOXTRAL_VERSION "unknown"
#endif

/* 24 lines of at most 80 columns (tests/test_cli.sh checks both) */
static const char *HELP =
    "usage: voxtral [-d DIR] (-i FILE... | FILE... | --stdin | --mic) [options]\n"
    "Speech to text with a Voxtral Realtime model; text on stdout as it is decoded.\n"
    "\n"
    "  -d DIR             model (default: $VOXTRAL_MODEL, else samples/tiny-en)\n"
    "  -i FILE            audio file(s) (WAV, FLAC, Ogg, MP3; -: a file on stdin)\n"
    "  -otxt -osrt -ovtt -ojson  write FILE.txt/.srt/.vtt/.json (-of PREFIX)\n"
    "  -nt, --timestamps  segment times off/on (on when stdout is a terminal)\n"
    "  -pp, -ml N         progress on stderr; segments of at most N characters\n"
    "  --stdin            standard input: WAV (any rate), or raw s16le 16 kHz mono\n"
    "  --mic              the microphone (--device N|NAME, --list-devices)\n"
    "  --check            preflight: driver, GPU, memory, a smoke run\n"
    "  --backend B        auto (default: CUDA if usable, else CPU), cpu, cuda\n"
    "  -t N               CPU threads (default: all cores)\n"
    "  --quant q8|q4      8- or 4-bit weights (a 6 GB GPU: q4, see README)\n"
    "  --json             one JSON object at the end: text, tokens, pieces, stats\n"
    "  --quiet            nothing on stderr but errors\n"
    "  --help all         every option; --version: the version\n"
    "  voxtral serve -d DIR [--port N]: OpenAI/vLLM-compatible server (README)\n"
    "\n"
    "Other formats (M4A, AAC, WebM, video): convert with ffmpeg first:\n"
    "  ffmpeg -loglevel error -i in.m4a -ar 16000 -ac 1 -f wav - | voxtral -i -\n"
    "Exit status: 0 done, 1 error, 2 bad usage, 130 interrupted (Ctrl-C).\n";

static const char *HELP_ALL =
    "\n"
    "All options:\n"
    "  -d DIR               model directory (default: $VOXTRAL_MODEL, else\n"
    "                       samples/tiny-en beside the binary's source tree or the\n"
    "                       installed share/voxtral/tiny-en; stderr says which)\n"
    "  -i FILE, FILE        transcribe audio files in turn, one model load\n"
    "                       (anything libsndfile reads); -i -: a whole file on stdin\n"
    "  -otxt -osrt -ovtt -ojson  write the transcript as text, SubRip, WebVTT,\n"
    "                       OpenAI verbose_json (several at once) to PREFIX.ext\n"
    "  -of PREFIX           output name (default: the input's, extension dropped;\n"
    "                       -: stdout; several inputs: PREFIX.N)\n"
    "  --timestamps, -nt    [00:01.240 --> 00:04.880]  lines per segment on stdout\n"
    "                       (default: when stdout is a terminal), or plain text\n"
    "  -ml N                a segment is at most N characters (whole words)\n"
    "  -pp                  progress on stderr (default: stderr a terminal and the\n"
    "                       input longer than a minute)\n"
    "  --stdin              transcribe standard input: WAV (PCM 16-bit or float\n"
    "                       32-bit, any rate: resampled), else raw s16le 16 kHz mono;\n"
    "                       other containers (MP3, FLAC, Ogg, MP4, WebM) are refused\n"
    "                       with the ffmpeg line that converts them\n"
    "  --continuous         files too: when the model ends a segment (EOS, or 5 s\n"
    "                       without text), go on with the audio after it, as\n"
    "                       --stdin and --mic do (default: a file ends at EOS)\n"
    "  --mic                transcribe the microphone (PortAudio)\n"
    "  --device N|NAME      the capture device (a number or a name substring)\n"
    "  --list-devices       list capture devices\n"
    "  -I SEC               live input: audio gathered per engine run (default 0.16)\n"
    "  --check              preflight; exit 0 when the backend --backend names works\n"
    "                       (auto: any backend; cuda: the GPU), see README\n"
    "  --delay MS           transcription delay, 80..2400 in steps of 80\n"
    "  --backend B          auto (default), cpu or cuda\n"
    "  --gpu-path P         CUDA weights: auto (bf16 on sm_80+, else fp16), bf16,\n"
    "                       fp16 or fp32\n"
    "  --quant q8|q4        quantize the weights at load (decoder + LM head; encoder\n"
    "                       q8); q4:GROUP[:bf16|q8] sets the group size (64) and the\n"
    "                       encoder's format\n"
    "  --quantize OUT_DIR   with -d DIR and --quant: write the quantized model to\n"
    "                       OUT_DIR and exit\n"
    "  --kv-window N        keep the decoder's KV cache to the last N positions\n"
    "                       (80 ms each; default the model's window): less memory,\n"
    "                       and the decoder sees less context (changes results)\n"
    "  --kv-dtype f32|bf16  KV cache elements (default f32; bf16 halves the cache,\n"
    "                       results change slightly)\n"
    "  -t N                 CPU threads (default: all cores)\n"
    "  --json               print one JSON object at the end: text, tokens (every\n"
    "                       id), pieces (text pieces with their audio time), stats\n"
    "  --topk K             with --json: the K best logits of every step\n"
    "  --force-tokens FILE  feed these ids (whitespace-separated) instead of the\n"
    "                       argmax (teacher forcing)\n"
    "  --bench              after the run: measure memory bandwidth, report the\n"
    "                       decoder step against its floor\n"
    "  --quiet              no diagnostics on stderr (errors only)\n"
    "  --verbose            more diagnostics on stderr\n"
    "  --version            print the version and the backends built in\n"
    "  -h, --help [all]     help (all: this list)\n"
    "\n"
    "Ctrl-C during -i stops after the current step, prints the text so far and\n"
    "exits 130; during --stdin/--mic it ends the input and finishes the text\n"
    "(exit 0). A second Ctrl-C exits at once. Unless OMP_WAIT_POLICY or\n"
    "GOMP_SPINCOUNT is set, threads spin briefly (GOMP_SPINCOUNT=10000) when the\n"
    "machine is quiet at start (load average < 0.5), else wait passively.\n";

static int usage_error(const char *fmt, const char *a, const char *b) {
    fprintf(stderr, "voxtral: ");
    fprintf(stderr, fmt, a, b);
    fprintf(stderr, "\n");
    return 2;
}

static int parse_long(const char *s, long lo, long hi, long *out) {
    char *end;
    errno = 0;
    long v = strtol(s, &end, 10);
    if (!*s || *end || errno || v < lo || v > hi) return -1;
    *out = v;
    return 0;
}

int cli_parse(int argc, char **argv, cli_opts *o) {
    memset(o, 0, sizeof *o);
    vox_options_default(&o->opt);
    o->interval = 0.16;
    o->timestamps = -1;
    o->progress = -1;
    o->inputs = calloc((size_t)argc, sizeof *o->inputs);
    if (!o->inputs) return usage_error("%s%s", "out of memory", "");
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        const char *next = i + 1 < argc ? argv[i + 1] : NULL;
        long v;
#define NEED_ARG()                                                                     \
    do {                                                                               \
        if (!next) return usage_error("%s needs a value (see --help)%s", a, "");       \
        i++;                                                                           \
    } while (0)
        if (!strcmp(a, "-h") || !strcmp(a, "--help")) {
            fputs(HELP, stdout);
            if (next && !strcmp(next, "all")) fputs(HELP_ALL, stdout);
            return 0;
        } else if (!strcmp(a, "--version")) {
            printf("voxtral %s (%s)\n", VOXTRAL_VERSION,
                   vox_cuda_built() ? "CPU and CUDA backends" : "CPU backend; built without CUDA");
            return 0;
        } else if (!strcmp(a, "-d")) {
            NEED_ARG();
            o->dir = next;
        } else if (!strcmp(a, "-i")) {
            NEED_ARG();
            o->inputs[o->n_inputs++] = next;
        } else if (!strcmp(a, "-otxt")) {
            o->outputs |= CLI_OTXT;
        } else if (!strcmp(a, "-osrt")) {
            o->outputs |= CLI_OSRT;
        } else if (!strcmp(a, "-ovtt")) {
            o->outputs |= CLI_OVTT;
        } else if (!strcmp(a, "-ojson")) {
            o->outputs |= CLI_OJSON;
        } else if (!strcmp(a, "-of")) {
            NEED_ARG();
            o->of = next;
        } else if (!strcmp(a, "-nt") || !strcmp(a, "--no-timestamps")) {
            o->timestamps = 0;
        } else if (!strcmp(a, "--timestamps")) {
            o->timestamps = 1;
        } else if (!strcmp(a, "-pp") || !strcmp(a, "--progress")) {
            o->progress = 1;
        } else if (!strcmp(a, "-ml")) {
            NEED_ARG();
            if (parse_long(next, 1, 100000, &v)) return usage_error("-ml %s: must be 1..100000 characters%s", next, "");
            o->max_len = (int)v;
        } else if (!strcmp(a, "--stdin")) {
            o->use_stdin = 1;
        } else if (!strcmp(a, "--continuous")) {
            o->continuous = 1;
        } else if (!strcmp(a, "-I")) {
            NEED_ARG();
            char *end;
            o->interval = strtod(next, &end);
            if (*end || !(o->interval >= 0.01 && o->interval <= 60))
                return usage_error("-I %s: must be 0.01..60 seconds%s", next, "");
        } else if (!strcmp(a, "--mic")) {
            o->use_mic = 1;
        } else if (!strcmp(a, "--device")) {
            NEED_ARG();
            o->device = next;
        } else if (!strcmp(a, "--list-devices")) {
            o->list_devices = 1;
        } else if (!strcmp(a, "--check")) {
            o->check = 1;
        } else if (!strcmp(a, "--delay")) {
            NEED_ARG();
            if (parse_long(next, 80, 2400, &v) || v % 80)
                return usage_error("--delay %s: must be 80..2400 ms in steps of 80%s", next, "");
            o->opt.delay_ms = (int)v;
        } else if (!strcmp(a, "--backend")) {
            NEED_ARG();
            if (strcmp(next, "auto") && strcmp(next, "cpu") && strcmp(next, "cuda"))
                return usage_error("--backend %s: use auto, cpu or cuda%s", next, "");
            o->opt.backend = next;
        } else if (!strcmp(a, "--gpu-path")) {
            NEED_ARG();
            if (strcmp(next, "auto") && strcmp(next, "bf16") && strcmp(next, "fp16") && strcmp(next, "fp32"))
                return usage_error("--gpu-path %s: use auto, bf16, fp16 or fp32%s", next, "");
            o->opt.gpu_path = next;
        } else if (!strcmp(a, "--quant")) {
            NEED_ARG();
            if (vox_quant_spec_check(next) != 0) return usage_error("--quant: %s%s", vox_last_error(), "");
            o->opt.quant = next;
        } else if (!strcmp(a, "--kv-window")) {
            NEED_ARG();
            if (parse_long(next, 1, 1 << 24, &v))
                return usage_error("--kv-window %s: must be a number of decoder positions, 1..16777216%s", next, "");
            o->opt.kv_window = (int)v;
        } else if (!strcmp(a, "--kv-dtype")) {
            NEED_ARG();
            if (strcmp(next, "f32") && strcmp(next, "bf16")) return usage_error("--kv-dtype %s: use f32 or bf16%s", next, "");
            o->opt.kv_dtype = next;
        } else if (!strcmp(a, "--quantize")) {
            NEED_ARG();
            o->quantize_out = next;
        } else if (!strcmp(a, "-t")) {
            NEED_ARG();
            if (parse_long(next, 1, 1024, &v)) return usage_error("-t %s: must be a thread count 1..1024%s", next, "");
            o->opt.threads = (int)v;
        } else if (!strcmp(a, "--json")) {
            o->json = 1;
        } else if (!strcmp(a, "--topk")) {
            NEED_ARG();
            if (parse_long(next, 1, 1024, &v)) return usage_error("--topk %s: must be 1..1024%s", next, "");
            o->topk = (int)v;
        } else if (!strcmp(a, "--force-tokens")) {
            NEED_ARG();
            o->forced_path = next;
        } else if (!strcmp(a, "--bench")) {
            o->bench = 1;
        } else if (!strcmp(a, "--quiet")) {
            o->opt.verbose = 0;
        } else if (!strcmp(a, "--verbose")) {
            o->opt.verbose = 2;
        } else if (a[0] == '-' && a[1]) {
            return usage_error("unknown option '%s' (see --help)%s", a, "");
        } else {
            o->inputs[o->n_inputs++] = a; /* a positional file */
        }
#undef NEED_ARG
    }
    if (o->list_devices || o->check || o->quantize_out) return -1; /* no input needed */
    if (o->topk && !o->json) return usage_error("--topk needs --json (the logits are only in the JSON)%s%s", "", "");
    if (((o->n_inputs > 0) + o->use_stdin + o->use_mic) != 1)
        return usage_error("need exactly one of -i FILE... / --stdin / --mic (see --help)%s%s", "", "");
    int dash = 0;
    for (int i = 0; i < o->n_inputs; i++) dash += !strcmp(o->inputs[i], "-");
    if (dash > 1) return usage_error("-i - (stdin) can be given once%s%s", "", "");
    if (o->json && o->n_inputs > 1) return usage_error("--json takes one input (use -ojson for several)%s%s", "", "");
    o->quiet = o->opt.verbose == 0;
    return -1;
}
