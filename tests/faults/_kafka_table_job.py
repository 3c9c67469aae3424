"""A Kafka table job (``kafka_stream(tables=KafkaTables("json", ...))``) for the fault tests, and its model.

Usage: ``python _kafka_table_job.py SPEC.json`` with ``bootstrap``, ``topic``, ``cap`` (records
per partition and batch), ``total`` (batches), ``ckpt`` and ``out``. Each planned partition
arrives as one table (no KafkaRecord per record); ``aggregate_state`` keeps a count, a sum and
the highest offset per key (emit="changed"), written as JSON lines, one file per batch time.
"""

from __future__ import annotations

import json
import os
import sys
from typing import Any

import pyarrow as pa

import streamkeep as sk
from streamkeep.sinks import FileSink
from streamkeep.tables import KafkaTables
from streamkeep.testing import ManualClock

SCHEMA = pa.schema([("k", pa.string()), ("v", pa.int64())])


def values(n: int) -> list[bytes]:
    """The topic's records: JSON objects, record i in partition i % partitions."""
    return [json.dumps({"k": f"k{(i * 7) % 11}", "v": i % 5}).encode() for i in range(n)]


def build(spec: dict[str, Any], ckpt: str, out: str) -> sk.StreamingContext:
    ssc = sk.StreamingContext(1.0, checkpoint=ckpt, clock=ManualClock(), snapshot_every=3)
    src = ssc.kafka_stream(
        spec["topic"],
        bootstrap_servers=spec["bootstrap"],
        name="events",
        max_records_per_partition=spec["cap"],
        tables=KafkaTables("json", schema=SCHEMA, metadata=True),
        timeout_s=10.0,
    )
    agg = src.aggregate_state(by="k", aggs={"n": ("*", "count"), "s": ("v", "sum"), "off": ("_offset", "max")}, name="agg", emit="changed")
    agg.map_tables(lambda t: t.sort_by("k")).write_to(FileSink(os.path.join(out, "changed"), name="changed", format="jsonl"))
    return ssc


def model(spec: dict[str, Any], n: int) -> dict[int, list[dict[str, Any]]]:
    """Per batch time, the rows "changed" must hold: batch b reads offsets [b*cap, (b+1)*cap) of every partition."""
    parts, cap = spec["partitions"], spec["cap"]
    recs = [(i % parts, i // parts, json.loads(v)) for i, v in enumerate(values(n))]  # (partition, offset, value)
    state: dict[str, dict[str, int]] = {}
    out: dict[int, list[dict[str, Any]]] = {}
    for b in range(spec["total"]):
        touched = set()
        for p in range(parts):  # a batch's tables in partition order, each in offset order
            for _, off, v in (r for r in recs if r[0] == p and b * cap <= r[1] < (b + 1) * cap):
                s = state.setdefault(v["k"], {"n": 0, "s": 0, "off": -1})
                s["n"] += 1
                s["s"] += v["v"]
                s["off"] = max(s["off"], off)
                touched.add(v["k"])
        out[(b + 1) * 1000] = [{"k": k, **state[k]} for k in sorted(touched)]
    return out


def read_outputs(out: str) -> dict[int, list[Any]]:
    """Per batch time, the rows written."""
    d = os.path.join(out, "changed")
    got: dict[int, list[Any]] = {}
    for fn in sorted(os.listdir(d)) if os.path.isdir(d) else []:
        if fn.startswith("batch-"):
            with open(os.path.join(d, fn)) as f:
                got[int(fn[6:19])] = [json.loads(line) for line in f if line.strip()]
    return got


def main() -> int:
    """Child process: run the job of SPEC.json to batch ``total``, resuming whatever was committed."""
    with open(sys.argv[1]) as f:
        spec = json.load(f)
    ckpt, out, total = spec["ckpt"], spec["out"], spec["total"]
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
