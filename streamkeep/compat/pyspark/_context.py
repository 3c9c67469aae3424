"""`SparkContext`, `Broadcast`, `Accumulator`: PySpark's driver-side entry points.

There is no cluster: a SparkContext is a handle holding the configuration
and creating RDDs (facades over `streamkeep.Batch`) in this process. As in
PySpark, one SparkContext may be active at a time (``getOrCreate`` returns it).
"""

from __future__ import annotations

import getpass
import logging
import os
import sys
import threading
import time
from collections.abc import Iterable
from typing import Any, ClassVar

from streamkeep import Batch, __version__
from streamkeep.compat.pyspark._aliases import UNSUPPORTED
from streamkeep.compat.pyspark._conf import SparkConf
from streamkeep.compat.pyspark._errors import missing_attribute, unsupported
from streamkeep.compat.pyspark._rdd import RDD

_LEVELS = {
    "ALL": logging.NOTSET,
    "TRACE": logging.DEBUG,
    "DEBUG": logging.DEBUG,
    "INFO": logging.INFO,
    "WARN": logging.WARNING,
    "ERROR": logging.ERROR,
    "FATAL": logging.CRITICAL,
    "OFF": logging.CRITICAL + 10,
}


class Broadcast:
    """A read-only value shared with functions (here simply held: there are no executors)."""

    def __init__(self, value: Any) -> None:
        self._value = value

    @property
    def value(self) -> Any:
        """The broadcast value."""
        return self._value

    def unpersist(self, blocking: bool = False) -> None:
        """No effect."""

    def destroy(self, blocking: bool = False) -> None:
        """No effect."""


class AccumulatorParam:
    """How an `Accumulator` adds values: ``zero(value)`` and ``addInPlace(a, b)``."""

    def zero(self, value: Any) -> Any:
        """The neutral element for values like `value`."""
        return type(value)()

    def addInPlace(self, value1: Any, value2: Any) -> Any:
        """Add `value2` to `value1`, returning the sum."""
        value1 += value2
        return value1


class Accumulator:
    """A value functions add to (``acc.add(x)`` or ``acc += x``) and the driver reads.

    Like Spark's, an accumulator updated in a transformation may count a record
    again when a batch is replayed after a crash; use state for exact counts.
    """

    def __init__(self, value: Any, accum_param: AccumulatorParam | None = None) -> None:
        self._param = accum_param or AccumulatorParam()
        self._value = value
        self._lock = threading.Lock()

    @property
    def value(self) -> Any:
        """The accumulated value."""
        return self._value

    @value.setter
    def value(self, v: Any) -> None:
        self._value = v

    def add(self, term: Any) -> None:
        """Add `term`."""
        with self._lock:
            self._value = self._param.addInPlace(self._value, term)

    def __iadd__(self, term: Any) -> Accumulator:
        self.add(term)
        return self

    def __repr__(self) -> str:
        return f"Accumulator<value={self._value!r}>"


class SparkContext:
    """PySpark's SparkContext: configuration, and RDDs made of local data.

    Args:
        master: e.g. ``"local[4]"``; only its parallelism (default partition
            count) has an effect. Default ``local[*]``.
        appName: the application name (default: the script's file name).
        conf: a `SparkConf`.

    The other PySpark arguments are accepted and ignored, except ``gateway``
    and ``jsc`` (there is no JVM).

    Example:
        >>> sc = SparkContext("local[2]", "doc")
        >>> sc.parallelize(range(5), 2).glom().collect()
        [[0, 1], [2, 3, 4]]
        >>> sc.stop()
    """

    _active_spark_context: ClassVar[SparkContext | None] = None
    _lock: ClassVar[threading.RLock] = threading.RLock()

    def __init__(
        self,
        master: str | None = None,
        appName: str | None = None,
        sparkHome: str | None = None,
        pyFiles: list[str] | None = None,
        environment: dict[str, Any] | None = None,
        batchSize: int = 0,
        serializer: Any = None,
        conf: SparkConf | None = None,
        gateway: Any = None,
        jsc: Any = None,
        profiler_cls: Any = None,
        udf_profiler_cls: Any = None,
        memory_profiler_cls: Any = None,
    ) -> None:
        if gateway is not None or jsc is not None:
            unsupported("SparkContext(gateway=..., jsc=...)", "there is no JVM")
        c = conf._copy() if conf is not None else SparkConf()
        if master:
            c.setMaster(master)
        if appName:
            c.setAppName(appName)
        if sparkHome:
            c.setSparkHome(sparkHome)
        c.setIfMissing("spark.master", "local[*]")
        c.setIfMissing("spark.app.name", os.path.basename(sys.argv[0]) if sys.argv and sys.argv[0] else "pyspark-shell")
        self._conf = c
        self.environment = dict(environment or {})
        self._checkpoint_dir: str | None = None
        self._local_properties: dict[str, str] = {}
        self._start_ms = int(time.time() * 1000)
        with SparkContext._lock:
            active = SparkContext._active_spark_context
            if active is not None:
                msg = (
                    f"Cannot run multiple SparkContexts at once; existing SparkContext(app={active.appName}, "
                    f"master={active.master}). Call stop() on it first, or use SparkContext.getOrCreate()."
                )
                raise ValueError(msg)
            SparkContext._active_spark_context = self

    @classmethod
    def getOrCreate(cls, conf: SparkConf | None = None) -> SparkContext:
        """The active SparkContext, or a new one from `conf`."""
        with cls._lock:
            return cls._active_spark_context or cls(conf=conf)

    # -- configuration -----------------------------------------------------------------

    @property
    def appName(self) -> str:
        """The application name."""
        return str(self._conf.get("spark.app.name"))

    @property
    def master(self) -> str:
        """The master URL (``local[*]`` unless set)."""
        return str(self._conf.get("spark.master"))

    @property
    def defaultParallelism(self) -> int:
        """Default partition count: ``spark.default.parallelism``, else the N of ``local[N]``."""
        explicit = self._conf.get("spark.default.parallelism")
        if explicit is not None:
            return max(1, int(explicit))
        m = self.master
        if m == "local":
            return 1
        if m.startswith("local[") and m.endswith("]"):
            n = m[6:-1].split(",")[0]
            return (os.cpu_count() or 1) if n == "*" else max(1, int(n))
        return 2

    @property
    def defaultMinPartitions(self) -> int:
        """min(defaultParallelism, 2), as in Spark."""
        return min(self.defaultParallelism, 2)

    @property
    def version(self) -> str:
        """The engine's version (``streamkeep <version>``)."""
        return f"streamkeep {__version__}"

    @property
    def startTime(self) -> int:
        """When this context was created (ms since the epoch)."""
        return self._start_ms

    @property
    def applicationId(self) -> str:
        """A local application id."""
        return f"local-{self._start_ms}"

    @property
    def uiWebUrl(self) -> None:
        """None: there is no Spark UI."""
        return None

    @property
    def resources(self) -> dict[str, Any]:
        """No resources are managed."""
        return {}

    def sparkUser(self) -> str:
        """The user running the job."""
        try:
            return getpass.getuser()
        except Exception:  # no user name in this environment
            return "unknown"

    def getConf(self) -> SparkConf:
        """A copy of the configuration."""
        return self._conf._copy()

    def setLogLevel(self, logLevel: str) -> None:
        """Set the level of streamkeep's loggers (ALL, DEBUG, ERROR, FATAL, INFO, OFF, TRACE, WARN).

        Only the level changes; where log records go is up to Python's logging configuration.
        """
        level = _LEVELS.get(str(logLevel).upper())
        if level is None:
            msg = f"Supplied level {logLevel} did not match one of: {','.join(sorted(_LEVELS))}"
            raise ValueError(msg)
        logging.getLogger("streamkeep").setLevel(level)

    def setCheckpointDir(self, dirName: str) -> None:
        """Record the RDD checkpoint directory (RDD checkpoints have no effect; streaming
        checkpoints are set with ``StreamingContext.checkpoint`` or ``getOrCreate``)."""
        self._checkpoint_dir = dirName

    def getCheckpointDir(self) -> str | None:
        """The directory given to `setCheckpointDir`, if any."""
        return self._checkpoint_dir

    def setJobGroup(self, groupId: str, description: str, interruptOnCancel: bool = False) -> None:
        """Record a job group (no effect)."""
        self._local_properties["spark.jobGroup.id"] = groupId
        self._local_properties["spark.job.description"] = description

    def setJobDescription(self, value: str) -> None:
        """Record a job description (no effect)."""
        self._local_properties["spark.job.description"] = value

    def setLocalProperty(self, key: str, value: str) -> None:
        """Set a local property (no effect)."""
        self._local_properties[key] = value

    def getLocalProperty(self, key: str) -> str | None:
        """A local property set by `setLocalProperty`."""
        return self._local_properties.get(key)

    # -- RDDs --------------------------------------------------------------------------

    def parallelize(self, c: Iterable[Any], numSlices: int | None = None) -> RDD:
        """An RDD of `c`'s elements in `numSlices` contiguous partitions (default: defaultParallelism)."""
        data = list(c)
        n = self.defaultParallelism if numSlices is None else int(numSlices)
        if n < 1:
            msg = f"parallelize: numSlices must be positive, got {numSlices!r}"
            raise ValueError(msg)
        size = len(data)
        parts = [data[i * size // n : (i + 1) * size // n] for i in range(n)]
        return RDD(Batch(parts), self)

    def range(self, start: int, end: int | None = None, step: int = 1, numSlices: int | None = None) -> RDD:
        """parallelize(range(start, end, step)); ``range(n)`` counts from 0."""
        if end is None:
            start, end = 0, start
        return self.parallelize(range(start, end, step), numSlices)

    def emptyRDD(self) -> RDD:
        """An RDD without records."""
        return RDD(Batch.empty(), self)

    def textFile(self, name: str, minPartitions: int | None = None, use_unicode: bool = True) -> RDD:
        """The lines of a file, a directory's files, a glob, or a comma-separated list of them.

        Read with fsspec (local paths or URLs); one partition per file.
        """
        import fsspec

        paths: list[tuple[Any, str]] = []
        for part in name.split(","):
            fs, path = fsspec.core.url_to_fs(part)
            if fs.isdir(path):
                found = sorted(p for p in fs.find(path) if not os.path.basename(p).startswith((".", "_")))
            elif any(ch in path for ch in "*?["):
                found = sorted(fs.glob(path))
            else:
                found = [path]
            paths.extend((fs, p) for p in found)
        parts = []
        for fs, p in paths:
            with fs.open(p, "rb") as f:
                data = f.read()
            parts.append(data.decode("utf-8").splitlines() if use_unicode else data.splitlines())
        return RDD(Batch(parts or [[]]), self)

    def union(self, rdds: list[RDD]) -> RDD:
        """The records of all `rdds`."""
        if not rdds:
            return self.emptyRDD()
        first, *rest = rdds
        return RDD(first._core.union(*(r._core for r in rest)), self)

    def broadcast(self, value: Any) -> Broadcast:
        """Share `value` with functions."""
        return Broadcast(value)

    def accumulator(self, value: Any, accum_param: AccumulatorParam | None = None) -> Accumulator:
        """An accumulator starting at `value`."""
        return Accumulator(value, accum_param)

    # -- lifecycle ---------------------------------------------------------------------

    def stop(self) -> None:
        """Release this context so another SparkContext can be created."""
        with SparkContext._lock:
            if SparkContext._active_spark_context is self:
                SparkContext._active_spark_context = None

    def __enter__(self) -> SparkContext:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.stop()

    def __repr__(self) -> str:
        return f"<SparkContext master={self.master} appName={self.appName}>"

    def __getattr__(self, name: str) -> Any:
        return missing_attribute("SparkContext", name, UNSUPPORTED["SparkContext"])


__all__ = ["Accumulator", "AccumulatorParam", "Broadcast", "SparkContext"]
