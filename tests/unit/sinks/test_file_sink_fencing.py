"""FileSink fencing: a driver that lost the checkpoint cannot replace a newer owner's file."""

from __future__ import annotations

import fcntl
import os
import threading
from pathlib import Path
from typing import Any

import pytest

from streamkeep.errors import CheckpointInUseError, SinkError
from streamkeep.sinks.base import FencedSink, FencingToken
from streamkeep.sinks.files import FENCE_FILE, FileSink


def _sink(path: Path | str, epoch: int | None, ckpt: str = "ck1", **kw: Any) -> FileSink:
    sink = FileSink(path, name="out", **kw)
    assert isinstance(sink, FencedSink)
    if epoch is not None:
        sink.set_fencing_token(FencingToken(ckpt, epoch))
    sink.open()
    return sink


def _zombie_is_refused(old: Any, new: Any) -> None:
    """`old` (epoch 1) writes, `new` (epoch 2) takes over: every later write of `old` is refused, naming both epochs."""
    old.write(1000, ["a"])
    new.write(2000, ["b"])
    with pytest.raises(CheckpointInUseError, match=r"newer driver \(epoch 2\).*this driver \(epoch 1\) lost"):
        old.write(2000, ["zombie"])
    with pytest.raises(CheckpointInUseError):
        old.write(3000, ["zombie"])


def test_an_older_epoch_cannot_write_after_a_newer_one(tmp_path: Path) -> None:
    old, new = _sink(tmp_path, 1), _sink(tmp_path, 2)
    try:
        _zombie_is_refused(old, new)
        new.write(3000, ["c"])
        other = _sink(tmp_path, 1, ckpt="ck2")  # a new checkpoint: its epochs are not comparable, it writes
        other.write(4000, ["d"])
        other.close()
    finally:
        old.close()
        new.close()
    assert Path(new.path_for(2000)).read_text() == "b\n" and Path(new.path_for(3000)).read_text() == "c\n"
    assert (tmp_path / FENCE_FILE).read_text() == "ck2 1\n"


def test_without_a_checkpoint_there_is_no_fence(tmp_path: Path) -> None:
    sink = _sink(tmp_path, None)
    sink.write(1000, ["a"])
    sink.close()
    assert sorted(os.listdir(tmp_path)) == ["batch-0000000001000.txt"]


def test_a_zombie_paused_between_its_check_and_its_rename_cannot_replace_the_newer_file(tmp_path: Path, monkeypatch: Any) -> None:
    """The new owner writes while the old driver is between its fence check and its rename: the new file wins."""
    old, new = _sink(tmp_path, 1), _sink(tmp_path, 2)
    writer: list[threading.Thread] = []
    real = old._write_local

    def paused_write(final: str, data: bytes) -> None:  # the old driver, after its check, before its rename
        t = threading.Thread(target=new.write, args=(2000, ["new"]))
        t.start()
        writer.append(t)
        t.join(timeout=0.5)  # with the fence lock the new owner waits here; without it, it would finish first
        real(final, data)

    monkeypatch.setattr(old, "_write_local", paused_write)
    try:
        old.write(2000, ["old"])
        writer[0].join(timeout=30)
        assert not writer[0].is_alive()
    finally:
        old.close()
        new.close()
    assert Path(new.path_for(2000)).read_text() == "new\n"
    again = _sink(tmp_path, 1)
    with pytest.raises(CheckpointInUseError):
        again.write(2000, ["old"])
    again.close()


def test_a_writer_holding_the_fence_lock_too_long_is_a_clear_error(tmp_path: Path) -> None:
    sink = _sink(tmp_path, 1, fence_timeout_s=0.2)
    fd = os.open(tmp_path / FENCE_FILE, os.O_RDWR | os.O_CREAT)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)  # another process paused while writing this directory
        with pytest.raises(SinkError, match=r"stayed locked by another process for 0.2 s.*not committed"):
            sink.write(1000, ["a"])
        fcntl.flock(fd, fcntl.LOCK_UN)
        sink.write(1000, ["a"])
    finally:
        os.close(fd)
        sink.close()
    assert Path(sink.path_for(1000)).read_text() == "a\n"


@pytest.mark.integration
def test_an_older_epoch_cannot_write_after_a_newer_one_on_s3(s3_server: Any, s3_url: str) -> None:
    """On an object store there is no lock: the fence object, read before each PUT, refuses the older driver."""
    s3fs = pytest.importorskip("s3fs")
    opts = s3_server.storage_options
    out = f"{s3_url}/out"
    old, new = _sink(out, 1, storage_options=opts), _sink(out, 2, storage_options=opts)
    try:
        _zombie_is_refused(old, new)
    finally:
        old.close()
        new.close()
    fs = s3fs.S3FileSystem(**opts)
    assert fs.cat_file(new.path_for(2000).removeprefix("s3://")) == b"b\n"
    assert not fs.exists(new.path_for(3000).removeprefix("s3://"))
    assert fs.cat_file(f"{out}/{FENCE_FILE}".removeprefix("s3://")) == b"ck1 2\n"
