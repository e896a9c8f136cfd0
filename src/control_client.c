/*
 * control_client.c - the client side of a control socket: the blocking
 * connection `orch ctl`, `orch top` and the stale-socket probe use, and
 * the listing of the sockets in a directory.
 *
 * Nothing here is on the loop: a client blocks in connect, send and
 * poll, bounded by the caller's timeout. Also here, because both ends
 * need them: a socket address from a path, and an errno as Lua results.
 *
 * Invariants:
 * - A client owns its fd and its input buffer; close (also __close and
 *   __gc) releases both and is idempotent.
 * - An answer line is bounded (CLIENT_LINE_MAX): a server that never
 *   sends a newline cannot make a client grow without end.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include "orch.h"

#define CLIENT_MT "orch.ctl_client"

#define READ_CHUNK 65536
#define CLIENT_LINE_MAX ((size_t)256 << 20)

typedef struct client {
    int fd;
    wbuf in;
} client;

/* ---- plumbing ---------------------------------------------------------------- */

int ctl_fill_addr(struct sockaddr_un *a, const char *path)
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

/* A blocking connection to path, or -1 with errno (ECONNREFUSED: nobody
 * listens there, the socket is stale). */
static int ctl_dial(const char *path)
{
    struct sockaddr_un a;
    if (ctl_fill_addr(&a, path) < 0)
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

static double mono_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec / 1e9;
}

/* ---- binding ------------------------------------------------------------------ */

int ctl_errno_result(lua_State *L, const char *what)
{
    int e = errno;
    lua_pushnil(L);
    lua_pushfstring(L, "%s: %s", what, strerror(e));
    lua_pushstring(L, e == ECONNREFUSED ? "ECONNREFUSED" : e == ENOENT ? "ENOENT"
                      : e == EADDRINUSE ? "EADDRINUSE" : e == EACCES ? "EACCES" : "EIO");
    return 3;
}

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
        return ctl_errno_result(L, path);
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
            return ctl_errno_result(L, "send");
        p += n;
        len -= (size_t)n;
    }
    lua_pushboolean(L, 1);
    return 1;
}

/* Pushes the next whole line of k->in and returns 1, or returns 0. */
static int client_take_line(lua_State *L, client *k)
{
    char *start = k->in.data + k->in.off;
    size_t avail = k->in.len - k->in.off;
    char *nl = avail ? memchr(start, '\n', avail) : NULL;
    if (!nl) {
        if (avail > CLIENT_LINE_MAX)
            luaL_error(L, "orch.control: answer line over %d MiB", (int)(CLIENT_LINE_MAX >> 20));
        return 0;
    }
    lua_pushlstring(L, start, (size_t)(nl - start));
    k->in.off += (size_t)(nl - start) + 1;
    wbuf_compact(&k->in);
    return 1;
}

/* client:read_line([timeout]) -> line | nil, "timeout" | "closed" | err */
static int client_read_line(lua_State *L)
{
    client *k = check_client(L);
    double timeout = luaL_optnumber(L, 2, -1);
    double deadline = timeout >= 0 ? mono_now() + timeout : 0;
    while (!client_take_line(L, k)) {
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
            return ctl_errno_result(L, "poll");
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
    return 1;
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

void control_client_open(lua_State *L)
{
    static const luaL_Reg methods[] = {
        {"send", client_send}, {"read_line", client_read_line}, {"close", client_close},
        {"__close", client_close}, {"__gc", client_close}, {NULL, NULL}};
    if (luaL_newmetatable(L, CLIENT_MT)) {
        luaL_setfuncs(L, methods, 0);
        lua_pushvalue(L, -1);
        lua_setfield(L, -2, "__index");
    }
    lua_pop(L, 1);
    static const luaL_Reg fns[] = {
        {"ctl_connect", l_ctl_connect}, {"ctl_sockets", l_ctl_sockets}, {NULL, NULL}};
    luaL_setfuncs(L, fns, 0);
}
