"""File sources that decode straight to Arrow: Parquet files and JSON-lines files (``streamkeep[tables]``).

Which files are new, the plan (the sorted list of new files with their sizes), the
position, ``new_files_only`` and local-or-fsspec directories are exactly those of
`streamkeep.sources.files.TextFileSource` (these sources plan with its code): a
replayed batch reads the same bytes of the same files. Each planned file becomes one
``pyarrow.Table`` in its own partition, decoded by pyarrow without a Python object per
record. A file that cannot be decoded fails its batch with `SourceError` naming it.

Imports layer 1 only (pyarrow when a batch is read); must not import the scheduler,
dstream, sinks or executors.
"""

from __future__ import annotations

import io
import os
from typing import Any

from streamkeep import _arrow
from streamkeep._types import BatchTime
from streamkeep.errors import ConfigError, SourceError
from streamkeep.sources.files import TextFileSource

__all__ = ["JsonLinesTableSource", "ParquetFileSource"]


class ParquetFileSource(TextFileSource):
    """New Parquet files of `directory` (a local path or an fsspec URL), one table per file.

    Args:
        directory: local directory, or an fsspec URL such as ``"s3://bucket/incoming"``.
        name: identifies the source's position in the checkpoint.
        columns: read only these columns (None: all).
        new_files_only: skip the files already there when the job starts fresh.
        storage_options: fsspec options for URLs.

    Raises:
        ConfigError: pyarrow is not installed (``pip install streamkeep[tables]``).
    """

    kind_label = "parquet_file_stream"

    def __init__(
        self,
        directory: str | os.PathLike[str],
        *,
        name: str,
        columns: list[str] | None = None,
        new_files_only: bool = True,
        storage_options: dict[str, Any] | None = None,
    ) -> None:
        _arrow.require("pyarrow.parquet", f"{self.kind_label} {name!r}")
        if columns is not None and (isinstance(columns, str) or not all(isinstance(c, str) for c in columns)):
            msg = f"{self.kind_label} {name!r}: columns must be a list of column names or None, got {columns!r}"
            raise ConfigError(msg)
        super().__init__(directory, name=name, new_files_only=new_files_only, storage_options=storage_options)
        self.columns = None if columns is None else list(columns)

    def describe(self) -> dict[str, Any]:
        """As text_file_stream's (the position is the same list of file names), with the format."""
        return {**super().describe(), "format": "parquet"}

    def _decode(self, data: bytes) -> Any:
        pa = _arrow.pa(self.kind_label)
        pq = _arrow.require("pyarrow.parquet", self.kind_label)
        return pq.read_table(pa.BufferReader(data), columns=self.columns)

    def _lines(self, path: str, data: bytes, batch_time: BatchTime, bad: list[dict[str, Any]]) -> list[Any]:
        """The file as one table (the partition of this file)."""
        try:
            table = self._decode(data)
        except ConfigError:
            raise
        except Exception as exc:
            msg = (
                f"{self.kind_label} {self.name!r}, batch {batch_time} ms: file {path!r} cannot be decoded "
                f"({type(exc).__name__}: {exc}). Write files elsewhere and move them in whole; a damaged file must be "
                f"replaced by a readable one with the same name before the job can continue."
            )
            raise SourceError(msg) from exc
        return [table] if table.num_rows or table.num_columns else []


class JsonLinesTableSource(ParquetFileSource):
    """New JSON-lines files of `directory`, each decoded by pyarrow.json into one table.

    Args:
        directory: local directory, or an fsspec URL.
        name: identifies the source's position in the checkpoint.
        schema: a ``pyarrow.Schema`` to decode with (None: inferred per file; columns of
            files that lack a field are then missing, so give a schema when files vary).
        new_files_only: skip the files already there when the job starts fresh.
        storage_options: fsspec options for URLs.
    """

    kind_label = "json_file_stream"

    def __init__(
        self,
        directory: str | os.PathLike[str],
        *,
        name: str,
        schema: Any = None,
        new_files_only: bool = True,
        storage_options: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(directory, name=name, new_files_only=new_files_only, storage_options=storage_options)
        pa = _arrow.pa(self.kind_label)
        if schema is not None and not isinstance(schema, pa.Schema):
            msg = f"{self.kind_label} {name!r}: schema must be a pyarrow.Schema or None, got {schema!r}"
            raise ConfigError(msg)
        self.schema = schema

    def describe(self) -> dict[str, Any]:
        """As text_file_stream's, with the format."""
        return {**super().describe(), "format": "jsonl"}

    def _decode(self, data: bytes) -> Any:
        pa = _arrow.pa(self.kind_label)
        pj = _arrow.require("pyarrow.json", self.kind_label)
        if not data.strip():
            return self.schema.empty_table() if self.schema is not None else pa.table({})
        opts = pj.ParseOptions(explicit_schema=self.schema) if self.schema is not None else None
        return pj.read_json(io.BytesIO(data), parse_options=opts)
