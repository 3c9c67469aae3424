"""Kafka input: offset-range plans over confluent-kafka (Spark's direct stream).

Owns :class:`KafkaRecord` and :class:`KafkaSource`; re-exports
:class:`PidRateEstimator` (batch sizing lives in ``sources._backpressure``). The plan for a batch is data, ``{"topic:partition": [from, until)}``;
reading it assigns the partitions, seeks to ``from`` and polls until every range
is complete, so a replay reads exactly the same records. confluent-kafka is
imported lazily (extra ``streamkeep[kafka]``).

Imports only ``streamkeep.errors``, ``streamkeep._types``,
``streamkeep.sources.base`` and ``streamkeep.sources._backpressure``; must not import sinks, dstream, the scheduler or
executors (a dead-letter sink is accepted structurally, through ``write``).
"""

from __future__ import annotations

import logging
import re
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from typing import TYPE_CHECKING, Any, NamedTuple, Protocol, TypeVar

from streamkeep._types import BatchTime, Data
from streamkeep.errors import ConfigError, SourceError
from streamkeep.sources._backpressure import PidRateEstimator, partition_caps
from streamkeep.sources.base import BlobStore

if TYPE_CHECKING:
    from confluent_kafka import Consumer

__all__ = ["DeadLetterSink", "KafkaRecord", "KafkaSource", "PidRateEstimator"]

log = logging.getLogger(__name__)

_TOPIC_RE = re.compile(r"^[A-Za-z0-9._-]{1,249}$")
_STARTING_MODES = ("earliest", "latest", "committed")
# Keys the source sets itself; a consumer_config may not override them.
_OWNED_KEYS = frozenset(
    {"bootstrap.servers", "group.id", "enable.auto.commit", "enable.auto.offset.store", "auto.offset.reset", "enable.partition.eof"}
)
_OFFSET_INVALID = -1001
_T = TypeVar("_T")


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


def _import_kafka() -> Any:
    try:
        import confluent_kafka
    except ImportError as exc:
        msg = "the Kafka source needs confluent-kafka, which is not installed: pip install 'streamkeep[kafka]'"
        raise ConfigError(msg) from exc
    return confluent_kafka


def _pkey(topic: str, partition: int) -> str:
    return f"{topic}:{partition}"


def _split_pkey(key: str, where: str) -> tuple[str, int]:
    topic, sep, part = key.rpartition(":")
    if not sep or not topic or not part.isdigit():
        msg = f"{where}: {key!r} is not a 'topic:partition' key"
        raise SourceError(msg)
    return topic, int(part)


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
        topic_list = [topics] if isinstance(topics, str) else list(topics)
        where = f"kafka source {name!r}" if name else "kafka source"
        if not topic_list:
            msg = f"{where}: no topics given; pass a topic name or a list of them"
            raise ConfigError(msg)
        for t in topic_list:
            if not isinstance(t, str) or not _TOPIC_RE.match(t):
                msg = f"{where}: {t!r} is not a valid Kafka topic name (1-249 characters of A-Z a-z 0-9 . _ -)"
                raise ConfigError(msg)
        if not isinstance(bootstrap_servers, str) or not bootstrap_servers.strip():
            msg = f"{where}: bootstrap_servers must be a 'host:port[,host:port]' string"
            raise ConfigError(msg)
        if isinstance(starting_offsets, str):
            if starting_offsets not in _STARTING_MODES:
                msg = (
                    f"{where}: starting_offsets={starting_offsets!r} is not one of "
                    f"{_STARTING_MODES} or a {{(topic, partition): offset}} mapping"
                )
                raise ConfigError(msg)
            if starting_offsets == "committed" and not group_id:
                msg = f"{where}: starting_offsets='committed' needs group_id"
                raise ConfigError(msg)
            explicit: dict[tuple[str, int], int] | None = None
        else:
            explicit = {}
            for tp, off in dict(starting_offsets).items():
                ok = (
                    isinstance(tp, tuple)
                    and len(tp) == 2
                    and isinstance(tp[0], str)
                    and isinstance(tp[1], int)
                    and isinstance(off, int)
                    and off >= 0
                )
                if not ok:
                    msg = f"{where}: starting_offsets entry {tp!r}: {off!r} must be (topic: str, partition: int) -> offset: int >= 0"
                    raise ConfigError(msg)
                explicit[(tp[0], tp[1])] = off
        for label, val in (("max_records_per_partition", max_records_per_partition), ("max_rate_per_partition", max_rate_per_partition)):
            if val is not None and not val > 0:
                msg = f"{where}: {label} must be > 0 (got {val!r}); use None for no limit"
                raise ConfigError(msg)
        if not timeout_s > 0 or not retry_backoff_s > 0:
            msg = f"{where}: timeout_s and retry_backoff_s must be > 0"
            raise ConfigError(msg)
        cfg = dict(consumer_config or {})
        owned = sorted(_OWNED_KEYS & cfg.keys())
        if owned:
            msg = f"{where}: consumer_config may not set {owned}; the source sets them (use bootstrap_servers= and group_id= instead)"
            raise ConfigError(msg)
        if on_error is not None and not callable(on_error) and not hasattr(on_error, "write"):
            msg = f"{where}: on_error must be a callable(record, exc) or a sink with write()"
            raise ConfigError(msg)

        self.topics: list[str] = sorted(set(topic_list))
        self.name: str = name or "kafka-" + "+".join(self.topics)
        self.bootstrap_servers = bootstrap_servers
        self.starting_offsets: str | dict[tuple[str, int], int] = explicit if explicit is not None else str(starting_offsets)
        self.max_records_per_partition = max_records_per_partition
        self.group_id = group_id
        self.key_deserializer = key_deserializer
        self.value_deserializer = value_deserializer
        self.on_error = on_error
        self.max_rate_per_partition = max_rate_per_partition
        self.backpressure = backpressure
        self.timeout_s = timeout_s
        self.retry_backoff_s = retry_backoff_s
        self._consumer_config = cfg
        self._batch_interval_ms: int | None = None
        self._estimator: PidRateEstimator | None = None
        self._position: dict[str, int] = {}
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
            # Fetches run only while reading a planned range; a short broker wait keeps
            # a watermark query from queueing behind an idle fetch (500 ms default).
            conf: dict[str, Any] = {"isolation.level": "read_committed", "fetch.wait.max.ms": 10}
            conf.update(self._consumer_config)
            conf.update(
                {
                    "bootstrap.servers": self.bootstrap_servers,
                    "group.id": self.group_id or f"streamkeep-{self.name}",
                    "enable.auto.commit": False,
                    "enable.auto.offset.store": False,
                    "auto.offset.reset": "error",
                    "enable.partition.eof": True,
                }
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
        ck = _import_kafka()
        consumer = self._ensure_consumer()
        todo: dict[tuple[str, int], tuple[int, int, int]] = {(t, p): (i, f, u) for i, (t, p, f, u) in enumerate(ranges) if u > f}
        consumer.assign([ck.TopicPartition(t, p, todo[(t, p)][1]) for t, p in todo])
        eof = ck.KafkaError._PARTITION_EOF
        lost = {ck.KafkaError._AUTO_OFFSET_RESET, ck.KafkaError.OFFSET_OUT_OF_RANGE}
        last_error: object = None
        deadline = time.monotonic() + self.timeout_s

        paused: list[Any] = []

        def finish(key: tuple[str, int]) -> None:
            todo.pop(key, None)
            tp = ck.TopicPartition(*key)
            consumer.pause([tp])
            paused.append(tp)

        try:
            while todo:
                msgs = consumer.consume(num_messages=10_000, timeout=0)
                if not msgs:
                    first = consumer.poll(0.1)
                    msgs = [] if first is None else [first]
                progressed = False
                for m in msgs:
                    err = m.error()
                    m_topic, m_part, m_off = m.topic(), m.partition(), m.offset()
                    key = (m_topic or "", -1 if m_part is None else m_part)
                    off = -1 if m_off is None else m_off
                    if err is not None:
                        code = err.code()
                        if code == eof:
                            entry = todo.get(key)
                            if entry is not None and off >= entry[2]:
                                finish(key)
                                progressed = True
                        elif code in lost and key in todo:
                            self._raise_lost(key, todo[key], batch_time, err)
                        elif err.fatal():
                            msg = f"kafka source {self.name!r}, batch {batch_time}: fatal consumer error: {err}"
                            raise SourceError(msg)
                        else:
                            last_error = err
                        continue
                    entry = todo.get(key)
                    if entry is None:
                        continue
                    idx, start, until = entry
                    if off >= until:
                        finish(key)
                        continue
                    if off >= start:
                        rec = self._decode(m, batch_time, bad)
                        if rec is not None:
                            out[idx].append(rec)
                        progressed = True
                    if off >= until - 1:
                        finish(key)
                if todo:  # transaction markers at a range's end advance only the position
                    for tp in consumer.position([ck.TopicPartition(*k) for k in todo]):
                        pos_key = (str(tp.topic), int(tp.partition))
                        entry = todo.get(pos_key)
                        if entry is not None and tp.offset >= entry[2]:
                            finish(pos_key)
                            progressed = True
                now = time.monotonic()
                if progressed:
                    deadline = now + self.timeout_s
                elif now > deadline:
                    stuck = ", ".join(f"{t} partition {p} [{f}, {u})" for (t, p), (_, f, u) in sorted(todo.items()))
                    msg = (
                        f"kafka source {self.name!r}, batch {batch_time}: no progress "
                        f"reading {stuck} for {self.timeout_s:g} s from "
                        f"{self.bootstrap_servers} (last error: {last_error or 'none reported'}). "
                        "Check that "
                        "the brokers are reachable; the batch is not committed and is "
                        "retried on restart."
                    )
                    raise SourceError(msg)
        finally:
            if paused:  # the pause flag outlives the assignment in librdkafka
                consumer.resume(paused)
            consumer.unassign()

    def _raise_lost(self, key: tuple[str, int], entry: tuple[int, int, int], batch_time: BatchTime, err: object) -> None:
        topic, partition = key
        _, start, until = entry
        try:
            lo: object = self._watermarks(topic, partition)[0]
        except SourceError:
            lo = "unknown"
        msg = (
            f"kafka source {self.name!r}, batch {batch_time}: topic {topic} partition "
            f"{partition} offsets [{start}, {until}) are no longer on the broker "
            f"(earliest available offset: {lo}; {err}). Retention deleted records this "
            "batch planned, so it cannot be replayed exactly; restart from a fresh "
            "checkpoint with starting_offsets to accept the loss."
        )
        raise SourceError(msg)

    def _decode(
        self,
        m: Any,
        batch_time: BatchTime,
        bad: list[dict[str, Any]],
    ) -> KafkaRecord | None:
        ts_type, ts = m.timestamp()
        raw = KafkaRecord(m.topic(), m.partition(), m.offset(), m.key(), m.value(), ts if ts_type != 0 else None)
        kd, vd = self.key_deserializer, self.value_deserializer
        if kd is None and vd is None:
            return raw
        try:
            key = raw.key if kd is None else kd(raw.key)
            value = raw.value if vd is None else vd(raw.value)
        except Exception as exc:
            handler = self.on_error
            if handler is None:
                msg = (
                    f"kafka source {self.name!r}, batch {batch_time}: cannot decode the "
                    f"record at topic {raw.topic} partition {raw.partition} offset "
                    f"{raw.offset}: {exc!r}. Fix the deserialiser or pass on_error= "
                    "(a callable or a dead-letter sink) to route bad records."
                )
                raise SourceError(msg) from exc
            if callable(handler):
                handler(raw, exc)
            else:
                bad.append({**raw._asdict(), "error": repr(exc)})
            return None
        return KafkaRecord(raw[0], raw[1], raw[2], key, value, raw[5])  # cheaper than _replace in this per-record path

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


PidRateEstimator.__module__ = __name__  # documented as streamkeep.sources.kafka.PidRateEstimator
