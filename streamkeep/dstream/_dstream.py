"""`DStream`: the user-facing, lazy stream of batches and its operators.

Every method adds a frozen node to the graph and returns a new DStream;
nothing runs until the context starts. Arguments are checked here, when the
graph is built: callables, arities that can be detected, window and slide
durations (multiples of the parent's slide), partition counts, names.
"""

from __future__ import annotations

import operator
from collections.abc import Callable, Iterable, Iterator
from datetime import datetime
from typing import TYPE_CHECKING, Any, Generic, TypeVar

from streamkeep import _arrow
from streamkeep._arrow import as_schema
from streamkeep._util import Duration, accepts, check_arity, check_callable, check_partitions, duration_ms, to_datetime
from streamkeep.batch import Batch, as_pair
from streamkeep.dstream._graph import (
    Graph,
    MapWithStateNode,
    NarrowNode,
    Node,
    OutputNode,
    ReduceWindowNode,
    SnapshotsNode,
    TransformNode,
    UpdateStateNode,
    WindowNode,
)
from streamkeep.errors import ConfigError
from streamkeep.sinks.base import Sink

if TYPE_CHECKING:
    from streamkeep.dstream._event_time import EventTimeDStream
    from streamkeep.dstream._state import State

T = TypeVar("T")
U = TypeVar("U")
K = TypeVar("K")
V = TypeVar("V")
W = TypeVar("W")
S = TypeVar("S")

#: A per-record operator's error policy: "fail" or a dead-letter `Sink`.
OnError = Any


def _time_fn(f: Callable[..., Any], op: str) -> Callable[[int, Any], Any]:
    """Adapt f(batch) or f(time, batch) to f(time_ms, batch)."""
    check_callable(f, op)
    if accepts(f, 2):
        return lambda t, b: f(to_datetime(t), b)
    if accepts(f, 1) is False:
        msg = f"{op}: the function must take (batch) or (time, batch)"
        raise ConfigError(msg)
    return lambda t, b: f(b)


class DStream(Generic[T]):
    """A stream of batches, one every `slide` (the batch interval unless windowed).

    Obtain one from a `StreamingContext` source, e.g. ``ssc.queue_stream(...)``.
    """

    __slots__ = ("_graph", "_node")

    def __init__(self, graph: Graph, node: Node) -> None:
        self._graph = graph
        self._node = node

    def __repr__(self) -> str:
        return f"DStream({self._node.label}, slide={self._node.slide_ms} ms)"

    @property
    def slide_ms(self) -> int:
        """How often this stream produces a batch, in ms."""
        return self._node.slide_ms

    def _narrow(self, op: str, apply: Callable[[Batch[Any]], Batch[Any]], on_error: Any = "fail") -> DStream[Any]:
        letters = self._graph.dead_letters(on_error, op)
        if letters is not None:
            plain = apply

            def apply(b: Batch[Any]) -> Batch[Any]:
                return plain(b)._dead_letter(letters)

        node = self._graph.add(NarrowNode, op=op, parents=(self._node,), slide_ms=self._node.slide_ms, apply=apply)
        return DStream(self._graph, node)

    def _transform(self, op: str, fn: Callable[[int, list[Batch[Any]]], Batch[Any]], *others: DStream[Any]) -> DStream[Any]:
        for o in others:
            if o._graph is not self._graph:
                msg = f"{op}: both DStreams must belong to the same StreamingContext"
                raise ConfigError(msg)
            if o.slide_ms != self.slide_ms:
                msg = f"{op}: the DStreams produce batches every {self.slide_ms} ms and {o.slide_ms} ms; they must have the same slide"
                raise ConfigError(msg)
        parents = (self._node, *(o._node for o in others))
        node = self._graph.add(TransformNode, op=op, parents=parents, slide_ms=self.slide_ms, fn=fn)
        return DStream(self._graph, node)

    # -- per record -------------------------------------------------------

    def map(self, f: Callable[[T], U], *, on_error: OnError | None = None) -> DStream[U]:
        """Apply `f` to every record.

        `on_error` (here and on the other per-record operators): what a record on which
        `f` raises does. ``"fail"`` fails the batch (`UserFunctionError`; the job stops
        and the batch is re-run on restart). A sink dead-letters the record instead: it
        receives ``{"operator", "batch_time_ms", "record", "error"}`` dicts with the batch
        time, exactly once like any sink, and the batch goes on without the record.
        None (default) uses the context's ``on_error``.
        """
        check_arity(f, 1, "map", "f(record)")
        return self._narrow("map", lambda b: b.map(f), on_error)

    def flat_map(self, f: Callable[[T], Iterable[U]], *, on_error: OnError | None = None) -> DStream[U]:
        """Replace every record by the records `f` returns (`on_error`: see `map`)."""
        check_arity(f, 1, "flat_map", "f(record) -> iterable")
        return self._narrow("flat_map", lambda b: b.flat_map(f), on_error)

    def filter(self, f: Callable[[T], Any], *, on_error: OnError | None = None) -> DStream[T]:
        """Keep the records for which `f` is truthy (`on_error`: see `map`)."""
        check_arity(f, 1, "filter", "f(record) -> bool")
        return self._narrow("filter", lambda b: b.filter(f), on_error)

    def map_partitions(self, f: Callable[[Iterator[T]], Iterable[U]]) -> DStream[U]:
        """Apply `f` to each partition's iterator."""
        check_arity(f, 1, "map_partitions", "f(iterator) -> iterable")
        return self._narrow("map_partitions", lambda b: b.map_partitions(f))

    def glom(self) -> DStream[list[T]]:
        """One record per partition: the list of its records."""
        return self._narrow("glom", lambda b: b.glom())

    def map_values(self: DStream[tuple[K, V]], f: Callable[[V], W], *, on_error: OnError | None = None) -> DStream[tuple[K, W]]:
        """Apply `f` to the value of every (key, value) record (`on_error`: see `map`)."""
        check_arity(f, 1, "map_values", "f(value)")
        return self._narrow("map_values", lambda b: b.map_values(f), on_error)

    def flat_map_values(
        self: DStream[tuple[K, V]], f: Callable[[V], Iterable[W]], *, on_error: OnError | None = None
    ) -> DStream[tuple[K, W]]:
        """Replace (key, value) by (key, w) for every w in `f(value)` (`on_error`: see `map`)."""
        check_arity(f, 1, "flat_map_values", "f(value) -> iterable")
        return self._narrow("flat_map_values", lambda b: b.flat_map_values(f), on_error)

    def repartition(self, num_partitions: int) -> DStream[T]:
        """Spread records evenly over `num_partitions` partitions."""
        check_partitions(num_partitions, "repartition")
        return self._transform("repartition", lambda t, bs: bs[0].repartition(num_partitions))

    # -- tables (pyarrow, imported only when used; docs/tables.md) --------------------------

    def to_tables(self, schema: Any = None) -> DStream[Any]:
        """Each partition's records as one ``pyarrow.Table`` (lazy, fused with the per-record operators).

        Records may be dicts (a column per key), tuples (columns named by `schema`, else
        ``_0``, ``_1``, ...) or scalars (one column ``value``); tables pass through.
        `schema`: a ``pyarrow.Schema`` (types enforced, empty batches keep the columns)
        or a list of column names. The tables survive ``union``, ``window`` and ``transform``.

        Raises:
            ConfigError: pyarrow is not installed (``pip install streamkeep[tables]``).
        """
        _arrow.pa("to_tables")
        checked = as_schema(schema, "to_tables")
        return self._narrow("to_tables", lambda b: b.to_tables(checked))

    def map_tables(self, f: Callable[[Any], Any]) -> DStream[Any]:
        """Apply ``f(pyarrow.Table) -> pyarrow.Table`` to every table (lazy, fused like `map`)."""
        _arrow.pa("map_tables")
        check_arity(f, 1, "map_tables", "f(table) -> table")
        return self._narrow("map_tables", lambda b: b.map_tables(f))

    def to_records(self) -> DStream[dict[str, Any]]:
        """Every row of every table as a dict (column -> value), back to a record stream."""
        return self._narrow("to_records", lambda b: b.to_records())

    def aggregate_state(
        self,
        *,
        by: str | list[str] | tuple[str, ...],
        aggs: dict[str, tuple[str, Any]],
        name: str | None = None,
        emit: str = "all",
    ) -> DStream[Any]:
        """Keep a running aggregate per key, vectorised (no Python call per record or per key).

        `aggs` maps each output column to ``(input column, aggregate)``: ``"sum"``,
        ``"count"`` (``"*"`` counts rows; a column counts its non-null values), ``"min"``,
        ``"max"``, ``"mean"``, ``"last"`` (the last non-null value), or a
        ``streamkeep.tables.Combine`` (a user vectorised combine). The input is a table
        stream (records are converted as by `to_tables`). Each batch emits one table:
        the whole state (``emit="all"``, like `update_state_by_key`) or only the keys the
        batch changed (``emit="changed"``). Keys must not be null.

        Checkpoints hold the state as Arrow IPC: each batch's delta is the changed rows,
        a snapshot the whole table. As with `update_state_by_key`, state is matched by
        `name`; a restore with different key columns, or a stored aggregate column
        removed or changed, is refused naming the operator; adding a column is allowed
        (it starts null for keys already stored).

        Example:
            >>> import streamkeep as sk
            >>> ssc = sk.StreamingContext(1.0)
            >>> words = ssc.queue_stream([[{"word": "a"}, {"word": "b"}, {"word": "a"}]], name="words")
            >>> counts = words.to_tables().aggregate_state(by="word", aggs={"n": ("*", "count")}, name="counts")
            >>> counts.foreach_batch(lambda b: print(sorted(b.to_records().collect(), key=str)))
            >>> ssc.run()
            [{'word': 'a', 'n': 2}, {'word': 'b', 'n': 1}]
        """
        from streamkeep.dstream._tables import AggregateStateNode, parse_aggs, parse_by  # table jobs only

        op = "aggregate_state"
        _arrow.pa(op)
        cols = parse_by(by, op)
        specs = parse_aggs(aggs, cols, op)
        if emit not in ("all", "changed"):
            msg = f"{op}: emit must be 'all' (the whole state each batch) or 'changed' (the keys the batch changed), got {emit!r}"
            raise ConfigError(msg)
        g = self._graph
        node = g.add(
            AggregateStateNode,
            op=op,
            parents=(self._node,),
            slide_ms=self.slide_ms,
            name=g.stateful_name(op, name),
            codec="msgpack",
            by=cols,
            aggs=specs,
            emit=emit,
        )
        return DStream(g, node)

    def aggregate_window(
        self,
        *,
        by: str | list[str] | tuple[str, ...],
        aggs: dict[str, tuple[str, Any]],
        length: Duration,
        slide: Duration | None = None,
        name: str | None = None,
    ) -> DStream[Any]:
        """Every `slide`, aggregates per key over the tables of the last `length` (vectorised).

        `by` and `aggs` as for `aggregate_state` (``"sum"``, ``"count"``, ``"mean"``,
        ``"min"``, ``"max"``, ``"last"``; no Combine). When every aggregate is sum,
        count or mean, a running table is kept and each slide adds the new batches and
        subtracts the expired ones in one vectorised step (the `reduce_by_key_and_window`
        ``inv_f`` path, done in Arrow); otherwise each window is re-aggregated from its
        per-batch partial tables. Keys without rows in the window are left out. Emits
        one table per slide. State (the per-batch partials and the running table) is
        checkpointed as Arrow IPC; changing `by` or `aggs` is refused on restore.
        """
        from streamkeep.dstream._tables import AggregateWindowNode, parse_aggs, parse_by  # table jobs only

        op = "aggregate_window"
        _arrow.pa(op)
        cols = parse_by(by, op)
        specs = parse_aggs(aggs, cols, op)
        for spec in specs:
            if not isinstance(spec.fn, str):
                msg = f"{op}: aggs[{spec.out!r}]: a Combine is not supported in windows (use sum, count, mean, min, max or last)"
                raise ConfigError(msg)
        length_ms, slide_ms = self._window_shape(op, length, slide)
        g = self._graph
        node = g.add(
            AggregateWindowNode,
            op=op,
            parents=(self._node,),
            slide_ms=slide_ms,
            length_ms=length_ms,
            name=g.stateful_name(op, name),
            codec="msgpack",
            by=cols,
            aggs=specs,
        )
        return DStream(g, node)

    # -- per batch --------------------------------------------------------

    def transform(self, f: Callable[..., Batch[U]]) -> DStream[U]:
        """Apply ``f(batch)`` or ``f(time, batch)`` (a Batch -> Batch function) to every batch."""
        g = _time_fn(f, "transform")
        return self._transform("transform", lambda t, bs: _as_batch(g(t, bs[0]), t))

    def transform_with(self, f: Callable[..., Batch[U]], other: DStream[Any]) -> DStream[U]:
        """Apply ``f(batch, other_batch)`` or ``f(time, batch, other_batch)`` to each pair of batches."""
        check_callable(f, "transform_with")
        if accepts(f, 3):
            return self._transform("transform_with", lambda t, bs: _as_batch(f(to_datetime(t), bs[0], bs[1]), t), other)
        check_arity(f, 2, "transform_with", "f(batch, other) or f(time, batch, other)")
        return self._transform("transform_with", lambda t, bs: _as_batch(f(bs[0], bs[1]), t), other)

    def union(self, *others: DStream[T]) -> DStream[T]:
        """The records of this and the other streams, batch by batch."""
        return self._transform("union", lambda t, bs: bs[0].union(*bs[1:]), *others)

    def reduce(self, f: Callable[[T, T], T]) -> DStream[T]:
        """One record per batch: all records combined with `f`."""
        check_arity(f, 2, "reduce", "f(a, b)")
        return self._transform("reduce", lambda t, bs: bs[0].reduce(f))

    def count(self) -> DStream[int]:
        """One record per batch: its number of records."""
        return self._transform("count", lambda t, bs: bs[0].count_batch())

    def count_by_value(self) -> DStream[tuple[T, int]]:
        """(record, occurrences) per distinct record of each batch."""
        return self._transform("count_by_value", lambda t, bs: bs[0].count_by_value())

    def reduce_by_key(self: DStream[tuple[K, V]], f: Callable[[V, V], V], num_partitions: int | None = None) -> DStream[tuple[K, V]]:
        """Combine the values of each key with `f`, per batch."""
        check_arity(f, 2, "reduce_by_key", "f(a, b)")
        check_partitions(num_partitions, "reduce_by_key", optional=True)
        return self._transform("reduce_by_key", lambda t, bs: bs[0].reduce_by_key(f, num_partitions))

    def group_by_key(self: DStream[tuple[K, V]], num_partitions: int | None = None) -> DStream[tuple[K, list[V]]]:
        """(key, [values]) per key of each batch."""
        check_partitions(num_partitions, "group_by_key", optional=True)
        return self._transform("group_by_key", lambda t, bs: bs[0].group_by_key(num_partitions))

    def combine_by_key(
        self: DStream[tuple[K, V]],
        create: Callable[[V], W],
        merge_value: Callable[[W, V], W],
        merge_combiners: Callable[[W, W], W],
        num_partitions: int | None = None,
    ) -> DStream[tuple[K, W]]:
        """Combine the values of each key of each batch (see `Batch.combine_by_key`)."""
        check_arity(create, 1, "combine_by_key", "create(value)")
        check_arity(merge_value, 2, "combine_by_key", "merge_value(combiner, value)")
        check_arity(merge_combiners, 2, "combine_by_key", "merge_combiners(a, b)")
        check_partitions(num_partitions, "combine_by_key", optional=True)
        return self._transform(
            "combine_by_key", lambda t, bs: bs[0].combine_by_key(create, merge_value, merge_combiners, num_partitions)
        )

    def join(self: DStream[tuple[K, V]], other: DStream[tuple[K, W]], num_partitions: int | None = None) -> DStream[tuple[K, tuple[V, W]]]:
        """Inner join of each pair of batches by key."""
        check_partitions(num_partitions, "join", optional=True)
        return self._transform("join", lambda t, bs: bs[0].join(bs[1], num_partitions), other)

    def left_outer_join(self: DStream[tuple[K, V]], other: DStream[tuple[K, W]], num_partitions: int | None = None) -> DStream[tuple[K, tuple[V, W | None]]]:
        """Left outer join of each pair of batches by key (missing right values are None)."""
        check_partitions(num_partitions, "left_outer_join", optional=True)
        return self._transform("left_outer_join", lambda t, bs: bs[0].left_outer_join(bs[1], num_partitions), other)

    def right_outer_join(self: DStream[tuple[K, V]], other: DStream[tuple[K, W]], num_partitions: int | None = None) -> DStream[tuple[K, tuple[V | None, W]]]:
        """Right outer join of each pair of batches by key (missing left values are None)."""
        check_partitions(num_partitions, "right_outer_join", optional=True)
        return self._transform("right_outer_join", lambda t, bs: bs[0].right_outer_join(bs[1], num_partitions), other)

    def full_outer_join(self: DStream[tuple[K, V]], other: DStream[tuple[K, W]], num_partitions: int | None = None) -> DStream[tuple[K, tuple[V | None, W | None]]]:
        """Full outer join of each pair of batches by key."""
        check_partitions(num_partitions, "full_outer_join", optional=True)
        return self._transform("full_outer_join", lambda t, bs: bs[0].full_outer_join(bs[1], num_partitions), other)

    def cogroup(self: DStream[tuple[K, V]], other: DStream[tuple[K, W]], num_partitions: int | None = None) -> DStream[tuple[K, tuple[list[V], list[W]]]]:
        """(key, ([values here], [values there])) for every key in either batch."""
        check_partitions(num_partitions, "cogroup", optional=True)
        return self._transform("cogroup", lambda t, bs: bs[0].cogroup(bs[1], num_partitions=num_partitions), other)

    # -- windows ----------------------------------------------------------

    def _window_shape(self, op: str, length: Duration, slide: Duration | None) -> tuple[int, int]:
        length_ms = duration_ms(length, f"{op}: window length")
        slide_ms = self.slide_ms if slide is None else duration_ms(slide, f"{op}: slide")
        base = self.slide_ms
        for what, v in (("window length", length_ms), ("slide", slide_ms)):
            if v % base:
                msg = (
                    f"{op}: the {what} ({v} ms) must be a multiple of the parent stream's slide ({base} ms, the batch "
                    f"interval unless the stream is already windowed); use e.g. {max(base, v // base * base)} ms"
                )
                raise ConfigError(msg)
        return length_ms, slide_ms

    def window(self, length: Duration, slide: Duration | None = None, *, name: str | None = None, codec: str | None = None) -> DStream[T]:
        """Every `slide`, the records of the last `length` (both multiples of the batch interval)."""
        length_ms, slide_ms = self._window_shape("window", length, slide)
        g = self._graph
        node = g.add(
            WindowNode,
            op="window",
            parents=(self._node,),
            slide_ms=slide_ms,
            length_ms=length_ms,
            name=g.stateful_name("window", name),
            codec=g.check_codec("window", codec),
        )
        return DStream(g, node)

    def reduce_by_key_and_window(
        self: DStream[tuple[K, V]],
        f: Callable[[V, V], V],
        length: Duration,
        slide: Duration | None = None,
        *,
        inv_f: Callable[[V, V], V] | None = None,
        filter_f: Callable[[tuple[K, V]], Any] | None = None,
        num_partitions: int | None = None,
        name: str | None = None,
        codec: str | None = None,
    ) -> DStream[tuple[K, V]]:
        """Every `slide`, each key's values over the last `length` combined with `f`.

        With `inv_f` (the inverse of `f`: ``inv_f(f(a, b), b) == a``) the window is
        updated incrementally: new batches are added and expired ones subtracted, so
        the cost follows the slide, not the window. `filter_f` drops (key, value)
        pairs from the result and the running window (e.g. counts that reached 0).
        """
        op = "reduce_by_key_and_window"
        check_arity(f, 2, op, "f(a, b)")
        if inv_f is not None:
            check_arity(inv_f, 2, op, "inv_f(a, b)")
        if filter_f is not None:
            check_arity(filter_f, 1, op, "filter_f((key, value)) -> bool")
        check_partitions(num_partitions, op, optional=True)
        length_ms, slide_ms = self._window_shape(op, length, slide)
        g = self._graph
        node = g.add(
            ReduceWindowNode,
            op=op,
            parents=(self._node,),
            slide_ms=slide_ms,
            length_ms=length_ms,
            name=g.stateful_name(op, name),
            codec=g.check_codec(op, codec),
            f=f,
            inv_f=inv_f,
            filter_f=filter_f,
            num_partitions=num_partitions,
        )
        return DStream(g, node)

    def reduce_by_window(
        self,
        f: Callable[[T, T], T],
        length: Duration,
        slide: Duration | None = None,
        *,
        inv_f: Callable[[T, T], T] | None = None,
        name: str | None = None,
        codec: str | None = None,
    ) -> DStream[T]:
        """Every `slide`, all records of the last `length` combined with `f` (one record)."""
        check_arity(f, 2, "reduce_by_window", "f(a, b)")
        keyed = self.reduce(f).map(_key_one)
        return keyed.reduce_by_key_and_window(f, length, slide, inv_f=inv_f, num_partitions=1, name=name, codec=codec).map(_value)

    def count_by_window(self, length: Duration, slide: Duration | None = None, *, name: str | None = None) -> DStream[int]:
        """Every `slide`, the number of records in the last `length`."""
        return self.map(_one).reduce_by_window(operator.add, length, slide, inv_f=operator.sub, name=name)

    def count_by_value_and_window(
        self, length: Duration, slide: Duration | None = None, *, num_partitions: int | None = None, name: str | None = None
    ) -> DStream[tuple[T, int]]:
        """Every `slide`, (record, occurrences) over the last `length` (zero counts dropped)."""
        pairs = self.map(_pair_one)
        return pairs.reduce_by_key_and_window(
            operator.add, length, slide, inv_f=operator.sub, filter_f=_positive, num_partitions=num_partitions, name=name
        )

    def group_by_key_and_window(
        self: DStream[tuple[K, V]], length: Duration, slide: Duration | None = None, *, num_partitions: int | None = None, name: str | None = None
    ) -> DStream[tuple[K, list[V]]]:
        """Every `slide`, (key, [values]) over the last `length`."""
        return self.window(length, slide, name=name).group_by_key(num_partitions)

    # -- event time -------------------------------------------------------

    def with_event_time(self, ts: Callable[[T], Any], *, max_delay: Duration, idle_timeout: Duration | None = None) -> EventTimeDStream[T]:
        """This stream with an event time per record, for event-time windows (docs/event-time.md).

        `ts(record)` returns the record's event time: a `datetime` (aware; a naive one is
        taken as UTC) or epoch seconds (int or float); anything else fails the batch with a
        UserFunctionError naming the window operator and the record. The watermark is kept
        per source partition (Kafka partition, queue partition; a source without
        partitions is one): the largest event time seen there minus `max_delay` (seconds or
        timedelta; 0 allowed). A window operator's watermark is the minimum over the
        active partitions, moved after each batch and never back; it is state,
        checkpointed with the windows. `idle_timeout` (batch time, not wall time): a
        partition without records for that long stops holding the watermark back; when
        every partition is idle the watermark moves on with batch time, so the last
        windows of a finished input are emitted. Open windows with
        ``.tumbling_window(size)``, ``.sliding_window(size, slide)`` or
        ``.session_window(gap)`` on the result.
        """
        from streamkeep.dstream._event_time import with_event_time

        return with_event_time(self, ts, max_delay, idle_timeout)

    # -- state ------------------------------------------------------------

    def update_state_by_key(
        self: DStream[tuple[K, V]],
        update: Callable[[list[V], S | None], S | None],
        *,
        name: str | None = None,
        initial: Iterable[tuple[K, S]] | Batch[tuple[K, S]] | None = None,
        num_partitions: int | None = None,
        codec: str | None = None,
    ) -> DStream[tuple[K, S]]:
        """Keep a state per key: ``update(new_values, old_state) -> new_state``.

        As in Spark, `update` runs every batch for every key that has state or new
        values (new_values is [] for keys without new values); returning None removes
        the key. The result is the whole state as (key, state) pairs each batch.
        `initial` seeds the state when the job starts without a checkpoint.
        """
        op = "update_state_by_key"
        check_arity(update, 2, op, "update(new_values, old_state)")
        check_partitions(num_partitions, op, optional=True)
        g = self._graph
        node = g.add(
            UpdateStateNode,
            op=op,
            parents=(self._node,),
            slide_ms=self.slide_ms,
            name=g.stateful_name(op, name),
            codec=g.check_codec(op, codec),
            update=update,
            initial=_initial_items(initial, op),
            num_partitions=num_partitions,
        )
        return DStream(g, node)

    def map_with_state(
        self: DStream[tuple[K, V]],
        f: Callable[[K, V | None, State], U],
        *,
        name: str | None = None,
        timeout: Duration | None = None,
        initial: Iterable[tuple[K, Any]] | Batch[tuple[K, Any]] | None = None,
        codec: str | None = None,
        on_error: OnError | None = None,
    ) -> MapWithStateDStream[U]:
        """Call ``f(key, value, state)`` for every record; emit what it returns.

        `state` offers ``exists()``, ``get()``, ``update(v)``, ``remove()`` and
        ``is_timing_out()``. With `timeout`, keys without records for that long are
        called once more with value None and ``is_timing_out()`` True, then removed.
        ``.state_snapshots()`` on the result streams every (key, state) each batch.
        A mutable state changed in place (``state.get().append(v)``) is persisted like
        an ``update()``. `on_error`: see `map`; a dead-lettered record's output is left
        out, its ``update()``/``remove()`` is not applied (an in-place change made before
        the function raised is kept, as a replay would make it again).
        """
        op = "map_with_state"
        check_arity(f, 3, op, "f(key, value, state)")
        timeout_ms = None if timeout is None else duration_ms(timeout, f"{op}: timeout")
        g = self._graph
        letters = g.dead_letters(on_error, op)
        node = g.add(
            MapWithStateNode,
            op=op,
            parents=(self._node,),
            slide_ms=self.slide_ms,
            name=g.stateful_name(op, name),
            codec=g.check_codec(op, codec),
            f=f,
            timeout_ms=timeout_ms,
            initial=_initial_items(initial, op),
            dead_letters=letters,
        )
        return MapWithStateDStream(g, node)

    # -- outputs ----------------------------------------------------------

    def foreach_batch(self, f: Callable[..., Any]) -> None:
        """Call ``f(batch)`` or ``f(time, batch)`` for every batch (time: aware UTC datetime).

        After a crash between a batch's outputs and its commit, the batch is re-run with
        exactly the same input and `f` is called again for that batch time: make its
        external effects idempotent per batch time (the time is passed for that), or use
        `write_to` with a sink, which applies each batch time exactly once.
        """
        g = _time_fn(f, "foreach_batch")
        self._graph.add(OutputNode, op="foreach_batch", parents=(self._node,), slide_ms=self.slide_ms, fn=g, sink=None)

    def pprint(self, num: int = 10) -> None:
        """Print the first `num` records of every batch, Spark style (a `streamkeep.sinks.text.PPrintSink`)."""
        from streamkeep.sinks.text import PPrintSink

        sink = PPrintSink(num, name=self._output_name("pprint"))
        self._write_to(sink, "pprint")

    def save_as_text_files(self, prefix: str, suffix: str | None = None) -> None:
        """Write each batch to ``prefix-<time ms>[.suffix]/part-NNNNN`` (one file per partition).

        A replayed batch rewrites the same files, so output is exact after recovery
        (a `streamkeep.sinks.text.TextFilesSink`).
        """
        from streamkeep.sinks.text import TextFilesSink

        self._write_to(TextFilesSink(prefix, suffix, name=self._output_name("save_as_text_files")), "save_as_text_files")

    def write_to(self, sink: Sink) -> None:
        """Send every batch to `sink`, which receives the batch time with the records."""
        for attr in ("name", "open", "write", "close"):
            if not hasattr(sink, attr):
                msg = f"write_to: {sink!r} is not a Sink (it has no {attr!r}); see streamkeep.sinks"
                raise ConfigError(msg)
        self._write_to(sink, f"sink {sink.name!r}", "write_to")

    def _output_name(self, op: str) -> str:
        """The name of the sink behind an output operator: the label of its node (``pprint#3``)."""
        return f"{op}#{len(self._graph.nodes)}"

    def _write_to(self, sink: Sink, op: str, what: str | None = None) -> None:
        self._graph.register_sink(sink, what or op)
        self._graph.add(OutputNode, op=op, parents=(self._node,), slide_ms=self.slide_ms, fn=None, sink=sink)


class MapWithStateDStream(DStream[T]):
    """The result of `map_with_state`: mapped records, plus `state_snapshots()`."""

    __slots__ = ()

    def state_snapshots(self) -> DStream[tuple[Any, Any]]:
        """Every (key, state) of the operator after each batch."""
        node = self._graph.add(SnapshotsNode, op="state_snapshots", parents=(self._node,), slide_ms=self.slide_ms)
        return DStream(self._graph, node)


def _as_batch(value: Any, t: int) -> Batch[Any]:
    if isinstance(value, Batch):
        return value
    if value is None:
        msg = "transform: the function returned None; it must return a Batch (e.g. batch.map(...))"
        raise ConfigError(msg)
    if isinstance(value, (list, tuple)):
        return Batch([list(value)], t)
    msg = f"transform: the function must return a Batch, got {type(value).__name__}"
    raise ConfigError(msg)


def _initial_items(initial: Any, op: str) -> tuple[tuple[Any, Any], ...]:
    if initial is None:
        return ()
    items = initial.collect() if isinstance(initial, Batch) else initial
    try:
        out = tuple(kv if kv.__class__ is tuple and len(kv) == 2 else as_pair(kv, op) for kv in items)
        for k, _ in out:
            hash(k)
    except (TypeError, ValueError) as exc:
        msg = f"{op}: initial must be an iterable of (key, state) pairs with hashable keys, or a Batch of them ({exc})"
        raise ConfigError(msg) from exc
    return out


def _key_one(x: Any) -> tuple[int, Any]:
    return (0, x)


def _value(kv: tuple[Any, Any]) -> Any:
    return kv[1]


def _one(_x: Any) -> int:
    return 1


def _pair_one(x: Any) -> tuple[Any, int]:
    return (x, 1)


def _positive(kv: tuple[Any, int]) -> bool:
    return kv[1] > 0


__all__ = ["DStream", "MapWithStateDStream", "datetime"]
