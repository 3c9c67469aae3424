"""Incremental state and retention: deltas follow changed keys; old files go, needed files stay."""

from __future__ import annotations

import operator
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from _ckpt_jobs import rate_job, run_until, totals_after

import streamkeep as sk
from streamkeep.checkpoint import Checkpoint
from streamkeep.testing import ListSink, ManualClock

N_KEYS = 10_000


def keyed_job(url: str, items: list[list[Any]]) -> Callable[[], sk.StreamingContext]:
    def setup() -> sk.StreamingContext:
        ssc = sk.StreamingContext(1.0, checkpoint=url, clock=ManualClock(), snapshot_every=100, inline_delta_bytes=0)
        pairs = ssc.queue_stream(items, name="q")
        pairs.update_state_by_key(lambda new, old: (old or 0) + sum(new), name="totals").foreach_batch(lambda b: None)

        def track(k: Any, v: Any, state: Any) -> None:
            state.update((state.get() if state.exists() else 0) + v)

        pairs.map_with_state(track, name="mws").foreach_batch(lambda b: None)
        pairs.reduce_by_key_and_window(operator.add, 2.0, inv_f=operator.sub, name="win").foreach_batch(lambda b: None)
        return ssc

    return setup


def _delta_size(url: str, op: str, t: int) -> int | None:
    """Bytes of `op`'s delta for batch `t` (a file of its own, or inline in the commit record); None: no delta."""
    for commit in Checkpoint(url).commits():
        for entry in commit.data["state"][op]["deltas"]:
            if isinstance(entry, dict) and entry["t"] == t:
                return len(entry["data"])
            if isinstance(entry, str) and entry.endswith(f"/{t:015d}.delta"):
                return Path(url, entry).stat().st_size
    return None


def test_delta_bytes_follow_changed_keys_not_total_keys(tmp_path: Path) -> None:
    url = str(tmp_path / "c")
    items = [
        [(k, 1) for k in range(N_KEYS)],  # batch 1: every key is new
        [(k, 1) for k in range(10)],  # batch 2: 10 keys change
        [(k, 1) for k in range(100)],  # batch 3: 100 keys change
        [],  # batch 4: nothing changes
    ]
    run_until(url, keyed_job(url, items), 4)
    for op in ("totals", "mws"):
        full, ten, hundred = (_delta_size(url, op, t) or 0 for t in (1000, 2000, 3000))
        assert ten <= 0.02 * full, (op, ten, full)
        assert hundred <= 0.05 * full, (op, hundred, full)
        assert ten < hundred, (op, ten, hundred)
        assert _delta_size(url, op, 4000) is None  # no change: no delta at all
    # The window keeps a per-batch slice: its delta is that slice plus the keys whose running value moved.
    assert (_delta_size(url, "win", 2000) or 0) <= 0.05 * (_delta_size(url, "win", 1000) or 0)


def _files(url: str) -> set[str]:
    return {p.relative_to(url).as_posix() for p in Path(url).rglob("*") if p.is_file()}


def _retained(url: str) -> tuple[list[Any], set[str]]:
    commits = Checkpoint(url).commits()
    needed = set().union(*(c.files() for c in commits))
    return commits, needed


def test_retention_removes_old_files_and_keeps_what_commits_need(tmp_path: Path) -> None:
    url = str(tmp_path / "c")
    counts = []
    for total in (10, 25, 60):
        run_until(url, rate_job(url, ListSink(), snapshot_every=5, keep_commits=2), total)
        files = _files(url)
        counts.append(len(files))
        commits, needed = _retained(url)
        assert [c.batch_time for c in commits] == [total * 1000, (total - 1) * 1000]  # keep_commits=2
        assert needed <= files  # everything the retained commits need is there
        newest = commits[0]
        for name, chain in newest.data["state"].items():
            assert chain["snapshot"] is not None, name
            assert len(chain["deltas"]) <= 5, (name, chain)  # at most snapshot_every deltas after the snapshot
        state_files = {f for f in files if f.startswith("state/")}
        # Besides what commits need, at most one snapshot per operator that was written but not yet adopted.
        extra = state_files - needed
        assert all(f.endswith(".snap") for f in extra) and len(extra) <= 2, extra
        plans = sorted(f for f in files if f.startswith("plans/"))
        # A plan log goes once every plan in it is at or before the oldest retained commit (the one of this run stays).
        logs_plans = [Checkpoint(url).read_plan_log(f)[0] for f in plans]
        assert all(f.endswith(".plog") for f in plans) and len(plans) <= 2, plans
        assert all(max(p) > commits[-1].batch_time for p in logs_plans), plans
        logs = sorted(f for f in files if f.startswith("log/"))
        assert len(logs) <= 3, logs
    assert max(counts[1:]) <= counts[0] + 4, counts  # bounded: does not grow with the number of batches (the snapshot phase varies)
    sink = ListSink()
    run_until(url, rate_job(url, sink, snapshot_every=5, keep_commits=2), 61)
    assert sorted(sink.batches[-1][1]) == totals_after(61)


def test_file_count_stays_bounded_across_many_restarts(tmp_path: Path) -> None:
    url = str(tmp_path / "c")
    sizes = []
    for i in range(1, 13):
        run_until(url, rate_job(url, ListSink(), snapshot_every=3, keep_commits=2), i * 4)
        sizes.append(len(_files(url)))
    # Bounded, not constant: a snapshot the background thread finishes a batch or two late is adopted
    # late (its operators' chains keep more deltas meanwhile), and one in flight at stop() stays until
    # the next start's sweep. Growth with the number of restarts would exceed this within a few rounds.
    assert max(sizes[3:]) <= min(sizes[3:]) + 12, sizes
    sink = ListSink()
    run_until(url, rate_job(url, sink, snapshot_every=3, keep_commits=2), 49)
    assert sorted(sink.batches[-1][1]) == totals_after(49)


def test_keep_commits_one_still_keeps_a_commit_to_fall_back_to(tmp_path: Path) -> None:
    url = str(tmp_path / "c")
    for total in (3, 7, 8):
        run_until(url, rate_job(url, ListSink(), snapshot_every=2, keep_commits=1), total)
        commits, needed = _retained(url)
        assert [c.batch_time for c in commits] == [total * 1000, (total - 1) * 1000]  # at least two, always
        assert needed <= _files(url)
    sink = ListSink()
    run_until(url, rate_job(url, sink, snapshot_every=2, keep_commits=1), 9)
    assert sorted(sink.batches[-1][1]) == totals_after(9)


def test_plan_logs_rotate_and_old_ones_are_deleted_while_the_job_runs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from streamkeep.checkpoint import _checkpoint

    monkeypatch.setattr(_checkpoint, "PLAN_LOG_PLANS", 3)
    url = str(tmp_path / "c")
    seen: set[str] = set()
    sink = ListSink()
    ssc = sk.StreamingContext.get_or_create(url, rate_job(url, sink, snapshot_every=5, keep_commits=2))
    for _ in range(20):
        ssc.run(max_batches=1)
        now = {f for f in _files(url) if f.startswith("plans/")}
        seen |= now
        assert len(now) <= 2, now  # the log being appended to, and the one before while a kept commit needs it
    ssc.stop()
    assert len(seen) == 7  # batches 1-3, 4-6, ..., 19-20: every log was written, rotated and deleted in turn
    assert sorted(sink.batches[-1][1]) == totals_after(20)
    # and a restart replays nothing and continues exactly
    sink2 = ListSink()
    run_until(url, rate_job(url, sink2, snapshot_every=5, keep_commits=2), 22)
    assert [t for t, _ in sink2.batches] == [21000, 22000] and sorted(sink2.batches[-1][1]) == totals_after(22)
