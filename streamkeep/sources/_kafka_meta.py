"""Kafka metadata in few round trips: topic IDs, partitions and watermarks.

Owns the AdminClient queries of ``streamkeep.sources.kafka.KafkaSource``:
:func:`admin_conf` (the admin settings derived from the consumer's),
:func:`start_describe` / :func:`collect_describe` (partitions and topic IDs of
all topics in one request) and :func:`start_offsets` / :func:`collect_offsets`
(earliest and end offsets of all partitions, one request per leader). The
``start_*`` functions send the requests and return futures, so a caller can
have both in flight at once: a plan then costs about one round trip however
many partitions it covers (one ``get_watermark_offsets`` per partition cost one
round trip each).

Imports only ``streamkeep.sources._kafka_config``; must not import sinks,
dstream, the scheduler or executors.
"""

from __future__ import annotations

import importlib
from collections.abc import Mapping
from concurrent.futures import Future
from typing import Any, NamedTuple

from streamkeep.sources._kafka_config import import_kafka

__all__ = ["NO_TOPIC_ID", "Offsets", "TopicInfo", "admin_conf", "collect_describe", "collect_offsets", "start_describe", "start_offsets"]

# The all-zero UUID: what brokers without topic IDs (Kafka < 2.8) report.
NO_TOPIC_ID = "AAAAAAAAAAAAAAAAAAAAAA"

# Consumer-only settings that an admin client (a producer-type handle) would only warn about.
_CONSUMER_ONLY = (
    "group.",
    "fetch.",
    "isolation.level",
    "enable.auto.",
    "enable.partition.eof",
    "auto.",
    "session.timeout.ms",
    "heartbeat.interval.ms",
    "max.poll.interval.ms",
    "partition.assignment.strategy",
    "queued.",
    "check.crcs",
    "coordinator.query.interval.ms",
    "consume.callback.max.messages",
    "max.partition.fetch.bytes",
    "on_commit",
    "client.rack",
)


class TopicInfo(NamedTuple):
    """A topic's ID (None when the brokers report none) and its partitions, sorted."""

    topic_id: str | None
    partitions: list[int]


class Offsets(NamedTuple):
    """A partition's earliest offset (low watermark) and end offset (high watermark or LSO)."""

    low: int
    high: int


def admin_conf(consumer_conf: Mapping[str, Any]) -> dict[str, Any]:
    """The consumer's connection settings (bootstrap, security, sockets) without its consumer-only keys."""
    return {k: v for k, v in consumer_conf.items() if not any(k == p or k.startswith(p) for p in _CONSUMER_ONLY)}


def start_describe(admin: Any, topics: list[str], timeout_s: float) -> dict[str, Future[Any]]:
    """Send one DescribeTopics request for `topics`; futures by topic name."""
    ck = import_kafka()
    futs: dict[str, Future[Any]] = admin.describe_topics(ck.TopicCollection(list(topics)), request_timeout=timeout_s)
    return futs


def collect_describe(futs: Mapping[str, Future[Any]]) -> dict[str, TopicInfo]:
    """Wait for :func:`start_describe`'s answers; raises the first KafkaException."""
    out: dict[str, TopicInfo] = {}
    for topic, fut in futs.items():
        desc = fut.result()
        raw = desc.topic_id
        tid = None if raw is None or str(raw) == NO_TOPIC_ID else str(raw)
        out[topic] = TopicInfo(tid, sorted(int(p.id) for p in desc.partitions))
    return out


def start_offsets(admin: Any, parts: list[tuple[str, int]], *, read_committed: bool, timeout_s: float) -> tuple[dict[Any, Future[Any]], dict[Any, Future[Any]]]:
    """Send ListOffsets requests (earliest and end) for `parts`; two dicts of futures."""
    ck = import_kafka()
    spec: Any = importlib.import_module("confluent_kafka.admin").OffsetSpec
    level = ck.IsolationLevel.READ_COMMITTED if read_committed else ck.IsolationLevel.READ_UNCOMMITTED
    lo = admin.list_offsets(
        {ck.TopicPartition(t, p): spec.earliest() for t, p in parts}, isolation_level=level, request_timeout=timeout_s
    )
    hi = admin.list_offsets(
        {ck.TopicPartition(t, p): spec.latest() for t, p in parts}, isolation_level=level, request_timeout=timeout_s
    )
    return lo, hi


def collect_offsets(futs: tuple[Mapping[Any, Future[Any]], Mapping[Any, Future[Any]]]) -> dict[tuple[str, int], Offsets]:
    """Wait for :func:`start_offsets`' answers; raises the first KafkaException."""
    ck = import_kafka()
    lo_futs, hi_futs = futs
    lows = {(str(tp.topic), int(tp.partition)): int(f.result().offset) for tp, f in lo_futs.items()}
    highs = {(str(tp.topic), int(tp.partition)): int(f.result().offset) for tp, f in hi_futs.items()}
    for k in lows:
        if lows[k] < 0 or highs.get(k, -1) < 0:  # no answer (e.g. a leader in transition): ask again
            reason = f"no offsets for {k[0]} partition {k[1]} (got {lows[k]}, {highs.get(k)})"
            raise ck.KafkaException(ck.KafkaError(ck.KafkaError._NO_OFFSET, reason))
    return {k: Offsets(lows[k], highs[k]) for k in lows}
