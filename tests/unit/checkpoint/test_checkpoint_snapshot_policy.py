"""Adaptive snapshots (the default): bytes per batch follow the keys that changed, not the state size."""

from __future__ import annotations

from pathlib import Path

import streamkeep as sk
from streamkeep.checkpoint import Checkpoint
from streamkeep.testing import ListSink, ManualClock, state_of


def _job(url: str, keys: int, changed: int) -> sk.StreamingContext:
    """State of `keys` keys (seeded), `changed` of them updated per batch."""
    ssc = sk.StreamingContext(1.0, checkpoint=url, clock=ManualClock(), inline_delta_bytes=0)
    pairs = ssc.rate_stream(changed, name="r").map(lambda r: (r[0] % keys, 1))
    pairs.map_with_state(lambda k, v, s: s.update((s.get() if s.exists() else 0) + v), name="m",
                         initial=[(k, 0) for k in range(keys)]).write_to(ListSink())
    return ssc


def _snapshots(url: str) -> list[str]:
    d = Path(url, "state", "m")
    return sorted(p.name for p in d.iterdir() if p.name.endswith(".snap")) if d.exists() else []


def test_few_changes_on_big_state_snapshot_rarely(tmp_path: Path) -> None:
    url = str(tmp_path / "c")
    ssc = sk.StreamingContext.get_or_create(url, lambda: _job(url, keys=20_000, changed=10))
    ssc.run(80)
    ssc.stop()
    # the first snapshot comes after 20 batches; after it, 60 batches of 10-key deltas are far
    # below half a 20k-key snapshot, so no second one
    snaps = _snapshots(url)
    assert len(snaps) == 1, snaps
    chain = Checkpoint(url).commits()[0].data["state"]["m"]
    assert chain["snapshot"] and len(chain["deltas"]) == 60


def test_big_changes_snapshot_often(tmp_path: Path) -> None:
    url = str(tmp_path / "c")
    ssc = sk.StreamingContext.get_or_create(url, lambda: _job(url, keys=200, changed=200))
    ssc.run(60)
    ssc.stop()
    # every batch rewrites every key: a delta is a whole snapshot, so after the first
    # snapshot (batch 20) one follows every other batch or so
    chain = Checkpoint(url).commits()[0].data["state"]["m"]
    assert len(chain["deltas"]) <= 3, chain
    assert len(_snapshots(url)) >= 1


def test_restart_after_adaptive_snapshots_is_exact(tmp_path: Path) -> None:
    url = str(tmp_path / "c")
    for total in (30, 45):
        ssc = sk.StreamingContext.get_or_create(url, lambda: _job(url, keys=50, changed=40))
        ssc.run(total - ((ssc.last_batch_time_ms or 0) // 1000))
        ssc.stop()
    ssc = sk.StreamingContext.get_or_create(url, lambda: _job(url, keys=50, changed=40))
    state = dict(state_of(ssc, "m")["set"])
    ssc.stop()
    rows = 45 * 40
    assert state == {k: len(range(k, rows, 50)) for k in range(50)}


def test_a_small_state_with_inline_deltas_is_not_snapshotted_every_other_batch(tmp_path: Path) -> None:
    """Every key of a 10-key state changes each batch: its deltas ride inline in the commit record.

    A restart reads inline deltas with the commit record anyway, so they do not make a snapshot
    due; counting them made one every other batch (each a file flush, waited for in the loop).
    """
    url = str(tmp_path / "c")
    snaps: list[int] = []

    class Count:
        def on_snapshot_completed(self, ev: object) -> None:
            snaps.append(ev.batch_time_ms)  # type: ignore[attr-defined]

    def job() -> sk.StreamingContext:
        ssc = sk.StreamingContext(1.0, checkpoint=url, clock=ManualClock())  # adaptive snapshots, default inline cap
        pairs = ssc.rate_stream(10, name="r").map(lambda r: (r[0] % 10, 1))
        pairs.update_state_by_key(lambda vs, old: (old or 0) + sum(vs), name="m").write_to(ListSink())
        return ssc

    ssc = sk.StreamingContext.get_or_create(url, job)
    ssc.add_listener(Count())
    ssc.run(60)
    ssc.stop()
    assert 1 <= len(snaps) <= 2, snaps  # the first after 20 batches; the next once the inline cap is used up
    chain = Checkpoint(url).commits()[0].data["state"]["m"]
    assert chain["snapshot"] is not None and all(isinstance(d, dict) for d in chain["deltas"]), chain
    ssc = sk.StreamingContext.get_or_create(url, job)
    state = dict(state_of(ssc, "m")["set"])
    ssc.stop()
    assert state == {k: 60 for k in range(10)}
