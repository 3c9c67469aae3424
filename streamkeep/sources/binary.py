"""`BinaryRecordsSource` (binary_records_stream): fixed-length records of files that appear in a directory.

Spark's ``binaryRecordsStream(directory, recordLength)``: each new file is cut into
records of exactly `record_length` bytes (``bytes`` values), one partition per file.
Which files are new, and how a restart continues, is exactly as for
`streamkeep.sources.files.TextFileSource` (this source plans with its code): the
plan lists the new files with their sizes, so a replay reads the same bytes.
A file whose size is not a multiple of the record length fails its batch with
`SourceError` naming the file (Spark fails such a file too): write files
elsewhere and move them in whole.
"""

from __future__ import annotations

import os
from typing import Any

from streamkeep._types import BatchTime, Data
from streamkeep.errors import ConfigError, SourceError
from streamkeep.sources.files import TextFileSource


class BinaryRecordsSource(TextFileSource):
    """New files of `directory` (local paths) as records of `record_length` bytes."""

    def __init__(self, directory: str, record_length: int, *, name: str) -> None:
        if not isinstance(record_length, int) or isinstance(record_length, bool) or record_length < 1:
            msg = f"binary_records_stream {name!r}: record_length must be a positive int (bytes per record), got {record_length!r}"
            raise ConfigError(msg)
        super().__init__(directory, name=name)
        self.record_length = record_length

    def read(self, plan: Data, batch_time: BatchTime) -> list[list[Any]]:
        parts: list[list[Any]] = []
        n = self.record_length
        for fname, size in plan["files"]:
            path = os.path.join(self.directory, fname)
            if size % n:
                msg = (
                    f"binary_records_stream {self.name!r}: file {path!r} has {size} bytes, not a multiple of the record "
                    f"length {n} (batch {batch_time} ms); write files elsewhere and move them in whole, or remove it "
                    f"and restore its records in a file of whole records"
                )
                raise SourceError(msg)
            try:
                with open(path, "rb") as f:
                    data = f.read(size)
            except OSError as exc:
                msg = (
                    f"binary_records_stream {self.name!r}: file {path!r} planned for batch {batch_time} ms cannot be read "
                    f"({exc}); files must stay in place until their batch is committed"
                )
                raise SourceError(msg) from exc
            if len(data) < size:
                msg = f"binary_records_stream {self.name!r}: file {path!r} shrank after it was planned for batch {batch_time} ms (had {size} bytes, now {len(data)})"
                raise SourceError(msg)
            parts.append([data[i : i + n] for i in range(0, size, n)])
        return parts or [[]]

    def describe(self) -> dict[str, Any]:
        """Kind, directory (its resolved `path` compared on restore, as text_file_stream's) and record length."""
        return {"kind": "binary_records", "directory": self.directory, "path": self._dir.path, "record_length": self.record_length}
