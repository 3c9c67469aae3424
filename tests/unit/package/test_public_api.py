"""The public surface is exactly what API.md promises (and nothing private leaks)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

import streamkeep
import streamkeep.errors
import streamkeep.sinks
import streamkeep.sources
import streamkeep.testing


def test_top_level_all_is_exact() -> None:
    assert sorted(streamkeep.__all__) == sorted([
        "Batch", "BatchInfo", "CheckpointError", "CheckpointInUseError", "ConfigError", "CorruptCheckpointError",
        "DStream", "IncompatibleCheckpointError", "SinkError", "SourceError", "State", "StreamingContext",
        "StreamkeepError", "UserFunctionError", "__version__",
        # observability (issue 13): the listener base class and its events
        "StreamingListener", "JobStarted", "BatchPlanned", "BatchReplayed", "SnapshotCompleted", "ErrorInfo", "JobStopped",
        "StateInfo",
        # event time (issue 16): the record an event-time window emits
        "WindowResult",
    ])
    for name in streamkeep.__all__:
        assert hasattr(streamkeep, name), name


def test_public_names_have_public_modules() -> None:
    for name in ("Batch", "StreamingContext", "DStream", "State", "BatchInfo", "StreamingListener", "JobStarted", "StateInfo", "WindowResult"):
        assert getattr(streamkeep, name).__module__ == "streamkeep", name
    for name in ("ManualClock", "ListSink", "CrashAt"):
        assert getattr(streamkeep.testing, name).__module__ == "streamkeep.testing", name


def test_error_tree() -> None:
    e = streamkeep.errors
    assert issubclass(e.ConfigError, ValueError) and issubclass(e.ConfigError, e.StreamkeepError)
    for sub in (e.CorruptCheckpointError, e.IncompatibleCheckpointError, e.CheckpointInUseError):
        assert issubclass(sub, e.CheckpointError)
    for cls in (e.CheckpointError, e.SourceError, e.SinkError, e.StateError, e.UserFunctionError):
        assert issubclass(cls, e.StreamkeepError)


def test_sinks_and_sources_exports() -> None:
    assert {"FileSink", "KafkaSink", "RedisSink", "PrintSink", "Sink"} <= set(streamkeep.sinks.__all__)
    assert {"KafkaRecord", "KafkaSource", "Source", "QueueSource", "RateSource", "TextFileSource", "SocketTextSource"} <= set(streamkeep.sources.__all__)


def test_tables_exports() -> None:
    import streamkeep.tables

    assert sorted(streamkeep.tables.__all__) == sorted(
        ["Combine", "JsonLinesTableSource", "KafkaTables", "ParquetFileSource", "ParquetSink", "TableSink", "kafka_json_tables"]
    )
    for name in ("Combine", "KafkaTables", "kafka_json_tables"):
        assert getattr(streamkeep.tables, name).__module__ == "streamkeep.tables", name
    assert "ParquetSink" in streamkeep.sinks.__all__
    for method in ("to_tables", "map_tables", "to_records", "aggregate_state", "aggregate_window"):
        assert callable(getattr(streamkeep.DStream, method)), method
    for method in ("to_arrow", "to_pandas", "to_polars", "to_tables", "map_tables", "to_records"):
        assert callable(getattr(streamkeep.Batch, method)), method
    for method in ("parquet_file_stream", "json_file_stream"):
        assert callable(getattr(streamkeep.StreamingContext, method)), method


@pytest.mark.slow
def test_type_checkers_flag_a_misspelt_public_name_in_user_code(tmp_path: Path) -> None:
    """The lazily exported packages still type-check: a module ``__getattr__`` seen by mypy would make every name Any."""
    user = tmp_path / "job.py"
    user.write_text(
        "import streamkeep as sk\n"
        "from streamkeep import WindowResult, StreamingContxt\n"
        "from streamkeep.dstream import EventWindows, EventTimeDStrem\n"
        "from streamkeep.sinks import RedisSink, RedisSinc\n"
        "from streamkeep.sources import KafkaSource, KafkaSourc\n"
        "from streamkeep.executors import RayExecutor, RayExecutr\n"
        "sk.StreamingContxt(1.0)\n",
        encoding="utf-8",
    )
    r = subprocess.run(
        [sys.executable, "-m", "mypy", "--no-error-summary", "--follow-imports=silent", "--cache-dir", str(tmp_path / "cache"), str(user)],
        capture_output=True,
        text=True,
        cwd=str(tmp_path),
        env={**os.environ, "MYPYPATH": str(Path(streamkeep.__file__).parent.parent)},  # the source tree (an editable install's hook is not seen by mypy)
        check=False,
    )
    flagged = sorted({line.split('"')[3] for line in r.stdout.splitlines() if 'Module "streamkeep' in line and "has no attribute" in line})
    bare = [line for line in r.stdout.splitlines() if "job.py:7:" in line]
    assert flagged == ["EventTimeDStrem", "KafkaSourc", "RayExecutr", "RedisSinc", "StreamingContxt"], r.stdout + r.stderr
    assert bare and "StreamingContxt" in bare[0], r.stdout
