"""`MemoryStateStore`: a dict with changed/removed key tracking (the default store)."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any

from streamkeep._types import Key


class MemoryStateStore:
    """Keyed state in a dict. Operators may read `data` directly on hot paths,
    but must write through `put`/`delete` (or add the key to `changed` after
    changing a value in place) so deltas stay right."""

    __slots__ = ("changed", "data", "removed")

    def __init__(self) -> None:
        self.data: dict[Key, Any] = {}
        self.changed: set[Key] = set()
        self.removed: set[Key] = set()

    def get(self, key: Key, default: Any = None) -> Any:
        """The value of `key`, or `default`."""
        return self.data.get(key, default)

    def put(self, key: Key, value: Any) -> None:
        """Set `key` and mark it changed."""
        self.data[key] = value
        self.changed.add(key)

    def delete(self, key: Key) -> None:
        """Remove `key` if present and mark it removed."""
        if key in self.data:
            del self.data[key]
            self.changed.discard(key)
            self.removed.add(key)

    def __contains__(self, key: object) -> bool:
        return key in self.data

    def __len__(self) -> int:
        return len(self.data)

    def items(self) -> Iterator[tuple[Key, Any]]:
        """Every (key, value)."""
        return iter(self.data.items())

    def take_delta(self) -> tuple[list[tuple[Key, Any]], list[Key]]:
        """(changed items, removed keys) since the last call; resets the tracking."""
        data = self.data
        changed = [(k, data[k]) for k in self.changed if k in data]
        removed = [k for k in self.removed if k not in data]
        self.changed = set()
        self.removed = set()
        return changed, removed

    def load(self, items: Iterable[tuple[Key, Any]] | dict[Key, Any]) -> None:
        """Replace the content with `items` (a dict is taken over, not copied); clears the tracking."""
        self.data = items if type(items) is dict else dict(items)
        self.changed = set()
        self.removed = set()

    def apply_delta(self, changed: Iterable[tuple[Key, Any]], removed: Iterable[Key]) -> None:
        """Apply a delta read back from a checkpoint; clears the tracking."""
        self.data.update(changed)
        for k in removed:
            self.data.pop(k, None)
        self.changed = set()
        self.removed = set()
