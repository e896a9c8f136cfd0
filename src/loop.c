/*
 * loop.c - the one libev loop of a process, timers, and calls into Lua.
 *
 * Lua drives the loop with core.step(timeout): one turn of ev_run. Every
 * callback calls Lua through loop_call: a pcall with a traceback. An error
 * there is kept, the loop is broken out of, and step raises it again once
 * ev_run has returned, so no error ever longjmps through libev.
 *
 * Before the loop blocks, a prepare watcher runs the before-block hooks
 * (as ae's beforesleep): proc.c's writes every frame queued on the
 * children's channels, so many sends made during one turn leave in one
 * write per channel. The loop calls nothing above it but those hooks and
 * Lua.
 */
#include <ev.h>
#include <time.h>

#include "orch.h"

#define TIMER_MT "orch.timer"

static struct ev_loop *loop;
#define MAX_HOOKS 4
static ev_prepare before_block;
static loop_hook hooks[MAX_HOOKS];
static int nhooks;
static loop_hook spin_read;           /* loop_on_spin */
static loop_hook sleep_read;          /* loop_on_sleep */
static ev_timer kept_timer;            /* lets kept big blocks go (alloc_big.c) */
static int pending_error = LUA_NOREF;  /* registry ref of a callback error */
static lua_State *running_L;          /* the thread inside step(), for callbacks */
static unsigned long calls;           /* callbacks into Lua so far */

/* Before it blocks, step polls for this long: a reply that comes within
 * it is taken at once, without the cost of sleeping and being woken (tens
 * of microseconds on a virtual machine), which is most of a round trip.
 * Only while a core is free for it (spin_pays): otherwise the poll takes
 * the core from the workers it waits for. */
#define SPIN_SECONDS 50e-6
/* While it spins, a step mostly reads where the reply it waits for likely
 * comes from (loop_on_spin): one system call a try, where a turn of the
 * loop takes two (epoll_wait, then the read) and its hooks. One try in
 * SPIN_TURN_EVERY is a whole turn of the loop, for everything else. */
#define SPIN_TURN_EVERY 8

struct ev_loop *loop_get(void)
{
    return loop;
}

lua_State *loop_state(void)
{
    return running_L;
}

static int traceback(lua_State *L)
{
    const char *msg = lua_tostring(L, 1);
    if (msg == NULL && !lua_isnoneornil(L, 1) && luaL_callmeta(L, 1, "__tostring")
        && lua_type(L, -1) == LUA_TSTRING)
        return 1;  /* an error object with its own text: keep it whole */
    if (msg == NULL && !lua_isnoneornil(L, 1))
        return 1;  /* a non-string error value travels as it is */
    luaL_traceback(L, L, msg, 1);
    return 1;
}

int loop_call(lua_State *L, int nargs)
{
    int base = lua_gettop(L) - nargs;  /* the function's index */
    lua_pushcfunction(L, traceback);
    lua_insert(L, base);
    calls++;
    int rc = lua_pcall(L, nargs, 0, base);
    if (rc == LUA_OK) {
        lua_remove(L, base);
        return 0;
    }
    if (pending_error == LUA_NOREF)
        pending_error = luaL_ref(L, LUA_REGISTRYINDEX);  /* pops the error */
    else
        lua_pop(L, 1);
    lua_remove(L, base);
    ev_break(loop, EVBREAK_ALL);
    return -1;
}

void loop_on_spin(loop_hook fn)
{
    spin_read = fn;
}

void loop_on_sleep(loop_hook fn)
{
    sleep_read = fn;
}

void loop_on_before_block(loop_hook fn)
{
    for (int k = 0; k < nhooks; k++)
        if (hooks[k] == fn)
            return;
    if (nhooks < MAX_HOOKS)
        hooks[nhooks++] = fn;
}

static void kept_timer_cb(struct ev_loop *l, ev_timer *w, int revents)
{
    (void)w; (void)revents;
    ev_ref(l); /* it stopped itself: undo its ev_unref */
    alloc_big_expire();
}

/* Big blocks kept for reuse go once they have waited long enough
 * (alloc_big.c), also while no more big values come: a timer for the
 * oldest, which keeps no loop alive. */
static void watch_kept(struct ev_loop *l)
{
    double left = alloc_big_expiry();
    if (left < 0 || ev_is_active(&kept_timer))
        return;
    ev_timer_set(&kept_timer, left + 0.01, 0.);
    ev_timer_start(l, &kept_timer);
    ev_unref(l);
}

static void before_block_cb(struct ev_loop *l, ev_prepare *w, int revents)
{
    (void)w; (void)revents;
    for (int k = 0; k < nhooks; k++)
        hooks[k]();
    watch_kept(l);
}

lua_Number loop_check_seconds(lua_State *L, int arg)
{
    lua_Number secs = luaL_checknumber(L, arg);
    if (secs != secs)
        luaL_argerror(L, arg, "seconds must be a number, got NaN");
    if (secs < 0)
        luaL_argerror(L, arg, "seconds must not be negative");
    return secs;
}

static void step_limit_cb(struct ev_loop *l, ev_timer *w, int revents)
{
    (void)l; (void)w; (void)revents;
}

/* step([timeout [, idle]]): one turn of the loop. Without a timeout (nil)
 * it blocks until something happens; 0 only polls. idle: what the caller
 * waits for is no quick reply (a timer, a service's exit), so it blocks
 * without polling first. Raises a callback's error.
 *
 * A step may run inside a callback of an outer step (a blocking call in
 * an on_done function): the events that outer turn gathered and has not
 * handled yet are handled first, and count as this turn. They may be what
 * the caller waits for, and a blocking ev_run would handle them only on
 * its way in, then block for more. Its timeout timer is its own, on the
 * C stack, so a nested step never rearms the outer one's. */
static int l_step(lua_State *L)
{
    lua_Number timeout = lua_isnoneornil(L, 1) ? -1 : loop_check_seconds(L, 1);
    int idle = lua_toboolean(L, 2);
    lua_settop(L, 0);
    lua_State *outer = running_L;
    running_L = L;
    unsigned long before = calls;
    if (ev_pending_count(loop))
        ev_invoke_pending(loop);
    if (calls == before && timeout != 0 && !idle && spin_pays()) {
        double until = loop_clock() + (timeout > 0 && timeout < SPIN_SECONDS ? timeout : SPIN_SECONDS);
        unsigned tries = 0;
        do {
            if (spin_read && tries++ % SPIN_TURN_EVERY != 0)
                spin_read();
            else
                ev_run(loop, EVRUN_NOWAIT);
        } while (calls == before && pending_error == LUA_NOREF && loop_clock() < until);
    }
    /* Frames put on a lane (lane.c) make no fd ready: a poll looks there
     * first, and a step about to block has its writers use the fds from
     * then on, and reads what they put there meanwhile. */
    if (calls == before && pending_error == LUA_NOREF) {
        if (timeout == 0 && spin_read)
            spin_read();
        else if (timeout != 0 && sleep_read)
            sleep_read();
    }
    if (calls != before || pending_error != LUA_NOREF) {
        /* something was pending, or came while polling: that was the turn */
    } else if (timeout == 0) {
        ev_run(loop, EVRUN_NOWAIT);
    } else if (timeout > 0) {
        ev_timer limit;
        ev_timer_init(&limit, step_limit_cb, timeout, 0.);
        loop_timer_start(&limit);
        ev_run(loop, EVRUN_ONCE);
        ev_timer_stop(loop, &limit);
    } else {
        ev_run(loop, EVRUN_ONCE);
    }
    running_L = outer;
    if (pending_error != LUA_NOREF) {
        lua_rawgeti(L, LUA_REGISTRYINDEX, pending_error);
        luaL_unref(L, LUA_REGISTRYINDEX, pending_error);
        pending_error = LUA_NOREF;
        return lua_error(L);
    }
    return 0;
}

double loop_clock(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + (double)t.tv_nsec * 1e-9;
}

void loop_timer_start(ev_timer *w)
{
    ev_now_update(loop);
    ev_timer_start(loop, w);
}

/* now() -> seconds on the monotonic clock (loop_clock). */
static int l_now(lua_State *L)
{
    lua_pushnumber(L, loop_clock());
    return 1;
}

/* ---- timers ---------------------------------------------------------------
 * A timer userdata embeds its ev_timer; while it is armed the registry holds
 * it (self) so it cannot be collected, and its uservalue holds the callback. */
typedef struct ltimer {
    ev_timer w;
    int self;  /* registry ref while armed */
    struct ltimer *next_armed, *prev_armed;
} ltimer;

static ltimer *armed; /* the armed timers: a fresh child disarms them */

static void timer_disarm(lua_State *L, ltimer *t)
{
    ev_timer_stop(loop, &t->w);
    if (t->self != LUA_NOREF) {
        luaL_unref(L, LUA_REGISTRYINDEX, t->self);
        t->self = LUA_NOREF;
        if (t->prev_armed)
            t->prev_armed->next_armed = t->next_armed;
        else
            armed = t->next_armed;
        if (t->next_armed)
            t->next_armed->prev_armed = t->prev_armed;
        t->next_armed = t->prev_armed = NULL;
    }
}

static void timer_cb(struct ev_loop *l, ev_timer *w, int revents)
{
    (void)l; (void)revents;
    ltimer *t = (ltimer *)w;
    lua_State *L = running_L;
    lua_rawgeti(L, LUA_REGISTRYINDEX, t->self);  /* keeps t alive below */
    timer_disarm(L, t);
    lua_getiuservalue(L, -1, 1);
    lua_insert(L, -2);
    loop_call(L, 1);  /* fn(timer) */
}

/* timer(after, fn) -> timer: calls fn(timer) once, after seconds. */
static int l_timer(lua_State *L)
{
    lua_Number after = loop_check_seconds(L, 1);
    luaL_checktype(L, 2, LUA_TFUNCTION);
    ltimer *t = lua_newuserdatauv(L, sizeof *t, 1);
    t->self = LUA_NOREF;
    t->next_armed = t->prev_armed = NULL;
    ev_timer_init(&t->w, timer_cb, after, 0.);
    luaL_setmetatable(L, TIMER_MT);
    lua_pushvalue(L, 2);
    lua_setiuservalue(L, -2, 1);
    lua_pushvalue(L, -1);
    t->self = luaL_ref(L, LUA_REGISTRYINDEX);
    t->prev_armed = NULL;
    t->next_armed = armed;
    if (armed)
        armed->prev_armed = t;
    armed = t;
    loop_timer_start(&t->w);
    return 1;
}

static int timer_stop(lua_State *L)
{
    ltimer *t = luaL_checkudata(L, 1, TIMER_MT);
    timer_disarm(L, t);
    return 0;
}

static int timer_active(lua_State *L)
{
    ltimer *t = luaL_checkudata(L, 1, TIMER_MT);
    lua_pushboolean(L, ev_is_active(&t->w));
    return 1;
}

/* A new loop with the before-block hooks' watcher (not holding it
 * alive). */
static struct ev_loop *loop_create(void)
{
    struct ev_loop *l = ev_loop_new(EVFLAG_AUTO);
    if (l == NULL)
        return NULL;
    ev_prepare_init(&before_block, before_block_cb);
    ev_prepare_start(l, &before_block);
    ev_timer_init(&kept_timer, kept_timer_cb, 0., 0.);
    ev_unref(l);  /* the hooks alone keep no loop alive */
    return l;
}

/* In a fresh child: the parent's timers never fire here, a callback
 * error the parent had kept is not the child's, and the child gets a
 * loop of its own. The parent's loop is left behind, not renewed
 * (ev_loop_fork): the child was forked from inside one of its callbacks,
 * with the parent's events pending, and a watcher of the parent's that
 * nobody stopped (the control socket's) would wake in the child. Its
 * conns and signal watchers were stopped by their files before this, so
 * no signal stays attached to it. */
void loop_forget_state(lua_State *L)
{
    while (armed)
        timer_disarm(L, armed);
    if (pending_error != LUA_NOREF) {
        luaL_unref(L, LUA_REGISTRYINDEX, pending_error);
        pending_error = LUA_NOREF;
    }
    running_L = NULL;
}

void loop_child_reset(lua_State *L)
{
    loop_forget_state(L);
    struct ev_loop *fresh = loop_create();
    if (fresh == NULL) {
        ev_loop_fork(loop); /* no memory: the parent's loop, renewed */
        return;
    }
    ev_loop_destroy(loop); /* closes its fds: epoll's is the parent's */
    loop = fresh;
}

void loop_open(lua_State *L)
{
    if (loop == NULL) {
        /* Not the default loop: that one reaps every child with
         * waitpid(-1), which would steal the exit statuses of io.popen and
         * os.execute in the parent. proc.c reaps its own children. */
        loop = loop_create();
        if (loop == NULL)
            luaL_error(L, "orch.core: cannot initialise a libev loop");
    }
    static const luaL_Reg timer_methods[] = {
        {"stop", timer_stop}, {"active", timer_active}, {"__close", timer_stop}, {NULL, NULL}};
    if (luaL_newmetatable(L, TIMER_MT)) {
        luaL_setfuncs(L, timer_methods, 0);
        lua_pushvalue(L, -1);
        lua_setfield(L, -2, "__index");
    }
    lua_pop(L, 1);
    static const luaL_Reg fns[] = {
        {"step", l_step}, {"now", l_now}, {"timer", l_timer}, {NULL, NULL}};
    luaL_setfuncs(L, fns, 0);
}
