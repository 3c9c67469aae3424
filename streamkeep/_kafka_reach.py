"""Waiting for a Kafka cluster to accept connections before a client's first request, and saying why it does not.

librdkafka retries a closed port silently inside each request (a metadata request waits
its whole timeout, ~5 s, then reports only "Broker transport failure"), so a source or
sink pointed at the wrong address learnt why only when its wait ran out. A TCP connect
to each bootstrap address answers in milliseconds with the reason (connection refused,
timed out, unknown host); the caller logs it at once and keeps waiting for a broker that
comes up late. Shared by the Kafka source and the Kafka sink, which may not import each
other.

Imports only the standard library; must not import sources, sinks or anything above them.
"""

from __future__ import annotations

import errno
import socket
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import logging

__all__ = ["await_brokers", "bootstrap_addresses", "require_brokers"]

#: librdkafka's port when a bootstrap address has none.
DEFAULT_PORT = 9092

#: The longest a single connection attempt waits for an answer (a round also ends at the deadline).
ATTEMPT_S = 2.0


def bootstrap_addresses(servers: str) -> list[tuple[str, int]]:
    """``"h1:9092,SSL://h2:9093,[::1]:9094"`` -> ``[(host, port), ...]``; [] if any entry is not host[:port]."""
    out: list[tuple[str, int]] = []
    for raw in servers.split(","):
        item = raw.strip()
        if not item:
            continue
        item = item.split("://", 1)[-1]
        if item.startswith("["):  # [IPv6]:port
            host, _, rest = item[1:].partition("]")
            port = rest[1:] if rest.startswith(":") else ""
        else:
            host, sep, port = item.rpartition(":")
            if not sep or ":" in host:  # a bare host, or a bare IPv6 address
                host, port = item, ""
        if not host or (port and not port.isdigit()):
            return []  # librdkafka will say what is wrong with it
        out.append((host, int(port) if port else DEFAULT_PORT))
    return out


class _ResolveTimeout(OSError):
    """The name did not resolve within the time left (getaddrinfo itself has no timeout)."""


def _reason(exc: OSError) -> str:
    if isinstance(exc, _ResolveTimeout):
        return "timed out resolving the name (a slow or unreachable DNS server)"
    if isinstance(exc, ConnectionRefusedError):
        return "connection refused: nothing listens there"
    if isinstance(exc, TimeoutError):  # socket.timeout is TimeoutError
        return "timed out: no answer (a host that is down or a firewall)"
    if isinstance(exc, socket.gaierror):
        return f"unknown host ({exc.strerror})"
    return exc.strerror or str(exc)


def _literal(host: str, port: int) -> list[tuple[Any, ...]] | None:
    """`getaddrinfo`'s answer for an IP address literal (``127.0.0.1``, ``::1``), without asking the resolver; else None.

    Spares a start-up the resolver thread and the IDNA codec a str host name costs (~2 ms).
    """
    for family, sockaddr in ((socket.AF_INET, (host, port)), (socket.AF_INET6, (host, port, 0, 0))):
        try:
            socket.inet_pton(family, host)
        except (OSError, ValueError):
            continue
        return [(family, socket.SOCK_STREAM, socket.IPPROTO_TCP, "", sockaddr)]
    return None


def _resolve(host: str, port: int, timeout_s: float) -> list[tuple[Any, ...]]:
    """``getaddrinfo(host, port)``, given up after `timeout_s` (in a daemon thread: a slow resolver cannot hold the caller)."""
    literal = _literal(host, port)
    if literal is not None:
        return literal
    box: list[Any] = []

    def lookup() -> None:
        try:
            box.append(socket.getaddrinfo(host, port, type=socket.SOCK_STREAM))
        except OSError as exc:
            box.append(exc)

    worker = threading.Thread(target=lookup, name="streamkeep-kafka-resolve", daemon=True)
    worker.start()
    worker.join(timeout_s)
    if not box:
        msg = f"resolving {host} took over {timeout_s:.1f} s"
        raise _ResolveTimeout(msg)
    if isinstance(box[0], OSError):
        raise box[0]
    return list(box[0])


def _connect(host: str, port: int, deadline: float) -> None:
    """Open (and close) a TCP connection to `host`:`port`, each step bounded by `deadline` and 2 s; raises OSError."""
    if not 0 < port < 65536:  # socket.connect would raise OverflowError (librdkafka wraps such a port silently)
        raise OSError(errno.EINVAL, f"port {port} is not in 1-65535: fix the address in bootstrap_servers")
    infos = _resolve(host, port, max(0.0, deadline - time.monotonic()))
    last: OSError | None = None
    for family, kind, proto, _, sockaddr in infos:
        left = min(ATTEMPT_S, deadline - time.monotonic())
        if left <= 0:
            raise last or TimeoutError()
        with socket.socket(family, kind, proto) as sock:
            sock.settimeout(left)
            try:
                sock.connect(sockaddr)
                return
            except OSError as exc:
                last = exc
    msg = f"{host}: no address"
    raise last or OSError(msg)


def _probe(addrs: list[tuple[str, int]], deadline: float) -> str | None:
    """None if one of `addrs` accepts a TCP connection before `deadline` (time.monotonic()), else why each did not.

    Each attempt (name resolution included) gets at most the time left, so a round with several silent
    addresses ends at the deadline; the addresses it had no time for are listed as not tried.
    """
    why: list[str] = []
    for host, port in addrs:
        if deadline - time.monotonic() <= 0:
            why.append(f"{host}:{port}: not tried (the wait ran out)")
            continue
        try:
            _connect(host, port, deadline)
            return None
        except OSError as exc:
            why.append(f"{host}:{port}: {_reason(exc)}")
    return "; ".join(why)


def await_brokers(
    servers: str,
    *,
    timeout_s: float,
    first_backoff_s: float,
    on_unreachable: Callable[[str], None],
    sleep: Callable[[float], object] = time.sleep,
) -> str | None:
    """Wait up to `timeout_s` until a bootstrap address of `servers` accepts a connection.

    Calls ``on_unreachable(why)`` once, at the first failed round (within about a second:
    a refused connect fails at once, one that hangs after ``min(2, timeout_s)`` s), then
    retries with a backoff doubling from `first_backoff_s` up to 2 s. Each connection attempt, and
    the name resolution before it, gets at most the time left (and 2 s), so the wait ends within
    about 50 ms of `timeout_s` whatever the number of silent addresses or a slow DNS server.

    Returns:
        None once reachable (or when `servers` cannot be parsed: the client reports
        that), else the last round's reasons, e.g. ``"127.0.0.1:9: connection refused: ..."``.
    """
    addrs = bootstrap_addresses(servers)
    if not addrs:
        return None
    deadline = time.monotonic() + timeout_s
    delay = first_backoff_s
    told = False
    while True:
        # each round ends at the deadline, but gets at least 50 ms (the last one starts at it)
        why = _probe(addrs, max(deadline, time.monotonic() + 0.05))
        if why is None:
            return None
        left = deadline - time.monotonic()
        if left <= 0:
            return why
        if not told:
            on_unreachable(why)
            told = True
        sleep(min(delay, left))  # the last round probes at the deadline
        delay = min(2 * delay, 2.0)


def require_brokers(
    who: str,
    servers: str,
    *,
    timeout_s: float,
    first_backoff_s: float,
    setting: str,
    after: str,
    error: type[Exception],
    log: logging.Logger,
) -> None:
    """`await_brokers` for a client: a WARNING at the first failed round, `error` when the wait runs out.

    `who` names the client (``"kafka source 'clicks'"``), `setting` where its ``timeout_s`` is set,
    `after` what the failure means for the batch, `log` the client's logger; both messages say what to do.
    """

    def warn(why: str) -> None:
        log.warning(
            "%s: cannot reach the brokers at %s (%s); waiting up to %g s for them (timeout_s=%g of %s sets the wait), "
            "then the job fails. Start the broker or fix bootstrap_servers",
            who,
            servers,
            why,
            timeout_s,
            timeout_s,
            setting,
        )

    why = await_brokers(servers, timeout_s=timeout_s, first_backoff_s=first_backoff_s, on_unreachable=warn)
    if why is not None:
        msg = (
            f"{who}: no broker reachable at {servers} within {timeout_s:g} s ({why}). Start the broker or fix "
            f"bootstrap_servers; timeout_s= sets how long it waits for them (default 30 s). {after}"
        )
        raise error(msg)
