"""The `Executor` protocol is the scheduler's only way to the graph (issue 11.1)."""

from __future__ import annotations

import pytest

import streamkeep as sk
from streamkeep.errors import ConfigError, WorkerLostError
from streamkeep.executors import LocalExecutor
from streamkeep.executors.base import Executor, KeyPartitioned
from streamkeep.testing import ListSink, ManualClock, key_count_of, state_of


def _instance(executor: object) -> Executor:
    return LocalExecutor() if executor == "local" else executor  # type: ignore[return-value]


def test_each_executor_implements_the_protocol(executor: object) -> None:
    ex = _instance(executor)
    assert isinstance(ex, Executor)
    assert isinstance(ex, KeyPartitioned) == (executor != "local")


def test_the_context_runs_the_executor_instance_it_was_given(executor: object) -> None:
    ex = _instance(executor)
    ssc = sk.StreamingContext(1.0, clock=ManualClock(), executor=ex)
    sink = ListSink()
    ssc.queue_stream([[("a", 1), ("b", 2)], [("a", 3)]], name="q").update_state_by_key(lambda vs, s: (s or 0) + sum(vs), name="n").write_to(sink)
    ssc.run(2)
    assert ssc._scheduler is not None and ssc._scheduler.executor is ex
    assert ex.operators() == ["n"]
    assert dict(state_of(ssc, "n")["set"]) == {"a": 4, "b": 2} and key_count_of(ssc, "n") == 2
    ssc.stop()


def test_an_object_that_is_not_an_executor_is_refused() -> None:
    with pytest.raises(ConfigError, match=r"executor .* is not an Executor.*streamkeep\.executors\.base\.Executor"):
        sk.StreamingContext(1.0, executor=object())  # type: ignore[arg-type]


def test_state_of_before_the_job_started_says_so() -> None:
    ssc = sk.StreamingContext(1.0, clock=ManualClock())
    with pytest.raises(ConfigError, match="has not started"):
        state_of(ssc, "n")


class _LosesAWorker(LocalExecutor):
    """The local executor, but batch `at` loses a worker after its stateful operators stepped (`times` times)."""

    def __init__(self, at: int, times: int) -> None:
        super().__init__()
        self.at, self.times, self.computed = at, times, []

    def compute(self, t, inputs):  # type: ignore[no-untyped-def]
        results = super().compute(t, inputs)  # the state already changed, as a live partition's would
        self.computed.append(t)
        if t == self.at and self.times > 0:
            self.times -= 1
            raise WorkerLostError("a worker holding state died (test)")
        return results


def _counting_job(ckpt: str | None, ex: Executor, sink: ListSink) -> sk.StreamingContext:
    ssc = sk.StreamingContext(1.0, checkpoint=ckpt, clock=ManualClock(), executor=ex, snapshot_every=2)
    ssc.rate_stream(5, name="r").map(lambda r: (r[0] % 3, 1)).update_state_by_key(lambda vs, s: (s or 0) + sum(vs), name="n").write_to(sink)
    return ssc


@pytest.mark.parametrize("at", [1000, 3000])  # before the first commit, and after two
def test_a_lost_worker_reloads_the_last_commit_and_reruns_the_batch(tmp_path, at: int) -> None:
    ref, got = ListSink(), ListSink()
    ssc = _counting_job(str(tmp_path / "ref"), LocalExecutor(), ref)
    ssc.run(5)
    expected = state_of(ssc, "n")
    ssc.stop()
    ex = _LosesAWorker(at=at, times=2)
    ssc = _counting_job(str(tmp_path / "ckpt"), ex, got)
    ssc.run(5)
    assert sorted(state_of(ssc, "n")["set"]) == sorted(expected["set"])
    ssc.stop()
    assert ex.computed == sorted([1000, 2000, 3000, 4000, 5000, at, at])
    assert got.batches == ref.batches


def test_a_worker_lost_again_and_again_stops_the_job(tmp_path) -> None:
    ssc = _counting_job(str(tmp_path / "ckpt"), _LosesAWorker(at=2000, times=99), ListSink())
    with pytest.raises(WorkerLostError, match="lost a worker 3 times in a row"):
        ssc.run(3)
    ssc.stop()


def test_a_lost_worker_without_a_checkpoint_says_the_state_is_lost() -> None:
    ssc = _counting_job(None, _LosesAWorker(at=2000, times=1), ListSink())
    with pytest.raises(WorkerLostError, match="no checkpoint"):
        ssc.run(3)
    ssc.stop()


class _LosesAWorkerWhileRestoring(_LosesAWorker):
    """Also loses a worker in the first restore after the loss (a worker dies while the state is loaded)."""

    def __init__(self, at: int) -> None:
        super().__init__(at, times=1)
        self.restore_losses = 1

    def restore(self, name, snapshot, deltas):  # type: ignore[no-untyped-def]
        if self.restore_losses and self.times == 0:
            self.restore_losses -= 1
            raise WorkerLostError("a worker died while its state was restored (test)")
        super().restore(name, snapshot, deltas)


def test_a_worker_lost_while_reloading_the_state_is_reloaded_again(tmp_path) -> None:
    ref, got = ListSink(), ListSink()
    ssc = _counting_job(str(tmp_path / "ref"), LocalExecutor(), ref)
    ssc.run(4)
    ssc.stop()
    ex = _LosesAWorkerWhileRestoring(at=3000)
    ssc = _counting_job(str(tmp_path / "ckpt"), ex, got)
    ssc.run(4)
    ssc.stop()
    assert ex.restore_losses == 0 and ex.computed == [1000, 2000, 3000, 3000, 4000]
    assert got.batches == ref.batches
