"""The `streamkeep` command line: demo, run, checkpoint inspect/verify/diff."""

from __future__ import annotations

from streamkeep.cli._main import main

__all__ = ["main"]
