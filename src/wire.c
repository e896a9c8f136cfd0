/*
 * wire.c - the value serializer: Lua values to bytes and back.
 *
 * Format. A value is one tag byte and what the tag says follows:
 *
 *   0x00            nil
 *   0x01 / 0x02     false / true
 *   0x03 zz         integer, zigzag varint (any 64-bit value)
 *   0x04 f64        float, the 8 bytes of the IEEE double, little-endian
 *                   (bit-exact: NaN payloads, -0.0, infinities)
 *   0x05 len bytes  string of any length
 *   0x06 na h v*na (k v)* 0x00
 *                   table: na array values for keys 1..na, then key/value
 *                   pairs up to a nil key; h (one byte) sizes the hash part
 *                   in advance: the pair count below 128, else 128 + its
 *                   bit length (a hint only: the 0x00 ends the pairs)
 *   0x07 ref        the table or function numbered ref (from 1) earlier
 *                   in the same context
 *   0x08 len mod len key
 *                   C function, require(mod)[key] on the receiving side
 *   0x09 len code nu u*nu
 *                   Lua function: lua_dump bytecode (debug info kept),
 *                   then its nu upvalues, each a value or 0x0a
 *   0x0a            (only as an upvalue) the receiver's globals: sent for
 *                   an upvalue named _ENV (whatever table it holds, e.g.
 *                   a sandbox) and for one holding the sender's globals
 *   0x0b len name   (only as an upvalue) a loaded module, by name:
 *                   require(name) on the receiving side, so a task that
 *                   closes over `local orch = require "orch"` gets the
 *                   worker's own module, not a copy of the parent's
 *   0x0c k zz*k     (only among a table's na array values) an integer
 *                   run: the next k (>= 2) array values are integers,
 *                   each a bare zigzag varint, no tag (the encoder opens
 *                   one at an integer outside -32..127)
 *   0x16 0x18 0x19  as 0x06 0x08 0x09, for a value referred to again later
 *   0x20..0x3f      string of 0..31 bytes, the bytes follow
 *   0x60..0xff      integer tag - 0x80 (-32..127) in one byte
 *
 * Lengths, counts and refs are unsigned LEB128 varints (at most 10 bytes;
 * padded forms are accepted). Every table and function is numbered at first
 * sight, in encoding order, before its contents, so a second occurrence,
 * a cycle or a recursive upvalue becomes a 0x07 back-reference. Numbering
 * spans one context (wire_*_begin .. wire_*_end), i.e. one frame. When
 * the encoder writes a back-reference it sets the 0x10 bit of the first
 * occurrence's tag (bytes never move once written, so that tag is where
 * it was), and the decoder keeps only those values in its context table:
 * a frame without sharing builds no table besides its own.
 *
 * Invariants. The encoder writes only into a wbuf owned by a userdata and
 * holds no other memory, so a refusal (a Lua error naming the path of the
 * offending value) leaks nothing. The path is kept as a cheap array of
 * steps and turned into text only on error. A slice's bounds are checked
 * before anything is written, whatever integers they are. The decoder
 * never reads past len, checks every length and count against the bytes
 * left before allocating, presizes tables from one budget per context
 * (a frame's tables together presize at most a slot per byte of it),
 * bounds nesting, restores the stack on failure and reports "byte N: what"
 * (N counted from 0) instead of raising; only memory errors raise.
 * Lua does not verify bytecode, so functions are decoded (lua_load, mode
 * "b") only under WIRE_FUNCTIONS: from the parent, never from a worker.
 */
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "orch.h"

enum {
    T_NIL = 0x00,
    T_FALSE = 0x01,
    T_TRUE = 0x02,
    T_INT = 0x03,
    T_FLOAT = 0x04,
    T_STR = 0x05,
    T_TABLE = 0x06,
    T_REF = 0x07,
    T_CFUNC = 0x08,
    T_LFUNC = 0x09,
    T_ENV = 0x0a,
    T_MODULE = 0x0b,
    T_IRUN = 0x0c,
    T_SHARED = 0x10, /* or-ed into T_TABLE, T_CFUNC, T_LFUNC */
    T_SHORTSTR = 0x20, /* 0x20..0x3f */
    T_FIXINT = 0x60,   /* 0x60..0xff: value tag - 0x80 */
};

#define SHORTSTR_MAX 31
#define FIXINT_MIN (-32)
#define FIXINT_MAX 127
#define UVAR_MAX 10
#define NO_TAG ((size_t)-1) /* a ref with no tag in the stream */
#define WIRE_MAXLIST 0x7fffffff /* values in one list: a Lua table's limit */

/* kinds of wire_step */
enum { S_INT, S_VAL, S_KEY, S_UPVAL };

#define NOFUNC_MSG "cannot send a function: functions only travel from " \
                   "the parent to its workers"

/* ---- varints -------------------------------------------------------- */

static size_t uvar_size(uint64_t v)
{
    size_t n = 1;
    while (v >= 0x80) {
        v >>= 7;
        n++;
    }
    return n;
}

static inline size_t uvar_put(unsigned char *p, uint64_t v)
{
    if (v < 0x80) {
        p[0] = (unsigned char)v;
        return 1;
    }
    if (v < 0x4000) {
        p[0] = (unsigned char)(v | 0x80);
        p[1] = (unsigned char)(v >> 7);
        return 2;
    }
    if (v < 0x200000) {
        p[0] = (unsigned char)(v | 0x80);
        p[1] = (unsigned char)((v >> 7) | 0x80);
        p[2] = (unsigned char)(v >> 14);
        return 3;
    }
    size_t i = 0;
    while (v >= 0x80) {
        p[i++] = (unsigned char)(v | 0x80);
        v >>= 7;
    }
    p[i++] = (unsigned char)v;
    return i;
}

/* Writes v in exactly w bytes (w >= uvar_size(v)): the padded form. */
static void uvar_put_fixed(unsigned char *p, uint64_t v, size_t w)
{
    for (size_t i = 0; i < w; i++) {
        p[i] = (unsigned char)((v & 0x7f) | (i + 1 < w ? 0x80 : 0));
        v >>= 7;
    }
}

static uint64_t zigzag(lua_Integer n)
{
    uint64_t u = (uint64_t)n << 1;
    return n < 0 ? ~u : u;
}

static lua_Integer unzigzag(uint64_t z)
{
    uint64_t u = (z >> 1) ^ (0 - (z & 1));
    /* two's complement without relying on implementation-defined casts */
    if (u <= (uint64_t)LUA_MAXINTEGER)
        return (lua_Integer)u;
    return -(lua_Integer)(~u) - 1;
}

/* ---- encoder -------------------------------------------------------- */

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

static void enc_string(wire_enc *e, const char *s, size_t l)
{
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

/* Appends a key in path notation: .name, ["two words"], [3], [true],
 * [<table>]. */
static void path_key(luaL_Buffer *B, lua_State *L, int kidx)
{
    char num[64];
    switch (lua_type(L, kidx)) {
    case LUA_TSTRING: {
        size_t l;
        const char *s = lua_tolstring(L, kidx, &l);
        size_t show = l > 40 ? 40 : l;
        int ident = l > 0 && l <= 40 && !(s[0] >= '0' && s[0] <= '9');
        for (size_t i = 0; ident && i < l; i++) {
            unsigned char c = (unsigned char)s[i];
            ident = c == '_' || (c >= 'a' && c <= 'z') ||
                    (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9');
        }
        if (ident) {
            luaL_addchar(B, '.');
            luaL_addlstring(B, s, l);
            break;
        }
        luaL_addstring(B, "[\"");
        for (size_t i = 0; i < show; i++) {
            unsigned char c = (unsigned char)s[i];
            if (c == '"' || c == '\\') {
                luaL_addchar(B, '\\');
                luaL_addchar(B, (char)c);
            } else if (c < 32 || c == 127) {
                snprintf(num, sizeof num, "\\%d", c);
                luaL_addstring(B, num);
            } else {
                luaL_addchar(B, (char)c);
            }
        }
        if (show < l)
            luaL_addstring(B, "...");
        luaL_addstring(B, "\"]");
        break;
    }
    case LUA_TNUMBER:
        if (lua_isinteger(L, kidx))
            snprintf(num, sizeof num, "[" LUA_INTEGER_FMT "]",
                     (LUAI_UACINT)lua_tointeger(L, kidx));
        else
            snprintf(num, sizeof num, "[" LUA_NUMBER_FMT "]",
                     (LUAI_UACNUMBER)lua_tonumber(L, kidx));
        luaL_addstring(B, num);
        break;
    case LUA_TBOOLEAN:
        luaL_addstring(B, lua_toboolean(L, kidx) ? "[true]" : "[false]");
        break;
    default:
        luaL_addstring(B, "[<");
        luaL_addstring(B, luaL_typename(L, kidx));
        luaL_addstring(B, ">]");
        break;
    }
}

static void path_step(luaL_Buffer *B, lua_State *L, const wire_step *s)
{
    char num[64];
    switch (s->kind) {
    case S_INT:
        snprintf(num, sizeof num, "[" LUA_INTEGER_FMT "]", (LUAI_UACINT)s->n);
        luaL_addstring(B, num);
        break;
    case S_VAL:
        path_key(B, L, s->idx);
        break;
    case S_KEY:
        luaL_addstring(B, ": key");
        break;
    case S_UPVAL:
        luaL_addstring(B, ": upvalue '");
        luaL_addstring(B, s->name ? s->name : "?");
        luaL_addchar(B, '\'');
        break;
    }
}

/* Raises "<path>: <what>". The path is the root, then one step per open
 * table or function; a very deep path keeps its two ends. */
static void enc_fail(wire_enc *e, const char *what)
    __attribute__((noreturn));

static void enc_fail(wire_enc *e, const char *what)
{
    lua_State *L = e->L;
    luaL_Buffer B;
    luaL_checkstack(L, 4, what);
    luaL_buffinit(L, &B);
    if (e->root)
        luaL_addstring(&B, e->root);
    int n = e->depth;
    for (int i = 0; i < n; i++) {
        if (n > 16 && i == 6) {
            luaL_addstring(&B, "...");
            i = n - 9;
            continue;
        }
        path_step(&B, L, &e->path[i]);
    }
    luaL_pushresult(&B);
    size_t l;
    const char *p = lua_tolstring(L, -1, &l);
    if (l >= 2 && p[0] == ':' && p[1] == ' ') { /* no root before an upvalue */
        lua_pushstring(L, p + 2);
        lua_remove(L, -2);
    }
    if (lua_rawlen(L, -1) > 0)
        lua_pushliteral(L, ": ");
    else
        lua_pushliteral(L, "");
    lua_pushstring(L, what);
    lua_concat(L, 3);
    lua_error(L);
    abort(); /* not reached: lua_error longjmps */
}

/* Opens one level of nesting and returns its path step. */
static wire_step *enc_enter(wire_enc *e)
{
    if (e->depth >= WIRE_MAXDEPTH)
        enc_fail(e, "nesting deeper than 200");
    if (!lua_checkstack(e->L, 8))
        enc_fail(e, "not enough stack space");
    return &e->path[e->depth++];
}

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

static void enc_table(wire_enc *e, int idx)
{
    lua_State *L = e->L;
    if (enc_backref(e, idx))
        return;
    if (lua_getmetatable(L, idx)) {
        /* A metatable that says __wire = true (an orch.queue handle) lets
         * its table travel as a plain table; any other is refused. */
        lua_pushliteral(L, "__wire");
        int plain = lua_rawget(L, -2) == LUA_TBOOLEAN && lua_toboolean(L, -1);
        lua_pop(L, 2);
        if (!plain)
            enc_fail(e, "cannot send a table with a metatable");
    }
    wire_step *st = enc_enter(e);
    enc_register(e, idx, enc_mark(e));

    /* One pass with lua_next. Lua visits the array part first, in key
     * order, so the run of keys 1, 2, 3... it starts with is sent as the
     * array part; from the first other key on, everything is sent as a
     * pair (an integer key met later too). A hole thus ends the array part
     * and a sparse table never turns into a run of nils. The array count
     * is at most the border lua_rawlen gives (1..na are all non-nil), so
     * it is written in that border's width and patched afterwards, as is
     * the one-byte hash hint: nothing written ever moves. Integers in the
     * array part go as runs (T_IRUN), with no path step kept for them.
     * Without a hash part the array part is read in place first. */
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
        enc_fail(e, NOFUNC_MSG);
    if (lua_iscfunction(L, idx)) {
        if (!find_cfunction(L, idx))
            enc_fail(e, "cannot send a C function that no loaded module "
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
        enc_string(e, s, l);
        break;
    }
    case LUA_TTABLE:
        enc_table(e, idx);
        break;
    case LUA_TFUNCTION:
        enc_function(e, idx);
        break;
    case LUA_TLIGHTUSERDATA:
        enc_fail(e, "cannot send light userdata");
        break;
    case LUA_TUSERDATA:
        enc_fail(e, "cannot send userdata");
        break;
    case LUA_TTHREAD:
        enc_fail(e, "cannot send a thread (coroutine)");
        break;
    default:
        enc_fail(e, "cannot send this type");
        break;
    }
}

void wire_enc_begin(wire_enc *e, lua_State *L, wbuf *b, int flags)
{
    e->L = L;
    e->b = b;
    e->flags = flags;
    e->nrefs = 0;
    e->depth = 0;
    e->root = NULL;
    lua_pushnil(L); /* the context table, made when a 9th ref needs it */
    e->ctx = lua_gettop(L);
}

void wire_enc_value(wire_enc *e, int idx, const char *root)
{
    idx = lua_absindex(e->L, idx);
    e->root = root;
    e->depth = 0;
    enc_any(e, idx, lua_type(e->L, idx));
}

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
        enc_fail(e, what);
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

/* ---- decoder -------------------------------------------------------- */

static int dec_any(wire_dec *d);
static int dec_upvalues(wire_dec *d, int fidx);

static int dec_fail(wire_dec *d, size_t at, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static int dec_fail(wire_dec *d, size_t at, const char *fmt, ...)
{
    va_list ap;
    int n = snprintf(d->err, sizeof d->err, "byte %zu: ", at);
    va_start(ap, fmt);
    if (n > 0 && (size_t)n < sizeof d->err)
        vsnprintf(d->err + n, sizeof d->err - (size_t)n, fmt, ap);
    va_end(ap);
    return -1;
}

/* A varint of at most 3 bytes, all there: integers below 2^21 without a
 * check a byte (the bulk of map's items and results). 0 if it is not one. */
static inline int uvar_get_short(wire_dec *d, uint64_t *v)
{
    const unsigned char *q = (const unsigned char *)d->data + d->pos;
    if (d->len - d->pos < 3 || (q[0] & q[1] & q[2] & 0x80))
        return 0;
    uint64_t r = q[0] & 0x7f;
    size_t k = 1;
    if (q[0] & 0x80) {
        r |= (uint64_t)(q[1] & 0x7f) << 7;
        k = 2;
        if (q[1] & 0x80) {
            r |= (uint64_t)q[2] << 14;
            k = 3;
        }
    }
    d->pos += k;
    *v = r;
    return 1;
}

static int dec_uvar(wire_dec *d, uint64_t *v, const char *what)
{
    if (uvar_get_short(d, v))
        return 0;
    size_t at = d->pos;
    const unsigned char *p = (const unsigned char *)d->data;
    uint64_t r = 0;
    *v = 0;
    for (int i = 0; i < UVAR_MAX; i++) {
        if (d->pos >= d->len)
            return dec_fail(d, at, "truncated %s", what);
        unsigned c = p[d->pos++];
        if (i == UVAR_MAX - 1 && c > 1)
            return dec_fail(d, at, "%s overflows 64 bits", what);
        r |= (uint64_t)(c & 0x7f) << (7 * i);
        if (!(c & 0x80)) {
            *v = r;
            return 0;
        }
    }
    return dec_fail(d, at, "%s overflows 64 bits", what);
}

/* A length that must fit in the bytes left (or be bounded by them, for
 * counts: each item takes at least `unit` bytes). */
static int dec_count(wire_dec *d, size_t *n, size_t unit, const char *what)
{
    size_t at = d->pos;
    uint64_t v;
    *n = 0;
    if (dec_uvar(d, &v, what) != 0)
        return -1;
    size_t left = d->len - d->pos;
    if (v > left / unit)
        return dec_fail(d, at, "%s %llu exceeds the %zu bytes left", what,
                        (unsigned long long)v, left);
    *n = (size_t)v;
    return 0;
}

static int dec_enter(wire_dec *d, size_t at)
{
    if (d->depth >= WIRE_MAXDEPTH)
        return dec_fail(d, at, "nesting deeper than 200");
    if (!lua_checkstack(d->L, 8))
        return dec_fail(d, at, "not enough stack space");
    d->depth++;
    return 0;
}

/* Numbers the table or function at idx (tag at `at`); keeps it if a
 * back-reference to it is announced (shared). */
static int dec_register(wire_dec *d, int idx, size_t at, int shared)
{
    lua_State *L = d->L;
    if (d->nrefs == INT_MAX)
        return dec_fail(d, at, "too many tables and functions");
    ++d->nrefs;
    if (!shared)
        return 0;
    if (lua_type(L, d->ctx) != LUA_TTABLE) {
        lua_createtable(L, 0, 4);
        lua_replace(L, d->ctx);
    }
    lua_pushvalue(L, idx);
    lua_rawseti(L, d->ctx, d->nrefs);
    return 0;
}

/* Decodes up to n bare varints into the slots a[0..n) while a whole
 * varint is surely there (UVAR_MAX bytes left); returns how many. What is
 * left, and any varint that overflows, goes through dec_uvar's checks. */
static size_t dec_ints_in_place(wire_dec *d, array_slot *a, size_t n)
{
    const unsigned char *p = (const unsigned char *)d->data + d->pos;
    const unsigned char *end = (const unsigned char *)d->data + d->len;
    size_t i = 0;
    for (; i < n && end - p >= UVAR_MAX; i++) {
        uint64_t z = p[0];
        if (z < 0x80) {
            p++;
        } else if (p[1] < 0x80) {
            z = (z & 0x7f) | (uint64_t)p[1] << 7;
            p += 2;
        } else if (p[2] < 0x80) {
            z = (z & 0x7f) | (uint64_t)(p[1] & 0x7f) << 7 | (uint64_t)p[2] << 14;
            p += 3;
        } else {
            break; /* long ones: dec_uvar */
        }
        array_slot_set_int(&a[i], unzigzag(z));
    }
    d->pos = (size_t)(p - (const unsigned char *)d->data);
    return i;
}

/* An integer run (T_IRUN at `at`, d->pos after it) among an array
 * part's values: its k values into t[base..base + k - 1]; at most `left`
 * values may follow in the array part. */
static int dec_run(wire_dec *d, size_t at, int t, lua_Integer base, size_t left,
                   size_t *k)
{
    lua_State *L = d->L;
    if (dec_count(d, k, 1, "integer run length") != 0)
        return -1;
    if (*k < 2 || *k > left)
        return dec_fail(d, at, "integer run of %zu values (2..%zu here)", *k, left);
    size_t size, i = 0;
    array_slot *a = array_of(L, t, &size, NULL); /* base >= 1 */
    if (a && (lua_Unsigned)base <= size) {
        size_t in = size - (size_t)(base - 1);
        i = dec_ints_in_place(d, a + (base - 1), *k < in ? *k : in);
    }
    for (; i < *k; i++) {
        uint64_t z;
        if (!uvar_get_short(d, &z) && dec_uvar(d, &z, "integer") != 0)
            return -1;
        lua_Integer key = base + (lua_Integer)i;
        if (a && (lua_Unsigned)key <= size) {
            array_slot_set_int(&a[key - 1], unzigzag(z));
        } else {
            lua_pushinteger(L, unzigzag(z));
            lua_rawseti(L, t, key);
            a = array_of(L, t, &size, NULL);
        }
    }
    return 0;
}

/* The na values of an array part, into t[base], t[base + 1]... */
static int dec_array(wire_dec *d, int t, lua_Integer base, size_t na)
{
    lua_State *L = d->L;
    const unsigned char *p = (const unsigned char *)d->data;
    size_t i = 0, size;
    array_slot *a = array_of(L, t, &size, NULL); /* small integers in place */
    while (i < na) {
        if (d->pos < d->len && p[d->pos] == T_IRUN) {
            size_t k, at = d->pos++;
            if (dec_run(d, at, t, base + (lua_Integer)i, na - i, &k) != 0)
                return -1;
            i += k;
            a = array_of(L, t, &size, NULL);
            continue;
        }
        lua_Integer key = base + (lua_Integer)i++;
        if (d->pos < d->len && p[d->pos] >= T_FIXINT) {
            lua_Integer v = (lua_Integer)p[d->pos++] - 0x80;
            if (a && (lua_Unsigned)key <= size) {
                array_slot_set_int(&a[key - 1], v);
                continue;
            }
            lua_pushinteger(L, v);
        } else if (dec_any(d) != 0) {
            return -1;
        }
        lua_rawseti(L, t, key);
        a = array_of(L, t, &size, NULL);
    }
    return 0;
}

/* Claims room for up to n items of `unit` bytes each from the frame's
 * budget and returns how many it got. Every value has a byte of its own
 * (a tag, or in an integer run its varint), so a frame that holds what
 * its tables announce never runs out: the budget only cuts what a
 * crafted frame claims and cannot fill (a hash hint of 2^24, or each of
 * 200 nested tables claiming the bytes left), keeping the presizes of
 * one frame within its length. */
static size_t dec_claim(wire_dec *d, size_t n, size_t unit)
{
    if (n > d->budget / unit)
        n = d->budget / unit;
    d->budget -= n * unit;
    return n;
}

static int dec_table(wire_dec *d, size_t at, int shared)
{
    lua_State *L = d->L;
    size_t na;
    if (dec_count(d, &na, 1, "array size") != 0)
        return -1;
    if (d->pos >= d->len)
        return dec_fail(d, d->pos, "truncated table");
    unsigned h = (unsigned char)d->data[d->pos++];
    /* the hint only presizes; a pair has a key and a value */
    size_t nh = h < 0x80 ? h : (size_t)1 << (h - 0x80 > 24 ? 24 : h - 0x80);
    if (na > WIRE_MAXLIST)
        return dec_fail(d, at, "table too large");
    if (dec_enter(d, at) != 0)
        return -1;
    int pre_na = (int)dec_claim(d, na, 1);
    int pre_nh = (int)dec_claim(d, nh, 2);
    lua_createtable(L, pre_na, pre_nh);
    int t = lua_gettop(L);
    if (dec_register(d, t, at, shared) != 0 || dec_array(d, t, 1, na) != 0)
        return -1;
    for (;;) {
        size_t kat = d->pos;
        if (kat >= d->len)
            return dec_fail(d, kat, "truncated table: key expected");
        if (d->data[kat] == T_NIL) {
            d->pos++;
            break;
        }
        if (dec_any(d) != 0)
            return -1;
        if (lua_type(L, -1) == LUA_TNUMBER && !lua_isinteger(L, -1)) {
            lua_Number x = lua_tonumber(L, -1);
            if (x != x)
                return dec_fail(d, kat, "NaN table key");
        }
        if (dec_any(d) != 0)
            return -1;
        lua_rawset(L, t);
    }
    d->depth--;
    return 0;
}

struct mem_reader {
    const char *p;
    size_t n;
};

static const char *mem_read(lua_State *L, void *ud, size_t *sz)
{
    struct mem_reader *m = ud;
    (void)L;
    *sz = m->n;
    m->n = 0;
    return *sz ? m->p : NULL;
}

static int dec_lfunction(wire_dec *d, size_t at, int shared)
{
    lua_State *L = d->L;
    size_t len;
    if (dec_count(d, &len, 1, "bytecode length") != 0)
        return -1;
    if (!lua_checkstack(L, 4))
        return dec_fail(d, at, "not enough stack space");
    struct mem_reader m = { d->data + d->pos, len };
    if (lua_load(L, mem_read, &m, "=(wire)", "b") != LUA_OK) {
        const char *msg = lua_tostring(L, -1);
        return dec_fail(d, at, "bad bytecode: %s", msg ? msg : "?");
    }
    d->pos += len;
    int f = lua_gettop(L);
    if (dec_register(d, f, at, shared) != 0)
        return -1;
    return dec_upvalues(d, f);
}

/* Protected: pushes require(name) (name at 1). */
static int resolve_module(lua_State *L)
{
    lua_getglobal(L, "require");
    lua_pushvalue(L, 1);
    lua_call(L, 1, 1);
    return 1;
}

static int dec_module(wire_dec *d, size_t at)
{
    lua_State *L = d->L;
    size_t l;
    if (dec_count(d, &l, 1, "module name length") != 0)
        return -1;
    const char *name = d->data + d->pos;
    d->pos += l;
    if (!lua_checkstack(L, 4))
        return dec_fail(d, at, "not enough stack space");
    lua_pushcfunction(L, resolve_module);
    lua_pushlstring(L, name, l);
    if (lua_pcall(L, 1, 1, 0) != LUA_OK) {
        const char *msg = lua_tostring(L, -1);
        return dec_fail(d, at, "cannot load module '%.*s': %s", (int)(l > 40 ? 40 : l),
                        name, msg ? msg : "?");
    }
    return 0;
}

/* Protected: pushes require(mod)[key] (mod, key at 1, 2). */
static int resolve_cfunction(lua_State *L)
{
    luaL_getsubtable(L, LUA_REGISTRYINDEX, LUA_LOADED_TABLE);
    lua_pushvalue(L, 1);
    if (lua_rawget(L, -2) == LUA_TNIL) {
        lua_pop(L, 1);
        if (strcmp(lua_tostring(L, 1), "_G") == 0) {
            lua_rawgeti(L, LUA_REGISTRYINDEX, LUA_RIDX_GLOBALS);
        } else {
            lua_getglobal(L, "require");
            lua_pushvalue(L, 1);
            lua_call(L, 1, 1);
        }
    }
    lua_pushvalue(L, 2);
    lua_gettable(L, -2);
    return 1;
}

static int dec_cfunction(wire_dec *d, size_t at, int shared)
{
    lua_State *L = d->L;
    size_t ml, kl;
    if (dec_count(d, &ml, 1, "module name length") != 0)
        return -1;
    const char *mod = d->data + d->pos;
    d->pos += ml;
    if (dec_count(d, &kl, 1, "function name length") != 0)
        return -1;
    const char *key = d->data + d->pos;
    d->pos += kl;
    if (!lua_checkstack(L, 4))
        return dec_fail(d, at, "not enough stack space");
    lua_pushcfunction(L, resolve_cfunction);
    lua_pushlstring(L, mod, ml);
    lua_pushlstring(L, key, kl);
    if (lua_pcall(L, 2, 1, 0) != LUA_OK) {
        const char *msg = lua_tostring(L, -1);
        return dec_fail(d, at, "cannot load C function '%.*s.%.*s': %s",
                        (int)(ml > 40 ? 40 : ml), mod, (int)(kl > 40 ? 40 : kl),
                        key, msg ? msg : "?");
    }
    if (lua_type(L, -1) != LUA_TFUNCTION)
        return dec_fail(d, at, "'%.*s.%.*s' is %s here, not a function",
                        (int)(ml > 40 ? 40 : ml), mod, (int)(kl > 40 ? 40 : kl),
                        key, luaL_typename(L, -1));
    return dec_register(d, lua_gettop(L), at, shared);
}

/* Decodes one value and pushes it; on failure the caller restores the
 * stack. */
static int dec_any(wire_dec *d)
{
    lua_State *L = d->L;
    const unsigned char *p = (const unsigned char *)d->data;
    size_t at = d->pos;
    if (at >= d->len)
        return dec_fail(d, at, "truncated: value expected");
    unsigned tag = p[d->pos++];
    if (tag >= T_FIXINT) {
        lua_pushinteger(L, (lua_Integer)tag - 0x80);
        return 0;
    }
    if (tag >= T_SHORTSTR && tag <= T_SHORTSTR + SHORTSTR_MAX) {
        size_t l = tag - T_SHORTSTR;
        if (l > d->len - d->pos)
            return dec_fail(d, at, "truncated string (%zu bytes, %zu left)", l,
                            d->len - d->pos);
        lua_pushlstring(L, d->data + d->pos, l);
        d->pos += l;
        return 0;
    }
    switch (tag) {
    case T_NIL:
        lua_pushnil(L);
        return 0;
    case T_FALSE:
    case T_TRUE:
        lua_pushboolean(L, tag == T_TRUE);
        return 0;
    case T_INT: {
        uint64_t z;
        if (dec_uvar(d, &z, "integer") != 0)
            return -1;
        lua_pushinteger(L, unzigzag(z));
        return 0;
    }
    case T_FLOAT: {
        if (d->len - d->pos < 8)
            return dec_fail(d, at, "truncated float");
        uint64_t u = 0;
        for (int i = 0; i < 8; i++)
            u |= (uint64_t)p[d->pos + i] << (8 * i);
        d->pos += 8;
        double x;
        memcpy(&x, &u, 8);
        lua_pushnumber(L, (lua_Number)x);
        return 0;
    }
    case T_STR: {
        size_t l;
        if (dec_count(d, &l, 1, "string length") != 0)
            return -1;
        lua_pushlstring(L, d->data + d->pos, l);
        d->pos += l;
        return 0;
    }
    case T_TABLE:
    case T_TABLE | T_SHARED:
        return dec_table(d, at, tag & T_SHARED);
    case T_REF: {
        uint64_t r;
        if (dec_uvar(d, &r, "reference") != 0)
            return -1;
        if (r >= 1 && r == (uint64_t)d->fn_ref) {
            lua_pushvalue(L, d->fn_idx);
            return 0;
        }
        if (r < 1 || r > (uint64_t)d->nrefs || lua_type(L, d->ctx) != LUA_TTABLE ||
            lua_rawgeti(L, d->ctx, (lua_Integer)r) == LUA_TNIL)
            return dec_fail(d, at, "reference to unknown value %llu",
                            (unsigned long long)r);
        return 0;
    }
    case T_CFUNC:
    case T_CFUNC | T_SHARED:
    case T_LFUNC:
    case T_LFUNC | T_SHARED:
        if (!(d->flags & WIRE_FUNCTIONS))
            return dec_fail(d, at, "function refused (functions only travel "
                                   "from the parent to its workers)");
        if ((tag & ~T_SHARED) == T_CFUNC)
            return dec_cfunction(d, at, tag & T_SHARED);
        return dec_lfunction(d, at, tag & T_SHARED);
    case T_ENV:
        return dec_fail(d, at, "globals marker outside a function's upvalues");
    case T_MODULE:
        return dec_fail(d, at, "module reference outside a function's upvalues");
    case T_IRUN:
        return dec_fail(d, at, "integer run outside a table's array part");
    default:
        return dec_fail(d, at, "unknown tag 0x%02x", tag);
    }
}

static int dec_upvalues(wire_dec *d, int fidx)
{
    lua_State *L = d->L;
    size_t at = d->pos;
    size_t n;
    lua_Debug ar;
    if (dec_count(d, &n, 1, "upvalue count") != 0)
        return -1;
    lua_pushvalue(L, fidx);
    lua_getinfo(L, ">u", &ar);
    if (n != ar.nups)
        return dec_fail(d, at, "%zu upvalues for a function that has %d", n,
                        (int)ar.nups);
    if (dec_enter(d, at) != 0)
        return -1;
    for (int i = 1; i <= ar.nups; i++) {
        if (d->pos < d->len && (unsigned char)d->data[d->pos] == T_ENV) {
            d->pos++;
            lua_rawgeti(L, LUA_REGISTRYINDEX, LUA_RIDX_GLOBALS);
        } else if (d->pos < d->len && (unsigned char)d->data[d->pos] == T_MODULE) {
            size_t at_mod = d->pos++;
            if (dec_module(d, at_mod) != 0)
                return -1;
        } else if (dec_any(d) != 0) {
            return -1;
        }
        lua_setupvalue(L, fidx, i);
    }
    d->depth--;
    return 0;
}

void wire_dec_begin(wire_dec *d, lua_State *L, const char *data, size_t len,
                    int flags)
{
    d->L = L;
    d->data = data;
    d->len = len;
    d->pos = 0;
    d->budget = len;
    d->flags = flags;
    d->nrefs = 0;
    d->depth = 0;
    d->err[0] = '\0';
    d->fn_ref = d->fn_idx = 0;
    lua_pushnil(L); /* the context table, made for the first shared value */
    d->ctx = lua_gettop(L);
}

int wire_dec_value(wire_dec *d)
{
    int top = lua_gettop(d->L);
    if (!lua_checkstack(d->L, 8))
        return dec_fail(d, d->pos, "not enough stack space");
    d->depth = 0;
    if (dec_any(d) != 0) {
        lua_settop(d->L, top);
        return -1;
    }
    return 0;
}

int wire_dec_integer(wire_dec *d, lua_Integer *n)
{
    uint64_t z;
    if (dec_uvar(d, &z, "integer") != 0)
        return -1;
    *n = unzigzag(z);
    return 0;
}

int wire_dec_upvalues(wire_dec *d, int fidx)
{
    lua_State *L = d->L;
    int top = lua_gettop(L);
    fidx = lua_absindex(L, fidx);
    if (lua_type(L, fidx) != LUA_TFUNCTION || lua_iscfunction(L, fidx))
        return dec_fail(d, d->pos, "upvalues for something not a Lua function");
    if (!lua_checkstack(L, 8))
        return dec_fail(d, d->pos, "not enough stack space");
    d->depth = 0;
    /* Its tag is not in the frame, so the encoder could not say whether
     * it is referred to again: it stays where it is on the stack and is
     * found there, which spares most frames a context table. */
    d->fn_ref = ++d->nrefs;
    d->fn_idx = fidx;
    if (dec_upvalues(d, fidx) != 0) {
        lua_settop(L, top);
        return -1;
    }
    lua_settop(L, top);
    return 0;
}

void wire_dec_state(wire_dec *d, int *nrefs, int *fn_ref)
{
    lua_pushvalue(d->L, d->ctx);
    *nrefs = d->nrefs;
    *fn_ref = d->fn_ref;
}

void wire_dec_resume(wire_dec *d, lua_State *L, const char *data, size_t len, int flags,
                     int ctx, int nrefs, int fn_ref, int fn_idx)
{
    ctx = lua_absindex(L, ctx);
    fn_idx = lua_absindex(L, fn_idx);
    wire_dec_begin(d, L, data, len, flags);
    lua_pushvalue(L, ctx);
    lua_replace(L, d->ctx);
    d->nrefs = nrefs;
    d->fn_ref = fn_ref;
    d->fn_idx = fn_idx;
}

/* A list's head: its tag (a table's, maybe shared) and length; the hash
 * size hint is skipped. */
static int dec_list_head(wire_dec *d, int *tag, size_t *na)
{
    size_t at = d->pos;
    if (at >= d->len)
        return dec_fail(d, at, "a list expected, got nothing");
    *tag = (unsigned char)d->data[d->pos++];
    if ((*tag & ~T_SHARED) != T_TABLE)
        return dec_fail(d, at, "a list expected");
    if (dec_count(d, na, 1, "array size") != 0)
        return -1;
    if (d->pos >= d->len)
        return dec_fail(d, d->pos, "truncated table");
    d->pos++; /* the hash size hint */
    return 0;
}

int wire_dec_list_begin(wire_dec *d, size_t *n)
{
    size_t at = d->pos, na;
    int tag;
    *n = 0;
    if (dec_list_head(d, &tag, &na) != 0)
        return -1;
    /* a list refers to itself only through a table that stood for it
     * (wire_enc_list_begin), so it is never a shared one */
    if (tag != T_TABLE)
        return dec_fail(d, at, "a list expected");
    if (!lua_checkstack(d->L, 8))
        return dec_fail(d, at, "not enough stack space");
    if (d->nrefs == INT_MAX)
        return dec_fail(d, at, "too many tables and functions");
    d->nrefs++; /* the list's own number */
    d->depth = 1;
    d->list_left = na;
    d->run_left = 0;
    *n = na;
    return 0;
}

int wire_dec_list_next(wire_dec *d)
{
    lua_State *L = d->L;
    const unsigned char *p = (const unsigned char *)d->data;
    uint64_t z;
    if (d->run_left > 0 && d->len - d->pos >= 3 && p[d->pos + 2] < 0x80) { /* most items */
        const unsigned char *q = p + d->pos;
        if (q[0] < 0x80) {
            z = q[0];
            d->pos += 1;
        } else if (q[1] < 0x80) {
            z = (q[0] & 0x7f) | (uint64_t)q[1] << 7;
            d->pos += 2;
        } else {
            z = (q[0] & 0x7f) | (uint64_t)(q[1] & 0x7f) << 7 | (uint64_t)q[2] << 14;
            d->pos += 3;
        }
        d->run_left--;
        lua_pushinteger(L, unzigzag(z));
        return 0;
    }
    if (d->run_left == 0) {
        if (d->list_left == 0)
            return dec_fail(d, d->pos, "no value left in the list");
        if (d->pos < d->len && p[d->pos] == T_IRUN) {
            size_t k, at = d->pos++;
            if (dec_count(d, &k, 1, "integer run length") != 0)
                return -1;
            if (k < 2 || k > d->list_left)
                return dec_fail(d, at, "integer run of %zu values (2..%zu here)", k,
                                d->list_left);
            d->run_left = k;
            d->list_left -= k;
        } else {
            d->list_left--;
            if (d->pos < d->len && p[d->pos] >= T_FIXINT) {
                lua_pushinteger(L, (lua_Integer)p[d->pos++] - 0x80);
                return 0;
            }
            int top = lua_gettop(L);
            d->depth = 1;
            if (dec_any(d) != 0) {
                lua_settop(L, top);
                return -1;
            }
            return 0;
        }
    }
    if (!uvar_get_short(d, &z) && dec_uvar(d, &z, "integer") != 0)
        return -1;
    d->run_left--;
    lua_pushinteger(L, unzigzag(z));
    return 0;
}

size_t wire_dec_list_ints(wire_dec *d, array_slot *a, size_t max)
{
    size_t got = dec_ints_in_place(d, a, d->run_left < max ? d->run_left : max);
    d->run_left -= got;
    return got;
}

int wire_dec_list_end(wire_dec *d)
{
    if (d->list_left != 0 || d->run_left != 0)
        return dec_fail(d, d->pos, "%zu values of the list left", d->list_left + d->run_left);
    if (d->pos >= d->len)
        return dec_fail(d, d->pos, "truncated list");
    if (d->data[d->pos] != T_NIL)
        return dec_fail(d, d->pos, "a list has keys other than 1..n");
    d->pos++;
    if (d->pos != d->len)
        return dec_fail(d, d->pos, "bytes after the list");
    return 0;
}

void wire_dec_end(wire_dec *d)
{
    lua_remove(d->L, d->ctx);
}

/* ---- functions dumped as strings ------------------------------------ */

struct dump_state {
    luaL_Buffer B;
    int init;
};

static int dump_to_buffer(lua_State *L, const void *p, size_t sz, void *ud)
{
    struct dump_state *s = ud;
    if (!s->init) { /* after lua_dump took the function from the top */
        s->init = 1;
        luaL_buffinit(L, &s->B);
    }
    luaL_addlstring(&s->B, p, sz);
    return 0;
}

void wire_dump_function(lua_State *L, int fidx)
{
    struct dump_state s;
    s.init = 0;
    fidx = lua_absindex(L, fidx);
    luaL_checktype(L, fidx, LUA_TFUNCTION);
    luaL_checkstack(L, 4, "not enough stack space");
    lua_pushvalue(L, fidx);
    if (lua_dump(L, dump_to_buffer, &s, 0) != 0 || !s.init)
        luaL_error(L, "cannot dump a C function");
    luaL_pushresult(&s.B);
    lua_remove(L, -2); /* the function copy */
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

/* The one list in d (a table with an array part only, as encode_slice
 * makes it) into t[base..base + n - 1]. */
static int dec_list_into(wire_dec *d, int t, lua_Integer base, size_t *n)
{
    size_t at = d->pos, na;
    int tag;
    if (dec_list_head(d, &tag, &na) != 0)
        return -1;
    if (base < 1 || (lua_Integer)na > LUA_MAXINTEGER - base)
        return dec_fail(d, at, "index out of range");
    if (dec_enter(d, at) != 0)
        return -1;
    if (dec_register(d, t, at, tag & T_SHARED) != 0 || dec_array(d, t, base, na) != 0)
        return -1;
    if (d->pos >= d->len)
        return dec_fail(d, d->pos, "truncated list");
    if (d->data[d->pos] != T_NIL)
        return dec_fail(d, d->pos, "a list has keys other than 1..n");
    d->pos++;
    d->depth--;
    if (d->pos != d->len)
        return dec_fail(d, d->pos, "bytes after the list");
    *n = na;
    return 0;
}

/* decode_into(s, t, i) -> n: s holds one list (encode_slice); its n values
 * go to t[i..i + n - 1] instead of a new table. Functions are refused. */
static int l_decode_into(lua_State *L)
{
    size_t len;
    const char *s = luaL_checklstring(L, 1, &len);
    luaL_checktype(L, 2, LUA_TTABLE);
    lua_Integer base = luaL_checkinteger(L, 3);
    lua_settop(L, 3);
    wire_dec d;
    size_t n = 0;
    wire_dec_begin(&d, L, s, len, 0);
    if (dec_list_into(&d, 2, base, &n) != 0) {
        lua_pushfstring(L, "orch.core.decode_into: %s", d.err);
        return lua_error(L);
    }
    wire_dec_end(&d);
    lua_pushinteger(L, (lua_Integer)n);
    return 1;
}

/* decode(s [, allow_functions]) -> the values encoded in s. */
static int l_decode(lua_State *L)
{
    size_t len;
    const char *s = luaL_checklstring(L, 1, &len);
    int flags = lua_toboolean(L, 2) ? WIRE_FUNCTIONS : 0;
    lua_settop(L, 2);
    wire_dec d;
    wire_dec_begin(&d, L, s, len, flags);
    int n = 0;
    while (d.pos < d.len) {
        luaL_checkstack(L, 1, "orch.core.decode: too many values");
        if (wire_dec_value(&d) != 0) {
            lua_pushfstring(L, "orch.core.decode: %s", d.err);
            return lua_error(L);
        }
        n++;
    }
    wire_dec_end(&d);
    return n;
}

void wire_open(lua_State *L)
{
    wbuf_scratch_fn(L, l_encode, "encode");
    wbuf_scratch_fn(L, l_encode_strict, "encode_strict");
    lua_pushcfunction(L, l_decode);
    lua_setfield(L, -2, "decode");
    wbuf_scratch_fn(L, l_encode_slice, "encode_slice");
    lua_pushcfunction(L, l_decode_into);
    lua_setfield(L, -2, "decode_into");
}
