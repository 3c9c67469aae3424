"""librdkafka's log lines into Python logging, shared by the Kafka source and the Kafka sink.

Owns :class:`ClientLog` and the process's one instance :data:`CLIENT_LOG`, which every
Kafka client streamkeep creates (the source's consumers and admin clients, the sink's
producer and marker consumer) gets as its ``logger`` unless the user's client config sets
one. It lives below ``sources`` and ``sinks`` because neither may import the other.

Imports only the standard library; must not import sources, sinks or anything above them.
"""

from __future__ import annotations

import contextlib
import logging
import re
import threading
import time
from collections.abc import Iterator
from typing import Any

__all__ = ["CLIENT_LOG", "REPEAT_WINDOW_S", "ClientLog"]

#: How long a client log line that repeats (a broker down: one per reconnect) is only counted.
REPEAT_WINDOW_S = 30.0
_VOLATILE = re.compile(r"\d+")


class ClientLog:
    """librdkafka's log lines into Python logging (``streamkeep.kafka.client``), repeats collapsed.

    Without it every client prints ``%3|...|FAIL|...`` lines to stderr, hundreds per
    minute while a broker is down. The same line (digits aside) is logged once per
    ``REPEAT_WINDOW_S``; the next one says how many were held back. A ``logger`` in the
    user's client config replaces this one. Pickles as the process's own instance (a
    worker's client gets its own).
    """

    def __init__(self) -> None:
        self._log = logging.getLogger("streamkeep.kafka.client")
        self._lock = threading.Lock()
        self._seen: dict[tuple[int, str], tuple[float, int]] = {}  # line -> (first logged at, held back since)
        self._quiet = threading.local()

    @contextlib.contextmanager
    def quiet(self) -> Iterator[None]:
        """Drop the lines this thread's clients deliver meanwhile (confluent-kafka delivers them on the calling thread).

        For closing a client that never reached its brokers: its connection failures are already said by
        streamkeep's own message, which stays the last line the user reads.
        """
        self._quiet.on = True
        try:
            yield
        finally:
            self._quiet.on = False

    def log(self, level: int, fmt: str, *args: Any) -> None:
        """Called by confluent-kafka (``fmt`` is ``"%s [%s] %s"``: facility, client, message)."""
        if not self._log.isEnabledFor(level) or getattr(self._quiet, "on", False):
            return
        text = fmt % args if args else fmt
        key = (level, _VOLATILE.sub("", text))
        now = time.monotonic()
        with self._lock:
            first, held = self._seen.get(key, (-REPEAT_WINDOW_S, 0))
            if now - first < REPEAT_WINDOW_S:
                self._seen[key] = (first, held + 1)
                return
            if len(self._seen) > 1000:  # many distinct lines: forget the old ones
                self._seen.clear()
            self._seen[key] = (now, 0)
        more = f" (and {held} more like it in the last {REPEAT_WINDOW_S:.0f} s)" if held else ""
        self._log.log(level, "kafka client: %s%s", text, more)

    def __repr__(self) -> str:
        return "ClientLog()"

    def __reduce__(self) -> tuple[Any, tuple[()]]:
        return (_client_log, ())


def _client_log() -> ClientLog:
    return CLIENT_LOG


#: The one `ClientLog` of this process (every Kafka client streamkeep creates uses it).
CLIENT_LOG = ClientLog()
