"""Code blocks of the docs that need no server run as printed (a user pastes them)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

import streamkeep as sk
from streamkeep.testing import ManualClock

DOCS = Path(__file__).resolve().parents[3] / "docs"


def _block_after(doc: str, marker: str) -> str:
    """The first ```python block after `marker` in docs/`doc`."""
    text = (DOCS / doc).read_text()
    assert marker in text, f"{doc}: {marker!r} is gone"
    return text.split(marker, 1)[1].split("```python\n", 1)[1].split("```", 1)[0]


def test_reading_a_commit_record_by_hand(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """docs/checkpoint-format.md's "Reading one file by hand" asserted format version 1 or 2, so it failed on every
    file streamkeep writes now (version 4)."""
    monkeypatch.chdir(tmp_path)

    def setup() -> sk.StreamingContext:
        ssc = sk.StreamingContext(1.0, checkpoint="ckpt", clock=ManualClock())
        ssc.queue_stream([[("a", 1)], [("b", 2)]], name="q").update_state_by_key(lambda vs, s: (s or 0) + sum(vs), name="n").foreach_batch(
            lambda b: None
        )
        return ssc

    ssc = sk.StreamingContext.get_or_create("ckpt", setup)
    ssc.run(max_batches=2)
    ssc.stop()
    newest = sorted(os.listdir(tmp_path / "ckpt" / "log"))[-1]
    code = _block_after("checkpoint-format.md", "Reading one file by hand:").replace("log/000000000007.rec", f"log/{newest}")
    scope: dict[str, object] = {}
    exec(compile(code, "docs/checkpoint-format.md", "exec"), scope)
    assert scope["kind"] == "record" and scope["codec"] == "msgpack"
    record = scope["record"]
    assert isinstance(record, dict) and record["type"] == "commit" and record["batch_time"] == ssc.last_batch_time_ms


def test_the_listener_example_calls_a_run_killed_before_its_first_commit_a_resume(capsys: pytest.CaptureFixture[str]) -> None:
    """docs/observability.md's listener printed "fresh" for restored False with batches to replay: a resume."""
    listeners: list[object] = []

    class _Context:
        def add_listener(self, listener: object) -> None:
            listeners.append(listener)

    code = _block_after("observability.md", "## Listener events")
    exec(compile(code, "docs/observability.md", "exec"), {"sk": sk, "ssc": _Context()})
    (alerts,) = listeners

    def started(restored: bool, commit: int | None, replays: int) -> str:
        alerts.on_job_started(sk.JobStarted(3000, restored, commit, replays, 0, "start", 1000, "ckpt", ["q"], []))  # type: ignore[attr-defined]
        return capsys.readouterr().out

    assert started(False, None, 0).startswith("fresh ")
    assert started(False, None, 2).startswith("resumed, no commit yet None 2 ")
    assert started(True, 2000, 1).startswith("restored 2000 1 ")
