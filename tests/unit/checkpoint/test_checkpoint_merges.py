"""Recovery merges snapshot + deltas right when keys are removed (fast; no child processes).

The kill matrix catches a recovery that resurrects a removed key only in its slow runs.
Here a job restarts at every batch boundary and each batch's output is compared with a
brute-force model of the job: a key removed after the last snapshot must stay removed
(its removal lives only in a delta), for `update_state_by_key`, `map_with_state` and a
windowed reduce whose running value is deleted by `filter_f`. Deltas both inline in the
commit record and in files of their own.
"""

from __future__ import annotations

import operator
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

import streamkeep as sk
from streamkeep.testing import ListSink, ManualClock

ROWS = 6  # rows per batch (rate_stream rows_per_second with a 1 s interval)
BATCHES = 9


def _removing_update(values: list[int], old: int | None) -> int | None:
    total = (old or 0) + sum(values)
    return None if total % 6 == 0 else total  # removed every third batch, then starts again


def _removing_track(key: int, value: int | None, state: Any) -> tuple[int, int | None]:
    total = (state.get() if state.exists() else 0) + (value or 0)
    if total % 6 == 0:
        state.remove()
        return key, None
    state.update(total)
    return key, total


def _job(url: str, outs: dict[str, ListSink], *, inline: bool) -> Callable[[], sk.StreamingContext]:
    def setup() -> sk.StreamingContext:
        ssc = sk.StreamingContext(
            1.0, checkpoint=url, clock=ManualClock(), snapshot_every=2, inline_delta_bytes=4096 if inline else 0
        )
        rows = ssc.rate_stream(ROWS, name="rate")
        pairs = rows.map(lambda r: (r[0] % 3, 1))
        pairs.update_state_by_key(_removing_update, name="totals").write_to(outs["totals"])
        pairs.map_with_state(_removing_track, name="tracked").write_to(outs["tracked"])
        # one key per batch, cycling over 4: a key leaves the 3-batch window and filter_f deletes its running value
        rows.map(lambda r: ((r[0] // ROWS) % 4, 1)).reduce_by_key_and_window(
            operator.add, 3.0, inv_f=operator.sub, filter_f=lambda kv: kv[1] > 0, name="win"
        ).write_to(outs["win"])
        return ssc

    return setup


def _model(batch: int) -> dict[str, list[Any]]:
    """What each output holds for batch `batch` (1-based), computed by brute force."""
    totals = {k: 0 for k in range(3)}
    for _ in range(batch):
        for k in range(3):
            totals[k] += 2  # 6 rows over 3 keys; 0 means removed
            if totals[k] % 6 == 0:
                totals[k] = 0
    # map_with_state emits one record per row; a key's second row in a batch sees the first one's update
    tracked: list[Any] = []
    run = {k: 0 for k in range(3)}
    for b in range(1, batch + 1):
        out = []
        for row in range((b - 1) * ROWS, b * ROWS):
            k = row % 3
            run[k] += 1
            if run[k] % 6 == 0:
                run[k] = 0
                out.append((k, None))
            else:
                out.append((k, run[k]))
        tracked = out
    win = Counter((j - 1) % 4 for j in range(max(1, batch - 2), batch + 1) for _ in range(ROWS))
    return {
        "totals": sorted((k, v) for k, v in totals.items() if v),
        "tracked": sorted(tracked, key=repr),
        "win": sorted(win.items()),
    }


def _run(url: str, outs: dict[str, ListSink], inline: bool, until: int) -> None:
    ssc = sk.StreamingContext.get_or_create(url, _job(url, outs, inline=inline))
    try:
        done = (ssc.last_batch_time_ms or 0) // 1000
        ssc.run(max_batches=until - done)
    finally:
        ssc.stop()


@pytest.mark.parametrize("inline", [True, False], ids=["inline-deltas", "delta-files"])
@pytest.mark.parametrize("restart_after", range(1, BATCHES))
def test_removed_keys_stay_removed_across_a_restart(tmp_path: Path, restart_after: int, inline: bool) -> None:
    url = str(tmp_path / "ckpt")
    outs = {n: ListSink(n) for n in ("totals", "tracked", "win")}
    _run(url, outs, inline, restart_after)
    _run(url, outs, inline, BATCHES)  # the same sinks: a replayed batch replaces its entry
    for name, sink in outs.items():
        got = {t // 1000: sorted(recs, key=repr) if name == "tracked" else sorted(recs) for t, recs in sink.batches}
        assert sorted(got) == list(range(1, BATCHES + 1)), name
        for b in range(1, BATCHES + 1):
            assert got[b] == _model(b)[name], (name, b)


def test_the_model_sees_removals_after_snapshots() -> None:
    # The scenario the test above needs: keys removed in batches that are not snapshot batches
    # (snapshot_every=2), and window keys deleted by filter_f.
    removed_at = [b for b in range(1, BATCHES + 1) if len(_model(b)["totals"]) < 3]
    assert removed_at and any(b % 2 for b in removed_at), removed_at
    assert all(len(_model(b)["win"]) <= 3 for b in range(1, BATCHES + 1))
    assert {k for k, _ in _model(5)["win"]} == {2, 3, 0}  # key 1 (batches 2, 6) left the window: deleted


@pytest.mark.parametrize("restart_after", [2, 3, 4, 5])
def test_a_restored_window_holds_exactly_the_slices_an_uncrashed_one_holds(tmp_path: Path, restart_after: int) -> None:
    """A window restored from snapshot + deltas holds the same slices and running values as one that never
    stopped (outputs alone would not show leftover slices or running values)."""
    import operator as op

    from streamkeep.testing import state_of

    batches = [[("a", i), ("b", 1)] for i in range(1, 9)]

    def setup(url: str) -> sk.StreamingContext:
        ssc = sk.StreamingContext(1.0, checkpoint=url, clock=ManualClock(), snapshot_every=100, inline_delta_bytes=0)
        pairs = ssc.queue_stream(batches, name="q")
        pairs.window(2.0, 1.0, name="plain").foreach_batch(lambda b: None)
        pairs.reduce_by_key_and_window(op.add, 3.0, 1.0, inv_f=op.sub, name="inv").foreach_batch(lambda b: None)
        return ssc

    def final_state(url: str, stops: list[int]) -> dict[str, Any]:
        done = 0
        for stop in [*stops, len(batches)]:
            ssc = sk.StreamingContext.get_or_create(url, lambda: setup(url))
            ssc.run(max_batches=stop - done)
            done = stop
            if stop == len(batches):
                out = {name: {k: sorted(v, key=repr) for k, v in state_of(ssc, name).items()} for name in ("plain", "inv")}
            ssc.stop()
        return out

    assert final_state(str(tmp_path / "restarted"), [restart_after]) == final_state(str(tmp_path / "straight"), [])
