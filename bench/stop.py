"""Python side of bench/stop.lua: the same stop workloads with the stdlib.

fail_fast: seed 004's pattern -- ProcessPoolExecutor, a Manager Event passed
to every task, wait(FIRST_EXCEPTION), cancel() every future, event.set(),
then wait until every future is done ("quiet"). Measured from the moment
the failing task raised (time.monotonic() in the task) to quiet.
terminate: seed 002's pattern -- Pool.terminate() then join() with every
worker busy. Prints one line per workload: "<name> <seconds>".
Each is the best of `rounds` runs (shared machines are noisy).
Usage: python3 bench/stop.py [tasks] [workers_for_terminate] [rounds]
"""
import sys
import time
from concurrent.futures import ProcessPoolExecutor, wait, FIRST_EXCEPTION
from multiprocessing import Manager, Pool


class Failed(Exception):
    pass


def cooperative(event, name, fail_at):
    # sleeps a little, checks the shared event each step
    while True:
        time.sleep(0.01)
        if name == 0 and time.monotonic() >= fail_at:
            raise Failed(time.monotonic())
        if event.is_set():
            return "stopped"


def busy(event, name, fail_at):
    # a CPU loop; Python cannot interrupt it, so it checks the event now and
    # then (each check is a round trip to the Manager process)
    n = 0
    while True:
        n += 1
        if n % 2000 == 0:
            if name == 0 and time.monotonic() >= fail_at:
                raise Failed(time.monotonic())
            if event.is_set():
                return "stopped"


def fail_fast(executor, manager, task, ntasks):
    event = manager.Event()
    fail_at = time.monotonic() + 1.0
    futures = [executor.submit(task, event, i, fail_at) for i in range(ntasks)]
    done, _ = wait(futures, return_when=FIRST_EXCEPTION)
    failed_at = None
    for f in done:
        e = f.exception()
        if e is not None:
            failed_at = e.args[0]
    for f in futures:
        f.cancel()
    event.set()
    wait(futures)
    return time.monotonic() - failed_at


def spin(_):
    while True:
        pass


def terminate(nworkers):
    pool = Pool(nworkers)
    pool.map_async(spin, range(nworkers))
    time.sleep(1.0)
    t0 = time.monotonic()
    pool.terminate()
    pool.join()
    return time.monotonic() - t0


if __name__ == "__main__":
    ntasks = int(sys.argv[1]) if len(sys.argv) > 1 else 100
    nworkers = int(sys.argv[2]) if len(sys.argv) > 2 else 32
    rounds = int(sys.argv[3]) if len(sys.argv) > 3 else 2
    with Manager() as manager:
        with ProcessPoolExecutor(ntasks) as executor:
            # start every worker first, so that all tasks run at once
            list(executor.map(time.sleep, [0.2] * ntasks))
            for name, task in (("fail_fast_cooperative", cooperative), ("fail_fast_busy", busy)):
                best = min(fail_fast(executor, manager, task, ntasks) for _ in range(rounds))
                print("%s %.6f" % (name, best), flush=True)
    best = min(terminate(nworkers) for _ in range(rounds))
    print("terminate %.6f" % best, flush=True)
