/*
 * proc.c - child processes and the parent's end of their channels.
 *
 * core.spawn(fn) forks a child that runs fn (a pool worker loop or a
 * service) with a channel of two byte streams: a socketpair carries the
 * parent's frames to the child, a pipe the child's frames to the parent.
 * A pipe packs small writes into pages the reader takes in one copy, where
 * a socket makes a buffer of each write, and a worker writes one result at
 * a time (before its next task, so that a crash never takes a finished
 * result with it): reading them through the pipe costs the parent a small
 * part of what the socket did. The parent's ends are non-blocking; the
 * pipe's is watched by an ev_io, and its end of file is the child's. Frames
 * that arrive are decoded and handed to the proc's on_message; functions
 * are refused in them, so the parent never loads code a child sent.
 *
 * Invariants:
 * - A proc is created closed (pid 0, fd -1) before it takes a pid or an fd,
 *   so a memory error leaves nothing behind.
 * - While its child may still run, the registry holds the proc (self), so
 *   it cannot be collected with a live child.
 * - Only our own children are reaped: SIGCHLD leads to waitpid(pid) for each
 *   live proc, never waitpid(-1), so io.popen and os.execute in the parent
 *   keep their exit statuses (libev's ev_child would reap them all).
 * - on_exit(proc, how, code) is called once, after the child is reaped AND
 *   every byte it wrote has been read and dispatched: a child's messages
 *   always come before its exit.
 * - A failed encode leaves no partial frame: the channel drops its open
 *   frame the next time it is touched (chan.c).
 * - In a forked child every inherited proc is inert: its fds are closed, the
 *   live list is emptied, and close/gc do nothing to the parent's children.
 */
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <ev.h>

#include "orch.h"

#define PROC_MT "orch.proc"
#define READ_BUDGET (8u << 20) /* bytes read per readiness, for fairness */
#define SPAWN_MAX 64           /* children forked by one spawn */

typedef struct proc {
    pid_t pid;    /* 0 before fork and after reaping */
    pid_t owner;  /* the process that forked it */
    chan ch;      /* wfd: the parent's end of the socket, rfd: of the pipe */
    int peer, peer_w; /* the child's ends of both, until the fork */
    int self;     /* registry ref while the child may run */
    int status;   /* wait status once reaped */
    unsigned reaped : 1, eof : 1, dirty : 1, live : 1;
    lua_Integer fn_last; /* the last function id sent (its code is there) */
    ev_io rio, wio;
    struct proc *next_live, *prev_live;
    struct proc *next_dirty;
} proc;

/* uservalue slots */
enum { UV_ON_MESSAGE = 1, UV_ON_EXIT = 2, UV_FNS_SENT = 3, UV_COUNT = 3 };

static proc *live_head;
static proc *dirty_head;
static int live_count;
static ev_signal chld_watcher;

static void proc_dispatch(lua_State *L, proc *p, int pidx);

/* ---- the live list -------------------------------------------------------- */

static void live_link(proc *p)
{
    p->live = 1;
    p->prev_live = NULL;
    p->next_live = live_head;
    if (live_head)
        live_head->prev_live = p;
    live_head = p;
    if (live_count++ == 0)
        ev_signal_start(loop_get(), &chld_watcher);
}

static void live_unlink(proc *p)
{
    if (!p->live)
        return;
    p->live = 0;
    if (p->prev_live)
        p->prev_live->next_live = p->next_live;
    else
        live_head = p->next_live;
    if (p->next_live)
        p->next_live->prev_live = p->prev_live;
    p->next_live = p->prev_live = NULL;
    if (--live_count == 0)
        ev_signal_stop(loop_get(), &chld_watcher);
}

static void dirty_unlink(proc *p)
{
    if (!p->dirty)
        return;
    for (proc **pp = &dirty_head; *pp; pp = &(*pp)->next_dirty) {
        if (*pp == p) {
            *pp = p->next_dirty;
            break;
        }
    }
    p->dirty = 0;
    p->next_dirty = NULL;
}

/* ---- closing ---------------------------------------------------------------- */

static void close_fd(proc *p)
{
    if (p->ch.wfd < 0)
        return;
    struct ev_loop *loop = loop_get();
    ev_io_stop(loop, &p->rio);
    ev_io_stop(loop, &p->wio);
    chan_close(&p->ch);
    dirty_unlink(p);
}

static void release(lua_State *L, proc *p)
{
    live_unlink(p);
    if (p->self != LUA_NOREF) {
        luaL_unref(L, LUA_REGISTRYINDEX, p->self);
        p->self = LUA_NOREF;
    }
}

static void kill_group(pid_t pid, int sig)
{
    if (pid > 0) {
        kill(-pid, sig); /* the child leads its own process group */
        kill(pid, sig);  /* in case it has not set it up yet */
    }
}

static void close_peers(proc *p)
{
    if (p->peer >= 0)
        close(p->peer);
    if (p->peer_w >= 0)
        close(p->peer_w);
    p->peer = p->peer_w = -1;
}

/* Kills the child (and its process group) and reaps it at once. Never
 * raises; does nothing in a process that did not fork it. */
static void proc_close(lua_State *L, proc *p)
{
    if (p->owner != getpid())
        return;
    if (p->pid > 0 && !p->reaped) {
        kill_group(p->pid, SIGKILL);
        while (waitpid(p->pid, &p->status, 0) < 0 && errno == EINTR)
            ;
        p->reaped = 1;
    }
    close_fd(p);
    close_peers(p);
    chan_free(&p->ch);
    release(L, p);
}

/* ---- reading -------------------------------------------------------------- */

/* Reads what is there and dispatches whole frames. Returns 0, or -1 once
 * the channel is at its end (EOF or error). */
static int read_some(lua_State *L, proc *p, int pidx, int drain)
{
    size_t budget = drain ? (size_t)-1 : READ_BUDGET;
    int rc = 0;
    while (p->ch.rfd >= 0 && budget > 0) {
        ssize_t n = chan_fill(&p->ch, budget);
        if (n > 0) {
            budget -= (size_t)n;
            proc_dispatch(L, p, pidx);
            continue;
        }
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
            break;
        p->eof = 1; /* EOF, ECONNRESET...: the child is gone or going */
        close_fd(p);
        rc = -1;
    }
    return rc;
}

static void deliver_exit(lua_State *L, proc *p, int pidx)
{
    lua_getiuservalue(L, pidx, UV_ON_EXIT);
    if (lua_isfunction(L, -1)) {
        lua_pushvalue(L, pidx);
        if (WIFSIGNALED(p->status)) {
            lua_pushliteral(L, "signal");
            lua_pushinteger(L, WTERMSIG(p->status));
        } else {
            lua_pushliteral(L, "exit");
            lua_pushinteger(L, WEXITSTATUS(p->status));
        }
        loop_call(L, 3);
    } else {
        lua_pop(L, 1);
    }
}

static void rio_cb(struct ev_loop *loop, ev_io *w, int revents)
{
    (void)loop; (void)revents;
    proc *p = (proc *)((char *)w - offsetof(proc, rio));
    lua_State *L = loop_state();
    lua_rawgeti(L, LUA_REGISTRYINDEX, p->self); /* keeps p alive */
    read_some(L, p, lua_gettop(L), 0);
    lua_pop(L, 1);
}

static void wio_cb(struct ev_loop *loop, ev_io *w, int revents)
{
    (void)revents;
    proc *p = (proc *)((char *)w - offsetof(proc, wio));
    int rc = chan_flush(&p->ch);
    if (rc <= 0) {
        ev_io_stop(loop, w);
        if (rc < 0)
            wbuf_reset(&p->ch.out); /* the child is gone: its exit will tell */
    }
}

/* SIGCHLD: reap each of our children that has exited. */
void proc_reap(lua_State *L)
{
    proc *p = live_head;
    while (p) {
        proc *next = p->next_live;
        int st;
        pid_t r = p->reaped || p->pid <= 0 ? 0 : waitpid(p->pid, &st, WNOHANG);
        if (r == p->pid) {
            p->reaped = 1;
            p->status = st;
            lua_rawgeti(L, LUA_REGISTRYINDEX, p->self);
            int pidx = lua_gettop(L);
            read_some(L, p, pidx, 1); /* all it wrote comes before its exit */
            close_fd(p);
            chan_free(&p->ch);
            live_unlink(p);
            deliver_exit(L, p, pidx);
            release(L, p);
            lua_pop(L, 1);
            p = live_head; /* callbacks may have changed the list: rescan */
            continue;
        }
        p = next;
    }
}

static void chld_cb(struct ev_loop *loop, ev_signal *w, int revents)
{
    (void)loop; (void)w; (void)revents;
    proc_reap(loop_state());
}

/* Calls on_message(proc, RESULT, batch, n) for the RESULT frames gathered
 * in the table at bidx, if any, and leaves a fresh slot for the next run. */
static void flush_results(lua_State *L, int pidx, int bidx, int *nb)
{
    if (*nb == 0)
        return;
    lua_getiuservalue(L, pidx, UV_ON_MESSAGE);
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
static void report_bad(lua_State *L, int pidx, const char *why)
{
    lua_getiuservalue(L, pidx, UV_ON_MESSAGE);
    lua_pushvalue(L, pidx);
    lua_pushinteger(L, 0);
    lua_pushfstring(L, "bad frame: %s", why);
    loop_call(L, 3);
}

/* Decodes every whole frame in p->ch.in for on_message. A run of RESULT frames
 * comes in one call, on_message(proc, RESULT, batch, n), batch holding id,
 * values (a table with its count n) for each; any other frame is
 * on_message(proc, type, values...). A frame that does not decode is
 * reported as type 0 with the reason. Order is kept. */
static void proc_dispatch(lua_State *L, proc *p, int pidx)
{
    const char *payload;
    size_t plen;
    int type, r, nb = 0;
    lua_pushnil(L); /* the batch of results */
    int bidx = lua_gettop(L);
    while (p->ch.in.data && (r = chan_peek(&p->ch.in, &type, &payload, &plen)) != 0) {
        if (r < 0) {
            p->ch.in.off = p->ch.in.len;
            flush_results(L, pidx, bidx, &nb);
            report_bad(L, pidx, "length over the limit");
            break;
        }
        if (type != MSG_RESULT && nb > 0) {
            flush_results(L, pidx, bidx, &nb); /* then this frame, peeked again */
            continue;
        }
        wire_dec d;
        int bad = 0;
        if (type == MSG_RESULT) {
            wire_dec_begin(&d, L, payload, plen, 0);
            bad = gather_result(L, &d, bidx, &nb) < 0;
            wire_dec_end(&d);
            chan_consume(&p->ch.in, plen);
            if (bad) {
                flush_results(L, pidx, bidx, &nb);
                report_bad(L, pidx, d.err);
            }
            continue;
        }
        lua_getiuservalue(L, pidx, UV_ON_MESSAGE);
        lua_pushvalue(L, pidx);
        int base = lua_gettop(L);
        lua_pushinteger(L, type);
        wire_dec_begin(&d, L, payload, plen, 0);
        while (d.pos < d.len && !bad)
            bad = wire_dec_value(&d) < 0;
        wire_dec_end(&d);
        chan_consume(&p->ch.in, plen);
        if (bad) {
            lua_settop(L, base - 2);
            report_bad(L, pidx, d.err);
        } else {
            loop_call(L, lua_gettop(L) - base + 1);
        }
    }
    flush_results(L, pidx, bidx, &nb);
    lua_settop(L, bidx - 1);
}

/* ---- writing ---------------------------------------------------------------- */

static void mark_dirty(proc *p)
{
    if (!p->dirty) {
        p->dirty = 1;
        p->next_dirty = dirty_head;
        dirty_head = p;
    }
}

/* The loop is about to block: write every frame queued this turn. */
static void flush_all(void)
{
    while (dirty_head) {
        proc *p = dirty_head;
        dirty_head = p->next_dirty;
        p->dirty = 0;
        p->next_dirty = NULL;
        if (p->ch.wfd < 0 || ev_is_active(&p->wio))
            continue;
        int rc = chan_flush(&p->ch);
        if (rc > 0)
            ev_io_start(loop_get(), &p->wio);
        else if (rc < 0)
            wbuf_reset(&p->ch.out);
    }
}

static proc *check_proc(lua_State *L, int i)
{
    return luaL_checkudata(L, i, PROC_MT);
}


/* proc:send(type, ...) -> true: one frame holding the message type and
 * values; false when the channel is closed (the child is exiting). */
static int proc_send(lua_State *L)
{
    proc *p = check_proc(L, 1);
    if (p->ch.wfd < 0) {
        lua_pushboolean(L, 0);
        return 1;
    }
    lua_Integer type = luaL_checkinteger(L, 2);
    luaL_argcheck(L, type > 0 && type < 256, 2, "message type out of range");
    chan_enc_values(L, &p->ch, (int)type, 3, WIRE_FUNCTIONS);
    mark_dirty(p);
    lua_pushboolean(L, 1);
    return 1;
}

/* proc:send_task(id, task) -> true | false: a TASK frame for this worker;
 * the function's code goes with the first task that uses it. false when
 * the channel is closed (the child is exiting). */
static int proc_send_task(lua_State *L)
{
    proc *p = check_proc(L, 1);
    lua_Integer id = luaL_checkinteger(L, 2);
    size_t tlen;
    const char *task;
    lua_Integer fnid = task_fnid(L, 3, &task, &tlen);
    if (p->ch.wfd < 0) {
        lua_pushboolean(L, 0);
        return 1;
    }
    int first = 0;
    if (fnid && fnid != p->fn_last) {
        lua_getiuservalue(L, 1, UV_FNS_SENT);
        first = lua_rawgeti(L, -1, fnid) == LUA_TNIL;
        lua_pop(L, 2);
    }
    wire_enc e;
    chan_enc_begin(L, &p->ch, MSG_TASK, &e, WIRE_FUNCTIONS);
    task_put(L, &e, id, task, tlen, first);
    chan_enc_end(L, &p->ch, &e);
    mark_dirty(p);
    if (first) {
        lua_getiuservalue(L, 1, UV_FNS_SENT);
        lua_pushboolean(L, 1);
        lua_rawseti(L, -2, fnid);
        lua_pop(L, 1);
    }
    p->fn_last = fnid;
    lua_pushboolean(L, 1);
    return 1;
}

/* proc:stop(id, level): the stop signal, carrying the task id (0 for a
 * service) and the level (1 ask, 2 cancel, 3 timeout). */
static int proc_stop(lua_State *L)
{
    proc *p = check_proc(L, 1);
    lua_Integer id = luaL_checkinteger(L, 2);
    lua_Integer level = luaL_checkinteger(L, 3);
    luaL_argcheck(L, level >= STOP_ASK && level <= STOP_TIMEOUT, 3, "level must be 1, 2 or 3");
    if (p->pid <= 0 || p->reaped) {
        lua_pushnil(L);
        lua_pushliteral(L, "exited");
        return 2;
    }
    union sigval v;
    v.sival_int = stop_pack(id, (int)level);
    if (sigqueue(p->pid, sig_stop_signal(), v) < 0) {
        lua_pushnil(L);
        lua_pushfstring(L, "sigqueue %d: %s", (int)p->pid, strerror(errno));
        return 2;
    }
    lua_pushboolean(L, 1);
    return 1;
}

/* proc:kill([signal]): signal the child's whole process group (SIGKILL by
 * default), so whatever the child started goes too. */
static int proc_kill(lua_State *L)
{
    proc *p = check_proc(L, 1);
    int sig = (int)luaL_optinteger(L, 2, SIGKILL);
    if (p->pid > 0 && !p->reaped && p->owner == getpid())
        kill_group(p->pid, sig);
    return 0;
}

static int proc_pid(lua_State *L)
{
    proc *p = check_proc(L, 1);
    lua_pushinteger(L, p->pid);
    return 1;
}

static int proc_alive(lua_State *L)
{
    proc *p = check_proc(L, 1);
    lua_pushboolean(L, p->pid > 0 && !p->reaped);
    return 1;
}

/* Bytes queued for the child and not yet written. */
static int proc_pending(lua_State *L)
{
    proc *p = check_proc(L, 1);
    lua_pushinteger(L, (lua_Integer)chan_pending(&p->ch));
    return 1;
}

static int proc_gc(lua_State *L)
{
    proc_close(L, check_proc(L, 1));
    return 0;
}

static int proc_tostring(lua_State *L)
{
    proc *p = check_proc(L, 1);
    lua_pushfstring(L, "orch.proc (pid %d%s)", (int)p->pid, p->reaped ? ", exited" : "");
    return 1;
}

/* In a fresh child: closes every fd the parent holds for its children,
 * and the ends meant for the child's siblings (all but keep's). */
static void proc_close_inherited(const proc *keep)
{
    for (proc *p = live_head; p; p = p->next_live) {
        chan_close_fds(&p->ch);
        if (p != keep)
            close_peers(p);
        p->peer = p->peer_w = -1;
        p->pid = 0;
        p->live = 0;
    }
    live_head = NULL;
    live_count = 0;
    dirty_head = NULL;
}

/* A closed proc (pid 0, fd -1) with its callbacks, pushed on the stack. */
static proc *new_proc(lua_State *L, int on_message, int on_exit)
{
    proc *p = lua_newuserdatauv(L, sizeof *p, UV_COUNT);
    memset(p, 0, sizeof *p);
    chan_init(&p->ch, -1, -1);
    p->peer = p->peer_w = -1;
    p->self = LUA_NOREF;
    p->owner = getpid();
    luaL_setmetatable(L, PROC_MT);
    lua_pushvalue(L, on_message);
    lua_setiuservalue(L, -2, UV_ON_MESSAGE);
    lua_pushvalue(L, on_exit);
    lua_setiuservalue(L, -2, UV_ON_EXIT);
    lua_newtable(L);
    lua_setiuservalue(L, -2, UV_FNS_SENT);
    return p;
}

/* spawn(fn, on_message, on_exit [, fn2, on_message2, on_exit2, ...])
 * -> proc... One child per triple; each runs its fn as a worker or service
 * (worker_child_main) and never returns here.
 *
 * The children are forked back to back: everything the parent needs is
 * allocated before the first fork and filled in after the last one. A
 * page the parent writes after a fork stops being shared with that child
 * (copy on write), and between two forks the parent would write for each
 * child its userdata, tables, ev_io and registry entries, which would stay
 * private in every child forked before. */
static int l_spawn(lua_State *L)
{
    int nargs = lua_gettop(L);
    luaL_argcheck(L, nargs >= 3 && nargs % 3 == 0, nargs < 3 ? nargs + 1 : nargs,
                  "fn, on_message, on_exit for each child");
    for (int i = 1; i <= nargs; i++)
        luaL_checktype(L, i, LUA_TFUNCTION);
    int n = nargs / 3;
    luaL_argcheck(L, n <= SPAWN_MAX, SPAWN_MAX * 3 + 1, "too many children at once");
    luaL_checkstack(L, n + LUA_MINSTACK, "too many children");
    int first = nargs + 1; /* the procs, first .. first + n - 1 */
    for (int k = 0; k < n; k++)
        new_proc(L, 3 * k + 2, 3 * k + 3);
    for (int k = 0; k < n; k++) {
        proc *p = lua_touserdata(L, first + k);
        int sv[2], pv[2];
        if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) < 0)
            return luaL_error(L, "orch: socketpair: %s", strerror(errno)); /* __gc closes */
        if (pipe2(pv, O_CLOEXEC) < 0) {
            int e = errno;
            close(sv[0]);
            close(sv[1]);
            return luaL_error(L, "orch: pipe: %s", strerror(e));
        }
        chan_init(&p->ch, pv[0], sv[0]);
        p->peer = sv[1];
        p->peer_w = pv[1];
    }
    /* In the live list before the first fork: SIGCHLD is watched from
     * then on, and a child forked below never sees its siblings' ends. */
    for (int k = 0; k < n; k++)
        live_link(lua_touserdata(L, first + k));

    fflush(NULL); /* or the children would write the parent's buffered output again */
    pid_t parent = getpid();
    pid_t pids[SPAWN_MAX];
    int forked, err = 0;
    sigset_t mask;
    sig_block_stop(&mask); /* until the child handles it (sig.c) */
    for (forked = 0; forked < n; forked++) {
        pid_t pid = fork();
        if (pid < 0) {
            err = errno;
            break;
        }
        if (pid == 0) {
            proc *own = lua_touserdata(L, first + forked);
            int in = own->peer, out = own->peer_w;
            proc_close_inherited(own);
            sig_child_setup(parent);
            worker_child_main(L, in, out, 3 * forked + 1); /* never returns */
        }
        pids[forked] = pid;
    }
    sig_restore_mask(&mask);

    for (int k = 0; k < n; k++) {
        proc *p = lua_touserdata(L, first + k);
        close_peers(p);
        if (k >= forked)
            continue;
        setpgid(pids[k], pids[k]); /* the child does it too; whichever runs first wins */
        fcntl(p->ch.wfd, F_SETFL, fcntl(p->ch.wfd, F_GETFL) | O_NONBLOCK);
        fcntl(p->ch.rfd, F_SETFL, fcntl(p->ch.rfd, F_GETFL) | O_NONBLOCK);
        p->pid = pids[k];
        lua_pushvalue(L, first + k);
        p->self = luaL_ref(L, LUA_REGISTRYINDEX);
        ev_io_init(&p->rio, rio_cb, p->ch.rfd, EV_READ);
        ev_io_init(&p->wio, wio_cb, p->ch.wfd, EV_WRITE);
        ev_io_start(loop_get(), &p->rio);
    }
    if (forked < n) {
        for (int k = 0; k < n; k++)
            proc_close(L, lua_touserdata(L, first + k)); /* kills those forked */
        return luaL_error(L, "orch: fork: %s", strerror(err));
    }
    return n;
}

void proc_open(lua_State *L)
{
    static const luaL_Reg methods[] = {
        {"send", proc_send}, {"send_task", proc_send_task}, {"stop", proc_stop},
        {"kill", proc_kill}, {"pid", proc_pid}, {"alive", proc_alive},
        {"pending", proc_pending}, {"close", proc_gc},
        {"__gc", proc_gc}, {"__close", proc_gc}, {"__tostring", proc_tostring},
        {NULL, NULL}};
    if (luaL_newmetatable(L, PROC_MT)) {
        luaL_setfuncs(L, methods, 0);
        lua_pushvalue(L, -1);
        lua_setfield(L, -2, "__index");
    }
    lua_pop(L, 1);
    static int ready;
    if (!ready) { /* once per process, however often orch.core is opened */
        ev_signal_init(&chld_watcher, chld_cb, SIGCHLD);
        loop_on_before_block(flush_all);
        ready = 1;
    }
    lua_pushcfunction(L, l_spawn);
    lua_setfield(L, -2, "spawn");
}
