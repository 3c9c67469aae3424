"""Redis output applied exactly once per batch time (redis-py, MULTI/EXEC + WATCH).

Owns :class:`RedisSink`. redis-py is imported lazily (extra ``streamkeep[redis]``).
Imports only ``streamkeep.errors`` and ``streamkeep._types``; must not import
sources, dstream, the scheduler or executors.
"""

from __future__ import annotations

import logging
import re
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from streamkeep._types import BatchTime
from streamkeep._util import import_optional
from streamkeep.errors import ConfigError, SinkError, UserFunctionError

if TYPE_CHECKING:
    from redis import Redis
    from redis.client import Pipeline

__all__ = ["RedisSink"]

log = logging.getLogger(__name__)

WriteFunction = Callable[["Pipeline", list[Any]], None]


def _import_redis() -> Any:
    return import_optional("redis", "RedisSink", "redis")


def _redact(url: str) -> str:
    return re.sub(r"//[^@/]*@", "//***@", url)


class RedisSink:
    """Writes each batch to Redis in one transaction, exactly once per batch time.

    For every batch time ``T`` the sink opens a transaction guarded by ``WATCH``
    on a marker key (default ``streamkeep:sink:<name>:last_batch``) that holds
    the last applied batch time. If the marker is ``>= T`` the batch was
    already applied (a replay after a crash between this write and the
    checkpoint commit) and nothing is sent. Otherwise ``write(pipeline,
    records)`` queues the batch's commands and the sink queues ``SET marker T``
    behind them; both run in one ``MULTI``/``EXEC``. Either all of them are
    applied or none, so even non-idempotent commands (INCRBY, HINCRBY, LPUSH)
    take effect exactly once. If the marker changes between WATCH and EXEC
    (another writer, e.g. a zombie driver), EXEC is refused and the check runs
    again.

    ``write`` must only queue commands on the pipeline: it must not call
    ``execute()``, ``watch()``, ``multi()`` or ``reset()``, and it must not rely
    on reading values (replies are only known after EXEC). It is called once
    per applied batch, also for an empty batch, and never for a skipped one.

    Redis does not roll back: a command that fails inside EXEC (e.g. WRONGTYPE)
    leaves the other commands and the marker applied. The sink then raises
    SinkError listing the failures; the batch counts as applied and is skipped
    on replay, so fix the write function. A command refused while queueing
    (EXECABORT) discards the whole transaction: nothing is applied.

    Connection errors and timeouts are retried ``max_retries`` times with
    exponential backoff from ``retry_backoff_s`` (doubling, at most 2 s); a
    retry re-reads the marker, so a transaction whose EXEC reached Redis before
    the connection dropped is not applied twice. Then SinkError: the batch is
    not committed and runs again after a restart.

    **Redis Cluster.** WATCH and MULTI/EXEC work only on keys of one hash slot.
    Use a hash tag in the marker key and in every key the write function
    touches, e.g. ``marker_key="{app}:streamkeep:last_batch"`` with data keys
    ``"{app}:user:42"``; the write then lands on one node, which bounds its
    throughput. Connect with a client for that node (``url``), as this sink
    uses a plain ``redis.Redis`` client.

    Args:
        url: redis-py URL, e.g. ``"redis://127.0.0.1:6379/0"``.
        write: ``write(pipeline, records)`` queues the batch's commands.
        name: the sink's name; keys the marker, so keep it stable across
            deployments (renaming it makes the next replay apply again).
        marker_key: where the last applied batch time is kept.
        max_retries: retries after a connection error or timeout.
        retry_backoff_s: first backoff between retries.
        timeout_s: socket connect and read timeout.

    Raises:
        ConfigError: a bad argument, or redis-py is missing.

    Example:
        >>> def write(pipe, records):
        ...     for user, n in records:
        ...         pipe.hincrby("clicks", user, n)
        >>> sink = RedisSink("redis://127.0.0.1:6379/0", write, name="clicks")
        >>> sink.marker_key
        'streamkeep:sink:clicks:last_batch'
    """

    def __init__(
        self,
        url: str,
        write: WriteFunction,
        *,
        name: str,
        marker_key: str | None = None,
        max_retries: int = 5,
        retry_backoff_s: float = 0.1,
        timeout_s: float = 5.0,
    ) -> None:
        if not isinstance(name, str) or not name:
            msg = "RedisSink needs a non-empty name= (it keys the sink's batch marker)"
            raise ConfigError(msg)
        if not isinstance(url, str) or "://" not in url:
            msg = f"RedisSink {name!r}: url must be a redis URL like redis://host:6379/0"
            raise ConfigError(msg)
        if not callable(write):
            msg = f"RedisSink {name!r}: write must be a callable(pipeline, records)"
            raise ConfigError(msg)
        if max_retries < 0 or not retry_backoff_s > 0 or not timeout_s > 0:
            msg = f"RedisSink {name!r}: need max_retries >= 0, retry_backoff_s > 0 and timeout_s > 0"
            raise ConfigError(msg)
        self.name = name
        self.url = url
        self.marker_key = marker_key or f"streamkeep:sink:{name}:last_batch"
        self.max_retries = max_retries
        self.retry_backoff_s = retry_backoff_s
        self.timeout_s = timeout_s
        self._write = write
        self._client: Redis | None = None
        self._lock = threading.Lock()

    def open(self) -> None:
        """Create the client (connections are made on first use)."""
        with self._lock:
            self._ensure_client()

    def close(self) -> None:
        """Close the client's connections; safe to call twice."""
        with self._lock:
            client, self._client = self._client, None
            if client is not None:
                client.close()

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_client"] = None
        state["_lock"] = None
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._lock = threading.Lock()

    def _ensure_client(self) -> Redis:
        if self._client is None:
            redis = _import_redis()
            from redis.backoff import NoBackoff
            from redis.retry import Retry

            try:  # the sink owns retries (and re-checks the marker on each)
                self._client = redis.Redis.from_url(
                    self.url, socket_timeout=self.timeout_s, socket_connect_timeout=self.timeout_s, retry=Retry(NoBackoff(), 0)
                )
            except ValueError as exc:
                msg = f"RedisSink {self.name!r}: bad url {_redact(self.url)!r}: {exc}"
                raise ConfigError(msg) from exc
        assert self._client is not None
        return self._client

    def last_batch(self) -> BatchTime | None:
        """The last batch time applied by this sink (the marker), or None."""
        with self._lock:
            raw = self._retrying("reading the marker", None, lambda: self._ensure_client().get(self.marker_key))
        return None if raw is None else self._parse_marker(raw)

    def _parse_marker(self, raw: Any) -> BatchTime:
        try:
            return int(raw)
        except (TypeError, ValueError) as exc:
            msg = (
                f"RedisSink {self.name!r}: marker key {self.marker_key!r} holds {raw!r}, "
                "not a batch time; another program uses this key? Pick another "
                "marker_key= or delete the key if it is stray."
            )
            raise SinkError(msg) from exc

    def write(self, batch_time: BatchTime, records: list[Any]) -> None:
        """Apply the batch once: skipped if the marker says `batch_time` is applied.

        Raises:
            SinkError: Redis stayed unreachable, or commands failed in EXEC.
            UserFunctionError: the write function raised (nothing was applied).
        """
        with self._lock:
            self._retrying(f"writing batch {batch_time}", batch_time, lambda: self._apply(batch_time, records))

    def _retrying(self, what: str, batch_time: BatchTime | None, fn: Callable[[], Any]) -> Any:
        redis = _import_redis()
        transient = (redis.ConnectionError, redis.TimeoutError)
        backoff = self.retry_backoff_s
        attempt = 0
        conflicts = 0
        while True:
            try:
                return fn()
            except redis.WatchError as exc:
                conflicts += 1
                if conflicts > 100:
                    msg = (
                        f"RedisSink {self.name!r}: marker {self.marker_key!r} changed "
                        f"under {what} {conflicts} times in a row; is a second job "
                        "writing with the same sink name?"
                    )
                    raise SinkError(msg) from exc
                log.info("RedisSink %r: marker changed during %s; checking again", self.name, what)
            except transient as exc:
                attempt += 1
                if attempt > self.max_retries:
                    tail = "; the batch is not committed and runs again after a restart" if batch_time is not None else ""
                    msg = (
                        f"RedisSink {self.name!r}: {what} failed: cannot reach Redis at "
                        f"{_redact(self.url)} after {attempt} attempt(s): {str(exc).rstrip('.')}. Check "
                        f"that the server is up and reachable{tail}."
                    )
                    raise SinkError(msg) from exc
                log.warning(
                    "RedisSink %r: %s failed (attempt %d/%d), retrying in %.2f s: %s",
                    self.name,
                    what,
                    attempt,
                    self.max_retries + 1,
                    backoff,
                    exc,
                )
                time.sleep(backoff)
                backoff = min(backoff * 2, 2.0)

    def _apply(self, batch_time: BatchTime, records: list[Any]) -> None:
        redis = _import_redis()
        client = self._ensure_client()
        with client.pipeline(transaction=True) as pipe:
            pipe.watch(self.marker_key)  # type: ignore[no-untyped-call]
            raw = pipe.get(self.marker_key)
            if raw is not None and self._parse_marker(raw) >= batch_time:
                log.info("RedisSink %r: batch %d already applied (marker %s); skipped", self.name, batch_time, raw)
                return
            pipe.multi()
            try:
                self._write(pipe, records)
            except Exception as exc:
                msg = f"RedisSink {self.name!r}: the write function raised for batch {batch_time}: {exc!r}; nothing was applied"
                raise UserFunctionError(msg, operator=f"RedisSink {self.name}", batch_time_ms=batch_time) from exc
            if not pipe.explicit_transaction:
                msg = (
                    f"RedisSink {self.name!r}, batch {batch_time}: the write function "
                    "called execute()/reset() on the pipeline; it must only queue "
                    "commands (its commands may have been applied without the marker)"
                )
                raise SinkError(msg)
            queued = len(pipe.command_stack)
            pipe.set(self.marker_key, batch_time)
            try:
                results = pipe.execute(raise_on_error=False)
            except redis.ResponseError as exc:  # queue-time error -> EXECABORT
                msg = (
                    f"RedisSink {self.name!r}, batch {batch_time}: Redis refused the "
                    f"transaction ({exc}); nothing was applied. A command queued by the "
                    "write function is malformed (wrong arguments or unknown command)."
                )
                raise SinkError(msg) from exc
        failed = [(i, r) for i, r in enumerate(results) if isinstance(r, Exception)]
        if failed:
            shown = "; ".join(f"command #{i + 1}: {r}" for i, r in failed[:5])
            marker_ok = failed[-1][0] != queued
            msg = (
                f"RedisSink {self.name!r}, batch {batch_time}: {len(failed)} of "
                f"{len(results)} commands failed inside MULTI/EXEC ({shown}). Redis does "
                "not roll back: the other commands were applied"
                + (" and the batch is marked applied (a replay skips it)" if marker_ok else "")
                + ". Fix the write function."
            )
            raise SinkError(msg)
