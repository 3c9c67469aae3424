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
