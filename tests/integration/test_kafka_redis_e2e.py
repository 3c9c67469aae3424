"""The seed's pipeline end to end: Kafka -> update_state_by_key -> Redis, killed and recovered.

``examples/kafka_to_redis.py`` runs as a real child process against the mock
Kafka cluster and a real redis-server. The topic holds N records over several
partitions (a user's records in one partition, so "last action" is defined).
The child is SIGKILLed at every crash point a Kafka job reaches on each batch
(``_faults.BATCH_POINTS`` but the queue's blob write, plus ``KAFKA_POINTS``)
(armed with ``CrashAt``; among them ``sink.after_write``, between the Redis
transaction and the checkpoint commit) and at random instants, then rerun
with ``get_or_create`` until it has read everything. Redis must then hold
exactly the totals computed here from the produced records: for the HSET
variant and for the HINCRBY/INCRBY one, where a batch applied twice would show.
Every kill case checks that the child died by SIGKILL (no vacuous pass).

Also: group offsets after recovery; a job that lost its checkpoint continuing
from the group's offsets; undecodable records (SourceError naming
topic/partition/offset; a dead-letter list loses nothing and gets each bad
record once, across kills); Redis hanging and the broker down mid-job (bounded
retries, then SinkError/SourceError, nothing committed, exact after a restart);
a fresh job starting after its sink's marker.

Limit: a kill *inside* a KafkaSink transaction cannot be checked here: the
mock broker shows aborted/open transactions to read_committed consumers.
"""

from __future__ import annotations

import base64
import json
import math
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from _servers import produce

from streamkeep import _faults
from streamkeep.checkpoint import Checkpoint
from streamkeep.testing import CrashAt

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "examples" / "kafka_to_redis.py"
sys.path.insert(0, str(ROOT / "tests" / "faults"))
from _harness import _COUNTING, MERGE_ALL, MERGE_ONLY_POINTS, expect_killed, expect_ok, job_argv, scratch_dir  # noqa: E402

redis = pytest.importorskip("redis")
pytestmark = pytest.mark.integration

PARTITIONS = 4
N_RECORDS = 8000
N_USERS = 50
CAP = 250  # max records per partition and batch: 8 data batches + 1 idle one
ACTIONS = ("view", "view", "view", "click", "click", "cart", "buy")


# ----------------------------------------------------------------------------- data


def _make_lines(n: int, seed: int) -> list[tuple[str, bytes]]:
    rng = random.Random(seed)
    out = []
    for i in range(n):
        user = f"u{rng.randrange(N_USERS)}"
        out.append((user, f"{user},{rng.choice(ACTIONS)},/page/{rng.randrange(1000)}".encode()))
    return out


def _partition_of(user: str) -> int:
    return int(user[1:]) % PARTITIONS


def _produce_lines(bootstrap: str, topic: str, lines: list[tuple[str, bytes]]) -> None:
    produce(
        bootstrap,
        topic,
        [v for _, v in lines],
        keys=[u.encode() for u, _ in lines],
        partition=lambda i: _partition_of(lines[i][0]),
    )


def _expected(lines: list[tuple[str, bytes]]) -> dict[str, dict[str, str]]:
    """The hashes an uncrashed run leaves: per user events, last action, count per action."""
    counts: dict[str, Counter[str]] = {}
    last: dict[str, str] = {}
    for user, value in lines:  # produce order = offset order within the user's partition
        action = value.decode().split(",")[1]
        counts.setdefault(user, Counter())[action] += 1
        last[user] = action
    return {
        u: {"events": str(sum(c.values())), "last_action": last[u], **{f"action:{a}": str(n) for a, n in c.items()}}
        for u, c in counts.items()
    }


def _redis_view(url: str, prefix: str) -> tuple[dict[str, dict[str, str]], str | None]:
    c = redis.Redis.from_url(url, decode_responses=True)
    try:
        hashes = {k[len(prefix) + len("user:") :]: c.hgetall(k) for k in c.scan_iter(f"{prefix}user:*", count=1000)}
        return hashes, c.get(f"{prefix}events_total")
    finally:
        c.close()


def _check_totals(url: str, prefix: str, mode: str, expected: dict[str, dict[str, str]], what: str) -> None:
    got, total = _redis_view(url, prefix)
    wrong = sorted(u for u in set(expected) | set(got) if expected.get(u) != got.get(u))
    shown = "; ".join(f"{u}: expected {expected.get(u)}, got {got.get(u)}" for u in wrong[:5])
    assert not wrong, f"{what}: {len(wrong)} users differ in Redis ({mode} mode): {shown}"
    if mode == "incr":
        want = sum(int(h["events"]) for h in expected.values())
        assert total == str(want), f"{what}: events_total is {total}, expected {want}"


# ----------------------------------------------------------------------------- the job


@dataclass
class Job:
    """One run configuration of the example: its topic, Redis keys and checkpoint."""

    bootstrap: str
    topic: str
    redis_url: str
    ckpt: str
    mode: str = "incr"
    prefix: str = ""
    group: str = ""
    extra: list[str] = field(default_factory=list)

    merged: bool = False  # every snapshot merged in the background (a big state's path: MERGE_ONLY_POINTS)

    def argv(self) -> list[str]:
        return job_argv(str(EXAMPLE), *self.args(), merged=self.merged)

    def args(self) -> list[str]:
        return [
            "--bootstrap-servers",
            self.bootstrap,
            "--topic",
            self.topic,
            "--redis-url",
            self.redis_url,
            "--checkpoint",
            self.ckpt,
            "--mode",
            self.mode,
            "--key-prefix",
            self.prefix,
            "--group-id",
            self.group,
            "--max-records-per-partition",
            str(CAP),
            "--snapshot-every",
            "3",
            "--until-idle",
            *self.extra,
        ]

    def env(self, crash: CrashAt | None = None) -> dict[str, str]:
        env = dict(os.environ)
        env.pop(_faults.ENV_VAR, None)
        return crash.env(env) if crash is not None else env

    def run(self, crash: CrashAt | None = None, timeout_s: float = 120) -> subprocess.CompletedProcess[str]:
        return subprocess.run(self.argv(), env=self.env(crash), capture_output=True, text=True, timeout=timeout_s)

    def start(self) -> subprocess.Popen[str]:
        return subprocess.Popen(self.argv(), env=self.env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)

    def count_points(self, out: str) -> tuple[subprocess.CompletedProcess[str], dict[str, int]]:
        """Run uncrashed, counting how often each crash point is reached."""
        code = (MERGE_ALL if self.merged else "") + _COUNTING.format(job=str(EXAMPLE))
        r = subprocess.run([sys.executable, "-c", code, out, *self.args()], env=self.env(), capture_output=True, text=True, timeout=120)
        counts = json.loads(Path(out).read_text()) if r.returncode == 0 else {}
        return r, counts


@dataclass
class World:
    bootstrap: str
    topic: str
    redis_url: str
    scratch: str
    expected: dict[str, dict[str, str]]
    counts: dict[str, int]
    merged_counts: dict[str, int] = field(default_factory=dict)  # of a run with every snapshot merged

    def job(self, name: str, mode: str = "incr", **kw: Any) -> Job:
        safe = re.sub(r"[^A-Za-z0-9]+", "-", name)
        root = os.path.join(self.scratch, safe)
        shutil.rmtree(root, ignore_errors=True)
        return Job(self.bootstrap, self.topic, self.redis_url, os.path.join(root, "ckpt"), mode=mode, prefix=f"{safe}:", **kw)

    def check(self, job: Job, what: str) -> None:
        _check_totals(self.redis_url, job.prefix, job.mode, self.expected, what)


@pytest.fixture(scope="module")
def world(kafka_cluster: Any, redis_server: str) -> Iterator[World]:
    """One topic with N records, one Redis; an uncrashed reference run counts the crash points."""
    topic = f"e2e-events-{uuid.uuid4().hex[:8]}"
    kafka_cluster.create_topic(topic, PARTITIONS)
    lines = _make_lines(N_RECORDS, seed=5)
    _produce_lines(kafka_cluster.bootstrap, topic, lines)
    scratch = scratch_dir("streamkeep-k2r-")
    try:
        w = World(kafka_cluster.bootstrap, topic, redis_server, scratch, _expected(lines), {})
        ref = w.job("reference")
        r, w.counts = ref.count_points(os.path.join(scratch, "points.json"))
        expect_ok(r, "uncrashed reference run")
        w.check(ref, "uncrashed reference run")
        merged = w.job("reference-merged", merged=True)
        r, w.merged_counts = merged.count_points(os.path.join(scratch, "points-merged.json"))
        expect_ok(r, "uncrashed reference run, snapshots merged")
        w.check(merged, "uncrashed reference run, snapshots merged")
        yield w
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def _nth(spec: str, count: int) -> int:
    return max(1, math.ceil(count * 0.75)) if spec == "late" else int(spec)


# ----------------------------------------------------------------------------- kill matrix


def test_uncrashed_set_mode_gives_the_expected_totals(world: World) -> None:
    job = world.job("uncrashed-set", mode="set")
    r = job.run()
    expect_ok(r, "uncrashed set-mode run")
    assert "started with checkpoint" in r.stdout, r.stdout
    world.check(job, "uncrashed set-mode run")
    # Running it again reads nothing new and changes nothing.
    again = job.run()
    expect_ok(again, "second run")
    assert "resumed from checkpoint" in again.stdout, again.stdout
    assert "resumed" not in again.stderr, again.stderr  # said once, by the example (not streamkeep's stderr line too)
    world.check(job, "second run")


@pytest.mark.faults
def test_a_kill_before_the_first_commit_is_resumed_not_started(world: World) -> None:
    """Killed with its first batch planned and nothing committed, the job said "started" on its rerun
    (and then replayed that batch): it says it resumes and replays its planned batches."""
    job = world.job("kill-before-first-commit")
    expect_killed(job.run(CrashAt("plan.after_write", 1)), "kill at plan.after_write@1")
    r = job.run()
    expect_ok(r, "rerun after a kill before the first commit")
    assert "started with checkpoint" not in r.stdout, r.stdout
    assert re.search(r"resumed from checkpoint \S+: no batch was committed before it stopped; replaying its 1 planned batch first", r.stdout), r.stdout
    world.check(job, "after a kill before the first commit")


@pytest.mark.slow
@pytest.mark.faults
def test_the_job_reaches_every_crash_point(world: World) -> None:
    missing = {p: _counts(world, p).get(p, 0) for p in _JOB_POINTS if _counts(world, p).get(p, 0) < 2}
    assert not missing, f"crash points the job reaches fewer than 2 times: {missing} (counts: {world.counts}, merged: {world.merged_counts})"
    # its small state is snapshotted in its batch: only a run with merged snapshots reaches the merge's points
    assert not MERGE_ONLY_POINTS & world.counts.keys(), world.counts


def _counts(world: World, point: str) -> dict[str, int]:
    """The reference counts of the run a kill at `point` repeats (merged snapshots for the merge's points)."""
    return world.merged_counts if point in MERGE_ONLY_POINTS else world.counts


#: The points this job reaches on every batch (it has no queue, so no blob writes).
_JOB_POINTS = [p for p in _faults.BATCH_POINTS if p != "blob.after_write"] + list(_faults.KAFKA_POINTS)

_MATRIX = (
    [(p, "incr", "2") for p in _JOB_POINTS]
    + [(p, "set", "late") for p in _JOB_POINTS]
    + [("sink.after_write", "incr", "1"), ("sink.after_write", "incr", "late"), ("sink.after_write", "set", "1")]
)


@pytest.mark.slow
@pytest.mark.faults
@pytest.mark.parametrize(("point", "mode", "nth_spec"), _MATRIX, ids=[f"{p}-{m}-{n}" for p, m, n in _MATRIX])
def test_kill_at_crash_point_then_recover_gives_exact_totals(world: World, point: str, mode: str, nth_spec: str) -> None:
    nth = _nth(nth_spec, _counts(world, point).get(point, 0))
    job = world.job(f"{point}-{mode}-{nth_spec}", mode=mode, merged=point in MERGE_ONLY_POINTS)
    expect_killed(job.run(CrashAt(point, nth)), f"kill at {point}@{nth} ({mode})")
    expect_ok(job.run(), f"recovery after {point}@{nth} ({mode})")
    world.check(job, f"after a kill at {point}@{nth} ({mode})")


@pytest.mark.slow
@pytest.mark.faults
@pytest.mark.parametrize("point", ["sink.after_write", "commit.before_record", "plan.after_write"])
def test_kill_again_during_recovery(world: World, point: str) -> None:
    job = world.job(f"twice-{point}")
    expect_killed(job.run(CrashAt(point, 3)), f"first kill at {point}@3")
    expect_killed(job.run(CrashAt(point, 1)), f"second kill at {point}@1, while recovering")
    expect_ok(job.run(), f"recovery after two kills at {point}")
    world.check(job, f"after two kills at {point}")


def _first_line(proc: subprocess.Popen[str], timeout_s: float) -> str | None:
    """The child's first stdout line (printed once the context is restored), or None."""
    got: list[str] = []

    def reader() -> None:
        assert proc.stdout is not None
        got.append(proc.stdout.readline())

    th = threading.Thread(target=reader, daemon=True)
    th.start()
    th.join(timeout_s)
    return got[0] if got and got[0] else None


RANDOM_ROUNDS = 10
RANDOM_DEADLINE_S = 30.0
RANDOM_BATCH = ["--max-records-per-partition", "50"]  # ~40 small batches: a run lasts long enough to be hit


@pytest.mark.slow
@pytest.mark.faults
def test_random_kills_then_recover_gives_exact_totals(world: World) -> None:
    seed = int(os.environ.get("STREAMKEEP_FAULT_SEED", time.time_ns() % 1_000_000))
    rng = random.Random(seed)
    timing = world.job("random-timing", extra=RANDOM_BATCH)
    proc = timing.start()
    _first_line(proc, 60)
    t0 = time.monotonic()
    out, err = proc.communicate(timeout=120)
    run_s = time.monotonic() - t0  # the batch loop of a whole run, start-up excluded
    assert proc.returncode == 0, err[-4000:]
    kills = mid_data = rounds = sequences = 0
    deadline = time.monotonic() + RANDOM_DEADLINE_S
    while rounds < RANDOM_ROUNDS and time.monotonic() < deadline:
        sequences += 1
        job = world.job(f"random-{sequences}", extra=RANDOM_BATCH)
        while rounds < RANDOM_ROUNDS and time.monotonic() < deadline:
            rounds += 1
            proc = job.start()
            try:
                if rng.random() < 0.25:  # anywhere from process start, recovery included
                    time.sleep(rng.uniform(0.0, 0.5 + run_s / 2))
                else:
                    _first_line(proc, 60)
                    time.sleep(rng.uniform(0.0, run_s / 2))
                if proc.poll() is None:
                    proc.send_signal(signal.SIGKILL)
                proc.wait(60)
            finally:
                if proc.poll() is None:
                    proc.kill()
                    proc.wait()
                assert proc.stdout is not None and proc.stderr is not None
                err = proc.stderr.read()
                proc.stdout.close()
                proc.stderr.close()
            assert proc.returncode in (0, -signal.SIGKILL), f"seed {seed}, round {rounds}: exit {proc.returncode}\n{err[-4000:]}"
            if proc.returncode == 0:
                break  # this sequence finished on its own: nothing left to kill
            kills += 1
            _, total = _redis_view(world.redis_url, job.prefix)
            mid_data += int(total or 0) < N_RECORDS
        expect_ok(job.run(), f"seed {seed}: final recovery of sequence {sequences}")
        world.check(job, f"seed {seed}: sequence {sequences}, after random kills")
    assert kills >= RANDOM_ROUNDS // 2 and mid_data >= 2, (
        f"seed {seed}: {kills} kills in {rounds} rounds ({sequences} sequences), {mid_data} before all data was written"
    )


def test_group_offsets_after_recovery_are_visible_to_another_consumer(world: World) -> None:
    from confluent_kafka import Consumer, TopicPartition

    group = f"k2r-{uuid.uuid4().hex[:8]}"
    job = world.job("group-offsets", group=group)
    nth = _nth("late", world.counts["commit.after_record"])
    expect_killed(job.run(CrashAt("commit.after_record", nth)), "kill between the checkpoint commit and the group commit")
    expect_ok(job.run(), "recovery")
    world.check(job, "after recovery")
    c = Consumer({"bootstrap.servers": world.bootstrap, "group.id": group, "enable.auto.commit": False})
    try:
        tps = [TopicPartition(world.topic, p) for p in range(PARTITIONS)]
        ends = [c.get_watermark_offsets(tp, timeout=10, cached=False)[1] for tp in tps]
        committed = [tp.offset for tp in c.committed(tps, timeout=10)]
    finally:
        c.close()
    assert committed == ends, f"group {group} committed {committed}, end offsets {ends}"


# ----------------------------------------------------------------------------- bad input, Redis down


def _end_offsets(bootstrap: str, topic: str, partitions: int) -> list[int]:
    from confluent_kafka import Consumer, TopicPartition

    c = Consumer({"bootstrap.servers": bootstrap, "group.id": f"probe-{uuid.uuid4().hex[:8]}"})
    try:
        return [c.get_watermark_offsets(TopicPartition(topic, p), timeout=10, cached=False)[1] for p in range(partitions)]
    finally:
        c.close()


def test_undecodable_record_fails_with_source_error_then_dead_letter_loses_nothing(kafka_cluster, topic_factory, redis_url, tmp_path):
    bs = kafka_cluster.bootstrap
    topic = topic_factory(3)
    good = [(u, v) for u, v in _make_lines(900, seed=11) if _partition_of(u) < 3]
    _produce_lines(bs, topic, good[:500])
    bad = {1: b"\xff\xfe not utf-8", 2: b"no comma here"}
    for p, value in bad.items():
        produce(bs, topic, [value], partition=p)
    ends = _end_offsets(bs, topic, 3)
    bad_at = {p: ends[p] - 1 for p in bad}  # each bad record is its partition's last one so far
    _produce_lines(bs, topic, good[500:])  # good records behind the bad ones

    job = Job(bs, topic, redis_url, str(tmp_path / "ckpt"), mode="incr", prefix="dl:")
    r = job.run()
    assert r.returncode == 1, f"exit {r.returncode}\n{r.stdout}\n{r.stderr[-3000:]}"
    named = [f"topic {topic} partition {p} offset {o}" for p, o in bad_at.items()]
    assert "SourceError" in r.stderr and any(n in r.stderr for n in named), r.stderr[-3000:]

    job.extra = ["--dead-letter"]  # same checkpoint: the failed batch is replayed with the handler
    expect_ok(job.run(), "rerun with a dead-letter list")
    _check_totals(redis_url, "dl:", "incr", _expected(good), "after the dead-letter rerun")
    client = redis.Redis.from_url(redis_url, decode_responses=True)
    try:
        dead = [json.loads(x) for x in client.lrange("dl:dead_letters", 0, -1)]
    finally:
        client.close()
    assert sorted((d["topic"], d["partition"], d["offset"]) for d in dead) == sorted((topic, p, o) for p, o in bad_at.items())
    assert all(d["error"] for d in dead)
    assert len(dead) + len(good) == sum(_end_offsets(bs, topic, 3))  # every record is in Redis or in the dead letters


def test_redis_down_mid_job_is_a_sink_error_and_a_restart_is_exact(world: World, redis_server_factory) -> None:
    server = redis_server_factory()
    job = world.job("redis-down")
    job.redis_url = server.url
    job.extra = ["--redis-retries", "2", "--redis-timeout", "0.3", "--max-records-per-partition", "40"]  # ~50 batches
    client = redis.Redis.from_url(server.url)
    marker = f"{job.prefix}streamkeep:sink:users:last_batch"
    proc = job.start()
    stopped = False
    try:
        deadline = time.monotonic() + 60
        while client.get(marker) is None:  # the job has applied a batch: it is mid-run
            assert proc.poll() is None, f"the job ended before Redis went down: {proc.returncode}"
            assert time.monotonic() < deadline, "the job applied no batch in 60 s"
            time.sleep(0.005)
        os.kill(server.proc.pid, signal.SIGSTOP)  # Redis hangs: every request times out
        stopped = True
        _, err = proc.communicate(timeout=60)
    finally:
        if stopped:
            os.kill(server.proc.pid, signal.SIGCONT)
        if proc.poll() is None:
            proc.kill()
        proc.communicate()
        client.close()
    assert proc.returncode == 1, f"exit {proc.returncode}\n{err[-3000:]}"
    assert "SinkError" in err and "cannot reach Redis" in err and "after 3 attempt(s)" in err, err[-3000:]
    failed = int(re.search(r"writing batch (\d+)", err).group(1))  # type: ignore[union-attr]
    # No commit at all is possible: under load the first batch's reply can miss the 0.3 s timeout
    # (its script ran: the marker is set), and the retries then meet the stopped server.
    commits = Checkpoint(job.ckpt).commits()
    committed = commits[0].batch_time if commits else None
    assert committed is None or committed < failed, f"batch {failed} failed in the sink but the checkpoint committed up to {committed}"
    expect_ok(job.run(), "restart after Redis is back")
    _check_totals(server.url, job.prefix, "incr", world.expected, "after Redis came back")


@pytest.mark.slow
@pytest.mark.faults
@pytest.mark.parametrize("point", ["run.after_read", "sink.after_write", "commit.before_record"])
def test_dead_letters_are_written_once_across_kills(kafka_cluster, topic_factory, redis_url, tmp_path, point):
    """Bad records go to the dead-letter list exactly once, also when the job is killed after writing them."""
    bs = kafka_cluster.bootstrap
    topic = topic_factory(2)
    good = [(u, v) for u, v in _make_lines(400, seed=13) if _partition_of(u) < 2]
    _produce_lines(bs, topic, good[:150])
    produce(bs, topic, [b"\xc3\x28 broken", b"user-only"], partition=0)
    _produce_lines(bs, topic, good[150:])
    job = Job(bs, topic, redis_url, str(tmp_path / "ckpt"), mode="incr", prefix="dlk:", extra=["--dead-letter"])
    expect_killed(job.run(CrashAt(point, 1)), f"kill at {point}@1 in the batch with the bad records")
    expect_ok(job.run(), f"recovery after {point}@1")
    _check_totals(redis_url, "dlk:", "incr", _expected(good), f"after a kill at {point}")
    client = redis.Redis.from_url(redis_url, decode_responses=True)
    try:
        dead = [json.loads(x) for x in client.lrange("dlk:dead_letters", 0, -1)]
    finally:
        client.close()
    # Not UTF-8: base64, so the dead letter stays about the record's size (latin-1 in JSON took up to 6x).
    values = sorted(d["value"].encode() if "value" in d else base64.b64decode(d["value_base64"]) for d in dead)
    assert values == sorted([b"\xc3\x28 broken", b"user-only"]), dead
    assert not any("broken" in d["error"] for d in dead), dead  # the error names the problem, not the whole record again
    assert len(dead) + len(good) == sum(_end_offsets(bs, topic, 2))


def test_broker_down_mid_job_fails_clearly_and_a_restart_is_exact(kafka_cluster_factory, redis_url, tmp_path):
    cluster = kafka_cluster_factory(1)
    topic = "down-events"
    cluster.create_topic(topic, 2)
    lines = [(u, v) for u, v in _make_lines(3000, seed=17) if _partition_of(u) < 2]
    _produce_lines(cluster.bootstrap, topic, lines)
    job = Job(cluster.bootstrap, topic, redis_url, str(tmp_path / "ckpt"), prefix="down:")
    job.extra = ["--kafka-timeout", "1.5", "--max-records-per-partition", "20"]  # ~75 batches
    client = redis.Redis.from_url(redis_url)
    marker = "down:streamkeep:sink:users:last_batch"
    proc = job.start()
    down = False
    try:
        deadline = time.monotonic() + 60
        while client.get(marker) is None:  # a batch was applied: the job is mid-run
            assert proc.poll() is None, f"the job ended before the broker went down: {proc.returncode}"
            assert time.monotonic() < deadline, "the job applied no batch in 60 s"
            time.sleep(0.005)
        cluster.broker_down(1)
        down = True
        _, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.communicate()
        client.close()
        if down:
            cluster.broker_up(1)
    assert proc.returncode == 1, f"exit {proc.returncode}\n{err[-3000:]}"
    assert "SourceError" in err and "Check that the brokers are reachable" in err, err[-3000:]
    got, total = _redis_view(redis_url, "down:")
    assert int(total or 0) < len(lines), "the job had read everything before the broker went down"
    expect_ok(job.run(), "restart with the broker back")
    _check_totals(redis_url, "down:", "incr", _expected(lines), "after the broker came back")


def test_without_its_checkpoint_the_job_continues_from_the_group_offsets(kafka_cluster, topic_factory, redis_url, tmp_path):
    """starting_offsets='committed': the second seed's workaround (offsets outside the checkpoint), first-class."""
    bs = kafka_cluster.bootstrap
    topic = topic_factory(2)
    lines = [(u, v) for u, v in _make_lines(1200, seed=19) if _partition_of(u) < 2]
    _produce_lines(bs, topic, lines)
    group = f"k2r-committed-{uuid.uuid4().hex[:6]}"
    job = Job(bs, topic, redis_url, str(tmp_path / "ckpt-1"), prefix="gc:", group=group, extra=["--max-records-per-partition", "100"])
    job.extra += ["--max-batches", "3"]  # part of the topic, then stop (offsets committed to the group)
    expect_ok(job.run(), "first run, 3 batches")
    _, total = _redis_view(redis_url, "gc:")
    assert 0 < int(total or 0) < len(lines)
    fresh = Job(bs, topic, redis_url, str(tmp_path / "ckpt-2"), prefix="gc:", group=group, extra=["--starting-offsets", "committed"])
    r = fresh.run()
    expect_ok(r, "second run on a new checkpoint, from the group's offsets")
    assert "started with checkpoint" in r.stdout, r.stdout
    # HINCRBY adds deltas, which do not need the lost state: the totals continue exactly.
    _, total = _redis_view(redis_url, "gc:")
    assert total == str(len(lines)), f"events_total {total}, expected {len(lines)}"


def test_a_fresh_job_starts_after_its_sinks_markers(redis_url):
    """A new job (no checkpoint) must not reuse batch times its RedisSink already applied: they would be skipped."""
    import streamkeep as sk
    from streamkeep.sinks import RedisSink
    from streamkeep.testing import ManualClock

    def write(pipe: Any, records: list[int]) -> None:
        for x in records:
            pipe.incrby("fresh:n", x)

    times = []
    for _ in range(2):  # the same job twice from scratch, on a clock that starts at 0 both times
        ssc = sk.StreamingContext(1.0, clock=ManualClock())
        ssc.queue_stream([[1], [2], [3]], name="q").write_to(RedisSink(redis_url, write, name="fresh", marker_key="fresh:marker"))
        ssc.run()
        times.append(ssc.last_batch_time_ms)
        ssc.stop()
    client = redis.Redis.from_url(redis_url)
    try:
        assert client.get("fresh:n") == b"12", "the second job's batches were skipped by the first job's marker"
    finally:
        client.close()
    assert times[1] > times[0]
