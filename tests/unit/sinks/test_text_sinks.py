"""pprint and save_as_text_files are sinks (`PPrintSink`, `TextFilesSink`) used through write_to (issue 11.6)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

import streamkeep as sk
from streamkeep.batch import Batch
from streamkeep.scheduler import BatchInfo, StreamingListener
from streamkeep.sinks.base import BatchSink, Sink
from streamkeep.sinks.text import PPrintSink, TextFilesSink
from streamkeep.testing import ManualClock


def _files(d: Path) -> dict[str, str]:
    return {n: (d / n).read_text() for n in sorted(os.listdir(d))}


def test_pprint_and_save_as_text_files_are_sinks_of_the_job(tmp_path: Path) -> None:
    ssc = sk.StreamingContext(1.0, clock=ManualClock())
    s = ssc.queue_stream([[1, 2]], name="q")
    s.pprint(1)
    s.save_as_text_files(str(tmp_path / "out"))
    sinks = list(ssc._graph.sinks.values())
    assert [type(x) for x in sinks] == [PPrintSink, TextFilesSink]
    assert all(isinstance(x, Sink) and isinstance(x, BatchSink) for x in sinks)
    # the dashboard's per-output timings keep the operators' labels
    ssc.add_listener(seen := _Timings())
    ssc.run()
    assert seen.labels == {"pprint#1", "save_as_text_files#2"}


class _Timings(StreamingListener):
    def __init__(self) -> None:
        self.labels: set[str] = set()

    def on_batch_completed(self, info: BatchInfo) -> None:
        self.labels |= set(info.operator_ms)


def test_write_to_a_text_files_sink_equals_save_as_text_files(tmp_path: Path) -> None:
    ssc = sk.StreamingContext(1.0, clock=ManualClock())
    s = ssc.queue_stream([[1, 2, 3], ["x"]], name="q").repartition(2)
    s.save_as_text_files(str(tmp_path / "a"), "txt")
    s.write_to(TextFilesSink(str(tmp_path / "b"), "txt", name="b"))
    ssc.run()
    for t in (1000, 2000):
        assert _files(tmp_path / f"a-{t}.txt") == _files(tmp_path / f"b-{t}.txt")
    assert _files(tmp_path / "a-1000.txt") == {"_SUCCESS": "", "part-00000": "1\n3\n", "part-00001": "2\n"}


def test_a_replayed_batch_rewrites_identical_text_files(tmp_path: Path) -> None:
    sink = TextFilesSink(str(tmp_path / "out"), name="out")
    batch = Batch([[1, 2], [3]], 5000)
    sink.write_batch(5000, batch)
    first = _files(tmp_path / "out-5000")
    sink.write_batch(5000, batch)  # the batch re-run after a crash before its commit
    assert _files(tmp_path / "out-5000") == first == {"_SUCCESS": "", "part-00000": "1\n2\n", "part-00001": "3\n"}


def test_pprint_sink_through_write_to_prints_as_pprint(capsys: pytest.CaptureFixture[str]) -> None:
    def job(use_sink: bool) -> str:
        ssc = sk.StreamingContext(1.0, clock=ManualClock())
        s = ssc.queue_stream([list(range(5))], name="q")
        if use_sink:
            s.write_to(PPrintSink(3, name="show"))
        else:
            s.pprint(3)
        ssc.run()
        return capsys.readouterr().out

    out = job(True)
    assert out == job(False)
    assert out.splitlines()[1] == "Time: 1970-01-01 00:00:01.000" and out.splitlines()[3:7] == ["0", "1", "2", "..."]


def test_pprint_computes_only_what_it_prints() -> None:
    calls: list[int] = []

    def f(x: int) -> int:
        calls.append(x)
        return x

    ssc = sk.StreamingContext(1.0, clock=ManualClock())
    ssc.queue_stream([list(range(100))], name="q").map(f).pprint(2)
    ssc.run()
    assert calls == [0, 1, 2]
