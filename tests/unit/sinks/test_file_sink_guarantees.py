"""FileSink guarantees no other test would notice losing (found by mutation testing).

A batch's file is published whole or not at all: a write that fails midway (here the
file-size limit, as a full disk would) leaves the previous content of the file, or no
file, never part of a batch. Parts written by workers are joined in part order.
Each test failed with the change of the sink it names applied.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from streamkeep.sinks import FileSink

#: The child process: it writes what argv[2] says, then fails a rewrite of the batch under a file-size limit.
_CHILD = textwrap.dedent(
    """
    import json, resource, signal, sys
    from streamkeep.errors import SinkError
    from streamkeep.sinks import FileSink

    path, how = sys.argv[1], sys.argv[2]
    sink = FileSink(path, name="out")
    sink.open()
    old = ["old-%03d" % i for i in range(10)]
    new = ["new-" + "x" * 200 + "-%03d" % i for i in range(100)]  # ~20 kB: more than the limit below
    if how == "write":
        sink.write(1000, old)
    else:
        receipts = [sink.write_part(1000, "try1", i, old[i::2]) for i in range(2)]
        sink.publish(1000, "try1", receipts)
        receipts = [sink.write_part(1000, "try2", i, new[i::2]) for i in range(2)]
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit fails with EFBIG instead of killing us
    resource.setrlimit(resource.RLIMIT_FSIZE, (4096, resource.getrlimit(resource.RLIMIT_FSIZE)[1]))
    try:
        if how == "write":
            sink.write(1000, new)
        else:
            sink.publish(1000, "try2", receipts)
    except SinkError as exc:
        print(json.dumps({"failed": str(exc)}))
    else:
        print(json.dumps({"failed": None}))
    """
)


@pytest.mark.parametrize("how", ["write", "publish"])
def test_a_rewrite_that_fails_midway_leaves_the_previous_file_whole(tmp_path: Path, how: str) -> None:
    """A replayed batch whose write fails midway (disk full) must leave the file as it was: complete.

    Catches: the batch file written in place (`FileSink._write_local` without the temp file and
    rename), which left a truncated batch; and the parts joined straight into the final file
    (`FileSink._join_parts`), which deleted the batch's published file when the join failed.
    """
    out = tmp_path / "out"
    r = subprocess.run([sys.executable, "-c", _CHILD, str(out), how], capture_output=True, text=True, timeout=60, check=False)
    assert r.returncode == 0, r.stderr
    failed = json.loads(r.stdout.strip().splitlines()[-1])["failed"]
    assert failed is not None, "the rewrite past the file-size limit should have failed"
    old = [f"old-{i:03d}" for i in range(10)]
    want = old if how == "write" else old[0::2] + old[1::2]  # publish: part 0, then part 1
    final = out / "batch-0000000001000.txt"
    assert final.read_text().splitlines() == want
    assert not [n for n in os.listdir(out) if n.endswith(".tmp")]


def test_parts_are_joined_in_part_order_whatever_order_they_were_written_in(tmp_path: Path) -> None:
    """On Ray each worker writes its part; the published file holds the parts in part order, as one write would.

    Catches: `FileSink._join_parts` joining the parts in another order (a key's records out of batch order).
    """
    sink = FileSink(str(tmp_path / "out"), name="out")
    sink.open()
    parts = [["a", "b"], ["c"], ["d", "e", "f"]]
    receipts: list[int] = [0, 0, 0]
    for i in (2, 0, 1):
        receipts[i] = sink.write_part(1000, "try1", i, parts[i])
    sink.publish(1000, "try1", receipts)
    assert (tmp_path / "out" / "batch-0000000001000.txt").read_text().splitlines() == ["a", "b", "c", "d", "e", "f"]
    assert sorted(os.listdir(tmp_path / "out")) == ["batch-0000000001000.txt"]  # the part files are gone
