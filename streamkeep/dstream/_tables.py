"""Tables in the graph: `aggregate_state`'s node, its aggregation specs, and their compatibility rule.

A table stream is a DStream whose records are ``pyarrow.Table`` objects (one per
partition, usually): ``to_tables``/``map_tables``/``to_records`` are fused per-record
operators of `Batch`, so they need no node of their own. `aggregate_state` keeps a
running aggregate per key as one Arrow table (runtime: ``executors/_tables.py``).
pyarrow is imported only when a table operator is declared or runs.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from streamkeep.dstream._graph import StatefulNode, WindowNode
from streamkeep.errors import ConfigError

#: Built-in running aggregates: how a key's value combines with a batch's partial.
BUILTIN_AGGS = ("sum", "count", "min", "max", "mean", "last")
#: pyarrow hash aggregations a `Combine` may use for its per-batch partial.
PARTIALS = ("sum", "min", "max", "product", "any", "all", "first", "last", "count", "count_distinct", "mean")


@dataclass(frozen=True)
class Combine:
    """A user-supplied vectorised running aggregate for `aggregate_state`.

    Each batch, the rows of a key are first reduced with the pyarrow hash aggregation
    `partial` (e.g. ``"max"``, ``"product"``); then ``merge(old, new)`` combines, for all
    keys of the batch at once, the stored values (`old`, a ``pyarrow.Array``; null for a
    key seen for the first time) with the batch's partials (`new`, an array of the same
    length, aligned row by row). `merge` is called once per batch, never per key.

    `name` identifies the combine in the checkpoint: changing it (or `partial`) is a
    state-schema change, refused on restore like any other.

    Example:
        >>> import pyarrow.compute as pc
        >>> longest = Combine("max", lambda old, new: pc.max_element_wise(old, new, skip_nulls=True), name="longest")
    """

    partial: str
    merge: Callable[[Any, Any], Any]
    name: str

    def __post_init__(self) -> None:
        if self.partial not in PARTIALS:
            msg = f"Combine: partial must be one of {', '.join(PARTIALS)}, got {self.partial!r}"
            raise ConfigError(msg)
        if not callable(self.merge):
            msg = f"Combine: merge must be a function merge(old, new) -> array, got {self.merge!r}"
            raise ConfigError(msg)
        if not isinstance(self.name, str) or not self.name:
            msg = f"Combine: name must be a non-empty string, got {self.name!r}"
            raise ConfigError(msg)

    @property
    def label(self) -> str:
        """How the checkpoint's description names this aggregate."""
        return f"combine:{self.name}:{self.partial}"


@dataclass(frozen=True)
class AggSpec:
    """One output column of `aggregate_state`: `column` aggregated with `fn` (a built-in name or a Combine)."""

    out: str
    column: str
    fn: str | Combine

    @property
    def label(self) -> str:
        """The aggregate's name as stored in the checkpoint."""
        return self.fn if isinstance(self.fn, str) else self.fn.label


def parse_aggs(aggs: Any, by: tuple[str, ...], op: str) -> tuple[AggSpec, ...]:
    """Check and normalise ``{out: (column, fn)}`` (fn: a name of `BUILTIN_AGGS` or a `Combine`)."""
    if not isinstance(aggs, Mapping) or not aggs:
        msg = f'{op}: aggs must be a non-empty dict {{output column: (input column, aggregate)}}, e.g. {{"n": ("*", "count")}}'
        raise ConfigError(msg)
    out: list[AggSpec] = []
    for name, spec in aggs.items():
        if not isinstance(name, str) or not name or "#" in name:
            msg = f"{op}: output column names must be non-empty strings without '#', got {name!r}"
            raise ConfigError(msg)
        if name in by:
            msg = f"{op}: the output column {name!r} is also a key column (by={list(by)}); pick another name"
            raise ConfigError(msg)
        if not isinstance(spec, tuple) or len(spec) != 2 or not isinstance(spec[0], str):
            msg = f"{op}: aggs[{name!r}] must be (input column, aggregate), e.g. ('amount', 'sum'); got {spec!r}"
            raise ConfigError(msg)
        column, fn = spec
        if isinstance(fn, str):
            if fn not in BUILTIN_AGGS:
                msg = f"{op}: aggs[{name!r}]: unknown aggregate {fn!r}; use one of {', '.join(BUILTIN_AGGS)} or a streamkeep.tables.Combine"
                raise ConfigError(msg)
        elif not isinstance(fn, Combine):
            msg = f"{op}: aggs[{name!r}]: the aggregate must be a name ({', '.join(BUILTIN_AGGS)}) or a Combine, got {fn!r}"
            raise ConfigError(msg)
        if column == "*" and fn != "count":
            msg = f"{op}: aggs[{name!r}]: '*' (every row) goes only with 'count'"
            raise ConfigError(msg)
        out.append(AggSpec(name, column, fn))
    return tuple(out)


def parse_by(by: Any, op: str) -> tuple[str, ...]:
    """`by` (a column name or a list of them) as a tuple."""
    cols = (by,) if isinstance(by, str) else tuple(by) if isinstance(by, (list, tuple)) else ()
    if not cols or not all(isinstance(c, str) and c for c in cols) or len(set(cols)) != len(cols):
        msg = f"{op}: by must be a key column name or a list of distinct names, got {by!r}"
        raise ConfigError(msg)
    return cols


@dataclass(frozen=True, eq=False, kw_only=True)
class AggregateStateNode(StatefulNode):
    """`aggregate_state`: a running aggregate per key, kept as one Arrow table."""

    by: tuple[str, ...]
    aggs: tuple[AggSpec, ...]
    emit: str

    def describe(self) -> dict[str, Any]:
        """Kind, codec, key columns and aggregates: the state's schema as far as the code defines it."""
        return {**super().describe(), "by": list(self.by), "aggs": [[a.out, a.column, a.label] for a in self.aggs]}


def state_change(old: dict[str, Any], new: dict[str, Any]) -> str | None:
    """Why stored `aggregate_state` state cannot serve the new description, or None.

    Compatible: the same key columns, and every stored aggregate column kept with the
    same input column and aggregate; new aggregate columns may be added (they start
    null for the keys already stored, and the next batch of a key fills them).
    """
    why = []
    o_by, n_by = list(old.get("by") or []), list(new.get("by") or [])
    if o_by != n_by:
        why.append(f"key columns {o_by} -> {n_by}")
    o_aggs = {a[0]: (a[1], a[2]) for a in old.get("aggs") or []}
    n_aggs = {a[0]: (a[1], a[2]) for a in new.get("aggs") or []}
    for out, (col, fn) in o_aggs.items():
        if out not in n_aggs:
            why.append(f"aggregate column {out!r} ({fn} of {col!r}) removed (its stored values would be dropped)")
        elif n_aggs[out] != (col, fn):
            n_col, n_fn = n_aggs[out]
            why.append(f"aggregate column {out!r}: {fn} of {col!r} -> {n_fn} of {n_col!r}")
    return "; ".join(why) or None


def node_from_description(common: dict[str, Any], desc: dict[str, Any]) -> AggregateStateNode:
    """A node able to load stored `aggregate_state` state from its description alone (no user functions)."""
    specs = []
    for out, col, label in desc.get("aggs") or []:
        fn: str | Combine = label
        if str(label).startswith("combine:"):
            name, partial = str(label)[len("combine:") :].rsplit(":", 1)
            fn = Combine(partial, _no_merge, name)
        specs.append(AggSpec(str(out), str(col), fn))
    return AggregateStateNode(**common, by=tuple(desc.get("by") or ()), aggs=tuple(specs), emit="all")


def _no_merge(old: Any, new: Any) -> Any:  # stands in for a user merge: never called when only loading state
    return new


#: Aggregates a window keeps incrementally (added for new batches, subtracted for expired ones).
INVERTIBLE = frozenset({"sum", "count", "mean"})


@dataclass(frozen=True, eq=False, kw_only=True)
class AggregateWindowNode(WindowNode):
    """`aggregate_window`: aggregates per key over the tables of the last `length_ms`, every slide."""

    by: tuple[str, ...]
    aggs: tuple[AggSpec, ...]

    @property
    def inverse(self) -> bool:
        """True when every aggregate is invertible: a running table is kept (new slices added, expired ones subtracted)."""
        return all(isinstance(a.fn, str) and a.fn in INVERTIBLE for a in self.aggs)

    def describe(self) -> dict[str, Any]:
        """Window shape, key columns and aggregates (the stored slices hold partials of exactly these)."""
        return {**super().describe(), "by": list(self.by), "aggs": [[a.out, a.column, a.label] for a in self.aggs], "inverse": self.inverse}


def window_state_change(old: dict[str, Any], new: dict[str, Any]) -> str | None:
    """Why stored `aggregate_window` state cannot serve the new description (its slices hold partials of the old aggregates)."""
    o_by, n_by = list(old.get("by") or []), list(new.get("by") or [])
    o_aggs, n_aggs = [list(a) for a in old.get("aggs") or []], [list(a) for a in new.get("aggs") or []]
    why = []
    if o_by != n_by:
        why.append(f"key columns {o_by} -> {n_by}")
    if o_aggs != n_aggs:
        why.append(f"aggregates {o_aggs} -> {n_aggs} (the stored window slices hold partials of the old ones)")
    return "; ".join(why) or None


def window_from_description(common: dict[str, Any], desc: dict[str, Any]) -> AggregateWindowNode:
    """A node able to load stored `aggregate_window` state from its description alone."""
    agg = node_from_description(common, desc)
    return AggregateWindowNode(**common, length_ms=int(desc["length_ms"]), by=agg.by, aggs=agg.aggs)
