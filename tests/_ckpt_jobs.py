"""Small checkpointed jobs shared by the tests under tests/unit (checkpoint, sources, context)."""

from __future__ import annotations

import operator
import time
from collections.abc import Callable
from typing import Any

import streamkeep as sk
from streamkeep.testing import ListSink, ManualClock

INTERVAL_MS = 1000


def add_up(values: list[int], old: int | None) -> int:
    return (old or 0) + sum(values)


def rate_job(
    url: str,
    sink: ListSink,
    *,
    snapshot_every: int = 100,
    keep_commits: int = 3,
    rows_per_second: int = 6,
    keys: int = 3,
    window: bool = True,
    **kw: Any,
) -> Callable[[], sk.StreamingContext]:
    """setup(): rate -> (i % keys, 1) -> update_state_by_key "totals" (+ window "win") -> sink."""

    def setup() -> sk.StreamingContext:
        kw.setdefault("inline_delta_bytes", 0)  # these tests damage and measure delta files
        ssc = sk.StreamingContext(1.0, checkpoint=url, clock=ManualClock(), snapshot_every=snapshot_every, keep_commits=keep_commits, **kw)
        pairs = ssc.rate_stream(rows_per_second, name="rate").map(lambda r: (r[0] % keys, 1))
        pairs.update_state_by_key(add_up, name="totals").write_to(sink)
        if window:
            pairs.reduce_by_key_and_window(operator.add, 3.0, inv_f=operator.sub, name="win").foreach_batch(lambda b: None)
        return ssc

    return setup


def run_until(url: str, setup: Callable[[], sk.StreamingContext], total: int, **kw: Any) -> sk.StreamingContext:
    """get_or_create, then run until batch `total` (1-based) is committed; the context is stopped."""
    ssc = sk.StreamingContext.get_or_create(url, setup, **kw)
    try:
        done = (ssc.last_batch_time_ms or 0) // INTERVAL_MS
        if total > done:
            ssc.run(max_batches=total - done)
    finally:
        ssc.stop()
    return ssc


def totals_after(n_batches: int, *, rows_per_second: int = 6, keys: int = 3) -> list[tuple[int, int]]:
    """What the "totals" operator holds after `n_batches` of rate_job (uncrashed)."""
    rows = n_batches * rows_per_second
    return sorted((k, len(range(k, rows, keys))) for k in range(min(keys, rows)))


def wait_for(pred: Callable[[], bool], timeout_s: float = 10.0, what: str = "a condition") -> None:
    deadline = time.monotonic() + timeout_s
    while not pred():
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout_s} s waiting for {what}")
        time.sleep(0.005)


def canon_state(states: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Operator state data (``{op: {"set": ..., "del": ..., "add": ...}}``) in an order-free form.

    Executors and partition counts list keys (and window slices) in different orders; the
    content must be the same.
    """
    out: dict[str, dict[str, Any]] = {}
    for op, snap in states.items():
        out[op] = {k: sorted(v, key=repr) for k, v in snap.items() if k != "add"}
        if "add" in snap:
            out[op]["add"] = sorted([[ts, sorted(i, key=repr)] for ts, i in snap["add"]])
    return out
