"""text_file_stream under a checkpoint: the start cut-off, decoding errors, plan confinement, options."""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from _ckpt_jobs import run_until

import streamkeep as sk
from streamkeep.checkpoint import Checkpoint, _checkpoint, plan_path
from streamkeep.errors import ConfigError, CorruptCheckpointError, SourceError, UserFunctionError
from streamkeep.sources import TextFileSource
from streamkeep.testing import ListSink, ManualClock


def _put(d: Path, name: str, data: bytes | str) -> None:
    """Write a file elsewhere and move it in (how inputs are meant to arrive)."""
    tmp = d / f".tmp-{name}"
    tmp.write_bytes(data.encode() if isinstance(data, str) else data)
    os.replace(tmp, d / name)


def file_job(
    url: str,
    d: Path,
    sink: ListSink,
    *,
    fail_at_ms: int | None = None,
    **options: Any,
) -> Callable[[], sk.StreamingContext]:
    def setup() -> sk.StreamingContext:
        ssc = sk.StreamingContext(1.0, checkpoint=url, clock=ManualClock())
        lines = ssc.text_file_stream(str(d), name="files", **options)
        lines.write_to(sink)

        def fail(t: Any, batch: Any) -> None:
            if fail_at_ms is not None and int(t.timestamp() * 1000) == fail_at_ms:
                raise RuntimeError("driver dies before the commit")

        lines.foreach_batch(fail)
        return ssc

    return setup


def _lines(sink: ListSink) -> list[str]:
    return sorted(x for _, recs in sink.batches for x in recs)


# -------------------------------------------------------------- 10.4: the start cut-off is durable


def test_files_that_arrive_before_the_first_plan_survive_a_restart(tmp_path: Path) -> None:
    d = tmp_path / "in"
    d.mkdir()
    _put(d, "old.txt", "old\n")
    url = str(tmp_path / "ckpt")
    first = sk.StreamingContext.get_or_create(url, file_job(url, d, ListSink()))  # opens: takes the cut-off
    _put(d, "new.txt", "new\n")  # arrives after the job started ...
    first.stop()  # ... and the driver goes away before its first plan
    sink = ListSink()
    run_until(url, file_job(url, d, sink), 2)
    assert _lines(sink) == ["new"]  # read once; the file present at the first start stays skipped


def test_the_start_record_is_dropped_once_a_commit_holds_the_position(tmp_path: Path) -> None:
    d = tmp_path / "in"
    d.mkdir()
    url = str(tmp_path / "ckpt")
    run_until(url, file_job(url, d, ListSink()), 1)
    blobs = Path(url) / "blobs"
    assert [p.name for p in blobs.iterdir()] == ["files%2Fstart"]  # kept until a restart sees a committed position
    _put(d, "a.txt", "a\n")
    sink = ListSink()
    run_until(url, file_job(url, d, sink), 2)
    assert _lines(sink) == ["a"]
    assert not [p.name for p in blobs.iterdir()]


def test_new_files_only_false_reads_the_files_already_there(tmp_path: Path) -> None:
    d = tmp_path / "in"
    d.mkdir()
    _put(d, "old.txt", "old\n")
    _put(d, "_temp", "ignored\n")
    url = str(tmp_path / "ckpt")
    sink = ListSink()
    run_until(url, file_job(url, d, sink, new_files_only=False), 1)
    assert _lines(sink) == ["old"]
    assert not (Path(url) / "blobs").exists() or not list((Path(url) / "blobs").iterdir())


# -------------------------------------------------------------- 10.12: undecodable input


def test_an_undecodable_line_names_the_source_file_and_line(tmp_path: Path) -> None:
    d = tmp_path / "in"
    d.mkdir()
    url = str(tmp_path / "ckpt")
    run_until(url, file_job(url, d, ListSink()), 1)
    _put(d, "bad.txt", b"fine\ncaf\xe9 latin-1\nalso fine\n")
    with pytest.raises(SourceError) as info:
        run_until(url, file_job(url, d, ListSink()), 2)
    msg = str(info.value)
    assert "'files'" in msg and str(d / "bad.txt") in msg and "line 2" in msg and "utf-8" in msg
    assert "on_error=" in msg and "encoding=" in msg
    assert isinstance(info.value.__cause__, UnicodeDecodeError)


def test_a_dead_letter_sink_takes_undecodable_lines_after_a_restart(tmp_path: Path) -> None:
    """The documented way out: the batch that failed is replayed with on_error=; nothing is lost."""
    d = tmp_path / "in"
    d.mkdir()
    url = str(tmp_path / "ckpt")
    run_until(url, file_job(url, d, ListSink()), 1)
    _put(d, "bad.txt", b"fine\nbad \xff\xfe line\r\nlast")
    with pytest.raises(SourceError):
        run_until(url, file_job(url, d, ListSink()), 2)
    sink, dead = ListSink(), ListSink("dead")
    run_until(url, file_job(url, d, sink, on_error=dead), 3)
    assert sink.batches == [(2000, ["fine", "last"]), (3000, [])]
    assert dead.batches == [(2000, [{"file": str(d / "bad.txt"), "line": 2, "value": b"bad \xff\xfe line", "error": dead.batches[0][1][0]["error"]}])]
    assert "UnicodeDecodeError" in dead.batches[0][1][0]["error"]


class _FencedListSink(ListSink):
    """A dead-letter sink that records the fencing token it is given before its first write."""

    def __init__(self, name: str) -> None:
        super().__init__(name)
        self.token: Any = None
        self.token_at_first_write: Any = "never written"

    def set_fencing_token(self, token: Any) -> None:
        self.token = token

    def write(self, batch_time: Any, records: Any) -> None:
        if self.token_at_first_write == "never written":
            self.token_at_first_write = self.token
        super().write(batch_time, records)


def test_the_dead_letter_sink_of_text_file_stream_is_fenced_like_other_sinks(tmp_path: Path) -> None:
    """Issue 10.1 sibling: a RedisSink/KafkaSink/FileSink given as on_error= gets the driver's fencing token."""
    d = tmp_path / "in"
    d.mkdir()
    url = str(tmp_path / "ckpt")
    run_until(url, file_job(url, d, ListSink()), 1)
    _put(d, "bad.txt", b"fine\nbad \xff line\n")
    dead = _FencedListSink("dead")
    run_until(url, file_job(url, d, ListSink(), on_error=dead), 2)
    assert dead.batches and dead.token_at_first_write is not None
    assert dead.token_at_first_write.epoch == Checkpoint(url).max_epoch()


def test_a_callable_on_error_sees_each_undecodable_line(tmp_path: Path) -> None:
    d = tmp_path / "in"
    d.mkdir()
    seen: list[tuple[int, bytes]] = []
    ssc = sk.StreamingContext(1.0, clock=ManualClock())
    sink = ListSink()
    ssc.text_file_stream(str(d), name="f", on_error=lambda rec, exc: seen.append((rec["line"], rec["value"]))).write_to(sink)
    ssc.run(max_batches=1)
    _put(d, "x.txt", b"\xff\nok\n\xfe\xfe\n")
    ssc.run(max_batches=1)
    ssc.stop()
    assert seen == [(1, b"\xff"), (3, b"\xfe\xfe")]
    assert _lines(sink) == ["ok"]


def test_encoding_and_errors_options(tmp_path: Path) -> None:
    d = tmp_path / "in"
    d.mkdir()
    ssc = sk.StreamingContext(1.0, clock=ManualClock())
    latin, replaced = ListSink("latin"), ListSink("replaced")
    ssc.text_file_stream(str(d), name="latin", encoding="latin-1").write_to(latin)
    ssc.text_file_stream(str(d), name="replaced", errors="replace").write_to(replaced)
    ssc.run(max_batches=1)
    _put(d, "x.txt", "café\n".encode("latin-1"))
    ssc.run(max_batches=1)
    ssc.stop()
    assert _lines(latin) == ["café"]
    assert _lines(replaced) == ["caf\ufffd"]


@pytest.mark.parametrize(
    ("kw", "match"),
    [
        ({"encoding": "no-such-codec"}, "encoding="),
        ({"errors": "no-such-handler"}, "errors="),
        ({"on_error": 42}, "on_error must be a dead-letter sink"),
    ],
)
def test_bad_decoding_options_are_refused_when_built(tmp_path: Path, kw: dict[str, Any], match: str) -> None:
    ssc = sk.StreamingContext(1.0, clock=ManualClock())
    with pytest.raises(ConfigError, match=match):
        ssc.text_file_stream(str(tmp_path), name="f", **kw)


# -------------------------------------------------------------- 10.10: planned paths stay inside the directory


@pytest.mark.parametrize("planted", ["../secret.txt", "/SECRET", "sub/../../secret.txt", ".."])
def test_a_plan_naming_a_file_outside_the_directory_is_refused(tmp_path: Path, planted: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_checkpoint, "PLAN_LOGS", False)  # a file per plan (as on S3), rewritten below
    d = tmp_path / "in"
    d.mkdir()
    secret = tmp_path / "secret.txt"
    secret.write_text("do not read\n")
    url = str(tmp_path / "ckpt")
    run_until(url, file_job(url, d, ListSink()), 1)
    _put(d, "a.txt", "a\n")
    with pytest.raises(UserFunctionError):
        run_until(url, file_job(url, d, ListSink(), fail_at_ms=2000), 2)  # batch 2 planned, not committed
    ckpt = Checkpoint(url)
    plan = ckpt.read_plan(2000)
    assert plan["sources"]["files"]["files"] == [["a.txt", 2]]
    target = str(secret) if planted == "/SECRET" else planted
    plan["sources"]["files"]["files"] = [[target, 12]]
    ckpt.storage.write(plan_path(2000), ckpt.encode("plan", plan, rel=plan_path(2000)))
    sink = ListSink()
    with pytest.raises(CorruptCheckpointError) as info:
        run_until(url, file_job(url, d, sink), 2)
    msg = str(info.value)
    assert "plan of batch 2000 ms" in msg and "'files'" in msg and repr(target) in msg
    assert not sink.batches


def test_a_damaged_plan_entry_is_refused(tmp_path: Path) -> None:
    src = TextFileSource(str(tmp_path), name="f")
    with pytest.raises(CorruptCheckpointError, match="damaged entry"):
        src.read({"files": [["a.txt", -1]]}, 1000)
    with pytest.raises(CorruptCheckpointError, match="no file list"):
        src.read({}, 1000)


# -------------------------------------------------------------- the README tour's defaults


def test_text_file_stream_exposes_new_files_only() -> None:
    import inspect

    params = inspect.signature(sk.StreamingContext.text_file_stream).parameters
    assert params["new_files_only"].default is True
    assert {"encoding", "errors", "on_error", "storage_options"} <= set(params)


def test_dead_letters_are_written_only_once_the_batchs_plan_is_durable(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A source's dead letters are a sink output: written after its batch's plan is durable, like every output.

    The plan's flush runs in the background while the batch reads its input. Written before it was
    durable, a kill in between re-planned the lines (maybe into another batch time, which the
    dead-letter sink's per-batch marker does not recognise): written twice. Here the plan write waits
    (up to 2 s) for a dead letter; the order of the two is what the test checks.
    """
    d = tmp_path / "in"
    d.mkdir()
    url = str(tmp_path / "ckpt")
    order: list[tuple[str, int]] = []
    dead_written = threading.Event()

    class _Dead(ListSink):
        def write(self, batch_time: Any, records: Any) -> None:
            order.append(("dead letters", int(batch_time)))
            dead_written.set()
            super().write(batch_time, records)

    real = _checkpoint.Checkpoint.write_plan_data

    def slow_plan(self: Any, batch_time: int, data: bytes) -> None:
        if batch_time == 2000:  # the batch with the undecodable line
            dead_written.wait(2.0)  # the fixed engine never writes the dead letter before this returns
        real(self, batch_time, data)
        order.append(("plan durable", batch_time))

    monkeypatch.setattr(_checkpoint.Checkpoint, "write_plan_data", slow_plan)
    dead = _Dead("dead")
    run_until(url, file_job(url, d, ListSink(), on_error=dead), 1)
    _put(d, "bad.txt", b"fine\nbad \xff line\n")
    run_until(url, file_job(url, d, ListSink(), on_error=dead), 2)
    mine = [e for e in order if e[1] == 2000]
    assert mine == [("plan durable", 2000), ("dead letters", 2000)], order


def test_recovery_flushes_the_plans_it_replays_before_replaying_them(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A plan read back at recovery may sit in the page cache only (the driver died between its append and its
    fdatasync): recovery makes its file durable before the replay writes outputs that rest on it."""
    from streamkeep.checkpoint.storage import CheckpointStorage

    d = tmp_path / "in"
    d.mkdir()
    url = str(tmp_path / "ckpt")
    run_until(url, file_job(url, d, ListSink()), 1)
    _put(d, "a.txt", "x\n")
    with pytest.raises(UserFunctionError):
        run_until(url, file_job(url, d, ListSink(), fail_at_ms=2000), 2)
    holder = Checkpoint(url).plan_index()[2000]  # planned, never committed
    synced: list[list[str]] = []
    real = CheckpointStorage.sync

    def spy(self: CheckpointStorage, rels: list[str]) -> None:
        synced.append(list(rels))
        real(self, rels)

    monkeypatch.setattr(CheckpointStorage, "sync", spy)
    sink = ListSink()
    run_until(url, file_job(url, d, sink), 2)
    assert synced == [[holder]], synced
    assert sink.batches == [(2000, ["x"])]


# -------------------------------------------------------------- a planned file that keeps growing


def _appending_job(d: Path, sink: ListSink, append: dict[int, tuple[str, bytes]]) -> sk.StreamingContext:
    """A job whose own output step appends to a file (a writer that appends in place) after given batches."""
    ssc = sk.StreamingContext(1.0, clock=ManualClock())
    lines = ssc.text_file_stream(str(d), name="files", new_files_only=False)
    lines.write_to(sink)

    def writer(t: Any, batch: Any) -> None:
        name, data = append.get(int(t.timestamp() * 1000), ("", b""))
        if name:
            with open(d / name, "ab") as f:
                f.write(data)

    lines.foreach_batch(writer)
    return ssc


def _grew(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == "streamkeep.sources.files" and "grew" in r.getMessage()]


def test_bytes_appended_to_a_planned_file_are_named_in_a_warning(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    d = tmp_path / "in"
    d.mkdir()
    (d / "app.log").write_bytes(b"one\ntwo\n")  # 8 bytes when batch 1000 plans it
    sink = ListSink()
    ssc = _appending_job(d, sink, {1000: ("app.log", b"three\n"), 2000: ("app.log", b"four\n")})
    with caplog.at_level(logging.WARNING, logger="streamkeep.sources.files"):
        ssc.run(max_batches=4)
    ssc.stop()
    assert _lines(sink) == ["one", "two"]  # the appended lines are not read (the plan fixed 8 bytes) ...
    (msg,) = _grew(caplog)  # ... but the loss is said, once for the file, not once per batch
    assert str(d / "app.log") in msg and "'files'" in msg and "batch 1000 ms (1970-01-01T00:00:01.000Z)" in msg
    assert "with 8 bytes" in msg and "now has 14 bytes" in msg and "6 appended bytes" in msg
    assert "rename it into place" in msg


def test_growth_of_older_local_files_is_found_in_turn(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """Past the listings right after its plan, a local file is still checked, a few files per listing."""
    from streamkeep.sources import files as files_mod

    d = tmp_path / "in"
    d.mkdir()
    many = files_mod._OLDER_PER_LISTING * 2 + 5
    for i in range(many):
        (d / f"f{i:04}.txt").write_bytes(b"x\n")
    grow_at = 1000 * (files_mod._RECENT_LISTINGS + 2)  # long after batch 1000 planned them all
    sink = ListSink()
    ssc = _appending_job(d, sink, {grow_at: ("f0003.txt", b"late\n")})
    with caplog.at_level(logging.WARNING, logger="streamkeep.sources.files"):
        ssc.run(max_batches=grow_at // 1000 + many // files_mod._OLDER_PER_LISTING + 2)
    ssc.stop()
    (msg,) = _grew(caplog)
    assert str(d / "f0003.txt") in msg and "with 2 bytes" in msg and "now has 7 bytes" in msg
