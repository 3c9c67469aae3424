"""A Ray worker or partition actor SIGKILLed while sinks write a batch in parts: the sinks end exactly once.

The sinks (a Redis sink with non-idempotent HINCRBY, a JSON-lines file sink) are written
by Ray tasks where the records are (`PartitionWritable`). The Redis write function,
running in a Ray worker, SIGKILLs on its 5th call (some parts of that batch staged, the
others not): its own worker process, or partition actor 0. The job (with a checkpoint)
must end with the same Redis hash and files as an uncrashed run on the local executor:
no part applied twice (the staged commands of a try that died are never applied), none lost.
"""

from __future__ import annotations

import os
import signal
import time

import pytest

import streamkeep as sk
from streamkeep.sinks import FileSink, RedisSink
from streamkeep.testing import ManualClock

pytestmark = [pytest.mark.ray, pytest.mark.faults, pytest.mark.slow, pytest.mark.integration]

TOTAL = 6
KILL_CALL = 5


def _update(values, old):
    return (old or 0) + sum(values)


def _gone(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] == "Z"
    except OSError:
        return True


def _writer(url: str, label: str, kill: str | None):
    driver = os.getpid()

    def write(pipe, records):
        import redis

        if kill is not None and os.getpid() == driver:
            msg = "the sink's write function ran in the driver, not where the records are"
            raise AssertionError(msg)

        client = redis.Redis.from_url(url)
        try:
            if kill is not None and client.incr(f"{label}:calls") == KILL_CALL and client.set(f"{label}:killed", os.getpid(), nx=True):
                if kill == "worker":
                    os.kill(os.getpid(), signal.SIGKILL)
                pid = int(client.get(f"{label}:actor_pid"))
                os.kill(pid, signal.SIGKILL)
                end = time.monotonic() + 30
                while not _gone(pid):
                    if time.monotonic() > end:
                        msg = f"actor {pid} still alive 30 s after SIGKILL"
                        raise AssertionError(msg)
                    time.sleep(0.02)
        finally:
            client.close()
        for k, n in records:
            pipe.hincrby(f"{label}:totals", str(k), n)

    return write


def _run(tmp_path, label: str, executor, url: str, kill: str | None):
    import redis

    client = redis.Redis.from_url(url)
    ckpt = str(tmp_path / label / "ckpt")
    files = tmp_path / label / "files"

    def note_actor(_b):
        if executor != "local":
            client.set(f"{label}:actor_pid", executor.actor_pids()[0])

    def build():
        ssc = sk.StreamingContext(1.0, checkpoint=ckpt, clock=ManualClock(), snapshot_every=2, executor=executor)
        pairs = ssc.rate_stream(3000, name="rate").map(lambda r: (r[0] % 53, r[0] % 3 + 1))
        pairs.foreach_batch(note_actor)
        totals = pairs.update_state_by_key(_update, name="totals")
        totals.write_to(RedisSink(url, _writer(url, label, kill), name=f"redis-{label}"))
        totals.write_to(FileSink(files, name="files", format="jsonl"))
        return ssc

    ssc = sk.StreamingContext.get_or_create(ckpt, build)
    ssc.run(TOTAL)
    ssc.stop()
    out = {
        "redis": sorted(client.hgetall(f"{label}:totals").items()),
        "files": {p.name: sorted(p.read_text().splitlines()) for p in sorted(files.iterdir()) if not p.name.startswith(".")},
        "killed": client.get(f"{label}:killed"),
        "staged": client.keys("*:stage:*"),
        "parts": sorted(p.name for p in files.iterdir() if ".part-" in p.name),
    }
    client.close()
    return out


@pytest.mark.parametrize("kill", ["worker", "actor"])
def test_a_kill_while_sinks_write_in_parts_ends_exactly_once(tmp_path, redis_url, ray_address, kill):
    ref = _run(tmp_path, "ref", "local", redis_url, None)
    assert len(ref["files"]) == TOTAL and ref["redis"]
    ex = sk.executors.RayExecutor(num_partitions=2)
    got = _run(tmp_path, "ray", ex, redis_url, kill)
    assert got["killed"] is not None, "the kill did not happen"
    assert got["redis"] == ref["redis"]  # HINCRBY: a part applied twice (or lost) would show
    assert got["files"] == ref["files"]
    assert got["staged"] == [] and got["parts"] == []
