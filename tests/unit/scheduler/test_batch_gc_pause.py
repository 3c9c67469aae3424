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
