"""A worker node of a two-node Ray cluster SIGKILLed mid-stream: the job ends exact.

The cluster runs on this host, loopback only: the head on 127.0.0.2, the worker node on
127.0.0.3 (``ray start`` rewrites 127.0.0.1 to the first interface's address but keeps
other 127.x addresses), token auth off so the second node can join (see
../shared/infra/ray_local_cluster.sh). Its processes are found by the cluster's own
temp dir and stopped by pid. The job (``_ray_node_job.py``, a child driver) keeps its two
key partitions on different nodes; after batch 3 the worker node's raylet is SIGKILLed,
so the actor there dies with its node; the job must finish with the output and state of
the same job on the local executor.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

pytestmark = [pytest.mark.ray, pytest.mark.faults, pytest.mark.slow]

JOB = Path(__file__).with_name("_ray_node_job.py")
ROOT = Path(__file__).resolve().parents[2]
TOTAL, PAUSE = 7, 3


def _procs_of(marker: str) -> dict[int, str]:
    """pid -> cmdline of the processes whose command line names `marker` (the cluster's temp dir)."""
    out = {}
    for d in os.listdir("/proc"):
        if d.isdigit():
            try:
                cmd = Path(f"/proc/{d}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            except OSError:
                continue
            if marker in cmd:
                out[int(d)] = cmd
    return out


def _children(pids: set[int]) -> set[int]:
    parent = {}
    for d in os.listdir("/proc"):
        if d.isdigit():
            try:
                parent[int(d)] = int(Path(f"/proc/{d}/stat").read_text().rsplit(")", 1)[1].split()[1])
            except OSError:
                continue
    out = set(pids)
    grew = True
    while grew:
        kids = {c for c, p in parent.items() if p in out and c not in out}
        out |= kids
        grew = bool(kids)
    return out


def _free_port(host: str) -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


@pytest.fixture
def two_nodes():
    pytest.importorskip("ray")
    ray_bin = str(Path(sys.executable).with_name("ray"))
    temp = tempfile.mkdtemp(prefix="skray", dir="/tmp")  # short: Ray puts unix sockets under it
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_")}
    env.update(
        RAY_AUTH_MODE="disabled",
        RAY_USAGE_STATS_ENABLED="0",
        RAY_health_check_period_ms="500",  # a dead node is noticed in seconds, not ~30 s
        RAY_health_check_failure_threshold="4",
        PYTHONPATH=str(ROOT),
    )
    port = _free_port("127.0.0.2")
    started: set[int] = set()
    try:
        for argv in (
            ["--head", "--node-ip-address=127.0.0.2", f"--port={port}", "--num-cpus=3", "--include-dashboard=false", f"--temp-dir={temp}/h"],
            [f"--address=127.0.0.2:{port}", "--node-ip-address=127.0.0.3", "--num-cpus=2", f"--temp-dir={temp}/w"],
        ):
            r = subprocess.run([ray_bin, "start", "--disable-usage-stats", *argv], env=env, capture_output=True, text=True, timeout=240)
            started |= set(_procs_of(temp))
            assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
        procs = _procs_of(temp)
        worker_raylets = [p for p, cmd in procs.items() if "raylet" in cmd.split(" ")[0] and f"{temp}/w" in cmd]
        assert len(worker_raylets) == 1, procs
        yield f"127.0.0.2:{port}", worker_raylets[0], env
    finally:
        for pid in _children(started | set(_procs_of(temp))):
            if pid != os.getpid():
                try:
                    os.kill(pid, signal.SIGKILL)
                except OSError:
                    pass
        shutil.rmtree(temp, ignore_errors=True)


def _result(stdout: str) -> dict:
    line = [ln for ln in stdout.splitlines() if ln.startswith("RESULT ")][-1]
    return json.loads(line[len("RESULT ") :])


def test_a_worker_node_killed_mid_stream_ends_exact(tmp_path, two_nodes):
    address, worker_raylet, env = two_nodes
    ref = subprocess.run([sys.executable, str(JOB), "local", str(tmp_path / "ref"), str(TOTAL), str(PAUSE)], env=env, capture_output=True, text=True, timeout=120)
    assert ref.returncode == 0, ref.stderr[-3000:]
    proc = subprocess.Popen(
        [sys.executable, str(JOB), address, str(tmp_path / "ray"), str(TOTAL), str(PAUSE)],
        env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    try:
        line = proc.stdout.readline()  # blocks until the job paused after batch PAUSE (or died: then "")
        assert line.startswith("PAUSED "), line + proc.stderr.read()[-3000:]
        pids = json.loads(line[len("PAUSED ") :])
        on_worker = [p for p in pids if p in _children({worker_raylet})]
        assert on_worker, f"no partition actor on the worker node (actors {pids}): the kill would prove nothing"
        os.kill(worker_raylet, signal.SIGKILL)  # the node dies; its actor with it
        deadline = time.monotonic() + 30
        while any(os.path.exists(f"/proc/{p}") and Path(f"/proc/{p}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z" for p in on_worker):
            assert time.monotonic() < deadline, "the actor on the killed node is still alive"
            time.sleep(0.1)
        proc.stdin.write("go\n")
        proc.stdin.flush()
        out, err = proc.communicate(timeout=240)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, err[-3000:]
    assert "reloading the state of the last commit" in err, "the batch after the kill should have been retried"
    assert _result(out) == _result(ref.stdout)
