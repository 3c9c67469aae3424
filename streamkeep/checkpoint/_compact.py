"""Snapshots by compaction: the previous snapshot plus the deltas since, merged into a new one.

A snapshot is never taken from live state: everything it holds is already on storage
(the operator's previous snapshot and the deltas written since, each encoded at its
batch), so a background worker reads and merges those into ``state/<op>/<T>.snap``
without touching the state the batch loop is changing (user code that changes a
value in place after its batch cannot reach what was encoded at that batch).

State data (what runtimes hand out and load) is a dict with any of the keys:

* ``set`` / ``del``: keyed state, (key, value) pairs set and keys removed;
* ``moved``: keys removed and set again since the previous delta (taken out before ``set``
  applies, so they go last: see `streamkeep.state.MemoryStateStore.take_changes`);
* ``add`` / ``drop``: window slices, ``[ts, slice]`` added and ``ts`` dropped;
* ``meta``: small per-operator values, the newest wins (event time).

`merge` applies deltas to a snapshot exactly as the runtimes' ``load`` does; anything
else (a key it does not know) cannot be merged and the caller falls back to a copy of
the live state. Snapshots are written columnar (format 3): ``cols`` holds chunks of
`CHUNK_KEYS` keys, each ``codec.encode([keys, values])``, decoded in bulk into one dict
(no per-pair tuples; about twice as fast to load as the flat ``set`` pairs payload,
which deltas keep and which snapshots of format 2 used, still read). A snapshot of at
least `ORDER_MIN_KEYS` keys of one type (str, bytes or int) also holds ``order``: the
positions of its keys in sorted order (little-endian uint32), so that a restart can look
keys up before the dict is built (`streamkeep._columns.Columns`). Readers that do not
know ``order`` ignore it: the columns alone are the whole state.

The worker is a thread, or for big states on local disks a helper process (``python -m
streamkeep.checkpoint._compact``), so that the merge does not compete with the batch
loop for the interpreter lock. Knows no operators; imports errors, codec, _faults and
the checkpoint's own modules.
"""

from __future__ import annotations

import gc
import os
import sys
from collections.abc import Callable, Iterable
from typing import Any, Final

from streamkeep import _faults
from streamkeep._columns import Columns, order_from_bytes, order_to_bytes, order_with, order_without, sorted_order
from streamkeep._util import gc_paused
from streamkeep.checkpoint._format import EMPTY_RUNS, MOVED, state_version
from streamkeep.codec import decode_items, encode_items, get_codec
from streamkeep.codec._registry import refuse_pickle
from streamkeep.errors import CheckpointError, CorruptCheckpointError

#: Keys (and values) per column chunk of a snapshot: each chunk is decoded by one call.
CHUNK_KEYS: Final = 65536
#: The data keys `merge` knows.
MERGEABLE: Final = frozenset({"set", "del", "add", "drop", "meta", EMPTY_RUNS, MOVED})
#: A snapshot of at least this many keys gets a sorted key index (``order``; sorting 1M keys takes
#: ~1 s, in the background, and only when keys came or went since the previous snapshot).
ORDER_MIN_KEYS = 65536


def decode_payload(
    codec_name: str, payload: bytes, allow_pickle: bool, where: str, *, columns: bool = False, lazy: bool = False
) -> dict[str, Any]:
    """Decode a state payload (snapshot or delta, any format) into state data.

    ``set`` comes back as (key, value) pairs from a delta or a format-2 snapshot, and as a
    dict (key -> value, fresh: the caller may keep it) from a columnar snapshot; with
    `columns`, as `Columns` from either (cheaper than both: no tuple or dict per key),
    with the snapshot's key index if it has one; with `lazy`, as `Columns` from a
    columnar snapshot that has a key index (no dict built), else as without.

    Raises:
        CorruptCheckpointError: the payload passed its checksum but does not decode.
        CheckpointError: a pickle payload where pickle is not allowed.
    """
    refuse_pickle(codec_name, allow_pickle, where)
    try:
        codec = get_codec(codec_name)
        d = dict(codec.decode(payload))
        raw_order = d.pop("order", None)
        if columns or (lazy and "cols" in d and raw_order is not None):
            if "cols" in d:
                cols = _decode_column_lists(codec, d.pop("cols"))
                if raw_order is not None:
                    cols.order = order_from_bytes(raw_order, len(cols.keys))
                d["set"] = cols
            elif "set" in d:
                flat = codec.decode(d["set"])
                if type(flat) is not list or len(flat) % 2:
                    msg = "its items are not a flat list [k0, v0, k1, v1, ...] of even length"
                    raise ValueError(msg)
                d["set"] = Columns(flat[0::2], flat[1::2])
        elif "cols" in d:
            d["set"] = _decode_columns(codec, d.pop("cols"))
        elif "set" in d:
            d["set"] = decode_items(codec, d["set"])
        return d
    except CheckpointError:
        raise
    except Exception as exc:
        msg = f"{where} passed its checksum but could not be decoded: {exc}"
        raise CorruptCheckpointError(msg) from exc


def _decode_columns(codec: Any, chunks: list[bytes]) -> dict[Any, Any]:
    out: dict[Any, Any] = {}
    with gc_paused():  # a million fresh objects would trigger collections that scan the whole heap
        for chunk in chunks:
            keys, values = _decode_chunk(codec, chunk)
            out.update(zip(keys, values, strict=False))  # lengths checked
    return out


def _decode_column_lists(codec: Any, chunks: list[bytes]) -> Columns:
    if len(chunks) == 1:  # one chunk: its lists are the columns (no copy)
        k, v = _decode_chunk(codec, chunks[0])
        return Columns(k, v)
    keys: list[Any] = []
    values: list[Any] = []
    with gc_paused():
        for chunk in chunks:
            k, v = _decode_chunk(codec, chunk)
            keys += k
            values += v
    return Columns(keys, values)


def _decode_chunk(codec: Any, chunk: bytes) -> tuple[list[Any], list[Any]]:
    k, v = codec.decode(chunk)
    if type(k) is not list or type(v) is not list:
        msg = f"a snapshot column chunk holds {type(k).__name__} and {type(v).__name__} where a list of keys and a list of values belong"
        raise ValueError(msg)
    if len(k) != len(v):
        msg = f"a snapshot column chunk holds {len(k)} keys but {len(v)} values"
        raise ValueError(msg)
    return k, v


def encode_snapshot(codec_name: str, data: dict[str, Any], *, order_min_keys: int | None = None) -> bytes:
    """Encode state data as a columnar snapshot payload (``set`` in column chunks, with a key index
    from `order_min_keys` (default `ORDER_MIN_KEYS`) keys of one indexable type: the one `Columns`
    carries, else sorted here)."""
    codec = get_codec(codec_name)
    order_min_keys = ORDER_MIN_KEYS if order_min_keys is None else order_min_keys
    out = dict(data)
    if "set" in out:
        items = out.pop("set")
        order = None
        if isinstance(items, Columns):
            keys, values, order = items.keys, items.values, items.order
        else:
            mapping = items if type(items) is dict else dict(items)
            keys, values = list(mapping), list(mapping.values())
        out["cols"] = [codec.encode([keys[i : i + CHUNK_KEYS], values[i : i + CHUNK_KEYS]]) for i in range(0, len(keys), CHUNK_KEYS)]
        if len(keys) >= order_min_keys:
            if order is None or len(order) != len(keys):
                order = sorted_order(keys)
            if order is not None:
                out["order"] = order_to_bytes(order)
    return codec.encode(out)


def encode_pairs(codec_name: str, data: dict[str, Any]) -> bytes:
    """Encode state data with ``set`` as a pairs payload (deltas, and snapshots of live state)."""
    codec = get_codec(codec_name)
    out = dict(data)
    if "set" in out:
        out["set"] = encode_items(codec, out["set"])
    return codec.encode(out)


def mergeable(data: dict[str, Any]) -> bool:
    """True when `merge` knows every key of `data`."""
    return set(data) <= MERGEABLE


def merge(snapshot: dict[str, Any] | None, deltas: list[dict[str, Any]]) -> dict[str, Any]:
    """The state data of `snapshot` with `deltas` applied in order (as a runtime's ``load`` applies them).

    Keys set by a later delta replace earlier values in place (keeping the first
    position), new keys and a delta's moved keys follow in order, removed keys go (the
    key order of the runtime that wrote them); window slices by batch time;
    the newest ``meta`` wins. `snapshot`'s ``set`` is reused when it is a dict.

    Raises:
        ValueError: an input holds a key `merge` does not know (see `mergeable`).
    """
    parts = ([snapshot] if snapshot is not None else []) + deltas
    for p in parts:
        if not mergeable(p):
            msg = f"cannot merge state data with keys {sorted(set(p) - MERGEABLE)}"
            raise ValueError(msg)
    out: dict[str, Any] = {}
    if any("set" in p or "del" in p for p in parts):
        base = snapshot.get("set", ()) if snapshot is not None else ()
        if isinstance(base, Columns):
            out["set"] = _merge_columns(base, deltas)
        else:
            keyed: dict[Any, Any] = base if type(base) is dict else dict(base)
            for d in deltas:
                for k in d.get(MOVED, ()):
                    keyed.pop(k, None)
                keyed.update(d.get("set", ()))
                for k in d.get("del", ()):
                    keyed.pop(k, None)
            out["set"] = keyed
        out["del"] = []
    if any("add" in p or "drop" in p for p in parts):
        slices: dict[int, Any] = {}
        for p in parts:
            for ts, s in p.get("add", ()):
                slices[int(ts)] = s
            for ts in p.get("drop", ()):
                slices.pop(int(ts), None)
        out["add"], out["drop"] = [[ts, s] for ts, s in sorted(slices.items())], []
        # only a `window`'s data is marked, and its slices are lists of partitions, its empty runs maps
        if any(p.get(EMPTY_RUNS) for p in parts) and any(type(s) is dict for s in slices.values()):
            out[EMPTY_RUNS] = True
    meta = [p["meta"] for p in parts if "meta" in p]
    if meta:
        out["meta"] = meta[-1]
    return out


def _merge_columns(base: Columns, deltas: list[dict[str, Any]]) -> Columns:
    """`merge` of keyed state given as columns, in a few C-speed passes over the keys (no dict of them all).

    The same result as a dict: a key set again keeps its place, a removed key goes,
    and a key (re-)added after it was absent goes to the end, in order. The base's key
    index is carried over (removed keys dropped, a few added ones inserted) rather than
    sorted again.
    """
    touched: set[Any] = set()
    for d in deltas:
        touched.update(k for k, _ in d.get("set", ()))
        touched.update(d.get("del", ()))
        touched.update(d.get(MOVED, ()))
    if not touched:
        return base
    alive = set(filter(touched.__contains__, base.keys))  # touched keys in the base, still there
    gone: set[Any] = set()  # base keys removed (a re-added one lives in `tail`)
    new_values: dict[Any, Any] = {}  # base keys' new values
    tail: dict[Any, Any] = {}  # keys not (or no longer) in the base, in insertion order

    def drop(keys: Iterable[Any]) -> None:
        for k in keys:
            if k in alive:
                alive.discard(k)
                gone.add(k)
                new_values.pop(k, None)
            else:
                tail.pop(k, None)

    for d in deltas:
        drop(d.get(MOVED, ()))  # set again below: last, in order
        for k, v in d.get("set", ()):
            if k in alive:
                new_values[k] = v
            else:
                tail[k] = v
        drop(d.get("del", ()))
    keys, values, order = base.keys, base.values, base.order
    if gone:
        keep = [k not in gone for k in keys]
        keys = [k for k, y in zip(keys, keep, strict=True) if y]
        values = [v for v, y in zip(values, keep, strict=True) if y]
        if order is not None:
            order = order_without(order, keep)
    if new_values:
        values = list(map(new_values.get, keys, values))  # the new value, else the old one
    if not tail:
        return Columns(keys, values, order)  # the key index follows (no full sort)
    out_keys = [*keys, *tail]
    return Columns(out_keys, [*values, *tail.values()], order_with(order, out_keys, len(keys)) if order is not None else None)


#: One operator's compaction: (operator, codec, its chain as stored in a commit record).
Job = tuple[str, str, dict[str, Any]]


def join_parts(parts: list[dict[str, Any] | None]) -> dict[str, Any] | None:
    """Join the key partitions' deltas (or snapshots) of one operator and batch into one (None when all are None).

    The partitions hold disjoint keys: ``set``/``del`` are concatenated (a snapshot's ``set``
    may be a dict, as decoded), window slices of the same time joined, ``drop`` and ``meta``
    (the same in every partition) kept once.
    """
    present = [p for p in parts if p is not None]
    if not present:
        return None
    if len(present) == 1:
        return present[0]
    out: dict[str, Any] = {}
    adds: dict[Any, list[Any]] = {}
    for p in present:
        for name, value in p.items():
            if name in ("set", "del", MOVED):
                items = value.items() if isinstance(value, dict) else zip(*value, strict=True) if isinstance(value, Columns) else value
                out.setdefault(name, []).extend(items)
            elif name == "add":
                out.setdefault("add", [])
                for ts, items in value:
                    adds.setdefault(ts, []).extend(items.items() if isinstance(items, dict) else items)
            elif name == "drop":
                seen = out.setdefault("drop", [])
                seen.extend(ts for ts in value if ts not in seen)
            else:
                out[name] = value
    if "add" in out:
        out["add"] = [[ts, items] for ts, items in adds.items()]
    return out


def read_entry(ckpt: Any, entry: Any, allow: bool, *, columns: bool = False, lazy: bool = False) -> dict[str, Any] | None:
    """The state data of one entry of a stored chain: a file's path, an inline delta, or every key partition's part joined.

    A key-partitioned entry (format 5) is a snapshot's list of per-partition paths or a delta's
    ``{"t": T, "parts": [...]}`` (each part a path, an inline ``{"codec", "data"}`` or None);
    None when every part is None. `columns` is honoured for whole files and inline deltas, `lazy`
    (see `decode_payload`) for whole files.
    """
    if isinstance(entry, list):
        return join_parts([read_entry(ckpt, p, allow) for p in entry])
    if isinstance(entry, dict) and "parts" in entry:
        return join_parts([read_entry(ckpt, p, allow) for p in entry["parts"]])
    if entry is None:
        return None
    if isinstance(entry, dict):
        return decode_payload(entry["codec"], entry["data"], allow, f"inline delta of batch {entry.get('t', '?')}", columns=columns)
    name, payload = ckpt.read_state(entry, allow)
    return decode_payload(name, payload, allow, f"state file {ckpt.storage.path(entry)}", columns=columns, lazy=lazy)


def compact(
    ckpt: Any, t: int, jobs: list[Job], *, point: Callable[[str], None] | None = None, order_min_keys: int | None = None
) -> dict[str, tuple[str, int]]:
    """Merge each job's chain into a snapshot of batch `t` and write it; {operator: (its path, payload bytes)}.

    An operator whose inputs cannot be merged is left out (its chain stays as it is).
    `point` is called at the crash points (default `_faults.point`; a helper process passes a no-op).
    A chain's key-partitioned entries (written on Ray) are joined: the snapshot is one whole file.
    `order_min_keys`: see `encode_snapshot`.

    Raises:
        CheckpointError: an input could not be read, or the snapshot not written.
    """
    point = point if point is not None else _faults.point
    done: dict[str, tuple[str, int]] = {}
    for op, codec, chain in jobs:
        allow = codec == "pickle"
        snap = read_entry(ckpt, chain["snapshot"], allow, columns=True) if chain.get("snapshot") else None
        deltas = []
        for i, r in enumerate(chain.get("deltas", ())):
            base = snap is None and i == 0  # the first delta on empty state becomes the base (below): as columns
            d = read_entry(ckpt, r, allow, columns=base)
            if d is not None:
                deltas.append(d)
        if not all(mergeable(p) for p in ([snap] if snap else []) + deltas):
            continue
        data = merged(snap, deltas)
        point("snapshot.mid_compact")
        payload = encode_snapshot(codec, data, order_min_keys=order_min_keys)
        done[op] = (ckpt.write_state(op, t, "snap", payload, codec, state_version(data)), len(payload))
        point("snapshot.mid_write")
    return done


def merged(snap: dict[str, Any] | None, deltas: list[dict[str, Any]]) -> dict[str, Any]:
    """`merge` of a chain's decoded snapshot and deltas (`deltas` is consumed)."""
    if snap is None and deltas:
        # The first delta on empty state is the base (a delta sets each key once; its removals find nothing).
        snap = {**deltas.pop(0), "del": []}
    return merge(snap, deltas)


def _die_with_parent(parent: int) -> None:
    """Have the kernel kill this helper when its parent dies (Linux); exit if it already did."""
    if sys.platform.startswith("linux"):
        try:
            import ctypes
            import signal

            libc = ctypes.CDLL(None, use_errno=True)
            libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
        except Exception:  # pragma: no cover - best effort
            pass
    if os.getppid() != parent:
        os._exit(3)


def main() -> None:
    """Helper process: read a job (msgpack on stdin), compact, print the result (msgpack on stdout)."""
    from streamkeep.checkpoint._checkpoint import Checkpoint

    gc.disable()  # a short-lived process: nothing to collect that exit does not
    codec = get_codec("msgpack")
    job = codec.decode(sys.stdin.buffer.read())
    _die_with_parent(int(job["parent"]))
    try:
        ckpt = Checkpoint(job["url"], storage_options=job["storage_options"])
        jobs = [(op, c, chain) for op, c, chain in job["jobs"]]
        done = compact(ckpt, int(job["t"]), jobs, point=lambda _: None, order_min_keys=job.get("order_min_keys"))
        out: dict[str, Any] = {"done": done, "bytes": ckpt.written_bytes()}
    except Exception as exc:
        out = {"error": f"{type(exc).__name__}: {exc}"}
    sys.stdout.buffer.write(codec.encode(out))
    sys.stdout.buffer.flush()
    os._exit(0)  # skip freeing a million objects one by one: the kernel takes the memory back at once


if __name__ == "__main__":
    main()
