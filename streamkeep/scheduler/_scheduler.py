"""The batch loop: for each batch time, plan -> run -> commit, and recovery.

1. Plan: every source decides its input for T as data; with a checkpoint the
   plan is durable before anything runs.
2. Run: the executor computes the graph over exactly the planned input and
   runs the outputs (sinks get T, so replays are harmless).
3. Commit: changed state (deltas; a snapshot every N batches) is written, then
   one atomic commit record. Without a checkpoint, commit does nothing.

Recovery loads the newest readable commit, its snapshot and deltas, checks the
current graph against the stored description, and re-runs planned but
uncommitted batches with exactly their plans.
"""

from __future__ import annotations

import logging
import threading
import time
import warnings
from collections import deque
from typing import Any

from streamkeep import _faults
from streamkeep._version import __version__
from streamkeep.batch import Batch
from streamkeep.checkpoint import Checkpoint, CommitRecord, blob_path, log_path, plan_path
from streamkeep.checkpoint.storage import confine
from streamkeep.codec import UnsupportedValueError
from streamkeep.dstream._graph import Graph, SourceNode
from streamkeep.errors import CheckpointError, ConfigError, CorruptCheckpointError, StreamkeepWarning
from streamkeep.executors.local import LocalExecutor
from streamkeep.scheduler._compat import check_compatible, differences
from streamkeep.scheduler._events import (
    BatchInfo,
    BatchPlanned,
    BatchReplayed,
    LagWatch,
    SnapshotCompleted,
    StateSizer,
    batch_extra,
    emit,
    iso_ms,
)
from streamkeep.scheduler._observe import batch_info
from streamkeep.scheduler._state_io import Chain, delta_time, encode_state, load_chain
from streamkeep.sinks.base import FencedSink, FencingToken
from streamkeep.sources.base import Source, start_blob

log = logging.getLogger("streamkeep.scheduler")

#: Adaptive snapshots (snapshot_every=None): the first one after this many batches ...
FIRST_SNAPSHOT_AFTER = 20
#: ... and never more than this many batches apart (bounds the files a restart reads).
MAX_CHAIN = 500



class _MemoryBlobs:
    durable = False

    def __init__(self) -> None:
        self._d: dict[str, Any] = {}

    def put(self, name: str, data: Any) -> None:
        self._d[name] = data

    def get(self, name: str) -> Any:
        return self._d[name]

    def delete(self, name: str) -> None:
        self._d.pop(name, None)


class _CheckpointBlobs:
    durable = True

    def __init__(self, ckpt: Checkpoint) -> None:
        self._ckpt = ckpt

    def put(self, name: str, data: Any) -> None:
        try:
            self._ckpt.put_blob(name, data)
        except UnsupportedValueError as exc:
            msg = f"source data for blob {name!r} cannot be stored in the checkpoint: {exc}"
            raise CheckpointError(msg) from exc

    def get(self, name: str) -> Any:
        return self._ckpt.get_blob(name)

    def delete(self, name: str) -> None:
        self._ckpt.delete(blob_path(name))


class Scheduler:
    """Drives one job's batches (used by `StreamingContext`)."""

    def __init__(
        self,
        graph: Graph,
        *,
        checkpoint: Checkpoint | None,
        clock: Any,
        resume: bool,
        snapshot_every: int | None,
        keep_commits: int = 2,
        allow_state_loss: frozenset[str] = frozenset(),
        inline_delta_bytes: int = 4 * 1024,
        processes: int = 0,
    ) -> None:
        self.graph = graph
        self.ckpt = checkpoint
        self.clock = clock
        self.resume = resume
        self.snapshot_every = snapshot_every
        self._delta_bytes = 0  # state bytes written as deltas since the last snapshot
        self._snapshot_bytes: int | None = None  # size of the last snapshot this process wrote
        # At least two: the newest commit and one to fall back to if it is lost (keep_commits=1 keeps two).
        self.keep_commits = max(2, keep_commits)
        self.allow_state_loss = allow_state_loss
        self.inline_delta_bytes = inline_delta_bytes
        self.interval = graph.batch_interval_ms
        self.processes = processes
        self.executor = LocalExecutor(processes)
        self.sources: list[Source] = []
        self.sinks: list[Any] = []
        self.last_time: int | None = None
        self.zero_ms: int | None = None
        self.listeners: list[Any] = []
        self._observing: list[Any] = []  # the listeners registered when the batch in progress began
        self._started: tuple[int, int] = (0, 0)  # (submission, processing start) of the batch in progress
        self.batches_done = 0
        self._pending: list[tuple[int, dict[str, Any]]] = []
        self._chains: dict[str, Chain] = {}
        self._since_snapshot = 0
        self._snap_thread: threading.Thread | None = None
        self._snap_done: dict[str, tuple[int, str]] = {}
        self._snap_error: BaseException | None = None
        self._retained: deque[tuple[int, int, set[str]]] = deque()
        self._plan_blobs: dict[int, list[str]] = {}
        self._plans_written: deque[int] = deque()
        self._prepared = False
        self._description: dict[str, Any] = {}
        self._reset_sources: set[str] = set()
        self.restored = False
        # observability (events are built only when listeners exist; see _events.py)
        self.live = False  # start(): one batch per interval, so a growing scheduling delay means falling behind
        self.lag_watch = LagWatch(self.interval)
        self.sizer = StateSizer()
        self._t_plan_write = self._t_outputs = 0.0
        self._part_counts: dict[str, list[int]] = {}
        self._snap_started = False
        self._snap_sizes: dict[str, int] = {}
        self._snap_stats: tuple[int, float] = (0, 0.0)

    # -- start-up ------------------------------------------------------------------

    def prepare(self) -> None:
        """Claim and recover the checkpoint, open sources and sinks (once)."""
        if self._prepared:
            return
        g = self.graph
        needed = g.needed()
        if not any(True for _ in g.outputs()):
            msg = "the job has no output operations: add foreach_batch, pprint, save_as_text_files or write_to before starting"
            raise ConfigError(msg)
        self.sources = [n.source for n in needed if isinstance(n, SourceNode)]
        self._description = g.describe()
        ckpt = self.ckpt
        blobs: Any = _MemoryBlobs()
        if ckpt is not None:
            for src in self.sources:
                if not src.replayable and not getattr(src, "can_materialise", False):
                    msg = (
                        f"source {src.name!r} cannot replay its input after a crash, so it cannot be used with a "
                        f"checkpoint. Use a replayable source (rate_stream, text_file_stream, kafka_stream) or run "
                        f"without a checkpoint."
                    )
                    raise ConfigError(msg)
            ckpt.claim(owner=f"streamkeep {__version__}", engine_version=__version__)
            blobs = _CheckpointBlobs(ckpt)
        try:
            if ckpt is not None:  # before any sink call (fresh jobs ask sinks for their markers below)
                token = FencingToken(*ckpt.fencing(), check=lambda: ckpt.ensure_owner("a sink's ownership check"))
                for n in needed:
                    if isinstance(getattr(n, "sink", None), FencedSink):
                        n.sink.set_fencing_token(token)  # type: ignore[attr-defined]
                for src in self.sources:  # a source's own dead-letter sink (text_file_stream on_error=) writes too
                    dead = getattr(src, "on_error", None)
                    if not callable(dead) and isinstance(dead, FencedSink):
                        dead.set_fencing_token(token)
            for src in self.sources:
                if hasattr(src, "set_batch_interval_ms"):
                    src.set_batch_interval_ms(self.interval)
                src.open(blobs)
            zero = self._recover() if ckpt is not None else None
            if zero is None:
                now = int(self.clock.now_ms())
                zero = self._after_sink_markers(now // self.interval * self.interval, needed)
                self.last_time = zero
                self.executor.open(g, zero)
                for rt in self.executor.runtimes.values():
                    rt.seed()
            self.zero_ms = zero
            for n in needed:
                sink = getattr(n, "sink", None)
                if sink is not None:
                    sink.open()
                    self.sinks.append(sink)
        except BaseException:
            self.close()
            raise
        self._prepared = True

    def _after_sink_markers(self, zero: int, needed: Any) -> int:
        """Start a fresh job after the last batch time its sinks already applied.

        Sinks with a marker (RedisSink, KafkaSink: ``last_batch()``) skip every batch
        time not after it. A fresh job (no checkpoint, or a new one) whose batch times
        reached back to the marker -- e.g. after ``run()`` ran a backfill ahead of the
        clock -- would lose those batches silently; start after the marker instead.
        """
        latest, who = None, ""
        for n in needed:
            sink = getattr(n, "sink", None)
            last_batch = getattr(sink, "last_batch", None)
            t = last_batch() if callable(last_batch) else None
            if isinstance(t, int) and (latest is None or t > latest):
                latest, who = t, getattr(sink, "name", "?")
        if latest is None or latest < zero + self.interval:
            return zero
        shifted = latest // self.interval * self.interval
        log.warning(
            "sink %r already applied batch %d ms, not before this fresh job's first batch %d ms; the job starts at "
            "batch %d ms instead, so that the sink does not skip its batches",
            who,
            latest,
            zero + self.interval,
            shifted + self.interval,
        )
        return shifted

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
                self._adopt_plans(None, plan_times)
                first = plan_times[0]
                zero = first - self.interval
                self.last_time = zero
                self.executor.open(self.graph, zero)
                for rt in self.executor.runtimes.values():
                    rt.seed()
                self._sweep(None)
                return zero
            self._sweep(None)  # a crash before the first plan may have left blobs and temp files
            return None
        if not self.resume:
            msg = (
                f"checkpoint {ckpt.url} already holds a committed state (batch "
                f"{commits[0].batch_time} ms). Use StreamingContext.get_or_create(url, setup) to resume it, "
                f"or delete it (or pick a new URL) to start fresh."
            )
            raise CheckpointError(msg)
        check_compatible(commits[0].data.get("graph", {}), self._description, self.allow_state_loss, ckpt.url)
        errors = []
        for i, rec in enumerate(commits):
            try:
                self._load(rec)
            except CorruptCheckpointError as exc:
                errors.append(exc)
                log.warning("commit %d is not usable (%s); falling back to an older commit", rec.seq, exc)
                continue
            skipped = sorted(seq for seq in ckpt.unreadable if seq > rec.seq)
            if errors:
                warnings.warn(
                    f"checkpoint {ckpt.url}: the newest commit could not be loaded ({errors[0]}); recovered from the "
                    f"older commit of batch {rec.batch_time} ms and will replay the batches after it from their plans",
                    StreamkeepWarning,
                    stacklevel=2,
                )
            elif skipped:  # a damaged record newer than the commit used: a claim, or a commit it falls back from
                warnings.warn(
                    f"checkpoint {ckpt.url}: log record {log_path(skipped[0])} is unreadable ({ckpt.unreadable[skipped[0]]}); "
                    f"recovered from the newest readable commit, of batch {rec.batch_time} ms (log record {rec.seq}). "
                    f"If the damaged record was a commit, the batches after {rec.batch_time} ms are replayed from their plans",
                    StreamkeepWarning,
                    stacklevel=2,
                )
            # The next older commit stays, with everything its replay needs: the fallback if this one is lost.
            prev = commits[i + 1] if i + 1 < len(commits) else None
            self._retained.clear()
            if prev is not None:
                try:
                    self._retained.append((prev.seq, prev.batch_time, prev.files()))
                except CorruptCheckpointError:
                    prev = None
            self._retained.append((rec.seq, rec.batch_time, rec.files()))
            self._adopt_plans(rec, [t for t in plan_times if t > rec.batch_time], prev)
            self._sweep(rec, prev)
            self.restored = True
            return int(rec.data["zero_ms"])
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
        ex = LocalExecutor(self.processes)
        ex.open(self.graph, zero)
        chains: dict[str, Chain] = {}
        stored_state: dict[str, Any] = data.get("state", {})
        # Operators whose kind or shape changed (allowed by allow_state_loss) start over: never load their old state.
        diff = differences(data.get("graph", {}), self._description)
        changed = {n for n, _ in diff["incompatible"]}
        self._reset_sources = {n for n, _ in diff["sources_incompatible"]}  # allowed to lose their position
        for name, rt in ex.runtimes.items():
            chain_data = None if name in changed else stored_state.get(name)
            if chain_data is None:
                rt.seed()  # a new (or reshaped) stateful operator starts from its initial state
                continue
            load_chain(ckpt, rt, chain_data)
            chains[name] = Chain(
                chain_data.get("snapshot"),
                int(chain_data.get("snapshot_time", 0)),
                [(delta_time(r), r) for r in chain_data.get("deltas", [])],
            )
        for src in self.sources:
            pos = None if src.name in self._reset_sources else data.get("positions", {}).get(src.name)
            if pos is not None:
                src.restore(pos)
        self.executor = ex
        self._chains = chains
        # Resume the snapshot cadence: a job restarted often must still snapshot (bounded chains).
        self._since_snapshot = max((len(c.deltas) for c in chains.values()), default=0)
        self.last_time = rec.batch_time
        self.batches_done = 0

    def _adopt_plans(self, rec: CommitRecord | None, times: list[int], prev: CommitRecord | None = None) -> None:
        ckpt = self.ckpt
        assert ckpt is not None
        if rec is not None and prev is not None:
            # Plans after the fallback commit `prev` stay (with their blobs) until retention drops `prev`.
            for t in ckpt.plan_times():
                if prev.batch_time < t <= rec.batch_time:
                    self._plans_written.append(t)
                    try:
                        self._plan_blobs[t] = list(ckpt.read_plan(t).get("blobs", []))
                    except CheckpointError as exc:  # only the fallback needs it; recovery goes on
                        log.warning("the plan of batch %d ms (needed only to fall back to batch %d ms) is unreadable: %s", t, prev.batch_time, exc)
        pending = []
        for t in times:
            plan = ckpt.read_plan(t)
            self._check_file_plans(t, plan)
            for name in self._reset_sources:  # planned by a source of another kind: replay without it
                plan.get("sources", {}).pop(name, None)
                plan.get("positions", {}).pop(name, None)
            pending.append((t, plan))
            self._plans_written.append(t)
            self._plan_blobs[t] = list(plan.get("blobs", []))
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

    def _sweep(self, rec: CommitRecord | None, prev: CommitRecord | None = None) -> None:
        """Delete what neither the commit `rec`, nor the fallback `prev`, nor a pending plan needs.

        Only files of the checkpoint's own naming are deleted: log records by number, plans
        by batch time, state files named ``<T>.delta``/``<T>.snap``, blobs, temp files.
        """
        ckpt = self.ckpt
        assert ckpt is not None
        st = ckpt.storage
        st.remove_temp_files("")
        deleted = 0

        def delete(rel: str) -> None:
            nonlocal deleted
            st.delete(rel)
            deleted += 1
            if deleted == 1:
                _faults.point("recovery.mid_sweep")

        keep = rec.files() if rec is not None else set()
        if prev is not None:
            keep |= prev.files()
        oldest = prev if prev is not None else rec
        committed = oldest.batch_time if oldest is not None else -1
        for d in st.list_dirs("state"):
            for n in st.list(f"state/{d}"):
                rel = f"state/{d}/{n}"
                stem, _, ext = n.partition(".")
                if not (stem.isdigit() and len(stem) == 15 and ext in ("delta", "snap")):
                    log.warning("leaving %s alone: not a state file streamkeep writes", st.path(rel))
                elif rel not in keep:
                    delete(rel)
        if oldest is not None:
            for seq in ckpt.log_seqs():
                if seq < oldest.seq:
                    delete(log_path(seq))
        pending_blobs = {b for blobs in self._plan_blobs.values() for b in blobs} | self._start_blobs(rec)
        for t in ckpt.plan_times():
            if t <= committed:
                delete(plan_path(t))
        for n in st.list("blobs"):
            if n not in {blob_path(b).split("/", 1)[1] for b in pending_blobs}:
                delete(f"blobs/{n}")

    def _start_blobs(self, rec: CommitRecord | None) -> set[str]:
        """Start blobs (`start_blob`) still needed: of sources no commit or pending plan gives a position."""
        positioned = set(rec.data.get("positions", {})) if rec is not None else set()
        for _, plan in self._pending:
            positioned |= set(plan.get("positions", {}))
        positioned -= self._reset_sources
        return {start_blob(src.name) for src in self.sources if src.name not in positioned}

    # -- the loop --------------------------------------------------------------------

    def next_time(self) -> int:
        """The next batch time to run."""
        if self._pending:
            return self._pending[0][0]
        assert self.last_time is not None
        return self.last_time + self.interval

    def run_next(self) -> int:
        """Plan (or take the pending plan), run and commit the next batch; return its time."""
        self._check_snapshot_error()
        submitted = int(self.clock.now_ms())
        # Decided once per batch: a listener added while this batch runs (the list is shared) starts with the next one.
        listeners = self._observing = list(self.listeners)
        p0 = time.perf_counter()
        # bytes this batch writes to the checkpoint count from here: its plan and blobs included
        written = self.ckpt.written_bytes() if listeners and self.ckpt is not None else 0
        replay = bool(self._pending)
        self._snap_started = False
        if self._pending:
            t, plan = self._pending.pop(0)
            if not self._pending:  # the last replayed batch: continue after its plan
                for src in self.sources:
                    pos = plan.get("positions", {}).get(src.name)
                    if pos is not None:
                        src.restore(pos)
        else:
            t = self.next_time()
            plan = self._plan(t)
        start = int(time.time() * 1000)
        self._started = (submitted, start)  # for on_batch_started, told once the input is read
        p1 = time.perf_counter()
        if listeners:
            emit(listeners, "on_batch_planned", BatchPlanned(t, (p1 - p0) * 1e3, replay, [s.name for s in self.sources]))
            self.executor.timings = {}
        counts = self._run(t, plan)
        p2 = time.perf_counter()
        self._commit(t, plan)
        self.last_time = t
        self.batches_done += 1
        end = int(time.time() * 1000)
        p3 = time.perf_counter()
        for src in self.sources:
            observe = getattr(src, "observe", None)
            if observe is not None:  # backpressure: sources may size the next plans
                observe(t, end - start, counts.get(src.name, 0), scheduling_delay_ms=max(0, submitted - t))
        if self.live:
            self.lag_watch.observe(t, max(0, start - t))
        if listeners:
            info = batch_info(self, t, plan, counts, submitted, start, end, (p0, p1, p2, p3), written, replay)
            emit(listeners, "on_batch_completed", info)
            if replay:
                emit(listeners, "on_batch_replayed", BatchReplayed(t, info.num_records, len(self._pending)))
        elif log.isEnabledFor(logging.DEBUG):
            log.debug("batch %s done: %d records in %d ms", iso_ms(t), sum(counts.values()), end - start, extra=batch_extra(t))
        if replay and not self._pending:
            log.info("replayed the planned batches; last one %s", iso_ms(t), extra=batch_extra(t))
        return t

    def _tell_started(self, t: int, num_records: int) -> None:
        emit(self._observing, "on_batch_started", BatchInfo(t, num_records, *self._started, processing_end_ms=-1))

    def _plan(self, t: int) -> dict[str, Any]:
        if self.ckpt is not None:  # sources may write blobs while planning
            self.ckpt.ensure_owner(f"planning batch {t} ms")
        plans: dict[str, Any] = {}
        for src in self.sources:
            plans[src.name] = src.plan(t)
        positions = {src.name: src.position() for src in self.sources}
        plan: dict[str, Any] = {"batch_time": t, "sources": plans, "positions": positions}
        blobs = [b for p in plans.values() if isinstance(p, dict) for b in p.get("blobs", ())]
        if blobs:
            plan["blobs"] = blobs
            self._plan_blobs[t] = blobs
        if self.ckpt is not None:
            self.ckpt.ensure_owner(f"writing the plan of batch {t} ms")
            _faults.point("plan.before_write")
            w0 = time.perf_counter()
            try:
                self.ckpt.write_plan(t, plan)
            except UnsupportedValueError as exc:
                msg = f"the plan of batch {t} ms cannot be stored in the checkpoint: {exc}"
                raise CheckpointError(msg) from exc
            self._plans_written.append(t)
            self._t_plan_write = time.perf_counter() - w0
            _faults.point("plan.after_write")
        return plan

    def _run(self, t: int, plan: dict[str, Any]) -> dict[str, int]:
        """Read the planned input, compute the graph, run the outputs; records per source."""
        inputs: dict[str, Batch[Any]] = {}
        planned = plan["sources"]
        counts: dict[str, int] = {}
        for src in self.sources:
            if src.name in planned:
                parts = src.read(planned[src.name], t)
            else:  # a source added since this batch was planned: no input for it
                parts = [[]]
            per_part = [len(p) for p in parts]
            counts[src.name] = sum(per_part)
            self._part_counts[src.name] = per_part
            inputs[src.name] = Batch(parts, t)
        _faults.point("run.after_read")
        if self._observing:
            self._tell_started(t, sum(counts.values()))
        results = self.executor.compute(t, inputs)
        c1 = time.perf_counter()
        if self.ckpt is not None:
            self.ckpt.ensure_owner(f"the outputs of batch {t} ms")
        self.executor.run_outputs(t, results)
        self._t_outputs = time.perf_counter() - c1
        return counts

    def _commit(self, t: int, plan: dict[str, Any]) -> None:
        ckpt = self.ckpt
        if ckpt is None:
            for rt in self.executor.runtimes.values():
                rt.forget_changes()  # nothing to persist: keep change tracking bounded
            self._after_commit(plan)
            return
        for name, rt in self.executor.runtimes.items():
            chain = self._chains.setdefault(name, Chain())
            delta = rt.delta()
            if delta is not None:
                payload = encode_state(rt.node, delta)
                self._delta_bytes += len(payload)
                inline_bytes = sum(len(e["data"]) for _, e in chain.deltas if isinstance(e, dict))
                # Small deltas ride in the commit record (no extra file or fsync), as long as the
                # chain's inline total stays small: every commit record repeats the whole chain.
                if inline_bytes + len(payload) <= self.inline_delta_bytes:
                    chain.deltas.append((t, {"t": t, "codec": rt.node.codec, "data": payload}))
                else:
                    chain.deltas.append((t, ckpt.write_state(name, t, "delta", payload, rt.node.codec)))
                _faults.point("state.mid_write")
        _faults.point("state.after_write")
        self._since_snapshot += 1
        due = self._snapshot_due()
        # A snapshot still in flight when the next one is due is waited for: chains stay
        # bounded however slow the storage is.
        self._adopt_snapshots(wait=due)
        if due and self._snap_thread is None:
            self._start_snapshot(t)
        record = {
            "batch_time": t,
            "zero_ms": self.zero_ms,
            "batch_interval_ms": self.interval,
            "positions": plan["positions"],
            "state": {name: c.as_data() for name, c in self._chains.items()},
            "graph": self._description,
            "engine_version": __version__,
            "written_ms": int(time.time() * 1000),
        }
        seq = ckpt.commit(record)
        self._after_commit(plan)
        self._retain(seq, t, CommitRecord(seq, record).files())

    def _after_commit(self, plan: dict[str, Any]) -> None:
        if self._pending:
            return
        for src in self.sources:
            commit = getattr(src, "commit_offsets", None)
            if commit is not None:
                try:
                    commit(plan["positions"].get(src.name))
                except Exception as exc:  # informational only: the checkpoint holds the truth
                    log.warning("could not commit the positions of source %r to its broker: %s", src.name, exc)
                _faults.point("source.after_offset_commit")

    # -- snapshots -------------------------------------------------------------------

    def _snapshot_due(self) -> bool:
        """Is a full snapshot due after this batch?

        With ``snapshot_every`` set: every that many batches. By default (adaptive): once
        the deltas written since the last snapshot reach half its size, so the bytes a
        batch costs follow the keys that changed, not the size of the state, and a restart
        reads at most 1.5 snapshots' worth; the first snapshot after
        `FIRST_SNAPSHOT_AFTER` batches, and never more than `MAX_CHAIN` batches apart.
        """
        if self.snapshot_every is not None:
            return self._since_snapshot >= self.snapshot_every
        if self._since_snapshot >= MAX_CHAIN:
            return True
        if self._snapshot_bytes is None:
            return self._since_snapshot >= FIRST_SNAPSHOT_AFTER
        return self._delta_bytes * 2 >= self._snapshot_bytes

    def _start_snapshot(self, t: int) -> None:
        ckpt = self.ckpt
        assert ckpt is not None
        self._since_snapshot = 0
        payloads = {name: (rt.node.codec, encode_state(rt.node, rt.snapshot())) for name, rt in self.executor.runtimes.items()}
        self._delta_bytes = 0
        self._snapshot_bytes = sum(len(p) for _, p in payloads.values())
        self._snap_sizes = {name: len(p) for name, (_, p) in payloads.items()}
        self._snap_started = True
        self.sizer.from_snapshot(t, self._snap_sizes)

        def write() -> None:
            try:
                done = {}
                w0, b0 = time.perf_counter(), ckpt.written_bytes()
                for name, (codec, payload) in payloads.items():
                    rel = ckpt.write_state(name, t, "snap", payload, codec)
                    done[name] = (t, rel)
                    _faults.point("snapshot.mid_write")
                self._snap_stats = (ckpt.written_bytes() - b0, (time.perf_counter() - w0) * 1e3)
                self._snap_done = done
            except BaseException as exc:
                self._snap_error = exc

        self._snap_thread = threading.Thread(target=write, name="streamkeep-snapshot", daemon=True)
        self._snap_thread.start()

    def _adopt_snapshots(self, wait: bool = False) -> None:
        th = self._snap_thread
        if th is None:
            return
        if wait:
            th.join()
        if th.is_alive():
            return
        self._snap_thread = None
        self._check_snapshot_error()
        snap_t = None
        for name, (t, rel) in self._snap_done.items():
            chain = self._chains.setdefault(name, Chain())
            chain.snapshot, chain.snapshot_time = rel, t
            chain.deltas = [(dt, r) for dt, r in chain.deltas if dt > t]
            snap_t = t
        self._snap_done = {}
        if snap_t is not None:
            nbytes, ms = self._snap_stats
            log.info("snapshot of batch %s written: %d bytes in %.1f ms", iso_ms(snap_t), nbytes, ms, extra=batch_extra(snap_t))
            if self.listeners:
                emit(self.listeners, "on_snapshot_completed", SnapshotCompleted(snap_t, nbytes, ms, dict(self._snap_sizes)))

    def _check_snapshot_error(self) -> None:
        err = self._snap_error
        if err is not None:
            self._snap_error = None
            msg = f"writing a state snapshot to the checkpoint failed: {err}"
            raise CheckpointError(msg) from err

    # -- retention -------------------------------------------------------------------

    def _retain(self, seq: int, t: int, files: set[str]) -> None:
        ckpt = self.ckpt
        assert ckpt is not None
        self._retained.append((seq, t, files))
        if len(self._retained) <= self.keep_commits:
            return
        old_seq, _, old_files = self._retained.popleft()
        oldest_seq, oldest_t, _ = self._retained[0]
        keep = set().union(*(f for _, _, f in self._retained))
        doomed = [f for f in old_files if f not in keep]
        doomed += [log_path(s) for s in range(old_seq, oldest_seq)]
        for pt in [pt for pt in self._plan_blobs if pt <= oldest_t]:
            doomed += [blob_path(b) for b in self._plan_blobs.pop(pt)]
        while self._plans_written and self._plans_written[0] <= oldest_t:
            doomed.append(plan_path(self._plans_written.popleft()))
        for i, rel in enumerate(doomed):
            ckpt.delete(rel)
            if i == 0:
                _faults.point("retention.mid_delete")

    # -- shutdown --------------------------------------------------------------------

    def drained(self) -> bool:
        """True when every finite source is exhausted and windows hold no input."""
        last = self.last_time if self.last_time is not None else 0  # restored on recovery, unlike runtime fields
        return (
            not self._pending
            and all(src.exhausted() for src in self.sources)
            and all(rt.drained(last) for rt in self.executor.runtimes.values())
        )

    def close(self) -> None:
        """Finish a snapshot in flight, close sinks and sources, release the checkpoint."""
        self.executor.close()
        try:
            if self._snap_thread is not None:
                self._snap_thread.join()
                self._snap_thread = None
        finally:
            for s in self.sinks:
                try:
                    s.close()
                except Exception as exc:
                    log.warning("closing sink %r failed: %s", getattr(s, "name", s), exc)
            for src in self.sources:
                try:
                    src.close()
                except Exception as exc:
                    log.warning("closing source %r failed: %s", src.name, exc)
            if self.ckpt is not None:
                self.ckpt.release()
