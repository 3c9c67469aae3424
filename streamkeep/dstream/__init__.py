"""DStream: the lazy operator graph and the user-facing operators."""

from __future__ import annotations

from typing import TYPE_CHECKING

from streamkeep._util import lazy_exports
from streamkeep.dstream._dstream import DStream, MapWithStateDStream
from streamkeep.dstream._state import State

if TYPE_CHECKING:
    from streamkeep.dstream._event_time import EventTimeDStream, EventWindowDStream, EventWindows, WindowResult

__all__ = ["DStream", "EventTimeDStream", "EventWindowDStream", "EventWindows", "MapWithStateDStream", "State", "WindowResult"]

# Event-time windows load with the first job that uses them (`with_event_time`), not with every job.
if not TYPE_CHECKING:  # type checkers read the imports above: a module __getattr__ would make every other name Any
    __getattr__, __dir__ = lazy_exports(
        __name__,
        dict.fromkeys(["EventTimeDStream", "EventWindowDStream", "EventWindows", "WindowResult"], "streamkeep.dstream._event_time"),
    )
