"""A table job (issue 15), its pure-Python model, and a child-process entry point for the fault tests.

Usage: ``python _table_job.py SPEC.json`` with ``ckpt``, ``out``, ``total`` and ``batches``
(lists of ``[key, group, value]`` rows). The input is a materialised queue of Arrow tables
(two tables per batch, one per partition: the plans hold Arrow IPC through the codec); the
job keeps a running aggregate per key (``aggregate_state``, emit="changed", written as
JSON lines), a second one over two key columns (emit="all", written as Parquet by
`ParquetSink`), a window of tables reduced per key in ``transform`` (JSON lines), and an
``aggregate_window`` with the vectorised inverse (JSON lines).
"""

from __future__ import annotations

import json
import os
import sys
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

import streamkeep as sk
from streamkeep.executors import LocalExecutor
from streamkeep.sinks import FileSink, ParquetSink
from streamkeep.testing import ManualClock

OUTPUTS = ("changed", "all", "win", "awin")


def _tables(batch: list[list[Any]]) -> list[Any]:
    half = len(batch) // 2
    return [
        pa.table({"k": [r[0] for r in rows], "g": [r[1] for r in rows], "v": [r[2] for r in rows]},
                 schema=pa.schema([("k", pa.string()), ("g", pa.int64()), ("v", pa.int64())]))
        for rows in (batch[:half], batch[half:])
    ]


def _window_sums(batch: sk.Batch[Any]) -> sk.Batch[Any]:
    t = batch.to_arrow()
    if not t.num_rows:
        return sk.Batch([[]], batch.batch_time_ms)
    out = t.group_by("k").aggregate([("v", "sum")]).sort_by("k")
    return sk.Batch([[out]], batch.batch_time_ms)


def build(spec: dict[str, Any], ckpt: str | None, out: str) -> sk.StreamingContext:
    threads = spec.get("table_threads")
    executor = LocalExecutor(table_threads=threads) if threads else None
    ssc = sk.StreamingContext(1.0, checkpoint=ckpt, clock=ManualClock(), snapshot_every=spec.get("snapshot_every", 3), executor=executor)
    q = ssc.queue_stream([_tables(b) for b in spec["batches"]], name="in", num_partitions=2)
    aggs = {"n": ("*", "count"), "s": ("v", "sum"), "mx": ("v", "max"), "avg": ("v", "mean"), "last": ("v", "last")}
    changed = q.aggregate_state(by="k", aggs=aggs, name="agg", emit="changed")
    changed.map_tables(lambda t: t.sort_by("k")).write_to(FileSink(os.path.join(out, "changed"), name="changed", format="jsonl"))
    big = q.map_tables(lambda t: t.filter(pc.greater(t["v"], 2))).aggregate_state(by=["k", "g"], aggs={"s": ("v", "sum")}, name="all")
    big.map_tables(lambda t: t.sort_by([("k", "ascending"), ("g", "ascending")])).write_to(ParquetSink(os.path.join(out, "all"), name="all"))
    q.window(3.0, 1.0, name="win").transform(_window_sums).write_to(FileSink(os.path.join(out, "win"), name="win", format="jsonl"))
    awin = q.aggregate_window(by="k", aggs={"s": ("v", "sum"), "n": ("*", "count"), "avg": ("v", "mean")}, length=4.0, slide=2.0, name="awin")
    awin.map_tables(lambda t: t.sort_by("k")).write_to(FileSink(os.path.join(out, "awin"), name="awin", format="jsonl"))
    return ssc


def model_changed(spec: dict[str, Any]) -> dict[int, list[dict[str, Any]]]:
    """Per batch time, the rows the "changed" output must hold (computed without the engine)."""
    state: dict[str, dict[str, Any]] = {}
    out: dict[int, list[dict[str, Any]]] = {}
    for i, batch in enumerate(spec["batches"]):
        touched = set()
        for k, _g, v in batch:  # arrival order: the first table's rows, then the second's
            s = state.setdefault(k, {"n": 0, "s": 0, "mx": v, "last": v})
            s["n"] += 1
            s["s"] += v
            s["mx"] = max(s["mx"], v)
            s["last"] = v
            touched.add(k)
        out[(i + 1) * 1000] = [{"k": k, "n": state[k]["n"], "s": state[k]["s"], "mx": state[k]["mx"], "avg": state[k]["s"] / state[k]["n"],
                                "last": state[k]["last"]} for k in sorted(touched)]
    return out


def read_outputs(out: str) -> dict[str, dict[int, list[Any]]]:
    """Per output, per batch time, the rows written (JSON lines or Parquet)."""
    got: dict[str, dict[int, list[Any]]] = {}
    for name in OUTPUTS:
        d = os.path.join(out, name)
        got[name] = {}
        for fn in sorted(os.listdir(d)) if os.path.isdir(d) else []:
            if not fn.startswith("batch-"):
                continue
            path = os.path.join(d, fn)
            if fn.endswith(".parquet"):
                got[name][int(fn[6:19])] = pq.read_table(path).to_pylist()
            else:
                with open(path) as f:
                    got[name][int(fn[6:19])] = [json.loads(line) for line in f if line.strip()]
    return got


def _split_every_probe(out: str) -> None:
    """aggregate_state's probes split over threads even for these tiny batches; each split probe is
    recorded (one line in ``out/split-probes``) so the test knows the threaded path ran."""
    from streamkeep.executors import _tables
    from streamkeep.executors._tables import AggregateStateRuntime

    _tables.CHUNK_ROWS, _tables.SET_RATIO = 1, 0
    in_chunks = AggregateStateRuntime._in_chunks

    def recorded(self: AggregateStateRuntime, fn: Any, values: Any, k: int) -> list[Any]:
        with open(os.path.join(out, "split-probes"), "a") as f:
            f.write(f"{k}\n")
        return in_chunks(self, fn, values, k)

    AggregateStateRuntime._in_chunks = recorded  # type: ignore[method-assign]


def main() -> int:
    """Child process: run the job of SPEC.json to batch ``total``, resuming whatever was committed."""
    with open(sys.argv[1]) as f:
        spec = json.load(f)
    ckpt, out, total = spec["ckpt"], spec["out"], spec["total"]
    if spec.get("table_threads"):
        os.makedirs(out, exist_ok=True)
        _split_every_probe(out)
    ssc = sk.StreamingContext.get_or_create(ckpt, lambda: build(spec, ckpt, out))
    try:
        done = (ssc.last_batch_time_ms or 0) // 1000
        if done < total:
            ssc.run(max_batches=total - done)
    finally:
        ssc.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
