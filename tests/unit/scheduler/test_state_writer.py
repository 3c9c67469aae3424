"""`StateWriter`: inline deltas, delta files and the snapshot cadence, on a real local checkpoint (issue 11.2)."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest

from streamkeep.checkpoint import Checkpoint, CommitRecord, _compact
from streamkeep.dstream._graph import UpdateStateNode
from streamkeep.errors import CheckpointError
from streamkeep.scheduler import _state_writer
from streamkeep.scheduler._state_io import Chain, read_chain
from streamkeep.scheduler._state_writer import FIRST_SNAPSHOT_AFTER, MAX_CHAIN, StateWriter


class _FakeExecutor:
    """Hands over the deltas and snapshots a test sets: the writer sees only the Executor protocol."""

    def __init__(self) -> None:
        self.state: dict[Any, Any] = {}
        self.changed: dict[Any, Any] = {}

    def operators(self) -> list[str]:
        return ["n"]

    def put(self, key: Any, value: Any) -> None:
        self.state[key] = value
        self.changed[key] = value

    def delta(self, name: str) -> dict[str, Any] | None:
        if not self.changed:
            return None
        out = {"set": list(self.changed.items()), "del": []}
        self.changed = {}
        return out

    def snapshot(self, name: str) -> dict[str, Any]:
        return {"set": list(self.state.items()), "del": []}


def _node() -> UpdateStateNode:
    return UpdateStateNode(id=1, op="update_state_by_key", parents=(), slide_ms=1000, name="n", codec="msgpack", update=lambda v, s: s, initial=(), num_partitions=None)


def _writer(tmp_path: Path, **kw: Any) -> tuple[StateWriter, Checkpoint, list[Any]]:
    ckpt = Checkpoint(str(tmp_path / "c"))
    ckpt.claim(owner="test", engine_version="test")
    seen: list[Any] = []
    kw.setdefault("snapshot_every", None)
    kw.setdefault("inline_delta_bytes", 4096)
    w = StateWriter(ckpt, {"n": _node()}, on_snapshot=lambda *a: seen.append(a), **kw)
    return w, ckpt, seen


def test_small_deltas_ride_inline_until_their_total_is_reached(tmp_path: Path) -> None:
    w, ckpt, _ = _writer(tmp_path, inline_delta_bytes=40)
    ex = _FakeExecutor()
    kinds = []
    for t in range(1000, 6000, 1000):
        ex.put(f"k{t}", "x" * 8)
        state = w.write(t, ex)  # type: ignore[arg-type]
        kinds.append("inline" if isinstance(state["n"]["deltas"][-1], dict) else "file")
    assert kinds[0] == "inline" and kinds[-1] == "file" and kinds == sorted(kinds, key=lambda k: k == "file")
    snap, deltas = read_chain(ckpt, "msgpack", w.chains["n"].as_data())
    assert snap is None and [k for d in deltas for k, _ in d["set"]] == [f"k{t}" for t in range(1000, 6000, 1000)]
    ckpt.release()


def test_a_batch_without_changes_adds_no_delta(tmp_path: Path) -> None:
    w, ckpt, _ = _writer(tmp_path)
    state = w.write(1000, _FakeExecutor())  # type: ignore[arg-type]
    assert state == {"n": {"snapshot": None, "snapshot_time": 0, "deltas": []}}
    ckpt.release()


@pytest.fixture
def merged(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every snapshot merged in the background, as a big state's is (these states are small)."""
    monkeypatch.setattr(_state_writer, "DIRECT_SNAPSHOT_BYTES", 0)


@pytest.mark.usefixtures("merged")
def test_snapshot_every_n_batches_is_written_in_the_background_and_adopted(tmp_path: Path) -> None:
    w, ckpt, seen = _writer(tmp_path, snapshot_every=3)
    ex = _FakeExecutor()
    started = []
    for i in range(1, 8):
        ex.put(i % 2, i)
        w.write(i * 1000, ex)  # type: ignore[arg-type]
        started.append(w.started)
    w.adopt(wait=True)
    assert started == [False, False, True, False, False, True, False]
    assert [s[0] for s in seen] == [3000, 6000]
    chain = w.chains["n"]
    assert chain.snapshot_time == 6000 and [t for t, _ in chain.deltas] == [7000]
    snap, deltas = read_chain(ckpt, "msgpack", chain.as_data())
    assert snap is not None and dict(snap["set"]) == {1: 5, 0: 6} and dict(deltas[0]["set"]) == {1: 7}
    w.close()
    ckpt.release()


def test_adaptive_cadence_first_snapshot_then_half_its_size_in_deltas(tmp_path: Path) -> None:
    w, ckpt, _ = _writer(tmp_path)
    ex = _FakeExecutor()
    for k in range(200):
        ex.put(k, k)  # a snapshot merges what the deltas wrote: these reach it through the first one
    t = 0
    for _ in range(FIRST_SNAPSHOT_AFTER - 1):
        t += 1000
        ex.put(0, t)
        w.write(t, ex)  # type: ignore[arg-type]
        assert not w.started
    t += 1000
    ex.put(0, t)
    w.write(t, ex)  # type: ignore[arg-type]
    assert w.started
    w.adopt(wait=True)
    assert w.snapshot_bytes is not None
    n = 0
    while True:  # each delta is small: it takes many batches to reach half the snapshot
        t += 1000
        ex.put(0, t)
        w.write(t, ex)  # type: ignore[arg-type]
        n += 1
        if w.started or n > MAX_CHAIN:
            break
    assert 2 < n < MAX_CHAIN
    w.close()
    ckpt.release()


def test_restored_chains_resume_the_cadence(tmp_path: Path) -> None:
    w, ckpt, _ = _writer(tmp_path, snapshot_every=4)
    w.restored({"n": Chain(None, 0, [(1000, "a"), (2000, "b"), (3000, "c")])})
    assert w.since_snapshot == 3
    ex = _FakeExecutor()
    w.write(4000, ex)  # type: ignore[arg-type]
    assert w.started
    w.close()
    ckpt.release()


def test_restored_inline_partition_deltas_count_their_payload_bytes(tmp_path: Path) -> None:
    """A key-partitioned (Ray) chain's inline parts count their payload: the size estimate picks how to snapshot."""
    w, ckpt, _ = _writer(tmp_path, snapshot_every=4)
    part = {"codec": "msgpack", "data": b"x" * 5000}
    w.restored({"n": Chain(None, 0, [(1000, {"t": 1000, "parts": [part, None]}), (2000, {"t": 2000, "parts": [None, part]})])})
    assert (w.inline_bytes, w.delta_bytes) == (10000, 10000)
    w.close()
    ckpt.release()


@pytest.mark.usefixtures("merged")
def test_a_failed_background_snapshot_fails_the_next_batch(tmp_path: Path) -> None:
    def broken(*_: Any) -> str:
        raise OSError("disk full")

    ex = _FakeExecutor()
    ex.put("k", 1)
    w, ckpt, _ = _writer(tmp_path, snapshot_every=1, inline_delta_bytes=1 << 20)  # the delta rides inline
    ckpt.write_state = broken  # type: ignore[method-assign]
    w.write(1000, ex)  # type: ignore[arg-type]  # the snapshot thread fails
    with pytest.raises(CheckpointError, match="writing a state snapshot to the checkpoint failed: disk full"):
        w.adopt(wait=True)
    ckpt.release()


@pytest.mark.usefixtures("merged")
def test_a_snapshot_never_copies_the_live_state_in_the_batch_loop(tmp_path: Path) -> None:
    """Issue 14: a big state's snapshot is merged from the previous one and the deltas on storage, never read from
    the executor (a copy of 1M keys paused the batch loop ~0.3 s)."""

    class _NoCopy(_FakeExecutor):
        def snapshot(self, name: str) -> dict[str, Any]:
            raise AssertionError("the batch loop copied the whole state")

    w, ckpt, seen = _writer(tmp_path, snapshot_every=2)
    ex = _NoCopy()
    for i in range(1, 6):
        ex.put(i % 3, [i])
        w.write(i * 1000, ex)  # type: ignore[arg-type]
    w.adopt(wait=True)
    assert [s[0] for s in seen] == [2000, 4000]
    snap, deltas = read_chain(ckpt, "msgpack", w.chains["n"].as_data())
    assert snap is not None and dict(snap["set"]) == {1: [4], 2: [2], 0: [3]} and [dict(d["set"]) for d in deltas] == [{2: [5]}]
    w.close()
    ckpt.release()


# ------------------------------------------------------------------ small states: snapshotted in their batch


def test_a_small_state_is_snapshotted_in_its_batch_and_its_commit_names_it(tmp_path: Path) -> None:
    """A small state's snapshot is encoded by `write` from the live state and handed over with the batch's files:
    the chain names it at once (no delta of that batch, nothing adopted later), and values changed in place after
    `write` returned -- while the committer has not written the file yet -- do not reach it."""
    w, ckpt, seen = _writer(tmp_path, snapshot_every=3, inline_delta_bytes=0)
    ex = _FakeExecutor()
    for i in range(1, 4):
        ex.put(f"k{i % 2}", [i])
        files: list[Any] = []
        state = w.write(i * 1000, ex, files)  # type: ignore[arg-type]
        if i < 3:
            assert not w.started and [f[4] for f in files] == ["delta"]
            w.write_deltas(files)
    assert w.started and w._thread is None  # nothing in the background
    assert state["n"] == {"snapshot": "state/n/000000000003000.snap", "snapshot_time": 3000, "deltas": []}
    assert [(f[0], f[1], f[4]) for f in files] == [("n", 3000, "snap")]  # batch 3's delta is in the snapshot
    ex.state["k1"].append("later")  # user code changes a value in place before the committer writes the file
    b0 = ckpt.written_bytes()
    nbytes = w.write_deltas(files)
    assert nbytes == ckpt.written_bytes() - b0 > 0
    snap, deltas = read_chain(ckpt, "msgpack", state["n"])
    assert snap is not None and dict(snap["set"]) == {"k1": [3], "k0": [2]} and deltas == []
    assert [(t, n, sizes) for t, n, _, sizes in seen] == [(3000, nbytes, {"n": len(files[0][2])})]
    assert w.snapshot_bytes == len(files[0][2]) and w.restart_cost() == (len(files[0][2]), 0)
    ex.put("k2", [4])
    state = w.write(4000, ex)  # type: ignore[arg-type]  # without `defer`: written here
    assert not w.started and state["n"]["snapshot"] == "state/n/000000000003000.snap" and len(state["n"]["deltas"]) == 1
    snap, deltas = read_chain(ckpt, "msgpack", state["n"])
    assert dict(snap["set"]) | dict(deltas[0]["set"]) == {"k1": [3], "k0": [2], "k2": [4]}  # type: ignore[index]
    ckpt.release()


def test_a_small_state_without_defer_writes_its_snapshot_in_write(tmp_path: Path) -> None:
    w, ckpt, seen = _writer(tmp_path, snapshot_every=2)
    ex = _FakeExecutor()
    for i in range(1, 5):
        ex.put(i % 3, (i, "x"))
        state = w.write(i * 1000, ex)  # type: ignore[arg-type]
    assert [t for t, *_ in seen] == [2000, 4000] and w._thread is None
    snap, deltas = read_chain(ckpt, "msgpack", state["n"])
    assert snap is not None and dict(snap["set"]) == {1: (4, "x"), 2: (2, "x"), 0: (3, "x")} and deltas == []
    ckpt.release()


@pytest.mark.parametrize("limit", ["bytes", "index"])
def test_a_state_past_either_limit_is_merged_in_the_background(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, limit: str) -> None:
    """From DIRECT_SNAPSHOT_BYTES of state, or once a snapshot may hold a key index (4 bytes per key from
    ORDER_MIN_KEYS keys: a restart loads it lazily), the batch loop does not copy the state: it is merged from storage."""

    class _NoCopy(_FakeExecutor):
        copies = 0

        def snapshot(self, name: str) -> dict[str, Any]:
            if limit == "bytes" or self.copies:
                raise AssertionError("the batch loop copied the whole state")
            self.copies += 1
            return super().snapshot(name)

    if limit == "bytes":
        monkeypatch.setattr(_state_writer, "DIRECT_SNAPSHOT_BYTES", 64)
    else:
        monkeypatch.setattr(_compact, "ORDER_MIN_KEYS", 3)  # its first snapshot (taken here) is 12 bytes or more
    w, ckpt, seen = _writer(tmp_path, snapshot_every=2)
    ex = _NoCopy()
    for k in range(4):
        ex.put(k, "v" * 10)
    w.write(1000, ex)  # type: ignore[arg-type]
    ex.put(0, "w")
    w.write(2000, ex)  # type: ignore[arg-type]
    assert w._thread is not None if limit == "bytes" else w._thread is None
    w.adopt(wait=True)
    ex.put(1, "x")
    w.write(3000, ex)  # type: ignore[arg-type]
    ex.put(2, "y")
    w.write(4000, ex)  # type: ignore[arg-type]
    assert w.started and w._thread is not None
    w.adopt(wait=True)
    snap, _ = read_chain(ckpt, "msgpack", w.chains["n"].as_data())
    assert [t for t, *_ in seen] == [2000, 4000] and dict(snap["set"]) == {0: "w", 1: "x", 2: "y", 3: "v" * 10}  # type: ignore[index]
    w.close()
    ckpt.release()


def test_a_small_state_whose_snapshot_cannot_be_written_fails_its_commit(tmp_path: Path) -> None:
    def broken(*_: Any) -> str:
        raise OSError("disk full")

    w, ckpt, _ = _writer(tmp_path, snapshot_every=1)
    ex = _FakeExecutor()
    ex.put("k", 1)
    files: list[Any] = []
    w.write(1000, ex, files)  # type: ignore[arg-type]
    ckpt.write_state = broken  # type: ignore[method-assign]
    with pytest.raises(OSError, match="disk full"):
        w.write_deltas(files)  # in the committer: the batch is not committed, the job fails (test_pipelined_commit)
    ckpt.release()


def _walked(chain: dict[str, Any]) -> tuple[set[str], int]:
    """What a commit of `chain` needs kept and its inline bytes, walking every entry (as a reader of the record does)."""
    inline = sum(len(e["data"]) for e in chain["deltas"] if isinstance(e, dict))
    return CommitRecord(0, {"state": {"n": chain}}).files(), inline


@pytest.mark.parametrize("how", ["merged", "small"])
def test_the_files_each_commit_needs_follow_the_chain_across_snapshots(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, how: str) -> None:
    """`files` and the inline total are kept as the chain grows (only new entries are walked); a snapshot that
    replaces the chain starts them again. Each batch's chains are a copy: the next batches do not change them."""
    if how == "merged":
        monkeypatch.setattr(_state_writer, "DIRECT_SNAPSHOT_BYTES", 0)
    w, ckpt, _ = _writer(tmp_path, snapshot_every=4, inline_delta_bytes=60)
    ex = _FakeExecutor()
    returned: list[tuple[dict[str, Any], dict[str, Any]]] = []
    kinds: set[str] = set()
    for i in range(1, 15):
        ex.put(f"k{i % 5}", "v" * (3 * i))
        if i in (6, 11):
            w.adopt(wait=True)  # a merged snapshot is adopted here: the chain is cut
        state = w.write(i * 1000, ex)  # type: ignore[arg-type]
        chain = state["n"]
        kinds.update("inline" if isinstance(e, dict) else "file" for e in chain["deltas"])
        needs, inline = _walked(chain)
        assert w.files() == needs and _state_writer._inline_bytes(w.chains["n"]) == inline
        returned.append((state, copy.deepcopy(state)))
    assert kinds == {"inline", "file"} and w.chains["n"].snapshot is not None
    assert all(state == kept for state, kept in returned)  # later writes did not reach an earlier batch's chains
    snap, deltas = read_chain(ckpt, "msgpack", w.chains["n"].as_data())
    got = dict(snap["set"]) if snap else {}
    for d in deltas:
        got.update(d["set"])
    assert got == ex.state
    w.close()
    ckpt.release()


def test_chain_files_of_key_partitioned_entries() -> None:
    """Partition owners' entries (Ray): their files count, their inline payloads count as inline bytes."""
    c = Chain(snapshot=["state/n/000000000001000.p0of2.e1.snap", None], snapshot_time=1000)
    c.deltas.append((2000, {"t": 2000, "parts": ["state/n/000000000002000.p0of2.e1.delta", {"codec": "msgpack", "data": b"abc"}]}))
    assert c.files() == CommitRecord(0, {"state": {"n": c.as_data()}}).files()
    assert c.files() == {"state/n/000000000001000.p0of2.e1.snap", "state/n/000000000002000.p0of2.e1.delta"}
    c.deltas.append((3000, {"t": 3000, "parts": [None, {"codec": "msgpack", "data": b"de"}]}))
    assert c.inline_bytes() == 5 and len(c.as_data()["deltas"]) == 2
    c.deltas = [d for d in c.deltas if d[0] > 2000]  # a snapshot adopted: a new list
    assert c.inline_bytes() == 2 and c.files() == {"state/n/000000000001000.p0of2.e1.snap"}
