"""Side-by-side benchmarks: streamkeep against PySpark Streaming (issue 7).

    python bench/compare_pyspark.py            # default sizes (< 15 min on 2 cores)
    python bench/compare_pyspark.py --quick    # small sizes, 2 runs (about 4 min)

On first use this creates bench/.pyspark-venv (PySpark 4.x from PyPI; never the
project's venv) and checks for Java 17+. Each run starts fresh subprocesses per
system: PySpark under the pyspark venv's python (local[2], checkpointing on),
streamkeep under the project's python (.venv/bin/python, else this interpreter).
Runs of the two systems alternate. Up to --runs runs per figure: the first run of
everything always happens, repeats only while the time budget allows (PySpark is
the slow side; streamkeep's runs are cheap). The table shows the median over runs
with the spread (min-max) and the ratio, written so that > 1 means streamkeep is
better. Methods: bench/README.md.
Standard library only.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))
import _common as C  # noqa: E402

VENV = HERE / ".pyspark-venv"
PYSPARK_SPEC = "pyspark>=4,<5"
PS, SK = "pyspark", "streamkeep"
SCRIPTS = {PS: HERE / "_pyspark_side.py", SK: HERE / "_streamkeep_side.py"}


def say(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


# --------------------------------------------------------------------------- environment

def java_problem() -> str | None:
    """None if Java 17+ is there, else what is wrong and how to fix it."""
    java = shutil.which("java")
    if os.environ.get("JAVA_HOME"):
        cand = Path(os.environ["JAVA_HOME"]) / "bin" / "java"
        java = str(cand) if cand.exists() else java
    fix = "install it (Debian/Ubuntu: apt-get install -y openjdk-17-jre-headless) or set JAVA_HOME"
    if java is None:
        return f"no Java found: PySpark 4 needs Java 17+; {fix}"
    try:
        out = subprocess.run([java, "-version"], capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"cannot run {java} -version ({exc}); {fix}"
    m = re.search(r'version "(\d+)(?:\.(\d+))?', out.stderr + out.stdout)
    if not m:
        return f"cannot read the Java version from {java} -version; {fix}"
    major = int(m.group(1)) if m.group(1) != "1" else int(m.group(2) or 0)
    if major < 17:
        return f"Java {major} found at {java}; PySpark 4 needs Java 17+: {fix}"
    return None


def venv_python(venv: Path) -> Path:
    return venv / ("Scripts/python.exe" if os.name == "nt" else "bin/python")


def ensure_pyspark_venv() -> tuple[str | None, str | None]:
    """(python of bench/.pyspark-venv, None), creating it on first use; or (None, problem)."""
    py = venv_python(VENV)
    probe = [str(py), "-c", "import pyspark, sys; sys.stdout.write(pyspark.__version__)"]
    if py.exists():
        r = subprocess.run(probe, capture_output=True, text=True)
        if r.returncode == 0 and r.stdout.startswith("4."):
            return str(py), None
    base = getattr(sys, "_base_executable", None) or sys.executable
    say(f"[setup] creating {VENV.relative_to(ROOT)} with {PYSPARK_SPEC} (first use; ~450 MB, a few minutes)")
    try:
        if not py.exists():
            subprocess.run([base, "-m", "venv", str(VENV)], check=True)
        subprocess.run([str(py), "-m", "pip", "install", "--quiet", "--disable-pip-version-check",
                        PYSPARK_SPEC], check=True)
    except (OSError, subprocess.CalledProcessError) as exc:
        return None, f"could not create the PySpark venv {VENV}: {exc}"
    r = subprocess.run(probe, capture_output=True, text=True)
    if r.returncode != 0:
        return None, f"PySpark does not import in {VENV}: {r.stderr.strip()[-300:]}"
    return str(py), None


def streamkeep_python(explicit: str | None) -> str:
    if explicit:
        return explicit
    proj = venv_python(ROOT / ".venv")
    return str(proj) if proj.exists() else sys.executable


def streamkeep_problem(py: str) -> str | None:
    r = subprocess.run([py, "-c", "import streamkeep; streamkeep.StreamingContext"],
                       capture_output=True, text=True, cwd=str(ROOT))
    if r.returncode == 0:
        return None
    last = (r.stderr.strip().splitlines() or ["import failed"])[-1]
    return last


# --------------------------------------------------------------------------- child processes

class Runner:
    """Starts side scripts as subprocesses (own session, so SIGKILL takes the JVM too)."""

    def __init__(self, pythons: dict[str, str], log_dir: Path) -> None:
        self.pythons = pythons
        self.log_dir = log_dir
        self.n = 0

    def env(self, side: str, tmp: Path) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
        env["PYTHONUNBUFFERED"] = "1"
        env["TMPDIR"] = str(tmp)  # the children's checkpoint dirs; removed by run()
        if side == PS:
            env["PYSPARK_PYTHON"] = self.pythons[PS]
            env["PYSPARK_DRIVER_PYTHON"] = self.pythons[PS]
        else:
            env["PYTHONPATH"] = str(ROOT)
        return env

    def launch(self, side: str, workload: str, params: dict[str, Any]) -> tuple[subprocess.Popen[str], Path]:
        self.n += 1
        log = self.log_dir / f"{self.n:03d}-{side}-{workload}.log"
        tmp = self.log_dir / f"tmp-{self.n:03d}"
        tmp.mkdir()
        err = open(log, "w", encoding="utf-8")  # noqa: SIM115 (closed by the child's exit)
        proc = subprocess.Popen(
            [self.pythons[side], str(SCRIPTS[side]), workload, json.dumps(params)],
            stdout=subprocess.PIPE, stderr=err, text=True, cwd=str(ROOT),
            env=self.env(side, tmp), start_new_session=True)
        err.close()
        return proc, log

    def suite(self, side: str, params: dict[str, Any],
              timeout_s: float = 2400) -> dict[str, dict[str, Any]]:
        """Run the parts in one child; {part: result} (a failed child gives every part an error)."""
        t0 = time.time()
        proc, log = self.launch(side, "suite", params)
        tmp = self.log_dir / f"tmp-{self.n:03d}"
        try:
            out, _ = proc.communicate(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            kill_group(proc)
            out, _ = proc.communicate()
            out += "\n" + C.RESULT_MARK + json.dumps({"error": f"timed out after {timeout_s:.0f} s"})
        finally:
            kill_group(proc)  # leftovers (a JVM) of a finished child
            shutil.rmtree(tmp, ignore_errors=True)
        got: dict[str, dict[str, Any]] = {}
        for res in C.parse_results(out):
            if "part" in res:
                res["_t0"] = t0
                got[res["part"]] = res
            else:  # streamkeep unavailable, or a timeout
                for part in params["parts"]:
                    got.setdefault(part, res)
        for part in params["parts"]:
            got.setdefault(part, {"error": f"exit {proc.returncode}: {tail(log)} (log: {log})"})
        return got


def kill_group(proc: subprocess.Popen[Any], sig: int = signal.SIGKILL) -> None:
    try:
        os.killpg(proc.pid, sig)
    except (ProcessLookupError, PermissionError):
        pass


def tail(log: Path, n: int = 1) -> str:
    try:
        lines = [ln.strip() for ln in log.read_text(encoding="utf-8", errors="replace").splitlines()
                 if ln.strip() and not ln.startswith(("\tat ", "    at ")) and "WARN" not in ln]
    except OSError:
        return "?"
    interesting = [ln for ln in lines if re.search(r"(Error|Exception)\b", ln)]
    return " | ".join((interesting or lines or ["no output"])[-n:])[:300]


# --------------------------------------------------------------------------- redis (exactly-once sink)

class RedisServer:
    """A throw-away redis-server on 127.0.0.1 for streamkeep's RedisSink check."""

    def __init__(self) -> None:
        self.proc: subprocess.Popen[bytes] | None = None
        self.port = 0
        self.problem: str | None = None

    def start(self) -> bool:
        exe = shutil.which("redis-server")
        if exe is None:
            self.problem = "no redis-server (Debian: apt-get install -y redis-server)"
            return False
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        self.proc = subprocess.Popen(
            [exe, "--bind", "127.0.0.1", "--port", str(self.port), "--save", "",
             "--appendonly", "no"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.time() + 10
        while time.time() < deadline:
            try:
                if self.command("PING") == "PONG":
                    return True
            except OSError:
                time.sleep(0.05)
        self.problem = "redis-server did not answer"
        self.stop()
        return False

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def command(self, *args: str) -> Any:
        """One RESP command; returns a str, an int or a list of str (enough for LRANGE)."""
        req = f"*{len(args)}\r\n" + "".join(f"${len(a.encode())}\r\n{a}\r\n" for a in args)
        with socket.create_connection(("127.0.0.1", self.port), timeout=5) as sock:
            sock.sendall(req.encode())
            f = sock.makefile("rb")

            def read() -> Any:
                line = f.readline().decode().rstrip("\r\n")
                kind, rest = line[:1], line[1:]
                if kind in "+-":
                    return rest
                if kind == ":":
                    return int(rest)
                if kind == "$":
                    return None if rest == "-1" else f.read(int(rest) + 2)[:-2].decode()
                return [read() for _ in range(int(rest))]
            return read()

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.terminate()
            self.proc.wait(timeout=10)
            self.proc = None


# --------------------------------------------------------------------------- restart workloads

class Feeder(threading.Thread):
    """Moves a new file of word lines into the input directory every interval."""

    def __init__(self, directory: Path, interval_s: float, lines_per_file: int) -> None:
        super().__init__(daemon=True)
        self.directory = directory
        self.staging = directory.parent / (directory.name + ".staging")
        self.staging.mkdir(parents=True, exist_ok=True)
        self.interval_s = interval_s
        self.lines = C.make_lines(lines_per_file * C.WORDS_PER_LINE, 100)
        self.stop_event = threading.Event()
        self.files = 0

    def run(self) -> None:
        while not self.stop_event.wait(self.interval_s):
            self.files += 1
            name = f"part-{self.files:06d}.txt"
            tmp = self.staging / name
            tmp.write_text("\n".join(self.lines) + "\n", encoding="utf-8")
            os.replace(tmp, self.directory / name)

    def stop(self) -> None:
        self.stop_event.set()
        self.join()


def read_out(path: Path) -> list[dict[str, Any]]:
    """Recorder lines: pid version kind batch_ms value wall."""
    rows = []
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return rows
    for line in text.splitlines():
        f = line.split()
        if len(f) == 6:
            rows.append({"pid": int(f[0]), "version": f[1], "kind": f[2], "ms": int(f[3]),
                         "value": int(f[4]), "wall": float(f[5])})
    return rows


def wait_rows(path: Path, pid: int, n: int, proc: subprocess.Popen[Any], timeout_s: float) -> bool:
    deadline = time.time() + timeout_s
    while time.time() < deadline:
        if sum(1 for r in read_out(path) if r["pid"] == pid and r["kind"] == "state") >= n:
            return True
        if proc.poll() is not None:
            return False
        time.sleep(0.05)
    return False


def restart_once(runner: Runner, side: str, p: dict[str, Any], work: Path,
                 version2: str = "v1", record_words: bool = False,
                 extra: dict[str, Any] | None = None) -> dict[str, Any]:
    """Run the job, SIGKILL it inside a batch, restart it from its checkpoint.

    The restarted job runs `version2` of the code. Returns the recorder rows, the
    two pids and the restart time, or {"error": ...}.
    """
    inp, out = work / "input", work / "out.txt"
    inp.mkdir(parents=True)
    params = dict(p, ckpt=str(work / "ckpt"), input=str(inp), out=str(out),
                  record_words=record_words, **(extra or {}))
    feeder = Feeder(inp, p["interval_s"], p["lines_per_file"])
    feeder.start()
    try:
        p1, log1 = runner.launch(side, "restart_job", dict(params, version="v1"))
        if not wait_rows(out, p1.pid, p["batches_before_kill"], p1, 300):
            kill_group(p1)
            return {"error": f"first run produced no output: {tail(log1)} (log: {log1})"}
        # Kill right after the job wrote a batch's output, before that batch can be
        # committed: the window in which an at-least-once system re-runs the batch.
        size = out.stat().st_size
        deadline = time.time() + 60
        while out.stat().st_size == size and time.time() < deadline:
            time.sleep(0.0005)
        kill_group(p1)
        p1.wait()
        t_restart = time.time()
        p2, log2 = runner.launch(side, "restart_job", dict(params, version=version2))
        ok = wait_rows(out, p2.pid, p["batches_after_restart"], p2, 300)
        kill_group(p2)
        p2.wait()
    finally:
        feeder.stop()
    rows = read_out(out)
    if not ok and not any(r["pid"] == p2.pid for r in rows):
        return {"error": f"restart produced no output: {tail(log2)} (log: {log2})",
                "rows": rows, "pid1": p1.pid, "pid2": p2.pid, "rc2": p2.returncode,
                "err2": tail(log2)}
    return {"rows": rows, "pid1": p1.pid, "pid2": p2.pid, "t_restart": t_restart,
            "rc2": p2.returncode, "err2": tail(log2)}


def recovery_figures(run: dict[str, Any], interval_s: float) -> dict[str, Any]:
    """Restart time, and batch times output twice / never by the recorder."""
    rows = [r for r in run["rows"] if r["kind"] == "state"]
    before = [r for r in rows if r["pid"] == run["pid1"]]
    after = [r for r in rows if r["pid"] == run["pid2"]]
    last_before = max((r["ms"] for r in before), default=0)
    first_new = next((r for r in after if r["ms"] > last_before), None)
    counts = Counter(r["ms"] for r in rows)
    times = sorted(counts)
    step = round(interval_s * 1000)
    missing = sum((b - a) // step - 1 for a, b in zip(times, times[1:], strict=False) if b - a > step)
    # A job that is up before its next batch time waits for it: that wait is the
    # batch interval's doing, not recovery's.
    wait = max(0.0, after[0]["ms"] / 1000 - run["t_restart"])
    return {"restart_s": after[0]["wall"] - run["t_restart"], "wait_s": wait,
            "restart_busy_s": after[0]["wall"] - run["t_restart"] - wait,
            "restart_new_s": first_new["wall"] - run["t_restart"] if first_new else None,
            "duplicates": sum(1 for c in counts.values() if c > 1), "missing": missing,
            "batches": len(times), "replayed": sorted(ms for ms, c in counts.items() if c > 1)}


def classify_codechange(run: dict[str, Any]) -> dict[str, Any]:
    """What ran after the restart: which update function, on which state."""
    rows, pid1, pid2, rc2, err = run["rows"], run["pid1"], run["pid2"], run["rc2"], run["err2"]
    words = {(r["pid"], r["ms"]): r["value"] for r in rows if r["kind"] == "words"}
    st1 = [r for r in rows if r["pid"] == pid1 and r["kind"] == "state"]
    st2 = [r for r in rows if r["pid"] == pid2 and r["kind"] == "state"]
    if not st2:
        what = f"fails at restart: {err}" if rc2 not in (0, None, -9) else f"no output: {err}"
        return {"outcome": what}
    tags = sorted({r["version"] for r in rows if r["pid"] == pid2})
    mults = []
    prev = st2[0]["value"]
    for r in st2[1:]:
        w = words.get((pid2, r["ms"]))
        if w:
            mults.append((r["value"] - prev) / w)
        prev = r["value"]
    mult = statistics.median(mults) if mults else None
    # The state just before the first batch the restarted job output (it may re-run
    # batches the first job already output).
    t_first = st2[0]["ms"]
    old = max(((r["ms"], r["value"]) for r in st1 if r["ms"] < t_first), default=(0, 0))[1]
    first, w1 = st2[0]["value"], words.get((pid2, t_first), 0)
    m = mult if mult is not None else 1
    if abs(first - (old + m * w1)) < 1e-6 * max(1, first) or (w1 == 0 and first >= old > 0):
        state = "old state"
    elif abs(first - m * w1) < 1e-6 * max(1, first):
        state = "state dropped"
    else:
        state = f"state {first} vs {old} before"
    if mult is None:
        code = "code unknown (empty batches)"
    elif round(mult) == 1000:
        code = "new code"
    elif round(mult) == 1:
        code = "old code"
    else:
        code = f"update x{mult:g}"
    if code == "new code" and state == "old state":
        outcome = "new code runs with the old state"
    elif code == "old code" and state == "old state":
        outcome = "old code runs silently (with the old state)"
    elif code == "new code" and state == "state dropped":
        outcome = "new code runs, old state silently dropped"
    else:
        outcome = f"{code}, {state}"
    return {"outcome": outcome, "output_tags_after_restart": tags, "update_multiplier": mult,
            "state_before": old, "first_state_after": first}


# --------------------------------------------------------------------------- table

def fmt(v: float | None, unit: str) -> str:
    if v is None:
        return "-"
    if unit == "w/s":
        return f"{v / 1e6:.2f}M" if v >= 1e6 else f"{v / 1e3:.1f}k"
    if unit == "s":
        if v < 1e-3:
            return f"{v * 1e6:.0f}us"
        if v < 1:
            return f"{v * 1e3:.3g}ms"
        return f"{v:.3g}s"
    if unit == "B":
        for u, d in (("MB", 1e6), ("KB", 1e3)):
            if v >= d:
                return f"{v / d:.3g}{u}"
        return f"{v:.0f}B"
    if unit == "n":
        return f"{v:g}"
    return f"{v:.3g}"


def summary(vals: list[float], unit: str) -> str:
    if not vals:
        return "-"
    med = statistics.median(vals)
    if len(vals) == 1:
        return f"{fmt(med, unit)} (1 run)"
    return f"{fmt(med, unit)} ({fmt(min(vals), unit)}-{fmt(max(vals), unit)})"


class Row:
    def __init__(self, label: str, unit: str, higher_better: bool | None) -> None:
        self.label, self.unit, self.higher_better = label, unit, higher_better
        self.vals: dict[str, list[float]] = {PS: [], SK: []}
        self.notes: dict[str, str] = {}
        self.text: dict[str, str] = {}

    def add(self, side: str, value: Any) -> None:
        if isinstance(value, (int, float)):
            self.vals[side].append(float(value))

    def cell(self, side: str) -> str:
        if side in self.text:
            return self.text[side]
        if not self.vals[side] and side in self.notes:
            return self.notes[side]
        return summary(self.vals[side], self.unit)

    def ratio(self) -> str:
        a, b = self.vals[PS], self.vals[SK]
        if self.higher_better is None or not a or not b:
            return "-"
        ma, mb = statistics.median(a), statistics.median(b)
        if ma <= 0 or mb <= 0:
            return "-"
        r = mb / ma if self.higher_better else ma / mb
        return f"{r:.3g}x"


def print_table(rows: list[Row], out: Any = sys.stdout) -> str:
    head = ("workload", "PySpark Streaming", "streamkeep", "streamkeep vs PySpark")
    body = [(r.label, r.cell(PS), r.cell(SK), r.ratio()) for r in rows]
    widths = [max(len(x[i]) for x in [head, *body]) for i in range(4)]
    lines = ["| " + " | ".join(h.ljust(w) for h, w in zip(head, widths, strict=True)) + " |",
             "|" + "|".join("-" * (w + 2) for w in widths) + "|"]
    lines += ["| " + " | ".join(c.ljust(w) for c, w in zip(b, widths, strict=True)) + " |" for b in body]
    text = "\n".join(lines)
    print(text, file=out, flush=True)
    return text


# --------------------------------------------------------------------------- main

def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="small sizes, 2 runs (~4 min)")
    ap.add_argument("--runs", type=int, default=None,
                    help="runs per figure when the budget allows (3; --quick 2)")
    ap.add_argument("--budget-min", type=float, default=None,
                    help="stop repeating PySpark runs past this (default 13.5; --quick 5)")
    ap.add_argument("--only", default="", help="comma list of: startup,throughput,latency,"
                    "checkpoint,recovery,codechange")
    ap.add_argument("--skip", default="", help="comma list of systems to skip: pyspark,streamkeep")
    ap.add_argument("--streamkeep-python", default=None, help="python that imports streamkeep")
    ap.add_argument("--json", default=None, help="also write every raw result to this file")
    args = ap.parse_args(argv)

    t_setup = time.time()
    args.runs = args.runs or (2 if args.quick else 3)
    sizes = C.sizes(args.quick)
    budget_s = 60 * (args.budget_min or (5 if args.quick else 13.5))
    only = [w for w in args.only.split(",") if w] or [
        "startup", "throughput", "latency", "checkpoint", "recovery", "codechange"]
    skip = {s for s in args.skip.split(",") if s}

    pythons: dict[str, str] = {}
    unavailable: dict[str, str] = {}
    if PS in skip:
        unavailable[PS] = "skipped"
    else:
        problem = java_problem()
        py = None
        if problem is None:
            py, problem = ensure_pyspark_venv()
        if problem is not None:
            say(f"[pyspark] not available: {problem}")
            unavailable[PS] = f"not available: {problem}"
        else:
            pythons[PS] = str(py)
    if SK in skip:
        unavailable[SK] = "skipped"
    else:
        pythons[SK] = streamkeep_python(args.streamkeep_python)
        problem = streamkeep_problem(pythons[SK])
        if problem is not None:
            say(f"[streamkeep] not available: {problem}")
            unavailable[SK] = f"streamkeep: not available: {problem}"
    sides = [s for s in (PS, SK) if s not in unavailable]

    t_start = time.time()
    log_dir = Path(tempfile.mkdtemp(prefix="sk-bench-logs-"))
    work_root = Path(tempfile.mkdtemp(prefix="sk-bench-work-"))
    runner = Runner(pythons, log_dir)
    raw: dict[str, Any] = {"sizes": sizes, "results": []}
    rows: list[Row] = []
    took: dict[tuple[str, str], float] = {}  # (task, side) -> seconds of its first run
    n_runs: Counter[tuple[str, str]] = Counter()

    def new_row(label: str, unit: str, higher_better: bool | None) -> Row:
        row = Row(label, unit, higher_better)
        for side, why in unavailable.items():
            row.text[side] = why
        rows.append(row)
        return row

    def note(row: Row, side: str, res: dict[str, Any]) -> None:
        if "unavailable" in res:
            row.notes[side] = f"streamkeep: not available: {res['unavailable']}"
        elif "error" in res:
            row.notes[side] = f"error: {res['error']}"[:160]
            say(f"    [{side}] {row.label}: {res['error']}")

    def affordable(task: str, side: str) -> bool:
        """A repeat fits in the budget (first runs always happen)."""
        if (task, side) not in took:
            return True
        # streamkeep's runs take seconds: let them finish a round PySpark started.
        grace = 60 if side == SK else 0
        return time.time() - t_start + 1.1 * took[(task, side)] <= budget_s + grace

    def attempt(task: str, side: str, fn: Any) -> None:
        if not affordable(task, side):
            say(f"[{time.time() - t_start:6.0f}s] {task}: {side} skipped (time budget)")
            return
        n_runs[(task, side)] += 1
        say(f"[{time.time() - t_start:6.0f}s] {task} run {n_runs[(task, side)]}: {side}")
        t0 = time.time()
        fn(side, n_runs[(task, side)])
        took.setdefault((task, side), time.time() - t0)

    # ---- rows
    parts = [w for w in ("startup", "throughput", "latency", "checkpoint") if w in only]
    tp, ck = sizes["throughput"], sizes["checkpoint"]
    r_start = new_row("(3) start-up: process start -> first batch done", "s", False) \
        if "startup" in parts else None
    r_up = r_win = r_floor = r_tiny = None
    if "throughput" in parts:
        r_up = new_row(f"(1) updateStateByKey word count, {tp['words'] // 1000}k words/"
                       f"{tp['batches']} batches, {tp['distinct'] // 1000}k keys [words/s]",
                       "w/s", True)
        r_win = new_row(f"(1) reduceByKeyAndWindow + inverse, window {tp['window_batches']} "
                        f"batches [words/s]", "w/s", True)
    if "latency" in parts:
        r_floor = new_row("(2) latency floor: smallest interval a stateful job keeps up with",
                          "s", False)
        r_tiny = new_row("(2) per-batch overhead, tiny stateful batch (10 lines)", "s", False)
    ck_rows: dict[int, tuple[Row, Row, Row]] = {}
    if "checkpoint" in only:
        for n in ck["keys"] + ck.get("big_keys", []):
            label = f"{n // 1000}k" if n < 1_000_000 else f"{n // 1_000_000}M"
            ck_rows[n] = (
                new_row(f"(4) checkpoint, {label} keys, {ck['changed_per_batch']} changed/batch:"
                        f" bytes/batch, mean over a full-state period", "B", False),
                new_row(f"(4) checkpoint, {label} keys: bytes/batch, median batch", "B", False),
                new_row(f"(4) checkpoint, {label} keys: time/batch", "s", False))
    if "recovery" in only:
        r_rs = new_row("(5) recovery: SIGKILL, restart -> first batch done", "s", False)
        r_dup = new_row("(5) recovery: duplicated output batches, callback (foreachRDD/"
                        "foreach_batch appends to a file)", "n", None)
        r_miss = new_row("(5) recovery: missing output batches", "n", None)
        r_sink = new_row("(5) recovery: duplicated output batches, exactly-once sink "
                         "(RedisSink RPUSH)", "n", None)
        r_sink.text.setdefault(PS, "no such sink in Spark Streaming")
        redis = RedisServer()
        if SK in sides and not redis.start():
            r_sink.text[SK] = f"not run: {redis.problem}"
    if "codechange" in only:
        r_cc = new_row("(6) code change: restart with a new update function", "", None)

    # ---- tasks
    def handle_parts(side: str, got: dict[str, dict[str, Any]]) -> None:
        for res in got.values():
            raw["results"].append({"task": "suite", "side": side, **res})
        res = got.get("startup", {})
        if r_start is not None:
            if res.get("first_batch_done"):
                r_start.add(side, res["first_batch_done"] - res["_t0"])
            else:
                note(r_start, side, res)
        res = got.get("throughput", {})
        for row, key in ((r_up, "update"), (r_win, "window")):
            if row is not None:
                if key in res:
                    row.add(side, res[key]["steady_words_per_s"])
                else:
                    note(row, side, res)
        res = got.get("latency", {})
        for row, key in ((r_floor, "floor_s"), (r_tiny, "tiny_batch_s")):
            if row is None:
                continue
            if res.get(key) is not None:
                row.add(side, res[key])
            else:
                note(row, side, res if ("error" in res or "unavailable" in res)
                     else {"error": "no candidate interval kept up"})
        res = got.get("checkpoint", {})
        for n, (r_b, r_med, r_t) in ck_rows.items():
            if str(n) in res:
                r_b.add(side, res[str(n)]["bytes_per_batch"])
                r_med.add(side, res[str(n)]["median_batch_bytes"])
                r_t.add(side, res[str(n)]["ms_per_batch"] / 1e3)
            elif "checkpoint" in got and ("error" in res or "unavailable" in res):
                for row in (r_b, r_med, r_t):
                    note(row, side, res)

    def suite_task(side: str, i: int) -> None:
        params: dict[str, Any] = {"parts": parts, **{w: sizes[w] for w in parts}}
        handle_parts(side, runner.suite(side, params))

    def big_task(side: str, i: int) -> None:
        params = {"parts": ["checkpoint"], "checkpoint": dict(ck, keys=ck["big_keys"])}
        handle_parts(side, runner.suite(side, params))

    def recovery_task(side: str, i: int) -> None:
        rp = sizes["recovery"]
        extra = {}
        if side == SK and redis.proc is not None:
            extra = {"redis_url": redis.url, "redis_key": f"rec:{i}", "redis_sink": f"rec{i}"}
        run = restart_once(runner, side, rp, work_root / f"rec-{side}-{i}", extra=extra)
        if "error" in run:
            for row in (r_rs, r_dup, r_miss):
                note(row, side, run)
            raw["results"].append({"task": "recovery", "side": side, "error": run["error"]})
            return
        fig = recovery_figures(run, rp["interval_s"])
        raw["results"].append({"task": "recovery", "side": side, **fig})
        r_rs.add(side, fig["restart_s"])
        r_dup.add(side, fig["duplicates"])
        r_miss.add(side, fig["missing"])
        if extra:
            pushed = [int(x.split()[0]) for x in redis.command("LRANGE", extra["redis_key"], "0", "-1")]
            sink_dups = sum(1 for c in Counter(pushed).values() if c > 1)
            raw["results"][-1]["redis_sink"] = {"batches": len(set(pushed)), "duplicates": sink_dups}
            r_sink.add(side, sink_dups)

    def codechange_task(side: str, i: int) -> None:
        run = restart_once(runner, side, sizes["codechange"], work_root / f"cc-{side}",
                           version2="v2", record_words=True)
        res = classify_codechange(run) if "rows" in run else {"outcome": f"error: {run['error']}"}
        raw["results"].append({"task": "codechange", "side": side, **res})
        r_cc.text[side] = res["outcome"]

    # Round 1 runs everything once, round 2 repeats everything (so every figure has
    # two runs when the budget allows), later rounds add runs while time is left.
    big = bool(ck.get("big_keys")) and "checkpoint" in only
    rounds: list[list[tuple[str, Any]]] = []
    for i in range(args.runs):
        tasks: list[tuple[str, Any]] = []
        if parts:
            tasks.append(("suite", suite_task))
        if "recovery" in only:
            tasks.append(("recovery", recovery_task))
        if i == 0 and "codechange" in only:
            tasks.append(("codechange", codechange_task))
        if i < 2 and big:
            tasks.append(("checkpoint-big", big_task))
        rounds.append(tasks)
    if big:
        rounds += [[("checkpoint-big", big_task)] for _ in range(args.runs - 2)]
    for tasks in rounds:
        for task, fn in tasks:
            for side in sides:
                attempt(task, side, fn)

    if "recovery" in only:
        redis.stop()
    total = time.time() - t_start
    print()
    runs_note = ", ".join(f"{t} {s}: {n}" for (t, s), n in sorted(n_runs.items()))
    print(f"streamkeep vs PySpark Streaming ({'--quick' if args.quick else 'default sizes'}; "
          f"median (min-max) over runs; ratio > 1 means streamkeep is better)")
    rows.sort(key=lambda r: r.label[:3])  # (1) ... (6), creation order within each
    raw["table"] = print_table(rows)
    print(f"\nruns: {runs_note}")
    print(f"total {total:.0f} s (+{t_start - t_setup:.0f} s setup); child logs in {log_dir}")
    raw["total_s"] = total
    raw["runs"] = {f"{t}/{s}": n for (t, s), n in n_runs.items()}
    if args.json:
        Path(args.json).write_text(json.dumps(raw, indent=1, default=str), encoding="utf-8")
    shutil.rmtree(work_root, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
