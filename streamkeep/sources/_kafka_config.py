"""Kafka source configuration: argument validation, consumer settings and shared helpers.

Owns :class:`KafkaOptions` (the validated, normalised constructor arguments of
``streamkeep.sources.kafka.KafkaSource``), :func:`validate_options`,
:func:`consumer_conf` (the librdkafka settings the source always uses), the
lazy confluent-kafka import (extra ``streamkeep[kafka]``) and the
``"topic:partition"`` key helpers. No broker contact happens here.

Imports only ``streamkeep.errors``, ``streamkeep._util`` and ``streamkeep._kafka_log`` (its
``CLIENT_LOG``, shared with the Kafka sink, is re-exported here); must not import sinks, dstream, the
scheduler or executors.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from streamkeep._kafka_log import CLIENT_LOG
from streamkeep._util import import_optional
from streamkeep.errors import ConfigError, SourceError

__all__ = [
    "CLIENT_LOG",
    "OFFSET_INVALID",
    "RECREATED_MODES",
    "KafkaOptions",
    "consumer_conf",
    "import_kafka",
    "pkey",
    "split_pkey",
    "validate_options",
]

_TOPIC_RE = re.compile(r"^[A-Za-z0-9._-]{1,249}$")
_STARTING_MODES = ("earliest", "latest", "committed")
RECREATED_MODES = ("fail", "earliest")
# Keys the source sets itself; a consumer_config may not override them.
_OWNED_KEYS = frozenset(
    {"bootstrap.servers", "group.id", "enable.auto.commit", "enable.auto.offset.store", "auto.offset.reset", "enable.partition.eof"}
)
OFFSET_INVALID = -1001


def import_kafka() -> Any:
    """Return the ``confluent_kafka`` module, or raise ConfigError naming the pip extra."""
    return import_optional("confluent_kafka", "the Kafka source", "kafka")


def pkey(topic: str, partition: int) -> str:
    """The ``"topic:partition"`` key used in plans and positions."""
    return f"{topic}:{partition}"


def split_pkey(key: str, where: str) -> tuple[str, int]:
    """Split a ``"topic:partition"`` key; SourceError (prefixed with `where`) if malformed."""
    topic, sep, part = key.rpartition(":")
    if not sep or not topic or not part.isdigit():
        msg = f"{where}: {key!r} is not a 'topic:partition' key"
        raise SourceError(msg)
    return topic, int(part)


@dataclass(frozen=True)
class KafkaOptions:
    """The constructor arguments that needed checking, normalised.

    ``topics`` is sorted and deduplicated, ``name`` is filled in,
    ``starting_offsets`` is a mode string or a plain dict, and
    ``consumer_config`` is a copy.
    """

    topics: list[str]
    name: str
    starting_offsets: str | dict[tuple[str, int], int]
    consumer_config: dict[str, Any]


def validate_options(
    topics: str | Iterable[str],
    *,
    bootstrap_servers: str,
    name: str | None,
    starting_offsets: str | Mapping[tuple[str, int], int],
    max_records_per_partition: int | None,
    group_id: str | None,
    consumer_config: Mapping[str, Any] | None,
    on_error: object,
    max_rate_per_partition: float | None,
    timeout_s: float,
    retry_backoff_s: float,
    on_recreated_topic: str = "fail",
) -> KafkaOptions:
    """Check the KafkaSource arguments; ConfigError naming the source and the argument."""
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
        unread = sorted({t for t, _ in explicit} - set(topic_list))
        if unread:
            msg = (
                f"{where}: starting_offsets names topic(s) {unread} that the source does not read "
                f"(topics: {sorted(set(topic_list))}); fix the topic name or remove the entries"
            )
            raise ConfigError(msg)
    for label, val in (("max_records_per_partition", max_records_per_partition), ("max_rate_per_partition", max_rate_per_partition)):
        if val is not None and not val > 0:
            msg = f"{where}: {label} must be > 0 (got {val!r}); use None for no limit"
            raise ConfigError(msg)
    if on_recreated_topic not in RECREATED_MODES:
        msg = f"{where}: on_recreated_topic={on_recreated_topic!r} is not one of {RECREATED_MODES}"
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
        msg = (
            f"{where}: on_error must be a callable(record, exc) or a dead-letter sink with write() (see "
            f"streamkeep.sinks), or None (the default: an undecodable record fails the batch), got {on_error!r}"
        )
        raise ConfigError(msg)

    sorted_topics = sorted(set(topic_list))
    return KafkaOptions(
        topics=sorted_topics,
        name=name or "kafka-" + "+".join(sorted_topics),
        starting_offsets=explicit if explicit is not None else str(starting_offsets),
        consumer_config=cfg,
    )


def consumer_conf(consumer_config: Mapping[str, Any], *, bootstrap_servers: str, group_id: str, timeout_s: float = 30.0) -> dict[str, Any]:
    """librdkafka settings: defaults, then the user's `consumer_config`, then the keys the source owns."""
    # Fetches run only while reading a planned range; a short broker wait keeps
    # a watermark query from queueing behind an idle fetch (500 ms default).
    # The source never joins the group (it assigns partitions itself), so the
    # session timeout only bounds how long an offset commit waits for a group
    # coordinator (45 s by default): bound it by the source's timeout.
    # Connections: librdkafka's sparse mode (its default) connects to a broker only when a
    # request needs it, and not sooner than reconnect.backoff.ms / 2 (50 ms) after the
    # client's last connection; its bootstrap connection is dropped once the metadata names
    # the brokers. So a fresh client's first requests after that waited up to 50 ms for the
    # broker to be connected: every start-up and restart paid it before its first batch
    # (bench/restart_phases.py). Non-sparse, a client connects to the brokers as soon as it
    # learns them, in its own threads, while the job starts. It holds one connection per
    # broker of the cluster (a source reading a topic spread over the cluster needs most
    # of them anyway); reconnects keep librdkafka's backoff (reconnect.backoff.ms up to
    # reconnect.backoff.max.ms). consumer_config may set it back to True.
    session_ms = max(1000, min(int(timeout_s * 1000), 45_000))
    conf: dict[str, Any] = {
        "isolation.level": "read_committed",
        "fetch.wait.max.ms": 10,
        "session.timeout.ms": session_ms,
        "enable.sparse.connections": False,
        "logger": CLIENT_LOG,
    }
    conf.update(consumer_config)
    conf.update(
        {
            "bootstrap.servers": bootstrap_servers,
            "group.id": group_id,
            "enable.auto.commit": False,
            "enable.auto.offset.store": False,
            "auto.offset.reset": "error",
            "enable.partition.eof": True,
        }
    )
    return conf

