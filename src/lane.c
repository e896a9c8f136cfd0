/*
 * lane.c - a shared-memory path beside a channel's byte stream.
 *
 * A round trip through a socket and a pipe costs four system calls (a
 * write and a read each way), most of a small task's round trip on a
 * virtual machine, even when both ends are polling. A lane is a ring of
 * bytes in memory both processes map (made before the fork): while its
 * reader is awake (polling, or busy and bound to look again before it
 * sleeps), the writer puts whole frames there and nothing crosses the
 * kernel. A reader about to sleep says so (lane_sleep); a writer that
 * finds it asleep after a put wakes it through the stream (chan.c's
 * MSG_WAKE frame). The order of the two stores and the two loads (each
 * side's store, a full fence, the other side's word) makes sure one of
 * them sees the other: a record is never left where no one will look.
 *
 * The lane and the stream are one ordered stream of frames. Each record
 * carries `at`: how many bytes the writer had written to the fd when it
 * put it. The reader takes a record only once it has read that many bytes
 * from the fd (lane_take), and reads the fd no further than the next
 * record's `at`. A record put while the reader was reading the fd, with
 * `at` inside the bytes that read returned, goes in at its place among
 * them (lane_place). The writer puts records only at a frame boundary of
 * the stream (its fd holds no part of a frame), so the merge is whole
 * frames in the writer's order.
 *
 * Layout: three words on cache lines of their own (head: the writer's,
 * tail and awake: the reader's), then LANE_BYTES of ring. A record is a
 * 16-byte header (at: 8 bytes, length: 4, 4 zero bytes) and its bytes,
 * padded to 8; it may wrap around the end of the ring.
 *
 * Trust: the reader checks what the writer wrote (positions, lengths,
 * `at`) as it checks a frame read from a pipe; a lane that makes no sense
 * is a bad stream (-1, EPROTO) and the channel closes.
 *
 * Mappings: the pairs of the children forked together are one mapping
 * (an arena), each pair on pages of its own. A child unmaps all of them
 * but its own pair (lane_forked: a few calls, not one per sibling); the
 * parent unmaps an arena with its last pair (lane_pair_free), so closing
 * a pool's workers costs one munmap, not one each (each one a TLB
 * shootdown on the other cores). The arenas are listed in this process's
 * own memory, never in the shared pages.
 */
#include <errno.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

#include "orch.h"

#define LANE_BYTES (16u << 10) /* a power of two */
#define REC_HEAD 16
#define CACHE_LINE 64
#define PAGE_BYTES ((size_t)4096)

struct lane {
    _Atomic uint64_t head; /* bytes put so far (the writer's) */
    char pad0[CACHE_LINE - sizeof(uint64_t)];
    _Atomic uint64_t tail; /* bytes taken so far (the reader's) */
    char pad1[CACHE_LINE - sizeof(uint64_t)];
    _Atomic uint32_t awake; /* 1: the reader looks here before it sleeps */
    char pad2[CACHE_LINE - sizeof(uint32_t)];
    unsigned char ring[LANE_BYTES];
};

/* A pair's share of an arena: whole pages, so that a child can unmap the
 * pairs around its own. */
#define PAIR_SPAN ((2 * sizeof(lane) + PAGE_BYTES - 1) & ~(PAGE_BYTES - 1))

typedef struct {
    char *base;
    size_t pairs; /* PAIR_SPAN each */
    size_t live;  /* pairs not yet freed */
} arena;

static arena *arenas;
static size_t n_arenas, arenas_cap;

static size_t padded(size_t n)
{
    return (n + 7) & ~(size_t)7;
}

/* ---- mappings ---------------------------------------------------------- */

static int add_arena(char *base, size_t pairs)
{
    if (n_arenas == arenas_cap) {
        size_t cap = arenas_cap ? 2 * arenas_cap : 8;
        arena *a = realloc(arenas, cap * sizeof *a);
        if (a == NULL)
            return -1;
        arenas = a;
        arenas_cap = cap;
    }
    arenas[n_arenas++] = (arena){base, pairs, pairs};
    return 0;
}

lane *lane_pairs(size_t n)
{
    if (n == 0)
        return NULL;
    char *p = mmap(NULL, n * PAIR_SPAN, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS,
                   -1, 0);
    if (p == MAP_FAILED)
        return NULL;
    if (add_arena(p, n) < 0) {
        munmap(p, n * PAIR_SPAN);
        return NULL;
    }
    return (lane *)p; /* zero-filled: empty, asleep */
}

lane *lane_pair_nth(lane *first, size_t k)
{
    return (lane *)((char *)first + k * PAIR_SPAN);
}

lane *lane_at(lane *pair, int k)
{
    return pair + k;
}

static arena *arena_of(const lane *pair)
{
    for (size_t i = 0; i < n_arenas; i++) {
        arena *a = &arenas[i];
        if ((const char *)pair >= a->base && (const char *)pair < a->base + a->pairs * PAIR_SPAN)
            return a;
    }
    return NULL;
}

void lane_pair_free(lane *pair)
{
    arena *a = pair ? arena_of(pair) : NULL;
    if (a == NULL || --a->live > 0)
        return;
    munmap(a->base, a->pairs * PAIR_SPAN);
    *a = arenas[--n_arenas];
}

void lane_forked(lane *own)
{
    const char *mine = (const char *)own;
    for (size_t i = 0; i < n_arenas; i++) {
        char *base = arenas[i].base, *end = base + arenas[i].pairs * PAIR_SPAN;
        if (mine >= base && mine < end) {
            if (mine > base)
                munmap(base, (size_t)(mine - base));
            if (mine + PAIR_SPAN < end)
                munmap((char *)mine + PAIR_SPAN, (size_t)(end - mine - PAIR_SPAN));
        } else {
            munmap(base, (size_t)(end - base));
        }
    }
    n_arenas = 0;
    if (own)
        add_arena((char *)own, 1); /* without room, it stays mapped until the exit */
}

/* ---- the ring's bytes ------------------------------------------------- */

static void ring_write(lane *l, uint64_t pos, const void *p, size_t n)
{
    if (n == 0)
        return; /* p may be NULL then (an empty buffer) */
    size_t at = (size_t)(pos & (LANE_BYTES - 1)), first = LANE_BYTES - at;
    if (first >= n) {
        memcpy(l->ring + at, p, n);
    } else {
        memcpy(l->ring + at, p, first);
        memcpy(l->ring, (const char *)p + first, n - first);
    }
}

static void ring_read(const lane *l, uint64_t pos, void *p, size_t n)
{
    size_t at = (size_t)(pos & (LANE_BYTES - 1)), first = LANE_BYTES - at;
    if (first >= n) {
        memcpy(p, l->ring + at, n);
    } else {
        memcpy(p, l->ring + at, first);
        memcpy((char *)p + first, l->ring, n - first);
    }
}

/* ---- the writer ------------------------------------------------------- */

int lane_awake(const lane *l)
{
    return atomic_load_explicit(&l->awake, memory_order_relaxed) != 0;
}

int lane_put(lane *l, uint64_t at, const struct iovec *v, int nv)
{
    size_t n = 0;
    for (int k = 0; k < nv; k++)
        n += v[k].iov_len;
    uint64_t head = atomic_load_explicit(&l->head, memory_order_relaxed);
    uint64_t tail = atomic_load_explicit(&l->tail, memory_order_acquire);
    if (n == 0)
        return 0; /* nothing to tell */
    if (n > UINT32_MAX || REC_HEAD + padded(n) > LANE_BYTES - (head - tail))
        return -1;
    unsigned char h[REC_HEAD] = {0};
    for (int k = 0; k < 8; k++)
        h[k] = (unsigned char)(at >> (8 * k));
    for (int k = 0; k < 4; k++)
        h[8 + k] = (unsigned char)(n >> (8 * k));
    ring_write(l, head, h, REC_HEAD);
    uint64_t pos = head + REC_HEAD;
    for (int k = 0; k < nv; k++) {
        ring_write(l, pos, v[k].iov_base, v[k].iov_len);
        pos += v[k].iov_len;
    }
    atomic_store_explicit(&l->head, head + REC_HEAD + padded(n), memory_order_release);
    return 0;
}

int lane_still_awake(lane *l)
{
    atomic_thread_fence(memory_order_seq_cst); /* the put before the look */
    return atomic_load_explicit(&l->awake, memory_order_relaxed) != 0;
}

/* ---- the reader ------------------------------------------------------- */

void lane_wake(lane *l)
{
    if (!atomic_load_explicit(&l->awake, memory_order_relaxed))
        atomic_store_explicit(&l->awake, 1, memory_order_relaxed);
}

int lane_has(const lane *l)
{
    return atomic_load_explicit(&l->head, memory_order_relaxed)
           != atomic_load_explicit(&l->tail, memory_order_relaxed);
}

int lane_sleep(lane *l)
{
    atomic_store_explicit(&l->awake, 0, memory_order_relaxed);
    atomic_thread_fence(memory_order_seq_cst); /* the store before the look */
    return lane_has(l);
}

/* The record at the tail: 1 with its at and length, 0 when there is none,
 * -1 when the ring makes no sense (EPROTO). */
static int peek(const lane *l, uint64_t *at, size_t *n)
{
    uint64_t head = atomic_load_explicit(&l->head, memory_order_acquire);
    uint64_t tail = atomic_load_explicit(&l->tail, memory_order_relaxed);
    if (head == tail)
        return 0;
    uint64_t avail = head - tail;
    unsigned char h[REC_HEAD];
    if (avail > LANE_BYTES || avail < REC_HEAD)
        goto bad;
    ring_read(l, tail, h, REC_HEAD);
    uint64_t a = 0;
    uint32_t len = 0;
    for (int k = 7; k >= 0; k--)
        a = a << 8 | h[k];
    for (int k = 3; k >= 0; k--)
        len = len << 8 | h[8 + k];
    if (REC_HEAD + padded(len) > avail)
        goto bad;
    *at = a;
    *n = len;
    return 1;
bad:
    errno = EPROTO;
    return -1;
}

int lane_next_at(const lane *l, uint64_t *at)
{
    size_t n;
    return peek(l, at, &n);
}

/* Copies the record at the tail (n bytes) to in at pos and lets it go. */
static void pop(lane *l, wbuf *in, size_t pos, size_t n)
{
    uint64_t tail = atomic_load_explicit(&l->tail, memory_order_relaxed);
    if (n > 0)
        ring_read(l, tail + REC_HEAD, in->data + pos, n);
    atomic_store_explicit(&l->tail, tail + REC_HEAD + padded(n), memory_order_release);
}

ssize_t lane_take(lane *l, wbuf *in, uint64_t wire_in)
{
    ssize_t got = 0;
    uint64_t at;
    size_t n;
    int r;
    while ((r = peek(l, &at, &n)) == 1 && at <= wire_in) {
        if (at < wire_in) { /* its place was inside bytes already read */
            errno = EPROTO;
            return -1;
        }
        if (wbuf_reserve(in, n) < 0) {
            errno = ENOMEM;
            return -1;
        }
        pop(l, in, in->len, n);
        in->len += n;
        got += (ssize_t)n;
    }
    return r < 0 ? -1 : got;
}

ssize_t lane_place(lane *l, wbuf *in, uint64_t from, uint64_t to)
{
    ssize_t got = 0;
    uint64_t at;
    size_t n;
    int r;
    while ((r = peek(l, &at, &n)) == 1 && at < to) {
        if (at < from || to - at > in->len - in->off) {
            errno = EPROTO;
            return -1;
        }
        if (wbuf_reserve(in, n) < 0) {
            errno = ENOMEM;
            return -1;
        }
        size_t pos = in->len - (size_t)(to - at); /* where its bytes go */
        if (n > 0)
            memmove(in->data + pos + n, in->data + pos, in->len - pos);
        pop(l, in, pos, n);
        in->len += n;
        got += (ssize_t)n;
    }
    return r < 0 ? -1 : got;
}
