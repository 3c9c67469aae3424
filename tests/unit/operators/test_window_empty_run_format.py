"""A window's empty runs are format 7, and only the files holding one: older streamkeeps refuse them.

An empty run (``{"empty": partitions, "every": ms, "until": T|None}`` in a slice's place) is a
value that a streamkeep reading only versions 1 to 6 would take for a slice of partitions (it
would iterate the map's keys). So the state files holding one and the commit records inlining
such a delta are format 7 (`EMPTY_RUN_VERSION`), which such a reader refuses at start, naming
the file and its version; every other file keeps its version, so a checkpoint without empty
runs stays readable by it. Since format 8 every commit record names its graph file instead of holding
the graph, so it is version 8 whatever it inlines (above 7: a reader of 1 to 7 refuses it anyway); the
reader these tests stand for then reads 8 too, which isolates the version-7 mark of the state files.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

import streamkeep as sk
from streamkeep.checkpoint import _format
from streamkeep.checkpoint._compact import decode_payload
from streamkeep.checkpoint._format import EMPTY_RUN_VERSION, GRAPH_REF_VERSION, MAGIC, read_frame
from streamkeep.codec import get_codec
from streamkeep.errors import CorruptCheckpointError
from streamkeep.scheduler import _state_writer
from streamkeep.testing import ManualClock

#: Records per batch: a run of empty batches (2000..8000) that leaves the 5 s window at 13000, then records
#: in every batch, then another run lasting to the end.
RUNS: list[list[Any]] = [[("a", 1)], *[[]] * 7, *[[("b", i)] for i in range(12)], *[[]] * 6]
#: The same number of batches, each with a record: no empty run ever.
FULL: list[list[Any]] = [[("a", i)] for i in range(len(RUNS))]

def _not_in_this_process(*args: Any, **kwargs: Any) -> Any:
    msg = "the snapshot was to be merged by the helper process, not in the driver"
    raise AssertionError(msg)


#: How each way of writing the window's state is reached: (StreamingContext options, StateWriter attributes).
MODES: dict[str, tuple[dict[str, Any], dict[str, Any]]] = {
    "inline deltas": ({}, {}),
    "delta files": ({"inline_delta_bytes": 0}, {}),
    "snapshots taken in the batch loop": ({"snapshot_every": 3}, {}),
    "merged snapshots": ({"snapshot_every": 3}, {"DIRECT_SNAPSHOT_BYTES": 0}),
    "merged by the helper process": ({"snapshot_every": 3, "inline_delta_bytes": 0}, {"DIRECT_SNAPSHOT_BYTES": 0, "HELPER_STATE_BYTES": 0, "compact": _not_in_this_process}),
}


def _setup(ckpt: str, schedule: list[list[Any]], seen: list[Any], options: dict[str, Any]) -> Callable[[], sk.StreamingContext]:
    def setup() -> sk.StreamingContext:
        ssc = sk.StreamingContext(1.0, checkpoint=ckpt, clock=ManualClock(), **options)
        q = ssc.queue_stream(schedule, name="q", default=[])
        q.update_state_by_key(lambda new, old: (old or 0) + sum(new), name="total").foreach_batch(lambda b: None)
        q.window(5.0, 1.0, name="win").foreach_batch(lambda b: seen.append(sorted(b.collect())))
        q.reduce_by_key_and_window(lambda a, b: a + b, 5.0, 1.0, name="rwin").foreach_batch(lambda b: None)
        return ssc

    return setup


def _run(ckpt: str, schedule: list[list[Any]], batches: int, options: dict[str, Any] | None = None) -> list[Any]:
    seen: list[Any] = []
    ssc = sk.StreamingContext.get_or_create(ckpt, _setup(ckpt, schedule, seen, options or {}))
    try:
        ssc.run(max_batches=batches)
    finally:
        ssc.stop()
    return seen


def _holds_run(data: dict[str, Any]) -> bool:
    """Does a `window`'s state data hold an empty run (a map where its slices are lists of partitions)?"""
    return any(isinstance(s, dict) for _, s in data.get("add", ()))


def _inlines_run(record: dict[str, Any]) -> bool:
    """Does a commit record inline a delta of the window holding an empty run?"""
    chain = record.get("state", {}).get("win", {})
    return any(
        isinstance(d, dict) and _holds_run(decode_payload(d["codec"], d["data"], False, "inline delta"))
        for d in chain.get("deltas", ())
    )


def _versions(ckpt: str) -> dict[str, tuple[int, bool | None]]:
    """Every framed file of the checkpoint -> (its version, does it hold an empty run; None: not a window file)."""
    out: dict[str, tuple[int, bool | None]] = {}
    for root, _, names in os.walk(ckpt):
        for n in names:
            path = os.path.join(root, n)
            rel = os.path.relpath(path, ckpt)
            data = Path(path).read_bytes()
            if not data.startswith(MAGIC):
                continue
            version = data[4]
            holds: bool | None = None
            if rel.startswith(("state/win/", "log/")):
                f = read_frame(path, data, None, rel)
                value = get_codec(f.codec).decode(f.payload)
                if rel.startswith("log/"):
                    holds = value.get("type") == "commit" and _inlines_run(value)
                else:
                    holds = _holds_run(decode_payload(f.codec, f.payload, False, rel))
            out[rel] = (version, holds)
    return out


@pytest.mark.parametrize("mode", MODES)
def test_only_the_files_holding_an_empty_run_are_format_7(mode: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    options, consts = MODES[mode]
    for name, value in consts.items():
        monkeypatch.setattr(_state_writer, name, value)
    ckpt = str(tmp_path / "runs")
    _run(ckpt, RUNS, len(RUNS), options)
    files = _versions(ckpt)
    sevens = sorted(rel for rel, (v, _) in files.items() if v == EMPTY_RUN_VERSION)
    assert sevens or mode == "inline deltas", files  # the job held runs: some state file says so
    assert any(holds for _, holds in files.values()), files
    for rel, (version, holds) in files.items():
        if rel.startswith(("log/", "graphs/")) and version == GRAPH_REF_VERSION:
            continue  # a commit record naming its graph file (format 8, above 7 whatever it inlines), or that file
        if holds is None:
            assert version < EMPTY_RUN_VERSION, (rel, version)  # the other operators' files, plans, identity
        else:
            assert (version == EMPTY_RUN_VERSION) == holds, (rel, version, holds)
    if mode != "inline deltas":  # where state files are written, the window's include format-7 ones
        assert any(rel.startswith("state/win/") for rel in sevens), sevens

    full = str(tmp_path / "full")
    _run(full, FULL, len(FULL), options)
    assert not [rel for rel, (v, _) in _versions(full).items() if v == EMPTY_RUN_VERSION]


def test_a_snapshot_merged_after_the_runs_left_the_window_is_not_format_7(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # The merge keeps the mark only while a run is still among the slices: batches 9000..20000 have records.
    monkeypatch.setattr(_state_writer, "DIRECT_SNAPSHOT_BYTES", 0)
    ckpt = str(tmp_path / "c")

    def newest_snapshot() -> tuple[str, int]:
        snaps = sorted((rel, v) for rel, (v, _) in _versions(ckpt).items() if rel.startswith("state/win/") and rel.endswith(".snap"))
        return snaps[-1]

    _run(ckpt, RUNS, 6, {"snapshot_every": 3})
    assert newest_snapshot() == ("state/win/000000000006000.snap", EMPTY_RUN_VERSION)  # holds the run of 2000
    _run(ckpt, RUNS, 14, {"snapshot_every": 3})
    rel, version = newest_snapshot()
    assert rel > "state/win/000000000013000.snap" and version == _format.PLAIN_VERSION, (rel, version)  # the run left at 13000


@pytest.mark.parametrize("mode", ["inline deltas", "delta files", "merged snapshots"])
def test_an_older_reader_refuses_a_checkpoint_with_an_empty_run_by_its_version(mode: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    options, consts = MODES[mode]
    with monkeypatch.context() as m:
        for name, value in consts.items():
            m.setattr(_state_writer, name, value)
        ckpt = str(tmp_path / "runs")
        _run(ckpt, RUNS, 6, options)  # stopped while the run of 2000 lasts
        full = str(tmp_path / "full")
        _run(full, FULL, 6, options)
    monkeypatch.setattr(_format, "READABLE_VERSIONS", (1, 2, 3, 4, 5, 6))  # what streamkeep 0.x before format 7 read
    for url in (ckpt, full):  # commit records naming their graph file are format 8: refused whatever they hold
        with pytest.raises(CorruptCheckpointError, match=r"has format version 8; this streamkeep reads versions 1, 2, 3, 4, 5, 6\. Use"):
            _run(url, RUNS, 1, options)
    # The same reader if it read graph files (8): refuses the empty run by its state files' version (inline deltas
    # holding one only ever made their commit record format 7, now 8 anyway).
    monkeypatch.setattr(_format, "READABLE_VERSIONS", (1, 2, 3, 4, 5, 6, 8))
    # Without an empty run the same reader continues the job (no file of it is format 7).
    assert _run(full, FULL, 2, options) == [sorted(("a", i) for i in range(2, 7)), sorted(("a", i) for i in range(3, 8))]
    if mode != "inline deltas":
        with pytest.raises(CorruptCheckpointError, match=r"has format version 7; this streamkeep reads versions 1, 2, 3, 4, 5, 6, 8\. Use the streamkeep release"):
            _run(ckpt, RUNS, 1, options)


def test_the_reader_of_format_7_continues_the_windows_over_the_runs(tmp_path: Path) -> None:
    ckpt = str(tmp_path / "c")
    first = _run(ckpt, RUNS, 6)
    rest = _run(ckpt, RUNS, len(RUNS) - 6)
    assert first + rest == _run(str(tmp_path / "once"), RUNS, len(RUNS))
