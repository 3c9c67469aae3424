"""Fixtures for the PySpark facade tests: a SparkContext, the installed facade, job runners."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from typing import Any

import pytest

from streamkeep.compat.pyspark import SparkContext, StreamingContext, install, uninstall

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))
SEEDS = os.path.join(HERE, "seed_programs")


def _reset_active() -> None:
    active = StreamingContext.getActive()
    if active is not None:
        active.stop(stopSparkContext=False)
    StreamingContext._active = None
    sc = SparkContext._active_spark_context
    if sc is not None:
        sc.stop()


@pytest.fixture(autouse=True)
def _clean_facade() -> Iterator[None]:
    """Every test starts and ends without an active SparkContext or StreamingContext."""
    _reset_active()
    yield
    _reset_active()


@pytest.fixture
def sc() -> Iterator[SparkContext]:
    """A SparkContext with two default partitions."""
    ctx = SparkContext("local[2]", "compat-test")
    yield ctx
    ctx.stop()


@pytest.fixture
def pyspark() -> Iterator[Any]:
    """The facade installed as ``pyspark`` for the duration of the test."""
    install()
    import pyspark as facade

    yield facade
    uninstall()


def run_batches(ssc: StreamingContext, n: int) -> None:
    """Run `n` batches back to back (no waiting for the clock), then stop."""
    try:
        ssc._ssc.run(max_batches=n)
    finally:
        ssc.stop(stopSparkContext=False)


def streamkeep_cmd(app: str, *args: str) -> list[str]:
    """The command line that runs `app` with ``streamkeep run --pyspark``."""
    return [sys.executable, "-c", "import sys; from streamkeep.cli import main; sys.exit(main(sys.argv[1:]))", "run", "--pyspark", app, *args]


def spawn(app: str, *args: str, **kw: Any) -> subprocess.Popen[str]:
    """Start `app` under ``streamkeep run --pyspark`` with stdout piped (text)."""
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(x for x in (REPO, os.environ.get("PYTHONPATH")) if x), PYTHONUNBUFFERED="1")
    return subprocess.Popen(streamkeep_cmd(app, *args), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, cwd=kw.get("cwd"))
