"""streamkeep side of the comparison. Runs under the project's python (.venv).

Usage (the orchestrator calls these, as for _pyspark_side.py):
    python bench/_streamkeep_side.py suite '<json: {"parts": [...], <part>: params}>'
    python bench/_streamkeep_side.py restart_job '<json params>'

Mirrors _pyspark_side.py workload by workload, with checkpointing on. streamkeep's
``queue_stream`` is not replayable, so checkpointed jobs read ``rate_stream``
(record i is mapped to the i-th precomputed line or key, the same data PySpark's
pre-built queueStream RDDs hold) or ``text_file_stream`` (restart workloads).
Throughput and checkpoint cost use ``ssc.run()`` (logical batch times back to back,
no wall-clock waits); the latency floor, start-up and restart workloads run on the
wall clock with ``start()``, as PySpark does. If streamkeep cannot be imported the
result line says so instead of failing.
"""

from __future__ import annotations

import json
import operator
import os
import sys
import tempfile
import time
from typing import Any

T_PROCESS = time.time()

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import _common as C  # noqa: E402

try:
    import streamkeep as sk

    sk.StreamingContext  # noqa: B018 (the engine must be there, not just the package)
except Exception as exc:  # noqa: BLE001 (reported, not hidden)
    C.emit(unavailable=f"{type(exc).__name__}: {exc}")
    sys.exit(3)

T_IMPORTED = time.time()


def _split(line: str) -> list[str]:
    return line.split()


def _pair(w: str) -> tuple[str, int]:
    return (w, 1)


def _update_sum(new: list[int], old: int | None) -> int:
    return sum(new) + (old or 0)


def _positive(kv: tuple[str, int]) -> bool:
    return kv[1] > 0


def _ms(t: Any) -> int:
    return round(t.timestamp() * 1000)


class _Listener:
    """Collects streamkeep's BatchInfo (the analogue of Spark's StreamingListener)."""

    def __init__(self) -> None:
        self.batches: list[dict[str, Any]] = []

    def on_batch_completed(self, info: Any) -> None:
        self.batches.append({"time_ms": info.batch_time_ms, "sched_ms": info.scheduling_delay_ms,
                             "proc_ms": info.processing_delay_ms, "records": info.num_records,
                             "wall": time.time()})


def _count_into(sink: list[int]) -> Any:
    def record(batch: Any) -> None:
        sink.append(batch.count())
    return record


# --------------------------------------------------------------------------- (1) throughput

def throughput(p: dict[str, Any]) -> dict[str, Any]:
    lines = C.make_lines(p["words"], p["distinct"])
    nb = p["batches"]
    per = len(lines) // nb
    interval = p["interval_s"]
    out: dict[str, Any] = {}
    for kind in ("update", "window"):
        ssc = sk.StreamingContext(interval, checkpoint=tempfile.mkdtemp(prefix="sk-ckpt-"))
        n = len(lines)
        pairs = (ssc.rate_stream(per / interval, name="lines").map(lambda r, n=n: lines[r[0] % n])
                 .flat_map(_split).map(_pair))
        if kind == "update":
            res = pairs.update_state_by_key(_update_sum, name="counts")
        else:
            res = pairs.reduce_by_key_and_window(operator.add, p["window_batches"] * interval,
                                                 interval, inv_f=operator.sub,
                                                 filter_f=_positive, name="window")
        keys: list[int] = []
        res.foreach_batch(_count_into(keys))
        lst = _Listener()
        ssc.add_listener(lst)
        times = []
        for _ in range(nb):
            t0 = time.perf_counter()
            ssc.run(max_batches=1)
            times.append(time.perf_counter() - t0)
        ssc.stop()
        steady_s = sum(times[1:])
        out[kind] = {"words_per_s": p["words"] / sum(times),
                     "steady_words_per_s": p["words"] * (nb - 1) / nb / steady_s,
                     "proc_s": sum(times), "proc_ms": [round(x * 1e3, 1) for x in times],
                     "keys": keys, "records": sum(b["records"] for b in lst.batches)}
    return out


# --------------------------------------------------------------------------- (2) latency floor

def _tiny_job(interval: float, p: dict[str, Any], tiny: list[str]) -> Any:
    ssc = sk.StreamingContext(interval, checkpoint=tempfile.mkdtemp(prefix="sk-ckpt-"))
    n = len(tiny)
    (ssc.rate_stream(p["records_per_batch"] / interval, name="tiny")
        .map(lambda r: tiny[r[0] % n]).flat_map(_split).map(_pair)
        .update_state_by_key(_update_sum, name="counts").foreach_batch(_count_into([])))
    return ssc


def latency(p: dict[str, Any]) -> dict[str, Any]:
    tiny = C.make_lines(p["records_per_batch"] * C.WORDS_PER_LINE, p["distinct"])
    # Warm up (imports, code paths) as the PySpark side does.
    ssc = _tiny_job(0.1, p, tiny)
    ssc.run(max_batches=20)
    ssc.stop()
    tried: list[dict[str, Any]] = []
    floor = None
    for interval in p["sk_candidates_s"]:
        ssc = _tiny_job(interval, p, tiny)
        lst = _Listener()
        ssc.add_listener(lst)
        duration = max(p["min_batches"] * interval, p["min_seconds"])
        ssc.start()
        t0 = time.time()
        aborted = False
        while time.time() - t0 < duration:
            time.sleep(0.05)
            if lst.batches and lst.batches[-1]["sched_ms"] / 1e3 > C.behind_s(interval):
                aborted = True
                break
        ssc.stop(graceful=False)
        batches = list(lst.batches)
        if aborted:
            ok, why = False, f"aborted: delay {batches[-1]['sched_ms']} ms after {len(batches)} batches"
        else:
            ok, why = C.keeps_up([b["sched_ms"] / 1e3 for b in batches], interval,
                                 int(duration / interval))
        proc = sorted(b["proc_ms"] for b in batches)
        tried.append({"interval_s": interval, "keeps_up": ok, "why": why,
                      "median_proc_ms": proc[len(proc) // 2] if proc else None})
        if ok:
            floor = interval
            break
    # Per-batch overhead with tiny batches: back to back with run() (plan, run,
    # commit to the checkpoint), wall time divided by the number of batches.
    ssc = _tiny_job(0.1, p, tiny)
    ssc.run(max_batches=5)
    t0 = time.perf_counter()
    ssc.run(max_batches=p["tiny_batches"])
    per_batch = (time.perf_counter() - t0) / p["tiny_batches"]
    ssc.stop()
    return {"floor_s": floor, "tried": tried, "tiny_batch_s": per_batch}


# --------------------------------------------------------------------------- (3) start-up

def startup(p: dict[str, Any]) -> dict[str, Any]:
    tiny = C.make_lines(100, 100)
    n = len(tiny)
    ssc = sk.StreamingContext(p["interval_s"], checkpoint=tempfile.mkdtemp(prefix="sk-ckpt-"))
    (ssc.rate_stream(10 / p["interval_s"], name="tiny").map(lambda r: tiny[r[0] % n])
        .flat_map(_split).map(_pair).update_state_by_key(_update_sum, name="counts")
        .foreach_batch(_count_into([])))
    lst = _Listener()
    ssc.add_listener(lst)
    ssc.start()
    deadline = time.time() + 120
    while not lst.batches and time.time() < deadline:
        time.sleep(0.001)
    first = lst.batches[0]["wall"] if lst.batches else None
    ssc.stop(graceful=False)
    return {"first_batch_done": first, "process_start": T_PROCESS, "imported": T_IMPORTED}


# --------------------------------------------------------------------------- (4) checkpoint cost

def checkpoint(p: dict[str, Any]) -> dict[str, Any]:
    interval = p["interval_s"]
    # streamkeep writes a full snapshot every `snapshot_every` batches (default 20)
    # and changed keys otherwise: measure exactly one such period.
    steady = p.get("sk_steady_batches", 20)
    changed = p["changed_per_batch"]
    out: dict[str, Any] = {}
    for n in p["keys"]:
        ckpt = tempfile.mkdtemp(prefix="sk-ckpt-")
        counter = C.DirWriteCounter(ckpt)
        ssc = sk.StreamingContext(interval, checkpoint=ckpt)
        stride = C._STRIDE  # noqa: SLF001 (same key sequence as C.changed_keys)
        initial = [(C.state_key(i), 0) for i in range(n)]
        state = (ssc.rate_stream(changed / interval, name="changes")
                 .map(lambda r, n=n, stride=stride: (C.state_key((r[0] * stride) % n), 1))
                 .update_state_by_key(_update_sum, name="state", initial=initial))
        state.foreach_batch(_count_into([]))
        per_bytes, per_s = [], []
        for _ in range(steady + 1):
            before = counter.total
            t0 = time.perf_counter()
            ssc.run(max_batches=1)
            per_s.append(time.perf_counter() - t0)
            per_bytes.append(counter.scan() - before)
        before = counter.total
        ssc.stop()  # joins a snapshot still being written in the background
        tail = counter.scan() - before
        window = sum(per_bytes[1:]) + tail
        out[str(n)] = {"bytes_per_batch": window / steady,
                       "ms_per_batch": sum(per_s[1:]) / steady * 1e3,
                       "first_batch_bytes": per_bytes[0], "first_batch_ms": per_s[0] * 1e3,
                       "tail_bytes": tail, "median_batch_bytes": sorted(per_bytes[1:])[steady // 2],
                       "max_batch_bytes": max(per_bytes[1:]),
                       "steady_batches": steady, "dir_bytes": C.dir_size(ckpt)}
    return out


# --------------------------------------------------------------------------- (5)/(6) restartable jobs

def _restartable(p: dict[str, Any], version: str) -> None:
    """The same job as _pyspark_side._restartable, (re)started with get_or_create."""
    ckpt, out, src = p["ckpt"], p["out"], p["input"]
    mult = 1000 if version == "v2" else 1

    def update(new: list[int], old: int | None) -> int:
        return (old or 0) + mult * sum(new)

    def setup() -> Any:
        ssc = sk.StreamingContext(p["interval_s"], checkpoint=ckpt)
        words = ssc.text_file_stream(src, name="input").flat_map(_split)
        state = words.map(_pair).update_state_by_key(update, name="counts")

        def rec_words(t: Any, batch: Any) -> None:
            C.append_line(out, f"{os.getpid()} {version} words {_ms(t)} {batch.count()} "
                               f"{time.time():.3f}")

        def rec_state(t: Any, batch: Any) -> None:
            C.append_line(out, f"{os.getpid()} {version} state {_ms(t)} "
                               f"{sum(v for _, v in batch.collect())} {time.time():.3f}")

        if p.get("redis_url"):
            # The exactly-once path: a Sink. RPUSH is not idempotent, so a batch
            # applied twice would show up twice in the list. Registered before the
            # recorder, so the orchestrator's kill (right after a recorder line)
            # falls after the sink's write and before the batch's commit.
            from streamkeep.sinks import RedisSink

            key = p["redis_key"]

            def push(pipe: Any, records: list[Any]) -> None:
                for rec in records:
                    pipe.rpush(key, rec)

            (state.count().transform(lambda t, b: b.map(lambda n, ms=_ms(t): f"{ms} {n}"))
                .write_to(RedisSink(p["redis_url"], push, name=p["redis_sink"])))
        if p.get("record_words"):  # the code-change run needs words per batch
            words.foreach_batch(rec_words)
        state.foreach_batch(rec_state)
        return ssc

    ssc = sk.StreamingContext.get_or_create(ckpt, setup)
    ssc.start()
    ssc.await_termination()  # until the orchestrator SIGKILLs us


def restart_job(p: dict[str, Any]) -> None:
    _restartable(p, p.get("version", "v1"))


PARTS = {f.__name__: f for f in (startup, throughput, latency, checkpoint)}

if __name__ == "__main__":
    if sys.argv[1] == "restart_job":
        restart_job(json.loads(sys.argv[2]))
    else:
        C.run_suite(PARTS, json.loads(sys.argv[2]))
