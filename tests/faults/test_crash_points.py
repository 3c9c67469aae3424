"""SIGKILL a real child job at every crash point, recover it with get_or_create, compare.

For every point in ``streamkeep._faults.BATCH_POINTS``, several n, and three modes
(deltas inline or in files, the job's small state snapshotted in its batch; or every
snapshot merged in the background from the delta files, the path of big states: the
only one that reaches the `MERGE_ONLY_POINTS`), the child (`_job.py`: rate, queue and text-file inputs,
update_state_by_key, reduce_by_key_and_window with and without inv_f,
map_with_state with a timeout, FileSinks) is killed the n-th time it reaches the
point, then rerun without a crash to its last batch. Its per-batch sink output (each file's lines, in order)
and its final state must equal an uncrashed run's. The start points (identity,
claim, lease) are hit on a first start and on a restart, the recovery sweep while
it deletes a crash's leftovers. A case fails when the child was not killed by
SIGKILL (the point was never reached): no vacuous passes. Then randomized kills
at arbitrary instants. Kafka points are covered by tests/integration
(test_kafka_redis_e2e.py, test_kafka_sink.py).
"""

from __future__ import annotations

import math
import os
import random
import shutil
import signal
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from _harness import MERGE_ONLY_POINTS, MERGED_ENV, Workdir, diff_results, expect_killed, expect_ok, scratch_tree, sorted_lines

from streamkeep import _faults

pytestmark = [pytest.mark.faults, pytest.mark.slow]

TOTAL = 12  # batches per job: snapshots at 3, 6, 9, 12 (snapshot_every=3); retention with keep_commits=2
NTHS = ("1", "2", "5", "late")
#: How the job keeps its deltas: inline in the commit record (the default cap) or every delta in its
#: own file (inline_delta_bytes=0), so state.mid_write and the torn-write point interrupt delta-file
#: writes of every operator kind (update_state_by_key, both windows, map_with_state); and how it takes
#: snapshots: its state is small, so in the batch (both modes above), or merged in the background from
#: the delta files ("merged": the path of states of DIRECT_SNAPSHOT_BYTES or more).
DELTA_MODES = {"inline": {}, "files": {"JOB_INLINE_DELTA_BYTES": "0"}, "merged": {"JOB_INLINE_DELTA_BYTES": "0", **MERGED_ENV}}


def _points(mode: str) -> list[str]:
    """The crash points a mode reaches: a snapshot taken in its batch reaches no merge-only point."""
    return [p for p in _faults.BATCH_POINTS if mode == "merged" or p not in MERGE_ONLY_POINTS]


_MATRIX = [(p, m) for m in DELTA_MODES for p in _points(m)]


@pytest.fixture(scope="module")
def scratch() -> Iterator[str]:
    with scratch_tree("streamkeep-faults-") as d:
        yield d


@pytest.fixture(scope="module")
def references(scratch: str) -> dict[str, dict[str, Any]]:
    """Per delta mode: output and state of the uncrashed job, how often it reaches each crash point,
    and the delta files it wrote per operator."""
    out = {}
    for mode, env in DELTA_MODES.items():
        w = Workdir.make(os.path.join(scratch, f"reference-{mode}"), extra_env=env)
        counts = w.count_points(TOTAL)
        out[mode] = {"results": w.results(), "counts": counts, "delta_files": _delta_files(w)}
    return out


@pytest.fixture(scope="module")
def reference(references: dict[str, dict[str, Any]]) -> dict[str, Any]:
    return references["inline"]


def _delta_files(w: Workdir) -> dict[str, int]:
    """Delta files left in the checkpoint per operator directory (retention keeps the newest)."""
    state = Path(w.ckpt) / "state"
    return {d.name: sum(1 for f in d.iterdir() if f.suffix == ".delta") for d in state.iterdir()} if state.is_dir() else {}


def _case_dir(scratch: str, name: str, mode: str = "inline") -> Workdir:
    root = os.path.join(scratch, name.replace("/", "_"))
    shutil.rmtree(root, ignore_errors=True)
    return Workdir.make(root, extra_env=DELTA_MODES[mode])


# Reached from the background snapshot thread (the compaction), so where the batch loop is when
# they are reached, and how often (a big snapshot in flight is not waited for), varies from run to run.
TIMING_DEPENDENT = {"snapshot.mid_compact", "snapshot.mid_write", "storage.torn_write"}


def _nth(point: str, spec: str, count: int) -> int:
    if spec != "late":
        return int(spec)
    return max(1, math.ceil(count * (0.4 if point in TIMING_DEPENDENT else 0.75)))


@pytest.mark.parametrize("mode", DELTA_MODES)
def test_every_point_is_reached_by_the_job(mode: str, references: dict[str, dict[str, Any]]) -> None:
    """The job exercises every crash point of its mode often enough for the matrix below; only the merged mode
    merges snapshots (the others take them in their batch), and every point is reached by some mode."""
    counts = references[mode]["counts"]
    missing = {p: counts.get(p, 0) for p in _points(mode) if counts.get(p, 0) < 5}
    assert not missing, f"crash points the job reaches fewer than 5 times: {missing}"
    merges = {p: counts.get(p, 0) for p in MERGE_ONLY_POINTS}
    assert all(merges.values()) if mode == "merged" else not any(merges.values()), merges
    assert {p for m in DELTA_MODES for p in _points(m)} == set(_faults.BATCH_POINTS)


def test_files_mode_writes_delta_files_for_every_operator_kind(references: dict[str, dict[str, Any]]) -> None:
    """In "files" mode every stateful operator keeps delta files (so the matrix interrupts their writes)."""
    files = references["files"]["delta_files"]
    ops = ("totals", "win", "win_plain", "seen", "recent", "by_word")
    assert all(files.get(op, 0) > 0 for op in ops), f"delta files per operator: {files}"
    assert references["files"]["results"] == references["inline"]["results"], "the delta mode changed the job's results"
    assert references["merged"]["results"] == references["inline"]["results"], "merging snapshots changed the job's results"


@pytest.mark.parametrize("nth_spec", NTHS)
@pytest.mark.parametrize(("point", "mode"), _MATRIX, ids=[f"{m}-{p}" for p, m in _MATRIX])
def test_crash_then_recover_equals_uncrashed(
    point: str, nth_spec: str, mode: str, references: dict[str, dict[str, Any]], scratch: str
) -> None:
    reference = references[mode]
    nth = _nth(point, nth_spec, reference["counts"].get(point, 0))
    w = _case_dir(scratch, f"{mode}-{point}@{nth_spec}", mode)
    expect_killed(w.run(TOTAL, crash=(point, nth)), f"crash at {point}@{nth}")
    expect_ok(w.run(TOTAL), f"recovery after {point}@{nth}")
    problems = diff_results(reference["results"], w.results())
    assert not problems, f"after a crash at {point}@{nth}:\n" + "\n".join(problems[:20])
    shutil.rmtree(w.root, ignore_errors=True)


@pytest.mark.parametrize("point", _faults.BATCH_POINTS)
def test_crash_again_during_recovery(point: str, references: dict[str, dict[str, Any]], scratch: str) -> None:
    """Killed at the point, then killed at the same point while recovering, then recovered."""
    mode = "merged" if point in MERGE_ONLY_POINTS else "inline"
    reference = references[mode]
    w = _case_dir(scratch, f"twice-{point}", mode)
    expect_killed(w.run(TOTAL, crash=(point, 2)), f"first crash at {point}@2")
    expect_killed(w.run(TOTAL, crash=(point, 1)), f"second crash at {point}@1")
    expect_ok(w.run(TOTAL), f"recovery after two crashes at {point}")
    problems = diff_results(reference["results"], w.results())
    assert not problems, f"after two crashes at {point}:\n" + "\n".join(problems[:20])
    shutil.rmtree(w.root, ignore_errors=True)


_START_CASES = [(p, "first") for p in _faults.START_POINTS] + [(p, "restart") for p in _faults.START_POINTS if p != "identity.after_write"]


@pytest.mark.parametrize(("point", "when"), _START_CASES, ids=[f"{p}-{w}" for p, w in _START_CASES])
def test_crash_while_starting_then_recover_equals_uncrashed(point: str, when: str, reference: dict[str, Any], scratch: str) -> None:
    """Killed while claiming the checkpoint: on its very first start, or on a restart with state."""
    w = _case_dir(scratch, f"start-{point}-{when}")
    if when == "restart":
        expect_killed(w.run(TOTAL, crash=("commit.after_record", 5)), "first crash at commit.after_record@5")
    expect_killed(w.run(TOTAL, crash=(point, 1)), f"crash at {point} ({when} start)")
    expect_ok(w.run(TOTAL), f"recovery after a crash at {point} ({when} start)")
    problems = diff_results(reference["results"], w.results())
    assert not problems, f"after a crash at {point} ({when} start):\n" + "\n".join(problems[:20])
    shutil.rmtree(w.root, ignore_errors=True)


@pytest.mark.parametrize("point", _faults.RECOVERY_POINTS)
@pytest.mark.parametrize("first", ["commit.before_record", "snapshot.mid_write", "plan.after_write"])
def test_crash_while_sweeping_leftovers_then_recover(point: str, first: str, references: dict[str, dict[str, Any]], scratch: str) -> None:
    """A crash leaves files no commit needs (delta files, a snapshot, a plan's blob); recovery deletes them and
    is killed in the middle of that; the next recovery is still exact."""
    reference = references["files"]
    w = _case_dir(scratch, f"sweep-{point}-{first}", "files")
    expect_killed(w.run(TOTAL, crash=(first, _nth(first, "late", reference["counts"].get(first, 0)))), f"first crash at {first}")
    expect_killed(w.run(TOTAL, crash=(point, 1)), f"crash at {point} while recovering from {first}")
    expect_ok(w.run(TOTAL), f"recovery after a crash at {point}")
    problems = diff_results(reference["results"], w.results())
    assert not problems, f"after a crash at {point} (leftovers of {first}):\n" + "\n".join(problems[:20])
    shutil.rmtree(w.root, ignore_errors=True)


def test_every_crash_point_belongs_to_a_part_of_the_suite() -> None:
    """New points must be added to one group, which says which test reaches them."""
    groups = (
        _faults.BATCH_POINTS,
        _faults.START_POINTS,
        _faults.RECOVERY_POINTS,
        _faults.KAFKA_POINTS,
        _faults.KAFKA_SINK_POINTS,
        _faults.PIPELINE_POINTS,  # test_commit_pipeline.py
        _faults.STOP_POINTS,  # test_stop_snapshot.py
    )
    flat = [p for g in groups for p in g]
    assert sorted(flat) == sorted(_faults.POINTS) and len(set(flat)) == len(flat)


# ---------------------------------------------------------------------------- random kills

RANDOM_TOTAL = 150
RANDOM_ROUNDS = 15
RANDOM_DEADLINE_S = 40.0


def _wait_ready(proc: subprocess.Popen[str], timeout_s: float) -> bool:
    """Wait for the child's READY line (context restored); False if it exited first."""
    got = threading.Event()

    def reader() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            if line.startswith("READY"):
                got.set()
                return

    th = threading.Thread(target=reader, daemon=True)
    th.start()
    th.join(timeout_s)
    return got.is_set()


def test_random_kills(scratch: str) -> None:
    seed = int(os.environ.get("STREAMKEEP_FAULT_SEED", time.time_ns() % 1_000_000))
    rng = random.Random(seed)
    ref = Workdir.make(os.path.join(scratch, "random-reference"))
    r = ref.run(RANDOM_TOTAL)
    expect_ok(r, "random-kill reference")
    expected = ref.results()
    # "DONE startup=S run=R": how long the batch loop of a whole run takes.
    run_s = float(r.stdout.split("run=")[1].split()[0])
    deadline = time.monotonic() + RANDOM_DEADLINE_S
    rounds = kills = sequences = 0
    while rounds < RANDOM_ROUNDS and time.monotonic() < deadline:
        sequences += 1
        w = _case_dir(scratch, f"random-{sequences}")
        while rounds < RANDOM_ROUNDS and time.monotonic() < deadline:
            rounds += 1
            proc = w.start(RANDOM_TOTAL)
            try:
                if rng.random() < 0.25:  # anywhere from process start, recovery included
                    time.sleep(rng.uniform(0.0, 0.4))
                else:
                    _wait_ready(proc, 60)
                    time.sleep(rng.uniform(0.0, run_s / 3))
                if proc.poll() is None:
                    proc.send_signal(signal.SIGKILL)
                    kills += 1
                proc.wait(60)
            finally:
                if proc.poll() is None:
                    proc.kill()
                    proc.wait()
                assert proc.stderr is not None and proc.stdout is not None
                err = proc.stderr.read()
                proc.stdout.close()
                proc.stderr.close()
            assert proc.returncode in (0, -signal.SIGKILL), f"seed {seed}, round {rounds}: exit {proc.returncode}\n{err[-4000:]}"
            if proc.returncode == 0:
                break  # this sequence finished on its own
        expect_ok(w.run(RANDOM_TOTAL), f"seed {seed}: final recovery of sequence {sequences}")
        problems = diff_results(expected, w.results())
        assert not problems, f"seed {seed}, sequence {sequences}:\n" + "\n".join(problems[:20])
        shutil.rmtree(w.root, ignore_errors=True)
    print(f"random kills: seed={seed} rounds={rounds} kills={kills} sequences={sequences}")
    assert kills >= RANDOM_ROUNDS // 2, f"seed {seed}: only {kills} of {rounds} rounds killed a running job"


# -- the same cases on Ray: the child connects to the session's Ray (3 key partitions per operator) --

RAY_CASES = [
    ("run.after_read", "2"),
    ("commit.before_record", "late"),
    ("snapshot.mid_write", "1"),
    ("state.mid_write", "late"),  # some partitions' owners wrote their delta files, no commit names them
]


@pytest.fixture(scope="module")
def ray_env(ray_address: str) -> dict[str, str]:
    return {"JOB_RAY_ADDRESS": ray_address}


@pytest.mark.ray
def test_ray_uncrashed_equals_local(reference: dict[str, Any], ray_env: dict[str, str], scratch: str) -> None:
    """Every operator kind on 3 key partitions gives the local executor's output and state, batch by batch."""
    w = Workdir.make(os.path.join(scratch, "ray-reference"), extra_env=ray_env)
    expect_ok(w.run(TOTAL, timeout_s=240), "the job on Ray")
    problems = diff_results(sorted_lines(reference["results"]), sorted_lines(w.results()))  # the same lines, in partition order
    assert not problems, "Ray vs local:\n" + "\n".join(problems[:20])


@pytest.mark.ray
@pytest.mark.parametrize(("point", "nth_spec"), RAY_CASES, ids=[f"{p}@{n}" for p, n in RAY_CASES])
def test_ray_driver_killed_then_recovered_on_fresh_actors(
    point: str, nth_spec: str, reference: dict[str, Any], ray_env: dict[str, str], scratch: str
) -> None:
    """The driver SIGKILLed at a crash point (its actors die with it); get_or_create on fresh actors ends exact."""
    nth = _nth(point, nth_spec, reference["counts"].get(point, 0))
    w = _case_dir(scratch, f"ray-{point}@{nth_spec}")
    w.extra_env = ray_env
    expect_killed(w.run(TOTAL, crash=(point, nth), timeout_s=240), f"crash at {point}@{nth} on Ray")
    expect_ok(w.run(TOTAL, timeout_s=240), f"recovery on Ray after {point}@{nth}")
    problems = diff_results(sorted_lines(reference["results"]), sorted_lines(w.results()))
    assert not problems, f"Ray, after a crash at {point}@{nth}:\n" + "\n".join(problems[:20])
    shutil.rmtree(w.root, ignore_errors=True)
