/*
 * joblog.c - the job log's lines for done items, a chunk's in one call.
 *
 * A map with a job log (lua/orch/joblog.lua has the file's format) writes
 * a line per finished item. For small items, building those lines in Lua
 * (an encode call, a hex gsub and a concatenation per item) cost more
 * than running the items; here one call makes a chunk's lines:
 *
 *   core.joblog_done(first, list, from, n, mid) -> string
 *
 * line j (0 <= j < n) is "<first + j><mid><hex>\t\n", where hex is
 * list[from + j] encoded on its own, as core.encode(value) makes it, in
 * lowercase hex digits. mid holds the columns between the index and the
 * result ("\tdone\tATTEMPTS\tSECONDS\tPID\t").
 *
 * Each value is encoded at the end of the output and then spread into
 * its hex digits in place, from its last byte back: no second buffer.
 */
#include <string.h>

#include "orch.h"

static const char HEX[] = "0123456789abcdef";

/* The k bytes at p become their 2k hex digits from p (room is there). */
static void spread_hex(char *p, size_t k)
{
    for (size_t i = k; i-- > 0;) {
        unsigned char c = (unsigned char)p[i];
        p[2 * i + 1] = HEX[c & 15];
        p[2 * i] = HEX[c >> 4];
    }
}

static void put(lua_State *L, wbuf *b, const char *s, size_t n)
{
    if (wbuf_reserve(b, n) != 0)
        luaL_error(L, "joblog: out of memory");
    memcpy(b->data + b->len, s, n);
    b->len += n;
}

/* One line: the index, mid, the value at vidx (absolute) in hex, a tab,
 * a newline. */
static void done_line(lua_State *L, wbuf *b, lua_Integer index, const char *mid, size_t midlen,
                      int vidx)
{
    char digits[24], *d = digits + sizeof digits;
    unsigned long long u = index < 0 ? 0 - (unsigned long long)index : (unsigned long long)index;
    do {
        *--d = (char)('0' + u % 10);
        u /= 10;
    } while (u > 0);
    if (index < 0)
        *--d = '-';
    put(L, b, d, (size_t)(digits + sizeof digits - d));
    put(L, b, mid, midlen);
    size_t at = b->len;
    wire_enc e;
    wire_enc_begin(&e, L, b, WIRE_FUNCTIONS);
    wire_enc_value(&e, vidx, "result");
    wire_enc_end(&e);
    size_t k = b->len - at;
    if (wbuf_reserve(b, k + 2) != 0)
        luaL_error(L, "joblog: out of memory");
    spread_hex(b->data + at, k);
    b->len += k;
    put(L, b, "\t\n", 2);
}

static int l_joblog_done(lua_State *L)
{
    lua_Integer first = luaL_checkinteger(L, 1);
    luaL_checktype(L, 2, LUA_TTABLE);
    lua_Integer from = luaL_checkinteger(L, 3);
    lua_Integer n = luaL_checkinteger(L, 4);
    size_t midlen;
    const char *mid = luaL_checklstring(L, 5, &midlen);
    luaL_argcheck(L, n >= 0, 4, "a count >= 0 expected");
    lua_settop(L, 5);
    wbuf *b = wbuf_scratch_take(L);
    int holder = lua_gettop(L);
    for (lua_Integer j = 0; j < n; j++) {
        lua_rawgeti(L, 2, from + j);
        done_line(L, b, first + j, mid, midlen, lua_gettop(L));
        lua_pop(L, 1);
    }
    lua_pushlstring(L, b->data + b->off, b->len - b->off);
    wbuf_scratch_give(L, b, holder);
    return 1;
}

void joblog_open(lua_State *L)
{
    wbuf_scratch_fn(L, l_joblog_done, "joblog_done");
}
