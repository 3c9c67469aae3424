"""Kafka records as Arrow tables (``streamkeep[tables]``): `KafkaTables` and `kafka_json_tables`.

`KafkaTables` is the ``tables=`` option of ``kafka_stream`` / `KafkaSource`: the read
loop keeps each planned partition's consumer messages as they are (no `KafkaRecord`,
no deserialiser call per record) and `messages_table` turns them into one table per
partition: the values as one binary or UTF-8 column built by pyarrow from the list
of values, or parsed as JSON documents by one ``pyarrow.json`` call, plus optional
key and coordinate columns. A value that cannot be decoded is handed to a callback
(the source's ``on_error`` rules: dead letters, a callable, or a SourceError).

`kafka_json_tables` is the older, record-based way: a ``map_partitions`` function
over the `KafkaRecord` of each record, with raw values.

Imports layer 1 only (pyarrow when a batch is converted); must not import the rest
of the Kafka source (``_kafka_read`` imports this module).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any

from streamkeep import _arrow
from streamkeep.errors import ConfigError, SourceError

#: The value formats of `KafkaTables`.
FORMATS = ("binary", "string", "json")

#: What `messages_table` calls for a message whose value cannot be decoded: ``(message, error)``.
Reject = Callable[[Any, Exception], None]


@dataclass(frozen=True)
class KafkaTables:
    """How a Kafka source delivers a batch: one ``pyarrow.Table`` per planned partition, no Python object per record.

    Pass it (or just the format, ``tables="json"``) as ``tables=`` to ``kafka_stream``
    or `KafkaSource`. Each non-empty partition of a batch is then one table whose rows
    are the partition's records of the batch, in offset order: exactly the records a
    record stream would hold (same offset ranges, same checkpointed positions). The
    stream is a table stream: continue with ``map_tables``, ``aggregate_state``, a
    ``ParquetSink``, or ``to_records()``.

    Args:
        values: ``"binary"`` (a ``value`` column of bytes), ``"string"`` (a ``value``
            column of UTF-8 text) or ``"json"`` (every value is a JSON object; its fields
            become the columns).
        schema: for ``"json"``: a ``pyarrow.Schema`` to parse with (fields the schema
            lacks are dropped, missing ones are null), so every batch has the same
            columns; None infers the columns per partition and batch.
        metadata: add the columns ``_topic``, ``_partition``, ``_offset``, ``_timestamp``
            (ms since the epoch, null when the broker has none).
        keys: add a ``_key`` column (the raw key bytes, null for no key).

    A record without a value (a tombstone) is a row with a null value (``"json"``: null
    fields). A value that is not UTF-8 (``"string"``) or not one JSON object of the
    schema (``"json"``) is handled as the source's ``on_error`` says for any
    undecodable record: routed to the dead-letter sink or the callable (with a
    `KafkaRecord` of the raw record) and left out of the table, or, without
    ``on_error``, a SourceError naming topic, partition and offset.

    Raises:
        ConfigError: an unknown format, a schema that is not a ``pyarrow.Schema`` or
            given for another format than ``"json"``, or pyarrow is not installed.

    Example:
        >>> from streamkeep.tables import KafkaTables
        >>> KafkaTables("string").values
        'string'
        >>> # ssc.kafka_stream("events", bootstrap_servers=..., tables=KafkaTables("json", schema=schema))
    """

    values: str = "binary"
    schema: Any = None
    metadata: bool = False
    keys: bool = False

    def __post_init__(self) -> None:
        if self.values not in FORMATS:
            msg = f"KafkaTables: values must be one of {', '.join(map(repr, FORMATS))}, got {self.values!r}"
            raise ConfigError(msg)
        pa = _arrow.pa(f"KafkaTables({self.values!r})")
        if self.schema is not None:
            if self.values != "json":
                msg = f"KafkaTables: a schema applies to values='json' only (the {self.values!r} column's type is fixed); drop schema="
                raise ConfigError(msg)
            if not isinstance(self.schema, pa.Schema):
                msg = f"KafkaTables: schema must be a pyarrow.Schema or None, got {self.schema!r}"
                raise ConfigError(msg)
        if self.values == "json":
            _arrow.require("pyarrow.json", "KafkaTables('json')")
        for flag in ("metadata", "keys"):
            if not isinstance(getattr(self, flag), bool):
                msg = f"KafkaTables: {flag} must be True or False, got {getattr(self, flag)!r}"
                raise ConfigError(msg)

    def describe(self) -> dict[str, Any]:
        """Plain data for the source's description (stored in the checkpoint)."""
        return {"values": self.values, "schema": None if self.schema is None else str(self.schema), "metadata": self.metadata, "keys": self.keys}


def as_kafka_tables(tables: KafkaTables | str | None, where: str) -> KafkaTables | None:
    """The ``tables=`` option of a Kafka source as a `KafkaTables` (a format name is a shortcut)."""
    if tables is None or isinstance(tables, KafkaTables):
        return tables
    if isinstance(tables, str):
        return KafkaTables(tables)
    msg = f"{where}: tables must be None, one of {', '.join(map(repr, FORMATS))} or a KafkaTables, got {tables!r}"
    raise ConfigError(msg)


def messages_table(spec: KafkaTables, msgs: list[Any], reject: Reject) -> list[Any]:
    """The consumer messages of one partition's range (offset order, no errors) as ``[table]``; ``[]`` when none is left.

    `reject` is called, in offset order, for each message whose value cannot be decoded;
    that message is left out (the callback may raise instead).
    """
    if not msgs:
        return []
    pa = _arrow.pa("KafkaTables")
    message = type(msgs[0])
    values: list[bytes | None] = list(map(message.value, msgs))
    if spec.values == "json":
        table, keep = _json_table(spec.schema, values, msgs, reject)
    else:
        column = pa.array(values, pa.binary())
        keep = None
        if spec.values == "string":
            column, keep = _utf8(column, values, msgs, reject)
        table = pa.table({"value": column})
    if keep is not None:  # some records were rejected: their coordinates go too
        if not keep:
            return []
        msgs = [msgs[i] for i in keep]
    if spec.keys:
        table = table.append_column("_key", pa.array(list(map(message.key, msgs)), pa.binary()))
    if spec.metadata:
        n = len(msgs)
        first = msgs[0]
        table = table.append_column("_topic", pa.repeat(pa.scalar(first.topic(), pa.string()), n))
        table = table.append_column("_partition", pa.repeat(pa.scalar(first.partition(), pa.int32()), n))
        table = table.append_column("_offset", pa.array(list(map(message.offset, msgs)), pa.int64()))
        stamps = [ts if kind else None for kind, ts in map(message.timestamp, msgs)]
        table = table.append_column("_timestamp", pa.array(stamps, pa.int64()))
    return [table]


def _utf8(column: Any, values: list[bytes | None], msgs: list[Any], reject: Reject) -> tuple[Any, list[int] | None]:
    """A binary column as UTF-8 text; values that are not UTF-8 are rejected and left out."""
    pa = _arrow.pa("KafkaTables('string')")
    try:
        return column.cast(pa.string()), None
    except pa.ArrowInvalid:
        pass
    keep: list[int] = []  # some value is not UTF-8: find which (rare; per value)
    for i, value in enumerate(values):
        if value is not None:
            try:
                value.decode()
            except UnicodeDecodeError as exc:
                reject(msgs[i], exc)
                continue
        keep.append(i)
    return column.take(keep).cast(pa.string()), keep


def _json_table(schema: Any, values: list[bytes | None], msgs: list[Any], reject: Reject) -> tuple[Any, list[int] | None]:
    """Every value parsed as one JSON object, in one ``pyarrow.json`` call when they all are; otherwise the good ones."""
    docs: list[bytes] = values if None not in values else [b"{}" if v is None else v for v in values]  # type: ignore[assignment]
    try:
        table = _parse(schema, docs)
    except Exception:  # noqa: BLE001 (one undecodable value fails the whole parse: find it below)
        table = None
    # Every value makes at least one row unless it is blank, so with no blank value a matching row
    # count means one row per value (two documents in one value and a blank one would cancel out).
    if table is not None and table.num_rows == len(docs) and not (b"" in docs or any(map(bytes.isspace, docs))):
        return table, None
    # Some value is not one JSON object (or not of the schema): find which, record by record.
    bad: list[tuple[int, Exception]] = []
    keep: list[int] = []
    for i, doc in enumerate(docs):
        try:
            obj = json.loads(doc)
        except ValueError as exc:
            bad.append((i, exc))
            continue
        if not isinstance(obj, dict):
            bad.append((i, ValueError(f"a JSON {type(obj).__name__}, not a JSON object")))
            continue
        keep.append(i)
    tables = _parse_split(schema, docs, keep, bad)
    for i, err in sorted(bad, key=lambda b: b[0]):  # in offset order (the first one raises without on_error)
        reject(msgs[i], err)
    kept = [i for part in tables for i in part[1]]
    if not kept:
        return _empty(schema), []
    pa = _arrow.pa("KafkaTables('json')")
    try:
        table = tables[0][0] if len(tables) == 1 else pa.concat_tables([t for t, _ in tables], promote_options="permissive")
    except (pa.ArrowInvalid, pa.ArrowTypeError) as exc:
        first = msgs[0]
        msg = (
            f"KafkaTables('json'): the values of topic {first.topic()} partition {first.partition()} offsets "
            f"{first.offset()}..{msgs[-1].offset()} give a field different types ({exc}); pass a schema "
            f"(KafkaTables('json', schema=...)) so every value is read with the same types"
        )
        raise SourceError(msg) from exc
    return table, kept


def _parse_split(schema: Any, docs: list[bytes], idx: list[int], bad: list[tuple[int, Exception]]) -> list[tuple[Any, list[int]]]:
    """Parse the documents `idx` (each one JSON object) as few tables as possible: a part that fails is halved.

    A single document that fails goes to `bad` with pyarrow's error.
    """
    if not idx:
        return []
    error: Exception | None = None
    try:
        table = _parse(schema, [docs[i] for i in idx])
    except Exception as exc:  # noqa: BLE001 (pyarrow's parse errors have no common base besides ArrowException)
        table, error = None, exc
    if table is not None and table.num_rows == len(idx):
        return [(table, idx)]
    if len(idx) == 1:
        bad.append((idx[0], error if error is not None else ValueError(f"read as {0 if table is None else table.num_rows} rows")))
        return []
    mid = len(idx) // 2
    return _parse_split(schema, docs, idx[:mid], bad) + _parse_split(schema, docs, idx[mid:], bad)


def _empty(schema: Any) -> Any:
    pa = _arrow.pa("KafkaTables('json')")
    return schema.empty_table() if schema is not None else pa.table({})


def _parse(schema: Any, docs: list[bytes]) -> Any:
    """One ``pyarrow.json`` parse of `docs` (one JSON document each) joined by newlines."""
    pa = _arrow.pa("KafkaTables('json')")
    pj = _arrow.require("pyarrow.json", "KafkaTables('json')")
    data = b"\n".join(docs)
    if data.count(b"\n") != len(docs) - 1 or b"\r" in data:
        # A value spans lines (pretty-printed): outside strings a line break is whitespace and a
        # JSON string cannot hold a raw one, so it becomes a space (rare; per value).
        data = b"\n".join(d.replace(b"\r", b" ").replace(b"\n", b" ") for d in docs)
    longest = max(map(len, docs))
    read = pj.ReadOptions(block_size=max(1 << 20, 2 * longest + 2))  # one document must fit a block
    parse = None if schema is None else pj.ParseOptions(explicit_schema=schema, unexpected_field_behavior="ignore")
    return pj.read_json(pa.py_buffer(data), read_options=read, parse_options=parse)


def kafka_json_tables(schema: Any = None, *, metadata: bool = True) -> Callable[[Iterator[Any]], Iterable[Any]]:
    """A ``map_partitions`` function turning a partition of Kafka records with JSON values into one table.

    ``kafka_stream(..., tables=KafkaTables("json", schema=..., metadata=True))`` does the
    same without a `KafkaRecord` per record, and routes bad values to ``on_error``.

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


__all__ = ["KafkaTables", "as_kafka_tables", "kafka_json_tables", "messages_table"]
