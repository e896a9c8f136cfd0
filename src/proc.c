/*
 * proc.c - child processes: one child's life, from spawn to reaping.
 *
 * core.spawn(fn) forks a child that runs fn (a pool worker loop or a
 * service, worker.c) with a channel of two byte streams: a socketpair
 * carries the parent's frames to the child, a pipe the child's frames to
 * the parent. A pipe packs small writes into pages the reader takes in one
 * copy, where a socket makes a buffer of each write, and a worker writes
 * one result at a time (before its next task, so that a crash never takes
 * a finished result with it): reading them through the pipe costs the
 * parent a small part of what the socket did. The parent's end of the
 * channel is a conn (conn.c): the loop reads it and hands the frames to
 * the proc's on_message (dispatch.c), and writes what proc:send and
 * proc:send_task queue. A proc also kills its child, reaps it and sends it
 * stop requests (the stop signal, whose value stop_pack makes).
 *
 * Invariants:
 * - A proc is created closed (pid 0, fds -1) before it takes a pid or an
 *   fd, so a memory error leaves nothing behind.
 * - While its child may still run, the registry holds the proc (self), so
 *   it cannot be collected with a live child.
 * - Only our own children are reaped: SIGCHLD leads to waitpid(pid) for each
 *   live proc, never waitpid(-1), so io.popen and os.execute in the parent
 *   keep their exit statuses (libev's ev_child would reap them all).
 * - on_exit(proc, how, code) is called once, after the child is reaped AND
 *   every byte it wrote has been read and dispatched: a child's messages
 *   always come before its exit. Never after proc:close(), even one made
 *   by on_message while the exited child's last frames are dispatched.
 * - A failed spawn leaves nothing open: the channels made for it are
 *   closed before the error is raised.
 * - A failed encode leaves no partial frame: the channel drops its open
 *   frame the next time it is touched (chan.c).
 * - In a forked child every inherited proc is inert: its fds are closed, the
 *   live list is emptied, and close/gc do nothing to the parent's children.
 *   The child closes them without writing to them: the procs are the
 *   parent's memory, shared copy on write, and a write would copy a page
 *   per sibling (a page fault each, the most of a worker's start among
 *   hundreds). A method called on one in the child first makes it closed
 *   (inert); ownership is by pid (self_pid, kept by an atfork handler).
 */
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <ev.h>

#include "orch.h"

#define PROC_MT "orch.proc"
#define SPAWN_MAX 64           /* children forked by one spawn */

typedef struct proc {
    pid_t pid;    /* 0 before fork and after reaping */
    pid_t owner;  /* the process that forked it */
    conn conn;    /* the parent's end of the channel (conn.c) */
    int peer, peer_w; /* the child's ends of it, until the fork */
    int self;     /* registry ref while the child may run */
    int status;   /* wait status once reaped */
    unsigned reaped : 1, live : 1, closed : 1, inert : 1;
    lua_Integer fn_last; /* the last function id sent (its code is there) */
    struct proc *next_live, *prev_live;
} proc;

/* uservalue slots */
enum { UV_ON_MESSAGE = 1, UV_ON_EXIT = 2, UV_FNS_SENT = 3, UV_COUNT = 3 };

static proc *live_head;
static int live_count;
static ev_signal chld_watcher;
static pid_t self_pid; /* getpid(), renewed in every forked child */

static void renew_self_pid(void)
{
    self_pid = getpid();
}

/* Whether p's child is this process's own (not one inherited by a fork). */
static int ours(const proc *p)
{
    return p->owner == self_pid;
}

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

/* ---- closing ---------------------------------------------------------------- */

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

/* Closes the child's ends of p's channel; writes nothing to p. */
static void close_peer_fds(const proc *p)
{
    if (p->peer >= 0)
        close(p->peer);
    if (p->peer_w >= 0)
        close(p->peer_w);
}

static void close_peers(proc *p)
{
    close_peer_fds(p);
    p->peer = p->peer_w = -1;
}

/* Kills the child (and its process group) and reaps it at once. Never
 * raises; does nothing in a process that did not fork it. */
static void proc_close(lua_State *L, proc *p)
{
    if (!ours(p))
        return;
    if (p->pid > 0 && !p->reaped) {
        kill_group(p->pid, SIGKILL);
        while (waitpid(p->pid, &p->status, 0) < 0 && errno == EINTR)
            ;
        p->reaped = 1;
    }
    p->closed = 1;
    conn_free(&p->conn);
    close_peers(p);
    release(L, p);
}

/* ---- reaping ----------------------------------------------------------- */

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

/* SIGCHLD: reap each of our children that has exited. */
static void reap(lua_State *L)
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
            conn_read(L, &p->conn, pidx, 1); /* all it wrote comes before its exit */
            if (!p->closed) { /* on_message may have closed it */
                conn_free(&p->conn);
                live_unlink(p);
                deliver_exit(L, p, pidx);
                release(L, p);
            }
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
    reap(loop_state());
}

/* ---- the Lua face ------------------------------------------------------- */

/* A proc inherited by a fork, as its first method call in the child sees
 * it: closed, its fds (closed at the fork) and lanes forgotten. */
static void make_inert(proc *p)
{
    p->inert = 1;
    p->pid = 0;
    p->live = 0;
    p->peer = p->peer_w = -1;
    chan_forget(&p->conn.ch);
}

static proc *check_proc(lua_State *L, int i)
{
    proc *p = luaL_checkudata(L, i, PROC_MT);
    if (!ours(p) && !p->inert)
        make_inert(p);
    return p;
}


/* proc:send(type, ...) -> true: one frame holding the message type and
 * values; false when the channel is closed (the child is exiting). */
static int proc_send(lua_State *L)
{
    proc *p = check_proc(L, 1);
    if (p->conn.ch.wfd < 0) {
        lua_pushboolean(L, 0);
        return 1;
    }
    lua_Integer type = luaL_checkinteger(L, 2);
    luaL_argcheck(L, type > 0 && type < 256, 2, "message type out of range");
    chan_enc_values(L, &p->conn.ch, (int)type, 3, WIRE_FUNCTIONS);
    conn_queued(&p->conn);
    lua_pushboolean(L, 1);
    return 1;
}

/* proc:send_task(id, task [, now]) -> end | false: a TASK frame for this
 * worker; the function's code goes with the first task that uses it.
 * now: the worker is idle for it, so the frame is written at once when it
 * is the first of the turn (conn_queued_now). end: where
 * the frame ends in what the parent writes to the child, as
 * proc:bytes_sent() counts (0 when not known: see chan.c's out_end); once
 * the child is gone, a frame whose end was never sent never reached it.
 * false when the channel is closed (the child is exiting). */
static int proc_send_task(lua_State *L)
{
    proc *p = check_proc(L, 1);
    lua_Integer id = luaL_checkinteger(L, 2);
    lua_Integer fnid = task_fnid(L, 3);
    if (p->conn.ch.wfd < 0) {
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
    chan_enc_begin(L, &p->conn.ch, MSG_TASK, &e, WIRE_FUNCTIONS);
    task_put(L, &e, id, 3, first);
    chan_enc_end(L, &p->conn.ch, &e);
    if (lua_toboolean(L, 4))
        conn_queued_now(&p->conn);
    else
        conn_queued(&p->conn);
    if (first) {
        lua_getiuservalue(L, 1, UV_FNS_SENT);
        lua_pushboolean(L, 1);
        lua_rawseti(L, -2, fnid);
        lua_pop(L, 1);
    }
    p->fn_last = fnid;
    lua_pushinteger(L, (lua_Integer)p->conn.ch.out_end);
    return 1;
}

/* proc:bytes_sent() -> n: the bytes written to the child so far. */
static int proc_bytes_sent(lua_State *L)
{
    lua_pushinteger(L, (lua_Integer)check_proc(L, 1)->conn.ch.out_sent);
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
    if (p->pid > 0 && !p->reaped && ours(p))
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
    lua_pushinteger(L, (lua_Integer)chan_pending(&p->conn.ch));
    return 1;
}

/* proc:close(), __close: the child killed and reaped now, no on_exit. */
static int proc_close_m(lua_State *L)
{
    proc_close(L, check_proc(L, 1));
    return 0;
}

/* __gc: as close, and every buffer freed (no encode can be under way on a
 * proc that is garbage; one that close found under way kept its buffer). */
static int proc_gc(lua_State *L)
{
    proc *p = check_proc(L, 1);
    proc_close(L, p);
    if (ours(p))
        chan_free(&p->conn.ch);
    return 0;
}

/* proc:set_max_message(n): frames from the child with more than n bytes
 * of payload are refused (a bad frame, the channel closed), and no more
 * than n is ever reserved for one. */
static int proc_set_max_message(lua_State *L)
{
    proc *p = check_proc(L, 1);
    lua_Integer n = luaL_checkinteger(L, 2);
    luaL_argcheck(L, n > 0 && (lua_Unsigned)n <= FRAME_MAX, 2, "must be 1 .. 2^31 - 1");
    p->conn.ch.max_in = (size_t)n;
    return 0;
}

/* proc:buffer_sizes() -> in, out: the bytes the parent's buffers for this
 * child hold (capacity), for specs and diagnostics. */
static int proc_buffer_sizes(lua_State *L)
{
    proc *p = check_proc(L, 1);
    lua_pushinteger(L, (lua_Integer)p->conn.ch.in.cap);
    lua_pushinteger(L, (lua_Integer)(p->conn.ch.out.cap + p->conn.ch.later.cap));
    return 2;
}

/* proc:lane_bytes() -> taken, put: the bytes of frames that came from
 * the child on the lane, and that went to it there (lane.c), for specs
 * and diagnostics. */
static int proc_lane_bytes(lua_State *L)
{
    proc *p = check_proc(L, 1);
    lua_pushinteger(L, (lua_Integer)p->conn.ch.lane_in);
    lua_pushinteger(L, (lua_Integer)p->conn.ch.lane_out);
    return 2;
}

static int proc_tostring(lua_State *L)
{
    proc *p = check_proc(L, 1);
    lua_pushfstring(L, "orch.proc (pid %d%s)", (int)p->pid, p->reaped ? ", exited" : "");
    return 1;
}

/* In a fresh child: closes every fd the parent holds for its children,
 * and the ends meant for the child's siblings (all but keep's), writing
 * to none of the procs (see the invariants). */
static void proc_close_inherited(const proc *keep)
{
    for (const proc *p = live_head; p; p = p->next_live) {
        chan_close_inherited(&p->conn.ch);
        if (p != keep)
            close_peer_fds(p);
    }
    lane_forked(keep->conn.ch.lanes);
    conn_forget_all();
    memfd_forked();
    live_head = NULL;
    if (live_count > 0)
        ev_signal_stop(loop_get(), &chld_watcher); /* started again with a child's own */
    live_count = 0;
}

/* A closed proc (pid 0, fd -1) with its callbacks, pushed on the stack. */
static proc *new_proc(lua_State *L, int on_message, int on_exit)
{
    proc *p = lua_newuserdatauv(L, sizeof *p, UV_COUNT);
    memset(p, 0, sizeof *p);
    conn_init(&p->conn);
    p->peer = p->peer_w = -1;
    p->self = LUA_NOREF;
    p->owner = self_pid;
    luaL_setmetatable(L, PROC_MT);
    lua_pushvalue(L, on_message);
    lua_setiuservalue(L, -2, UV_ON_MESSAGE);
    lua_pushvalue(L, on_exit);
    lua_setiuservalue(L, -2, UV_ON_EXIT);
    lua_newtable(L);
    lua_setiuservalue(L, -2, UV_FNS_SENT);
    return p;
}

/* The pairs k..n-1 of a spawn that made only k channels let go (the
 * arena goes with the last pair the k channels hold). Returns k. */
static int unused_lanes(lane *pairs, int k, int n)
{
    if (pairs)
        for (int j = k; j < n; j++)
            lane_pair_free(lane_pair_nth(pairs, (size_t)j));
    return k;
}

/* Gives each of the n procs from first a channel: a socketpair for the
 * parent's frames, a pipe for the child's. Returns how many got one (< n:
 * *what failed, with errno). */
static int make_channels(lua_State *L, int first, int n, const char **what)
{
    lane *pairs = lane_pairs((size_t)n); /* without them, all goes through the fds */
    for (int k = 0; k < n; k++) {
        proc *p = lua_touserdata(L, first + k);
        int sv[2], pv[2];
        if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) < 0) {
            *what = "socketpair";
            return unused_lanes(pairs, k, n);
        }
        if (pipe2(pv, O_CLOEXEC) < 0) {
            int e = errno;
            close(sv[0]);
            close(sv[1]);
            errno = e;
            *what = "pipe";
            return unused_lanes(pairs, k, n);
        }
        chan_init(&p->conn.ch, pv[0], sv[0]);
        p->conn.ch.share_out = 1;
        if (pairs)
            chan_set_lanes(&p->conn.ch, lane_pair_nth(pairs, (size_t)k), 0, 1);
        p->peer = sv[1];
        p->peer_w = pv[1];
    }
    return n;
}

/* Forks the n children back to back; a child goes to worker_child_main
 * and never returns. Returns how many were forked (< n: *err says why). */
static int fork_children(lua_State *L, int first, int n, pid_t *pids, int *err)
{
    fflush(NULL); /* or the children would write the parent's buffered output again */
    pid_t parent = getpid();
    int forked;
    sigset_t mask;
    sig_block_stop(&mask); /* until the child handles it (sig.c) */
    for (forked = 0; forked < n; forked++) {
        pid_t pid = fork();
        if (pid < 0) {
            *err = errno;
            break;
        }
        if (pid == 0) {
            proc *own = lua_touserdata(L, first + forked);
            int in = own->peer, out = own->peer_w;
            lane *lanes = own->conn.ch.lanes;
            proc_close_inherited(own);
            sig_child_setup(parent);
            loop_child_reset(L);
            worker_child_main(L, in, out, lanes, 3 * forked + 1); /* never returns */
        }
        pids[forked] = pid;
    }
    sig_restore_mask(&mask);
    return forked;
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
    const char *what = NULL;
    int made = make_channels(L, first, n, &what);
    if (made < n) { /* out of fds, most often: leave none of them open */
        int e = errno;
        for (int k = 0; k < made; k++)
            proc_close(L, lua_touserdata(L, first + k));
        return luaL_error(L, "orch: cannot start child %d of %d: %s: %s", made + 1, n, what,
                          strerror(e));
    }
    /* In the live list before the first fork: SIGCHLD is watched from
     * then on, and a child forked below never sees its siblings' ends. */
    for (int k = 0; k < n; k++)
        live_link(lua_touserdata(L, first + k));
    pid_t pids[SPAWN_MAX];
    int err = 0;
    int forked = fork_children(L, first, n, pids, &err);
    for (int k = 0; k < n; k++) {
        proc *p = lua_touserdata(L, first + k);
        close_peers(p);
        if (k >= forked)
            continue;
        setpgid(pids[k], pids[k]); /* the child does it too; whichever runs first wins */
        p->pid = pids[k];
        lua_pushvalue(L, first + k);
        p->self = luaL_ref(L, LUA_REGISTRYINDEX);
        conn_start(&p->conn, p->self, UV_ON_MESSAGE);
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
        {"send", proc_send}, {"send_task", proc_send_task}, {"bytes_sent", proc_bytes_sent}, {"stop", proc_stop},
        {"kill", proc_kill}, {"pid", proc_pid}, {"alive", proc_alive},
        {"pending", proc_pending}, {"close", proc_close_m},
        {"set_max_message", proc_set_max_message}, {"buffer_sizes", proc_buffer_sizes},
        {"lane_bytes", proc_lane_bytes},
        {"__gc", proc_gc}, {"__close", proc_close_m}, {"__tostring", proc_tostring},
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
        renew_self_pid();
        pthread_atfork(NULL, NULL, renew_self_pid);
        ready = 1;
    }
    lua_pushcfunction(L, l_spawn);
    lua_setfield(L, -2, "spawn");
}
