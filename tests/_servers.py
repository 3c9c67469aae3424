"""Real servers for integration tests, started on free 127.0.0.1 ports (a pytest plugin).

Registered by ``tests/conftest.py``. Fixtures:

* ``redis_server`` (session): URL of a real ``redis-server`` (no persistence,
  temp dir). Skips with an install hint only when the binary is missing.
* ``redis_url`` (function): the same URL after ``FLUSHALL``.
* ``redis_server_factory`` (function): ``make() -> RedisServerProcess`` for
  tests that stop/kill/restart their own server (``.url``, ``.stop()``,
  ``.start()``, ``.kill()``).
* ``kafka_cluster`` (session): librdkafka's mock cluster (3 brokers) in a child
  process (see ``_kafka_mock.py``): ``.bootstrap``, ``.create_topic(name, n)``,
  ``.broker_down(id)``, ``.broker_up(id)``, ``.pid``. Tests that take brokers
  down should use their own cluster from ``kafka_cluster_factory``.
* ``kafka_cluster_factory`` (function): ``make(brokers=1) -> KafkaMockProcess``,
  closed after the test.
* ``topic_factory`` (function): ``make(partitions=1, cluster=None) -> name``,
  a unique topic created on ``kafka_cluster`` (or the given cluster).
* helpers ``produce(bootstrap, topic, values, ...)`` and
  ``consume_all(bootstrap, topic, ...)`` (read_committed, until the end).
* ``s3_server`` (session): moto S3 on 127.0.0.1 with bucket ``streamkeep``:
  ``.endpoint_url``, ``.bucket``, ``.storage_options`` (for s3fs/fsspec),
  ``.boto3_kwargs``.
* ``s3_url`` (function): a fresh ``s3://streamkeep/<unique>`` prefix.
"""

from __future__ import annotations

import itertools
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest

if os.path.dirname(os.path.abspath(__file__)) not in sys.path:
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _kafka_mock import KafkaMockProcess  # noqa: E402

__all__ = [
    "KafkaMockProcess",
    "RedisServerProcess",
    "S3Server",
    "consume_all",
    "free_port",
    "kafka_cluster",
    "kafka_cluster_factory",
    "redis_server",
    "redis_server_factory",
    "redis_url",
    "s3_server",
    "s3_url",
    "produce",
    "topic_factory",
]


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _wait_for(pred: Callable[[], bool], timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not pred():
        if time.monotonic() > deadline:
            msg = f"timed out after {timeout_s} s waiting for {what}"
            raise TimeoutError(msg)
        time.sleep(0.01)


def _die_with_parent() -> None:
    """In the child before exec: get SIGTERM when pytest dies (Linux; no-op elsewhere)."""
    try:
        import ctypes

        ctypes.CDLL(None).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


# ------------------------------------------------------------------------- redis
def _redis_ping(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.2) as s:
            s.sendall(b"PING\r\n")
            return s.recv(16).startswith(b"+PONG")
    except OSError:
        return False


class RedisServerProcess:
    """A real redis-server on 127.0.0.1, no persistence, in its own temp dir."""

    def __init__(self, binary: str) -> None:
        self.binary = binary
        self.dir = tempfile.mkdtemp(prefix="streamkeep-redis-")
        self.port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None
        self.start()

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        """Start (or restart, on the same port) the server and wait for PONG."""
        if self.proc is not None and self.proc.poll() is None:
            return
        for attempt in range(3):
            self.proc = subprocess.Popen(
                [
                    self.binary,
                    "--bind",
                    "127.0.0.1",
                    "--port",
                    str(self.port),
                    "--dir",
                    self.dir,
                    "--save",
                    "",
                    "--appendonly",
                    "no",
                    "--protected-mode",
                    "yes",
                    "--daemonize",
                    "no",
                    "--logfile",
                    os.path.join(self.dir, "redis.log"),
                ],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                preexec_fn=_die_with_parent if sys.platform == "linux" else None,
            )
            try:
                _wait_for(lambda: _redis_ping(self.port) or self.proc.poll() is not None, 10, f"redis-server on port {self.port}")
            except TimeoutError:
                self.kill()
                raise
            if self.proc.poll() is None:
                return
            if attempt == 2:
                with open(os.path.join(self.dir, "redis.log")) as f:
                    tail = f.read()[-2000:]
                msg = f"redis-server did not start on port {self.port}:\n{tail}"
                raise RuntimeError(msg)
            self.port = free_port()  # lost the port race; try another

    def stop(self) -> None:
        """SIGTERM and wait (the data is lost: no persistence)."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.kill()

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=10)

    def close(self) -> None:
        self.stop()
        shutil.rmtree(self.dir, ignore_errors=True)


def _redis_binary() -> str:
    binary = os.environ.get("REDIS_SERVER") or shutil.which("redis-server")
    if not binary:
        pytest.skip("redis-server not installed (apt-get install -y redis-server, or set REDIS_SERVER=/path/to/redis-server)")
    return binary


@pytest.fixture(scope="session")
def redis_server() -> Iterator[str]:
    """URL of a session-wide real redis-server."""
    server = RedisServerProcess(_redis_binary())
    try:
        yield server.url
    finally:
        server.close()


@pytest.fixture
def redis_url(redis_server: str) -> Iterator[str]:
    """The session redis-server's URL, emptied (FLUSHALL) for this test."""
    import redis

    client = redis.Redis.from_url(redis_server)
    try:
        client.flushall()
    finally:
        client.close()
    yield redis_server


@pytest.fixture
def redis_server_factory() -> Iterator[Callable[[], RedisServerProcess]]:
    """``make()`` starts a private redis-server the test may stop or kill."""
    servers: list[RedisServerProcess] = []

    def make() -> RedisServerProcess:
        server = RedisServerProcess(_redis_binary())
        servers.append(server)
        return server

    try:
        yield make
    finally:
        for server in servers:
            server.close()


# ------------------------------------------------------------------------- kafka
def _needs_confluent_kafka() -> None:
    try:
        import confluent_kafka  # noqa: F401
    except ImportError:
        pytest.skip("confluent-kafka not installed: pip install 'streamkeep[kafka]'")


@pytest.fixture(scope="session")
def kafka_cluster() -> Iterator[KafkaMockProcess]:
    """A session-wide mock Kafka cluster (3 brokers) in a child process."""
    _needs_confluent_kafka()
    cluster = KafkaMockProcess(brokers=3)
    try:
        yield cluster
    finally:
        cluster.close()


@pytest.fixture
def kafka_cluster_factory() -> Iterator[Callable[..., KafkaMockProcess]]:
    """``make(brokers=1)`` starts a private mock cluster (for broker faults)."""
    _needs_confluent_kafka()
    clusters: list[KafkaMockProcess] = []

    def make(brokers: int = 1) -> KafkaMockProcess:
        cluster = KafkaMockProcess(brokers=brokers)
        clusters.append(cluster)
        return cluster

    try:
        yield make
    finally:
        for cluster in clusters:
            cluster.close()


_topic_seq = itertools.count()


@pytest.fixture
def topic_factory(request: pytest.FixtureRequest, kafka_cluster: KafkaMockProcess) -> Callable[..., str]:
    """``make(partitions=1, cluster=None) -> name``: a new, unique, empty topic."""
    base = re.sub(r"[^A-Za-z0-9]+", "-", request.node.name)[:60].strip("-")

    def make(partitions: int = 1, cluster: KafkaMockProcess | None = None) -> str:
        name = f"{base}-{next(_topic_seq)}-{uuid.uuid4().hex[:6]}"
        (cluster or kafka_cluster).create_topic(name, partitions)
        return name

    return make


def produce(
    bootstrap: str, topic: str, values: list[Any], *, partition: int | Callable[[int], int] | None = None, keys: list[Any] | None = None
) -> None:
    """Produce `values` (bytes/str) and wait until the broker has them all.

    `partition` is a fixed partition or ``f(index) -> partition``.
    """
    from confluent_kafka import Producer

    p = Producer({"bootstrap.servers": bootstrap, "linger.ms": 5})
    errors: list[Any] = []
    for i, v in enumerate(values):
        kw: dict[str, Any] = {"value": v}
        if keys is not None:
            kw["key"] = keys[i]
        if partition is not None:
            kw["partition"] = partition(i) if callable(partition) else partition
        while True:
            try:
                p.produce(topic, on_delivery=lambda e, m: e and errors.append(e), **kw)
                break
            except BufferError:
                p.poll(0.05)
        p.poll(0)
    left = p.flush(30)
    if left or errors:
        msg = f"produce to {topic}: {left} undelivered, errors {errors[:3]}"
        raise RuntimeError(msg)


def consume_all(bootstrap: str, topic: str, *, isolation: str = "read_committed", timeout_s: float = 10.0) -> list[Any]:
    """Every record of `topic` up to its current end, ordered by (partition, offset)."""
    from confluent_kafka import Consumer, KafkaError, TopicPartition

    c = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": f"check-{uuid.uuid4().hex}",
            "isolation.level": isolation,
            "enable.auto.commit": False,
            "enable.partition.eof": True,
            "auto.offset.reset": "earliest",
            "fetch.wait.max.ms": 10,
        }
    )
    try:
        parts = sorted(c.list_topics(topic, timeout=timeout_s).topics[topic].partitions)
        ends = {p: c.get_watermark_offsets(TopicPartition(topic, p), timeout=timeout_s, cached=False) for p in parts}
        todo = {p for p, (lo, hi) in ends.items() if hi > lo}
        c.assign([TopicPartition(topic, p, ends[p][0]) for p in todo])
        out: list[Any] = []
        deadline = time.monotonic() + timeout_s
        while todo:
            if time.monotonic() > deadline:
                msg = f"consume_all({topic}): partitions {sorted(todo)} not finished"
                raise TimeoutError(msg)
            m = c.poll(0.1)
            if m is None:
                continue
            if m.error():
                if m.error().code() == KafkaError._PARTITION_EOF:
                    todo.discard(m.partition())
                continue
            out.append(m)
            if m.offset() >= ends[m.partition()][1] - 1:
                todo.discard(m.partition())
        return sorted(out, key=lambda m: (m.partition(), m.offset()))
    finally:
        c.close()


# ------------------------------------------------------------------------- s3
@dataclass
class S3Server:
    """A moto S3 endpoint with one bucket."""

    endpoint_url: str
    bucket: str
    storage_options: dict[str, Any] = field(default_factory=dict)
    boto3_kwargs: dict[str, Any] = field(default_factory=dict)


@pytest.fixture(scope="session")
def s3_server() -> Iterator[S3Server]:
    """moto's S3 server (in a thread) on 127.0.0.1 with bucket ``streamkeep``."""
    try:
        import boto3
        from moto.server import ThreadedMotoServer
    except ImportError:
        pytest.skip("moto[server] and boto3 not installed: pip install 'moto[server]' boto3 s3fs")
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    try:
        host, port = server.get_host_and_port()
        endpoint = f"http://{host}:{port}"
        creds = {"aws_access_key_id": "test", "aws_secret_access_key": "test", "region_name": "us-east-1"}
        boto3_kwargs = {"endpoint_url": endpoint, **creds}
        boto3.client("s3", **boto3_kwargs).create_bucket(Bucket="streamkeep")
        yield S3Server(
            endpoint_url=endpoint,
            bucket="streamkeep",
            storage_options={"key": "test", "secret": "test", "endpoint_url": endpoint, "client_kwargs": {"region_name": "us-east-1"}},
            boto3_kwargs=boto3_kwargs,
        )
    finally:
        server.stop()


@pytest.fixture
def s3_url(s3_server: S3Server) -> str:
    """A fresh, empty ``s3://<bucket>/<unique>`` prefix on the moto server."""
    return f"s3://{s3_server.bucket}/{uuid.uuid4().hex}"
