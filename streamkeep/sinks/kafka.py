"""Kafka output: one producer transaction per batch time, with a marker record.

Owns :class:`KafkaSink`. confluent-kafka is imported lazily (extra
``streamkeep[kafka]``). Imports only ``streamkeep.errors`` and
``streamkeep._types``; must not import sources (not even the Kafka source),
dstream, the scheduler or executors.
"""

from __future__ import annotations

import contextlib
import json
import logging
import re
import threading
import time
import traceback
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

from streamkeep import _faults
from streamkeep._kafka_log import CLIENT_LOG
from streamkeep._kafka_reach import require_brokers
from streamkeep._types import BatchTime
from streamkeep._util import gc_resumed, import_optional, retry_with_backoff, user_function_error
from streamkeep.errors import CheckpointInUseError, ConfigError, SinkError
from streamkeep.sinks.base import FencingToken

if TYPE_CHECKING:
    from confluent_kafka import Consumer, Producer

__all__ = ["KafkaSink"]

log = logging.getLogger(__name__)

_OWNED_KEYS = frozenset({"bootstrap.servers", "transactional.id", "enable.idempotence"})
_TOPIC_RE = re.compile(r"^[A-Za-z0-9._-]{1,249}$")


def _import_kafka() -> Any:
    return import_optional("confluent_kafka", "KafkaSink", "kafka")


def _to_bytes(obj: Any) -> bytes:
    if isinstance(obj, bytes):
        return obj
    if isinstance(obj, str):
        return obj.encode("utf-8")
    return json.dumps(obj, ensure_ascii=False, separators=(",", ":")).encode("utf-8")


class _Commit:
    """``producer.commit_transaction`` with what is left of the deadline, for `retry_with_backoff`.

    Not a closure: a closure's cell stays reachable from the traceback of its frame even after
    ``traceback.clear_frames``, and kept the failed producer (and its retries of a dead broker) alive.
    """

    __slots__ = ("deadline", "producer")

    def __init__(self, producer: Producer, deadline: float) -> None:
        self.producer = producer
        self.deadline = deadline

    def __call__(self) -> None:
        self.producer.commit_transaction(max(0.1, self.deadline - time.monotonic()))


class KafkaSink:
    """Writes each batch to a Kafka topic in one transaction; a replay adds nothing.

    **How a replay is recognised.** Every batch ``T`` is written in one producer
    transaction (``transactional.id = "streamkeep-sink-<name>"``, idempotent
    producer) holding the batch's records *and* one marker record, key ``name``,
    value ``{"sink", "batch_time", "records", "topic"}`` (JSON; plus ``"epoch"`` and
    ``"checkpoint"`` in a job with a checkpoint), on partition 0
    of the marker topic (default ``"streamkeep-markers-<name>"``). Kafka commits
    both or neither. On open (and after any failure) the sink calls
    ``init_transactions`` — which fences a previous producer with the same id
    and aborts or completes its open transaction — then reads the tail of the
    marker partition with ``read_committed`` to learn the last applied batch
    time; a write for a batch time not after it is skipped. While the sink
    lives it tracks the marker in memory, as the transactional id guarantees it
    is the only writer.

    **Zombie fencing.** Kafka fences by ``transactional.id``: every
    ``init_transactions`` with the id bumps its producer epoch on the broker, and
    from then on every transactional request of an older producer with that id
    (a driver that lost the checkpoint while paused) fails with a fatal
    ``PRODUCER_FENCED``/``INVALID_PRODUCER_EPOCH``; its open transaction is
    aborted. So once a newer driver has opened its sink, a zombie can neither
    commit a transaction it had begun nor start a new one; its write raises
    SinkError. Two more guards keep a zombie from fencing the newer driver in
    turn (which a new ``init_transactions`` after a retriable error would do): with
    a checkpoint (see `FencedSink`) the sink calls the driver's ownership check
    before every ``init_transactions`` and every transaction, and marker records carry the driver's
    claim epoch and checkpoint id, so a sink that finds a marker of a newer epoch
    of its checkpoint refuses to write (`CheckpointInUseError`). The fence is per
    ``transactional.id``: two jobs must not share a sink name.

    Why a marker record rather than ``send_offsets_to_transaction`` (committing
    "offset = T" for a private consumer group in the transaction): both are
    atomic with the records on a real broker, but the librdkafka mock cluster
    used in tests accepts TxnOffsetCommit without storing it, and group offsets
    expire with ``offsets.retention.minutes``. A marker topic created with
    ``cleanup.policy=compact`` keeps the last marker per sink forever.

    **What the broker must provide.** Transactions (Kafka >= 0.11) and, where
    topics are not auto-created, a marker topic (1 partition, compacted; several
    sinks may share one through ``marker_topic=``, at the price of a longer
    scan on open). Consumers of ``topic`` must read with
    ``isolation.level=read_committed`` to see each batch exactly once. Caveat
    found in testing: the librdkafka mock cluster does not hide aborted
    transactions from read_committed consumers, so there a batch cut off by a
    crash *inside* its transaction stays visible and is written again on replay;
    a replay of a batch whose transaction committed is skipped on any broker.
    Nor does the mock fence an older producer with the same ``transactional.id``
    (a zombie's transaction commits there), so the tests check the sink's own
    guards (ownership check, marker epochs) and leave the broker's epoch fence to
    a real broker.

    Args:
        topic: the output topic.
        bootstrap_servers: Kafka ``bootstrap.servers``.
        name: the sink's name: keys the marker and the transactional id, so keep
            it stable and unique per job.
        key: ``record -> bytes | str | None``: the record's key (default: no key).
        value: ``record -> bytes | str``: the record's value (default: bytes as
            is, str as UTF-8, anything else as compact JSON).
        marker_topic: topic of the marker records.
        producer_config: extra librdkafka producer settings (security, batching,
            ``transaction.timeout.ms``); the keys the sink owns are refused.
        timeout_s: bound for each transactional call and for the marker read; also
            how long the first `open` waits for a bootstrap address to accept a connection
            (30 s by default: brokers that come up a little later are fine; when
            none does at once a WARNING names the address and why right away).
        max_retries: retries of a batch whose transaction was aborted by a
            retriable error.

    Raises:
        ConfigError: a bad argument, or confluent-kafka is missing.

    Example:
        >>> sink = KafkaSink("totals", bootstrap_servers="127.0.0.1:9092", name="totals",
        ...                  key=lambda kv: kv[0], value=lambda kv: str(kv[1]))
        >>> sink.marker_topic
        'streamkeep-markers-totals'
    """

    def __init__(
        self,
        topic: str,
        *,
        bootstrap_servers: str,
        name: str,
        key: Callable[[Any], bytes | str | None] | None = None,
        value: Callable[[Any], bytes | str] | None = None,
        marker_topic: str | None = None,
        producer_config: Mapping[str, Any] | None = None,
        timeout_s: float = 30.0,
        max_retries: int = 3,
    ) -> None:
        if not isinstance(name, str) or not name:
            msg = "KafkaSink needs a non-empty name= (it keys the transactional id and marker)"
            raise ConfigError(msg)
        where = f"KafkaSink {name!r}"
        safe = re.sub(r"[^A-Za-z0-9._-]", "_", name)
        marker = marker_topic or f"streamkeep-markers-{safe}"
        for label, t in (("topic", topic), ("marker_topic", marker)):
            if not isinstance(t, str) or not _TOPIC_RE.match(t):
                msg = f"{where}: {label} {t!r} is not a valid Kafka topic name (1-249 characters of A-Z a-z 0-9 . _ -)"
                raise ConfigError(msg)
        if marker == topic:
            msg = f"{where}: marker_topic must differ from the output topic {topic!r}"
            raise ConfigError(msg)
        if not isinstance(bootstrap_servers, str) or not bootstrap_servers.strip():
            msg = f"{where}: bootstrap_servers must be a 'host:port[,host:port]' string"
            raise ConfigError(msg)
        cfg = dict(producer_config or {})
        owned = sorted(_OWNED_KEYS & cfg.keys())
        if owned:
            msg = f"{where}: producer_config may not set {owned}; the sink sets them"
            raise ConfigError(msg)
        if not timeout_s > 0 or max_retries < 0:
            msg = f"{where}: need timeout_s > 0 and max_retries >= 0"
            raise ConfigError(msg)
        self.name = name
        self.topic = topic
        self.bootstrap_servers = bootstrap_servers
        self.marker_topic = marker
        self.transactional_id = f"streamkeep-sink-{name}"
        self.timeout_s = timeout_s
        self.max_retries = max_retries
        self._key = key
        self._value = value
        self._producer_config = cfg
        self._producer: Producer | None = None
        self._reached = False  # a bootstrap address accepted a connection once (_await_brokers)
        self._last: BatchTime | None = None
        self._token: FencingToken | None = None
        self._lock = threading.Lock()

    def set_fencing_token(self, token: FencingToken) -> None:
        """Fence with the driver's claim epoch (checked before init_transactions and in the markers)."""
        self._token = token

    # ------------------------------------------------------------------ lifecycle
    def open(self) -> None:
        """Start the transactional producer (fencing older ones) and read the marker.

        Raises:
            SinkError: the broker is unreachable or refuses transactions.
        """
        with self._lock:
            self._ensure_producer()

    def close(self) -> None:
        """Flush and drop the producer; safe to call twice."""
        with self._lock:
            producer, self._producer = self._producer, None
            if producer is not None:
                producer.flush(self.timeout_s)

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_producer"] = None
        state["_lock"] = None
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._lock = threading.Lock()

    def last_batch(self) -> BatchTime | None:
        """The last batch time this sink applied (as known from the marker topic)."""
        with self._lock:
            self._ensure_producer()
            return self._last

    def _await_brokers(self) -> None:
        """Wait up to ``timeout_s`` for a bootstrap address to accept a connection; say at once why none does.

        (init_transactions would wait its whole timeout and then say only that it timed out.)

        Only before the first producer: later ones (after a failure) retry as before.

        Raises:
            SinkError: none did (names the addresses and why).
        """
        if self._reached:
            return
        require_brokers(
            f"KafkaSink {self.name!r}",
            self.bootstrap_servers,
            timeout_s=self.timeout_s,
            first_backoff_s=0.1,
            setting="KafkaSink",
            after="The batch is not committed.",
            error=SinkError,
            log=log,
        )
        self._reached = True

    def _ensure_producer(self) -> Producer:
        if self._producer is not None:
            return self._producer
        ck = _import_kafka()
        self._await_brokers()
        # librdkafka's log lines go to Python logging, repeats collapsed, unless the user set a logger.
        conf: dict[str, Any] = {"acks": "all", "linger.ms": 5, "logger": CLIENT_LOG}
        conf.update(self._producer_config)
        conf.update({"bootstrap.servers": self.bootstrap_servers, "transactional.id": self.transactional_id, "enable.idempotence": True})
        if self._token is not None:
            self._token.check()  # init_transactions fences whoever holds the id: only the owner may do it
        try:
            producer: Producer = ck.Producer(conf)
        except ck.KafkaException as exc:
            msg = f"KafkaSink {self.name!r}: cannot create the producer: {exc}"
            raise ConfigError(msg) from exc
        try:
            producer.init_transactions(self.timeout_s)
        except ck.KafkaException as exc:
            producer.poll(0)  # hand the client's queued log lines (why it failed) to the logger
            # Drop the handle now: the traceback would keep it (and its retries) alive.
            del producer
            msg = (
                f"KafkaSink {self.name!r}: cannot start transactions (transactional.id "
                f"{self.transactional_id!r}) on {self.bootstrap_servers} within "
                f"{self.timeout_s:g} s: {exc}. Check that the brokers are reachable and "
                "support transactions; the batch is not committed."
            )
            raise SinkError(msg) from exc
        try:
            self._last = self._read_marker()
        except (SinkError, CheckpointInUseError):
            producer.poll(0)
            del producer
            raise
        self._producer = producer
        return producer

    # ------------------------------------------------------------------ marker
    def _read_marker(self) -> BatchTime | None:
        """Scan the marker partition's tail (growing the window) for this sink's newest marker."""
        ck = _import_kafka()
        consumer: Consumer = ck.Consumer(
            {
                "bootstrap.servers": self.bootstrap_servers,
                "group.id": f"{self.transactional_id}-markers",
                "isolation.level": "read_committed",
                "enable.auto.commit": False,
                "enable.partition.eof": True,
                "auto.offset.reset": "earliest",
                "fetch.wait.max.ms": 10,
                "logger": self._producer_config.get("logger", CLIENT_LOG),
                **{k: v for k, v in self._producer_config.items() if k.startswith(("security.", "sasl.", "ssl."))},
            }
        )
        where = f"KafkaSink {self.name!r}: reading marker topic {self.marker_topic!r}"
        try:
            md = consumer.list_topics(self.marker_topic, timeout=self.timeout_s)
            tmd = md.topics.get(self.marker_topic)
            if tmd is not None and tmd.error is not None:
                if tmd.error.code() == ck.KafkaError.UNKNOWN_TOPIC_OR_PART:
                    return None  # the broker says: no marker topic yet, so no batch applied
                raise ck.KafkaException(tmd.error)
            tp = ck.TopicPartition(self.marker_topic, 0)
            lo, hi = consumer.get_watermark_offsets(tp, timeout=self.timeout_s, cached=False)
            window = 64
            while True:
                start = max(lo, hi - window)
                found = self._scan(consumer, start, hi, where)
                if found is not None or start <= lo:
                    return found
                window *= 8
        except ck.KafkaException as exc:
            msg = (
                f"{where} failed: {exc}. Without the marker a replay could write a batch "
                "twice, so the sink does not write; check the brokers and restart."
            )
            raise SinkError(msg) from exc
        finally:
            consumer.close()

    def _scan(self, consumer: Consumer, start: int, end: int, where: str) -> BatchTime | None:
        ck = _import_kafka()
        if end <= start:
            return None
        consumer.assign([ck.TopicPartition(self.marker_topic, 0, start)])
        best: BatchTime | None = None
        deadline = time.monotonic() + self.timeout_s
        own = self.name.encode("utf-8")
        try:
            while time.monotonic() < deadline:
                m = consumer.poll(0.1)
                if m is None:
                    if consumer.position([ck.TopicPartition(self.marker_topic, 0)])[0].offset >= end:
                        return best
                    continue
                err = m.error()
                if err is not None:
                    if err.code() == ck.KafkaError._PARTITION_EOF:
                        return best
                    if err.fatal() or err.code() in (ck.KafkaError._AUTO_OFFSET_RESET, ck.KafkaError.OFFSET_OUT_OF_RANGE):
                        raise ck.KafkaException(err)
                    continue
                if m.key() == own:
                    try:
                        doc = json.loads(m.value() or b"")
                        bt = int(doc["batch_time"])
                        epoch = int(doc.get("epoch", 0))
                    except (TypeError, ValueError, KeyError, AttributeError) as exc:
                        msg = (
                            f"{where}: record at offset {m.offset()} has key {self.name!r} "
                            f"but is not a streamkeep marker ({exc!r}); is the topic "
                            "used by something else? Pass another marker_topic=."
                        )
                        raise SinkError(msg) from exc
                    token = self._token
                    if token is not None and doc.get("checkpoint") == token.checkpoint_id and epoch > token.epoch:
                        msg = (
                            f"KafkaSink {self.name!r}: marker of batch {bt} (offset {m.offset()}) was written by a newer "
                            f"driver (epoch {epoch}) of this job's checkpoint; this driver (epoch {token.epoch}) lost the "
                            "checkpoint and stops without writing."
                        )
                        raise CheckpointInUseError(msg)
                    best = bt if best is None else max(best, bt)
                if (m.offset() or 0) >= end - 1:
                    return best
            msg = f"{where}: offsets [{start}, {end}) not read within {self.timeout_s:g} s"
            raise SinkError(msg)
        finally:
            consumer.unassign()

    # ------------------------------------------------------------------ write
    def _encode(
        self,
        batch_time: BatchTime,
        records: list[Any],
    ) -> list[tuple[bytes | None, bytes]]:
        out: list[tuple[bytes | None, bytes]] = []
        for i, rec in enumerate(records):
            try:
                k = None if self._key is None else self._key(rec)
                v = _to_bytes(rec) if self._value is None else self._value(rec)
            except Exception as exc:
                if self._key is None and self._value is None:
                    msg = (
                        f"KafkaSink {self.name!r}, batch {batch_time}: record #{i} "
                        f"({type(rec).__name__}) cannot be encoded as JSON: {exc}; pass "
                        "value= to serialise it"
                    )
                    raise SinkError(msg) from exc
                err = user_function_error(
                    "",
                    exc,
                    batch_time,
                    f"KafkaSink {self.name}",
                    detail=f" for record #{i}; nothing was written",
                    subject=f"KafkaSink {self.name!r}: the key/value serialiser",
                )
                raise err from exc
            out.append((None if k is None else _to_bytes(k), _to_bytes(v)))
        return out

    def write(self, batch_time: BatchTime, records: list[Any]) -> None:
        """Write the batch and its marker in one transaction, unless already applied.

        Raises:
            SinkError: the transaction failed after retries (nothing of the batch
                is visible to read_committed consumers), or another producer
                took over the transactional id.
            UserFunctionError: a key/value serialiser raised (nothing written).
        """
        self._write_encoded(batch_time, self._encode(batch_time, records))

    # -- in parts (PartitionWritable) ------------------------------------------------------

    def partition_writable(self) -> bool:
        """True: on Ray the key/value serialisers run in the workers holding the records (`write_part`)."""
        return True

    def write_part(self, batch_time: BatchTime, attempt: str, index: int, records: list[Any]) -> list[tuple[bytes | None, bytes]]:
        """Serialise part `index`'s records (a worker): its ``(key, value)`` bytes, produced by `publish`.

        Raises:
            SinkError: a record cannot be encoded as JSON.
            UserFunctionError: a key/value serialiser raised.
        """
        return self._encode(batch_time, records)

    def publish(self, batch_time: BatchTime, attempt: str, receipts: list[Any]) -> None:
        """Write every part's serialised records and the marker in the one transaction of the batch, as `write` does.

        A Kafka transaction belongs to one producer, so the batch's records are produced by
        the driver's: that keeps a batch all-or-nothing and exactly once whatever the parts.
        """
        self._write_encoded(batch_time, [kv for part in receipts for kv in part])

    def _write_encoded(self, batch_time: BatchTime, encoded: list[tuple[bytes | None, bytes]]) -> None:
        ck = _import_kafka()
        with self._lock, contextlib.ExitStack() as stalled:
            attempt = 0
            while True:
                self._ensure_producer()
                if self._last is not None and batch_time <= self._last:
                    log.info("KafkaSink %r: batch %d already applied (marker %d); skipped", self.name, batch_time, self._last)
                    return
                if self._token is not None:
                    self._token.check()  # free while the driver's lease is fresh; the broker's epoch fence is the backstop
                try:
                    self._transaction(batch_time, encoded)
                except ck.KafkaException as exc:
                    err = exc.args[0] if exc.args else None
                    attempt += 1
                    self._discard_producer(err)
                    traceback.clear_frames(exc.__traceback__)
                    retriable = err is not None and not err.fatal() and (err.retriable() or err.txn_requires_abort())
                    if not retriable or attempt > self.max_retries:
                        fenced = err is not None and err.fatal()
                        hint = (
                            " Another producer took over the transactional id: is a second job running with this sink name?"
                            if fenced
                            else " Check the brokers; the batch is not committed and is written again after a restart."
                        )
                        msg = f"KafkaSink {self.name!r}, batch {batch_time}: transaction failed after {attempt} attempt(s): {exc}.{hint}"
                        raise SinkError(msg) from exc
                    if attempt == 1:  # the retries may wait out a broker's absence: the collector runs meanwhile
                        stalled.enter_context(gc_resumed())
                    # The text, not the exception: a handler keeping the record (a buffer, pytest's caplog)
                    # would keep its traceback and with it the dropped producer, retrying a dead broker.
                    log.warning(
                        "KafkaSink %r, batch %d: transaction failed (attempt %d), retrying: %s", self.name, batch_time, attempt, str(exc)
                    )
                    continue
                self._last = batch_time
                return

    def _transaction(self, batch_time: BatchTime, encoded: list[tuple[bytes | None, bytes]]) -> None:
        ck = _import_kafka()
        producer = self._producer
        assert producer is not None
        deadline = time.monotonic() + self.timeout_s
        producer.begin_transaction()
        for k, v in encoded:
            while True:
                try:
                    producer.produce(self.topic, value=v, key=k)
                    break
                except BufferError:
                    if time.monotonic() >= deadline:
                        raise ck.KafkaException(
                            ck.KafkaError(ck.KafkaError._TIMED_OUT, "local producer queue stayed full", txn_requires_abort=True)
                        ) from None
                    producer.poll(0.05)
            producer.poll(0)
        _faults.point("kafka_sink.after_send")
        doc: dict[str, Any] = {"sink": self.name, "batch_time": batch_time, "records": len(encoded), "topic": self.topic}
        if self._token is not None:
            doc.update(epoch=self._token.epoch, checkpoint=self._token.checkpoint_id)
        marker = json.dumps(doc, separators=(",", ":")).encode("utf-8")
        producer.produce(self.marker_topic, value=marker, key=self.name.encode("utf-8"), partition=0)
        _faults.point("kafka_sink.after_marker")

        def give_up(exc: BaseException, _attempt: int, _delay_s: float) -> BaseException | None:
            err = exc.args[0] if exc.args else None
            # A retriable commit error (e.g. timeout) may be retried with the same call.
            if err is None or not err.retriable() or err.txn_requires_abort() or time.monotonic() >= deadline:
                return exc  # re-raised as is
            return None

        retry_with_backoff(
            _Commit(producer, deadline),
            retry_on=ck.KafkaException,
            first_s=0.05,
            cap_s=0.05,
            give_up=give_up,
        )
        _faults.point("kafka_sink.after_commit")

    def _discard_producer(self, err: Any) -> None:
        """Abort what can be aborted and drop the producer, so the marker is read again."""
        ck = _import_kafka()
        producer, self._producer = self._producer, None
        self._last = None
        if producer is None:
            return
        if err is not None and not err.fatal():
            try:
                producer.abort_transaction(self.timeout_s)
            except ck.KafkaException as exc:
                log.warning("KafkaSink %r: abort_transaction failed: %s", self.name, str(exc))  # not exc: it holds the producer
        producer.purge()
        producer.poll(0)  # hand the client's queued log lines to the logger
