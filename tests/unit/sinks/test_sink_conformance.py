"""Every built-in sink passes `streamkeep.testing.conformance.check_sink` (issue 11.9).

Redis and Kafka run it on the real servers: tests/integration/test_conformance.py.
PrintSink and PPrintSink are left out on purpose: they print for debugging, and a
replayed batch is printed again.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest

from streamkeep.sinks.files import FileSink
from streamkeep.sinks.text import TextFilesSink
from streamkeep.testing import ListSink
from streamkeep.testing.conformance import check_sink


def _jsonl(d: Path) -> list[Any]:
    return [json.loads(line) for n in sorted(os.listdir(d)) if n.endswith(".jsonl") for line in (d / n).read_text().splitlines()]


@pytest.mark.parametrize("fmt", ["jsonl", "lines"])
def test_file_sink(tmp_path: Path, fmt: str) -> None:
    out = tmp_path / "out"

    def read_back() -> list[Any]:
        if fmt == "jsonl":
            return _jsonl(out)
        return [line for n in sorted(os.listdir(out)) if n.endswith(".txt") for line in (out / n).read_text().splitlines()]

    check_sink(lambda: FileSink(out, name="files", format=fmt), read_back)  # type: ignore[arg-type]


def test_text_files_sink(tmp_path: Path) -> None:
    def read_back() -> list[str]:
        return [
            line
            for d in sorted(os.listdir(tmp_path))
            for n in sorted(os.listdir(tmp_path / d))
            if n.startswith("part-")
            for line in (tmp_path / d / n).read_text().splitlines()
        ]

    check_sink(lambda: TextFilesSink(str(tmp_path / "out"), "txt", name="text"), read_back)


def test_a_sink_that_appends_replays_fails_the_check() -> None:
    """The suite can fail: a sink that applies a replayed batch twice is caught."""
    held: list[Any] = []

    class Appending(ListSink):
        def write(self, batch_time: int, records: list[Any]) -> None:
            held.extend(records)

    with pytest.raises(AssertionError, match="^replay: after writing batch 2000 ms again"):
        check_sink(lambda: Appending("append"), lambda: held)
