"""get_or_create and the context setup() builds may spell the same checkpoint directory differently."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

import streamkeep as sk
from streamkeep.errors import ConfigError
from streamkeep.testing import ListSink, ManualClock


def _setup(url: str | Path, sink: ListSink):
    def setup() -> sk.StreamingContext:
        ssc = sk.StreamingContext(1.0, checkpoint=url, clock=ManualClock())
        ssc.rate_stream(2, name="rate").map(lambda r: ("n", 1)).update_state_by_key(lambda new, old: (old or 0) + sum(new), name="n").write_to(sink)
        return ssc

    return setup


@pytest.mark.parametrize(("in_setup", "given"), [("ckpt/", "ckpt"), ("./ckpt", "ckpt"), ("ABS", "ckpt/"), ("PATH", "ckpt/"), ("alias", "ckpt")])
def test_one_directory_spelt_two_ways_is_one_checkpoint(in_setup: str, given: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """`StreamingContext(checkpoint="ckpt/")` in setup and `get_or_create("ckpt", setup)` was a ConfigError."""
    monkeypatch.chdir(tmp_path)
    os.mkdir("ckpt")
    os.symlink("ckpt", "alias")  # a symlink to the directory is the directory
    url: str | Path = {"ABS": os.path.abspath("ckpt"), "PATH": Path("ckpt")}.get(in_setup, in_setup)
    for run in range(2):
        sink = ListSink()
        ssc = sk.StreamingContext.get_or_create(given, _setup(url, sink))
        ssc.run(max_batches=1)
        ssc.stop()
        assert sink.batches[-1][1] == [("n", 2 * (run + 1))]  # the second run resumed the first one's state


def test_another_checkpoint_in_setup_is_still_refused_with_what_to_do(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"setup\(\) returned a context with checkpoint .*: pass the same checkpoint to both"):
        sk.StreamingContext.get_or_create(str(tmp_path / "a"), _setup(str(tmp_path / "b"), ListSink()))


def test_a_dotdot_after_a_symlink_is_where_the_link_points_not_a_lexical_shortcut(tmp_path: Path) -> None:
    """`link/../ckpt` is `<link's target's parent>/ckpt`: taken as `./ckpt` by a lexical compare, the job silently used another directory."""
    (tmp_path / "elsewhere" / "deep").mkdir(parents=True)
    (tmp_path / "link").symlink_to(tmp_path / "elsewhere" / "deep")
    with pytest.raises(ConfigError, match="pass the same checkpoint to both"):
        sk.StreamingContext.get_or_create(str(tmp_path / "ckpt"), _setup(str(tmp_path / "link" / ".." / "ckpt"), ListSink()))

