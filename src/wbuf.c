/*
 * wbuf.c - growable byte buffers for frames and encodings.
 *
 * A wbuf holds bytes [off, len) that are still to be consumed; writers
 * append at len, readers consume from off. Capacity grows geometrically;
 * a buffer that grew large for one big frame is given back once it is
 * empty again, so one 64 MiB value does not pin 64 MiB for ever.
 */
#include <stdlib.h>
#include <string.h>

#include "orch.h"

#define WBUF_MIN 4096
#define WBUF_KEEP (1u << 20) /* capacity kept across resets */

int wbuf_reserve(wbuf *b, size_t extra)
{
    if (b->cap - b->len >= extra)
        return 0;
    if (b->off > 0) {
        wbuf_compact(b);
        if (b->cap - b->len >= extra)
            return 0;
    }
    if (extra > (size_t)-1 / 2 - b->len)
        return -1;
    size_t need = b->len + extra;
    size_t cap = b->cap ? b->cap : WBUF_MIN;
    while (cap < need)
        cap *= 2;
    char *p = realloc(b->data, cap);
    if (!p)
        return -1;
    b->data = p;
    b->cap = cap;
    return 0;
}

void wbuf_compact(wbuf *b)
{
    if (b->off == 0)
        return;
    size_t n = b->len - b->off;
    if (n)
        memmove(b->data, b->data + b->off, n);
    b->len = n;
    b->off = 0;
}

void wbuf_reset(wbuf *b)
{
    b->len = b->off = 0;
    if (b->cap > WBUF_KEEP) {
        free(b->data);
        b->data = NULL;
        b->cap = 0;
    }
}

void wbuf_free(wbuf *b)
{
    free(b->data);
    b->data = NULL;
    b->len = b->off = b->cap = 0;
}
