"""Named crash points for fault-injection tests.

The engine calls ``point("commit.after_record")`` at each step of the batch
protocol. Points are no-ops unless a test armed one in a child process through
the ``STREAMKEEP_CRASH_AT`` environment variable (``"<point>@<n>"``: SIGKILL this
process the n-th time the point is reached, counting from 1). Every point is
listed in `POINTS`, so the fault suite covers new points automatically; the
groups below say which part of the suite reaches each one (a point reached on
every batch of the fault job, once per driver start, only while recovering,
or only by a Kafka job).
Imports nothing from streamkeep.
"""

from __future__ import annotations

import os
import signal

ENV_VAR = "STREAMKEEP_CRASH_AT"

#: Points every batch of a checkpointed job reaches, in protocol order (the main matrix).
BATCH_POINTS: tuple[str, ...] = (
    "blob.after_write",
    "plan.before_write",
    "plan.torn_append",
    "plan.after_write",
    "run.after_read",
    "sink.before_write",
    "sink.after_write",
    "state.mid_write",
    "state.after_write",
    "commit.before_record",
    "commit.after_record",
    "snapshot.mid_compact",
    "snapshot.mid_write",
    "snapshot.before_adopt",
    "retention.mid_delete",
    "storage.torn_write",
)

#: Points a driver reaches once per start: the checkpoint's identity (first start only), its
#: claim record in the commit log, its lease, and the graph file its commit records name (made sure of
#: before its first commit: written, or found whole).
START_POINTS: tuple[str, ...] = ("identity.after_write", "claim.before_record", "claim.after_record", "lease.after_write", "graph.after_write")

#: Points reached while recovering: deleting crash leftovers no commit or pending plan needs.
RECOVERY_POINTS: tuple[str, ...] = ("recovery.mid_sweep",)

#: Points of Kafka jobs: the (informational) offset commit to the consumer group after a commit,
#: and the KafkaSink's transaction (records sent, marker sent, transaction committed).
KAFKA_POINTS: tuple[str, ...] = ("source.after_offset_commit",)
KAFKA_SINK_POINTS: tuple[str, ...] = ("kafka_sink.after_send", "kafka_sink.after_marker", "kafka_sink.after_commit")

#: Points of the pipelined commit: "commit.overtaken" is reached after a batch's outputs ran while
#: an earlier batch's commit was still being written. Armed, it also holds each commit back until
#: the next batch's outputs ran, so the crash always lands in that window (tests/faults/test_commit_pipeline.py).
PIPELINE_POINTS: tuple[str, ...] = ("commit.overtaken",)

#: Points of a clean stop that waited for a snapshot merge: before and after the one more commit record of
#: the last batch that names the merged snapshot (tests/faults/test_stop_snapshot.py).
STOP_POINTS: tuple[str, ...] = ("stop.before_snapshot_commit", "stop.after_snapshot_commit")

#: Every crash point.
POINTS: tuple[str, ...] = BATCH_POINTS + START_POINTS + RECOVERY_POINTS + KAFKA_POINTS + KAFKA_SINK_POINTS + PIPELINE_POINTS + STOP_POINTS


class _Armed:
    """The point this process should die at (read once from the environment)."""

    __slots__ = ("count", "name", "target")

    def __init__(self) -> None:
        spec = os.environ.get(ENV_VAR, "")
        name, _, nth = spec.partition("@")
        self.name = name if name in POINTS else ""
        self.target = int(nth) if nth.isdigit() else 1
        self.count = 0


_ARMED = _Armed()


def armed(name: str) -> bool:
    """True when a test armed the point `name` in this process."""
    return _ARMED.name == name


def point(name: str) -> None:
    """Crash here (SIGKILL, no cleanup) if a test armed this point; else do nothing."""
    armed = _ARMED
    if armed.name == name:
        armed.count += 1
        if armed.count >= armed.target:
            os.kill(os.getpid(), signal.SIGKILL)


def is_armed() -> bool:
    """True when this process has a crash point armed (tests only)."""
    return bool(_ARMED.name)
