"""Guarantees of the stateful operators that no other test would notice losing (found by mutation testing).

Each test names the guarantee and the change of the engine it catches; each failed with
that change applied and passes without it.
"""

from __future__ import annotations

import json
import operator
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest

import streamkeep as sk
from streamkeep.errors import IncompatibleCheckpointError
from streamkeep.testing import ListSink, ManualClock, key_count_of, run_batches, state_of


def _peek(key: str, value: Any, state: sk.State) -> tuple[str, Any]:
    """Reads the key's state, never updates it; reports a time-out."""
    if state.is_timing_out():
        return ("timeout", key)
    return (key, state.get())


def test_a_key_that_keeps_getting_records_never_times_out_even_if_the_function_only_reads_its_state() -> None:
    """`timeout`: keys *without records* for that long time out, whether or not the function updated them.

    Catches: a record that only reads a timed key's state not refreshing its last-record time
    (`MapWithStateRuntime._records` storing the state only when updated), which timed out
    a key that received a record in every batch.
    """
    inp = [[("a", 0)]] * 6 + [[], [], [], []]
    out = run_batches(lambda ssc, s: s.map_with_state(_peek, name="m", timeout=2, initial=[("a", 10)]), inp)
    assert out[:6] == [[("a", 10)]] * 6
    assert ("timeout", "a") not in [r for batch in out[:6] for r in batch]
    assert out[6:] == [[], [], [("timeout", "a")], []]  # 2 s after its last record (batch 6), not before


def _count(key: str, value: Any, state: sk.State) -> tuple[str, Any]:
    n = state.get_option(0) + 1
    state.update(n)
    return (key, n)


@pytest.mark.parametrize(("before", "after"), [(None, 5.0), (5.0, None)], ids=["timeout-added", "timeout-removed"])
def test_adding_or_removing_a_map_with_state_timeout_is_refused_by_name(tmp_path: Path, before: float | None, after: float | None) -> None:
    """With a timeout, map_with_state stores [state, last-record time] per key; without, the state alone.

    Catches: "timeout" missing from map_with_state's shape keys (`executors/kinds.py`): the
    stored values were then read in the other form (a count restored as [count, time],
    or a failure deep in the operator) instead of a refusal naming the operator.
    """
    url = str(tmp_path / "ckpt")

    def setup(timeout: float | None) -> Any:
        def build() -> sk.StreamingContext:
            ssc = sk.StreamingContext(1.0, checkpoint=url, clock=ManualClock())
            ssc.rate_stream(2, name="rate").map(lambda r: ("k", r[0])).map_with_state(_count, name="counts", timeout=timeout).write_to(ListSink())
            return ssc

        return build

    ssc = sk.StreamingContext.get_or_create(url, setup(before))
    ssc.run(max_batches=2)
    ssc.stop()
    with pytest.raises(IncompatibleCheckpointError, match=r"stateful operator 'counts' changed shape \(timeout (False -> True|True -> False)\)"):
        sk.StreamingContext.get_or_create(url, setup(after))


def _append_then_check(key: str, value: Any, state: sk.State) -> tuple[str, list[Any]]:
    """Appends in place (no update()), then refuses a poison value: its append stays in the state."""
    if not state.exists():
        state.update([])
    state.get().append(value)
    if value == "poison":
        raise ValueError("poison record")
    return (key, list(state.get()))


def test_an_in_place_change_before_a_dead_lettered_error_is_checkpointed_as_it_stays_in_memory(tmp_path: Path) -> None:
    """A function that changed its state in place and then raised (the record dead-lettered) keeps the change in
    memory; the checkpoint must hold it too, or a restart resumes from another state than the run without one.

    Catches: `MapWithStateRuntime._failed` not marking the key changed, so the batch's delta left it out.
    """
    url = str(tmp_path / "ckpt")
    batches = [[("k", 1)], [("k", "poison")], [("k", 3)]]

    def setup(sink: ListSink, dead: ListSink) -> Any:
        def build() -> sk.StreamingContext:
            ssc = sk.StreamingContext(1.0, checkpoint=url, clock=ManualClock(), snapshot_every=100)
            ssc.queue_stream(batches, name="q").map_with_state(_append_then_check, name="m", on_error=dead).write_to(sink)
            return ssc

        return build

    first, dead = ListSink("first"), ListSink("dead")
    ssc = sk.StreamingContext.get_or_create(url, setup(first, dead))
    ssc.run(max_batches=2)
    ssc.stop()
    assert [len(rs) for _, rs in dead.batches if rs] == [1]
    second = ListSink("second")
    ssc = sk.StreamingContext.get_or_create(url, setup(second, ListSink("dead2")))
    ssc.run(max_batches=1)
    ssc.stop()
    assert second.batches == [(3000, [("k", [1, "poison", 3])])]  # what one uninterrupted run outputs


# -- windows ----------------------------------------------------------------------------------


def test_a_window_keeps_only_the_batches_a_future_window_needs(tmp_path: Path) -> None:
    """A window of 3 s (slide 1 s) holds its last 3 batches, however long the job runs: its state stays bounded.

    Catches: the window pruning one batch late (`WindowRuntime._prune` keeping a slice at the
    horizon), which grew the state (and every snapshot) by a batch while the outputs stayed right.
    """
    ssc = sk.StreamingContext(1.0, checkpoint=str(tmp_path / "ckpt"), clock=ManualClock())
    ssc.rate_stream(2, name="rate").window(3.0, name="w").write_to(ListSink())
    try:
        for n in range(1, 8):
            ssc.run(max_batches=1)
            assert key_count_of(ssc, "w") == 2 * min(n, 3), f"after batch {n}"
        assert [ts for ts, _ in state_of(ssc, "w")["add"]] == [5000, 6000, 7000]
    finally:
        ssc.stop()


def _totals_job(url: str, batches: list[list[tuple[str, int]]], sink: ListSink) -> Any:
    def build() -> sk.StreamingContext:
        ssc = sk.StreamingContext(1.0, checkpoint=url, clock=ManualClock(), snapshot_every=100)
        q = ssc.queue_stream(batches, name="q")
        q.reduce_by_key_and_window(operator.add, 2.0, inv_f=operator.sub, name="win").write_to(sink)
        return ssc

    return build


def test_a_key_whose_values_only_leave_the_window_is_checkpointed_with_its_new_total(tmp_path: Path) -> None:
    """With `inv_f`, a key that gets no new value in a slide still changes (its expired values are subtracted);
    a restart must resume from that total, as the uninterrupted run does.

    Catches: the inverse step writing the running value without marking the key changed
    (`ReduceWindowRuntime._running`): the delta left the key out and a restart brought back its old total.
    """
    batches = [[("a", 5), ("b", 1)], [("b", 1)], [("b", 1)], [("b", 1)], [("a", 1)]]
    whole = ListSink("whole")
    ssc = sk.StreamingContext.get_or_create(str(tmp_path / "one"), _totals_job(str(tmp_path / "one"), batches, whole))
    ssc.run(max_batches=5)
    ssc.stop()
    url = str(tmp_path / "two")
    first, second = ListSink("first"), ListSink("second")
    ssc = sk.StreamingContext.get_or_create(url, _totals_job(url, batches, first))
    ssc.run(max_batches=3)  # batch 3: a's 5 leaves the window, a gets nothing new
    ssc.stop()
    ssc = sk.StreamingContext.get_or_create(url, _totals_job(url, batches, second))
    ssc.run(max_batches=2)
    ssc.stop()
    assert dict(whole.batches[-1][1])["a"] == 1
    assert [(t, sorted(rs)) for t, rs in first.batches + second.batches] == [(t, sorted(rs)) for t, rs in whole.batches]


def _merge_counts(a: dict[str, int], b: dict[str, int]) -> dict[str, int]:
    """An in-place reducer (allowed: f may change its first argument)."""
    for k, v in b.items():
        a[k] = a.get(k, 0) + v
    return a


def _unmerge_counts(a: dict[str, int], b: dict[str, int]) -> dict[str, int]:
    return {k: v - b.get(k, 0) for k, v in a.items()}


def test_an_in_place_reducer_with_an_inverse_gives_what_recomputing_each_window_gives() -> None:
    """`f` may change its first argument in place: with `inv_f` the running value must never be a batch's own value,
    or `f` changes the stored batch and its later subtraction takes away more than it added.

    Catches: `ReduceWindowRuntime._running` storing a new key's first value itself as its running value.
    """
    batches = [[("k", {"x": 1})], [("k", {"x": 2})], [("k", {"x": 4})], [("k", {"x": 8})], [], []]

    def windowed(inv: Any) -> Any:
        return lambda ssc, s: s.reduce_by_key_and_window(_merge_counts, 2.0, inv_f=inv, name="win")

    recomputed = run_batches(windowed(None), batches)
    assert [dict(b)["k"]["x"] for b in recomputed[:4]] == [1, 3, 6, 12]
    assert run_batches(windowed(_unmerge_counts), batches)[:5] == recomputed[:5]


# -- event time ------------------------------------------------------------------------------

_T0 = datetime(2026, 1, 1, tzinfo=timezone.utc)


def _at(s: float) -> datetime:
    return _T0 + timedelta(seconds=s)


def test_a_session_whose_end_plus_lateness_reaches_the_watermark_is_late_not_emitted_again() -> None:
    """docs/event-time.md: a session record is late when `event time + gap + allowed_lateness <= watermark`:
    at equality its session is already closed, so the record goes to late_records and opens no window.

    Catches: the session late check with `<` (`EventWindowRuntime._ingest`): the record opened a session
    that was emitted at once, a window of a time already closed.
    """
    ssc = sk.StreamingContext(1.0, clock=ManualClock())
    clicks = ssc.queue_stream([[("a", 1.0), ("b", 5.0)], [("a", 3.0)]], name="in")
    sessions = clicks.with_event_time(lambda r: _at(r[1]), max_delay=0).session_window(2).count_by_key(name="s")
    out, late = ListSink("out"), ListSink("late")
    sessions.write_to(out)
    sessions.late_records().write_to(late)
    ssc.run(max_batches=2)
    ssc.stop()
    # batch 1: watermark 5 s; a's session [1 s, 3 s) ends at 3 s <= 5 s: emitted. Batch 2: 3 s + 2 s <= 5 s: late.
    assert [(r.key, r.start, r.end, r.value) for r in out.records()] == [("a", _at(1.0), _at(3.0), 1)]
    assert late.records() == [("a", 3.0)]


def test_a_batch_of_only_late_records_is_checkpointed(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A batch whose records are all late changes no window but does change the operator's progress (the late
    count, the partition's last batch with records, which idle_timeout reads): the checkpoint must hold it.

    Catches: `EventWindowRuntime.delta` returning None when no window changed (its ``meta`` left out).
    """
    from streamkeep.cli._main import main

    url = str(tmp_path / "ckpt")

    def build() -> sk.StreamingContext:
        ssc = sk.StreamingContext(1.0, checkpoint=url, clock=ManualClock(), snapshot_every=100)
        clicks = ssc.queue_stream([[("a", 1.0), ("b", 5.0)], [("a", 0.5), ("c", 0.7)]], name="in")
        windows = clicks.with_event_time(lambda r: _at(r[1]), max_delay=0).tumbling_window(2).count_by_key(name="w")
        windows.foreach_batch(lambda b: None)
        return ssc

    ssc = sk.StreamingContext.get_or_create(url, build)
    ssc.run(max_batches=2)
    ssc.stop()
    capsys.readouterr()
    assert main(["checkpoint", "inspect", url, "--json"]) == 0
    status = json.loads(capsys.readouterr().out)["operators"]["w"]["event_time"]
    assert status["late_records"] == 2
    assert status["partitions"]["in"]["last_records_batch_ms"] == 2000
