/*
 * core.c - the binding that builds the Lua module orch.core.
 *
 * orch.core is the mechanism: the loop, children and their channels,
 * signals, the serializer, and the child's side. The policy (pools,
 * futures, supervisors, queues) is the Lua layer in lua/orch/.
 */
#include <dlfcn.h>
#include <unistd.h>

#include "orch.h"

#define ORCH_VERSION "0.1.0"

LUALIB_API int luaopen_orch_core(lua_State *L);

static int l_cpu_count(lua_State *L)
{
    long n = sysconf(_SC_NPROCESSORS_ONLN);
    lua_pushinteger(L, n > 0 ? n : 1);
    return 1;
}

static int l_getpid(lua_State *L)
{
    lua_pushinteger(L, getpid());
    return 1;
}

/* big_blocks() -> {made =, mapped =, kept =, kept_bytes =}: the big
 * blocks of this process (alloc_big.c) handed out so far, how many of
 * them were new mappings, and the freed ones kept for reuse now. */
static int l_big_blocks(lua_State *L)
{
    alloc_big_counts c;
    alloc_big_stats(&c);
    lua_createtable(L, 0, 4);
    lua_pushinteger(L, (lua_Integer)c.made);
    lua_setfield(L, -2, "made");
    lua_pushinteger(L, (lua_Integer)c.mapped);
    lua_setfield(L, -2, "mapped");
    lua_pushinteger(L, (lua_Integer)c.kept);
    lua_setfield(L, -2, "kept");
    lua_pushinteger(L, (lua_Integer)c.kept_bytes);
    lua_setfield(L, -2, "kept_bytes");
    return 1;
}

/* orch.core keeps state for the life of the process, not of the Lua
 * state that loaded it: the loop, and signal handlers (libev's, a child's
 * stop handler) that the kernel calls by address. lua_close unloads C
 * modules, and a signal after that would jump into unmapped code; so the
 * module pins itself, and libev with it (RTLD_NODELETE). The loop then
 * stays reachable to the end, as the one loop of the process it is. */
static void pin_module(void)
{
    Dl_info info;
    if (dladdr((void *)(uintptr_t)luaopen_orch_core, &info) && info.dli_fname)
        (void)dlopen(info.dli_fname, RTLD_NOW | RTLD_NOLOAD | RTLD_NODELETE);
}

/* The state that opened orch.core is closing: lua_close runs the finalizer
 * of a sentinel its registry holds, after those of every object made since
 * (pools, procs, timers: finalizers run newest first), before any memory
 * goes. What orch keeps for the process but belongs to that state is let
 * go here, so that the host goes on safely, and may open orch.core again
 * in a new state (the module stays loaded: pin_module). */
static int state_closing(lua_State *L)
{
    loop_forget_state(L);
    sig_forget_state();
    task_forget_state();
    redis_forget_state();
    return 0;
}

static void watch_state(lua_State *L)
{
    static const char key[] = "orch.core.state";
    if (lua_getfield(L, LUA_REGISTRYINDEX, key) == LUA_TNIL) {
        lua_newuserdatauv(L, 0, 0);
        lua_createtable(L, 0, 1);
        lua_pushcfunction(L, state_closing);
        lua_setfield(L, -2, "__gc");
        lua_setmetatable(L, -2);
        lua_setfield(L, LUA_REGISTRYINDEX, key);
    }
    lua_pop(L, 1);
}

__attribute__((visibility("default"))) int luaopen_orch_core(lua_State *L)
{
    pin_module();
    alloc_big_init(L);
    watch_state(L);
    lua_newtable(L);
    loop_open(L);
    proc_open(L);
    sig_open(L);
    array_open(L);
    chunk_open(L);
    task_open(L);
    worker_open(L);
    wire_open(L);
    sha256_open(L);  /* signed tasks */
    joblog_open(L);  /* a long map's job log */
    redis_open(L);   /* the broker's client */
    control_open(L); /* the control socket */
    control_client_open(L); /* orch ctl's end of it */
    tty_open(L);     /* orch top's terminal */
    static const luaL_Reg fns[] = {
        {"cpu_count", l_cpu_count}, {"getpid", l_getpid}, {"big_blocks", l_big_blocks},
        {NULL, NULL}};
    luaL_setfuncs(L, fns, 0);
    static const struct { const char *name; int value; } msgs[] = {
        {"TASK", MSG_TASK}, {"QUIT", MSG_QUIT}, {"REPLY", MSG_REPLY},
        {"RESULT", MSG_RESULT}, {"ERROR", MSG_ERROR}, {"LOG", MSG_LOG},
        {"READY", MSG_READY}, {"CALL", MSG_CALL}, {"SEND", MSG_SEND},
        {"RETIRE", MSG_RETIRE}, {"WAKE", MSG_WAKE},
        {"STOP_ASK", STOP_ASK}, {"STOP_CANCEL", STOP_CANCEL},
        {"STOP_TIMEOUT", STOP_TIMEOUT}, {NULL, 0}};
    lua_createtable(L, 0, 14);
    for (int i = 0; msgs[i].name; i++) {
        lua_pushinteger(L, msgs[i].value);
        lua_setfield(L, -2, msgs[i].name);
    }
    lua_setfield(L, -2, "msg");
    lua_pushliteral(L, ORCH_VERSION);
    lua_setfield(L, -2, "version");
    return 1;
}
