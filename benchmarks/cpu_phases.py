"""Whether each CPU of this machine keeps its speed: one process pinned to each CPU, all at once,
counting the iterations of a plain Python loop in short windows. On a CPU of its own a loop's count
stays within a few percent of its median; a count that drops for a while means the CPU ran slower
then, whatever the program: another guest's work on the same physical core (its other hyperthread),
or a host that time-slices the virtual CPU. On the 2-core AMD EPYC Zen 4 of docs/benchmarks.md each
CPU ran at about 55% of its speed in a fifth of the 50 ms windows, mostly one CPU at a time: PyTorch's
operators, which split their work between the threads in fixed shares, then wait for the slower one.

    python benchmarks/cpu_phases.py --seconds 20
"""
from __future__ import annotations

import argparse
import multiprocessing
import os
import statistics
import time

SLOW = 0.7  # a window counts as slow below this share of its CPU's median


def count_windows(cpu: int, seconds: float, window: float, results) -> None:
    """Loop iterations per `window` seconds on `cpu` alone, for `seconds`."""
    os.sched_setaffinity(0, {cpu})
    counts, end = [], time.perf_counter() + seconds
    while time.perf_counter() < end:
        started, n = time.perf_counter(), 0
        while time.perf_counter() - started < window:
            for _ in range(1000):
                pass
            n += 1
        counts.append(n)
    results[cpu] = counts


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--window", type=float, default=0.05, help="seconds per window")
    args = parser.parse_args()
    cpus = sorted(os.sched_getaffinity(0))
    with multiprocessing.Manager() as manager:
        results = manager.dict()
        workers = [multiprocessing.Process(target=count_windows, args=(cpu, args.seconds, args.window, results))
                   for cpu in cpus]
        for worker in workers:
            worker.start()
        for worker in workers:
            worker.join()
        counts = dict(results)
    slow = {}
    for cpu in cpus:
        median = statistics.median(counts[cpu])
        slow[cpu] = {i for i, n in enumerate(counts[cpu]) if n < SLOW * median}
        print(f"CPU {cpu}: {len(slow[cpu])} of {len(counts[cpu])} windows below {SLOW:.0%} of its median; "
              f"slowest at {min(counts[cpu]) / median:.0%}")
    if len(cpus) > 1:
        together = set.intersection(*slow.values())
        print(f"windows slow on every CPU at once: {len(together)}")


if __name__ == "__main__":
    main()
