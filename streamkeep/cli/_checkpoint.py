"""`streamkeep checkpoint inspect|verify|diff`: read-only tools for a checkpoint.

None of them claims the checkpoint or writes to it, so they are safe to run
next to a live driver (a file that retention deletes while they read is
reported as gone, not as damage). Loading state never runs code: files written
with the pickle codec are checked for framing and checksum but not decoded.

* ``inspect URL [--json]``: versions, last commit, pending batches, source
  positions, each stateful operator's keys and bytes, every file.
* ``verify URL``: every file's framing and checksum, every decodable file
  decoded, every file the retained commits and pending plans reference present.
  Exit 0 when sound, 1 with the list of problems.
* ``diff URL APP.py``: builds APP.py's graph without running the job and
  compares it with the checkpoint's stored description (scheduler/_compat).
  Exit 0 when the code can take over the checkpoint, 1 when it cannot.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import os
import runpy
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any
from unittest import mock

from streamkeep._arrow import INSTALL_HINT, ipc_table
from streamkeep.checkpoint import Checkpoint, CommitRecord, blob_path
from streamkeep.checkpoint._checkpoint import check_chain, check_record, log_path, plan_path, state_dir
from streamkeep.checkpoint._format import VERIFY_HINT, read_frame
from streamkeep.checkpoint.storage import confine
from streamkeep.context import StreamingContext
from streamkeep.errors import CheckpointError, ConfigError, IncompatibleCheckpointError
from streamkeep.executors._event_time import EventWindowRuntime
from streamkeep.executors._runtime import StatefulRuntime
from streamkeep.executors._tables import AggregateStateRuntime
from streamkeep.executors.kinds import make_runtime, node_from_description
from streamkeep.scheduler._compat import DIFF_HINT, check_compatible, differences
from streamkeep.scheduler._state_io import load_chain, read_state_file

_FRAMED_TOP = {"CHECKPOINT": "identity", "lease": "lease"}
_UNFRAMED_TOP = {"lock"}  # the OS file lock of local drivers: empty by design


# --------------------------------------------------------------------------- helpers


_LAYOUT_TOP = {"CHECKPOINT", "log", "plans", "state", "lease", "blobs"}


def _no_checkpoint(url: str) -> str:
    return (
        f"there is no streamkeep checkpoint at {url} (no CHECKPOINT file, commit log or plans): pass the directory or "
        f"URL the job was given as its checkpoint"
    )


def _looks_like_checkpoint(ckpt: Checkpoint) -> bool:
    """False for a file, a path under a file, or a directory with nothing of a checkpoint's layout."""
    if ckpt.storage.local and not os.path.isdir(ckpt.storage.root):
        return False
    return bool(_LAYOUT_TOP & set(_list_all(ckpt, "")))


def _open(url: str, storage_options: dict[str, Any] | None) -> Checkpoint:
    ckpt = Checkpoint(url, storage_options=storage_options)
    if not _looks_like_checkpoint(ckpt) or (ckpt.is_empty() and not ckpt.storage.list("plans")):
        raise CheckpointError(_no_checkpoint(url))
    return ckpt


def _iso(ms: int | None) -> str | None:
    if ms is None:
        return None
    return dt.datetime.fromtimestamp(ms / 1000, tz=dt.timezone.utc).isoformat(timespec="milliseconds")


def _walk(ckpt: Checkpoint, rel_dir: str = "") -> Iterator[str]:
    """Every file under the root (relative paths, sorted), temp files included."""
    st = ckpt.storage
    dirs = st.list_dirs(rel_dir)
    prefix = f"{rel_dir}/" if rel_dir else ""
    names = _list_all(ckpt, rel_dir)
    for n in names:
        if n not in dirs:
            yield prefix + n
    for d in dirs:
        yield from _walk(ckpt, prefix + d)


def _list_all(ckpt: Checkpoint, rel_dir: str) -> list[str]:
    st = ckpt.storage
    if st.local:
        try:
            return sorted(os.listdir(st.path(rel_dir) if rel_dir else st.root))
        except FileNotFoundError:
            return []
    return st.list(rel_dir)


def _size(ckpt: Checkpoint, rel: str | dict[str, Any]) -> int | None:
    if isinstance(rel, dict):  # a small delta inline in the commit record
        return len(rel["data"])
    try:
        return ckpt.storage.size(rel)
    except (OSError, CheckpointError):
        return None


def _read_records(ckpt: Checkpoint) -> tuple[list[CommitRecord], list[str]]:
    """Readable log records (newest first) and a message per unreadable one."""
    out, bad = [], []
    for seq in reversed(ckpt.log_seqs()):
        try:
            data = check_record(ckpt.storage.path(log_path(seq)), ckpt.read(log_path(seq), "record"))
        except (CheckpointError, FileNotFoundError) as exc:
            bad.append(f"{log_path(seq)}: {_text(exc)}")
            continue
        out.append(CommitRecord(seq, data))
    return out, bad


def _text(exc: BaseException) -> str:
    """An error's message without the advice to run `verify` (the verify output itself)."""
    return str(exc).replace(f" {VERIFY_HINT}", "").replace(VERIFY_HINT, "")


def _runtime_for(name: str, desc: dict[str, Any], interval_ms: int, zero_ms: int) -> StatefulRuntime | None:
    """A runtime able to load an operator's stored state, built from its description alone."""
    node = node_from_description(name, desc, interval_ms)
    return None if node is None else make_runtime(node, zero_ms)


# --------------------------------------------------------------------------- inspect


def _operator_info(ckpt: Checkpoint, rec: CommitRecord, name: str, chain: dict[str, Any]) -> dict[str, Any]:
    graph = rec.data.get("graph", {})
    desc = graph.get("operators", {}).get(name, {})
    try:  # never stat or read a path the record names outside the operator's own files
        check_chain(name, chain, log_path(rec.seq))
    except CheckpointError as exc:
        return {"kind": desc.get("kind"), "codec": desc.get("codec"), "keys": None, "bytes": 0, "snapshot": None,
                "snapshot_time_ms": None, "snapshot_bytes": 0, "deltas": 0, "delta_bytes": 0, "error": str(exc)}
    snap = chain.get("snapshot")
    deltas = list(chain.get("deltas", []))
    snap_bytes = (_size(ckpt, snap) or 0) if snap else 0
    delta_bytes = sum(_size(ckpt, d) or 0 for d in deltas)
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
    shape = {k: v for k, v in desc.items() if k not in ("kind", "codec")}
    if shape:
        info["shape"] = shape
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
    out["created"] = _iso(ident.get("created_ms"))
    with contextlib.suppress(CheckpointError, FileNotFoundError):
        lease = ckpt.read("lease", "lease")
        if isinstance(lease, dict):
            out["lease"] = {**lease, "heartbeat": _iso(lease.get("heartbeat_ms"))}
    records, bad = _read_records(ckpt)
    out["unreadable_records"] = bad
    commits = [r for r in records if r.kind == "commit"]
    out["commits"] = [{"seq": r.seq, "batch_time_ms": r.batch_time, "batch_time": _iso(r.batch_time)} for r in commits]
    last = commits[0] if commits else None
    plans = ckpt.plan_times()
    committed = last.batch_time if last else -1
    pending = []
    for t in (t for t in plans if t > committed):
        entry: dict[str, Any] = {"batch_time_ms": t, "batch_time": _iso(t)}
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
            "batch_time": _iso(last.batch_time),
            "written_ms": d.get("written_ms"),
            "written": _iso(d.get("written_ms")),
            "engine_version": d.get("engine_version"),
        }
        out["zero_ms"] = d.get("zero_ms")
        out["batch_interval_ms"] = d.get("batch_interval_ms")
        out["positions"] = d.get("positions", {})
        out["sources"] = d.get("graph", {}).get("sources", {})
        for name, chain in d.get("state", {}).items():
            out["operators"][name] = _operator_info(ckpt, last, name, chain)
    files = [{"path": rel, "bytes": _size(ckpt, rel)} for rel in _walk(ckpt)]
    out["files"] = files
    out["total_bytes"] = sum(f["bytes"] or 0 for f in files)
    return out


def _human(n: int | None) -> str:
    if n is None:
        return "?"
    if n < 1024:
        return f"{n} B"
    for unit in ("KiB", "MiB", "GiB", "TiB"):
        n_f = n / 1024
        if n_f < 1024 or unit == "TiB":
            return f"{n_f:.1f} {unit}"
        n = int(n_f)
    return f"{n} B"  # pragma: no cover


def _short(value: Any, limit: int = 100) -> str:
    text = json.dumps(value, default=repr, sort_keys=True)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _print_inspect(info: dict[str, Any]) -> None:
    p = print
    p(f"checkpoint {info['url']}")
    p(f"  format version {info['format_version']}, written by streamkeep {info['engine_version']}, created {info['created'] or '?'}")
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
    older = info["commits"][1:]
    if older:
        p("  older retained commits: " + ", ".join(f"{c['batch_time_ms']} ms (record {c['seq']})" for c in older))
    for msg in info["unreadable_records"]:
        p(f"  UNREADABLE log record {msg}")
    pend = info["pending_batches"]
    p(f"  pending batches (planned, not committed; replayed at restart): {len(pend)}")
    for e in pend:
        p(f"    {e['batch_time_ms']} ms ({e['batch_time']}): " + (e.get("error") or _short(e.get("sources"))))
    p("  sources:" if info["sources"] or info["positions"] else "  sources: none recorded")
    for name in sorted(set(info["sources"]) | set(info["positions"])):
        kind = info["sources"].get(name, {}).get("kind", "?")
        p(f"    {name} ({kind}): position {_short(info['positions'].get(name))}")
    p("  stateful operators:" if info["operators"] else "  stateful operators: none")
    for name, op in info["operators"].items():
        keys = "?" if op["keys"] is None else str(op["keys"])
        snap = f"snapshot of {op['snapshot_time_ms']} ms ({_human(op['snapshot_bytes'])})" if op["snapshot"] else "no snapshot"
        p(
            f"    {name} ({op['kind']}, {op['codec']}): {keys} keys, {_human(op['bytes'])} = {snap} + {op['deltas']} deltas ({_human(op['delta_bytes'])})"
        )
        if "event_time" in op:
            p(f"      event time: {_short(op['event_time'])}")
        if "table" in op:
            p(f"      Arrow table (IPC), columns: {', '.join(op['table']['columns']) or 'none yet'}")
        if "shape" in op:
            p(f"      shape {_short(op['shape'])}")
        for k in ("note", "error"):
            if k in op:
                p(f"      {k}: {op[k]}")
    p(f"  files ({len(info['files'])}, {_human(info['total_bytes'])}):")
    for f in info["files"]:
        p(f"    {f['bytes'] if f['bytes'] is not None else '?':>12}  {f['path']}")


def inspect(url: str, *, as_json: bool = False, storage_options: dict[str, Any] | None = None) -> int:
    """Print a summary of the checkpoint at `url` (JSON with `as_json`); return the exit code."""
    info = _collect(_open(url, storage_options))
    if as_json:
        print(json.dumps(info, indent=2, default=repr))
    else:
        _print_inspect(info)
    return 0


# --------------------------------------------------------------------------- verify


@dataclass
class _Report:
    problems: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    ok_files: set[str] = field(default_factory=set)
    bad_commits: set[int] = field(default_factory=set)
    checked: int = 0


def _check_file(ckpt: Checkpoint, rel: str, rep: _Report, pickled_ops: set[str]) -> None:
    """Framing, identity, checksum and decoding of one file, as recovery would read it.

    `pickled_ops` are the state directories of operators with ``codec="pickle"``: only their
    state files may be pickled (they are checked, not decoded); recovery refuses any other
    pickled file, and so does this check.
    """
    parts = rel.split("/")
    name = parts[-1]
    if name.startswith(".tmp-"):
        rep.notes.append(f"{rel}: leftover of an interrupted write (harmless; the next driver removes it)")
        return
    if rel in _UNFRAMED_TOP:
        return
    kind: str | None
    if rel in _FRAMED_TOP:
        kind = _FRAMED_TOP[rel]
    elif parts[0] == "log" and len(parts) == 2 and name.endswith(".rec"):
        kind = "record"
    elif parts[0] == "plans" and len(parts) == 2 and name.endswith(".plan"):
        kind = "plan"
    elif parts[0] == "state" and len(parts) == 3 and name.endswith((".delta", ".snap")):
        kind = "delta" if name.endswith(".delta") else "snap"
    elif parts[0] == "blobs" and len(parts) == 2:
        kind = "blob"
    else:
        rep.notes.append(f"{rel}: not part of the checkpoint layout (ignored)")
        return
    rep.checked += 1
    try:
        data = ckpt.storage.read(rel)
    except CheckpointError as exc:
        if isinstance(exc.__cause__, FileNotFoundError):
            rep.notes.append(f"{rel}: deleted while verifying (a live driver's retention?)")
            return
        rep.problems.append(f"{rel}: {_text(exc)}")
        return
    try:
        codec = read_frame(ckpt.storage.path(rel), data, kind, rel).codec
        if kind in ("delta", "snap"):
            if codec == "pickle" and parts[1] not in pickled_ops:
                rep.problems.append(
                    f"{rel}: written with the pickle codec, but its operator does not say codec='pickle' in the "
                    f"retained commits (or no retained commit names it): recovery refuses to load it"
                )
                return
            if codec != "pickle":
                _check_arrow(rel, read_state_file(ckpt, rel, allow_pickle=False), rep)
        elif kind == "plan":
            ckpt.read_plan(int(name.split(".")[0]))  # also checks the batch time it holds
        elif kind == "record":
            check_record(ckpt.storage.path(rel), ckpt.decode(rel, data, kind))
        else:
            ckpt.decode(rel, data, kind)  # refuses pickle: records, plans, blobs are always msgpack
    except (CheckpointError, ValueError) as exc:
        rep.problems.append(f"{rel}: {_text(exc)}")
        return
    rep.ok_files.add(rel)


def _check_arrow(rel: str, state: dict[str, Any], rep: _Report) -> None:
    """A table state's Arrow IPC payload (``rows``) must decode, as recovery would decode it."""
    rows = state.get("rows")
    if not isinstance(rows, bytes):
        return
    try:
        ipc_table(rows)
    except ConfigError:
        rep.notes.append(f"{rel}: holds an Arrow table, not decoded because pyarrow is not installed ({INSTALL_HINT})")
    except Exception as exc:
        rep.problems.append(f"{rel}: passed its checksum but its Arrow table (rows) does not decode: {type(exc).__name__}: {exc}")


def _check_references(ckpt: Checkpoint, records: list[CommitRecord], rep: _Report, present: set[str]) -> None:
    commits = [r for r in records if r.kind == "commit"]
    prev_t: int | None = None
    for r in sorted(commits, key=lambda r: r.seq):
        if prev_t is not None and r.batch_time <= prev_t:
            rep.problems.append(f"{log_path(r.seq)}: commits batch {r.batch_time} ms, not after the previous commit's {prev_t} ms")
        prev_t = r.batch_time
    for r in commits:
        try:
            files = r.files()  # checks every chain: own files only, in order
        except CheckpointError as exc:
            rep.problems.append(_text(exc))
            rep.bad_commits.add(r.seq)
            continue
        for rel in sorted(files):
            if rel not in present:
                rep.problems.append(f"{log_path(r.seq)} (batch {r.batch_time} ms) needs {rel}, which is missing")
    committed = commits[0].batch_time if commits else -1
    sources = commits[0].data.get("graph", {}).get("sources", {}) if commits else {}
    for t in ckpt.plan_times():
        if t <= committed or plan_path(t) not in rep.ok_files:
            continue
        plan = ckpt.read_plan(t)
        for b in plan.get("blobs", []):
            if blob_path(b) not in present:
                rep.problems.append(f"{plan_path(t)} (pending batch {t} ms) needs {blob_path(b)}, which is missing")
        for src, p in plan.get("sources", {}).items():  # the check recovery makes before replaying a file plan
            if sources.get(src, {}).get("kind") != "text_files":
                continue
            for entry in p.get("files", []) if isinstance(p, dict) else []:
                try:
                    confine(entry[0])
                except (CheckpointError, TypeError, IndexError, KeyError):
                    rep.problems.append(
                        f"{plan_path(t)} (pending batch {t} ms): text_file_stream {src!r} plans {entry!r}, which is not "
                        f"a file inside its directory: recovery refuses the plan"
                    )


def _loadable(rec: CommitRecord, rep: _Report) -> bool:
    return rec.seq not in rep.bad_commits and all(f in rep.ok_files for f in rec.files())


def verify(url: str, *, storage_options: dict[str, Any] | None = None) -> int:
    """Check every file and the commit chain; print the problems; 0 when sound, else 1."""
    ckpt = Checkpoint(url, storage_options=storage_options)
    if not _looks_like_checkpoint(ckpt):  # a file, or a foreign tree: do not walk it file by file
        print(f"{url}: FAILED: {_no_checkpoint(url)}")
        return 1
    files = list(_walk(ckpt))
    rep = _Report()
    if not [f for f in files if f not in _UNFRAMED_TOP]:
        print(f"{url}: FAILED: {_no_checkpoint(url)}")
        return 1
    records, _ = _read_records(ckpt)
    commits = [r for r in records if r.kind == "commit"]
    pickled = {
        state_dir(op).split("/", 1)[1]
        for r in commits
        for op, desc in r.data.get("graph", {}).get("operators", {}).items()
        if isinstance(desc, dict) and desc.get("codec") == "pickle"
    }
    for rel in files:
        _check_file(ckpt, rel, rep, pickled)
    present = set(files)
    if "CHECKPOINT" not in present:
        rep.problems.append("CHECKPOINT: the identity file is missing")
    _check_references(ckpt, records, rep, present)
    if not commits and not any(p.startswith("log/") for p in rep.problems):
        for sign in ckpt.lost_history(records):  # what recovery refuses rather than starting over
            rep.problems.append(f"no commit record, but the checkpoint once held commits: {sign}")
    if commits and rep.problems:
        usable = next((r for r in commits if log_path(r.seq) in rep.ok_files and _loadable(r, rep)), None)
        damaged_newer = [q for q in ckpt.log_seqs() if usable is not None and q > usable.seq and log_path(q) not in rep.ok_files]
        if usable is None:
            rep.notes.append("no retained commit is intact: recovery would fail with CorruptCheckpointError")
        elif usable is not commits[0]:
            rep.notes.append(f"recovery would fall back to the older commit of batch {usable.batch_time} ms (log record {usable.seq})")
        elif damaged_newer:
            rep.notes.append(
                f"log record {damaged_newer[0]}, newer than the newest readable commit, is damaged: recovery would use the "
                f"commit of batch {usable.batch_time} ms (log record {usable.seq}) and replay the batches after it from "
                f"their plans (if the damaged record was a claim, nothing is lost)"
            )
        else:
            rep.notes.append(f"the newest commit (batch {usable.batch_time} ms) and everything it needs are intact")
    for n in rep.notes:
        print(f"note: {n}")
    if rep.problems:
        print(f"{url}: FAILED: {len(rep.problems)} problem(s) in {rep.checked} checked files")
        for prob in rep.problems:
            print(f"  - {prob}")
        return 1
    last = f"; last committed batch {commits[0].batch_time} ms" if commits else "; nothing committed yet"
    print(f"{url}: OK: {rep.checked} files checked, {len(commits)} retained commit(s) complete{last}")
    return 0


# --------------------------------------------------------------------------- diff


class _Halt(BaseException):
    """Raised where APP.py would start running its job: the script stops there."""


def _build_app(app: str) -> StreamingContext:
    """Run APP.py with the job's start patched out; return the context it builds."""
    created: list[StreamingContext] = []
    started: list[StreamingContext] = []
    via_goc: list[StreamingContext] = []
    orig_init = StreamingContext.__init__

    def init(self: StreamingContext, *args: Any, **kwargs: Any) -> None:
        orig_init(self, *args, **kwargs)
        created.append(self)

    def get_or_create(cls: type[StreamingContext], /, checkpoint: str, setup: Callable[[], StreamingContext], **_: Any) -> StreamingContext:
        ssc = setup()
        if isinstance(ssc, StreamingContext):
            if ssc.checkpoint_url is None:
                ssc._checkpoint_url = checkpoint
            via_goc.append(ssc)
        return ssc

    def halt(self: StreamingContext, *args: Any, **kwargs: Any) -> Any:
        started.append(self)
        raise _Halt

    path = os.path.abspath(app)
    if not os.path.isfile(path):
        msg = f"{app}: no such file"
        raise CheckpointError(msg)
    saved_argv, saved_path = sys.argv, list(sys.path)
    sys.argv = [path]
    sys.path.insert(0, os.path.dirname(path))
    try:
        with (
            mock.patch.object(StreamingContext, "__init__", init),
            mock.patch.object(StreamingContext, "get_or_create", classmethod(get_or_create)),
            mock.patch.object(StreamingContext, "start", halt),
            mock.patch.object(StreamingContext, "run", halt),
            mock.patch.object(StreamingContext, "await_termination", halt),
        ):
            runpy.run_path(path, run_name="__main__")
    except _Halt:
        pass
    except SystemExit as exc:
        if exc.code not in (None, 0) and not (started or via_goc or created):
            msg = f"{app} exited with status {exc.code} before building a StreamingContext"
            raise CheckpointError(msg) from exc
    except Exception as exc:
        msg = f"{app} raised {type(exc).__name__}: {exc} while building its job"
        raise CheckpointError(msg) from exc
    finally:
        sys.argv = saved_argv
        sys.path[:] = saved_path
    for group in (started, via_goc, [c for c in created if c._graph.outputs()], created):
        if group:
            return group[-1]
    msg = f"{app} did not create a StreamingContext"
    raise CheckpointError(msg)


def diff(url: str, app: str, *, storage_options: dict[str, Any] | None = None) -> int:
    """Compare the graph APP.py builds with the checkpoint; 0 when it would restore, 1 when not."""
    ckpt = _open(url, storage_options)
    records, bad = _read_records(ckpt)
    commits = [r for r in records if r.kind == "commit"]
    ssc = _build_app(app)
    current = ssc._graph.describe()
    print(f"checkpoint {url} vs the job {app} builds:")
    if ssc.checkpoint_url is not None and ssc.checkpoint_url.rstrip("/") != url.rstrip("/"):
        print(f"  note: {app} points its context at checkpoint {ssc.checkpoint_url!r}, not {url!r}; comparing with {url!r}")
    for msg in bad:
        print(f"  note: unreadable log record {msg}")
    if not commits:
        print("  nothing committed yet: the job starts fresh (every stateful operator starts empty)")
        return 0
    last = commits[0]
    stored = last.data.get("graph", {})
    print(f"  stored by the commit of batch {last.batch_time} ms ({_iso(last.batch_time)})")
    d = differences(stored, current)
    s_ops, c_ops = stored.get("operators", {}), current.get("operators", {})
    allowed = ssc._allow_state_loss

    def line(label: str, names: list[str], ops: dict[str, Any]) -> None:
        if names:
            print(f"  {label}:")
            for n in names:
                print(f"    {n} ({ops.get(n, {}).get('kind', '?')})")

    line("restores (state carried over)", d["restored"], c_ops)
    line("new (starts empty or from initial=)", d["new"], c_ops)
    if d["dropped"]:
        print("  dropped (state in the checkpoint, operator not in the code):")
        for n in d["dropped"]:
            extra = " -- allowed by allow_state_loss" if n in allowed else ""
            print(f"    {n} ({s_ops[n].get('kind', '?')}){extra}")
    if d["incompatible"]:
        print("  incompatible (changed shape):")
        for n, why in d["incompatible"]:
            extra = " -- allowed by allow_state_loss (starts empty)" if n in allowed else ""
            print(f"    {n}: {why}{extra}")
    s_src, c_src = stored.get("sources", {}), current.get("sources", {})
    bad_src = {n for n, _ in d["sources_incompatible"]}
    restored_src = [n for n in c_src if n in s_src and n not in bad_src]
    positions = last.data.get("positions", {})
    if restored_src:
        print("  sources continuing from their stored position:")
        for n in restored_src:
            print(f"    {n} ({c_src[n].get('kind', '?')}) at {_short(positions.get(n))}")
    for n, what in d["sources_changed"]:
        print(f"  source {n} changed: {what}")
    line("new sources (start from their configured start)", d["sources_new"], c_src)
    if d["sources_dropped"]:
        print("  sources with a stored position that no source of the code takes over (renamed or removed):")
        for n in d["sources_dropped"]:
            kind = s_src[n].get("kind", "?")
            extra = " -- allowed by allow_state_loss (its position is dropped)" if n in allowed else ""
            print(f"    {n} ({kind}) at {_short(positions.get(n))}{extra}")
    for n, why in d["sources_incompatible"]:
        extra = " -- allowed by allow_state_loss (starts from its configured start)" if n in allowed else ""
        print(f"  incompatible source {n}: {why}{extra}")
    s_iv, c_iv = stored.get("batch_interval_ms"), current.get("batch_interval_ms")
    if s_iv != c_iv:
        print(f"  batch interval: {s_iv} ms -> {c_iv} ms")
    try:
        check_compatible(stored, current, allowed, url)
    except IncompatibleCheckpointError as exc:
        print("verdict: INCOMPATIBLE -- get_or_create would raise IncompatibleCheckpointError:")
        for ln in str(exc).replace(f" {DIFF_HINT}", "").splitlines()[1:]:
            print(f"  {ln}")
        return 1
    print("verdict: compatible -- get_or_create restores this checkpoint into the new code")
    return 0


# --------------------------------------------------------------------------- options


def storage_options(pairs: list[str]) -> dict[str, Any] | None:
    """``["key=value", ...]`` from ``--storage-option`` as fsspec options.

    ``true``/``false`` become bools and a value starting with ``{`` or ``[`` is read
    as JSON (``client_kwargs={"region_name": "us-east-1"}``); anything else stays a string.
    """
    out: dict[str, Any] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            msg = f"--storage-option expects KEY=VALUE, got {pair!r}"
            raise ConfigError(msg)
        if value[:1] in ("{", "["):
            try:
                out[key] = json.loads(value)
            except ValueError as exc:
                msg = f"--storage-option {key}: {value!r} starts like JSON but is not valid JSON ({exc})"
                raise ConfigError(msg) from exc
        else:
            out[key] = {"true": True, "false": False}.get(value.lower(), value)
    return out or None
