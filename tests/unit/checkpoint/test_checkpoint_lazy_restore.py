"""Restarts with big state (issue 14): snapshots carry a sorted key index, and a restored
``map_with_state`` looks its keys up in the snapshot's columns until the dict is built.

The lazy store must be exact: the same values, the same key order (a dict's insertion order,
which outputs such as ``state_snapshots()`` show) as a store loaded eagerly, whatever the
batches did (set, remove, re-add keys) before and after the dict was built in the background.
"""

from __future__ import annotations

import gc
import shutil
import threading
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import streamkeep as sk
from streamkeep._columns import Columns, order_from_bytes, sorted_order
from streamkeep.checkpoint import _compact as compaction
from streamkeep.checkpoint._compact import decode_payload, encode_snapshot, merge
from streamkeep.codec import get_codec
from streamkeep.state.memory import MemoryStateStore
from streamkeep.testing import ManualClock

# ----------------------------------------------------------------------------- the key index in snapshots


def test_a_big_snapshot_of_one_key_type_carries_a_sorted_key_index() -> None:
    data = {f"k{(i * 7919) % 1000}": i for i in range(1000)}
    payload = encode_snapshot("msgpack", {"set": data, "del": []}, order_min_keys=10)
    raw = get_codec("msgpack").decode(payload)
    order = order_from_bytes(raw["order"], len(data))
    keys = list(data)
    assert [keys[i] for i in order] == sorted(keys)
    lazy = decode_payload("msgpack", payload, False, "test", lazy=True)["set"]
    assert isinstance(lazy, Columns) and lazy.keys == keys and lazy.values == list(data.values())
    assert all(lazy.find(k) == i for i, k in enumerate(keys)) and lazy.find("nope") == -1 and lazy.find("k") == -1
    # Without `lazy` the snapshot still loads as a dict in its order (the index is ignored).
    assert list(decode_payload("msgpack", payload, False, "test")["set"].items()) == list(data.items())


@pytest.mark.parametrize(
    "keys",
    [[1, "a"], [(1, 2), (0, 1)], [1.5, 0.5], [True, False], []],
    ids=["mixed", "tuples", "floats", "bools", "empty"],
)
def test_no_index_for_keys_whose_order_cannot_stand_for_equality(keys: list[Any]) -> None:
    assert sorted_order(keys) is None
    payload = encode_snapshot("msgpack", {"set": {k: 1 for k in keys}, "del": []}, order_min_keys=0)
    assert "order" not in get_codec("msgpack").decode(payload)
    assert not isinstance(decode_payload("msgpack", payload, False, "test", lazy=True)["set"], Columns)


def test_merge_keeps_the_index_when_no_key_came_or_went() -> None:
    base = {"set": {f"k{i}": i for i in range(50)}, "del": []}
    snap = decode_payload("msgpack", encode_snapshot("msgpack", base, order_min_keys=10), False, "t", columns=True)
    cols = snap["set"]
    assert isinstance(cols, Columns) and cols.order is not None
    same = merge(snap, [{"set": [("k3", 99)], "del": []}])["set"]
    assert same.order is cols.order and same.values[3] == 99


@settings(max_examples=150, deadline=None)
@given(
    st.lists(st.sampled_from([f"k{i}" for i in range(30)]), min_size=1, max_size=30, unique=True),
    st.lists(st.tuples(st.lists(st.sampled_from([f"k{i}" for i in range(40)] + [1, b"x"]), max_size=6), st.lists(st.sampled_from([f"k{i}" for i in range(40)]), max_size=6)), max_size=4),
)
def test_merge_carries_the_index_over_removed_and_added_keys(base_keys: list[str], deltas: list[Any]) -> None:
    """The index a merge carries (keys dropped, keys inserted) is the sorted order of the merged keys,
    or absent when the keys are no longer of one type; the snapshot then gets a fresh one if it can."""
    snap = decode_payload(
        "msgpack", encode_snapshot("msgpack", {"set": dict.fromkeys(base_keys, 0), "del": []}, order_min_keys=1), False, "t", columns=True
    )
    assert snap["set"].order is not None
    ds = [{"set": [(k, 1) for k in sets], "del": [k for k in dels if k not in sets]} for sets, dels in deltas]
    out = merge(snap, ds)["set"]
    if out.order is not None:
        assert [out.keys[i] for i in out.order] == sorted(out.keys)
    else:
        assert len({type(k) for k in out.keys}) != 1 or not out.keys or len(out.keys) - len(base_keys) > 1024
    back = decode_payload("msgpack", encode_snapshot("msgpack", {"set": out, "del": []}, order_min_keys=1), False, "t", lazy=True)["set"]
    if isinstance(back, Columns):
        assert [back.keys[i] for i in back.order] == sorted(back.keys)  # type: ignore[union-attr]
    else:
        assert len({type(k) for k in back}) != 1 or not back


def test_a_damaged_index_is_refused_or_falls_back_to_loading_everything() -> None:
    payload = encode_snapshot("msgpack", {"set": {f"k{i}": i for i in range(20)}, "del": []}, order_min_keys=10)
    codec = get_codec("msgpack")
    raw = codec.decode(payload)
    short = codec.encode({**raw, "order": raw["order"][:-4]})
    with pytest.raises(sk.errors.CorruptCheckpointError, match="key index holds 19 positions for 20 keys"):
        decode_payload("msgpack", short, False, "state file x", lazy=True)
    assert len(decode_payload("msgpack", short, False, "state file x")["set"]) == 20  # not read without `lazy`
    past = codec.encode({**raw, "order": b"\xff\xff\x00\x00" * 20})  # positions past the keys
    store = MemoryStateStore()
    store.load_lazy(decode_payload("msgpack", past, False, "t", lazy=True)["set"])
    store.fault(["k3"])
    assert not store.lazy and store.data == {f"k{i}": i for i in range(20)}


@pytest.mark.parametrize("n_keys", [0, 1, 3, 4, 10])
def test_columns_of_one_or_many_chunks_hold_every_key_and_value_in_order(monkeypatch: pytest.MonkeyPatch, n_keys: int) -> None:
    monkeypatch.setattr(compaction, "CHUNK_KEYS", 3)  # 10 keys: 4 chunks, the last one short
    data = {f"k{(i * 7) % n_keys}": [i] for i in range(n_keys)}
    payload = encode_snapshot("msgpack", {"set": data, "del": []}, order_min_keys=0)
    assert len(get_codec("msgpack").decode(payload).get("cols", [])) == -(-n_keys // 3)
    cols = decode_payload("msgpack", payload, False, "test", columns=True)["set"]
    assert isinstance(cols, Columns) and cols.keys == list(data) and cols.values == list(data.values())
    assert cols.to_dict() == data and all(cols.find(k) == i for i, k in enumerate(data))


@pytest.mark.parametrize(
    ("chunk", "problem"),
    [
        (["k1", [1]], "holds str and list where a list of keys and a list of values belong"),
        ([["k1", "k2"], [1]], "holds 2 keys but 1 values"),
        ([["k1"], [1], [2]], "too many values to unpack"),
    ],
)
def test_a_malformed_column_chunk_is_a_corrupt_checkpoint(chunk: list[Any], problem: str) -> None:
    codec = get_codec("msgpack")
    good = codec.encode([["k0"], [0]])
    for chunks in ([codec.encode(chunk)], [good, codec.encode(chunk)]):  # alone, and after a good chunk
        payload = codec.encode({"cols": chunks, "del": []})
        for how in ({"columns": True}, {}):
            with pytest.raises(sk.errors.CorruptCheckpointError, match=f"state file x passed its checksum but could not be decoded: .*{problem}"):
                decode_payload("msgpack", payload, False, "state file x", **how)


# ----------------------------------------------------------------------------- the lazy store vs a dict

_key = st.sampled_from([f"k{i}" for i in range(12)] + ["n1", "n2", "n3"])
# one batch: operations on keys, each ("set", k, v) / ("del", k) / ("get", k)
_op = st.one_of(
    st.tuples(st.just("set"), _key, st.integers(0, 9)),
    st.tuples(st.just("del"), _key),
    st.tuples(st.just("get"), _key),
)


def _lazy_store(base: dict[str, int]) -> MemoryStateStore:
    payload = encode_snapshot("msgpack", {"set": base, "del": []}, order_min_keys=0)
    cols = decode_payload("msgpack", payload, False, "t", lazy=True)["set"]
    assert isinstance(cols, Columns)
    store = MemoryStateStore()
    store.load_lazy(cols)
    assert store.lazy
    return store


@settings(max_examples=200, deadline=None)
@given(
    st.lists(st.tuples(st.sampled_from([f"k{i}" for i in range(12)]), st.integers(0, 9)), min_size=1, max_size=12),
    st.lists(st.tuples(st.lists(_key, max_size=3), st.lists(_key, max_size=3)), max_size=3),
    st.lists(st.lists(_op, max_size=8), max_size=6),
    st.integers(0, 7),
    st.sampled_from(["thread", "materialize", "never"]),
)
def test_a_lazy_store_equals_an_eager_one_in_values_and_key_order(
    base_items: list[tuple[str, int]], deltas: list[Any], batches: list[Any], built_at: int, how: str
) -> None:
    """A store loaded lazily from a snapshot plus deltas, then changed batch by batch the way
    ``map_with_state`` changes it (`fault` with the batch's keys first), holds what a dict
    changed the same way holds, in the same order, whenever its dict gets built."""
    base = dict(base_items)
    ref = dict(base)
    store = _lazy_store(base)
    for sets, dels in deltas:  # the deltas after the snapshot, applied at the restore
        d_set = [(k, 100 + i) for i, k in enumerate(sets)]
        d_del = [k for k in dels if k not in sets]
        ref.update(d_set)
        for k in d_del:
            ref.pop(k, None)
        store.apply_delta(d_set, d_del)
    for n, ops in enumerate(batches):
        if n == built_at:
            if how == "thread" and store.lazy:
                lz = store._lazy
                assert lz is not None
                th = threading.Thread(target=lz.build)
                th.start()
                th.join()  # built in the background: the store switches at the next fault
            elif how == "materialize":
                store.materialize()
        store.fault([op[1] for op in ops])
        data = store.data
        for op in ops:
            k = op[1]
            assert data.get(k, "absent") == ref.get(k, "absent")
            if op[0] == "set":
                store.put(k, op[2])
                ref[k] = op[2]
            elif op[0] == "del" and k in ref:
                store.delete(k)
                del ref[k]
        changed, removed = store.take_delta()
        assert dict(changed) == {k: ref[k] for k in dict(changed)} and not set(removed) & set(ref)
    assert list(store.items()) == list(ref.items())  # every key, in a dict's order
    assert not store.lazy and len(store) == len(ref)


def test_keys_the_index_cannot_answer_load_everything_first() -> None:
    store = _lazy_store({"a": 1, "b": 2})
    store.fault([1])  # an int key: equal keys of other types may exist, so the dict is built
    assert not store.lazy and store.data == {"a": 1, "b": 2}
    store = _lazy_store({"a": 1})
    store.fault([["unhashable"]])
    assert not store.lazy and store.data == {"a": 1}


def test_a_lazy_store_starts_building_its_dict_at_the_second_batch() -> None:
    store = _lazy_store({f"k{i}": i for i in range(5)})
    store.fault(["k1"])
    lz = store._lazy
    assert lz is not None and lz.thread is None and store.data == {"k1": 1}
    store.fault(["k2"])
    assert lz.thread is not None
    lz.thread.join()
    store.fault(["k3"])
    assert not store.lazy and list(store.data) == [f"k{i}" for i in range(5)]


# ----------------------------------------------------------------------------- a restarted job


def _bump(key: str, value: int, state: sk.State) -> tuple[str, int]:
    n = state.get_option(0) + value
    if n % 5 == 0:
        state.remove()  # a key goes (and may come back later: then at the end of the dict)
    else:
        state.update(n)
    return (key, n)


def _job(url: str, out: list[Any], snaps: list[Any] | None) -> sk.StreamingContext:
    ssc = sk.StreamingContext(1.0, checkpoint=url, clock=ManualClock(), snapshot_every=3)
    pairs = ssc.rate_stream(7, name="rate").map(lambda r: (f"k{(r[0] * 13) % 40}", r[0] % 4 + 1))
    st_ = pairs.map_with_state(_bump, name="state", initial=[(f"k{i}", i) for i in range(0, 40, 3)])
    st_.foreach_batch(lambda t, b: out.append((t, b.collect())))
    if snaps is not None:  # every key, in order, every batch (so the store is loaded in full at the first)
        st_.state_snapshots().foreach_batch(lambda t, b: snaps.append((t, b.collect())))
    return ssc


def _state_items(ssc: sk.StreamingContext) -> list[tuple[Any, Any]]:
    return list(ssc._scheduler.executor.snapshot("state")["set"])  # type: ignore[union-attr]


@pytest.mark.parametrize("with_snapshots", [False, True], ids=["lookups", "state_snapshots"])
def test_a_restored_map_with_state_loads_lazily_and_equals_an_eager_restore_and_an_uncrashed_run(
    with_snapshots: bool, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Outputs and state equal the uncrashed run's, in the same key order (what ``state_snapshots()``
    lists), as a restore that builds the dict at once does."""
    monkeypatch.setattr(compaction, "ORDER_MIN_KEYS", 1)
    ref_out: list[Any] = []
    ref_snaps: list[Any] = []
    url = str(tmp_path / "ref")
    ssc = _job(url, ref_out, ref_snaps if with_snapshots else None)
    ssc.run(max_batches=20)
    ref_state = _state_items(ssc)
    ssc.stop()

    url = str(tmp_path / "ckpt")
    ssc = _job(url, [], None)
    ssc.run(max_batches=8)
    writer = ssc._scheduler.writer  # type: ignore[union-attr]
    assert writer is not None
    if writer._thread is not None:
        writer._thread.join()  # the snapshot of batch 6 is done: batch 9 adopts it
    ssc.run(max_batches=4)
    ssc.stop()
    assert writer.chains["state"].snapshot, "no snapshot to restore from"
    shutil.copytree(url, tmp_path / "eager")

    runs = {}
    for how in ("lazy", "eager"):
        out: list[Any] = []
        snaps: list[Any] | None = [] if with_snapshots else None
        u = url if how == "lazy" else str(tmp_path / "eager")
        with monkeypatch.context() as m:
            if how == "eager":
                m.setattr(MemoryStateStore, "load_lazy", MemoryStateStore.load)
            restored = sk.StreamingContext.get_or_create(u, lambda u=u, out=out, snaps=snaps: _job(u, out, snaps))  # type: ignore[misc]
            store = restored._scheduler.executor.runtimes["state"].store  # type: ignore[union-attr,attr-defined]
            assert store.lazy == (how == "lazy"), "the restored state was not loaded lazily"
            restored.run(max_batches=1)
            assert store.lazy == (how == "lazy" and not with_snapshots)  # state_snapshots() needs every key
            restored.run(max_batches=7)
            runs[how] = (out, snaps, _state_items(restored))
            restored.stop()
    assert runs["lazy"] == runs["eager"]
    assert runs["lazy"][0] == ref_out[12:]
    assert runs["lazy"][2] == ref_state  # as lists: the same key order
    if with_snapshots:
        assert runs["lazy"][1] == ref_snaps[12:]


@pytest.mark.parametrize("frozen_by_app", [False, True], ids=["plain", "app_froze_objects"])
def test_restored_state_starts_in_the_oldest_gc_generation(frozen_by_app: bool, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The columns a restore decodes are not walked by the young collections of the first batches
    (with a million keys, each such walk took tens of ms of the restart); objects the application
    froze (`gc.freeze`, e.g. before forking) stay frozen."""
    monkeypatch.setattr(compaction, "ORDER_MIN_KEYS", 1)
    url = str(tmp_path / "ckpt")
    ssc = _job(url, [], None)
    ssc.run(max_batches=8)
    writer = ssc._scheduler.writer  # type: ignore[union-attr]
    assert writer is not None
    if writer._thread is not None:
        writer._thread.join()
    ssc.run(max_batches=2)
    ssc.stop()
    if frozen_by_app:
        gc.freeze()
    try:
        frozen = gc.get_freeze_count()
        restored = sk.StreamingContext.get_or_create(url, lambda: _job(url, [], None))
        lazy = restored._scheduler.executor.runtimes["state"].store._lazy  # type: ignore[union-attr,attr-defined]
        assert lazy is not None, "the restored state was not loaded lazily"
        # objects of other tests' threads may be freed meanwhile (the count drops by a few); an unfreeze drops it to 0
        assert gc.get_freeze_count() >= frozen - 1000
        if not frozen_by_app:
            assert frozen == 0
            for columns in (lazy.base.keys, lazy.base.values):
                assert any(o is columns for o in gc.get_objects(generation=2))
                assert not any(o is columns for o in gc.get_objects(generation=0) + gc.get_objects(generation=1))
        restored.stop()
    finally:
        gc.unfreeze()


def test_an_executor_that_splits_a_restored_snapshot_gets_the_same_pairs_from_columns() -> None:
    """A restore hands `Columns` to `Executor.restore`; splitting it over partitions (the Ray executor)
    gives what splitting the dict gives."""
    from streamkeep.executors._partitions import split_state

    data = {f"k{i}": i for i in range(100)}
    payload = encode_snapshot("msgpack", {"set": data, "del": []}, order_min_keys=1)
    lazy = decode_payload("msgpack", payload, False, "t", lazy=True)
    assert isinstance(lazy["set"], Columns)
    eager = decode_payload("msgpack", payload, False, "t")
    assert split_state(lazy, 3) == split_state(eager, 3)
