"""Runtime of the event-time windows (`EventWindowNode`): open windows, watermarks, late records.

The state is open windows plus a few counters, and is checkpointed like any
keyed state (deltas of the windows that changed, snapshots of all):

- tumbling and sliding windows: key ``(record key, window start ms)`` -> the value so far;
- session windows: key ``record key`` -> ``[[start ms, last event ms, value], ...]`` (sorted,
  disjoint: a session is ``[start, last + gap)``);
- ``meta``: the watermark, the number of late records so far and, per source
  partition (``Batch.source_partitions``; ``"*"`` when the input lost them in a
  shuffle), ``[label, largest event time, batch time of its last records]``.

Per batch: every record is assigned to its windows, unless every window it
belongs to has already been closed (then it is late: routed to
``late_records()`` or counted, logged and dropped). Then each partition's
candidate is its largest event time minus ``max_delay``; the watermark moves to
the minimum over the active partitions (those with records within
``idle_timeout`` of batch time; when all are idle, event time is taken to flow
with batch time from the latest of them), never back. Every window whose
``end + allowed_lateness <= watermark`` is closed: emitted once (``emit="final"``)
or dropped after the updates of the batches that changed it (``emit="updates"``).
All of it depends only on the records of the batches so far, their partitions
and their batch times, never on the wall clock, so a replayed batch gives the
same windows.
"""

from __future__ import annotations

import logging
from typing import Any

from streamkeep._util import short_repr, stable_hash, user_function_error
from streamkeep.batch import Batch, as_pair
from streamkeep.checkpoint._format import MOVED
from streamkeep.dstream._event_time import EventTimeValueError, EventWindowNode, WindowResult, event_ms, ms_datetime
from streamkeep.errors import UserFunctionError
from streamkeep.executors._runtime import _SCALARS, StatefulRuntime, _detach
from streamkeep.state.factory import StoreFactory, memory_store

log = logging.getLogger("streamkeep.event_time")


def iso_ms(ms: int | None) -> str | None:
    """Epoch ms as an ISO-8601 UTC time (None stays None)."""
    return None if ms is None else ms_datetime(ms).isoformat().replace("+00:00", "Z")


def _user_error(node: EventWindowNode, t: int, what: str, exc: BaseException, record: Any) -> UserFunctionError:
    return user_function_error("", exc, t, node.name, detail=f" on record {short_repr(record)}", subject=f"{what} of {node.label}")


def _sort_key(r: WindowResult) -> tuple[Any, ...]:
    return (r.end, r.start)


class EventWindowRuntime(StatefulRuntime):
    """Open event-time windows of one operator, the watermark per source partition, and their checkpoint form."""

    node: EventWindowNode

    def __init__(self, node: EventWindowNode, stores: StoreFactory = memory_store) -> None:
        self.node = node
        self.store = stores()
        #: source partition label -> [largest event ms, batch time of its last records]
        self.parts: dict[str, list[int]] = {}
        self.watermark_ms: int | None = None
        self.late_total = 0
        #: late records of the last batch (metrics; not checkpointed)
        self.late_batch = 0
        self._meta_changed = False
        #: window end ms -> store keys with a window ending there (rebuilt on load; not checkpointed)
        self._ends: dict[int, set[Any]] = {}
        #: emit="updates": the windows (store keys; sessions: key -> event times) changed by this batch
        self._touched: dict[Any, list[int]] = {}

    @property
    def max_event_ms(self) -> int | None:
        """The largest event time seen in any partition."""
        return max((p[0] for p in self.parts.values()), default=None)

    # -- the per-batch step ----------------------------------------------------------

    def step(self, t: int, parent: Batch[Any] | None) -> Batch[Any] | None:
        node = self.node
        late: list[Any] = []
        self._touched = {}
        if parent is not None:
            labels = parent.source_partitions
            for i, part in enumerate(parent.partitions):
                if part:
                    top = self._ingest(t, part, late)
                    label = labels[i] if labels is not None else "*"
                    seen = self.parts.get(label)
                    if seen is None:
                        self.parts[label] = [top, t]
                    else:
                        seen[0] = max(seen[0], top)
                        seen[1] = t
                    self._meta_changed = True
        self._advance(t)
        out = self._emit()
        node.late.put(t, late)
        self.late_batch = len(late)
        if late:
            self.late_total += len(late)
            self._meta_changed = True
            if not node.late.routed:
                log.warning(
                    "%s dropped %d late record(s) in batch %d ms (their windows were already closed; watermark %s ms); "
                    "use .late_records() on the windowed stream to keep them",
                    node.label, len(late), t, self.watermark_ms,
                    extra={"operator": node.name, "batch_time_ms": t},
                )
        n = node.num_partitions
        if n is None or n == 1:
            return Batch([out], t)
        parts: list[list[Any]] = [[] for _ in range(n)]
        for r in out:
            parts[stable_hash(r.key) % n].append(r)
        return Batch(parts, t)

    def _ingest(self, t: int, part: list[Any], late: list[Any]) -> int:
        """Add one partition's records to their windows; returns its largest event time."""
        node = self.node
        ts = node.ts
        keyed, counting = node.keyed, node.counting
        wm = self.watermark_ms
        lateness = node.lateness_ms
        kind = node.window
        size, slide = node.size_ms, node.window_slide_ms
        updates = node.emit == "updates"
        max_e: int | None = None
        for rec in part:
            try:
                got = ts(rec)
            except UserFunctionError:
                raise
            except Exception as exc:
                raise _user_error(node, t, "the event time function (ts)", exc, rec) from exc
            try:
                e = event_ms(got)
            except EventTimeValueError as exc:
                msg = (
                    f"the event time function (ts) of {node.label} {exc} for record {short_repr(rec)} "
                    f"(batch time {t} ms); ts must return a datetime (aware; naive is taken as UTC) or epoch seconds (int or float)"
                )
                raise UserFunctionError(msg, operator=node.name, batch_time_ms=t) from exc
            if keyed:
                kv = rec if rec.__class__ is tuple and len(rec) == 2 else as_pair(rec, node.op)
                k, v = kv
            else:
                k, v = None, rec
            if counting:
                v = 1
            if max_e is None or e > max_e:
                max_e = e
            if kind == "session":
                if wm is not None and e + size + lateness <= wm:
                    late.append(rec)
                else:
                    self._add_session(t, k, e, v, rec)
                    if updates:
                        self._touched.setdefault(k, []).append(e)
                continue
            start = e - e % slide  # the last window containing e
            placed = False
            while start > e - size:
                if wm is None or start + size + lateness > wm:
                    self._add(t, (k, start), start + size, v, rec)
                    if updates:
                        self._touched[(k, start)] = []
                    placed = True
                start -= slide
            if not placed:
                late.append(rec)
        assert max_e is not None  # part is not empty
        return max_e

    def _combine(self, t: int, a: Any, b: Any, rec: Any) -> Any:
        try:
            return self.node.f(a, b)
        except UserFunctionError:
            raise
        except Exception as exc:
            raise _user_error(self.node, t, "the reduce function", exc, rec) from exc

    def _add(self, t: int, skey: Any, end: int, v: Any, rec: Any) -> None:
        data = self.store.data
        if skey in data:
            self.store.put(skey, self._combine(t, data[skey], v, rec))
        else:
            try:
                self.store.put(skey, v if v.__class__ in _SCALARS else _detach(v))  # f may change it in place later
            except TypeError as exc:  # an unhashable key
                raise _user_error(self.node, t, "keying", exc, rec) from exc
            self._ends.setdefault(end, set()).add(skey)

    def _add_session(self, t: int, k: Any, e: int, v: Any, rec: Any) -> None:
        gap = self.node.size_ms
        try:
            old = self.store.data.get(k) or []
        except TypeError as exc:
            raise _user_error(self.node, t, "keying", exc, rec) from exc
        merged = [e, e, v if v.__class__ in _SCALARS else _detach(v)]
        keep: list[list[Any]] = []
        for s in old:  # sorted and disjoint: one pass merges every session the new one touches
            if s[0] < merged[1] + gap and merged[0] < s[1] + gap:
                acc = self._combine(t, s[2], merged[2], rec) if s[0] <= merged[0] else self._combine(t, merged[2], s[2], rec)
                merged = [min(s[0], merged[0]), max(s[1], merged[1]), acc]
            else:
                keep.append(s)
        keep.append(merged)
        keep.sort(key=lambda s: s[0])
        self._set_sessions(k, old, keep)

    def _set_sessions(self, k: Any, old: list[list[Any]], new: list[list[Any]]) -> None:
        gap = self.node.size_ms
        for s in old:
            keys = self._ends.get(s[1] + gap)
            if keys is not None:
                keys.discard(k)
                if not keys:
                    del self._ends[s[1] + gap]
        if new:
            self.store.put(k, new)
            for s in new:
                self._ends.setdefault(s[1] + gap, set()).add(k)
        else:
            self.store.delete(k)

    def _candidate(self, t: int) -> int | None:
        """The watermark the partitions allow after batch t: the minimum over the active ones."""
        if not self.parts:
            return None
        delay = self.node.max_delay_ms
        idle = self.node.idle_timeout_ms
        active = [mx for mx, last in self.parts.values() if idle is None or t - last < idle]
        if active:
            return min(active) - delay
        # every partition idle: event time is taken to flow with batch time since each one's last records
        return max(mx - delay + (t - last) for mx, last in self.parts.values())

    def _advance(self, t: int) -> None:
        """Move the watermark after batch t (only forward)."""
        cand = self._candidate(t)
        if cand is not None and (self.watermark_ms is None or cand > self.watermark_ms):
            self.watermark_ms = cand
            self._meta_changed = True

    def _updates(self) -> list[WindowResult]:
        """emit="updates": the current value of every window this batch changed."""
        node = self.node
        data = self.store.data
        out: list[WindowResult] = []
        if node.window == "session":
            gap = node.size_ms
            for k, evs in self._touched.items():
                for s in data.get(k, ()):
                    if any(s[0] <= e <= s[1] for e in evs):
                        v = s[2]
                        out.append(WindowResult(k, ms_datetime(s[0]), ms_datetime(s[1] + gap), v if v.__class__ in _SCALARS else _detach(v)))
        else:
            size = node.size_ms
            for skey in self._touched:
                k, start = skey
                v = data[skey]
                out.append(WindowResult(k, ms_datetime(start), ms_datetime(start + size), v if v.__class__ in _SCALARS else _detach(v)))
        return out

    def _emit(self) -> list[Any]:
        node = self.node
        updates = node.emit == "updates"
        out: list[WindowResult] = self._updates() if updates and self._touched else []
        wm = self.watermark_ms
        if wm is not None:
            self._close(wm - node.lateness_ms, None if updates else out)
        if len(out) > 1:
            out.sort(key=_sort_key)
            _order_keys(out)
        return out

    def _close(self, limit: int, out: list[WindowResult] | None) -> None:
        """Forget every window ending at or before `limit`, adding its result to `out` (None: emitted already)."""
        due = sorted(end for end in self._ends if end <= limit)
        store = self.store
        data = store.data
        session = self.node.window == "session"
        gap = self.node.size_ms
        for end in due:
            keys = self._ends.pop(end)
            for skey in keys:
                if session:
                    sessions = data[skey]
                    rest = [s for s in sessions if s[1] + gap != end]
                    if out is not None:
                        out.extend(WindowResult(skey, ms_datetime(s[0]), ms_datetime(end), s[2]) for s in sessions if s[1] + gap == end)
                    if rest:
                        store.put(skey, rest)
                    else:
                        store.delete(skey)
                else:
                    k, start = skey
                    if out is not None:
                        out.append(WindowResult(k, ms_datetime(start), ms_datetime(end), data[skey]))
                    store.delete(skey)

    # -- checkpoint form ---------------------------------------------------------------

    def _meta(self) -> dict[str, Any]:
        return {
            "watermark_ms": self.watermark_ms,
            "late": self.late_total,
            "parts": [[label, mx, last] for label, (mx, last) in sorted(self.parts.items())],
        }

    def delta(self) -> dict[str, Any] | None:
        changed, removed, moved = self.store.take_changes()
        if not changed and not removed and not self._meta_changed:
            return None
        self._meta_changed = False
        d = {"set": changed, "del": removed, "meta": self._meta()}
        if moved:
            d[MOVED] = moved
        return d

    def forget_changes(self) -> None:
        self.store.changed = set()
        self.store.removed = set()
        self.store.forget_fresh()
        self._meta_changed = False

    def snapshot(self) -> dict[str, Any]:
        return {"set": list(self.store.data.items()), "del": [], "meta": self._meta()}

    def load(self, snapshot: dict[str, Any] | None, deltas: list[dict[str, Any]]) -> None:
        self.store.load(snapshot["set"] if snapshot else ())
        meta = snapshot.get("meta") if snapshot else None
        for d in deltas:
            self.store.apply_delta(d["set"], d["del"], d.get(MOVED, ()))
            meta = d.get("meta", meta)
        meta = meta or {}
        self.watermark_ms = meta.get("watermark_ms")
        # "parts" is absent in state written before watermarks were kept per partition: the watermark carries on
        self.parts = {str(label): [int(mx), int(last)] for label, mx, last in meta.get("parts") or ()}
        self.late_total = int(meta.get("late", 0))
        self.late_batch = 0
        self._meta_changed = False
        self._touched = {}
        self._ends = {}
        gap = self.node.size_ms
        skey: Any
        for skey, v in self.store.data.items():
            if self.node.window == "session":
                for s in v:
                    self._ends.setdefault(s[1] + gap, set()).add(skey)
            else:
                self._ends.setdefault(skey[1] + self.node.size_ms, set()).add(skey)

    def key_count(self) -> int:
        return len(self.store)

    def status(self) -> dict[str, Any]:
        """Watermark, largest event time, open windows, late records, per-partition watermarks (``checkpoint inspect``, metrics)."""
        delay = self.node.max_delay_ms
        return {
            "watermark_ms": self.watermark_ms,
            "watermark": iso_ms(self.watermark_ms),
            "max_event_ms": self.max_event_ms,
            "open_windows": sum(len(v) for v in self.store.data.values()) if self.node.window == "session" else len(self.store),
            "late_records": self.late_total,
            "partitions": {
                label: {"watermark_ms": mx - delay, "max_event_ms": mx, "last_records_batch_ms": last}
                for label, (mx, last) in sorted(self.parts.items())
            },
        }

    def drained(self, last_t: int) -> bool:
        """Open windows wait for more input, except with idle_timeout (later batches advance the watermark)."""
        return self.node.idle_timeout_ms is None or not self.store.data


def _order_keys(out: list[WindowResult]) -> None:
    """Within one (end, start), order results by key (by repr when keys do not compare): replays emit the same list."""
    i = 0
    while i < len(out):
        j = i
        while j < len(out) and out[j].end == out[i].end and out[j].start == out[i].start:
            j += 1
        if j - i > 1:
            chunk = out[i:j]
            try:
                chunk.sort(key=lambda r: r.key)
            except TypeError:
                chunk.sort(key=lambda r: repr(r.key))
            out[i:j] = chunk
        i = j
