"""`StatusCollector`: a listener that keeps what the dashboard, /api/status and /metrics show.

All callbacks run in the job's thread; the HTTP handlers read under the same lock.
Prometheus metrics live in the collector's own registry (several jobs in one
process do not clash). prometheus-client is imported here, lazily from the context.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable
from typing import Any

from streamkeep.errors import ConfigError
from streamkeep.scheduler import BatchInfo, BatchPlanned, BatchReplayed, ErrorInfo, JobStarted, JobStopped, SnapshotCompleted
from streamkeep.scheduler._events import iso_ms

#: seconds buckets for batch processing and scheduling delay histograms
_BUCKETS = (0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)


def _prom() -> Any:
    try:
        import prometheus_client
    except ImportError as exc:
        msg = "the dashboard and /metrics need prometheus-client: pip install 'streamkeep[ui]' (or run with ui_port=None)"
        raise ConfigError(msg) from exc
    return prometheus_client


class StatusCollector:
    """Listens to one job and keeps its status (recent batches, state, checkpoint) and Prometheus metrics.

    Args:
        job_state: returns the context's state ("initialized", "active", "stopped").
        keep_batches: how many recent batches the status keeps.
    """

    def __init__(self, job_state: Callable[[], str] = lambda: "active", keep_batches: int = 300) -> None:
        pc = _prom()
        self._job_state = job_state
        self._lock = threading.Lock()
        self.registry = pc.CollectorRegistry(auto_describe=True)
        r = self.registry
        self.m_batches = pc.Counter("streamkeep_batches_completed", "Batches run and committed.", registry=r)
        self.m_processing = pc.Histogram(
            "streamkeep_batch_processing_seconds", "Time from the start of a batch to its commit.", buckets=_BUCKETS, registry=r
        )
        self.m_sched = pc.Histogram(
            "streamkeep_batch_scheduling_delay_seconds", "Wait between a batch's time and the start of its processing.", buckets=_BUCKETS, registry=r
        )
        self.m_records = pc.Counter("streamkeep_input_records", "Records read, per source.", ["source"], registry=r)
        self.m_keys = pc.Gauge("streamkeep_state_keys", "Keys held per stateful operator (windows: records).", ["operator"], registry=r)
        self.m_state_bytes = pc.Gauge(
            "streamkeep_state_bytes", "Encoded state size per stateful operator (as last measured).", ["operator"], registry=r
        )
        self.m_ckpt_bytes = pc.Counter(
            "streamkeep_checkpoint_write_bytes", "Bytes written to the checkpoint (batches and snapshots).", registry=r
        )
        self.m_ckpt_seconds = pc.Histogram(
            "streamkeep_checkpoint_write_seconds", "Checkpoint write time per batch (plan+commit) and per snapshot.", buckets=_BUCKETS, registry=r
        )
        self.m_last_commit = pc.Gauge(
            "streamkeep_last_committed_batch_timestamp_seconds", "Batch time of the last committed batch (s since the epoch).", registry=r
        )
        self.m_lag = pc.Gauge("streamkeep_kafka_consumer_lag", "Records on the broker after the planned position.", ["topic", "partition"], registry=r)
        self.m_late = pc.Counter(
            "streamkeep_late_records", "Records behind the watermark of an event-time window operator (to late_records() or dropped).",
            ["operator"], registry=r,
        )
        self.m_watermark = pc.Gauge(
            "streamkeep_event_time_watermark_seconds", "Watermark of an event-time window operator (event time, s since the epoch).",
            ["operator"], registry=r,
        )
        self.m_failures = pc.Counter("streamkeep_failures", "Job failures by kind (exception class).", ["kind"], registry=r)
        self._generate = pc.generate_latest
        self.content_type = pc.CONTENT_TYPE_LATEST
        self.started: dict[str, Any] | None = None
        self.started_wall_ms = int(time.time() * 1000)
        self.batches: deque[dict[str, Any]] = deque(maxlen=keep_batches)
        self.records_total: dict[str, int] = {}
        self.batches_total = 0
        self.state: dict[str, dict[str, Any]] = {}
        self.kafka_lag: dict[str, dict[str, int]] = {}
        self.failures: dict[str, int] = {}
        self.last_error: dict[str, Any] | None = None
        self.snapshots: deque[dict[str, Any]] = deque(maxlen=50)
        self.replayed = 0
        self.planned: int | None = None
        self.stopped: dict[str, Any] | None = None
        self.ckpt_bytes_total = 0
        self.last_info: BatchInfo | None = None

    # -- listener callbacks --------------------------------------------------------------

    def on_job_started(self, event: JobStarted) -> None:
        """Remember how the job started."""
        from streamkeep.scheduler._observe import describe_start

        with self._lock:
            self.started = {**event.__dict__, "description": describe_start(event), "wall_ms": int(time.time() * 1000)}

    def on_batch_planned(self, event: BatchPlanned) -> None:
        """Remember the batch in flight."""
        with self._lock:
            self.planned = event.batch_time_ms

    def on_batch_completed(self, info: BatchInfo) -> None:
        """Record one batch: metrics and the recent-batches table."""
        self.m_batches.inc()
        self.m_processing.observe(info.processing_delay_ms / 1000)
        self.m_sched.observe(info.scheduling_delay_ms / 1000)
        for src, n in info.records_per_source.items():
            self.m_records.labels(src).inc(n)
        for op, st in info.state.items():
            self.m_keys.labels(op).set(st.keys)
            if st.bytes is not None:
                self.m_state_bytes.labels(op).set(st.bytes)
        if info.checkpoint_bytes:
            self.m_ckpt_bytes.inc(info.checkpoint_bytes)
            self.m_ckpt_seconds.observe(info.checkpoint_write_ms / 1000)
            self.m_last_commit.set(info.batch_time_ms / 1000)
        for op, et in info.event_time.items():
            self.m_late.labels(op).inc(et.get("late_records") or 0)
            if et.get("watermark_ms") is not None:
                self.m_watermark.labels(op).set(et["watermark_ms"] / 1000)
        for parts in info.kafka_lag.values():
            for key, lag in parts.items():
                topic, _, part = key.rpartition(":")
                self.m_lag.labels(topic, part).set(lag)
        row = {
            "t": info.batch_time_ms,
            "time": iso_ms(info.batch_time_ms),
            "records": info.num_records,
            "sources": info.records_per_source,
            "partitions": info.records_per_partition,
            "sched_ms": info.scheduling_delay_ms,
            "proc_ms": info.processing_delay_ms,
            "total_ms": info.total_delay_ms,
            "plan_ms": round(info.plan_ms, 3),
            "compute_ms": round(info.compute_ms, 3),
            "outputs_ms": round(info.outputs_ms, 3),
            "commit_ms": round(info.commit_ms, 3),
            "operators_ms": {k: round(v, 3) for k, v in info.operator_ms.items()},
            "ckpt_bytes": info.checkpoint_bytes,
            "ckpt_ms": round(info.checkpoint_write_ms, 3),
            "snapshot": info.snapshot,
            "replayed": info.replayed,
            "end_ms": info.processing_end_ms,
            "state": {k: {"keys": v.keys, "bytes": v.bytes} for k, v in info.state.items()},
            "event_time": {k: dict(v) for k, v in info.event_time.items()},
        }
        with self._lock:
            self.batches.append(row)
            self.batches_total += 1
            self.ckpt_bytes_total += info.checkpoint_bytes
            for src, n in info.records_per_source.items():
                self.records_total[src] = self.records_total.get(src, 0) + n
            self.state = {k: {"keys": v.keys, "bytes": v.bytes, "bytes_at": iso_ms(v.bytes_at_ms) if v.bytes_at_ms else None} for k, v in info.state.items()}
            self.kafka_lag = {s: dict(p) for s, p in info.kafka_lag.items()} or self.kafka_lag
            self.last_info = info
            self.planned = None

    def on_batch_replayed(self, event: BatchReplayed) -> None:
        """Count batches re-run by recovery."""
        with self._lock:
            self.replayed += 1

    def on_snapshot_completed(self, event: SnapshotCompleted) -> None:
        """Record a snapshot."""
        self.m_ckpt_bytes.inc(event.bytes)
        self.m_ckpt_seconds.observe(event.write_ms / 1000)
        with self._lock:
            self.ckpt_bytes_total += event.bytes
            self.snapshots.append(
                {"t": event.batch_time_ms, "time": iso_ms(event.batch_time_ms), "bytes": event.bytes, "write_ms": round(event.write_ms, 3),
                 "operators": event.operators, "wall_ms": int(time.time() * 1000)}
            )

    def on_error(self, event: ErrorInfo) -> None:
        """Count a failure."""
        self.m_failures.labels(event.kind).inc()
        with self._lock:
            self.failures[event.kind] = self.failures.get(event.kind, 0) + 1
            self.last_error = {"t": event.batch_time_ms, "time": iso_ms(event.batch_time_ms), "kind": event.kind, "message": event.message}

    def on_job_stopped(self, event: JobStopped) -> None:
        """Remember the stop."""
        with self._lock:
            self.stopped = {"t": event.batch_time_ms, "time": iso_ms(event.batch_time_ms), "batches": event.batches, "failed": event.failed}

    # -- views ------------------------------------------------------------------------------

    def metrics(self) -> bytes:
        """The Prometheus text exposition."""
        return bytes(self._generate(self.registry))

    def health(self) -> tuple[bool, str]:
        """(healthy, reason): the job runs and keeps up (the last batch started within 5 intervals of its time)."""
        state = self._job_state()
        if state != "active":
            return False, f"job is {state}"
        with self._lock:
            info, started = self.last_info, self.started
        if started is None:
            return False, "job not started yet"
        interval = int(started["batch_interval_ms"])
        if info is not None and started["mode"] == "start":
            limit = max(5 * interval, 10_000)
            if info.scheduling_delay_ms > limit:
                return False, f"falling behind: last batch started {info.scheduling_delay_ms / 1000:.3f} s after its time (limit {limit / 1000:g} s)"
        return True, "ok"

    def status(self) -> dict[str, Any]:
        """Everything the dashboard shows, as JSON-able data."""
        now = int(time.time() * 1000)
        healthy, reason = self.health()
        with self._lock:
            batches = list(self.batches)
            started = dict(self.started) if self.started else None
            snaps = list(self.snapshots)
            info = self.last_info
            out: dict[str, Any] = {
                "now_ms": now,
                "job": {
                    "state": self._job_state(),
                    "healthy": healthy,
                    "health": reason,
                    "started": started,
                    "stopped": self.stopped,
                    "batches_completed": self.batches_total,
                    "batches_replayed": self.replayed,
                    "in_flight": self.planned,
                    "records_total": dict(self.records_total),
                    "failures": dict(self.failures),
                    "last_error": self.last_error,
                },
                "state": {k: dict(v) for k, v in self.state.items()},
                "kafka_lag": {s: dict(p) for s, p in self.kafka_lag.items()},
                "batches": batches,
            }
        out["checkpoint"] = self._checkpoint_panel(started, batches, snaps, info, now)
        return out

    def _checkpoint_panel(self, started: dict[str, Any] | None, batches: list[dict[str, Any]], snaps: list[dict[str, Any]], info: BatchInfo | None, now: int) -> dict[str, Any]:
        ck = started.get("checkpoint") if started else None
        if ck is None:
            return {"enabled": False}
        recent = batches[-50:]
        per_batch = sum(b["ckpt_bytes"] for b in recent) / len(recent) if recent else 0.0
        ckpt_ms = sum(b["ckpt_ms"] for b in recent)
        write_rate = (sum(b["ckpt_bytes"] for b in recent) / (ckpt_ms / 1000)) if ckpt_ms > 0 else None
        proc = sorted(b["proc_ms"] for b in recent)
        median_proc = proc[len(proc) // 2] if proc else 0
        last_snap = snaps[-1] if snaps else None
        restart_bytes = info.restart_bytes if info else 0
        pending = info.pending_batches if info else 0
        # Reading a chain back costs about what writing it did (same storage); then the planned-but-uncommitted
        # batches re-run (none right after a commit; at most the one in flight after a crash).
        read_s = restart_bytes / write_rate if write_rate else 0.0
        in_flight = 1 if self.planned is not None else 0
        est = read_s + (pending + in_flight) * median_proc / 1000
        committed = [b for b in batches if b["ckpt_bytes"]]
        return {
            "enabled": True,
            "url": ck,
            "last_commit": committed[-1]["time"] if committed else None,
            "last_commit_ms": committed[-1]["t"] if committed else None,
            "last_commit_age_s": (now - committed[-1]["end_ms"]) / 1000 if committed else None,
            "pending_batches": pending,
            "snapshot": (
                {**last_snap, "age_s": (now - last_snap["wall_ms"]) / 1000} if last_snap else None
            ),
            "snapshots": snaps[-20:],
            "bytes_per_batch": per_batch,
            "bytes_total": self.ckpt_bytes_total,
            "restart_bytes": restart_bytes,
            "restart_deltas": info.restart_deltas if info else 0,
            "estimated_restart_s": est,
            "estimate_basis": (
                f"read {restart_bytes} bytes (snapshot + {info.restart_deltas if info else 0} deltas) at the measured write rate, "
                f"then re-run {pending + in_flight} planned batch(es) at the median processing time"
            ),
        }
