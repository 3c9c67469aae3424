"""`TextFileSource` (text_file_stream): lines of files that appear in a directory.

The plan for a batch is the sorted list of new files (name and size at planning
time); reading it again gives the same lines as long as the files are not
changed after they appear (write them elsewhere and move them in, as with
Spark). The position is the set of file names already planned that still exist.
Files whose name starts with ``.`` or ``_`` are ignored (temporary files).

A planned file that keeps growing (a writer appending in place) would have its
appended bytes never read: the listings after its plan compare its size with
the planned one and log a warning once per file naming both sizes. An object
store's listing gives sizes, so every planned object is compared at every
listing; a local directory's does not, so each listing stats the files planned
in its last ``_RECENT_LISTINGS`` listings and ``_OLDER_PER_LISTING`` older ones
in turn (a cost that does not grow with the directory). Sizes planned before a
restart are known again only for the batches it replays.

The directory is a local path or an fsspec URL (``s3://bucket/prefix``, with
``storage_options``). With ``new_files_only`` (the default, as Spark's
textFileStream) the files already there when a job starts fresh are skipped; the
list of them is written to the checkpoint when the source opens, so a restart
before the first durable plan skips exactly the same files (a file that arrived
in between is read once, not lost). A restored job continues from its
checkpointed position.

Lines are decoded with ``encoding``/``errors`` (as `bytes.decode`). A line that
cannot be decoded fails the batch naming the file and line, unless ``on_error``
routes it: a dead-letter sink receives ``{"file", "line", "value" (the raw
bytes), "error"}`` dicts for the batch in one ``write(batch_time, records)`` (a
streamkeep sink deduplicates a replayed batch), or a callable receives
``(record, exception)``; the line is then left out of the batch.

Imports layer 1 only (and fsspec for URLs); must not import the scheduler,
dstream, sinks or executors.
"""

from __future__ import annotations

import codecs
import datetime
import itertools
import logging
import os
import re
import stat
from collections import deque
from collections.abc import Callable
from typing import Any

from streamkeep._types import BatchTime, Data
from streamkeep.errors import CheckpointError, ConfigError, CorruptCheckpointError, SourceError
from streamkeep.sources._kafka_read import DeadLetterSink
from streamkeep.sources.base import BlobStore, DeadLetters, start_blob

#: What ``on_error`` accepts besides a dead-letter sink: ``f(record, exception)``.
LineErrorHandler = Callable[[dict[str, Any], Exception], None]

_ESCAPED = re.compile("[\udc80-\udcff]")  # bytes that surrogateescape could not decode

#: A local file is stat'ed again at each of the listings that follow its plan, up to this many ...
_RECENT_LISTINGS = 3
#: ... and then in turn with the other planned files, this many per listing.
_OLDER_PER_LISTING = 32

log = logging.getLogger("streamkeep.sources.files")


def _ignored(name: str) -> bool:
    return name.startswith((".", "_"))


def _not_found(exc: BaseException) -> bool:
    """True when `exc` (or what it was raised from) says the file does not exist."""
    seen: BaseException | None = exc
    for _ in range(8):
        if seen is None:
            return False
        if isinstance(seen, (FileNotFoundError, KeyError)):
            return True
        seen = seen.__cause__ or seen.__context__
    return False


def _iso(t_ms: BatchTime) -> str:
    """A batch time as the scheduler's log lines show it (UTC, ms)."""
    d = datetime.datetime.fromtimestamp(t_ms / 1000, tz=datetime.timezone.utc)
    return d.strftime("%Y-%m-%dT%H:%M:%S.") + f"{t_ms % 1000:03d}Z"


def _decode_error(raw: bytes, encoding: str, errors: str) -> UnicodeDecodeError | None:
    try:
        raw.decode(encoding, errors)
    except UnicodeDecodeError as exc:
        return exc
    return None


class _LocalDir:
    """A local directory."""

    local = True
    #: False: the listing gives names only; a size costs a stat.
    listing_has_sizes = False

    def __init__(self, path: str) -> None:
        self.path = os.path.abspath(path)

    def where(self, name: str) -> str:
        return os.path.join(self.path, name)

    def check(self, source: str) -> None:
        if os.path.exists(self.path) and not os.path.isdir(self.path):
            msg = (
                f"text_file_stream {source!r}: {self.path!r} is a file, not a directory: pass the directory the files "
                f"arrive in (each new file in it is read once)"
            )
            raise SourceError(msg)
        if not os.path.isdir(self.path):
            msg = f"text_file_stream {source!r}: directory {self.path!r} does not exist; create it before starting the job"
            raise SourceError(msg)

    def names(self) -> list[str]:
        return os.listdir(self.path)

    def sizes(self, names: list[str]) -> dict[str, int]:
        out = {}
        for n in names:
            try:
                st = os.stat(os.path.join(self.path, n))
            except OSError:  # gone again since the listing: it is not planned
                continue
            if stat.S_ISREG(st.st_mode):
                out[n] = st.st_size
        return out

    def read(self, name: str, size: int) -> bytes:
        with open(os.path.join(self.path, name), "rb") as f:
            return f.read(size)


class _RemoteDir:
    """A directory (prefix) on an fsspec filesystem (s3://, gs://, memory://, ...)."""

    local = False
    #: True: the listing gives every object's size (`sizes` costs no request).
    listing_has_sizes = True

    def __init__(self, url: str, storage_options: dict[str, Any] | None) -> None:
        try:
            import fsspec
        except ImportError as exc:  # pragma: no cover - fsspec is a core dependency
            msg = "text_file_stream on URLs needs fsspec: pip install streamkeep"
            raise ConfigError(msg) from exc
        try:
            fs, root = fsspec.core.url_to_fs(url, **(storage_options or {}))
        except (ImportError, ValueError) as exc:
            msg = f"text_file_stream: cannot open URL {url!r}: {exc}. For s3:// URLs install the extra: pip install 'streamkeep[s3]'"
            raise ConfigError(msg) from exc
        self.fs = fs
        self.root = root.rstrip("/")
        self.path = url.rstrip("/")
        self._sizes: dict[str, int] = {}

    def where(self, name: str) -> str:
        return f"{self.path}/{name}"

    def check(self, source: str) -> None:
        bucket = self.root.split("/", 1)[0]
        if bucket and not self.root.startswith("/") and not self.fs.exists(bucket):
            msg = f"text_file_stream {source!r}: {self.path!r}: bucket {bucket!r} does not exist or cannot be read"
            raise SourceError(msg)
        self.names()  # fail now if the prefix cannot be listed

    def names(self) -> list[str]:
        self.fs.invalidate_cache(self.root)  # s3fs caches listings: always see new objects
        try:
            entries = self.fs.ls(self.root, detail=True)
        except FileNotFoundError:  # an object store has no empty directories: nothing there yet
            entries = []
        self._sizes = {}
        names = []
        for e in entries:
            name = str(e["name"]).rstrip("/").rsplit("/", 1)[-1]
            names.append(name)
            if e.get("type") == "file":
                self._sizes[name] = int(e.get("size") or 0)
        return names

    def sizes(self, names: list[str]) -> dict[str, int]:
        return {n: self._sizes[n] for n in names if n in self._sizes}

    def read(self, name: str, size: int) -> bytes:
        path = f"{self.root}/{name}"
        if size == 0:  # a ranged read of nothing would not notice a missing object
            if not self.fs.exists(path):
                raise FileNotFoundError(path)
            return b""
        data: bytes = self.fs.cat_file(path, start=0, end=size)
        return data


class TextFileSource:
    """New files' lines from `directory` (a local path or an fsspec URL).

    Args:
        directory: local directory, or an fsspec URL such as ``"s3://bucket/incoming"``.
        name: identifies the source's position in the checkpoint.
        num_partitions: spread the lines over this many partitions (default: one per file).
        new_files_only: skip the files already in the directory when the job starts
            fresh (Spark's default); False reads them in the first batch.
        encoding: text encoding of the files (``bytes.decode``).
        errors: ``bytes.decode`` error handling (``"strict"``, ``"replace"``, ...).
            ``"replace"`` and ``"ignore"`` change undecodable lines rather than failing.
        on_error: where undecodable lines go (with ``errors="strict"``): a dead-letter
            sink or a callable; None fails the batch naming the file and line.
        storage_options: fsspec options for URLs (e.g. ``{"endpoint_url": ...}`` for S3).

    Raises:
        ConfigError: an unknown encoding or error handler, or a bad ``on_error``.

    Example:
        >>> src = TextFileSource("/tmp", name="logs", new_files_only=False, on_error=None)
        >>> src.describe()["kind"]
        'text_files'
    """

    replayable = True

    def __init__(
        self,
        directory: str | os.PathLike[str],
        *,
        name: str,
        num_partitions: int | None = None,
        new_files_only: bool = True,
        encoding: str = "utf-8",
        errors: str = "strict",
        on_error: LineErrorHandler | DeadLetterSink | None = None,
        storage_options: dict[str, Any] | None = None,
    ) -> None:
        where = f"text_file_stream {name!r}"
        try:
            codecs.lookup(encoding)
            codecs.lookup_error(errors)
        except (LookupError, TypeError) as exc:
            msg = f"{where}: {exc}; pass a Python codec as encoding= (e.g. 'utf-8', 'latin-1') and errors= ('strict', 'replace', ...)"
            raise ConfigError(msg) from exc
        if on_error is not None and not callable(on_error) and not callable(getattr(on_error, "write", None)):
            msg = f"{where}: on_error must be a dead-letter sink (with write(batch_time, records)) or a callable, got {type(on_error).__name__}"
            raise ConfigError(msg)
        self.name = name
        self.directory = os.fspath(directory)
        url = "://" in self.directory and not self.directory.startswith("file://")
        self._dir: _LocalDir | _RemoteDir = (
            _RemoteDir(self.directory, storage_options) if url else _LocalDir(self.directory.removeprefix("file://"))
        )
        self._seen: set[str] = set()
        # Growth checks: (planned size, batch time) of each planned file still watched, least lately
        # checked first, and the files planned by the last listings.
        self._planned_size: dict[str, tuple[int, BatchTime]] = {}
        self._recent: deque[list[str]] = deque(maxlen=_RECENT_LISTINGS)
        self._grown: set[str] = set()  # warned about (once per file)
        self._parts = num_partitions
        self.new_files_only = new_files_only
        self.encoding = encoding
        self.errors = errors
        self.on_error = on_error
        self._dead = DeadLetters(on_error)

    # -- lifecycle -----------------------------------------------------------

    @property
    def dead_letter_sink(self) -> Any | None:
        """The ``on_error`` dead-letter sink (None for a callable or no ``on_error``)."""
        return self._dead.sink

    def open(self, blobs: BlobStore) -> None:
        """Check the directory; with `new_files_only`, take (or reload) the files to skip."""
        self._dir.check(self.name)
        self._dead.open()
        if not self.new_files_only:
            return
        # As Spark: the files there at start are skipped (restore() replaces this). The list is
        # durable before the first plan, so a restart in between skips the same files.
        key = start_blob(self.name)
        if blobs.durable:
            stored = self._stored_start(blobs, key)
            if stored is not None and stored.get("path") == self._dir.path:
                self._seen = {str(n) for n in stored["seen"]}
                return
            if stored is not None:  # recorded for another directory (allowed by allow_state_loss): take it anew
                blobs.delete(key)
        self._seen = {n for n in self._list() if not _ignored(n)}
        if blobs.durable:
            blobs.put(key, {"path": self._dir.path, "seen": sorted(self._seen)})

    def _stored_start(self, blobs: BlobStore, key: str) -> dict[str, Any] | None:
        try:
            stored = blobs.get(key)
        except (CheckpointError, KeyError) as exc:
            if _not_found(exc):
                return None
            raise
        if not isinstance(stored, dict) or not isinstance(stored.get("seen"), list):
            msg = f"text_file_stream {self.name!r}: the checkpoint's record of the files present at start ({key}) is damaged"
            raise CorruptCheckpointError(msg)
        return stored

    def restore(self, position: Data) -> None:
        """Continue after `position` (the names already planned)."""
        seen = position.get("seen") if isinstance(position, dict) else None
        if not isinstance(seen, list) or not all(isinstance(n, str) for n in seen):
            msg = f"text_file_stream {self.name!r}: the checkpoint's position {position!r} is not a list of file names"
            raise CorruptCheckpointError(msg)
        self._seen = set(seen)

    def position(self) -> Data:
        """``{"seen": [names already planned that still exist]}``."""
        return {"seen": sorted(self._seen)}

    def exhausted(self) -> bool:
        """Never: files may appear at any time."""
        return False

    def close(self) -> None:
        """Close a dead-letter sink; safe to call twice."""
        self._dead.close()

    def describe(self) -> dict[str, Any]:
        """Kind and directory (a changed directory makes the stored position meaningless)."""
        return {"kind": "text_files", "directory": self.directory, "path": self._dir.path}

    # -- batches -------------------------------------------------------------

    def _list(self) -> list[str]:
        try:
            return self._dir.names()
        except OSError as exc:
            msg = f"text_file_stream {self.name!r}: cannot list {self._dir.path!r}: {exc}"
            raise SourceError(msg) from exc

    def plan(self, batch_time: BatchTime) -> Data:
        """``{"files": [[name, size], ...]}``: the files not planned before, in name order."""
        names = sorted(n for n in self._list() if not _ignored(n))
        sizes = self._dir.sizes([n for n in names if n not in self._seen])
        new = [[n, sizes[n]] for n in names if n in sizes]
        listed = set(names)
        self._seen = (self._seen & listed) | set(sizes)
        self._check_growth(listed)
        self._watch([n for n in names if n in sizes], sizes, batch_time)
        return {"files": new}

    def _watch(self, names: list[str], sizes: dict[str, int], batch_time: BatchTime) -> None:
        """Remember the planned sizes of `names` (planned now, or in a replayed plan)."""
        for n in names:
            if n not in self._grown:
                self._planned_size.pop(n, None)
                self._planned_size[n] = (sizes[n], batch_time)
        self._recent.append(names)

    def _check_growth(self, listed: set[str]) -> None:
        """Warn once for each planned file that is now larger than planned (its appended bytes are never read)."""
        planned = self._planned_size
        for n in [n for n in planned if n not in listed]:  # gone: nothing more to check
            del planned[n]
        self._grown &= listed
        if self._dir.listing_has_sizes:
            check = list(planned)
        else:  # a stat each: the files planned lately, then the least lately checked few
            recent = [n for names in self._recent for n in names if n in planned]
            check = list(dict.fromkeys([*recent, *itertools.islice(planned, _OLDER_PER_LISTING)]))
            for n in check:
                planned[n] = planned.pop(n)  # to the back of the turn
        now = self._dir.sizes(check)
        for n in check:
            size = now.get(n)
            was, planned_at = planned[n]
            if size is None or size <= was:
                continue
            del planned[n]
            self._grown.add(n)
            log.warning(
                "text_file_stream %r: file %r grew after it was planned for batch %d ms (%s) with %d bytes; it now has "
                "%d bytes, and those %d appended bytes (and any appended later) are NOT read. Files must be complete "
                "when they appear in the directory: write each one elsewhere (or under a name starting with '.' or "
                "'_') and rename it into place, and put later data in a new file.",
                self.name, self._dir.where(n), planned_at, _iso(planned_at), was, size, size - was,
            )

    def _planned(self, plan: Data, batch_time: BatchTime) -> list[tuple[str, int]]:
        """The plan's files, each checked to be a plain name inside the directory."""
        files = plan.get("files") if isinstance(plan, dict) else None
        if not isinstance(files, list):
            msg = f"the checkpoint's plan of batch {batch_time} ms for text_file_stream {self.name!r} is damaged (no file list)"
            raise CorruptCheckpointError(msg)
        out = []
        for entry in files:
            ok = isinstance(entry, (list, tuple)) and len(entry) == 2
            n, size = (entry[0], entry[1]) if ok else (None, None)
            if not (isinstance(n, str) and isinstance(size, int) and not isinstance(size, bool) and size >= 0):
                msg = f"the checkpoint's plan of batch {batch_time} ms for text_file_stream {self.name!r} has a damaged entry {entry!r}"
                raise CorruptCheckpointError(msg)
            if n in ("", ".", "..") or "\0" in n or any(sep in n for sep in ("/", os.sep, os.altsep) if sep):
                msg = (
                    f"the checkpoint's plan of batch {batch_time} ms for text_file_stream {self.name!r} names {n!r}, "
                    f"which is not a file directly inside {self._dir.path!r}; the plan was not written by streamkeep. "
                    f"Restore the checkpoint from a backup or start a fresh one."
                )
                raise CorruptCheckpointError(msg)
            out.append((n, size))
        return out

    def read(self, plan: Data, batch_time: BatchTime) -> list[list[Any]]:
        """The planned files' lines (one partition per file, or `num_partitions`)."""
        parts = []
        bad: list[dict[str, Any]] = []
        files = self._planned(plan, batch_time)
        replayed = [n for n, _ in files if n in self._seen and n not in self._planned_size]
        if replayed:  # a plan made before a restart: its sizes are known again
            self._watch(replayed, dict(files), batch_time)
        for n, size in files:
            path = self._dir.where(n)
            try:
                data = self._dir.read(n, size)
            except OSError as exc:
                msg = (
                    f"text_file_stream {self.name!r}: file {path!r} planned for batch {batch_time} ms cannot be read "
                    f"({exc}); files must stay in place, unchanged, until their batch is committed. Put it back to "
                    f"continue (if it cannot be decoded, pass encoding=, errors= or on_error= rather than removing it)."
                )
                raise SourceError(msg) from exc
            if len(data) < size:
                msg = f"text_file_stream {self.name!r}: file {path!r} shrank after it was planned for batch {batch_time} ms (had {size} bytes, now {len(data)})"
                raise SourceError(msg)
            parts.append(self._lines(path, data, batch_time, bad))
        self._dead.write(batch_time, bad)
        if not parts:
            return [[]]
        if self._parts:
            lines = [ln for p in parts for ln in p]
            return [lines[i :: self._parts] for i in range(self._parts)]
        return parts

    def _lines(self, path: str, data: bytes, batch_time: BatchTime, bad: list[dict[str, Any]]) -> list[str]:
        try:
            return data.decode(self.encoding, self.errors).splitlines()
        except UnicodeDecodeError as exc:
            first = exc
        # Split as the fast path does, with undecodable bytes kept as lone surrogates, then route those lines.
        lines = data.decode(self.encoding, "surrogateescape").splitlines()
        out = []
        for i, line in enumerate(lines, 1):
            if _ESCAPED.search(line) is None:
                out.append(line)
                continue
            raw = line.encode(self.encoding, "surrogateescape")
            err = _decode_error(raw, self.encoding, self.errors) or first
            handler = self.on_error
            if handler is None:
                msg = (
                    f"text_file_stream {self.name!r}, batch {batch_time} ms: line {i} of file {path!r} is not valid "
                    f"{self.encoding} ({err.reason} at byte {err.start} of the line: {raw[max(0, err.start - 8) : err.end + 8]!r}). "
                    f"Pass the file's encoding= , errors='replace' to decode such lines lossily, or on_error= (a "
                    f"dead-letter sink or a callable) to route undecodable lines out of the batch; then restart (the "
                    f"file must stay in place until its batch is committed)."
                )
                raise SourceError(msg) from err
            record = {"file": path, "line": i, "value": raw, "error": repr(err)}
            if callable(handler):
                handler(record, err)
            else:
                bad.append(record)
        return out
