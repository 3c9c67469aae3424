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

    def as_data(self) -> dict[str, Any]:
        """The chain as stored in a commit record."""
        return {"snapshot": self.snapshot, "snapshot_time": self.snapshot_time, "deltas": [r for _, r in self.deltas]}


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
