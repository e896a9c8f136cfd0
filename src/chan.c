/*
 * chan.c - a framed endpoint: the one place frames are made, found and
 * moved, for the parent's end of a child's channel (proc.c) and the
 * child's end (worker.c) alike.
 *
 * A frame is a 4-byte little-endian payload length, a type byte and the
 * payload. A chan reads frames into `in` from rfd and writes `out` to wfd.
 * The parent's fds are non-blocking and driven by the loop (chan_flush,
 * chan_fill); the child's are blocking (chan_flush_blocking, chan_fill_spin
 * then chan_fill). The parent writes to a socket with send(MSG_NOSIGNAL),
 * so a parent whose child died sees EPIPE, never SIGPIPE; the child
 * writes to a pipe with write(), and once the parent's end is closed a
 * write raises SIGPIPE, as it would for any process.
 *
 * Limits: a frame read is refused past max_in bytes of payload (and no
 * more than that is ever reserved for it), a frame made past max_out;
 * both are FRAME_MAX unless set (a pool's max_message).
 *
 * Big frames: a frame whose payload is big_min bytes or more (BIG_MIN,
 * 512 KiB: below it the copies through the channel cost less), on a channel
 * with a Unix socket, leaves as a big frame: a 4-byte length of
 * FRAME_BIG | 8, the type byte, and the payload's real length (8 bytes,
 * little-endian); the payload itself is in a sealed memfd (memfd.c) whose
 * fd crosses the socket. The parent writes to the socket: the fd rides
 * in band, on the big frame's first byte. The child writes to a pipe: it
 * sends the fd on its socket, on a byte of its own, before the frame
 * leaves, and the parent takes it from there when it meets the frame.
 * Either way the n-th big frame read goes with the n-th fd received. The
 * reader checks the fd (memfd.c) and reads the payload in; the real
 * length answers to max_in as a plain frame's does. A memfd that cannot
 * be made leaves the frame as it is (the bytes through the channel).
 *
 * The parent's big frames go in the channel's shared memfd (memfd.c)
 * when the child is done with the last one: length BIG_SHARED, the
 * payload at MEMFD_SHARED_AT in the memfd whose fd comes with the frame.
 * The child reads it in, as it does a sealed one, and lets the payload go
 * once read. A small frame from the parent drops the shared memfd: it is
 * kept while big frames follow each other. Only the child's end reads
 * these frames; the parent's refuses them.
 *
 * Lanes (lane.c): a channel made by proc.c has a shared-memory ring each
 * way beside its fds. While the reader of one is awake, the writer puts
 * all it has to send there as one record (the parent: all of out, if no
 * big frame's fd waits and wfd holds no part of a frame; the child: its
 * frames of one flush), and a wake frame (MSG_WAKE, no payload) follows
 * through the fd if the reader fell asleep meanwhile; chan_next swallows
 * it. Reading merges the records with the fd's bytes by their place in
 * the stream (wire_in, wire_out): chan_fill takes the records due, reads
 * the fd no further than the next one's place, and places those put
 * while it was in read(). The reader says when it is awake (chan_wake)
 * and when it is about to sleep (chan_sleep).
 *
 * Invariants:
 * - At most one frame is open (being encoded) in `out`, and it is last.
 *   An open frame never leaves. It is either being encoded or left by an
 *   encode that raised, and only chan_flush (the parent's loop, which
 *   never runs inside an encode) and an explicit chan_rollback drop it.
 * - A frame encoded while another is open (sent from a finalizer that ran
 *   during that encode, or after an encode raised) is made aside, then
 *   kept in `later`, which follows the open frame once it is closed
 *   (chan_frame_end), or goes out first at the next flush. So the open
 *   frame's bytes never move or change under its encoder.
 * - A buffer that grew past what wbuf keeps is given back once drained:
 *   `in` before it is next filled, `out` once written.
 * - A consumed frame's bytes stay where they are until the buffer is next
 *   filled, so a payload being decoded stays valid while callbacks run.
 *
 * This file is plumbing: it returns 0 / -1 and never touches Lua.
 * chan_enc.c is the binding that encodes Lua values into a frame and
 * raises.
 */
#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "orch.h"

#define FILL_CHUNK (64 * 1024)
/* While a lane is awake, a spinning read looks at rfd once in this many
 * tries: frames come there only when they did not fit on the lane. */
#define SPIN_WIRE_EVERY 16
#define FRAME_BIG 0x80000000u /* in the length word: the payload is in a memfd */
#define BIG_SEALED (FRAME_BIG | 8)      /* a sealed memfd, its fd with the frame */
#define BIG_SHARED (FRAME_BIG | 9)      /* the writer's shared memfd, an fd of it with the frame */
#define BIG_HEADER (FRAME_HEADER + 8)
#define BIG_MIN (512u << 10) /* payloads this big or more go in a memfd */

/* What chan_next knows of the head of `in`. */
enum {
    HEAD_NONE,    /* nothing: look */
    HEAD_BIG,     /* a big frame, read in, not taken yet */
    HEAD_REFUSED, /* a big frame refused (c->why), not taken yet */
    HEAD_TAKEN    /* the big frame taken; its payload stays until the next look */
};

static int is_socket(int fd)
{
    struct stat st;
    return fd >= 0 && fstat(fd, &st) == 0 && S_ISSOCK(st.st_mode);
}

void chan_init(chan *c, int rfd, int wfd)
{
    memset(c, 0, sizeof *c);
    c->rfd = rfd;
    c->wfd = wfd;
    c->sock = is_socket(wfd) ? wfd : is_socket(rfd) ? rfd : -1;
    c->max_in = c->max_out = FRAME_MAX;
    c->big_min = BIG_MIN;
    c->shared.fd = -1;
}

/* Closes both fds and those queued either way; writes nothing to c. */
static void close_stream_fds(const chan *c)
{
    if (c->rfd >= 0)
        close(c->rfd);
    if (c->wfd >= 0 && c->wfd != c->rfd)
        close(c->wfd);
    for (int k = 0; k < c->n_in_fds; k++)
        close(c->in_fds[k]);
    for (int k = 0; k < c->n_out_fds; k++)
        close(c->out_fds[k].fd);
}

void chan_set_lanes(chan *c, lane *pair, int k, int own)
{
    c->tx = lane_at(pair, k);
    c->rx = lane_at(pair, 1 - k);
    c->lanes = own ? pair : NULL;
}

static void free_lanes(chan *c)
{
    lane_pair_free(c->lanes);
    c->lanes = c->rx = c->tx = NULL;
}

/* c's stream fds as closed. */
static void forget_stream_fds(chan *c)
{
    c->rfd = c->wfd = c->sock = -1;
    c->n_in_fds = c->n_out_fds = 0;
}

void chan_close_fds(chan *c)
{
    close_stream_fds(c);
    forget_stream_fds(c);
    memfd_shared_close(&c->shared);
}

void chan_close_inherited(const chan *c)
{
    close_stream_fds(c);
    if (c->shared.fd >= 0)
        close(c->shared.fd);
}

void chan_forget(chan *c)
{
    forget_stream_fds(c);
    memfd_shared_forget(&c->shared);
    c->lanes = c->rx = c->tx = NULL;
}

void chan_close(chan *c)
{
    chan_close_fds(c);
    free_lanes(c);
    wbuf_free(&c->later);
    if (!c->frame_open) /* else an encoder may still be writing there */
        wbuf_free(&c->out);
}

static void free_head(chan *c)
{
    memfd_payload_free(c->big);
    c->big = NULL;
    c->big_len = 0;
    c->head = HEAD_NONE;
}

void chan_drop_in(chan *c)
{
    c->in.off = c->in.len;
    if (c->head == HEAD_BIG || c->head == HEAD_REFUSED)
        free_head(c);
}

void chan_free_in(chan *c)
{
    free_head(c);
    wbuf_free(&c->in);
}

void chan_free(chan *c)
{
    chan_close_fds(c);
    free_lanes(c);
    wbuf_free(&c->later);
    wbuf_free(&c->out);
    c->frame_open = 0;
    chan_free_in(c);
}

void chan_drop_out(chan *c)
{
    for (int k = 0; k < c->n_out_fds; k++)
        close(c->out_fds[k].fd);
    c->n_out_fds = 0;
    wbuf_reset(&c->out);
}

/* ---- making frames ---------------------------------------------------- */

static void put_length(wbuf *b, size_t at, size_t n)
{
    unsigned char *h = (unsigned char *)b->data + at;
    h[0] = (unsigned char)(n & 0xff);
    h[1] = (unsigned char)((n >> 8) & 0xff);
    h[2] = (unsigned char)((n >> 16) & 0xff);
    h[3] = (unsigned char)((n >> 24) & 0xff);
}

/* Appends a header for a frame of this type to b; the length comes later. */
static int put_header(wbuf *b, int type)
{
    if (wbuf_reserve(b, FRAME_HEADER) < 0)
        return -1;
    b->data[b->len + 4] = (char)type;
    b->len += FRAME_HEADER;
    return 0;
}

/* Appends b[off..len) to dst. 0, or -1 (ENOMEM: dst unchanged). */
static int append(wbuf *dst, const wbuf *b)
{
    size_t n = b->len - b->off;
    if (n == 0)
        return 0;
    if (wbuf_reserve(dst, n) < 0)
        return -1;
    memcpy(dst->data + dst->len, b->data + b->off, n);
    dst->len += n;
    return 0;
}

/* The frames made aside join out, after its whole frames (kept aside if
 * memory is short: the next chance takes them). */
static void take_later(chan *c)
{
    if (c->later.len > c->later.off && !c->frame_open && append(&c->out, &c->later) == 0)
        wbuf_reset(&c->later);
}

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
    take_later(c);
    c->frame_at = c->out.len - c->out.off; /* from off: a reserve may compact */
    if (put_header(&c->out, type) < 0)
        return -1;
    c->frame_open = 1;
    return 0;
}

static void put_u64(unsigned char *p, uint64_t v)
{
    for (int k = 0; k < 8; k++)
        p[k] = (unsigned char)(v >> (8 * k));
}

/* The payload of the frame at `at` (from out.off), the last in out: its
 * bytes in out with the strings left out of it (ext[], n_ext) in their
 * places, as pieces in v (room for 2 * WIRE_EXTS + 1). Their count. */
static int payload_pieces(chan *c, size_t at, const wire_ext *ext, int n_ext,
                          struct iovec *v)
{
    char *base = c->out.data + c->out.off;
    size_t from = at + FRAME_HEADER, end = c->out.len - c->out.off;
    int nv = 0;
    for (int k = 0; k <= n_ext; k++) {
        size_t to = k < n_ext ? ext[k].at : end;
        if (to > from)
            v[nv++] = (struct iovec){base + from, to - from};
        if (k < n_ext)
            v[nv++] = (struct iovec){(void *)ext[k].p, ext[k].n};
        from = to;
    }
    return nv;
}

/* The frame at `at` (from out.off), the last in out, n bytes of payload
 * (with ext[]), becomes a big frame if its payload can go in the shared
 * memfd (the parent) or a sealed one made for it, and the fd, if any, be
 * sent: the parent queues it for chan_flush, the child sends it now,
 * before the frame. 1, or 0 (the frame as it was). */
static int make_big(chan *c, size_t at, size_t n, const wire_ext *ext, int n_ext)
{
    int inband = c->sock == c->wfd;
    if (c->sock < 0 || (inband && c->n_out_fds == CHAN_FDS))
        return 0;
    struct iovec v[2 * WIRE_EXTS + 1] = {{0}};
    int nv = payload_pieces(c, at, ext, n_ext, v);
    uint32_t form = BIG_SEALED;
    int fd;
    if (c->share_out && inband && memfd_shared_put(&c->shared, v, nv, n, &fd) == 0)
        form = BIG_SHARED;
    else if ((fd = memfd_from(v, nv)) < 0)
        return 0;
    if (inband) {
        c->out_fds[c->n_out_fds].ahead = at;
        c->out_fds[c->n_out_fds++].fd = fd;
    } else {
        int rc = memfd_send(c->sock, fd);
        close(fd);
        if (rc < 0)
            return 0;
    }
    unsigned char *h = (unsigned char *)c->out.data + c->out.off + at;
    put_length(&c->out, c->out.off + at, form);
    put_u64(h + FRAME_HEADER, n);
    c->out.len = c->out.off + at + BIG_HEADER;
    return 1;
}

/* The strings left out of the frame that ends out (ext[], n_ext, extra
 * bytes in all) copied into their places. 0, or -1 (ENOMEM: out as it
 * was). */
static int take_in_ext(chan *c, const wire_ext *ext, int n_ext, size_t extra)
{
    if (wbuf_reserve(&c->out, extra) < 0)
        return -1;
    char *base = c->out.data + c->out.off;
    size_t end = c->out.len - c->out.off, shift = extra;
    for (int k = n_ext - 1; k >= 0; k--) {
        memmove(base + ext[k].at + shift, base + ext[k].at, end - ext[k].at);
        shift -= ext[k].n;
        memcpy(base + ext[k].at + shift, ext[k].p, ext[k].n);
        end = ext[k].at;
    }
    c->out.len += extra;
    return 0;
}

int chan_frame_end_ext(chan *c, const wire_ext *ext, int n_ext)
{
    size_t extra = 0;
    for (int k = 0; k < n_ext; k++)
        extra += ext[k].n;
    size_t n = c->out.len - c->out.off - c->frame_at - FRAME_HEADER + extra;
    if (n > c->max_out) {
        chan_rollback(c);
        return -1;
    }
    int wants_big = c->big_min > 0 && n >= c->big_min;
    if (!wants_big && c->shared.fd >= 0)
        memfd_shared_close(&c->shared); /* big frames stopped: its pages go */
    if (!wants_big || !make_big(c, c->frame_at, n, ext, n_ext)) {
        if (n_ext > 0 && take_in_ext(c, ext, n_ext, extra) < 0) {
            chan_rollback(c);
            return -2;
        }
        put_length(&c->out, c->out.off + c->frame_at, n);
    }
    c->frame_open = 0;
    c->out_end = c->out_sent + (c->out.len - c->out.off);
    take_later(c);
    return 0;
}

int chan_frame_end(chan *c)
{
    return chan_frame_end_ext(c, NULL, 0);
}

int chan_aside_begin(wbuf *b, int type)
{
    return put_header(b, type);
}

int chan_aside_end(chan *c, wbuf *b)
{
    size_t n = b->len - FRAME_HEADER;
    if (n > c->max_out)
        return -1;
    put_length(b, 0, n);
    if (append(&c->later, b) < 0)
        return -2;
    c->out_end = 0; /* where it will be is not known yet */
    take_later(c);
    return 0;
}

size_t chan_pending(chan *c)
{
    size_t end = c->frame_open ? c->out.off + c->frame_at : c->out.len;
    return end - c->out.off + (c->later.len - c->later.off);
}

/* ---- finding frames --------------------------------------------------- */

static size_t frame_length(const unsigned char *h)
{
    return (size_t)h[0] | (size_t)h[1] << 8 | (size_t)h[2] << 16 | (size_t)h[3] << 24;
}

int chan_peek(const wbuf *b, int *type, const char **payload, size_t *plen)
{
    return chan_peek_max(b, FRAME_MAX, type, payload, plen);
}

int chan_peek_max(const wbuf *b, size_t max, int *type, const char **payload, size_t *plen)
{
    size_t avail = b->len - b->off;
    if (avail < FRAME_HEADER)
        return 0;
    const unsigned char *h = (const unsigned char *)b->data + b->off;
    size_t n = frame_length(h);
    *type = h[4];
    if (n > max)
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

static uint64_t get_u64(const unsigned char *p)
{
    uint64_t v = 0;
    for (int k = 7; k >= 0; k--)
        v = v << 8 | p[k];
    return v;
}

/* The fd of the next big frame: received already (the child), or waiting
 * on the socket (the parent). -1 with c->why when there is none. */
static int next_fd(chan *c)
{
    if (c->sock >= 0 && c->sock == c->rfd) {
        if (c->n_in_fds == 0) {
            c->why = "big frame: no file descriptor came with it";
            return -1;
        }
        int fd = c->in_fds[0];
        memmove(c->in_fds, c->in_fds + 1, sizeof c->in_fds[0] * (size_t)--c->n_in_fds);
        return fd;
    }
    if (c->sock < 0) {
        c->why = "big frame: no file descriptor came with it";
        return -1;
    }
    return memfd_recv(c->sock, &c->why);
}

/* The big frame whose header is at h (its 8 bytes there): its fd taken
 * and its payload read in, from a sealed memfd or the writer's shared
 * memfd (shared: the child's end). HEAD_BIG, HEAD_REFUSED (c->why), or -1
 * for a length over max_in (the fd closed: the channel is out of sync). */
static int read_big(chan *c, const unsigned char *h, int shared)
{
    uint64_t n = get_u64(h + FRAME_HEADER);
    int fd = next_fd(c);
    if (n > c->max_in) {
        if (fd >= 0)
            close(fd);
        return -1;
    }
    if (fd < 0)
        return HEAD_REFUSED;
    int r = shared ? memfd_read_shared(fd, (size_t)n, &c->big, &c->why)
                   : memfd_read(fd, (size_t)n, &c->big, &c->why);
    if (r < 0)
        return HEAD_REFUSED;
    c->big_len = (size_t)n;
    return HEAD_BIG;
}

int chan_next(chan *c, int *type, const char **payload, size_t *plen)
{
    if (c->head == HEAD_TAKEN)
        free_head(c);
    wbuf *b = &c->in;
    const unsigned char *h = (const unsigned char *)b->data + b->off;
    if (c->head == HEAD_NONE) {
        size_t n;
        for (;;) {
            if (b->len - b->off < FRAME_HEADER)
                return 0;
            h = (const unsigned char *)b->data + b->off;
            n = frame_length(h);
            if (n != 0 || h[4] != MSG_WAKE)
                break;
            chan_consume(b, 0); /* a wake frame did its work by coming */
        }
        if (!(n & FRAME_BIG)) {
            int r = chan_peek_max(b, c->max_in, type, payload, plen);
            if (r == 1)
                c->head_len = FRAME_HEADER + *plen;
            return r;
        }
        *type = h[4];
        int child = c->sock >= 0 && c->sock == c->rfd;
        if (n != BIG_SEALED && !(child && n == BIG_SHARED))
            return -1; /* no frame has that length: the stream is out of sync */
        if (b->len - b->off < BIG_HEADER)
            return 0;
        int r = read_big(c, h, n == BIG_SHARED);
        if (r < 0)
            return -1;
        c->head = r;
        c->head_len = BIG_HEADER;
    }
    *type = h[4];
    if (c->head == HEAD_REFUSED)
        return -2;
    *payload = c->big ? (const char *)c->big : "";
    *plen = c->big_len;
    return 1;
}

void chan_take(chan *c)
{
    wbuf *b = &c->in;
    b->off += c->head_len;
    if (b->off == b->len)
        b->off = b->len = 0;
    c->head = c->head == HEAD_BIG ? HEAD_TAKEN : HEAD_NONE;
}

/* ---- moving bytes ----------------------------------------------------- */

/* n bytes of out were sent (the first big frame's fd with them if
 * with_fd): the fds queued are that much nearer. */
static void sent(chan *c, size_t n, int with_fd)
{
    if (with_fd) {
        close(c->out_fds[0].fd);
        memmove(c->out_fds, c->out_fds + 1, sizeof c->out_fds[0] * (size_t)--c->n_out_fds);
    }
    for (int k = 0; k < c->n_out_fds; k++)
        c->out_fds[k].ahead -= n;
    c->out.off += n;
    c->out_sent += n;
    c->wire_out += n;
}

static const char wake_frame[FRAME_HEADER] = {0, 0, 0, 0, MSG_WAKE};

/* All of out (whole frames) put on the lane, if the child is awake for it
 * and wfd holds no part of a frame; a wake frame follows in out if the
 * child fell asleep meanwhile. 1 when it went, else 0 (out as it was). */
static int flush_lane(chan *c)
{
    wbuf *b = &c->out;
    if (!c->tx || c->out_cut || c->n_out_fds > 0 || !lane_awake(c->tx)
        || wbuf_reserve(b, FRAME_HEADER) < 0) /* room for the wake frame */
        return 0;
    struct iovec v = {b->data + b->off, b->len - b->off};
    if (lane_put(c->tx, c->wire_out, &v, 1) < 0)
        return 0;
    c->out_sent += v.iov_len;
    c->lane_out += v.iov_len;
    b->off = b->len = 0;
    if (!lane_still_awake(c->tx)) {
        memcpy(b->data, wake_frame, FRAME_HEADER);
        b->len = FRAME_HEADER;
    }
    return 1;
}

int chan_flush(chan *c)
{
    chan_rollback(c);
    take_later(c);
    wbuf *b = &c->out;
    if (b->off < b->len)
        flush_lane(c);
    while (b->off < b->len) {
        /* up to the next big frame; that one from its first byte, with its fd */
        size_t len = b->len - b->off;
        int fd = c->n_out_fds > 0 && c->out_fds[0].ahead == 0 ? c->out_fds[0].fd : -1;
        if (fd < 0 && c->n_out_fds > 0)
            len = c->out_fds[0].ahead;
        ssize_t n = fd >= 0 ? memfd_send_with(c->wfd, b->data + b->off, len, fd, MSG_DONTWAIT)
                            : send(c->wfd, b->data + b->off, len, MSG_NOSIGNAL | MSG_DONTWAIT);
        if (n > 0) {
            sent(c, (size_t)n, fd >= 0);
            continue;
        }
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
            c->out_cut = 1; /* maybe inside a frame */
            return 1;  /* the rest stays where it is: see wbuf_reserve */
        }
        return -1;
    }
    c->out_cut = 0;
    wbuf_reset(b);
    return 0;
}

static int write_all(chan *c, const char *p, size_t n)
{
    while (n > 0) {
        ssize_t w = write(c->wfd, p, n);
        if (w < 0) {
            if (errno == EINTR)
                continue;
            return -1;
        }
        p += w;
        n -= (size_t)w;
        c->wire_out += (size_t)w;
    }
    return 0;
}

/* The child's frames in v: on the lane while the parent is awake for it
 * (and a wake frame after them if it fell asleep meanwhile), else
 * written. 0, or -1 (errno). */
static int write_frames(chan *c, const struct iovec *v)
{
    if (c->tx && lane_awake(c->tx) && lane_put(c->tx, c->wire_out, v, 2) == 0)
        return lane_still_awake(c->tx) ? 0 : write_all(c, wake_frame, FRAME_HEADER);
    int rc = write_all(c, v[0].iov_base, v[0].iov_len);
    return rc == 0 ? write_all(c, v[1].iov_base, v[1].iov_len) : rc;
}

/* The child. An open frame may be the one a finalizer interrupted (a send
 * from inside an encode): what comes before it goes, and the frames made
 * aside; the open frame stays where it is. */
int chan_flush_blocking(chan *c)
{
    wbuf *b = &c->out;
    if (b->len == b->off && c->later.len == c->later.off)
        return 0; /* the worker asks before each read: keep it cheap */
    size_t end = c->frame_open ? b->off + c->frame_at : b->len;
    struct iovec v[2] = {{b->data + b->off, end - b->off},
                         {c->later.data + c->later.off, c->later.len - c->later.off}};
    int rc = write_frames(c, v);
    wbuf_reset(&c->later);
    if (c->frame_open) {
        b->off = end;
        c->frame_at = 0; /* the open frame now starts at off */
    } else {
        wbuf_reset(b);
    }
    return rc;
}

/* Room for want more bytes in b: a chunk the usual way, or no more than
 * that for a frame that announced its size. */
static int reserve_exact(wbuf *b, size_t want)
{
    return want <= FILL_CHUNK ? wbuf_reserve(b, want) : wbuf_reserve_exact(b, want);
}

/* Reads into p[0..n) (flags: recv's, for a socket). From a socket, with
 * recvmsg: the fds of big frames come with their bytes and are kept, in
 * order, for chan_next. */
static ssize_t read_in(chan *c, char *p, size_t n, int flags)
{
    if (c->sock < 0 || c->sock != c->rfd)
        return flags ? recv(c->rfd, p, n, flags) : read(c->rfd, p, n);
    int fds[CHAN_FDS], nfds;
    ssize_t r = memfd_recv_with(c->rfd, p, n, flags, fds, &nfds, CHAN_FDS);
    for (int k = 0; k < nfds && k < CHAN_FDS; k++) {
        if (c->n_in_fds < CHAN_FDS)
            c->in_fds[c->n_in_fds++] = fds[k];
        else
            close(fds[k]); /* more than frames can use: theirs is refused */
    }
    return r;
}

/* The frames due from the lane, appended to in: bytes, 0, or -1 (errno). */
static ssize_t take_lane(chan *c)
{
    ssize_t n = c->rx ? lane_take(c->rx, &c->in, c->wire_in) : 0;
    if (n > 0)
        c->lane_in += (uint64_t)n;
    return n;
}

/* How much of want may be read from rfd now: no further than where the
 * next record on the lane goes. */
static size_t wire_room(chan *c, size_t want)
{
    uint64_t at;
    if (c->rx && lane_next_at(c->rx, &at) == 1 && at > c->wire_in && at - c->wire_in < want)
        return (size_t)(at - c->wire_in);
    return want;
}

/* n bytes were read from rfd to the end of in: counted, and the records
 * put on the lane meanwhile whose place is inside them moved there. 0, or
 * -1 (errno). */
static int got_wire(chan *c, size_t n)
{
    uint64_t from = c->wire_in;
    c->in.len += n;
    c->wire_in += n;
    ssize_t placed = c->rx ? lane_place(c->rx, &c->in, from, c->wire_in) : 0;
    if (placed > 0)
        c->lane_in += (uint64_t)placed;
    return placed < 0 ? -1 : 0;
}

void chan_wake(chan *c)
{
    if (c->rx)
        lane_wake(c->rx);
}

int chan_sleep(chan *c)
{
    return c->rx && lane_sleep(c->rx);
}

/* What chan_fill and chan_fill_spin do first: the payload of a big frame
 * taken is let go, an empty `in` that grew large given back, and the
 * frames due on the lane taken. */
static ssize_t fill_begin(chan *c)
{
    if (c->head == HEAD_TAKEN)
        free_head(c);
    if (c->in.off == c->in.len)
        wbuf_reset(&c->in); /* drained: a large buffer is given back */
    ssize_t got = take_lane(c);
    if (got != 0)
        c->in_short = 1; /* nothing said of rfd */
    return got;
}

ssize_t chan_fill(chan *c, size_t max)
{
    wbuf *b = &c->in;
    ssize_t got = fill_begin(c);
    if (got != 0)
        return got;
    size_t want = FILL_CHUNK;
    /* A frame that announces its size gets room for all of it at once,
     * within the limit: one over it is refused (chan_peek_max) unread. */
    if (b->len - b->off >= FRAME_HEADER) {
        size_t n = frame_length((const unsigned char *)b->data + b->off);
        size_t have = b->len - b->off - FRAME_HEADER;
        if (n <= c->max_in && n > have && n - have > want)
            want = n - have;
    }
    if (want > max)
        want = max;
    if (reserve_exact(b, want) < 0) {
        errno = ENOMEM;
        return -1;
    }
    for (;;) {
        size_t ask = wire_room(c, b->cap - b->len < want ? b->cap - b->len : want);
        ssize_t n = read_in(c, b->data + b->len, ask, 0);
        if (n < 0 && errno == EINTR)
            continue;
        c->in_short = n > 0 && (size_t)n < ask;
        if (n > 0 && got_wire(c, (size_t)n) < 0)
            return -1;
        if (n == 0 && (got = take_lane(c)) != 0)
            return got; /* put before the end of the stream */
        return n;
    }
}

/* One read of rfd that does not wait, for chan_fill_spin: bytes, 0 at
 * the end (but for what the lane had before it), -1 with errno. */
static ssize_t read_nowait(chan *c)
{
    wbuf *b = &c->in;
    if (wbuf_reserve(b, FILL_CHUNK) < 0) {
        errno = ENOMEM;
        return -1;
    }
    ssize_t n = read_in(c, b->data + b->len, wire_room(c, b->cap - b->len), MSG_DONTWAIT);
    if (n > 0)
        return got_wire(c, (size_t)n) < 0 ? -1 : n;
    return n == 0 ? take_lane(c) : -1;
}

ssize_t chan_fill_spin(chan *c, long ns)
{
    chan_wake(c); /* from now until chan_sleep, frames may come on the lane */
    struct timespec t0, t;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    for (unsigned tries = 0;; tries++) {
        ssize_t got = fill_begin(c);
        if (got != 0)
            return got;
        if (!c->rx || tries % SPIN_WIRE_EVERY == 0) {
            ssize_t n = read_nowait(c);
            if (n >= 0 || (errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR))
                return n;
        }
        clock_gettime(CLOCK_MONOTONIC, &t);
        if ((t.tv_sec - t0.tv_sec) * 1000000000L + (t.tv_nsec - t0.tv_nsec) > ns) {
            errno = EAGAIN;
            return -1;
        }
    }
}
