"""File output: one file per batch time, written atomically so a replay overwrites it.

Owns :class:`FileSink`. Local paths use the standard library; other fsspec URLs
(``s3://``, ``gcs://``, ...) import fsspec lazily. Imports only
``streamkeep.errors`` and ``streamkeep._types``; must not import sources,
dstream, the scheduler or executors.
"""

from __future__ import annotations

import base64
import dataclasses
import datetime as dt
import json
import os
import threading
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, Literal

from streamkeep._types import BatchTime
from streamkeep._util import atomic_write_file
from streamkeep.errors import ConfigError, SinkError

__all__ = ["FileSink"]

_FORMATS = {"lines": "txt", "jsonl": "jsonl"}


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
        storage_options: fsspec options for non-local URLs (credentials, endpoint).

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
        format: Literal["lines", "jsonl"] = "lines",  # noqa: A002
        json_default: Callable[[Any], Any] | None = None,
        storage_options: Mapping[str, Any] | None = None,
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

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_fs"] = None
        state["_lock"] = None
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
                    self._remote_fs().pipe_file(final, data)
                except Exception as exc:
                    msg = f"FileSink {self.name!r}: cannot write {final!r}: {exc}"
                    raise SinkError(msg) from exc
                return
            self._write_local(final, data)

    def _write_local(self, final: str, data: bytes) -> None:
        try:
            atomic_write_file(final, data)
        except OSError as exc:
            msg = (
                f"FileSink {self.name!r}: cannot write {final!r}: {exc}. The batch is not "
                "committed; fix the directory (space, permissions) and restart."
            )
            raise SinkError(msg) from exc
