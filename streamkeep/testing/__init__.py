"""Public test helpers: `ManualClock`, `ListSink`, `run_batches`, `CrashAt`, `state_of`, `key_count_of`,
`stateful_operators_of`.

Conformance suites for your own source or sink: `check_source`, `check_sink`
(`streamkeep.testing.conformance`; see docs/architecture.md).

Example:
    >>> from streamkeep.testing import run_batches
    >>> def setup(ssc, stream):
    ...     return stream.map(lambda x: x * 2)
    >>> run_batches(setup, [[1, 2], [3]])
    [[2, 4], [6]]
"""

from __future__ import annotations

from streamkeep._clock import ManualClock
from streamkeep.testing._helpers import CrashAt, ListSink, key_count_of, run_batches, state_of, stateful_operators_of
from streamkeep.testing.conformance import check_sink, check_source

__all__ = ["CrashAt", "ListSink", "ManualClock", "check_sink", "check_source", "key_count_of", "run_batches", "state_of", "stateful_operators_of"]

for _public in (ManualClock, ListSink, CrashAt):
    _public.__module__ = __name__
del _public
