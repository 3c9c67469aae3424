"""`LocalExecutor`: computes a batch of the whole graph in-process (the default).

The executor holds the stateful operators' runtimes (their keyed state lives
with whoever runs them), computes every needed node for a batch time in
topological order, and runs the outputs in registration order. It implements
`streamkeep.executors.base.Executor`, the only interface the scheduler uses;
another executor implements the same protocol.
"""

from __future__ import annotations

import sys
import time
from typing import TYPE_CHECKING, Any, cast

from streamkeep import _faults
from streamkeep._util import short_repr, user_function_error
from streamkeep.batch import Batch, RecordShapeError
from streamkeep.dstream._graph import (
    DeadLetterNode,
    Graph,
    NarrowNode,
    Node,
    OutputNode,
    SnapshotsNode,
    SourceNode,
    StatefulNode,
    TransformNode,
)
from streamkeep.errors import ConfigError, SinkError, StreamkeepError, UserFunctionError
from streamkeep.executors._runtime import MapWithStateRuntime, StatefulRuntime
from streamkeep.executors.kinds import make_runtime
from streamkeep.sinks.base import BatchSink, sink_records

if TYPE_CHECKING:  # imported when used: concurrent.futures.process and multiprocessing cost ~30 ms at start-up
    from streamkeep.executors._pool import ProcessPool


class LocalExecutor:
    """Runs the graph in the driver process.

    Args:
        processes: 0 (default) runs every partition in the calling thread. N > 0 runs
            chains of per-record operators in N worker processes (functions travel with
            cloudpickle); it pays off only for CPU-heavy functions (a few microseconds
            per record or more, bench/process_pool.py). Keyed state always stays here.
        table_threads: the most threads one hash probe of `aggregate_state` is split over
            (big batches only: docs/tables.md). None (default) or 1: one thread (the split
            was measured slower on a 2-core machine); N > 1 splits big probes over N threads.
    """

    name = "local"

    def __init__(self, processes: int = 0, *, table_threads: int | None = None) -> None:
        if not isinstance(processes, int) or isinstance(processes, bool) or processes < 0:
            msg = f"LocalExecutor: processes must be an int >= 0, got {processes!r}"
            raise ConfigError(msg)
        if table_threads is not None and (not isinstance(table_threads, int) or isinstance(table_threads, bool) or table_threads < 1):
            msg = f"LocalExecutor: table_threads must be None (one thread, the default) or an int >= 1, got {table_threads!r}"
            raise ConfigError(msg)
        self.table_threads = table_threads
        self.pool: ProcessPool | None = None
        if processes:
            from streamkeep.executors._pool import ProcessPool

            self.pool = ProcessPool(processes)
        self.graph: Graph | None = None
        self.nodes: list[Node] = []
        self.runtimes: dict[str, StatefulRuntime] = {}
        self._by_id: dict[int, StatefulRuntime] = {}
        self._shared: set[int] = set()
        self._chain_ends: set[int] = set()
        self.zero_ms = 0
        # when a dict (listeners want it), ms per stateful operator and per output of the last batch
        self._timings: dict[str, float] | None = None

    def open(self, graph: Graph, zero_ms: int) -> None:
        """Prepare runtimes (empty state) for the graph's needed nodes; again from scratch when called again."""
        for old in self.runtimes.values():
            old.close()
        self.graph = graph
        self.runtimes = {}
        self._by_id = {}
        self.zero_ms = zero_ms
        self.nodes = graph.needed()
        consumers: dict[int, int] = {}
        for n in self.nodes:
            for p in n.parents:
                consumers[p.id] = consumers.get(p.id, 0) + 1
        self._shared = {i for i, c in consumers.items() if c > 1}
        narrow_fed = {p.id for n in self.nodes if isinstance(n, NarrowNode) for p in n.parents}
        self._chain_ends = {n.id for n in self.nodes if isinstance(n, NarrowNode) and (n.id not in narrow_fed or n.id in self._shared)}
        for n in self.nodes:
            if isinstance(n, StatefulNode):
                rt = make_runtime(n, zero_ms)
                if self.table_threads is not None:
                    rt.set_threads(self.table_threads)
                self.runtimes[n.name] = rt
                self._by_id[n.id] = rt

    def close(self) -> None:
        """Stop worker processes and the operators' threads, if any."""
        for rt in self.runtimes.values():
            rt.close()
        if self.pool is not None:
            self.pool.close()

    # -- state, for the scheduler (the `Executor` protocol) ---------------------------------

    def operators(self) -> list[str]:
        """Names of the stateful operators, in graph order."""
        return list(self.runtimes)

    def seed(self, name: str) -> None:
        """Give operator `name` its initial state."""
        self.runtimes[name].seed()

    def restore(self, name: str, snapshot: dict[str, Any] | None, deltas: list[dict[str, Any]]) -> None:
        """Replace operator `name`'s state with `snapshot` plus `deltas`."""
        self.runtimes[name].load(snapshot, deltas)

    def delta(self, name: str) -> dict[str, Any] | None:
        """What changed in operator `name` since the last call; None when nothing did."""
        return self.runtimes[name].delta()

    def snapshot(self, name: str) -> dict[str, Any]:
        """The whole state of operator `name` (a copy)."""
        return self.runtimes[name].snapshot()

    def forget_changes(self) -> None:
        """Drop every operator's change tracking."""
        for rt in self.runtimes.values():
            rt.forget_changes()

    def key_count(self, name: str) -> int:
        """Keys (or records) operator `name` holds."""
        return self.runtimes[name].key_count()

    def measure_timings(self) -> None:
        """Measure ms per stateful operator and per output during the next batch."""
        self._timings = {}

    def timings(self) -> dict[str, float]:
        """What `measure_timings` measured during the last batch."""
        return dict(self._timings or {})

    def drained(self, last_t: int) -> bool:
        """True when no window still holds input for a batch after `last_t`."""
        return all(rt.drained(last_t) for rt in self.runtimes.values())

    def event_time(self) -> dict[str, dict[str, Any]]:
        """Watermark and late records of each event-time window operator after the last batch (`EventTimeReporting`)."""
        return event_time_status(self.runtimes)


    def compute(self, t: int, inputs: dict[str, Batch[Any]]) -> dict[int, Batch[Any] | None]:
        """Compute every needed node for batch time t from the sources' batches."""
        results: dict[int, Batch[Any] | None] = {}
        shared = self._shared
        for node in self.nodes:
            if isinstance(node, DeadLetterNode):
                node.letters.take()  # nothing left from a batch that failed
        for node in self.nodes:
            out: Batch[Any] | None
            try:
                if isinstance(node, SourceNode):
                    out = inputs.get(node.source.name)
                elif isinstance(node, OutputNode):
                    continue
                else:
                    parents = [results[p.id] for p in node.parents]
                    if isinstance(node, NarrowNode):
                        out = None if parents[0] is None else node.apply(parents[0])
                    elif isinstance(node, StatefulNode):
                        if self._timings is None:
                            out = self._by_id[node.id].step(t, parents[0])
                        else:
                            s0 = time.perf_counter()
                            out = self._by_id[node.id].step(t, parents[0])
                            self._timings[node.name] = (time.perf_counter() - s0) * 1e3
                    elif isinstance(node, SnapshotsNode):
                        rt = self._by_id[node.parents[0].id]
                        assert isinstance(rt, MapWithStateRuntime)
                        out = None if parents[0] is None else Batch([rt.state_items()], t)
                    elif isinstance(node, TransformNode):
                        out = None if any(p is None for p in parents) else _call(node, t, [p for p in parents if p is not None])
                    else:  # pragma: no cover - every node kind is handled above
                        msg = f"unknown node kind {type(node).__name__}"
                        raise StreamkeepError(msg)
            except UserFunctionError as exc:
                named = _name_upstream(exc, node, t)
                if named is None:
                    raise
                raise named from exc.__cause__
            if out is not None and self.pool is not None and node.id in self._chain_ends:
                try:
                    out = self.pool.materialise(out)
                except UserFunctionError:
                    if out._dead is None:
                        raise
                    out.cache()  # a chain with a dead-letter policy failed: re-run it here, record by record
            if out is not None and node.id in shared:
                out.cache()
            results[node.id] = out
        return results

    def run_outputs(self, t: int, results: dict[int, Batch[Any] | None]) -> None:
        """Run the outputs in registration order for batch time t."""
        run_outputs(self.nodes, t, results, self._timings)


def run_outputs(nodes: list[Node], t: int, results: dict[int, Batch[Any] | None], timings: dict[str, float] | None) -> None:
    """Run the outputs among `nodes` in registration order for batch time t (ms per output into `timings`)."""
    for node in nodes:
        if not isinstance(node, OutputNode) or isinstance(node, DeadLetterNode):
            continue
        batch = results[node.parents[0].id]
        if batch is None:
            continue
        s0 = time.perf_counter() if timings is not None else 0.0
        if node.sink is not None:
            _write(node, t, batch)
        else:
            assert node.fn is not None
            _call_output(node, t, batch)
        if timings is not None:
            timings[output_label(node)] = (time.perf_counter() - s0) * 1e3
    # Last: the outputs above may be what ran the lazy per-record operators that dead-letter.
    for node in nodes:
        if isinstance(node, DeadLetterNode):
            letters = node.letters.take()
            if letters:  # a batch without failing records writes nothing
                _write(node, t, letters)


def event_time_status(runtimes: dict[str, StatefulRuntime]) -> dict[str, dict[str, Any]]:
    """Watermark and late records of the event-time window operators among `runtimes` (`EventTimeReporting`)."""
    module = sys.modules.get("streamkeep.executors._event_time")  # not loaded: no job of this process has one
    if module is None:
        return {}
    EventWindowRuntime = module.EventWindowRuntime  # noqa: N806 (a class)
    return {
        name: {"watermark_ms": rt.watermark_ms, "late_records": rt.late_batch, "late_records_total": rt.late_total}
        for name, rt in runtimes.items()
        if isinstance(rt, EventWindowRuntime)
    }


def output_label(node: OutputNode) -> str:
    """How metrics and the dashboard name an output: its sink's name, else the op and node id."""
    if node.sink is not None and node.op.startswith("sink "):  # write_to; pprint and the like keep their op's label
        return f"sink {node.sink.name}"
    return f"{node.op}#{node.id}"


def _write(node: OutputNode, t: int, data: Batch[Any] | list[Any]) -> None:
    """Write batch `t` to the node's sink: a `BatchSink` reads the batch itself, any other gets its records."""
    sink = node.sink
    assert sink is not None
    if not isinstance(data, list) and not isinstance(sink, BatchSink):
        data = data.collect()
    _faults.point("sink.before_write")
    try:
        if isinstance(data, list):
            sink.write(t, sink_records(sink, data))
        else:
            cast(BatchSink, sink).write_batch(t, data)
    except StreamkeepError:
        raise
    except Exception as exc:
        msg = f"sink {sink.name!r} failed to write batch {t} ms: {type(exc).__name__}: {short_repr(str(exc), 200)}"
        raise SinkError(msg) from exc
    _faults.point("sink.after_write")


def _upstream_label(node: Node) -> str:
    if isinstance(node, (SourceNode, StatefulNode)):
        return node.label
    return f"operator {node.op!r}"


def _name_upstream(exc: UserFunctionError, node: Node, t: int) -> UserFunctionError | None:
    """A wrong-shaped record's error naming the operator(s) that produced it, when the batch could not."""
    cause = exc.__cause__
    if not isinstance(cause, RecordShapeError) or cause.upstream is not None or not node.parents:
        return None
    upstream = " or ".join(dict.fromkeys(_upstream_label(p) for p in node.parents))
    return cause.to_user_error(t, None, upstream)


def _call(node: TransformNode, t: int, parents: list[Batch[Any]]) -> Batch[Any]:
    try:
        return node.fn(t, parents)
    except RecordShapeError as exc:
        raise exc.to_user_error(t, None, None) from exc
    except StreamkeepError:
        raise
    except Exception as exc:
        err = user_function_error(f"in operator {node.op!r}", exc, t, node.op)
        raise err from exc


def _call_output(node: OutputNode, t: int, batch: Batch[Any]) -> None:
    assert node.fn is not None
    try:
        node.fn(t, batch)
    except StreamkeepError:
        raise
    except Exception as exc:
        err = user_function_error(f"in output {node.op!r}", exc, t, node.op)
        raise err from exc
