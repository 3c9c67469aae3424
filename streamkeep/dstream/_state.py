"""`State`: the handle `map_with_state` functions receive for one key."""

from __future__ import annotations

from typing import Any

from streamkeep.errors import StateError

_ABSENT: Any = object()


class State:
    """The state of one key inside a `map_with_state` function.

    One handle is reused for every record of a batch; do not keep it after the
    function returns.
    """

    __slots__ = ("_exists", "_read", "_removed", "_timing_out", "_updated", "_value", "key")

    def __init__(self) -> None:
        self._bind(None, _ABSENT, timing_out=False)

    def _bind(self, key: Any, value: Any, *, timing_out: bool) -> None:
        self.key = key
        self._value = value
        self._exists = value is not _ABSENT
        self._updated = False
        self._removed = False
        self._read = False
        self._timing_out = timing_out

    def exists(self) -> bool:
        """True when the key has state."""
        return self._exists

    def get(self) -> Any:
        """The key's state; StateError if it has none (check `exists()` first).

        A mutable state (a list, dict, ...) may be changed in place: it is then
        checkpointed as changed, exactly as if ``update()`` had been called with it.
        """
        if not self._exists:
            msg = f"map_with_state: key {self.key!r} has no state; check state.exists() before state.get()"
            raise StateError(msg)
        self._read = True
        return self._value

    def get_option(self, default: Any = None) -> Any:
        """The key's state, or `default` when it has none (changes in place persist, as with `get`)."""
        self._read = True
        return self._value if self._exists else default

    def update(self, value: Any) -> None:
        """Set the key's state (not allowed while it is timing out)."""
        if self._timing_out:
            msg = f"map_with_state: key {self.key!r} is timing out; its state cannot be updated, only read"
            raise StateError(msg)
        if value is None:
            msg = "map_with_state: state.update(None) is not allowed; call state.remove() to drop the key"
            raise StateError(msg)
        self._value = value
        self._exists = True
        self._updated = True
        self._removed = False

    def remove(self) -> None:
        """Drop the key's state."""
        if self._timing_out:
            return
        self._value = _ABSENT
        self._exists = False
        self._removed = True
        self._updated = False

    def is_timing_out(self) -> bool:
        """True when the function is called because the key timed out (value is None)."""
        return self._timing_out

    def __repr__(self) -> str:
        return f"State(key={self.key!r}, value={self._value if self._exists else '<none>'!r})"
