"""The web dashboard, Prometheus ``/metrics``, ``/api/status`` and ``/healthz`` of a running job.

Turned on with ``StreamingContext(..., ui_port=0)`` (or ``streamkeep run``); everything
it shows comes through the listener API (`streamkeep.StreamingListener`), so the
engine's batch loop knows nothing of it. Needs the ``ui`` extra (prometheus-client).
"""

from __future__ import annotations

from streamkeep.ui._collector import StatusCollector
from streamkeep.ui._server import UIServer, start_ui

__all__ = ["StatusCollector", "UIServer", "start_ui"]
