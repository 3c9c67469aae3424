"""Tables (issue 15): Arrow batches through the graph, aggregate_state, columnar checkpoints, code-change rules."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pytest

import streamkeep as sk
from streamkeep.batch import Batch
from streamkeep.codec import MSGPACK
from streamkeep.errors import ConfigError, IncompatibleCheckpointError, UserFunctionError
from streamkeep.tables import Combine
from streamkeep.testing import ManualClock, run_batches

ROOT = Path(__file__).resolve().parents[3]

WORDS = [
    ["a b a c", "b d"],
    ["a", "e e e"],
    [],
    ["c a b", "f"],
]


def _rows(table: Any) -> list[tuple[Any, ...]]:
    return sorted(tuple(r.values()) for r in table.to_pylist())


# --------------------------------------------------------------------------- batch conversions


def test_records_and_tables_convert_both_ways() -> None:
    b = Batch([[{"k": "a", "v": 1}, {"k": "b", "v": 2}], [{"k": "c", "v": 3}]])
    tables = b.to_tables()
    assert [type(t).__name__ for t in tables.collect()] == ["Table", "Table"]  # one table per partition
    assert tables.to_records().collect() == b.collect()
    assert tables.to_arrow().to_pylist() == b.collect()
    assert b.to_arrow().to_pylist() == b.collect()  # records convert directly too
    assert b.to_pandas()["v"].tolist() == [1, 2, 3]
    assert b.to_polars()["k"].to_list() == ["a", "b", "c"]
    pairs = Batch([[("a", 1), ("b", 2)]]).to_tables(("word", "n"))
    assert pairs.to_arrow().column_names == ["word", "n"]
    assert Batch([[1, 2]]).to_arrow().column_names == ["value"]
    typed = Batch([[]]).to_tables(pa.schema([("x", pa.int32())]))
    assert typed.to_arrow().schema == pa.schema([("x", pa.int32())])  # a schema keeps the columns of an empty batch


def test_map_tables_is_lazy_and_fused_with_record_operators() -> None:
    calls: list[int] = []

    def double(t: Any) -> Any:
        calls.append(t.num_rows)
        return t.set_column(0, "x", pc.multiply(t["x"], 2))

    b = Batch([[1, 2, 3]]).map(lambda x: {"x": x}).to_tables().map_tables(double)
    assert calls == []  # nothing ran yet
    assert repr(b).endswith("lazy ops=['map', 'to_tables', 'map_tables'])")  # one fused pass
    assert b.to_records().collect() == [{"x": 2}, {"x": 4}, {"x": 6}]
    assert calls == [3]


def test_map_tables_on_records_says_to_call_to_tables() -> None:
    with pytest.raises(UserFunctionError, match=r"call \.to_tables\(\) before map_tables"):
        Batch([[1]]).map_tables(lambda t: t).collect()
    with pytest.raises(UserFunctionError, match="must return a pyarrow.Table"):
        Batch([[1]]).to_tables().map_tables(lambda t: t.num_rows).collect()


def test_msgpack_codec_round_trips_arrow_tables() -> None:
    t = pa.table({"a": [1, None, 3], "b": ["x", "y", None]})
    got = MSGPACK.decode(MSGPACK.encode({"plan": [t, ("k", 1)]}))
    assert got["plan"][0].equals(t) and got["plan"][1] == ("k", 1)


# --------------------------------------------------------------------------- golden: records vs tables


def _record_job(ssc: sk.StreamingContext, s: sk.DStream[Any]) -> sk.DStream[Any]:
    return s.flat_map(str.split).map(lambda w: (w, 1)).update_state_by_key(lambda new, old: (old or 0) + sum(new), name="counts")


def _table_job(ssc: sk.StreamingContext, s: sk.DStream[Any]) -> sk.DStream[Any]:
    def split(t: Any) -> Any:
        return pa.table({"word": pc.list_flatten(pc.split_pattern(t["value"], " "))})

    counts = s.to_tables(pa.schema([("value", pa.string())])).map_tables(split).aggregate_state(
        by="word", aggs={"n": ("*", "count")}, name="counts"
    )
    return counts.to_records().map(lambda r: (r["word"], r["n"]))


def test_golden_word_count_records_equal_tables_per_batch() -> None:
    want = run_batches(_record_job, WORDS, sort=True)
    got = run_batches(_table_job, WORDS, sort=True)
    assert got == want
    assert want[-1] == sorted([("a", 4), ("b", 3), ("c", 2), ("d", 1), ("e", 3), ("f", 1)])


STATS_INPUT = [
    [("a", 3), ("b", -1), ("a", 5)],
    [("c", 2)],
    [("a", 1), ("c", 7), ("b", 4), ("b", 0)],
]


def _stats_update(new: list[int], old: dict[str, Any] | None) -> dict[str, Any]:
    o = old or {"n": 0, "s": 0, "mn": None, "mx": None, "last": None}
    vals = new + ([] if o["mn"] is None else [o["mn"], o["mx"]])
    last = new[-1] if new else o["last"]
    return {"n": o["n"] + len(new), "s": o["s"] + sum(new), "mn": min(vals), "mx": max(vals), "last": last}


def test_golden_every_builtin_aggregate_equals_update_state_by_key() -> None:
    def records(ssc: sk.StreamingContext, s: sk.DStream[Any]) -> sk.DStream[Any]:
        st = s.update_state_by_key(_stats_update, name="stats")
        return st.map(lambda kv: (kv[0], kv[1]["n"], kv[1]["s"], kv[1]["mn"], kv[1]["mx"], kv[1]["s"] / kv[1]["n"], kv[1]["last"]))

    def tables(ssc: sk.StreamingContext, s: sk.DStream[Any]) -> sk.DStream[Any]:
        aggs = {"n": ("*", "count"), "s": ("v", "sum"), "mn": ("v", "min"), "mx": ("v", "max"), "avg": ("v", "mean"), "last": ("v", "last")}
        st = s.to_tables(["k", "v"]).aggregate_state(by="k", aggs=aggs, name="stats")
        return st.to_records().map(lambda r: tuple(r.values()))

    want = run_batches(records, STATS_INPUT, sort=True, num_partitions=2)
    got = run_batches(tables, STATS_INPUT, sort=True, num_partitions=2)
    assert got == want


def test_user_combine_is_vectorised_and_named() -> None:
    calls: list[int] = []

    def merge(old: Any, new: Any) -> Any:
        calls.append(len(new))
        return pc.max_element_wise(old, new, skip_nulls=True)

    def job(ssc: sk.StreamingContext, s: sk.DStream[Any]) -> sk.DStream[Any]:
        top = Combine("max", merge, name="top")
        return s.to_tables(["k", "v"]).aggregate_state(by="k", aggs={"top": ("v", top)}, name="tops").to_records().map(lambda r: (r["k"], r["top"]))

    got = run_batches(job, STATS_INPUT, sort=True)
    assert got[-1] == [("a", 5), ("b", 4), ("c", 7)]
    assert calls == [1, 3]  # once per batch that had stored keys (never per key)


def test_emit_changed_and_multi_column_keys() -> None:
    def job(ssc: sk.StreamingContext, s: sk.DStream[Any]) -> sk.DStream[Any]:
        st = s.to_tables(["a", "b", "v"]).aggregate_state(by=["a", "b"], aggs={"s": ("v", "sum")}, name="s", emit="changed")
        return st.to_records().map(lambda r: (r["a"], r["b"], r["s"]))

    got = run_batches(job, [[("x", 1, 1), ("x", 2, 1), ("x", 1, 5)], [("x", 2, 3)], [("y", 1, 1)]], sort=True)
    assert got == [[("x", 1, 6), ("x", 2, 1)], [("x", 2, 4)], [("y", 1, 1)]]


def test_null_keys_are_refused_by_name() -> None:
    def job(ssc: sk.StreamingContext, s: sk.DStream[Any]) -> sk.DStream[Any]:
        return s.to_tables(["k", "v"]).aggregate_state(by="k", aggs={"n": ("*", "count")}, name="nulls")

    with pytest.raises(ConfigError, match=r"aggregate_state 'nulls': the key column 'k' has 1 null value"):
        run_batches(job, [[("a", 1), (None, 2)]])


def test_tables_survive_union_window_and_transform() -> None:
    def job(ssc: sk.StreamingContext, s: sk.DStream[Any]) -> sk.DStream[Any]:
        t = s.to_tables(["k", "v"])
        other = t.map_tables(lambda x: x.filter(pc.equal(x["k"], "a")))
        both = t.union(other).window(2.0, name="w").transform(lambda b: Batch([[b.to_arrow()]], b.batch_time_ms))
        return both.map_tables(lambda x: x.group_by("k").aggregate([("v", "sum")])).to_records().map(lambda r: (r["k"], r["v_sum"]))

    got = run_batches(job, STATS_INPUT, sort=True, num_batches=3)
    # window of 2 batches over (all rows + the rows of 'a' again)
    assert got == [[("a", 16), ("b", -1)], [("a", 16), ("b", -1), ("c", 2)], [("a", 2), ("b", 4), ("c", 9)]]


# --------------------------------------------------------------------------- checkpoints and code changes


def _ckpt_setup(url: str, aggs: dict[str, Any], out: list[Any], by: str = "k", name: str = "agg") -> Any:
    def setup() -> sk.StreamingContext:
        ssc = sk.StreamingContext(1.0, checkpoint=url, clock=ManualClock(), snapshot_every=2)
        tables = [[pa.table({"k": [k for k, _ in b], "v": [v for _, v in b]})] for b in STATS_INPUT * 2]
        s = ssc.queue_stream(tables, name="q")
        s.aggregate_state(by=by, aggs=aggs, name=name).foreach_batch(lambda b: out.append(_rows(b.to_arrow())))
        return ssc

    return setup


def test_restart_restores_table_state_exactly(tmp_path: Path) -> None:
    aggs = {"n": ("*", "count"), "s": ("v", "sum"), "avg": ("v", "mean")}
    want: list[Any] = []
    ssc = sk.StreamingContext.get_or_create(str(tmp_path / "a"), _ckpt_setup(str(tmp_path / "a"), aggs, want))
    ssc.run(max_batches=6)
    ssc.stop()
    got: list[Any] = []
    url = str(tmp_path / "b")
    for n in (2, 1, 3):  # stop and resume twice: snapshots and delta chains are both read back
        ssc = sk.StreamingContext.get_or_create(url, _ckpt_setup(url, aggs, got))
        ssc.run(max_batches=n)
        ssc.stop()
    assert got == want and len(want) == 6


def test_delta_bytes_follow_changed_rows(tmp_path: Path) -> None:
    from streamkeep.testing import state_of

    url = str(tmp_path / "ck")
    keys = [f"k{i}" for i in range(20_000)]
    batches = [[pa.table({"k": keys, "v": [1] * len(keys)})], [pa.table({"k": keys[:10], "v": [1] * 10})]]
    ssc = sk.StreamingContext(1.0, checkpoint=url, clock=ManualClock(), snapshot_every=100, inline_delta_bytes=0)
    ssc.queue_stream(batches, name="q").aggregate_state(by="k", aggs={"n": ("*", "count")}, name="agg").foreach_batch(lambda b: None)
    ssc.run(max_batches=2)
    assert len(state_of(ssc, "agg")["rows"]) > 50_000  # the snapshot form holds every key
    ssc.stop()
    files = sorted((Path(url) / "state" / "agg").iterdir())
    sizes = [f.stat().st_size for f in files if f.name.endswith(".delta")]
    assert len(sizes) == 2
    assert sizes[1] * 50 < sizes[0]  # 10 changed rows cost a small fraction of 20,000


def test_a_new_aggregate_column_restores_and_starts_null(tmp_path: Path) -> None:
    url = str(tmp_path / "ck")
    out: list[Any] = []
    ssc = sk.StreamingContext.get_or_create(url, _ckpt_setup(url, {"n": ("*", "count")}, out))
    ssc.run(max_batches=3)
    ssc.stop()
    out.clear()
    ssc = sk.StreamingContext.get_or_create(url, _ckpt_setup(url, {"n": ("*", "count"), "s": ("v", "sum")}, out))
    ssc.run(max_batches=1)  # batch 4 = STATS_INPUT[0] again: keys a, b
    ssc.stop()
    assert out == [[("a", 5, 8), ("b", 4, -1), ("c", 2, None)]]  # c was not in the batch: its new column is null


@pytest.mark.parametrize(
    ("aggs", "by", "why"),
    [
        ({"n": ("*", "count"), "s": ("v", "max")}, "k", r"aggregate column 's': sum of 'v' -> max of 'v'"),
        ({"n": ("*", "count")}, "k", r"aggregate column 's' \(sum of 'v'\) removed"),
        ({"n": ("*", "count"), "s": ("v", "sum")}, "v", r"key columns \['k'\] -> \['v'\]"),
    ],
)
def test_state_schema_changes_are_refused_by_name(tmp_path: Path, aggs: dict[str, Any], by: str, why: str) -> None:
    url = str(tmp_path / "ck")
    ssc = sk.StreamingContext.get_or_create(url, _ckpt_setup(url, {"n": ("*", "count"), "s": ("v", "sum")}, []))
    ssc.run(max_batches=2)
    ssc.stop()
    with pytest.raises(IncompatibleCheckpointError, match=r"stateful operator 'agg' changed shape \(state schema: .*" + why):
        sk.StreamingContext.get_or_create(url, _ckpt_setup(url, aggs, [], by=by))


def test_cli_inspect_verify_and_diff_understand_table_state(tmp_path: Path) -> None:
    url = str(tmp_path / "ck")
    ssc = sk.StreamingContext.get_or_create(url, _ckpt_setup(url, {"n": ("*", "count"), "s": ("v", "sum")}, []))
    ssc.run(max_batches=3)
    ssc.stop()
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    cli = [sys.executable, "-m", "streamkeep.cli", "checkpoint"]
    r = subprocess.run([*cli, "inspect", url, "--json"], capture_output=True, text=True, env=env, timeout=120)
    assert r.returncode == 0, r.stderr
    op = json.loads(r.stdout)["operators"]["agg"]
    assert op["kind"] == "aggregate_state" and op["keys"] == 3
    assert op["table"]["columns"] == ["k: string", "n: int64", "s: int64"]
    r = subprocess.run([*cli, "verify", url], capture_output=True, text=True, env=env, timeout=120)
    assert r.returncode == 0 and "OK" in r.stdout, r.stdout + r.stderr
    app = tmp_path / "app.py"
    app.write_text(
        textwrap.dedent(
            f"""
            import streamkeep as sk
            ssc = sk.StreamingContext(1.0, checkpoint={url!r})
            ssc.queue_stream([], name="q").aggregate_state(by="k", aggs={{"n": ("*", "count"), "s": ("v", "min")}}, name="agg").foreach_batch(print)
            ssc.start()
            """
        )
    )
    r = subprocess.run([*cli, "diff", url, str(app)], capture_output=True, text=True, env=env, timeout=120)
    assert r.returncode == 1, r.stdout + r.stderr
    assert "agg: state schema: aggregate column 's': sum of 'v' -> min of 'v'" in r.stdout


def test_cli_verify_reports_an_arrow_payload_that_does_not_decode(tmp_path: Path) -> None:
    from streamkeep.checkpoint import Checkpoint

    url = str(tmp_path / "ck")
    ssc = sk.StreamingContext.get_or_create(url, _ckpt_setup(url, {"n": ("*", "count")}, []))
    ssc.run(max_batches=1)
    ssc.stop()
    # A state file whose frame and checksum are right but whose Arrow IPC bytes are not (written through the
    # checkpoint's own framing, as a bug or a foreign writer would).
    Checkpoint(url).write_state("agg", 999_000, "delta", MSGPACK.encode({"rows": b"\xff\xff not arrow", "n": 1}), "msgpack")
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    r = subprocess.run([sys.executable, "-m", "streamkeep.cli", "checkpoint", "verify", url], capture_output=True, text=True, env=env, timeout=120)
    assert r.returncode == 1, r.stdout + r.stderr
    assert "000000000999000.delta: passed its checksum but its Arrow table (rows) does not decode" in r.stdout


# --------------------------------------------------------------------------- without pyarrow

_NO_PYARROW = """
import sys, tempfile, os
sys.modules["pyarrow"] = None  # any import of pyarrow now raises ImportError
import streamkeep as sk
from streamkeep.testing import ManualClock
assert "pyarrow" not in [m for m in sys.modules if sys.modules[m] is not None]
url = os.path.join(tempfile.mkdtemp(), "ck")
def setup():
    ssc = sk.StreamingContext(1.0, checkpoint=url, clock=ManualClock())
    s = ssc.queue_stream([["a b a"], ["b"]], name="q").flat_map(str.split).map(lambda w: (w, 1))
    s.update_state_by_key(lambda n, o: (o or 0) + sum(n), name="c").window(2.0, name="w").foreach_batch(lambda b: print(sorted(b.collect())))
    return ssc
ssc = sk.StreamingContext.get_or_create(url, setup)
ssc.run(max_batches=2)
ssc.stop()
try:
    ssc2 = sk.StreamingContext(1.0)
    ssc2.queue_stream([[1]], name="q").to_tables()
except sk.ConfigError as exc:
    print("ERROR:", exc)
try:
    sk.Batch([[1]]).to_arrow()
except sk.ConfigError as exc:
    print("ERROR:", exc)
"""


def test_engine_works_without_pyarrow_and_table_apis_name_the_extra() -> None:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    r = subprocess.run([sys.executable, "-c", _NO_PYARROW], capture_output=True, text=True, env=env, timeout=120)
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    assert lines[:2] == ["[('a', 2), ('b', 1)]", "[('a', 2), ('a', 2), ('b', 1), ('b', 2)]"]
    errors = [ln for ln in lines if ln.startswith("ERROR:")]
    assert len(errors) == 2
    for e in errors:
        assert "needs pyarrow, which is not installed" in e and "pip install streamkeep[tables]" in e


def test_import_streamkeep_does_not_import_pyarrow() -> None:
    code = "import sys, streamkeep, streamkeep.sources, streamkeep.sinks, streamkeep.tables; print('pyarrow' in sys.modules)"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=60)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "False"


# --------------------------------------------------------------------------- Parquet / JSON-lines sources, Parquet sink


def _file_job(url: str, inp: Path, js: Path, out: Path) -> Any:
    from streamkeep.sinks import FileSink, ParquetSink

    def setup() -> sk.StreamingContext:
        ssc = sk.StreamingContext(1.0, checkpoint=url, clock=ManualClock())
        a = ssc.parquet_file_stream(str(inp), name="pq", new_files_only=False)
        b = ssc.json_file_stream(str(js), name="js", new_files_only=False, schema=pa.schema([("k", pa.string()), ("v", pa.int64())]))
        agg = a.union(b).aggregate_state(by="k", aggs={"s": ("v", "sum")}, name="agg").map_tables(lambda t: t.sort_by("k"))
        agg.write_to(ParquetSink(str(out / "pq"), name="pq_out"))
        agg.write_to(FileSink(str(out / "jsonl"), name="jsonl_out", format="jsonl"))  # not a TableSink: gets dict rows
        return ssc

    return setup


def test_parquet_and_json_sources_into_parquet_and_jsonl_sinks(tmp_path: Path) -> None:
    import pyarrow.parquet as pq

    inp, js, out = tmp_path / "in", tmp_path / "js", tmp_path / "out"
    inp.mkdir()
    js.mkdir()
    pq.write_table(pa.table({"k": ["a", "b", "a"], "v": [1, 2, 3]}), inp / "f1.parquet")
    (js / "f1.jsonl").write_text('{"k": "a", "v": 10}\n{"k": "c", "v": 5}\n')
    url = str(tmp_path / "ck")
    ssc = sk.StreamingContext.get_or_create(url, _file_job(url, inp, js, out))
    ssc.run(max_batches=1)
    ssc.stop()
    pq.write_table(pa.table({"k": ["c"], "v": [1]}), inp / "f2.parquet")  # a new file: read by the next batch only
    ssc = sk.StreamingContext.get_or_create(url, _file_job(url, inp, js, out))
    ssc.run(max_batches=1)
    ssc.stop()
    assert pq.read_table(out / "pq" / "batch-0000000001000.parquet").to_pylist() == [
        {"k": "a", "s": 14}, {"k": "b", "s": 2}, {"k": "c", "s": 5}
    ]
    assert pq.read_table(out / "pq" / "batch-0000000002000.parquet").to_pylist() == [
        {"k": "a", "s": 14}, {"k": "b", "s": 2}, {"k": "c", "s": 6}
    ]
    lines = (out / "jsonl" / "batch-0000000002000.jsonl").read_text().splitlines()
    assert [json.loads(ln) for ln in lines] == [{"k": "a", "s": 14}, {"k": "b", "s": 2}, {"k": "c", "s": 6}]


def test_parquet_sink_replay_rewrites_identical_bytes_and_is_fenced(tmp_path: Path) -> None:
    from streamkeep.errors import CheckpointInUseError
    from streamkeep.sinks import ParquetSink
    from streamkeep.sinks.base import FencedSink, FencingToken, TableSink

    t = pa.table({"k": ["a", "b"], "n": [1, 2]})
    sink = ParquetSink(str(tmp_path / "p"), name="p")
    assert isinstance(sink, TableSink) and isinstance(sink, FencedSink)
    sink.set_fencing_token(FencingToken("ck-1", 2))
    sink.open()
    sink.write(1000, [t])
    first = Path(sink.path_for(1000)).read_bytes()
    sink.write(1000, [t])  # a replay of the same batch
    assert Path(sink.path_for(1000)).read_bytes() == first
    sink.write(2000, [])  # an empty batch still gets its file
    assert Path(sink.path_for(2000)).exists()
    sink.close()
    stale = ParquetSink(str(tmp_path / "p"), name="p")
    stale.set_fencing_token(FencingToken("ck-1", 1))  # a driver that lost the checkpoint
    stale.open()
    with pytest.raises(CheckpointInUseError, match="newer driver"):
        stale.write(3000, [t])
    stale.close()
    assert not Path(stale.path_for(3000)).exists()


def test_a_damaged_parquet_file_fails_its_batch_naming_the_file(tmp_path: Path) -> None:
    from streamkeep.errors import SourceError

    (tmp_path / "bad.parquet").write_bytes(b"not parquet")
    ssc = sk.StreamingContext(1.0, clock=ManualClock())
    ssc.parquet_file_stream(str(tmp_path), name="pq", new_files_only=False).foreach_batch(lambda b: None)
    with pytest.raises(SourceError, match=r"parquet_file_stream 'pq', batch 1000 ms: file '.*bad\.parquet' cannot be decoded"):
        ssc.run(max_batches=1)
    ssc.stop()


# --------------------------------------------------------------------------- windowed aggregation over tables

WINDOW_INPUT = [
    [("a", 1), ("b", 2)],
    [("a", 3)],
    [],
    [("c", 4), ("a", 1)],
    [("b", 5)],
    [],
    [],
    [("a", 2)],
]


@pytest.mark.parametrize(("length", "slide"), [(3.0, 1.0), (4.0, 2.0), (2.0, 2.0)])
def test_golden_aggregate_window_equals_reduce_by_key_and_window(length: float, slide: float) -> None:
    def records(ssc: sk.StreamingContext, s: sk.DStream[Any]) -> sk.DStream[Any]:
        pairs = s.map(lambda kv: (kv[0], (kv[1], 1, kv[1], kv[1])))
        win = pairs.reduce_by_key_and_window(lambda a, b: (a[0] + b[0], a[1] + b[1], min(a[2], b[2]), max(a[3], b[3])), length, slide, name="w")
        return win.map(lambda kv: (kv[0], kv[1][0], kv[1][1], kv[1][0] / kv[1][1], kv[1][2], kv[1][3]))

    def tables(aggs: dict[str, Any]) -> Any:
        def job(ssc: sk.StreamingContext, s: sk.DStream[Any]) -> sk.DStream[Any]:
            win = s.to_tables(pa.schema([("k", pa.string()), ("v", pa.int64())])).aggregate_window(by="k", aggs=aggs, length=length, slide=slide, name="w")
            return win.to_records().map(lambda r: tuple(r.values()))

        return job

    want = run_batches(records, WINDOW_INPUT, sort=True, num_partitions=2)
    inverse = {"s": ("v", "sum"), "n": ("*", "count"), "avg": ("v", "mean")}  # every aggregate invertible: the running path
    got_inv = run_batches(tables(inverse), WINDOW_INPUT, sort=True, num_partitions=2)
    assert got_inv == [[r[:4] for r in rs] for rs in want]
    full = {**inverse, "mn": ("v", "min"), "mx": ("v", "max")}  # min/max: re-aggregated from the slices
    got = run_batches(tables(full), WINDOW_INPUT, sort=True, num_partitions=2)
    assert got == want
    keys = [{r[0] for r in rs} for rs in want]
    assert any(keys[i] - keys[i + 1] for i in range(len(keys) - 1))  # keys leave the window (the inverse drops them)


def test_aggregate_window_restarts_exactly_and_refuses_changed_aggregates(tmp_path: Path) -> None:
    url = str(tmp_path / "ck")

    def setup_with(aggs: dict[str, Any], out: list[Any], url: str = url) -> Any:
        def setup() -> sk.StreamingContext:
            ssc = sk.StreamingContext(1.0, checkpoint=url, clock=ManualClock(), snapshot_every=2)
            tables = [[pa.table({"k": [k for k, _ in b], "v": [v for _, v in b]}, schema=pa.schema([("k", pa.string()), ("v", pa.int64())]))]
                      for b in WINDOW_INPUT]
            w = ssc.queue_stream(tables, name="q").aggregate_window(by="k", aggs=aggs, length=3.0, name="w")
            w.foreach_batch(lambda b: out.append(_rows(b.to_arrow())))
            return ssc

        return setup

    aggs = {"s": ("v", "sum"), "n": ("*", "count")}
    want: list[Any] = []
    ssc = sk.StreamingContext.get_or_create(str(tmp_path / "plain"), setup_with(aggs, want, str(tmp_path / "plain")))
    ssc.run(max_batches=len(WINDOW_INPUT))
    ssc.stop()
    got: list[Any] = []
    for n in (3, 2, 3):
        ssc = sk.StreamingContext.get_or_create(url, setup_with(aggs, got))
        ssc.run(max_batches=n)
        ssc.stop()
    assert got == want
    with pytest.raises(IncompatibleCheckpointError, match=r"'w' changed shape \(.*state schema: aggregates .*'sum'.* -> .*'max'"):
        sk.StreamingContext.get_or_create(url, setup_with({"s": ("v", "max"), "n": ("*", "count")}, []))


def test_a_stored_column_widens_but_does_not_change_kind() -> None:
    out: list[Any] = []
    ssc = sk.StreamingContext(1.0, clock=ManualClock())
    batches = [
        [pa.table({"k": pa.array([1, 2], pa.int32()), "v": [1, 2]})],
        [pa.table({"k": pa.array([1, 3], pa.int64()), "v": [5, 5]})],  # int32 keys stored, int64 now: widened
        [pa.table({"k": ["x"], "v": [1]})],  # strings: refused, naming the column
    ]
    ssc.queue_stream(batches, name="q").aggregate_state(by="k", aggs={"s": ("v", "sum")}, name="a").foreach_batch(
        lambda b: out.append(_rows(b.to_arrow()))
    )
    with pytest.raises(ConfigError, match=r"aggregate_state 'a': the stored column 'k' is int64 but this batch makes it string"):
        ssc.run(max_batches=3)
    ssc.stop()
    assert out == [[(1, 1), (2, 2)], [(1, 6), (2, 2), (3, 5)]]


def test_a_combine_restores_by_name_and_a_renamed_combine_is_refused(tmp_path: Path) -> None:
    from streamkeep.executors.kinds import make_runtime, node_from_description

    url = str(tmp_path / "ck")

    def aggs(name: str) -> dict[str, Any]:
        return {"top": ("v", Combine("max", lambda old, new: pc.max_element_wise(old, new, skip_nulls=True), name=name))}

    out: list[Any] = []
    ssc = sk.StreamingContext.get_or_create(url, _ckpt_setup(url, aggs("top:v1"), out))
    ssc.run(max_batches=2)
    ssc.stop()
    ssc = sk.StreamingContext.get_or_create(url, _ckpt_setup(url, aggs("top:v1"), out))
    ssc.run(max_batches=1)
    ssc.stop()
    assert out[-1] == [("a", 5), ("b", 4), ("c", 7)]
    desc = {"kind": "aggregate_state", "codec": "msgpack", "by": ["k"], "aggs": [["top", "v", "combine:top:v1:max"]]}
    node = node_from_description("agg", desc, 1000)  # what `streamkeep checkpoint inspect` rebuilds
    assert node is not None and node.describe()["aggs"] == desc["aggs"]
    assert make_runtime(node, 0).key_count() == 0
    with pytest.raises(IncompatibleCheckpointError, match=r"combine:top:v1:max of 'v' -> combine:top:v2:max of 'v'"):
        sk.StreamingContext.get_or_create(url, _ckpt_setup(url, aggs("top:v2"), []))
