"""The dashboard's HTTP server: the stdlib's ``ThreadingHTTPServer`` in a daemon thread.

Routes: ``/`` the dashboard page (one self-contained HTML file shipped in the package,
no CDN), ``/api/status`` (JSON), ``/metrics`` (Prometheus text), ``/healthz`` (200 when
the job runs and keeps up, else 503). Binds loopback unless told otherwise. Handlers
only read the `StatusCollector`; the job's thread never waits for a request.
"""

from __future__ import annotations

import json
import logging
import socket
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from importlib import resources
from typing import Any

from streamkeep.errors import ConfigError
from streamkeep.ui._collector import StatusCollector

log = logging.getLogger("streamkeep.ui")


def _page() -> bytes:
    return resources.files("streamkeep.ui").joinpath("dashboard.html").read_bytes()


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    protocol_version = "HTTP/1.1"

    def do_GET(self) -> None:  # noqa: N802 - the stdlib's name
        path = self.path.split("?", 1)[0]
        col = self.server.collector
        if path in ("/", "/index.html"):
            self._send(200, "text/html; charset=utf-8", self.server.page)
        elif path == "/api/status":
            self._send(200, "application/json", json.dumps(col.status(), default=str).encode())
        elif path == "/metrics":
            self._send(200, col.content_type, col.metrics())
        elif path == "/healthz":
            ok, reason = col.health()
            self._send(200 if ok else 503, "text/plain; charset=utf-8", (reason + "\n").encode())
        else:
            self._send(404, "text/plain; charset=utf-8", b"not found: try /, /api/status, /metrics or /healthz\n")

    def _send(self, code: int, ctype: str, body: bytes) -> None:
        self.send_response(code)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - the stdlib's signature
        log.debug("%s " + format, self.address_string(), *args)


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, addr: tuple[str, int], collector: StatusCollector) -> None:
        self.collector = collector
        self.page = _page()
        if ":" in addr[0]:
            self.address_family = socket.AF_INET6
        super().__init__(addr, _Handler)


class UIServer:
    """A running dashboard server: `url`, `collector` (register it as a listener) and `close()`."""

    def __init__(self, host: str, port: int, collector: StatusCollector) -> None:
        try:
            self._server = _Server((host, port), collector)
        except OSError as exc:
            msg = f"cannot serve the dashboard on {host}:{port}: {exc}. Pick another ui_port (0: any free port)."
            raise ConfigError(msg) from exc
        self.collector = collector
        addr = self._server.server_address
        self.host = addr[0].decode() if isinstance(addr[0], bytes) else str(addr[0])
        self.port = int(addr[1])
        shown = f"[{self.host}]" if ":" in self.host else self.host
        self.url = f"http://{shown}:{self.port}/"
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.2}, name="streamkeep-ui", daemon=True)
        self._thread.start()

    @property
    def socket_address(self) -> tuple[Any, ...]:
        """The bound socket's address (host, port)."""
        return tuple(self._server.socket.getsockname())

    def close(self) -> None:
        """Stop serving and release the port (idempotent)."""
        if self._thread.is_alive():
            self._server.shutdown()
            self._thread.join()
        self._server.server_close()


#: how many ports after the first `start_ui(scan=True)` tries (4040, 4041, ... as Spark's UI does)
SCAN_PORTS = 100


def start_ui(host: str, port: int, job_state: Callable[[], str], *, scan: bool = False) -> UIServer:
    """Start the dashboard server for one job; register ``.collector`` as its listener.

    With `scan`, a taken `port` is not an error: the next free one (up to `SCAN_PORTS` on) is used.
    """
    collector = StatusCollector(job_state)
    p = port
    while True:
        try:
            return UIServer(host, p, collector)
        except ConfigError:
            if not (scan and port) or p >= port + SCAN_PORTS - 1:
                raise
            p += 1
