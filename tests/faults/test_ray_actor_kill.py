"""A Ray partition actor SIGKILLed in the middle of a batch: replaced, the batch retried from its plan, exact.

The kill is a real SIGKILL of the actor's worker process, from a user function that
runs in the driver during batch 4: while the batch computes (before the actors step)
or while its outputs run (after they stepped: their state changed, so every partition
must be restored from the last commit, not just the lost one). The job must end with
the output and state of an uncrashed run on the local executor, and batch 4 must have
run twice (the retry really happened).
"""

from __future__ import annotations

import functools
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


RATE = 3000  # records a batch: big enough to be mapped in the partition actors, in slices they pull
DIE_AT = 3 * RATE + RATE - 7  # a record of batch 4 in its last small slice


def _pair_or_die(marker: str, driver: int, r):
    """(key, 1); on Ray, the worker that maps record `DIE_AT` first SIGKILLs itself (a real crash mid-map)."""
    if r[0] == DIE_AT and os.getpid() != driver:
        try:
            fd = os.open(marker, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
        except FileExistsError:
            pass  # the retry: no second crash
        else:
            os.write(fd, str(os.getpid()).encode())
            os.close(fd)
            os.kill(os.getpid(), signal.SIGKILL)
    return (r[0] % 37, r[0] % 5 + 1)


def _sliced_job(ckpt, executor, marker, runs, sink):
    def build():
        ssc = sk.StreamingContext(1.0, checkpoint=ckpt, clock=ManualClock(), snapshot_every=2, executor=executor)
        src = ssc.rate_stream(RATE, name="rate").transform(lambda t, b: (runs.append(_ms(t)), b)[1])
        pairs = src.map(functools.partial(_pair_or_die, marker, os.getpid()))
        pairs.update_state_by_key(_update, name="totals").write_to(sink)
        return ssc

    return build


def test_an_actor_killed_while_mapping_a_pulled_slice_is_replaced_and_the_batch_retried_exactly(tmp_path, ray_address, monkeypatch):
    """Big batches go to the actors in slices they pull as they finish (dynamic balancing); the actor
    mapping batch 4's last small slice is SIGKILLed there. The batch runs again from its plan on a
    replaced actor and the job ends with the output and state of an uncrashed local run."""
    import streamkeep.executors.ray as on_ray

    for attr, value in (("BALANCE_MS", 0.0), ("BALANCE_US", 0.0), ("PIECE_MS", 0.0), ("PIECE_RECORDS", 100), ("PIECES", 4)):
        monkeypatch.setattr(on_ray, attr, value)
    got = {}
    for label, ex in (("local", "local"), ("ray", sk.executors.RayExecutor(num_partitions=2))):
        runs: list[int] = []
        sink = ListSink("totals")
        ckpt = str(tmp_path / label)
        marker = str(tmp_path / f"{label}.killed")
        ssc = sk.StreamingContext.get_or_create(ckpt, _sliced_job(ckpt, ex, marker, runs, sink))
        ssc.run(6)
        state = state_of(ssc, "totals")
        ssc.stop()
        got[label] = ([(t, sorted(rs, key=repr)) for t, rs in sink.batches], sorted(state["set"], key=repr), runs)
        if label == "ray":
            with open(marker) as f:
                killed = int(f.read())
            _wait_gone(killed)  # the actor that mapped the slice really died
    (ref_out, ref_state, ref_runs), (out, state, runs) = got["local"], got["ray"]
    assert ref_runs.count(4000) == 1 and runs.count(4000) == 2, runs  # the retry happened
    assert out == ref_out
    assert state == ref_state


def _ahead_job(ckpt, executor, runs, sink):
    def build():
        ssc = sk.StreamingContext(1.0, checkpoint=ckpt, clock=ManualClock(), snapshot_every=2, executor=executor)
        pairs = ssc.rate_stream(RATE, name="rate").map(lambda r: (r[0] % 37, r[0] % 5 + 1))
        totals = pairs.update_state_by_key(_update, name="totals")
        totals.write_to(sink)

        def kill(t, b):  # batch 4's outputs, in the driver: batch 5's map side is queued in the actors
            runs.append(_ms(t))
            if executor != "local" and _ms(t) == KILL_AT and runs.count(KILL_AT) == 1:
                pid = executor.actor_pids()[0]
                os.kill(pid, signal.SIGKILL)
                _wait_gone(pid)

        totals.foreach_batch(kill)
        return ssc

    return build


def test_an_actor_killed_while_the_next_batch_is_queued_ahead_ends_exactly(tmp_path, ray_address):
    """Batches run back to back: while batch 4 computes, batch 5 is planned (durable), read and its map side
    queued in the actors. An actor SIGKILLed during batch 4's outputs takes that queued work with it: batch 4
    runs again from its plan on a replaced actor, batch 5 is sent again (same plan, same input, the sources
    continue after it), and the job ends with the output and state of an uncrashed local run."""
    got = {}
    sent = 0
    for label, ex in (("local", "local"), ("ray", sk.executors.RayExecutor(num_partitions=2))):
        runs: list[int] = []
        sink = ListSink("totals")
        ckpt = str(tmp_path / label)
        ssc = sk.StreamingContext.get_or_create(ckpt, _ahead_job(ckpt, ex, runs, sink))
        ssc.run(TOTAL)
        state = state_of(ssc, "totals")
        ssc.stop()
        sent = ex.sent_ahead if label == "ray" else sent
        got[label] = ([(t, sorted(rs, key=repr)) for t, rs in sink.batches], sorted(state["set"], key=repr), runs)
    (ref_out, ref_state, ref_runs), (out, state, runs) = got["local"], got["ray"]
    assert ref_runs.count(KILL_AT) == 1 and runs.count(KILL_AT) == 2, runs  # the retry happened
    assert sent >= TOTAL - 2, sent  # batches went out ahead (the one after the kill too)
    assert out == ref_out
    assert state == ref_state
