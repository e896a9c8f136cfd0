/*
 * worker.c - the child's side: the worker loop, stop requests, and the
 * calls a child makes to its parent.
 *
 * A child reads frames from the parent on its blocking end of the
 * socketpair and writes its own to the pipe (see proc.c), both through one
 * chan (chan.c). A pool worker runs serve(): read a task, load it
 * (task.c), run it under a traceback handler, write one result frame, and
 * again, until the parent says QUIT or goes away.
 *
 * Stop requests come as the stop signal carrying a task id and a level
 * (stop_unpack). Its handler lives here and is installed by
 * worker_child_main; sig.c keeps the signal blocked until then, so a
 * request is never lost. The handler only stores flags and, for a cancel
 * or a timeout of the task that is running, sets a count hook (as lua.c
 * does for Ctrl-C); the hook raises "cancelled" or "timeout" at the next
 * Lua instruction, so <close> variables and pcall cleanup still run. A request for a task that
 * has not started yet (it waits in the pipeline) is remembered in a ring,
 * and that task is answered "cancelled" without running.
 *
 * Frames that are not the answer a child waits for (a task that arrives
 * while a task waits for a queue reply) are kept, in order, in `deferred`.
 */
#include <errno.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "orch.h"

#define NO_TASK (-1)
#define RING 128 /* more than a worker's pipeline (dispatch.lua's PIPELINE_MAX) */

static lua_State *task_L;         /* the thread tasks run on */
static chan ch = {.rfd = -1, .wfd = -1}; /* to the parent; rfd -1: not in a child of orch */
static wbuf deferred;             /* frames kept while a call waits for its reply */
static volatile sig_atomic_t cur_id = NO_TASK;  /* low 30 bits of the running id */
static volatile sig_atomic_t running;           /* a task's Lua code may run */
static volatile sig_atomic_t stop_level;        /* for cur_id */
static volatile sig_atomic_t interrupted;       /* the hook raised, with this level */
static lua_State *volatile running_co;           /* the coroutine a task runs, if any */
static ev_async stop_wake;                      /* wakes the child's loop on a stop */
static volatile sig_atomic_t ring[RING];        /* recent stop values */
static volatile sig_atomic_t ring_n;

static void stop_hook(lua_State *L, lua_Debug *ar)
{
    (void)ar;
    lua_sethook(L, NULL, 0, 0);
    if (running && stop_level >= STOP_CANCEL && !interrupted) {
        interrupted = stop_level;
        lua_pushstring(L, stop_level == STOP_TIMEOUT ? "timeout" : "cancelled");
        lua_error(L);
    }
}

/* The stop signal's handler: async-signal-safe, touches only flags and
 * the Lua hook (as lua.c's laction). */
static void stop_handler(int sig, siginfo_t *si, void *uc)
{
    (void)sig; (void)uc;
    int saved = errno;
    int value = si->si_value.sival_int, id, level;
    stop_unpack(value, &id, &level);
    ring[ring_n % RING] = value;
    ring_n = ring_n + 1;
    if (ev_is_active(&stop_wake))
        ev_async_send(loop_get(), &stop_wake); /* async-signal-safe (libev) */
    if (id == cur_id && level > stop_level) {
        stop_level = level;
        if (level >= STOP_CANCEL && running && task_L) {
            lua_sethook(task_L, stop_hook, LUA_MASKCALL | LUA_MASKRET | LUA_MASKCOUNT, 1);
            lua_State *co = running_co;
            if (co)
                lua_sethook(co, stop_hook, LUA_MASKCALL | LUA_MASKRET | LUA_MASKCOUNT, 1);
        }
    }
    errno = saved;
}

/* The highest stop level the ring holds for id (0: none). */
static int ring_level(int id)
{
    int best = 0;
    if (ring_n == 0)
        return 0; /* no request yet: most workers, all their lives */
    for (int k = 0; k < RING; k++) {
        int v = ring[k], key, level;
        if (v == 0)
            continue; /* most slots, most of the time */
        stop_unpack(v, &key, &level);
        if (key == id && level > best)
            best = level;
    }
    return best;
}

/* ---- coroutines -------------------------------------------------------------
 * The stop hook is per thread: a task busy inside a coroutine would never
 * see the one set on the task's thread. In a child, coroutine.resume and
 * coroutine.wrap are wrapped so that the thread being run is known
 * (running_co, for the handler) and one resumed while a stop is pending
 * gets the hook at once. Code that kept the original functions from
 * before the fork is not covered. */

/* Calls the function below n arguments with co as the running coroutine;
 * returns its results, or raises its error. */
static int run_as(lua_State *L, lua_State *co, int n)
{
    lua_State *prev = running_co;
    running_co = co;
    if (co && running && stop_level >= STOP_CANCEL && !interrupted)
        lua_sethook(co, stop_hook, LUA_MASKCALL | LUA_MASKRET | LUA_MASKCOUNT, 1);
    int rc = lua_pcall(L, n, LUA_MULTRET, 0);
    running_co = prev;
    if (rc != LUA_OK)
        return lua_error(L);
    return lua_gettop(L);
}

/* coroutine.resume(co, ...), upvalue 1 the original. */
static int co_resume(lua_State *L)
{
    lua_State *co = lua_tothread(L, 1);
    int n = lua_gettop(L);
    lua_pushvalue(L, lua_upvalueindex(1));
    lua_insert(L, 1);
    return run_as(L, co, n);
}

/* What coroutine.wrap returns: upvalues the coroutine and the original
 * wrapper around it. */
static int co_wrapped(lua_State *L)
{
    int n = lua_gettop(L);
    lua_pushvalue(L, lua_upvalueindex(2));
    lua_insert(L, 1);
    return run_as(L, lua_tothread(L, lua_upvalueindex(1)), n);
}

/* coroutine.wrap(f), upvalue 1 the original. */
static int co_wrap(lua_State *L)
{
    lua_settop(L, 1);
    lua_pushvalue(L, lua_upvalueindex(1));
    lua_insert(L, 1);
    lua_call(L, 1, 1); /* the original's function */
    if (lua_getupvalue(L, 1, 1) == NULL || !lua_isthread(L, -1))
        return 1; /* not the wrapper this Lua makes: leave it alone */
    lua_insert(L, 1);
    lua_pushcclosure(L, co_wrapped, 2);
    return 1;
}

static void wrap_coroutines(lua_State *L)
{
    if (lua_getglobal(L, "coroutine") == LUA_TTABLE) {
        lua_getfield(L, -1, "resume");
        int done = lua_tocfunction(L, -1) == co_resume; /* a child's child */
        lua_pop(L, 1);
        if (done) {
            lua_pop(L, 1);
            return;
        }
        lua_getfield(L, -1, "resume");
        lua_pushcclosure(L, co_resume, 1);
        lua_setfield(L, -2, "resume");
        lua_getfield(L, -1, "wrap");
        lua_pushcclosure(L, co_wrap, 1);
        lua_setfield(L, -2, "wrap");
    }
    lua_pop(L, 1);
}

/* ---- channel -------------------------------------------------------------- */

static void child_exit(int code)
{
    chan_flush_blocking(&ch);
    fflush(NULL);
    _exit(code);
}

/* Keeps the frame chan_next found in `deferred` (a big frame's payload
 * copied from its mapping: deferred holds plain frames only). */
static int defer_frame(int type, const char *payload, size_t plen)
{
    if (wbuf_reserve(&deferred, FRAME_HEADER + plen) < 0)
        return -1;
    unsigned char *h = (unsigned char *)deferred.data + deferred.len;
    for (int k = 0; k < 4; k++)
        h[k] = (unsigned char)(plen >> (8 * k));
    h[4] = (unsigned char)type;
    memcpy(h + FRAME_HEADER, payload, plen);
    deferred.len += FRAME_HEADER + plen;
    chan_take(&ch);
    return 0;
}

/* Marks the frame next_frame found (in `deferred`, or the channel's) as read. */
static void take_frame(int deferred_one, size_t plen)
{
    if (deferred_one)
        chan_consume(&deferred, plen);
    else
        chan_take(&ch);
}

/* The channel is polled this long before the worker blocks on it: the
 * next task of a busy caller is taken without sleeping and being woken,
 * which costs more than the task itself when tasks are small. Only while a
 * core is free for it (spin_pays): among more runnable processes than
 * cores, the poll takes the core from the parent or a busy worker. */
#define SPIN_NS 50000L
#define KEEP_IDLE_MS 1000 /* idle this long, the big blocks kept go */

/* Whether the parent's channel has bytes to read within ms. */
static int frame_within(int ms)
{
    struct pollfd p = {.fd = ch.rfd, .events = POLLIN};
    int r;
    do
        r = poll(&p, 1, ms);
    while (r < 0 && errno == EINTR);
    return r != 0;
}

/* Finds the next frame: from `deferred` first unless want_reply, then from
 * the channel, blocking. With want_reply, frames that are not MSG_REPLY are
 * moved to `deferred`. Returns 1 with *deferred_one saying where the frame
 * is (take it with take_frame), 0 at EOF, raises on a bad frame. */
static int next_frame(lua_State *L, int want_reply, int *deferred_one, int *type,
                      const char **payload, size_t *plen)
{
    if (deferred.len == 0)
        wbuf_reset(&deferred); /* drained: a large buffer is given back */
    *deferred_one = !want_reply && chan_peek(&deferred, type, payload, plen) == 1;
    if (*deferred_one)
        return 1;
    for (;;) {
        int r = chan_next(&ch, type, payload, plen);
        if (r == -2)
            return luaL_error(L, "orch: bad frame from the parent: %s", ch.why);
        if (r < 0)
            return luaL_error(L, "orch: bad frame from the parent");
        if (r == 1) {
            if (!want_reply || *type == MSG_REPLY)
                return 1;
            if (defer_frame(*type, *payload, *plen) < 0)
                return luaL_error(L, "orch: not enough memory");
            continue;
        }
        if (chan_flush_blocking(&ch) < 0)
            return 0;
        ssize_t n = -1;
        errno = EAGAIN;
        if (spin_pays())
            n = chan_fill_spin(&ch, SPIN_NS);
        /* Before it sleeps, the worker tells the parent to write, not to
         * put frames on the lane; what came there meanwhile is read now. */
        if (n < 0 && errno == EAGAIN && !chan_sleep(&ch) && alloc_big_expiry() >= 0
            && !frame_within(KEEP_IDLE_MS))
            alloc_big_trim(); /* idle: big blocks kept for the next task go */
        if (n < 0 && errno == EAGAIN) {
            n = chan_fill(&ch, (size_t)-1);
            chan_wake(&ch); /* awake, and looks at the lane before it sleeps again */
        }
        if (n == 0 || (n < 0 && errno != EAGAIN))
            return 0;
    }
}

/* ---- running a task -------------------------------------------------------- */

/* Cuts the traceback on top of the stack where orch's own frames begin
 * (the worker loop, or the fork that started a service): what is left is
 * the task's. */
static void trim_traceback(lua_State *L)
{
    static const char *const marks[] = {
        "\n\t[C]: in function 'orch.core.serve'", "\n\t[C]: in function 'orch.core.spawn'"};
    size_t len;
    const char *tb = lua_tolstring(L, -1, &len);
    for (size_t k = 0; k < sizeof marks / sizeof marks[0]; k++) {
        const char *cut = strstr(tb, marks[k]);
        if (cut == NULL)
            continue;
        size_t n = (size_t)(cut - tb);
        static const char tail[] = "\n\t[C]: in ?";
        if (n >= sizeof tail - 1 && memcmp(cut - (sizeof tail - 1), tail, sizeof tail - 1) == 0)
            n -= sizeof tail - 1;
        lua_pushlstring(L, tb, n);
        lua_replace(L, -2);
        return;
    }
}

static int msgh(lua_State *L)
{
    /* error value at 1; leaves (value, message, traceback) via the registry */
    const char *msg;
    if (lua_type(L, 1) == LUA_TSTRING)
        msg = lua_tostring(L, 1);
    else if (luaL_getmetafield(L, 1, "__tostring") != LUA_TNIL) {
        lua_pop(L, 1);
        msg = luaL_tolstring(L, 1, NULL);
    } else
        msg = lua_pushfstring(L, "(error object is a %s value)", luaL_typename(L, 1));
    luaL_traceback(L, L, msg, 1);
    trim_traceback(L);
    lua_setfield(L, LUA_REGISTRYINDEX, "orch.traceback");
    lua_pushstring(L, msg);
    lua_setfield(L, LUA_REGISTRYINDEX, "orch.message");
    lua_settop(L, 1);
    return 1;
}

/* The parent decodes every field of a child's frame as a value. */
static void enc_id(lua_State *L, wire_enc *e, lua_Integer id)
{
    lua_pushinteger(L, id);
    wire_enc_value(e, -1, "id");
    lua_pop(L, 1);
}

/* encode_error(id, kind, message, traceback, value): an ERROR frame.
 * Run in protected mode: the value may refuse to cross. */
static int encode_error(lua_State *L)
{
    wire_enc e;
    chan_enc_begin(L, &ch, MSG_ERROR, &e, 0);
    enc_id(L, &e, lua_tointeger(L, 1));
    for (int i = 2; i <= 5; i++)
        wire_enc_value(&e, i, "error");
    chan_enc_end(L, &ch, &e);
    return 0;
}

static int last_failed; /* the last task replied with an error */
static int memory_limited; /* limits.memory applies: a memory error names it */

static void reply_error(lua_State *L, lua_Integer id, const char *kind, int msg_idx,
                        int tb_idx, int val_idx)
{
    last_failed = 1;
    for (int attempt = 0; attempt < 2; attempt++) {
        lua_pushcfunction(L, encode_error);
        lua_pushinteger(L, id);
        lua_pushstring(L, kind);
        lua_pushvalue(L, msg_idx);
        lua_pushvalue(L, tb_idx);
        if (attempt == 0)
            lua_pushvalue(L, val_idx);
        else
            lua_pushnil(L); /* the value could not cross: send the rest */
        if (lua_pcall(L, 5, 0, 0) == LUA_OK)
            return;
        lua_pop(L, 1);
        chan_rollback(&ch);
    }
}

/* The id of the task frame being run: 0 is the init task, NO_FRAME means
 * the frame failed before its id was read. */
#define NO_FRAME (-1)
static lua_Integer frame_id = NO_FRAME;

/* Runs the task below nargs arguments (msgh at 1, fn at 2) as task id,
 * under stop requests: a cancel or timeout that came before it starts
 * answers it without running. Returns as lua_pcall; `interrupted` says
 * whether a stop request ended it, and with which level. */
static int run_task(lua_State *L, int nargs, lua_Integer id)
{
    int key = stop_key(id);
    running = 0;
    cur_id = key;
    stop_level = 0;
    interrupted = 0;
    lua_sethook(L, NULL, 0, 0);
    task_L = L;
    running_co = NULL;
    running = 1;
    int pending = ring_level(key);
    if (pending > stop_level)
        stop_level = pending;
    int rc;
    if (stop_level >= STOP_CANCEL) {
        running = 0;
        lua_settop(L, 1);
        lua_pushstring(L, stop_level == STOP_TIMEOUT ? "timeout" : "cancelled");
        lua_pushvalue(L, -1);
        lua_setfield(L, LUA_REGISTRYINDEX, "orch.message");
        lua_pushliteral(L, "");
        lua_setfield(L, LUA_REGISTRYINDEX, "orch.traceback");
        interrupted = stop_level;
        rc = LUA_ERRRUN;
    } else {
        rc = lua_pcall(L, nargs, LUA_MULTRET, 1);
        running = 0;
        lua_sethook(L, NULL, 0, 0);
    }
    cur_id = NO_TASK;
    return rc;
}

/* A RESULT frame: id, then the values at from..top. */
static void reply_result(lua_State *L, lua_Integer id, int from)
{
    int nres = lua_gettop(L) - from + 1;
    wire_enc e;
    chan_enc_begin(L, &ch, MSG_RESULT, &e, 0);
    enc_id(L, &e, id);
    static const char *const roots[] = {"result[1]", "result[2]", "result[3]"};
    char root[32];
    for (int i = 1; i <= nres; i++) {
        if (i <= 3) {
            wire_enc_value(&e, from + i - 1, roots[i - 1]);
        } else {
            snprintf(root, sizeof root, "result[%d]", i);
            wire_enc_value(&e, from + i - 1, root);
        }
    }
    chan_enc_end(L, &ch, &e);
}

/* run_frame(payload, plen): loads a TASK frame (task.c), runs it, encodes
 * the reply into the channel. Called in protected mode: a decode or
 * encode failure becomes an ERROR reply (see serve). */
static int run_frame(lua_State *L)
{
    const char *payload = lua_touserdata(L, 1);
    size_t plen = (size_t)lua_tointeger(L, 2);
    lua_settop(L, 0);
    lua_pushcfunction(L, msgh); /* 1 */
    int nargs = task_load(L, payload, plen, &frame_id); /* fn at 2, args */
    lua_Integer id = frame_id;
    int rc = run_task(L, nargs, id);
    if (rc == LUA_OK) {
        reply_result(L, id, 2);
        return 0;
    }
    /* error value at 2 */
    int level = interrupted;
    const char *kind = level == STOP_TIMEOUT ? "timeout" : level ? "cancelled" : "error";
    if (rc == LUA_ERRRUN) { /* msgh ran: its message and traceback */
        lua_getfield(L, LUA_REGISTRYINDEX, "orch.message");
        lua_getfield(L, LUA_REGISTRYINDEX, "orch.traceback");
    } else { /* a memory error (or one in msgh itself): no handler ran */
        const char *msg = lua_type(L, 2) == LUA_TSTRING ? lua_tostring(L, 2) : "error";
        if (rc == LUA_ERRMEM && memory_limited)
            lua_pushfstring(L, "%s (limits.memory)", msg);
        else
            lua_pushstring(L, msg);
        lua_pushliteral(L, "");
    }
    int top = lua_gettop(L);
    reply_error(L, id, kind, top - 1, top, 2);
    return 0;
}

#define EXIT_INIT_FAILED 3  /* the init task failed */
#define EXIT_RESIDENT 4     /* resident memory above max_resident after a task */

static long long limit_field(lua_State *L, int t, const char *name)
{
    lua_getfield(L, t, name);
    lua_Integer v = lua_isnil(L, -1) ? 0 : luaL_checkinteger(L, -1);
    lua_pop(L, 1);
    return v > 0 ? (long long)v : 0;
}

/* The limits table at t (serve's argument), applied. */
static void apply_limits(lua_State *L, int t)
{
    worker_limits l;
    l.cpu = limit_field(L, t, "cpu");
    l.memory = limit_field(L, t, "memory");
    l.files = limit_field(L, t, "files");
    l.processes = limit_field(L, t, "processes");
    l.max_resident = limit_field(L, t, "max_resident");
    char err[160];
    if (limits_apply(&l, err, sizeof err) < 0)
        luaL_error(L, "orch: %s", err);
    memory_limited = l.memory > 0;
}

/* Leaves before reading another task, saying why first (a RETIRE frame):
 * the parent then knows that what it sent since has not started. */
static void retire(lua_State *L, const char *reason)
{
    lua_settop(L, 0);
    lua_pushstring(L, reason);
    chan_enc_values(L, &ch, MSG_RETIRE, 1, 0);
    child_exit(EXIT_RESIDENT);
}

/* serve([limits]): the pool worker's loop. Returns when the parent says
 * QUIT or goes away. Exits the child with EXIT_INIT_FAILED if the init
 * task (id 0) fails, with EXIT_RESIDENT after a task that left it above
 * limits.max_resident. limits: { cpu =, memory =, files =, processes =,
 * max_resident = } (limits.c). */
static int l_serve(lua_State *L)
{
    if (ch.rfd < 0)
        return luaL_error(L, "orch.core.serve: only in a child process of orch");
    if (lua_istable(L, 1))
        apply_limits(L, 1);
    sigset_t mask;
    sig_child_save(&mask);
    for (;;) {
        int deferred_one;
        int type;
        const char *payload;
        size_t plen;
        lua_settop(L, 0);
        if (!next_frame(L, 0, &deferred_one, &type, &payload, &plen))
            break;
        take_frame(deferred_one, plen);
        if (type == MSG_QUIT)
            break;
        if (type != MSG_TASK)
            continue;
        frame_id = NO_FRAME;
        last_failed = 0;
        unsigned long big = alloc_big_made();
        limits_task_start();
        lua_pushcfunction(L, run_frame);
        lua_pushlightuserdata(L, (void *)payload);
        lua_pushinteger(L, (lua_Integer)plen);
        if (lua_pcall(L, 2, 0, 0) != LUA_OK) {
            /* the frame did not decode, or a result could not cross */
            running = 0;
            cur_id = NO_TASK;
            chan_rollback(&ch);
            int msg = lua_gettop(L);
            lua_pushliteral(L, "");
            reply_error(L, frame_id, "error", msg, msg + 1, msg);
        }
        /* Each result leaves before the next task starts: a worker that
         * dies in that task must not take finished results with it. Then
         * the signal mask and handlers the task may have changed (the stop
         * signal blocked) are put back, before the next task. A task
         * that got or made big values (alloc_big.c) is followed by a full
         * collection: their memory is back, kept for the next such task,
         * instead of dead megabytes waiting for the collector's next
         * cycle while the next ones are made. Blocks are kept while such
         * tasks follow each other: a task without big values, or a second
         * idle (KEEP_IDLE_MS), lets them go. */
        int flushed = chan_flush_blocking(&ch);
        sig_child_restore(&mask);
        if (flushed < 0)
            break;
        if (frame_id == 0 && last_failed)
            child_exit(EXIT_INIT_FAILED); /* this worker is of no use */
        if (alloc_big_made() != big)
            lua_gc(L, LUA_GCCOLLECT);
        else
            alloc_big_trim();
        if (limits_over_memory())
            retire(L, "resident"); /* a fresh worker takes the next task */
    }
    lua_settop(L, 0);
    return 0;
}

/* ---- calls a child makes -------------------------------------------------- */

static void check_child(lua_State *L, const char *fn)
{
    if (ch.rfd < 0)
        luaL_error(L, "orch.core.%s: only in a child process of orch", fn);
}

/* send_parent(type, ...): one frame to the parent, written at once. */
static int l_send_parent(lua_State *L)
{
    check_child(L, "send_parent");
    lua_Integer type = luaL_checkinteger(L, 1);
    luaL_argcheck(L, type > 0 && type < 256, 1, "message type out of range");
    chan_enc_values(L, &ch, (int)type, 2, 0);
    if (chan_flush_blocking(&ch) < 0)
        return luaL_error(L, "orch: the parent is gone");
    return 0;
}

/* set_max_message(n): a frame this child sends with more than n bytes of
 * payload is refused (the parent's max_message; a task's result raises). */
static int l_set_max_message(lua_State *L)
{
    check_child(L, "set_max_message");
    lua_Integer n = luaL_checkinteger(L, 1);
    luaL_argcheck(L, n > 0 && (lua_Unsigned)n <= FRAME_MAX, 1, "must be 1 .. 2^31 - 1");
    ch.max_out = (size_t)n;
    return 0;
}

/* call(...): a MSG_CALL frame, then the values of the parent's MSG_REPLY. */
static int l_call(lua_State *L)
{
    check_child(L, "call");
    lua_pushinteger(L, MSG_CALL);
    lua_insert(L, 1);
    l_send_parent(L);
    int deferred_one;
    int type;
    const char *payload;
    size_t plen;
    if (!next_frame(L, 1, &deferred_one, &type, &payload, &plen))
        return luaL_error(L, "orch: the parent is gone");
    lua_settop(L, 0);
    wire_dec d;
    wire_dec_begin(&d, L, payload, plen, WIRE_FUNCTIONS);
    int bad = 0;
    while (!bad && d.pos < d.len)
        bad = wire_dec_value(&d) < 0;
    wire_dec_end(&d);
    take_frame(deferred_one, plen);
    if (bad)
        return luaL_error(L, "orch: bad reply from the parent: %s", d.err);
    return lua_gettop(L);
}

/* stopping() -> boolean: the parent asked this task or service to stop. */
static int l_stopping(lua_State *L)
{
    lua_pushboolean(L, ch.rfd >= 0 && stop_level >= STOP_ASK);
    return 1;
}

/* child_sleep(seconds): sleeps; returns early (true) when asked to stop. */
static int l_child_sleep(lua_State *L)
{
    double end = loop_clock() + loop_check_seconds(L, 1);
    for (;;) {
        if (ch.rfd >= 0 && stop_level >= STOP_ASK) {
            lua_pushboolean(L, 1);
            return 1;
        }
        double left = end - loop_clock();
        if (left <= 0)
            break;
        poll(NULL, 0, left > 1e6 ? 1000000000 : (int)(left * 1000) + 1);
    }
    lua_pushboolean(L, 0);
    return 1;
}

static int l_in_child(lua_State *L)
{
    lua_pushboolean(L, ch.rfd >= 0);
    return 1;
}

static int no_op(lua_State *L)
{
    (void)L;
    return 0;
}

/* A stop request came while the child may be in its loop (orch.sleep, a
 * pool of its own): the turn ends as if a callback ran, so the waiting
 * Lua code sees orch.stopping() at once, wherever in the turn the signal
 * fell. */
static void stop_wake_cb(struct ev_loop *loop, ev_async *w, int revents)
{
    (void)loop; (void)w; (void)revents;
    lua_State *L = loop_state();
    if (L) {
        lua_pushcfunction(L, no_op);
        loop_call(L, 0);
    }
}

void worker_child_main(lua_State *L, int in, int out, lane *lanes, int fnidx)
{
    alloc_child_init(L);
    wrap_coroutines(L);
    chan_init(&ch, in, out);
    if (lanes)
        chan_set_lanes(&ch, lanes, 1, 1);
    task_L = L;
    ev_async_init(&stop_wake, stop_wake_cb);
    ev_async_start(loop_get(), &stop_wake);
    ev_unref(loop_get()); /* it holds no loop alive */
    cur_id = 0; /* a service is "task 0" for stop requests */
    sig_child_accept_stop(stop_handler); /* a request already queued comes now */
    lua_pushvalue(L, fnidx);
    lua_pushcfunction(L, msgh);
    lua_insert(L, -2);
    int rc = lua_pcall(L, 0, 0, -2);
    if (rc != LUA_OK) {
        if (rc == LUA_ERRRUN)
            lua_getfield(L, LUA_REGISTRYINDEX, "orch.traceback");
        else
            lua_pushvalue(L, -1); /* a memory error: msgh did not run */
        const char *tb = lua_tostring(L, -1);
        lua_pushcfunction(L, l_send_parent);
        lua_pushinteger(L, MSG_LOG);
        lua_pushliteral(L, "error");
        lua_pushstring(L, tb ? tb : "error");
        if (lua_pcall(L, 3, 0, 0) != LUA_OK)
            fprintf(stderr, "%s\n", tb ? tb : "error");
        child_exit(1);
    }
    child_exit(0);
}

void worker_open(lua_State *L)
{
    static const luaL_Reg fns[] = {
        {"serve", l_serve}, {"send_parent", l_send_parent}, {"call", l_call},
        {"stopping", l_stopping}, {"child_sleep", l_child_sleep},
        {"in_child", l_in_child}, {"set_max_message", l_set_max_message}, {NULL, NULL}};
    luaL_setfuncs(L, fns, 0);
}
