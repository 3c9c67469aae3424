"""One driver per checkpoint: a second driver is refused; a driver that lost its claim cannot commit."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

import pytest
from _ckpt_jobs import rate_job, run_until, totals_after, wait_for

import streamkeep as sk
from streamkeep.checkpoint import Checkpoint, log_path
from streamkeep.checkpoint._checkpoint import _Owner
from streamkeep.errors import CheckpointInUseError
from streamkeep.sinks.base import FencingToken
from streamkeep.sinks.files import FileSink
from streamkeep.testing import ListSink, ManualClock


def _stall(ck: Checkpoint) -> None:
    """Freeze `ck`'s driver as a long pause would: no more heartbeats, and (local) its lock gone."""
    me = ck._owner
    assert me is not None
    me.stop.set()
    if me.thread is not None:
        me.thread.join()
    if me.lock_fd is not None:  # as on a filesystem whose locks did not hold (NFS): only fencing is left
        os.close(me.lock_fd)
        me.lock_fd = None


def test_second_context_in_the_same_process_is_refused(tmp_path: Path) -> None:
    url = str(tmp_path / "ckpt")
    first = sk.StreamingContext.get_or_create(url, rate_job(url, ListSink()))
    try:
        first.run(max_batches=2)
        with pytest.raises(CheckpointInUseError, match=rf"in use by another driver: pid {os.getpid()}"):
            sk.StreamingContext.get_or_create(url, rate_job(url, ListSink()))
    finally:
        first.stop()
    sink = ListSink()
    run_until(url, rate_job(url, sink), 3)  # free again once the first one stopped
    assert sorted(sink.batches[-1][1]) == totals_after(3)


def test_second_process_is_refused(tmp_path: Path) -> None:
    url = str(tmp_path / "ckpt")
    here = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # tests/, home of _ckpt_jobs
    code = textwrap.dedent(f"""
        import sys
        sys.path.insert(0, {here!r})
        import streamkeep as sk
        from _ckpt_jobs import rate_job
        from streamkeep.errors import CheckpointInUseError
        from streamkeep.testing import ListSink
        try:
            sk.StreamingContext.get_or_create({url!r}, rate_job({url!r}, ListSink()))
        except CheckpointInUseError as exc:
            print("IN USE:", exc)
            sys.exit(3)
        sys.exit(0)
    """)
    first = sk.StreamingContext.get_or_create(url, rate_job(url, ListSink()))
    try:
        first.run(max_batches=1)
        r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
        assert r.returncode == 3, r.stdout + r.stderr
        assert f"pid {os.getpid()}" in r.stdout and "stop the other driver" in r.stdout
        assert "?" not in r.stdout.split("IN USE:", 1)[1], r.stdout  # real values, no placeholders
    finally:
        first.stop()
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stdout + r.stderr


def _claimed(url: str, **kw: Any) -> Checkpoint:
    ck = Checkpoint(url, **kw)
    ck.claim("test", "0")
    return ck


def test_driver_that_lost_its_claim_cannot_commit_local(tmp_path: Path) -> None:
    url = str(tmp_path / "ckpt")
    a = _claimed(url)
    a.commit({"batch_time": 1000})
    _stall(a)
    b = _claimed(url)  # takes over
    with pytest.raises(CheckpointInUseError, match=r"lost its claim.*batch 2000"):
        a.commit({"batch_time": 2000})
    b.commit({"batch_time": 2000})
    a.release()
    b.release()
    kinds = [(r.kind, r.data.get("batch_time"), r.data["epoch"]) for r in Checkpoint(url).records(newest_first=False)]
    assert kinds == [("claim", None, 1), ("commit", 1000, 1), ("claim", None, 2), ("commit", 2000, 2)]


def test_lost_claim_names_the_other_driver_after_its_claim_record_was_retained_away(tmp_path: Path) -> None:
    url = str(tmp_path / "ckpt")
    a = _claimed(url)
    a.commit({"batch_time": 1000, "zero_ms": 0})
    _stall(a)
    b = _claimed(url)
    b.commit({"batch_time": 2000, "zero_ms": 0})
    b.commit({"batch_time": 3000, "zero_ms": 0})
    Path(url, "log", "000000000003.rec").unlink()  # B's claim, as B's retention deletes it
    with pytest.raises(CheckpointInUseError, match=r"lost its claim") as info:
        a.commit({"batch_time": 2000, "zero_ms": 0})
    assert "?" not in str(info.value) and f"pid {os.getpid()}" in str(info.value) and "epoch 2" in str(info.value)
    a.release()
    b.release()


@pytest.mark.integration
def test_driver_that_lost_its_claim_cannot_commit_s3(s3_server: Any, s3_url: str) -> None:
    opts = s3_server.storage_options
    a = _claimed(s3_url, storage_options=opts, lease_timeout_s=0.6)
    a.commit({"batch_time": 1000})
    with pytest.raises(CheckpointInUseError, match="last heartbeat"):  # A's lease is fresh (judged with a long timeout:
        _claimed(s3_url, storage_options=opts, lease_timeout_s=30)  # a loaded machine may delay A's heartbeats past 0.6 s)
    _stall(a)
    time.sleep(0.7)  # let A's lease expire (the lease rule is time-based by definition)
    b = _claimed(s3_url, storage_options=opts, lease_timeout_s=0.6)
    with pytest.raises(CheckpointInUseError, match="lost its claim"):
        a.commit({"batch_time": 2000})
    b.commit({"batch_time": 2000})
    a.release()  # the loser must not mark B's lease released ...
    with pytest.raises(CheckpointInUseError):  # ... so a third driver is still refused while B is alive
        _claimed(s3_url, storage_options=opts, lease_timeout_s=30)
    b.release()
    assert [r.data.get("batch_time") for r in Checkpoint(s3_url, storage_options=opts).commits()] == [2000, 1000]


@pytest.mark.integration
def test_a_paused_driver_waking_up_leaves_the_new_owners_lease_alone_s3(s3_server: Any, s3_url: str) -> None:
    """Its ownership check sees the newer epoch in the lease and stops before renewing it.

    Had it written its lease (its own epoch and pid) before finding the new claim in the log, a driver
    started once its process ended would take the live new owner's checkpoint at once (a dead pid on this host).
    """
    opts = s3_server.storage_options
    a = _claimed(s3_url, storage_options=opts, lease_timeout_s=0.6)
    a.commit({"batch_time": 1000})
    _stall(a)
    wait_for(lambda: _lease_age_s(s3_url, opts) > 0.6, 10, "the paused driver's lease to expire")
    b = _claimed(s3_url, storage_options=opts, lease_timeout_s=0.6)
    _stall(b)  # no heartbeat of B rewrites the lease during the check below
    with pytest.raises(CheckpointInUseError, match="lost its claim"):
        a.ensure_owner("the outputs of batch 2000 ms")
    lease = Checkpoint(s3_url, storage_options=opts).read("lease", "lease")
    assert lease["epoch"] == b.fencing()[1], f"the paused driver overwrote the new owner's lease: {lease}"
    a.release()
    b.release()


@pytest.mark.integration
def test_stalled_context_is_fenced_and_the_new_driver_continues_s3(s3_server: Any, s3_url: str) -> None:
    opts = s3_server.storage_options
    sink_a, sink_b = ListSink(), ListSink()
    a = sk.StreamingContext.get_or_create(s3_url, rate_job(s3_url, sink_a, lease_timeout_s=0.6), storage_options=opts)
    try:
        a.run(max_batches=2)
        _stall(a._scheduler.ckpt)  # type: ignore[union-attr]
        wait_for(lambda: _lease_age_s(s3_url, opts) > 0.6, 10, "the stalled driver's lease to expire")
        b = sk.StreamingContext.get_or_create(s3_url, rate_job(s3_url, sink_b, lease_timeout_s=0.6), storage_options=opts)
        with pytest.raises(CheckpointInUseError, match="lost its claim"):
            a.run(max_batches=1)
    finally:
        a.stop()
    try:
        b.run(max_batches=2)
    finally:
        b.stop()
    assert [t for t, _ in sink_b.batches] == [3000, 4000]
    assert sorted(sink_b.batches[-1][1]) == totals_after(4)


def _lease_age_s(url: str, opts: dict[str, Any]) -> float:
    lease = Checkpoint(url, storage_options=opts).read("lease", "lease")
    return (time.time() * 1000 - lease["heartbeat_ms"]) / 1000


def _queue_job(url: str, tag: str, sink: ListSink) -> Any:
    """5000 distinct keys per batch (deltas get files of their own); `tag` makes each driver's input differ."""

    def setup() -> sk.StreamingContext:
        ssc = sk.StreamingContext(1.0, checkpoint=url, clock=ManualClock(), keep_commits=2)
        items = [[(f"{tag if i >= 2 else 'x'}{i}-{k}", 1) for k in range(5000)] for i in range(8)]
        ssc.queue_stream(items, name="q").update_state_by_key(lambda new, old: (old or 0) + sum(new), name="counts").foreach_batch(
            lambda t, b: sink.write(int(t.timestamp() * 1000), sorted({k.split("-")[0] for k, _ in b.collect()}))
        )
        return ssc

    return setup


def test_a_fenced_driver_cannot_overwrite_the_new_owners_files(tmp_path: Path) -> None:
    """A stalled driver that wakes up after a takeover must not clobber plans, blobs or state files."""
    url = str(tmp_path / "ckpt")
    a = sk.StreamingContext.get_or_create(url, _queue_job(url, "a", ListSink()))
    try:
        a.run(max_batches=2)
        _stall(a._scheduler.ckpt)  # type: ignore[union-attr]
        b = sk.StreamingContext.get_or_create(url, _queue_job(url, "b", ListSink()))
        try:
            b.run(max_batches=2)  # batches 3000 and 4000, committed by B
        finally:
            b.stop()
        with pytest.raises(CheckpointInUseError):
            a.run(max_batches=1)  # A wakes up and tries batch 3000 again, with its own input
    finally:
        a.stop()
    sink = ListSink()
    run_until(url, _queue_job(url, "b", sink), 5)
    assert sink.batches[-1][1] == ["b2", "b3", "b4", "x0", "x1"]  # nothing of A's batch 3000 got in


def test_the_owner_continues_after_a_fenced_driver_wrote_first(tmp_path: Path) -> None:
    """The stalled driver wakes up before the new owner runs: it is fenced, and the owner's files win."""
    url = str(tmp_path / "ckpt")
    a = sk.StreamingContext.get_or_create(url, _queue_job(url, "a", ListSink()))
    try:
        a.run(max_batches=2)
        _stall(a._scheduler.ckpt)  # type: ignore[union-attr]
        sink_b = ListSink()
        b = sk.StreamingContext.get_or_create(url, _queue_job(url, "b", sink_b))
        try:
            with pytest.raises(CheckpointInUseError, match="lost its claim"):
                a.run(max_batches=1)  # plans and runs batch 3000 with its own input, then cannot commit
            b.run(max_batches=2)
        finally:
            b.stop()
    finally:
        a.stop()
    assert [t for t, _ in sink_b.batches] == [3000, 4000]
    assert sink_b.batches[-1][1] == ["b2", "b3", "x0", "x1"]
    sink = ListSink()
    run_until(url, _queue_job(url, "b", sink), 5)
    assert sink.batches[-1][1] == ["b2", "b3", "b4", "x0", "x1"]


# -- each fencing check of Checkpoint.commit, on local disk and on S3 (issue 17.1) -----------------


@pytest.fixture(params=["local", pytest.param("s3", marks=pytest.mark.integration)])
def where(request: pytest.FixtureRequest, tmp_path: Path) -> tuple[str, dict[str, Any]]:
    """(url, Checkpoint kwargs) on a local disk or on the moto S3 server."""
    if request.param == "local":
        return str(tmp_path / "ckpt"), {"lease_timeout_s": 0.6}
    server = request.getfixturevalue("s3_server")
    return request.getfixturevalue("s3_url"), {"storage_options": server.storage_options, "lease_timeout_s": 0.6}


def _takeover(url: str, kw: dict[str, Any], a: Checkpoint) -> Checkpoint:
    """B claims after A stalled (lock gone on local disks; lease expired elsewhere)."""
    _stall(a)
    wait_for(lambda: _lease_age_s(url, kw.get("storage_options") or {}) > 0.6, 10, "A's lease to expire")
    return _claimed(url, **kw)


def test_commit_is_fenced_by_the_log_listing_after_retention_deleted_the_new_claim(where: tuple[str, dict[str, Any]]) -> None:
    """`last_seq() >= seq`: B's claim record (at A's next sequence number) was deleted by B's retention."""
    url, kw = where
    a = _claimed(url, **kw)
    a.commit({"batch_time": 1000})  # A: claim 1, commit 2
    b = _takeover(url, kw, a)  # B: claim 3
    b.commit({"batch_time": 2000})  # 4
    b.commit({"batch_time": 3000})  # 5
    b.delete(log_path(3))  # B's retention drops log records older than its retained commits: seq 3 is free again
    with pytest.raises(CheckpointInUseError, match=r"lost its claim.*batch 4000"):
        a.commit({"batch_time": 4000})
    a.release()
    b.release()
    assert [r.data.get("batch_time") for r in Checkpoint(url, **kw).commits()] == [3000, 2000, 1000]


def test_a_claim_after_the_log_records_were_lost_still_fences_the_previous_owners_sinks(where: tuple[str, dict[str, Any]], tmp_path: Path) -> None:
    """Epochs never go back: with A's log records gone, B's epoch still comes after A's (from A's lease).

    Else B would get A's epoch again, and A (paused, not dead) would pass every sink's fence.
    """
    url, kw = where
    a = _claimed(url, **kw)
    a.commit({"batch_time": 1000})
    for seq in a.log_seqs():  # the log records are lost (deleted by hand, a restore from an old copy, ...)
        a.delete(log_path(seq))
    b = _takeover(url, kw, a)
    out = tmp_path / "out"
    sink_a, sink_b = FileSink(out, name="out"), FileSink(out, name="out")
    sink_a.set_fencing_token(FencingToken(*a.fencing()))
    sink_b.set_fencing_token(FencingToken(*b.fencing()))
    try:
        sink_a.open()
        sink_b.open()
        sink_b.write(2000, ["b"])
        with pytest.raises(CheckpointInUseError, match="lost the checkpoint"):
            sink_a.write(2000, ["zombie"])
    finally:
        sink_a.close()
        sink_b.close()
        a.release()
        b.release()
    assert Path(sink_b.path_for(2000)).read_text() == "b\n"


def test_commit_is_fenced_by_create_if_absent_when_the_listing_raced(where: tuple[str, dict[str, Any]], monkeypatch: Any) -> None:
    """create-if-absent: B's claim appeared after A listed the log (A's listing is stale)."""
    url, kw = where
    a = _claimed(url, **kw)
    a.commit({"batch_time": 1000})
    b = _takeover(url, kw, a)  # B's claim is record 3, A's next number
    monkeypatch.setattr(a, "last_seq", lambda: 2)  # the log as A listed it, an instant before B's claim landed
    with pytest.raises(CheckpointInUseError, match=r"lost its claim.*batch 2000"):
        a.commit({"batch_time": 2000})
    b.commit({"batch_time": 2000})
    a.release()
    b.release()
    kinds = [(r.kind, r.data["epoch"]) for r in Checkpoint(url, **kw).records(newest_first=False)]
    assert kinds == [("claim", 1), ("commit", 1), ("claim", 2), ("commit", 2)]  # B's claim was not overwritten


def test_commit_is_fenced_when_the_heartbeat_saw_a_newer_owner(where: tuple[str, dict[str, Any]]) -> None:
    """`me.lost`: the lease shows a newer epoch, whose claim record is not (yet) in A's view of the log.

    (E.g. a listing that lags behind, or a claim still in flight.) The heartbeat marks A lost;
    A must not commit even though the log looks free at its next sequence number.
    """
    url, kw = where
    a = _claimed(url, **kw)
    a.commit({"batch_time": 1000})
    newer = Checkpoint(url, **kw)
    newer._owner = _Owner(epoch=2)
    newer._write_lease()  # what B writes right after its claim record
    wait_for(lambda: a._owner is not None and a._owner.lost, 10, "A's heartbeat to see the newer lease")
    with pytest.raises(CheckpointInUseError, match=r"lost its claim.*batch 2000"):
        a.commit({"batch_time": 2000})
    with pytest.raises(CheckpointInUseError, match="before planning"):
        a.ensure_owner("planning batch 2000 ms")
    newer._owner = None
    a.release()
    assert [r.data.get("batch_time") for r in Checkpoint(url, **kw).commits()] == [1000]


# -- ownership before side effects (issue 10.1) --------------------------------------------------


@pytest.mark.integration
def test_a_stalled_driver_fails_its_ownership_check_after_a_takeover_s3(s3_server: Any, s3_url: str) -> None:
    opts = s3_server.storage_options
    a = _claimed(s3_url, storage_options=opts, lease_timeout_s=0.6)
    a.ensure_owner("x")  # fresh lease: no storage round trip needed
    _stall(a)
    wait_for(lambda: _lease_age_s(s3_url, opts) > 0.6, 10, "A's lease to expire")
    b = _claimed(s3_url, storage_options=opts, lease_timeout_s=0.6)
    with pytest.raises(CheckpointInUseError, match=r"epoch 1\) lost its claim.*epoch 2, pid .*before the outputs of batch 3000 ms"):
        a.ensure_owner("the outputs of batch 3000 ms")
    b.ensure_owner("y")
    a.release()
    b.release()


@pytest.mark.integration
def test_a_driver_whose_lease_lapsed_without_a_takeover_continues_s3(s3_server: Any, s3_url: str) -> None:
    """A pause past the lease with nobody taking over: the re-check of the log lets the driver go on."""
    opts = s3_server.storage_options
    a = _claimed(s3_url, storage_options=opts, lease_timeout_s=0.6)
    me = a._owner
    assert me is not None
    _stall(a)
    wait_for(lambda: time.monotonic() > me.valid_until, 10, "A's proof of ownership to run out")
    lapsed = me.valid_until
    a.ensure_owner("planning batch 2000 ms")  # renews the lease and re-reads the log
    # a new proof from the renewal (not compared with the clock: on a loaded machine the renewal's
    # S3 round trips may themselves outlast the 0.45 s proof)
    assert me.valid_until > lapsed and not me.lost
    a.commit({"batch_time": 2000})
    a.release()


@pytest.mark.integration
def test_two_drivers_claiming_at_the_same_instant_never_both_pass_the_ownership_check_s3(s3_server: Any, s3_url: str) -> None:
    """B claims completely between A's lease check and A's claim record: A's claim returns only
    once B can no longer prove ownership, and B's next check fails."""
    opts = s3_server.storage_options
    a = Checkpoint(s3_url, storage_options=opts, lease_timeout_s=0.6)
    b = Checkpoint(s3_url, storage_options=opts, lease_timeout_s=0.6)
    real_check = a._check_lease

    def check_then_b_claims() -> Any:
        seen = real_check()  # A finds no lease ...
        b.claim("b", "0")  # ... and B claims completely before A appends its claim record
        b.ensure_owner("the first plan")
        return seen

    a._check_lease = check_then_b_claims  # type: ignore[method-assign]
    a.claim("a", "0")
    with pytest.raises(CheckpointInUseError, match="lost its claim"):
        b.ensure_owner("the outputs of batch 1000 ms")  # without A's wait, B would still pass here
    a.ensure_owner("the outputs of batch 1000 ms")
    a.release()
    b.release()


@pytest.mark.integration
def test_the_later_claim_loses_when_the_earlier_claimer_already_checked_the_log_s3(s3_server: Any, s3_url: str) -> None:
    """A claims first but B's claim record lands before A re-reads the log: A loses at once, at claim."""
    opts = s3_server.storage_options
    a = Checkpoint(s3_url, storage_options=opts, lease_timeout_s=0.6)
    b = Checkpoint(s3_url, storage_options=opts, lease_timeout_s=0.6)
    real_write = a._write_lease
    calls = []

    def b_claims_before_a_writes_its_lease(released: bool = False) -> None:
        if not calls:
            calls.append(1)
            b.claim("b", "0")  # B found no lease either; its claim record follows A's
        real_write(released)

    a._write_lease = b_claims_before_a_writes_its_lease  # type: ignore[method-assign]
    with pytest.raises(CheckpointInUseError, match="lost its claim.*before starting"):
        a.claim("a", "0")
    b.ensure_owner("the first plan")
    b.release()


@pytest.mark.parametrize("layout", ["plan log", "plan files"])
def test_a_driver_refused_a_file_it_did_not_write_stays_fenced(tmp_path: Path, layout: str) -> None:
    """When _create finds another driver's file after a takeover, this driver is marked lost:
    its next ownership check fails at once, even on a local disk where it still holds the flock."""
    from streamkeep.checkpoint import Checkpoint, log_path, plan_log_path, plan_path

    url = str(tmp_path / "ckpt")
    a = Checkpoint(url)
    a.claim(owner="a", engine_version="test")
    try:
        a.ensure_owner("before the takeover")  # the flock proves it
        seq = a.last_seq() + 1  # another driver's claim after A's, and its plan of batch 5000
        rec = {"type": "claim", "epoch": 99, "owner": "b", "host": "elsewhere", "pid": 1, "time_ms": 0}
        assert a.storage.create(log_path(seq), a.encode("record", rec, rel=log_path(seq)))
        a.plan_log = layout == "plan log"
        rel = plan_log_path(5000) if a.plan_log else plan_path(5000)  # where A's plan of batch 5000 would go
        assert a.storage.create(rel, a.encode("plan", {"batch_time": 5000}, rel=rel))
        with pytest.raises(CheckpointInUseError):
            a.write_plan(5000, {"batch_time": 5000, "sources": {}, "positions": {}})
        with pytest.raises(CheckpointInUseError):
            a.ensure_owner("the outputs of batch 5000")
    finally:
        a.release()


def _lease(url: str, kw: dict[str, Any]) -> dict[str, Any]:
    return dict(Checkpoint(url, storage_options=kw.get("storage_options")).read("lease", "lease"))


def test_a_driver_taken_over_unawares_does_not_mark_the_new_owners_lease_released(where: tuple[str, dict[str, Any]]) -> None:
    url, kw = where
    a = _claimed(url, **kw)
    a.commit({"batch_time": 1000})
    _stall(a)
    if "storage_options" in kw:
        time.sleep(0.7)  # let A's lease expire (the lease rule is time-based by definition)
    b = _claimed(url, **kw)
    a.release()  # A never checked again (as a script's exit after a long pause): it does not know it lost
    lease = _lease(url, kw)
    assert (lease["epoch"], lease["released"]) == (2, False), f"the paused driver's release overwrote the owner's lease: {lease}"
    b.release()
    lease = _lease(url, kw)
    assert (lease["epoch"], lease["released"]) == (2, True)


def test_releasing_a_checkpoint_deleted_meanwhile_does_not_recreate_it(where: tuple[str, dict[str, Any]]) -> None:
    url, kw = where
    a = _claimed(url, **kw)
    a.commit({"batch_time": 1000})
    _stall(a)  # no heartbeat between the removal and the release
    a.storage.fs.rm(a.storage.root, recursive=True)  # as a test's temporary directory removed before the exit
    a.release()
    gone = Checkpoint(url, storage_options=kw.get("storage_options")).storage
    assert not gone.exists("lease") and not gone.list(""), "the release wrote the lease of a deleted checkpoint"
