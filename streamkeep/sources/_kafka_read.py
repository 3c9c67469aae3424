"""Kafka exact-range reads: the record type and the loop that reads planned offset ranges.

Owns :class:`KafkaRecord` and :class:`DeadLetterSink` (public path
``streamkeep.sources.kafka``), and :func:`fetch_ranges`, which assigns the
planned partitions, seeks to each range's start and polls until every range
is complete (by record, by partition EOF, or by the consumer's position when
transaction markers end a range), decoding records on the way with
:func:`decode_record`. The source it reads for is passed in structurally
(:class:`RangeReader`); planning, positions and retries stay in
``streamkeep.sources.kafka``.

Imports only ``streamkeep.errors``, ``streamkeep._types``,
``streamkeep.sources._kafka_config`` and ``streamkeep.sources._kafka_tables``. :func:`fetch_remote` runs the same loop in
another process (a Ray worker) for a `streamkeep.sources.base.RemoteRead`; must not import sinks, dstream, the
scheduler or executors (a dead-letter sink is accepted structurally, through
``write``).
"""

from __future__ import annotations

import gc
import threading
import time
from bisect import bisect_left
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from itertools import groupby
from typing import TYPE_CHECKING, Any, NamedTuple, Protocol

from streamkeep._types import BatchTime
from streamkeep.errors import SourceError
from streamkeep.sources._kafka_config import import_kafka
from streamkeep.sources._kafka_tables import KafkaTables, messages_table

if TYPE_CHECKING:
    from confluent_kafka import Consumer

__all__ = ["Carry", "DeadLetterSink", "ErrorHandler", "KafkaRecord", "RangeReader", "RemoteRanges", "decode_record", "fetch_ranges", "fetch_remote"]


class KafkaRecord(NamedTuple):
    """One Kafka record as the source emits it.

    ``key``/``value`` are the deserialised key and value (raw ``bytes`` or None
    without deserialisers); ``timestamp`` is the record timestamp in ms since the
    epoch, or None when the broker has none.
    """

    topic: str
    partition: int
    offset: int
    key: Any
    value: Any
    timestamp: int | None


class DeadLetterSink(Protocol):
    """What ``on_error`` accepts as a dead-letter sink (any streamkeep Sink fits)."""

    name: str

    def open(self) -> None: ...

    def write(self, batch_time: BatchTime, records: list[Any]) -> None: ...

    def close(self) -> None: ...


ErrorHandler = Callable[[KafkaRecord, Exception], None]


class RangeReader(Protocol):
    """What the read loop needs from the source (``KafkaSource`` fits)."""

    @property
    def name(self) -> str: ...

    @property
    def bootstrap_servers(self) -> str: ...

    @property
    def timeout_s(self) -> float: ...

    @property
    def key_deserializer(self) -> Callable[[bytes | None], Any] | None: ...

    @property
    def value_deserializer(self) -> Callable[[bytes | None], Any] | None: ...

    @property
    def on_error(self) -> ErrorHandler | DeadLetterSink | None: ...

    @property
    def tables(self) -> KafkaTables | None: ...

    def _ensure_consumer(self) -> Consumer: ...

    def _watermarks(self, topic: str, partition: int) -> tuple[int, int]: ...


class Carry:
    """The partitions a source's consumer keeps assigned between two reads, and what it read past their ranges.

    While a job works through a backlog, each batch's range of a partition starts
    where the last one ended. Unassigning the partitions after every read (and
    assigning them again, from the range's start, at the next one) stopped
    librdkafka's prefetching for the whole time the batch was computed and
    committed, so every read waited for fresh fetches (a third of the Kafka
    path's time in ``bench/kafka.py``). When every range read had more records
    on the broker at planning, the read keeps the assignment instead, and the
    records it took from the consumer past a range's end are kept here, in
    offset order, for the next read (at most about a range's length per
    partition: then the partition is paused until the next read). The next read
    uses them only if its ranges are exactly the kept partitions, each starting
    where the last range ended; otherwise it drops them and assigns afresh.
    """

    def __init__(self) -> None:
        self.consumer: Any = None  # the consumer holding the assignment; None: nothing kept
        self.resume_at: dict[tuple[str, int], int] = {}  # where each kept partition's next range must start
        self.msgs: dict[tuple[str, int], list[Any]] = {}  # records taken past the last range's end
        self.paused: list[Any] = []  # kept partitions paused (their carried records reached the bound)

    def drop(self) -> None:
        """Forget the kept assignment (the next read assigns afresh)."""
        self.consumer = None
        self.resume_at, self.msgs, self.paused = {}, {}, []

    def continues(self, consumer: Any, todo: dict[tuple[str, int], tuple[int, int, int]]) -> bool:
        """Do the ranges to read (`todo`) continue exactly the kept assignment of `consumer`?"""
        at = self.resume_at
        return self.consumer is consumer and len(at) == len(todo) and all(at.get(k) == v[1] for k, v in todo.items())


def fetch_ranges(
    src: RangeReader,
    ranges: list[tuple[str, int, int, int]],
    out: list[list[Any]],
    bad: list[dict[str, Any]],
    batch_time: BatchTime,
    carry: Carry | None = None,
    more: set[tuple[str, int]] | None = None,
) -> None:
    """Read every non-empty ``(topic, partition, from, until)`` range into ``out[i]``.

    Undecodable records go to ``bad`` (dead-letter sink) or the ``on_error``
    callable. With ``src.tables``, ``out[i]`` is ``[table]`` (or ``[]``): the range's
    messages are kept as they are while reading and turned into one table at the end
    (`messages_table`), with no `KafkaRecord` per record. The caller holds the source's lock. With a `carry`, the
    partitions stay assigned after the read when all those read are in `more`
    (they have records past the range's end), and a read continuing them uses
    what was carried over (see :class:`Carry`); without, the read unassigns them.
    """
    ck = import_kafka()
    consumer = src._ensure_consumer()
    todo: dict[tuple[str, int], tuple[int, int, int]] = {(t, p): (i, f, u) for i, (t, p, f, u) in enumerate(ranges) if u > f}
    pending: list[Any] = []
    if carry is not None and carry.continues(consumer, todo):
        for tp_key in todo:  # the records taken past the last ranges' ends come first
            pending.extend(carry.msgs.get(tp_key, ()))
        if carry.paused:
            consumer.resume(carry.paused)
    else:
        if carry is not None and carry.paused and carry.consumer is consumer:
            consumer.resume(carry.paused)  # the pause flag outlives the assignment
        consumer.assign([ck.TopicPartition(t, p, todo[(t, p)][1]) for t, p in todo])
    if carry is not None:
        carry.drop()  # until this read ends well and keeps the assignment
    keep = carry is not None and more is not None and all(k in more for k in todo)
    kept: dict[tuple[str, int], list[Any]] = {}
    bound = {k: max(1000, u - f) for k, (_, f, u) in todo.items()} if keep else {}
    resume_at = {k: u for k, (_, _, u) in todo.items()}
    eof = ck.KafkaError._PARTITION_EOF
    lost = {ck.KafkaError._AUTO_OFFSET_RESET, ck.KafkaError.OFFSET_OUT_OF_RANGE}
    last_error: object = None
    deadline = time.monotonic() + src.timeout_s

    paused: list[Any] = []
    kd, vd = src.key_deserializer, src.value_deserializer
    tables = src.tables
    raw = tables is not None  # keep the messages: one table per range at the end
    plain = kd is None and vd is None
    values_only = kd is None and vd is not None
    decode_value: Callable[[bytes | None], Any] = vd if vd is not None else _as_is
    make = tuple.__new__  # KafkaRecord(...) goes through a Python-level __new__: ~2x the cost per record

    def finish(key: tuple[str, int]) -> None:
        todo.pop(key, None)
        if not keep:
            tp = ck.TopicPartition(*key)
            consumer.pause([tp])
            paused.append(tp)

    def hold(key: tuple[str, int], m: Any) -> None:
        """Keep `m`, taken past its range's end, for the next read; pause its partition once it holds enough."""
        held = kept.get(key)
        if held is None:
            held = kept[key] = []
        held.append(m)
        if len(held) == bound[key]:
            tp = ck.TopicPartition(*key)
            consumer.pause([tp])
            paused.append(tp)

    topics = {t for t, _ in todo}
    only_topic = topics.pop() if len(topics) == 1 else None  # the consumer is assigned this topic's partitions only

    def hold_all(key: tuple[str, int], ms: list[Any]) -> None:
        """`hold` for a run of messages of one partition."""
        held = kept.get(key)
        if held is None:
            held = kept[key] = []
        before = len(held)
        held.extend(ms)
        if before < bound[key] <= len(held):
            tp = ck.TopicPartition(*key)
            consumer.pause([tp])
            paused.append(tp)

    def take_runs(msgs: list[Any]) -> tuple[bool, int]:
        """The raw (tables) read of a chunk of records with no error event: a slice per run of one partition.

        The same decisions as the per-record loop below, per run: the consumer delivers a
        partition's records in offset order, so the run's records of the range are one
        slice (found by bisection), those past its end another (held for the next read).
        Returns (progressed, how many of `msgs` were taken): the rest, from a run whose
        first or last record is of another topic than the only one assigned (librdkafka
        drops records of an earlier assignment, so not expected), is left to the per-record loop.
        """
        message = type(msgs[0])
        offs: list[int] = list(map(message.offset, msgs))
        if only_topic is not None:  # one topic: runs by partition (a topic() call makes a str per record)
            runs: Iterable[tuple[Any, Any]] = groupby(map(message.partition, msgs))
        else:
            runs = groupby(zip(map(message.topic, msgs), map(message.partition, msgs), strict=True))
        progressed = False
        i = 0
        for run_key, run in runs:
            j = i + len(list(run))
            if only_topic is not None:
                key = (only_topic, run_key)
                if msgs[i].topic() != only_topic or msgs[j - 1].topic() != only_topic:  # not expected: per record from here
                    return progressed, i
            else:
                key = run_key
            entry = todo.get(key)
            if entry is None:
                if keep and key in bound:
                    hold_all(key, msgs[i:j])
            else:
                idx, start, until = entry
                lo = bisect_left(offs, start, i, j)
                hi = bisect_left(offs, until, lo, j)
                if hi > lo:
                    out[idx].extend(msgs[lo:hi])
                    progressed = True
                if offs[j - 1] >= until - 1:
                    finish(key)
                    if keep and hi < j:
                        hold_all(key, msgs[hi:j])
            i = j
        return progressed, len(msgs)

    # Every record read here stays alive until the batch is done, so garbage collections while the
    # loop builds them free nothing: they only walk the growing heap (measured ~0.8 us per record
    # with 100k records, a third of the loop). The collector is paused for the loop, as
    # codec.decode_items does for large payloads; cyclic garbage a deserialiser makes waits until it ends.
    gc_paused = gc.isenabled()
    if gc_paused:
        gc.disable()
    ok = False
    try:
        while todo:
            # Any: a message without an error always has its topic, partition and offset (the stubs say Optional)
            msgs: list[Any] = pending if pending else consumer.consume(num_messages=10_000, timeout=0)
            pending = []
            if not msgs:
                first = consumer.poll(0.1)
                msgs = [] if first is None else [first]
            progressed = False
            # (not `.count(None)`: KafkaError's == leaves a TypeError pending when compared with None)
            if raw and msgs and not any(map(type(msgs[0]).error, msgs)):
                progressed, taken = take_runs(msgs)
                msgs = msgs[taken:] if taken < len(msgs) else []
            # Records come in runs of one partition: its range is looked up once per run, not per record.
            last_topic: str | None = None
            last_part: int | None = None
            in_range = False
            for m in msgs:
                err = m.error()
                if err is not None:
                    last_part = None  # finish() below may end the range of the run
                    m_topic, m_part, m_off = m.topic(), m.partition(), m.offset()
                    key = (m_topic or "", -1 if m_part is None else m_part)
                    off = -1 if m_off is None else m_off
                    code = err.code()
                    if code == eof:
                        entry = todo.get(key)
                        if entry is not None and off >= entry[2]:
                            finish(key)
                            progressed = True
                    elif code in lost and key in todo:
                        _raise_lost(src, key, todo[key], batch_time, err)
                    elif err.fatal():
                        msg = f"kafka source {src.name!r}, batch {batch_time}: fatal consumer error: {err}"
                        raise SourceError(msg)
                    else:
                        last_error = err
                    continue
                # A record (no error) always has its topic, partition and offset.
                m_topic, m_part, off = m.topic(), m.partition(), m.offset()
                if m_part != last_part or m_topic != last_topic:
                    key = (m_topic, m_part)
                    entry = todo.get(key)
                    last_topic, last_part = m_topic, m_part
                    in_range = entry is not None
                    if entry is not None:
                        idx, start, until = entry
                        last = until - 1
                        append = out[idx].append
                if not in_range:
                    if keep and key in bound:
                        hold(key, m)
                    continue
                if off >= until:
                    finish(key)
                    last_part = None
                    if keep:
                        hold(key, m)
                    continue
                if off >= start:
                    if raw:
                        append(m)
                        progressed = True
                        if off >= last:
                            finish(key)
                            last_part = None
                        continue
                    # decode_record inlined (the per-record path): one KafkaRecord, built once.
                    ts_type, ts = m.timestamp()
                    if plain:
                        append(make(KafkaRecord, (m_topic, m_part, off, m.key(), m.value(), ts if ts_type else None)))
                    elif values_only:  # the usual deserialiser setup: one call fewer per record than the general case
                        try:
                            rec = make(KafkaRecord, (m_topic, m_part, off, m.key(), decode_value(m.value()), ts if ts_type else None))
                        except Exception as exc:
                            _undecodable(src, KafkaRecord(m_topic, m_part, off, m.key(), m.value(), ts if ts_type else None), exc, batch_time, bad)
                        else:
                            append(rec)
                    else:
                        k, v = m.key(), m.value()
                        try:
                            rec = make(KafkaRecord, (m_topic, m_part, off, k if kd is None else kd(k), v if vd is None else vd(v), ts if ts_type else None))
                        except Exception as exc:
                            _undecodable(src, KafkaRecord(m_topic, m_part, off, k, v, ts if ts_type else None), exc, batch_time, bad)
                        else:
                            append(rec)
                    progressed = True
                if off >= last:
                    finish(key)
                    last_part = None
            if todo:  # transaction markers at a range's end advance only the position
                for tp in consumer.position([ck.TopicPartition(*k) for k in todo]):
                    pos_key = (str(tp.topic), int(tp.partition))
                    entry = todo.get(pos_key)
                    if entry is not None and tp.offset >= entry[2]:
                        finish(pos_key)
                        progressed = True
            now = time.monotonic()
            if progressed:
                deadline = now + src.timeout_s
            elif now > deadline:
                stuck = ", ".join(f"{t} partition {p} [{f}, {u})" for (t, p), (_, f, u) in sorted(todo.items()))
                msg = (
                    f"kafka source {src.name!r}, batch {batch_time}: no progress "
                    f"reading {stuck} for {src.timeout_s:g} s from "
                    f"{src.bootstrap_servers} (last error: {last_error or 'none reported'}). "
                    "Check that "
                    "the brokers are reachable; the batch is not committed and is "
                    "retried on restart."
                )
                raise SourceError(msg)
        if tables is not None:
            _to_tables(src, tables, out, bad, batch_time)
        ok = True
    finally:
        if gc_paused:
            gc.enable()
        if ok and keep and carry is not None:
            carry.consumer, carry.msgs, carry.paused = consumer, kept, paused
            carry.resume_at = {k: u for k, u in resume_at.items()}
        else:
            if paused:  # the pause flag outlives the assignment in librdkafka
                consumer.resume(paused)
            consumer.unassign()


def _to_tables(src: RangeReader, tables: KafkaTables, out: list[list[Any]], bad: list[dict[str, Any]], batch_time: BatchTime) -> None:
    """Each range's messages in `out` as one table (`messages_table`); undecodable values go to ``on_error``."""

    def reject(m: Any, exc: Exception) -> None:
        ts_type, ts = m.timestamp()
        _undecodable(src, KafkaRecord(m.topic(), m.partition(), m.offset(), m.key(), m.value(), ts if ts_type else None), exc, batch_time, bad)

    for i, msgs in enumerate(out):
        out[i] = messages_table(tables, msgs, reject)


def _as_is(raw: bytes | None) -> Any:
    return raw


def _raise_lost(src: RangeReader, key: tuple[str, int], entry: tuple[int, int, int], batch_time: BatchTime, err: object) -> None:
    topic, partition = key
    _, start, until = entry
    try:
        lo: object = src._watermarks(topic, partition)[0]
    except SourceError:
        lo = "unknown"
    msg = (
        f"kafka source {src.name!r}, batch {batch_time}: topic {topic} partition "
        f"{partition} offsets [{start}, {until}) are no longer on the broker "
        f"(earliest available offset: {lo}; {err}). Retention deleted records this "
        "batch planned, so it cannot be replayed exactly; restart from a fresh "
        "checkpoint with starting_offsets to accept the loss."
    )
    raise SourceError(msg)


def decode_record(
    src: RangeReader,
    m: Any,
    batch_time: BatchTime,
    bad: list[dict[str, Any]],
) -> KafkaRecord | None:
    """Turn a consumer message into a KafkaRecord; None when it was routed to ``on_error``."""
    ts_type, ts = m.timestamp()
    raw = KafkaRecord(m.topic(), m.partition(), m.offset(), m.key(), m.value(), ts if ts_type != 0 else None)
    kd, vd = src.key_deserializer, src.value_deserializer
    if kd is None and vd is None:
        return raw
    try:
        key = raw.key if kd is None else kd(raw.key)
        value = raw.value if vd is None else vd(raw.value)
    except Exception as exc:
        _undecodable(src, raw, exc, batch_time, bad)
        return None
    return KafkaRecord(raw[0], raw[1], raw[2], key, value, raw[5])  # cheaper than _replace in this per-record path


def _undecodable(src: RangeReader, raw: KafkaRecord, exc: Exception, batch_time: BatchTime, bad: list[dict[str, Any]]) -> None:
    """Route a record whose deserialiser raised `exc` to ``on_error``, or raise SourceError naming it."""
    handler = src.on_error
    if handler is None:
        msg = (
            f"kafka source {src.name!r}, batch {batch_time}: cannot decode the "
            f"record at topic {raw.topic} partition {raw.partition} offset "
            f"{raw.offset}: {exc!r}. Fix the deserialiser or pass on_error= "
            "(a callable or a dead-letter sink) to route bad records."
        )
        raise SourceError(msg) from exc
    if callable(handler):
        handler(raw, exc)
    else:
        # "Type: message", not repr: a UnicodeDecodeError's repr repeats the whole record
        bad.append({**raw._asdict(), "error": f"{type(exc).__name__}: {exc}"})


# -- reads in other processes (RemotelyReadable) ---------------------------------------

#: The consumers of this process's remote fetches, by consumer settings: a worker that
#: fetches every batch keeps its connection (creating a consumer and reaching the broker
#: costs more than a small batch). Fetches in one process run one at a time (the lock).
_CONSUMERS: dict[tuple[tuple[str, str], ...], Any] = {}
_CONSUMERS_LOCK = threading.Lock()

#: ``RemoteRanges.on_error`` when the source has a dead-letter sink (it stays in the driver).
DEAD_LETTER_SINK = "dead-letter sink"


class _Collect:
    """``on_error`` in a remote fetch when the source's is a callable: kept for the driver to call, in order."""

    def __init__(self) -> None:
        self.calls: list[tuple[KafkaRecord, BaseException]] = []

    def __call__(self, raw: KafkaRecord, exc: Exception) -> None:
        import pickle  # only remote fetches (Ray) keep exceptions: a local read need not import it

        try:
            pickle.dumps(exc)
            kept: BaseException = exc
        except Exception:
            kept = RuntimeError(f"{type(exc).__name__}: {exc}")
        self.calls.append((raw, kept))


@dataclass
class RemoteRanges:
    """What a remote fetch needs of a `KafkaSource` (a `RangeReader`; picklable: no consumer, no sink).

    ``on_error`` is None (fail), `DEAD_LETTER_SINK` (undecodable records come back as
    dicts for the driver's dead-letter sink) or True (a callable in the driver: the
    records and errors come back for the driver to call it with).
    """

    name: str
    bootstrap_servers: str
    timeout_s: float
    conf: dict[str, Any]
    key_deserializer: Callable[[bytes | None], Any] | None
    value_deserializer: Callable[[bytes | None], Any] | None
    on_error: Any
    tables: KafkaTables | None = None
    _consumer: Any = field(default=None, repr=False)

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_consumer"] = None
        return state

    def _ensure_consumer(self) -> Consumer:
        if self._consumer is None:
            key = tuple(sorted((k, repr(v)) for k, v in self.conf.items()))
            consumer = _CONSUMERS.get(key)
            if consumer is None:
                ck = import_kafka()
                try:
                    consumer = ck.Consumer(self.conf)
                except ck.KafkaException as exc:
                    msg = f"kafka source {self.name!r}: cannot create a consumer in worker process: {exc}"
                    raise SourceError(msg) from exc
                _CONSUMERS[key] = consumer
            self._consumer = consumer
        return self._consumer  # type: ignore[no-any-return]

    def _watermarks(self, topic: str, partition: int) -> tuple[int, int]:
        ck = import_kafka()
        try:
            lo, hi = self._ensure_consumer().get_watermark_offsets(ck.TopicPartition(topic, partition), timeout=min(5.0, self.timeout_s), cached=False)
        except ck.KafkaException as exc:
            msg = f"kafka source {self.name!r}: cannot read the watermarks of {topic} partition {partition}: {exc}"
            raise SourceError(msg) from exc
        return int(lo), int(hi)


def fetch_remote(spec: RemoteRanges, ranges: list[tuple[str, int, int, int]], batch_time: BatchTime) -> tuple[list[list[Any]], Any]:
    """Read `ranges` (sorted, as the driver's ``read`` would) in this process: ``(partitions, (dead letters, on_error calls))``."""
    out: list[list[Any]] = [[] for _ in ranges]
    bad: list[dict[str, Any]] = []
    collect = _Collect() if spec.on_error is True else None
    reader = spec if collect is None else RemoteRanges(**{**spec.__getstate__(), "on_error": collect})
    if any(u > f for _, _, f, u in ranges):
        with _CONSUMERS_LOCK:
            fetch_ranges(reader, ranges, out, bad, batch_time)
    return out, (bad, [] if collect is None else collect.calls)
