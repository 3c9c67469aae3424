"""`Lane`: one background thread that runs a batch loop's checkpoint writes in order, off its critical path.

The batch loop encodes what a batch writes (its plan, its state deltas, its commit
record) itself -- later batches mutate the state, so nothing it hands over may alias
it -- and gives the writing and flushing to a lane. Tasks run one at a time, in the
order submitted, each keyed by its batch time. The loop waits only where the protocol
needs it: for a plan before the batch's outputs, for commits before anything that must
follow a durable commit (a source's offset commit, listeners, retention, a stop).

A lane is bounded: at most `depth` tasks queued or running; `submit` blocks while full
(back-pressure; past `STALL_S` the cyclic collector runs while it waits: see
`streamkeep._util.gc_resumed`). The first task that fails stops the lane: no later task runs (a later
commit could name a file an earlier task failed to write), and the error is raised by
the next `submit`, `wait`, `check` or `drain`, once: it is never swallowed.

Imports the standard library, streamkeep._util and streamkeep.errors.
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Callable
from typing import Any

from streamkeep._util import gc_resumed
from streamkeep.errors import CheckpointError

#: How long `Lane.submit` waits for room before it lets the cyclic collector run (see `gc_resumed`).
STALL_S = 0.5


class Lane:
    """Runs tasks in order on one daemon thread, at most `depth` in flight.

    Args:
        name: the thread's name.
        depth: tasks queued or running at most; `submit` blocks while this many are.
    """

    def __init__(self, name: str, depth: int) -> None:
        self.name = name
        self.depth = max(1, depth)
        self._cv = threading.Condition()
        self._queue: deque[tuple[int, Callable[[], Any]]] = deque()
        self._running: int | None = None  # key of the task in progress
        self._results: dict[int, Any] = {}  # finished tasks' results, until `take_done`
        self._error: BaseException | None = None
        self._failed_key: int | None = None
        self._reported = False
        self._thread: threading.Thread | None = None
        self._closed = False

    def submit(self, key: int, task: Callable[[], Any]) -> None:
        """Queue `task` (keyed by batch time `key`); block while the lane is full.

        Raises:
            BaseException: an earlier task's error (the lane runs nothing more).
        """
        with self._cv:
            if self._full() and not self._cv.wait_for(lambda: not self._full(), STALL_S):
                with gc_resumed():  # a stalled disk: the collector runs while the batch waits
                    self._cv.wait_for(lambda: not self._full())
            self._raise()
            if self._closed:  # stop() gave up waiting for a batch still running: it must not commit
                msg = f"{self.name}: the job was stopped, so batch {key} ms is not written to the checkpoint (the next start replays it)"
                raise CheckpointError(msg)
            self._queue.append((key, task))
            if self._thread is None:
                self._thread = threading.Thread(target=self._work, name=self.name, daemon=True)
                self._thread.start()
            self._cv.notify_all()

    def _full(self) -> bool:
        return self._error is None and not self._closed and len(self._queue) + (self._running is not None) >= self.depth

    def busy(self) -> bool:
        """True while a task is queued or running."""
        with self._cv:
            return bool(self._queue) or self._running is not None

    def pending(self, key: int) -> bool:
        """True while the task of `key` is queued or running."""
        with self._cv:
            return self._running == key or any(k == key for k, _ in self._queue)

    def wait(self, key: int) -> None:
        """Wait until the task of `key` (and every one before it) is done; raise the lane's error.

        Not the error of a later task (submitted ahead, e.g. the next batch's plan): `key`'s
        own task was done before it; that error is for whoever waits for that task (or
        `check`, `drain`, `submit`).
        """
        def done() -> bool:
            return self._error is not None or not (self._running == key or any(k == key for k, _ in self._queue))

        with self._cv:
            if not done() and not self._cv.wait_for(done, STALL_S):
                with gc_resumed():  # a stalled disk: the collector runs while the batch waits
                    self._cv.wait_for(done)
            if self._failed_key is None or self._failed_key <= key:
                self._raise()

    def drain(self) -> None:
        """Wait until every task is done; raise the lane's error (once)."""
        with self._cv:
            while self._error is None and (self._queue or self._running is not None):
                self._cv.wait()
            self._raise()

    def settled(self, before: int) -> bool:
        """Wait until no task keyed before `before` is queued or running: True; False if the lane failed (the error stays)."""
        with self._cv:
            while self._error is None and ((self._running is not None and self._running < before) or any(k < before for k, _ in self._queue)):
                self._cv.wait()
            return self._error is None

    def check(self) -> None:
        """Raise the lane's error, if a task failed (once)."""
        with self._cv:
            self._raise()

    def failed(self) -> bool:
        """True once a task failed, whether its error was raised already or not (the lane runs nothing more)."""
        with self._cv:
            return self._error is not None

    def take_done(self) -> list[tuple[int, Any]]:
        """The finished tasks' (key, result) since the last call, in order."""
        with self._cv:
            out = sorted(self._results.items())
            self._results.clear()
            return out

    def close(self) -> BaseException | None:
        """Wait for the tasks in flight, stop the thread; the error not yet raised, if any."""
        with self._cv:
            while self._error is None and (self._queue or self._running is not None):
                self._cv.wait()
            self._closed = True
            self._cv.notify_all()
            err = None if self._reported else self._error
            self._reported = True
        th = self._thread
        if th is not None and th is not threading.current_thread():
            th.join()
        return err

    def _raise(self) -> None:
        err = self._error
        if err is not None and not self._reported:
            self._reported = True
            raise err
        if err is not None:  # already raised once: the lane stays stopped
            msg = f"{self.name}: a checkpoint write failed earlier (batch {self._failed_key} ms), so nothing more is written: {err}"
            raise CheckpointError(msg) from err

    def _work(self) -> None:
        while True:
            with self._cv:
                while not self._queue and not self._closed:
                    self._cv.wait()
                if not self._queue:
                    return
                key, task = self._queue.popleft()
                self._running = key
            try:
                result = task()
            except BaseException as exc:
                with self._cv:
                    self._error, self._failed_key, self._running = exc, key, None
                    self._queue.clear()  # a later task may depend on this one's writes: run none
                    self._cv.notify_all()
                return
            with self._cv:
                self._results[key] = result
                self._running = None
                self._cv.notify_all()
