"""PySpark Streaming side of the comparison. Runs under bench/.pyspark-venv's python.

Usage (the orchestrator calls these):
    python bench/_pyspark_side.py suite '<json: {"parts": [...], <part>: params}>'
    python bench/_pyspark_side.py restart_job '<json params>'

``suite`` runs the parts in order in one process and one SparkContext (start-up
first, as it times the process start), printing one ``@@RESULT {...}`` line per
part (see _common.emit); ``restart_job`` runs until it is killed. Everything runs
in local[2] with checkpointing on. Spark's own logging goes to stderr.

PySpark Streaming runs on the wall clock only, so processing times come from
Spark's StreamingListener (BatchInfo.processingDelay / schedulingDelay), the same
numbers the Spark UI shows; see bench/README.md for each workload's method.
"""

from __future__ import annotations

import json
import math
import operator
import os
import sys
import tempfile
import time
from typing import Any

T_PROCESS = time.time()

_HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, _HERE)
# Python workers (and a driver restored from a checkpoint) must import _common too.
os.environ["PYTHONPATH"] = os.pathsep.join(
    x for x in (_HERE, os.environ.get("PYTHONPATH")) if x)
import _common as C  # noqa: E402
from pyspark import SparkConf, SparkContext  # noqa: E402
from pyspark.streaming import StreamingContext  # noqa: E402
from pyspark.streaming.listener import StreamingListener  # noqa: E402

T_IMPORTED = time.time()


def _conf(app: str) -> SparkConf:
    return (SparkConf().setMaster("local[2]").setAppName(app)
            .set("spark.ui.enabled", "false")
            .set("spark.ui.showConsoleProgress", "false")
            .set("spark.driver.memory", "4g")
            .set("spark.default.parallelism", "2"))


def _sc(app: str) -> SparkContext:
    sc = SparkContext.getOrCreate(_conf(app))
    sc.setLogLevel("ERROR")
    return sc


class _Listener(StreamingListener):
    """Records every completed batch: times in ms as Spark reports them."""

    def __init__(self, on_batch: Any = None) -> None:
        super().__init__()
        self.batches: list[dict[str, Any]] = []
        self.on_batch = on_batch

    def onBatchCompleted(self, batchCompleted: Any) -> None:  # noqa: N802 (Spark's name)
        info = batchCompleted.batchInfo()
        rec = {"time_ms": info.batchTime().milliseconds(),
               "sched_ms": info.schedulingDelay(), "proc_ms": info.processingDelay(),
               "records": info.numRecords(), "wall": time.time()}
        if self.on_batch is not None:
            rec.update(self.on_batch())
        self.batches.append(rec)


def _wait(pred: Any, timeout_s: float) -> bool:
    deadline = time.time() + timeout_s
    while time.time() < deadline:
        if pred():
            return True
        time.sleep(0.02)
    return pred()


def _split(line: str) -> list[str]:
    return line.split()


def _pair(w: str) -> tuple[str, int]:
    return (w, 1)


def _update_sum(new: list[int], old: int | None) -> int:
    return sum(new) + (old or 0)


def _positive(kv: tuple[str, int]) -> bool:
    return kv[1] > 0


def _count_into(sink: list[int]) -> Any:
    # An output function must return None: PySpark treats a returned value as an RDD.
    def record(rdd: Any) -> None:
        n = rdd.count()
        if len(sink) < 10_000:
            sink.append(n)
    return record


def _check(what: str, got: int, want: int) -> None:
    # Spark logs an exception in an output operation and carries on: fail loudly instead.
    if got < want:
        msg = f"{what}: only {got} of {want} batches produced output (see stderr)"
        raise RuntimeError(msg)


# --------------------------------------------------------------------------- (1) throughput

def throughput(p: dict[str, Any]) -> dict[str, Any]:
    sc = _sc("bench-throughput")
    lines = C.make_lines(p["words"], p["distinct"])
    nb = p["batches"]
    per = len(lines) // nb
    interval = p["interval_s"]
    out: dict[str, Any] = {}
    for kind in ("update", "window"):
        ssc = StreamingContext(sc, interval)
        ssc.checkpoint(tempfile.mkdtemp(prefix="ps-ckpt-"))
        rdds = [sc.parallelize(lines[b * per:(b + 1) * per], 2) for b in range(nb)]
        pairs = ssc.queueStream(rdds, oneAtATime=True).flatMap(_split).map(_pair)
        if kind == "update":
            res = pairs.updateStateByKey(_update_sum)
        else:
            wb = p["window_batches"]
            res = pairs.reduceByKeyAndWindow(operator.add, operator.sub, wb * interval,
                                             interval, filterFunc=_positive)
        keys: list[int] = []
        res.foreachRDD(_count_into(keys))
        lst = _Listener()
        ssc.addStreamingListener(lst)
        ssc.start()
        _wait(lambda lst=lst: len(lst.batches) >= nb, 600)
        ssc.stop(stopSparkContext=False, stopGraceFully=False)
        done = lst.batches[:nb]
        _check(kind, len(keys), nb)
        proc_s = sum(b["proc_ms"] for b in done) / 1e3
        steady_s = sum(b["proc_ms"] for b in done[1:]) / 1e3
        out[kind] = {"words_per_s": p["words"] / proc_s,
                     "steady_words_per_s": p["words"] * (nb - 1) / nb / steady_s,
                     "proc_s": proc_s,
                     "proc_ms": [b["proc_ms"] for b in done], "keys": keys[:nb],
                     "records": sum(b["records"] for b in done)}
    return out


# --------------------------------------------------------------------------- (2) latency floor

def _stateful_tiny(ssc: StreamingContext, default: Any) -> None:
    s = ssc.queueStream([], oneAtATime=True, default=default)
    s.flatMap(_split).map(_pair).updateStateByKey(_update_sum).foreachRDD(_count_into([]))


def _try_interval(sc: SparkContext, default: Any, interval: float,
                  p: dict[str, Any]) -> tuple[bool, str, list[dict[str, Any]]]:
    """Run the tiny stateful job at ``interval``; abort early once it clearly falls behind."""
    ssc = StreamingContext(sc, interval)
    ssc.checkpoint(tempfile.mkdtemp(prefix="ps-ckpt-"))
    _stateful_tiny(ssc, default)
    lst = _Listener()
    ssc.addStreamingListener(lst)
    duration = max(p["min_batches"] * interval, p["min_seconds"])
    ssc.start()
    t0 = time.time()
    aborted = False
    while time.time() - t0 < duration:
        time.sleep(0.05)
        if lst.batches and lst.batches[-1]["sched_ms"] / 1e3 > C.behind_s(interval):
            aborted = True
            break
    batches = list(lst.batches)
    ssc.stop(stopSparkContext=False, stopGraceFully=False)
    if aborted:
        return False, f"aborted: delay {batches[-1]['sched_ms']} ms after {len(batches)} batches", batches
    ok, why = C.keeps_up([b["sched_ms"] / 1e3 for b in batches], interval, int(duration / interval))
    return ok, why, batches


def latency(p: dict[str, Any]) -> dict[str, Any]:
    sc = _sc("bench-latency")
    tiny = C.make_lines(p["records_per_batch"] * C.WORDS_PER_LINE, p["distinct"])
    default = sc.parallelize(tiny, 2)
    for _ in range(5):  # warm up: JVM JIT, python workers
        default.flatMap(_split).map(_pair).reduceByKey(operator.add).count()
    tried: list[dict[str, Any]] = []
    floor = tiny_ms = None
    slowest_ms = 0.0
    for interval in p["ps_candidates_s"]:
        if interval * 1e3 < 0.8 * slowest_ms:
            # A batch already took longer than this interval: it cannot keep up.
            tried.append({"interval_s": interval, "keeps_up": False,
                          "why": f"skipped: batches take ~{slowest_ms:.0f} ms"})
            continue
        ok, why, batches = _try_interval(sc, default, interval, p)
        proc = sorted(b["proc_ms"] for b in batches[len(batches) // 5:])
        med = proc[len(proc) // 2] if proc else None
        slowest_ms = max(slowest_ms, med or 0)
        tried.append({"interval_s": interval, "keeps_up": ok, "why": why, "median_proc_ms": med})
        if ok:
            floor, tiny_ms = interval, med
            break
    # Per-batch overhead with tiny batches: the median processing time (Spark's
    # BatchInfo.processingDelay) of the batches run at the floor, where the job keeps up.
    return {"floor_s": floor, "tried": tried,
            "tiny_batch_s": tiny_ms / 1e3 if tiny_ms is not None else None}


# --------------------------------------------------------------------------- (3) start-up

def startup(p: dict[str, Any]) -> dict[str, Any]:
    sc = _sc("bench-startup")
    ssc = StreamingContext(sc, p["interval_s"])
    ssc.checkpoint(tempfile.mkdtemp(prefix="ps-ckpt-"))
    default = sc.parallelize(C.make_lines(100, 100), 2)
    (ssc.queueStream([], oneAtATime=True, default=default).flatMap(_split).map(_pair)
        .updateStateByKey(_update_sum).foreachRDD(_count_into([])))
    # The listener runs in this process (output functions are pickled into the
    # checkpoint, so they cannot hold a threading.Event).
    lst = _Listener()
    ssc.addStreamingListener(lst)
    ssc.start()
    _wait(lambda: bool(lst.batches), 120)
    first = lst.batches[0]["wall"] if lst.batches else None
    ssc.stop(stopSparkContext=False, stopGraceFully=False)
    return {"first_batch_done": first, "process_start": T_PROCESS, "imported": T_IMPORTED}


# --------------------------------------------------------------------------- (4) checkpoint cost

def checkpoint(p: dict[str, Any]) -> dict[str, Any]:
    sc = _sc("bench-checkpoint")
    interval = p["interval_s"]
    # Spark checkpoints a stateful DStream's RDD every ceil(10 s / interval) batches
    # by default: measure exactly one such period.
    steady = max(p["steady_batches"], math.ceil(10 / interval))
    out: dict[str, Any] = {}
    for n in p["keys"]:
        ckpt = tempfile.mkdtemp(prefix="ps-ckpt-")
        counter = C.DirWriteCounter(ckpt)
        ssc = StreamingContext(sc, interval)
        ssc.checkpoint(ckpt)
        initial = sc.parallelize([(C.state_key(i), 0) for i in range(n)], 2)
        rdds = [sc.parallelize(C.changed_keys(b, p["changed_per_batch"], n), 2)
                for b in range(steady + 1)]
        state = (ssc.queueStream(rdds, oneAtATime=True).map(_pair)
                 .updateStateByKey(_update_sum, initialRDD=initial))
        state.foreachRDD(_count_into([]))
        lst = _Listener(on_batch=lambda c=counter: {"bytes": c.scan()})
        ssc.addStreamingListener(lst)
        counter.start_polling()
        ssc.start()
        _wait(lambda lst=lst: len(lst.batches) >= steady + 1, 1800)
        time.sleep(0.5)  # let the asynchronous metadata checkpoint of the last batch land
        counter.stop_polling()
        end_bytes = counter.total
        ssc.stop(stopSparkContext=False, stopGraceFully=False)
        b = lst.batches[:steady + 1]
        window = end_bytes - b[0]["bytes"]
        # Per batch: bytes seen between two batch completions (approximate: Spark
        # writes metadata checkpoints asynchronously).
        per = [y["bytes"] - x["bytes"] for x, y in zip(b, b[1:], strict=False)]
        out[str(n)] = {"bytes_per_batch": window / steady,
                       "median_batch_bytes": sorted(per)[len(per) // 2],
                       "max_batch_bytes": max(per),
                       "ms_per_batch": sum(x["proc_ms"] for x in b[1:]) / steady,
                       "first_batch_bytes": b[0]["bytes"], "first_batch_ms": b[0]["proc_ms"],
                       "steady_batches": steady, "dir_bytes": C.dir_size(ckpt)}
    return out


# --------------------------------------------------------------------------- (5)/(6) restartable jobs

def _restartable(p: dict[str, Any], version: str) -> None:
    """A word count over a file stream, started or restarted with getOrCreate.

    Writes one line per output per batch to p["out"]: "pid version kind batch_ms value
    wall". In the code-change run, version v2's update adds 1000 per word instead of 1.
    """
    ckpt, out, src = p["ckpt"], p["out"], p["input"]
    mult = 1000 if version == "v2" else 1

    def update(new: list[int], old: int | None) -> int:
        return (old or 0) + mult * sum(new)

    def setup() -> StreamingContext:
        sc = _sc("bench-restart")
        ssc = StreamingContext(sc, p["interval_s"])
        ssc.checkpoint(ckpt)
        words = ssc.textFileStream(src).flatMap(_split)
        state = words.map(_pair).updateStateByKey(update)

        def rec_words(t: Any, rdd: Any) -> None:
            C.append_line(out, f"{os.getpid()} {version} words {round(t.timestamp() * 1000)} "
                               f"{rdd.count()} {time.time():.3f}")

        def rec_state(t: Any, rdd: Any) -> None:
            C.append_line(out, f"{os.getpid()} {version} state {round(t.timestamp() * 1000)} "
                               f"{rdd.values().sum() if not rdd.isEmpty() else 0} "
                               f"{time.time():.3f}")

        if p.get("record_words"):  # the code-change run needs words per batch
            words.foreachRDD(rec_words)
        state.foreachRDD(rec_state)
        return ssc

    ssc = StreamingContext.getOrCreate(ckpt, setup)
    ssc.sparkContext.setLogLevel("ERROR")
    ssc.start()
    ssc.awaitTermination()  # until the orchestrator SIGKILLs us


def restart_job(p: dict[str, Any]) -> None:
    _restartable(p, p.get("version", "v1"))


PARTS = {f.__name__: f for f in (startup, throughput, latency, checkpoint)}

if __name__ == "__main__":
    if sys.argv[1] == "restart_job":
        restart_job(json.loads(sys.argv[2]))
    else:
        C.run_suite(PARTS, json.loads(sys.argv[2]))
