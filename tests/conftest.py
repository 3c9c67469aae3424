"""Shared pytest setup. Real-server fixtures live in ``tests/_servers.py``.

Add project-wide fixtures below; keep server plumbing in ``_servers.py``.
"""

from __future__ import annotations

import os
import sys

# ``_servers`` and ``_kafka_mock`` are imported as top-level modules whether or not
# ``tests`` is a package, so this works in every pytest import mode.
_HERE = os.path.dirname(os.path.abspath(__file__))
if _HERE not in sys.path:
    sys.path.insert(0, _HERE)

pytest_plugins = ["_servers", "_ray_cluster"]
