"""Workload definitions and measuring helpers shared by both sides of the comparison.

Imported by ``compare_pyspark.py`` (the orchestrator) and by the two side scripts,
``_pyspark_side.py`` (runs under bench/.pyspark-venv) and ``_streamkeep_side.py``
(runs under the project's venv). Standard library only: it must import under
either interpreter, and it must not import pyspark or streamkeep.
"""

from __future__ import annotations

import json
import os
import statistics
import sys
import threading
import time
from typing import Any

RESULT_MARK = "@@RESULT "

#: Words per generated line; every workload splits lines into words.
WORDS_PER_LINE = 10
#: A prime coprime with every key-space size used here, to spread keys evenly.
_STRIDE = 7919


# --------------------------------------------------------------------------- sizes

def sizes(quick: bool) -> dict[str, Any]:
    """Every workload's parameters. Both sides read the same dict (passed as JSON)."""
    # PySpark's stateful jobs take ~0.5-1.5 s a batch here even when tiny, so the
    # intervals of wall-clock workloads are ones it keeps up with (bench/README.md).
    restart = {"interval_s": 1.0, "lines_per_file": 100, "batches_before_kill": 3,
               "batches_after_restart": 3}
    common = {
        "startup": {"interval_s": 0.2},
        "recovery": restart,
        "codechange": dict(restart, interval_s=2.0, lines_per_file=20),
    }
    if quick:
        return {
            **common,
            "throughput": {"words": 100_000, "batches": 5, "distinct": 10_000,
                           "interval_s": 0.5, "window_batches": 3},
            "latency": {"ps_candidates_s": [0.1, 0.25, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0],
                        "sk_candidates_s": [0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2,
                                            0.5, 1.0, 2.0, 3.0],
                        "min_batches": 10, "min_seconds": 1.0, "records_per_batch": 10,
                        "distinct": 100, "tiny_batches": 100},
            "checkpoint": {"keys": [10_000, 100_000], "steady_batches": 10,
                           "changed_per_batch": 10, "interval_s": 1.0},
        }
    return {
        **common,
        "throughput": {"words": 1_000_000, "batches": 10, "distinct": 10_000,
                       "interval_s": 0.5, "window_batches": 5},
        "latency": {"ps_candidates_s": [0.1, 0.25, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0],
                    "sk_candidates_s": [0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5,
                                        1.0, 2.0, 3.0],
                    "min_batches": 15, "min_seconds": 2.0, "records_per_batch": 10,
                    "distinct": 100, "tiny_batches": 500},
        "checkpoint": {"keys": [10_000, 100_000], "big_keys": [1_000_000],
                       "steady_batches": 10, "changed_per_batch": 10, "interval_s": 1.0},
    }


# --------------------------------------------------------------------------- data

def word(j: int, distinct: int) -> str:
    """The j-th word of the stream: cycles through all ``distinct`` words."""
    return f"w{(j * _STRIDE) % distinct}"


def make_lines(n_words: int, distinct: int) -> list[str]:
    """``n_words`` words as lines of WORDS_PER_LINE words (the word-count input)."""
    n_lines = n_words // WORDS_PER_LINE
    return [" ".join(word(i * WORDS_PER_LINE + k, distinct) for k in range(WORDS_PER_LINE))
            for i in range(n_lines)]


def state_key(i: int) -> str:
    return f"k{i}"


def changed_keys(batch: int, n: int, n_keys: int) -> list[str]:
    """The keys touched by steady batch ``batch`` (few keys out of a large state)."""
    return [state_key(((batch * n + j) * _STRIDE) % n_keys) for j in range(n)]


# --------------------------------------------------------------------------- reporting

def emit(**fields: Any) -> None:
    """Print one machine-readable result line for the orchestrator."""
    sys.stdout.write(RESULT_MARK + json.dumps(fields) + "\n")
    sys.stdout.flush()


def run_suite(parts: dict[str, Any], p: dict[str, Any]) -> None:
    """Run p["parts"] in order, one result line per part; a failing part is reported."""
    for name in p["parts"]:
        t0 = time.time()
        try:
            res = parts[name](p[name])
        except Exception as exc:  # noqa: BLE001 (reported to the orchestrator, then next part)
            res = {"error": f"{type(exc).__name__}: {exc}"[:400]}
        emit(part=name, part_s=time.time() - t0, **res)


def parse_results(stdout: str) -> list[dict[str, Any]]:
    return [json.loads(line[len(RESULT_MARK):]) for line in stdout.splitlines()
            if line.startswith(RESULT_MARK)]


def keeps_up(delays_s: list[float], interval_s: float, expected: int) -> tuple[bool, str]:
    """Whether per-batch delays (batch start - batch time) stay flat.

    Drops the first 20% (warm-up), compares the median of the second half of what
    is left with the median of the first half: a job that does not keep up shows a
    delay growing by (processing - interval) every batch. Too few completed batches
    (fewer than half of those that were due) also counts as not keeping up.
    """
    if len(delays_s) < max(6, expected // 2):
        return False, f"only {len(delays_s)}/{expected} batches done"
    rest = delays_s[len(delays_s) // 5:]
    half = len(rest) // 2
    first, second = statistics.median(rest[:half]), statistics.median(rest[half:])
    growth = second - first
    ok = growth <= max(interval_s, 0.002)
    return ok, f"delay {first * 1e3:.1f}->{second * 1e3:.1f} ms over {len(delays_s)} batches"


def behind_s(interval_s: float) -> float:
    """A scheduling delay past which a latency-floor candidate is abandoned early."""
    return 4 * interval_s + 1.0


# --------------------------------------------------------------------------- checkpoint bytes

class DirWriteCounter:
    """Counts bytes written under a directory by scanning it repeatedly.

    Each file version is identified by (inode, size, mtime): a file that appears
    counts its size; a file that grows counts its growth (append, e.g. a log);
    a file rewritten in place counts its new size. A rename (temp -> final) keeps
    the inode and is not counted twice. Files created and deleted between two scans
    are missed, so scan after every batch (streamkeep's run(max_batches=1) loop) or
    poll often (PySpark: a thread every 20 ms plus a scan per completed batch).
    """

    def __init__(self, root: str) -> None:
        self.root = root
        self.total = 0
        self.files_seen = 0
        self._seen: dict[int, tuple[int, int]] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def scan(self) -> int:
        with self._lock:
            for dirpath, _dirs, files in os.walk(self.root):
                for name in files:
                    try:
                        st = os.stat(os.path.join(dirpath, name))
                    except FileNotFoundError:
                        continue
                    prev = self._seen.get(st.st_ino)
                    version = (st.st_size, st.st_mtime_ns)
                    if prev == version:
                        continue
                    if prev is None:
                        self.total += st.st_size
                        self.files_seen += 1
                    elif st.st_size > prev[0]:
                        self.total += st.st_size - prev[0]
                    else:
                        self.total += st.st_size
                    self._seen[st.st_ino] = version
            return self.total

    def start_polling(self, every_s: float = 0.02) -> None:
        def loop() -> None:
            while not self._stop.wait(every_s):
                self.scan()
        self._thread = threading.Thread(target=loop, daemon=True)
        self._thread.start()

    def stop_polling(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        self.scan()


def dir_size(root: str) -> int:
    total = 0
    for dirpath, _dirs, files in os.walk(root):
        for name in files:
            try:
                total += os.path.getsize(os.path.join(dirpath, name))
            except FileNotFoundError:
                pass
    return total


# --------------------------------------------------------------------------- output files

def append_line(path: str, line: str) -> None:
    """Append one line to a recorder file (recovery / code-change outputs)."""
    with open(path, "a", encoding="utf-8") as f:
        f.write(line + "\n")
        f.flush()


def now() -> float:
    return time.time()
