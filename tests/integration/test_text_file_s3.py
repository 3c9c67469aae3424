"""text_file_stream on an s3:// URL (moto S3 on 127.0.0.1), with the checkpoint on S3 too."""

from __future__ import annotations

import logging
from typing import Any

import pytest

import streamkeep as sk
from streamkeep.errors import SourceError
from streamkeep.testing import ListSink, ManualClock

pytestmark = pytest.mark.integration


def _job(ckpt: str, inp: str, opts: dict[str, Any], sink: ListSink, **kw: Any) -> Any:
    def setup() -> sk.StreamingContext:
        ssc = sk.StreamingContext(1.0, checkpoint=ckpt, clock=ManualClock(), storage_options=opts)
        ssc.text_file_stream(inp, name="files", storage_options=opts, **kw).write_to(sink)
        return ssc

    return setup


def _run(ckpt: str, setup: Any, opts: dict[str, Any], batches: int) -> None:
    ssc = sk.StreamingContext.get_or_create(ckpt, setup, storage_options=opts)
    try:
        ssc.run(max_batches=batches)
    finally:
        ssc.stop()


def test_text_file_stream_reads_new_objects_under_an_s3_prefix(s3_server: Any, s3_url: str) -> None:
    s3fs = pytest.importorskip("s3fs")
    fs = s3fs.S3FileSystem(**s3_server.storage_options)
    opts = s3_server.storage_options
    inp, ckpt = f"{s3_url}/in", f"{s3_url}/ckpt"
    fs.pipe(f"{inp}/old.txt".removeprefix("s3://"), b"old\n")
    sink = ListSink()
    _run(ckpt, _job(ckpt, inp, opts, sink), opts, 1)
    assert sink.batches == [(1000, [])]  # new_files_only: the object there at start is skipped
    fs.pipe(f"{inp}/a.txt".removeprefix("s3://"), b"a1\na2\n")
    fs.pipe(f"{inp}/_tmp".removeprefix("s3://"), b"ignored\n")
    fs.pipe(f"{inp}/sub/deeper.txt".removeprefix("s3://"), b"not a file of this directory\n")
    sink = ListSink()
    _run(ckpt, _job(ckpt, inp, opts, sink), opts, 2)  # restored from the S3 checkpoint
    assert sink.batches == [(2000, ["a1", "a2"]), (3000, [])]


def test_text_file_stream_on_s3_can_read_the_objects_already_there(s3_server: Any, s3_url: str) -> None:
    s3fs = pytest.importorskip("s3fs")
    fs = s3fs.S3FileSystem(**s3_server.storage_options)
    fs.pipe(f"{s3_url}/in/old.txt".removeprefix("s3://"), b"old\n")
    ssc = sk.StreamingContext(1.0, clock=ManualClock())
    sink = ListSink()
    ssc.text_file_stream(f"{s3_url}/in", name="files", new_files_only=False, storage_options=s3_server.storage_options).write_to(sink)
    ssc.run(max_batches=1)
    ssc.stop()
    assert sink.batches == [(1000, ["old"])]


def test_a_missing_bucket_is_refused_at_start(s3_server: Any) -> None:
    pytest.importorskip("s3fs")
    ssc = sk.StreamingContext(1.0, clock=ManualClock())
    ssc.text_file_stream("s3://no-such-bucket-here/in", name="files", storage_options=s3_server.storage_options).write_to(ListSink())
    with pytest.raises(SourceError, match="bucket 'no-such-bucket-here' does not exist"):
        ssc.run(max_batches=1)


def test_an_object_rewritten_larger_after_its_plan_is_named_in_a_warning(s3_server: Any, s3_url: str, caplog: pytest.LogCaptureFixture) -> None:
    """An object store has no append, but a writer can re-upload a planned object with more data: same loss."""
    s3fs = pytest.importorskip("s3fs")
    fs = s3fs.S3FileSystem(**s3_server.storage_options)
    key = f"{s3_url}/in/app.log".removeprefix("s3://")
    fs.pipe(key, b"one\n")
    ssc = sk.StreamingContext(1.0, clock=ManualClock())
    sink = ListSink()
    lines = ssc.text_file_stream(f"{s3_url}/in", name="files", new_files_only=False, storage_options=s3_server.storage_options)
    lines.write_to(sink)
    lines.foreach_batch(lambda t, b: fs.pipe(key, b"one\ntwo\n") if b else None)  # after batch 1000 read it
    with caplog.at_level(logging.WARNING, logger="streamkeep.sources.files"):
        ssc.run(max_batches=3)
    ssc.stop()
    assert sink.batches == [(1000, ["one"]), (2000, []), (3000, [])]
    (msg,) = [r.getMessage() for r in caplog.records if "grew" in r.getMessage()]
    assert f"{s3_url}/in/app.log" in msg and "with 4 bytes" in msg and "now has 8 bytes" in msg
