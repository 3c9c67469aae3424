"""Facade sources as PySpark shapes them: queueStream keeps the queued RDDs' partitions; binaryRecordsStream."""

from __future__ import annotations

from typing import Any

import pytest
from _pyspark_helpers import run_batches

from streamkeep.compat.pyspark import SparkContext, StreamingContext
from streamkeep.errors import ConfigError, SourceError


def _record(stream: Any) -> list[Any]:
    out: list[Any] = []
    stream.foreachRDD(lambda rdd: out.append(rdd.collect()))
    return out


def test_queue_stream_keeps_the_partitions_of_the_queued_rdds(sc: SparkContext) -> None:
    ssc = StreamingContext(sc, 1)
    queue = ssc.queueStream([sc.parallelize(range(7), 3), sc.parallelize([9], 1), sc.parallelize([], 2)])
    glommed = _record(queue.glom())
    sums = _record(queue.mapPartitions(lambda it: [sum(it)]))
    indexed = _record(queue.mapPartitionsWithIndex(lambda i, it: [(i, len(list(it)))]))
    run_batches(ssc, 3)
    assert glommed == [[[0, 1], [2, 3], [4, 5, 6]], [[9]], [[], []]]
    assert sums == [[1, 5, 15], [9], [0, 0]]
    assert indexed == [[(0, 2), (1, 2), (2, 3)], [(0, 1)], [(0, 0), (1, 0)]]


def test_queue_stream_of_lists_parallelizes_them_as_pyspark_does(sc: SparkContext) -> None:
    ssc = StreamingContext(sc, 1)  # sc is local[2]: 2 partitions per list
    glommed = _record(ssc.queueStream([[1, 2, 3, 4, 5], ["x"]]).glom())
    run_batches(ssc, 2)
    assert glommed == [[[1, 2], [3, 4, 5]], [[], ["x"]]]


def test_queue_stream_all_at_once_and_default_keep_partitions(sc: SparkContext) -> None:
    ssc = StreamingContext(sc, 1)
    all_at_once = _record(ssc.queueStream([sc.parallelize([1, 2], 2), sc.parallelize([3], 1)], oneAtATime=False).glom())
    with_default = _record(ssc.queueStream([sc.parallelize([1], 1)], default=sc.parallelize([7, 8, 9], 3)).glom())
    run_batches(ssc, 3)
    assert all_at_once[0] == [[1], [2], [3]]  # the union of the queued RDDs: their partitions in turn
    assert with_default == [[[1]], [[7], [8], [9]], [[7], [8], [9]]]


def test_queue_stream_partitions_survive_the_checkpoint(tmp_path: Any) -> None:
    ckpt = str(tmp_path / "ckpt")
    seen: list[Any] = []

    def setup() -> StreamingContext:
        sc = SparkContext.getOrCreate()
        ssc = StreamingContext(sc, 1)
        ssc.queueStream([sc.parallelize(range(5), 2), sc.parallelize(["a", "b", "c"], 3)], name="q").glom().foreachRDD(lambda r: seen.append(r.collect()))
        ssc.checkpoint(ckpt)
        return ssc

    SparkContext("local[2]", "queue-ckpt")
    run_batches(StreamingContext.getOrCreate(ckpt, setup), 2)  # read back from the blobs the plans stored in the checkpoint
    assert seen == [[[0, 1], [2, 3, 4]], [["a"], ["b"], ["c"]]]


def _move_in(directory: Any, name: str, data: bytes) -> None:
    """Write a file elsewhere and move it in whole, as Spark asks of file streams."""
    tmp = directory / f".{name}.tmp"
    tmp.write_bytes(data)
    tmp.rename(directory / name)


def test_binary_records_stream_cuts_new_files_into_fixed_length_records(sc: SparkContext, tmp_path: Any) -> None:
    inp = tmp_path / "in"
    inp.mkdir()
    _move_in(inp, "old.bin", b"skipped!")  # there before the start: not new, as in Spark
    ssc = StreamingContext(sc, 1)
    stream = ssc.binaryRecordsStream(str(inp), 4)
    records = _record(stream)
    parts = _record(stream.glom())
    feed = iter([[("a.bin", b"\x00\x01\x02\x03abcd"), ("b.bin", b"WXYZ")], [], [("c.bin", b"")]])

    def next_files(rdd: Any) -> None:  # each batch writes the files the next one plans
        for name, data in next(feed, []):
            _move_in(inp, name, data)

    stream.foreachRDD(next_files)
    run_batches(ssc, 4)
    assert records == [[], [b"\x00\x01\x02\x03", b"abcd", b"WXYZ"], [], []]
    assert parts[1] == [[b"\x00\x01\x02\x03", b"abcd"], [b"WXYZ"]]  # one partition per file


def test_binary_records_stream_resumes_from_the_checkpoint(tmp_path: Any) -> None:
    inp, ckpt = tmp_path / "in", str(tmp_path / "ckpt")
    inp.mkdir()
    seen: list[Any] = []

    def setup() -> StreamingContext:
        ssc = StreamingContext(SparkContext.getOrCreate(), 1)
        ssc.binaryRecordsStream(str(inp), 2, name="bin").foreachRDD(lambda rdd: seen.append(rdd.collect()))
        ssc.checkpoint(ckpt)
        return ssc

    SparkContext("local[2]", "binary-ckpt")
    run_batches(StreamingContext.getOrCreate(ckpt, setup), 1)
    _move_in(inp, "1.bin", b"abcd")
    run_batches(StreamingContext.getOrCreate(ckpt, setup), 1)
    _move_in(inp, "2.bin", b"ef")
    run_batches(StreamingContext.getOrCreate(ckpt, setup), 1)
    assert seen == [[], [b"ab", b"cd"], [b"ef"]]  # each file once, across restarts


def test_binary_records_stream_refuses_a_partial_record(sc: SparkContext, tmp_path: Any) -> None:
    with pytest.raises(ConfigError, match="record_length must be a positive int"):
        StreamingContext(sc, 1).binaryRecordsStream(str(tmp_path), 0)
    ssc = StreamingContext(sc, 1)
    ssc.binaryRecordsStream(str(tmp_path), 4).pprint()
    ssc._ssc.run(max_batches=1)
    _move_in(tmp_path, "torn.bin", b"abcdef")
    with pytest.raises(SourceError, match=r"torn\.bin.* has 6 bytes, not a multiple of the record length 4"):
        ssc._ssc.run(max_batches=1)
    ssc.stop(stopSparkContext=False)
