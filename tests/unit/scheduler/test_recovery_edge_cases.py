"""Recovery edge cases found in review: a restored job behaves as if it never stopped."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import streamkeep as sk
from streamkeep.testing import ListSink, ManualClock


def _window_job(url: str, sink: ListSink) -> Any:
    def setup() -> sk.StreamingContext:
        ssc = sk.StreamingContext(1.0, checkpoint=url, clock=ManualClock())
        q = ssc.queue_stream([[1], [2], [3]], name="q")
        q.write_to(sink)
        q.window(2, 2, name="w").foreach_batch(lambda b: None)
        return ssc

    return setup


def test_a_drained_window_job_stays_drained_after_a_restart(tmp_path: Path) -> None:
    url = str(tmp_path / "c")
    sink = ListSink()
    ssc = sk.StreamingContext.get_or_create(url, _window_job(url, sink))
    assert ssc.run() == 4  # 3 input batches + 1 to output the last window
    assert ssc.run() == 0  # drained
    ssc.stop()
    ssc = sk.StreamingContext.get_or_create(url, _window_job(url, sink))
    try:
        assert ssc.run() == 0  # still drained: no extra batch after the restart
    finally:
        ssc.stop()
    assert [t for t, _ in sink.batches] == [1000, 2000, 3000, 4000]


def test_leftovers_of_a_crash_before_the_first_plan_are_swept(tmp_path: Path, caplog: Any) -> None:
    # A crash after a queue batch's blob was written but before its plan: no commit, no plan.
    from streamkeep.checkpoint import Checkpoint

    url = str(tmp_path / "c")
    ckpt = Checkpoint(url)
    ckpt.claim(owner="crashed", engine_version="0")
    ckpt.put_blob("q/1000", ["stale"])
    ckpt.release()
    sink = ListSink()

    def setup() -> sk.StreamingContext:
        ssc = sk.StreamingContext(1.0, checkpoint=url, clock=ManualClock())
        ssc.queue_stream([["fresh"]], name="q").write_to(sink)
        return ssc

    ssc = sk.StreamingContext.get_or_create(url, setup)
    assert not Path(url, "blobs").exists() or not list(Path(url, "blobs").iterdir())  # swept at start
    try:
        ssc.run()
    finally:
        ssc.stop()
    assert sink.batches == [(1000, ["fresh"])]
    assert "replacing" not in caplog.text
