"""A code change refused for a checkpoint: the message says how to allow it, and following it works."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

import streamkeep as sk
from streamkeep.errors import ConfigError, IncompatibleCheckpointError
from streamkeep.testing import ListSink, ManualClock


def _job(url: str, op_name: str, sink: ListSink, allow: frozenset[str] | set[str] = frozenset()) -> Callable[[], sk.StreamingContext]:
    def setup() -> sk.StreamingContext:
        ssc = sk.StreamingContext(1.0, checkpoint=url, clock=ManualClock(), allow_state_loss=allow)
        pairs = ssc.rate_stream(4, name="rate").map(lambda r: (r[0] % 2, 1))
        pairs.update_state_by_key(lambda new, old: (old or 0) + sum(new), name=op_name).write_to(sink)
        return ssc

    return setup


def _run(url: str, setup: Callable[[], sk.StreamingContext]) -> None:
    ssc = sk.StreamingContext.get_or_create(url, setup)
    ssc.run(max_batches=2)
    ssc.stop()


def test_a_refused_rename_says_where_allow_state_loss_goes_and_following_it_restores(tmp_path: Path) -> None:
    url = str(tmp_path / "ckpt")
    _run(url, _job(url, "counts", ListSink("out")))
    with pytest.raises(IncompatibleCheckpointError) as info:
        _run(url, _job(url, "counts_v2", ListSink("out")))
    msg = str(info.value)
    assert "allow_state_loss={'counts'}" in msg
    # where it goes, for the native API and for a PySpark program (whose StreamingContext has no such argument)
    assert "sk.StreamingContext(interval, checkpoint=..., allow_state_loss=" in msg
    assert "spark.streamkeep.allowStateLoss" in msg
    sink = ListSink("out")
    _run(url, _job(url, "counts_v2", sink, allow={"counts"}))  # as the message says
    assert sorted(sink.batches[-1][1]) == [(0, 4), (1, 4)]  # counts_v2 started empty: 2 batches of 4 records


def test_allow_state_loss_given_a_bare_string_is_refused_not_split_into_letters() -> None:
    with pytest.raises(ConfigError, match=r"allow_state_loss must be a collection of names.*pass \{'counts'\}"):
        sk.StreamingContext(1.0, allow_state_loss="counts")
