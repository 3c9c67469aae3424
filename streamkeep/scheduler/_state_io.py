"""Reading and writing operator state: chains, state encoding, and decoding what a commit needs.

Shared by the scheduler (commit, recovery) and `streamkeep checkpoint inspect/verify`.
"""

from __future__ import annotations

import gc
from dataclasses import dataclass, field
from typing import Any

from streamkeep._util import promote_to_oldest_generation
from streamkeep.checkpoint import Checkpoint
from streamkeep.checkpoint._compact import decode_payload, read_entry
from streamkeep.executors._runtime import StatefulRuntime
from streamkeep.executors._state_files import encode_state

__all__ = ["Chain", "decode_state", "delta_time", "encode_state", "load_chain", "read_chain", "read_state_file"]


@dataclass
class Chain:
    """An operator's state chain: the snapshot it starts from and the deltas after it."""

    #: The snapshot's path; a list of one path (or None) per key partition when partition owners wrote it.
    snapshot: str | list[str | None] | None = None
    snapshot_time: int = 0
    #: (batch time, entry): an entry is a state file's path, or a small delta inline
    #: in the commit record as {"t": batch time, "codec": name, "data": payload}, or
    #: per key partition as {"t": batch time, "parts": [path, inline payload or None, ...]}.
    deltas: list[tuple[int, Any]] = field(default_factory=list)
    #: What `_tally` learnt of ``deltas`` so far (every commit reads the chain: only its new entries are walked).
    _seen: _Tally | None = field(default=None, repr=False, compare=False)

    @classmethod
    def from_data(cls, data: dict[str, Any]) -> Chain:
        """The chain a commit record stores (`as_data`)."""
        return cls(data.get("snapshot"), int(data.get("snapshot_time", 0)), [(delta_time(r), r) for r in data.get("deltas", [])])

    def start_at(self, t: int, snapshot: str | list[str | None]) -> None:
        """Start from `snapshot`, the state after batch `t`: the deltas up to `t` are in it."""
        self.snapshot, self.snapshot_time = snapshot, t
        self.deltas = [(dt, r) for dt, r in self.deltas if dt > t]

    def as_data(self) -> dict[str, Any]:
        """The chain as stored in a commit record (a new list of deltas: later batches append to the chain)."""
        return {"snapshot": self.snapshot, "snapshot_time": self.snapshot_time, "deltas": list(self._tally().entries)}

    def files(self) -> set[str]:
        """The state files the chain names (what its commit needs kept): `chain_files` of `as_data`."""
        out = set(self._tally().files)
        snap = self.snapshot
        if isinstance(snap, list):
            out.update(p for p in snap if isinstance(p, str))
        elif snap:
            out.add(snap)
        return out

    def inline_bytes(self) -> int:
        """Bytes of the deltas held inline in the commit record (every partition's)."""
        return self._tally().inline

    def _tally(self) -> _Tally:
        """The entries, files and inline bytes of ``deltas``, walking only the entries appended since the last call.

        ``deltas`` only grows by `list.append`; a snapshot replaces the list (a new object):
        then it is walked again from its start.
        """
        seen, deltas = self._seen, self.deltas
        if seen is None or seen.deltas is not deltas or seen.n > len(deltas):
            seen = self._seen = _Tally(deltas)
        for i in range(seen.n, len(deltas)):
            e = deltas[i][1]
            seen.entries.append(e)
            if isinstance(e, str):
                seen.files.append(e)
            elif isinstance(e, dict) and "parts" in e:
                for p in e["parts"]:
                    if isinstance(p, str):
                        seen.files.append(p)
                    elif isinstance(p, dict):
                        seen.inline += len(p["data"])
            elif isinstance(e, dict):
                seen.inline += len(e["data"])
        seen.n = len(deltas)
        return seen


class _Tally:
    """A chain's deltas as walked so far: their entries, the files among them, their inline bytes."""

    __slots__ = ("deltas", "entries", "files", "inline", "n")

    def __init__(self, deltas: list[tuple[int, Any]]) -> None:
        self.deltas = deltas  # the list walked (a chain replaced by a snapshot's gets a new one)
        self.n = 0
        self.entries: list[Any] = []
        self.files: list[str] = []
        self.inline = 0


def delta_time(rel: Any) -> int:
    """Batch time of a chain entry (a delta file path or an inline delta)."""
    if isinstance(rel, dict):
        return int(rel["t"])
    stem = rel.rsplit("/", 1)[-1].split(".")[0]
    return int(stem) if stem.isdigit() else 0


def read_state_file(ckpt: Checkpoint, rel: str, allow_pickle: bool, *, lazy: bool = False) -> dict[str, Any]:
    """Read, check and decode one state file (snapshot or delta) into the data `load` takes."""
    codec_name, payload = ckpt.read_state(rel, allow_pickle)
    return decode_state(codec_name, payload, allow_pickle, f"state file {ckpt.storage.path(rel)}", lazy=lazy)


def decode_state(codec_name: str, payload: bytes, allow_pickle: bool, where: str, *, lazy: bool = False) -> dict[str, Any]:
    """Decode a state payload (from a file or inline in a commit record) into the data `load` takes.

    A columnar snapshot's ``set`` comes back as a dict (see `streamkeep.checkpoint._compact`); with
    `lazy`, as `streamkeep._columns.Columns` when it has a key index (no dict built: the store may
    build it later, see `MemoryStateStore.load_lazy`).
    """
    return decode_payload(codec_name, payload, allow_pickle, where, lazy=lazy)


def read_chain(
    ckpt: Checkpoint, codec: str, chain_data: dict[str, Any], *, lazy: bool = False
) -> tuple[dict[str, Any] | None, list[dict[str, Any]]]:
    """Read and decode a commit's chain ({snapshot, snapshot_time, deltas}) of an operator whose codec is `codec`.

    Key-partitioned entries (written by partition owners, any partition count) come back
    with every partition's part joined. Returns (snapshot or None, deltas in order): what
    `Executor.restore` takes (with `lazy`, a whole snapshot file's ``set`` may be a `Columns`,
    see `decode_state`).
    """
    allow = codec == "pickle"
    # The cyclic GC stays off while the chain is decoded: with a big snapshot's columns alive (two
    # tracked lists of a million items), each collection the deltas' tuples trigger scans them all.
    paused = gc.isenabled()
    if paused:
        gc.disable()
    try:
        snap = read_entry(ckpt, chain_data["snapshot"], allow, lazy=lazy) if chain_data.get("snapshot") else None
        deltas = [d for d in (read_entry(ckpt, r, allow) for r in chain_data.get("deltas", [])) if d is not None]
    finally:
        if paused:
            promote_to_oldest_generation()  # the first collection after this need not walk the state just decoded
            gc.enable()
    return snap, deltas


def load_chain(ckpt: Checkpoint, rt: StatefulRuntime, chain_data: dict[str, Any]) -> None:
    """Load an operator's state from a commit's chain ({snapshot, snapshot_time, deltas}) into `rt`."""
    rt.load(*read_chain(ckpt, rt.node.codec, chain_data))
