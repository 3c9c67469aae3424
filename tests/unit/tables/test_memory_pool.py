"""streamkeep picks jemalloc as pyarrow's memory pool when a table job first uses pyarrow,
unless the user chose a pool with ARROW_DEFAULT_MEMORY_POOL (streamkeep._arrow.choose_memory_pool)."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

pa = pytest.importorskip("pyarrow")

# A fresh interpreter: the pool is process-wide and chosen once per process.
_JOB = """
import os
import pyarrow as pa
if os.environ.get("SET_POOL") == "system":
    pa.set_memory_pool(pa.system_memory_pool())  # the application's own choice, in code
import streamkeep as sk
from streamkeep.testing import ManualClock

print("before", pa.default_memory_pool().backend_name)
ssc = sk.StreamingContext(1.0, clock=ManualClock())
out = []
src = ssc.queue_stream([[pa.table({"k": ["a", "b", "a"]})]], name="q")
src.to_tables().aggregate_state(by="k", aggs={"n": ("*", "count")}, name="agg").foreach_batch(lambda b: out.append(b.to_arrow().num_rows))
ssc.run(max_batches=1)
print("after", pa.default_memory_pool().backend_name, out)
"""


def _jemalloc_built() -> bool:
    try:
        pa.jemalloc_memory_pool()
    except NotImplementedError:
        return False
    return True


def _run(env_pool: str | None, set_pool: str | None = None) -> list[str]:
    env = {k: v for k, v in os.environ.items() if k not in ("ARROW_DEFAULT_MEMORY_POOL", "SET_POOL")}
    if set_pool is not None:
        env["SET_POOL"] = set_pool
    if env_pool is not None:
        env["ARROW_DEFAULT_MEMORY_POOL"] = env_pool
    done = subprocess.run([sys.executable, "-c", _JOB], env=env, capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stderr
    return done.stdout.splitlines()


@pytest.mark.skipif(not _jemalloc_built(), reason="this pyarrow is built without jemalloc")
def test_a_table_job_switches_pyarrow_to_jemalloc_unless_the_user_chose_a_pool() -> None:
    before, after = _run(None)
    assert after == "after jemalloc [2]", (before, after)
    assert _run("system") == ["before system", "after system [2]"]  # the user's choice is kept


@pytest.mark.skipif(not _jemalloc_built(), reason="this pyarrow is built without jemalloc")
def test_a_pool_the_application_set_in_code_is_kept() -> None:
    assert _run(None, set_pool="system") == ["before system", "after system [2]"]
