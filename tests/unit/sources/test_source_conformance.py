"""Every built-in source passes `streamkeep.testing.conformance.check_source` (issue 11.9).

Kafka runs it on the real mock broker: tests/integration/test_conformance.py.
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from streamkeep.sources.binary import BinaryRecordsSource
from streamkeep.sources.files import TextFileSource
from streamkeep.sources.queue import ConstantSource, QueueSource
from streamkeep.sources.rate import RateSource
from streamkeep.sources.socket import SocketTextSource
from streamkeep.testing.conformance import check_source


def test_queue_source() -> None:
    read = check_source(lambda: QueueSource([[1, 2], [3], [], [4, 5, 6]], name="q", num_partitions=2), batches=5)
    assert sorted(r for b in read for p in b for r in p) == [1, 2, 3, 4, 5, 6]


def test_partitioned_queue_source() -> None:
    read = check_source(lambda: QueueSource([[[1], [2, 3]], [[4], []]], name="q", partitioned=True))
    assert read[:2] == [[[1], [2, 3]], [[4], []]]


def test_constant_source() -> None:
    read = check_source(lambda: ConstantSource(["a", "b"], name="c"))
    assert read == [[["a", "b"]]] * 4


def test_rate_source() -> None:
    read = check_source(lambda: RateSource(5, name="r", num_partitions=2))
    assert sum(len(p) for b in read for p in b) == 20


def _write(path: Path, data: bytes) -> None:
    tmp = path.with_name("." + path.name)
    tmp.write_bytes(data)
    tmp.rename(path)


def test_text_file_source(tmp_path: Path) -> None:
    read = check_source(lambda: TextFileSource(tmp_path, name="files"), feed=lambda i: _write(tmp_path / f"in-{i}.txt", f"line {i}\nmore {i}\n".encode()))
    assert sorted(r for b in read for p in b for r in p) == sorted(f"{w} {i}" for i in range(4) for w in ("line", "more"))


def test_binary_records_source(tmp_path: Path) -> None:
    read = check_source(lambda: BinaryRecordsSource(str(tmp_path), 2, name="bin"), feed=lambda i: _write(tmp_path / f"in-{i}.bin", bytes([i, i, i + 1, i + 1])))
    assert sorted(r for b in read for p in b for r in p) == sorted(bytes([j, j]) for i in range(4) for j in (i, i + 1))


@pytest.fixture
def line_server() -> Iterator[tuple[int, list[socket.socket]]]:
    """A TCP server on 127.0.0.1 that accepts connections; the test sends lines on them."""
    srv = socket.create_server(("127.0.0.1", 0))
    conns: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        srv.settimeout(0.1)
        while not stop.is_set():
            try:
                conn, _ = srv.accept()
            except OSError:
                continue
            conns.append(conn)

    th = threading.Thread(target=accept, daemon=True)
    th.start()
    yield srv.getsockname()[1], conns
    stop.set()
    th.join()
    for c in conns:
        c.close()
    srv.close()


def _wait(cond: Any, what: str, timeout_s: float = 10.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not cond():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out waiting for {what}")
        time.sleep(0.01)


def test_socket_source(line_server: tuple[int, list[socket.socket]]) -> None:
    port, conns = line_server
    made: list[SocketTextSource] = []

    def factory() -> SocketTextSource:
        made.append(SocketTextSource("127.0.0.1", port, name="sock"))
        return made[-1]

    def feed(i: int) -> None:
        _wait(lambda: conns, "the source to connect")
        conns[0].sendall(f"line {i}\n".encode())
        _wait(lambda: len(made[0]._buf) > 0, f"line {i} to arrive")  # the live buffer: planned next

    read = check_source(factory, feed=feed, same_plans_after_restore=False)
    assert [r for b in read for p in b for r in p] == [f"line {i}" for i in range(4)]


def test_a_source_that_reads_a_plan_differently_fails_the_check() -> None:
    """The suite can fail: a source whose second read of a plan differs is caught (recovery would not be exact)."""

    class Drifting(RateSource):
        reads = 0

        def read(self, plan: Any, batch_time: int) -> list[list[Any]]:
            Drifting.reads += 1
            return [[Drifting.reads]]

    with pytest.raises(AssertionError, match=r"^replay: Drifting.read\(plan, 1000\) gave other records the second time"):
        check_source(lambda: Drifting(5, name="r"))


def test_a_source_that_forgets_its_position_fails_the_check() -> None:
    class Forgetful(QueueSource):
        def restore(self, position: Any) -> None:
            pass

    with pytest.raises(AssertionError, match="^continue: after restore"):
        check_source(lambda: Forgetful([[1], [2], [3], [4], [5]], name="q"))
