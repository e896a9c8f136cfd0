/*
 * tty.c - the little a full-screen view needs from a terminal: whether fd
 * is one, its size, raw keys read with a timeout, and the mode put back.
 *
 * core.tty_raw() returns a handle that restores the terminal's previous
 * mode when closed, collected or left as a to-be-closed variable, so the
 * terminal is given back however the view ends.
 */
#include <errno.h>
#include <poll.h>
#include <string.h>
#include <sys/ioctl.h>
#include <termios.h>
#include <unistd.h>

#include "orch.h"

#define TTY_MT "orch.tty"

typedef struct tty_state {
    struct termios saved;
    int active;
} tty_state;

/* isatty(fd) -> boolean */
static int l_isatty(lua_State *L)
{
    lua_pushboolean(L, isatty((int)luaL_checkinteger(L, 1)));
    return 1;
}

/* tty_size() -> rows, cols of stdout's terminal (24, 80 when unknown) */
static int l_tty_size(lua_State *L)
{
    struct winsize ws;
    int ok = ioctl(STDOUT_FILENO, TIOCGWINSZ, &ws) == 0 && ws.ws_row > 0 && ws.ws_col > 0;
    lua_pushinteger(L, ok ? ws.ws_row : 24);
    lua_pushinteger(L, ok ? ws.ws_col : 80);
    return 2;
}

/* tty_raw() -> handle | nil, err: stdin unbuffered, no echo, signals kept
 * (Ctrl-C still interrupts). handle:restore() puts the old mode back. */
static int l_tty_raw(lua_State *L)
{
    tty_state *t = lua_newuserdatauv(L, sizeof *t, 0);
    t->active = 0;
    luaL_setmetatable(L, TTY_MT);
    if (tcgetattr(STDIN_FILENO, &t->saved) < 0) {
        lua_pushnil(L);
        lua_pushfstring(L, "tcgetattr: %s", strerror(errno));
        return 2;
    }
    struct termios raw = t->saved;
    raw.c_lflag &= ~(tcflag_t)(ICANON | ECHO);
    raw.c_cc[VMIN] = 1;
    raw.c_cc[VTIME] = 0;
    if (tcsetattr(STDIN_FILENO, TCSANOW, &raw) < 0) {
        lua_pushnil(L);
        lua_pushfstring(L, "tcsetattr: %s", strerror(errno));
        return 2;
    }
    t->active = 1;
    return 1;
}

static int tty_restore(lua_State *L)
{
    tty_state *t = luaL_checkudata(L, 1, TTY_MT);
    if (t->active)
        tcsetattr(STDIN_FILENO, TCSANOW, &t->saved);
    t->active = 0;
    return 0;
}

/* tty_key(timeout) -> the bytes of one key press | nil after timeout
 * seconds (an escape sequence comes whole: it arrives in one read). */
static int l_tty_key(lua_State *L)
{
    lua_Number timeout = luaL_checknumber(L, 1);
    struct pollfd pfd = {STDIN_FILENO, POLLIN, 0};
    int rc = poll(&pfd, 1, timeout > 0 ? (int)(timeout * 1000) : 0);
    if (rc <= 0)
        return 0;
    char buf[32];
    ssize_t n = read(STDIN_FILENO, buf, sizeof buf);
    if (n <= 0) {
        lua_pushnil(L);
        lua_pushliteral(L, "closed");
        return 2;
    }
    lua_pushlstring(L, buf, (size_t)n);
    return 1;
}

void tty_open(lua_State *L)
{
    static const luaL_Reg methods[] = {
        {"restore", tty_restore}, {"__close", tty_restore}, {"__gc", tty_restore}, {NULL, NULL}};
    if (luaL_newmetatable(L, TTY_MT)) {
        luaL_setfuncs(L, methods, 0);
        lua_pushvalue(L, -1);
        lua_setfield(L, -2, "__index");
    }
    lua_pop(L, 1);
    static const luaL_Reg fns[] = {
        {"isatty", l_isatty}, {"tty_size", l_tty_size}, {"tty_raw", l_tty_raw},
        {"tty_key", l_tty_key}, {NULL, NULL}};
    luaL_setfuncs(L, fns, 0);
}
