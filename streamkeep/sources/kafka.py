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
``_kafka_config``, ``_kafka_meta``, ``_kafka_read`` and ``_kafka_tables``; must not import sinks, dstream, the
scheduler or executors (a dead-letter sink is accepted structurally, through
``write``).
"""

from __future__ import annotations

import contextlib
import functools
import importlib
import logging
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from typing import TYPE_CHECKING, Any, TypeVar

from streamkeep._kafka_log import CLIENT_LOG
from streamkeep._kafka_reach import require_brokers
from streamkeep._types import BatchTime, Data
from streamkeep._util import retry_with_backoff
from streamkeep.errors import ConfigError, SourceError
from streamkeep.sources._backpressure import PidRateEstimator, partition_caps
from streamkeep.sources._kafka_config import OFFSET_INVALID as _OFFSET_INVALID
from streamkeep.sources._kafka_config import consumer_conf, validate_options
from streamkeep.sources._kafka_config import import_kafka as _import_kafka
from streamkeep.sources._kafka_config import pkey as _pkey
from streamkeep.sources._kafka_config import split_pkey as _split_pkey
from streamkeep.sources._kafka_meta import Offsets, TopicInfo, admin_conf, collect_describe, collect_offsets, start_describe, start_offsets
from streamkeep.sources._kafka_read import (
    DEAD_LETTER_SINK,
    Carry,
    DeadLetterSink,
    ErrorHandler,
    KafkaRecord,
    RemoteRanges,
    fetch_ranges,
    fetch_remote,
)
from streamkeep.sources._kafka_tables import KafkaTables, as_kafka_tables
from streamkeep.sources.base import BlobStore, DeadLetters, RemoteRead

if TYPE_CHECKING:
    from confluent_kafka import Consumer
    from confluent_kafka.admin import AdminClient

__all__ = ["DeadLetterSink", "KafkaRecord", "KafkaSource", "PidRateEstimator"]

log = logging.getLogger(__name__)

_T = TypeVar("_T")
_Range = tuple[str, int, int, int]  # (topic, partition, from, until)

# Reserved position keys (no ":", so never a "topic:partition" key).
_IDS_KEY = "topic_ids"  # {topic: topic ID} where the brokers report IDs
_MARKS_KEY = "watermarks"  # {"topic:partition": [low, high]} seen at the last plan
# Errors meaning "these brokers cannot describe topics": stop asking.
_NO_DESCRIBE = ("UNSUPPORTED_VERSION", "_UNSUPPORTED_FEATURE", "INVALID_REQUEST", "_NOT_IMPLEMENTED")
# How often a failing offset commit to the group is logged again (the count is always kept).
_COMMIT_WARN_EVERY_S = 60.0


class _MissingTopicError(SourceError):
    """A topic the brokers do not know (internal: lets a replay tell it from an outage)."""


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
    partitions start at the earliest offset; a topic not in ``topics`` is a
    ConfigError, a partition the topic lacks a SourceError at the first
    plan). A partition that appears later in
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
    to 2 s) for ``timeout_s`` without progress, then raises SourceError. Before
    its first request the source waits (up to ``timeout_s``, 30 s by default) for a
    bootstrap address to accept a connection, so brokers that come up a little
    later are fine; if none does at once, a WARNING says so right away, naming the
    address and why (connection refused, timed out, unknown host), and the
    SourceError at the end of the wait says the same. A
    record that a deserialiser cannot decode raises SourceError naming topic,
    partition and offset, unless ``on_error`` is given: a callable receives
    ``(raw_record, exception)``, or a dead-letter sink receives the batch's
    undecodable records as dicts (topic, partition, offset, key, value,
    timestamp, error) in one ``write(batch_time, records)``, ordered by topic,
    partition and offset (a replay writes the same list). The undecodable
    record is then left out of the batch. Both may run again for the same
    records when a batch is replayed after a crash; a streamkeep sink
    deduplicates that by batch time.

    **Deleted and recreated topics.** The position keeps each topic's ID (where
    the brokers report IDs) and the watermarks seen at the last plan. A topic
    whose ID changed, a stored partition that no longer exists, a position past
    the end offset or an earliest offset that went back means the topic was
    deleted and recreated: the plan (or the replay of a plan of an earlier run)
    raises SourceError naming topic and partition, unless
    ``on_recreated_topic="earliest"``, which reads the new topic from its
    earliest offset and replays without the vanished ranges. See
    docs/kafka.md for what cannot be detected.

    **Consumer group.** With ``group_id``, :meth:`commit_offsets` commits a
    position to the group asynchronously (the scheduler calls it after a
    batch's checkpoint commit) so lag monitoring works; the checkpoint stays
    the source of truth, and ``offset_commits_ok``/``offset_commits_failed``
    count the broker's answers.
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
        on_recreated_topic: ``"fail"`` (default) or ``"earliest"``, see above.
        tables: deliver each planned partition's records as one ``pyarrow.Table``
            (see `streamkeep.tables.KafkaTables`; a format name such as ``"json"``
            is a shortcut) instead of a `KafkaRecord` per record; excludes the deserialisers.

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
        on_recreated_topic: str = "fail",
        tables: KafkaTables | str | None = None,
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
            on_recreated_topic=on_recreated_topic,
        )
        spec = as_kafka_tables(tables, f"kafka source {opts.name!r}")
        if spec is not None and (key_deserializer is not None or value_deserializer is not None):
            msg = (
                f"kafka source {opts.name!r}: tables={spec.values!r} decodes the records itself (a batch at a time); "
                "drop key_deserializer= and value_deserializer=, or drop tables= and call .to_tables() on the records"
            )
            raise ConfigError(msg)

        self.topics: list[str] = opts.topics
        self.name: str = opts.name
        self.bootstrap_servers = bootstrap_servers
        self.starting_offsets: str | dict[tuple[str, int], int] = opts.starting_offsets
        self.max_records_per_partition = max_records_per_partition
        self.group_id = group_id
        self.key_deserializer = key_deserializer
        self.value_deserializer = value_deserializer
        self.on_error = on_error
        self.tables = spec
        self._dead = DeadLetters(on_error)
        self.max_rate_per_partition = max_rate_per_partition
        self.backpressure = backpressure
        self.timeout_s = timeout_s
        self.retry_backoff_s = retry_backoff_s
        self.on_recreated_topic = on_recreated_topic
        #: Offset commits to the group confirmed by the broker / failed (read them for metrics).
        self.offset_commits_ok = 0
        self.offset_commits_failed = 0
        self._commit_warned_at: float | None = None
        self._consumer_config = opts.consumer_config
        self._read_committed = opts.consumer_config.get("isolation.level", "read_committed") == "read_committed"
        self._batch_interval_ms: int | None = None
        self._estimator: PidRateEstimator | None = None
        self._position: dict[str, int] = {}
        self.last_lag: dict[str, int] = {}
        self._topic_ids: dict[str, str] = {}  # stored with the position
        self._marks: dict[str, tuple[int, int]] = {}  # watermarks seen at the last plan, stored with the position
        self._planned_here: list[BatchTime] = []  # batch times this instance planned (the rest are replays)
        self._describe_ok = True  # False once the brokers turned out unable to describe topics
        self._consumer: Consumer | None = None
        self._known_topics: set[str] = set()  # topics whose metadata the current consumer asked for (_fetch)
        self._carry = Carry()  # partitions kept assigned between reads while there is a backlog (_fetch)
        self._admin: AdminClient | None = None
        self._reached = False  # a bootstrap address accepted a connection (_await_brokers)
        self._refused = False  # _await_brokers raised: its error said why no broker was reached
        self._lock = threading.RLock()

    # ------------------------------------------------------------------ lifecycle
    @property
    def dead_letter_sink(self) -> Any | None:
        """The ``on_error`` dead-letter sink (None for a callable or no ``on_error``)."""
        return self._dead.sink

    def open(self, blobs: BlobStore | None = None) -> None:
        """Create the consumer (no broker contact yet). Blobs are not needed."""
        with self._lock:
            self._ensure_consumer()
            self._dead.open()

    def close(self) -> None:
        """Close the consumer (and a dead-letter sink); safe to call twice."""
        with self._lock:
            consumer, self._consumer = self._consumer, None
            self._admin = None
            self._carry.drop()
            if consumer is not None:
                # waits (at most ~timeout_s) for offset commits in flight. Quiet only when the broker check
                # raised: its error already said why (else librdkafka's SASL/SSL/config lines are the only report)
                with CLIENT_LOG.quiet() if self._refused and not self._reached else contextlib.nullcontext():
                    consumer.close()
            self._dead.close()

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_consumer"] = None
        state["_admin"] = None
        state["_lock"] = None
        state["_carry"] = Carry()
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._lock = threading.RLock()

    def _ensure_consumer(self) -> Consumer:
        if self._consumer is None:
            ck = _import_kafka()
            conf = self._conf()
            conf["on_commit"] = self._on_commit
            try:
                self._consumer = ck.Consumer(conf)
            except ck.KafkaException as exc:
                msg = f"kafka source {self.name!r}: cannot create a consumer: {exc}"
                raise ConfigError(msg) from exc
            self._known_topics = set()
        return self._consumer

    def _conf(self) -> dict[str, Any]:
        return consumer_conf(
            self._consumer_config,
            bootstrap_servers=self.bootstrap_servers,
            group_id=self.group_id or f"streamkeep-{self.name}",
            timeout_s=self.timeout_s,
        )

    def _ensure_admin(self) -> AdminClient:
        if self._admin is None:
            ck = _import_kafka()
            admin_mod = importlib.import_module("confluent_kafka.admin")
            try:
                self._admin = admin_mod.AdminClient(admin_conf(self._conf()))
            except ck.KafkaException as exc:
                msg = f"kafka source {self.name!r}: cannot create an admin client: {exc}"
                raise ConfigError(msg) from exc
        self._admin.poll(0)  # hands its queued log lines to its logger (an admin client has no poll of its own)
        return self._admin

    # ------------------------------------------------------------------ position
    def position(self) -> Data:
        """``{"topic:partition": next_offset}`` after the last plan.

        Two more entries, when known, let a restarted job notice a topic that
        was deleted and recreated: ``"topic_ids": {topic: id}`` (brokers with
        topic IDs) and ``"watermarks": {"topic:partition": [low, high]}`` seen
        at the last plan.
        """
        out: dict[str, Any] = dict(self._position)
        if self._topic_ids:
            out[_IDS_KEY] = dict(sorted(self._topic_ids.items()))
        if self._marks:
            out[_MARKS_KEY] = {k: [lo, hi] for k, (lo, hi) in sorted(self._marks.items())}
        return out

    def restore(self, position: Data) -> None:
        """Continue after `position` (from an earlier run's checkpoint)."""
        where = f"kafka source {self.name!r}: restored position"
        if not isinstance(position, Mapping):
            msg = f"{where} is {type(position).__name__}, not a mapping"
            raise SourceError(msg)
        restored: dict[str, int] = {}
        ids: dict[str, str] = {}
        marks: dict[str, tuple[int, int]] = {}
        for key, off in position.items():
            if key == _IDS_KEY and isinstance(off, Mapping):
                ids = {str(t): str(i) for t, i in off.items()}
                continue
            if key == _MARKS_KEY and isinstance(off, Mapping):
                marks = {str(k): (int(v[0]), int(v[1])) for k, v in off.items() if isinstance(v, (list, tuple)) and len(v) == 2}
                continue
            if not isinstance(key, str) or not isinstance(off, int) or off < 0:
                msg = f"{where} has entry {key!r}: {off!r}, not 'topic:partition': offset"
                raise SourceError(msg)
            _split_pkey(key, where)
            restored[key] = off
        self._position = restored
        self._topic_ids = ids
        self._marks = marks

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
            **({} if self.tables is None else {"tables": self.tables.describe()}),
        }

    # ------------------------------------------------------------------ retries
    def _await_brokers(self) -> None:
        """Before the first broker request: wait for a bootstrap address to accept a connection, saying why it does not.

        Raises:
            SourceError: none did within ``timeout_s`` (names the addresses and why).
        """
        if self._reached:
            return
        try:
            require_brokers(
                f"kafka source {self.name!r}",
                self.bootstrap_servers,
                timeout_s=self.timeout_s,
                first_backoff_s=self.retry_backoff_s,
                setting="kafka_stream/KafkaSource",
                after="The batch is not committed and is retried on restart.",
                error=SourceError,
                log=log,
            )
        except SourceError:
            self._refused = True
            raise
        self._reached = True

    def _retry(self, what: str, fn: Callable[[], _T]) -> _T:
        """Call `fn` until it succeeds, retrying Kafka errors with backoff for timeout_s."""
        ck = _import_kafka()
        deadline = time.monotonic() + self.timeout_s

        def give_up(exc: BaseException, attempt: int, delay_s: float) -> BaseException | None:
            err = exc.args[0] if exc.args else None
            fatal = bool(err is not None and hasattr(err, "fatal") and err.fatal())
            if not fatal and time.monotonic() + delay_s <= deadline:
                return None
            msg = (
                f"kafka source {self.name!r}: {what} failed after {attempt} "
                f"attempt(s) over {self.timeout_s:g} s (bootstrap "
                f"{self.bootstrap_servers}): {exc}. Check that the brokers are "
                "reachable; the batch is not committed and is retried on restart."
            )
            return SourceError(msg)

        def on_retry(exc: BaseException, attempt: int, delay_s: float) -> None:
            log.warning("kafka source %r: %s failed (attempt %d), retrying in %.2f s: %s", self.name, what, attempt, delay_s, exc)

        def refresh() -> None:
            if self._consumer is not None:  # refresh metadata before the next try
                try:
                    self._consumer.list_topics(timeout=min(1.0, self.timeout_s))
                except ck.KafkaException:
                    pass

        return retry_with_backoff(
            fn, retry_on=ck.KafkaException, first_s=self.retry_backoff_s, give_up=give_up, on_retry=on_retry, between=refresh
        )

    def _partitions(self, topic: str) -> list[int]:
        """The partitions of `topic` from the consumer's metadata (no topic ID); retried."""
        ck = _import_kafka()
        consumer = self._ensure_consumer()

        def fetch() -> list[int]:
            md = consumer.list_topics(topic, timeout=min(5.0, self.timeout_s))
            tmd = md.topics.get(topic)
            if tmd is None or tmd.error is not None:
                err = None if tmd is None else tmd.error
                if err is not None and err.code() == ck.KafkaError.UNKNOWN_TOPIC_OR_PART:
                    self._raise_missing_topic(topic)
                raise ck.KafkaException(err or ck.KafkaError(ck.KafkaError._UNKNOWN_TOPIC))
            if not tmd.partitions:
                raise ck.KafkaException(ck.KafkaError(ck.KafkaError._UNKNOWN_PARTITION))
            return sorted(tmd.partitions)

        return self._retry(f"listing partitions of topic {topic!r}", fetch)

    def _raise_missing_topic(self, topic: str) -> None:
        msg = f"kafka source {self.name!r}: topic {topic!r} does not exist on {self.bootstrap_servers}; create it or fix the topic name"
        raise _MissingTopicError(msg)

    def _start_describe(self, topics: list[str]) -> dict[str, Any] | None:
        """Send one DescribeTopics request (partitions and topic IDs); None if the brokers cannot answer it."""
        if not self._describe_ok or not topics:
            return None
        ck = _import_kafka()
        try:
            return start_describe(self._ensure_admin(), topics, min(5.0, self.timeout_s))
        except (ck.KafkaException, ValueError, TypeError) as exc:
            log.debug("kafka source %r: describe_topics not sent: %s", self.name, exc)
            return None

    def _topic_infos(self, topics: list[str], futs: dict[str, Any] | None = None) -> dict[str, TopicInfo]:
        """Partitions and topic IDs (None where unknown) of `topics`, in one request where the brokers allow.

        Falls back to the consumer's metadata (one request per topic, retried,
        no IDs) when the brokers cannot describe topics or the request fails.
        """
        ck = _import_kafka()
        if futs is None:
            futs = self._start_describe(topics)
        if futs is not None:
            try:
                return collect_describe(futs)
            except ck.KafkaException as exc:
                err = exc.args[0] if exc.args else None
                name = err.name() if err is not None and hasattr(err, "name") else ""
                if name == "UNKNOWN_TOPIC_OR_PART":
                    for t, f in futs.items():  # confirm through the consumer's metadata (raises the clear error)
                        if f.exception() is not None:
                            self._partitions(t)
                elif name in _NO_DESCRIBE:
                    self._describe_ok = False
                    log.warning(
                        "kafka source %r: the brokers at %s cannot describe topics (%s): topic IDs are unknown, so a "
                        "deleted and recreated topic is detected only from its offsets (see docs/kafka.md)",
                        self.name,
                        self.bootstrap_servers,
                        exc,
                    )
                else:
                    log.debug("kafka source %r: describe_topics failed, using the consumer's metadata: %s", self.name, exc)
        return {t: TopicInfo(None, self._partitions(t)) for t in topics}

    def _offsets(self, parts: list[tuple[str, int]], futs: Any = None) -> dict[tuple[str, int], Offsets]:
        """Earliest and end offsets of `parts`: one ListOffsets round trip for all of them, retried.

        `futs` are requests already in flight (from :func:`start_offsets`) for
        some of the partitions; the others, or all after a failure, are asked again.
        """
        ck = _import_kafka()
        got: dict[tuple[str, int], Offsets] = {}
        if futs is not None:
            try:
                got = collect_offsets(futs)
            except ck.KafkaException as exc:
                log.debug("kafka source %r: prefetched offsets failed, asking again: %s", self.name, exc)
                got = {}
        todo = [tp for tp in parts if tp not in got]
        if todo:
            admin = self._ensure_admin()

            def fetch() -> dict[tuple[str, int], Offsets]:
                return collect_offsets(start_offsets(admin, todo, read_committed=self._read_committed, timeout_s=min(5.0, self.timeout_s)))

            where = todo[0][0] if len({t for t, _ in todo}) == 1 else "several topics"
            got.update(self._retry(f"reading offsets of {len(todo)} partition(s) of {where}", fetch))
        return {tp: got[tp] for tp in parts}

    def _watermarks(self, topic: str, partition: int) -> tuple[int, int]:
        lo, hi = self._offsets([(topic, partition)])[(topic, partition)]
        return lo, hi

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

        Costs about one round trip to the brokers however many partitions are
        read: the topics' partitions and IDs and every partition's offsets are
        asked for at once (the offsets for the partitions of the last plan).

        Raises:
            SourceError: the position is no longer on the broker (retention) or
                past its end, a topic is missing or was deleted and recreated
                (unless ``on_recreated_topic="earliest"``), a starting offset
                names a partition that does not exist, or the broker is
                unreachable.
        """
        with self._lock:
            self._await_brokers()
            known_topics = {_split_pkey(k, "position")[0] for k in self._position}
            guess = [tp for tp in (_split_pkey(k, "position") for k in sorted(self._position)) if tp[0] in self.topics]
            describe = self._start_describe(self.topics)
            prefetch = None
            if guess:  # in flight together with the metadata request: one round trip in the steady state
                try:
                    prefetch = start_offsets(self._ensure_admin(), guess, read_committed=self._read_committed, timeout_s=min(5.0, self.timeout_s))
                except (_import_kafka().KafkaException, ValueError, TypeError) as exc:
                    log.debug("kafka source %r: offsets not prefetched: %s", self.name, exc)
            infos = self._topic_infos(self.topics, describe)
            parts = [(t, p) for t in self.topics for p in infos[t].partitions]
            marks = self._offsets(parts, prefetch)
            recreated = self._check_recreated(infos, marks, known_topics)
            if recreated:  # records carried over from the old topic must not be read as the new one's
                self._carry.drop()
            position = {k: v for k, v in self._position.items() if _split_pkey(k, "position")[0] not in recreated}
            self._check_starting_offsets(infos, known_topics)
            new = [(t, p) for t, p in parts if _pkey(t, p) not in position]
            committed: dict[tuple[str, int], int] = {}
            if self.starting_offsets == "committed":
                fresh = [(t, p) for t, p in new if t not in known_topics]
                if fresh:
                    committed = self._committed(fresh)
            ranges: dict[str, tuple[int, int]] = {}
            for t, p in parts:
                key = _pkey(t, p)
                lo, hi = marks[(t, p)]
                start = position.get(key)
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
                if start > hi:  # a restored position past the end is caught by _check_recreated
                    msg = (
                        f"kafka source {self.name!r}: topic {t} partition {p} starting "
                        f"offset {start} is past the partition's end offset {hi}. Fix "
                        "starting_offsets (or use 'latest')."
                    )
                    raise SourceError(msg)
                ranges[key] = (start, hi)
            caps = self._caps({k: hi - lo for k, (lo, hi) in ranges.items()})
            plan: dict[str, list[int]] = {}
            for key, (start, hi) in ranges.items():
                cap = caps[key]
                plan[key] = [start, hi if cap is None else min(hi, start + cap)]
            kept = {k: v for k, v in position.items() if _split_pkey(k, "position")[0] not in self.topics}
            kept.update({k: until for k, (_, until) in plan.items()})
            self._position = kept
            #: records left on the broker after this plan, per "topic:partition" (consumer lag; for metrics)
            self.last_lag = {k: ranges[k][1] - until for k, (_, until) in plan.items()}
            for t in self.topics:
                tid = infos[t].topic_id
                if tid is not None:
                    self._topic_ids[t] = tid
            self._marks = {
                **{k: v for k, v in self._marks.items() if _split_pkey(k, "position")[0] not in self.topics},
                **{_pkey(t, p): (lo, hi) for (t, p), (lo, hi) in marks.items()},
            }
            self._planned_here = [*self._planned_here[-15:], batch_time]
            return plan

    def _check_recreated(self, infos: dict[str, TopicInfo], marks: dict[tuple[str, int], Offsets], known_topics: set[str]) -> set[str]:
        """Topics deleted and recreated since the position was taken, whose position is to be dropped.

        Raises SourceError (``on_recreated_topic="fail"``) unless nothing had
        been read from the topic yet (every position 0).
        """
        out: set[str] = set()
        for t in sorted(known_topics & set(self.topics)):
            evidence = self._recreated_evidence(t, infos[t], marks)
            if evidence is None:
                continue
            positions = {k: v for k, v in self._position.items() if _split_pkey(k, "position")[0] == t}
            if self.on_recreated_topic == "fail" and any(positions.values()):
                msg = (
                    f"kafka source {self.name!r}: topic {t} was deleted and recreated since the position "
                    f"in the checkpoint was taken ({evidence}). Reading the new topic from the stored "
                    f"offsets {dict(sorted(positions.items()))} would skip its first records, so the source "
                    "stops. If the topic is meant to be new, pass on_recreated_topic='earliest' to the "
                    "source to read it from its earliest offset (records of the old topic not read yet "
                    "are lost); see 'Deleted and recreated topics' in docs/kafka.md."
                )
                raise SourceError(msg)
            log.warning(
                "kafka source %r: topic %s was deleted and recreated (%s); reading the new topic from its earliest offsets (%s)",
                self.name,
                t,
                evidence,
                "nothing had been read from the old one" if not any(positions.values()) else "on_recreated_topic='earliest'",
            )
            self._topic_ids.pop(t, None)
            out.add(t)
        return out

    def _recreated_evidence(self, topic: str, info: TopicInfo, marks: Mapping[tuple[str, int], Offsets]) -> str | None:
        """Why `topic` looks deleted and recreated since the stored position, or None."""
        old_id = self._topic_ids.get(topic)
        if old_id is not None and info.topic_id is not None and old_id != info.topic_id:
            return f"its topic ID changed from {old_id} to {info.topic_id}"
        for key, pos in sorted(self._position.items()):
            t, p = _split_pkey(key, "position")
            if t != topic:
                continue
            if p not in info.partitions:
                return (
                    f"partition {p}, at position {pos}, no longer exists: the topic has "
                    f"{len(info.partitions)} partition(s), and Kafka never removes partitions"
                )
            lo, hi = marks[(t, p)]
            if pos > hi:
                return f"partition {p}: the stored position {pos} is past the partition's end offset {hi}"
            seen = self._marks.get(key)
            if seen is not None and lo < seen[0]:
                return f"partition {p}: its earliest offset went back from {seen[0]} to {lo}"
        return None

    def _check_starting_offsets(self, infos: dict[str, TopicInfo], known_topics: set[str]) -> None:
        """Explicit starting offsets must name partitions that exist (a typo would start from earliest)."""
        mode = self.starting_offsets
        if not isinstance(mode, dict):
            return
        bad = sorted((t, p) for t, p in mode if t not in known_topics and t in infos and p not in infos[t].partitions)
        if bad:
            t, p = bad[0]
            msg = (
                f"kafka source {self.name!r}: starting_offsets names topic {t} partition {p}, which does "
                f"not exist (the topic has partitions {infos[t].partitions}); fix or remove the entry "
                "(unlisted partitions start at the earliest offset)."
            )
            raise SourceError(msg)

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
    def partition_labels(self, plan: Data, batch_time: BatchTime) -> list[str]:
        """``"topic:partition"`` of each list `read` returns for `plan` (event-time watermarks per partition)."""
        where = f"kafka source {self.name!r}, batch {batch_time}: plan"
        if not isinstance(plan, Mapping):
            return []
        keys = [(*_split_pkey(key, where), key) for key in plan]
        return [key for _, _, key in sorted(keys, key=lambda k: (k[0], k[1]))]

    # ------------------------------------------------------------------ read
    def read(self, plan: Data, batch_time: BatchTime) -> list[list[Any]]:
        """Return the planned records: one list of KafkaRecord per planned partition (with ``tables``: ``[table]`` or ``[]``).

        Raises:
            SourceError: a range is no longer available, the broker stays
                unreachable for ``timeout_s``, or a record cannot be decoded and
                there is no ``on_error``.
        """
        ranges = self._ranges(plan, batch_time)
        out: list[list[Any]] = [[] for _ in ranges]
        bad: list[dict[str, Any]] = []
        if any(u > f for _, _, f, u in ranges):
            with self._lock:
                more: set[tuple[str, int]] | None = None
                if batch_time not in self._planned_here:  # planned by an earlier run: is it still readable?
                    ranges = self._check_replay(ranges, batch_time)
                else:  # partitions with records past the range at planning: worth keeping assigned
                    marks = self._marks
                    more = {(t, p) for t, p, _, u in ranges if (m := marks.get(_pkey(t, p))) is not None and m[1] > u}
                self._fetch(ranges, out, bad, batch_time, more)
        self._dead.write(batch_time, _in_log_order(bad))
        return out

    def _ranges(self, plan: Data, batch_time: BatchTime) -> list[tuple[str, int, int, int]]:
        """The plan's ``(topic, partition, from, until)`` ranges, sorted by topic and partition."""
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
        return ranges

    def remote_read(self, plan: Data, batch_time: BatchTime, tasks: int) -> RemoteRead | None:
        """`read` cut into at most `tasks` fetches that run in other processes (`RemotelyReadable`).

        The driver still checks a replayed plan against the brokers (metadata only, as
        `read` does); each fetch reads a run of consecutive planned ranges with a consumer
        of its own process, decoding records with the same rules. Undecodable records go
        back to the driver: to the dead-letter sink (one write for the batch, in ``finish``)
        or to the ``on_error`` callable, called in the driver in offset order. None when no
        range holds records (reading nothing costs less than a task).

        Raises:
            SourceError: the plan is malformed, or a replayed plan's records are gone.
        """
        ranges = self._ranges(plan, batch_time)
        if not any(u > f for _, _, f, u in ranges):
            return None
        with self._lock:
            self._release_kept()  # other processes read these ranges: this consumer need not fetch on
            if batch_time not in self._planned_here:  # planned by an earlier run: is it still readable?
                ranges = self._check_replay(ranges, batch_time)
        handler = self.on_error
        spec = RemoteRanges(
            name=self.name,
            bootstrap_servers=self.bootstrap_servers,
            timeout_s=self.timeout_s,
            conf=self._conf(),
            key_deserializer=self.key_deserializer,
            value_deserializer=self.value_deserializer,
            on_error=None if handler is None else True if callable(handler) else DEAD_LETTER_SINK,
            tables=self.tables,
        )
        groups = _split_even(ranges, max(1, tasks))
        fetches = tuple(functools.partial(fetch_remote, spec, g, batch_time) for g in groups)
        return RemoteRead(fetches, functools.partial(self._finish_remote, batch_time))

    def _finish_remote(self, batch_time: BatchTime, extras: list[Any]) -> None:
        """In the driver, after every fetch of a `remote_read`: dead letters to the sink, or ``on_error`` calls."""
        bad: list[dict[str, Any]] = []
        calls: list[tuple[KafkaRecord, Any]] = []  # exceptions as the fetches kept them
        for dead, called in extras:
            bad.extend(dead)
            calls.extend(called)
        if calls:
            handler = self.on_error
            assert callable(handler)
            for raw, exc in sorted(calls, key=lambda c: (c[0].topic, c[0].partition, c[0].offset)):
                handler(raw, exc)
        self._dead.write(batch_time, _in_log_order(bad))

    def _check_replay(self, ranges: list[tuple[str, int, int, int]], batch_time: BatchTime) -> list[tuple[str, int, int, int]]:
        """Before replaying a plan of an earlier run: do its topics and partitions still hold the planned records?

        Returns the ranges to read: those of a deleted or recreated topic become
        empty with ``on_recreated_topic="earliest"`` (their records are gone);
        otherwise such a range raises SourceError naming topic and partition.
        """
        topics = sorted({t for t, _, f, u in ranges if u > f})
        if topics:
            self._await_brokers()
        infos: dict[str, TopicInfo | None] = {}
        for t in topics:
            try:
                infos[t] = self._topic_infos([t])[t]
            except _MissingTopicError:
                infos[t] = None
        readable = [(t, p) for t, p, f, u in ranges if u > f and (i := infos[t]) is not None and p in i.partitions]
        marks = self._offsets(readable) if readable else {}
        evidence: dict[str, str] = {}  # topic -> why its planned ranges are gone (one partition tells for all)
        for t, p, f, u in ranges:
            info = infos.get(t)
            if u <= f or t in evidence:
                continue
            if info is None:
                evidence[t] = f"topic {t} no longer exists"
            elif p not in info.partitions:
                evidence[t] = f"topic {t} partition {p} no longer exists (the topic has {len(info.partitions)} partition(s))"
            elif (old := self._topic_ids.get(t)) is not None and info.topic_id is not None and old != info.topic_id:
                evidence[t] = f"topic {t} was deleted and recreated (its topic ID changed from {old} to {info.topic_id})"
            elif marks[(t, p)].high < u:
                evidence[t] = (
                    f"topic {t} partition {p} ends at offset {marks[(t, p)].high}, before the planned "
                    f"range's end {u} (was the topic deleted and recreated?)"
                )
        out: list[tuple[str, int, int, int]] = []
        for t, p, f, u in ranges:
            why = evidence.get(t) if u > f else None
            if why is None:
                out.append((t, p, f, u))
                continue
            if self.on_recreated_topic == "fail":
                msg = (
                    f"kafka source {self.name!r}, batch {batch_time}: this batch was planned by an earlier "
                    f"run with offsets [{f}, {u}) of topic {t} partition {p}, but {why}. The batch cannot be "
                    "replayed exactly. If the topic was deleted on purpose, pass on_recreated_topic='earliest' "
                    "to the source: the batch is then replayed without those records (they are lost) and a "
                    "recreated topic is read from its earliest offset. See 'Deleted and recreated topics' in "
                    "docs/kafka.md."
                )
                raise SourceError(msg)
            log.warning(
                "kafka source %r, batch %d: replaying without offsets [%d, %d) of topic %s partition %d: %s (on_recreated_topic='earliest')",
                self.name,
                batch_time,
                f,
                u,
                t,
                p,
                why,
            )
            out.append((t, p, f, f))
        return out

    def _fetch(
        self,
        ranges: list[tuple[str, int, int, int]],
        out: list[list[Any]],
        bad: list[dict[str, Any]],
        batch_time: BatchTime,
        more: set[tuple[str, int]] | None = None,
    ) -> None:
        consumer = self._ensure_consumer()
        unknown = sorted({t for t, _, f, u in ranges if u > f} - self._known_topics)
        if unknown:
            self._learn_topics(consumer, unknown)
        fetch_ranges(self, ranges, out, bad, batch_time, self._carry, more)

    def _release_kept(self) -> None:
        """Unassign the partitions a backlog read kept assigned (see `Carry`); the caller holds the lock."""
        carry, consumer = self._carry, self._consumer
        if carry.consumer is not None and carry.consumer is consumer and consumer is not None:
            if carry.paused:
                consumer.resume(carry.paused)
            consumer.unassign()
        carry.drop()

    def _learn_topics(self, consumer: Consumer, topics: list[str]) -> None:
        """Ask the consumer for `topics`' metadata once, before it first assigns their partitions.

        librdkafka fetches an assigned partition only once the consumer's handle knows
        the partition's leader. A handle that never asked about the topic learns it at
        its next periodic topic scan (once a second): the first read of a fresh
        consumer (at start-up, after a restart) stalled up to ~1 s. Asked once per
        consumer: a failure is left to the read, which retries and reports an
        unreachable broker.
        """
        ck = _import_kafka()
        self._known_topics.update(topics)
        for topic in topics:
            try:
                consumer.list_topics(topic, timeout=min(1.0, self.timeout_s))
            except ck.KafkaException:
                return

    def commit_offsets(self, position: Data) -> None:
        """Commit `position` (as from :meth:`position`) to ``group_id``, asynchronously; no-op without it.

        The scheduler calls this after a batch's checkpoint commit, with the
        position planned for that batch (None: nothing to commit). The commit
        to the group only serves lag monitoring and ``starting_offsets=
        "committed"``: the checkpoint holds the positions. So it is sent and
        not waited for; a batch never waits for an unreachable group
        coordinator. The broker's answer arrives during a later read, commit
        or :meth:`close` (which waits at most about ``timeout_s`` for commits in
        flight): it counts in :attr:`offset_commits_ok` or
        :attr:`offset_commits_failed`, and a failure is logged as a warning (at
        most once a minute while it keeps failing).

        Raises:
            SourceError: `position` is not a position of this source.
        """
        if not self.group_id or position is None:
            return
        ck = _import_kafka()
        where = f"kafka source {self.name!r}: commit_offsets"
        if not isinstance(position, Mapping):
            msg = f"{where}: position is {type(position).__name__}, not a mapping"
            raise SourceError(msg)
        offsets = {k: off for k, off in position.items() if k not in (_IDS_KEY, _MARKS_KEY)}
        tps = [ck.TopicPartition(*_split_pkey(k, where), int(off)) for k, off in sorted(offsets.items())]
        if not tps:
            return
        with self._lock:
            consumer = self._ensure_consumer()
            if self._carry.consumer is None:  # nothing assigned: only serves the answers to earlier commits
                consumer.poll(0)  # (else the next read's consume serves them; a poll could take a record)
            try:
                consumer.commit(offsets=tps, asynchronous=True)
            except ck.KafkaException as exc:
                self._on_commit(exc.args[0] if exc.args else exc, tps)

    def _on_commit(self, err: Any, partitions: list[Any] | None) -> None:
        """librdkafka's answer to an offset commit (runs inside poll/consume/close)."""
        failed = [tp for tp in partitions or [] if getattr(tp, "error", None) is not None]
        if err is None and not failed:
            self.offset_commits_ok += 1
            if self._commit_warned_at is not None:
                log.info("kafka source %r: offset commits to group %r work again", self.name, self.group_id)
                self._commit_warned_at = None
            return
        self.offset_commits_failed += 1
        now = time.monotonic()
        if self._commit_warned_at is not None and now - self._commit_warned_at < _COMMIT_WARN_EVERY_S:
            return
        self._commit_warned_at = now
        what = err if err is not None else "; ".join(f"{tp.topic} partition {tp.partition}: {tp.error}" for tp in failed)
        log.warning(
            "kafka source %r: committing offsets to consumer group %r failed (%s; %d failure(s) so far). "
            "The batches themselves are committed in the checkpoint, which holds the positions: only the "
            "group's committed offsets (lag monitoring, starting_offsets='committed') lag behind. Check the "
            "group coordinator on %s.",
            self.name,
            self.group_id,
            what,
            self.offset_commits_failed,
            self.bootstrap_servers,
        )


def _split_even(ranges: list[_Range], pieces: int) -> list[list[_Range]]:
    """`ranges` cut into at most `pieces` runs of consecutive ranges with about as many records each (none empty)."""
    total = sum(u - f for _, _, f, u in ranges)
    if pieces <= 1 or total == 0:
        return [ranges]
    out: list[list[_Range]] = [[]]
    done = 0
    for r in ranges:
        if out[-1] and len(out) < pieces and done >= total * len(out) / pieces:
            out.append([])
        out[-1].append(r)
        done += r[3] - r[2]
    return out


# documented under streamkeep.sources.kafka (also keeps pickles of KafkaRecord unchanged)
for _public in (KafkaRecord, DeadLetterSink, PidRateEstimator):
    _public.__module__ = __name__
del _public


def _in_log_order(bad: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """A batch's dead letters by topic, partition and offset.

    Fetches return partitions interleaved as the brokers answer, so the order they were
    met in differs between a run and its replay; a dead-letter sink gets the same list
    (and a file sink writes the same bytes) either way.
    """
    if len(bad) > 1:
        bad.sort(key=lambda d: (d["topic"], d["partition"], d["offset"]))
    return bad
