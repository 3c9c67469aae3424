"""Property: checkpointed stateful operators equal a brute-force model across restarts and kills.

The crash suite (tests/faults) compares a crashed run with the same engine
uncrashed, so a bug present in both runs goes unseen. Here the oracle is
`_model.model`, computed from the input without engine code. Hypothesis draws
the input, the window shape, the `map_with_state` timeout, the snapshot
cadence and whether deltas are inline or files; the job is then

* stopped and resumed with ``get_or_create`` at random batch boundaries, in
  process (every output of every batch compared with the model), and
* SIGKILLed at random crash points in a child process, then resumed until done
  (the FileSink output compared with the model).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import streamkeep as sk
from streamkeep import _faults
from streamkeep.testing import ListSink

sys.path.insert(0, str(Path(__file__).parent))
import _model  # noqa: E402

KEYS = st.sampled_from("abcd")

specs = st.fixed_dictionaries(
    {
        "input": st.lists(st.lists(st.tuples(KEYS, st.integers(1, 4)), max_size=6), min_size=1, max_size=10),
        "length": st.integers(1, 4),
        "slide": st.integers(1, 3),
        "timeout": st.integers(1, 3),
        "partitions": st.integers(1, 2),
        "snapshot_every": st.sampled_from([1, 2, 3, None]),
        "inline_delta_bytes": st.sampled_from([0, 4096]),
        "keep_commits": st.sampled_from([1, 2]),
    }
)


def _total(spec: dict[str, Any]) -> int:
    """Enough batches for every window and timeout to drain after the input ends."""
    return len(spec["input"]) + spec["length"] + spec["slide"] + spec["timeout"] + 1


def _compare(spec: dict[str, Any], got: dict[str, dict[int, list[Any]]], total: int) -> None:
    want = _model.model(spec, total)
    for name in _model.OUTPUTS:
        assert sorted(got[name]) == sorted(want[name]), f"{name}: batch times {sorted(got[name])} != {sorted(want[name])}"
        for t in sorted(want[name]):
            assert got[name][t] == want[name][t], f"{name} at {t} ms: engine {got[name][t]} != model {want[name][t]} (spec {spec})"


@settings(max_examples=60, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])
@given(spec=specs, data=st.data())
def test_restarts_at_random_batch_boundaries_match_the_model(spec: dict[str, Any], data: st.DataObject) -> None:
    total = _total(spec)
    stops = sorted(data.draw(st.sets(st.integers(1, total - 1), max_size=4), label="restart after batches"))
    got: dict[str, dict[int, list[Any]]] = {name: {} for name in _model.OUTPUTS}
    with tempfile.TemporaryDirectory(prefix="sk-model-") as tmp:
        ckpt = os.path.join(tmp, "ckpt")
        done = 0
        for stop_at in [*stops, total]:
            sinks = {name: ListSink(name) for name in _model.OUTPUTS}
            ssc = sk.StreamingContext.get_or_create(ckpt, lambda sinks=sinks: _model.build(spec, ckpt, sinks))
            try:
                assert (ssc.last_batch_time_ms or 0) == done * 1000, "resumed at the wrong batch"
                ssc.run(max_batches=stop_at - done)
            finally:
                ssc.stop()
            done = stop_at
            for name, sink in sinks.items():
                for t, records in sink.batches:
                    assert t not in got[name], f"{name}: batch {t} ms written twice across clean restarts"
                    got[name][t] = _model.canonical(records)
    _compare(spec, got, total)


#: Points the model job reaches: every batch's (its queue writes blobs), its starts and its recoveries.
_POINTS = list(_faults.BATCH_POINTS + _faults.START_POINTS + _faults.RECOVERY_POINTS)


@pytest.mark.slow
@pytest.mark.faults
@settings(max_examples=12, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])
@given(spec=specs, data=st.data())
def test_random_kills_match_the_model(spec: dict[str, Any], data: st.DataObject) -> None:
    total = _total(spec)
    crashes = data.draw(st.lists(st.tuples(st.sampled_from(_POINTS), st.integers(1, 12)), min_size=1, max_size=3), label="crashes")
    with tempfile.TemporaryDirectory(prefix="sk-model-kill-") as tmp:
        run_spec = {**spec, "ckpt": os.path.join(tmp, "ckpt"), "out": os.path.join(tmp, "out"), "total": total}
        spec_path = os.path.join(tmp, "spec.json")
        with open(spec_path, "w") as f:
            json.dump(run_spec, f)
        argv = [sys.executable, _model.__file__, spec_path]
        for point, nth in [*crashes, (None, 0)]:
            env = dict(os.environ)
            env.pop(_faults.ENV_VAR, None)
            if point is not None:
                env[_faults.ENV_VAR] = f"{point}@{nth}"
            r = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=120)
            # Armed: killed there, or finished because the point was reached fewer times. Not armed: finished.
            allowed = (0, -signal.SIGKILL) if point is not None else (0,)
            assert r.returncode in allowed, f"crash {point}@{nth}: exit {r.returncode}\n{r.stderr[-3000:]}"
        _compare(spec, _model.read_file_sinks(run_spec["out"]), total)
