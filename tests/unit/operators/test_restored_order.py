"""A restored stateful operator emits its keys in the order of the run that never stopped.

Each test runs a job to its end in one go (the reference), then runs it again stopping in
the middle and restoring from the checkpoint (`get_or_create`), and compares every batch's
output *as a list* (not sorted): restored state iterates its keys in the same order as the
uncrashed run's at the same batch, so outputs computed from it (and the lines a FileSink
writes) are the same, in the same order. The keys are small ints inserted in descending
order (a set of them iterates ascending) and strings, and keys are removed and set again.

The restore reads: the deltas alone; a snapshot taken in the batch plus deltas; a snapshot
merged from deltas in the background (compaction) plus deltas; a snapshot loaded lazily
(map_with_state), with deltas written while it is lazy read back by a second restore.
"""

from __future__ import annotations

import operator
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

import streamkeep as sk
from streamkeep.checkpoint import _compact as compaction
from streamkeep.checkpoint._format import GRAPH_REF_VERSION, MOVED_VERSION, read_frame
from streamkeep.scheduler import _state_writer
from streamkeep.testing import ListSink, ManualClock

Build = Callable[[Any], Any]

#: Keys per batch: descending ints (their set iterates ascending), strings, a key removed and set again.
BATCHES: list[list[tuple[Any, int]]] = [
    [(9, 1), (7, 2), (5, 3), (3, 1)],
    [(8, 4), (2, 1), (9, 4), (6, 2)],
    [("z", 1), ("b", 2), ("y", 3), (7, 3), (1, 1)],
    [(4, 5), (0, 1), (5, 2), ("a", 1), (3, 4), (3, 1)],
    [(9, 2), (8, 1), ("q", 2), (2, 3), (9, 1)],
    [(6, 4), ("c", 1), (1, 4), (7, 5), ("z", 4)],
    [(5, 5), (3, 3), ("d", 1), (0, 4), (5, 2)],
    [(2, 2), (9, 5), ("b", 3), (4, 4), (8, 4)],
    [("e", 1), (6, 1), (1, 5), (7, 1)],
    [(3, 5), (5, 1), ("a", 4), (0, 2), ("y", 2)],
]
STOPS = (3, 5, 7)


def _sum_or_drop(values: list[int], old: int | None) -> int | None:
    total = (old or 0) + sum(values)
    return None if values and total % 5 == 0 else total  # removes keys now and then; they come back later


def _count_or_reset(key: Any, value: int, state: sk.State) -> tuple[Any, Any]:
    """Removes a key past 6 (a later record of the key in the same batch sets it again: it goes last)."""
    if state.is_timing_out():
        return (key, "timeout", state.get())
    n = (state.get() if state.exists() else 0) + value
    if n > 6:
        state.remove()
        return (key, "reset", n)
    state.update(n)
    return (key, "seen", n)


def _run(url: str, build: Build, batches: list[list[Any]], n: int, *, snapshot_every: int) -> tuple[sk.StreamingContext, ListSink]:
    sink = ListSink()

    def setup() -> sk.StreamingContext:
        ssc = sk.StreamingContext(1.0, checkpoint=url, clock=ManualClock(), snapshot_every=snapshot_every)
        build(ssc.queue_stream(batches, name="q")).write_to(sink)
        return ssc

    ssc = sk.StreamingContext.get_or_create(url, setup)
    ssc.run(max_batches=n)
    return ssc, sink


def _outputs_with_restores(tmp_path: Path, build: Build, batches: list[list[Any]], *, snapshot_every: int, merged: bool = False) -> list[Any]:
    """Every batch's output of a job stopped after each of `STOPS` batches and restored from its checkpoint."""
    url = str(tmp_path / "ckpt")
    out: dict[int, list[Any]] = {}
    done = 0
    for stop in (*STOPS, len(batches)):
        ssc, sink = _run(url, build, batches, stop - done, snapshot_every=snapshot_every)
        if merged and stop != len(batches):
            writer = ssc._scheduler.writer  # type: ignore[attr-defined]
            if writer._thread is not None:
                writer._thread.join()  # the merged snapshot is written: the next batches' commits name it
            ssc.run(max_batches=1)
            stop += 1
        ssc.stop()
        out.update(sink.batches)
        done = stop
    return [out[t] for t in sorted(out)]


def _reference(tmp_path: Path, build: Build, batches: list[list[Any]]) -> list[Any]:
    ssc, sink = _run(str(tmp_path / "ref"), build, batches, len(batches), snapshot_every=1000)
    ssc.stop()
    return [rs for _, rs in sink.batches]


OPERATORS: dict[str, Build] = {
    "update_state_by_key": lambda s: s.update_state_by_key(_sum_or_drop, name="op"),
    "map_with_state": lambda s: s.map_with_state(_count_or_reset, name="op").state_snapshots(),
    "map_with_state_timeout": lambda s: s.map_with_state(_count_or_reset, name="op", timeout=2.0).state_snapshots(),
    "map_with_state_timeout_outputs": lambda s: s.map_with_state(_count_or_reset, name="op", timeout=2.0),
    "reduce_by_key_and_window_inverse": lambda s: s.reduce_by_key_and_window(operator.add, 3.0, 1.0, inv_f=operator.sub, name="op"),
    "count_by_value_and_window": lambda s: s.map(lambda kv: kv[0]).count_by_value_and_window(3.0, 1.0, name="op"),
}

RESTORES = {
    "deltas": {"snapshot_every": 1000},
    "snapshot_in_batch": {"snapshot_every": 2},
    "merged_snapshot": {"snapshot_every": 2, "merged": True},
}


@pytest.mark.parametrize("restore", list(RESTORES))
@pytest.mark.parametrize("op", list(OPERATORS))
def test_outputs_after_restores_equal_the_uncrashed_run_as_lists(op: str, restore: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    kw = dict(RESTORES[restore])
    merged = bool(kw.pop("merged", False))
    if merged:
        monkeypatch.setattr(_state_writer, "DIRECT_SNAPSHOT_BYTES", 0)  # every snapshot merged from the deltas
    build = OPERATORS[op]
    expected = _reference(tmp_path, build, BATCHES)
    got = _outputs_with_restores(tmp_path, build, BATCHES, merged=merged, **kw)
    assert got == expected


def test_a_lazily_restored_map_with_state_writes_deltas_that_restore_its_order(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A snapshot with a key index is restored lazily; the deltas written while the store is lazy
    (only the batch's keys in its dict) restore the uncrashed run's order at the next restart."""
    monkeypatch.setattr(compaction, "ORDER_MIN_KEYS", 1)
    monkeypatch.setattr(_state_writer, "DIRECT_SNAPSHOT_BYTES", 0)
    words = [[(f"k{(i * 7 + j * 3) % 23}", 1 + (i + j) % 4) for j in range(5)] for i in range(12)]
    build: Build = lambda s: s.map_with_state(_count_or_reset, name="op")  # noqa: E731
    expected_out = _reference(tmp_path, build, words)
    ref, _ = _run(str(tmp_path / "ref2"), build, words, len(words), snapshot_every=1000)
    expected_state = list(ref._scheduler.executor.snapshot("op")["set"])  # type: ignore[attr-defined]
    ref.stop()

    url = str(tmp_path / "ckpt")
    ssc, first = _run(url, build, words, 5, snapshot_every=2)
    writer = ssc._scheduler.writer  # type: ignore[attr-defined]
    if writer._thread is not None:
        writer._thread.join()
    ssc.run(max_batches=1)  # adopts the merged snapshot
    ssc.stop()
    assert writer.chains["op"].snapshot, "no snapshot to restore from"
    ssc, second = _run(url, build, words, 1, snapshot_every=1000)  # lazy: a delta written while the store is
    assert ssc._scheduler.executor.runtimes["op"].store.lazy  # type: ignore[attr-defined]
    ssc.run(max_batches=2)
    ssc.stop()
    ssc, third = _run(url, build, words, len(words) - 9, snapshot_every=1000)
    state = list(ssc._scheduler.executor.snapshot("op")["set"])  # type: ignore[attr-defined]
    ssc.stop()
    out = {**dict(first.batches), **dict(second.batches), **dict(third.batches)}
    assert [out[t] for t in sorted(out)] == expected_out
    assert state == expected_state


def test_a_delta_that_moves_keys_is_format_9_and_every_other_stays_as_it_was(tmp_path: Path) -> None:
    """Only a delta listing moved keys (removed and set again since the previous delta) needs the
    new version: a streamkeep reading 1 to 8 would restore those keys in their old place."""
    url = str(tmp_path / "ckpt")
    batches = [[("a", 1), ("b", 1)], [("b", 1)], [("a", 7), ("a", 2)], [("b", 2)]]
    sink = ListSink()

    def setup() -> sk.StreamingContext:
        ssc = sk.StreamingContext(1.0, checkpoint=url, clock=ManualClock(), snapshot_every=1000)
        OPERATORS["map_with_state"](ssc.queue_stream(batches, name="q")).write_to(sink)
        return ssc

    ssc = sk.StreamingContext.get_or_create(url, setup)
    versions = []
    for _ in batches:  # run() returns once its batches are committed: the newest record is this batch's commit
        ssc.run(max_batches=1)
        versions.append(_newest_record_version(tmp_path / "ckpt"))
    ssc.stop()
    # the third batch removes "a" (8 > 6) and sets it again (its second record): its delta moves "a", and so its
    # commit record and the later ones inlining that delta are format 9; the earlier ones are not (8: they name their graph)
    assert versions == [GRAPH_REF_VERSION, GRAPH_REF_VERSION, MOVED_VERSION, MOVED_VERSION], versions
    assert [r for _, rs in sink.batches for r in rs][-2:] == [("b", 4), ("a", 2)]  # "a" went last


def _newest_record_version(ckpt: Path) -> int:
    """The format version of the newest commit record."""
    recs = sorted(f for f in (ckpt / "log").iterdir() if f.suffix == ".rec")
    return read_frame(str(recs[-1]), recs[-1].read_bytes()).version if recs else 0


def _table_batches() -> list[list[Any]]:
    pa = pytest.importorskip("pyarrow")
    rows = [[(("eu", "us")[(i + j) % 2], f"k{(i * 5 + j * 3) % 7}", i + j) for j in range(4)] for i in range(len(BATCHES))]
    return [[pa.table({"region": [r for r, _, _ in b], "k": [k for _, k, _ in b], "v": [v for _, _, v in b]})] for b in rows]


@pytest.mark.parametrize("restore", list(RESTORES))
def test_a_table_state_keyed_by_several_columns_restores_its_row_order(restore: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """`aggregate_state` by several key columns (built-in aggregates) keeps a stored key's row in place and
    adds new keys last; a restore must too (it put the keys a delta changed last)."""
    kw = dict(RESTORES[restore])
    if kw.pop("merged", False):
        monkeypatch.setattr(_state_writer, "DIRECT_SNAPSHOT_BYTES", 0)
    batches = _table_batches()

    def build(s: Any) -> Any:
        agg = s.to_tables().aggregate_state(by=["region", "k"], aggs={"total": ("v", "sum"), "n": ("*", "count")}, name="op")
        return agg.map(lambda t: t.to_pylist())

    expected = _reference(tmp_path, build, batches)
    assert _outputs_with_restores(tmp_path, build, batches, **kw) == expected
