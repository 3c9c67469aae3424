"""A deterministic stateful streaming job, run as a child process by the fault tests.

Usage: ``python _job.py CHECKPOINT OUT_DIR IN_DIR TOTAL_BATCHES`` (env ``JOB_STORAGE_OPTIONS``:
fsspec options as JSON, for s3:// checkpoints; env ``JOB_INLINE_DELTA_BYTES``: the context's
``inline_delta_bytes``, 0 to write every delta to its own file; env ``JOB_COMPACT_HELPER``: merge
every snapshot in a helper process; env ``JOB_SNAPSHOTS=merged``: merge every snapshot in the background, as
a big state's is, instead of snapshotting this small state in its batch; env ``JOB_RAY_ADDRESS``: run on the Ray cluster at that address
with 3 key partitions instead of the local executor; env ``JOB_EXTRA_OPERATOR``: one more stateful operator,
``extra``, a code change that keeps every other operator: a new graph description; env ``JOB_PLAN_FILES``: a file per plan,
as on S3, instead of plan logs). The job is resumed with
`StreamingContext.get_or_create` and runs until batch ``TOTAL_BATCHES`` is committed,
whatever was committed before. Inputs are replayable: ``rate_stream`` and a
``text_file_stream`` whose files a feeder output writes deterministically (one per
batch time, atomically, never changed). Every output goes to a `FileSink` (one
file per batch time, rewritten identically on replay). At the end the job dumps
every stateful operator's full state to ``OUT_DIR/state.json``.

Prints ``READY`` once the context is restored (the random-kill test waits for it).
"""

from __future__ import annotations

import json
import operator
import os
import sys
import time

import streamkeep as sk
from streamkeep.executors import RayExecutor
from streamkeep.sinks import FileSink
from streamkeep.testing import ManualClock, state_of, stateful_operators_of

INTERVAL_MS = 1000
FEED_UNTIL = 0.6  # the feeder stops after this fraction of the batches, so keys time out


def update_total(values: list[int], old: int | None) -> int | None:
    total = (old or 0) + sum(values)
    return None if total % 11 == 0 and values else total  # sometimes removes a key


def track(word: str, value: int | None, state: sk.dstream.State) -> tuple[str, int, str]:  # type: ignore[name-defined]
    if state.is_timing_out():
        return (word, state.get(), "timeout")
    n = (state.get() if state.exists() else 0) + (value or 0)
    if n >= 9:
        state.remove()
        return (word, n, "removed")
    state.update(n)
    return (word, n, "seen")


def words_for(t_ms: int) -> str:
    k = t_ms // INTERVAL_MS
    return f"w{k % 5} w{(k * 3) % 7} x{k % 2}\nw{(k * 7) % 4}\n"


def build(ckpt: str, out: str, inp: str, total: int, storage_options: dict | None) -> sk.StreamingContext:
    inline = int(os.environ.get("JOB_INLINE_DELTA_BYTES", 4 * 1024))
    ray_address = os.environ.get("JOB_RAY_ADDRESS")
    executor = RayExecutor(ray_address, num_partitions=3) if ray_address else "local"
    ssc = sk.StreamingContext(
        1.0,
        checkpoint=ckpt,
        clock=ManualClock(),
        snapshot_every=3,
        keep_commits=2,
        storage_options=storage_options,
        inline_delta_bytes=inline,
        executor=executor,
    )
    rate = ssc.rate_stream(5, name="rate")
    pairs = rate.map(lambda r: (r[0] % 4, r[0]))
    totals = pairs.update_state_by_key(update_total, name="totals")
    win = pairs.reduce_by_key_and_window(operator.add, 3.0, 2.0, inv_f=operator.sub, name="win")
    counts = pairs.map_values(lambda v: 1).reduce_by_key_and_window(operator.add, 4.0, 1.0, name="win_plain")
    lines = ssc.text_file_stream(inp, name="files")
    tracked = lines.flat_map(str.split).map(lambda w: (w, 1)).map_with_state(track, name="seen", timeout=3.0)
    recent = lines.window(3.0, 1.0, name="recent").flat_map(str.split).count_by_value()  # plain window: slices of records
    by_word = lines.flat_map(str.split).count_by_value_and_window(4.0, 2.0, name="by_word")  # inv_f + filter_f
    feed_last = int(total * FEED_UNTIL) * INTERVAL_MS

    def feed(t: int, batch: object) -> None:  # writes the input the next batch will plan
        t_ms = int(t.timestamp() * 1000)  # type: ignore[attr-defined]
        if t_ms > feed_last:
            return
        final = os.path.join(inp, f"in-{t_ms + INTERVAL_MS:013d}.txt")
        if os.path.exists(final):
            return
        tmp = os.path.join(inp, f".tmp-{t_ms}-{os.getpid()}")
        with open(tmp, "w") as f:
            f.write(words_for(t_ms + INTERVAL_MS))
        os.replace(tmp, final)

    rate.foreach_batch(feed)
    # A queue cannot be re-read: each planned batch is materialised into the checkpoint as a blob.
    queued = ssc.queue_stream([[f"q{i % 3}"] * (i % 4 + 1) for i in range(total)], name="queue").count_by_value()
    extra = [("extra", pairs.update_state_by_key(update_total, name="extra"))] if os.environ.get("JOB_EXTRA_OPERATOR") else []
    for name, stream in (
        *extra,
        ("queued", queued),
        ("totals", totals),
        ("win", win),
        ("win_plain", counts),
        ("seen", tracked),
        ("seen_state", tracked.state_snapshots()),
        ("lines", lines),
        ("recent", recent),
        ("by_word", by_word),
    ):
        stream.write_to(FileSink(os.path.join(out, name), name=name, format="jsonl"))
    return ssc


def _norm(x: object) -> object:
    if isinstance(x, dict):
        return {str(k): _norm(v) for k, v in sorted(x.items(), key=lambda kv: repr(kv[0]))}
    if isinstance(x, (list, tuple, set, frozenset)):
        items = [_norm(v) for v in x]
        return sorted(items, key=repr) if isinstance(x, (set, frozenset)) else items
    return x


def dump_state(ssc: sk.StreamingContext) -> dict[str, object]:
    out: dict[str, object] = {}
    for name in stateful_operators_of(ssc):
        snap = state_of(ssc, name)
        if "add" in snap:  # a window slice's items come in key order, which depends on the key partitions
            snap = {**snap, "add": [[ts, sorted(items, key=repr)] for ts, items in snap["add"]]}
        # lists of entries in an order that may differ; other values (a window's "empty_runs" mark) as they are
        out[name] = {k: sorted((_norm(v) for v in vals), key=repr) if isinstance(vals, list) else _norm(vals) for k, vals in snap.items()}
    return out


def main() -> int:
    ckpt, out, inp, total_s = sys.argv[1:5]
    total = int(total_s)
    opts = json.loads(os.environ.get("JOB_STORAGE_OPTIONS", "null"))
    from streamkeep.scheduler import _state_writer

    if os.environ.get("JOB_COMPACT_HELPER"):  # every snapshot merged by a helper process (waited for when due)
        _state_writer.HELPER_STATE_BYTES = 0
        _state_writer.DIRECT_SNAPSHOT_BYTES = 0
    if os.environ.get("JOB_PLAN_FILES"):  # a file per plan, as on S3, instead of plan logs
        from streamkeep.checkpoint import _checkpoint

        _checkpoint.PLAN_LOGS = False
    if os.environ.get("JOB_SNAPSHOTS") == "merged":  # every snapshot merged in the background (a big state's path)
        _state_writer.DIRECT_SNAPSHOT_BYTES = 0
    t0 = time.monotonic()
    ssc = sk.StreamingContext.get_or_create(ckpt, lambda: build(ckpt, out, inp, total, opts), storage_options=opts)
    done = (ssc.last_batch_time_ms or 0) // INTERVAL_MS
    print("READY", flush=True)
    t1 = time.monotonic()
    try:
        if done < total:
            ssc.run(max_batches=total - done)
        assert ssc.last_batch_time_ms == total * INTERVAL_MS, ssc.last_batch_time_ms
        with open(os.path.join(out, "state.json"), "w") as f:
            json.dump(dump_state(ssc), f, indent=1, sort_keys=True, default=repr)
    finally:
        ssc.stop()
    print(f"DONE startup={t1 - t0:.3f} run={time.monotonic() - t1:.3f}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
