"""`streamkeep run APP.py`: run a job script (optionally with the PySpark facade)."""

from __future__ import annotations

import runpy
import sys


def run_app(app: str, args: list[str], *, pyspark: bool) -> int:
    """Execute `app` as __main__ with `args`."""
    if pyspark:
        from streamkeep.compat.pyspark import install

        install()
    sys.argv = [app, *args]
    runpy.run_path(app, run_name="__main__")
    return 0
