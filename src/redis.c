/*
 * redis.c - an asynchronous Redis client on orch's own libev loop.
 *
 * hiredis's async API does the protocol (RESP) and its libev adapter the
 * events, on the loop of loop.c: one loop, no threads, nothing blocks.
 * core.redis_connect{...} -> conn starts a non-blocking connect and
 * returns at once; commands sent before the connection is up are written
 * once it is. conn:command(argv, fn) calls fn(reply) or fn(nil, err)
 * from the loop, through loop_call as every orch callback is.
 *
 * Invariants:
 * - A conn's callbacks live in its first user value (id -> fn); while
 *   a command awaits its answer, or the connect is in progress, the
 *   registry holds the conn (anchor), so its callbacks always run.
 * - Every end of a connection (connect failure or timeout, the server
 *   closing, an I/O error, close()) goes through ended(), called from the
 *   adapter's clean-up hook after hiredis has answered every waiting
 *   command with no reply: fn(nil, err) for each, then on_disconnect(err)
 *   unless close() ended it. Lua errors there are kept by loop_call.
 * - hiredis frees a context itself once it fails; the conn only ever
 *   frees it through redisAsyncFree, which hiredis defers while one of
 *   the context's callbacks runs.
 * - A conn remembers the process that made it: in a forked child the
 *   connection's fd is closed at fork (pthread_atfork) and close/gc do
 *   nothing, so a child never writes into the parent's connection nor
 *   keeps it open after the parent closed it.
 */
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include <hiredis/adapters/libev.h>
#include <hiredis/async.h>
#include <hiredis/hiredis.h>

#include "orch.h"

#define REDIS_MT "orch.redis"
#define REPLY_MAXDEPTH 64
#define ARGV_MAX 100000

typedef struct rconn {
    redisAsyncContext *ac; /* NULL once the connection has ended */
    pid_t owner;           /* the process that made it */
    int anchor;            /* registry ref to the conn while it is awaited */
    int closed;            /* close() ended it: no on_disconnect */
    int quiet;             /* being collected: no Lua at all */
    int connected;
    long waiting;          /* commands sent and not answered */
    long next_id;
    double timeout;        /* seconds the connect may take */
    ev_timer connect_timer;
    struct rconn *next, *prev; /* live connections, for the fork handler */
    char where[128];       /* "host:port" or the socket's path */
    char err[256];         /* why it ended, once it has */
} rconn;

static rconn *live;
static lua_State *closing_L; /* the thread inside close(), for callbacks */
static int live_table = LUA_NOREF; /* weak: rconn pointer -> conn */

void redis_forget_state(void)
{
    live_table = LUA_NOREF;
}

/* In a forked child: the parent's connections are not ours. */
static void at_fork_child(void)
{
    for (rconn *c = live; c; c = c->next)
        if (c->ac && c->ac->c.fd >= 0)
            close(c->ac->c.fd);
    live = NULL;
}

static void link_live(rconn *c)
{
    c->prev = NULL;
    c->next = live;
    if (live)
        live->prev = c;
    live = c;
}

static void unlink_live(rconn *c)
{
    if (c->prev)
        c->prev->next = c->next;
    else if (live == c)
        live = c->next;
    if (c->next)
        c->next->prev = c->prev;
    c->next = c->prev = NULL;
}

static lua_State *callback_state(void)
{
    return closing_L ? closing_L : loop_state();
}

static void anchor(lua_State *L, rconn *c, int idx)
{
    if (c->anchor == LUA_NOREF) {
        lua_pushvalue(L, idx);
        c->anchor = luaL_ref(L, LUA_REGISTRYINDEX);
    }
}

static void unanchor(lua_State *L, rconn *c)
{
    if (c->anchor != LUA_NOREF && c->waiting == 0) {
        luaL_unref(L, LUA_REGISTRYINDEX, c->anchor);
        c->anchor = LUA_NOREF;
    }
}

/* Pushes the conn of c, or returns 0 (it was collected). */
static int push_conn(lua_State *L, rconn *c)
{
    lua_rawgeti(L, LUA_REGISTRYINDEX, live_table);
    lua_rawgetp(L, -1, c);
    lua_remove(L, -2);
    if (lua_isnil(L, -1)) {
        lua_pop(L, 1);
        return 0;
    }
    return 1;
}

/* ---- replies as Lua values -------------------------------------------------
 * Bulk strings are strings, integers integers, nil is nil, arrays are
 * tables with n; a status is { ok = s } and an error { err = s }, as
 * Redis's own Lua scripting shows them. Runs inside a pcall. */
static void push_reply(lua_State *L, const redisReply *r, int depth)
{
    luaL_checkstack(L, 3, "orch.redis: reply nested too deep");
    switch (r->type) {
    case REDIS_REPLY_STRING:
        lua_pushlstring(L, r->str, r->len);
        break;
    case REDIS_REPLY_INTEGER:
        lua_pushinteger(L, (lua_Integer)r->integer);
        break;
    case REDIS_REPLY_STATUS:
    case REDIS_REPLY_ERROR:
        lua_createtable(L, 0, 1);
        lua_pushlstring(L, r->str, r->len);
        lua_setfield(L, -2, r->type == REDIS_REPLY_STATUS ? "ok" : "err");
        break;
    case REDIS_REPLY_ARRAY:
        if (depth >= REPLY_MAXDEPTH)
            luaL_error(L, "orch.redis: reply nested deeper than %d", REPLY_MAXDEPTH);
        lua_createtable(L, r->elements > 0x7fffffff ? 0 : (int)r->elements, 1);
        for (size_t i = 0; i < r->elements; i++) {
            push_reply(L, r->element[i], depth + 1);
            lua_rawseti(L, -2, (lua_Integer)i + 1);
        }
        lua_pushinteger(L, (lua_Integer)r->elements);
        lua_setfield(L, -2, "n");
        break;
    default:
        lua_pushnil(L);
    }
}

/* deliver(fn, reply_ptr | nil, err | nil): fn(reply) or fn(nil, err). */
static int deliver(lua_State *L)
{
    lua_settop(L, 3);
    if (!lua_isnil(L, 3)) {
        lua_pushnil(L);
        lua_replace(L, 2);  /* fn, nil, err */
        lua_call(L, 2, 0);
        return 0;
    }
    const redisReply *r = lua_touserdata(L, 2);
    lua_settop(L, 1);
    if (r)
        push_reply(L, r, 0);
    else
        lua_pushnil(L);
    lua_call(L, 1, 0);
    return 0;
}

static const char *end_reason(rconn *c, redisAsyncContext *ac)
{
    if (c->closed)
        return "closed";
    if (c->err[0] == '\0') {
        if (!c->connected)
            snprintf(c->err, sizeof c->err, "connect to %s: %s", c->where,
                     ac->errstr && ac->err ? ac->errstr : "failed");
        else
            snprintf(c->err, sizeof c->err, "connection to %s lost: %s", c->where,
                     ac->err ? ac->errstr : "closed by the server");
    }
    return c->err;
}

/* hiredis: the answer to one command (r NULL: the connection ended). */
static void reply_cb(redisAsyncContext *ac, void *reply, void *privdata)
{
    rconn *c = ac->data;
    lua_State *L = callback_state();
    if (c == NULL || c->quiet || L == NULL)
        return;
    c->waiting--;
    int top = lua_gettop(L);
    if (!push_conn(L, c))
        return;
    if (privdata == NULL) {  /* sent without fn: nobody waits for the answer */
        if (c->waiting == 0 && c->connected)
            unanchor(L, c);
        lua_settop(L, top);
        return;
    }
    lua_pushcfunction(L, deliver);
    lua_getiuservalue(L, top + 1, 1);
    lua_rawgeti(L, -1, (lua_Integer)(intptr_t)privdata);
    lua_pushnil(L);
    lua_rawseti(L, -3, (lua_Integer)(intptr_t)privdata);
    lua_remove(L, -2);  /* the callbacks table */
    redisReply *r = reply;
    if (r) {
        lua_pushlightuserdata(L, r);
        lua_pushnil(L);
    } else {
        lua_pushnil(L);
        lua_pushstring(L, end_reason(c, ac));
    }
    if (c->waiting == 0 && c->connected)
        unanchor(L, c);
    loop_call(L, 3);
    lua_settop(L, top);
}

/* The connection has ended, whatever ended it: every waiting command
 * has had its answer; on_disconnect(err) unless close() ended it. */
static void ended(rconn *c, redisAsyncContext *ac)
{
    lua_State *L = callback_state();
    ev_timer_stop(loop_get(), &c->connect_timer);
    unlink_live(c);
    const char *why = end_reason(c, ac);
    c->ac = NULL;
    ac->data = NULL;
    if (c->quiet || L == NULL)
        return;
    int top = lua_gettop(L);
    if (push_conn(L, c)) {
        c->waiting = 0;
        unanchor(L, c);
        if (!c->closed && lua_getiuservalue(L, top + 1, 2) == LUA_TFUNCTION) {
            lua_pushstring(L, why);
            loop_call(L, 1);
        }
    }
    lua_settop(L, top);
}

/* The adapter's clean-up, then ours: called once as hiredis frees. */
static void cleanup_hook(void *privdata)
{
    redisLibevEvents *e = privdata;
    redisAsyncContext *ac = e->context;
    redisLibevCleanup(privdata);
    if (ac->data)
        ended(ac->data, ac);
}

static void connect_cb(const redisAsyncContext *ac, int status)
{
    rconn *c = ac->data;
    if (c == NULL)
        return;
    ev_timer_stop(loop_get(), &c->connect_timer);
    if (status == REDIS_OK) {
        c->connected = 1;
        lua_State *L = callback_state();
        if (L && !c->quiet && c->waiting == 0)
            unanchor(L, c);
    } else if (c->err[0] == '\0') {
        snprintf(c->err, sizeof c->err, "connect to %s: %s", c->where, ac->errstr);
    }
    /* hiredis frees a context whose connect failed once this returns */
}

static void connect_timeout_cb(struct ev_loop *l, ev_timer *w, int revents)
{
    (void)l; (void)revents;
    rconn *c = (rconn *)((char *)w - offsetof(rconn, connect_timer));
    if (c->ac == NULL || c->connected)
        return;
    snprintf(c->err, sizeof c->err, "connect to %s: timed out after %gs", c->where,
             c->timeout);
    redisAsyncFree(c->ac);  /* not inside one of its callbacks: frees now */
}

/* ---- the binding ------------------------------------------------------------ */

static rconn *check_conn(lua_State *L)
{
    return luaL_checkudata(L, 1, REDIS_MT);
}

static int opt_field(lua_State *L, const char *name, int type)
{
    int t = lua_getfield(L, 1, name);
    if (t != LUA_TNIL && t != type)
        luaL_error(L, "orch.redis_connect: option '%s' must be a %s, got %s", name,
                   lua_typename(L, type), luaL_typename(L, -1));
    return t != LUA_TNIL;
}

/* Reads and checks the options at 1; leaves on_disconnect at the top
 * (or nil). Fills where and timeout; returns the path or NULL, the host
 * in *host and the port in *port. */
static const char *connect_options(lua_State *L, rconn *c, const char **host, int *port)
{
    static const char *const valid[] = {"host", "port", "path", "timeout", "on_disconnect", NULL};
    lua_pushnil(L);
    while (lua_next(L, 1)) {
        int ok = 0;
        for (int i = 0; valid[i]; i++)
            ok |= lua_type(L, -2) == LUA_TSTRING && strcmp(lua_tostring(L, -2), valid[i]) == 0;
        if (!ok)
            luaL_error(L, "orch.redis_connect: unknown option '%s' (valid: host, port, path, "
                       "timeout, on_disconnect)", luaL_tolstring(L, -2, NULL));
        lua_pop(L, 1);
    }
    const char *path = opt_field(L, "path", LUA_TSTRING) ? lua_tostring(L, -1) : NULL;
    *host = opt_field(L, "host", LUA_TSTRING) ? lua_tostring(L, -1) : NULL;
    if (path && *host)
        luaL_error(L, "orch.redis_connect: give 'host' or 'path', not both");
    if (!path && !*host)
        luaL_error(L, "orch.redis_connect: option 'host' or 'path' is required");
    *port = 6379;
    if (opt_field(L, "port", LUA_TNUMBER)) {
        if (!lua_isinteger(L, -1) || lua_tointeger(L, -1) < 1 || lua_tointeger(L, -1) > 65535)
            luaL_error(L, "orch.redis_connect: option 'port' must be an integer in 1..65535");
        *port = (int)lua_tointeger(L, -1);
    }
    c->timeout = 5;
    if (opt_field(L, "timeout", LUA_TNUMBER)) {
        c->timeout = lua_tonumber(L, -1);
        if (!(c->timeout > 0))
            luaL_error(L, "orch.redis_connect: option 'timeout' must be a positive number");
    }
    if (path)
        snprintf(c->where, sizeof c->where, "%s", path);
    else
        snprintf(c->where, sizeof c->where, "%s:%d", *host, *port);
    opt_field(L, "on_disconnect", LUA_TFUNCTION);
    return path;
}

/* redis_connect{ host = , port = 6379 | path = , timeout = 5,
 *                on_disconnect = fn(err) } -> conn | nil, err
 * Starts the connect and returns; a failure found at once (no such
 * socket, a refused loopback port) is nil, err. */
static int l_connect(lua_State *L)
{
    luaL_checktype(L, 1, LUA_TTABLE);
    lua_settop(L, 1);
    rconn *c = lua_newuserdatauv(L, sizeof *c, 2); /* at 2; closed, owns nothing yet */
    memset(c, 0, sizeof *c);
    c->owner = getpid();
    c->anchor = LUA_NOREF;
    ev_init(&c->connect_timer, connect_timeout_cb);
    luaL_setmetatable(L, REDIS_MT);
    lua_newtable(L);
    lua_setiuservalue(L, 2, 1);
    const char *host;
    int port;
    const char *path = connect_options(L, c, &host, &port);
    lua_setiuservalue(L, 2, 2);  /* on_disconnect */
    redisAsyncContext *ac = path ? redisAsyncConnectUnix(path) : redisAsyncConnect(host, port);
    if (ac == NULL)
        return luaL_error(L, "orch.redis_connect: out of memory");
    if (ac->err) {
        lua_pushnil(L);
        lua_pushfstring(L, "connect to %s: %s", c->where, ac->errstr);
        redisAsyncFree(ac);
        return 2;
    }
    fcntl(ac->c.fd, F_SETFD, FD_CLOEXEC);
    if (!path)
        redisEnableKeepAlive(&ac->c);
    if (redisLibevAttach(loop_get(), ac) != REDIS_OK) {
        redisAsyncFree(ac);
        return luaL_error(L, "orch.redis_connect: cannot attach to the loop");
    }
    ac->ev.cleanup = cleanup_hook;
    ac->data = c;
    c->ac = ac;
    link_live(c);
    redisAsyncSetConnectCallback(ac, connect_cb);
    ev_timer_set(&c->connect_timer, c->timeout, 0.);
    loop_timer_start(&c->connect_timer);
    lua_rawgeti(L, LUA_REGISTRYINDEX, live_table);
    lua_pushvalue(L, 2);
    lua_rawsetp(L, -2, c);
    lua_pop(L, 1);
    anchor(L, c, 2);  /* until connected or ended */
    lua_pushvalue(L, 2);
    return 1;
}

/* Pushes argv[1..n] (strings or numbers) on the stack, checked. */
static int push_argv(lua_State *L, int t)
{
    lua_Integer n = luaL_len(L, t);
    luaL_argcheck(L, n >= 1, t, "a command needs at least its name");
    luaL_argcheck(L, n <= ARGV_MAX, t, "too many arguments");
    luaL_checkstack(L, (int)n + 4, "orch.redis: too many arguments");
    for (lua_Integer i = 1; i <= n; i++) {
        int type = lua_rawgeti(L, t, i);
        if (type != LUA_TSTRING && type != LUA_TNUMBER)
            return luaL_error(L, "bad argument #%d to 'command' (argv[%d] must be a string "
                              "or a number, got %s)", t, (int)i, lua_typename(L, type));
        lua_tolstring(L, -1, NULL);  /* numbers become strings on the stack only */
    }
    return (int)n;
}

/* conn:command(argv [, fn]) -> true | nil, err
 * Sends argv (a list of strings and numbers); fn(reply) or fn(nil, err)
 * runs in the loop once the answer (or the end of the connection) comes;
 * without fn the answer is dropped here, never reaching Lua (the commands
 * inside a MULTI, whose EXEC answers for them all).
 * nil, err: the connection has ended (err says why), fn never runs. */
static int l_command(lua_State *L)
{
    rconn *c = check_conn(L);
    luaL_checktype(L, 2, LUA_TTABLE);
    int has_fn = !lua_isnoneornil(L, 3);
    if (has_fn)
        luaL_checktype(L, 3, LUA_TFUNCTION);
    lua_settop(L, 3);
    if (c->owner != getpid())
        return luaL_error(L, "orch.redis: a connection cannot be used in a forked child");
    if (c->ac == NULL || (c->ac->c.flags & (REDIS_DISCONNECTING | REDIS_FREEING))) {
        lua_pushnil(L);
        lua_pushstring(L, c->ac || c->closed ? "closed" : c->err);
        return 2;
    }
    int n = push_argv(L, 2);
    const char **argv = lua_newuserdatauv(L, (size_t)n * (sizeof *argv + sizeof(size_t)), 0);
    size_t *lens = (size_t *)(argv + n);
    for (int i = 0; i < n; i++)
        argv[i] = lua_tolstring(L, 4 + i, &lens[i]);
    long id = has_fn ? ++c->next_id : 0;
    if (redisAsyncCommandArgv(c->ac, reply_cb, (void *)(intptr_t)id, n, argv, lens) != REDIS_OK) {
        lua_pushnil(L);
        lua_pushstring(L, "closed");
        return 2;
    }
    if (has_fn) {
        lua_getiuservalue(L, 1, 1);
        lua_pushvalue(L, 3);
        lua_rawseti(L, -2, id);
    }
    c->waiting++;
    anchor(L, c, 1);
    lua_pushboolean(L, 1);
    return 1;
}

/* conn:flush(): writes what the commands sent so far left in the output
 * buffer now, as far as the socket takes it without waiting (the loop
 * writes the rest), so the server can act on it while this process goes
 * on without running the loop. */
static int l_flush(lua_State *L)
{
    rconn *c = check_conn(L);
    if (c->owner == getpid() && c->ac && c->connected &&
        !(c->ac->c.flags & (REDIS_DISCONNECTING | REDIS_FREEING)))
        redisAsyncHandleWrite(c->ac);
    return 0;
}

/* close(): ends the connection; the commands still waiting get
 * fn(nil, "closed") before it returns; no on_disconnect. Idempotent. */
static int l_close(lua_State *L)
{
    rconn *c = check_conn(L);
    if (c->owner != getpid() || c->ac == NULL)
        return 0;
    c->closed = 1;
    lua_State *outer = closing_L;
    closing_L = L;
    redisAsyncFree(c->ac);  /* inside one of its callbacks: once that returns */
    closing_L = outer;
    return 0;
}

static int l_gc(lua_State *L)
{
    rconn *c = check_conn(L);
    if (c->owner != getpid() || c->ac == NULL)
        return 0;
    c->closed = c->quiet = 1;
    redisAsyncContext *ac = c->ac;
    if (ac->c.flags & REDIS_IN_CALLBACK) {
        ac->data = NULL;  /* hiredis frees it later; c's memory goes now */
        ev_timer_stop(loop_get(), &c->connect_timer);
        unlink_live(c);
        c->ac = NULL;
    }
    redisAsyncFree(ac);
    return 0;
}

/* conn:connected() -> true once the connection is up and until it ends. */
static int l_connected(lua_State *L)
{
    rconn *c = check_conn(L);
    lua_pushboolean(L, c->ac != NULL && c->connected && c->owner == getpid());
    return 1;
}

/* conn:error() -> why the connection ended, or nil while it lives. */
static int l_error(lua_State *L)
{
    rconn *c = check_conn(L);
    if (c->ac != NULL)
        return 0;
    lua_pushstring(L, c->closed ? "closed" : c->err);
    return 1;
}

static int l_waiting(lua_State *L)
{
    rconn *c = check_conn(L);
    lua_pushinteger(L, c->waiting);
    return 1;
}

static int l_tostring(lua_State *L)
{
    rconn *c = check_conn(L);
    lua_pushfstring(L, "orch.redis (%s, %s)", c->where,
                    c->ac == NULL ? "ended" : c->connected ? "connected" : "connecting");
    return 1;
}

void redis_open(lua_State *L)
{
    static int atfork_done;
    if (!atfork_done) {
        pthread_atfork(NULL, NULL, at_fork_child);
        atfork_done = 1;
    }
    if (live_table == LUA_NOREF) {
        lua_newtable(L);
        lua_createtable(L, 0, 1);
        lua_pushliteral(L, "v");
        lua_setfield(L, -2, "__mode");
        lua_setmetatable(L, -2);
        live_table = luaL_ref(L, LUA_REGISTRYINDEX);
    }
    static const luaL_Reg methods[] = {
        {"command", l_command}, {"close", l_close}, {"connected", l_connected},
        {"error", l_error}, {"flush", l_flush}, {"waiting", l_waiting}, {"__gc", l_gc}, {"__close", l_close},
        {"__tostring", l_tostring}, {NULL, NULL}};
    if (luaL_newmetatable(L, REDIS_MT)) {
        luaL_setfuncs(L, methods, 0);
        lua_pushvalue(L, -1);
        lua_setfield(L, -2, "__index");
    }
    lua_pop(L, 1);
    lua_pushcfunction(L, l_connect);
    lua_setfield(L, -2, "redis_connect");
}
