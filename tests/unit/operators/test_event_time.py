"""Event time (issue 16): golden outputs of event-time windows, late data, errors, code-change rules."""

from __future__ import annotations

import json
import logging
import operator
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest

import streamkeep as sk
from streamkeep.errors import ConfigError, IncompatibleCheckpointError, UserFunctionError
from streamkeep.testing import ListSink, ManualClock

T0 = datetime(2026, 1, 1, tzinfo=timezone.utc)


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def flat(r: sk.WindowResult) -> tuple[Any, float, float, Any]:
    """(key, start s, end s, value) relative to T0."""
    return (r.key, (r.start - T0).total_seconds(), (r.end - T0).total_seconds(), r.value)


def run(batches: list[list[Any]], build: Any, *, late: bool = True, max_batches: int | None = None) -> tuple[list[list[Any]], list[list[Any]]]:
    """(windows per batch, late records per batch) of `build(event_time_stream)`."""
    ssc = sk.StreamingContext(1.0, clock=ManualClock())
    ets = ssc.queue_stream(batches, name="in").with_event_time(lambda kv: at(kv[1][0]), max_delay=timedelta(seconds=1))
    out = build(ets)
    wins, lates = ListSink("w"), ListSink("late")
    out.map(flat).write_to(wins)
    if late:
        out.late_records().write_to(lates)
    ssc.run(max_batches)
    ssc.stop()
    return [rs for _, rs in wins.batches], [rs for _, rs in lates.batches]


def rec(key: str, seconds: float, value: int = 1) -> tuple[str, tuple[float, int]]:
    return (key, (seconds, value))


def add(a: tuple[float, int], b: tuple[float, int]) -> tuple[float, int]:
    return (a[0], a[1] + b[1])


def test_tumbling_windows_emit_once_when_the_watermark_passes_their_end() -> None:
    batches = [
        [rec("a", 1.0), rec("b", 1.5), rec("a", 2.5)],  # watermark after: 2.5 - 1 = 1.5
        [rec("a", 1.2), rec("a", 4.1)],  # 1.2 is out of order but its window [0, 2) is open; watermark 3.1
        [rec("a", 0.5), rec("b", 9.0)],  # 0.5: window [0, 2) was emitted -> late; watermark 8
    ]
    wins, late = run(batches, lambda ets: ets.tumbling_window(2).count_by_key(name="c"))
    assert wins == [
        [],
        [("a", 0.0, 2.0, 2), ("b", 0.0, 2.0, 1)],
        [("a", 2.0, 4.0, 1), ("a", 4.0, 6.0, 1)],
    ]
    assert late == [[], [], [rec("a", 0.5)]]


def test_allowed_lateness_keeps_a_window_open_longer() -> None:
    batches = [[rec("a", 1.0), rec("a", 3.5)], [rec("a", 1.9)], [rec("a", 6.0)]]
    wins, late = run(batches, lambda ets: ets.tumbling_window(2, allowed_lateness=1).reduce_by_key(add, name="r"))
    # watermark 2.5 after batch 1: [0, 2) stays open until 2 + 1 <= watermark (batch 3, watermark 5)
    assert [[(k, s, e, v[1]) for k, s, e, v in b] for b in wins] == [[], [], [("a", 0.0, 2.0, 2), ("a", 2.0, 4.0, 1)]]
    assert late == [[], [], []]


def test_sliding_windows_count_a_record_in_every_window_it_falls_in() -> None:
    batches = [[rec("a", 0.5), rec("a", 1.5)], [rec("a", 10.0)]]
    wins, _ = run(batches, lambda ets: ets.sliding_window(2, 1).count_by_key(name="s"))
    assert wins == [[], [("a", -1.0, 1.0, 1), ("a", 0.0, 2.0, 2), ("a", 1.0, 3.0, 1)]]


def test_session_windows_merge_per_key_when_a_record_bridges_the_gap() -> None:
    batches = [
        [rec("a", 0.0), rec("a", 2.5), rec("b", 0.5)],  # a: two sessions (gap 2): [0, 2) and [2.5, 4.5); watermark 1.5
        [rec("a", 1.5)],  # bridges them: [0, 4.5)
        [rec("z", 20.0)],  # watermark 19: emitted in end order
    ]
    wins, _ = run(batches, lambda ets: ets.session_window(2).count_by_key(name="sess"))
    assert wins == [[], [], [("b", 0.5, 2.5, 1), ("a", 0.0, 4.5, 3)]]


def test_count_of_unkeyed_records() -> None:
    ssc = sk.StreamingContext(1.0, clock=ManualClock())
    sink = ListSink()
    ets = ssc.queue_stream([[1, 1.5, 2.5], [9]], name="in").with_event_time(lambda s: s, max_delay=0)  # epoch seconds
    ets.tumbling_window(timedelta(seconds=1)).count(name="n").map(lambda r: (r.key, r.start.timestamp(), r.value)).write_to(sink)
    ssc.run()
    ssc.stop()
    assert sink.records() == [(None, 1.0, 2), (None, 2.0, 1)]


def test_late_records_without_a_side_stream_are_counted_and_logged(caplog: pytest.LogCaptureFixture) -> None:
    batches = [[rec("a", 5.0)], [rec("a", 0.1), rec("a", 0.2)]]
    with caplog.at_level(logging.WARNING, logger="streamkeep.event_time"):
        wins, late = run(batches, lambda ets: ets.tumbling_window(1).count_by_key(name="c"), late=False)
    assert late == []
    msgs = [r.getMessage() for r in caplog.records if r.name == "streamkeep.event_time"]
    assert len(msgs) == 1 and "dropped 2 late record(s)" in msgs[0] and "'c'" in msgs[0] and ".late_records()" in msgs[0]


def test_idle_timeout_flushes_the_last_windows_of_a_finished_input() -> None:
    def job(idle: float | None) -> list[Any]:
        ssc = sk.StreamingContext(1.0, clock=ManualClock())
        sink = ListSink()
        ets = ssc.queue_stream([[rec("a", 0.5)], [rec("a", 1.5)]], name="in").with_event_time(
            lambda kv: kv[1][0], max_delay=timedelta(seconds=1), idle_timeout=idle
        )
        ets.tumbling_window(1).count_by_key(name="c").map(flat).write_to(sink)
        ssc.run()  # returns once the input is exhausted and no window waits for the idle watermark
        ssc.stop()
        return sink.records()

    # event times are epoch seconds here: windows relative to T0 are far negative, so compare the counts only
    assert [r[3] for r in job(None)] == []  # max 1.5 - delay 1 = 0.5: no window closed, none ever will
    assert [r[3] for r in job(3.0)] == [1, 1]


@pytest.mark.parametrize(
    ("value", "words"),
    [
        (1_700_000_000_000, "returned int 1700000000000, which as epoch seconds is past the year 5000: epoch milliseconds?"),
        (1.5e12, "epoch milliseconds? return ms / 1000"),
        ("x", "returned str 'x'; return a datetime (aware; a naive one is taken as UTC) or epoch seconds"),
        (True, "returned bool True"),
        (float("nan"), "returned float nan, not a time"),
        (None, "returned NoneType None"),
    ],
)
def test_a_bad_event_time_names_the_operator_and_the_record(value: Any, words: str) -> None:
    ssc = sk.StreamingContext(1.0, clock=ManualClock())
    ets = ssc.queue_stream([[("k", 1)]], name="in").with_event_time(lambda kv: value, max_delay=1)
    ets.tumbling_window(1).count_by_key(name="per_sec").foreach_batch(lambda b: None)
    with pytest.raises(UserFunctionError) as info:
        ssc.run()
    ssc.stop()
    msg = str(info.value)
    assert words in msg and "'per_sec'" in msg and "('k', 1)" in msg and info.value.operator == "per_sec"
    assert "the event time function (ts)" in msg and "batch time" in msg


def test_bad_window_arguments_are_config_errors() -> None:
    ssc = sk.StreamingContext(1.0, clock=ManualClock())
    s = ssc.queue_stream([[]], name="in")
    with pytest.raises(ConfigError, match="multiple of slide"):
        s.with_event_time(lambda r: r, max_delay=1).sliding_window(3, 2)
    with pytest.raises(ConfigError, match="max_delay must be positive"):
        s.with_event_time(lambda r: r, max_delay=-1)
    with pytest.raises(ConfigError, match="ts"):
        s.with_event_time(lambda a, b: a, max_delay=1)  # type: ignore[arg-type,misc]


def _ckpt_job(url: str, size: float, sink: ListSink, allow: tuple[str, ...] = ()) -> sk.StreamingContext:
    ssc = sk.StreamingContext(1.0, checkpoint=url, clock=ManualClock(), allow_state_loss=allow)
    batches = [[rec("a", 1.0)], [rec("a", 2.0)], [rec("a", 9.0)], [rec("a", 30.0)]]
    ets = ssc.queue_stream(batches, name="in").with_event_time(lambda kv: at(kv[1][0]), max_delay=1)
    ets.tumbling_window(size).count_by_key(name="per_win").map(flat).write_to(sink)
    return ssc


def test_resume_continues_the_open_windows_and_a_size_change_is_refused_by_name(tmp_path: Path) -> None:
    url = str(tmp_path / "ckpt")
    first = ListSink()
    ssc = sk.StreamingContext.get_or_create(url, lambda: _ckpt_job(url, 5, first))
    ssc.run(max_batches=2)
    ssc.stop()
    assert first.records() == []  # [0, 5) still open: its two records live in the checkpoint
    with pytest.raises(IncompatibleCheckpointError) as info:
        sk.StreamingContext.get_or_create(url, lambda: _ckpt_job(url, 10, ListSink()))
    msg = str(info.value)
    assert "'per_win'" in msg and "size_ms 5000 -> 10000" in msg and "allow_state_loss={'per_win'}" in msg
    second = ListSink()
    ssc = sk.StreamingContext.get_or_create(url, lambda: _ckpt_job(url, 5, second))
    ssc.run(max_batches=2)
    ssc.stop()
    assert second.records() == [("a", 0.0, 5.0, 2), ("a", 5.0, 10.0, 1)]
    fresh = ListSink()
    ssc = sk.StreamingContext.get_or_create(url, lambda: _ckpt_job(url, 10, fresh, ("per_win",)))
    ssc.stop()


def test_windows_describe_their_shape_for_the_checkpoint() -> None:
    ssc = sk.StreamingContext(1.0, clock=ManualClock())
    ets = ssc.queue_stream([[]], name="in").with_event_time(lambda r: r, max_delay=2, idle_timeout=5)
    ets.sliding_window(4, 2, allowed_lateness=1).reduce_by_key(operator.add, name="w").foreach_batch(lambda b: None)
    desc = ssc._graph.describe()["operators"]["w"]
    assert desc == {
        "kind": "event_window_reduce", "codec": "msgpack", "window": "sliding", "size_ms": 4000, "window_slide_ms": 2000,
        "gap_ms": None, "max_delay_ms": 2000, "allowed_lateness_ms": 1000, "idle_timeout_ms": 5000, "emit": "final", "feeds": ["in"],
    }


def test_checkpoint_inspect_shows_the_watermark(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from streamkeep.cli._main import main

    url = str(tmp_path / "ckpt")
    ssc = sk.StreamingContext.get_or_create(url, lambda: _ckpt_job(url, 5, ListSink()))
    ssc.run(max_batches=3)  # events 1, 2, 9 s (relative to T0), max_delay 1 s: watermark T0 + 8 s; [5, 10) open
    ssc.stop()
    capsys.readouterr()
    assert main(["checkpoint", "inspect", url, "--json"]) == 0
    op = json.loads(capsys.readouterr().out)["operators"]["per_win"]
    t0 = int(T0.timestamp() * 1000)
    assert op["event_time"] == {
        "watermark_ms": t0 + 8000, "watermark": "2026-01-01T00:00:08Z", "max_event_ms": t0 + 9000, "open_windows": 1, "late_records": 0,
        "partitions": {"in": {"watermark_ms": t0 + 8000, "max_event_ms": t0 + 9000, "last_records_batch_ms": 3000}},
    }
    assert op["keys"] == 1
    assert main(["checkpoint", "inspect", url]) == 0
    assert "event time: " in capsys.readouterr().out


def test_the_docs_example_prints_what_the_docs_say(capsys: pytest.CaptureFixture[str]) -> None:
    text = (Path(__file__).parents[3] / "docs" / "event-time.md").read_text()
    code = text.split("```python\n", 1)[1].split("```", 1)[0]
    printed = text.split("prints\n\n```\n", 1)[1].split("```", 1)[0]
    exec(compile(code, "docs/event-time.md", "exec"), {})
    assert capsys.readouterr().out == printed


def test_two_late_records_streams_both_get_every_late_record() -> None:
    ssc = sk.StreamingContext(1.0, clock=ManualClock())
    ets = ssc.queue_stream([[rec("a", 5.0)], [rec("a", 0.1)]], name="in").with_event_time(lambda kv: at(kv[1][0]), max_delay=1)
    out = ets.tumbling_window(1).count_by_key(name="c")
    one, two = ListSink("one"), ListSink("two")
    out.late_records().write_to(one)
    out.late_records().map(lambda r: r[0]).write_to(two)
    ssc.run()
    ssc.stop()
    assert one.records() == [rec("a", 0.1)] and two.records() == ["a"]
