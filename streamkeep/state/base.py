"""The `StateStore` interface: keyed state of one operator partition, with change tracking.

A store knows which keys changed since the last checkpoint, so a checkpoint
writes only those (a delta), and can load a snapshot plus deltas back.
Must not import operators, sources, sinks, executors or the scheduler.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any, Protocol

from streamkeep._types import Key


class StateStore(Protocol):
    """Keyed state with dirty tracking."""

    def get(self, key: Key, default: Any = None) -> Any:
        """The value of `key`, or `default`."""

    def put(self, key: Key, value: Any) -> None:
        """Set `key` (marks it changed)."""

    def delete(self, key: Key) -> None:
        """Remove `key` (marks it removed)."""

    def __contains__(self, key: object) -> bool: ...

    def __len__(self) -> int: ...

    def items(self) -> Iterator[tuple[Key, Any]]:
        """Every (key, value)."""

    def take_delta(self) -> tuple[list[tuple[Key, Any]], list[Key]]:
        """(changed items, removed keys) since the last call; resets the tracking."""

    def take_changes(self) -> tuple[list[tuple[Key, Any]], list[Key], list[Key]]:
        """(changed items, removed keys, moved keys) since the last call; resets the tracking.

        Moved keys were removed and set again: a reader takes them out before applying the
        items, so they go last as in the writer's state (the key order outputs follow).
        """

    def load(self, items: Iterable[tuple[Key, Any]]) -> None:
        """Replace the content with `items` (a snapshot); clears the tracking."""

    def apply_delta(self, changed: Iterable[tuple[Key, Any]], removed: Iterable[Key], moved: Iterable[Key] = ()) -> None:
        """Apply a delta read back from a checkpoint: take `moved` out, set `changed`, drop `removed`; clears the tracking."""
