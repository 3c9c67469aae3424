"""A Ray partition actor SIGKILLed in the middle of a batch: replaced, the batch retried from its plan, exact.

The kill is a real SIGKILL of the actor's worker process, from a user function that
runs in the driver during batch 4: while the batch computes (before the actors step)
or while its outputs run (after they stepped: their state changed, so every partition
must be restored from the last commit, not just the lost one). The job must end with
the output and state of an uncrashed run on the local executor, and batch 4 must have
run twice (the retry really happened).
"""

from __future__ import annotations

import operator
import os
import signal
import time

import pytest

import streamkeep as sk
from streamkeep.testing import ListSink, ManualClock, state_of

pytestmark = [pytest.mark.ray, pytest.mark.faults, pytest.mark.slow]

TOTAL = 7
KILL_AT = 4000


def _update(values, old):
    total = (old or 0) + sum(values)
    return None if total % 7 == 0 else total


def _track(key, value, state):
    n = (state.get() if state.exists() else 0) + value
    state.update(n)
    return (key, n)


def _ms(t):
    return int(t.timestamp() * 1000) if hasattr(t, "timestamp") else int(t)


def _wait_gone(pid: int, deadline_s: float = 30) -> None:
    end = time.monotonic() + deadline_s
    while time.monotonic() < end:
        try:
            with open(f"/proc/{pid}/stat") as f:
                if f.read().rsplit(")", 1)[1].split()[0] == "Z":
                    return
        except OSError:
            return
        time.sleep(0.05)
    raise AssertionError(f"actor process {pid} still alive {deadline_s} s after SIGKILL")


def _job(ckpt, executor, where, runs, sinks):
    def kill(t):
        runs.append(_ms(t))
        if _ms(t) == KILL_AT and runs.count(KILL_AT) == 1:
            pid = executor.actor_pids()[0]
            os.kill(pid, signal.SIGKILL)
            _wait_gone(pid)

    def build():
        ssc = sk.StreamingContext(1.0, checkpoint=ckpt, clock=ManualClock(), snapshot_every=2, executor=executor)
        pairs = ssc.rate_stream(30, name="rate").map(lambda r: (r[0] % 13, r[0] % 3 + 1))
        if where == "compute":
            pairs = pairs.transform(lambda t, b: (kill(t) if executor != "local" else runs.append(_ms(t)), b)[1])
        else:
            pairs.foreach_batch(lambda t, b: kill(t) if executor != "local" else runs.append(_ms(t)))
        pairs.update_state_by_key(_update, name="totals").write_to(sinks["totals"])
        pairs.map_with_state(_track, name="seen").write_to(sinks["seen"])
        pairs.reduce_by_key_and_window(operator.add, 3.0, 1.0, inv_f=operator.sub, name="win").write_to(sinks["win"])
        return ssc

    return build


def _run(tmp_path, label, executor, where):
    runs: list[int] = []
    sinks = {n: ListSink(n) for n in ("totals", "seen", "win")}
    ckpt = str(tmp_path / label)
    ssc = sk.StreamingContext.get_or_create(ckpt, _job(ckpt, executor, where, runs, sinks))
    ssc.run(TOTAL)
    states = {op: state_of(ssc, op) for op in ("totals", "seen", "win")}
    pids = executor.actor_pids() if executor != "local" else []
    ssc.stop()
    out = {n: [(t, sorted(rs, key=repr)) for t, rs in s.batches] for n, s in sinks.items()}
    canon = {op: {k: sorted(v, key=repr) if k != "add" else sorted([ts, sorted(i, key=repr)] for ts, i in v) for k, v in st.items()} for op, st in states.items()}
    return out, canon, runs, pids


@pytest.mark.parametrize("where", ["compute", "outputs"])
def test_an_actor_killed_mid_batch_is_replaced_and_the_batch_retried_exactly(tmp_path, ray_address, where):
    ref_out, ref_state, ref_runs, _ = _run(tmp_path, "ref", "local", where)
    assert ref_runs.count(KILL_AT) == 1
    ex = sk.executors.RayExecutor(num_partitions=2)
    out, state, runs, pids = _run(tmp_path, "ray", ex, where)
    assert runs.count(KILL_AT) == 2, f"batch {KILL_AT} should have run again after the kill: {runs}"
    assert len(pids) == 2
    assert out == ref_out
    assert state == ref_state


def test_an_actor_killed_mid_batch_without_a_checkpoint_stops_the_job_with_a_clear_error(ray_address):
    """Without a checkpoint the change tracking is dropped by the next batch's step (no call of its
    own): an actor killed while that is pending fails the batch there, with the error that says the
    lost state cannot come back without a checkpoint (not a hang, not a result from half the state)."""
    ex = sk.executors.RayExecutor(num_partitions=2)
    seen: list[int] = []

    def kill(t, b):
        seen.append(_ms(t))
        if len(seen) == 2:  # batch 2: batch 1's forget is pending, its step has not run
            pid = ex.actor_pids()[1]
            os.kill(pid, signal.SIGKILL)
            _wait_gone(pid)
        return b

    ssc = sk.StreamingContext(1.0, clock=ManualClock(), executor=ex)
    sink = ListSink("totals")
    pairs = ssc.queue_stream([[(i % 13, 1) for i in range(30)]] * 3, name="q").transform(kill)
    pairs.update_state_by_key(_update, name="totals").write_to(sink)
    try:
        ssc.run(1)
        with pytest.raises(sk.errors.WorkerLostError, match="no checkpoint"):
            ssc.run(1)
    finally:
        ssc.stop()
    assert [t for t, _ in sink.batches] == [1000]  # batch 2 wrote nothing
