"""A stateful job run batch by batch as a child driver by test_ray_two_nodes.py.

Usage: ``python _ray_node_job.py ADDRESS|local CHECKPOINT TOTAL PAUSE_AFTER``. On Ray
(2 key partitions, actors spread over the nodes, one CPU each) it prints
``PAUSED <actor pids as JSON>`` after batch PAUSE_AFTER and waits for a line on stdin
(the test kills a node meanwhile), then runs to batch TOTAL. Last line: ``RESULT
<json>``: per sink its batches (records sorted) and every operator's state (sorted).
"""

from __future__ import annotations

import json
import operator
import sys

import streamkeep as sk
from streamkeep.executors import RayExecutor
from streamkeep.testing import ListSink, ManualClock, state_of


def update(values, old):
    total = (old or 0) + sum(values)
    return None if total % 7 == 0 else total


def track(key, value, state):
    n = (state.get() if state.exists() else 0) + value
    state.update(n)
    return (key, n)


def main() -> int:
    address, ckpt, total_s, pause_s = sys.argv[1:5]
    total, pause = int(total_s), int(pause_s)
    ex = "local" if address == "local" else RayExecutor(address, num_partitions=2, actor_options={"num_cpus": 1, "scheduling_strategy": "SPREAD"})
    sinks = {n: ListSink(n) for n in ("totals", "seen", "win")}

    def build():
        ssc = sk.StreamingContext(1.0, checkpoint=ckpt, clock=ManualClock(), snapshot_every=2, executor=ex)
        pairs = ssc.rate_stream(40, name="rate").map(lambda r: (r[0] % 17, r[0] % 3 + 1))
        pairs.update_state_by_key(update, name="totals").write_to(sinks["totals"])
        pairs.map_with_state(track, name="seen").write_to(sinks["seen"])
        pairs.reduce_by_key_and_window(operator.add, 3.0, 1.0, inv_f=operator.sub, name="win").write_to(sinks["win"])
        return ssc

    ssc = sk.StreamingContext.get_or_create(ckpt, build)
    try:
        for i in range(1, total + 1):
            ssc.run(1)
            if i == pause and ex != "local":
                print("PAUSED", json.dumps(ex.actor_pids()), flush=True)
                sys.stdin.readline()
        states = {}
        for op in ("totals", "seen", "win"):
            snap = state_of(ssc, op)
            states[op] = {k: sorted(v, key=repr) if k != "add" else sorted([[ts, sorted(i, key=repr)] for ts, i in v]) for k, v in snap.items()}
    finally:
        ssc.stop()
    out = {n: [[t, sorted(rs, key=repr)] for t, rs in s.batches] for n, s in sinks.items()}
    print("RESULT", json.dumps({"out": out, "state": states}, default=repr), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
