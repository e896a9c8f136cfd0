/*
 * alloc_big.c - the state's big blocks in huge pages, kept for reuse.
 *
 * A big value's memory (a string of megabytes, a big table's array part)
 * is fresh memory each time: the allocator maps it, and every 4 KiB page
 * of it costs a page fault on first touch, then goes back to the kernel
 * when the value is freed. On a virtual machine a fault costs micro-
 * seconds, so a 64 MiB string made by a decoder costs more in faults
 * than in copying, and it is made again for every such value that
 * arrives. So the state's allocator is wrapped: a block of BLOCK_MIN bytes
 * or more is a mapping of its own, aligned on a huge page and with huge
 * pages asked for (MADV_HUGEPAGE: one fault per 2 MiB), and a freed one
 * is kept (up to KEEP_MAX blocks and KEEP_BYTES in all) for the next
 * big block of about its size, whose pages are then there already. Smaller blocks, and big ones when a mapping fails,
 * go to the allocator the state had, which this one wraps.
 *
 * A big block that grows is moved by the kernel (mremap: its pages go
 * along, not copied), one that shrinks below half its mapping gives the
 * rest back.
 *
 * Which blocks are ours: Lua passes a block's size whenever it frees or
 * resizes it, so a block under BLOCK_MIN is never ours; a big one is
 * looked up in `live`, the set of blocks handed out (a few at any time:
 * each is megabytes).
 *
 * Kept blocks go: the oldest once it has waited KEEP_SECONDS (checked
 * when a big block is made or freed, and by a timer of the loop, loop.c),
 * all of them when an allocation fails (then it is tried again), and a
 * worker lets its own go between tasks (worker.c). Under an address-space
 * limit (RLIMIT_AS, a worker's limits.memory) none are kept: they would
 * use it up.
 *
 * A dead big value's block comes back only when the collector ends its
 * cycle, which it paces by the bytes allocated: values arriving one after
 * another would each take fresh pages while the one before waits. So a
 * decoder about to make a big string asks for room (alloc_big_room):
 * when no kept block fits it, and the rest of the state's heap is small
 * against it (a full collection then costs less than fresh pages), the
 * state is collected first and a dead value's block is kept for it.
 *
 * A forked child inherits the parent's blocks copy-on-write: writing into
 * a kept one would copy it page by page. So the child lets the kept
 * blocks go at once (alloc_big_forked) and never keeps a block it
 * inherited when the value in it is freed.
 *
 * Only the allocator of lauxlib's states (realloc and free) is wrapped: a
 * host's own allocator (one that counts or limits a state's memory) is
 * left alone. States that share it share the set and the kept blocks,
 * which are the process's; orch runs on one thread.
 */
#include <stdint.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <time.h>

#include "orch.h"

#define BLOCK_MIN ((size_t)2 << 20)
#define HUGE_PAGE ((size_t)2 << 20)
#define PAGE ((size_t)4096)
#define KEEP_MAX 4
#define KEEP_BYTES ((size_t)256 << 20)
#define KEEP_SECONDS 10.0
#define FIT_SLACK 4 /* a kept block serves len bytes if at most len / FIT_SLACK longer */
#define ROOM_SHARE 8 /* alloc_big_room collects if the rest of the heap is under n / ROOM_SHARE */
#define VALUE_HEAD 64 /* a value's block holds its header too: at most this */

typedef struct {
    char *p;       /* NULL: a free slot */
    size_t len;    /* the mapping's length */
    unsigned gen;  /* the process generation that mapped it */
    int state;     /* made by a state's allocator (not alloc_big_block) */
    double since;  /* kept: when it was freed */
} block;

static lua_Alloc base_f;
static void *base_ud;
static unsigned gen = 1;       /* bumped in a forked child */
static block *live;            /* open addressing by address; live_cap a power of 2 */
static size_t live_cap, live_n;
static block kept[KEEP_MAX];   /* freed blocks kept, oldest first */
static size_t n_kept, kept_bytes;
static unsigned long made;     /* big blocks handed out so far */
static unsigned long mapped;   /* of those, new mappings (not kept ones) */

static double mono(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + (double)t.tv_nsec * 1e-9;
}

static size_t round_len(size_t n)
{
    return (n + PAGE - 1) & ~(PAGE - 1);
}

/* ---- the set of blocks handed out ------------------------------------ */

static size_t slot_of(const void *p)
{
    return (size_t)(((uintptr_t)p / PAGE) * 0x9E3779B97F4A7C15u >> 7) & (live_cap - 1);
}

static block *live_find(const void *p)
{
    if (live_cap == 0)
        return NULL;
    for (size_t i = slot_of(p);; i = (i + 1) & (live_cap - 1)) {
        if (live[i].p == p)
            return &live[i];
        if (live[i].p == NULL)
            return NULL;
    }
}

static int live_grow(void)
{
    size_t cap = live_cap ? 2 * live_cap : 64;
    block *t = mmap(NULL, cap * sizeof *t, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS,
                    -1, 0);
    if (t == MAP_FAILED)
        return -1;
    block *old = live;
    size_t old_cap = live_cap;
    live = t;
    live_cap = cap;
    for (size_t i = 0; i < old_cap; i++) {
        if (old[i].p) {
            size_t j = slot_of(old[i].p);
            while (live[j].p)
                j = (j + 1) & (cap - 1);
            live[j] = old[i];
        }
    }
    if (old)
        munmap(old, old_cap * sizeof *old);
    return 0;
}

static int live_add(block b)
{
    if (4 * (live_n + 1) > 3 * live_cap && live_grow() < 0)
        return -1;
    size_t i = slot_of(b.p);
    while (live[i].p)
        i = (i + 1) & (live_cap - 1);
    live[i] = b;
    live_n++;
    return 0;
}

/* Takes out the entry at e, moving back the entries after it that
 * belong before the hole (linear probing's deletion). */
static void live_remove(block *e)
{
    size_t i = (size_t)(e - live), mask = live_cap - 1;
    live[i].p = NULL;
    live_n--;
    for (size_t j = (i + 1) & mask; live[j].p; j = (j + 1) & mask) {
        size_t home = slot_of(live[j].p);
        if (((j - home) & mask) >= ((j - i) & mask)) {
            live[i] = live[j];
            live[j].p = NULL;
            i = j;
        }
    }
}

/* ---- mappings and the kept blocks ------------------------------------ */

/* A mapping of len bytes aligned on a huge page, huge pages asked for. */
static char *map_aligned(size_t len)
{
    size_t span = len + HUGE_PAGE;
    char *m = mmap(NULL, span, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (m == MAP_FAILED)
        return NULL;
    char *p = (char *)(((uintptr_t)m + HUGE_PAGE - 1) & ~(uintptr_t)(HUGE_PAGE - 1));
    if (p > m)
        munmap(m, (size_t)(p - m));
    if (m + span > p + len)
        munmap(p + len, (size_t)(m + span - (p + len)));
    madvise(p, len, MADV_HUGEPAGE);
    return p;
}

/* Takes kept block k out of the kept ones. */
static block take_kept(size_t k)
{
    block b = kept[k];
    kept_bytes -= b.len;
    memmove(&kept[k], &kept[k + 1], (n_kept - k - 1) * sizeof kept[0]);
    n_kept--;
    return b;
}

static void drop_kept(size_t k)
{
    block b = take_kept(k);
    munmap(b.p, b.len);
}

static void expire_kept(double now)
{
    while (n_kept > 0 && now - kept[0].since > KEEP_SECONDS)
        drop_kept(0);
}

/* A kept block that fits len (at least len, not much more), or -1. */
static int find_kept(size_t len)
{
    int best = -1;
    for (size_t k = 0; k < n_kept; k++) {
        size_t have = kept[k].len;
        if (have >= len && have - len <= len / FIT_SLACK &&
            (best < 0 || have < kept[best].len))
            best = (int)k;
    }
    return best;
}

/* A big block of n bytes for a state (or for alloc_big_block): a kept
 * one that fits, or a new mapping. */
static void *big_new(size_t n, int state)
{
    size_t len = round_len(n);
    double now = mono();
    expire_kept(now);
    block b = { NULL, len, gen, state, 0 };
    int k = find_kept(len);
    if (k >= 0) {
        b = take_kept((size_t)k);
        b.state = state;
    } else if ((b.p = map_aligned(len)) == NULL) {
        return NULL;
    } else {
        mapped++;
    }
    if (live_add(b) < 0) {
        munmap(b.p, b.len);
        return NULL;
    }
    made++;
    return b.p;
}

/* Whether the address space is limited (RLIMIT_AS, a worker's
 * limits.memory): kept blocks would use up that limit, so none are kept. */
static int space_limited(void)
{
    struct rlimit r;
    return getrlimit(RLIMIT_AS, &r) == 0 && r.rlim_cur != RLIM_INFINITY;
}

/* Frees our block at e: kept if this process made it and there is room. */
static void big_free(block *e)
{
    block b = *e;
    live_remove(e);
    if (b.gen != gen || b.len > KEEP_BYTES || space_limited()) {
        munmap(b.p, b.len);
        return;
    }
    b.since = mono();
    expire_kept(b.since);
    while (n_kept == KEEP_MAX || kept_bytes + b.len > KEEP_BYTES)
        drop_kept(0);
    kept[n_kept++] = b;
    kept_bytes += b.len;
}

/* ---- the allocator ----------------------------------------------------- */

/* Our block at e grown to len bytes: its pages moved (mremap) where the
 * kernel finds room, the rest fresh. NULL if that fails. */
static void *big_move(block *e, size_t len)
{
    void *np = mremap(e->p, e->len, len, MREMAP_MAYMOVE);
    if (np == MAP_FAILED)
        return NULL;
    madvise(np, len, MADV_HUGEPAGE);
    mapped++;
    made++;
    block b = *e;
    live_remove(e);
    b.p = np;
    b.len = len;
    if (live_add(b) < 0) { /* cannot be: the set just lost an entry */
        munmap(np, len);
        return NULL;
    }
    return np;
}

/* Our block at e, resized to n bytes (>= BLOCK_MIN): in place while it
 * fits its mapping (a mapping over twice the size is cut down), else
 * moved to a bigger one. A table's array part grows so, and the block it
 * leaves is no use to a later block (the next growth asks for more). */
static void *big_resize(block *e, size_t n)
{
    char *p = e->p;
    size_t len = round_len(n);
    if (len <= e->len) {
        if (len < e->len / 2 && munmap(p + len, e->len - len) == 0)
            e->len = len;
        return p;
    }
    return big_move(e, len);
}

static void *alloc_once(void *ptr, size_t osize, size_t nsize)
{
    block *e = ptr && osize >= BLOCK_MIN ? live_find(ptr) : NULL;
    if (nsize == 0) {
        if (e)
            big_free(e);
        else if (ptr)
            base_f(base_ud, ptr, osize, 0);
        return NULL;
    }
    if (e && nsize >= BLOCK_MIN)
        return big_resize(e, nsize);
    if (nsize < BLOCK_MIN) {
        if (!e)
            return base_f(base_ud, ptr, osize, nsize);
        void *np = base_f(base_ud, NULL, 0, nsize);
        if (np) {
            memcpy(np, ptr, nsize);
            big_free(e);
        }
        return np;
    }
    /* a new big block, or a block of the base allocator's grown big */
    void *np = big_new(nsize, 1);
    if (np == NULL) /* no mapping: the base allocator, as without this one */
        return base_f(base_ud, ptr, osize, nsize);
    if (ptr) {
        memcpy(np, ptr, osize < nsize ? osize : nsize);
        base_f(base_ud, ptr, osize, 0);
    }
    return np;
}

/* The state's allocator. When memory runs short, nothing is kept: the
 * kept blocks go and the call is made again. */
static void *big_alloc(void *ud, void *ptr, size_t osize, size_t nsize)
{
    (void)ud;
    void *np = alloc_once(ptr, osize, nsize);
    if (np == NULL && nsize > 0 && n_kept > 0) {
        alloc_big_trim();
        np = alloc_once(ptr, osize, nsize);
    }
    if (nsize > 0 && nsize < BLOCK_MIN)
        heap_grown(); /* the base allocator's heap may have grown: heap.c */
    return np;
}

void *alloc_big_block(size_t n)
{
    void *p = big_new(n > 0 ? n : 1, 0);
    if (p == NULL && n_kept > 0) {
        alloc_big_trim();
        p = big_new(n > 0 ? n : 1, 0);
    }
    return p;
}

void alloc_big_block_free(void *p)
{
    block *e = p ? live_find(p) : NULL;
    if (e)
        big_free(e);
}

/* Bytes of the blocks handed out to states. */
static size_t state_bytes(void)
{
    size_t sum = 0;
    for (size_t i = 0; i < live_cap; i++)
        if (live[i].p && live[i].state)
            sum += live[i].len;
    return sum;
}

void alloc_big_room(lua_State *L, size_t n)
{
    if (n < BLOCK_MIN || find_kept(round_len(n + VALUE_HEAD)) >= 0)
        return;
    if (lua_getallocf(L, NULL) != big_alloc || lua_gc(L, LUA_GCISRUNNING) != 1)
        return; /* not ours, or the collector stopped (-1 inside a finalizer) */
    size_t big = state_bytes();
    if (big == 0)
        return; /* no big value that a collection could free */
    size_t heap = (size_t)lua_gc(L, LUA_GCCOUNT) << 10;
    if (heap > big && heap - big > n / ROOM_SHARE)
        return; /* collecting the rest would cost more than fresh pages */
    lua_gc(L, LUA_GCCOLLECT, 0);
}

double alloc_big_expiry(void)
{
    if (n_kept == 0)
        return -1;
    double left = kept[0].since + KEEP_SECONDS - mono();
    return left > 0 ? left : 0;
}

void alloc_big_expire(void)
{
    expire_kept(mono());
}

void alloc_big_trim(void)
{
    while (n_kept > 0)
        drop_kept(n_kept - 1);
}

unsigned long alloc_big_made(void)
{
    return made;
}

void alloc_big_stats(alloc_big_counts *c)
{
    c->made = made;
    c->mapped = mapped;
    c->kept = n_kept;
    c->kept_bytes = kept_bytes;
}

/* lauxlib's allocator (the one luaL_newstate gives a state), or NULL. */
static lua_Alloc lauxlib_alloc(void)
{
    lua_State *probe = luaL_newstate();
    if (probe == NULL)
        return NULL;
    void *ud;
    lua_Alloc f = lua_getallocf(probe, &ud);
    lua_close(probe);
    return f;
}

void alloc_big_init(lua_State *L)
{
    void *ud;
    lua_Alloc f = lua_getallocf(L, &ud);
    if (f == big_alloc)
        return;
    if (base_f == NULL) {
        if (f != lauxlib_alloc())
            return; /* a host's own allocator */
        base_f = f;
        base_ud = ud;
    }
    if (f == base_f && ud == base_ud)
        lua_setallocf(L, big_alloc, NULL);
}

void alloc_big_forked(void)
{
    gen++;
    alloc_big_trim();
}
