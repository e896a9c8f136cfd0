/*
 * pingpong.c - the floor under a round trip on this machine: a parent and
 * a forked child pass a 16-byte message back and forth, both polling,
 * through the kernel (a socketpair there, a pipe back: orch's channel
 * without lanes) and through a shared mapping (a counter each way: a
 * lane's cost without its copies). Then the same through the kernel with
 * both sides blocking in read, the machine idle and with a process
 * spinning on every core but one: the floor under `busy` in run.lua,
 * where nobody may poll and each message costs a wake-up.
 *
 *   cc -O2 -o /tmp/pingpong bench/pingpong.c && /tmp/pingpong [N]
 *
 * Prints the median and p99 of N round trips (20,000) each way.
 */
#define _GNU_SOURCE
#include <fcntl.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static double now(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + (double)t.tv_nsec * 1e-9;
}

static int by_value(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

static void report(const char *what, double *t, int n)
{
    qsort(t, (size_t)n, sizeof *t, by_value);
    printf("%-28s median %6.2f us  p99 %6.2f us\n", what, t[n / 2] * 1e6, t[n * 99 / 100] * 1e6);
}

/* poll: both sides spin on non-blocking reads; else both block in read. */
static void through_kernel(double *t, int n, int poll)
{
    int sv[2], up[2];
    char b[64] = {0};
    if (socketpair(AF_UNIX, SOCK_STREAM, 0, sv) < 0 || pipe(up) < 0)
        exit(1);
    int flags = poll ? MSG_DONTWAIT : 0;
    pid_t child = fork();
    if (child == 0) {
        for (int i = 0; i < n; i++) {
            while (recv(sv[1], b, sizeof b, flags) <= 0)
                ;
            if (write(up[1], b, 16) != 16)
                _exit(1);
        }
        _exit(0);
    }
    if (poll)
        fcntl(up[0], F_SETFL, O_NONBLOCK);
    for (int i = 0; i < n; i++) {
        double t0 = now();
        send(sv[0], b, 16, MSG_NOSIGNAL);
        while (read(up[0], b, sizeof b) <= 0)
            ;
        t[i] = now() - t0;
    }
    waitpid(child, NULL, 0);
    close(sv[0]), close(sv[1]), close(up[0]), close(up[1]);
}

/* A process spinning on every core but one; their pids in hogs. */
static int start_hogs(pid_t *hogs, int most)
{
    long cores = sysconf(_SC_NPROCESSORS_ONLN);
    int n = 0;
    while (n < most && n < cores - 1) {
        if ((hogs[n] = fork()) == 0)
            for (volatile unsigned long x = 0;; x++)
                ;
        n++;
    }
    usleep(100000); /* running before the first round trip */
    return n;
}

static void stop_hogs(pid_t *hogs, int n)
{
    for (int i = 0; i < n; i++) {
        kill(hogs[i], SIGKILL);
        waitpid(hogs[i], NULL, 0);
    }
}

struct words {
    _Atomic unsigned long there;
    char pad[120];
    _Atomic unsigned long back;
};

static void through_memory(double *t, int n)
{
    struct words *w = mmap(NULL, sizeof *w, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    if (w == MAP_FAILED)
        exit(1);
    if (fork() == 0) {
        for (unsigned long i = 1; i <= (unsigned long)n; i++) {
            while (atomic_load_explicit(&w->there, memory_order_acquire) < i)
                ;
            atomic_store_explicit(&w->back, i, memory_order_release);
        }
        _exit(0);
    }
    for (unsigned long i = 1; i <= (unsigned long)n; i++) {
        double t0 = now();
        atomic_store_explicit(&w->there, i, memory_order_release);
        while (atomic_load_explicit(&w->back, memory_order_acquire) < i)
            ;
        t[i - 1] = now() - t0;
    }
    wait(NULL);
}

int main(int argc, char **argv)
{
    int n = argc > 1 ? atoi(argv[1]) : 20000;
    if (n < 100)
        n = 100;
    double *t = malloc((size_t)n * sizeof *t);
    if (!t)
        return 1;
    through_kernel(t, n, 1);
    report("socket there, pipe back", t, n);
    through_memory(t, n);
    report("shared memory", t, n);
    through_kernel(t, n, 0);
    report("the same, blocking", t, n);
    pid_t hogs[64];
    int nhogs = start_hogs(hogs, 64);
    through_kernel(t, n, 0);
    stop_hogs(hogs, nhogs);
    report("blocking, other cores busy", t, n);
    free(t);
    return 0;
}
