/*
 * chan.c - frames over a stream socket: plumbing that never touches Lua.
 *
 * A frame is a 4-byte little-endian payload length, a type byte and the
 * payload.
 * The parent's ends are non-blocking and driven by the loop; the child's
 * end is blocking. Writes use send(MSG_NOSIGNAL) so a peer that died is an
 * EPIPE, never a SIGPIPE.
 */
#include <errno.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "orch.h"

int chan_frame_begin(wbuf *b, int type, size_t *start)
{
    if (wbuf_reserve(b, FRAME_HEADER) < 0)
        return -1;
    *start = b->len;
    b->data[b->len + 4] = (char)type;
    b->len += FRAME_HEADER;
    return 0;
}

int chan_frame_end(wbuf *b, size_t start)
{
    size_t n = b->len - start - FRAME_HEADER;
    if (n > FRAME_MAX)
        return -1;
    unsigned char *h = (unsigned char *)b->data + start;
    h[0] = (unsigned char)(n & 0xff);
    h[1] = (unsigned char)((n >> 8) & 0xff);
    h[2] = (unsigned char)((n >> 16) & 0xff);
    h[3] = (unsigned char)((n >> 24) & 0xff);
    return 0;
}

int chan_frame_peek(const wbuf *b, int *type, const char **payload, size_t *plen)
{
    size_t avail = b->len - b->off;
    if (avail < FRAME_HEADER)
        return 0;
    const unsigned char *h = (const unsigned char *)b->data + b->off;
    size_t n = (size_t)h[0] | (size_t)h[1] << 8 | (size_t)h[2] << 16 | (size_t)h[3] << 24;
    if (n > FRAME_MAX)
        return -1;
    if (avail - FRAME_HEADER < n)
        return 0;
    *type = h[4];
    *payload = (const char *)h + FRAME_HEADER;
    *plen = n;
    return 1;
}

int chan_flush(int fd, wbuf *b)
{
    while (b->off < b->len) {
        ssize_t n = send(fd, b->data + b->off, b->len - b->off, MSG_NOSIGNAL | MSG_DONTWAIT);
        if (n > 0) {
            b->off += (size_t)n;
            continue;
        }
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
            wbuf_compact(b);
            return 1;
        }
        return -1;
    }
    wbuf_reset(b);
    return 0;
}

ssize_t chan_fill(int fd, wbuf *b, size_t max)
{
    size_t want = 64 * 1024;
    /* A frame that announces its size gets room for all of it at once. */
    if (b->len - b->off >= FRAME_HEADER) {
        const unsigned char *h = (const unsigned char *)b->data + b->off;
        size_t n = (size_t)h[0] | (size_t)h[1] << 8 | (size_t)h[2] << 16 | (size_t)h[3] << 24;
        size_t have = b->len - b->off - FRAME_HEADER;
        if (n <= FRAME_MAX && n > have && n - have > want)
            want = n - have;
    }
    if (want > max)
        want = max;
    if (wbuf_reserve(b, want) < 0) {
        errno = ENOMEM;
        return -1;
    }
    for (;;) {
        ssize_t n = read(fd, b->data + b->len, b->cap - b->len < want ? b->cap - b->len : want);
        if (n < 0 && errno == EINTR)
            continue;
        if (n > 0)
            b->len += (size_t)n;
        return n;
    }
}

int chan_write_all(int fd, const char *p, size_t n)
{
    while (n > 0) {
        ssize_t w = write(fd, p, n);
        if (w < 0) {
            if (errno == EINTR)
                continue;
            return -1;
        }
        p += w;
        n -= (size_t)w;
    }
    return 0;
}
