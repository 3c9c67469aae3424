"""A few daemon threads that run chunks of one batch's column kernels side by side.

pyarrow's compute kernels release the GIL, so a kernel over a big column split
into contiguous chunks runs on several cores at once (the caller's thread takes
the first chunk, the workers the others). Used by `aggregate_state`
(streamkeep/executors/_tables.py) for its hash probes of big batches; the
results are put back together in chunk order, so they are exactly those of one
call over the whole column.

The threads are started on first use, are daemons (a process never waits for
them at exit) and stop with `Workers.close` (the executor's ``close``) or when
their owner is garbage-collected.
"""

from __future__ import annotations

import queue
import threading
import weakref
from collections.abc import Callable, Sequence
from typing import Any

#: Most threads one kernel is split over (more cost a hash build each and gain little on 2-4 cores).
MAX_THREADS = 4

_STOP = None


def _work(jobs: queue.SimpleQueue[Any]) -> None:
    while True:
        job = jobs.get()
        if job is _STOP:
            return
        fn, arg, done = job
        try:
            done.put((True, fn(arg)))
        except BaseException as exc:  # noqa: BLE001 - handed to the caller, which re-raises it
            done.put((False, exc))


def _stop(jobs: queue.SimpleQueue[Any], n: int) -> None:
    for _ in range(n):
        jobs.put(_STOP)


class Workers:
    """`n` daemon threads taking jobs from one queue; `map` runs the first item in the calling thread."""

    def __init__(self, n: int, name: str) -> None:
        self._jobs: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._n = n
        for i in range(n):
            threading.Thread(target=_work, args=(self._jobs,), name=f"{name}-{i + 1}", daemon=True).start()
        self._finalizer = weakref.finalize(self, _stop, self._jobs, n)

    def map(self, fn: Callable[[Any], Any], items: Sequence[Any]) -> list[Any]:
        """``[fn(x) for x in items]``, the items after the first on the worker threads; the first exception
        (in item order) is raised once every item has finished."""
        dones: list[queue.SimpleQueue[Any]] = []
        for item in items[1:]:
            done: queue.SimpleQueue[Any] = queue.SimpleQueue()
            self._jobs.put((fn, item, done))
            dones.append(done)
        results: list[tuple[bool, Any]] = []
        try:
            results.append((True, fn(items[0])))
        except BaseException as exc:  # noqa: BLE001 - re-raised below, after the workers' items finished
            results.append((False, exc))
        results.extend(d.get() for d in dones)  # always wait: a worker must not outlive the batch it reads
        for ok, value in results:
            if not ok:
                raise value
        return [value for _, value in results]

    def close(self) -> None:
        """Stop the threads (they finish the job they run)."""
        self._finalizer()
