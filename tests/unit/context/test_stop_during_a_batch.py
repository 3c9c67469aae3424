"""stop() from another thread, or from inside a batch, finishes the batch in progress (found in review)."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

from _ckpt_jobs import wait_for

import streamkeep as sk
from streamkeep.checkpoint import Checkpoint
from streamkeep.testing import ListSink, ManualClock


def test_stop_from_another_thread_ends_run_after_the_batch_in_progress(tmp_path: Path) -> None:
    url = str(tmp_path / "c")
    ssc = sk.StreamingContext(1.0, checkpoint=url, clock=ManualClock())
    sink = ListSink()
    ssc.rate_stream(2, name="r").write_to(sink)
    outcome: dict[str, Any] = {}

    def drive() -> None:
        try:
            outcome["n"] = ssc.run()  # an infinite source: only stop() ends it
        except BaseException as exc:
            outcome["error"] = exc

    th = threading.Thread(target=drive)
    th.start()
    wait_for(lambda: len(sink.batches) >= 3, what="a few batches")
    ssc.stop()
    th.join(10)
    assert not th.is_alive(), "run() kept going after stop()"
    assert "error" not in outcome, outcome.get("error")
    assert ssc.state == "stopped"
    assert Checkpoint(url).commits()[0].batch_time == sink.batches[-1][0]  # the last batch run was committed


def _stop_inside(url: str, sink: ListSink, stop_at_ms: int) -> sk.StreamingContext:
    ssc = sk.StreamingContext(1.0, checkpoint=url, clock=ManualClock())
    src = ssc.rate_stream(2, name="r")
    src.write_to(sink)

    def maybe_stop(t: Any, batch: Any) -> None:
        if int(t.timestamp() * 1000) == stop_at_ms:
            ssc.stop()

    src.foreach_batch(maybe_stop)
    return ssc


def test_stop_inside_a_batch_of_run_commits_that_batch(tmp_path: Path) -> None:
    url = str(tmp_path / "c")
    sink = ListSink()
    ssc = _stop_inside(url, sink, 3000)
    assert ssc.run() == 3
    assert ssc.state == "stopped"
    assert Checkpoint(url).commits()[0].batch_time == 3000


def test_stop_inside_a_batch_of_start_commits_that_batch(tmp_path: Path) -> None:
    url = str(tmp_path / "c")
    sink = ListSink()
    ssc = _stop_inside(url, sink, 2000)
    clock = ssc._clock
    ssc.start()
    clock.advance(5)
    assert ssc.await_termination(10) is True  # no error: stop() from the scheduler thread is allowed
    assert ssc.state == "stopped"
    assert [t for t, _ in sink.batches] == [1000, 2000]
    assert Checkpoint(url).commits()[0].batch_time == 2000
