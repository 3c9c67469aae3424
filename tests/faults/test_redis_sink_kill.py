"""A driver SIGKILLed while its RedisSink sends a batch, or right after: the restarted sink ends exactly once.

The batch goes to Redis as one EVALSHA whose commands are packed in a few msgpack strings
(several here: the part size is lowered). The child process SIGKILLs itself either half-way
through sending that request (Redis never runs a partial command: nothing of the batch is
applied) or once it is all sent (Redis runs the whole script, marker included, with nobody
reading the reply). A new driver then writes the same batch again and the next one: every
non-idempotent command (INCRBY, RPUSH) must have taken effect exactly once.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
from typing import Any

import pytest
import redis

from streamkeep.sinks.redis import RedisSink

pytestmark = [pytest.mark.faults, pytest.mark.slow, pytest.mark.integration]

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
USERS = 20_000

_CHILD = """
import os, signal, sys
sys.path.insert(0, {repo!r})
from redis.connection import AbstractConnection
from streamkeep.sinks import redis as redis_sink

redis_sink._PART_BYTES = 40_000  # the batch in several packed parts
real = AbstractConnection.send_packed_command

def send(self, command, check_health=True):
    chunks = [command] if isinstance(command, (bytes, str)) else list(command)
    data = b"".join(c.encode() if isinstance(c, str) else bytes(c) for c in chunks)
    if len(data) > 100_000:  # the big batch's script call
        self.connect()
        self._sock.sendall(data[: len(data) // 2] if {mode!r} == "mid-send" else data)
        os.kill(os.getpid(), signal.SIGKILL)
    return real(self, command, check_health)

AbstractConnection.send_packed_command = send

def write(pipe, records):
    for k, n in records:
        pipe.incrby(k, n)
        pipe.rpush("log", k)

sink = redis_sink.RedisSink({url!r}, write, name="killed")
sink.open()
sink.write(1000, [("u0", 1)])
sink.write(2000, [(f"u{{i}}", i) for i in range({users})])
print("not killed")
"""


def _write(pipe: Any, records: list[Any]) -> None:
    for k, n in records:
        pipe.incrby(k, n)
        pipe.rpush("log", k)


@pytest.mark.parametrize("mode", ["mid-send", "after-send"])
def test_a_kill_while_the_batch_is_sent_ends_exactly_once(redis_url, mode):
    r = redis.Redis.from_url(redis_url)
    code = textwrap.dedent(_CHILD.format(repo=REPO, url=redis_url, mode=mode, users=USERS))
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, timeout=120)
    assert proc.returncode == -signal.SIGKILL, proc.stdout + proc.stderr  # died sending batch 2000, as meant
    marker = r.get("streamkeep:sink:killed:last_batch")
    applied = mode == "after-send"
    assert marker == (b"2000" if applied else b"1000")  # Redis ran the whole script, or none of it
    assert r.llen("log") == (1 + USERS if applied else 1)

    sink = RedisSink(redis_url, _write, name="killed")  # the restarted driver replays the uncommitted batch
    try:
        sink.write(2000, [(f"u{i}", i) for i in range(USERS)])
        sink.write(3000, [("u1", 10)])
    finally:
        sink.close()
    values = r.mget([f"u{i}" for i in range(USERS)])
    assert [int(v) for v in values] == [1] + [11] + list(range(2, USERS))
    assert r.llen("log") == 1 + USERS + 1
    assert r.get("streamkeep:sink:killed:last_batch") == b"3000"
