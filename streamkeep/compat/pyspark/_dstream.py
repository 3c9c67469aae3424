"""`DStream`: PySpark's DStream as a facade over one `streamkeep.DStream`.

Every operator comes from the `DSTREAM` section of the alias table
(`_aliases.py`); this module holds the conversions the table refers to:
functions of RDDs (``f(rdd)`` or ``f(time, rdd)``, time a naive local
datetime as in PySpark) become functions of Batches, facade streams become
core streams, and results are wrapped back.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from datetime import datetime
from typing import Any

from streamkeep import Batch
from streamkeep import DStream as CoreDStream
from streamkeep.compat.pyspark._adapters import local_time, pprint_fn, save_fn
from streamkeep.compat.pyspark._aliases import DSTREAM, UNSUPPORTED
from streamkeep.compat.pyspark._errors import missing_attribute
from streamkeep.compat.pyspark._rdd import RDD, portable_hash
from streamkeep.compat.pyspark._table import build_methods


def takes_time(f: Callable[..., Any], nargs: int) -> bool:
    """Whether `f` wants the batch time before its `nargs` RDD arguments.

    Like PySpark, which looks at the number of positional parameters: a function
    needing exactly `nargs` arguments gets the RDDs only; one needing more, or
    taking ``*args``, gets the time first.
    """
    if not callable(f):
        msg = f"expected a function, got {type(f).__name__}"
        raise TypeError(msg)
    try:
        sig = inspect.signature(f)
    except (TypeError, ValueError):
        return False
    positional = [p for p in sig.parameters.values() if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    required = [p for p in positional if p.default is p.empty]
    if len(required) > nargs:
        return True
    if len(required) == nargs:
        return False
    return len(positional) > nargs or any(p.kind is p.VAR_POSITIONAL for p in sig.parameters.values())


def as_batch(value: Any, op: str) -> Batch[Any]:
    """The Batch behind an RDD a user function returned."""
    if isinstance(value, RDD):
        return value._core
    if isinstance(value, Batch):
        return value
    msg = f"{op}: the function must return an RDD, got {type(value).__name__}"
    raise TypeError(msg)


def batch_fn(f: Callable[..., Any], sc: Any, op: str, *, output: bool = False) -> Callable[[datetime, Batch[Any]], Any]:
    """``f(rdd)`` or ``f(time, rdd)`` as the core's ``fn(time, batch)``."""
    with_time = takes_time(f, 1)

    def fn(t: datetime, batch: Batch[Any]) -> Any:
        rdd = RDD(batch, sc)
        out = f(local_time(t), rdd) if with_time else f(rdd)
        return None if output else as_batch(out, op)

    return fn


def batch2_fn(f: Callable[..., Any], sc: Any, op: str) -> Callable[[datetime, Batch[Any], Batch[Any]], Batch[Any]]:
    """``f(rdd_a, rdd_b)`` or ``f(time, rdd_a, rdd_b)`` as the core's ``fn(time, a, b)``."""
    with_time = takes_time(f, 2)

    def fn(t: datetime, a: Batch[Any], b: Batch[Any]) -> Batch[Any]:
        ra, rb = RDD(a, sc), RDD(b, sc)
        return as_batch(f(local_time(t), ra, rb) if with_time else f(ra, rb), op)

    return fn


def records_of(value: Any, op: str) -> list[Any] | None:
    """The records of an RDD or an iterable (None stays None)."""
    if value is None:
        return None
    if isinstance(value, RDD):
        return value._core.collect()
    if isinstance(value, (str, bytes)):
        msg = f"{op}: expected an RDD or a list of records, got {type(value).__name__}"
        raise TypeError(msg)
    return list(value)


def core_stream(value: Any, op: str) -> CoreDStream[Any]:
    """The core stream behind a facade DStream."""
    if isinstance(value, DStream):
        return value._core
    msg = f"{op}: expected a DStream, got {type(value).__name__}"
    raise TypeError(msg)


class DStream:
    """A stream of RDDs with PySpark's operators, built on a `streamkeep.DStream`.

    Stateful operators (windows, ``updateStateByKey``) take an extra keyword-only
    ``name=`` that pins their state in the checkpoint; without it a stable name
    is derived from the operator's place in the program.

    Example:
        >>> from streamkeep.compat.pyspark import SparkContext, StreamingContext
        >>> sc = SparkContext("local[1]", "doc")
        >>> ssc = StreamingContext(sc, 1)
        >>> ssc.queueStream([["a b", "b"]]).flatMap(str.split).countByValue().foreachRDD(lambda rdd: print(sorted(rdd.collect())))
        >>> ssc._ssc.run()
        [('a', 1), ('b', 2)]
        1
        >>> ssc.stop()
    """

    __slots__ = ("_core", "_ssc")

    def __init__(self, core: CoreDStream[Any], ssc: Any) -> None:
        self._core = core
        self._ssc = ssc

    def context(self) -> Any:
        """The StreamingContext this stream belongs to."""
        return self._ssc

    # -- output operations: the context runs them, to tell its listeners ----------------

    def foreachRDD(self, func: Callable[..., Any]) -> None:
        """Call ``func(rdd)`` or ``func(time, rdd)`` for every batch (time: a naive local datetime).

        After a crash between a batch's outputs and its commit, the batch is re-run
        with the same input: make ``func``'s external effects idempotent per batch time.
        """
        op = "DStream.foreachRDD"
        self._ssc._add_output("foreachRDD", self._core, batch_fn(func, self._ssc.sparkContext, op, output=True))

    def pprint(self, num: int = 10) -> None:
        """Print the first `num` records of every batch, as PySpark does."""
        self._ssc._add_output("pprint", self._core, pprint_fn(num))

    def saveAsTextFiles(self, prefix: str, suffix: str | None = None) -> None:
        """Write each batch with ``saveAsTextFile`` to ``prefix-<time ms>[.suffix]`` (a replay rewrites the same files)."""
        self._ssc._add_output("saveAsTextFiles", self._core, save_fn(prefix, suffix))

    def _convert(self, kind: str, value: Any, op: str) -> Any:
        sc = self._ssc.sparkContext
        if kind == "stream":
            return core_stream(value, op)
        if kind == "rdd_fn":
            return batch_fn(value, sc, op)
        if kind == "rdd2_fn":
            return batch2_fn(value, sc, op)
        if kind == "initial":
            return value._core if isinstance(value, RDD) else records_of(value, op)
        if kind == "partitioner":
            return None if value is None or value is portable_hash else value
        msg = f"{op}: unknown conversion {kind!r}"  # pragma: no cover - a table bug
        raise AssertionError(msg)

    def _wrap(self, kind: str, value: Any, op: str) -> Any:
        if kind == "stream":
            return DStream(value, self._ssc)
        if kind == "self":
            return self
        return None

    def __repr__(self) -> str:
        return f"<pyspark facade {self._core!r}>"

    def __getattr__(self, name: str) -> Any:
        return missing_attribute("DStream", name, UNSUPPORTED["DStream"])


build_methods(DStream, DSTREAM)

__all__ = ["DStream", "as_batch", "batch2_fn", "batch_fn", "core_stream", "records_of", "takes_time"]
