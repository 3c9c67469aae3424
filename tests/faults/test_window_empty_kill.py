"""SIGKILL a windowed job during and after runs of empty batches: the recovered job ends exact.

Consecutive empty batches are one empty run in a `window`'s state, and nothing in a
`reduce_by_key_and_window`'s (tests/unit/operators/test_window_empty_batches.py). The
child (`_window_empty_job.py`) is killed at a crash point the n-th time it reaches it --
inside a run of empty batches, at the batch with records that ends it, and later -- then
rerun without a crash to its last batch. Every file it wrote (plain windows one file per
partition, so their partition layout counts; keyed windows one file per batch) and its
final state must equal an uncrashed run's.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from _harness import diff_results, expect_killed, expect_ok, scratch_tree

from streamkeep import _faults

pytestmark = [pytest.mark.faults, pytest.mark.slow]

JOB = Path(__file__).with_name("_window_empty_job.py")
TOTAL = 20  # records at batches 1-3, 12 and 17; empty runs 4-11, 13-16, 18-20
#: Reached once per batch: the n-th time is batch n (8: inside the first run; 12: the batch ending it).
CASES = [(p, n) for p in ("run.after_read", "state.after_write", "commit.before_record", "commit.after_record") for n in (6, 12, 15)]
MODES = {"inline": {}, "files": {"JOB_INLINE_DELTA_BYTES": "0"}}


def _run(root: Path, env_extra: dict[str, str], crash: tuple[str, int] | None = None) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != _faults.ENV_VAR}
    env.update(env_extra)
    if crash is not None:
        env[_faults.ENV_VAR] = f"{crash[0]}@{crash[1]}"
    argv = [sys.executable, str(JOB), str(root / "ckpt"), str(root / "out"), str(TOTAL)]
    return subprocess.run(argv, env=env, capture_output=True, text=True, timeout=120)


def _results(root: Path) -> dict[str, Any]:
    """Every file the job wrote (hidden ones aside), by path, exactly (a restored keyed window emits its keys in
    the uncrashed run's order); the final state with its keys sorted."""
    out = root / "out"
    got: dict[str, Any] = {}
    for p in sorted(out.rglob("*")):
        rel = p.relative_to(out)
        if p.is_file() and not any(s.startswith(".") for s in rel.parts):
            if str(rel) == "state.json":  # keyed values in key order
                state = json.loads(p.read_text())
                got["state.json"] = {op: {**d, "set": sorted(d.get("set", []), key=repr)} for op, d in state.items()}
            else:
                got[str(rel)] = p.read_text()
    return got


@pytest.fixture(scope="module")
def scratch() -> Iterator[str]:
    with scratch_tree("streamkeep-window-empty-") as d:
        yield d


@pytest.fixture(scope="module")
def references(scratch: str) -> dict[str, dict[str, Any]]:
    out = {}
    for mode, env in MODES.items():
        root = Path(scratch) / f"reference-{mode}"
        expect_ok(_run(root, env), f"uncrashed run ({mode})")
        out[mode] = _results(root)
    return out


def test_the_reference_run_writes_every_window(references: dict[str, dict[str, Any]]) -> None:
    got = references["inline"]
    assert references["files"] == got  # where deltas go does not change what is written
    # w3: window(5 s) of 3 partitions a batch: at 10000 only empty batches (6000-10000), 15 empty part files
    parts = [name for name in got if name.startswith("w3-10000/part-")]
    assert len(parts) == 15 and all(got[name] == "" for name in parts)
    assert got["w3-13000/part-00000"] == "" and "('b', 5)" in "".join(got[n] for n in got if n.startswith("w3-13000/part-"))


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize(("point", "nth"), CASES)
def test_killed_inside_or_after_a_run_of_empty_batches_then_recovered_equals_uncrashed(
    point: str, nth: int, mode: str, references: dict[str, dict[str, Any]], scratch: str
) -> None:
    root = Path(scratch) / f"{mode}-{point}-{nth}"
    shutil.rmtree(root, ignore_errors=True)
    expect_killed(_run(root, MODES[mode], (point, nth)), f"{point}@{nth} ({mode})")
    expect_ok(_run(root, MODES[mode]), f"recovery after {point}@{nth} ({mode})")
    problems = diff_results(references[mode], _results(root))
    assert not problems, "\n".join(problems[:20])
