"""A chain of stateful operators whose outputs follow their state's key order, run as a child process.

Usage: ``python _order_job.py CHECKPOINT OUT_DIR TOTAL_BATCHES`` (env ``JOB_INLINE_DELTA_BYTES``:
the context's ``inline_delta_bytes``, 0 to write every delta to its own file; env
``JOB_SNAPSHOTS=merged``: every snapshot merged from the delta files in the background).
Resumed with `StreamingContext.get_or_create`, it runs until batch ``TOTAL_BATCHES`` is
committed. The input is a ``rate_stream`` (replayable) of string keys, new ones every batch and
several records of a key in one batch. The chain: ``map_with_state`` with a timeout (a key is removed past a
count and a later record of the batch sets it again: it goes last) -> ``update_state_by_key``
over its outputs (emits its whole state each batch, in key order; removes keys now and then)
-> ``reduce_by_key_and_window`` with ``inv_f`` and ``filter_f`` over those (emits its running
values in key order); ``state_snapshots()`` of the first; a plain window of the second. Every
output is written by a `FileSink` (jsonl, one file per batch time) or ``save_as_text_files``:
the fault test compares each file's bytes, unsorted, with an uncrashed run's.
"""

from __future__ import annotations

import operator
import os
import sys
from typing import Any

import streamkeep as sk
from streamkeep.sinks import FileSink
from streamkeep.testing import ManualClock


def word(i: int) -> str:
    """Keys that come back (w, v) and new ones every batch (n)."""
    return (f"n{i // 2}", f"w{i % 5}", f"v{(i * 7) % 11}")[i % 3]


def track(key: str, value: int, state: sk.State) -> tuple[str, int, str]:
    if state.is_timing_out():
        return (key, state.get(), "timeout")
    n = (state.get() if state.exists() else 0) + value
    if n >= 9:
        state.remove()
        return (key, n, "removed")
    state.update(n)
    return (key, n, "seen")


def total(values: list[int], old: int | None) -> int | None:
    t = (old or 0) + sum(values)
    return None if values and t % 7 == 0 else t


def positive(kv: tuple[Any, int]) -> bool:
    return kv[1] > 0


def build(ckpt: str, out: str) -> sk.StreamingContext:
    ssc = sk.StreamingContext(
        1.0,
        checkpoint=ckpt,
        clock=ManualClock(),
        snapshot_every=3,
        keep_commits=2,
        inline_delta_bytes=int(os.environ.get("JOB_INLINE_DELTA_BYTES", 4 * 1024)),
    )
    rate = ssc.rate_stream(12, name="rate")
    pairs = rate.map(lambda r: (word(r[0]), r[0] % 4 + 1))
    seen = pairs.map_with_state(track, name="seen", timeout=3.0)
    totals = seen.map(lambda o: (f"{o[2]}:{o[0]}", o[1])).update_state_by_key(total, name="totals")
    win = totals.reduce_by_key_and_window(operator.add, 3.0, 1.0, inv_f=operator.sub, filter_f=positive, name="win")
    outputs = {"seen": seen, "seen_state": seen.state_snapshots(), "totals": totals, "win": win}
    for name, stream in outputs.items():
        stream.write_to(FileSink(os.path.join(out, name), name=name, format="jsonl"))
    totals.window(2.0, 1.0, name="recent").save_as_text_files(os.path.join(out, "recent"))
    return ssc


def main() -> int:
    ckpt, out, total_s = sys.argv[1:4]
    n = int(total_s)
    from streamkeep.scheduler import _state_writer

    if os.environ.get("JOB_SNAPSHOTS") == "merged":  # every snapshot merged in the background (a big state's path)
        _state_writer.DIRECT_SNAPSHOT_BYTES = 0
    ssc = sk.StreamingContext.get_or_create(ckpt, lambda: build(ckpt, out))
    done = (ssc.last_batch_time_ms or 0) // 1000
    try:
        if done < n:
            ssc.run(max_batches=n - done)
        assert ssc.last_batch_time_ms == n * 1000, ssc.last_batch_time_ms
    finally:
        ssc.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
