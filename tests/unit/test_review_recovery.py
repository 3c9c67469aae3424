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
