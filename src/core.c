/*
 * core.c - the binding that builds the Lua module orch.core.
 */
#include "orch.h"

LUALIB_API int luaopen_orch_core(lua_State *L);

__attribute__((visibility("default"))) int luaopen_orch_core(lua_State *L)
{
    lua_newtable(L);
    wire_open(L);
    return 1;
}
