"""Property: event-time windows over several source partitions equal a brute-force model.

1. Batching does not matter. Each source partition's records are out of order by at most
   ``max_delay``, but the partitions are far apart in event time (one is hours behind),
   and each partition is cut into batches independently (a fast and a slow consumer, a
   backlog read in pieces, empty batches). With the watermark kept per partition and
   combined as the minimum, no record is late and the emitted windows are exactly the
   brute-force windows that ``min over partitions(largest event time) - max_delay``
   closes, whatever the batching, also when the job is stopped and resumed with
   ``get_or_create`` at random batch boundaries. (One watermark over all partitions
   would make the lagging partition's records late.)
2. Idle partitions: partitions stop sending at random; with ``idle_timeout`` the
   windows and late records of every batch equal `model_partitioned`, which
   recomputes the watermark per batch from the partitions and assigns windows by brute
   force.
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

SHAPES = [
    {"window": "tumbling", "size_ms": 1000, "slide_ms": 1000},
    {"window": "tumbling", "size_ms": 2500, "slide_ms": 2500},
    {"window": "sliding", "size_ms": 3000, "slide_ms": 1000},
    {"window": "session", "size_ms": 700, "slide_ms": 700},
    {"window": "session", "size_ms": 2000, "slide_ms": 2000},
]


@st.composite
def partition_records(draw: st.DrawFn, max_delay_ms: int, offset_ms: int, late: bool) -> list[list[Any]]:
    """One partition's records [key, event_ms, value] in arrival order, out of order by at most max_delay_ms."""
    n = draw(st.integers(1, 15))
    top = offset_ms + draw(st.integers(0, 30)) * 100
    out = []
    for _ in range(n):
        if late and draw(st.integers(0, 4)) == 0:
            e = top - max_delay_ms - draw(st.integers(0, 30)) * 100
        else:
            e = top + draw(st.integers(-max_delay_ms // 100, 15)) * 100
        top = max(top, e)
        out.append([draw(st.sampled_from("abc")), e, draw(st.integers(1, 9))])
    return out


@st.composite
def cut(draw: st.DrawFn, records: list[list[Any]], batches: int) -> list[list[list[Any]]]:
    """`records` split into `batches` consecutive (maybe empty) pieces; the first record is in the first batch."""
    cuts = sorted(draw(st.lists(st.integers(1, len(records)), min_size=batches - 1, max_size=batches - 1)))
    bounds = [0, *cuts, len(records)]
    return [records[a:b] for a, b in zip(bounds, bounds[1:])]


def interleave(pieces: list[list[list[list[Any]]]]) -> list[list[list[Any]]]:
    """Per partition, per batch pieces -> per batch, per partition."""
    return [[p[i] for p in pieces] for i in range(len(pieces[0]))]


@st.composite
def skewed(draw: st.DrawFn, shapes: list[dict[str, Any]], late: bool = False) -> dict[str, Any]:
    shape = draw(st.sampled_from(shapes))
    delay = draw(st.sampled_from([0, 300, 1500]))
    nparts = draw(st.integers(1, 3))
    offsets = [0] + [draw(st.sampled_from([0, 7_000, 3_600_000])) for _ in range(nparts - 1)]  # up to an hour apart
    recs = [draw(partition_records(delay, off, late)) for off in offsets]
    nbatches = draw(st.integers(1, 8))
    return {
        **shape,
        "partitioned": True,
        "records": recs,
        "batches": interleave([draw(cut(r, nbatches)) for r in recs]),
        "max_delay_ms": delay,
        "lateness_ms": draw(st.sampled_from([0, 0, 800])),
        "idle_ms": None,
        "out_partitions": draw(st.sampled_from([None, 2])),
        "snapshot_every": draw(st.sampled_from([1, 3, None])),
    }


def run(spec: dict[str, Any], ckpt: str | None = None, stops: list[int] | None = None, total: int | None = None) -> tuple[list[Any], list[Any]]:
    """(windows per batch time, late records per batch time) of the job, resumed after each of `stops` batches."""
    total = len(spec["batches"]) if total is None else total
    windows: list[Any] = []
    late: list[Any] = []
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
        windows += sinks["windows"].batches
        late += sinks["late"].batches
    return windows, late


def final_windows(spec: dict[str, Any]) -> list[list[Any]]:
    """Brute force: every window of all records (none late), kept when min over partitions(max event) - delay closes it."""
    everything = {**spec, "batches": [[r for part in spec["records"] for r in part]]}
    all_windows, _ = job.model(everything, flushed=True)
    wm = min(max(e for _, e, _ in part) for part in spec["records"]) - spec["max_delay_ms"]
    return [w for w in all_windows if w[2] + spec["lateness_ms"] <= wm]


@settings(max_examples=40, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])
@given(spec=skewed(SHAPES), data=st.data())
def test_skewed_partitions_give_the_same_windows_in_any_batching(spec: dict[str, Any], data: st.DataObject) -> None:
    windows, late = run(spec)
    assert all(not rs for _, rs in late), f"late records: {late}"
    got = sorted(w for _, ws in windows for w in ws)
    seen = [tuple(w[:3]) for w in got]
    assert len(seen) == len(set(seen)), f"a window was emitted twice: {got}"
    assert got == final_windows(spec), f"engine {got} != model (spec {spec})"
    # Another batching of the same partitions (one big batch: a backlog read at once), resumed at random boundaries.
    other = {**spec, "batches": interleave([data.draw(cut(r, len(spec["batches"]) + 2), label="rebatch") for r in spec["records"]])}
    total = len(other["batches"])
    stops = sorted(data.draw(st.sets(st.integers(1, total - 1), max_size=3), label="restart after batches"))
    with tempfile.TemporaryDirectory(prefix="sk-etp-") as tmp:
        windows2, late2 = run(other, os.path.join(tmp, "ckpt"), stops)
    assert all(not rs for _, rs in late2)
    assert sorted(w for _, ws in windows2 for w in ws) == got


@st.composite
def idle_specs(draw: st.DrawFn) -> dict[str, Any]:
    spec = draw(skewed([s for s in SHAPES if s["window"] != "session"], late=True))
    spec["idle_ms"] = draw(st.sampled_from([1000, 2000, 3000]))
    # partitions fall silent at random: a partition's later pieces move to the end, after empty batches
    batches = spec["batches"]
    quiet = draw(st.integers(0, 4))
    spec["batches"] = batches + [[[] for _ in batches[0]] for _ in range(quiet)] + [batches[-1]] if quiet else batches
    if quiet:
        spec["batches"][len(batches) - 1] = [part if draw(st.booleans()) else [] for part in batches[-1]]
        spec["batches"][-1] = [[] if spec["batches"][len(batches) - 1][p] else part for p, part in enumerate(batches[-1])]
    return spec


@settings(max_examples=40, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])
@given(spec=idle_specs(), data=st.data())
def test_idle_partitions_follow_the_model_batch_by_batch(spec: dict[str, Any], data: st.DataObject) -> None:
    extra = 6  # empty batches after the input: every partition idles, the watermark moves on with batch time
    batches = spec["batches"] + [[[] for _ in spec["batches"][0]] for _ in range(extra)]
    want_windows, want_late = job.model_partitioned(spec, batches)
    total = len(batches)
    stops = sorted(data.draw(st.sets(st.integers(1, total - 1), max_size=2), label="restart after batches"))
    with tempfile.TemporaryDirectory(prefix="sk-eti-") as tmp:
        windows, late = run(spec, os.path.join(tmp, "ckpt"), stops, total=total)
    by_t = {t: sorted(rs) for t, rs in windows}
    late_t = {t: sorted(rs) for t, rs in late}
    for i in range(total):
        t = (i + 1) * 1000
        assert by_t.get(t, []) == want_windows[i], f"batch {i}: windows {by_t.get(t)} != model {want_windows[i]} (spec {spec})"
        assert late_t.get(t, []) == want_late[i], f"batch {i}: late {late_t.get(t)} != model {want_late[i]} (spec {spec})"
