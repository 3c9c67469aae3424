"""A damaged CHECKPOINT (identity) file: the error names it and the way out; `streamkeep checkpoint repair` is that way.

Before, a job on such a checkpoint failed with "checkpoint file .../CHECKPOINT is corrupt ... run verify", verify
listed the same problem, and nothing said that the committed state was intact or how to go on short of
starting a fresh checkpoint (losing it).
"""

from __future__ import annotations

import struct
import zlib
from pathlib import Path
from typing import Any

import pytest
from _ckpt_jobs import run_until

import streamkeep as sk
from streamkeep.checkpoint import FORMAT_VERSION, Checkpoint, _repair
from streamkeep.cli import main
from streamkeep.errors import CheckpointError, CorruptCheckpointError
from streamkeep.testing import ListSink, ManualClock


def _setup(url: str, sink: ListSink) -> Any:
    def setup() -> sk.StreamingContext:
        ssc = sk.StreamingContext(1.0, checkpoint=url, clock=ManualClock())
        counts = ssc.rate_stream(5, name="rate").map(lambda r: ("n", 1))
        counts.update_state_by_key(lambda new, old: (old or 0) + sum(new), name="total").write_to(sink)
        return ssc

    return setup


def _damage(path: Path, how: str) -> None:
    data = bytearray(path.read_bytes())
    if how == "checksum":  # a flipped bit in the checksum: the payload is whole
        data[-2] ^= 0x40
    elif how == "truncated":  # the tail (with the id at the end of the map) is gone
        del data[len(data) // 2 :]
    else:  # overwritten with something else entirely
        data = bytearray(b"not a streamkeep file\n" * 3)
    path.write_bytes(bytes(data))


@pytest.mark.parametrize("how", ["checksum", "truncated", "garbage"])
def test_a_damaged_checkpoint_file_is_named_with_the_way_out_and_repair_keeps_the_committed_state(
    tmp_path: Path, capsys: Any, how: str
) -> None:
    url = str(tmp_path / "ck")
    run_until(url, _setup(url, ListSink()), 3)
    old_id = Checkpoint(url).identity()["id"]
    ident = tmp_path / "ck" / "CHECKPOINT"
    _damage(ident, how)

    with pytest.raises(CorruptCheckpointError) as info:
        run_until(url, _setup(url, ListSink()), 4)
    msg = str(info.value)
    assert str(ident) in msg and "identity file" in msg and "not affected" in msg
    assert f"streamkeep checkpoint repair {url}" in msg

    assert main(["checkpoint", "verify", url]) == 1
    assert f"`streamkeep checkpoint repair {url}` rewrites it" in capsys.readouterr().out

    assert main(["checkpoint", "repair", url]) == 0
    out = capsys.readouterr().out
    assert "CHECKPOINT rewritten" in out and "the commit log and the state files were not touched" in out
    kept = [p.name for p in (tmp_path / "ck").iterdir() if p.name.startswith("CHECKPOINT.damaged-")]
    assert len(kept) == 1, kept  # the damaged bytes are kept, not deleted
    new_id = Checkpoint(url).identity()["id"]
    if how == "checksum":
        assert new_id == old_id and "restored: one flipped bit" in out
    else:
        assert new_id != old_id and "NEW: the old one was not readable" in out and "--id" in out
    if how == "truncated":  # the fields before the cut are read one by one (a torn map decodes to nothing whole)
        assert "format_version: 4 (read in the damaged file, unverified)" in out, out

    sink = ListSink()
    run_until(url, _setup(url, sink), 4)
    assert sink.batches == [(4000, [("n", 20)])]  # the committed count goes on: nothing was lost
    assert main(["checkpoint", "verify", url]) == 0


def test_repair_with_an_id_and_of_a_sound_file(tmp_path: Path, capsys: Any) -> None:
    url = str(tmp_path / "ck")
    run_until(url, _setup(url, ListSink()), 1)
    old_id = Checkpoint(url).identity()["id"]
    before = (tmp_path / "ck" / "CHECKPOINT").read_bytes()
    assert main(["checkpoint", "repair", url]) == 0
    assert "CHECKPOINT is sound; nothing to repair" in capsys.readouterr().out
    assert (tmp_path / "ck" / "CHECKPOINT").read_bytes() == before
    _damage(tmp_path / "ck" / "CHECKPOINT", "garbage")
    assert main(["checkpoint", "repair", "--id", old_id, url]) == 0
    assert "(given with --id)" in capsys.readouterr().out
    assert Checkpoint(url).identity()["id"] == old_id
    assert main(["checkpoint", "repair", "--id", "../x", url]) == 2
    assert "letters and digits" in capsys.readouterr().err


def test_repair_refuses_while_a_driver_owns_the_checkpoint(tmp_path: Path, capsys: Any) -> None:
    url = str(tmp_path / "ck")
    run_until(url, _setup(url, ListSink()), 1)
    running = sk.StreamingContext.get_or_create(url, _setup(url, ListSink()))
    running.start()  # a live driver holds the checkpoint ...
    try:
        _damage(tmp_path / "ck" / "CHECKPOINT", "checksum")  # ... when its identity file is damaged
        damaged = (tmp_path / "ck" / "CHECKPOINT").read_bytes()
        assert main(["checkpoint", "repair", url]) == 2
        assert "CheckpointInUseError" in capsys.readouterr().err
        assert (tmp_path / "ck" / "CHECKPOINT").read_bytes() == damaged  # untouched
    finally:
        running.stop()
    assert main(["checkpoint", "repair", url]) == 0  # once it stopped


@pytest.mark.integration
def test_repair_on_s3(s3_server: Any, s3_url: str, capsys: Any) -> None:
    """The same on an object store (moto S3): a live lease refuses the repair, a released one lets it run."""
    import json

    s3fs = pytest.importorskip("s3fs")
    so = s3_server.storage_options
    opts = [x for k, v in so.items() for x in ("-o", f"{k}={json.dumps(v) if isinstance(v, dict) else v}")]

    def setup() -> sk.StreamingContext:
        ssc = sk.StreamingContext(1.0, checkpoint=s3_url, clock=ManualClock(), storage_options=so)
        ssc.rate_stream(5, name="rate").map(lambda r: ("n", 1)).update_state_by_key(
            lambda new, old: (old or 0) + sum(new), name="total"
        ).write_to(sink)
        return ssc

    sink = ListSink()
    run_until(s3_url, setup, 2, storage_options=so)
    old_id = Checkpoint(s3_url, storage_options=so).identity()["id"]
    fs = s3fs.S3FileSystem(**so)
    key = f"{s3_url}/CHECKPOINT".removeprefix("s3://")
    running = sk.StreamingContext.get_or_create(s3_url, setup, storage_options=so)
    running.start()  # its lease is live
    try:
        data = bytearray(fs.cat_file(key))
        data[-2] ^= 0x40
        fs.pipe(key, bytes(data))
        assert main(["checkpoint", "repair", s3_url, *opts]) == 2
        assert "CheckpointInUseError" in capsys.readouterr().err
        assert fs.cat_file(key) == bytes(data)  # untouched
    finally:
        running.stop()  # releases the lease
    with pytest.raises(CorruptCheckpointError, match="streamkeep checkpoint repair"):
        run_until(s3_url, setup, 3, storage_options=so)
    assert main(["checkpoint", "repair", s3_url, *opts]) == 0
    assert "restored: one flipped bit" in capsys.readouterr().out
    assert Checkpoint(s3_url, storage_options=so).identity()["id"] == old_id
    sink = ListSink()
    run_until(s3_url, setup, 3, storage_options=so)
    assert sink.batches == [(3000, [("n", 15)])]


def test_a_checkpoint_file_of_a_newer_build_is_not_damage_and_repair_leaves_it(tmp_path: Path, capsys: Any) -> None:
    """A CHECKPOINT whose checksum holds but whose version is newer was called damaged: the start error advised
    repair, and repair rewrote it in the old format, letting an old build open a newer checkpoint."""
    url = str(tmp_path / "ck")
    run_until(url, _setup(url, ListSink()), 1)
    ident = tmp_path / "ck" / "CHECKPOINT"
    data = bytearray(ident.read_bytes())
    newer = FORMAT_VERSION + 1
    data[4] = newer  # written by a newer streamkeep
    data[-4:] = struct.pack(">I", zlib.crc32(bytes(data[:-4])))
    ident.write_bytes(bytes(data))

    with pytest.raises(CorruptCheckpointError) as info:
        run_until(url, _setup(url, ListSink()), 2)
    msg = str(info.value)
    assert f"format version {newer}" in msg and "reads versions 1, 2" in msg and "release that wrote it" in msg
    assert "checkpoint repair" not in msg

    assert main(["checkpoint", "verify", url]) == 1
    assert "checkpoint repair" not in capsys.readouterr().out
    assert main(["checkpoint", "repair", url]) == 2
    err = capsys.readouterr().err
    assert "is not damaged (its frame checksum holds)" in err and f"format version {newer}" in err, err
    assert ident.read_bytes() == bytes(data)  # left alone
    assert not [p for p in (tmp_path / "ck").iterdir() if p.name.startswith("CHECKPOINT.damaged-")]


def _flip_keeping_alnum(buf: bytearray, i: int) -> None:
    """Flip one bit of the id's character at `i` so that it stays a letter or digit (the id is random hex: a fixed
    bit made a backtick of some ids, which repair rightly does not show as an id)."""
    for bit in (0x01, 0x20):
        if chr(buf[i] ^ bit).isalnum():
            buf[i] ^= bit
            return
    raise AssertionError(f"no bit keeps {chr(buf[i])!r} alphanumeric")


def test_a_flipped_bit_in_the_id_is_restored_and_an_unverified_id_is_said_to_be_one(tmp_path: Path, capsys: Any) -> None:
    """A bit flipped inside the id: repair printed the wrong id as "kept from the damaged file" (fenced sinks then
    saw another id). One flipped bit is now undone exactly; two leave the id marked unverified."""
    url = str(tmp_path / "ck")
    run_until(url, _setup(url, ListSink()), 1)
    old_id = Checkpoint(url).identity()["id"]
    ident = tmp_path / "ck" / "CHECKPOINT"
    sound = ident.read_bytes()
    at = sound.find(old_id.encode())
    one = bytearray(sound)
    _flip_keeping_alnum(one, at + 3)
    ident.write_bytes(bytes(one))
    assert main(["checkpoint", "repair", url]) == 0
    out = capsys.readouterr().out
    assert "restored: one flipped bit" in out and f"id: {old_id}" in out, out
    assert ident.read_bytes() == sound

    two = bytearray(sound)
    _flip_keeping_alnum(two, at + 3)
    _flip_keeping_alnum(two, at + 5)
    ident.write_bytes(bytes(two))
    wrong = bytes(two[at : at + len(old_id)]).decode()
    assert main(["checkpoint", "repair", url]) == 0
    out = capsys.readouterr().out
    assert f"id: {wrong} (read in the damaged file, but the checksum fails, so this id is unverified" in out, out
    assert "kept from the damaged file" not in out

    ident.write_bytes(bytes(two))
    assert main(["checkpoint", "repair", "--id", old_id, url]) == 0
    out = capsys.readouterr().out
    assert f"id: {old_id} (given with --id)" in out and f"the damaged file holds the id {wrong} (unverified" in out, out
    assert Checkpoint(url).identity()["id"] == old_id


def test_repair_errors_are_messages_not_tracebacks(tmp_path: Path, capsys: Any) -> None:
    """A path under a file gave a NotADirectoryError traceback; a lock that cannot be opened a raw OSError."""
    under_file = tmp_path / "file"
    under_file.write_text("x")
    assert main(["checkpoint", "repair", str(under_file / "x")]) == 2
    err = capsys.readouterr().err
    assert "there is no streamkeep checkpoint at" in err and "Traceback" not in err, err

    url = str(tmp_path / "ck")
    run_until(url, _setup(url, ListSink()), 1)
    _damage(tmp_path / "ck" / "CHECKPOINT", "checksum")
    (tmp_path / "ck" / "lock").unlink(missing_ok=True)
    (tmp_path / "ck" / "lock").mkdir()  # the lock file cannot be opened (as in a read-only directory)
    assert main(["checkpoint", "repair", url]) == 2
    err = capsys.readouterr().err
    assert f"CheckpointError: cannot lock {tmp_path / 'ck'} to repair it" in err, err


def test_repair_identity_reports_and_does_not_overwrite_a_checkpoint_file_created_meanwhile(
    tmp_path: Path, monkeypatch: Any
) -> None:
    """The repair is the checkpoint package's (`Checkpoint.repair_identity`, a report the CLI prints); a missing
    CHECKPOINT is created, not written over, so a driver that created one meanwhile keeps its own."""
    url = str(tmp_path / "ck")
    run_until(url, _setup(url, ListSink()), 1)
    ident = tmp_path / "ck" / "CHECKPOINT"
    ident.unlink()
    report = Checkpoint(url).repair_identity("abc123")
    assert report.damage == "it is missing" and report.record["id"] == "abc123" and report.kept_as is None
    assert Checkpoint(url).identity()["id"] == "abc123"

    ident.unlink()
    theirs = Checkpoint(url).encode("identity", {"format_version": 4, "id": "theirs1"}, rel="CHECKPOINT")
    salvage = _repair._salvage

    def driver_starts(raw: bytes) -> dict[str, Any]:
        ident.write_bytes(theirs)  # a driver that started while the repair ran
        return salvage(raw)

    monkeypatch.setattr(_repair, "_salvage", driver_starts)
    with pytest.raises(CheckpointError, match="appeared while the repair ran"):
        Checkpoint(url).repair_identity(None)
    assert ident.read_bytes() == theirs
