"""Small states are snapshotted in their batch (issue 14.1, the 10k-key row): no background merge to wait for.

A state under `DIRECT_SNAPSHOT_BYTES` is encoded from the live state when its snapshot is due and
its file written with that batch's commit record, which names it. The next batch no longer waits
for a merge of the files (the 10k-key row of bench/checkpoint.py: p99 5.4x the median). These
tests check what a user relies on: nothing is merged, the commit names the snapshot of its own
batch, values changed in place by later batches do not reach it (even while its file is still
being written), retention drops what no commit needs, and a restart is exact.
"""

from __future__ import annotations

import copy
import operator
import threading
from pathlib import Path
from typing import Any

import pytest

import streamkeep as sk
from streamkeep.checkpoint import Checkpoint
from streamkeep.checkpoint._compact import decode_payload
from streamkeep.scheduler import _state_writer
from streamkeep.testing import ManualClock, state_of


def _append(word: str, n: int, state: sk.State) -> int:
    if not state.exists():
        state.update([n])
        return 1
    seen = state.get()
    seen.append(n)  # changed in place, never update()d: the engine must still persist it
    return len(seen)


def _grow(values: list[int], old: dict[str, Any] | None) -> dict[str, Any]:
    d = old if old is not None else {"n": 0, "xs": []}
    d["n"] += sum(values)  # the old dict itself, changed in place and returned
    d["xs"].extend(values)
    return d


def _job(url: str, inline_delta_bytes: int = 0) -> sk.StreamingContext:
    ssc = sk.StreamingContext(1.0, checkpoint=url, clock=ManualClock(), snapshot_every=3, keep_commits=2, inline_delta_bytes=inline_delta_bytes)
    pairs = ssc.rate_stream(6, name="rate").map(lambda r: (f"w{r[0] % 4}", r[0]))
    pairs.map_with_state(_append, name="lists").foreach_batch(lambda b: None)
    pairs.update_state_by_key(_grow, name="dicts").foreach_batch(lambda b: None)
    pairs.reduce_by_key_and_window(operator.add, 3.0, 1.0, inv_f=operator.sub, name="win").foreach_batch(lambda b: None)
    return ssc


def _norm(data: dict[str, Any]) -> dict[str, Any]:
    return {k: dict(v) if k == "set" else v for k, v in data.items()}


def _count_merges(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """The batch times of the snapshots merged in the background from now on (each merge still runs)."""
    merged: list[int] = []
    real = _state_writer.compact

    def counting(ckpt: Any, t: int, jobs: list[Any], **kw: Any) -> Any:
        merged.append(t)
        return real(ckpt, t, jobs, **kw)

    monkeypatch.setattr(_state_writer, "compact", counting)
    return merged


@pytest.fixture
def no_merges(monkeypatch: pytest.MonkeyPatch) -> None:
    """A merge fails the job (the next batch raises it): these small states must never need one."""

    def refused(*_: Any, **__: Any) -> Any:
        raise AssertionError("a small state's snapshot was merged in the background")

    monkeypatch.setattr(_state_writer, "compact", refused)


@pytest.mark.usefixtures("no_merges")
@pytest.mark.parametrize("inline_delta_bytes", [0, 4096], ids=["delta_files", "inline_deltas"])
def test_a_small_state_is_snapshotted_in_its_batch_and_its_commit_names_it(tmp_path: Path, inline_delta_bytes: int) -> None:
    url = str(tmp_path / "c")
    ssc = _job(url, inline_delta_bytes)
    ssc.run(max_batches=7)
    writer = ssc._scheduler.writer  # type: ignore[union-attr]
    assert writer is not None and writer._thread is None  # nothing in the background, before the stop too
    final = {op: _norm(state_of(ssc, op)) for op in ("lists", "dicts", "win")}
    ssc.stop()
    newest, older = (c.data for c in Checkpoint(url).commits()[:2])
    assert newest["batch_time"] == 7000 and older["batch_time"] == 6000
    for op in ("lists", "dicts", "win"):
        # batch 6's own commit names its snapshot, with no delta of batch 6; batch 7 adds one delta
        assert older["state"][op]["snapshot"] == f"state/{op}/000000000006000.snap" and older["state"][op]["deltas"] == []
        assert newest["state"][op]["snapshot"] == f"state/{op}/000000000006000.snap" and len(newest["state"][op]["deltas"]) == 1
    files = sorted(p.relative_to(url).as_posix() for p in Path(url, "state").rglob("*") if p.is_file())
    assert not any("6000.delta" in f for f in files), files  # the snapshot replaced batch 6's deltas
    assert not any("3000.snap" in f or "5000.delta" in f for f in files), files  # no kept commit names them: deleted
    again = sk.StreamingContext.get_or_create(url, lambda: _job(url, inline_delta_bytes))
    assert again.restored
    assert {op: _norm(state_of(again, op)) for op in final} == final
    again.run(max_batches=2)
    after = {op: _norm(state_of(again, op)) for op in final}
    again.stop()
    ref = _job(str(tmp_path / "ref"), inline_delta_bytes)  # the same 9 batches, never restarted
    ref.run(max_batches=9)
    assert {op: _norm(state_of(ref, op)) for op in final} == after
    ref.stop()


@pytest.mark.usefixtures("no_merges")
def test_in_place_changes_after_its_batch_do_not_reach_a_snapshot_still_being_written(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The committer writes batch 3's snapshot file only after batch 4 changed the list and dict states in place:
    the file holds the state as of batch 3 (it was encoded in batch 3)."""
    held = threading.Event()
    release = threading.Event()
    real = Checkpoint.write_state

    def write_state(self: Checkpoint, op: str, t: int, kind: str, payload: bytes, codec: str, *version: int) -> str:
        if kind == "snap" and t == 3000:
            held.set()
            assert release.wait(60), "the test never released the snapshot's write"
        return real(self, op, t, kind, payload, codec, *version)

    monkeypatch.setattr(Checkpoint, "write_state", write_state)
    url = str(tmp_path / "c")
    ssc = _job(url)
    as_of: dict[int, dict[str, Any]] = {}
    ssc.run(max_batches=2)
    for _ in range(2):  # batches 3 and 4 run back to back, as in a job: batch 3's commit is still in flight
        t = ssc._scheduler.run_next()  # type: ignore[union-attr]
        as_of[t] = {op: copy.deepcopy(state_of(ssc, op)) for op in ("lists", "dicts")}
    assert held.wait(30)  # batch 4 ran (changing values in place) while batch 3's snapshot file is not written
    assert as_of[4000] != as_of[3000]
    release.set()
    ssc.stop()
    ck = Checkpoint(url)
    for op in ("lists", "dicts"):
        rel = f"state/{op}/000000000003000.snap"
        snap = decode_payload(*ck.read_state(rel, False), False, rel)
        assert dict(snap["set"]) == dict(as_of[3000][op]["set"]), op
    again = sk.StreamingContext.get_or_create(url, lambda: _job(url))
    assert {op: dict(state_of(again, op)["set"]) for op in ("lists", "dicts")} == {op: dict(as_of[4000][op]["set"]) for op in ("lists", "dicts")}
    again.stop()


def test_a_bigger_state_is_still_merged_in_the_background(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """From DIRECT_SNAPSHOT_BYTES of state the batch loop copies nothing: the snapshot is merged from storage."""
    monkeypatch.setattr(_state_writer, "DIRECT_SNAPSHOT_BYTES", 1)
    merged = _count_merges(monkeypatch)
    url = str(tmp_path / "c")
    ssc = _job(url)
    ssc.run(max_batches=7)
    final = {op: _norm(state_of(ssc, op)) for op in ("lists", "dicts", "win")}
    ssc.stop()
    assert merged == [3000, 6000]
    again = sk.StreamingContext.get_or_create(url, lambda: _job(url))
    assert {op: _norm(state_of(again, op)) for op in final} == final
    again.stop()


def test_a_restart_counts_the_restored_deltas_so_a_state_without_a_snapshot_yet_is_sized_right(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """After a restart the chain's deltas (no snapshot yet) count towards the state's size: a state that
    big is merged in the background, not encoded whole in the batch loop (it looked as small as one delta)."""
    url = str(tmp_path / "c")
    ssc = _job(url)
    ssc.run(max_batches=2)  # deltas only: the snapshot is due at the third batch
    ssc.stop()
    deltas = sum(p.stat().st_size for p in (tmp_path / "c" / "state").rglob("*") if p.is_file())
    assert deltas > 0
    monkeypatch.setattr(_state_writer, "DIRECT_SNAPSHOT_BYTES", deltas)  # the two deltas alone reach it
    merged = _count_merges(monkeypatch)
    again = sk.StreamingContext.get_or_create(url, lambda: _job(url))
    again.run(max_batches=1)
    final = {op: _norm(state_of(again, op)) for op in ("lists", "dicts", "win")}
    again.stop()
    assert merged == [3000]
    third = sk.StreamingContext.get_or_create(url, lambda: _job(url))
    assert {op: _norm(state_of(third, op)) for op in final} == final
    third.stop()
