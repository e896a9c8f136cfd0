/*
 * fuzz_lane.c - libFuzzer target over the lane reader (lane.c): the
 * merge of records with the fd's bytes, and what a writer that breaks the
 * rules can make the reader do.
 *
 * An input is a list of steps, one byte each (some take a second byte):
 * the writer puts a chunk on the lane (or writes it to the fd when the
 * lane has no room, as chan.c does), writes a chunk to the fd; the reader
 * goes into a read as chan_fill does (what is due on the lane, else how
 * far the fd may be read: no further than the next record's place), or
 * comes back from it (the fd read, then lane_place for the records put
 * meanwhile; without a read under way, both halves at once). The writer's
 * steps may fall between the two halves, as they may while a reader is in
 * read(). The writer's bytes count up, so whatever the
 * steps, the reader must end with 0, 1, 2, ... in order once all is read.
 *
 * An input whose first byte is odd then plays a writer that breaks the
 * rules: the bytes after the steps are written over the lane's words and
 * ring, and the reader must answer -1 (EPROTO) or take bytes it has room
 * for, never read or write out of bounds (the sanitizers tell).
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../orch.h"

#define WORDS 192             /* lane.c: head, tail and awake, a cache line each */
#define LANE_BYTES (16u << 10) /* lane.c's ring */

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define FD_MAX (1u << 20)

static unsigned char fd_bytes[FD_MAX]; /* what the writer wrote to the "fd" */
static size_t fd_len, fd_read;
static uint64_t wire_out, wire_in, made;

static void fail(const char *what)
{
    fprintf(stderr, "fuzz_lane: %s\n", what);
    abort();
}

static void chunk(unsigned char *p, size_t n)
{
    for (size_t k = 0; k < n; k++)
        p[k] = (unsigned char)(made++ % 251);
}

static void write_fd(const unsigned char *p, size_t n)
{
    memcpy(fd_bytes + fd_len, p, n);
    fd_len += n;
    wire_out += n;
}

/* chan_fill in two halves, so that the writer may put records between
 * them, as it may while the reader is in read(). The first: what is due
 * on the lane, else how far the fd may be read (no further than the next
 * record's place): 0 and *ask, or the bytes taken, or -1. */
static ssize_t fill_begin(lane *l, wbuf *in, size_t want, size_t *ask)
{
    *ask = 0;
    ssize_t got = lane_take(l, in, wire_in);
    if (got != 0)
        return got;
    uint64_t at;
    if (lane_next_at(l, &at) == 1 && at > wire_in && at - wire_in < want)
        want = (size_t)(at - wire_in);
    *ask = want;
    return 0;
}

/* The second: the fd read, then the records whose place is inside what
 * was read. */
static ssize_t fill_end(lane *l, wbuf *in, size_t want)
{
    size_t n = fd_len - fd_read < want ? fd_len - fd_read : want;
    if (n == 0)
        return 0;
    if (wbuf_reserve(in, n) < 0)
        fail("no memory");
    memcpy(in->data + in->len, fd_bytes + fd_read, n);
    fd_read += n;
    in->len += n;
    uint64_t from = wire_in;
    wire_in += n;
    return lane_place(l, in, from, wire_in) < 0 ? -1 : (ssize_t)n;
}

static ssize_t fill(lane *l, wbuf *in, size_t want)
{
    size_t ask;
    ssize_t got = fill_begin(l, in, want, &ask);
    return got != 0 ? got : fill_end(l, in, ask);
}

static void check_order(const wbuf *in)
{
    if (in->len != made)
        fail("bytes lost or made up");
    for (size_t k = 0; k < in->len; k++)
        if ((unsigned char)in->data[k] != k % 251)
            fail("bytes out of order");
}

/* Writes the rest of the input over the lane, as a writer gone wrong
 * could, and asks the reader for what is due: it must refuse or take no
 * more than the ring holds. */
static void hostile(lane *l, wbuf *in, const uint8_t *p, size_t n)
{
    unsigned char *raw = (unsigned char *)l;
    for (size_t k = 0; k + 2 < n; k += 3) {
        size_t at = ((size_t)p[k] << 8 | p[k + 1]) % (WORDS + LANE_BYTES);
        if (k < 24) /* the first ones aim at the words */
            at = (size_t)p[k] % WORDS;
        raw[at] = p[k + 2];
    }
    for (int round = 0; round < 4; round++) {
        size_t m = (size_t)round * 4096 + 1; /* read from the fd, for lane_place */
        if (round % 2 == 0) {
            if (wbuf_reserve(in, m) < 0)
                fail("no memory");
            memset(in->data + in->len, 0, m);
            in->len += m;
        }
        size_t before = in->len;
        ssize_t got = round % 2 ? lane_take(l, in, wire_in + (uint64_t)round * 1000)
                                : lane_place(l, in, wire_in, wire_in + m);
        wire_in += m;
        if (got < 0 && errno != EPROTO && errno != ENOMEM)
            fail("an error that is not EPROTO");
        if (got >= 0 && in->len != before + (size_t)got)
            fail("taken bytes miscounted");
        if (got > (ssize_t)LANE_BYTES * 2)
            fail("more taken than a ring holds");
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static lane *pair;
    if (!pair && !(pair = lane_pairs(1)))
        fail("no lane");
    lane *l = lane_at(pair, 0);
    size_t whole = (size_t)((char *)lane_at(pair, 1) - (char *)l);
    if (whole != WORDS + LANE_BYTES)
        fail("lane.c's layout changed: mend WORDS and LANE_BYTES here");
    memset(l, 0, whole);
    fd_len = fd_read = 0;
    wire_out = wire_in = made = 0;
    wbuf in = {0};
    unsigned char buf[LANE_BYTES + 1];
    size_t k = 1, ask = 0;
    for (; k < size && data[k] != 0xff; k++) {
        unsigned op = data[k] & 3;
        size_t n = k + 1 < size ? (size_t)data[k + 1] * 71 % (LANE_BYTES + 1) : 1;
        if (op < 2)
            k++;
        if (op < 2 && fd_len + n > FD_MAX)
            continue; /* the fd is full: the step is left out */
        if (op == 0) { /* a chunk on the lane, or the fd when it has no room */
            chunk(buf, n);
            struct iovec v[2] = {{buf, n / 3}, {buf + n / 3, n - n / 3}};
            if (lane_put(l, wire_out, v, 2) < 0)
                write_fd(buf, n);
        } else if (op == 1) { /* a chunk to the fd */
            chunk(buf, n);
            write_fd(buf, n);
        } else if (op == 2) { /* the reader goes into read() */
            if (fill_begin(l, &in, (size_t)(data[k] >> 2) * 300 + 1, &ask) < 0)
                fail("an honest lane refused");
        } else if ((ask ? fill_end(l, &in, ask) : fill(l, &in, (size_t)(data[k] >> 2) * 300 + 1)) < 0) {
            fail("an honest lane refused");
        } else {
            ask = 0; /* read() returned */
        }
    }
    if (ask && fill_end(l, &in, ask) < 0)
        fail("an honest lane refused");
    for (int spins = 0; fd_read < fd_len || lane_has(l); spins++) {
        if (fill(l, &in, 4096) < 0 || spins > 100000)
            fail("the rest could not be read");
    }
    check_order(&in);
    if (size > 0 && data[0] % 2 && k < size)
        hostile(l, &in, data + k + 1, size - k - 1);
    wbuf_free(&in);
    return 0;
}
