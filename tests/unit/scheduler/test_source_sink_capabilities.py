"""Optional source and sink capabilities are declared protocols, not probed attributes (issue 11.5)."""

from __future__ import annotations

from typing import Any

import pytest

import streamkeep as sk
from streamkeep.errors import SinkError
from streamkeep.sinks import FileSink
from streamkeep.sinks.base import FencedSink, MarkedSink, SettlingSink
from streamkeep.sinks.kafka import KafkaSink
from streamkeep.sinks.redis import RedisSink
from streamkeep.sources.base import Backpressured, BatchIntervalAware, Materialisable, OffsetCommitting
from streamkeep.sources.files import TextFileSource
from streamkeep.sources.kafka import KafkaSource
from streamkeep.sources.queue import QueueSource
from streamkeep.sources.rate import RateSource
from streamkeep.sources.socket import SocketTextSource
from streamkeep.testing import ListSink, ManualClock


def test_builtin_sources_and_sinks_declare_their_capabilities() -> None:
    assert issubclass(KafkaSource, BatchIntervalAware) and issubclass(KafkaSource, Backpressured) and issubclass(KafkaSource, OffsetCommitting)
    assert issubclass(RateSource, BatchIntervalAware) and not issubclass(RateSource, Backpressured)
    assert not issubclass(TextFileSource, OffsetCommitting)
    assert QueueSource.can_materialise is True and SocketTextSource.can_materialise is True
    assert issubclass(RedisSink, MarkedSink) and issubclass(KafkaSink, MarkedSink) and not issubclass(FileSink, MarkedSink)
    assert issubclass(FileSink, FencedSink)
    assert issubclass(RedisSink, SettlingSink) and not issubclass(KafkaSink, SettlingSink) and not issubclass(FileSink, SettlingSink)


class _Counting:
    """A user-written replayable source with every optional capability."""

    replayable = True

    def __init__(self) -> None:
        self.name, self.next, self.calls = "c", 0, []  # type: ignore[var-annotated]
        self.url: str | None = None
        self.committed_at_offset_commit: list[Any] = []

    def set_batch_interval_ms(self, interval_ms: int) -> None:
        self.calls.append(("interval", interval_ms))

    def open(self, blobs: Any) -> None:
        self.calls.append(("open",))

    def restore(self, position: Any) -> None:
        self.next = position

    def position(self) -> Any:
        return self.next

    def plan(self, batch_time: int) -> Any:
        self.next += 2
        return [self.next - 2, self.next]

    def read(self, plan: Any, batch_time: int) -> list[list[Any]]:
        return [list(range(plan[0], plan[1]))]

    def exhausted(self) -> bool:
        return self.next >= 6

    def close(self) -> None:
        pass

    def describe(self) -> dict[str, Any]:
        return {"kind": "counting"}

    def observe(self, batch_time: int, processing_ms: float, records: int, *, scheduling_delay_ms: float = 0.0) -> None:
        self.calls.append(("observe", batch_time, records))

    def commit_offsets(self, position: Any) -> None:
        self.calls.append(("commit", position))
        if self.url is not None:  # the batch that reached `position` is committed (durable) by now
            from streamkeep.checkpoint import Checkpoint

            self.committed_at_offset_commit.append(Checkpoint(self.url).commits()[0].data["positions"]["c"])


def test_a_user_source_gets_the_calls_its_capabilities_declare(tmp_path: Any) -> None:
    src = _Counting()
    assert isinstance(src, BatchIntervalAware) and isinstance(src, Backpressured) and isinstance(src, OffsetCommitting)
    assert not isinstance(src, Materialisable)
    src.url = str(tmp_path / "c")
    ssc = sk.StreamingContext(2.0, checkpoint=src.url, clock=ManualClock())
    out = ListSink()
    ssc.add_source(src).write_to(out)
    ssc.run()
    ssc.stop()
    assert out.batches == [(2000, [0, 1]), (4000, [2, 3]), (6000, [4, 5])]
    assert src.calls[:2] == [("interval", 2000), ("open",)]
    # observe() follows each batch; commit_offsets() each commit, once it is durable (the commit is written in the
    # background while the next batch runs, so the two sequences may interleave either way)
    assert [c for c in src.calls if c[0] == "observe"] == [("observe", 2000, 2), ("observe", 4000, 2), ("observe", 6000, 2)]
    assert [c for c in src.calls if c[0] == "commit"] == [("commit", 2), ("commit", 4), ("commit", 6)]
    # the checkpoint's newest commit on disk had reached each position when the source was told it
    assert [p >= want for p, want in zip(src.committed_at_offset_commit, (2, 4, 6), strict=True)] == [True] * 3


class _Marked:
    """A user sink with a marker: asking for it connects (as RedisSink's and KafkaSink's last_batch do)."""

    def __init__(self, name: str, *, fail: bool = False) -> None:
        self.name, self.fail, self.calls = name, fail, []  # type: ignore[var-annotated]

    def last_batch(self) -> int | None:
        self.calls.append("last_batch")
        if self.fail:
            msg = f"{self.name}: cannot reach the marker"
            raise SinkError(msg)
        return None

    def open(self) -> None:
        self.calls.append("open")

    def write(self, batch_time: int, records: list[Any]) -> None:
        self.calls.append("write")

    def close(self) -> None:
        self.calls.append("close")


def test_a_start_that_fails_closes_the_sinks_it_asked_for_their_marker(tmp_path: Any) -> None:
    """A fresh start asks every marked sink for its marker (which connects it) before opening any: when a
    later sink fails, the ones already connected are closed, not left with a client retrying in the background."""
    first, broken = _Marked("first"), _Marked("broken", fail=True)
    assert isinstance(first, MarkedSink)
    ssc = sk.StreamingContext(1.0, checkpoint=str(tmp_path / "c"), clock=ManualClock())
    s = ssc.queue_stream([[1]], name="q")
    s.write_to(first)
    s.write_to(broken)
    with pytest.raises(SinkError, match="cannot reach the marker"):
        ssc.run(max_batches=1)
    assert first.calls == ["last_batch", "close"]
    assert broken.calls[-1] == "close"


class _Settling:
    """A user sink whose writes are confirmed later (SettlingSink): it records what the scheduler calls."""

    name = "settling"

    def __init__(self, url: str | None) -> None:
        self.url, self.calls = url, []  # type: ignore[var-annotated]

    def open(self) -> None:
        self.calls.append(("open",))

    def defer_replies(self) -> None:
        self.calls.append(("defer",))

    def write(self, batch_time: int, records: list[Any]) -> None:
        self.calls.append(("write", batch_time))

    def settle(self, batch_time: int) -> None:
        committed = []
        if self.url is not None:  # the batch is not committed before it is settled
            from streamkeep.checkpoint import Checkpoint

            committed = [c.data["batch_time"] for c in Checkpoint(self.url).commits()]
        self.calls.append(("settle", batch_time, batch_time in committed))

    def close(self) -> None:
        self.calls.append(("close",))


def test_a_settling_sink_is_settled_before_each_commit_and_only_with_a_checkpoint(tmp_path: Any) -> None:
    url = str(tmp_path / "c")
    sink = _Settling(url)
    assert isinstance(sink, SettlingSink)
    src = _Counting()
    ssc = sk.StreamingContext(2.0, checkpoint=url, clock=ManualClock())
    ssc.add_source(src).write_to(sink)
    ssc.run()
    ssc.stop()
    assert sink.calls[:2] == [("open",), ("defer",)]
    assert [c for c in sink.calls if c[0] == "settle"] == [("settle", 2000, False), ("settle", 4000, False), ("settle", 6000, False)]
    assert sink.calls[-1] == ("close",)
    plain = _Settling(None)
    ssc = sk.StreamingContext(2.0, clock=ManualClock())
    ssc.queue_stream([[1], [2]], name="q").write_to(plain)
    ssc.run()
    ssc.stop()
    assert plain.calls == [("open",), ("write", 2000), ("write", 4000), ("close",)]  # no checkpoint: written synchronously
