/*
 * task.c - a task's wire form: what a TASK frame holds, made in the
 * parent and loaded in the child.
 *
 * The parent packs a task once, at submit (core.pack_task, pack_chunk):
 * a value that cannot cross is refused there, naming its place. A Lua
 * function is numbered by its code (fnid > 0): closures of one prototype
 * share an id, and a worker is sent the code with the first task that
 * uses it and keeps it in its own table of functions. A C function or a
 * "module.name" string travels by name (fnid 0) and is resolved in the
 * worker (task_resolve, also core.resolve).
 *
 * A TASK frame's payload is one wire context:
 *   id, fnid, [code | nil, upvalues] (fnid > 0) or fn (fnid 0), nargs, args...
 * or, for a chunk of map (pack_chunk), TASK_CHUNK in nargs' place and the
 * items as one list, which the worker runs through fn itself (chunk.c).
 * A packed task (never sent as it is) is fnid in native order (TASK_FNID
 * bytes) then what follows the function's code in that frame: task_put
 * puts id, fnid and the code in front of it. It is a full userdata (no
 * metatable) holding those bytes: most tasks are a few dozen bytes, and
 * as Lua strings they would be short strings, each hashed and interned
 * in the state's string table and taken out of it again, a table a
 * million pending tasks would fill. Or, when it holds strings of
 * PACK_EXT_MIN bytes or more, it is a list of pieces whose concatenation
 * it is, those strings themselves among them: a big argument is then
 * copied once on its way, from where it is into the frame's memfd
 * (chan.c), not into a packed copy first. task_info and task_bytes read
 * either form.
 *
 * Invariants:
 * - Function ids and the code they stand for live in the parent's registry
 *   for good (weakly by closure): an id never names two pieces of code.
 *   There are at most FN_CACHE_MAX of them, so a parent that submits ever
 *   new code (generated closures) does not grow without bound, nor do its
 *   workers' tables: past that, a task of new code carries its code itself
 *   (fnid FN_INLINE), and the worker loads it for that task only.
 * - The worker's table of loaded functions ("orch.functions") is made in
 *   the parent before any fork, so a worker that fills it writes only the
 *   pages of its own copy.
 */
#include <stdio.h>
#include <string.h>

#include "orch.h"
#include "wire.h"

#define TASK_FNID sizeof(lua_Integer)
#define FUNCTIONS "orch.functions" /* registry: the worker's fnid -> function */
#define MAX_ARGS 1000000
#define FN_CACHE_MAX 4096        /* function ids a parent hands out */
#define FN_INLINE ((lua_Integer)-1) /* a task that carries its own code */
#define TASK_CHUNK ((lua_Integer)-1) /* in the argument count's place: a chunk */
#define PACK_EXT_MIN (512u << 10) /* strings this long are pieces of a packed task (BIG_MIN) */

static lua_Integer fn_counter;
static int fn_by_closure = LUA_NOREF; /* weak-keyed: closure -> fnid */
static int fn_by_code = LUA_NOREF;    /* bytecode -> fnid */
static int code_by_fn = LUA_NOREF;    /* fnid -> bytecode */

/* ---- function ids (parent) ------------------------------------------- */

/* The id of the code of a Lua function, given once that code is dumped. */
static lua_Integer code_id(lua_State *L, int code)
{
    lua_rawgeti(L, LUA_REGISTRYINDEX, fn_by_code);
    lua_pushvalue(L, code);
    lua_rawget(L, -2);                         /* bycode, id? */
    lua_Integer id;
    if (lua_isinteger(L, -1)) {
        id = lua_tointeger(L, -1);
        lua_pop(L, 2);
        return id;
    }
    lua_pop(L, 1);
    if (fn_counter >= FN_CACHE_MAX) {
        lua_pop(L, 1);
        return FN_INLINE;                      /* the cache is full */
    }
    id = ++fn_counter;
    lua_pushvalue(L, code);
    lua_pushinteger(L, id);
    lua_rawset(L, -3);                         /* bycode[code] = id */
    lua_rawgeti(L, LUA_REGISTRYINDEX, code_by_fn);
    lua_pushvalue(L, code);
    lua_rawseti(L, -2, id);                    /* codes[id] = code */
    lua_pop(L, 2);
    return id;
}

/* Prototypes (parent).
 * A new closure of a function already sent (an inline function in a loop)
 * is known by its prototype, so its code is not dumped again. Lua's API has
 * no call for a closure's prototype: it is read from Lua 5.4's closure
 * layout (lobject.h's LClosure), and only after task_open has checked that
 * layout on closures it made itself. fn_by_proto holds, weakly, one
 * closure per prototype: while that closure lives its prototype cannot be
 * freed, so the address cannot stand for another function; when it is
 * collected the entry goes in the same cycle, before any prototype is. */
struct lclosure_head {  /* ClosureHeader, then Proto *p */
    void *next;
    unsigned char tt, marked, nupvalues;
    void *gclist;
    const void *p;
};

static int fn_by_proto = LUA_NOREF; /* weak-valued: prototype -> a closure */
static int protos_readable;         /* the layout check passed */

static const void *proto_of(lua_State *L, int idx)
{
    const struct lclosure_head *c = lua_topointer(L, idx);
    return c->p;
}

/* Two closures of one prototype and one of another, with 1, 1 and 0
 * upvalues: the layout is Lua 5.4's if the header and prototypes agree. */
static void check_proto_layout(lua_State *L)
{
    static const char probe[] =
        "local function f(a) return function() return a end end\n"
        "return f(1), f(2), function() end";
    protos_readable = 0;
    if (luaL_loadstring(L, probe) != LUA_OK || lua_pcall(L, 0, 3, 0) != LUA_OK) {
        lua_pop(L, 1);
        return;
    }
    const struct lclosure_head *a = lua_topointer(L, -3), *b = lua_topointer(L, -2),
                               *c = lua_topointer(L, -1);
    protos_readable = a->tt == LUA_TFUNCTION && b->tt == LUA_TFUNCTION && c->tt == LUA_TFUNCTION
        && a->nupvalues == 1 && b->nupvalues == 1 && c->nupvalues == 0
        && a->p != NULL && a->p == b->p && a->p != c->p && c->p != NULL;
    lua_pop(L, 3);
}

/* The id of a closure whose prototype was seen, or 0. */
static lua_Integer proto_id(lua_State *L, int fidx)
{
    if (!protos_readable)
        return 0;
    lua_rawgeti(L, LUA_REGISTRYINDEX, fn_by_proto);
    if (lua_rawgetp(L, -1, proto_of(L, fidx)) != LUA_TFUNCTION) {
        lua_pop(L, 2);
        return 0;
    }
    lua_rawgeti(L, LUA_REGISTRYINDEX, fn_by_closure);
    lua_insert(L, -2);
    lua_rawget(L, -2);                         /* byproto, closures, id? */
    lua_Integer id = lua_isinteger(L, -1) ? lua_tointeger(L, -1) : 0;
    lua_pop(L, 3);
    return id;
}

/* Remembers the closure at fidx as its prototype's. */
static void proto_remember(lua_State *L, int fidx)
{
    if (!protos_readable)
        return;
    lua_rawgeti(L, LUA_REGISTRYINDEX, fn_by_proto);
    lua_pushvalue(L, fidx);
    lua_rawsetp(L, -2, proto_of(L, fidx));
    lua_pop(L, 1);
}

/* The id of the Lua function at fidx, its code dumped and numbered the
 * first time that code is seen (or that prototype: proto_id). FN_INLINE
 * when the cache is full and the code is new: its code is then pushed, for
 * the task to carry. */
static lua_Integer function_id(lua_State *L, int fidx)
{
    lua_rawgeti(L, LUA_REGISTRYINDEX, fn_by_closure);
    lua_pushvalue(L, fidx);
    lua_rawget(L, -2);
    if (lua_isinteger(L, -1)) {
        lua_Integer id = lua_tointeger(L, -1);
        lua_pop(L, 2);
        return id;
    }
    lua_pop(L, 1);
    lua_Integer id = proto_id(L, fidx);
    if (id) {
        lua_pop(L, 1);
        return id;
    }
    wire_dump_function(L, fidx);               /* closures, code */
    id = code_id(L, lua_gettop(L));
    if (id == FN_INLINE) {
        lua_remove(L, -2);                     /* code */
        return id;
    }
    lua_pop(L, 1);                             /* closures */
    lua_pushvalue(L, fidx);
    lua_pushinteger(L, id);
    lua_rawset(L, -3);
    lua_pop(L, 1);
    proto_remember(L, fidx);
    return id;
}

/* Encodes what stands for the Lua function at fidx in a packed task: its
 * code when it travels inline (at code), then its upvalues. */
static void put_function(wire_enc *e, lua_Integer fnid, int fidx, int code)
{
    if (fnid == FN_INLINE)
        wire_enc_value(e, code, "function");
    wire_enc_upvalues(e, fidx);
}

/* ---- packing (parent) ------------------------------------------------- */

/* Starts a packed task in the scratch buffer (upvalue 1), its holder
 * pushed at *holder, then the encoder's context. */
static wbuf *pack_begin(lua_State *L, lua_Integer fnid, wire_enc *e, int *holder)
{
    wbuf *b = wbuf_scratch_take(L);
    *holder = lua_gettop(L);
    if (wbuf_reserve(b, TASK_FNID) < 0)
        luaL_error(L, "orch: not enough memory for a task");
    memcpy(b->data, &fnid, TASK_FNID);
    b->len = TASK_FNID;
    lua_pushnil(L); /* the long strings left out, once there is one */
    wire_enc_begin(e, L, b, WIRE_FUNCTIONS);
    e->ext_min = PACK_EXT_MIN;
    e->ext_keep = *holder + 1;
    return b;
}

/* The packed task as pieces (see the header): the encoding's bytes with
 * the long strings it left out (in the table at keep) in their places. */
static void push_pieces(lua_State *L, const wbuf *b, const wire_enc *e, int keep)
{
    lua_createtable(L, 2 * e->n_ext + 1, 0);
    size_t from = 0;
    int n = 0;
    for (int k = 0; k <= e->n_ext; k++) {
        size_t to = k < e->n_ext ? e->ext[k].at : b->len - b->off;
        if (to > from || k == 0) {
            lua_pushlstring(L, b->data + b->off + from, to - from);
            lua_rawseti(L, -2, ++n);
        }
        if (k < e->n_ext) {
            lua_rawgeti(L, keep, k + 1);
            lua_rawseti(L, -2, ++n);
        }
        from = to;
    }
}

static int pack_end(lua_State *L, wbuf *b, wire_enc *e, int holder)
{
    wire_enc_end(e);
    if (e->n_ext == 0)
        memcpy(lua_newuserdatauv(L, b->len, 0), b->data, b->len);
    else
        push_pieces(L, b, e, holder + 1);
    wbuf_scratch_give(L, b, holder);
    return 1;
}

/* Starts a packed task of the function at 1 (a Lua or C function, or a
 * "module.name"): its id, then its upvalues (a Lua function) or itself. */
static wbuf *pack_function(lua_State *L, wire_enc *e, int *holder)
{
    int t = lua_type(L, 1);
    luaL_argexpected(L, t == LUA_TFUNCTION || t == LUA_TSTRING, 1, "function or module name");
    lua_Integer fnid = t == LUA_TFUNCTION && !lua_iscfunction(L, 1) ? function_id(L, 1) : 0;
    int code = lua_gettop(L);                  /* the code, if inline */
    wbuf *b = pack_begin(L, fnid, e, holder);
    if (fnid)
        put_function(e, fnid, 1, code);
    else
        wire_enc_value(e, 1, "function");
    return b;
}

/* pack_task(fn, ...) -> task: fn's upvalues (a Lua function) or fn itself
 * (a C function or a "module.name"), the argument count, the arguments. */
static int l_pack_task(lua_State *L)
{
    int n = lua_gettop(L);
    wire_enc e;
    int holder;
    wbuf *b = pack_function(L, &e, &holder);
    wire_enc_integer(&e, n - 1);
    static const char *const roots[] = {"args[1]", "args[2]", "args[3]", "args[4]"};
    char root[32];
    for (int i = 2; i <= n; i++) {
        if (i - 2 < 4) {
            wire_enc_value(&e, i, roots[i - 2]);
        } else {
            snprintf(root, sizeof root, "args[%d]", i - 1);
            wire_enc_value(&e, i, root);
        }
    }
    return pack_end(L, b, &e, holder);
}

/* pack_chunk(fn, items, i, j) -> task: a chunk of map, fn over each of
 * items[i..j] in a worker (chunk.c), the slice encoded straight from items
 * after TASK_CHUNK in the argument count's place. */
static int l_pack_chunk(lua_State *L)
{
    luaL_checktype(L, 2, LUA_TTABLE);
    lua_Integer i = luaL_checkinteger(L, 3), j = luaL_checkinteger(L, 4);
    lua_settop(L, 4);
    wire_enc e;
    int holder;
    wbuf *b = pack_function(L, &e, &holder);
    wire_enc_integer(&e, TASK_CHUNK);
    wire_enc_slice(&e, 2, i, j, "items");
    return pack_end(L, b, &e, holder);
}

/* The bytes of the value at arg (a string, or a userdata with no
 * metatable), or NULL. */
static const char *bytes_of(lua_State *L, int arg, size_t *len)
{
    int t = lua_type(L, arg);
    if (t == LUA_TSTRING)
        return lua_tolstring(L, arg, len);
    if (t != LUA_TUSERDATA || lua_getmetatable(L, arg)) {
        if (t == LUA_TUSERDATA)
            lua_pop(L, 1);
        return NULL;
    }
    *len = lua_rawlen(L, arg);
    return lua_touserdata(L, arg);
}

/* The bytes of the packed task at arg, or of its first piece (which
 * starts with the fnid); NULL if it is neither. Task bytes in a string
 * are read too (task_source; a task made by hand). */
static const char *head_of(lua_State *L, int arg, size_t *len)
{
    const char *head;
    if (lua_type(L, arg) == LUA_TTABLE) {
        lua_rawgeti(L, arg, 1);
        head = lua_tolstring(L, -1, len); /* the table keeps it */
        lua_pop(L, 1);
    } else {
        head = bytes_of(L, arg, len);
    }
    return head != NULL && *len >= TASK_FNID ? head : NULL;
}

static const char *task_head(lua_State *L, int arg, size_t *len)
{
    const char *head = head_of(L, arg, len);
    luaL_argcheck(L, head != NULL, arg, "not a packed task");
    return head;
}

lua_Integer task_fnid(lua_State *L, int arg)
{
    size_t len;
    lua_Integer fnid;
    memcpy(&fnid, task_head(L, arg, &len), TASK_FNID);
    return fnid;
}

void task_put(lua_State *L, wire_enc *e, lua_Integer id, int arg, int with_code)
{
    lua_Integer fnid = task_fnid(L, arg);
    wire_enc_integer(e, id);
    wire_enc_integer(e, fnid);
    if (fnid > 0) {                            /* an inline task has its code */
        lua_rawgeti(L, LUA_REGISTRYINDEX, code_by_fn);
        if (with_code)
            lua_rawgeti(L, -1, fnid);
        else
            lua_pushnil(L);
        wire_enc_value(e, lua_gettop(L), "function");
        lua_pop(L, 2);
    }
    size_t len;
    const char *task = bytes_of(L, arg, &len);
    if (task != NULL) {
        wire_enc_raw(e, task + TASK_FNID, len - TASK_FNID);
        return;
    }
    lua_Integer n = (lua_Integer)lua_rawlen(L, arg);
    for (lua_Integer k = 1; k <= n; k++) {
        lua_rawgeti(L, arg, k);                /* the table keeps it */
        const char *piece = lua_tolstring(L, -1, &len);
        lua_pop(L, 1);
        if (piece == NULL)
            luaL_argerror(L, arg, "not a packed task");
        size_t skip = k == 1 ? TASK_FNID : 0;
        wire_enc_raw(e, piece + skip, len - skip);
    }
}

/* ---- loading (child) -------------------------------------------------- */

void task_resolve(lua_State *L, int idx)
{
    idx = lua_absindex(L, idx);
    const char *name = lua_tostring(L, idx);
    const char *dot = strrchr(name, '.');
    lua_getglobal(L, "require");
    if (dot == NULL) {
        lua_pushvalue(L, idx);
        lua_call(L, 1, 1);
    } else {
        lua_pushlstring(L, name, (size_t)(dot - name));
        lua_call(L, 1, 1);
        lua_getfield(L, -1, dot + 1);
        lua_remove(L, -2);
    }
    if (!lua_isfunction(L, -1)) {
        if (!luaL_getmetafield(L, -1, "__call"))
            luaL_error(L, "'%s' is %s here, not a function", name, luaL_typename(L, -1));
        lua_pop(L, 1); /* a callable value stays as it is */
    }
    lua_replace(L, idx);
}

/* resolve(name) -> function: "module.name" as a worker resolves it. */
static int l_resolve(lua_State *L)
{
    luaL_checkstring(L, 1);
    lua_settop(L, 1);
    task_resolve(L, 1);
    return 1;
}

/* Decodes the function of a frame (ctx at ctx): loads its code if the
 * frame carries it, finds it by fnid, sets its upvalues. Pushes it. */
static void load_function(lua_State *L, wire_dec *d, lua_Integer fnid)
{
    if (fnid == 0) {
        if (wire_dec_value(d) < 0)
            luaL_error(L, "bad task frame: %s", d->err);
        if (lua_type(L, -1) == LUA_TSTRING)
            task_resolve(L, -1);
        return;
    }
    if (fnid == FN_INLINE) {                   /* loaded for this task only */
        if (wire_dec_value(d) < 0)
            luaL_error(L, "bad task frame: %s", d->err);
        size_t n;
        const char *code = lua_tolstring(L, -1, &n);
        if (!code || luaL_loadbufferx(L, code, n, "=task", "b") != LUA_OK)
            luaL_error(L, "bad task frame: no code for an inline function");
        lua_remove(L, -2);
        if (wire_dec_upvalues(d, lua_gettop(L)) < 0)
            luaL_error(L, "bad task frame: %s", d->err);
        return;
    }
    lua_getfield(L, LUA_REGISTRYINDEX, FUNCTIONS);
    int fns = lua_gettop(L);
    if (wire_dec_value(d) < 0) /* code or nil */
        luaL_error(L, "bad task frame: %s", d->err);
    if (lua_isstring(L, -1)) {
        size_t n;
        const char *code = lua_tolstring(L, -1, &n);
        if (luaL_loadbufferx(L, code, n, "=task", "b") != LUA_OK)
            lua_error(L);
        lua_rawseti(L, fns, fnid);
    }
    lua_pop(L, 1);
    if (lua_rawgeti(L, fns, fnid) != LUA_TFUNCTION)
        luaL_error(L, "bad task frame: function %d is not known here", (int)fnid);
    lua_remove(L, fns);
    if (wire_dec_upvalues(d, lua_gettop(L)) < 0)
        luaL_error(L, "bad task frame: %s", d->err);
}

/* A chunk's function is on top (ctx: the frame's decoder context); the
 * items are the rest of the payload. Leaves chunk_run, the function, the
 * items (a copy: the frame's bytes may move while the chunk runs) and
 * what chunk_run needs to decode them in the frame's numbering. */
static int load_chunk(lua_State *L, wire_dec *d, int ctx)
{
    int nrefs, fn_ref;
    chunk_push_runner(L);
    lua_insert(L, -2);                         /* chunk_run, fn */
    lua_pushlstring(L, d->data + d->pos, d->len - d->pos);
    wire_dec_state(d, &nrefs, &fn_ref);
    lua_pushinteger(L, nrefs);
    lua_pushinteger(L, fn_ref);
    lua_remove(L, ctx);
    return 5;
}

int task_load(lua_State *L, const char *payload, size_t plen, lua_Integer *id)
{
    wire_dec d;
    wire_dec_begin(&d, L, payload, plen, WIRE_FUNCTIONS);
    int ctx = lua_gettop(L);
    lua_Integer tid, fnid, nargs;
    if (wire_dec_integer(&d, &tid) < 0)
        return luaL_error(L, "bad task frame: %s", d.err);
    *id = tid;
    if (wire_dec_integer(&d, &fnid) < 0)
        return luaL_error(L, "bad task frame: %s", d.err);
    load_function(L, &d, fnid);
    if (wire_dec_integer(&d, &nargs) < 0 || nargs < TASK_CHUNK || nargs > MAX_ARGS)
        return luaL_error(L, "bad task frame: argument count");
    if (nargs == TASK_CHUNK)
        return load_chunk(L, &d, ctx);
    luaL_checkstack(L, (int)nargs + 8, "too many arguments");
    for (lua_Integer i = 0; i < nargs; i++)
        if (wire_dec_value(&d) < 0)
            return luaL_error(L, "bad task frame: %s", d.err);
    lua_remove(L, ctx); /* the function must stay put until here */
    return (int)nargs;
}

static void weak_table(lua_State *L, int *ref, const char *mode)
{
    lua_newtable(L);
    if (mode) {
        lua_createtable(L, 0, 1);
        lua_pushstring(L, mode);
        lua_setfield(L, -2, "__mode");
        lua_setmetatable(L, -2);
    }
    *ref = luaL_ref(L, LUA_REGISTRYINDEX);
}

/* ---- a task's source (parent, read-only) ------------------------------ */

/* task_source(task) -> "short_src:linedefined" | "module.name" | "[C]" |
 * nil: where the function of a task packed here comes from. Nothing runs:
 * the code of fnid (dumped here, debug information kept) is loaded, not
 * called, for its lua_getinfo; fnid 0 holds a "module.name" string or a C
 * function. nil for a string (or pieces) that holds no task packed by this
 * process. */
static int l_task_source(lua_State *L)
{
    size_t tlen = 0;
    luaL_argexpected(L, lua_isstring(L, 1) || lua_istable(L, 1) || lua_isuserdata(L, 1),
                     1, "string or packed task");
    const char *task = head_of(L, 1, &tlen);
    lua_Integer fnid;
    if (task == NULL || tlen <= TASK_FNID)
        return luaL_pushfail(L), 1;
    memcpy(&fnid, task, TASK_FNID);
    if (fnid == 0) {
        unsigned char tag = (unsigned char)task[TASK_FNID];
        if ((tag & ~T_SHARED) == T_CFUNC) /* a C function, perhaps referred to again */
            return lua_pushliteral(L, "[C]"), 1;
        wire_dec d;
        wire_dec_begin(&d, L, task + TASK_FNID, tlen - TASK_FNID, 0);
        int bad = wire_dec_value(&d) < 0;
        wire_dec_end(&d);                      /* the name, if decoded */
        if (bad || lua_type(L, -1) != LUA_TSTRING)
            return luaL_pushfail(L), 1;
        return 1;
    }
    if (fnid == FN_INLINE) {                   /* the code is the first value */
        wire_dec d;
        wire_dec_begin(&d, L, task + TASK_FNID, tlen - TASK_FNID, 0);
        int bad = wire_dec_value(&d) < 0;
        wire_dec_end(&d);
        if (bad || lua_type(L, -1) != LUA_TSTRING)
            return luaL_pushfail(L), 1;
    } else {
        lua_rawgeti(L, LUA_REGISTRYINDEX, code_by_fn);
        if (lua_rawgeti(L, -1, fnid) != LUA_TSTRING)
            return luaL_pushfail(L), 1;
    }
    size_t n;
    const char *code;
    code = lua_tolstring(L, -1, &n);
    if (luaL_loadbufferx(L, code, n, "=task", "b") != LUA_OK)
        return luaL_pushfail(L), 1;
    lua_Debug ar;
    lua_getinfo(L, ">S", &ar);                 /* pops the function */
    lua_pushfstring(L, "%s:%d", ar.short_src, ar.linedefined);
    return 1;
}

/* The packed task at arg (the userdata or the list of pieces pack_task
 * and pack_chunk make): its size in bytes, its bytes pushed piece by
 * piece if push; raises if it is not one. */
static size_t task_walk(lua_State *L, int arg, int push)
{
    size_t len;
    if (lua_type(L, arg) == LUA_TUSERDATA) {
        const char *p = bytes_of(L, arg, &len);
        luaL_argexpected(L, p != NULL && len >= TASK_FNID, arg, "packed task");
        if (push)
            lua_pushlstring(L, p, len);
        return len;
    }
    luaL_argexpected(L, lua_istable(L, arg) && head_of(L, arg, &len) != NULL, arg, "packed task");
    size_t size = 0;
    lua_Integer n = (lua_Integer)lua_rawlen(L, arg);
    for (lua_Integer k = 1; k <= n; k++) {
        luaL_checkstack(L, 1, "a packed task in too many pieces");
        lua_rawgeti(L, arg, k);
        luaL_argexpected(L, lua_type(L, -1) == LUA_TSTRING, arg, "packed task");
        size += lua_rawlen(L, -1);
        if (!push)
            lua_pop(L, 1);
    }
    return size;
}

/* task_info(task) -> bytes, fnid: a packed task's size and function id
 * (0: by name, -1: its code inside). */
static int l_task_info(lua_State *L)
{
    size_t len;
    lua_Integer fnid;
    lua_pushinteger(L, (lua_Integer)task_walk(L, 1, 0));
    memcpy(&fnid, head_of(L, 1, &len), TASK_FNID);
    lua_pushinteger(L, fnid);
    return 2;
}

/* task_bytes(task) -> string: a packed task's bytes, in one string. */
static int l_task_bytes(lua_State *L)
{
    lua_settop(L, 1);
    task_walk(L, 1, 1);
    lua_concat(L, lua_gettop(L) - 1);
    return 1;
}

/* functions_known() -> n, max: function ids handed out so far, and the
 * most there will be (a diagnostic: the cache's bound). */
static int l_functions_known(lua_State *L)
{
    lua_pushinteger(L, fn_counter);
    lua_pushinteger(L, FN_CACHE_MAX);
    return 2;
}

void task_forget_state(void)
{
    fn_counter = 0;
    fn_by_closure = fn_by_code = code_by_fn = fn_by_proto = LUA_NOREF;
}

void task_open(lua_State *L)
{
    if (fn_by_closure == LUA_NOREF) {
        weak_table(L, &fn_by_closure, "k");
        weak_table(L, &fn_by_code, NULL);
        weak_table(L, &code_by_fn, NULL);
        weak_table(L, &fn_by_proto, "v");
        check_proto_layout(L);
    }
    if (lua_getfield(L, LUA_REGISTRYINDEX, FUNCTIONS) != LUA_TTABLE) {
        lua_newtable(L);
        lua_setfield(L, LUA_REGISTRYINDEX, FUNCTIONS);
    }
    lua_pop(L, 1);
    wbuf_scratch_fn(L, l_pack_task, "pack_task");
    wbuf_scratch_fn(L, l_pack_chunk, "pack_chunk");
    lua_pushcfunction(L, l_resolve);
    lua_setfield(L, -2, "resolve");
    lua_pushcfunction(L, l_task_source);
    lua_setfield(L, -2, "task_source");
    lua_pushcfunction(L, l_functions_known);
    lua_setfield(L, -2, "functions_known");
    lua_pushcfunction(L, l_task_info);
    lua_setfield(L, -2, "task_info");
    lua_pushcfunction(L, l_task_bytes);
    lua_setfield(L, -2, "task_bytes");
}
