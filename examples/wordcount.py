"""A running word count over files dropped into a directory, with exact recovery.

Run it, drop text files into the input directory (write them elsewhere and move
them in), interrupt it any time (even ``kill -9``) and run it again: the counts
continue exactly where they were, because the plan of every batch (its file
list) and the state changes are in the checkpoint.

    python examples/wordcount.py --input incoming/ --checkpoint ckpt/ [--max-batches N]
"""

from __future__ import annotations

import argparse
import os

import streamkeep as sk


def add(new: list[int], old: int | None) -> int:
    """update_state_by_key function: the running count of a word."""
    return (old or 0) + sum(new)


def build(input_dir: str, checkpoint: str, interval_s: float) -> sk.StreamingContext:
    """The job's graph; called on every start (the checkpoint holds no code)."""
    ssc = sk.StreamingContext(interval_s, checkpoint=checkpoint)
    lines = ssc.text_file_stream(input_dir, name="lines")
    counts = lines.flat_map(str.split).map(lambda w: (w.lower(), 1)).update_state_by_key(add, name="word_counts")
    counts.pprint(num=10)
    return ssc


def main() -> None:
    """Parse arguments and run the job (forever, or for --max-batches batches)."""
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--input", default="incoming")
    ap.add_argument("--checkpoint", default="wordcount-checkpoint")
    ap.add_argument("--interval", type=float, default=1.0)
    ap.add_argument("--max-batches", type=int, default=None, help="run this many batches back to back, then stop")
    args = ap.parse_args()
    os.makedirs(args.input, exist_ok=True)
    ssc = sk.StreamingContext.get_or_create(args.checkpoint, lambda: build(args.input, args.checkpoint, args.interval))
    if args.max_batches is not None:
        ssc.run(max_batches=args.max_batches)
        ssc.stop()
        return
    ssc.start()
    try:
        ssc.await_termination()
    except KeyboardInterrupt:
        ssc.stop(graceful=True)


if __name__ == "__main__":
    main()
