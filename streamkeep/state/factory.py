"""Where stateful runtimes get their state stores: a `StoreFactory`.

A runtime never builds a store class itself; it calls the factory it was given
(default `memory_store`). An executor that keeps state elsewhere passes its own.
"""

from __future__ import annotations

from collections.abc import Callable

from streamkeep.state.memory import MemoryStateStore

#: Makes one empty state store for one stateful operator (or one part of its state).
StoreFactory = Callable[[], MemoryStateStore]


def memory_store() -> MemoryStateStore:
    """An empty in-memory state store (the default `StoreFactory`)."""
    return MemoryStateStore()


__all__ = ["StoreFactory", "memory_store"]
