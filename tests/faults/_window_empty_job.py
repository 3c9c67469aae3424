"""A windowed job whose input has runs of empty batches in the middle, run as a child process.

Usage: ``python _window_empty_job.py CHECKPOINT OUT_DIR TOTAL_BATCHES`` (env
``JOB_INLINE_DELTA_BYTES``: the context's ``inline_delta_bytes``, 0 to write every delta to
its own file). Resumed with `StreamingContext.get_or_create`, it runs until batch
``TOTAL_BATCHES`` is committed. The input is a queue (its planned batches are materialised
into the checkpoint, so a replay reads them again) of batches with records separated by
runs of empty ones. Plain windows (their slices keep each batch's partitions; the empty
ones are one empty run per run of batches) are written with ``save_as_text_files``, one
file per partition, so that a replay must rewrite the same partition layout; the keyed
windows with a `FileSink`. At the end every stateful operator's state goes to
``OUT_DIR/state.json``.
"""

from __future__ import annotations

import json
import operator
import os
import sys

import streamkeep as sk
from streamkeep.sinks import FileSink
from streamkeep.testing import ManualClock, state_of, stateful_operators_of

#: Records of each batch: a few, then a run of empty batches, one with records, another run, ...
RECORDS: dict[int, list[tuple[str, int]]] = {1: [("a", 1), ("b", 2)], 2: [("a", 3)], 3: [("c", 1)], 12: [("b", 5), ("a", 1)], 17: [("c", 2)]}


def build(ckpt: str, out: str, total: int) -> sk.StreamingContext:
    ssc = sk.StreamingContext(
        1.0,
        checkpoint=ckpt,
        clock=ManualClock(),
        snapshot_every=4,
        keep_commits=2,
        inline_delta_bytes=int(os.environ.get("JOB_INLINE_DELTA_BYTES", 4 * 1024)),
    )
    q = ssc.queue_stream([RECORDS.get(i, []) for i in range(1, total + 1)], name="q", default=[])
    three = q.repartition(3)
    every2 = q.window(2.0, 2.0, name="every2")  # a batch every other time: the window below sees no batch in between
    three.window(5.0, 1.0, name="w3").save_as_text_files(os.path.join(out, "w3"))
    q.window(4.0, 2.0, name="w").save_as_text_files(os.path.join(out, "w"))
    every2.window(6.0, 2.0, name="w_of_w").save_as_text_files(os.path.join(out, "w_of_w"))
    keyed = {
        "r_inv": q.reduce_by_key_and_window(operator.add, 4.0, 1.0, inv_f=operator.sub, name="r_inv"),
        "r": q.reduce_by_key_and_window(operator.add, 3.0, 1.0, name="r"),
        "n": q.count_by_window(6.0, 2.0, name="n"),
    }
    for name, s in keyed.items():
        s.write_to(FileSink(os.path.join(out, name), name=name, format="jsonl"))
    return ssc


def main() -> int:
    ckpt, out, total_s = sys.argv[1:4]
    total = int(total_s)
    ssc = sk.StreamingContext.get_or_create(ckpt, lambda: build(ckpt, out, total))
    done = (ssc.last_batch_time_ms or 0) // 1000
    try:
        if done < total:
            ssc.run(max_batches=total - done)
        assert ssc.last_batch_time_ms == total * 1000, ssc.last_batch_time_ms
        state = {name: state_of(ssc, name) for name in stateful_operators_of(ssc)}
        with open(os.path.join(out, "state.json"), "w") as f:
            json.dump(state, f, indent=1, sort_keys=True, default=repr)
    finally:
        ssc.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
