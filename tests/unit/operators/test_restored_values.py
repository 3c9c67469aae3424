"""A restored stateful operator holds the values of the run that never stopped (each delta carries the newest values).

A delta's values come from the values the operator `put` in its batch (`MemoryStateStore.fresh`,
no lookup in a big state) or, for keys written otherwise, from the state itself. These jobs
mix the ways a value changes within one delta: seeded with ``initial=`` then updated by the
first batch (update_state_by_key writes its state directly), changed in place after being set,
removed and set again, several records of one key. Each job is stopped after every batch and
restored from its checkpoint; its outputs and final state must equal an uncrashed run's.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

import streamkeep as sk
from streamkeep.testing import ListSink, ManualClock

Build = Callable[[Any, bool], Any]

#: Each batch changes a few keys in the middle of the state (not every key, not only the newest ones), some
#: of them by several records, and adds a new one.
BATCHES: list[list[tuple[str, int]]] = [
    [("k3", 10), ("k5", 1), ("k3", 2), ("n0", 1)],
    [("k5", 5), ("k8", 9), ("k1", 1), ("k8", 1), ("n1", 2)],
    [("k3", 1), ("k9", 7), ("k9", 2), ("k0", 3), ("n0", 4)],
    [("k5", 1), ("k8", 2), ("k3", 4), ("n2", 1), ("k5", 6)],
]
SEED = [(f"k{i}", i + 1) for i in range(12)]


def _sum(values: list[int], old: int | None) -> int | None:
    total = (old or 0) + sum(values)
    return None if total % 7 == 0 else total  # removed now and then


def _append(key: str, value: int, state: sk.State) -> tuple[str, int]:
    """Keeps a list changed in place (no `update`); removes it past 3 items and sets it again in the same call."""
    if not state.exists():
        state.update([])
    items = state.get()
    items.append(value)
    if len(items) > 3:
        state.remove()
        state.update([sum(items)])
    return (key, len(state.get()))


def _count(key: str, value: int, state: sk.State) -> tuple[str, int]:
    """An int state set twice by two records of one key in a batch (the second value must be the one kept)."""
    n = (state.get() if state.exists() else 0) + value
    if n % 7 == 0:
        state.remove()
    else:
        state.update(n)
    return (key, n)


def _list_sum(values: list[int], old: list[int] | None) -> list[int]:
    out = old if old is not None else []
    out.extend(values)  # in place: the same list object, changed
    return out


OPERATORS: dict[str, Build] = {
    "update_state_by_key_seeded": lambda s, seed: s.update_state_by_key(_sum, name="op", initial=SEED if seed else None),
    "update_state_by_key_in_place": lambda s, seed: s.update_state_by_key(_list_sum, name="op", initial=[(k, [v]) for k, v in SEED] if seed else None),
    "map_with_state_seeded": lambda s, seed: s.map_with_state(_count, name="op", initial=SEED if seed else None),
    "map_with_state_seeded_in_place": lambda s, seed: s.map_with_state(_append, name="op", initial=[(k, [v]) for k, v in SEED] if seed else None),
}


def _run(url: str, build: Build, n: int) -> tuple[sk.StreamingContext, ListSink]:
    sink = ListSink()

    def setup() -> sk.StreamingContext:
        ssc = sk.StreamingContext(1.0, checkpoint=url, clock=ManualClock(), snapshot_every=1000)
        build(ssc.queue_stream(BATCHES, name="q"), True).write_to(sink)
        return ssc

    ssc = sk.StreamingContext.get_or_create(url, setup)
    ssc.run(max_batches=n)
    return ssc, sink


def _state(ssc: sk.StreamingContext) -> list[Any]:
    return list(ssc._scheduler.executor.snapshot("op")["set"])  # type: ignore[attr-defined]


@pytest.mark.parametrize("op", list(OPERATORS))
def test_restored_values_equal_the_uncrashed_run(op: str, tmp_path: Path) -> None:
    build = OPERATORS[op]
    ref, ref_sink = _run(str(tmp_path / "ref"), build, len(BATCHES))
    expected_state = _state(ref)
    ref.stop()
    url = str(tmp_path / "ckpt")
    out: dict[int, Any] = {}
    for _ in BATCHES:  # stopped and restored after every batch
        ssc, sink = _run(url, build, 1)
        out.update(sink.batches)
        state = _state(ssc)
        ssc.stop()
    assert [out[t] for t in sorted(out)] == [rs for _, rs in ref_sink.batches]
    assert state == expected_state
