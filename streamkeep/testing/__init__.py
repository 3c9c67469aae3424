"""Public test helpers: `ManualClock`, `ListSink`, `run_batches`, `CrashAt`, `state_of`, `key_count_of`.

Example:
    >>> from streamkeep.testing import run_batches
    >>> def setup(ssc, stream):
    ...     return stream.map(lambda x: x * 2)
    >>> run_batches(setup, [[1, 2], [3]])
    [[2, 4], [6]]
"""

from __future__ import annotations

from streamkeep._clock import ManualClock
from streamkeep.testing._helpers import CrashAt, ListSink, key_count_of, run_batches, state_of

__all__ = ["CrashAt", "ListSink", "ManualClock", "key_count_of", "run_batches", "state_of"]

for _public in (ManualClock, ListSink, CrashAt):
    _public.__module__ = __name__
del _public
