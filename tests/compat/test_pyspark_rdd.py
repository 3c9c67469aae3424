"""The RDD facade over Batch: PySpark's RDD methods as streaming programs use them."""

from __future__ import annotations

import operator
from typing import Any

import pytest

from streamkeep.compat.pyspark import RDD, SparkContext, UnsupportedFeatureError, portable_hash


@pytest.fixture
def nums(sc: SparkContext) -> RDD:
    return sc.parallelize([5, 3, 1, 4, 2], 2)


@pytest.fixture
def pairs(sc: SparkContext) -> RDD:
    return sc.parallelize([("a", 1), ("b", 2), ("a", 3)], 2)


def test_transformations(sc: SparkContext, nums: RDD, pairs: RDD) -> None:
    assert nums.map(lambda x: x * 2).collect() == [10, 6, 2, 8, 4]
    assert nums.flatMap(lambda x: [x] * (x % 2)).collect() == [5, 3, 1]
    assert nums.filter(lambda x: x > 2).collect() == [5, 3, 4]
    assert nums.mapPartitions(lambda it: [sum(it)]).collect() == [8, 7]
    assert nums.mapPartitionsWithIndex(lambda i, it: [(i, len(list(it)))]).collect() == [(0, 2), (1, 3)]
    assert nums.glom().collect() == [[5, 3], [1, 4, 2]]
    assert nums.keyBy(lambda x: x % 2).collect()[0] == (1, 5)
    assert pairs.keys().collect() == ["a", "b", "a"] and pairs.values().collect() == [1, 2, 3]
    assert pairs.mapValues(str).collect() == [("a", "1"), ("b", "2"), ("a", "3")]
    assert pairs.flatMapValues(lambda v: [v] * v).count() == 6
    assert sorted(nums.union(sc.parallelize([9])).collect()) == [1, 2, 3, 4, 5, 9]
    assert sorted((nums + sc.parallelize([0])).collect()) == [0, 1, 2, 3, 4, 5]
    assert sc.parallelize([1, 2]).cartesian(sc.parallelize("ab")).collect() == [(1, "a"), (1, "b"), (2, "a"), (2, "b")]
    assert sorted(sc.parallelize([1, 1, 2]).distinct().collect()) == [1, 2]
    assert nums.repartition(3).getNumPartitions() == 3
    assert nums.coalesce(1).glom().collect() == [[5, 3, 1, 4, 2]]
    assert sorted(pairs.partitionBy(2, portable_hash).collect()) == sorted(pairs.collect())
    with pytest.raises(UnsupportedFeatureError, match="partitionFunc"):
        pairs.partitionBy(2, lambda k: 0)


def test_keyed_operations(sc: SparkContext, pairs: RDD) -> None:
    other = sc.parallelize([("a", "x"), ("c", "y")])
    assert sorted(pairs.reduceByKey(operator.add).collect()) == [("a", 4), ("b", 2)]
    assert sorted((k, sorted(v)) for k, v in pairs.groupByKey().collect()) == [("a", [1, 3]), ("b", [2])]
    assert sorted(pairs.combineByKey(lambda v: [v], lambda c, v: c + [v], operator.add).mapValues(sorted).collect()) == [("a", [1, 3]), ("b", [2])]
    assert sorted(pairs.foldByKey(0, operator.add).collect()) == [("a", 4), ("b", 2)]
    assert sorted(pairs.aggregateByKey(0, operator.add, operator.add).collect()) == [("a", 4), ("b", 2)]
    assert sorted(pairs.join(other).collect()) == [("a", (1, "x")), ("a", (3, "x"))]
    assert sorted(pairs.leftOuterJoin(other).collect()) == [("a", (1, "x")), ("a", (3, "x")), ("b", (2, None))]
    assert sorted(pairs.rightOuterJoin(other).collect()) == [("a", (1, "x")), ("a", (3, "x")), ("c", (None, "y"))]
    assert len(pairs.fullOuterJoin(other).collect()) == 4
    assert sorted((k, (list(a), list(b))) for k, (a, b) in pairs.cogroup(other).collect()) == [
        ("a", ([1, 3], ["x"])), ("b", ([2], [])), ("c", ([], ["y"]))
    ]
    assert sorted(pairs.subtractByKey(other).collect()) == [("b", 2)]
    assert sorted(sc.parallelize([1, 2, 3]).subtract(sc.parallelize([2])).collect()) == [1, 3]
    assert sorted(sc.parallelize([1, 2, 3]).intersection(sc.parallelize([3, 2, 9])).collect()) == [2, 3]
    assert pairs.sortByKey(ascending=False).collect()[0][0] == "b"
    assert pairs.sortBy(lambda kv: kv[1]).collect() == [("a", 1), ("b", 2), ("a", 3)]
    assert sorted((k, sorted(v)) for k, v in sc.parallelize([1, 2, 3]).groupBy(lambda x: x % 2).collect()) == [(0, [2]), (1, [1, 3])]
    assert pairs.lookup("a") == [1, 3]
    assert pairs.countByKey() == {"a": 2, "b": 1}
    assert pairs.collectAsMap() == {"a": 3, "b": 2}
    assert pairs.reduceByKeyLocally(operator.add) == {"a": 4, "b": 2}


def test_actions(sc: SparkContext, nums: RDD) -> None:
    assert nums.count() == 5 and nums.first() == 5 and nums.take(2) == [5, 3]
    assert nums.reduce(operator.add) == 15 and nums.fold(0, operator.add) == 15 and nums.sum() == 15
    assert nums.treeReduce(operator.add) == 15
    assert nums.aggregate((0, 0), lambda acc, x: (acc[0] + x, acc[1] + 1), lambda a, b: (a[0] + b[0], a[1] + b[1])) == (15, 5)
    assert (nums.max(), nums.min(), nums.mean()) == (5, 1, 3.0)
    assert nums.variance() == 2.0 and nums.sampleVariance() == 2.5 and nums.stdev() == pytest.approx(2**0.5)
    assert nums.top(2) == [5, 4] and nums.takeOrdered(2) == [1, 2] and nums.takeOrdered(1, key=lambda x: -x) == [5]
    assert nums.countByValue() == {5: 1, 3: 1, 1: 1, 4: 1, 2: 1}
    assert list(nums.toLocalIterator()) == [5, 3, 1, 4, 2]
    assert nums.zipWithIndex().collect() == [(5, 0), (3, 1), (1, 2), (4, 3), (2, 4)]
    assert nums.zipWithUniqueId().collect() == [(5, 0), (3, 2), (1, 1), (4, 3), (2, 5)]
    assert nums.zip(nums.map(str)).collect()[0] == (5, "5")
    assert not nums.isEmpty() and sc.emptyRDD().isEmpty()
    seen: list[Any] = []
    nums.foreach(seen.append)
    nums.foreachPartition(lambda it: seen.append(list(it)))
    assert seen == [5, 3, 1, 4, 2, [5, 3], [1, 4, 2]]
    with pytest.raises(ValueError, match="empty"):
        sc.emptyRDD().reduce(operator.add)
    with pytest.raises(ValueError):
        sc.emptyRDD().first()


def test_truthiness_storage_and_identity(sc: SparkContext, nums: RDD) -> None:
    assert bool(sc.emptyRDD()) is True  # as in PySpark: an RDD object is always truthy
    assert nums.cache() is nums and nums.persist() is nums and nums.unpersist() is nums
    assert nums.checkpoint() is None and nums.isCheckpointed() is False
    assert nums.setName("n").name() == "n" and "n RDD" in repr(nums)
    assert nums.context is sc and nums.ctx is sc
    with pytest.raises(TypeError):
        len(nums)  # type: ignore[arg-type]


def test_save_as_text_file(sc: SparkContext, tmp_path: Any) -> None:
    out = tmp_path / "out"
    sc.parallelize(["a", "b", "c"], 2).saveAsTextFile(str(out))
    sc.parallelize(["a", "b", "c"], 2).saveAsTextFile(str(out))  # a replay overwrites (Spark would refuse)
    assert (out / "part-00000").read_text() == "a\n" and (out / "part-00001").read_text() == "b\nc\n"
    assert (out / "_SUCCESS").exists()


@pytest.mark.parametrize("name", ["sample", "takeSample", "toDF", "pipe", "saveAsPickleFile", "stats", "histogram"])
def test_unsupported_rdd_methods_name_the_feature(nums: RDD, name: str) -> None:
    with pytest.raises(NotImplementedError, match=f"RDD.{name} is not supported"):
        getattr(nums, name)


def test_unknown_attributes_are_not_implemented_not_attribute_errors(nums: RDD) -> None:
    with pytest.raises(NotImplementedError, match="RDD.offsetRanges"):
        nums.offsetRanges()
    with pytest.raises(AttributeError):
        nums._jrdd  # private names keep Python's protocol: AttributeError
