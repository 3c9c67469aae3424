"""A driver paused past its lease (SIGSTOP), a second driver started, the first resumed (SIGCONT).

On S3 (lease mode) the second driver takes over; the first one must then write nothing
more: no plan, no sink output (the journal sink records every write any driver made),
and its FileSink must not replace the newer owner's file even when it was paused inside
its outputs. On a local disk the first driver's OS lock refuses the second one while
the first is alive (paused or not), and the first continues exactly.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from _harness import Driver, file_tags, journal

from streamkeep.checkpoint import Checkpoint

pytestmark = [pytest.mark.faults, pytest.mark.slow]

LEASE_S = 1.0


def wait_for(pred: Callable[[], bool], timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not pred():
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout_s} s waiting for {what}")
        time.sleep(0.02)


def _lease_expired(url: str, opts: dict[str, Any]) -> bool:
    lease = Checkpoint(url, storage_options=opts).read("lease", "lease")
    return (time.time() * 1000 - lease["heartbeat_ms"]) / 1000 > LEASE_S * 1.2


def _plan_times(url: str, opts: dict[str, Any] | None) -> list[int]:
    return Checkpoint(url, storage_options=opts).plan_times()


def _expected_tags(times: range, tag: str) -> dict[int, set[str]]:
    return {t: {tag} for t in times}


@pytest.fixture
def s3(s3_server: Any, s3_url: str) -> tuple[str, dict[str, Any]]:
    return s3_url, s3_server.storage_options


@pytest.mark.integration
def test_s3_paused_between_batches_plans_nothing_after_the_takeover(s3: tuple[str, dict[str, Any]], tmp_path: Path) -> None:
    url, opts = s3
    a = Driver(url, tmp_path, "a", LEASE_S, opts)
    b = None
    try:
        a.expect("READY")
        a.send("run 2")
        a.expect("RAN 2000")
        a.pause()
        wait_for(lambda: _lease_expired(url, opts), 30, "the paused driver's lease to expire")
        b = Driver(url, tmp_path, "b", LEASE_S, opts)
        b.expect("READY 2000")  # B owns the checkpoint now, and has run nothing yet
        a.resume()
        a.send("run 1")
        line = a.expect("ERROR CheckpointInUseError")
        assert "lost its claim" in line and "before planning batch 3000 ms" in line
        assert a.proc.wait(timeout=60) == 3
        # A wrote no plan for 3000 (B's recovery keeps the plans of its two retained commits, none after them)
        assert [t for t in _plan_times(url, opts) if t > 2000] == []
        b.send("run 3")
        b.expect("RAN 5000")
    finally:
        a.finish()
        if b is not None:
            assert b.finish() == 0, b.stderr[-20:]
    assert journal(tmp_path) == [("a", 1000), ("a", 2000), ("b", 3000), ("b", 4000), ("b", 5000)]
    assert file_tags(tmp_path) == {1000: {"a"}, 2000: {"a"}, 3000: {"b"}, 4000: {"b"}, 5000: {"b"}}


@pytest.mark.integration
def test_s3_paused_after_its_plan_runs_no_output_after_the_takeover(s3: tuple[str, dict[str, Any]], tmp_path: Path) -> None:
    url, opts = s3
    a = Driver(url, tmp_path, "a", LEASE_S, opts)
    b = None
    try:
        a.expect("READY")
        a.send("run 2")
        a.expect("RAN 2000")
        a.send("hold compute 3000")
        a.send("run 1")
        a.expect("HELD 3000")  # planned and computing batch 3000 (the plan is written meanwhile, in the background)
        a.pause()
        wait_for(lambda: _lease_expired(url, opts), 30, "the paused driver's lease to expire")
        b = Driver(url, tmp_path, "b", LEASE_S, opts)
        b.expect("READY 2000")
        b.send("run 2")  # replays A's plan of 3000, then 4000
        b.expect("RAN 4000")
        a.resume()
        a.send("go")
        line = a.expect("ERROR CheckpointInUseError")
        # Refused at its outputs; or, when the pause came before its background plan writer wrote the plan, at the
        # plan itself (the writer proves ownership right before writing): either way A writes nothing more.
        assert "before the outputs of batch 3000 ms" in line or "before writing the plan of batch 3000 ms" in line, line
        assert a.proc.wait(timeout=60) == 3
        b.send("run 1")
        b.expect("RAN 5000")
    finally:
        a.finish()
        if b is not None:
            assert b.finish() == 0, b.stderr[-20:]
    assert journal(tmp_path) == [("a", 1000), ("a", 2000), ("b", 3000), ("b", 4000), ("b", 5000)]
    assert file_tags(tmp_path) == {1000: {"a"}, 2000: {"a"}, 3000: {"b"}, 4000: {"b"}, 5000: {"b"}}


@pytest.mark.integration
def test_s3_paused_once_its_plan_is_durable_is_stopped_by_the_ownership_check_before_its_outputs(
    s3: tuple[str, dict[str, Any]], tmp_path: Path
) -> None:
    """As above, but paused only once its plan of 3000 is on S3: then the check before the outputs alone stops it.

    (Paused earlier, the background plan writer's own check may stop it first.) The journal sink is
    not fenced, so an output run after the takeover would show there.
    """
    url, opts = s3
    a = Driver(url, tmp_path, "a", LEASE_S, opts)
    b = None
    try:
        a.expect("READY")
        a.send("run 2")
        a.expect("RAN 2000")
        a.send("hold compute 3000")
        a.send("run 1")
        a.expect("HELD 3000")
        wait_for(lambda: 3000 in _plan_times(url, opts), 30, "the plan of batch 3000 to be written")
        a.pause()
        wait_for(lambda: _lease_expired(url, opts), 30, "the paused driver's lease to expire")
        b = Driver(url, tmp_path, "b", LEASE_S, opts)
        b.expect("READY 2000")
        b.send("run 2")  # replays A's plan of 3000, then 4000
        b.expect("RAN 4000")
        a.resume()
        a.send("go")
        line = a.expect("ERROR CheckpointInUseError")
        assert "before the outputs of batch 3000 ms" in line, line
        assert a.proc.wait(timeout=60) == 3
    finally:
        a.finish()
        if b is not None:
            assert b.finish() == 0, b.stderr[-20:]
    assert journal(tmp_path) == [("a", 1000), ("a", 2000), ("b", 3000), ("b", 4000)]
    assert file_tags(tmp_path) == {1000: {"a"}, 2000: {"a"}, 3000: {"b"}, 4000: {"b"}}


@pytest.mark.integration
def test_s3_paused_inside_its_outputs_cannot_replace_the_new_owners_file(s3: tuple[str, dict[str, Any]], tmp_path: Path) -> None:
    """Paused after its ownership check, inside its outputs: the FileSink's fence refuses the stale write."""
    url, opts = s3
    a = Driver(url, tmp_path, "a", LEASE_S, opts)
    b = None
    try:
        a.expect("READY")
        a.send("run 2")
        a.expect("RAN 2000")
        a.send("hold output 3000")
        a.send("run 1")
        a.expect("HELD 3000")  # its outputs of batch 3000 have started
        a.pause()
        wait_for(lambda: _lease_expired(url, opts), 30, "the paused driver's lease to expire")
        b = Driver(url, tmp_path, "b", LEASE_S, opts)
        b.expect("READY 2000")
        b.send("run 2")
        b.expect("RAN 4000")
        a.resume()
        a.send("go")
        line = a.expect("ERROR")
        assert "CheckpointInUseError" in line and "FileSink 'files', batch 3000" in line, line
        assert a.proc.wait(timeout=60) == 3
    finally:
        a.finish()
        if b is not None:
            assert b.finish() == 0, b.stderr[-20:]
    # The unfenced journal sink shows the stale write that got through (what a user sink without
    # fencing suffers); the fenced FileSink kept the new owner's file.
    assert journal(tmp_path) == [("a", 1000), ("a", 2000), ("b", 3000), ("b", 4000), ("a", 3000)]
    assert file_tags(tmp_path) == {1000: {"a"}, 2000: {"a"}, 3000: {"b"}, 4000: {"b"}}


def test_local_paused_driver_keeps_the_checkpoint_and_continues(tmp_path: Path) -> None:
    """On a local disk the paused driver's flock refuses the second one; resumed, the first continues exactly."""
    url = str(tmp_path / "ckpt")
    a = Driver(url, tmp_path, "a", LEASE_S)
    try:
        a.expect("READY")
        a.send("run 2")
        a.expect("RAN 2000")
        a.send("hold compute 3000")
        a.send("run 1")
        a.expect("HELD 3000")
        a.pause()
        # Well past the lease: a lease would have expired by now, the OS lock does not.
        wait_for(lambda: _lease_expired(url, {}), 30, "the paused driver's lease to become stale")
        b = Driver(url, tmp_path, "b", LEASE_S)
        line = b.expect("ERROR CheckpointInUseError")
        assert "in use by another driver" in line and f"pid {a.proc.pid}" in line
        assert b.finish() == 3
        a.resume()
        a.send("go")
        a.expect("RAN 3000")
        a.send("run 2")
        a.expect("RAN 5000")
    finally:
        assert a.finish() == 0, a.stderr[-20:]
    assert journal(tmp_path) == [("a", t) for t in range(1000, 6000, 1000)]
    assert file_tags(tmp_path) == _expected_tags(range(1000, 6000, 1000), "a")
    c = Driver(url, tmp_path, "c", LEASE_S)  # once A stopped, the next driver takes over and continues
    try:
        c.expect("READY 5000")
        c.send("run 1")
        c.expect("RAN 6000")
    finally:
        assert c.finish() == 0, c.stderr[-20:]
    assert file_tags(tmp_path)[6000] == {"c"}
