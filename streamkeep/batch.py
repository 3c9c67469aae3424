"""`Batch`: one micro-batch of one DStream, split into partitions (the RDD analogue).

Per-record operators (`map`, `filter`, `flat_map`, `map_values`, ...) are lazy
and fused: a chain of them runs as one pass per partition over C-level
iterators (`map`, `filter`, `itertools.chain`) when the batch is first
consumed. Per-batch operators (`reduce_by_key`, joins, ...) consume their
input once and return a materialised Batch. A materialised batch is cached, so
consuming it twice does not run user functions twice.

Imports only `streamkeep.errors`, `streamkeep._types`, `streamkeep._util` and `streamkeep._arrow`
(which imports pyarrow only when a table operator runs).
"""

from __future__ import annotations

import itertools
import operator
from collections.abc import Callable, Iterable, Iterator
from typing import Any, Generic, TypeVar

from streamkeep import _arrow
from streamkeep._types import BatchTime
from streamkeep._util import check_partitions, short_repr, stable_hash, user_function_error
from streamkeep.errors import UserFunctionError

T = TypeVar("T")
U = TypeVar("U")
K = TypeVar("K")
V = TypeVar("V")
W = TypeVar("W")

_IterFn = Callable[[Iterator[Any]], Iterator[Any]]
_Op = tuple[str, _IterFn, Any]  # (operator name, iterator transform, user function)
_MISSING: Any = object()


def _safe_repr(value: Any, limit: int = 120) -> str:
    """A short repr for error messages (never raises)."""
    try:
        return short_repr(value, limit)
    except Exception as exc:  # a repr that raises must not hide the real error
        return f"<{type(value).__name__} whose repr raised {type(exc).__name__}>"


class DeadLetters:
    """Where per-record operators with a dead-letter policy put the records their function raised on.

    One instance per dead-letter sink; the executor writes what accumulated for a batch
    to the sink with the batch time, then empties it. Each entry is a dict: ``operator``,
    ``batch_time_ms``, ``record`` (the record the operator's function got), ``error``
    (``"ExceptionType: message"``).
    """

    __slots__ = ("records",)

    def __init__(self) -> None:
        self.records: list[dict[str, Any]] = []

    def add(self, operator: str, batch_time_ms: BatchTime, record: Any, exc: BaseException) -> None:
        """Record that `operator`'s function raised `exc` on `record`."""
        error = f"{type(exc).__name__}: {exc}"
        self.records.append({"operator": operator, "batch_time_ms": batch_time_ms, "record": record, "error": error})

    def take(self) -> list[dict[str, Any]]:
        """The entries so far; empties the buffer."""
        out, self.records = self.records, []
        return out


class RecordShapeError(TypeError):
    """A keyed operator got a record that is not a (key, value) pair, or an unhashable key."""

    def __init__(self, consumer: str, record: Any, *, key_unhashable: bool = False) -> None:
        super().__init__(consumer, record)
        self.consumer = consumer
        self.record = record
        self.key_unhashable = key_unhashable
        self.upstream: str | None = None  # the operator that produced the record, once known

    def __str__(self) -> str:
        return self.describe(None)

    def describe(self, upstream: str | None) -> str:
        """What is wrong and what to do, naming the operator that produced the record if known."""
        frm = f" from {upstream}" if upstream else ""
        if self.key_unhashable:
            key = self.record[0]
            return (
                f"{self.consumer}: the key {_safe_repr(key)} ({type(key).__name__}) of a record{frm} is not hashable; "
                f"keys must be hashable (use a tuple instead of a list, a frozenset instead of a set)"
            )
        return (
            f"{self.consumer}: (key, value) pairs expected, got {_safe_repr(self.record)} "
            f"({type(self.record).__name__}){frm}; make the operator before it return 2-tuples, e.g. "
            f".map(lambda x: (x, 1))"
        )

    def to_user_error(self, batch_time_ms: BatchTime, partition: int | None, upstream: str | None) -> UserFunctionError:
        """The error users see (`operator` is the keyed operator; the message names the upstream one)."""
        self.upstream = upstream
        where = f"batch time {batch_time_ms} ms" + ("" if partition is None else f", partition {partition}")
        msg = f"{self.describe(upstream)} ({where})"
        return UserFunctionError(msg, operator=self.consumer, batch_time_ms=batch_time_ms)


def as_pair(record: Any, consumer: str) -> tuple[Any, Any]:
    """`record` as a (key, value) tuple: a 2-list is accepted, anything else is a RecordShapeError.

    Called by the keyed loops only for records that are not tuples (one class check per record).
    """
    if (record.__class__ is tuple or record.__class__ is list) and len(record) == 2:
        return (record[0], record[1])
    raise RecordShapeError(consumer, record)


def check_length(exc: ValueError, kv: Any, consumer: str) -> None:
    """Raise a RecordShapeError when `exc` came from unpacking `kv`, a tuple that is not a pair.

    The keyed loops check only the class of each record and let ``k, v = kv`` find other lengths.
    """
    if kv.__class__ is tuple and len(kv) != 2:
        raise RecordShapeError(consumer, kv) from exc


def check_key(exc: TypeError, kv: Any, consumer: str) -> None:
    """Raise a RecordShapeError when `exc` came from `kv`'s key being unhashable."""
    if isinstance(kv, tuple) and len(kv) == 2:
        try:
            hash(kv[0])
        except TypeError:
            raise RecordShapeError(consumer, kv, key_unhashable=True) from exc


class Batch(Generic[T]):
    """One micro-batch's records, partitioned.

    Args:
        partitions: one iterable of records per partition.
        batch_time_ms: the batch time, used in error messages.
        source_partitions: the source partition each partition holds (``"source/topic:3"``),
            as the scheduler labels a source's batch; per-record operators and ``union``
            keep it, operators that move records between partitions drop it (None).
            Event-time windows keep a watermark per label.

    Example:
        >>> Batch([[1, 2], [3]]).map(lambda x: x * 10).collect()
        [10, 20, 30]
    """

    __slots__ = ("_dead", "_ops", "_parts", "_src", "batch_time_ms", "source_partitions")

    def __init__(
        self, partitions: Iterable[Iterable[T]] = (), batch_time_ms: BatchTime = 0, *, source_partitions: tuple[str, ...] | None = None
    ) -> None:
        self._parts: list[list[Any]] | None = [p if isinstance(p, list) else list(p) for p in partitions]
        self._src: list[list[Any]] = self._parts
        self._ops: tuple[_Op, ...] = ()
        self._dead: tuple[DeadLetters | None, ...] | None = None  # per op of `_ops`; None: every op fails the batch
        self.batch_time_ms = batch_time_ms
        if source_partitions is not None and len(source_partitions) != len(self._parts):
            msg = f"Batch: {len(source_partitions)} source partition labels for {len(self._parts)} partitions"
            raise ValueError(msg)
        self.source_partitions = source_partitions

    @classmethod
    def _lazy(
        cls, src: list[list[Any]], ops: tuple[_Op, ...], batch_time_ms: BatchTime, source_partitions: tuple[str, ...] | None = None
    ) -> Batch[Any]:
        b: Batch[Any] = cls.__new__(cls)
        b._src = src
        b._ops = ops
        b._dead = None
        b._parts = None if ops else src
        b.batch_time_ms = batch_time_ms
        b.source_partitions = source_partitions
        return b

    @classmethod
    def empty(cls, batch_time_ms: BatchTime = 0) -> Batch[Any]:
        """A batch with one empty partition."""
        return cls([[]], batch_time_ms)

    # -- materialisation -------------------------------------------------

    def _then(self, name: str, fn: _IterFn, user: Any) -> Batch[Any]:
        if self._dead is not None:  # run the dead-lettering ops once: whatever derives from them sees their result
            self._materialise()
        return Batch._lazy(self._src, (*self._ops, (name, fn, user)), self.batch_time_ms, self.source_partitions)

    def _dead_letter(self, letters: DeadLetters) -> Batch[T]:
        """This batch with its last per-record operator sending failing records to `letters`.

        The fused chain runs as usual (no per-record cost); only when it raises is the
        partition re-run record by record, the failing records going to `letters`.
        """
        if not self._ops:
            msg = "_dead_letter: the batch has no per-record operator"
            raise ValueError(msg)
        dead = self._dead or (None,) * len(self._ops)
        b = Batch._lazy(self._src, self._ops, self.batch_time_ms, self.source_partitions)
        b._dead = (*dead[:-1], letters)
        return b

    def _iter_partition(self, index: int) -> Iterator[Any]:
        if self._parts is not None:
            return iter(self._parts[index])
        it: Iterator[Any] = iter(self._src[index])
        for _, fn, _ in self._ops:
            it = fn(it)
        return it

    def _consume(self, index: int, consumer: Callable[[Iterator[Any]], U], op: tuple[str, Any] | None = None) -> U:
        """Run `consumer` over partition `index`, naming the failing operator on error.

        `op` is the (name, user function) of a per-batch operator doing the consuming.
        """
        if self._dead is not None:
            self._materialise()  # dead-lettering ops run once per partition, whoever consumes
        try:
            return consumer(self._iter_partition(index))
        except UserFunctionError:
            raise
        except Exception as exc:
            raise self._user_error(exc, index, op) from exc

    def _consume_mapped(
        self, index: int, consumer: Callable[[Iterator[Any], Callable[[Any], Any] | None], U], op: tuple[str, Any] | None = None
    ) -> U:
        """`_consume`, handing the function of a trailing `map` to `consumer`, which calls it per record itself.

        ``consumer(it, f)`` gets the partition's records before that `map` and its `f`, or
        every op applied and None when the batch does not end with a `map`. Builtin `map`
        enters a new interpreter frame for every call of a Python function; a call from the
        consumer's Python loop is inlined, ~300 fewer instructions a record.
        """
        if self._dead is not None:
            self._materialise()  # dead-lettering ops run once per partition, whoever consumes
        ops = self._ops
        f: Callable[[Any], Any] | None = None
        if self._parts is None and ops and ops[-1][0] == "map":
            f = ops[-1][2]
            it: Iterator[Any] = iter(self._src[index])
            for _, fn, _ in ops[:-1]:
                it = fn(it)
        else:
            it = self._iter_partition(index)
        try:
            return consumer(it, f)
        except UserFunctionError:
            raise
        except Exception as exc:
            raise self._user_error(exc, index, op) from exc

    def _run_partition(self, index: int) -> list[Any]:
        """Partition `index` with the ops applied, failing records sent to their dead letters."""
        try:
            return list(self._iter_partition(index))  # the fast path: fused, no per-record policy cost
        except Exception:  # noqa: S110 - re-run below, record by record; errors there are raised as usual
            pass
        dead = self._dead or (None,) * len(self._ops)
        t = self.batch_time_ms
        records: list[Any] = self._src[index]
        for (name, fn, user), letters in zip(self._ops, dead, strict=True):
            try:
                if letters is None:
                    records = list(fn(iter(records)))
                    continue
                out: list[Any] = []
                for rec in records:
                    try:
                        got = list(fn(iter((rec,))))
                    except Exception as exc:
                        letters.add(name, t, rec, exc)
                    else:
                        out.extend(got)
                records = out
            except UserFunctionError:
                raise
            except Exception as exc:
                raise self._user_error(exc, index, (name, user)) from exc
        return records

    def _user_error(self, exc: BaseException, index: int, op: tuple[str, Any] | None = None) -> UserFunctionError:
        if isinstance(exc, RecordShapeError):
            names = [name for name, _, _ in self._ops]
            if exc.consumer in names:  # a lazy keyed op (map_values, ...): the record comes from the op before it
                names = names[: len(names) - 1 - names[::-1].index(exc.consumer)]
            return exc.to_user_error(self.batch_time_ms, index, f"operator {names[-1]!r}" if names else None)
        name, arg = self._failing_op(exc, op)
        rec = "" if arg is _MISSING else f" for record {_safe_repr(arg)}"
        return user_function_error(f"in operator {name!r}", exc, self.batch_time_ms, name, detail=rec, at=f", partition {index}")

    def _failing_op(self, exc: BaseException, op: tuple[str, Any] | None) -> tuple[str, Any]:
        """The name of the operator whose function raised, and the argument it got (or _MISSING)."""
        codes = {getattr(user, "__code__", None): name for name, _, user in self._ops}
        if op is not None:
            codes[getattr(op[1], "__code__", None)] = op[0]
        codes.pop(None, None)
        tb = exc.__traceback__
        found = None
        arg: Any = _MISSING
        while tb is not None:
            code = tb.tb_frame.f_code
            name = codes.get(code)
            if name is not None:
                found = name
                arg = tb.tb_frame.f_locals.get(code.co_varnames[0], _MISSING) if code.co_argcount else _MISSING
            tb = tb.tb_next
        if found is not None:
            return found, arg
        names = [name for name, _, _ in self._ops]
        if op is not None:
            names.append(op[0])
        return (" | ".join(names) if names else "batch operation"), _MISSING

    def _materialise(self) -> list[list[Any]]:
        parts = self._parts
        if parts is None:
            if self._dead is not None:
                parts = [self._run_partition(i) for i in range(len(self._src))]
            else:
                parts = [self._consume(i, list) for i in range(len(self._src))]
            self._parts = parts
            self._src = parts
            self._ops = ()
            self._dead = None
        return parts

    def cache(self) -> Batch[T]:
        """Materialise now, so several consumers do not rerun the fused functions."""
        self._materialise()
        return self

    @property
    def partitions(self) -> list[list[T]]:
        """The records, one list per partition (materialises the batch)."""
        return self._materialise()

    @property
    def num_partitions(self) -> int:
        """Number of partitions."""
        return len(self._src)

    # -- actions -------------------------------------------------------

    def collect(self) -> list[T]:
        """All records in partition order."""
        parts = self._materialise()
        if len(parts) == 1:
            return list(parts[0])
        return [x for p in parts for x in p]

    def __iter__(self) -> Iterator[T]:
        for p in self._materialise():
            yield from p

    def count(self) -> int:
        """Number of records."""
        return sum(len(p) for p in self._materialise())

    def __len__(self) -> int:
        return self.count()

    def take(self, n: int) -> list[T]:
        """The first `n` records (consumes only as many partitions as needed)."""
        out: list[T] = []
        for i in range(self.num_partitions):
            if len(out) >= n:
                break
            if self._parts is not None:
                out.extend(self._parts[i][: n - len(out)])
            else:
                out.extend(self._consume(i, lambda it: list(itertools.islice(it, n - len(out)))))
        return out

    def first(self) -> T:
        """The first record; ValueError if the batch is empty."""
        got = self.take(1)
        if not got:
            msg = "first(): the batch is empty"
            raise ValueError(msg)
        return got[0]

    def is_empty(self) -> bool:
        """True when the batch has no records."""
        return not self.take(1)

    def foreach(self, f: Callable[[T], Any]) -> None:
        """Call `f` on every record."""
        for i in range(self.num_partitions):
            self._consume(i, lambda it: _drain(map(f, it)), ("foreach", f))

    def foreach_partition(self, f: Callable[[Iterator[T]], Any]) -> None:
        """Call `f` once per partition with an iterator over its records."""
        for i in range(self.num_partitions):
            self._consume(i, f, ("foreach_partition", f))

    # -- per-record (lazy, fused) ----------------------------------------

    def map(self, f: Callable[[T], U]) -> Batch[U]:
        """Apply `f` to every record."""
        return self._then("map", lambda it: map(f, it), f)

    def filter(self, f: Callable[[T], Any]) -> Batch[T]:
        """Keep records for which `f` is truthy."""
        return self._then("filter", lambda it: filter(f, it), f)

    def flat_map(self, f: Callable[[T], Iterable[U]]) -> Batch[U]:
        """Replace every record by the records of the iterable `f` returns."""
        return self._then("flat_map", lambda it: itertools.chain.from_iterable(map(f, it)), f)

    def map_partitions(self, f: Callable[[Iterator[T]], Iterable[U]]) -> Batch[U]:
        """Apply `f` to each partition's iterator; it returns the partition's new records."""
        return self._then("map_partitions", lambda it: iter(f(it)), f)

    def map_partitions_with_index(self, f: Callable[[int, Iterator[T]], Iterable[U]]) -> Batch[U]:
        """Like `map_partitions`, with the partition index as first argument."""
        parts = [self._consume(i, lambda it, i=i: list(f(i, it))) for i in range(self.num_partitions)]  # type: ignore[misc]
        return Batch(parts, self.batch_time_ms, source_partitions=self.source_partitions)

    def glom(self) -> Batch[list[T]]:
        """One record per partition: the list of its records."""
        return self._then("glom", lambda it: iter([list(it)]), None)

    def map_values(self: Batch[tuple[K, V]], f: Callable[[V], W]) -> Batch[tuple[K, W]]:
        """Apply `f` to the value of every (key, value) record."""
        return self._then("map_values", lambda it: _map_values(it, f, "map_values"), f)

    def flat_map_values(self: Batch[tuple[K, V]], f: Callable[[V], Iterable[W]]) -> Batch[tuple[K, W]]:
        """Replace every (key, value) by (key, w) for each w in `f(value)`."""
        return self._then("flat_map_values", lambda it: _flat_map_values(it, f), f)

    def keys(self: Batch[tuple[K, V]]) -> Batch[K]:
        """The keys of (key, value) records."""
        return self._then("keys", _keys, None)

    def values(self: Batch[tuple[K, V]]) -> Batch[V]:
        """The values of (key, value) records."""
        return self._then("values", _values, None)

    # -- tables (pyarrow; imported only when used, see docs/tables.md) -----------------------

    def to_tables(self, schema: Any = None) -> Batch[Any]:
        """Each partition's records as one ``pyarrow.Table`` (lazy, fused with the operators around it).

        Records may be dicts (a column per key), tuples (columns named by `schema`,
        else ``_0``, ``_1``, ...) or scalars (one column, ``value``); tables pass
        through. `schema`: a ``pyarrow.Schema`` (types enforced) or column names.
        """
        return self._then("to_tables", lambda it: _arrow.to_tables_iter(it, schema), None)

    def map_tables(self, f: Callable[[Any], Any]) -> Batch[Any]:
        """Apply ``f(pyarrow.Table) -> pyarrow.Table`` to every table (lazy, fused)."""
        return self._then("map_tables", lambda it: _arrow.map_tables_iter(it, f), f)

    def to_records(self) -> Batch[dict[str, Any]]:
        """Every row of every table as a dict (column -> value); other records pass through."""
        return self._then("to_records", _arrow.to_records_iter, None)

    def to_arrow(self, schema: Any = None) -> Any:
        """The whole batch as one ``pyarrow.Table`` (its tables concatenated, or its records converted).

        Raises:
            ConfigError: pyarrow is not installed (``pip install streamkeep[tables]``).
        """
        return _arrow.table_of(self._materialise(), schema, "Batch.to_arrow")

    def to_pandas(self) -> Any:
        """The batch as a ``pandas.DataFrame`` (through `to_arrow`)."""
        _arrow.require("pandas", "Batch.to_pandas")
        return self.to_arrow().to_pandas()

    def to_polars(self) -> Any:
        """The batch as a ``polars.DataFrame`` (through `to_arrow`, zero-copy where Arrow allows)."""
        pl = _arrow.require("polars", "Batch.to_polars")
        return pl.from_arrow(self.to_arrow())

    # -- per-batch -------------------------------------------------------

    def union(self, *others: Batch[T]) -> Batch[T]:
        """All partitions of this batch and the others (no shuffle)."""
        parts = list(self._materialise())
        labels = self.source_partitions
        for o in others:
            parts.extend(o._materialise())
            labels = None if labels is None or o.source_partitions is None else labels + o.source_partitions
        return Batch(parts, self.batch_time_ms, source_partitions=labels)

    def reduce(self, f: Callable[[T, T], T]) -> Batch[T]:
        """One record: all records combined with `f`; empty if the batch is empty."""
        acc: Any = _MISSING
        for i in range(self.num_partitions):
            part = self._consume(i, lambda it: _fold(f, it), ("reduce", f))
            if part is not _MISSING:
                acc = part if acc is _MISSING else self._call(f, "reduce", acc, part)
        return Batch([[] if acc is _MISSING else [acc]], self.batch_time_ms)

    def count_batch(self) -> Batch[int]:
        """One record: the number of records."""
        return Batch([[self.count()]], self.batch_time_ms)

    def count_by_value(self) -> Batch[tuple[T, int]]:
        """(record, occurrences) for each distinct record."""
        return self.map(_pair_one).reduce_by_key(_add)

    def distinct(self, num_partitions: int | None = None) -> Batch[T]:
        """Each distinct record once."""
        return self.map(_pair_none).reduce_by_key(_first, num_partitions).keys()

    def repartition(self, num_partitions: int) -> Batch[T]:
        """Spread the records round-robin over `num_partitions` partitions."""
        check_partitions(num_partitions, "repartition")
        out: list[list[Any]] = [[] for _ in range(num_partitions)]
        i = 0
        for p in self._materialise():
            for x in p:
                out[i].append(x)
                i = (i + 1) % num_partitions
        return Batch(out, self.batch_time_ms)

    def partition_by(self: Batch[tuple[K, V]], num_partitions: int) -> Batch[tuple[K, V]]:
        """Place each (key, value) in partition ``stable_hash(key) % num_partitions``."""
        check_partitions(num_partitions, "partition_by")
        out: list[list[Any]] = [[] for _ in range(num_partitions)]
        for p in self._materialise():
            for kv in p:
                if kv.__class__ is not tuple or len(kv) != 2:
                    kv = as_pair(kv, "partition_by")
                out[stable_hash(kv[0]) % num_partitions].append(kv)
        return Batch(out, self.batch_time_ms)

    def combine_by_key(
        self: Batch[tuple[K, V]],
        create: Callable[[V], W],
        merge_value: Callable[[W, V], W],
        merge_combiners: Callable[[W, W], W],
        num_partitions: int | None = None,
    ) -> Batch[tuple[K, W]]:
        """Combine the values of each key: `create` the first, `merge_value` the rest per
        partition, then `merge_combiners` across partitions."""
        partials = [self._consume(i, lambda it: _combine(it, create, merge_value), ("combine_by_key", merge_value)) for i in range(self.num_partitions)]
        return self._merge_keyed(partials, merge_combiners, num_partitions, "combine_by_key")

    def reduce_by_key(self: Batch[tuple[K, V]], f: Callable[[V, V], V], num_partitions: int | None = None) -> Batch[tuple[K, V]]:
        """Combine the values of each key with `f` (associative and commutative)."""
        partials = [self._consume_mapped(i, lambda it, m: _reduce_into({}, it, f, m), ("reduce_by_key", f)) for i in range(self.num_partitions)]
        return self._merge_keyed(partials, f, num_partitions, "reduce_by_key")

    def group_by_key(self: Batch[tuple[K, V]], num_partitions: int | None = None) -> Batch[tuple[K, list[V]]]:
        """(key, [values...]) for each key, values in arrival order."""
        partials = [self._consume(i, _group, ("group_by_key", _group)) for i in range(self.num_partitions)]
        return self._merge_keyed(partials, _concat, num_partitions, "group_by_key")

    def _merge_keyed(
        self, partials: list[dict[Any, Any]], merge: Callable[[Any, Any], Any], num_partitions: int | None, op: str
    ) -> Batch[Any]:
        n = self.num_partitions if num_partitions is None else num_partitions
        check_partitions(n, op)
        if n == 1:
            if len(partials) == 1:
                return Batch([list(partials[0].items())], self.batch_time_ms)
            merged: dict[Any, Any] = {}
            for d in partials:
                self._merge_dict(merged, d, merge, op)
            return Batch([list(merged.items())], self.batch_time_ms)
        outs: list[dict[Any, Any]] = [{} for _ in range(n)]
        for d in partials:
            for k, v in d.items():
                target = outs[stable_hash(k) % n]
                if k in target:
                    target[k] = self._call(merge, op, target[k], v)
                else:
                    target[k] = v
        return Batch([list(o.items()) for o in outs], self.batch_time_ms)

    def _merge_dict(self, into: dict[Any, Any], d: dict[Any, Any], merge: Callable[[Any, Any], Any], op: str) -> None:
        if not into:
            into.update(d)
            return
        for k, v in d.items():
            if k in into:
                into[k] = self._call(merge, op, into[k], v)
            else:
                into[k] = v

    def _call(self, f: Callable[..., U], op: str, *args: Any) -> U:
        try:
            return f(*args)
        except Exception as exc:
            err = user_function_error(f"in operator {op!r}", exc, self.batch_time_ms, op)
            raise err from exc

    def cogroup(self: Batch[tuple[K, V]], *others: Batch[tuple[K, Any]], num_partitions: int | None = None) -> Batch[tuple[K, tuple[list[Any], ...]]]:
        """(key, ([values in self], [values in other1], ...)) for every key in any batch."""
        return self._cogroup(others, num_partitions, "cogroup")

    def _cogroup(self, others: tuple[Batch[Any], ...], num_partitions: int | None, op: str) -> Batch[Any]:
        """`cogroup`, with errors naming the operator `op` the user called (a join is a cogroup)."""
        batches = (self, *others)
        width = len(batches)
        groups: dict[Any, tuple[list[Any], ...]] = {}
        kv: Any = None
        try:
            for j, b in enumerate(batches):
                for p in b._materialise():
                    for kv in p:
                        if kv.__class__ is not tuple:
                            kv = as_pair(kv, op)
                        k, v = kv
                        g = groups.get(k)
                        if g is None:
                            g = groups[k] = tuple([] for _ in range(width))
                        g[j].append(v)
        except RecordShapeError as exc:
            raise exc.to_user_error(self.batch_time_ms, None, None) from exc
        except TypeError as exc:
            try:
                check_key(exc, kv, op)
            except RecordShapeError as shape:
                raise shape.to_user_error(self.batch_time_ms, None, None) from shape
            raise
        except ValueError as exc:
            try:
                check_length(exc, kv, op)
            except RecordShapeError as shape:
                raise shape.to_user_error(self.batch_time_ms, None, None) from shape
            raise
        n = max(b.num_partitions for b in batches) if num_partitions is None else num_partitions
        if num_partitions is not None:
            check_partitions(num_partitions, op)
        return Batch([list(groups.items())], self.batch_time_ms).partition_by(n) if n > 1 else Batch([list(groups.items())], self.batch_time_ms)

    def join(self: Batch[tuple[K, V]], other: Batch[tuple[K, W]], num_partitions: int | None = None) -> Batch[tuple[K, tuple[V, W]]]:
        """(key, (v, w)) for every pair of values of keys present in both batches."""
        return self._cogroup((other,), num_partitions, "join").flat_map_values(lambda g: [(v, w) for v in g[0] for w in g[1]])

    def left_outer_join(self: Batch[tuple[K, V]], other: Batch[tuple[K, W]], num_partitions: int | None = None) -> Batch[tuple[K, tuple[V, W | None]]]:
        """Like `join`, keeping keys missing from `other` with None as their value."""
        return self._cogroup((other,), num_partitions, "left_outer_join").flat_map_values(lambda g: [(v, w) for v in g[0] for w in (g[1] or [None])])

    def right_outer_join(self: Batch[tuple[K, V]], other: Batch[tuple[K, W]], num_partitions: int | None = None) -> Batch[tuple[K, tuple[V | None, W]]]:
        """Like `join`, keeping keys missing from this batch with None as their value."""
        return self._cogroup((other,), num_partitions, "right_outer_join").flat_map_values(lambda g: [(v, w) for v in (g[0] or [None]) for w in g[1]])

    def full_outer_join(self: Batch[tuple[K, V]], other: Batch[tuple[K, W]], num_partitions: int | None = None) -> Batch[tuple[K, tuple[V | None, W | None]]]:
        """Like `join`, keeping keys missing from either side with None in their place."""
        return self._cogroup((other,), num_partitions, "full_outer_join").flat_map_values(
            lambda g: [(v, w) for v in (g[0] or [None]) for w in (g[1] or [None])]
        )

    def cartesian(self, other: Batch[U]) -> Batch[tuple[T, U]]:
        """Every (a, b) pair with a from this batch and b from `other`."""
        right = other.collect()
        return Batch([[(a, b) for a in p for b in right] for p in self._materialise()], self.batch_time_ms)

    def sort_by(self, key: Callable[[T], Any], ascending: bool = True, num_partitions: int | None = None) -> Batch[T]:
        """Records sorted by `key`, in one partition (or range-split into `num_partitions`)."""
        try:
            data = sorted(self.collect(), key=key, reverse=not ascending)
        except Exception as exc:
            raise self._user_error(exc, 0) from exc
        n = num_partitions or 1
        size = -(-len(data) // n) if data else 0
        return Batch([data[i * size : (i + 1) * size] for i in range(n)] if n > 1 else [data], self.batch_time_ms)

    def sort_by_key(self: Batch[tuple[K, V]], ascending: bool = True, num_partitions: int | None = None) -> Batch[tuple[K, V]]:
        """(key, value) records sorted by key."""
        return self.sort_by(_key0, ascending, num_partitions)

    def __repr__(self) -> str:
        state = "materialised" if self._parts is not None else f"lazy ops={[n for n, _, _ in self._ops]}"
        return f"Batch(time={self.batch_time_ms}, partitions={self.num_partitions}, {state})"


def _drain(it: Iterator[Any]) -> None:
    for _ in it:
        pass


def _fold(f: Callable[[Any, Any], Any], it: Iterator[Any]) -> Any:
    acc = next(it, _MISSING)
    if acc is _MISSING:
        return acc
    for x in it:
        acc = f(acc, x)
    return acc


def _reduce_into(
    d: dict[Any, Any], it: Iterator[Any], f: Callable[[Any, Any], Any], mapper: Callable[[Any], Any] | None = None
) -> dict[Any, Any]:
    """Fold the (key, value) records of `it` into `d` with `f`; `mapper` (the batch's trailing `map`) makes them, if given."""
    kv: Any = None
    try:
        if mapper is not None:  # the records are mapper(x): called here, inlined (see Batch._consume_mapped)
            add = f is operator.add
            for x in it:
                kv = mapper(x)
                if kv.__class__ is not tuple:
                    kv = as_pair(kv, "reduce_by_key")
                k, v = kv
                old = d.get(k, _MISSING)
                d[k] = v if old is _MISSING else (old + v if add else f(old, v))
            return d
        if f is operator.add:  # the common word-count case: `old + v` is operator.add without a call per record
            for kv in it:
                if kv.__class__ is not tuple:
                    kv = as_pair(kv, "reduce_by_key")
                k, v = kv
                old = d.get(k, _MISSING)
                d[k] = v if old is _MISSING else old + v
            return d
        for kv in it:
            if kv.__class__ is not tuple:
                kv = as_pair(kv, "reduce_by_key")
            k, v = kv
            old = d.get(k, _MISSING)  # one lookup, not `in` then `[]`
            d[k] = v if old is _MISSING else f(old, v)
    except TypeError as exc:
        check_key(exc, kv, "reduce_by_key")
        raise
    except ValueError as exc:
        check_length(exc, kv, "reduce_by_key")
        raise
    return d


def _combine(it: Iterator[tuple[Any, Any]], create: Callable[[Any], Any], merge: Callable[[Any, Any], Any]) -> dict[Any, Any]:
    d: dict[Any, Any] = {}
    kv: Any = None
    try:
        for kv in it:
            if kv.__class__ is not tuple:
                kv = as_pair(kv, "combine_by_key")
            k, v = kv
            if k in d:
                d[k] = merge(d[k], v)
            else:
                d[k] = create(v)
    except TypeError as exc:
        check_key(exc, kv, "combine_by_key")
        raise
    except ValueError as exc:
        check_length(exc, kv, "combine_by_key")
        raise
    return d


def _group(it: Iterator[tuple[Any, Any]]) -> dict[Any, list[Any]]:
    d: dict[Any, list[Any]] = {}
    kv: Any = None
    try:
        for kv in it:
            if kv.__class__ is not tuple:
                kv = as_pair(kv, "group_by_key")
            k, v = kv
            lst = d.get(k)
            if lst is None:
                d[k] = [v]
            else:
                lst.append(v)
    except TypeError as exc:
        check_key(exc, kv, "group_by_key")
        raise
    except ValueError as exc:
        check_length(exc, kv, "group_by_key")
        raise
    return d


def _map_values(it: Iterator[Any], f: Callable[[Any], Any], op: str) -> Iterator[tuple[Any, Any]]:
    for kv in it:
        if kv.__class__ is not tuple or len(kv) != 2:
            kv = as_pair(kv, op)
        k, v = kv
        yield (k, f(v))


def _flat_map_values(it: Iterator[Any], f: Callable[[Any], Iterable[Any]]) -> Iterator[tuple[Any, Any]]:
    for kv in it:
        if kv.__class__ is not tuple or len(kv) != 2:
            kv = as_pair(kv, "flat_map_values")
        k, v = kv
        for w in f(v):
            yield (k, w)


def _keys(it: Iterator[Any]) -> Iterator[Any]:
    for kv in it:
        if kv.__class__ is not tuple or len(kv) != 2:
            kv = as_pair(kv, "keys")
        yield kv[0]


def _values(it: Iterator[Any]) -> Iterator[Any]:
    for kv in it:
        if kv.__class__ is not tuple or len(kv) != 2:
            kv = as_pair(kv, "values")
        yield kv[1]


def _concat(a: list[Any], b: list[Any]) -> list[Any]:
    return a + b


def _pair_one(x: Any) -> tuple[Any, int]:
    return (x, 1)


def _pair_none(x: Any) -> tuple[Any, None]:
    return (x, None)


def _add(a: Any, b: Any) -> Any:
    return a + b


def _first(a: Any, _b: Any) -> Any:
    return a


def _key0(kv: tuple[Any, Any]) -> Any:
    return kv[0]
