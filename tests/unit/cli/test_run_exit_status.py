"""`streamkeep run APP.py` exit status: 0 done, 1 the job failed, 2 usage/configuration error, 130 Ctrl-C.

It exited 2 for a job that failed while running (as for a mistyped option), and 0 after a
Ctrl-C that the job turned into a clean stop inside ``await_termination()``.
"""

from __future__ import annotations

import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from _signalled_job import RATE_TOTAL_JOB, signal_after_batches

from streamkeep.cli import main

_JOB = RATE_TOTAL_JOB


def _app(tmp_path: Path, code: str) -> Path:
    app = tmp_path / "job.py"
    app.write_text(textwrap.dedent(code))
    return app


def test_a_job_that_finishes_exits_0(tmp_path: Path) -> None:
    app = _app(tmp_path, """\
        import streamkeep as sk
        ssc = sk.StreamingContext(1.0)
        ssc.queue_stream([[1, 2]], name="q").foreach_batch(lambda b: b.collect())
        ssc.run()
    """)
    assert main(["run", "--no-ui", str(app)]) == 0


def test_a_job_that_fails_while_running_exits_1(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    app = _app(tmp_path, """\
        import streamkeep as sk
        def boom(r):
            raise RuntimeError("bad record")
        ssc = sk.StreamingContext(1.0)
        ssc.queue_stream([[1]], name="q").map(boom).foreach_batch(lambda b: b.collect())
        ssc.run()
    """)
    assert main(["run", "--no-ui", str(app)]) == 1
    assert "streamkeep: UserFunctionError" in capsys.readouterr().err


def test_a_configuration_error_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    app = _app(tmp_path, """\
        import streamkeep as sk
        ssc = sk.StreamingContext(1.0)
        ssc.rate_stream(5, name="r").window(1.5).pprint()
    """)
    assert main(["run", "--no-ui", str(app)]) == 2
    assert "streamkeep: ConfigError" in capsys.readouterr().err
    assert main(["run", "--no-ui", str(tmp_path / "missing.py")]) == 2


def test_the_help_documents_the_exit_status(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["run", "--help"])
    out = " ".join(capsys.readouterr().out.split())
    assert "Exit status: 0 the job finished" in out and "1 the job failed" in out, out
    assert "2 a usage or configuration error" in out and "130 stopped by Ctrl-C" in out, out


def test_ctrl_c_exits_130_even_when_the_job_stops_cleanly(tmp_path: Path) -> None:
    """await_termination() turns Ctrl-C into a clean stop and the script ends normally: still 130, as a shell reports it."""
    app = _app(tmp_path, _JOB)
    argv = [sys.executable, "-m", "streamkeep.cli", "run", "--no-ui", str(app), str(tmp_path / "ckpt")]
    _, seen, out, err, rc = signal_after_batches(argv, signal.SIGINT, 2)
    assert "RETURNED True stopped" in out, out + err  # the job itself stopped cleanly
    assert "Traceback" not in err, err
    assert rc == 130, f"exit status {rc}\nstdout:\n{out}\nstderr:\n{err}"


def test_the_script_keeps_pythons_ctrl_c_handler(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """`streamkeep run` replaced SIGINT's handler for the whole script, so asyncio.run (trio, ...) skipped its own
    graceful Ctrl-C handling: asyncio installs its handler only where Python's default one is in place."""
    app = _app(tmp_path, """\
        import asyncio, signal
        print("OUTSIDE", signal.getsignal(signal.SIGINT) is signal.default_int_handler)
        async def main():
            print("INSIDE", repr(signal.getsignal(signal.SIGINT)))
        asyncio.run(main())
    """)
    assert main(["run", "--no-ui", str(app)]) == 0
    out = capsys.readouterr().out
    assert "OUTSIDE True" in out and "Runner._on_sigint" in out, out


def test_ctrl_c_out_of_an_asyncio_script_exits_130(tmp_path: Path) -> None:
    """asyncio.run's own handler cancels the main task and raises KeyboardInterrupt: still 130."""
    app = _app(tmp_path, """\
        import asyncio, os, signal
        async def main():
            os.kill(os.getpid(), signal.SIGINT)
            await asyncio.sleep(30)
        asyncio.run(main())
    """)
    ran = subprocess.run([sys.executable, "-m", "streamkeep.cli", "run", "--no-ui", str(app)], capture_output=True, text=True, timeout=60)
    assert ran.returncode == 130, ran
