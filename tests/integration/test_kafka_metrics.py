"""Kafka numbers of the observability layer against the real mock broker (issue 13):
records per partition and consumer lag in `BatchInfo`, and ``streamkeep_kafka_consumer_lag``
in ``/metrics``, agree with what was produced."""

from __future__ import annotations

import urllib.request
from typing import Any

import pytest
from _servers import produce
from prometheus_client.parser import text_string_to_metric_families

import streamkeep as sk
from streamkeep.testing import ManualClock

pytestmark = pytest.mark.integration

PER_PARTITION = {0: 7, 1: 4, 2: 0}
CAP = 3  # max_records_per_partition: the first batches leave a lag to report


class Infos(sk.StreamingListener):
    def __init__(self) -> None:
        self.infos: list[sk.BatchInfo] = []

    def on_batch_completed(self, info: sk.BatchInfo) -> None:
        self.infos.append(info)


def test_records_per_partition_lag_and_metrics_match_the_topic(kafka_cluster: Any, topic_factory: Any, tmp_path: Any) -> None:
    topic = topic_factory(len(PER_PARTITION))
    for p, n in PER_PARTITION.items():
        if n:
            produce(kafka_cluster.bootstrap, topic, [f"v{p}-{i}" for i in range(n)], partition=p)
    ev = Infos()
    ssc = sk.StreamingContext(1.0, checkpoint=str(tmp_path / "ck"), clock=ManualClock(), ui_port=0)
    stream = ssc.kafka_stream([topic], bootstrap_servers=kafka_cluster.bootstrap, name="k", max_records_per_partition=CAP)
    stream.map(lambda r: r.partition).foreach_batch(lambda b: None)
    ssc.add_listener(ev)
    try:
        ssc.run(max_batches=1)
        first = ev.infos[0]
        want_first = {f"{topic}:{p}": min(n, CAP) for p, n in PER_PARTITION.items()}
        got_first = {k: v for k, v in first.records_per_partition["k"].items() if v or k in want_first}
        assert {k: got_first.get(k, 0) for k in want_first} == want_first
        assert first.kafka_lag["k"] == {f"{topic}:{p}": n - min(n, CAP) for p, n in PER_PARTITION.items()}
        url = ssc.ui_url
        assert url is not None
        with urllib.request.urlopen(url + "metrics", timeout=10) as r:
            text = r.read().decode()
        lag = {
            (s.labels["topic"], s.labels["partition"]): s.value
            for fam in text_string_to_metric_families(text)
            for s in fam.samples
            if s.name == "streamkeep_kafka_consumer_lag"
        }
        assert lag == {(topic, str(p)): float(n - min(n, CAP)) for p, n in PER_PARTITION.items()}
        ssc.run(max_batches=2)  # 7 records at 3 per batch: drained after the third batch
        assert sum(i.records_per_source["k"] for i in ev.infos) == sum(PER_PARTITION.values())
        assert all(v == 0 for v in ev.infos[-1].kafka_lag["k"].values())
    finally:
        ssc.stop()
