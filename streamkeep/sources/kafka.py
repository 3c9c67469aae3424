"""Kafka input: offset-range plans over confluent-kafka (Spark's direct stream).

Owns :class:`KafkaSource` (planning, positions, the consumer's lifecycle,
retries and metadata queries); re-exports :class:`KafkaRecord` and
:class:`DeadLetterSink` (the exact-range read loop lives in
``sources._kafka_read``), :class:`PidRateEstimator` (batch sizing lives in
``sources._backpressure``); argument validation and consumer settings live in
``sources._kafka_config``. The plan for a batch is data,
``{"topic:partition": [from, until)}``; reading it assigns the partitions,
seeks to ``from`` and polls until every range is complete, so a replay reads
exactly the same records. confluent-kafka is imported lazily (extra
``streamkeep[kafka]``).

Imports only ``streamkeep.errors``, ``streamkeep._types``,
``streamkeep.sources.base`` and the private ``streamkeep.sources._backpressure``,
``_kafka_config`` and ``_kafka_read``; must not import sinks, dstream, the
scheduler or executors (a dead-letter sink is accepted structurally, through
``write``).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from typing import TYPE_CHECKING, Any, TypeVar

from streamkeep._types import BatchTime, Data
from streamkeep.errors import ConfigError, SourceError
from streamkeep.sources._backpressure import PidRateEstimator, partition_caps
from streamkeep.sources._kafka_config import OFFSET_INVALID as _OFFSET_INVALID
from streamkeep.sources._kafka_config import consumer_conf, validate_options
from streamkeep.sources._kafka_config import import_kafka as _import_kafka
from streamkeep.sources._kafka_config import pkey as _pkey
from streamkeep.sources._kafka_config import split_pkey as _split_pkey
from streamkeep.sources._kafka_read import DeadLetterSink, ErrorHandler, KafkaRecord, fetch_ranges
from streamkeep.sources.base import BlobStore

if TYPE_CHECKING:
    from confluent_kafka import Consumer

__all__ = ["DeadLetterSink", "KafkaRecord", "KafkaSource", "PidRateEstimator"]

log = logging.getLogger(__name__)

_T = TypeVar("_T")


class KafkaSource:
    """Kafka topics as a replayable source: one offset range per partition per batch.

    **Plan, read, position.** ``plan(t)`` lists the topics' partitions (new
    partitions are picked up at every plan) and returns
    ``{"topic:partition": [from, until]}`` (a half-open range) where ``from`` is
    the position and ``until`` the partition's end offset, capped by the limits
    below; the position then moves to ``until``. ``read(plan, t)`` returns one
    list of :class:`KafkaRecord` per planned partition (also empty ones, sorted
    by topic and partition) with exactly the records of the range. With
    ``isolation.level=read_committed`` (the default) the end offset is the last
    stable offset; offsets taken by transaction markers or aborted records are
    skipped, and a range is complete once the consumer's position reaches
    ``until``. The position, ``{"topic:partition": next_offset}``, is plain data
    for the checkpoint.

    **Starting offsets** apply to partitions of a topic the position does not
    know yet (a new job, or a topic added to ``topics``): ``"earliest"``,
    ``"latest"`` (the end offset at the first plan), ``"committed"`` (the
    consumer group's committed offsets; partitions without one start at the
    earliest offset) or a mapping ``{(topic, partition): offset}`` (unlisted
    partitions start at the earliest offset). A partition that appears later in
    a topic already being read always starts at its earliest offset: all its
    records are new.

    **Limits.** Per batch and partition the range holds at most
    ``max_records_per_partition`` records, at most ``max_rate_per_partition`` x
    the batch interval (given by the scheduler through
    :meth:`set_batch_interval_ms`) and, with ``backpressure=True``, at most the
    partition's share (by lag) of the rate estimated by a
    :class:`PidRateEstimator` x the batch interval. The estimator is fed by
    :meth:`observe`, which the scheduler calls after each batch with the
    batch's processing time; until two batches have been observed only the
    fixed limits apply, so set ``max_records_per_partition`` or
    ``max_rate_per_partition`` too if the first batch after a long downtime
    must not be huge. Every limit allows at least one record per partition.

    **Failures.** A range whose start the broker no longer holds (retention
    moved the low watermark past it) raises :class:`SourceError` naming topic,
    partition and offset: records are never skipped silently. An unreachable
    broker is retried with exponential backoff (``retry_backoff_s`` doubling up
    to 2 s) for ``timeout_s`` without progress, then raises SourceError. A
    record that a deserialiser cannot decode raises SourceError naming topic,
    partition and offset, unless ``on_error`` is given: a callable receives
    ``(raw_record, exception)``, or a dead-letter sink receives the batch's
    undecodable records as dicts (topic, partition, offset, key, value,
    timestamp, error) in one ``write(batch_time, records)``. The undecodable
    record is then left out of the batch. Both may run again for the same
    records when a batch is replayed after a crash; a streamkeep sink
    deduplicates that by batch time.

    **Consumer group.** With ``group_id``, :meth:`commit_offsets` commits a
    position to the group (the scheduler calls it after a batch's checkpoint
    commit) so lag monitoring works; the checkpoint stays the source of truth.
    Without ``group_id`` a private group id (``streamkeep-<name>``) is used for
    the consumer but nothing is ever committed.

    Args:
        topics: a topic name or several.
        bootstrap_servers: Kafka ``bootstrap.servers``.
        name: identifies the position in the checkpoint; derived from the
            topics when omitted (``"kafka-<topics joined by +>"``).
        starting_offsets: see above.
        max_records_per_partition: cap per partition and batch.
        group_id: consumer group to read committed offsets from / commit to.
        consumer_config: extra librdkafka consumer settings (security, fetch
            sizes, ``isolation.level``); the keys the source owns are refused.
        key_deserializer, value_deserializer: ``bytes | None -> object``.
        on_error: callable or dead-letter sink for undecodable records.
        max_rate_per_partition: records/s per partition.
        backpressure: adaptive batch sizing (see above).
        timeout_s: how long an unreachable broker or a stalled read is retried.
        retry_backoff_s: first backoff between retries.

    Raises:
        ConfigError: a bad argument, or confluent-kafka is missing.

    Example:
        >>> src = KafkaSource("events", bootstrap_servers="127.0.0.1:9092",
        ...                   max_records_per_partition=10_000)
        >>> src.describe()["topics"]
        ['events']
    """

    replayable = True

    def __init__(
        self,
        topics: str | Iterable[str],
        *,
        bootstrap_servers: str,
        name: str | None = None,
        starting_offsets: str | Mapping[tuple[str, int], int] = "earliest",
        max_records_per_partition: int | None = None,
        group_id: str | None = None,
        consumer_config: Mapping[str, Any] | None = None,
        key_deserializer: Callable[[bytes | None], Any] | None = None,
        value_deserializer: Callable[[bytes | None], Any] | None = None,
        on_error: ErrorHandler | DeadLetterSink | None = None,
        max_rate_per_partition: float | None = None,
        backpressure: bool = False,
        timeout_s: float = 30.0,
        retry_backoff_s: float = 0.1,
    ) -> None:
        opts = validate_options(
            topics,
            bootstrap_servers=bootstrap_servers,
            name=name,
            starting_offsets=starting_offsets,
            max_records_per_partition=max_records_per_partition,
            group_id=group_id,
            consumer_config=consumer_config,
            on_error=on_error,
            max_rate_per_partition=max_rate_per_partition,
            timeout_s=timeout_s,
            retry_backoff_s=retry_backoff_s,
        )

        self.topics: list[str] = opts.topics
        self.name: str = opts.name
        self.bootstrap_servers = bootstrap_servers
        self.starting_offsets: str | dict[tuple[str, int], int] = opts.starting_offsets
        self.max_records_per_partition = max_records_per_partition
        self.group_id = group_id
        self.key_deserializer = key_deserializer
        self.value_deserializer = value_deserializer
        self.on_error = on_error
        self.max_rate_per_partition = max_rate_per_partition
        self.backpressure = backpressure
        self.timeout_s = timeout_s
        self.retry_backoff_s = retry_backoff_s
        self._consumer_config = opts.consumer_config
        self._batch_interval_ms: int | None = None
        self._estimator: PidRateEstimator | None = None
        self._position: dict[str, int] = {}
        self.last_lag: dict[str, int] = {}
        self._consumer: Consumer | None = None
        self._lock = threading.RLock()
        self._dead_letter_opened = False

    # ------------------------------------------------------------------ lifecycle
    def open(self, blobs: BlobStore | None = None) -> None:
        """Create the consumer (no broker contact yet). Blobs are not needed."""
        with self._lock:
            self._ensure_consumer()
            sink = self.on_error
            if sink is not None and not callable(sink) and not self._dead_letter_opened:
                sink.open()
                self._dead_letter_opened = True

    def close(self) -> None:
        """Close the consumer (and a dead-letter sink); safe to call twice."""
        with self._lock:
            consumer, self._consumer = self._consumer, None
            if consumer is not None:
                consumer.close()
            sink = self.on_error
            if self._dead_letter_opened and sink is not None and not callable(sink):
                self._dead_letter_opened = False
                sink.close()

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_consumer"] = None
        state["_lock"] = None
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._lock = threading.RLock()

    def _ensure_consumer(self) -> Consumer:
        if self._consumer is None:
            ck = _import_kafka()
            conf = consumer_conf(
                self._consumer_config, bootstrap_servers=self.bootstrap_servers, group_id=self.group_id or f"streamkeep-{self.name}"
            )
            try:
                self._consumer = ck.Consumer(conf)
            except ck.KafkaException as exc:
                msg = f"kafka source {self.name!r}: cannot create a consumer: {exc}"
                raise ConfigError(msg) from exc
        return self._consumer

    # ------------------------------------------------------------------ position
    def position(self) -> Data:
        """``{"topic:partition": next_offset}`` after the last plan."""
        return dict(self._position)

    def restore(self, position: Data) -> None:
        """Continue after `position` (from an earlier run's checkpoint)."""
        where = f"kafka source {self.name!r}: restored position"
        if not isinstance(position, Mapping):
            msg = f"{where} is {type(position).__name__}, not a mapping"
            raise SourceError(msg)
        restored: dict[str, int] = {}
        for key, off in position.items():
            if not isinstance(key, str) or not isinstance(off, int) or off < 0:
                msg = f"{where} has entry {key!r}: {off!r}, not 'topic:partition': offset"
                raise SourceError(msg)
            _split_pkey(key, where)
            restored[key] = off
        self._position = restored

    def set_batch_interval_ms(self, interval_ms: int) -> None:
        """Tell the source the job's batch interval (needed for the rate limits)."""
        if interval_ms <= 0:
            msg = f"kafka source {self.name!r}: batch interval must be > 0 ms"
            raise ConfigError(msg)
        self._batch_interval_ms = interval_ms
        if self.backpressure and (self._estimator is None or self._estimator.batch_interval_ms != interval_ms):
            self._estimator = PidRateEstimator(interval_ms)

    def observe(self, batch_time: BatchTime, processing_ms: float, records: int, *, scheduling_delay_ms: float = 0.0) -> None:
        """Report a finished batch to the backpressure estimator (no-op without it).

        Args:
            batch_time: the batch's time.
            processing_ms: how long the batch took to compute and output.
            records: how many records this source delivered in that batch.
            scheduling_delay_ms: how long the batch waited before it started.
        """
        if self._estimator is not None:
            rate = self._estimator.compute(batch_time, records, processing_ms, scheduling_delay_ms)
            if rate is not None:
                log.debug("kafka source %r: backpressure rate now %.1f records/s", self.name, rate)

    @property
    def rate_limit(self) -> float | None:
        """The backpressure estimate (records/s over all partitions), or None."""
        return None if self._estimator is None else self._estimator.rate

    def exhausted(self) -> bool:
        """Never: a Kafka topic has no end."""
        return False

    def describe(self) -> dict[str, Data]:
        """Plain data describing the source (stored in the checkpoint)."""
        so: Data = (
            self.starting_offsets
            if isinstance(self.starting_offsets, str)
            else [[t, p, o] for (t, p), o in sorted(self.starting_offsets.items())]
        )
        return {
            "kind": "kafka",
            "name": self.name,
            "topics": list(self.topics),
            "starting_offsets": so,
            "group_id": self.group_id,
            "max_records_per_partition": self.max_records_per_partition,
            "max_rate_per_partition": self.max_rate_per_partition,
            "backpressure": self.backpressure,
        }

    # ------------------------------------------------------------------ retries
    def _retry(self, what: str, fn: Callable[[], _T]) -> _T:
        """Call `fn` until it succeeds, retrying Kafka errors with backoff for timeout_s."""
        ck = _import_kafka()
        deadline = time.monotonic() + self.timeout_s
        backoff = self.retry_backoff_s
        attempt = 0
        while True:
            attempt += 1
            try:
                return fn()
            except ck.KafkaException as exc:
                err = exc.args[0] if exc.args else None
                fatal = bool(err is not None and hasattr(err, "fatal") and err.fatal())
                if fatal or time.monotonic() + backoff > deadline:
                    msg = (
                        f"kafka source {self.name!r}: {what} failed after {attempt} "
                        f"attempt(s) over {self.timeout_s:g} s (bootstrap "
                        f"{self.bootstrap_servers}): {exc}. Check that the brokers are "
                        "reachable; the batch is not committed and is retried on restart."
                    )
                    raise SourceError(msg) from exc
                log.warning("kafka source %r: %s failed (attempt %d), retrying in %.2f s: %s", self.name, what, attempt, backoff, exc)
                time.sleep(backoff)
                backoff = min(backoff * 2, 2.0)
                if self._consumer is not None:  # refresh metadata before the next try
                    try:
                        self._consumer.list_topics(timeout=min(1.0, self.timeout_s))
                    except ck.KafkaException:
                        pass

    def _partitions(self, topic: str) -> list[int]:
        ck = _import_kafka()
        consumer = self._ensure_consumer()

        def fetch() -> list[int]:
            md = consumer.list_topics(topic, timeout=min(5.0, self.timeout_s))
            tmd = md.topics.get(topic)
            if tmd is None or tmd.error is not None:
                err = None if tmd is None else tmd.error
                if err is not None and err.code() == ck.KafkaError.UNKNOWN_TOPIC_OR_PART:
                    msg = (
                        f"kafka source {self.name!r}: topic {topic!r} does not exist on "
                        f"{self.bootstrap_servers}; create it or fix the topic name"
                    )
                    raise SourceError(msg)
                raise ck.KafkaException(err or ck.KafkaError(ck.KafkaError._UNKNOWN_TOPIC))
            if not tmd.partitions:
                raise ck.KafkaException(ck.KafkaError(ck.KafkaError._UNKNOWN_PARTITION))
            return sorted(tmd.partitions)

        return self._retry(f"listing partitions of topic {topic!r}", fetch)

    def _watermarks(self, topic: str, partition: int) -> tuple[int, int]:
        ck = _import_kafka()
        consumer = self._ensure_consumer()
        tp = ck.TopicPartition(topic, partition)

        def fetch() -> tuple[int, int]:
            lo, hi = consumer.get_watermark_offsets(tp, timeout=min(5.0, self.timeout_s), cached=False)
            return int(lo), int(hi)

        return self._retry(f"reading offsets of {topic} partition {partition}", fetch)

    def _committed(self, tps: list[tuple[str, int]]) -> dict[tuple[str, int], int]:
        ck = _import_kafka()
        consumer = self._ensure_consumer()
        req = [ck.TopicPartition(t, p) for t, p in tps]

        def fetch() -> dict[tuple[str, int], int]:
            got = consumer.committed(req, timeout=min(5.0, self.timeout_s))
            for tp in got:
                if tp.error is not None:
                    raise ck.KafkaException(tp.error)
            return {(tp.topic, tp.partition): tp.offset for tp in got}

        return self._retry(f"reading committed offsets of group {self.group_id!r}", fetch)

    # ------------------------------------------------------------------ plan
    def _caps(self, lags: dict[str, int]) -> dict[str, int | None]:
        if (self.max_rate_per_partition is not None or self.backpressure) and self._batch_interval_ms is None:
            msg = (
                f"kafka source {self.name!r}: max_rate_per_partition/backpressure need "
                "the batch interval; the scheduler must call set_batch_interval_ms()"
            )
            raise ConfigError(msg)
        return partition_caps(
            lags,
            batch_interval_ms=self._batch_interval_ms,
            max_records=self.max_records_per_partition,
            max_rate=self.max_rate_per_partition,
            estimate=self.rate_limit,
        )

    def plan(self, batch_time: BatchTime) -> Data:
        """Return ``{"topic:partition": [from, until]}`` for `batch_time`; advance the position.

        Raises:
            SourceError: the position is no longer on the broker (retention) or
                past its end, a topic is missing, or the broker is unreachable.
        """
        with self._lock:
            known_topics = {_split_pkey(k, "position")[0] for k in self._position}
            parts = [(t, p) for t in self.topics for p in self._partitions(t)]
            new = [(t, p) for t, p in parts if _pkey(t, p) not in self._position]
            committed: dict[tuple[str, int], int] = {}
            if self.starting_offsets == "committed":
                fresh = [(t, p) for t, p in new if t not in known_topics]
                if fresh:
                    committed = self._committed(fresh)
            ranges: dict[str, tuple[int, int]] = {}
            for t, p in parts:
                key = _pkey(t, p)
                lo, hi = self._watermarks(t, p)
                start = self._position.get(key)
                if start is None:
                    start = self._initial_offset(t, p, lo, hi, t in known_topics, committed)
                if start < lo:
                    msg = (
                        f"kafka source {self.name!r}: topic {t} partition {p} offset "
                        f"{start} is no longer on the broker (earliest available offset "
                        f"is {lo}; retention deleted {lo - start} records). The records "
                        "cannot be read; restart from a fresh checkpoint with "
                        "starting_offsets='earliest' or an explicit offset to accept "
                        "the loss."
                    )
                    raise SourceError(msg)
                if start > hi:
                    msg = (
                        f"kafka source {self.name!r}: topic {t} partition {p} position "
                        f"{start} is past the partition's end offset {hi} (was the topic "
                        "deleted and recreated, or a starting offset set too high?). "
                        "Start from a fresh checkpoint or fix starting_offsets."
                    )
                    raise SourceError(msg)
                ranges[key] = (start, hi)
            caps = self._caps({k: hi - lo for k, (lo, hi) in ranges.items()})
            plan: dict[str, list[int]] = {}
            for key, (start, hi) in ranges.items():
                cap = caps[key]
                plan[key] = [start, hi if cap is None else min(hi, start + cap)]
            kept = {k: v for k, v in self._position.items() if _split_pkey(k, "position")[0] not in self.topics}
            kept.update({k: until for k, (_, until) in plan.items()})
            self._position = kept
            #: records left on the broker after this plan, per "topic:partition" (consumer lag; for metrics)
            self.last_lag = {k: ranges[k][1] - until for k, (_, until) in plan.items()}
            return plan

    def _initial_offset(
        self, topic: str, partition: int, lo: int, hi: int, topic_known: bool, committed: dict[tuple[str, int], int]
    ) -> int:
        mode = self.starting_offsets
        if isinstance(mode, dict):
            return mode.get((topic, partition), lo)
        if topic_known or mode == "earliest":
            return lo
        if mode == "latest":
            return hi
        off = committed.get((topic, partition), _OFFSET_INVALID)
        return off if off >= 0 else lo

    # ------------------------------------------------------------------ read
    def read(self, plan: Data, batch_time: BatchTime) -> list[list[Any]]:
        """Return the planned records: one list of KafkaRecord per planned partition.

        Raises:
            SourceError: a range is no longer available, the broker stays
                unreachable for ``timeout_s``, or a record cannot be decoded and
                there is no ``on_error``.
        """
        where = f"kafka source {self.name!r}, batch {batch_time}: plan"
        if not isinstance(plan, Mapping):
            msg = f"{where} is {type(plan).__name__}, not a mapping"
            raise SourceError(msg)
        ranges: list[tuple[str, int, int, int]] = []
        for key, rng in plan.items():
            t, p = _split_pkey(key, where)
            if not isinstance(rng, (list, tuple)) or len(rng) != 2 or not all(isinstance(x, int) for x in rng) or rng[0] > rng[1]:
                msg = f"{where} has range {rng!r} for {key}, not [from, until]"
                raise SourceError(msg)
            ranges.append((t, p, rng[0], rng[1]))
        ranges.sort(key=lambda r: (r[0], r[1]))
        out: list[list[Any]] = [[] for _ in ranges]
        bad: list[dict[str, Any]] = []
        if any(u > f for _, _, f, u in ranges):
            with self._lock:
                self._fetch(ranges, out, bad, batch_time)
        if bad:
            sink = self.on_error
            assert sink is not None and not callable(sink)
            if not self._dead_letter_opened:
                sink.open()
                self._dead_letter_opened = True
            sink.write(batch_time, bad)
        return out

    def _fetch(
        self, ranges: list[tuple[str, int, int, int]], out: list[list[Any]], bad: list[dict[str, Any]], batch_time: BatchTime
    ) -> None:
        fetch_ranges(self, ranges, out, bad, batch_time)

    def commit_offsets(self, position: Data) -> None:
        """Commit `position` (as from :meth:`position`) to ``group_id``; no-op without it.

        The scheduler calls this after a batch's checkpoint commit, with the
        position planned for that batch (None: nothing to commit). Bounded
        retries, then SourceError; the checkpoint stays the source of truth, so
        the caller may log that error and continue.
        """
        if not self.group_id or position is None:
            return
        ck = _import_kafka()
        where = f"kafka source {self.name!r}: commit_offsets"
        if not isinstance(position, Mapping):
            msg = f"{where}: position is {type(position).__name__}, not a mapping"
            raise SourceError(msg)
        tps = [ck.TopicPartition(*_split_pkey(k, where), int(off)) for k, off in sorted(position.items())]
        if not tps:
            return
        with self._lock:
            consumer = self._ensure_consumer()

            def commit() -> None:
                for tp in consumer.commit(offsets=tps, asynchronous=False) or []:
                    if tp.error is not None:
                        raise ck.KafkaException(tp.error)

            self._retry(f"committing offsets to group {self.group_id!r}", commit)


# documented under streamkeep.sources.kafka (also keeps pickles of KafkaRecord unchanged)
for _public in (KafkaRecord, DeadLetterSink, PidRateEstimator):
    _public.__module__ = __name__
del _public
