"""StreamingContext lifecycle and the built-in sources.

Background jobs run on a ManualClock: tests move the clock and wait for the
effect with `wait_for` (deadline-bounded polling), never with a fixed sleep.
"""

from __future__ import annotations

import socket
import threading
import time
from datetime import datetime, timezone

import pytest

import streamkeep as sk
from streamkeep import ConfigError, UserFunctionError
from streamkeep.errors import SourceError
from streamkeep.testing import ListSink, ManualClock, run_batches


def wait_for(cond, timeout=10.0, what="condition"):
    """Poll `cond` until it is true; fail after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = cond()
        if value:
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.005)


def ctx(start_ms=0, interval=1.0):
    clock = ManualClock(start_ms)
    return sk.StreamingContext(interval, clock=clock), clock


# -- run() ------------------------------------------------------------------------------


def test_last_batch_time_is_none_until_a_batch_ran(tmp_path):
    """A fresh job that ran no batch has no last batch (it reported the time before its first batch, which the demo
    then called 'the last committed batch')."""
    ssc, _ = ctx(start_ms=50_000)
    ssc.rate_stream(1, name="r").write_to(ListSink())
    assert ssc.run(0) == 0
    assert ssc.last_batch_time_ms is None
    assert ssc.run(1) == 1
    assert ssc.last_batch_time_ms == 51_000
    ssc.stop()


def test_run_max_batches_continues_with_the_next_batch_time():
    ssc, _ = ctx()
    sink = ListSink()
    ssc.rate_stream(1, name="r").write_to(sink)
    assert ssc.run(2) == 2
    assert [t for t, _ in sink.batches] == [1000, 2000]
    assert ssc.last_batch_time_ms == 2000
    assert ssc.state == "active"
    assert ssc.run(3) == 3
    assert [t for t, _ in sink.batches] == [1000, 2000, 3000, 4000, 5000]
    assert sink.records() == [(i, i * 1000) for i in range(5)]
    assert ssc.run(0) == 0
    ssc.stop()
    assert ssc.state == "stopped"


def test_run_stops_when_finite_sources_are_exhausted():
    ssc, _ = ctx()
    sink = ListSink()
    ssc.queue_stream([[1], [2, 3], []], name="q").write_to(sink)
    assert ssc.run() == 3
    assert sink.batches == [(1000, [1]), (2000, [2, 3]), (3000, [])]
    assert ssc.run() == 0  # nothing left
    ssc.stop()


def test_run_drains_windows_after_the_input_ends():
    ssc, _ = ctx()
    sink = ListSink()
    ssc.queue_stream([[1], [2]], name="q").window(3, name="w").write_to(sink)
    assert ssc.run() == 4  # 2 input batches + 2 to drain the 3 s window
    assert sink.batches == [(1000, [1]), (2000, [1, 2]), (3000, [1, 2]), (4000, [2])]
    ssc.stop()


def test_run_drains_sliding_windows_and_stops():
    ssc, _ = ctx()
    sink = ListSink()
    ssc.queue_stream([[1], [2], [3]], name="q").reduce_by_window(lambda a, b: a + b, 4, 2, inv_f=lambda a, b: a - b, name="w").write_to(sink)
    ssc.run()
    assert sink.batches == [(2000, [3]), (4000, [6]), (6000, [3])]
    ssc.stop()


def test_run_max_batches_runs_past_the_end_of_finite_sources():
    # an explicit count is honoured (empty batches after the queue ran out), e.g. to let state time out
    ssc, _ = ctx()
    sink = ListSink()
    ssc.queue_stream([[1]], name="q").write_to(sink)
    assert ssc.run(3) == 3
    ssc.stop()
    assert sink.batches == [(1000, [1]), (2000, []), (3000, [])]


def test_run_batches_num_batches_lets_state_time_out():
    def f(key, value, state):
        if state.is_timing_out():
            return ("timeout", key)
        state.update(value)
        return key

    out = run_batches(lambda ssc, s: s.map_with_state(f, name="m", timeout=1), [[("a", 1)]], num_batches=4)
    assert out == [["a"], [], [("timeout", "a")], []]


def test_run_with_an_empty_queue():
    ssc, _ = ctx()
    ssc.queue_stream([], name="q").write_to(ListSink())
    assert ssc.run() == 0
    ssc.stop()


def test_batch_times_follow_the_clock_at_start():
    ssc, _ = ctx(start_ms=12_345)
    seen = []
    ssc.queue_stream([["a"], ["b"]], name="q").foreach_batch(lambda t, b: seen.append((t, b.collect())))
    ssc.run()
    ssc.stop()
    assert seen == [
        (datetime(1970, 1, 1, 0, 0, 13, tzinfo=timezone.utc), ["a"]),
        (datetime(1970, 1, 1, 0, 0, 14, tzinfo=timezone.utc), ["b"]),
    ]


def test_sub_second_batch_interval():
    ssc, _ = ctx(interval=0.25)
    sink = ListSink()
    ssc.queue_stream([[1], [2], [3]], name="q").write_to(sink)
    ssc.run()
    ssc.stop()
    assert [t for t, _ in sink.batches] == [250, 500, 750]


def test_run_raises_user_function_error_and_stops():
    ssc, _ = ctx()
    sink = ListSink()
    ssc.queue_stream([[1], [0], [2]], name="q").map(lambda x: 10 // x).write_to(sink)
    with pytest.raises(UserFunctionError) as info:
        ssc.run()
    assert info.value.operator == "map"
    assert info.value.batch_time_ms == 2000
    assert isinstance(info.value.__cause__, ZeroDivisionError)
    assert sink.batches == [(1000, [10])]
    assert ssc.state == "stopped"
    with pytest.raises(ConfigError, match="stopped"):
        ssc.run(1)


def test_lifecycle_misuse():
    ssc, _ = ctx()
    ssc.rate_stream(1, name="r").write_to(ListSink())
    ssc.start()
    try:
        with pytest.raises(ConfigError, match="run"):
            ssc.run(1)
        with pytest.raises(ConfigError, match="start"):
            ssc.start()
        with pytest.raises(ConfigError, match="graph is fixed"):
            ssc.queue_stream([], name="late")
    finally:
        ssc.stop()
    with pytest.raises(ConfigError, match="stopped"):
        ssc.start()
    ssc.stop()  # a second stop is harmless


# -- start() / await_termination() / stop() ---------------------------------------------------


def test_start_runs_one_batch_per_interval_of_the_clock():
    ssc, clock = ctx(start_ms=10_000)
    sink = ListSink()
    ssc.queue_stream([[1], [2], [3], [4], [5]], name="q").write_to(sink)
    assert ssc.state == "initialized"
    ssc.start()
    try:
        assert ssc.state == "active"
        wait_for(lambda: len(sink.batches) == 1, what="the first batch, at once")
        assert ssc.await_termination(0.05) is False
        assert sink.batches == [(11_000, [1])]  # the next one waits for the clock to reach 12000
        clock.advance(1)
        assert ssc.await_termination(0.05) is False
        assert len(sink.batches) == 1
        clock.advance(1)
        wait_for(lambda: len(sink.batches) == 2, what="batch 12000")
        assert sink.batches == [(11_000, [1]), (12_000, [2])]
        clock.advance(2)  # two intervals at once: both batch times run, in order
        wait_for(lambda: len(sink.batches) == 4, what="batches 13000 and 14000")
        assert sink.batches == [(11_000, [1]), (12_000, [2]), (13_000, [3]), (14_000, [4])]
        assert ssc.await_termination(0.01) is False
    finally:
        ssc.stop()
    assert ssc.state == "stopped"
    assert ssc.await_termination(0.01) is True
    assert ssc.await_termination() is True
    clock.advance(5)
    assert len(sink.batches) == 4  # nothing runs after stop


def test_start_runs_the_first_batch_at_once_with_a_batch_time_on_the_grid():
    """A fresh job's first output does not wait up to an interval for the clock (start-up latency, issue 14):
    the first batch runs at once, with the next batch time of the job's grid (not the clock's time)."""
    ssc, clock = ctx(start_ms=10_400, interval=2.0)
    sink = ListSink()
    ssc.queue_stream([[1], [2]], name="q").write_to(sink)
    ssc.start()
    try:
        wait_for(lambda: sink.batches, what="the first batch without moving the clock")
        assert sink.batches == [(12_000, [1])]  # the grid: 10000 (now, floored) + one interval
        assert clock.now_ms() == 10_400
        clock.advance(1.6)  # the clock reaches 12000: batch 12000 already ran, 14000 waits
        assert ssc.await_termination(0.05) is False
        assert sink.batches == [(12_000, [1])]
        clock.advance(2)
        wait_for(lambda: len(sink.batches) == 2, what="batch 14000")
        assert sink.batches == [(12_000, [1]), (14_000, [2])]
    finally:
        ssc.stop()


def test_stop_while_waiting_for_the_clock():
    ssc, _ = ctx()
    ssc.rate_stream(1, name="r").write_to(ListSink())
    ssc.start()
    ssc.stop(graceful=False)
    assert ssc.await_termination(5) is True
    assert ssc.state == "stopped"


def test_await_termination_reraises_a_user_function_error():
    ssc, clock = ctx()
    sink = ListSink()
    ssc.queue_stream([[1], ["x"], [3]], name="q").map(lambda v: v + 1).write_to(sink)
    ssc.start()
    clock.advance(5)
    with pytest.raises(UserFunctionError) as info:
        ssc.await_termination(10)
    err = info.value
    assert err.operator == "map"
    assert err.batch_time_ms == 2000
    assert isinstance(err.__cause__, TypeError)
    assert "2000" in str(err)
    assert sink.batches == [(1000, [2])]  # the job stopped at the failing batch
    assert ssc.state == "stopped"
    ssc.stop()


def test_await_termination_reraises_an_output_error():
    ssc, clock = ctx()

    def out(b):
        raise RuntimeError("sink down")

    ssc.queue_stream([[1]], name="q").foreach_batch(out)
    ssc.start()
    clock.advance(1)
    with pytest.raises(UserFunctionError, match="foreach_batch") as info:
        ssc.await_termination(10)
    assert isinstance(info.value.__cause__, RuntimeError)
    ssc.stop()


def test_stateful_job_in_the_background():
    ssc, clock = ctx()
    sink = ListSink()
    words = ssc.queue_stream([["a", "b"], ["a"], []], name="q")
    words.map(lambda w: (w, 1)).update_state_by_key(lambda vs, old: (old or 0) + sum(vs), name="counts").write_to(sink)
    ssc.start()
    try:
        for n in (1, 2, 3):
            clock.advance(1)
            wait_for(lambda n=n: len(sink.batches) == n, what=f"batch {n}")
    finally:
        ssc.stop()
    assert [sorted(r) for _, r in sink.batches] == [[("a", 1), ("b", 1)], [("a", 2), ("b", 1)], [("a", 2), ("b", 1)]]


# -- sources ---------------------------------------------------------------------------------


def test_rate_stream_records_are_a_function_of_the_offset():
    def records(**kw):
        ssc, _ = ctx()
        sink = ListSink()
        ssc.rate_stream(4, name="r", **kw).write_to(sink)
        ssc.run(3)
        ssc.stop()
        return sink.batches

    first = records()
    # 4 rows/s, 1 s batches: record i is (i, t0 + i * 250 ms), t0 = the start of the first batch (0)
    assert first == [
        (1000, [(0, 0), (1, 250), (2, 500), (3, 750)]),
        (2000, [(4, 1000), (5, 1250), (6, 1500), (7, 1750)]),
        (3000, [(8, 2000), (9, 2250), (10, 2500), (11, 2750)]),
    ]
    assert records() == first  # deterministic
    assert records(start=100)[0] == (1000, [(100, 0), (101, 250), (102, 500), (103, 750)])


def test_rate_stream_fractional_rate_and_partitions():
    ssc, _ = ctx()
    sink = ListSink()
    ssc.rate_stream(1.5, name="r").write_to(sink)
    ssc.run(3)
    ssc.stop()
    # floor(1.5 * k) rows after k seconds; row i at i * 666.67 ms
    assert sink.batches == [(1000, [(0, 0)]), (2000, [(1, 666), (2, 1333)]), (3000, [(3, 2000)])]

    ssc, _ = ctx(interval=0.5)
    parts = []
    ssc.rate_stream(8, name="r", num_partitions=2).glom().foreach_batch(lambda b: parts.append(b.collect()))
    ssc.run(1)
    ssc.stop()
    assert parts == [[[(0, 0), (2, 250)], [(1, 125), (3, 375)]]]


def test_constant_stream():
    ssc, _ = ctx()
    sink = ListSink()
    ssc.constant_stream([1, "x"], name="c").write_to(sink)
    assert ssc.run(3) == 3
    ssc.stop()
    assert sink.batches == [(1000, [1, "x"]), (2000, [1, "x"]), (3000, [1, "x"])]


def test_queue_stream_one_at_a_time():
    ssc, _ = ctx()
    sink = ListSink()
    ssc.queue_stream(iter([[1, 2], (3,), []]), name="q").write_to(sink)  # any iterables
    ssc.run()
    ssc.stop()
    assert sink.batches == [(1000, [1, 2]), (2000, [3]), (3000, [])]


def test_queue_stream_all_at_once():
    ssc, _ = ctx()
    sink = ListSink()
    ssc.queue_stream([[1, 2], [3], [4]], name="q", one_at_a_time=False).write_to(sink)
    assert ssc.run() == 1
    ssc.stop()
    assert sink.batches == [(1000, [1, 2, 3, 4])]


def test_queue_stream_default_after_the_queue_ran_out():
    ssc, _ = ctx()
    sink = ListSink()
    ssc.queue_stream([[1], [2]], name="q", default=["d"]).write_to(sink)
    assert ssc.run(4) == 4  # with a default the queue never runs dry
    ssc.stop()
    assert sink.batches == [(1000, [1]), (2000, [2]), (3000, ["d"]), (4000, ["d"])]


def test_queue_stream_partitions():
    ssc, _ = ctx()
    parts = []
    ssc.queue_stream([[1, 2, 3, 4, 5]], name="q", num_partitions=2).glom().foreach_batch(lambda b: parts.append(b.collect()))
    ssc.run()
    ssc.stop()
    assert parts == [[[1, 3, 5], [2, 4]]]


def test_text_file_stream_reads_new_files_only(tmp_path):
    d = tmp_path / "in"
    d.mkdir()
    (d / "old.txt").write_text("old\n")
    ssc, _ = ctx()
    sink = ListSink()
    ssc.text_file_stream(str(d), name="files").write_to(sink)
    ssc.run(1)  # the file that was there before the start is skipped, as in Spark
    (d / "a.txt").write_text("a1\na2\n")
    (d / ".a.tmp").write_text("hidden\n")  # temporary files are ignored
    (d / "_SUCCESS").write_text("")
    ssc.run(1)
    ssc.run(1)  # nothing new
    (d / "c.txt").write_text("c1")  # no trailing newline
    (d / "b.txt").write_text("b1\r\nb2\n")
    (d / "a.txt").write_text("a1\na2\nchanged\n")  # an already-read file is not read again
    ssc.run(1)
    ssc.stop()
    assert sink.batches == [(1000, []), (2000, ["a1", "a2"]), (3000, []), (4000, ["b1", "b2", "c1"])]


def test_text_file_stream_moved_in_files(tmp_path):
    d = tmp_path / "in"
    d.mkdir()
    ssc, _ = ctx()
    sink = ListSink()
    ssc.text_file_stream(str(d), name="files").flat_map(str.split).write_to(sink)
    ssc.run(1)
    staging = tmp_path / "staging.txt"
    staging.write_text("x y\nz\n")
    staging.rename(d / "moved.txt")
    ssc.run(1)
    ssc.stop()
    assert sink.batches == [(1000, []), (2000, ["x", "y", "z"])]


def test_text_file_stream_missing_directory(tmp_path):
    ssc, _ = ctx()
    ssc.text_file_stream(str(tmp_path / "nope"), name="files").write_to(ListSink())
    with pytest.raises(SourceError, match="does not exist"):
        ssc.run(1)
    ssc.stop()


def test_text_file_stream_on_a_regular_file_says_it_is_a_file(tmp_path):
    (tmp_path / "words.txt").write_text("a b\n")
    ssc, _ = ctx()
    ssc.text_file_stream(str(tmp_path / "words.txt"), name="files").write_to(ListSink())
    with pytest.raises(SourceError, match=r"words.txt' is a file, not a directory: pass the directory the files arrive in"):
        ssc.run(1)
    ssc.stop()


class LineServer:
    """A real TCP server on 127.0.0.1 that accepts one client at a time."""

    def __init__(self):
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(1)
        self.sock.settimeout(10)
        self.port = self.sock.getsockname()[1]
        self.conns: list[socket.socket] = []
        self.thread = threading.Thread(target=self._accept, daemon=True)
        self.thread.start()

    def _accept(self):
        try:
            conn, _ = self.sock.accept()
        except OSError:
            return
        self.conns.append(conn)

    def close(self):
        for c in self.conns:
            c.close()
        self.sock.close()
        self.thread.join(timeout=5)


@pytest.fixture
def line_server():
    srv = LineServer()
    yield srv
    srv.close()


def test_socket_text_stream(line_server):
    ssc, _ = ctx()
    sink = ListSink()
    ssc.socket_text_stream("127.0.0.1", line_server.port, name="sock").write_to(sink)
    try:
        ssc.run(1)  # opens the source: its receiver connects
        wait_for(lambda: line_server.conns, what="the receiver to connect")
        conn = line_server.conns[0]
        conn.sendall(b"hello world\nsecond li")
        conn.sendall(b"ne\r\nthird\n")

        def lines():
            return [ln for _, rs in sink.batches for ln in rs]

        wait_for(lambda: ssc.run(1) and len(lines()) >= 3, what="three lines")
        assert lines() == ["hello world", "second line", "third"]
        n_batches = len(sink.batches)
        conn.sendall("fin\u00e9\nlast without newline".encode())
        conn.close()  # the end of the connection flushes the partial line
        wait_for(lambda: ssc.run(1) and len(lines()) >= 5, what="the last two lines")
        assert lines()[3:] == ["fin\u00e9", "last without newline"]
        assert all(t == 1000 * (i + 1) for i, (t, _) in enumerate(sink.batches))
        assert len(sink.batches) > n_batches
    finally:
        ssc.stop()


def test_socket_text_stream_without_a_server_gives_empty_batches():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # nothing listens here once closed
    ssc, _ = ctx()
    sink = ListSink()
    ssc.socket_text_stream("127.0.0.1", port, name="sock").write_to(sink)
    ssc.run(2)
    ssc.stop()
    assert sink.batches == [(1000, []), (2000, [])]


def test_multiple_sources_in_one_job(tmp_path):
    ssc, _ = ctx()
    sink = ListSink()
    q = ssc.queue_stream([["q1"], ["q2"]], name="q")
    r = ssc.rate_stream(1, name="r").map(lambda rec: f"r{rec[0]}")
    c = ssc.constant_stream(["c"], name="c")
    q.union(r, c).write_to(sink)
    ssc.run(2)
    ssc.stop()
    assert sink.batches == [(1000, ["q1", "r0", "c"]), (2000, ["q2", "r1", "c"])]


def test_hold_jobs_builds_a_job_without_running_or_opening_its_checkpoint(tmp_path) -> None:
    """`hold_jobs` (what `streamkeep checkpoint diff` uses): the graph is built, nothing runs or is written."""
    from streamkeep.context import JobHeld, hold_jobs

    ckpt = tmp_path / "ckpt"
    seen: list[object] = []

    def setup() -> sk.StreamingContext:
        ssc = sk.StreamingContext(1.0)
        ssc.queue_stream([[("a", 1)]], name="q").update_state_by_key(lambda new, old: (old or 0) + sum(new), name="counts").foreach_batch(
            lambda b: seen.append(b.collect())
        )
        return ssc

    def job() -> None:
        ssc = sk.StreamingContext.get_or_create(str(ckpt), setup)
        try:
            ssc.start()
        except Exception:  # a job's own error handling must not swallow the hold
            pytest.fail("JobHeld was caught as an Exception")

    with hold_jobs() as held:
        with pytest.raises(JobHeld):
            job()
    ssc = held.job()
    assert ssc is not None and ssc.checkpoint_url == str(ckpt)
    assert list(ssc._graph.describe()["operators"]) == ["counts"]
    assert seen == [] and not ckpt.exists() and ssc.state == "initialized"
    # outside the block the same code runs for real
    ssc = sk.StreamingContext.get_or_create(str(ckpt), setup)
    assert ssc.run() == 1 and seen == [[("a", 1)]] and ckpt.exists()
