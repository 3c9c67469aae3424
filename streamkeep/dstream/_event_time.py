"""Event time: `with_event_time`, the watermark, and keyed event-time windows.

``stream.with_event_time(ts, max_delay=...)`` returns an `EventTimeDStream`;
its ``tumbling_window(size)``, ``sliding_window(size, slide)`` and
``session_window(gap)`` return an `EventWindows` spec whose aggregations
(``reduce_by_key``, ``count_by_key``, ``count``) add one stateful node, an
`EventWindowNode`, run by ``executors/_event_time.py``. The node's output is
an `EventWindowDStream` of `WindowResult` records, each window emitted once
when the watermark passes its end (plus ``allowed_lateness``);
``late_records()`` on it is the side stream of records that came too late.
"""

from __future__ import annotations

import operator
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Any, Generic, NamedTuple, TypeVar

from streamkeep._util import Duration, check_arity, check_partitions, duration_ms
from streamkeep.batch import Batch
from streamkeep.dstream._dstream import DStream
from streamkeep.dstream._graph import Graph, Node, StatefulNode, TransformNode
from streamkeep.errors import ConfigError

T = TypeVar("T")
K = TypeVar("K")
V = TypeVar("V")

#: Description fields whose change makes an event-time window's stored state meaningless (see scheduler/_compat.py).
EVENT_TIME_SHAPE = ("window", "size_ms", "window_slide_ms", "gap_ms", "max_delay_ms")


class WindowResult(NamedTuple):
    """One emitted event-time window: its key, bounds ``[start, end)`` (aware UTC datetimes) and value."""

    key: Any
    start: datetime
    end: datetime
    value: Any


class LateBuffer:
    """The late records of the last batch an event-time window ran, for ``late_records()``.

    The runtime fills it each batch (replacing what it held); the side stream takes it
    for the same batch time. `routed` says whether a side stream reads it (else late
    records are counted and logged, then dropped).
    """

    __slots__ = ("records", "routed", "t")

    def __init__(self) -> None:
        self.t: int | None = None
        self.records: list[Any] = []
        self.routed = False

    def put(self, t: int, records: list[Any]) -> None:
        """The late records of batch `t`."""
        self.t = t
        self.records = records

    def take(self, t: int) -> list[Any]:
        """The late records of batch `t` (empty when the runtime has none for `t`); every reader gets them."""
        return list(self.records) if self.t == t else []


@dataclass(frozen=True, eq=False, kw_only=True)
class EventWindowNode(StatefulNode):
    """A keyed event-time window aggregation (tumbling, sliding or session)."""

    ts: Callable[[Any], Any]
    max_delay_ms: int
    idle_timeout_ms: int | None
    window: str  # "tumbling" | "sliding" | "session"
    size_ms: int  # tumbling/sliding length; the gap for sessions
    window_slide_ms: int  # == size_ms for tumbling, the gap for sessions
    lateness_ms: int
    f: Callable[[Any, Any], Any]
    counting: bool  # the value of every record is 1 (count_by_key, count)
    keyed: bool  # records are (key, value) pairs; else the key is None
    num_partitions: int | None
    late: LateBuffer = field(default_factory=LateBuffer)

    def describe(self) -> dict[str, Any]:
        """Kind, codec, window shape and watermark delay (what must match to restore)."""
        return {
            **super().describe(),
            "window": self.window,
            "size_ms": self.size_ms,
            "window_slide_ms": self.window_slide_ms if self.window == "sliding" else None,
            "gap_ms": self.size_ms if self.window == "session" else None,
            "max_delay_ms": self.max_delay_ms,
            "allowed_lateness_ms": self.lateness_ms,
            "idle_timeout_ms": self.idle_timeout_ms,
        }


def node_from_description(common: dict[str, Any], desc: dict[str, Any]) -> EventWindowNode:
    """A node able to load an event-time window's stored state (``checkpoint inspect``), from its description alone."""
    kind = str(desc.get("window"))
    size = int(desc.get("gap_ms") or desc.get("size_ms") or 1)
    slide = int(desc.get("window_slide_ms") or size)
    return EventWindowNode(
        **common, ts=_never, max_delay_ms=int(desc.get("max_delay_ms") or 0), idle_timeout_ms=desc.get("idle_timeout_ms"),
        window=kind, size_ms=size, window_slide_ms=slide, lateness_ms=int(desc.get("allowed_lateness_ms") or 0),
        f=operator.add, counting=False, keyed=True, num_partitions=None,
    )


def _never(_record: Any) -> Any:  # stands in for the user's ts when only loading state
    return None


def _lateness(value: Duration | None, op: str) -> int:
    if value is None or (isinstance(value, (int, float)) and not isinstance(value, bool) and value == 0):
        return 0
    return duration_ms(value, f"{op}: allowed_lateness")


class EventTimeDStream(DStream[T]):
    """A stream whose records carry an event time: open event-time windows on it.

    Made by `DStream.with_event_time`. Its batches are the parent's, unchanged; the
    event time and watermark are used by the windows opened on it.
    """

    __slots__ = ("_idle_timeout_ms", "_max_delay_ms", "_ts")

    def __init__(self, graph: Graph, node: Node, ts: Callable[[Any], Any], max_delay_ms: int, idle_timeout_ms: int | None) -> None:
        super().__init__(graph, node)
        self._ts = ts
        self._max_delay_ms = max_delay_ms
        self._idle_timeout_ms = idle_timeout_ms

    def __repr__(self) -> str:
        return f"EventTimeDStream({self._node.label}, max_delay={self._max_delay_ms} ms)"

    def tumbling_window(self, size: Duration, *, allowed_lateness: Duration | None = None) -> EventWindows[T]:
        """Fixed, non-overlapping windows ``[k*size, (k+1)*size)`` of event time (epoch-aligned)."""
        size_ms = duration_ms(size, "tumbling_window: size")
        return EventWindows(self, "tumbling", size_ms, size_ms, _lateness(allowed_lateness, "tumbling_window"))

    def sliding_window(self, size: Duration, slide: Duration, *, allowed_lateness: Duration | None = None) -> EventWindows[T]:
        """Windows of length `size` starting every `slide` of event time (epoch-aligned); a record is in size/slide of them."""
        size_ms = duration_ms(size, "sliding_window: size")
        slide_ms = duration_ms(slide, "sliding_window: slide")
        if size_ms % slide_ms:
            msg = f"sliding_window: size ({size_ms} ms) must be a multiple of slide ({slide_ms} ms)"
            raise ConfigError(msg)
        return EventWindows(self, "sliding", size_ms, slide_ms, _lateness(allowed_lateness, "sliding_window"))

    def session_window(self, gap: Duration, *, allowed_lateness: Duration | None = None) -> EventWindows[T]:
        """Per key, records less than `gap` apart in event time form one window ``[first, last + gap)``."""
        gap_ms = duration_ms(gap, "session_window: gap")
        return EventWindows(self, "session", gap_ms, gap_ms, _lateness(allowed_lateness, "session_window"))


class EventWindows(Generic[T]):
    """Event-time windows of one shape on an `EventTimeDStream`; choose the aggregation.

    Each aggregation adds one stateful operator (``name=`` keys its state in the
    checkpoint) and returns an `EventWindowDStream` of `WindowResult` records.
    """

    __slots__ = ("_kind", "_lateness_ms", "_size_ms", "_slide_ms", "_stream")

    def __init__(self, stream: EventTimeDStream[T], kind: str, size_ms: int, slide_ms: int, lateness_ms: int) -> None:
        self._stream = stream
        self._kind = kind
        self._size_ms = size_ms
        self._slide_ms = slide_ms
        self._lateness_ms = lateness_ms

    def __repr__(self) -> str:
        return f"EventWindows({self._kind}, size={self._size_ms} ms, slide={self._slide_ms} ms)"

    def _add(self, op: str, f: Callable[[Any, Any], Any], *, counting: bool, keyed: bool, name: str | None,
             num_partitions: int | None, codec: str | None) -> EventWindowDStream[WindowResult]:
        check_partitions(num_partitions, op, optional=True)
        s = self._stream
        g = s._graph
        node = g.add(
            EventWindowNode,
            op=op,
            parents=(s._node,),
            slide_ms=s.slide_ms,
            name=g.stateful_name(op, name),
            codec=g.check_codec(op, codec),
            ts=s._ts,
            max_delay_ms=s._max_delay_ms,
            idle_timeout_ms=s._idle_timeout_ms,
            window=self._kind,
            size_ms=self._size_ms,
            window_slide_ms=self._slide_ms,
            lateness_ms=self._lateness_ms,
            f=f,
            counting=counting,
            keyed=keyed,
            num_partitions=num_partitions,
        )
        return EventWindowDStream(g, node)

    def reduce_by_key(
        self: EventWindows[tuple[K, V]],
        f: Callable[[V, V], V],
        *,
        name: str | None = None,
        num_partitions: int | None = None,
        codec: str | None = None,
    ) -> EventWindowDStream[WindowResult]:
        """Per key and window, the values combined with `f` (associative; commutative for sliding and session windows).

        Records are (key, value) pairs; `ts` gets the whole pair. Emits
        ``WindowResult(key, start, end, value)`` once per window and key.
        """
        check_arity(f, 2, "event_window_reduce", "f(a, b)")
        return self._add("event_window_reduce", f, counting=False, keyed=True, name=name, num_partitions=num_partitions, codec=codec)

    def count_by_key(self, *, name: str | None = None, num_partitions: int | None = None) -> EventWindowDStream[WindowResult]:
        """Per key and window, the number of (key, value) records: ``WindowResult(key, start, end, count)``."""
        return self._add("event_window_count", operator.add, counting=True, keyed=True, name=name, num_partitions=num_partitions, codec=None)

    def count(self, *, name: str | None = None) -> EventWindowDStream[WindowResult]:
        """Per window, the number of records (any shape): ``WindowResult(None, start, end, count)``."""
        return self._add("event_window_count", operator.add, counting=True, keyed=False, name=name, num_partitions=None, codec=None)


class EventWindowDStream(DStream[T]):
    """The emitted windows of an event-time aggregation, plus `late_records()`."""

    __slots__ = ()

    def late_records(self) -> DStream[Any]:
        """The records that arrived after every window they belong to had been emitted, as they came in.

        Write them somewhere (``.write_to(sink)``: exactly once like any sink). Without this
        side stream, late records are counted in the operator's state (``late``) and
        logged (WARNING, once per batch that has some), then dropped.
        """
        node = self._node
        assert isinstance(node, EventWindowNode)
        node.late.routed = True
        buf = node.late

        def take(t: int, _parents: list[Batch[Any]]) -> Batch[Any]:
            return Batch([buf.take(t)], t)

        out = self._graph.add(TransformNode, op="late_records", parents=(node,), slide_ms=self.slide_ms, fn=take)
        return DStream(self._graph, out)


def with_event_time(stream: DStream[T], ts: Callable[[T], Any], max_delay: Duration, idle_timeout: Duration | None) -> EventTimeDStream[T]:
    """See `DStream.with_event_time`."""
    op = "with_event_time"
    check_arity(ts, 1, op, "ts(record) -> datetime | int ms")
    if isinstance(max_delay, (int, float)) and not isinstance(max_delay, bool) and max_delay == 0:
        max_delay_ms = 0
    else:
        max_delay_ms = duration_ms(max_delay, f"{op}: max_delay")
    idle_ms = None if idle_timeout is None else duration_ms(idle_timeout, f"{op}: idle_timeout")
    stream._graph.check_open(repr(op))
    return EventTimeDStream(stream._graph, stream._node, ts, max_delay_ms, idle_ms)


_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)
_MS = timedelta(milliseconds=1)


def ms_datetime(ms: int) -> datetime:
    """The aware UTC datetime of epoch milliseconds (exact, no float rounding)."""
    return _EPOCH + ms * _MS


def event_ms(value: Any) -> int:
    """An event time (aware datetime, or int epoch milliseconds) as int ms; TypeError/ValueError otherwise."""
    if value.__class__ is int:
        return int(value)
    if isinstance(value, datetime):
        if value.tzinfo is None or value.utcoffset() is None:
            msg = f"the event time {value!r} is a naive datetime; return an aware one (e.g. .replace(tzinfo=timezone.utc)) or int epoch ms"
            raise ValueError(msg)
        return (value - _EPOCH) // _MS
    if isinstance(value, int) and not isinstance(value, bool):
        return int(value)
    msg = (
        f"the event time must be an aware datetime or int epoch milliseconds, got {type(value).__name__} {value!r:.40}"
        + (" (epoch seconds? return int(seconds * 1000))" if isinstance(value, float) else "")
    )
    raise TypeError(msg)


__all__ = [
    "EVENT_TIME_SHAPE",
    "EventTimeDStream",
    "EventWindowDStream",
    "EventWindowNode",
    "EventWindows",
    "LateBuffer",
    "WindowResult",
    "event_ms",
    "ms_datetime",
    "node_from_description",
    "with_event_time",
]
