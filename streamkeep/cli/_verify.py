"""`streamkeep checkpoint verify URL`: is every file of a checkpoint sound, and is every needed file there.

Every file's framing and checksum, every decodable file decoded, every file the
retained commits and pending plans reference present. Exit 0 when sound, 1 with the
list of problems. Read-only (see `streamkeep.cli._common`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from streamkeep._arrow import INSTALL_HINT, ipc_table
from streamkeep.checkpoint import Checkpoint, CommitRecord, blob_path
from streamkeep.checkpoint._checkpoint import GRAPH_ID_LEN, check_record, log_path, plan_path, state_dir, valid_graph_id
from streamkeep.checkpoint._format import read_frame
from streamkeep.checkpoint._layout import FRAMED_KINDS, classify, looks_like_checkpoint, walk
from streamkeep.checkpoint._repair import checksum_holds
from streamkeep.checkpoint.storage import confine
from streamkeep.cli._common import no_checkpoint, read_records, text
from streamkeep.errors import CheckpointError, ConfigError
from streamkeep.scheduler._state_io import read_state_file


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
    kind = classify(rel)
    if kind == "temp":
        rep.notes.append(f"{rel}: leftover of an interrupted write (harmless; the next driver removes it)")
        return
    if kind == "lock":
        return
    if kind not in FRAMED_KINDS:
        rep.notes.append(f"{rel}: not part of the checkpoint layout (ignored)")
        return
    rep.checked += 1
    if kind == "plan_log":
        try:
            plans, torn = ckpt.read_plan_log(rel)
            for t in plans:
                ckpt.read_plan(t)  # the checks recovery makes
        except CheckpointError as exc:
            if isinstance(exc.__cause__, FileNotFoundError):
                rep.notes.append(f"{rel}: deleted while verifying (a live driver's retention?)")
            else:
                rep.problems.append(f"{rel}: {text(exc)}")
            return
        if torn:
            rep.notes.append(
                f"{rel}: ends with {torn} bytes of an append a crash interrupted (harmless: that plan never became "
                f"durable, so its batch produced nothing; recovery skips them)"
            )
        rep.ok_files.add(rel)
        return
    try:
        data = ckpt.storage.read(rel)
    except CheckpointError as exc:
        if isinstance(exc.__cause__, FileNotFoundError):
            rep.notes.append(f"{rel}: deleted while verifying (a live driver's retention?)")
            return
        rep.problems.append(f"{rel}: {text(exc)}")
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
        elif kind == "graph":
            gid = name.removesuffix(".graph")
            if not valid_graph_id(gid):
                rep.problems.append(f"{rel}: not the name of a graph file (graphs/<{GRAPH_ID_LEN} hex digits>.graph)")
                return
            ckpt.read_graph(gid, data)  # also checks that its content hashes to its name
        else:
            ckpt.decode(rel, data, kind)  # refuses pickle: records, plans, blobs are always msgpack
    except (CheckpointError, ValueError) as exc:
        rep.problems.append(f"{rel}: {text(exc)}")
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


#: What a stop's second commit record of a batch keeps from the first (see `_check_references`).
_SAME_AGAIN = ("positions", "graph_id", "zero_ms", "partitioning")


def _check_references(ckpt: Checkpoint, records: list[CommitRecord], rep: _Report, present: set[str]) -> None:
    commits = [r for r in records if r.kind == "commit"]
    prev: CommitRecord | None = None
    claimed = False  # a claim record since `prev`: another driver (or a restart) took over
    for r in sorted(records, key=lambda r: r.seq):
        if r.kind != "commit":
            claimed = claimed or r.kind == "claim"
            continue
        # A clean stop may commit the last batch once more, naming a snapshot it waited for: the same driver
        # (no claim between), the same batch, positions, graph, zero time and partitioning; only chains differ.
        again = prev is not None and not claimed and r.batch_time == prev.batch_time and all(r.data.get(k) == prev.data.get(k) for k in _SAME_AGAIN)
        if prev is not None and r.batch_time <= prev.batch_time and not again:
            rep.problems.append(f"{log_path(r.seq)}: commits batch {r.batch_time} ms, not after the previous commit's {prev.batch_time} ms")
        prev, claimed = r, False
    for r in commits:
        try:
            files = r.files()  # checks every chain: own files only, in order
        except CheckpointError as exc:
            rep.problems.append(text(exc))
            rep.bad_commits.add(r.seq)
            continue
        for rel in sorted(files):
            if rel not in present:
                rep.problems.append(f"{log_path(r.seq)} (batch {r.batch_time} ms) needs {rel}, which is missing")
    committed = commits[0].batch_time if commits else -1
    sources = _graph(ckpt, commits[0]).get("sources", {}) if commits else {}
    try:
        index = ckpt.plan_index()
    except CheckpointError:  # a damaged plan log: reported with its file
        index = {}
    for rel, until in sorted(ckpt.unneeded_plan_logs().items()):
        rep.notes.append(
            f"{rel} is damaged, but every batch it can hold (before {until} ms) is committed: recovery does not need "
            f"it, and retention deletes it"
        )
    for t, rel in index.items():
        if t <= committed or rel not in rep.ok_files:
            continue
        plan = ckpt.read_plan(t)
        where = plan_path(t) if rel == plan_path(t) else f"{rel} (plan of batch {t} ms)"
        for b in plan.get("blobs", []):
            if blob_path(b) not in present:
                rep.problems.append(f"{where} (pending batch {t} ms) needs {blob_path(b)}, which is missing")
        for src, p in plan.get("sources", {}).items():  # the check recovery makes before replaying a file plan
            if sources.get(src, {}).get("kind") != "text_files":
                continue
            for entry in p.get("files", []) if isinstance(p, dict) else []:
                try:
                    confine(entry[0])
                except (CheckpointError, TypeError, IndexError, KeyError):
                    rep.problems.append(
                        f"{where} (pending batch {t} ms): text_file_stream {src!r} plans {entry!r}, which is not "
                        f"a file inside its directory: recovery refuses the plan"
                    )


def _graph(ckpt: Checkpoint, rec: CommitRecord) -> dict[str, Any]:
    """The graph in force for `rec`; empty when its graph file is damaged (reported with the file)."""
    try:
        return ckpt.graph_of(rec)
    except CheckpointError:
        return {}


def _loadable(rec: CommitRecord, rep: _Report) -> bool:
    return rec.seq not in rep.bad_commits and all(f in rep.ok_files for f in rec.files())


def verify(url: str, *, storage_options: dict[str, Any] | None = None) -> int:
    """Check every file and the commit chain; print the problems; 0 when sound, else 1."""
    ckpt = Checkpoint(url, storage_options=storage_options)
    if not looks_like_checkpoint(ckpt):  # a file, or a foreign tree: do not walk it file by file
        print(f"{url}: FAILED: {no_checkpoint(url)}")
        return 1
    files = list(walk(ckpt))
    rep = _Report()
    if not [f for f in files if classify(f) != "lock"]:
        print(f"{url}: FAILED: {no_checkpoint(url)}")
        return 1
    records, _ = read_records(ckpt)
    commits = [r for r in records if r.kind == "commit"]
    pickled = {
        state_dir(op).split("/", 1)[1]
        for r in commits
        for op, desc in _graph(ckpt, r).get("operators", {}).items()
        if isinstance(desc, dict) and desc.get("codec") == "pickle"
    }
    for rel in files:
        _check_file(ckpt, rel, rep, pickled)
    present = set(files)
    if "CHECKPOINT" not in present:
        rep.problems.append("CHECKPOINT: the identity file is missing")
    if any(p.startswith("CHECKPOINT:") for p in rep.problems) and not _written_whole(ckpt):
        rep.notes.append(
            f"CHECKPOINT (format version, creation time, checkpoint id) holds no committed state: `streamkeep "
            f"checkpoint repair {url}` rewrites it, keeping what the damaged file still holds"
        )
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
    if not commits and (pending := ckpt.plan_times()):  # a crash before the first commit: what the next start does
        last += f" (the next start replays its {len(pending)} planned batch(es) from the job's start, the first at {pending[0]} ms)"
    print(f"{url}: OK: {rep.checked} files checked, {len(commits)} retained commit(s) complete{last}")
    return 0


def _written_whole(ckpt: Checkpoint) -> bool:
    """Does the CHECKPOINT file's checksum hold (written by another build, not damaged: repair does not apply)?"""
    try:
        return ckpt.storage.exists("CHECKPOINT") and checksum_holds(ckpt.storage.read("CHECKPOINT"))
    except (OSError, CheckpointError):
        return False
