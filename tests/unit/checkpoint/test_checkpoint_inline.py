"""Small deltas ride inside the commit record: no state file, and recovery reads them back."""

from __future__ import annotations

from pathlib import Path

from _ckpt_jobs import rate_job, run_until, totals_after

from streamkeep.testing import ListSink


def test_small_deltas_are_inline_and_restore(tmp_path: Path) -> None:
    url = str(tmp_path / "c")
    sink = ListSink()
    run_until(url, rate_job(url, sink, inline_delta_bytes=16 * 1024), 4)
    assert not Path(url, "state", "totals").exists()  # every delta so far was inline
    run_until(url, rate_job(url, sink, inline_delta_bytes=16 * 1024), 7)
    assert sorted(sink.batches[-1][1]) == totals_after(7)


def test_large_deltas_still_get_files(tmp_path: Path) -> None:
    url = str(tmp_path / "c")
    sink = ListSink()
    run_until(url, rate_job(url, sink, inline_delta_bytes=8, keys=50, rows_per_second=100), 3)
    assert list(Path(url, "state", "totals").iterdir())
    run_until(url, rate_job(url, sink, inline_delta_bytes=8, keys=50, rows_per_second=100), 5)
    assert sorted(sink.batches[-1][1]) == totals_after(5, rows_per_second=100, keys=50)


def test_inline_deltas_are_capped_per_chain(tmp_path: Path) -> None:
    # every commit record repeats the chain, so the inline total is bounded; bigger chains spill to files
    url = str(tmp_path / "c")
    sink = ListSink()
    run_until(url, rate_job(url, sink, inline_delta_bytes=200, snapshot_every=100, keys=20, rows_per_second=20), 8)
    from streamkeep.checkpoint import Checkpoint

    newest = Checkpoint(url).commits()[0]
    for chain in newest.data["state"].values():
        assert sum(len(d["data"]) for d in chain["deltas"] if isinstance(d, dict)) <= 200
    assert list(Path(url, "state", "totals").iterdir())  # the rest went to files
    run_until(url, rate_job(url, sink, inline_delta_bytes=200, snapshot_every=100, keys=20, rows_per_second=20), 10)
    assert sorted(sink.batches[-1][1]) == totals_after(10, rows_per_second=20, keys=20)


def test_snapshot_cadence_survives_frequent_restarts(tmp_path: Path) -> None:
    # a job restarted more often than snapshot_every must still snapshot, so its chain stays short
    url = str(tmp_path / "c")
    for total in (2, 4, 6, 8):
        run_until(url, rate_job(url, ListSink(), snapshot_every=3, window=False), total)
    from streamkeep.checkpoint import Checkpoint

    chain = Checkpoint(url).commits()[0].data["state"]["totals"]
    # a snapshot still merging in the background when a run stops is not adopted (the next run starts
    # another), so the chain may hold up to 2 * snapshot_every - 1 deltas; a cadence reset by every restart
    # (2 batches per run < snapshot_every) would leave no snapshot and 8 deltas
    assert chain["snapshot"] is not None and len(chain["deltas"]) <= 5, chain
