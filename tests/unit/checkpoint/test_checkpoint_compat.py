"""Code changes between runs: what restores, what starts empty, what is refused (and how to proceed)."""

from __future__ import annotations

import operator
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from _ckpt_jobs import add_up, run_until, totals_after

import streamkeep as sk
from streamkeep.errors import DerivedNameWarning, IncompatibleCheckpointError
from streamkeep.scheduler._compat import check_compatible, differences
from streamkeep.testing import ListSink, ManualClock

KEYS = 3


def job(
    url: str,
    sinks: dict[str, ListSink],
    *,
    update: Callable[[list[int], int | None], int | None] = add_up,
    stateless_extra: bool = False,
    window_len: float | None = 3.0,
    totals_kind: str = "update_state_by_key",
    new_stateful: bool = False,
    new_source: bool = False,
    allow_state_loss: tuple[str, ...] = (),
    interval: float = 1.0,
    rate_as_queue: bool = False,
    rate_name: str = "rate",
    constant_output: bool = False,
) -> Callable[[], sk.StreamingContext]:
    def setup() -> sk.StreamingContext:
        ssc = sk.StreamingContext(interval, checkpoint=url, clock=ManualClock(), allow_state_loss=allow_state_loss)
        src = ssc.queue_stream([[(i, 0)] for i in range(100)], name=rate_name) if rate_as_queue else ssc.rate_stream(6, name=rate_name)
        pairs = src.map(lambda r: (r[0] % KEYS, 1))
        if stateless_extra:
            pairs = pairs.filter(lambda kv: True).map_values(lambda v: v * 1)
        if totals_kind == "update_state_by_key":
            totals = pairs.update_state_by_key(update, name="totals")
        else:

            def f(k: Any, v: Any, state: Any) -> tuple[Any, Any]:
                state.update((state.get() if state.exists() else 0) + v)
                return (k, state.get())

            totals = pairs.map_with_state(f, name="totals").state_snapshots()
        totals.write_to(sinks.setdefault("totals", ListSink("totals")))
        if window_len is not None:
            win = pairs.reduce_by_key_and_window(operator.add, window_len, inv_f=operator.sub, name="win")
            win.write_to(sinks.setdefault("win", ListSink("win")))
        if new_stateful:
            pairs.update_state_by_key(add_up, name="fresh").write_to(sinks.setdefault("fresh", ListSink("fresh")))
        if constant_output:
            ssc.constant_stream([1], name="const").foreach_batch(lambda b: None)
        if new_source:
            ssc.constant_stream([("c", 1)], name="extra").update_state_by_key(add_up, name="extra_totals").write_to(
                sinks.setdefault("extra", ListSink("extra"))
            )
        return ssc

    return setup


def _first_run(url: str, n: int = 4) -> None:
    run_until(url, job(url, {}), n)


def _last(sink: ListSink) -> list[Any]:
    return sorted(sink.batches[-1][1])


def test_changing_a_function_restores(tmp_path: Path) -> None:
    url = str(tmp_path / "c")
    _first_run(url)
    sinks: dict[str, ListSink] = {}
    ssc = run_until(url, job(url, sinks, update=lambda new, old: (old or 0) + 10 * sum(new)), 5)
    assert ssc.restored
    before = dict(totals_after(4))
    assert _last(sinks["totals"]) == [(k, before[k] + 10 * 2) for k in range(KEYS)]  # 2 rows per key per batch


def test_adding_and_removing_stateless_operators_restores(tmp_path: Path) -> None:
    url = str(tmp_path / "c")
    _first_run(url)
    sinks: dict[str, ListSink] = {}
    run_until(url, job(url, sinks, stateless_extra=True), 5)
    assert _last(sinks["totals"]) == totals_after(5)
    sinks = {}
    run_until(url, job(url, sinks), 6)  # and removed again
    assert _last(sinks["totals"]) == totals_after(6)
    assert _last(sinks["win"]) == [(k, 6) for k in range(KEYS)]  # 3 batches x 2 rows per key


def test_a_new_stateful_operator_starts_empty(tmp_path: Path) -> None:
    url = str(tmp_path / "c")
    _first_run(url)
    sinks: dict[str, ListSink] = {}
    run_until(url, job(url, sinks, new_stateful=True), 6)
    assert _last(sinks["totals"]) == totals_after(6)
    assert _last(sinks["fresh"]) == [(k, 4) for k in range(KEYS)]  # only batches 5 and 6


def test_adding_a_source_restores(tmp_path: Path) -> None:
    url = str(tmp_path / "c")
    _first_run(url)
    sinks: dict[str, ListSink] = {}
    run_until(url, job(url, sinks, new_source=True), 6)
    assert _last(sinks["totals"]) == totals_after(6)
    assert _last(sinks["extra"]) == [("c", 2)]


def test_removing_a_stateful_operator_is_refused_then_allowed(tmp_path: Path) -> None:
    url = str(tmp_path / "c")
    _first_run(url)
    with pytest.raises(IncompatibleCheckpointError) as info:
        run_until(url, job(url, {}, window_len=None), 5)
    msg = str(info.value)
    assert "'win'" in msg and "not in the current code" in msg and "allow_state_loss={'win'}" in msg
    assert "name='win'" in msg  # how to keep it: give the old name back
    sinks: dict[str, ListSink] = {}
    run_until(url, job(url, sinks, window_len=None, allow_state_loss=("win",)), 5)
    assert _last(sinks["totals"]) == totals_after(5)
    sinks = {}
    run_until(url, job(url, sinks, window_len=None), 6)  # the dropped state is gone for good now
    assert _last(sinks["totals"]) == totals_after(6)


def test_changing_window_length_is_refused_then_allowed(tmp_path: Path) -> None:
    url = str(tmp_path / "c")
    _first_run(url)
    with pytest.raises(IncompatibleCheckpointError) as info:
        run_until(url, job(url, {}, window_len=4.0), 5)
    msg = str(info.value)
    assert "'win'" in msg and "length_ms 3000 -> 4000" in msg and "allow_state_loss={'win'}" in msg
    sinks: dict[str, ListSink] = {}
    run_until(url, job(url, sinks, window_len=4.0, allow_state_loss=("win",)), 6)
    assert _last(sinks["totals"]) == totals_after(6)
    assert _last(sinks["win"]) == [(k, 4) for k in range(KEYS)]  # the window restarted empty at batch 5


def test_changing_the_kind_of_a_stateful_operator_is_refused_then_allowed(tmp_path: Path) -> None:
    url = str(tmp_path / "c")
    _first_run(url)
    with pytest.raises(IncompatibleCheckpointError) as info:
        run_until(url, job(url, {}, totals_kind="map_with_state"), 5)
    msg = str(info.value)
    assert "'totals'" in msg and "kind 'update_state_by_key' -> 'map_with_state'" in msg and "allow_state_loss={'totals'}" in msg
    sinks: dict[str, ListSink] = {}
    run_until(url, job(url, sinks, totals_kind="map_with_state", allow_state_loss=("totals",)), 5)
    assert _last(sinks["totals"]) == [(k, 2) for k in range(KEYS)]  # started empty at batch 5


def test_changing_a_source_kind_is_refused(tmp_path: Path) -> None:
    url = str(tmp_path / "c")
    _first_run(url)
    with pytest.raises(IncompatibleCheckpointError, match=r"source 'rate' changed kind 'rate' -> 'queue'"):
        run_until(url, job(url, {}, rate_as_queue=True), 5)


def test_changing_the_batch_interval_under_windows_is_refused(tmp_path: Path) -> None:
    url = str(tmp_path / "c")
    _first_run(url)
    with pytest.raises(IncompatibleCheckpointError, match=r"batch interval changed from 1000 ms to 500 ms"):
        run_until(url, job(url, {}, interval=0.5), 5)


def test_refusal_happens_before_anything_runs(tmp_path: Path) -> None:
    url = str(tmp_path / "c")
    _first_run(url)
    files = sorted(p.relative_to(url).as_posix() for p in Path(url).rglob("*") if p.is_file() and p.name != "lease")
    sinks: dict[str, ListSink] = {}
    with pytest.raises(IncompatibleCheckpointError):
        sk.StreamingContext.get_or_create(url, job(url, sinks, window_len=None))
    assert all(not s.batches for s in sinks.values())
    after = sorted(p.relative_to(url).as_posix() for p in Path(url).rglob("*") if p.is_file() and p.name != "lease")
    assert [f for f in after if not f.startswith("log/")] == [f for f in files if not f.startswith("log/")]
    run_until(url, job(url, {}), 5)  # the checkpoint is still usable by the old code


def test_a_source_of_another_kind_starts_from_scratch_when_allowed(tmp_path: Path) -> None:
    url = str(tmp_path / "c")
    _first_run(url)
    sinks: dict[str, ListSink] = {}
    run_until(url, job(url, sinks, rate_as_queue=True, allow_state_loss=("rate",)), 5)
    before = dict(totals_after(4))
    assert _last(sinks["totals"]) == sorted([(0, before[0] + 1), (1, before[1]), (2, before[2])])  # queue item (0, 0)


def test_renaming_a_source_is_refused_by_name_then_allowed(tmp_path: Path) -> None:
    """A renamed source would start over while the state built from its input is restored (counted twice)."""
    url = str(tmp_path / "c")
    _first_run(url)
    with pytest.raises(IncompatibleCheckpointError) as info:
        run_until(url, job(url, {}, rate_name="rate2"), 5)
    msg = str(info.value)
    assert "source 'rate' (rate) has a position in the checkpoint" in msg and "'rate2'" in msg
    assert "name='rate'" in msg and "allow_state_loss={'rate'}" in msg
    sinks: dict[str, ListSink] = {}
    run_until(url, job(url, sinks, rate_name="rate"), 5)  # renamed back: continues exactly
    assert _last(sinks["totals"]) == totals_after(5)
    sinks = {}
    run_until(url, job(url, sinks, rate_name="rate2", allow_state_loss=("rate",)), 6)  # allowed: rate2 starts at offset 0
    before = dict(totals_after(5))
    assert _last(sinks["totals"]) == [(k, before[k] + 2) for k in range(KEYS)]


def test_removing_a_source_without_a_position_restores(tmp_path: Path) -> None:
    url = str(tmp_path / "c")
    run_until(url, job(url, {}, constant_output=True), 4)
    sinks: dict[str, ListSink] = {}
    run_until(url, job(url, sinks), 5)  # constant_stream "const" is gone: it had nothing to lose
    assert _last(sinks["totals"]) == totals_after(5)


def _desc(**sources: dict[str, Any]) -> dict[str, Any]:
    return {"batch_interval_ms": 1000, "operators": {}, "sources": sources}


def test_a_text_file_source_reading_another_directory_is_incompatible() -> None:
    old = _desc(files={"kind": "text_files", "directory": "in", "path": "/job/in"})
    moved = _desc(files={"kind": "text_files", "directory": "/job/in", "path": "/job/in"})
    other = _desc(files={"kind": "text_files", "directory": "in2", "path": "/job/in2"})
    legacy = _desc(files={"kind": "text_files", "directory": "in"})  # stored before "path" existed
    assert not differences(old, moved)["sources_incompatible"]
    assert not differences(legacy, other)["sources_incompatible"]
    assert differences(old, other)["sources_incompatible"] == [("files", "directory '/job/in' -> '/job/in2' (the stored position lists files of the old directory)")]
    with pytest.raises(IncompatibleCheckpointError, match=r"source 'files' changed directory .*allow_state_loss=\{'files'\}"):
        check_compatible(old, other, frozenset(), "ckpt")
    check_compatible(old, other, frozenset({"files"}), "ckpt")


def test_kafka_topics_added_keep_the_position_and_disjoint_topics_are_incompatible() -> None:
    def kafka(*topics: str) -> dict[str, Any]:
        return _desc(events={"kind": "kafka", "topics": list(topics), "starting_offsets": "earliest"})

    d = differences(kafka("a"), kafka("a", "b"))
    assert not d["sources_incompatible"]
    assert d["sources_changed"] == [("events", "topics ['b'] added (they start from starting_offsets)")]
    assert differences(kafka("a", "b"), kafka("b"))["sources_changed"] == [("events", "topics ['a'] removed (their offsets are dropped)")]
    d = differences(kafka("a"), kafka("renamed"))
    assert d["sources_incompatible"] == [("events", "topics ['a'] -> ['renamed'] (the stored offsets are for topics it no longer reads)")]
    with pytest.raises(IncompatibleCheckpointError, match="source 'events' changed topics"):
        check_compatible(kafka("a"), kafka("renamed"), frozenset(), "ckpt")


def test_a_text_file_source_pointed_at_another_directory_is_refused(tmp_path: Path) -> None:
    url = str(tmp_path / "c")
    for sub in ("in", "in2"):
        (tmp_path / sub).mkdir()

    def setup(directory: str, allow: tuple[str, ...] = ()) -> Callable[[], sk.StreamingContext]:
        def build() -> sk.StreamingContext:
            ssc = sk.StreamingContext(1.0, checkpoint=url, clock=ManualClock(), allow_state_loss=allow)
            ssc.text_file_stream(directory, name="files").foreach_batch(lambda b: None)
            return ssc

        return build

    run_until(url, setup(str(tmp_path / "in")), 2)
    with pytest.raises(IncompatibleCheckpointError, match=r"source 'files' changed directory"):
        run_until(url, setup(str(tmp_path / "in2")), 3)
    run_until(url, setup(str(tmp_path / "in2"), ("files",)), 3)  # allowed: starts with a fresh cut-off


def _numbered_job(url: str, sinks: dict[str, ListSink], specs: list[tuple[str, str | None]], allow: tuple[str, ...] = ()) -> Callable[[], sk.StreamingContext]:
    """update_state_by_key operators in program order: (function "sum" | "len" | "max", name or None to derive one)."""
    fs: dict[str, Callable[[list[int], int | None], int]] = {
        "sum": lambda v, o: (o or 0) + sum(v),
        "len": lambda v, o: (o or 0) + 100 * len(v),
        "max": lambda v, o: max([o or 0, *v]),
    }

    def setup() -> sk.StreamingContext:
        ssc = sk.StreamingContext(1.0, checkpoint=url, clock=ManualClock(), allow_state_loss=allow)
        pairs = ssc.queue_stream([[("a", 1)] for _ in range(20)], name="q")
        for f, name in specs:
            pairs.update_state_by_key(fs[f], name=name).write_to(sinks.setdefault(f, ListSink(f)))
        return ssc

    return setup


def test_pinning_a_derived_name_next_to_unnamed_operators_of_its_kind_is_refused(tmp_path: Path) -> None:
    """Drop #1 (sum), pin #2 (len) as the refusal's hint says, add an unnamed max: it is derived #1 and the
    name sets match, so it would silently get sum's state. The restore refuses; naming every operator restores."""
    url = str(tmp_path / "c")
    with pytest.warns(DerivedNameWarning):
        run_until(url, _numbered_job(url, {}, [("sum", None), ("len", None)]), 2)
    sinks: dict[str, ListSink] = {}
    mixed = _numbered_job(url, sinks, [("len", "update_state_by_key#2"), ("max", None)], allow=("update_state_by_key#1",))
    with pytest.warns(DerivedNameWarning), pytest.raises(IncompatibleCheckpointError, match=r"names 'update_state_by_key#2' explicitly while 'update_state_by_key#1'.*Give every update_state_by_key stateful operator a name") as exc:
        run_until(url, mixed, 3)
    assert "without name=" not in str(exc.value)
    run_until(url, _numbered_job(url, sinks, [("len", "update_state_by_key#2"), ("max", "m")], allow=("update_state_by_key#1",)), 3)
    assert _last(sinks["len"]) == [("a", 300)]  # len's state went on
    assert _last(sinks["max"]) == [("a", 1)]  # the new one started empty


def test_a_new_operator_pinned_to_a_derived_shape_is_not_called_unnamed(tmp_path: Path) -> None:
    """Every operator of the kind named: the names are exact, so a new one named 'KIND#N' restores (starts empty)."""
    url = str(tmp_path / "c")
    with pytest.warns(DerivedNameWarning):
        run_until(url, _numbered_job(url, {}, [("sum", None)]), 2)
    sinks: dict[str, ListSink] = {}
    run_until(url, _numbered_job(url, sinks, [("sum", "update_state_by_key#1"), ("len", "update_state_by_key#2")]), 3)
    assert _last(sinks["sum"]) == [("a", 3)]
    assert _last(sinks["len"]) == [("a", 100)]


def test_allow_state_loss_does_not_lift_the_derived_name_refusal(tmp_path: Path) -> None:
    """The new unnamed operator has no state to lose: the risk is it reading an old one's, so the refusal stays."""
    url = str(tmp_path / "c")
    with pytest.warns(DerivedNameWarning):
        run_until(url, _numbered_job(url, {}, [("sum", None)]), 2)
    job2 = _numbered_job(url, {}, [("sum", None), ("len", None)], allow=("update_state_by_key#2",))
    with pytest.warns(DerivedNameWarning), pytest.raises(IncompatibleCheckpointError, match=r"'update_state_by_key#2' \(update_state_by_key\) without name=.*Listing 'update_state_by_key#2' in allow_state_loss does not lift this"):
        run_until(url, job2, 3)


def test_pinning_a_derived_source_name_next_to_unnamed_sources_of_its_kind_is_refused(tmp_path: Path) -> None:
    """The same for sources: drop queue#1, pin queue#2, add an unnamed queue (derived queue#1: it would get the dropped one's position)."""
    url = str(tmp_path / "c")

    def setup(names: list[str | None]) -> Callable[[], sk.StreamingContext]:
        def build() -> sk.StreamingContext:
            ssc = sk.StreamingContext(1.0, checkpoint=url, clock=ManualClock(), allow_state_loss=("queue#1",))
            for i, name in enumerate(names):
                ssc.queue_stream([[i]] * 10, name=name).write_to(ListSink(f"s{i}"))
            return ssc

        return build

    with pytest.warns(DerivedNameWarning):
        run_until(url, setup([None, None]), 2)
    with pytest.warns(DerivedNameWarning), pytest.raises(IncompatibleCheckpointError, match=r"names 'queue#2' explicitly while 'queue#1' \(queue\) have no name=.*Give every queue source a name"):
        run_until(url, setup(["queue#2", None]), 3)
    assert run_until(url, setup(["queue#2", "fresh"]), 3).restored


def test_a_checkpoint_sharing_no_stateful_operator_with_the_code_says_it_may_be_another_jobs() -> None:
    """Pointing a job at another job's checkpoint: besides each difference, the refusal says what it likely is."""
    ops = {"kind": "update_state_by_key", "codec": "msgpack"}
    demo = {"batch_interval_ms": 500, "operators": {"word_counts": ops}, "sources": {"lines": {"kind": "rate"}}}
    mine = {"batch_interval_ms": 1000, "operators": {"counts": ops}, "sources": {"lines": {"kind": "text_files", "directory": "in"}}}
    with pytest.raises(IncompatibleCheckpointError, match=r"None of the checkpoint's stateful operators \('word_counts'\) .* another job's checkpoint"):
        check_compatible(demo, mine, frozenset(), "ckpt")
    stateless = {**mine, "operators": {}}  # a job without stateful operators pointed at it
    with pytest.raises(IncompatibleCheckpointError, match=r"another job's checkpoint"):
        check_compatible(demo, stateless, frozenset(), "ckpt")
    both = {**mine, "operators": {"counts": ops, "word_counts": ops}}
    kept_one = {**demo, "operators": {"word_counts": ops, "other": ops}}
    with pytest.raises(IncompatibleCheckpointError) as info:
        check_compatible(kept_one, both, frozenset(), "ckpt")  # 'other' dropped, 'word_counts' kept: this job's own
    assert "another job's" not in str(info.value)
