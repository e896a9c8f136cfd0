/*
 * orch.h - private interface between the files of orch.core.
 *
 * Two tiers: plumbing (wbuf, chan framing, proc set-up) returns 0 / -1 and
 * never touches Lua except where a function takes a lua_State; binding code
 * turns results into Lua values and errors. Only luaopen_orch_core is
 * exported from the shared object; everything declared here is hidden.
 */
#ifndef ORCH_H
#define ORCH_H

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include <lua.h>
#include <lauxlib.h>

#define ORCH_HIDDEN __attribute__((visibility("hidden")))

/* ---- wbuf.c: a growable byte buffer ------------------------------------
 * Owned by a userdata (or a module-level static) so that a Lua error raised
 * while it is being filled leaks nothing. */
typedef struct wbuf {
    char *data;
    size_t len; /* bytes used */
    size_t off; /* bytes already consumed from the front (readers/writers) */
    size_t cap;
} wbuf;

ORCH_HIDDEN int wbuf_reserve(wbuf *b, size_t extra); /* 0, or -1 (ENOMEM) */
ORCH_HIDDEN void wbuf_compact(wbuf *b);                /* drop consumed bytes */
ORCH_HIDDEN void wbuf_reset(wbuf *b);                  /* len = off = 0; may shrink */
ORCH_HIDDEN void wbuf_free(wbuf *b);

/* ---- wire.c: the value serializer --------------------------------------
 * Encodes one Lua value (nil, boolean, integer, float, string, table with
 * shared references and cycles, function) into a byte string; decodes it
 * with every read bounds-checked. */
#define WIRE_FUNCTIONS 1 /* allow functions (parent -> child only) */

/* Appends the encoding of the value at idx to b. On a value that cannot
 * cross, raises a Lua error naming its place, e.g.
 * "args[2].conn: cannot send userdata". root names the value ("args[2]",
 * "result[1]", "upvalue 'handle'"). b must be owned as described above. */
ORCH_HIDDEN void wire_encode(lua_State *L, int idx, wbuf *b, const char *root,
                             int flags);

/* Decodes one value from data[*pos, len) and pushes it; advances *pos.
 * Returns 0, or -1 with a message in err ("byte 17: truncated string")
 * and nothing pushed. Only memory errors raise. Functions are refused
 * unless flags has WIRE_FUNCTIONS. */
ORCH_HIDDEN int wire_decode(lua_State *L, const char *data, size_t len,
                            size_t *pos, int flags, char *err, size_t errlen);

/* Pushes the function at fidx dumped as bytecode (a string). Raises if it
 * is not a Lua function. */
ORCH_HIDDEN void wire_dump_function(lua_State *L, int fidx);

/* Encodes the upvalues of the Lua function at fidx (all but _ENV), each
 * named "upvalue 'name'" in errors; the matching wire_decode_upvalues sets
 * them on the function at fidx (and _ENV to the globals). */
ORCH_HIDDEN void wire_encode_upvalues(lua_State *L, int fidx, wbuf *b, int flags);
ORCH_HIDDEN int wire_decode_upvalues(lua_State *L, int fidx, const char *data,
                                     size_t len, size_t *pos, int flags,
                                     char *err, size_t errlen);

/* Lua-facing helpers registered in orch.core: encode(v) -> string,
 * decode(s) -> v | error. Used by specs and by the Lua layer. */
ORCH_HIDDEN void wire_open(lua_State *L);

#endif
