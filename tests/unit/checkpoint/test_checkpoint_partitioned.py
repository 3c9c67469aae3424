"""Format 4: state files written per key partition by their owners, and the chains that name them (no Ray needed)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from streamkeep.checkpoint import Checkpoint, CommitRecord, Retention
from streamkeep.checkpoint._checkpoint import check_chain, parse_state_name, part_path
from streamkeep.checkpoint._compact import compact, read_entry
from streamkeep.checkpoint._format import PARTITIONED_VERSION, PLAIN_VERSION, read_frame
from streamkeep.codec import encode_items, get_codec
from streamkeep.errors import CorruptCheckpointError
from streamkeep.executors._partitions import partition_of, split_state
from streamkeep.executors._state_files import compact_part

CODEC = get_codec("msgpack")


def _payload(pairs: list[tuple[Any, Any]], dels: list[Any] = ()) -> bytes:  # type: ignore[assignment]
    return CODEC.encode({"set": encode_items(CODEC, pairs), "del": list(dels)})


def _write_parts(ck: Checkpoint, op: str, t: int, kind: str, data: dict[Any, Any], count: int, epoch: int, dels: list[Any] = ()) -> list[str | None]:  # type: ignore[assignment]
    """Each partition's keys of `data` written as that partition's file (None where it has none)."""
    out: list[str | None] = []
    for i in range(count):
        mine = [(k, v) for k, v in data.items() if partition_of(k, count) == i]
        gone = [k for k in dels if partition_of(k, count) == i]
        out.append(ck.write_part(op, t, kind, _payload(mine, gone), "msgpack", i, count, epoch) if mine or gone else None)
    return out


def test_part_file_names_round_trip_and_look_alikes_are_not_state_files() -> None:
    rel = part_path("totals", 5000, "delta", 2, 3, 7)
    assert rel == "state/totals/000000000005000.p2of3.e7.delta"
    assert parse_state_name(rel.rsplit("/", 1)[1]) == (5000, "delta", 2, 3, 7)
    assert parse_state_name("000000000005000.snap") == (5000, "snap", 0, 1, 0)
    for bad in ("000000000005000.p3of3.e7.delta", "000000000005000.p01of3.e7.delta", "000000000005000.p1of3.e7.json", "5000.p1of3.e7.delta", "x.p1of3.e7.delta"):
        assert parse_state_name(bad) is None, bad


def test_partition_files_are_format_5_and_everything_else_stays_4(tmp_path: Path) -> None:
    ck = Checkpoint(str(tmp_path))
    rel = ck.write_part("op", 1000, "delta", _payload([("a", 1)]), "msgpack", 0, 2, 1)
    assert read_frame("x", ck.storage.read(rel), "delta", rel).version == PARTITIONED_VERSION == 5
    whole = ck.write_state("op", 1000, "delta", _payload([("a", 1)]), "msgpack")
    assert read_frame("x", ck.storage.read(whole), "delta", whole).version == PLAIN_VERSION == 4


def test_a_partitioned_chain_names_every_partition_file_and_nothing_else() -> None:
    snap = [part_path("op", 2000, "snap", i, 2, 3) for i in range(2)]
    delta = {"t": 3000, "parts": [part_path("op", 3000, "delta", 0, 2, 3), None]}
    inline = {"t": 4000, "parts": [None, {"codec": "msgpack", "data": b"\x80"}]}
    rec = CommitRecord(5, {"type": "commit", "batch_time": 4000, "state": {"op": {"snapshot": snap, "snapshot_time": 2000, "deltas": [delta, inline]}}})
    assert rec.files() == {*snap, part_path("op", 3000, "delta", 0, 2, 3)}
    bad_chains = {
        "partition 1's file in partition 0's place": {"snapshot": snap[::-1], "snapshot_time": 2000, "deltas": []},
        "another operator's file": {"snapshot": [part_path("other", 2000, "snap", 0, 2, 3), snap[1]], "snapshot_time": 2000, "deltas": []},
        "a file of another batch": {"snapshot": None, "snapshot_time": 0, "deltas": [{"t": 3000, "parts": [part_path("op", 9000, "delta", 0, 1, 3)]}]},
        "a file of another partition count": {"snapshot": None, "snapshot_time": 0, "deltas": [{"t": 3000, "parts": [part_path("op", 3000, "delta", 0, 3, 3)]}]},
        "a way out": {"snapshot": None, "snapshot_time": 0, "deltas": [{"t": 3000, "parts": ["state/op/../../x/000000000003000.p0of1.e3.delta"]}]},
        "an inline snapshot": {"snapshot": [{"codec": "msgpack", "data": b""}], "snapshot_time": 2000, "deltas": []},
        "out of order": {"snapshot": snap, "snapshot_time": 2000, "deltas": [{"t": 2000, "parts": [None, None]}]},
    }
    for why, chain in bad_chains.items():
        with pytest.raises(CorruptCheckpointError, match="state chain of operator 'op'"):
            check_chain("op", chain, why)


def test_entries_of_any_partition_count_join_and_compact_into_the_whole_state(tmp_path: Path) -> None:
    """A chain written on 3 partitions, then 2, then by the local executor (whole files, inline): both compactions agree."""
    ck = Checkpoint(str(tmp_path))
    snap_data = {f"k{i}": i for i in range(40)}
    d1 = {f"k{i}": i * 10 for i in range(0, 40, 3)}
    d2 = {f"k{i}": -i for i in range(50, 60)}
    chain = {
        "snapshot": _write_parts(ck, "op", 1000, "snap", snap_data, 3, 1),
        "snapshot_time": 1000,
        "deltas": [
            {"t": 2000, "parts": _write_parts(ck, "op", 2000, "delta", d1, 2, 2, dels=["k1", "k2"])},
            ck.write_state("op", 3000, "delta", _payload(list(d2.items()), ["k4"]), "msgpack"),
            {"t": 4000, "codec": "msgpack", "data": _payload([("k5", 555)])},
        ],
    }
    expected = {**snap_data, **d1, **d2, "k5": 555}
    for k in ("k1", "k2", "k4"):
        del expected[k]
    joined = read_entry(ck, chain["snapshot"], False)
    assert joined is not None and dict(joined["set"]) == snap_data
    whole_rel = compact(ck, 5000, [("op", "msgpack", chain)], point=lambda _: None)["op"][0]
    whole = read_entry(ck, whole_rel, False)
    assert whole is not None and dict(whole["set"]) == expected
    # the owners' compaction on 4 partitions: each partition's snapshot holds exactly its keys
    parts = [compact_part(str(tmp_path), None, 5000, 9, i, 4, [("op", "msgpack", chain)], split_state)["op"][0] for i in range(4)]
    assert parts == [part_path("op", 5000, "snap", i, 4, 9) for i in range(4)]
    for i, rel in enumerate(parts):
        got = read_entry(ck, rel, False)
        assert got is not None and dict(got["set"]) == {k: v for k, v in expected.items() if partition_of(k, 4) == i}


def test_the_sweep_deletes_partition_files_no_commit_names(tmp_path: Path) -> None:
    ck = Checkpoint(str(tmp_path))
    kept = _write_parts(ck, "op", 1000, "delta", {f"k{i}": i for i in range(10)}, 2, 1)
    orphan = _write_parts(ck, "op", 2000, "delta", {f"k{i}": i for i in range(10)}, 2, 1)  # a fenced owner's, or a crash's
    (tmp_path / "state" / "op" / "notes.txt").write_text("not ours")
    rec = CommitRecord(1, {"type": "commit", "batch_time": 1000, "state": {"op": {"snapshot": None, "snapshot_time": 0, "deltas": [{"t": 1000, "parts": kept}]}}})
    Retention(ck, 2).sweep(rec, None, set())
    left = set(ck.storage.list("state/op"))
    assert {p.rsplit("/", 1)[1] for p in kept if p} <= left
    assert not {p.rsplit("/", 1)[1] for p in orphan if p} & left
    assert "notes.txt" in left
