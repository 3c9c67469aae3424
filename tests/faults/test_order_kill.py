"""SIGKILL a chain of stateful operators: every file its sinks wrote is byte-identical to an uncrashed run's.

The child (`_order_job.py`: map_with_state with a timeout -> update_state_by_key ->
reduce_by_key_and_window with inv_f and filter_f, state_snapshots, a window; FileSinks and
save_as_text_files) is killed the n-th time it reaches a crash point, then rerun without a
crash to its last batch. Each run has its own PYTHONHASHSEED, so a set of string keys
iterates in another order in each process, as after a real crash. Every output file --
batches written before the kill, the batch replayed after it, and the later ones computed
from restored state -- must hold the same bytes as the uncrashed run's: the same lines, in
the same order (not sorted), as restored state iterates its keys in the uncrashed order.
A case fails when the child was not killed by SIGKILL (no vacuous passes).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from _harness import MERGED_ENV, expect_killed, expect_ok, scratch_tree

from streamkeep import _faults

pytestmark = [pytest.mark.faults, pytest.mark.slow]

JOB = Path(__file__).with_name("_order_job.py")
TOTAL = 10  # snapshots at 3, 6, 9 (snapshot_every=3)
MODES = {"inline": {}, "files": {"JOB_INLINE_DELTA_BYTES": "0"}, "merged": {"JOB_INLINE_DELTA_BYTES": "0", **MERGED_ENV}}
#: (point, n-th time reached, mode): each kill comes after a delta follows the last snapshot (a snapshot of this
#: small state is taken from the live state, in its batch: a restore from it alone keeps the order anyway). A
#: sink's points are reached once per sink and batch, mid-write once per operator with a delta, a merged
#: snapshot's compaction once per snapshot.
CASES = [
    ("run.after_read", 7, "inline"),
    ("sink.after_write", 28, "inline"),
    ("sink.after_write", 45, "files"),
    ("state.mid_write", 23, "files"),
    ("state.after_write", 8, "inline"),
    ("commit.before_record", 8, "files"),
    ("commit.after_record", 5, "inline"),
    ("snapshot.mid_compact", 2, "merged"),
]


def _run(root: Path, mode: str, seed: int, crash: tuple[str, int] | None = None) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != _faults.ENV_VAR}
    env.update(MODES[mode])
    env["PYTHONHASHSEED"] = str(seed)  # each process iterates a set of strings in its own order
    if crash is not None:
        env[_faults.ENV_VAR] = f"{crash[0]}@{crash[1]}"
    argv = [sys.executable, str(JOB), str(root / "ckpt"), str(root / "out"), str(TOTAL)]
    return subprocess.run(argv, env=env, capture_output=True, text=True, timeout=120)


def _files(root: Path) -> dict[str, bytes]:
    """Every file the job's sinks wrote (hidden ones aside), by path: its bytes."""
    out = root / "out"
    return {
        str(p.relative_to(out)): p.read_bytes()
        for p in sorted(out.rglob("*"))
        if p.is_file() and not any(s.startswith(".") for s in p.relative_to(out).parts)
    }


@pytest.fixture(scope="module")
def scratch() -> Iterator[str]:
    with scratch_tree("streamkeep-order-") as d:
        yield d


@pytest.fixture(scope="module")
def references(scratch: str) -> dict[str, dict[str, bytes]]:
    refs = {}
    for mode in MODES:
        root = Path(scratch) / f"reference-{mode}"
        expect_ok(_run(root, mode, seed=1), f"reference run ({mode})")
        refs[mode] = _files(root)
    return refs


def test_the_references_do_not_depend_on_the_mode(references: dict[str, dict[str, bytes]]) -> None:
    assert references["inline"] == references["files"] == references["merged"]
    assert len(references["inline"]) >= 5 * TOTAL - 2  # the windows start late


@pytest.mark.parametrize(("point", "nth", "mode"), CASES, ids=[f"{p}@{n}-{m}" for p, n, m in CASES])
def test_every_output_file_is_byte_identical_after_a_kill(point: str, nth: int, mode: str, scratch: str, references: dict[str, dict[str, bytes]]) -> None:
    root = Path(scratch) / f"{point}-{nth}-{mode}"
    shutil.rmtree(root, ignore_errors=True)
    expect_killed(_run(root, mode, seed=2, crash=(point, nth)), f"{point}@{nth} ({mode})")
    expect_ok(_run(root, mode, seed=3), f"resume after {point}@{nth} ({mode})")
    got, expected = _files(root), references[mode]
    assert sorted(got) == sorted(expected)
    differ = [name for name in expected if got[name] != expected[name]]
    assert not differ, "\n".join(f"{n}:\n  expected {expected[n]!r}\n  got      {got[n]!r}" for n in differ[:3])
