"""`streamkeep demo`: a running word count over a generated stream, with kill-and-resume."""

from __future__ import annotations

import os
import shlex
import shutil
import signal
import sys
import time
from datetime import datetime
from typing import Any

import streamkeep as sk

#: The demo's checkpoint when --checkpoint is not given.
DEFAULT_CHECKPOINT = "streamkeep-demo-checkpoint"

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


def clock_time(ms: int, now_ms: int | None = None) -> str:
    """A batch time as local clock time (with the date when it is not today's)."""
    at = datetime.fromtimestamp(ms / 1000)
    now = datetime.fromtimestamp((now_ms if now_ms is not None else time.time() * 1000) / 1000)
    fmt = "%H:%M:%S.%f" if at.date() == now.date() else "%Y-%m-%d %H:%M:%S.%f"
    return at.strftime(fmt)[:-3]


def _duration(ms: int) -> str:
    s = ms / 1000
    if s < 60:
        return f"{s:.1f} s"
    if s < 3600:
        return f"{int(s // 60)} min {int(s % 60)} s"
    if s < 86400:
        return f"{int(s // 3600)} h {int(s % 3600 // 60)} min"
    return f"{int(s // 86400)} d {int(s % 86400 // 3600)} h"


def again_command(checkpoint: str) -> str:
    """The command that resumes this demo (naming --checkpoint when it is not the default).

    ``./scripts/demo.sh`` sets ``STREAMKEEP_DEMO_COMMAND`` to itself: the user who started the demo
    that way has no ``streamkeep`` on their PATH.
    """
    program = os.environ.get("STREAMKEEP_DEMO_COMMAND") or "streamkeep demo"
    return program + ("" if checkpoint == DEFAULT_CHECKPOINT else f" --checkpoint {shlex.quote(checkpoint)}")


def resume_message(checkpoint: str, last_ms: int, now_ms: int, interval_ms: int) -> str:
    """What the demo says when it resumes: where from, how long it was down, how much it catches up."""
    behind = max(0, (now_ms - last_ms) // interval_ms)  # batch times missed while the demo was down
    head = f"resumed from checkpoint {checkpoint!r}: the last committed batch is of {clock_time(last_ms, now_ms)}"
    if behind < 1:
        return head + "; the counts continue where they were"
    return (
        head + f", {_duration(now_ms - last_ms)} ago; catching up {behind} batch{'es' if behind > 1 else ''} "
        f"(every missed batch time runs, so the counts are what an uninterrupted run would show), "
        f"then one every {interval_ms / 1000:g} s"
    )


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

    again = again_command(checkpoint)
    ssc = sk.StreamingContext.get_or_create(checkpoint, setup)
    if sys.stderr.isatty():  # one live status line under the counts (rich); nothing extra in a pipe
        from streamkeep.cli._console import console_listener

        ssc.add_listener(console_listener())
    now_ms = int(time.time() * 1000)
    last = ssc.last_batch_time_ms
    if ssc.restored and last is not None:
        print(resume_message(checkpoint, last, now_ms, ssc.batch_interval_ms), flush=True)
    else:
        print(f"fresh start at {clock_time(now_ms)}; checkpoint in {checkpoint!r}. Interrupt me (Ctrl-C, or kill -9) and run `{again}` to resume.", flush=True)
    signal.signal(signal.SIGTERM, lambda *_: (_ for _ in ()).throw(KeyboardInterrupt()))
    ssc.start()
    said_stopped = False  # a Ctrl-C during await_termination stops the job, and the engine says "stopped; ..." itself
    try:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            if ssc.await_termination(timeout=0.2):
                said_stopped = True
                break
    except KeyboardInterrupt:  # between two waits (a Ctrl-C during one stops the job inside await_termination)
        print("\ninterrupted: stopping after the batch in progress", flush=True)
    finally:
        ssc.stop(graceful=True)
    if said_stopped:
        print(f"Run `{again}` again to continue the counts.", flush=True)
        return 0
    last = ssc.last_batch_time_ms
    where = f"the last committed batch is of {clock_time(last)}" if last is not None else "no batch was committed"
    print(f"stopped; {where}. Run `{again}` again to continue the counts.", flush=True)
    return 0
