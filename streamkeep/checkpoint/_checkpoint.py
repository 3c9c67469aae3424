"""`Checkpoint`: the layout, ownership and commit log of one checkpoint.

Layout under the root URL (see docs/checkpoint-format.md)::

    CHECKPOINT                 identity: format version, engine version, creation time
    lease                      current owner and heartbeat (the only file rewritten)
    log/<seq:012d>.rec         commit log: "claim" and "commit" records, created atomically
    plans/<T:015d>.plan        each batch's input plan, durable before the batch runs
    plans/<T:015d>.plog        local disks (format 6): the plans of batch T and the next ones, each
                               appended and made durable with one fdatasync (a plan log)
    state/<op>/<T:015d>.delta  the keys an operator changed in batch T
    state/<op>/<T:015d>.snap   an operator's full state as of batch T
    state/<op>/<T:015d>.p<i>of<n>.e<epoch>.delta|snap
                               key partition i of n of the same, written by the partition's owner
                               (a Ray actor) for the driver of claim epoch <epoch> (format 5)
    blobs/<name>               source data that cannot be re-read (socket WAL, queues)
    graphs/<id>.graph          a graph description the commit records name by id (format 8): written
                               once, before the first commit naming it; <id> is a hash of its content

The commit log is the single source of truth. A record is written with the
storage's atomic create-if-absent at the next sequence number, so two drivers
can never both append: the one that loses learns it lost its claim and stops
(fencing). Before any side effect of a batch (its plan, its outputs) the
driver proves it still owns the checkpoint (`Checkpoint.ensure_owner`): on
local disks the OS lock it holds is the proof; elsewhere a lease renewed in
time, or else a synchronous re-check of the log. Knows nothing of operators;
imports errors, codec, _faults and its own storage/format modules.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import threading
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from streamkeep import _faults
from streamkeep._util import hostname, random_id
from streamkeep.checkpoint._format import (
    EMPTY_RUN_VERSION,
    EMPTY_RUNS,
    GRAPH_REF_VERSION,
    MOVED,
    MOVED_VERSION,
    PARTITIONED_VERSION,
    PLAIN_VERSION,
    PLAN_LOG_VERSION,
    VERIFY_HINT,
    first_frame_sound,
    frame,
    read_frame,
    read_frames,
    unframe,
)
from streamkeep.checkpoint.storage import CheckpointStorage
from streamkeep.codec import DecodeError, get_codec
from streamkeep.codec._registry import refuse_pickle
from streamkeep.errors import CheckpointError, CheckpointInUseError, CorruptCheckpointError

if TYPE_CHECKING:
    from streamkeep.checkpoint._repair import IdentityRepair

log = logging.getLogger("streamkeep.checkpoint")

_RECORDS = get_codec("msgpack")
_IDENTITY = "CHECKPOINT"
_LEASE = "lease"
_LOCK = "lock"
#: What a claim saw of a damaged or unreadable lease: never equal to a lease read later.
_DAMAGED_LEASE: dict[str, Any] = {"damaged": True}
#: A lease renewal proves ownership for this fraction of ``lease_timeout_s`` (measured on this
#: driver's monotonic clock from the start of the renewal); the rest absorbs clock skew between
#: the hosts that compare the lease's wall-clock heartbeat with their own clocks.
PROOF_FRACTION = 0.75
#: A plan log holds at most this many plans (or `PLAN_LOG_BYTES`): the next plan starts a new one,
#: so retention can delete the old one once no kept commit needs its plans.
PLAN_LOG_PLANS = 128
PLAN_LOG_BYTES = 1 << 20
#: Plan logs on local disks (False: a file per plan, as on other storages; tests of that layout set it).
PLAN_LOGS = True


def _safe(name: str) -> str:
    """A path component for an operator name (letters, digits, ``-._`` kept; others %XX).

    ``.`` and ``..`` are written as ``%2E`` and ``%2E%2E``: a name is never a way out of its directory.
    """
    out = "".join(c if c.isalnum() and c.isascii() or c in "-._" else f"%{ord(c):02X}" for c in name)
    return out if out not in ("", ".", "..") else "".join(f"%{ord(c):02X}" for c in name) or "%"


#: Hex digits of a graph id: the start of the SHA-256 of the graph file's payload (64 bits).
GRAPH_ID_LEN = 16


def graph_id_of(payload: bytes) -> str:
    """The id of a graph description whose encoded payload is `payload` (content-addressed)."""
    return hashlib.sha256(payload).hexdigest()[:GRAPH_ID_LEN]


def valid_graph_id(gid: Any) -> bool:
    """Is `gid` the shape of a graph id (so its path stays inside ``graphs/``)?"""
    return isinstance(gid, str) and len(gid) == GRAPH_ID_LEN and all(c in "0123456789abcdef" for c in gid)


def graph_path(gid: str) -> str:
    """Path of the graph description of id `gid`."""
    return f"graphs/{gid}.graph"


def state_dir(op: str) -> str:
    """Directory of an operator's state files."""
    return f"state/{_safe(op)}"


def plan_path(batch_time: int) -> str:
    """Path of the plan of `batch_time`."""
    return f"plans/{batch_time:015d}.plan"


def plan_log_path(first_time: int) -> str:
    """Path of the plan log whose first plan is that of `first_time` (local disks, format 6)."""
    return f"plans/{first_time:015d}.plog"


def state_path(op: str, batch_time: int, kind: str) -> str:
    """Path of operator `op`'s state file of `batch_time` (`kind` "delta" or "snap")."""
    return f"{state_dir(op)}/{batch_time:015d}.{kind}"


def part_path(op: str, batch_time: int, kind: str, part: int, count: int, epoch: int) -> str:
    """Path of key partition `part` (of `count`) of operator `op`'s state file of `batch_time`, written for claim `epoch`.

    The epoch in the name fences the writers: the partition owners of a driver that lost its
    claim write only names the new owner never writes, and only a commit record makes a file live.
    """
    return f"{state_dir(op)}/{batch_time:015d}.p{part}of{count}.e{epoch}.{kind}"


def parse_state_name(name: str) -> tuple[int, str, int, int, int] | None:
    """(batch time, kind, part, count, epoch) of a state file name (part 0 of 1, epoch 0 for a whole one); None if not one."""
    fields = name.split(".")
    if len(fields) == 2:
        stem, kind = fields
        part, count, epoch = 0, 1, 0
    elif len(fields) == 4 and fields[1].startswith("p") and "of" in fields[1] and fields[2].startswith("e"):
        stem, pn, e, kind = fields
        p, _, n = pn[1:].partition("of")
        if not (p.isdigit() and n.isdigit() and e[1:].isdigit()):
            return None
        part, count, epoch = int(p), int(n), int(e[1:])
        if not part < count or str(part) != p or str(count) != n or str(epoch) != e[1:]:
            return None
    else:
        return None
    if kind not in ("delta", "snap") or not (stem.isdigit() and len(stem) == 15):
        return None
    return int(stem), kind, part, count, epoch


def partitioned_chain(chain: dict[str, Any]) -> bool:
    """True when a stored chain holds key-partitioned entries (format 5: files written by the partition owners)."""
    return isinstance(chain.get("snapshot"), list) or any(isinstance(d, dict) and "parts" in d for d in chain.get("deltas", ()))


def inlines_empty_run(chain: dict[str, Any]) -> bool:
    """True when a stored chain inlines a delta holding a window's empty run (format 7; its entry says so)."""
    return any(isinstance(d, dict) and d.get(EMPTY_RUNS) is True for d in chain.get("deltas", ()))


def inlines_moved(chain: dict[str, Any]) -> bool:
    """True when a stored chain inlines a delta with moved keys (format 9; its entry, or its inline part, says so)."""
    for d in chain.get("deltas", ()):
        if not isinstance(d, dict):
            continue
        if d.get(MOVED) is True or any(isinstance(p, dict) and p.get(MOVED) is True for p in d.get("parts") or ()):
            return True
    return False


def chain_files(chain: dict[str, Any]) -> list[str]:
    """The state files a (checked) chain names, snapshot first (inline deltas are not files)."""
    out: list[str] = []
    snap = chain.get("snapshot")
    if isinstance(snap, list):
        out.extend(p for p in snap if isinstance(p, str))
    elif snap:
        out.append(snap)
    for d in chain.get("deltas", ()):
        if isinstance(d, str):
            out.append(d)
        elif isinstance(d, dict) and "parts" in d:
            out.extend(p for p in d["parts"] if isinstance(p, str))
    return out


def check_chain(op: str, chain: Any, where: str) -> None:
    """Check that a stored state chain only names `op`'s own state files, in order.

    A chain comes from checkpoint data, so its paths are not trusted: each must be exactly
    ``state/<op>/<T>.snap`` (T = ``snapshot_time``) or ``state/<op>/<T>.delta``, with the
    delta times increasing after the snapshot's. A key-partitioned chain (format 5) names, in
    place of one file, a list with one entry per key partition: the partition's own file
    (``state/<op>/<T>.p<i>of<n>.e<epoch>.<kind>``, i its place in the list, n the list's length),
    None (the partition had nothing), or for a delta a small payload inline. Anything else (``../other_job/...``, an
    absolute path, another operator's file) would read, and later let retention delete, a
    file that is not this operator's.

    Raises:
        CorruptCheckpointError: the chain is malformed; the message names `where` and `op`.
    """
    why = _chain_problem(op, chain)
    if why:
        msg = (
            f"{where}: the state chain of operator {op!r} {why}. Commit records only ever name the operator's own "
            f"state files, so the record was altered. {VERIFY_HINT}"
        )
        raise CorruptCheckpointError(msg)


def _chain_problem(op: str, chain: Any) -> str | None:
    if not isinstance(chain, dict) or not isinstance(chain.get("deltas", []), list):
        return "is not a map with a list of deltas"
    snap, snap_t = chain.get("snapshot"), chain.get("snapshot_time", 0)
    if not _is_int(snap_t):
        return f"has a snapshot time {snap_t!r} that is not a batch time"
    if isinstance(snap, list):
        why = _parts_problem(op, snap_t, "snap", snap, inline=False)
        if why:
            return f"has a partitioned snapshot that {why}"
    elif snap is not None and snap != state_path(op, snap_t, "snap"):
        return f"names the snapshot {snap!r}, not its own {state_path(op, snap_t, 'snap')!r}"
    last = snap_t if snap is not None else None
    own = state_dir(op)  # once per chain: every commit checks its chains, which grow between snapshots
    for d in chain.get("deltas", []):
        if isinstance(d, dict) and "parts" in d:
            t = d.get("t")
            if not isinstance(t, int) or isinstance(t, bool) or not isinstance(d["parts"], list):
                return f"holds a malformed partitioned delta ({sorted(map(str, d))})"
            why = _parts_problem(op, t, "delta", d["parts"], inline=True)
            if why:
                return f"has a partitioned delta of batch {t} ms that {why}"
        elif isinstance(d, dict):
            t = d.get("t")
            if not _is_int(t) or not isinstance(d.get("codec"), str) or not isinstance(d.get("data"), bytes):
                return f"holds a malformed inline delta ({sorted(map(str, d))})"
        elif isinstance(d, str):
            stem = d.rsplit("/", 1)[-1].removesuffix(".delta")
            if not stem.isdigit() or d != f"{own}/{int(stem):015d}.delta":  # state_path(op, int(stem), "delta")
                return f"names the delta file {d!r}, which is not one of its own (in {own!r})"
            t = int(stem)
        else:
            return f"holds a delta entry of type {type(d).__name__}"
        if last is not None and t <= last:
            return f"is out of order (a delta of batch {t} ms after batch {last} ms)"
        last = t
    return None


def _parts_problem(op: str, t: int, kind: str, parts: list[Any], *, inline: bool) -> str | None:
    """Why a list of per-partition entries of batch `t` is not `op`'s own (None when it is)."""
    if not parts:
        return "has no partitions"
    prefix = f"{state_dir(op)}/"
    for i, p in enumerate(parts):
        if p is None:
            continue
        if isinstance(p, dict) and inline:
            if not isinstance(p.get("codec"), str) or not isinstance(p.get("data"), bytes):
                return f"holds a malformed inline payload for partition {i}"
            continue
        if not isinstance(p, str):
            return f"holds an entry of type {type(p).__name__} for partition {i}"
        got = parse_state_name(p[len(prefix) :]) if p.startswith(prefix) else None
        if got is None or got[:4] != (t, kind, i, len(parts)) or p != part_path(op, t, kind, i, len(parts), got[4]):
            return f"names {p!r} for partition {i} of {len(parts)}, which is not that partition's own file of batch {t} ms (in {state_dir(op)!r})"
    return None


@dataclass
class CommitRecord:
    """One decoded record of the commit log."""

    seq: int
    data: dict[str, Any]

    @property
    def kind(self) -> str:
        """"commit" or "claim"."""
        return str(self.data.get("type"))

    @property
    def batch_time(self) -> int:
        """Batch time committed (commit records only)."""
        return int(self.data["batch_time"])

    @property
    def graph_id(self) -> str | None:
        """The id of the graph file this commit names (format 8), None when it holds its graph inline (or none)."""
        gid = self.data.get("graph_id")
        return gid if isinstance(gid, str) else None

    def files(self) -> set[str]:
        """Every file this commit needs: its state chains' files, and the graph file it names (format 8).

        Raises:
            CorruptCheckpointError: a chain names a file that is not its operator's own (`check_chain`).
        """
        out: set[str] = set()
        if self.graph_id is not None:
            out.add(graph_path(self.graph_id))
        state = self.data.get("state", {})
        if not isinstance(state, dict):
            msg = f"{_log_path(self.seq)}: its 'state' is not a map of operator chains. {VERIFY_HINT}"
            raise CorruptCheckpointError(msg)
        for op, chain in state.items():
            check_chain(str(op), chain, _log_path(self.seq))
            out.update(chain_files(chain))  # inline deltas are not files
        return out


def _identity_damaged(url: str, why: str) -> str:
    """The message for a damaged CHECKPOINT file: what is wrong, that commits are safe, the way out."""
    why = why.replace(f" {VERIFY_HINT}", "")
    return (
        f"{why} This is the checkpoint's identity file (format version, creation time, checkpoint id); the committed "
        f"state is in log/ and state/ and is not affected. Rewrite it with `streamkeep checkpoint repair {url}` (with "
        f"no job running on the checkpoint): it restores the file when one bit flipped, else keeps the fields it can "
        f"still read, marked unverified (see docs/checkpoint-format.md, 'A damaged CHECKPOINT file')."
    )


@dataclass
class _Owner:
    epoch: int = 0
    seq: int = 0
    lock_fd: int | None = None
    stop: threading.Event = field(default_factory=threading.Event)
    thread: threading.Thread | None = None
    lost: bool = False  # another driver took over: never write the lease again
    deleted: bool = False  # the checkpoint was found deleted (or made anew) under this driver: lost, never written again
    lease_missing: bool = False  # the last heartbeat found no lease (local disks: written again one beat later)
    #: Lease mode: ownership is proven until this time.monotonic() value (0: prove it again first).
    valid_until: float = 0.0
    checkpoint_id: str = ""


@dataclass
class _PlanLog:
    """The plan log this driver appends to."""

    rel: str
    fd: int
    plans: int
    size: int


class Checkpoint:
    """Read and write one checkpoint.

    Args:
        url: fsspec URL or local path.
        storage_options: fsspec options (credentials, endpoint).
        lease_timeout_s: after this long without a heartbeat, another driver may take over
            (remote storage; local disks use an OS file lock that dies with the process).
    """

    def __init__(self, url: str, *, storage_options: dict[str, Any] | None = None, lease_timeout_s: float = 10.0) -> None:
        self.storage = CheckpointStorage(url, storage_options)
        self.url = url
        self.lease_timeout_s = lease_timeout_s
        self._owner: _Owner | None = None
        self._tally = threading.local()  # bytes written per thread (a batch's vs a background snapshot's)
        #: Log records `records()` skipped because they could not be read (seq -> error).
        self.unreadable: dict[int, CheckpointError] = {}
        #: Plans go to plan logs (``plans/<T>.plog``, appended) on local disks; elsewhere (and with
        #: False) each plan is a file of its own (``plans/<T>.plan``).
        self.plan_log = self.storage.local and PLAN_LOGS
        #: The batch time of the newest commit this driver wrote or read (plans in a plan log name it).
        self._committed: int | None = None
        self._plan_log: _PlanLog | None = None
        self._plans_lock = threading.Lock()
        #: plan log -> its newest plan's batch time, and batch time -> the plan log holding it, for the
        #: plan logs this driver wrote or found (retention deletes a log once no kept commit needs it)
        self._log_last: dict[str, int] = {}
        self._in_log: dict[int, str] = {}
        #: plan logs whose first frame is damaged but whose plans are all committed (see `plan_index`)
        #: -> the batch time that every plan in them precedes
        self._unneeded_logs: dict[str, int] = {}
        #: graph id -> description, of the graphs read (`graph_of`) or registered (`graph_ref`)
        self._graphs: dict[str, dict[str, Any]] = {}
        self._graph_payloads: dict[str, bytes] = {}  # of the registered ones: what `commit` writes
        self._graph_stored: set[str] = set()  # graph files this driver made sure are on storage, whole
        self._last_graph: tuple[dict[str, Any], str] | None = None  # the description `graph_ref` saw last, its id

    # -- records ------------------------------------------------------------

    def encode(self, kind: str, value: Any, codec: str = "msgpack", *, rel: str) -> bytes:
        """Frame `value` encoded with `codec`, as the file `rel` (its identity)."""
        return frame(kind, codec, get_codec(codec).encode(value), rel)

    def decode(self, rel: str, data: bytes, kind: str | None = None, allow_pickle: bool = False) -> Any:
        """Check, unframe and decode one file's bytes (read from `rel`, checked against its identity)."""
        codec, payload = unframe(self.storage.path(rel), data, kind, rel)
        refuse_pickle(codec, allow_pickle, f"checkpoint file {self.storage.path(rel)}")
        try:
            return get_codec(codec).decode(payload)
        except (DecodeError, CheckpointError) as exc:
            msg = f"checkpoint file {self.storage.path(rel)} passed its checksum but could not be decoded: {exc}"
            raise CorruptCheckpointError(msg) from exc
        except Exception as exc:
            msg = f"checkpoint file {self.storage.path(rel)} could not be decoded with codec {codec!r}: {type(exc).__name__}: {exc}"
            raise CorruptCheckpointError(msg) from exc

    def read(self, rel: str, kind: str | None = None, allow_pickle: bool = False) -> Any:
        """Read and decode one file."""
        return self.decode(rel, self.storage.read(rel), kind, allow_pickle)

    # -- identity ------------------------------------------------------------

    def is_empty(self) -> bool:
        """True when no streamkeep checkpoint exists at the URL yet."""
        return not self.storage.exists(_IDENTITY) and not self.storage.list("log")

    def identity(self) -> dict[str, Any]:
        """The CHECKPOINT record (format and engine versions)."""
        if not self.storage.exists(_IDENTITY):
            if self.storage.list("log") or self.storage.list("plans"):
                return {"format_version": PLAIN_VERSION}
            msg = f"{self.url} is not a streamkeep checkpoint (no {_IDENTITY} file)"
            raise CheckpointError(msg)
        try:
            data = self.read(_IDENTITY, "identity")
        except CorruptCheckpointError as exc:
            from streamkeep.checkpoint._repair import checksum_holds

            if checksum_holds(self.storage.read(_IDENTITY)):
                raise  # written whole by another build (a newer format version): not damage, so no repair advice
            raise CorruptCheckpointError(_identity_damaged(self.url, str(exc))) from exc
        if not isinstance(data, dict):
            msg = f"{self.storage.path(_IDENTITY)} is not a streamkeep checkpoint identity record (its checksum holds: another program wrote it)"
            raise CorruptCheckpointError(msg)
        return data

    def repair_identity(self, checkpoint_id: str | None = None) -> IdentityRepair:
        """Rewrite a damaged CHECKPOINT file (see checkpoint/_repair.py); the report says what was kept."""
        from streamkeep.checkpoint._repair import repair_identity

        return repair_identity(self, checkpoint_id)

    def _ensure_identity(self, engine_version: str) -> None:
        try:  # the first look at a remote storage (after the lease): its client's own errors say little
            present = self.storage.exists(_IDENTITY)
        except CheckpointError:
            raise
        except Exception as exc:
            raise self.storage.unreachable(exc) from exc
        if present:
            self.identity()
            return
        others = [n for n in self.storage.list("") if n not in (_LOCK, _LEASE)]
        if others and not {"log", "plans", "state", "blobs", "graphs"} & set(others):
            msg = (
                f"{self.url} already contains files that are not a streamkeep checkpoint ({', '.join(others[:5])}). "
                f"Point the checkpoint at an empty or new directory."
            )
            raise CheckpointError(msg)
        record = {
            "format_version": PLAIN_VERSION,
            "engine_version": engine_version,
            "created_ms": int(time.time() * 1000),
            "id": random_id(),
        }
        self.storage.create(_IDENTITY, self.encode("identity", record, rel=_IDENTITY))
        _faults.point("identity.after_write")

    def _checkpoint_id(self) -> str:
        """A name for this checkpoint instance (sinks compare fencing epochs only within one)."""
        ident = self.identity()
        raw = ident.get("id")
        if isinstance(raw, str) and raw.isalnum():
            return raw
        return f"t{int(ident.get('created_ms', 0) or 0)}"  # created before identities had an id

    # -- ownership -------------------------------------------------------------

    def claim(self, owner: str, engine_version: str) -> None:
        """Become the only driver allowed to commit to this checkpoint.

        On local disks the OS file lock decides. Elsewhere the lease must be expired (or
        released), then a claim record is appended, the lease written and the log checked
        again: a driver whose claim was overtaken (two drivers starting at the same instant)
        raises here, before anything runs. When the lease changed while this driver claimed
        (another driver claimed concurrently, or a paused owner woke up and renewed it), the
        claim returns only after ``lease_timeout_s``, when the other one's proof of ownership
        has run out for sure (see `ensure_owner`).

        Raises:
            CheckpointInUseError: another live driver owns it, or won a concurrent claim.
        """
        me = _Owner()
        seen: dict[str, Any] | None = None
        if self.storage.local:
            me.lock_fd = self._open_local()
        else:
            try:  # the first contact with a remote storage: its client's own errors say little
                seen = self._check_lease()
            except CheckpointError:
                raise
            except Exception as exc:
                raise self.storage.unreachable(exc) from exc
        try:
            self._ensure_identity(engine_version)
            me.checkpoint_id = self._checkpoint_id()
            # Epochs never go back, even when log records were lost: the previous owner's lease names its epoch.
            prior = self._lease_epoch()
            for _ in range(100):
                last = self.last_seq()
                epoch = max(self.max_epoch(), prior) + 1
                rec = {"type": "claim", "epoch": epoch, "owner": owner, "host": hostname(), "pid": os.getpid(), "time_ms": _now_ms()}
                _faults.point("claim.before_record")
                if self.storage.create(_log_path(last + 1), self.encode("record", rec, rel=_log_path(last + 1))):
                    me.epoch, me.seq = epoch, last + 1
                    _faults.point("claim.after_record")
                    break
            else:  # pragma: no cover - needs 100 lost races in a row
                msg = f"could not claim checkpoint {self.url}: other drivers keep appending to its log"
                raise CheckpointInUseError(msg)
            contended_at: float | None = None
            if me.lock_fd is None:
                read_at = time.monotonic()
                try:
                    now_seen = self._read_lease(strict=True)
                except CheckpointError:  # unreadable: nobody may have written it, or someone did; wait as if
                    now_seen = _DAMAGED_LEASE
                if seen is _DAMAGED_LEASE or now_seen is _DAMAGED_LEASE or now_seen != seen:
                    contended_at = read_at  # someone wrote the lease since we found it expired (or it is unreadable)
            self._owner = me
            start = time.monotonic()
            self._write_lease()
            self._check_log(me, "starting")
            if contended_at is None:
                me.valid_until = start + self.lease_timeout_s * PROOF_FRACTION
            me.thread = threading.Thread(target=self._heartbeat, args=(me,), name="streamkeep-lease", daemon=True)
            me.thread.start()
            if contended_at is not None:
                wait_s = contended_at + self.lease_timeout_s - time.monotonic()
                log.warning(
                    "checkpoint %s: its lease changed while this driver claimed it (another driver claimed it too, or a "
                    "paused owner woke up); waiting %.1f s, until the other one's lease has certainly run out",
                    self.url,
                    max(0.0, wait_s),
                )
                if wait_s > 0:
                    time.sleep(wait_s)
                self.ensure_owner("starting")
        except BaseException:
            me.stop.set()
            if self._owner is me:
                self._owner = None
            self._release_lock(me)
            raise

    def _open_local(self) -> int:
        """Create the checkpoint directory and take its lock; an unusable directory is a CheckpointError."""
        root = self.storage.root
        try:
            os.makedirs(root, exist_ok=True)
            return self._take_local_lock()
        except CheckpointError:
            raise
        except OSError as exc:
            parent = next((p for p in _parents(root) if os.path.exists(p)), "/")
            if os.path.exists(root) and not os.path.isdir(root):
                why = f"{root} is a file, not a directory"
            elif not os.path.isdir(parent):
                why = f"{parent} is a file, so no directory can be created under it"
            elif isinstance(exc, PermissionError) or not os.access(parent, os.W_OK):
                why = f"this process (uid {os.getuid()}) may not create or write files in {parent}"
            else:
                why = f"creating it in {parent} failed: {exc.strerror or exc}"
            msg = (
                f"cannot use {self.url!r} as a checkpoint: {why}. A checkpoint needs a directory this process can "
                f"create files in, on a filesystem that keeps them (not /proc, /sys or a read-only mount): pass "
                f"another checkpoint URL (a local path or s3://bucket/prefix)."
            )
            raise CheckpointError(msg) from exc

    def _take_local_lock(self) -> int:
        import fcntl

        fd = os.open(self.storage.path(_LOCK), os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise CheckpointInUseError(self._in_use_message()) from None
        return fd

    def _lease_epoch(self) -> int:
        """The epoch the lease names (0 without a readable lease)."""
        epoch = (self._read_lease() or {}).get("epoch", 0)
        return epoch if isinstance(epoch, int) and not isinstance(epoch, bool) else 0

    def _read_lease(self, strict: bool = False) -> dict[str, Any] | None:
        """The lease, or None when there is none.

        An unreadable lease (a storage error, or damaged) is None too unless `strict`: then
        CheckpointError, or CorruptCheckpointError when it is damaged. Only a claim must tell
        the two apart: an owner's lease it cannot read may be alive.
        """
        try:
            data = self.read(_LEASE, "lease")
        except CheckpointError as exc:
            if isinstance(exc.__cause__, FileNotFoundError) or not strict:
                return None
            if isinstance(exc, CorruptCheckpointError):
                raise
            msg = (
                f"checkpoint {self.url}: could not read its lease ({exc}), so whether another driver owns it is "
                f"unknown; nothing was written. Retry when the storage answers again."
            )
            raise CheckpointError(msg) from exc
        except Exception as exc:
            if not strict:
                return None
            raise self.storage.unreachable(exc) from exc
        if isinstance(data, dict):
            return data
        if strict:
            msg = f"checkpoint file {self.storage.path(_LEASE)} is not a lease record (it holds a {type(data).__name__})"
            raise CorruptCheckpointError(msg)
        return None

    def _in_use_message(self) -> str:
        lease = self._read_lease()
        if lease:
            who = f"pid {lease.get('pid')} on host {lease.get('host')} (epoch {lease.get('epoch')})"
        else:
            who = "a driver whose lease could not be read" + (" (it holds the lock file)" if self.storage.local else "")
        return (
            f"checkpoint {self.url} is in use by another driver: {who}. Only one driver may run a checkpoint "
            f"at a time; stop the other driver, or give this job its own checkpoint URL."
        )

    def _check_lease(self) -> dict[str, Any] | None:
        """The lease as read, if it lets this driver claim; else CheckpointInUseError.

        A damaged lease is `_DAMAGED_LEASE` (the claim then waits one lease, as when the lease
        changed); a lease the storage cannot read now is a CheckpointError.
        """
        try:
            lease = self._read_lease(strict=True)
        except CorruptCheckpointError as exc:
            log.warning("checkpoint %s: its lease is damaged (%s); a claim waits one lease before it runs", self.url, exc)
            return _DAMAGED_LEASE
        if not lease:
            return lease
        age_s = (_now_ms() - int(lease.get("heartbeat_ms", 0))) / 1000.0
        if age_s >= self.lease_timeout_s:
            return lease
        if lease.get("host") == hostname() and not _pid_alive(int(lease.get("pid", -1))):
            return lease
        if lease.get("released"):
            return lease
        raise CheckpointInUseError(self._in_use_message() + f" Its last heartbeat was {age_s:.1f} s ago; a lease expires after {self.lease_timeout_s:.0f} s.")

    def _write_lease(self, released: bool = False, *, make_dirs: bool = True) -> None:
        me = self._owner
        if me is None:
            return
        lease = {"epoch": me.epoch, "host": hostname(), "pid": os.getpid(), "heartbeat_ms": _now_ms(), "released": released}
        self.storage.write(_LEASE, self.encode("lease", lease, rel=_LEASE), make_dirs=make_dirs)
        _faults.point("lease.after_write")

    def _heartbeat(self, me: _Owner) -> None:
        # `me` is passed in: release() may clear self._owner before this thread first runs
        while not me.stop.wait(max(0.2, self.lease_timeout_s / 3)):
            if not self._renew(me):
                return

    def _renew(self, me: _Owner) -> bool:
        """One heartbeat: renew the lease and, if nothing changed, extend the proof of ownership; False once lost."""
        if self._lock_replaced(me):
            return False
        # An unreadable lease reads as None here: the renewal goes on (a transient error must not stop the
        # heartbeat), and the log listing below, not the lease, decides whether the proof is extended.
        try:
            lease = self._read_lease(strict=True)
            missing = lease is None  # not found: only a deletion removes it (the claim wrote it); the read tells, for free
        except CheckpointError:
            lease, missing = None, False
        if lease is not None and _epoch_of(lease) > me.epoch:
            self._mark_lost(me)  # taken over after a stall: the next ownership check or commit fails
            log.warning("checkpoint %s was taken over by another driver (epoch %s)", self.url, lease.get("epoch"))
            return False
        if missing and self._deleted(me):
            return False
        if lease is not None and not _is_mine(me, lease) and self._made_anew(me):
            return False  # a new job's lease on a checkpoint made anew at the URL: never overwritten by this one
        if missing and me.lock_fd is not None and not me.lease_missing:
            # On local disks the flock, not the lease, keeps other drivers out: a beat later, so that an
            # `rm -r` of the directory (which may remove the lease before CHECKPOINT and the lock) is over.
            me.lease_missing = True
            return True
        me.lease_missing = False
        start = time.monotonic()
        try:
            # A lease deleted alone is written again (until then another driver could claim at once). Never
            # re-creates a checkpoint directory deleted since the read: the write fails, then the check below.
            self._write_lease(make_dirs=False)
        except Exception as exc:  # any storage failure: logged, retried at the next beat; commits are fenced anyway
            if isinstance(exc.__cause__, FileNotFoundError) and self._deleted(me):
                return False
            log.warning("could not renew the lease of %s: %s", self.url, exc)
            return True
        try:
            # A driver claiming now appends its claim record before it reads the lease, then waits one lease
            # from that read: a renewal whose log listing finds no record after this driver's last one started
            # before that read, so the proof it gives runs out before the claimer's wait ends. A record after
            # ours (a claim; rarely our own commit between its append and `me.seq`) extends nothing: the next
            # ensure_owner re-checks the log. (me.seq is read after the listing: our own commits meanwhile count.)
            mine = me.seq  # before the listing: a record of ours it lists is at or past this
            last = mine if me.lock_fd is not None else self.last_seq()
            if self._log_reset(me, last, mine):
                return False
            if last > me.seq and self._claimed_after(me, last):
                self._mark_lost(me)  # stop renewing: this driver's lease would overwrite the claimer's
                log.warning("checkpoint %s was taken over by another driver (a claim record after this driver's)", self.url)
                return False
        except Exception as exc:  # logged, retried at the next beat; the next ensure_owner re-checks the log
            log.warning(
                "checkpoint %s: the lease was renewed, but reading its log failed (%s); the proof of ownership is not "
                "extended",
                self.url, exc,
            )
            return True
        quiet = last <= me.seq
        # Only a renewal that landed while the previous proof held extends it: after a pause
        # past the lease another driver may have claimed, so ensure_owner re-checks the log.
        if quiet and time.monotonic() < me.valid_until:
            me.valid_until = start + self.lease_timeout_s * PROOF_FRACTION
        return True

    def _made_anew(self, me: _Owner) -> bool:
        """True (and this driver lost) if the checkpoint's identity names another checkpoint than the one it claimed.

        Asked only when the lease is not this driver's and names no later epoch (a new job on a checkpoint
        deleted and made anew at the URL starts at epoch 1; a stale write of an older owner is the other case).
        """
        try:
            if self._checkpoint_id() == me.checkpoint_id:
                return False
        except Exception:  # unreadable or gone: the lease is renewed as usual, the log check says the rest
            return False
        return self._mark_deleted(me, "its identity file names another checkpoint")

    def _log_reset(self, me: _Owner, last: int, mine: int) -> bool:
        """True (and this driver lost) if the log, listed up to `last`, ends before this driver's own newest record `mine`.

        Retention never deletes that record: a shorter log is a checkpoint made anew at the URL.
        """
        return last < mine and self._mark_deleted(me, f"its log ends at record {last}, before this driver's own record {mine}")

    def _mark_deleted(self, me: _Owner, why: str) -> bool:
        me.deleted = True
        self._mark_lost(me)
        log.warning(
            "checkpoint %s was deleted while this driver runs (%s): the job stops before its next side effect and "
            "writes nothing more there",
            self.url,
            why,
        )
        return True

    def _lock_replaced(self, me: _Owner) -> bool:
        """On local disks: True (and this driver lost) if the lock file it holds is no longer the checkpoint's.

        The flock proves ownership only while its file is the one at the checkpoint's path: once the
        directory is deleted (or moved) a new job may create the checkpoint anew there and take a lock of
        its own, and this driver's log check would pass against the new, shorter log.
        """
        fd = me.lock_fd
        if fd is None or me.deleted:
            return me.deleted
        try:
            held, there = os.fstat(fd), os.stat(self.storage.path(_LOCK))
            if (held.st_dev, held.st_ino) == (there.st_dev, there.st_ino):
                return False
        except FileNotFoundError:
            pass
        except OSError:  # unknown: the lock stands (it did before this check existed)
            return False
        return self._mark_deleted(me, "its lock file is gone, or another one")

    def _deleted(self, me: _Owner) -> bool:
        """After a heartbeat found no lease: True (and this driver lost) if the checkpoint itself is gone.

        Its identity file is gone only when the checkpoint was deleted (by hand, or a test's temporary
        directory) while this driver runs. Writing on would re-create a checkpoint of loose deltas with
        no base, and let a new job started on the URL and this one both write: the driver stops before
        its next side effect instead (`_lost_message`). One request, only when the lease is missing.
        """
        try:
            if self.storage.exists(_IDENTITY):
                return False
        except Exception:  # unknown: the lease is renewed as usual (the write says the rest)
            return False
        return self._mark_deleted(me, f"no lease, no {_IDENTITY} file")

    def _claimed_after(self, me: _Owner, last: int) -> bool:
        """True if a log record after this driver's last one (up to `last`) claims a higher epoch."""
        for seq in range(me.seq + 1, last + 1):
            rec = self.read(_log_path(seq), "record")
            if isinstance(rec, dict) and rec.get("type") == "claim" and _epoch_of(rec) > me.epoch:
                return True
        return False

    def ensure_owner(self, what: str) -> None:
        """Prove that this driver still owns the checkpoint, before a side effect (`what`).

        On local disks the OS lock this driver holds is the proof (free). Elsewhere: a lease
        renewal that started less than ``PROOF_FRACTION * lease_timeout_s`` ago (by this
        driver's monotonic clock), kept the lease alive without a gap and found the log quiet (no
        record after this driver's last one: a renewal that finds one extends nothing, and
        stops renewing if it is another driver's claim); otherwise (the
        driver was paused, or renewals failed) the lease is renewed and the log re-read
        synchronously: a claim record after this driver's last record means another driver
        took over.

        Raises:
            CheckpointInUseError: another driver took the checkpoint over; nothing may be
                written for the batch any more.
            CheckpointError: the checkpoint is not claimed, or its storage failed during the
                re-check (the batch fails without side effects; a restart retries it).
        """
        me = self._owner
        if me is None:
            msg = f"checkpoint {self.url}: ownership checked ({what}) without claiming the checkpoint"
            raise CheckpointError(msg)
        if me.lost:
            raise CheckpointInUseError(self._lost_message(me, what))
        if me.lock_fd is not None:
            if self._lock_replaced(me):  # two stat calls: the OS lock proves nothing once its file is gone
                raise CheckpointInUseError(self._lost_message(me, what))
            return
        if time.monotonic() < me.valid_until:
            return
        start = time.monotonic()
        try:
            lease = self._read_lease(strict=True)
            missing = lease is None
        except CheckpointError:  # unreadable: renewed over, as before; only a lease not found may mean a deletion
            lease, missing = None, False
        if lease is not None and int(lease.get("epoch", 0)) > me.epoch:
            self._mark_lost(me)
            raise CheckpointInUseError(self._lost_message(me, what))
        if (missing and self._deleted(me)) or (lease is not None and not _is_mine(me, lease) and self._made_anew(me)):
            raise CheckpointInUseError(self._lost_message(me, what))  # the log check below would pass on a new, short log
        self._write_lease(make_dirs=False)
        self._check_log(me, what)
        me.valid_until = start + self.lease_timeout_s * PROOF_FRACTION
        log.info("checkpoint %s: lease renewed after a gap; the log shows no other driver, so this one continues", self.url)

    def fencing(self) -> tuple[str, int]:
        """(checkpoint id, claim epoch) of this driver: the fencing token sinks compare."""
        me = self._owner
        if me is None:
            msg = f"checkpoint {self.url}: fencing token asked for without claiming the checkpoint"
            raise CheckpointError(msg)
        return me.checkpoint_id, me.epoch

    def _check_log(self, me: _Owner, what: str) -> None:
        """CheckpointInUseError if the log holds a record after this driver's last one, or ends before it."""
        last = self.last_seq()
        if self._log_reset(me, last, me.seq):
            raise CheckpointInUseError(self._lost_message(me, what))
        if last > me.seq:
            self._mark_lost(me)
            raise CheckpointInUseError(self._lost_message(me, what))

    @staticmethod
    def _mark_lost(me: _Owner) -> None:
        me.lost = True
        me.valid_until = 0.0
        me.stop.set()

    def _lost_message(self, me: _Owner, what: str) -> str:
        if me.deleted:
            return (
                f"checkpoint {self.url} was deleted while this driver ran (its files are gone, or were made anew by "
                "another job since): "
                f"this driver stops before {what}, writing nothing more there. To go on from where it was, restore the "
                "checkpoint from a copy and restart; to start the job from scratch, restart it as it is."
            )
        other: dict[str, Any] = {}
        with contextlib.suppress(Exception):
            for rec in self.records(newest_first=True):
                if rec.kind == "claim" and int(rec.data.get("epoch", 0)) > me.epoch:
                    other = rec.data
                    break
        who = f"epoch {other.get('epoch', '> ' + str(me.epoch))}"
        if other:
            who += f", pid {other.get('pid')} on {other.get('host')}"
        return (
            f"this driver (epoch {me.epoch}) lost its claim on checkpoint {self.url}: another driver ({who}) took it "
            f"over, e.g. while this one was paused longer than lease_timeout_s ({self.lease_timeout_s:g} s). This driver "
            f"stops before {what}, writing nothing more; the other one continues the job."
        )

    def release(self) -> None:
        """Give up ownership (clean shutdown)."""
        me = self._owner
        if me is None:
            return
        me.stop.set()
        if me.thread is not None:
            me.thread.join(timeout=5)
        if not me.lost:
            self._release_lease(me)
        self._close_plan_log()
        self._owner = None
        self._release_lock(me)

    def _release_lease(self, me: _Owner) -> None:
        """Mark the lease released (the next driver claims without waiting for it), only if it is still this driver's.

        Read back first: a driver paused past `lease_timeout_s` (on storage without OS locks) may have been
        taken over without noticing, and its release must not overwrite the new owner's lease. Nothing is
        written either when the checkpoint is gone (its identity file deleted, e.g. a test's temporary
        directory removed before the exit): the write would re-create its directory.
        """
        try:
            if not self.storage.exists(_IDENTITY):
                log.info("checkpoint %s is gone (no %s file): its lease is not marked released", self.url, _IDENTITY)
                return
            lease = self._read_lease(strict=True)
        except Exception as exc:  # the lease then ends by its age, as after a crash: nothing is lost
            log.info("checkpoint %s: could not read its lease to release it (%s); it ends by its age", self.url, exc)
            return
        if lease is None or _epoch_of(lease) != me.epoch or lease.get("pid") != os.getpid() or lease.get("host") != hostname():
            log.info(
                "checkpoint %s: its lease is no longer this driver's (epoch %d; the lease names %s): left as it is (another "
                "driver took the checkpoint over)",
                self.url, me.epoch, {k: lease.get(k) for k in ("epoch", "pid", "host")} if lease else "nothing",
            )
            return
        with contextlib.suppress(CheckpointError):
            self._write_lease(released=True)

    @staticmethod
    def _release_lock(me: _Owner) -> None:
        if me.lock_fd is not None:
            os.close(me.lock_fd)
            me.lock_fd = None

    # -- the commit log ------------------------------------------------------------

    def log_seqs(self) -> list[int]:
        """Sequence numbers present in the log, ascending."""
        out = []
        for n in self.storage.list("log"):
            stem, _, ext = n.partition(".")
            if ext == "rec" and stem.isdigit():
                out.append(int(stem))
        return sorted(out)

    def last_seq(self) -> int:
        """Newest sequence number in the log (0 when empty)."""
        seqs = self.log_seqs()
        return seqs[-1] if seqs else 0

    def max_epoch(self) -> int:
        """Highest claim epoch in the (retained) log."""
        best = 0
        for rec in self.records(newest_first=True, strict=False):
            best = max(best, int(rec.data.get("epoch", 0)))
            if rec.kind == "claim":
                break
        return best

    def read_records(self, *, newest_first: bool = True, strict: bool = False) -> tuple[list[CommitRecord], dict[int, CheckpointError]]:
        """Every readable log record, and the error of each unreadable one (by sequence number).

        Logs nothing: the caller says what an unreadable record means (`records` warns and
        recovery falls back; ``streamkeep checkpoint`` lists them). With `strict` the first
        unreadable record raises its error instead.
        """
        seqs = self.log_seqs()
        if newest_first:
            seqs.reverse()
        out = []
        bad: dict[int, CheckpointError] = {}
        for seq in seqs:
            try:
                out.append(CommitRecord(seq, check_record(self.storage.path(_log_path(seq)), self.read(_log_path(seq), "record"))))
            except CheckpointError as exc:
                if strict:
                    raise
                bad[seq] = exc
        return out, bad

    def records(self, *, newest_first: bool = True, strict: bool = False) -> list[CommitRecord]:
        """Decoded log records; corrupt ones are skipped with a warning unless `strict`."""
        out, bad = self.read_records(newest_first=newest_first, strict=strict)
        for seq, exc in bad.items():
            if seq not in self.unreadable:  # once per record, not at every read of the log
                log.warning("skipping unreadable commit-log record %s: %s", _log_path(seq), exc)
            self.unreadable[seq] = exc
        return out

    def commits(self) -> list[CommitRecord]:
        """Readable commit records, newest first."""
        out = [r for r in self.records(newest_first=True) if r.kind == "commit"]
        if out and self._owner is not None:  # recovery: the plans this driver writes name the commit it continues
            self._committed = max(self._committed or out[0].batch_time, out[0].batch_time)
        return out

    def lost_history(self, records: list[CommitRecord] | None = None) -> list[str]:
        """Signs that this checkpoint once held commits, for a log without a readable commit.

        Before its first commit nothing deletes a log record or a plan: the log holds claim
        records 1, 2, ... with epochs 1, 2, ..., and every state file has its batch's plan.
        Retention and recovery delete them only once a commit exists. So each of these means
        commit records were lost (deleted, or their directory replaced), and the checkpoint
        must not be taken for a new one:

        * the log does not start at record 1;
        * a record's epoch is past its sequence number (epochs continue the lease's);
        * the lease names an epoch newer than every record;
        * a state file whose batch has no plan;
        * a plan in a plan log that names a commit (each names the newest commit its driver knew);
        * the earliest plan is later than the job's first batch, which every plan names (``first_ms``):
          the plans before it were deleted (a job that ran a few batches on storage without plan logs,
          whose plans name no commit, lost its log and lease).

        Args:
            records: the readable log records, if already read.

        Returns:
            One sentence per sign found ([] when the checkpoint looks never committed).
        """
        seqs = self.log_seqs()
        recs = self.records(newest_first=False) if records is None else sorted(records, key=lambda r: r.seq)
        out = []
        if seqs and seqs[0] > 1:
            out.append(f"the log starts at record {seqs[0]}, so records 1 to {seqs[0] - 1} were removed, which only happens after a commit")
        for r in recs:
            epoch = r.data.get("epoch", 0)
            if isinstance(epoch, int) and epoch > r.seq:
                out.append(f"{_log_path(r.seq)} has epoch {epoch}, so {epoch - 1} drivers ran before it, but only {r.seq - 1} earlier records exist")
                break
        lease_epoch = self._lease_epoch()
        log_epoch = max((e for r in recs if isinstance(e := r.data.get("epoch", 0), int)), default=0)
        if lease_epoch > log_epoch:
            out.append(f"the lease names epoch {lease_epoch}, but the newest epoch in the log is {log_epoch or 'none'}")
        index = self.plan_index()
        plans = set(index)
        for rel in sorted({r for r in index.values() if r.endswith(".plog")}):
            named = [(t, p.get("committed")) for t, p in self.read_plan_log(rel)[0].items() if p.get("committed") is not None]
            if named:
                t, committed = named[0]
                out.append(f"the plan of batch {t} ms in {rel} was written after the commit of batch {committed} ms, whose record is gone")
                break
        earliest = min(plans, default=None)
        if earliest is not None and (first := self._first_batch(earliest)) is not None and earliest > first:
            out.append(
                f"the earliest plan is of batch {earliest} ms, but the job's first batch was {first} ms (as that plan "
                f"says), so the plans of the batches before it were removed, which only happens after a commit"
            )
        for d in self.storage.list_dirs("state"):
            for n in self.storage.list(f"state/{d}"):
                stem = n.split(".")[0]
                if stem.isdigit() and int(stem) not in plans:
                    out.append(f"state file state/{d}/{n} remains while the plan of its batch ({int(stem)} ms) is gone")
                    break
            else:
                continue
            break
        return out

    def _first_batch(self, batch_time: int) -> int | None:
        """The job's first batch time, as the plan of `batch_time` names it (None: it does not, or is unreadable)."""
        try:
            first = self.read_plan(batch_time).get("first_ms")
        except CheckpointError:  # recovery reports a damaged plan when it reads it
            return None
        return first if isinstance(first, int) and not isinstance(first, bool) else None

    def commit(self, record: dict[str, Any]) -> int:
        """Append a commit record atomically; return its sequence number.

        Raises:
            CheckpointInUseError: another driver appended first (this driver lost its claim).
        """
        me = self._owner
        if me is None:
            msg = "commit() called without claiming the checkpoint"
            raise CheckpointError(msg)
        seq = me.seq + 1
        rec = {**record, "type": "commit", "epoch": me.epoch, "host": hostname(), "pid": os.getpid()}
        state = record.get("state", {})
        version = PARTITIONED_VERSION if any(isinstance(c, dict) and partitioned_chain(c) for c in state.values()) else PLAIN_VERSION
        if self.plan_log:  # its pending plans are in plan logs, which a reader of 1 to 5 would not see
            version = PLAN_LOG_VERSION
        if any(isinstance(c, dict) and inlines_empty_run(c) for c in state.values()):  # a reader of 1 to 6 would misread it
            version = EMPTY_RUN_VERSION
        gid = record.get("graph_id")
        if gid is not None:  # a reader of 1 to 7 would find no graph in it
            version = GRAPH_REF_VERSION
            if gid not in self._graph_stored:
                self._store_graph(gid)
        if any(isinstance(c, dict) and inlines_moved(c) for c in state.values()):  # a reader of 1 to 8 would misorder it
            version = MOVED_VERSION
        data = frame("record", "msgpack", _RECORDS.encode(rec), _log_path(seq), version)
        _faults.point("commit.before_record")
        # Anything at or past `seq` means another driver claimed after our last record. The listing is
        # needed besides create-if-absent: retention may since have deleted the claim record at `seq`.
        if me.deleted or self._lock_replaced(me):
            raise CheckpointInUseError(self._lost_message(me, f"committing batch {record.get('batch_time')}"))
        last = self.last_seq()
        if self._log_reset(me, last, me.seq):
            raise CheckpointInUseError(self._lost_message(me, f"committing batch {record.get('batch_time')}"))
        if me.lost or last >= seq or not self.storage.create(_log_path(seq), data):
            self._mark_lost(me)
            msg = (
                f"this driver lost its claim on checkpoint {self.url}: {self._describe_newer(seq)}. "
                f"This driver stops without committing batch {record.get('batch_time')}; the other one continues the job."
            )
            raise CheckpointInUseError(msg)
        me.seq = seq
        self._committed = int(record["batch_time"])
        self._count(len(data))
        _faults.point("commit.after_record")
        return seq

    # -- graph descriptions ---------------------------------------------------------

    def graph_ref(self, description: dict[str, Any]) -> str:
        """The id commit records name `description` by (``graph_id``); `commit` writes its file when needed.

        The id is a hash of the encoded description, so equal descriptions share one file and a
        changed one gets a new file. Cheap when called with the same object again (once per batch).
        """
        last = self._last_graph
        if last is not None and last[0] is description:
            return last[1]
        payload = _RECORDS.encode(description)
        gid = graph_id_of(payload)
        self._graphs.setdefault(gid, description)
        self._graph_payloads[gid] = payload
        self._last_graph = (description, gid)
        return gid

    def graph_of(self, rec: CommitRecord) -> dict[str, Any]:
        """The graph description in force for commit `rec`: its inline ``graph``, or the graph file it names.

        Every reader of a commit's graph goes through this (recovery's code-change check, the
        ``streamkeep checkpoint`` commands). A record of neither kind (written by hand or by an early
        build) has the empty graph, as before.

        Raises:
            CorruptCheckpointError: the graph file it names is missing, damaged or not its content.
        """
        gid = rec.graph_id
        if gid is None:
            graph = rec.data.get("graph", {})
            return graph if isinstance(graph, dict) else {}
        known = self._graphs.get(gid)
        if known is not None:
            return known
        try:
            graph = self.read_graph(gid)
        except CorruptCheckpointError as exc:
            msg = (
                f"{_log_path(rec.seq)} (the commit of batch {rec.batch_time} ms) names its graph description "
                f"{graph_path(gid)}, which cannot be read: {exc}"
            )
            raise CorruptCheckpointError(msg) from exc
        self._graphs[gid] = graph
        return graph

    def read_graph(self, gid: str, data: bytes | None = None) -> dict[str, Any]:
        """Read and check the graph file of id `gid` (its bytes `data`, if already read): framing, identity, and a
        content that hashes to `gid`.

        Raises:
            CorruptCheckpointError: it is missing, damaged, or does not hash to its id.
        """
        rel = graph_path(gid)
        path = self.storage.path(rel)
        if data is None:
            try:
                data = self.storage.read(rel)
            except CheckpointError as exc:
                if not isinstance(exc.__cause__, FileNotFoundError):
                    raise
                msg = f"checkpoint file {path} is missing: commit records name it, so it was deleted after it was written. {VERIFY_HINT}"
                raise CorruptCheckpointError(msg) from exc
        codec, payload = unframe(path, data, "graph", rel)
        refuse_pickle(codec, False, f"checkpoint file {path}")
        if graph_id_of(payload) != gid:
            msg = f"checkpoint file {path} is corrupt: its content does not hash to its id {gid}: it was altered. {VERIFY_HINT}"
            raise CorruptCheckpointError(msg)
        graph = self.decode(rel, data, "graph")
        if not isinstance(graph, dict):
            msg = f"checkpoint file {path} is corrupt: it holds a {type(graph).__name__}, not a graph description. {VERIFY_HINT}"
            raise CorruptCheckpointError(msg)
        return graph

    def _store_graph(self, gid: str) -> None:
        """Make the graph file of `gid` (registered by `graph_ref`) durable and whole before a commit names it.

        Written with create-if-absent. A file of that name holds the same description by
        construction (its name is its content's hash), so an existing one is kept when it reads
        back whole, and rewritten (with a warning) when it is damaged: no driver can write
        anything else under that name, so replacing it is safe even next to a fenced-out driver.
        """
        payload = self._graph_payloads.get(gid)
        if payload is None:
            msg = f"commit record names graph {gid}, which this driver never registered (Checkpoint.graph_ref)"
            raise CheckpointError(msg)
        rel = graph_path(gid)
        data = frame("graph", "msgpack", payload, rel, GRAPH_REF_VERSION)
        if self.storage.create(rel, data):
            self._count(len(data))
        else:
            try:
                self.read_graph(gid)
            except CorruptCheckpointError as exc:
                log.warning("rewriting the damaged graph description %s (%s)", self.storage.path(rel), exc)
                self.storage.write(rel, data)
                self._count(len(data))
        self._graph_stored.add(gid)
        _faults.point("graph.after_write")

    def _describe_newer(self, seq: int) -> str:
        """Who wrote the log at or past `seq` (another driver), from its records or its lease."""
        for s in sorted((q for q in self.log_seqs() if q >= seq), reverse=True):
            with contextlib.suppress(CheckpointError):
                other = self.read(_log_path(s), "record")
                if isinstance(other, dict) and "pid" in other:
                    return (
                        f"another driver (epoch {other.get('epoch')}, pid {other.get('pid')} on {other.get('host')}) "
                        f"wrote log record {s} (this driver's next record would have been {seq})"
                    )
        lease = self._read_lease()
        if lease and self._owner is not None and lease.get("epoch") != self._owner.epoch:
            return (
                f"another driver (epoch {lease.get('epoch')}, pid {lease.get('pid')} on {lease.get('host')}, from its lease) "
                f"appended to the log at or past record {seq}"
            )
        return f"another driver appended to the log at or past record {seq} (its records and lease do not say which)"

    def written_bytes(self) -> int:
        """Bytes this thread has written (plans, state files, blobs, commit records); for metrics."""
        return int(getattr(self._tally, "n", 0))

    def _count(self, n: int) -> None:
        self._tally.n = getattr(self._tally, "n", 0) + n

    def count_written(self, n: int) -> None:
        """Add `n` bytes written for this driver by other processes (partition owners' state files) to `written_bytes`."""
        self._count(n)

    # -- plans, state, blobs ----------------------------------------------------------

    def write_plan(self, batch_time: int, plan: dict[str, Any]) -> None:
        """Make the plan of `batch_time` durable (a new file: an existing one means another driver)."""
        self.write_plan_data(batch_time, self.encode_plan(batch_time, plan))

    def encode_plan(self, batch_time: int, plan: dict[str, Any]) -> bytes:
        """The framed bytes of the plan of `batch_time` (`write_plan_data` writes them).

        A plan for a plan log names the newest commit this driver knows (``committed``, a batch
        time): so a checkpoint whose commit records were lost is never taken for a new one
        (`lost_history`), although its plan logs still hold plans older than its commits.
        """
        if self.plan_log and self._committed is not None:
            plan = {**plan, "committed": self._committed}
        return self.encode("plan", plan, rel=plan_path(batch_time))

    def write_plan_data(self, batch_time: int, data: bytes) -> None:
        """Make the plan of `batch_time`, encoded by `encode_plan`, durable (as `write_plan`).

        With `plan_log` (local disks) it is appended to this driver's plan log with one
        ``fdatasync``; the first plan of a log creates it (atomically, as any file). Plans
        come in batch order from one thread at a time.
        """
        if not self.plan_log:
            self._create(plan_path(batch_time), data)
            return
        f = read_frame(self.storage.path(plan_path(batch_time)), data, "plan", plan_path(batch_time))
        pl = self._plan_log
        if pl is None or pl.plans >= PLAN_LOG_PLANS or pl.size >= PLAN_LOG_BYTES:
            self._close_plan_log()
            rel = plan_log_path(batch_time)
            rec = frame("plan", f.codec, f.payload, rel, PLAN_LOG_VERSION)
            self._create(rel, rec)
            pl = self._plan_log = _PlanLog(rel, self.storage.open_append(rel), 1, len(rec))
        else:
            rec = frame("plan", f.codec, f.payload, pl.rel, PLAN_LOG_VERSION)
            try:
                self.storage.append(pl.fd, pl.rel, rec, point="plan.torn_append")
            except CheckpointError:
                self._close_plan_log()  # the next plan starts a new log
                raise
            pl.plans += 1
            pl.size += len(rec)
            self._count(len(rec))
        with self._plans_lock:
            self._log_last[pl.rel] = batch_time
            self._in_log[batch_time] = pl.rel

    def _close_plan_log(self) -> None:
        pl, self._plan_log = self._plan_log, None
        if pl is not None:
            with contextlib.suppress(OSError):
                os.close(pl.fd)

    def plan_index(self) -> dict[int, str]:
        """Batch time -> the file holding its plan (``plans/<T>.plan``, or the plan log holding it), for every plan stored.

        A plan log whose first frame is damaged (nothing in it can be read) is left out when no
        plan it can hold is needed: its plans are of batches from the time its name holds up to
        (not including) the next plan file or log (a log is appended in batch order, and the next
        one starts after it), and the newest commit is not before the last of those. Such logs
        are listed by `unneeded_plan_logs` (verify reports them; retention deletes them).

        Raises:
            CorruptCheckpointError: a plan log is damaged (other than at its end: see `read_plan_log`),
                unless it is such a log.
        """
        out: dict[int, str] = {}
        names = self.storage.list("plans")
        damaged: dict[str, CorruptCheckpointError] = {}
        for n in names:
            stem, _, ext = n.partition(".")
            if not stem.isdigit():
                continue
            if ext == "plan" and int(stem) not in out:
                out[int(stem)] = f"plans/{n}"
            elif ext == "plan":
                msg = f"checkpoint {self.url}: the plan of batch {int(stem)} ms is stored twice, in {out[int(stem)]} and in plans/{n}. {VERIFY_HINT}"
                raise CorruptCheckpointError(msg)
            elif ext == "plog":
                rel = f"plans/{n}"
                try:
                    plans, _ = self.read_plan_log(rel)
                except CorruptCheckpointError as exc:
                    if first_frame_sound(self.storage.read(rel)):  # sound but misplaced or altered: never skipped
                        raise
                    damaged[rel] = exc
                    continue
                with self._plans_lock:
                    for t in plans:
                        if t in out:
                            msg = f"checkpoint {self.url}: the plan of batch {t} ms is stored twice, in {out[t]} and in {rel}. {VERIFY_HINT}"
                            raise CorruptCheckpointError(msg)
                        out[t] = rel
                        self._in_log.setdefault(t, rel)
                    if plans:
                        self._log_last[rel] = max(self._log_last.get(rel, 0), max(plans))
        if damaged:
            self._skip_unneeded_logs(damaged, names)
        return out

    def _skip_unneeded_logs(self, damaged: dict[str, CorruptCheckpointError], names: list[str]) -> None:
        """Note the damaged plan logs (first frame unreadable) that hold only committed plans; raise for any other."""
        starts = sorted(int(stem) for n in names if (stem := n.partition(".")[0]).isdigit())
        commits = self.commits()
        newest = commits[0].batch_time if commits else None
        for rel, exc in sorted(damaged.items()):
            first = int(rel.rsplit("/", 1)[-1].partition(".")[0])
            until = next((t for t in starts if t > first), None)  # every plan in it is of a batch before this
            if newest is None or until is None or until - 1 > newest:
                bound = "no later plan file bounds what it holds" if until is None else f"it can hold plans of batches up to {until} ms"
                upto = "nothing is committed" if newest is None else f"the newest commit is of batch {newest} ms"
                msg = f"{exc}. Its plans cannot be read, and recovery may need them: {bound}, and {upto}."
                raise CorruptCheckpointError(msg) from exc
            with self._plans_lock:
                known, self._unneeded_logs[rel] = rel in self._unneeded_logs, until
            if not known:
                log.warning(
                    "%s; left out: every batch it can hold (from %d ms, before %d ms) is committed (newest commit: batch %d ms)",
                    str(exc),
                    first,
                    until,
                    newest,
                )

    def unneeded_plan_logs(self) -> dict[str, int]:
        """The damaged plan logs `plan_index` left out (all their plans committed) -> the batch time their plans precede."""
        with self._plans_lock:
            return dict(self._unneeded_logs)

    def check_plans_after(self, batch_time: int) -> None:
        """Raise if a damaged plan log `plan_index` left out may hold the plan of a batch after `batch_time`.

        `plan_index` leaves out such logs by the newest commit; recovery that falls back to an older
        commit replays the batches after it, and their plans must all be readable.

        Raises:
            CorruptCheckpointError: such a log may hold a plan recovery from `batch_time` needs.
        """
        for rel, until in sorted(self.unneeded_plan_logs().items()):
            if until - 1 > batch_time:
                msg = (
                    f"checkpoint {self.url}: recovery falls back to the commit of batch {batch_time} ms, and must replay "
                    f"the batches after it, but the plan log {rel} (batches before {until} ms) is damaged. {VERIFY_HINT}"
                )
                raise CorruptCheckpointError(msg)

    def plan_times(self) -> list[int]:
        """Batch times that have a plan (a file of their own, or in a plan log), ascending."""
        return sorted(self.plan_index())

    def plan_logs(self) -> dict[str, int]:
        """Plan log -> the batch time of its newest plan, for every plan log stored."""
        out: dict[str, int] = {}
        for t, rel in self.plan_index().items():
            if rel.endswith(".plog"):
                out[rel] = max(out.get(rel, t), t)
        return out

    def read_plan_log(self, rel: str) -> tuple[dict[int, dict[str, Any]], int]:
        """The plans a plan log holds (batch time -> plan, unchecked beyond their batch times), and the bytes of a torn tail.

        The first plan's batch time is the one the log's name holds; every next one is later. A
        tail that is not a sound frame is what a crash in the middle of an append leaves (that
        append never returned, so its batch produced nothing): it is skipped, its length returned.

        Raises:
            CorruptCheckpointError: the log's first frame is damaged, a plan is not a plan of a
                later batch than the one before it, or it does not decode.
        """
        path = self.storage.path(rel)
        data = self.storage.read(rel)
        frames, end = read_frames(path, data, "plan", rel)
        stem = rel.rsplit("/", 1)[-1].partition(".")[0]
        out: dict[int, dict[str, Any]] = {}
        last = int(stem) - 1 if stem.isdigit() else -1
        for i, f in enumerate(frames):
            refuse_pickle(f.codec, False, f"checkpoint file {path}")
            try:
                plan = get_codec(f.codec).decode(f.payload)
            except Exception as exc:
                msg = f"checkpoint file {path}: plan {i + 1} passed its checksum but could not be decoded: {type(exc).__name__}: {exc}"
                raise CorruptCheckpointError(msg) from exc
            t = plan.get("batch_time") if isinstance(plan, dict) else None
            if not isinstance(t, int) or isinstance(t, bool) or t <= last or (i == 0 and t != last + 1):
                want = f"batch {last + 1} ms, as its name says" if i == 0 else f"a batch after {last} ms"
                msg = f"checkpoint file {path}: plan {i + 1} holds the plan of batch {t!r} ms, not of {want}: it was altered. {VERIFY_HINT}"
                raise CorruptCheckpointError(msg)
            out[t] = plan
            last = t
        return out, len(data) - end

    def plan_file(self, batch_time: int) -> str:
        """The file holding the plan of `batch_time` as far as this driver knows (its own file unless in a plan log)."""
        with self._plans_lock:
            return self._in_log.get(batch_time, plan_path(batch_time))

    def forget_plans(self, upto: int) -> list[str]:
        """The plan logs whose plans are all of batches up to `upto`, except the one being appended to; forgets them.

        The damaged logs `plan_index` left out are among them once every batch they can hold is.

        Retention deletes them (with the plans of their own file up to `upto`).
        """
        pl = self._plan_log  # read once: the plan lane may close it (a new log) meanwhile
        open_rel = pl.rel if pl is not None else None
        with self._plans_lock:
            done = [rel for rel, last in self._log_last.items() if last <= upto and rel != open_rel]
            for rel in done:
                del self._log_last[rel]
            damaged = [rel for rel, until in self._unneeded_logs.items() if until - 1 <= upto]  # see plan_index
            for rel in damaged:
                del self._unneeded_logs[rel]
            done += damaged
            for t in [t for t, rel in self._in_log.items() if t <= upto and rel not in self._log_last]:
                del self._in_log[t]
        return done

    def read_plan(self, batch_time: int) -> dict[str, Any]:
        """The plan of `batch_time` (from its own file, or from the plan log holding it)."""
        rel = plan_path(batch_time)
        if self.plan_file(batch_time) == rel and not self.storage.exists(rel):
            self.plan_index()  # learn the plan logs
        log_rel = self.plan_file(batch_time)
        if log_rel != rel:
            rel = log_rel
            plans, _ = self.read_plan_log(rel)
            if batch_time not in plans:
                msg = f"{self.storage.path(rel)} does not hold the plan of batch {batch_time} ms. {VERIFY_HINT}"
                raise CorruptCheckpointError(msg)
            data = plans[batch_time]
        else:
            data = self.read(rel, "plan")
        if not isinstance(data, dict) or not isinstance(data.get("sources", {}), dict) or not isinstance(data.get("positions", {}), dict):
            msg = f"{self.storage.path(rel)} does not hold a plan. {VERIFY_HINT}"
            raise CorruptCheckpointError(msg)
        if data.get("batch_time") != batch_time:
            msg = (
                f"{self.storage.path(rel)} holds the plan of batch {data.get('batch_time')!r} ms, not of batch "
                f"{batch_time} ms: it was copied or renamed from another batch. {VERIFY_HINT}"
            )
            raise CorruptCheckpointError(msg)
        blobs = data.get("blobs", [])
        if not isinstance(blobs, list) or not all(isinstance(b, str) for b in blobs):
            msg = f"{self.storage.path(rel)}: its 'blobs' is not a list of blob names. {VERIFY_HINT}"
            raise CorruptCheckpointError(msg)
        return data

    def write_state(self, op: str, batch_time: int, kind: str, payload: bytes, codec: str, version: int = PLAIN_VERSION) -> str:
        """Write an operator's state file (`kind` "delta" or "snap", format `version`: see `state_version`); return its path."""
        rel = state_path(op, batch_time, kind)
        self._create(rel, frame(kind, codec, payload, rel, version))
        return rel

    def write_part(
        self, op: str, batch_time: int, kind: str, payload: bytes, codec: str, part: int, count: int, epoch: int, version: int = PARTITIONED_VERSION
    ) -> str:
        """Write key partition `part` of `count` of an operator's state file (a partition owner, for claim `epoch`; format
        `version`, at least `PARTITIONED_VERSION`); its path.

        Written whole (atomically on local disks), replacing a file of the same name: only
        this epoch's owner of that partition writes that name (a retry of the batch rewrites
        it), and no commit names it before the owner acknowledged it.
        """
        rel = part_path(op, batch_time, kind, part, count, epoch)
        data = frame(kind, codec, payload, rel, max(version, PARTITIONED_VERSION))
        self.storage.write(rel, data)
        self._count(len(data))
        return rel

    def read_state(self, rel: str, allow_pickle: bool) -> tuple[str, bytes]:
        """(codec, payload) of a state file, checked.

        Raises:
            CorruptCheckpointError: the file is damaged, or missing although a commit needs it.
        """
        try:
            data = self.storage.read(rel)
        except CheckpointError as exc:
            if not isinstance(exc.__cause__, FileNotFoundError):
                raise
            msg = (
                f"checkpoint file {self.storage.path(rel)} is missing: a commit record needs it, so it was deleted "
                f"after it was written. {VERIFY_HINT}"
            )
            raise CorruptCheckpointError(msg) from exc
        kind = "snap" if rel.endswith(".snap") else "delta" if rel.endswith(".delta") else None
        return unframe(self.storage.path(rel), data, kind, rel)

    def put_blob(self, name: str, value: Any) -> None:
        """Store a source blob."""
        self._create(blob_path(name), self.encode("blob", value, rel=blob_path(name)))
        _faults.point("blob.after_write")

    def _create(self, rel: str, data: bytes) -> None:
        """Write a plan, state file or blob, which never replaces another driver's file.

        Recovery deletes every such file no commit or pending plan needs before anything runs, so
        an existing file was written by another driver: either one that took this checkpoint over
        (this driver lost its claim and stops), or one fenced out earlier that kept running for a
        while (it never overwrites, and can no longer commit, so the owner's version replaces it).
        """
        if self.storage.create(rel, data):
            self._count(len(data))
            return
        me = self._owner
        if me is not None and not me.lost and self.last_seq() == me.seq:
            log.warning("replacing %s, written by a driver that lost its claim on %s", self.storage.path(rel), self.url)
            self.storage.write(rel, data)
            self._count(len(data))
            return
        if me is not None:
            self._mark_lost(me)
        msg = (
            f"checkpoint file {self.storage.path(rel)} already exists: another driver took over checkpoint "
            f"{self.url} and wrote it, so this driver lost its claim. It stops without overwriting the file."
        )
        raise CheckpointInUseError(msg)

    def get_blob(self, name: str) -> Any:
        """Read a source blob."""
        return self.read(blob_path(name), "blob")

    def delete(self, rel: str) -> None:
        """Delete one file (retention)."""
        self.storage.delete(rel)


def _log_path(seq: int) -> str:
    return f"log/{seq:012d}.rec"


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def check_record(path: str, data: Any) -> dict[str, Any]:
    """`data` if it has the shape of a claim or commit record, else `CorruptCheckpointError`."""
    why = ""
    if not isinstance(data, dict):
        why = f"it holds a {type(data).__name__}, not a log record"
    elif data.get("type") not in ("claim", "commit"):
        why = f"its type is {data.get('type')!r}, not 'claim' or 'commit'"
    elif not _is_int(data.get("epoch")):
        why = "it has no epoch"
    elif data["type"] == "commit" and not (_is_int(data.get("batch_time")) and _is_int(data.get("zero_ms", 0))):
        why = "it has no batch time, or a time origin that is not a number"
    elif data["type"] == "commit" and not all(isinstance(data.get(k, {}), dict) for k in ("state", "positions", "graph")):
        why = "its state, positions or graph is not a map"
    elif data["type"] == "commit" and "graph_id" in data and ("graph" in data or not valid_graph_id(data["graph_id"])):
        why = f"its graph_id {data['graph_id']!r} is not the id of a graph file ({GRAPH_ID_LEN} hex digits), or it also holds a graph"
    if why:
        msg = f"checkpoint file {path} is corrupt: {why}. {VERIFY_HINT}"
        raise CorruptCheckpointError(msg)
    out: dict[str, Any] = data
    return out


def log_path(seq: int) -> str:
    """Path of the log record with sequence number `seq`."""
    return _log_path(seq)


def blob_path(name: str) -> str:
    """Path of a source blob."""
    return f"blobs/{_safe(name)}"


def _parents(path: str) -> list[str]:
    """`path` and its ancestors, nearest first."""
    out = [path]
    while True:
        up = os.path.dirname(out[-1])
        if up == out[-1]:
            return out
        out.append(up)


def _is_mine(me: _Owner, lease: dict[str, Any]) -> bool:
    """Whether `lease` is the one this driver writes (its epoch, this process)."""
    return _epoch_of(lease) == me.epoch and lease.get("pid") == os.getpid() and lease.get("host") == hostname()


def _epoch_of(data: dict[str, Any]) -> int:
    """The epoch a lease or log record names (0 if it names none)."""
    epoch = data.get("epoch", 0)
    return epoch if isinstance(epoch, int) and not isinstance(epoch, bool) else 0


def _now_ms() -> int:
    return int(time.time() * 1000)


def _pid_alive(pid: int) -> bool:
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
