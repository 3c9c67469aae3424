"""Integrity of what a checkpoint holds: lost commits, short writes, confined paths, file identity.

Each test damages a checkpoint the way a person or a broken tool could (deleting the
newest commit, copying a valid file under another name, editing a path into a record)
and checks the outcome: exactly the result of an undamaged run, or a loud
`CorruptCheckpointError` -- never a silently different result.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
from pathlib import Path
from typing import Any

import pytest
from _ckpt_jobs import rate_job, run_until, totals_after

import streamkeep as sk
from streamkeep.checkpoint import Checkpoint, CheckpointStorage, _checkpoint, log_path, plan_log_path, plan_path
from streamkeep.cli import main
from streamkeep.errors import CheckpointError, CorruptCheckpointError, StreamkeepWarning
from streamkeep.testing import ListSink, ManualClock


def _finish(url: str, total: int = 8, **kw: Any) -> ListSink:
    sink = ListSink()
    run_until(url, rate_job(url, sink, **kw), total)
    return sink


def _log_files(url: str) -> list[Path]:
    return sorted(Path(url, "log").iterdir())


def _commit_files(url: str) -> list[Path]:
    ck = Checkpoint(url)
    return [Path(url, log_path(r.seq)) for r in sorted(ck.commits(), key=lambda r: r.seq)]


def _verify(capsys: pytest.CaptureFixture[str], url: str) -> tuple[int, str]:
    rc = main(["checkpoint", "verify", url])
    return rc, capsys.readouterr().out


# ------------------------------------------------------------------ 10.2: lost commit records


@pytest.mark.parametrize("keep_commits", [1, 2])
def test_deleting_the_newest_commit_right_after_a_restart_falls_back_exactly(tmp_path: Path, keep_commits: int) -> None:
    url = str(tmp_path / "ckpt")
    run_until(url, rate_job(url, ListSink(), keep_commits=keep_commits), 5)
    run_until(url, rate_job(url, ListSink(), keep_commits=keep_commits), 5)  # a restart that runs nothing (recovery sweeps)
    _commit_files(url)[-1].unlink()
    sink = _finish(url, keep_commits=keep_commits)
    assert [t for t, _ in sink.batches] == [5000, 6000, 7000, 8000]  # batch 5 replayed from its plan
    assert sorted(sink.batches[-1][1]) == totals_after(8)


@pytest.mark.parametrize("damage", ["commit record", "snapshot"])
def test_the_restart_sweep_keeps_the_fallback_commits_older_snapshot_and_deltas(tmp_path: Path, damage: str) -> None:
    # Batch 6 takes a new snapshot: its fallback (batch 5) needs the files batch 6 no longer names
    # (snapshot of batch 3, deltas 4 and 5). The sweep of a restart must leave them.
    url = str(tmp_path / "ckpt")
    run_until(url, rate_job(url, ListSink(), snapshot_every=3, keep_commits=2), 6)
    newest, fallback = Checkpoint(url).commits()[:2]
    assert newest.data["state"]["totals"]["snapshot_time"] == 6000 and fallback.data["state"]["totals"]["snapshot_time"] == 3000
    run_until(url, rate_job(url, ListSink(), snapshot_every=3, keep_commits=2), 6)  # a restart that runs nothing (recovery sweeps)
    missing = sorted(f for f in fallback.files() if not Path(url, f).exists())
    assert not missing, f"the restart's sweep deleted what the fallback commit of batch 5000 ms needs: {missing}"
    if damage == "commit record":
        _commit_files(url)[-1].unlink()
    else:
        snap = Path(url, newest.data["state"]["totals"]["snapshot"])
        snap.write_bytes(snap.read_bytes()[:-3] + b"xyz")
    with pytest.warns(StreamkeepWarning, match="recovered from the older commit|recovered from the newest readable commit") if damage == "snapshot" else contextlib.nullcontext():
        sink = _finish(url, snapshot_every=3, keep_commits=2)
    assert [t for t, _ in sink.batches] == [6000, 7000, 8000]  # batch 6 replayed from its plan
    assert sorted(sink.batches[-1][1]) == totals_after(8)


@pytest.mark.parametrize("what", ["commit records", "whole log"])
def test_a_checkpoint_that_lost_every_commit_is_refused_not_restarted(tmp_path: Path, capsys: pytest.CaptureFixture[str], what: str) -> None:
    url = str(tmp_path / "ckpt")
    run_until(url, rate_job(url, ListSink()), 5)
    if what == "whole log":
        shutil.rmtree(Path(url, "log"))
    else:
        for f in _commit_files(url):
            f.unlink()
    rc, out = _verify(capsys, url)
    assert rc == 1 and "once held commits" in out, out
    with pytest.raises(CorruptCheckpointError, match=r"holds no commit record, but it once did.*new checkpoint URL") as info:
        _finish(url)
    assert str(url) in str(info.value)


def test_a_checkpoint_that_never_committed_still_starts_from_its_plans(tmp_path: Path) -> None:
    # The signs of lost commits must not fire on a job that crashed before its first commit.
    url = str(tmp_path / "ckpt")
    ck = Checkpoint(url)
    ck.claim("test", "0")
    ck.write_plan(1000, {"batch_time": 1000, "sources": {"rate": {"from": 0, "until": 6, "t0": 0}}, "positions": {"rate": {"next": 6, "t0": 0}}})
    ck.release()
    again = Checkpoint(url)  # a second driver that stopped before its first commit
    again.claim("test", "0")
    again.release()
    assert [(r.seq, r.data["epoch"]) for r in Checkpoint(url).records(newest_first=False)] == [(1, 1), (2, 2)]
    assert Checkpoint(url).lost_history() == []
    sink = _finish(url, 3)
    assert [t for t, _ in sink.batches] == [1000, 2000, 3000]
    assert sorted(sink.batches[-1][1]) == totals_after(3)


@pytest.mark.parametrize("plan_logs", [True, False])
def test_plans_later_than_the_jobs_first_batch_are_a_sign_of_lost_commits(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, plan_logs: bool) -> None:
    # A short job's plans may name no commit (pipelined commits); once retention removed the plan of its first
    # batch and the log and lease are gone, the plans' first_ms still tell. Plans from the first batch on do not.
    monkeypatch.setattr(_checkpoint, "PLAN_LOGS", plan_logs)

    def planned(name: str, times: tuple[int, ...]) -> list[str]:
        url = str(tmp_path / name)
        ck = Checkpoint(url)
        ck.claim("test", "0")
        for t in times:
            ck.write_plan(t, {"batch_time": t, "sources": {}, "positions": {}, "first_ms": 1000})
        ck.release()
        Path(url, "lease").unlink()
        shutil.rmtree(Path(url, "log"))
        return Checkpoint(url).lost_history()

    assert planned("whole", (1000, 2000, 3000)) == []  # every plan from the first batch on: a crash before the first commit
    signs = planned("later", (3000, 4000))
    assert any("the earliest plan is of batch 3000 ms, but the job's first batch was 1000 ms" in s for s in signs), signs


# ------------------------------------------------------------------ 10.3: short writes


def test_short_os_writes_still_write_whole_files(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    real = os.write
    calls = []

    def short(fd: int, data: Any) -> int:  # as Linux does past ~2 GiB: writes less than asked
        calls.append(len(data))
        return real(fd, bytes(memoryview(data)[:7]))

    monkeypatch.setattr(os, "write", short)
    st = CheckpointStorage(str(tmp_path / "s"))
    payload = bytes(range(256)) * 10
    assert st.create("state/op/000000000001000.snap", payload)
    st.write("lease", payload)
    assert len(calls) > 2 * len(payload) // 7 - 4
    monkeypatch.undo()
    assert st.read("state/op/000000000001000.snap") == payload
    assert st.read("lease") == payload


def test_a_write_that_loses_bytes_fails_before_the_file_appears(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    real = os.write

    def lying(fd: int, data: Any) -> int:  # claims everything, writes half: only the size check can tell
        real(fd, bytes(memoryview(data)[: max(1, len(data) // 2)]))
        return len(data)

    monkeypatch.setattr(os, "write", lying)
    st = CheckpointStorage(str(tmp_path / "s"))
    with pytest.raises(CheckpointError, match=r"wrote \d+ bytes of 2560"):
        st.create("state/op/000000000001000.snap", bytes(2560))
    monkeypatch.undo()
    assert not st.exists("state/op/000000000001000.snap")
    assert os.listdir(tmp_path / "s" / "state" / "op") == []  # no temp file left either


def test_a_job_whose_writes_are_short_recovers_exactly(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    real = os.write
    monkeypatch.setattr(os, "write", lambda fd, data: real(fd, bytes(memoryview(data)[:100])))
    url = str(tmp_path / "ckpt")
    run_until(url, rate_job(url, ListSink(), snapshot_every=2, rows_per_second=600, keys=300), 5)
    sink = ListSink()
    run_until(url, rate_job(url, sink, snapshot_every=2, rows_per_second=600, keys=300), 7)
    assert sorted(sink.batches[-1][1]) == totals_after(7, rows_per_second=600, keys=300)


# ------------------------------------------------------------------ 10.10: confined paths


def _rewrite_newest_commit(url: str, change: Any) -> Path:
    ck = Checkpoint(url)
    rec = ck.commits()[0]
    data = dict(rec.data)
    change(data)
    Path(url, log_path(rec.seq)).write_bytes(ck.encode("record", data, rel=log_path(rec.seq)))
    return Path(url, log_path(rec.seq))


@pytest.mark.parametrize("kind", ["snap", "delta"])
def test_a_commit_naming_another_jobs_state_neither_loads_nor_deletes_it(tmp_path: Path, kind: str) -> None:
    other = str(tmp_path / "other")
    run_until(other, rate_job(other, ListSink(), snapshot_every=2 if kind == "snap" else 100, keys=5), 6)  # another job, different state
    victim = sorted(Path(other, "state", "totals").glob(f"*.{kind}"))[-1]
    victim_bytes = victim.read_bytes()
    url = str(tmp_path / "ckpt")
    run_until(url, rate_job(url, ListSink()), 5)

    def point_at_other(data: dict[str, Any]) -> None:
        t = int(victim.name.split(".")[0])
        rel = f"../other/state/totals/{victim.name}"
        chain = {"snapshot": rel, "snapshot_time": t, "deltas": []} if kind == "snap" else {"snapshot": None, "snapshot_time": 0, "deltas": [rel]}
        data["state"] = {**data["state"], "totals": chain}

    _rewrite_newest_commit(url, point_at_other)
    with pytest.warns(StreamkeepWarning, match=r"not one of its own|not its own"):
        sink = _finish(url, 12)  # past retention of the altered commit
    assert sorted(sink.batches[-1][1]) == totals_after(12)
    assert victim.read_bytes() == victim_bytes  # never deleted by this job's retention


def test_a_commit_naming_another_operators_delta_falls_back_and_stays_exact(tmp_path: Path) -> None:
    # Inside the checkpoint, and the file's own identity matches its place: only the chain check sees that
    # the delta is the window's, not the totals'.
    url = str(tmp_path / "ckpt")
    run_until(url, rate_job(url, ListSink()), 5)

    def point_at_win(data: dict[str, Any]) -> None:
        data["state"]["totals"] = {**data["state"]["totals"], "deltas": [d.replace("state/totals/", "state/win/") for d in data["state"]["totals"]["deltas"]]}

    _rewrite_newest_commit(url, point_at_win)
    with pytest.warns(StreamkeepWarning, match=r"not one of its own"):
        sink = _finish(url, 8)
    assert sorted(sink.batches[-1][1]) == totals_after(8)


@pytest.mark.parametrize("path", ["absolute", "dotdot"])
def test_inspect_never_stats_a_path_outside_the_checkpoint(tmp_path: Path, capsys: pytest.CaptureFixture[str], path: str) -> None:
    url = str(tmp_path / "ckpt")
    run_until(url, rate_job(url, ListSink()), 3)
    secret = tmp_path / "secret"
    secret.write_bytes(b"x" * 12345)
    name = str(secret) if path == "absolute" else "../secret"
    _rewrite_newest_commit(url, lambda d: d["state"]["totals"].update(snapshot=name, snapshot_time=0))
    assert main(["checkpoint", "inspect", url, "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    op = info["operators"]["totals"]
    assert "12345" not in json.dumps(op) and "not its own" in op["error"]
    rc, out = _verify(capsys, url)
    assert rc == 1 and "not its own" in out


def _text_job(url: str, inp: Path, sink: ListSink) -> Any:
    def setup() -> sk.StreamingContext:
        ssc = sk.StreamingContext(1.0, checkpoint=url, clock=ManualClock())
        ssc.text_file_stream(str(inp), name="files").write_to(sink)
        return ssc

    return setup


@pytest.mark.parametrize("name", ["../secret.txt", "ABSOLUTE"])
def test_a_pending_file_plan_naming_a_file_outside_the_directory_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str], name: str) -> None:
    inp = tmp_path / "in"
    inp.mkdir()
    (inp / "a.txt").write_text("a\n")
    secret = tmp_path / "secret.txt"
    secret.write_text("the secret\n")
    name = str(secret) if name == "ABSOLUTE" else name
    url = str(tmp_path / "ckpt")
    run_until(url, _text_job(url, inp, ListSink()), 2)
    ck = Checkpoint(url)
    ck.storage.write(plan_path(3000), ck.encode("plan", {"batch_time": 3000, "sources": {"files": {"files": [[name, 11]]}}, "positions": {"files": {"seen": ["a.txt"]}}}, rel=plan_path(3000)))
    rc, out = _verify(capsys, url)
    assert rc == 1 and "not a file inside its directory" in out, out
    sink = ListSink()
    with pytest.raises(CorruptCheckpointError, match=r"plan of batch 3000 ms.*text_file_stream 'files' is corrupt"):
        run_until(url, _text_job(url, inp, sink), 4)
    assert not any("the secret" in r for _, recs in sink.batches for r in recs)


def test_operator_names_never_leave_the_state_directory(tmp_path: Path) -> None:
    from streamkeep.checkpoint import state_dir

    assert state_dir("..") == "state/%2E%2E" and state_dir(".") == "state/%2E"
    assert state_dir("../x") == "state/..%2Fx"
    with pytest.raises(CorruptCheckpointError, match="not inside the checkpoint"):
        CheckpointStorage(str(tmp_path)).read("../etc/passwd")


# ------------------------------------------------------------------ 10.11: files under the wrong name


def test_a_plan_copied_under_another_batch_time_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_checkpoint, "PLAN_LOGS", False)  # a file per plan, as on S3
    url = str(tmp_path / "ckpt")
    run_until(url, rate_job(url, ListSink()), 5)
    shutil.copy(Path(url, plan_path(5000)), Path(url, plan_path(6000)))  # looks like a pending batch 6
    rc, out = _verify(capsys, url)
    assert rc == 1 and "written as 'plans/000000000005000.plan', not 'plans/000000000006000.plan'" in out, out
    with pytest.raises(CorruptCheckpointError, match=r"000000000006000\.plan.*written as"):
        _finish(url)


def test_a_plan_whose_content_names_another_batch_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A frame that names its place (or a format-1 file, whose frame names none) is not enough: the plan's own
    batch time must be the one of its place, or the batch would replay another batch's input."""
    monkeypatch.setattr(_checkpoint, "PLAN_LOGS", False)  # a file per plan, as on S3
    url = str(tmp_path / "ckpt")
    run_until(url, rate_job(url, ListSink()), 5)
    ck = Checkpoint(url)
    plan = ck.read_plan(5000)
    ck.storage.write(plan_path(6000), ck.encode("plan", plan, rel=plan_path(6000)))  # batch 5's plan, framed for 6
    with pytest.raises(CorruptCheckpointError, match=r"000000000006000\.plan holds the plan of batch 5000 ms, not of batch 6000 ms"):
        _finish(url)


def test_a_plan_log_copied_under_another_batch_time_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    url = str(tmp_path / "ckpt")
    run_until(url, rate_job(url, ListSink()), 5)
    shutil.copy(Path(url, plan_log_path(1000)), Path(url, plan_log_path(6000)))  # looks like pending batches 6 to 10
    rc, out = _verify(capsys, url)
    assert rc == 1 and "written as 'plans/000000000001000.plog', not 'plans/000000000006000.plog'" in out, out
    with pytest.raises(CorruptCheckpointError, match=r"000000000006000\.plog.*written as"):
        _finish(url)


def test_a_plan_log_whose_last_append_was_torn_skips_it(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A crash in the middle of an append leaves a partial plan at the end of the plan log: never durable, so its
    batch produced nothing; recovery skips it (and re-plans that batch), verify notes it."""
    url = str(tmp_path / "ckpt")
    run_until(url, rate_job(url, ListSink()), 5)
    ck = Checkpoint(url)
    assert ck.plan_times() == [1000, 2000, 3000, 4000, 5000]
    log = Path(url, plan_log_path(1000))
    whole = log.read_bytes()
    with log.open("ab") as f:
        f.write(whole[: len(whole) // 8])  # the first part of another frame
    assert Checkpoint(url).plan_times() == [1000, 2000, 3000, 4000, 5000]
    assert Checkpoint(url).read_plan_log(plan_log_path(1000))[1] == len(whole) // 8
    rc, out = _verify(capsys, url)
    assert rc == 0 and "interrupted" in out, out
    sink = _finish(url, 8)
    assert [t for t, _ in sink.batches] == [6000, 7000, 8000]
    assert sorted(sink.batches[-1][1]) == totals_after(8)


@pytest.mark.parametrize("where", ["middle", "last"])
def test_a_plan_log_damaged_other_than_by_a_torn_append_is_corrupt(tmp_path: Path, where: str) -> None:
    """A flipped byte inside a whole plan (in the middle of the log, sound plans after it; or the last plan, whole
    but failing its checksum) is damage, not a torn append: skipping it would hide durable plans whose batches may
    have written outputs (their replay would then read other input)."""
    url = str(tmp_path / "ckpt")
    run_until(url, rate_job(url, ListSink()), 5)
    log = Path(url, plan_log_path(1000))
    data = bytearray(log.read_bytes())
    starts = [i for i in range(len(data)) if data[i : i + 4] == b"SKCP"]
    assert len(starts) == 5, starts
    at = (starts[2] + starts[3]) // 2 if where == "middle" else (starts[4] + len(data)) // 2
    data[at] ^= 0x40
    log.write_bytes(bytes(data))
    with pytest.raises(CorruptCheckpointError, match=r"000000000001000\.plog.*not what a crash in the middle of an append leaves"):
        Checkpoint(url).plan_times()


def _damage_first_frame(url: str, first_time: int) -> None:
    log = Path(url, plan_log_path(first_time))
    data = bytearray(log.read_bytes())
    starts = [i for i in range(len(data)) if data[i : i + 4] == b"SKCP"]
    data[(starts[0] + starts[1]) // 2 if len(starts) > 1 else len(data) // 2] ^= 0x40  # inside the first plan
    log.write_bytes(bytes(data))


def test_a_plan_log_with_a_damaged_first_frame_whose_plans_are_all_committed_is_not_needed(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A plan log whose first frame is damaged cannot be read at all; when every batch it can hold (from its name's
    time up to the next plan log's) is committed, recovery does without it, verify reports it, retention deletes it."""
    url = str(tmp_path / "ckpt")
    run_until(url, rate_job(url, ListSink()), 3)  # driver 1: plans/...1000.plog holds batches 1 to 3
    run_until(url, rate_job(url, ListSink()), 4)  # driver 2: plans/...4000.plog; three commits kept, so log 1000 stays
    assert sorted(p.name for p in Path(url, "plans").iterdir()) == [Path(plan_log_path(1000)).name, Path(plan_log_path(4000)).name]
    _damage_first_frame(url, 1000)
    assert Checkpoint(url).plan_times() == [4000]
    rc, out = _verify(capsys, url)
    assert rc == 1 and f"{plan_log_path(1000)} is damaged, but every batch it can hold (before 4000 ms) is committed" in out, out
    assert "the newest commit (batch 4000 ms) and everything it needs are intact" in out, out
    sink = _finish(url, 8)
    assert [t for t, _ in sink.batches] == [5000, 6000, 7000, 8000]
    assert sorted(sink.batches[-1][1]) == totals_after(8)
    assert not Path(url, plan_log_path(1000)).exists()  # retention deleted it
    rc, out = _verify(capsys, url)
    assert rc == 0, out


def test_a_plan_log_with_a_damaged_first_frame_that_may_hold_pending_plans_is_corrupt(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The newest plan log (nothing after it bounds what it holds), or one whose batches reach past the newest commit,
    may hold plans of batches not committed: recovery cannot do without them."""
    url = str(tmp_path / "ckpt")
    run_until(url, rate_job(url, ListSink()), 3)
    run_until(url, rate_job(url, ListSink()), 4)
    _damage_first_frame(url, 4000)
    with pytest.raises(CorruptCheckpointError, match=r"000000000004000\.plog.*recovery may need them: no later plan file"):
        _finish(url)
    rc, out = _verify(capsys, url)
    assert rc == 1 and "000000000004000.plog" in out, out
    # the older log, when the newest commit record is gone (the newest readable one is of batch 3, before log 4000)
    url2 = str(tmp_path / "ckpt2")
    run_until(url2, rate_job(url2, ListSink()), 3)
    run_until(url2, rate_job(url2, ListSink()), 4)
    _damage_first_frame(url2, 1000)
    _commit_files(url2)[-1].unlink()
    with pytest.raises(CorruptCheckpointError, match=r"000000000001000\.plog.*up to 4000 ms, and the newest commit is of batch 3000 ms"):
        _finish(url2)


def test_a_fallback_to_a_commit_before_a_damaged_plan_log_is_refused_not_replayed_with_a_gap(tmp_path: Path) -> None:
    """The damaged log 1000 is left out while the newest commit (4000) covers it; but when commits 3000 and 4000 are
    unusable (their delta of batch 3000 is damaged), recovery falls back to batch 2000 and would need the log's plan
    of batch 3000: refused, never replayed without it (batch 3000's input would be lost)."""
    url = str(tmp_path / "ckpt")
    run_until(url, rate_job(url, ListSink()), 3)
    run_until(url, rate_job(url, ListSink()), 4)
    _damage_first_frame(url, 1000)
    delta = Path(url, "state", "totals", "000000000003000.delta")
    data = bytearray(delta.read_bytes())
    data[-1] ^= 0x40
    delta.write_bytes(bytes(data))
    with (
        pytest.warns(StreamkeepWarning, match="recovered from the older commit of batch 2000 ms"),
        pytest.raises(CorruptCheckpointError, match=r"falls back to the commit of batch 2000 ms.*000000000001000\.plog"),
    ):
        _finish(url)


def test_a_plan_log_renamed_to_an_older_batch_time_is_still_refused(tmp_path: Path) -> None:
    """Only damage is left out: a sound first frame naming another file is a misplaced log, refused as before."""
    url = str(tmp_path / "ckpt")
    run_until(url, rate_job(url, ListSink()), 3)
    run_until(url, rate_job(url, ListSink()), 4)
    Path(url, plan_log_path(4000)).rename(Path(url, plan_log_path(500)))
    with pytest.raises(CorruptCheckpointError, match=r"000000000000500\.plog.*written as"):
        Checkpoint(url).plan_times()


def test_a_plan_log_with_a_plan_out_of_order_is_refused(tmp_path: Path) -> None:
    url = str(tmp_path / "ckpt")
    ck = Checkpoint(url)
    ck.claim("test", "0")
    try:
        plan = {"sources": {}, "positions": {}}
        ck.write_plan(1000, {**plan, "batch_time": 1000})
        ck.write_plan(2000, {**plan, "batch_time": 2000})
        ck.write_plan(1500, {**plan, "batch_time": 1500})  # not after the plan before it
    finally:
        ck.release()
    with pytest.raises(CorruptCheckpointError, match=r"000000000001000\.plog: plan 3 holds the plan of batch 1500 ms, not of a batch after 2000 ms"):
        Checkpoint(url).plan_times()


def test_an_older_snapshot_copied_over_a_newer_one_is_never_loaded(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    url = str(tmp_path / "ckpt")
    run_until(url, rate_job(url, ListSink(), snapshot_every=2), 9)
    snaps = sorted(Path(url, "state", "totals").glob("*.snap"))
    assert len(snaps) >= 2, snaps
    needed = {Path(url, f) for c in Checkpoint(url).commits() for f in c.files()}
    newer = max(s for s in snaps if s in needed)
    # Another valid snapshot of the operator: an older one (or, when the background thread adopted the
    # newest late, the one written after it): either is a valid file under the wrong name.
    older = max((s for s in snaps if s < newer), default=None) or min(s for s in snaps if s != newer)
    shutil.copy(older, newer)
    rc, out = _verify(capsys, url)
    assert rc == 1 and f"written as 'state/totals/{older.name}'" in out, out
    try:
        with pytest.warns(StreamkeepWarning, match="written as"):
            sink = _finish(url, 11, snapshot_every=2)
    except CorruptCheckpointError as exc:  # refused loudly when no retained commit avoids the file
        assert "written as" in str(exc)
    else:
        assert sorted(sink.batches[-1][1]) == totals_after(11)


def test_a_record_copied_under_a_newer_sequence_number_is_refused(tmp_path: Path) -> None:
    url = str(tmp_path / "ckpt")
    run_until(url, rate_job(url, ListSink()), 5)
    first, newest = _commit_files(url)[0], _commit_files(url)[-1]
    shutil.copy(first, newest)
    with pytest.warns(StreamkeepWarning, match=rf"{newest.name} is unreadable.*written as"):
        sink = _finish(url)
    assert sorted(sink.batches[-1][1]) == totals_after(8)


# ------------------------------------------------------------------ 10.16: clear errors


def test_state_nested_past_the_codec_depth_limit_says_so(tmp_path: Path) -> None:
    def deep(values: list[int], old: Any) -> Any:
        v: Any = 0
        for _ in range(70):
            v = (v,)
        return v

    url = str(tmp_path / "ckpt")

    def setup() -> sk.StreamingContext:
        ssc = sk.StreamingContext(1.0, checkpoint=url, clock=ManualClock())
        ssc.rate_stream(2, name="rate").map(lambda r: (r[0] % 2, 1)).update_state_by_key(deep, name="s").foreach_batch(lambda b: None)
        return ssc

    with pytest.raises(CheckpointError, match=r"operator 's'.*more than 64 levels deep.*Flatten it"):
        run_until(url, setup, 1)
