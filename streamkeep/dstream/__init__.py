"""DStream: the lazy operator graph and the user-facing operators."""

from __future__ import annotations

from streamkeep.dstream._dstream import DStream, MapWithStateDStream
from streamkeep.dstream._event_time import EventTimeDStream, EventWindowDStream, EventWindows, WindowResult
from streamkeep.dstream._state import State

__all__ = ["DStream", "EventTimeDStream", "EventWindowDStream", "EventWindows", "MapWithStateDStream", "State", "WindowResult"]
