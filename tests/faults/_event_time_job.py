"""An event-time window job, its brute-force model, and a child-process entry point.

Shared by tests/property/test_event_time.py (random inputs and batchings, in
process, with restarts) and tests/faults/test_event_time_kill.py (SIGKILLs).

A spec is JSON: ``batches`` (lists of ``[key, event_ms, value]`` records, in
arrival order), ``window`` ("tumbling" | "sliding" | "session"), ``size_ms``,
``slide_ms``, ``max_delay_ms``, ``lateness_ms``, ``idle_ms`` (or None),
``partitions``, ``snapshot_every``; with ``partitioned`` each batch is a list of
source partitions (each a list of records, read by a queue source of its own, the
sources in a union) and the watermark is per partition (`model_partitioned`); with ``kafka`` (bootstrap, topic, cap) the records come from
that topic, one partition per source partition, ``cap`` records per partition and
batch (a backlog read batch by batch). The model computes the emitted windows from
the records without engine code: a record counts in the windows whose
``end + lateness`` is above the watermark before its batch (the largest event
time of the earlier batches minus max_delay); it is late when it counts in none.
The session model assumes no record is late (the generators guarantee it).
"""

from __future__ import annotations

import json
import os
import sys
from typing import Any

import streamkeep as sk
from streamkeep.sinks import FileSink
from streamkeep.testing import ManualClock

OUTPUTS = ("windows", "late")


def _ms(d: Any) -> int:
    return int(d.timestamp() * 1000)


def flat(r: sk.WindowResult) -> list[Any]:
    """A WindowResult as JSON-able data: [key, start ms, end ms, value]."""
    return [r.key, _ms(r.start), _ms(r.end), r.value]


def event_time(rec: tuple[str, list[Any]]) -> float:
    """Epoch seconds (a float: ms / 1000 must come back as the same whole ms)."""
    return int(rec[1][0]) / 1000


def value_of(rec: tuple[str, list[Any]]) -> tuple[str, int]:
    return rec[0], int(rec[1][1])


def build(spec: dict[str, Any], ckpt: str | None, sinks: dict[str, Any]) -> sk.StreamingContext:
    """The job of `spec`: records (key, [event_ms, value]) summed per key and event-time window."""
    ssc = sk.StreamingContext(1.0, checkpoint=ckpt, clock=ManualClock(), snapshot_every=spec.get("snapshot_every"))
    src: Any
    if spec.get("kafka"):
        kafka = spec["kafka"]
        src = ssc.kafka_stream(
            [kafka["topic"]], bootstrap_servers=kafka["bootstrap"], name="in", max_records_per_partition=kafka["cap"]
        ).map(lambda r: tuple(json.loads(r.value)))
        src = src.map(lambda kev: (kev[0], [kev[1], kev[2]]))
    elif spec.get("partitioned"):  # one queue source per source partition, in a union
        nparts = len(spec["batches"][0])
        streams = [ssc.queue_stream([[(k, [e, v]) for k, e, v in b[p]] for b in spec["batches"]], name=f"in{p}") for p in range(nparts)]
        src = streams[0].union(*streams[1:])
    else:
        batches = [[(k, [e, v]) for k, e, v in b] for b in spec["batches"]]
        src = ssc.queue_stream(batches, name="in", num_partitions=spec.get("partitions", 1))
    idle = None if spec.get("idle_ms") is None else spec["idle_ms"] / 1000
    ets = src.with_event_time(event_time, max_delay=spec["max_delay_ms"] / 1000, idle_timeout=idle)
    lateness = spec["lateness_ms"] / 1000
    kind = spec["window"]
    if kind == "tumbling":
        wins = ets.tumbling_window(spec["size_ms"] / 1000, allowed_lateness=lateness)
    elif kind == "sliding":
        wins = ets.sliding_window(spec["size_ms"] / 1000, spec["slide_ms"] / 1000, allowed_lateness=lateness)
    else:
        wins = ets.session_window(spec["size_ms"] / 1000, allowed_lateness=lateness)
    out = wins.reduce_by_key(lambda a, b: [a[0], a[1] + b[1]], name="ew", num_partitions=spec.get("out_partitions"))
    out.map(flat).map(lambda r: [r[0], r[1], r[2], r[3][1]]).write_to(sinks["windows"])
    out.late_records().map(lambda r: [r[0], r[1][0], r[1][1]]).write_to(sinks["late"])
    return ssc


def _windows_of(spec: dict[str, Any], e: int) -> list[tuple[int, int]]:
    size, slide = spec["size_ms"], spec["slide_ms"] if spec["window"] == "sliding" else spec["size_ms"]
    start = e - e % slide
    out = []
    while start > e - size:
        out.append((start, start + size))
        start -= slide
    return out


def model(spec: dict[str, Any], *, flushed: bool) -> tuple[list[list[Any]], list[list[Any]]]:
    """(emitted windows as sorted [key, start, end, value], late records as [key, event_ms, value]).

    `flushed`: every open window was emitted at the end (idle_timeout after the input ended);
    else only windows whose end + lateness is at most the final watermark.
    """
    delay, lateness = spec["max_delay_ms"], spec["lateness_ms"]
    wm: int | None = None
    max_e: int | None = None
    acc: dict[tuple[str, int, int], int] = {}
    late: list[list[Any]] = []
    events: dict[str, list[tuple[int, int]]] = {}
    for batch in spec["batches"]:
        for k, e, v in batch:
            if spec["window"] == "session":
                assert wm is None or e + spec["size_ms"] + lateness > wm, "the session model assumes no late record"
                events.setdefault(k, []).append((e, v))
            else:
                placed = False
                for s, end in _windows_of(spec, e):
                    if wm is None or end + lateness > wm:
                        acc[(k, s, end)] = acc.get((k, s, end), 0) + v
                        placed = True
                if not placed:
                    late.append([k, e, v])
        for _k, e, _v in batch:
            max_e = e if max_e is None else max(max_e, e)
        if max_e is not None:
            wm = max_e - delay if wm is None else max(wm, max_e - delay)
    if spec["window"] == "session":
        gap = spec["size_ms"]
        for k, evs in events.items():
            evs.sort()
            start, last, total = evs[0][0], evs[0][0], evs[0][1]
            for e, v in evs[1:]:
                if e < last + gap:
                    last, total = max(last, e), total + v
                else:
                    acc[(k, start, last + gap)] = total
                    start, last, total = e, e, v
            acc[(k, start, last + gap)] = total
    emitted = [[k, s, end, v] for (k, s, end), v in acc.items() if flushed or (wm is not None and end + lateness <= wm)]
    return sorted(emitted), late


def model_partitioned(spec: dict[str, Any], batches: list[list[list[Any]]] | None = None) -> tuple[list[list[list[Any]]], list[list[list[Any]]]]:
    """Per batch: (windows emitted, sorted), (late records, sorted), for tumbling and sliding windows over partitioned input.

    `batches` (default ``spec["batches"]``): per batch, per source partition, records [key, event_ms, value];
    batch i runs at batch time (i + 1) s. Each partition's watermark candidate is its largest event time
    minus max_delay; the watermark is the minimum over partitions with records within ``idle_ms`` of
    batch time (all idle: the largest of ``candidate + time since its last records``), never moving back.
    A record counts in the windows whose ``end + lateness`` is above the watermark before its batch and is
    late when it counts in none; a window is emitted in the first batch after which ``end + lateness``
    is at most the watermark.
    """
    delay, lateness, idle = spec["max_delay_ms"], spec["lateness_ms"], spec.get("idle_ms")
    parts: dict[int, list[int]] = {}
    wm: int | None = None
    acc: dict[tuple[str, int, int], int] = {}
    emitted: list[list[list[Any]]] = []
    lates: list[list[list[Any]]] = []
    for i, batch in enumerate(spec["batches"] if batches is None else batches):
        t = (i + 1) * 1000
        late: list[list[Any]] = []
        for p, recs in enumerate(batch):
            for k, e, v in recs:
                placed = False
                for s, end in _windows_of(spec, e):
                    if wm is None or end + lateness > wm:
                        acc[(k, s, end)] = acc.get((k, s, end), 0) + v
                        placed = True
                if not placed:
                    late.append([k, e, v])
            if recs:
                top = max(e for _, e, _ in recs)
                parts[p] = [max(parts[p][0], top) if p in parts else top, t]
        if parts:
            active = [mx for mx, last in parts.values() if idle is None or t - last < idle]
            cand = min(active) - delay if active else max(mx - delay + t - last for mx, last in parts.values())
            wm = cand if wm is None else max(wm, cand)
        due = sorted(w for w in acc if wm is not None and w[2] + lateness <= wm)
        emitted.append(sorted([k, s, end, acc.pop((k, s, end))] for k, s, end in due))
        lates.append(sorted(late))
    return emitted, lates


def file_sinks(out_dir: str) -> dict[str, Any]:
    return {name: FileSink(os.path.join(out_dir, name), name=name, format="jsonl") for name in OUTPUTS}


def read_file_sinks(out_dir: str) -> dict[str, dict[int, list[Any]]]:
    """Per output, per batch time, the records a run's FileSinks hold (in written order)."""
    got: dict[str, dict[int, list[Any]]] = {}
    for name in OUTPUTS:
        d = os.path.join(out_dir, name)
        got[name] = {}
        for fn in sorted(os.listdir(d)) if os.path.isdir(d) else []:
            if fn.startswith("batch-"):
                with open(os.path.join(d, fn)) as f:
                    got[name][int(fn[6:19])] = [json.loads(line) for line in f if line.strip()]
    return got


def main() -> int:
    """Child process: run the job of SPEC.json to batch ``total``, resuming whatever was committed."""
    with open(sys.argv[1]) as f:
        spec = json.load(f)
    ckpt, out_dir, total = spec["ckpt"], spec["out"], spec["total"]
    ssc = sk.StreamingContext.get_or_create(ckpt, lambda: build(spec, ckpt, file_sinks(out_dir)))
    try:
        done = (ssc.last_batch_time_ms or 0) // 1000
        if done < total:
            ssc.run(max_batches=total - done)
    finally:
        ssc.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
