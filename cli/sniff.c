/* cli/sniff.c - recognises common audio/video containers and text by their first
 * bytes, so `--stdin` can refuse what is not WAV or raw PCM (instead of decoding
 * it as noise) and `-i` can name a format libsndfile does not read.
 *
 * Raw s16le PCM can begin with any bytes, so only signatures that raw audio is
 * very unlikely to hold count: magic strings (ID3, fLaC, OggS, ftyp, the EBML
 * id), an MPEG audio frame header only when a second valid header follows at
 * the length the first one gives, and text only when every byte of the first
 * 64 (or of all the input, when shorter) is printable. */
#include <string.h>

#include "cli.h"

/* MPEG-1/2 layer III frame length from a 4-byte header, or 0 if not a valid one */
static size_t mp3_frame_len(const unsigned char *h) {
    static const int br1[16] = {0, 32, 40, 48, 56, 64, 80, 96, 112, 128, 160, 192, 224, 256, 320, 0};
    static const int br2[16] = {0, 8, 16, 24, 32, 40, 48, 56, 64, 80, 96, 112, 128, 144, 160, 0};
    static const int sr1[4] = {44100, 48000, 32000, 0};
    if (h[0] != 0xFF || (h[1] & 0xE0) != 0xE0) return 0;
    int version = (h[1] >> 3) & 3, layer = (h[1] >> 1) & 3; /* version 3: MPEG-1, 2: MPEG-2 */
    int bri = h[2] >> 4, sri = (h[2] >> 2) & 3, pad = (h[2] >> 1) & 1;
    if (layer != 1 || (version != 3 && version != 2) || sri == 3) return 0;
    int br = (version == 3 ? br1 : br2)[bri] * 1000, sr = sr1[sri] / (version == 3 ? 1 : 2);
    if (!br) return 0;
    return (size_t)((version == 3 ? 144 : 72) * br / sr + pad);
}

const char *cli_sniff(const unsigned char *b, size_t n, int at_eof) {
    if (n >= 3 && !memcmp(b, "ID3", 3)) return "MP3";
    if (n >= 4 && !memcmp(b, "fLaC", 4)) return "FLAC";
    if (n >= 4 && !memcmp(b, "OggS", 4)) return "Ogg";
    if (n >= 12 && !memcmp(b + 4, "ftyp", 4)) return "MP4/M4A";
    if (n >= 4 && !memcmp(b, "\x1a\x45\xdf\xa3", 4)) return "WebM/Matroska";
    if (n >= 4 && !memcmp(b, "FORM", 4)) return "AIFF";
    if (n >= 4 && !memcmp(b, "ADIF", 4)) return "AAC";
    if (n >= 12 && !memcmp(b, "RIFF", 4) && memcmp(b + 8, "WAVE", 4)) return "RIFF (not WAVE)";
    if (n >= 4) {
        size_t len = mp3_frame_len(b);
        if (len >= 4 && len + 4 <= n && mp3_frame_len(b + len)) return "MP3";
        /* AAC in ADTS frames: sync 0xFFF, layer 0, then a frame length; a second header must follow */
        if (n >= 7 && b[0] == 0xFF && (b[1] & 0xF6) == 0xF0) {
            size_t fl = (size_t)(b[3] & 3) << 11 | (size_t)b[4] << 3 | b[5] >> 5;
            if (fl >= 7 && fl + 2 <= n && b[fl] == 0xFF && (b[fl + 1] & 0xF6) == 0xF0) return "AAC";
        }
    }
    size_t look = n < 64 ? n : 64;
    if (look > 0 && (look == 64 || at_eof)) {
        size_t i = 0;
        while (i < look && (b[i] == '\t' || b[i] == '\n' || b[i] == '\r' || (b[i] >= 0x20 && b[i] < 0x7F))) i++;
        if (i == look) return "text";
    }
    return NULL;
}
