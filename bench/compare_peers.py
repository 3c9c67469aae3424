"""Side-by-side benchmarks: streamkeep against the Python peers Bytewax and Quix Streams (issue 14).

    .venv/bin/python bench/compare_peers.py            # default sizes (~10 min on 2 cores)
    .venv/bin/python bench/compare_peers.py --quick    # small sizes, 2 runs
    .venv/bin/python bench/compare_peers.py --only throughput,recovery --skip quix

Run it with the project's venv: it hosts librdkafka's mock Kafka cluster
(tests/_kafka_mock.py, needs confluent-kafka) on 127.0.0.1, which every system reads.
On first use it creates bench/.bytewax-venv (``bytewax[kafka]==0.21.1``) and
bench/.quix-venv (``quixstreams==3.28.1``) from PyPI; git ignores both, the
project's venv is never touched. Every run is a fresh subprocess
(bench/_peers_side.py) under that system's venv; runs of the systems alternate;
cells are the median over runs with the spread (min-max); the ratio column is
written so that > 1 means streamkeep is better. Methods and parity choices:
docs/comparison-peers.md.
"""

from __future__ import annotations

import argparse
import compileall
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections import Counter
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(ROOT / "tests"))
import _common as C  # noqa: E402
import compare_pyspark as P  # noqa: E402  (venv and table helpers)

SK, BW, QX = "streamkeep", "bytewax", "quix"
NAMES = {SK: "streamkeep", BW: "Bytewax 0.21.1", QX: "Quix Streams 3.28.1"}
VENVS = {BW: (HERE / ".bytewax-venv", "bytewax[kafka]==0.21.1", "bytewax"), QX: (HERE / ".quix-venv", "quixstreams==3.28.1", "quixstreams")}
SIDE = HERE / "_peers_side.py"
PARTITIONS = 4


def say(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def ensure_venv(system: str) -> tuple[str | None, str | None]:
    """(python of the system's venv, None), creating it on first use; or (None, problem)."""
    venv, spec, module = VENVS[system]
    py = P.venv_python(venv)
    probe = [str(py), "-W", "ignore", "-c", f"import {module}"]
    if py.exists() and subprocess.run(probe, capture_output=True).returncode == 0:
        return str(py), None
    base = getattr(sys, "_base_executable", None) or sys.executable
    say(f"[setup] creating {venv.relative_to(ROOT)} with {spec} (first use)")
    try:
        if not py.exists():
            subprocess.run([base, "-m", "venv", str(venv)], check=True)
        subprocess.run([str(py), "-m", "pip", "install", "--quiet", "--disable-pip-version-check", spec], check=True)
    except (OSError, subprocess.CalledProcessError) as exc:
        return None, f"could not create {venv}: {exc}"
    r = subprocess.run(probe, capture_output=True, text=True)
    if r.returncode != 0:
        return None, f"{module} does not import in {venv}: {r.stderr.strip()[-300:]}"
    return str(py), None


def installed_python(project_python: str) -> tuple[str, str | None]:
    """(python, None): an interpreter that loads streamkeep as a regular ``pip install`` would; or (project_python, why not).

    The project's venv has streamkeep installed in editable mode: every interpreter it starts
    runs setuptools' editable import hook from a ``.pth`` file (pathlib, urllib.parse, fnmatch,
    ipaddress, ...: 15-30 ms of each child's start on this machine), which neither a user's
    ``pip install streamkeep`` nor the peers' pip-installed venvs have. ``bench/.streamkeep-venv``
    (git-ignored, created here in ~0.1 s, no pip) reaches the project venv's packages through a
    plain path entry, which runs no ``.pth`` of theirs; the children get streamkeep from the
    source tree (PYTHONPATH), as before.
    """
    venv = HERE / ".streamkeep-venv"
    py = P.venv_python(venv)
    try:
        purelib = subprocess.run(
            [project_python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"], capture_output=True, text=True, check=True
        ).stdout.strip()
        if not py.exists():
            subprocess.run([project_python, "-m", "venv", "--without-pip", str(venv)], check=True, capture_output=True)
        site = subprocess.run([str(py), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"], capture_output=True, text=True, check=True)
        (Path(site.stdout.strip()) / "_streamkeep-deps.pth").write_text(purelib + "\n", encoding="utf-8")
    except (OSError, subprocess.CalledProcessError) as exc:
        return project_python, f"could not create {venv}: {exc}"
    r = subprocess.run([str(py), "-c", "import streamkeep, confluent_kafka, msgpack"], capture_output=True, text=True, cwd=str(ROOT))
    if r.returncode != 0:
        return project_python, f"streamkeep or its dependencies do not import with {py}: {r.stderr.strip()[-300:]}"
    return str(py), None


def precompile() -> None:
    """Write streamkeep's bytecode (``__pycache__``, git-ignored), as ``pip install`` does for every package.

    Bytewax and Quix are pip-installed into their venvs, so their modules load from
    bytecode; streamkeep runs from the source tree, and with PYTHONDONTWRITEBYTECODE
    set (as in CI and these sessions) every child would compile it afresh (~0.5-1 s of
    its start-up on this machine, more under load). compileall writes it regardless.
    """
    for d in (ROOT / "streamkeep", HERE):
        compileall.compile_dir(str(d), quiet=1, workers=1)


def sizes(quick: bool) -> dict[str, Any]:
    """Every workload's parameters (the same for all systems)."""
    return {
        "words": 200_000 if quick else 1_000_000,
        "distinct": 10_000,
        "batch_lines": 2_000 if quick else 10_000,  # 10 batches of 10k lines = 100k words each
        "interval_s": 0.25,  # batch interval / Bytewax epoch / Quix commit interval of the live jobs
        "startup_lines": 10,
        "recovery": {"rounds": 24 if quick else 40, "lines_per_round": 500, "every_s": 0.25, "kill_after_s": 2.0},
        "codechange": {"lines": 2_000},
    }


# --------------------------------------------------------------------------- children


class Runner:
    def __init__(self, pythons: dict[str, str], log_dir: Path) -> None:
        self.pythons = pythons
        self.log_dir = log_dir
        self.n = 0

    def launch(self, system: str, workload: str, params: dict[str, Any]) -> tuple[subprocess.Popen[str], Path]:
        self.n += 1
        log = self.log_dir / f"{self.n:03d}-{system}-{workload}.log"
        env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
        env["PYTHONUNBUFFERED"] = "1"
        if system == SK:
            env["PYTHONPATH"] = str(ROOT)
        err = open(log, "w", encoding="utf-8")  # noqa: SIM115 (the child owns it)
        proc = subprocess.Popen(
            [self.pythons[system], str(SIDE), system, workload, json.dumps(params)],
            stdout=subprocess.PIPE,
            stderr=err,
            text=True,
            cwd=str(ROOT),
            env=env,
            start_new_session=True,
        )
        err.close()
        return proc, log

    def result(self, system: str, workload: str, params: dict[str, Any], timeout_s: float = 600) -> dict[str, Any]:
        proc, log = self.launch(system, workload, params)
        try:
            out, _ = proc.communicate(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            P.kill_group(proc)
            proc.communicate()
            return {"error": f"timed out after {timeout_s:.0f} s (log: {log})"}
        finally:
            P.kill_group(proc)
        res = C.parse_results(out)
        if res and "error" not in res[-1]:
            return res[-1]
        why = res[-1]["error"] if res else f"exit {proc.returncode}: {P.tail(log)}"
        return {"error": f"{why} (log: {log})"}


# --------------------------------------------------------------------------- Kafka helpers


def produce_lines(bootstrap: str, topic: str, lines: list[str]) -> None:
    from _servers import produce

    produce(bootstrap, topic, [x.encode() for x in lines], partition=lambda i: i % PARTITIONS)


class Feeder(threading.Thread):
    """Produces `lines_per_round` new lines into the topic every `every_s` seconds, `rounds` times."""

    def __init__(self, bootstrap: str, topic: str, lines: list[str], rounds: int, per_round: int, every_s: float) -> None:
        super().__init__(daemon=True)
        self.bootstrap, self.topic, self.lines = bootstrap, topic, lines
        self.rounds, self.per_round, self.every_s = rounds, per_round, every_s

    def run(self) -> None:
        for r in range(self.rounds):
            t0 = time.time()
            produce_lines(self.bootstrap, self.topic, self.lines[r * self.per_round : (r + 1) * self.per_round])
            time.sleep(max(0.0, self.every_s - (time.time() - t0)))


def read_events(path: Path) -> dict[int, float]:
    """pid -> wall time of that process's first output."""
    got: dict[int, float] = {}
    try:
        for line in path.read_text(encoding="utf-8").splitlines():
            pid, wall = line.split()
            got.setdefault(int(pid), float(wall))
    except FileNotFoundError:
        pass
    return got


def read_outputs(out_dir: Path) -> list[tuple[str, int]]:
    """Every ``word count`` output line, in output order (file names sort by batch / process)."""
    rows: list[tuple[str, int]] = []
    if not out_dir.exists():
        return rows
    files = sorted(
        (f for f in out_dir.iterdir() if f.is_file() and not f.name.startswith(".")), key=lambda f: (f.stat().st_mtime_ns, f.name)
    )
    if all(f.name.startswith("batch-") for f in files):  # streamkeep's FileSink: one file per batch time
        files.sort(key=lambda f: f.name)
    for f in files:
        for line in f.read_text(encoding="utf-8", errors="replace").splitlines():
            parts = line.split()
            if len(parts) == 2 and parts[1].isdigit():
                rows.append((parts[0], int(parts[1])))
    return rows


def wait_for(cond: Any, timeout_s: float, proc: subprocess.Popen[str] | None = None) -> bool:
    deadline = time.time() + timeout_s
    while time.time() < deadline:
        if cond():
            return True
        if proc is not None and proc.poll() is not None:
            return bool(cond())
        time.sleep(0.02)
    return False


def judge(rows: list[tuple[str, int]], truth: Counter[str]) -> dict[str, Any]:
    last: dict[str, int] = {}
    for w, c in rows:
        last[w] = c
    over = sum(1 for w, n in truth.items() if last.get(w, 0) > n)
    under = sum(1 for w, n in truth.items() if last.get(w, 0) < n)
    dups = sum(n - 1 for n in Counter(rows).values() if n > 1)
    ratio = round(sum(last.get(w, 0) for w in truth) / max(1, sum(truth.values())), 4)
    return {
        "outputs": len(rows),
        "duplicates": dups,
        "over": over,
        "under": under,
        "exact": over == 0 and under == 0,
        "words": len(truth),
        "final_over_true": ratio,
    }


# --------------------------------------------------------------------------- workloads


def recovery_run(runner: Runner, system: str, s: dict[str, Any], bootstrap: str, work: Path, kafka: Any) -> dict[str, Any]:
    rp = s["recovery"]
    topic = f"rec-{system}-{uuid.uuid4().hex[:8]}"
    kafka.create_topic(topic, PARTITIONS)
    lines = C.make_lines(rp["rounds"] * rp["lines_per_round"] * C.WORDS_PER_LINE, 100)
    truth = Counter(w for line in lines for w in line.split())
    out, events = work / "out", work / "events.txt"
    params = {
        "bootstrap": bootstrap,
        "topic": topic,
        "partitions": PARTITIONS,
        "batch_lines": s["batch_lines"],
        "interval_s": s["interval_s"],
        "commit_interval_s": s["interval_s"],
        "state": str(work / "state"),
        "out": str(out),
        "events": str(events),
        "stop": "never",
        "lines": len(lines),
        "source_name": f"lines_{topic.replace('-', '_')}",
    }
    feeder = Feeder(bootstrap, topic, lines, rp["rounds"], rp["lines_per_round"], rp["every_s"])
    feeder.start()
    p1, log1 = runner.launch(system, "job", params)
    try:
        if not wait_for(lambda: p1.pid in read_events(events), 120, p1):
            return {"error": f"no output before the kill: {P.tail(log1)} (log: {log1})"}
        time.sleep(rp["kill_after_s"])  # mid-run: the feeder is still producing
        P.kill_group(p1)
        p1.wait()
        t_restart = time.time()
        p2, log2 = runner.launch(system, "job", params)
        try:
            if not wait_for(lambda: p2.pid in read_events(events), 120, p2):
                return {"error": f"no output after the restart: {P.tail(log2)} (log: {log2})"}
            restart_s = read_events(events)[p2.pid] - t_restart
            feeder.join()
            state = {"rows": 0, "since": time.time()}

            def settled() -> bool:
                rows = read_outputs(out)
                if judge(rows, truth)["exact"]:
                    return True
                if len(rows) != state["rows"]:
                    state["rows"], state["since"] = len(rows), time.time()
                return time.time() - state["since"] > 15  # no new output for 15 s: it is done

            wait_for(settled, 180, p2)
        finally:
            P.kill_group(p2)
            p2.wait()
    finally:
        P.kill_group(p1)
        feeder.join()
    return {"restart_s": restart_s, **judge(read_outputs(out), truth)}


def codechange_run(runner: Runner, system: str, s: dict[str, Any], bootstrap: str, work: Path, kafka: Any, rename: str) -> dict[str, Any]:
    topic = f"cc-{system}-{uuid.uuid4().hex[:8]}"
    kafka.create_topic(topic, PARTITIONS)
    n = s["codechange"]["lines"]
    # The second half uses 50 of the first half's 100 words, so "counts from 0" and "counted right" differ.
    first, second = C.make_lines(n * C.WORDS_PER_LINE, 100), C.make_lines(n * C.WORDS_PER_LINE, 50)
    lines = first + second
    base = {
        "bootstrap": bootstrap,
        "topic": topic,
        "partitions": PARTITIONS,
        "batch_lines": s["batch_lines"],
        "interval_s": s["interval_s"],
        "commit_interval_s": s["interval_s"],
        "state": str(work / "state"),
        "out": str(work / "out"),
        "events": str(work / "events.txt"),
        "stop": "idle",
        "lines": n,
        "source_name": f"lines_{topic.replace('-', '_')}",
        "step_name": "counts",
        "idle_timeout_s": 10.0,
    }
    produce_lines(bootstrap, topic, first)
    r1 = runner.result(system, "job", base, timeout_s=180)
    if "error" in r1:
        return {"outcome": f"first run failed: {r1['error']}"[:200]}
    produce_lines(bootstrap, topic, second)
    v2 = dict(base, **({"step_name": "counts_v2"} if rename == "step" else {"source_name": base["source_name"] + "_v2"}))
    r2 = runner.result(system, "job", v2, timeout_s=180)
    old_name = base["step_name"] if rename == "step" else base["source_name"]
    if "error" in r2:
        err = r2["error"]
        named = old_name in err
        return {
            "outcome": ("refuses, naming the old " if named else "fails (without naming it): ") + (rename if named else err[:120]),
            "error": err[:400],
        }
    rows = read_outputs(Path(base["out"]))
    truth = Counter(w for line in lines for w in line.split())
    only_second = Counter(w for line in second for w in line.split())
    last: dict[str, int] = {}
    for w, c in rows:
        last[w] = c
    # Judged on the words of the second half: the restarted job outputs each of them.
    if all(last.get(w, 0) == truth[w] for w in only_second):
        outcome = "restarts, counts right"
    elif all(last.get(w, 0) == c for w, c in only_second.items()):
        outcome = "restarts silently, old counts dropped (counts start from 0)"
    elif all(last.get(w, 0) >= truth[w] for w in only_second):
        outcome = "restarts silently, input counted twice"
    else:
        outcome = "restarts silently, wrong counts"
    return {"outcome": outcome, "final_over_true": round(sum(last.get(w, 0) for w in only_second) / sum(truth[w] for w in only_second), 3)}


# --------------------------------------------------------------------------- main


class Row:
    def __init__(self, label: str, unit: str, higher_better: bool | None, systems: list[str]) -> None:
        self.label, self.unit, self.higher_better = label, unit, higher_better
        self.vals: dict[str, list[float]] = {s: [] for s in systems}
        self.text: dict[str, str] = {}

    def add(self, system: str, v: Any) -> None:
        if isinstance(v, (int, float)) and not isinstance(v, bool):
            self.vals[system].append(float(v))

    def cell(self, system: str) -> str:
        if system in self.text:
            return self.text[system]
        return P.summary(self.vals[system], self.unit)

    def ratio(self, peer: str) -> str:
        a, b = self.vals.get(peer), self.vals.get(SK)
        if self.higher_better is None or not a or not b:
            return "-"
        ma, mb = statistics.median(a), statistics.median(b)
        if ma <= 0 or mb <= 0:
            return "-"
        return f"{(mb / ma if self.higher_better else ma / mb):.3g}x"


def print_table(rows: list[Row], systems: list[str]) -> str:
    peers = [s for s in systems if s != SK]
    head = ["workload", *(NAMES[s] for s in systems), *(f"vs {NAMES[p].split()[0]}" for p in peers)]
    body = [[r.label, *(r.cell(s) for s in systems), *(r.ratio(p) for p in peers)] for r in rows]
    widths = [max(len(x[i]) for x in [head, *body]) for i in range(len(head))]
    lines = [
        "| " + " | ".join(h.ljust(w) for h, w in zip(head, widths, strict=True)) + " |",
        "|" + "|".join("-" * (w + 2) for w in widths) + "|",
    ]
    lines += ["| " + " | ".join(c.ljust(w) for c, w in zip(b, widths, strict=True)) + " |" for b in body]
    text = "\n".join(lines)
    print(text, flush=True)
    return text


def breakdown(res: dict[str, Any]) -> str:
    """One throughput run's wall, CPU, fsync and steal figures (`_peers_side.Meter`) on one line."""
    parts = [f"wall {res['seconds']:.3f} s"]
    if "cpu_s" in res:
        parts.append(f"cpu {res['cpu_s']:.3f} s (main thread {res['main_cpu_s']:.3f}, kernel {res.get('sys_s', 0.0):.3f})")
    if "fsyncs" in res:
        parts.append(f"{res['fsyncs']} fsyncs {res['fsync_s'] * 1e3:.0f} ms")
    if res.get("steal_pct") is not None:
        parts.append(f"steal {res['steal_pct']:.1f}% iowait {res['iowait_pct']:.1f}%")
    if "gc_collections" in res:
        parts.append(f"gc {res['gc_collections']}")
    return ", ".join(parts)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="small sizes, 2 runs")
    ap.add_argument("--runs", type=int, default=None, help="runs per figure (default 3; --quick 2)")
    ap.add_argument("--only", default="", help="comma list of: throughput,startup,recovery,codechange")
    ap.add_argument("--skip", default="", help="comma list of systems to skip: bytewax,quix")
    ap.add_argument("--json", default=None, help="also write every raw result to this file")
    ap.add_argument("--quix-words", type=int, default=200_000, help="words of Quix's Kafka throughput topic (see the docs)")
    ap.add_argument(
        "--editable", action="store_true", help="run streamkeep's children with the project's venv, editable import hook included (the default before 2026-12-04)"
    )
    ap.add_argument("--repeat-limit-s", type=float, default=120.0, help="a Kafka throughput run longer than this is not repeated")
    args = ap.parse_args(argv)
    runs = args.runs or (2 if args.quick else 3)
    s = sizes(args.quick)
    only = [w for w in args.only.split(",") if w] or ["throughput", "startup", "recovery", "codechange"]
    skip = {x for x in args.skip.split(",") if x}

    from _kafka_mock import KafkaMockProcess

    precompile()
    pythons = {SK: P.streamkeep_python(None)}
    problem = P.streamkeep_problem(pythons[SK])
    if problem is not None:
        say(f"streamkeep does not import with {pythons[SK]}: {problem}")
        return 2
    if not args.editable:
        pythons[SK], why = installed_python(pythons[SK])
        if why is not None:
            say(f"[streamkeep] {why}; the children run with the project's venv (its editable import hook included)")
    unavailable: dict[str, str] = {}
    for system in (BW, QX):
        if system in skip:
            unavailable[system] = "skipped"
            continue
        py, why = ensure_venv(system)
        if py is None:
            say(f"[{system}] not available: {why}")
            unavailable[system] = f"not available: {why}"
        else:
            pythons[system] = py
    systems = [SK, BW, QX]
    running = [x for x in systems if x in pythons]

    t_start = time.time()
    log_dir = Path(tempfile.mkdtemp(prefix="sk-peers-logs-"))
    work_root = Path(tempfile.mkdtemp(prefix="sk-peers-work-"))
    runner = Runner(pythons, log_dir)
    kafka = KafkaMockProcess(brokers=1)
    boot = kafka.bootstrap
    raw: dict[str, Any] = {"sizes": s, "results": []}
    rows: list[Row] = []

    def row(label: str, unit: str, higher: bool | None) -> Row:
        r = Row(label, unit, higher, systems)
        for x, why in unavailable.items():
            r.text[x] = why
        rows.append(r)
        return r

    words = s["words"]
    tp_mem: dict[str, Row] = {}
    tp_kafka = tp_kafka_tables = r_start = tp_quix_row = None
    if "throughput" in only:
        for variant, how in (
            ("word", "every word keyed by the engine"),
            ("batch", "words pre-counted per source batch"),
            ("tables", "streamkeep table API (to_tables + aggregate_state) vs Bytewax's faster row above"),
        ):
            r = row(f"(a) word count, {words // 1000}k words from memory, {how} [words/s]", "w/s", True)
            r.text[QX] = "n/a (reads Kafka only)"
            tp_mem[variant] = r
        tp_kafka = row(
            f"(a) word count, {words // 1000}k words from Kafka (mock broker, {PARTITIONS} partitions), every word keyed [words/s]",
            "w/s",
            True,
        )
        tp_kafka_tables = row(
            f"(a) word count, {words // 1000}k words from Kafka, streamkeep table API vs Bytewax's row above [words/s]", "w/s", True
        )
        tp_kafka_tables.text[QX] = "see the Quix row"
        topic = "tp-words"
        kafka.create_topic(topic, PARTITIONS)
        lines = C.make_lines(words, s["distinct"])
        produce_lines(boot, topic, lines)
        if QX in running and args.quix_words < words:
            # Quix re-keys through a repartition topic: ~1 message per distinct word of a line. The
            # mock broker keeps ~100k message sets per partition and drops older ones, so at 1M words
            # Quix loses repartitioned words before reading them (offset resets): it reads a smaller topic.
            kafka.create_topic("tp-words-quix", PARTITIONS)
            produce_lines(boot, "tp-words-quix", lines[: args.quix_words // C.WORDS_PER_LINE])
            tp_quix_row = row(
                f"(a) word count, {args.quix_words // 1000}k words from Kafka (mock broker, {PARTITIONS} partitions), every word keyed [words/s]",
                "w/s",
                True,
            )
            tp_quix_row.text.setdefault(BW, "not run (see the row above)")
    if "startup" in only:
        r_start = row("(b) start-up: process start -> first output (Kafka source)", "s", False)
        kafka.create_topic("startup", PARTITIONS)
        produce_lines(boot, "startup", C.make_lines(s["startup_lines"] * C.WORDS_PER_LINE, 100))
    rec_rows: dict[str, Row] = {}
    if "recovery" in only:
        rec_rows = {
            "restart_s": row("(c) SIGKILL mid-run, restart -> first new output", "s", False),
            "duplicates": row("(c) duplicated outputs (same word and count written twice)", "n", None),
            "under": row("(c) words whose final count is too low (missing input)", "n", None),
            "over": row("(c) words whose final count is too high (input counted twice)", "n", None),
        }
    cc_rows: dict[str, Row] = {}
    if "codechange" in only:
        cc_rows = {
            "step": row("(d) restart with the stateful step renamed", "", None),
            "source": row("(d) restart with the source renamed", "", None),
        }

    slow: dict[str, bool] = {}
    n_runs: Counter[str] = Counter()

    def record(task: str, system: str, res: dict[str, Any]) -> None:
        raw["results"].append({"task": task, "system": system, **res})
        if "error" in res:
            say(f"    [{system}] {task}: {res['error']}")

    for i in range(runs):
        for system in running:
            for variant, r in tp_mem.items():
                if system == QX or (variant == "tables" and system != SK):
                    continue
                say(f"[{time.time() - t_start:5.0f}s] throughput (memory, {variant}) run {i + 1}: {system}")
                p = {"words": words, "distinct": s["distinct"], "batch_lines": s["batch_lines"], "variant": variant}
                res = runner.result(system, "throughput_mem", p)
                record(f"throughput_mem_{variant}", system, res)
                if "seconds" in res:
                    r.add(system, words / res["seconds"])
                    say(f"    {system} {variant}: {breakdown(res)}")
                elif not r.vals[system]:
                    r.text[system] = f"error: {res['error']}"[:80]
            if tp_kafka is not None and not (i and slow.get(system)):
                say(f"[{time.time() - t_start:5.0f}s] throughput (Kafka) run {i + 1}: {system}")
                small = system == QX and tp_quix_row is not None
                p = {
                    "bootstrap": boot,
                    "topic": "tp-words-quix" if small else "tp-words",
                    "partitions": PARTITIONS,
                    "batch_lines": s["batch_lines"],
                    "lines": (args.quix_words if small else words) // C.WORDS_PER_LINE,
                    "interval_s": 1.0,
                }
                t0 = time.time()
                res = runner.result(system, "throughput_kafka", p, timeout_s=900)
                if time.time() - t0 > args.repeat_limit_s:  # one run only (Quix: minutes at 1M words)
                    slow[system] = True
                    say(f"    [{system}] took {time.time() - t0:.0f} s: not repeated")
                n_runs[f"throughput_kafka {system}"] += 1
                record("throughput_kafka", system, res)
                target = tp_quix_row if small else tp_kafka
                if small:
                    tp_kafka.text[QX] = f"see the {args.quix_words // 1000}k-word row"
                if "seconds" in res:
                    target.add(system, p["lines"] * C.WORDS_PER_LINE / res["seconds"])
                elif not target.vals[system]:
                    target.text[system] = f"error: {res['error']}"[:80]
            if tp_kafka_tables is not None and system == SK:
                say(f"[{time.time() - t_start:5.0f}s] throughput (Kafka, table API) run {i + 1}: {system}")
                p = {
                    "bootstrap": boot,
                    "topic": "tp-words",
                    "partitions": PARTITIONS,
                    "batch_lines": s["batch_lines"],
                    "lines": words // C.WORDS_PER_LINE,
                    "interval_s": 1.0,
                    "variant": "tables",
                }
                res = runner.result(system, "throughput_kafka", p, timeout_s=900)
                record("throughput_kafka_tables", system, res)
                if "seconds" in res:
                    tp_kafka_tables.add(system, words / res["seconds"])
                elif not tp_kafka_tables.vals[system]:
                    tp_kafka_tables.text[system] = f"error: {res['error']}"[:80]
            if tp_quix_row is not None and system == SK:  # the same smaller topic, for the ratio with Quix
                say(f"[{time.time() - t_start:5.0f}s] throughput (Kafka, {args.quix_words // 1000}k words) run {i + 1}: {system}")
                p = {
                    "bootstrap": boot,
                    "topic": "tp-words-quix",
                    "partitions": PARTITIONS,
                    "batch_lines": s["batch_lines"],
                    "lines": args.quix_words // C.WORDS_PER_LINE,
                    "interval_s": 1.0,
                }
                res = runner.result(system, "throughput_kafka", p)
                record("throughput_kafka_small", system, res)
                if "seconds" in res:
                    tp_quix_row.add(system, args.quix_words / res["seconds"])
            if r_start is not None:
                say(f"[{time.time() - t_start:5.0f}s] start-up run {i + 1}: {system}")
                work = work_root / f"startup-{system}-{i}"
                events = work / "events.txt"
                work.mkdir(parents=True)
                p = {
                    "bootstrap": boot, "topic": "startup", "partitions": PARTITIONS, "batch_lines": s["batch_lines"], "interval_s": s["interval_s"],
                    "commit_interval_s": s["interval_s"], "state": str(work / "state"), "out": str(work / "out"), "events": str(events),
                    "stop": "idle", "lines": s["startup_lines"], "source_name": f"startup_{system}_{i}_{uuid.uuid4().hex[:6]}",
                }  # fmt: skip
                t0 = time.time()
                res = runner.result(system, "job", p, timeout_s=120)
                first = read_events(events)
                record("startup", system, {**res, "first_output_s": (min(first.values()) - t0) if first else None})
                if first:
                    r_start.add(system, min(first.values()) - t0)
                elif not r_start.vals[system]:
                    r_start.text[system] = f"error: {res.get('error', 'no output')}"[:80]
            if rec_rows:
                say(f"[{time.time() - t_start:5.0f}s] recovery run {i + 1}: {system}")
                work = work_root / f"rec-{system}-{i}"
                work.mkdir(parents=True)
                res = recovery_run(runner, system, s, boot, work, kafka)
                record("recovery", system, res)
                for key, r in rec_rows.items():
                    if key in res:
                        r.add(system, res[key])
                    elif "error" in res and not r.vals[system]:
                        r.text[system] = f"error: {res['error']}"[:80]
            if cc_rows and i == 0:
                for rename, r in cc_rows.items():
                    if system == QX and rename == "step":
                        r.text[QX] = "n/a: steps have no names (state: topic + store 'default')"
                        continue
                    say(f"[{time.time() - t_start:5.0f}s] code change ({rename} renamed): {system}")
                    work = work_root / f"cc-{system}-{rename}"
                    work.mkdir(parents=True)
                    res = codechange_run(runner, system, s, boot, work, kafka, rename)
                    record(f"codechange-{rename}", system, res)
                    r.text[system] = res["outcome"]
    kafka.close()
    mem_runs = [x for x in raw["results"] if str(x["task"]).startswith("throughput_mem_") and "seconds" in x]
    if mem_runs:  # what the wall figures hide: CPU, the checkpoint's fsyncs, the machine's steal (docs/comparison-peers.md)
        print("\nthroughput from memory, per run (wall; CPU of the process, its main thread's and its kernel time; fsyncs from Python; the machine's steal and I/O wait meanwhile):")
        for x in mem_runs:
            print(f"  {x['system']:10} {x['task'][len('throughput_mem_'):]:6} {breakdown(x)}")
    if "tables" in tp_mem and BW in running:  # the table row is compared with Bytewax's faster in-memory row
        best = max((tp_mem["word"], tp_mem["batch"]), key=lambda r: statistics.median(r.vals[BW]) if r.vals[BW] else 0.0)
        tp_mem["tables"].vals[BW] = list(best.vals[BW])
        tp_mem["tables"].text[BW] = "= " + best.cell(BW)
    if tp_kafka_tables is not None and tp_kafka is not None and BW in running:
        tp_kafka_tables.vals[BW] = list(tp_kafka.vals[BW])
        tp_kafka_tables.text[BW] = "= " + tp_kafka.cell(BW)
    total = time.time() - t_start
    print()
    print(
        f"streamkeep vs Bytewax and Quix Streams ({'--quick' if args.quick else 'default sizes'}; median (min-max) over {runs} runs; ratio > 1 means streamkeep is better)"
    )
    raw["table"] = print_table(rows, systems)
    print(f"\nKafka throughput runs: {', '.join(f'{k}: {v}' for k, v in sorted(n_runs.items()))}; other rows: {runs} runs each, (d) one")
    print(f"total {total:.0f} s; child logs in {log_dir}")
    raw["total_s"] = total
    if args.json:
        Path(args.json).write_text(json.dumps(raw, indent=1, default=str), encoding="utf-8")
    shutil.rmtree(work_root, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
