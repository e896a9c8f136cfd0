/*
 * limits.c - a worker's resource limits (plumbing: no Lua).
 *
 * A pool's `limits` are applied with setrlimit in each worker when it
 * starts: files (RLIMIT_NOFILE), processes (RLIMIT_NPROC, counted by the
 * kernel per user, and not enforced for root) and memory (RLIMIT_AS: the
 * address space the worker may add to what it has when it starts, since
 * a forked worker begins with its parent's whole address space). The CPU
 * limit is per task: before each task the soft RLIMIT_CPU is set that many
 * seconds past what the worker has used so far, so a runaway task gets
 * SIGXCPU (whose default action ends the worker) and the others are not
 * charged for those before them. The hard limits are left alone, so they
 * can be raised again.
 *
 * max_memory_per_worker is checked after each task against the worker's
 * resident set (/proc/self/statm, read through one fd kept open: one
 * pread a task). Resident pages include those still shared with the
 * parent, so the figure is an upper bound of what the worker costs.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/time.h>
#include <unistd.h>

#include "orch.h"

static long long cpu_per_task;  /* seconds, 0: none */
static long long max_resident;  /* bytes, 0: none */
static int statm_fd = -1;

/* Fields 1 and 2 of /proc/self/statm, in bytes: size and resident. */
static int statm(long long *size, long long *resident)
{
    if (statm_fd < 0)
        statm_fd = open("/proc/self/statm", O_RDONLY | O_CLOEXEC);
    char buf[128];
    ssize_t n = statm_fd < 0 ? -1 : pread(statm_fd, buf, sizeof buf - 1, 0);
    if (n <= 0)
        return -1;
    buf[n] = '\0';
    long long pages_size, pages_resident;
    if (sscanf(buf, "%lld %lld", &pages_size, &pages_resident) != 2)
        return -1;
    long page = sysconf(_SC_PAGESIZE);
    *size = pages_size * page;
    *resident = pages_resident * page;
    return 0;
}

static int set_soft_and_hard(int resource, rlim_t value, const char *what, char *err, size_t n)
{
    struct rlimit rl = {value, value};
    struct rlimit cur;
    if (getrlimit(resource, &cur) == 0 && cur.rlim_max != RLIM_INFINITY && cur.rlim_max < value)
        rl.rlim_max = rl.rlim_cur = cur.rlim_max; /* no higher than it may go */
    if (setrlimit(resource, &rl) < 0) {
        snprintf(err, n, "limits.%s: setrlimit: %s", what, strerror(errno));
        return -1;
    }
    return 0;
}

int limits_apply(const worker_limits *l, char *err, size_t n)
{
    if (l->files > 0 && set_soft_and_hard(RLIMIT_NOFILE, (rlim_t)l->files, "files", err, n) < 0)
        return -1;
    if (l->processes > 0
        && set_soft_and_hard(RLIMIT_NPROC, (rlim_t)l->processes, "processes", err, n) < 0)
        return -1;
    if (l->memory > 0) {
        long long size, resident;
        if (statm(&size, &resident) < 0) {
            snprintf(err, n, "limits.memory: cannot read /proc/self/statm");
            return -1;
        }
        if (set_soft_and_hard(RLIMIT_AS, (rlim_t)(size + l->memory), "memory", err, n) < 0)
            return -1;
    }
    cpu_per_task = l->cpu;
    max_resident = l->max_resident;
    if (max_resident > 0 && statm_fd < 0) {
        long long size, resident;
        statm(&size, &resident); /* opens it now, while fds are there */
    }
    return 0;
}

void limits_task_start(void)
{
    if (cpu_per_task <= 0)
        return;
    struct rusage ru;
    if (getrusage(RUSAGE_SELF, &ru) < 0)
        return;
    struct rlimit rl;
    if (getrlimit(RLIMIT_CPU, &rl) < 0)
        return;
    /* whole seconds: a second started counts as used */
    rlim_t used = (rlim_t)(ru.ru_utime.tv_sec + ru.ru_stime.tv_sec + 1);
    rl.rlim_cur = used + (rlim_t)cpu_per_task;
    if (rl.rlim_max != RLIM_INFINITY && rl.rlim_cur > rl.rlim_max)
        rl.rlim_cur = rl.rlim_max;
    setrlimit(RLIMIT_CPU, &rl);
}

int limits_over_memory(void)
{
    long long size, resident;
    return max_resident > 0 && statm(&size, &resident) == 0 && resident > max_resident;
}

long long limits_memory(void)
{
    struct rlimit rl;
    if (getrlimit(RLIMIT_AS, &rl) < 0 || rl.rlim_cur == RLIM_INFINITY)
        return 0;
    return (long long)rl.rlim_cur;
}
