"""Sliding windows and per-key state from Kafka into Redis, exactly once: the other half of the checkpoint articles.

Every Kafka record's value is a line ``user,action[,anything...]``. The job keeps

* ``reduce_by_key_and_window`` with an inverse function: each user's number of
  events in the last ``--window`` seconds, every ``--slide`` seconds. The inverse
  function subtracts the batch leaving the window instead of re-adding the whole
  window; the running values are checkpointed as deltas, so a restart resumes
  the window exactly.
* ``map_with_state`` with a timeout: each user's events since the user became
  active; a user idle for ``--idle`` seconds times out, and its final count is
  emitted once (``state.is_timing_out()``) and its state removed.

Both go to Redis through ``RedisSink``, which applies each batch's commands in one
atomic Lua script guarded by a batch marker, so a batch replayed after a crash
is not applied twice:

    <prefix>window        hash user -> events in the window, rewritten whole every
                          slide (DEL, then HSET of what the window emits, in the
                          batch's one script). ``filter_f`` drops a user whose count
                          went back to 0 from the window's state, so the work per
                          slide follows the active users, not every user ever seen;
                          the rewrite then removes that user from the hash. (Writing
                          only what a filtered window emits, HSET per user, would
                          keep the user's last non-zero count forever.)
    <prefix>sessions      list of "user:count" for every session that ended (RPUSH:
                          not idempotent, exact through the sink)
    <prefix>events_total  INCRBY of the events seen (not idempotent either)
    <prefix>dead_letters  list of the records that are not ``user,action,...`` UTF-8
                          text, as JSON (topic, partition, offset, error, value), once
                          each: a bad record does not stop the job (nor fail the same
                          batch again on every restart)

Run it against the servers the tests use (see examples/kafka_to_redis.py for
starting the mock Kafka cluster and redis-server, and producing lines)::

    python examples/kafka_windows_to_redis.py --bootstrap-servers 127.0.0.1:PORT \\
        --topic events --redis-url redis://127.0.0.1:6379/0 --checkpoint /tmp/ckpt-win

``kill -9`` it at any moment and start it again: ``events_total`` ends equal to
the number of records produced, ``sessions`` holds each ended session once, and
the window hash is what an uncrashed run shows. ``--max-batches N`` runs N batch
times back to back without waiting for the clock (tests, backfills).
"""

from __future__ import annotations

import argparse
import json
import logging
from typing import Any

import streamkeep as sk
from streamkeep.sinks import RedisSink


def parse(line: bytes) -> tuple[str, str]:
    """``user,action,...`` -> (user, action); raises ValueError on anything else (the record is dead-lettered)."""
    user, action = line.decode("utf-8").split(",")[:2]
    return user, action


def session(user: str, _value: Any, state: Any) -> tuple[str, int] | None:
    """Count a user's events while active; on timeout emit (user, final count)."""
    if state.is_timing_out():
        return (user, state.get())
    state.update((state.get() if state.exists() else 0) + 1)
    return None


def build(args: argparse.Namespace) -> sk.StreamingContext:
    """The job's graph; get_or_create runs it on every start and restores state into it by name."""
    ssc = sk.StreamingContext(args.interval, checkpoint=args.checkpoint)
    p = args.prefix

    def write_dead_letters(pipe: Any, bad: list[dict[str, Any]]) -> None:
        for rec in bad:
            doc = {k: v.decode("utf-8", "backslashreplace") if isinstance(v, bytes) else v for k, v in rec.items()}
            pipe.rpush(f"{p}dead_letters", json.dumps(doc, sort_keys=True, default=str))

    records = ssc.kafka_stream(
        args.topic, bootstrap_servers=args.bootstrap_servers, name="events",
        starting_offsets="earliest", value_deserializer=parse,
        on_error=RedisSink(args.redis_url, write_dead_letters, name="dead_letters"),
    )
    users = records.map(lambda r: (r.value[0], 1))
    window = users.reduce_by_key_and_window(
        lambda a, b: a + b, args.window, args.slide, inv_f=lambda a, b: a - b,
        filter_f=lambda kv: kv[1] != 0, name="window_counts",
    )
    ended = users.map_with_state(session, name="sessions", timeout=args.idle).filter(lambda x: x is not None)

    def write_window(pipe: Any, counts: list[tuple[str, int]]) -> None:
        # The window emits every active user every slide: replace the hash with them (one atomic script).
        pipe.delete(f"{p}window")
        if counts:
            pipe.hset(f"{p}window", mapping=dict(counts))

    def write_sessions(pipe: Any, sessions: list[tuple[str, int]]) -> None:
        for user, n in sorted(sessions):
            pipe.rpush(f"{p}sessions", f"{user}:{n}")

    def write_total(pipe: Any, counts: list[tuple[str, int]]) -> None:
        total = sum(n for _, n in counts)
        if total:
            pipe.incrby(f"{p}events_total", total)

    users.reduce_by_key(lambda a, b: a + b).write_to(RedisSink(args.redis_url, write_total, name="total"))
    window.write_to(RedisSink(args.redis_url, write_window, name="window"))
    ended.write_to(RedisSink(args.redis_url, write_sessions, name="sessions"))
    return ssc


PROG = "kafka_windows_to_redis"


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--bootstrap-servers", required=True)
    ap.add_argument("--topic", default="events")
    ap.add_argument("--redis-url", required=True)
    ap.add_argument("--checkpoint", required=True)
    ap.add_argument("--prefix", default="", help="prefix of the Redis keys")
    ap.add_argument("--interval", type=float, default=1.0, help="batch interval, seconds")
    ap.add_argument("--window", type=float, default=10.0, help="window length, seconds (a multiple of --slide)")
    ap.add_argument("--slide", type=float, default=2.0, help="window slide, seconds (a multiple of --interval)")
    ap.add_argument("--idle", type=float, default=30.0, help="a user idle this long ends its session, seconds")
    ap.add_argument("--max-batches", type=int, default=None, help="run N batch times back to back, then stop")
    args = ap.parse_args(argv)
    ssc = sk.StreamingContext.get_or_create(args.checkpoint, lambda: build(args))
    # It says below whether it resumes: not streamkeep's own stderr line about it too (docs/observability.md)
    logging.getLogger("streamkeep.resume").setLevel(logging.ERROR)
    if ssc.restored:  # say so: a restart that silently started over would look the same
        print(f"{PROG}: resumed from checkpoint {args.checkpoint} after batch {ssc.last_batch_time_ms}", flush=True)
    elif ssc.replays_left:  # stopped before its first commit: its planned batches run again, with the same input
        print(f"{PROG}: resumed from checkpoint {args.checkpoint}: replaying {ssc.replays_left} planned batch(es) first", flush=True)
    else:
        print(f"{PROG}: started with checkpoint {args.checkpoint}", flush=True)
    if args.max_batches is not None:
        ssc.run(max_batches=args.max_batches)
        ssc.stop()
        print(f"{PROG}: done: last batch {ssc.last_batch_time_ms}", flush=True)
        return
    ssc.start()
    ssc.await_termination()


if __name__ == "__main__":
    main()
