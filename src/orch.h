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
 * Encodes Lua values (nil, boolean, integer, float, string, table with
 * shared references and cycles, function) into bytes; decodes them with
 * every read bounds-checked, since the bytes come from another process.
 * One encoder/decoder context spans one frame, so a table that appears in
 * two arguments of the same frame stays one table on the other side. */
#define WIRE_FUNCTIONS 1 /* allow functions (parent -> child only) */
#define WIRE_MAXDEPTH 200 /* tables and functions nested deeper are refused */
#define WIRE_INLINE_REFS 8 /* refs remembered without a Lua table */

/* One step of the path to the value being encoded, kept only so that an
 * error can name where it happened (built as a string only on error). */
typedef struct wire_step {
    int kind;             /* S_INT, S_VAL, S_KEY, S_UPVAL in wire.c */
    int idx;              /* stack index of the key, for table keys */
    lua_Integer n;        /* array index */
    const char *name;     /* upvalue name */
} wire_step;

typedef struct wire_enc {
    lua_State *L;
    wbuf *b;    /* owned by a userdata: a raise leaks nothing */
    int flags;
    int ctx;    /* absolute stack index of the context (seen tables...) */
    int nrefs;  /* tables/functions numbered so far */
    int depth;
    const char *root;                       /* path prefix for errors */
    const void *seen[WIRE_INLINE_REFS];     /* refs 1..8, by identity */
    size_t seen_at[WIRE_INLINE_REFS];       /* ...and where their tag is */
    wire_step path[WIRE_MAXDEPTH];
} wire_enc;

/* Pushes one context value onto the stack; wire_enc_end pops it. */
ORCH_HIDDEN void wire_enc_begin(wire_enc *e, lua_State *L, wbuf *b, int flags);
/* Appends the value at idx. A value that cannot cross raises a Lua error
 * naming its place from root: "args[2].conn: cannot send userdata". */
ORCH_HIDDEN void wire_enc_value(wire_enc *e, int idx, const char *root);
ORCH_HIDDEN void wire_enc_integer(wire_enc *e, lua_Integer n);
/* Appends the upvalues of the Lua function at fidx: _ENV as a marker,
 * the others by value, named "upvalue 'name'" in errors. */
ORCH_HIDDEN void wire_enc_upvalues(wire_enc *e, int fidx);
ORCH_HIDDEN void wire_enc_end(wire_enc *e);

typedef struct wire_dec {
    lua_State *L;
    const char *data;
    size_t len, pos;
    int flags;
    int ctx;    /* absolute stack index of the context (shared values) */
    int nrefs;  /* tables/functions met so far */
    int depth;
    char err[160]; /* "byte 17: truncated string" */
} wire_dec;

/* Pushes one context value; wire_dec_end removes it (values decoded
 * after it stay on the stack, in order). */
ORCH_HIDDEN void wire_dec_begin(wire_dec *d, lua_State *L, const char *data,
                                size_t len, int flags);
/* 0: one value pushed. -1: d->err says what and at which byte, nothing
 * pushed. Only memory errors raise. Functions are refused unless flags
 * has WIRE_FUNCTIONS. */
ORCH_HIDDEN int wire_dec_value(wire_dec *d);
ORCH_HIDDEN int wire_dec_integer(wire_dec *d, lua_Integer *n);
/* Sets the upvalues written by wire_enc_upvalues on the function at fidx
 * (_ENV becomes the globals). 0 or -1 as above. */
ORCH_HIDDEN int wire_dec_upvalues(wire_dec *d, int fidx);
ORCH_HIDDEN void wire_dec_end(wire_dec *d);

/* Pushes the Lua function at fidx dumped as bytecode (a string), with
 * debug information kept so tracebacks name lines. */
ORCH_HIDDEN void wire_dump_function(lua_State *L, int fidx);

/* Registers encode(v...) -> string and decode(s) -> v... in the table at
 * the top of the stack (specs and the Lua layer use them). */
ORCH_HIDDEN void wire_open(lua_State *L);

#endif
