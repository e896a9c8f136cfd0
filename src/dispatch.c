/*
 * dispatch.c - a child's frames handed to Lua, in the parent.
 *
 * The frames read from a child (conn.c) are decoded here and passed to
 * the child's on_message, a user value of its proc. A run of RESULT frames
 * read together is one call, on_message(proc, RESULT, batch, n): a pool
 * worker sends one result at a time, and a call per result would cost the
 * parent more than the decoding. Any other frame is one call,
 * on_message(proc, type, values...). Order is kept.
 *
 * A frame that cannot be decoded, whatever the reason (bytes that do not
 * make values, a length over the limit, or no memory left to build them),
 * is reported as on_message(proc, 0, why, type) and the frames after it
 * still come: each frame is decoded in protected mode, so a memory error
 * is that frame's failure and never unwinds through the loop. A length
 * over the limit leaves the stream out of sync: the rest of what was read
 * is dropped and dispatch_frames says so (the channel is closed).
 *
 * Invariants:
 * - Functions are refused in a child's frames: the parent never loads
 *   code a child sent.
 * - A frame is consumed before it is decoded (its bytes stay valid until
 *   `in` is next filled), so a frame that fails is never decoded again.
 * - Outside the protected decode, nothing here allocates: the error of a
 *   failed decode (a memory error's is preallocated) is passed as it is.
 * - A callback that closes the proc drops what is left in `in` (conn.c),
 *   which ends the run.
 */
#include "orch.h"

/* What the last take() found (the frame is consumed unless TAKE_NONE or
 * TAKE_FLUSH). */
enum {
    TAKE_NONE,   /* no whole frame left */
    TAKE_FLUSH,  /* a frame of another type follows results: flush them first */
    TAKE_RESULT, /* a RESULT frame went into the batch; returns the batch */
    TAKE_FRAME,  /* returns type, values... */
    TAKE_BAD,    /* returns why (or raised: the error is why) */
    TAKE_FATAL   /* returns why: a length over the limit, the rest dropped */
};

typedef struct drun {
    chan *c;
    int nb;     /* entries in the batch (two a result) */
    int status; /* TAKE_* */
    int type;   /* the type of the frame taken */
} drun;

/* The values of a RESULT frame as a table at top + 2, the first of them
 * already decoded there when n is 1: {v} for one value that is not nil
 * (a table: gather_result keeps any other as it is), else {n = count,
 * values...}. 0, or -1 with d->err. */
static int values_table(lua_State *L, wire_dec *d, int top, int n)
{
    lua_createtable(L, n, 0);
    if (n == 1) {
        lua_insert(L, top + 2);
        lua_rawseti(L, top + 2, 1);
    }
    while (d->pos < d->len) {
        if (wire_dec_value(d) < 0)
            return -1;
        lua_rawseti(L, top + 2, ++n);
    }
    if (n != 1 || lua_rawgeti(L, top + 2, 1) == LUA_TNIL) {
        lua_settop(L, top + 2);
        lua_pushinteger(L, n);
        lua_setfield(L, top + 2, "n");
    } else {
        lua_pop(L, 1);
    }
    return 0;
}

/* Decodes a RESULT frame's id and values into the batch at bidx (made on
 * first use): batch[nb + 1] = id, batch[nb + 2] = the values: one value
 * that is neither nil nor a table as it is (most results: nothing to
 * allocate), else as values_table makes them (future.lua reads the three
 * forms). 0, or -1 with d->err. */
static int gather_result(lua_State *L, wire_dec *d, int bidx, int *nb)
{
    int top = lua_gettop(L);
    if (lua_isnil(L, bidx)) {
        lua_createtable(L, 16, 0);
        lua_replace(L, bidx);
    }
    if (wire_dec_value(d) < 0) /* the id, at top + 1 */
        return -1;
    int n = 0;
    if (d->pos < d->len) {
        if (wire_dec_value(d) < 0) {
            lua_settop(L, top);
            return -1;
        }
        n = 1;
    }
    int t = lua_type(L, top + 2);
    int plain = n == 1 && d->pos == d->len && t != LUA_TNIL && t != LUA_TTABLE;
    if (!plain && values_table(L, d, top, n) < 0) {
        lua_settop(L, top);
        return -1;
    }
    lua_rawseti(L, bidx, *nb + 2);
    lua_rawseti(L, bidx, *nb + 1);
    *nb += 2;
    return 0;
}

/* take(run, batch): the next frame of run->in, decoded (run protected;
 * run->status says what it returns). */
static int take(lua_State *L)
{
    drun *r = lua_touserdata(L, 1);
    const char *payload;
    size_t plen;
    int p = chan_next(r->c, &r->type, &payload, &plen);
    if (p == 0) {
        r->status = TAKE_NONE;
        return 0;
    }
    if (p == -1) {
        chan_drop_in(r->c); /* the stream is out of sync */
        r->status = TAKE_FATAL;
        lua_pushliteral(L, "length over the limit");
        return 1;
    }
    if ((r->type != MSG_RESULT || p < 0) && r->nb > 0) {
        r->status = TAKE_FLUSH;
        return 0;
    }
    chan_take(r->c);
    r->status = TAKE_BAD; /* if anything below raises */
    if (p < 0) { /* a big frame refused */
        lua_pushstring(L, r->c->why);
        return 1;
    }
    if (r->type == 0) { /* the type that reports bad frames */
        lua_pushliteral(L, "message type 0");
        return 1;
    }
    wire_dec d;
    int bad = 0;
    if (r->type == MSG_RESULT) {
        wire_dec_begin(&d, L, payload, plen, 0);
        bad = gather_result(L, &d, 2, &r->nb) < 0;
        wire_dec_end(&d);
        lua_settop(L, 2);
    } else {
        lua_settop(L, 0);
        lua_pushinteger(L, r->type);
        wire_dec_begin(&d, L, payload, plen, 0);
        while (d.pos < d.len && !bad)
            bad = wire_dec_value(&d) < 0;
        wire_dec_end(&d);
    }
    if (bad) {
        lua_pushstring(L, d.err);
        return 1;
    }
    if (r->type == MSG_RESULT) {
        r->status = TAKE_RESULT;
        return 1; /* the batch */
    }
    r->status = TAKE_FRAME;
    return lua_gettop(L);
}

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

/* on_message(proc, values at base + 1 .. top...): the values are
 * (type, ...) or, for a bad frame, (why) with 0 and the type added. */
static void deliver(lua_State *L, int pidx, int uv, int base, const drun *r)
{
    if (r->status != TAKE_FRAME) {
        lua_pushinteger(L, 0);
        lua_insert(L, base + 1);
        lua_pushinteger(L, r->type);
    }
    lua_getiuservalue(L, pidx, uv);
    lua_pushvalue(L, pidx);
    lua_rotate(L, base + 1, 2);
    loop_call(L, lua_gettop(L) - base - 1);
}

/* Every whole frame in `in`, in order (see the header). The batch of
 * results is a table at bidx, made on first use. */
int dispatch_frames(lua_State *L, chan *c, int pidx, int uv)
{
    drun r = {c, 0, TAKE_NONE, 0};
    lua_pushnil(L); /* the batch of results */
    int bidx = lua_gettop(L);
    for (;;) {
        int base = lua_gettop(L);
        lua_pushcfunction(L, take);
        lua_pushlightuserdata(L, &r);
        lua_pushvalue(L, bidx);
        r.status = -1;
        if (lua_pcall(L, 2, LUA_MULTRET, 0) != LUA_OK && r.status == -1)
            r.status = TAKE_NONE; /* failed before take ran: the frames wait */
        if (r.status == TAKE_NONE) {
            lua_settop(L, base);
            break;
        }
        if (r.status == TAKE_RESULT) {
            lua_replace(L, bidx);
            lua_settop(L, base);
            continue;
        }
        flush_results(L, pidx, uv, bidx, &r.nb); /* results before it come first */
        if (r.status != TAKE_FLUSH)
            deliver(L, pidx, uv, base, &r);
        if (r.status == TAKE_FATAL)
            break;
    }
    flush_results(L, pidx, uv, bidx, &r.nb);
    lua_settop(L, bidx - 1);
    return r.status == TAKE_FATAL ? -1 : 0;
}
