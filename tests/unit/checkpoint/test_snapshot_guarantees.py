"""Snapshot guarantees no other test would notice losing (found by mutation testing)."""

from __future__ import annotations

from pathlib import Path

import pytest

import streamkeep as sk
from streamkeep.scheduler import _state_writer
from streamkeep.testing import ManualClock


class _RestartCost(sk.StreamingListener):
    def __init__(self) -> None:
        self.deltas: list[int] = []

    def on_batch_completed(self, info: sk.BatchInfo) -> None:
        self.deltas.append(info.restart_deltas)


def test_adaptive_snapshots_bound_the_chain_a_restart_reads_even_when_deltas_stay_tiny(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A big state of which one key changes per batch never reaches the size rule (deltas of half the snapshot):
    `MAX_CHAIN` still forces a snapshot, so a restart reads at most that many deltas.

    Catches: `StateWriter.snapshot_due` without its MAX_CHAIN bound (the chain, and every restart, grew without end).
    """
    monkeypatch.setattr(_state_writer, "MAX_CHAIN", 30)  # the rule, at a size a unit test runs quickly
    cost = _RestartCost()
    ssc = sk.StreamingContext(1.0, checkpoint=str(tmp_path / "ckpt"), clock=ManualClock(), inline_delta_bytes=0)
    ssc.add_listener(cost)
    initial = [(f"key-{i:05d}", i) for i in range(3000)]
    ssc.rate_stream(1, name="rate").map(lambda r: ("key-00000", 1)).update_state_by_key(
        lambda vs, old: (old or 0) + sum(vs), name="totals", initial=initial
    ).foreach_batch(lambda b: None)
    try:
        ssc.run(max_batches=80)
    finally:
        ssc.stop()
    assert len(cost.deltas) == 80
    assert max(cost.deltas) <= 30, cost.deltas
