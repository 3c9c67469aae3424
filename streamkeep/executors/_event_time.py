"""Runtime of the event-time windows (`EventWindowNode`): open windows, watermark, late records.

The state is open windows plus a few counters, and is checkpointed like any
keyed state (deltas of the windows that changed, snapshots of all):

- tumbling and sliding windows: key ``(record key, window start ms)`` -> the value so far;
- session windows: key ``record key`` -> ``[[start ms, last event ms, value], ...]`` (sorted,
  disjoint: a session is ``[start, last + gap)``);
- ``meta``: the largest event time seen, the watermark, the batch time of the last
  batch with records (for ``idle_timeout``) and the number of late records so far.

Per batch: every record is assigned to its windows, unless every window it
belongs to has already been emitted (then it is late: routed to
``late_records()`` or counted, logged and dropped). Then the watermark moves to
``max event time - max_delay`` (never back), and every window whose
``end + allowed_lateness <= watermark`` is emitted once and forgotten. All of it
depends only on the records of the batches so far and their batch times,
never on the wall clock, so a replayed batch gives the same windows.
"""

from __future__ import annotations

import logging
from typing import Any

from streamkeep._util import short_repr, stable_hash, user_function_error
from streamkeep.batch import Batch, as_pair
from streamkeep.dstream._event_time import EventWindowNode, WindowResult, event_ms, ms_datetime
from streamkeep.errors import UserFunctionError
from streamkeep.executors._runtime import _SCALARS, StatefulRuntime, _detach
from streamkeep.state.factory import StoreFactory, memory_store

log = logging.getLogger("streamkeep.event_time")


def _user_error(node: EventWindowNode, t: int, what: str, exc: BaseException, record: Any) -> UserFunctionError:
    return user_function_error("", exc, t, node.name, detail=f" on record {short_repr(record)}", subject=f"{what} of {node.label}")


def _sort_key(r: WindowResult) -> tuple[Any, ...]:
    return (r.end, r.start)


class EventWindowRuntime(StatefulRuntime):
    """Open event-time windows of one operator, the watermark, and their checkpoint form."""

    node: EventWindowNode

    def __init__(self, node: EventWindowNode, stores: StoreFactory = memory_store) -> None:
        self.node = node
        self.store = stores()
        self.max_event_ms: int | None = None
        self.watermark_ms: int | None = None
        self.last_data_t: int | None = None
        self.late_total = 0
        self._meta_changed = False
        #: window end ms -> store keys with a window ending there (rebuilt on load; not checkpointed)
        self._ends: dict[int, set[Any]] = {}

    # -- the per-batch step ----------------------------------------------------------

    def step(self, t: int, parent: Batch[Any] | None) -> Batch[Any] | None:
        node = self.node
        late: list[Any] = []
        had = False
        if parent is not None:
            for part in parent.partitions:
                if part:
                    had = True
                    self._ingest(t, part, late)
        if had:
            self.last_data_t = t
            self._meta_changed = True
        self._advance(t)
        out = self._emit()
        node.late.put(t, late)
        if late:
            self.late_total += len(late)
            self._meta_changed = True
            if not node.late.routed:
                log.warning(
                    "%s dropped %d late record(s) in batch %d ms (their windows were already emitted; watermark %s ms); "
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

    def _ingest(self, t: int, part: list[Any], late: list[Any]) -> None:
        node = self.node
        ts = node.ts
        keyed, counting = node.keyed, node.counting
        wm = self.watermark_ms
        lateness = node.lateness_ms
        kind = node.window
        size, slide = node.size_ms, node.window_slide_ms
        max_e = self.max_event_ms
        for rec in part:
            try:
                e = event_ms(ts(rec))
            except UserFunctionError:
                raise
            except Exception as exc:
                raise _user_error(node, t, "the event time function (ts)", exc, rec) from exc
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
                continue
            start = e - e % slide  # the last window containing e
            placed = False
            while start > e - size:
                if wm is None or start + size + lateness > wm:
                    self._add(t, (k, start), start + size, v, rec)
                    placed = True
                start -= slide
            if not placed:
                late.append(rec)
        if max_e != self.max_event_ms:
            self.max_event_ms = max_e
            self._meta_changed = True

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

    def _advance(self, t: int) -> None:
        """Move the watermark after batch t (only forward)."""
        node = self.node
        if self.max_event_ms is None:
            return
        cand = self.max_event_ms - node.max_delay_ms
        idle = node.idle_timeout_ms
        if idle is not None and self.last_data_t is not None and t - self.last_data_t >= idle:
            cand += t - self.last_data_t  # idle: event time is taken to flow with batch time
        if self.watermark_ms is None or cand > self.watermark_ms:
            self.watermark_ms = cand
            self._meta_changed = True

    def _emit(self) -> list[Any]:
        wm = self.watermark_ms
        if wm is None:
            return []
        node = self.node
        limit = wm - node.lateness_ms
        due = sorted(end for end in self._ends if end <= limit)
        out: list[WindowResult] = []
        store = self.store
        data = store.data
        session = node.window == "session"
        for end in due:
            keys = self._ends.pop(end)
            for skey in keys:
                if session:
                    sessions = data[skey]
                    gap = node.size_ms
                    closed = [s for s in sessions if s[1] + gap == end]
                    rest = [s for s in sessions if s[1] + gap != end]
                    for s in closed:
                        out.append(WindowResult(skey, ms_datetime(s[0]), ms_datetime(end), s[2]))
                    if rest:
                        store.put(skey, rest)
                    else:
                        store.delete(skey)
                else:
                    k, start = skey
                    out.append(WindowResult(k, ms_datetime(start), ms_datetime(end), data[skey]))
                    store.delete(skey)
        if len(out) > 1:
            out.sort(key=_sort_key)
            _order_keys(out)
        return out

    # -- checkpoint form ---------------------------------------------------------------

    def _meta(self) -> dict[str, Any]:
        return {
            "max_event_ms": self.max_event_ms,
            "watermark_ms": self.watermark_ms,
            "last_data_t": self.last_data_t,
            "late": self.late_total,
        }

    def delta(self) -> dict[str, Any] | None:
        changed, removed = self.store.take_delta()
        if not changed and not removed and not self._meta_changed:
            return None
        self._meta_changed = False
        return {"set": changed, "del": removed, "meta": self._meta()}

    def forget_changes(self) -> None:
        self.store.changed = set()
        self.store.removed = set()
        self._meta_changed = False

    def snapshot(self) -> dict[str, Any]:
        return {"set": list(self.store.data.items()), "del": [], "meta": self._meta()}

    def load(self, snapshot: dict[str, Any] | None, deltas: list[dict[str, Any]]) -> None:
        self.store.load(snapshot["set"] if snapshot else ())
        meta = snapshot.get("meta") if snapshot else None
        for d in deltas:
            self.store.apply_delta(d["set"], d["del"])
            meta = d.get("meta", meta)
        meta = meta or {}
        self.max_event_ms = meta.get("max_event_ms")
        self.watermark_ms = meta.get("watermark_ms")
        self.last_data_t = meta.get("last_data_t")
        self.late_total = int(meta.get("late", 0))
        self._meta_changed = False
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
        """Watermark, largest event time, open windows and late records so far (``checkpoint inspect``)."""
        return {
            "watermark_ms": self.watermark_ms,
            "max_event_ms": self.max_event_ms,
            "open_windows": sum(len(v) for v in self.store.data.values()) if self.node.window == "session" else len(self.store),
            "late_records": self.late_total,
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
