/*
 * memfd.c - big payloads out of band: a sealed memfd holds the bytes, and
 * its file descriptor crosses a Unix socket (SCM_RIGHTS) instead of the
 * bytes themselves. chan.c decides when; this file only makes, checks,
 * reads and moves such files (plumbing: 0 / -1, no Lua).
 *
 * The reader copies a payload out (pread) into a block of its own
 * (alloc_big.c: kept for the next big payload, its pages there already)
 * and decodes from that. Mapping the memfd instead costs a page fault
 * for every 4 KiB of every frame, which on a virtual machine costs
 * several times the copy.
 *
 * Invariants:
 * - A memfd handed to the other process is sealed against writing,
 *   shrinking and growing, and its seals against change. The reader
 *   decodes its own copy in any case: what the writer does to the file
 *   afterwards can change nothing under the decoder.
 * - A file descriptor received is checked before it is read (a memfd,
 *   sealed so, at least as long as announced) and is closed by
 *   memfd_read whatever the outcome: nothing received stays open.
 * - Every descriptor received gets close-on-exec (MSG_CMSG_CLOEXEC): a
 *   task that execs never inherits one.
 *
 * A shared memfd is the other way: one per channel, kept by the parent
 * for its big frames to the child, each payload written over the last
 * once the child has let it go. A memfd made, filled from fresh pages and
 * torn down for every frame costs more than the copy itself; this one's
 * pages stay. It is never sealed, so only the child, which trusts its
 * parent anyway, reads one: the parent reads sealed memfds only. Its
 * first MEMFD_SHARED_AT bytes are a header whose first word the child
 * sets to 1 once it has read the payload; the parent writes the next
 * payload only after it reads that 1, else it falls back to a sealed
 * memfd. Each frame takes a new fd of it, which the child reads and
 * closes. The memory a process keeps so is bounded (SHARED_BUDGET), and
 * chan.c drops a channel's once a small frame follows.
 */
#include <errno.h>
#include <fcntl.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include "orch.h"

#define SEALS_NEEDED (F_SEAL_WRITE | F_SEAL_SHRINK)
#define MARK 'F' /* the byte an out-of-band descriptor rides on */
#define SHARED_BUDGET (256u << 20) /* bytes of shared memfds a process keeps */
#define SHARED_GRAIN (64u << 10)   /* their sizes are multiples of this */

static size_t shared_total; /* bytes of shared memfds held here */

/* n bytes between p and fd from byte at on, pwrite (writing) or pread:
 * 0, or -1 (a call failed, or a read met the end of the file). */
static int move_at(int fd, size_t at, char *p, size_t n, int writing)
{
    while (n > 0) {
        ssize_t r = writing ? pwrite(fd, p, n, (off_t)at) : pread(fd, p, n, (off_t)at);
        if (r < 0 && errno == EINTR)
            continue;
        if (r <= 0)
            return -1;
        p += r;
        at += (size_t)r;
        n -= (size_t)r;
    }
    return 0;
}

static int write_at(int fd, size_t at, const void *p, size_t n)
{
    return move_at(fd, at, (char *)p, n, 1); /* pwrite only reads p */
}

/* The nv pieces v[] into fd from byte at on. 0, or -1. */
static int write_pieces(int fd, size_t at, const struct iovec *v, int nv)
{
    for (int k = 0; k < nv; k++) {
        if (write_at(fd, at, v[k].iov_base, v[k].iov_len) < 0)
            return -1;
        at += v[k].iov_len;
    }
    return 0;
}

int memfd_from(const struct iovec *v, int nv)
{
    int fd = memfd_create("orch-frame", MFD_CLOEXEC | MFD_ALLOW_SEALING);
    if (fd < 0)
        return -1;
    if (write_pieces(fd, 0, v, nv) < 0
        || fcntl(fd, F_ADD_SEALS, F_SEAL_WRITE | F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_SEAL) < 0) {
        close(fd);
        return -1;
    }
    return fd;
}

/* n bytes of fd from byte at on, into a block of their own (*buf; NULL
 * for none). 0, or -1 with *why. */
static int read_payload(int fd, size_t at, size_t n, void **buf, const char **why)
{
    if (n == 0)
        return 0;
    if ((*buf = alloc_big_block(n)) == NULL) {
        *why = "not enough memory";
        return -1;
    }
    if (move_at(fd, at, *buf, n, 0) < 0) {
        alloc_big_block_free(*buf);
        *buf = NULL;
        *why = "big frame: the memfd could not be read";
        return -1;
    }
    return 0;
}

int memfd_read(int fd, size_t n, void **buf, const char **why)
{
    struct stat st;
    *buf = NULL;
    int seals = fcntl(fd, F_GET_SEALS), r = -1;
    if (fstat(fd, &st) < 0 || !S_ISREG(st.st_mode) || seals < 0)
        *why = "big frame: the file descriptor is not a memfd";
    else if ((seals & SEALS_NEEDED) != SEALS_NEEDED)
        *why = "big frame: the memfd is not sealed against writing and shrinking";
    else if ((uint64_t)st.st_size < (uint64_t)n)
        *why = "big frame: the size is beyond the end of the memfd";
    else
        r = read_payload(fd, 0, n, buf, why);
    close(fd);
    return r;
}

void memfd_payload_free(void *buf)
{
    alloc_big_block_free(buf);
}

/* The control message that carries fd, in buf (its padding zeroed too). */
static void put_rights(struct msghdr *m, char *buf, size_t size, int fd)
{
    memset(buf, 0, size);
    m->msg_control = buf;
    m->msg_controllen = size;
    struct cmsghdr *cm = CMSG_FIRSTHDR(m);
    cm->cmsg_level = SOL_SOCKET;
    cm->cmsg_type = SCM_RIGHTS;
    cm->cmsg_len = CMSG_LEN(sizeof fd);
    memcpy(CMSG_DATA(cm), &fd, sizeof fd);
}

ssize_t memfd_send_with(int sock, const char *p, size_t n, int fd, int flags)
{
    union { char buf[CMSG_SPACE(sizeof(int))]; struct cmsghdr align; } u;
    struct iovec iov = {(void *)p, n};
    struct msghdr m = {0};
    m.msg_iov = &iov;
    m.msg_iovlen = 1;
    put_rights(&m, u.buf, sizeof u.buf, fd);
    ssize_t w;
    do
        w = sendmsg(sock, &m, flags | MSG_NOSIGNAL);
    while (w < 0 && errno == EINTR);
    return w;
}

int memfd_send(int sock, int fd)
{
    static const char mark = MARK;
    return memfd_send_with(sock, &mark, 1, fd, 0) == 1 ? 0 : -1;
}

/* recvmsg into p[0..n): the descriptors that came with the bytes go to
 * fds (at most max; any beyond are closed); *nfds counts them all, or is
 * -1 when some were lost and none came (MSG_CTRUNC: no fd free here). */
ssize_t memfd_recv_with(int sock, char *p, size_t n, int flags, int *fds, int *nfds, int max)
{
    union { char buf[CMSG_SPACE(4 * sizeof(int))]; struct cmsghdr align; } u;
    struct iovec iov = {p, n};
    struct msghdr m = {0};
    m.msg_iov = &iov;
    m.msg_iovlen = 1;
    m.msg_control = u.buf;
    m.msg_controllen = sizeof u.buf;
    ssize_t r;
    do
        r = recvmsg(sock, &m, flags | MSG_CMSG_CLOEXEC);
    while (r < 0 && errno == EINTR);
    *nfds = 0;
    if (r < 0)
        return r;
    for (struct cmsghdr *cm = CMSG_FIRSTHDR(&m); cm; cm = CMSG_NXTHDR(&m, cm)) {
        if (cm->cmsg_level != SOL_SOCKET || cm->cmsg_type != SCM_RIGHTS)
            continue;
        size_t k = (cm->cmsg_len - CMSG_LEN(0)) / sizeof(int);
        for (size_t i = 0; i < k; i++) {
            int fd;
            memcpy(&fd, CMSG_DATA(cm) + i * sizeof fd, sizeof fd);
            if (*nfds < max)
                fds[*nfds] = fd;
            else
                close(fd);
            ++*nfds;
        }
    }
    if (*nfds == 0 && (m.msg_flags & MSG_CTRUNC))
        *nfds = -1;
    return r;
}

int memfd_recv(int sock, const char **why)
{
    char mark;
    int fd = -1, nfds;
    ssize_t r = memfd_recv_with(sock, &mark, 1, MSG_DONTWAIT, &fd, &nfds, 1);
    if (r == 1 && mark == MARK && nfds == 1)
        return fd;
    if (nfds > 0)
        close(fd);
    *why = nfds > 1    ? "big frame: more than one file descriptor came with it"
           : nfds < 0 ? "big frame: its file descriptor was lost (no fd free here)"
                      : "big frame: no file descriptor came with it";
    return -1;
}

/* ---- shared memfds ------------------------------------------------------ */

/* Whether the reader let the payload in fd go (the header's first word). */
static int let_go(int fd)
{
    uint32_t word = 0;
    return pread(fd, &word, sizeof word, 0) == (ssize_t)sizeof word && word == 1;
}

void memfd_shared_close(memfd_shared *s)
{
    if (s->fd >= 0) {
        close(s->fd);
        shared_total -= s->size;
    }
    memfd_shared_forget(s);
}

void memfd_shared_forget(memfd_shared *s)
{
    s->fd = -1;
    s->size = 0;
    s->busy = 0;
}

void memfd_forked(void)
{
    shared_total = 0;
}

/* s at the size for a payload of n bytes: made, grown, or shrunk when it
 * is over twice that (called once the reader has let the last payload
 * go). 0, or -1 (s unchanged). */
static int fit(memfd_shared *s, size_t n)
{
    size_t need = MEMFD_SHARED_AT + n;
    need = (need + SHARED_GRAIN - 1) / SHARED_GRAIN * SHARED_GRAIN;
    if (s->fd >= 0 && s->size >= need && s->size / 2 <= need)
        return 0;
    if (shared_total - s->size + need > SHARED_BUDGET)
        return -1;
    int fd = s->fd >= 0 ? s->fd : memfd_create("orch-shared", MFD_CLOEXEC);
    if (fd < 0)
        return -1;
    if (ftruncate(fd, (off_t)need) < 0) {
        if (s->fd < 0)
            close(fd);
        return -1;
    }
    shared_total += need - s->size;
    s->fd = fd;
    s->size = need;
    return 0;
}

int memfd_shared_put(memfd_shared *s, const struct iovec *v, int nv, size_t n, int *send_fd)
{
    static const uint32_t held = 0;
    *send_fd = -1;
    if (s->fd >= 0 && s->busy && !let_go(s->fd))
        return -1;
    s->busy = 0;
    if (fit(s, n) < 0)
        return -1;
    if (write_at(s->fd, 0, &held, sizeof held) < 0 || write_pieces(s->fd, MEMFD_SHARED_AT, v, nv) < 0
        || (*send_fd = fcntl(s->fd, F_DUPFD_CLOEXEC, 3)) < 0) {
        memfd_shared_close(s);
        return -1;
    }
    s->busy = 1;
    return 0;
}

int memfd_read_shared(int fd, size_t n, void **buf, const char **why)
{
    static const uint32_t done = 1;
    struct stat st;
    *buf = NULL;
    int r = -1;
    if (fstat(fd, &st) < 0 || !S_ISREG(st.st_mode))
        *why = "big frame: the file descriptor is not a memfd";
    else if ((uint64_t)st.st_size < (uint64_t)MEMFD_SHARED_AT + n)
        *why = "big frame: the size is beyond the end of the shared memfd";
    else
        r = read_payload(fd, MEMFD_SHARED_AT, n, buf, why);
    (void)write_at(fd, 0, &done, sizeof done); /* let go, read or not */
    close(fd);
    return r;
}
