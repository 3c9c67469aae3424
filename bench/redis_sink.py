"""What ``RedisSink`` costs per batch on its own: this process's CPU, redis-server's CPU, wall.

``bench/kafka.py`` measures the sink inside the whole Kafka job (redis / no-op ratio), where
the machine's load and the engine's own work make a few hundred ms of difference hard to
see. This bench runs only the sink, on the batches that job's sink gets: the state of
``examples/kafka_to_redis.py`` (``update_user``) after batches of RECORDS records drawn
among USERS users, written with the example's writers (``hset_writer``: one HSET per
changed user; ``hincrby_writer``: HINCRBY per action and user, an HSET and an INCRBY).
redis-server runs on 127.0.0.1 (``tests/_servers.py``), on the same cores, so its CPU time
(``INFO cpu``, before and after) is part of what the sink costs.

Run: ``.venv/bin/python bench/redis_sink.py [--batches N] [--records N] [--users N] [--repeat N]``;
to compare two checkouts, run it in each alternately (the machine is shared). Prints the
best of ``--repeat`` runs per mode, per batch.

``--breakdown`` also splits one batch's cost (HSET mode; minimum and median of ``--repeat`` x 10
tries, the phases alternating): in this process, ``hash_of`` alone (the example's user code),
queueing (the write function on the sink's pipeline, ``hash_of`` included), packing (msgpack),
and the whole ``write`` (also sending the script and reading its reply); in redis-server, the
batch script whole, its decoding alone (the same script up to the commands' decoding), and
all of it but the commands (``redis.pcall`` a no-op): what the commands themselves cost
inside Lua is the whole minus that.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import random
import shutil
import sys
import time
from typing import Any

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, ROOT)
sys.path.insert(0, os.path.join(ROOT, "tests"))

from _servers import RedisServerProcess  # noqa: E402

from streamkeep.sinks import RedisSink  # noqa: E402

ACTIONS = ("view", "view", "view", "click", "click", "cart", "buy")


def _load_example() -> Any:
    spec = importlib.util.spec_from_file_location("kafka_to_redis", os.path.join(ROOT, "examples", "kafka_to_redis.py"))
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _batches(example: Any, batches: int, records: int, users: int, shared: bool = False) -> list[list[tuple[str, Any]]]:
    """What update_state_by_key hands the sink each batch: every user with a state, new or not.

    As in the job: each record is a line decoded by the example's ``parse_line`` (a new str per
    user and action, as the Kafka source's deserializer makes them), and the users come in the
    state's order, not sorted. `shared`: this bench's data before 2026-12-04, the actions the same
    few str objects and the users sorted, on which the write function costs the client ~1/3 less
    than on the job's records (its ``==`` on actions is an identity check, its reads sequential).
    """
    rng = random.Random(7)
    state: dict[str, Any] = {}
    out = []
    for _ in range(batches):
        pending: dict[str, list[str]] = {}
        for i in range(records):
            u, action = rng.randrange(users), rng.choice(ACTIONS)
            if shared:
                user = f"u{u}"
            else:
                user, action = example.parse_line(f"u{u},{action},/page/{i % 997}".encode())
            pending.setdefault(user, []).append(action)
        batch = []
        for user in sorted(set(state) | set(pending)) if shared else [*state, *(u for u in pending if u not in state)]:
            new = example.update_user(pending.get(user, []), state.get(user))
            state[user] = new
            batch.append((user, new))
        out.append(batch)
    return out


def _server_cpu_s(client: Any) -> float:
    info = client.info("cpu")
    return float(info["used_cpu_user"]) + float(info["used_cpu_sys"])


def _breakdown(example: Any, url: str, client: Any, batch: list[tuple[str, Any]], tries: int) -> None:
    """One HSET batch's cost by phase (see the module's docstring); ms, min and median."""
    from streamkeep.sinks import redis as sink_module

    hash_of = example.user_hash("")
    sink = RedisSink(url, example.hset_writer(""), name="breakdown")
    sink.open()
    try:
        commands = sink._queue(1, batch)
        packed = sink._pack(1, commands)
        decode_only = "local function cleanup() end\n" + sink_module._HEAD + sink_module._LOAD_PACKED + "return 1"
        # the script with redis.pcall a no-op: its decoding, validation and loop without the commands
        no_calls = sink_module._SCRIPT.replace("redis.pcall, unpack", "function() return 1 end, unpack", 1)
        shas = {"whole": client.script_load(sink_module._SCRIPT), "its decoding alone": client.script_load(decode_only)}
        if no_calls != sink_module._SCRIPT:
            shas["all of it but the commands"] = client.script_load(no_calls)
        times: dict[str, list[float]] = {}
        done = [1000]

        def write() -> None:
            done[0] += 1
            sink.write(done[0], batch)

        def hash_of_alone() -> None:
            for r in batch:  # each result dropped at once, as the sink drops it (a list of them all cost ~5 ms more)
                hash_of(r)

        client_phases = {
            "hash_of alone (user code)": hash_of_alone,
            "queueing (hash_of included)": lambda: sink._queue(1, batch),
            "packing": lambda: sink._pack(1, commands),
            "write (all of the above, sending, reply)": write,
        }
        for k in range(tries):
            for label, fn in client_phases.items():
                c0 = time.process_time()
                fn()
                times.setdefault(label, []).append(time.process_time() - c0)
            for label, sha in shas.items():
                s0 = _server_cpu_s(client)
                client.evalsha(sha, 1, "bench:breakdown:marker", 10 + k, "", "", len(commands), *packed)
                times.setdefault(f"redis-server: the batch script, {label}", []).append(_server_cpu_s(client) - s0)
                client.delete("bench:breakdown:marker")
        print(f"one batch of {len(commands):,} HSETs ({len(commands.args):,} arguments), ms of CPU (min / median of {tries}):")
        for label, xs in times.items():
            xs.sort()
            print(f"  {label:<60}{min(xs) * 1e3:>8.1f}{xs[len(xs) // 2] * 1e3:>8.1f}")
    finally:
        sink.close()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--batches", type=int, default=5, help="batches per run (default 5, as bench/kafka.py)")
    ap.add_argument("--records", type=int, default=40_000, help="records per batch (default 40k)")
    ap.add_argument("--users", type=int, default=10_000, help="distinct users (default 10k)")
    ap.add_argument("--repeat", type=int, default=3, help="runs per mode; the best counts (default 3)")
    ap.add_argument("--breakdown", action="store_true", help="also split one HSET batch's cost into its phases")
    ap.add_argument(
        "--shared-strings",
        action="store_true",
        help="records as this bench made them before: shared action strs, users sorted (cheaper than the job's)",
    )
    args = ap.parse_args()
    redis_bin = os.environ.get("REDIS_SERVER") or shutil.which("redis-server")
    if not redis_bin:
        print("bench: redis-server not found (apt-get install -y redis-server)", file=sys.stderr)
        return 2
    import redis

    example = _load_example()
    batches = _batches(example, args.batches + 1, args.records, args.users, args.shared_strings)  # the first one warms up
    server = RedisServerProcess(redis_bin)
    try:
        client = redis.Redis.from_url(server.url)
        print(
            f"bench/redis_sink.py: {args.batches} batches of {args.records:,} records among {args.users:,} users "
            f"(~{sum(1 for _, s in batches[-1] if s[3]):,} changed users per batch; "
            f"{'shared action strs, users sorted' if args.shared_strings else 'records decoded as in the job'}), "
            f"redis-server on 127.0.0.1; best of {args.repeat}"
        )
        print(f"{'mode':<10}{'wall ms':>10}{'client CPU ms':>15}{'server CPU ms':>15}{'both ms':>10}   (per batch)")
        for mode, make in (("HSET", example.hset_writer), ("HINCRBY", example.hincrby_writer)):
            best: tuple[float, float, float] | None = None
            for _ in range(args.repeat):
                client.flushall()
                sink = RedisSink(server.url, make(""), name="bench")
                sink.open()
                try:
                    sink.write(1000, batches[0])
                    s0, c0, t0 = _server_cpu_s(client), time.process_time(), time.perf_counter()
                    for k, batch in enumerate(batches[1:], 2):
                        sink.write(1000 * k, batch)
                    wall, cpu, srv = time.perf_counter() - t0, time.process_time() - c0, _server_cpu_s(client) - s0
                finally:
                    sink.close()
                run = (wall / args.batches, cpu / args.batches, srv / args.batches)
                best = run if best is None or run[1] + run[2] < best[1] + best[2] else best
            assert best is not None
            wall, cpu, srv = best
            print(f"{mode:<10}{wall * 1e3:>10.1f}{cpu * 1e3:>15.1f}{srv * 1e3:>15.1f}{(cpu + srv) * 1e3:>10.1f}")
        if args.breakdown:
            _breakdown(example, server.url, client, batches[-1], args.repeat * 10)
        print(f"load average at the end: {' '.join(f'{x:.2f}' for x in os.getloadavg())} (other processes on these CPUs skew wall times)")
    finally:
        server.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
