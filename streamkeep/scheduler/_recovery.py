"""Recovery, the start-up half of `Scheduler`: load the newest usable commit, replay its pending plans.

Loads the newest readable commit (falling back to older ones when its state is
damaged), checks the current graph against the stored description, restores
the stateful operators through the executor and the sources' positions, adopts
the planned but uncommitted batches (replayed with exactly their plans), and
sweeps what a crash left behind.
"""

from __future__ import annotations

import logging
import warnings
from typing import Any

from streamkeep.checkpoint import Checkpoint, CommitRecord, Retention, log_path, plan_path
from streamkeep.checkpoint.storage import confine
from streamkeep.dstream._graph import Graph, MapWithStateNode, StatefulNode
from streamkeep.errors import CheckpointError, CorruptCheckpointError, IncompatibleCheckpointError, StreamkeepWarning, WorkerLostError
from streamkeep.executors.base import Executor, KeyPartitioned, StateOwners
from streamkeep.scheduler._compat import changed_feeds, check_compatible, differences
from streamkeep.scheduler._events import iso_ms
from streamkeep.scheduler._state_io import Chain, read_chain
from streamkeep.scheduler._state_writer import StateWriter
from streamkeep.sources.base import Source, start_blob

log = logging.getLogger("streamkeep.scheduler")


#: What to do when no commit can be loaded because the newest one's graph file is missing or damaged.
GRAPH_FIX_HINT = (
    "The job's code differs from the code that wrote that commit, so its graph description is needed to check the "
    "change. To fix it: start the job once with the code that wrote this checkpoint (that writes the file again: its "
    "name is the hash of that code's graph description), then with the new code; or put the file back from a copy of "
    "the checkpoint; or, to give up the job's state, start the new code on a new checkpoint URL."
)


class Recovery:
    """Recovery steps of `Scheduler` (a base class: it works on the scheduler's fields)."""

    graph: Graph
    ckpt: Checkpoint | None
    executor: Executor
    stateful: dict[str, StatefulNode]
    retention: Retention | None
    writer: StateWriter | None
    sources: list[Source]
    interval: int
    resume: bool
    allow_state_loss: frozenset[str]
    last_time: int | None
    zero_ms: int | None
    batches_done: int
    restored: bool
    _pending: list[tuple[int, dict[str, Any]]]
    _description: dict[str, Any]
    _reset_sources: set[str]

    def _open_executor(self, zero: int, restore: Any = None) -> None:
        """Open the executor at `zero`; seed every stateful operator `restore(name)` does not restore."""
        ex = self.executor
        ex.open(self.graph, zero)
        for name in ex.operators():
            if restore is None or not restore(name):
                ex.seed(name)

    def _recover(self) -> int | None:
        ckpt = self.ckpt
        assert ckpt is not None
        commits = ckpt.commits()
        plan_times = ckpt.plan_times()
        if not commits and ckpt.unreadable:  # never start over when the commits may just be unreadable
            seq, exc = min(ckpt.unreadable.items())
            msg = f"checkpoint {ckpt.url}: no readable commit record; {log_path(seq)} is damaged ({exc})"
            raise CorruptCheckpointError(msg) from exc
        if not commits and (signs := ckpt.lost_history()):  # never start over when commits were lost
            msg = (
                f"checkpoint {ckpt.url} holds no commit record, but it once did: {'; '.join(signs)}. Its commit "
                f"records were deleted, so starting over would silently lose the job's state and reprocess its "
                f"input. Put the missing log/ records back (from a backup or copy of the checkpoint), or, to give "
                f"the state up, move this checkpoint away and start the job on a new checkpoint URL."
            )
            raise CorruptCheckpointError(msg)
        if not commits:
            if plan_times:  # crashed before the first commit: start over from those plans
                self._adopt_plans(plan_times)
                first = plan_times[0]
                zero = first - self.interval
                self.last_time = zero
                self._open_executor(zero)
                self._sweep(None, None)
                return zero
            self._sweep(None, None)  # a crash before the first plan may have left blobs and temp files
            return None
        if not self.resume:
            msg = (
                f"checkpoint {ckpt.url} already holds a committed state (batch "
                f"{commits[0].batch_time} ms). Use StreamingContext.get_or_create(url, setup) (a PySpark "
                f"program: StreamingContext.getOrCreate(checkpointPath, setupFunc)) to resume it, "
                f"or delete it (or pick a new URL) to start fresh."
            )
            raise CheckpointError(msg)
        ckpt.graph_ref(self._description)  # a commit naming the current graph needs no read of its file
        errors = []
        graph_unreadable = False  # the newest commit's graph file (which only changed code needs to read)
        for i, rec in enumerate(commits):
            try:
                # The code-change check runs against the graph in force for the commit loaded (the newest, unless its
                # graph file or state is damaged: then the fallback's own graph), before anything runs.
                try:
                    graph = ckpt.graph_of(rec)
                except CorruptCheckpointError:
                    graph_unreadable = graph_unreadable or i == 0
                    raise
                check_compatible(graph, self._description, self.allow_state_loss, ckpt.url, frozenset(self.graph.pinned))
                self._load(rec)
            except CorruptCheckpointError as exc:
                errors.append(exc)
                log.warning("commit %d is not usable (%s); falling back to an older commit", rec.seq, exc)
                continue
            skipped = sorted(seq for seq in ckpt.unreadable if seq > rec.seq)
            if errors:
                warnings.warn(
                    f"checkpoint {ckpt.url}: the newest commit could not be loaded ({errors[0]}); recovered from the "
                    f"older commit of batch {rec.batch_time} ms ({iso_ms(rec.batch_time)}) and will replay the batches after it from their plans",
                    StreamkeepWarning,
                    stacklevel=2,
                )
            elif skipped:  # a damaged record newer than the commit used: a claim, or a commit it falls back from
                warnings.warn(
                    f"checkpoint {ckpt.url}: log record {log_path(skipped[0])} is unreadable ({ckpt.unreadable[skipped[0]]}); "
                    f"recovered from the newest readable commit, of batch {rec.batch_time} ms ({iso_ms(rec.batch_time)}, log record {rec.seq}). "
                    f"If the damaged record was a commit, the batches after {rec.batch_time} ms are replayed from their plans",
                    StreamkeepWarning,
                    stacklevel=2,
                )
            # The next older commit stays, with everything its replay needs: the fallback if this one is lost.
            assert self.retention is not None
            prev = self.retention.recovered(rec, commits[i + 1] if i + 1 < len(commits) else None)
            ckpt.check_plans_after(rec.batch_time)  # a damaged plan log left out as committed must not hold one of them
            self._adopt_plans([t for t in plan_times if t > rec.batch_time])
            self._sweep(rec, prev)
            self.restored = True
            return int(rec.data["zero_ms"])
        if graph_unreadable:
            msg = f"checkpoint {ckpt.url}: {errors[0]} {GRAPH_FIX_HINT}"
            raise CorruptCheckpointError(msg) from errors[0]
        raise errors[0]

    def _load(self, rec: CommitRecord) -> None:
        ckpt = self.ckpt
        assert ckpt is not None
        rec.files()  # every chain names only its operator's own state files, or CorruptCheckpointError
        data = rec.data
        if "zero_ms" not in data:
            msg = f"checkpoint {ckpt.url}: commit record {log_path(rec.seq)} has no time origin (zero_ms)"
            raise CorruptCheckpointError(msg)
        zero = int(data["zero_ms"])
        chains: dict[str, Chain] = {}
        stored_state: dict[str, Any] = data.get("state", {})
        # Operators whose kind or shape changed (allowed by allow_state_loss) start over: never load their old state.
        stored_graph = ckpt.graph_of(rec)
        diff = differences(stored_graph, self._description)
        # Unnamed ones whose inputs changed (allowed by allow_state_loss: check_compatible passed) hold another's state.
        swapped = changed_feeds(stored_graph, self._description, frozenset(self.graph.pinned))
        changed = {n for n, _ in diff["incompatible"]} | {n for n, _, _ in swapped["operators"] + swapped["unmatched"]}
        # allowed to lose their position
        self._reset_sources = {n for n, _ in diff["sources_incompatible"]} | {n for n, _, _ in swapped["sources"]}

        ex = self.executor
        owners = ex if isinstance(ex, StateOwners) else None

        def restore(name: str) -> bool:  # False: a new (or reshaped) stateful operator starts from its initial state
            chain_data = None if name in changed else stored_state.get(name)
            if chain_data is None:
                return False
            node = self.stateful[name]
            if owners is not None and name in owners.owned():  # the workers read their keys' files themselves
                _check_partition_hash(ckpt.url, rec.seq, data.get("partitioning"), ex)
                owners.restore_files(name, node.codec, chain_data)
            else:
                # Only map_with_state without a timeout looks keys up lazily (MapWithStateRuntime.load); the
                # others take a dict, which the columnar decoding builds directly.
                lazy = isinstance(node, MapWithStateNode) and node.timeout_ms is None
                ex.restore(name, *read_chain(ckpt, node.codec, chain_data, lazy=lazy))
            chains[name] = Chain.from_data(chain_data)
            return True

        self._open_executor(zero, restore)
        for src in self.sources:
            pos = None if src.name in self._reset_sources else data.get("positions", {}).get(src.name)
            if pos is not None:
                src.restore(pos)
        assert self.writer is not None
        self.writer.restored(chains)
        self.last_time = rec.batch_time
        self.batches_done = 0

    def _reload_lost(self, t: int, plan: dict[str, Any], exc: WorkerLostError, attempt: int, attempts: int) -> None:
        """After a worker died in batch `t`: reopen the executor with the newest commit's state, sources after `plan`.

        Raises `exc` again when there is no checkpoint to reload from or after the last attempt.
        """
        ckpt, writer = self.ckpt, self.writer
        if ckpt is None or writer is None:
            msg = f"{exc} The job has no checkpoint, so the lost state cannot be restored; run it with a checkpoint to survive this."
            raise WorkerLostError(msg) from exc
        if attempt >= attempts:
            msg = f"batch {t} ms lost a worker {attempts} times in a row; the job stops (the batch is replayed at the next start): {exc}"
            raise WorkerLostError(msg) from exc
        log.warning("batch %s ms: %s; reloading the state of the last commit and running the batch again", t, exc)
        writer.adopt(wait=True)  # a snapshot in flight belongs to a committed batch
        done = self.batches_done
        commits = ckpt.commits()
        for left in range(attempts, 0, -1):  # a worker may die while the state is loaded too
            try:
                if commits:
                    self._load(commits[0])
                else:  # lost before the first commit: start over from the initial state
                    assert self.zero_ms is not None
                    self._open_executor(self.zero_ms)
                    writer.restored({})
                break
            except WorkerLostError as again:
                if left == 1:
                    msg = f"batch {t} ms lost a worker, and the state of the last commit could not be reloaded {attempts} times: {again}"
                    raise WorkerLostError(msg) from again
                log.warning("reloading the last commit for batch %s ms lost a worker again (%s); retrying", t, again)
        self.batches_done = done
        for src in self.sources:  # _load put them at the commit; this batch's plan is already made
            pos = plan.get("positions", {}).get(src.name)
            if pos is not None:
                src.restore(pos)

    def _adopt_plans(self, times: list[int]) -> None:
        """Replay the planned but uncommitted batches `times` with exactly their plans."""
        ckpt, retention = self.ckpt, self.retention
        assert ckpt is not None and retention is not None
        pending = []
        for t in times:
            plan = ckpt.read_plan(t)
            self._check_file_plans(t, plan)
            for name in self._reset_sources:  # planned by a source of another kind: replay without it
                plan.get("sources", {}).pop(name, None)
                plan.get("positions", {}).pop(name, None)
            pending.append((t, plan))
            retention.planned(t, list(plan.get("blobs", [])))
        if pending:  # durable before any replay writes outputs on them (see CheckpointStorage.sync)
            ckpt.storage.sync(sorted({ckpt.plan_file(t) for t, _ in pending}))
        self._pending = pending

    def _check_file_plans(self, t: int, plan: dict[str, Any]) -> None:
        """A pending text-file plan read back from the checkpoint names files inside its source's directory only."""
        planned = plan.get("sources", {})
        for src in self.sources:
            p = planned.get(src.name)
            if p is None or src.describe().get("kind") != "text_files":
                continue
            files = p.get("files") if isinstance(p, dict) else None
            bad = None if isinstance(files, list) else f"{files!r} is not a list of files"
            for entry in files or []:
                if bad:
                    break
                ok = isinstance(entry, list) and len(entry) == 2 and isinstance(entry[0], str) and type(entry[1]) is int and entry[1] >= 0
                try:
                    if not ok:
                        raise CorruptCheckpointError(repr(entry))
                    confine(entry[0])
                except CorruptCheckpointError:
                    bad = f"it names {entry!r}, which is not a [name, size] of a file inside the source's directory"
            if bad:
                msg = (
                    f"checkpoint {self.ckpt.url if self.ckpt else ''}: the plan of batch {t} ms ({plan_path(t)}) for "
                    f"text_file_stream {src.name!r} is corrupt: {bad}. Plans only ever name files the source listed in "
                    f"its directory, so the plan was altered; it is never read."
                )
                raise CorruptCheckpointError(msg)

    def _sweep(self, rec: CommitRecord | None, prev: CommitRecord | None) -> None:
        assert self.retention is not None
        self.retention.sweep(rec, prev, self._start_blobs(rec))

    def _start_blobs(self, rec: CommitRecord | None) -> set[str]:
        """Start blobs (`start_blob`) still needed: of sources no commit or pending plan gives a position."""
        positioned = set(rec.data.get("positions", {})) if rec is not None else set()
        for _, plan in self._pending:
            positioned |= set(plan.get("positions", {}))
        positioned -= self._reset_sources
        return {start_blob(src.name) for src in self.sources if src.name not in positioned}


def _check_partition_hash(url: str, seq: int, recorded: Any, ex: Executor) -> None:
    """Refuse a commit whose key partitions were cut with another hash than `ex` cuts them with.

    The workers read a partition file of their own partition count directly, so keys cut
    by another hash would silently land on partitions that do not own them.
    """
    stored = recorded.get("hash") if isinstance(recorded, dict) else None
    mine = ex.partitioning().get("hash") if isinstance(ex, KeyPartitioned) else None
    if stored is not None and stored != mine:
        msg = (
            f"checkpoint {url}: commit record {log_path(seq)} holds key partitions cut with the hash {stored!r}, "
            f"but this executor cuts them with {mine!r}, so their keys would load into partitions that do not own them. "
            "Restore this checkpoint with the streamkeep version that wrote it"
        )
        raise IncompatibleCheckpointError(msg)
