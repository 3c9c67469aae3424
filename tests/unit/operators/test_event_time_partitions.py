"""Event time (issue 16, second part): event-time values, watermarks per source partition, idle partitions,
``emit="updates"``, and late records in the metrics."""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest

import streamkeep as sk
from streamkeep.dstream._event_time import event_ms
from streamkeep.errors import ConfigError
from streamkeep.testing import ListSink, ManualClock

T0 = datetime(2026, 1, 1, tzinfo=timezone.utc)
T0_S = int(T0.timestamp())


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def flat(r: sk.WindowResult) -> tuple[Any, float, float, Any]:
    """(key, start s, end s, value) relative to T0."""
    return (r.key, (r.start - T0).total_seconds(), (r.end - T0).total_seconds(), r.value)


def ts(kv: tuple[str, float]) -> datetime:
    return at(kv[1])


def windows(ssc: sk.StreamingContext, out: Any, *, max_batches: int | None = None) -> tuple[list[list[Any]], list[list[Any]]]:
    """Run `ssc`: (windows per batch, late records per batch) of the event-time windows `out`."""
    wins, lates = ListSink("w"), ListSink("late")
    out.map(flat).write_to(wins)
    out.late_records().write_to(lates)
    ssc.run(max_batches)
    ssc.stop()
    return [rs for _, rs in wins.batches], [rs for _, rs in lates.batches]


# -- what ts may return ------------------------------------------------------------------------


@pytest.mark.parametrize(
    "event_time",
    [
        lambda kv: at(kv[1]),  # aware datetime
        lambda kv: at(kv[1]).replace(tzinfo=None),  # naive: taken as UTC
        lambda kv: at(kv[1]).astimezone(timezone(timedelta(hours=5))),  # another zone: the same instant
        lambda kv: T0_S + kv[1],  # float epoch seconds
        lambda kv: T0_S + int(kv[1]) if kv[1] == int(kv[1]) else T0_S + kv[1],  # int epoch seconds where whole
    ],
    ids=["aware", "naive-utc", "other-zone", "float-seconds", "int-seconds"],
)
def test_ts_may_return_a_datetime_or_epoch_seconds_with_the_same_windows(event_time: Any) -> None:
    batches = [[("a", 1.0), ("b", 1.5), ("a", 2.001)], [("a", 1.2), ("a", 4.0)], [("a", 0.5), ("b", 9.0)]]
    ssc = sk.StreamingContext(1.0, clock=ManualClock())
    ets = ssc.queue_stream(batches, name="in").with_event_time(event_time, max_delay=timedelta(seconds=1))
    wins, late = windows(ssc, ets.tumbling_window(timedelta(seconds=2)).count_by_key(name="c"))
    assert wins == [[], [("a", 0.0, 2.0, 2), ("b", 0.0, 2.0, 1)], [("a", 2.0, 4.0, 1), ("a", 4.0, 6.0, 1)]]
    assert late == [[], [], [("a", 0.5)]]


def test_epoch_seconds_are_exact_to_the_millisecond() -> None:
    assert event_ms(1) == 1000 and event_ms(-2) == -2000
    assert event_ms(1.001) == 1001  # 1.001 * 1000 == 1000.9999999999999
    assert event_ms(0.3) == 300 and event_ms(1767225600.123) == 1767225600123
    assert event_ms(1.0004) == 1000 and event_ms(-0.0004) == -1  # floored, like datetimes
    assert event_ms(datetime(2026, 1, 1, 0, 0, 1, 999_999, tzinfo=timezone.utc)) == (T0_S + 1) * 1000 + 999
    assert event_ms(datetime(1969, 12, 31, 23, 59, 59, 999_500, tzinfo=timezone.utc)) == -1


def test_durations_are_seconds_or_timedeltas_and_zero_is_allowed_where_it_means_something() -> None:
    ssc = sk.StreamingContext(1.0, clock=ManualClock())
    s = ssc.queue_stream([[]], name="in")
    ets = s.with_event_time(ts, max_delay=timedelta(0), idle_timeout=timedelta(seconds=2))
    ets.tumbling_window(timedelta(seconds=3), allowed_lateness=timedelta(0)).count_by_key(name="a").foreach_batch(lambda b: None)
    s.with_event_time(ts, max_delay=0.5, idle_timeout=2).session_window(1.5, allowed_lateness=0).count(name="b").foreach_batch(lambda b: None)
    ops = ssc._graph.describe()["operators"]
    assert (ops["a"]["max_delay_ms"], ops["a"]["idle_timeout_ms"], ops["a"]["size_ms"], ops["a"]["allowed_lateness_ms"]) == (0, 2000, 3000, 0)
    assert (ops["b"]["max_delay_ms"], ops["b"]["idle_timeout_ms"], ops["b"]["gap_ms"], ops["b"]["allowed_lateness_ms"]) == (500, 2000, 1500, 0)
    with pytest.raises(ConfigError, match="idle_timeout must be positive"):
        s.with_event_time(ts, max_delay=1, idle_timeout=timedelta(0))
    with pytest.raises(ConfigError, match="size must be seconds"):
        s.with_event_time(ts, max_delay=1).tumbling_window("1s")  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="emit must be 'final'"):
        s.with_event_time(ts, max_delay=1).tumbling_window(1, emit="append")


# -- watermarks per source partition -----------------------------------------------------------

# Partition 0 is ahead in event time (10 s); partition 1 is behind (1 s, 2 s) and catches up later.
SKEWED = [
    [[("a", 10.0)], [("b", 1.0)]],
    [[], [("b", 2.0)]],
    [[("a", 11.0)], [("b", 20.0)]],
]


def partitioned(ssc: sk.StreamingContext, batches: list[list[list[Any]]]) -> Any:
    """One queue source per source partition (a queue source is one partition), in a union: "in0", "in1", ..."""
    streams = [ssc.queue_stream([b[p] for b in batches], name=f"in{p}") for p in range(len(batches[0]))]
    return streams[0].union(*streams[1:])


def _partitioned_job(batches: list[Any], idle: float | None = None, **kw: Any) -> tuple[list[list[Any]], list[list[Any]]]:
    ssc = sk.StreamingContext(1.0, clock=ManualClock())
    ets = partitioned(ssc, batches).with_event_time(ts, max_delay=1, idle_timeout=idle)
    return windows(ssc, ets.tumbling_window(1, **kw).count_by_key(name="c"), max_batches=len(batches))


def test_the_watermark_is_the_minimum_over_source_partitions() -> None:
    wins, late = _partitioned_job(SKEWED)
    # One watermark over all records would be 9 s after batch 1, making ("b", 2.0) late in batch 2.
    # Per partition: min(10 - 1, 1 - 1) = 0, then min(9, 1) = 1, then min(11 - 1, 20 - 1) = 10.
    assert late == [[], [], []]
    assert wins == [[], [], [("b", 1.0, 2.0, 1), ("b", 2.0, 3.0, 1)]]


def test_an_idle_partition_stops_holding_the_watermark_back() -> None:
    batches = [[[("a", 10.0)], [("b", 1.0)]], [[("a", 11.0)], []], [[("a", 12.0)], []], [[("a", 13.0)], []]]
    held, _ = _partitioned_job(batches)
    assert held == [[], [], [], []]  # partition 1 (at 1 s) holds the watermark at 0 s
    wins, late = _partitioned_job(batches, idle=2)
    # batch times 1, 2, 3, 4 s: partition 1's last records were in batch 1; idle from batch 3 (3 - 1 >= 2)
    assert wins == [[], [], [("b", 1.0, 2.0, 1), ("a", 10.0, 11.0, 1)], [("a", 11.0, 12.0, 1)]]
    assert late == [[], [], [], []]


def test_each_source_of_a_union_is_a_partition_but_a_shuffle_loses_them() -> None:
    """(The other tests use a union too: here with per-record operators after it, then with a shuffle.)"""
    def job(shuffle: bool) -> tuple[list[list[Any]], list[list[Any]]]:
        ssc = sk.StreamingContext(1.0, clock=ManualClock())
        fast = ssc.queue_stream([b[0] for b in SKEWED], name="fast")
        slow = ssc.queue_stream([b[1] for b in SKEWED], name="slow")
        both = fast.union(slow).map(lambda kv: kv)  # per-record operators keep the partitions
        if shuffle:
            both = both.repartition(2)
        ets = both.with_event_time(ts, max_delay=1)
        return windows(ssc, ets.tumbling_window(1).count_by_key(name="c"), max_batches=3)

    wins, late = job(False)
    assert late == [[], [], []] and wins[2] == [("b", 1.0, 2.0, 1), ("b", 2.0, 3.0, 1)]
    wins, late = job(True)  # one watermark over all records: 9 s after batch 1
    assert wins[0] == [("b", 1.0, 2.0, 1)] and late[1] == [("b", 2.0)]


def test_partition_watermarks_are_checkpointed_and_shown_by_inspect(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from streamkeep.cli._main import main

    # Partition 1 is ahead; after the restart only partition 1 has records for a while: the restored
    # watermark of partition 0 (at 1 s) must keep holding the combined watermark back.
    batches = [[[("a", 1.0)], [("b", 10.0)]], [[], [("b", 11.0)]], [[("a", 12.0)], []]]
    url = str(tmp_path / "ckpt")

    def setup(sink: ListSink, checkpoint: str | None) -> sk.StreamingContext:
        ssc = sk.StreamingContext(1.0, checkpoint=checkpoint, clock=ManualClock())
        ets = partitioned(ssc, batches).with_event_time(ts, max_delay=1)
        ets.tumbling_window(1).count_by_key(name="c").map(flat).write_to(sink)
        return ssc

    whole = ListSink("w")
    ssc = setup(whole, None)
    ssc.run(max_batches=3)
    ssc.stop()
    assert whole.batches == [(1000, []), (2000, []), (3000, [("a", 1.0, 2.0, 1)])]

    first = ListSink("w")
    ssc = sk.StreamingContext.get_or_create(url, lambda: setup(first, url))
    ssc.run(max_batches=1)
    ssc.stop()
    capsys.readouterr()
    assert main(["checkpoint", "inspect", url, "--json"]) == 0
    et = json.loads(capsys.readouterr().out)["operators"]["c"]["event_time"]
    t0 = T0_S * 1000
    assert et["watermark_ms"] == t0 and et["partitions"] == {
        "in0": {"watermark_ms": t0, "max_event_ms": t0 + 1000, "last_records_batch_ms": 1000},
        "in1": {"watermark_ms": t0 + 9000, "max_event_ms": t0 + 10000, "last_records_batch_ms": 1000},
    }
    assert main(["checkpoint", "inspect", url]) == 0
    text = capsys.readouterr().out
    assert "event time: watermark 2026-01-01T00:00:00Z" in text and "partition in1: watermark 2026-01-01T00:00:09Z" in text
    second = ListSink("w")
    ssc = sk.StreamingContext.get_or_create(url, lambda: setup(second, url))
    ssc.run(max_batches=2)
    ssc.stop()
    assert first.batches + second.batches == whole.batches


def test_a_queue_source_is_one_partition_even_with_its_own_partitions() -> None:
    ssc = sk.StreamingContext(1.0, clock=ManualClock())
    ets = ssc.queue_stream(SKEWED, name="in", partitioned=True).with_event_time(ts, max_delay=1)
    wins, late = windows(ssc, ets.tumbling_window(1).count_by_key(name="c"), max_batches=3)
    assert wins[0] == [("b", 1.0, 2.0, 1)] and late[1] == [("b", 2.0)]  # one watermark: 9 s after batch 1


def test_kafka_partition_labels_follow_the_order_read_returns() -> None:
    pytest.importorskip("confluent_kafka")
    from streamkeep.sources.kafka import KafkaSource

    src = KafkaSource(["t", "a"], bootstrap_servers="127.0.0.1:9", name="k")
    plan = {"t:10": [0, 0], "t:2": [0, 3], "a:0": [1, 1]}
    assert src.partition_labels(plan, 0) == ["a:0", "t:2", "t:10"]


# -- emit="updates" ----------------------------------------------------------------------------


def _updates(batches: list[list[Any]], shape: Any) -> tuple[list[list[Any]], list[list[Any]]]:
    ssc = sk.StreamingContext(1.0, clock=ManualClock())
    ets = ssc.queue_stream(batches, name="in").with_event_time(ts, max_delay=1)
    return windows(ssc, shape(ets).count_by_key(name="u"))


def test_updates_mode_emits_a_window_in_every_batch_that_changed_it() -> None:
    batches = [[("a", 0.5), ("a", 1.0)], [("a", 1.5), ("b", 3.0)], [("a", 1.8), ("b", 5.0)]]
    wins, late = _updates(batches, lambda ets: ets.tumbling_window(2, emit="updates"))
    # watermark 0, 2, 4: [0, 2) closes after batch 2, so ("a", 1.8) is late in batch 3
    assert wins == [[("a", 0.0, 2.0, 2)], [("a", 0.0, 2.0, 3), ("b", 2.0, 4.0, 1)], [("b", 4.0, 6.0, 1)]]
    assert late == [[], [], [("a", 1.8)]]
    wins, late = _updates(batches, lambda ets: ets.tumbling_window(2, allowed_lateness=1, emit="updates"))
    # with allowed_lateness 1 s, [0, 2) stays open until the watermark reaches 3 s: ("a", 1.8) updates it
    assert wins[2] == [("a", 0.0, 2.0, 4), ("b", 4.0, 6.0, 1)] and late == [[], [], []]


def test_updates_mode_for_sessions_names_the_session_as_it_is_now() -> None:
    batches = [[("a", 0.0), ("a", 1.0)], [("a", 2.5)], [("z", 30.0)]]
    wins, _ = _updates(batches, lambda ets: ets.session_window(2, emit="updates"))
    assert wins == [[("a", 0.0, 3.0, 2)], [("a", 0.0, 4.5, 3)], [("z", 30.0, 32.0, 1)]]


def test_updates_do_not_alias_state_that_later_batches_change() -> None:
    ssc = sk.StreamingContext(1.0, clock=ManualClock())
    batches = [[("a", (0.5, [1]))], [("a", (0.7, [2]))]]
    ets = ssc.queue_stream(batches, name="in").with_event_time(lambda kv: at(kv[1][0]), max_delay=5)

    def extend(x: tuple[float, list[int]], y: tuple[float, list[int]]) -> tuple[float, list[int]]:
        x[1].extend(y[1])  # changes the window's value in place
        return x

    out = ets.tumbling_window(10, emit="updates").reduce_by_key(extend, name="r")
    got = ListSink()
    out.map(lambda r: r.value[1]).write_to(got)
    seen: list[Any] = []
    out.foreach_batch(lambda b: seen.extend(r.value[1] for r in b.collect()))
    ssc.run()
    ssc.stop()
    assert got.records() == [[1], [1, 2]] and seen == [[1], [1, 2]]


# -- late records in the metrics ---------------------------------------------------------------


class Events(sk.StreamingListener):
    def __init__(self) -> None:
        self.batches: list[sk.BatchInfo] = []

    def on_batch_completed(self, info: sk.BatchInfo) -> None:
        self.batches.append(info)


def test_late_records_are_counted_in_batch_info_and_prometheus(tmp_path: Path) -> None:
    import urllib.request

    from prometheus_client.parser import text_string_to_metric_families

    ev = Events()
    ssc = sk.StreamingContext(1.0, checkpoint=str(tmp_path / "ck"), clock=ManualClock(), ui_port=0)
    batches = [[("a", 5.0)], [("a", 0.1), ("a", 0.2), ("a", 6.0)], [("a", 1.0)], [("a", 9.0)]]
    ets = ssc.queue_stream(batches, name="in").with_event_time(ts, max_delay=1)
    ets.tumbling_window(1).count_by_key(name="c").foreach_batch(lambda b: None)  # no side stream: counted, logged, dropped
    ssc.add_listener(ev)
    try:
        ssc.run()
        assert ssc.ui_url is not None
        with urllib.request.urlopen(ssc.ui_url + "metrics", timeout=10) as r:
            text = r.read().decode()
    finally:
        ssc.stop()
    per_batch = [i.event_time["c"]["late_records"] for i in ev.batches]
    assert per_batch == [0, 2, 1, 0]
    assert [i.event_time["c"]["late_records_total"] for i in ev.batches] == [0, 2, 3, 3]
    wm = [i.event_time["c"]["watermark_ms"] for i in ev.batches]
    assert wm == [(T0_S + s) * 1000 for s in (4, 5, 5, 8)]
    samples = {(s.name, tuple(sorted(s.labels.items()))): s.value for f in text_string_to_metric_families(text) for s in f.samples}
    assert samples[("streamkeep_late_records_total", (("operator", "c"),))] == 3
    assert samples[("streamkeep_event_time_watermark_seconds", (("operator", "c"),))] == T0_S + 8
