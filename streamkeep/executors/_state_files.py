"""State files written by the partition owners: deltas, snapshots (by compaction) and the storage probe.

A key-partitioned operator's state is written by whoever holds each key partition (a
Ray actor, `PartitionHost`), straight to the checkpoint storage, as
``state/<op>/<T>.p<i>of<n>.e<epoch>.delta|snap`` (`streamkeep.checkpoint.Checkpoint.write_part`).
The owner acknowledges each file with its path and size; the driver lists them in the
commit record, which alone makes them part of the checkpoint. Snapshots are compacted per
partition (`compact_part`: the partition's slice of the previous snapshot plus the deltas
since, read from storage), in a Ray task, without the driver reading any state.

Plain Python (no Ray); imports the checkpoint layer and the executors' own modules.
"""

from __future__ import annotations

import os
from typing import Any

from streamkeep._util import random_id
from streamkeep.checkpoint import Checkpoint
from streamkeep.checkpoint._compact import Job, encode_snapshot, join_parts, mergeable, merged, read_entry
from streamkeep.checkpoint._format import MOVED, MOVED_VERSION, state_version
from streamkeep.codec import UnsupportedValueError, encode_items, get_codec
from streamkeep.dstream._graph import StatefulNode
from streamkeep.errors import CheckpointError, StreamkeepError
from streamkeep.executors._runtime import StatefulRuntime

#: Name prefix of the storage probes (a temp file's prefix: a leftover is swept like any interrupted write).
PROBE_PREFIX = ".tmp-probe-"


#: A PySpark program's operators take no codec=: it is a SparkConf setting there.
_PYSPARK_CODEC = "; in a PySpark program, conf.set('spark.streamkeep.codec', 'pickle') on the SparkConf"


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
                f"pickle with codec='pickle' on the operator (or the context){_PYSPARK_CODEC}."
            )
            raise CheckpointError(msg) from exc
        todo = (
            "Make it picklable (a class defined at a module's top level, not inside a function), or convert it to "
            "plain data (dict, list, tuple, str, int, float, bytes, set, datetime)."
            if node.codec == "pickle"
            else "Convert it to plain data (dict, list, tuple, str, int, float, bytes, set, datetime), or opt in to "
            f"pickle with codec='pickle' on the operator (or the context){_PYSPARK_CODEC}."
        )
        msg = (
            f"the state of operator {node.name!r} ({node.op}) holds a value of type {exc.type_name}{key} that the "
            f"{node.codec} codec cannot store ({exc.path}). {todo}"
        )
        raise CheckpointError(msg) from exc


#: What an owner acknowledges per operator: (its entry -- a path, or a small payload inline as
#: {"codec", "data"} --, payload bytes, whether `merge` can apply it).
Ack = tuple[Any, int, bool]


class PartWriter:
    """Writes one key partition's state files (in the partition owner's process)."""

    def __init__(self, url: str, storage_options: dict[str, Any] | None, part: int, count: int) -> None:
        self.ckpt = Checkpoint(url, storage_options=storage_options)
        self.part = part
        self.count = count

    def delta(self, rt: StatefulRuntime, t: int, epoch: int, inline_max: int) -> Ack | None:
        """Write what changed in `rt` since the last call (inline when at most `inline_max` bytes); None when nothing did."""
        d = rt.delta()
        if d is None:
            return None
        node = rt.node
        payload = encode_state(node, d)
        version = state_version(d)
        if len(payload) <= inline_max:
            inline: dict[str, Any] = {"codec": node.codec, "data": payload}
            if version == MOVED_VERSION:
                inline[MOVED] = True  # the commit records inlining it are format 9 (`Checkpoint.commit`)
            return inline, len(payload), mergeable(d)
        rel = self.ckpt.write_part(node.name, t, "delta", payload, node.codec, self.part, self.count, epoch, version)
        return rel, len(payload), mergeable(d)

    def snapshot(self, rt: StatefulRuntime, t: int, epoch: int) -> tuple[str | None, int]:
        """Write a copy of `rt`'s whole state as its snapshot of batch `t` (deltas `merge` cannot apply)."""
        node = rt.node
        if rt.key_count() == 0:
            return None, 0
        payload = encode_state(node, rt.snapshot())
        return self.ckpt.write_part(node.name, t, "snap", payload, node.codec, self.part, self.count, epoch), len(payload)


def slice_entry(ckpt: Checkpoint, entry: Any, allow: bool, part: int, count: int, split: Any) -> dict[str, Any] | None:
    """Partition `part` (of `count`) of one chain entry's state data.

    An entry written by `count` partitions gives its own part (one file read); any other
    (a whole file, an inline delta, or parts of another partition count) is read whole
    and cut by key hash with `split` (`streamkeep.executors._partitions.split_state`).
    """
    parts = entry if isinstance(entry, list) else entry.get("parts") if isinstance(entry, dict) else None
    if parts is not None and len(parts) == count:
        return read_entry(ckpt, parts[part], allow)
    data = read_entry(ckpt, entry, allow)
    if data is None:
        return None
    out: dict[str, Any] | None = split(data, count)[part]
    return out


def compact_part(url: str, storage_options: dict[str, Any] | None, t: int, epoch: int, part: int, count: int, jobs: list[Job], split: Any) -> dict[str, tuple[str | None, int]]:
    """Snapshot of batch `t` of key partition `part` of each job's operator: its slice of the chain, merged and written.

    Returns {operator: (path or None when the partition holds nothing, payload bytes)}; an
    operator whose stored data cannot be merged is left out (the driver has it copied).
    """
    ckpt = Checkpoint(url, storage_options=storage_options)
    done: dict[str, tuple[str | None, int]] = {}
    for op, codec, chain in jobs:
        allow = codec == "pickle"
        snap = slice_entry(ckpt, chain["snapshot"], allow, part, count, split) if chain.get("snapshot") else None
        deltas = [d for d in (slice_entry(ckpt, r, allow, part, count, split) for r in chain.get("deltas", ())) if d is not None]
        if not all(mergeable(p) for p in ([snap] if snap else []) + deltas):
            continue
        data = merged(snap, deltas)
        if not any(data.get(k) for k in ("set", "add", "meta")):
            done[op] = (None, 0)  # nothing in this partition
            continue
        payload = encode_snapshot(codec, data)
        done[op] = (ckpt.write_part(op, t, "snap", payload, codec, part, count, epoch), len(payload))
    return done


def read_probe(url: str, storage_options: dict[str, Any] | None, rel: str, token: str) -> str | None:
    """Why the probe `rel` (holding `token`) cannot be read here, or None when it can."""
    try:
        ckpt = Checkpoint(url, storage_options=storage_options)
        got = ckpt.storage.read(rel)
    except (StreamkeepError, OSError) as exc:
        return f"{type(exc).__name__}: {exc}"
    if got != token.encode():
        return f"{rel} holds {got[:40]!r}, not the probe written for this check"
    return None


def write_probe(url: str, storage_options: dict[str, Any] | None, who: str) -> tuple[str, str]:
    """Write a probe file under the checkpoint root; (its path relative to the root, its content)."""
    token = f"{who}-{os.getpid()}-{random_id()}"
    rel = f"{PROBE_PREFIX}{token}"
    Checkpoint(url, storage_options=storage_options).storage.write(rel, token.encode())
    return rel, token


def delete_probe(url: str, storage_options: dict[str, Any] | None, rel: str) -> None:
    """Delete a probe (best effort: a leftover is a temp file, swept at the next recovery)."""
    try:
        Checkpoint(url, storage_options=storage_options).storage.delete(rel)
    except (StreamkeepError, OSError):
        pass


__all__ = ["PROBE_PREFIX", "Ack", "PartWriter", "compact_part", "delete_probe", "encode_state", "join_parts", "read_probe", "slice_entry", "write_probe"]
