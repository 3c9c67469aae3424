"""Kafka JSON values decoded a batch at a time into Arrow (`kafka_json_tables`; ``streamkeep[tables]``).

The Kafka source delivers `KafkaRecord`s with raw ``bytes`` values (no
``value_deserializer``); this partition function joins a partition's values and
parses them with one ``pyarrow.json`` call into one table, plus the record
coordinates as columns. No ``json.loads`` and no dict per record. Imports layer 1 only.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from typing import Any

from streamkeep import _arrow
from streamkeep.errors import ConfigError, SourceError

_META = ("topic", "partition", "offset", "timestamp")


def kafka_json_tables(schema: Any = None, *, metadata: bool = True) -> Callable[[Iterator[Any]], Iterable[Any]]:
    """A ``map_partitions`` function turning a partition of Kafka records with JSON values into one table.

    Args:
        schema: a ``pyarrow.Schema`` for the values (None: inferred per partition and batch;
            give one so every batch has the same columns and types).
        metadata: add the columns ``_topic``, ``_partition``, ``_offset``, ``_timestamp``.

    Returns:
        ``f(records) -> [table]`` for ``DStream.map_partitions``: an empty partition gives
        no table; records with a None value (tombstones) are left out.

    Raises:
        ConfigError: pyarrow is not installed, or `schema` is not a ``pyarrow.Schema``.

    Example:
        >>> from streamkeep.tables import kafka_json_tables
        >>> # ssc.kafka_stream("events", bootstrap_servers=...).map_partitions(kafka_json_tables(schema))
    """
    pa = _arrow.pa("kafka_json_tables")
    _arrow.require("pyarrow.json", "kafka_json_tables")
    if schema is not None and not isinstance(schema, pa.Schema):
        msg = f"kafka_json_tables: schema must be a pyarrow.Schema or None, got {schema!r}"
        raise ConfigError(msg)

    def to_table(records: Iterator[Any]) -> Iterable[Any]:
        recs = [r for r in records if r.value is not None]
        if not recs:
            return []
        values = [r.value for r in recs]
        try:
            table = _arrow.json_values_table(values, schema, "kafka_json_tables")
        except ConfigError:
            raise
        except Exception as exc:
            first = recs[0]
            msg = (
                f"kafka_json_tables: the values of topic {first.topic} partition {first.partition} offsets "
                f"{first.offset}..{recs[-1].offset} are not all JSON documents{' of the schema' if schema is not None else ''} "
                f"({type(exc).__name__}: {exc}); to route bad records instead of failing the batch, decode with "
                f"value_deserializer=json.loads and on_error= on kafka_stream, then .to_tables()"
            )
            raise SourceError(msg) from exc
        if metadata:
            cols = {
                "_topic": pa.array([r.topic for r in recs], pa.string()),
                "_partition": pa.array([r.partition for r in recs], pa.int32()),
                "_offset": pa.array([r.offset for r in recs], pa.int64()),
                "_timestamp": pa.array([r.timestamp for r in recs], pa.int64()),
            }
            for name, arr in cols.items():
                table = table.append_column(name, arr)
        return [table]

    return to_table


__all__ = ["kafka_json_tables"]
