"""`SocketTextSource` (socket_text_stream): lines from a TCP server, with a write-ahead log.

A receiver thread reads lines into a buffer. At planning time the buffered
lines are written to a blob (in the checkpoint when one is set: the write-ahead
log) and the plan names that blob, so a crash after planning loses nothing and
a replay reads exactly the planned lines. Lines received after the last plan
and not yet planned are lost on a crash, as with any receiver; keep batch
intervals short or use Kafka when that matters. The receiver connects in the
background and reconnects every ``reconnect_s`` when it cannot connect or the
connection drops; batches are empty meanwhile, and a warning is logged once per
outage: "cannot connect" when it never got through (a port given with no server
on it is the usual cause), "the connection ... was lost" when an established one
ended, then "connected" when it is back.
"""

from __future__ import annotations

import logging
import operator
import socket
import threading
from typing import Any

from streamkeep._types import BatchTime, Data
from streamkeep.errors import ConfigError
from streamkeep.sources.base import BlobStore

log = logging.getLogger("streamkeep.sources.socket")


def _port(port: object) -> int | None:
    """`port` as an int: an int-like (``numpy.int64``) or a string of digits (from argv or the environment), else None."""
    if isinstance(port, bool):
        return None
    if isinstance(port, str):
        return int(port) if port.strip().isdigit() else None
    try:
        return operator.index(port)  # type: ignore[arg-type]
    except TypeError:
        return None


class SocketTextSource:
    """Lines (utf-8, newline-terminated) from ``host:port``."""

    replayable = False
    can_materialise = True

    def __init__(self, host: str, port: int | str, *, name: str, reconnect_s: float = 0.5) -> None:
        number = _port(port)
        if number is None or not 1 <= number <= 65535:
            msg = f"socket_text_stream {name!r}: port must be an int from 1 to 65535 (the TCP port the server listens on), got {port!r}"
            raise ConfigError(msg)
        if not isinstance(host, str) or not host:
            msg = f"socket_text_stream {name!r}: host must be a host name or address such as '127.0.0.1', got {host!r}"
            raise ConfigError(msg)
        self.name = name
        self.host = host
        self.port = number
        self._buf: list[str] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._blobs: BlobStore | None = None
        self._reconnect_s = reconnect_s
        self._seq = 0
        self.connected = threading.Event()

    def open(self, blobs: BlobStore) -> None:
        self._blobs = blobs
        self._thread = threading.Thread(target=self._receive, name=f"streamkeep-socket-{self.name}", daemon=True)
        self._thread.start()

    def _receive(self) -> None:
        warned = False  # one warning per outage, not one per retry
        while not self._stop.is_set():
            try:
                conn = socket.create_connection((self.host, self.port), timeout=1.0)
            except OSError as exc:
                if not warned:  # e.g. no server listening yet: its batches are empty until one is
                    log.warning(
                        "socket source %r: cannot connect to %s:%d (%s); its batches are empty until it connects "
                        "(retrying every %g s; start the server, e.g. `nc -lk %d`, or fix host/port)",
                        self.name, self.host, self.port, exc, self._reconnect_s, self.port,
                    )
                    warned = True
                else:
                    log.debug("socket source %r: %s:%d: %s; retrying", self.name, self.host, self.port, exc)
            else:
                with conn:
                    self.connected.set()
                    if warned:
                        log.info("socket source %r: connected to %s:%d", self.name, self.host, self.port)
                    try:
                        self._read(conn)
                        why = "the server closed it"
                    except OSError as exc:
                        why = str(exc) or type(exc).__name__
                if not self._stop.is_set():
                    log.warning(
                        "socket source %r: the connection to %s:%d was lost (%s); lines the server sends until it "
                        "reconnects are not received, and its batches are empty meanwhile (reconnecting every %g s)",
                        self.name, self.host, self.port, why, self._reconnect_s,
                    )
                    warned = True  # the outage's warning: the reconnect attempts log at debug level, then "connected"
            self.connected.clear()
            self._stop.wait(self._reconnect_s)

    def _read(self, conn: socket.socket) -> None:
        """Buffer `conn`'s lines until the server closes it or the source stops (an OSError if it breaks)."""
        conn.settimeout(0.2)
        pending = b""
        try:
            while not self._stop.is_set():
                try:
                    chunk = conn.recv(65536)
                except TimeoutError:
                    continue
                if not chunk:  # the server closed cleanly: a last line without its newline is complete
                    if pending:
                        with self._lock:
                            self._buf.append(pending.decode("utf-8", "replace").rstrip("\r"))
                        pending = b""
                    return
                pending += chunk
                *lines, pending = pending.split(b"\n")
                if lines:
                    decoded = [ln.decode("utf-8", "replace").rstrip("\r") for ln in lines]
                    with self._lock:
                        self._buf.extend(decoded)
        finally:
            if pending:  # a broken connection or a stop: the partial line may be cut, so it is not a record
                log.warning(
                    "socket source %r: dropped %d bytes of a partial line from %s:%d (the connection broke or the "
                    "source stopped before its newline arrived)",
                    self.name, len(pending), self.host, self.port,
                )

    def restore(self, position: Data) -> None:
        self._seq = int(position.get("seq", 0))

    def position(self) -> Data:
        return {"seq": self._seq}

    def buffered(self) -> int:
        """Lines received and not yet planned."""
        with self._lock:
            return len(self._buf)

    def plan(self, batch_time: BatchTime) -> Data:
        with self._lock:
            lines, self._buf = self._buf, []
        if not lines:
            return {"n": 0}
        assert self._blobs is not None
        self._seq += 1
        key = f"{self.name}/wal-{batch_time}"
        self._blobs.put(key, lines)
        return {"n": len(lines), "blobs": [key]}

    def read(self, plan: Data, batch_time: BatchTime) -> list[list[Any]]:
        if not plan.get("n"):
            return [[]]
        assert self._blobs is not None
        lines = list(self._blobs.get(plan["blobs"][0]))
        if not self._blobs.durable:
            self._blobs.delete(plan["blobs"][0])
        return [lines]

    def exhausted(self) -> bool:
        return False

    def close(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=2)

    def describe(self) -> dict[str, Any]:
        return {"kind": "socket"}
