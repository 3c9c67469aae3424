"""/metrics, /api/status and /healthz of a running job (issue 13), over real HTTP on loopback."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

import streamkeep as sk
from streamkeep.errors import ConfigError
from streamkeep.testing import ManualClock, key_count_of


def _get(url: str) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=10) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def _samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    out = {}
    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


class Events(sk.StreamingListener):
    def __init__(self) -> None:
        self.batches: list[sk.BatchInfo] = []
        self.snapshots: list[sk.SnapshotCompleted] = []

    def on_batch_completed(self, info: sk.BatchInfo) -> None:
        self.batches.append(info)

    def on_snapshot_completed(self, event: sk.SnapshotCompleted) -> None:
        self.snapshots.append(event)


def _add(new: list[int], old: int | None) -> int:
    return (old or 0) + sum(new)


def test_metrics_agree_with_events_and_the_real_job(tmp_path: Any) -> None:
    ev = Events()
    ssc = sk.StreamingContext(1.0, checkpoint=str(tmp_path / "ck"), clock=ManualClock(), ui_port=0, snapshot_every=3)
    assert ssc.ui_url is None  # not started yet
    counts = ssc.rate_stream(13, name="rate").map(lambda r: (r[0] % 11, 1)).update_state_by_key(_add, name="counts")
    counts.foreach_batch(lambda b: None)
    ssc.add_listener(ev)
    try:
        ssc.run(max_batches=7)
        url = ssc.ui_url
        assert url is not None and url.startswith("http://127.0.0.1:") and url.endswith("/")
        assert ssc._ui.socket_address[0] == "127.0.0.1"  # bound to loopback only
        code, body = _get(url + "metrics")
        assert code == 200
        m = _samples(body.decode())
        assert m[("streamkeep_batches_completed_total", ())] == 7 == len(ev.batches)
        assert m[("streamkeep_input_records_total", (("source", "rate"),))] == 7 * 13 == sum(i.num_records for i in ev.batches)
        assert m[("streamkeep_state_keys", (("operator", "counts"),))] == key_count_of(ssc, "counts") == 11
        assert m[("streamkeep_state_bytes", (("operator", "counts"),))] == ev.batches[-1].state["counts"].bytes
        # the size reported at a batch that takes a (small state's) snapshot is that snapshot's encoded payload
        taken = ev.batches[5].state["counts"]
        assert ev.batches[5].snapshot and taken.bytes_at_ms == 6000
        assert taken.bytes == next(s.operators["counts"] for s in ev.snapshots if s.batch_time_ms == 6000)
        written = sum(i.checkpoint_bytes for i in ev.batches) + sum(s.bytes for s in ev.snapshots)
        assert m[("streamkeep_checkpoint_write_bytes_total", ())] == written > 0
        assert m[("streamkeep_checkpoint_write_seconds_count", ())] == 7 + len(ev.snapshots)
        assert m[("streamkeep_last_committed_batch_timestamp_seconds", ())] == ev.batches[-1].batch_time_ms / 1000
        assert m[("streamkeep_batch_processing_seconds_count", ())] == 7
        assert m[("streamkeep_batch_scheduling_delay_seconds_count", ())] == 7
        assert m[("streamkeep_batch_processing_seconds_sum", ())] == pytest.approx(sum(i.processing_delay_ms for i in ev.batches) / 1000)
        assert not any(name == "streamkeep_failures_total" for name, _ in m)
        assert not any(name == "streamkeep_kafka_consumer_lag" for name, _ in m)  # no Kafka source

        code, body = _get(url + "api/status")
        st = json.loads(body)
        assert code == 200 and st["job"]["batches_completed"] == 7 and st["job"]["records_total"] == {"rate": 91}
        assert [b["t"] for b in st["batches"]] == [i.batch_time_ms for i in ev.batches]
        assert st["state"]["counts"]["keys"] == 11
        ck = st["checkpoint"]
        assert ck["enabled"] and ck["last_commit_ms"] == ev.batches[-1].batch_time_ms and ck["pending_batches"] == 0
        assert ck["restart_bytes"] == ev.batches[-1].restart_bytes > 0
        assert _get(url + "healthz") == (200, b"ok\n")
        code, page = _get(url)
        assert code == 200 and b"<title>streamkeep job</title>" in page and b"http" not in page.split(b"<script>")[1].split(b"api/status")[0]
    finally:
        ssc.stop()
    with pytest.raises(OSError):
        urllib.request.urlopen(url + "healthz", timeout=5)  # the server is gone with the job


def test_failures_are_counted_by_kind() -> None:
    ssc = sk.StreamingContext(1.0, clock=ManualClock(), ui_port=0)

    def fail(b: Any) -> None:
        raise RuntimeError("boom")

    ssc.queue_stream([[1]], name="q").foreach_batch(fail)
    col: list[Any] = []

    class Grab(sk.StreamingListener):
        def on_error(self, event: sk.ErrorInfo) -> None:
            col.append(ssc._ui.collector.metrics())

    ssc.add_listener(Grab())
    with pytest.raises(sk.UserFunctionError):
        ssc.run()
    # the collector was registered before our listener, so it had counted the failure when we looked
    m = _samples(col[0].decode())
    assert m[("streamkeep_failures_total", (("kind", "UserFunctionError"),))] == 1


def test_bad_ui_port_is_refused_and_a_taken_port_says_so() -> None:
    with pytest.raises(ConfigError, match="ui_port"):
        sk.StreamingContext(1.0, ui_port=-1)
    first = sk.StreamingContext(1.0, clock=ManualClock(), ui_port=0)
    first.queue_stream([[1]], name="q").foreach_batch(lambda b: None)
    first.run(max_batches=1)
    try:
        port = first._ui.port
        second = sk.StreamingContext(1.0, clock=ManualClock(), ui_port=port)
        second.queue_stream([[1]], name="q").foreach_batch(lambda b: None)
        with pytest.raises(ConfigError, match=f"cannot serve the dashboard on 127.0.0.1:{port}"):
            second.run(max_batches=1)
    finally:
        first.stop()


@pytest.mark.parametrize("how", ["start", "run"])
def test_a_dashboard_that_cannot_start_releases_the_checkpoint(tmp_path: Any, how: str) -> None:
    """A taken ui_port fails start()/run() with a ConfigError, and leaves nothing claimed: the checkpoint is free for
    another driver at once, and the context is stopped (not stuck 'active')."""
    import socket

    url = str(tmp_path / "ckpt")

    def job(**kw: Any) -> sk.StreamingContext:
        ssc = sk.StreamingContext(1.0, checkpoint=url, clock=ManualClock(), **kw)
        ssc.queue_stream([[1], [2]], name="q").foreach_batch(lambda b: None)
        return ssc

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        failed = job(ui_port=taken.getsockname()[1])
        seen: list[str] = []
        failed.add_listener(
            type("L", (), {"on_job_started": lambda self, e: seen.append("started"), "on_job_stopped": lambda self, e: seen.append("stopped")})()
        )
        with pytest.raises(ConfigError, match="cannot serve the dashboard"):
            failed.start() if how == "start" else failed.run(1)
    assert seen == []  # it never started, so it is not reported as stopped either
    other = job()
    assert other.run(1) == 1
    other.stop()
    with pytest.raises(ConfigError, match="the context is stopped"):
        failed.start()
