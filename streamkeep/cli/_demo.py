"""`streamkeep demo`: a running word count over a generated stream, with kill-and-resume."""

from __future__ import annotations

import shutil
import signal
import sys
import time
from typing import Any

import streamkeep as sk

_WORDS = (
    "stream state batch window kafka redis spark checkpoint offset commit replay driver crash "
    "recover exact once delta snapshot partition key value"
).split()


def _sentence(row: tuple[int, int]) -> str:
    """Record i of the rate stream -> a deterministic sentence (so a replay is identical)."""
    i = row[0]
    return " ".join(_WORDS[(i * 7 + j * 13 + (i >> 3)) % len(_WORDS)] for j in range(1 + i % 5))


def _count(new: list[int], old: int | None) -> int:
    return (old or 0) + sum(new)


def run_demo(checkpoint: str, seconds: float, interval: float, fresh: bool) -> int:
    """Run the demo for `seconds`, printing the running counts after every batch."""
    if fresh:
        shutil.rmtree(checkpoint, ignore_errors=True)

    def setup() -> sk.StreamingContext:
        ssc = sk.StreamingContext(interval, checkpoint=checkpoint)
        lines = ssc.rate_stream(40, name="lines").map(_sentence)
        counts = lines.flat_map(str.split).map(lambda w: (w, 1)).update_state_by_key(_count, name="word_counts")
        counts.foreach_batch(_show)
        return ssc

    def _show(time_: Any, batch: sk.Batch[tuple[str, int]]) -> None:
        top = sorted(batch.collect(), key=lambda kv: (-kv[1], kv[0]))[:6]
        total = sum(v for _, v in batch.collect())
        print(f"{time_:%H:%M:%S.%f}"[:-3] + f"  words so far: {total:6d}  top: " + ", ".join(f"{w}={n}" for w, n in top), flush=True)

    ssc = sk.StreamingContext.get_or_create(checkpoint, setup)
    if sys.stderr.isatty():  # one live status line under the counts (rich); nothing extra in a pipe
        from streamkeep.cli._console import console_listener

        ssc.add_listener(console_listener())
    if ssc.restored:
        print(f"resumed from checkpoint {checkpoint!r} at batch {ssc.last_batch_time_ms} ms: counts continue where they were")
    else:
        print(f"fresh start; checkpoint in {checkpoint!r}. Interrupt me (Ctrl-C, or kill -9) and run me again to resume.")
    signal.signal(signal.SIGTERM, lambda *_: (_ for _ in ()).throw(KeyboardInterrupt()))
    ssc.start()
    try:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            if ssc.await_termination(timeout=0.2):
                break
    except KeyboardInterrupt:
        print("\ninterrupted: stopping after the batch in progress; run the demo again to resume")
    finally:
        ssc.stop(graceful=True)
    print(f"stopped; last committed batch {ssc.last_batch_time_ms} ms. Run `streamkeep demo` again to continue the counts.")
    return 0
