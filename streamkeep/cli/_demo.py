"""`streamkeep demo`: a running word count over a generated stream, with kill-and-resume."""

from __future__ import annotations

import logging
import os
import shlex
import shutil
import signal
import sys
import threading
import time
from datetime import datetime
from typing import Any

import streamkeep as sk
from streamkeep.checkpoint import Checkpoint
from streamkeep.checkpoint._layout import looks_like_checkpoint
from streamkeep.cli._run import _terminate
from streamkeep.errors import CheckpointError, CheckpointInUseError, ConfigError, IncompatibleCheckpointError

#: The demo's checkpoint when --checkpoint is not given.
DEFAULT_CHECKPOINT = "streamkeep-demo-checkpoint"
#: What the demo keeps in its checkpoint: its source and its stateful operator.
_SOURCE, _OPERATOR = "lines", "word_counts"

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


def _not_the_demos(checkpoint: str) -> str | None:
    """Why `checkpoint` is not the demo's to delete (None: absent, an empty directory, or the demo's, not in use).

    Deleting needs positive evidence: the newest readable commit records exactly the demo's
    source and operator. A directory that only shares a name with a checkpoint's layout
    (a ``log/`` folder), a checkpoint without a readable commit (another job's first batch,
    or damaged records) and a checkpoint a running demo holds are all refused.
    """
    if "://" in checkpoint:
        return "--fresh deletes local directories only"
    if not os.path.lexists(checkpoint):
        return None
    if os.path.islink(checkpoint):
        return "it is a symbolic link"
    if not os.path.isdir(checkpoint):
        return "it is not a directory"
    if not os.listdir(checkpoint):
        return None
    ckpt = Checkpoint(checkpoint)
    if not looks_like_checkpoint(ckpt):
        return "it is not a streamkeep checkpoint"
    records, _ = ckpt.read_records(newest_first=True)  # damaged records are skipped
    commit = next((r for r in records if r.kind == "commit"), None)
    if commit is None:
        return "it holds no readable commit, so nothing shows it is the demo's (delete it yourself if it is)"
    try:
        graph = ckpt.graph_of(commit)
    except CheckpointError as exc:
        return f"its graph description cannot be read, so nothing shows it is the demo's ({exc})"
    ops, sources = set(graph.get("operators", {})), set(graph.get("sources", {}))
    if ops != {_OPERATOR} or sources != {_SOURCE}:
        names = ", ".join(repr(n) for n in sorted((ops | sources) - {_OPERATOR, _SOURCE})) or "no demo counts"
        return f"it is the checkpoint of another job (it keeps {names})"
    try:
        ckpt._check_lease()
    except CheckpointInUseError as exc:
        return f"a running demo holds it ({exc})"
    return None


def run_demo(checkpoint: str, seconds: float, interval: float, fresh: bool) -> int:
    """Run the demo for `seconds`, printing the running counts after every batch.

    Raises:
        ConfigError: `fresh` and `checkpoint` is a directory that is not the demo's checkpoint
            (nothing is deleted).
        IncompatibleCheckpointError: `checkpoint` is another job's checkpoint.
    """
    if fresh:
        why = _not_the_demos(checkpoint)
        if why is not None:
            msg = (
                f"--fresh deletes only the demo's own checkpoint, and not {checkpoint!r}: {why}. Nothing was deleted; "
                f"pass --checkpoint with the demo's directory (default {DEFAULT_CHECKPOINT!r}) or a new one"
            )
            raise ConfigError(msg)
        if os.path.lexists(checkpoint):
            shutil.rmtree(checkpoint)

    def setup() -> sk.StreamingContext:
        ssc = sk.StreamingContext(interval, checkpoint=checkpoint)
        lines = ssc.rate_stream(40, name=_SOURCE).map(_sentence)
        counts = lines.flat_map(str.split).map(lambda w: (w, 1)).update_state_by_key(_count, name=_OPERATOR)
        counts.foreach_batch(_show)
        return ssc

    def _show(time_: Any, batch: sk.Batch[tuple[str, int]]) -> None:
        top = sorted(batch.collect(), key=lambda kv: (-kv[1], kv[0]))[:6]
        total = sum(v for _, v in batch.collect())
        print(f"{time_:%H:%M:%S.%f}"[:-3] + f"  words so far: {total:6d}  top: " + ", ".join(f"{w}={n}" for w, n in top), flush=True)

    again = again_command(checkpoint)
    try:
        ssc = sk.StreamingContext.get_or_create(checkpoint, setup)
    except IncompatibleCheckpointError as exc:
        why = _not_the_demos(checkpoint) or f"its stored graph differs from the demo's ({str(exc).splitlines()[0]})"
        msg = (
            f"{checkpoint!r} is not the demo's checkpoint: {why}. The demo neither uses nor deletes it: pass "
            f"--checkpoint with a new directory (`streamkeep checkpoint inspect {checkpoint}` shows what it holds)"
        )
        raise IncompatibleCheckpointError(msg) from exc
    if sys.stderr.isatty():  # one live status line under the counts (rich); nothing extra in a pipe
        from streamkeep.cli._console import console_listener

        ssc.add_listener(console_listener())
    now_ms = int(time.time() * 1000)
    last = ssc.last_batch_time_ms
    replays = ssc.replays_left
    if ssc.restored and last is not None:
        print(resume_message(checkpoint, last, now_ms, ssc.batch_interval_ms), flush=True)
    elif replays:  # stopped before its first commit: not a fresh start, its planned batches run again
        print(
            f"resumed from checkpoint {checkpoint!r}: no batch was committed before it stopped; replaying its "
            f"{replays} planned batch{'es' if replays > 1 else ''} first (exactly the input they planned), then catching up",
            flush=True,
        )
    else:
        print(f"fresh start at {clock_time(now_ms)}; checkpoint in {checkpoint!r}. Interrupt me (Ctrl-C, or kill -9) and run `{again}` to resume.", flush=True)
    on_main = threading.current_thread() is threading.main_thread()  # only the main thread may set a handler
    old_term = signal.signal(signal.SIGTERM, _terminate) if on_main else None
    # The demo said above whether it resumes: not the engine's stderr line again (streamkeep.resume, docs/observability.md)
    resume_log = logging.getLogger("streamkeep.resume")
    old_level = resume_log.level
    resume_log.setLevel(logging.ERROR)
    try:
        ssc.start()
    finally:
        resume_log.setLevel(old_level)
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
        if on_main:
            signal.signal(signal.SIGTERM, signal.SIG_DFL if old_term is None else old_term)
    if said_stopped:
        print(f"Run `{again}` again to continue the counts.", flush=True)
        return 0
    last = ssc.last_batch_time_ms
    where = f"the last committed batch is of {clock_time(last)}" if last is not None else "no batch was committed"
    print(f"stopped; {where}. Run `{again}` again to continue the counts.", flush=True)
    return 0
