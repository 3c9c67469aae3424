"""THE alias table: every PySpark name the facade offers, and the core call behind it.

This is the only place where camelCase PySpark names meet streamkeep's core.
`DSTREAM` maps `pyspark.streaming.DStream` methods onto `streamkeep.DStream`,
`RDD` maps `pyspark.RDD` methods onto `streamkeep.Batch`, `STREAMING_CONTEXT`
maps `pyspark.streaming.StreamingContext` methods onto
`streamkeep.StreamingContext`. A method the facade classes define by hand
(lifecycle, recovery, properties) is listed in `EXPLICIT`; a PySpark feature
left out is listed in `UNSUPPORTED` with the reason its NotImplementedError
gives. `tests/compat/test_alias_table.py` checks that together they cover
PySpark's documented surface.
"""

from __future__ import annotations

from streamkeep.compat.pyspark import _adapters as a
from streamkeep.compat.pyspark._table import REQUIRED, Alias, P

_PP = P("preservesPartitioning", False, None)
_NP = P("numPartitions", None, "num_partitions")
_OTHER = P("other", conv="stream")
_PF = P("partitionFunc", None, conv="partitioner")

# -- pyspark.streaming.DStream -> streamkeep.DStream -----------------------------------

DSTREAM: dict[str, Alias] = {
    # per record
    "map": Alias("map", (P("f"), _PP)),
    "flatMap": Alias("flat_map", (P("f"), _PP)),
    "filter": Alias("filter", (P("f"),)),
    "mapPartitions": Alias("map_partitions", (P("f"), _PP)),
    "mapPartitionsWithIndex": Alias(a.ds_map_partitions_with_index, (P("f"), _PP)),
    "glom": Alias("glom"),
    "mapValues": Alias("map_values", (P("f"),)),
    "flatMapValues": Alias("flat_map_values", (P("f"),)),
    "repartition": Alias("repartition", (P("numPartitions"),)),
    "partitionBy": Alias(a.ds_partition_by, (P("numPartitions"), _PF)),
    # per batch
    "reduce": Alias("reduce", (P("func"),)),
    "count": Alias("count"),
    "countByValue": Alias("count_by_value"),
    "reduceByKey": Alias("reduce_by_key", (P("func"), _NP)),
    "groupByKey": Alias("group_by_key", (_NP,)),
    "combineByKey": Alias("combine_by_key", (P("createCombiner"), P("mergeValue"), P("mergeCombiners"), _NP)),
    "join": Alias("join", (_OTHER, _NP)),
    "leftOuterJoin": Alias("left_outer_join", (_OTHER, _NP)),
    "rightOuterJoin": Alias("right_outer_join", (_OTHER, _NP)),
    "fullOuterJoin": Alias("full_outer_join", (_OTHER, _NP)),
    "cogroup": Alias("cogroup", (_OTHER, _NP)),
    "union": Alias("union", (_OTHER,)),
    "transform": Alias("transform", (P("func", conv="rdd_fn"),)),
    "transformWith": Alias("transform_with", (P("func", conv="rdd2_fn"), _OTHER, P("keepSerializer", False, None))),
    # windows and state (named: name= pins the checkpoint key)
    "window": Alias("window", (P("windowDuration"), P("slideDuration", None)), named=True),
    "reduceByWindow": Alias(
        "reduce_by_window", (P("reduceFunc"), P("invReduceFunc", REQUIRED, "inv_f"), P("windowDuration"), P("slideDuration")), named=True
    ),
    "countByWindow": Alias("count_by_window", (P("windowDuration"), P("slideDuration")), named=True),
    "countByValueAndWindow": Alias("count_by_value_and_window", (P("windowDuration"), P("slideDuration"), _NP), named=True),
    "groupByKeyAndWindow": Alias(
        "group_by_key_and_window",
        (P("windowDuration"), P("slideDuration"), _NP),
        named=True,
        note="Keys whose window holds no value are left out (Spark emits them with an empty iterable).",
    ),
    "reduceByKeyAndWindow": Alias(
        "reduce_by_key_and_window",
        (P("func"), P("invFunc", REQUIRED, "inv_f"), P("windowDuration"), P("slideDuration", None), _NP, P("filterFunc", None, "filter_f")),
        named=True,
    ),
    "updateStateByKey": Alias("update_state_by_key", (P("updateFunc"), _NP, P("initialRDD", None, "initial", conv="initial")), named=True),
    # outputs: `DStream` defines foreachRDD, pprint and saveAsTextFiles (see EXPLICIT): it runs them to tell listeners
    # storage hints: batches are materialised once and every batch is checkpointed
    "cache": Alias(a.ds_keep, returns="self", note="No effect: each batch is computed once per output run."),
    "persist": Alias(a.ds_keep, (P("storageLevel", REQUIRED, None),), returns="self", note="No effect (storage levels do not apply)."),
    "checkpoint": Alias(a.ds_keep, (P("interval", REQUIRED, None),), returns="self", note="No effect: streamkeep checkpoints every batch."),
}

# -- pyspark.RDD -> streamkeep.Batch --------------------------------------------------

_RDD_OTHER = P("other", conv="rdd")
_RNP = P("numPartitions", None)

RDD: dict[str, Alias] = {
    "map": Alias("map", (P("f"), _PP), "rdd"),
    "flatMap": Alias("flat_map", (P("f"), _PP), "rdd"),
    "filter": Alias("filter", (P("f"),), "rdd"),
    "mapPartitions": Alias("map_partitions", (P("f"), _PP), "rdd"),
    "mapPartitionsWithIndex": Alias("map_partitions_with_index", (P("f"), _PP), "rdd"),
    "mapPartitionsWithSplit": Alias("map_partitions_with_index", (P("f"), _PP), "rdd"),
    "glom": Alias("glom", (), "rdd"),
    "mapValues": Alias("map_values", (P("f"),), "rdd"),
    "flatMapValues": Alias("flat_map_values", (P("f"),), "rdd"),
    "keys": Alias("keys", (), "rdd"),
    "values": Alias("values", (), "rdd"),
    "keyBy": Alias(a.rdd_key_by, (P("f"),), "rdd"),
    "union": Alias("union", (_RDD_OTHER,), "rdd"),
    "cartesian": Alias("cartesian", (_RDD_OTHER,), "rdd"),
    "distinct": Alias("distinct", (_RNP,), "rdd"),
    "repartition": Alias("repartition", (P("numPartitions"),), "rdd"),
    "coalesce": Alias(a.rdd_coalesce, (P("numPartitions"), P("shuffle", False)), "rdd"),
    "partitionBy": Alias(a.rdd_partition_by, (P("numPartitions"), _PF), "rdd"),
    "reduceByKey": Alias(a.rdd_reduce_by_key, (P("func"), _RNP, _PF), "rdd"),
    "groupByKey": Alias(a.rdd_group_by_key, (_RNP, _PF), "rdd"),
    "combineByKey": Alias(a.rdd_combine_by_key, (P("createCombiner"), P("mergeValue"), P("mergeCombiners"), _RNP, _PF), "rdd"),
    "foldByKey": Alias(a.rdd_fold_by_key, (P("zeroValue"), P("func"), _RNP, _PF), "rdd"),
    "aggregateByKey": Alias(a.rdd_aggregate_by_key, (P("zeroValue"), P("seqFunc"), P("combFunc"), _RNP, _PF), "rdd"),
    "groupBy": Alias(a.rdd_group_by, (P("f"), _RNP, _PF), "rdd"),
    "sortBy": Alias("sort_by", (P("keyfunc"), P("ascending", True), _RNP), "rdd"),
    "sortByKey": Alias(a.rdd_sort_by_key, (P("ascending", True), _RNP, P("keyfunc", None)), "rdd"),
    "join": Alias("join", (_RDD_OTHER, _RNP), "rdd"),
    "leftOuterJoin": Alias("left_outer_join", (_RDD_OTHER, _RNP), "rdd"),
    "rightOuterJoin": Alias("right_outer_join", (_RDD_OTHER, _RNP), "rdd"),
    "fullOuterJoin": Alias("full_outer_join", (_RDD_OTHER, _RNP), "rdd"),
    "cogroup": Alias("cogroup", (_RDD_OTHER, P("numPartitions", None, "num_partitions")), "rdd"),
    "groupWith": Alias(a.rdd_group_with, (_RDD_OTHER, P("others", conv="rdd", varargs=True)), "rdd"),
    "subtract": Alias(a.rdd_subtract, (_RDD_OTHER, _RNP), "rdd"),
    "subtractByKey": Alias(a.rdd_subtract_by_key, (_RDD_OTHER, _RNP), "rdd"),
    "intersection": Alias(a.rdd_intersection, (_RDD_OTHER,), "rdd"),
    "zip": Alias(a.rdd_zip, (_RDD_OTHER,), "rdd"),
    "zipWithIndex": Alias(a.rdd_zip_with_index, (), "rdd"),
    "zipWithUniqueId": Alias(a.rdd_zip_with_unique_id, (), "rdd"),
    # actions
    "collect": Alias("collect", (), "value"),
    "count": Alias("count", (), "value"),
    "take": Alias("take", (P("num"),), "value"),
    "first": Alias("first", (), "value"),
    "isEmpty": Alias("is_empty", (), "value"),
    "foreach": Alias("foreach", (P("f"),), "none"),
    "foreachPartition": Alias("foreach_partition", (P("f"),), "none"),
    "toLocalIterator": Alias(a.rdd_to_local_iterator, (P("prefetchPartitions", False, None),), "value"),
    "reduce": Alias(a.rdd_reduce, (P("f"),), "value"),
    "treeReduce": Alias(a.rdd_tree_reduce, (P("f"), P("depth", 2, None)), "value"),
    "fold": Alias(a.rdd_fold, (P("zeroValue"), P("op")), "value"),
    "aggregate": Alias(a.rdd_aggregate, (P("zeroValue"), P("seqOp"), P("combOp")), "value"),
    "treeAggregate": Alias(a.rdd_aggregate, (P("zeroValue"), P("seqOp"), P("combOp"), P("depth", 2, None)), "value"),
    "sum": Alias(a.rdd_sum, (), "value"),
    "max": Alias(a.rdd_max, (P("key", None),), "value"),
    "min": Alias(a.rdd_min, (P("key", None),), "value"),
    "mean": Alias(a.rdd_mean, (), "value"),
    "variance": Alias(a.rdd_variance, (), "value"),
    "stdev": Alias(a.rdd_stdev, (), "value"),
    "sampleVariance": Alias(a.rdd_sample_variance, (), "value"),
    "sampleStdev": Alias(a.rdd_sample_stdev, (), "value"),
    "countByValue": Alias(a.rdd_count_by_value, (), "value"),
    "countByKey": Alias(a.rdd_count_by_key, (), "value"),
    "collectAsMap": Alias(a.rdd_collect_as_map, (), "value"),
    "reduceByKeyLocally": Alias(a.rdd_reduce_by_key_locally, (P("func"),), "value"),
    "top": Alias(a.rdd_top, (P("num"), P("key", None)), "value"),
    "takeOrdered": Alias(a.rdd_take_ordered, (P("num"), P("key", None)), "value"),
    "lookup": Alias(a.rdd_lookup, (P("key"),), "value"),
    "getNumPartitions": Alias(a.rdd_num_partitions, (), "value"),
    "saveAsTextFile": Alias(
        a.rdd_save_as_text_file,
        (P("path"), P("compressionCodecClass", None)),
        "none",
        note="Overwrites the files of an existing directory (Spark refuses), so a replayed batch is harmless.",
    ),
    # storage hints and RDD checkpoints: no effect
    "cache": Alias(a.rdd_none, (), "self"),
    "persist": Alias(a.rdd_none, (P("storageLevel", None, None),), "self"),
    "unpersist": Alias(a.rdd_none, (P("blocking", False, None),), "self"),
    "checkpoint": Alias(a.rdd_none, (), "none"),
    "localCheckpoint": Alias(a.rdd_none, (), "none"),
    "isCheckpointed": Alias(a.rdd_false, (), "value"),
    "isLocallyCheckpointed": Alias(a.rdd_false, (), "value"),
    "getCheckpointFile": Alias(a.rdd_none, (), "value"),
}

# -- pyspark.streaming.StreamingContext -> streamkeep.StreamingContext ----------------

STREAMING_CONTEXT: dict[str, Alias] = {
    "socketTextStream": Alias("socket_text_stream", (P("hostname"), P("port"), P("storageLevel", None, None)), named=True),
    "textFileStream": Alias("text_file_stream", (P("directory"),), named=True),
    "binaryRecordsStream": Alias(
        "binary_records_stream",
        (P("directory"), P("recordLength")),
        named=True,
        note="Each new file is cut into records of recordLength bytes (bytes values), one partition per file.",
    ),
    "queueStream": Alias(
        a.ssc_queue_stream,
        (P("rdds", conv="queue"), P("oneAtATime", True, "one_at_a_time"), P("default", None, "default", conv="partitions")),
        named=True,
        note=(
            "Each batch keeps the partitions of its queued RDD (a list is parallelized first, as in PySpark). "
            "With a checkpoint, each batch's records are stored in it, so a replay is exact (Spark refuses queueStream with checkpoints)."
        ),
    ),
    "union": Alias("union", (P("dstreams", conv="stream", varargs=True),)),
    "transform": Alias(a.ssc_transform, (P("dstreams", conv="streams"), P("transformFunc", conv="rdds_fn"))),
    "checkpoint": Alias("checkpoint", (P("directory"),), "none"),
}

# Methods and properties the facade classes define by hand (lifecycle, recovery, registries).
EXPLICIT: dict[str, tuple[str, ...]] = {
    "DStream": ("context", "foreachRDD", "pprint", "saveAsTextFiles"),
    "RDD": ("context", "ctx", "id", "name", "setName", "toDebugString", "getStorageLevel"),
    "StreamingContext": (
        "getOrCreate",
        "getActive",
        "getActiveOrCreate",
        "sparkContext",
        "start",
        "awaitTermination",
        "awaitTerminationOrTimeout",
        "stop",
        "remember",
        "addStreamingListener",
    ),
}

_DF = "DataFrames and SQL (pyspark.sql) are outside streamkeep's DStream model"
_HADOOP = "Hadoop input/output formats are not available; write with foreachRDD or saveAsTextFile(s)"
_RANDOM = "random sampling would not replay identically after a crash"

UNSUPPORTED: dict[str, dict[str, str]] = {
    "DStream": {
        "slice": "streamkeep does not keep the RDDs of past batches; use window() or foreachRDD to keep what you need",
        "mapWithState": (
            "mapWithState is Spark's Scala/Java API (PySpark has none); streamkeep's own is "
            "to_core(stream).map_with_state(f, name=..., timeout=...) with f(key, value, state); "
            "DStream(that, ssc) makes it a facade DStream again (to_core and DStream from "
            "streamkeep.compat.pyspark; see docs/concepts.md)"
        ),
    },
    "RDD": {
        "sample": _RANDOM,
        "sampleByKey": _RANDOM,
        "takeSample": _RANDOM,
        "randomSplit": _RANDOM,
        "pipe": "piping records through an external command is not available",
        "saveAsPickleFile": _HADOOP,
        "saveAsSequenceFile": _HADOOP,
        "saveAsHadoopFile": _HADOOP,
        "saveAsHadoopDataset": _HADOOP,
        "saveAsNewAPIHadoopFile": _HADOOP,
        "saveAsNewAPIHadoopDataset": _HADOOP,
        "toDF": _DF,
        "offsetRanges": (
            "the Kafka offset ranges of a batch are not exposed on its RDD. What storing them achieves is built in: "
            "each batch's ranges are in the checkpoint before it runs (a restart re-reads exactly them; "
            "`streamkeep checkpoint inspect URL` shows the positions), and with 'group.id' in kafkaParams the offsets "
            "are committed to the group after each batch's checkpoint commit. A foreachRDD(lambda time, rdd: ...) "
            "write keyed by the batch time is idempotent across replays"
        ),
        "barrier": "barrier execution is not available",
        "withResources": "resource profiles are not available",
        "getResourceProfile": "resource profiles are not available",
        "countApprox": "approximate jobs are not available; use count()",
        "sumApprox": "approximate jobs are not available; use sum()",
        "meanApprox": "approximate jobs are not available; use mean()",
        "countApproxDistinct": "approximate jobs are not available; use distinct().count()",
        "histogram": "not available; compute buckets with map() and countByValue()",
        "stats": "StatCounter is not available; use count(), mean(), stdev(), min(), max()",
        "collectWithJobGroup": "job groups are not available",
        "repartitionAndSortWithinPartitions": "not available; use sortByKey()",
        "cleanShuffleDependencies": "shuffles are in-process; nothing to clean",
    },
    "StreamingContext": {},
    "SparkContext": {
        "addFile": "the job runs in one process: read files directly",
        "addPyFile": "the job runs in one process: import modules directly",
        "addArchive": "the job runs in one process: read files directly",
        "wholeTextFiles": "not available; use textFile()",
        "binaryFiles": _HADOOP,
        "binaryRecords": _HADOOP,
        "sequenceFile": _HADOOP,
        "hadoopFile": _HADOOP,
        "hadoopRDD": _HADOOP,
        "newAPIHadoopFile": _HADOOP,
        "newAPIHadoopRDD": _HADOOP,
        "pickleFile": _HADOOP,
        "runJob": "low-level jobs are not available",
        "statusTracker": "Spark's status tracker is not available; use StreamingContext.addStreamingListener",
        "show_profiles": "profilers are not available",
        "dump_profiles": "profilers are not available",
        "setSystemProperty": "there is no JVM; use environment variables or SparkConf",
        "cancelAllJobs": "jobs cannot be cancelled; stop the StreamingContext",
        "cancelJobGroup": "jobs cannot be cancelled; stop the StreamingContext",
    },
    "pyspark": {
        "SQLContext": _DF,
        "HiveContext": _DF,
        "Row": _DF,
        "SparkSession": _DF,
        "SparkFiles": "the job runs in one process: read files directly",
        "TaskContext": "there are no tasks: functions run in the driver process",
        "BarrierTaskContext": "barrier execution is not available",
        "RDDBarrier": "barrier execution is not available",
        "BarrierTaskInfo": "barrier execution is not available",
        "Profiler": "profilers are not available",
        "BasicProfiler": "profilers are not available",
        "MarshalSerializer": "serializers are not configurable; state uses streamkeep's codecs",
        "PickleSerializer": "serializers are not configurable; state uses streamkeep's codecs",
        "CPickleSerializer": "serializers are not configurable; state uses streamkeep's codecs",
        "StatusTracker": "use StreamingContext.addStreamingListener",
        "SparkJobInfo": "use StreamingContext.addStreamingListener",
        "SparkStageInfo": "use StreamingContext.addStreamingListener",
        "InheritableThread": "not needed: functions run in the driver process",
        "inheritable_thread_target": "not needed: functions run in the driver process",
        "TaskResources": "resource profiles are not available",
    },
}

UNSUPPORTED_MODULES: dict[str, str] = {
    "pyspark.sql": _DF,
    "pyspark.pandas": _DF,
    "pyspark.ml": "machine learning (pyspark.ml) is not available",
    "pyspark.mllib": "machine learning (pyspark.mllib) is not available",
    "pyspark.streaming.kinesis": "the Kinesis source is not available; write a Source (see streamkeep.sources.base)",
    "pyspark.streaming.flume": "the Flume source is not available; write a Source (see streamkeep.sources.base)",
    "pyspark.streaming.mqtt": "the MQTT source is not available; write a Source (see streamkeep.sources.base)",
    "pyspark.resource": "resource profiles are not available",
}

__all__ = ["DSTREAM", "EXPLICIT", "RDD", "STREAMING_CONTEXT", "UNSUPPORTED", "UNSUPPORTED_MODULES"]
