"""The alias table covers PySpark's documented streaming surface, and is the only mapping.

The lists below are PySpark's public methods (``pyspark.streaming.DStream``,
``StreamingContext``, ``pyspark.RDD`` of PySpark 3.x/4.x, ``KafkaUtils`` of 2.4).
Every name must be served by the alias table, by a method the facade defines by
hand (listed in ``EXPLICIT``), or raise a NotImplementedError naming the feature.
"""

from __future__ import annotations

import inspect
import re
from typing import Any

import pytest

import streamkeep as sk
from streamkeep.compat.pyspark import RDD, DStream, KafkaUtils, SparkContext, StreamingContext, StreamingListener, _aliases

PYSPARK_DSTREAM = """
cache checkpoint cogroup combineByKey context count countByValue countByValueAndWindow countByWindow filter flatMap
flatMapValues foreachRDD fullOuterJoin glom groupByKey groupByKeyAndWindow join leftOuterJoin map mapPartitions
mapPartitionsWithIndex mapValues partitionBy persist pprint reduce reduceByKey reduceByKeyAndWindow reduceByWindow
repartition rightOuterJoin saveAsTextFiles slice transform transformWith union updateStateByKey window
""".split()

PYSPARK_STREAMING_CONTEXT = """
addStreamingListener awaitTermination awaitTerminationOrTimeout binaryRecordsStream checkpoint getActive
getActiveOrCreate getOrCreate queueStream remember socketTextStream sparkContext start stop textFileStream
transform union
""".split()

PYSPARK_RDD = """
aggregate aggregateByKey barrier cache cartesian checkpoint cleanShuffleDependencies coalesce cogroup collect
collectAsMap collectWithJobGroup combineByKey context count countApprox countApproxDistinct countByKey countByValue
distinct filter first flatMap flatMapValues fold foldByKey foreach foreachPartition fullOuterJoin getCheckpointFile
getNumPartitions getResourceProfile getStorageLevel glom groupBy groupByKey groupWith histogram id intersection
isCheckpointed isEmpty isLocallyCheckpointed join keyBy keys leftOuterJoin localCheckpoint lookup map mapPartitions
mapPartitionsWithIndex mapPartitionsWithSplit mapValues max mean meanApprox min name partitionBy persist pipe
randomSplit reduce reduceByKey reduceByKeyLocally repartition repartitionAndSortWithinPartitions rightOuterJoin
sample sampleByKey sampleStdev sampleVariance saveAsHadoopDataset saveAsHadoopFile saveAsNewAPIHadoopDataset
saveAsNewAPIHadoopFile saveAsPickleFile saveAsSequenceFile saveAsTextFile setName sortBy sortByKey stats stdev
subtract subtractByKey sum sumApprox take takeOrdered takeSample toDF toDebugString toLocalIterator top
treeAggregate treeReduce union unpersist values variance withResources zip zipWithIndex zipWithUniqueId
""".split()

PYSPARK_LISTENER = """
onStreamingStarted onReceiverStarted onReceiverError onReceiverStopped onBatchSubmitted onBatchStarted
onBatchCompleted onOutputOperationStarted onOutputOperationCompleted
""".split()

TABLES = {"DStream": (_aliases.DSTREAM, PYSPARK_DSTREAM), "StreamingContext": (_aliases.STREAMING_CONTEXT, PYSPARK_STREAMING_CONTEXT), "RDD": (_aliases.RDD, PYSPARK_RDD)}


@pytest.mark.parametrize("cls", sorted(TABLES))
def test_every_documented_name_is_mapped_explicit_or_unsupported(cls: str) -> None:
    table, names = TABLES[cls]
    served = set(table) | set(_aliases.EXPLICIT[cls]) | set(_aliases.UNSUPPORTED[cls])
    assert sorted(set(names) - served) == []
    assert not set(table) & set(_aliases.UNSUPPORTED[cls])


@pytest.fixture
def facades(sc: SparkContext) -> dict[str, Any]:
    ssc = StreamingContext(sc, 1)
    return {"DStream": ssc.queueStream([[1]]), "StreamingContext": ssc, "RDD": sc.parallelize([1])}


@pytest.mark.parametrize("cls", sorted(TABLES))
def test_names_resolve_or_raise_not_implemented(cls: str, facades: dict[str, Any]) -> None:
    obj = facades[cls]
    for name in TABLES[cls][1]:
        if name in _aliases.UNSUPPORTED[cls]:
            with pytest.raises(NotImplementedError, match=re.escape(f"{cls}.{name} is not supported")):
                getattr(obj, name)
        else:
            getattr(obj, name)  # exists (never AttributeError)


def test_string_targets_exist_on_the_core() -> None:
    for table, core in ((_aliases.DSTREAM, sk.DStream), (_aliases.RDD, sk.Batch), (_aliases.STREAMING_CONTEXT, sk.StreamingContext)):
        for pyname, alias in table.items():
            if isinstance(alias.target, str):
                assert callable(getattr(core, alias.target, None)), f"{pyname} -> {core.__name__}.{alias.target}"


def test_facade_classes_define_nothing_outside_the_table() -> None:
    """No second implementation: a facade method is generated from the table or listed as explicit."""
    for cls, name in ((DStream, "DStream"), (StreamingContext, "StreamingContext"), (RDD, "RDD")):
        table = TABLES[name][0]
        public = {n for n in vars(cls) if not n.startswith("_")}
        assert public <= set(table) | set(_aliases.EXPLICIT[name]), sorted(public - set(table) - set(_aliases.EXPLICIT[name]))
        for pyname in table:
            if pyname not in _aliases.EXPLICIT[name]:
                assert vars(cls)[pyname].__doc__.startswith(f"PySpark's ``{name}.{pyname}``")


def test_the_core_has_no_camel_case_names() -> None:
    for core in (sk.DStream, sk.Batch, sk.StreamingContext):
        camel = [n for n in dir(core) if not n.startswith("_") and re.search(r"[a-z][A-Z]", n)]
        assert camel == [], f"{core.__name__} has camelCase names {camel}: they belong in streamkeep.compat"


def test_generated_methods_have_pyspark_signatures() -> None:
    sig = inspect.signature(DStream.updateStateByKey)
    assert list(sig.parameters) == ["self", "updateFunc", "numPartitions", "initialRDD", "name"]
    assert sig.parameters["name"].kind is inspect.Parameter.KEYWORD_ONLY
    assert list(inspect.signature(DStream.reduceByKeyAndWindow).parameters)[1:7] == [
        "func", "invFunc", "windowDuration", "slideDuration", "numPartitions", "filterFunc"
    ]
    assert list(inspect.signature(StreamingContext.queueStream).parameters)[1:4] == ["rdds", "oneAtATime", "default"]


def test_bad_arguments_give_pyspark_style_type_errors(sc: SparkContext) -> None:
    stream = StreamingContext(sc, 1).queueStream([[1]])
    with pytest.raises(TypeError, match=r"DStream.reduceByKeyAndWindow\(func, invFunc, windowDuration"):
        stream.reduceByKeyAndWindow(lambda a, b: a + b)
    with pytest.raises(TypeError, match="expected a DStream"):
        stream.union([1, 2])


def test_listener_and_kafka_surface() -> None:
    for name in PYSPARK_LISTENER:
        assert callable(getattr(StreamingListener(), name))
    for name in ("createStream", "createRDD"):
        with pytest.raises(NotImplementedError, match=f"KafkaUtils.{name}"):
            getattr(KafkaUtils, name)(None, None, None, None)


def test_unsupported_dstream_and_context_features(sc: SparkContext) -> None:
    ssc = StreamingContext(sc, 1)
    with pytest.raises(NotImplementedError, match="DStream.slice is not supported.*past batches"):
        ssc.queueStream([[1]]).slice(0, 1)
    with pytest.raises(NotImplementedError, match=r"DStream.mapWithState is not supported.*to_core\(stream\).map_with_state"):
        ssc.queueStream([[1]]).mapWithState(lambda k, v, s: v)  # Scala users look for it: say where it is
    with pytest.raises(NotImplementedError, match=r"RDD.offsetRanges is not supported.*ranges are in the checkpoint.*committed to the group"):
        sc.parallelize([1]).offsetRanges()  # PySpark API (the articles store offsets with it): not "not part of the API"
    with pytest.raises(NotImplementedError, match="StreamingContext.fileStream"):
        ssc.fileStream("/tmp")
    with pytest.raises(NotImplementedError, match="SparkContext.wholeTextFiles"):
        sc.wholeTextFiles("/tmp")
    with pytest.raises(NotImplementedError, match="SparkContext.somethingNew"):
        sc.somethingNew
