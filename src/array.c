/*
 * array.c - a table's array part, read and written in place.
 *
 * The serializer's lists are mostly integers (map's items and results, a
 * table of numbers), and through the API each costs a push, a type check,
 * a read and a pop on one side, a push and a rawseti on the other: that
 * is most of an encoding's time. Lua 5.4 keeps a table's keys 1..n (n the
 * array size) in a plain array of tagged values, so the serializer reads
 * and writes the integers among them there (see orch.h's array_slot),
 * and everything else through the API as before.
 *
 * Lua's API has no call for this: the layout is Lua 5.4's ltable.h and
 * lobject.h (Table, TValue, luaH_realasize), and it is used only after
 * array_open has checked it on tables it made and filled through the API
 * (sizes, tags, values, a write read back, an array part grown by Lua and
 * shrunk by the length operator, a hash part). If anything disagrees,
 * array_of always says "no array part" and callers keep to the API.
 *
 * array(n) makes the table map's results are decoded into, at its full
 * size.
 *
 * Invariants: only integers are written (not collectable: no GC barrier
 * is needed, whatever the table's colour), and only into slots of the
 * array part, which is where Lua itself would put those keys. A slot
 * pointer is good until Lua code or an allocation may run (a finalizer
 * can resize the table): callers fetch it again after anything else.
 */
#include <stdint.h>
#include <string.h>

#include "orch.h"

/* Lua 5.4's Table (ltable.h), up to what is read here. */
struct table_head {
    void *next;                     /* CommonHeader */
    unsigned char tt, marked;
    unsigned char flags;
    unsigned char lsizenode;
    unsigned int alimit;
    array_slot *array;
    void *node;
    void *lastfree;                 /* NULL: the hash part is the empty dummy */
};

#define BITRAS (1u << 7)            /* flags: alimit is not the array's size */
#define TAG_FLOAT 0x13              /* LUA_VNUMFLT */

static int layout_ok;

/* The array size as luaH_realasize computes it from alimit. */
static size_t real_size(const struct table_head *t)
{
    unsigned int size = t->alimit;
    if (!(t->flags & BITRAS) || (size & (size - 1)) == 0)
        return size;
    size |= size >> 1;
    size |= size >> 2;
    size |= size >> 4;
    size |= size >> 8;
    size |= size >> 16;
    return (size_t)size + 1;
}

array_slot *array_of(lua_State *L, int idx, size_t *n, int *hash_empty)
{
    *n = 0;
    if (!layout_ok)
        return NULL;
    const struct table_head *t = lua_topointer(L, idx);
    if (hash_empty)
        *hash_empty = t->lastfree == NULL;
    *n = real_size(t);
    return *n ? t->array : NULL;
}

/* The layout checks, on the tables at the top: see the header. */
static int check_made(lua_State *L)
{
    /* 1: made with room for 5, filled through the API */
    const struct table_head *a = lua_topointer(L, -3);
    size_t n;
    if (a->alimit != 5 || (a->flags & BITRAS) || a->lastfree != NULL || real_size(a) != 5)
        return 0;
    for (int i = 0; i < 5; i++) {
        const array_slot *s = &a->array[i];
        if (i == 2 ? s->tt != TAG_FLOAT || s->v.n != 2.5 : s->tt != ARRAY_INT || s->v.i != 11 + i)
            return 0;
    }
    array_slot *w = array_of(L, -3, &n, NULL);
    array_slot_set_int(&w[1], -77);
    if (lua_rawgeti(L, -3, 2) != LUA_TNUMBER || !lua_isinteger(L, -1) ||
        lua_tointeger(L, -1) != -77)
        return 0;
    lua_pop(L, 1);
    /* 2: a hash part */
    const struct table_head *h = lua_topointer(L, -2);
    if (h->lastfree == NULL || h->alimit != 0 || h->node == a->node)
        return 0;
    /* 3: grown by Lua to 16, emptied down to 9 (the length operator may
     * have made 9 its limit) */
    int empty;
    array_slot *s = array_of(L, -1, &n, &empty);
    if (!s || !empty || n != 16)
        return 0;
    for (size_t i = 0; i < n; i++)
        if (i < 9 ? s[i].tt != ARRAY_INT || s[i].v.i != (lua_Integer)i + 1
                  : !array_slot_empty(&s[i]))
            return 0;
    return 1;
}

static void check_layout(lua_State *L)
{
    static const char grown[] =
        "local t = {} for i = 1, 16 do t[i] = i end "
        "for i = 16, 10, -1 do t[i] = nil end "
        "return t, #t";
    layout_ok = 1; /* for the checks' own array_of */
    lua_createtable(L, 5, 0);
    for (int i = 1; i <= 5; i++) {
        if (i == 3)
            lua_pushnumber(L, 2.5);
        else
            lua_pushinteger(L, 10 + i);
        lua_rawseti(L, -2, i);
    }
    lua_createtable(L, 0, 4);
    lua_pushinteger(L, 1);
    lua_setfield(L, -2, "x");
    if (luaL_loadstring(L, grown) != LUA_OK || lua_pcall(L, 0, 2, 0) != LUA_OK) {
        layout_ok = 0;
        lua_pop(L, 3);
        return;
    }
    int len = (int)lua_tointeger(L, -1);
    lua_pop(L, 1);
    layout_ok = len == 9 && sizeof(array_slot) == 16 && check_made(L);
    lua_pop(L, 3);
}

/* array_in_place() -> boolean: whether the serializer reads and writes
 * arrays in place (the layout checks passed). */
static int l_array_in_place(lua_State *L)
{
    lua_pushboolean(L, layout_ok);
    return 1;
}

/* set_array_in_place(on): turns the in-place path off (specs run the
 * API's path with it), or on again if the checks passed. */
static int l_set_array_in_place(lua_State *L)
{
    int on = lua_toboolean(L, 1);
    if (!on) {
        layout_ok = 0;
        return 0;
    }
    lua_settop(L, 0);
    check_layout(L);
    return 0;
}

/* array(n) -> a table with room for n array items (map's results). Its
 * array part, when big, is in huge pages like any big block of the
 * state's (alloc_big.c): a million items are 16 MiB that Lua clears as
 * it makes them, and 4,096 faults of 4 KiB pages would cost the parent
 * more than decoding the results. */
static int l_array(lua_State *L)
{
    lua_Integer n = luaL_checkinteger(L, 1);
    luaL_argcheck(L, n >= 0 && n <= 0x7fffffff, 1, "size out of range");
    lua_createtable(L, (int)n, 0);
    return 1;
}

void array_open(lua_State *L)
{
    check_layout(L);
    lua_pushcfunction(L, l_array_in_place);
    lua_setfield(L, -2, "array_in_place");
    lua_pushcfunction(L, l_set_array_in_place);
    lua_setfield(L, -2, "set_array_in_place");
    lua_pushcfunction(L, l_array);
    lua_setfield(L, -2, "array");
}
