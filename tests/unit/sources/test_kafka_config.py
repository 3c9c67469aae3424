"""The librdkafka settings every Kafka source client gets (`consumer_conf`, `admin_conf`)."""

from __future__ import annotations

from streamkeep.sources._kafka_config import consumer_conf
from streamkeep.sources._kafka_meta import admin_conf


def test_clients_connect_to_the_brokers_as_soon_as_they_learn_them() -> None:
    """Sparse connections (librdkafka's default) made a fresh client's first requests wait up to
    reconnect.backoff.ms / 2 (50 ms) for the broker its bootstrap metadata named: every start-up
    and restart paid it before the first batch (bench/restart_phases.py)."""
    conf = consumer_conf({}, bootstrap_servers="127.0.0.1:9092", group_id="g")
    assert conf["enable.sparse.connections"] is False
    assert admin_conf(conf)["enable.sparse.connections"] is False  # the source's admin client too
    mine = consumer_conf({"enable.sparse.connections": True}, bootstrap_servers="127.0.0.1:9092", group_id="g")
    assert mine["enable.sparse.connections"] is True  # the user's consumer_config decides
