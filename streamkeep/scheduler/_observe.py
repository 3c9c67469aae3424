"""Building the listener events from the scheduler's state (only when listeners exist).

Kept apart from the batch loop so that the loop only times its phases and calls
these builders. Must not import context, cli or ui.
"""

from __future__ import annotations

import logging
import sys
from typing import Any

from streamkeep._util import info_shown
from streamkeep.executors.base import EventTimeReporting
from streamkeep.scheduler._events import BatchInfo, JobStarted, batch_extra, iso_ms, log
from streamkeep.scheduler._state_io import encode_state

#: The resume line when INFO is not shown. A program that prints its own resume message (from
#: ``ssc.restored`` / ``ssc.replays_left``, as the demo and the Kafka examples do) turns it off with
#: ``logging.getLogger("streamkeep.resume").setLevel(logging.ERROR)``.
resume_log = logging.getLogger("streamkeep.resume")


def _partition_order(keys: Any) -> list[str]:
    """Kafka plan keys ("topic:partition") in the order `KafkaSource.read` returns their records."""

    def order(k: str) -> tuple[str, int]:
        topic, _, part = k.rpartition(":")
        return (topic, int(part)) if part.isdigit() else (k, -1)

    return sorted(keys, key=order)


def batch_info(
    sched: Any,
    t: int,
    plan: dict[str, Any],
    counts: dict[str, int],
    submitted: int,
    start: int,
    end: int,
    marks: tuple[float, float, float, float],
    written_before: int,
    replay: bool,
) -> BatchInfo:
    """The `BatchInfo` of batch `t` just committed by `sched` (a `Scheduler`)."""
    p0, p1, p2, p3 = marks
    outputs_ms = sched._t_outputs * 1e3
    per_partition: dict[str, dict[str, int]] = {}
    lag: dict[str, dict[str, int]] = {}
    planned = plan.get("sources", {})
    kafka = sys.modules.get("streamkeep.sources.kafka")  # not imported: no source is a KafkaSource
    for src in sched.sources:
        if kafka is not None and isinstance(src, kafka.KafkaSource):
            keys = _partition_order(planned.get(src.name) or {})
            parts = sched._part_counts.get(src.name, [])
            if len(keys) == len(parts):
                per_partition[src.name] = dict(zip(keys, parts, strict=True))
            if not replay:
                lag[src.name] = dict(src.last_lag)
    ex = sched.executor
    names = ex.operators()
    writer = sched.writer
    snap = writer is not None and writer.started
    if not snap:
        sched.sizer.measure(t, names, lambda name: len(encode_state(sched.stateful[name], ex.snapshot(name))))
    ckpt = sched.ckpt
    written = (ckpt.written_bytes() - written_before) if ckpt is not None else 0
    restart_bytes, restart_deltas = writer.restart_cost() if writer is not None else (0, 0)
    info = BatchInfo(
        t,
        sum(counts.values()),
        submitted,
        start,
        end,
        records_per_source=dict(counts),
        records_per_partition=per_partition,
        plan_ms=(p1 - p0) * 1e3,
        compute_ms=max(0.0, (p2 - p1) * 1e3 - outputs_ms),
        outputs_ms=outputs_ms,
        commit_ms=(p3 - p2) * 1e3,
        operator_ms=ex.timings(),
        state=sched.sizer.info({name: ex.key_count(name) for name in names}),
        checkpoint_bytes=written,
        checkpoint_write_ms=((p3 - p2) + (sched._t_plan_write if not replay else 0.0)) * 1e3 if ckpt is not None else 0.0,
        snapshot=snap,
        replayed=replay,
        pending_batches=len(sched._pending),
        restart_bytes=restart_bytes,
        restart_deltas=restart_deltas,
        kafka_lag=lag,
        event_time=ex.event_time() if isinstance(ex, EventTimeReporting) else {},
    )
    sched._t_plan_write = 0.0
    return info


def job_started(sched: Any, mode: str, now_ms: int, checkpoint: str | None) -> JobStarted:
    """The `JobStarted` event of `sched` about to run its first batch; also logs it at INFO."""
    interval = sched.interval
    pending = [pt for pt, _ in sched._pending]
    nxt = sched.next_time()
    after = (pending[-1] if pending else sched.last_time) + interval
    catch_up = max(0, (now_ms - after) // interval + 1) if sched.restored and now_ms >= after else 0
    commit = sched.last_time if sched.restored else None
    ev = JobStarted(
        nxt,
        sched.restored,
        commit,
        len(pending),
        catch_up,
        mode,
        interval,
        checkpoint,
        [s.name for s in sched.sources],
        sched.executor.operators(),
    )
    text = describe_start(ev)
    if (ev.restored or ev.replay_batches) and not info_shown(log):
        # An INFO line would not be shown (no logging configured: Python's last-resort handler shows WARNING and
        # up; or logging.basicConfig() at its default WARNING), and a restart must not look like a fresh start:
        # one WARNING line, on `resume_log` (a program that says itself that it resumed turns it off there).
        resume_log.warning("streamkeep: %s", text, extra=batch_extra(nxt))
    else:
        log.info("%s", text, extra=batch_extra(nxt))
    return ev


def describe_start(ev: JobStarted) -> str:
    """One sentence saying what a starting job does ("resumed from the commit of ...; replaying ...")."""
    where = f" (checkpoint {ev.checkpoint})" if ev.checkpoint else " (no checkpoint)"
    if not ev.restored:
        if ev.replay_batches:  # an earlier run planned batches but stopped before its first commit: not a fresh start
            n = ev.replay_batches
            return (
                f"resumed{where}: no batch was committed before it stopped; replaying its {n} planned "
                f"batch{'es' if n != 1 else ''} first (the input they planned), from batch {iso_ms(ev.batch_time_ms)}"
            )
        return f"started fresh{where}, first batch {iso_ms(ev.batch_time_ms)}, one batch every {ev.batch_interval_ms / 1000:g} s"
    parts = [f"resumed from the commit of batch {iso_ms(ev.commit_batch_ms)}{where}"]
    if ev.replay_batches:
        parts.append(f"replaying {ev.replay_batches} planned batch{'es' if ev.replay_batches != 1 else ''}")
    if ev.catch_up_batches:
        verb = "then catching up" if ev.replay_batches else "catching up"
        parts.append(f"{verb} {ev.catch_up_batches} batch{'es' if ev.catch_up_batches != 1 else ''} missed while stopped")
    if len(parts) == 1:
        parts.append(f"next batch {iso_ms(ev.batch_time_ms)}")
    return "; ".join(parts)
