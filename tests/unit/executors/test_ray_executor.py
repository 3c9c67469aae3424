"""RayExecutor: same results as the local executor over many keys and partitions, rescaling, loopback-only sockets.

The operator golden tests (test_operators.py) and crash points (tests/faults) run on
both executors through the ``executor`` fixture; this file holds what is Ray's own.
All Ray tests share the session's Ray (``ray_address``, tests/_ray_cluster.py).
"""

from __future__ import annotations

import itertools
import operator
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from _ckpt_jobs import canon_state as _canon
from _procnet import descendants, is_loopback, tcp_sockets

import streamkeep as sk
from streamkeep.checkpoint import Checkpoint
from streamkeep.executors._partitions import key_hash, merge_state, partition_of, split_state
from streamkeep.sources.queue import QueueSource
from streamkeep.testing import ListSink, ManualClock, state_of

ROOT = Path(__file__).resolve().parents[3]


# -- without Ray ------------------------------------------------------------------------


def test_streamkeep_imports_without_ray_and_asking_for_it_names_the_extra():
    code = (
        "import sys; sys.modules['ray'] = None\n"  # makes `import ray` fail as if not installed
        "import streamkeep as sk\n"
        "from streamkeep.errors import ConfigError\n"
        "for make in (lambda: sk.StreamingContext(1.0, executor='ray'), lambda: sk.executors.RayExecutor()):\n"
        "    try:\n"
        "        make()\n"
        "    except ConfigError as exc:\n"
        "        print('ERR', exc)\n"
    )
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=60)
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    assert len(lines) == 2 and all("pip install streamkeep[ray]" in line for line in lines), r.stdout
    plain = subprocess.run([sys.executable, "-c", "import sys, streamkeep; print('ray' in sys.modules)"], capture_output=True, text=True, env=env, timeout=60)
    assert plain.stdout.strip() == "False", "import streamkeep must not import ray"


# -- the key partitioning (plain functions) ----------------------------------------------


def test_key_hash_is_the_same_in_another_process_with_another_hash_seed():
    from streamkeep._util import stable_hash  # the local executor's partition_by uses it too

    keys = ["a", "zz", 7, -3, 2.5, None, True, b"x", ("a", 1), frozenset({"p", "q", "r"}), ("t", frozenset({"u", "v"}))]
    here = [(key_hash(k), stable_hash(k)) for k in keys]
    code = (
        "from streamkeep.executors._partitions import key_hash; from streamkeep._util import stable_hash; "
        f"print([(key_hash(k), stable_hash(k)) for k in {keys!r}])"
    )
    for seed in ("1", "2"):
        env = {**os.environ, "PYTHONPATH": str(ROOT), "PYTHONHASHSEED": seed}
        r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=60)
        assert r.stdout.strip() == repr(here), r.stderr
    assert partition_of(1, 4) == partition_of(1.0, 4) == partition_of(True, 4)  # one dict key, one partition


def test_bucket_puts_each_record_in_its_keys_partition_in_order():
    from streamkeep import Batch
    from streamkeep.executors._partitions import bucket

    keys = ["a", "b", "zz", "\ud800 lone surrogate", "é", 1, -7, 2**40, True, 1.5, None, ("t", 1), b"x", frozenset({"p"})]
    recs: list[object] = [(k, i) for i, k in enumerate(keys * 3)]
    recs += [["a", "a list pair"], [2, "a list pair"]]
    odd = ["not a pair", ([1], "unhashable key")]
    for n in (1, 2, 3):
        # as built, and with the per-record chain still pending (its trailing map is called by bucket's loop)
        for batch in (Batch([recs[:20], recs[20:] + odd]), Batch([recs[:20], recs[20:] + odd]).map(lambda r: r)):
            parts = bucket(batch, n)
            assert sum(len(p) for p in parts) == len(recs) + len(odd)
            for i, p in enumerate(parts):
                pairs = [r for r in p if r not in odd]
                assert all(partition_of(k, n) == i for k, _ in pairs)  # type: ignore[misc]
                assert pairs == [r for r in recs if partition_of(r[0], n) == i]  # type: ignore[index]  # input order kept
            assert all(any(r in p for p in parts) for r in odd)  # not dropped: the runtime that gets them reports them


def test_partition_hosts_run_the_map_side_and_the_step_with_the_cyclic_gc_paused():
    """As the driver runs a batch: the batch's records live until its step, so collections meanwhile only walk them."""
    import gc

    from streamkeep.executors._partitions import PartitionHost, Records
    from streamkeep.executors.ray import _strip

    seen: list[bool] = []  # the GC's state in the step, per key

    def update(values: list[bool], old: list[bool] | None) -> list[bool]:
        seen.append(gc.isenabled())
        return (old or []) + values

    ssc = sk.StreamingContext(1.0, clock=ManualClock())
    stream = ssc.queue_stream([[1]], name="q").map(lambda x: x).update_state_by_key(update, name="u")
    host = PartitionHost(0, 1)
    host.open([_strip(stream._node)], 0, 0, 1)
    ops = sk.Batch([[]], 1000).map(lambda k: (k, gc.isenabled()))._ops  # each record: the GC's state in the map side
    assert gc.isenabled()
    assert host.map_bucket("u", 1000, 0, ops, Records(["a", "b", "a"]))[0] == 3  # one partition: its own bucket kept, only the numbers back

    assert gc.isenabled()  # restored after the call
    host.step("u", 1000, True, False, 0)
    assert dict(host.runtimes["u"].snapshot()["set"]) == {"a": [False, False], "b": [False]}
    assert seen == [False, False]
    assert gc.isenabled()  # restored after each call
    fan_out = sk.Batch([[]], 1000).flat_map(lambda k: [(k, i) for i in range(10)])._ops
    # the CPU cost is per input record (the driver cuts slices of the input): a flat_map's 10x output must not dilute it
    assert host.map_bucket("u", 2000, 0, fan_out, Records(["a", "b", "a"]))[0] == 3


def _two_open_hosts() -> tuple[list[Any], list[tuple[str, int]]]:
    """Two partition hosts (no Ray) opened on an update_state_by_key named "u", and 40 records of 5 keys."""
    from streamkeep.executors._partitions import PartitionHost
    from streamkeep.executors.ray import _strip

    ssc = sk.StreamingContext(1.0, clock=ManualClock())
    stream = ssc.queue_stream([[1]], name="q").map(lambda x: x).update_state_by_key(lambda vs, old: (old or []) + vs, name="u")
    node = _strip(stream._node)
    hosts = [PartitionHost(i, 2) for i in range(2)]
    for i, h in enumerate(hosts):
        h.open([node], 0, i, 2)
    return hosts, [(f"k{i % 5}", i) for i in range(40)]


def test_partition_hosts_map_their_slices_keep_their_own_bucket_and_hand_over_the_others_whole():
    """Without Ray: the actors' side of the shuffle. Records that cross between Ray processes are
    `Records` (Ray pickles those in one piece; a plain list of tuples costs a Python callback per record)."""
    from streamkeep.executors._partitions import Records

    hosts, records = _two_open_hosts()
    ops = sk.Batch([records], 1000).map(lambda kv: (kv[0], kv[1] * 10))._ops
    maps = [h.map_bucket("u", 1000, i, ops, Records(records[i * 20 : (i + 1) * 20])) for i, h in enumerate(hosts)]
    assert [m[-1][0] for m in maps] == [20, 20]  # records mapped by each slice
    assert all(len(m) == 2 and type(m[0]) is Records for m in maps)  # own bucket kept, the other handed over
    out = {}
    for i, h in enumerate(hosts):
        group, (produced, _, _) = h.step("u", 1000, True, False, *[j if j == i else maps[j][0] for j in range(2)])
        assert produced and type(group) is Records
        out.update(kv for p in group for kv in p)
    assert out == {f"k{k}": [i * 10 for i in range(40) if i % 5 == k] for k in range(5)}  # every key's values in order
    assert not any(h.kept for h in hosts)


def test_a_batch_is_sliced_whole_in_order_one_slice_per_actor_until_its_cost_is_known():
    from streamkeep.executors.ray import PIECES, _slices

    assert _slices(8000, 2, None) == [(0, 4000), (4000, 8000)]
    assert _slices(8000, 2, 6.0) == [(0, 4000), (4000, 8000)]  # 24 ms an actor: not worth more calls
    assert _slices(200_000, 2, 2.0) == [(0, 100_000), (100_000, 200_000)]  # cheap records: not worth more calls
    for size, n, us in ((8000, 2, 50.0), (8001, 3, 50.0), (200_000, 2, 6.0), (2000, 4, 400.0)):
        cuts = _slices(size, n, us)
        assert cuts[0][0] == 0 and cuts[-1][1] == size and all(a[1] == b[0] for a, b in itertools.pairwise(cuts))
        assert n < len(cuts) <= n + PIECES * n
        sizes = [hi - lo for lo, hi in cuts]
        assert min(sizes[:n]) > max(sizes[n:])  # the big ones first, then the pieces that go to the first actor done


def test_a_batch_goes_out_in_pieces_only_while_the_actors_do_not_keep_pace():
    """Pieces are extra calls: when the actors' equal slices of the last batch ended within a piece's
    work of each other (`skew_ms`), the next batch is one slice per actor; when they drifted apart,
    or nobody measured it yet, the pieces are there to even them out."""
    from streamkeep.executors.ray import PIECE_MS, _slices

    assert _slices(8000, 2, 50.0, PIECE_MS / 2) == [(0, 4000), (4000, 8000)]  # they kept pace: no piece
    assert len(_slices(8000, 2, 50.0, PIECE_MS * 3)) > 2  # one lagged three pieces behind: pieces
    assert len(_slices(8000, 2, 50.0, PIECE_MS)) < len(_slices(8000, 2, 50.0, PIECE_MS * 5))  # more drift, more pieces
    assert _slices(8000, 2, 50.0, None) == _slices(8000, 2, 50.0)  # not measured: pieces, as before
    assert len(_slices(8000, 2, 50.0, None)) > 2


def test_split_then_merge_gives_back_the_same_state():
    snap = {
        "add": [[1000, [(f"k{i}", i) for i in range(20)]], [2000, []]],
        "drop": [0],
        "set": [(f"k{i}", i * 2) for i in range(50)],
        "del": ["gone", "also"],
    }
    for n in (1, 2, 3, 4):
        parts = split_state(snap, n)
        assert all(all(partition_of(k, n) == i for k, _ in p["set"]) for i, p in enumerate(parts))
        merged = merge_state(parts)
        assert sorted(merged["set"]) == sorted(snap["set"]) and sorted(merged["del"]) == sorted(snap["del"])
        assert merged["drop"] == [0]
        assert [[ts, sorted(items)] for ts, items in merged["add"]] == [[ts, sorted(items)] for ts, items in snap["add"]]


# -- on Ray ------------------------------------------------------------------------------

def _update(values, old):
    total = (old or 0) + sum(values)
    return None if total % 13 == 0 else total


def _track(key, value, state):
    if state.is_timing_out():
        return ("timeout", key)
    n = (state.get() if state.exists() else 0) + value
    state.update(n)
    return (key, n)


def _many_keys_job(executor, sinks, batches):
    ssc = sk.StreamingContext(1.0, clock=ManualClock(), executor=executor)
    src = ssc.queue_stream(batches, name="q", num_partitions=2)
    pairs = src.map(lambda x: (f"k{x % 97}", x % 5))
    shared = pairs.update_state_by_key(_update, name="totals").map_values(lambda v: v * 10)  # a chain after the actors
    shared.write_to(sinks["totals"])
    shared.filter(lambda kv: kv[1] > 100).write_to(sinks["big"])  # the chain's result feeds two outputs
    tracked = pairs.map_with_state(_track, name="seen", timeout=2.0)
    tracked.write_to(sinks["seen"])
    tracked.state_snapshots().write_to(sinks["seen_state"])
    pairs.reduce_by_key_and_window(operator.add, 3.0, 1.0, inv_f=operator.sub, name="win").write_to(sinks["win"])
    pairs.reduce_by_key_and_window(operator.add, 2.0, 2.0, name="win_plain").write_to(sinks["win_plain"])
    pairs.update_state_by_key(_update, name="again").map(lambda kv: (kv[0][:2], kv[1])).update_state_by_key(_update, name="chained").write_to(
        sinks["chained"]
    )  # one partitioned operator's output shuffled into another's
    return ssc


def _sorted_batches(sink):
    return [(t, sorted(rs, key=repr)) for t, rs in sink.batches]


@pytest.mark.ray
@pytest.mark.parametrize("partitions", [1, 3])
def test_many_keys_on_1_and_3_partitions_equal_the_local_executor(ray_address, partitions):
    # big batches go through the shuffle tasks, small ones are split in the driver
    batches = [list(range(i * 7, i * 7 + (3000 if i % 2 else 40))) for i in range(5)] + [[], []]
    names = ("totals", "big", "seen", "seen_state", "win", "win_plain", "chained")
    results = {}
    for label, ex in (("local", "local"), ("ray", sk.executors.RayExecutor(num_partitions=partitions))):
        sinks = {n: ListSink(n) for n in names}
        ssc = _many_keys_job(ex, sinks, batches)
        ssc.run()
        states = {op: state_of(ssc, op) for op in ("totals", "seen", "win", "win_plain", "chained")}
        ssc.stop()
        results[label] = ({n: _sorted_batches(s) for n, s in sinks.items()}, states)
    local, ray_ = results["local"], results["ray"]
    for n in names:
        assert ray_[0][n] == local[0][n], n
    assert any(rs for _, rs in local[0]["seen"]) and any(rs for _, rs in local[0]["win"])  # the job did produce
    for op, snap in local[1].items():
        got = ray_[1][op]
        for field in ("set", "del"):
            assert sorted(got.get(field, []), key=repr) == sorted(snap.get(field, []), key=repr), (op, field)
        if "add" in snap:
            assert [[ts, sorted(i, key=repr)] for ts, i in got["add"]] == [[ts, sorted(i, key=repr)] for ts, i in snap["add"]]


def _rate_job(ckpt, executor, sink):
    def build():
        ssc = sk.StreamingContext(1.0, checkpoint=ckpt, clock=ManualClock(), snapshot_every=2, executor=executor)
        pairs = ssc.rate_stream(20, name="rate").map(lambda r: (r[0] % 11, 1))
        pairs.update_state_by_key(_update, name="totals").write_to(sink)
        pairs.reduce_by_key_and_window(operator.add, 3.0, 1.0, inv_f=operator.sub, name="win").write_to(ListSink("w"))
        return ssc

    return build


def _run(ckpt, executor, batches):
    sink = ListSink("totals")
    ssc = sk.StreamingContext.get_or_create(ckpt, _rate_job(ckpt, executor, sink))
    ssc.run(batches)
    states = {op: state_of(ssc, op) for op in ("totals", "win")}
    ssc.stop()
    return sink, states


@pytest.mark.ray
def test_a_4_partition_checkpoint_restores_on_2_partitions_and_on_the_local_executor(tmp_path, ray_address):
    ref_sink, ref_states = _run(str(tmp_path / "ref"), "local", 9)
    ckpt = str(tmp_path / "ckpt")
    outputs = []
    for ex, n, parts in ((sk.executors.RayExecutor(num_partitions=4), 3, 4), (sk.executors.RayExecutor(num_partitions=2), 3, 2), ("local", 3, None)):
        sink, states = _run(ckpt, ex, n)
        outputs.extend(_sorted_batches(sink))
        assert Checkpoint(ckpt).commits()[0].data.get("partitioning", {}).get("partitions") == parts
    assert outputs == _sorted_batches(ref_sink)
    assert _canon(states) == _canon(ref_states)
    # and back: the local executor's checkpoint on 3 partitions
    sink, states = _run(ckpt, sk.executors.RayExecutor(num_partitions=3), 1)
    ref2, ref2_states = _run(str(tmp_path / "ref"), "local", 1)
    assert _sorted_batches(sink) == _sorted_batches(ref2)
    assert _canon(states) == _canon(ref2_states)


@pytest.mark.ray
def test_key_partitions_cut_by_another_hash_are_refused_on_ray_by_name_and_restore_on_the_local_executor(tmp_path, ray_address, monkeypatch):
    """The hash recorded with the partitions is checked: read partition by partition, keys cut by another hash land on the wrong actors."""
    ckpt = str(tmp_path / "ckpt")
    with monkeypatch.context() as m:  # a checkpoint written by a version that cut keys another way
        m.setattr("streamkeep.executors.ray.HASH_NAME", "an-older-hash")
        _run(ckpt, sk.executors.RayExecutor(num_partitions=2), 3)
    assert Checkpoint(ckpt).commits()[0].data["partitioning"]["hash"] == "an-older-hash"
    with pytest.raises(sk.IncompatibleCheckpointError, match="an-older-hash.*streamkeep version that wrote it"):
        _run(ckpt, sk.executors.RayExecutor(num_partitions=2), 1)
    ref_sink, ref_states = _run(str(tmp_path / "ref"), "local", 4)
    sink, states = _run(ckpt, "local", 1)  # the local executor reads every partition whole: nothing to refuse
    assert _sorted_batches(sink) == _sorted_batches(ref_sink)[-1:]
    assert _canon(states) == _canon(ref_states)


# -- loopback only ----------------------------------------------------------------------


@pytest.mark.ray
def test_ray_listens_and_connects_on_loopback_only(ray_address, ray_executor):
    ssc = sk.StreamingContext(1.0, clock=ManualClock(), executor=ray_executor)
    ssc.queue_stream([[("a", 1), ("b", 2)]] * 3, name="q").update_state_by_key(_update, name="u").write_to(ListSink())
    ssc.run()
    ssc.stop()
    try:
        import psutil
    except ImportError:
        psutil = None
    if psutil is not None:
        me = psutil.Process()
        pids = {me.pid} | {p.pid for p in me.children(recursive=True)}
        socks = [
            (c.pid, c.laddr.ip, c.raddr.ip if c.raddr else "", c.status)
            for c in psutil.net_connections(kind="inet")
            if c.pid in pids and c.type == __import__("socket").SOCK_STREAM
        ]
    else:
        pids = descendants(os.getpid())
        socks = tcp_sockets(pids)
    assert len(pids) > 3, "the session's Ray processes should be children of this process"
    assert any(s[3] in ("LISTEN", "0A") for s in socks), "no listening socket found: the check would prove nothing"
    bad = [s for s in socks if not is_loopback(s[1]) or (s[2] and not is_loopback(s[2]))]
    assert not bad, f"Ray sockets outside 127.0.0.0/8: {bad[:10]}"


PYSPARK_JOB = """
import json, time
from pyspark import SparkContext
from pyspark.streaming import StreamingContext

sc = SparkContext("local[2]", "ray wordcount")
ssc = StreamingContext(sc, 0.2)
lines = ssc.queueStream([sc.parallelize(["a b a", "c"]), sc.parallelize(["b b"]), sc.parallelize(["a"])])
counts = lines.flatMap(str.split).map(lambda w: (w, 1)).updateStateByKey(lambda vs, old: sum(vs) + (old or 0))
seen = []
counts.foreachRDD(lambda rdd: seen.append(sorted(rdd.collect())))
ssc.start()
deadline = time.monotonic() + 120
while len(seen) < 3 and time.monotonic() < deadline:  # the first three batches, however slow the machine
    ssc.awaitTerminationOrTimeout(0.2)
ssc.stop(stopSparkContext=True, stopGraceFully=False)
print(json.dumps({"executor": type(ssc._ssc._executor).__name__, "seen": seen}))
"""


@pytest.mark.ray
def test_streamkeep_run_pyspark_on_ray(tmp_path, ray_address):
    job = tmp_path / "job.py"
    job.write_text(PYSPARK_JOB)
    env = {**os.environ, "PYTHONPATH": str(ROOT), "RAY_ADDRESS": ray_address}
    argv = [sys.executable, "-m", "streamkeep.cli", "run", "--pyspark", "--executor", "ray", "--no-ui", str(job)]
    r = subprocess.run(argv, capture_output=True, text=True, env=env, timeout=180, cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-3000:]
    got = __import__("json").loads(r.stdout.strip().splitlines()[-1])
    assert got["executor"] == "RayExecutor"
    assert got["seen"][:3] == [[["a", 2], ["b", 1], ["c", 1]], [["a", 2], ["b", 3], ["c", 1]], [["a", 3], ["b", 3], ["c", 1]]]


# -- event time on Ray ------------------------------------------------------------------


@pytest.mark.ray
def test_event_time_windows_on_ray_keep_the_watermark_per_source_partition(ray_address):
    """Event-time windows stay in the driver on Ray; their input keeps its source partitions, so the
    watermark is still the minimum over partitions (one watermark over all records would make
    ("b", 2.0) late in batch 2) and the windows equal the local executor's."""
    from datetime import datetime, timezone

    # ("b", 0.5) in the last batch is behind the watermark: late, counted and reported by both executors
    skewed = [[[("a", 10.0)], [("b", 1.0)]], [[], [("b", 2.0)]], [[("a", 11.0)], [("b", 20.0), ("b", 0.5)]]]

    class Reported(sk.StreamingListener):
        def __init__(self):
            self.event_time = []

        def on_batch_completed(self, info):
            self.event_time.append(info.event_time)

    def run(executor):
        ssc = sk.StreamingContext(1.0, clock=ManualClock(), executor=executor)
        reported = Reported()
        ssc.add_listener(reported)
        streams = [ssc.queue_stream([b[p] for b in skewed], name=f"in{p}") for p in range(2)]
        ets = streams[0].union(streams[1]).map(lambda kv: kv).with_event_time(
            lambda kv: datetime.fromtimestamp(kv[1], timezone.utc), max_delay=1
        )
        out = ets.tumbling_window(1).count_by_key(name="c")
        wins, lates = ListSink("w"), ListSink("late")
        out.map(lambda w: (w.key, w.start.timestamp(), w.end.timestamp(), w.value)).write_to(wins)
        out.late_records().write_to(lates)
        ssc.run(len(skewed))
        ssc.stop()
        return [sorted(rs) for _, rs in wins.batches], [rs for _, rs in lates.batches], reported.event_time

    local = run("local")
    assert local[:2] == ([[], [], [("b", 1.0, 2.0, 1), ("b", 2.0, 3.0, 1)]], [[], [], [("b", 0.5)]])
    assert [e["c"]["late_records_total"] for e in local[2]] == [0, 0, 1]
    assert run(sk.executors.RayExecutor(num_partitions=2)) == local  # windows, late records and what listeners get


# -- the shuffle's map side in the partition actors -------------------------------------------


def _collect(values, old):
    seen, pids = old or ([], [])
    return seen + [i for i, _ in values], sorted({*pids, *(p for _, p in values)})


def _order_job(executor, sink, batches):
    ssc = sk.StreamingContext(1.0, clock=ManualClock(), executor=executor)
    src = ssc.queue_stream(batches, name="q", num_partitions=2)
    src.map(lambda i: (f"k{i % 37}", (i, os.getpid()))).update_state_by_key(_collect, name="u").write_to(sink)
    return ssc


@pytest.mark.ray
def test_a_big_batch_is_mapped_in_the_partition_actors_and_keeps_each_keys_order(ray_executor):
    """A driver-side batch of thousands of records: the per-record chain runs in the partition actors
    themselves (no task hop; a partition's own records never leave its process), and every key's
    values reach update_state_by_key in the order of the batch, as on the local executor."""
    batches = [list(range(b * 6000, b * 6000 + 5000))[:: 1 if b % 2 else -1] for b in range(2)]  # 2,500 per source partition
    got = {}
    for label, ex in (("local", "local"), ("ray", ray_executor)):
        sink = ListSink("u")
        ssc = _order_job(ex, sink, batches)
        ssc.run(len(batches))
        pids = ex.actor_pids() if label == "ray" else [os.getpid()]
        ssc.stop()
        final = dict(sink.batches[-1][1])
        got[label] = {k: seen for k, (seen, _) in final.items()}
        ran_in = {p for _, (_, ps) in final.items() for p in ps}
        assert ran_in <= set(pids), (label, ran_in, pids)  # on Ray: in the actors, not in task workers
    assert got["ray"] == got["local"]
    assert len(got["local"]) == 37 and sum(len(v) for v in got["local"].values()) == 10_000


def _pull_small_slices(monkeypatch) -> list[int]:
    """Make every big batch after an operator's first go out in many small slices that the actors pull; the slice count per batch."""
    import streamkeep.executors.ray as on_ray

    counts: list[int] = []
    real = on_ray._slices

    def spy(size, n, us_per_record, skew_ms=None):
        cuts = real(size, n, us_per_record, skew_ms)
        counts.append(len(cuts))
        return cuts

    for attr, value in (("BALANCE_MS", 0.0), ("BALANCE_US", 0.0), ("PIECE_MS", 0.0), ("PIECE_RECORDS", 100), ("PIECES", 10), ("_slices", spy)):
        monkeypatch.setattr(on_ray, attr, value)
    return counts


@pytest.mark.ray
def test_a_big_batch_in_slices_the_actors_pull_gives_what_the_local_executor_gives(ray_executor, monkeypatch):
    """Slices go to whichever actor is free (dynamic balancing): whichever actor maps a slice, every
    key's values reach update_state_by_key in batch order and the output equals the local executor's."""
    counts = _pull_small_slices(monkeypatch)
    batches = [list(range(b * 6000, b * 6000 + 5000))[:: 1 if b % 2 else -1] for b in range(4)]
    got = {}
    for label, ex in (("local", "local"), ("ray", ray_executor)):
        sink = ListSink("u")
        ssc = _order_job(ex, sink, batches)
        ssc.run(len(batches))
        pids = ex.actor_pids() if label == "ray" else [os.getpid()]
        ssc.stop()
        got[label] = [(t, {k: seen for k, (seen, _) in dict(rs).items()}) for t, rs in sink.batches]
        ran_in = {p for _, (_, ps) in sink.batches[-1][1] for p in ps}
        assert ran_in <= set(pids), (label, ran_in, pids)
    # the first two batches in one slice per actor: the cost is known once batch 1 ran, and batch 2 went out while it ran
    assert counts == [2, 2, 22, 22]
    assert got["ray"] == got["local"]
    assert sum(len(v) for v in got["local"][-1][1].values()) == 20_000


def _zero_division_error(executor: object, zero_at: int) -> sk.UserFunctionError:
    """The error of a job whose second batch of 5000 records holds a 0 at `zero_at` (100 // 0 in its map)."""
    ssc = sk.StreamingContext(1.0, clock=ManualClock(), executor=executor)
    src = ssc.queue_stream([list(range(1, 5001)), [*range(1, zero_at), 0, *range(zero_at, 5000)]], name="q")
    src.map(lambda x: (x % 11, 100 // x)).update_state_by_key(_update, name="u").write_to(ListSink())
    try:
        with pytest.raises(sk.UserFunctionError) as info:
            ssc.run(2)
    finally:
        ssc.stop()
    return info.value


@pytest.mark.ray
def test_a_user_function_error_in_a_pulled_slice_is_the_one_the_local_executor_raises(ray_executor, monkeypatch):
    """An error in a late small slice of a balanced batch: the job fails as on the local executor (operator, batch)."""
    _pull_small_slices(monkeypatch)
    local, on_ray = _zero_division_error("local", 4990), _zero_division_error(ray_executor, 4990)
    assert (on_ray.operator, on_ray.batch_time_ms, type(on_ray.__cause__)) == (local.operator, local.batch_time_ms, ZeroDivisionError)
    assert local.operator == "map" and local.batch_time_ms == 2000


@pytest.mark.ray
def test_a_user_function_error_in_a_big_batch_on_ray_is_the_one_the_local_executor_raises(ray_executor):
    local, on_ray = _zero_division_error("local", 4000), _zero_division_error(ray_executor, 4000)
    assert (on_ray.operator, on_ray.batch_time_ms, type(on_ray.__cause__)) == (local.operator, local.batch_time_ms, ZeroDivisionError)
    assert local.operator == "map" and local.batch_time_ms == 2000


@pytest.mark.ray
def test_without_a_checkpoint_the_next_step_forgets_the_last_batchs_changes(ray_executor):
    """Without a checkpoint the scheduler drops the change tracking after every batch. On Ray the
    next batch's step call does it first (no call per actor and batch of its own); any other call
    to the actors (here `delta`) is preceded by it, so nothing forgotten is reported as changed."""
    import ray

    ssc = sk.StreamingContext(1.0, clock=ManualClock(), executor=ray_executor)
    words = [[f"a{i}" for i in range(40)], ["b1", "b2"]]
    ssc.queue_stream(words, name="q").map(lambda w: (w, 1)).update_state_by_key(_update, name="u").write_to(ListSink())
    try:
        ssc.run(2)
        held = ray.get([h.delta.remote("u") for h in ray_executor._actors])  # straight to the actors: what they track now
        assert sorted(k for d in held if d is not None for k, _ in d["set"]) == ["b1", "b2"]  # batch 1's forgotten by batch 2's step
        assert ray_executor.delta("u") is None  # the pending forget of batch 2 went first
        assert dict(state_of(ssc, "u")["set"]) == {**{f"a{i}": 1 for i in range(40)}, "b1": 1, "b2": 1}
    finally:
        ssc.stop()


def test_the_drift_of_the_actors_slices_ignores_the_hosts_clock_offsets(monkeypatch):
    """Without Ray: two actors map equal slices on hosts whose wall clocks are 100 s apart. The drift the driver
    cuts the next batch by compares the time each one took on its own host, not wall-clock end stamps (before:
    100 s of drift, ~5 s per record, from the clock offset alone)."""
    import time as real_time
    import types

    from streamkeep.executors import _partitions
    from streamkeep.executors._partitions import Records
    from streamkeep.executors.ray import _drift

    hosts, records = _two_open_hosts()
    ops = sk.Batch([records], 1000).map(lambda kv: kv)._ops
    maps = []
    for i, h in enumerate(hosts):
        offset = 100.0 * i  # host i's clocks run 100 s ahead of host 0's
        clock = types.SimpleNamespace(
            time=lambda o=offset: real_time.time() + o,
            perf_counter=lambda o=offset: real_time.perf_counter() + o,
            thread_time=real_time.thread_time,
        )
        monkeypatch.setattr(_partitions, "time", clock)
        maps.append(h.map_bucket("u", 1000, i, ops, Records(records[i * 20 : (i + 1) * 20]))[-1])
    assert 0 <= _drift(maps) < 1000 / 20  # below 1 s over the slice's 20 records


@pytest.mark.ray
def test_the_next_batch_is_sent_ahead_while_one_computes_and_never_applied_before_it(ray_executor, monkeypatch):
    """run(n) runs batches back to back: while the actors step batch t, the driver plans and reads batch
    t + 1 and queues its map side (the first slices; the batch's own compute gives out the rest) behind
    those steps. Every batch's output (each key's values so far, in order) equals the local executor's:
    no record of t + 1 reaches the state before batch t's outputs ran, and none is lost or read twice."""
    counts = _pull_small_slices(monkeypatch)
    batches = [list(range(b * 6000, b * 6000 + 5000))[:: 1 if b % 2 else -1] for b in range(5)]
    got = {}
    before = ray_executor.sent_ahead
    for label, ex in (("local", "local"), ("ray", ray_executor)):
        sink = ListSink("u")
        ssc = _order_job(ex, sink, batches)
        ssc.run(len(batches))
        ssc.stop()
        got[label] = [(t, {k: seen for k, (seen, _) in dict(rs).items()}) for t, rs in sink.batches]
    assert ray_executor.sent_ahead - before == len(batches) - 1  # every batch after the first went out ahead
    assert counts[:2] == [2, 2] and all(c > 4 for c in counts[2:])  # slices beyond the two per actor sent ahead given out too
    assert [t for t, _ in got["ray"]] == [1000, 2000, 3000, 4000, 5000]
    assert got["ray"] == got["local"]


@pytest.mark.ray
def test_a_stop_after_the_next_batch_was_read_ahead_runs_that_batch_too(ray_executor):
    """run(n) reads batch t + 1 while batch t computes. A stop() during batch t (here from its own output)
    still runs batch t + 1: a queue cannot be read again, so stopping without it would lose its records
    (no checkpoint). Batches are planned ahead only while run(n) has batches left: nothing beyond n is read."""
    batches = [[f"k{i % 7}" for i in range(b, b + 3000)] for b in range(4)]
    ssc = sk.StreamingContext(1.0, clock=ManualClock(), executor=ray_executor)
    sink = ListSink("u")
    counts = ssc.queue_stream(batches, name="q").map(lambda w: (w, 1)).update_state_by_key(lambda vs, old: (old or 0) + sum(vs), name="u")
    counts.write_to(sink)
    counts.foreach_batch(lambda t, b: ssc.stop() if int(t.timestamp() * 1000) == 1000 else None)
    try:
        before = ray_executor.sent_ahead
        assert ssc.run(3) == 2  # batch 1, then batch 2, read ahead while batch 1 computed
        assert ray_executor.sent_ahead - before == 1
    finally:
        ssc.stop()
    assert [t for t, _ in sink.batches] == [1000, 2000]
    assert sum(v for v in dict(sink.batches[-1][1]).values()) == 6000  # both batches' records counted


def _factor_job(executor, sink):
    """4 batches of 5000 ints; the map reads a driver-side dict that each batch's foreach_batch changes."""
    factor = {"v": 1}

    def bump(t, b):
        factor["v"] += 1

    ssc = sk.StreamingContext(1.0, clock=ManualClock(), executor=executor)
    batches = [list(range(b * 5000, (b + 1) * 5000)) for b in range(4)]
    sums = ssc.queue_stream(batches, name="q").map(lambda x: (x % 3, factor["v"])).update_state_by_key(lambda vs, old: (old or 0) + sum(vs), name="u")
    sums.write_to(sink)
    sums.foreach_batch(bump)
    return ssc, batches


def test_a_map_reading_driver_state_changed_by_the_last_batchs_outputs_sees_the_change(executor):
    """The map's function reads a dict that foreach_batch updates after each batch. On Ray with run(n) the
    next batch's map side is sent ahead while this one computes, with the dict as it was then: once this
    batch's outputs changed it, the next batch's compute finds its operators pickle differently and maps
    again. Every batch sees the value of its own turn, as on the local executor (before: one batch late)."""
    sink = ListSink("u")
    ssc, batches = _factor_job(executor, sink)
    try:
        ssc.run(4)
    finally:
        ssc.stop()
    want, state = [], {0: 0, 1: 0, 2: 0}
    for i, b in enumerate(batches):
        for x in b:
            state[x % 3] += i + 1
        want.append(sorted(state.items()))
    assert [sorted(rs) for _, rs in sink.batches] == want


class _FailingRead(QueueSource):
    """A queue whose read of batch `fail_at` raises (a broken source)."""

    def __init__(self, batches, fail_at):
        super().__init__(batches, name="q")
        self.fail_at = fail_at

    def read(self, plan, batch_time):
        if batch_time == self.fail_at:
            msg = f"cannot read batch {batch_time}"
            raise OSError(msg)
        return super().read(plan, batch_time)


@pytest.mark.ray
def test_a_failed_read_of_the_next_batch_ahead_fails_that_batch_not_the_one_computing(ray_executor):
    """run(n) on Ray reads batch 2 while batch 1 computes. Its read fails: batch 1 still runs its outputs
    (and commits), and the read error is raised when batch 2's turn comes, as without the look-ahead (before:
    it came out of batch 1's compute, so batch 1's records never reached the sink: without a checkpoint, lost)."""
    batches = [[f"k{i % 7}" for i in range(b, b + 3000)] for b in range(3)]
    ssc = sk.StreamingContext(1.0, clock=ManualClock(), executor=ray_executor)
    sink = ListSink("u")
    src = ssc.add_source(_FailingRead(batches, fail_at=2000))
    src.map(lambda w: (w, 1)).update_state_by_key(lambda vs, old: (old or 0) + sum(vs), name="u").write_to(sink)
    try:
        with pytest.raises(OSError, match="cannot read batch 2000"):
            ssc.run(3)
    finally:
        ssc.stop()
    assert [t for t, _ in sink.batches] == [1000]
    assert sum(v for v in dict(sink.batches[0][1]).values()) == 3000


@pytest.mark.ray
def test_an_interrupted_run_forgets_the_next_batch_sent_ahead_without_waiting_for_it(ray_executor, monkeypatch):
    """Ctrl-C (here raised by batch 1's output) after batch 2's map side was queued in the actors: closing
    the executor forgets those calls rather than waiting (up to 30 s) for them behind batch 1's steps; the
    kept actors drop what they mapped at the next job's open, whose results are right."""
    waited: list[object] = []
    real_settle = ray_executor._settle

    def settle(refs):
        waited.extend(refs)
        real_settle(refs)

    monkeypatch.setattr(ray_executor, "_settle", settle)
    sent: list[object] = []
    real_close = ray_executor.close

    def close():
        sent.extend(r for m in ray_executor._sent.values() for r in m.refs())
        real_close()

    monkeypatch.setattr(ray_executor, "close", close)

    def interrupt(t, b):
        raise KeyboardInterrupt

    batches = [[f"k{i % 7}" for i in range(b, b + 3000)] for b in range(3)]
    ssc = sk.StreamingContext(1.0, clock=ManualClock(), executor=ray_executor)
    counts = ssc.queue_stream(batches, name="q").map(lambda w: (w, 1)).update_state_by_key(lambda vs, old: (old or 0) + sum(vs), name="u")
    counts.foreach_batch(interrupt)
    with pytest.raises(KeyboardInterrupt):
        ssc.run(3)
    assert sent  # batch 2's map calls were queued when the run was interrupted
    assert not set(waited) & set(sent)
    sink = ListSink("u")
    again = sk.StreamingContext(1.0, clock=ManualClock(), executor=ray_executor)
    again.queue_stream(batches[:2], name="q").map(lambda w: (w, 1)).update_state_by_key(lambda vs, old: (old or 0) + sum(vs), name="u").write_to(sink)
    try:
        again.run(2)
    finally:
        again.stop()
    assert [sum(dict(rs).values()) for _, rs in sink.batches] == [3000, 6000]


@pytest.mark.ray
def test_a_failed_plan_write_of_the_next_batch_ahead_fails_that_batch_not_the_one_computing(tmp_path, ray_executor, monkeypatch):
    """With a checkpoint, batch 2's plan is written (durable) while batch 1 computes. That write fails: batch 1,
    whose own plan is durable, still runs its outputs and commits; the write error is raised in batch 2's turn
    (before: batch 1 failed with it, uncommitted). The next start resumes after batch 1."""
    real = Checkpoint.write_plan_data

    def write_plan_data(self, batch_time, data):
        if batch_time == 2000:
            msg = "disk full"
            raise OSError(msg)
        real(self, batch_time, data)

    monkeypatch.setattr(Checkpoint, "write_plan_data", write_plan_data)
    url = str(tmp_path / "ckpt")
    ssc = sk.StreamingContext(1.0, checkpoint=url, clock=ManualClock(), executor=ray_executor)
    sink = ListSink("u")
    ssc.rate_stream(7, name="rate").map(lambda r: (r[0] % 5, 1)).update_state_by_key(lambda vs, old: (old or 0) + sum(vs), name="u").write_to(sink)
    try:
        with pytest.raises(OSError, match="disk full"):
            ssc.run(3)
    finally:
        ssc.stop()
    assert [t for t, _ in sink.batches] == [1000]
    assert [c.batch_time for c in Checkpoint(url).commits()] == [1000]
