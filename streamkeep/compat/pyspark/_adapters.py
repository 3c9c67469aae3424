"""Small compositions of core calls for PySpark methods that are not a plain rename.

Each function takes the wrapped core object (a `streamkeep.DStream` or a
`streamkeep.Batch`) first, then the already converted PySpark arguments, and
only calls the core's public operators: no operator is implemented twice.
Referenced from the alias table in `_aliases.py`.
"""

from __future__ import annotations

import copy
import heapq
import math
import operator
from collections.abc import Callable, Iterator
from datetime import datetime
from typing import Any

from streamkeep import Batch, DStream
from streamkeep.compat.pyspark._errors import unsupported
from streamkeep.sinks._textfiles import write_text_dir
from streamkeep.sinks.text import PPrintSink, TextFilesSink


def local_time(t: datetime) -> datetime:
    """A batch time as PySpark passes it: a naive datetime in local time."""
    return datetime.fromtimestamp(t.timestamp())


def _check_default_partitioner(partition_func: Any, op: str) -> None:
    if partition_func is not None:
        unsupported(f"{op}(partitionFunc=...)", "records are placed by streamkeep's stable key hash; a custom partitioner is not supported")


# -- DStream ----------------------------------------------------------------------


def ds_map_partitions_with_index(ds: DStream[Any], f: Callable[[int, Iterator[Any]], Any]) -> DStream[Any]:
    """transform(batch.map_partitions_with_index(f))"""
    return ds.transform(lambda b: b.map_partitions_with_index(f))


def ds_partition_by(ds: DStream[Any], num_partitions: int, partition_func: Any = None) -> DStream[Any]:
    """transform(batch.partition_by(n))"""
    _check_default_partitioner(partition_func, "DStream.partitionBy")
    return ds.transform(lambda b: b.partition_by(num_partitions))


def pprint_fn(num: int = 10) -> Callable[[datetime, Batch[Any]], None]:
    """the output function of pprint: a PPrintSink with PySpark's time format (naive local time)"""
    sink = PPrintSink(num, name="pprint", time_format=lambda ms: str(datetime.fromtimestamp(ms / 1000)))

    def take_and_print(t: datetime, batch: Batch[Any]) -> None:
        sink.write_batch(round(t.timestamp() * 1000), batch)

    return take_and_print


def save_fn(prefix: str, suffix: str | None = None) -> Callable[[datetime, Batch[Any]], None]:
    """the output function of saveAsTextFiles: a TextFilesSink, rdd.saveAsTextFile(prefix-<ms>[.suffix]) as PySpark does"""
    sink = TextFilesSink(prefix, suffix, name="saveAsTextFiles")

    def save(t: datetime, batch: Batch[Any]) -> None:
        sink.write_batch(round(t.timestamp() * 1000), batch)

    return save


def ds_keep(ds: DStream[Any], *_args: Any) -> None:
    """nothing: streamkeep materialises each batch once and checkpoints every batch"""


def ssc_queue_stream(
    ssc: Any, rdds: list[list[list[Any]]], one_at_a_time: bool = True, default: list[list[Any]] | None = None, *, name: str | None = None
) -> DStream[Any]:
    """queue_stream(partitioned=True): each queued RDD's partitions stay its batch's partitions"""
    return ssc.queue_stream(rdds, one_at_a_time=one_at_a_time, default=default, name=name, partitioned=True)  # type: ignore[no-any-return]


def ssc_transform(ssc: Any, streams: list[DStream[Any]], fn: Callable[[list[Batch[Any]]], Batch[Any]]) -> DStream[Any]:
    """transform / transform_with, or a tagged union split again per stream"""
    if not streams:
        msg = "StreamingContext.transform needs at least one DStream"
        raise ValueError(msg)
    if len(streams) == 1:
        return streams[0].transform(lambda b: fn([b]))
    if len(streams) == 2:
        return streams[0].transform_with(lambda a, b: fn([a, b]), streams[1])
    n = len(streams)
    tagged = [s.map(_tagger(i)) for i, s in enumerate(streams)]
    return tagged[0].union(*tagged[1:]).transform(lambda b: fn([b.filter(_has_tag(i)).map(_untag) for i in range(n)]))


def _tagger(i: int) -> Callable[[Any], tuple[int, Any]]:
    return lambda x: (i, x)


def _has_tag(i: int) -> Callable[[tuple[int, Any]], bool]:
    return lambda r: r[0] == i


def _untag(r: tuple[int, Any]) -> Any:
    return r[1]


# -- RDD (Batch) ------------------------------------------------------------------


def rdd_reduce(b: Batch[Any], f: Callable[[Any, Any], Any]) -> Any:
    """batch.reduce(f), as a value"""
    out = b.reduce(f).collect()
    if not out:
        msg = "Can not reduce() empty RDD"
        raise ValueError(msg)
    return out[0]


def rdd_fold(b: Batch[Any], zero: Any, op: Callable[[Any, Any], Any]) -> Any:
    """fold each partition from a copy of zero, then the partials from zero (Spark's order)"""
    partials = b.map_partitions(lambda it: [_fold(op, copy.deepcopy(zero), it)]).collect()
    return _fold(op, zero, iter(partials))


def rdd_aggregate(b: Batch[Any], zero: Any, seq_op: Callable[[Any, Any], Any], comb_op: Callable[[Any, Any], Any], *_depth: Any) -> Any:
    """aggregate each partition with seq_op from a copy of zero, then the partials with comb_op"""
    partials = b.map_partitions(lambda it: [_fold(seq_op, copy.deepcopy(zero), it)]).collect()
    return _fold(comb_op, zero, iter(partials))


def _fold(op: Callable[[Any, Any], Any], acc: Any, it: Iterator[Any]) -> Any:
    for x in it:
        acc = op(acc, x)
    return acc


def rdd_tree_reduce(b: Batch[Any], f: Callable[[Any, Any], Any], *_depth: Any) -> Any:
    """batch.reduce(f) (one process: no tree needed)"""
    return rdd_reduce(b, f)


def rdd_sum(b: Batch[Any]) -> Any:
    """fold(0, add)"""
    return rdd_fold(b, 0, operator.add)


def rdd_max(b: Batch[Any], key: Callable[[Any], Any] | None = None) -> Any:
    """max(collect())"""
    return max(b.collect(), key=key) if key is not None else max(b.collect())


def rdd_min(b: Batch[Any], key: Callable[[Any], Any] | None = None) -> Any:
    """min(collect())"""
    return min(b.collect(), key=key) if key is not None else min(b.collect())


def _moments(b: Batch[Any]) -> tuple[int, float, float]:
    xs = b.collect()
    n = len(xs)
    mean = sum(xs) / n if n else math.nan
    m2 = sum((x - mean) ** 2 for x in xs) if n else math.nan
    return n, mean, m2


def rdd_mean(b: Batch[Any]) -> float:
    """mean of collect()"""
    return _moments(b)[1]


def rdd_variance(b: Batch[Any]) -> float:
    """population variance"""
    n, _, m2 = _moments(b)
    return m2 / n if n else math.nan


def rdd_stdev(b: Batch[Any]) -> float:
    """population standard deviation"""
    return math.sqrt(rdd_variance(b))


def rdd_sample_variance(b: Batch[Any]) -> float:
    """sample variance (n - 1)"""
    n, _, m2 = _moments(b)
    return m2 / (n - 1) if n > 1 else math.nan


def rdd_sample_stdev(b: Batch[Any]) -> float:
    """sample standard deviation"""
    return math.sqrt(rdd_sample_variance(b))


def rdd_count_by_value(b: Batch[Any]) -> dict[Any, int]:
    """dict(batch.count_by_value())"""
    return dict(b.count_by_value().collect())


def rdd_count_by_key(b: Batch[Any]) -> dict[Any, int]:
    """dict(batch.keys().count_by_value())"""
    return dict(b.keys().count_by_value().collect())


def rdd_reduce_by_key_locally(b: Batch[Any], f: Callable[[Any, Any], Any]) -> dict[Any, Any]:
    """dict(batch.reduce_by_key(f))"""
    return dict(b.reduce_by_key(f).collect())


def rdd_collect_as_map(b: Batch[Any]) -> dict[Any, Any]:
    """dict(batch.collect())"""
    return dict(b.collect())


def rdd_to_local_iterator(b: Batch[Any], *_prefetch: Any) -> Iterator[Any]:
    """iter(batch)"""
    return iter(b.collect())


def rdd_key_by(b: Batch[Any], f: Callable[[Any], Any]) -> Batch[Any]:
    """batch.map(x -> (f(x), x))"""
    return b.map(lambda x: (f(x), x))


def rdd_group_by(b: Batch[Any], f: Callable[[Any], Any], num_partitions: int | None = None, partition_func: Any = None) -> Batch[Any]:
    """batch.map(x -> (f(x), x)).group_by_key()"""
    _check_default_partitioner(partition_func, "RDD.groupBy")
    return b.map(lambda x: (f(x), x)).group_by_key(num_partitions)


def rdd_sort_by_key(
    b: Batch[Any], ascending: bool = True, num_partitions: int | None = None, keyfunc: Callable[[Any], Any] | None = None
) -> Batch[Any]:
    """batch.sort_by(keyfunc(key))"""
    kf = keyfunc or _identity
    return b.sort_by(lambda kv: kf(kv[0]), ascending, num_partitions)


def _identity(x: Any) -> Any:
    return x


def rdd_fold_by_key(
    b: Batch[Any], zero: Any, f: Callable[[Any, Any], Any], num_partitions: int | None = None, partition_func: Any = None
) -> Batch[Any]:
    """batch.combine_by_key(f(copy(zero), v), f, f)"""
    _check_default_partitioner(partition_func, "RDD.foldByKey")
    return b.combine_by_key(lambda v: f(copy.deepcopy(zero), v), f, f, num_partitions)


def rdd_aggregate_by_key(
    b: Batch[Any],
    zero: Any,
    seq: Callable[[Any, Any], Any],
    comb: Callable[[Any, Any], Any],
    num_partitions: int | None = None,
    partition_func: Any = None,
) -> Batch[Any]:
    """batch.combine_by_key(seq(copy(zero), v), seq, comb)"""
    _check_default_partitioner(partition_func, "RDD.aggregateByKey")
    return b.combine_by_key(lambda v: seq(copy.deepcopy(zero), v), seq, comb, num_partitions)


def rdd_reduce_by_key(
    b: Batch[Any], f: Callable[[Any, Any], Any], num_partitions: int | None = None, partition_func: Any = None
) -> Batch[Any]:
    """batch.reduce_by_key(f)"""
    _check_default_partitioner(partition_func, "RDD.reduceByKey")
    return b.reduce_by_key(f, num_partitions)


def rdd_group_by_key(b: Batch[Any], num_partitions: int | None = None, partition_func: Any = None) -> Batch[Any]:
    """batch.group_by_key()"""
    _check_default_partitioner(partition_func, "RDD.groupByKey")
    return b.group_by_key(num_partitions)


def rdd_combine_by_key(
    b: Batch[Any], create: Any, merge_value: Any, merge_combiners: Any, num_partitions: int | None = None, partition_func: Any = None
) -> Batch[Any]:
    """batch.combine_by_key(...)"""
    _check_default_partitioner(partition_func, "RDD.combineByKey")
    return b.combine_by_key(create, merge_value, merge_combiners, num_partitions)


def rdd_partition_by(b: Batch[Any], num_partitions: int, partition_func: Any = None) -> Batch[Any]:
    """batch.partition_by(n)"""
    _check_default_partitioner(partition_func, "RDD.partitionBy")
    return b.partition_by(num_partitions)


def rdd_group_with(b: Batch[Any], *others: Batch[Any]) -> Batch[Any]:
    """batch.cogroup(*others)"""
    return b.cogroup(*others)


def rdd_top(b: Batch[Any], num: int, key: Callable[[Any], Any] | None = None) -> list[Any]:
    """the num largest records"""
    return heapq.nlargest(num, b.collect(), key=key)


def rdd_take_ordered(b: Batch[Any], num: int, key: Callable[[Any], Any] | None = None) -> list[Any]:
    """the num smallest records"""
    return heapq.nsmallest(num, b.collect(), key=key)


def rdd_lookup(b: Batch[Any], key: Any) -> list[Any]:
    """values of key"""
    return [kv[1] for kv in b.collect() if kv[0] == key]


def rdd_subtract_by_key(b: Batch[Any], other: Batch[Any], num_partitions: int | None = None) -> Batch[Any]:
    """(k, v) of batch whose key is not in other, via cogroup"""
    return b.cogroup(other, num_partitions=num_partitions).flat_map(lambda kg: [(kg[0], v) for v in kg[1][0]] if not kg[1][1] else [])


def rdd_subtract(b: Batch[Any], other: Batch[Any], num_partitions: int | None = None) -> Batch[Any]:
    """records of batch not in other, via cogroup"""
    return rdd_subtract_by_key(b.map(lambda x: (x, None)), other.map(lambda x: (x, None)), num_partitions).keys()


def rdd_intersection(b: Batch[Any], other: Batch[Any]) -> Batch[Any]:
    """distinct records in both, via cogroup"""
    both = b.map(lambda x: (x, None)).cogroup(other.map(lambda x: (x, None)))
    return both.filter(lambda kg: bool(kg[1][0]) and bool(kg[1][1])).keys()


def rdd_coalesce(b: Batch[Any], num_partitions: int, shuffle: bool = False) -> Batch[Any]:
    """merge neighbouring partitions (or repartition with shuffle)"""
    if shuffle or num_partitions >= b.num_partitions:
        return b.repartition(num_partitions) if shuffle else b
    parts = b.partitions
    n = len(parts)
    groups = [parts[i * n // num_partitions : (i + 1) * n // num_partitions] for i in range(num_partitions)]
    return Batch([[x for p in g for x in p] for g in groups], b.batch_time_ms)


def rdd_num_partitions(b: Batch[Any]) -> int:
    """batch.num_partitions"""
    return b.num_partitions


def rdd_zip_with_index(b: Batch[Any]) -> Batch[Any]:
    """(record, index) numbered across partitions in order"""
    parts = b.partitions
    out, i = [], 0
    for p in parts:
        out.append([(x, i + j) for j, x in enumerate(p)])
        i += len(p)
    return Batch(out, b.batch_time_ms)


def rdd_zip_with_unique_id(b: Batch[Any]) -> Batch[Any]:
    """(record, k + i * n) for the i-th record of partition k of n (Spark's ids)"""
    n = b.num_partitions
    return b.map_partitions_with_index(lambda k, it: ((x, i * n + k) for i, x in enumerate(it)))


def rdd_zip(b: Batch[Any], other: Batch[Any]) -> Batch[Any]:
    """pairs of records in the same position of both"""
    left, right = b.partitions, other.partitions
    if [len(p) for p in left] != [len(p) for p in right]:
        msg = "Can only zip RDDs with same number of elements in each partition"
        raise ValueError(msg)
    return Batch([list(zip(lp, rp, strict=True)) for lp, rp in zip(left, right, strict=True)], b.batch_time_ms)


def rdd_false(b: Batch[Any]) -> bool:
    """False (RDD checkpoints do not exist in streamkeep)"""
    return False


def rdd_none(b: Batch[Any], *_args: Any) -> None:
    """None"""
    return None


def rdd_save_as_text_file(b: Batch[Any], path: str, compression: Any = None) -> None:
    """write part-NNNNN per partition and _SUCCESS into `path` (local paths)"""
    if compression is not None:
        unsupported("RDD.saveAsTextFile(compressionCodecClass=...)", "output is written uncompressed")
    write_text_dir(path, b.partitions)
