"""aggregate_state's merge paths (issue 15): counted in place, upserted by key probe, grouped (several keys).

Random batches of several key types, with nulls among the values, small batches
(the stored table is probed with the batch's keys) and big ones (counts and sums
are accumulated straight into the stored rows), checked batch by batch against a
pure-Python model, also across a restart from the checkpoint.
"""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest

import streamkeep as sk
from streamkeep.executors._tables import AggregateStateRuntime
from streamkeep.testing import ManualClock

SUMS = {"n": ("*", "count"), "c": ("v", "count"), "s": ("v", "sum")}
EVERY = {**SUMS, "mn": ("v", "min"), "mx": ("v", "max"), "avg": ("v", "mean"), "last": ("v", "last")}

KEY_TYPES = {
    "int64": pa.int64(),
    "int32": pa.int32(),
    "string": pa.string(),
    "large_string": pa.large_string(),
    "dictionary": pa.dictionary(pa.int32(), pa.string()),
    "timestamp": pa.timestamp("ms"),
}


def _batches(seed: int = 15) -> list[list[tuple[Any, int | None]]]:
    """Rows (key, value) per batch: small and big batches, new keys arriving, nulls in some batches."""
    rng = random.Random(seed)
    out = []
    for b in range(14):
        n = rng.choice([2, 5, 120, 300])
        nulls = 0.15 if b % 3 == 1 else 0.0
        keys = [rng.randrange(8 * (b + 1)) for _ in range(n)]  # new keys keep arriving
        out.append([(k, None if rng.random() < nulls else rng.randrange(-40, 40)) for k in keys])
    return out


def _key(k: int, key_type: Any) -> Any:
    if pa.types.is_integer(key_type) or pa.types.is_timestamp(key_type):
        return k
    return f"key-{k}"


def _table(rows: list[tuple[Any, int | None]], key_type: Any) -> Any:
    keys = [_key(k, key_type) for k, _ in rows]
    if pa.types.is_dictionary(key_type):
        col = pa.array(keys, pa.string()).dictionary_encode()
    else:
        col = pa.array(keys, key_type)
    return pa.table({"k": col, "v": pa.array([v for _, v in rows], pa.int64())})


def _model(batches: list[list[tuple[Any, int | None]]], names: list[str]) -> list[list[tuple[Any, ...]]]:
    """The changed rows of each batch, by a dict per key."""
    state: dict[Any, dict[str, Any]] = {}
    out = []
    for rows in batches:
        touched = set()
        for k, v in rows:
            st = state.setdefault(k, {"n": 0, "c": 0, "s": None, "mn": None, "mx": None, "last": None})
            touched.add(k)
            st["n"] += 1
            if v is None:
                continue
            st["c"] += 1
            st["s"] = v if st["s"] is None else st["s"] + v
            st["mn"] = v if st["mn"] is None else min(st["mn"], v)
            st["mx"] = v if st["mx"] is None else max(st["mx"], v)
            st["last"] = v
        rows_out = []
        for k in touched:
            st = state[k]
            avg = None if st["s"] is None else st["s"] / st["c"]
            vals = {**st, "avg": avg}
            rows_out.append((k, *(vals[n] for n in names)))
        out.append(sorted(rows_out))
    return out


def _rows(table: Any, key_type: Any) -> list[tuple[Any, ...]]:
    cols = [table.column(i).to_pylist() for i in range(table.num_columns)]
    rows = list(zip(*cols, strict=True))
    if pa.types.is_timestamp(key_type):
        rows = [(int(r[0].timestamp() * 1000) if r[0] is not None else None, *r[1:]) for r in rows]
    elif not pa.types.is_integer(key_type):
        rows = [(int(str(r[0]).removeprefix("key-")), *r[1:]) for r in rows]
    return sorted(rows)


def _setup(url: str | None, tables: list[Any], aggs: dict[str, Any], changed: list[Any], every: list[Any]) -> Any:
    def setup() -> sk.StreamingContext:
        ssc = sk.StreamingContext(1.0, checkpoint=url, clock=ManualClock(), snapshot_every=4)
        src = ssc.queue_stream([[t] for t in tables], name="q")
        src.aggregate_state(by="k", aggs=aggs, name="changed", emit="changed").foreach_batch(lambda b: changed.append(b.to_arrow()))
        src.aggregate_state(by="k", aggs=aggs, name="every").foreach_batch(lambda b: every.append(b.to_arrow()))
        return ssc

    return setup


@pytest.fixture
def paths(monkeypatch: pytest.MonkeyPatch) -> dict[str, int]:
    """How many batches each merge path folded in, and deltas a restore upserted (spied on the runtime's methods)."""
    calls = {"counted": 0, "upsert": 0, "replaced": 0}
    counted, upsert, replaced = AggregateStateRuntime._counted, AggregateStateRuntime._upsert, AggregateStateRuntime._replaced

    def spy_counted(self: AggregateStateRuntime, state: Any, table: Any) -> Any:
        calls["counted"] += 1
        return counted(self, state, table)

    def spy_upsert(self: AggregateStateRuntime, state: Any, partial: Any) -> Any:
        calls["upsert"] += 1
        return upsert(self, state, partial)

    def spy_replaced(self: AggregateStateRuntime, state: Any, rows: Any) -> Any:
        calls["replaced"] += 1
        return replaced(self, state, rows)

    monkeypatch.setattr(AggregateStateRuntime, "_counted", spy_counted)
    monkeypatch.setattr(AggregateStateRuntime, "_replaced", spy_replaced)
    monkeypatch.setattr(AggregateStateRuntime, "_upsert", spy_upsert)
    return calls


@pytest.mark.parametrize("aggs", [SUMS, EVERY], ids=["sums", "every"])
@pytest.mark.parametrize("key_name", list(KEY_TYPES))
def test_running_aggregates_equal_the_model_per_batch_on_every_path(key_name: str, aggs: dict[str, Any], paths: dict[str, int]) -> None:
    key_type = KEY_TYPES[key_name]
    batches = _batches()
    tables = [_table(rows, key_type) for rows in batches]
    changed: list[Any] = []
    every: list[Any] = []
    ssc = _setup(None, tables, aggs, changed, every)()
    ssc.run(max_batches=len(tables))
    ssc.stop()
    names = list(aggs)
    want = _model(batches, names)
    assert [_rows(t, key_type) for t in changed] == want
    final: dict[Any, tuple[Any, ...]] = {}
    for rows in want:
        final.update({r[0]: r for r in rows})
    assert _rows(every[-1], key_type) == sorted(final.values())
    assert paths["upsert"] > 0  # small batches, and batches with nulls among summed values
    if aggs is SUMS:
        assert paths["counted"] > 0  # big batches of counts and sums: accumulated in place


@pytest.mark.parametrize("key_name", ["string", "int64"])
def test_a_restart_between_paths_restores_exactly(tmp_path: Path, key_name: str, paths: dict[str, int]) -> None:
    key_type = KEY_TYPES[key_name]
    batches = _batches(seed=3)
    tables = [_table(rows, key_type) for rows in batches]
    url = str(tmp_path / "ck")
    changed: list[Any] = []
    every: list[Any] = []
    for n in (5, 2, 7):  # snapshots every 4 batches: restores read a snapshot plus deltas, or deltas only
        ssc = sk.StreamingContext.get_or_create(url, _setup(url, tables, SUMS, changed, every))
        ssc.run(max_batches=n)
        ssc.stop()
    assert [_rows(t, key_type) for t in changed] == _model(batches, list(SUMS))
    assert paths["counted"] > 0 and paths["upsert"] > 0
    assert paths["replaced"] > 0  # a restore upserted deltas into a snapshot in place


def _dictionary_batch(rows: list[tuple[str, int]], chunks: int, rng: random.Random) -> Any:
    """`rows` as a table of `chunks` record batches, each with its own dictionary (shuffled, with unused entries)."""
    batches = []
    step = max(1, len(rows) // chunks)
    for i in range(0, len(rows), step):
        part = rows[i : i + step]
        values = sorted({k for k, _ in part} | {f"unused-{rng.randrange(1000)}"})
        rng.shuffle(values)
        indices = pa.array([values.index(k) for k, _ in part], pa.int16())
        keys = pa.DictionaryArray.from_arrays(indices, pa.array(values, pa.string()))
        batches.append(pa.record_batch({"k": keys, "v": pa.array([v for _, v in part], pa.int64())}))
    return pa.Table.from_batches(batches)


def test_dictionary_keys_on_the_counted_path_probe_only_the_dictionary(monkeypatch: pytest.MonkeyPatch, paths: dict[str, int]) -> None:
    """Big batches of dictionary-encoded keys (Parquet's dictionary pages) give the same counts and sums as plain
    keys, batch by batch, while only the rows of keys not stored yet are decoded."""
    rng = random.Random(7)
    batches = [[(f"key-{rng.randrange(40 + 20 * b)}", rng.randrange(-9, 9)) for _ in range(400)] for b in range(6)]
    plain = [
        pa.table({"k": pa.array([k for k, _ in rows], pa.string()), "v": pa.array([v for _, v in rows], pa.int64())}) for rows in batches
    ]
    encoded = [_dictionary_batch(rows, 1 + b % 3, rng) for b, rows in enumerate(batches)]
    decoded: list[int] = []
    plain_keys = AggregateStateRuntime._plain_keys

    def spy(self: AggregateStateRuntime, table: Any) -> Any:
        if pa.types.is_dictionary(table.schema.field("k").type):
            decoded.append(table.num_rows)
        return plain_keys(self, table)

    monkeypatch.setattr(AggregateStateRuntime, "_plain_keys", spy)
    outs: dict[str, list[Any]] = {"plain": [], "encoded": []}
    for label, tables in (("plain", plain), ("encoded", encoded)):
        ssc = sk.StreamingContext(1.0, clock=ManualClock())
        src = ssc.queue_stream([[t] for t in tables], name="q")
        out = outs[label]
        src.aggregate_state(by="k", aggs=SUMS, name="s", emit="changed").foreach_batch(lambda b: out.append(b.to_arrow()))  # noqa: B023
        ssc.run(max_batches=len(tables))
        ssc.stop()
    assert [_rows(t, pa.string()) for t in outs["encoded"]] == [_rows(t, pa.string()) for t in outs["plain"]]
    assert [_rows(t, pa.string()) for t in outs["encoded"]] == _model([[(int(k[4:]), v) for k, v in rows] for rows in batches], list(SUMS))
    assert paths["counted"] >= 2 * (len(batches) - 1)  # both jobs took the counted path after their first batch
    seen: set[str] = set()
    new_rows = []
    for rows in batches:
        new_rows.append(sum(1 for k, _ in rows if k not in seen))
        seen.update(k for k, _ in rows)
    assert decoded == [400, *new_rows[1:]]  # the first batch (no state yet) whole, later only the rows of new keys
    assert all(0 < n < 400 for n in new_rows[1:])


def test_a_null_dictionary_value_as_key_is_refused_by_name() -> None:
    """A dictionary entry that is null (valid index, null value) is a null key on the counted path too."""
    first = pa.table({"k": pa.array([f"key-{i % 50}" for i in range(300)]), "v": pa.array(range(300), pa.int64())})
    keys = pa.DictionaryArray.from_arrays(pa.array([i % 3 for i in range(300)], pa.int32()), pa.array(["key-1", None, "key-2"]))
    second = pa.table({"k": keys, "v": pa.array(range(300), pa.int64())})
    ssc = sk.StreamingContext(1.0, clock=ManualClock())
    ssc.queue_stream([[first], [second]], name="q").aggregate_state(by="k", aggs=SUMS, name="s").foreach_batch(lambda b: None)
    ssc.run(max_batches=1)
    with pytest.raises(sk.ConfigError, match=r"key column 'k' has 100 null value\(s\)"):
        ssc.run(max_batches=1)
    ssc.stop()
