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
 *
 * Big frames (chan.c): this target plays the child, so before the piece
 * that holds a big frame's first byte it sends that frame's fd on the
 * channel's socket, of a kind the set-up byte and the frame's rank choose
 * (kind): a good sealed memfd holding the input's bytes after the frame
 * (over and over, to the size announced), an unsealed
 * one, one shorter than announced, /dev/null, none, or two. Each big frame
 * must still come as one message of its type (values or a refusal), and
 * no fd may be left open in this process after an input.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/socket.h>
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

#define BIG_LENGTH 0x80000008u /* a big frame's length word (chan.c) */
#define BIG_SIZE 13              /* its bytes: header and the payload's length */
#define MAX_BIG_FDS 64           /* big frames of an input that get an fd */

static uint64_t u64_at(const uint8_t *p)
{
    uint64_t v = 0;
    for (int k = 7; k >= 0; k--)
        v = v << 8 | p[k];
    return v;
}

/* The frames a plain reading of the stream finds: their types in want,
 * how many returned; stops at a length over max, or a frame cut short.
 * big[] gets where each big frame starts (*nbig of them). */
static int frames_of(const uint8_t *s, size_t n, size_t max, int *want, size_t *big, int *nbig)
{
    int k = 0;
    size_t at = 0;
    *nbig = 0;
    while (n - at >= FRAME_HEADER) {
        size_t len = (size_t)s[at] | (size_t)s[at + 1] << 8 | (size_t)s[at + 2] << 16
                     | (size_t)s[at + 3] << 24;
        if (len == 0 && s[at + 4] == MSG_WAKE) { /* a wake frame is never handed on */
            at += FRAME_HEADER;
            continue;
        }
        want[k++] = s[at + 4];
        if (len == BIG_LENGTH) {
            if (n - at < BIG_SIZE) {
                k--; /* cut short */
                break;
            }
            big[(*nbig)++] = at;
            if (u64_at(s + at + FRAME_HEADER) > max)
                break; /* over the limit: the stream ends there */
            at += BIG_SIZE;
            continue;
        }
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
static size_t big_at[MAX_FRAMES];

static int open_fds(void)
{
    DIR *d = opendir("/proc/self/fd");
    if (!d)
        fail("opendir");
    int n = 0;
    while (readdir(d))
        n++;
    closedir(d);
    return n;
}

static int memfd_of(const uint8_t *data, size_t size, size_t n, int seals)
{
    int fd = memfd_create("fuzz", MFD_CLOEXEC | MFD_ALLOW_SEALING);
    if (fd < 0)
        fail("memfd_create");
    uint8_t *buf = malloc(n ? n : 1);
    if (!buf)
        fail("malloc");
    for (size_t k = 0; k < n; k++)
        buf[k] = size ? data[k % size] : 0;
    if (write(fd, buf, n) != (ssize_t)n)
        fail("write memfd");
    free(buf);
    if (seals && fcntl(fd, F_ADD_SEALS, seals) < 0)
        fail("seal");
    return fd;
}

/* Sends the fd(s) of the big frame announcing n bytes, of kind k, on sock
 * as a child would (memfd.c's memfd_send): a byte 'F' carrying them. */
static void send_big_fd(int sock, int kind, uint64_t n, const uint8_t *data, size_t size)
{
    int seals = F_SEAL_WRITE | F_SEAL_SHRINK | F_SEAL_GROW;
    size_t len = n > 65536 ? 65536 : (size_t)n;
    int fds[2], nfds = 1;
    switch (kind) {
    case 0: fds[0] = memfd_of(data, size, len, seals); break;
    case 1: fds[0] = memfd_of(data, size, len, 0); break;
    case 2: fds[0] = memfd_of(data, size, len / 2, seals); break;
    case 3: fds[0] = open("/dev/null", O_RDONLY | O_CLOEXEC); break;
    case 4: return; /* none */
    default:
        fds[0] = memfd_of(data, size, len, seals);
        fds[1] = memfd_of(data, size, len, seals);
        nfds = 2;
    }
    union { char buf[CMSG_SPACE(2 * sizeof(int))]; struct cmsghdr align; } u;
    char mark = 'F';
    struct iovec iov = {&mark, 1};
    struct msghdr m = {0};
    m.msg_iov = &iov;
    m.msg_iovlen = 1;
    m.msg_control = u.buf;
    m.msg_controllen = CMSG_SPACE(sizeof(int) * (size_t)nfds);
    struct cmsghdr *cm = CMSG_FIRSTHDR(&m);
    cm->cmsg_level = SOL_SOCKET;
    cm->cmsg_type = SCM_RIGHTS;
    cm->cmsg_len = CMSG_LEN(sizeof(int) * (size_t)nfds);
    memcpy(CMSG_DATA(cm), fds, sizeof(int) * (size_t)nfds);
    if (sendmsg(sock, &m, MSG_DONTWAIT) != 1)
        fail("sendmsg");
    for (int k = 0; k < nfds; k++)
        close(fds[k]);
}

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

    int fds_before = open_fds();
    int nwant, nbig, sent = 0;
    nwant = frames_of(s, n, max, want, big_at, &nbig);
    int pv[2], sv[2];
    if (pipe(pv) < 0 || socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) < 0)
        fail("pipe");
    fcntl(pv[0], F_SETFL, O_NONBLOCK);
    fcntl(sv[0], F_SETFL, O_NONBLOCK);
    chan c;
    chan_init(&c, pv[0], sv[0]); /* as the parent's: a pipe in, the socket */
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
        for (; sent < nbig && big_at[sent] < at + piece; sent++) {
            int kind = sent < MAX_BIG_FDS ? (int)((seed >> 1) + (unsigned)sent) % 6 : 4;
            size_t from = big_at[sent] + BIG_SIZE; /* the memfd holds the bytes after it */
            send_big_fd(sv[1], kind, u64_at(s + big_at[sent] + FRAME_HEADER), s + from, n - from);
        }
        if (write(pv[1], s + at, piece) != (ssize_t)piece)
            fail("write");
        at += piece;
        for (;;) {
            ssize_t got_n = chan_fill(&c, (size_t)-1);
            if (got_n < 0 && errno == EAGAIN)
                break;
            if (got_n <= 0)
                fail("read");
            if (dispatch_frames(L, &c, 1, 1) < 0) {
                fatal = 1;
                break;
            }
        }
    }
    close(pv[1]);
    close(sv[1]);
    chan_free(&c);
    lua_settop(L, 0);

    if (open_fds() != fds_before)
        fail("an fd was left open");
    if (ngot != nwant || memcmp(got, want, sizeof *got * (size_t)ngot) != 0) {
        fprintf(stderr, "fuzz_frame: %d frames dispatched, %d in the stream\n", ngot, nwant);
        abort();
    }
    return 0;
}
