"""`streamkeep checkpoint inspect|verify|diff` on checkpoints written by small jobs."""

from __future__ import annotations

import itertools
import json
import os
import runpy
import textwrap
from pathlib import Path
from typing import Any

import pytest

import streamkeep as sk
from streamkeep.checkpoint import Checkpoint
from streamkeep.checkpoint._format import GRAPH_REF_VERSION
from streamkeep.cli import main
from streamkeep.errors import DerivedNameWarning
from streamkeep.testing import ManualClock

START_MS = 1_000_000  # batch times are 1_001_000, 1_002_000, ... with a 1 s interval


def _count(new: list[int], old: int | None) -> int | None:
    total = (old or 0) + sum(new)
    return None if total >= 1000 else total  # a key past 1000 is removed


def _job(
    url: str,
    *,
    batches: int,
    snapshot_every: int = 20,
    fail_at: int | None = None,
    queue: bool = False,
    storage_options: dict[str, Any] | None = None,
) -> list[Any]:
    """Run a small stateful job; return the state output of its last batch."""
    outputs: list[Any] = []

    def setup() -> sk.StreamingContext:
        ssc = sk.StreamingContext(1.0, checkpoint=url, clock=ManualClock(START_MS), snapshot_every=snapshot_every, inline_delta_bytes=0)
        pairs = ssc.rate_stream(10, name="rate").map(lambda r: (r[0] % 5, 1))
        pairs.update_state_by_key(_count, name="counts").foreach_batch(lambda b: outputs.append(sorted(b.collect())))
        pairs.reduce_by_key_and_window(lambda a, b: a + b, 3.0, inv_f=lambda a, b: a - b, name="win").foreach_batch(lambda b: None)
        pairs.window(2.0, name="recent").foreach_batch(lambda b: None)
        if queue:
            ssc.queue_stream([[f"q{i}"] for i in range(50)], name="queue").foreach_batch(lambda b: None)
        if fail_at is not None:

            def boom(t: Any, b: Any) -> None:
                if len(outputs) >= fail_at:
                    raise RuntimeError("boom")

            pairs.foreach_batch(boom)
        return ssc

    ssc = sk.StreamingContext.get_or_create(url, setup, storage_options=storage_options)
    try:
        ssc.run(max_batches=batches)
    finally:
        ssc.stop()
    return outputs[-1] if outputs else []


def _cli(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    rc = main(list(args))
    out, err = capsys.readouterr()
    return rc, out, err


@pytest.fixture
def ckpt(tmp_path: Path) -> str:
    url = str(tmp_path / "ckpt")
    _job(url, batches=3)
    return url


# --------------------------------------------------------------------------- inspect


def test_inspect_text_summarises_the_checkpoint(ckpt: str, capsys: pytest.CaptureFixture[str]) -> None:
    rc, out, _ = _cli(capsys, "checkpoint", "inspect", ckpt)
    assert rc == 0
    assert f"written by streamkeep {sk.__version__}" in out
    assert "last committed batch: 1003000 ms (1970-01-01T00:16:43.000+00:00)" in out
    assert "counts (update_state_by_key, msgpack): 5 keys" in out
    assert "win (reduce_by_key_and_window, msgpack):" in out
    assert "rate (rate): position" in out
    assert "pending batches (planned, not committed; replayed at restart): 0" in out
    assert "log/" in out and "state/counts/" in out


def test_inspect_says_the_format_version_shown_is_the_identity_files_and_shows_the_records_newest(
    ckpt: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """The identity file keeps the version it was created with (4); the commit records are newer (8 here, graph
    files): inspect used to print only "format version 4", which read as the checkpoint's format."""
    rc, out, _ = _cli(capsys, "checkpoint", "inspect", ckpt)
    assert rc == 0
    assert f"identity file (CHECKPOINT): format version 4, written by streamkeep {sk.__version__}" in out, out
    assert f"newest format version among the log records: {GRAPH_REF_VERSION}" in out, out
    rc, out, _ = _cli(capsys, "checkpoint", "inspect", ckpt, "--json")
    assert rc == 0 and json.loads(out)["newest_record_format_version"] == GRAPH_REF_VERSION


def test_inspect_json_counts_keys_and_lists_files(ckpt: str, capsys: pytest.CaptureFixture[str]) -> None:
    rc, out, _ = _cli(capsys, "checkpoint", "inspect", ckpt, "--json")
    assert rc == 0
    info = json.loads(out)
    assert info["format_version"] == 4
    assert info["engine_version"] == sk.__version__
    assert info["last_commit"]["batch_time_ms"] == 1_003_000
    assert info["pending_batches"] == []
    assert info["positions"]["rate"]["next"] == 30
    ops = info["operators"]
    assert set(ops) == {"counts", "win", "recent"}
    assert ops["counts"]["keys"] == 5
    assert ops["recent"]["keys"] == 20  # a 2-batch window holds the last two batches' 10 records each
    assert ops["win"]["shape"]["length_ms"] == 3000
    for op in ops.values():
        assert op["bytes"] == op["snapshot_bytes"] + op["delta_bytes"] > 0
    files = {f["path"]: f["bytes"] for f in info["files"]}
    for rel, size in files.items():
        assert os.path.getsize(os.path.join(ckpt, rel)) == size
    assert info["total_bytes"] == sum(files.values())
    assert "CHECKPOINT" in files


def test_inspect_key_count_follows_snapshot_plus_deltas(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    url = str(tmp_path / "ckpt")
    last = _job(url, batches=7, snapshot_every=2)
    rc, out, _ = _cli(capsys, "checkpoint", "inspect", url, "--json")
    ops = json.loads(out)["operators"]
    assert rc == 0
    assert ops["counts"]["snapshot"] is not None
    assert ops["counts"]["keys"] == len(last) == 5


def test_inspect_shows_pending_batches(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    url = str(tmp_path / "ckpt")
    with pytest.raises(sk.UserFunctionError):
        _job(url, batches=5, fail_at=3)  # batch 3's plan is durable, its commit never happens
    rc, out, _ = _cli(capsys, "checkpoint", "inspect", url, "--json")
    info = json.loads(out)
    assert rc == 0
    assert info["last_commit"]["batch_time_ms"] == 1_002_000
    assert [p["batch_time_ms"] for p in info["pending_batches"]] == [1_003_000]
    assert info["pending_batches"][0]["sources"]["rate"] == {"from": 20, "until": 30, "t0": START_MS}


def test_inspect_does_not_decode_pickled_state(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    url = str(tmp_path / "ckpt")

    def setup() -> sk.StreamingContext:
        ssc = sk.StreamingContext(1.0, checkpoint=url, clock=ManualClock(START_MS))
        pairs = ssc.rate_stream(4, name="rate").map(lambda r: (r[0] % 2, r[0]))
        pairs.update_state_by_key(lambda n, o: (o or 0) + sum(n), name="pickled", codec="pickle").foreach_batch(lambda b: None)
        return ssc

    ssc = sk.StreamingContext.get_or_create(url, setup)
    ssc.run(max_batches=2)
    ssc.stop()
    rc, out, _ = _cli(capsys, "checkpoint", "inspect", url, "--json")
    op = json.loads(out)["operators"]["pickled"]
    assert rc == 0
    assert op["keys"] is None
    assert "pickle" in op["note"]
    rc, out, _ = _cli(capsys, "checkpoint", "verify", url)
    assert rc == 0, out


def test_inspect_of_something_else_fails_cleanly(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rc, _, err = _cli(capsys, "checkpoint", "inspect", str(tmp_path))
    assert rc == 2
    assert "no streamkeep checkpoint" in err


def test_storage_options_are_passed_and_checked(ckpt: str, capsys: pytest.CaptureFixture[str]) -> None:
    rc, out, _ = _cli(capsys, "checkpoint", "inspect", f"file://{ckpt}", "--storage-option", "auto_mkdir=false", "--json")
    assert rc == 0
    assert json.loads(out)["operators"]["counts"]["keys"] == 5
    rc, _, err = _cli(capsys, "checkpoint", "verify", ckpt, "-o", "no-equals-sign")
    assert rc == 2
    assert "KEY=VALUE" in err
    rc, _, err = _cli(capsys, "checkpoint", "verify", ckpt, "-o", "client_kwargs={oops")
    assert rc == 2
    assert "not valid JSON" in err


@pytest.mark.integration
def test_inspect_and_verify_on_s3(s3_server: Any, s3_url: str, capsys: pytest.CaptureFixture[str]) -> None:
    _job(s3_url, batches=3, storage_options=s3_server.storage_options)
    opts = [x for k, v in s3_server.storage_options.items() for x in ("-o", f"{k}={json.dumps(v) if isinstance(v, dict) else v}")]
    rc, out, _ = _cli(capsys, "checkpoint", "inspect", s3_url, "--json", *opts)
    assert rc == 0
    info = json.loads(out)
    assert info["operators"]["counts"]["keys"] == 5
    assert info["last_commit"]["batch_time_ms"] == 1_003_000
    assert any(f["path"].startswith("state/counts/") and f["bytes"] for f in info["files"])
    rc, out, _ = _cli(capsys, "checkpoint", "verify", s3_url, *opts)
    assert rc == 0, out


# --------------------------------------------------------------------------- verify


def _newest(ckpt: str, sub: str) -> str:
    d = os.path.join(ckpt, sub)
    return os.path.join(d, sorted(os.listdir(d))[-1])


def test_verify_ok(ckpt: str, capsys: pytest.CaptureFixture[str]) -> None:
    rc, out, _ = _cli(capsys, "checkpoint", "verify", ckpt)
    assert rc == 0
    assert "OK" in out and "2 retained commit(s)" in out


def test_verify_reports_a_flipped_byte(ckpt: str, capsys: pytest.CaptureFixture[str]) -> None:
    path = _newest(ckpt, "state/counts")
    data = bytearray(Path(path).read_bytes())
    data[len(data) // 2] ^= 0xFF
    Path(path).write_bytes(bytes(data))
    rc, out, _ = _cli(capsys, "checkpoint", "verify", ckpt)
    assert rc == 1
    assert "FAILED" in out
    assert os.path.relpath(path, ckpt) in out
    assert "checksum does not match" in out


def test_verify_reports_a_missing_delta(ckpt: str, capsys: pytest.CaptureFixture[str]) -> None:
    path = _newest(ckpt, "state/win")
    os.unlink(path)
    rc, out, _ = _cli(capsys, "checkpoint", "verify", ckpt)
    assert rc == 1
    assert f"needs {os.path.relpath(path, ckpt)}, which is missing" in out
    assert "recovery would fall back to the older commit of batch 1002000 ms" in out
    assert "streamkeep checkpoint verify" not in out  # its own output does not tell the reader to run it


def test_verify_reports_a_truncated_commit_record(ckpt: str, capsys: pytest.CaptureFixture[str]) -> None:
    path = _newest(ckpt, "log")
    data = Path(path).read_bytes()
    Path(path).write_bytes(data[: len(data) - 7])
    rc, out, _ = _cli(capsys, "checkpoint", "verify", ckpt)
    assert rc == 1
    assert os.path.relpath(path, ckpt) in out
    assert "recovery would use the commit of batch 1002000 ms" in out
    assert "streamkeep checkpoint verify" not in out  # its own output does not tell the reader to run it


def test_verify_reports_a_missing_blob_of_a_pending_batch(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    url = str(tmp_path / "ckpt")
    with pytest.raises(sk.UserFunctionError):
        _job(url, batches=5, fail_at=3, queue=True)
    rc, out, _ = _cli(capsys, "checkpoint", "verify", url)
    assert rc == 0, out
    blobs = sorted(os.listdir(os.path.join(url, "blobs")))
    os.unlink(os.path.join(url, "blobs", blobs[-1]))
    rc, out, _ = _cli(capsys, "checkpoint", "verify", url)
    assert rc == 1
    assert "pending batch 1003000 ms" in out and "which is missing" in out


def _pickle_framed(rel: str, kind: str, value: Any) -> bytes:
    import pickle

    from streamkeep.checkpoint import frame

    return frame(kind, "pickle", bytes([0x81]) + pickle.dumps(value), rel)


def test_verify_reports_a_pickled_pending_plan_like_recovery(ckpt: str, capsys: pytest.CaptureFixture[str]) -> None:
    from streamkeep.checkpoint import Checkpoint, plan_path

    plan = Checkpoint(ckpt).read_plan(1_003_000)
    rel = plan_path(1_004_000)
    Path(ckpt, rel).write_bytes(_pickle_framed(rel, "plan", {**plan, "batch_time": 1_004_000}))
    rc, out, err = _cli(capsys, "checkpoint", "verify", ckpt)
    assert rc == 1, out + err  # not a crash (rc 2)
    assert f"{rel}: " in out and "pickle codec" in out
    with pytest.raises(sk.errors.CheckpointError, match="pickle codec"):
        _job(ckpt, batches=1)


def test_verify_reports_pickled_state_of_a_msgpack_operator_like_recovery(ckpt: str, capsys: pytest.CaptureFixture[str]) -> None:
    path = _newest(ckpt, "state/counts")
    rel = os.path.relpath(path, ckpt)
    Path(path).write_bytes(_pickle_framed(rel, "delta", {"set": b"", "del": []}))
    rc, out, _ = _cli(capsys, "checkpoint", "verify", ckpt)
    assert rc == 1 and f"{rel}: written with the pickle codec" in out, out
    assert "recovery would fall back to the older commit" in out


def test_verify_and_recovery_call_a_damaged_claim_record_what_it_is(ckpt: str, capsys: pytest.CaptureFixture[str]) -> None:
    from streamkeep.checkpoint import Checkpoint

    _job(ckpt, batches=0)  # a restart that commits nothing: the log ends with its claim record
    ck = Checkpoint(ckpt)
    newest = ck.records()[0]
    assert newest.kind == "claim"
    path = Path(ckpt, "log", f"{newest.seq:012d}.rec")
    path.write_bytes(path.read_bytes()[:-2])
    rc, out, _ = _cli(capsys, "checkpoint", "verify", ckpt)
    assert rc == 1
    assert "newest commit could not be loaded" not in out and "fall back" not in out
    assert f"log record {newest.seq}, newer than the newest readable commit, is damaged" in out
    with pytest.warns(sk.errors.StreamkeepWarning) as caught:
        _job(ckpt, batches=1)
    text = " ".join(str(w.message) for w in caught)
    assert "newest commit could not be loaded" not in text and f"{path.name} is unreadable" in text


def test_verify_without_a_checkpoint(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rc, out, _ = _cli(capsys, "checkpoint", "verify", str(tmp_path / "nothing"))
    assert rc == 1
    assert "no streamkeep checkpoint" in out


@pytest.mark.parametrize("where", ["a-file", "under-a-file", "foreign-dir"])
def test_inspect_and_verify_of_a_file_or_a_foreign_directory_fail_cleanly(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], where: str
) -> None:
    """A regular file, a path under one, or a directory that is not a checkpoint: a clear answer, no traceback."""
    (tmp_path / "f").write_text("x")
    (tmp_path / "proj" / "src").mkdir(parents=True)
    (tmp_path / "proj" / "src" / "app.py").write_text("print(1)\n")
    url = {"a-file": tmp_path / "f", "under-a-file": tmp_path / "f" / "ckpt", "foreign-dir": tmp_path / "proj"}[where]
    rc, _, err = _cli(capsys, "checkpoint", "inspect", str(url))
    assert rc == 2 and "no streamkeep checkpoint" in err, err
    rc, out, _ = _cli(capsys, "checkpoint", "verify", str(url))
    assert rc == 1 and "no streamkeep checkpoint" in out, out
    assert "not part of the checkpoint layout" not in out, out  # it did not walk a foreign tree file by file


# --------------------------------------------------------------------------- diff

_APP = """
import streamkeep as sk

URL = {url!r}
REACHED = {reached!r}


def setup():
    ssc = sk.StreamingContext(1.0, checkpoint=URL{extra_ctx})
    pairs = ssc.rate_stream(10, name="rate").map(lambda r: (r[0] % 7, 1))  # the lambda changed: fine
{body}
    return ssc


if __name__ == "__main__":
    ssc = sk.StreamingContext.get_or_create(URL, setup)
    ssc.start()
    ssc.await_termination()
    open(REACHED, "w").close()
"""

_SAME = """
    pairs.update_state_by_key(lambda n, o: (o or 0) + sum(n), name="counts").foreach_batch(lambda b: None)
    pairs.reduce_by_key_and_window(lambda a, b: a + b, 3.0, inv_f=lambda a, b: a - b, name="win").foreach_batch(lambda b: None)
    pairs.window(2.0, name="recent").foreach_batch(lambda b: None)
"""


def _app(tmp_path: Path, url: str, body: str, extra_ctx: str = "") -> tuple[str, Path]:
    reached = tmp_path / "reached"
    path = tmp_path / "app.py"
    path.write_text(_APP.format(url=url, reached=str(reached), body=textwrap.indent(textwrap.dedent(body), "    "), extra_ctx=extra_ctx))
    return str(path), reached


def _snapshot_of(ckpt: str) -> dict[str, int]:
    return {os.path.join(d, n): os.path.getmtime(os.path.join(d, n)) for d, _, ns in os.walk(ckpt) for n in ns}


def test_diff_same_graph_restores_without_running(ckpt: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    app, reached = _app(tmp_path, ckpt, _SAME)
    before = _snapshot_of(ckpt)
    rc, out, _ = _cli(capsys, "checkpoint", "diff", ckpt, app)
    assert rc == 0, out
    assert (
        "restores (state carried over):\n    counts (update_state_by_key)\n    win (reduce_by_key_and_window)\n    recent (window)" in out
    )
    assert "rate (rate) at" in out
    assert "verdict: compatible" in out
    assert not reached.exists()
    assert _snapshot_of(ckpt) == before  # nothing claimed, written or deleted


def test_diff_reports_new_dropped_and_incompatible(ckpt: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    body = """
    pairs.update_state_by_key(lambda n, o: (o or 0) + sum(n), name="counts").foreach_batch(lambda b: None)
    pairs.reduce_by_key_and_window(lambda a, b: a + b, 4.0, name="win").foreach_batch(lambda b: None)
    pairs.map_with_state(lambda k, v, s: v, name="fresh").foreach_batch(lambda b: None)
    ssc.constant_stream([1], name="extra").foreach_batch(lambda b: None)
    """
    app, reached = _app(tmp_path, ckpt, body)
    rc, out, _ = _cli(capsys, "checkpoint", "diff", ckpt, app)
    assert rc == 1, out
    assert "restores (state carried over):\n    counts (update_state_by_key)\n" in out
    assert "new (starts empty or from initial=):\n    fresh (map_with_state)" in out
    assert "dropped (state in the checkpoint, operator not in the code):\n    recent (window)" in out
    assert "win: length_ms 3000 -> 4000; inverse True -> False" in out
    assert "new sources (start from their configured start):\n    extra (constant)" in out
    assert "verdict: INCOMPATIBLE" in out
    assert "allow_state_loss={'recent'}" in out
    assert not reached.exists()


def test_diff_honours_allow_state_loss(ckpt: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    body = """
    pairs.update_state_by_key(lambda n, o: (o or 0) + sum(n), name="counts").foreach_batch(lambda b: None)
    """
    app, _ = _app(tmp_path, ckpt, body, extra_ctx=", allow_state_loss={'win', 'recent'}")
    rc, out, _ = _cli(capsys, "checkpoint", "diff", ckpt, app)
    assert rc == 0, out
    assert "recent (window) -- allowed by allow_state_loss" in out
    assert "verdict: compatible" in out


def test_diff_of_a_script_that_runs_at_import(ckpt: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    reached = tmp_path / "reached"
    app = tmp_path / "flat.py"
    app.write_text(
        textwrap.dedent(f"""
        import streamkeep as sk
        ssc = sk.StreamingContext(0.5, checkpoint={ckpt!r})
        ssc.rate_stream(10, name="rate").map(lambda r: (r[0], 1)).update_state_by_key(
            lambda n, o: 1, name="counts").foreach_batch(lambda b: None)
        ssc.run(max_batches=3)
        open({str(reached)!r}, "w").close()
    """)
    )
    rc, out, _ = _cli(capsys, "checkpoint", "diff", ckpt, str(app))
    assert rc == 1
    assert "batch interval: 1000 ms -> 500 ms" in out
    assert "dropped" in out and "win (reduce_by_key_and_window)" in out
    assert not reached.exists()


def test_diff_refuses_a_renamed_source_by_name(ckpt: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    app, reached = _app(tmp_path, ckpt, _SAME)
    Path(app).write_text(Path(app).read_text().replace('name="rate"', 'name="events"'))
    rc, out, _ = _cli(capsys, "checkpoint", "diff", ckpt, app)
    assert rc == 1, out
    assert "new sources (start from their configured start):\n    events (rate)" in out
    assert "no source of the code takes over (renamed or removed):\n    rate (rate) at {" in out
    assert "verdict: INCOMPATIBLE" in out
    assert "source 'rate' (rate) has a position in the checkpoint" in out and "allow_state_loss={'rate'}" in out
    assert "streamkeep checkpoint diff" not in out  # no advice to run the command being run
    assert not reached.exists()
    Path(app).write_text(Path(app).read_text().replace("checkpoint=URL", "checkpoint=URL, allow_state_loss={'rate'}"))
    rc, out, _ = _cli(capsys, "checkpoint", "diff", ckpt, app)
    assert rc == 0, out
    assert "-- allowed by allow_state_loss (its position is dropped)" in out


_SWAP_APP = """
import streamkeep as sk

URL = {url!r}


def setup():
    ssc = sk.StreamingContext(1.0, checkpoint=URL)
    clicks = ssc.queue_stream([[("k", 1)]] * 9, name="clicks")
    views = ssc.queue_stream([[("k", 10)]] * 9, name="views")
    for s in {order!r}:
        {{"clicks": clicks, "views": views}}[s].update_state_by_key(lambda n, o: (o or 0) + sum(n)).foreach_batch(lambda b: None)
    return ssc


if __name__ == "__main__":
    sk.StreamingContext.get_or_create(URL, setup).run(max_batches=2)
"""


def test_diff_shows_the_inputs_of_swapped_unnamed_operators(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    url = str(tmp_path / "ckpt")
    app = tmp_path / "app.py"
    app.write_text(_SWAP_APP.format(url=url, order=("clicks", "views")))
    with pytest.warns(DerivedNameWarning):
        runpy.run_path(str(app), run_name="__main__")
    rc, out, _ = _cli(capsys, "checkpoint", "inspect", url)
    assert "update_state_by_key#1 (update_state_by_key, msgpack)" in out and "      reads clicks\n" in out
    app.write_text(_SWAP_APP.format(url=url, order=("views", "clicks")))
    with pytest.warns(DerivedNameWarning):
        rc, out, _ = _cli(capsys, "checkpoint", "diff", url, str(app))
    assert rc == 1, out
    assert "derived names whose inputs changed" in out and "restores (state carried over)" not in out
    assert "    update_state_by_key#1 (update_state_by_key) reads [views]; its stored state was built from [clicks]" in out
    assert "      update_state_by_key#1 (update_state_by_key) read [clicks]\n      update_state_by_key#2 (update_state_by_key) read [views]" in out
    assert "verdict: INCOMPATIBLE" in out and "it reads 'views' while its stored state was built from 'clicks'" in out


def test_diff_lists_only_the_numbered_names_stored_inputs(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A named stateful operator next to the swapped unnamed ones is not listed among the numbered names' inputs."""
    url = str(tmp_path / "ckpt")
    app = tmp_path / "app.py"
    named = '    clicks.update_state_by_key(lambda n, o: (o or 0) + sum(n), name="named_sum").foreach_batch(lambda b: None)\n    for s in'
    app.write_text(_SWAP_APP.format(url=url, order=("clicks", "views")).replace("    for s in", named))
    with pytest.warns(DerivedNameWarning):
        runpy.run_path(str(app), run_name="__main__")
    app.write_text(_SWAP_APP.format(url=url, order=("views", "clicks")).replace("    for s in", named))
    with pytest.warns(DerivedNameWarning):
        rc, out, _ = _cli(capsys, "checkpoint", "diff", url, str(app))
    assert rc == 1, out
    after = out.split("stored inputs of the numbered names")[1].splitlines()[1:]
    listing = "\n".join(itertools.takewhile(lambda line: line.startswith("      "), after))
    assert "update_state_by_key#1 (update_state_by_key) read [clicks]" in listing
    assert "named_sum" not in listing
    assert "    named_sum (update_state_by_key)" in out  # listed as restoring


def test_diff_before_the_first_commit(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    url = str(tmp_path / "ckpt")
    with pytest.raises(sk.UserFunctionError):
        _job(url, batches=3, fail_at=1)
    app, _ = _app(tmp_path, url, _SAME)
    rc, out, _ = _cli(capsys, "checkpoint", "diff", url, app)
    assert rc == 0
    assert "nothing committed yet" in out


def test_diff_of_a_broken_app(ckpt: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    app = tmp_path / "broken.py"
    app.write_text("raise RuntimeError('no graph today')\n")
    rc, _, err = _cli(capsys, "checkpoint", "diff", ckpt, str(app))
    assert rc == 2
    assert "RuntimeError: no graph today" in err
    rc, _, err = _cli(capsys, "checkpoint", "diff", ckpt, str(tmp_path / "missing.py"))
    assert rc == 2
    assert "no such file" in err


PYSPARK_APP = """
import sys
from pyspark import SparkContext
from pyspark.streaming import StreamingContext

def create():
    sc = SparkContext("local[2]", "diff")
    ssc = StreamingContext(sc, 1.0)
    ssc.checkpoint(sys.argv[1])
    pairs = ssc.queueStream([sc.parallelize(["a b"])]).flatMap(str.split).map(lambda w: (w, 1))
    pairs.updateStateByKey(lambda new, old: sum(new) + (old or 0)).pprint()
    return ssc

ssc = StreamingContext.getOrCreate(sys.argv[1], create)
ssc.start()
ssc.awaitTermination()
"""


def test_diff_of_a_pyspark_program_with_its_arguments(tmp_path: Path) -> None:
    """A PySpark program (run with `streamkeep run --pyspark job.py CKPT`) could not be diffed: `diff` had no
    --pyspark (ModuleNotFoundError: pyspark) and gave the script no arguments (IndexError on sys.argv[1])."""
    import subprocess
    import sys

    url = str(tmp_path / "ckpt")
    app = tmp_path / "job.py"
    app.write_text(PYSPARK_APP.replace("ssc.awaitTermination()", "ssc.awaitTerminationOrTimeout(0.1)\nssc.stop()"))
    repo = str(Path(__file__).resolve().parents[3])
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(x for x in (repo, os.environ.get("PYTHONPATH")) if x))
    cli = [sys.executable, "-m", "streamkeep.cli"]
    ran = subprocess.run([*cli, "run", "--no-ui", "--pyspark", str(app), url], capture_output=True, text=True, env=env, timeout=120)
    assert ran.returncode == 0, ran.stderr
    app.write_text(PYSPARK_APP)  # the diff must not run the job (awaitTermination would never return)
    r = subprocess.run([*cli, "checkpoint", "diff", url, str(app), url], capture_output=True, text=True, env=env, timeout=120)
    assert r.returncode == 2
    assert "No module named 'pyspark'" in r.stderr and f"streamkeep checkpoint diff --pyspark URL {app}" in r.stderr, r.stderr
    r = subprocess.run([*cli, "checkpoint", "diff", "--pyspark", url, str(app), url], capture_output=True, text=True, env=env, timeout=120)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "restores (state carried over):\n    update_state_by_key#1 (update_state_by_key)" in r.stdout
    assert "verdict: compatible" in r.stdout
    r = subprocess.run(
        [*cli, "checkpoint", "diff", "--pyspark", url, str(app), "--", url], capture_output=True, text=True, env=env, timeout=120
    )
    assert r.returncode == 0 and "verdict: compatible" in r.stdout, r.stdout + r.stderr


@pytest.mark.parametrize(
    ("argv", "usage"),
    [
        (["demo", "--checkpoint-dir", "x"], "usage: streamkeep demo "),
        (["run", "--bogus", "app.py"], "usage: streamkeep run "),
        (["checkpoint", "inspect", "ckpt", "--bogus"], "usage: streamkeep checkpoint inspect "),
        (["checkpoint", "verify", "ckpt", "--bogus"], "usage: streamkeep checkpoint verify "),
        (["checkpoint", "diff", "ckpt", "app.py", "--checkpoint", "x"], "usage: streamkeep checkpoint diff "),
    ],
)
def test_an_unknown_option_shows_the_subcommands_usage(argv: list[str], usage: str, capsys: pytest.CaptureFixture[str]) -> None:
    """`streamkeep demo --bogus` printed the top-level usage (`streamkeep [-h] [--version] {demo,run,checkpoint}`),
    which does not list the options of the command the user typed."""
    with pytest.raises(SystemExit) as exc:
        main(argv)
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith(usage), err
    assert f"unrecognized arguments: {' '.join(argv[-2:] if argv[-1] == 'x' else [a for a in argv if a == '--bogus'])}" in err
    if argv[1] == "diff":
        assert "the script's own arguments go after --" in err


def test_run_without_a_file_asks_only_for_the_file(capsys: pytest.CaptureFixture[str]) -> None:
    """A bare `streamkeep run` said "the following arguments are required: app, args": the script's
    arguments are optional."""
    with pytest.raises(SystemExit) as exc:
        main(["run"])
    assert exc.value.code == 2
    assert capsys.readouterr().err.rstrip().endswith("error: the following arguments are required: app")


# --------------------------------------------------------------------------- --version, demo messages


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["--version"])
    assert exc.value.code == 0
    assert capsys.readouterr().out.strip() == f"streamkeep {sk.__version__}"


def test_demo_resume_message_uses_clock_times_and_counts_the_catch_up() -> None:
    from datetime import datetime

    from streamkeep.cli._demo import resume_message

    last = int(datetime(2024, 5, 6, 14, 3, 7, 500_000).timestamp() * 1000)
    msg = resume_message("/tmp/my ckpt", last, last + 3 * 60_000 + 2_250, 500)
    assert "14:03:07.500" in msg and str(last) not in msg  # clock time, not raw ms
    assert "3 min 2 s ago" in msg
    assert "catching up 364 batches" in msg
    assert "'/tmp/my ckpt'" in msg
    assert "catching up" not in resume_message("c", last, last + 400, 500)
    assert "2024-05-06 14:03:07.500" in resume_message("c", last, last + 2 * 86_400_000, 500)  # another day: the date too


def test_demo_names_the_checkpoint_to_resume_from() -> None:
    from streamkeep.cli._demo import DEFAULT_CHECKPOINT, again_command

    assert again_command(DEFAULT_CHECKPOINT) == "streamkeep demo"
    assert again_command("/tmp/my ckpt") == "streamkeep demo --checkpoint '/tmp/my ckpt'"


def test_the_demo_script_names_itself_as_the_command_to_resume(monkeypatch):
    """Started through ./scripts/demo.sh (which sets STREAMKEEP_DEMO_COMMAND), the demo tells that command, not
    `streamkeep demo`, which is not on the PATH of a user who never activated the virtualenv."""
    from streamkeep.cli._demo import DEFAULT_CHECKPOINT, again_command

    monkeypatch.setenv("STREAMKEEP_DEMO_COMMAND", "./scripts/demo.sh")
    assert again_command(DEFAULT_CHECKPOINT) == "./scripts/demo.sh"
    assert again_command("/tmp/ck") == "./scripts/demo.sh --checkpoint /tmp/ck"


# --------------------------------------------------------------------------- demo --fresh on someone else's directory


def test_demo_fresh_does_not_delete_a_directory_that_is_not_a_checkpoint(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """`streamkeep demo --fresh --checkpoint DIR` deleted DIR whatever it was (a typo away from losing a directory)."""
    precious = tmp_path / "my-data"
    precious.mkdir()
    (precious / "notes.txt").write_text("keep me\n")
    assert main(["demo", "--fresh", "--checkpoint", str(precious), "--seconds", "0.1"]) == 2
    err = capsys.readouterr().err
    assert "is not a streamkeep checkpoint" in err and "Nothing was deleted" in err, err
    assert (precious / "notes.txt").read_text() == "keep me\n"


def test_demo_neither_deletes_nor_uses_another_jobs_checkpoint(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    url = str(tmp_path / "job-ckpt")
    _job(url, batches=3)
    def committed() -> Any:  # what the checkpoint holds (a refused start may still leave a claim record)
        assert main(["checkpoint", "inspect", url, "--json"]) == 0
        held = json.loads(capsys.readouterr().out)
        return held["commits"], held["operators"]

    before = committed()
    assert main(["demo", "--fresh", "--checkpoint", url, "--seconds", "0.1"]) == 2
    err = capsys.readouterr().err
    assert "is the checkpoint of another job (it keeps 'counts', 'rate', 'recent', 'win')" in err and "Nothing was deleted" in err, err
    assert main(["demo", "--checkpoint", url, "--seconds", "0.1"]) == 2
    err = capsys.readouterr().err
    assert f"'{url}' is not the demo's checkpoint: it is the checkpoint of another job" in err, err
    assert "allow_state_loss" not in err  # advice for the job's own code, not for a demo user
    assert committed() == before
    assert main(["checkpoint", "verify", url]) == 0


def test_demo_fresh_does_not_delete_a_directory_that_only_shares_a_name_with_a_checkpoints_layout(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A project with a `log/` folder looked like a checkpoint without a commit, which counted as the demo's."""
    project = tmp_path / "proj"
    (project / "log").mkdir(parents=True)
    (project / "log" / "app.log").write_text("started\n")
    (project / "src").mkdir()
    (project / "src" / "main.py").write_text("print('hi')\n")
    assert main(["demo", "--fresh", "--checkpoint", str(project), "--seconds", "0.1"]) == 2
    err = capsys.readouterr().err
    assert "holds no readable commit" in err and "Nothing was deleted" in err, err
    assert (project / "src" / "main.py").read_text() == "print('hi')\n"


def test_demo_fresh_does_not_delete_a_checkpoint_without_a_readable_commit(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    url = tmp_path / "job-ckpt"
    _job(str(url), batches=2)
    for f in (url / "log").rglob("*"):
        if f.is_file():
            f.write_bytes(b"damaged")
    kept = sorted(p.relative_to(url) for p in url.rglob("*"))
    assert main(["demo", "--fresh", "--checkpoint", str(url), "--seconds", "0.1"]) == 2
    assert "holds no readable commit" in capsys.readouterr().err
    assert sorted(p.relative_to(url) for p in url.rglob("*")) == kept


@pytest.mark.slow
def test_demo_fresh_does_not_delete_the_checkpoint_a_running_demo_holds(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    url = str(tmp_path / "demo-ckpt")
    assert main(["demo", "--checkpoint", url, "--seconds", "0.3", "--interval", "0.1"]) == 0
    capsys.readouterr()
    holder = Checkpoint(url)  # what a running demo's driver holds
    holder.claim("another-demo", "test")
    try:
        assert main(["demo", "--fresh", "--checkpoint", url, "--seconds", "0.1"]) == 2
        err = capsys.readouterr().err
        assert "a running demo holds it" in err and "Nothing was deleted" in err, err
        assert Checkpoint(url).commits()
    finally:
        holder.release()
    assert main(["demo", "--fresh", "--checkpoint", url, "--seconds", "0.3", "--interval", "0.1"]) == 0
    assert "fresh start" in capsys.readouterr().out


@pytest.mark.slow
def test_demo_restores_the_sigterm_handler_and_runs_off_the_main_thread(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """The demo left its SIGTERM handler installed after it returned, and failed with ValueError off the main thread."""
    import signal
    import threading

    from streamkeep.cli._demo import run_demo

    before = signal.getsignal(signal.SIGTERM)
    assert main(["demo", "--checkpoint", str(tmp_path / "a"), "--seconds", "0.3", "--interval", "0.1"]) == 0
    assert signal.getsignal(signal.SIGTERM) is before
    done: list[int] = []
    worker = threading.Thread(target=lambda: done.append(run_demo(str(tmp_path / "b"), 0.3, 0.1, False)))
    worker.start()
    worker.join(60)
    assert done == [0]
    assert "fresh start" in capsys.readouterr().out


def test_demo_fresh_refuses_a_remote_url(capsys: pytest.CaptureFixture[str]) -> None:
    """--fresh silently deleted nothing for an s3:// URL, and the demo then resumed the old checkpoint."""
    assert main(["demo", "--fresh", "--checkpoint", "s3://bucket/demo", "--seconds", "0.1"]) == 2
    assert "--fresh deletes local directories only" in capsys.readouterr().err


@pytest.mark.slow
def test_demo_fresh_still_starts_its_own_checkpoint_over(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    url = str(tmp_path / "demo-ckpt")
    assert main(["demo", "--checkpoint", url, "--seconds", "0.3", "--interval", "0.1"]) == 0
    assert "fresh start" in capsys.readouterr().out
    assert main(["demo", "--checkpoint", url, "--seconds", "0.3", "--interval", "0.1"]) == 0
    assert "resumed from checkpoint" in capsys.readouterr().out
    assert main(["demo", "--fresh", "--checkpoint", url, "--seconds", "0.3", "--interval", "0.1"]) == 0
    assert "fresh start" in capsys.readouterr().out


# --------------------------------------------------------------------------- run: where in APP.py it failed


def test_run_shows_the_line_of_the_users_function_that_raised(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """`streamkeep run` printed only the one-line UserFunctionError: not which line of APP.py raised
    (`python APP.py` shows it in the chained traceback)."""
    app = tmp_path / "job.py"
    app.write_text(textwrap.dedent("""\
        import streamkeep as sk
        def parse(r):
            return int("x" + str(r[0]))
        ssc = sk.StreamingContext(1.0)
        ssc.queue_stream([[(1, 2)]], name="q").map(parse).foreach_batch(lambda b: b.collect())
        ssc.run()
    """))
    assert main(["run", "--no-ui", str(app)]) == 1  # the job failed (2 is for usage and configuration errors)
    err = capsys.readouterr().err
    assert f'File "{app}", line 3, in parse' in err and "ValueError: invalid literal for int()" in err, err
    assert f"streamkeep: {app}, line 5: ssc.queue_stream(" in err, err  # innermost line of APP.py: the foreach_batch lambda
    assert err.rstrip().splitlines()[-1].startswith("streamkeep: UserFunctionError: user function in operator 'map'"), err


def test_run_names_the_line_of_app_py_that_made_a_config_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    app = tmp_path / "job.py"
    app.write_text('import streamkeep as sk\nssc = sk.StreamingContext(1.0)\nssc.rate_stream(5, name="r").map(3).pprint()\n')
    assert main(["run", "--no-ui", str(app)]) == 2
    err = capsys.readouterr().err
    assert f'streamkeep: {app}, line 3: ssc.rate_stream(5, name="r").map(3).pprint()\nstreamkeep: ConfigError: map: function must be callable' in err, err


def test_diff_takes_the_same_directory_spelt_another_way_as_the_same_checkpoint(ckpt: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """The app's `ckpt/` and the command line's `ckpt` (or its absolute path) are one checkpoint: no note that they differ."""
    app, _ = _app(tmp_path, ckpt + "/", _SAME)
    rc, out, _ = _cli(capsys, "checkpoint", "diff", os.path.relpath(ckpt), app)
    assert rc == 0, out
    assert "points its context at checkpoint" not in out, out
    app, _ = _app(tmp_path, str(tmp_path / "elsewhere"), _SAME)
    rc, out, _ = _cli(capsys, "checkpoint", "diff", ckpt, app)
    assert "points its context at checkpoint" in out, out  # a really different one is still noted


@pytest.mark.parametrize("option", ["--seconds", "--interval"])
@pytest.mark.parametrize("value", ["-5", "0", "inf", "abc"])
def test_demo_refuses_a_duration_that_is_not_positive(option: str, value: str, capsys: pytest.CaptureFixture[str]) -> None:
    """`streamkeep demo --seconds -5` ran a batch anyway; every bad duration is a usage error naming the option."""
    with pytest.raises(SystemExit) as exc:
        main(["demo", option, value])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("usage: streamkeep demo ") and f"argument {option}: '{value}' is not a positive number of seconds" in err, err


def test_run_pyspark_takes_spark_submits_master_name_and_conf(tmp_path: Path) -> None:
    """`spark-submit --master local[3] --conf spark.streaming.kafka.maxRatePerPartition=100 job.py` is how the
    settings of many PySpark jobs are given; `streamkeep run --pyspark` refused --master, and dropping a --conf
    silently drops its setting (a rate limit: one huge batch after a restart). The program's own conf wins, as in Spark."""
    import subprocess
    import sys

    app = tmp_path / "job.py"
    app.write_text(
        textwrap.dedent(
            """
            from pyspark import SparkConf, SparkContext
            sc = SparkContext(conf=SparkConf().set("spark.b", "code"))
            c = sc.getConf()
            print(c.get("spark.master"), c.get("spark.app.name"), c.get("spark.streaming.kafka.maxRatePerPartition"), c.get("spark.b"), sc.defaultParallelism)
            """
        )
    )
    repo = str(Path(__file__).resolve().parents[3])
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(x for x in (repo, os.environ.get("PYTHONPATH")) if x))
    cli = [sys.executable, "-m", "streamkeep.cli", "run", "--no-ui"]
    opts = ["--master", "local[3]", "--name", "clicks", "--conf", "spark.streaming.kafka.maxRatePerPartition=100", "--conf", "spark.b=cli"]
    r = subprocess.run([*cli, "--pyspark", *opts, str(app)], capture_output=True, text=True, env=env, timeout=120)
    assert r.returncode == 0, r.stderr
    assert r.stdout.split() == ["local[3]", "clicks", "100", "code", "3"]
    r = subprocess.run([*cli, *opts, str(app)], capture_output=True, text=True, env=env, timeout=120)
    assert r.returncode == 2 and "add --pyspark" in r.stderr, r.stderr
    r = subprocess.run([*cli, "--pyspark", "--conf", "spark.b", str(app)], capture_output=True, text=True, env=env, timeout=120)
    assert r.returncode == 2 and "--conf 'spark.b': expected KEY=VALUE" in r.stderr, r.stderr


@pytest.mark.parametrize("change", [None, "positions", "zero_ms", "partitioning", "claim"])
def test_verify_accepts_a_batch_committed_again_only_by_the_same_driver_with_the_same_positions(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], change: str | None
) -> None:
    """A clean stop may commit its last batch once more (naming a snapshot it waited for): same driver, positions,
    graph, zero time and partitioning. Any other repeat of a batch stays a problem."""
    url = str(tmp_path / "ckpt")
    _job(url, batches=3)
    last = Checkpoint(url).commits()[0].data
    first = {k: v for k, v in last.items() if k not in ("type", "epoch", "host", "pid")}
    first["batch_time"] = last["batch_time"] + last["batch_interval_ms"]  # a new batch by a new driver: its chains unchanged
    again = dict(first)
    if change == "positions":
        again["positions"] = {**again["positions"], "rate": {"next": 12345}}
    elif change == "zero_ms":
        again["zero_ms"] = again["zero_ms"] + 1
    elif change == "partitioning":
        again["partitioning"] = {"partitions": 4}
    writer = Checkpoint(url)
    writer.claim("test", "0")
    try:
        assert writer.graph_ref(writer.graph_of(writer.commits()[0])) == first["graph_id"]  # registered: the records name it
        writer.commit(first)
        if change == "claim":  # another driver (or a restart) commits the same batch again: not a stop's repeat
            writer.release()
            writer = Checkpoint(url)
            writer.claim("test2", "0")
            writer.graph_ref(writer.graph_of(writer.commits()[0]))
        writer.commit(again)
    finally:
        writer.release()
    rc, out, _ = _cli(capsys, "checkpoint", "verify", url)
    assert (rc == 0) is (change is None), out
    assert ("not after the previous commit's" in out) is (change is not None), out
