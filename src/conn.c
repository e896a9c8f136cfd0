/*
 * conn.c - the parent's end of one child's channel, driven by the loop.
 *
 * A conn is a chan (chan.c) with non-blocking fds and two ev_io watchers.
 * Reading: when the pipe is readable, what is there is read (at most
 * READ_BUDGET bytes a turn, so that one busy child cannot starve the
 * others) and every whole frame is handed to Lua (dispatch.c). Writing:
 * a frame queued with conn_queued waits for the end of the turn; before
 * the loop blocks, every conn with frames queued is written at once (a
 * before-block hook), so many sends in one turn leave in one write; what
 * the socket does not take then is written when it becomes writable. A
 * frame the child is idle for (conn_queued_now) goes at once if it is the
 * first of the turn: the child starts on it while the parent goes on.
 * That conn is then the hot one: the likeliest to answer next, so a step
 * spinning for a reply reads it straight away between its turns of the
 * loop (loop_on_spin), one system call a try instead of two.
 *
 * Invariants:
 * - A conn lives inside a userdata (its holder) that the registry holds
 *   while the conn is open; callbacks reach the holder by that ref.
 * - The queued list holds only open conns: conn_close takes a conn off it.
 *   So is `hot`: an open conn or NULL.
 * - At end of file (or a read error) the conn closes itself; frames read
 *   before it stay in ch.in, already dispatched. So does a frame whose
 *   length is over the limit: the stream is out of sync from there.
 * - `in` is never freed while a read is under way (a callback, or a
 *   finalizer run while a frame is decoded, may close the proc): what is
 *   left in it is dropped then, and it is freed once the read returns. A
 *   drained `in` that grew large for one big frame is given back.
 */
#include <errno.h>
#include <fcntl.h>
#include <stddef.h>

#include <ev.h>

#include "orch.h"

#define READ_BUDGET (8u << 20) /* bytes read per readiness, for fairness */

static conn *queued_head; /* conns with frames written this turn */
static conn *hot;         /* the last one handed a frame its child was idle for */

static void queued_unlink(conn *c)
{
    if (!c->queued)
        return;
    for (conn **pp = &queued_head; *pp; pp = &(*pp)->next_queued) {
        if (*pp == c) {
            *pp = c->next_queued;
            break;
        }
    }
    c->queued = 0;
    c->next_queued = NULL;
}

/* Writes what c holds, as far as the socket takes it now; the rest when
 * it becomes writable. */
static void conn_flush(conn *c)
{
    if (c->ch.wfd < 0 || ev_is_active(&c->wio))
        return;
    int rc = chan_flush(&c->ch);
    if (rc > 0)
        ev_io_start(loop_get(), &c->wio);
    else if (rc < 0)
        chan_drop_out(&c->ch); /* the child is gone: its exit will tell */
}

void conn_queued(conn *c)
{
    if (!c->queued) {
        c->queued = 1;
        c->next_queued = queued_head;
        queued_head = c;
    }
}

/* c stops being the hot conn: its lane is asleep from now on, and what
 * its child put there meanwhile is read in the next turn. */
static void let_go(conn *c)
{
    if (c && c->ch.rx && lane_sleep(c->ch.rx))
        ev_feed_event(loop_get(), &c->rio, EV_READ);
}

void conn_queued_now(conn *c)
{
    if (hot != c) {
        let_go(hot);
        hot = c;
    }
    if (c->ch.rx)
        lane_wake(c->ch.rx); /* its reply may come on the lane */
    if (!c->queued) {
        conn_queued(c);
        conn_flush(c);
    }
}

/* The loop is about to block: write every frame queued this turn. */
static void flush_queued(void)
{
    while (queued_head) {
        conn *c = queued_head;
        queued_head = c->next_queued;
        c->queued = 0;
        c->next_queued = NULL;
        conn_flush(c);
    }
}

static void wio_cb(struct ev_loop *loop, ev_io *w, int revents)
{
    (void)revents;
    conn *c = (conn *)((char *)w - offsetof(conn, wio));
    int rc = chan_flush(&c->ch);
    if (rc <= 0) {
        ev_io_stop(loop, w);
        if (rc < 0)
            chan_drop_out(&c->ch);
    }
}

int conn_read(lua_State *L, conn *c, int hidx, int drain)
{
    size_t budget = drain ? (size_t)-1 : READ_BUDGET;
    int rc = 0;
    c->reading++;
    while (c->ch.rfd >= 0 && budget > 0) {
        ssize_t n = chan_fill(&c->ch, budget);
        if (n > 0) {
            budget -= (size_t)n;
            if (dispatch_frames(L, &c->ch, hidx, c->uv) < 0) {
                conn_close(c); /* out of sync: nothing after it can be read */
                rc = -1;
            }
            /* A short read found the socket empty (or stopped at an fd,
             * whose bytes the next turn reads: the watcher is level
             * triggered); reading again now would only say EAGAIN. */
            if (!drain && c->ch.in_short)
                break;
            continue;
        }
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
            break;
        conn_close(c); /* EOF, ECONNRESET...: the child is gone or going */
        rc = -1;
    }
    if (--c->reading == 0) {
        wbuf *in = &c->ch.in;
        if (c->free_in) {
            chan_free_in(&c->ch);
            c->free_in = 0;
        } else if (in->off == in->len) {
            wbuf_reset(in); /* a large buffer is given back */
        }
    }
    return rc;
}

/* Reads c now, on the thread inside core.step. */
static void read_now(conn *c)
{
    lua_State *L = loop_state();
    lua_rawgeti(L, LUA_REGISTRYINDEX, c->holder); /* keeps c alive */
    conn_read(L, c, lua_gettop(L), 0);
    lua_pop(L, 1);
}

static void rio_cb(struct ev_loop *loop, ev_io *w, int revents)
{
    (void)loop; (void)revents;
    read_now((conn *)((char *)w - offsetof(conn, rio)));
}

/* Reads the hot conn in place of a turn of the loop: the frames queued
 * in the turn that ends leave first, as they would before the loop
 * blocks, so that the next one handed to an idle child goes at once. */
static void read_hot_now(void)
{
    flush_queued();
    read_now(hot);
}

/* A step spinning for a reply, or polling (loop.c): the child last
 * handed a frame it was idle for is the likeliest to answer, so its lane
 * is looked at (without one, its channel is read: nothing there is
 * EAGAIN, and the spin goes on). */
static void read_hot(void)
{
    if (hot && hot->ch.rfd >= 0 && (!hot->ch.rx || lane_has(hot->ch.rx)))
        read_hot_now();
}

/* A step is about to block: the hot conn's child writes from now on, and
 * what it put on the lane meanwhile is read now. */
static void sleep_hot(void)
{
    if (hot && hot->ch.rfd >= 0 && chan_sleep(&hot->ch))
        read_hot_now();
}

void conn_init(conn *c)
{
    chan_init(&c->ch, -1, -1);
    c->holder = LUA_NOREF;
    c->uv = 0;
    c->queued = 0;
    c->next_queued = NULL;
    c->reading = 0;
    c->free_in = 0;
}

void conn_start(conn *c, int holder, int uv)
{
    static int hooked;
    if (!hooked) {
        loop_on_before_block(flush_queued);
        loop_on_spin(read_hot);
        loop_on_sleep(sleep_hot);
        hooked = 1;
    }
    int rfd = c->ch.rfd, wfd = c->ch.wfd;
    fcntl(wfd, F_SETFL, fcntl(wfd, F_GETFL) | O_NONBLOCK);
    fcntl(rfd, F_SETFL, fcntl(rfd, F_GETFL) | O_NONBLOCK);
    c->holder = holder;
    c->uv = uv;
    ev_io_init(&c->rio, rio_cb, rfd, EV_READ);
    ev_io_init(&c->wio, wio_cb, wfd, EV_WRITE);
    ev_io_start(loop_get(), &c->rio);
}

void conn_close(conn *c)
{
    if (c->ch.wfd < 0)
        return;
    struct ev_loop *loop = loop_get();
    ev_io_stop(loop, &c->rio);
    ev_io_stop(loop, &c->wio);
    chan_close(&c->ch);
    queued_unlink(c);
    if (hot == c)
        hot = NULL;
}

void conn_free(conn *c)
{
    conn_close(c);
    chan_drop_in(&c->ch); /* not dispatched: dropped */
    if (c->reading)
        c->free_in = 1; /* a frame of it may be being decoded */
    else
        chan_free_in(&c->ch);
}

void conn_forget_all(void)
{
    queued_head = NULL;
    hot = NULL;
}
