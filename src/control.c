/*
 * control.c - the control socket: a Unix socket on the loop that lets the
 * same user talk to a running orch, and the blocking client `orch ctl`
 * uses to talk to it.
 *
 * Server side (core.ctl_listen): a listening socket and its connections
 * are ev_io watchers on orch's one loop; every read and write is
 * non-blocking, and each connection owns an input and an output buffer.
 * Requests are lines: each whole line is handed to the Lua handler as
 * handler(conn, line); a line longer than the limit is handler(conn, nil,
 * "too long"), after which the connection is half-closed once its answer
 * is written and whatever the client still sends is read and dropped; the
 * end of the client's input is handler(conn, nil, "eof"). The handler
 * answers with conn:send(text).
 *
 * Invariants:
 * - Only a peer with our effective uid is accepted (SO_PEERCRED); others
 *   get one error line and are closed before any Lua runs.
 * - While the handler runs for a connection (it may run the loop again,
 *   e.g. to wait for a service to stop), that connection is not read: its
 *   lines are handled one at a time, in order. A connection that fails
 *   meanwhile is closed, but its input buffer is freed only once the
 *   handler has returned.
 * - A live listener or connection is held by the registry; closing it
 *   stops its watchers, closes its fd and releases that hold.
 * - In a forked child, atfork closes every inherited control fd and makes
 *   the objects inert: a child never answers, unlinks or holds a client.
 * - Nothing here keeps the loop alive: the watchers are unref'd.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include <ev.h>

#include "orch.h"

#define LISTENER_MT "orch.ctl_listener"
#define CONN_MT "orch.ctl_conn"
#define CLIENT_MT "orch.ctl_client"

#define READ_CHUNK 65536
#define MAX_CONNS 256               /* open connections per listener */
#define OUT_MAX (16u << 20)         /* bytes queued to one slow reader */
#define DRAIN_MAX ((size_t)64 << 20) /* bytes dropped after a too-long line */
#define CLIENT_LINE_MAX ((size_t)256 << 20)

static const char refused_line[] =
    "{\"v\":1,\"ok\":false,\"code\":\"permission_denied\","
    "\"error\":\"permission denied: not the same user\"}\n";

struct listener;

typedef struct peer {
    ev_io rw, ww;
    int fd;
    pid_t owner;
    int self;            /* registry ref while open */
    int busy;            /* the handler is running for it */
    int closing;         /* close once the output is written */
    int draining;        /* after a too-long line: drop input until EOF */
    int eof;             /* the client will send no more */
    size_t drained;
    size_t max_line;
    wbuf in, out;
    struct listener *srv;
    struct peer *next;
} peer;

typedef struct listener {
    ev_io w;
    int fd;
    pid_t owner;
    int self;            /* registry ref while open */
    int nconns;
    size_t max_line;
    char path[sizeof(((struct sockaddr_un *)0)->sun_path)];
    peer *conns;
    struct listener *next;
} listener;

static listener *listeners;  /* every open listener of this process */

/* ---- plumbing: sockets and the directory --------------------------------- */

static int fill_addr(struct sockaddr_un *a, const char *path)
{
    memset(a, 0, sizeof *a);
    a->sun_family = AF_UNIX;
    if (strlen(path) >= sizeof a->sun_path) {
        errno = ENAMETOOLONG;
        return -1;
    }
    strcpy(a->sun_path, path);
    return 0;
}

/* A listening socket at path, mode 0600. -1 with errno (EADDRINUSE when a
 * file is there: the caller decides whether it is stale). */
static int ctl_bind(const char *path)
{
    struct sockaddr_un a;
    if (fill_addr(&a, path) < 0)
        return -1;
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return -1;
    mode_t old = umask(0177);
    int rc = bind(fd, (struct sockaddr *)&a, sizeof a);
    umask(old);
    if (rc < 0 || chmod(path, 0600) < 0 || listen(fd, 128) < 0) {
        int e = errno;
        if (rc == 0)
            unlink(path);
        close(fd);
        errno = e;
        return -1;
    }
    return fd;
}

/* A blocking connection to path, or -1 with errno (ECONNREFUSED: nobody
 * listens there, the socket is stale). */
static int ctl_dial(const char *path)
{
    struct sockaddr_un a;
    if (fill_addr(&a, path) < 0)
        return -1;
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return -1;
    while (connect(fd, (struct sockaddr *)&a, sizeof a) < 0) {
        if (errno == EINTR)
            continue;
        int e = errno;
        close(fd);
        errno = e;
        return -1;
    }
    return fd;
}

/* Makes dir (mode 0700) if it is missing; refuses one that is not ours,
 * is not a directory, or that others may enter. 0, or -1 with err. */
static int ctl_private_dir(const char *dir, char *err, size_t errlen)
{
    struct stat st;
    if (mkdir(dir, 0700) < 0 && errno != EEXIST) {
        snprintf(err, errlen, "%s: mkdir: %s", dir, strerror(errno));
        return -1;
    }
    if (lstat(dir, &st) < 0) {
        snprintf(err, errlen, "%s: %s", dir, strerror(errno));
        return -1;
    }
    if (!S_ISDIR(st.st_mode) || st.st_uid != geteuid()) {
        snprintf(err, errlen, "%s: not a directory owned by uid %d", dir, (int)geteuid());
        return -1;
    }
    if ((st.st_mode & 0077) && chmod(dir, 0700) < 0) {
        snprintf(err, errlen, "%s: chmod 0700: %s", dir, strerror(errno));
        return -1;
    }
    return 0;
}

static int peer_is_us(int fd)
{
    struct ucred cred;
    socklen_t len = sizeof cred;
    if (getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cred, &len) < 0)
        return 0;
    return cred.uid == geteuid();
}

/* ---- connections ----------------------------------------------------------- */

static void peer_release(lua_State *L, peer *c)
{
    if (c->fd < 0)
        return;
    struct ev_loop *loop = loop_get();
    if (ev_is_active(&c->rw)) { ev_ref(loop); ev_io_stop(loop, &c->rw); }
    if (ev_is_active(&c->ww)) { ev_ref(loop); ev_io_stop(loop, &c->ww); }
    close(c->fd);
    c->fd = -1;
    wbuf_free(&c->out);
    if (!c->busy)
        wbuf_free(&c->in);
    listener *s = c->srv;
    if (s) {
        for (peer **p = &s->conns; *p; p = &(*p)->next)
            if (*p == c) { *p = c->next; break; }
        s->nconns--;
        c->srv = NULL;
    }
    luaL_unref(L, LUA_REGISTRYINDEX, c->self);
    c->self = LUA_NOREF;
}

static void peer_watch(peer *c, ev_io *w, int on)
{
    struct ev_loop *loop = loop_get();
    if (on && !ev_is_active(w)) {
        ev_io_start(loop, w);
        ev_unref(loop);
    } else if (!on && ev_is_active(w)) {
        ev_ref(loop);
        ev_io_stop(loop, w);
    }
    (void)c;
}

/* Writes what the socket takes; the write watcher covers the rest. Once all
 * is written, a closing connection is half-closed (draining) or closed. */
static void peer_flush(lua_State *L, peer *c)
{
    while (c->out.off < c->out.len) {
        ssize_t n = send(c->fd, c->out.data + c->out.off, c->out.len - c->out.off,
                         MSG_NOSIGNAL | MSG_DONTWAIT);
        if (n > 0) {
            c->out.off += (size_t)n;
        } else if (n < 0 && errno == EINTR) {
            continue;
        } else if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
            wbuf_compact(&c->out);
            peer_watch(c, &c->ww, 1);
            return;
        } else {
            peer_release(L, c);  /* the client is gone */
            return;
        }
    }
    wbuf_reset(&c->out);
    peer_watch(c, &c->ww, 0);
    if (c->closing && (c->eof || !c->draining))
        peer_release(L, c);
    else if (c->closing)
        shutdown(c->fd, SHUT_WR);  /* the answer is out; keep dropping input */
}

static void peer_write_cb(struct ev_loop *loop, ev_io *w, int revents)
{
    (void)loop; (void)revents;
    peer *c = (peer *)((char *)w - offsetof(peer, ww));
    peer_flush(loop_state(), c);
}

/* Calls handler(conn, line) or handler(conn, nil, why). 0, or -1 when the
 * handler raised (kept by loop_call; the loop is broken out of). */
static int peer_call(lua_State *L, peer *c, const char *line, size_t len, const char *why)
{
    lua_rawgeti(L, LUA_REGISTRYINDEX, c->self);  /* peer */
    lua_getiuservalue(L, -1, 1);                  /* conn handler */
    lua_insert(L, -2);                            /* handler peer */
    if (line)
        lua_pushlstring(L, line, len);
    else
        lua_pushnil(L);
    if (why)
        lua_pushstring(L, why);
    return loop_call(L, why ? 3 : 2);
}

/* Hands every whole line to the handler, one at a time. */
static void peer_dispatch(lua_State *L, peer *c)
{
    c->busy = 1;
    peer_watch(c, &c->rw, 0);
    while (c->fd >= 0 && !c->closing) {
        char *start = c->in.data + c->in.off;
        size_t avail = c->in.len - c->in.off;
        char *nl = avail ? memchr(start, '\n', avail) : NULL;
        if (nl) {
            size_t len = (size_t)(nl - start);
            c->in.off += len + 1;
            if (len > c->max_line) {
                c->draining = 1;
                peer_call(L, c, NULL, 0, "too long");
                c->closing = 1;
            } else if (peer_call(L, c, start, len && start[len - 1] == '\r' ? len - 1 : len, NULL) < 0) {
                break;
            }
        } else if (avail > c->max_line) {
            c->in.off = c->in.len;
            c->draining = 1;
            peer_call(L, c, NULL, 0, "too long");
            c->closing = 1;
        } else if (c->eof) {
            peer_call(L, c, NULL, 0, "eof");
            break;
        } else {
            break;
        }
    }
    c->busy = 0;
    if (c->fd < 0) {
        wbuf_free(&c->in);
        return;
    }
    wbuf_compact(&c->in);
    if (c->closing && c->out.off == c->out.len)
        peer_flush(L, c);
    if (c->fd >= 0 && !c->eof)
        peer_watch(c, &c->rw, 1);
}

/* After a too-long line: what comes is dropped, up to DRAIN_MAX bytes;
 * the connection closes at the client's EOF. */
static void peer_drain(lua_State *L, peer *c, ssize_t n)
{
    c->drained += n > 0 ? (size_t)n : 0;
    if (c->drained > DRAIN_MAX) {
        peer_release(L, c);
    } else if (c->eof) {
        peer_watch(c, &c->rw, 0);
        if (c->out.off == c->out.len)
            peer_release(L, c);  /* else peer_flush closes it */
    }
}

static void peer_read_cb(struct ev_loop *loop, ev_io *w, int revents)
{
    (void)loop; (void)revents;
    peer *c = (peer *)w;
    lua_State *L = loop_state();
    if (c->busy)
        return;
    if (wbuf_reserve(&c->in, READ_CHUNK) < 0)
        return peer_release(L, c);
    ssize_t n = read(c->fd, c->in.data + c->in.len, READ_CHUNK);
    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR))
        return;
    if (n <= 0)
        c->eof = 1;  /* EOF, or a reset: the client will send no more */
    if (c->draining)
        return peer_drain(L, c, n);
    if (n > 0)
        c->in.len += (size_t)n;
    lua_rawgeti(L, LUA_REGISTRYINDEX, c->self);  /* anchors c while Lua runs */
    peer_dispatch(L, c);
    lua_pop(L, 1);
}

/* A connection userdata for fd (accepted, ours), held by the registry. */
static void peer_new(lua_State *L, listener *s, int fd)
{
    peer *c = lua_newuserdatauv(L, sizeof *c, 1);
    memset(c, 0, sizeof *c);
    c->fd = -1;
    c->self = LUA_NOREF;
    luaL_setmetatable(L, CONN_MT);
    lua_getiuservalue(L, -2, 1);  /* the listener's handler */
    lua_setiuservalue(L, -2, 1);
    c->fd = fd;
    c->owner = getpid();
    c->max_line = s->max_line;
    c->srv = s;
    c->next = s->conns;
    s->conns = c;
    s->nconns++;
    c->self = luaL_ref(L, LUA_REGISTRYINDEX);  /* pops it */
    ev_io_init(&c->rw, peer_read_cb, fd, EV_READ);
    ev_io_init(&c->ww, peer_write_cb, fd, EV_WRITE);
    peer_watch(c, &c->rw, 1);
}

static void listener_accept_cb(struct ev_loop *loop, ev_io *w, int revents)
{
    (void)loop; (void)revents;
    listener *s = (listener *)w;
    lua_State *L = loop_state();
    for (;;) {
        int fd = accept4(s->fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (fd < 0) {
            if (errno == EINTR || errno == ECONNABORTED)
                continue;
            return;  /* EAGAIN, or out of fds: the next turn tries again */
        }
        if (!peer_is_us(fd) || s->nconns >= MAX_CONNS) {
            if (send(fd, refused_line, sizeof refused_line - 1, MSG_NOSIGNAL | MSG_DONTWAIT) < 0)
                (void)0;  /* best effort: it is closed either way */
            close(fd);
            continue;
        }
        lua_rawgeti(L, LUA_REGISTRYINDEX, s->self);
        peer_new(L, s, fd);
        lua_pop(L, 1);
    }
}

/* ---- binding: listeners ------------------------------------------------------ */

static int errno_result(lua_State *L, const char *what)
{
    int e = errno;
    lua_pushnil(L);
    lua_pushfstring(L, "%s: %s", what, strerror(e));
    lua_pushstring(L, e == ECONNREFUSED ? "ECONNREFUSED" : e == ENOENT ? "ENOENT"
                      : e == EADDRINUSE ? "EADDRINUSE" : e == EACCES ? "EACCES" : "EIO");
    return 3;
}

static void listener_release(lua_State *L, listener *s)
{
    if (s->fd < 0)
        return;
    while (s->conns)
        peer_release(L, s->conns);
    if (s->owner == getpid()) {
        ev_ref(loop_get());
        ev_io_stop(loop_get(), &s->w);
        unlink(s->path);
    }
    close(s->fd);
    s->fd = -1;
    for (listener **p = &listeners; *p; p = &(*p)->next)
        if (*p == s) { *p = s->next; break; }
    luaL_unref(L, LUA_REGISTRYINDEX, s->self);
    s->self = LUA_NOREF;
}

/* ctl_listen(path, handler [, max_line]) -> listener | nil, err, code */
static int l_ctl_listen(lua_State *L)
{
    const char *path = luaL_checkstring(L, 1);
    luaL_checktype(L, 2, LUA_TFUNCTION);
    lua_Integer max_line = luaL_optinteger(L, 3, 65536);
    luaL_argcheck(L, max_line > 0, 3, "must be positive");
    listener *s = lua_newuserdatauv(L, sizeof *s, 1);
    memset(s, 0, sizeof *s);
    s->fd = -1;
    s->self = LUA_NOREF;
    luaL_setmetatable(L, LISTENER_MT);
    if (strlen(path) >= sizeof s->path) {
        errno = ENAMETOOLONG;
        return errno_result(L, path);
    }
    strcpy(s->path, path);
    lua_pushvalue(L, 2);
    lua_setiuservalue(L, -2, 1);
    s->fd = ctl_bind(path);
    if (s->fd < 0)
        return errno_result(L, path);
    s->owner = getpid();
    s->max_line = (size_t)max_line;
    s->next = listeners;
    listeners = s;
    lua_pushvalue(L, -1);
    s->self = luaL_ref(L, LUA_REGISTRYINDEX);
    ev_io_init(&s->w, listener_accept_cb, s->fd, EV_READ);
    ev_io_start(loop_get(), &s->w);
    ev_unref(loop_get());
    return 1;
}

static int listener_close(lua_State *L)
{
    listener_release(L, luaL_checkudata(L, 1, LISTENER_MT));
    return 0;
}

static int listener_path(lua_State *L)
{
    lua_pushstring(L, ((listener *)luaL_checkudata(L, 1, LISTENER_MT))->path);
    return 1;
}

static int listener_count(lua_State *L)
{
    lua_pushinteger(L, ((listener *)luaL_checkudata(L, 1, LISTENER_MT))->nconns);
    return 1;
}

/* ---- binding: connections ------------------------------------------------- */

/* conn:send(text) -> true | nil, "closed" | "full" */
static int peer_send(lua_State *L)
{
    peer *c = luaL_checkudata(L, 1, CONN_MT);
    size_t len;
    const char *p = luaL_checklstring(L, 2, &len);
    if (c->fd < 0 || c->closing) {
        lua_pushnil(L);
        lua_pushliteral(L, "closed");
        return 2;
    }
    if (c->out.len - c->out.off + len > OUT_MAX) {
        lua_pushnil(L);
        lua_pushliteral(L, "full");
        return 2;
    }
    if (wbuf_reserve(&c->out, len) < 0)
        return luaL_error(L, "orch.control: out of memory");
    memcpy(c->out.data + c->out.len, p, len);
    c->out.len += len;
    if (!ev_is_active(&c->ww))
        peer_flush(L, c);
    lua_pushboolean(L, 1);
    return 1;
}

/* conn:close(): closes once what was sent is written. */
static int peer_close(lua_State *L)
{
    peer *c = luaL_checkudata(L, 1, CONN_MT);
    if (c->fd < 0 || c->closing)
        return 0;
    c->closing = 1;
    if (!c->busy && c->out.off == c->out.len)
        peer_flush(L, c);
    return 0;
}

static int peer_closed(lua_State *L)
{
    peer *c = luaL_checkudata(L, 1, CONN_MT);
    lua_pushboolean(L, c->fd < 0 || c->closing);
    return 1;
}

static int peer_gc(lua_State *L)
{
    peer *c = luaL_checkudata(L, 1, CONN_MT);
    wbuf_free(&c->in);  /* unreachable, so released already */
    wbuf_free(&c->out);
    return 0;
}

/* ---- binding: the client side ------------------------------------------------ */

typedef struct client {
    int fd;
    wbuf in;
} client;

/* ctl_connect(path) -> client | nil, err, code ("ECONNREFUSED": stale) */
static int l_ctl_connect(lua_State *L)
{
    const char *path = luaL_checkstring(L, 1);
    client *k = lua_newuserdatauv(L, sizeof *k, 0);
    memset(k, 0, sizeof *k);
    k->fd = -1;
    luaL_setmetatable(L, CLIENT_MT);
    k->fd = ctl_dial(path);
    if (k->fd < 0)
        return errno_result(L, path);
    return 1;
}

static client *check_client(lua_State *L)
{
    client *k = luaL_checkudata(L, 1, CLIENT_MT);
    if (k->fd < 0)
        luaL_error(L, "orch.control: client is closed");
    return k;
}

/* client:send(text) -> true | nil, err */
static int client_send(lua_State *L)
{
    client *k = check_client(L);
    size_t len;
    const char *p = luaL_checklstring(L, 2, &len);
    while (len > 0) {
        ssize_t n = send(k->fd, p, len, MSG_NOSIGNAL);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0)
            return errno_result(L, "send");
        p += n;
        len -= (size_t)n;
    }
    lua_pushboolean(L, 1);
    return 1;
}

static double mono_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec / 1e9;
}

/* client:read_line([timeout]) -> line | nil, "timeout" | "closed" | err */
static int client_read_line(lua_State *L)
{
    client *k = check_client(L);
    double timeout = luaL_optnumber(L, 2, -1);
    double deadline = timeout >= 0 ? mono_now() + timeout : 0;
    for (;;) {
        char *start = k->in.data + k->in.off;
        size_t avail = k->in.len - k->in.off;
        char *nl = avail ? memchr(start, '\n', avail) : NULL;
        if (nl) {
            lua_pushlstring(L, start, (size_t)(nl - start));
            k->in.off += (size_t)(nl - start) + 1;
            wbuf_compact(&k->in);
            return 1;
        }
        if (avail > CLIENT_LINE_MAX)
            return luaL_error(L, "orch.control: answer line over %d MiB", (int)(CLIENT_LINE_MAX >> 20));
        int ms = -1;
        if (timeout >= 0) {
            double left = deadline - mono_now();
            if (left <= 0) {
                lua_pushnil(L);
                lua_pushliteral(L, "timeout");
                return 2;
            }
            ms = (int)(left * 1000) + 1;
        }
        struct pollfd pfd = {k->fd, POLLIN, 0};
        int rc = poll(&pfd, 1, ms);
        if (rc < 0 && errno != EINTR)
            return errno_result(L, "poll");
        if (rc <= 0)
            continue;
        if (wbuf_reserve(&k->in, READ_CHUNK) < 0)
            return luaL_error(L, "orch.control: out of memory");
        ssize_t n = read(k->fd, k->in.data + k->in.len, READ_CHUNK);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0) {
            lua_pushnil(L);
            lua_pushliteral(L, "closed");
            return 2;
        }
        k->in.len += (size_t)n;
    }
}

static int client_close(lua_State *L)
{
    client *k = luaL_checkudata(L, 1, CLIENT_MT);
    if (k->fd >= 0)
        close(k->fd);
    k->fd = -1;
    wbuf_free(&k->in);
    return 0;
}

/* ---- binding: the directory ----------------------------------------------------- */

/* ctl_dir(dir) -> true | nil, err: makes the per-user directory (0700). */
static int l_ctl_dir(lua_State *L)
{
    char err[512];
    if (ctl_private_dir(luaL_checkstring(L, 1), err, sizeof err) < 0) {
        lua_pushnil(L);
        lua_pushstring(L, err);
        return 2;
    }
    lua_pushboolean(L, 1);
    return 1;
}

/* ctl_sockets(dir) -> { name, ... }: the sockets in dir that we own. */
static int l_ctl_sockets(lua_State *L)
{
    const char *dir = luaL_checkstring(L, 1);
    lua_newtable(L);
    DIR *d = opendir(dir);
    if (!d)
        return 1;
    int n = 0;
    struct dirent *e;
    while ((e = readdir(d)) != NULL) {
        struct stat st;
        if (fstatat(dirfd(d), e->d_name, &st, AT_SYMLINK_NOFOLLOW) == 0
            && S_ISSOCK(st.st_mode) && st.st_uid == geteuid()) {
            lua_pushstring(L, e->d_name);
            lua_rawseti(L, -2, ++n);
        }
    }
    closedir(d);
    return 1;
}

static int l_geteuid(lua_State *L)
{
    lua_pushinteger(L, geteuid());
    return 1;
}

/* pid_age(pid) -> seconds since the process started | nil (Linux /proc). */
static int l_pid_age(lua_State *L)
{
    char path[64], buf[1024];
    snprintf(path, sizeof path, "/proc/%d/stat", (int)luaL_checkinteger(L, 1));
    FILE *f = fopen(path, "r");
    if (!f)
        return 0;
    size_t n = fread(buf, 1, sizeof buf - 1, f);
    fclose(f);
    buf[n] = 0;
    char *p = strrchr(buf, ')');  /* the name may hold spaces and parens */
    unsigned long long start = 0;
    /* after ") ": state is field 3, starttime field 22 */
    if (!p || sscanf(p + 2, "%*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %*u %*u %*d %*d "
                            "%*d %*d %*d %*d %llu", &start) != 1)
        return 0;
    struct timespec ts;
    clock_gettime(CLOCK_BOOTTIME, &ts);
    double age = (double)ts.tv_sec + ts.tv_nsec / 1e9 - (double)start / sysconf(_SC_CLK_TCK);
    lua_pushnumber(L, age > 0 ? age : 0);
    return 1;
}

/* At exit: the sockets of this process go with it. */
static void ctl_atexit(void)
{
    for (listener *s = listeners; s; s = s->next)
        if (s->owner == getpid())
            unlink(s->path);
}

/* In a forked child: the parent's control fds are closed and forgotten. */
static void ctl_atfork_child(void)
{
    for (listener *s = listeners; s; s = s->next) {
        for (peer *c = s->conns; c; c = c->next) {
            close(c->fd);
            c->fd = -1;
        }
        close(s->fd);
        s->fd = -1;
    }
    listeners = NULL;
}

void control_open(lua_State *L)
{
    static int ready;
    if (!ready) {
        pthread_atfork(NULL, NULL, ctl_atfork_child);
        atexit(ctl_atexit);
        ready = 1;
    }
    static const luaL_Reg listener_methods[] = {
        {"close", listener_close}, {"path", listener_path}, {"connections", listener_count},
        {"__close", listener_close}, {"__gc", listener_close}, {NULL, NULL}};
    static const luaL_Reg conn_methods[] = {
        {"send", peer_send}, {"close", peer_close}, {"closed", peer_closed},
        {"__gc", peer_gc}, {NULL, NULL}};
    static const luaL_Reg client_methods[] = {
        {"send", client_send}, {"read_line", client_read_line}, {"close", client_close},
        {"__close", client_close}, {"__gc", client_close}, {NULL, NULL}};
    const struct { const char *name; const luaL_Reg *methods; } types[] = {
        {LISTENER_MT, listener_methods}, {CONN_MT, conn_methods}, {CLIENT_MT, client_methods}};
    for (size_t i = 0; i < sizeof types / sizeof types[0]; i++) {
        if (luaL_newmetatable(L, types[i].name)) {
            luaL_setfuncs(L, types[i].methods, 0);
            lua_pushvalue(L, -1);
            lua_setfield(L, -2, "__index");
        }
        lua_pop(L, 1);
    }
    static const luaL_Reg fns[] = {
        {"ctl_listen", l_ctl_listen}, {"ctl_connect", l_ctl_connect}, {"ctl_dir", l_ctl_dir},
        {"ctl_sockets", l_ctl_sockets}, {"pid_age", l_pid_age}, {"geteuid", l_geteuid},
        {NULL, NULL}};
    luaL_setfuncs(L, fns, 0);
}
