"""Start-up cost (issue 14): ``import streamkeep`` and a restart of a local job import only what they use.

Sources, sinks and executors a job does not use (Kafka, Redis, files, sockets, Ray), the
table and event-time operators, the dashboard, the CLI, and standard modules only some paths need (subprocess for the compaction
helper, pickle for the opt-in codec, fsspec for remote checkpoints; uuid and socket are not needed
for random ids and the host name) are imported on first use.
Each is checked in a fresh interpreter, so that a later import at module level cannot undo
this silently. Every public name stays importable from where API.md says.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

import streamkeep
import streamkeep.executors
import streamkeep.sinks
import streamkeep.sources

ROOT = str(Path(streamkeep.__file__).resolve().parent.parent)

#: Never imported by ``import streamkeep`` nor by a restart of a job that does not use them.
NOT_AT_START = [
    "streamkeep.sources.kafka",
    "streamkeep.sources.files",
    "streamkeep.sources.socket",
    "streamkeep.sinks.files",
    "streamkeep.sinks.kafka",
    "streamkeep.sinks.redis",
    "streamkeep.sinks.text",
    "streamkeep.executors.ray",
    "streamkeep.executors._partitions",
    "streamkeep.ui",
    "streamkeep.cli",
    "streamkeep.compat",
    "streamkeep.tables",
    "streamkeep.testing",
    # table and event-time operators (their node classes and runtimes): with the first job that uses them
    "streamkeep.dstream._tables",
    "streamkeep.dstream._event_time",
    "streamkeep.executors._tables",
    "streamkeep.executors._table_window",
    "streamkeep.executors._event_time",
    "http.server",
    "asyncio",
    "json",
    "pickle",
    "subprocess",
    "shutil",
    "uuid",
    "platform",
    "socket",
    "concurrent.futures",
    "fsspec",
    "confluent_kafka",
    "redis",
    "ray",
    "pyarrow",
]


def _modules_after(code: str, tmp_path: Path) -> set[str]:
    """The modules a fresh interpreter holds after running `code` (streamkeep from this checkout)."""
    script = tmp_path / "probe.py"
    out = tmp_path / "modules.txt"
    script.write_text(f"import sys\nsys.path.insert(0, {ROOT!r})\n{code}\nopen({str(out)!r}, 'w').write('\\n'.join(sorted(sys.modules)))\n")
    proc = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, check=False, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    return set(out.read_text().split("\n"))


def _unexpected(modules: set[str]) -> list[str]:
    return sorted(m for m in modules if any(m == name or m.startswith(name + ".") for name in NOT_AT_START))


def test_import_streamkeep_imports_no_source_sink_executor_or_tool_it_does_not_need(tmp_path: Path) -> None:
    modules = _modules_after("import streamkeep", tmp_path)
    assert "streamkeep.context" in modules  # the probe saw the import
    assert _unexpected(modules) == []


def test_a_restart_of_a_local_job_imports_only_what_the_job_uses(tmp_path: Path) -> None:
    job = textwrap.dedent(
        f"""
        import streamkeep as sk

        def setup():
            ssc = sk.StreamingContext(1.0, checkpoint={str(tmp_path / "ckpt")!r}, snapshot_every=2)
            counts = ssc.rate_stream(20, name="rate").map(lambda r: (r[1] % 5, 1))
            counts.update_state_by_key(lambda vs, old: sum(vs) + (old or 0), name="counts").foreach_batch(lambda b: None)
            return ssc

        ssc = sk.StreamingContext.get_or_create({str(tmp_path / "ckpt")!r}, setup)
        ssc.run(max_batches=5)
        ssc.stop()
        """
    )
    first = _modules_after(job, tmp_path)  # a fresh start: 5 batches, snapshots, compaction
    restart = _modules_after(job + "assert ssc.restored\n", tmp_path)
    assert "streamkeep.sources.rate" in restart
    assert _unexpected(restart) == []
    assert "streamkeep.sinks.kafka" not in first  # the first run loads no unused sink either


def test_a_kafka_job_with_a_file_sink_imports_what_it_uses_only(tmp_path: Path) -> None:
    """Start-up to the first output (issue 14.4 b/c): the Kafka source and the FileSink load no more than they use.

    pickle (only remote fetches keep exceptions), uuid and platform (a temporary file's random
    name), and the IDNA codec with a resolver thread (probing a broker given as an IP address).
    """
    code = textwrap.dedent(
        """
        import socket
        import streamkeep
        import streamkeep.sinks.files
        import streamkeep.sources.kafka
        from streamkeep._kafka_reach import await_brokers

        with socket.socket() as srv:
            srv.bind(("127.0.0.1", 0))
            srv.listen()
            assert await_brokers(f"127.0.0.1:{srv.getsockname()[1]}", timeout_s=5, first_backoff_s=0.1, on_unreachable=print) is None
        """
    )
    modules = _modules_after(code, tmp_path)
    assert "streamkeep.sources.kafka" in modules
    assert sorted(m for m in ("pickle", "uuid", "platform", "encodings.idna") if m in modules) == []


@pytest.mark.parametrize("package", [streamkeep.sources, streamkeep.sinks, streamkeep.executors])
def test_every_public_name_of_a_package_resolves_and_is_listed(package: object) -> None:
    names = package.__all__  # type: ignore[attr-defined]
    for name in names:
        value = getattr(package, name)
        assert value.__name__ == name
        assert name in dir(package)
    star: dict[str, object] = {}
    exec(f"from {package.__name__} import *", star)  # type: ignore[attr-defined]  # noqa: S102
    assert set(names) <= set(star)
    with pytest.raises(AttributeError, match=f"module '{package.__name__}' has no attribute 'Nope'"):  # type: ignore[attr-defined]
        package.Nope  # type: ignore[attr-defined]  # noqa: B018


def test_a_lazy_name_is_the_class_of_its_module(tmp_path: Path) -> None:
    code = textwrap.dedent(
        """
        import json, sys
        from streamkeep.sources import KafkaSource
        from streamkeep.sinks import RedisSink
        from streamkeep.executors import RayExecutor
        import streamkeep.executors.ray, streamkeep.sinks.redis, streamkeep.sources.kafka
        same = [KafkaSource is streamkeep.sources.kafka.KafkaSource, RedisSink is streamkeep.sinks.redis.RedisSink,
                RayExecutor is streamkeep.executors.ray.RayExecutor]
        print(json.dumps(same))
        """
    )
    env = {**os.environ, "PYTHONPATH": ROOT}
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False, env=env, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout) == [True, True, True]
