"""RayExecutor checkpoints written by the partition owners: each actor writes its own state files.

The driver only writes the commit record naming every partition's file; retention deletes
them with their commit; `streamkeep checkpoint verify/inspect` read them; the checkpoint
restores on the local executor and back; a checkpoint storage the actors cannot see is
refused at start. All Ray tests share the session's Ray (``ray_address``).
"""

from __future__ import annotations

import json
import operator
import os
from typing import Any

import pytest
from _ckpt_jobs import canon_state as _canon

import streamkeep as sk
from streamkeep.checkpoint import Checkpoint
from streamkeep.checkpoint._checkpoint import parse_state_name
from streamkeep.cli import main
from streamkeep.errors import ConfigError
from streamkeep.testing import ListSink, ManualClock, state_of

pytestmark = pytest.mark.ray

PARTITIONED = ("totals", "win")  # keyed operators: split over the actors
BATCHES = 7


def _update(values, old):
    total = (old or 0) + sum(values)
    return None if total % 13 == 0 else total


def _job(ckpt, executor, sink, *, storage_options=None, keep_commits=2):
    def build():
        ssc = sk.StreamingContext(
            1.0,
            checkpoint=ckpt,
            storage_options=storage_options,
            clock=ManualClock(),
            snapshot_every=3,
            inline_delta_bytes=0,  # every delta is a file (none rides in the commit record)
            keep_commits=keep_commits,
            executor=executor,
        )
        pairs = ssc.rate_stream(40, name="rate").map(lambda r: (f"k{r[0] % 23}", 1))
        pairs.update_state_by_key(_update, name="totals").write_to(sink)
        pairs.reduce_by_key_and_window(operator.add, 3.0, 1.0, inv_f=operator.sub, name="win").write_to(ListSink("w"))
        pairs.window(2.0, name="recent").foreach_batch(lambda b: None)  # not keyed: its state stays in the driver
        return ssc

    return build


def _run(ckpt, executor, batches, **kw):
    sink = ListSink("totals")
    ssc = sk.StreamingContext.get_or_create(ckpt, _job(ckpt, executor, sink, **kw), storage_options=kw.get("storage_options"))
    ssc.run(batches)
    states = {op: state_of(ssc, op) for op in PARTITIONED}
    ssc.stop()
    return sink, states


def _batches(sink):
    return [(t, sorted(rs, key=repr)) for t, rs in sink.batches]


def _state_files(ckpt: Checkpoint, op: str) -> set[str]:
    return {f"state/{op}/{n}" for n in ckpt.storage.list(f"state/{op}")}


def test_the_actors_write_every_partitioned_state_file_and_the_driver_none(tmp_path, ray_address, monkeypatch):
    driver_writes: list[str] = []
    real = Checkpoint.write_state

    def spy(self, op, batch_time, kind, payload, codec, *version):
        driver_writes.append(op)
        return real(self, op, batch_time, kind, payload, codec, *version)

    monkeypatch.setattr(Checkpoint, "write_state", spy)  # this (driver) process only: the actors are other processes
    ckpt = str(tmp_path / "ckpt")
    ex = sk.executors.RayExecutor(num_partitions=3)
    sink, states = _run(ckpt, ex, BATCHES)
    monkeypatch.undo()
    assert not [op for op in driver_writes if op in PARTITIONED], driver_writes
    assert "recent" in driver_writes  # the driver still writes the state it holds (a check that the spy sees writes)

    c = Checkpoint(ckpt)
    last = c.commits()[0]
    files = last.files()
    for op in PARTITIONED:
        parts = [parse_state_name(f.rsplit("/", 1)[1]) for f in files if f.startswith(f"state/{op}/")]
        assert {(p[2], p[3]) for p in parts if p[1] == "snap"} == {(0, 3), (1, 3), (2, 3)}, (op, parts)  # a snapshot file per partition
        assert {(p[2], p[3]) for p in parts if p[1] == "delta"} == {(0, 3), (1, 3), (2, 3)}, (op, parts)  # and its deltas since
        assert {p[4] for p in parts} == {last.data["epoch"]}  # named for the claim epoch of the driver that committed them
        assert all(f in _state_files(c, op) for f in files if f.startswith(f"state/{op}/"))
    ref, ref_states = _run(str(tmp_path / "ref"), "local", BATCHES)
    assert _batches(sink) == _batches(ref)
    assert _canon(states) == _canon(ref_states)


def test_rescale_4_2_local_3_from_owner_written_files_read_by_the_actors(tmp_path, ray_address, monkeypatch):
    driver_reads: list[str] = []
    real = Checkpoint.read_state

    def spy(self, rel, allow_pickle):
        driver_reads.append(rel.split("/")[1])
        return real(self, rel, allow_pickle)

    monkeypatch.setattr(Checkpoint, "read_state", spy)  # this (driver) process only
    ref_sink, ref_states = _run(str(tmp_path / "ref"), "local", 12)
    ckpt = str(tmp_path / "ckpt")
    outputs = []
    runs = (("ray", 4, 3), ("ray", 2, 3), ("local", None, 3), ("ray", 3, 3))
    for i, (kind, parts, n) in enumerate(runs):
        driver_reads.clear()
        sink, states = _run(ckpt, sk.executors.RayExecutor(num_partitions=parts) if kind == "ray" else "local", n)
        outputs.extend(_batches(sink))
        if i > 0:
            read = {op for op in driver_reads if op in PARTITIONED}
            # on Ray the actors read their keys' files (another partition count, or the local executor's whole files)
            assert read == (set(PARTITIONED) if kind == "local" else set()), (kind, parts, driver_reads)
    assert outputs == _batches(ref_sink)
    assert _canon(states) == _canon(ref_states)


def test_retention_deletes_old_partition_files_with_their_commit(tmp_path, ray_address):
    ckpt = str(tmp_path / "ckpt")
    _run(ckpt, sk.executors.RayExecutor(num_partitions=2), 10, keep_commits=2)
    c = Checkpoint(ckpt)
    kept = set().union(*(r.files() for r in c.commits()))
    for op in PARTITIONED:
        on_disk = _state_files(c, op)
        needed = {f for f in kept if f.startswith(f"state/{op}/")}
        assert needed <= on_disk, (op, sorted(needed - on_disk))
        # Besides what the commits need, at most the last snapshot, written but not yet adopted when the job stopped
        # (the batch loop does not wait for it; commits are written in the background, so the loop is ahead of it).
        extra = on_disk - needed
        assert all(f.endswith(".snap") for f in extra) and len({parse_state_name(f.rsplit("/", 1)[1])[0] for f in extra}) <= 1, (op, sorted(extra))
        times = {parse_state_name(f.rsplit("/", 1)[1])[0] for f in on_disk}
        assert min(times) >= 6000  # the first batches' files went with their commits (snapshots at 3, 6, 9 s)
        assert any(".p1of2." in f for f in on_disk)


def test_checkpoint_verify_and_inspect_read_a_ray_checkpoint(tmp_path, ray_address, capsys):
    ckpt = str(tmp_path / "ckpt")
    _, states = _run(ckpt, sk.executors.RayExecutor(num_partitions=2), 5)
    assert main(["checkpoint", "verify", ckpt]) == 0, capsys.readouterr().out
    capsys.readouterr()
    assert main(["checkpoint", "inspect", ckpt, "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["operators"]["totals"]["keys"] == len(states["totals"]["set"]) == 23
    assert info["operators"]["totals"]["partitions"] == [2]
    # a damaged partition file is found and named
    c = Checkpoint(ckpt)
    victim = sorted(f for f in c.commits()[0].files() if ".p1of2." in f)[0]
    data = bytearray(c.storage.read(victim))
    data[-6] ^= 0xFF
    c.storage.write(victim, bytes(data))
    assert main(["checkpoint", "verify", ckpt]) == 1
    assert victim in capsys.readouterr().out


@pytest.mark.integration
def test_a_ray_checkpoint_on_s3_restores_on_the_local_executor(s3_server: Any, s3_url: str, tmp_path, ray_address):
    opts = s3_server.storage_options
    sink1, _ = _run(s3_url, sk.executors.RayExecutor(num_partitions=2), 4, storage_options=opts)
    c = Checkpoint(s3_url, storage_options=opts)
    files = c.commits()[0].files()
    assert any(".p0of2." in f for f in files) and any(".p1of2." in f for f in files)
    assert all(c.storage.exists(f) for f in files)
    sink2, states = _run(s3_url, "local", 4, storage_options=opts)
    ref, ref_states = _run(str(tmp_path / "ref"), "local", 8)
    assert _batches(sink1) + _batches(sink2) == _batches(ref)
    assert _canon(states) == _canon(ref_states)


def test_a_checkpoint_storage_the_actors_cannot_see_is_refused_at_start(ray_address):
    fsspec = pytest.importorskip("fsspec")
    url = f"memory://streamkeep-not-shared-{os.getpid()}"  # in the driver's memory: each actor process has its own
    sink = ListSink("totals")
    with pytest.raises(ConfigError, match=r"checkpoint storage at memory://\S+ is not visible from Ray node 127\.0\.0\.1.*s3://"):
        ssc = sk.StreamingContext.get_or_create(url, _job(url, sk.executors.RayExecutor(num_partitions=2), sink))
        try:
            ssc.run(2)
        finally:
            ssc.stop()
    fs = fsspec.filesystem("memory")
    root = url.split("://", 1)[1]
    written = [p for p in fs.find(f"/{root}") if "/state/" in p or "/plans/" in p]
    assert not written and not sink.batches  # refused before any batch ran or any state was written


def test_files_the_actors_of_a_fenced_driver_write_never_reach_the_new_owner(tmp_path, ray_address):
    """A fenced driver's actors keep writing (here: after the new owner committed the same batches): nothing of it is read."""
    ckpt = str(tmp_path / "ckpt")
    sink1, _ = _run(ckpt, sk.executors.RayExecutor(num_partitions=2), 3)
    old_epoch = Checkpoint(ckpt).commits()[0].data["epoch"]
    sink2, _ = _run(ckpt, sk.executors.RayExecutor(num_partitions=2), 3)  # the next owner (a higher epoch)
    c = Checkpoint(ckpt)
    live = c.commits()[0]
    assert live.data["epoch"] > old_epoch
    # The old owner's actors, still running a batch, write their files for every batch the new owner wrote: well-framed,
    # checksummed, and wrong (a huge count for every key).
    from streamkeep.codec import encode_items, get_codec

    codec = get_codec("msgpack")
    forged = []
    for f in live.files():
        name = parse_state_name(f.rsplit("/", 1)[1])
        if name is None or name[3] == 1:
            continue
        t, kind, part, count, _ = name
        op = f.split("/")[1]
        data = {"set": encode_items(codec, [(f"k{i}", 10**9) for i in range(23)]), "del": []}
        if op == "win":
            data = {"add": [[t, [(f"k{i}", 10**9) for i in range(23)]]], "drop": [], "set": data["set"], "del": []}
        forged.append(c.write_part(op, t, kind, codec.encode(data), "msgpack", part, count, old_epoch))
    assert forged and not set(forged) & live.files()  # other names than the new owner's: nothing of it was replaced
    sink3, states = _run(ckpt, sk.executors.RayExecutor(num_partitions=2), 2)
    ref, ref_states = _run(str(tmp_path / "ref"), "local", 8)
    assert _batches(sink1) + _batches(sink2) + _batches(sink3) == _batches(ref)
    assert _canon(states) == _canon(ref_states)
    assert not [f for f in forged if c.storage.exists(f)]  # and the next start swept them: no commit names them


def test_a_stop_commits_the_partition_snapshots_it_waited_for(tmp_path, ray_address):
    """Batch 3 starts the owners' compaction; the stop waits for it and commits batch 3 again, naming their files."""
    ckpt = str(tmp_path / "ckpt")
    sink, _ = _run(ckpt, sk.executors.RayExecutor(num_partitions=2), 3)
    last = Checkpoint(ckpt).commits()[0]
    assert last.batch_time == 3000
    for op in PARTITIONED:
        chain = last.data["state"][op]
        assert chain["snapshot_time"] == 3000 and chain["deltas"] == [], (op, chain)
        assert len(chain["snapshot"]) == 2 and all(".p" in p for p in chain["snapshot"]), (op, chain)  # a file per partition
    more, states = _run(ckpt, sk.executors.RayExecutor(num_partitions=2), 3)
    ref, ref_states = _run(str(tmp_path / "ref"), "local", 6)
    assert _batches(sink) + _batches(more) == _batches(ref)
    assert _canon(states) == _canon(ref_states)
