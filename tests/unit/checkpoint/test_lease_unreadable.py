"""A lease the storage cannot read (an S3 500, a timeout) or a damaged one is not "no lease".

Found in review: `_read_lease` turned every error into None, so a claimer whose lease reads failed saw "no lease"
twice (None == None), did not wait one lease, and got a proof of ownership at once while the owner's proof still
held: both drivers passed `ensure_owner`. Also: the owner's heartbeat kept writing its lease over a claimer's at
every beat once a claim record followed its own, until its main thread noticed.
"""

from __future__ import annotations

import types
from typing import Any

import pytest

from streamkeep.checkpoint import Checkpoint
from streamkeep.checkpoint import _checkpoint as checkpoint_module
from streamkeep.errors import CheckpointError, CheckpointInUseError

pytestmark = pytest.mark.integration


def _fake_clock(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    now = [1000.0]

    def sleep(s: float) -> None:
        now[0] += s  # a claimer's wait passes on the fake clock, at once

    # The checkpoint module's clock only (the heartbeat threads wait 20 s of real time: they do not beat here).
    clock = types.SimpleNamespace(monotonic=lambda: now[0], sleep=sleep, time=checkpoint_module.time.time)
    monkeypatch.setattr(checkpoint_module, "time", clock)
    return now


def _fail_lease_reads(cp: Checkpoint, failing: list[bool]) -> None:
    """While `failing` is non-empty, `cp`'s reads of the lease fail as an S3 500 would."""
    real_read = cp.storage.read

    def read(rel: str) -> bytes:
        if rel == "lease" and failing:
            exc = OSError("500 Internal Server Error")
            raise cp.storage._err("read", rel, exc) from exc
        return real_read(rel)

    cp.storage.read = read  # type: ignore[method-assign]


def test_a_claimer_that_cannot_read_a_live_owners_lease_does_not_claim_s3(
    s3_server: Any, s3_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    _fake_clock(monkeypatch)
    opts = s3_server.storage_options
    b = Checkpoint(s3_url, storage_options=opts, lease_timeout_s=60)
    a = Checkpoint(s3_url, storage_options=opts, lease_timeout_s=60)
    b.claim("b", "0")
    _fail_lease_reads(a, [True])
    try:
        with pytest.raises(CheckpointError, match="could not read its lease") as info:
            a.claim("a", "0")  # before the fix: claimed at once, both drivers then passed ensure_owner
        assert not isinstance(info.value, CheckpointInUseError) and "Retry" in str(info.value)
        b.ensure_owner("the outputs of batch 1000 ms")  # the owner goes on
        assert a._owner is None
    finally:
        a.release()
        b.release()


def test_a_lease_unreadable_after_the_claim_record_makes_the_claimer_wait_one_lease_s3(
    s3_server: Any, s3_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A finds no lease; B claims completely before A's claim record; A's second lease read fails. A must wait one
    lease (as when the lease changed), so B's proof runs out and only A passes the ownership check."""
    now = _fake_clock(monkeypatch)
    opts = s3_server.storage_options
    a = Checkpoint(s3_url, storage_options=opts, lease_timeout_s=60)
    b = Checkpoint(s3_url, storage_options=opts, lease_timeout_s=60)
    failing: list[bool] = []
    _fail_lease_reads(a, failing)
    real_check = a._check_lease

    def check_then_b_claims() -> Any:
        seen = real_check()  # A finds no lease ...
        b.claim("b", "0")  # ... B claims completely before A appends its claim record ...
        b.ensure_owner("the first plan")
        failing.append(True)  # ... and A's later lease reads fail
        return seen

    a._check_lease = check_then_b_claims  # type: ignore[method-assign]
    try:
        start = now[0]
        a.claim("a", "0")
        assert now[0] - start >= 60  # A waited one lease (before the fix: not at all)
        with pytest.raises(CheckpointInUseError, match="lost its claim"):
            b.ensure_owner("the outputs of batch 1000 ms")  # before the fix: B's proof still held: split brain
        a.ensure_owner("the outputs of batch 1000 ms")
    finally:
        a.release()
        b.release()


def test_a_heartbeat_goes_on_through_an_unreadable_or_damaged_lease_s3(
    s3_server: Any, s3_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    _fake_clock(monkeypatch)
    opts = s3_server.storage_options
    b = Checkpoint(s3_url, storage_options=opts, lease_timeout_s=60)
    b.claim("b", "0")
    me = b._owner
    assert me is not None
    failing = [True]
    _fail_lease_reads(b, failing)
    try:
        assert b._renew(me) and not me.lost  # a transient read error neither stops the heartbeat nor loses the claim
        failing.clear()
        lease = checkpoint_module._LEASE
        b.storage.write(lease, b.encode("lease", {"epoch": "x", "heartbeat_ms": 0}, rel=lease))  # a damaged epoch
        assert b._renew(me) and not me.lost  # before the fix: ValueError in the heartbeat thread
        assert b._read_lease() is not None and b._read_lease()["epoch"] == me.epoch  # renewed over the damage
        b.ensure_owner("the outputs of batch 1000 ms")
    finally:
        b.release()


def test_a_heartbeat_that_finds_a_later_claim_in_the_log_stops_renewing_s3(
    s3_server: Any, s3_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """B's renewal lists a claim record after its own (A claimed, A's lease is written): B stops renewing at once
    instead of overwriting A's lease at every beat until its main thread notices."""
    _fake_clock(monkeypatch)
    opts = s3_server.storage_options
    b = Checkpoint(s3_url, storage_options=opts, lease_timeout_s=60)
    a = Checkpoint(s3_url, storage_options=opts, lease_timeout_s=60)
    b.claim("b", "0")
    me = b._owner
    assert me is not None
    a._check_lease = lambda: None  # type: ignore[method-assign]  # A found B's lease expired (B was paused)
    real_read_lease = b._read_lease
    b._read_lease = lambda strict=False: None  # type: ignore[method-assign]  # B's lease read misses A's lease
    try:
        a.claim("a", "0")
        assert not b._renew(me)  # before the fix: True, and the lease now named B's old epoch again
        assert me.lost
        b._read_lease = real_read_lease  # type: ignore[method-assign]
        with pytest.raises(CheckpointInUseError, match="lost its claim"):
            b.ensure_owner("the outputs of batch 1000 ms")
        a.ensure_owner("the outputs of batch 1000 ms")
    finally:
        a.release()
        b.release()
