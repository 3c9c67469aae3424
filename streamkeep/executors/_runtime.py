"""Runtime of the stateful operators: their state, per-batch step, and checkpoint form.

Each runtime owns one stateful node's state (held by whoever runs the
operator: `LocalExecutor` keeps them in the driver process; another executor
may hold them elsewhere, behind the `Executor` protocol).
``step(t, parent)`` consumes the parent's batch for time t (None when the
parent produced none) and returns the operator's output batch (None when the
operator does not produce at t). ``delta()`` returns what changed since the
last call (keys set and removed, window slices added and dropped);
``snapshot()`` the whole state. Both are plain data, encoded by the scheduler.
"""

from __future__ import annotations

import copy
from collections import defaultdict
from dataclasses import dataclass
from operator import itemgetter
from typing import Any

from streamkeep._columns import Columns
from streamkeep._util import short_repr, user_function_error
from streamkeep.batch import Batch, RecordShapeError, as_pair, check_key, check_length
from streamkeep.checkpoint._format import EMPTY_RUNS, MOVED
from streamkeep.codec._items import PlainFirstPairs
from streamkeep.codec._msgpack import tuple_plain
from streamkeep.dstream._graph import MapWithStateNode, ReduceWindowNode, StatefulNode, UpdateStateNode, WindowNode
from streamkeep.dstream._state import _ABSENT, State
from streamkeep.errors import UserFunctionError
from streamkeep.state.factory import StoreFactory, memory_store

# Values whose equality means "unchanged"; mutable containers are always re-written.
_IMMUTABLE = frozenset({int, float, str, bytes, bool, type(None), frozenset, complex, tuple})
# Values that hold no reference to anything that can change in place (tuples are checked deeply).
_SCALARS = frozenset({int, float, str, bytes, bool, type(None), complex})
# Keys and values the msgpack codec packs natively (with tuples of them: `tuple_plain`).
_PLAIN_SCALARS = frozenset({int, float, str, bytes, bool, type(None)})
#: What `WindowRuntime._restored` returns for a stored slice not to keep.
_SKIP: Any = object()


def _user_error(node: StatefulNode, t: int, exc: BaseException, key: Any = _ABSENT, value: Any = _ABSENT) -> UserFunctionError:
    if isinstance(exc, RecordShapeError):
        return exc.to_user_error(t, None, None)
    where = "" if key is _ABSENT else f" for key {short_repr(key)}"
    if value is not _ABSENT:
        where += f", value {short_repr(value)}"
    return user_function_error(f"of {node.label}", exc, t, node.name, detail=where)


def _detach(value: Any) -> Any:
    """`value`, or a copy of it that shares nothing mutable with it (so a later in-place change does not show)."""
    t = value.__class__
    if t in _SCALARS or t is frozenset:
        return value
    if t is tuple:
        return value if _frozen(value) else tuple(_detach(v) for v in value)
    if t is list:
        return [v if v.__class__ in _SCALARS else _detach(v) for v in value]
    if t is dict:
        return {k: v if v.__class__ in _SCALARS else _detach(v) for k, v in value.items()}
    if t is set:
        return set(value)
    return copy.deepcopy(value)


def _detached_items(data: dict[Any, Any]) -> list[tuple[Any, Any]]:
    """(key, value) pairs of `data` that a later in-place change of a value cannot alter (scalars shared, not copied)."""
    return [(k, v) if v.__class__ in _SCALARS else (k, _detach(v)) for k, v in data.items()]


def _seed_value(value: Any) -> Any:
    """An initial state value, detached from the object the user passed (state may be changed in place)."""
    return value if value.__class__ in _SCALARS else _detach(value)


def _output(items: list[tuple[Any, Any]], n: int | None, t: int) -> Batch[Any]:
    b: Batch[Any] = Batch([items], t)
    return b.partition_by(n) if n and n > 1 else b


class StatefulRuntime:
    """Common interface of the stateful operator runtimes."""

    node: StatefulNode

    def step(self, t: int, parent: Batch[Any] | None) -> Batch[Any] | None:
        """Consume the parent's batch at t; return the output at t, if any."""
        raise NotImplementedError

    def delta(self) -> dict[str, Any] | None:
        """What changed since the last call, as data; None when nothing changed."""
        raise NotImplementedError

    def snapshot(self) -> dict[str, Any]:
        """The whole state as data (a consistent copy, safe to encode in another thread)."""
        raise NotImplementedError

    def forget_changes(self) -> None:
        """Drop the change tracking without building a delta (no checkpoint to write)."""
        self.delta()

    def load(self, snapshot: dict[str, Any] | None, deltas: list[dict[str, Any]]) -> None:
        """Replace the state with `snapshot` plus `deltas` applied in order."""
        raise NotImplementedError

    def seed(self) -> None:
        """Load the node's initial state (fresh start only)."""

    def key_count(self) -> int:
        """Number of keys (or records) held."""
        raise NotImplementedError

    def drained(self, last_t: int) -> bool:
        """True when no input is still waiting inside the operator (windows) after batch `last_t`."""
        return True

    def set_threads(self, n: int) -> None:
        """Most threads the runtime may split one batch's kernels over (1: the calling thread only)."""

    def close(self) -> None:
        """Release threads the runtime started (its state stays readable)."""


def ordered_delta(changed: list[tuple[Any, Any]], removed: list[Any], moved: list[Any], plain: set[Any] | None) -> dict[str, Any]:
    """A keyed delta from `MemoryStateStore.take_changes` (its items' order kept: restores follow it).

    With `plain` (keys whose values are known to pack natively), the leading pairs known so
    are counted (`PlainFirstPairs`: the encoder skips walking them). Keys removed and set
    again (`moved`) are stored under `MOVED` (format 9, `MOVED_VERSION`), only when there are some.
    """
    d: dict[str, Any] = {"set": changed, "del": removed}
    if plain and changed:
        if plain.issuperset(map(itemgetter(0), changed)):  # all of them (checked in C)
            d["set"] = PlainFirstPairs(changed, len(changed))
        else:
            n = 0
            for k, _ in changed:
                if k not in plain:
                    break
                n += 1
            if n:
                d["set"] = PlainFirstPairs(changed, n)
    if moved:
        d[MOVED] = moved
    return d


class _Keyed(StatefulRuntime):
    def __init__(self, node: StatefulNode, stores: StoreFactory = memory_store) -> None:
        self.node = node
        self.store = stores()
        #: keys (themselves tuple_plain) whose value was found tuple_plain when last checked; a key
        #: changed since (in ``store.changed``) is checked again. It spares the delta's encoder that walk.
        self._plain: set[Any] = set()
        #: False from the start of a step until its output checked the changed keys
        self._plain_checked = False

    def delta(self) -> dict[str, Any] | None:
        changed, removed, moved = self.store.take_changes()
        if not changed and not removed:
            return None
        return ordered_delta(changed, removed, moved, self._plain if self._plain_checked else None)

    def snapshot(self) -> dict[str, Any]:
        self.store.materialize()
        data = self.store.data
        plain = self._plain
        if self._plain_checked and len(plain) >= len(data) > 0 and plain.issuperset(data):  # all checked: say so
            return {"set": PlainFirstPairs(data.items(), len(data)), "del": []}
        return {"set": list(data.items()), "del": []}

    def forget_changes(self) -> None:
        self.store.forget_changes()

    def load(self, snapshot: dict[str, Any] | None, deltas: list[dict[str, Any]]) -> None:
        self._plain = set()
        self.store.load(snapshot["set"] if snapshot else ())
        for d in deltas:
            self.store.apply_delta(d["set"], d["del"], d.get(MOVED, ()))

    def key_count(self) -> int:
        return len(self.store)


class UpdateStateRuntime(_Keyed):
    """`update_state_by_key`: update runs for every key with state or new values."""

    node: UpdateStateNode

    def seed(self) -> None:
        for k, v in self.node.initial:
            self.store.put(k, _seed_value(v))

    def step(self, t: int, parent: Batch[Any] | None) -> Batch[Any] | None:
        if parent is None:
            return None
        groups = _group_all(parent)
        update = self.node.update
        store = self.store
        self._plain_checked = False
        store.forget_fresh()  # this step writes `data` directly (a seeded value `put` before would be stale)
        data = store.data
        changed = store.changed
        removed = store.removed
        key: Any = _ABSENT
        pop = groups.pop
        mark = changed.add
        try:
            for key, old in list(data.items()):
                vals = pop(key, None)
                new = update(vals if vals is not None else [], old)
                if new is None:
                    del data[key]
                    changed.discard(key)
                    removed.add(key)
                    self._plain.discard(key)
                    continue
                cls = type(new)
                if (
                    cls in _IMMUTABLE
                    and (new is old or (type(old) is cls and new == old))
                    and (cls is not tuple or _frozen(new))  # a list inside may have been mutated in place
                ):
                    continue  # unchanged: costs nothing in the checkpoint
                data[key] = new
                mark(key)
            for key, vals in groups.items():
                new = update(vals, None)
                if new is not None:
                    data[key] = new
                    mark(key)
        except UserFunctionError:
            raise
        except Exception as exc:
            raise _user_error(self.node, t, exc, key) from exc
        # The output is this batch's view of the state: never the state objects themselves, which a
        # later batch may change in place (the earlier batch's output would change with them).
        return _output(self._output_items(), self.node.num_partitions, t)

    def _output_items(self) -> list[tuple[Any, Any]]:
        """`_detached_items` of the state, checking (and noting in `_plain`) the keys changed since the last delta.

        A tuple value found `tuple_plain` is immutable, so it is shared, not copied, and
        stays plain until its key is written again: unchanged keys cost two set lookups,
        not a walk of their value, and the delta's encoder trusts `_plain`.
        """
        data = self.store.data
        if set(map(type, data.values())) <= _PLAIN_SCALARS:  # the common case, checked in C: every pair is shared as it is
            self._plain_checked = True
            return list(data.items())
        changed = self.store.changed
        plain = self._plain
        out: list[tuple[Any, Any]] = []
        append = out.append
        for k, v in data.items():
            c = v.__class__
            if c in _PLAIN_SCALARS or (k in plain and k not in changed):
                append((k, v))
            elif c is tuple and tuple_plain(v):
                append((k, v))
                kc = k.__class__
                if kc in _PLAIN_SCALARS or (kc is tuple and tuple_plain(k)):
                    plain.add(k)
            else:
                plain.discard(k)
                append((k, _detach(v)))
        self._plain_checked = True
        return out


def _frozen(value: Any) -> bool:
    """True when `value` holds nothing that can change in place (tuples checked deeply)."""
    if value.__class__ is not tuple:
        return value.__class__ in _IMMUTABLE
    # A loop, not all(generator): this runs for every tuple state value of every batch (~4x faster).
    for v in value:
        c = v.__class__
        if c is tuple:
            if not _frozen(v):
                return False
        elif c not in _IMMUTABLE:
            return False
    return True


def _keys_of(batch: Batch[Any]) -> list[Any]:
    """The keys of a batch's (key, value) records (other records have none: they fail in the operator)."""
    keys = []
    for part in batch.partitions:
        for kv in part:
            c = kv.__class__
            if (c is tuple or c is list) and len(kv) == 2:
                keys.append(kv[0])
    return keys


def _group_all(batch: Batch[Any]) -> dict[Any, list[Any]]:
    """key -> [values] over all partitions (the per-record hot loop of update_state_by_key)."""
    groups: defaultdict[Any, list[Any]] = defaultdict(list)

    def consume(it: Any, f: Any) -> None:
        kv: Any = None
        try:
            if f is not None:  # the batch ends with map(f): called here, inlined (see Batch._consume_mapped)
                for x in it:
                    kv = f(x)
                    if kv.__class__ is not tuple:
                        kv = as_pair(kv, "update_state_by_key")
                    k, v = kv
                    groups[k].append(v)
                return
            for kv in it:
                if kv.__class__ is not tuple:
                    kv = as_pair(kv, "update_state_by_key")
                k, v = kv  # unpacked, not indexed: a 3-tuple must not lose its third element silently
                groups[k].append(v)
        except TypeError as exc:
            check_key(exc, kv, "update_state_by_key")
            raise
        except ValueError as exc:
            check_length(exc, kv, "update_state_by_key")
            raise

    for i in range(batch.num_partitions):
        batch._consume_mapped(i, consume)
    return groups


class MapWithStateRuntime(_Keyed):
    """`map_with_state`, with optional idle timeout (values stored as [state, last_ms]).

    A state the function changed in place (``state.get().append(x)``) is persisted as if
    ``update()`` had been called: after ``get()``, a mutable state is marked changed. An
    output that may share objects with a mutable state is detached (copied), so a batch's
    output never changes when a later batch changes the state in place.
    """

    node: MapWithStateNode

    def seed(self) -> None:
        timed = self.node.timeout_ms is not None
        for k, v in self.node.initial:
            v = _seed_value(v)
            self.store.put(k, (v, -1) if timed else v)  # -1: stamped at the first batch

    def load(self, snapshot: dict[str, Any] | None, deltas: list[dict[str, Any]]) -> None:
        base = snapshot["set"] if snapshot else ()
        if isinstance(base, Columns) and self.node.timeout_ms is None:
            # A big snapshot with a key index: batches look their keys up until the dict is built (no
            # timeout: a timed-out check reads every key each batch, so that state is loaded at once).
            self.store.load_lazy(base)
            for d in deltas:
                self.store.apply_delta(d["set"], d["del"], d.get(MOVED, ()))
            return
        super().load(snapshot, deltas)

    def step(self, t: int, parent: Batch[Any] | None) -> Batch[Any] | None:
        if parent is None:
            return None
        node = self.node
        out: list[Any] = []
        handle = State()
        if self.store.lazy:
            self.store.fault(_keys_of(parent))
        for part in parent.partitions:  # no flat copy of the batch
            start: int | None = 0
            while start is not None:
                start = self._records(t, part, start, out, handle)
        if node.timeout_ms is not None:
            self._time_out(t, out, handle)
        return Batch([out], t)

    def _records(self, t: int, part: list[Any], start: int, out: list[Any], handle: State) -> int | None:
        """Run the function over part[start:]; None when done, else where to resume after a dead-lettered record."""
        node = self.node
        f = node.f
        timed = node.timeout_ms is not None
        store = self.store
        data = store.data
        base = len(out) - start  # every record done appends exactly one output
        kv: Any = None
        try:
            for kv in part if start == 0 else part[start:]:
                if kv.__class__ is not tuple:
                    kv = as_pair(kv, "map_with_state")
                key, value = kv
                cur = data.get(key, _ABSENT)
                if timed and cur is not _ABSENT:
                    cur = cur[0]
                handle._bind(key, cur, timing_out=False)
                o = f(key, value, handle)
                if handle._removed:
                    store.delete(key)
                elif handle._updated or (timed and handle._exists) or (handle._read and handle._exists and not _frozen(handle._value)):
                    store.put(key, (handle._value, t) if timed else handle._value)
                if handle._exists and o.__class__ not in _SCALARS and not _frozen(handle._value):
                    o = _detach(o)  # it may be (or hold) the state, which a later record or batch may change in place
                out.append(o)
        except UserFunctionError:
            raise
        except TypeError as exc:
            try:
                check_key(exc, kv, "map_with_state")
            except RecordShapeError as shape:
                raise shape.to_user_error(t, None, None) from shape
            return self._failed(t, exc, part, len(out) - base, handle)
        except ValueError as exc:
            try:
                check_length(exc, kv, "map_with_state")
            except RecordShapeError as shape:
                raise shape.to_user_error(t, None, None) from shape
            return self._failed(t, exc, part, len(out) - base, handle)
        except Exception as exc:
            return self._failed(t, exc, part, len(out) - base, handle)
        return None

    def _failed(self, t: int, exc: Exception, part: list[Any], index: int, handle: State) -> int:
        """Dead-letter part[index] and say where to resume, or raise the error naming the record."""
        node = self.node
        rec = part[index] if index < len(part) else None
        if isinstance(exc, RecordShapeError):
            raise exc.to_user_error(t, None, None) from exc
        if node.dead_letters is None:
            key, value = rec if isinstance(rec, tuple) and len(rec) == 2 else (_ABSENT, _ABSENT)
            raise _user_error(node, t, exc, key, value) from exc
        node.dead_letters.add(node.name, t, rec, exc)
        # What the function changed in place before raising stays in memory: persist it (a replay does the same).
        if handle._read and handle._exists and not _frozen(handle._value) and handle.key in self.store.data:
            timed = node.timeout_ms is not None
            self.store.put(handle.key, (handle._value, t) if timed else handle._value)
        return index + 1

    def _time_out(self, t: int, out: list[Any], handle: State) -> None:
        node = self.node
        store = self.store
        threshold = t - (node.timeout_ms or 0)
        expired = []
        for k, v in list(store.data.items()):
            if v[1] < 0:
                store.put(k, (v[0], t))
            elif v[1] < threshold:
                expired.append((k, v[0]))
        for key, value in expired:
            handle._bind(key, value, timing_out=True)
            try:
                o = node.f(key, None, handle)
            except UserFunctionError:
                raise
            except Exception as exc:
                if node.dead_letters is None:
                    raise _user_error(node, t, exc, key) from exc
                node.dead_letters.add(node.name, t, (key, None), exc)
            else:
                out.append(o if o.__class__ in _SCALARS or _frozen(o) else _detach(o))
            store.delete(key)

    def state_items(self) -> list[tuple[Any, Any]]:
        """Every (key, state) (timestamps stripped), detached from the state (see `_detach`)."""
        self.store.materialize()
        if self.node.timeout_ms is None:
            return _detached_items(self.store.data)
        return [(k, v[0] if v[0].__class__ in _SCALARS else _detach(v[0])) for k, v in self.store.data.items()]


@dataclass(frozen=True, slots=True)
class _EmptyRun:
    """Consecutive parent batches without records, each of `width` empty partitions (a `window` slice).

    It covers the batch times ``start, start + every, ...`` before `until` (None: up to the
    batch being computed, as long as the parent's batches stay so). Stored under its start,
    as ``{"empty": width, "every": every, "until": until}``.
    """

    width: int
    every: int
    until: int | None

    def times(self, start: int, lo: int, hi: int) -> range:
        """The batch times it covers in (lo, hi]."""
        end = hi + 1 if self.until is None else min(self.until, hi + 1)
        first = start if start > lo else start + ((lo - start) // self.every + 1) * self.every
        return range(first, end, self.every)

    def last(self, start: int) -> int | None:
        """The last batch time it covers (None while it lasts)."""
        if self.until is None:
            return None
        return start + (self.until - 1 - start) // self.every * self.every

    def stored(self) -> dict[str, Any]:
        """The checkpoint form."""
        return {"empty": self.width, "every": self.every, "until": self.until}


class WindowRuntime(StatefulRuntime):
    """`window`: keeps the parent's batches (slices) that a future window still needs.

    A parent batch without records is not a slice of its own: consecutive ones with the
    same number of partitions are one `_EmptyRun`, stored under its first batch's time. While
    it lasts, a further empty batch changes nothing, so it costs nothing in the checkpoint
    (a delta per batch, each inlined in the commit records until the next snapshot, before).
    A window expands a run into its batches' empty partitions: outputs, and their partition
    layout, are those of keeping each batch. Slices stored by earlier versions, empty ones
    included, load and give the same windows.
    """

    node: WindowNode

    def __init__(self, node: WindowNode, zero_ms: int) -> None:
        self.node = node
        self.zero_ms = zero_ms
        self.slices: dict[int, Any] = {}
        self._added: list[int] = []
        self._dropped: list[int] = []
        #: the start of the run still lasting (its `_EmptyRun` in `slices` has ``until`` None)
        self._run: int | None = None
        #: slices in `_added` that an earlier delta wrote already (a run since ended): dropped ones must say so
        self._rewritten: set[int] = set()

    def _slice(self, parent: Batch[Any]) -> Any:
        return parent.partitions

    def _holds_records(self, s: Any) -> bool:
        """False when slice `s` holds no record: it is then left to `_empty_batch` rather than stored."""
        return not (type(s) is list and all(type(p) is list and not p for p in s))

    def _empty_batch(self, t: int, s: Any) -> None:
        """Note a parent batch at t without records (slice `s`): start a run, or let the one lasting cover it."""
        run = self._run
        if run is not None:
            cur = self.slices[run]
            if cur.width == len(s) and (t - run) % cur.every == 0:
                return  # covered: nothing changed
        self._end_run(t)
        every = self.node.parents[0].slide_ms if self.node.parents else self.node.slide_ms
        self._put(t, _EmptyRun(len(s), every, None))
        self._run = t

    def _no_batch(self, t: int) -> None:
        """The parent produced no batch at t: a lasting run whose next batch this would have been ends."""
        run = self._run
        if run is not None and (t - run) % self.slices[run].every == 0:
            self._end_run(t)

    def _end_run(self, t: int) -> None:
        """End the run lasting (if any) before batch time t."""
        run = self._run
        if run is None:
            return
        self._run = None
        if run not in self._added:
            self._rewritten.add(run)
        self._put(run, _EmptyRun(self.slices[run].width, self.slices[run].every, t))

    def _put(self, ts: int, s: Any) -> None:
        self.slices[ts] = s
        if ts not in self._added:
            self._added.append(ts)

    def _prune(self, t: int) -> None:
        slide = self.node.slide_ms
        last_valid = self.zero_ms + (t - self.zero_ms) // slide * slide
        horizon = last_valid - self.node.length_ms
        gone = []
        for ts, s in self.slices.items():
            last = s.last(ts) if isinstance(s, _EmptyRun) else ts
            if last is not None and last <= horizon:
                gone.append(ts)
        for ts in gone:
            del self.slices[ts]
            if ts in self._added:
                self._added.remove(ts)
                if ts in self._rewritten:
                    self._dropped.append(ts)
            else:
                self._dropped.append(ts)

    def _in_window(self, t: int) -> list[int]:
        lo = t - self.node.length_ms
        return sorted(ts for ts in self.slices if lo < ts <= t)

    def _ingest(self, t: int, parent: Batch[Any] | None) -> bool:
        if parent is None:
            self._no_batch(t)
        else:
            s = self._slice(parent)
            if self._holds_records(s):
                self._end_run(t)
                self._put(t, s)
            else:
                self._empty_batch(t, s)
        return (t - self.zero_ms) % self.node.slide_ms == 0

    def _window_parts(self, t: int) -> list[Any]:
        """The partitions of the window ending at t: its slices' in time order, runs expanded."""
        lo = t - self.node.length_ms
        timed: list[tuple[int, Any]] = []
        for ts, s in self.slices.items():
            if isinstance(s, _EmptyRun):
                timed.extend((x, [[] for _ in range(s.width)]) for x in s.times(ts, lo, t))
            elif lo < ts <= t:
                timed.append((ts, s))
        timed.sort(key=itemgetter(0))
        return [p for _, s in timed for p in s]

    def step(self, t: int, parent: Batch[Any] | None) -> Batch[Any] | None:
        valid = self._ingest(t, parent)
        out = None
        if valid:
            out = Batch(self._window_parts(t) or [[]], t)
        self._prune(t)
        return out

    @staticmethod
    def _stored(s: Any) -> Any:
        return s.stored() if isinstance(s, _EmptyRun) else s

    def _restored(self, s: Any) -> Any:
        """A slice as loaded (`_SKIP`: nothing to keep)."""
        if isinstance(s, dict):
            return _EmptyRun(int(s["empty"]), int(s["every"]), None if s["until"] is None else int(s["until"]))
        return s

    def delta(self) -> dict[str, Any] | None:
        if not self._added and not self._dropped:
            return None
        d: dict[str, Any] = {"add": [[ts, self._stored(self.slices[ts])] for ts in self._added], "drop": list(self._dropped)}
        if any(isinstance(self.slices[ts], _EmptyRun) for ts in self._added):
            d[EMPTY_RUNS] = True  # written as format 7 (EMPTY_RUN_VERSION): earlier versions would misread it
        self._added = []
        self._dropped = []
        self._rewritten = set()
        return d

    def forget_changes(self) -> None:
        self._added = []
        self._dropped = []
        self._rewritten = set()

    def snapshot(self) -> dict[str, Any]:
        d: dict[str, Any] = {"add": [[ts, self._stored(s)] for ts, s in sorted(self.slices.items())], "drop": []}
        if any(isinstance(s, _EmptyRun) for s in self.slices.values()):
            d[EMPTY_RUNS] = True
        return d

    def load(self, snapshot: dict[str, Any] | None, deltas: list[dict[str, Any]]) -> None:
        slices: dict[int, Any] = {}
        for d in ([snapshot] if snapshot else []) + deltas:
            for ts, s in d["add"]:
                slices[int(ts)] = s
            for ts in d["drop"]:
                slices.pop(int(ts), None)
        self.slices = {}
        self._run = None
        for ts, s in sorted(slices.items()):
            kept = self._restored(s)
            if kept is _SKIP:
                continue
            self.slices[ts] = kept
            if isinstance(kept, _EmptyRun) and kept.until is None:
                self._run = ts
        self._added = []
        self._dropped = []
        self._rewritten = set()

    def key_count(self) -> int:
        return sum(len(p) for s in self.slices.values() if not isinstance(s, _EmptyRun) for p in s)

    def _future_slices(self, last_t: int) -> list[Any]:
        """Slices that a window output after batch `last_t` will contain (runs hold no record: left out)."""
        slide = self.node.slide_ms
        next_valid = self.zero_ms + ((last_t - self.zero_ms) // slide + 1) * slide
        return [s for ts, s in self.slices.items() if ts > next_valid - self.node.length_ms and not isinstance(s, _EmptyRun)]

    def drained(self, last_t: int) -> bool:
        return not any(p for s in self._future_slices(last_t) for p in s)  # a non-empty partition (records may be falsy)


class ReduceWindowRuntime(WindowRuntime):
    """`reduce_by_key_and_window`: slices are per-batch reductions (dicts by key).

    Without `inv_f` each window is reduced from its slices. With `inv_f`, a running
    value per key is kept: each slide adds the new slices and subtracts the expired
    ones, so the work follows the slide, not the window length.
    """

    node: ReduceWindowNode

    def __init__(self, node: ReduceWindowNode, zero_ms: int, stores: StoreFactory = memory_store) -> None:
        super().__init__(node, zero_ms)
        self.running = stores()

    def _holds_records(self, s: Any) -> bool:
        return bool(s)

    def _empty_batch(self, t: int, s: Any) -> None:
        """A batch without records reduces to nothing: not kept (its windows' values and order are the same)."""

    def _restored(self, s: Any) -> Any:
        return dict(s) if s else _SKIP  # an empty slice (stored by earlier versions) holds nothing

    def _slice(self, parent: Batch[Any]) -> Any:
        try:
            return dict(parent.reduce_by_key(self.node.f, 1).partitions[0])
        except UserFunctionError as exc:
            if exc.operator != "reduce_by_key" or exc.__cause__ is None:
                raise  # an upstream fused operator failed: its name is right
            raise _user_error(self.node, parent.batch_time_ms, exc.__cause__) from exc.__cause__

    def step(self, t: int, parent: Batch[Any] | None) -> Batch[Any] | None:
        node = self.node
        valid = self._ingest(t, parent)
        out = None
        if valid:
            try:
                items = self._running(t) if node.inv_f is not None else self._recompute(t)
                if node.filter_f is not None and node.inv_f is None:
                    items = [kv for kv in items if node.filter_f(kv)]
            except UserFunctionError:
                raise
            except Exception as exc:
                raise _user_error(node, t, exc) from exc
            out = _output(items, node.num_partitions, t)
        self._prune(t)
        return out

    def _recompute(self, t: int) -> list[tuple[Any, Any]]:
        f = self.node.f
        acc: dict[Any, Any] = {}
        for ts in self._in_window(t):
            for k, v in self.slices[ts].items():
                if k in acc:
                    acc[k] = f(acc[k], v)
                else:  # f may change its first argument in place: never hand it a slice's value
                    acc[k] = v if v.__class__ in _SCALARS else _detach(v)
        return list(acc.items())

    def _running(self, t: int) -> list[tuple[Any, Any]]:
        node = self.node
        f, inv = node.f, node.inv_f
        assert inv is not None
        store = self.running
        data = store.data
        slide, length = node.slide_ms, node.length_ms
        touched: set[Any] = set()
        for ts in sorted(self.slices):
            if t - slide - length < ts <= t - max(length, slide):  # in the previous window, not this one
                for k, v in self.slices[ts].items():
                    if k in data:
                        store.put(k, inv(data[k], v))
                        touched.add(k)
        for ts in sorted(self.slices):
            if t - min(length, slide) < ts <= t:  # in this window, not the previous one (length may be < slide)
                for k, v in self.slices[ts].items():
                    store.put(k, f(data[k], v) if k in data else v if v.__class__ in _SCALARS else _detach(v))
                    touched.add(k)
        if node.filter_f is not None:
            keep = node.filter_f
            for k in touched:
                if k in data and not keep((k, data[k])):
                    store.delete(k)
        return _detached_items(data)  # the running values change in place at the next slide when f does

    def delta(self) -> dict[str, Any] | None:
        win = super().delta()
        changed, removed, moved = self.running.take_changes()
        if win is None and not changed and not removed:
            return None
        win = win or {"add": [], "drop": []}
        win["add"] = [[ts, list(s.items())] for ts, s in win["add"]]
        win["set"] = changed
        win["del"] = removed
        if moved:
            win[MOVED] = moved
        return win

    def forget_changes(self) -> None:
        super().forget_changes()
        self.running.changed = set()
        self.running.removed = set()
        self.running.forget_fresh()

    def snapshot(self) -> dict[str, Any]:
        return {
            "add": [[ts, list(s.items())] for ts, s in sorted(self.slices.items())],
            "drop": [],
            "set": list(self.running.data.items()),
            "del": [],
        }

    def load(self, snapshot: dict[str, Any] | None, deltas: list[dict[str, Any]]) -> None:
        super().load(snapshot, deltas)
        self.running.load(snapshot["set"] if snapshot else ())
        for d in deltas:
            self.running.apply_delta(d["set"], d["del"], d.get(MOVED, ()))

    def key_count(self) -> int:
        return len(self.running) + sum(len(s) for s in self.slices.values())

    def drained(self, last_t: int) -> bool:
        return not any(self._future_slices(last_t))

