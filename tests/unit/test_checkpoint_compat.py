"""Code changes between runs: what restores, what starts empty, what is refused (and how to proceed)."""

from __future__ import annotations

import operator
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from _ckpt_jobs import add_up, run_until, totals_after

import streamkeep as sk
from streamkeep.errors import IncompatibleCheckpointError
from streamkeep.testing import ListSink, ManualClock

KEYS = 3


def job(
    url: str,
    sinks: dict[str, ListSink],
    *,
    update: Callable[[list[int], int | None], int | None] = add_up,
    stateless_extra: bool = False,
    window_len: float | None = 3.0,
    totals_kind: str = "update_state_by_key",
    new_stateful: bool = False,
    new_source: bool = False,
    allow_state_loss: tuple[str, ...] = (),
    interval: float = 1.0,
    rate_as_queue: bool = False,
) -> Callable[[], sk.StreamingContext]:
    def setup() -> sk.StreamingContext:
        ssc = sk.StreamingContext(interval, checkpoint=url, clock=ManualClock(), allow_state_loss=allow_state_loss)
        src = ssc.queue_stream([[(i, 0)] for i in range(100)], name="rate") if rate_as_queue else ssc.rate_stream(6, name="rate")
        pairs = src.map(lambda r: (r[0] % KEYS, 1))
        if stateless_extra:
            pairs = pairs.filter(lambda kv: True).map_values(lambda v: v * 1)
        if totals_kind == "update_state_by_key":
            totals = pairs.update_state_by_key(update, name="totals")
        else:

            def f(k: Any, v: Any, state: Any) -> tuple[Any, Any]:
                state.update((state.get() if state.exists() else 0) + v)
                return (k, state.get())

            totals = pairs.map_with_state(f, name="totals").state_snapshots()
        totals.write_to(sinks.setdefault("totals", ListSink("totals")))
        if window_len is not None:
            win = pairs.reduce_by_key_and_window(operator.add, window_len, inv_f=operator.sub, name="win")
            win.write_to(sinks.setdefault("win", ListSink("win")))
        if new_stateful:
            pairs.update_state_by_key(add_up, name="fresh").write_to(sinks.setdefault("fresh", ListSink("fresh")))
        if new_source:
            ssc.constant_stream([("c", 1)], name="extra").update_state_by_key(add_up, name="extra_totals").write_to(
                sinks.setdefault("extra", ListSink("extra"))
            )
        return ssc

    return setup


def _first_run(url: str, n: int = 4) -> None:
    run_until(url, job(url, {}), n)


def _last(sink: ListSink) -> list[Any]:
    return sorted(sink.batches[-1][1])


def test_changing_a_function_restores(tmp_path: Path) -> None:
    url = str(tmp_path / "c")
    _first_run(url)
    sinks: dict[str, ListSink] = {}
    ssc = run_until(url, job(url, sinks, update=lambda new, old: (old or 0) + 10 * sum(new)), 5)
    assert ssc.restored
    before = dict(totals_after(4))
    assert _last(sinks["totals"]) == [(k, before[k] + 10 * 2) for k in range(KEYS)]  # 2 rows per key per batch


def test_adding_and_removing_stateless_operators_restores(tmp_path: Path) -> None:
    url = str(tmp_path / "c")
    _first_run(url)
    sinks: dict[str, ListSink] = {}
    run_until(url, job(url, sinks, stateless_extra=True), 5)
    assert _last(sinks["totals"]) == totals_after(5)
    sinks = {}
    run_until(url, job(url, sinks), 6)  # and removed again
    assert _last(sinks["totals"]) == totals_after(6)
    assert _last(sinks["win"]) == [(k, 6) for k in range(KEYS)]  # 3 batches x 2 rows per key


def test_a_new_stateful_operator_starts_empty(tmp_path: Path) -> None:
    url = str(tmp_path / "c")
    _first_run(url)
    sinks: dict[str, ListSink] = {}
    run_until(url, job(url, sinks, new_stateful=True), 6)
    assert _last(sinks["totals"]) == totals_after(6)
    assert _last(sinks["fresh"]) == [(k, 4) for k in range(KEYS)]  # only batches 5 and 6


def test_adding_a_source_restores(tmp_path: Path) -> None:
    url = str(tmp_path / "c")
    _first_run(url)
    sinks: dict[str, ListSink] = {}
    run_until(url, job(url, sinks, new_source=True), 6)
    assert _last(sinks["totals"]) == totals_after(6)
    assert _last(sinks["extra"]) == [("c", 2)]


def test_removing_a_stateful_operator_is_refused_then_allowed(tmp_path: Path) -> None:
    url = str(tmp_path / "c")
    _first_run(url)
    with pytest.raises(IncompatibleCheckpointError) as info:
        run_until(url, job(url, {}, window_len=None), 5)
    msg = str(info.value)
    assert "'win'" in msg and "not in the current code" in msg and "allow_state_loss={'win'}" in msg
    assert "name='win'" in msg  # how to keep it: give the old name back
    sinks: dict[str, ListSink] = {}
    run_until(url, job(url, sinks, window_len=None, allow_state_loss=("win",)), 5)
    assert _last(sinks["totals"]) == totals_after(5)
    sinks = {}
    run_until(url, job(url, sinks, window_len=None), 6)  # the dropped state is gone for good now
    assert _last(sinks["totals"]) == totals_after(6)


def test_changing_window_length_is_refused_then_allowed(tmp_path: Path) -> None:
    url = str(tmp_path / "c")
    _first_run(url)
    with pytest.raises(IncompatibleCheckpointError) as info:
        run_until(url, job(url, {}, window_len=4.0), 5)
    msg = str(info.value)
    assert "'win'" in msg and "length_ms 3000 -> 4000" in msg and "allow_state_loss={'win'}" in msg
    sinks: dict[str, ListSink] = {}
    run_until(url, job(url, sinks, window_len=4.0, allow_state_loss=("win",)), 6)
    assert _last(sinks["totals"]) == totals_after(6)
    assert _last(sinks["win"]) == [(k, 4) for k in range(KEYS)]  # the window restarted empty at batch 5


def test_changing_the_kind_of_a_stateful_operator_is_refused_then_allowed(tmp_path: Path) -> None:
    url = str(tmp_path / "c")
    _first_run(url)
    with pytest.raises(IncompatibleCheckpointError) as info:
        run_until(url, job(url, {}, totals_kind="map_with_state"), 5)
    msg = str(info.value)
    assert "'totals'" in msg and "kind 'update_state_by_key' -> 'map_with_state'" in msg and "allow_state_loss={'totals'}" in msg
    sinks: dict[str, ListSink] = {}
    run_until(url, job(url, sinks, totals_kind="map_with_state", allow_state_loss=("totals",)), 5)
    assert _last(sinks["totals"]) == [(k, 2) for k in range(KEYS)]  # started empty at batch 5


def test_changing_a_source_kind_is_refused(tmp_path: Path) -> None:
    url = str(tmp_path / "c")
    _first_run(url)
    with pytest.raises(IncompatibleCheckpointError, match=r"source 'rate' changed kind 'rate' -> 'queue'"):
        run_until(url, job(url, {}, rate_as_queue=True), 5)


def test_changing_the_batch_interval_under_windows_is_refused(tmp_path: Path) -> None:
    url = str(tmp_path / "c")
    _first_run(url)
    with pytest.raises(IncompatibleCheckpointError, match=r"batch interval changed from 1000 ms to 500 ms"):
        run_until(url, job(url, {}, interval=0.5), 5)


def test_refusal_happens_before_anything_runs(tmp_path: Path) -> None:
    url = str(tmp_path / "c")
    _first_run(url)
    files = sorted(p.relative_to(url).as_posix() for p in Path(url).rglob("*") if p.is_file() and p.name != "lease")
    sinks: dict[str, ListSink] = {}
    with pytest.raises(IncompatibleCheckpointError):
        sk.StreamingContext.get_or_create(url, job(url, sinks, window_len=None))
    assert all(not s.batches for s in sinks.values())
    after = sorted(p.relative_to(url).as_posix() for p in Path(url).rglob("*") if p.is_file() and p.name != "lease")
    assert [f for f in after if not f.startswith("log/")] == [f for f in files if not f.startswith("log/")]
    run_until(url, job(url, {}), 5)  # the checkpoint is still usable by the old code


def test_a_source_of_another_kind_starts_from_scratch_when_allowed(tmp_path: Path) -> None:
    url = str(tmp_path / "c")
    _first_run(url)
    sinks: dict[str, ListSink] = {}
    run_until(url, job(url, sinks, rate_as_queue=True, allow_state_loss=("rate",)), 5)
    before = dict(totals_after(4))
    assert _last(sinks["totals"]) == sorted([(0, before[0] + 1), (1, before[1]), (2, before[2])])  # queue item (0, 0)
