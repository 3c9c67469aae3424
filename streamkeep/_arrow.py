"""Arrow helpers shared by the batch, codec, dstream and executor layers (tables; issue 15).

Owns: the lazy import of pyarrow (and pandas, polars) with the error that names the
``streamkeep[tables]`` extra, records <-> table conversion, and Arrow IPC bytes.
pyarrow is never imported when this module is: ``import streamkeep`` works without
it, and only a table API (``to_tables``, ``Batch.to_arrow``, ``aggregate_state``,
Parquet sources and sinks, a checkpoint holding tables) imports it.

A leaf of layer 1: imports only ``streamkeep.errors`` of streamkeep.
"""

from __future__ import annotations

import importlib
import os
import sys
from collections.abc import Sequence
from typing import Any

from streamkeep.errors import ConfigError

#: What the error says to run when pyarrow (or pandas, polars) is missing.
INSTALL_HINT = "pip install streamkeep[tables]"

#: Tables at least this big (Arrow buffer bytes) are written LZ4-compressed to checkpoints.
_COMPRESS_FROM = 64 * 1024

# (module, class name) of the Arrow objects a table stream carries.
_TABLE_TYPES = frozenset({("pyarrow.lib", "Table"), ("pyarrow.lib", "RecordBatch")})


#: The environment variable with which pyarrow's user picks its memory pool (then streamkeep keeps it).
POOL_ENV = "ARROW_DEFAULT_MEMORY_POOL"
_pool_chosen = False


def choose_memory_pool(pyarrow: Any) -> None:
    """Make jemalloc pyarrow's memory pool, once per process, unless its user chose one (`POOL_ENV`).

    pyarrow's wheels default to mimalloc. On the reference VM a fresh process's first
    batches of a table job fault in their working set (a few hundred page faults a batch)
    and, with mimalloc, those faults cost 20-80 ms of kernel time a batch in about half
    the processes (the same count costs ~0-4 ms with jemalloc or the system allocator):
    the 1M-word table job took 0.09 s or 0.2 s of CPU depending on the process
    (docs/comparison-peers.md, fourth pass). jemalloc's faults stayed cheap in every
    process. Only the mimalloc default is replaced: a pool the application chose
    (``pyarrow.set_memory_pool`` with jemalloc or the system allocator, or `POOL_ENV`) is
    kept; set `POOL_ENV` to ``mimalloc`` to keep mimalloc. Builds without jemalloc keep
    their default.
    """
    global _pool_chosen
    if _pool_chosen:
        return
    _pool_chosen = True
    if os.environ.get(POOL_ENV):
        return
    try:
        if pyarrow.default_memory_pool().backend_name != "mimalloc":
            return  # the build's default is another allocator, or the application chose one
        pyarrow.set_memory_pool(pyarrow.jemalloc_memory_pool())
    except (NotImplementedError, AttributeError):  # a pyarrow built without jemalloc
        pass


def require(module: str, what: str) -> Any:
    """Import `module` (``"pyarrow"``, ``"pyarrow.compute"``, ``"pandas"``, ``"polars"``, ...) for `what`.

    The first time a pyarrow module is asked for, pyarrow's memory pool is chosen
    (`choose_memory_pool`).

    Raises:
        ConfigError: the module is not installed (or blocked); the message names `what`
            and the ``streamkeep[tables]`` extra.
    """
    loaded = sys.modules.get(module)
    if loaded is None:
        try:
            loaded = importlib.import_module(module)
        except ImportError as exc:
            top = module.split(".")[0]
            msg = f"{what} needs {top}, which is not installed (or cannot be imported: {exc}); run `{INSTALL_HINT}`"
            raise ConfigError(msg) from exc
    if not _pool_chosen and module.startswith("pyarrow"):  # (after the first call: one global read per call)
        choose_memory_pool(sys.modules["pyarrow"])
    return loaded


def pa(what: str) -> Any:
    """The pyarrow module (see `require`)."""
    return require("pyarrow", what)


def pc(what: str) -> Any:
    """The pyarrow.compute module (see `require`)."""
    return require("pyarrow.compute", what)


def is_table(obj: Any) -> bool:
    """True for a ``pyarrow.Table`` or ``pyarrow.RecordBatch`` (never imports pyarrow)."""
    tp = type(obj)
    return (tp.__module__, tp.__name__) in _TABLE_TYPES


def records_in(part: list[Any]) -> int:
    """The records of a source's partition: its length, or the rows of its tables (Parquet files, Kafka ``tables=``)."""
    n = len(part)
    if n and is_table(part[0]):
        return sum(int(t.num_rows) for t in part)
    return n


def _names(schema: Any, width: int) -> list[str]:
    if schema is None:
        return [f"_{i}" for i in range(width)]
    names = list(schema.names) if hasattr(schema, "names") else list(schema)
    if len(names) != width:
        msg = f"to_tables: the schema names {len(names)} columns ({names}) but the records are {width}-tuples"
        raise ConfigError(msg)
    return names


def as_schema(schema: Any, what: str) -> Any:
    """`schema` as given (a ``pyarrow.Schema``, a sequence of column names, or None), checked."""
    if schema is None:
        return None
    if type(schema).__name__ == "Schema" and type(schema).__module__.startswith("pyarrow"):
        return schema
    if isinstance(schema, Sequence) and not isinstance(schema, str) and all(isinstance(n, str) and n for n in schema):
        if len(set(schema)) != len(schema):
            msg = f"{what}: the column names {list(schema)} repeat a name"
            raise ConfigError(msg)
        return tuple(schema)
    msg = f"{what}: schema must be a pyarrow.Schema, a list of column names, or None; got {schema!r}"
    raise ConfigError(msg)


def records_to_table(records: list[Any], schema: Any = None, what: str = "to_tables") -> Any:
    """One ``pyarrow.Table`` from `records`.

    Records may be tables (concatenated), dicts (one column per key), tuples or lists
    (columns named by `schema`, else ``_0``, ``_1``, ...) or scalars (one column named
    by `schema`, else ``value``). `schema` is a ``pyarrow.Schema`` (types enforced) or
    a sequence of column names.
    """
    pa_ = pa(what)
    typed = schema if isinstance(schema, pa_.Schema) else None
    if not records:
        if typed is not None:
            return typed.empty_table()
        names = list(schema) if schema is not None else []
        return pa_.table({n: pa_.array([], pa_.null()) for n in names})
    first = records[0]
    if is_table(first):
        tables = [r if type(r).__name__ == "Table" else pa_.Table.from_batches([r]) for r in records]
        if any(not is_table(r) for r in records):
            bad = next(r for r in records if not is_table(r))
            msg = f"{what}: a batch mixes tables and records (found {type(bad).__name__}); convert the records with to_tables() first"
            raise ConfigError(msg)
        out = tables[0] if len(tables) == 1 else pa_.concat_tables(tables, promote_options="permissive")
        return out.cast(typed) if typed is not None and out.schema != typed else out
    if isinstance(first, dict):
        if typed is not None:
            return pa_.Table.from_pylist(records, schema=typed)
        if schema is not None:
            return pa_.Table.from_pylist([{n: r.get(n) for n in schema} for r in records])
        return pa_.Table.from_pylist(records)
    if isinstance(first, (tuple, list)):
        width = len(first)
        names = _names(schema, width)
        try:
            columns = list(zip(*records, strict=True))
        except ValueError as exc:
            msg = f"{what}: records of different lengths ({exc}); every tuple record must have {width} fields"
            raise ConfigError(msg) from exc
        if typed is not None:
            return pa_.table([pa_.array(c, f.type) for c, f in zip(columns, typed, strict=True)], schema=typed)
        return pa_.table({n: pa_.array(c) for n, c in zip(names, columns, strict=True)})
    name = _names(schema, 1)[0] if schema is not None else "value"
    if typed is not None:
        return pa_.table([pa_.array(records, typed.field(0).type)], schema=typed)
    return pa_.table({name: pa_.array(records)})


def table_of(partitions: list[list[Any]], schema: Any = None, what: str = "to_arrow") -> Any:
    """Every record of `partitions` (tables or records) as one table."""
    records = [r for p in partitions for r in p]
    return records_to_table(records, schema, what)


def table_rows(table: Any) -> list[dict[str, Any]]:
    """A table's rows as dicts (column name -> Python value)."""
    rows: list[dict[str, Any]] = table.to_pylist()
    return rows


def ipc_bytes(table: Any) -> bytes:
    """`table` as Arrow IPC stream bytes (schema included; readable by any Arrow implementation)."""
    pa_ = pa("writing Arrow data")
    sink = pa_.BufferOutputStream()
    if type(table).__name__ == "RecordBatch":
        table = pa_.Table.from_batches([table])
    # LZ4 frames for big tables: 2.5x fewer checkpoint bytes for 1M string keys, ~20 ms more to
    # write and ~10 ms to read (zstd: 5.5x fewer, but 120 ms and 60 ms); readers need no option.
    big = table.nbytes >= _COMPRESS_FROM and pa_.Codec.is_available("lz4")
    options = pa_.ipc.IpcWriteOptions(compression="lz4" if big else None)
    with pa_.ipc.new_stream(sink, table.schema, options=options) as writer:
        writer.write_table(table)
    return bytes(sink.getvalue())


def ipc_table(data: bytes) -> Any:
    """The table of Arrow IPC stream bytes written by `ipc_bytes`."""
    pa_ = pa("reading Arrow data from a checkpoint")
    with pa_.ipc.open_stream(pa_.py_buffer(data)) as reader:
        table = reader.read_all()
    table.validate()  # structure (buffer sizes, offsets' bounds): cheap; full=True (UTF-8 etc.) costs ~50 ms per 1M rows
    return table


# -- per-partition iterator transforms (the fused, lazy table operators of `Batch`) --------------


def to_tables_iter(it: Any, schema: Any) -> Any:
    """A partition's records as one table (none for an empty partition without a schema)."""
    records = list(it)
    if records or schema is not None:
        yield records_to_table(records, schema, "to_tables")


def map_tables_iter(it: Any, f: Any) -> Any:
    """`f(table)` for every table of a partition; a record that is not a table is a ConfigError."""
    for table in it:
        if not is_table(table):
            msg = f"map_tables: the stream carries records ({type(table).__name__}), not tables; call .to_tables() before map_tables"
            raise ConfigError(msg)
        out = f(table)
        if not is_table(out):
            msg = f"map_tables: the function must return a pyarrow.Table, got {type(out).__name__}"
            raise ConfigError(msg)
        yield out


def to_records_iter(it: Any) -> Any:
    """Every row of every table of a partition as a dict; records that are not tables pass through."""
    for table in it:
        if is_table(table):
            yield from table.to_pylist()
        else:
            yield table


def json_values_table(values: list[bytes], schema: Any, what: str) -> Any:
    """One table from JSON documents (one per value), parsed in one pyarrow.json call (no Python object per value).

    Newlines inside a value (pretty-printed JSON) are replaced by spaces first: outside
    strings they are whitespace, and JSON strings cannot hold a raw newline.
    """
    pa_ = pa(what)
    pj = require("pyarrow.json", what)
    if not values:
        return schema.empty_table() if schema is not None else pa_.table({})
    data = b"\n".join(values)
    if data.count(b"\n") != len(values) - 1:  # some value spans lines: flatten those (rare; per value)
        data = b"\n".join(v.replace(b"\r", b" ").replace(b"\n", b" ") for v in values)
    opts = pj.ParseOptions(explicit_schema=schema, newlines_in_values=False) if schema is not None else None
    return pj.read_json(pa_.py_buffer(data), parse_options=opts)
