"""Commit records name the job's graph description by id (format 8): one file per graph, not one copy per batch.

Every commit record used to repeat the whole graph description (``graph``). Now it names a
content-addressed file, ``graphs/<id>.graph`` (``graph_id``), written once before the first commit
that names it. These tests hold every reader to the same answer as before (recovery's code-change
check, inspect, verify, diff, the demo's check), retention and the restart sweep to keeping the
graph a kept commit needs (only the sweep deletes graph files), a fallback to an older commit to finding that commit's graph, an older
streamkeep to refusing such records by their version, and old records (graph inline) to loading.
"""

from __future__ import annotations

import json
import os
import textwrap
from pathlib import Path
from typing import Any

import pytest

import streamkeep as sk
from streamkeep.checkpoint import Checkpoint, _format, frame, log_path
from streamkeep.checkpoint._checkpoint import graph_path
from streamkeep.checkpoint._format import GRAPH_REF_VERSION, PLAN_LOG_VERSION, read_frame
from streamkeep.cli import main
from streamkeep.cli._demo import _OPERATOR, _SOURCE, _not_the_demos
from streamkeep.codec import get_codec
from streamkeep.errors import CorruptCheckpointError, IncompatibleCheckpointError, StreamkeepWarning
from streamkeep.testing import ManualClock

START_MS = 1_000_000


def _setup(url: str, outputs: list[Any], *, extra: bool = False, reshaped: bool = False, **options: Any) -> Any:
    """A job counting keys in 'total'; `extra` adds a stateful operator (a compatible change: a new graph),
    `reshaped` makes 'total' a window (an incompatible change)."""

    def setup() -> sk.StreamingContext:
        ssc = sk.StreamingContext(1.0, checkpoint=url, clock=ManualClock(START_MS), **{k: v for k, v in options.items() if v is not None})
        pairs = ssc.rate_stream(6, name="rate").map(lambda r: (r[0] % 3, 1))
        if reshaped:
            pairs.reduce_by_key_and_window(lambda a, b: a + b, 2.0, name="total").foreach_batch(lambda b: None)
        else:
            pairs.update_state_by_key(lambda new, old: (old or 0) + sum(new), name="total").foreach_batch(
                lambda t, b: outputs.append((int(t.timestamp() * 1000), sorted(b.collect())))
            )
        if extra:
            pairs.update_state_by_key(lambda new, old: (old or 0) + len(new), name="extra").foreach_batch(lambda b: None)
        return ssc

    return setup


def _run(url: str, batches: int, *, storage_options: dict[str, Any] | None = None, **kw: Any) -> list[Any]:
    outputs: list[Any] = []
    ssc = sk.StreamingContext.get_or_create(url, _setup(url, outputs, storage_options=storage_options, **kw), storage_options=storage_options)
    try:
        ssc.run(max_batches=batches)
    finally:
        ssc.stop()
    return outputs


def _commits(url: str) -> list[Any]:
    return Checkpoint(url).commits()


def _graph_files(url: str) -> list[str]:
    d = os.path.join(url, "graphs")
    return sorted(f"graphs/{n}" for n in os.listdir(d)) if os.path.isdir(d) else []


def _flip(path: str, at: int = -6) -> None:
    data = bytearray(Path(path).read_bytes())
    data[at] ^= 0xFF
    Path(path).write_bytes(bytes(data))


def _cli(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str]:
    rc = main(list(args))
    out, err = capsys.readouterr()
    return rc, out + err


# ------------------------------------------------------------------------ what is written


def test_commit_records_name_one_graph_file_instead_of_holding_the_graph(tmp_path: Path) -> None:
    url = str(tmp_path / "c")
    _run(url, 4)
    commits = _commits(url)
    assert len(commits) == 2
    for rec in commits:
        assert "graph" not in rec.data and rec.data["graph_id"] == commits[0].data["graph_id"]
        raw = (Path(url) / log_path(rec.seq)).read_bytes()
        assert raw[4] == GRAPH_REF_VERSION  # an older streamkeep would find no graph in it: refused by version
    assert _graph_files(url) == [graph_path(commits[0].data["graph_id"])]
    graph = Checkpoint(url).graph_of(commits[0])
    assert graph["operators"]["total"]["kind"] == "update_state_by_key" and graph["sources"]["rate"]["kind"] == "rate"
    inode = os.stat(os.path.join(url, _graph_files(url)[0])).st_ino
    _run(url, 3)  # the same code again: the same file, not written again
    assert _graph_files(url) == [graph_path(commits[0].data["graph_id"])]
    assert os.stat(os.path.join(url, _graph_files(url)[0])).st_ino == inode


def test_an_older_reader_refuses_graph_less_commits_by_version(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    url = str(tmp_path / "c")
    _run(url, 3)
    monkeypatch.setattr(_format, "READABLE_VERSIONS", (1, 2, 3, 4, 5, 6, 7))  # a streamkeep before format 8
    with pytest.raises(CorruptCheckpointError, match=r"has format version 8; this streamkeep reads versions 1, 2, 3, 4, 5, 6, 7\. Use the streamkeep release"):
        _run(url, 1)


def _inline_the_graph(url: str) -> None:
    """Rewrite every commit record as a build before format 8 wrote it (graph inline, format 6) and drop graphs/."""
    ckpt = Checkpoint(url)
    codec = get_codec("msgpack")
    for rec in ckpt.commits():
        data = {k: v for k, v in rec.data.items() if k != "graph_id"}
        data["graph"] = ckpt.graph_of(rec)
        rel = log_path(rec.seq)
        (Path(url) / rel).write_bytes(frame("record", "msgpack", codec.encode(data), rel, PLAN_LOG_VERSION))
    for rel in _graph_files(url):
        os.remove(os.path.join(url, rel))


def test_records_with_the_graph_inline_keep_loading_and_are_checked_against_the_code(tmp_path: Path) -> None:
    url, once = str(tmp_path / "c"), str(tmp_path / "once")
    first = _run(url, 3)
    _inline_the_graph(url)
    assert all("graph" in r.data for r in _commits(url)) and not _graph_files(url)
    with pytest.raises(IncompatibleCheckpointError, match=r"stateful operator 'total' changed shape \(kind 'update_state_by_key' -> 'reduce_by_key_and_window'"):
        _run(url, 1, reshaped=True)
    assert first + _run(url, 3) == _run(once, 6)  # restored from the inline graph's commit
    newest = _commits(url)[0]
    assert "graph" not in newest.data and _graph_files(url) == [graph_path(newest.data["graph_id"])]


# ------------------------------------------------------------------------ code changes


def test_a_code_change_is_refused_by_name_with_graph_less_commits(tmp_path: Path) -> None:
    url = str(tmp_path / "c")
    _run(url, 3)
    assert all("graph" not in r.data for r in _commits(url))
    with pytest.raises(IncompatibleCheckpointError) as err:
        _run(url, 1, reshaped=True)
    assert "stateful operator 'total' changed shape (kind 'update_state_by_key' -> 'reduce_by_key_and_window'" in str(err.value)
    assert "allow_state_loss={'total'}" in str(err.value)
    assert len(_graph_files(url)) == 1  # nothing of the refused code was written


def test_a_damaged_graph_file_with_changed_code_is_refused_naming_the_file(tmp_path: Path) -> None:
    url = str(tmp_path / "c")
    _run(url, 3)
    (rel,) = _graph_files(url)
    _flip(os.path.join(url, rel))
    with pytest.raises(CorruptCheckpointError, match=rf"names its graph description {rel}, which cannot be read: .*checksum"):
        _run(url, 1, extra=True)  # its graph has another id: the stored graph is needed to check the change


def test_a_graph_file_holding_another_graph_under_its_name_is_refused_before_a_code_change_is_checked(tmp_path: Path) -> None:
    """A sound file (checksum, kind, name) whose content is another graph: its id, the hash of its content, tells.

    Otherwise the changed code would be checked against the graph the file now holds (here the changed code's own),
    pass, and load the old operator's state into an operator of another shape.
    """
    url, other = str(tmp_path / "c"), str(tmp_path / "other")
    _run(url, 3)
    _run(other, 1, reshaped=True)
    (rel,) = _graph_files(url)
    (other_rel,) = _graph_files(other)
    f = read_frame(other_rel, (Path(other) / other_rel).read_bytes())
    (Path(url) / rel).write_bytes(frame("graph", f.codec, f.payload, rel, f.version))  # the reshaped code's graph, framed as its own
    with pytest.raises(CorruptCheckpointError, match=rf"names its graph description {rel}, which cannot be read: .*does not hash to its id"):
        _run(url, 1, reshaped=True)


@pytest.mark.parametrize("damage", ["missing", "damaged"])
def test_an_unreadable_graph_file_with_changed_code_says_how_to_fix_it_and_the_fix_works(tmp_path: Path, damage: str) -> None:
    """The refusal says what to do; doing it (one start with the code that wrote the checkpoint) lets the new code start."""
    url, once = str(tmp_path / "c"), str(tmp_path / "once")
    first = _run(url, 3)
    (rel,) = _graph_files(url)
    if damage == "missing":
        os.remove(os.path.join(url, rel))
    else:
        _flip(os.path.join(url, rel))
    with pytest.raises(CorruptCheckpointError) as err:
        _run(url, 1, extra=True)
    msg = str(err.value)
    assert f"names its graph description {rel}, which cannot be read" in msg, msg
    assert "start the job once with the code that wrote this checkpoint (that writes the file again" in msg, msg
    assert "then with the new code" in msg and "start the new code on a new checkpoint URL" in msg, msg
    rest = _run(url, 1)  # the code that wrote it: its graph is that file's content, so the start writes it again
    assert rel in _graph_files(url)
    assert main(["checkpoint", "verify", url]) == 0
    rest += _run(url, 1, extra=True)  # and now the changed code starts, checked against the graph file
    assert first + rest == _run(once, 5)


def test_a_damaged_graph_file_of_the_same_code_is_rewritten(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    url, once = str(tmp_path / "c"), str(tmp_path / "once")
    first = _run(url, 3)
    (rel,) = _graph_files(url)
    good = (Path(url) / rel).read_bytes()
    _flip(os.path.join(url, rel))
    # The code's graph hashes to the file's name: it is the stored graph, so the start goes on and writes it back.
    assert first + _run(url, 2) == _run(once, 5)
    assert (Path(url) / rel).read_bytes() == good
    assert "rewriting the damaged graph description" in caplog.text
    assert main(["checkpoint", "verify", url]) == 0


# ------------------------------------------------------------------------ retention, sweep, fallback


def test_retention_keeps_the_graph_an_older_kept_commit_needs(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    url = str(tmp_path / "c")
    _run(url, 3)
    (old,) = _graph_files(url)
    _run(url, 1, extra=True)  # a new graph; the fallback commit still names the old one
    commits = _commits(url)
    new = graph_path(commits[0].data["graph_id"])
    assert graph_path(commits[1].data["graph_id"]) == old != new
    assert _graph_files(url) == sorted([old, new])
    assert _cli(capsys, "checkpoint", "verify", url)[0] == 0
    _run(url, 1, extra=True)  # the old graph's last commit falls out: retention leaves graph files to the next start
    assert _graph_files(url) == sorted([old, new])
    assert _cli(capsys, "checkpoint", "verify", url)[0] == 0
    _run(url, 1, extra=True)  # whose sweep (after its claim) deletes the graph no kept commit names
    assert _graph_files(url) == [new]
    assert _cli(capsys, "checkpoint", "verify", url)[0] == 0


def test_graph_files_on_s3_are_kept_while_a_commit_names_them(s3_server: Any, s3_url: str, capsys: pytest.CaptureFixture[str]) -> None:
    opts = s3_server.storage_options
    cli_opts = [x for k, v in opts.items() for x in ("-o", f"{k}={json.dumps(v) if isinstance(v, dict) else v}")]
    first = _run(s3_url, 3, storage_options=opts)
    ckpt = Checkpoint(s3_url, storage_options=opts)
    (old,) = ckpt.storage.list("graphs")
    assert all("graph" not in r.data for r in ckpt.commits())
    with pytest.raises(IncompatibleCheckpointError, match="stateful operator 'total' changed shape"):
        _run(s3_url, 1, storage_options=opts, reshaped=True)
    rest = _run(s3_url, 1, storage_options=opts, extra=True)  # a new graph; the older kept commit names the old one
    assert first + rest == _run(s3_url + "-once", 4, storage_options=opts)
    assert sorted(ckpt.storage.list("graphs")) == sorted([old, f"{ckpt.commits()[0].data['graph_id']}.graph"])
    rc, out = _cli(capsys, "checkpoint", "verify", s3_url, *cli_opts)
    assert rc == 0, out
    rc, out = _cli(capsys, "checkpoint", "inspect", s3_url, "--json", *cli_opts)
    assert rc == 0 and json.loads(out)["operators"]["extra"]["kind"] == "update_state_by_key", out
    _run(s3_url, 1, storage_options=opts, extra=True)  # the old graph's last commit falls out; the next start's sweep
    _run(s3_url, 1, storage_options=opts, extra=True)  # deletes its file
    assert ckpt.storage.list("graphs") == [f"{ckpt.commits()[0].data['graph_id']}.graph"]


def test_a_fallback_after_corruption_finds_its_own_graph(tmp_path: Path) -> None:
    url, once = str(tmp_path / "c"), str(tmp_path / "once")
    first = _run(url, 3)
    _run(url, 1, extra=True)  # committed batch 4 with the new graph
    newest, fallback = _commits(url)
    assert graph_path(fallback.data["graph_id"]) in _graph_files(url) and fallback.data["graph_id"] != newest.data["graph_id"]
    _flip(os.path.join(url, log_path(newest.seq)))
    # Falls back to batch 3, whose graph (the old one) is kept: the change is checked against it and batch 4 is replayed.
    with pytest.warns(StreamkeepWarning, match="unreadable"):
        rest = _run(url, 2, extra=True)
    assert first + rest == _run(once, len(first + rest))
    assert [t for t, _ in rest][:2] == [START_MS + 4000, START_MS + 5000]


def test_a_missing_graph_file_of_the_newest_commit_falls_back_to_the_older_commits_graph(tmp_path: Path) -> None:
    url = str(tmp_path / "c")
    first = _run(url, 3)
    _run(url, 1, extra=True)
    newest = _commits(url)[0]
    os.remove(os.path.join(url, graph_path(newest.data["graph_id"])))
    with pytest.warns(StreamkeepWarning, match=r"the newest commit could not be loaded .*names its graph description .* is missing"):
        rest = _run(url, 1)  # the original code: checked against the fallback's graph (the old one), batch 4 replayed
    assert [t for t, _ in first + rest] == [START_MS + 1000 * i for i in range(1, 5)]
    assert first + rest == _run(str(tmp_path / "once"), 4)


def test_the_restart_sweep_deletes_a_graph_written_before_a_crash_and_no_kept_graph(tmp_path: Path) -> None:
    url = str(tmp_path / "c")
    _run(url, 3)
    (kept,) = _graph_files(url)
    stray = graph_path("0123456789abcdef")  # as a crash between writing a new graph and its first commit leaves it
    (Path(url) / stray).write_bytes(b"whatever")
    _run(url, 1)
    assert _graph_files(url) == [kept]


# ------------------------------------------------------------------------ the checkpoint commands


_APP = """
import streamkeep as sk
from streamkeep.testing import ManualClock
ssc = sk.StreamingContext(1.0, checkpoint={url!r}, clock=ManualClock({start}))
pairs = ssc.rate_stream(6, name="rate").map(lambda r: (r[0] % 3, 1))
{body}
ssc.start()
"""


def _app(tmp_path: Path, url: str, body: str) -> str:
    path = tmp_path / "app.py"
    path.write_text(_APP.format(url=url, start=START_MS, body=textwrap.dedent(body)))
    return str(path)


def test_inspect_verify_and_diff_read_the_graph_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    url = str(tmp_path / "c")
    _run(url, 3)
    (rel,) = _graph_files(url)
    rc, out = _cli(capsys, "checkpoint", "inspect", url, "--json")
    assert rc == 0
    info = json.loads(out)
    assert info["sources"] == {"rate": Checkpoint(url).graph_of(_commits(url)[0])["sources"]["rate"]}
    assert info["operators"]["total"]["kind"] == "update_state_by_key" and info["operators"]["total"]["keys"] == 3
    assert info["last_commit"]["graph_file"] == rel
    rc, out = _cli(capsys, "checkpoint", "verify", url)
    assert rc == 0 and "OK" in out, out
    same = _app(tmp_path, url, 'pairs.update_state_by_key(lambda n, o: (o or 0) + sum(n), name="total").foreach_batch(lambda b: None)')
    rc, out = _cli(capsys, "checkpoint", "diff", url, same)
    assert rc == 0 and "restores (state carried over):\n    total (update_state_by_key)" in out and "rate (rate) at" in out, out
    changed = _app(tmp_path, url, 'pairs.reduce_by_key_and_window(lambda a, b: a + b, 2.0, name="total").foreach_batch(lambda b: None)')
    rc, out = _cli(capsys, "checkpoint", "diff", url, changed)
    assert rc == 1 and "total: kind 'update_state_by_key' -> 'reduce_by_key_and_window'" in out, out


def test_the_commands_name_a_missing_or_damaged_graph_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    url = str(tmp_path / "c")
    _run(url, 3)
    (rel,) = _graph_files(url)
    path = os.path.join(url, rel)
    good = Path(path).read_bytes()
    _flip(path)
    rc, out = _cli(capsys, "checkpoint", "verify", url)
    assert rc == 1 and f"{rel}: checkpoint file" in out and "checksum" in out, out
    assert "no retained commit is intact" in out, out
    os.remove(path)
    rc, out = _cli(capsys, "checkpoint", "verify", url)
    assert rc == 1 and f"needs {rel}, which is missing" in out, out
    rc, out = _cli(capsys, "checkpoint", "inspect", url)
    assert rc == 0 and f"graph description: {log_path(_commits(url)[0].seq)}" in out and "is missing" in out, out
    app = _app(tmp_path, url, 'pairs.update_state_by_key(lambda n, o: (o or 0) + sum(n), name="total").foreach_batch(lambda b: None)')
    rc, out = _cli(capsys, "checkpoint", "diff", url, app)
    assert rc != 0 and f"names its graph description {rel}" in out, out
    Path(path).write_bytes(good)
    other = graph_path("0123456789abcdef")
    Path(url, other).write_bytes(good)  # a sound file under another graph's name
    rc, out = _cli(capsys, "checkpoint", "verify", url)
    assert rc == 1 and f"{other}: checkpoint file" in out and "written as" in out, out


def test_the_demos_check_reads_the_graph_file(tmp_path: Path) -> None:
    url = str(tmp_path / "demo")
    outputs: list[Any] = []

    def setup() -> sk.StreamingContext:
        ssc = sk.StreamingContext(1.0, checkpoint=url, clock=ManualClock(START_MS))
        ssc.rate_stream(2, name=_SOURCE).map(lambda r: (r[0] % 2, 1)).update_state_by_key(
            lambda n, o: (o or 0) + sum(n), name=_OPERATOR
        ).foreach_batch(outputs.append)
        return ssc

    ssc = sk.StreamingContext.get_or_create(url, setup)
    ssc.run(max_batches=2)
    ssc.stop()
    assert "graph" not in _commits(url)[0].data
    assert _not_the_demos(url) is None  # recognised as the demo's by the graph its commits name
    os.remove(os.path.join(url, _graph_files(url)[0]))
    assert "its graph description cannot be read" in (_not_the_demos(url) or "")


def test_a_record_naming_a_graph_outside_graphs_is_corrupt(tmp_path: Path) -> None:
    url = str(tmp_path / "c")
    _run(url, 3)
    rec = _commits(url)[0]
    rel = log_path(rec.seq)
    data = {**rec.data, "graph_id": "../../etc/passwd"}
    f = read_frame(rel, (Path(url) / rel).read_bytes(), "record", rel)
    (Path(url) / rel).write_bytes(frame("record", "msgpack", get_codec("msgpack").encode(data), rel, f.version))
    assert rec.seq not in [r.seq for r in _commits(url)]  # unreadable: recovery falls back, verify reports it
