"""Tables vs records (issue 15), ratios measured in one run.

1. The running word count of bench/throughput.py (1M words in 10 batches over 10k
   distinct words; every batch updates the counts): the bare Python loop (split,
   pair, sum into a dict), the record job (``flat_map(str.split).map(pair)
   .update_state_by_key(sum)``) and two table jobs (``map_tables`` splitting the
   lines with pyarrow, ``aggregate_state(by="word", aggs={"n": ("*", "count")})``):
   one fed the same Python lines (``to_tables`` converts them: the cost a record
   source pays), one fed Arrow tables of the lines (what ``parquet_file_stream`` /
   ``json_file_stream`` deliver), and the Arrow-in job again with
   ``LocalExecutor(table_threads=2)`` (the opt-in split of aggregate_state's probe of a
   big batch over 2 threads; its wall ratio may exceed its CPU ratio; the default is one
   thread). Target: table job >= 5x the bare loop. Next to them, the Arrow-in job's kernels run
   alone in a plain loop (split, index_in, bincount, add: no engine), so one run shows the
   engine's share and the ratio that no change to the engine can pass.
2. The group-by engine: one batch's partial count plus the merge into 10k keys of
   state, with pyarrow.compute (what aggregate_state uses) and with polars; and
   (``--only probe``) aggregate_state's probe of one batch alone in 1, 2 and 4 threads.
3. 1M keys of state (a local checkpoint, every delta in its own file): per-batch
   checkpoint bytes when 1,000 keys change, next to the snapshot, and the time a
   restart takes (get_or_create + one small batch), tables vs records.

Run: ``.venv/bin/python bench/tables.py [--quick]``. Prints numbers and ratios
measured in this run; nothing is compared with stored results.
"""

from __future__ import annotations

import argparse
import gc
import os
import shutil
import sys
import tempfile
import time
from typing import Any

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, ROOT)
sys.path.insert(0, HERE)

import pyarrow as pa  # noqa: E402
import pyarrow.compute as pc  # noqa: E402
from throughput import bare_word_count, engine_word_count, make_lines  # noqa: E402

import streamkeep as sk  # noqa: E402
from streamkeep.executors import LocalExecutor  # noqa: E402
from streamkeep.testing import ManualClock  # noqa: E402

_LINE = pa.schema([("line", pa.string())])


def _split(t: Any) -> Any:
    return pa.table({"word": pc.list_flatten(pc.split_pattern(t["line"], " "))})


def table_word_count(
    batches: list[Any], *, arrow_input: bool, split_s: list[float] | None = None, threads: int | None = None
) -> tuple[float, float, dict[str, int]]:
    """The table job over `batches` (lists of lines, or one Arrow table of lines each); (wall s, CPU s, final counts).

    With `split_s`, the wall time spent in the job's map_tables function (the split) is added to ``split_s[0]``.
    `threads`: ``LocalExecutor(table_threads=threads)`` (None: the default, one thread).
    """
    last: list[Any] = []
    split = _split
    if split_s is not None:

        def split(t: Any) -> Any:
            s0 = time.perf_counter()
            out = _split(t)
            split_s[0] += time.perf_counter() - s0
            return out

    ssc = sk.StreamingContext(0.5, executor=None if threads is None else LocalExecutor(table_threads=threads))
    src = ssc.queue_stream(batches, name="lines")
    tables = src if arrow_input else src.to_tables(_LINE)
    counts = tables.map_tables(split).aggregate_state(by="word", aggs={"n": ("*", "count")}, name="counts")
    counts.foreach_batch(lambda b: last.append(b))
    c0, t0 = time.process_time(), time.perf_counter()
    ssc.run(max_batches=len(batches))
    elapsed, cpu = time.perf_counter() - t0, time.process_time() - c0
    ssc.stop()
    final = last[-1].to_arrow()
    return elapsed, cpu, dict(zip(final["word"].to_pylist(), final["n"].to_pylist(), strict=True))


def kernel_word_count(batches: list[Any]) -> tuple[float, float, dict[str, int]]:
    """The Arrow-in table job's kernels alone, without the engine: (wall s, CPU s, final counts).

    Per batch, what the job's user function and aggregate_state's counted path run: the split
    (`_split`), one ``index_in`` of the words against the stored words, ``np.bincount`` and one
    ``pc.add`` into the counts (the first batch, and words not stored yet: one ``group_by``),
    and the updated counts as a table. No scheduler, no Batch, no checks: the floor of any
    engine running this user function on these kernels.
    """
    import numpy as np

    def grouped(words: Any) -> tuple[Any, Any]:
        g = pa.table({"word": words}).group_by("word", use_threads=False).aggregate([([], "count_all")])
        return g.column("word").combine_chunks(), g.column("count_all").combine_chunks()

    keys: Any = None
    counts: Any = None
    state: Any = None
    c0, t0 = time.process_time(), time.perf_counter()
    for (table,) in batches:
        words = _split(table).column("word").combine_chunks()
        if keys is None:
            keys, counts = grouped(words)
        else:
            where = pc.index_in(words, value_set=keys)
            rows = pc.fill_null(where, len(keys)).to_numpy() if where.null_count else where.to_numpy()
            counts = pc.add(counts, pa.array(np.bincount(rows, minlength=len(keys) + 1)[: len(keys)]))
            if where.null_count:
                new_keys, new_counts = grouped(words.filter(pc.is_null(where)))
                keys, counts = pa.concat_arrays([keys, new_keys]), pa.concat_arrays([counts, new_counts])
        state = pa.table({"word": keys, "n": counts})
    elapsed, cpu = time.perf_counter() - t0, time.process_time() - c0
    return elapsed, cpu, dict(zip(state["word"].to_pylist(), state["n"].to_pylist(), strict=True))


KERNELS = "kernels only (Arrow in)"
TABLE_JOBS = ("tables (Python lines in)", "tables (Arrow in)", "tables (Arrow in, 2 threads)")
#: (input is Arrow, LocalExecutor(table_threads=...)) per table job: the default probes on one thread; "2 threads"
#: is the same job with the opt-in split of aggregate_state's probe of a big batch (docs/tables.md).
_JOB_ARGS = {TABLE_JOBS[0]: (False, None), TABLE_JOBS[1]: (True, None), TABLE_JOBS[2]: (True, 2)}


def word_count(words: int, n_batches: int, distinct: int, repeats: int) -> None:
    lines = make_lines(words, distinct)
    per = len(lines) // n_batches
    batches = [lines[i * per : (i + 1) * per] for i in range(n_batches)]
    arrow_batches = [[pa.table({"line": pa.array(b, pa.string())})] for b in batches]
    n = per * n_batches * 10
    table_word_count(arrow_batches[:1], arrow_input=True)  # warm-up: pyarrow loads its kernels on first use
    # (wall s, CPU s) per run; CPU time (all threads of this process) moves far less than wall time
    # when other processes share the CPUs, so both ratios are printed.
    runs: dict[str, list[tuple[float, float]]] = {"bare": [], "records": [], **{label: [] for label in TABLE_JOBS}, KERNELS: []}
    splits: dict[str, list[float]] = {label: [] for label in TABLE_JOBS}  # wall s in the split, per run
    expected: dict[str, int] = {}
    for _ in range(repeats):  # interleaved, so every side sees the same machine load
        gc.collect()
        c0, t0 = time.process_time(), time.perf_counter()
        expected = bare_word_count(batches)
        runs["bare"].append((time.perf_counter() - t0, time.process_time() - c0))
        gc.collect()
        t, c, got = engine_word_count(batches)
        runs["records"].append((t, c))
        if got != expected:
            raise SystemExit("the record job and the bare loop disagree")
        for label in TABLE_JOBS:
            arrow, threads = _JOB_ARGS[label]
            gc.collect()
            split_s = [0.0]
            t, c, got = table_word_count(arrow_batches if arrow else batches, arrow_input=arrow, split_s=split_s, threads=threads)
            runs[label].append((t, c))
            splits[label].append(split_s[0])
            if got != expected:
                raise SystemExit(f"{label} and the bare loop disagree")
        gc.collect()
        t, c, got = kernel_word_count(arrow_batches)
        runs[KERNELS].append((t, c))
        if got != expected:
            raise SystemExit("the kernels-only loop and the bare loop disagree")
    wall = {label: min(w for w, _ in rs) for label, rs in runs.items()}
    cpu = {label: min(c for _, c in rs) for label, rs in runs.items()}
    print(f"word count: {n:,} words in {n_batches} batches, {distinct:,} distinct words, best of {repeats} (wall; CPU in brackets)")
    print(f"  (load average now {os.getloadavg()[0]:.2f} on {os.cpu_count()} CPUs: the 2-thread job gains only with a free core)")
    for label, rs in runs.items():
        print(
            f"  {label:<26}: {n / wall[label]:>12,.0f} words/s ({wall[label] * 1e3:7.1f} ms; runs {', '.join(f'{w * 1e3:.0f}' for w, _ in rs)})"
            f"  = {wall['bare'] / wall[label]:5.2f}x the bare loop  [CPU {cpu[label] * 1e3:6.1f} ms = {cpu['bare'] / cpu[label]:5.2f}x]"
        )
    # Where a table job's time goes, in its fastest run: the split (the job's map_tables: user code, one
    # pyarrow kernel) and the rest (aggregate_state's fold, engine plumbing, and with Python lines the
    # to_tables conversion: the difference of the two jobs' rests).
    for label in TABLE_JOBS:
        i = min(range(len(runs[label])), key=lambda j: runs[label][j][0])
        w, s = runs[label][i][0], splits[label][i]
        print(
            f"  {label}: split (map_tables) {s * 1e3:5.1f} ms, the rest (aggregate_state, engine, input) {(w - s) * 1e3:5.1f} ms"
            f" = {(w - s) * 1e3 / n_batches:4.2f} ms per batch"
        )
    # The engine's share: the Arrow-in job against its kernels run alone (same user function, no engine).
    print(
        f"  {TABLE_JOBS[1]} / {KERNELS}: {cpu[TABLE_JOBS[1]] / cpu[KERNELS]:.3f}x CPU, {wall[TABLE_JOBS[1]] / wall[KERNELS]:.3f}x wall"
        f" (the kernels alone reach {cpu['bare'] / cpu[KERNELS]:.2f}x the bare loop in CPU: no engine change goes past that)"
    )
    for label in TABLE_JOBS:
        ratio, cratio = wall["bare"] / wall[label], cpu["bare"] / cpu[label]
        # Each round's sides ran back to back (the same load): the median of the rounds' CPU ratios moves less
        # with the load's drift during the run than the ratio of the bests, which may come from different rounds.
        rounds = sorted(b[1] / j[1] for b, j in zip(runs["bare"], runs[label], strict=True))
        print(
            f"  {label} / bare = {ratio:.2f}x wall, {cratio:.2f}x CPU (target >= 5x: {'met' if ratio >= 5 else 'NOT met'});"
            f" median of the rounds' CPU ratios {rounds[len(rounds) // 2]:.2f}x; / record job = {wall['records'] / wall[label]:.2f}x"
        )


def group_by_engines(words: int, distinct: int, repeats: int) -> None:
    """One batch's count per word merged into a 10k-key state: pyarrow (four ways) vs polars."""
    import numpy as np
    import polars as pl

    lines = make_lines(words, distinct)
    table = _split(pa.table({"line": pa.array(lines, pa.string())}))
    state = table.group_by("word").aggregate([([], "count_all")]).rename_columns(["word", "n"]).combine_chunks()

    def with_group_by() -> Any:  # what aggregate_state did before: a group_by of the batch, then a join
        part = table.group_by("word", use_threads=False).aggregate([([], "count_all")]).rename_columns(["word", "n"])
        j = part.join(state, keys="word", join_type="left outer", right_suffix="#old", use_threads=False)
        changed = pa.table({"word": j["word"], "n": pc.coalesce(pc.add(j["n"], j["n#old"]), j["n"])})
        rest = state.filter(pc.invert(pc.is_in(state["word"], value_set=changed["word"].combine_chunks())))
        return pa.concat_tables([rest, changed])

    def with_index_in() -> Any:  # aggregate_state's counted path: probe the stored keys, count per stored row
        where = pc.index_in(table["word"].chunk(0), value_set=state["word"].chunk(0))
        hits = np.bincount(pc.fill_null(where, state.num_rows).to_numpy(), minlength=state.num_rows + 1)[: state.num_rows]
        return pa.table([state["word"], pc.add(state["n"], pa.array(hits))], names=["word", "n"])

    stored = state["word"].chunk(0)
    n_state = state.num_rows

    def with_value_counts() -> Any:  # aggregate the batch first (a hash group-by to its ~10k words), then probe only those
        vc = pc.value_counts(table["word"].chunk(0))
        where = pc.index_in(vc.field(0), value_set=stored)  # a persistent index of the stored keys would replace this probe
        hits = np.zeros(n_state + 1, np.int64)
        hits[pc.fill_null(where, n_state).to_numpy()] = vc.field(1).to_numpy()  # the uniques are distinct: no add.at
        return pa.table([state["word"], pc.add(state["n"], pa.array(hits[:n_state]))], names=["word", "n"])

    def with_dictionary_encode() -> Any:  # the same through dictionary_encode (uniques + one index per word) and bincount
        enc = pc.dictionary_encode(table["word"].chunk(0))
        per_unique = np.bincount(enc.indices.to_numpy(), minlength=len(enc.dictionary))
        where = pc.index_in(enc.dictionary, value_set=stored)
        hits = np.zeros(n_state + 1, np.int64)
        hits[pc.fill_null(where, n_state).to_numpy()] = per_unique
        return pa.table([state["word"], pc.add(state["n"], pa.array(hits[:n_state]))], names=["word", "n"])

    pstate = pl.from_arrow(state)

    def with_polars() -> Any:
        part = pl.from_arrow(table).group_by("word").len(name="n")
        j = part.join(pstate, on="word", how="left", suffix="#old")
        changed = j.select(pl.col("word"), (pl.col("n") + pl.col("n#old").fill_null(0)).alias("n"))
        out = pl.concat([pstate.join(changed.select("word"), on="word", how="anti"), changed])
        return out.to_arrow()

    engines = {
        "pyarrow index_in + numpy (aggregate_state)": with_index_in,
        "batch first: value_counts + index_in of uniques": with_value_counts,
        "batch first: dictionary_encode + bincount": with_dictionary_encode,
        "pyarrow group_by + join": with_group_by,
        "polars": with_polars,
    }

    def counts(t: Any) -> dict[str, int]:
        return dict(zip(t["word"].to_pylist(), t["n"].to_pylist(), strict=True))

    want = counts(with_index_in())
    for label, fn in engines.items():
        if counts(fn()) != want:
            raise SystemExit(f"group-by engine {label!r} disagrees with aggregate_state's path")
    res: dict[str, list[tuple[float, float]]] = {label: [] for label in engines}
    for fn in engines.values():
        fn()
    # The floor of "batch first" with a persistent index of the stored keys that cost nothing: value_counts alone.
    bound = "(floor of batch first: value_counts alone)"
    timed = {**engines, bound: lambda: pc.value_counts(table["word"].chunk(0))}
    res[bound] = []
    for _ in range(repeats):  # interleaved, so every engine sees the same load
        for label, fn in timed.items():
            c0, t0 = time.process_time(), time.perf_counter()
            fn()
            res[label].append((time.perf_counter() - t0, time.process_time() - c0))
    print(f"group-by engine: count {table.num_rows:,} words per key and merge into {state.num_rows:,} keys of state, best of {repeats} (wall; CPU of all threads)")
    for label, rs in res.items():
        print(f"  {label:<48}: {min(w for w, _ in rs) * 1e3:7.2f} ms  [CPU {min(c for _, c in rs) * 1e3:7.2f} ms]")
    best = {label: min(w for w, _ in rs) for label, rs in res.items()}
    first = next(iter(engines))
    print("  time / " + first + ": " + ", ".join(f"{label} {best[label] / best[first]:.2f}x" for label in timed if label != first))


def probe_threads(words: int, distinct: int, repeats: int) -> None:
    """aggregate_state's probe of one batch (`words` words against `distinct` stored keys) alone, in 1, 2 and 4 threads.

    Prints per batch the wall time, the CPU time of all threads, and the CPU time of the
    longest chunk's thread: on an idle machine the wall time of the split probe is about
    that plus the hand-over to the workers; on a loaded one the workers wait for a CPU.
    """
    from streamkeep.executors._tables import AggregateStateRuntime

    ssc = sk.StreamingContext(1.0)
    node = ssc.queue_stream([], name="q").aggregate_state(by="word", aggs={"n": ("*", "count")}, name="c")._node
    table = _split(pa.table({"line": pa.array(make_lines(words, distinct), pa.string())}))
    keys, stored = table["word"], pc.unique(table["word"].chunk(0))
    chunk_cpu: list[float] = []

    class Timed(AggregateStateRuntime):
        def _in_chunks(self, fn: Any, values: Any, k: int) -> list[Any]:
            def timed(part: Any) -> Any:
                c0 = time.thread_time()
                out = fn(part)
                chunk_cpu.append(time.thread_time() - c0)
                return out

            return super()._in_chunks(timed, values, k)

    rts = {}
    for k in (1, 2, 4):
        rts[k] = Timed(node)
        rts[k].set_threads(k)
    want = rts[1]._probe(keys, stored)
    res: dict[int, list[tuple[float, float, float]]] = {k: [] for k in rts}
    for _ in range(repeats):  # interleaved
        for k, rt in rts.items():
            chunk_cpu.clear()
            c0, t0 = time.process_time(), time.perf_counter()
            rows, fresh = rt._probe(keys, stored)
            res[k].append((time.perf_counter() - t0, time.process_time() - c0, max(chunk_cpu, default=0.0)))
            if fresh != want[1] or not (rows == want[0]).all():
                raise SystemExit(f"the probe in {k} threads differs from one thread")
    for rt in rts.values():
        rt.close()
    print(f"aggregate_state's probe alone: {keys.length():,} words against {len(stored):,} stored keys, per batch, best (median) of {repeats}")
    for k, rs in res.items():
        w, c, longest = (sorted(r[i] for r in rs) for i in range(3))
        med = len(rs) // 2
        extra = f"; longest chunk's thread CPU {longest[0] * 1e3:5.2f} ({longest[med] * 1e3:5.2f}) ms" if k > 1 else ""
        print(f"  {k} thread(s): wall {w[0] * 1e3:5.2f} ({w[med] * 1e3:5.2f}) ms; CPU {c[0] * 1e3:5.2f} ({c[med] * 1e3:5.2f}) ms{extra}")
    ssc.stop()


def _dir_bytes(path: str, suffix: str) -> list[int]:
    return [os.path.getsize(os.path.join(path, f)) for f in sorted(os.listdir(path)) if f.endswith(suffix)] if os.path.isdir(path) else []


def big_state(keys: int, changed: int, batches_after: int) -> None:
    base = tempfile.mkdtemp(prefix="sk-bench-tables-")
    names = [f"key{i}" for i in range(keys)]
    small = [names[(j * 7919) % keys] for j in range(changed)]
    table_in = [[pa.table({"k": names})]] + [[pa.table({"k": small})] for _ in range(batches_after)]
    record_in = [names] + [small for _ in range(batches_after)]
    results = {}
    try:
        for label in ("tables", "records"):
            url = os.path.join(base, label)

            def setup(label: str = label, url: str = url) -> sk.StreamingContext:
                ssc = sk.StreamingContext(1.0, checkpoint=url, clock=ManualClock(), snapshot_every=batches_after, inline_delta_bytes=0)
                if label == "tables":
                    src = ssc.queue_stream(table_in, name="in")
                    src.aggregate_state(by="k", aggs={"n": ("*", "count")}, name="state").foreach_batch(lambda b: None)
                else:
                    src = ssc.queue_stream(record_in, name="in")
                    src.map(lambda k: (k, 1)).update_state_by_key(lambda new, old: (old or 0) + len(new), name="state").foreach_batch(
                        lambda b: None
                    )
                return ssc

            ssc = sk.StreamingContext.get_or_create(url, setup)
            t0 = time.perf_counter()
            ssc.run(max_batches=1 + batches_after)
            run_s = time.perf_counter() - t0
            ssc.stop()
            state_dir = os.path.join(url, "state", "state")
            deltas, snaps = _dir_bytes(state_dir, ".delta"), _dir_bytes(state_dir, ".snap")
            gc.collect()
            t0 = time.perf_counter()
            ssc = sk.StreamingContext.get_or_create(url, setup)  # restores the snapshot and the deltas after it
            restart_s = time.perf_counter() - t0
            ssc.stop()
            results[label] = (run_s, deltas, snaps, restart_s)
    finally:
        shutil.rmtree(base, ignore_errors=True)
    print(f"state of {keys:,} keys, then {batches_after} batches changing {changed:,} keys each (local checkpoint, a snapshot after batch {batches_after}):")
    for label, (run_s, deltas, snaps, restart_s) in results.items():
        later = deltas[1:] or [0]
        print(f"  {label:<8}: run {run_s:6.2f} s; first delta {deltas[0] if deltas else 0:>11,} B, later deltas {min(later):,}-{max(later):,} B per batch;"
              f" snapshot {snaps[-1] if snaps else 0:>11,} B; restart {restart_s * 1e3:8.1f} ms")
    t_restart, r_restart = results["tables"][3], results["records"][3]
    t_later = results["tables"][1][1:] or [0]
    print(f"  table deltas for {changed:,} changed keys are {max(t_later) / max(results['tables'][1][0], 1):.4f}x the first (all {keys:,} keys);"
          f" restart tables / records = {t_restart / r_restart:.2f}x ({'faster' if t_restart < r_restart else 'NOT faster'})")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="smaller sizes (a smoke run)")
    ap.add_argument("--only", choices=["wordcount", "engines", "probe", "state"], help="run one part")
    args = ap.parse_args()
    q = args.quick
    print(f"python {sys.version.split()[0]}, streamkeep {sk.__version__}, pyarrow {pa.__version__}, {os.cpu_count()} CPUs")
    print(f"load average at start: {' '.join(f'{x:.2f}' for x in os.getloadavg())} (other processes on these CPUs skew every number)")
    if args.only in (None, "wordcount"):
        word_count(100_000 if q else 1_000_000, 10, 10_000, 3 if q else 5)
    if args.only in (None, "engines"):
        group_by_engines(10_000 if q else 100_000, 10_000, 5 if q else 20)
    if args.only in (None, "probe"):
        probe_threads(100_000, 10_000, 9 if q else 40)  # smaller batches are not split
    if args.only in (None, "state"):
        big_state(100_000 if q else 1_000_000, 1_000, 3)
    print(f"load average at end: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")


if __name__ == "__main__":
    main()
