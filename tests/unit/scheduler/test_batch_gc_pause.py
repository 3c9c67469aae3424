"""The cyclic GC is paused while a batch is read and computed, and always resumed after it (issue 14.3)."""

from __future__ import annotations

import gc
from typing import Any

import pytest

import streamkeep as sk
from streamkeep.errors import UserFunctionError
from streamkeep.testing import ListSink, ManualClock


def _job(url: str, seen: list[bool], fail_at: int | None = None) -> sk.StreamingContext:
    ssc = sk.StreamingContext(1.0, checkpoint=url, clock=ManualClock())

    def count(value: int) -> tuple[int, int]:
        seen.append(gc.isenabled())
        if value == fail_at:
            msg = f"bad value {value}"
            raise ValueError(msg)
        return value % 2, 1

    batches = [[1, 2, 3], [4, 5], [6]]
    ssc.queue_stream(batches, name="q").map(count).reduce_by_key(lambda a, b: a + b).write_to(ListSink("out"))
    return ssc


def test_the_collector_is_paused_in_a_batch_and_resumed_after_it(tmp_path: Any) -> None:
    seen: list[bool] = []
    after: list[bool] = []

    class Listener(sk.StreamingListener):
        def on_batch_completed(self, info: sk.BatchInfo) -> None:
            after.append(gc.isenabled())

    assert gc.isenabled()
    ssc = _job(str(tmp_path / "ck"), seen)
    ssc.add_listener(Listener())
    try:
        ssc.run(max_batches=3)
    finally:
        ssc.stop()
    assert seen == [False] * 6  # every record's function ran with the collector paused
    assert after == [True, True, True]
    assert gc.isenabled()


def test_a_failed_batch_resumes_the_collector(tmp_path: Any) -> None:
    seen: list[bool] = []
    ssc = _job(str(tmp_path / "ck"), seen, fail_at=5)
    try:
        with pytest.raises(UserFunctionError, match="bad value 5"):
            ssc.run(max_batches=3)
    finally:
        ssc.stop()
    assert seen == [False] * 5
    assert gc.isenabled()


def test_a_collector_the_application_disabled_stays_disabled(tmp_path: Any) -> None:
    seen: list[bool] = []
    gc.disable()
    try:
        ssc = _job(str(tmp_path / "ck"), seen)
        try:
            ssc.run(max_batches=2)
        finally:
            ssc.stop()
        assert not gc.isenabled()
    finally:
        gc.enable()
    assert seen == [False] * 5


def test_a_batch_waiting_on_a_full_commit_lane_lets_the_collector_run(monkeypatch: pytest.MonkeyPatch) -> None:
    """A stalled disk holds the batch in `Lane.submit`; past the stall bound the collector runs while it waits."""
    import threading
    import time

    from streamkeep._util import gc_paused
    from streamkeep.scheduler import _committer

    monkeypatch.setattr(_committer, "STALL_S", 0.2, raising=False)
    lane = _committer.Lane("test-lane", 1)
    release = threading.Event()
    lane.submit(1, release.wait)  # the one slot: a write that does not return
    waiting: list[bool] = []
    after: list[bool] = []

    def batch() -> None:
        with gc_paused():
            lane.submit(2, lambda: None)  # blocks until the first write returns
            after.append(gc.isenabled())

    t = threading.Thread(target=batch)
    t.start()
    deadline = time.monotonic() + 10
    while gc.isenabled() and time.monotonic() < deadline:  # paused by the batch ...
        time.sleep(0.001)
    assert not gc.isenabled()
    deadline = time.monotonic() + 5
    while not gc.isenabled() and time.monotonic() < deadline:  # ... then resumed while it waits for room
        time.sleep(0.001)
    waiting.append(gc.isenabled() and t.is_alive())
    release.set()
    t.join(10)
    lane.drain()
    lane.close()
    assert waiting == [True]
    assert after == [False]  # the batch goes on with the collector paused
    assert gc.isenabled()


def test_waits_leave_a_collector_the_application_disabled_off() -> None:
    from streamkeep._util import gc_paused, gc_resumed, retry_with_backoff

    seen: list[bool] = []
    calls: list[int] = []

    def flaky() -> str:
        calls.append(1)
        if len(calls) < 2:
            raise ConnectionError("down")
        return "up"

    with gc_paused():
        assert retry_with_backoff(flaky, retry_on=ConnectionError, first_s=0.01, give_up=lambda e, n, d: None, sleep=lambda s: seen.append(gc.isenabled())) == "up"
        seen.append(gc.isenabled())
    assert seen == [True, False] and gc.isenabled()
    gc.disable()
    try:
        with gc_paused(), gc_resumed():
            seen.append(gc.isenabled())
        assert not gc.isenabled()
    finally:
        gc.enable()
    assert seen[-1] is False
