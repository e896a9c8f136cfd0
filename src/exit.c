/*
 * exit.c - what must be done before this process ends, whichever way it
 * ends: at exit(), and before core.die_by raises a signal that ends it
 * (which runs no atexit handler).
 *
 * Invariants:
 * - Hooks run in the reverse order of their registration, each at most
 *   once: running them empties the list, so an exit() after die_by's run
 *   (or a second die_by) does nothing twice.
 * - A forked child inherits the list: a hook checks that the process it
 *   acts for is the one running it.
 * - No hook touches Lua: die_by may run them from anywhere.
 */
#include <stdlib.h>

#include "orch.h"

#define EXIT_HOOKS_MAX 4

static exit_hook hooks[EXIT_HOOKS_MAX];
static int nhooks;

static void run_at_exit(void)
{
    exit_hooks_run();
}

void exit_hook_add(exit_hook fn)
{
    static int at_exit;
    for (int i = 0; i < nhooks; i++)
        if (hooks[i] == fn)
            return;
    if (!at_exit)
        at_exit = atexit(run_at_exit) == 0;
    if (nhooks < EXIT_HOOKS_MAX)
        hooks[nhooks++] = fn;
}

void exit_hooks_run(void)
{
    while (nhooks > 0)
        hooks[--nhooks]();
}
