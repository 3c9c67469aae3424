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
