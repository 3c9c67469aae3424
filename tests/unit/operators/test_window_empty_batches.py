"""Empty batches of a windowed job: what they cost in the checkpoint, and that windows stay exact.

A batch without records used to be stored as a window slice of its own (a delta per
batch, inlined in every commit record until the next snapshot): ~2.3 KB more per empty
batch than the same job without the window (bench/empty_batches.py). Now consecutive
empty batches are one empty run (`window`) or nothing (`reduce_by_key_and_window`), and
a window's output -- its records and its partition layout, which sinks such as
``save_as_text_files`` write one file per partition -- is what it was.
"""

from __future__ import annotations

import operator
from collections.abc import Callable
from typing import Any

import pytest

import streamkeep as sk
from streamkeep.dstream._graph import WindowNode
from streamkeep.executors._runtime import WindowRuntime
from streamkeep.testing import ManualClock

EMPTY = 60  # empty batches after the first (the 30 s windows below see their slice leave)


def _add(new: list[int], old: int | None) -> int:
    return (old or 0) + sum(new)


def _keep(new: list[int], old: int | None) -> int:
    return old if old is not None else sum(new)


WINDOWED: dict[str, Callable[[sk.DStream[Any]], sk.DStream[Any]]] = {
    "window": lambda s: s.window(30.0, 1.0, name="win"),
    "reduce_by_key_and_window inv_f": lambda s: s.reduce_by_key_and_window(operator.add, 30.0, 1.0, inv_f=operator.sub, name="win"),
    "reduce_by_key_and_window": lambda s: s.reduce_by_key_and_window(operator.add, 30.0, 1.0, name="win"),
    "count_by_window": lambda s: s.count_by_window(30.0, 2.0, name="win"),
    "group_by_key_and_window": lambda s: s.repartition(3).group_by_key_and_window(30.0, 1.0, name="win"),
}


class _Written(sk.StreamingListener):
    def __init__(self) -> None:
        self.bytes: list[int] = []

    def on_batch_completed(self, info: Any) -> None:
        self.bytes.append(info.checkpoint_bytes)


def _bytes_after_the_first_batch(ssc: sk.StreamingContext) -> list[int]:
    """Run `ssc` for 1 + `EMPTY` batches; the checkpoint bytes of each batch after the first."""
    written = _Written()
    ssc.add_listener(written)
    try:
        ssc.run(max_batches=1 + EMPTY)
    finally:
        ssc.stop()
    return written.bytes[1:]


def _empty_batch_bytes(ckpt: str, op: Callable[[sk.DStream[Any]], sk.DStream[Any]]) -> list[int]:
    """Checkpoint bytes of each of `EMPTY` empty batches after one with a record (the engine's own metric)."""
    ssc = sk.StreamingContext(1.0, checkpoint=ckpt, clock=ManualClock())
    pairs = ssc.queue_stream([[("a", 1)]], name="q", default=[])
    pairs.update_state_by_key(_add, name="total").foreach_batch(lambda b: None)
    op(pairs).foreach_batch(lambda b: None)
    return _bytes_after_the_first_batch(ssc)


@pytest.mark.parametrize("kind", WINDOWED)
def test_empty_batches_of_a_windowed_job_write_what_the_job_without_the_window_writes(kind: str, tmp_path: Any) -> None:
    # The job without the window has a stateful operator in its place that changes nothing on an
    # empty batch: both commit records name two operators, so what differs is what each batch changed.
    windowed = _empty_batch_bytes(str(tmp_path / "windowed"), WINDOWED[kind])
    plain = _empty_batch_bytes(str(tmp_path / "plain"), lambda s: s.update_state_by_key(_keep, name="win"))
    mean_windowed, mean_plain = sum(windowed) / EMPTY, sum(plain) / EMPTY
    # The window's description in every commit record is 50-85 bytes longer, and the delta of the batch its
    # record left the window stays inline until the next snapshot (~40 bytes). An empty slice per batch
    # cost ~1.5 KB more over these 60 batches.
    assert mean_windowed <= mean_plain + 150, (kind, mean_windowed, mean_plain, windowed)
    assert max(windowed) <= max(plain) + 200, (kind, windowed, plain)


#: Records per batch of the queue below: runs of empty batches between batches with records.
SCHEDULE = [[("a", 1)], [], [], [("b", 2), ("a", 3)], [], [], [], [], [], [], [("c", 4)], [], [("a", 5)], [], [], [], [], [], [], [], [], []]


def _layout_job(ckpt: str, seen: dict[str, dict[int, Any]]) -> Callable[[], sk.StreamingContext]:
    """A job whose windows see runs of empty batches, each output's partitions kept by batch time in `seen`."""

    def keep(name: str) -> Callable[[Any, Any], None]:
        def out(t: Any, b: Any) -> None:
            seen.setdefault(name, {})[int(t.timestamp() * 1000)] = [list(p) for p in b.partitions]

        return out

    def setup() -> sk.StreamingContext:
        ssc = sk.StreamingContext(1.0, checkpoint=ckpt, clock=ManualClock(), snapshot_every=4)
        q = ssc.queue_stream(SCHEDULE, name="q", default=[])
        three = q.repartition(3)
        every2 = q.window(2.0, 2.0, name="every2")  # a parent with a batch every other time
        streams = {
            "q": q,
            "three": three,
            "every2": every2,
            "w": q.window(4.0, 2.0, name="w"),
            "w3": three.window(5.0, 1.0, name="w3"),
            "w_of_w": every2.window(6.0, 2.0, name="w_of_w"),
            "r_inv": q.reduce_by_key_and_window(operator.add, 4.0, 2.0, inv_f=operator.sub, name="r_inv"),
            "r": q.reduce_by_key_and_window(operator.add, 3.0, 1.0, name="r"),
        }
        for name, s in streams.items():
            s.foreach_batch(keep(name))
        return ssc

    return setup


def _expected_window(parent: dict[int, Any], t: int, length_ms: int) -> list[Any]:
    """The window at t from first principles: the parent's batches in (t - length, t], partitions in order."""
    parts = [p for ts in sorted(parent) if t - length_ms < ts <= t for p in parent[ts]]
    return parts or [[]]


def test_windows_over_empty_batches_keep_their_records_and_partition_layout_across_restarts(tmp_path: Any) -> None:
    total = len(SCHEDULE)
    uncrashed: dict[str, dict[int, Any]] = {}
    ssc = sk.StreamingContext.get_or_create(str(tmp_path / "a"), _layout_job(str(tmp_path / "a"), uncrashed))
    ssc.run(max_batches=total)
    ssc.stop()
    for name, parent, length in (("w", "q", 4000), ("w3", "three", 5000), ("w_of_w", "every2", 6000)):
        assert uncrashed[name], name
        for t, parts in uncrashed[name].items():
            assert parts == _expected_window(uncrashed[parent], t, length), (name, t)
    assert len(uncrashed["w3"][6000]) == 15  # five batches of 3 partitions each, the empty ones kept

    restarted: dict[str, dict[int, Any]] = {}
    ckpt = str(tmp_path / "b")
    for _ in range(total):  # stop and restore from the checkpoint after every batch
        ssc = sk.StreamingContext.get_or_create(ckpt, _layout_job(ckpt, restarted))
        ssc.run(max_batches=1)
        ssc.stop()
    assert restarted == uncrashed


def _runtime(length_s: float, slide_s: float) -> WindowRuntime:
    ssc = sk.StreamingContext(1.0, clock=ManualClock())
    ssc.queue_stream([], name="q").window(length_s, slide_s, name="w")
    node = ssc._graph.names["w"]
    assert isinstance(node, WindowNode)
    return WindowRuntime(node, 0)


def _batch(parts: list[list[Any]], t: int) -> sk.Batch[Any]:
    return sk.Batch(parts, t)


#: (records per partition, or None: no batch) per batch time 1000, 2000, ...: empty batches of changing width.
INPUTS: list[list[list[Any]] | None] = [[[1]], [[], []], [[], []], [[]], None, [[], []], [[2], []], [[], [], []], [[], [], []], [[]], [[3]], [[]], [[]]]


def test_an_empty_run_gives_each_batch_its_own_partitions_and_costs_one_delta() -> None:
    rt = _runtime(4.0, 1.0)
    parents: dict[int, Any] = {}
    deltas = []
    for i, parts in enumerate(INPUTS, 1):
        t = i * 1000
        if parts is not None:
            parents[t] = parts
        out = rt.step(t, None if parts is None else _batch(parts, t))
        assert out is not None and out.partitions == _expected_window(parents, t, 4000), t
        deltas.append(rt.delta())
    # Runs start at 2000 (2 partitions), 4000 (1), 6000 (2, after no batch at 5000), 8000 (3), 10000 and
    # 12000 (1); a batch a run covers changes nothing, a later one only drops what left the window.
    assert deltas[2] is None and deltas[8] is None, deltas  # 3000 and 9000
    assert deltas[12] == {"add": [], "drop": [8000]}  # 13000: the run of 8000 (last batch 9000) left the window
    assert rt.slices[12000].until is None and rt.slices[10000].until == 11000


def test_a_window_restored_from_any_batch_continues_as_the_one_that_never_stopped() -> None:
    reference = _runtime(4.0, 1.0)
    outs = [reference.step(i * 1000, None if p is None else _batch(p, i * 1000)) for i, p in enumerate(INPUTS, 1)]
    for stop in range(1, len(INPUTS)):
        rt = _runtime(4.0, 1.0)
        chain = []
        for i, p in enumerate(INPUTS[:stop], 1):
            rt.step(i * 1000, None if p is None else _batch(p, i * 1000))
            chain.append(rt.delta())
        restored = _runtime(4.0, 1.0)
        restored.load(None, [d for d in chain if d is not None])
        assert restored.slices == rt.slices, stop
        for i, p in enumerate(INPUTS[stop:], stop + 1):
            got = restored.step(i * 1000, None if p is None else _batch(p, i * 1000))
            assert got is not None and outs[i - 1] is not None
            assert got.partitions == outs[i - 1].partitions, (stop, i)


def test_empty_slices_of_earlier_versions_load_and_give_the_same_windows() -> None:
    # What earlier versions wrote: every batch its slice, empty ones included.
    old = []
    for i, p in enumerate(INPUTS[:6], 1):
        if p is not None:
            old.append({"add": [[i * 1000, p]], "drop": [i * 1000 - 4000] if i > 4 else []})
    reference = _runtime(4.0, 1.0)
    outs = [reference.step(i * 1000, None if p is None else _batch(p, i * 1000)) for i, p in enumerate(INPUTS, 1)]
    restored = _runtime(4.0, 1.0)
    restored.load(None, old)
    for i, p in enumerate(INPUTS[6:], 7):
        got = restored.step(i * 1000, None if p is None else _batch(p, i * 1000))
        assert got is not None and outs[i - 1] is not None
        assert got.partitions == outs[i - 1].partitions, i


def _table_job_bytes(ckpt: str, windowed: bool) -> list[int]:
    pa = pytest.importorskip("pyarrow")
    ssc = sk.StreamingContext(1.0, checkpoint=ckpt, clock=ManualClock())
    q = ssc.queue_stream([[pa.table({"k": ["a", "b"], "v": [1, 2]})]], name="q", default=[])
    aggs = {"s": ("v", "sum"), "n": ("*", "count")}
    if windowed:
        q.aggregate_window(by="k", aggs=aggs, length=30.0, slide=1.0, name="win").foreach_batch(lambda b: None)
    else:
        q.aggregate_state(by="k", aggs=aggs, name="win").foreach_batch(lambda b: None)
    return _bytes_after_the_first_batch(ssc)


def test_empty_batches_of_an_aggregate_window_add_nothing_to_its_commit_records(tmp_path: Any) -> None:
    windowed = _table_job_bytes(str(tmp_path / "windowed"), windowed=True)
    plain = _table_job_bytes(str(tmp_path / "plain"), windowed=False)
    # The first batch's tables (Arrow IPC, ~1.2 KB) stay inline in every commit record until the next
    # snapshot (batch 20) in both jobs; an empty slice per batch added ~50 bytes to each record after it.
    growth_windowed, growth_plain = windowed[16] - windowed[0], plain[16] - plain[0]
    assert growth_windowed <= growth_plain + 30, (windowed, plain)
