/*
 * spin.c - whether polling before blocking pays.
 *
 * The parent's loop and an idle worker poll their channel for a while
 * before they block: a reply that comes within it is taken without the
 * cost of sleeping and being woken (tens of microseconds on a virtual
 * machine). That only pays while a core is free for the poller. When more
 * processes are runnable than there are cores (many workers, a busy
 * worker, other people's work), every microsecond spent polling is taken
 * from a process that has work to do, and the one being waited for may be
 * the one kept off its core.
 *
 * spin_pays compares the runnable processes of the whole system (the
 * fourth field of /proc/loadavg, "runnable/total", counting the caller)
 * with the cores this process may run on. The file is read at most once
 * every SPIN_CHECK_NS (three system calls); the verdict is kept in
 * between. Without the file, spinning is left off.
 */
#include <fcntl.h>
#include <sched.h>
#include <stdlib.h>
#include <time.h>
#include <unistd.h>

#include "orch.h"

#define SPIN_CHECK_NS 2000000L  /* 2 ms between two readings */

static int cores;
static int verdict;
static struct timespec checked;

static long since_ns(const struct timespec *t0)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (t.tv_sec - t0->tv_sec) * 1000000000L + (t.tv_nsec - t0->tv_nsec);
}

static int count_cores(void)
{
    cpu_set_t set;
    if (sched_getaffinity(0, sizeof set, &set) == 0 && CPU_COUNT(&set) > 0)
        return CPU_COUNT(&set);
    long n = sysconf(_SC_NPROCESSORS_ONLN);
    return n > 0 ? (int)n : 1;
}

/* The runnable count of /proc/loadavg ("0.50 0.40 0.30 2/150 1234"), or
 * -1 when it cannot be read. The file is opened for each reading: no fd is
 * kept, so none is inherited by a forked worker or seen among its fds. */
static int runnable(void)
{
    int fd = open("/proc/loadavg", O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return -1;
    char buf[128];
    ssize_t n = read(fd, buf, sizeof buf - 1);
    close(fd);
    if (n <= 0)
        return -1;
    buf[n] = '\0';
    char *p = buf;
    for (int field = 0; field < 3; field++) {  /* skip the three averages */
        while (*p && *p != ' ')
            p++;
        while (*p == ' ')
            p++;
    }
    char *end;
    long r = strtol(p, &end, 10);
    return end != p && *end == '/' ? (int)r : -1;
}

int spin_pays(void)
{
    if (cores == 0 || since_ns(&checked) > SPIN_CHECK_NS) {
        if (cores == 0)
            cores = count_cores();
        int r = runnable();
        verdict = r > 0 && r <= cores;
        clock_gettime(CLOCK_MONOTONIC, &checked);
    }
    return verdict;
}
