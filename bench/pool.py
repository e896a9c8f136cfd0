#!/usr/bin/env python3
"""The Python side of `make bench`: the workloads of bench/run.lua through
multiprocessing.Pool (2 workers, the platform's default start method, fork
on Linux).

    python3 bench/pool.py WORKLOAD

runs one workload in this fresh process and prints `key value` lines
(seconds, microseconds or KiB) for bench/run.lua to read. Workloads:
submit N (workers), map default|1000 (chunksize), roundtrip, busy,
payload SIZE, table, rawpipe SIZE (not a pool: the limit for payload),
memory, shutdown. Only the workload itself is
timed: interpreter start-up, pool start-up and warm-up are not.
"""
import multiprocessing as mp
import os
import sys
import time

WORKERS = 2
N_SUBMIT = 100_000
N_MAP, CHUNK = 1_000_000, 1000
N_ROUNDTRIP = 10_000
N_BUSY = 4000        # round trips at most while one worker is busy
HOG_SECONDS = 1.0    # CPU seconds of the task that keeps that worker busy
N_TABLE = 100_000    # integers in the list that makes a round trip
SHUTDOWN_WORKERS = 16
SETTLE = 0.3  # seconds an idle pool is left alone before it is measured
# `payload SIZE`: bytes, and how many round trips are timed (the median is
# kept). Same as bench/run.lua's PAYLOAD.
PAYLOAD = {"64k": (64 << 10, 200), "1m": (1 << 20, 50),
           "16m": (16 << 20, 7), "64m": (64 << 20, 3)}


def inc(x):
    return x + 1


def echo(v):
    return v


def hog(seconds):
    """Keeps a worker's CPU busy for `seconds` of its own CPU time."""
    t0 = time.process_time()
    while time.process_time() - t0 < seconds:
        pass
    return True


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


def print_latency(times):
    times.sort()
    print("mean_us", sum(times) / len(times) * 1e6)
    print("median_us", times[len(times) // 2] * 1e6)
    print("p99_us", times[int(len(times) * 0.99)] * 1e6)


def bench_submit(workers=WORKERS):
    workers = int(workers)
    with mp.Pool(workers) as pool:
        warm(pool, 2 * workers)
        t0 = time.perf_counter()
        futures = [pool.apply_async(inc, (i,)) for i in range(N_SUBMIT)]
        for i, f in enumerate(futures):
            assert f.get() == i + 1
        secs = time.perf_counter() - t0
    print("seconds", secs)


def bench_map(chunk="1000"):
    items = list(range(N_MAP))
    with mp.Pool(WORKERS) as pool:
        warm(pool)
        t0 = time.perf_counter()
        if chunk == "default":
            out = pool.map(inc, items)
        else:
            out = pool.map(inc, items, chunksize=int(chunk))
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
    print_latency(times)


def bench_busy():
    """Round trips of tiny tasks while the other worker runs a CPU-bound
    task (the shared task queue hands them to the idle worker)."""
    times = []
    with mp.Pool(WORKERS) as pool:
        warm(pool)
        busy = pool.apply_async(hog, (HOG_SECONDS,))
        clock = time.perf_counter
        while len(times) < N_BUSY and not busy.ready():
            t0 = clock()
            pool.apply(inc, (1,))
            times.append(clock() - t0)
        busy.get()
    print("samples", len(times))
    print_latency(times)


def echo_median(value, repeat, n):
    """The median time of `repeat` round trips of value (of length n)."""
    times = []
    with mp.Pool(WORKERS) as pool:
        warm(pool)
        for _ in range(repeat):
            t0 = time.perf_counter()
            back = pool.apply(echo, (value,))
            times.append(time.perf_counter() - t0)
            assert len(back) == n
    times.sort()
    return times[len(times) // 2]


def bench_payload(size):
    nbytes, repeat = PAYLOAD[size]
    print("seconds", echo_median(b"x" * nbytes, repeat, nbytes))


def bench_table():
    print("seconds", echo_median(list(range(1, N_TABLE + 1)), 20, N_TABLE))


def read_exactly(fd, buf):
    view, got = memoryview(buf), 0
    while got < len(buf):
        n = os.readv(fd, [view[got:]])
        if n == 0:
            raise EOFError("pipe closed early")
        got += n


def bench_rawpipe(size):
    """The limit for `payload SIZE`: the same bytes to a forked child
    through one pipe and back through another, read into a buffer made
    before the clock starts, no encoding at all."""
    nbytes, repeat = PAYLOAD[size]
    s = b"x" * nbytes
    down_r, down_w = os.pipe()
    up_r, up_w = os.pipe()
    pid = os.fork()
    if pid == 0:
        buf = bytearray(nbytes)
        for _ in range(repeat):
            read_exactly(down_r, buf)
            write_all(up_w, buf)
        os._exit(0)
    buf, times = bytearray(nbytes), []
    for _ in range(repeat):
        t0 = time.perf_counter()
        write_all(down_w, s)
        read_exactly(up_r, buf)
        times.append(time.perf_counter() - t0)
    os.waitpid(pid, 0)
    times.sort()
    print("seconds", times[len(times) // 2])


def write_all(fd, data):
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


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
    "submit": bench_submit, "map": bench_map, "roundtrip": bench_roundtrip,
    "busy": bench_busy, "payload": bench_payload, "table": bench_table,
    "rawpipe": bench_rawpipe, "memory": bench_memory, "shutdown": bench_shutdown,
}

if __name__ == "__main__":
    if len(sys.argv) not in (2, 3) or sys.argv[1] not in WORKLOADS:
        sys.exit("usage: python3 bench/pool.py " + "|".join(WORKLOADS) + " [PARAM]")
    WORKLOADS[sys.argv[1]](*sys.argv[2:])
