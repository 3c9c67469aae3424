"""A mid-size state's merged snapshot is not waited for (issue 14.1, the 100k-key row of bench/checkpoint.py).

From `BIG_STATE_BYTES` (256 KiB, as `DIRECT_SNAPSHOT_BYTES`) a snapshot is merged in the background and the
next batch no longer waits for the merge (it took ~60-150 ms for 100k keys, 20-50x a batch). These
tests hold a merge open until the next batch is done, then stop the job: a clean stop waits for the
merge in flight and commits the last batch once more, naming it (issue 14 follow-up: before, the stop
dropped it, so a job stopped every two batches kept no snapshot), and a restart with get_or_create is
exact, compared with a run that never stopped; a merge done before the stop is adopted by a later
commit; a fenced driver's stop writes no record.
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import pytest

import streamkeep as sk
from streamkeep.checkpoint import Checkpoint, _retention
from streamkeep.cli._verify import verify
from streamkeep.errors import CheckpointError
from streamkeep.scheduler import _state_writer
from streamkeep.testing import ManualClock, state_of

#: Keys of state: encoded, well over BIG_STATE_BYTES (~7 bytes a key).
KEYS = 60_000


def _bump(key: str, value: int, state: sk.State) -> None:
    state.update(state.get_option(0) + value)


def _job(url: str, *, seed: bool = True) -> sk.StreamingContext:
    ssc = sk.StreamingContext(1.0, checkpoint=url, clock=ManualClock(), snapshot_every=3, inline_delta_bytes=0)
    initial = [(f"k{i}", 0) for i in range(KEYS)] if seed else None
    pairs = ssc.rate_stream(500, name="rate").map(lambda r: (f"k{(r[0] * 7919) % KEYS}", 1))
    pairs.map_with_state(_bump, name="state", initial=initial).foreach_batch(lambda b: None)
    return ssc


def _held_merges(monkeypatch: pytest.MonkeyPatch) -> tuple[threading.Event, list[bool]]:
    """Every merge waits for the returned event (at most 20 s) first; the list tells, per merge, whether it was set in time."""
    release = threading.Event()
    in_time: list[bool] = []
    real = _state_writer.compact

    def held(ckpt: Any, t: int, jobs: list[Any], **kw: Any) -> Any:
        in_time.append(release.wait(20))  # a batch loop waiting for this merge sets it only after the 20 s
        return real(ckpt, t, jobs, **kw)

    monkeypatch.setattr(_state_writer, "compact", held)
    monkeypatch.setattr(_state_writer, "HELPER_STATE_BYTES", 1 << 62)  # merged in this process: `compact`
    return release, in_time


def _newest_snapshot(url: str) -> tuple[int, Any]:
    """(batch time, snapshot of the operator) of the newest commit record."""
    newest = Checkpoint(url).commits()[0].data
    return newest["batch_time"], newest["state"]["state"]["snapshot"]


def _reference(url: str, batches: int) -> dict[str, int]:
    ref = _job(url)
    ref.run(max_batches=batches)
    out = dict(state_of(ref, "state")["set"])
    ref.stop()
    return out


class _Snapshots:
    """Listener: the batch times of the SnapshotCompleted events."""

    def __init__(self) -> None:
        self.times: list[int] = []

    def on_snapshot_completed(self, event: sk.SnapshotCompleted) -> None:
        self.times.append(event.batch_time_ms)


def test_a_stop_right_after_a_midsize_snapshot_started_commits_it_and_the_restart_is_exact(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    release, in_time = _held_merges(monkeypatch)
    url = str(tmp_path / "ck")
    ssc = _job(url)
    heard = _Snapshots()
    ssc.add_listener(heard)
    ssc.run(max_batches=3)  # batch 3 starts the snapshot: a merge, held open
    ssc.run(max_batches=1)  # batch 4 does not wait for it (before, it waited for the merge)
    release.set()
    final = dict(state_of(ssc, "state")["set"])
    before = Checkpoint(url).commits()[0].data
    ssc.stop()  # waits for the merge in flight and commits batch 4 again, naming it (before: dropped)
    assert in_time == [True], "batch 4 waited for the merge of batch 3's snapshot"
    assert heard.times == [3000], "listeners are told of the snapshot the stop's record names"
    assert _newest_snapshot(url) == (4000, "state/state/000000000003000.snap")
    again_rec = Checkpoint(url).commits()[0].data
    assert again_rec["state"]["state"]["deltas"] == ["state/state/000000000004000.delta"]  # only the delta after the snapshot
    assert again_rec["positions"] == before["positions"] and again_rec["graph_id"] == before["graph_id"]
    assert verify(url) == 0, "streamkeep verify took the stop's commit of batch 4 for one out of order"
    again = sk.StreamingContext.get_or_create(url, lambda: _job(url, seed=False))
    assert again.restored
    assert dict(state_of(again, "state")["set"]) == final
    again.run(max_batches=3)  # batch 6 snapshots again
    after = dict(state_of(again, "state")["set"])
    again.stop()
    assert after == _reference(str(tmp_path / "ref"), 7)


def test_a_midsize_merge_done_before_a_later_batch_is_adopted_by_its_commit(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    release, in_time = _held_merges(monkeypatch)
    url = str(tmp_path / "ck")
    ssc = _job(url)
    ssc.run(max_batches=4)  # batch 3 starts the merge; batch 4 runs while it is held
    writer = ssc._scheduler.writer  # type: ignore[union-attr]
    assert writer is not None
    release.set()
    thread = writer._thread
    assert thread is not None
    thread.join()
    ssc.run(max_batches=1)  # batch 5 adopts it: its commit names the snapshot of batch 3
    final = dict(state_of(ssc, "state")["set"])
    ssc.stop()
    assert in_time == [True], "batch 4 waited for the merge of batch 3's snapshot"
    assert _newest_snapshot(url) == (5000, "state/state/000000000003000.snap")
    again = sk.StreamingContext.get_or_create(url, lambda: _job(url, seed=False))
    assert dict(state_of(again, "state")["set"]) == final
    again.stop()
    assert final == _reference(str(tmp_path / "ref"), 5)


def test_a_job_run_two_batches_at_a_time_keeps_its_restart_chain_short(tmp_path: Path) -> None:
    """A backfill run from cron, ``run(max_batches=2)`` again and again: each stop commits the merge it waited for.

    Before, every stop dropped the merge in flight (the second batch does not wait for it), so the
    chain a restart reads grew by two batches per run, up to MAX_CHAIN (500).
    """
    url = str(tmp_path / "ck")
    runs = 8
    chains = []
    for i in range(runs):
        ssc = _job(url) if i == 0 else sk.StreamingContext.get_or_create(url, lambda: _job(url, seed=False))
        ssc.run(max_batches=2)
        if i == runs - 1:
            final = dict(state_of(ssc, "state")["set"])
        ssc.stop()
        chains.append(len(Checkpoint(url).commits()[0].data["state"]["state"]["deltas"]))
    assert max(chains) <= 3, f"the restart chain grew with the runs (snapshot_every=3): {chains}"
    assert final == _reference(str(tmp_path / "ref"), 2 * runs)


def test_a_fenced_driver_stopping_warns_closes_its_executor_and_writes_no_record_for_the_merge(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """Fenced at the stop's second record: batch 4 stays committed, so the stop warns (as a stop without a merge
    reports nothing), closes its executor and tells no listener of a snapshot no record names."""
    release, _ = _held_merges(monkeypatch)
    url = str(tmp_path / "ck")
    ssc = _job(url)
    heard = _Snapshots()
    ssc.add_listener(heard)
    ssc.run(max_batches=4)  # batch 3's merge is held open past batch 4
    executor = ssc._scheduler.executor  # type: ignore[union-attr]
    closed: list[bool] = []
    real_close = type(executor).close
    monkeypatch.setattr(executor, "close", lambda: (closed.append(True), real_close(executor))[1])
    log_dir = tmp_path / "ck" / "log"
    newest = max(log_dir.iterdir())
    intruder = log_dir / f"{int(newest.stem) + 1:012d}.rec"
    intruder.write_bytes(newest.read_bytes())  # another driver appended to the log: this one is fenced
    release.set()
    with caplog.at_level("WARNING", logger="streamkeep"):
        ssc.stop()
    assert max(log_dir.iterdir()) == intruder, "the fenced driver wrote a record after the other driver's"
    assert closed == [True], "the stop left the executor (its worker pool or actors) running"
    assert heard.times == [], "a listener was told of a snapshot no commit record names"
    warned = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert any("does not commit it again" in m and "nothing is lost" in m for m in warned), warned
    assert not any("without committing batch" in m for m in warned), warned  # batch 4 was committed


def test_a_stop_after_a_commit_whose_retention_failed_writes_no_older_record(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Batch 4's record is durable, then deleting an old file fails (as on S3): the job fails at batch 5.

    Before, the stop took the lane's error (raised already) for none and committed batch 3 again, naming
    its merge, after the commit of batch 4: a log out of order, and a restart from batch 3.
    """
    release, _ = _held_merges(monkeypatch)
    real = _retention.Retention.committed
    failures: list[int] = []

    def flaky(self: Any, seq: int, t: int, files: Any) -> None:
        real(self, seq, t, files)
        if t == 4000 and not failures:
            failures.append(t)
            raise CheckpointError("simulated: deleting a file failed")

    monkeypatch.setattr(_retention.Retention, "committed", flaky)
    url = str(tmp_path / "ck")
    ssc = _job(url)
    ssc.run(max_batches=3)  # batch 3 starts the merge, held open
    with pytest.raises(CheckpointError, match="simulated"):
        ssc.run(max_batches=2)  # batch 4 commits, its retention fails; batch 5 raises it
    release.set()
    ssc.stop()
    assert failures == [4000]
    newest = Checkpoint(url).commits()[0].data
    assert newest["batch_time"] == 4000, "the stop committed an older batch after batch 4's commit"
    assert verify(url) == 0
    monkeypatch.undo()
    again = sk.StreamingContext.get_or_create(url, lambda: _job(url, seed=False))
    assert again.last_batch_time_ms == 4000
    again.run(max_batches=1)
    got = dict(state_of(again, "state")["set"])
    again.stop()
    assert got == _reference(str(tmp_path / "ref"), 5)
