/*
 * wire_dec.c - the serializer's decoder: bytes in the format wire.h
 * describes back to Lua values. The bytes come from another process.
 *
 * Invariants. The decoder never reads past len, checks every length and
 * count against the bytes left before allocating, presizes tables from one
 * budget per context (a frame's tables together presize at most a slot per
 * byte of it), bounds nesting, restores the stack on failure and reports
 * "byte N: what" (N counted from 0) instead of raising; only memory errors
 * raise.
 * Lua does not verify bytecode, so functions are decoded (lua_load, mode
 * "b") only under WIRE_FUNCTIONS: from the parent, never from a worker.
 */
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "wire.h"

/* ---- bytes ---------------------------------------------------------- */

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

/* A length and the bytes it counts: *p points at them, the reader past. */
static int dec_bytes(wire_dec *d, const char **p, size_t *n, const char *what)
{
    if (dec_count(d, n, 1, what) != 0)
        return -1;
    *p = d->data + d->pos;
    d->pos += *n;
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

/* ---- tables --------------------------------------------------------- */

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

/* ---- functions and modules ------------------------------------------ */

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
    const char *name;
    if (dec_bytes(d, &name, &l, "module name length") != 0)
        return -1;
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
    const char *mod, *key;
    if (dec_bytes(d, &mod, &ml, "module name length") != 0
        || dec_bytes(d, &key, &kl, "function name length") != 0)
        return -1;
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

/* ---- any value ------------------------------------------------------ */

/* A string of any length, after its T_STR tag. */
static int dec_string(wire_dec *d, lua_State *L)
{
    size_t l;
    if (dec_count(d, &l, 1, "string length") != 0)
        return -1;
    alloc_big_room(L, l);
    lua_pushlstring(L, d->data + d->pos, l);
    d->pos += l;
    return 0;
}

/* A float's 8 bytes, little-endian (T_FLOAT at `at`). */
static int dec_float(wire_dec *d, size_t at)
{
    const unsigned char *p = (const unsigned char *)d->data;
    if (d->len - d->pos < 8)
        return dec_fail(d, at, "truncated float");
    uint64_t u = 0;
    for (int i = 0; i < 8; i++)
        u |= (uint64_t)p[d->pos + i] << (8 * i);
    d->pos += 8;
    double x;
    memcpy(&x, &u, 8);
    lua_pushnumber(d->L, (lua_Number)x);
    return 0;
}

/* A back-reference (T_REF at `at`): wire_dec_upvalues' function, found
 * where it is on the stack, or a shared value of the context table. */
static int dec_ref(wire_dec *d, size_t at)
{
    lua_State *L = d->L;
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

/* A C or Lua function (its tag at `at`), only under WIRE_FUNCTIONS. */
static int dec_function(wire_dec *d, size_t at, unsigned tag)
{
    if (!(d->flags & WIRE_FUNCTIONS))
        return dec_fail(d, at, "function refused (functions only travel "
                               "from the parent to its workers)");
    if ((tag & ~T_SHARED) == T_CFUNC)
        return dec_cfunction(d, at, tag & T_SHARED);
    return dec_lfunction(d, at, tag & T_SHARED);
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
    case T_FLOAT:
        return dec_float(d, at);
    case T_STR:
        return dec_string(d, L);
    case T_TABLE:
    case T_TABLE | T_SHARED:
        return dec_table(d, at, tag & T_SHARED);
    case T_REF:
        return dec_ref(d, at);
    case T_CFUNC:
    case T_CFUNC | T_SHARED:
    case T_LFUNC:
    case T_LFUNC | T_SHARED:
        return dec_function(d, at, tag);
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

/* ---- a context ------------------------------------------------------ */

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

/* ---- lists ---------------------------------------------------------- */

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

void wire_dec_end(wire_dec *d)
{
    lua_remove(d->L, d->ctx);
}

/* ---- Lua binding ---------------------------------------------------- */

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

/* Registers decode and decode_into in the table at the top of the stack. */
void wire_dec_open(lua_State *L)
{
    lua_pushcfunction(L, l_decode);
    lua_setfield(L, -2, "decode");
    lua_pushcfunction(L, l_decode_into);
    lua_setfield(L, -2, "decode_into");
}
