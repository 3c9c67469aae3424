"""What a clean stop costs when a snapshot merge is in flight (issue 14 follow-up), and the chain it leaves.

A job keeps ``map_with_state`` state seeded with KEYS keys (``initial=``; 1k keys change per 1 s
batch) and is run as a backfill from cron would: ``run(max_batches=2)`` then ``stop()``, RUNS times
in a row, each run a new context resumed with ``get_or_create``, ``snapshot_every=2`` so the last
batch of every run starts a merge (a helper process for these sizes on a local disk). Per run it
prints the wall time of ``stop()``, split into the wait for the merge (``StateWriter.close``) and
the commit record naming it (``Scheduler._commit_adopted``), and the restart chain (deltas in the
newest commit record). With ``--drop`` the stop drops the merge as before (no record): same run
conditions, for a ratio. Also the process CPU time over all runs.

With ``--exit`` each run is a child process that ends after ``run(max_batches=2)`` without ``stop()``
(the context's at-exit hook stops it): per run the time from ``run()`` returning to the child's exit
(interpreter teardown included) and the restart chain; with ``--exit --drop`` the hook's merge wait is 0
(``EXIT_MERGE_WAIT_S``), so the merge is dropped at once, as before the hook: the baseline.

Run: ``.venv/bin/python bench/stop_snapshot.py [--keys 100000 1000000] [--runs 5] [--drop] [--exit] [--dir DIR]``.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from typing import Any

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))

import streamkeep as sk  # noqa: E402
from streamkeep.checkpoint import Checkpoint  # noqa: E402
from streamkeep.scheduler import _scheduler, _state_writer  # noqa: E402
from streamkeep.testing import ManualClock  # noqa: E402

STRIDE = 7919
CHANGED = 1000


def _bump(key: str, value: int, state: sk.State) -> None:
    state.update(state.get_option(0) + value)


def _setup(url: str, n: int) -> Any:
    def setup() -> sk.StreamingContext:
        ssc = sk.StreamingContext(1.0, checkpoint=url, clock=ManualClock(), snapshot_every=2)
        pairs = ssc.rate_stream(CHANGED, name="rate").map(lambda r: (f"k{(r[0] * STRIDE) % n}", 1))
        pairs.map_with_state(_bump, name="state", initial=[(f"k{i}", 0) for i in range(n)]).foreach_batch(lambda b: None)
        return ssc

    return setup


def _child(url: str, n: int, drop: bool) -> None:
    """One run of ``--exit``: run two batches, print when run() returned, end without stop()."""
    from streamkeep import context

    if drop:
        context.EXIT_MERGE_WAIT_S = 0.0
    ssc = sk.StreamingContext.get_or_create(url, _setup(url, n))
    ssc.run(max_batches=2)
    print("RAN", time.monotonic(), flush=True)


def _exit_runs(args: argparse.Namespace) -> None:
    print(f"mode: exit without stop(){', merge wait 0 (dropped, as before)' if args.drop else ''}; loadavg {open('/proc/loadavg').read().strip()}")
    for n in args.keys:
        parent = tempfile.mkdtemp(prefix="sk-exit-", dir=args.dir)
        url = os.path.join(parent, "ck")
        exits, chains = [], []
        try:
            for _ in range(args.runs):
                argv = [sys.executable, os.path.abspath(__file__), "--child", url, str(n), "1" if args.drop else "0"]
                with subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True) as proc:
                    out, _ = proc.communicate()
                    ended = time.monotonic()  # CLOCK_MONOTONIC: the child's stamp is on the same clock
                if proc.returncode != 0 or "RAN" not in out:
                    sys.exit(f"a run failed (exit status {proc.returncode})")
                exits.append(ended - float(out.split()[1]))
                chains.append(len(Checkpoint(url).commits()[0].data["state"]["state"]["deltas"]))
        finally:
            shutil.rmtree(parent, ignore_errors=True)
        ms = [f"{s * 1e3:.0f}" for s in exits]
        print(
            f"{n:>9} keys: run() returned -> process gone, ms {' '.join(ms)} (median {statistics.median(exits) * 1e3:.0f}, "
            f"max {max(exits) * 1e3:.0f}); restart chain per run {chains}"
        )


def main() -> None:
    if sys.argv[1:2] == ["--child"]:
        _child(sys.argv[2], int(sys.argv[3]), sys.argv[4] == "1")
        return
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--keys", type=int, nargs="+", default=[100_000, 1_000_000])
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--drop", action="store_true", help="drop the merge at the stop, as before (no extra commit record)")
    ap.add_argument("--exit", action="store_true", help="each run a child process ending without stop() (the at-exit stop)")
    ap.add_argument("--dir", default=None, help="parent directory of the checkpoints (default: a temp dir)")
    args = ap.parse_args()
    if args.exit:
        _exit_runs(args)
        return
    times: dict[str, list[float]] = {"close": [], "record": []}
    real_close, real_commit = _state_writer.StateWriter.close, _scheduler.Scheduler._commit_adopted

    def timed_close(self: Any, timeout_s: float | None = None) -> Any:
        t0 = time.perf_counter()
        out = real_close(self, timeout_s)
        times["close"].append(time.perf_counter() - t0)
        return out

    def timed_commit(self: Any, adopted: Any) -> None:
        t0 = time.perf_counter()
        if not args.drop:
            real_commit(self, adopted)
        times["record"].append(time.perf_counter() - t0)

    _state_writer.StateWriter.close = timed_close  # type: ignore[method-assign]
    _scheduler.Scheduler._commit_adopted = timed_commit  # type: ignore[method-assign]
    print(f"mode: {'drop (as before)' if args.drop else 'commit the merge at the stop'}; loadavg {open('/proc/loadavg').read().strip()}")
    for n in args.keys:
        parent = tempfile.mkdtemp(prefix="sk-stop-", dir=args.dir)
        url = os.path.join(parent, "ck")
        c0 = time.process_time()
        stops, waits, records, chains = [], [], [], []
        try:
            for _ in range(args.runs):
                times["close"].clear()
                times["record"].clear()
                ssc = sk.StreamingContext.get_or_create(url, _setup(url, n))
                ssc.run(max_batches=2)
                s0 = time.perf_counter()
                ssc.stop()
                stops.append(time.perf_counter() - s0)
                waits.append(sum(times["close"]))
                records.append(sum(times["record"]))
                chains.append(len(Checkpoint(url).commits()[0].data["state"]["state"]["deltas"]))
        finally:
            shutil.rmtree(parent, ignore_errors=True)
        cpu = time.process_time() - c0
        ms = [f"{s * 1e3:.0f}" for s in stops]
        print(
            f"{n:>9} keys: stop ms {' '.join(ms)} (median {statistics.median(stops) * 1e3:.0f}, max {max(stops) * 1e3:.0f}); "
            f"merge wait median {statistics.median(waits) * 1e3:.0f} max {max(waits) * 1e3:.0f}; "
            f"commit record median {statistics.median(records) * 1e3:.1f} max {max(records) * 1e3:.1f}; "
            f"restart chain per run {chains}; driver CPU {cpu:.2f} s"
        )


if __name__ == "__main__":
    main()
