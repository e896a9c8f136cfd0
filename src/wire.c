/*
 * wire.c - the serializer's Lua binding: core.encode, encode_strict,
 * encode_slice, decode and decode_into, over the encoder (wire_enc.c) and
 * the decoder (wire_dec.c); and functions dumped as strings (task.c's
 * code), debug information kept.
 */
#include <stdio.h>

#include "orch.h"

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
    if (wire_dec_list_into(&d, 2, base, &n) != 0) {
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
