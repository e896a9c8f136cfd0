/*
 * fuzz_frame.c - libFuzzer target over the frame reader: chan_fill reading
 * a byte stream from a pipe in reads of varying size, and dispatch_frames
 * splitting what was read into frames and decoding them, as the parent
 * does with what a worker writes.
 *
 * An input is one byte of set-up (the seed of the write sizes, 1 to 4096
 * bytes each, and the length limit: 64 KiB or, odd, 256 bytes) and the
 * stream. The stream is written to a pipe in pieces; after each piece,
 * whatever is there is read and dispatched. What on_message receives is
 * checked against a plain reading of the whole stream: the same frames, in
 * order, whatever the pieces (a RESULT batch counts as its frames, a frame
 * that did not decode as its own type, with a reason); the dispatch stops
 * at the first length over the limit, as the channel does. A crash, a
 * sanitizer report, or any mismatch aborts, and libFuzzer saves the input
 * in spec/fuzz/frame/ (replayed by spec/04-fuzz_replay_spec.lua).
 */
#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <lualib.h>

#include "../orch.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define MAX_FRAMES 70000 /* more than a 64 KiB input can hold */

static int got[MAX_FRAMES]; /* the types on_message saw, in order */
static int ngot;

static void fail(const char *what)
{
    fprintf(stderr, "fuzz_frame: %s\n", what);
    abort();
}

/* on_message(proc, type, ...): records what came. */
static int on_message(lua_State *L)
{
    int type = (int)lua_tointeger(L, 2);
    if (type == MSG_RESULT) {
        lua_Integer n = lua_tointeger(L, 4);
        if (n <= 0 || n % 2 || !lua_istable(L, 3))
            fail("a RESULT batch without results");
        for (lua_Integer k = 0; k < n; k += 2) {
            if (ngot == MAX_FRAMES)
                fail("more frames than the stream holds");
            got[ngot++] = MSG_RESULT;
        }
        return 0;
    }
    if (type == 0) {
        size_t len;
        const char *why = lua_tolstring(L, 3, &len);
        if (why == NULL || len == 0)
            fail("a bad frame without a reason");
        type = (int)lua_tointeger(L, 4);
    }
    if (ngot == MAX_FRAMES)
        fail("more frames than the stream holds");
    got[ngot++] = type;
    return 0;
}

static lua_State *fuzz_state(void)
{
    static lua_State *L;
    if (L)
        return L;
    L = luaL_newstate();
    if (!L)
        abort();
    luaL_openlibs(L);
    lua_newtable(L);
    loop_open(L); /* loop_call's loop */
    array_open(L); /* the decoder's arrays in place, as in orch.core */
    lua_pop(L, 1);
    return L;
}

/* The frames a plain reading of the stream finds: their types in want,
 * how many returned; stops at a length over max, or a frame cut short. */
static int frames_of(const uint8_t *s, size_t n, size_t max, int *want)
{
    int k = 0;
    size_t at = 0;
    while (n - at >= FRAME_HEADER) {
        size_t len = (size_t)s[at] | (size_t)s[at + 1] << 8 | (size_t)s[at + 2] << 16
                     | (size_t)s[at + 3] << 24;
        want[k++] = s[at + 4];
        if (len > max || n - at - FRAME_HEADER < len) {
            if (len <= max)
                k--; /* cut short: never delivered */
            break;
        }
        at += FRAME_HEADER + len;
    }
    return k;
}

static int want[MAX_FRAMES];

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1)
        return 0;
    lua_State *L = fuzz_state();
    lua_settop(L, 0);
    unsigned seed = data[0];
    size_t max = (seed & 1) ? 256 : 65536;
    const uint8_t *s = data + 1;
    size_t n = size - 1;

    int pv[2];
    if (pipe(pv) < 0)
        fail("pipe");
    fcntl(pv[0], F_SETFL, O_NONBLOCK);
    chan c;
    chan_init(&c, pv[0], -1);
    c.max_in = max;
    lua_newuserdatauv(L, 1, 1); /* the proc: on_message is its user value 1 */
    lua_pushcfunction(L, on_message);
    lua_setiuservalue(L, 1, 1);

    ngot = 0;
    int fatal = 0;
    size_t at = 0;
    unsigned r = seed * 2654435761u + 1;
    while (at < n && !fatal) {
        r = r * 1103515245u + 12345u;
        size_t piece = 1 + (r >> 8) % 4096;
        if (piece > n - at)
            piece = n - at;
        if (write(pv[1], s + at, piece) != (ssize_t)piece)
            fail("write");
        at += piece;
        for (;;) {
            ssize_t got_n = chan_fill(&c, (size_t)-1);
            if (got_n < 0 && errno == EAGAIN)
                break;
            if (got_n <= 0)
                fail("read");
            if (dispatch_frames(L, &c.in, max, 1, 1) < 0) {
                fatal = 1;
                break;
            }
        }
    }
    close(pv[1]);
    chan_free(&c);
    lua_settop(L, 0);

    int nwant = frames_of(s, n, max, want);
    if (ngot != nwant || memcmp(got, want, sizeof *got * (size_t)ngot) != 0) {
        fprintf(stderr, "fuzz_frame: %d frames dispatched, %d in the stream\n", ngot, nwant);
        abort();
    }
    return 0;
}
