"""The `Executor` protocol is the scheduler's only way to the graph (issue 11.1)."""

from __future__ import annotations

import pytest

import streamkeep as sk
from streamkeep.errors import ConfigError
from streamkeep.executors import LocalExecutor
from streamkeep.executors.base import Executor
from streamkeep.testing import ListSink, ManualClock, key_count_of, state_of


def test_local_executor_implements_the_protocol() -> None:
    assert isinstance(LocalExecutor(), Executor)


def test_the_context_runs_the_executor_instance_it_was_given() -> None:
    ex = LocalExecutor()
    ssc = sk.StreamingContext(1.0, clock=ManualClock(), executor=ex)
    sink = ListSink()
    ssc.queue_stream([[("a", 1), ("b", 2)], [("a", 3)]], name="q").update_state_by_key(lambda vs, s: (s or 0) + sum(vs), name="n").write_to(sink)
    ssc.run(2)
    assert ssc._scheduler is not None and ssc._scheduler.executor is ex
    assert ex.operators() == ["n"]
    assert dict(state_of(ssc, "n")["set"]) == {"a": 4, "b": 2} and key_count_of(ssc, "n") == 2
    ssc.stop()


def test_an_object_that_is_not_an_executor_is_refused() -> None:
    with pytest.raises(ConfigError, match=r"executor .* is not available.*streamkeep\.executors\.base\.Executor"):
        sk.StreamingContext(1.0, executor=object())  # type: ignore[arg-type]


def test_state_of_before_the_job_started_says_so() -> None:
    ssc = sk.StreamingContext(1.0, clock=ManualClock())
    with pytest.raises(ConfigError, match="has not started"):
        state_of(ssc, "n")
