/*
 * alloc.c - a child's allocator for small Lua objects.
 *
 * A forked child shares the parent's heap copy on write. With the
 * parent's allocator, the child's new objects go into the free chunks the
 * parent left here and there in its heap, and each one makes a whole page
 * private to the child: a few dozen small allocations (a loaded function,
 * call frames, strings) cost tens of KiB per worker. So a child takes its
 * small blocks from a slab of its own, where they lie packed together in
 * pages nobody else uses.
 *
 * The slab is one fixed mapping (pages cost nothing until touched), cut
 * into blocks of SLAB_MAX bytes at most, in classes of 16 bytes; a freed
 * block goes on its class's free list for the next block of that class.
 * Lua passes the size of a block whenever it frees or resizes it, so a
 * block needs no header. Larger blocks, and small ones once the slab is
 * full, come from the allocator the state had before, which this one
 * wraps; the blocks it made, those inherited from the parent too, go back
 * to it, and it is never given one it did not make. Freed blocks are
 * kept for their class, never merged; the slab is bounded, so what it
 * keeps back is at most SLAB_SIZE. The child's collector runs as before.
 */
#include <string.h>
#include <sys/mman.h>

#include "orch.h"

#define SLAB_SIZE ((size_t)1 << 20)
#define SLAB_MAX 512
#define SLAB_CLASSES (SLAB_MAX / 16)

static char *slab, *slab_top, *slab_end; /* [slab, slab_top) handed out */
static void *free_blocks[SLAB_CLASSES + 1]; /* by class: a list through the blocks */
static lua_Alloc base_alloc;             /* the state's allocator before */
static void *base_ud;

static int in_slab(const void *p)
{
    return (const char *)p >= slab && (const char *)p < slab_end;
}

static size_t size_class(size_t n)
{
    return (n + 15) / 16;
}

/* A block of n bytes (1..SLAB_MAX) from the slab, or NULL when full. */
static void *slab_take(size_t n)
{
    size_t c = size_class(n);
    void *p = free_blocks[c];
    if (p) {
        free_blocks[c] = *(void **)p;
        return p;
    }
    if ((size_t)(slab_end - slab_top) < c * 16)
        return NULL;
    p = slab_top;
    slab_top += c * 16;
    return p;
}

static void slab_give(void *p, size_t n)
{
    size_t c = size_class(n);
    *(void **)p = free_blocks[c];
    free_blocks[c] = p;
}

static void *child_alloc(void *ud, void *ptr, size_t osize, size_t nsize)
{
    (void)ud;
    int ours = ptr != NULL && in_slab(ptr);
    if (nsize == 0) {
        if (ours)
            slab_give(ptr, osize);
        else if (ptr)
            base_alloc(base_ud, ptr, osize, 0);
        return NULL;
    }
    if (ours && size_class(osize) == size_class(nsize))
        return ptr;
    if (ptr && !ours && nsize > SLAB_MAX)
        return base_alloc(base_ud, ptr, osize, nsize); /* stays where it is */
    void *np = nsize <= SLAB_MAX ? slab_take(nsize) : NULL;
    if (np == NULL) {
        if (ptr && !ours)
            return base_alloc(base_ud, ptr, osize, nsize);
        /* for a new block, osize is its kind: pass it on */
        np = base_alloc(base_ud, NULL, ptr ? 0 : osize, nsize);
        if (np == NULL)
            return NULL; /* the old block stays as it was */
    }
    if (ptr) {
        memcpy(np, ptr, osize < nsize ? osize : nsize);
        if (ours)
            slab_give(ptr, osize);
        else
            base_alloc(base_ud, ptr, osize, 0);
    }
    return np;
}

void alloc_child_init(lua_State *L)
{
    alloc_big_forked();
    void *ud;
    if (lua_getallocf(L, &ud) == child_alloc)
        return; /* a child of a child: the slab came with the heap */
    void *p = mmap(NULL, SLAB_SIZE, PROT_READ | PROT_WRITE,
                   MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    if (p == MAP_FAILED)
        return; /* the parent's allocator it is, then */
    slab = slab_top = p;
    slab_end = slab + SLAB_SIZE;
    base_alloc = lua_getallocf(L, &base_ud);
    lua_setallocf(L, child_alloc, NULL);
}
