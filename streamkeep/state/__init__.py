"""Keyed state stores: the `StateStore` interface and its in-memory implementation."""

from __future__ import annotations

from streamkeep.state.base import StateStore
from streamkeep.state.memory import MemoryStateStore

__all__ = ["MemoryStateStore", "StateStore"]
