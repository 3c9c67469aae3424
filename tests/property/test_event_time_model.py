"""Property: event-time windows equal a brute-force model, whatever the batching, across restarts.

Records arrive out of order but never later than ``max_delay`` behind the largest
event time so far, so none is late: the emitted windows (key, start, end, value)
must then be exactly the model's windows that the final watermark closed, for any
split of the same arrival sequence into batches (including empty batches), any
input partitioning, and when the job is stopped and resumed with ``get_or_create``
at random batch boundaries. A second property adds late records (tumbling and
sliding windows): they must reach ``late_records()`` exactly as the model says.
"""

from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import streamkeep as sk
from streamkeep.testing import ListSink

sys.path.insert(0, str(Path(__file__).parents[1] / "faults"))
import _event_time_job as job  # noqa: E402

SHAPES = st.sampled_from([
    {"window": "tumbling", "size_ms": 1000, "slide_ms": 1000},
    {"window": "tumbling", "size_ms": 2500, "slide_ms": 2500},
    {"window": "sliding", "size_ms": 3000, "slide_ms": 1000},
    {"window": "sliding", "size_ms": 2000, "slide_ms": 500},
    {"window": "session", "size_ms": 700, "slide_ms": 700},
    {"window": "session", "size_ms": 2000, "slide_ms": 2000},
])


@st.composite
def arrivals(draw: st.DrawFn, max_delay_ms: int, late: bool) -> list[list[Any]]:
    """Records [key, event_ms, value] in arrival order; out of order by at most max_delay_ms (unless `late`).

    Event times are multiples of 100 ms, so window ends often equal the watermark exactly.
    """
    n = draw(st.integers(0, 40))
    top = draw(st.integers(0, 50)) * 100
    out = []
    for _ in range(n):
        if late and draw(st.integers(0, 3)) == 0:
            e = top - max_delay_ms - draw(st.integers(0, 50)) * 100  # behind the watermark, maybe in a closed window
        else:
            e = top + draw(st.integers(-max_delay_ms // 100, 15)) * 100
        top = max(top, e)
        out.append([draw(st.sampled_from("abc")), e, draw(st.integers(1, 9))])
    return out


@st.composite
def specs(draw: st.DrawFn, late: bool = False) -> dict[str, Any]:
    shape = draw(SHAPES if not late else SHAPES.filter(lambda s: s["window"] != "session"))
    delay = draw(st.sampled_from([0, 300, 1500]))
    recs = draw(arrivals(delay, late))
    cuts = sorted(draw(st.lists(st.integers(0, len(recs)), max_size=12)))
    bounds = [0, *cuts, len(recs)]
    batches = [recs[a:b] for a, b in zip(bounds, bounds[1:])]
    return {
        **shape,
        "batches": batches,
        "max_delay_ms": delay,
        "lateness_ms": draw(st.sampled_from([0, 0, 800])),
        "idle_ms": None,
        "partitions": draw(st.integers(1, 3)),
        "out_partitions": draw(st.sampled_from([None, 2])),
        "snapshot_every": draw(st.sampled_from([1, 3, None])),
    }


def run(spec: dict[str, Any], ckpt: str | None = None, stops: list[int] | None = None) -> tuple[list[list[Any]], list[list[Any]]]:
    """(sorted emitted windows, late records in order) of the job, resumed after each of `stops` batches."""
    total = len(spec["batches"])
    windows: list[list[Any]] = []
    late: list[list[Any]] = []
    done = 0
    for stop_at in [*(stops or []), total]:
        sinks = {name: ListSink(name) for name in job.OUTPUTS}
        if ckpt is None:
            ssc = job.build(spec, None, sinks)
        else:
            ssc = sk.StreamingContext.get_or_create(ckpt, lambda sinks=sinks: job.build(spec, ckpt, sinks))
            assert (ssc.last_batch_time_ms or 0) == done * 1000, "resumed at the wrong batch"
        try:
            ssc.run(max_batches=stop_at - done)
        finally:
            ssc.stop()
        done = stop_at
        windows += sinks["windows"].records()
        late += sinks["late"].records()
    return sorted(windows), late


def _check(spec: dict[str, Any], got: tuple[list[list[Any]], list[list[Any]]]) -> None:
    windows, late = got
    want_windows, want_late = job.model(spec, flushed=False)
    seen = [(w[0], w[1], w[2]) for w in windows]
    assert len(seen) == len(set(seen)), f"a window was emitted twice: {windows}"
    assert windows == want_windows, f"engine {windows} != model {want_windows} (spec {spec})"
    # Within a batch the engine reads the input partition by partition, not in arrival order.
    assert sorted(late) == sorted(want_late), f"late: engine {late} != model {want_late}"


@settings(max_examples=80, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])
@given(spec=specs())
def test_windows_equal_the_model_for_any_batching(spec: dict[str, Any]) -> None:
    got = run(spec)
    _check(spec, got)
    assert got[1] == [], "no record is late when none is more than max_delay behind"
    # The same arrival sequence in one batch gives the same windows.
    one = {**spec, "batches": [[r for b in spec["batches"] for r in b]]}
    assert run(one)[0] == got[0]


@settings(max_examples=40, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])
@given(spec=specs(late=True))
def test_late_records_are_routed_as_the_model_says(spec: dict[str, Any]) -> None:
    _check(spec, run(spec))


@settings(max_examples=40, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])
@given(spec=specs(late=True).filter(lambda s: len(s["batches"]) > 1), data=st.data())
def test_restarts_at_random_batch_boundaries_equal_an_uninterrupted_run(spec: dict[str, Any], data: st.DataObject) -> None:
    total = len(spec["batches"])
    stops = sorted(data.draw(st.sets(st.integers(1, total - 1), max_size=3), label="restart after batches"))
    with tempfile.TemporaryDirectory(prefix="sk-et-") as tmp:
        got = run(spec, os.path.join(tmp, "ckpt"), stops)
    _check(spec, got)
