"""The Ray executor vs the local one, ratios in one run (issue 12).

Three jobs, each on the local executor and on Ray with W = 1, 2 and 4 workers (the local Ray
that ``RayExecutor(num_cpus=W, num_partitions=W)`` starts on demand, as a user's job gets it),
no checkpoint, ManualClock (no waiting):

* **word count**: ``update_state_by_key`` over words from 10k keys (cheap per record);
* **CPU-heavy**: a per-record function of about 50 us (a busy loop) before
  ``reduce_by_key``-style state (``update_state_by_key``): the chain runs in the partition actors
  (W >= the CPUs Ray was given: one slice of each batch per actor);
* **CPU-heavy's batches, free function**: the CPU-heavy job's batches (8,000 records) with a per-record
  function that costs nothing: Ray's added cost per batch of that size (the shuffle, the calls, the
  records' serialisation), which is what keeps the CPU-heavy job from scaling by W;
* **tiny batches**: one record per batch into ``update_state_by_key``: Ray's added cost per batch.

Ray's start-up (a few seconds) and the actors' start are excluded (a warm-up batch runs
first). The machine is shared, so each round runs the job on the local executor and then on
Ray, back to back, and the figures are the median (min-max) over rounds of those ratios.
Run: ``.venv/bin/python bench/ray.py [--quick] [--rounds N] [--workers 1 2 4]``. On a 2-core machine W=4 only adds
contention: it shows where scaling stops, not more speed.

``--cpu`` first runs the CPU-heavy function in one process alone and in two at once: if two
processes at once take longer per record, the two cores do not double the throughput (vCPUs
sharing a physical core, a busy host) and no executor reaches 2x here; and it says whether Linux
autogroup is on (then the job, one session, gets one core's share while another session is busy).
It then adds, per job and W, the CPU time every process of the job used per batch (every thread, read from
``/proc/<pid>/task/*/schedstat``: the driver, the partition actors, Ray's task workers and Ray's own daemons),
against the local executor's: what Ray adds to the work, which on a machine with few cores comes out
of the workers' share, and the CPU time the hypervisor took from the VM's vCPUs meanwhile (``steal``: a
host that runs other work on the same cores, which a second busy vCPU feels), and what the rest of the
machine (every process outside the job) used meanwhile; the ratio is printed once more over the rounds
in which the rest of the machine stayed under 10% of a core in both runs. It is measured on the best-of runs, so it is far less noisy than a wall-clock
ratio on a shared machine (other processes' CPU is not counted). Linux only.

``--phases`` adds, for the Ray runs, where a batch's wall time went outside the map work, from Ray's task
events (``ray.timeline``): the *head* (previous batch's last step end until every actor started mapping:
the driver's outputs, plan, read and dispatch), the *start offset* (how far apart the actors started their
first slice: an actor that started later ends later unless it gets less), the *map skew* (first to last actor's end of mapping: the
shuffle's barrier), the *exchange* (last map end to last step start: the buckets through the driver), the
last *step*, and the *slices* (map calls per batch: more than W when the actors pull small slices); and the
actors' *idle* time per batch (mean over actors) between their calls, before a map call (waiting for their
input: the driver's tail of the last batch and head of this one) and before a step (waiting for the exchange).
No Ray setting is changed for it (task events are on by default).
"""

from __future__ import annotations

import argparse
import logging
import os
import statistics
import sys
import time
from itertools import pairwise
from typing import Any

HERE = os.path.dirname(os.path.abspath(__file__))
# this file is named ray.py: its directory must not shadow the ray package
sys.path[:] = [p for p in sys.path if os.path.abspath(p or ".") != HERE]
sys.path.insert(0, os.path.dirname(HERE))
os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")  # loopback only, before ray is imported
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
os.environ.setdefault("RAY_worker_niceness", "0")  # as RayExecutor's own local Ray: workers at the driver's priority

import streamkeep as sk  # noqa: E402
from streamkeep.testing import ManualClock  # noqa: E402


def heavy(w: str) -> tuple[str, int]:
    """About 50 us of pure Python per record on the reference machine."""
    acc = len(w)
    for i in range(400):
        acc = (acc * 31 + i) % 1_000_003
    return (w, acc % 7)


def add(values: list[int], old: int | None) -> int:
    return (old or 0) + sum(values)


def _cmdline(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return f.read().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


def _role(pid: int) -> str:
    """What process `pid` is to the job: driver, actor (partition host), task worker or a Ray daemon."""
    if pid == os.getpid():
        return "driver"
    cmd = _cmdline(pid)
    if "ray::_Host" in cmd:
        return "actors"
    if "ray::" in cmd or "default_worker" in cmd:
        return "task workers"
    return "Ray daemons"


def _cpu_by_role() -> dict[str, float]:
    """CPU seconds used so far by this process and every process it started (Ray's daemons and workers), by role.

    Every thread of a process counts (a Ray worker's io and gRPC threads take a core as its main
    thread does); ``actor <pid>`` is an actor's main thread alone, ``their Ray threads`` the actors' other threads.
    """
    children: dict[int, list[int]] = {}
    for d in os.listdir("/proc"):
        if d.isdigit():
            try:
                with open(f"/proc/{d}/stat") as f:
                    ppid = int(f.read().rsplit(")", 1)[1].split()[1])
            except (OSError, ValueError, IndexError):
                continue
            children.setdefault(ppid, []).append(int(d))
    out: dict[str, float] = {}
    todo = [os.getpid()]
    while todo:
        pid = todo.pop()
        todo.extend(children.get(pid, ()))
        main, threads = _thread_ns(pid)
        if main is None:
            continue
        role = _role(pid)
        out[role] = out.get(role, 0.0) + threads / 1e9
        if role == "actors":
            out[f"actor {pid}"] = main / 1e9  # its main thread: the one that runs the calls (maps, steps)
            out["their Ray threads"] = out.get("their Ray threads", 0.0) + (threads - main) / 1e9
    return out


def _thread_ns(pid: int) -> tuple[int | None, int]:
    """CPU ns of `pid`'s main thread (None: gone) and of all its threads (Ray's io and gRPC threads too)."""
    try:
        with open(f"/proc/{pid}/schedstat") as f:
            main = int(f.read().split()[0])
        tids = os.listdir(f"/proc/{pid}/task")
    except (OSError, ValueError, IndexError):
        return None, 0
    total = 0
    for tid in tids:
        try:
            with open(f"/proc/{pid}/task/{tid}/schedstat") as f:
                total += int(f.read().split()[0])
        except (OSError, ValueError, IndexError):
            continue  # a thread that ended meanwhile
    return main, max(total, main)


def _machine_s() -> dict[str, float]:
    """CPU seconds so far of the whole machine (every process: ``busy``) and the CPU time the hypervisor
    took from this VM's vCPUs (``host steal``: 0 on bare metal), from /proc/stat."""
    try:
        with open("/proc/stat") as f:
            fields = [int(x) for x in f.readline().split()[1:9]]
    except (OSError, ValueError):
        return {}
    user, nice, system, _idle, _iowait, irq, softirq, steal = fields
    tick = os.sysconf("SC_CLK_TCK")
    return {"machine busy": (user + nice + system + irq + softirq) / tick, "host steal": steal / tick}


def _autogroup_note() -> str | None:
    """What Linux's autogroup does to this job on a shared machine (None when it is off or unknown)."""
    try:
        with open("/proc/sys/kernel/sched_autogroup_enabled") as f:
            on = f.read().strip() == "1"
    except OSError:
        return None
    if not on:
        return None
    return (
        "  Linux autogroup is on: the CPU is shared out by session first, and the job (driver, Ray, its workers) is one "
        "session, so while another session keeps a core busy the whole job gets one core, however many workers it runs "
        "(only a machine the job has to itself shows Ray's scaling; see 'the rest of the machine' below)"
    )


def _phases(t0: float, t1: float, workers: int) -> dict[str, float] | None:
    """Medians (ms) of where a Ray batch's time went between `t0` and `t1` (epoch s), from Ray's task events.

    Per batch (W ``step`` calls, and ``map_bucket`` calls for its slices, W or more): *head*, from
    the previous batch's last step end until every actor started mapping (the driver's outputs,
    plan, read and dispatch, the actor's argument decoding); *start offset*, between the first and the
    last actor's start of its first slice; *map skew*, between the first and the
    last actor's end of mapping (the barrier the shuffle waits at; with more slices than actors,
    the W last map ends); *slices*, map calls per batch; *exchange*, from the last map's end to the last step's start (its buckets
    through the driver); *step*, the last step. None when the events do not pair up.
    """
    import ray

    quiet = logging.getLogger("ray._private.state")  # its notice that timeline() will read from the dashboard
    level = quiet.level
    quiet.setLevel(logging.ERROR)
    try:
        events = ray.timeline()
    finally:
        quiet.setLevel(level)
    spans: dict[str, list[tuple[float, float, str]]] = {"map_bucket": [], "step": []}
    for e in events:
        if e.get("ph") == "X" and e.get("name") in spans and t0 <= e["ts"] / 1e6 <= t1:
            spans[e["name"]].append((e["ts"] / 1e3, (e["ts"] + e["dur"]) / 1e3, f"{e.get('pid')}/{e.get('tid')}"))
    maps, steps = sorted(spans["map_bucket"]), sorted(spans["step"])
    if not maps or not steps or len(steps) % workers:
        return None
    out: dict[str, list[float]] = {"head": [], "start offset": [], "map skew": [], "exchange": [], "step": [], "slices": []}
    prev_end = prev_first = None
    for i in range(0, len(steps), workers):
        st = [(a, b) for a, b, _ in steps[i : i + workers]]
        first_step = min(s for s, _ in st)
        # the batch's slices: after the last batch's steps started (a slice sent ahead may start before they all end)
        m = [x for x in maps if x[1] <= first_step and (prev_first is None or x[0] >= prev_first)]
        if not m:
            return None
        last_map_end, last_step_start = max(e for _, e, _ in m), max(s for s, _ in st)
        if prev_end is not None:
            out["head"].append(max(s for s, _, _ in m[:workers]) - prev_end)  # until every actor has started mapping
        last_end: dict[str, float] = {}  # per actor (its worker), its last map's end
        for _, e, who in m:
            last_end[who] = max(e, last_end.get(who, e))
        first_start: dict[str, float] = {}  # per actor, its first map's start (sent ahead: when its last step ended)
        for s0, _, who in m:
            first_start[who] = min(s0, first_start.get(who, s0))
        out["start offset"].append(max(first_start.values()) - min(first_start.values()))
        out["map skew"].append(last_map_end - min(last_end.values()))
        out["exchange"].append(last_step_start - last_map_end)
        prev_end, prev_first = max(e for _, e in st), first_step
        out["step"].append(prev_end - last_step_start)
        out["slices"].append(float(len(m)))
    # Each actor's idle time between its calls (one clock: the actors' events on this host), per batch: before a
    # map call (waiting for its input: the driver's tail of the last batch and head of this one) and before a step
    # (waiting for the other actors' buckets); the first batch's head is not counted (no call before it here).
    gaps = {"idle before a map": 0.0, "idle before a step": 0.0}
    per_actor: dict[str, list[tuple[float, float, str]]] = {}
    for name, spans_of in (("map", maps), ("step", steps)):
        for a, b, who in spans_of:
            per_actor.setdefault(who, []).append((a, b, name))
    for calls in per_actor.values():
        calls.sort()
        for (_, end, _), (start, _, kind) in pairwise(calls):
            gaps[f"idle before a {kind}"] += max(0.0, start - end)
    batches = len(steps) // workers
    for k, v in gaps.items():
        out[k] = [v / max(1, len(per_actor)) / batches]
    return {k: statistics.median(v) for k, v in out.items() if v}


def _time_job(executor: Any, batches: list[list[Any]], per_record: Any, reps: int) -> tuple[float, dict[str, float]]:
    """Best of `reps` runs of the batches (seconds) after a warm-up batch (actors and task workers started), and its CPU seconds by role."""
    ssc = sk.StreamingContext(1.0, clock=ManualClock(), executor=executor)
    src = ssc.queue_stream([batches[0]] + batches * reps, name="in")  # warm-up at full size: starts the task workers too
    src.map(per_record).update_state_by_key(add, name="state").foreach_batch(lambda b: b.count())
    ssc.run(1)
    best, best_cpu = float("inf"), {}
    window = (0.0, 0.0)
    for _ in range(reps):  # the best run: this machine is shared, the others are noise
        c0 = {**_cpu_by_role(), **_machine_s()} if CPU else {}
        w0, t0 = time.time(), time.perf_counter()
        ssc.run(len(batches))
        took = time.perf_counter() - t0
        if took < best:
            c1 = {**_cpu_by_role(), **_machine_s()} if CPU else {}
            best, best_cpu = took, {k: v - c0.get(k, 0.0) for k, v in c1.items()}
            window = (w0, time.time())
    if PHASES and executor != "local":
        got = _phases(*window, executor.num_partitions or 1)
        best_cpu.update({f"phase {k}": v for k, v in (got or {}).items()})
    if best_cpu:  # the partition actor that worked most (the batch waits for it), and the wall time it is set against
        busiest = max((v for k, v in best_cpu.items() if k.startswith("actor ")), default=0.0)
        best_cpu = {k: v for k, v in best_cpu.items() if not k.startswith("actor ")}
        job = sum(v for k, v in best_cpu.items() if k in ROLES)
        others = max(0.0, best_cpu.pop("machine busy", job) - job)  # other sessions' processes (and the kernel)
        best_cpu.update({"busiest actor": busiest, "wall": best, "rest of the machine": others})
    ssc.stop()
    return best, best_cpu


CPU = False  # --cpu
PHASES = False  # --phases
ROLES = ("driver", "actors", "task workers", "Ray daemons")  # the job's processes, by role (`_role`)
#: a round counts as "the machine to itself" when the rest of the machine used less than this share of one core in both runs
QUIET = 0.1


def _heavy_cpu_us(go: Any, done: Any) -> None:
    """A process's CPU time per record of `heavy` (microseconds), once per message on `go`, until None."""
    while go.get() is not None:
        c0 = time.process_time()
        for i in range(2000):
            heavy(f"h{i}")
        done.put((time.process_time() - c0) / 2000 * 1e6)


def _two_cores() -> tuple[float, float]:
    """The CPU-heavy function's CPU time per record in one process alone and in two at once (best of 15 tries each).

    Two processes that each get a whole core take as long per record as one alone; on two
    vCPUs that share a physical core (or a busy host) each takes longer, and no executor
    can scale by 2 there.
    """
    import multiprocessing as mp

    ctx = mp.get_context("fork")
    gos = [ctx.Queue() for _ in range(2)]
    done = ctx.Queue()
    procs = [ctx.Process(target=_heavy_cpu_us, args=(g, done), daemon=True) for g in gos]
    for p in procs:
        p.start()
    alone: list[float] = []
    both: list[float] = []
    try:
        for _ in range(15):
            gos[0].put(1)
            alone.append(done.get())
            for g in gos:
                g.put(1)
            both.extend(done.get() for _ in gos)
    finally:
        for g in gos:
            g.put(None)
        for p in procs:
            p.join()
    return min(alone), min(both)


def _spread(values: list[float], fmt: str = "{:.2f}") -> str:
    """``median (min-max)`` of `values`."""
    return f"{fmt.format(statistics.median(values))} ({fmt.format(min(values))}-{fmt.format(max(values))})"


def pair(w: str) -> tuple[str, int]:
    return (w, 1)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--rounds", type=int, default=5, help="alternating local/Ray rounds per job and W (default 5)")
    ap.add_argument("--workers", type=int, nargs="+", default=[1, 2, 4], help="Ray worker counts W (default 1 2 4)")
    ap.add_argument("--only", default="", help="run only the jobs whose name contains this text (e.g. CPU)")
    ap.add_argument("--cpu", action="store_true", help="also the CPU per batch of every process of the job, by role (Linux)")
    ap.add_argument("--phases", action="store_true", help="also where a Ray batch's wall time went (head, map skew, exchange, step), from Ray's task events")
    args = ap.parse_args()
    global CPU  # noqa: PLW0603 - a flag of this script
    CPU = args.cpu
    global PHASES  # noqa: PLW0603 - a flag of this script
    PHASES = args.phases
    q = 4 if args.quick else 1
    words = [[f"w{(i * 7919 + b) % 10_000}" for i in range(200_000 // q)] for b in range(5)]
    heavy_in = [[f"h{(i * 31 + b) % 500}" for i in range(8_000 // q)] for b in range(5)]
    tiny = [[f"t{b % 3}"] for b in range(200 // q)]
    jobs = {
        "word count (1M words, 10k keys)": (words, pair),
        "CPU-heavy (~50 us/record, 40k records)": (heavy_in, heavy),
        "CPU-heavy's batches with a free function": (heavy_in, pair),
        "tiny batches (1 record)": (tiny, pair),
    }
    jobs = {name: job for name, job in jobs.items() if args.only in name}
    t0 = time.perf_counter()
    for i in range(2000):
        heavy(f"h{i}")
    print(f"the CPU-heavy function: {(time.perf_counter() - t0) / 2000 * 1e6:.0f} us per record here")
    if CPU:
        alone, both = _two_cores()
        print(f"  its CPU per record, best of 15: {alone:.1f} us in one process alone, {both:.1f} us each in two at once")
        note = _autogroup_note()
        if note:
            print(note)
    import ray

    from streamkeep.executors import RayExecutor

    # ratio[job][W]: local time / Ray time, one pair per round, the two runs back to back (alternating),
    # so a load change on this shared machine hits both sides of a ratio about equally.
    ratio: dict[str, dict[int, list[float]]] = {name: {} for name in jobs}
    secs: dict[str, dict[str, list[float]]] = {name: {} for name in jobs}
    added: dict[str, dict[int, list[float]]] = {}  # ms Ray adds per batch, for the jobs whose function is free
    cpu: dict[str, dict[str, list[dict[str, float]]]] = {name: {} for name in jobs}  # ms per batch by role
    phases: dict[str, dict[int, dict[str, list[float]]]] = {name: {} for name in jobs}  # --phases: ms per batch
    quiet: dict[str, dict[int, list[bool]]] = {name: {} for name in jobs}  # --cpu: per round, the machine was the job's
    for w in args.workers:
        # the local Ray a RayExecutor starts on demand, as a user's job gets it (loopback only, no dashboard, ...)
        ex = RayExecutor(num_partitions=w, num_cpus=w, keep_actors=True)
        try:
            _time_job(ex, [["w"]], pair, 1)  # start Ray and the actors before the rounds: the local runs share the machine with them too
            for name, (b, f) in jobs.items():
                for _ in range(args.rounds):
                    loc, loc_cpu = _time_job("local", b, f, 1)
                    on_ray, ray_cpu = _time_job(ex, b, f, 1)
                    for k in [k for k in ray_cpu if k.startswith("phase ")]:  # ms per batch already
                        phases[name].setdefault(w, {}).setdefault(k[len("phase ") :], []).append(ray_cpu.pop(k))
                    for label, c in (("local", loc_cpu), (f"ray W={w}", ray_cpu)):
                        cpu[name].setdefault(label, []).append({k: v / len(b) * 1e3 for k, v in c.items()})
                    ratio[name].setdefault(w, []).append(loc / on_ray)
                    if CPU:  # did the job have the machine to itself (both runs)?
                        alone = all(c.get("rest of the machine", 0.0) < QUIET * s for c, s in ((loc_cpu, loc), (ray_cpu, on_ray)))
                        quiet[name].setdefault(w, []).append(alone)
                    secs[name].setdefault("local", []).append(loc)
                    secs[name].setdefault(f"ray W={w}", []).append(on_ray)
                    if f is pair and "word" not in name:
                        added.setdefault(name, {}).setdefault(w, []).append((on_ray - loc) / len(b) * 1e3)
        finally:
            ex.shutdown()  # the actors and the local Ray it started
            if ray.is_initialized():
                ray.shutdown()
    print(f"{args.rounds} alternating rounds per W; median (min-max) over rounds")
    for name in jobs:
        cells = "; ".join(f"W={w}: {_spread(r)}x" for w, r in ratio[name].items())
        print(f"{name}: local/Ray ratio {cells}")
        print("  seconds: " + "; ".join(f"{k}: {_spread(v)}" for k, v in secs[name].items()))
        for w, flags in quiet[name].items():
            mine = [r for r, alone in zip(ratio[name][w], flags, strict=True) if alone]
            cell = f"{_spread(mine)}x" if mine else "-"
            print(f"  W={w}, rounds in which the rest of the machine used under {QUIET:.0%} of a core in both runs: {len(mine)} of {len(flags)}; their ratio {cell}")
        for label, per_round in cpu[name].items() if CPU else ():
            order = list(ROLES)
            roles = sorted({r for c in per_round for r in c if r in order}, key=order.index)
            total = _spread([sum(v for r, v in c.items() if r in order) for c in per_round], "{:.1f}")
            cells = [f"{r} {_spread([c.get(r, 0.0) for c in per_round], '{:.1f}')}" for r in roles]
            if "actors" in roles and any(c.get("their Ray threads") for c in per_round):  # not their main threads
                i = roles.index("actors")
                cells[i] += f" (of which their Ray threads {_spread([c.get('their Ray threads', 0.0) for c in per_round], '{:.1f}')})"
            parts = ", ".join(cells)
            steal = _spread([c.get("host steal", 0.0) for c in per_round], "{:.1f}")
            rest = _spread([c.get("rest of the machine", 0.0) for c in per_round], "{:.1f}")
            print(f"  CPU ms per batch, {label}: {total} ({parts}); taken by the host (steal): {steal}; the rest of the machine: {rest}")
            if label != "local" and any(c.get("busiest actor") for c in per_round):
                # wall minus the busiest actor's main-thread CPU: what the batch spent outside its slowest worker
                # (the driver's and the exchange's serial part, and the actor waiting for a core)
                busy = _spread([c["busiest actor"] for c in per_round], "{:.1f}")
                idle = _spread([c["wall"] - c["busiest actor"] for c in per_round], "{:.1f}")
                print(f"    {label}: busiest actor's CPU {busy} ms per batch; wall beyond it {idle} ms")
        for w, per_phase in phases[name].items():
            cells = ", ".join(f"{k} {_spread(v, '{:.1f}')}" for k, v in per_phase.items())
            print(f"  where a Ray W={w} batch's wall time went, ms (median per batch, over rounds): {cells}")
    for name, per_w in added.items():
        print(f"Ray's added cost per batch ({name}): " + "; ".join(f"W={w}: {_spread(v, '{:.1f}')} ms" for w, v in per_w.items()))


if __name__ == "__main__":
    main()
