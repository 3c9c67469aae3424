"""The per-batch cost of checkpointing on Ray (who writes the state files), ratios in one run (issue 12).

Each job runs with and without a checkpoint (a local temp directory), on the local
executor and on a local Ray with W = 2 partitions; the checkpoint's cost per batch is the
difference divided by the batches. Jobs (``update_state_by_key``, ManualClock, adaptive
snapshots as by default):

* **tiny**: one record per batch (its delta rides inline in the commit record);
* **changing**: 4,000 records per batch over 100k keys, every delta a file, a snapshot
  now and then (about 40 k keys in state after a few batches): the state-writing path.

Ray's start and the actors' are excluded (a warm-up batch first); best of 3. Also printed:
the median of the commit step itself (state files written, commit record appended: the
``commit_ms`` a listener gets), over every checkpointed batch: less noisy than the differences.
Run: ``.venv/bin/python bench/ray_commit.py [--quick]``.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile
import time
from typing import Any

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path[:] = [p for p in sys.path if os.path.abspath(p or ".") != HERE]  # bench/ray.py must not shadow ray
sys.path.insert(0, os.path.dirname(HERE))
os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")

import streamkeep as sk  # noqa: E402
from streamkeep.testing import ManualClock  # noqa: E402


def add(values: list[int], old: int | None) -> int:
    return (old or 0) + sum(values)


def pair(w: str) -> tuple[str, int]:
    return (w, 1)


class _Commits:
    """A listener keeping each batch's commit step duration."""

    def __init__(self) -> None:
        self.ms: list[float] = []

    def on_batch_completed(self, info: Any) -> None:
        self.ms.append(info.commit_ms)


COMMIT_MS: dict[tuple[str, str], list[float]] = {}


def _time_job(executor: Any, batches: list[list[Any]], reps: int, ckpt: bool, label: tuple[str, str] = ("", "")) -> float:
    """Best of `reps` runs of the batches (seconds per batch), after a warm-up batch."""
    best = float("inf")
    for _ in range(reps):
        d = tempfile.mkdtemp(prefix="sk-bench-") if ckpt else None
        try:
            ssc = sk.StreamingContext(1.0, checkpoint=d, clock=ManualClock(), executor=executor)
            if ckpt:
                commits = _Commits()
                ssc.add_listener(commits)
            ssc.queue_stream([batches[0], *batches], name="in").map(pair).update_state_by_key(add, name="state").foreach_batch(lambda b: b.count())
            ssc.run(1)
            t0 = time.perf_counter()
            ssc.run(len(batches))
            best = min(best, (time.perf_counter() - t0) / len(batches))
            if ckpt:
                COMMIT_MS.setdefault(label, []).extend(commits.ms[1:])  # without the warm-up batch
            ssc.stop()
        finally:
            if d:
                shutil.rmtree(d, ignore_errors=True)
    return best


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true")
    args = ap.parse_args()
    q = 4 if args.quick else 1
    reps = 2 if args.quick else 3
    jobs = {
        "tiny (1 record/batch)": [[f"t{b % 3}"] for b in range(120 // q)],
        "changing (4k records/batch, 100k keys)": [[f"k{(i * 7919 + b * 4001) % 100_000}" for i in range(4000)] for b in range(60 // q)],
    }
    rows: dict[str, dict[str, float]] = {}
    for name, batches in jobs.items():
        rows[name] = {"local": _time_job("local", batches, reps, False), "local+ckpt": _time_job("local", batches, reps, True, (name, "local"))}
    import ray

    from streamkeep.executors import RayExecutor

    ray.init(num_cpus=2, include_dashboard=False, _node_ip_address="127.0.0.1", log_to_driver=False, configure_logging=False)
    try:
        ex = RayExecutor(num_partitions=2, keep_actors=True)
        for name, batches in jobs.items():
            rows[name]["ray"] = _time_job(ex, batches, reps, False)
            rows[name]["ray+ckpt"] = _time_job(ex, batches, reps, True, (name, "ray"))
        ex.shutdown()
    finally:
        ray.shutdown()
    for name, r in rows.items():
        cells = ", ".join(f"{k}: {v * 1e3:.2f} ms" for k, v in r.items())
        print(f"{name}: per batch {cells}")
        print(
            f"  checkpoint cost per batch: local {(r['local+ckpt'] - r['local']) * 1e3:.2f} ms, "
            f"Ray W=2 {(r['ray+ckpt'] - r['ray']) * 1e3:.2f} ms"
        )
        med = {k: statistics.median(COMMIT_MS[(name, k)]) for k in ("local", "ray")}
        print(f"  commit step median: local {med['local']:.2f} ms, Ray W=2 {med['ray']:.2f} ms ({med['ray'] / med['local']:.2f}x)")


if __name__ == "__main__":
    main()
