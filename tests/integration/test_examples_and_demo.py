"""The examples and the demo run as users run them (real processes)."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from _signalled_job import with_default_disposition

ROOT = Path(__file__).resolve().parents[2]
STREAMKEEP = [sys.executable, "-m", "streamkeep.cli"]


def test_wordcount_example_resumes_after_restart(tmp_path: Path) -> None:
    inp = tmp_path / "in"
    inp.mkdir()
    ckpt = tmp_path / "ckpt"
    cmd = [sys.executable, str(ROOT / "examples" / "wordcount.py"), "--input", str(inp), "--checkpoint", str(ckpt), "--max-batches", "1"]
    subprocess.run(cmd, check=True, capture_output=True, timeout=60)  # first run: existing files are not "new"
    (inp / "a.txt").write_text("to be or not to be\n")
    out1 = subprocess.run(cmd, check=True, capture_output=True, text=True, timeout=60).stdout
    assert "('to', 2)" in out1 and "('be', 2)" in out1
    (inp / "b.txt").write_text("to do\n")
    out2 = subprocess.run(cmd, check=True, capture_output=True, text=True, timeout=60).stdout
    assert "('to', 3)" in out2 and "('be', 2)" in out2 and "('do', 1)" in out2


def _totals(text: str) -> list[int]:
    return [int(m) for m in re.findall(r"words so far:\s+(\d+)", text)]


@pytest.mark.slow
def test_demo_kill_and_resume(tmp_path: Path) -> None:
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    cmd = [*STREAMKEEP, "demo", "--seconds", "30", "--interval", "0.2", "--checkpoint", str(tmp_path / "ck")]
    seen = []
    with subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True, env=env, cwd=tmp_path) as proc:
        assert proc.stdout is not None
        try:
            deadline = time.monotonic() + 30
            first = proc.stdout.readline()
            for line in proc.stdout:
                seen += _totals(line)
                if len(seen) >= 4 or time.monotonic() > deadline:
                    break
        finally:
            proc.send_signal(signal.SIGKILL)
            proc.wait(timeout=10)
    assert re.match(r"fresh start at \d\d:\d\d:\d\d\.\d{3}; ", first), first
    assert f"run `streamkeep demo --checkpoint {tmp_path / 'ck'}` to resume" in first, first  # the command that resumes it
    assert len(seen) >= 4, seen
    out = subprocess.run([*cmd[:-4], "--seconds", "1.5", "--interval", "0.2", "--checkpoint", str(tmp_path / "ck")],
                         capture_output=True, text=True, env=env, cwd=tmp_path, timeout=60).stdout
    assert re.search(r"resumed from checkpoint .*: the last committed batch is of \d\d:\d\d:\d\d\.\d{3}", out), out
    assert re.search(r"^stopped; the last committed batch is of \d\d:\d\d:\d\d\.\d{3}\. Run `streamkeep demo --checkpoint ", out, re.M), out
    after = _totals(out)
    assert after and after[0] > seen[-1] - 200 and after == sorted(after)  # counts continue, never restart from 0
    assert after[0] >= seen[0]


def test_demo_killed_before_its_first_commit_says_it_resumes(tmp_path: Path) -> None:
    """Killed before its first commit, the demo said "fresh start at 12:00:01" at the restart and then printed
    the replayed batch of 12:00:00.5: it now says it resumes and replays the planned batch."""
    env = {k: v for k, v in os.environ.items() if k != "STREAMKEEP_CRASH_AT"}
    cmd = [*STREAMKEEP, "demo", "--seconds", "1", "--interval", "0.2", "--checkpoint", str(tmp_path / "ck")]
    killed = subprocess.run(cmd, capture_output=True, text=True, env={**env, "STREAMKEEP_CRASH_AT": "commit.before_record@1"},
                            cwd=tmp_path, timeout=60)
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-2000:]
    first = _totals(killed.stdout)
    ran = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=tmp_path, timeout=60)
    out = ran.stdout
    assert re.match(r"resumed from checkpoint .*: no batch was committed before it stopped; replaying its 1 planned batch first", out), out
    assert "resumed" not in ran.stderr, ran.stderr  # said once, by the demo (not streamkeep's stderr line about it too)
    again = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=tmp_path, timeout=60)  # after a commit
    assert again.stdout.startswith("resumed from checkpoint") and "resumed" not in again.stderr, again
    assert first and _totals(out)[: len(first)] == first  # the same batch, counted once


@pytest.mark.slow
def test_demo_interrupted_with_ctrl_c_says_stopped_once_and_resumes(tmp_path: Path) -> None:
    """Ctrl-C printed two "stopped; ..." lines (the engine's, naming get_or_create, and the demo's own)."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    ck = str(tmp_path / "ck")
    cmd = [*STREAMKEEP, "demo", "--seconds", "60", "--interval", "0.2", "--checkpoint", ck]
    seen: list[int] = []
    # SIGINT's default disposition even when the suite runs in the background (see _signalled_job)
    launch = with_default_disposition(cmd, signal.SIGINT)
    with subprocess.Popen(launch, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env, cwd=tmp_path) as proc:
        assert proc.stdout is not None
        deadline = time.monotonic() + 60
        for line in proc.stdout:
            seen += _totals(line)
            if len(seen) >= 3 or time.monotonic() > deadline:
                break
        proc.send_signal(signal.SIGINT)
        rest = proc.stdout.read()
        assert proc.wait(timeout=60) == 0, rest
    assert len(seen) >= 3, seen
    assert "interrupted: stopping after the batch in progress" in rest, rest
    assert len(re.findall(r"^stopped", rest, re.M)) == 1, rest
    assert f"Run `streamkeep demo --checkpoint {ck}` again to continue the counts." in rest, rest
    out = subprocess.run([*cmd[:-6], "--seconds", "1", "--interval", "0.2", "--checkpoint", ck],
                         capture_output=True, text=True, env=env, cwd=tmp_path, timeout=60).stdout
    assert "resumed from checkpoint" in out, out
    after = _totals(out)
    assert after and after[0] > seen[-1], (seen, after)


@pytest.mark.integration
def test_kafka_windows_example_is_exact_after_a_kill_between_redis_and_the_commit(
    tmp_path: Path, kafka_cluster: Any, redis_server: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """examples/kafka_windows_to_redis.py, SIGKILLed after a sink's Redis write and before the batch's commit,
    then resumed: Redis holds what an uncrashed run writes (the INCRBY total and the RPUSHed sessions once each),
    and the inverse window's hash is emptied once every user's window went back to 0 (and its state holds no dead
    user); malformed records go to the dead-letter list once, instead of failing the batch on every restart."""
    import redis
    from _servers import produce

    topic = f"win-{os.getpid()}-{time.monotonic_ns()}"
    kafka_cluster.create_topic(topic, 2)
    lines = [f"u{i % 7},click,/p{i}".encode() for i in range(60)]
    lines[10:10] = [b"no comma here", b"\xff\xfe,click"]  # malformed: dead-lettered, not a failed batch on every restart
    produce(kafka_cluster.bootstrap, topic, lines, partition=lambda i: i % 2)
    r = redis.Redis.from_url(redis_server)

    def cmd(prefix: str, batches: int) -> list[str]:
        return [sys.executable, str(ROOT / "examples" / "kafka_windows_to_redis.py"), "--bootstrap-servers", kafka_cluster.bootstrap,
                "--topic", topic, "--redis-url", redis_server, "--checkpoint", str(tmp_path / prefix), "--prefix", f"{topic}:{prefix}:",
                "--window", "4", "--slide", "2", "--idle", "3", "--max-batches", str(batches)]

    env = {k: v for k, v in os.environ.items() if k != "STREAMKEEP_CRASH_AT"}
    subprocess.run(cmd("clean", 8), check=True, capture_output=True, timeout=120, env=env)
    crashed = subprocess.run(cmd("crash", 8), capture_output=True, text=True, timeout=120, env={**env, "STREAMKEEP_CRASH_AT": "sink.after_write@2"})
    assert crashed.returncode == -signal.SIGKILL, crashed.stderr[-2000:]
    assert "kafka_windows_to_redis: started with checkpoint" in crashed.stdout, crashed.stdout
    rerun = subprocess.run(cmd("crash", 8), check=True, capture_output=True, text=True, timeout=120, env=env)  # no commit before the kill
    assert "kafka_windows_to_redis: resumed from checkpoint" in rerun.stdout and "replaying 1 planned batch" in rerun.stdout, rerun.stdout

    def redis_state(prefix: str) -> tuple[Any, ...]:
        p = f"{topic}:{prefix}:"
        # dead letters: each once; their order follows the batches the runs planned (the partitions' records may fall apart)
        return r.get(p + "events_total"), r.hgetall(p + "window"), r.lrange(p + "sessions", 0, -1), sorted(r.lrange(p + "dead_letters", 0, -1))

    total, window, sessions, dead = redis_state("clean")
    assert total == b"60" and window == {}
    assert sorted(json.loads(d)["value"] for d in dead) == sorted(["no comma here", "\\xff\\xfe,click"])
    assert sorted(sessions) == sorted(f"u{u}:{len(range(u, 60, 7))}".encode() for u in range(7))
    assert redis_state("crash") == redis_state("clean")
    again = subprocess.run(cmd("clean", 1), check=True, capture_output=True, text=True, timeout=120, env=env)
    assert "kafka_windows_to_redis: resumed from checkpoint" in again.stdout, again.stdout  # a restart says so
    assert "resumed" not in again.stderr and "resumed" not in rerun.stderr, again.stderr + rerun.stderr  # once
    from streamkeep.cli._inspect import inspect

    # filter_f drops the users whose window count is back to 0: the window keeps no dead users (work per slide)
    capsys.readouterr()
    assert inspect(str(tmp_path / "clean"), as_json=True) == 0
    assert json.loads(capsys.readouterr().out)["operators"]["window_counts"]["keys"] == 0
