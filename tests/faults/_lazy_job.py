"""A ``map_with_state`` job whose restores load lazily (issue 14), run as a child process.

Usage: ``python _lazy_job.py SPEC.json``; the spec holds ``ckpt``, ``out`` and ``total`` (run
until batch ``total`` is committed, resuming whatever was). Every snapshot gets a key index
(``ORDER_MIN_KEYS`` lowered to 1), so every restore after the first snapshot looks keys up in the
snapshot's columns until the dict is built (`MemoryStateStore.load_lazy`). Keys are removed and
come back. The function's output goes to a FileSink (one file per batch time); at the end the
state is written to ``out/state.json`` and whether the restore was lazy to ``out/lazy-<pid>``.
"""

from __future__ import annotations

import json
import os
import sys
from typing import Any

import streamkeep as sk
from streamkeep.checkpoint import _compact
from streamkeep.sinks import FileSink
from streamkeep.testing import ManualClock, state_of


def bump(key: str, value: int, state: sk.State) -> list[Any]:
    n = state.get_option(0) + value
    if n % 5 == 0:
        state.remove()
    else:
        state.update(n)
    return [key, n]


def build(ckpt: str, out: str) -> sk.StreamingContext:
    ssc = sk.StreamingContext(1.0, checkpoint=ckpt, clock=ManualClock(), snapshot_every=3, inline_delta_bytes=256)
    pairs = ssc.rate_stream(6, name="rate").map(lambda r: (f"k{(r[0] * 13) % 40}", r[0] % 4 + 1))
    counted = pairs.map_with_state(bump, name="counts", initial=[(f"k{i}", i) for i in range(0, 40, 3)])
    counted.write_to(FileSink(os.path.join(out, "counts"), name="counts", format="jsonl"))
    return ssc


def main() -> int:
    with open(sys.argv[1]) as f:
        spec = json.load(f)
    ckpt, out, total = spec["ckpt"], spec["out"], spec["total"]
    _compact.ORDER_MIN_KEYS = 1
    ssc = sk.StreamingContext.get_or_create(ckpt, lambda: build(ckpt, out))
    try:
        store = ssc._scheduler.executor.runtimes["counts"].store  # type: ignore[union-attr,attr-defined]
        if store.lazy:
            with open(os.path.join(out, f"lazy-{os.getpid()}"), "w") as f:
                f.write("lazy")
        done = (ssc.last_batch_time_ms or 0) // 1000
        if done < total:
            ssc.run(max_batches=total - done)
        with open(os.path.join(out, "state.json"), "w") as f:
            json.dump(sorted(state_of(ssc, "counts")["set"]), f)
    finally:
        ssc.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
