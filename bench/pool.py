#!/usr/bin/env python3
"""The Python side of `make bench`: the workloads of bench/run.lua through
multiprocessing.Pool (2 workers, the platform's default start method, fork
on Linux).

    python3 bench/pool.py WORKLOAD

runs one workload in this fresh process and prints `key value` lines
(seconds, microseconds or KiB) for bench/run.lua to read. Workloads:
submit, map, map_default, roundtrip, memory, shutdown. Only the workload itself is
timed: interpreter start-up, pool start-up and warm-up are not.
"""
import multiprocessing as mp
import sys
import time

WORKERS = 2
N_SUBMIT = 100_000
N_MAP, CHUNK = 1_000_000, 1000
N_ROUNDTRIP = 10_000
SHUTDOWN_WORKERS = 16
SETTLE = 0.3  # seconds an idle pool is left alone before it is measured


def inc(x):
    return x + 1


def warm(pool, n=WORKERS * 2):
    pool.map(inc, range(n), chunksize=1)


def private_kib(pid):
    """Private_Clean + Private_Dirty of a process, KiB (smaps_rollup)."""
    total = 0
    with open(f"/proc/{pid}/smaps_rollup") as f:
        for line in f:
            if line.startswith(("Private_Clean:", "Private_Dirty:")):
                total += int(line.split()[1])
    return total


def bench_submit():
    with mp.Pool(WORKERS) as pool:
        warm(pool)
        t0 = time.perf_counter()
        futures = [pool.apply_async(inc, (i,)) for i in range(N_SUBMIT)]
        for i, f in enumerate(futures):
            assert f.get() == i + 1
        secs = time.perf_counter() - t0
    print("seconds", secs)


def bench_map():
    items = list(range(N_MAP))
    with mp.Pool(WORKERS) as pool:
        warm(pool)
        t0 = time.perf_counter()
        out = pool.map(inc, items, chunksize=CHUNK)
        secs = time.perf_counter() - t0
    assert len(out) == N_MAP and out[-1] == N_MAP
    print("seconds", secs)


def bench_map_default():
    """pool.map with its default chunksize (ceil(n / (4 * workers)))."""
    items = list(range(N_MAP))
    with mp.Pool(WORKERS) as pool:
        warm(pool)
        t0 = time.perf_counter()
        out = pool.map(inc, items)
        secs = time.perf_counter() - t0
    assert len(out) == N_MAP and out[-1] == N_MAP
    print("seconds", secs)


def bench_roundtrip():
    times = [0.0] * N_ROUNDTRIP
    with mp.Pool(WORKERS) as pool:
        warm(pool)
        clock = time.perf_counter
        for i in range(N_ROUNDTRIP):
            t0 = clock()
            pool.apply(inc, (i,))
            times[i] = clock() - t0
    times.sort()
    print("mean_us", sum(times) / len(times) * 1e6)
    print("median_us", times[len(times) // 2] * 1e6)
    print("p99_us", times[int(len(times) * 0.99)] * 1e6)


def bench_memory():
    with mp.Pool(WORKERS) as pool:
        warm(pool)
        time.sleep(SETTLE)
        kib = [private_kib(p.pid) for p in pool._pool]
    print("private_kib", sum(kib) / len(kib))


def bench_shutdown():
    pool = mp.Pool(SHUTDOWN_WORKERS)
    warm(pool, SHUTDOWN_WORKERS * 2)
    time.sleep(SETTLE)
    t0 = time.perf_counter()
    pool.terminate()
    pool.join()
    print("seconds", time.perf_counter() - t0)


WORKLOADS = {
    "submit": bench_submit, "map": bench_map, "map_default": bench_map_default,
    "roundtrip": bench_roundtrip,
    "memory": bench_memory, "shutdown": bench_shutdown,
}

if __name__ == "__main__":
    if len(sys.argv) != 2 or sys.argv[1] not in WORKLOADS:
        sys.exit("usage: python3 bench/pool.py " + "|".join(WORKLOADS))
    WORKLOADS[sys.argv[1]]()
