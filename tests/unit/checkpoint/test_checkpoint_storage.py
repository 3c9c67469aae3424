"""`CheckpointStorage`: whole-file writes and the one atomic primitive, `create` (local and S3)."""

from __future__ import annotations

import threading
from typing import Any

import pytest

from streamkeep.checkpoint import CheckpointStorage
from streamkeep.errors import CheckpointError, ConfigError


@pytest.fixture(params=["local", pytest.param("s3", marks=pytest.mark.integration)])
def storage(request: pytest.FixtureRequest, tmp_path: Any) -> CheckpointStorage:
    if request.param == "local":
        return CheckpointStorage(str(tmp_path / "ckpt"))
    server = request.getfixturevalue("s3_server")
    return CheckpointStorage(request.getfixturevalue("s3_url"), server.storage_options)


def test_create_is_create_if_absent(storage: CheckpointStorage) -> None:
    assert storage.create("log/000000000001.rec", b"first") is True
    assert storage.create("log/000000000001.rec", b"second") is False
    assert storage.read("log/000000000001.rec") == b"first"
    assert storage.list("log") == ["000000000001.rec"]


def test_racing_creates_have_exactly_one_winner(storage: CheckpointStorage) -> None:
    results: list[bool] = []
    barrier = threading.Barrier(6)

    def racer(i: int) -> None:
        barrier.wait()
        results.append(storage.create("log/000000000007.rec", f"driver {i}".encode()))

    threads = [threading.Thread(target=racer, args=(i,)) for i in range(6)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    assert sorted(results) == [False] * 5 + [True]
    assert storage.read("log/000000000007.rec").startswith(b"driver ")


def test_write_replaces_whole_file_and_lists_hide_temp_files(storage: CheckpointStorage) -> None:
    storage.write("plans/1.plan", b"a" * 1000)
    storage.write("plans/1.plan", b"b")
    assert storage.read("plans/1.plan") == b"b"
    assert storage.exists("plans/1.plan")
    assert storage.size("plans/1.plan") == 1
    assert storage.list("plans") == ["1.plan"]
    assert storage.list("nothing-here") == []
    storage.delete("plans/1.plan")
    storage.delete("plans/1.plan")  # deleting a missing file is fine (retention may repeat after a crash)
    assert not storage.exists("plans/1.plan")


def test_read_of_a_missing_file_names_it(storage: CheckpointStorage) -> None:
    with pytest.raises(CheckpointError, match="state/x/000000000001000.delta"):
        storage.read("state/x/000000000001000.delta")


def test_local_create_leaves_no_temp_files(tmp_path: Any) -> None:
    st = CheckpointStorage(str(tmp_path))
    assert st.create("log/a.rec", b"x")
    assert not st.create("log/a.rec", b"y")
    assert sorted(p.name for p in (tmp_path / "log").iterdir()) == ["a.rec"]


def test_unknown_protocol_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="nosuchfs://"):
        CheckpointStorage("nosuchfs://bucket/app")


def _tiny_job(url: str) -> Any:
    import streamkeep as sk
    from streamkeep.testing import ManualClock

    ssc = sk.StreamingContext(1.0, checkpoint=url, clock=ManualClock())
    ssc.rate_stream(3, name="r").map(lambda r: (r[0] % 2, 1)).update_state_by_key(lambda n, o: (o or 0) + sum(n), name="c").foreach_batch(
        lambda b: None
    )
    return ssc


@pytest.mark.parametrize("where", ["a-file", "under-a-file", "proc", "sys"])
def test_an_unusable_checkpoint_url_is_a_checkpoint_error_saying_what_to_do(tmp_path: Any, where: str) -> None:
    """Issue 10.15: under a regular file, a regular file itself, /proc, /sys -> CheckpointError, not a raw OSError."""
    (tmp_path / "f").write_text("x")
    url = {"a-file": str(tmp_path / "f"), "under-a-file": str(tmp_path / "f" / "ckpt"), "proc": "/proc/streamkeep-ckpt", "sys": "/sys/streamkeep-ckpt"}[where]
    ssc = _tiny_job(url)
    with pytest.raises(CheckpointError) as info:
        ssc.run(max_batches=1)
    ssc.stop()
    msg = str(info.value)
    assert f"cannot use {url!r} as a checkpoint" in msg and "pass another checkpoint URL" in msg, msg
    assert not isinstance(info.value.__cause__, CheckpointError)


@pytest.mark.parametrize("url", ["ftp://127.0.0.1:1/ckpt", "memory://streamkeep-unreachable/ckpt"])
def test_an_unreachable_checkpoint_storage_names_the_url_and_what_to_check(url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """A refused connection (ftp connects when opened) or a client error at the first contact (s3 without
    credentials: stood in for by the memory filesystem raising) is a CheckpointError naming the URL, not the client's bare error."""
    if url.startswith("memory://"):
        from fsspec.implementations.memory import MemoryFileSystem

        def no_credentials(self: Any, path: str, **kw: Any) -> Any:
            raise RuntimeError("Unable to locate credentials")

        monkeypatch.setattr(MemoryFileSystem, "cat_file", no_credentials)
        monkeypatch.setattr(MemoryFileSystem, "exists", no_credentials)
    with pytest.raises(CheckpointError) as info:
        ssc = _tiny_job(url)
        try:
            ssc.run(max_batches=1)
        finally:
            ssc.stop()
    msg = str(info.value)
    assert f"cannot reach the checkpoint storage {url}" in msg and "credentials" in msg, msg
