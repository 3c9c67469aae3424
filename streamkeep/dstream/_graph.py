"""The operator graph as frozen data: nodes, and the builder that names and checks them.

Building a graph executes nothing. Nodes are frozen dataclasses holding the
user's functions and parameters; the executor interprets them. The graph's
*description* (stateful operators' names, kinds, window shapes, codecs and
feeds -- the sources and stateful operators they read from; source names and
kinds) is plain data, stored in the checkpoint and compared
with the current code on restore. Sees only sources.base, sinks.base and
state.base besides layer 1.
"""

from __future__ import annotations

import os
import re
import sys
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from streamkeep.batch import Batch, DeadLetters
from streamkeep.errors import ConfigError, DerivedNameWarning
from streamkeep.sinks.base import Sink
from streamkeep.sources.base import Source

KNOWN_CODECS = ("msgpack", "pickle")
#: Description keys of an event-time window (dstream/_event_time.py) whose change makes its stored state unusable;
#: here so that the registry of kinds (executors/kinds.py) need not import that module before a job uses it.
EVENT_TIME_SHAPE = ("window", "size_ms", "window_slide_ms", "gap_ms", "max_delay_ms")
_PACKAGE_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__))) + os.sep


def _user_stacklevel() -> int:
    """The `stacklevel` that makes a warning point at the first caller outside streamkeep."""
    frame = sys._getframe(2)  # the caller of the function that wants to warn
    level = 2
    while frame is not None and frame.f_code.co_filename.startswith(_PACKAGE_DIR):
        frame = frame.f_back  # type: ignore[assignment]
        level += 1
    return level


@dataclass(frozen=True, eq=False, kw_only=True)
class Node:
    """One operator. `slide_ms`: the node produces a batch every `slide_ms`."""

    id: int
    op: str
    parents: tuple[Node, ...]
    slide_ms: int

    @property
    def label(self) -> str:
        """How errors name this operator."""
        return self.op

    def __hash__(self) -> int:
        return self.id


@dataclass(frozen=True, eq=False, kw_only=True)
class SourceNode(Node):
    """An input."""

    source: Source

    @property
    def label(self) -> str:
        """The source's name."""
        return f"source {self.source.name!r}"


@dataclass(frozen=True, eq=False, kw_only=True)
class NarrowNode(Node):
    """A per-record operator: `apply(batch)` returns the lazy, fused result."""

    apply: Callable[[Batch[Any]], Batch[Any]]


@dataclass(frozen=True, eq=False, kw_only=True)
class TransformNode(Node):
    """A per-batch operator over one or more parents: ``fn(time_ms, batches) -> Batch``."""

    fn: Callable[[int, list[Batch[Any]]], Batch[Any]]


@dataclass(frozen=True, eq=False, kw_only=True)
class StatefulNode(Node):
    """An operator whose state lives in the checkpoint under `name`."""

    name: str
    codec: str

    @property
    def label(self) -> str:
        """The stateful operator's name."""
        return f"{self.op} {self.name!r}"

    def describe(self) -> dict[str, Any]:
        """What must match for this operator's state to restore."""
        return {"kind": self.op, "codec": self.codec}


@dataclass(frozen=True, eq=False, kw_only=True)
class WindowNode(StatefulNode):
    """`window`: the union of the parent's batches in the last `length_ms`."""

    length_ms: int

    def describe(self) -> dict[str, Any]:
        """Kind, codec and window shape."""
        return {**super().describe(), "length_ms": self.length_ms, "slide_ms": self.slide_ms, "parent_slide_ms": self.parents[0].slide_ms}


@dataclass(frozen=True, eq=False, kw_only=True)
class ReduceWindowNode(WindowNode):
    """`reduce_by_key_and_window`, optionally with an inverse function."""

    f: Callable[[Any, Any], Any]
    inv_f: Callable[[Any, Any], Any] | None
    filter_f: Callable[[Any], Any] | None
    num_partitions: int | None

    def describe(self) -> dict[str, Any]:
        """Kind, codec, window shape, and whether the inverse path keeps a running value."""
        return {**super().describe(), "inverse": self.inv_f is not None}


@dataclass(frozen=True, eq=False, kw_only=True)
class UpdateStateNode(StatefulNode):
    """`update_state_by_key`."""

    update: Callable[[list[Any], Any], Any]
    initial: Any
    num_partitions: int | None


@dataclass(frozen=True, eq=False, kw_only=True)
class MapWithStateNode(StatefulNode):
    """`map_with_state`."""

    f: Callable[[Any, Any, Any], Any]
    timeout_ms: int | None
    initial: Any
    dead_letters: DeadLetters | None = None

    def describe(self) -> dict[str, Any]:
        """Kind, codec and whether keys carry timeout timestamps."""
        return {**super().describe(), "timeout": self.timeout_ms is not None}


@dataclass(frozen=True, eq=False, kw_only=True)
class SnapshotsNode(Node):
    """`state_snapshots()` of a map_with_state node (its parent)."""


@dataclass(frozen=True, eq=False, kw_only=True)
class OutputNode(Node):
    """An output: ``fn(time_ms, batch)`` or a sink."""

    fn: Callable[[int, Batch[Any]], None] | None
    sink: Sink | None


@dataclass(frozen=True, eq=False, kw_only=True)
class DeadLetterNode(OutputNode):
    """The dead-letter sink of per-record operators with ``on_error=sink``: written after the other outputs."""

    letters: DeadLetters


def _is_sink(value: Any) -> bool:
    return all(hasattr(value, attr) for attr in ("name", "open", "write", "close"))


def check_on_error(policy: Any, what: str) -> None:
    """ConfigError unless `policy` is "fail" or a dead-letter sink."""
    if isinstance(policy, str) and policy == "fail":
        return
    if isinstance(policy, str) or not _is_sink(policy):
        msg = (
            f"{what}: on_error must be 'fail' (the default: the batch fails and the job stops) or a sink that "
            f"receives the failing records (see streamkeep.sinks), got {policy!r}"
        )
        raise ConfigError(msg)


@dataclass
class Graph:
    """The nodes of one job, in creation order (a topological order)."""

    batch_interval_ms: int
    default_codec: str = "msgpack"
    nodes: list[Node] = field(default_factory=list)
    names: dict[str, Node] = field(default_factory=dict)
    source_names: set[str] = field(default_factory=set)
    sinks: dict[str, Sink] = field(default_factory=dict)
    default_on_error: Any = "fail"
    fixed: bool = False
    _derived: dict[str, int] = field(default_factory=dict)
    #: Names the user gave in the derived shape of their own kind (``KIND#N``): the code-change check must tell them
    #: from derived ones (a graph mixing both in one kind numbers its unnamed ones ambiguously).
    pinned: set[str] = field(default_factory=set)
    #: Names derived for unnamed stateful operators and sources: a user name colliding with one is told so.
    derived_names: set[str] = field(default_factory=set)

    def check_open(self, what: str) -> None:
        """ConfigError when the graph is fixed (the context started): nothing added now would run."""
        if self.fixed:
            msg = (
                f"cannot add {what}: the operator graph is fixed once the context has started (start(), run() or "
                f"get_or_create()), and an operator added now would never run. Build every source, operator and "
                f"output before starting (in get_or_create's setup function when resuming)."
            )
            raise ConfigError(msg)

    def add(self, cls: type[Node], **kw: Any) -> Any:
        """Create and register a node of type `cls`."""
        self.check_open(repr(kw.get("op", cls.__name__)))
        node = cls(id=len(self.nodes), **kw)
        self.nodes.append(node)
        if isinstance(node, StatefulNode):
            self.names[node.name] = node
        return node

    def stateful_name(self, op: str, name: str | None) -> str:
        """Validate a user name or derive one (with a DerivedNameWarning)."""
        self.check_open(repr(op))
        if name is not None:
            if not isinstance(name, str) or not name:
                msg = f"{op}: name must be a non-empty string, got {name!r}"
                raise ConfigError(msg)
            if name in self.names or name in self.source_names:
                msg = f"{op}: the name {name!r} is already used by another stateful operator or source; names must be unique"
                raise ConfigError(msg + self._taken_by_derived(name))
            if re.fullmatch(re.escape(op) + "#[0-9]+", name):
                self.pinned.add(name)
            return name
        n = self._derived.get(op, 0) + 1
        while f"{op}#{n}" in self.names or f"{op}#{n}" in self.source_names:  # a user took that name
            n += 1
        self._derived[op] = n
        derived = f"{op}#{n}"
        self.derived_names.add(derived)
        warnings.warn(
            f"{op} has no name=; its state is keyed by the derived name {derived!r}, which changes if you add or "
            f"reorder {op} operators. Pass name=... to keep checkpoints restorable across code changes.",
            DerivedNameWarning,
            stacklevel=_user_stacklevel(),
        )
        return derived

    def _taken_by_derived(self, name: str) -> str:
        """The end of a name clash's message: an unnamed operator or source created earlier was given `name`."""
        if name not in self.derived_names:
            return ""
        kind = name.rsplit("#", 1)[0]
        return (
            f" (an unnamed {kind} created before this one was given that derived name: once one {kind} is named "
            f"{kind}#N, name every {kind}, e.g. each after the stored derived name of its inputs that "
            f"`streamkeep checkpoint diff` lists)"
        )

    def source_name(self, kind: str, name: str | None) -> str:
        """Validate a source name or derive one."""
        self.check_open(f"source {kind!r}")
        if name is None:
            n = self._derived.get("source:" + kind, 0) + 1
            while f"{kind}#{n}" in self.source_names or f"{kind}#{n}" in self.names:  # a user took that name
                n += 1
            self._derived["source:" + kind] = n
            name = f"{kind}#{n}"
            self.derived_names.add(name)
            warnings.warn(
                f"source {kind} has no name=; its position is keyed by the derived name {name!r}, which changes if you "
                f"add or reorder {kind} sources. Pass name=... to keep checkpoints restorable across code changes.",
                DerivedNameWarning,
                stacklevel=_user_stacklevel(),
            )
        elif not isinstance(name, str) or not name:
            msg = f"{kind}: name must be a non-empty string, got {name!r}"
            raise ConfigError(msg)
        elif name in self.source_names or name in self.names:
            msg = f"{kind}: the name {name!r} is already used; source names must be unique"
            raise ConfigError(msg + self._taken_by_derived(name))
        elif re.fullmatch(re.escape(kind) + "#[0-9]+", name):
            self.pinned.add(name)
        self.source_names.add(name)
        return name

    def register_sink(self, sink: Sink, what: str) -> None:
        """Reserve `sink`'s name: sink names are unique within a job, and a sink object is used once.

        Sinks with a batch marker (RedisSink, KafkaSink) key it by name: two sinks sharing a
        name would share one marker, and the second would skip every batch as already applied.
        """
        self.check_open(what)
        name = sink.name
        if not isinstance(name, str) or not name:
            msg = f"{what}: a sink's name must be a non-empty string, got {name!r}"
            raise ConfigError(msg)
        for other in self.sinks.values():
            if other is sink:
                msg = (
                    f"{what}: the sink {name!r} is already an output of this job; a sink object is written once per "
                    f"batch, so use one write_to per sink (union the streams first, or create a second sink with "
                    f"another name=)"
                )
                raise ConfigError(msg)
        if name in self.sinks:
            msg = (
                f"{what}: the job already has a sink named {name!r}; sink names must be unique (sinks with a batch "
                f"marker, such as RedisSink and KafkaSink, keep it under their name, so a second sink of the same "
                f"name would skip every batch). Pass another name= to one of them."
            )
            raise ConfigError(msg)
        self.sinks[name] = sink

    def dead_letters(self, on_error: Any, op: str) -> DeadLetters | None:
        """The dead-letter buffer for an operator's `on_error` (None: the context's default; "fail": none)."""
        policy = self.default_on_error if on_error is None else on_error
        check_on_error(policy, op)
        if isinstance(policy, str):
            return None
        for n in self.nodes:
            if isinstance(n, DeadLetterNode) and n.sink is policy:
                return n.letters
        self.register_sink(policy, f"{op}: on_error")
        node = self.add(
            DeadLetterNode,
            op=f"dead letters {policy.name!r}",
            parents=(),
            slide_ms=self.batch_interval_ms,
            fn=None,
            sink=policy,
            letters=DeadLetters(),
        )
        letters: DeadLetters = node.letters
        return letters

    def check_codec(self, op: str, codec: str | None) -> str:
        """The codec an operator uses, validated."""
        c = self.default_codec if codec is None else codec
        if c not in KNOWN_CODECS:
            msg = f"{op}: unknown codec {c!r}; use one of {', '.join(KNOWN_CODECS)}"
            raise ConfigError(msg)
        return c

    def dead_letter_nodes(self) -> list[DeadLetterNode]:
        """Dead-letter outputs in registration order."""
        return [n for n in self.nodes if isinstance(n, DeadLetterNode)]

    def outputs(self) -> list[OutputNode]:
        """Output nodes in registration order (dead-letter sinks are not outputs of their own)."""
        return [n for n in self.nodes if isinstance(n, OutputNode) and not isinstance(n, DeadLetterNode)]

    def needed(self) -> list[Node]:
        """Nodes reachable backwards from an output (or a dead-letter sink), in topological order."""
        keep: set[int] = set()
        stack: list[Node] = [*self.outputs(), *self.dead_letter_nodes()]
        while stack:
            n = stack.pop()
            if n.id in keep:
                continue
            keep.add(n.id)
            stack.extend(n.parents)
        return [n for n in self.nodes if n.id in keep]

    def describe(self) -> dict[str, Any]:
        """The graph's description, as stored in checkpoints."""
        needed = self.needed()
        return {
            "batch_interval_ms": self.batch_interval_ms,
            "operators": {n.name: {**n.describe(), "feeds": feeds(n)} for n in needed if isinstance(n, StatefulNode)},
            "sources": {n.source.name: n.source.describe() for n in needed if isinstance(n, SourceNode)},
        }


def feeds(node: Node) -> list[str]:
    """The names of the sources and stateful operators `node` reads from, sorted.

    Its parents walked back through stateless operators to the nearest source or stateful
    operator on each path. Stored per stateful operator in the graph description: a derived
    name (``KIND#N``) whose feeds changed points at another operator than the one whose state
    it holds (two unnamed operators of a kind created in the other order swap their names).
    """
    out: set[str] = set()
    seen: set[int] = set()
    stack = list(node.parents)
    while stack:
        n = stack.pop()
        if n.id in seen:
            continue
        seen.add(n.id)
        if isinstance(n, SourceNode):
            out.add(n.source.name)
        elif isinstance(n, StatefulNode):
            out.add(n.name)
        else:
            stack.extend(n.parents)
    return sorted(out)
