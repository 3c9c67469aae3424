"""`SparkConf` and `StorageLevel`: configuration objects PySpark programs build.

`SparkConf` keeps its key/value pairs; the facade reads the few that have a
streamkeep meaning (``spark.master``, ``spark.app.name``,
``spark.default.parallelism``, ``spark.streaming.kafka.maxRatePerPartition``,
``spark.streaming.backpressure.enabled``) and ignores the others. Storage
levels are accepted everywhere and have no effect.
"""

from __future__ import annotations

from typing import Any

from streamkeep.compat.pyspark._errors import missing_attribute

#: Settings from the command line (``streamkeep run --pyspark --master M --conf K=V``), as spark-submit's:
#: every SparkConf(loadDefaults=True) starts with them, and what the program sets overrides them.
_SUBMIT_DEFAULTS: dict[str, str] = {}


def set_submit_defaults(pairs: dict[str, str]) -> None:
    """Make `pairs` the defaults of SparkConfs created from now on (spark-submit's --master/--conf)."""
    _SUBMIT_DEFAULTS.clear()
    _SUBMIT_DEFAULTS.update(pairs)


class SparkConf:
    """Spark's key/value configuration, with PySpark's chained setters.

    Example:
        >>> conf = SparkConf().setAppName("clicks").setMaster("local[2]").set("spark.default.parallelism", "2")
        >>> conf.get("spark.app.name")
        'clicks'
    """

    def __init__(self, loadDefaults: bool = True, _jvm: Any = None, _jconf: Any = None) -> None:
        self._conf: dict[str, str] = dict(_SUBMIT_DEFAULTS) if loadDefaults else {}

    def set(self, key: str, value: Any) -> SparkConf:
        """Set `key` to ``str(value)``."""
        self._conf[key] = str(value)
        return self

    def setIfMissing(self, key: str, value: Any) -> SparkConf:
        """Set `key` unless it is set."""
        self._conf.setdefault(key, str(value))
        return self

    def setMaster(self, value: str) -> SparkConf:
        """Set ``spark.master`` (only its parallelism, e.g. ``local[4]``, has an effect)."""
        return self.set("spark.master", value)

    def setAppName(self, value: str) -> SparkConf:
        """Set ``spark.app.name``."""
        return self.set("spark.app.name", value)

    def setSparkHome(self, value: str) -> SparkConf:
        """Set ``spark.home`` (no effect)."""
        return self.set("spark.home", value)

    def setExecutorEnv(self, key: str | None = None, value: str | None = None, pairs: list[tuple[str, str]] | None = None) -> SparkConf:
        """Set executor environment variables (no effect: functions run in this process)."""
        for k, v in ([(key, value)] if key is not None else []) + list(pairs or []):
            self.set(f"spark.executorEnv.{k}", v)
        return self

    def setAll(self, pairs: list[tuple[str, Any]]) -> SparkConf:
        """Set several (key, value) pairs."""
        for k, v in pairs:
            self.set(k, v)
        return self

    def get(self, key: str, defaultValue: str | None = None) -> str | None:
        """The value of `key`, or `defaultValue`."""
        return self._conf.get(key, defaultValue)

    def getAll(self) -> list[tuple[str, str]]:
        """All (key, value) pairs."""
        return list(self._conf.items())

    def contains(self, key: str) -> bool:
        """True when `key` is set."""
        return key in self._conf

    def toDebugString(self) -> str:
        """``key=value`` lines."""
        return "\n".join(f"{k}={v}" for k, v in self._conf.items())

    def _copy(self) -> SparkConf:
        c = SparkConf()
        c._conf = dict(self._conf)
        return c

    def __getattr__(self, name: str) -> Any:
        return missing_attribute("SparkConf", name, {})


class StorageLevel:
    """Spark's storage levels: accepted by persist() and sources, with no effect."""

    DISK_ONLY: StorageLevel
    DISK_ONLY_2: StorageLevel
    DISK_ONLY_3: StorageLevel
    MEMORY_ONLY: StorageLevel
    MEMORY_ONLY_2: StorageLevel
    MEMORY_AND_DISK: StorageLevel
    MEMORY_AND_DISK_2: StorageLevel
    MEMORY_AND_DISK_DESER: StorageLevel
    OFF_HEAP: StorageLevel

    def __init__(self, useDisk: bool, useMemory: bool, useOffHeap: bool, deserialized: bool, replication: int = 1) -> None:
        self.useDisk = useDisk
        self.useMemory = useMemory
        self.useOffHeap = useOffHeap
        self.deserialized = deserialized
        self.replication = replication

    def __repr__(self) -> str:
        return f"StorageLevel({self.useDisk}, {self.useMemory}, {self.useOffHeap}, {self.deserialized}, {self.replication})"


StorageLevel.DISK_ONLY = StorageLevel(True, False, False, False)
StorageLevel.DISK_ONLY_2 = StorageLevel(True, False, False, False, 2)
StorageLevel.DISK_ONLY_3 = StorageLevel(True, False, False, False, 3)
StorageLevel.MEMORY_ONLY = StorageLevel(False, True, False, False)
StorageLevel.MEMORY_ONLY_2 = StorageLevel(False, True, False, False, 2)
StorageLevel.MEMORY_AND_DISK = StorageLevel(True, True, False, False)
StorageLevel.MEMORY_AND_DISK_2 = StorageLevel(True, True, False, False, 2)
StorageLevel.MEMORY_AND_DISK_DESER = StorageLevel(True, True, False, True)
StorageLevel.OFF_HEAP = StorageLevel(True, True, True, False, 1)

__all__ = ["SparkConf", "StorageLevel"]
