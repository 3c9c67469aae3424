"""A mid-size ``map_with_state`` job a cron script runs two batches at a time, exiting without ``stop()``.

Usage: ``python _exit_job.py CKPT [--fork]``. Each run resumes with get_or_create (the first seeds
`KEYS` keys: well over ``BIG_STATE_BYTES``, so the next batch does not wait for a snapshot merge),
runs ``run(max_batches=2)`` and ends without ``ssc.stop()``. With ``snapshot_every=3`` a run's
batches often start a merge that is still in flight when the script ends: the context's at-exit
hook waits for it and names it in one more commit record. With ``--fork`` the script forks after
``run()``; the child prints ``CHILD <pid>`` and exits through the interpreter's at-exit hooks, the
parent waits for it, then exits. With ``--hold-merge`` every merge hangs (merged in this process,
never done) and the at-exit wait is bounded to 0.5 s (``EXIT_MERGE_WAIT_S``). With ``--failed-start``
the script then starts a second job (no checkpoint) that fails in its first batch and is never
awaited, so the process exits 1 through streamkeep's last at-exit hook (``os._exit``). Log lines are
prefixed with the pid that wrote them, except with ``--cli-logging`` (run by ``streamkeep run``, whose
log handler shows them until the script ends). With ``--thread`` ``run()`` (no ``max_batches``) runs in a
daemon thread and the main thread ends once batch 4 ran (the job still running). With ``--ctrl-c``
(and ``--hold-merge``, whose bound is then 600 s) a Ctrl-C (SIGINT) comes while the at-exit stop waits
for the merge. With ``--contexts N`` (and ``--hold-merge``) N-1 more contexts, on ``CKPT-1`` ..., run 4 batches
each and exit without ``stop()`` too, and each at-exit stop prints ``EXIT-WAIT <s>``: the merge wait it was given.
"""

from __future__ import annotations

import logging
import os
import signal
import sys
import threading
import time
from typing import Any

import streamkeep as sk
from streamkeep import context
from streamkeep.scheduler import _state_writer
from streamkeep.testing import ManualClock

#: Keys of state: encoded, well over BIG_STATE_BYTES (~7 bytes a key).
KEYS = 60_000


def bump(key: str, value: int, state: sk.State) -> None:
    state.update(state.get_option(0) + value)


def build(url: str, *, seed: bool) -> sk.StreamingContext:
    ssc = sk.StreamingContext(1.0, checkpoint=url, clock=ManualClock(), snapshot_every=3, inline_delta_bytes=0)
    initial = [(f"k{i}", 0) for i in range(KEYS)] if seed else None
    pairs = ssc.rate_stream(500, name="rate").map(lambda r: (f"k{(r[0] * 7919) % KEYS}", 1))
    pairs.map_with_state(bump, name="state", initial=initial).foreach_batch(lambda b: None)
    return ssc


def main() -> int:
    if "--cli-logging" not in sys.argv[2:]:  # under `streamkeep run`: its own log handler, until the script ends
        logging.basicConfig(level=logging.INFO, format="%(process)d %(name)s %(levelname)s %(message)s")
    url = sys.argv[1]
    if "--hold-merge" in sys.argv[2:]:
        hang = threading.Event()

        def held(*args: Any, **kwargs: Any) -> Any:
            hang.wait()  # never set: a merge that hangs (a stuck storage, a stopped helper)

        _state_writer.compact = held  # type: ignore[assignment]
        _state_writer.HELPER_STATE_BYTES = 1 << 62  # merged in this process: `compact`
        context.EXIT_MERGE_WAIT_S = 0.5
    fresh = not os.path.exists(url)
    ssc = sk.StreamingContext.get_or_create(url, lambda: build(url, seed=fresh))
    if "--thread" in sys.argv[2:]:
        threading.Thread(target=ssc.run, name="runner", daemon=True).start()
        while (ssc.last_batch_time_ms or 0) < 4000:
            time.sleep(0.005)
        return 0  # no ssc.stop(): the exit stops the job run() is running
    ssc.run(max_batches=2)
    if "--contexts" in sys.argv[2:]:  # more jobs left running: each one's at-exit stop waits for its hanging merge
        more = [url + f"-{i}" for i in range(1, int(sys.argv[sys.argv.index("--contexts") + 1]))]
        others = [sk.StreamingContext.get_or_create(u, lambda u=u: build(u, seed=True)) for u in more]
        for other in others:
            other.run(max_batches=4)
        close_writer = _state_writer.StateWriter.close

        def told(self: Any, timeout_s: float | None = None) -> Any:
            print("EXIT-WAIT", timeout_s, flush=True)
            return close_writer(self, timeout_s)

        _state_writer.StateWriter.close = told  # type: ignore[method-assign]
    if "--ctrl-c" in sys.argv[2:]:
        context.EXIT_MERGE_WAIT_S = 600.0
        close = _state_writer.StateWriter.close

        def interrupted_close(self: Any, timeout_s: float | None = None) -> Any:
            threading.Timer(0.2, os.kill, (os.getpid(), signal.SIGINT)).start()  # Ctrl-C, during the wait below
            return close(self, timeout_s)

        _state_writer.StateWriter.close = interrupted_close  # type: ignore[method-assign]
    if "--fork" in sys.argv[2:]:
        pid = os.fork()
        if pid == 0:
            print("CHILD", os.getpid(), flush=True)
            sys.exit(0)  # the interpreter's exit, at-exit hooks included
        os.waitpid(pid, 0)
    if "--failed-start" in sys.argv[2:]:
        failing = sk.StreamingContext(0.2)
        failing.queue_stream([[7]], name="q").map(fail).foreach_batch(lambda b: b.collect())
        failing.start()
        deadline = time.monotonic() + 60
        while any(t.name == "streamkeep-scheduler" for t in threading.enumerate()) and time.monotonic() < deadline:
            time.sleep(0.01)
    return 0  # no ssc.stop()


def fail(record: Any) -> Any:
    msg = f"bad record {record}"
    raise RuntimeError(msg)


if __name__ == "__main__":
    sys.exit(main())
