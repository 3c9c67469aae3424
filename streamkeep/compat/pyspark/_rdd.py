"""`RDD`: PySpark's RDD as a facade over one `streamkeep.Batch`.

Every method comes from the `RDD` section of the alias table (`_aliases.py`);
this module adds only what is not a core call: identity, names, truthiness
and the "not supported" answer for the rest of PySpark's RDD API.
"""

from __future__ import annotations

from typing import Any

from streamkeep import Batch
from streamkeep.compat.pyspark._aliases import RDD as _RDD_TABLE
from streamkeep.compat.pyspark._aliases import UNSUPPORTED
from streamkeep.compat.pyspark._conf import StorageLevel
from streamkeep.compat.pyspark._errors import missing_attribute
from streamkeep.compat.pyspark._table import build_methods


def portable_hash(x: Any) -> int:
    """PySpark's default partitioner, accepted wherever ``partitionFunc`` is.

    Passing it (or nothing) places records by streamkeep's stable key hash;
    any other partition function raises NotImplementedError.
    """
    return hash(x)


class RDD:
    """The records of one batch, with PySpark's RDD methods (see the alias table).

    An RDD is always truthy, as in PySpark: test ``rdd.isEmpty()``, not ``if rdd:``.

    Example:
        >>> from streamkeep.compat.pyspark import SparkContext
        >>> sc = SparkContext("local[2]", "doc")
        >>> sc.parallelize(["a b", "b"]).flatMap(str.split).map(lambda w: (w, 1)).reduceByKey(lambda a, b: a + b).sortByKey().collect()
        [('a', 1), ('b', 2)]
        >>> sc.stop()
    """

    __slots__ = ("_core", "_name", "_sc")

    def __init__(self, batch: Batch[Any], ctx: Any) -> None:
        self._core = batch
        self._sc = ctx
        self._name: str | None = None

    # -- facade protocol (see _table.py) ---------------------------------------------

    def _convert(self, kind: str, value: Any, op: str) -> Any:
        if kind == "rdd":
            if isinstance(value, RDD):
                return value._core
            msg = f"{op}: expected an RDD, got {type(value).__name__}"
            raise TypeError(msg)
        if kind == "partitioner":
            return None if value is None or value is portable_hash else value
        msg = f"{op}: unknown conversion {kind!r}"  # pragma: no cover - a table bug
        raise AssertionError(msg)

    def _wrap(self, kind: str, value: Any, op: str) -> Any:
        if kind == "rdd":
            return RDD(value, self._sc)
        if kind == "self":
            return self
        if kind == "none":
            return None
        return value

    # -- explicit members ------------------------------------------------------------

    @property
    def context(self) -> Any:
        """The SparkContext this RDD was created on."""
        return self._sc

    @property
    def ctx(self) -> Any:
        """Same as `context`."""
        return self._sc

    def id(self) -> int:
        """A unique id of this RDD object."""
        return id(self)

    def name(self) -> str | None:
        """The name given by `setName`, if any."""
        return self._name

    def setName(self, name: str) -> RDD:
        """Name this RDD (shown by repr)."""
        self._name = name
        return self

    def toDebugString(self) -> bytes:
        """A description of the underlying batch."""
        return repr(self._core).encode()

    def getStorageLevel(self) -> StorageLevel:
        """Always MEMORY_ONLY: a batch lives in memory for the duration of its batch."""
        return StorageLevel.MEMORY_ONLY

    def __bool__(self) -> bool:
        return True

    def __add__(self, other: RDD) -> RDD:
        return RDD(self._core.union(self._convert("rdd", other, "RDD.__add__")), self._sc)

    def __repr__(self) -> str:
        label = f"{self._name} " if self._name else ""
        return f"{label}RDD[{self._core.num_partitions} partitions, batch time {self._core.batch_time_ms} ms]"

    def __getattr__(self, name: str) -> Any:
        return missing_attribute("RDD", name, UNSUPPORTED["RDD"])


build_methods(RDD, _RDD_TABLE)

__all__ = ["RDD", "portable_hash"]
