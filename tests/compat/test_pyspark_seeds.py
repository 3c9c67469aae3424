"""The seeds' programs, unmodified but for addresses, under ``streamkeep run --pyspark``.

* ``seed_programs/kafka_to_redis.py``: Kafka (mock broker) -> updateStateByKey -> Redis
  (real redis-server) with ``StreamingContext.getOrCreate``; killed with SIGKILL and
  restarted, the Redis hashes must equal the exact per-user totals.
* ``seed_programs/constant_stream.py``: the constant input stream printed every 5 s;
  killed and restarted, batch times continue where the checkpoint left off.
"""

from __future__ import annotations

import os
import signal
import subprocess
from collections import Counter
from datetime import datetime, timedelta
from typing import Any

import pytest
import redis
from _pyspark_helpers import SEEDS, LineReader, spawn, wait_for
from _servers import produce

KAFKA_TO_REDIS = os.path.join(SEEDS, "kafka_to_redis.py")
CONSTANT = os.path.join(SEEDS, "constant_stream.py")


def _committed(ckpt: str) -> int:
    """The newest sequence number of the checkpoint's commit log (0 if none; numbers start at 1).

    A driver appends a claim record when it starts, then one commit record per batch.
    """
    try:
        names = os.listdir(os.path.join(ckpt, "log"))
    except FileNotFoundError:
        return 0
    return max((int(n.split(".")[0]) for n in names if n.split(".")[0].isdigit()), default=0)


def _stop(proc: subprocess.Popen[str], sig: int = signal.SIGKILL) -> None:
    if proc.poll() is None:
        proc.send_signal(sig)
    proc.wait(timeout=30)
    for pipe in (proc.stdout, proc.stderr):
        if pipe is not None:
            pipe.close()


def _events(start: int, n: int) -> list[str]:
    return [f"user{i % 4},op{i},detail{i}" for i in range(start, start + n)]


def _expected(lines: list[str]) -> dict[str, dict[str, str]]:
    ops = Counter(line.split(",")[0] for line in lines)
    last = {line.split(",")[0]: line.split(",")[1] for line in lines}
    return {f"operation_log:{u}": {"ops": str(n), "last": last[u]} for u, n in ops.items()}


def _redis_state(client: redis.Redis) -> dict[str, dict[str, str]]:
    return {k: client.hgetall(k) for k in client.keys("operation_log:*")}


class _Job:
    """One run of the Kafka -> Redis seed, output to files (it runs until killed)."""

    def __init__(self, tmp_path: Any, args: list[str], n: int) -> None:
        self.log = open(tmp_path / f"job{n}.log", "w")  # noqa: SIM115
        self.proc = spawn(KAFKA_TO_REDIS, *args, stdout=self.log, stderr=subprocess.STDOUT)

    def kill(self, sig: int = signal.SIGKILL) -> None:
        _stop(self.proc, sig)
        self.log.close()


def _seed_args(kafka_cluster: Any, topic: str, redis_url: str, ckpt: str) -> list[str]:
    client = redis.Redis.from_url(redis_url)
    host, port = client.connection_pool.connection_kwargs["host"], client.connection_pool.connection_kwargs["port"]
    client.close()
    return [kafka_cluster.bootstrap, topic, str(host), str(port), ckpt]


@pytest.mark.integration
def test_kafka_to_redis_seed_runs_unmodified(tmp_path: Any, kafka_cluster: Any, topic_factory: Any, redis_url: str) -> None:
    topic = topic_factory(partitions=1)
    ckpt = str(tmp_path / "ckpt")
    client = redis.Redis.from_url(redis_url, decode_responses=True)
    job = _Job(tmp_path, _seed_args(kafka_cluster, topic, redis_url, ckpt), 1)
    try:
        # auto.offset.reset defaults to "largest" as in Spark: produce once the first batch has planned
        wait_for(lambda: _committed(ckpt) >= 2, 60, "the first committed batch", job.proc)
        lines = _events(0, 20)
        produce(kafka_cluster.bootstrap, topic, [s.encode() for s in lines])
        wait_for(lambda: _redis_state(client) == _expected(lines), 60, "the per-user state in Redis", job.proc)
    finally:
        job.kill(signal.SIGTERM)
        client.close()


@pytest.mark.integration
@pytest.mark.slow
def test_kafka_to_redis_seed_survives_sigkill_with_exact_results(tmp_path: Any, kafka_cluster: Any, topic_factory: Any, redis_url: str) -> None:
    topic = topic_factory(partitions=1)
    ckpt = str(tmp_path / "ckpt")
    args = _seed_args(kafka_cluster, topic, redis_url, ckpt)
    client = redis.Redis.from_url(redis_url, decode_responses=True)
    sent: list[str] = []

    def send(lines: list[str]) -> None:
        produce(kafka_cluster.bootstrap, topic, [s.encode() for s in lines])
        sent.extend(lines)

    job = _Job(tmp_path, args, 1)
    try:
        wait_for(lambda: _committed(ckpt) >= 2, 60, "the first committed batch", job.proc)
        send(_events(0, 40))
        wait_for(lambda: bool(_redis_state(client)), 60, "the first writes to Redis", job.proc)
        send(_events(40, 40))  # arrives while the job is killed, mid-stream
        job.kill()
        send(_events(80, 40))  # produced while the job is down
        last = _committed(ckpt)
        job = _Job(tmp_path, args, 2)
        wait_for(lambda: _committed(ckpt) >= last + 2, 60, "a batch after the restart (a claim, then a commit)", job.proc)
        send(_events(120, 40))
        wait_for(lambda: _redis_state(client) == _expected(sent), 60, "the exact per-user totals after the restart", job.proc)
        before = _committed(ckpt)
        wait_for(lambda: _committed(ckpt) >= before + 2, 30, "two more batches", job.proc)
        assert _redis_state(client) == _expected(sent)  # nothing was counted twice
    finally:
        job.kill(signal.SIGTERM)
        client.close()


def _batch_times(lines: list[str]) -> list[datetime]:
    return [datetime.fromisoformat(ln[len("Time: ") :]) for ln in lines if ln.startswith("Time: ")]


@pytest.mark.slow
def test_constant_stream_seed_prints_every_batch_and_resumes(tmp_path: Any) -> None:
    ckpt = str(tmp_path / "_checkpoint")
    err = open(tmp_path / "stderr.log", "w")  # noqa: SIM115
    proc = spawn(CONSTANT, ckpt, cwd=str(tmp_path), stderr=err)
    try:
        out = LineReader(proc.stdout)
        out.wait_for(lambda ls: len(_batch_times(ls)) >= 1 and ls[-1] == "", 60, "the first batch's output")
        block = out.lines[out.lines.index(next(ln for ln in out.lines if ln.startswith("Time: "))) - 1 :][:14]
        assert block[0] == block[2] == "-" * 43
        assert block[3:13] == [str(i) for i in range(10)] and block[13] == ""  # the constant RDD, 0 to 9
        wait_for(lambda: _committed(ckpt) >= 2, 60, "the first commit", proc)
        before = _batch_times(out.lines)
    finally:
        _stop(proc)
    proc2 = spawn(CONSTANT, ckpt, cwd=str(tmp_path), stderr=err)
    try:
        out2 = LineReader(proc2.stdout)
        out2.wait_for(lambda ls: len(_batch_times(ls)) >= 1, 60, "a batch after the restart")
        first_after = _batch_times(out2.lines)[0]
        # contiguous batch times: the next batch after the last one printed (or that one again,
        # if the kill came between its output and its commit)
        assert first_after - before[-1] in (timedelta(0), timedelta(seconds=5))
    finally:
        _stop(proc2, signal.SIGTERM)
        err.close()
