/*
 * wire.h - the serializer's format, shared by its encoder (wire_enc.c,
 * its refusals in wire_path.c) and decoder (wire_dec.c): the tags, the
 * limits and the varints, and the two halves' registration for wire.c. What the rest of orch.core calls
 * is declared in orch.h; task.c reads a task's first tag from here.
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
 */
#ifndef WIRE_H
#define WIRE_H

#include <stdint.h>

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
#define WIRE_MAXLIST 0x7fffffff /* values in one list: a Lua table's limit */

/* ---- varints -------------------------------------------------------- */

static inline size_t uvar_size(uint64_t v)
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
static inline void uvar_put_fixed(unsigned char *p, uint64_t v, size_t w)
{
    for (size_t i = 0; i < w; i++) {
        p[i] = (unsigned char)((v & 0x7f) | (i + 1 < w ? 0x80 : 0));
        v >>= 7;
    }
}

static inline uint64_t zigzag(lua_Integer n)
{
    uint64_t u = (uint64_t)n << 1;
    return n < 0 ? ~u : u;
}

static inline lua_Integer unzigzag(uint64_t z)
{
    uint64_t u = (z >> 1) ^ (0 - (z & 1));
    /* two's complement without relying on implementation-defined casts */
    if (u <= (uint64_t)LUA_MAXINTEGER)
        return (lua_Integer)u;
    return -(lua_Integer)(~u) - 1;
}

/* ---- refusals (wire_path.c) ----------------------------------------- */

/* kinds of wire_step */
enum { S_INT, S_VAL, S_KEY, S_UPVAL };

/* Raises "<path>: <what>": the root, then one step per open table or
 * function (e->path[0 .. depth)); a very deep path keeps its two ends. */
ORCH_HIDDEN void wire_enc_fail(wire_enc *e, const char *what) __attribute__((noreturn));

/* ---- the Lua functions, registered by wire_open (wire.c) ------------ */

/* Register encode, encode_strict and encode_slice (wire_enc.c), decode and
 * decode_into (wire_dec.c) in the table at the top of the stack. */
ORCH_HIDDEN void wire_enc_open(lua_State *L);
ORCH_HIDDEN void wire_dec_open(lua_State *L);

#endif
