"""Does a process pool pay off for per-record functions on this machine? (issue 3, executor)

For a cheap, a medium and a CPU-heavy per-record function, compares in one run:

* in-process: ``Batch(partitions).map(f).collect()`` (what the local executor does);
* a warm ``concurrent.futures.ProcessPoolExecutor(2)``: the batch's partitions are
  split over the workers; the function travels with cloudpickle (as user functions
  would) and the records are pickled to the workers and the results back.

The pool is started once before timing (as an executor would keep it); its start-up
cost is printed separately. Run: ``.venv/bin/python bench/process_pool.py [--quick]``.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from typing import Any

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))

import cloudpickle  # noqa: E402

from streamkeep import Batch  # noqa: E402


def cheap(x: int) -> int:
    return x * 2 + 1


def medium(x: int) -> int:
    acc = x
    for i in range(30):
        acc = (acc * 31 + i) % 1_000_003
    return acc


def heavy(x: int) -> int:
    acc = x
    for i in range(300):
        acc = (acc * 31 + i) % 1_000_003
    return acc


def _work(fn_bytes: bytes, part: list[Any]) -> list[Any]:
    fn = cloudpickle.loads(fn_bytes)
    return Batch([part]).map(fn).collect()


def _split(records: list[Any], n: int) -> list[list[Any]]:
    size = -(-len(records) // n)
    return [records[i : i + size] for i in range(0, len(records), size)]


def in_process(fn: Callable[[int], int], parts: list[list[int]]) -> list[int]:
    return Batch(parts).map(fn).collect()


def pooled(pool: ProcessPoolExecutor, fn: Callable[[int], int], parts: list[list[int]]) -> list[int]:
    fn_bytes = cloudpickle.dumps(fn)
    futures = [pool.submit(_work, fn_bytes, p) for p in parts]
    out: list[int] = []
    for f in futures:
        out.extend(f.result())
    return out


def _time(f: Callable[[], Any], repeats: int) -> tuple[float, Any]:
    ts, result = [], None
    for _ in range(repeats):
        t0 = time.perf_counter()
        result = f()
        ts.append(time.perf_counter() - t0)
    return min(ts), result


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--records", type=int, default=200_000)
    args = ap.parse_args()
    n = 50_000 if args.quick else args.records
    repeats = 2 if args.quick else 3
    records = list(range(n))
    workers = 2
    print(f"python {sys.version.split()[0]}, {os.cpu_count()} CPUs, {n:,} int records, best of {repeats}")
    print(f"load average at start: {' '.join(f'{x:.2f}' for x in os.getloadavg())} (other processes on these CPUs skew every number)")
    t0 = time.perf_counter()
    pool = ProcessPoolExecutor(workers)
    list(pool.map(abs, range(workers * 4)))  # start and warm the workers
    print(f"pool of {workers} processes started in {(time.perf_counter() - t0) * 1e3:.0f} ms (not included below)")
    try:
        for fn in (cheap, medium, heavy):
            variants: dict[str, Callable[[], list[int]]] = {"in-process, 1 partition": lambda fn=fn: in_process(fn, [records])}
            for n_parts in (2, 8):
                parts = _split(records, n_parts)
                variants[f"pool({workers}), {n_parts} partitions"] = lambda fn=fn, parts=parts: pooled(pool, fn, parts)
            times: dict[str, list[float]] = {k: [] for k in variants}
            expect = None
            for _ in range(repeats):  # interleaved, so every variant sees the same machine load
                for label, run in variants.items():
                    t0 = time.perf_counter()
                    got = run()
                    times[label].append(time.perf_counter() - t0)
                    if expect is None:
                        expect = got
                    elif got != expect:
                        raise SystemExit("pool result differs")
            single = min(times["in-process, 1 partition"])
            print(f"\n{fn.__name__} ({single / n * 1e6:.2f} us per record in-process):")
            for label, ts in times.items():
                t = min(ts)
                print(
                    f"  {label:28s} {t * 1e3:9.1f} ms   speed-up vs in-process {single / t:5.2f}x   (runs {', '.join(f'{x * 1e3:.0f}' for x in ts)} ms)"
                )
        _break_even(pool, n)
    finally:
        pool.shutdown()
    print(f"load average at end: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")


def _identity(x: int) -> int:
    return x


def _break_even(pool: ProcessPoolExecutor, n: int) -> None:
    """Per-record cost above which 2 workers beat one process, from the two measured costs."""
    records = list(range(n))
    rt, _ = _time(lambda: pooled(pool, _identity, _split(records, 2)), 3)
    ident, _ = _time(lambda: in_process(_identity, [records]), 3)
    overhead_us = (rt - ident / 2) / n * 1e6
    print(
        f"\nbreak-even: the pool adds ~{overhead_us:.2f} us per record (pickling both ways, IPC, merging); with 2 workers it"
        f" can only pay off once a record costs more than ~{2 * overhead_us:.1f} us in-process, and only when both cores are idle"
        f" (ideal 2x speed-up is the ceiling)."
    )


if __name__ == "__main__":
    main()
