"""SIGKILL a job whose map_with_state changes its state in place and dead-letters a poison record (issue 10.7, 10.13).

The child runs ``state.get().append(v)`` without ``state.update()`` and sends the records its
function raises on to a FileSink. It is killed at crash points after the outputs, then resumed
with get_or_create; state snapshots, outputs and dead letters must equal an uncrashed run.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from streamkeep.testing import CrashAt

pytestmark = [pytest.mark.slow, pytest.mark.faults]

BATCHES = 5

CHILD = textwrap.dedent(
    """
    import sys
    import streamkeep as sk
    from streamkeep.sinks import FileSink
    from streamkeep.testing import ManualClock

    ckpt, out, total = sys.argv[1], sys.argv[2], int(sys.argv[3])

    def keep(key, value, state):
        if value % 7 == 3:
            raise ValueError(f"poison {value}")
        if not state.exists():
            state.update([])
        state.get().append(value)  # in place, no update()
        return [key, len(state.get())]

    def setup():
        ssc = sk.StreamingContext(1.0, checkpoint=ckpt, clock=ManualClock(), snapshot_every=3)
        dead = FileSink(out + "/dead", name="dead", format="jsonl")
        m = ssc.rate_stream(4, name="r").map(lambda r: (r[0] % 3, r[0])).map_with_state(keep, name="m", on_error=dead)
        m.write_to(FileSink(out + "/out", name="out", format="jsonl"))
        m.state_snapshots().write_to(FileSink(out + "/snaps", name="snaps", format="jsonl"))
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
        [sys.executable, str(script), str(tmp / "ckpt"), str(tmp / "out"), str(BATCHES)],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def _outputs(tmp: Path) -> dict[str, dict[str, list[object]]]:
    got: dict[str, dict[str, list[object]]] = {}
    for kind in ("out", "snaps", "dead"):
        d = tmp / "out" / kind
        files = sorted(d.glob("batch-*")) if d.exists() else []
        got[kind] = {f.name: sorted((json.loads(line) for line in f.read_text().splitlines()), key=repr) for f in files}
    return got


@pytest.mark.parametrize("point", ["sink.after_write", "state.after_write", "commit.before_record"])
@pytest.mark.parametrize("nth", [2, 4])
def test_in_place_state_and_dead_letters_are_exact_after_sigkill(tmp_path, point, nth):
    clean = tmp_path / "clean"
    clean.mkdir()
    r = _run(clean, None)
    assert r.returncode == 0, r.stderr
    expected = _outputs(clean)
    assert expected["dead"], "the job must dead-letter some records"
    crashed = tmp_path / "crashed"
    crashed.mkdir()
    r = _run(crashed, CrashAt(point, nth))
    assert r.returncode == -9, f"expected a SIGKILL at {point}#{nth}: rc {r.returncode}\n{r.stderr}"
    r = _run(crashed, None)
    assert r.returncode == 0, r.stderr
    assert _outputs(crashed) == expected
