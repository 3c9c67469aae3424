"""socket_text_stream on a port with no server: a warning names the address (once), and lines flow once it is up."""

from __future__ import annotations

import logging
import socket
import struct
import time
from collections.abc import Callable

import pytest

import streamkeep as sk
from streamkeep.errors import ConfigError


def _wait(cond: Callable[[], object], what: str, timeout_s: float = 20.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not cond():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out waiting for {what}")
        time.sleep(0.02)


def _server(port: int = 0) -> socket.socket:
    """A listening loopback server (on `port`, 0: a free one) whose accept gives up after 20 s."""
    server = socket.create_server(("127.0.0.1", port))
    server.settimeout(20)
    return server


def _lines_job(port: int) -> tuple[sk.StreamingContext, list[str]]:
    """A job reading the lines of 127.0.0.1:`port` into the returned list, batch after batch."""
    got: list[str] = []
    ssc = sk.StreamingContext(0.1)
    ssc.socket_text_stream("127.0.0.1", port, name="lines").foreach_batch(lambda b: got.extend(b.collect()))
    return ssc, got


def test_no_server_on_the_port_warns_once_then_reads_when_it_comes_up(caplog: pytest.LogCaptureFixture) -> None:
    probe = socket.create_server(("127.0.0.1", 0))
    port = probe.getsockname()[1]
    probe.close()  # nobody listens on `port` now
    got: list[str] = []
    ssc = sk.StreamingContext(0.1)
    ssc.socket_text_stream("127.0.0.1", port, name="lines").foreach_batch(lambda b: got.extend(b.collect()))
    caplog.set_level(logging.INFO, logger="streamkeep.sources.socket")
    ssc.start()
    server = None
    try:
        def warned() -> list[logging.LogRecord]:
            return [r for r in caplog.records if r.levelno == logging.WARNING and "cannot connect" in r.getMessage()]

        _wait(warned, "the warning about the missing server")
        msg = warned()[0].getMessage()
        assert f"127.0.0.1:{port}" in msg and "'lines'" in msg and "empty until it connects" in msg
        server = socket.create_server(("127.0.0.1", port))
        server.settimeout(20)
        conn, _ = server.accept()
        with conn:
            conn.sendall(b"hello\nworld\n")
            _wait(lambda: got == ["hello", "world"], "the lines sent once the server is up")
        assert len(warned()) == 1  # one warning for the outage, not one per retry
        assert any("connected to" in r.getMessage() for r in caplog.records)
    finally:
        ssc.stop()
        if server is not None:
            server.close()


@pytest.mark.parametrize("port", [70000, 0, -1, "99x", 99.5, True])
def test_a_port_out_of_range_is_refused_when_the_graph_is_built(port: object) -> None:
    ssc = sk.StreamingContext(1.0)
    with pytest.raises(ConfigError, match=r"socket_text_stream 'lines': port must be an int from 1 to 65535"):
        ssc.socket_text_stream("127.0.0.1", port, name="lines")  # type: ignore[arg-type]


@pytest.mark.parametrize("port", ["9999", 9999])
def test_a_port_given_as_digits_or_an_int_like_is_taken(port: object) -> None:
    """A port read from argv or the environment (a string of digits) worked before the up-front check: it still does."""
    ssc = sk.StreamingContext(1.0)
    lines = ssc.socket_text_stream("127.0.0.1", port, name="lines")  # type: ignore[arg-type]
    assert lines._node.source.port == 9999  # type: ignore[attr-defined]



def test_a_dropped_connection_is_said_to_be_lost_then_reconnects(caplog: pytest.LogCaptureFixture) -> None:
    server = _server()
    port = server.getsockname()[1]
    ssc, got = _lines_job(port)
    caplog.set_level(logging.INFO, logger="streamkeep.sources.socket")
    ssc.start()
    try:
        conn, _ = server.accept()
        with conn:
            conn.sendall(b"before\n")
            _wait(lambda: got == ["before"], "the line sent before the drop")
            server.close()  # nobody listens any more ...
        # ... and the connection drops: the source retries

        def warnings() -> list[str]:
            return [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]

        _wait(warnings, "the warning about the lost connection")
        (msg,) = warnings()
        assert f"the connection to 127.0.0.1:{port} was lost" in msg and "'lines'" in msg and "reconnecting" in msg
        server = _server(port)  # the server comes back on the same port
        conn, _ = server.accept()
        with conn:
            conn.sendall(b"after\n")
            _wait(lambda: got == ["before", "after"], "the line sent after the reconnect")
        assert all("cannot connect" not in m for m in warnings())  # it had connected: the outage is a lost connection
        assert any("connected to" in r.getMessage() for r in caplog.records if r.levelno == logging.INFO)
    finally:
        ssc.stop()
        server.close()


def test_a_partial_line_cut_by_a_broken_connection_is_not_a_record(caplog: pytest.LogCaptureFixture) -> None:
    """"12345" cut to "12" by a reset connection is dropped with a warning giving its size (Spark drops it too)."""
    server = _server()
    port = server.getsockname()[1]
    ssc, got = _lines_job(port)
    caplog.set_level(logging.INFO, logger="streamkeep.sources.socket")
    ssc.start()
    try:
        conn, _ = server.accept()
        conn.sendall(b"before\n12")  # one send: "12" is buffered by the time "before" is delivered
        _wait(lambda: got == ["before"], "the complete line")
        conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        conn.close()  # a reset (ECONNRESET at the source), not a clean close
        _wait(lambda: any("partial line" in r.getMessage() for r in caplog.records), "the warning about the cut line")
        (msg,) = [r.getMessage() for r in caplog.records if "partial line" in r.getMessage()]
        assert "dropped 2 bytes" in msg and "'lines'" in msg
        conn, _ = server.accept()  # the source reconnects
        with conn:
            conn.sendall(b"after\n")
            _wait(lambda: "after" in got, "the line sent after the reconnect")
        assert got == ["before", "after"]  # before the fix: ["before", "12", "after"]
    finally:
        ssc.stop()
        server.close()


def test_a_last_line_without_newline_is_a_record_when_the_server_closes_cleanly() -> None:
    server = _server()
    port = server.getsockname()[1]
    ssc, got = _lines_job(port)
    ssc.start()
    try:
        conn, _ = server.accept()
        with conn:
            conn.sendall(b"one\nlast")
        _wait(lambda: got == ["one", "last"], "the last line, complete at the clean close")
    finally:
        ssc.stop()
        server.close()
