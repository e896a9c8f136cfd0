/*
 * wire.c - the serializer in orch.core: its Lua functions, which the
 * encoder (wire_enc.c: encode, encode_strict, encode_slice) and the
 * decoder (wire_dec.c: decode, decode_into) each keep beside the code they
 * call, registered together; and functions dumped as strings (task.c's
 * code), debug information kept.
 */
#include "wire.h"

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

/* ---- the serializer in orch.core ------------------------------------ */

void wire_open(lua_State *L)
{
    wire_enc_open(L);
    wire_dec_open(L);
}
