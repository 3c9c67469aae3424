"""Event-time windowed count vs the processing-time window of the same job (issue 16).

Both jobs count records per key in 10-second windows over the same input: 20 batches
of keyed records whose event times advance with the batches, a few seconds out of order.

* event time: ``with_event_time(ts, max_delay=5 s).tumbling_window(10 s).count_by_key()``;
* processing time: ``map(k -> (k, 1)).reduce_by_key_and_window(add, 10 s, 10 s)``.

Each runs with ``ssc.run()`` under a ManualClock (no waiting for the wall clock), with a
checkpoint (``--no-checkpoint`` to leave it out); the best of ``--repeats`` is printed as
records/s with the ratio, measured in one run. Run:
``.venv/bin/python bench/event_time.py [--quick]``.
"""

from __future__ import annotations

import argparse
import operator
import os
import random
import sys
import tempfile
import time
import warnings
from typing import Any

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))

import streamkeep as sk  # noqa: E402
from streamkeep.testing import ManualClock  # noqa: E402

BATCHES = 20


def make_input(per_batch: int, keys: int) -> list[list[tuple[int, int]]]:
    """(key, event ms): batch i holds events of second i, up to 3 s late."""
    rng = random.Random(16)
    return [[(rng.randrange(keys), i * 1000 - rng.randrange(3000)) for _ in range(per_batch)] for i in range(BATCHES)]


def _event_s(kv: tuple[int, int]) -> float:
    return kv[1] / 1000  # epoch seconds


def _one(kv: tuple[int, int]) -> tuple[int, int]:
    return (kv[0], 1)


def run(kind: str, data: list[list[tuple[int, int]]], checkpoint: bool) -> tuple[float, int]:
    """(seconds, windows emitted) of one run."""
    with tempfile.TemporaryDirectory(prefix="sk-bench-et-") as tmp:
        ssc = sk.StreamingContext(1.0, clock=ManualClock(), checkpoint=os.path.join(tmp, "ckpt") if checkpoint else None)
        src = ssc.queue_stream(data, name="in")
        out: Any
        if kind == "event":
            out = src.with_event_time(_event_s, max_delay=5).tumbling_window(10).count_by_key(name="w")
        else:
            out = src.map(_one).reduce_by_key_and_window(operator.add, 10, 10, name="w")
        emitted = [0]
        out.foreach_batch(lambda b: emitted.__setitem__(0, emitted[0] + b.count()))
        t0 = time.perf_counter()
        ssc.run(max_batches=BATCHES)
        elapsed = time.perf_counter() - t0
        ssc.stop()
    return elapsed, emitted[0]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="5k records per batch, 2 repeats")
    ap.add_argument("--per-batch", type=int, default=50_000)
    ap.add_argument("--keys", type=int, default=1000)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--no-checkpoint", action="store_true")
    args = ap.parse_args()
    per_batch, repeats = (5000, 2) if args.quick else (args.per_batch, args.repeats)
    data = make_input(per_batch, args.keys)
    total = per_batch * BATCHES
    rates = {}
    for kind in ("processing", "event"):
        best = min(run(kind, data, not args.no_checkpoint)[0] for _ in range(repeats))
        rates[kind] = total / best
        print(f"{kind + ' time window count':34} {rates[kind]:>12,.0f} records/s")
    print(f"{'event / processing time':34} {rates['event'] / rates['processing']:>12.2f}x")


if __name__ == "__main__":
    warnings.simplefilter("ignore")
    main()
