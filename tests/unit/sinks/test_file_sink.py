"""FileSink: one atomically written file per batch time."""

from __future__ import annotations

import dataclasses
import json
import os
from typing import Any, NamedTuple

import pytest

from streamkeep.errors import ConfigError, SinkError
from streamkeep.sinks.base import Sink
from streamkeep.sinks.files import FileSink


class Rec(NamedTuple):
    user: str
    n: int


@dataclasses.dataclass
class Point:
    x: int
    y: int


def test_one_file_per_batch_lines_format(tmp_path):
    sink = FileSink(tmp_path / "out", name="out")
    assert isinstance(sink, Sink)
    sink.open()
    sink.write(1000, [("a", 1), "plain", 3])
    sink.write(2000, [])
    sink.close()
    sink.close()
    assert sorted(os.listdir(tmp_path / "out")) == ["batch-0000000001000.txt", "batch-0000000002000.txt"]
    assert (tmp_path / "out" / "batch-0000000001000.txt").read_text() == "('a', 1)\nplain\n3\n"
    assert (tmp_path / "out" / "batch-0000000002000.txt").read_bytes() == b""
    assert sink.path_for(1000) == str(tmp_path / "out" / "batch-0000000001000.txt")


def test_replay_overwrites_identically_and_leaves_no_temp_files(tmp_path):
    sink = FileSink(str(tmp_path), name="out", format="jsonl")
    sink.open()
    records = [{"user": "ann", "n": 1}, Rec("bob", 2), Point(1, 2), b"bytes", b"\xff", {"tags": {"b", "a"}}, "ünïcode"]
    sink.write(1000, records)
    first = (tmp_path / "batch-0000000001000.jsonl").read_bytes()
    sink.write(1000, records)
    assert (tmp_path / "batch-0000000001000.jsonl").read_bytes() == first
    assert os.listdir(tmp_path) == ["batch-0000000001000.jsonl"]
    lines = [json.loads(line) for line in first.decode("utf-8").splitlines()]
    assert lines == [{"user": "ann", "n": 1}, ["bob", 2], {"x": 1, "y": 2}, "bytes", {"base64": "/w=="}, {"tags": ["a", "b"]}, "ünïcode"]


def test_unencodable_records_are_refused_before_writing(tmp_path):
    lines = FileSink(tmp_path, name="lines")
    with pytest.raises(SinkError, match="record #1 contains a line break.*format='jsonl'"):
        lines.write(1000, ["ok", "two\nlines"])
    js = FileSink(tmp_path, name="js", format="jsonl")
    with pytest.raises(SinkError, match=r"batch 1000: record #0 \(object\) is not JSON"):
        js.write(1000, [object()])
    custom = FileSink(tmp_path, name="custom", format="jsonl", json_default=repr)
    custom.write(2000, [complex(1, 2)])
    assert os.listdir(tmp_path) == ["batch-0000000002000.jsonl"]
    assert (tmp_path / "batch-0000000002000.jsonl").read_text() == '"(1+2j)"\n'


def test_write_failure_is_a_sink_error_naming_the_path(tmp_path):
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("x")
    sink = FileSink(blocker / "out", name="out")
    with pytest.raises(SinkError, match="cannot create directory"):
        sink.open()
    with pytest.raises(SinkError, match=r"cannot write .*batch-0000000001000.txt"):
        sink.write(1000, ["a"])


def test_file_url_and_bad_configuration(tmp_path):
    sink = FileSink(f"file://{tmp_path}/x", name="u")
    sink.open()
    sink.write(5, ["r"])
    assert (tmp_path / "x" / "batch-0000000000005.txt").read_text() == "r\n"
    with pytest.raises(ConfigError, match="format"):
        FileSink(tmp_path, name="a", format="csv")  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="name"):
        FileSink(tmp_path, name="")


@pytest.mark.integration
def test_object_store_url_writes_one_object_per_batch(s3_server, s3_url):
    import fsspec

    sink = FileSink(f"{s3_url}/out", name="s3", format="jsonl", storage_options=s3_server.storage_options)
    sink.open()
    sink.write(1000, [{"a": 1}])
    sink.write(1000, [{"a": 1}])
    sink.write(2000, [])
    sink.close()
    fs: Any = fsspec.filesystem("s3", **s3_server.storage_options)
    base = s3_url.removeprefix("s3://") + "/out"
    assert sorted(p.rsplit("/", 1)[1] for p in fs.ls(base)) == ["batch-0000000001000.jsonl", "batch-0000000002000.jsonl"]
    assert fs.cat(f"{base}/batch-0000000001000.jsonl") == b'{"a": 1}\n'
