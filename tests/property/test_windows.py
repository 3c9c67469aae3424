"""Property: the inverse (incremental) window path gives the same results as recomputing.

For random input batches, window lengths and slides (multiples of the batch
interval, including slide > length) and partition counts,
``reduce_by_key_and_window(f, inv_f=...)`` must produce, at every batch time, the
same per-key values as ``reduce_by_key_and_window(f)`` and as a direct model of
the window. Without `filter_f` the inverse path keeps keys whose value went back
to 0 (as Spark does), so those are ignored; with ``filter_f=lambda kv: kv[1] != 0``
the results must be equal exactly.
"""

from __future__ import annotations

import operator
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

import streamkeep as sk
from streamkeep.testing import ListSink, ManualClock

INTERVAL_S = 1  # batch i (from 1) has time i * 1000 ms; a window with slide s outputs at multiples of s

KEYS = st.sampled_from("abcde")


def batches(values: st.SearchStrategy[int]) -> st.SearchStrategy[list[list[tuple[str, int]]]]:
    return st.lists(st.lists(st.tuples(KEYS, values), max_size=8), min_size=1, max_size=8)


shape = st.fixed_dictionaries(
    {
        "length": st.integers(1, 6),
        "slide": st.integers(1, 4),
        "in_parts": st.integers(1, 3),
        "out_parts": st.one_of(st.none(), st.integers(1, 3)),
    }
)


def run_window(inp: list[list[tuple[str, int]]], p: dict[str, Any], **kw: Any) -> list[tuple[int, list[tuple[str, int]]]]:
    """(batch time ms, records) of every output of the windowed reduction."""
    ssc = sk.StreamingContext(INTERVAL_S, clock=ManualClock())
    stream = ssc.queue_stream(inp, name="in", num_partitions=p["in_parts"])
    sink = ListSink()
    stream.reduce_by_key_and_window(
        operator.add, p["length"], p["slide"], num_partitions=p["out_parts"], name="w", **kw
    ).write_to(sink)
    try:
        ssc.run()
    finally:
        ssc.stop()
    return sink.batches


def as_dict(records: list[tuple[str, int]]) -> dict[str, int]:
    d = dict(records)
    assert len(d) == len(records), f"a key appears twice in one window: {records}"
    return d


def model(inp: list[list[tuple[str, int]]], t_ms: int, length: int) -> dict[str, int]:
    """The window ending at t: batches i with t - length < i <= t, summed per key."""
    t = t_ms // 1000
    out: dict[str, int] = {}
    for i, batch in enumerate(inp, start=1):
        if t - length < i <= t:
            for k, v in batch:
                out[k] = out.get(k, 0) + v
    return out


def check_times(inp: list[list[tuple[str, int]]], times: list[int], length: int, slide: int) -> None:
    """Outputs at every slide from the first, until no later window holds input (drain-out)."""
    assert times == [1000 * slide * k for k in range(1, len(times) + 1)]
    last = times[-1] // 1000 if times else 0
    nonempty = [i for i, b in enumerate(inp, start=1) if b]
    assert all(i <= last + slide - length for i in nonempty), "stopped while a later window still held input"


@settings(max_examples=100, deadline=None, database=None)
@given(inp=batches(st.integers(-5, 5)), p=shape)
def test_inverse_window_equals_recomputed_window(inp, p):
    plain = run_window(inp, p)
    inverse = run_window(inp, p, inv_f=operator.sub)
    check_times(inp, [t for t, _ in plain], p["length"], p["slide"])
    assert [t for t, _ in inverse] == [t for t, _ in plain]
    for (t, plain_records), (_, inv_records) in zip(plain, inverse):
        want = as_dict(plain_records)
        got = as_dict(inv_records)
        assert want == model(inp, t, p["length"]), f"plain window at {t} ms"
        # Spark keeps keys whose running value returned to 0; those are the only extras allowed
        extras = {k: v for k, v in got.items() if k not in want}
        assert all(v == 0 for v in extras.values()), f"at {t} ms: inverse has extra keys {extras}"
        assert {k: v for k, v in got.items() if k in want} == want, f"at {t} ms"


@settings(max_examples=100, deadline=None, database=None)
@given(inp=batches(st.integers(1, 5)), p=shape)
def test_inverse_window_with_filter_equals_recomputed_window(inp, p):
    def nonzero(kv: tuple[str, int]) -> bool:
        return kv[1] != 0

    plain = run_window(inp, p, filter_f=nonzero)
    inverse = run_window(inp, p, inv_f=operator.sub, filter_f=nonzero)
    assert [t for t, _ in inverse] == [t for t, _ in plain]
    for (t, plain_records), (_, inv_records) in zip(plain, inverse):
        assert as_dict(inv_records) == as_dict(plain_records) == model(inp, t, p["length"]), f"at {t} ms"


@settings(max_examples=100, deadline=None, database=None)
@given(inp=batches(st.integers(1, 5)), p=shape)
def test_output_partitions(inp, p):
    """Each output has `num_partitions` partitions (1 by default) and each key in exactly one."""
    ssc = sk.StreamingContext(INTERVAL_S, clock=ManualClock())
    parts: list[list[list[tuple[str, int]]]] = []
    ssc.queue_stream(inp, name="in", num_partitions=p["in_parts"]).reduce_by_key_and_window(
        operator.add, p["length"], p["slide"], inv_f=operator.sub, num_partitions=p["out_parts"], name="w"
    ).glom().foreach_batch(lambda b: parts.append(b.collect()))
    ssc.run()
    ssc.stop()
    for out in parts:
        assert len(out) == (p["out_parts"] or 1)
        keys = [k for part in out for k, _ in part]
        assert len(keys) == len(set(keys))


@settings(max_examples=100, deadline=None, database=None)
@given(inp=st.lists(st.lists(st.integers(-3, 3), max_size=6), min_size=1, max_size=8), p=shape)
def test_reduce_and_count_by_window_match_the_window(inp, p):
    """reduce_by_window (with and without inverse) and count_by_window agree with window()."""
    length, slide = p["length"], p["slide"]

    def collect(build: Any) -> list[tuple[int, list[Any]]]:
        ssc = sk.StreamingContext(INTERVAL_S, clock=ManualClock())
        sink = ListSink()
        build(ssc.queue_stream(inp, name="in", num_partitions=p["in_parts"])).write_to(sink)
        ssc.run()
        ssc.stop()
        return sink.batches

    windows = dict(collect(lambda s: s.window(length, slide, name="w")))
    plain = collect(lambda s: s.reduce_by_window(operator.add, length, slide, name="w"))
    inverse = collect(lambda s: s.reduce_by_window(operator.add, length, slide, inv_f=operator.sub, name="w"))
    counts = collect(lambda s: s.count_by_window(length, slide, name="w"))
    assert [t for t, _ in plain] == [t for t, _ in inverse] == [t for t, _ in counts] == sorted(windows)
    for t, records in plain:
        assert records == ([sum(windows[t])] if windows[t] else []), f"at {t} ms"
    for t, records in inverse:
        if windows[t]:
            assert records == [sum(windows[t])], f"at {t} ms"
        else:  # an empty window: nothing, or the running value back at 0 (kept, as in Spark)
            assert records in ([], [0]), f"at {t} ms"
    for t, records in counts:
        if windows[t]:
            assert records == [len(windows[t])], f"at {t} ms"
        else:
            assert records in ([], [0]), f"at {t} ms"
