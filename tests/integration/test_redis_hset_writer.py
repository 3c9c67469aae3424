"""RedisSink.hset_writer (one HSET of a mapping per record) against a real redis-server."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
from collections.abc import Iterator, Mapping
from typing import Any
from unittest import mock

import pytest
import redis

from streamkeep.errors import ConfigError, SinkError, UserFunctionError
from streamkeep.sinks.redis import RedisSink

pytestmark = pytest.mark.integration

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

#: (key, mapping) per record: str, bytes, int, float keys and values; None and an empty mapping are skipped
RECORDS: list[Any] = [
    ("h:str", {"a": "x", "b": "é"}),
    None,
    (b"h:bytes", {b"f\xff": b"\x00\xfe", "n": -(2**40)}),
    ("h:empty", {}),
    ("h:nums", {"i": 7, "big": 2**63 + 1, "f": 2.5, "neg": -0.125, 3: 4}),
]


#: RECORDS with each mapping as a flat field list (a tuple for one): the same HSETs
FLAT: list[Any] = [None if item is None else (item[0], [x for pair in item[1].items() for x in pair]) for item in RECORDS]
FLAT[2] = (FLAT[2][0], tuple(FLAT[2][1]))

#: what a hash_of result is refused with, named
BAD_RESULT = r"hash_of must return \(key, mapping\), \(key, \[field, value, \.\.\.\]\) or None, not"
ODD = r"hash_of returned 3 field list items for key 'k': a flat field list alternates field and value, so it needs an even length"


def _hash_of(record: Any) -> Any:
    return record


def _by_hand(pipe: Any, records: list[Any]) -> None:
    for item in records:
        if item is not None and item[1]:
            pipe.hset(item[0], mapping=item[1])


def _sink(url: str, write: Any, name: str) -> RedisSink:
    sink = RedisSink(url, write, name=name)
    sink.open()
    return sink


def _marker(r: Any, name: str) -> Any:
    return r.get(f"streamkeep:sink:{name}:last_batch")


@pytest.mark.parametrize("form", ["mapping", "flat"])
@pytest.mark.parametrize("path", ["write", "deferred", "parts"])
def test_it_stores_what_hand_written_pipe_hset_calls_store(redis_url, path, form):
    r = redis.Redis.from_url(redis_url)
    records = RECORDS if form == "mapping" else FLAT
    sink = RedisSink(redis_url, RedisSink.hset_writer(_hash_of), name="hsets")
    sink.open()
    try:
        if path == "write":
            sink.write(1000, records)
        elif path == "deferred":
            sink.defer_replies()
            sink.write(1000, records)
            sink.settle(1000)
        else:
            receipts = [sink.write_part(1000, "t", i, part) for i, part in enumerate((records[:2], records[2:]))]
            assert receipts == [1, 2]  # one HSET per record with fields
            sink.publish(1000, "t", receipts)
    finally:
        sink.close()
    stored = {k: r.hgetall(k) for k in (b"h:str", b"h:bytes", b"h:nums")}
    assert r.exists("h:empty") == 0 and _marker(r, "hsets") == b"1000"
    r.delete(*stored)
    plain = r.pipeline(transaction=False)  # the same write function on a plain redis-py pipeline: pipe.hset per record
    RedisSink.hset_writer(_hash_of)(plain, records)
    assert len(plain) == 3
    plain.execute()
    assert stored == {k: r.hgetall(k) for k in stored}
    assert stored[b"h:nums"] == {b"i": b"7", b"big": str(2**63 + 1).encode(), b"f": b"2.5", b"neg": b"-0.125", b"3": b"4"}
    assert stored[b"h:bytes"] == {b"f\xff": b"\x00\xfe", b"n": str(-(2**40)).encode()}


def test_a_failed_hset_in_the_middle_is_recorded_and_replayed_alone_as_the_same_command(redis_url):
    """The marker's failed command is the HSET that pipe.hset queues: a replay by hand-written calls matches it."""
    r = redis.Redis.from_url(redis_url)
    r.set("h:mid", "not a hash")
    records = [("h:a", {"n": 1}), ("h:mid", {"n": 2, "s": b"\xff"}), ("h:c", {"n": 3.5})]
    sink = _sink(redis_url, RedisSink.hset_writer(_hash_of), "mid")
    try:
        with pytest.raises(SinkError, match=r"1 of 3 commands failed.*command #2 HSET 'h:mid' 'n' 2 's' '.': WRONGTYPE"):
            sink.write(1000, records)
    finally:
        sink.close()
    assert r.hgetall("h:a") == {b"n": b"1"} and r.hgetall("h:c") == {b"n": b"3.5"}
    assert _marker(r, "mid").startswith(b"1000 failed=2/")
    r.delete("h:mid")
    r.hset("h:a", "n", "edited")  # the replay must not run the applied HSETs again
    again = _sink(redis_url, _by_hand, "mid")
    try:
        again.write(1000, records)  # the same commands, queued by hand: only #2 runs
    finally:
        again.close()
    assert r.hgetall("h:mid") == {b"n": b"2", b"s": b"\xff"}
    assert r.hgetall("h:a") == {b"n": b"edited"} and _marker(r, "mid") == b"1000"


def test_a_replay_after_a_sigkill_is_skipped(redis_url):
    """A driver writes two batches with hset_writer and dies before committing: the restarted job's replay does nothing."""
    code = textwrap.dedent(f"""
        import os, signal, sys
        sys.path.insert(0, {REPO!r})
        from streamkeep.sinks.redis import RedisSink
        sink = RedisSink({redis_url!r}, RedisSink.hset_writer(lambda rec: (f"user:{{rec[0]}}", {{"n": rec[1]}})), name="crashy")
        sink.open()
        sink.write(1000, [("ann", 1), ("bob", 1)])
        sink.write(2000, [("ann", 2)])
        os.kill(os.getpid(), signal.SIGKILL)
    """)
    proc = subprocess.run([sys.executable, "-c", code], timeout=30)
    assert proc.returncode == -signal.SIGKILL
    r = redis.Redis.from_url(redis_url, decode_responses=True)
    assert r.hgetall("user:ann") == {"n": "2"}
    r.hset("user:ann", "n", "later")  # what the replay would overwrite if it ran again
    sink = _sink(redis_url, RedisSink.hset_writer(lambda rec: (f"user:{rec[0]}", {"n": rec[1]})), "crashy")
    try:
        sink.write(2000, [("ann", 2)])  # the uncommitted batch again: applied already, skipped
        assert r.hgetall("user:ann") == {"n": "later"}
        sink.write(3000, [("bob", 3)])
    finally:
        sink.close()
    assert r.hgetall("user:bob") == {"n": "3"} and r.get("streamkeep:sink:crashy:last_batch") == "3000"


class _Fields(list):  # type: ignore[type-arg]
    """A list subclass: no flat field list (its iteration could run user code while queueing)."""


@pytest.mark.parametrize(
    ("bad", "error"),
    [
        (("k", _Fields(["a", 1])), r"its fields are a _Fields: a flat field list must be a plain list or tuple"),
        (("k", "ab"), r"its fields are a str: a flat field list must be a plain list or tuple"),
        (("k", [("a", 1)]), r"hash_of returned 1 field list items for key 'k': a flat field list alternates"),  # pairs are no flat list
        (("k", ["a", 1, "b"]), ODD),
        (("k", ("a", 1, "b")), ODD),
        (("k", "ab"), BAD_RESULT),
        (("k",), BAD_RESULT),
        ("key", BAD_RESULT),
        (("k", {"a": 1}, "extra"), BAD_RESULT),
    ],
)
def test_a_hash_of_result_that_is_not_key_and_fields_is_named_and_nothing_applied(redis_url, bad, error):
    r = redis.Redis.from_url(redis_url)
    records = [("ok", {"a": 1}), ("ok2", ["b", 2]), bad, ("after", ["c", 3])]
    sink = _sink(redis_url, RedisSink.hset_writer(_hash_of), "bad")
    try:
        with pytest.raises(UserFunctionError, match=error):
            sink.write(1000, records)
    finally:
        sink.close()
    assert r.exists("ok", "ok2", "after") == 0 and _marker(r, "bad") is None
    with pytest.raises(ConfigError, match="hash_of must be a callable"):
        RedisSink.hset_writer({"not": "callable"})  # type: ignore[arg-type]


def test_a_stop_iteration_from_hash_of_fails_the_batch_and_applies_nothing(redis_url):
    """StopIteration (e.g. next() on an empty iterator) must not end the batch early as if it were done."""
    r = redis.Redis.from_url(redis_url)

    def hash_of(record: Any) -> Any:
        user, tags = record
        return f"u:{user}", {"first": next(iter(tags))}  # StopIteration for no tag

    sink = _sink(redis_url, RedisSink.hset_writer(hash_of), "stop")
    try:
        with pytest.raises(UserFunctionError, match=r"the write function raised StopIteration.*nothing was applied") as info:
            sink.write(1000, [("a", ["x"]), ("b", []), ("c", ["z"])])
    finally:
        sink.close()
    assert isinstance(info.value.__cause__, StopIteration)
    assert r.keys("u:*") == [] and _marker(r, "stop") is None


@pytest.mark.parametrize("pipe_type", [mock.MagicMock, mock.Mock])
def test_on_a_mock_pipeline_it_calls_hset_per_record(pipe_type):
    """A mock pipeline (a user's unit test of the write function) sees pipe.hset(key, mapping=...) per record with fields."""
    pipe = pipe_type()
    RedisSink.hset_writer(_hash_of)(pipe, RECORDS)
    assert pipe.hset.call_args_list == [mock.call(item[0], mapping=item[1]) for item in RECORDS if item is not None and item[1]]
    flat = pipe_type()
    RedisSink.hset_writer(_hash_of)(flat, FLAT)
    assert flat.hset.call_args_list == [mock.call(item[0], items=item[1]) for item in FLAT if item is not None and item[1]]


@pytest.mark.parametrize(("bad", "error"), [(("k", ["a", 1, "b"]), ODD), (("k", "ab"), BAD_RESULT), (("k", 7), BAD_RESULT)])
def test_a_bad_result_on_a_plain_pipeline_is_the_sinks_type_error(redis_url, bad, error):
    plain = redis.Redis.from_url(redis_url).pipeline(transaction=False)
    with pytest.raises(TypeError, match=error):
        RedisSink.hset_writer(_hash_of)(plain, [("ok", {"a": 1}), bad])


class _Sparse(Mapping[str, Any]):
    """A mapping whose len counts keys its iteration leaves out (None values): len and items disagree."""

    def __init__(self, d: dict[str, Any]) -> None:
        self.d = d

    def __getitem__(self, k: str) -> Any:
        return self.d[k]

    def __iter__(self) -> Iterator[str]:
        return (k for k in self.d if self.d[k] is not None)

    def __len__(self) -> int:
        return len(self.d)


class _Broken(_Sparse):
    """A mapping whose iteration fails after its first key."""

    def __iter__(self) -> Iterator[str]:
        yield next(iter(self.d))
        raise KeyError("gone")


def test_a_mapping_whose_len_and_items_disagree_is_queued_as_pipe_hset_queues_it(redis_url):
    """HSET gets the pairs items() gives, as pipe.hset(key, mapping=m) sends them (not a count from len())."""
    r = redis.Redis.from_url(redis_url)
    records = [("k1", _Sparse({"a": 1, "b": None})), ("k2", {"x": "y"}), ("k3", _Sparse({"b": None}))]
    sink = _sink(redis_url, RedisSink.hset_writer(_hash_of), "sparse")
    try:
        sink.write(1000, records)
    finally:
        sink.close()
    assert r.hgetall("k1") == {b"a": b"1"} and r.hgetall("k2") == {b"x": b"y"}
    assert r.exists("k3") == 0 and _marker(r, "sparse") == b"1000"


def test_a_mapping_failing_midway_leaves_nothing_of_its_record_queued(redis_url):
    """A write function that skips the records hash_of's results fail on queues the others whole and nothing of the failed one."""
    r = redis.Redis.from_url(redis_url)
    helper = RedisSink.hset_writer(_hash_of)
    skipped = []

    def tolerant(pipe: Any, records: list[Any]) -> None:
        for record in records:
            try:
                helper(pipe, [record])
            except (TypeError, KeyError) as exc:
                skipped.append((record[0], type(exc).__name__))

    records = [("k1", _Broken({"a": 1, "b": 2})), ("k2", "ab"), ("k4", ["a", 1, "b"]), ("k3", {"x": "y"})]
    sink = _sink(redis_url, tolerant, "broken")
    try:
        sink.write(1000, records)
    finally:
        sink.close()
    assert skipped == [("k1", "KeyError"), ("k2", "TypeError"), ("k4", "TypeError")]
    assert r.keys("k*") == [b"k3"] and r.hgetall("k3") == {b"x": b"y"} and _marker(r, "broken") == b"1000"


def test_a_flat_list_of_pairs_is_refused_naming_the_command(redis_url):
    """An even-length list of (field, value) pairs is no flat field list: its tuples are arguments Redis cannot take."""
    r = redis.Redis.from_url(redis_url)
    sink = _sink(redis_url, RedisSink.hset_writer(_hash_of), "pairs")
    try:
        with pytest.raises(SinkError, match=r"command #2 \(HSET 'k' .*\) has an argument of type tuple \(\('a', 1\)\)"):
            sink.write(1000, [("ok", ["a", 1]), ("k", [("a", 1), ("b", 2)])])
    finally:
        sink.close()
    assert r.exists("ok") == 0 and _marker(r, "pairs") is None
