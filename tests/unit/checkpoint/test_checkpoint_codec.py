"""State codecs in checkpoints: unsupported values fail early and clearly; pickle only by opt-in."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from _ckpt_jobs import run_until

import streamkeep as sk
from streamkeep.checkpoint import unframe
from streamkeep.errors import CheckpointError
from streamkeep.testing import ListSink, ManualClock


class Point:
    """A user class: not plain data, so msgpack refuses it; pickle stores it."""

    def __init__(self, n: int) -> None:
        self.n = n

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Point) and other.n == self.n

    def __hash__(self) -> int:
        return hash(self.n)

    def __repr__(self) -> str:
        return f"Point({self.n})"


UNPICKLED: list[Any] = []


def _record_unpickle(n: int) -> Point:
    UNPICKLED.append(n)
    return Point(n)


class Tripwire(Point):
    """Unpickling one runs `_record_unpickle`: proof of whether the checkpoint was unpickled."""

    def __reduce__(self) -> tuple[Any, ...]:
        return (_record_unpickle, (self.n,))


def _bump(cls: type[Point]) -> Callable[[list[int], Any], Any]:
    def update(new: list[int], old: Any) -> Any:
        return cls((old.n if old is not None else 0) + sum(new))

    return update


def job(
    url: str, sink: ListSink, *, cls: type[Point] = Point, codec: str | None = None, ctx_codec: str = "msgpack"
) -> Callable[[], sk.StreamingContext]:
    def setup() -> sk.StreamingContext:
        ssc = sk.StreamingContext(1.0, checkpoint=url, clock=ManualClock(), codec=ctx_codec)
        pairs = ssc.rate_stream(4, name="rate").map(lambda r: (("k", r[0] % 2), 1))
        pairs.update_state_by_key(_bump(cls), name="points", codec=codec).write_to(sink)
        return ssc

    return setup


def test_unsupported_state_value_fails_at_the_first_checkpoint(tmp_path: Path) -> None:
    url = str(tmp_path / "c")
    sink = ListSink()
    with pytest.raises(CheckpointError) as info:
        run_until(url, job(url, sink), 3)
    msg = str(info.value)
    assert "'points'" in msg  # the operator
    assert "Point" in msg  # the type
    assert "('k', 0)" in msg or "('k', 1)" in msg  # the key
    assert "codec='pickle'" in msg  # how to fix it
    assert [t for t, _ in sink.batches] == [1000]  # it failed at the first batch's commit, not later
    assert not list(Path(url, "log").glob("*.rec"))[1:]  # only the claim: nothing was committed


@pytest.mark.parametrize("where", ["operator", "context"])
def test_pickle_opt_in_checkpoints_and_restores(tmp_path: Path, where: str) -> None:
    url = str(tmp_path / "c")
    kw: dict[str, Any] = {"codec": "pickle"} if where == "operator" else {"ctx_codec": "pickle"}
    run_until(url, job(url, ListSink(), **kw), 3)
    sink = ListSink()
    ssc = run_until(url, job(url, sink, **kw), 4)
    assert ssc.restored
    assert sorted(sink.batches[-1][1]) == [(("k", 0), Point(8)), (("k", 1), Point(8))]


def test_pickle_written_checkpoint_is_not_unpickled_without_opt_in(tmp_path: Path) -> None:
    url = str(tmp_path / "c")
    run_until(url, job(url, ListSink(), cls=Tripwire, codec="pickle"), 3)
    state_dir = Path(url, "state", "points")  # small deltas ride inline in the commit records
    holders = [*(state_dir.iterdir() if state_dir.exists() else ()), *Path(url, "log").iterdir()]
    assert any(b"_record_unpickle" in f.read_bytes() for f in holders)
    UNPICKLED.clear()
    with pytest.raises(CheckpointError, match=r"pickle codec.*codec='pickle'") as info:
        run_until(url, job(url, ListSink(), cls=Tripwire, codec=None), 4)
    assert "would execute code" in str(info.value) or "written with the pickle codec" in str(info.value)
    assert UNPICKLED == []  # nothing from the checkpoint was unpickled
    run_until(url, job(url, ListSink(), cls=Tripwire, codec="pickle"), 4)  # opting in restores it
    assert UNPICKLED


def test_plans_and_records_never_use_pickle(tmp_path: Path) -> None:
    url = str(tmp_path / "c")
    run_until(url, job(url, ListSink(), codec="pickle"), 2)
    for rel in (
        "CHECKPOINT",
        *(f"log/{p.name}" for p in Path(url, "log").iterdir()),
        *(f"plans/{p.name}" for p in Path(url, "plans").iterdir()),
    ):
        head = Path(url, rel).read_bytes()[:40]
        assert b"msgpack" in head and b"pickle" not in head, rel
    state_dir = Path(url, "state", "points")
    for f in state_dir.iterdir() if state_dir.exists() else ():
        assert unframe(str(f), f.read_bytes())[0] == "pickle"
