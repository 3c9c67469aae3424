"""`TextFileSource` (text_file_stream): lines of files that appear in a directory.

The plan for a batch is the sorted list of new files (name and size at planning
time); reading it again gives the same lines as long as the files are not
changed after they appear (write them elsewhere and move them in, as with
Spark). The position is the set of file names already planned that still exist.
Files whose name starts with ``.`` or ``_`` are ignored (temporary files). As
with Spark's textFileStream, files already in the directory when a job starts
fresh are skipped; a restored job continues from its checkpointed position.
"""

from __future__ import annotations

import os
from typing import Any

from streamkeep._types import BatchTime, Data
from streamkeep.errors import SourceError
from streamkeep.sources.base import BlobStore


class TextFileSource:
    """New files' lines from `directory` (local paths)."""

    replayable = True

    def __init__(self, directory: str, *, name: str, num_partitions: int | None = None, new_files_only: bool = True) -> None:
        self.name = name
        self.directory = os.fspath(directory)
        self._seen: set[str] = set()
        self._parts = num_partitions
        self._new_files_only = new_files_only

    def open(self, blobs: BlobStore) -> None:
        if not os.path.isdir(self.directory):
            msg = f"text_file_stream {self.name!r}: directory {self.directory!r} does not exist; create it before starting the job"
            raise SourceError(msg)
        if self._new_files_only:  # as Spark: files already there at start are skipped (restore() replaces this)
            self._seen = set(os.listdir(self.directory))

    def restore(self, position: Data) -> None:
        self._seen = set(position["seen"])

    def position(self) -> Data:
        return {"seen": sorted(self._seen)}

    def plan(self, batch_time: BatchTime) -> Data:
        try:
            names = sorted(n for n in os.listdir(self.directory) if not n.startswith((".", "_")))
        except OSError as exc:
            msg = f"text_file_stream {self.name!r}: cannot list {self.directory!r}: {exc}"
            raise SourceError(msg) from exc
        present = set(names)
        new = []
        for n in names:
            if n in self._seen:
                continue
            path = os.path.join(self.directory, n)
            if os.path.isfile(path):
                new.append([n, os.path.getsize(path)])
        self._seen = (self._seen & present) | {str(n) for n, _ in new}
        return {"files": new}

    def read(self, plan: Data, batch_time: BatchTime) -> list[list[Any]]:
        parts = []
        for n, size in plan["files"]:
            path = os.path.join(self.directory, n)
            try:
                with open(path, "rb") as f:
                    data = f.read(size)
            except OSError as exc:
                msg = (
                    f"text_file_stream {self.name!r}: file {path!r} planned for batch {batch_time} ms cannot be read "
                    f"({exc}); files must stay in place until their batch is committed"
                )
                raise SourceError(msg) from exc
            if len(data) < size:
                msg = f"text_file_stream {self.name!r}: file {path!r} shrank after it was planned for batch {batch_time} ms (had {size} bytes, now {len(data)})"
                raise SourceError(msg)
            parts.append(data.decode("utf-8").splitlines())
        if not parts:
            return [[]]
        if self._parts:
            lines = [ln for p in parts for ln in p]
            return [lines[i :: self._parts] for i in range(self._parts)]
        return parts

    def exhausted(self) -> bool:
        return False

    def close(self) -> None:
        pass

    def describe(self) -> dict[str, Any]:
        return {"kind": "text_files", "directory": self.directory}
