"""Key partitions of keyed state: the stable key hash, splitting and merging state data, the partition host.

Everything here is plain Python (no Ray): `RayExecutor` (``executors/ray.py``) wraps
`PartitionHost` in a Ray actor and runs `bucket` in Ray tasks, and the tests use
the functions directly.

A key belongs to partition ``key_hash(key) % count``. `key_hash` is the same in
every process and every run (never Python's salted ``hash`` of a string), and
equal keys hash equally (``1``, ``1.0`` and ``True`` are one dict key, and one
partition). The state data of a partitioned operator is the same data the local
executor hands the scheduler: `merge_state` joins the partitions' deltas or
snapshots into one, `split_state` cuts one (read from any checkpoint, written by
any number of partitions) into ``count`` slices, so rescaling is a restore.

With a checkpoint, each `PartitionHost` writes its own partition's state files
(`write_deltas`, `write_snapshots`; snapshots are compacted per partition by
`compact_task`) and acknowledges their paths: see `streamkeep.executors._state_files`.
"""

from __future__ import annotations

import os
import pickle
import time
import zlib
from typing import Any

from streamkeep._arrow import records_in
from streamkeep._util import gc_paused, short_repr, stable_hash
from streamkeep.batch import Batch
from streamkeep.checkpoint import Checkpoint
from streamkeep.checkpoint._compact import Job, join_parts
from streamkeep.checkpoint._format import MOVED
from streamkeep.dstream._graph import MapWithStateNode, StatefulNode
from streamkeep.errors import SinkError, SourceError, StreamkeepError
from streamkeep.executors._runtime import MapWithStateRuntime, StatefulRuntime
from streamkeep.executors._state_files import Ack, PartWriter, compact_part, read_probe, slice_entry, write_probe
from streamkeep.executors.kinds import kind_of, make_runtime
from streamkeep.sinks.base import sink_records

#: The hash `key_hash` implements, as recorded in commit records (``partitioning``).
HASH_NAME = "streamkeep-stable-hash-v1"


def partitioned(node: StatefulNode) -> bool:
    """True when `node`'s kind is registered as `keyed` (its state can be split into key partitions)."""
    return kind_of(node).keyed


def key_hash(key: Any) -> int:
    """A 32-bit hash of `key`, the same in every process and run; equal keys hash equally (`stable_hash`)."""
    return stable_hash(key)


def partition_of(key: Any, count: int) -> int:
    """The partition (0 .. count-1) that owns `key`."""
    return key_hash(key) % count


class Records(list):  # type: ignore[type-arg]  # records of any type
    """A list of records (or of partitions) that Ray serialises in one go.

    Ray encodes a plain list with msgpack element by element, and every element msgpack
    cannot encode itself (a tuple: every (key, value) record) goes through a Python
    callback and is pickled on its own: about 5 us a record each way, more than most
    per-record functions cost. This subclass is opaque to msgpack, so Ray pickles the
    whole list at once (C speed). Everything that crosses between Ray processes as a
    list of records is wrapped in it; `plain` turns it back into a list where the records
    become a `Batch`'s partition.
    """

    __slots__ = ()


def plain(records: list[Any]) -> list[Any]:
    """`records` as a plain list (a `Records` unwrapped)."""
    return list(records) if records.__class__ is Records else records


def _key_of(record: Any) -> Any:
    """The key of a (key, value) record; None for anything else (the owning runtime reports the bad record)."""
    cls = record.__class__
    if (cls is tuple or cls is list) and len(record) == 2:
        return record[0]
    return None


def bucket(batch: Batch[Any], count: int) -> list[list[Any]]:
    """The records of `batch` (its pending per-record operators applied) split by owning partition, in order."""
    out: list[list[Any]] = [[] for _ in range(count)]
    adds = [o.append for o in out]
    crc32 = zlib.crc32

    def place(rec: Any) -> None:  # what the loop does not inline: other key types, bad records
        k = _key_of(rec)
        try:
            i = partition_of(k, count)
        except TypeError:  # an unhashable key: partition 0's runtime reports the record
            i = 0
        adds[i](rec)

    def consume(it: Any, f: Any) -> None:
        # The shuffle's hot loop (the map side of every Ray step): str and int keys inline what
        # key_hash does for them; the batch's trailing map is called here (`Batch._consume_mapped`).
        # ``encode()`` equals key_hash's ``encode("utf-8", "surrogatepass")`` for every str but one
        # with a lone surrogate (which raises here, and takes key_hash's path), at half the cost.
        if f is not None:
            it = map(f, it)
        for rec in it:
            if rec.__class__ is tuple and len(rec) == 2:
                k = rec[0]
                cls = k.__class__
                if cls is str:
                    try:
                        adds[crc32(k.encode()) % count](rec)
                    except UnicodeEncodeError:
                        place(rec)
                    continue
                if cls is int:
                    adds[(hash(k) & 0xFFFFFFFF) % count](rec)
                    continue
            place(rec)

    for i in range(batch.num_partitions):
        batch._consume_mapped(i, consume)
    return out


def split_state(data: dict[str, Any] | None, count: int) -> list[dict[str, Any] | None]:
    """Cut a delta or snapshot of a keyed operator into `count` partition slices (None stays None)."""
    if data is None:
        return [None] * count
    slices: list[dict[str, Any]] = [{} for _ in range(count)]
    for field, value in data.items():
        if field == "set":
            parts: list[list[Any]] = [[] for _ in range(count)]
            # a columnar snapshot's ``set`` is restored as a dict (key -> value) or `Columns` (pairs), a delta's as pairs
            for kv in value.items() if isinstance(value, dict) else value:
                parts[partition_of(kv[0], count)].append(kv)
            for s, p in zip(slices, parts, strict=True):
                s[field] = p
        elif field in ("del", MOVED):
            dels: list[list[Any]] = [[] for _ in range(count)]
            for k in value:
                dels[partition_of(k, count)].append(k)
            for s, d in zip(slices, dels, strict=True):
                s[field] = d
        elif field == "add":  # window slices: every partition keeps every slice time, with its own keys
            per: list[list[Any]] = [[] for _ in range(count)]
            for ts, items in value:
                cut: list[list[Any]] = [[] for _ in range(count)]
                for kv in items:
                    cut[partition_of(kv[0], count)].append(kv)
                for p, c in zip(per, cut, strict=True):
                    p.append([ts, c])
            for s, p in zip(slices, per, strict=True):
                s[field] = p
        else:  # "drop" (slice times) and anything not keyed: every partition gets it whole
            for s in slices:
                s[field] = value
    return list(slices)


def merge_state(parts: list[dict[str, Any] | None]) -> dict[str, Any] | None:
    """Join the partitions' deltas or snapshots of one operator into one (None when none changed)."""
    return join_parts(parts)


class RemoteFailure(Exception):  # noqa: N818 - a transport, never seen by users
    """A streamkeep error raised in a worker, with its cause (pickling an exception drops ``__cause__``)."""

    def __init__(self, error: BaseException, cause: BaseException | None) -> None:
        super().__init__(error, cause)
        self.error = error
        self.cause = cause


def portable(exc: StreamkeepError) -> RemoteFailure:
    """`exc` and its cause, ready to cross a process boundary (an unpicklable cause becomes a RuntimeError)."""
    cause = exc.__cause__
    if cause is not None:
        try:
            pickle.dumps(cause)
        except Exception:
            cause = RuntimeError(f"{type(cause).__name__}: {cause}")
    return RemoteFailure(exc, cause)


def run_ops(ops: tuple[Any, ...], t: int, parts: list[list[Any]]) -> list[list[Any]]:
    """`parts` with the per-record operators `ops` applied (a Ray task, where the records are)."""
    try:
        return Records(Batch._lazy(parts, ops, t).partitions)
    except StreamkeepError as exc:
        raise portable(exc) from None


def bucket_parts(ops: tuple[Any, ...], t: int, count: int, parts: list[list[Any]]) -> Any:
    """`parts` with `ops` applied, split by owning partition (a Ray task: the shuffle's map side).

    Returns the `count` buckets, or with `count` 1 the one bucket itself (a Ray task
    returns its value as one object when it has one return, as many when it has several).
    """
    try:
        buckets = bucket(Batch._lazy(parts, ops, t), count)
        return [Records(b) for b in buckets] if count > 1 else Records(buckets[0])
    except StreamkeepError as exc:
        raise portable(exc) from None


def run_fetch(fetch: Any) -> tuple[list[list[Any]], tuple[list[int], Any]]:
    """Run one fetch of a source's `RemoteRead` (a Ray task): its partitions, and (records per partition, extra)."""
    try:
        parts, extra = fetch()
    except StreamkeepError as exc:
        raise portable(exc) from None
    except Exception as exc:
        msg = f"reading a source's planned input in a Ray worker (pid {os.getpid()}) failed: {type(exc).__name__}: {exc}"
        err = SourceError(msg)
        err.__cause__ = exc
        raise portable(err) from None
    return Records(parts), ([records_in(p) for p in parts], extra)


def write_part(sink: Any, t: int, attempt: str, index: int, ops: tuple[Any, ...], parts: list[list[Any]]) -> Any:
    """Write part `index` of batch `t` to a `PartitionWritable` sink where its records are (a Ray task): the receipt."""
    try:
        records = [r for p in Batch._lazy(parts, ops, t).partitions for r in p]
        return sink.write_part(t, attempt, index, sink_records(sink, records))
    except StreamkeepError as exc:
        raise portable(exc) from None
    except Exception as exc:  # as the driver's write reports it
        msg = f"sink {sink.name!r} failed to write batch {t} ms: {type(exc).__name__}: {short_repr(str(exc), 200)}"
        err = SinkError(msg)
        err.__cause__ = exc
        raise portable(err) from None


class PartitionHost:
    """One key partition of every partitioned stateful operator of a job (a Ray actor's body).

    Keeps, per operator, the runtime the local executor would use, fed only the
    records whose key this partition owns. Long-lived: state stays here between batches.
    """

    def __init__(self, index: int, count: int) -> None:
        self.index = index
        self.count = count
        self.runtimes: dict[str, StatefulRuntime] = {}
        self.writer: PartWriter | None = None
        #: (operator, batch time, slice) -> this partition's own bucket of a `map_bucket` slice, until `step` takes it
        self.kept: dict[tuple[str, int, int], list[Any]] = {}
        self.ops_cache: tuple[bytes, tuple[Any, ...]] = (b"", ())  # the last pickled operators `map_bucket` got, loaded

    def ping(self) -> int:
        """The worker's pid (a liveness check)."""
        return os.getpid()

    def open(self, nodes: list[StatefulNode], zero_ms: int, index: int, count: int) -> None:
        """Build empty runtimes for `nodes` (stripped of their parents) as partition `index` of `count`."""
        self.index, self.count = index, count
        self.runtimes = {n.name: make_runtime(n, zero_ms) for n in nodes}
        self.kept = {}  # a failed try's slices (the batch is retried from its plan)

    def seed(self, name: str, state: dict[str, Any]) -> None:
        """Initial state of operator `name` in this partition (reported as changed, as `seed` does locally)."""
        rt = self.runtimes[name]
        rt.load(state, [])
        store = getattr(rt, "store", None)
        if store is not None:
            store.changed = set(store.data)

    def restore(self, name: str, snapshot: dict[str, Any] | None, deltas: list[dict[str, Any]]) -> None:
        """Replace operator `name`'s state in this partition with `snapshot` plus `deltas`."""
        self.runtimes[name].load(snapshot, deltas)

    def _drop_leftovers(self, t: int) -> None:
        """Forget kept buckets of batches other than `t`: a failed try's (its map side ran, its step did not)."""
        if any(k[1] != t for k in self.kept):
            self.kept = {k: v for k, v in self.kept.items() if k[1] == t}

    def map_bucket(self, name: str, t: int, piece: int, ops: tuple[Any, ...] | bytes, records: list[Any]) -> tuple[Any, ...]:
        """The shuffle's map side for operator `name` in this actor: slice `piece` of the batch with `ops` applied, split by owning partition.

        Keeps this partition's own bucket here (for `step`, which gets the int `piece` in its
        place); returns the other partitions' buckets in partition order, then (input records,
        CPU ms, wall ms of this call on this actor's own clock) (with one partition: that triple alone: a Ray call's one return). Running the per-record chain in the partition actors
        themselves (slices of the batch) saves the tasks, and this partition's records never
        leave the process. An actor may map several slices of a batch, in any order. `ops`
        may come pickled (the driver pickles a batch's operators once for all its slices).
        """
        w0 = time.perf_counter()
        self._drop_leftovers(t)
        c0 = time.thread_time()
        if isinstance(ops, bytes):
            if self.ops_cache[0] != ops:
                self.ops_cache = (ops, pickle.loads(ops))  # noqa: S301 - the job's own operators, from its driver
            ops = self.ops_cache[1]
        try:
            with gc_paused():  # the records live until the step: collections meanwhile only walk them (as in the driver)
                buckets: list[Any] = bucket(Batch._lazy([records], ops, t), self.count)
        except StreamkeepError as exc:
            raise portable(exc) from None
        self.kept[(name, t, piece)] = buckets[self.index]
        # per input record: what the driver cuts slices by; the wall time on this host (not a wall-clock stamp:
        # hosts' clocks differ): how far the actors' equal slices, dispatched together, drift apart
        stats = (len(records), (time.thread_time() - c0) * 1e3, (time.perf_counter() - w0) * 1e3)
        return (*(Records(b) for i, b in enumerate(buckets) if i != self.index), stats) if self.count > 1 else stats

    def step(
        self, name: str, t: int, present: bool, forget: bool, *parts: list[Any] | int
    ) -> tuple[list[list[Any]] | None, tuple[bool, list[Any], float]]:
        """Run operator `name` for batch `t` over this partition's records (one list per upstream chunk).

        `forget`: first drop every operator's change tracking (`forget_changes`, which the
        driver folds into the next batch's step instead of a call of its own). An int part
        is this partition's own bucket of that `map_bucket` slice, kept here.
        Returns (output partitions or None, (produced, dead letters, ms)).
        """
        if forget:
            self.forget_changes()
        rt = self.runtimes[name]
        self._drop_leftovers(t)
        if any(p.__class__ is int for p in parts):
            kept: list[list[Any]] = []
            for p in parts:
                if p.__class__ is not int:
                    kept.append(p)  # type: ignore[arg-type]  # a bucket
                    continue
                own = self.kept.pop((name, t, p), None)  # type: ignore[arg-type]  # a piece number
                if own is None:  # pragma: no cover - the driver always calls map_bucket first, on the same actor
                    msg = f"partition {self.index} of {name!r}: no records of slice {p} of batch {t} ms were kept here for its step"
                    raise portable(StreamkeepError(msg))
                kept.append(own)
            parts = tuple(kept)
        parent = Batch([plain(p) for p in parts] or [[]], t) if present else None  # type: ignore[arg-type]  # no None left
        s0 = time.perf_counter()
        try:
            with gc_paused():
                out = rt.step(t, parent)
        except StreamkeepError as exc:
            raise portable(exc) from None
        ms = (time.perf_counter() - s0) * 1e3
        node = rt.node
        letters = node.dead_letters.take() if isinstance(node, MapWithStateNode) and node.dead_letters is not None else []
        group = None if out is None else Records(out.partitions)
        return group, (group is not None, letters, ms)

    def delta(self, name: str) -> dict[str, Any] | None:
        """What changed in operator `name` in this partition since the last call."""
        return self.runtimes[name].delta()

    def snapshot(self, name: str) -> dict[str, Any]:
        """This partition's whole state of operator `name`."""
        return self.runtimes[name].snapshot()

    def forget_changes(self) -> None:
        """Drop every operator's change tracking."""
        for rt in self.runtimes.values():
            rt.forget_changes()

    # -- the partition's state files (a checkpoint's storage, shared by every node) --

    def attach(self, url: str | None, storage_options: dict[str, Any] | None) -> None:
        """Write this partition's state files under checkpoint `url` from now on (None: no checkpoint)."""
        self.writer = None if url is None else PartWriter(url, storage_options, self.index, self.count)

    def probe(self, url: str, storage_options: dict[str, Any] | None, rel: str, token: str) -> tuple[str | None, str, str]:
        """Read the driver's probe `rel` and write one of this partition's: (why the read failed or None, own probe, its token)."""
        why = read_probe(url, storage_options, rel, token)
        try:
            mine, mine_token = write_probe(url, storage_options, f"p{self.index}")
        except (StreamkeepError, OSError) as exc:
            return why or f"writing a probe failed: {type(exc).__name__}: {exc}", "", ""
        return why, mine, mine_token

    def write_deltas(self, t: int, epoch: int, inline_max: dict[str, int]) -> dict[str, Ack]:
        """Write each operator's changes since the last call for batch `t` (claim `epoch`); acknowledge what was written."""
        writer = self.writer
        assert writer is not None, "write_deltas before attach"
        out: dict[str, Ack] = {}
        try:
            for name, rt in self.runtimes.items():
                ack = writer.delta(rt, t, epoch, inline_max.get(name, 0))
                if ack is not None:
                    out[name] = ack
        except StreamkeepError as exc:
            raise portable(exc) from None
        return out

    def restore_files(self, name: str, url: str, storage_options: dict[str, Any] | None, codec: str, chain: dict[str, Any]) -> None:
        """Load operator `name`'s state in this partition from a stored chain: its own files, or its keys of any other entry."""
        try:
            ckpt = self.writer.ckpt if self.writer is not None else Checkpoint(url, storage_options=storage_options)
            allow = codec == "pickle"
            snap = slice_entry(ckpt, chain["snapshot"], allow, self.index, self.count, split_state) if chain.get("snapshot") else None
            deltas = [d for d in (slice_entry(ckpt, r, allow, self.index, self.count, split_state) for r in chain.get("deltas", ())) if d is not None]
            self.runtimes[name].load(snap, deltas)
        except StreamkeepError as exc:
            raise portable(exc) from None

    def write_snapshots(self, t: int, epoch: int, names: list[str]) -> dict[str, tuple[str | None, int]]:
        """Write a copy of operators `names`' state as their snapshots of batch `t` (claim `epoch`)."""
        writer = self.writer
        assert writer is not None, "write_snapshots before attach"
        try:
            return {name: writer.snapshot(self.runtimes[name], t, epoch) for name in names}
        except StreamkeepError as exc:
            raise portable(exc) from None

    def key_count(self, name: str) -> int:
        """Keys operator `name` holds in this partition."""
        return self.runtimes[name].key_count()

    def drained(self, last_t: int) -> bool:
        """True when no operator of this partition holds input for a batch after `last_t`."""
        return all(rt.drained(last_t) for rt in self.runtimes.values())

    def state_items(self, name: str) -> list[tuple[Any, Any]]:
        """(key, state) of map_with_state `name` in this partition (``state_snapshots()``)."""
        rt = self.runtimes[name]
        assert isinstance(rt, MapWithStateRuntime)
        return Records(rt.state_items())


def compact_task(url: str, storage_options: dict[str, Any] | None, t: int, epoch: int, part: int, count: int, jobs: list[Job]) -> dict[str, tuple[str | None, int]]:
    """`compact_part` of key partition `part` (a Ray task: reads and writes the checkpoint storage only)."""
    try:
        return compact_part(url, storage_options, t, epoch, part, count, jobs, split_state)
    except StreamkeepError as exc:
        raise portable(exc) from None
