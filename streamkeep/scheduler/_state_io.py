"""Reading and writing operator state: chains, state encoding, and decoding what a commit needs.

Shared by the scheduler (commit, recovery) and `streamkeep checkpoint inspect/verify`.
"""

from __future__ import annotations

import gc
from dataclasses import dataclass, field
from typing import Any

from streamkeep.checkpoint import Checkpoint
from streamkeep.checkpoint._compact import decode_payload
from streamkeep.codec import UnsupportedValueError, encode_items, get_codec
from streamkeep.dstream._graph import StatefulNode
from streamkeep.errors import CheckpointError
from streamkeep.executors._runtime import StatefulRuntime


@dataclass
class Chain:
    """An operator's state chain: the snapshot it starts from and the deltas after it."""

    snapshot: str | None = None
    snapshot_time: int = 0
    #: (batch time, entry): an entry is a state file's path, or a small delta inline
    #: in the commit record as {"t": batch time, "codec": name, "data": payload}.
    deltas: list[tuple[int, Any]] = field(default_factory=list)

    def as_data(self) -> dict[str, Any]:
        """The chain as stored in a commit record."""
        return {"snapshot": self.snapshot, "snapshot_time": self.snapshot_time, "deltas": [r for _, r in self.deltas]}


def encode_state(node: StatefulNode, data: dict[str, Any]) -> bytes:
    """Encode a delta or snapshot of `node` with its codec; CheckpointError names operator, key and type."""
    codec = get_codec(node.codec)
    try:
        out = dict(data)
        if "set" in out:
            out["set"] = encode_items(codec, out["set"])
        return codec.encode(out)
    except UnsupportedValueError as exc:
        key = f" under key {exc.key_repr}" if exc.key_repr else ""
        reason = str(exc).rsplit("; ", 1)[0].rsplit(": ", 1)[-1]  # the codec's "why", e.g. its depth limit
        if "levels deep" in reason or "nested too deeply" in reason:
            msg = (
                f"the state of operator {node.name!r} ({node.op}) holds a value{key} that the {node.codec} codec cannot "
                f"store ({exc.path}): {reason}. Flatten it (e.g. a list instead of tuples in tuples), or opt in to "
                f"pickle with codec='pickle' on the operator (or the context)."
            )
            raise CheckpointError(msg) from exc
        msg = (
            f"the state of operator {node.name!r} ({node.op}) holds a value of type {exc.type_name}{key} that the "
            f"{node.codec} codec cannot store ({exc.path}). Convert it to plain data (dict, list, tuple, str, int, "
            f"float, bytes, set, datetime), or opt in to pickle with codec='pickle' on the operator (or the context)."
        )
        raise CheckpointError(msg) from exc

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

    Returns (snapshot or None, deltas in order): what `Executor.restore` takes (with `lazy`, the
    snapshot's ``set`` may be a `Columns`, see `decode_state`).
    """
    allow = codec == "pickle"
    # The cyclic GC stays off while the chain is decoded: with a big snapshot's columns alive (two
    # tracked lists of a million items), each collection the deltas' tuples trigger scans them all.
    paused = gc.isenabled()
    if paused:
        gc.disable()
    try:
        snap = read_state_file(ckpt, chain_data["snapshot"], allow, lazy=lazy) if chain_data.get("snapshot") else None
        deltas = [
            decode_state(r["codec"], r["data"], allow, f"inline delta of batch {r['t']}") if isinstance(r, dict) else read_state_file(ckpt, r, allow)
            for r in chain_data.get("deltas", [])
        ]
    finally:
        if paused:
            gc.enable()
    return snap, deltas


def load_chain(ckpt: Checkpoint, rt: StatefulRuntime, chain_data: dict[str, Any]) -> None:
    """Load an operator's state from a commit's chain ({snapshot, snapshot_time, deltas}) into `rt`."""
    rt.load(*read_chain(ckpt, rt.node.codec, chain_data))
