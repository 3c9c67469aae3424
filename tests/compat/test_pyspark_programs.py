"""Typical PySpark Streaming programs on the facade, batch by batch against Spark's semantics.

Each program is written as it would be for PySpark (camelCase, bare seconds, no
operator names) and driven with ``ssc._ssc.run(n)``, which runs batch times back
to back without waiting for the wall clock. Expected outputs follow the Spark
Streaming programming guide: per-batch results, windows covering the batches in
``(t - window, t]`` and produced every slide, ``reduceByKeyAndWindow`` with an
inverse function keeping keys whose count dropped to 0 unless ``filterFunc``
drops them, ``updateStateByKey`` calling the update function for every key with
state (new values ``[]``) and removing keys for which it returns None.
"""

from __future__ import annotations

import operator
import os
from collections import Counter
from datetime import datetime, timedelta
from typing import Any

import pytest
from _pyspark_helpers import run_batches

from streamkeep.compat.pyspark import DStream, SparkContext, StreamingContext


def collect(stream: DStream, *, sort: bool = True) -> list[list[Any]]:
    """Record every batch's records (sorted by repr unless sort=False)."""
    out: list[list[Any]] = []
    stream.foreachRDD(lambda rdd: out.append(sorted(rdd.collect(), key=repr) if sort else rdd.collect()))
    return out


# -- word count (network_wordcount.py / the programming guide's first example) -------------

WORDS_IN = [["hello world", "hello spark"], [], ["world world", "bye"]]


def test_word_count_per_batch(sc: SparkContext) -> None:
    ssc = StreamingContext(sc, 1)
    lines = ssc.queueStream([list(b) for b in WORDS_IN])
    counts = lines.flatMap(lambda line: line.split(" ")).map(lambda word: (word, 1)).reduceByKey(lambda a, b: a + b)
    got = collect(counts)
    run_batches(ssc, 4)
    assert got == [
        [("hello", 2), ("spark", 1), ("world", 1)],
        [],
        [("bye", 1), ("world", 2)],
        [],  # the queue ran out: empty batches keep coming, as in Spark
    ]


def test_pprint_prints_like_pyspark(sc: SparkContext, capsys: pytest.CaptureFixture[str]) -> None:
    ssc = StreamingContext(sc, 1)
    times: list[datetime] = []
    stream = ssc.queueStream([list(range(12)), [1]])
    stream.foreachRDD(lambda t, rdd: times.append(t))
    stream.pprint()
    stream.pprint(num=1)
    run_batches(ssc, 2)
    out = capsys.readouterr().out
    dash = "-" * 43
    first = "\n".join([dash, f"Time: {times[0]}", dash, *map(str, range(10)), "...", ""])
    assert out.startswith(first + "\n")
    assert "\n".join([dash, f"Time: {times[0]}", dash, "0", "...", ""]) in out
    assert "\n".join([dash, f"Time: {times[1]}", dash, "1", ""]) in out
    assert times[0].tzinfo is None  # PySpark passes naive local datetimes


# -- windowed counts -----------------------------------------------------------------------

EVENTS = [["a", "b", "a"], ["b"], ["c", "a"], [], ["a"], [], [], []]


def _window_reference(batches: list[list[str]], window: int, slide: int, n: int, *, keep_zeros: bool) -> list[list[tuple[str, int]]]:
    """Spark's windowed counts, computed naively: the window at batch i covers (i - window, i]."""
    out = []
    seen: set[str] = set()
    for i in range(1, n + 1):
        if i % slide:
            continue
        c: Counter[str] = Counter()
        for j in range(max(1, i - window + 1), i + 1):
            if j <= len(batches):
                c.update(batches[j - 1])
        for j in range(1, i + 1):  # keys that ever entered a window stay (inverse function path)
            if j <= len(batches):
                seen.update(batches[j - 1])
        keys = seen if keep_zeros else {k for k, v in c.items() if v}
        out.append(sorted((k, c[k]) for k in keys))
    return out


@pytest.mark.parametrize(("window", "slide"), [(3, 1), (4, 2), (2, 2)])
def test_reduce_by_key_and_window_with_inverse(sc: SparkContext, window: int, slide: int) -> None:
    ssc = StreamingContext(sc, 1)
    pairs = ssc.queueStream([list(b) for b in EVENTS]).map(lambda w: (w, 1))
    with_inv = pairs.reduceByKeyAndWindow(lambda a, b: a + b, lambda a, b: a - b, window, slide)
    filtered = pairs.reduceByKeyAndWindow(operator.add, operator.sub, window, slide, filterFunc=lambda kv: kv[1] > 0)
    plain = pairs.reduceByKeyAndWindow(lambda a, b: a + b, None, window, slide)
    got_inv, got_filtered, got_plain = collect(with_inv), collect(filtered), collect(plain)
    run_batches(ssc, len(EVENTS))
    assert got_inv == _window_reference(EVENTS, window, slide, len(EVENTS), keep_zeros=True)
    assert got_filtered == _window_reference(EVENTS, window, slide, len(EVENTS), keep_zeros=False)
    assert got_plain == got_filtered


def test_window_operators_drain_out(sc: SparkContext) -> None:
    ssc = StreamingContext(sc, 1)
    words = ssc.queueStream([["x", "y"], ["x"], []])
    got_window = collect(words.window(2, 1))
    got_count = collect(words.countByWindow(2, 1))
    got_values = collect(words.countByValueAndWindow(2, 1))
    got_reduce = collect(words.map(len).reduceByWindow(operator.add, operator.sub, 2, 1))
    got_groups = collect(words.map(lambda w: (w, 1)).groupByKeyAndWindow(2, 1))
    run_batches(ssc, 5)
    assert got_window == [["x", "y"], ["x", "x", "y"], ["x"], [], []]
    # count keeps emitting the (now zero) running count, as Spark's inverse reduce does
    assert got_count == [[2], [3], [1], [0], [0]]
    assert got_values == [[("x", 1), ("y", 1)], [("x", 2), ("y", 1)], [("x", 1)], [], []]
    assert got_reduce == [[2], [3], [1], [0], [0]]
    assert got_groups == [[("x", [1]), ("y", [1])], [("x", [1, 1]), ("y", [1])], [("x", [1])], [], []]


# -- stateful sessions ---------------------------------------------------------------------

SESSION_EVENTS = [
    [("alice", "login"), ("bob", "login"), ("alice", "click")],
    [("alice", "click")],
    [("bob", "logout")],
    [],
    [("carol", "login")],
    [],
]


def sessions(new_values: list[str], state: dict[str, Any] | None) -> dict[str, Any] | None:
    """A session per user: events seen, idle batches; ends on logout or after 2 idle batches."""
    if "logout" in new_values:
        return None
    if state is None:
        state = {"events": 0, "idle": 0}
    if not new_values:
        if state["idle"] + 1 >= 2:
            return None
        return {"events": state["events"], "idle": state["idle"] + 1}
    return {"events": state["events"] + len(new_values), "idle": 0}


def test_update_state_by_key_sessions(sc: SparkContext) -> None:
    ssc = StreamingContext(sc, 1)
    calls: list[tuple[int, str]] = []
    batch_no = [0]

    def tracked(new_values: list[str], state: Any) -> Any:
        calls.append((batch_no[0], "new" if new_values else "idle"))
        return sessions(new_values, state)

    events = ssc.queueStream([list(b) for b in SESSION_EVENTS])
    events.foreachRDD(lambda rdd: batch_no.__setitem__(0, batch_no[0] + 1))
    state = events.updateStateByKey(tracked, initialRDD=sc.parallelize([("dave", {"events": 5, "idle": 0})]))
    got = collect(state)
    run_batches(ssc, len(SESSION_EVENTS))

    def s(events: int, idle: int = 0) -> dict[str, int]:
        return {"events": events, "idle": idle}

    assert got == [
        [("alice", s(2)), ("bob", s(1)), ("dave", s(5, 1))],
        [("alice", s(3)), ("bob", s(1, 1))],  # dave idle twice: removed
        [("alice", s(3, 1))],  # bob logged out
        [],  # alice idle twice
        [("carol", s(1))],
        [("carol", s(1, 1))],
    ]
    # the update function runs for every key with state, also without new values
    assert Counter(kind for _, kind in calls) == Counter({"new": 5, "idle": 6})


def test_update_state_by_key_accepts_a_plain_list_as_initial_state(sc: SparkContext) -> None:
    ssc = StreamingContext(sc, 1)
    running = ssc.queueStream([[("k", 1)], [("k", 2)]]).updateStateByKey(lambda vs, old: sum(vs) + (old or 0), initialRDD=[("k", 10)])
    got = collect(running)
    run_batches(ssc, 2)
    assert got == [[("k", 11)], [("k", 13)]]


# -- transform / foreachRDD ordering -------------------------------------------------------


def test_transform_runs_before_outputs_which_run_in_registration_order(sc: SparkContext) -> None:
    ssc = StreamingContext(sc, 1)
    events: list[tuple[str, Any, Any]] = []

    def tag(t: datetime, rdd: Any) -> Any:
        events.append(("transform", t, rdd.count()))
        return rdd.map(lambda x: x * 10)

    tens = ssc.queueStream([[1, 2], [3]]).transform(tag)
    tens.foreachRDD(lambda t, rdd: events.append(("first", t, rdd.collect())))
    tens.foreachRDD(lambda rdd: events.append(("second", None, rdd.collect())))
    tens.count().foreachRDD(lambda rdd: events.append(("third", None, rdd.collect())))
    run_batches(ssc, 2)
    kinds = [e[0] for e in events]
    assert kinds == ["transform", "first", "second", "third"] * 2  # transform once per batch, before every output
    t1, t2 = events[0][1], events[4][1]
    assert events[1][1] == t1 and t2 - t1 == timedelta(seconds=1)
    assert [e[2] for e in events if e[0] == "first"] == [[10, 20], [30]]
    assert [e[2] for e in events if e[0] == "third"] == [[2], [1]]


def test_transform_must_return_an_rdd(sc: SparkContext) -> None:
    from streamkeep.errors import StreamkeepError

    ssc = StreamingContext(sc, 1)
    ssc.queueStream([[1]]).transform(lambda rdd: rdd.collect()).pprint()
    with pytest.raises((TypeError, StreamkeepError), match="must return an RDD"):
        run_batches(ssc, 1)


def test_joins_unions_and_multi_stream_transform(sc: SparkContext) -> None:
    ssc = StreamingContext(sc, 1)
    left = ssc.queueStream([[("a", 1), ("b", 2)], [("c", 3)]])
    right = ssc.queueStream([[("a", "x"), ("z", "y")], []])
    third = ssc.queueStream([[("q", 0)], [("r", 0)]])
    got_join = collect(left.join(right))
    got_left = collect(left.leftOuterJoin(right))
    got_full = collect(left.fullOuterJoin(right))
    got_cogroup = collect(left.cogroup(right).mapValues(lambda g: (list(g[0]), list(g[1]))))
    got_union = collect(ssc.union(left, right, third))
    got_with = collect(left.transformWith(lambda a, b: a.union(b).keys(), right))
    got_with_time = collect(left.transformWith(lambda t, a, b: a.map(lambda kv: (kv[0], t.year > 2000)), right))
    got_multi = collect(ssc.transform([left, right, third], lambda rdds: sc.parallelize([tuple(r.count() for r in rdds)])))
    run_batches(ssc, 2)
    assert got_join == [[("a", (1, "x"))], []]
    assert got_left == [[("a", (1, "x")), ("b", (2, None))], [("c", (3, None))]]
    assert got_full == [[("a", (1, "x")), ("b", (2, None)), ("z", (None, "y"))], [("c", (3, None))]]
    assert got_cogroup == [[("a", ([1], ["x"])), ("b", ([2], [])), ("z", ([], ["y"]))], [("c", ([3], []))]]
    assert got_union == [[("a", "x"), ("a", 1), ("b", 2), ("q", 0), ("z", "y")], [("c", 3), ("r", 0)]]
    assert got_with == [["a", "a", "b", "z"], ["c"]]
    assert got_with_time == [[("a", True), ("b", True)], [("c", True)]]
    assert got_multi == [[(2, 2, 1)], [(1, 0, 1)]]


def test_per_record_and_per_batch_operators(sc: SparkContext) -> None:
    ssc = StreamingContext(sc, 1)
    nums = ssc.queueStream([[1, 2, 3, 4], [5]]).repartition(2)
    got = {
        "glom": collect(nums.glom()),
        "mpwi": collect(nums.mapPartitionsWithIndex(lambda i, it: [(i, sum(it))])),
        "reduce": collect(nums.reduce(operator.add)),
        "count": collect(nums.count()),
        "cbv": collect(nums.map(lambda x: x % 2).countByValue()),
        "combine": collect(nums.map(lambda x: (x % 2, x)).combineByKey(lambda v: [v], lambda c, v: c + [v], lambda a, b: a + b).mapValues(sorted)),
        "group": collect(nums.map(lambda x: (x % 2, x)).groupByKey().mapValues(sorted)),
        "fmv": collect(nums.map(lambda x: (x, x)).flatMapValues(lambda v: range(v % 3))),
        "parts": collect(nums.map(lambda x: (x, x)).partitionBy(3).glom().map(len), sort=False),
        "mp": collect(nums.mapPartitions(lambda it: [sum(it)])),
        "filter": collect(nums.filter(lambda x: x > 2).cache().persist(None).checkpoint(10)),
    }
    run_batches(ssc, 2)
    assert got["glom"] == [[[1, 3], [2, 4]], [[5], []]]
    assert got["mpwi"] == [[(0, 4), (1, 6)], [(0, 5), (1, 0)]]
    assert got["reduce"] == [[10], [5]]
    assert got["count"] == [[4], [1]]
    assert got["cbv"] == [[(0, 2), (1, 2)], [(1, 1)]]
    assert got["combine"] == [[(0, [2, 4]), (1, [1, 3])], [(1, [5])]]
    assert got["group"] == got["combine"]
    assert got["fmv"] == [[(1, 0), (2, 0), (2, 1), (4, 0)], [(5, 0), (5, 1)]]
    assert [sum(b) for b in got["parts"]] == [4, 1] and all(len(b) == 3 for b in got["parts"])
    assert got["mp"] == [[4, 6], [0, 5]]
    assert got["filter"] == [[3, 4], [5]]


def test_save_as_text_files_writes_spark_layout(sc: SparkContext, tmp_path: Any) -> None:
    ssc = StreamingContext(sc, 1)
    times: list[int] = []
    stream = ssc.queueStream([["a", "b"], ["c"]])
    stream.foreachRDD(lambda t, rdd: times.append(round(t.timestamp() * 1000)))
    stream.saveAsTextFiles(str(tmp_path / "out"), "txt")
    stream.saveAsTextFiles(str(tmp_path / "plain"))
    run_batches(ssc, 2)
    first = tmp_path / f"out-{times[0]}.txt"  # a queued list is parallelized over local[2]'s 2 partitions, as in PySpark
    assert sorted(os.listdir(first)) == ["_SUCCESS", "part-00000", "part-00001"]
    assert [(first / p).read_text() for p in ("part-00000", "part-00001")] == ["a\n", "b\n"]
    second = tmp_path / f"plain-{times[1]}"
    assert [(second / p).read_text() for p in ("part-00000", "part-00001")] == ["", "c\n"]


def test_queue_stream_one_at_a_time_false_and_default(sc: SparkContext) -> None:
    ssc = StreamingContext(sc, 1)
    all_at_once = collect(ssc.queueStream([sc.parallelize([1, 2]), [3]], oneAtATime=False), sort=False)
    with_default = collect(ssc.queueStream([[1]], default=sc.parallelize([0])), sort=False)
    run_batches(ssc, 3)
    assert all_at_once == [[1, 2, 3], [], []]
    assert with_default == [[1], [0], [0]]


def test_text_file_stream_reads_new_files(sc: SparkContext, tmp_path: Any) -> None:
    ssc = StreamingContext(sc, 1)
    words = ssc.textFileStream(str(tmp_path)).flatMap(str.split)
    got = collect(words.map(lambda w: (w, 1)).reduceByKey(operator.add))
    ssc._ssc.run(max_batches=1)
    (tmp_path / "a.txt").write_text("to be\nor not to be\n")
    run_batches(ssc, 2)
    assert got == [[], [("be", 2), ("not", 1), ("or", 1), ("to", 2)], []]


def test_socket_text_stream_network_word_count(sc: SparkContext) -> None:
    """The network_wordcount.py example against a local TCP server (like ``nc -lk``)."""
    import socket
    import threading
    import time

    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(1)
    port = server.getsockname()[1]
    sent, done = threading.Event(), threading.Event()

    def serve() -> None:
        conn, _ = server.accept()
        with conn:
            conn.sendall(b"hello world\nhello\n")
            sent.set()
            done.wait(30)  # keep the connection open while the job plans its batches

    th = threading.Thread(target=serve, daemon=True)
    th.start()
    ssc = StreamingContext(sc, 1)
    counts = ssc.socketTextStream("127.0.0.1", port).flatMap(lambda line: line.split(" ")).map(lambda w: (w, 1)).reduceByKey(operator.add)
    got = collect(counts)
    deadline = time.monotonic() + 30
    try:
        while sum(n for b in got for _, n in b) < 3 and time.monotonic() < deadline:
            ssc._ssc.run(max_batches=1)  # batch times run back to back; lines arrive when they arrive
            sent.wait(0.05)
            time.sleep(0.01)
    finally:
        done.set()
        ssc.stop(stopSparkContext=False)
        server.close()
    total: Counter[str] = Counter()
    for b in got:
        total.update(dict(b))
    assert total == {"hello": 2, "world": 1}
