"""One place per stateful operator kind: the registry of node class -> runtime (and description).

Everything that needs to know the stateful operator kinds reads this registry: the
executors build runtimes with `make_runtime`, the checkpoint compatibility check
compares the description keys in `shape_keys()`, and ``streamkeep checkpoint``
rebuilds a node from a stored description (`node_from_description`) to load
state without the job's code.

Adding a stateful operator takes: its node class (``dstream/_graph.py``, with
``describe()``), its DStream method, its runtime (a `StatefulRuntime`, e.g. in
``executors/_runtime.py``), and one `register(OperatorKind(...))` call (below, or
in the runtime's own module imported from here).
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from streamkeep.dstream._graph import EVENT_TIME_SHAPE, MapWithStateNode, ReduceWindowNode, StatefulNode, UpdateStateNode, WindowNode
from streamkeep.errors import CheckpointError
from streamkeep.executors._runtime import (
    MapWithStateRuntime,
    ReduceWindowRuntime,
    StatefulRuntime,
    UpdateStateRuntime,
    WindowRuntime,
)


@dataclass(frozen=True)
class OperatorKind:
    """A stateful operator kind, as registered.

    Attributes:
        kind: the ``kind`` its node's ``describe()`` stores (the node's ``op``).
        node: its node class (subclasses are matched only if not registered themselves), or the class's
            ``"module:Class"`` path: a kind whose modules load only when a job uses it (see `later`).
        runtime: ``runtime(node, zero_ms)`` builds the runtime holding its state.
        shape: description keys (besides ``kind``) whose change makes stored state unusable.
        from_description: ``from_description(common, desc)`` builds a node able to load
            stored state from the stored description `desc` alone (no user functions);
            `common` holds the keyword arguments every `StatefulNode` takes.
        state_change: ``state_change(stored_desc, current_desc)`` says why stored state
            cannot serve the current code (None: it can), for rules finer than equal
            `shape` keys (e.g. a state schema that may gain a column); None: shape only.
        keyed: its state is (key, value) pairs that evolve key by key, independently: an
            executor may split it into key partitions (`RayExecutor` does); its deltas and
            snapshots then hold ``set``/``del`` (and window ``add``) entries keyed by record key.
    """

    kind: str
    node: type[StatefulNode] | str
    runtime: Callable[[Any, int], StatefulRuntime]
    shape: tuple[str, ...]
    from_description: Callable[[dict[str, Any], dict[str, Any]], StatefulNode]
    state_change: Callable[[dict[str, Any], dict[str, Any]], str | None] | None = None
    keyed: bool = False


#: Registered kinds by `OperatorKind.kind`, in registration order.
KINDS: dict[str, OperatorKind] = {}


def register(kind: OperatorKind) -> OperatorKind:
    """Register a stateful operator kind (once; a second registration of a kind replaces it)."""
    KINDS[kind.kind] = kind
    return kind


def kind_of(node: StatefulNode) -> OperatorKind:
    """The registered kind of `node` (by its class, nearest registered base class first)."""
    for cls in type(node).__mro__:
        path = f"{cls.__module__}:{cls.__qualname__}"
        for k in KINDS.values():
            if k.node is cls or k.node == path:
                return k
    msg = f"no runtime for stateful operator {node.label}: its kind is not registered (streamkeep.executors.kinds.register)"
    raise CheckpointError(msg)


def make_runtime(node: StatefulNode, zero_ms: int) -> StatefulRuntime:
    """The runtime for a stateful node."""
    return kind_of(node).runtime(node, zero_ms)


def shape_keys() -> tuple[str, ...]:
    """``kind`` and every registered kind's shape keys, in registration order (no repeats)."""
    keys = {"kind": None}
    for k in KINDS.values():
        keys.update(dict.fromkeys(k.shape))
    return tuple(keys)


def state_change(stored: dict[str, Any], current: dict[str, Any]) -> str | None:
    """Why an operator's stored state cannot serve its current description beyond its shape keys (None: it can)."""
    k = KINDS.get(str(current.get("kind")))
    if k is None or k.state_change is None or stored.get("kind") != current.get("kind"):
        return None
    return k.state_change(stored, current)


def later(path: str) -> Callable[..., Any]:
    """A stand-in for the function or class ``"module:name"`` that imports it at its first call.

    The table and event-time kinds register with these, so that a job using neither does not
    import their modules (nor create their node classes) at start-up.
    """

    def call(*args: Any) -> Any:
        module, _, name = path.partition(":")
        return getattr(importlib.import_module(module), name)(*args)

    return call


def _ignore(*_: Any) -> None:  # stands in for user functions: never called when only loading state
    return None


def node_from_description(name: str, desc: dict[str, Any], interval_ms: int) -> StatefulNode | None:
    """A node able to load operator `name`'s stored state, from its stored description; None for an unknown kind."""
    k = KINDS.get(str(desc.get("kind")))
    if k is None:
        return None
    common: dict[str, Any] = {
        "id": -1,
        "op": k.kind,
        "parents": (),
        "slide_ms": int(desc.get("slide_ms", interval_ms)),
        "name": name,
        "codec": str(desc.get("codec", "msgpack")),
    }
    return k.from_description(common, desc)


# -- the built-in kinds (registration order is the order `shape_keys` lists their keys) -----------

_WINDOW_SHAPE = ("length_ms", "slide_ms", "parent_slide_ms")

register(OperatorKind("window", WindowNode, WindowRuntime, _WINDOW_SHAPE, lambda c, d: WindowNode(**c, length_ms=int(d["length_ms"]))))
register(
    OperatorKind(
        "reduce_by_key_and_window",
        ReduceWindowNode,
        ReduceWindowRuntime,
        (*_WINDOW_SHAPE, "inverse"),
        lambda c, d: ReduceWindowNode(
            **c, length_ms=int(d["length_ms"]), f=_ignore, inv_f=_ignore if d.get("inverse") else None, filter_f=None, num_partitions=None
        ),
        keyed=True,
    )
)
register(
    OperatorKind(
        "update_state_by_key",
        UpdateStateNode,
        lambda n, _zero: UpdateStateRuntime(n),
        (),
        lambda c, d: UpdateStateNode(**c, update=_ignore, initial=(), num_partitions=None),
        keyed=True,
    )
)
register(
    OperatorKind(
        "map_with_state",
        MapWithStateNode,
        lambda n, _zero: MapWithStateRuntime(n),
        ("timeout",),
        lambda c, d: MapWithStateNode(**c, f=_ignore, timeout_ms=1 if d.get("timeout") else None, initial=()),
        keyed=True,
    )
)
# The kinds below load their modules when a job first uses them (`later`).
# Event-time windows (streamkeep/dstream/_event_time.py): a keyed reduction or a count per window.
# Not `keyed`: one watermark moves with the largest event time over all keys.
_EVENT_TIME = "streamkeep.dstream._event_time"
_event_runtime = later("streamkeep.executors._event_time:EventWindowRuntime")
for _kind in ("event_window_reduce", "event_window_count"):
    register(
        OperatorKind(
            _kind, f"{_EVENT_TIME}:EventWindowNode", lambda n, _zero: _event_runtime(n), EVENT_TIME_SHAPE, later(f"{_EVENT_TIME}:node_from_description")
        )
    )
# Vectorised keyed state over Arrow tables (streamkeep/dstream/_tables.py, executors/_tables.py): its
# state schema (key columns, aggregates) may gain a column; anything else is a state-schema change.
_TABLES = "streamkeep.dstream._tables"
_aggregate_runtime = later("streamkeep.executors._tables:AggregateStateRuntime")
register(
    OperatorKind(
        "aggregate_state",
        f"{_TABLES}:AggregateStateNode",
        lambda n, _zero: _aggregate_runtime(n),
        (),
        later(f"{_TABLES}:node_from_description"),
        state_change=later(f"{_TABLES}:state_change"),
    )
)
# Windowed aggregation over tables (the inverse done vectorised when every aggregate is sum, count or mean).
register(
    OperatorKind(
        "aggregate_window",
        f"{_TABLES}:AggregateWindowNode",
        later("streamkeep.executors._table_window:AggregateWindowRuntime"),
        _WINDOW_SHAPE,
        later(f"{_TABLES}:window_from_description"),
        state_change=later(f"{_TABLES}:window_state_change"),
    )
)
