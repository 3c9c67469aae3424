"""A stateful job and a brute-force model of its output, shared by the recovery property tests.

The job reads ``(key, value)`` batches from a queue and runs, side by side:
``update_state_by_key`` (a running sum that removes a key when the sum hits a
multiple of 7), ``reduce_by_key_and_window`` with an inverse and a filter,
plain ``reduce_by_key_and_window`` and ``map_with_state`` with an idle
timeout (plus its ``state_snapshots()``). `model` computes what every output
must be at every batch time directly from the input, with no engine code: the
oracle the engine is compared to after restarts and kills.

Imported by ``test_recovery_model.py`` (in-process restarts) and run as a child
process by the same tests (``python _model.py SPEC.json``) for SIGKILLs.
"""

from __future__ import annotations

import json
import operator
import os
import sys
from typing import Any

import streamkeep as sk
from streamkeep.sinks import FileSink
from streamkeep.testing import ManualClock

INTERVAL_S = 1
OUTPUTS = ("totals", "win_inv", "win_plain", "tracked", "tracked_state")


def update_total(values: list[int], old: int | None) -> int | None:
    total = (old or 0) + sum(values)
    return None if values and total % 7 == 0 else total


def track(key: str, value: int | None, state: Any) -> list[Any]:
    if state.is_timing_out():
        return [key, state.get(), "timeout"]
    n = (state.get() if state.exists() else 0) + (value or 0)
    if n >= 9:
        state.remove()
        return [key, n, "removed"]
    state.update(n)
    return [key, n, "seen"]


def nonzero(kv: tuple[str, int]) -> bool:
    return kv[1] != 0


def build(spec: dict[str, Any], ckpt: str, sinks: dict[str, Any]) -> sk.StreamingContext:
    """The job of `spec`, writing each output to ``sinks[name]``."""
    ssc = sk.StreamingContext(
        INTERVAL_S,
        checkpoint=ckpt,
        clock=ManualClock(),
        snapshot_every=spec["snapshot_every"],
        inline_delta_bytes=spec["inline_delta_bytes"],
        keep_commits=spec.get("keep_commits", 2),
    )
    batches = [[tuple(r) for r in b] for b in spec["input"]]
    pairs = ssc.queue_stream(batches, name="in", num_partitions=spec["partitions"])
    length, slide = spec["length"], spec["slide"]
    pairs.update_state_by_key(update_total, name="totals").write_to(sinks["totals"])
    pairs.reduce_by_key_and_window(operator.add, length, slide, inv_f=operator.sub, filter_f=nonzero, name="win_inv").write_to(
        sinks["win_inv"]
    )
    pairs.reduce_by_key_and_window(operator.add, length, slide, name="win_plain").write_to(sinks["win_plain"])
    tracked = pairs.map_with_state(track, name="tracked", timeout=spec["timeout"])
    tracked.write_to(sinks["tracked"])
    tracked.state_snapshots().write_to(sinks["tracked_state"])
    return ssc


def canonical(records: list[Any]) -> list[Any]:
    """Records of one batch in a comparable form (sorted; tuples as lists)."""
    return sorted((list(r) if isinstance(r, (tuple, list)) else r for r in records), key=repr)


def model(spec: dict[str, Any], total: int) -> dict[str, dict[int, list[Any]]]:
    """Every output's records per batch time (ms) for batches 1..total, computed directly."""
    inp: list[list[list[Any]]] = spec["input"]
    length, slide, timeout = spec["length"], spec["slide"], spec["timeout"]
    parts = spec["partitions"]

    def batch(i: int) -> list[list[Any]]:
        """Batch i's records in the order the engine sees them (partition by partition)."""
        if i > len(inp):
            return []
        recs = inp[i - 1]
        return [r for p in range(parts) for r in recs[p::parts]]

    out: dict[str, dict[int, list[Any]]] = {name: {} for name in OUTPUTS}
    totals: dict[str, int] = {}
    tracked: dict[str, tuple[int, int]] = {}  # key -> (state, batch of last update)
    for i in range(1, total + 1):
        t = i * 1000
        recs = batch(i)
        groups: dict[str, list[int]] = {}
        for k, v in recs:
            groups.setdefault(k, []).append(v)
        for k in list(totals) + [k for k in groups if k not in totals]:
            new = update_total(groups.get(k, []), totals.get(k))
            if new is None:
                totals.pop(k, None)
            else:
                totals[k] = new
        out["totals"][t] = canonical([[k, v] for k, v in totals.items()])
        if i % slide == 0:
            window: dict[str, int] = {}
            for j in range(max(1, i - length + 1), i + 1):
                for k, v in batch(j):
                    window[k] = window.get(k, 0) + v
            out["win_plain"][t] = canonical([[k, v] for k, v in window.items()])
            out["win_inv"][t] = canonical([[k, v] for k, v in window.items() if v != 0])
        emitted: list[Any] = []
        for k, v in recs:
            n = (tracked[k][0] if k in tracked else 0) + v
            if n >= 9:
                tracked.pop(k, None)
                emitted.append([k, n, "removed"])
            else:
                tracked[k] = (n, i)
                emitted.append([k, n, "seen"])
        for k, (s, last) in list(tracked.items()):
            if last < i - timeout:
                emitted.append([k, s, "timeout"])
                del tracked[k]
        out["tracked"][t] = canonical(emitted)
        out["tracked_state"][t] = canonical([[k, s] for k, (s, _) in tracked.items()])
    return out


def file_sinks(out_dir: str) -> dict[str, Any]:
    return {name: FileSink(os.path.join(out_dir, name), name=name, format="jsonl") for name in OUTPUTS}


def read_file_sinks(out_dir: str) -> dict[str, dict[int, list[Any]]]:
    """What the FileSinks of a run hold: per output, per batch time, the canonical records."""
    got: dict[str, dict[int, list[Any]]] = {}
    for name in OUTPUTS:
        d = os.path.join(out_dir, name)
        got[name] = {}
        for fn in sorted(os.listdir(d)) if os.path.isdir(d) else []:
            if fn.startswith("batch-"):
                with open(os.path.join(d, fn)) as f:
                    got[name][int(fn[6:19])] = canonical([json.loads(line) for line in f if line.strip()])
    return got


def main() -> int:
    """Child process: run the job of SPEC.json to its last batch, resuming whatever was committed."""
    spec_path = sys.argv[1]
    with open(spec_path) as f:
        spec = json.load(f)
    ckpt, out_dir, total = spec["ckpt"], spec["out"], spec["total"]
    ssc = sk.StreamingContext.get_or_create(ckpt, lambda: build(spec, ckpt, file_sinks(out_dir)))
    try:
        done = (ssc.last_batch_time_ms or 0) // 1000
        if done < total:
            ssc.run(max_batches=total - done)
    finally:
        ssc.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
