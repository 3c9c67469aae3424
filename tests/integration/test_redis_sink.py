"""RedisSink against a real redis-server."""

from __future__ import annotations

import enum
import gc
import os
import signal
import subprocess
import sys
import textwrap
import time
from typing import Any

import pytest
import redis

from streamkeep.errors import CheckpointInUseError, ConfigError, SinkError, UserFunctionError
from streamkeep.sinks.base import FencedSink, FencingToken, Sink
from streamkeep.sinks.redis import RedisSink

pytestmark = pytest.mark.integration

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def counting_write(pipe: Any, records: list[Any]) -> None:
    for user, n in records:
        pipe.incrby(f"count:{user}", n)
        pipe.hincrby("totals", user, n)
        pipe.lpush(f"log:{user}", n)


def _sink(url: str, write: Any = counting_write, **kw: Any) -> RedisSink:
    kw.setdefault("name", "counts")
    sink = RedisSink(url, write, **kw)
    sink.open()
    return sink


def test_incrby_hincrby_lpush_apply_exactly_once(redis_url):
    r = redis.Redis.from_url(redis_url, decode_responses=True)
    sink = _sink(redis_url)
    try:
        assert isinstance(sink, Sink)
        assert sink.last_batch() is None
        sink.write(1000, [("ann", 5), ("bob", 1)])
        sink.write(1000, [("ann", 5), ("bob", 1)])  # replay: skipped
        sink.write(2000, [("ann", 2)])
        sink.write(1500, [("ann", 100)])  # older than the marker: skipped
        sink.write(2000, [("ann", 2)])
        assert sink.last_batch() == 2000
    finally:
        sink.close()
        sink.close()
    # A new process (new sink object, same name) replays the last batch: skipped too.
    again = _sink(redis_url)
    try:
        again.write(2000, [("ann", 2)])
        again.write(3000, [])  # empty batch: marker moves, nothing else
    finally:
        again.close()
    assert r.get("count:ann") == "7" and r.get("count:bob") == "1"
    assert r.hgetall("totals") == {"ann": "7", "bob": "1"}
    assert r.lrange("log:ann", 0, -1) == ["2", "5"]
    assert r.get("streamkeep:sink:counts:last_batch") == "3000"


def test_replay_after_driver_sigkill_is_skipped(redis_url):
    """A driver dies right after the Redis transaction (before its checkpoint commit)."""
    code = textwrap.dedent(f"""
        import os, signal, sys
        sys.path.insert(0, {REPO!r})
        from streamkeep.sinks.redis import RedisSink
        def write(pipe, records):
            for k, n in records:
                pipe.incrby(k, n)
        sink = RedisSink({redis_url!r}, write, name="crashy")
        sink.open()
        sink.write(1000, [("total", 10)])
        sink.write(2000, [("total", 5)])
        os.kill(os.getpid(), signal.SIGKILL)
    """)
    proc = subprocess.run([sys.executable, "-c", code], timeout=30)
    assert proc.returncode == -signal.SIGKILL

    def write(pipe: Any, records: list[Any]) -> None:
        for k, n in records:
            pipe.incrby(k, n)

    sink = _sink(redis_url, write, name="crashy")
    try:
        sink.write(2000, [("total", 5)])  # the restarted job re-runs the uncommitted batch
        sink.write(3000, [("total", 1)])
    finally:
        sink.close()
    assert redis.Redis.from_url(redis_url).get("total") == b"16"


def test_marker_changed_by_another_writer_is_rechecked(redis_url):
    other = redis.Redis.from_url(redis_url)
    calls: list[int] = []

    def write(pipe: Any, records: list[Any]) -> None:
        calls.append(len(records))
        # A zombie driver applies the same batch between our WATCH and EXEC.
        other.set("streamkeep:sink:race:last_batch", 1000)
        other.incrby("n", 1)
        pipe.incrby("n", 1)

    sink = _sink(redis_url, write, name="race")
    try:
        sink.write(1000, ["x"])
    finally:
        sink.close()
    assert calls == [1]  # EXEC refused, re-check saw the marker: not applied again
    assert other.get("n") == b"1"


def _calls(r: Any, command: str) -> int:
    return int(r.info("commandstats").get(f"cmdstat_{command}", {}).get("calls", 0))


def test_consecutive_batches_cost_one_round_trip_each(redis_url):
    """After a batch it applied, the sink sends the next one's script without reading the marker first."""
    r = redis.Redis.from_url(redis_url, decode_responses=True)
    r.config_resetstat()
    sink = _sink(redis_url, name="trips")
    try:
        for t in range(1000, 6000, 1000):
            sink.write(t, [("ann", 1)])
        sink.write(5000, [("ann", 1)])  # a replay of the last one: read first, skipped, write not called
    finally:
        sink.close()
    scripts = _calls(r, "evalsha") + _calls(r, "eval")  # the script's own GET counts too
    assert scripts == 5
    assert _calls(r, "get") - scripts == 2  # the first batch (marker unknown) and the replay
    assert r.get("count:ann") == "5"
    assert r.get("streamkeep:sink:trips:last_batch") == "5000"


def test_a_batch_applied_by_another_driver_in_between_is_skipped_by_the_script(redis_url):
    other = redis.Redis.from_url(redis_url)
    calls: list[int] = []

    def write(pipe: Any, records: list[Any]) -> None:
        calls.append(len(records))
        pipe.incrby("n", 1)

    sink = _sink(redis_url, write, name="between")
    try:
        sink.write(1000, ["x"])
        # Another driver of the same job applies batch 2000 before this one gets to it.
        other.set("streamkeep:sink:between:last_batch", 2000)
        other.incrby("n", 1)
        sink.write(2000, ["x"])  # not read first: the script finds the marker and skips
        sink.write(3000, ["x"])  # after a skip the marker is read again
    finally:
        sink.close()
    assert calls == [1, 1, 1]  # write ran for 2000 (not read first), but the script applied nothing of it
    assert other.get("n") == b"3"
    assert other.get("streamkeep:sink:between:last_batch") == b"3000"


def test_redis_down_fails_after_bounded_retries(redis_server_factory):
    server = redis_server_factory()
    sink = _sink(server.url, name="down", max_retries=3, retry_backoff_s=0.01, timeout_s=1.0)
    try:
        sink.write(1000, [("a", 1)])
        server.stop()
        t0 = time.monotonic()
        with pytest.raises(SinkError) as info:
            sink.write(2000, [("a", 1)])
        assert time.monotonic() - t0 < 5
        msg = str(info.value)
        assert f"cannot reach Redis at {server.url} after 4 attempt(s)" in msg
        assert ".." not in msg, msg  # the error text ends with a period of its own
        assert "batch 2000" in msg and "runs again after a restart" in msg
        assert isinstance(info.value.__cause__, redis.ConnectionError)
        server.start()  # same port, empty (no persistence)
        sink.write(2000, [("a", 1)])
        assert redis.Redis.from_url(server.url).get("count:a") == b"1"
    finally:
        sink.close()


def test_write_function_error_applies_nothing(redis_url):
    def write(pipe: Any, records: list[Any]) -> None:
        pipe.incrby("n", 1)
        raise KeyError("boom")

    sink = _sink(redis_url, write, name="bad")
    try:
        with pytest.raises(UserFunctionError, match="nothing was applied") as info:
            sink.write(1000, [1])
        assert info.value.batch_time_ms == 1000
        assert isinstance(info.value.__cause__, KeyError)
    finally:
        sink.close()
    r = redis.Redis.from_url(redis_url)
    assert r.get("n") is None and r.get("streamkeep:sink:bad:last_batch") is None


def dead_letter_write(pipe: Any, records: list[Any]) -> None:
    for rec in records:
        if rec.startswith("bad"):
            pipe.rpush("dead", rec)  # dead letters
        else:
            pipe.incrby("ok", 1)  # non-idempotent: must apply exactly once


def test_failed_command_is_recorded_and_replayed_alone_after_the_fix(redis_url):
    """A dead letter that fails (WRONGTYPE) never vanishes, and the batch's INCRBY stays exactly once."""
    r = redis.Redis.from_url(redis_url)
    r.set("dead", "not a list")  # the dead-letter key has the wrong type
    batch = ["a", "bad-1", "b"]
    sink = _sink(redis_url, dead_letter_write, name="dl")
    try:
        with pytest.raises(SinkError) as info:
            sink.write(1000, batch)
    finally:
        sink.close()
    msg = str(info.value)
    assert "1 of 3 commands failed" in msg
    assert "command #2 RPUSH 'dead' 'bad-1': WRONGTYPE" in msg  # the failing command, not "the write function"
    assert "not treated as applied" in msg and "SET streamkeep:sink:dl:last_batch '1000'" in msg
    assert r.get("ok") == b"2"  # Redis does not roll back: the other commands were applied
    marker = r.get("streamkeep:sink:dl:last_batch")
    assert marker is not None and marker.startswith(b"1000 failed=2/")

    # A replay before the fix (a new driver process: only Redis remembers) fails again and applies nothing twice.
    again = _sink(redis_url, dead_letter_write, name="dl")
    try:
        assert again.last_batch() == 1000
        with pytest.raises(SinkError, match=r"1 of 1 commands failed.*command #2 RPUSH 'dead' 'bad-1': WRONGTYPE"):
            again.write(1000, batch)
        with pytest.raises(SinkError, match=r"commands of batch 1000 failed.*would be lost"):
            again.write(2000, ["c"])  # the job cannot move past the failed batch silently
        assert r.get("ok") == b"2"
        r.delete("dead")  # the user fixes the key
        again.write(1000, batch)  # the replay runs exactly the failed command
        again.write(1000, batch)  # and is now skipped
        again.write(2000, ["c", "bad-2"])
    finally:
        again.close()
    assert r.get("ok") == b"3"
    assert r.lrange("dead", 0, -1) == [b"bad-1", b"bad-2"]
    assert r.get("streamkeep:sink:dl:last_batch") == b"2000"


def test_failed_command_replay_refuses_a_different_command(redis_url):
    r = redis.Redis.from_url(redis_url)
    r.set("dead", "x")
    sink = _sink(redis_url, dead_letter_write, name="dl2")
    try:
        with pytest.raises(SinkError, match="WRONGTYPE"):
            sink.write(1000, ["a", "bad-1"])
        r.delete("dead")
        with pytest.raises(SinkError, match=r"command #2 .*different command there \(RPUSH 'dead' 'bad-X'\)"):
            sink.write(1000, ["a", "bad-X"])  # not what failed: never applied in its place
        with pytest.raises(SinkError, match="different command"):
            sink.write(1000, ["a"])  # fewer commands than recorded
        r.set("streamkeep:sink:dl2:last_batch", "1000")  # the documented way to give the command up
        sink.write(2000, ["b"])
    finally:
        sink.close()
    assert r.get("ok") == b"2" and r.get("dead") is None


def test_write_function_may_not_execute(redis_url):
    def write(pipe: Any, records: list[Any]) -> None:
        pipe.incrby("n", 1)
        pipe.execute()

    sink = _sink(redis_url, write, name="exec")
    try:
        with pytest.raises(SinkError, match=r"called execute\(\) on the pipeline.*Nothing was applied"):
            sink.write(1000, [1])
    finally:
        sink.close()
    assert redis.Redis.from_url(redis_url).get("n") is None


def test_malformed_command_discards_the_transaction(redis_url):
    def write(pipe: Any, records: list[Any]) -> None:
        pipe.incrby("n", 1)
        pipe.execute_command("NOSUCHCOMMAND", "x")

    sink = _sink(redis_url, write, name="malformed")
    try:
        with pytest.raises(SinkError, match=r"command #2 \(NOSUCHCOMMAND 'x'\): unknown command. Nothing of the batch was applied"):
            sink.write(1000, [1])
    finally:
        sink.close()
    r = redis.Redis.from_url(redis_url)
    assert r.get("n") is None and r.get("streamkeep:sink:malformed:last_batch") is None


def test_foreign_marker_value_is_a_clear_error(redis_url):
    redis.Redis.from_url(redis_url).set("mine", "hello")
    sink = _sink(redis_url, name="x", marker_key="mine")
    try:
        with pytest.raises(SinkError, match="marker key 'mine' holds b'hello'"):
            sink.write(1000, [])
    finally:
        sink.close()


def test_bad_configuration_is_refused_early():
    with pytest.raises(ConfigError, match="name"):
        RedisSink("redis://127.0.0.1:1/0", counting_write, name="")
    with pytest.raises(ConfigError, match="redis URL"):
        RedisSink("127.0.0.1:6379", counting_write, name="a")
    with pytest.raises(ConfigError, match="callable"):
        RedisSink("redis://127.0.0.1:1/0", "nope", name="a")  # type: ignore[arg-type]


def test_missing_redis_py_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "redis", None)
    sink = RedisSink("redis://127.0.0.1:1/0", counting_write, name="a")
    with pytest.raises(ConfigError, match=r"pip install 'streamkeep\[redis\]'"):
        sink.open()


def _fenced_sink(url: str, epoch: int, ckpt: str = "c0ffee", **kw: Any) -> RedisSink:
    kw.setdefault("name", "fenced")
    sink = RedisSink(url, counting_write, **kw)
    assert isinstance(sink, FencedSink)
    sink.set_fencing_token(FencingToken(ckpt, epoch))
    sink.open()
    return sink


def test_a_driver_fenced_by_a_newer_epoch_cannot_write(redis_url):
    r = redis.Redis.from_url(redis_url)
    r.set("streamkeep:sink:fenced:last_batch", "1000")  # the marker format of earlier versions still reads
    old, new = _fenced_sink(redis_url, 1), _fenced_sink(redis_url, 2)
    try:
        assert old.last_batch() == 1000
        old.write(1000, [("ann", 1)])  # applied before: skipped
        old.write(2000, [("ann", 1)])
        assert r.get("streamkeep:sink:fenced:last_batch") == b"2000 epoch=1 ckpt=c0ffee"
        new.write(3000, [("ann", 10)])  # the new owner (epoch 2) takes over
        with pytest.raises(CheckpointInUseError, match=r"newer driver \(epoch 2\).*this driver \(epoch 1\) lost"):
            old.write(4000, [("ann", 100)])  # the zombie's next batch
        with pytest.raises(CheckpointInUseError):
            old.write(3000, [("ann", 100)])
        new.write(4000, [("ann", 1000)])
        # Another checkpoint (deleted and recreated: epochs start again) is not fenced by the old one's epochs.
        fresh = _fenced_sink(redis_url, 1, ckpt="beef")
        try:
            fresh.write(5000, [("ann", 10000)])
        finally:
            fresh.close()
    finally:
        old.close()
        new.close()
    assert r.get("count:ann") == b"11011"
    assert r.get("streamkeep:sink:fenced:last_batch") == b"5000 epoch=1 ckpt=beef"


def test_fencing_is_checked_in_the_same_atomic_step_as_the_write(redis_url):
    """The new owner writes between the zombie's own marker read and its script: the script still refuses."""
    r = redis.Redis.from_url(redis_url)
    new = _fenced_sink(redis_url, 2, name="race2")

    def write(pipe: Any, records: list[Any]) -> None:
        new.write(2000, [("bob", 5)])  # the takeover lands while the zombie queues its commands
        counting_write(pipe, records)

    old = RedisSink(redis_url, write, name="race2")
    old.set_fencing_token(FencingToken("c0ffee", 1))
    old.open()
    try:
        with pytest.raises(CheckpointInUseError, match="lost the checkpoint"):
            old.write(2000, [("bob", 100)])
    finally:
        old.close()
        new.close()
    assert r.get("count:bob") == b"5"


def test_a_table_stream_reaches_the_redis_write_as_dict_rows(redis_url):
    """Tables (issue 15): RedisSink is not a TableSink, so its write() gets each table's rows as dicts."""
    import pyarrow as pa

    import streamkeep as sk
    from streamkeep.testing import ManualClock

    r = redis.Redis.from_url(redis_url, decode_responses=True)
    r.delete("tcount:ann", "tcount:bob")

    def write(pipe: Any, rows: list[Any]) -> None:
        for row in rows:
            pipe.incrby(f"tcount:{row['user']}", row["n"])

    ssc = sk.StreamingContext(1.0, clock=ManualClock())
    batches = [[pa.table({"user": ["ann", "bob"], "n": [5, 1]})], [pa.table({"user": ["ann"], "n": [2]})]]
    ssc.queue_stream(batches, name="t").write_to(RedisSink(redis_url, write, name="tables"))
    ssc.run(max_batches=2)
    ssc.stop()
    assert (r.get("tcount:ann"), r.get("tcount:bob")) == ("7", "1")


def test_an_argument_redis_cannot_take_names_the_command_and_applies_nothing(redis_url):
    r = redis.Redis.from_url(redis_url, decode_responses=True)

    def write(pipe: Any, records: list[Any]) -> None:
        for k, v in records:
            pipe.execute_command("SET", k, v)

    sink = _sink(redis_url, write, name="types")
    try:
        with pytest.raises(SinkError, match=r"command #2 \(SET 'b' .*\) has an argument of type NoneType.*Nothing was applied"):
            sink.write(1000, [("a", 1), ("b", None)])
        assert r.get("a") is None and r.get("streamkeep:sink:types:last_batch") is None
        sink.write(1000, [("a", bytearray(b"x")), ("b", memoryview(b"y")), ("c", 1.5)])  # what redis-py takes, Redis gets
        assert (r.get("a"), r.get("b"), r.get("c")) == ("x", "y", "1.5")
    finally:
        sink.close()


@pytest.mark.parametrize("deferred", [False, True], ids=["write", "deferred"])
def test_a_flushed_script_cache_is_loaded_again(redis_url, deferred):
    """A restarted (or SCRIPT FLUSHed) server has forgotten the batch script: the sink loads it again."""
    r = redis.Redis.from_url(redis_url, decode_responses=True)
    r.delete("count:fl", "log:fl", "streamkeep:sink:flush:last_batch")
    sink = _sink(redis_url, name="flush")
    try:
        if deferred:
            sink.defer_replies()  # the script of 2000 is sent with EVALSHA alone: NOSCRIPT, then run (loaded) again
        sink.write(1000, [("fl", 1)])
        sink.last_batch()  # settled
        r.script_flush()
        sink.write(2000, [("fl", 2)])
        sink.write(2000, [("fl", 2)])  # a replay: skipped
        sink.settle(2000)
    finally:
        sink.close()
    assert r.get("count:fl") == "3"
    assert r.lrange("log:fl", 0, -1) == ["2", "1"]


class _Color(enum.IntEnum):
    RED = 1


class _Ratio(float):
    pass


class _Name(str):
    def __str__(self) -> str:
        return "not the content"


@pytest.mark.parametrize(
    "values",
    [
        ["ann", "é€😀", "", "x" * 70_000],  # only str: sent as they are
        ["ann", 0, -5, 2**70, 2**63, 0.1, 1e300, -0.0, float("nan"), float("inf"), 1.5],  # str, int, float
        [b"\x00\xff", bytes(range(256)), b"", "t", 7, 2.5],  # bytes among numbers: converted one by one
        ["a", b"b", 0, 1, -1, 300, 65_536, 2**31 - 1, -(2**31), 2**32 - 1, -12],  # ints of 32 bits: as msgpack ints
        ["a", 207, 211, 2**32, 2**53 + 1, -(2**63), 2**64 - 1, 2**64 + 5, -(2**70)],  # and some that are not (or look so)
        [bytearray(b"ba"), memoryview(b"mv"), _Color.RED, _Ratio(0.25), _Name("content")],  # what redis-py also takes
    ],
    ids=["text", "numbers", "bytes", "ints", "wide-ints", "other-types"],
)
def test_arguments_reach_redis_as_redis_py_sends_them(redis_url, values, monkeypatch, request):
    """Every argument type redis-py takes is stored as redis-py itself would store it (packing is the sink's own)."""
    from streamkeep.sinks import redis as redis_sink

    packed: list[int] = []  # 3: ints went as msgpack ints (the script writes them in decimal)
    real = redis_sink._packb
    monkeypatch.setattr(redis_sink, "_packb", lambda obj: (packed.append(len(obj)), real(obj))[1])
    r = redis.Redis.from_url(redis_url)

    def write(pipe: Any, records: list[Any]) -> None:
        for k, v in records:
            pipe.set(k, v)
        pipe.hset("h", mapping={f"f{i}": v for i, (_, v) in enumerate(records)})

    sink = _sink(redis_url, write, name="types2")
    try:
        sink.write(1000, [(f"k{i}", v) for i, v in enumerate(values)])
    finally:
        sink.close()
    encode = r.connection_pool.get_encoder().encode  # redis-py's own encoding of an argument
    for i, v in enumerate(values):
        expected = bytes(encode(v))
        assert r.get(f"k{i}") == expected, (i, v)
        assert r.hget("h", f"f{i}") == expected, (i, v)
    assert (packed[-1] == 3) == (request.node.callspec.id == "ints"), packed


@pytest.mark.parametrize("value", [True, None, object()], ids=["bool", "None", "object"])
def test_an_argument_type_redis_py_refuses_names_the_command_among_numbers(redis_url, value):
    """The per-argument path (types the fast paths do not take) refuses what redis-py refuses, naming the command."""

    def write(pipe: Any, records: list[Any]) -> None:
        pipe.set("a", 1)
        pipe.hset("h", mapping={"n": 2, "x": value})

    sink = _sink(redis_url, write, name="badtype")
    try:
        with pytest.raises(SinkError, match=rf"command #2 \(HSET 'h' 'n' 2 'x' .*\) has an argument of type {type(value).__name__}"):
            sink.write(1000, [1])
    finally:
        sink.close()
    assert redis.Redis.from_url(redis_url).get("a") is None


def test_a_str_redis_cannot_take_names_the_command_and_applies_nothing(redis_url):
    """A lone surrogate cannot be UTF-8 encoded: a SinkError naming the command (it was a bare UnicodeEncodeError)."""

    def write(pipe: Any, records: list[Any]) -> None:
        pipe.set("a", 1)
        pipe.set("b", "\ud800")

    sink = _sink(redis_url, write, name="surrogate")
    try:
        with pytest.raises(SinkError, match=r"command #2 \(SET 'b' .*\) has a str argument that is not valid UTF-8.*Nothing was applied"):
            sink.write(1000, [1])
    finally:
        sink.close()
    r = redis.Redis.from_url(redis_url)
    assert r.get("a") is None and r.get("streamkeep:sink:surrogate:last_batch") is None


def test_a_command_without_a_name_is_refused_and_nothing_applied(redis_url):
    """``execute_command()`` with no argument queues nothing runnable: a SinkError (it was a bare IndexError)."""

    def write(pipe: Any, records: list[Any]) -> None:
        pipe.set("a", 1)
        pipe.execute_command()

    sink = _sink(redis_url, write, name="noname")
    try:
        with pytest.raises(SinkError, match=r"command #2 has no command name. Nothing was applied"):
            sink.write(1000, [1])
    finally:
        sink.close()
    assert redis.Redis.from_url(redis_url).get("a") is None


def test_the_write_function_runs_with_the_gc_paused_and_it_is_restored(redis_url):
    """Collections while a batch is built free nothing (its commands are alive): paused, then restored as it was."""
    seen: list[bool] = []

    def write(pipe: Any, records: list[Any]) -> None:
        seen.append(gc.isenabled())
        if records == ["boom"]:
            raise RuntimeError("boom")
        pipe.incrby("n", 1)

    sink = _sink(redis_url, write, name="gc")
    try:
        assert gc.isenabled()
        sink.write(1000, ["a"])
        assert gc.isenabled()
        with pytest.raises(UserFunctionError):
            sink.write(2000, ["boom"])
        assert gc.isenabled()
        gc.disable()  # the application's choice is kept
        try:
            sink.write(3000, ["b"])
            assert not gc.isenabled()
        finally:
            gc.enable()
    finally:
        sink.close()
    assert seen == [False, False, False]
    assert redis.Redis.from_url(redis_url).get("n") == b"2"


def test_a_huge_batch_goes_in_parts_and_stays_exactly_once(redis_url, monkeypatch):
    """Past _PART_BYTES the commands go in several script arguments; applying, failures and their replay are unchanged."""
    from streamkeep.sinks import redis as redis_sink

    monkeypatch.setattr(redis_sink, "_PART_BYTES", 2_000)
    sizes: list[int] = []
    pack = RedisSink._pack

    def spy(self: RedisSink, batch_time: int, commands: list[Any]) -> list[bytes]:
        parts = pack(self, batch_time, commands)
        sizes.append(len(parts))
        return parts

    monkeypatch.setattr(RedisSink, "_pack", spy)
    r = redis.Redis.from_url(redis_url)
    r.set("log:u97", "not a list")  # the LPUSH of user 97, in a late part, fails
    batch = [(f"u{i}", i) for i in range(100)]
    sink = _sink(redis_url, name="parts")
    try:
        with pytest.raises(SinkError, match=r"1 of 300 commands failed in Redis: command #294 LPUSH 'log:u97' 97: WRONGTYPE"):
            sink.write(1000, batch)
        r.delete("log:u97")
        sink.write(1000, batch)  # runs command #294 alone
        sink.write(1000, batch)  # skipped
        sink.write(2000, batch[:3])
    finally:
        sink.close()
    assert sizes[0] > 2 and sizes == [sizes[0], sizes[0], 1]  # the replay skipped by the marker did not pack
    assert [int(r.get(f"count:u{i}")) for i in range(100)] == [i + i * (i < 3) for i in range(100)]
    assert r.lrange("log:u97", 0, -1) == [b"97"] and r.lrange("log:u2", 0, -1) == [b"2", b"2"]
    assert r.hget("totals", "u50") == b"50"


def test_parts_staged_by_write_part_are_published_exactly_once(redis_url):
    """The per-partition path without Ray: parts staged in Redis, applied with the marker by one script."""
    r = redis.Redis.from_url(redis_url)
    r.set("log:b", "not a list")
    sink = RedisSink(redis_url, counting_write, name="staged")
    parts = [[("a", 1), ("b", 2)], [("c", 3)]]
    try:
        receipts = [sink.write_part(1000, "try1", i, p) for i, p in enumerate(parts)]
        assert receipts == [6, 3]
        with pytest.raises(SinkError, match=r"1 of 9 commands failed in Redis: command #6 LPUSH 'log:b' '2': WRONGTYPE"):
            sink.publish(1000, "try1", receipts)
        r.delete("log:b")
        receipts = [sink.write_part(1000, "try2", i, p) for i, p in enumerate(parts)]  # the batch's retry
        sink.publish(1000, "try2", receipts)  # runs command #6 alone
        assert [sink.write_part(1000, "try3", i, p) for i, p in enumerate(parts)] == [0, 0]  # applied: nothing staged
        sink.publish(1000, "try3", [0, 0])
        receipts = [sink.write_part(2000, "try1", i, p) for i, p in enumerate(parts)]
        r.delete(sink._stage_key(2000, "try1", 1))  # a part's staged commands are gone (expired)
        with pytest.raises(SinkError, match=r"9 commands were staged by the parts but 6 are left in Redis.*Nothing of the batch was applied"):
            sink.publish(2000, "try1", receipts)
    finally:
        sink.close()
    assert (r.get("count:a"), r.get("count:b"), r.get("count:c")) == (b"1", b"2", b"3")
    assert r.lrange("log:b", 0, -1) == [b"2"] and r.get("streamkeep:sink:staged:last_batch") == b"1000"
    assert r.keys("streamkeep:sink:staged:last_batch:stage:1000:*") == []


def test_two_word_command_names_run_as_redis_py_sends_them(redis_url):
    """redis-py queues e.g. ``"MEMORY USAGE"`` as one name; Redis (and the script) needs two words."""

    def write(pipe: Any, records: list[Any]) -> None:
        pipe.set("k", "v")
        pipe.memory_usage("k")
        pipe.execute_command(["not", "a name"])  # unhashable: named in the error

    sink = _sink(redis_url, write, name="words")
    try:
        with pytest.raises(SinkError, match=r"command #3 .* has an argument of type list"):
            sink.write(1000, [1])
        sink._write = lambda pipe, records: (pipe.set("k", "v"), pipe.memory_usage("k"))
        sink.write(1000, [1])
    finally:
        sink.close()
    assert redis.Redis.from_url(redis_url).get("k") == b"v"


# -- replies read later (SettlingSink): the script of batch T runs while the job computes T + 1 ------------


def test_a_deferred_batch_that_failed_is_raised_by_settle_and_no_later_batch_is_sent(redis_url):
    r = redis.Redis.from_url(redis_url, decode_responses=True)
    r.set("log:bob", "not a list")  # batch 1000's LPUSH for bob fails
    sink = _sink(redis_url, name="deferred")
    try:
        sink.defer_replies()
        sink.write(1000, [("ann", 1), ("bob", 2)])  # sent: its outcome is read by settle (or the next write)
        with pytest.raises(SinkError, match=r"batch 1000: 1 of 6 commands failed in Redis: command #6 LPUSH 'log:bob' 2: WRONGTYPE"):
            sink.settle(1000)
        with pytest.raises(SinkError, match=r"batch 1000: 1 of 6 commands failed"):
            sink.write(2000, [("ann", 10)])  # never sent past the failed batch
        with pytest.raises(SinkError, match=r"batch 1000: 1 of 6 commands failed"):
            sink.settle(2000)  # a commit of any later batch fails too
    finally:
        sink.close()
    assert r.get("count:ann") == "1"  # batch 2000 applied nothing
    assert r.get("streamkeep:sink:deferred:last_batch").startswith("1000 failed=6/")
    r.delete("log:bob")
    again = _sink(redis_url, name="deferred")  # the restart replays batch 1000: its failed command alone
    try:
        again.defer_replies()
        again.write(1000, [("ann", 1), ("bob", 2)])
        again.write(2000, [("ann", 10)])  # settles 1000 first
        again.settle(2000)
    finally:
        again.close()
    assert r.get("count:ann") == "11" and r.get("count:bob") == "2"
    assert r.lrange("log:bob", 0, -1) == ["2"]
    assert r.get("streamkeep:sink:deferred:last_batch") == "2000"


def test_a_deferred_batch_whose_connection_is_lost_before_it_ran_is_applied_once_when_settled(redis_url):
    """The script was sent but never ran (its client was killed while Redis held it): settle runs it again, once."""
    admin = redis.Redis.from_url(redis_url, decode_responses=True)
    sink = _sink(redis_url, name="lost")
    try:
        sink.defer_replies()
        sink.write(1000, [("ann", 1)])
        sink.settle(1000)
        admin.client_pause(10_000, all=False)  # write commands wait: the next script is held unrun
        try:
            sink.write(2000, [("ann", 2)])
            deadline = time.monotonic() + 10
            while not any("b" in c.get("flags", "") for c in admin.client_list()):  # the script arrived, held
                assert time.monotonic() < deadline, admin.client_list()
                time.sleep(0.01)
            killed = admin.client_kill_filter(_type="normal", skipme=True)
            assert killed >= 1
        finally:
            admin.client_unpause()
        assert admin.get("streamkeep:sink:lost:last_batch") == "1000"  # batch 2000 never ran
        sink.settle(2000)  # the reply is lost: the script runs again
        sink.write(3000, [("ann", 4)])
        sink.settle(3000)
    finally:
        sink.close()
    assert admin.get("count:ann") == "7"
    assert admin.lrange("log:ann", 0, -1) == ["4", "2", "1"]
    assert admin.get("streamkeep:sink:lost:last_batch") == "3000"


def test_a_job_with_a_checkpoint_never_commits_nor_passes_a_batch_whose_script_failed(redis_url, tmp_path, monkeypatch):
    """The scheduler settles each batch before its commit: a failed batch stays uncommitted and is replayed exactly."""
    import streamkeep as sk

    settled: list[int] = []
    settle = RedisSink.settle

    def spy(self: RedisSink, batch_time: int) -> None:
        settled.append(batch_time)
        settle(self, batch_time)

    monkeypatch.setattr(RedisSink, "settle", spy)
    r = redis.Redis.from_url(redis_url, decode_responses=True)
    r.set("job:bad", "not a list")

    def write(pipe: Any, records: list[Any]) -> None:
        for i, _ in records:
            pipe.incrby("job:n", 1)
            pipe.rpush("job:log", i)
            if i == 4:  # in the third batch
                pipe.rpush("job:bad", i)

    ckpt = str(tmp_path / "ckpt")

    def create() -> sk.StreamingContext:
        ssc = sk.StreamingContext(1.0, checkpoint=ckpt)
        ssc.rate_stream(2, name="rate").write_to(RedisSink(redis_url, write, name="job", marker_key="job:marker"))
        return ssc

    ssc = sk.StreamingContext.get_or_create(ckpt, create)
    try:
        with pytest.raises(SinkError, match=r"1 of 5 commands failed in Redis: command #3 RPUSH 'job:bad' 4: WRONGTYPE"):
            ssc.run(max_batches=6)
    finally:
        ssc.stop()
    assert settled  # the scheduler settled the sink's batches before committing them
    assert r.lrange("job:log", 0, -1) == ["0", "1", "2", "3", "4", "5"]  # nothing after the failed batch
    assert r.get("job:marker").split(" failed=")[1].startswith("3/")
    r.delete("job:bad")
    ssc = sk.StreamingContext.get_or_create(ckpt, create)  # the failed batch was not committed: replayed
    try:
        ssc.run(max_batches=3)
    finally:
        ssc.stop()
    assert r.lrange("job:log", 0, -1) == [str(i) for i in range(10)]
    assert r.get("job:n") == "10" and r.lrange("job:bad", 0, -1) == ["4"]


def _big_write(pipe: Any, records: list[Any]) -> None:
    for key, value in records:
        if isinstance(value, int):
            pipe.incrby(key, value)
        else:
            pipe.set(key, value)


def test_a_huge_batch_is_cut_into_parts_by_bytes_each_of_which_redis_takes(redis_server_factory, monkeypatch):
    """Parts are cut by their bytes, not their command count: big commands at the end of a batch of small ones
    no longer land in one part bigger than Redis takes in an argument (proto-max-bulk-len, 512 MB by default; 1 MB here)."""
    from streamkeep.sinks import redis as redis_sink

    server = redis_server_factory()
    r = redis.Redis.from_url(server.url)
    r.config_set("proto-max-bulk-len", 1 << 20)
    monkeypatch.setattr(redis_sink, "_PART_BYTES", 256 << 10)
    monkeypatch.setattr(redis_sink, "_BULK_LIMIT", 1 << 20, raising=False)
    big = [(f"big:{k}", str(k) * (600 << 10)) for k in range(3)]  # 600 KB each: together 1.8 MB
    batch = [(f"n:{i}", 1) for i in range(3000)] + big
    sink = _sink(server.url, _big_write, name="bytes", max_retries=1, retry_backoff_s=0.01)
    try:
        sink.write(1000, batch)
        sink.write(1000, batch)  # a replay: skipped
    finally:
        sink.close()
    assert [len(r.get(key)) for key, _ in big] == [600 << 10] * 3
    assert sum(int(v) for v in r.mget([f"n:{i}" for i in range(3000)])) == 3000
    assert r.get("streamkeep:sink:bytes:last_batch") == b"1000"


def test_a_command_bigger_than_redis_takes_in_an_argument_is_named_and_nothing_applied(redis_server_factory, monkeypatch):
    from streamkeep.sinks import redis as redis_sink

    server = redis_server_factory()
    r = redis.Redis.from_url(server.url)
    r.config_set("proto-max-bulk-len", 1 << 20)
    monkeypatch.setattr(redis_sink, "_PART_BYTES", 256 << 10)
    monkeypatch.setattr(redis_sink, "_BULK_LIMIT", 1 << 20, raising=False)
    batch = [(f"n:{i}", 1) for i in range(100)] + [("huge", "x" * (3 << 19))]  # 1.5 MB
    sink = _sink(server.url, _big_write, name="toobig", max_retries=1, retry_backoff_s=0.01)
    try:
        with pytest.raises(SinkError, match=r"batch 1000: command #101 \(SET 'huge' 'x{37}\.\.\.'\) packs to 1.5 MiB; Redis takes at most 1.0 MiB"):
            sink.write(1000, batch)
    finally:
        sink.close()
    assert r.get("n:0") is None and r.get("streamkeep:sink:toobig:last_batch") is None


def test_every_hset_form_queues_what_redis_py_queues(redis_url):
    """hset(name, mapping=...) has a shortcut of its own; every form stores what a plain redis-py pipeline stores."""
    r = redis.Redis.from_url(redis_url)
    counted: list[int] = []

    def calls(pipe: Any, prefix: str) -> None:
        pipe.hset(f"{prefix}:m", mapping={"a": 1, b"b": b"\xff", "c": 2.5})
        pipe.hset(f"{prefix}:kv", "f", "v")
        pipe.hset(f"{prefix}:both", "k", 7, mapping={"m": "x"})
        pipe.hset(f"{prefix}:items", items=["i1", 1, "i2", 2], mapping={"m": 3})
        pipe.hset(f"{prefix}:dup", mapping={"a": 1}, items=[])

    def write(pipe: Any, records: list[Any]) -> None:
        calls(pipe, "sink")
        counted.append(len(pipe))
        with pytest.raises(redis.DataError):  # as redis-py: no field at all
            pipe.hset("sink:none", mapping={})

    sink = _sink(redis_url, write, name="hsets")
    try:
        sink.write(1000, [1])
    finally:
        sink.close()
    plain = r.pipeline(transaction=False)
    calls(plain, "plain")
    plain.execute()
    for form in ("m", "kv", "both", "items", "dup"):
        assert r.hgetall(f"sink:{form}") == r.hgetall(f"plain:{form}") != {}, form
    assert counted == [5]


def test_a_failed_command_with_numbers_is_recorded_by_its_digits_and_replays_from_text(redis_url):
    """Ints travel to the script as msgpack numbers, which Redis turns into digits itself; the failed command's
    digest in the marker is still that of the digits (as markers written by earlier versions), so a replay that
    queues the same command as text -- the same command to Redis -- runs it, once."""
    import hashlib

    r = redis.Redis.from_url(redis_url, decode_responses=True)
    r.set("h", "not a hash")  # the HINCRBY fails (WRONGTYPE)

    def write(pipe: Any, records: list[Any]) -> None:
        for n in records:
            pipe.incrby("n", n)
            pipe.hincrby("h", "f", n)

    sink = _sink(redis_url, write, name="digits")
    try:
        with pytest.raises(SinkError, match=r"command #2 HINCRBY 'h' 'f' -2147483648: WRONGTYPE"):
            sink.write(1000, [-(2**31)])
    finally:
        sink.close()
    words = ("HINCRBY", "h", "f", str(-(2**31)))
    digest = hashlib.sha1(" ".join(f"{len(w)}:{w}" for w in words).encode()).hexdigest()[:12]
    assert r.get("streamkeep:sink:digits:last_batch") == f"1000 failed=2/{digest}"
    r.delete("h")
    again = _sink(redis_url, lambda pipe, records: write(pipe, [str(n) for n in records]), name="digits")
    try:
        again.write(1000, [-(2**31)])  # the failed HINCRBY alone, its number now given as text
        again.write(1000, [-(2**31)])  # applied: skipped
    finally:
        again.close()
    assert r.get("n") == str(-(2**31)) and r.hget("h", "f") == str(-(2**31))
    assert r.get("streamkeep:sink:digits:last_batch") == "1000"
