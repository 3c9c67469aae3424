"""RedisSink's writer process (jobs with a checkpoint): killed mid-batch, its driver SIGKILLed, its user's errors.

The write function runs in the sink's writer process; the driver commits a batch only once the
writer reported it applied. Each test counts with non-idempotent commands (INCRBY, RPUSH of the
record's index): a batch applied twice, or lost, breaks the sequence.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

import pytest
import redis

import streamkeep as sk
from streamkeep import _faults
from streamkeep.errors import ConfigError, UserFunctionError
from streamkeep.sinks import RedisSink

pytestmark = [pytest.mark.faults, pytest.mark.slow, pytest.mark.integration]

REPO = str(Path(__file__).resolve().parents[2])

# A job: 5 records per batch (index, time), each counted with INCRBY and logged with RPUSH.
# The write function (in the writer process) notes the writer's pid, and SIGKILLs its own
# process at the record KILL_AT, once (a flag in Redis).
_JOB = """
import os, signal, sys
sys.path.insert(0, {repo!r})
import redis
import streamkeep as sk
from streamkeep.errors import StreamkeepError
from streamkeep.sinks import RedisSink, redis as redis_sink

redis_sink.WAIT_FOR_WRITER = True  # every batch in the writer (else the first ones go from the job's thread while it starts)
url, ckpt, batches, kill_at = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])

def write(pipe, records):
    r = redis.Redis.from_url(url)
    r.sadd("writer_pids", os.getpid())
    if any(i == kill_at for i, _ in records) and r.setnx("killed", 1):
        os.kill(os.getpid(), signal.SIGKILL)
    for i, _ in records:
        pipe.incrby("n", 1)
        pipe.rpush("log", i)

def create():
    ssc = sk.StreamingContext(1.0, checkpoint=ckpt)
    ssc.rate_stream(5, name="rate").write_to(RedisSink(url, write, name="job", marker_key="job:marker", writer_process=True))
    return ssc

class Writers:  # prints the driver's writer processes (its children running _redis_writer) once
    said = False

    def on_batch_started(self, info):
        if not self.said:
            self.said = True
            for entry in os.listdir("/proc"):
                try:
                    stat = open(f"/proc/{{entry}}/stat").read()
                    cmd = open(f"/proc/{{entry}}/cmdline", "rb").read()
                except (OSError, ValueError):
                    continue
                if int(stat[stat.rindex(")") + 2 :].split()[1]) == os.getpid() and b"_redis_writer" in cmd:
                    print(f"WRITER {{entry}}", flush=True)

ssc = sk.StreamingContext.get_or_create(ckpt, create)
ssc.add_listener(Writers())
try:
    ssc.run(max_batches=batches)
except StreamkeepError as exc:
    print(f"FAILED {{type(exc).__name__}}: {{exc}}", flush=True)
    sys.exit(1)
finally:
    ssc.stop()
print("DONE", flush=True)
"""


def _run(redis_url: str, ckpt: Path, batches: int, kill_at: int = -1, crash: str | None = None) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ)
    env.pop(_faults.ENV_VAR, None)
    if crash is not None:
        env[_faults.ENV_VAR] = crash
    code = textwrap.dedent(_JOB.format(repo=REPO))
    argv = [sys.executable, "-c", code, redis_url, str(ckpt), str(batches), str(kill_at)]
    with subprocess.Popen(argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) as proc:
        out, err = proc.communicate(timeout=120)
    return subprocess.CompletedProcess([proc.pid], proc.returncode, out, err)  # args: the driver's pid


def _exact(r: redis.Redis) -> int:
    """The number of records applied, checking each was applied exactly once and in order."""
    log = [int(x) for x in r.lrange("log", 0, -1)]
    assert log == list(range(len(log))), f"records lost or applied twice: {log}"
    assert int(r.get("n") or 0) == len(log)
    return len(log)


def _alive(pid: int) -> bool:
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return False
    return raw[raw.rindex(")") + 2] != "Z"  # a zombie has exited


def test_a_writer_process_killed_mid_batch_fails_the_batch_and_the_restart_ends_exact(redis_url: str, tmp_path: Path) -> None:
    r = redis.Redis.from_url(redis_url)
    ckpt = tmp_path / "ckpt"
    first = _run(redis_url, ckpt, 6, kill_at=12)  # in the third batch
    assert first.returncode == 1, first.stdout + first.stderr
    assert "FAILED SinkError" in first.stdout and "writer process" in first.stdout and "killed by signal 9" in first.stdout, first.stdout
    assert _exact(r) == 10  # the batches before it; nothing of the killed one, nor after it
    again = _run(redis_url, ckpt, 4)
    assert again.returncode == 0, again.stdout + again.stderr
    assert _exact(r) > 12  # the killed batch replayed once, then the next ones


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
@pytest.mark.parametrize("crash", ["sink.after_write@3", "commit.before_record@3"])
def test_a_driver_sigkilled_with_a_batch_in_its_writer_leaves_no_process_and_ends_exact(redis_url: str, tmp_path: Path, crash: str) -> None:
    r = redis.Redis.from_url(redis_url)
    ckpt = tmp_path / "ckpt"
    killed = _run(redis_url, ckpt, 8, crash=crash)
    assert killed.returncode == -signal.SIGKILL, killed.stdout + killed.stderr
    pids = [int(line.split()[1]) for line in killed.stdout.splitlines() if line.startswith("WRITER ")]
    assert len(pids) == 1, killed.stdout  # the driver's one writer process
    assert {int(p) for p in r.smembers("writer_pids")} <= set(pids)  # the write function ran there, not in the driver
    deadline = time.monotonic() + 30
    while any(map(_alive, pids)) and time.monotonic() < deadline:
        time.sleep(0.05)
    left = [pid for pid in pids if _alive(pid)]
    for pid in left:  # only when the test fails: do not leak it
        os.kill(pid, signal.SIGKILL)
    assert not left, f"the killed driver's writer process {left} still runs 30 s later"
    again = _run(redis_url, ckpt, 4)
    assert again.returncode == 0, again.stdout + again.stderr
    assert _exact(r) >= 15


def test_an_error_in_the_write_function_names_the_batch_and_keeps_its_cause(redis_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from streamkeep.sinks import redis as redis_sink

    monkeypatch.setattr(redis_sink, "WAIT_FOR_WRITER", True)
    r = redis.Redis.from_url(redis_url, decode_responses=True)
    ckpt = str(tmp_path / "ckpt")
    bad = {"at": 12}

    def write(pipe: Any, records: list[Any]) -> None:
        for i, _ in records:
            if i == bad["at"]:
                raise ValueError(f"cannot write record {i}")
            pipe.incrby("n", 1)
            pipe.rpush("log", i)

    def create() -> sk.StreamingContext:
        ssc = sk.StreamingContext(1.0, checkpoint=ckpt)
        ssc.rate_stream(5, name="rate").write_to(RedisSink(redis_url, write, name="job", marker_key="job:marker", writer_process=True))
        return ssc

    done: list[int] = []

    class Done:
        def on_batch_completed(self, info: sk.BatchInfo) -> None:
            done.append(info.batch_time_ms)

    ssc = sk.StreamingContext.get_or_create(ckpt, create)
    ssc.add_listener(Done())
    try:
        with pytest.raises(UserFunctionError) as info:
            ssc.run(max_batches=6)
    finally:
        ssc.stop()
    err = info.value
    assert done and err.batch_time_ms == done[0] + 2000  # the third batch (its error may surface while the fourth runs)
    assert "RedisSink 'job'" in str(err) and str(err.batch_time_ms) in str(err) and "nothing was applied" in str(err)
    assert isinstance(err.__cause__, ValueError) and str(err.__cause__) == "cannot write record 12"
    notes = "".join(getattr(err.__cause__, "__notes__", []))
    assert "writer process" in notes and "cannot write record 12" in notes and "in write" in notes  # its traceback there
    assert r.lrange("log", 0, -1) == [str(i) for i in range(10)]
    bad["at"] = -1  # fixed: the failed batch was not committed, so it runs again
    ssc = sk.StreamingContext.get_or_create(ckpt, create)
    try:
        ssc.run(max_batches=2)
    finally:
        ssc.stop()
    assert _exact(redis.Redis.from_url(redis_url)) >= 15


def test_a_write_function_that_cannot_be_pickled_is_refused_at_the_start_or_runs_in_the_job_thread(redis_url: str, tmp_path: Path) -> None:
    import threading

    lock = threading.Lock()  # not picklable: the function cannot go to a writer process

    def write(pipe: Any, records: list[Any]) -> None:
        with lock:
            for i, _ in records:
                pipe.rpush("log", i)

    def create(in_process: bool) -> sk.StreamingContext:
        ssc = sk.StreamingContext(1.0, checkpoint=str(tmp_path / f"ckpt-{in_process}"))
        sink = RedisSink(redis_url, write, name=f"job-{in_process}", marker_key=f"job:{in_process}", writer_process=not in_process)
        ssc.rate_stream(5, name="rate").write_to(sink)
        return ssc

    ssc = create(in_process=False)
    try:
        with pytest.raises(ConfigError, match=r"RedisSink 'job-False': its write function cannot be pickled .*writer_process=False"):
            ssc.run(max_batches=1)
    finally:
        ssc.stop()
    ssc = create(in_process=True)
    try:
        ssc.run(max_batches=2)
    finally:
        ssc.stop()
    assert redis.Redis.from_url(redis_url).lrange("log", 0, -1) == [str(i).encode() for i in range(10)]
