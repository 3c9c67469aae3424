"""Throughput and per-batch overhead of the engine, against same-run baselines (issue 3).

1. Running word count: WORDS words in BATCHES batches over DISTINCT distinct words,
   ``flat_map(str.split).map(pair).update_state_by_key(sum)``, against a bare Python
   loop doing the same per-record work (split, pair, sum into a dict) in this
   process. Target: engine >= 0.5x the bare loop.
2. Per-batch overhead of tiny batches (one short line each) without a checkpoint
   (queue_stream; target < 1 ms) and with a local checkpoint (rate_stream;
   target <= 5 ms), next to a bare loop doing the same records.
4. The same word count with the dashboard on (``ui_port=0``: listener events, /metrics
   registry, HTTP server) vs off. Target: on >= 0.9x off.
3. Time from process start to the first batch done (a fresh subprocess; target
   < 0.5 s), next to the time a bare ``python -c pass`` takes.

Run: ``.venv/bin/python bench/throughput.py [--quick]``. Prints numbers and ratios
measured in this run; nothing is compared with stored results.
"""

from __future__ import annotations

import argparse
import gc
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from typing import Any

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, ROOT)

import streamkeep as sk  # noqa: E402

WORDS_PER_LINE = 10
_STRIDE = 7919


def make_lines(n_words: int, distinct: int) -> list[str]:
    """``n_words`` words (``w<j>``, cycling through ``distinct`` words) as lines of 10."""
    return [
        " ".join(f"w{((i * WORDS_PER_LINE + k) * _STRIDE) % distinct}" for k in range(WORDS_PER_LINE))
        for i in range(n_words // WORDS_PER_LINE)
    ]


def _add(new: list[int], old: int | None) -> int:
    return (old or 0) + sum(new)


def _pair(w: str) -> tuple[str, int]:
    return (w, 1)


def _best(times: list[float]) -> float:
    return min(times)


# --------------------------------------------------------------------------- 1. word count


def bare_word_count(batches: list[list[str]]) -> dict[str, int]:
    """The same per-record work as the job, in a plain loop: split, pair, sum into a dict."""
    counts: dict[str, int] = {}
    get = counts.get
    for lines in batches:
        for line in lines:
            for w in line.split():
                k, v = _pair(w)
                counts[k] = get(k, 0) + v
    return counts


def engine_word_count(batches: list[list[str]]) -> tuple[float, float, dict[str, int]]:
    """Run the job over `batches`; return (wall s in run(), CPU s in run(), final state)."""
    last: list[sk.Batch[tuple[str, int]]] = []
    ssc = sk.StreamingContext(0.5)
    counts = ssc.queue_stream(batches, name="lines").flat_map(str.split).map(_pair).update_state_by_key(_add, name="counts")
    counts.foreach_batch(lambda b: last.append(b))  # keeps the (materialised) state output; read after timing
    c0, t0 = time.process_time(), time.perf_counter()
    ssc.run(max_batches=len(batches))
    elapsed, cpu = time.perf_counter() - t0, time.process_time() - c0
    ssc.stop()
    return elapsed, cpu, dict(last[-1].collect())


def word_count(words: int, n_batches: int, distinct: int, repeats: int) -> dict[str, float]:
    lines = make_lines(words, distinct)
    per = len(lines) // n_batches
    batches = [lines[i * per : (i + 1) * per] for i in range(n_batches)]
    n = per * n_batches * WORDS_PER_LINE
    bare_t, eng_t, bare_c, eng_c = [], [], [], []
    expected: dict[str, int] = {}
    for _ in range(repeats):  # interleaved, so both sides see the same machine load
        gc.collect()
        c0, t0 = time.process_time(), time.perf_counter()
        expected = bare_word_count(batches)
        bare_t.append(time.perf_counter() - t0)
        bare_c.append(time.process_time() - c0)
        gc.collect()
        t, c, got = engine_word_count(batches)
        eng_t.append(t)
        eng_c.append(c)
        if got != expected:
            raise SystemExit("engine and bare loop disagree on the word counts")
    bare, eng = _best(bare_t), _best(eng_t)
    print(f"word count: {n:,} words in {n_batches} batches, {distinct:,} distinct words, best of {repeats} (wall; CPU time in brackets)")
    print(
        f"  bare loop : {n / bare:>12,.0f} words/s  ({bare * 1e3:7.1f} ms; runs {', '.join(f'{t * 1e3:.0f}' for t in bare_t)} ms)"
        f"  [CPU best {min(bare_c) * 1e3:.0f} ms]"
    )
    print(
        f"  engine    : {n / eng:>12,.0f} words/s  ({eng * 1e3:7.1f} ms; runs {', '.join(f'{t * 1e3:.0f}' for t in eng_t)} ms)"
        f"  [CPU best {min(eng_c) * 1e3:.0f} ms]"
    )
    ratio = bare / eng
    cpu_ratio = min(bare_c) / min(eng_c)
    print(f"  ratio engine/bare = {ratio:.2f}x wall, {cpu_ratio:.2f}x CPU time  (target >= 0.5x: {'met' if ratio >= 0.5 else 'NOT met'})")
    return {"ratio": ratio, "cpu_ratio": cpu_ratio, "engine_wps": n / eng, "bare_wps": n / bare}


# --------------------------------------------------------------------------- 4. dashboard on vs off


def _dashboard_run(batches: list[list[str]], ui: bool) -> float:
    ssc = sk.StreamingContext(0.5, ui_port=0 if ui else None)
    ssc.queue_stream(batches, name="lines").flat_map(str.split).map(_pair).update_state_by_key(_add, name="counts").foreach_batch(
        lambda b: None
    )
    t0 = time.perf_counter()
    ssc.run(max_batches=len(batches))
    elapsed = time.perf_counter() - t0
    if ui and not (ssc.ui_url or "").startswith("http://127.0.0.1:"):
        raise SystemExit("the dashboard did not start")
    ssc.stop()
    return elapsed


def dashboard(words: int, n_batches: int, distinct: int, repeats: int) -> dict[str, float]:
    lines = make_lines(words, distinct)
    per = len(lines) // n_batches
    batches = [lines[i * per : (i + 1) * per] for i in range(n_batches)]
    n = per * n_batches * WORDS_PER_LINE
    off, on = [], []
    for _ in range(repeats):  # interleaved
        gc.collect()
        off.append(_dashboard_run(batches, False))
        gc.collect()
        on.append(_dashboard_run(batches, True))
    ratio = min(off) / min(on)
    print(f"dashboard on vs off: word count, {n:,} words in {n_batches} batches, {distinct:,} distinct words, best of {repeats}")
    print(f"  dashboard off: {n / min(off):>12,.0f} words/s  (runs {', '.join(f'{t * 1e3:.0f}' for t in off)} ms)")
    print(f"  dashboard on : {n / min(on):>12,.0f} words/s  (runs {', '.join(f'{t * 1e3:.0f}' for t in on)} ms)")
    print(f"  ratio on/off = {ratio:.2f}x  (target >= 0.9x: {'met' if ratio >= 0.9 else 'NOT met'})")
    return {"ratio": ratio}


# --------------------------------------------------------------------------- 2. per-batch overhead


def _per_batch(run_one: Callable[[], Any], n: int) -> list[float]:
    out = []
    for _ in range(n):
        t0 = time.perf_counter()
        run_one()
        out.append(time.perf_counter() - t0)
    return out


def _stats(ts: list[float]) -> str:
    ms = sorted(t * 1e3 for t in ts)
    p90 = ms[int(len(ms) * 0.9)]
    p99 = ms[min(len(ms) - 1, int(len(ms) * 0.99))]
    return f"mean {statistics.fmean(ms):.3f} ms, median {statistics.median(ms):.3f}, p90 {p90:.3f}, p99 {p99:.3f}, max {ms[-1]:.3f}"


def tiny_no_checkpoint(n: int) -> dict[str, float]:
    """Tiny batches (one line of 3 words) through the word-count graph, no checkpoint."""
    line = ["a b a"]
    ssc = sk.StreamingContext(0.001)
    ssc.queue_stream([line] * (n + 50), name="lines").flat_map(str.split).map(_pair).update_state_by_key(_add, name="counts").foreach_batch(
        lambda b: None
    )
    ssc.run(max_batches=50)  # warm-up
    ts = _per_batch(lambda: ssc.run(max_batches=1), n)
    ssc.stop()
    minimal = sk.StreamingContext(0.001)
    minimal.queue_stream([[1]] * (n + 50), name="q").map(lambda x: x + 1).foreach_batch(lambda b: None)
    minimal.run(max_batches=50)
    ts_min = _per_batch(lambda: minimal.run(max_batches=1), n)
    minimal.stop()
    state: dict[str, int] = {}
    t0 = time.perf_counter()
    for _ in range(n):
        for w in line[0].split():
            state[w] = state.get(w, 0) + 1
    bare = (time.perf_counter() - t0) / n
    mean = statistics.fmean(ts)
    print(f"tiny batches, no checkpoint ({n} batches of one 3-word line; word-count graph; queue_stream):")
    print(f"  engine per batch: {_stats(ts)}")
    print(f"  minimal graph (queue -> map -> foreach_batch): {_stats(ts_min)}")
    print(f"  bare loop doing the same records: {bare * 1e6:.2f} us per batch")
    print(f"  overhead per batch ~ {mean * 1e3:.3f} ms (target < 1 ms: {'met' if mean < 1e-3 else 'NOT met'})")
    return {"mean_ms": mean * 1e3}


def tiny_checkpoint(n: int, directory: str | None = None) -> dict[str, float]:
    """Tiny batches (10 records) with a local checkpoint: rate_stream -> keyed running count."""
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
        ts = _per_batch(lambda: ssc.run(max_batches=1), n)
        ssc.stop()
    finally:
        shutil.rmtree(base, ignore_errors=True)
    mean = statistics.fmean(ts)
    disk = durable_writes(n, directory)
    print(f"tiny batches, local checkpoint ({n} batches of 10 records; rate_stream -> update_state_by_key; {base}):")
    print(f"  engine per batch: {_stats(ts)}")
    print(
        f"  same-run disk baseline, 3 durable small-file writes (plan, delta, commit record: write+fsync+rename+fsync dir each): {_stats(disk)}"
    )
    print(f"  engine minus the disk baseline ~ {(mean - statistics.fmean(disk)) * 1e3:.3f} ms per batch")
    print(f"  overhead per batch ~ {mean * 1e3:.3f} ms (target <= 5 ms: {'met' if mean <= 5e-3 else 'NOT met'})")
    return {"mean_ms": mean * 1e3}


def durable_writes(n: int, directory: str | None, per_batch: int = 3) -> list[float]:
    """Time `per_batch` durable small-file writes, as the checkpoint does them, `n` times."""
    base = tempfile.mkdtemp(prefix="sk-bench-disk-", dir=directory)
    payload = b"x" * 200
    out = []
    try:
        for i in range(n):
            t0 = time.perf_counter()
            for j in range(per_batch):
                tmp, final = os.path.join(base, f".tmp-{i}-{j}"), os.path.join(base, f"{i}-{j}")
                fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
                os.write(fd, payload)
                os.fsync(fd)
                os.close(fd)
                os.replace(tmp, final)
                dfd = os.open(base, os.O_RDONLY)
                os.fsync(dfd)
                os.close(dfd)
            out.append(time.perf_counter() - t0)
    finally:
        shutil.rmtree(base, ignore_errors=True)
    return out


# --------------------------------------------------------------------------- 3. start-up

_CHILD = """
import time
import streamkeep as sk
ssc = sk.StreamingContext(0.2{ckpt})
done = []
ssc.queue_stream([["a b a", "c"]], name="lines").flat_map(str.split).map(lambda w: (w, 1)).update_state_by_key(
    lambda n, o: (o or 0) + sum(n), name="counts").foreach_batch(lambda b: done.append(b.collect()))
ssc.run(max_batches=1)
assert done and sorted(done[0]) == [("a", 2), ("b", 1), ("c", 1)]
print("first batch done", flush=True)
"""


def _time_child(code: str, repeats: int) -> list[float]:
    out = []
    env = {**os.environ, "PYTHONPATH": ROOT}
    for _ in range(repeats):
        t0 = time.perf_counter()
        proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True, env=env)
        assert proc.stdout is not None
        line = proc.stdout.readline()
        t = time.perf_counter() - t0
        proc.wait()
        if code != "pass" and "first batch done" not in line:
            raise SystemExit(f"start-up child failed (exit {proc.returncode})")
        out.append(t)
    return out


def startup(repeats: int) -> dict[str, float]:
    base = tempfile.mkdtemp(prefix="sk-bench-start-")
    try:
        bare = _time_child("pass", repeats)
        plain = _time_child(_CHILD.format(ckpt=""), repeats)
        ck = []
        for i in range(repeats):
            ck += _time_child(_CHILD.format(ckpt=f", checkpoint={os.path.join(base, str(i))!r}"), 1)
    finally:
        shutil.rmtree(base, ignore_errors=True)
    med = statistics.median(plain)
    print(f"start-up: process start -> first batch done (subprocess, median of {repeats}):")
    print(f"  python -c pass               : {statistics.median(bare) * 1e3:6.1f} ms")
    print(f"  streamkeep, no checkpoint    : {med * 1e3:6.1f} ms (runs {', '.join(f'{t * 1e3:.0f}' for t in plain)})")
    print(f"  streamkeep, fresh local ckpt : {statistics.median(ck) * 1e3:6.1f} ms (runs {', '.join(f'{t * 1e3:.0f}' for t in ck)})")
    print(f"  target < 500 ms: {'met' if med < 0.5 else 'NOT met'}")
    return {"startup_ms": med * 1e3}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="smaller sizes (a smoke run)")
    ap.add_argument("--only", choices=["wordcount", "tiny", "startup", "dashboard"], help="run one part")
    ap.add_argument("--dir", default=None, help="where the checkpoint of the tiny-batch run lives (default: the temp dir)")
    args = ap.parse_args()
    q = args.quick
    print(f"python {sys.version.split()[0]}, streamkeep {sk.__version__}, {os.cpu_count()} CPUs")
    print(f"load average at start: {' '.join(f'{x:.2f}' for x in os.getloadavg())} (other processes on these CPUs skew every number)")
    if args.only in (None, "wordcount"):
        word_count(100_000 if q else 1_000_000, 10, 10_000, 3 if q else 5)
    if args.only in (None, "tiny"):
        tiny_no_checkpoint(500 if q else 5000)
        tiny_checkpoint(100 if q else 500, args.dir)
        if args.dir is None and os.path.isdir("/dev/shm"):
            print("  (again on tmpfs, where fsync costs nothing: the engine's own per-batch cost with a checkpoint)")
            tiny_checkpoint(100 if q else 500, "/dev/shm")
    if args.only in (None, "dashboard"):
        dashboard(100_000 if q else 1_000_000, 100 if q else 500, 10_000, 3 if q else 5)
    if args.only in (None, "startup"):
        startup(3 if q else 5)
    print(f"load average at end: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")


if __name__ == "__main__":
    main()
