/*
 * heap.c - the C heap's fresh pages faulted in by one call.
 *
 * The state's small blocks come from the C allocator's heap, which grows
 * at its top (brk) a little at a time, and each fresh 4 KiB page it grows
 * by costs a page fault on first touch. On a virtual machine a fault
 * costs microseconds; a million pending tasks (370 MB of futures and
 * packed tasks) took a microsecond more each than ten thousand, the first
 * touch of their pages. So after each allocation of the state (alloc_big.c
 * calls heap_grown), the heap's top is looked at, and pages it grew by
 * since are populated at once (MADV_POPULATE_WRITE): one system call for
 * the pages the allocator is about to hand out anyway, about 40% less
 * per page than faulting them one by one here (bench/README.md).
 *
 * Looking costs a comparison: sbrk(0) returns the allocator's own record
 * of the top without a system call. At most POPULATE_MAX bytes are
 * populated at a time (a heap grown further at once is left to fault as
 * it is touched); a heap that shrank is followed down. On a kernel
 * without MADV_POPULATE_WRITE (before 5.14) the first refusal turns this
 * off. A forked child inherits the mark with the heap, and goes on from
 * there.
 */
#include <errno.h>
#include <stdint.h>
#include <sys/mman.h>
#include <unistd.h>

#include "orch.h"

#define POPULATE_MAX ((size_t)1 << 20)
#define PAGE ((uintptr_t)4096)

#ifdef MADV_POPULATE_WRITE
static char *populated; /* the heap's top when last looked at */
static int off;

void heap_grown(void)
{
    if (off)
        return;
    char *top = sbrk(0);
    if (top == (char *)-1 || top <= populated || populated == NULL) {
        populated = top == (char *)-1 ? NULL : top; /* first look, or shrunk */
        return;
    }
    char *from = (char *)((uintptr_t)populated & ~(PAGE - 1)); /* its page is the heap's */
    size_t n = (size_t)(top - from);
    if (n <= POPULATE_MAX && madvise(from, n, MADV_POPULATE_WRITE) < 0 && errno == EINVAL)
        off = 1;
    populated = top;
}
#else
void heap_grown(void)
{
}
#endif
