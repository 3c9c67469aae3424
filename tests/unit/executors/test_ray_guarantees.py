"""RayExecutor guarantees no other test would catch the removal of.

The loopback-only test in ``test_ray_executor.py`` runs on the session's Ray, which the
``ray_address`` fixture starts with its own copy of the loopback settings; it never runs
the `RayExecutor._connect` path that starts Ray itself. This one does, in a child process
with no Ray address: dropping ``_loopback_only(ray)`` there makes Ray listen on every
interface and connect over the machine's first address. (Dropping only
``_node_ip_address="127.0.0.1"`` changes nothing here: with the cluster mode off Ray
already picks 127.0.0.1.)
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from _procnet import descendants, is_loopback, tcp_sockets

pytest.importorskip("ray")

ROOT = Path(__file__).resolve().parents[3]

CHILD = """
import sys
import streamkeep as sk
from streamkeep.executors import RayExecutor
from streamkeep.testing import ListSink, ManualClock

def update(values, old):
    return (old or 0) + sum(values)

ex = RayExecutor(num_partitions=2, num_cpus=2)
ssc = sk.StreamingContext(1.0, clock=ManualClock(), executor=ex)
sink = ListSink()
ssc.queue_stream([[("a", 1), ("b", 2)]] * 3, name="q").update_state_by_key(update, name="u").write_to(sink)
ssc.run()
assert ex._started_ray, "the executor should have started Ray itself"
print("ready", len(sink.batches), flush=True)
sys.stdin.readline()  # the parent reads our sockets now
ssc.stop()
"""


@pytest.mark.ray
def test_a_ray_the_executor_starts_itself_listens_and_connects_on_loopback_only():
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_")}  # no session Ray, no preset binding
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), *([env["PYTHONPATH"]] if env.get("PYTHONPATH") else [])])
    with subprocess.Popen(
        [sys.executable, "-c", CHILD], stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env
    ) as child:
        try:
            assert child.stdout is not None
            line = child.stdout.readline()  # the child runs the job and then waits; EOF if it failed
            pids = descendants(child.pid)
            socks = tcp_sockets(pids)
        finally:
            try:
                _, err = child.communicate("\n", timeout=120)  # the child stops its job and its Ray
            except subprocess.TimeoutExpired:
                child.kill()
                _, err = child.communicate()
    assert line.split() == ["ready", "3"], f"child job failed: {line!r} {err}"
    assert child.returncode == 0, err
    assert len(pids) > 3, "Ray's processes should be children of the process that started it"
    assert any(s[3] == "0A" for s in socks), "no listening socket found: the check would prove nothing"
    bad = [s for s in socks if not is_loopback(s[1]) or (s[3] != "0A" and not is_loopback(s[2]))]  # a listener's peer is "any"
    assert not bad, f"Ray sockets outside 127.0.0.0/8: {bad[:10]}"
