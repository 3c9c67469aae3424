"""RedisSink's writer process: a batch's write function, packing and Redis round trip off the job's thread.

A job is CPU-bound in one thread (the GIL): with the sink's work done there, every batch
costs the write function, queueing and packing its commands, and sending them. With a
checkpoint (`SettlingSink`) the driver's sink instead pickles the batch's records, hands
them to this process (a child of the driver, one per sink) and returns; the child runs
the sink's own synchronous ``write`` -- marker check, fencing token, Lua script, retries,
all unchanged -- and reports the outcome, which the driver's ``settle`` reads before the
batch is committed. Measured (bench/kafka.py, 10k HSETs per batch): pickling the records
in fast mode costs the job's thread ~5-7 ms per batch instead of the ~40-50 ms the sink
cost there.

The child ignores SIGINT and SIGTERM (a Ctrl-C or a service stop reaches the whole group:
the driver finishes its batch in progress, which needs the child), and exits when the
driver closes its socket or dies (`exit_with_driver`: a SIGKILLed driver leaves nothing behind).
Imports only layer 1 (``streamkeep._util``, ``streamkeep._faults``, ``streamkeep.errors``); cloudpickle lazily.
"""

from __future__ import annotations

import io
import logging
import os
import pickle
import queue
import signal
import socket
import subprocess
import sys
import threading
import time
import traceback
from collections import deque
from typing import Any

from streamkeep._faults import ENV_VAR as CRASH_ENV_VAR
from streamkeep._util import exit_with_driver, gc_paused
from streamkeep.errors import ConfigError, SinkError

log = logging.getLogger("streamkeep.sinks.redis")


def dumps(obj: Any) -> bytes:
    """Pickle `obj` fast: no memo (plain records, which need none, pickle ~3x faster), else plainly, else with cloudpickle."""
    buf = io.BytesIO()
    pickler = pickle.Pickler(buf, pickle.HIGHEST_PROTOCOL)
    pickler.fast = True  # no memo: shared objects are copied, a cycle raises ValueError
    try:
        pickler.dump(obj)
        return buf.getvalue()
    except (ValueError, RecursionError):  # a cycle, or deep nesting
        pass
    except Exception:  # noqa: BLE001 - not picklable by pickle: cloudpickle's turn
        import cloudpickle

        return bytes(cloudpickle.dumps(obj, protocol=pickle.HIGHEST_PROTOCOL))
    try:
        return pickle.dumps(obj, protocol=pickle.HIGHEST_PROTOCOL)
    except Exception:  # noqa: BLE001 - a lambda or a local class among the records
        import cloudpickle

        return bytes(cloudpickle.dumps(obj, protocol=pickle.HIGHEST_PROTOCOL))


# The writer's start-up: the driver's sys.path (for the modules the write function needs), and the package
# ``streamkeep`` without running its __init__ (StreamingContext, the scheduler, checkpoints: ~0.3 s of CPU
# the writer does not need), which runs only if something asks the package for a name.
_BOOT = """import importlib.util, sys
sys.path[:] = {path!r}
spec = importlib.util.find_spec("streamkeep")
pkg = importlib.util.module_from_spec(spec)
def __getattr__(name):
    del pkg.__dict__["__getattr__"]
    spec.loader.exec_module(pkg)
    return getattr(pkg, name)
pkg.__getattr__ = __getattr__
sys.modules["streamkeep"] = pkg
from streamkeep.sinks._redis_writer import main
main({fd}, {pid})
"""


class WriterProcess:
    """The driver's handle on one sink's writer process: batches in order, at most ``AHEAD + 1`` in flight.

    The writer applies batch ``T`` while ``T + 1`` waits in its socket, so the job's thread does not
    wait for ``T``'s outcome before handing over ``T + 1``; the writer refuses every batch after one
    that failed (a later batch never applies past a failed one), and the driver's ``settle`` of ``T``
    reads ``T``'s outcome before the commit.
    """

    #: Batches handed over before the oldest one's outcome is read (bounds the records held in pickles).
    AHEAD = 1

    def __init__(self, sink: Any, name: str) -> None:
        """Start the process with a copy of `sink` (pickled by value where needed: closures, lambdas).

        Raises:
            ConfigError: the sink (its write function) cannot be pickled.
        """
        import cloudpickle

        try:
            payload = cloudpickle.dumps(sink, protocol=pickle.HIGHEST_PROTOCOL)
        except Exception as exc:
            msg = (
                f"RedisSink {name!r}: its write function cannot be pickled for the sink's writer process "
                f"({type(exc).__name__}: {exc}); make it picklable (a function, or a closure over picklable values), "
                "or pass writer_process=False to run it in the job's thread."
            )
            raise ConfigError(msg) from exc
        self.name = name
        self.pending: deque[int] = deque()  # batch times handed over whose outcome is not read yet, oldest first
        self.failed_batch: int | None = None  # the batch whose error `settle` raised
        self.cpu_s = 0.0  # the child's CPU time so far (bench/kafka.py reports it)
        ours, theirs = socket.socketpair()
        code = _BOOT.format(path=sys.path, fd=theirs.fileno(), pid=os.getpid())
        try:
            env = dict(os.environ)
            env.pop(CRASH_ENV_VAR, None)  # a crash point armed for the driver is the driver's
            self._proc = subprocess.Popen([sys.executable, "-c", code], pass_fds=(theirs.fileno(),), stdin=subprocess.DEVNULL, env=env)  # noqa: S603
        except BaseException:
            ours.close()
            raise
        finally:
            theirs.close()
        from multiprocessing.connection import Connection

        self._sock = ours  # shut down by `close` (a send blocked on it returns)
        self._conn = Connection(os.dup(ours.fileno()))
        self._started = False  # its start-up reply is read with the first batch's
        self._reading = threading.Lock()  # one reader of outcomes at a time (the committer's settle, the job's write)
        # Sent from a thread of its own: the job's thread goes on while the writer reads a batch (it
        # may still be starting up, or applying the one before; the socket holds ~200 kB of ~1 MB).
        self._outbox: queue.SimpleQueue[bytes | None] = queue.SimpleQueue()
        self._send_error: OSError | None = None
        self._sender = threading.Thread(target=self._push, name=f"streamkeep-redis-writer-{name}", daemon=True)
        self._sender.start()
        level = logging.getLogger("streamkeep.sinks.redis").getEffectiveLevel()
        self._outbox.put(pickle.dumps((level, payload)))

    @property
    def pid(self) -> int:
        """The process id of the writer."""
        return self._proc.pid

    def ready(self, wait: bool = False) -> bool:
        """Whether the writer has started (its start-up reply arrived; waits for it only if `wait`).

        Raises:
            SinkError: it could not load the sink, or it is gone.
        """
        if self._started:
            return True
        with self._reading:
            if self._started:
                return True
            try:
                if not wait and not self._conn.poll(0):
                    return False
                self._reply(0)
            except (EOFError, OSError) as exc:
                raise self._gone(None) from exc
            self._started = True
            return True

    def send(self, batch_time: int, records: list[Any]) -> None:
        """Hand batch `batch_time` over (the caller keeps at most `AHEAD` batches unsettled before it).

        Raises:
            SinkError: the records cannot be pickled (nothing was handed over).
        """
        try:
            data = dumps((batch_time, records))
        except Exception as exc:
            msg = (
                f"RedisSink {self.name!r}, batch {batch_time}: its records cannot be pickled for the sink's writer "
                f"process ({type(exc).__name__}: {exc}); make them picklable, or pass writer_process=False to run the "
                "write function in the job's thread. Nothing was applied."
            )
            raise SinkError(msg) from exc
        self._outbox.put(data)
        self.pending.append(batch_time)

    def _push(self) -> None:
        while (data := self._outbox.get()) is not None:
            try:
                self._conn.send_bytes(data)
            except OSError as exc:  # the writer is gone: `settle` says so
                self._send_error = exc
                return

    def settle(self, upto: int | None, keep: int = 0) -> None:
        """Read the outcomes of the batches handed over (up to batch `upto`; all but the last `keep`).

        Raises:
            Exception: a batch's error as the sink raised it in the writer (`failed_batch` says which).
            SinkError: the writer is gone.
        """
        if not self._due(upto, keep):
            return  # nothing to wait for (the common case of the job's thread): no lock
        with self._reading:
            while self._due(upto, keep):
                self._settle_one(self.pending.popleft())

    def _due(self, upto: int | None, keep: int) -> bool:
        pending = self.pending
        try:
            return len(pending) > keep and (upto is None or pending[0] <= upto)
        except IndexError:  # emptied by the other reader meanwhile
            return False

    def _settle_one(self, batch_time: int) -> None:
        self.failed_batch = batch_time  # until its outcome says otherwise
        try:
            if not self._started:
                self._reply(batch_time)  # start-up: the sink arrived
                self._started = True
            self._reply(batch_time)
        except (EOFError, OSError) as exc:
            raise self._gone(batch_time) from exc
        self.failed_batch = None

    def _reply(self, batch_time: int) -> None:
        error, cause, remote_tb, records, cpu_s = pickle.loads(self._conn.recv_bytes())
        self.cpu_s = cpu_s
        for record in records:  # the writer's log records, through the driver's logging
            logging.getLogger(record.name).handle(record)
        if error is None:
            return
        if cause is not None:
            cause.add_note(f"In RedisSink {self.name!r}'s writer process (pid {self._proc.pid}), batch {batch_time}:\n{remote_tb}")
            error.__cause__ = cause
        raise error

    def _gone(self, batch_time: int | None) -> SinkError:
        try:
            status = self._proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            status = None
        how = "is unreachable" if status is None else (f"was killed by signal {-status}" if status < 0 else f"exited with status {status}")
        if batch_time is None:
            msg = f"RedisSink {self.name!r}: the sink's writer process (pid {self._proc.pid}) {how} while starting."
        else:
            msg = (
                f"RedisSink {self.name!r}, batch {batch_time}: the sink's writer process (pid {self._proc.pid}) {how} before it "
                "reported the batch's outcome. The batch is not committed; restart the job (its replay checks the marker: the "
                "batch's script ran entirely or not at all)."
            )
        return SinkError(msg)

    def close(self, timeout_s: float = 5.0) -> None:
        """Stop the writer: it finishes the batch it runs (not waited for past `timeout_s`), then exits.

        Batches handed over and not settled are dropped: they were not committed (they are replayed).
        """
        try:
            self._sock.shutdown(socket.SHUT_RDWR)  # EOF for the writer; a send blocked in `_push` returns
        except OSError:
            pass  # the writer is gone already
        self._outbox.put(None)
        self._sender.join()
        self._conn.close()
        self._sock.close()
        try:
            self._proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            self._proc.kill()
            self._proc.wait()


class _Capture(logging.Handler):
    """Keeps the writer's log records, sent to the driver with the batch's outcome."""

    def __init__(self) -> None:
        super().__init__()
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        record.msg, record.args = record.getMessage(), None
        record.exc_info = record.exc_text = None
        self.records.append(record)


def _picklable(obj: BaseException | None) -> BaseException | None:
    if obj is None:
        return None
    try:
        pickle.loads(pickle.dumps(obj))
    except Exception:  # noqa: BLE001 - an exception that does not pickle: its type and text
        return SinkError(f"{type(obj).__name__}: {obj}")
    return obj


def main(fd: int, driver_pid: int) -> None:
    """The writer process: run the sink's ``write`` on each batch received, answer its outcome, until EOF."""
    from multiprocessing.connection import Connection

    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the driver stops us (closing the socket), not the terminal
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    exit_with_driver(driver_pid)
    conn = Connection(fd)
    capture = _Capture()
    logger = logging.getLogger("streamkeep.sinks.redis")
    logger.addHandler(capture)
    logger.propagate = False
    sink: Any = None
    try:
        level, payload = pickle.loads(conn.recv_bytes())
        logger.setLevel(level)
        try:
            sink = pickle.loads(payload)
            sink.open()
            error: BaseException | None = None
        except Exception as exc:  # noqa: BLE001 - reported to the driver, with the first batch
            error = SinkError(f"RedisSink: its writer process could not load the sink: {type(exc).__name__}: {exc}")
        try:
            conn.send_bytes(pickle.dumps((error, None, "", [], time.process_time())))
        except OSError:  # the driver closed the sink already
            return
        if error is not None:
            return
        failed: int | None = None  # a batch that failed: no later one is written
        while True:
            try:
                data = conn.recv_bytes()
            except (EOFError, OSError):
                return
            cause, remote_tb = None, ""
            # The records all live until the batch is written: collections meanwhile would only walk them
            # (unpickling 10k records took ~50 ms with the collector running, ~17 ms without).
            with gc_paused():
                batch_time, records = pickle.loads(data)
                del data
                try:
                    if failed is not None:
                        msg = f"RedisSink {sink.name!r}, batch {batch_time}: not written, batch {failed} before it failed."
                        raise SinkError(msg)
                    sink.write(batch_time, records)
                    error = None
                except Exception as exc:  # noqa: BLE001 - the driver raises it
                    failed = batch_time if failed is None else failed
                    error = _picklable(exc)
                    if exc.__cause__ is not None:
                        cause = _picklable(exc.__cause__)
                        remote_tb = "".join(traceback.format_exception(exc.__cause__))
                del records
            out, capture.records = capture.records, []
            try:
                conn.send_bytes(pickle.dumps((error, cause, remote_tb, out, time.process_time())))
            except OSError:  # the driver closed the sink without waiting for this batch (not committed: replayed)
                return
    finally:
        if sink is not None:
            sink.close()
