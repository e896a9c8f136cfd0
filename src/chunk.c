/*
 * chunk.c - map's chunks, run in a worker.
 *
 * A chunk task (task.c's pack_chunk) carries map's function and its items
 * as one encoded list. task_load makes chunk_run the task's function: it
 * decodes the items one by one, calls the function on each and encodes
 * its first result straight into the list of results, so that neither
 * side of the call builds a table of items or of results. It answers as
 * map.lua's run_chunk does (the chunk a broker's node runs): the results'
 * encoding (a string the parent decodes into map's output), the worker's
 * pid and the seconds the chunk took, then its CPU seconds; an item that
 * fails raises a table { item, value, message, traceback } (value only
 * when it can cross), which the parent turns into its TaskError.
 *
 * Invariants:
 * - The items are decoded in the numbering of the frame they came in, so
 *   an item may be a table the function's upvalues hold too, as in any
 *   task's arguments.
 * - A result the encoder numbered (a table) stays referenced until the
 *   list is done: the encoder knows a value seen before by its address.
 * - A failure of the chunk itself (a list that cannot be decoded, a
 *   result that cannot cross) is raised as it is, not as an item's.
 */
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "orch.h"

#define RUNNER "orch.chunk_run" /* registry: chunk_run, its scratch buffer bound */
#define CHUNK_BATCH 32         /* results kept on the stack before it is reset */

typedef struct chunk_state {
    wbuf *b;            /* the results' encoding (chunk_run's scratch) */
    lua_Integer item;   /* the item being run, from 1 */
    int own;            /* an error now is the chunk's own, not the item's */
} chunk_state;

/* Pushes the error at idx as a message, as run_chunk in map.lua makes it. */
static void push_message(lua_State *L, int idx)
{
    if (lua_type(L, idx) == LUA_TSTRING)
        lua_pushvalue(L, idx);
    else if (luaL_getmetafield(L, idx, "__tostring") != LUA_TNIL) {
        lua_pop(L, 1);
        luaL_tolstring(L, idx, NULL);
    } else
        lua_pushfstring(L, "(error object is a %s value)", luaL_typename(L, idx));
}

/* Protected: encodes the value at 1 as a worker sends it (does it cross?). */
static int try_encode(lua_State *L)
{
    wbuf *b = wbuf_scratch_new(L);
    wire_enc e;
    wire_enc_begin(&e, L, b, 0);
    wire_enc_value(&e, 1, "error");
    wire_enc_end(&e);
    return 0;
}

static int chunk_loop(lua_State *L);

/* Lua's traceback shows the first TB_TOP levels and the last TB_BOTTOM
 * when there are more than both (lauxlib.c's LEVELS1, LEVELS2). */
#define TB_TOP 10
#define TB_BOTTOM 11

/* Where the lines of `level` and below begin in tb (luaL_traceback's text
 * from level 1, its header at `at`), given the deepest level `last`; a
 * level the text skips begins at the skip line. Each level is a line, a
 * tail call one more. */
static size_t lines_from(lua_State *L, const char *tb, size_t len, size_t at, int level,
                         int last)
{
    int elided = last - 1 > TB_TOP + TB_BOTTOM;
    lua_Debug ar;
    for (int lv = 1; lv <= last; lv++) {
        if (elided && lv == TB_TOP + 1) {
            if (level <= last - TB_BOTTOM)
                return at; /* the skip line */
            lv = last - TB_BOTTOM; /* the skip line, then the last levels */
        } else if (lv >= level) {
            return at;
        }
        int lines = 1;
        if (!elided || lv != last - TB_BOTTOM) { /* (that one stands for the skip line) */
            lua_getstack(L, lv, &ar);
            lua_getinfo(L, "t", &ar);
            lines += ar.istailcall != 0; /* a flag, not always 1 */
        }
        while (lines-- > 0 && at < len) {
            const char *next = strstr(tb + at + 2, "\n\t");
            at = next ? (size_t)(next - tb) : len;
        }
    }
    return len;
}

/* The traceback from the failing item's function up, without the frames
 * of the chunk's own machinery (chunk_loop and below, the worker's loop
 * and the parent's stack it was forked from): Lua's traceback, cut where
 * chunk_loop's level begins. */
static void push_traceback(lua_State *L, int msg)
{
    lua_Debug ar;
    int level = 1, loop_level = 0;
    while (lua_getstack(L, level, &ar)) {
        lua_getinfo(L, "f", &ar);
        if (lua_tocfunction(L, -1) == chunk_loop)
            loop_level = level;
        lua_pop(L, 1);
        level++;
    }
    luaL_traceback(L, L, lua_tostring(L, msg), 1);
    if (loop_level == 0)
        return;
    size_t len, at = lua_rawlen(L, msg) + sizeof "\nstack traceback:" - 1;
    const char *tb = lua_tolstring(L, -1, &len);
    if (at > len)
        return;
    lua_pushlstring(L, tb, lines_from(L, tb, len, at, loop_level, level - 1));
    lua_remove(L, -2);
}

/* The message handler of an item's call (upvalue 1: the chunk's state):
 * the error as map's parent side expects it, or the chunk's own as it is. */
static int chunk_msgh(lua_State *L)
{
    chunk_state *st = lua_touserdata(L, lua_upvalueindex(1));
    if (st->own)
        return 1;
    lua_settop(L, 1);
    push_message(L, 1);                        /* 2 */
    push_traceback(L, 2);                      /* 3 */
    lua_pushcfunction(L, try_encode);
    lua_pushvalue(L, 1);
    int crosses = lua_pcall(L, 1, 0, 0) == LUA_OK;
    if (!crosses)
        lua_pop(L, 1);
    lua_createtable(L, 0, 4);
    lua_pushinteger(L, st->item);
    lua_setfield(L, -2, "item");
    if (crosses) {
        lua_pushvalue(L, 1);
        lua_setfield(L, -2, "value");
    }
    lua_pushvalue(L, 2);
    lua_setfield(L, -2, "message");
    lua_pushvalue(L, 3);
    lua_setfield(L, -2, "traceback");
    return 1;
}

/* Calls fn (below its item on the stack) on item number `item`: an error
 * now is the item's. */
static void call_item(lua_State *L, chunk_state *st, lua_Integer item)
{
    st->item = item;
    st->own = 0;
    lua_call(L, 1, 1);
    st->own = 1;
}

/* Calls fn on the next m items (k + 1..); their results stay on the stack. */
static void call_batch(lua_State *L, chunk_state *st, wire_dec *d, size_t k, int m)
{
    array_slot in[CHUNK_BATCH];
    for (int q = 0; q < m;) {
        size_t got = wire_dec_list_ints(d, in, (size_t)(m - q));
        for (size_t g = 0; g < got; g++, q++) {
            lua_pushvalue(L, 2);
            lua_pushinteger(L, in[g].v.i);
            call_item(L, st, (lua_Integer)(k + (size_t)q) + 1);
        }
        if (got == 0) { /* not an integer of a run: one value */
            lua_pushvalue(L, 2);
            if (wire_dec_list_next(d) != 0)
                luaL_error(L, "bad task frame: %s", d->err);
            call_item(L, st, (lua_Integer)(k + (size_t)q) + 1);
            q++;
        }
    }
}

/* Encodes the m results at first.. (items k + 1..); tables are kept in the
 * table at `kept` (made when the first one comes). */
static void encode_batch(lua_State *L, wire_enc *e, int first, int m, size_t k, int kept)
{
    array_slot out[CHUNK_BATCH];
    size_t ints = 0;
    for (int q = 0; q < m; q++) {
        int idx = first + q;
        if (lua_isinteger(L, idx)) {
            array_slot_set_int(&out[ints++], lua_tointeger(L, idx));
            continue;
        }
        wire_enc_list_ints(e, out, ints);
        ints = 0;
        int type = lua_type(L, idx);
        wire_enc_list_add(e, idx, type);
        if (type == LUA_TTABLE) {
            if (lua_isnil(L, kept)) {
                lua_newtable(L);
                lua_replace(L, kept);
            }
            lua_pushvalue(L, idx);
            lua_rawseti(L, kept, (lua_Integer)(k + (size_t)q) + 1);
        }
    }
    wire_enc_list_ints(e, out, ints);
}

/* chunk_loop(state, fn, items, ctx, nrefs, fn_ref): fn over each item,
 * results into state->b, a batch at a time: items called, then their
 * results encoded (as run_chunk calls all, then encodes). */
static int chunk_loop(lua_State *L)
{
    chunk_state *st = lua_touserdata(L, 1);
    size_t len, n;
    const char *items = lua_tolstring(L, 3, &len);
    wire_dec d;
    wire_enc e;
    st->own = 1;
    wire_dec_resume(&d, L, items, len, WIRE_FUNCTIONS, 4, (int)lua_tointeger(L, 5),
                    (int)lua_tointeger(L, 6), 2);
    wire_enc_begin(&e, L, st->b, 0);
    if (wire_dec_list_begin(&d, &n) != 0)
        return luaL_error(L, "bad task frame: %s", d.err);
    lua_pushnil(L); /* the results the encoder numbered, once there is one */
    int kept = lua_gettop(L);
    if (!lua_checkstack(L, CHUNK_BATCH + 4))
        return luaL_error(L, "not enough stack space");
    wire_enc_list_begin(&e, n, "result");
    for (size_t k = 0; k < n;) {
        int m = n - k < CHUNK_BATCH ? (int)(n - k) : CHUNK_BATCH;
        call_batch(L, st, &d, k, m);
        encode_batch(L, &e, kept + 1, m, k, kept);
        lua_settop(L, kept);
        k += (size_t)m;
    }
    if (wire_dec_list_end(&d) != 0)
        return luaL_error(L, "bad task frame: %s", d.err);
    wire_enc_list_end(&e);
    return 0;
}

static double seconds_now(clockid_t clock)
{
    struct timespec ts;
    clock_gettime(clock, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

/* chunk_run(fn, items, ctx, nrefs, fn_ref) -> results, pid, seconds, CPU
 * seconds (upvalue 1: a scratch buffer). map sizes the chunks of quick
 * items by the CPU seconds, which a loaded machine does not stretch. */
static int chunk_run(lua_State *L)
{
    double started = seconds_now(CLOCK_MONOTONIC);
    double cpu = seconds_now(CLOCK_THREAD_CPUTIME_ID);
    chunk_state st = {NULL, 0, 1};
    lua_settop(L, 5);
    st.b = wbuf_scratch_take(L);
    int holder = lua_gettop(L);
    lua_pushlightuserdata(L, &st);
    lua_pushcclosure(L, chunk_msgh, 1);
    int msgh = lua_gettop(L);
    lua_pushcfunction(L, chunk_loop);
    lua_pushlightuserdata(L, &st);
    for (int i = 1; i <= 5; i++)
        lua_pushvalue(L, i);
    if (lua_pcall(L, 6, 0, msgh) != LUA_OK)
        return lua_error(L);
    lua_pushlstring(L, st.b->data + st.b->off, st.b->len - st.b->off);
    wbuf_scratch_give(L, st.b, holder);
    lua_pushinteger(L, (lua_Integer)getpid());
    lua_pushnumber(L, seconds_now(CLOCK_MONOTONIC) - started);
    lua_pushnumber(L, seconds_now(CLOCK_THREAD_CPUTIME_ID) - cpu);
    return 4;
}

void chunk_push_runner(lua_State *L)
{
    lua_getfield(L, LUA_REGISTRYINDEX, RUNNER);
}

void chunk_open(lua_State *L)
{
    wbuf_scratch_new(L);
    lua_pushcclosure(L, chunk_run, 1);
    lua_setfield(L, LUA_REGISTRYINDEX, RUNNER);
}
