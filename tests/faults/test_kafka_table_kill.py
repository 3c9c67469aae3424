"""SIGKILL a Kafka table job (``kafka_stream(tables=...)``, issue 15) at every batch crash point.

The child (`_kafka_table_job.py`) reads JSON records of a mock-broker topic as one Arrow
table per partition and batch and keeps an ``aggregate_state`` (count, sum, highest offset
per key). It is killed at a reach of each crash point (twice for some: the second kill hits
recovery), then resumed with ``get_or_create`` until done. Every output file must equal the
uncrashed run's, which must equal the model computed here from the produced records: the
offsets a table holds are exactly the checkpointed plan's, none twice and none missing.
"""

from __future__ import annotations

import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

import pytest
from _servers import produce

from streamkeep import _faults

sys.path.insert(0, str(Path(__file__).parent))
import _kafka_table_job as job  # noqa: E402
from _harness import MERGE_ONLY_POINTS, kill_then_resume, run_spec_job  # noqa: E402

pytestmark = [pytest.mark.slow, pytest.mark.faults, pytest.mark.integration]

PARTITIONS, CAP, BATCHES = 3, 20, 8
N = PARTITIONS * CAP * (BATCHES - 1) - 7  # the last batch is short in one partition, and one more batch finds nothing


def _run(spec: dict[str, Any], root: Path, crash: str | None, merged: bool = False) -> subprocess.CompletedProcess[str]:
    return run_spec_job(job.__file__, spec, root, crash, merged=merged)


def _finished(spec: dict[str, Any], root: Path, crashes: list[str], merged: bool = False) -> dict[int, list[Any]]:
    """Outputs after being killed at each of `crashes` and resumed; with `merged`, every snapshot is merged."""
    kill_then_resume(job.__file__, spec, root, crashes, merged=merged)
    return job.read_outputs(str(root / "out"))


@pytest.fixture(scope="module")
def baseline(kafka_cluster: Any, tmp_path_factory: pytest.TempPathFactory) -> tuple[dict[str, Any], dict[int, list[Any]]]:
    topic = f"kafka-table-kill-{uuid.uuid4().hex[:8]}"
    kafka_cluster.create_topic(topic, PARTITIONS)
    produce(kafka_cluster.bootstrap, topic, job.values(N), partition=lambda i: i % PARTITIONS)
    spec = {"bootstrap": kafka_cluster.bootstrap, "topic": topic, "partitions": PARTITIONS, "cap": CAP, "total": BATCHES}
    got = _finished(spec, tmp_path_factory.mktemp("kafka-tables-base"), [])
    want = job.model(spec, N)
    assert got == want, "the uncrashed run differs from the model"
    assert len(want) == BATCHES and all(want[t] for t in sorted(want)[:-1]) and not want[BATCHES * 1000]
    return spec, got


# Points a Kafka table job reaches every batch (no blobs: a Kafka plan is offsets; compaction is for merged snapshots).
_POINTS = [p for p in _faults.BATCH_POINTS if p not in ("blob.after_write", "snapshot.mid_compact")]


@pytest.mark.parametrize("point", _POINTS)
def test_kill_at_each_crash_point_equals_the_uncrashed_run(point: str, baseline: tuple[dict[str, Any], dict[int, list[Any]]], tmp_path: Path) -> None:
    spec, want = baseline
    reach = 1 if point.startswith(("snapshot.", "retention.")) else 4
    crashes = [f"{point}@{reach}"] + ([f"{point}@1"] if point in ("state.after_write", "sink.before_write", "commit.before_record") else [])
    got = _finished(spec, tmp_path, crashes, merged=point in MERGE_ONLY_POINTS)
    assert got == want, f"after kills {crashes}: {got} != {want}"
