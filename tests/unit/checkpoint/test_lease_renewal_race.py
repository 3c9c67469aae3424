"""Two drivers never both pass the ownership check, even when the old owner's lease renewal races a new claim.

Found while mutation testing: `test_two_drivers_claiming_at_the_same_instant_never_both_pass_the_ownership_check_s3`
failed once under load (load average 10). A claimer that saw the lease change waits one lease from that read;
the old owner's heartbeat, renewing in the meantime (it still read its own lease: the claimer's lease write was
slow), extended its proof of ownership past that wait, so both drivers passed `ensure_owner`. The renewal now
extends the proof only when the log holds no record after the owner's last one.
"""

from __future__ import annotations

import types
from typing import Any

import pytest

from streamkeep.checkpoint import Checkpoint
from streamkeep.checkpoint import _checkpoint as checkpoint_module
from streamkeep.errors import CheckpointInUseError


@pytest.mark.integration
def test_a_renewal_racing_a_claim_does_not_let_the_old_owner_outlast_the_claimers_wait_s3(
    s3_server: Any, s3_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """B claims between A's lease check and A's claim record (as in the same-instant test); then, while A's lease
    write is slow (20 s of a 60 s lease on the checkpoint's clock), B's heartbeat renews. A's claim returns after
    its wait; B must fail its next ownership check instead of passing on the proof that renewal gave it."""
    now = [1000.0]

    def sleep(s: float) -> None:
        now[0] += s  # the claimer's wait passes on the fake clock, at once

    # The checkpoint module's clock only (the heartbeat threads wait 20 s of real time: they do not beat here).
    monkeypatch.setattr(checkpoint_module, "time", types.SimpleNamespace(monotonic=lambda: now[0], sleep=sleep, time=checkpoint_module.time.time))
    opts = s3_server.storage_options
    a = Checkpoint(s3_url, storage_options=opts, lease_timeout_s=60)
    b = Checkpoint(s3_url, storage_options=opts, lease_timeout_s=60)
    real_check, real_write = a._check_lease, a._write_lease

    def check_then_b_claims() -> Any:
        seen = real_check()  # A finds no lease ...
        b.claim("b", "0")  # ... and B claims completely before A appends its claim record
        b.ensure_owner("the first plan")
        return seen

    renewed = []

    def slow_write(**kw: Any) -> None:
        if not renewed:  # A's first lease write takes 20 s; B's heartbeat beats meanwhile (B still sees its own lease)
            now[0] += 20
            assert b._owner is not None
            renewed.append(b._renew(b._owner))
        real_write(**kw)

    a._check_lease = check_then_b_claims  # type: ignore[method-assign]
    a._write_lease = slow_write  # type: ignore[method-assign]
    try:
        a.claim("a", "0")
        # B's beat did run; it did not see the takeover in the lease (A's write was slow) but found A's claim record
        # after its own in the log listing, so it stopped renewing instead of extending its proof
        assert renewed == [False]
        with pytest.raises(CheckpointInUseError, match="lost its claim"):
            b.ensure_owner("the outputs of batch 1000 ms")  # before the fix: B's renewed proof still held here
        a.ensure_owner("the outputs of batch 1000 ms")
    finally:
        a.release()
        b.release()
