"""Delete, truncate and swap whole checkpoint files, one at a time, then restart.

A job with several commits, snapshots, delta files, queue blobs and a pending
(planned, uncommitted) batch leaves a checkpoint. For every file of it, a copy of
the checkpoint gets that one file deleted, truncated to half, or overwritten by
another valid file of the same kind (a plan by another plan, a snapshot by
another snapshot, a log record by another record...). Then the job restarts with
`get_or_create` and runs to its last batch. The outcome must be exactly the
output of a run that was never damaged, or a loud `CheckpointError` naming what
is wrong -- never a silently different result.

Runs in-process (no child is killed: the damage is done between runs) and takes
about 20 s. Two starting points: a job that crashed in a batch (a plan and a blob
pending), and one restarted after a clean stop (recovery's sweep ran, and the log ends
with the restart's claim).
"""

from __future__ import annotations

import operator
import shutil
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

import streamkeep as sk
from streamkeep.errors import CheckpointError, StreamkeepWarning
from streamkeep.testing import ListSink, ManualClock

pytestmark = [pytest.mark.faults, pytest.mark.slow]

TOTAL = 11  # batches; the damaged checkpoint has commits up to 8 and a planned batch 9
QUEUE = [[f"w{i % 4}", f"x{i % 3}"] for i in range(TOTAL + 2)]


def _count(values: list[int], old: int | None) -> int | None:
    total = (old or 0) + sum(values)
    return None if total % 7 == 0 else total  # keys come and go: removals live in deltas


class Boom(Exception):
    pass


def _job(url: str, sinks: dict[str, ListSink], fail_at: int | None = None, now_ms: int = 0) -> Callable[[], sk.StreamingContext]:
    def setup() -> sk.StreamingContext:
        clock = ManualClock(now_ms)
        ssc = sk.StreamingContext(1.0, checkpoint=url, clock=clock, snapshot_every=3, keep_commits=2, inline_delta_bytes=0)
        rows = ssc.rate_stream(5, name="rate").map(lambda r: (r[0] % 4, 1))
        rows.update_state_by_key(_count, name="totals").write_to(sinks["totals"])
        rows.reduce_by_key_and_window(operator.add, 3.0, inv_f=operator.sub, filter_f=lambda kv: kv[1] > 0, name="win").write_to(sinks["win"])
        words = ssc.queue_stream(QUEUE, name="q").map(lambda w: (w, 1))
        words.update_state_by_key(lambda v, o: (o or 0) + sum(v), name="words").write_to(sinks["words"])
        if fail_at is not None:

            def boom(b: Any) -> None:
                if b.batch_time_ms >= fail_at * 1000:
                    raise Boom(b.batch_time_ms)

            rows.foreach_batch(boom)
        else:
            rows.foreach_batch(lambda b: None)  # the same outputs either way
        return ssc

    return setup


def _sinks() -> dict[str, ListSink]:
    return {n: ListSink(n) for n in ("totals", "win", "words")}


def _run(url: str, sinks: dict[str, ListSink], total: int, fail_at: int | None = None, now_ms: int = 0) -> None:
    ssc = sk.StreamingContext.get_or_create(url, _job(url, sinks, fail_at, now_ms))
    try:
        done = (ssc.last_batch_time_ms or 0) // 1000
        if total > done:
            ssc.run(max_batches=total - done)
    finally:
        ssc.stop()


def _outputs(sinks: dict[str, ListSink]) -> dict[str, dict[int, list[Any]]]:
    """Per sink, batch time -> its records."""
    return {n: {t: sorted(recs, key=repr) for t, recs in s.batches} for n, s in sinks.items()}


@pytest.fixture(scope="module")
def expected(tmp_path_factory: pytest.TempPathFactory) -> dict[str, dict[int, list[Any]]]:
    sinks = _sinks()
    _run(str(tmp_path_factory.mktemp("uncrashed") / "ckpt"), sinks, TOTAL)
    return _outputs(sinks)


@pytest.fixture(scope="module", params=["crashed", "restarted"])
def baseline(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory, expected: Any) -> tuple[Path, dict[str, dict[int, list[Any]]]]:
    """A checkpoint with commits 1..8: "crashed" in batch 9 (its plan and blob pending), or
    "restarted" after a clean stop, by a start that ran nothing (recovery's sweep ran)."""
    url = str(tmp_path_factory.mktemp(request.param) / "ckpt")
    if request.param == "crashed":
        with pytest.raises(sk.UserFunctionError):
            _run(url, _sinks(), TOTAL, fail_at=9)
    else:
        _run(url, _sinks(), 8)
        _run(url, _sinks(), 8)
    return Path(url), expected


def _files(base: Path) -> list[str]:
    return sorted(p.relative_to(base).as_posix() for p in base.rglob("*") if p.is_file() and p.name != "lock")


def _kind(rel: str) -> str:
    parts = rel.split("/")
    if parts[0] == "state":
        return "state-" + rel.rsplit(".", 1)[-1]
    return parts[0]


def _cases(base: Path) -> list[tuple[str, str, str | None]]:
    files = _files(base)
    cases: list[tuple[str, str, str | None]] = []
    for rel in files:
        cases += [("delete", rel, None), ("truncate", rel, None)]
        same = [f for f in files if f != rel and _kind(f) == _kind(rel)]
        for other in sorted({same[0], same[-1]} if same else set()):
            cases.append(("swap", rel, other))
    return cases


def _damage(ckpt: Path, how: str, rel: str, other: str | None) -> None:
    path = ckpt / rel
    if how == "delete":
        path.unlink()
    elif how == "truncate":
        path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    else:
        assert other is not None
        shutil.copyfile(ckpt / other, path)


def test_whole_file_damage_is_exact_or_refused_loudly(baseline: tuple[Path, dict[str, dict[int, list[Any]]]], tmp_path: Path) -> None:
    base, expected = baseline
    files = _files(base)
    kinds = {_kind(f) for f in files}
    assert {"CHECKPOINT", "lease", "log", "state-snap", "state-delta"} <= kinds, files
    cases = _cases(base)
    outcomes: dict[str, list[str]] = {"exact": [], "refused": []}
    wrong: list[str] = []
    for i, (how, rel, other) in enumerate(cases):
        ckpt = tmp_path / f"c{i}"
        shutil.copytree(base, ckpt)
        _damage(ckpt, how, rel, other)
        label = f"{how} {rel}" + (f" <- {other}" if other else "")
        sinks = _sinks()
        try:
            with warnings.catch_warnings():  # recovery warns when it falls back to an older commit
                warnings.simplefilter("ignore", StreamkeepWarning)
                # The clock says batch 8: a silent fresh start would begin there with empty state and differ.
                _run(str(ckpt), sinks, TOTAL, now_ms=8000)
        except CheckpointError as exc:  # refused: it must say what and where
            msg = str(exc)
            if str(ckpt) not in msg and "checkpoint" not in msg:
                wrong.append(f"{label}: refused without naming the checkpoint: {msg}")
            outcomes["refused"].append(label)
        except Exception as exc:  # anything else is neither exact nor a clear refusal
            wrong.append(f"{label}: {type(exc).__name__}: {exc}")
        else:
            got = _outputs(sinks)
            for name, per_batch in got.items():
                for t, recs in per_batch.items():
                    if recs != expected[name][t]:
                        wrong.append(f"{label}: {name} at batch {t} ms differs: {recs} != {expected[name][t]}")
                        break
                if max(per_batch, default=0) != TOTAL * 1000:
                    wrong.append(f"{label}: {name} did not reach batch {TOTAL}")
            outcomes["exact"].append(label)
        shutil.rmtree(ckpt)
    assert not wrong, "\n".join(wrong)
    # Both outcomes occur: damage the retained fallback absorbs, and damage every commit depends on.
    assert outcomes["exact"] and outcomes["refused"], outcomes
    assert len(cases) >= 3 * len(files) - 4, (len(cases), len(files))

