"""librdkafka's mock Kafka cluster in a child process we control (tests only).

librdkafka (bundled in the confluent-kafka wheel) contains a mock cluster that
speaks the real Kafka protocol on 127.0.0.1 ports: produce, fetch, consumer
groups and committed offsets, transactions, broker down/up. It lives inside the
librdkafka handle that created it, so we host it in a *separate* process:
tests can SIGKILL a driver without killing the broker, and the broker dies with
the test session (the child exits when its stdin closes).

Two halves in one file:

* child side (``python _kafka_mock.py --brokers N``): creates the cluster with
  ctypes, prints ``BOOTSTRAP=host:port,...`` and then serves one command per
  stdin line, answering ``OK <cmd>`` or ``ERR <cmd>: <reason>``::

      topic NAME PARTITIONS [REPLICATION] | deltopic NAME
      down BROKER_ID | up BROKER_ID | rtt BROKER_ID MS
      controller BROKER_ID | coordinator group|txn KEY BROKER_ID
      leader TOPIC PARTITION BROKER_ID | apiversion API_KEY MIN MAX
      quit

* parent side: :class:`KafkaMockProcess` starts the child and exposes
  ``.bootstrap``, ``.create_topic()``, ``.delete_topic()``, ``.broker_down()``, ``.broker_up()``,
  ``.broker_rtt()``, ``.set_controller()``, ``.set_coordinator()``,
  ``.set_leader()``, ``.set_apiversion()`` and ``.close()``.

The child sets broker 1 as the cluster's controller (``--controller 0`` leaves
none): librdkafka's admin requests (``describe_topics``, which returns topic
IDs) wait for a controller, and a real cluster always has one.

Limits of the mock (librdkafka 2.16): in memory only; about 5 MB (or 100,000
message sets) kept per partition, older message sets are dropped and the low
watermark moves; AdminClient.create_topics/create_partitions are not supported
(use ``create_topic``; to grow an *empty* topic, delete and recreate it); auto-created topics get 4 partitions; broker ids are 1..N.
"""

from __future__ import annotations

import ctypes
import glob
import os
import select
import subprocess
import sys
import threading
import time
from typing import IO

__all__ = ["KafkaMockProcess", "MockCluster"]


# --------------------------------------------------------------------- child side
def _load_librdkafka() -> ctypes.CDLL:
    import confluent_kafka

    site = os.path.dirname(os.path.dirname(confluent_kafka.__file__))
    cands = sorted(glob.glob(os.path.join(site, "confluent_kafka.libs", "librdkafka*.so*")))
    lib = ctypes.CDLL(cands[0] if cands else "librdkafka.so.1")
    vp, cp, i, i32, sz = (ctypes.c_void_p, ctypes.c_char_p, ctypes.c_int, ctypes.c_int32, ctypes.c_size_t)
    lib.rd_kafka_conf_new.restype = vp
    lib.rd_kafka_conf_set.argtypes = [vp, cp, cp, cp, sz]
    lib.rd_kafka_conf_set.restype = i
    lib.rd_kafka_new.argtypes = [i, vp, cp, sz]
    lib.rd_kafka_new.restype = vp
    lib.rd_kafka_destroy.argtypes = [vp]
    lib.rd_kafka_mock_cluster_new.argtypes = [vp, i]
    lib.rd_kafka_mock_cluster_new.restype = vp
    lib.rd_kafka_mock_cluster_destroy.argtypes = [vp]
    lib.rd_kafka_mock_cluster_bootstraps.argtypes = [vp]
    lib.rd_kafka_mock_cluster_bootstraps.restype = cp
    lib.rd_kafka_mock_topic_create.argtypes = [vp, cp, i, i]
    lib.rd_kafka_mock_topic_create.restype = i
    lib.rd_kafka_mock_topic_delete.argtypes = [vp, cp]
    lib.rd_kafka_mock_topic_delete.restype = i
    for fn in ("rd_kafka_mock_broker_set_down", "rd_kafka_mock_broker_set_up"):
        getattr(lib, fn).argtypes = [vp, i32]
        getattr(lib, fn).restype = i
    lib.rd_kafka_mock_broker_set_rtt.argtypes = [vp, i32, i]
    lib.rd_kafka_mock_broker_set_rtt.restype = i
    lib.rd_kafka_mock_set_controller_id.argtypes = [vp, i32]
    lib.rd_kafka_mock_set_controller_id.restype = i
    lib.rd_kafka_mock_coordinator_set.argtypes = [vp, cp, cp, i32]
    lib.rd_kafka_mock_coordinator_set.restype = i
    lib.rd_kafka_mock_partition_set_leader.argtypes = [vp, cp, i32, i32]
    lib.rd_kafka_mock_partition_set_leader.restype = i
    lib.rd_kafka_mock_set_apiversion.argtypes = [vp, ctypes.c_int16, ctypes.c_int16, ctypes.c_int16]
    lib.rd_kafka_mock_set_apiversion.restype = i
    lib.rd_kafka_err2str.argtypes = [i]
    lib.rd_kafka_err2str.restype = cp
    return lib


class MockCluster:
    """The mock cluster itself, owned by the current process (used by the child)."""

    def __init__(self, brokers: int = 1) -> None:
        self._lib = lib = _load_librdkafka()
        conf = lib.rd_kafka_conf_new()
        err = ctypes.create_string_buffer(512)
        lib.rd_kafka_conf_set(conf, b"log_level", b"3", err, 512)
        self._rk = lib.rd_kafka_new(0, conf, err, 512)  # 0 = producer; only hosts threads
        if not self._rk:
            raise RuntimeError(err.value.decode())
        self._mc = lib.rd_kafka_mock_cluster_new(self._rk, brokers)
        if not self._mc:
            raise RuntimeError("rd_kafka_mock_cluster_new failed")
        self.bootstrap: str = lib.rd_kafka_mock_cluster_bootstraps(self._mc).decode()

    def _check(self, rc: int, what: str) -> None:
        if rc:
            raise RuntimeError(f"{what}: {self._lib.rd_kafka_err2str(rc).decode()}")

    def create_topic(self, name: str, partitions: int = 1, replication: int = 1) -> None:
        rc = self._lib.rd_kafka_mock_topic_create(self._mc, name.encode(), partitions, replication)
        self._check(rc, f"topic_create {name}")

    def delete_topic(self, name: str) -> None:
        self._check(self._lib.rd_kafka_mock_topic_delete(self._mc, name.encode()), f"topic_delete {name}")

    def broker_down(self, broker_id: int) -> None:
        self._check(self._lib.rd_kafka_mock_broker_set_down(self._mc, broker_id), "set_down")

    def broker_up(self, broker_id: int) -> None:
        self._check(self._lib.rd_kafka_mock_broker_set_up(self._mc, broker_id), "set_up")

    def broker_rtt(self, broker_id: int, rtt_ms: int) -> None:
        self._check(self._lib.rd_kafka_mock_broker_set_rtt(self._mc, broker_id, rtt_ms), "set_rtt")

    def set_controller(self, broker_id: int) -> None:
        self._check(self._lib.rd_kafka_mock_set_controller_id(self._mc, broker_id), "set_controller_id")

    def set_coordinator(self, key_type: str, key: str, broker_id: int) -> None:
        self._check(self._lib.rd_kafka_mock_coordinator_set(self._mc, key_type.encode(), key.encode(), broker_id), "coordinator_set")

    def set_leader(self, topic: str, partition: int, broker_id: int) -> None:
        self._check(self._lib.rd_kafka_mock_partition_set_leader(self._mc, topic.encode(), partition, broker_id), "partition_set_leader")

    def set_apiversion(self, api_key: int, min_version: int, max_version: int) -> None:
        self._check(self._lib.rd_kafka_mock_set_apiversion(self._mc, api_key, min_version, max_version), "set_apiversion")

    def close(self) -> None:
        if self._mc:
            self._lib.rd_kafka_mock_cluster_destroy(self._mc)
            self._mc = None
        if self._rk:
            self._lib.rd_kafka_destroy(self._rk)
            self._rk = None


def _serve(brokers: int, stdin: IO[str], stdout: IO[str], controller: int = 1) -> int:
    mc = MockCluster(brokers)
    if controller:
        mc.set_controller(controller)
    print(f"BOOTSTRAP={mc.bootstrap}", file=stdout, flush=True)
    try:
        for line in stdin:
            words = line.split()
            if not words:
                continue
            cmd = " ".join(words)
            if words[0] == "quit":
                print(f"OK {cmd}", file=stdout, flush=True)
                break
            try:
                if words[0] == "topic":
                    mc.create_topic(words[1], int(words[2]), int(words[3]) if len(words) > 3 else 1)
                elif words[0] == "deltopic":
                    mc.delete_topic(words[1])
                elif words[0] == "down":
                    mc.broker_down(int(words[1]))
                elif words[0] == "up":
                    mc.broker_up(int(words[1]))
                elif words[0] == "rtt":
                    mc.broker_rtt(int(words[1]), int(words[2]))
                elif words[0] == "controller":
                    mc.set_controller(int(words[1]))
                elif words[0] == "coordinator":
                    mc.set_coordinator(words[1], words[2], int(words[3]))
                elif words[0] == "leader":
                    mc.set_leader(words[1], int(words[2]), int(words[3]))
                elif words[0] == "apiversion":
                    mc.set_apiversion(int(words[1]), int(words[2]), int(words[3]))
                else:
                    raise ValueError(f"unknown command {words[0]!r}")
            except Exception as exc:  # keep serving; the parent raises
                print(f"ERR {cmd}: {exc}", file=stdout, flush=True)
            else:
                print(f"OK {cmd}", file=stdout, flush=True)
    finally:
        mc.close()
    return 0


# -------------------------------------------------------------------- parent side
class KafkaMockProcess:
    """A mock Kafka cluster in a child process, controlled through its stdin.

    Attributes:
        bootstrap: ``bootstrap.servers`` string of the cluster.
        brokers: number of brokers (ids 1..brokers).
        pid: process id of the child hosting the cluster.
    """

    def __init__(self, brokers: int = 1, *, start_timeout_s: float = 20.0, controller: int = 1) -> None:
        self.brokers = brokers
        self._lock = threading.Lock()
        self._proc = subprocess.Popen(
            [sys.executable, os.path.abspath(__file__), "--brokers", str(brokers), "--controller", str(controller)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            bufsize=1,
        )
        self.pid = self._proc.pid
        line = self._readline(start_timeout_s)
        if not line.startswith("BOOTSTRAP="):
            self.close()
            msg = f"mock Kafka child did not start (first line: {line!r})"
            raise RuntimeError(msg)
        self.bootstrap = line.split("=", 1)[1].strip()

    def _readline(self, timeout_s: float) -> str:
        out = self._proc.stdout
        assert out is not None
        deadline = time.monotonic() + timeout_s
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                msg = f"mock Kafka child (pid {self.pid}) did not answer in {timeout_s} s"
                raise TimeoutError(msg)
            ready, _, _ = select.select([out], [], [], left)
            if ready:
                line = out.readline()
                if not line:
                    msg = f"mock Kafka child (pid {self.pid}) exited (rc={self._proc.poll()})"
                    raise RuntimeError(msg)
                return line

    def command(self, cmd: str, *, timeout_s: float = 10.0) -> None:
        """Send one control line and wait for its answer; raise RuntimeError on ERR."""
        with self._lock:
            if self._proc.poll() is not None:
                msg = f"mock Kafka child (pid {self.pid}) is not running"
                raise RuntimeError(msg)
            assert self._proc.stdin is not None
            self._proc.stdin.write(cmd + "\n")
            self._proc.stdin.flush()
            answer = self._readline(timeout_s).strip()
        if not answer.startswith("OK"):
            msg = f"mock Kafka command {cmd!r} failed: {answer}"
            raise RuntimeError(msg)

    def create_topic(self, name: str, partitions: int = 1, replication: int = 1) -> None:
        self.command(f"topic {name} {partitions} {replication}")

    def delete_topic(self, name: str) -> None:
        """Delete a topic (with its records); it can then be created again."""
        self.command(f"deltopic {name}")

    def broker_down(self, broker_id: int) -> None:
        self.command(f"down {broker_id}")

    def broker_up(self, broker_id: int) -> None:
        self.command(f"up {broker_id}")

    def broker_rtt(self, broker_id: int, rtt_ms: int) -> None:
        self.command(f"rtt {broker_id} {rtt_ms}")

    def set_controller(self, broker_id: int) -> None:
        """Make `broker_id` the controller the brokers report (0: none)."""
        self.command(f"controller {broker_id}")

    def set_coordinator(self, key_type: str, key: str, broker_id: int) -> None:
        """Pin the coordinator of group (``key_type="group"``) or transactional id `key`."""
        self.command(f"coordinator {key_type} {key} {broker_id}")

    def set_leader(self, topic: str, partition: int, broker_id: int) -> None:
        self.command(f"leader {topic} {partition} {broker_id}")

    def set_apiversion(self, api_key: int, min_version: int, max_version: int) -> None:
        """Limit the versions of one request type the brokers accept (-1 -1: unsupported)."""
        self.command(f"apiversion {api_key} {min_version} {max_version}")

    def all_down(self) -> None:
        for b in range(1, self.brokers + 1):
            self.broker_down(b)

    def all_up(self) -> None:
        for b in range(1, self.brokers + 1):
            self.broker_up(b)

    def close(self) -> None:
        """Stop the child (closing stdin ends it; kill it if it lingers)."""
        proc = self._proc
        if proc.poll() is None:
            try:
                if proc.stdin is not None:
                    proc.stdin.close()
                proc.wait(timeout=5)
            except (OSError, subprocess.TimeoutExpired):
                proc.kill()
                proc.wait(timeout=5)
        if proc.stdout is not None:
            proc.stdout.close()

    def __enter__(self) -> KafkaMockProcess:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


if __name__ == "__main__":
    import argparse

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--brokers", type=int, default=1)
    ap.add_argument("--controller", type=int, default=1)
    args = ap.parse_args()
    sys.exit(_serve(args.brokers, sys.stdin, sys.stdout, args.controller))
