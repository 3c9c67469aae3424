"""Where streamkeep's start-up and restart-after-SIGKILL go, phase by phase (issue 14.4 b/c).

    .venv/bin/python bench/restart_phases.py                 # 3 start-ups and 3 restarts
    .venv/bin/python bench/restart_phases.py --runs 5 --only restart

The job is ``compare_peers.py``'s (``_peers_side.sk_job``: Kafka word count, FileSink,
0.25 s interval, checkpoint every batch) on the same librdkafka mock broker. The child
(this file with ``--child``) wraps the engine's start-up steps with timers, then runs
the job unchanged; at its first output it writes every step's first call (start and
end, ms after the parent started the process). Start-up: a fresh state dir on a
10-line topic. Restart: a feeder produces 500 lines every 0.25 s, the job is SIGKILLed
2 s after its first output and restarted at once on the same state: the phases of the
restarted process are printed. Timers cost microseconds; the figures are wall times
(print `cat /proc/loadavg` next to them).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent


def child(params: dict[str, Any]) -> None:
    """Run sk_job with timers around its start-up steps; dump them at the first output."""
    t_main = time.time()
    t0 = float(params["t0"])
    marks: list[Any] = [["interpreter + bench imports", t0, t_main]]
    a = time.time()
    import streamkeep  # noqa: F401

    marks.append(["import streamkeep", a, time.time()])
    sys.path.insert(0, str(HERE))
    import _peers_side as S

    from streamkeep import context as ctx_mod
    from streamkeep.checkpoint import _checkpoint as ck_mod
    from streamkeep.executors import local as local_mod
    from streamkeep.scheduler import _scheduler as sched_mod
    from streamkeep.sinks import files as files_mod
    from streamkeep.sources import _kafka_config as kcfg
    from streamkeep.sources import _kafka_read as kread
    from streamkeep.sources import kafka as kmod

    def wrap(owner: Any, attr: str, label: str) -> None:
        fn = getattr(owner, attr)

        def timed(*args: Any, **kw: Any) -> Any:
            entry = [label, time.time(), None]  # the end stays None while the call runs (dumped as "running")
            marks.append(entry)
            try:
                return fn(*args, **kw)
            finally:
                entry[2] = time.time()

        setattr(owner, attr, timed)

    first_import = {"done": False}
    real_import = kcfg.import_kafka

    def import_kafka() -> Any:
        if first_import["done"]:
            return real_import()
        s = time.time()
        mod = real_import()
        first_import["done"] = True
        marks.append(["import confluent_kafka (first)", s, time.time()])
        return mod

    kcfg.import_kafka = import_kafka
    kmod._import_kafka = import_kafka
    kread.import_kafka = import_kafka
    for owner, attr, label in (
        (ctx_mod.StreamingContext, "get_or_create", "get_or_create (all)"),
        (ctx_mod.StreamingContext, "start", "start()"),
        (sched_mod.Scheduler, "prepare", "Scheduler.prepare"),
        (sched_mod.Scheduler, "_recover", "  recovery (_recover)"),
        (sched_mod.Scheduler, "_load", "    load commit (_load)"),
        (sched_mod.Scheduler, "_adopt_plans", "    adopt plans"),
        (sched_mod.Scheduler, "_sweep", "    sweep"),
        (ck_mod.Checkpoint, "claim", "  checkpoint claim"),
        (ck_mod.Checkpoint, "commits", "    checkpoint commits()"),
        (kmod.KafkaSource, "open", "  kafka open (consumer)"),
        (sched_mod.Scheduler, "run_next", "run_next (batch)"),
        (sched_mod.Scheduler, "_plan", "  plan"),
        (kmod.KafkaSource, "plan", "    kafka plan"),
        (kmod.KafkaSource, "_await_brokers", "      await brokers"),
        (kmod.KafkaSource, "_ensure_admin", "      ensure admin"),
        (sched_mod.Scheduler, "_read", "  read"),
        (kmod.KafkaSource, "_check_replay", "    kafka check replay"),
        (kmod.KafkaSource, "_learn_topics", "    kafka learn topics"),
        (kread, "fetch_ranges", "    kafka fetch"),
        (local_mod.LocalExecutor, "compute", "  compute"),
        (local_mod.LocalExecutor, "run_outputs", "  outputs"),
        (files_mod.FileSink, "write", "    FileSink.write"),
    ):
        if hasattr(owner, attr):
            wrap(owner, attr, label)
    kmod.fetch_ranges = kread.fetch_ranges  # kafka.py imported it by name

    real_mark = S._mark_first

    def mark(events: str | None, state: dict[str, bool]) -> None:
        first = not state.get("done")
        real_mark(events, state)
        if first:
            ru = resource.getrusage(resource.RUSAGE_SELF)
            marks.append(["FIRST OUTPUT", time.time(), time.time()])
            marks.append([f"  (process CPU so far: {(ru.ru_utime + ru.ru_stime) * 1e3:.0f} ms)", time.time(), time.time()])
            with open(params["marks"], "a", encoding="utf-8") as f:
                now = time.time()
                rows = [(n, s - t0, (now if e is None else e) - t0, e is None) for n, s, e in marks]
                f.write(json.dumps({"pid": os.getpid(), "marks": rows}) + "\n")

    S._mark_first = mark
    S.sk_job(params)


def launch(params: dict[str, Any], log: Path, python: str = sys.executable, root: Path = ROOT) -> subprocess.Popen[str]:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    env["PYTHONPATH"] = str(root)
    err = open(log, "a", encoding="utf-8")  # noqa: SIM115 (the child owns it)
    t0 = time.time()
    proc = subprocess.Popen(
        [python, __file__, "--child", json.dumps({**params, "t0": t0})],
        stdout=subprocess.DEVNULL,
        stderr=err,
        text=True,
        cwd=str(ROOT),
        env=env,
        start_new_session=True,
    )
    err.close()
    return proc


def read_marks(path: Path, pid: int) -> list[Any] | None:
    """The marks a process dumped at its first output: [label, start, end, still running]."""
    try:
        for line in path.read_text(encoding="utf-8").splitlines():
            d = json.loads(line)
            if d["pid"] == pid:
                return list(d["marks"])
    except FileNotFoundError:
        pass
    return None


def first_calls(marks: list[Any]) -> list[list[Any]]:
    """Each step's first call [label, start, end, running] and how many calls before the first output, in start order."""
    seen: dict[str, list[Any]] = {}
    for n, s, e, running in marks:
        if n not in seen:
            seen[n] = [n, s, e, running, 0]
        seen[n][4] += 1
    return sorted(seen.values(), key=lambda v: v[1])


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--child", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--only", default="startup,restart", help="startup, restart or both (comma list)")
    ap.add_argument("--root", default=str(ROOT), help="the source tree whose streamkeep the children run (e.g. an export of main, for a before/after)")
    ap.add_argument("--editable", action="store_true", help="children under the project's venv (editable import hook), not compare_peers' installed view")
    args = ap.parse_args()
    if args.child is not None:
        child(json.loads(args.child))
        return 0
    sys.path.insert(0, str(HERE))
    sys.path.insert(0, str(ROOT / "tests"))
    import _common as C
    import compare_peers as CP
    from _kafka_mock import KafkaMockProcess

    CP.precompile()
    root = Path(args.root).resolve()
    if root != ROOT:
        import compileall

        compileall.compile_dir(str(root / "streamkeep"), quiet=1, workers=1)
    python = sys.executable
    if not args.editable:  # as compare_peers.py runs streamkeep's children (see installed_python)
        python, why = CP.installed_python(sys.executable)
        if why is not None:
            print(f"[streamkeep] {why}")
    only = set(args.only.split(","))
    work = Path(tempfile.mkdtemp(prefix="sk-restart-phases-"))
    log = work / "children.log"
    kafka = KafkaMockProcess(brokers=1)
    boot = kafka.bootstrap
    totals: dict[str, list[float]] = {"startup": [], "restart": []}
    cpus: dict[str, list[float]] = {"startup": [], "restart": []}
    print(f"streamkeep from {root}; load {Path('/proc/loadavg').read_text().strip()}")
    try:
        if "startup" in only:
            kafka.create_topic("startup", CP.PARTITIONS)
            CP.produce_lines(boot, "startup", C.make_lines(10 * C.WORDS_PER_LINE, 100))
        for i in range(args.runs):
            base = {
                "bootstrap": boot, "partitions": CP.PARTITIONS, "batch_lines": 10_000, "interval_s": 0.25,
                "commit_interval_s": 0.25, "marks": str(work / f"marks-{i}.jsonl"),
            }  # fmt: skip
            if "startup" in only:
                d = work / f"startup-{i}"
                p = {**base, "topic": "startup", "state": str(d / "state"), "out": str(d / "out"), "events": str(d / "events"),
                     "stop": "idle", "lines": 10, "source_name": f"startup_{i}_{uuid.uuid4().hex[:6]}"}  # fmt: skip
                proc = launch(p, log, python, root)
                proc.wait(120)
                m = read_marks(Path(p["marks"]), proc.pid)
                show(f"start-up run {i + 1}", m, totals["startup"], cpus["startup"])
            if "restart" in only:
                d = work / f"rec-{i}"
                topic = f"rec-{uuid.uuid4().hex[:8]}"
                kafka.create_topic(topic, CP.PARTITIONS)
                lines = C.make_lines(40 * 500 * C.WORDS_PER_LINE, 100)
                p = {**base, "topic": topic, "state": str(d / "state"), "out": str(d / "out"), "events": str(d / "events"),
                     "stop": "never", "lines": len(lines), "source_name": f"lines_{topic.replace('-', '_')}"}  # fmt: skip
                feeder = CP.Feeder(boot, topic, lines, 40, 500, 0.25)
                feeder.start()
                p1 = launch(p, log, python, root)
                try:
                    if not CP.wait_for(lambda p1=p1, p=p: read_marks(Path(p["marks"]), p1.pid) is not None, 120, p1):
                        print(f"run {i + 1}: no output before the kill (log {log})")
                        continue
                    time.sleep(2.0)
                    CP.P.kill_group(p1)
                    p1.wait()
                    p2 = launch(p, log, python, root)
                    try:
                        CP.wait_for(lambda p2=p2, p=p: read_marks(Path(p["marks"]), p2.pid) is not None, 120, p2)
                        show(f"restart run {i + 1}", read_marks(Path(p["marks"]), p2.pid), totals["restart"], cpus["restart"])
                    finally:
                        CP.P.kill_group(p2)
                        p2.wait()
                finally:
                    CP.P.kill_group(p1)
                    feeder.join()
    finally:
        kafka.close()
    for k, v in totals.items():
        if v:
            c = cpus[k]
            print(
                f"{k}: first output after {statistics.median(v) * 1e3:.0f} ms median ({min(v) * 1e3:.0f}-{max(v) * 1e3:.0f}), "
                f"process CPU until then {statistics.median(c) * 1e3:.0f} ms ({min(c) * 1e3:.0f}-{max(c) * 1e3:.0f}), {len(v)} runs"
            )
    print(f"load {Path('/proc/loadavg').read_text().strip()}; children's stderr in {log}")
    return 0


def show(title: str, marks: list[Any] | None, total: list[float], cpu: list[float]) -> None:
    if marks is None:
        print(f"{title}: no output")
        return
    print(f"\n{title} (ms after the process was started: start -> end [duration], calls before the first output)")
    for n, s, e, running, calls in first_calls(marks):
        print(f"  {n:34} {s * 1e3:7.1f} -> {e * 1e3:7.1f}  [{(e - s) * 1e3:6.1f}]  x{calls}{' (running)' if running else ''}")
    total.append(next(m[1] for m in marks if m[0] == "FIRST OUTPUT"))
    cpu.append(float(next(m[0] for m in marks if "process CPU" in m[0]).split(":")[1].split()[0]) / 1e3)


if __name__ == "__main__":
    sys.exit(main())
