"""File output: one file per batch time, written atomically so a replay overwrites it.

Owns :class:`FileSink` and :class:`ParquetSink` (pyarrow, imported when used). Local paths use the standard library; other fsspec URLs
(``s3://``, ``gcs://``, ...) import fsspec lazily. Imports only
``streamkeep.errors`` and ``streamkeep._types``; must not import sources,
dstream, the scheduler or executors.
"""

from __future__ import annotations

import base64
import contextlib
import dataclasses
import datetime as dt
import json
import logging
import os
import shutil
import threading
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, Literal

from streamkeep import _arrow
from streamkeep._types import BatchTime
from streamkeep._util import atomic_write_file, fsync_dir
from streamkeep.errors import CheckpointInUseError, ConfigError, SinkError
from streamkeep.sinks.base import FencingToken

__all__ = ["FileSink", "ParquetSink"]

log = logging.getLogger(__name__)

_FORMATS = {"lines": "txt", "jsonl": "jsonl", "parquet": "parquet"}
#: The fence file in the sink's directory: "<checkpoint id> <epoch>" of the newest driver that wrote.
FENCE_FILE = ".streamkeep-fence"


def _json_default(obj: Any) -> Any:
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return dataclasses.asdict(obj)
    if isinstance(obj, (bytes, bytearray, memoryview)):
        raw = bytes(obj)
        try:
            return raw.decode("utf-8")
        except UnicodeDecodeError:
            return {"base64": base64.b64encode(raw).decode("ascii")}
    if isinstance(obj, (set, frozenset)):
        return sorted(obj, key=repr)
    if isinstance(obj, (dt.datetime, dt.date)):
        return obj.isoformat()
    msg = f"{type(obj).__name__} is not JSON serialisable"
    raise TypeError(msg)


class FileSink:
    """Writes every batch to its own file, atomically; a replay rewrites it identically.

    The file for batch time ``T`` is ``<path>/batch-<T as 13 digits>.<ext>``
    (zero-padded, so names sort by time), written whole or not at all: the
    bytes go to a temporary file in the same directory, which is fsynced and
    renamed over the final name, then the directory is fsynced. A replayed
    batch (same records) therefore produces the same file, and a crash never
    leaves a partial one. Every batch gets a file, an empty batch an empty one.
    On an object store (any fsspec URL other than ``file://``) the file is one
    PUT, which is atomic there.

    On the Ray executor (`PartitionWritable`, local or mounted directories) each part
    of a batch is encoded and written by the worker holding its records, to a hidden
    ``.batch-<T>.<attempt>.part-NNNNN.<ext>`` file; the driver then joins the parts
    into the batch's file (temporary file, fsync, rename, as above, under the same
    fence) and removes them. The directory must be shared by the driver and the
    workers (as the checkpoint storage is).

    Fencing (jobs with a checkpoint): the directory holds a fence file,
    ``.streamkeep-fence``, with the checkpoint id and claim epoch of the newest
    driver that wrote there. On a local (POSIX) filesystem every write takes an
    exclusive ``flock`` on it, refuses to write (`CheckpointInUseError`) when it
    names a newer epoch of the same checkpoint, records its own epoch, renames its
    file into place and only then unlocks: a driver that lost the checkpoint to a
    newer one can never replace a file the newer one wrote, even if it was paused
    between its ownership check and the rename. Limits: the lock needs a filesystem
    whose ``flock`` works across the writers (local disks; NFS v4); a writer paused
    *while holding* the lock (a few microseconds per batch) holds up the next
    writer for at most ``fence_timeout_s``, which then fails with SinkError. On an
    object store there is no lock: the fence object is read before each PUT, which
    narrows the window to that one request but cannot close it (a writer paused
    between the read and the PUT can still replace a newer file). Readers that
    must never see a fenced driver's file should read only files of committed
    batches.

    Formats:
        ``"lines"`` (extension ``txt``, the default, like Spark's
        ``saveAsTextFiles``): ``str(record)`` per line, UTF-8. A record whose
        text contains a newline is refused (it would read back as two); use
        ``"jsonl"`` for such data.
        ``"jsonl"`` (extension ``jsonl``): one ``json.dumps(record)`` per line,
        UTF-8, keys in the record's own order. Tuples (and NamedTuples such as
        KafkaRecord) become arrays; dataclasses become objects; bytes become a
        string when they are UTF-8, else ``{"base64": ...}``; sets become
        sorted arrays; datetimes ISO strings. Pass ``json_default`` for other
        types.

    Args:
        path: directory (local path, ``file://`` URL or fsspec URL); created if missing.
        name: the sink's name.
        format: ``"lines"`` or ``"jsonl"``.
        json_default: ``default=`` for ``json.dumps`` in ``"jsonl"`` format.
            (``"parquet"``: one Parquet file per batch, see `ParquetSink`.)
        storage_options: fsspec options for non-local URLs (credentials, endpoint).
        fence_timeout_s: how long a write waits for the fence lock (local paths).

    Raises:
        ConfigError: a bad argument.

    Example:
        >>> import tempfile
        >>> sink = FileSink(tempfile.mkdtemp(), name="out", format="jsonl")
        >>> sink.open(); sink.write(1000, [{"a": 1}]); sink.close()
        >>> open(sink.path_for(1000)).read()
        '{"a": 1}\\n'
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        name: str,
        format: Literal["lines", "jsonl", "parquet"] = "lines",  # noqa: A002
        json_default: Callable[[Any], Any] | None = None,
        storage_options: Mapping[str, Any] | None = None,
        fence_timeout_s: float = 30.0,
    ) -> None:
        if not isinstance(name, str) or not name:
            msg = "FileSink needs a non-empty name="
            raise ConfigError(msg)
        if format not in _FORMATS:
            msg = f"FileSink {name!r}: format={format!r} is not one of {sorted(_FORMATS)}"
            raise ConfigError(msg)
        raw = os.fspath(path)
        if not raw:
            msg = f"FileSink {name!r}: path is empty; pass a directory"
            raise ConfigError(msg)
        self.name = name
        self.format = format
        self.json_default = json_default
        self.storage_options = dict(storage_options or {})
        self._ext = _FORMATS[format]
        if raw.startswith("file://"):
            raw = raw[len("file://") :]
        self._remote = "://" in raw
        self.path = raw.rstrip("/") if self._remote else str(Path(raw))
        self._fs: Any = None
        self._lock = threading.Lock()
        self.fence_timeout_s = fence_timeout_s
        self._token: FencingToken | None = None
        self._fence_fd: int | None = None

    def set_fencing_token(self, token: FencingToken) -> None:
        """Fence this sink's directory with the driver's claim epoch (see the class docs)."""
        self._token = token

    def path_for(self, batch_time: BatchTime) -> str:
        """The file that holds batch `batch_time`."""
        return f"{self.path}/batch-{batch_time:013d}.{self._ext}"

    def open(self) -> None:
        """Create the directory (local) or the filesystem client (remote)."""
        with self._lock:
            if self._remote:
                self._remote_fs()
                return
            try:
                Path(self.path).mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                msg = f"FileSink {self.name!r}: cannot create directory {self.path!r}: {exc}"
                raise SinkError(msg) from exc

    def close(self) -> None:
        """Nothing is buffered between writes; safe to call twice."""
        self._fs = None
        fd, self._fence_fd = self._fence_fd, None
        if fd is not None:
            os.close(fd)

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_fs"] = None
        state["_lock"] = None
        state["_fence_fd"] = None
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._lock = threading.Lock()

    def _remote_fs(self) -> Any:
        if self._fs is None:
            try:
                import fsspec
            except ImportError as exc:
                msg = f"FileSink {self.name!r}: writing to {self.path!r} needs fsspec: pip install fsspec (plus the backend, e.g. s3fs)"
                raise ConfigError(msg) from exc
            protocol = self.path.split("://", 1)[0]
            try:
                self._fs = fsspec.filesystem(protocol, **self.storage_options)
            except (ImportError, ValueError) as exc:
                msg = f"FileSink {self.name!r}: cannot open {protocol}:// filesystem: {exc}"
                raise ConfigError(msg) from exc
        return self._fs

    def encode(self, batch_time: BatchTime, records: list[Any]) -> bytes:
        """The exact bytes written for a batch (one line per record)."""
        if self.format == "parquet":
            return parquet_bytes(records, f"FileSink {self.name!r}, batch {batch_time}")
        lines: list[str] = []
        for i, rec in enumerate(records):
            if self.format == "jsonl":
                try:
                    text = json.dumps(rec, ensure_ascii=False, default=self.json_default or _json_default)
                except (TypeError, ValueError) as exc:
                    msg = (
                        f"FileSink {self.name!r}, batch {batch_time}: record #{i} "
                        f"({type(rec).__name__}) is not JSON serialisable: {exc}. Pass "
                        "json_default= or use format='lines'."
                    )
                    raise SinkError(msg) from exc
            else:
                text = str(rec)
                if "\n" in text or "\r" in text:
                    msg = (
                        f"FileSink {self.name!r}, batch {batch_time}: record #{i} contains "
                        "a line break, which format='lines' cannot represent; use "
                        "format='jsonl'."
                    )
                    raise SinkError(msg)
            lines.append(text)
        return "".join(line + "\n" for line in lines).encode("utf-8")

    def write(self, batch_time: BatchTime, records: list[Any]) -> None:
        """Write the batch's file atomically (a replay replaces it with the same bytes).

        Raises:
            SinkError: a record cannot be encoded, or the file cannot be written.
        """
        data = self.encode(batch_time, records)
        final = self.path_for(batch_time)
        with self._lock:
            if self._remote:
                try:
                    if self._token is not None:
                        self._fence_remote(batch_time)
                    self._remote_fs().pipe_file(final, data)
                except (CheckpointInUseError, SinkError):
                    raise
                except Exception as exc:
                    msg = f"FileSink {self.name!r}: cannot write {final!r}: {exc}"
                    raise SinkError(msg) from exc
                return
            if self._token is None:
                self._write_local(final, data)
                return
            import fcntl

            fd = self._lock_fence(batch_time)
            try:
                self._fence_local(fd, batch_time)
                self._write_local(final, data)  # renamed into place while the fence is locked
            finally:
                fcntl.flock(fd, fcntl.LOCK_UN)

    # -- in parts, where the records are (PartitionWritable) -------------------------------

    def partition_writable(self) -> bool:
        """True for a local (or shared, mounted) directory: parts are files there, published by one rename.

        On an object store the parts could not be joined without downloading them: the
        driver writes the batch (``write``).
        """
        return not self._remote

    def _part_path(self, batch_time: BatchTime, attempt: str, index: int) -> str:
        return f"{self.path}/.batch-{batch_time:013d}.{attempt}.part-{index:05d}.{self._ext}"

    def write_part(self, batch_time: BatchTime, attempt: str, index: int, records: list[Any]) -> int:
        """Write part `index` of the batch to a hidden file in the directory (a worker); returns its size.

        Raises:
            SinkError: a record cannot be encoded, or the file cannot be written.
        """
        data = self.encode(batch_time, records)
        self._write_local(self._part_path(batch_time, attempt, index), data)
        return len(data)

    def publish(self, batch_time: BatchTime, attempt: str, receipts: list[Any]) -> None:
        """Join the parts of `attempt` into the batch's file, renamed into place as `write` does (fenced alike).

        The file holds the parts' records in part order, as one `write` of them would
        (Parquet: the parts' tables concatenated); the parts (and leftovers of tries of
        this batch that crashed) are removed afterwards.

        Raises:
            SinkError: a part is missing or the file cannot be written.
        """
        parts = [self._part_path(batch_time, attempt, i) for i in range(len(receipts))]
        final = self.path_for(batch_time)
        with self._lock:
            if self._token is None:
                self._join_parts(batch_time, final, parts)
            else:
                import fcntl

                fd = self._lock_fence(batch_time)
                try:
                    self._fence_local(fd, batch_time)
                    self._join_parts(batch_time, final, parts)
                finally:
                    fcntl.flock(fd, fcntl.LOCK_UN)
        prefix = f".batch-{batch_time:013d}."
        try:
            leftovers = [n for n in os.listdir(self.path) if n.startswith(prefix) and ".part-" in n]
        except OSError:
            leftovers = []
        for name in leftovers:
            try:
                os.unlink(os.path.join(self.path, name))
            except OSError as exc:  # a stray hidden file costs nothing: the batch is published
                log.warning("FileSink %r: cannot remove the part file %r: %s", self.name, name, exc)

    def _join_parts(self, batch_time: BatchTime, final: str, parts: list[str]) -> None:
        where = f"FileSink {self.name!r}, batch {batch_time}"
        try:
            if self.format == "parquet":
                self._write_local(final, _join_parquet(parts, where))
                return
            directory = os.path.dirname(final) or "."
            tmp = os.path.join(directory, f".{os.path.basename(final)}.{os.urandom(6).hex()}.tmp")
            try:
                with open(tmp, "wb") as out:
                    for part in parts:
                        with open(part, "rb") as src:
                            shutil.copyfileobj(src, out, 1 << 20)
                    out.flush()
                    os.fsync(out.fileno())
                os.replace(tmp, final)
            except BaseException:
                with contextlib.suppress(OSError):
                    os.unlink(tmp)
                raise
            fsync_dir(directory)
        except OSError as exc:
            msg = (
                f"{where}: cannot join the part files written by the workers into {final!r}: {exc}. The batch is not "
                "committed; check that the directory is shared by the driver and every worker (and has space), then restart."
            )
            raise SinkError(msg) from exc

    # -- fencing -----------------------------------------------------------------------

    def _fence_path(self) -> str:
        return f"{self.path}/{FENCE_FILE}"

    def _lock_fence(self, batch_time: BatchTime) -> int:
        import fcntl

        try:
            if self._fence_fd is None:
                self._fence_fd = os.open(self._fence_path(), os.O_RDWR | os.O_CREAT, 0o644)
            fd = self._fence_fd
            deadline = time.monotonic() + self.fence_timeout_s
            while True:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    return fd
                except BlockingIOError:
                    if time.monotonic() >= deadline:
                        break
                    time.sleep(0.005)
        except OSError as exc:
            msg = f"FileSink {self.name!r}: cannot lock the fence file {self._fence_path()!r}: {exc}"
            raise SinkError(msg) from exc
        msg = (
            f"FileSink {self.name!r}, batch {batch_time}: the fence file {self._fence_path()!r} stayed locked by another "
            f"process for {self.fence_timeout_s:g} s (a driver paused while writing this directory?). The batch is not "
            "committed; stop the other driver and restart."
        )
        raise SinkError(msg)

    def _check_fence(self, raw: bytes, batch_time: BatchTime) -> bool:
        """True if the fence must be (re)written with our token; CheckpointInUseError if a newer driver wrote."""
        token = self._token
        assert token is not None
        fields = raw.split(b"\n", 1)[0].decode("ascii", "replace").split()
        stored_id, stored_epoch = (fields[0], int(fields[1])) if len(fields) == 2 and fields[1].isdigit() else (None, 0)
        if stored_id == token.checkpoint_id and stored_epoch > token.epoch:
            msg = (
                f"FileSink {self.name!r}, batch {batch_time}: a newer driver (epoch {stored_epoch}) of this job's checkpoint "
                f"already writes {self.path!r}; this driver (epoch {token.epoch}) lost the checkpoint and stops without "
                "writing."
            )
            raise CheckpointInUseError(msg)
        return (stored_id, stored_epoch) != (token.checkpoint_id, token.epoch)

    def _fence_bytes(self) -> bytes:
        token = self._token
        assert token is not None
        return f"{token.checkpoint_id} {token.epoch}\n".encode("ascii")

    def _fence_local(self, fd: int, batch_time: BatchTime) -> None:
        try:
            raw = os.pread(fd, 512, 0)
            if self._check_fence(raw, batch_time):
                mine = self._fence_bytes()
                os.pwrite(fd, mine, 0)  # the first line is what counts: a crash here leaves it whole or old
                os.ftruncate(fd, len(mine))
                os.fsync(fd)
        except OSError as exc:
            msg = f"FileSink {self.name!r}: cannot read or write the fence file {self._fence_path()!r}: {exc}"
            raise SinkError(msg) from exc

    def _fence_remote(self, batch_time: BatchTime) -> None:
        fs = self._remote_fs()
        try:
            raw = fs.cat_file(self._fence_path())
        except FileNotFoundError:
            raw = b""
        if self._check_fence(raw, batch_time):
            fs.pipe_file(self._fence_path(), self._fence_bytes())

    def _write_local(self, final: str, data: bytes) -> None:
        try:
            atomic_write_file(final, data)
        except OSError as exc:
            msg = (
                f"FileSink {self.name!r}: cannot write {final!r}: {exc}. The batch is not "
                "committed; fix the directory (space, permissions) and restart."
            )
            raise SinkError(msg) from exc


class ParquetSink(FileSink):
    """One Parquet file per batch time, ``<path>/batch-<T>.parquet``, exactly once (``pip install streamkeep[tables]``).

    A `FileSink` with ``format="parquet"``: the file is published atomically (a
    temporary file renamed into place locally, one PUT on an object store), a
    replayed batch rewrites the same bytes, and the directory is fenced against
    a driver that lost the checkpoint, exactly as for `FileSink`. It takes a table
    stream's tables as they are (concatenated into one file; columns must agree) and
    converts records (dicts, tuples, scalars) as ``to_tables`` does. An empty batch
    writes a Parquet file with no rows.

    Example:
        >>> import tempfile, pyarrow as pa
        >>> sink = ParquetSink(tempfile.mkdtemp(), name="out")
        >>> sink.open(); sink.write(1000, [pa.table({"a": [1, 2]})]); sink.close()
        >>> import pyarrow.parquet as pq; pq.read_table(sink.path_for(1000)).num_rows
        2
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        name: str,
        storage_options: Mapping[str, Any] | None = None,
        fence_timeout_s: float = 30.0,
    ) -> None:
        _arrow.pa(f"ParquetSink {name!r}")
        super().__init__(path, name=name, format="parquet", storage_options=storage_options, fence_timeout_s=fence_timeout_s)

    def takes_tables(self) -> bool:
        """True: `write` receives a table stream's tables as they are (`TableSink`)."""
        return True


def _join_parquet(parts: list[str], where: str) -> bytes:
    """The Parquet part files as one file's bytes (their tables concatenated; parts without rows left out)."""
    pa = _arrow.pa(where)
    pq = _arrow.require("pyarrow.parquet", where)
    tables = [pq.read_table(p) for p in parts]
    rows = [t for t in tables if t.num_rows]
    if not rows:
        return parquet_bytes([], where)
    try:
        table = pa.concat_tables(rows, promote_options="permissive")
    except Exception as exc:
        msg = f"{where}: the parts' tables do not make one table ({type(exc).__name__}: {exc}); give every record the same columns"
        raise SinkError(msg) from exc
    buf = pa.BufferOutputStream()
    pq.write_table(table, buf)
    return bytes(buf.getvalue())


def parquet_bytes(records: list[Any], where: str) -> bytes:
    """`records` (tables or records) as the bytes of one Parquet file."""
    pa = _arrow.pa(where)
    pq = _arrow.require("pyarrow.parquet", where)
    try:
        table = _arrow.records_to_table(records, None, where)
    except ConfigError:
        raise
    except Exception as exc:
        msg = f"{where}: the records do not make one table ({type(exc).__name__}: {exc}); give every table the same columns"
        raise SinkError(msg) from exc
    buf = pa.BufferOutputStream()
    pq.write_table(table, buf)
    return bytes(buf.getvalue())
