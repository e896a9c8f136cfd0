/*
 * wbuf.c - growable byte buffers for frames and encodings.
 *
 * A wbuf holds bytes [off, len) that are still to be consumed; writers
 * append at len, readers consume from off. Capacity grows geometrically;
 * a buffer that grew large for one big frame is given back once it is
 * empty again, so one 64 MiB value does not pin 64 MiB for ever.
 *
 * A buffer of WBUF_MAP bytes or more is a mapping of its own, with huge
 * pages asked for (MADV_HUGEPAGE) and grown by mremap: a big frame is
 * then written into a few 2 MiB pages instead of thousands of 4 KiB page
 * faults, which cost more than the copy itself.
 *
 * A scratch buffer is a wbuf owned by a userdata, the upvalue of the C
 * function that encodes into it: a Lua error raised while it is filled
 * leaks nothing, and a nested call never shares it.
 */
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

#include "orch.h"

#define WBUF_MIN 4096
#define WBUF_KEEP (1u << 20) /* capacity kept across resets */
#define WBUF_MAP (4u << 20)  /* from this capacity on, a mapping of its own */
#define PAGE 4096

/* b's capacity becomes cap (>= len): realloc below WBUF_MAP, a mapping
 * from there on. 0, or -1 (b unchanged). */
static int resize(wbuf *b, size_t cap)
{
    char *p;
    if (cap < WBUF_MAP && b->cap < WBUF_MAP) {
        p = realloc(b->data, cap);
    } else {
        cap = (cap + PAGE - 1) & ~(size_t)(PAGE - 1);
        if (b->cap >= WBUF_MAP) {
            p = mremap(b->data, b->cap, cap, MREMAP_MAYMOVE);
        } else {
            p = mmap(NULL, cap, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
            if (p != MAP_FAILED) {
                madvise(p, cap, MADV_HUGEPAGE);
                if (b->len)
                    memcpy(p, b->data, b->len);
                free(b->data);
            }
        }
        if (p == MAP_FAILED)
            p = NULL;
    }
    if (!p)
        return -1;
    b->data = p;
    b->cap = cap;
    return 0;
}

static void release(wbuf *b)
{
    if (b->cap >= WBUF_MAP)
        munmap(b->data, b->cap);
    else
        free(b->data);
    b->data = NULL;
    b->cap = 0;
}

int wbuf_reserve_exact(wbuf *b, size_t want)
{
    if (b->cap - b->len >= want)
        return 0;
    wbuf_compact(b);
    if (b->cap - b->len >= want)
        return 0;
    if (want > (size_t)-1 / 2 - b->len)
        return -1;
    return resize(b, b->len + want);
}

int wbuf_reserve(wbuf *b, size_t extra)
{
    if (b->cap - b->len >= extra)
        return 0;
    /* Consumed bytes are dropped only when they are at least as many as
     * those left: a big buffer written out a socket's worth at a time is
     * then moved O(1) times, not once a write. */
    if (b->off > 0 && b->off >= b->len - b->off) {
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
    return resize(b, cap);
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
    if (b->cap > WBUF_KEEP)
        release(b);
}

void wbuf_free(wbuf *b)
{
    release(b);
    b->len = b->off = 0;
}

/* ---- scratch buffers ------------------------------------------------------
 * A C function that encodes into a scratch buffer holds it as its upvalue 1
 * (a userdata that frees the buffer when collected), marked busy while in
 * use. A call that finds it busy (a nested call from a finalizer, or any
 * call after an error left it busy) uses a fresh one, which becomes the
 * upvalue once that call succeeds; one left busy by an error is then
 * collected with its userdata. The common path touches no upvalue. */

#define SCRATCH_MT "orch.scratch"

typedef struct scratch {
    wbuf b; /* first: a scratch's wbuf is the scratch */
    int busy;
} scratch;

static int scratch_gc(lua_State *L)
{
    scratch *s = luaL_checkudata(L, 1, SCRATCH_MT);
    wbuf_free(&s->b);
    return 0;
}

wbuf *wbuf_scratch_new(lua_State *L)
{
    scratch *s = lua_newuserdatauv(L, sizeof *s, 0);
    memset(s, 0, sizeof *s); /* empty before it can own anything */
    if (luaL_newmetatable(L, SCRATCH_MT)) {
        lua_pushcfunction(L, scratch_gc);
        lua_setfield(L, -2, "__gc");
    }
    lua_setmetatable(L, -2);
    return &s->b;
}

void wbuf_scratch_fn(lua_State *L, lua_CFunction fn, const char *name)
{
    wbuf_scratch_new(L);
    lua_pushcclosure(L, fn, 1);
    lua_setfield(L, -2, name);
}

wbuf *wbuf_scratch_take(lua_State *L)
{
    lua_pushvalue(L, lua_upvalueindex(1)); /* on the stack: alive while in use */
    scratch *s = lua_touserdata(L, -1);
    if (s->busy) {
        lua_pop(L, 1);
        s = (scratch *)wbuf_scratch_new(L);
    }
    s->busy = 1;
    wbuf_reset(&s->b);
    return &s->b;
}

void wbuf_scratch_give(lua_State *L, wbuf *b, int holder)
{
    scratch *s = (scratch *)b;
    s->busy = 0;
    wbuf_reset(b);
    if (lua_touserdata(L, lua_upvalueindex(1)) != s) {
        lua_pushvalue(L, holder);
        lua_replace(L, lua_upvalueindex(1));
    }
}
