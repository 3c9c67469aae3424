"""`streamkeep checkpoint inspect URL [--json]`: what a checkpoint holds.

Versions, last commit, pending batches, source positions, each stateful operator's
keys and bytes, every file. Read-only (see `streamkeep.cli._common`).
"""

from __future__ import annotations

import contextlib
import json
from typing import Any

from streamkeep.checkpoint import Checkpoint, CommitRecord
from streamkeep.checkpoint._checkpoint import check_chain, graph_path, log_path
from streamkeep.checkpoint._format import read_frame
from streamkeep.checkpoint._layout import walk
from streamkeep.cli._common import human, iso, open_checkpoint, read_records, short, size
from streamkeep.errors import CheckpointError
from streamkeep.executors._event_time import EventWindowRuntime, iso_ms
from streamkeep.executors._runtime import StatefulRuntime
from streamkeep.executors._tables import AggregateStateRuntime
from streamkeep.executors.kinds import make_runtime, node_from_description
from streamkeep.scheduler._state_io import load_chain


def _runtime_for(name: str, desc: dict[str, Any], interval_ms: int, zero_ms: int) -> StatefulRuntime | None:
    """A runtime able to load an operator's stored state, built from its description alone."""
    node = node_from_description(name, desc, interval_ms)
    return None if node is None else make_runtime(node, zero_ms)


# --------------------------------------------------------------------------- inspect


def _operator_info(ckpt: Checkpoint, rec: CommitRecord, graph: dict[str, Any], name: str, chain: dict[str, Any]) -> dict[str, Any]:
    desc = graph.get("operators", {}).get(name, {})
    try:  # never stat or read a path the record names outside the operator's own files
        check_chain(name, chain, log_path(rec.seq))
    except CheckpointError as exc:
        return {"kind": desc.get("kind"), "codec": desc.get("codec"), "keys": None, "bytes": 0, "snapshot": None,
                "snapshot_time_ms": None, "snapshot_bytes": 0, "deltas": 0, "delta_bytes": 0, "error": str(exc)}
    snap = chain.get("snapshot")
    deltas = list(chain.get("deltas", []))
    snap_bytes = _entry_bytes(ckpt, snap)
    delta_bytes = sum(_entry_bytes(ckpt, d) for d in deltas)
    info: dict[str, Any] = {
        "kind": desc.get("kind"),
        "codec": desc.get("codec"),
        "keys": None,
        "bytes": snap_bytes + delta_bytes,
        "snapshot": snap,
        "snapshot_time_ms": int(chain.get("snapshot_time", 0)) if snap else None,
        "snapshot_bytes": snap_bytes,
        "deltas": len(deltas),
        "delta_bytes": delta_bytes,
    }
    partitions = sorted({len(e) for e in [snap, *deltas] if isinstance(e, list)} | {len(e["parts"]) for e in deltas if isinstance(e, dict) and "parts" in e})
    if partitions:  # written by key partition owners (Ray): the partition counts its files were written with
        info["partitions"] = partitions
    shape = {k: v for k, v in desc.items() if k not in ("kind", "codec", "feeds")}
    if shape:
        info["shape"] = shape
    if isinstance(desc.get("feeds"), list):  # descriptions before feeds were stored have none
        info["feeds"] = desc["feeds"]
    if desc.get("codec") == "pickle":
        info["note"] = "pickle codec: not decoded (decoding would run code stored in the checkpoint)"
        return info
    rt = _runtime_for(name, desc, int(graph.get("batch_interval_ms", rec.data.get("batch_interval_ms", 1000))), int(rec.data["zero_ms"]))
    if rt is None:
        info["note"] = f"unknown operator kind {desc.get('kind')!r}: written by another streamkeep version?"
        return info
    try:
        load_chain(ckpt, rt, chain)
    except CheckpointError as exc:
        info["error"] = str(exc)
        return info
    info["keys"] = rt.key_count()
    if isinstance(rt, EventWindowRuntime):
        info["event_time"] = rt.status()
    if isinstance(rt, AggregateStateRuntime):  # an Arrow table: its columns (rows are the keys)
        info["table"] = rt.state_info()
    return info


def _entry_bytes(ckpt: Checkpoint, entry: Any) -> int:
    """Bytes of a chain entry: a file, an inline delta, or every key partition's part."""
    if not entry:
        return 0
    if isinstance(entry, list):
        return sum(_entry_bytes(ckpt, p) for p in entry)
    if isinstance(entry, dict) and "parts" in entry:
        return sum(_entry_bytes(ckpt, p) for p in entry["parts"])
    return size(ckpt, entry) or 0


def _collect(ckpt: Checkpoint) -> dict[str, Any]:
    out: dict[str, Any] = {"url": ckpt.url}
    try:
        ident = ckpt.identity()
    except CheckpointError as exc:
        ident = {}
        out["identity_error"] = str(exc)
    out["format_version"] = ident.get("format_version")
    out["engine_version"] = ident.get("engine_version")
    out["created_ms"] = ident.get("created_ms")
    out["created"] = iso(ident.get("created_ms"))
    with contextlib.suppress(CheckpointError, FileNotFoundError):
        lease = ckpt.read("lease", "lease")
        if isinstance(lease, dict):
            out["lease"] = {**lease, "heartbeat": iso(lease.get("heartbeat_ms"))}
    records, bad = read_records(ckpt)
    out["unreadable_records"] = bad
    # The identity file keeps the version it was created with; the records say what the job writes now.
    out["newest_record_format_version"] = max((v for v in (_record_version(ckpt, r.seq) for r in records) if v is not None), default=None)
    commits = [r for r in records if r.kind == "commit"]
    out["commits"] = [{"seq": r.seq, "batch_time_ms": r.batch_time, "batch_time": iso(r.batch_time)} for r in commits]
    last = commits[0] if commits else None
    plans = ckpt.plan_times()
    committed = last.batch_time if last else -1
    pending = []
    for t in (t for t in plans if t > committed):
        entry: dict[str, Any] = {"batch_time_ms": t, "batch_time": iso(t)}
        try:
            entry["sources"] = ckpt.read_plan(t).get("sources", {})
        except CheckpointError as exc:
            entry["error"] = str(exc)
        pending.append(entry)
    out["pending_batches"] = pending
    out["operators"] = {}
    if last is None:
        out["last_commit"] = None
        out["positions"] = {}
        out["sources"] = {}
    else:
        d = last.data
        out["last_commit"] = {
            "seq": last.seq,
            "epoch": d.get("epoch"),
            "batch_time_ms": last.batch_time,
            "batch_time": iso(last.batch_time),
            "written_ms": d.get("written_ms"),
            "written": iso(d.get("written_ms")),
            "engine_version": d.get("engine_version"),
        }
        if last.graph_id is not None:
            out["last_commit"]["graph_file"] = graph_path(last.graph_id)
        try:
            graph = ckpt.graph_of(last)
        except CheckpointError as exc:  # the operators' kinds are unknown: their state is not decoded
            graph = {}
            out["last_commit"]["graph_error"] = str(exc)
        out["zero_ms"] = d.get("zero_ms")
        out["batch_interval_ms"] = d.get("batch_interval_ms")
        out["positions"] = d.get("positions", {})
        out["sources"] = graph.get("sources", {})
        for name, chain in d.get("state", {}).items():
            out["operators"][name] = _operator_info(ckpt, last, graph, name, chain)
    files = [{"path": rel, "bytes": size(ckpt, rel)} for rel in walk(ckpt)]
    out["files"] = files
    out["total_bytes"] = sum(f["bytes"] or 0 for f in files)
    return out


def _record_version(ckpt: Checkpoint, seq: int) -> int | None:
    """The format version a log record is framed with (None if it cannot be read again)."""
    rel = log_path(seq)
    try:
        return read_frame(ckpt.storage.path(rel), ckpt.storage.read(rel), "record", rel).version
    except CheckpointError:
        return None


def _print_inspect(info: dict[str, Any]) -> None:
    p = print
    p(f"checkpoint {info['url']}")
    newest = info.get("newest_record_format_version")
    records = f"newest format version among the log records: {newest}" if newest is not None else "no readable log record"
    p(
        f"  identity file (CHECKPOINT): format version {info['format_version']}, written by streamkeep {info['engine_version']}, "
        f"created {info['created'] or '?'}; {records}"
    )
    if "identity_error" in info:
        p(f"  identity: {info['identity_error']}")
    lease = info.get("lease")
    if lease:
        state = "released" if lease.get("released") else "held"
        p(
            f"  driver lease: {state}, epoch {lease.get('epoch')}, pid {lease.get('pid')} on {lease.get('host')}, last heartbeat {lease.get('heartbeat')}"
        )
    last = info["last_commit"]
    if last is None:
        p("  last committed batch: none (nothing committed yet)")
    else:
        p(f"  last committed batch: {last['batch_time_ms']} ms ({last['batch_time']}), log record {last['seq']}, epoch {last['epoch']}")
        p(f"  batch interval {info['batch_interval_ms']} ms, batch times aligned to {info['zero_ms']} ms")
        if "graph_error" in last:
            p(f"  graph description: {last['graph_error']}")
    older = info["commits"][1:]
    if older:
        p("  older retained commits: " + ", ".join(f"{c['batch_time_ms']} ms (record {c['seq']})" for c in older))
    for msg in info["unreadable_records"]:
        p(f"  UNREADABLE log record {msg}")
    pend = info["pending_batches"]
    p(f"  pending batches (planned, not committed; replayed at restart): {len(pend)}")
    for e in pend:
        p(f"    {e['batch_time_ms']} ms ({e['batch_time']}): " + (e.get("error") or short(e.get("sources"))))
    p("  sources:" if info["sources"] or info["positions"] else "  sources: none recorded")
    for name in sorted(set(info["sources"]) | set(info["positions"])):
        kind = info["sources"].get(name, {}).get("kind", "?")
        p(f"    {name} ({kind}): position {short(info['positions'].get(name))}")
    p("  stateful operators:" if info["operators"] else "  stateful operators: none")
    for name, op in info["operators"].items():
        keys = "?" if op["keys"] is None else str(op["keys"])
        snap = f"snapshot of {op['snapshot_time_ms']} ms ({human(op['snapshot_bytes'])})" if op["snapshot"] else "no snapshot"
        p(
            f"    {name} ({op['kind']}, {op['codec']}): {keys} keys, {human(op['bytes'])} = {snap} + {op['deltas']} deltas ({human(op['delta_bytes'])})"
        )
        if "partitions" in op:
            p(f"      written by key partition owners ({', '.join(map(str, op['partitions']))} partitions): a file per partition per snapshot and delta")
        if "event_time" in op:
            et = op["event_time"]
            p(
                f"      event time: watermark {et.get('watermark') or 'none yet'}, {et.get('open_windows')} open window(s), "
                f"{et.get('late_records')} late record(s) so far"
            )
            for label, part in (et.get("partitions") or {}).items():
                last = part.get("last_records_batch_ms")
                p(f"        partition {label}: watermark {iso_ms(part.get('watermark_ms'))}, last records in batch {iso_ms(last) or '-'}")
        if "table" in op:
            p(f"      Arrow table (IPC), columns: {', '.join(op['table']['columns']) or 'none yet'}")
        if "shape" in op:
            p(f"      shape {short(op['shape'])}")
        if "feeds" in op:
            p(f"      reads {', '.join(op['feeds']) or 'no source or stateful operator'}")
        for k in ("note", "error"):
            if k in op:
                p(f"      {k}: {op[k]}")
    p(f"  files ({len(info['files'])}, {human(info['total_bytes'])}):")
    for f in info["files"]:
        p(f"    {f['bytes'] if f['bytes'] is not None else '?':>12}  {f['path']}")


def inspect(url: str, *, as_json: bool = False, storage_options: dict[str, Any] | None = None) -> int:
    """Print a summary of the checkpoint at `url` (JSON with `as_json`); return the exit code."""
    info = _collect(open_checkpoint(url, storage_options))
    if as_json:
        print(json.dumps(info, indent=2, default=repr))
    else:
        _print_inspect(info)
    return 0
