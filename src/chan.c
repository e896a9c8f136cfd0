/*
 * chan.c - a framed endpoint: the one place frames are made, found and
 * moved, for the parent's end of a child's channel (proc.c) and the
 * child's end (worker.c) alike.
 *
 * A frame is a 4-byte little-endian payload length, a type byte and the
 * payload. A chan reads frames into `in` from rfd and writes `out` to wfd.
 * The parent's fds are non-blocking and driven by the loop (chan_flush,
 * chan_fill); the child's are blocking (chan_flush_blocking, chan_fill_spin
 * then chan_fill). Socket writes use send(MSG_NOSIGNAL), so a parent whose
 * child died sees EPIPE, never SIGPIPE; the child writes to a pipe, and
 * once the parent's end is closed a write raises SIGPIPE, as it would for
 * any process.
 *
 * Invariants:
 * - At most one frame is open (being encoded) in `out`, and it is last.
 *   An open frame never leaves: whatever writes, measures or opens the
 *   next frame first drops it (a failed encode raised in the middle).
 * - A consumed frame's bytes stay where they are until the buffer is next
 *   filled, so a payload being decoded stays valid while callbacks run.
 *
 * The plumbing returns 0 / -1 and never touches Lua; the last section
 * (chan_enc_*) is the binding that encodes Lua values into a frame and
 * raises.
 */
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "orch.h"

#define FILL_CHUNK (64 * 1024)

void chan_init(chan *c, int rfd, int wfd)
{
    memset(c, 0, sizeof *c);
    c->rfd = rfd;
    c->wfd = wfd;
}

void chan_close_fds(chan *c)
{
    if (c->rfd >= 0)
        close(c->rfd);
    if (c->wfd >= 0 && c->wfd != c->rfd)
        close(c->wfd);
    c->rfd = c->wfd = -1;
}

void chan_close(chan *c)
{
    chan_close_fds(c);
    wbuf_free(&c->out);
    c->frame_open = 0;
}

void chan_free(chan *c)
{
    chan_close(c);
    wbuf_free(&c->in);
}

/* ---- making frames ---------------------------------------------------- */

void chan_rollback(chan *c)
{
    if (c->frame_open) {
        c->out.len = c->out.off + c->frame_at;
        c->frame_open = 0;
    }
}

int chan_frame_begin(chan *c, int type)
{
    chan_rollback(c);
    if (wbuf_reserve(&c->out, FRAME_HEADER) < 0)
        return -1;
    c->frame_at = c->out.len - c->out.off;
    c->out.data[c->out.len + 4] = (char)type;
    c->out.len += FRAME_HEADER;
    c->frame_open = 1;
    return 0;
}

int chan_frame_end(chan *c)
{
    size_t n = c->out.len - c->out.off - c->frame_at - FRAME_HEADER;
    if (n > FRAME_MAX) {
        chan_rollback(c);
        return -1;
    }
    unsigned char *h = (unsigned char *)c->out.data + c->out.off + c->frame_at;
    h[0] = (unsigned char)(n & 0xff);
    h[1] = (unsigned char)((n >> 8) & 0xff);
    h[2] = (unsigned char)((n >> 16) & 0xff);
    h[3] = (unsigned char)((n >> 24) & 0xff);
    c->frame_open = 0;
    return 0;
}

size_t chan_pending(chan *c)
{
    chan_rollback(c);
    return c->out.len - c->out.off;
}

/* ---- finding frames --------------------------------------------------- */

static size_t frame_length(const unsigned char *h)
{
    return (size_t)h[0] | (size_t)h[1] << 8 | (size_t)h[2] << 16 | (size_t)h[3] << 24;
}

int chan_peek(const wbuf *b, int *type, const char **payload, size_t *plen)
{
    size_t avail = b->len - b->off;
    if (avail < FRAME_HEADER)
        return 0;
    const unsigned char *h = (const unsigned char *)b->data + b->off;
    size_t n = frame_length(h);
    if (n > FRAME_MAX)
        return -1;
    if (avail - FRAME_HEADER < n)
        return 0;
    *type = h[4];
    *payload = (const char *)h + FRAME_HEADER;
    *plen = n;
    return 1;
}

void chan_consume(wbuf *b, size_t plen)
{
    b->off += FRAME_HEADER + plen;
    if (b->off == b->len)
        b->off = b->len = 0;
}

/* ---- moving bytes ----------------------------------------------------- */

int chan_flush(chan *c)
{
    chan_rollback(c);
    wbuf *b = &c->out;
    while (b->off < b->len) {
        ssize_t n = send(c->wfd, b->data + b->off, b->len - b->off, MSG_NOSIGNAL | MSG_DONTWAIT);
        if (n > 0) {
            b->off += (size_t)n;
            continue;
        }
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
            return 1;  /* the rest stays where it is: see wbuf_reserve */
        return -1;
    }
    wbuf_reset(b);
    return 0;
}

int chan_flush_blocking(chan *c)
{
    if (c->out.len == c->out.off && !c->frame_open)
        return 0; /* the worker asks before each read: keep it cheap */
    chan_rollback(c);
    wbuf *b = &c->out;
    const char *p = b->data + b->off;
    size_t n = b->len - b->off;
    int rc = 0;
    while (n > 0) {
        ssize_t w = write(c->wfd, p, n);
        if (w < 0) {
            if (errno == EINTR)
                continue;
            rc = -1;
            break;
        }
        p += w;
        n -= (size_t)w;
    }
    wbuf_reset(b);
    return rc;
}

ssize_t chan_fill(chan *c, size_t max)
{
    wbuf *b = &c->in;
    if (b->off == b->len)
        b->off = b->len = 0;
    size_t want = FILL_CHUNK;
    /* A frame that announces its size gets room for all of it at once. */
    if (b->len - b->off >= FRAME_HEADER) {
        size_t n = frame_length((const unsigned char *)b->data + b->off);
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
        ssize_t n = read(c->rfd, b->data + b->len, b->cap - b->len < want ? b->cap - b->len : want);
        if (n < 0 && errno == EINTR)
            continue;
        if (n > 0)
            b->len += (size_t)n;
        return n;
    }
}

ssize_t chan_fill_spin(chan *c, long ns)
{
    wbuf *b = &c->in;
    if (b->off == b->len)
        b->off = b->len = 0;
    struct timespec t0, t;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    for (;;) {
        if (wbuf_reserve(b, FILL_CHUNK) < 0) {
            errno = ENOMEM;
            return -1;
        }
        ssize_t n = recv(c->rfd, b->data + b->len, b->cap - b->len, MSG_DONTWAIT);
        if (n > 0) {
            b->len += (size_t)n;
            return n;
        }
        if (n == 0 || (errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR))
            return n;
        clock_gettime(CLOCK_MONOTONIC, &t);
        if ((t.tv_sec - t0.tv_sec) * 1000000000L + (t.tv_nsec - t0.tv_nsec) > ns) {
            errno = EAGAIN;
            return -1;
        }
    }
}

/* ---- encoding a frame (binding: raises) ------------------------------- */

void chan_enc_begin(lua_State *L, chan *c, int type, wire_enc *e, int flags)
{
    if (chan_frame_begin(c, type) < 0)
        luaL_error(L, "orch: not enough memory for a frame");
    wire_enc_begin(e, L, &c->out, flags);
}

void chan_enc_end(lua_State *L, chan *c, wire_enc *e)
{
    wire_enc_end(e);
    if (chan_frame_end(c) < 0)
        luaL_error(L, "orch: a frame is larger than 2 GiB");
}

void chan_enc_values(lua_State *L, chan *c, int type, int first, int flags)
{
    int n = lua_gettop(L);
    wire_enc e;
    chan_enc_begin(L, c, type, &e, flags);
    char root[32];
    for (int i = first; i <= n; i++) {
        snprintf(root, sizeof root, "value[%d]", i - first + 1);
        wire_enc_value(&e, i, root);
    }
    chan_enc_end(L, c, &e);
}
