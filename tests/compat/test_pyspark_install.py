"""``install()``, ``import streamkeep.compat.pyspark.auto`` and ``streamkeep run --pyspark``."""

from __future__ import annotations

import subprocess
import sys
import textwrap
import types
from typing import Any

import pytest
from _pyspark_helpers import REPO, spawn

import streamkeep.compat.pyspark as facade
from streamkeep.errors import ConfigError


def test_pyspark_imports_resolve_to_the_facade(pyspark: Any) -> None:
    from pyspark import SparkConf, SparkContext, StorageLevel
    from pyspark.rdd import RDD, portable_hash
    from pyspark.streaming import DStream, StreamingContext
    from pyspark.streaming.kafka import KafkaUtils, OffsetRange, TopicAndPartition, utf8_decoder
    from pyspark.streaming.listener import StreamingListener

    assert pyspark.SparkContext is SparkContext is facade.SparkContext
    assert (SparkConf, StorageLevel, RDD, portable_hash, DStream, StreamingContext) == (
        facade.SparkConf, facade.StorageLevel, facade.RDD, facade.portable_hash, facade.DStream, facade.StreamingContext
    )
    assert (KafkaUtils, OffsetRange, TopicAndPartition, utf8_decoder, StreamingListener) == (
        facade.KafkaUtils, facade.OffsetRange, facade.TopicAndPartition, facade.utf8_decoder, facade.StreamingListener
    )
    import pyspark.streaming.kafka as kafka_module

    assert pyspark.streaming.kafka is kafka_module
    facade.install()  # a second call changes nothing
    assert sys.modules["pyspark"] is pyspark


def test_unsupported_pyspark_modules_and_names(pyspark: Any) -> None:
    with pytest.raises(ImportError, match="pyspark.sql is not supported") as info:
        import pyspark.sql  # noqa: F401
    assert isinstance(info.value, NotImplementedError)
    with pytest.raises(NotImplementedError, match="pyspark.streaming.kinesis is not supported"):
        from pyspark.streaming.kinesis import KinesisUtils  # noqa: F401
    with pytest.raises(NotImplementedError, match="SQLContext is not supported"):
        from pyspark import SQLContext  # noqa: F401
    with pytest.raises(NotImplementedError, match="pyspark.streaming.foo"):
        pyspark.streaming.foo


def test_uninstall_and_refusing_a_real_pyspark() -> None:
    facade.install()
    facade.uninstall()
    assert "pyspark" not in sys.modules
    sys.modules["pyspark"] = types.ModuleType("pyspark")  # as if the real one were imported
    try:
        with pytest.raises(ConfigError, match="before importing pyspark"):
            facade.install()
    finally:
        del sys.modules["pyspark"]


APP = textwrap.dedent(
    """
    import sys
    from pyspark import SparkContext
    from pyspark.streaming import StreamingContext

    sc = SparkContext(appName="PythonStreamingQueueStream")
    ssc = StreamingContext(sc, 0.05)
    rdds = [sc.parallelize([j for j in range(1, 101)], 2) for _ in range(3)]
    stream = ssc.queueStream(rdds)
    stream.map(lambda x: (x % 10, 1)).reduceByKey(lambda a, b: a + b).count().foreachRDD(
        lambda t, rdd: print("counted", sys.argv[1], rdd.collect(), flush=True))
    ssc.start()
    ssc.awaitTerminationOrTimeout(float(sys.argv[2]))
    ssc.stop(stopSparkContext=True, stopGraceFully=True)
    """
)


def test_streamkeep_run_pyspark_runs_an_unmodified_program(tmp_path: Any) -> None:
    app = tmp_path / "queue_stream.py"
    app.write_text(APP)
    proc = spawn(str(app), "tag", "0.6")
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err
    lines = [ln for ln in out.splitlines() if ln.startswith("counted")]
    assert lines[:3] == ["counted tag [10]"] * 3  # each queued RDD: 100 numbers, 10 keys


def test_the_one_line_import_alternative(tmp_path: Any) -> None:
    app = tmp_path / "auto.py"
    app.write_text("import streamkeep.compat.pyspark.auto  # noqa: F401\n" + APP)
    proc = subprocess.run([sys.executable, str(app), "auto", "0.3"], capture_output=True, text=True, timeout=120, cwd=REPO)
    assert proc.returncode == 0, proc.stderr
    assert "counted auto [10]" in proc.stdout
