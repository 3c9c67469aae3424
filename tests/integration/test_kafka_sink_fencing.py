"""KafkaSink zombie fencing against librdkafka's mock cluster (transactional.id epochs, marker epochs)."""

from __future__ import annotations

import json
from typing import Any

import pytest
from _servers import consume_all

from streamkeep.errors import CheckpointInUseError
from streamkeep.sinks.base import FencedSink, FencingToken
from streamkeep.sinks.kafka import KafkaSink

pytestmark = pytest.mark.integration


def _sink(bootstrap: str, topic: str, name: str, token: FencingToken) -> KafkaSink:
    sink = KafkaSink(topic, bootstrap_servers=bootstrap, name=name, timeout_s=10.0, max_retries=0)
    assert isinstance(sink, FencedSink)
    sink.set_fencing_token(token)
    sink.open()
    return sink


def test_a_zombie_starting_over_sees_the_newer_epoch_and_refuses(kafka_cluster: Any, topic_factory: Any) -> None:
    """A fenced driver that re-creates its producer (after an error, or a restart of the sink) must not write.

    (A real broker also refuses the zombie's *old* producer once the new one ran init_transactions;
    librdkafka's mock cluster does not implement that fence, see the KafkaSink docs.)
    """
    bs = kafka_cluster.bootstrap
    topic = topic_factory(1)
    name = f"z-{topic}"
    old = _sink(bs, topic, name, FencingToken("ck1", 1))
    try:
        old.write(1000, [b"a"])
        new = _sink(bs, topic, name, FencingToken("ck1", 2))
        try:
            new.write(2000, [b"b"])
            old.close()  # the zombie drops its producer and starts over
            with pytest.raises(CheckpointInUseError, match=r"newer driver \(epoch 2\).*this driver \(epoch 1\) lost"):
                old.write(3000, [b"zombie"])
            new.write(3000, [b"c"])  # the owner's producer was not disturbed
        finally:
            new.close()
        other = _sink(bs, topic, name, FencingToken("ck2", 1))  # another checkpoint: epochs are unrelated
        try:
            other.write(4000, [b"d"])
        finally:
            other.close()
    finally:
        old.close()
    assert [m.value() for m in consume_all(bs, topic)] == [b"a", b"b", b"c", b"d"]
    markers = [json.loads(m.value()) for m in consume_all(bs, f"streamkeep-markers-{name}")]
    assert [(d["batch_time"], d["epoch"], d["checkpoint"]) for d in markers] == [
        (1000, 1, "ck1"),
        (2000, 2, "ck1"),
        (3000, 2, "ck1"),
        (4000, 1, "ck2"),
    ]


def test_a_driver_that_lost_its_claim_does_not_start_a_transaction(kafka_cluster: Any, topic_factory: Any) -> None:
    bs = kafka_cluster.bootstrap
    topic = topic_factory(1)
    owns = [True]

    def check() -> None:
        if not owns[0]:
            msg = "this driver lost its claim"
            raise CheckpointInUseError(msg)

    sink = _sink(bs, topic, f"x-{topic}", FencingToken("ck1", 1, check))
    try:
        sink.write(1000, [b"a"])
        owns[0] = False
        with pytest.raises(CheckpointInUseError):
            sink.write(2000, [b"zombie"])
    finally:
        sink.close()
    assert [m.value() for m in consume_all(bs, topic)] == [b"a"]


def test_the_ownership_check_runs_before_init_transactions(kafka_cluster: Any, topic_factory: Any) -> None:
    bs = kafka_cluster.bootstrap
    topic = topic_factory(1)
    name = f"y-{topic}"
    owner = _sink(bs, topic, name, FencingToken("ck1", 2))
    lost = []

    def check() -> None:
        lost.append(True)
        msg = "this driver lost its claim"
        raise CheckpointInUseError(msg)

    zombie = KafkaSink(topic, bootstrap_servers=bs, name=name, timeout_s=10.0)
    zombie.set_fencing_token(FencingToken("ck1", 1, check))
    try:
        with pytest.raises(CheckpointInUseError):
            zombie.open()
        assert lost == [True]
        owner.write(1000, [b"a"])  # the owner's producer was not fenced by the zombie
    finally:
        zombie.close()
        owner.close()
    assert [m.value() for m in consume_all(bs, topic)] == [b"a"]
