"""Snapshots by compaction (issue 14): merge exactness, retention of the inputs, in-place changes, the helper process."""

from __future__ import annotations

import copy
import operator
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import streamkeep as sk
from streamkeep.checkpoint import Checkpoint
from streamkeep.checkpoint import _compact as compaction
from streamkeep.checkpoint._compact import CHUNK_KEYS, decode_payload, encode_pairs, encode_snapshot, merge
from streamkeep.scheduler import _state_writer
from streamkeep.testing import ManualClock, state_of

# ----------------------------------------------------------------------------- merge vs applying deltas

_keys = st.one_of(st.integers(-5, 40), st.text(max_size=3), st.tuples(st.integers(0, 3), st.text(max_size=2)))
_values = st.one_of(st.integers(), st.text(max_size=4), st.lists(st.integers(), max_size=3), st.dictionaries(st.text(max_size=2), st.integers(), max_size=2))
_batch = st.tuples(st.lists(st.tuples(_keys, _values), max_size=8), st.lists(_keys, max_size=4))
_slices = st.tuples(st.lists(st.tuples(st.integers(0, 30), st.lists(st.integers(), max_size=3)), max_size=3), st.lists(st.integers(0, 30), max_size=3))


def _round_trip(data: dict[str, Any], snapshot: bool) -> dict[str, Any]:
    payload = encode_snapshot("msgpack", data) if snapshot else encode_pairs("msgpack", data)
    return decode_payload("msgpack", payload, False, "test")


@settings(max_examples=150, deadline=None)
@given(st.lists(_batch, min_size=1, max_size=12), st.integers(0, 12), st.lists(_slices, min_size=12, max_size=12))
def test_merge_equals_applying_the_deltas_directly(batches: list[Any], split: int, slices: list[Any]) -> None:
    """The live state after every batch, vs the snapshot merged from an earlier snapshot plus the deltas since
    (through the codec, as on storage): same keys, values, order, window slices and newest meta."""
    live: dict[Any, Any] = {}
    windows: dict[int, Any] = {}
    deltas = []
    for i, (sets, dels) in enumerate(batches):
        for k, v in sets:
            live[k] = v
        for k in dels:
            live.pop(k, None)
        add, drop = slices[i]
        for ts, s in add:
            windows[ts] = s
        for ts in drop:
            windows.pop(ts, None)
        deltas.append(_round_trip({"set": sets, "del": dels, "add": [[ts, s] for ts, s in add], "drop": drop, "meta": {"i": i}}, False))
    split = min(split, len(deltas))
    first = encode_snapshot("msgpack", merge(None, deltas[:split])) if split else None
    for columns in (False, True):  # the base as a dict (as a restore reads it) or as columns (as compaction does)
        base = decode_payload("msgpack", first, False, "test", columns=columns) if first is not None else None
        merged = _round_trip(merge(base, deltas[split:]), True)
        assert list(merged["set"].items()) == list(live.items())
        assert merged["add"] == [[ts, s] for ts, s in sorted(windows.items())]
        assert merged["del"] == merged["drop"] == [] and merged["meta"] == {"i": len(batches) - 1}


def test_columnar_snapshots_span_chunks_and_format_2_snapshots_still_load() -> None:
    data = {f"k{i}": [i] for i in range(CHUNK_KEYS * 2 + 5)}
    snap = decode_payload("msgpack", encode_snapshot("msgpack", {"set": data, "del": []}), False, "test")
    assert snap["set"] == data and list(snap["set"]) == list(data)
    old = decode_payload("msgpack", encode_pairs("msgpack", {"set": list(data.items()), "del": []}), False, "test")  # format 2
    assert dict(old["set"]) == data


def test_merge_refuses_data_it_does_not_know() -> None:
    with pytest.raises(ValueError, match="cannot merge state data with keys \\['other'\\]"):
        merge({"set": [], "other": 1}, [])


# ----------------------------------------------------------------------------- jobs with a held compaction


class _Hold:
    """Wraps `compact` in the writer: each compaction waits until released, and its inputs are recorded."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.release = threading.Event()
        self.entered = threading.Event()
        self.jobs: list[tuple[int, list[Any]]] = []
        real = compaction.compact

        def held(ckpt: Any, t: int, jobs: list[Any], **kw: Any) -> Any:
            self.jobs.append((t, copy.deepcopy(jobs)))
            self.entered.set()
            assert self.release.wait(60), "the test never released the compaction"
            return real(ckpt, t, jobs, **kw)

        monkeypatch.setattr(_state_writer, "compact", held)
        monkeypatch.setattr(_state_writer, "DIRECT_SNAPSHOT_BYTES", 0)  # merged, as a big state's snapshot is
        monkeypatch.setattr(_state_writer, "BIG_STATE_BYTES", 0)  # never wait for it: the batches go on
        monkeypatch.setattr(_state_writer, "HELPER_STATE_BYTES", 1 << 60)  # in a thread (so it can be held)


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


def _job(url: str, keep_commits: int = 2) -> sk.StreamingContext:
    ssc = sk.StreamingContext(1.0, checkpoint=url, clock=ManualClock(), snapshot_every=3, keep_commits=keep_commits, inline_delta_bytes=0)
    pairs = ssc.rate_stream(6, name="rate").map(lambda r: (f"w{r[0] % 4}", r[0]))
    pairs.map_with_state(_append, name="lists").foreach_batch(lambda b: None)
    pairs.update_state_by_key(_grow, name="dicts").foreach_batch(lambda b: None)
    pairs.reduce_by_key_and_window(operator.add, 3.0, 1.0, inv_f=operator.sub, name="win").foreach_batch(lambda b: None)
    return ssc


def _norm(data: dict[str, Any]) -> dict[str, Any]:
    """State data with its keyed part as a dict (a restore may order keys differently, as before compaction)."""
    return {k: dict(v) if k == "set" else v for k, v in data.items()}


def _files(url: str) -> set[str]:
    return {p.relative_to(url).as_posix() for p in Path(url).rglob("*") if p.is_file()}


def test_in_place_changes_while_a_snapshot_is_compacted_do_not_reach_it(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """User code changes list and dict states in place for several batches while the snapshot of batch 3 is being
    merged: the snapshot holds the state as of batch 3, and a restart from it is exact."""
    hold = _Hold(monkeypatch)
    url = str(tmp_path / "c")
    ssc = _job(url)
    as_of: dict[int, dict[str, Any]] = {}
    for _ in range(7):
        ssc.run(max_batches=1)
        t = ssc._scheduler.last_time  # type: ignore[union-attr]
        as_of[t] = {op: copy.deepcopy(state_of(ssc, op)) for op in ("lists", "dicts")}
    assert hold.entered.wait(30) and len(hold.jobs) == 1  # started at batch 3, still held at batch 7
    snap_t = hold.jobs[0][0]
    hold.release.set()
    ssc._scheduler.writer.adopt(wait=True)  # type: ignore[union-attr]
    ck = Checkpoint(url)
    for op in ("lists", "dicts"):
        rel = f"state/{op}/{snap_t:015d}.snap"
        snap = decode_payload(*ck.read_state(rel, False), False, rel)
        assert dict(snap["set"]) == dict(as_of[snap_t][op]["set"]), op
        assert dict(snap["set"]) != dict(as_of[max(as_of)][op]["set"]), op  # the later in-place changes are not in it
    ssc.run(max_batches=2)  # commits that use the snapshot
    final = {op: _norm(state_of(ssc, op)) for op in ("lists", "dicts", "win")}
    ssc.stop()
    again = sk.StreamingContext.get_or_create(url, lambda: _job(url))
    assert again.restored
    assert {op: _norm(state_of(again, op)) for op in final} == final
    again.stop()


def test_a_snapshot_being_compacted_keeps_its_inputs_until_commits_use_it(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Retention deletes none of a compaction's inputs (previous snapshot, delta files) while it runs, nor until the
    commits that still name them fall out of the kept ones; then they go."""
    hold = _Hold(monkeypatch)
    url = str(tmp_path / "c")
    ssc = _job(url)
    ssc.run(max_batches=3)  # no snapshot yet: batch 3 starts the first
    hold.release.set()
    ssc._scheduler.writer.adopt(wait=True)  # type: ignore[union-attr]
    hold.release.clear()
    hold.entered.clear()
    ssc.run(max_batches=3)  # batch 6 starts the second snapshot, from the first one and the deltas since
    assert hold.entered.wait(30) and len(hold.jobs) == 2
    t, jobs = hold.jobs[1]
    inputs = {r for _, _, chain in jobs for r in [chain["snapshot"], *chain["deltas"]] if isinstance(r, str)}
    assert any(r.endswith(".snap") for r in inputs) and any(r.endswith(".delta") for r in inputs)
    for _ in range(6):  # held: the batches go on, retention runs at each commit
        ssc.run(max_batches=1)
        assert inputs <= _files(url), inputs - _files(url)
    hold.release.set()
    th = ssc._scheduler.writer._thread  # type: ignore[union-attr]
    assert th is not None
    th.join(30)
    ssc.run(max_batches=1)  # adopts the snapshot of batch t
    newest = Checkpoint(url).commits()[0].data["state"]
    assert all(chain["snapshot"] == f"state/{op}/{t:015d}.snap" for op, chain in newest.items())
    assert inputs <= _files(url)  # the previous commit still names them (keep_commits=2)
    ssc.run(max_batches=2)
    assert not inputs & _files(url), inputs & _files(url)  # no kept commit names them any more
    ssc.stop()


def test_big_states_are_merged_by_a_helper_process(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_state_writer, "BIG_STATE_BYTES", 0)
    monkeypatch.setattr(_state_writer, "HELPER_STATE_BYTES", 0)
    monkeypatch.setattr(_state_writer, "DIRECT_SNAPSHOT_BYTES", 0)
    spawned: list[Any] = []
    real = _state_writer._run_helper
    monkeypatch.setattr(_state_writer, "_run_helper", lambda *a: spawned.append(a[1]) or real(*a))
    url = str(tmp_path / "c")
    ssc = _job(url)
    as_of = {}
    for _ in range(4):
        ssc.run(max_batches=1)
        as_of[ssc._scheduler.last_time] = copy.deepcopy(state_of(ssc, "dicts"))  # type: ignore[union-attr]
    ssc._scheduler.writer.adopt(wait=True)  # type: ignore[union-attr]
    assert len(spawned) == 1
    rel = f"state/dicts/{spawned[0]:015d}.snap"
    snap = decode_payload(*Checkpoint(url).read_state(rel, False), False, rel)
    assert dict(snap["set"]) == dict(as_of[spawned[0]]["set"])
    ssc.run(max_batches=1)
    final = _norm(state_of(ssc, "dicts"))
    ssc.stop()
    again = sk.StreamingContext.get_or_create(url, lambda: _job(url))
    assert _norm(state_of(again, "dicts")) == final
    again.stop()


_GRANDCHILD = """
import os, sys, time
sys.path.insert(0, {root!r})
from streamkeep.checkpoint._compact import _die_with_parent
_die_with_parent(os.getppid())
print("ready", flush=True)
time.sleep(60)
"""
_CHILD = """
import subprocess, sys, time
p = subprocess.Popen([sys.executable, "-c", {code!r}], stdout=subprocess.PIPE, text=True)
assert p.stdout.readline().strip() == "ready"
print(p.pid, flush=True)
time.sleep(60)
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the kernel's parent-death signal is Linux only")
def test_a_helper_dies_with_the_driver_it_works_for() -> None:
    """A helper must not outlive a SIGKILLed driver (it would go on writing into a checkpoint someone else owns)."""
    root = str(Path(compaction.__file__).parents[2])
    child = subprocess.Popen([sys.executable, "-c", _CHILD.format(code=_GRANDCHILD.format(root=root))], stdout=subprocess.PIPE, text=True)
    try:
        assert child.stdout is not None
        helper = int(child.stdout.readline())
        child.send_signal(signal.SIGKILL)
        child.wait(10)
        deadline = time.monotonic() + 10
        while _alive(helper) and time.monotonic() < deadline:
            time.sleep(0.02)
        assert not _alive(helper), "the helper outlived its parent"
    finally:
        child.kill()
        child.wait(10)
        if child.stdout is not None:
            child.stdout.close()


def _alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"  # a zombie (not yet reaped by init) is dead


def test_a_failed_helper_falls_back_to_merging_in_the_driver(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    monkeypatch.setattr(_state_writer, "HELPER_STATE_BYTES", 0)
    monkeypatch.setattr(_state_writer, "DIRECT_SNAPSHOT_BYTES", 0)
    monkeypatch.setattr(_state_writer.sys, "executable", str(tmp_path / "no-such-python"))
    url = str(tmp_path / "c")
    ssc = _job(url)
    ssc.run(max_batches=3)
    ssc._scheduler.writer.adopt(wait=True)  # type: ignore[union-attr]
    assert "could not start a helper process to merge the snapshot of batch 3000 ms" in caplog.text
    newest = ssc._scheduler.writer.chains  # type: ignore[union-attr]
    assert all(c.snapshot == f"state/{op}/{3000:015d}.snap" for op, c in newest.items())
    ssc.stop()
