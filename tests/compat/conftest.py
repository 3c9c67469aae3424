"""Fixtures for the PySpark facade tests: a SparkContext, the installed facade (helpers: _pyspark_helpers.py)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from streamkeep.compat.pyspark import SparkContext, StreamingContext, install, uninstall


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


