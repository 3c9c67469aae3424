"""What a checkpoint costs per batch, and what a restart costs (issue 4).

A job keeps keyed state with ``map_with_state`` (seeded with ``initial=`` of
KEYS keys) and changes CHANGED keys per batch (a ``rate_stream`` of CHANGED
records per 1 s batch, record i touching key ``k{i * 7919 % KEYS}``, so the keys
of one batch are distinct). Per batch it measures the time of the commit step
(state deltas written, commit record appended: the scheduler's ``_commit``),
the whole batch, and the bytes of the files the batch created (plan, delta,
commit record; the snapshot every SNAPSHOT_EVERY batches separately).

Printed ratios, all measured in this run:

* per-batch commit time and bytes with 1M keys of state vs 10k keys, both with
  1k keys changed per batch (target: within 2x: cost follows changes, not state);
* delta bytes vs a full snapshot of the 1M-key state (target: <= 2%);
* every batch of each case (10k, 100k and 1M keys; --quick: 10k and 100k), snapshot
  batches included (a snapshot every 25 batches over 150): p99 <= 3x the median and
  max <= 5x the median (issue 14: a snapshot must not pause the batch loop, whether it
  is encoded in the loop, merged in a thread or merged by a helper process);
* restart to the first new batch done with 1M keys of state (a fresh process:
  get_or_create loads snapshot + deltas, then one batch; target <= 0.5 s), with the
  compiled modules cached as in an installed package (and, when this shell sets
  PYTHONDONTWRITEBYTECODE=1, also compiling every module at start, as that shell does);
* tiny batches with a local checkpoint (see bench/throughput.py; target <= 5 ms).

Run: ``.venv/bin/python bench/checkpoint.py [--quick] [--dir DIR]``.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from typing import Any

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, ROOT)
sys.path.insert(0, HERE)

import streamkeep as sk  # noqa: E402

STRIDE = 7919
SNAPSHOT_EVERY = 25
#: Latency targets (issue 14): over every measured batch of the big case, snapshot batches included.
P99_TARGET, MAX_TARGET = 3.0, 5.0
#: Restart with the big state to the first new batch done (issue 14).
RESTART_TARGET_S = 0.5
#: None: the engine's default inline_delta_bytes (small deltas ride inside the commit record).
INLINE_DELTA_BYTES: int | None = None


def _bump(key: str, value: int, state: sk.State) -> None:
    state.update(state.get_option(0) + value)


def setup_factory(url: str, n_keys: int, changed: int, *, seed: bool) -> Any:
    """The job. `seed=False` builds the same graph without the initial state (restarts only
    read `initial` on a fresh start, so a restart need not build a 1M-item list)."""

    def setup() -> sk.StreamingContext:
        extra = {} if INLINE_DELTA_BYTES is None else {"inline_delta_bytes": INLINE_DELTA_BYTES}
        ssc = sk.StreamingContext(1.0, checkpoint=url, snapshot_every=SNAPSHOT_EVERY, **extra)
        initial = [(f"k{i}", 0) for i in range(n_keys)] if seed else None
        pairs = ssc.rate_stream(changed, name="rate").map(lambda r: (f"k{(r[0] * STRIDE) % n_keys}", 1))
        pairs.map_with_state(_bump, name="state", initial=initial).foreach_batch(lambda b: None)
        return ssc

    return setup


class _NewFiles:
    """Bytes of the files that appeared under a directory since the last scan, by kind."""

    def __init__(self, root: str) -> None:
        self.root = root
        self.seen: set[str] = set()
        self.logs: dict[str, int] = {}  # plan logs (appended to): size at the last scan

    def scan(self) -> dict[str, int]:
        out = {"plan": 0, "delta": 0, "record": 0, "snap": 0, "other": 0}
        for d, _, names in os.walk(self.root):
            for n in names:
                p = os.path.join(d, n)
                if n.endswith(".plog"):  # a plan log: the plans appended since the last scan
                    try:
                        size = os.path.getsize(p)
                    except FileNotFoundError:
                        continue
                    out["plan"] += size - self.logs.get(p, 0)
                    self.logs[p] = size
                    continue
                if p in self.seen or n.startswith(".tmp-") or n in ("lease", "lock", "CHECKPOINT"):
                    continue
                try:
                    size = os.path.getsize(p)
                except FileNotFoundError:
                    continue
                self.seen.add(p)
                kind = {"plan": "plan", "delta": "delta", "rec": "record", "snap": "snap"}.get(n.rsplit(".", 1)[-1], "other")
                out[kind] = max(out[kind], size) if kind == "snap" else out[kind] + size  # snap: the largest file
        return out


class _LoopWaits:
    """Time the batch loop's thread spends in checkpoint writes or waiting for them (per batch).

    Counts the outermost call, on the loop's thread only, of what can block it on the checkpoint:
    writes (plan, delta files, commit record; all of them when commits are not pipelined) and the
    waits of a pipelined commit (the plan's flush before the outputs, a full committer, a drain),
    plus waiting for a snapshot in flight. Much less skewed by other processes than wall time.
    `by` splits the total by what was waited on (``<lane>.wait``: the plan's flush before the outputs;
    ``streamkeep-committer.submit``: room in a full committer, i.e. earlier commits' flushes), so the
    slowest batches can say where their time went.
    """

    NAMES = (
        ("streamkeep.checkpoint._checkpoint", "Checkpoint", ("write_plan", "write_plan_data", "write_state", "commit")),
        ("streamkeep.scheduler._committer", "Lane", ("wait", "submit", "drain")),
        ("streamkeep.scheduler._state_writer", "StateWriter", ("adopt",)),
    )

    def __init__(self) -> None:
        import importlib
        import threading

        self.thread = threading.current_thread()
        self.total = 0.0
        self.by: dict[str, float] = {}
        self.depth = 0
        self.undo: list[tuple[Any, str, Any]] = []
        for module, cls_name, names in self.NAMES:
            try:
                cls = getattr(importlib.import_module(module), cls_name)
            except (ImportError, AttributeError):
                continue  # an engine without pipelined commits
            for name in names:
                if hasattr(cls, name):
                    orig = getattr(cls, name)
                    self.undo.append((cls, name, orig))
                    setattr(cls, name, self._wrap(orig, cls_name, name))

    def _wrap(self, orig: Any, cls_name: str, name: str) -> Any:
        import threading

        def timed(*a: Any, **k: Any) -> Any:
            if threading.current_thread() is not self.thread or self.depth:
                return orig(*a, **k)
            self.depth += 1
            t0 = time.perf_counter()
            try:
                return orig(*a, **k)
            finally:
                dt = time.perf_counter() - t0
                self.total += dt
                label = f"{getattr(a[0], 'name', cls_name)}.{name}" if cls_name == "Lane" else f"{cls_name}.{name}"
                self.by[label] = self.by.get(label, 0.0) + dt
                self.depth -= 1

        return timed

    def close(self) -> None:
        for cls, name, orig in self.undo:
            setattr(cls, name, orig)


def run_case(base: str, n_keys: int, changed: int, batches: int) -> dict[str, Any]:
    """Build n_keys of state, then run `batches` batches changing `changed` keys each."""
    url = os.path.join(base, f"ckpt-{n_keys}")
    t0 = time.perf_counter()
    ssc = sk.StreamingContext.get_or_create(url, setup_factory(url, n_keys, changed, seed=True))
    sched = ssc._scheduler
    assert sched is not None
    commit_times: list[float] = []
    snapshot_batch: list[bool] = []
    writer = sched.writer
    assert writer is not None
    orig_commit = sched._commit

    def timed_commit(t: int, plan: dict[str, Any]) -> None:
        c0 = time.perf_counter()
        orig_commit(t, plan)
        commit_times.append(time.perf_counter() - c0)

    sched._commit = timed_commit  # type: ignore[method-assign]
    durable: dict[int, float] = {}  # batch time -> seconds the background committer took (pipelined commits)
    orig_committed = getattr(sched, "_committed", None)
    if orig_committed is not None:

        def timed_committed(t: int, cost: tuple[float, int]) -> None:
            durable[t] = cost[0]
            orig_committed(t, cost)

        sched._committed = timed_committed  # type: ignore[method-assign]
    files = _NewFiles(url)
    snapshot_batch.append(False)
    ssc.run(max_batches=1)  # batch 1 commits the seeded state as one big delta
    first_commit = commit_times[-1]
    files.scan()
    build_s = time.perf_counter() - t0
    rows: list[dict[str, Any]] = []
    orig_next = sched.run_next

    waits = _LoopWaits()

    def timed_next() -> int:
        # Batches run back to back in one run() call, as a job does: run() returns once its batches are
        # committed, so timing run(max_batches=1) would time the last commit's flush as well.
        snapshot_batch.append(False)
        b0, c0, w0, by0 = time.perf_counter(), time.thread_time(), waits.total, dict(waits.by)
        t = orig_next()
        batch_s = time.perf_counter() - b0
        snapshot_batch[-1] = writer.started  # this batch took a snapshot (small state) or started its merge
        cpu_s = time.thread_time() - c0  # the batch loop's own CPU time: wall minus this is waiting (disk, other processes)
        row = {"t": t, "commit_s": commit_times[-1], "batch_s": batch_s, "cpu_s": cpu_s, "io_s": waits.total - w0, "snapshot": snapshot_batch[-1]}
        row["by"] = {k: v - by0.get(k, 0.0) for k, v in waits.by.items() if v - by0.get(k, 0.0) > 0}
        rows.append({**row, **files.scan()})
        return t

    sched.run_next = timed_next  # type: ignore[method-assign]
    try:
        ssc.run(max_batches=batches)
    finally:
        sched.run_next = orig_next  # type: ignore[method-assign]
        waits.close()
    for r in rows:
        r["durable_s"] = durable.get(r["t"], 0.0)
    # A snapshot is merged in the background and used by the commits once done. Batches run back to
    # back here, faster than a merge of 1M keys, so snapshots lag; a real job's batches are spaced (1 s),
    # giving a merge time to finish. Before the restart below, two more batches (not measured) each wait
    # for the snapshot in flight first, as spaced batches would: the restart then reads a recent
    # snapshot and the delta since, as after a stop of a job that ran for a while.
    started_snaps = sum(snapshot_batch)
    extra = 0
    for _ in range(2):
        th = writer._thread
        if th is not None:
            th.join()
        snapshot_batch.append(False)
        ssc.run(max_batches=1)
        extra += 1
    ssc.stop()  # waits for a snapshot in flight
    snap_bytes = [v for v in (files.scan()["snap"],) if v] + [r["snap"] for r in rows if r["snap"]]
    steady = [r for r in rows if not r["snapshot"]]
    snaps = [r for r in rows if r["snapshot"]]
    med = statistics.median
    every = sorted(r["batch_s"] for r in rows)
    slowest = sorted(rows, key=lambda r: -r["batch_s"])[:3]
    return {
        "slowest": [(r["batch_s"] * 1e3, r["cpu_s"] * 1e3, r["io_s"] * 1e3) for r in slowest],
        "slowest_by": [max(r["by"].items(), key=lambda kv: kv[1], default=("-", 0.0)) for r in slowest],
        "tail_by": _tail_by(rows, 3 * med(every)),
        "io_ms": [r["io_s"] * 1e3 for r in sorted(rows, key=lambda r: r["io_s"])],
        "cpu_ms": med(r["cpu_s"] for r in rows) * 1e3,
        "all_batch_ms": med(every) * 1e3,
        "p99_batch_ms": every[max(0, -(-len(every) * 99 // 100) - 1)] * 1e3,  # nearest rank
        "max_batch_ms": every[-1] * 1e3,
        "n_keys": n_keys,
        "changed": changed,
        "build_s": build_s,
        "first_commit_s": first_commit,
        "commit_ms": med(r["commit_s"] for r in steady) * 1e3,
        "durable_ms": med(r["durable_s"] for r in steady) * 1e3,
        "commit_ms_p90": sorted(r["commit_s"] for r in steady)[int(len(steady) * 0.9)] * 1e3,
        "batch_ms": med(r["batch_s"] for r in steady) * 1e3,
        "snapshot_commit_ms": med(r["commit_s"] for r in snaps) * 1e3 if snaps else float("nan"),
        "snapshot_batch_ms": med(r["batch_s"] for r in snaps) * 1e3 if snaps else float("nan"),
        "delta_bytes": statistics.fmean(r["delta"] for r in steady),
        "record_bytes": statistics.fmean(r["record"] for r in steady),
        "plan_bytes": statistics.fmean(r["plan"] for r in steady),
        "snapshot_bytes": max(snap_bytes) if snap_bytes else 0,
        "steady_batches": len(steady),
        "snapshot_batches": len(snaps),
        "url": url,
        "snapshots_started": started_snaps,
        "extra_batches": extra,
        "chain_at_stop": len(writer.chains["state"].deltas),
    }


def _tail_by(rows: list[dict[str, Any]], above_s: float) -> tuple[int, dict[str, float]]:
    """The batches slower than `above_s`: how many, and their loop's checkpoint waits (ms) summed by what was waited on."""
    tail = [r for r in rows if r["batch_s"] > above_s]
    out: dict[str, float] = {}
    for r in tail:
        for k, v in r["by"].items():
            out[k] = out.get(k, 0.0) + v * 1e3
    return len(tail), dict(sorted(out.items(), key=lambda kv: -kv[1]))


_RESTART = """
import json, sys, time
t_start = time.time()
sys.path[:0] = [{root!r}, {here!r}]
import streamkeep as sk
from checkpoint import setup_factory
t_import = time.time()
ssc = sk.StreamingContext.get_or_create({url!r}, setup_factory({url!r}, {n_keys}, {changed}, seed=False))
assert ssc.restored
t_restored = time.time()
ssc.run(max_batches=1)
t_batch = time.time()
ssc.stop()
print(json.dumps({{"start": t_start, "import": t_import, "restored": t_restored, "batch": t_batch}}), flush=True)
"""


def _child_env(pycache: str | None) -> dict[str, str]:
    """The restart child's environment: with `pycache`, Python may write and read compiled modules there.

    An installed package ships (or writes on first import) its compiled ``.pyc`` files; a
    checkout run with PYTHONDONTWRITEBYTECODE=1 compiles every module at every start
    (~0.25 s of the restart here), which is not what a user's restart costs.
    """
    env = dict(os.environ)
    if pycache is not None:
        env.pop("PYTHONDONTWRITEBYTECODE", None)
        env["PYTHONPYCACHEPREFIX"] = pycache
    return env


def warm_bytecode(pycache: str) -> None:
    """Compile streamkeep and this bench into `pycache` once (as installing the package does)."""
    code = f"import sys; sys.path[:0] = [{ROOT!r}, {HERE!r}]; import streamkeep, checkpoint"
    subprocess.run([sys.executable, "-c", code], env=_child_env(pycache), capture_output=True, check=True)


def restart(case: dict[str, Any], pycache: str | None = None) -> dict[str, float]:
    code = _RESTART.format(root=ROOT, here=HERE, url=case["url"], n_keys=case["n_keys"], changed=case["changed"])
    env = _child_env(pycache)
    u0 = resource.getrusage(resource.RUSAGE_CHILDREN)
    launched = time.time()
    p0 = time.perf_counter()
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False, env=env)
    wall = time.perf_counter() - p0
    u1 = resource.getrusage(resource.RUSAGE_CHILDREN)
    if proc.returncode != 0:
        raise SystemExit(f"restart child failed:\n{proc.stderr}")
    m = json.loads(proc.stdout.strip().splitlines()[-1])
    return {
        "total_s": m["batch"] - launched,
        "interpreter_s": m["start"] - launched,
        "import_s": m["import"] - m["start"],
        "restore_s": m["restored"] - m["import"],
        "first_batch_s": m["batch"] - m["restored"],
        "process_wall_s": wall,
        "cpu_s": (u1.ru_utime - u0.ru_utime) + (u1.ru_stime - u0.ru_stime),  # less skewed by other processes than wall time
    }


def _add(values: list[int], old: int | None) -> int:
    return (old or 0) + sum(values)


def tiny_back_to_back(n: int, directory: str | None) -> None:
    """bench/throughput.py's tiny batches (10 records, local checkpoint), run back to back in one run() call.

    `tiny_checkpoint` there times run(max_batches=1) per batch, and run() returns once its batches
    are committed: that is a batch plus waiting for its commit's flush. A job's loop runs batch after
    batch; this times each batch of one run(max_batches=n) call, and the whole call divided by n
    (which includes the final flush).
    """
    base = tempfile.mkdtemp(prefix="sk-bench-", dir=directory)
    url = os.path.join(base, "ckpt")
    try:

        def setup() -> sk.StreamingContext:
            ssc = sk.StreamingContext(1.0, checkpoint=url)
            pairs = ssc.rate_stream(10, name="rate").map(lambda r: (r[0] % 10, 1))
            pairs.update_state_by_key(_add, name="counts").foreach_batch(lambda b: None)
            return ssc

        ssc = sk.StreamingContext.get_or_create(url, setup)
        ssc.run(max_batches=20)  # warm-up (includes the first snapshot)
        sched = ssc._scheduler
        assert sched is not None
        orig, ts = sched.run_next, []

        def timed() -> int:
            t0 = time.perf_counter()
            t = orig()
            ts.append(time.perf_counter() - t0)
            return t

        sched.run_next = timed  # type: ignore[method-assign]
        w0 = time.perf_counter()
        ssc.run(max_batches=n)
        wall = time.perf_counter() - w0
        ssc.stop()
    finally:
        shutil.rmtree(base, ignore_errors=True)
    ts.sort()
    mean = wall / n
    print(f"tiny batches back to back in one run() ({n} batches of 10 records; rate_stream -> update_state_by_key; {base}):")
    print(
        f"  per batch: run() wall / n {mean * 1e3:.3f} ms; each batch: mean {statistics.fmean(ts) * 1e3:.3f}, median {statistics.median(ts) * 1e3:.3f},"
        f" p99 {ts[max(0, -(-len(ts) * 99 // 100) - 1)] * 1e3:.3f}, max {ts[-1] * 1e3:.3f} ms"
        f"  (target <= 5 ms: {'met' if mean <= 5e-3 else 'NOT met'})"
    )


def _kb(n: float) -> str:
    return f"{n / 1024:,.1f} KiB"


def measure(parent: str | None, big: int, small: int, changed: int, batches: int, mid: int | None = None) -> None:
    """Each case (small, `mid` if given, big), the small and big ones' ratios and the restart, with checkpoints under `parent`."""
    base = tempfile.mkdtemp(prefix="sk-bench-ckpt-", dir=parent)
    print(f"\n=== checkpoints under {base} ===")
    try:
        results = {}
        for n in (small, *([mid] if mid else []), big):
            r = run_case(base, n, changed, batches)
            results[n] = r
            print(
                f"\n{n:>9,} keys of state (built in {r['build_s']:.2f} s; first commit, all keys as one delta: {r['first_commit_s'] * 1e3:.0f} ms)"
            )
            print(
                f"  steady batches ({r['steady_batches']}): commit median {r['commit_ms']:.2f} ms in the batch loop (p90 {r['commit_ms_p90']:.2f})"
                f" + {r['durable_ms']:.2f} ms in the background committer (writing and flushing it; 0 when commits are not pipelined),"
                f" whole batch median {r['batch_ms']:.2f} ms"
            )
            if r["durable_ms"] >= 0.8 * r["batch_ms"]:
                print(
                    f"  the committer is busy {r['durable_ms'] / r['batch_ms']:.2f}x the batch median: batches back to back are paced by the"
                    " commits' flushes (several fsyncs each), so the batch tail follows the disk's flush latency (a job whose batches are spaced wider than a commit takes waits only for its plan)"
                )
            print(
                f"  bytes per batch: delta {_kb(r['delta_bytes'])}, commit record {_kb(r['record_bytes'])}, plan {_kb(r['plan_bytes'])}"
                f"  = {_kb(r['delta_bytes'] + r['record_bytes'] + r['plan_bytes'])}"
            )
            print(
                f"  snapshot batches ({r['snapshot_batches']}): commit median {r['snapshot_commit_ms']:.1f} ms,"
                f" whole batch {r['snapshot_batch_ms']:.1f} ms; snapshot file {_kb(r['snapshot_bytes'])}"
            )
            print(
                f"  snapshots started during the measured batches: {r['snapshots_started']}; then {r['extra_batches']} more batches,"
                f" each after the snapshot in flight was done (the restart reads a snapshot plus {r['chain_at_stop']} deltas)"
            )
            p99, mx = r["p99_batch_ms"] / r["all_batch_ms"], r["max_batch_ms"] / r["all_batch_ms"]
            print(
                f"  every batch ({r['steady_batches'] + r['snapshot_batches']}): median {r['all_batch_ms']:.2f} ms, p99 {r['p99_batch_ms']:.2f} ms"
                f" = {p99:.1f}x median (target <= {P99_TARGET:g}x: {'met' if p99 <= P99_TARGET else 'NOT met'}),"
                f" max {r['max_batch_ms']:.2f} ms = {mx:.1f}x median (target <= {MAX_TARGET:g}x: {'met' if mx <= MAX_TARGET else 'NOT met'})"
            )
            print(
                f"  the batch loop's own CPU time per batch: median {r['cpu_ms']:.2f} ms; the 3 slowest batches (wall / CPU / checkpoint waits):"
                f" {', '.join(f'{w:.0f} / {c:.0f} / {io:.0f} ms' for w, c, io in r['slowest'])} (the rest is waiting: disk, other processes, the interpreter lock);"
                f" their longest wait: {', '.join(f'{k} {v * 1e3:.0f} ms' for k, v in r['slowest_by'])}"
            )
            n_tail, tail_by = r["tail_by"]
            if n_tail:
                print(
                    f"  the {n_tail} batches over 3x the median waited on: {', '.join(f'{k} {v:.0f} ms' for k, v in tail_by.items()) or 'nothing'}"
                    " (.wait of the plan writer: the plan's flush; committer.submit: a full committer, earlier commits' flushes)"
                )
            io = r["io_ms"]
            print(
                f"  the batch loop blocked on the checkpoint (writes and flushes, or waiting for them) per batch: median {io[len(io) // 2]:.2f} ms,"
                f" p99 {io[max(0, -(-len(io) * 99 // 100) - 1)]:.2f} ms, max {io[-1]:.2f} ms, total {sum(io):.0f} ms"
            )
        b, s = results[big], results[small]
        t_ratio = b["commit_ms"] / s["commit_ms"]
        per_batch = {k: v["delta_bytes"] + v["record_bytes"] + v["plan_bytes"] for k, v in results.items()}
        bytes_ratio = per_batch[big] / per_batch[small]
        # state changes go to delta files, or inline into the commit record: count both
        state_bytes = {k: v["delta_bytes"] + v["record_bytes"] for k, v in results.items()}
        state_ratio = state_bytes[big] / state_bytes[small]
        snap_ratio = state_bytes[big] / b["snapshot_bytes"] if b["snapshot_bytes"] else float("nan")
        print("\nratios (this run):")
        print(f"  commit time   {big:,} vs {small:,} keys: {t_ratio:.2f}x  (target within 2x: {'met' if t_ratio <= 2 else 'NOT met'})")
        print(f"  batch time    {big:,} vs {small:,} keys: {b['batch_ms'] / s['batch_ms']:.2f}x")
        print(
            f"  bytes/batch   {big:,} vs {small:,} keys: {bytes_ratio:.2f}x (delta files + commit record {state_ratio:.2f}x)  (target within 2x: {'met' if bytes_ratio <= 2 else 'NOT met'})"
        )
        print(
            f"  per-batch state bytes (delta files + commit record) vs full snapshot of {big:,} keys: {snap_ratio * 100:.3f}%"
            f"  (target <= 2%: {'met' if snap_ratio <= 0.02 else 'NOT met'})"
        )
        pycache = os.path.join(base, "pycache")
        warm_bytecode(pycache)
        modes: list[tuple[str, str | None]] = [("compiled modules cached, as an installed package", pycache)]
        if sys.flags.dont_write_bytecode:
            modes.append(("every module compiled at start: PYTHONDONTWRITEBYTECODE=1 is set here", None))
        restarts: dict[str, list[dict[str, float]]] = {label: [] for label, _ in modes}
        for _ in range(3):  # the modes alternate run by run (same load)
            for label, cache in modes:
                restarts[label].append(restart(b, cache))
        for label, rs in restarts.items():
            best = min(rs, key=lambda x: x["total_s"])
            runs = ", ".join(f"{x['total_s']:.2f}" for x in rs)
            cpu = ", ".join(f"{x['cpu_s']:.2f}" for x in rs)
            print(f"\nrestart with {big:,} keys of state -> first new batch done (fresh process, {label}; best of 3: {runs} s; CPU time of the child process: {cpu} s):")
            print(
                f"  {best['total_s']:.2f} s = interpreter {best['interpreter_s']:.2f} + import {best['import_s']:.2f}"
                f" + get_or_create (load snapshot + deltas) {best['restore_s']:.2f} + first batch {best['first_batch_s']:.2f}"
                f"  (target <= {RESTART_TARGET_S:g} s: {'met' if best['total_s'] <= RESTART_TARGET_S else 'NOT met'})"
            )
    finally:
        shutil.rmtree(base, ignore_errors=True)


def main() -> None:
    global INLINE_DELTA_BYTES, SNAPSHOT_EVERY
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="100k keys instead of 1M (a smoke run)")
    ap.add_argument("--dir", default=None, help="parent directory of the checkpoints (default: the temp dir, then /dev/shm)")
    ap.add_argument("--batches", type=int, default=150, help="measured batches per case (default: %(default)s)")
    ap.add_argument("--inline-delta-bytes", type=int, default=None, help="the context's inline_delta_bytes (default: the engine's)")
    ap.add_argument("--snapshot-every", type=int, default=SNAPSHOT_EVERY, help="the context's snapshot_every; 0 = the engine's adaptive default (default: %(default)s)")
    args = ap.parse_args()
    INLINE_DELTA_BYTES, SNAPSHOT_EVERY = args.inline_delta_bytes, (args.snapshot_every or None)
    big = 100_000 if args.quick else 1_000_000
    small, changed = 10_000, 1_000
    print(f"python {sys.version.split()[0]}, streamkeep {sk.__version__}, {os.cpu_count()} CPUs")
    print(f"load average at start: {' '.join(f'{x:.2f}' for x in os.getloadavg())} (other processes on these CPUs skew every number)")
    print(
        f"map_with_state, {changed:,} keys changed per 1 s batch, snapshot every {SNAPSHOT_EVERY} batches, {args.batches} measured batches per case, "
        f"inline_delta_bytes={'engine default' if INLINE_DELTA_BYTES is None else INLINE_DELTA_BYTES}"
    )
    parents: list[str | None] = [args.dir]
    if args.dir is None and os.path.isdir("/dev/shm"):
        parents.append("/dev/shm")  # tmpfs: fsync is free, so this shows the engine's own cost
    for parent in parents:
        measure(parent, big, small, changed, args.batches, mid=None if args.quick else 100_000)
    from throughput import tiny_checkpoint

    print()
    tiny_checkpoint(300, args.dir)
    tiny_back_to_back(300, args.dir)
    print(f"load average at end: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")


if __name__ == "__main__":
    main()
