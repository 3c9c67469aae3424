"""A typical stateful streaming job on streamkeep: Kafka lines -> running state per user -> Redis hashes.

Every Kafka record's value is a line ``user,action[,anything...]`` (e.g.
``u17,click,/home``). The job keeps a running state per user with
``update_state_by_key`` (events seen, last action, count per action) and writes
each batch's changed users to a Redis hash ``<prefix>user:<user>``::

    events        total number of events of the user
    last_action   the action of the user's latest event (latest offset; produce
                  with the user as the record key so that a user's events stay
                  in one partition, in order)
    action:<a>    how often the user did action <a>

Two ways to write the same hashes (``--mode``):

* ``set`` (default): HSET the totals from the state. Rewriting them is harmless.
* ``incr``: HINCRBY the batch's deltas, plus ``INCRBY <prefix>events_total``.
  These are not idempotent: applied twice, the numbers would be wrong. The
  ``RedisSink`` applies each batch's commands together with a batch marker in
  one atomic Lua script and skips a batch whose marker is already there, so after a
  crash anywhere (even between the Redis transaction and the checkpoint
  commit) the numbers are exactly those of a run that never crashed.

The job resumes from its checkpoint with ``StreamingContext.get_or_create``:
state, Kafka offsets and planned-but-uncommitted batches come back from the
checkpoint, the code always comes from this file. After every committed batch
the offsets are also committed to the consumer group (``--group-id``) so lag
monitoring works.

Records that are not UTF-8 or not ``user,action,...`` fail the job with a
``SourceError`` naming topic, partition and offset, unless ``--dead-letter`` is
given: they then go, exactly once, to the Redis list ``<prefix>dead_letters``
(as compact JSON: topic, partition, offset, timestamp, error, and the key and
value as text, or as ``key_base64``/``value_base64`` when they are not UTF-8)
and the job goes on.

Run it
------
You need a Kafka broker and a Redis server. With the ones the tests use (from
the repository root, with the venv active)::

    # 1. A mock Kafka cluster (librdkafka's, inside confluent-kafka) and Redis.
    #    The mock prints BOOTSTRAP=127.0.0.1:PORT and reads commands on stdin:
    #    type "topic events 3" to create a topic with 3 partitions; keep it open.
    python tests/_kafka_mock.py --brokers 1
    redis-server --port 6379 --save '' --appendonly no &

    # 2. Produce lines (another shell; key = user keeps a user's events in order).
    python -c "
    from confluent_kafka import Producer
    p = Producer({'bootstrap.servers': '127.0.0.1:PORT'})
    for i in range(100_000):
        p.produce('events', key=f'u{i % 500}', value=f'u{i % 500},{(\"view\", \"click\", \"buy\")[i % 3]},/p{i}')
        p.poll(0)
    p.flush()"

    # 3. Run the job (Ctrl-C stops it after the batch in progress).
    python examples/kafka_to_redis.py --bootstrap-servers 127.0.0.1:PORT \\
        --topic events --redis-url redis://127.0.0.1:6379/0 --checkpoint /tmp/ckpt-k2r \\
        --mode incr --max-records-per-partition 2000

    # 4. Kill it hard mid-run and start it again: it resumes from the checkpoint.
    kill -9 <pid>;  python examples/kafka_to_redis.py ...same arguments...

    # 5. Check: with every line consumed, the totals are those of an uncrashed run.
    redis-cli hgetall user:u7;  redis-cli get events_total

``--until-idle`` runs batches back to back until one reads no record and then
exits (a backfill; the tests use it), ``--max-batches N`` stops after N
batches. Without either the job runs on the wall clock, one batch per
``--batch-interval``, until stopped. Every option can also come from the
environment (``KAFKA_BOOTSTRAP_SERVERS``, ``KAFKA_TOPIC``, ``REDIS_URL``,
``CHECKPOINT_URL``, ``KAFKA_GROUP_ID``, ``WRITE_MODE``). Exit status: 0 when
done, 1 when the job failed (the message says why; nothing of the failed batch
is committed, so a rerun continues exactly).
"""

from __future__ import annotations

import argparse
import base64
import json
import logging
import os
import signal
import sys
from collections import Counter
from collections.abc import Callable
from typing import Any

import streamkeep as sk
from streamkeep.sinks import RedisSink

#: (events, last action, ((action, total), ...), ((action, delta in this batch), ...))
UserState = tuple[int, str, tuple[tuple[str, int], ...], tuple[tuple[str, int], ...]]

PROG = "kafka_to_redis"


# --------------------------------------------------------------------------- the job


def parse_line(raw: bytes | None) -> tuple[str, str]:
    """A record value ``b"user,action[,...]"`` -> ``(user, action)``; ValueError if it is not one."""
    if raw is None:
        msg = "empty record (no value)"
        raise ValueError(msg)
    text = raw.decode("utf-8")  # UnicodeDecodeError (a ValueError) for bytes that are not UTF-8
    user, sep, rest = text.partition(",")
    action = rest.split(",", 1)[0].strip()
    user = user.strip()
    if not sep or not user or not action:
        msg = f"not a 'user,action,...' line: {text[:80]!r}"
        raise ValueError(msg)
    return user, action


def update_user(actions: list[str], old: UserState | None) -> UserState | None:
    """The running state of one user; the last field holds what this batch added.

    States are tuples, so a user without new events keeps the very same value
    and costs nothing in the checkpoint.
    """
    if not actions:
        if old is None or not old[3]:
            return old
        return (old[0], old[1], old[2], ())
    events, _, totals, _ = old if old is not None else (0, "", (), ())
    new = Counter(actions)
    merged = Counter(dict(totals))
    merged.update(new)
    return (events + len(actions), actions[-1], tuple(sorted(merged.items())), tuple(sorted(new.items())))


def user_hash(prefix: str) -> Callable[[tuple[str, UserState]], tuple[str, list[Any]] | None]:
    """``hash_of(record)`` for `hset_writer`: a user with new events -> ``(key, [field, value, ...])``, else None.

    The fields are ``events``, ``last_action`` and ``action:<a>`` for each action seen in
    the batch (its total). A flat field list rather than a dict, and each ``action:<a>``
    field name made once (not a new str per user and batch): this runs once per changed
    user, and both cut its CPU and the sink's queueing (``bench/redis_sink.py --breakdown``).
    """
    head = f"{prefix}user:"
    names: dict[str, str] = {}  # action -> its field name; bounded, since actions come from the records

    def hash_of(record: tuple[str, UserState]) -> tuple[str, list[Any]] | None:
        user, (events, last, totals, new) = record
        if not new:
            return None
        fields: list[Any] = ["events", events, "last_action", last]
        # new's actions are among totals', both sorted: one walk through totals finds them, in
        # totals' order (cheaper than a dict of totals per user: this runs once per changed user)
        rest = iter(totals)
        for action, _ in new:
            for other, total in rest:
                if other == action:
                    name = names.get(action)
                    if name is None:
                        name = "action:" + action
                        if len(names) < 1024:
                            names[action] = name
                    fields += (name, total)
                    break
        return head + user, fields

    return hash_of


def hset_writer(prefix: str) -> Callable[[Any, list[tuple[str, UserState]]], None]:
    """``write(pipeline, records)`` for RedisSink: HSET the changed users' totals (idempotent).

    One hash per user with new events (`user_hash`), queued by `RedisSink.hset_writer`.
    """
    return RedisSink.hset_writer(user_hash(prefix))


def hincrby_writer(prefix: str) -> Callable[[Any, list[tuple[str, UserState]]], None]:
    """``write(pipeline, records)`` for RedisSink: HINCRBY/INCRBY the batch's deltas (not idempotent)."""

    def write(pipe: Any, records: list[tuple[str, UserState]]) -> None:
        batch_total = 0
        for user, (_, last, _, new) in records:
            if not new:
                continue
            key = f"{prefix}user:{user}"
            n_user = 0
            for action, n in new:
                pipe.hincrby(key, f"action:{action}", n)
                n_user += n
            pipe.hincrby(key, "events", n_user)
            pipe.hset(key, "last_action", last)
            batch_total += n_user
        if batch_total:
            pipe.incrby(f"{prefix}events_total", batch_total)

    return write


def dead_letter_doc(rec: dict[str, Any]) -> str:
    """A bad record as compact JSON: bytes as text when UTF-8, else base64 under ``<field>_base64``.

    (Latin-1 text escaped by JSON took up to 6 bytes per byte.)
    """
    doc: dict[str, Any] = {}
    for k, v in rec.items():
        if isinstance(v, bytes):
            try:
                doc[k] = v.decode("utf-8")
            except UnicodeDecodeError:
                doc[f"{k}_base64"] = base64.b64encode(v).decode("ascii")
        elif v is not None:
            doc[k] = v
    return json.dumps(doc, sort_keys=True, ensure_ascii=False, separators=(",", ":"))


def dead_letter_writer(prefix: str) -> Callable[[Any, list[dict[str, Any]]], None]:
    """``write(pipeline, records)`` for the dead-letter RedisSink: RPUSH each bad record as JSON."""

    def write(pipe: Any, records: list[dict[str, Any]]) -> None:
        for rec in records:
            pipe.rpush(f"{prefix}dead_letters", dead_letter_doc(rec))

    return write


def create_context(cfg: argparse.Namespace) -> sk.StreamingContext:
    """Build the job (called by get_or_create on every start, fresh or resumed)."""
    ssc = sk.StreamingContext(cfg.batch_interval, checkpoint=cfg.checkpoint, snapshot_every=cfg.snapshot_every)
    redis_opts: dict[str, Any] = {"max_retries": cfg.redis_retries, "timeout_s": cfg.redis_timeout}
    on_error = None
    if cfg.dead_letter:
        on_error = RedisSink(
            cfg.redis_url,
            dead_letter_writer(cfg.key_prefix),
            name="dead-letters",
            marker_key=f"{cfg.key_prefix}streamkeep:sink:dead-letters:last_batch",
            **redis_opts,
        )
    events = ssc.kafka_stream(
        cfg.topic,
        bootstrap_servers=cfg.bootstrap_servers,
        name="events",
        group_id=cfg.group_id or None,
        starting_offsets=cfg.starting_offsets,
        max_records_per_partition=cfg.max_records_per_partition,
        max_rate_per_partition=cfg.max_rate_per_partition,
        backpressure=cfg.backpressure,
        value_deserializer=parse_line,
        on_error=on_error,
        timeout_s=cfg.kafka_timeout,
    )
    users = events.map(lambda rec: rec.value).update_state_by_key(update_user, name="user_state")
    write = hincrby_writer(cfg.key_prefix) if cfg.mode == "incr" else hset_writer(cfg.key_prefix)
    users.write_to(
        RedisSink(cfg.redis_url, write, name="users", marker_key=f"{cfg.key_prefix}streamkeep:sink:users:last_batch", **redis_opts)
    )
    return ssc


# --------------------------------------------------------------------------- running it


class _LastBatch:
    """Listener: remembers how many records the last finished batch read."""

    def __init__(self) -> None:
        self.records: int | None = None

    def on_batch_completed(self, info: sk.BatchInfo) -> None:
        self.records = info.num_records


def run_back_to_back(ssc: sk.StreamingContext, max_batches: int | None, until_idle: bool) -> int:
    """Run batches without waiting for the clock; return how many ran.

    Stops after `max_batches`, or (`until_idle`) after the first batch that read
    no record: plans are made in order, so every record planned before it has
    been processed by then (replayed batches run first).
    """
    last = _LastBatch()
    ssc.add_listener(last)
    done = 0
    while max_batches is None or done < max_batches:
        done += ssc.run(max_batches=1)
        if until_idle and last.records == 0:
            break
    return done


def _env(name: str, default: str | None) -> str | None:
    return os.environ.get(name) or default


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(prog=PROG, description=__doc__.splitlines()[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    ap.add_argument("--bootstrap-servers", default=_env("KAFKA_BOOTSTRAP_SERVERS", "127.0.0.1:9092"), help="Kafka bootstrap.servers")
    ap.add_argument("--topic", default=_env("KAFKA_TOPIC", "events"))
    ap.add_argument(
        "--group-id", default=_env("KAFKA_GROUP_ID", "kafka-to-redis"), help="consumer group the offsets are committed to ('' for none)"
    )
    ap.add_argument(
        "--starting-offsets", default="earliest", choices=("earliest", "latest", "committed"), help="where a new checkpoint starts"
    )
    ap.add_argument("--redis-url", default=_env("REDIS_URL", "redis://127.0.0.1:6379/0"))
    ap.add_argument("--checkpoint", default=_env("CHECKPOINT_URL", "ckpt/kafka_to_redis"), help="checkpoint URL (path, file://, s3://...)")
    ap.add_argument("--mode", default=_env("WRITE_MODE", "set"), choices=("set", "incr"), help="HSET totals, or HINCRBY/INCRBY deltas")
    ap.add_argument("--key-prefix", default="", help="prefix of every Redis key the job writes")
    ap.add_argument("--batch-interval", type=float, default=1.0, help="seconds")
    ap.add_argument("--max-records-per-partition", type=int, default=None, help="cap per partition and batch")
    ap.add_argument("--max-rate-per-partition", type=float, default=None, help="records/s per partition")
    ap.add_argument("--backpressure", action="store_true", help="size batches adaptively (PID rate estimator)")
    ap.add_argument("--snapshot-every", type=int, default=None, help="full state snapshot every N batches")
    ap.add_argument("--dead-letter", action="store_true", help="send undecodable records to the Redis list <prefix>dead_letters")
    ap.add_argument("--kafka-timeout", type=float, default=30.0, help="seconds an unreachable broker is retried before the job fails")
    ap.add_argument("--redis-retries", type=int, default=5, help="retries after a Redis connection error")
    ap.add_argument("--redis-timeout", type=float, default=5.0, help="Redis socket timeout, seconds")
    ap.add_argument("--max-batches", type=int, default=None, help="run at most N batches back to back, then exit")
    ap.add_argument("--until-idle", action="store_true", help="run batches back to back until one reads nothing, then exit")
    cfg = ap.parse_args(argv)
    if cfg.mode not in ("set", "incr"):
        ap.error(f"--mode must be set or incr, not {cfg.mode!r}")
    return cfg


def main(argv: list[str] | None = None) -> int:
    cfg = parse_args(argv)
    try:
        ssc = sk.StreamingContext.get_or_create(cfg.checkpoint, lambda: create_context(cfg))
    except sk.StreamkeepError as exc:
        print(f"{PROG}: cannot start: {type(exc).__name__}: {exc}", file=sys.stderr, flush=True)
        return 1
    # It says below whether it resumes: not streamkeep's own stderr line about it too (docs/observability.md)
    logging.getLogger("streamkeep.resume").setLevel(logging.ERROR)
    if ssc.restored:
        print(f"{PROG}: resumed from checkpoint {cfg.checkpoint} after batch {ssc.last_batch_time_ms}, mode {cfg.mode}", flush=True)
    elif ssc.replays_left:  # stopped before its first commit: its planned batches run again, with the same input
        n = ssc.replays_left
        print(
            f"{PROG}: resumed from checkpoint {cfg.checkpoint}: no batch was committed before it stopped; "
            f"replaying its {n} planned batch{'es' if n != 1 else ''} first, mode {cfg.mode}",
            flush=True,
        )
    else:
        print(f"{PROG}: started with checkpoint {cfg.checkpoint}, mode {cfg.mode}", flush=True)
    try:
        if cfg.max_batches is not None or cfg.until_idle:
            n = run_back_to_back(ssc, cfg.max_batches, cfg.until_idle)
            print(f"{PROG}: done: {n} batches, last batch {ssc.last_batch_time_ms}", flush=True)
        else:
            signal.signal(signal.SIGTERM, signal.default_int_handler)  # SIGTERM stops like Ctrl-C
            ssc.start()
            ssc.await_termination()
    except KeyboardInterrupt:
        print(f"{PROG}: stopping after the batch in progress", flush=True)
    except sk.StreamkeepError as exc:
        print(f"{PROG}: failed: {type(exc).__name__}: {exc}", file=sys.stderr, flush=True)
        return 1
    finally:
        ssc.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
