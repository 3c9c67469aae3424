"""SIGKILL of a driver running executor="processes" leaves no process behind.

The driver starts a forkserver, worker processes and multiprocessing's resource
tracker. A SIGKILLed driver cannot shut them down, so each must notice on its own
(parent-death signal, or the driver's pid going away) and exit; before the fix
every kill left them running (83 processes after 30 kills).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytestmark = [pytest.mark.slow, pytest.mark.faults]

# A job whose per-record chain runs in the pool; it prints READY once a batch has used the pool.
_CHILD = """
import sys
import streamkeep as sk

ssc = sk.StreamingContext(0.05, checkpoint=sys.argv[1], executor="processes")
said = []

def ready(batch):
    if not said:
        said.append(1)
        print("READY", flush=True)

ssc.rate_stream(2000, name="rate").map(lambda r: r[0] * 2).filter(lambda x: x % 3 == 0).foreach_batch(ready)
ssc.start()
ssc.await_termination()
"""


def _stat(pid: int) -> tuple[int, str, int] | None:
    """(ppid, state, start time) of `pid`, or None when it is gone."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return None
    fields = raw[raw.rindex(")") + 2 :].split()  # after "pid (comm) "
    return int(fields[1]), fields[0], int(fields[19])


def _descendants(root: int) -> dict[int, int]:
    """Every live descendant of `root` (pid -> start time), from the ppid chains in /proc."""
    children: dict[int, list[int]] = {}
    starts: dict[int, int] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            st = _stat(int(entry))
            if st is not None:
                children.setdefault(st[0], []).append(int(entry))
                starts[int(entry)] = st[2]
    found: dict[int, int] = {}
    todo = [root]
    while todo:
        for child in children.get(todo.pop(), []):
            found[child] = starts[child]
            todo.append(child)
    return found


def _alive(pid: int, start: int) -> bool:
    st = _stat(pid)
    return st is not None and st[2] == start and st[1] != "Z"  # a zombie has exited; same start time: not a reused pid


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
def test_sigkilled_driver_leaves_no_pool_processes(tmp_path: Path) -> None:
    family: dict[int, int] = {}
    errors = tmp_path / "stderr.txt"
    with (
        errors.open("w") as err,
        subprocess.Popen([sys.executable, "-c", _CHILD, str(tmp_path / "ckpt")], stdout=subprocess.PIPE, stderr=err, text=True) as proc,
    ):
        try:
            _kill_and_watch(proc, family, errors)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
            for pid, start in family.items():  # leftovers (only when the test fails): do not leak them
                if _alive(pid, start):
                    os.kill(pid, signal.SIGKILL)


def _kill_and_watch(proc: subprocess.Popen[str], family: dict[int, int], errors: Path) -> None:
    assert proc.stdout is not None
    line = proc.stdout.readline()
    assert line.strip() == "READY", f"the job did not start: {line!r}\n{errors.read_text()}"
    family.update(_descendants(proc.pid))
    # the forkserver, its workers and the resource tracker
    assert len(family) >= 3, f"expected the pool's processes under the driver, found {family}"
    proc.send_signal(signal.SIGKILL)  # not reaped yet: the pool must not wait for the driver's parent
    deadline = time.monotonic() + 30
    left = family
    while left and time.monotonic() < deadline:
        left = {pid: start for pid, start in left.items() if _alive(pid, start)}
        if left:
            time.sleep(0.05)
    described = {pid: Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ")[:200] for pid in left if _stat(pid)}
    proc.wait(timeout=30)
    assert not left, f"processes of the killed driver still running 30 s later: {described}"


@pytest.mark.parametrize("use_pidfd", [True, False], ids=["pidfd", "polling"])
def test_worker_watchdog_exits_when_the_driver_exits(use_pidfd: bool) -> None:
    """The watchdog each worker runs (pidfd where the kernel has it, polling elsewhere) ends it with the driver."""
    with subprocess.Popen([sys.executable, "-c", "import time; time.sleep(300)"]) as driver:
        code = (
            "import os, sys, time\n"
            "from streamkeep.executors import _pool\n"
            f"pid = {driver.pid}\n"
            f"fd = os.pidfd_open(pid) if {use_pidfd} else None\n"
            "print('WATCHING', flush=True)\n"
            "_pool._wait_for_exit(pid, fd)\n"
        )
        with subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True) as worker:
            try:
                assert worker.stdout is not None
                assert worker.stdout.readline().strip() == "WATCHING"
                assert worker.poll() is None, "the watchdog returned while the driver was alive"
                driver.kill()
                driver.wait()  # the polling fallback cannot tell an unreaped zombie from a live process
                assert worker.wait(timeout=30) == 70
            finally:
                if worker.poll() is None:
                    worker.kill()
