"""A job on a user-written `Executor` survives a SIGKILL and resumes exactly (issue 11.1).

The child builds its job with ``StreamingContext(executor=RecordingExecutor())``: an
executor that is not a `LocalExecutor` subclass but wraps one and logs every call the
scheduler makes. It is killed at crash points across plan, run and commit, resumed with
get_or_create, and its outputs must equal an uncrashed run; the call log shows the
scheduler went through the custom executor (seed on the first start, restore after the
crash, deltas for the checkpoint, and, this state being small, its whole state through
`snapshot` when a snapshot is due: a small state is snapshotted in its batch, issue 14).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from streamkeep.checkpoint import Checkpoint
from streamkeep.testing import CrashAt

pytestmark = [pytest.mark.slow, pytest.mark.faults]

BATCHES = 7

CHILD = textwrap.dedent(
    """
    import json, operator, sys
    import streamkeep as sk
    from streamkeep.executors import LocalExecutor
    from streamkeep.executors.base import Executor
    from streamkeep.sinks import FileSink
    from streamkeep.testing import ManualClock

    ckpt, out, calls, total = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])

    class RecordingExecutor:
        \"\"\"Runs the graph with a LocalExecutor it wraps; appends every call's name to `calls`.\"\"\"

        def __init__(self):
            self._inner = LocalExecutor()

        def __getattr__(self, name):
            fn = getattr(self._inner, name)
            if name.startswith("_") or not callable(fn):
                return fn
            def call(*args):
                with open(calls, "a") as f:
                    f.write(json.dumps([name] + [a for a in args if isinstance(a, str)]) + "\\n")
                return fn(*args)
            return call

    # the protocol's methods, spelled out so isinstance(x, Executor) sees them
    for _m in ("open", "operators", "seed", "restore", "compute", "run_outputs", "delta", "snapshot",
               "forget_changes", "key_count", "measure_timings", "timings", "drained", "close"):
        setattr(RecordingExecutor, _m, (lambda m: lambda self, *a: self.__getattr__(m)(*a))(_m))
    assert isinstance(RecordingExecutor(), Executor)

    def setup():
        ssc = sk.StreamingContext(1.0, checkpoint=ckpt, clock=ManualClock(), snapshot_every=3,
                                  executor=RecordingExecutor())
        pairs = ssc.rate_stream(5, name="r").map(lambda r: (r[0] % 4, r[0]))
        totals = pairs.update_state_by_key(lambda vs, s: (s or 0) + sum(vs), name="totals")
        win = pairs.reduce_by_key_and_window(operator.add, 3.0, 1.0, inv_f=operator.sub, name="win")
        totals.write_to(FileSink(out + "/totals", name="totals", format="jsonl"))
        win.write_to(FileSink(out + "/win", name="win", format="jsonl"))
        return ssc

    ssc = sk.StreamingContext.get_or_create(ckpt, setup)
    done = 0 if ssc.last_batch_time_ms is None else ssc.last_batch_time_ms // 1000
    ssc.run(total - done)
    ssc.stop()
    """
)


def _run(tmp: Path, crash: CrashAt | None) -> subprocess.CompletedProcess[str]:
    script = tmp / "child.py"
    script.write_text(CHILD)
    env = crash.env() if crash is not None else dict(os.environ)
    return subprocess.run(
        [sys.executable, str(script), str(tmp / "ckpt"), str(tmp / "out"), str(tmp / "calls.jsonl"), str(BATCHES)],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def _outputs(tmp: Path) -> dict[str, dict[str, list[object]]]:
    got: dict[str, dict[str, list[object]]] = {}
    for kind in ("totals", "win"):
        d = tmp / "out" / kind
        files = sorted(d.glob("batch-*")) if d.exists() else []
        got[kind] = {f.name: sorted((json.loads(line) for line in f.read_text().splitlines()), key=repr) for f in files}
    return got


def _calls(tmp: Path) -> list[list[str]]:
    return [json.loads(line) for line in (tmp / "calls.jsonl").read_text().splitlines()]


@pytest.mark.parametrize(("point", "nth"), [("run.after_read", 3), ("state.after_write", 5), ("commit.before_record", 4)])
def test_a_custom_executor_resumes_exactly_after_sigkill(tmp_path: Path, point: str, nth: int) -> None:
    clean = tmp_path / "clean"
    clean.mkdir()
    r = _run(clean, None)
    assert r.returncode == 0, r.stderr
    expected = _outputs(clean)
    assert len(expected["totals"]) == BATCHES and len(expected["win"]) == BATCHES
    clean_calls = _calls(clean)
    assert ["seed", "totals"] in clean_calls and ["seed", "win"] in clean_calls
    assert ["delta", "totals"] in clean_calls and ["delta", "win"] in clean_calls
    assert ["snapshot", "totals"] in clean_calls and ["snapshot", "win"] in clean_calls  # a small state's, in its batch
    assert any(p.suffix == ".snap" for p in (clean / "ckpt").rglob("*")), "no snapshot was written"
    assert not any(c[0] == "restore" for c in clean_calls)

    crashed = tmp_path / "crashed"
    crashed.mkdir()
    r = _run(crashed, CrashAt(point, nth))
    assert r.returncode == -9, f"expected a SIGKILL at {point}#{nth}: rc {r.returncode}\n{r.stderr}"
    first = len(_calls(crashed))
    committed = bool(Checkpoint(str(crashed / "ckpt")).commits())  # the commits run behind the batches: maybe none yet
    r = _run(crashed, None)
    assert r.returncode == 0, r.stderr
    resumed = _calls(crashed)[first:]
    if committed:  # the executor is handed the committed state
        assert ["restore", "totals"] in resumed and ["restore", "win"] in resumed, resumed[:10]
    else:  # nothing committed: the initial state, then the planned batches replayed
        assert ["seed", "totals"] in resumed and not any(c[0] == "restore" for c in resumed), resumed[:10]
    assert resumed[-1] == ["close"]
    assert _outputs(crashed) == expected
