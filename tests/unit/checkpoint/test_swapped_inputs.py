"""Code changes that swap unnamed stateful operators or sources of a kind: refused (derived names would swap state).

Each stateful operator's stored description lists what feeds it (`Graph.describe`, "feeds");
`check_compatible` compares them for derived names (``KIND#N``).
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from _ckpt_jobs import run_until

import streamkeep as sk
from streamkeep.dstream._graph import Graph
from streamkeep.errors import DerivedNameWarning, IncompatibleCheckpointError
from streamkeep.testing import ListSink, ManualClock


def _sum(new: list[int], old: int | None) -> int:
    return (old or 0) + sum(new)


def _job(
    url: str,
    sinks: dict[str, ListSink],
    order: tuple[str, ...] = ("clicks", "views"),
    *,
    op_names: bool = False,
    source_names: bool = True,
    extra_stateless: bool = False,
    upstream_stateful: bool = False,
    downstream: bool = False,
    allow: tuple[str, ...] = (),
) -> Callable[[], sk.StreamingContext]:
    """Per stream in `order`: a queue source (clicks: 1 a batch, views: 10) and a running sum over it.

    Sources are created first, then the sums, each in `order`. `op_names` / `source_names`:
    give them user names (else derived ones).
    """
    values = {"clicks": 1, "views": 10}

    def setup() -> sk.StreamingContext:
        ssc = sk.StreamingContext(1.0, checkpoint=url, clock=ManualClock(), allow_state_loss=allow)
        streams = {s: ssc.queue_stream([[("k", values[s])] for _ in range(20)], name=s if source_names else None) for s in order}
        for s in order:
            pairs = streams[s]
            if extra_stateless:
                pairs = pairs.filter(lambda kv: True).map(lambda kv: (kv[0], kv[1] * 1))
            if upstream_stateful:
                pairs = pairs.map_with_state(lambda k, v, st: (k, v), name=f"pass_{s}")
            total = pairs.update_state_by_key(_sum, name=f"{s}_total" if op_names else None)
            total.write_to(sinks.setdefault(s, ListSink(s)))
            if downstream:
                total.update_state_by_key(_sum, name=f"{s}_down").write_to(sinks.setdefault(f"{s}_down", ListSink(f"{s}_down")))
        return ssc

    return setup


def _run(url: str, setup: Callable[[], sk.StreamingContext], total: int) -> sk.StreamingContext:
    with warnings.catch_warnings():  # derived names warn (the point of these tests)
        warnings.simplefilter("ignore", DerivedNameWarning)
        return run_until(url, setup, total)


def _last(sink: ListSink) -> list[Any]:
    return sorted(sink.batches[-1][1])


def test_swapping_two_unnamed_stateful_operators_is_refused(tmp_path: Path) -> None:
    """update_state_by_key over views created before the one over clicks: views' sum would continue clicks' total."""
    url = str(tmp_path / "c")
    _run(url, _job(url, {}), 2)
    sinks: dict[str, ListSink] = {}
    with pytest.raises(IncompatibleCheckpointError) as exc:
        _run(url, _job(url, sinks, ("views", "clicks")), 3)
    msg = str(exc.value)
    assert "stateful operator 'update_state_by_key#1' (update_state_by_key) has no name=, and it reads 'views' while its stored state was built from 'clicks'" in msg
    assert "'update_state_by_key#2'" in msg and "reads 'clicks' while its stored state was built from 'views'" in msg
    assert "Give each stateful operator and source a stable name=" in msg
    assert "name='update_state_by_key#1' on the operator reading 'clicks'" in msg
    assert "allow_state_loss={'update_state_by_key#1'}" in msg
    assert not sinks or not sinks["views"].batches  # nothing ran


def test_the_refusal_hint_keeps_each_state(tmp_path: Path) -> None:
    """Naming the swapped operators after the stored names of their inputs restores each one's own state."""
    url = str(tmp_path / "c")
    _run(url, _job(url, {}), 2)
    sinks: dict[str, ListSink] = {}

    def pinned() -> sk.StreamingContext:
        ssc = sk.StreamingContext(1.0, checkpoint=url, clock=ManualClock())
        views = ssc.queue_stream([[("k", 10)] for _ in range(20)], name="views")
        clicks = ssc.queue_stream([[("k", 1)] for _ in range(20)], name="clicks")
        views.update_state_by_key(_sum, name="update_state_by_key#2").write_to(sinks.setdefault("views", ListSink("views")))
        clicks.update_state_by_key(_sum, name="update_state_by_key#1").write_to(sinks.setdefault("clicks", ListSink("clicks")))
        return ssc

    assert run_until(url, pinned, 3).restored
    assert _last(sinks["clicks"]) == [("k", 3)]
    assert _last(sinks["views"]) == [("k", 30)]


def test_allow_state_loss_starts_a_swapped_operator_empty(tmp_path: Path) -> None:
    url = str(tmp_path / "c")
    _run(url, _job(url, {}), 2)
    sinks: dict[str, ListSink] = {}
    _run(url, _job(url, sinks, ("views", "clicks"), allow=("update_state_by_key#1", "update_state_by_key#2")), 3)
    assert _last(sinks["clicks"]) == [("k", 1)]  # started empty: not views' 20
    assert _last(sinks["views"]) == [("k", 10)]  # not clicks' 2


def test_swapping_named_operators_restores_each_state_by_name(tmp_path: Path) -> None:
    url = str(tmp_path / "c")
    _run(url, _job(url, {}, op_names=True), 2)
    sinks: dict[str, ListSink] = {}
    assert _run(url, _job(url, sinks, ("views", "clicks"), op_names=True), 3).restored
    assert _last(sinks["clicks"]) == [("k", 3)]
    assert _last(sinks["views"]) == [("k", 30)]


def test_swapping_two_unnamed_sources_is_refused(tmp_path: Path) -> None:
    """Named sums over unnamed queues created in the other order: queue#1 (now views) would take clicks' position."""
    url = str(tmp_path / "c")
    _run(url, _job(url, {}, op_names=True, source_names=False), 2)

    def swapped() -> sk.StreamingContext:
        ssc = sk.StreamingContext(1.0, checkpoint=url, clock=ManualClock())
        views = ssc.queue_stream([[("k", 10)] for _ in range(20)])
        clicks = ssc.queue_stream([[("k", 1)] for _ in range(20)])
        clicks.update_state_by_key(_sum, name="clicks_total").write_to(ListSink("clicks"))
        views.update_state_by_key(_sum, name="views_total").write_to(ListSink("views"))
        return ssc

    with pytest.raises(IncompatibleCheckpointError) as exc:
        _run(url, swapped, 3)
    msg = str(exc.value)
    assert "source 'queue#1' (queue) has no name=, and it feeds 'views_total' while its stored position was reached feeding 'clicks_total'" in msg
    assert "source 'queue#2' (queue) has no name=, and it feeds 'clicks_total'" in msg
    assert "name='queue#1' on the source feeding 'clicks_total'" in msg
    assert "stateful operator" not in msg  # the sums are named: they follow their names


def test_swapping_unnamed_sources_under_unnamed_operators_is_refused(tmp_path: Path) -> None:
    """Sources swapped, the sums created in the old order: each derived sum now reads the other stream."""
    url = str(tmp_path / "c")
    _run(url, _job(url, {}, source_names=False), 2)

    def swapped() -> sk.StreamingContext:
        ssc = sk.StreamingContext(1.0, checkpoint=url, clock=ManualClock())
        views = ssc.queue_stream([[("k", 10)] for _ in range(20)])
        clicks = ssc.queue_stream([[("k", 1)] for _ in range(20)])
        clicks.update_state_by_key(_sum).write_to(ListSink("clicks"))
        views.update_state_by_key(_sum).write_to(ListSink("views"))
        return ssc

    with pytest.raises(IncompatibleCheckpointError, match=r"'update_state_by_key#1' \(update_state_by_key\) has no name=, and it reads 'queue#2' while its stored state was built from 'queue#1'"):
        _run(url, swapped, 3)


@pytest.mark.parametrize("change", ["extra_stateless", "upstream_stateful"])
def test_changes_that_keep_the_inputs_restore(tmp_path: Path, change: str) -> None:
    """A map/filter, or a new named stateful operator, before each unnamed sum: its inputs are the same, it restores."""
    url = str(tmp_path / "c")
    _run(url, _job(url, {}), 2)
    sinks: dict[str, ListSink] = {}
    assert _run(url, _job(url, sinks, **{change: True}), 3).restored
    assert _last(sinks["clicks"]) == [("k", 3)]
    assert _last(sinks["views"]) == [("k", 30)]


def test_a_new_named_operator_downstream_restores(tmp_path: Path) -> None:
    url = str(tmp_path / "c")
    _run(url, _job(url, {}), 2)
    sinks: dict[str, ListSink] = {}
    assert _run(url, _job(url, sinks, downstream=True), 3).restored
    assert _last(sinks["clicks"]) == [("k", 3)]
    assert _last(sinks["clicks_down"]) == [("k", 3)]  # new: starts empty, then sums the one total it saw


def test_a_checkpoint_without_feeds_is_not_checked(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A graph description stored before feeds were (no "feeds" keys): the swap cannot be seen, the restore goes on."""
    url = str(tmp_path / "c")
    describe = Graph.describe

    def old_format(self: Graph) -> dict[str, Any]:
        d = describe(self)
        for op in d["operators"].values():
            del op["feeds"]
        return d

    with monkeypatch.context() as m:
        m.setattr(Graph, "describe", old_format)
        _run(url, _job(url, {}), 2)
    sinks: dict[str, ListSink] = {}
    assert _run(url, _job(url, sinks, ("views", "clicks")), 3).restored
    assert _last(sinks["views"]) == [("k", 12)]  # the unseen swap: views continued clicks' total (the documented limit)


@pytest.mark.parametrize("kind", ["text", "binary"])
def test_swapped_unnamed_file_sources_feeding_nothing_stateful_are_refused_by_directory(tmp_path: Path, kind: str) -> None:
    """No stateful operator tells them apart: their stored positions list their directories' files, compared on restore."""
    url = str(tmp_path / "c")
    dirs = [tmp_path / "a", tmp_path / "b"]
    for d in dirs:
        d.mkdir()
        (d / "f1").write_bytes(b"abcd")

    def setup(order: list[Path]) -> Callable[[], sk.StreamingContext]:
        def build() -> sk.StreamingContext:
            ssc = sk.StreamingContext(1.0, checkpoint=url, clock=ManualClock())
            for d in order:
                src = ssc.text_file_stream(str(d)) if kind == "text" else ssc.binary_records_stream(str(d), 2)
                src.foreach_batch(lambda b: None)
            return ssc

        return build

    _run(url, setup(dirs), 2)
    first = "text_files#1" if kind == "text" else "binary_records#1"
    with pytest.raises(IncompatibleCheckpointError, match=rf"source '{first}' changed directory '{dirs[0]}' -> '{dirs[1]}'"):
        _run(url, setup(dirs[::-1]), 3)


def test_a_renamed_source_under_unnamed_operators_keeps_its_own_message(tmp_path: Path) -> None:
    """The renamed source is refused by name; the derived sums reading it are not reported as rewired."""
    url = str(tmp_path / "c")
    _run(url, _job(url, {}), 2)

    def renamed() -> sk.StreamingContext:
        ssc = sk.StreamingContext(1.0, checkpoint=url, clock=ManualClock())
        clicks = ssc.queue_stream([[("k", 1)] for _ in range(20)], name="clicks2")
        views = ssc.queue_stream([[("k", 10)] for _ in range(20)], name="views")
        clicks.update_state_by_key(_sum).write_to(ListSink("clicks"))
        views.update_state_by_key(_sum).write_to(ListSink("views"))
        return ssc

    with pytest.raises(IncompatibleCheckpointError) as exc:
        _run(url, renamed, 3)
    msg = str(exc.value)
    assert "source 'clicks' (queue) has a position in the checkpoint but no source of the current code is named 'clicks'" in msg
    assert "no name=" not in msg and "update_state_by_key#" not in msg


def test_dropping_a_stateful_operator_upstream_restores(tmp_path: Path) -> None:
    """The dropped operator (allowed) is looked through: the sums' stored feeds lead back to the same sources."""
    url = str(tmp_path / "c")
    _run(url, _job(url, {}, upstream_stateful=True), 2)
    sinks: dict[str, ListSink] = {}
    assert _run(url, _job(url, sinks, allow=("pass_clicks", "pass_views")), 3).restored
    assert _last(sinks["clicks"]) == [("k", 3)]
    assert _last(sinks["views"]) == [("k", 30)]


def _one_sum(url: str, sink: ListSink, *, union: bool, allow: tuple[str, ...] = ()) -> Callable[[], sk.StreamingContext]:
    """Named queues a (1 a batch) and b (100); one unnamed running sum over a, or over a.union(b)."""

    def setup() -> sk.StreamingContext:
        ssc = sk.StreamingContext(1.0, checkpoint=url, clock=ManualClock(), allow_state_loss=allow)
        a = ssc.queue_stream([[("k", 1)] for _ in range(20)], name="a")
        b = ssc.queue_stream([[("k", 100)] for _ in range(20)], name="b")
        b.foreach_batch(lambda batch: None)
        (a.union(b) if union else a).update_state_by_key(_sum).write_to(sink)
        return ssc

    return setup


def test_the_only_unnamed_operator_of_its_kind_may_read_a_new_input(tmp_path: Path) -> None:
    """A source added to its union: it cannot have swapped with another of its kind, it restores with its state."""
    url = str(tmp_path / "c")
    _run(url, _one_sum(url, ListSink("s"), union=False), 2)
    sink = ListSink("s")
    assert _run(url, _one_sum(url, sink, union=True), 3).restored
    assert _last(sink) == [("k", 103)]  # 2 stored + 1 + 100


def _named_over_unnamed(url: str, sinks: dict[str, ListSink], change: str) -> Callable[[], sk.StreamingContext]:
    """One unnamed queue (1 a batch), a named one "b" (100), named sums x and y.

    change "": x and y over the unnamed queue; "repoint": x over b; "chain": y over x's output.
    """

    def setup() -> sk.StreamingContext:
        ssc = sk.StreamingContext(1.0, checkpoint=url, clock=ManualClock())
        a = ssc.queue_stream([[("k", 1)] for _ in range(20)])
        b = ssc.queue_stream([[("k", 100)] for _ in range(20)], name="b")
        a.foreach_batch(lambda batch: None)
        b.foreach_batch(lambda batch: None)
        x = (b if change == "repoint" else a).update_state_by_key(_sum, name="x")
        x.write_to(sinks.setdefault("x", ListSink("x")))
        (x if change == "chain" else a).update_state_by_key(_sum, name="y").write_to(sinks.setdefault("y", ListSink("y")))
        return ssc

    return setup


@pytest.mark.parametrize(("change", "x", "y"), [("repoint", 102, 3), ("chain", 3, 5)])
def test_named_operators_rewired_around_the_only_unnamed_source_restore(tmp_path: Path, change: str, x: int, y: int) -> None:
    """Named operators follow their names; the one unnamed queue cannot have swapped with another: both restore."""
    url = str(tmp_path / "c")
    _run(url, _named_over_unnamed(url, {}, ""), 2)
    sinks: dict[str, ListSink] = {}
    assert _run(url, _named_over_unnamed(url, sinks, change), 3).restored
    assert _last(sinks["x"]) == [("k", x)]  # repoint: 2 stored + 100 from b
    assert _last(sinks["y"]) == [("k", y)]  # chain: 2 stored + x's 3


def _renamed_sources(url: str, sinks: dict[str, ListSink], names: dict[str, str], order: tuple[str, ...]) -> Callable[[], sk.StreamingContext]:
    """Queues clicks (1 a batch) and views (10) under `names` (None: unnamed), unnamed sums over them created in `order`."""

    def setup() -> sk.StreamingContext:
        ssc = sk.StreamingContext(1.0, checkpoint=url, clock=ManualClock(), allow_state_loss=("queue#1", "queue#2", "clicks"))
        values = {"clicks": 1, "views": 10}
        streams = {s: ssc.queue_stream([[("k", values[s])] for _ in range(20)], name=names.get(s)) for s in ("clicks", "views")}
        for s in order:
            streams[s].update_state_by_key(_sum).write_to(sinks.setdefault(s, ListSink(s)))
        return ssc

    return setup


def test_unnamed_operators_swapped_while_their_sources_are_renamed_are_refused(tmp_path: Path) -> None:
    """Both sums read only renamed sources: nothing tells them apart, so a swap (here) would go unseen."""
    url = str(tmp_path / "c")
    _run(url, _renamed_sources(url, {}, {}, ("clicks", "views")), 2)
    sinks: dict[str, ListSink] = {}
    with pytest.raises(IncompatibleCheckpointError) as exc:
        _run(url, _renamed_sources(url, sinks, {"clicks": "c", "views": "v"}, ("views", "clicks")), 3)
    msg = str(exc.value)
    assert "stateful operator 'update_state_by_key#1' (update_state_by_key) has no name=, and its inputs cannot be matched: its stored state was built from 'queue#1', it reads 'v'" in msg
    assert "'update_state_by_key#2'" in msg and "name='update_state_by_key#1' on the operator whose input was 'queue#1'" in msg
    assert not sinks or not sinks["views"].batches


def test_one_renamed_source_under_unnamed_operators_restores(tmp_path: Path) -> None:
    """Only clicks renamed (its position allowed to go): views' sum keeps its input, so clicks' sum is the other one."""
    url = str(tmp_path / "c")
    _run(url, _renamed_sources(url, {}, {"clicks": "clicks", "views": "views"}, ("clicks", "views")), 2)
    sinks: dict[str, ListSink] = {}
    assert _run(url, _renamed_sources(url, sinks, {"clicks": "c", "views": "views"}, ("clicks", "views")), 3).restored
    assert _last(sinks["clicks"]) == [("k", 3)]  # its state kept (its source started over: 2 stored + 1)
    assert _last(sinks["views"]) == [("k", 30)]
