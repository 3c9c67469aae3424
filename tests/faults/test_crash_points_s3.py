"""The crash-and-recover check of test_crash_points.py with the checkpoint on S3 (moto server, 127.0.0.1).

A few crash points, not the whole matrix: each child run talks to the real
S3 endpoint (conditional puts for the commit log, lease instead of a file lock).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any

import pytest
from _harness import Workdir, diff_results, expect_killed, expect_ok, scratch_tree

pytestmark = [pytest.mark.integration, pytest.mark.faults, pytest.mark.slow]

TOTAL = 8
CASES = [
    ("plan.after_write", 2),
    ("state.mid_write", 6),
    ("snapshot.mid_write", 2),
    ("commit.before_record", 4),
    ("commit.after_record", 5),
    ("retention.mid_delete", 3),
    ("graph.after_write", 1),  # the graph file is on S3, no commit names it yet
]


@pytest.fixture(scope="module")
def scratch() -> Iterator[str]:
    with scratch_tree("streamkeep-faults-s3-") as d:
        yield d


@pytest.fixture(scope="module")
def s3_reference(s3_server: Any, scratch: str) -> dict[str, Any]:
    w = Workdir.make(os.path.join(scratch, "reference"), f"s3://{s3_server.bucket}/faults-reference", s3_server.storage_options)
    expect_ok(w.run(TOTAL), "S3 reference run")
    return w.results()


@pytest.mark.parametrize(("point", "nth"), CASES)
def test_s3_crash_then_recover_equals_uncrashed(
    point: str, nth: int, s3_server: Any, s3_url: str, s3_reference: dict[str, Any], scratch: str
) -> None:
    w = Workdir.make(os.path.join(scratch, f"{point}@{nth}"), s3_url, s3_server.storage_options)
    expect_killed(w.run(TOTAL, crash=(point, nth)), f"S3: crash at {point}@{nth}")
    expect_ok(w.run(TOTAL), f"S3: recovery after {point}@{nth}")
    problems = diff_results(s3_reference, w.results())
    assert not problems, f"S3: after a crash at {point}@{nth}:\n" + "\n".join(problems[:20])
    import s3fs

    fs = s3fs.S3FileSystem(**s3_server.storage_options)
    names = [p.split("/", 2)[2] for p in fs.find(s3_url.removeprefix("s3://"))]
    assert not [n for n in names if n.rsplit("/", 1)[-1].startswith(".tmp-")], names
