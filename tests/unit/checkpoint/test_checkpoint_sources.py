"""Sources under a checkpoint: queue batches are materialised, socket lines go to a write-ahead log.

A batch is made uncommitted by failing its output after the plan was written
(the plan and its blobs are durable; the commit record is not); recovery must
replay exactly the planned records even though the source cannot produce them again.
"""

from __future__ import annotations

import socket
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from _ckpt_jobs import run_until, wait_for

import streamkeep as sk
from streamkeep.checkpoint import Checkpoint, log_path
from streamkeep.errors import CheckpointError, ConfigError, UserFunctionError
from streamkeep.testing import ListSink, ManualClock


def _failing_output(fail_at_ms: int | None) -> Callable[[Any, Any], None]:
    def out(t: Any, batch: Any) -> None:
        if fail_at_ms is not None and int(t.timestamp() * 1000) == fail_at_ms:
            raise RuntimeError("driver dies before the commit")

    return out


def queue_job(url: str, items: list[list[Any]], sink: ListSink, fail_at_ms: int | None = None) -> Callable[[], sk.StreamingContext]:
    def setup() -> sk.StreamingContext:
        ssc = sk.StreamingContext(1.0, checkpoint=url, clock=ManualClock())
        q = ssc.queue_stream(items, name="q")
        q.write_to(sink)
        q.map(lambda w: (w, 1)).update_state_by_key(lambda new, old: (old or 0) + sum(new), name="counts").foreach_batch(
            _failing_output(fail_at_ms)
        )
        return ssc

    return setup


ITEMS = [["a", "b"], ["b", ("t", 1)], ["c"], ["a", "a"], ["d"]]


def test_queue_batches_are_materialised_and_replayed(tmp_path: Path) -> None:
    url = str(tmp_path / "c")
    first = ListSink()
    with pytest.raises(UserFunctionError):
        run_until(url, queue_job(url, ITEMS, first, fail_at_ms=3000), 5)
    ck = Checkpoint(url)
    assert 3000 in ck.plan_times() and max(c.batch_time for c in ck.commits()) == 2000
    blobs = sorted(p.name for p in Path(url, "blobs").iterdir())
    assert "q%2F3000" in blobs  # the planned batch's records live in the checkpoint
    assert ck.get_blob("q/3000") == ["c"]
    # The new process's queue holds other data for batch 3: the replay must use the materialised one.
    changed = [list(x) for x in ITEMS]
    changed[2] = ["SHOULD NOT BE READ"]
    sink = ListSink()
    run_until(url, queue_job(url, changed, sink), 5)
    assert sink.batches == [(3000, ["c"]), (4000, ["a", "a"]), (5000, ["d"])]
    # Blobs are kept only for batches after the oldest retained commit (keep_commits=2: 4000 and 5000).
    assert sorted(p.name for p in Path(url, "blobs").iterdir()) == ["q%2F5000"]


def test_queue_records_that_cannot_be_stored_are_refused_clearly(tmp_path: Path) -> None:
    url = str(tmp_path / "c")
    with pytest.raises(CheckpointError, match=r"blob 'q/1000'.*object"):
        run_until(url, queue_job(url, [[object()]], ListSink()), 1)


class LineServer:
    """A TCP server on 127.0.0.1 that sends the lines it is given to whoever connects."""

    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen()
        self.port = self.sock.getsockname()[1]
        self.conns: list[socket.socket] = []
        self._thread = threading.Thread(target=self._accept, daemon=True)
        self._thread.start()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.conns.append(conn)

    def send(self, lines: list[str]) -> None:
        wait_for(lambda: bool(self.conns), 10, "the socket source to connect")
        self.conns[-1].sendall("".join(f"{ln}\n" for ln in lines).encode())

    def close(self) -> None:
        for c in self.conns:
            c.close()
        self.sock.close()


@pytest.fixture
def line_server() -> Iterator[LineServer]:
    server = LineServer()
    try:
        yield server
    finally:
        server.close()


def socket_job(url: str, port: int, sink: ListSink, fail_at_ms: int | None = None) -> tuple[Callable[[], sk.StreamingContext], list[Any]]:
    sources: list[Any] = []

    def setup() -> sk.StreamingContext:
        ssc = sk.StreamingContext(1.0, checkpoint=url, clock=ManualClock())
        lines = ssc.socket_text_stream("127.0.0.1", port, name="sock")
        sources.append(lines._node.source)
        lines.write_to(sink)
        lines.foreach_batch(_failing_output(fail_at_ms))
        return ssc

    return setup, sources


def test_socket_lines_planned_before_a_crash_are_replayed(tmp_path: Path, line_server: LineServer) -> None:
    url = str(tmp_path / "c")
    first = ListSink()
    setup, sources = socket_job(url, line_server.port, first, fail_at_ms=2000)
    ssc = sk.StreamingContext.get_or_create(url, setup)
    try:
        line_server.send(["one", "two"])
        wait_for(lambda: sources[0].buffered() == 2, 10, "two lines received")
        ssc.run(max_batches=1)
        line_server.send(["three", "four", "five"])
        wait_for(lambda: sources[0].buffered() == 3, 10, "three lines received")
        with pytest.raises(UserFunctionError):
            ssc.run(max_batches=1)  # batch 2000 is planned (lines in the WAL), then the driver "dies"
    finally:
        ssc.stop()
    assert first.batches[0] == (1000, ["one", "two"])
    assert Checkpoint(url).get_blob("sock/wal-2000") == ["three", "four", "five"]
    sink = ListSink()
    setup2, _ = socket_job(url, line_server.port, sink)
    ssc2 = sk.StreamingContext.get_or_create(url, setup2)
    try:
        ssc2.run(max_batches=2)  # the replayed batch, then an empty one (the server sends nothing new)
    finally:
        ssc2.stop()
    assert sink.batches == [(2000, ["three", "four", "five"]), (3000, [])]


def test_non_replayable_custom_source_is_refused(tmp_path: Path) -> None:
    class Once:
        name = "once"
        replayable = False

        def open(self, blobs: Any) -> None: ...
        def restore(self, position: Any) -> None: ...
        def position(self) -> Any:
            return {}

        def plan(self, t: int) -> Any:
            return {}

        def read(self, plan: Any, t: int) -> list[list[Any]]:
            return [[]]

        def exhausted(self) -> bool:
            return False

        def close(self) -> None: ...
        def describe(self) -> dict[str, Any]:
            return {"kind": "once"}

    url = str(tmp_path / "c")

    def setup() -> sk.StreamingContext:
        ssc = sk.StreamingContext(1.0, checkpoint=url, clock=ManualClock())
        ssc.add_source(Once()).foreach_batch(lambda b: None)
        return ssc

    with pytest.raises(ConfigError, match="'once' cannot replay its input"):
        sk.StreamingContext.get_or_create(url, setup)


def test_a_restart_keeps_the_blob_of_a_batch_its_fallback_commit_would_replay(tmp_path: Path) -> None:
    """After a restart (whose recovery sweeps), the newest commit record is lost: the fallback commit (4000)
    replays batch 5000 from its plan, whose records only its blob holds (this process's queue differs)."""
    url = str(tmp_path / "c")
    run_until(url, queue_job(url, ITEMS, ListSink()), 5)
    run_until(url, queue_job(url, ITEMS, ListSink()), 5)  # a restart that runs nothing
    newest = max(Checkpoint(url).commits(), key=lambda r: r.seq)
    assert newest.batch_time == 5000
    Path(url, log_path(newest.seq)).unlink()
    changed = [list(x) for x in ITEMS]
    changed[4] = ["SHOULD NOT BE READ"]
    sink = ListSink()
    run_until(url, queue_job(url, changed, sink), 5)
    assert sink.batches == [(5000, ["d"])]
