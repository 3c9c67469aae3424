"""Runtime of `aggregate_state`: a running aggregate per key as one Arrow table, merged vectorised.

Per batch (no Python call per record or per key):

1. the batch's tables are concatenated and reduced per key with one pyarrow
   ``group_by`` (the partials: sum, count, min, max, last, a Combine's partial);
2. the stored rows of the batch's keys are found with one hash probe of the key
   column (``is_in``; several key columns: the whole state takes part) and merged
   with the partials by a second ``group_by`` over [stored rows, partials] (sums
   and counts add up, min/max, last), or, with a Combine, by a hash join and the
   Combine's ``merge`` over aligned columns: these are the *changed rows*;
3. the state becomes the other stored rows plus the changed rows.

The checkpoint delta of a batch is its changed rows (Arrow IPC); a snapshot is the
whole table (Arrow IPC). Tables are immutable, so a batch's output never changes
when a later batch updates the state. Why pyarrow rather than polars: docs/tables.md.

The hash probes of a big batch (or of a big state against a small batch) run in up
to `threads` contiguous chunks side by side (pyarrow kernels release the GIL;
streamkeep/executors/_threads.py), put back together in chunk order: the result is
exactly that of one call, on every path.
"""

from __future__ import annotations

from typing import Any

from streamkeep import _arrow
from streamkeep._util import user_function_error
from streamkeep.batch import Batch
from streamkeep.dstream._tables import AggregateStateNode, AggSpec, Combine
from streamkeep.errors import ConfigError, StreamkeepError, UserFunctionError
from streamkeep.executors._runtime import StatefulRuntime
from streamkeep.executors._threads import Workers

_OP = "aggregate_state"
# Compact the state's chunks (one per batch's changed rows) past this many.
_MAX_CHUNKS = 32
#: A probe is split into chunks of at least this many values (a batch of 32k rows or more goes to 2 threads) ...
CHUNK_ROWS = 16_384
#: ... when its hash table (built again by every chunk) has at most 1/SET_RATIO as many values as the probe.
SET_RATIO = 2


#: How a stored column's values of several batches combine into one (partial aggregation -> aggregation).
COMBINE = {"sum": "sum", "count": "sum", "count_all": "sum", "min": "min", "max": "max", "last": "last"}


def grouped(pa: Any, table: Any, by: tuple[str, ...], specs: list[Any], names: list[str]) -> Any:
    """``table.group_by(by).aggregate(specs)`` (ordered: use_threads=False) as key columns then `names`."""
    out = table.group_by(list(by), use_threads=False).aggregate(specs)
    # Keys come first (pyarrow >= 19) or last (older pyarrow).
    n, nk = len(specs), len(by)
    key_at, agg_at = (0, nk) if out.column_names[:nk] == list(by) else (n, 0)
    return pa.table([*(out.column(key_at + i) for i in range(nk)), *(out.column(agg_at + i) for i in range(n))], names=[*by, *names])


def check_columns(node: Any, t: int, table: Any, inputs: list[str]) -> None:
    """ConfigError naming the operator when the batch lacks a key or input column, or has a null key."""
    missing = [c for c in (*node.by, *(c for c in inputs if c != "*")) if c not in table.column_names]
    if missing:
        msg = (
            f"{node.label}: the batch of {t} ms has no column {missing[0]!r} (its columns: {table.column_names}); "
            f"{node.op} needs the key columns {list(node.by)} and every input column of aggs"
        )
        raise ConfigError(msg)
    for k in node.by:
        nulls = table.column(k).null_count
        if nulls:
            msg = (
                f"{node.label}: the key column {k!r} has {nulls} null value(s) in the batch of {t} ms; keys must not "
                f"be null (fill them, e.g. pyarrow.compute.fill_null, or filter the rows in map_tables)"
            )
            raise ConfigError(msg)


def _stored(spec: AggSpec) -> list[tuple[str, str, str]]:
    """(state column, input column, partial aggregation) of one aggregate; mean keeps a sum and a count."""
    fn = spec.fn
    if isinstance(fn, Combine):
        return [(spec.out, spec.column, fn.partial)]
    if fn == "mean":
        return [(f"{spec.out}#sum", spec.column, "sum"), (f"{spec.out}#count", spec.column, "count")]
    if fn == "count":
        return [(spec.out, spec.column, "count_all" if spec.column == "*" else "count")]
    return [(spec.out, spec.column, fn)]


class AggregateStateRuntime(StatefulRuntime):
    """`aggregate_state`'s state: one ``pyarrow.Table`` (key columns, then the stored aggregate columns)."""

    node: AggregateStateNode

    def __init__(self, node: AggregateStateNode) -> None:
        self.node = node
        self.pa = _arrow.pa(_OP)
        self.pc = _arrow.pc(_OP)
        self.state: Any = None  # pyarrow.Table or None (no key yet)
        self._t = 0  # the batch being computed (error messages)
        self._changes: list[Any] = []  # changed rows per batch since the last delta()
        self.columns = [c for spec in node.aggs for c in _stored(spec)]
        self._stored_names = [*node.by, *(c for c, _, _ in self.columns)]  # the stored table's columns
        self._out_names = [*node.by, *(a.out for a in node.aggs)]  # the output's columns
        #: threads a big probe is split over: 1 (never split) unless LocalExecutor(table_threads=N) sets it. One by
        #: default: on the 2-core reference machine the split probe was slower than one thread even at load 1.5
        #: (bench/tables.py, 2026-12-03: 106 vs 96.5 ms per 1M words).
        self.threads = 1
        self._workers: Workers | None = None

    def set_threads(self, n: int) -> None:
        self.close()
        self.threads = n

    def close(self) -> None:
        """Stop the probe threads, if any were started."""
        if self._workers is not None:
            self._workers.close()
            self._workers = None

    # -- one batch --------------------------------------------------------------------------

    def step(self, t: int, parent: Batch[Any] | None) -> Batch[Any] | None:
        if parent is None:
            return None
        node = self.node
        self._t = t
        try:
            table = parent.to_arrow()
        except UserFunctionError:
            raise
        except ConfigError as exc:
            msg = f"{node.label}: {exc} (batch time {t} ms)"
            raise ConfigError(msg) from exc
        changed = None
        if table.num_rows:
            try:
                changed = self._merge(t, table)
            except StreamkeepError:
                raise
            except Exception as exc:  # pyarrow refusing the data (e.g. a sum of strings)
                msg = f"{node.label}: aggregating the batch of {t} ms failed: {type(exc).__name__}: {exc}"
                raise ConfigError(msg) from exc
            self._changes.append(changed)
        if node.emit == "changed":
            out = self._output(changed if changed is not None else self._empty())
        else:
            out = self._output(self.state if self.state is not None else self._empty())
        return Batch([[out]], t)

    def _partials(self, t: int, table: Any) -> Any:
        """The batch reduced per key: key columns, then one column per stored column."""
        node = self.node
        check_columns(node, t, table, [col for _, col, _ in self.columns])
        specs = [([], "count_all") if partial == "count_all" else (col, partial) for _, col, partial in self.columns]
        return grouped(self.pa, table, node.by, specs, [c for c, _, _ in self.columns])

    def _merge(self, t: int, table: Any) -> Any:
        """Fold the batch into the state; return the changed rows (every key of the batch)."""
        pa = self.pa
        node = self.node
        if self._countable(table):  # a dictionary-encoded key column stays encoded: only its dictionary is probed
            check_columns(node, t, table, [col for _, col, _ in self.columns])
            self.state, changed = self._counted(self.state, table)
            return changed
        table = self._plain_keys(table)
        partial = self._partials(t, table)
        if self.state is None:
            self.state = partial
            return partial
        state = self._conform(self.state, partial)
        if len(node.by) == 1:
            self.state, changed = self._upsert(state, partial)
            return changed
        custom = any(isinstance(spec.fn, Combine) for spec in node.aggs)
        if not custom:
            self.state, changed = self._regroup(state, partial)
            return changed
        changed = self._joined(state, partial)
        rest = self._without(state, changed)
        self.state = pa.concat_tables([rest, changed.cast(rest.schema) if changed.schema != rest.schema else changed])
        if self.state.column(0).num_chunks > _MAX_CHUNKS:
            self.state = self.state.combine_chunks()
        return changed

    def _plain_keys(self, table: Any) -> Any:
        """`table` with dictionary-encoded key columns decoded (stored keys are plain values: hash probes need one type)."""
        types = self.pa.types
        for k in self.node.by:
            if k in table.column_names and types.is_dictionary(table.schema.field(k).type):
                i = table.column_names.index(k)
                table = table.set_column(i, k, table.column(k).cast(table.schema.field(k).type.value_type))
        return table

    def _countable(self, table: Any) -> bool:
        """True when `_counted` can fold `table` in: one key column, counts and numeric sums only, and a
        stored table (of the batch's key type, every stored column present) no bigger than the batch.

        The size rule keeps the hash table built per batch (over the stored keys) no bigger than
        the batch; a big state with small batches takes `_merge`'s path (the hash is built over
        the batch's keys, the state only probed).
        """
        state = self.state
        by = self.node.by
        if state is None or len(by) != 1 or not 0 < state.num_rows <= table.num_rows:
            return False
        if state.column_names != self._stored_names:
            return False
        if by[0] not in table.column_names:
            return False
        types = self.pa.types
        key_type = table.schema.field(by[0]).type
        if (key_type.value_type if types.is_dictionary(key_type) else key_type) != state.schema.field(0).type:
            return False
        for col, src, fn in self.columns:
            stored = state.schema.field(col).type
            if fn in ("count_all", "count"):
                if stored != self.pa.int64():
                    return False
                continue
            if fn != "sum" or src not in table.column_names:
                return False
            field = table.schema.field(src).type
            if table.column(src).null_count:
                return False  # a key whose values are all null sums to null: the group_by path says so
            ints = types.is_signed_integer(field) and stored == self.pa.int64()
            floats = types.is_floating(field) and stored == self.pa.float64()
            if not (ints or floats):
                return False
        return True

    def _counted(self, state: Any, table: Any) -> tuple[Any, Any]:
        """Counts and sums: the batch's rows folded straight into the stored rows (state, changed rows).

        One hash probe gives every row of the batch the stored row of its key (``index_in``
        over the stored keys, no per-batch group_by of the batch's keys; a dictionary-encoded
        key column: its dictionary is probed and the rows take their entry's stored row);
        counts and sums are accumulated per stored row with numpy (``bincount`` / ``add.at``:
        exact int64, in row order), the touched rows updated in place
        (``replace_with_mask``). Rows of keys not stored yet go through the group_by path
        (`_partials`, keys decoded) and are appended. The changed rows are the touched
        stored rows (state order), then the new keys (first-arrival order), as in `_upsert`.
        """
        pa, pc = self.pa, self.pc
        np = _arrow.require("numpy", _OP)
        key = self.node.by[0]
        skeys = state.column(key)
        if skeys.num_chunks != 1:
            state = state.combine_chunks()
            skeys = state.column(key)
        n_state = state.num_rows
        rows, fresh = self._stored_rows(table.column(key), skeys.chunk(0))  # row n_state: a key not stored yet
        hits = np.bincount(rows, minlength=n_state + 1)[:n_state]
        every = np.count_nonzero(hits) == n_state  # the batch has every stored key: no takes, whole columns
        touched = None if every else np.flatnonzero(hits)
        mask = None if every else pa.array(hits > 0)
        cols = [skeys]
        for col, src, fn in self.columns:
            if fn == "count_all":
                acc = hits
            elif fn == "count":
                valid = table.column(src).is_valid()
                acc = np.zeros(n_state + 1, np.int64)
                np.add.at(acc, rows, valid.to_numpy(zero_copy_only=False).astype(np.int64))
            else:
                stored_type = state.schema.field(col).type
                acc = np.zeros(n_state + 1, np.float64 if self.pa.types.is_floating(stored_type) else np.int64)
                np.add.at(acc, rows, table.column(src).to_numpy().astype(acc.dtype, copy=False))
            if every:
                new = pa.array(acc[:n_state], state.schema.field(col).type)
                stored = state.column(col)
                cols.append(pc.add(stored, new) if not stored.null_count else pc.coalesce(pc.add(stored, new), new))
                continue
            new = pa.array(acc[touched], state.schema.field(col).type)
            old = state.column(col).take(touched)
            merged = pc.coalesce(pc.add(old, new), new)
            cols.append(pc.replace_with_mask(state.column(col), mask, merged.combine_chunks()))
        state = pa.table(cols, schema=state.schema)
        changed = state if every else state.take(touched)
        if fresh:
            partial = self._partials(self._t, self._plain_keys(table.filter(pa.array(rows == n_state))))
            partial = partial.cast(state.schema) if partial.schema != state.schema else partial
            state = pa.concat_tables([state, partial])
            changed = pa.concat_tables([changed, partial])
        return state, changed

    def _stored_rows(self, keys: Any, stored: Any) -> tuple[Any, int]:
        """The stored row of each of `keys` (a ChunkedArray) as numpy, ``len(stored)`` where the key is not
        stored, and how many keys are not stored.

        A dictionary-encoded column is not decoded: each chunk's dictionary is probed
        (``index_in``, one hash probe per distinct value instead of per row) and every row
        takes the stored row of its dictionary entry (a numpy gather). A null dictionary
        value is never stored, so its rows count as new keys, whose group_by path refuses
        null keys by name.
        """
        pa, pc = self.pa, self.pc
        n_state = len(stored)
        if not pa.types.is_dictionary(keys.type):
            return self._probe(keys, stored)
        np = _arrow.require("numpy", _OP)
        parts = []
        for chunk in keys.chunks:  # each chunk has its own dictionary
            at = pc.fill_null(pc.index_in(chunk.dictionary, value_set=stored), n_state).to_numpy()
            parts.append(at[chunk.indices.to_numpy()])  # null indices were refused (check_columns)
        rows = parts[0] if len(parts) == 1 else np.concatenate(parts)
        return rows, int(np.count_nonzero(rows == n_state))

    def _probe(self, keys: Any, stored: Any) -> tuple[Any, int]:
        """The stored row of each of `keys` (a ChunkedArray of plain values) as numpy, ``len(stored)`` for a key
        not stored, and how many are not stored: ``index_in`` over the stored keys, in `_chunks` chunks."""
        pc = self.pc
        n_state = len(stored)

        def probe(part: Any) -> tuple[Any, int]:
            where = pc.index_in(part, value_set=stored)
            fresh = where.null_count
            return (pc.fill_null(where, n_state).to_numpy() if fresh else where.to_numpy()), fresh

        keys = keys.chunk(0) if keys.num_chunks == 1 else keys.combine_chunks()
        k = self._chunks(len(keys), n_state)
        if k == 1:
            return probe(keys)
        np = _arrow.require("numpy", _OP)
        parts = self._in_chunks(probe, keys, k)
        return np.concatenate([rows for rows, _ in parts]), sum(fresh for _, fresh in parts)

    def _index_in(self, values: Any, value_set: Any) -> Any:
        """``pc.index_in(values, value_set=value_set)`` as one Array, in `_chunks` chunks."""
        pa, pc = self.pa, self.pc

        def probe(part: Any) -> Any:
            return pc.index_in(part, value_set=value_set)

        k = self._chunks(len(values), len(value_set))
        parts = [probe(values)] if k == 1 else self._in_chunks(probe, values, k)
        arrays = [c for p in parts for c in (p.chunks if isinstance(p, pa.ChunkedArray) else [p])]
        if len(arrays) == 1:
            return arrays[0]
        return pa.concat_arrays(arrays) if arrays else pa.array([], pa.int32())

    def _chunks(self, n: int, n_set: int) -> int:
        """In how many chunks (threads) a probe of `n` values against a set of `n_set` values runs.

        Every chunk builds its own hash table of the set (pyarrow keeps none between calls), so
        a probe is split only when it is big (`CHUNK_ROWS` per chunk) and its set small next to
        it (`SET_RATIO`): then the second core takes half the probe for a few percent more CPU.
        """
        k = min(self.threads, n // CHUNK_ROWS)
        return k if k > 1 and n_set * SET_RATIO <= n else 1

    def _in_chunks(self, fn: Any, values: Any, k: int) -> list[Any]:
        """``fn`` over `k` contiguous slices of `values` (an Array or ChunkedArray) side by side, results in order."""
        if self._workers is None:
            self._workers = Workers(max(1, self.threads - 1), f"streamkeep-probe-{self.node.name}")
        size = -(-len(values) // k)
        return self._workers.map(fn, [values.slice(i * size, size) for i in range(k)])

    def _upsert(self, state: Any, partial: Any) -> tuple[Any, Any]:
        """One key column: merge the batch's partials into the state in place (state, changed rows).

        One hash probe of the stored keys against the batch's keys (``index_in``: the
        hash table is built over the batch's keys, the state is only probed) gives, for
        every stored row, the batch row of its key. The stored rows of those keys are
        combined with the partials column by column (``_combine``: sums add up, min/max,
        last, a Combine's ``merge`` once for all keys) and written back in place
        (``replace_with_mask``: the key column is not copied, the rows keep their
        places); the batch's new keys are appended. The changed rows are the updated
        stored rows (in state order) then the new keys (in first-arrival order).
        """
        pa, pc = self.pa, self.pc
        key = self.node.by[0]
        where = self._index_in(state.column(key), partial.column(key).combine_chunks())
        found = pc.is_valid(where)
        s_rows = pc.indices_nonzero(found)  # stored rows of the batch's keys (state order)
        p_rows = where.filter(found)  # their batch rows
        n_old, n_part = len(s_rows), partial.num_rows
        if n_old < n_part:
            np = _arrow.require("numpy", _OP)
            fresh = np.ones(n_part, dtype=bool)
            fresh[p_rows.to_numpy()] = False
            order = pa.concat_arrays([pa.array(p_rows.to_numpy(), pa.int64()), pa.array(np.flatnonzero(fresh), pa.int64())])
        else:
            order = p_rows
        part = partial.take(order)  # the batch's rows: keys already stored first, then new keys
        arrays = [part.column(key)]
        for spec in self.node.aggs:
            for col, _, partial_fn in _stored(spec):
                old = state.column(col).take(s_rows)
                if n_old < n_part:
                    old = pa.chunked_array([*old.chunks, pa.nulls(n_part - n_old, old.type)], old.type)
                arrays.append(self._combine(spec, partial_fn, old, part.column(col)))
        changed = pa.table(arrays, names=[key, *(c for c, _, _ in self.columns)])
        if changed.schema != state.schema:
            changed = changed.cast(state.schema)
        if n_old:
            merged = changed.slice(0, n_old)
            cols = [state.column(key)]
            for c in state.column_names[1:]:
                cols.append(pc.replace_with_mask(state.column(c), found, merged.column(c).combine_chunks()))
            state = pa.table(cols, schema=state.schema)
        if n_old < n_part:
            state = pa.concat_tables([state, changed.slice(n_old)])
            if state.column(0).num_chunks > _MAX_CHUNKS:
                state = state.combine_chunks()
        return state, changed

    def _joined(self, state: Any, partial: Any) -> Any:
        """A Combine among the aggregates: the partials joined with the stored rows, combined column by column."""
        node = self.node
        joined = partial.join(state, keys=list(node.by), join_type="left outer", right_suffix="#old", use_threads=False)
        arrays = [joined.column(k) for k in node.by]
        for spec in node.aggs:
            for col, _, partial_fn in _stored(spec):
                arrays.append(self._combine(spec, partial_fn, joined.column(f"{col}#old"), joined.column(col)))
        return self.pa.table(arrays, names=[*node.by, *(c for c, _, _ in self.columns)])

    def _regroup(self, state: Any, partial: Any) -> tuple[Any, Any]:
        """Built-in aggregates: one group_by over the stored rows then the batch's partials (in that order).

        Each stored column is re-aggregated with its combining function (sums and counts
        add up, min/max, last = the batch's value if not null), and a marker column says
        which keys the batch had. Returns (every merged row, the rows of the batch's keys).
        Cheaper than a join (bench/tables.py), and ordered: use_threads=False keeps "last".
        """
        pa, pc = self.pa, self.pc
        node = self.node
        mark = "#batch"
        both = pa.concat_tables(
            [
                state.append_column(mark, pa.repeat(pa.scalar(0, pa.int8()), state.num_rows)),
                partial.cast(state.schema).append_column(mark, pa.repeat(pa.scalar(1, pa.int8()), partial.num_rows)),
            ]
        )
        specs = [(col, COMBINE[fn]) for col, _, fn in self.columns] + [(mark, "max")]
        out = grouped(pa, both, node.by, specs, [*(c for c, _, _ in self.columns), mark])
        return out.drop_columns([mark]), out.filter(pc.equal(out.column(mark), 1)).drop_columns([mark])

    def _combine(self, spec: AggSpec, partial_fn: str, old: Any, new: Any) -> Any:
        pc = self.pc
        fn = spec.fn
        if isinstance(fn, Combine):
            try:
                return fn.merge(old, new)
            except Exception as exc:
                where = f"merge of Combine {fn.name!r} (column {spec.out!r}) of {self.node.label}"
                raise user_function_error(where, exc, self._t, self.node.name) from exc
        if partial_fn in ("sum", "count", "count_all"):
            return pc.coalesce(pc.add(old, new), new, old)
        if partial_fn == "min":
            return pc.min_element_wise(old, new, skip_nulls=True)
        if partial_fn == "max":
            return pc.max_element_wise(old, new, skip_nulls=True)
        return pc.coalesce(new, old)  # last

    def _conform(self, state: Any, partial: Any) -> Any:
        """`state` with the columns of `partial` (a column added to aggs starts null), key types cast to the batch's."""
        pa = self.pa
        if state.schema.names == partial.schema.names and state.schema == partial.schema:
            return state
        cols, names = [], []
        for field in partial.schema:
            if field.name in state.column_names:
                col = state.column(field.name)
                if col.type != field.type:
                    try:
                        if not self._same_family(col.type, field.type):
                            msg = f"{col.type} and {field.type} are different kinds of values"
                            raise TypeError(msg)  # noqa: TRY301
                        col = col.cast(field.type)
                    except Exception as exc:
                        msg = (
                            f"{self.node.label}: the stored column {field.name!r} is {col.type} but this batch makes it "
                            f"{field.type}, and {col.type} does not convert: keep the input column's type (cast it in "
                            f"map_tables), or start this operator's state anew under another name"
                        )
                        raise ConfigError(msg) from exc
            else:
                col = pa.nulls(state.num_rows, field.type)
            cols.append(col)
            names.append(field.name)
        return pa.table(cols, names=names)

    def _same_family(self, a: Any, b: Any) -> bool:
        """True when values of type `a` may be stored as `b` (ints as wider ints, floats, strings as large strings)."""
        t = self.pa.types
        for family in (t.is_integer, t.is_floating, lambda x: t.is_string(x) or t.is_large_string(x), t.is_boolean, t.is_timestamp):
            if family(a) and family(b):
                return True
        return bool(t.is_integer(a) and t.is_floating(b))

    def _without(self, state: Any, changed: Any) -> Any:
        """The rows of `state` whose key is not in `changed`."""
        by = list(self.node.by)
        if len(by) == 1:
            mask = self.pc.is_in(state.column(by[0]), value_set=changed.column(by[0]).combine_chunks())
            return state.filter(self.pc.invert(mask))
        return state.join(changed.select(by), keys=by, join_type="left anti", use_threads=False).select(state.column_names)

    def _empty(self) -> Any:
        pa = self.pa
        return pa.table({n: pa.array([], pa.null()) for n in (*self.node.by, *(a.out for a in self.node.aggs))})

    def _output(self, table: Any) -> Any:
        """The user's view of state rows: key columns and one column per aggregate (means divided out)."""
        pa, pc = self.pa, self.pc
        node = self.node
        if table.num_columns and table.column_names == self._out_names:
            return table
        if not table.num_rows and not table.num_columns:
            return table
        arrays, names = [table.column(k) for k in node.by], list(node.by)
        for spec in node.aggs:
            if spec.fn == "mean":
                s, c = table.column(f"{spec.out}#sum"), table.column(f"{spec.out}#count")
                arrays.append(pc.divide(pc.cast(s, pa.float64()), pc.cast(c, pa.float64())))
            elif spec.out in table.column_names:
                arrays.append(table.column(spec.out))
            else:
                arrays.append(pa.nulls(table.num_rows))
            names.append(spec.out)
        return pa.table(arrays, names=names)

    # -- checkpoint form ----------------------------------------------------------------------

    def _changed_rows(self) -> Any:
        changes, self._changes = self._changes, []
        if not changes:
            return None
        if len(changes) == 1:
            return changes[0]
        # Several batches since the last delta: the latest row of each key (the state holds exactly those).
        keys = self.pa.concat_tables([c.select(list(self.node.by)) for c in changes])
        return self.state.join(keys.group_by(list(self.node.by), use_threads=False).aggregate([]), keys=list(self.node.by), join_type="left semi")

    def delta(self) -> dict[str, Any] | None:
        rows = self._changed_rows()
        if rows is None:
            return None
        return {"rows": _arrow.ipc_bytes(rows), "n": rows.num_rows}

    def forget_changes(self) -> None:
        self._changes = []

    def snapshot(self) -> dict[str, Any]:
        state = self.state if self.state is not None else self._empty()
        return {"rows": _arrow.ipc_bytes(state), "n": state.num_rows}

    def load(self, snapshot: dict[str, Any] | None, deltas: list[dict[str, Any]]) -> None:
        state = None
        if snapshot is not None:
            state = _arrow.ipc_table(snapshot["rows"])
            if not state.num_columns:
                state = None
        for d in deltas:
            rows = _arrow.ipc_table(d["rows"])
            if state is None:
                state = rows
                continue
            state = self._conform(state, rows)
            rows = rows.cast(state.schema) if rows.schema != state.schema else rows
            if len(self.node.by) == 1:
                state = self._replaced(state, rows)
                continue
            if not any(isinstance(spec.fn, Combine) for spec in self.node.aggs):
                state = self._regrouped(state, rows)  # as `_regroup` orders them: stored keys in place, new ones last
                continue
            rest = self._without(state, rows)  # as `_merge` with a Combine: the changed rows last
            state = self.pa.concat_tables([rest, rows])
        self.state = state.combine_chunks() if state is not None else None
        self._changes = []

    def _regrouped(self, state: Any, rows: Any) -> Any:
        """`state` with `rows` (a delta: whole rows, several key columns) upserted in `_regroup`'s order: one
        ordered group_by over [state, rows] gives each key's place (stored keys in place, new keys after, in
        order) and its newest row."""
        pa = self.pa
        mark = "#row"
        both = pa.concat_tables([state, rows])
        at = both.append_column(mark, pa.array(range(both.num_rows), pa.int64()))
        newest = grouped(pa, at, self.node.by, [(mark, "max")], [mark]).column(mark)
        return both.take(newest)

    def _replaced(self, state: Any, rows: Any) -> Any:
        """`state` with `rows` (a delta: whole rows, one key column) upserted: stored keys' values replaced in
        place (the key column is not copied, rows keep their places), new keys appended."""
        pa, pc = self.pa, self.pc
        key = self.node.by[0]
        where = self._index_in(state.column(key), rows.column(key).combine_chunks())
        found = pc.is_valid(where)
        r_rows = where.filter(found)  # the delta's row of every stored row it replaces (state order)
        if len(r_rows):
            cols = [state.column(key)]
            for c in state.column_names[1:]:
                cols.append(pc.replace_with_mask(state.column(c), found, rows.column(c).take(r_rows).combine_chunks()))
            state = pa.table(cols, schema=state.schema)
        if len(r_rows) < rows.num_rows:
            np = _arrow.require("numpy", _OP)
            fresh = np.ones(rows.num_rows, dtype=bool)
            fresh[r_rows.to_numpy()] = False
            state = pa.concat_tables([state, rows.filter(pa.array(fresh))])
        return state

    def key_count(self) -> int:
        return 0 if self.state is None else int(self.state.num_rows)

    def state_info(self) -> dict[str, Any]:
        """Columns and types of the stored table (for ``streamkeep checkpoint inspect``)."""
        if self.state is None:
            return {"columns": []}
        return {"columns": [f"{f.name}: {f.type}" for f in self.state.schema]}
