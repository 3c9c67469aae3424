"""A ``map_with_state`` job run a few batches at a time (a backfill from cron), as a child process.

Usage: ``python _stop_job.py SPEC.json``; the spec holds ``ckpt``, ``out``, ``total``, ``step`` (and
optionally ``snapshot_every``, default ``step``, and ``stop``, default true):
each run resumes with get_or_create, runs at most ``step`` more batches (none past ``total``), writes
the state to ``out/state.json`` and stops cleanly (with ``"stop": false`` it just exits, as a script
that forgets ``stop()``: the context's at-exit hook stops the job). Run with every snapshot merged in the background
(`_harness.job_argv(merged=True)`) and ``snapshot_every=step``, the last batch of a run starts a
merge, which the stop waits for and names in one more commit record of that batch. The function's
output goes to a FileSink (one file per batch time).
"""

from __future__ import annotations

import json
import os
import sys
from typing import Any

import streamkeep as sk
from streamkeep.sinks import FileSink
from streamkeep.testing import ManualClock, state_of


def bump(key: str, value: int, state: sk.State) -> list[Any]:
    n = state.get_option(0) + value
    if n % 7 == 0:
        state.remove()
    else:
        state.update(n)
    return [key, n]


def build(ckpt: str, out: str, snapshot_every: int) -> sk.StreamingContext:
    ssc = sk.StreamingContext(1.0, checkpoint=ckpt, clock=ManualClock(), snapshot_every=snapshot_every, inline_delta_bytes=64)
    pairs = ssc.rate_stream(6, name="rate").map(lambda r: (f"k{(r[0] * 13) % 40}", r[0] % 4 + 1))
    counted = pairs.map_with_state(bump, name="counts", initial=[(f"k{i}", i) for i in range(0, 40, 3)])
    counted.write_to(FileSink(os.path.join(out, "counts"), name="counts", format="jsonl"))
    return ssc


def main() -> int:
    with open(sys.argv[1]) as f:
        spec = json.load(f)
    ckpt, out, total, step = spec["ckpt"], spec["out"], spec["total"], spec["step"]
    every = int(spec.get("snapshot_every", step))  # a run of all batches at once snapshots as the short runs do
    ssc = sk.StreamingContext.get_or_create(ckpt, lambda: build(ckpt, out, every))
    try:
        done = (ssc.last_batch_time_ms or 0) // 1000
        if done < total:
            ssc.run(max_batches=min(step, total - done))
        with open(os.path.join(out, "state.json"), "w") as f:
            json.dump(sorted(state_of(ssc, "counts")["set"]), f)
    finally:
        if spec.get("stop", True):
            ssc.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
