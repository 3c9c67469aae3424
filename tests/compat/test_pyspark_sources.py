"""Facade sources as PySpark shapes them: queueStream keeps the queued RDDs' partitions."""

from __future__ import annotations

from typing import Any

from _pyspark_helpers import run_batches

from streamkeep.compat.pyspark import SparkContext, StreamingContext


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
