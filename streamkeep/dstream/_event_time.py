"""Event time: `with_event_time`, the watermark, and keyed event-time windows.

``stream.with_event_time(ts, max_delay=...)`` returns an `EventTimeDStream`;
its ``tumbling_window(size)``, ``sliding_window(size, slide)`` and
``session_window(gap)`` return an `EventWindows` spec whose aggregations
(``reduce_by_key``, ``count_by_key``, ``count``) add one stateful node, an
`EventWindowNode`, run by ``executors/_event_time.py``. The node's output is
an `EventWindowDStream` of `WindowResult` records: each window emitted once
when the watermark passes its end plus ``allowed_lateness`` (``emit="final"``,
the default), or its new value in every batch that changed it
(``emit="updates"``); ``late_records()`` on it is the side stream of records
that came too late. The watermark is kept per source partition (see
``Batch.source_partitions``) and combined as the minimum over active ones.
"""

from __future__ import annotations

import math
import numbers
import operator
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Any, Generic, NamedTuple, TypeVar

from streamkeep._util import Duration, check_arity, check_partitions, duration_ms, short_repr
from streamkeep.batch import Batch
from streamkeep.dstream._dstream import DStream
from streamkeep.dstream._graph import EVENT_TIME_SHAPE, Graph, Node, StatefulNode, TransformNode
from streamkeep.errors import ConfigError

T = TypeVar("T")
K = TypeVar("K")
V = TypeVar("V")


class WindowResult(NamedTuple):
    """One emitted event-time window: its key, bounds ``[start, end)`` (aware UTC datetimes) and value."""

    key: Any
    start: datetime
    end: datetime
    value: Any


WindowResult.__module__ = "streamkeep"  # its public name (``streamkeep`` imports this module on first use of it)


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
    emit: str  # "final" | "updates"
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
            "emit": self.emit,
        }


def node_from_description(common: dict[str, Any], desc: dict[str, Any]) -> EventWindowNode:
    """A node able to load an event-time window's stored state (``checkpoint inspect``), from its description alone."""
    kind = str(desc.get("window"))
    size = int(desc.get("gap_ms") or desc.get("size_ms") or 1)
    slide = int(desc.get("window_slide_ms") or size)
    return EventWindowNode(
        **common, ts=_never, max_delay_ms=int(desc.get("max_delay_ms") or 0), idle_timeout_ms=desc.get("idle_timeout_ms"),
        window=kind, size_ms=size, window_slide_ms=slide, lateness_ms=int(desc.get("allowed_lateness_ms") or 0),
        emit=str(desc.get("emit") or "final"), f=operator.add, counting=False, keyed=True, num_partitions=None,
    )


def _never(_record: Any) -> Any:  # stands in for the user's ts when only loading state
    return None


def _zero_or_ms(value: Duration | None, what: str) -> int:
    """A duration that may be 0 (seconds or timedelta), as whole ms; None is 0."""
    if value is None or (isinstance(value, (int, float, timedelta)) and not isinstance(value, bool) and not value):
        return 0
    return duration_ms(value, what)


def _lateness(value: Duration | None, op: str) -> int:
    return _zero_or_ms(value, f"{op}: allowed_lateness")


EMIT_MODES = ("final", "updates")


def _check_emit(emit: str, op: str) -> str:
    if emit not in EMIT_MODES:
        msg = f"{op}: emit must be 'final' (each window once, when the watermark passes its end) or 'updates' (a window's new value in every batch that changed it), got {emit!r}"
        raise ConfigError(msg)
    return emit


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

    def tumbling_window(self, size: Duration, *, allowed_lateness: Duration | None = None, emit: str = "final") -> EventWindows[T]:
        """Fixed, non-overlapping windows ``[k*size, (k+1)*size)`` of event time (epoch-aligned).

        Durations are seconds (int/float) or timedeltas. `emit`: ``"final"`` emits each
        window once, when the watermark passes its end plus `allowed_lateness`;
        ``"updates"`` emits a window's value in every batch that changed it.
        """
        size_ms = duration_ms(size, "tumbling_window: size")
        return EventWindows(self, "tumbling", size_ms, size_ms, _lateness(allowed_lateness, "tumbling_window"), _check_emit(emit, "tumbling_window"))

    def sliding_window(
        self, size: Duration, slide: Duration, *, allowed_lateness: Duration | None = None, emit: str = "final"
    ) -> EventWindows[T]:
        """Windows of length `size` starting every `slide` of event time (epoch-aligned); a record is in size/slide of them."""
        size_ms = duration_ms(size, "sliding_window: size")
        slide_ms = duration_ms(slide, "sliding_window: slide")
        if size_ms % slide_ms:
            msg = f"sliding_window: size ({size_ms} ms) must be a multiple of slide ({slide_ms} ms)"
            raise ConfigError(msg)
        return EventWindows(self, "sliding", size_ms, slide_ms, _lateness(allowed_lateness, "sliding_window"), _check_emit(emit, "sliding_window"))

    def session_window(self, gap: Duration, *, allowed_lateness: Duration | None = None, emit: str = "final") -> EventWindows[T]:
        """Per key, records less than `gap` apart in event time form one window ``[first, last + gap)``."""
        gap_ms = duration_ms(gap, "session_window: gap")
        return EventWindows(self, "session", gap_ms, gap_ms, _lateness(allowed_lateness, "session_window"), _check_emit(emit, "session_window"))


class EventWindows(Generic[T]):
    """Event-time windows of one shape on an `EventTimeDStream`; choose the aggregation.

    Each aggregation adds one stateful operator (``name=`` keys its state in the
    checkpoint) and returns an `EventWindowDStream` of `WindowResult` records.
    """

    __slots__ = ("_emit", "_kind", "_lateness_ms", "_size_ms", "_slide_ms", "_stream")

    def __init__(self, stream: EventTimeDStream[T], kind: str, size_ms: int, slide_ms: int, lateness_ms: int, emit: str = "final") -> None:
        self._stream = stream
        self._emit = emit
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
            emit=self._emit,
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
        ``WindowResult(key, start, end, value)`` once per window and key (with
        ``emit="updates"``: in every batch that changed it).
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
    check_arity(ts, 1, op, "ts(record) -> datetime | epoch seconds")
    max_delay_ms = _zero_or_ms(max_delay, f"{op}: max_delay")
    idle_ms = None if idle_timeout is None else duration_ms(idle_timeout, f"{op}: idle_timeout")
    stream._graph.check_open(repr(op))
    return EventTimeDStream(stream._graph, stream._node, ts, max_delay_ms, idle_ms)


_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)
_MS = timedelta(milliseconds=1)


def ms_datetime(ms: int) -> datetime:
    """The aware UTC datetime of epoch milliseconds (exact, no float rounding)."""
    return _EPOCH + ms * _MS


class EventTimeValueError(TypeError):
    """`ts` returned something that is not an event time (the runtime names the operator and record)."""


#: Epoch seconds at or past this (the year 5138) are taken to be a unit mistake (milliseconds, microseconds).
_MAX_SECONDS = 100_000_000_000


def event_ms(value: Any) -> int:
    """An event time as int epoch milliseconds, exactly.

    `value` is a `datetime` (aware; a naive one is taken as UTC) or epoch seconds
    (int or float). Datetimes and floats are floored to the millisecond; a float within
    a microsecond of a whole millisecond counts as that millisecond (``1.001`` is 1001 ms,
    not 1000 because ``1.001 * 1000 == 1000.9999999999999``). Raises
    `EventTimeValueError` for anything else (bool, str, NaN, infinities, values past
    the year 5000 that look like epoch milliseconds).
    """
    cls = value.__class__
    if cls is int:
        if -_MAX_SECONDS < value < _MAX_SECONDS:
            return int(value) * 1000
    elif cls is float:
        if -_MAX_SECONDS < value < _MAX_SECONDS:  # False for NaN
            m = float(value) * 1000.0
            r = round(m)
            return r if abs(m - r) <= 1e-3 else math.floor(m)
    elif isinstance(value, datetime):
        if value.tzinfo is None or value.utcoffset() is None:
            value = value.replace(tzinfo=timezone.utc)
        ms: int = (value - _EPOCH) // _MS
        return ms
    elif isinstance(value, numbers.Real) and not isinstance(value, bool):  # numpy scalars, Fraction, Decimal
        if isinstance(value, numbers.Integral):
            return event_ms(int(value))
        return event_ms(float(value))
    raise EventTimeValueError(_bad_event_time(value))


def _bad_event_time(value: Any) -> str:
    what = f"{type(value).__name__} {short_repr(value, 60)}"
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        if value != value or value in (math.inf, -math.inf):
            return f"returned {what}, not a time"
        return (
            f"returned {what}, which as epoch seconds is past the year 5000: epoch milliseconds? "
            f"return ms / 1000 (or a datetime)"
        )
    return f"returned {what}; return a datetime (aware; a naive one is taken as UTC) or epoch seconds (int or float)"


__all__ = [
    "EMIT_MODES",
    "EVENT_TIME_SHAPE",
    "EventTimeValueError",
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
