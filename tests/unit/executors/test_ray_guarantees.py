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

import ipaddress
import os
import socket
import struct
import subprocess
import sys
from pathlib import Path

import pytest

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


def _is_loopback(ip: str) -> bool:
    addr = ipaddress.ip_address(ip.split("%")[0])
    mapped = getattr(addr, "ipv4_mapped", None)
    return (mapped or addr).is_loopback


def _descendants(root: int) -> set[int]:
    """`root` and every process below it, from /proc/*/stat."""
    parent: dict[int, int] = {}
    for d in os.listdir("/proc"):
        if d.isdigit():
            try:
                stat = Path(f"/proc/{d}/stat").read_text()
            except OSError:
                continue
            parent[int(d)] = int(stat.rsplit(")", 1)[1].split()[1])
    out, frontier = {root}, [root]
    while frontier:
        p = frontier.pop()
        kids = [c for c, pp in parent.items() if pp == p and c not in out]
        out.update(kids)
        frontier.extend(kids)
    return out


def _sockets(pids: set[int]) -> list[tuple[int, str, str, str]]:
    """(pid, local ip, remote ip, state) of every TCP socket the processes hold, read from /proc."""

    def ip_of(hexaddr: str, v6: bool) -> str:
        raw = bytes.fromhex(hexaddr)
        if not v6:
            return socket.inet_ntop(socket.AF_INET, raw[::-1])
        words = struct.unpack("<4I", raw)
        return socket.inet_ntop(socket.AF_INET6, struct.pack(">4I", *words))

    out = []
    for pid in pids:
        try:
            inodes = {os.readlink(f"/proc/{pid}/fd/{fd}")[8:-1] for fd in os.listdir(f"/proc/{pid}/fd")}
        except OSError:
            continue
        inodes = {i for i in inodes if i.isdigit()}
        for table, v6 in (("tcp", False), ("tcp6", True)):
            try:
                lines = Path(f"/proc/{pid}/net/{table}").read_text().splitlines()[1:]
            except OSError:
                continue
            for line in lines:
                f = line.split()
                if f[9] in inodes:
                    out.append((pid, ip_of(f[1].split(":")[0], v6), ip_of(f[2].split(":")[0], v6), f[3]))
    return out


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
            pids = _descendants(child.pid)
            socks = _sockets(pids)
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
    bad = [s for s in socks if not _is_loopback(s[1]) or (s[3] != "0A" and not _is_loopback(s[2]))]  # a listener's peer is "any"
    assert not bad, f"Ray sockets outside 127.0.0.0/8: {bad[:10]}"
