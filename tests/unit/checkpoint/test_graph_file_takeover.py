"""A driver paused past its lease must not delete the graph file the driver that took over has just written.

Found in review: graph files are content-addressed, so two drivers running the same code share a file
name. Retention deleted the graph file of the commit falling out of the kept ones without an ownership
check: driver A (recovered from code G0, now running G1) wrote the commit that drops the last G0 commit,
then stalled longer than the lease before its retention delete ran; driver B (a rollback to G0) claimed,
wrote graphs/<G0> and committed; A resumed and deleted graphs/<G0>, which B never writes again (it
caches the files it stored). Retention now leaves graph files to the restart sweep, which runs after
the claim and checks ownership before it deletes one.
"""

from __future__ import annotations

import types
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest

from streamkeep.checkpoint import Checkpoint
from streamkeep.checkpoint import _checkpoint as checkpoint_module
from streamkeep.checkpoint._checkpoint import graph_path
from streamkeep.checkpoint._retention import Retention
from streamkeep.errors import CheckpointInUseError

pytestmark = pytest.mark.integration

G0 = {"operators": {"total": {"kind": "update_state_by_key"}}, "sources": {}}
G1 = {"operators": {"total": {"kind": "update_state_by_key"}, "extra": {"kind": "update_state_by_key"}}, "sources": {}}


def _fake_clock(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    """The checkpoint module's clocks (monotonic, and the wall clock of lease heartbeats) as one fake clock."""
    now = [1000.0]

    def sleep(s: float) -> None:
        now[0] += s  # a claimer's wait passes on the fake clock, at once

    # The heartbeat threads wait 20 s of real time: they do not beat here.
    monkeypatch.setattr(checkpoint_module, "time", types.SimpleNamespace(monotonic=lambda: now[0], sleep=sleep, time=checkpoint_module.time.time))
    monkeypatch.setattr(checkpoint_module, "_now_ms", lambda: int(now[0] * 1000))
    return now


def _commit(ckpt: Checkpoint, t: int, graph: dict[str, Any]) -> tuple[int, set[str]]:
    """Commit batch `t` (no state) under `graph`; its sequence number and the files it needs."""
    gid = ckpt.graph_ref(graph)
    seq = ckpt.commit({"batch_time": t, "zero_ms": 0, "state": {}, "positions": {}, "graph_id": gid})
    return seq, {graph_path(gid)}


@contextmanager
def _two_drivers(s3_server: Any, s3_url: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[Checkpoint, Checkpoint, list[float]]]:
    """Drivers A (claimed) and B (not yet) of one S3 checkpoint on one fake clock; both released at the end."""
    now = _fake_clock(monkeypatch)
    a = Checkpoint(s3_url, storage_options=s3_server.storage_options, lease_timeout_s=60)
    b = Checkpoint(s3_url, storage_options=s3_server.storage_options, lease_timeout_s=60)
    a.claim("a", "0")
    try:
        yield a, b, now
    finally:
        a.release()
        b.release()


def test_a_paused_drivers_retention_keeps_the_graph_file_the_new_owner_wrote_s3(
    s3_server: Any, s3_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    with _two_drivers(s3_server, s3_url, monkeypatch) as (a, b, now):
        retention = Retention(a, 2)
        for t, graph in ((1000, G0), (2000, G0), (3000, G1)):  # A recovered from G0's commits, then runs G1
            retention.committed(t // 1000, t, _commit(a, t, graph)[1])
        seq, files = _commit(a, 4000, G1)  # drops the last commit naming G0 from the kept ones ...
        now[0] += 120  # ... then A stalls past its lease before its retention runs
        b.claim("b", "0")  # B, a rollback to G0, takes over and commits (writing graphs/<G0>)
        _commit(b, 5000, G0)
        g0 = graph_path(b.graph_ref(G0))
        assert b.storage.exists(g0)
        retention.committed(seq, 4000, files)  # A resumes; before the fix it deleted graphs/<G0> here
        assert b.storage.exists(g0)
        reader = Checkpoint(s3_url, storage_options=s3_server.storage_options)  # as inspect, verify or a restart reads B's commit
        assert reader.graph_of(reader.commits()[0]) == G0
        with pytest.raises(CheckpointInUseError, match="lost its claim"):
            _commit(a, 5000, G1)  # A is fenced out as before


def test_the_restart_sweep_does_not_delete_graph_files_once_another_driver_took_over_s3(
    s3_server: Any, s3_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The sweep deletes graph files only while its driver provably owns the checkpoint."""
    with _two_drivers(s3_server, s3_url, monkeypatch) as (a, b, now):
        _commit(a, 1000, G0)
        _commit(a, 2000, G1)
        seq, _ = _commit(a, 3000, G1)
        rec = a.commits()[0]
        now[0] += 120  # A, restarted from its newest commit, stalls past its lease before its sweep
        b.claim("b", "0")
        _commit(b, 4000, G0)  # B runs G0 and has written graphs/<G0>
        g0 = graph_path(b.graph_ref(G0))
        with pytest.raises(CheckpointInUseError, match="lost its claim"):
            Retention(a, 2).sweep(rec, None, set())
        assert b.storage.exists(g0)
