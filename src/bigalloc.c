/*
 * bigalloc.c - big blocks in mappings of their own: for wbuf's big
 * buffers (bigmap_*) and for the Lua state's biggest blocks (bigalloc).
 *
 * A big value crossing a channel is written into memory nobody used a
 * moment before: the encoder's buffer, then the string the decoder makes.
 * In 4 KiB pages, fresh memory costs more than the copy: a page fault per
 * 4 KiB (16384 for 64 MiB), each page zeroed on its own. So big blocks
 * are mappings at a 2 MiB boundary with huge pages asked for
 * (MADV_HUGEPAGE: a few faults), resized with mremap, and unmapped when
 * given back: a big value pins no memory once it is gone.
 *
 * bigalloc wraps the Lua state's allocator: blocks of BIG bytes or more
 * are such mappings; smaller ones, which the C library serves from memory
 * it reuses, go to the allocator the state had. Lua passes a block's size
 * when it frees or resizes it, so only a block of BIG bytes or more can
 * be one of ours; which ones are is a list through a header before each
 * (few blocks are that big). A block the allocator made before stays with
 * it. A forked child inherits the mappings and the list with the heap.
 *
 * The state frees its last blocks after it has unloaded the C modules
 * (lua_close), so this module stays loaded once it has wrapped the
 * allocator (RTLD_NODELETE): the code that frees our blocks is still
 * there then.
 */
#include <dlfcn.h>
#include <stdint.h>
#include <string.h>
#include <sys/mman.h>

#include "orch.h"

#define BIG ((size_t)32 << 20)      /* a Lua block this big is a mapping */
#define HUGE_PAGE ((size_t)2 << 20)
#define PAGE ((size_t)4096)

/* ---- mappings ------------------------------------------------------------ */

static size_t page_round(size_t n)
{
    return (n + PAGE - 1) & ~(PAGE - 1);
}

void *bigmap_get(size_t len, size_t *got)
{
    len = page_round(len);
    char *p = mmap(NULL, len + HUGE_PAGE, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS,
                   -1, 0);
    if (p == MAP_FAILED)
        return NULL;
    char *start = (char *)(((uintptr_t)p + HUGE_PAGE - 1) & ~(uintptr_t)(HUGE_PAGE - 1));
    if (start > p)
        munmap(p, (size_t)(start - p));
    munmap(start + len, (size_t)(p + HUGE_PAGE - start));
    madvise(start, len, MADV_HUGEPAGE);
    *got = len;
    return start;
}

void bigmap_put(void *p, size_t len)
{
    munmap(p, len);
}

void *bigmap_resize(void *p, size_t len, size_t want, size_t *got)
{
    want = page_round(want);
    if (want <= len) {
        *got = len;
        return p;
    }
    void *np = mremap(p, len, want, MREMAP_MAYMOVE);
    if (np == MAP_FAILED)
        return NULL;
    *got = want;
    return np;
}

/* ---- the Lua state's biggest blocks ---------------------------------------- */

typedef struct big_block {
    struct big_block *prev, *next;
    size_t maplen;
    char pad[40]; /* the block after the header stays 64-byte aligned */
} big_block;

static big_block *blocks;      /* ours, live */
static lua_Alloc base_alloc;   /* the state's allocator before */
static void *base_ud;

static void link_block(big_block *h)
{
    h->prev = NULL;
    h->next = blocks;
    if (blocks)
        blocks->prev = h;
    blocks = h;
}

static void unlink_block(big_block *h)
{
    if (h->prev)
        h->prev->next = h->next;
    else
        blocks = h->next;
    if (h->next)
        h->next->prev = h->prev;
}

static big_block *ours(void *ptr)
{
    for (big_block *h = blocks; h; h = h->next)
        if ((void *)(h + 1) == ptr)
            return h;
    return NULL;
}

static void *big_new(size_t n)
{
    size_t len;
    big_block *h = bigmap_get(sizeof *h + n, &len);
    if (!h)
        return NULL;
    h->maplen = len;
    link_block(h);
    return h + 1;
}

/* One of ours resized to n bytes (0: freed); NULL when it cannot be (the
 * block stays as it was). */
static void *big_resize(big_block *h, size_t osize, size_t n)
{
    if (n == 0) {
        unlink_block(h);
        bigmap_put(h, h->maplen);
        return NULL;
    }
    if (n < BIG) {
        void *np = base_alloc(base_ud, NULL, 0, n);
        if (np) {
            memcpy(np, h + 1, n < osize ? n : osize);
            big_resize(h, osize, 0);
        }
        return np;
    }
    size_t len;
    unlink_block(h);
    big_block *nh = bigmap_resize(h, h->maplen, sizeof *h + n, &len);
    if (!nh) {
        link_block(h);
        return NULL;
    }
    nh->maplen = len;
    link_block(nh);
    return nh + 1;
}

static void *big_alloc(void *ud, void *ptr, size_t osize, size_t nsize)
{
    (void)ud;
    if (ptr != NULL && osize >= BIG) {
        big_block *h = ours(ptr);
        if (h)
            return big_resize(h, osize, nsize);
    }
    if (ptr == NULL && nsize >= BIG) {
        void *p = big_new(nsize);
        if (p)
            return p;
    }
    return base_alloc(base_ud, ptr, osize, nsize);
}

void bigalloc_init(lua_State *L)
{
    void *ud;
    lua_Alloc f = lua_getallocf(L, &ud);
    if (f == big_alloc || (base_alloc && (f != base_alloc || ud != base_ud)))
        return; /* done, or another state with an allocator of its own */
    Dl_info self;
    if (!dladdr((void *)bigalloc_init, &self) || !self.dli_fname
        || !dlopen(self.dli_fname, RTLD_NOW | RTLD_NOLOAD | RTLD_NODELETE))
        return; /* not sure to outlive the state: the blocks stay with it */
    base_alloc = f;
    base_ud = ud;
    lua_setallocf(L, big_alloc, NULL);
}
