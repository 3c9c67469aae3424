"""Clocks: the wall clock and `ManualClock` for tests (no sleeping)."""

from __future__ import annotations

import threading
import time


class WallClock:
    """Real time."""

    def now_ms(self) -> int:
        """Milliseconds since the epoch."""
        return int(time.time() * 1000)

    def wait_until(self, t_ms: int, stop: threading.Event) -> bool:
        """Sleep until `t_ms` or until `stop` is set; True if the time was reached."""
        while not stop.is_set():
            delay = (t_ms - self.now_ms()) / 1000.0
            if delay <= 0:
                return True
            stop.wait(min(delay, 0.25))
        return False


class ManualClock:
    """A clock that moves only when a test calls `advance` or `set`.

    Example:
        >>> clock = ManualClock()
        >>> clock.advance(1.5)
        >>> clock.now_ms()
        1500
    """

    def __init__(self, start_ms: int = 0) -> None:
        self._now = int(start_ms)
        self._cond = threading.Condition()

    def now_ms(self) -> int:
        """The current manual time in ms."""
        with self._cond:
            return self._now

    def set(self, t_ms: int) -> None:
        """Move to `t_ms` (never backwards)."""
        with self._cond:
            self._now = max(self._now, int(t_ms))
            self._cond.notify_all()

    def advance(self, seconds: float) -> None:
        """Move forward by `seconds`."""
        with self._cond:
            self._now += round(seconds * 1000)
            self._cond.notify_all()

    def wait_until(self, t_ms: int, stop: threading.Event) -> bool:
        """Block until the manual time reaches `t_ms` or `stop` is set."""
        with self._cond:
            while self._now < t_ms:
                if stop.is_set():
                    return False
                self._cond.wait(0.05)
        return not stop.is_set()
