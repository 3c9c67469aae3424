"""An event-time job catching up a Kafka backlog: SIGKILLed anywhere, batched any way, the same windows.

A topic on the real mock Kafka broker holds a backlog in three partitions whose event
times advance at different speeds (partition 0 covers 6 s of event time, partition 1
16 s, partition 2 12 s), each out of order by less than ``max_delay``. The child
(`_event_time_job.py` with a ``kafka`` spec) reads at most ``cap`` records per
partition and batch, so it catches up over many batches, sums values per key in
2-second tumbling windows, routes late records to a FileSink and flushes the last
windows with ``idle_timeout``.

* Batchings: with ``cap`` 3, 8 and 1000 (slow, medium, the whole backlog in one
  batch) the windows are identical and equal the brute-force windows of all records,
  and no record is late. With one watermark over all partitions, partition 0's records
  would be late behind partition 1 (the test fails on such an engine).
* Crash points: killed at every batch crash point while the backlog is being caught up
  (some twice, the second kill hitting the recovery's replay), then resumed: every
  batch file of both FileSinks equals the uncrashed run's with the same cap.
* Random instants: killed after a random delay (start-up and recovery included),
  several times in a row, then resumed: the same files again.
"""

from __future__ import annotations

import json
import math
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from streamkeep import _faults

sys.path.insert(0, str(Path(__file__).parent))
import _event_time_job as job  # noqa: E402
from _harness import MERGE_ONLY_POINTS, job_argv  # noqa: E402

pytest.importorskip("confluent_kafka")
pytestmark = [pytest.mark.slow, pytest.mark.faults]

PARTITIONS = ((120, 50), (40, 400), (80, 150))  # (records, event ms per record) per partition
DELAY_MS = 1500
IDLE_MS = 3000
SIZE_MS = 2000
CAP = 8  # records per partition and batch for the crash runs: 15 batches of backlog


def _records() -> list[list[list[Any]]]:
    """Per partition, records [key, event_ms, value] in the order produced (each partition out of order by < DELAY_MS)."""
    rng = random.Random(16)
    out = []
    for n, step in PARTITIONS:
        recs = []
        for i in range(n):
            e = max(0, i * step - rng.randrange(0, DELAY_MS // 100) * 100)
            recs.append([rng.choice("abc"), e, rng.randint(1, 9)])
        out.append(recs)
    return out


def _total(cap: int) -> int:
    """Batches to run: the backlog, then every partition idle, then the watermark past the last window."""
    data = max(math.ceil(n / cap) for n, _ in PARTITIONS)
    return data + IDLE_MS // 1000 + 2 + (SIZE_MS + DELAY_MS) // 1000 + 2


@pytest.fixture(scope="module")
def backlog(kafka_cluster: Any) -> dict[str, Any]:
    from _servers import produce

    name = f"evtime-backlog-{os.getpid()}-{time.monotonic_ns() % 1_000_000}"
    kafka_cluster.create_topic(name, len(PARTITIONS))
    recs = _records()
    for p, part in enumerate(recs):
        produce(kafka_cluster.bootstrap, name, [json.dumps(r) for r in part], partition=p)
    return {"bootstrap": kafka_cluster.bootstrap, "topic": name, "records": recs}


def _spec(backlog: dict[str, Any], cap: int, root: Path) -> dict[str, Any]:
    return {
        "window": "tumbling", "size_ms": SIZE_MS, "slide_ms": SIZE_MS, "max_delay_ms": DELAY_MS, "lateness_ms": 0,
        "idle_ms": IDLE_MS, "snapshot_every": 3, "batches": [],
        "kafka": {"bootstrap": backlog["bootstrap"], "topic": backlog["topic"], "cap": cap},
        "total": _total(cap), "ckpt": str(root / "ckpt"), "out": str(root / "out"),
    }


def _argv(spec: dict[str, Any], root: Path, merged: bool = False) -> list[str]:
    path = root / "spec.json"
    path.write_text(json.dumps(spec))
    return job_argv(job.__file__, str(path), merged=merged)


def _env(crash: str | None) -> dict[str, str]:
    env = dict(os.environ)
    env.pop(_faults.ENV_VAR, None)
    if crash is not None:
        env[_faults.ENV_VAR] = crash
    return env


def _run(spec: dict[str, Any], root: Path, crash: str | None = None, merged: bool = False) -> subprocess.CompletedProcess[str]:
    return subprocess.run(_argv(spec, root, merged), env=_env(crash), capture_output=True, text=True, timeout=180)


def _ok(r: subprocess.CompletedProcess[str], what: str) -> None:
    assert r.returncode == 0, f"{what}: exit {r.returncode}\n{r.stderr[-4000:]}"


def _flat(got: dict[str, dict[int, list[Any]]], name: str) -> list[Any]:
    return sorted(r for rs in got[name].values() for r in rs)


@pytest.fixture(scope="module")
def uncrashed(backlog: dict[str, Any], tmp_path_factory: pytest.TempPathFactory) -> dict[int, dict[str, dict[int, list[Any]]]]:
    """Per cap, the FileSinks' batch files of an uncrashed run."""
    runs = {}
    for cap in (3, CAP, 1000):
        root = tmp_path_factory.mktemp(f"et-backlog-{cap}")
        _ok(_run(_spec(backlog, cap, root), root), f"uncrashed run, cap {cap}")
        runs[cap] = job.read_file_sinks(str(root / "out"))
    return runs


def test_any_batching_of_the_backlog_gives_the_brute_force_windows(
    backlog: dict[str, Any], uncrashed: dict[int, dict[str, dict[int, list[Any]]]]
) -> None:
    everything = {"window": "tumbling", "size_ms": SIZE_MS, "slide_ms": SIZE_MS, "max_delay_ms": DELAY_MS, "lateness_ms": 0,
                  "batches": [[r for part in backlog["records"] for r in part]]}
    want, _ = job.model(everything, flushed=True)
    assert len(want) > 20
    for cap, got in uncrashed.items():
        assert _flat(got, "late") == [], f"cap {cap}: late records {_flat(got, 'late')}"
        assert _flat(got, "windows") == want, f"cap {cap}: windows differ from the brute-force model"
    # the slow run really caught up over many batches, emitting windows along the way
    slow = uncrashed[3]["windows"]
    assert sum(1 for t, rs in slow.items() if rs and t <= _data_batches(3) * 1000) >= 2


# Points every batch reaches (the queue's blob write is not one: Kafka plans hold offsets).
_POINTS = [p for p in _faults.BATCH_POINTS if p != "blob.after_write"]
_TWICE = ("state.after_write", "sink.before_write", "commit.before_record", "run.after_read")


def _data_batches(cap: int) -> int:
    return max(math.ceil(n / cap) for n, _ in PARTITIONS)


@pytest.mark.parametrize("point", _POINTS)
def test_kill_at_each_crash_point_while_catching_up_equals_the_uncrashed_run(
    point: str, backlog: dict[str, Any], uncrashed: dict[int, dict[str, dict[int, list[Any]]]], tmp_path: Path
) -> None:
    spec = _spec(backlog, CAP, tmp_path)
    crashes = [f"{point}@3"] + ([f"{point}@1"] if point in _TWICE else [])
    merged = point in MERGE_ONLY_POINTS  # reached only when snapshots are merged (a big state's path)
    for crash in crashes:
        r = _run(spec, tmp_path, crash, merged)
        assert r.returncode == -signal.SIGKILL, f"{crash}: expected the child to be killed, exit {r.returncode}\n{r.stderr[-3000:]}"
        written = job.read_file_sinks(str(tmp_path / "out"))["windows"]
        assert not written or max(written) < _data_batches(CAP) * 1000, f"{crash}: killed after the backlog was read ({sorted(written)})"
    _ok(_run(spec, tmp_path, None, merged), f"resume after {crashes}")
    got = job.read_file_sinks(str(tmp_path / "out"))
    want = uncrashed[CAP]
    for name in job.OUTPUTS:
        assert got[name] == want[name], f"{name} after kills {crashes}: {got[name]} != {want[name]}"


def test_kills_at_random_instants_equal_the_uncrashed_run(
    backlog: dict[str, Any], uncrashed: dict[int, dict[str, dict[int, list[Any]]]], tmp_path: Path
) -> None:
    seed = int(os.environ.get("STREAMKEEP_FAULT_SEED", time.time_ns() % 1_000_000))
    rng = random.Random(seed)
    timing_root = tmp_path / "timing"
    timing_root.mkdir()
    t0 = time.monotonic()
    _ok(_run(_spec(backlog, 3, timing_root), timing_root), "timing run")
    run_s = time.monotonic() - t0
    kills = 0
    for seq in range(6):  # two sequences at least; more while fewer than 3 kills landed (a kill after the run ended misses)
        if seq >= 2 and kills >= 3:
            break
        root = tmp_path / f"seq{seq}"
        root.mkdir()
        spec = _spec(backlog, 3, root)
        for _ in range(4):
            proc = subprocess.Popen(_argv(spec, root), env=_env(None), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
            try:
                time.sleep(rng.uniform(0.1, run_s * 0.8))  # a random instant of the run, start-up and recovery included
                if proc.poll() is None:
                    proc.send_signal(signal.SIGKILL)
                _, err = proc.communicate(timeout=120)
            finally:
                if proc.poll() is None:
                    proc.kill()
                    proc.wait()
            assert proc.returncode in (0, -signal.SIGKILL), f"seed {seed}: exit {proc.returncode}\n{err[-3000:]}"
            if proc.returncode == 0:
                break
            kills += 1
        _ok(_run(spec, root), f"seed {seed}: resume of sequence {seq}")
        got = job.read_file_sinks(str(root / "out"))
        for name in job.OUTPUTS:
            assert got[name] == uncrashed[3][name], f"seed {seed}, sequence {seq}: {name} differs from the uncrashed run"
    assert kills >= 3, f"seed {seed}: only {kills} kills landed (the run is too short to be hit)"
