"""Runtime of `aggregate_window`: per-key aggregates over the tables of a window, vectorised.

Each batch's tables are reduced per key into one partial table (a *slice*: the key
columns, the stored aggregate columns, and ``#rows``, the key's row count). With only
invertible aggregates (sum, count, mean) a running table is kept: every slide adds the
new slices' partials and subtracts the expired ones' with one ``group_by`` sum over
[running, new slices, negated expired slices], and drops keys whose ``#rows`` reached 0;
the work follows the slide, not the window. Otherwise (min, max, last) each window is
re-aggregated from its slices with one ``group_by``.

Checkpoint form: the window's slices (``add``/``drop``, as `window`'s; a slice is an
Arrow table, msgpack extension 10) and, with the inverse, ``rows``: the running table as
Arrow IPC when it changed.
"""

from __future__ import annotations

from typing import Any

from streamkeep import _arrow
from streamkeep.batch import Batch
from streamkeep.dstream._tables import AggregateWindowNode
from streamkeep.errors import ConfigError, StreamkeepError
from streamkeep.executors._runtime import _SKIP, WindowRuntime
from streamkeep.executors._tables import COMBINE, _stored, check_columns, grouped

_ROWS = "#rows"


class AggregateWindowRuntime(WindowRuntime):
    """`aggregate_window`'s state: the window's per-batch partial tables, and the running table (inverse)."""

    node: AggregateWindowNode

    def __init__(self, node: AggregateWindowNode, zero_ms: int) -> None:
        super().__init__(node, zero_ms)
        self.pa = _arrow.pa(node.op)
        self.pc = _arrow.pc(node.op)
        self.columns = [c for spec in node.aggs for c in _stored(spec)] + [(_ROWS, "*", "count_all")]
        self.running: Any = None
        self._dirty = False

    def _holds_records(self, s: Any) -> bool:
        return s is not None

    def _empty_batch(self, t: int, s: Any) -> None:
        """A batch without rows adds nothing to any window: not kept."""

    def _restored(self, s: Any) -> Any:
        return _SKIP if s is None else s  # an empty slice (stored by earlier versions) holds nothing

    def _slice(self, parent: Batch[Any]) -> Any:
        node, t = self.node, parent.batch_time_ms
        table = parent.to_arrow()
        if not table.num_rows:
            return None
        check_columns(node, t, table, [col for _, col, _ in self.columns])
        specs = [([], "count_all") if fn == "count_all" else (col, fn) for _, col, fn in self.columns]
        try:
            return grouped(self.pa, table, node.by, specs, [c for c, _, _ in self.columns])
        except Exception as exc:
            msg = f"{node.label}: aggregating the batch of {t} ms failed: {type(exc).__name__}: {exc}"
            raise ConfigError(msg) from exc

    def step(self, t: int, parent: Batch[Any] | None) -> Batch[Any] | None:
        valid = self._ingest(t, parent)
        out = None
        if valid:
            try:
                table = self._running(t) if self.node.inverse else self._recompute(t)
            except StreamkeepError:
                raise
            except Exception as exc:
                msg = f"{self.node.label}: aggregating the window of {t} ms failed: {type(exc).__name__}: {exc}"
                raise ConfigError(msg) from exc
            out = Batch([[self._output(table)]], t)
        self._prune(t)
        return out

    def _combined(self, tables: list[Any], how: dict[str, str]) -> Any:
        cols = [c for c, _, _ in self.columns]
        specs = [(c, how[fn]) for c, _, fn in self.columns]
        return grouped(self.pa, self.pa.concat_tables(tables), self.node.by, specs, cols)

    def _recompute(self, t: int) -> Any:
        tables = [self.slices[ts] for ts in self._in_window(t) if self.slices[ts] is not None]
        return self._combined(tables, COMBINE) if tables else None

    def _negated(self, table: Any) -> Any:
        pc = self.pc
        by = self.node.by
        return self.pa.table([table.column(c) if c in by else pc.negate(table.column(c)) for c in table.column_names], names=table.column_names)

    def _running(self, t: int) -> Any:
        node = self.node
        slide, length = node.slide_ms, node.length_ms
        old = [s for ts, s in sorted(self.slices.items()) if t - slide - length < ts <= t - max(length, slide) and s is not None]
        new = [s for ts, s in sorted(self.slices.items()) if t - min(length, slide) < ts <= t and s is not None]
        if old or new:
            parts = ([self.running] if self.running is not None else []) + new + [self._negated(s) for s in old]
            merged = self._combined(parts, {fn: "sum" for _, _, fn in self.columns})
            self.running = merged.filter(self.pc.greater(merged.column(_ROWS), 0))
            self._dirty = True
        return self.running

    def _output(self, table: Any) -> Any:
        pa, pc = self.pa, self.pc
        node = self.node
        names = [*node.by, *(a.out for a in node.aggs)]
        if table is None:
            return pa.table({n: pa.array([], pa.null()) for n in names})
        arrays = [table.column(k) for k in node.by]
        for spec in node.aggs:
            if spec.fn == "mean":
                s, c = table.column(f"{spec.out}#sum"), table.column(f"{spec.out}#count")
                arrays.append(pc.divide(pc.cast(s, pa.float64()), pc.cast(c, pa.float64())))
            else:
                arrays.append(table.column(spec.out))
        return pa.table(arrays, names=names)

    # -- checkpoint form ----------------------------------------------------------------------

    def delta(self) -> dict[str, Any] | None:
        d = super().delta()
        if not self._dirty:
            return d
        self._dirty = False
        d = d or {"add": [], "drop": []}
        d["rows"] = None if self.running is None else _arrow.ipc_bytes(self.running)
        return d

    def forget_changes(self) -> None:
        super().forget_changes()
        self._dirty = False

    def snapshot(self) -> dict[str, Any]:
        return {**super().snapshot(), "rows": None if self.running is None else _arrow.ipc_bytes(self.running)}

    def load(self, snapshot: dict[str, Any] | None, deltas: list[dict[str, Any]]) -> None:
        super().load(snapshot, deltas)
        self.running = None
        for d in ([snapshot] if snapshot else []) + deltas:
            if "rows" in d:
                self.running = None if d["rows"] is None else _arrow.ipc_table(d["rows"])
        self._dirty = False

    def key_count(self) -> int:
        rows = sum(int(s.num_rows) for s in self.slices.values() if s is not None)
        return rows + (0 if self.running is None else int(self.running.num_rows))

    def drained(self, last_t: int) -> bool:
        return not any(s is not None and s.num_rows for s in self._future_slices(last_t))
