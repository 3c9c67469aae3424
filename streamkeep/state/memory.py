"""`MemoryStateStore`: a dict with changed/removed key tracking (the default store).

A store restored from a big snapshot may start *lazy* (`MemoryStateStore.load_lazy`):
building a dict of a million keys takes about half a second, so the snapshot's keys stay
in their columns (with a sorted index) and only the keys a batch touches are copied into
``data`` (`MemoryStateStore.fault`), while a background thread builds the whole dict; the
store switches to it at a later `fault`, or at once when anything needs every key.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable, Iterator
from itertools import islice
from typing import Any

from streamkeep._columns import Columns
from streamkeep._types import Key

#: A value no state holds (`MemoryStateStore.take_changes` tells a changed key that is gone by it).
_ABSENT: Any = object()

#: Keys the background thread inserts per step (it gives the interpreter lock back between steps).
_BUILD_STEP = 16384


class _Lazy:
    """The not yet loaded part of a lazy store: the snapshot's columns, and the dict being built of them."""

    __slots__ = ("base", "cancelled", "faults", "full", "gone", "key_type", "thread")

    def __init__(self, base: Columns) -> None:
        self.base = base
        self.key_type = base.key_type
        #: keys removed since the store was loaded (a base key in here is absent unless ``data`` has it again)
        self.gone: set[Key] = set()
        self.full: dict[Key, Any] | None = None  # the base as a dict, once built
        self.thread: threading.Thread | None = None
        self.cancelled = False
        self.faults = 0

    def build(self) -> None:
        """Build the base's dict (in steps, so another thread gets the interpreter lock between them)."""
        base = self.base
        full: dict[Key, Any] = {}
        pairs = zip(base.keys, base.values, strict=False)
        for _ in range(0, len(base.keys), _BUILD_STEP):
            if self.cancelled:
                return
            full.update(islice(pairs, _BUILD_STEP))
        self.full = full

    def start(self) -> None:
        self.thread = threading.Thread(target=self.build, name="streamkeep-state-load", daemon=True)
        self.thread.start()

    def finish(self) -> dict[Key, Any]:
        """The base's dict: waits for the thread, or builds it here if none was started."""
        if self.thread is not None:
            self.thread.join()
        if self.full is None:
            self.build()
        assert self.full is not None
        return self.full


class MemoryStateStore:
    """Keyed state in a dict. Operators may read `data` directly on hot paths,
    but must write through `put`/`delete` (or add the key to `changed` after
    changing a value in place) so deltas stay right.

    After `load_lazy`, `data` holds only the keys `fault` copied in (plus the keys set
    since): an operator reading `data` directly calls `fault` with the keys first, or
    `materialize` when it needs every key. The other methods do that themselves.
    """

    __slots__ = ("_lazy", "changed", "data", "fresh", "removed")

    def __init__(self) -> None:
        self.data: dict[Key, Any] = {}
        self.changed: set[Key] = set()
        self.removed: set[Key] = set()
        #: the values `put` set since the last `take_changes`: its items without a lookup in ``data``, which in a
        #: big state costs cache misses per key (~1 us per key with 1M keys: the delta's cost would follow the
        #: state's size). An operator that writes ``data`` directly after a `put` must call `forget_fresh`.
        self.fresh: dict[Key, Any] = {}
        self._lazy: _Lazy | None = None

    def get(self, key: Key, default: Any = None) -> Any:
        """The value of `key`, or `default`."""
        if self._lazy is not None:
            self._fault((key,))
        return self.data.get(key, default)

    def put(self, key: Key, value: Any) -> None:
        """Set `key` and mark it changed."""
        self.data[key] = value
        self.changed.add(key)
        self.fresh[key] = value

    def delete(self, key: Key) -> None:
        """Remove `key` if present and mark it removed."""
        if self._lazy is not None:
            self._fault((key,))
        self.fresh.pop(key, None)
        if key in self.data:
            del self.data[key]
            self.changed.discard(key)
            self.removed.add(key)

    def __contains__(self, key: object) -> bool:
        if self._lazy is not None:
            self._fault((key,))
        return key in self.data

    def __len__(self) -> int:
        self.materialize()
        return len(self.data)

    def items(self) -> Iterator[tuple[Key, Any]]:
        """Every (key, value)."""
        self.materialize()
        return iter(self.data.items())

    def take_delta(self) -> tuple[list[tuple[Key, Any]], list[Key]]:
        """(changed items, removed keys) since the last call; resets the tracking.

        The items come in the order `apply_delta` needs to rebuild ``data`` in its own key
        order, except for keys removed and set again since the last call (see `take_changes`).
        """
        changed, removed, _ = self.take_changes()
        return changed, removed

    def take_changes(self) -> tuple[list[tuple[Key, Any]], list[Key], list[Key]]:
        """(changed items, removed keys, moved keys) since the last call; resets the tracking.

        Applied with `apply_delta` to the state of the previous call, they rebuild ``data``
        with its keys in the same order (what the operators' outputs follow). A dict puts a
        new key last, keeps a set key in place, and puts a key removed and set again last:
        so every key added since the previous call is among the items' *tail* -- the
        longest run of changed keys at the end of ``data`` -- which comes last, in
        ``data``'s order (found walking ``data`` backwards: its length, no more); a
        removed-and-set-again key is also *moved* (taken out before the items go in). The
        other changed keys (set in place) come first, in any order.
        """
        data = self.data
        changed_keys = self.changed
        if not changed_keys:
            changed: list[tuple[Key, Any]] = []
        elif len(changed_keys) == len(data) and changed_keys == data.keys():  # every key (checked in C): data's order
            changed = list(data.items())
        else:
            tail: list[Key] = []
            add = tail.append
            for k in reversed(data):
                if k not in changed_keys:
                    break
                add(k)
            tail.reverse()
            if len(tail) == len(changed_keys):
                changed = [(k, data[k]) for k in tail]
            else:
                # Values `put` set come from `fresh` (small, just written); others (set in place) from ``data``,
                # one lookup each (`get`, not `in` then `[]`): in a big state each is a cache miss or two.
                rest = changed_keys.difference(tail) if tail else changed_keys
                get, known = data.get, self.fresh.get
                changed = [(k, v) for k in rest if (v := known(k, _ABSENT)) is not _ABSENT or (v := get(k, _ABSENT)) is not _ABSENT]
                changed += [(k, data[k]) for k in tail]
        removed: list[Key] = []
        moved: list[Key] = []
        for k in self.removed:
            (moved if k in data else removed).append(k)
        self.forget_changes()
        return changed, removed, moved

    def forget_changes(self) -> None:
        """Reset the tracking (the changes are persisted, or need not be)."""
        if self._lazy is not None:
            self._lazy.gone |= self.removed  # a removed key re-added since is in `data` again
        self.changed = set()
        self.removed = set()
        self.fresh = {}

    def forget_fresh(self) -> None:
        """Forget the values `put` set (see ``fresh``): for an operator about to write ``data`` directly."""
        self.fresh = {}

    def load(self, items: Iterable[tuple[Key, Any]] | dict[Key, Any]) -> None:
        """Replace the content with `items` (a dict is taken over, not copied); clears the tracking."""
        self._drop_lazy()
        if type(items) is dict:
            self.data = items
        elif isinstance(items, Columns):
            self.data = items.to_dict()
        else:
            self.data = dict(items)
        self.changed = set()
        self.removed = set()
        self.fresh = {}

    def load_lazy(self, base: Columns) -> None:
        """Replace the content with `base` without building its dict now, if it has a key index (else `load`).

        Until the dict is built (by a background thread started at the second `fault`, or by
        `materialize`), `fault` copies the keys a batch needs into `data` by binary search.
        """
        if base.order is None or not base.keys or base.key_type is None:
            self.load(base)
            return
        self.load({})
        self._lazy = _Lazy(base)

    def apply_delta(self, changed: Iterable[tuple[Key, Any]], removed: Iterable[Key], moved: Iterable[Key] = ()) -> None:
        """Apply a delta read back from a checkpoint (see `take_changes`); clears the tracking."""
        data = self.data
        moved = tuple(moved)
        for k in moved:  # removed and set again: set last, as the dict of the run that wrote it has it
            data.pop(k, None)
        data.update(changed)
        for k in removed:
            data.pop(k, None)
        if self._lazy is not None:
            self._lazy.gone.update(removed)
            self._lazy.gone.update(moved)  # a base key moved: its place is in `data`, not the base's
        self.changed = set()
        self.removed = set()
        self.fresh = {}

    @property
    def lazy(self) -> bool:
        """True while `data` may lack keys of the loaded snapshot (see `load_lazy`)."""
        return self._lazy is not None

    def fault(self, keys: Iterable[Key]) -> None:
        """Make sure `data` holds every one of `keys` that the state holds (no-op unless `lazy`).

        Called once per batch by an operator that reads `data` directly, with the batch's keys.
        """
        lz = self._lazy
        if lz is None:
            return
        lz.faults += 1
        if lz.full is not None:
            self._switch()  # only here (and in `materialize`): never while an operator holds `data`
            return
        if lz.faults == 2 and lz.thread is None:
            lz.start()  # from the second batch on: the first one after a restart runs alone
        self._fault(keys)

    def _fault(self, keys: Iterable[Key]) -> None:
        lz = self._lazy
        assert lz is not None
        data, gone, removed, base, kt = self.data, lz.gone, self.removed, lz.base, lz.key_type
        values = base.values
        try:
            for k in keys:
                if k in data or k in gone or k in removed:
                    continue
                if type(k) is not kt:  # the index cannot answer (equal keys of other types): load everything
                    self.materialize()
                    return
                i = base.find(k)
                if i >= 0:
                    data[k] = values[i]
        except (TypeError, IndexError):  # an unhashable key (the operator raises its error), or a bad index: load all
            self.materialize()

    def materialize(self) -> None:
        """Make `data` hold every key (no-op unless `lazy`); waits for (or does) the building of the dict."""
        if self._lazy is not None:
            self._lazy.finish()
            self._switch()

    def _switch(self) -> None:
        """Replace `data` by the built dict with every change since the load applied, in the same key order."""
        lz = self._lazy
        assert lz is not None and lz.full is not None
        full = lz.full
        for k in lz.gone | self.removed:  # removed (and maybe re-added since: then at the end, as in a dict)
            full.pop(k, None)
        full.update(self.data)  # a base key keeps its place; a new (or re-added) one follows, in order
        self.data = full
        self._lazy = None

    def _drop_lazy(self) -> None:
        if self._lazy is not None:
            self._lazy.cancelled = True
            self._lazy = None
