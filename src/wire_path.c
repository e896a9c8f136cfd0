/*
 * wire_path.c - the encoder's refusals: where in the values a value that
 * cannot cross sits, as a path from the argument it came in ("args[2]
 * .conn[3]: cannot send userdata"). The encoder keeps the path as a cheap
 * array of steps (wire_enc's path); it becomes text here, on error only.
 */
#include <stdio.h>
#include <stdlib.h>

#include "wire.h"

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

void wire_enc_fail(wire_enc *e, const char *what)
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
