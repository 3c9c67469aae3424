"""PySpark Streaming's API on streamkeep: run DStream programs with exact checkpoints.

Two ways to run an unmodified program::

    streamkeep run --pyspark job.py              # or, first line of job.py:
    import streamkeep.compat.pyspark.auto        # noqa: F401

Either makes ``import pyspark``, ``pyspark.streaming`` and
``pyspark.streaming.kafka`` resolve to this facade. Every PySpark method maps
onto a core call through one alias table (`streamkeep.compat.pyspark._aliases`);
what PySpark has and the facade does not raises `UnsupportedFeatureError`
(a NotImplementedError) naming the feature. docs/migration-from-pyspark.md
lists what changes and why.

Example:
    >>> from streamkeep.compat.pyspark import SparkContext, StreamingContext
    >>> sc = SparkContext("local[1]", "wordcount")
    >>> ssc = StreamingContext(sc, 1)
    >>> words = ssc.queueStream([["to be or", "not to be"]]).flatMap(str.split)
    >>> words.map(lambda w: (w, 1)).reduceByKey(lambda a, b: a + b).foreachRDD(lambda rdd: print(sorted(rdd.collect())))
    >>> ssc._ssc.run()
    [('be', 2), ('not', 1), ('or', 1), ('to', 2)]
    1
    >>> ssc.stop()
"""

from __future__ import annotations

import importlib
import importlib.util
from typing import Any

from streamkeep.compat.pyspark._aliases import UNSUPPORTED
from streamkeep.compat.pyspark._conf import SparkConf, StorageLevel
from streamkeep.compat.pyspark._context import Accumulator, AccumulatorParam, Broadcast, SparkContext
from streamkeep.compat.pyspark._dstream import DStream
from streamkeep.compat.pyspark._errors import UnsupportedFeatureError, UnsupportedModuleError, missing_attribute
from streamkeep.compat.pyspark._install import install, uninstall
from streamkeep.compat.pyspark._kafka import Broker, KafkaMessageAndMetadata, KafkaUtils, OffsetRange, TopicAndPartition, utf8_decoder
from streamkeep.compat.pyspark._listener import StreamingListener
from streamkeep.compat.pyspark._rdd import RDD, portable_hash
from streamkeep.compat.pyspark._streaming import StreamingContext

__all__ = [
    "RDD",
    "Accumulator",
    "AccumulatorParam",
    "Broadcast",
    "Broker",
    "DStream",
    "KafkaMessageAndMetadata",
    "KafkaUtils",
    "OffsetRange",
    "SparkConf",
    "SparkContext",
    "StorageLevel",
    "StreamingContext",
    "StreamingListener",
    "TopicAndPartition",
    "UnsupportedFeatureError",
    "UnsupportedModuleError",
    "install",
    "portable_hash",
    "to_core",
    "uninstall",
    "utf8_decoder",
]

for _public in (
    RDD,
    Accumulator,
    AccumulatorParam,
    Broadcast,
    Broker,
    DStream,
    KafkaMessageAndMetadata,
    KafkaUtils,
    OffsetRange,
    SparkConf,
    SparkContext,
    StorageLevel,
    StreamingContext,
    StreamingListener,
    TopicAndPartition,
    UnsupportedFeatureError,
    UnsupportedModuleError,
):
    _public.__module__ = __name__
del _public


def to_core(obj: Any) -> Any:
    """The streamkeep object behind a facade object, for mixing in core features.

    A `DStream` gives its `streamkeep.DStream` (e.g. to ``write_to(RedisSink(...))``
    or ``map_with_state``), a `StreamingContext` its `streamkeep.StreamingContext`,
    an `RDD` its `streamkeep.Batch`. Results of core calls on a stream can be wrapped
    back with ``DStream(core_stream, ssc)``.

    Example:
        >>> sc = SparkContext("local[1]", "to_core")
        >>> type(to_core(sc.parallelize([1]))).__name__
        'Batch'
        >>> sc.stop()
    """
    if isinstance(obj, (DStream, RDD, StreamingContext)):
        return obj._core
    msg = f"to_core: expected a facade DStream, StreamingContext or RDD, got {type(obj).__name__}"
    raise TypeError(msg)


def __getattr__(name: str) -> Any:
    if not name.startswith("_") and importlib.util.find_spec(f"{__name__}.{name}") is not None:
        return importlib.import_module(f"{__name__}.{name}")  # a submodule (``from ... import auto``)
    return missing_attribute(f"module {__name__}", name, UNSUPPORTED["pyspark"])
