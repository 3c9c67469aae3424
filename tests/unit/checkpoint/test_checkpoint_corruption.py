"""Framing and corruption: damaged files are detected, recovery falls back or names the file.

A truncated, altered or deleted file never yields a wrong result or a decoder
traceback: recovery falls back to an older commit when one is complete (and warns),
else raises `CorruptCheckpointError` naming the file.
"""

from __future__ import annotations

import os
import struct
import zlib
from pathlib import Path
from typing import Any

import pytest
from _ckpt_jobs import rate_job, run_until, totals_after

import streamkeep as sk
from streamkeep.checkpoint import FORMAT_VERSION, Checkpoint, _checkpoint, frame, log_path, unframe
from streamkeep.checkpoint._format import (
    EMPTY_RUN_VERSION,
    GRAPH_REF_VERSION,
    MOVED_VERSION,
    PARTITIONED_VERSION,
    PLAIN_VERSION,
    PLAN_LOG_VERSION,
    read_frame,
)
from streamkeep.errors import CheckpointError, CorruptCheckpointError, StreamkeepWarning
from streamkeep.testing import ListSink

# ------------------------------------------------------------------------------ framing


def test_frame_round_trip_and_documented_layout() -> None:
    data = frame("delta", "msgpack", b"payload", "state/op/1.delta")
    assert unframe("f", data, "delta", "state/op/1.delta") == ("msgpack", b"payload")
    # b"SKCP" u8 version, u8 len(kind) kind, u8 len(codec) codec, u16 len(name) name, u64 len(payload), payload, u32 crc32
    head = (
        b"SKCP" + bytes([PLAIN_VERSION, 5]) + b"delta" + bytes([7]) + b"msgpack" + struct.pack(">H", 16) + b"state/op/1.delta" + struct.pack(">Q", 7)
    )
    # 5: the files of the key-partitioned layout (Ray), see test_checkpoint_partitioned.py; 6: plan logs (local disks);
    # 7: a window's state holding empty runs, see tests/unit/operators/test_window_empty_batches.py; 8: commit records
    # naming their graph file, see tests/unit/checkpoint/test_checkpoint_graph_files.py; 9: keyed state whose delta
    # moves keys, see tests/unit/operators/test_restored_order.py
    assert PLAIN_VERSION == 4 and PARTITIONED_VERSION == 5 and PLAN_LOG_VERSION == 6 and EMPTY_RUN_VERSION == 7
    assert GRAPH_REF_VERSION == 8 and FORMAT_VERSION == MOVED_VERSION == 9
    assert data == head + b"payload" + struct.pack(">I", zlib.crc32(head + b"payload"))


def test_format_1_files_without_identity_are_still_read() -> None:
    head = b"SKCP" + bytes([1, 5]) + b"delta" + bytes([7]) + b"msgpack" + struct.pack(">Q", 7)
    v1 = head + b"payload" + struct.pack(">I", zlib.crc32(head + b"payload"))
    assert unframe("f", v1, "delta", "state/op/1.delta") == ("msgpack", b"payload")  # no identity to check


def test_a_valid_file_under_another_name_is_refused() -> None:
    data = frame("snap", "msgpack", b"old state", "state/op/000000000001000.snap")
    with pytest.raises(CorruptCheckpointError, match=r"written as 'state/op/000000000001000.snap', not 'state/op/000000000009000.snap'"):
        unframe("ckpt/state/op/000000000009000.snap", data, "snap", "state/op/000000000009000.snap")


def test_every_truncation_is_detected() -> None:
    data = frame("record", "msgpack", b"some commit record bytes", "log/000000000003.rec")
    for n in range(len(data)):
        with pytest.raises(CorruptCheckpointError, match="log/000000000003.rec"):
            unframe("log/000000000003.rec", data[:n], "record")


def test_every_flipped_byte_is_detected() -> None:
    data = frame("snap", "msgpack", bytes(range(40)), "state/op/1.snap")
    for i in range(len(data)):
        for bit in (0x01, 0x80):
            bad = bytearray(data)
            bad[i] ^= bit
            with pytest.raises(CorruptCheckpointError, match="state/op/1.snap"):
                unframe("state/op/1.snap", bytes(bad))


def test_wrong_kind_foreign_file_and_newer_version_are_refused() -> None:
    with pytest.raises(CorruptCheckpointError, match="'plan' file where a 'record' file"):
        unframe("x", frame("plan", "msgpack", b"", "x"), "record")
    with pytest.raises(CorruptCheckpointError, match="magic"):
        unframe("x", b'{"json": "not ours"}', None)
    newer = bytearray(frame("plan", "msgpack", b"", "x"))
    newer[4] = FORMAT_VERSION + 1
    with pytest.raises(CorruptCheckpointError, match=f"format version {FORMAT_VERSION + 1}"):
        unframe("x", bytes(newer), None)


def test_checksum_valid_garbage_payload_is_corrupt_not_a_decoder_traceback(tmp_path: Path) -> None:
    ck = Checkpoint(str(tmp_path))
    ck.storage.write("plans/000000000001000.plan", frame("plan", "msgpack", b"\xc1\xc1\xc1", "plans/000000000001000.plan"))
    with pytest.raises(CorruptCheckpointError, match="000000000001000.plan.*could not be decoded"):
        ck.read_plan(1000)


# ------------------------------------------------------------------------------ recovery

# Every batch changes 5000 keys, so each delta is large enough to get a file of its own
# (small deltas ride inline in the commit record, covered by the commit-record cases).
BIG = {"rows_per_second": 5000, "keys": 5000}


def _committed(url: str, n: int = 5) -> None:
    run_until(url, rate_job(url, ListSink(), **BIG), n)


def _state_files(url: str) -> list[Path]:
    return sorted(Path(url, "state", "totals").iterdir())


def _flip(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[-6] ^= 0xFF  # inside the payload: only the checksum can tell
    path.write_bytes(bytes(data))


def _truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[:-3])


def _delete(path: Path) -> None:
    path.unlink()


DAMAGE = {"truncate": _truncate, "flip": _flip, "delete": _delete}


def _recover_and_finish(url: str, total: int = 8) -> ListSink:
    sink = ListSink()
    run_until(url, rate_job(url, sink, **BIG), total)
    return sink


@pytest.mark.parametrize("damage", sorted(DAMAGE))
def test_damaged_newest_delta_falls_back_to_the_older_commit(tmp_path: Path, damage: str) -> None:
    url = str(tmp_path / "ckpt")
    _committed(url)
    newest = _state_files(url)[-1]
    assert newest.name == "000000000005000.delta"
    DAMAGE[damage](newest)
    with pytest.warns(StreamkeepWarning, match=r"000000000005000\.delta.*older commit of batch 4000 ms"):
        sink = _recover_and_finish(url)
    assert [t for t, _ in sink.batches] == [5000, 6000, 7000, 8000]  # batch 5 replayed from its plan
    assert sorted(sink.batches[0][1]) == totals_after(5, **BIG)
    assert sorted(sink.batches[-1][1]) == totals_after(8, **BIG)


def test_the_fallback_commit_survives_a_restart_and_is_used_when_the_newest_is_damaged(tmp_path: Path) -> None:
    """The restart sweep keeps the next older commit (its record and its chain's files), not only the newest one.

    Batch 5 takes a snapshot, so the newest commit's chain no longer names the deltas of batches 1-5 that the older
    commit needs: a start that only runs its sweep (here: nothing left to run) must leave them.
    """
    url = str(tmp_path / "ckpt")
    run_until(url, rate_job(url, ListSink(), snapshot_every=5, **BIG), 5)
    run_until(url, rate_job(url, ListSink(), snapshot_every=5, **BIG), 5)  # a start and stop: recovery's sweep ran
    snap = Path(url, "state", "totals", "000000000005000.snap")
    _flip(snap)
    # The older commit: batch 5's first record (deltas; the stop named the merged snapshot in one more), or batch 4's.
    with pytest.warns(StreamkeepWarning, match=r"000000000005000\.snap.*older commit of batch [45]000 ms"):
        sink = ListSink()
        run_until(url, rate_job(url, sink, snapshot_every=5, **BIG), 8)
    assert [t for t, _ in sink.batches][-3:] == [6000, 7000, 8000]
    assert sorted(sink.batches[-1][1]) == totals_after(8, **BIG)


@pytest.mark.parametrize("damage", sorted(DAMAGE))
def test_damaged_newest_commit_record_falls_back(tmp_path: Path, damage: str) -> None:
    url = str(tmp_path / "ckpt")
    _committed(url)
    newest = sorted(Path(url, "log").iterdir())[-1]
    DAMAGE[damage](newest)
    if damage == "delete":  # a vanished newest record is indistinguishable from a crash before it: no warning
        sink = _recover_and_finish(url)
    else:
        with pytest.warns(StreamkeepWarning, match=rf"{newest.name} is unreadable.*newest readable commit, of batch 4000 ms"):
            sink = _recover_and_finish(url)
    assert [t for t, _ in sink.batches] == [5000, 6000, 7000, 8000]
    assert sorted(sink.batches[-1][1]) == totals_after(8, **BIG)


@pytest.mark.parametrize("damage", sorted(DAMAGE))
def test_damage_every_commit_needs_names_the_file(tmp_path: Path, damage: str) -> None:
    url = str(tmp_path / "ckpt")
    _committed(url)
    first = _state_files(url)[0]  # the first delta: every retained commit's chain starts with it
    assert first.name == "000000000001000.delta"
    DAMAGE[damage](first)
    with pytest.raises(CorruptCheckpointError, match=str(first)) as info:
        _recover_and_finish(url)
    assert "verify" in str(info.value)


def test_all_commit_records_unreadable_never_starts_over(tmp_path: Path) -> None:
    url = str(tmp_path / "ckpt")
    _committed(url)
    for rec in Path(url, "log").iterdir():
        _flip(rec)
    with pytest.raises(CorruptCheckpointError, match=r"no readable commit record"):
        _recover_and_finish(url)


@pytest.mark.parametrize("layout", ["plan log", "plan files"])
def test_damaged_plan_of_a_pending_batch_names_it(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, layout: str) -> None:
    if layout == "plan files":  # the layout of other storages (S3, fsspec)
        monkeypatch.setattr(_checkpoint, "PLAN_LOGS", False)
    url = str(tmp_path / "ckpt")
    _committed(url)
    ck = Checkpoint(url)
    plan = ck.read_plan(5000)
    ck.write_plan(6000, {**plan, "batch_time": 6000})  # a planned, uncommitted batch (the first of a new plan log) ...
    name = "000000000006000.plan" if layout == "plan files" else "000000000006000.plog"
    _flip(Path(url, "plans", name))  # ... whose plan is damaged
    with pytest.raises(CorruptCheckpointError, match=name):
        _recover_and_finish(url)


def test_commit_records_next_to_plan_logs_are_format_6(tmp_path: Path) -> None:
    """A streamkeep that reads only formats 1 to 5 would not see pending plans in a plan log: it refuses the commits
    (format 6, or 8 when they name their graph file, as every record of this build does)."""
    url = str(tmp_path / "ckpt")
    _committed(url)
    ck = Checkpoint(url)
    assert [p.name for p in Path(url, "plans").iterdir()] == ["000000000001000.plog"]
    for rec in ck.commits():
        assert read_frame("r", ck.storage.read(log_path(rec.seq)), "record").version in (PLAN_LOG_VERSION, GRAPH_REF_VERSION)


def test_damaged_identity_file(tmp_path: Path) -> None:
    url = str(tmp_path / "ckpt")
    _committed(url)
    _flip(Path(url, "CHECKPOINT"))
    with pytest.raises(CorruptCheckpointError, match="CHECKPOINT"):
        _recover_and_finish(url)


def test_foreign_directory_is_refused(tmp_path: Path) -> None:
    url = tmp_path / "not-a-checkpoint"
    url.mkdir()
    (url / "notes.txt").write_text("my files")
    sink = ListSink()
    with pytest.raises(CheckpointError, match="not a streamkeep checkpoint.*notes.txt"):
        run_until(str(url), rate_job(str(url), sink), 2)
    assert sorted(os.listdir(url)) == ["lock", "notes.txt"] or sorted(os.listdir(url)) == ["notes.txt"]
    assert (url / "notes.txt").read_text() == "my files"


def test_foreign_files_inside_a_checkpoint_are_corrupt_not_a_traceback(tmp_path: Path) -> None:
    url = str(tmp_path / "ckpt")
    _committed(url)
    Path(url, "log", "000000000099.rec").write_text("hello")  # a newer "record" that is not ours
    with pytest.warns(StreamkeepWarning, match="000000000099.rec"):
        sink = _recover_and_finish(url)
    assert sorted(sink.batches[-1][1]) == totals_after(8, **BIG)


def test_fresh_context_on_a_committed_checkpoint_refuses(tmp_path: Path) -> None:
    url = str(tmp_path / "ckpt")
    _committed(url, 2)
    ssc = rate_job(url, ListSink())()
    with pytest.raises(CheckpointError, match="get_or_create"):
        ssc.run(max_batches=1)


def test_no_checkpoint_means_fresh_start(tmp_path: Path) -> None:
    url = str(tmp_path / "new")
    sink = ListSink()
    ssc = sk.StreamingContext.get_or_create(url, rate_job(url, sink))
    assert not ssc.restored
    ssc.stop()


@pytest.mark.integration
def test_foreign_s3_prefix_is_refused(s3_server: Any, s3_url: str) -> None:
    import s3fs

    fs = s3fs.S3FileSystem(**s3_server.storage_options)
    fs.pipe(s3_url.removeprefix("s3://") + "/notes.txt", b"my files")
    with pytest.raises(CheckpointError, match="not a streamkeep checkpoint.*notes.txt"):
        Checkpoint(s3_url, storage_options=s3_server.storage_options).claim("test", "0")
    assert fs.cat(s3_url.removeprefix("s3://") + "/notes.txt") == b"my files"
