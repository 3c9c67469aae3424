"""KafkaSink guarantees no other test would notice losing (found by mutation testing)."""

from __future__ import annotations

from typing import Any

import pytest
from _servers import consume_all

from streamkeep.sinks.kafka import KafkaSink

pytestmark = pytest.mark.integration


def _sink(bootstrap: str, topic: str, name: str, marker_topic: str) -> KafkaSink:
    sink = KafkaSink(topic, bootstrap_servers=bootstrap, name=name, marker_topic=marker_topic, timeout_s=10.0)
    sink.open()
    return sink


def test_a_sink_sharing_its_marker_topic_with_a_sink_further_ahead_still_writes_its_own_replayed_batches(
    kafka_cluster: Any, topic_factory: Any
) -> None:
    """Only this sink's own markers say which batches it applied: another job's sink on the same marker
    topic, further ahead, must not make it skip a batch it never wrote (lost output).

    Catches: `KafkaSink._scan` taking every marker of the topic as its own (no check of the marker's key).
    """
    bs = kafka_cluster.bootstrap
    mine_out, other_out, markers = topic_factory(1), topic_factory(1), topic_factory(1)
    mine = _sink(bs, mine_out, f"mine-{mine_out}", markers)
    mine.write(1000, [b"m1"])
    mine.close()
    other = _sink(bs, other_out, f"other-{other_out}", markers)
    try:
        for t in (1000, 2000, 3000):
            other.write(t, [b"o"])
    finally:
        other.close()
    again = _sink(bs, mine_out, f"mine-{mine_out}", markers)  # a restart of the first job: it replays batch 2000
    try:
        assert again.last_batch() == 1000
        again.write(2000, [b"m2"])
    finally:
        again.close()
    assert [m.value() for m in consume_all(bs, mine_out)] == [b"m1", b"m2"]
