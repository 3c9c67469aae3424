"""`StateWriter`: how a batch's state changes reach the checkpoint (inline deltas, delta files, snapshots).

Every batch, each stateful operator's delta (what changed) is written: small deltas
ride inside the commit record (no extra file or fsync) as long as the operator's
inline total since its snapshot stays under ``inline_delta_bytes`` (every commit
record repeats the chain), bigger ones go to ``state/<op>/<T>.delta``. Now and then
a full snapshot is due (`snapshot_due`): it is encoded in the batch loop (a
consistent copy) and written by a background thread; the chains switch to it once
the thread is done (`adopt`), so a slow storage never stalls the batches, and a
snapshot still in flight when the next one is due is waited for (chains stay bounded).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

from streamkeep import _faults
from streamkeep.checkpoint import Checkpoint
from streamkeep.dstream._graph import StatefulNode
from streamkeep.errors import CheckpointError
from streamkeep.executors.base import Executor
from streamkeep.scheduler._state_io import Chain, encode_state

#: Adaptive snapshots (snapshot_every=None): the first one after this many batches ...
FIRST_SNAPSHOT_AFTER = 20
#: ... and never more than this many batches apart (bounds the files a restart reads).
MAX_CHAIN = 500

#: on_snapshot(batch time, bytes written, ms, encoded bytes per operator), called once a snapshot is adopted
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
        self.delta_bytes = 0  # state bytes written as deltas since the last snapshot
        self.snapshot_bytes: int | None = None  # size of the last snapshot this process wrote
        #: did the last `write` start a snapshot, and its encoded size per operator
        self.started = False
        self.snapshot_sizes: dict[str, int] = {}
        self._thread: threading.Thread | None = None
        self._done: dict[str, tuple[int, str]] = {}
        self._error: BaseException | None = None
        self._stats: tuple[int, float] = (0, 0.0)

    def restored(self, chains: dict[str, Chain]) -> None:
        """Continue the chains a recovered commit holds (and its snapshot cadence)."""
        self.chains = chains
        # Resume the snapshot cadence: a job restarted often must still snapshot (bounded chains).
        self.since_snapshot = max((len(c.deltas) for c in chains.values()), default=0)

    def write(self, t: int, executor: Executor) -> dict[str, Any]:
        """Write batch `t`'s deltas, start a snapshot if one is due; the chains for its commit record."""
        ckpt = self.ckpt
        self.started = False
        for name in executor.operators():
            chain = self.chains.setdefault(name, Chain())
            delta = executor.delta(name)
            if delta is not None:
                node = self.nodes[name]
                payload = encode_state(node, delta)
                self.delta_bytes += len(payload)
                inline_bytes = sum(len(e["data"]) for _, e in chain.deltas if isinstance(e, dict))
                if inline_bytes + len(payload) <= self.inline_delta_bytes:
                    chain.deltas.append((t, {"t": t, "codec": node.codec, "data": payload}))
                else:
                    chain.deltas.append((t, ckpt.write_state(name, t, "delta", payload, node.codec)))
                _faults.point("state.mid_write")
        _faults.point("state.after_write")
        self.since_snapshot += 1
        due = self.snapshot_due()
        self.adopt(wait=due)
        if due and self._thread is None:
            self.start_snapshot(t, executor)
        return {name: c.as_data() for name, c in self.chains.items()}

    def snapshot_due(self) -> bool:
        """Is a full snapshot due after this batch?

        With ``snapshot_every`` set: every that many batches. By default (adaptive): once
        the deltas written since the last snapshot reach half its size, so the bytes a
        batch costs follow the keys that changed, not the size of the state, and a restart
        reads at most 1.5 snapshots' worth; the first snapshot after
        `FIRST_SNAPSHOT_AFTER` batches, and never more than `MAX_CHAIN` batches apart.
        """
        if self.snapshot_every is not None:
            return self.since_snapshot >= self.snapshot_every
        if self.since_snapshot >= MAX_CHAIN:
            return True
        if self.snapshot_bytes is None:
            return self.since_snapshot >= FIRST_SNAPSHOT_AFTER
        return self.delta_bytes * 2 >= self.snapshot_bytes

    def start_snapshot(self, t: int, executor: Executor) -> None:
        """Encode every operator's whole state now; write it in a background thread."""
        ckpt, nodes = self.ckpt, self.nodes
        self.since_snapshot = 0
        payloads = {name: (nodes[name].codec, encode_state(nodes[name], executor.snapshot(name))) for name in executor.operators()}
        self.delta_bytes = 0
        self.snapshot_bytes = sum(len(p) for _, p in payloads.values())
        self.snapshot_sizes = {name: len(p) for name, (_, p) in payloads.items()}
        self.started = True

        def write() -> None:
            try:
                done = {}
                w0, b0 = time.perf_counter(), ckpt.written_bytes()
                for name, (codec, payload) in payloads.items():
                    rel = ckpt.write_state(name, t, "snap", payload, codec)
                    done[name] = (t, rel)
                    _faults.point("snapshot.mid_write")
                self._stats = (ckpt.written_bytes() - b0, (time.perf_counter() - w0) * 1e3)
                self._done = done
            except BaseException as exc:
                self._error = exc

        self._thread = threading.Thread(target=write, name="streamkeep-snapshot", daemon=True)
        self._thread.start()

    def adopt(self, wait: bool = False) -> None:
        """Switch the chains to a snapshot the background thread finished (waiting for it with `wait`)."""
        th = self._thread
        if th is None:
            return
        if wait:
            th.join()
        if th.is_alive():
            return
        self._thread = None
        self.check_error()
        snap_t = None
        for name, (t, rel) in self._done.items():
            chain = self.chains.setdefault(name, Chain())
            chain.snapshot, chain.snapshot_time = rel, t
            chain.deltas = [(dt, r) for dt, r in chain.deltas if dt > t]
            snap_t = t
        self._done = {}
        if snap_t is not None and self.on_snapshot is not None:
            nbytes, ms = self._stats
            self.on_snapshot(snap_t, nbytes, ms, dict(self.snapshot_sizes))

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

    def close(self) -> None:
        """Wait for a snapshot in flight (it is not adopted)."""
        if self._thread is not None:
            self._thread.join()
            self._thread = None
