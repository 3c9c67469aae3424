"""Guarantees of the stateful operators that no other test would notice losing (found by mutation testing).

Each test names the guarantee and the change of the engine it catches; each failed with
that change applied and passes without it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

import streamkeep as sk
from streamkeep.errors import IncompatibleCheckpointError
from streamkeep.testing import ListSink, ManualClock, run_batches


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
