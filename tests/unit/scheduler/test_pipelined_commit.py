"""The pipelined commit: a batch's deltas and commit record are written in the background.

What must follow a durable commit does (listeners, offset commits); a failed background
write fails the job at the next batch or at stop, never silently; the lane itself runs
tasks in order, bounded, and stops at the first error.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

import pytest
from _ckpt_jobs import rate_job, run_until, totals_after

import streamkeep as sk
from streamkeep.checkpoint import Checkpoint
from streamkeep.errors import CheckpointError
from streamkeep.scheduler._committer import Lane
from streamkeep.scheduler._scheduler import COMMITS_IN_FLIGHT
from streamkeep.testing import ListSink


def test_listeners_hear_of_a_batch_once_its_commit_is_on_disk(tmp_path: Path) -> None:
    url = str(tmp_path / "c")
    seen: list[tuple[int, int]] = []

    class Check:
        def on_batch_completed(self, info: Any) -> None:
            seen.append((info.batch_time_ms, Checkpoint(url).commits()[0].batch_time))

    ssc = sk.StreamingContext.get_or_create(url, rate_job(url, ListSink()))
    ssc.add_listener(Check())
    ssc.run(max_batches=6)
    ssc.stop()
    assert [t for t, _ in seen] == [1000 * i for i in range(1, 7)]
    assert all(on_disk >= t for t, on_disk in seen), seen


def test_run_returns_with_its_batches_committed(tmp_path: Path) -> None:
    url = str(tmp_path / "c")
    ssc = sk.StreamingContext.get_or_create(url, rate_job(url, ListSink()))
    for n in range(1, 4):
        ssc.run(max_batches=1)
        assert Checkpoint(url).commits()[0].batch_time == n * 1000  # read while the job still runs
    ssc.stop()


def test_a_failed_background_commit_fails_the_job_and_a_restart_is_exact(tmp_path: Path) -> None:
    """The delta files of batch 2 cannot be written (their directory became a file during batch 2's outputs)."""
    url = str(tmp_path / "c")
    state_dir = Path(url, "state", "totals")
    moved = tmp_path / "moved"
    armed = [True]

    def sabotage(t: Any, batch: Any) -> None:
        if int(t.timestamp()) == 2 and armed:
            armed.clear()
            # batch 1's commit may still be in flight (pipelined): break the directory only once it is durable
            deadline = time.monotonic() + 30
            while not any(c.batch_time == 1000 for c in Checkpoint(url).commits()) and time.monotonic() < deadline:
                time.sleep(0.005)
            state_dir.rename(moved)
            state_dir.write_text("not a directory")

    def setup(sink: ListSink) -> Any:
        def make() -> sk.StreamingContext:
            ssc = rate_job(url, sink, window=False)()
            ssc.rate_stream(1, name="tick").foreach_batch(sabotage)
            return ssc

        return make

    sink = ListSink()
    ssc = sk.StreamingContext.get_or_create(url, setup(sink))
    with pytest.raises(CheckpointError, match="state/totals/000000000002000.delta"):
        ssc.run(max_batches=5)
    assert ssc._state == "stopped"  # the job stopped and released the checkpoint
    assert Checkpoint(url).commits()[0].batch_time == 1000  # nothing after the failed commit was committed
    # Up to COMMITS_IN_FLIGHT batches after it may have run their outputs before the failure was known (their
    # plans are durable): they are replayed.
    assert len(sink.batches) <= 2 + COMMITS_IN_FLIGHT
    state_dir.unlink()
    moved.rename(state_dir)
    after = ListSink()
    run_until(url, setup(after), 5)
    assert sorted(after.batches[-1][1]) == totals_after(5)
    assert [t for t, _ in after.batches] == [2000, 3000, 4000, 5000]  # replayed from batch 2 on


def test_lane_runs_tasks_in_order_and_blocks_when_full() -> None:
    lane = Lane("test-lane", 2)
    gate = threading.Event()
    order: list[int] = []

    def task(i: int) -> Any:
        def run() -> int:
            gate.wait()
            order.append(i)
            return i * 10

        return run

    lane.submit(1, task(1))
    lane.submit(2, task(2))
    third = threading.Thread(target=lane.submit, args=(3, task(3)))
    third.start()
    third.join(timeout=0.2)  # a bounded wait for something that must not happen
    assert third.is_alive() and not lane.pending(3)  # the third waits for room (back-pressure)
    assert lane.pending(1) and lane.pending(2)
    gate.set()
    third.join()
    lane.drain()
    assert order == [1, 2, 3]
    assert lane.take_done() == [(1, 10), (2, 20), (3, 30)]
    assert lane.close() is None


def test_lane_stops_at_the_first_error_and_raises_it_once() -> None:
    lane = Lane("test-lane", 3)
    gate = threading.Event()
    ran: list[int] = []

    def fail() -> None:
        gate.wait()
        raise OSError("disk full")

    lane.submit(1, fail)
    lane.submit(2, lambda: ran.append(2))
    gate.set()
    with pytest.raises(OSError, match="disk full"):
        lane.drain()
    assert ran == []  # nothing after the failed task runs (it may name files the failed task wrote)
    with pytest.raises(CheckpointError, match="failed earlier"):
        lane.submit(3, lambda: None)
    assert not lane.settled(3)
    assert lane.close() is None  # already raised: not reported twice


def test_an_error_not_yet_raised_is_returned_by_close() -> None:
    lane = Lane("test-lane", 1)
    lane.submit(7, lambda: 1 / 0)
    err = lane.close()
    assert isinstance(err, ZeroDivisionError)


def test_a_steady_batch_on_a_local_disk_flushes_its_plan_once_and_creates_no_plan_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Issue 14.1: the plan is appended to the plan log with one fdatasync (before: a new file, its fsync, a link and
    a directory fsync), so a steady batch whose delta rides in the commit record flushes the disk three times: the
    plan, the record and the log directory's entry for it. And the plans are not one file each."""
    import os

    url = str(tmp_path / "c")
    sink = ListSink()
    job = rate_job(url, sink, snapshot_every=1000, keep_commits=1000, window=False, inline_delta_bytes=1 << 20)
    ssc = sk.StreamingContext.get_or_create(url, job)
    ssc.run(max_batches=3)  # the first plan creates the plan log
    flushes: list[str] = []
    lock = threading.Lock()

    def counting(name: str) -> Any:
        orig = getattr(os, name)

        def call(fd: int) -> None:
            if threading.current_thread().name != "streamkeep-lease":  # the lease's heartbeat: not the batches'
                with lock:
                    flushes.append(name)
            orig(fd)

        return call

    monkeypatch.setattr(os, "fsync", counting("fsync"))
    monkeypatch.setattr(os, "fdatasync", counting("fdatasync"))
    ssc.run(max_batches=10)  # returns once the 10 batches are committed
    monkeypatch.undo()
    ssc.stop()
    assert sorted(sink.batches[-1][1]) == totals_after(13)
    assert len(flushes) == 30, flushes  # before: 40 (the plan's file and its directory entry flushed apart)
    assert flushes.count("fdatasync") == 10
    assert sorted(p.name for p in Path(url, "plans").iterdir()) == ["000000000001000.plog"]


def test_no_output_of_a_batch_runs_before_its_plan_is_durable_even_on_a_slow_disk(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The plan is written in the background while the batch computes; its outputs wait for it.

    A slow disk (each plan write takes 50 ms) leaves the batch's computation far ahead of its plan
    write: an output run before the plan is durable would see no plan of its batch on disk.
    """
    url = str(tmp_path / "c")
    durable: set[int] = set()
    real = Checkpoint.write_plan_data

    def slow_write(self: Checkpoint, batch_time: int, data: bytes) -> None:
        time.sleep(0.05)  # a slow disk, not synchronisation: the outputs must wait however long it takes
        real(self, batch_time, data)
        durable.add(batch_time)

    monkeypatch.setattr(Checkpoint, "write_plan_data", slow_write)
    early: list[int] = []

    def output(t: Any, batch: Any) -> None:
        ms = int(t.timestamp() * 1000)
        if ms not in durable or ms not in Checkpoint(url).plan_times():
            early.append(ms)

    def setup() -> sk.StreamingContext:
        ssc = rate_job(url, ListSink())()
        ssc.rate_stream(2, name="more").foreach_batch(output)
        return ssc

    run_until(url, setup, 4)
    assert not early, f"outputs of batches {early} ran before their plan was durable"
