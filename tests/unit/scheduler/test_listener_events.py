"""Listener events (issue 13): every callback fires with the real numbers of the job."""

from __future__ import annotations

import logging
from typing import Any

import pytest

import streamkeep as sk
from streamkeep.scheduler._state_io import encode_state
from streamkeep.testing import ManualClock, key_count_of, state_of


class Recorder(sk.StreamingListener):
    def __init__(self) -> None:
        self.events: list[tuple[str, Any]] = []

    def on_job_started(self, event: sk.JobStarted) -> None:
        self.events.append(("started", event))

    def on_batch_planned(self, event: sk.BatchPlanned) -> None:
        self.events.append(("planned", event))

    def on_batch_completed(self, info: sk.BatchInfo) -> None:
        self.events.append(("completed", info))

    def on_batch_replayed(self, event: sk.BatchReplayed) -> None:
        self.events.append(("replayed", event))

    def on_snapshot_completed(self, event: sk.SnapshotCompleted) -> None:
        self.events.append(("snapshot", event))

    def on_error(self, event: sk.ErrorInfo) -> None:
        self.events.append(("error", event))

    def on_job_stopped(self, event: sk.JobStopped) -> None:
        self.events.append(("stopped", event))

    def of(self, kind: str) -> list[Any]:
        return [e for k, e in self.events if k == kind]


def _add(new: list[int], old: int | None) -> int:
    return (old or 0) + sum(new)


BATCHES = [["a b a", "c"], ["b b"], [], ["d a"]]


def _job(url: str | None, seen: list[Any] | None = None, **kw: Any) -> sk.StreamingContext:
    ssc = sk.StreamingContext(1.0, checkpoint=url, clock=ManualClock(), **kw)
    counts = ssc.rate_stream(7, name="rate").map(lambda r: (f"k{r[0] % 5}", 1)).update_state_by_key(_add, name="counts")
    counts.foreach_batch(lambda b: None)
    if seen is not None:
        ssc.add_listener(_Peek(ssc, seen))
    return ssc


class _Peek:
    """A duck-typed listener with one callback: reads the job's real state at each batch."""

    def __init__(self, ssc: sk.StreamingContext, seen: list[Any]) -> None:
        self.ssc, self.seen = ssc, seen

    def on_batch_completed(self, info: sk.BatchInfo) -> None:
        node = self.ssc._scheduler.stateful["counts"]  # type: ignore[union-attr]
        self.seen.append((info, key_count_of(self.ssc, "counts"), len(encode_state(node, state_of(self.ssc, "counts")))))


def test_events_of_a_fresh_job_carry_its_real_numbers(tmp_path: Any) -> None:
    rec = Recorder()
    seen: list[Any] = []
    ssc = _job(str(tmp_path / "ck"), seen, snapshot_every=2)
    ssc.add_listener(rec)
    ssc.run(max_batches=6)
    ssc.stop()
    kinds = [k for k, _ in rec.events]
    assert kinds[0] == "started" and kinds[-1] == "stopped"
    started = rec.of("started")[0]
    assert not started.restored and started.commit_batch_ms is None and started.replay_batches == 0
    assert started.sources == ["rate"] and started.operators == ["counts"] and started.mode == "run"
    done = rec.of("completed")
    assert [i.batch_time_ms for i in done] == [p.batch_time_ms for p in rec.of("planned")]
    assert len(done) == 6 and all(i.records_per_source == {"rate": 7} and i.num_records == 7 for i in done)
    snaps = rec.of("snapshot")
    snap_sizes = {s.batch_time_ms: s.operators["counts"] for s in snaps}
    for info, keys, nbytes in seen:
        st = info.state["counts"]
        assert st.keys == keys == 5
        if st.bytes_at_ms == info.batch_time_ms:  # measured at this batch: the real encoded size (its snapshot's, if it took one)
            assert st.bytes == snap_sizes.get(info.batch_time_ms, nbytes)
        assert info.checkpoint_bytes > 0 and info.commit_ms >= 0 and info.compute_ms >= 0
        assert set(info.operator_ms) == {"counts", "foreach_batch#3"}
    assert [i.snapshot for i in done] == [False, True, False, True, False, True]
    # a small state's snapshot is taken (encoded) in its batch and named by that batch's commit: reported at once
    assert [s.batch_time_ms for s in snaps] == [done[1].batch_time_ms, done[3].batch_time_ms, done[5].batch_time_ms]
    assert all(s.bytes > 0 and set(s.operators) == {"counts"} for s in snaps)
    # a snapshot gives the exact size for free: its encoded payload, as of its batch
    at = done[3].state["counts"]
    assert at.bytes_at_ms == done[3].batch_time_ms and at.bytes == snaps[1].operators["counts"] > 0
    stopped = rec.of("stopped")[0]
    assert stopped.batch_time_ms == done[-1].batch_time_ms and stopped.batches == 6 and not stopped.failed


def test_restore_reports_commit_and_catch_up(tmp_path: Any) -> None:
    url = str(tmp_path / "ck")
    ssc = _job(url)
    ssc.run(max_batches=3)
    last = ssc.last_batch_time_ms
    ssc.stop()
    assert last is not None
    rec = Recorder()

    def setup() -> sk.StreamingContext:
        s = _job(url)
        s.add_listener(rec)
        return s

    ssc2 = sk.StreamingContext.get_or_create(url, setup)
    ssc2._clock.set(last + 6 * 1000)  # type: ignore[attr-defined]  # six batch times passed while it was down
    ssc2.run(max_batches=1)
    ssc2.stop()
    started = rec.of("started")[0]
    assert started.restored and started.commit_batch_ms == last and started.replay_batches == 0
    assert started.catch_up_batches == 6
    assert started.batch_time_ms == last + 1000


def test_replayed_batches_are_reported(tmp_path: Any) -> None:
    url = str(tmp_path / "ck")
    ssc = _job(url)
    ssc.run(max_batches=2)
    committed = ssc.last_batch_time_ms
    assert committed is not None
    sched = ssc._scheduler
    assert sched is not None
    # plan two more batches durably, without running them (what a crash after planning leaves)
    sched._plan(committed + 1000)
    sched._plan(committed + 2000)
    ssc.stop()

    rec = Recorder()

    def setup() -> sk.StreamingContext:
        s = _job(url)
        s.add_listener(rec)
        return s

    ssc2 = sk.StreamingContext.get_or_create(url, setup)
    ssc2.run(max_batches=3)
    ssc2.stop()
    started = rec.of("started")[0]
    assert started.restored and started.commit_batch_ms == committed and started.replay_batches == 2
    replayed = rec.of("replayed")
    assert [(r.batch_time_ms, r.remaining, r.num_records) for r in replayed] == [(committed + 1000, 1, 7), (committed + 2000, 0, 7)]
    planned = rec.of("planned")
    assert [p.replay for p in planned] == [True, True, False]
    done = rec.of("completed")
    assert [i.replayed for i in done] == [True, True, False]
    assert [i.pending_batches for i in done] == [1, 0, 0]


def test_error_event_and_failed_stop() -> None:
    rec = Recorder()
    ssc = sk.StreamingContext(1.0, clock=ManualClock())

    def fail(b: Any) -> None:
        if 3 in b.collect():
            raise RuntimeError("bad record 3")

    ssc.queue_stream([[1], [2], [3]], name="q").foreach_batch(fail)
    ssc.add_listener(rec)
    with pytest.raises(sk.UserFunctionError):
        ssc.run()
    err = rec.of("error")[0]
    assert err.kind == "UserFunctionError" and "bad record 3" in err.message and err.batch_time_ms == 3000
    assert rec.of("stopped")[0].failed and rec.of("stopped")[0].batches == 2


def test_a_job_that_fails_in_its_first_batch_names_no_last_batch(caplog: Any) -> None:
    """It said "stopped after 0 batches; last batch <the time before the first>": a batch that never ran."""
    ssc = sk.StreamingContext(1.0, clock=ManualClock())

    def fail(b: Any) -> None:
        raise RuntimeError("bad")

    ssc.queue_stream([[1]], name="q").foreach_batch(fail)
    with caplog.at_level(logging.INFO, logger="streamkeep"), pytest.raises(sk.UserFunctionError):
        ssc.run()
    stops = [r.getMessage() for r in caplog.records if r.getMessage().startswith("stopped")]
    assert stops == ["stopped after 0 batches (none ran)"], stops


def test_plain_objects_and_broken_listeners_do_not_stop_the_job(caplog: Any) -> None:
    class OnlyCompleted:
        def __init__(self) -> None:
            self.n = 0

        def on_batch_completed(self, info: sk.BatchInfo) -> None:
            self.n += info.num_records

    class Broken(sk.StreamingListener):
        def on_batch_completed(self, info: sk.BatchInfo) -> None:
            raise ValueError("listener bug")

    only = OnlyCompleted()
    ssc = sk.StreamingContext(1.0, clock=ManualClock())
    ssc.queue_stream([[1, 2], [3]], name="q").foreach_batch(lambda b: None)
    ssc.add_listener(Broken())
    ssc.add_listener(only)
    with caplog.at_level(logging.ERROR, logger="streamkeep.listener"):
        assert ssc.run() == 2
    assert only.n == 3
    assert "listener bug" in caplog.text


def test_logs_say_start_snapshot_and_stop_with_iso_times(tmp_path: Any, caplog: Any) -> None:
    with caplog.at_level(logging.INFO, logger="streamkeep"):
        ssc = _job(str(tmp_path / "ck"), snapshot_every=1)
        ssc.run(max_batches=2)
        ssc.stop()
    msgs = [r.getMessage() for r in caplog.records]
    assert any(m.startswith("started fresh") and "1970-01-01T00:00:01.000Z" in m for m in msgs), msgs
    assert any(m.startswith("snapshot of batch 1970-01-01T00:00:01.000Z written") for m in msgs), msgs
    assert any(m.startswith("stopped after 2 batches; last batch 1970-01-01T00:00:02.000Z") for m in msgs), msgs
    snap = next(r for r in caplog.records if r.getMessage().startswith("snapshot"))
    assert snap.batch_time_ms == 1000 and snap.batch_time == "1970-01-01T00:00:01.000Z"  # type: ignore[attr-defined]


def test_falling_behind_warns(caplog: Any) -> None:
    from streamkeep.scheduler._events import LagWatch

    w = LagWatch(100)
    with caplog.at_level(logging.INFO, logger="streamkeep.scheduler"):
        for i in range(12):
            w.observe(1000 + i * 100, 50 * i)  # delay grows 50 ms per batch
        for i in range(3):
            w.observe(3000 + i * 100, 10)
    warn = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warn) == 1 and "falling behind" in warn[0].getMessage() and "batch 1970-01-01T00:00:01.900Z started 0.450 s" in warn[0].getMessage()
    assert any(r.getMessage().startswith("caught up") for r in caplog.records)


def test_checkpoint_bytes_are_the_bytes_of_the_files_the_batch_wrote(tmp_path: Any) -> None:
    """BatchInfo.checkpoint_bytes = plan + delta files + commit record of that batch (+ the graph file, in the first
    batch of a driver), read back from disk."""
    from pathlib import Path

    from streamkeep.checkpoint import Checkpoint, log_path

    url = str(tmp_path / "ckpt")
    rec = Recorder()
    ssc = _job(url, keep_commits=100, snapshot_every=100, inline_delta_bytes=0)
    ssc.add_listener(rec)
    ssc.run(max_batches=4)
    ssc.stop()
    by_time = {c.batch_time: c for c in Checkpoint(url).commits()}
    infos = rec.of("completed")
    assert len(infos) == 4
    # the plans are in a plan log (local disks): each is one frame of it, as long as the file of a plan of its own
    ck = Checkpoint(url)
    assert ck.plan_index()[infos[0].batch_time_ms].endswith(".plog")
    for info in infos:
        t = info.batch_time_ms
        plan_bytes = len(ck.encode_plan(t, ck.read_plan(t)))
        files = [log_path(by_time[t].seq), *(f for f in by_time[t].files() if f.endswith(f"{t:015d}.delta"))]
        if info is infos[0]:  # the driver's first commit also wrote the graph file its commit records name
            files += [f for f in by_time[t].files() if f.startswith("graphs/")]
        want = plan_bytes + sum(Path(url, f).stat().st_size for f in files)
        assert info.checkpoint_bytes == want, (t, files)


def test_a_listener_added_during_a_batch_sees_whole_batches_with_their_own_numbers(tmp_path: Any) -> None:
    """A listener added while a batch runs (here from an output) starts with the next batch: it is never told of a
    batch it did not see planned, and never gets a checkpoint_bytes counted from the start of the job."""
    url = str(tmp_path / "ckpt")
    rec = Recorder()
    ssc = sk.StreamingContext(1.0, checkpoint=url, clock=ManualClock())
    counts = ssc.rate_stream(7, name="rate").map(lambda r: (f"k{r[0] % 5}", 1)).update_state_by_key(_add, name="counts")

    def add_late(t: Any, batch: Any) -> None:
        if int(t.timestamp() * 1000) == 3000 and rec not in ssc._listeners:
            ssc.add_listener(rec)

    counts.foreach_batch(add_late)
    ssc.run(max_batches=5)
    ssc.stop()
    planned = [e.batch_time_ms for e in rec.of("planned")]
    completed = rec.of("completed")
    assert planned and [i.batch_time_ms for i in completed] == planned
    for info in completed:
        assert 0 < info.checkpoint_bytes < 20_000, info


def test_ctrl_c_during_run_is_an_interruption_not_a_failure(tmp_path: Any, caplog: Any) -> None:
    """Ctrl-C in a script that called run(): KeyboardInterrupt propagates (run() is in the foreground), but the job is
    not reported as failed (no ERROR log, no on_error, JobStopped.failed False), the log says what happens to the
    batch in progress, and the checkpoint is released for the next driver."""
    url = str(tmp_path / "ckpt")
    rec = Recorder()

    def build() -> sk.StreamingContext:
        ssc = sk.StreamingContext(1.0, checkpoint=url, clock=ManualClock())
        counts = ssc.rate_stream(7, name="rate").map(lambda r: (r[0] % 3, 1)).update_state_by_key(_add, name="counts")

        def ctrl_c(t: Any, batch: Any) -> None:
            if int(t.timestamp() * 1000) == 3000 and rec.of("started"):
                raise KeyboardInterrupt

        counts.foreach_batch(ctrl_c)
        return ssc

    ssc = build()
    ssc.add_listener(rec)
    with caplog.at_level(logging.INFO, logger="streamkeep"), pytest.raises(KeyboardInterrupt):
        ssc.run(max_batches=5)
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR], caplog.text
    assert "interrupted" in caplog.text and "re-run" in caplog.text
    assert rec.of("error") == [] and [e.failed for e in rec.of("stopped")] == [False]
    again = sk.StreamingContext.get_or_create(url, build)  # released: another driver takes it at once
    assert again.last_batch_time_ms == 2000
    again.stop()


def test_each_batch_counts_its_own_plan_in_checkpoint_bytes_when_the_next_is_planned_ahead(tmp_path: Any, executor: Any) -> None:
    """run(n) on Ray plans (and writes) batch t + 1 while batch t computes: its plan's bytes are batch t + 1's,
    not batch t's (before: batch t counted both plans, the last batch none). After the first batch (the graph
    file), each batch writes the same state bytes: what is left of checkpoint_bytes once its own plan and commit
    record are taken out is the same in every batch."""
    from pathlib import Path

    from streamkeep.checkpoint import Checkpoint, log_path

    url = str(tmp_path / "ckpt")
    rec = Recorder()
    ssc = _job(url, keep_commits=100, snapshot_every=100, inline_delta_bytes=0, executor=executor)
    ssc.add_listener(rec)
    ssc.run(max_batches=4)
    ssc.stop()
    ck = Checkpoint(url)
    by_time = {c.batch_time: c for c in ck.commits()}
    infos = rec.of("completed")
    assert [i.batch_time_ms for i in infos] == [1000, 2000, 3000, 4000]
    rest = []
    for info in infos[1:]:
        t = info.batch_time_ms
        plan_bytes = len(ck.encode_plan(t, ck.read_plan(t)))
        rest.append(info.checkpoint_bytes - plan_bytes - Path(url, log_path(by_time[t].seq)).stat().st_size)
    assert rest[0] > 0 and rest == [rest[0]] * 3, rest
