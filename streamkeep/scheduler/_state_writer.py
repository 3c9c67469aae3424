"""`StateWriter`: how a batch's state changes reach the checkpoint (inline deltas, delta files, snapshots).

Every batch, each stateful operator's delta (what changed) is written: small deltas
ride inside the commit record (no extra file or fsync) as long as the operator's
inline total since its snapshot stays under ``inline_delta_bytes`` (every commit
record repeats the chain), bigger ones go to ``state/<op>/<T>.delta``. Now and then
a full snapshot is due (`snapshot_due`), taken one of two ways:

* A small state (under `DIRECT_SNAPSHOT_BYTES`) is encoded whole, from the live state,
  in the batch loop (a copy and an encode of ~1-3 ms for 10k keys): its bytes are batch
  T's state, so values user code changes in place later cannot reach them. The file is
  written by the committer with batch T's commit record, which names it (no delta of T,
  no background work, nothing for the next batch to wait for).
* A bigger state is not taken from the live state: a background worker merges the
  operator's previous snapshot with the deltas written since, all already on storage
  (`streamkeep.checkpoint._compact`), so the batch loop neither copies nor encodes the
  state. The chains switch to the new snapshot once the worker is done (`adopt`), so its
  inputs stay referenced by every commit until then (retention keeps them). A merge
  under `BIG_STATE_BYTES` still in flight is waited for by the next batch; a bigger
  state's is not: the next one starts as soon as it is done, and only a chain of
  `MAX_CHAIN` batches waits. A clean stop waits for a merge in flight and adopts it (`close`);
  the scheduler then commits its last batch once more, naming the new snapshot (same batch,
  positions and graph; only the chains change), so a job stopped every batch or two (a backfill
  ``run(max_batches=k)`` from cron) still keeps short chains. A crash (or a fenced driver) before
  that record leaves the file named by nothing: the next start's sweep deletes it, and the restart
  reads the longer chain, which is whole.
  Such states on local disks are merged by a helper process, out of the way of the
  batch loop's interpreter lock.

An executor whose workers own key partitions (`StateOwners`, the Ray executor) has
them write its partitioned operators' deltas and snapshots themselves, straight to
the storage: the writer only collects their acknowledgements (a path, or a small
payload inline, per partition) into the chains, so no state passes through the driver,
and the commit record names every partition's file.
"""

from __future__ import annotations

import logging
import os
import sys
import threading
import time
from collections.abc import Callable
from operator import itemgetter
from typing import Any

from streamkeep import _faults
from streamkeep._columns import Columns
from streamkeep.checkpoint import Checkpoint, _compact
from streamkeep.checkpoint._checkpoint import state_path
from streamkeep.checkpoint._compact import Job, compact, encode_snapshot, mergeable
from streamkeep.checkpoint._format import EMPTY_RUN_VERSION, EMPTY_RUNS, MOVED, MOVED_VERSION, framed_size, state_version
from streamkeep.codec import UnsupportedValueError, get_codec
from streamkeep.dstream._graph import StatefulNode
from streamkeep.errors import CheckpointError
from streamkeep.executors.base import Executor, StateOwners
from streamkeep.scheduler._state_io import Chain, encode_state

log = logging.getLogger("streamkeep.scheduler")

#: Adaptive snapshots (snapshot_every=None): the first one after this many batches ...
FIRST_SNAPSHOT_AFTER = 20
#: ... and never more than this many batches apart (bounds the files a restart reads).
MAX_CHAIN = 500
#: Under this many bytes of state (last snapshot plus deltas since: an upper bound) a snapshot is
#: encoded from the live state in the batch loop and written with its batch's commit record. Merging
#: the files instead costs more (it decodes the snapshot and every delta, then encodes the same
#: state) and, for a small state, the next batch waited for it (~25-130 ms for 10k keys on a loaded
#: machine vs ~2 ms to encode them: bench/checkpoint.py's 10k-key row). Not more: the copy and encode
#: grow with the state (~22-29 ms of the loop's CPU for 100k keys, ~1 MB: 7-9x a batch of the 100k-key row).
DIRECT_SNAPSHOT_BYTES = 256 * 1024
#: From this many bytes of state (last snapshot plus deltas since) a merged snapshot is not waited for by
#: the next batch before MAX_CHAIN (a merge of 100k keys takes ~60-150 ms: the 100k-key row); a smaller one
#: (a state merged only because it cannot be encoded here, or a test's) is, so the next commit names it ...
BIG_STATE_BYTES = 256 * 1024
#: ... and from this many, on a local disk, a helper process merges it (starting one costs ~0.2 s
#: of CPU, on the other core; merging in a thread holds the batch loop's interpreter lock: ~1 s for
#: 1M keys, and for 100k keys pauses of 30-140 ms, 9-14x a batch, vs 3-8x with the helper).
HELPER_STATE_BYTES = 256 * 1024

#: A state file `StateWriter.write` left to the caller: (operator, batch time, payload, codec, kind, format
#: version), kind "delta", or "snap" for a small state's snapshot (which its batch's commit record names instead
#: of a delta); the version is `state_version` of its data (7 for a window's empty runs, else 4).
DeltaFile = tuple[str, int, bytes, str, str, int]

#: on_snapshot(batch time, bytes written, ms, encoded bytes per operator), called once a merged snapshot is
#: adopted, or when a small state's is taken (its file is written with the batch's commit record)
OnSnapshot = Callable[[int, int, float, dict[str, int]], None]


class StateWriter:
    """Writes each batch's state changes of one job's stateful operators to its checkpoint.

    Args:
        ckpt: the checkpoint.
        nodes: the stateful operators by name (their codec encodes their state).
        snapshot_every: a snapshot every this many batches; None: adaptive (see `snapshot_due`).
        inline_delta_bytes: an operator's inline deltas since its snapshot total at most this.
        on_snapshot: told when a snapshot is complete and the chains use it.
    """

    def __init__(
        self,
        ckpt: Checkpoint,
        nodes: dict[str, StatefulNode],
        *,
        snapshot_every: int | None,
        inline_delta_bytes: int,
        on_snapshot: OnSnapshot | None = None,
    ) -> None:
        self.ckpt = ckpt
        self.nodes = nodes
        self.snapshot_every = snapshot_every
        self.inline_delta_bytes = inline_delta_bytes
        self.on_snapshot = on_snapshot
        self.chains: dict[str, Chain] = {}
        self.since_snapshot = 0
        self.delta_bytes = 0  # state bytes written as deltas since the last snapshot started
        self.inline_bytes = 0  # the part of them inline in the commit records (a restart reads those with the record)
        self.snapshot_bytes: int | None = None  # size of the last snapshot this process wrote
        self._snap_size: dict[str, int] = {}  # size of the snapshot each chain starts from, when known
        self._unsized: set[str] = set()  # restored chains whose size could not be read: not taken for small
        self.base_bytes = 0  # their total, plus the deltas of a snapshot in flight
        #: did the last `write` start a snapshot; encoded size per operator of the last one adopted
        self.started = False
        self.snapshot_sizes: dict[str, int] = {}
        #: operators whose deltas `merge` cannot apply: their snapshot is a copy of the live state
        self.copied: set[str] = set()
        self._thread: threading.Thread | None = None
        self._big = False
        #: operator -> (batch time, snapshot path -- a list of one per key partition when the owners wrote it --, payload bytes)
        self._done: dict[str, tuple[int, Any, int]] = {}
        self._merging: set[str] = set()  # operators the worker in flight merges
        self._error: BaseException | None = None
        self._stats: tuple[int, float] = (0, 0.0)
        #: the snapshot adopted last, not yet told to `on_snapshot`: (batch time, sizes, bytes, ms)
        self._unreported: tuple[int, dict[str, int], int, float] | None = None
        self._owners_cache: tuple[Executor, StateOwners | None] | None = None
        #: ready(t): wait until the delta files of the batches before t (written after `write` returned) are on
        #: storage; False if they never will be
        self.ready: Callable[[int], bool] | None = None

    def restored(self, chains: dict[str, Chain]) -> None:
        """Continue the chains a recovered commit holds (and its snapshot cadence)."""
        self.chains = chains
        # Resume the snapshot cadence: a job restarted often must still snapshot (bounded chains).
        self.since_snapshot = max((len(c.deltas) for c in chains.values()), default=0)
        # The restored deltas count as deltas since the snapshot: a big state whose chain has no
        # snapshot yet (or one whose size is unknown) must not look small (`_small`).
        self.delta_bytes = self.inline_bytes = 0
        for name, c in chains.items():
            try:
                if c.snapshot:
                    files = c.snapshot if isinstance(c.snapshot, list) else [c.snapshot]
                    self._snap_size[name] = sum(self.ckpt.storage.size(f) for f in files if f)
                for _, entry in c.deltas:
                    on_disk, inline = self._entry_bytes(entry)
                    self.delta_bytes += on_disk + inline
                    self.inline_bytes += inline
            except (CheckpointError, OSError):
                self._unsized.add(name)  # only an estimate (how to snapshot); a missing file fails the restore, not this
        self.base_bytes = sum(self._snap_size.values())

    def _entry_bytes(self, entry: Any) -> tuple[int, int]:
        """(bytes in files, bytes inline in the commit record) of one restored chain entry."""
        if isinstance(entry, str):
            return self.ckpt.storage.size(entry), 0
        if isinstance(entry, dict) and "parts" in entry:
            sizes = [self._entry_bytes(p) for p in entry["parts"] if p is not None]  # a path, or {"data": inline payload, ...}
            return sum(f for f, _ in sizes), sum(i for _, i in sizes)
        if isinstance(entry, dict):
            return 0, len(entry.get("data") or b"")
        return 0, 0

    def write(self, t: int, executor: Executor, defer: list[DeltaFile] | None = None) -> dict[str, Any]:
        """Write batch `t`'s deltas, start a snapshot if one is due; the chains for its commit record.

        With `defer`, the delta files are not written here: each is encoded and appended to
        `defer` (the caller writes them with `write_deltas` before the commit record), except
        in a batch that starts a merged snapshot: its merge reads them, so they are written
        here, and the merge first waits for `ready(t)` (the earlier batches' deferred files).
        A small state's snapshot replaces the batch's deltas in `defer` (see the module doc).
        """
        ckpt = self.ckpt
        self.started = False
        files: list[DeltaFile] = defer if defer is not None else []
        owners = self._owners_of(executor)
        owned = set(owners.owned()) if owners is not None else set()
        acks: dict[str, tuple[list[Any], int, bool]] = {}
        if owners is not None and owned:
            budget = {name: self.inline_delta_bytes - _inline_bytes(self.chains.get(name)) for name in owned}
            acks = owners.write_deltas(t, ckpt.fencing()[1], budget)
        for name in executor.operators():
            chain = self.chains.setdefault(name, Chain())
            if name in owned:
                ack = acks.get(name)
                if ack is not None:
                    parts, nbytes, can_merge = ack
                    if not can_merge:
                        self.copied.add(name)
                    self.delta_bytes += nbytes
                    self.inline_bytes += sum(len(p["data"]) for p in parts if isinstance(p, dict))
                    ckpt.count_written(nbytes - sum(len(p["data"]) for p in parts if isinstance(p, dict)))  # the owners' files
                    chain.deltas.append((t, {"t": t, "parts": parts}))
                    _faults.point("state.mid_write")
                continue
            delta = executor.delta(name)
            if delta is not None:
                node = self.nodes[name]
                if not mergeable(delta):
                    self.copied.add(name)
                payload = encode_state(node, delta)
                version = state_version(delta)
                self.delta_bytes += len(payload)
                if _inline_bytes(chain) + len(payload) <= self.inline_delta_bytes:
                    entry = {"t": t, "codec": node.codec, "data": payload}
                    if version == EMPTY_RUN_VERSION:
                        entry[EMPTY_RUNS] = True  # the commit records inlining it are format 7 (`Checkpoint.commit`)
                    elif version == MOVED_VERSION:
                        entry[MOVED] = True  # ... and format 9
                    chain.deltas.append((t, entry))
                    self.inline_bytes += len(payload)
                else:
                    files.append((name, t, payload, node.codec, "delta", version))
                    chain.deltas.append((t, state_path(name, t, "delta")))
                    continue  # its crash point is reached once the file is written (`write_deltas`)
                _faults.point("state.mid_write")
        self.since_snapshot += 1
        due = self.snapshot_due()
        # A big snapshot in flight is not waited for (that would pause the batches) until the chain is long.
        # A small one (< BIG_STATE_BYTES, a merge of milliseconds) is waited for by the next batch, so that
        # batch's commit names it: with the pipelined commit the next batch can come before the merge ends
        # (a clean stop also adopts it, with one more commit record: `close`).
        self.adopt(wait=not self._big or (due and self.since_snapshot >= MAX_CHAIN))
        if due and self._thread is None:
            if self._small(executor):
                self.snapshot_here(t, executor, files)
            else:
                if files:  # the merge reads this batch's delta files: write them now (earlier batches' via `ready`)
                    self._write_files(files)
                    files.clear()
                self.start_snapshot(t, executor)
        if defer is None:
            self.write_deltas(files)
        return {name: c.as_data() for name, c in self.chains.items()}

    def files(self) -> set[str]:
        """The state files the chains `write` returned name: what their commit needs kept (see `Chain.files`).

        The same set as ``CommitRecord.files`` of a record holding them (without the graph file),
        without walking every chain entry again: a chain grows between snapshots, up to
        `MAX_CHAIN` entries, and every batch's commit asks.
        """
        out: set[str] = set()
        for c in self.chains.values():
            out |= c.files()
        return out

    def write_deltas(self, files: list[DeltaFile]) -> int:
        """Write the state files `write` deferred (then the commit record may name them).

        Returns the bytes of the snapshots among them: reported as the snapshot's
        (`on_snapshot`, when `write` took it), not as the batch's.
        """
        nbytes = self._write_files(files)
        _faults.point("state.after_write")
        return nbytes

    def _write_files(self, files: list[DeltaFile]) -> int:
        ckpt = self.ckpt
        snap_bytes = 0
        for name, t, payload, codec, kind, version in files:
            ckpt.ensure_owner(f"writing the state of batch {t} ms")
            b0 = ckpt.written_bytes()
            ckpt.write_state(name, t, kind, payload, codec, version)
            if kind == "snap":
                snap_bytes += ckpt.written_bytes() - b0
                _faults.point("snapshot.mid_write")  # written, named by no commit record yet
            else:
                _faults.point("state.mid_write")
        return snap_bytes

    def _owners_of(self, executor: Executor) -> StateOwners | None:
        """`executor` if its workers write their own state files (checked once: a Protocol check costs ~20 us)."""
        known = self._owners_cache
        if known is None or known[0] is not executor:
            known = self._owners_cache = (executor, executor if isinstance(executor, StateOwners) else None)
        return known[1]

    def snapshot_due(self) -> bool:
        """Is a full snapshot due after this batch?

        With ``snapshot_every`` set: every that many batches. By default (adaptive): once
        the delta files written since the last snapshot reach half its size, so the bytes a
        batch costs follow the keys that changed, not the size of the state, and a restart
        reads at most 1.5 snapshots' worth plus the commit record; the first snapshot after
        `FIRST_SNAPSHOT_AFTER` batches, and never more than `MAX_CHAIN` batches apart.
        Deltas inline in the commit record do not count: a restart reads them with the
        record anyway (at most ``inline_delta_bytes`` per operator), so a small state whose
        every key changes each batch is not snapshotted every other batch (each snapshot
        is a file flush, and a small one is waited for).
        """
        if self.snapshot_every is not None:
            return self.since_snapshot >= self.snapshot_every
        if self.since_snapshot >= MAX_CHAIN:
            return True
        if self.snapshot_bytes is None:
            return self.since_snapshot >= FIRST_SNAPSHOT_AFTER
        return (self.delta_bytes - self.inline_bytes) * 2 >= self.snapshot_bytes

    def _small(self, executor: Executor) -> bool:
        """Is the state small enough to snapshot from the live state (`snapshot_here`)?

        Under `DIRECT_SNAPSHOT_BYTES` (last snapshot plus deltas since), and no operator's
        last snapshot big enough to hold a key index (4 bytes per key, from
        `_compact.ORDER_MIN_KEYS` keys): a restart loads such a state lazily, which a merge
        keeps possible (it carries the index over; sorting here would cost ~30 ms per 64k
        keys) and a copy here would undo (it needs every key). Not with key partition
        owners (Ray): they write and compact their own files.
        """
        if self._unsized or self.base_bytes + self.delta_bytes >= DIRECT_SNAPSHOT_BYTES:
            return False
        if any(n >= 4 * _compact.ORDER_MIN_KEYS for n in self._snap_size.values()):
            return False
        owners = self._owners_of(executor)
        return owners is None or not owners.owned()

    def snapshot_here(self, t: int, executor: Executor, files: list[DeltaFile]) -> None:
        """Snapshot a small state as of batch `t` from the live state: encoded now, written with the commit record.

        Each operator that changed since its snapshot has its whole state encoded here (the
        bytes are batch `t`'s: a value changed in place later cannot reach them), its delta of
        `t` dropped from `files` and from its chain (the snapshot holds it), and the snapshot
        appended to `files`: the commit record of `t` names it, so nothing is adopted later
        and no later batch waits for it. Reported to `on_snapshot` at once (its file is
        written with the commit record; a failure there fails the job like a failed commit).
        """
        c0 = time.perf_counter()
        self.since_snapshot = 0
        self.delta_bytes = self.inline_bytes = 0
        sizes: dict[str, int] = {}
        nbytes = 0
        for name in executor.operators():
            chain = self.chains.get(name)
            if chain is None or not chain.deltas:
                continue  # nothing changed since its snapshot (or it never held state): its chain stays
            node = self.nodes[name]
            data = executor.snapshot(name)
            payload = _encode_whole(node, data, columns=name not in self.copied)
            rel = state_path(name, t, "snap")
            files[:] = [f for f in files if f[0] != name or f[1] != t]  # its delta of `t`: in the snapshot
            files.append((name, t, payload, node.codec, "snap", state_version(data)))
            chain.snapshot, chain.snapshot_time, chain.deltas = rel, t, []
            sizes[name] = len(payload)
            nbytes += framed_size("snap", node.codec, len(payload), rel)
        self.started = bool(sizes)
        if not sizes:
            return
        self._snapshotted(t, sizes, nbytes, (time.perf_counter() - c0) * 1e3)

    def _snapshotted(self, t: int, sizes: dict[str, int], nbytes: int, ms: float) -> None:
        """A snapshot as of batch `t` is in the chains (`sizes`: encoded bytes per operator): the estimates start from it."""
        self._snap_size.update(sizes)
        self._unsized -= sizes.keys()
        self.snapshot_sizes = sizes
        self.snapshot_bytes = self.base_bytes = sum(self._snap_size.values())
        if self.on_snapshot is not None:
            self.on_snapshot(t, nbytes, ms, dict(sizes))

    def start_snapshot(self, t: int, executor: Executor) -> None:
        """Start a snapshot of batch `t`: a background worker merges each operator's chain into one file.

        Only an operator whose deltas cannot be merged (`copied`) has its live state copied
        and encoded here, in the batch loop (the way every snapshot was taken before format 3).
        """
        ckpt, nodes = self.ckpt, self.nodes
        self.since_snapshot = 0
        jobs: list[Job] = []
        owner_jobs: list[Job] = []
        copies: dict[str, tuple[str, bytes, int]] = {}
        owners = self._owners_of(executor)
        owned = set(owners.owned()) if owners is not None else set()
        owner_copies: list[str] = []
        for name in executor.operators():
            chain = self.chains.get(name)
            if chain is None or not chain.deltas:
                continue  # nothing changed since its snapshot (or it never held state): its chain stays
            if name in self.copied and name in owned:
                owner_copies.append(name)
            elif name in self.copied:
                data = executor.snapshot(name)
                copies[name] = (nodes[name].codec, encode_state(nodes[name], data), state_version(data))
            elif name in owned:
                owner_jobs.append((name, nodes[name].codec, chain.as_data()))
            else:
                jobs.append((name, nodes[name].codec, chain.as_data()))
        epoch = ckpt.fencing()[1] if owned else 0
        # Copies of live state are taken now (batch t's state), by the owners; merges run in the background.
        copied_parts = owners.write_snapshots(t, epoch, owner_copies) if owners is not None and owner_copies else {}
        size = self.base_bytes + self.delta_bytes
        # Owners' compactions (Ray tasks) take round trips even for small states: with adaptive snapshots they are
        # not waited for before MAX_CHAIN (a fixed snapshot_every keeps its exact cadence, as for small local states).
        self._big = size >= BIG_STATE_BYTES or (bool(owner_jobs) and self.snapshot_every is None)
        self.base_bytes += self.delta_bytes  # what the next estimate starts from, until the real size is known
        self.delta_bytes = self.inline_bytes = 0
        self.started = bool(jobs or copies or owner_jobs or copied_parts)
        if not self.started:
            return
        self._merging = {name for name, _, _ in jobs + owner_jobs}
        helper = bool(jobs) and size >= HELPER_STATE_BYTES and ckpt.storage.local and not copies and all(codec == "msgpack" for _, codec, _ in jobs)

        ready = self.ready if jobs else None  # only merges here read delta files the committer may still be writing

        def work() -> None:
            try:
                if ready is not None and not ready(t):
                    msg = f"the delta files of the batches before {t} ms, which the snapshot merges, were not written (see the commit's error)"
                    raise CheckpointError(msg)
                w0, b0 = time.perf_counter(), ckpt.written_bytes()
                done: dict[str, tuple[Any, int]] = {}
                nbytes = 0
                out = _run_helper(ckpt, t, jobs) if helper else None
                if out is not None:
                    done, nbytes = {k: (str(v[0]), int(v[1])) for k, v in out["done"].items()}, int(out["bytes"])
                else:  # in this process: small states, other storages and codecs, or the helper failed
                    done = compact(ckpt, t, jobs)
                for name, (codec, payload, version) in copies.items():
                    done[name] = (ckpt.write_state(name, t, "snap", payload, codec, version), len(payload))
                    _faults.point("snapshot.mid_write")
                parts: dict[str, tuple[Any, int]] = dict(copied_parts)
                if owners is not None and owner_jobs:
                    parts.update(owners.compact(t, epoch, owner_jobs))
                for name, (paths, part_bytes) in parts.items():
                    done[name] = (paths, part_bytes)
                    nbytes += part_bytes
                    _faults.point("snapshot.mid_write")  # written by the owners, named by no commit yet
                nbytes += ckpt.written_bytes() - b0
                self._stats = (nbytes, (time.perf_counter() - w0) * 1e3)
                self._done = {name: (t, rel, size) for name, (rel, size) in done.items()}
            except BaseException as exc:
                self._error = exc

        self._thread = threading.Thread(target=work, name="streamkeep-snapshot", daemon=True)
        self._thread.start()

    def adopt(self, wait: bool = False, *, report: bool = True, timeout_s: float | None = None) -> dict[str, tuple[int, Any]]:
        """Switch the chains to a snapshot the background worker finished (waiting for it with `wait`).

        Returns what was adopted: operator -> (the snapshot's batch time, its path or per-partition paths).
        With `report` False, `on_snapshot` is told only by `report_adopted` (once a commit record names it).
        With `wait` and `timeout_s`, a worker still running after `timeout_s` is not adopted (nothing is).
        """
        th = self._thread
        if th is None:
            return {}
        if wait:
            th.join(timeout_s)
        if th.is_alive():
            return {}
        self._thread = None
        self.check_error()
        snap_t = None
        sizes: dict[str, int] = {}
        adopted: dict[str, tuple[int, Any]] = {}
        for name, (t, rel, size) in self._done.items():
            _faults.point("snapshot.before_adopt")  # written, not yet named by any commit record
            chain = self.chains.setdefault(name, Chain())
            chain.start_at(t, rel)
            snap_t = t
            sizes[name] = size
            adopted[name] = (t, rel)
        self.copied |= self._merging - set(self._done)  # its stored chain could not be merged: copy it next time
        self._done = {}
        if snap_t is not None:
            self._unreported = (snap_t, sizes, *self._stats)
            if report:
                self.report_adopted()
        return adopted

    def report_adopted(self) -> None:
        """Tell `on_snapshot` (listeners, the sizer) of the snapshot adopted last, if not yet told."""
        done, self._unreported = self._unreported, None
        if done is not None:
            self._snapshotted(*done)

    def check_error(self) -> None:
        """Raise CheckpointError if the background snapshot failed."""
        err = self._error
        if err is not None:
            self._error = None
            msg = f"writing a state snapshot to the checkpoint failed: {err}"
            raise CheckpointError(msg) from err

    def restart_cost(self) -> tuple[int, int]:
        """(bytes, deltas) a restart would read now: the last snapshot plus the deltas since, the longest chain."""
        return (self.snapshot_bytes or 0) + self.delta_bytes, max((len(c.deltas) for c in self.chains.values()), default=0)

    def merging(self) -> bool:
        """True while a background worker (a snapshot merge) is running."""
        return self._thread is not None and self._thread.is_alive()

    def close(self, timeout_s: float | None = None) -> dict[str, tuple[int, Any]]:
        """Wait for a snapshot in flight and adopt it; what was adopted (see `adopt`), for one more commit record.

        The wait is the merge's rest (bench/stop_snapshot.py, load ~3.5 on 2 cores, a merge started in the
        last batch: 0.6-0.8 s for 100k keys, the helper's start-up included, 0.8-1.7 s for 1M keys); a stop
        always waited for it (the helper must not write after the driver released the checkpoint), and
        dropping it saves nothing then. It is not bounded: the merge's time grows with the state, as a
        restart's does. The commit record naming it costs the stop ~4-8 ms more (max 14 ms measured).
        A merge that failed is dropped with a warning: the chains still name its inputs, so nothing is lost.
        `on_snapshot` is not told here: the stop calls `report_adopted` once its commit record names the snapshot.
        With `timeout_s` (the stop at interpreter exit: `streamkeep.context.EXIT_MERGE_WAIT_S`) a merge still
        running then is dropped with a warning (`merging` stays True: the caller must not release the checkpoint).
        """
        if self._thread is None:
            return {}
        try:
            adopted = self.adopt(wait=True, report=False, timeout_s=timeout_s)
        except CheckpointError as exc:
            log.warning("%s; the stop drops it (the restart reads the longer chain, which is whole)", exc)
            return {}
        if self.merging():
            log.warning(
                "the snapshot merge in flight (operators %s) did not finish within %.1f s: the stop drops it (a restart "
                "reads the longer chain, which is whole: nothing is lost) and leaves the checkpoint's lease to end with "
                "the process (on remote storage the next driver waits for it to expire)",
                ", ".join(sorted(self._merging)),
                timeout_s or 0.0,
            )
        return adopted


def _encode_whole(node: StatefulNode, data: dict[str, Any], *, columns: bool) -> bytes:
    """A whole state's snapshot payload: columnar, as a merge writes it, where `merge` knows the data, else as pairs.

    No key index (``order``): it only speeds up restoring big states, and sorting costs ~1 s
    per 1M keys (a merge adds one when the state grows past ORDER_MIN_KEYS).
    """
    if columns and mergeable(data):
        pairs = data.get("set")
        if isinstance(pairs, list):  # a runtime's pairs (its dict's items): two C passes, no dict of them again
            data = {**data, "set": Columns(list(map(itemgetter(0), pairs)), list(map(itemgetter(1), pairs)))}
        try:
            return encode_snapshot(node.codec, data, order_min_keys=_NO_ORDER)
        except UnsupportedValueError:
            pass  # encode_state raises the error that names the operator, the key and the type
    return encode_state(node, data)


#: encode_snapshot's order_min_keys that writes no key index.
_NO_ORDER = 1 << 62


def _inline_bytes(chain: Chain | None) -> int:
    """Bytes of the deltas `chain` holds inline in the commit record (every partition's)."""
    return 0 if chain is None else chain.inline_bytes()


#: The helper's command: lower its priority first (its start-up imports take ~0.3 s of CPU too), then run.
_HELPER_MAIN = (
    "import os\n"
    "try:\n    os.nice(10)\nexcept (AttributeError, OSError):\n    pass\n"
    "import runpy\nrunpy.run_module('streamkeep.checkpoint._compact', run_name='__main__')\n"
)


def _run_helper(ckpt: Checkpoint, t: int, jobs: list[Job]) -> dict[str, Any] | None:
    """Run `compact` in a helper process (``streamkeep.checkpoint._compact`` as a script, at a lower priority); its report.

    Only for checkpoints on local disks (no storage options to hand over). The helper dies
    with this process (Linux), and never writes over a file: a late one cannot harm a successor.
    None when it failed (logged): the caller merges in this process instead, which raises
    the error that matters (an unreadable input) with its own type.
    """
    codec = get_codec("msgpack")
    job = {
        "parent": os.getpid(),
        "url": ckpt.url,
        "storage_options": None,
        "t": t,
        "jobs": [list(j) for j in jobs],
        "order_min_keys": _compact.ORDER_MIN_KEYS,
    }
    env = {k: v for k, v in os.environ.items() if k != _faults.ENV_VAR}  # crash points are the driver's
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(_compact.__file__))))  # holds streamkeep/
    env["PYTHONPATH"] = os.pathsep.join([root, *filter(None, [env.get("PYTHONPATH")])])
    import subprocess  # only here: importing it costs ~9 ms of every start-up

    try:
        proc = subprocess.run(
            [sys.executable, "-c", _HELPER_MAIN],
            input=codec.encode(job),
            capture_output=True,
            env=env,
            check=False,
            # its own session: a Ctrl-C in the terminal is the driver's to handle (its stop waits for this merge);
            # it still dies with the driver (PR_SET_PDEATHSIG: _compact.helper_main)
            start_new_session=True,
        )
    except OSError as exc:
        log.warning("could not start a helper process to merge the snapshot of batch %d ms (%s); merging it in this process", t, exc)
        return None
    try:
        out: dict[str, Any] = codec.decode(proc.stdout)
    except Exception:
        out = {}
    if proc.returncode != 0 or "error" in out or "done" not in out:
        why = out.get("error") or f"exit status {proc.returncode}: {proc.stderr.decode(errors='replace')[-2000:]}"
        log.warning("the helper process merging the snapshot of batch %d ms failed (%s); merging it in this process", t, why)
        return None
    return out
