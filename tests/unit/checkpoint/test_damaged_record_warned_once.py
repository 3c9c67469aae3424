"""A damaged commit-log record is reported once at restart, not once per read of the log."""

from __future__ import annotations

import logging
import warnings
from pathlib import Path

import pytest

import streamkeep as sk
from streamkeep.errors import StreamkeepWarning
from streamkeep.testing import ListSink, ManualClock


def _run(url: str, batches: int) -> ListSink:
    sink = ListSink()

    def setup() -> sk.StreamingContext:
        ssc = sk.StreamingContext(1.0, checkpoint=url, clock=ManualClock())
        ssc.rate_stream(2, name="rate").map(lambda r: ("n", 1)).update_state_by_key(lambda new, old: (old or 0) + sum(new), name="n").write_to(sink)
        return ssc

    ssc = sk.StreamingContext.get_or_create(url, setup)
    ssc.run(max_batches=batches)
    ssc.stop()
    return sink


def test_a_damaged_newest_record_is_warned_about_once(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    url = str(tmp_path / "ckpt")
    _run(url, 3)
    newest = sorted((tmp_path / "ckpt" / "log").glob("*.rec"))[-1]
    data = bytearray(newest.read_bytes())
    data[len(data) // 2] ^= 0xFF
    newest.write_bytes(bytes(data))
    caplog.set_level(logging.WARNING, logger="streamkeep")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", StreamkeepWarning)  # the recovery's own summary of the same damage
        sink = _run(url, 1)
    assert sink.batches[-1][1] == [("n", 6)] or sink.batches[-1][1] == [("n", 8)]  # recovered from an older or the newest readable commit
    skipped = [r for r in caplog.records if "skipping unreadable commit-log record" in r.getMessage()]
    assert len(skipped) == 1, [r.getMessage() for r in skipped]
    assert newest.name in skipped[0].getMessage()
