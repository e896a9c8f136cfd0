/*
 * dispatch.c - a child's frames handed to Lua, in the parent.
 *
 * The frames read from a child (conn.c) are decoded here and passed to
 * the child's on_message, a user value of its proc. A run of RESULT frames
 * read together is one call, on_message(proc, RESULT, batch, n): a pool
 * worker sends one result at a time, and a call per result would cost the
 * parent more than the decoding. Any other frame is one call,
 * on_message(proc, type, values...); one that does not decode is reported
 * as on_message(proc, 0, "bad frame: why"). Order is kept.
 *
 * Invariants:
 * - Functions are refused in a child's frames: the parent never loads
 *   code a child sent.
 * - A frame is consumed before its callback runs; a callback that closes
 *   the proc frees `in` (data NULL), which ends the run.
 */
#include "orch.h"

/* Calls on_message(proc, RESULT, batch, n) for the RESULT frames gathered
 * in the table at bidx, if any, and leaves a fresh slot for the next run. */
static void flush_results(lua_State *L, int pidx, int uv, int bidx, int *nb)
{
    if (*nb == 0)
        return;
    lua_getiuservalue(L, pidx, uv);
    lua_pushvalue(L, pidx);
    lua_pushinteger(L, MSG_RESULT);
    lua_pushvalue(L, bidx);
    lua_pushinteger(L, *nb);
    lua_pushnil(L);
    lua_replace(L, bidx); /* the next run gets a table of its own */
    *nb = 0;
    loop_call(L, 4);
}

/* Decodes a RESULT frame's id and values into the batch at bidx (made on
 * first use): batch[nb + 1] = id, batch[nb + 2] = {n = count, values...}.
 * 0, or -1 with d->err. */
static int gather_result(lua_State *L, wire_dec *d, int bidx, int *nb)
{
    int top = lua_gettop(L);
    if (lua_isnil(L, bidx)) {
        lua_createtable(L, 16, 0);
        lua_replace(L, bidx);
    }
    if (wire_dec_value(d) < 0)
        return -1;
    lua_createtable(L, 1, 1);
    int n = 0;
    while (d->pos < d->len) {
        if (wire_dec_value(d) < 0) {
            lua_settop(L, top);
            return -1;
        }
        lua_rawseti(L, top + 2, ++n);
    }
    lua_pushinteger(L, n);
    lua_setfield(L, top + 2, "n");
    lua_rawseti(L, bidx, *nb + 2);
    lua_rawseti(L, bidx, *nb + 1);
    *nb += 2;
    return 0;
}

/* on_message(proc, 0, "bad frame: why"). */
static void report_bad(lua_State *L, int pidx, int uv, const char *why)
{
    lua_getiuservalue(L, pidx, uv);
    lua_pushvalue(L, pidx);
    lua_pushinteger(L, 0);
    lua_pushfstring(L, "bad frame: %s", why);
    loop_call(L, 3);
}

/* Every whole frame in `in`, in order (see the header). The batch of
 * results is a table at bidx, made on first use. */
void dispatch_frames(lua_State *L, wbuf *in, int pidx, int uv)
{
    const char *payload;
    size_t plen;
    int type, r, nb = 0;
    lua_pushnil(L); /* the batch of results */
    int bidx = lua_gettop(L);
    while (in->data && (r = chan_peek(in, &type, &payload, &plen)) != 0) {
        if (r < 0) {
            in->off = in->len;
            flush_results(L, pidx, uv, bidx, &nb);
            report_bad(L, pidx, uv, "length over the limit");
            break;
        }
        if (type != MSG_RESULT && nb > 0) {
            flush_results(L, pidx, uv, bidx, &nb); /* then this frame, peeked again */
            continue;
        }
        wire_dec d;
        int bad = 0;
        if (type == MSG_RESULT) {
            wire_dec_begin(&d, L, payload, plen, 0);
            bad = gather_result(L, &d, bidx, &nb) < 0;
            wire_dec_end(&d);
            chan_consume(in, plen);
            if (bad) {
                flush_results(L, pidx, uv, bidx, &nb);
                report_bad(L, pidx, uv, d.err);
            }
            continue;
        }
        lua_getiuservalue(L, pidx, uv);
        lua_pushvalue(L, pidx);
        int base = lua_gettop(L);
        lua_pushinteger(L, type);
        wire_dec_begin(&d, L, payload, plen, 0);
        while (d.pos < d.len && !bad)
            bad = wire_dec_value(&d) < 0;
        wire_dec_end(&d);
        chan_consume(in, plen);
        if (bad) {
            lua_settop(L, base - 2);
            report_bad(L, pidx, uv, d.err);
        } else {
            loop_call(L, lua_gettop(L) - base + 1);
        }
    }
    flush_results(L, pidx, uv, bidx, &nb);
    lua_settop(L, bidx - 1);
}

