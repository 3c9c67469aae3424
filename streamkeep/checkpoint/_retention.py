"""Which files of a checkpoint are still needed, deleting the rest, and the blob stores of sources.

Knows the layout (``log/``, ``plans/<T>.plan|plog``, ``state/<op>/<T>[.p<i>of<n>.e<epoch>].delta|snap``, ``blobs/``,
``graphs/<id>.graph``) and
nothing of operators or sources beyond the blob names the scheduler hands it.
"""

from __future__ import annotations

import logging
import threading
from collections import deque
from typing import Any

from streamkeep import _faults
from streamkeep.checkpoint._checkpoint import Checkpoint, CommitRecord, blob_path, log_path, parse_state_name, plan_path
from streamkeep.codec import UnsupportedValueError
from streamkeep.errors import CheckpointError, CorruptCheckpointError

log = logging.getLogger("streamkeep.scheduler")


class MemoryBlobs:
    """Blobs of sources in memory (a job without a checkpoint)."""

    durable = False

    def __init__(self) -> None:
        self._d: dict[str, Any] = {}

    def put(self, name: str, data: Any) -> None:
        """Store `data` under `name`."""
        self._d[name] = data

    def get(self, name: str) -> Any:
        """The data stored under `name`."""
        return self._d[name]

    def delete(self, name: str) -> None:
        """Forget `name`."""
        self._d.pop(name, None)


class CheckpointBlobs:
    """Blobs of sources in the checkpoint's ``blobs/`` (durable)."""

    durable = True

    def __init__(self, ckpt: Checkpoint) -> None:
        self._ckpt = ckpt

    def put(self, name: str, data: Any) -> None:
        """Store `data` under `name`; CheckpointError when the codec cannot store it."""
        try:
            self._ckpt.put_blob(name, data)
        except UnsupportedValueError as exc:
            msg = f"source data for blob {name!r} cannot be stored in the checkpoint: {exc}"
            raise CheckpointError(msg) from exc

    def get(self, name: str) -> Any:
        """The data stored under `name`."""
        return self._ckpt.get_blob(name)

    def delete(self, name: str) -> None:
        """Delete the blob `name`."""
        self._ckpt.delete(blob_path(name))


class Retention:
    """Keeps the files the newest `keep_commits` commits (and pending plans) need; deletes the rest.

    Graph files are the exception: only `sweep` deletes them (see `committed`).

    The scheduler tells it what it wrote (`planned`, `committed`) and, at recovery, which
    commit it uses and which it could fall back to (`recovered`, `keep_plan`); `sweep`
    then deletes a crash's leftovers.
    """

    def __init__(self, ckpt: Checkpoint, keep_commits: int) -> None:
        self.ckpt = ckpt
        # At least two: the newest commit and one to fall back to if it is lost (keep_commits=1 keeps two).
        self.keep_commits = max(2, keep_commits)
        self.retained: deque[tuple[int, int, set[str]]] = deque()  # (seq, batch time, files) per kept commit
        self.plan_blobs: dict[int, list[str]] = {}  # batch time -> blobs its plan names
        self.plans_written: deque[int] = deque()  # batch times of plans on storage, oldest first
        #: `planned` (the batch loop) and `committed` (the thread that commits) may run at the same time
        self._lock = threading.Lock()

    def planned(self, t: int, blobs: list[str]) -> None:
        """The plan of batch `t`, naming `blobs`, was written (or found pending at recovery)."""
        with self._lock:
            self.plans_written.append(t)
            if blobs:
                self.plan_blobs[t] = list(blobs)

    def recovered(self, rec: CommitRecord, prev: CommitRecord | None) -> CommitRecord | None:
        """Recovery uses commit `rec`; `prev` (the next older one) stays as its fallback. Returns `prev`, or None when unusable."""
        self.retained.clear()
        if prev is not None:
            try:
                self.retained.append((prev.seq, prev.batch_time, prev.files()))
            except CorruptCheckpointError:
                prev = None
        self.retained.append((rec.seq, rec.batch_time, rec.files()))
        if prev is not None:
            # Plans after the fallback commit `prev` stay (with their blobs) until retention drops `prev`.
            for t in self.ckpt.plan_times():
                if prev.batch_time < t <= rec.batch_time:
                    self.plans_written.append(t)
                    try:
                        self.plan_blobs[t] = list(self.ckpt.read_plan(t).get("blobs", []))
                    except CheckpointError as exc:  # only the fallback needs it; recovery goes on
                        log.warning("the plan of batch %d ms (needed only to fall back to batch %d ms) is unreadable: %s", t, prev.batch_time, exc)
        return prev

    def committed(self, seq: int, t: int, files: set[str]) -> None:
        """Commit `seq` of batch `t` needs `files`: delete what the commit falling out of the kept ones alone needed.

        Except its graph file: two drivers share a graph file's name when they run the same code, so a driver
        paused past its lease here could delete the file the driver that took over has just written (and caches as
        written). The next start's sweep, which runs after its claim, deletes the graph files no kept commit names.
        """
        ckpt = self.ckpt
        with self._lock:
            self.retained.append((seq, t, files))
            if len(self.retained) <= self.keep_commits:
                return
            old_seq, _, old_files = self.retained.popleft()
            oldest_seq, oldest_t, _ = self.retained[0]
            keep = set().union(*(f for _, _, f in self.retained))
            # Graph files are left to the restart sweep (after its claim): a content-addressed name may be the file a
            # driver that took over from this one (while it was paused) has just written, and will never write again.
            doomed = [f for f in old_files if f not in keep and not f.startswith("graphs/")]
            doomed += [log_path(s) for s in range(old_seq, oldest_seq)]
            for pt in [pt for pt in self.plan_blobs if pt <= oldest_t]:
                doomed += [blob_path(b) for b in self.plan_blobs.pop(pt)]
            while self.plans_written and self.plans_written[0] <= oldest_t:
                pt = self.plans_written.popleft()
                if ckpt.plan_file(pt) == plan_path(pt):  # a plan in a plan log goes with the log
                    doomed.append(plan_path(pt))
            doomed += ckpt.forget_plans(oldest_t)
        for i, rel in enumerate(doomed):
            ckpt.delete(rel)
            if i == 0:
                _faults.point("retention.mid_delete")

    def sweep(self, rec: CommitRecord | None, prev: CommitRecord | None, keep_blobs: set[str]) -> None:
        """Delete what neither the commit `rec`, nor the fallback `prev`, nor a pending plan, nor `keep_blobs` needs.

        Only files of the checkpoint's own naming are deleted: log records by number, plans
        by batch time, graph files (``<id>.graph``) neither commit names, state files named ``<T>.delta``/``<T>.snap`` (or a key partition's
        ``<T>.p<i>of<n>.e<epoch>.delta|snap``: a fenced driver's owners may still write those
        after this sweep; no commit of this driver ever names them), blobs, temp files.
        """
        ckpt = self.ckpt
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
                if parse_state_name(n) is None:
                    log.warning("leaving %s alone: not a state file streamkeep writes", st.path(rel))
                elif rel not in keep:
                    delete(rel)
        graphs = []
        for n in st.list("graphs"):  # a graph no kept commit names: older code's, or written just before a crash
            rel = f"graphs/{n}"
            if not n.endswith(".graph"):
                log.warning("leaving %s alone: not a file streamkeep writes", st.path(rel))
            elif rel not in keep:
                graphs.append(rel)
        if graphs:  # another driver may share a graph's name (same code): it must not have taken over meanwhile
            ckpt.ensure_owner("deleting graph files no kept commit names")
        for rel in graphs:
            delete(rel)
        if oldest is not None:
            for seq in ckpt.log_seqs():
                if seq < oldest.seq:
                    delete(log_path(seq))
        pending_blobs = {b for blobs in self.plan_blobs.values() for b in blobs} | keep_blobs
        logs: dict[str, int] = {}
        for t, rel in ckpt.plan_index().items():
            if rel.endswith(".plog"):
                logs[rel] = max(logs.get(rel, t), t)
            elif t <= committed:
                delete(rel)
        for rel, last in logs.items():  # a plan log goes once every plan in it is at or before the commit
            if last <= committed:
                delete(rel)
        for rel, until in ckpt.unneeded_plan_logs().items():  # damaged, and only ever held plans before `until`
            if until - 1 <= committed:
                delete(rel)
        ckpt.forget_plans(committed)
        for n in st.list("blobs"):
            if n not in {blob_path(b).split("/", 1)[1] for b in pending_blobs}:
                delete(f"blobs/{n}")
