/*
 * wire_enc.c - the serializer's encoder: Lua values to bytes, in the
 * format wire.h describes.
 *
 * Invariants. The encoder writes only into a wbuf owned by a userdata and
 * holds no other memory, so a refusal (a Lua error naming the path of the
 * offending value) leaks nothing. The path is kept as a cheap array of
 * steps and turned into text only on error (wire_path.c). A slice's bounds are checked
 * before anything is written, whatever integers they are. Bytes once
 * written never move: counts not known in advance are written padded and
 * patched, and a back-reference marks its first occurrence's tag where it
 * lies.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "wire.h"

#define NO_TAG ((size_t)-1) /* a ref with no tag in the stream */

#define NOFUNC_MSG "cannot send a function: functions only travel from " \
                   "the parent to its workers"

/* ---- bytes ---------------------------------------------------------- */

static void enc_any(wire_enc *e, int idx, int type);
static void enc_upvalues(wire_enc *e, int fidx);

/* Makes room for n more bytes and returns where they go. */
static unsigned char *enc_room(wire_enc *e, size_t n)
{
    wbuf *b = e->b;
    if (b->cap - b->len < n && wbuf_reserve(b, n) != 0)
        luaL_error(e->L, "not enough memory");
    return (unsigned char *)b->data + b->len;
}

/* Offsets into the encoding are kept relative to b->off: wbuf_reserve may
 * compact the buffer, which moves the bytes but not these offsets. */
static size_t enc_mark(wire_enc *e)
{
    return e->b->len - e->b->off;
}

static unsigned char *enc_at(wire_enc *e, size_t mark)
{
    return (unsigned char *)e->b->data + e->b->off + mark;
}

static void enc_byte(wire_enc *e, int c)
{
    *enc_room(e, 1) = (unsigned char)c;
    e->b->len++;
}

static void enc_uvar(wire_enc *e, uint64_t v)
{
    e->b->len += uvar_put(enc_room(e, UVAR_MAX), v);
}

/* A length-prefixed run of bytes (no tag). */
static void enc_lstr(wire_enc *e, const char *s, size_t l)
{
    if (l > (size_t)-1 - 1 - UVAR_MAX)
        luaL_error(e->L, "not enough memory");
    unsigned char *p = enc_room(e, 1 + UVAR_MAX + l);
    size_t k = uvar_put(p, l);
    memcpy(p + k, s, l);
    e->b->len += k + l;
}

/* Whether n bytes may be left where they are (wire_enc's ext_min). */
static int ext_fits(const wire_enc *e, size_t n)
{
    return e->ext_min > 0 && n >= e->ext_min && e->n_ext < WIRE_EXTS;
}

/* n bytes at p left where they are, here in the encoding (ext_fits);
 * idx: the string they are, kept in ext_keep's table if there is one. */
static void enc_ext(wire_enc *e, int idx, const char *p, size_t n)
{
    wire_ext *x = &e->ext[e->n_ext++];
    x->at = enc_mark(e);
    x->p = p;
    x->n = n;
    if (e->ext_keep) {
        lua_State *L = e->L;
        luaL_checkstack(L, 2, "orch: encoding too deep");
        if (lua_type(L, e->ext_keep) != LUA_TTABLE) {
            lua_createtable(L, WIRE_EXTS, 0);
            lua_replace(L, e->ext_keep);
        }
        lua_pushvalue(L, idx);
        lua_rawseti(L, e->ext_keep, e->n_ext);
    }
}

/* The string s (l bytes) at idx. */
static void enc_string(wire_enc *e, int idx, const char *s, size_t l)
{
    if (ext_fits(e, l)) {
        enc_byte(e, T_STR);
        enc_uvar(e, l);
        enc_ext(e, idx, s, l);
        return;
    }
    if (l <= SHORTSTR_MAX) {
        unsigned char *p = enc_room(e, 1 + SHORTSTR_MAX);
        p[0] = (unsigned char)(T_SHORTSTR + l);
        memcpy(p + 1, s, l);
        e->b->len += 1 + l;
        return;
    }
    enc_byte(e, T_STR);
    enc_lstr(e, s, l);
}

static void enc_int(wire_enc *e, lua_Integer n)
{
    if (n >= FIXINT_MIN && n <= FIXINT_MAX) {
        enc_byte(e, (int)(n + 0x80));
        return;
    }
    unsigned char *p = enc_room(e, 1 + UVAR_MAX);
    p[0] = T_INT;
    e->b->len += 1 + uvar_put(p + 1, zigzag(n));
}

static void enc_float(wire_enc *e, lua_Number x)
{
    uint64_t u;
    double d = (double)x;
    memcpy(&u, &d, 8);
    unsigned char *p = enc_room(e, 9);
    p[0] = T_FLOAT;
    for (int i = 0; i < 8; i++)
        p[1 + i] = (unsigned char)(u >> (8 * i));
    e->b->len += 9;
}

/* ---- integer runs --------------------------------------------------- */

/* An integer run being written (a list, enc_table; wire_run in orch.h): n
 * values so far after the T_IRUN tag and a count of w bytes at mark `at`,
 * patched when the run ends (the padded form: nothing after it moves). */

/* Opens a run whose count is written in the width of `most`, the array
 * values left at most. */
static void run_open(wire_enc *e, wire_run *r, size_t most)
{
    r->w = uvar_size(most);
    unsigned char *p = enc_room(e, 1 + r->w);
    p[0] = T_IRUN;
    r->at = enc_mark(e) + 1;
    e->b->len += 1 + r->w;
}

/* Appends the array value v: to the open run; else a small integer as
 * its one-byte tag (as short, and decoded as fast), any other as the
 * first of a new run. */
static inline void run_add(wire_enc *e, wire_run *r, lua_Integer v, size_t most)
{
    if (r->n == 0) {
        if (v >= FIXINT_MIN && v <= FIXINT_MAX) {
            enc_byte(e, (int)(v + 0x80));
            return;
        }
        run_open(e, r, most);
    }
    r->n++;
    r->last = v;
    wbuf *b = e->b;
    unsigned char *p = b->cap - b->len >= UVAR_MAX ? (unsigned char *)b->data + b->len
                                                  : enc_room(e, UVAR_MAX);
    b->len += uvar_put(p, zigzag(v));
}

/* Ends the open run, if any: a run of one becomes a plain integer (the
 * run holds only its varint, so it is rewritten where it began). */
static void run_close(wire_enc *e, wire_run *r)
{
    if (r->n == 1) {
        e->b->len = e->b->off + r->at - 1;
        enc_int(e, r->last);
    } else if (r->n > 1) {
        uvar_put_fixed(enc_at(e, r->at), r->n, r->w);
    }
    r->n = 0;
}

/* Appends to the run r the integers of the slots a[0..n) (read in place),
 * up to the first slot that holds something else; `most` bounds the
 * array values left from a[0] on (a run's count width). Returns how many
 * it took. The output position and the run stay in locals: a store
 * through the byte pointer could otherwise alias them. */
static size_t enc_ints_in_place(wire_enc *e, wire_run *r, const array_slot *a, size_t n,
                                size_t most)
{
    wbuf *b = e->b;
    wire_run run = *r;
    size_t k = 0;
    while (k < n) {
        size_t m = n - k < 256 ? n - k : 256, q = 0;
        unsigned char *p = enc_room(e, (m + 2) * UVAR_MAX);
        const unsigned char *start = (const unsigned char *)b->data + b->off;
        for (; q < m && a[k + q].tt == ARRAY_INT; q++) {
            lua_Integer v = a[k + q].v.i;
            if (run.n == 0) {
                if (v >= FIXINT_MIN && v <= FIXINT_MAX) {
                    *p++ = (unsigned char)(v + 0x80);
                    continue;
                }
                run.w = uvar_size(most - k - q); /* run_open */
                *p = T_IRUN;
                run.at = (size_t)(p + 1 - start);
                p += 1 + run.w;
            }
            run.n++;
            run.last = v;
            p += uvar_put(p, zigzag(v));
        }
        b->len = (size_t)(p - (unsigned char *)b->data);
        k += q;
        if (q < m)
            break;
    }
    *r = run;
    return k;
}

/* Opens one level of nesting and returns its path step. */
static wire_step *enc_enter(wire_enc *e)
{
    if (e->depth >= WIRE_MAXDEPTH)
        wire_enc_fail(e, "nesting deeper than 200");
    if (!lua_checkstack(e->L, 8))
        wire_enc_fail(e, "not enough stack space");
    return &e->path[e->depth++];
}

/* ---- references ----------------------------------------------------- */

/* The ref number of the table or function at idx, or 0 if not seen yet.
 * Refs 1..WIRE_INLINE_REFS are found by identity in e->seen, which
 * spares small frames a Lua table: the values are reachable from the
 * value being encoded, so alive, as long as nothing changes it meanwhile
 * (only a finalizer run by an allocation here could). Later refs are in
 * the context table, which maps value -> ref and ref -> tag position. */
static lua_Integer enc_lookup(wire_enc *e, int idx)
{
    const void *p = lua_topointer(e->L, idx);
    int n = e->nrefs < WIRE_INLINE_REFS ? e->nrefs : WIRE_INLINE_REFS;
    for (int i = 0; i < n; i++)
        if (e->seen[i] == p)
            return i + 1;
    if (e->nrefs <= WIRE_INLINE_REFS)
        return 0;
    lua_State *L = e->L;
    lua_pushvalue(L, idx);
    lua_Integer r = lua_rawget(L, e->ctx) == LUA_TNUMBER ? lua_tointeger(L, -1) : 0;
    lua_pop(L, 1);
    return r;
}

/* Numbers the value at idx, whose tag is about to be written at `at`. */
static void enc_register(wire_enc *e, int idx, size_t at)
{
    lua_State *L = e->L;
    int r = ++e->nrefs;
    if (r <= WIRE_INLINE_REFS) {
        e->seen[r - 1] = lua_topointer(L, idx);
        e->seen_at[r - 1] = at;
        return;
    }
    if (lua_type(L, e->ctx) != LUA_TTABLE) {
        lua_createtable(L, 16, 16);
        lua_replace(L, e->ctx);
    }
    lua_pushvalue(L, idx);
    lua_pushinteger(L, r);
    lua_rawset(L, e->ctx);
    lua_pushinteger(L, at == NO_TAG ? -1 : (lua_Integer)at);
    lua_rawseti(L, e->ctx, r);
}

/* Writes a back-reference if the value at idx was seen, and marks its
 * first occurrence as shared. */
static int enc_backref(wire_enc *e, int idx)
{
    lua_Integer r = enc_lookup(e, idx);
    if (!r)
        return 0;
    size_t at;
    if (r <= WIRE_INLINE_REFS) {
        at = e->seen_at[r - 1];
    } else {
        lua_rawgeti(e->L, e->ctx, r);
        lua_Integer a = lua_tointeger(e->L, -1);
        lua_pop(e->L, 1);
        at = a < 0 ? NO_TAG : (size_t)a;
    }
    if (at != NO_TAG)
        *enc_at(e, at) |= T_SHARED;
    unsigned char *p = enc_room(e, 1 + UVAR_MAX);
    p[0] = T_REF;
    e->b->len += 1 + uvar_put(p + 1, (uint64_t)r);
    return 1;
}

/* ---- tables --------------------------------------------------------- */

/* The hash part's size hint: exact below 128, else 128 + bit length. */
static unsigned char hash_hint(uint64_t nh)
{
    if (nh < 0x80)
        return (unsigned char)nh;
    int bits = 0;
    while (nh) {
        bits++;
        nh >>= 1;
    }
    return (unsigned char)(0x80 + bits);
}

/* A table without a hash part has all its keys in its array part: keys
 * 1.. up to the first hole (or n, the border) are sent from there, the
 * integers read in place and the other values through the API. Returns
 * how many; 0 for a table with a hash part, which lua_next walks whole. */
static size_t enc_array_in_place(wire_enc *e, int idx, size_t n, wire_step *st,
                                 wire_run *run)
{
    lua_State *L = e->L;
    size_t size, k = 0;
    int no_hash;
    array_slot *a = array_of(L, idx, &size, &no_hash);
    if (!a || !no_hash)
        return 0;
    if (n > size)
        n = size;
    while (k < n) {
        k += enc_ints_in_place(e, run, a + k, n - k, n - k);
        if (k == n || array_slot_empty(&a[k]))
            break;
        run_close(e, run);
        st->kind = S_INT;
        st->n = (lua_Integer)++k;
        int type = lua_rawgeti(L, idx, (lua_Integer)k);
        enc_any(e, lua_gettop(L), type);
        lua_pop(L, 1);
        a = array_of(L, idx, &size, &no_hash); /* a finalizer may have resized it */
        if (!a || n > size)
            break;
    }
    return k;
}

/* 1 if the table at idx may travel: it has no metatable, or one that says
 * __wire = true (an orch.queue handle), which lets it go as a plain table. */
static int plain_table(lua_State *L, int idx)
{
    if (!lua_getmetatable(L, idx))
        return 1;
    lua_pushliteral(L, "__wire");
    int plain = lua_rawget(L, -2) == LUA_TBOOLEAN && lua_toboolean(L, -1);
    lua_pop(L, 2);
    return plain;
}

/* One pass with lua_next. Lua visits the array part first, in key order,
 * so the run of keys 1, 2, 3... it starts with is sent as the array part;
 * from the first other key on, everything is sent as a pair (an integer
 * key met later too). A hole thus ends the array part and a sparse table
 * never turns into a run of nils. The array count is at most the border
 * lua_rawlen gives (1..na are all non-nil), so it is written in that
 * border's width and patched afterwards, as is the one-byte hash hint:
 * nothing written ever moves. Integers in the array part go as runs
 * (T_IRUN), with no path step kept for them. Without a hash part the
 * array part is read in place first. */
static void enc_table(wire_enc *e, int idx)
{
    lua_State *L = e->L;
    if (enc_backref(e, idx))
        return;
    if (!plain_table(L, idx))
        wire_enc_fail(e, "cannot send a table with a metatable");
    wire_step *st = enc_enter(e);
    enc_register(e, idx, enc_mark(e));
    size_t n = (size_t)lua_rawlen(L, idx);
    size_t w = uvar_size(n);
    unsigned char *p = enc_room(e, 1 + w + 1);
    p[0] = T_TABLE;
    size_t na_at = enc_mark(e) + 1;
    size_t nh_at = na_at + w;
    e->b->len += 1 + w + 1;
    int top = lua_gettop(L) + 1;
    uint64_t nh = 0;
    wire_run run = { 0, 0, 0, 0 };
    size_t na = enc_array_in_place(e, idx, n, st, &run);
    if (na > 0)
        lua_pushinteger(L, (lua_Integer)na); /* lua_next goes on after it */
    else
        lua_pushnil(L);
    while (lua_next(L, idx)) { /* key at top, value at top + 1 */
        /* a float key is never integral (Lua normalizes those) */
        if (nh == 0 && na < n && lua_isinteger(L, top) &&
            lua_tointeger(L, top) == (lua_Integer)na + 1) {
            na++;
            if (lua_isinteger(L, top + 1)) {
                run_add(e, &run, lua_tointeger(L, top + 1), n - na + 1);
                lua_settop(L, top);
                continue;
            }
            run_close(e, &run);
            st->kind = S_INT;
            st->n = (lua_Integer)na;
        } else {
            if (nh == 0) { /* the array part ends here */
                run_close(e, &run);
                uvar_put_fixed(enc_at(e, na_at), na, w);
            }
            st->kind = S_KEY;
            enc_any(e, top, lua_type(L, top));
            st->kind = S_VAL;
            st->idx = top;
            nh++;
        }
        enc_any(e, top + 1, lua_type(L, top + 1));
        lua_settop(L, top);
    }
    if (nh == 0) {
        run_close(e, &run);
        uvar_put_fixed(enc_at(e, na_at), na, w);
    }
    *enc_at(e, nh_at) = hash_hint(nh);
    enc_byte(e, T_NIL); /* end of the pairs */
    e->depth--;
}

/* ---- functions ------------------------------------------------------ */

static int dump_to_wbuf(lua_State *L, const void *p, size_t sz, void *ud)
{
    wbuf *b = ud;
    (void)L;
    if (b->cap - b->len < sz && wbuf_reserve(b, sz) != 0)
        return 1;
    memcpy(b->data + b->len, p, sz);
    b->len += sz;
    return 0;
}

/* Finds a loaded module exporting the C function at fidx: pushes the
 * module name and the key and returns 1, or pushes nothing and returns 0.
 * Looks one level deep: package.loaded[mod][key] == f. */
static int find_cfunction(lua_State *L, int fidx)
{
    luaL_checkstack(L, 6, "not enough stack space");
    luaL_getsubtable(L, LUA_REGISTRYINDEX, LUA_LOADED_TABLE);
    int loaded = lua_gettop(L);
    lua_pushnil(L);
    while (lua_next(L, loaded)) { /* loaded, mod, module */
        if (lua_type(L, -2) == LUA_TSTRING && lua_type(L, -1) == LUA_TTABLE) {
            lua_pushnil(L);
            while (lua_next(L, -2)) { /* loaded, mod, module, key, value */
                if (lua_type(L, -2) == LUA_TSTRING && lua_rawequal(L, -1, fidx)) {
                    lua_pop(L, 1);
                    lua_remove(L, -2); /* loaded, mod, key */
                    lua_remove(L, loaded);
                    return 1;
                }
                lua_pop(L, 1);
            }
        }
        lua_pop(L, 1);
    }
    lua_pop(L, 1);
    return 0;
}

static void enc_function(wire_enc *e, int idx)
{
    lua_State *L = e->L;
    if (enc_backref(e, idx))
        return;
    if (!(e->flags & WIRE_FUNCTIONS))
        wire_enc_fail(e, NOFUNC_MSG);
    if (lua_iscfunction(L, idx)) {
        if (!find_cfunction(L, idx))
            wire_enc_fail(e, "cannot send a C function that no loaded module "
                        "exports (package.loaded[mod][key])");
        size_t ml, kl;
        const char *mod = lua_tolstring(L, -2, &ml);
        const char *key = lua_tolstring(L, -1, &kl);
        enc_register(e, idx, enc_mark(e));
        enc_byte(e, T_CFUNC);
        enc_lstr(e, mod, ml);
        enc_lstr(e, key, kl);
        lua_pop(L, 2);
        return;
    }
    enc_register(e, idx, enc_mark(e)); /* before the upvalues: recursion */
    enc_byte(e, T_LFUNC);
    /* Dump straight into the buffer, then slide the code up to make room
     * for its length in front (nothing numbered lies in the code). */
    size_t at = enc_mark(e);
    lua_pushvalue(L, idx);
    int bad = lua_dump(L, dump_to_wbuf, e->b, 0);
    lua_pop(L, 1);
    if (bad)
        luaL_error(L, "not enough memory");
    size_t len = enc_mark(e) - at;
    size_t k = uvar_size(len);
    enc_room(e, k);
    unsigned char *p = enc_at(e, at);
    memmove(p + k, p, len);
    uvar_put(p, len);
    e->b->len += k;
    enc_upvalues(e, idx);
}

/* If the table on top of the stack is a loaded module, pushes its name
 * and returns 1; else pushes nothing and returns 0. */
static int find_module(lua_State *L)
{
    int t = lua_gettop(L);
    luaL_checkstack(L, 4, "not enough stack space");
    luaL_getsubtable(L, LUA_REGISTRYINDEX, LUA_LOADED_TABLE);
    lua_pushnil(L);
    while (lua_next(L, t + 1)) { /* loaded, name, module */
        if (lua_type(L, -2) == LUA_TSTRING && lua_rawequal(L, -1, t)) {
            lua_pop(L, 1);
            lua_remove(L, t + 1);
            return 1;
        }
        lua_pop(L, 1);
    }
    lua_pop(L, 1);
    return 0;
}

static void enc_upvalues(wire_enc *e, int fidx)
{
    lua_State *L = e->L;
    int nups = 0;
    while (lua_getupvalue(L, fidx, nups + 1) != NULL) { /* cheaper than lua_getinfo */
        lua_pop(L, 1);
        nups++;
    }
    wire_step *st = enc_enter(e);
    st->kind = S_UPVAL;
    st->name = NULL;
    enc_uvar(e, (uint64_t)nups);
    if (nups == 0) {
        e->depth--;
        return;
    }
    lua_rawgeti(L, LUA_REGISTRYINDEX, LUA_RIDX_GLOBALS);
    int globals = lua_gettop(L);
    for (int i = 1; i <= nups; i++) {
        st->name = lua_getupvalue(L, fidx, i);
        if (strcmp(st->name, "_ENV") == 0 || lua_rawequal(L, -1, globals)) {
            enc_byte(e, T_ENV);
        } else if (lua_type(L, -1) == LUA_TTABLE && find_module(L)) {
            size_t l;
            const char *name = lua_tolstring(L, -1, &l);
            enc_byte(e, T_MODULE);
            enc_lstr(e, name, l);
            lua_pop(L, 1);
        } else {
            enc_any(e, globals + 1, lua_type(L, -1));
        }
        lua_pop(L, 1);
    }
    lua_pop(L, 1);
    e->depth--;
}

/* ---- any value ------------------------------------------------------ */

static void enc_any(wire_enc *e, int idx, int type)
{
    lua_State *L = e->L;
    switch (type) {
    case LUA_TNIL:
        enc_byte(e, T_NIL);
        break;
    case LUA_TBOOLEAN:
        enc_byte(e, lua_toboolean(L, idx) ? T_TRUE : T_FALSE);
        break;
    case LUA_TNUMBER:
        if (lua_isinteger(L, idx))
            enc_int(e, lua_tointeger(L, idx));
        else
            enc_float(e, lua_tonumber(L, idx));
        break;
    case LUA_TSTRING: {
        size_t l;
        const char *s = lua_tolstring(L, idx, &l);
        enc_string(e, idx, s, l);
        break;
    }
    case LUA_TTABLE:
        enc_table(e, idx);
        break;
    case LUA_TFUNCTION:
        enc_function(e, idx);
        break;
    case LUA_TLIGHTUSERDATA:
        wire_enc_fail(e, "cannot send light userdata");
        break;
    case LUA_TUSERDATA:
        wire_enc_fail(e, "cannot send userdata");
        break;
    case LUA_TTHREAD:
        wire_enc_fail(e, "cannot send a thread (coroutine)");
        break;
    default:
        wire_enc_fail(e, "cannot send this type");
        break;
    }
}

/* ---- a context ------------------------------------------------------ */

void wire_enc_begin(wire_enc *e, lua_State *L, wbuf *b, int flags)
{
    e->L = L;
    e->b = b;
    e->flags = flags;
    e->nrefs = 0;
    e->depth = 0;
    e->root = NULL;
    e->ext_min = 0;
    e->n_ext = 0;
    e->ext_keep = 0;
    lua_pushnil(L); /* the context table, made when a 9th ref needs it */
    e->ctx = lua_gettop(L);
}

void wire_enc_raw(wire_enc *e, const char *p, size_t n)
{
    if (ext_fits(e, n) && e->ext_keep == 0) {
        enc_ext(e, 0, p, n);
        return;
    }
    memcpy(enc_room(e, n), p, n);
    e->b->len += n;
}

void wire_enc_value(wire_enc *e, int idx, const char *root)
{
    idx = lua_absindex(e->L, idx);
    e->root = root;
    e->depth = 0;
    enc_any(e, idx, lua_type(e->L, idx));
}

/* ---- lists and slices ----------------------------------------------- */

/* The number of values in t[i..j], 0 when j < i, counted without
 * overflow however far apart i and j are; a slice longer than a list
 * can be is refused (the decoder would refuse it too). */
static size_t slice_length(wire_enc *e, lua_Integer i, lua_Integer j)
{
    if (j < i)
        return 0;
    uint64_t span = (uint64_t)j - (uint64_t)i; /* exact: j >= i */
    if (span >= WIRE_MAXLIST) {
        char what[128];
        snprintf(what, sizeof what, "slice " LUA_INTEGER_FMT ".." LUA_INTEGER_FMT
                 " too long (at most %d values)", (LUAI_UACINT)i, (LUAI_UACINT)j,
                 WIRE_MAXLIST);
        wire_enc_fail(e, what);
    }
    return (size_t)span + 1;
}

/* The open list's path step: its index is set only for a value that is
 * not an integer (integers cannot fail). */
void wire_enc_list_begin(wire_enc *e, size_t n, const char *root)
{
    lua_State *L = e->L;
    e->root = root;
    e->depth = 0;
    enc_enter(e)->kind = S_INT;
    lua_newtable(L); /* stands for the new table in the numbering */
    enc_register(e, lua_gettop(L), enc_mark(e));
    lua_pop(L, 1);
    unsigned char *p = enc_room(e, 1 + UVAR_MAX + 1);
    p[0] = T_TABLE;
    size_t w = uvar_put(p + 1, (uint64_t)n);
    p[1 + w] = hash_hint(0);
    e->b->len += 2 + w;
    e->run.n = 0;
    e->list_n = n;
    e->list_k = 0;
}

/* The next list value: an integer, or the value of this type at idx. */
static inline void list_int(wire_enc *e, lua_Integer v)
{
    size_t k = e->list_k++;
    run_add(e, &e->run, v, e->list_n - k); /* most of map's items */
}

static inline void list_add(wire_enc *e, int idx, int type)
{
    lua_State *L = e->L;
    if (type == LUA_TNUMBER && lua_isinteger(L, idx)) {
        list_int(e, lua_tointeger(L, idx));
        return;
    }
    size_t k = e->list_k++;
    run_close(e, &e->run);
    e->path[0].n = (lua_Integer)k + 1;
    enc_any(e, idx, type);
}

void wire_enc_list_add(wire_enc *e, int idx, int type)
{
    list_add(e, idx, type);
}

void wire_enc_list_ints(wire_enc *e, const array_slot *a, size_t n)
{
    e->list_k += enc_ints_in_place(e, &e->run, a, n, e->list_n - e->list_k);
}

void wire_enc_list_end(wire_enc *e)
{
    run_close(e, &e->run);
    enc_byte(e, T_NIL);
    e->depth--;
}

void wire_enc_slice(wire_enc *e, int idx, lua_Integer i, lua_Integer j, const char *root)
{
    lua_State *L = e->L;
    idx = lua_absindex(L, idx);
    e->root = root;
    e->depth = 0;
    size_t n = slice_length(e, i, j);
    wire_enc_list_begin(e, n, root);
    /* integers in the array part are read in place, the rest through the
     * API (after which the array is fetched again: it may have moved) */
    size_t size;
    array_slot *a = array_of(L, idx, &size, NULL);
    for (size_t k = 0; k < n;) { /* i + k <= j: no overflow */
        lua_Integer key = i + (lua_Integer)k;
        if (a && key >= 1 && (lua_Unsigned)key <= size) {
            size_t in = size - (size_t)(key - 1), m = n - k < in ? n - k : in;
            size_t got = enc_ints_in_place(e, &e->run, a + (key - 1), m, e->list_n - e->list_k);
            e->list_k += got;
            k += got;
            if (got == m)
                continue;
            key = i + (lua_Integer)k;
        }
        k++;
        int type = lua_rawgeti(L, idx, key);
        list_add(e, lua_gettop(L), type);
        lua_pop(L, 1);
        a = array_of(L, idx, &size, NULL);
    }
    wire_enc_list_end(e);
}

/* A bare zigzag varint, no tag: for headers around the values. */
void wire_enc_integer(wire_enc *e, lua_Integer n)
{
    enc_uvar(e, zigzag(n));
}

/* The function at fidx takes the next ref number, so that its upvalues
 * can refer to it; wire_dec_upvalues numbers its function the same way. */
void wire_enc_upvalues(wire_enc *e, int fidx)
{
    lua_State *L = e->L;
    fidx = lua_absindex(L, fidx);
    luaL_checktype(L, fidx, LUA_TFUNCTION);
    if (lua_iscfunction(L, fidx))
        luaL_error(L, "wire_enc_upvalues: not a Lua function");
    e->root = NULL;
    e->depth = 0;
    enc_register(e, fidx, NO_TAG);
    enc_upvalues(e, fidx);
}

void wire_enc_end(wire_enc *e)
{
    lua_remove(e->L, e->ctx);
}

/* ---- Lua binding ---------------------------------------------------- */

static int encode_with(lua_State *L, int flags)
{
    int n = lua_gettop(L);
    wbuf *b = wbuf_scratch_take(L);
    int holder = lua_gettop(L);
    static const char *const roots[] = {
        "args[1]", "args[2]", "args[3]", "args[4]",
        "args[5]", "args[6]", "args[7]", "args[8]",
    };
    wire_enc e;
    char root[32];
    wire_enc_begin(&e, L, b, flags);
    for (int i = 1; i <= n; i++) {
        if (i <= 8) {
            wire_enc_value(&e, i, roots[i - 1]);
        } else {
            snprintf(root, sizeof root, "args[%d]", i);
            wire_enc_value(&e, i, root);
        }
    }
    wire_enc_end(&e);
    lua_pushlstring(L, b->data + b->off, b->len - b->off);
    wbuf_scratch_give(L, b, holder);
    return 1;
}

/* encode(...) -> string: all the values, functions allowed. */
static int l_encode(lua_State *L)
{
    return encode_with(L, WIRE_FUNCTIONS);
}

/* encode_strict(...) -> string: as a worker sends, functions refused. */
static int l_encode_strict(lua_State *L)
{
    return encode_with(L, 0);
}

/* encode_slice(t, i, j) -> string: the list t[i..j] as one table, as
 * encode_strict({table.unpack(t, i, j)}) makes it, without building it; a
 * value that cannot cross is named result[k]. map's chunks of results. */
static int l_encode_slice(lua_State *L)
{
    luaL_checktype(L, 1, LUA_TTABLE);
    lua_Integer i = luaL_checkinteger(L, 2), j = luaL_checkinteger(L, 3);
    lua_settop(L, 3);
    wbuf *b = wbuf_scratch_take(L);
    int holder = lua_gettop(L);
    wire_enc e;
    wire_enc_begin(&e, L, b, 0);
    wire_enc_slice(&e, 1, i, j, "result");
    wire_enc_end(&e);
    lua_pushlstring(L, b->data + b->off, b->len - b->off);
    wbuf_scratch_give(L, b, holder);
    return 1;
}

/* Registers encode, encode_strict and encode_slice in the table at the
 * top of the stack, each with a scratch buffer of its own. */
void wire_enc_open(lua_State *L)
{
    wbuf_scratch_fn(L, l_encode, "encode");
    wbuf_scratch_fn(L, l_encode_strict, "encode_strict");
    wbuf_scratch_fn(L, l_encode_slice, "encode_slice");
}
