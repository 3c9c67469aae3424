"""`await_brokers`: the Kafka clients' wait for a bootstrap address, with the reason it is unreachable."""

from __future__ import annotations

import socket

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
