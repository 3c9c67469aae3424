"""What an empty batch (no records) writes to a local checkpoint, and where the bytes go.

Five jobs, each run for one batch with a record (so state exists), then N empty
batches: (1) a queue source into ``update_state_by_key``; (2) a text file source with no
new files into ``update_state_by_key``; (3) the same plus ``reduce_by_key_and_window``
(30 s window, 1 s slide, with ``inv_f``); (4) the same without ``inv_f``; (5) the same
with ``window`` (30 s, 1 s slide) instead. Jobs 3-5 should write about what job 2 does. Prints the bytes written per empty batch (the
listener's ``checkpoint_bytes``: plan, state files, commit record), the net growth of the
checkpoint by file kind (retention deletes old records and plan logs), and the encoded
size of each field of the last commit record.

Run: ``.venv/bin/python bench/empty_batches.py [--batches N] [--dir DIR]``.
"""

from __future__ import annotations

import argparse
import operator
import os
import shutil
import sys
import tempfile
from collections.abc import Callable
from typing import Any

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))

import streamkeep as sk  # noqa: E402
from streamkeep.checkpoint import Checkpoint  # noqa: E402
from streamkeep.codec import get_codec  # noqa: E402
from streamkeep.testing import ManualClock  # noqa: E402


def _sizes(root: str) -> dict[str, int]:
    out = {}
    for d, _, files in os.walk(root):
        for f in files:
            p = os.path.join(d, f)
            out[os.path.relpath(p, root)] = os.path.getsize(p)
    return out


def _kind(rel: str) -> str:
    top = rel.split("/", 1)[0]
    return {"plans": "plan log", "log": "commit records", "state": "state files"}.get(top, top)


def _add(new: list[int], old: int | None) -> int:
    return (old or 0) + sum(new)


def _job(kind: str, ckpt: str, inp: str) -> Callable[[], sk.StreamingContext]:
    def setup() -> sk.StreamingContext:
        ssc = sk.StreamingContext(1.0, checkpoint=ckpt, clock=ManualClock())
        if kind == "queue":
            pairs = ssc.queue_stream([[("a", 1)]], name="q", default=[])
        else:
            pairs = ssc.text_file_stream(inp, name="files", new_files_only=False).flat_map(str.split).map(lambda w: (w, 1))
        pairs.update_state_by_key(_add, name="total").foreach_batch(lambda b: None)
        if kind == "window":
            pairs.reduce_by_key_and_window(operator.add, 30.0, 1.0, inv_f=operator.sub, name="win").foreach_batch(lambda b: None)
        elif kind == "window-noinv":
            pairs.reduce_by_key_and_window(operator.add, 30.0, 1.0, name="win").foreach_batch(lambda b: None)
        elif kind == "window()":
            pairs.window(30.0, 1.0, name="win").foreach_batch(lambda b: None)
        return ssc

    return setup


class _Written(sk.StreamingListener):
    def __init__(self) -> None:
        self.bytes: list[int] = []

    def on_batch_completed(self, info: Any) -> None:
        self.bytes.append(info.checkpoint_bytes)


def measure(kind: str, root: str, batches: int) -> None:
    ckpt, inp = os.path.join(root, f"ck-{kind}"), os.path.join(root, f"in-{kind}")
    os.makedirs(inp)
    with open(os.path.join(inp, "first.txt"), "w") as f:
        f.write("a\n")
    ssc = sk.StreamingContext.get_or_create(ckpt, _job(kind, ckpt, inp))
    written = _Written()
    ssc.add_listener(written)
    ssc.run(max_batches=1)
    before = _sizes(ckpt)
    ssc.run(max_batches=batches)
    ssc.stop()
    after = _sizes(ckpt)
    split: dict[str, int] = {}
    for rel, n in after.items():
        split[_kind(rel)] = split.get(_kind(rel), 0) + n - before.get(rel, 0)
    empty = written.bytes[1:]
    print(f"{kind}: {sum(empty) / len(empty):.0f} bytes written per empty batch over {batches} batches (min {min(empty)}, max {max(empty)})")
    print("  net growth per batch: " + ", ".join(f"{k} {n / batches:.0f}" for k, n in sorted(split.items()) if n))
    records, _ = Checkpoint(ckpt).read_records(newest_first=True)
    enc = get_codec("msgpack").encode
    fields = ", ".join(f"{k} {len(enc(v))}" for k, v in records[0].data.items())
    print(f"  last commit record's fields (encoded bytes): {fields}")


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--batches", type=int, default=100)
    ap.add_argument("--dir", default=None)
    args = ap.parse_args(argv)
    root = args.dir or tempfile.mkdtemp(prefix="sk-empty-")
    try:
        for kind in ("queue", "files", "window", "window-noinv", "window()"):
            measure(kind, root, args.batches)
    finally:
        if args.dir is None:
            shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
