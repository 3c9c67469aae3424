"""executor="processes": per-record chains run in worker processes, results unchanged."""

from __future__ import annotations

import pytest

import streamkeep as sk
from streamkeep.executors import LocalExecutor
from streamkeep.testing import ListSink, ManualClock


def _job(executor: object, batches: list[list[int]], fail_on: int | None = None) -> ListSink:
    ssc = sk.StreamingContext(1.0, clock=ManualClock(), executor=executor)  # type: ignore[arg-type]
    sink = ListSink()
    offset = 7  # a closure: travels with cloudpickle

    def check(x: int) -> int:
        if x == fail_on:
            raise ValueError(f"bad record {x}")
        return x

    (ssc.queue_stream(batches, name="q", num_partitions=2)
        .map(check).filter(lambda x: x % 3 != 0).map(lambda x: (x % 5, x + offset))
        .update_state_by_key(lambda new, old: (old or 0) + sum(new), name="sums").write_to(sink))
    try:
        ssc.run()
    finally:
        ssc.stop()
    return sink


def test_process_pool_gives_the_same_results() -> None:
    batches = [list(range(i * 3000, (i + 1) * 3000)) for i in range(3)]
    local = _job("local", batches)
    pooled = _job(LocalExecutor(processes=2), batches)
    assert [(t, sorted(r)) for t, r in pooled.batches] == [(t, sorted(r)) for t, r in local.batches]


def test_user_error_in_a_worker_names_the_operator() -> None:
    with pytest.raises(sk.UserFunctionError, match="map") as info:
        _job("processes", [list(range(5000))], fail_on=4321)
    assert info.value.batch_time_ms == 1000


def test_bad_process_count_is_a_config_error() -> None:
    with pytest.raises(sk.ConfigError, match="processes"):
        LocalExecutor(processes=-1)
    with pytest.raises(sk.ConfigError, match="not available"):
        sk.StreamingContext(1.0, executor="threads")
