"""`RayExecutor`: the same job on Ray, keyed state split into partitions held by long-lived actors.

The only module that imports ``ray`` (lazily: ``import streamkeep`` works without it).

Per batch, as the local executor, it computes the graph's nodes in order, but:

- Each keyed stateful operator (`update_state_by_key`, `map_with_state`,
  `reduce_by_key_and_window` with or without an inverse) is split into
  ``num_partitions`` key partitions (`streamkeep.executors._partitions.key_hash`).
  Partition i of every such operator lives in actor i (`PartitionHost`), which keeps
  the local executor's runtime for its keys between batches.
- The shuffle into those actors: a big driver-side batch is cut into slices (one per
  actor; once the per-record cost is measured and worth it, one big slice per actor and
  small ones that go to the actor done first, `_slices`); the actor that maps a slice runs
  the per-record chain on it, keeps its own partition's records and hands the other
  buckets to their owners' steps as object refs, which take them in slice order, so the
  result does not depend on which actor mapped what (`_map_in_hosts`; when the cluster
  has more CPUs than partitions, Ray tasks do that instead, two per CPU).
  Records already in the object store (an actor's output, a Kafka fetch) are split by
  tasks where they are, one per ref. Small driver-side batches (fewer than
  `SMALL_BATCH` records) are split in the driver, which costs less than a call.
- Back to back (`SendsAhead`: ``run(n)`` with batches left), the next batch's map side is
  queued in the actors while they compute this one (`compute_with`, `send_ahead`): an actor
  runs its calls in order, so it finds its next slice queued when its step ends, and the
  next batch's steps (state changes) still come after this batch's outputs and commit.
- A stateful operator's output stays in the actors' object store; a per-record
  chain after it runs in Ray tasks where the output is. Per-batch operators
  (``transform``, joins, ``reduce_by_key``) and outputs get the records on the driver,
  except sinks that are `PartitionWritable` (Redis, Kafka, files): Ray tasks write
  their parts where the records are, and the driver publishes the batch once.
- Sources: the driver plans; a `RemotelyReadable` source (Kafka) is read by Ray tasks
  (`read_input`, the `RemoteInput` capability), so its records go from the broker to
  the workers' object store; other sources are read by the driver.
- Windows of whole records (``window``) and event-time windows (one watermark
  across all keys) keep their state in the driver, as with the local executor.

Checkpoints (`StateOwners`): each actor writes its own partition's state files straight
to the checkpoint storage (``state/<op>/<T>.p<i>of<n>.e<epoch>.delta``; small deltas come
back inline for the commit record) and acknowledges them; snapshots are compacted per
partition in Ray tasks that read and write the storage. The driver writes the commit
record only after every partition acknowledged. At `open` every actor must read a probe
file the driver wrote, and the driver every actor's: a storage that is not shared between
the nodes is refused (ConfigError) before any state is written. On recovery each actor
reads its keys' files itself (`restore_files`: its own partition's files, or with another
partition count every file, cut by key hash with `split_state`): a checkpoint restores on
any partition count (rescaling) and on the local executor, and back.

Failures: a dead actor (or its node) raises `WorkerLostError`; the scheduler then
re-opens the executor (dead actors are replaced, every partition restored from the
last commit) and runs the batch again from its plan.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import os
import signal
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from itertools import pairwise
from typing import Any

from streamkeep import _faults
from streamkeep._util import short_repr
from streamkeep.batch import Batch
from streamkeep.dstream._graph import (
    DeadLetterNode,
    Graph,
    MapWithStateNode,
    NarrowNode,
    Node,
    OutputNode,
    SnapshotsNode,
    SourceNode,
    StatefulNode,
    TransformNode,
)
from streamkeep.errors import ConfigError, SinkError, StreamkeepError, UserFunctionError, WorkerLostError
from streamkeep.executors._partitions import (
    HASH_NAME,
    PartitionHost,
    Records,
    RemoteFailure,
    bucket,
    bucket_parts,
    compact_task,
    merge_state,
    partitioned,
    run_fetch,
    run_ops,
    split_state,
    write_part,
)
from streamkeep.executors._pool import _PER_PARTITION
from streamkeep.executors._runtime import MapWithStateRuntime, StatefulRuntime
from streamkeep.executors._state_files import delete_probe, read_probe, write_probe
from streamkeep.executors.kinds import make_runtime
from streamkeep.executors.local import _call, _name_upstream, event_time_status, output_label, run_outputs
from streamkeep.sinks.base import PartitionWritable
from streamkeep.sources.base import RemotelyReadable, Source, source_partitions

log = logging.getLogger("streamkeep.executors.ray")

#: A driver-side batch with fewer records than this is split by key in the driver (a task costs more).
SMALL_BATCH = 2000
#: Fewest records per chunk (and task) when a driver-side batch is split for the shuffle (at most a chunk per CPU).
CHUNK_RECORDS = 2000
#: A batch mapped in the partition actors is cut into slices that they pull as they finish (`_slices`) when
#: an actor's share would take at least this many ms of CPU (measured on the operator's last batch)
BALANCE_MS = 40.0
#: and its records at least this many us each (cheap records: the extra calls and objects cost more than they even out).
BALANCE_US = 5.0
#: Then each actor maps one big slice, and the last slices (each PIECE_MS of CPU, and at least PIECE_RECORDS
#: records; about as many as the actors' shares are expected to end PIECE_MS apart, at most PIECES per actor)
#: go to whichever actor is done first.
PIECES = 2
PIECE_MS = 10.0
PIECE_RECORDS = 200

_INSTALL = "pip install streamkeep[ray]"


def _import_ray() -> Any:
    try:
        import ray
    except ImportError as exc:
        msg = f"executor='ray' needs Ray, which is not installed: {_INSTALL} (or pip install 'ray>=2.9')"
        raise ConfigError(msg) from exc
    return ray


class _Remote:
    """A batch whose partitions are in Ray's object store (actor outputs), with per-record ops still to apply.

    Each ref holds a list of partitions (one actor's output). On the driver, partition j
    is the concatenation of every actor's partition j (when all have the same count).
    """

    __slots__ = ("labels", "local", "ops", "refs", "stacked", "t")

    def __init__(
        self, refs: list[Any], ops: tuple[Any, ...], t: int, *, stacked: bool = False, labels: tuple[str, ...] | None = None
    ) -> None:
        self.refs = refs
        self.ops = ops
        self.t = t
        #: True: the batch's partitions are every ref's partitions one after another (a source read
        #: in tasks: each partition whole in one ref); False: partition j is every ref's partition j.
        self.stacked = stacked
        self.labels = labels  # Batch.source_partitions (stacked only)
        self.local: Batch[Any] | None = None

    def with_ops(self, refs: list[Any], ops: tuple[Any, ...]) -> _Remote:
        """The same batch's layout and labels over other refs with other pending ops."""
        return _Remote(refs, ops, self.t, stacked=self.stacked, labels=self.labels)

    def whole_partitions(self) -> bool:
        """True when each ref holds whole partitions (per-partition ops can run on one ref)."""
        return self.stacked or len(self.refs) == 1


class _Mapping:
    """A batch's map side in the partition actors (`RayExecutor._start_map`): its slices and the calls given out so far."""

    __slots__ = ("calls", "cuts", "name", "ops", "owner", "parent", "records", "t")

    def __init__(self, name: str, t: int, parent: Batch[Any], records: list[Any], cuts: list[tuple[int, int]], ops: bytes) -> None:
        self.name = name
        self.t = t
        self.parent = parent  # the input it maps (`_take_sent` checks the batch computed is this one)
        self.records = records
        self.cuts = cuts
        #: the per-record operators, pickled once for every slice (`_take_sent` compares them pickled again at compute)
        self.ops = ops
        self.calls: list[list[Any]] = []  # per slice given out: its n - 1 buckets' refs (not its actor's own), then its stats ref
        self.owner: list[int] = []  # per slice given out: the actor that maps it

    def refs(self) -> list[Any]:
        return [r for c in self.calls for r in c]


class RayExecutor:
    """Runs the job on Ray: keyed state in `num_partitions` actors, per-record chains in tasks.

    Args:
        address: the Ray cluster: ``"ray://host:10001"`` (Ray client), ``"host:port"`` (the
            GCS of a cluster this machine belongs to) or ``"auto"``. None (default): an
            already-initialised Ray in this process, else the cluster in the ``RAY_ADDRESS``
            environment variable, else a local Ray started on demand,
            bound to 127.0.0.1 (no dashboard, no usage stats, a quiet log monitor), stopped by `close`.
        num_partitions: key partitions (and actors) per job; None: the cluster's CPU count.
        actor_options: passed to the actors' ``.options(...)`` (e.g. ``{"num_cpus": 1}``,
            ``{"resources": {...}}``).
        num_cpus: CPUs of a local Ray started on demand (None: Ray's default, all of them).
        keep_actors: `close` keeps the partition actors (emptied at the next `open`), so the
            next job run with this same executor object skips starting them (notebooks,
            test suites: an actor takes a second or more to start); `shutdown` stops them.

    Raises:
        ConfigError: a bad argument, or Ray is not installed (``pip install streamkeep[ray]``).

    Example:
        >>> import streamkeep as sk
        >>> ssc = sk.StreamingContext(1.0, executor=sk.executors.RayExecutor(num_partitions=4))  # doctest: +SKIP
    """

    name = "ray"

    def __init__(
        self,
        address: str | None = None,
        *,
        num_partitions: int | None = None,
        actor_options: dict[str, Any] | None = None,
        num_cpus: int | None = None,
        keep_actors: bool = False,
    ) -> None:
        if num_partitions is not None and (not isinstance(num_partitions, int) or isinstance(num_partitions, bool) or num_partitions < 1):
            msg = f"RayExecutor: num_partitions must be a positive int or None (the cluster's CPU count), got {num_partitions!r}"
            raise ConfigError(msg)
        if address is not None and (not isinstance(address, str) or not address):
            msg = f"RayExecutor: address must be 'ray://host:port', 'host:port', 'auto' or None (a local Ray), got {address!r}"
            raise ConfigError(msg)
        if actor_options is not None and not isinstance(actor_options, dict):
            msg = f"RayExecutor: actor_options must be a dict of Ray actor options, got {actor_options!r}"
            raise ConfigError(msg)
        self.ray = _import_ray()  # fail at construction, not at the first batch
        self.address = address
        self.num_partitions = num_partitions
        self.actor_options = dict(actor_options or {})
        self.num_cpus = num_cpus
        self.keep_actors = keep_actors
        self._started_ray = False
        self._actors: list[Any] = []  # the partition actors (`_hosts` also gives them a pending forget first)
        self._forget = False  # forget_changes not yet sent to the actors (the next step does it first)
        self._count = 0
        self._cpus = 1
        self._lost: tuple[type[BaseException], ...] = ()
        self._remote_fns: dict[str, Any] = {}
        self.graph: Graph | None = None
        self.nodes: list[Node] = []
        self.zero_ms = 0
        self._partitioned: dict[str, StatefulNode] = {}
        self._driver: dict[str, StatefulRuntime] = {}
        self._by_id: dict[int, StatefulRuntime] = {}
        self._shared: set[int] = set()
        self._timings: dict[str, float] | None = None
        self._storage: tuple[str, dict[str, Any] | None] | None = None  # the checkpoint the actors write to
        self._unread: list[Any] = []  # actor calls not waited for (forget_changes): `_get` reads them first
        self._map_cost: dict[str, float] = {}  # operator -> CPU us per record of its map side in the actors (last batch)
        #: operator -> how far apart the actors' equal first slices ended (smoothed over recent batches), ms per record of a slice
        self._map_skew: dict[str, float] = {}
        self._ahead: Callable[[], None] | None = None  # `compute_with`: called once the last partitioned steps are submitted
        self._last_partitioned: str | None = None  # the partitioned operator whose steps are submitted last in a batch
        self._sent: dict[str, _Mapping] = {}  # operator -> the next batch's map side, sent ahead (`send_ahead`)
        self._sendable = False  # a partitioned operator is fed by a source through per-record operators (`open`)
        self._holding = False  # `send_ahead` cuts the next batch but gives out nothing yet (`_release_sent` does)
        self.sent_ahead = 0  # steps whose map side had been sent ahead (monitoring, tests)

    @property
    def _hosts(self) -> list[Any]:
        """The partition actors, each sent a pending `forget_changes` first (calls other than the step read or write its changes)."""
        if self._forget:
            self._forget = False
            self._unread.extend(h.forget_changes.remote() for h in self._actors)
        return self._actors

    @_hosts.setter
    def _hosts(self, actors: list[Any]) -> None:
        self._actors = actors

    # -- connecting ------------------------------------------------------------------

    def _init(self, ray: Any) -> None:
        """``ray.init`` as this executor connects: to `address` (or ``RAY_ADDRESS``), or a local Ray on loopback."""
        opts: dict[str, Any] = {"configure_logging": False}
        address = self.address or os.environ.get("RAY_ADDRESS") or None  # Ray's own variable, as ray.init reads it
        if address is not None:
            ray.init(address=address, **opts)
        else:
            _loopback_only(ray)
            # Ray starts workers at nice 15: on a machine shared with other work they would get a
            # fraction of a core while the driver runs at the user's priority. The job's work is the job.
            os.environ.setdefault("RAY_worker_niceness", "0")
            # Ray's log monitor globs the session's log directory 10 times a second while it has
            # fewer files than this (about 10 ms of CPU a second, taken from the job's cores);
            # with 0 it looks for new files every half second. Its lines go nowhere
            # (log_to_driver=False): the workers' logs stay in the session's log files.
            os.environ.setdefault("RAY_LOG_MONITOR_MANY_FILES_THRESHOLD", "0")
            ray.init(
                address="local",
                num_cpus=self.num_cpus,
                include_dashboard=False,
                _node_ip_address="127.0.0.1",
                log_to_driver=False,
                **opts,
            )
            self._started_ray = True

    def _connect(self) -> None:
        ray = self.ray
        if not ray.is_initialized():
            with _keeping_sigterm():
                self._init(ray)
        exc = ray.exceptions
        self._lost = tuple(
            e for e in (getattr(exc, n, None) for n in ("RayActorError", "ObjectLostError", "WorkerCrashedError", "NodeDiedError", "OwnerDiedError"))
            if isinstance(e, type)
        )
        self._cpus = max(1, int(ray.cluster_resources().get("CPU", 1)))
        if not self._remote_fns:
            self._remote_fns = {
                "host": ray.remote(_Host),
                "bucket": ray.remote(bucket_parts),
                "ops": ray.remote(run_ops),
                "compact": ray.remote(compact_task),
                "fetch": ray.remote(run_fetch),
                "write": ray.remote(write_part),
            }

    def actor_pids(self) -> list[int]:
        """The process ids of the partition actors, in partition order (monitoring; fault tests kill them)."""
        return [int(pid) for pid in self._get([h.ping.remote() for h in self._hosts])]

    def partitioning(self) -> dict[str, Any]:
        """How keyed state is split (recorded in each commit record; a restore on Ray refuses another hash)."""
        return {"executor": "ray", "partitions": self._count or self.num_partitions, "hash": HASH_NAME}

    # -- lifecycle ---------------------------------------------------------------------

    def open(self, graph: Graph, zero_ms: int) -> None:
        """Connect, start (or replace dead) partition actors, and build every stateful operator with empty state."""
        self._drop_unread()  # a run before, or the batch whose actor died: what they said no longer matters
        self._connect()
        self.graph = graph
        self.zero_ms = zero_ms
        self.nodes = graph.needed()
        consumers: dict[int, int] = {}
        for n in self.nodes:
            for p in n.parents:
                consumers[p.id] = consumers.get(p.id, 0) + 1
        self._shared = {i for i, c in consumers.items() if c > 1}
        self._partitioned = {}
        self._driver = {}
        self._by_id = {}
        self._map_cost = {}  # another job's operators, or a retry: measured again on the first batch
        self._map_skew = {}
        self._drop_sent()  # a failed try's (its actors are replaced or emptied below)
        for n in self.nodes:
            if isinstance(n, StatefulNode):
                if partitioned(n):
                    self._partitioned[n.name] = n
                else:
                    rt = make_runtime(n, zero_ms)
                    self._driver[n.name] = rt
                    self._by_id[n.id] = rt
        self._last_partitioned = next(reversed(self._partitioned), None)  # graph order
        fed: set[int] = set()  # nodes whose records come from a source through per-record operators only (`send_ahead`)
        for n in self.nodes:
            if n.id not in self._shared and (isinstance(n, SourceNode) or (isinstance(n, NarrowNode) and n.parents[0].id in fed)):
                fed.add(n.id)
        self._sendable = any(n.parents[0].id in fed for n in self._partitioned.values())
        if not self._partitioned:
            return
        self._count = self.num_partitions or self._cpus
        self._ensure_hosts()
        # Actors get the nodes without their upstream graph (sources are not theirs) nor initial state (see seed).
        stripped = [_strip(n) for n in self._partitioned.values()]
        self._get([h.open.remote(stripped, zero_ms, i, self._count) for i, h in enumerate(self._hosts)])
        url, opts = self._storage or (None, None)
        if url is not None:
            self._check_shared(url, opts)
        self._get([h.attach.remote(url, opts) for h in self._hosts])

    def _check_shared(self, url: str, opts: dict[str, Any] | None) -> None:
        """ConfigError unless every actor reads a probe the driver wrote under `url`, and the driver every actor's."""
        rel, token = write_probe(url, opts, "driver")
        written: list[str] = []
        try:
            got = self._get([h.probe.remote(url, opts, rel, token) for h in self._hosts])
            ips = self._get([h.node_ip.remote() for h in self._hosts])
            for (why, mine, mine_token), ip in zip(got, ips, strict=True):
                if mine:
                    written.append(mine)
                    if why is None:
                        why = read_probe(url, opts, mine, mine_token)
                        why = None if why is None else f"the driver cannot read the file the actor wrote ({why})"
                    else:
                        why = f"the actor cannot read the file the driver wrote ({why})"
                if why is not None:
                    msg = (
                        f"the checkpoint storage at {url} is not visible from Ray node {ip}: {why}. Each partition actor "
                        f"writes its own state files there, so every node of the cluster must see the same storage: use a "
                        f"filesystem mounted at the same path on every node (NFS, a cluster filesystem) or an object store "
                        f"URL (s3://bucket/prefix, with storage_options). Nothing was written to the checkpoint's state."
                    )
                    raise ConfigError(msg)
        finally:
            for r in [rel, *written]:
                delete_probe(url, opts, r)

    def _ensure_hosts(self) -> None:
        """Exactly `_count` live actors: dead ones replaced, extra ones stopped."""
        ray = self.ray
        live: list[Any] = []
        for h in self._hosts:
            try:
                ray.get(h.ping.remote(), timeout=60)
                live.append(h)
            except Exception as exc:  # dead (or unreachable): replaced below
                log.warning("a partition actor is gone (%s); starting a new one", type(exc).__name__)
                self._kill(h)
        for h in live[self._count :]:
            self._kill(h)
        live = live[: self._count]
        cls = self._remote_fns["host"]
        opts = {"max_restarts": 0, **self.actor_options}
        while len(live) < self._count:
            live.append(cls.options(**opts).remote(len(live), self._count))
        self._hosts = live
        self._get([h.ping.remote() for h in live])

    def _kill(self, handle: Any) -> None:
        try:
            self.ray.kill(handle, no_restart=True)
        except Exception as exc:  # already gone
            log.debug("killing a partition actor: %s", exc)

    def close(self) -> None:
        """Stop the partition actors (unless `keep_actors`) and the local Ray this executor started, if any."""
        self._drop_unread()
        self._drop_sent(wait=False)  # shutting down: `_step` waited for the interrupted batch's calls already
        if not self.keep_actors:
            self.shutdown()

    def shutdown(self) -> None:
        """Stop the partition actors and the local Ray this executor started, if any (also with `keep_actors`)."""
        self._forget = False  # no forget for actors about to be killed
        self._sent = {}  # calls to those actors: never read
        for h in self._actors:
            self._kill(h)
        self._hosts = []
        self._unread = []  # results of calls to those actors: never read
        if self._started_ray and self.ray.is_initialized():
            self.ray.shutdown()
            self._started_ray = False

    def _get(self, refs: Any) -> Any:
        """ray.get, with a dead actor or node as WorkerLostError and a worker's streamkeep error as itself.

        Also reads the results of calls not waited for (`forget_changes`), first.
        """
        ray = self.ray
        unread, self._unread = self._unread, []
        try:
            if unread:
                return ray.get(unread + refs)[len(unread) :] if isinstance(refs, list) else ray.get([*unread, refs])[-1]
            return ray.get(refs)
        except ray.exceptions.RayTaskError as exc:
            cause = getattr(exc, "cause", None)
            if isinstance(cause, RemoteFailure):
                raise cause.error from cause.cause
            if self._lost and isinstance(exc, self._lost):
                raise self._lost_error(exc) from exc
            raise
        except self._lost as exc:
            raise self._lost_error(exc) from exc

    def _drop_unread(self) -> None:
        self._forget = False  # `open` builds the actors' runtimes anew
        unread, self._unread = self._unread, []
        self._settle(unread)

    def _settle(self, refs: list[Any]) -> None:
        """Read results whose error is already being raised (else Ray prints each as an "unhandled error").

        One wait of at most 30 s for them all (a hung user function must not hold up an
        interrupted job for 30 s per result); the ones not done by then are left unread.
        """
        kind = self.ray.ObjectRef
        refs = list(dict.fromkeys(r for r in refs if isinstance(r, kind)))  # refs only (a part may be records), each once
        if not refs:
            return
        try:
            ready, _ = self.ray.wait(refs, num_returns=len(refs), timeout=30)
        except Exception:  # e.g. Ray itself is going down: nothing to read
            return
        for r in ready:
            try:
                self.ray.get(r, timeout=0)
            except Exception:  # noqa: S110 - the error itself is raised by the caller
                pass

    def _lost_error(self, exc: BaseException) -> WorkerLostError:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        msg = f"a Ray worker holding key partitions of the job's state died ({type(exc).__name__}: {first[:200]})."
        return WorkerLostError(msg)

    # -- state, for the scheduler ------------------------------------------------------

    def operators(self) -> list[str]:
        """Names of the stateful operators, in graph order."""
        return [n.name for n in self.nodes if isinstance(n, StatefulNode)]

    def seed(self, name: str) -> None:
        """Give operator `name` its initial state (split by key for a partitioned one)."""
        if name in self._driver:
            self._driver[name].seed()
            return
        rt = make_runtime(self._partitioned[name], self.zero_ms)  # the initial state, as the local executor builds it
        rt.seed()
        if rt.key_count() == 0:  # the actors' runtimes are empty already
            return
        slices = split_state(rt.snapshot(), self._count)
        self._get([h.seed.remote(name, s) for h, s in zip(self._hosts, slices, strict=True)])

    def restore(self, name: str, snapshot: dict[str, Any] | None, deltas: list[dict[str, Any]]) -> None:
        """Replace operator `name`'s state with `snapshot` plus `deltas` (split over the partitions, whatever wrote them)."""
        if name in self._driver:
            self._driver[name].load(snapshot, deltas)
            return
        n = self._count
        snaps = split_state(snapshot, n)
        per_delta = [split_state(d, n) for d in deltas]
        refs = [h.restore.remote(name, snaps[i], [d[i] for d in per_delta]) for i, h in enumerate(self._hosts)]
        self._get(refs)

    def delta(self, name: str) -> dict[str, Any] | None:
        """What changed in operator `name` since the last call, every partition's changes merged."""
        if name in self._driver:
            return self._driver[name].delta()
        return merge_state(self._get([h.delta.remote(name) for h in self._hosts]))

    def snapshot(self, name: str) -> dict[str, Any]:
        """The whole state of operator `name`, every partition merged."""
        if name in self._driver:
            return self._driver[name].snapshot()
        merged = merge_state(self._get([h.snapshot.remote(name) for h in self._hosts]))
        assert merged is not None
        return merged

    # -- the actors' own state files (`StateOwners`) -----------------------------------

    def attach_checkpoint(self, url: str | None, storage_options: dict[str, Any] | None) -> None:
        """Have the actors write their partitions' state files under checkpoint `url` (None: no checkpoint).

        `open` then checks that every actor can read what the driver writes there and the other way round.
        """
        self._storage = None if url is None else (url, dict(storage_options) if storage_options else None)

    def owned(self) -> list[str]:
        """The partitioned operators (their actors write their state files), in graph order."""
        return [n.name for n in self.nodes if isinstance(n, StatefulNode) and n.name in self._partitioned]

    def restore_files(self, name: str, codec: str, chain: dict[str, Any]) -> None:
        """Every actor reads operator `name`'s state of its keys from the stored `chain` (the driver reads no state)."""
        if self._storage is None:  # pragma: no cover - the scheduler attaches the checkpoint it restores from
            msg = f"restore_files({name!r}) without a checkpoint attached"
            raise StreamkeepError(msg)
        url, opts = self._storage
        self._get([h.restore_files.remote(name, url, opts, codec, chain) for h in self._hosts])

    def write_deltas(self, t: int, epoch: int, inline_max: dict[str, int]) -> dict[str, tuple[list[Any], int, bool]]:
        """Every actor writes its partitions' changes of batch `t`; per operator that changed, (entry per partition, bytes, mergeable)."""
        if not self._partitioned:
            return {}
        n = self._count
        per_part = {name: max(0, m) // n for name, m in inline_max.items()}
        acks: list[dict[str, Any]] = self._get([h.write_deltas.remote(t, epoch, per_part) for h in self._hosts])
        out: dict[str, tuple[list[Any], int, bool]] = {}
        for name in self.owned():
            got = [a.get(name) for a in acks]
            if all(g is None for g in got):
                continue
            out[name] = (
                [None if g is None else g[0] for g in got],
                sum(g[1] for g in got if g is not None),
                all(g[2] for g in got if g is not None),
            )
        return out

    def write_snapshots(self, t: int, epoch: int, names: list[str]) -> dict[str, tuple[list[str | None], int]]:
        """Every actor writes a copy of its partitions' state of `names` as their snapshots of batch `t`."""
        if not names:
            return {}
        acks: list[dict[str, tuple[str | None, int]]] = self._get([h.write_snapshots.remote(t, epoch, names) for h in self._hosts])
        return {name: ([a[name][0] for a in acks], sum(a[name][1] for a in acks)) for name in names}

    def compact(self, t: int, epoch: int, jobs: list[tuple[str, str, dict[str, Any]]]) -> dict[str, tuple[list[str | None], int]]:
        """One Ray task per partition merges its slice of each job's stored chain into its snapshot of batch `t`."""
        if not jobs or self._storage is None:
            return {}
        url, opts = self._storage
        n = self._count
        fn = self._remote_fns["compact"]
        done: list[dict[str, tuple[str | None, int]]] = self._get([fn.remote(url, opts, t, epoch, i, n, jobs) for i in range(n)])
        names = [op for op, _, _ in jobs if all(op in d for d in done)]
        return {op: ([d[op][0] for d in done], sum(d[op][1] for d in done)) for op in names}

    def forget_changes(self) -> None:
        """Drop every operator's change tracking.

        The actors are not called here (a call per actor and batch without a checkpoint):
        the next batch's `step` call forgets first, and any other call to the actors is
        preceded by a `forget_changes` call (`_hosts`; an actor runs its calls in order),
        whose result the next `_get` reads (a dead actor is lost there).
        """
        for rt in self._driver.values():
            rt.forget_changes()
        if self._partitioned:
            self._forget = True

    def event_time(self) -> dict[str, dict[str, Any]]:
        """Watermark and late records of each event-time window operator (`EventTimeReporting`; they run in the driver)."""
        return event_time_status(self._driver)

    def key_count(self, name: str) -> int:
        """Keys (or records) operator `name` holds, over all partitions."""
        if name in self._driver:
            return self._driver[name].key_count()
        return int(sum(self._get([h.key_count.remote(name) for h in self._hosts])))

    def measure_timings(self) -> None:
        """Measure ms per stateful operator (the slowest partition) and per output during the next batch."""
        self._timings = {}

    def timings(self) -> dict[str, float]:
        """What `measure_timings` measured during the last batch."""
        return dict(self._timings or {})

    def drained(self, last_t: int) -> bool:
        """True when no window (in the driver or any partition) still holds input for a batch after `last_t`."""
        if not all(rt.drained(last_t) for rt in self._driver.values()):
            return False
        if not self._partitioned:
            return True
        return all(self._get([h.drained.remote(last_t) for h in self._hosts]))

    # -- one batch -------------------------------------------------------------------

    def compute(self, t: int, inputs: dict[str, Batch[Any]]) -> dict[int, Batch[Any] | None]:
        """Compute every needed node for batch time t (results may stay in Ray's object store until an output needs them)."""
        results: dict[int, Any] = {}
        for node in self.nodes:
            if isinstance(node, DeadLetterNode):
                node.letters.take()  # nothing left from a batch that failed
        for node in self.nodes:
            out: Any
            try:
                if isinstance(node, SourceNode):
                    out = inputs.get(node.source.name)
                elif isinstance(node, OutputNode):
                    continue
                else:
                    parents = [results[p.id] for p in node.parents]
                    if isinstance(node, NarrowNode):
                        out = None if parents[0] is None else self._narrow(node, parents[0])
                    elif isinstance(node, StatefulNode):
                        s0 = time.perf_counter()
                        if node.name in self._partitioned:
                            out = self._step(node, t, parents[0])
                        else:
                            parent = None if parents[0] is None else self._local(parents[0])
                            out = self._by_id[node.id].step(t, parent)
                        if self._timings is not None:
                            self._timings[node.name] = (time.perf_counter() - s0) * 1e3
                    elif isinstance(node, SnapshotsNode):
                        out = None if parents[0] is None else Batch([self._state_items(node.parents[0])], t)
                    elif isinstance(node, TransformNode):
                        out = None if any(p is None for p in parents) else _call(node, t, [self._local(p) for p in parents])
                    else:  # pragma: no cover - every node kind is handled above
                        msg = f"unknown node kind {type(node).__name__}"
                        raise StreamkeepError(msg)
            except UserFunctionError as exc:
                named = _name_upstream(exc, node, t)
                if named is None:
                    raise
                raise named from exc.__cause__
            if out is not None and node.id in self._shared:
                out = self._cache(out)
            results[node.id] = out
        return results  # type: ignore[return-value]  # _Remote values go back to run_outputs only

    def run_outputs(self, t: int, results: dict[int, Batch[Any] | None]) -> None:
        """Run the outputs in registration order.

        A `PartitionWritable` sink whose records are in the object store is written by
        Ray tasks where they are (one part per ref), then published by the driver; every
        other output gets its records in the driver.
        """
        timings = self._timings
        for node in self.nodes:
            if not isinstance(node, OutputNode) or isinstance(node, DeadLetterNode):
                continue
            r: Any = results.get(node.parents[0].id)
            if r is None:
                continue
            sink = node.sink
            if (
                isinstance(r, _Remote)
                and isinstance(sink, PartitionWritable)
                and sink.partition_writable()
                and (r.whole_partitions() or not _per_partition(r.ops))
            ):
                s0 = time.perf_counter()
                self._write_parts(sink, t, r)
                if timings is not None:
                    timings[output_label(node)] = (time.perf_counter() - s0) * 1e3
            else:
                run_outputs([node], t, {node.parents[0].id: self._local(r)}, timings)
        run_outputs([n for n in self.nodes if isinstance(n, DeadLetterNode)], t, {}, timings)

    def _write_parts(self, sink: Any, t: int, value: _Remote) -> None:
        """Batch `t` of `sink` written in parts by tasks (one per ref of `value`), then published once here."""
        attempt = uuid.uuid4().hex[:12]  # parts of a try that failed are never published
        _faults.point("sink.before_write")
        task = self._remote_fns["write"]
        refs = [task.remote(sink, t, attempt, i, value.ops, ref) for i, ref in enumerate(value.refs)]
        try:
            receipts = self._get(refs)
        except BaseException:
            self._settle(refs)
            raise
        try:
            sink.publish(t, attempt, receipts)
        except StreamkeepError:
            raise
        except Exception as exc:  # as the driver's write reports it
            msg = f"sink {sink.name!r} failed to write batch {t} ms: {type(exc).__name__}: {short_repr(str(exc), 200)}"
            raise SinkError(msg) from exc
        _faults.point("sink.after_write")

    def read_input(self, source: Any, plan: Any, batch_time: int) -> tuple[_Remote, list[int]] | None:
        """Read a `RemotelyReadable` source's planned input in Ray tasks (`RemoteInput`); None for other sources.

        The records stay in the object store of the workers that fetched them (a
        chain and a shuffle after the source run there too); the driver gets only
        the record counts and what the source's ``finish`` needs (dead letters).
        """
        if not isinstance(source, RemotelyReadable) or not isinstance(source, Source):
            return None
        read = source.remote_read(plan, batch_time, self._cpus)
        if read is None:
            return None
        task = self._remote_fns["fetch"].options(num_returns=2)
        calls = [task.remote(f) for f in read.fetches]
        try:
            metas: list[tuple[list[int], Any]] = self._get([m for _, m in calls])
        except BaseException:
            self._settle([r for r, _ in calls])
            raise
        read.finish([extra for _, extra in metas])
        counts = [c for per_part, _ in metas for c in per_part]
        labels = source_partitions(source, plan, len(counts), batch_time)
        return _Remote([r for r, _ in calls], (), batch_time, stacked=True, labels=labels), counts

    # -- moving records ------------------------------------------------------------------

    def _narrow(self, node: NarrowNode, parent: Any) -> Any:
        if isinstance(parent, Batch):
            return node.apply(parent)
        probe: Batch[Any] = Batch._lazy([[]], (), parent.t)
        got = node.apply(probe)
        if got._src is probe._src and got._parts is None and got._dead is None:  # only per-record ops: keep them lazy
            return parent.with_ops(parent.refs, parent.ops + got._ops)
        return node.apply(self._local(parent))  # dead letters (driver-side buffers): run here

    def _cache(self, out: Any) -> Any:
        """Run a shared result's pending ops once (where its records are)."""
        if isinstance(out, Batch):
            return out.cache()
        if out.ops and (out.whole_partitions() or not _per_partition(out.ops)):
            return out.with_ops([self._remote_fns["ops"].remote(out.ops, out.t, r) for r in out.refs], ())
        return out

    def _local(self, value: Batch[Any] | _Remote) -> Batch[Any]:
        """`value` as a Batch in the driver (fetching an actor output, its per-record ops run in tasks first)."""
        if isinstance(value, Batch):
            return value
        if value.local is not None:
            return value.local
        ops, refs = value.ops, value.refs
        if ops and (value.whole_partitions() or not _per_partition(ops)):
            refs = [self._remote_fns["ops"].remote(ops, value.t, r) for r in refs]
            ops = ()
        groups: list[list[list[Any]]] = self._get(refs)
        counts = {len(g) for g in groups}
        if value.stacked or len(counts) != 1:
            parts = [p for g in groups for p in g]
        else:  # partition j = every actor's partition j
            parts = [[x for g in groups for x in g[j]] for j in range(counts.pop())]
        labels = value.labels if value.labels is not None and len(value.labels) == len(parts) else None
        local: Batch[Any] = Batch._lazy(parts, ops, value.t, labels)
        value.local = local
        return local

    def _step(self, node: StatefulNode, t: int, parent: Any) -> _Remote | None:
        """Shuffle `parent` to the partition actors of `node` and run its step there."""
        n = self._count
        per_host: list[list[Any]] = [[] for _ in range(n)]
        first: list[Any] = []  # the map side's results in the actors: their errors come before the steps'
        forget, self._forget = self._forget, False  # the steps forget the last batch's changes first
        hosted = None
        sent = None if parent is None else self._take_sent(node.name, t, parent)
        ahead, self._ahead = (self._ahead, None) if node.name == self._last_partitioned else (None, self._ahead)
        if ahead is not None and sent is not None:
            # This batch's slices run already: plan, read and cut the next one now (its slices go out once this
            # batch's steps are submitted, `_release_sent`), off the path between this batch's last slice and its steps.
            self._holding = True
            try:
                ahead()
            except BaseException:
                self._settle(sent.refs())
                raise
            finally:
                self._holding = False
            ahead = None
        if parent is not None:
            hosted = self._map_in_hosts(node.name, parent, t) if sent is None else self._finish_map(sent)
            self.sent_ahead += sent is not None
        if hosted is not None:
            per_host, first = hosted
        elif parent is not None:
            for buckets in self._shuffle(parent, t):
                for i in range(n):
                    per_host[i].append(buckets[i])
        present = parent is not None
        calls = [h.step.options(num_returns=2).remote(node.name, t, present, forget, *per_host[i]) for i, h in enumerate(self._actors)]
        try:  # one wait per batch: the map side and the steps were submitted together
            if ahead is not None:  # the next batch's map side is queued behind these steps while they run
                ahead()
            self._release_sent()
            got = self._get(first + [m for _, m in calls])
        except BaseException:
            self._settle(first + [r for refs in per_host for r in refs if not isinstance(r, int)] + [r for c in calls for r in c])
            raise
        metas: list[tuple[bool, list[Any], float]] = got[len(first) :]
        maps: list[tuple[int, float, float]] = got[: len(first)]
        mapped = sum(m[0] for m in maps)
        if mapped:  # what the next batch's slices are cut by
            self._map_cost[node.name] = sum(m[1] for m in maps) * 1e3 / mapped
            if len(maps) >= n:  # slices 0..n-1: one per actor, the same size (`_slices`)
                skew = _drift(maps[:n])
                old = self._map_skew.get(node.name)  # smoothed: on a busy machine one batch's drift says little of the next's
                self._map_skew[node.name] = skew if old is None else (old + skew) / 2
        if isinstance(node, MapWithStateNode) and node.dead_letters is not None:
            for _, letters, _ in metas:
                node.dead_letters.records.extend(letters)
        if not metas[0][0]:
            return None
        return _Remote([r for r, _ in calls], (), t)

    def _map_in_hosts(self, name: str, parent: Any, t: int) -> tuple[list[list[Any]], list[Any]] | None:
        """Run a big driver-side batch's per-record chain and split in the partition actors; None when it does not apply.

        The batch is cut into contiguous slices (`_slices`) that the actors map
        (`PartitionHost.map_bucket`): each keeps its own partition's records and hands the
        others' buckets to their owners' steps as object refs. With more slices than actors
        the actors pull them as they finish (each has one slice running and the next one
        queued; the driver gives the next slice to the actor whose slice ended first), so an
        actor slowed down (a busy core) maps less of the batch. Each step gets every slice's
        bucket in slice order, whichever actor mapped it: a key's records arrive in batch
        order, as on the local executor. Per actor: the `step` parts (a slice it mapped
        itself as its number) and the map calls' results (to read before the steps: a user
        function's error raised there). Applies when every CPU of the cluster has an actor
        (else the shuffle tasks spread the chain over more CPUs), to a driver-side batch of
        at least `SMALL_BATCH` records whose pending operators are all per-record.
        """
        mapping = self._start_map(name, parent, t)
        return None if mapping is None else self._finish_map(mapping)

    def _start_map(self, name: str, parent: Any, t: int, *, give: bool = True) -> _Mapping | None:
        """Cut `parent` into slices and give each actor its first two (no wait; `give` False: later, `_give_first`).

        None when mapping in the actors does not apply.
        """
        n = self._count
        if not isinstance(parent, Batch) or n < self._cpus or parent._dead is not None or _per_partition(parent._ops):
            return None
        src = parent._src
        if sum(len(p) for p in src) < SMALL_BATCH:
            return None
        records = src[0] if len(src) == 1 else [x for p in src for x in p]  # partitions in order: a key's records keep theirs
        skew = self._map_skew.get(name)  # ms per record of a slice, recent batches: times an actor's share of this one
        cuts = _slices(len(records), n, self._map_cost.get(name), None if skew is None else skew * len(records) / n)
        mapping = _Mapping(name, t, parent, records, cuts, self.ray.cloudpickle.dumps(parent._ops))
        if give:
            self._give_first(mapping)
        return mapping

    def _give_first(self, m: _Mapping) -> None:
        """Give each actor two slices of `m` (no wait): the next one waits in the actor while one runs."""
        try:
            for s in range(min(len(m.cuts), 2 * self._count)):
                self._give(m, s % self._count)
        except BaseException:
            self._settle(m.refs())
            raise

    def _give(self, m: _Mapping, a: int) -> None:
        """Send slice number ``len(m.calls)`` of `m` to actor `a`."""
        n = self._count
        lo, hi = m.cuts[len(m.calls)]
        got = self._actors[a].map_bucket.options(num_returns=n).remote(m.name, m.t, len(m.calls), m.ops, Records(m.records[lo:hi]))
        m.calls.append(got if n > 1 else [got])
        m.owner.append(a)

    def _finish_map(self, m: _Mapping) -> tuple[list[list[Any]], list[Any]]:
        """Give `m`'s remaining slices to whichever actor ends a slice first; the steps' parts per actor, and the map results."""
        n = self._count
        if not m.calls:  # held back and never released (`send_ahead` while holding)
            self._give_first(m)
        if len(m.calls) < len(m.cuts):
            running = {m.calls[s][-1]: m.owner[s] for s in range(len(m.calls))}
            try:
                while len(m.calls) < len(m.cuts):
                    ready, _ = self.ray.wait(list(running), num_returns=1)
                    a = running.pop(ready[0])
                    self._give(m, a)
                    running[m.calls[-1][-1]] = a
            except BaseException:
                self._settle(m.refs())
                raise
        calls, owner = m.calls, m.owner
        # slice order: a key's records in order; a slice this actor mapped itself is kept there (its number)
        # (slice s's call returns the buckets of every partition but its actor's own, in order, then its numbers)
        per_host = [[s if owner[s] == i else calls[s][i if i < owner[s] else i - 1] for s in range(len(m.cuts))] for i in range(n)]
        return per_host, [c[-1] for c in calls]

    # -- sending the next batch ahead (`SendsAhead`) ------------------------------------

    def compute_with(self, t: int, inputs: dict[str, Batch[Any]], ahead: Callable[[], None]) -> dict[int, Batch[Any] | None]:
        """`compute`, calling `ahead` while the actors compute batch `t`.

        That is once the last partitioned operator's steps of batch `t` are submitted, before
        waiting for them; or, when its slices were sent ahead (they run already), before its
        remaining slices are given out, with the next batch's slices held back until the steps
        are submitted (an actor runs its calls in order: they must come after the steps).

        `ahead` (the scheduler) plans and reads the next batch and calls `send_ahead`: the
        actors find its map calls queued behind this batch's steps. Not called when no
        partitioned operator is fed by a source through per-record operators only (nothing
        could go out ahead: the next batch is planned when its turn comes, as without it).
        """
        self._ahead = ahead if self._sendable else None
        try:
            return self.compute(t, inputs)
        finally:
            self._ahead = None

    def send_ahead(self, t: int, inputs: dict[str, Batch[Any]]) -> None:
        """Queue the map side of batch `t` in the actors, behind the calls already sent (`compute` of `t` takes it up).

        Only the stateless part runs ahead: the per-record chain and the split by partition
        of each partitioned operator fed, through per-record operators only, by a driver-side
        input (`_start_map`; the first two slices per actor, the rest are given out by the
        batch's own `compute`). An actor runs its calls in order, so batch `t`'s steps, which
        change the state, still come after every call of the batch before (its delta
        included) and after the next `compute`'s own. Nothing else of batch `t` runs here.
        An error here (e.g. operators that cannot be pickled) sends nothing ahead: batch
        `t`'s own `compute` maps it and raises that error in its turn.
        """
        self._drop_sent()
        try:
            self._send_ahead(t, inputs)
        except Exception as exc:
            log.debug("batch %d ms is not sent ahead (its own compute maps it): %s", t, exc)
            self._drop_sent()

    def _send_ahead(self, t: int, inputs: dict[str, Batch[Any]]) -> None:
        values: dict[int, Any] = {}
        for node in self.nodes:
            if isinstance(node, SourceNode):
                got = inputs.get(node.source.name)
                if isinstance(got, Batch) and node.id not in self._shared:  # `compute` caches shared ones in the driver
                    values[node.id] = got
            elif isinstance(node, NarrowNode) and node.parents[0].id in values:
                out = self._narrow(node, values[node.parents[0].id])
                if isinstance(out, Batch) and out._dead is None and not _per_partition(out._ops) and node.id not in self._shared:
                    values[node.id] = out
            elif isinstance(node, StatefulNode) and node.name in self._partitioned and node.parents[0].id in values:
                mapping = self._start_map(node.name, values[node.parents[0].id], t, give=not self._holding)
                if mapping is not None:
                    self._sent[node.name] = mapping

    def _release_sent(self) -> None:
        """Give out the first slices of the next batch's map sides held back until this batch's steps were submitted."""
        for m in self._sent.values():
            if not m.calls:
                self._give_first(m)

    def _take_sent(self, name: str, t: int, parent: Any) -> _Mapping | None:
        """The map side of operator `name` sent ahead for batch `t`, if it is `parent`'s records with `parent`'s operators.

        The operators are pickled again and compared with what was sent: a function that reads
        driver-side state (a dict an output of the batch before changed, a value broadcast again)
        pickles differently now, and must see it as it is now, as on the local executor. Then
        the calls sent are read and the batch is mapped again (the new calls come after them
        in each actor and replace the buckets they kept: same operator, batch and slice keys).
        """
        m = self._sent.pop(name, None)
        if m is None:
            return None
        if m.t == t and isinstance(parent, Batch) and parent._src is m.parent._src and self.ray.cloudpickle.dumps(parent._ops) == m.ops:
            return m
        self._settle(m.refs())
        return None

    def _drop_sent(self, *, wait: bool = True) -> None:
        """Forget the map calls sent ahead (a failed try, another job): read their results (errors) and leave them.

        `wait` False (shutting down): not even read. They are queued behind steps that may
        still run (an interrupted batch) and their results no longer matter: the actors are
        killed, or (`keep_actors`) drop what these calls kept at the next `open` or step.
        """
        sent, self._sent = self._sent, {}
        if wait:
            self._settle([r for m in sent.values() for r in m.refs()])

    def _shuffle(self, parent: Any, t: int) -> list[list[Any]]:
        """Per chunk of `parent`, its records split by owning partition (lists, or object refs of them)."""
        n = self._count
        task = self._remote_fns["bucket"].options(num_returns=n) if n > 1 else self._remote_fns["bucket"]

        def submit(ops: tuple[Any, ...], parts: Any) -> list[Any]:
            got = task.remote(ops, t, n, parts)
            return list(got) if n > 1 else [got]

        if isinstance(parent, _Remote):
            if _per_partition(parent.ops) and not parent.whole_partitions():
                parent = self._local(parent)
            else:
                return [submit(parent.ops, r) for r in parent.refs]
        batch: Batch[Any] = parent
        if batch._dead is not None or _per_partition(batch._ops):
            batch.cache()  # dead letters go to driver-side buffers; per-partition ops need whole partitions
        src = batch._src
        size = sum(len(p) for p in src)
        if size < SMALL_BATCH:
            return [[Records(b) for b in bucket(batch, n)]]
        ops = batch._ops
        chunks: list[list[list[Any]]] = []
        for part in src:
            pieces = max(1, min(-(-len(part) // CHUNK_RECORDS), 2 * self._cpus))  # two tasks per CPU: stragglers even out
            step = -(-len(part) // pieces) if part else 0
            chunks.extend(Records([part[i * step : (i + 1) * step]]) for i in range(pieces))
        return [submit(ops, c) for c in chunks]

    def _state_items(self, node: Node) -> list[tuple[Any, Any]]:
        assert isinstance(node, StatefulNode)
        if node.name in self._driver:
            rt = self._driver[node.name]
            assert isinstance(rt, MapWithStateRuntime)
            return rt.state_items()
        groups = self._get([h.state_items.remote(node.name) for h in self._hosts])
        return [kv for g in groups for kv in g]


def _drift(maps: list[tuple[int, float, float]]) -> float:
    """How far apart the actors' equal first slices (dispatched together) ended, ms per record of a slice.

    `maps`: each actor's (input records, CPU ms, wall ms) of its first slice, the wall time
    measured on the actor's own host: clocks of different hosts are never compared.
    """
    walls = [m[2] for m in maps]
    return (max(walls) - min(walls)) / max(1, maps[0][0])


def _slices(size: int, n: int, us_per_record: float | None, skew_ms: float | None = None) -> list[tuple[int, int]]:
    """Bounds of the slices a batch of `size` records is mapped in by `n` actors, in order.

    One equal slice per actor when the per-record cost is not known yet (the operator's
    first batch), is under `BALANCE_US`, an actor's share would take less than
    `BALANCE_MS`, or the actors' equal shares are expected to end less than a piece
    (`PIECE_MS`) apart (`skew_ms`: measured on recent batches; None: not known). Else one
    big slice per actor, then small ones (each about `PIECE_MS` of work, at least
    `PIECE_RECORDS` records) that go to whichever actor ends first: one per actor and one
    per `PIECE_MS` of the expected skew (all `PIECES` per actor when it is not known), and
    never more than half of the batch. The actors then end within about a piece of each
    other although their speeds differ by up to the pieces' total. Each piece is a call to
    an actor, which costs the driver about a millisecond and the actor one more switch
    between calls: not worth it when the actors keep pace.
    """
    if (
        us_per_record is None
        or us_per_record < BALANCE_US
        or size * us_per_record / n < BALANCE_MS * 1e3
        or (skew_ms is not None and skew_ms < PIECE_MS)
    ):
        step = -(-size // n)
        return [(i * step, min(size, (i + 1) * step)) for i in range(n)]
    piece = max(PIECE_RECORDS, int(PIECE_MS * 1e3 / max(us_per_record, 1e-3)))
    wanted = PIECES * n if skew_ms is None else n + math.ceil(skew_ms / max(PIECE_MS, 1e-3))
    pieces = min(wanted, PIECES * n, size // (2 * piece))  # at least half of the batch in the big slices
    big = -(-(size - pieces * piece) // n)
    cuts = [min(size, i * big) for i in range(n + 1)] + [min(size, n * big + (i + 1) * piece) for i in range(pieces)]
    cuts[-1] = size
    return [(lo, hi) for lo, hi in pairwise(cuts) if hi > lo]


@contextmanager
def _keeping_sigterm() -> Iterator[None]:
    """Keep a SIGTERM handler the application installed across ``ray.init``, which sets its own (``sys.exit``).

    ``streamkeep run`` (or the application itself) stops a job gracefully on SIGTERM; Ray's
    handler would raise SystemExit in the middle of a batch instead. The default action is
    left to Ray's handler.
    """
    old = signal.getsignal(signal.SIGTERM) if threading.current_thread() is threading.main_thread() else None
    try:
        yield
    finally:
        if callable(old):
            signal.signal(signal.SIGTERM, old)


def _per_partition(ops: tuple[Any, ...]) -> bool:
    return any(name in _PER_PARTITION for name, _, _ in ops)


def _strip(node: StatefulNode) -> StatefulNode:
    """`node` without its upstream graph and initial state (what an actor needs to hold its partition)."""
    changes: dict[str, Any] = {"parents": ()}
    if hasattr(node, "initial"):
        changes["initial"] = ()
    return dataclasses.replace(node, **changes)


def _loopback_only(ray: Any) -> None:
    """Make a Ray started here use 127.0.0.1 for every socket (Ray picks the first interface's address otherwise)."""
    os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")  # read by the processes Ray starts
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    constants = sys.modules.get("ray._private.ray_constants")
    if constants is not None and os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] == "0":
        setattr(constants, "ENABLE_RAY_CLUSTER", False)  # noqa: B010 - read at import: this driver imported ray before the variable was set


class _Host(PartitionHost):
    """`PartitionHost` as a Ray actor (knows its node's address)."""

    def node_ip(self) -> str:
        """The address of the Ray node this actor runs on."""
        import ray

        return str(ray.util.get_node_ip_address())  # type: ignore[no-untyped-call]
