"""`await_brokers`: the Kafka clients' wait for a bootstrap address, with the reason it is unreachable."""

from __future__ import annotations

import socket
import threading

import pytest

from streamkeep._kafka_reach import await_brokers, bootstrap_addresses


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_bootstrap_addresses_parse_as_librdkafka_reads_them() -> None:
    assert bootstrap_addresses("a:1, SSL://b:2,[::1]:3,c,::1") == [("a", 1), ("b", 2), ("::1", 3), ("c", 9092), ("::1", 9092)]
    assert bootstrap_addresses("a:notaport") == []  # left to the client to report


def test_a_refused_address_is_told_once_and_retried_until_the_deadline() -> None:
    port = _closed_port()
    told: list[str] = []
    slept: list[float] = []
    why = await_brokers(f"127.0.0.1:{port}", timeout_s=0.5, first_backoff_s=0.1, on_unreachable=told.append, sleep=slept.append)
    assert why is not None and f"127.0.0.1:{port}: connection refused" in why, why
    assert told == [why]  # once, at the first round
    assert len(slept) >= 2 and slept[:2] == [0.1, 0.2], slept  # backoff doubling


def test_a_listening_address_ends_the_wait() -> None:
    with socket.socket() as srv:
        srv.bind(("127.0.0.1", 0))
        srv.listen()
        port = srv.getsockname()[1]
        told: list[str] = []
        closed = _closed_port()
        assert await_brokers(f"127.0.0.1:{closed},127.0.0.1:{port}", timeout_s=5, first_backoff_s=0.1, on_unreachable=told.append) is None
        assert told == []


def test_a_slow_name_resolution_is_bounded_by_the_deadline(monkeypatch: pytest.MonkeyPatch) -> None:
    """create_connection resolved names with no timeout: a slow DNS server held the wait past timeout_s."""
    release = threading.Event()

    def slow_getaddrinfo(*args: object, **kwargs: object) -> list[object]:
        release.wait(10)
        raise socket.gaierror(socket.EAI_AGAIN, "Temporary failure in name resolution")

    monkeypatch.setattr(socket, "getaddrinfo", slow_getaddrinfo)
    try:
        why = await_brokers("kafka.example:9092", timeout_s=0.2, first_backoff_s=0.1, on_unreachable=lambda w: None, sleep=lambda s: None)
    finally:
        release.set()
    assert why is not None and "kafka.example:9092: timed out resolving the name" in why, why


def test_silent_addresses_share_the_time_left_rather_than_2_s_each() -> None:
    """With N addresses that do not answer, a round took up to N x 2 s: the attempts after the deadline are not made."""
    held: list[socket.socket] = []
    servers = []
    for _ in range(3):  # a listener whose accept queue is full drops new SYNs: a connect to it hangs (a silent address)
        srv = socket.socket()
        srv.bind(("127.0.0.1", 0))
        srv.listen(0)
        held.append(srv)
        for _ in range(2):
            c = socket.socket()
            c.setblocking(False)
            c.connect_ex(srv.getsockname())
            held.append(c)
        servers.append(f"127.0.0.1:{srv.getsockname()[1]}")
    try:
        why = await_brokers(",".join(servers), timeout_s=0.5, first_backoff_s=0.1, on_unreachable=lambda w: None, sleep=lambda s: None)
    finally:
        for s in held:
            s.close()
    assert why is not None and f"{servers[0]}: timed out" in why, why
    assert f"{servers[2]}: not tried (the wait ran out)" in why, why


def test_an_ip_address_is_probed_without_the_resolver(monkeypatch: pytest.MonkeyPatch) -> None:
    """An address literal needs no name resolution: no resolver thread, no IDNA codec, at every start-up."""

    def no_resolver(*args: object, **kwargs: object) -> list[object]:
        raise AssertionError(f"getaddrinfo{args} called for an IP address")

    with socket.socket() as srv:
        srv.bind(("127.0.0.1", 0))
        srv.listen()
        port = srv.getsockname()[1]
        monkeypatch.setattr(socket, "getaddrinfo", no_resolver)
        assert await_brokers(f"127.0.0.1:{port}", timeout_s=5, first_backoff_s=0.1, on_unreachable=lambda w: None) is None
        closed = _closed_port()
        why = await_brokers(f"[::1]:{closed},127.0.0.1:{closed}", timeout_s=0.1, first_backoff_s=0.1, on_unreachable=lambda w: None, sleep=lambda s: None)
    assert why is not None and f"127.0.0.1:{closed}: connection refused" in why, why
    assert "getaddrinfo" not in why


@pytest.mark.parametrize("host", ["127.0.0.1", "localhost"])
def test_a_port_out_of_range_is_named_not_raised_as_an_overflow(host: str) -> None:
    told: list[str] = []
    why = await_brokers(f"{host}:99999", timeout_s=0.2, first_backoff_s=0.05, on_unreachable=told.append, sleep=lambda _s: None)
    assert why is not None and "port 99999 is not in 1-65535" in why, why
    assert told and "bootstrap_servers" in told[0]
