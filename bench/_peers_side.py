"""One system's side of ``compare_peers.py``: streamkeep, Bytewax or Quix Streams.

    python _peers_side.py SYSTEM WORKLOAD JSON-PARAMS

SYSTEM is ``streamkeep`` (the project's venv), ``bytewax`` (bench/.bytewax-venv) or
``quix`` (bench/.quix-venv); only that system's library is imported. Every system runs
the same job: a running word count over lines (10 words a line), emitting each
batch's updated counts as ``"<word> <count>"`` (Quix, which has no batches, emits
per message: the line's updated counts). Results go to stdout as ``@@RESULT`` JSON
lines (``_common.emit``). Workloads:

* ``throughput_mem``: lines from memory, a slice of the list a batch, resumed by index
  (`SkLinesSource`, `_bw_lines_source`), outputs counted in memory. Not for Quix (it
  reads Kafka only).
* ``throughput_kafka``: the same over a Kafka topic (the librdkafka mock broker),
  from the earliest offset until every line is counted.
* ``job``: a long-running job on a Kafka topic writing its outputs to a directory
  (``out``) and the wall time of its first output to ``events`` (one line per
  process); used for start-up, SIGKILL/restart and code-change runs. ``stop``:
  ``"never"`` (run until killed), or ``"idle"`` (exit once every line of the topic
  present at start-up is counted).

Standard library only, apart from the system's own package.
"""

from __future__ import annotations

import gc
import json
import operator
import os
import resource
import sys
import tempfile
import threading
import time
from collections import Counter
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import _common as C  # noqa: E402


def _mark_first(events: str | None, state: dict[str, bool]) -> None:
    """Append ``pid wall`` to the events file the first time this process outputs."""
    if events and not state.get("done"):
        state["done"] = True
        C.append_line(events, f"{os.getpid()} {time.time():.6f}")


def _append(path: str, lines: list[str]) -> None:
    with open(path, "a", encoding="utf-8") as f:
        f.write("".join(x + "\n" for x in lines))
        f.flush()


def _cpu_jiffies() -> list[int]:
    """The machine's CPU time so far by kind (/proc/stat's ``cpu`` line: user nice system idle iowait irq softirq steal ...)."""
    try:
        with open("/proc/stat", encoding="ascii") as f:
            return [int(x) for x in f.readline().split()[1:]]
    except OSError:
        return []


class Meter:
    """What a wall-clock figure on a shared machine hides, over one timed region (the throughput runs' extra keys).

    ``cpu_s``: this process's CPU (all threads, `resource.getrusage`), ``sys_s`` its kernel part
    (page faults, syncs); ``main_cpu_s``: the timing thread's (`time.thread_time`);
    ``fsyncs``/``fsync_s``: calls of `os.fsync` and `os.fdatasync` from Python and their wall time (streamkeep's checkpoint; Bytewax's SQLite syncs from Rust are not seen: None there);
    ``steal_pct``/``iowait_pct``: the machine's stolen and I/O-wait share of CPU time meanwhile
    (/proc/stat, all CPUs); ``gc_collections``: the cyclic GC's collections (all generations).
    """

    def __init__(self, watch_fsync: bool) -> None:
        self._watch = watch_fsync
        self.fsyncs = 0
        self.fsync_s = 0.0
        self._lock = threading.Lock()

    def __enter__(self) -> Meter:
        if self._watch:
            self._fsync, self._fdatasync = os.fsync, os.fdatasync
            os.fsync = self._timed(self._fsync)
            os.fdatasync = self._timed(self._fdatasync)
        self._j = _cpu_jiffies()
        self._gc = sum(g["collections"] for g in gc.get_stats())
        self._ru = resource.getrusage(resource.RUSAGE_SELF)
        self._t = time.thread_time()
        return self

    def _timed(self, sync: Any) -> Any:
        def timed(fd: Any) -> None:
            t0 = time.perf_counter()
            try:
                sync(fd)
            finally:
                with self._lock:
                    self.fsyncs += 1
                    self.fsync_s += time.perf_counter() - t0

        return timed

    def __exit__(self, *exc: object) -> None:
        self.main_cpu_s = time.thread_time() - self._t
        ru = resource.getrusage(resource.RUSAGE_SELF)
        self.cpu_s = ru.ru_utime + ru.ru_stime - self._ru.ru_utime - self._ru.ru_stime
        self.sys_s = ru.ru_stime - self._ru.ru_stime
        self.gc_collections = sum(g["collections"] for g in gc.get_stats()) - self._gc
        j = _cpu_jiffies()
        d = [b - a for a, b in zip(self._j, j, strict=False)]
        total = sum(d[:8]) or 1
        self.steal_pct = 100 * d[7] / total if len(d) > 7 else None
        self.iowait_pct = 100 * d[4] / total if len(d) > 4 else None
        if self._watch:
            os.fsync, os.fdatasync = self._fsync, self._fdatasync

    def result(self) -> dict[str, Any]:
        """The figures as result keys (seconds and percentages rounded)."""
        out: dict[str, Any] = {
            "cpu_s": round(self.cpu_s, 4),
            "main_cpu_s": round(self.main_cpu_s, 4),
            "sys_s": round(self.sys_s, 4),
            "gc_collections": self.gc_collections,
            "steal_pct": None if self.steal_pct is None else round(self.steal_pct, 1),
            "iowait_pct": None if self.iowait_pct is None else round(self.iowait_pct, 1),
        }
        if self._watch:
            out.update(fsyncs=self.fsyncs, fsync_s=round(self.fsync_s, 4))
        return out


# --------------------------------------------------------------------------- streamkeep


def _sk_count_words(lines: Any) -> Any:
    """A partition's lines -> (word, occurrences): pre-aggregated per batch, as the Bytewax job does."""
    return Counter(w for line in lines for w in line.split()).items()


def _sk_add(word: str, n: int | None, state: Any) -> str:
    total = (state.get() if state.exists() else 0) + (n or 0)
    state.update(total)
    return f"{word} {total}"


def _sk_value(rec: Any) -> Any:
    return rec.value


def _sk_decode(b: bytes | None) -> str:
    return b.decode() if b else ""


def split_pairs(line: str) -> list[tuple[str, int]]:
    """A line's ``(word, 1)`` pairs: the per-record user function of both the streamkeep and the Bytewax job."""
    return [(w, 1) for w in line.split()]


def _sk_split_table(t: Any) -> Any:
    """A table of lines (its first column: ``line`` from memory, ``value`` from Kafka) -> a table of words."""
    import pyarrow as pa
    import pyarrow.compute as pc

    return pa.table({"word": pc.list_flatten(pc.split_pattern(t.column(0), " "))})


def _sk_rows(batch: Any) -> int:
    """Outputs of a batch: records, or the rows of its tables (table variant)."""
    return sum(getattr(x, "num_rows", 1) for part in batch.partitions for x in part)


def _sk_counts(lines: Any, step: str, variant: str = "word", tables_in: bool = False) -> Any:
    """Each batch's updated counts as ``"word count"``: one map_with_state call per word and batch.

    ``variant="word"``: every word goes through the engine's keyed shuffle (reduce_by_key), as
    ``(word, 1)`` pairs made by the same function as in the Bytewax job (`split_pairs`);
    ``"batch"``: a partition's words are counted first (Counter), then shuffled;
    ``"tables"``: the table API (docs/tables.md): a partition's lines become one Arrow
    table (`tables_in`: `lines` carries them already, one per Kafka partition, from
    ``kafka_stream(tables="string")``), pyarrow splits them, ``aggregate_state(emit="changed")``
    keeps the counts and emits each batch's updated ``(word, n)`` rows (the same outputs, as table rows).
    """
    if variant == "tables":
        import pyarrow as pa

        if tables_in:  # Kafka: kafka_stream(tables="string") delivers the lines as tables already
            tables = lines.map_tables(_sk_split_table)
        else:
            tables = lines.to_tables(pa.schema([("line", pa.string())])).map_tables(_sk_split_table)
        return tables.aggregate_state(by="word", aggs={"n": ("*", "count")}, name=step, emit="changed")
    if variant == "batch":
        pairs = lines.map_partitions(_sk_count_words)
    else:
        pairs = lines.flat_map(split_pairs)
    return pairs.reduce_by_key(operator.add).map_with_state(_sk_add, name=step)


class SkLinesSource:
    """Lines from memory, `per` a batch, by position: streamkeep's counterpart of `BwLinesSource`.

    A replayable source (docs/sources.md, "Your own source"): the plan is the range of
    line indices, a replay reads the same slice again, the position is the next index.
    Bytewax's side reads the same list the same way (a slice a batch, resumed by index).
    """

    replayable = True

    def __init__(self, lines: list[str], per: int, name: str) -> None:
        self.name = name
        self._lines = lines
        self._per = per
        self._next = 0

    def open(self, blobs: Any) -> None:
        pass

    def restore(self, position: Any) -> None:
        self._next = int(position["next"])

    def position(self) -> Any:
        return {"next": self._next}

    def plan(self, batch_time: int) -> Any:
        lo = self._next
        self._next = hi = min(len(self._lines), lo + self._per)
        return {"from": lo, "until": hi}

    def read(self, plan: Any, batch_time: int) -> list[list[Any]]:
        return [self._lines[int(plan["from"]) : int(plan["until"])]]

    def exhausted(self) -> bool:
        return self._next >= len(self._lines)

    def close(self) -> None:
        pass

    def describe(self) -> dict[str, Any]:
        return {"kind": "lines in memory", "lines": len(self._lines), "per_batch": self._per}


def _sk_mem_run(lines: list[str], per: int, variant: str) -> dict[str, Any]:
    import streamkeep as sk

    n = len(lines)
    ssc = sk.StreamingContext(1.0, checkpoint=tempfile.mkdtemp(prefix="sk-peers-"))
    outputs = [0]

    def count(_t: int, batch: Any) -> None:
        outputs[0] += _sk_rows(batch)

    src = ssc.add_source(SkLinesSource(lines, per, name="lines"))
    _sk_counts(src, "counts", variant).foreach_batch(count)
    with Meter(watch_fsync=True) as m:
        t0 = time.perf_counter()
        ssc.run(max_batches=n // per)
        secs = time.perf_counter() - t0
    ssc.stop()
    return {"seconds": secs, "outputs": outputs[0], "batches": n // per, **m.result()}


def _warm_lines(p: dict[str, Any]) -> list[str]:
    """One batch of other lines for the warm-up job (first-use costs: lazy imports, kernels, allocators)."""
    return C.make_lines(p["batch_lines"] * C.WORDS_PER_LINE, p.get("distinct", 10_000) // 2)


def sk_throughput_mem(p: dict[str, Any]) -> dict[str, Any]:
    lines = C.make_lines(p["words"], p["distinct"])
    warm = _sk_mem_run(_warm_lines(p), p["batch_lines"], p["variant"])  # warm-up: one batch, not timed
    return {**_sk_mem_run(lines, p["batch_lines"], p["variant"]), "warmup_s": warm["seconds"]}


def _sk_kafka_context(p: dict[str, Any], ckpt: str, src: str, step: str) -> Any:
    import streamkeep as sk

    ssc = sk.StreamingContext(p["interval_s"], checkpoint=ckpt)
    per = max(1, p["batch_lines"] // p["partitions"])
    variant = p.get("variant", "word")
    if variant == "tables":  # the values of a partition's batch as one Arrow string column (no object per line)
        lines = ssc.kafka_stream(p["topic"], bootstrap_servers=p["bootstrap"], name=src, max_records_per_partition=per, tables="string")
        return ssc, _sk_counts(lines, step, variant, tables_in=True)
    if variant == "tables-via-records":  # bench/kafka_tables.py's baseline: KafkaRecords decoded, then to_tables
        variant = "tables"
    lines = ssc.kafka_stream(
        p["topic"], bootstrap_servers=p["bootstrap"], name=src, max_records_per_partition=per, value_deserializer=_sk_decode
    ).map(_sk_value)
    return ssc, _sk_counts(lines, step, variant)


def sk_throughput_kafka(p: dict[str, Any]) -> dict[str, Any]:
    variant = p.get("variant", "word")
    _sk_mem_run(_warm_lines(p), p["batch_lines"], "tables" if variant.startswith("tables") else variant)  # the same warm-up as in memory
    ssc, counts = _sk_kafka_context(p, tempfile.mkdtemp(prefix="sk-peers-"), "lines", "counts")
    # Parity: Bytewax's side imports its Kafka connector (and so confluent-kafka, ~0.1 s) when it
    # builds the flow, before its clock starts; streamkeep's source imports the client when the
    # job starts, so it is imported here, before the clock, too.
    import confluent_kafka.admin  # noqa: F401
    got = {"outputs": 0, "words": 0}
    total_words = p["lines"] * C.WORDS_PER_LINE

    def count(_t: int, batch: Any) -> None:
        got["outputs"] += _sk_rows(batch)

    words = [0]

    class Listener:
        def on_batch_completed(self, info: Any) -> None:
            words[0] += info.num_records * C.WORDS_PER_LINE

    counts.foreach_batch(count)
    ssc.add_listener(Listener())
    t0, c0 = time.perf_counter(), time.process_time()
    batches = 0
    while words[0] < total_words:
        batches += ssc.run(max_batches=1)
    secs, cpu = time.perf_counter() - t0, time.process_time() - c0
    ssc.stop()
    return {"seconds": secs, "cpu_s": cpu, "outputs": got["outputs"], "batches": batches, "words": words[0]}


def sk_job(p: dict[str, Any]) -> dict[str, Any]:
    import streamkeep as sk
    from streamkeep.sinks import FileSink

    def create() -> Any:
        ssc, counts = _sk_kafka_context(p, p["state"], p.get("source_name", "lines"), p.get("step_name", "counts"))
        counts.write_to(FileSink(p["out"], name="out"))
        first: dict[str, bool] = {}

        def mark(_t: int, batch: Any) -> None:
            if batch.count():
                _mark_first(p["events"], first)

        counts.foreach_batch(mark)  # after the sink: the mark follows a written batch
        return ssc

    ssc = sk.StreamingContext.get_or_create(p["state"], create)
    if p["stop"] == "idle":
        last = [1]

        class Last:
            def on_batch_completed(self, info: Any) -> None:
                last[0] = info.num_records

        ssc.add_listener(Last())
        while True:
            ssc.run(max_batches=1)
            if last[0] == 0:
                break
        ssc.stop()
        return {"stopped": "idle"}
    ssc.start()  # on the wall clock, one batch per interval, until killed
    ssc.await_termination()
    return {"stopped": "terminated"}


# --------------------------------------------------------------------------- Bytewax


def _bw_flow(source: Any, sink: Any, p: dict[str, Any], src: str, step: str, kafka: bool) -> Any:
    import bytewax.operators as op
    from bytewax.dataflow import Dataflow

    flow = Dataflow("wordcount")
    s = op.input(src, flow, source)
    if kafka:
        s = op.map("value", s, lambda m: m.value.decode() if m.value else "")

    if p.get("variant", "word") == "batch":

        def split_count(lines: list[str]) -> list[tuple[str, int]]:
            # Pre-aggregated per source batch: one update per word and batch, as streamkeep emits.
            return list(Counter(w for line in lines for w in line.split()).items())

        pairs = op.flat_map_batch("split_count", s, split_count)

        def add(state: int | None, n: int) -> tuple[int, int]:
            total = (state or 0) + n
            return total, total

        counts = op.stateful_map(step, pairs, add)
    else:  # every word routed by key; the keyed step sums a key's values of the batch and emits once
        words = op.flat_map("split", s, split_pairs)
        counts = op.stateful_batch(step, words, _bw_total_logic())
    out = op.map("fmt", counts, lambda kv: f"{kv[0]} {kv[1]}")
    if p.get("events"):
        first: dict[str, bool] = {}
        op.inspect("first", out, lambda _step, _x: _mark_first(p["events"], first))
    if p.get("events"):  # the FileSink is partitioned: it routes (key, line) pairs by key and writes the line
        out = op.key_on("route", out, lambda _line: "out")
    op.output("out", out, sink)
    return flow


def _bw_total_logic() -> Any:
    from bytewax.operators import StatefulBatchLogic

    class Total(StatefulBatchLogic[int, int, int]):
        def __init__(self, resume: int | None) -> None:
            self.total = resume or 0

        def on_batch(self, values: list[int]) -> tuple[list[int], bool]:
            self.total += sum(values)
            return [self.total], False  # keep the logic (its state)

        def snapshot(self) -> int:
            return self.total

    return Total


def _bw_counting_sink(box: dict[str, int]) -> Any:
    from bytewax.outputs import DynamicSink, StatelessSinkPartition

    class Part(StatelessSinkPartition[str]):
        def write_batch(self, items: list[str]) -> None:
            box["outputs"] += len(items)

    class Sink(DynamicSink[str]):
        def build(self, step_id: str, worker_index: int, worker_count: int) -> Part:
            return Part()

    return Sink()


def _bw_kafka_source(p: dict[str, Any], tail: bool) -> Any:
    from bytewax.connectors.kafka import KafkaSource

    # The fetch wait streamkeep's source uses (librdkafka's 500 ms default would slow Bytewax down).
    return KafkaSource([p["bootstrap"]], [p["topic"]], tail=tail, batch_size=p["batch_lines"], add_config={"fetch.wait.max.ms": "10"})


def _bw_lines_source(lines: list[str], per: int) -> Any:
    """Lines from memory, `per` a batch, by position: Bytewax's counterpart of `SkLinesSource`.

    A `FixedPartitionedSource` with one partition whose batch is a slice of the list
    and whose snapshot is the next index (what `bytewax.testing.TestingSource` does,
    without its per-item loop over sentinel checks).
    """
    from bytewax.inputs import FixedPartitionedSource, StatefulSourcePartition

    class Part(StatefulSourcePartition[str, int]):
        def __init__(self, resume: int | None) -> None:
            self.next = resume or 0

        def next_batch(self) -> list[str]:
            if self.next >= len(lines):
                raise StopIteration
            lo = self.next
            self.next = min(len(lines), lo + per)
            return lines[lo : self.next]

        def snapshot(self) -> int:
            return self.next

    class Source(FixedPartitionedSource[str, int]):
        def list_parts(self) -> list[str]:
            return ["lines"]

        def build_part(self, step_id: str, for_part: str, resume_state: int | None) -> Part:
            return Part(resume_state)

    return Source()


def _bw_mem_run(lines: list[str], p: dict[str, Any]) -> dict[str, Any]:
    from bytewax.testing import run_main

    box = {"outputs": 0}
    rec = _bw_recovery(tempfile.mkdtemp(prefix="bw-peers-"))
    flow = _bw_flow(_bw_lines_source(lines, p["batch_lines"]), _bw_counting_sink(box), p, "lines", "counts", kafka=False)
    with Meter(watch_fsync=False) as m:
        t0 = time.perf_counter()
        run_main(flow, recovery_config=rec)
        secs = time.perf_counter() - t0
    return {"seconds": secs, "outputs": box["outputs"], **m.result()}


def bw_throughput_mem(p: dict[str, Any]) -> dict[str, Any]:
    lines = C.make_lines(p["words"], p["distinct"])
    warm = _bw_mem_run(_warm_lines(p), p)  # warm-up: one batch, not timed
    return {**_bw_mem_run(lines, p), "warmup_s": warm["seconds"]}


def _bw_recovery(db: str) -> Any:
    from pathlib import Path

    from bytewax.recovery import RecoveryConfig, init_db_dir

    path = Path(db)
    path.mkdir(parents=True, exist_ok=True)
    if not any(path.glob("*.sqlite3")):
        init_db_dir(path, 1)
    return RecoveryConfig(path)


def bw_throughput_kafka(p: dict[str, Any]) -> dict[str, Any]:
    from bytewax.testing import run_main

    _bw_mem_run(_warm_lines(p), p)  # the same warm-up as in memory
    box = {"outputs": 0}
    rec = _bw_recovery(tempfile.mkdtemp(prefix="bw-peers-"))
    flow = _bw_flow(_bw_kafka_source(p, tail=False), _bw_counting_sink(box), p, "lines", "counts", kafka=True)
    t0 = time.perf_counter()
    run_main(flow, recovery_config=rec)
    return {"seconds": time.perf_counter() - t0, "outputs": box["outputs"]}


def bw_job(p: dict[str, Any]) -> dict[str, Any]:
    from datetime import timedelta
    from pathlib import Path

    from bytewax.connectors.files import FileSink
    from bytewax.testing import run_main

    os.makedirs(p["out"], exist_ok=True)
    rec = _bw_recovery(p["state"])
    sink = FileSink(Path(p["out"]) / "out.txt")  # resumes at the snapshot's file position (truncates)
    flow = _bw_flow(
        _bw_kafka_source(p, tail=p["stop"] != "idle"), sink, p, p.get("source_name", "lines"), p.get("step_name", "counts"), kafka=True
    )
    run_main(flow, epoch_interval=timedelta(seconds=p["interval_s"]), recovery_config=rec)
    return {"stopped": "end of input"}


# --------------------------------------------------------------------------- Quix Streams


def _qx_patch_admin(bootstrap: str) -> None:
    """The mock broker has no DescribeConfigs (KIP-133) nor CreateTopics: stand in for both.

    Quix Streams reads every topic's configuration when it is declared. librdkafka's
    mock cluster answers that request with _UNSUPPORTED_FEATURE, so the partition
    count and replication come from the metadata (what the mock can tell) and the
    configs Quix derives changelog settings from get Kafka's defaults. Topics Quix
    creates (its changelog topics) are auto-created by a metadata request instead.
    """
    from quixstreams.models.topics import admin as qadmin
    from quixstreams.models.topics.topic import TopicConfig

    defaults = {"retention.ms": "604800000", "retention.bytes": "-1", "cleanup.policy": "delete"}

    def inspect_topics(self: Any, topic_names: list[str], timeout: float = 30) -> dict[str, Any]:
        cluster = self.list_topics(timeout=timeout)
        return {
            t: TopicConfig(
                num_partitions=len(cluster[t].partitions),
                replication_factor=len(cluster[t].partitions[0].replicas),
                extra_config=dict(defaults),
            )
            if t in cluster
            else None
            for t in topic_names
        }

    def create_topics(self: Any, topics: list[Any], timeout: float = 30, finalize_timeout: float = 60) -> None:
        # CreateTopics is not supported by the mock either; it auto-creates a topic (with 4
        # partitions, as many as the input topics have) when a client asks for its metadata.
        from confluent_kafka import Consumer

        probe = Consumer({"bootstrap.servers": bootstrap, "group.id": "quix-topic-probe", "allow.auto.create.topics": True})
        try:
            for topic in topics:
                deadline = time.time() + finalize_timeout
                while time.time() < deadline:
                    md = probe.list_topics(topic.name, timeout=timeout).topics.get(topic.name)
                    if md is not None and md.error is None and md.partitions:
                        break
                    time.sleep(0.1)
        finally:
            probe.close()

    qadmin.TopicAdmin.inspect_topics = inspect_topics
    qadmin.TopicAdmin.create_topics = create_topics


def _qx_app(p: dict[str, Any], state_dir: str, group: str, on_output: Any) -> Any:
    import warnings

    warnings.simplefilter("ignore")
    from quixstreams import Application

    _qx_patch_admin(p["bootstrap"])
    app = Application(
        broker_address=p["bootstrap"],
        consumer_group=group,
        auto_offset_reset="earliest",
        use_changelog_topics=p.get("changelog", True),  # state backed up to a Kafka changelog topic (Quix's default)
        state_dir=state_dir,
        loglevel="WARNING",
        commit_interval=p.get("commit_interval_s", 5.0),
        consumer_extra_config={"fetch.wait.max.ms": 10},
    )
    sdf = app.dataframe(app.topic(p["topic"], value_deserializer="str"))
    # Quix keeps state per message key (and partition): a word count re-keys by word with
    # group_by, which goes through a repartition topic. A line's words are pre-counted first.
    sdf = sdf.apply(lambda line: [[w, n] for w, n in Counter(line.split()).items()], expand=True)
    sdf = sdf.group_by(lambda pair: pair[0], name="word")

    def add(pair: list[Any], state: Any) -> tuple[str, int]:
        total = state.get("n", 0) + pair[1]
        state.set("n", total)
        return f"{pair[0]} {total}", pair[1]  # the output line, and how many words it accounts for

    sdf = sdf.apply(add, stateful=True)
    sdf = sdf.update(on_output)
    return app, sdf


def qx_throughput_kafka(p: dict[str, Any]) -> dict[str, Any]:
    box: dict[str, Any] = {"outputs": 0, "words": 0, "first": None, "last": None}
    total_words = p["lines"] * C.WORDS_PER_LINE
    apps: list[Any] = []

    def on_output(out: tuple[str, int]) -> None:
        now = time.perf_counter()
        if box["first"] is None:
            box["first"] = now
        box["last"] = now
        box["outputs"] += 1
        box["words"] += out[1]
        if box["words"] >= total_words:
            apps[0].stop()

    app, sdf = _qx_app(p, tempfile.mkdtemp(prefix="qx-peers-"), f"throughput-{os.getpid()}", on_output)
    apps.append(app)
    t0 = time.perf_counter()
    app.run(sdf)
    total = time.perf_counter() - t0
    # Quix joins a consumer group first (seconds): timed from its first message, not from run().
    if box["words"] < total_words:
        msg = f"quix counted {box['words']} of {total_words} words"
        raise RuntimeError(msg)
    return {"seconds": box["last"] - box["first"], "seconds_with_join": total, "outputs": box["outputs"]}


def qx_job(p: dict[str, Any]) -> dict[str, Any]:
    os.makedirs(p["out"], exist_ok=True)
    path = os.path.join(p["out"], f"out-{os.getpid()}.txt")
    first: dict[str, bool] = {}

    def on_output(out: tuple[str, int]) -> None:
        _append(path, [out[0]])
        _mark_first(p["events"], first)

    app, sdf = _qx_app(p, p["state"], p.get("source_name", "lines"), on_output)
    if p["stop"] == "idle":
        if p.get("idle_timeout_s"):  # stop once no message came for that long (how much it re-reads is the question)
            app.run(sdf, timeout=p["idle_timeout_s"], collect=False)
        else:
            app.run(sdf, count=p["lines"], timeout=60, collect=False)
        return {"stopped": "idle"}
    app.run(sdf)
    return {"stopped": "run returned"}


WORKLOADS = {
    "streamkeep": {"throughput_mem": sk_throughput_mem, "throughput_kafka": sk_throughput_kafka, "job": sk_job},
    "bytewax": {"throughput_mem": bw_throughput_mem, "throughput_kafka": bw_throughput_kafka, "job": bw_job},
    "quix": {"throughput_kafka": qx_throughput_kafka, "job": qx_job},
}


def main() -> int:
    system, workload, params = sys.argv[1], sys.argv[2], json.loads(sys.argv[3])
    try:
        fn = WORKLOADS[system][workload]
    except KeyError:
        C.emit(error=f"{system} has no workload {workload!r}")
        return 2
    try:
        res = fn(params)
    except Exception as exc:  # noqa: BLE001 (reported to the orchestrator)
        C.emit(error=f"{type(exc).__name__}: {exc}"[:600])
        raise
    C.emit(**res)
    return 0


if __name__ == "__main__":
    sys.exit(main())
