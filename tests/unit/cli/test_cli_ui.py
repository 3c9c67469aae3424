"""`streamkeep run` serves the dashboard by default at 4040 or the next free port, and prints it (issue 13)."""

from __future__ import annotations

import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from streamkeep.cli import main

APP = """
import json, sys, urllib.request
import streamkeep as sk
from streamkeep.testing import ManualClock
ssc = sk.StreamingContext(1.0, clock=ManualClock())
ssc.queue_stream([[1, 2], [3]], name="q").foreach_batch(lambda b: None)
ssc.run(max_batches=2)
with urllib.request.urlopen(ssc.ui_url + "api/status", timeout=10) as r:
    status = json.load(r)
with open(sys.argv[1], "w") as f:
    f.write(json.dumps({"url": ssc.ui_url, "batches": status["job"]["batches_completed"]}))
ssc.stop()
"""


def test_run_serves_the_dashboard_on_the_next_free_port(tmp_path: Path, capsys: Any) -> None:
    app = tmp_path / "app.py"
    app.write_text(APP)
    out = tmp_path / "out.json"
    blocker = socket.socket()
    try:
        try:
            blocker.bind(("127.0.0.1", 4040))
            blocker.listen()
        except OSError:
            pass  # 4040 is taken already: the same situation
        assert main(["run", str(app), str(out)]) == 0
    finally:
        blocker.close()
    import json

    got = json.loads(out.read_text())
    port = int(got["url"].rsplit(":", 1)[1].rstrip("/"))
    assert got["url"].startswith("http://127.0.0.1:") and 4040 < port < 4140
    assert got["batches"] == 2
    assert f"dashboard at {got['url']}" in capsys.readouterr().err


def test_run_no_ui(tmp_path: Path) -> None:
    app = tmp_path / "app.py"
    app.write_text("import streamkeep as sk, sys\nssc = sk.StreamingContext(1.0)\nwith open(sys.argv[1], 'w') as f:\n    f.write(repr(ssc._ui_port))\n")
    out = tmp_path / "out.txt"
    assert main(["run", "--no-ui", str(app), str(out)]) == 0
    assert out.read_text() == "None"


def test_run_refuses_a_port_out_of_range_before_running_the_app(tmp_path: Path, capsys: Any) -> None:
    """`--ui-port 70000` is a usage error naming the range, not an OverflowError traceback from socketserver."""
    app = tmp_path / "app.py"
    ran = tmp_path / "ran"
    app.write_text(f"open({str(ran)!r}, 'w').close()\n")
    for port in ("70000", "-1"):
        try:
            main(["run", "--ui-port", port, str(app)])
        except SystemExit as exc:
            assert exc.code == 2
        else:
            raise AssertionError(f"--ui-port {port} was accepted")
        assert "0 (any free port) to 65535" in capsys.readouterr().err
    assert not ran.exists()


def test_run_of_a_missing_script_says_so(tmp_path: Path, capsys: Any) -> None:
    missing = tmp_path / "nope.py"
    assert main(["run", str(missing)]) == 2
    err = capsys.readouterr().err
    assert f"{missing}: no such file" in err and "Traceback" not in err, err


def test_run_of_a_pyspark_program_without_pyspark_says_to_add_it(tmp_path: Path, capsys: Any) -> None:
    """Without --pyspark, `import pyspark` (not installed) was a bare ModuleNotFoundError traceback."""
    import importlib.util

    if importlib.util.find_spec("pyspark") is not None:
        import pytest

        pytest.skip("the real pyspark is installed here")
    app = tmp_path / "job.py"
    app.write_text("from pyspark.streaming import StreamingContext\n")
    assert main(["run", "--no-ui", str(app)]) == 2
    err = capsys.readouterr().err
    assert f"imports pyspark, which is not installed: run it as `streamkeep run --pyspark {app}`" in err, err
    other = tmp_path / "other.py"
    other.write_text("import no_such_module_here\n")
    try:
        main(["run", "--no-ui", str(other)])
    except ModuleNotFoundError as exc:  # any other missing module is the script's own error, unchanged
        assert exc.name == "no_such_module_here"
    else:
        raise AssertionError("the missing module was not reported")


def test_run_without_the_ui_extra_runs_the_job_without_a_dashboard(tmp_path: Path, capsys: Any, monkeypatch: Any) -> None:
    """With streamkeep installed alone (as ./scripts/demo.sh installs it), `streamkeep run job.py` failed at once:
    "the dashboard and /metrics need prometheus-client ... (or run with ui_port=None)", for a dashboard it never asked for."""
    import sys

    monkeypatch.setitem(sys.modules, "prometheus_client", None)  # import fails, find_spec says missing
    app = tmp_path / "app.py"
    out = tmp_path / "out.txt"
    app.write_text(
        "import sys\nimport streamkeep as sk\nfrom streamkeep.testing import ManualClock\n"
        "ssc = sk.StreamingContext(1.0, clock=ManualClock())\n"
        "ssc.queue_stream([[1, 2], [3]], name='q').foreach_batch(lambda b: None)\n"
        "ssc.run(max_batches=2)\nssc.stop()\n"
        "with open(sys.argv[1], 'w') as f:\n    f.write(repr((ssc.ui_url, ssc.last_batch_time_ms)))\n"
    )
    assert main(["run", str(app), str(out)]) == 0
    assert out.read_text() == "(None, 2000)"
    assert "no dashboard: it needs prometheus-client (pip install 'streamkeep[ui]')" in capsys.readouterr().err


_ONCE_APP = """
import sys
{logging_setup}
import streamkeep as sk
from streamkeep.testing import ManualClock
ssc = sk.StreamingContext(1.0, clock=ManualClock())
ssc.queue_stream([[1, 2], [3]], name="q").foreach_batch(lambda b: None)
ssc.run(max_batches=2)
running = ssc.ui_url
ssc.stop()
print("URLS", running, ssc.ui_url, flush=True)
"""


@pytest.mark.parametrize(
    "logging_setup",
    [
        "",
        "import logging; logging.basicConfig(level=logging.WARNING)",
        "import logging; logging.getLogger('streamkeep').addHandler(logging.StreamHandler())",
    ],
)
def test_run_says_the_dashboard_address_once_and_ui_url_is_none_after_stop(tmp_path: Path, logging_setup: str) -> None:
    """The address was printed twice (a log line and a print); with a script's own logging.basicConfig every
    log line was printed twice; after stop() ui_url still named the closed server."""
    app = tmp_path / "app.py"
    app.write_text(_ONCE_APP.format(logging_setup=logging_setup))
    argv = [sys.executable, "-m", "streamkeep.cli", "run", "--ui-port", "0", str(app)]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    running, after = done.stdout.split("URLS ", 1)[1].split()
    assert running.startswith("http://127.0.0.1:") and after == "None", done.stdout
    assert done.stderr.count(f"dashboard at {running}") == 1, done.stderr
    assert done.stderr.count("started fresh (no checkpoint)") == 1, done.stderr


@pytest.mark.parametrize(
    "logging_setup",
    [
        "import logging; logging.basicConfig(); logging.getLogger().handlers[0].setLevel(logging.WARNING)",
        "import logging; logging.getLogger().addHandler(logging.NullHandler())",
    ],
)
def test_run_says_the_dashboard_address_when_the_apps_logging_hides_info(tmp_path: Path, logging_setup: str) -> None:
    """With a root handler above INFO (or only a NullHandler), streamkeep's own handler steps aside and the
    root's does not show the INFO line: the address was shown nowhere, as `run` took the line for shown."""
    app = tmp_path / "app.py"
    app.write_text(_ONCE_APP.format(logging_setup=logging_setup))
    argv = [sys.executable, "-m", "streamkeep.cli", "run", "--ui-port", "0", str(app)]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    running = done.stdout.split("URLS ", 1)[1].split()[0]
    assert running.startswith("http://127.0.0.1:"), done.stdout
    assert done.stderr.count(f"dashboard at {running}") == 1, done.stderr
