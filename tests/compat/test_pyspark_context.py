"""StreamingContext facade: lifecycle, recovery with getOrCreate, listeners, names, errors."""

from __future__ import annotations

import json
import os
import threading
from typing import Any, NamedTuple

import pytest
from _pyspark_helpers import run_batches

from streamkeep.compat.pyspark import SparkConf, SparkContext, StreamingContext, StreamingListener
from streamkeep.errors import UserFunctionError


class _CountState(NamedTuple):
    """A state class, as PySpark programs keep (picklable: defined at the module's top level)."""

    n: int


def _running_count_app(ckpt: str, calls: list[str], out: list[Any], *, name: str | None = None) -> StreamingContext:
    """A stateful word count; the setup function PySpark programs pass to getOrCreate."""
    sc = SparkContext.getOrCreate(SparkConf().setMaster("local[2]").setAppName("running"))
    ssc = StreamingContext(sc, 1)
    calls.append("setup")
    words = ssc.queueStream([["a", "b"], ["a"], ["c", "a"], ["b"]])
    kw = {} if name is None else {"name": name}
    counts = words.map(lambda w: (w, 1)).updateStateByKey(lambda vs, old: sum(vs) + (old or 0), **kw)
    counts.foreachRDD(lambda rdd: out.append(sorted(rdd.collect())))
    ssc.checkpoint(ckpt)
    return ssc


def test_get_or_create_resumes_state_and_runs_setup_each_time(tmp_path: Any) -> None:
    ckpt = str(tmp_path / "ckpt")
    calls: list[str] = []
    out: list[Any] = []
    ssc = StreamingContext.getOrCreate(ckpt, lambda: _running_count_app(ckpt, calls, out))
    run_batches(ssc, 2)
    assert out == [[("a", 1), ("b", 1)], [("a", 2), ("b", 1)]]
    ssc2 = StreamingContext.getOrCreate(ckpt, lambda: _running_count_app(ckpt, calls, out))
    assert ssc2 is not ssc
    run_batches(ssc2, 2)
    assert calls == ["setup", "setup"]  # the checkpoint holds no code: setup runs on recovery too
    assert out[2:] == [[("a", 3), ("b", 1), ("c", 1)], [("a", 3), ("b", 2), ("c", 1)]]


def test_get_or_create_sets_the_checkpoint_when_setup_does_not(tmp_path: Any) -> None:
    ckpt = str(tmp_path / "ckpt")
    out: list[Any] = []

    def setup() -> StreamingContext:
        ssc = StreamingContext(SparkContext.getOrCreate(), 1)
        ssc.queueStream([[1], [2]]).map(lambda x: (x, 1)).updateStateByKey(lambda vs, s: sum(vs) + (s or 0)).foreachRDD(lambda r: out.append(r.collect()))
        return ssc  # like the seed program: no ssc.checkpoint() call

    run_batches(StreamingContext.getOrCreate(ckpt, lambda: setup()), 1)
    run_batches(StreamingContext.getOrCreate(ckpt, lambda: setup()), 1)
    assert out == [[(1, 1)], [(1, 1), (2, 1)]]
    assert os.path.isdir(os.path.join(ckpt, "log"))


def _operators(ckpt: str, capsys: pytest.CaptureFixture[str]) -> list[str]:
    """Names of the stateful operators in a checkpoint, from ``streamkeep checkpoint inspect --json``."""
    from streamkeep.cli import main

    capsys.readouterr()
    assert main(["checkpoint", "inspect", ckpt, "--json"]) == 0
    return sorted(json.loads(capsys.readouterr().out)["operators"])


def test_derived_names_are_stable_and_name_pins_state(tmp_path: Any, capsys: pytest.CaptureFixture[str]) -> None:
    ckpt = str(tmp_path / "ckpt")
    out: list[Any] = []
    run_batches(StreamingContext.getOrCreate(ckpt, lambda: _running_count_app(ckpt, [], out, name="counts")), 1)
    assert _operators(ckpt, capsys) == ["counts"]
    ckpt2 = str(tmp_path / "ckpt2")
    run_batches(StreamingContext.getOrCreate(ckpt2, lambda: _running_count_app(ckpt2, [], out)), 1)
    assert _operators(ckpt2, capsys) == ["update_state_by_key#1"]  # derived, without a warning


def test_awaitTermination_reraises_the_job_failure(sc: SparkContext) -> None:
    ssc = StreamingContext(sc, 0.05)
    ssc.queueStream([[1], [0]]).map(lambda x: 1 // x).pprint()
    ssc.start()
    assert StreamingContext.getActive() is ssc
    with pytest.raises(UserFunctionError) as info:
        ssc.awaitTermination(timeout=30)
    assert isinstance(info.value.__cause__, ZeroDivisionError)
    assert StreamingContext.getActive() is None


def test_start_stop_and_the_active_context(sc: SparkContext) -> None:
    ssc = StreamingContext(sc, 0.05)
    seen = threading.Event()
    ssc.queueStream([], default=[1]).foreachRDD(lambda rdd: seen.set())
    ssc.start()
    assert StreamingContext.getActiveOrCreate(None, lambda: pytest.fail("not called")) is ssc
    other = StreamingContext(sc, 1)
    other.queueStream([[1]]).pprint()
    with pytest.raises(ValueError, match="Only one StreamingContext"):
        other.start()
    assert seen.wait(30)
    assert ssc.awaitTerminationOrTimeout(0.01) is False
    ssc.stop(stopSparkContext=False, stopGraceFully=True)
    assert ssc.awaitTerminationOrTimeout(5) is True
    assert StreamingContext.getActive() is None
    assert SparkContext._active_spark_context is sc  # kept: stopSparkContext=False
    with pytest.raises(ValueError, match="stopped"):
        ssc.start()  # as in Spark, a stopped context cannot be restarted
    ssc.stop()  # stopSparkContext=True by default
    assert SparkContext._active_spark_context is None


def test_only_one_spark_context(sc: SparkContext) -> None:
    with pytest.raises(ValueError, match="Cannot run multiple SparkContexts"):
        SparkContext("local", "second")
    assert SparkContext.getOrCreate() is sc


class _Recorder(StreamingListener):
    def __init__(self) -> None:
        super().__init__()
        self.infos: list[Any] = []
        self.started: list[Any] = []

    def onStreamingStarted(self, streamingStarted: Any) -> None:
        self.started.append(streamingStarted.time)

    def onBatchCompleted(self, batchCompleted: Any) -> None:
        self.infos.append(batchCompleted.batchInfo())


def test_streaming_listener_gets_pyspark_shaped_batch_info(sc: SparkContext) -> None:
    ssc = StreamingContext(sc, 1)
    rec = _Recorder()
    ssc.addStreamingListener(rec)
    ssc.queueStream([[1, 2, 3], [], [4]]).pprint()
    run_batches(ssc, 3)
    assert [i.numRecords() for i in rec.infos] == [3, 0, 1]
    times = [i.batchTime().milliseconds() for i in rec.infos]
    assert times[1] - times[0] == 1000 and times[2] - times[1] == 1000
    for i in rec.infos:
        assert i.processingDelay() >= 0 and i.schedulingDelay() >= 0
        assert i.totalDelay() == i.schedulingDelay() + i.processingDelay()
        assert i.processingEndTime() >= i.processingStartTime()


def test_a_failing_listener_does_not_stop_the_job(sc: SparkContext, caplog: pytest.LogCaptureFixture) -> None:
    class Broken(StreamingListener):
        def onBatchCompleted(self, batchCompleted: Any) -> None:
            raise RuntimeError("listener bug")

    ssc = StreamingContext(sc, 1)
    ssc.addStreamingListener(Broken())
    out: list[Any] = []
    ssc.queueStream([[1], [2]]).foreachRDD(lambda rdd: out.append(rdd.collect()))
    run_batches(ssc, 2)
    assert out == [[1], [2]]
    assert "listener bug" in caplog.text


def test_constructor_and_remember_validation(sc: SparkContext) -> None:
    with pytest.raises(ValueError, match="batchDuration"):
        StreamingContext(sc)
    with pytest.raises(TypeError, match="SparkContext"):
        StreamingContext("local", 1)  # type: ignore[arg-type]
    ssc = StreamingContext(sc, 2)
    assert ssc.sparkContext is sc
    ssc.remember(60)
    with pytest.raises(ValueError):
        ssc.remember(-1)
    stream = ssc.textFileStream("/nonexistent-dir")
    assert stream.context() is ssc


def test_spark_context_basics(tmp_path: Any) -> None:
    conf = SparkConf().setAppName("app").setMaster("local[3]").set("spark.x", 1)
    assert conf.get("spark.x") == "1" and conf.contains("spark.x") and ("spark.app.name", "app") in conf.getAll()
    with SparkContext(conf=conf) as sc:
        assert (sc.appName, sc.master, sc.defaultParallelism, sc.defaultMinPartitions) == ("app", "local[3]", 3, 2)
        sc.setLogLevel("WARN")
        with pytest.raises(ValueError, match="did not match"):
            sc.setLogLevel("LOUD")
        sc.setCheckpointDir(str(tmp_path))
        assert sc.getCheckpointDir() == str(tmp_path)
        assert sc.parallelize(range(7), 3).glom().collect() == [[0, 1], [2, 3], [4, 5, 6]]
        assert sc.range(3).collect() == [0, 1, 2] and sc.emptyRDD().isEmpty()
        (tmp_path / "a.txt").write_text("x\ny\n")
        (tmp_path / "b.txt").write_text("z\n")
        (tmp_path / "_ignored").write_text("no\n")
        assert sc.textFile(str(tmp_path)).collect() == ["x", "y", "z"]
        assert sc.textFile(str(tmp_path / "a.txt")).count() == 2
        assert sc.textFile(str(tmp_path / "*.txt")).getNumPartitions() == 2
        assert sc.union([sc.parallelize([1]), sc.parallelize([2])]).collect() == [1, 2]
        assert sc.broadcast({"k": 1}).value == {"k": 1}
        acc = sc.accumulator(0)
        sc.parallelize([1, 2, 3]).foreach(lambda x: acc.add(x))
        acc += 4
        assert acc.value == 10
        assert sc.getConf().get("spark.app.name") == "app"
    assert SparkContext._active_spark_context is None


def test_pinning_the_derived_name_keeps_state_and_renaming_is_refused(tmp_path: Any) -> None:
    from streamkeep.errors import IncompatibleCheckpointError

    ckpt = str(tmp_path / "ckpt")
    out: list[Any] = []
    run_batches(StreamingContext.getOrCreate(ckpt, lambda: _running_count_app(ckpt, [], out)), 1)
    # the migration guide's recipe: pin the derived name, keep the state
    run_batches(StreamingContext.getOrCreate(ckpt, lambda: _running_count_app(ckpt, [], out, name="update_state_by_key#1")), 1)
    assert out == [[("a", 1), ("b", 1)], [("a", 2), ("b", 1)]]
    with pytest.raises(IncompatibleCheckpointError, match="update_state_by_key#1"):
        StreamingContext.getOrCreate(ckpt, lambda: _running_count_app(ckpt, [], out, name="counts"))
    SparkContext.getOrCreate().stop()

    def allow_loss() -> StreamingContext:
        SparkContext(conf=SparkConf().set("spark.streamkeep.allowStateLoss", "update_state_by_key#1"))
        return _running_count_app(ckpt, [], out, name="counts")

    out.clear()
    run_batches(StreamingContext.getOrCreate(ckpt, allow_loss), 1)
    assert out == [[("a", 1), ("c", 1)]]  # "counts" starts empty, at the third queued batch


def test_a_stateful_operator_added_without_name_before_a_derived_one_is_refused(tmp_path: Any) -> None:
    """The migration guide's case: a second updateStateByKey added before the first would take its derived name.

    Both keep int counts, so handing the old state to the new operator would fail nothing: the
    restore must refuse, and naming the new operator must restore the old state into the old one.
    """
    from streamkeep.errors import IncompatibleCheckpointError

    ckpt = str(tmp_path / "ckpt")
    out: list[Any] = []
    run_batches(StreamingContext.getOrCreate(ckpt, lambda: _running_count_app(ckpt, [], out)), 1)
    assert out == [[("a", 1), ("b", 1)]]
    lengths: list[Any] = []

    def with_new_operator(name: str | None) -> StreamingContext:
        sc = SparkContext.getOrCreate(SparkConf().setMaster("local[2]"))
        ssc = StreamingContext(sc, 1)
        words = ssc.queueStream([["a", "b"], ["a"], ["c", "a"], ["b"]])
        kw = {} if name is None else {"name": name}
        lens = words.map(lambda w: (len(w), 1)).updateStateByKey(lambda vs, old: sum(vs) + (old or 0), **kw)  # added first
        lens.foreachRDD(lambda rdd: lengths.append(sorted(rdd.collect())))
        counts = words.map(lambda w: (w, 1)).updateStateByKey(lambda vs, old: sum(vs) + (old or 0))
        counts.foreachRDD(lambda rdd: out.append(sorted(rdd.collect())))
        ssc.checkpoint(ckpt)
        return ssc

    with pytest.raises(IncompatibleCheckpointError, match=r"new stateful operator 'update_state_by_key#2'.*without name="):
        StreamingContext.getOrCreate(ckpt, lambda: with_new_operator(None))
    SparkContext.getOrCreate().stop()
    run_batches(StreamingContext.getOrCreate(ckpt, lambda: with_new_operator("lengths")), 1)
    assert out[1:] == [[("a", 2), ("b", 1)]]  # the old counts went on in the old operator
    assert lengths == [[(1, 1)]]  # the new operator started empty
    SparkContext.getOrCreate().stop()


def test_state_the_codec_cannot_store_says_how_to_opt_in_from_a_pyspark_program(tmp_path: Any) -> None:
    """The message said codec='pickle' on the operator, which facade operators do not take; following the
    SparkConf setting it names then restores the state."""
    from streamkeep.errors import CheckpointError

    ckpt = str(tmp_path / "ckpt")
    out: list[Any] = []
    state = _CountState

    def setup(conf: SparkConf) -> StreamingContext:
        ssc = StreamingContext(SparkContext.getOrCreate(conf), 1)
        pairs = ssc.queueStream([[("a", 1)], [("a", 2)]]).updateStateByKey(lambda new, old: state((old.n if old else 0) + len(new)))
        pairs.foreachRDD(lambda rdd: out.append(rdd.collect()))
        ssc.checkpoint(ckpt)
        return ssc

    with pytest.raises(CheckpointError) as info:
        run_batches(StreamingContext.getOrCreate(ckpt, lambda: setup(SparkConf())), 1)
    SparkContext.getOrCreate().stop()
    assert "conf.set('spark.streamkeep.codec', 'pickle')" in str(info.value)
    conf = SparkConf().set("spark.streamkeep.codec", "pickle")
    run_batches(StreamingContext.getOrCreate(ckpt, lambda: setup(conf)), 1)
    assert out[-1] == [("a", state(1))]
    SparkContext.getOrCreate().stop()


def test_state_pickle_cannot_store_says_to_make_it_picklable(tmp_path: Any) -> None:
    """With the pickle codec already on, the message told the user to opt in to pickle."""
    from streamkeep.errors import CheckpointError

    class Local:  # defined in a function: pickle cannot store it
        pass

    ssc = StreamingContext(SparkContext.getOrCreate(SparkConf().set("spark.streamkeep.codec", "pickle")), 1)
    ssc.queueStream([[("a", 1)]]).updateStateByKey(lambda new, old: Local()).pprint()
    ssc.checkpoint(str(tmp_path / "ckpt"))
    with pytest.raises(CheckpointError, match=r"pickle codec cannot store .*Make it picklable") as info:
        run_batches(ssc, 1)
    assert "opt in to pickle" not in str(info.value)
    SparkContext.getOrCreate().stop()


def test_the_articles_hdfs_checkpoint_says_what_hdfs_needs(tmp_path: Any) -> None:
    """The articles checkpoint to hdfs://master:9000/...; the error was libjvm's dlopen failure and 'check the
    credentials': it must say what hdfs:// needs and what the tests cover, and nothing may run."""
    from streamkeep.errors import CheckpointError, ConfigError

    url = "hdfs://127.0.0.1:1/streaming/checkpoint/"
    out: list[Any] = []
    with pytest.raises((CheckpointError, ConfigError)) as info:
        ssc = StreamingContext.getOrCreate(url, lambda: _running_count_app(url, [], out))
        run_batches(ssc, 1)
    SparkContext.getOrCreate().stop()
    assert "hdfs:// goes through fsspec to pyarrow's HadoopFileSystem" in str(info.value)
    assert "prefer a local disk or an s3:// URL" in str(info.value)
    assert out == []


def test_a_checkpoint_reused_without_getOrCreate_names_getOrCreate(tmp_path: Any) -> None:
    """PySpark programs often call ssc.checkpoint(d) without getOrCreate; the second run is refused, and the
    message must name the PySpark call that resumes it, not only the native get_or_create."""
    from streamkeep.errors import CheckpointError

    ckpt = str(tmp_path / "ckpt")
    out: list[Any] = []
    run_batches(_running_count_app(ckpt, [], out), 1)
    SparkContext.getOrCreate().stop()
    with pytest.raises(CheckpointError, match=r"a PySpark program: StreamingContext.getOrCreate\(checkpointPath, setupFunc\)\) to resume it"):
        run_batches(_running_count_app(ckpt, [], out), 1)
    SparkContext.getOrCreate().stop()


def test_removing_the_first_of_two_derived_operators_warns_that_names_shifted(tmp_path: Any) -> None:
    """Removing the first of two unnamed updateStateByKey gives the second one the first one's derived name (and
    state); the refusal names only the vanished '#2', so the message must say that the names shifted."""
    from streamkeep.errors import IncompatibleCheckpointError

    ckpt = str(tmp_path / "ckpt")

    def app(both: bool) -> StreamingContext:
        ssc = StreamingContext(SparkContext.getOrCreate(SparkConf().setMaster("local[2]")), 1)
        words = ssc.queueStream([["a"], ["b"]])
        if both:
            words.map(lambda w: (len(w), 1)).updateStateByKey(lambda vs, old: sum(vs) + (old or 0)).pprint()
        words.map(lambda w: (w, 1)).updateStateByKey(lambda vs, old: sum(vs) + (old or 0)).pprint()
        ssc.checkpoint(ckpt)
        return ssc

    run_batches(StreamingContext.getOrCreate(ckpt, lambda: app(True)), 1)
    with pytest.raises(IncompatibleCheckpointError, match=r"'update_state_by_key#2'.*if you removed an earlier one, the ones after it now carry its name"):
        StreamingContext.getOrCreate(ckpt, lambda: app(False))
    SparkContext.getOrCreate().stop()


def test_two_unnamed_update_state_by_key_defined_in_the_other_order_are_refused(tmp_path: Any) -> None:
    """PySpark programs never name operators: swapping two updateStateByKey calls over two streams swaps their
    derived names, and each would continue the other's counts. The restore refuses, naming both inputs."""
    from streamkeep.errors import IncompatibleCheckpointError

    ckpt = str(tmp_path / "ckpt")
    out: dict[str, list[Any]] = {"clicks": [], "views": []}

    def app(order: tuple[str, str]) -> StreamingContext:
        sc = SparkContext.getOrCreate(SparkConf().setMaster("local[2]"))
        ssc = StreamingContext(sc, 1)
        streams = {"clicks": ssc.queueStream([["a"]] * 4), "views": ssc.queueStream([["a", "a", "a"]] * 4)}
        for s in order:
            counts = streams[s].map(lambda w: (w, 1)).updateStateByKey(lambda vs, old: sum(vs) + (old or 0))
            counts.foreachRDD(lambda rdd, s=s: out[s].append(sorted(rdd.collect())))
        ssc.checkpoint(ckpt)
        return ssc

    run_batches(StreamingContext.getOrCreate(ckpt, lambda: app(("clicks", "views"))), 1)
    assert out == {"clicks": [[("a", 1)]], "views": [[("a", 3)]]}
    with pytest.raises(IncompatibleCheckpointError, match=r"'update_state_by_key#1' \(update_state_by_key\) has no name=, and it reads 'queue#2' while its stored state was built from 'queue#1'"):
        StreamingContext.getOrCreate(ckpt, lambda: app(("views", "clicks")))
    SparkContext.getOrCreate().stop()
