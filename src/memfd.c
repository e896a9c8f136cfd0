/*
 * memfd.c - big payloads out of band: a sealed memfd holds the bytes, and
 * its file descriptor crosses a Unix socket (SCM_RIGHTS) instead of the
 * bytes themselves. chan.c decides when; this file only makes, checks,
 * maps and moves such files (plumbing: 0 / -1, no Lua).
 *
 * Invariants:
 * - A memfd handed to the other process is sealed against writing,
 *   shrinking and growing, and its seals against change: the reader's
 *   mapping can neither change under its decoder nor lose pages (no
 *   SIGBUS), whatever the writer does afterwards.
 * - A file descriptor received is checked before it is mapped (a memfd,
 *   sealed so, at least as long as announced) and is closed by
 *   memfd_map whatever the outcome: nothing received stays open.
 * - Every descriptor received gets close-on-exec (MSG_CMSG_CLOEXEC): a
 *   task that execs never inherits one.
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

int memfd_from(const char *p, size_t n)
{
    int fd = memfd_create("orch-frame", MFD_CLOEXEC | MFD_ALLOW_SEALING);
    if (fd < 0)
        return -1;
    size_t at = 0;
    while (at < n) {
        ssize_t w = pwrite(fd, p + at, n - at, (off_t)at);
        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0)
            goto fail;
        at += (size_t)w;
    }
    if (fcntl(fd, F_ADD_SEALS, F_SEAL_WRITE | F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_SEAL) < 0)
        goto fail;
    return fd;
fail:
    close(fd);
    return -1;
}

int memfd_map(int fd, size_t n, void **map, const char **why)
{
    struct stat st;
    *map = NULL;
    int seals = fcntl(fd, F_GET_SEALS);
    if (fstat(fd, &st) < 0 || !S_ISREG(st.st_mode) || seals < 0)
        *why = "big frame: the file descriptor is not a memfd";
    else if ((seals & SEALS_NEEDED) != SEALS_NEEDED)
        *why = "big frame: the memfd is not sealed against writing and shrinking";
    else if ((uint64_t)st.st_size < (uint64_t)n)
        *why = "big frame: the size is beyond the end of the memfd";
    else if (n > 0
             && (*map = mmap(NULL, n, PROT_READ, MAP_SHARED | MAP_POPULATE, fd, 0)) == MAP_FAILED)
        *why = errno == ENOMEM ? "not enough memory" : "big frame: mmap failed";
    close(fd);
    if (*map == MAP_FAILED)
        *map = NULL;
    else if (*why == NULL)
        return 0;
    return -1;
}

void memfd_unmap(void *map, size_t n)
{
    if (map)
        munmap(map, n);
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
