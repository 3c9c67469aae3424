"""The batch loop: for each batch time, plan -> run -> commit, and recovery.

1. Plan: every source decides its input for T as data; with a checkpoint the
   plan is durable before anything runs.
2. Run: the executor computes the graph over exactly the planned input and
   runs the outputs (sinks get T, so replays are harmless).
3. Commit: changed state (deltas; a snapshot every N batches) is written, then
   one atomic commit record. Without a checkpoint, commit does nothing.

The checkpoint's disk flushes are kept off the loop's critical path: the loop
encodes the plan and the batch's state delta and commit record itself (later
batches mutate the state), and two background lanes (`Lane`) write and fsync
them in order. A plan's flush overlaps the batch's compute and is waited for
before its outputs run; a batch's commit is written while the next batches run
(at most `COMMITS_IN_FLIGHT`; the loop waits when more would be). What must follow
a durable commit does: listeners' ``on_batch_completed``, a source's offset commit,
retention's deletions. A failed write stops the lanes and fails the job at the next
batch (or at stop); a crash with commits in flight replays their batches from their
plans, as any crash before a commit does.

When the loop runs batches back to back (``run(n)`` with batches left) and the executor
`SendsAhead`, the next batch is planned (durable first) and read while this one computes,
so the executor can queue its stateless work behind this batch's (`_look_ahead`); its
outputs and commit still follow this batch's, and a failure planning or reading it is
raised in its own turn (this batch still runs its outputs and commits).

Recovery loads the newest readable commit, its snapshot and deltas, checks the
current graph against the stored description, and re-runs planned but
uncommitted batches with exactly their plans.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from typing import Any

from streamkeep import _faults
from streamkeep._arrow import records_in
from streamkeep._util import gc_paused
from streamkeep._version import __version__
from streamkeep.batch import Batch
from streamkeep.checkpoint import Checkpoint, CheckpointBlobs, MemoryBlobs, Retention
from streamkeep.checkpoint._checkpoint import CommitRecord, graph_path
from streamkeep.codec import UnsupportedValueError
from streamkeep.dstream._graph import Graph, OutputNode, SourceNode, StatefulNode
from streamkeep.errors import CheckpointError, ConfigError, WorkerLostError
from streamkeep.executors.base import Executor, KeyPartitioned, RemoteInput, SendsAhead, StateOwners
from streamkeep.scheduler._committer import Lane
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
from streamkeep.scheduler._recovery import Recovery
from streamkeep.scheduler._state_io import Chain
from streamkeep.scheduler._state_writer import DeltaFile, StateWriter
from streamkeep.sinks.base import FencedSink, FencingToken, MarkedSink, SettlingSink, Sink
from streamkeep.sources.base import (
    Backpressured,
    BatchIntervalAware,
    DeadLettering,
    Materialisable,
    OffsetCommitting,
    RemotelyReadable,
    Source,
    source_partitions,
)

log = logging.getLogger("streamkeep.scheduler")

#: Runs of one batch when the executor keeps losing workers (`WorkerLostError`) before the job stops.
MAX_BATCH_ATTEMPTS = 3
#: Batches whose commit is being written at most; the batch loop waits before one more (back-pressure).
COMMITS_IN_FLIGHT = 2
#: The crash point reached when a batch's outputs ran while an earlier batch's commit was in flight.
OVERTAKEN = "commit.overtaken"


class Scheduler(Recovery):
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
        executor: Executor,
    ) -> None:
        self.graph = graph
        self.ckpt = checkpoint
        self.clock = clock
        self.resume = resume
        self.allow_state_loss = allow_state_loss
        self.interval = graph.batch_interval_ms
        self.executor = executor
        # Capabilities checked once: an isinstance against a runtime-checkable Protocol costs ~9 us, every batch.
        self._remote_input = executor if isinstance(executor, RemoteInput) else None
        self._key_partitioned = executor if isinstance(executor, KeyPartitioned) else None
        self._sends_ahead = executor if isinstance(executor, SendsAhead) else None
        #: set by the loop before each batch: the batch after it certainly runs next (run() with batches left),
        #: so it may be planned and read while this one computes (`_look_ahead`)
        self.ahead_ok = False
        self._may_look_ahead = False  # the sources allow it (`prepare`)
        #: the next batch, planned (durable) and read while the last one computed: (time, plan, inputs, counts per partition, plan s)
        self._ahead: tuple[int, dict[str, Any], dict[str, Any], dict[str, list[int]], float] | None = None
        #: planning or reading the next batch ahead failed: (its time, the error), raised when its turn comes (`run_next`)
        self._ahead_failed: tuple[int, Exception] | None = None
        #: plan bytes written for a batch after the one running (its plan was written ahead): counted in its own turn
        self._plan_bytes_ahead: dict[int, int] = {}
        #: sources whose read writes to a dead-letter sink: a sink output, so their plan is durable first
        self._dead_lettering: set[str] = set()
        #: stateful operators by name (their codec encodes what the executor hands over)
        self.stateful: dict[str, StatefulNode] = {n.name: n for n in graph.needed() if isinstance(n, StatefulNode)}
        self.retention = Retention(checkpoint, keep_commits) if checkpoint is not None else None
        self.writer = (
            StateWriter(checkpoint, self.stateful, snapshot_every=snapshot_every, inline_delta_bytes=inline_delta_bytes, on_snapshot=self._snapshot_done)
            if checkpoint is not None
            else None
        )
        self.sources: list[Source] = []
        self._backpressured: list[tuple[str, Backpressured]] = []
        self._committing: list[tuple[str, OffsetCommitting]] = []
        self.sinks: list[Sink] = []
        #: sinks whose writes return before they are confirmed: each batch's commit settles them first
        self._settling: list[SettlingSink] = []
        self._outputs_error: BaseException | None = None  # what the last failed outputs raised (already told)
        self.last_time: int | None = None
        self.zero_ms: int | None = None
        self.listeners: list[Any] = []
        self._observing: list[Any] = []  # the listeners registered when the batch in progress began
        self._started: tuple[int, int] = (0, 0)  # (submission, processing start) of the batch in progress
        self.batches_done = 0
        self._pending: list[tuple[int, dict[str, Any]]] = []
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
        # Background writers of the checkpoint (see the module docstring): plans, and deltas + commit records.
        self._plan_lane = Lane("streamkeep-plan-writer", 2) if checkpoint is not None else None
        self._commit_lane = Lane("streamkeep-committer", COMMITS_IN_FLIGHT) if checkpoint is not None else None
        if self.writer is not None and self._commit_lane is not None:
            self.writer.ready = self._commit_lane.settled  # a snapshot merges delta files the committer writes
        # Fault tests only (crash point "commit.overtaken" armed): each commit waits for the next batch's outputs.
        self._hold = threading.Condition() if _faults.armed(OVERTAKEN) else None
        self._outputs_t = -1
        #: batches submitted to the committer, oldest first: (time, plan, offsets to commit?, BatchInfo or None, replay, listeners)
        self._awaiting: deque[tuple[int, dict[str, Any], bool, BatchInfo | None, bool, list[Any]]] = deque()
        #: the newest commit record this driver wrote (set in the committer lane; read at the stop, after it closed)
        self._last_record: tuple[int, dict[str, Any]] | None = None  # (seq, record): this driver's last commit

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
        self._backpressured = [(s.name, s) for s in self.sources if isinstance(s, Backpressured)]
        self._dead_lettering = {s.name for s in self.sources if isinstance(s, DeadLettering) and s.dead_letter_sink is not None}
        self._committing = [(s.name, s) for s in self.sources if isinstance(s, OffsetCommitting)]
        # Planning a batch early would size it before the last one's backpressure feedback, write its dead letters
        # before the last one's outputs (a sink's per-batch marker would then skip those), or wait for fetch tasks.
        self._may_look_ahead = self._sends_ahead is not None and not (
            self._backpressured or self._dead_lettering or any(isinstance(s, RemotelyReadable) for s in self.sources)
        )
        sinks = [n.sink for n in needed if isinstance(n, OutputNode) and n.sink is not None]
        self._description = g.describe()
        asked: list[Sink] = []  # sinks asked for their marker: last_batch() connects them before open()
        ckpt = self.ckpt
        blobs: Any = MemoryBlobs()
        if ckpt is not None:
            for src in self.sources:
                if not src.replayable and not (isinstance(src, Materialisable) and src.can_materialise):
                    msg = (
                        f"source {src.name!r} cannot replay its input after a crash, so it cannot be used with a "
                        f"checkpoint. Use a replayable source (rate_stream, text_file_stream, kafka_stream) or run "
                        f"without a checkpoint."
                    )
                    raise ConfigError(msg)
            ckpt.claim(owner=f"streamkeep {__version__}", engine_version=__version__)
            blobs = CheckpointBlobs(ckpt)
        try:
            if isinstance(self.executor, StateOwners):  # its workers write their state files there (checked at open)
                self.executor.attach_checkpoint(*((ckpt.url, ckpt.storage.storage_options) if ckpt is not None else (None, None)))
            if ckpt is not None:  # before any sink call (fresh jobs ask sinks for their markers below)
                token = FencingToken(*ckpt.fencing(), check=lambda: ckpt.ensure_owner("a sink's ownership check"))
                for sink in sinks:
                    if isinstance(sink, FencedSink):
                        sink.set_fencing_token(token)
                for src in self.sources:  # a source's own dead-letter sink writes too
                    if isinstance(src, DeadLettering) and isinstance(src.dead_letter_sink, FencedSink):
                        src.dead_letter_sink.set_fencing_token(token)
            for src in self.sources:
                if isinstance(src, BatchIntervalAware):
                    src.set_batch_interval_ms(self.interval)
                src.open(blobs)
            zero = self._recover() if ckpt is not None else None
            if zero is None:
                now = int(self.clock.now_ms())
                zero = self._after_sink_markers(now // self.interval * self.interval, sinks, asked)
                self.last_time = zero
                self._open_executor(zero)
            self.zero_ms = zero
            for sink in sinks:
                sink.open()
                self.sinks.append(sink)
                if self._commit_lane is not None and isinstance(sink, SettlingSink) and all(s is not sink for s in self._settling):
                    sink.defer_replies()  # its batch is applied while the next one computes; the commit settles it
                    self._settling.append(sink)
        except BaseException:
            self.sinks += [s for s in asked if all(s is not o for o in self.sinks)]  # closed too: their clients go
            self.close()
            raise
        self._prepared = True

    def _after_sink_markers(self, zero: int, sinks: list[Sink], asked: list[Sink]) -> int:
        """Start a fresh job after the last batch time its sinks already applied.

        Sinks with a marker (RedisSink, KafkaSink: ``last_batch()``) skip every batch
        time not after it. A fresh job (no checkpoint, or a new one) whose batch times
        reached back to the marker -- e.g. after ``run()`` ran a backfill ahead of the
        clock -- would lose those batches silently; start after the marker instead. Each sink
        asked goes into `asked` (closed should the start fail: asking connects it).
        """
        latest, who = None, ""
        for sink in sinks:
            if isinstance(sink, MarkedSink):
                asked.append(sink)  # before the call: one that fails may have connected
            t = sink.last_batch() if isinstance(sink, MarkedSink) else None
            if isinstance(t, int) and (latest is None or t > latest):
                latest, who = t, sink.name
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

    # -- the loop --------------------------------------------------------------------

    @property
    def planned_ahead(self) -> bool:
        """True when the next batch was planned and read while the last one computed (`run_next` must run it next).

        Also when that failed: `run_next` raises the error, in the batch's own turn.
        """
        return self._ahead is not None or self._ahead_failed is not None

    @property
    def replays_left(self) -> int:
        """Planned-but-uncommitted batches of an earlier run that recovery still re-runs first."""
        return len(self._pending)

    def next_time(self) -> int:
        """The next batch time to run."""
        if self._pending:
            return self._pending[0][0]
        assert self.last_time is not None
        return self.last_time + self.interval

    def run_next(self) -> int:
        """Plan (or take the pending plan), run and commit the next batch; return its time.

        With a checkpoint the batch's commit may still be in flight when this returns
        (`flush` waits for it).
        """
        if self.writer is not None:
            self.writer.check_error()
        self._finish_commits(wait=False)  # raises a failed commit's error; tells what became durable
        failed, self._ahead_failed = self._ahead_failed, None
        if failed is not None:  # planning or reading this batch ahead failed: as if it failed now, in its turn
            raise failed[1]
        submitted = int(self.clock.now_ms())
        # Decided once per batch: a listener added while this batch runs (the list is shared) starts with the next one.
        listeners = self._observing = list(self.listeners)
        p0 = time.perf_counter()
        # bytes this batch writes to the checkpoint count from here: its plan and blobs included
        written = self.ckpt.written_bytes() if listeners and self.ckpt is not None else 0
        replay = bool(self._pending)
        ahead, self._ahead = self._ahead, None
        inputs: dict[str, Any] | None = None  # the input read ahead (the first try only)
        if ahead is not None:  # never with replays pending (`_run`); the sources are past it: it is the next batch
            assert not replay and ahead[0] == self.next_time(), (ahead[0], self.next_time())
            t, plan, inputs, self._part_counts, plan_s = ahead
            p0 -= plan_s  # planned while the last batch computed: its listeners see what planning took
        elif self._pending:
            t, plan = self._pending.pop(0)
            if not self._pending:  # the last replayed batch: continue after its plan
                self._restore_positions(plan)
        else:
            t = self.next_time()
            plan = self._plan(t)
        start = int(time.time() * 1000)
        self._started = (submitted, start)  # for on_batch_started, told once the input is read
        p1 = time.perf_counter()
        if listeners:
            emit(listeners, "on_batch_planned", BatchPlanned(t, (p1 - p0) * 1e3, replay, [s.name for s in self.sources]))
            self.executor.measure_timings()
        for attempt in range(1, MAX_BATCH_ATTEMPTS + 1):
            try:
                # The cyclic GC is paused while the batch is read, computed and its changes encoded: its
                # records and their values live until the batch ends, so young-generation collections only
                # walked them again and again, promoting them into full collections (~0.4 s of 3 s CPU for
                # 200k records in bench/kafka.py). Cyclic garbage user code makes waits until the batch ends.
                with gc_paused():
                    counts = self._run(t, plan, inputs)
                    inputs = None
                    p2 = time.perf_counter()
                    self._commit(t, plan)  # its delta's pairs and payload die with it, unwalked too
                break
            except WorkerLostError as exc:  # a worker holding state died: last commit's state, same plan
                self._finish_commits(wait=True)  # the last commit is the newest one on storage
                self._reload_lost(t, plan, exc, attempt, MAX_BATCH_ATTEMPTS)
                inputs = None  # read again from the plan, as after a crash
                if self._ahead is not None:  # the next batch is planned already: the sources continue after it
                    self._restore_positions(self._ahead[1])
        self.last_time = t
        self.batches_done += 1
        end = int(time.time() * 1000)
        p3 = time.perf_counter()
        for name, bp in self._backpressured:  # sources may size the next plans
            bp.observe(t, end - start, counts.get(name, 0), scheduling_delay_ms=max(0, submitted - t))
        if self.live:
            self.lag_watch.observe(t, max(0, start - t))
        info = batch_info(self, t, plan, counts, submitted, start, end, (p0, p1, p2, p3), written, replay) if listeners else None
        if info is None and log.isEnabledFor(logging.DEBUG):
            log.debug("batch %s done: %d records in %d ms", iso_ms(t), sum(counts.values()), end - start, extra=batch_extra(t))
        if replay and not self._pending:
            log.info("replayed the planned batches; last one %s", iso_ms(t), extra=batch_extra(t))
        self._awaiting.append((t, plan, not self._pending, info, replay, listeners))
        if self._commit_lane is None:
            self._committed(t, (0.0, 0))
        elif self.live and int(self.clock.now_ms()) < self.next_time():
            self._finish_commits(wait=True)  # the loop would wait for the clock anyway: tell the commit now
        else:
            self._finish_commits(wait=False)
        return t

    def flush(self) -> None:
        """Wait until every batch run so far is committed (durable); raise a failed commit's error."""
        self._outputs_ran(1 << 62)  # no later batch runs before this returns: release a commit held back
        self._finish_commits(wait=True)

    def _outputs_ran(self, t: int) -> None:
        hold = self._hold
        if hold is not None:
            with hold:
                self._outputs_t = max(self._outputs_t, t)
                hold.notify_all()

    def _held_back(self, t: int) -> None:
        """Fault tests: hold the commit of batch `t` until a later batch's outputs ran (or a flush), 60 s at most."""
        hold = self._hold
        if hold is not None:
            with hold:
                hold.wait_for(lambda: self._outputs_t > t, timeout=60)

    def _finish_commits(self, wait: bool) -> None:
        """Tell what follows each commit that became durable (waiting for all with `wait`); raise a commit's error."""
        lane = self._commit_lane
        if lane is not None:
            if wait:
                lane.drain()
            else:
                lane.check()
            for t, cost in lane.take_done():
                self._committed(t, cost)

    def _committed(self, t: int, cost: tuple[float, int]) -> None:
        """Batch `t`'s commit is durable (it took `cost`: seconds, bytes in the committer): tell sources and listeners."""
        while self._awaiting and self._awaiting[0][0] <= t:  # the committer finishes batches in order: one entry
            bt, plan, offsets, info, replay, listeners = self._awaiting.popleft()
            if offsets:
                self._after_commit(plan)
            if info is not None:
                secs, nbytes = cost if bt == t else (0.0, 0)
                info.commit_ms += secs * 1e3
                info.checkpoint_write_ms += secs * 1e3
                info.checkpoint_bytes += nbytes
                emit(listeners, "on_batch_completed", info)
                if replay:
                    emit(listeners, "on_batch_replayed", BatchReplayed(t, info.num_records, info.pending_batches))

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
        if self.zero_ms is not None:  # the job's first batch: a checkpoint whose early plans are gone once committed
            plan["first_ms"] = self.zero_ms + self.interval
        blobs = [b for p in plans.values() if isinstance(p, dict) for b in p.get("blobs", ())]
        if blobs:
            plan["blobs"] = blobs
        ckpt, lane = self.ckpt, self._plan_lane
        if ckpt is not None and lane is not None:
            ckpt.ensure_owner(f"writing the plan of batch {t} ms")
            try:
                data = ckpt.encode_plan(t, plan)
            except UnsupportedValueError as exc:
                msg = f"the plan of batch {t} ms cannot be stored in the checkpoint: {exc}"
                raise CheckpointError(msg) from exc

            def write() -> int:  # in the plan lane: its flush overlaps reading the input and computing
                ckpt.ensure_owner(f"writing the plan of batch {t} ms")
                _faults.point("plan.before_write")
                w0 = time.perf_counter()
                ckpt.write_plan_data(t, data)
                self._t_plan_write = time.perf_counter() - w0
                _faults.point("plan.after_write")
                return len(data)

            assert self.retention is not None
            self.retention.planned(t, blobs)
            lane.submit(t, write)
        return plan

    def _restore_positions(self, plan: dict[str, Any]) -> None:
        for src in self.sources:
            pos = plan.get("positions", {}).get(src.name)
            if pos is not None:
                src.restore(pos)

    def _run(self, t: int, plan: dict[str, Any], inputs: dict[str, Any] | None = None) -> dict[str, int]:
        """Read the planned input (unless read ahead: `inputs`), compute the graph, run the outputs; records per source."""
        if inputs is None:
            inputs, self._part_counts = self._read(t, plan)
        counts = {name: sum(per_part) for name, per_part in self._part_counts.items()}
        _faults.point("run.after_read")
        if self._observing:
            self._tell_started(t, sum(counts.values()))
        if self._sends_ahead is not None and self._may_look_ahead and self.ahead_ok and not self._pending:
            results = self._sends_ahead.compute_with(t, inputs, lambda: self._look_ahead(t + self.interval))
        else:
            results = self.executor.compute(t, inputs)
        c1 = time.perf_counter()
        if self.ckpt is not None:
            if self._plan_lane is not None:
                self._plan_lane.wait(t)  # the plan is durable before any output of its batch
                self._count_plan_bytes(t)
            self.ckpt.ensure_owner(f"the outputs of batch {t} ms")
        try:
            self.executor.run_outputs(t, results)
        except BaseException as exc:
            self._outputs_error = exc  # a SettlingSink fails the commit of its earlier batch with this very error too
            raise
        self._t_outputs = time.perf_counter() - c1
        if self._commit_lane is not None and self._commit_lane.busy():
            _faults.point(OVERTAKEN)  # this batch's sinks wrote before the previous batch's commit is durable
        self._outputs_ran(t)
        return counts

    def _look_ahead(self, t: int) -> None:
        """Plan batch `t` (durable first) and read its input while the batch before it computes; send it to the executor.

        Called by the executor (`SendsAhead.compute_with`) once the workers have the batch
        before: they find batch `t`'s stateless work queued when they finish. Its outputs
        and commit still follow that batch's, and `run_next` takes it up next. On a retry
        of the batch before (a lost worker), the same plan and input are sent again.

        A failure here (a source's plan or read, the plan's write) is kept and raised when
        batch `t`'s turn comes (`run_next`): the batch before still runs its outputs and commits.
        """
        if self._ahead_failed is not None:  # a retry of the batch before: batch `t` fails in its turn
            return
        if self._ahead is None:
            try:
                p0 = time.perf_counter()
                plan = self._plan(t)
                plan_s = time.perf_counter() - p0
                if self._plan_lane is not None:
                    self._plan_lane.wait(t)  # durable before any of its records go anywhere
                inputs, parts = self._read(t, plan)
            except Exception as exc:
                log.debug("planning or reading batch %d ms ahead failed (raised in its turn): %s", t, exc)
                self._ahead_failed = (t, exc)
                return
            self._ahead = (t, plan, inputs, parts, plan_s)
        assert self._sends_ahead is not None
        self._sends_ahead.send_ahead(t, self._ahead[2])

    def _count_plan_bytes(self, t: int) -> None:
        """Count the plan bytes written so far for batch `t` (and before) in its bytes; a later batch's wait for its turn."""
        assert self.ckpt is not None and self._plan_lane is not None
        later = self._plan_bytes_ahead
        for pt, nbytes in self._plan_lane.take_done():
            later[pt] = later.get(pt, 0) + nbytes
        for pt in [k for k in later if k <= t]:
            self.ckpt.count_written(later.pop(pt))  # the batch's bytes, for listeners

    def _read(self, t: int, plan: dict[str, Any]) -> tuple[dict[str, Any], dict[str, list[int]]]:
        """Batch `t`'s planned input per source, and its records per partition."""
        inputs: dict[str, Any] = {}
        planned = plan["sources"]
        part_counts: dict[str, list[int]] = {}
        remote = self._remote_input
        for src in self.sources:
            if src.name in self._dead_lettering and self._plan_lane is not None:
                # Its read writes the batch's dead letters: like any output, only once the plan is durable
                # (a kill before would re-plan the records, maybe into another batch time, which the
                # dead-letter sink's per-batch marker does not recognise: written twice).
                self._plan_lane.wait(t)
            got = None if remote is None or src.name not in planned else remote.read_input(src, planned[src.name], t)
            if got is not None:  # read by the executor's workers (the records stay there)
                inputs[src.name], part_counts[src.name] = got
                continue
            if src.name in planned:
                parts = src.read(planned[src.name], t)
            else:  # a source added since this batch was planned: no input for it
                parts = [[]]
            per_part = [records_in(p) for p in parts]  # a table's rows count (table sources)
            part_counts[src.name] = per_part
            labels = source_partitions(src, planned.get(src.name), len(parts), t)  # event-time watermarks per partition
            inputs[src.name] = Batch(parts, t, source_partitions=labels)
        return inputs, part_counts

    def _commit(self, t: int, plan: dict[str, Any]) -> None:
        ckpt, writer, retention = self.ckpt, self.writer, self.retention
        if ckpt is None or writer is None or retention is None:
            self.executor.forget_changes()  # nothing to persist: keep change tracking bounded
            return
        files: list[DeltaFile] = []
        state = writer.write(t, self.executor, files)  # encoded here: later batches change the state
        record = {
            "batch_time": t,
            "zero_ms": self.zero_ms,
            "batch_interval_ms": self.interval,
            "positions": plan["positions"],
            "state": state,
            "graph_id": ckpt.graph_ref(self._description),  # its file is written once, before the first commit naming it
            "engine_version": __version__,
            "written_ms": int(time.time() * 1000),
        }
        if self._key_partitioned is not None:
            record["partitioning"] = self._key_partitioned.partitioning()
        # What retention keeps for this commit: its graph file and its chains' files (the writer's own paths,
        # not checked again: `CommitRecord.files` would check every entry of every chain, every batch).
        needs = writer.files()
        needs.add(graph_path(record["graph_id"]))
        settling = self._settling

        def commit() -> tuple[float, int]:  # in the committer lane, after the previous batches' commits
            self._held_back(t)
            c0, b0 = time.perf_counter(), ckpt.written_bytes()
            snap_bytes = writer.write_deltas(files)  # a small state's snapshot: counted as the snapshot's bytes
            for sink in settling:  # a batch a sink could not apply is never committed
                sink.settle(t)
            seq = ckpt.commit(record)
            self._last_record = (seq, record)  # durable now, even if retention fails: a stop may commit it once more
            retention.committed(seq, t, needs)
            return time.perf_counter() - c0, ckpt.written_bytes() - b0 - snap_bytes

        assert self._commit_lane is not None
        self._commit_lane.submit(t, commit)

    def _after_commit(self, plan: dict[str, Any]) -> None:
        """The commit of the batch of `plan` is durable (and no replay follows): sources may tell their brokers."""
        for name, oc in self._committing:
            try:
                oc.commit_offsets(plan["positions"].get(name))
            except Exception as exc:  # informational only: the checkpoint holds the truth
                log.warning("could not commit the positions of source %r to its broker: %s", name, exc)
            _faults.point("source.after_offset_commit")

    def _snapshot_done(self, t: int, nbytes: int, ms: float, sizes: dict[str, int]) -> None:
        log.info("snapshot of batch %s written: %d bytes in %.1f ms", iso_ms(t), nbytes, ms, extra=batch_extra(t))
        self.sizer.from_snapshot(t, sizes)
        if self.listeners:
            emit(self.listeners, "on_snapshot_completed", SnapshotCompleted(t, nbytes, ms, sizes))

    # -- shutdown --------------------------------------------------------------------

    def _commit_adopted(self, adopted: dict[str, tuple[int, Any]]) -> bool:
        """A clean stop waited for a snapshot merge: commit the last committed batch once more, naming it.

        The record is the last commit record with only the adopted operators' chains switched to
        the new snapshot (batch time, positions, graph and partitioning unchanged), so a restart
        loads the same state from a short chain instead of the chain the merge replaced. It is a
        plain commit record: older readers take it as the newest commit of that batch. The last
        record's chains are used, not the writer's: a batch that failed after its changes were
        taken has no commit, and must not enter this one.

        Written only if it would still be the newest commit: not after the commit lane failed
        (its error raised or not: a later batch's record may be durable although its retention
        failed), and not if the log's last record is not this driver's last commit. A record
        refused (fenced: CheckpointInUseError) or failed (CheckpointError) is logged as a warning,
        as a stop without a merge reports nothing: the batch stays committed with the longer
        chain, which is whole; the merged snapshot is left unnamed. True when the record is written.
        """
        ckpt, retention, last, lane = self.ckpt, self.retention, self._last_record, self._commit_lane
        if ckpt is None or retention is None or last is None:
            return False
        last_seq, last_rec = last
        t = int(last_rec["batch_time"])
        state = dict(last_rec["state"])
        for name, (snap_t, rel) in adopted.items():
            data = state.get(name)
            if data is None or snap_t > t or snap_t < int(data.get("snapshot_time", 0)):
                continue  # a merge of a batch the last record does not commit (its commit failed or never ran)
            chain = Chain.from_data(data)
            chain.start_at(snap_t, rel)  # as the writer's `adopt` does to its own chains
            state[name] = {**data, **chain.as_data()}
        if state == last_rec["state"]:
            return False
        unnamed = "the merged snapshot is left unnamed and a restart reads the longer chain, which is whole: nothing is lost"
        if lane is not None and lane.failed():
            log.warning("a commit failed, so the stop does not commit batch %s again; %s", iso_ms(t), unnamed, extra=batch_extra(t))
            return False
        record = {**last_rec, "state": state, "written_ms": int(time.time() * 1000)}
        try:
            needs = CommitRecord(0, record).files()  # once per stop: every chain entry is checked again
            newest = ckpt.last_seq()
            if newest != last_seq:
                log.warning(
                    "the checkpoint log's last record (%d) is not this driver's commit of batch %s (%d), so the stop does not commit it again; %s",
                    newest, iso_ms(t), last_seq, unnamed, extra=batch_extra(t),
                )
                return False
            _faults.point("stop.before_snapshot_commit")  # the snapshot is written, named by no commit record yet
            seq = ckpt.commit(record)
        except CheckpointError as exc:  # CheckpointInUseError too: another driver continues from batch t's commit
            log.warning("the stop could not commit batch %s again, naming the snapshot it waited for (%s); batch %s stays committed, %s", iso_ms(t), exc, iso_ms(t), unnamed, extra=batch_extra(t))
            return False
        self._last_record = (seq, record)
        _faults.point("stop.after_snapshot_commit")  # named; the files only the replaced chains needed remain
        try:
            retention.committed(seq, t, needs)
        except CheckpointError as exc:  # the record is durable: only files no commit needs may remain
            log.warning("the stop committed batch %s again, but deleting the files it no longer needs failed (they stay; nothing is lost): %s", iso_ms(t), exc, extra=batch_extra(t))
            return True
        log.info("the stop committed batch %s again, naming the snapshot it waited for", iso_ms(t), extra=batch_extra(t))
        return True

    def drained(self) -> bool:
        """True when every finite source is exhausted and windows hold no input."""
        last = self.last_time if self.last_time is not None else 0  # restored on recovery, unlike runtime fields
        return (
            not self._pending
            and all(src.exhausted() for src in self.sources)
            and self.executor.drained(last)
        )

    def close(self, merge_timeout_s: float | None = None) -> None:
        """Finish the commits and a snapshot in flight, close sinks and sources, release the checkpoint.

        With `merge_timeout_s` (the stop at interpreter exit) a snapshot merge still running after that
        long is dropped (see `StateWriter.close`). A merge still running at the end (so dropped, or its
        wait interrupted by Ctrl-C) keeps the checkpoint's lease: it ends with the process, so the merge
        never writes while another driver owns the checkpoint.

        Raises:
            CheckpointError: a commit in flight failed (its batch is replayed at the next start).
        """
        failed: BaseException | None = None
        keep_lease = False
        self._outputs_ran(1 << 62)
        try:
            for lane in (self._plan_lane, self._commit_lane):
                if lane is not None:
                    failed = lane.close() or failed  # first: the commits in flight complete (or fail)
            if failed is None and self._commit_lane is not None:
                for t, cost in self._commit_lane.take_done():  # tell what the last commits completed
                    self._committed(t, cost)
            if self.writer is not None:
                # Until close returns the merge may still run: a Ctrl-C during its wait leaves it running (and
                # Python's interrupted join can then report the thread as ended: it is not asked after that).
                keep_lease = self.writer.merging()
                adopted = self.writer.close(merge_timeout_s)  # a snapshot in flight may be merged by the executor's workers
                keep_lease = self.writer.merging()
                if adopted and failed is None and self._commit_adopted(adopted):
                    self.writer.report_adopted()  # listeners and the sizer hear of it once a record names it
        finally:
            try:
                self.executor.close()  # also when a commit failed: its worker pool or actors must not outlive the job
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
                # A merge still running (dropped at the exit's bound, or its wait interrupted by Ctrl-C) may yet
                # write: the lease is kept, to end with the process, so no other driver owns the checkpoint meanwhile.
                if self.ckpt is not None and not keep_lease:
                    self.ckpt.release()
        if failed is not None and failed is not self._outputs_error:  # (a sink's error run_next raised already)
            msg = f"writing the checkpoint failed, so the last batches were not committed (the next start replays them from their plans): {failed}"
            raise CheckpointError(msg) from failed
