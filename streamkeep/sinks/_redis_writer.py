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
import signal
import socket
import subprocess
import sys
import threading
import time
import traceback
from typing import Any

from streamkeep import _faults
from streamkeep._util import exit_with_driver
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


class WriterProcess:
    """The driver's handle on one sink's writer process: one batch at a time, in order."""

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
        self.pending: int | None = None  # the batch time sent and not answered yet
        self.cpu_s = 0.0  # the child's CPU time so far (bench/kafka.py reports it)
        ours, theirs = socket.socketpair()
        code = f"import sys; sys.path[:] = {sys.path!r}; from streamkeep.sinks._redis_writer import main; main({theirs.fileno()}, {os.getpid()})"
        try:
            env = dict(os.environ)
            env.pop(_faults.ENV_VAR, None)  # a crash point armed for the driver is the driver's
            self._proc = subprocess.Popen([sys.executable, "-c", code], pass_fds=(theirs.fileno(),), stdin=subprocess.DEVNULL, env=env)  # noqa: S603
        except BaseException:
            ours.close()
            raise
        finally:
            theirs.close()
        from multiprocessing.connection import Connection

        self._sock = ours  # shut down by `close` (a send blocked on it returns)
        self._conn = Connection(os.dup(ours.fileno()))
        self._sending: threading.Thread | None = None
        self._send_error: OSError | None = None
        level = logging.getLogger("streamkeep.sinks.redis").getEffectiveLevel()
        self._conn.send_bytes(pickle.dumps((level, payload)))
        self._started = False  # its start-up reply is read with the first batch's

    @property
    def pid(self) -> int:
        """The process id of the writer."""
        return self._proc.pid

    def send(self, batch_time: int, records: list[Any]) -> None:
        """Hand batch `batch_time` to the writer (the previous one answered).

        Raises:
            SinkError: the records cannot be pickled, or the writer is gone.
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
        # Sent from a thread of its own: the job's thread goes on while the writer reads it (it may
        # still be starting up for the first batch; the socket buffers hold ~200 kB of a ~1 MB batch).
        self._sending = threading.Thread(target=self._push, args=(data,), name=f"streamkeep-redis-writer-{self.name}", daemon=True)
        self._sending.start()
        self.pending = batch_time

    def _push(self, data: bytes) -> None:
        try:
            self._conn.send_bytes(data)
        except OSError as exc:  # the writer is gone: `result` says so
            self._send_error = exc

    def result(self) -> None:
        """Wait for the pending batch's outcome; raise its error as the sink raised it in the writer."""
        batch_time, self.pending = self.pending, None
        if batch_time is None:
            return
        try:
            if self._sending is not None:
                self._sending.join()
                self._sending = None
            if self._send_error is not None:
                raise self._send_error
            if not self._started:
                self._reply(batch_time)  # start-up: the sink arrived
                self._started = True
            self._reply(batch_time)
        except (EOFError, OSError) as exc:
            raise self._gone(batch_time) from exc

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

    def _gone(self, batch_time: int) -> SinkError:
        try:
            status = self._proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            status = None
        how = "is unreachable" if status is None else (f"was killed by signal {-status}" if status < 0 else f"exited with status {status}")
        msg = (
            f"RedisSink {self.name!r}, batch {batch_time}: the sink's writer process (pid {self._proc.pid}) {how} before it "
            "reported the batch's outcome. The batch is not committed; restart the job (its replay checks the marker: the "
            "batch's script ran entirely or not at all)."
        )
        return SinkError(msg)

    def close(self, timeout_s: float = 5.0) -> None:
        """Stop the writer: it finishes the batch it runs (not waited for past `timeout_s`), then exits."""
        try:
            self._sock.shutdown(socket.SHUT_RDWR)  # EOF for the writer; a send blocked in `_push` returns
        except OSError:
            pass  # the writer is gone already
        if self._sending is not None:
            self._sending.join()
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
        conn.send_bytes(pickle.dumps((error, None, "", [], time.process_time())))
        if error is not None:
            return
        while True:
            try:
                batch_time, records = pickle.loads(conn.recv_bytes())
            except EOFError:
                return
            cause, remote_tb = None, ""
            try:
                sink.write(batch_time, records)
                error = None
            except Exception as exc:  # noqa: BLE001 - the driver raises it
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
