/*
 * sig.c - signals: Lua handlers in the parent, the set-up of a child.
 *
 * In the parent, orch.on_signal(name, fn) is an ev_signal watcher: libev's
 * handler only records the signal, and fn(name) runs later inside the loop,
 * never in signal context. The watchers hold no loop alive by themselves.
 *
 * In a child, the signals a whole job receives (INT, TERM, HUP, QUIT: the
 * terminal's Ctrl-C, kill -TERM -PGID, a control-group kill) are caught by a
 * handler that does nothing, so they neither kill the child nor interrupt
 * its work; programs it executes get the defaults back. The parent talks to
 * its children with the stop signal, a realtime signal whose value carries
 * the task id and the stop level (stop_pack in orch.h): sig.c keeps it
 * blocked from before the fork until the child's own handler (worker.c)
 * is in place, so no request is lost or meets the default disposition. If
 * the parent dies, the kernel sends the child its parent-death signal,
 * whose handler SIGKILLs the child's process group: the child and what
 * its tasks started (pdeath_handler).
 */
#include <errno.h>
#include <signal.h>
#include <string.h>
#include <sys/prctl.h>
#include <unistd.h>

#include <ev.h>

#include "orch.h"

static const struct {
    const char *name;
    int sig;
} names[] = {
    {"INT", SIGINT}, {"TERM", SIGTERM}, {"HUP", SIGHUP}, {"QUIT", SIGQUIT},
    {"USR1", SIGUSR1}, {"USR2", SIGUSR2}, {"KILL", SIGKILL}, {"CHLD", SIGCHLD},
    {"PIPE", SIGPIPE}, {"ALRM", SIGALRM}, {"SEGV", SIGSEGV}, {"ABRT", SIGABRT},
    {"STOP", SIGSTOP}, {"CONT", SIGCONT}, {"WINCH", SIGWINCH}, {"XCPU", SIGXCPU},
    {"XFSZ", SIGXFSZ}, {NULL, 0}};

/* The signals a script may handle with on_signal. */
static const int handled[] = {SIGINT, SIGTERM, SIGHUP, SIGQUIT, SIGUSR1, SIGUSR2};
#define NHANDLED (sizeof handled / sizeof handled[0])

typedef struct lsignal {
    ev_signal w;
    int fn;   /* registry ref of the Lua handler, LUA_NOREF when none */
} lsignal;

static lsignal watchers[NHANDLED];

int sig_stop_signal(void)
{
    return SIGRTMIN + 4;
}

/* A stop request sent to a child that was forked a moment ago must not
 * meet the default disposition (which ends the process): the parent blocks
 * the stop signal across fork, the child inherits the blocked mask, and a
 * request that comes early waits, queued, until sig_child_setup has put
 * the handler in place and emptied the mask. */
void sig_block_stop(sigset_t *old)
{
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, sig_stop_signal());
    sigprocmask(SIG_BLOCK, &set, old);
}

void sig_restore_mask(const sigset_t *old)
{
    sigprocmask(SIG_SETMASK, old, NULL);
}

static int signum(lua_State *L, int i)
{
    if (lua_isinteger(L, i))
        return (int)lua_tointeger(L, i);
    const char *name = luaL_checkstring(L, i);
    if (strncmp(name, "SIG", 3) == 0)
        name += 3;
    for (int k = 0; names[k].name; k++)
        if (strcmp(names[k].name, name) == 0)
            return names[k].sig;
    return luaL_argerror(L, i, lua_pushfstring(L, "unknown signal '%s'", name));
}

static const char *signame(int sig)
{
    for (int k = 0; names[k].name; k++)
        if (names[k].sig == sig)
            return names[k].name;
    return "?";
}

/* A process may be started with signals blocked (a program that blocked
 * them before exec): orch unblocks what it relies on, SIGCHLD from the
 * start and a signal it handles once it does. */
static void unblock(int sig)
{
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, sig);
    sigprocmask(SIG_UNBLOCK, &set, NULL);
}

static void signal_cb(struct ev_loop *loop, ev_signal *w, int revents)
{
    (void)loop; (void)revents;
    lsignal *s = (lsignal *)w;
    lua_State *L = loop_state();
    if (s->fn == LUA_NOREF)
        return;
    lua_rawgeti(L, LUA_REGISTRYINDEX, s->fn);
    lua_pushstring(L, signame(w->signum));
    loop_call(L, 1);
}

/* on_signal(name, fn | nil): fn(name) runs in the loop when the signal
 * comes; nil restores the default disposition. */
static int l_on_signal(lua_State *L)
{
    int sig = signum(L, 1);
    if (!lua_isnoneornil(L, 2))
        luaL_checktype(L, 2, LUA_TFUNCTION);
    size_t k = 0;
    while (k < NHANDLED && handled[k] != sig)
        k++;
    if (k == NHANDLED)
        return luaL_argerror(L, 1, "signal must be INT, TERM, HUP, QUIT, USR1 or USR2");
    lsignal *s = &watchers[k];
    struct ev_loop *loop = loop_get();
    if (s->fn != LUA_NOREF) {
        luaL_unref(L, LUA_REGISTRYINDEX, s->fn);
        s->fn = LUA_NOREF;
    }
    if (lua_isnoneornil(L, 2)) {
        if (ev_is_active(&s->w)) {
            ev_ref(loop);
            ev_signal_stop(loop, &s->w); /* libev restores SIG_DFL */
        }
        signal(sig, SIG_DFL);
        return 0;
    }
    lua_pushvalue(L, 2);
    s->fn = luaL_ref(L, LUA_REGISTRYINDEX);
    if (!ev_is_active(&s->w)) {
        ev_signal_init(&s->w, signal_cb, sig);
        ev_signal_start(loop, &s->w);
        ev_unref(loop);
    }
    unblock(sig);
    return 0;
}

/* signum(name) -> number */
static int l_signum(lua_State *L)
{
    lua_pushinteger(L, signum(L, 1));
    return 1;
}

/* signame(number) -> name */
static int l_signame(lua_State *L)
{
    lua_pushstring(L, signame((int)luaL_checkinteger(L, 1)));
    return 1;
}

/* die_by(signal): end this process by that signal, as a job that was
 * interrupted should (the shell then sees 128 + n). */
static int l_die_by(lua_State *L)
{
    int sig = signum(L, 1);
    exit_hooks_run(); /* what an exit() would have done (control sockets) */
    fflush(NULL);
    signal(sig, SIG_DFL);
    unblock(sig);
    raise(sig);
    _exit(128 + sig); /* only if the signal did not end us */
}

static void ignore_job_signal(int sig)
{
    (void)sig;
}

/* The parent-death signal of a child: a realtime signal nobody else
 * sends. The child leads its own process group, and what its tasks start
 * (os.execute's shell and its commands) is in that group too: they all go
 * with it, as they do when the parent kills the child's group. */
static int pdeath_signal(void)
{
    return SIGRTMIN + 5;
}

static void pdeath_handler(int sig)
{
    (void)sig;
    kill(0, SIGKILL); /* the child's whole group, the child with it */
    _exit(137);
}

static void take_pdeath(void)
{
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = pdeath_handler;
    sigfillset(&sa.sa_mask);
    sigaction(pdeath_signal(), &sa, NULL);
}

/* Stops the watchers of the Lua handlers, which libev leaves at their
 * default dispositions (a child sets its own below). Their functions stay
 * referenced: by the parent's state in a child, or by a closing state. */
static void forget_watchers(void)
{
    struct ev_loop *loop = loop_get();
    for (size_t k = 0; k < NHANDLED; k++) {
        lsignal *s = &watchers[k];
        s->fn = LUA_NOREF;
        if (ev_is_active(&s->w)) {
            ev_ref(loop);
            ev_signal_stop(loop, &s->w);
        }
    }
}

void sig_child_setup(pid_t parent)
{
    forget_watchers();
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sigemptyset(&sa.sa_mask);
    sa.sa_handler = SIG_DFL;
    for (int sig = 1; sig < NSIG; sig++)
        if (sig != SIGKILL && sig != SIGSTOP)
            sigaction(sig, &sa, NULL); /* EINVAL for reserved ones is fine */
    sa.sa_handler = ignore_job_signal;
    sa.sa_flags = SA_RESTART;
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGHUP, &sa, NULL);
    sigaction(SIGQUIT, &sa, NULL);
    sigset_t only_stop;
    sigemptyset(&only_stop);
    sigaddset(&only_stop, sig_stop_signal());
    sigprocmask(SIG_SETMASK, &only_stop, NULL); /* until sig_child_accept_stop */
    setpgid(0, 0);
    take_pdeath();
    prctl(PR_SET_PDEATHSIG, pdeath_signal());
    if (getppid() != parent)
        _exit(1); /* the parent died before the line above */
}

static sig_stop_handler stop_handler;

static void take_stop(void)
{
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sigemptyset(&sa.sa_mask);
    sa.sa_sigaction = stop_handler;
    sa.sa_flags = SA_SIGINFO | SA_RESTART;
    sigaction(sig_stop_signal(), &sa, NULL);
}

void sig_child_accept_stop(sig_stop_handler handler)
{
    stop_handler = handler;
    take_stop();
    unblock(sig_stop_signal());
}

void sig_child_save(sigset_t *mask)
{
    sigprocmask(SIG_SETMASK, NULL, mask);
}

/* One call restores the mask; the dispositions are only read, and put
 * back if a task changed them. */
void sig_child_restore(const sigset_t *mask)
{
    sigprocmask(SIG_SETMASK, mask, NULL);
    struct sigaction cur;
    if (sigaction(sig_stop_signal(), NULL, &cur) == 0
        && cur.sa_sigaction != stop_handler)
        take_stop();
    if (sigaction(pdeath_signal(), NULL, &cur) == 0 && cur.sa_handler != pdeath_handler)
        take_pdeath();
}

/* Until orch has a handler for INT, INT ends the process by the signal,
 * as a job expects (the shell sees 130), whoever had caught it before:
 * lua.c's handler would raise "interrupted!" at a moment orch cannot
 * choose and exit 1. An ignored INT (a background job) stays ignored. */
static void int_default(void)
{
    struct sigaction sa;
    if (sigaction(SIGINT, NULL, &sa) == 0 && sa.sa_handler != SIG_IGN
        && sa.sa_handler != SIG_DFL)
        signal(SIGINT, SIG_DFL);
}

/* The state whose functions the handlers call is closing: the handlers
 * go, and the signals they took get their default dispositions back, so
 * a host that goes on without Lua is not left with signals that do
 * nothing. */
void sig_forget_state(void)
{
    forget_watchers();
}

void sig_open(lua_State *L)
{
    static int ready;
    if (!ready) { /* once per process, however often orch.core is opened */
        for (size_t k = 0; k < NHANDLED; k++)
            watchers[k].fn = LUA_NOREF;
        unblock(SIGCHLD); /* children are reaped on it */
        int_default();
        ready = 1;
    }
    static const luaL_Reg fns[] = {
        {"on_signal", l_on_signal}, {"signum", l_signum}, {"signame", l_signame},
        {"die_by", l_die_by}, {NULL, NULL}};
    luaL_setfuncs(L, fns, 0);
}
