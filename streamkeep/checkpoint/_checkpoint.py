"""`Checkpoint`: the layout, ownership and commit log of one checkpoint.

Layout under the root URL (see docs/checkpoint-format.md)::

    CHECKPOINT                 identity: format version, engine version, creation time
    lease                      current owner and heartbeat (the only file rewritten)
    log/<seq:012d>.rec         commit log: "claim" and "commit" records, created atomically
    plans/<T:015d>.plan        each batch's input plan, durable before the batch runs
    state/<op>/<T:015d>.delta  the keys an operator changed in batch T
    state/<op>/<T:015d>.snap   an operator's full state as of batch T
    blobs/<name>               source data that cannot be re-read (socket WAL, queues)

The commit log is the single source of truth. A record is written with the
storage's atomic create-if-absent at the next sequence number, so two drivers
can never both append: the one that loses learns it lost its claim and stops
(fencing). Knows nothing of operators; imports errors, codec, _faults and
its own storage/format modules.
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import threading
import time
from dataclasses import dataclass, field
from typing import Any

from streamkeep import _faults
from streamkeep.checkpoint._format import FORMAT_VERSION, frame, unframe
from streamkeep.checkpoint.storage import CheckpointStorage
from streamkeep.codec import DecodeError, get_codec
from streamkeep.errors import CheckpointError, CheckpointInUseError, CorruptCheckpointError

log = logging.getLogger("streamkeep.checkpoint")

_RECORDS = get_codec("msgpack")
_IDENTITY = "CHECKPOINT"
_LEASE = "lease"
_LOCK = "lock"


def _safe(name: str) -> str:
    """A path component for an operator name (letters, digits, ``-._`` kept; others %XX)."""
    return "".join(c if c.isalnum() and c.isascii() or c in "-._" else f"%{ord(c):02X}" for c in name)


def state_dir(op: str) -> str:
    """Directory of an operator's state files."""
    return f"state/{_safe(op)}"


def plan_path(batch_time: int) -> str:
    """Path of the plan of `batch_time`."""
    return f"plans/{batch_time:015d}.plan"


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

    def files(self) -> set[str]:
        """Every state file this commit's state chain needs."""
        out: set[str] = set()
        for chain in self.data.get("state", {}).values():
            if chain.get("snapshot"):
                out.add(chain["snapshot"])
            out.update(d for d in chain.get("deltas", ()) if isinstance(d, str))  # others are inline
        return out


@dataclass
class _Owner:
    epoch: int = 0
    seq: int = 0
    lock_fd: int | None = None
    stop: threading.Event = field(default_factory=threading.Event)
    thread: threading.Thread | None = None
    lost: bool = False  # another driver took over: never write the lease again


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

    # -- records ------------------------------------------------------------

    def encode(self, kind: str, value: Any, codec: str = "msgpack") -> bytes:
        """Frame `value` encoded with `codec`."""
        return frame(kind, codec, get_codec(codec).encode(value))

    def decode(self, rel: str, data: bytes, kind: str | None = None, allow_pickle: bool = False) -> Any:
        """Check, unframe and decode one file's bytes."""
        codec, payload = unframe(self.storage.path(rel), data, kind)
        if codec == "pickle" and not allow_pickle:
            msg = (
                f"checkpoint file {self.storage.path(rel)} was written with the pickle codec, and loading it would "
                f"execute code from the checkpoint. Opt in with codec='pickle' on the operator that owns it."
            )
            raise CheckpointError(msg)
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
                return {"format_version": FORMAT_VERSION}
            msg = f"{self.url} is not a streamkeep checkpoint (no {_IDENTITY} file)"
            raise CheckpointError(msg)
        data = self.read(_IDENTITY, "identity")
        if not isinstance(data, dict):
            msg = f"{self.storage.path(_IDENTITY)} is not a streamkeep checkpoint identity record"
            raise CorruptCheckpointError(msg)
        return data

    def _ensure_identity(self, engine_version: str) -> None:
        if self.storage.exists(_IDENTITY):
            self.identity()
            return
        others = [n for n in self.storage.list("") if n not in (_LOCK, _LEASE)]
        if others and not {"log", "plans", "state", "blobs"} & set(others):
            msg = (
                f"{self.url} already contains files that are not a streamkeep checkpoint ({', '.join(others[:5])}). "
                f"Point the checkpoint at an empty or new directory."
            )
            raise CheckpointError(msg)
        record = {"format_version": FORMAT_VERSION, "engine_version": engine_version, "created_ms": int(time.time() * 1000)}
        self.storage.create(_IDENTITY, self.encode("identity", record))

    # -- ownership -------------------------------------------------------------

    def claim(self, owner: str, engine_version: str) -> None:
        """Become the only driver allowed to commit to this checkpoint.

        Raises:
            CheckpointInUseError: another live driver owns it.
        """
        me = _Owner()
        if self.storage.local:
            os.makedirs(self.storage.root, exist_ok=True)
            me.lock_fd = self._take_local_lock()
        else:
            self._check_lease()
        try:
            self._ensure_identity(engine_version)
            for _ in range(100):
                last = self.last_seq()
                epoch = self.max_epoch() + 1
                rec = {"type": "claim", "epoch": epoch, "owner": owner, "host": socket.gethostname(), "pid": os.getpid(), "time_ms": _now_ms()}
                if self.storage.create(_log_path(last + 1), self.encode("record", rec)):
                    me.epoch, me.seq = epoch, last + 1
                    break
            else:  # pragma: no cover - needs 100 lost races in a row
                msg = f"could not claim checkpoint {self.url}: other drivers keep appending to its log"
                raise CheckpointInUseError(msg)
            self._owner = me
            self._write_lease()
            me.thread = threading.Thread(target=self._heartbeat, args=(me,), name="streamkeep-lease", daemon=True)
            me.thread.start()
        except BaseException:
            self._release_lock(me)
            raise

    def _take_local_lock(self) -> int:
        import fcntl

        fd = os.open(self.storage.path(_LOCK), os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise CheckpointInUseError(self._in_use_message()) from None
        return fd

    def _read_lease(self) -> dict[str, Any] | None:
        try:
            data = self.read(_LEASE, "lease")
        except Exception:  # unreadable or unreachable: treated as no lease (commits are fenced anyway)
            return None
        return data if isinstance(data, dict) else None

    def _in_use_message(self) -> str:
        lease = self._read_lease() or {}
        who = f"pid {lease.get('pid', '?')} on host {lease.get('host', '?')} (owner {lease.get('owner', '?')})"
        return (
            f"checkpoint {self.url} is in use by another driver: {who}. Only one driver may run a checkpoint "
            f"at a time; stop the other driver, or give this job its own checkpoint URL."
        )

    def _check_lease(self) -> None:
        lease = self._read_lease()
        if not lease:
            return
        age_s = (_now_ms() - int(lease.get("heartbeat_ms", 0))) / 1000.0
        if age_s >= self.lease_timeout_s:
            return
        if lease.get("host") == socket.gethostname() and not _pid_alive(int(lease.get("pid", -1))):
            return
        if lease.get("released"):
            return
        raise CheckpointInUseError(self._in_use_message() + f" Its last heartbeat was {age_s:.1f} s ago; a lease expires after {self.lease_timeout_s:.0f} s.")

    def _write_lease(self, released: bool = False) -> None:
        me = self._owner
        if me is None:
            return
        lease = {"epoch": me.epoch, "host": socket.gethostname(), "pid": os.getpid(), "heartbeat_ms": _now_ms(), "released": released}
        self.storage.write(_LEASE, self.encode("lease", lease))

    def _heartbeat(self, me: _Owner) -> None:
        # `me` is passed in: release() may clear self._owner before this thread first runs
        while not me.stop.wait(max(0.2, self.lease_timeout_s / 3)):
            lease = self._read_lease()
            if lease is not None and int(lease.get("epoch", 0)) > me.epoch:
                me.lost = True  # taken over after a stall; our next commit will fail (fenced)
                log.warning("checkpoint %s was taken over by another driver (epoch %s)", self.url, lease.get("epoch"))
                return
            try:
                self._write_lease()
            except Exception as exc:  # any storage failure: logged, retried at the next beat; commits are fenced anyway
                log.warning("could not renew the lease of %s: %s", self.url, exc)

    def release(self) -> None:
        """Give up ownership (clean shutdown)."""
        me = self._owner
        if me is None:
            return
        me.stop.set()
        if me.thread is not None:
            me.thread.join(timeout=5)
        if not me.lost:
            with contextlib.suppress(CheckpointError):
                self._write_lease(released=True)
        self._owner = None
        self._release_lock(me)

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

    def records(self, *, newest_first: bool = True, strict: bool = False) -> list[CommitRecord]:
        """Decoded log records; corrupt ones are skipped with a warning unless `strict`."""
        seqs = self.log_seqs()
        if newest_first:
            seqs.reverse()
        out = []
        for seq in seqs:
            try:
                out.append(CommitRecord(seq, self.read(_log_path(seq), "record")))
            except CheckpointError as exc:
                if strict:
                    raise
                self.unreadable[seq] = exc
                log.warning("skipping unreadable commit-log record %s: %s", _log_path(seq), exc)
        return out

    def commits(self) -> list[CommitRecord]:
        """Readable commit records, newest first."""
        return [r for r in self.records(newest_first=True) if r.kind == "commit"]

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
        data = self.encode("record", {**record, "type": "commit", "epoch": me.epoch})
        _faults.point("commit.before_record")
        # Anything at or past `seq` means another driver claimed after our last record. The listing is
        # needed besides create-if-absent: retention may since have deleted the claim record at `seq`.
        if me.lost or self.last_seq() >= seq or not self.storage.create(_log_path(seq), data):
            me.lost = True
            me.stop.set()
            other = {}
            with contextlib.suppress(CheckpointError):
                other = self.read(_log_path(seq), "record")
            msg = (
                f"this driver lost its claim on checkpoint {self.url}: another driver (epoch {other.get('epoch', '?')}, "
                f"pid {other.get('pid', '?')} on {other.get('host', '?')}) wrote log record {seq} first. "
                f"This driver stops without committing batch {record.get('batch_time')}; the other one continues the job."
            )
            raise CheckpointInUseError(msg)
        me.seq = seq
        self._count(len(data))
        _faults.point("commit.after_record")
        return seq

    def written_bytes(self) -> int:
        """Bytes this thread has written (plans, state files, blobs, commit records); for metrics."""
        return int(getattr(self._tally, "n", 0))

    def _count(self, n: int) -> None:
        self._tally.n = getattr(self._tally, "n", 0) + n

    # -- plans, state, blobs ----------------------------------------------------------

    def write_plan(self, batch_time: int, plan: dict[str, Any]) -> None:
        """Make the plan of `batch_time` durable (a new file: an existing one means another driver)."""
        self._create(plan_path(batch_time), self.encode("plan", plan))

    def plan_times(self) -> list[int]:
        """Batch times that have a plan file, ascending."""
        return sorted(int(n.split(".")[0]) for n in self.storage.list("plans") if n.endswith(".plan") and n.split(".")[0].isdigit())

    def read_plan(self, batch_time: int) -> dict[str, Any]:
        """The plan of `batch_time`."""
        data = self.read(plan_path(batch_time), "plan")
        if not isinstance(data, dict):
            msg = f"{self.storage.path(plan_path(batch_time))} does not hold a plan"
            raise CorruptCheckpointError(msg)
        return data

    def write_state(self, op: str, batch_time: int, kind: str, payload: bytes, codec: str) -> str:
        """Write an operator's state file (`kind` "delta" or "snap"); return its path."""
        rel = f"{state_dir(op)}/{batch_time:015d}.{kind}"
        self._create(rel, frame(kind, codec, payload))
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
                f"after it was written. Run `streamkeep checkpoint verify` on the checkpoint to see every damaged file."
            )
            raise CorruptCheckpointError(msg) from exc
        return unframe(self.storage.path(rel), data, None)

    def put_blob(self, name: str, value: Any) -> None:
        """Store a source blob."""
        self._create(f"blobs/{_safe(name)}", self.encode("blob", value))

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
            me.lost = True
            me.stop.set()
        msg = (
            f"checkpoint file {self.storage.path(rel)} already exists: another driver took over checkpoint "
            f"{self.url} and wrote it, so this driver lost its claim. It stops without overwriting the file."
        )
        raise CheckpointInUseError(msg)

    def get_blob(self, name: str) -> Any:
        """Read a source blob."""
        return self.read(f"blobs/{_safe(name)}", "blob")

    def delete(self, rel: str) -> None:
        """Delete one file (retention)."""
        self.storage.delete(rel)


def _log_path(seq: int) -> str:
    return f"log/{seq:012d}.rec"


def log_path(seq: int) -> str:
    """Path of the log record with sequence number `seq`."""
    return _log_path(seq)


def blob_path(name: str) -> str:
    """Path of a source blob."""
    return f"blobs/{_safe(name)}"


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
