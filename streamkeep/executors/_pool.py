"""Running fused per-record operators in a process pool (opt-in, for CPU-heavy functions).

Measured on a 2-core machine (bench/process_pool.py): a pool pays off only when the
per-record functions cost a few microseconds or more (about 1.7x for ~2 us/record
with the second core free) and never for cheap ones (pickling the records both
ways costs ~0.1 us/record). So the local executor runs in-process by default and
uses a pool only when asked: ``StreamingContext(..., executor="processes")``.

The fused operator chain travels to the workers with cloudpickle (lambdas and
closures included); each worker runs it over one chunk with the same code as the
in-process path, so errors name the operator and batch time the same way.

A driver killed with SIGKILL cannot shut its pool down, and nothing else would:
each worker holds the pipes that keep the forkserver and multiprocessing's
resource tracker alive, and waits for work forever. So every worker watches the
driver's pid (a pidfd on Linux, which becomes readable when the driver exits,
even as an unreaped zombie; polling elsewhere) and exits with it; the forkserver
and the resource tracker then see their pipes close and exit too.
"""

from __future__ import annotations

import os
import select
import threading
import time
from typing import TYPE_CHECKING, Any

from streamkeep.batch import Batch
from streamkeep.errors import ConfigError

if TYPE_CHECKING:  # imported when a pool is made: multiprocessing costs ~15 ms of every job's start-up
    from concurrent.futures import ProcessPoolExecutor

#: Operators whose result depends on partition boundaries: such chains keep their partitions.
_PER_PARTITION = frozenset({"map_partitions", "glom"})


#: Exit status of a worker that outlived its driver.
_ORPHANED = 70


def _watch_driver(driver_pid: int) -> None:
    """Worker initializer: exit this worker as soon as the driver process is gone."""
    try:
        pidfd = os.pidfd_open(driver_pid) if hasattr(os, "pidfd_open") else None
    except ProcessLookupError:
        os._exit(_ORPHANED)
    except OSError:  # pidfd_open unsupported by this kernel: poll instead
        pidfd = None
    threading.Thread(target=_wait_for_exit, args=(driver_pid, pidfd), name="streamkeep-driver-watch", daemon=True).start()


def _wait_for_exit(driver_pid: int, pidfd: int | None) -> None:
    if pidfd is not None:
        poller = select.poll()
        poller.register(pidfd, select.POLLIN)
        while not poller.poll():  # readable once the driver has exited
            pass
    else:
        while True:
            try:
                os.kill(driver_pid, 0)
            except ProcessLookupError:
                break
            except PermissionError:  # alive, owned by another user (cannot be ours, but keep waiting)
                pass
            time.sleep(0.5)
    os._exit(_ORPHANED)  # no cleanup: the driver that would receive our results is dead


def _run_chain(payload: bytes, part: list[Any], batch_time_ms: int) -> list[Any]:
    import cloudpickle

    ops = cloudpickle.loads(payload)
    return Batch._lazy([part], ops, batch_time_ms).partitions[0]


class ProcessPool:
    """A pool of worker processes that materialise lazy batches chunk by chunk."""

    def __init__(self, processes: int) -> None:
        try:
            import cloudpickle  # noqa: F401
        except ImportError as exc:  # pragma: no cover - cloudpickle is a dependency
            msg = "executor='processes' needs cloudpickle: pip install cloudpickle"
            raise ConfigError(msg) from exc
        self.processes = processes
        self._pool: ProcessPoolExecutor | None = None

    def _get(self) -> ProcessPoolExecutor:
        if self._pool is None:
            import multiprocessing
            from concurrent.futures import ProcessPoolExecutor

            # forkserver: never fork the driver's threads (scheduler, lease heartbeat).
            ctx = multiprocessing.get_context("forkserver" if os.name == "posix" else "spawn")
            self._pool = ProcessPoolExecutor(self.processes, mp_context=ctx, initializer=_watch_driver, initargs=(os.getpid(),))
        return self._pool

    def materialise(self, batch: Batch[Any]) -> Batch[Any]:
        """The batch with its pending per-record operators applied in the pool."""
        import cloudpickle

        if batch._parts is not None or not batch._ops:
            return batch
        keep_partitions = any(name in _PER_PARTITION for name, _, _ in batch._ops)
        src = batch._src
        if keep_partitions:
            chunks, joins = src, [[i] for i in range(len(src))]
        else:  # split big partitions so every worker gets work, then join them back
            chunks, joins = [], []
            for part in src:
                n = max(1, min(self.processes, len(part) // 1000))
                size = -(-len(part) // n) if part else 0
                start = len(chunks)
                pieces = [part[i * size : (i + 1) * size] for i in range(n)] if part else [part]
                chunks.extend(pieces)
                joins.append(list(range(start, start + len(pieces))))
        payload = cloudpickle.dumps(batch._ops)
        t = batch.batch_time_ms
        futures = [self._get().submit(_run_chain, payload, c, t) for c in chunks]
        results = [f.result() for f in futures]
        parts = [[x for i in idx for x in results[i]] if len(idx) > 1 else results[idx[0]] for idx in joins]
        return Batch(parts, t, source_partitions=batch.source_partitions)

    def close(self) -> None:
        """Stop the workers."""
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool = None
