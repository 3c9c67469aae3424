"""aggregate_state's probes split over threads (issue 15): exactly the single-threaded results.

The size thresholds are forced down (`CHUNK_ROWS`, `SET_RATIO`) so that every probe of
these small batches runs in up to four chunks, each on its own thread: new keys arrive
in several chunks of one batch, key columns are plain or dictionary-encoded, every
aggregate kind (and a Combine) takes part, and a restore upserts its deltas with
split probes too. Each job's output tables must equal, row for row and in order,
those of the same job run with ``table_threads=1``, and the pure-Python model.
"""

from __future__ import annotations

import random
import threading
import time
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pytest

import streamkeep as sk
from streamkeep.executors import LocalExecutor
from streamkeep.executors import _tables as tables_rt
from streamkeep.executors._tables import AggregateStateRuntime
from streamkeep.executors._threads import Workers
from streamkeep.tables import Combine
from streamkeep.testing import ManualClock

SUMS = {"n": ("*", "count"), "c": ("v", "count"), "s": ("v", "sum")}
EVERY = {
    **SUMS,
    "mn": ("v", "min"),
    "mx": ("v", "max"),
    "avg": ("v", "mean"),
    "last": ("v", "last"),
    "cmax": ("v", Combine("max", lambda old, new: pc.max_element_wise(old, new, skip_nulls=True), name="running-max")),
}
KEY_TYPES = {
    "int64": pa.int64(),
    "string": pa.string(),
    "large_string": pa.large_string(),
    "dictionary": pa.dictionary(pa.int32(), pa.string()),
}
THREAD_PREFIX = "streamkeep-probe-"


def _batches(seed: int) -> list[list[tuple[int, int | None]]]:
    """(key, value) rows per batch: big and small batches, new keys arriving all through a batch, some null values."""
    rng = random.Random(seed)
    out = []
    for b in range(12):
        n = rng.choice([3, 40, 200, 500])
        nulls = 0.2 if b % 4 == 2 else 0.0
        out.append([(rng.randrange(10 * (b + 1)), None if rng.random() < nulls else rng.randrange(-50, 50)) for _ in range(n)])
    return out


def _table(rows: list[tuple[int, int | None]], key_type: Any) -> Any:
    if pa.types.is_integer(key_type):
        col = pa.array([k for k, _ in rows], key_type)
    elif pa.types.is_dictionary(key_type):
        col = pa.array([f"key-{k}" for k, _ in rows], pa.string()).dictionary_encode()
    else:
        col = pa.array([f"key-{k}" for k, _ in rows], key_type)
    return pa.table({"k": col, "v": pa.array([v for _, v in rows], pa.int64())})


@pytest.fixture
def forced(monkeypatch: pytest.MonkeyPatch) -> dict[str, int]:
    """Every probe of more than one value is split (thresholds forced down); counts the split probes and
    the chunks of a counted probe that met keys not stored yet."""
    monkeypatch.setattr(tables_rt, "CHUNK_ROWS", 7)
    monkeypatch.setattr(tables_rt, "SET_RATIO", 0)
    seen = {"split": 0, "most_chunks": 0, "chunks_with_new_keys": 0}
    in_chunks = AggregateStateRuntime._in_chunks

    def spy(self: AggregateStateRuntime, fn: Any, values: Any, k: int) -> list[Any]:
        out = in_chunks(self, fn, values, k)
        seen["split"] += 1
        seen["most_chunks"] = max(seen["most_chunks"], k)
        fresh = [r[1] for r in out if isinstance(r, tuple)]  # the counted path's (rows, keys not stored)
        seen["chunks_with_new_keys"] = max(seen["chunks_with_new_keys"], sum(1 for f in fresh if f))
        return out

    monkeypatch.setattr(AggregateStateRuntime, "_in_chunks", spy)
    return seen


def _run(tables: list[Any], aggs: dict[str, Any], threads: int, url: str | None = None, stops: tuple[int, ...] = ()) -> list[Any]:
    """The changed rows and the whole state of every batch (emit="changed" and emit="all"), stopping and
    restoring from `url` after each batch count in `stops`."""
    out: list[Any] = []

    def setup() -> sk.StreamingContext:
        ssc = sk.StreamingContext(1.0, checkpoint=url, clock=ManualClock(), snapshot_every=5, executor=LocalExecutor(table_threads=threads))
        src = ssc.queue_stream([[t] for t in tables], name="q")
        changed = src.aggregate_state(by="k", aggs=aggs, name="changed", emit="changed")
        every = src.aggregate_state(by="k", aggs=aggs, name="every")
        changed.foreach_batch(lambda b: out.append(("changed", b.to_arrow())))
        every.foreach_batch(lambda b: out.append(("every", b.to_arrow())))
        return ssc

    done = 0
    for stop in (*stops, len(tables)):
        ssc = sk.StreamingContext.get_or_create(url, setup) if url else setup()
        ssc.run(max_batches=stop - done)
        ssc.stop()
        done = stop
    return out


def _model(batches: list[list[tuple[int, int | None]]]) -> list[dict[int, tuple[int, int, int | None]]]:
    """Per batch, (count, non-null count, sum) of the keys it touched."""
    state: dict[int, tuple[int, int, int | None]] = {}
    out = []
    for rows in batches:
        for k, v in rows:
            n, c, s = state.get(k, (0, 0, None))
            state[k] = (n + 1, c + (v is not None), s if v is None else (v if s is None else s + v))
        out.append({k: state[k] for k, _ in rows})
    return out


def _as_model(table: Any) -> dict[int, tuple[int, int, int | None]]:
    keys = [k if isinstance(k, int) else int(k.removeprefix("key-")) for k in table.column("k").to_pylist()]
    return dict(zip(keys, zip(*(table.column(c).to_pylist() for c in ("n", "c", "s")), strict=True), strict=True))


@pytest.mark.parametrize("aggs", [SUMS, EVERY], ids=["sums", "every-kind"])
@pytest.mark.parametrize("key_name", list(KEY_TYPES))
def test_split_probes_give_exactly_the_single_threaded_tables(key_name: str, aggs: dict[str, Any], forced: dict[str, int]) -> None:
    batches = _batches(seed=15)
    tables = [_table(rows, KEY_TYPES[key_name]) for rows in batches]
    one = _run(tables, aggs, threads=1)
    assert forced["split"] == 0  # table_threads=1: never split
    four = _run(tables, aggs, threads=4)
    assert forced["split"] > 0 and forced["most_chunks"] == 4
    if aggs is SUMS and key_name != "dictionary":  # plain keys on the counted path: new keys met by several chunks
        assert forced["chunks_with_new_keys"] >= 2
    assert len(four) == len(one) == 2 * len(tables)
    for (label, a), (_, b) in zip(one, four, strict=True):
        assert b.schema == a.schema and b.equals(a), f"{label}: split probes changed the output"
    assert [_as_model(t) for label, t in four if label == "changed"] == _model(batches)


def test_a_restore_with_split_probes_equals_the_uncrashed_single_threaded_run(tmp_path: Path, forced: dict[str, int]) -> None:
    """Deltas upserted into a snapshot (``_replaced``) with split probes restore exactly the same state."""
    batches = _batches(seed=4)
    tables = [_table(rows, pa.string()) for rows in batches]
    want = _run(tables, SUMS, threads=1)
    got = _run(tables, SUMS, threads=4, url=str(tmp_path / "ck"), stops=(3, 7, 8))
    assert forced["split"] > 0
    assert [label for label, _ in got] == [label for label, _ in want]
    for (label, a), (_, b) in zip(want, got, strict=True):
        assert b.equals(a), f"{label}: the restored job's output differs"


def test_null_keys_are_refused_by_name_with_split_probes(forced: dict[str, int]) -> None:
    first = pa.table({"k": pa.array([f"key-{i % 20}" for i in range(300)]), "v": pa.array(range(300), pa.int64())})
    plain = pa.table({"k": pa.array([None if i % 7 == 3 else f"key-{i % 30}" for i in range(300)]), "v": pa.array(range(300), pa.int64())})
    keys = pa.DictionaryArray.from_arrays(pa.array([i % 3 for i in range(300)], pa.int32()), pa.array(["key-1", None, "key-2"]))
    encoded = pa.table({"k": keys, "v": pa.array(range(300), pa.int64())})
    for second, nulls in ((plain, 43), (encoded, 100)):
        ssc = sk.StreamingContext(1.0, clock=ManualClock(), executor=LocalExecutor(table_threads=4))
        ssc.queue_stream([[first], [second]], name="q").aggregate_state(by="k", aggs=SUMS, name="s").foreach_batch(lambda b: None)
        ssc.run(max_batches=1)
        with pytest.raises(sk.ConfigError, match=rf"key column 'k' has {nulls} null value\(s\)"):
            ssc.run(max_batches=1)
        ssc.stop()


def _probe_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name.startswith(THREAD_PREFIX)]


def _wait_until(cond: Any, timeout_s: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout_s
    while not cond():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.01)
    return True


def test_the_probe_threads_are_daemons_and_stop_with_the_context(forced: dict[str, int]) -> None:
    before = set(_probe_threads())
    tables = [_table(rows, pa.string()) for rows in _batches(seed=1)[:4]]
    ssc = sk.StreamingContext(1.0, clock=ManualClock(), executor=LocalExecutor(table_threads=3))
    ssc.queue_stream([[t] for t in tables], name="q").aggregate_state(by="k", aggs=SUMS, name="s").foreach_batch(lambda b: None)
    ssc.run(max_batches=len(tables))
    started = [t for t in _probe_threads() if t not in before]
    assert forced["split"] > 0 and len(started) == 2  # the calling thread takes the first chunk
    assert all(t.daemon and t.name.startswith(f"{THREAD_PREFIX}s-") for t in started)
    ssc.stop()
    assert _wait_until(lambda: not any(t.is_alive() for t in started)), "stop() left the probe threads running"


def test_workers_raise_the_first_failure_after_every_item_finished() -> None:
    workers = Workers(2, "streamkeep-test")
    finished: list[int] = []

    def fn(i: int) -> int:
        if i in (1, 2):
            finished.append(i)
            msg = f"item {i} failed"
            raise ValueError(msg)
        time.sleep(0.05 * (i == 3))  # a slow item: map waits for it before raising
        finished.append(i)
        return i * 10

    assert workers.map(fn, [0, 3, 4]) == [0, 30, 40]
    finished.clear()
    with pytest.raises(ValueError, match="item 1 failed"):
        workers.map(fn, [0, 1, 2, 3])
    assert sorted(finished) == [0, 1, 2, 3]
    workers.close()


def test_table_threads_is_checked() -> None:
    for bad in (0, -1, 1.5, True, "2"):
        with pytest.raises(sk.ConfigError, match="table_threads must be None"):
            LocalExecutor(table_threads=bad)  # type: ignore[arg-type]


def test_by_default_a_probe_is_not_split(forced: dict[str, int]) -> None:
    """LocalExecutor() without table_threads probes on one thread (the split was measured slower on 2 cores);
    table_threads=2 splits; the output is the same either way."""
    tables = [_table(rows, pa.string()) for rows in _batches(seed=2)]
    outs = {}
    for label, executor in (("default", LocalExecutor()), ("two", LocalExecutor(table_threads=2))):
        forced["split"] = 0
        out: list[Any] = []
        ssc = sk.StreamingContext(1.0, clock=ManualClock(), executor=executor)
        ssc.queue_stream([[t] for t in tables], name="q").aggregate_state(by="k", aggs=SUMS, name="s").foreach_batch(
            lambda b: out.append(b.to_arrow())  # noqa: B023 - run before the loop moves on
        )
        ssc.run(max_batches=len(tables))
        ssc.stop()
        outs[label] = (forced["split"], out)
    assert outs["default"][0] == 0 and outs["two"][0] > 0
    assert all(a.equals(b) for a, b in zip(outs["default"][1], outs["two"][1], strict=True))
