"""Prometheus text exposition (format 0.0.4) written with plain string joins, and the
small HTTP server that serves it.

Why not prometheus_client's own collector path: a node with 1 000 channels has about
19 000 series (failures by channel and class, four snapshot gauges and two channel
gauges per channel, fees and forwards per channel). prometheus_client builds a Metric
and a Sample object per series on every scrape and formats each one; that took 130 ms
to collect and 600 ms to format on the 2-core reference machine (bench/metrics), far
above the 50 ms a scrape may take. Here a series is one f-string over a label string
rendered once per key (channel and class), and the snapshot's families are rendered
when the snapshot changes, not per scrape. prometheus_client still owns the
histograms, rendered by its ``generate_latest`` (a few dozen lines).

The server is ``http.server.ThreadingHTTPServer`` in a daemon thread: ``GET /metrics``
(and ``/``) only, no compression (a scrape stays on loopback or the LAN).
"""

from __future__ import annotations

import math
import socket
import threading
from collections.abc import Callable, Iterable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

__all__ = ["CONTENT_TYPE", "MetricsServer", "family", "labels", "number"]

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


def _escape(value: str) -> str:
    if "\\" in value or '"' in value or "\n" in value:
        return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
    return value


def labels(pairs: Iterable[tuple[str, str]]) -> str:
    """``{a="1",b="x"}`` ("" for no labels); render once per key and reuse."""
    inner = ",".join(f'{k}="{_escape(v)}"' for k, v in pairs)
    return "{" + inner + "}" if inner else ""


def number(value: float) -> str:
    """Integers exactly (msat counters exceed 2**53 only after 90 000 BTC of fees)."""
    if isinstance(value, int):
        return str(value)
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    return repr(float(value))


def family(name: str, kind: str, help_text: str, series: Iterable[tuple[str, float]]) -> str:
    """One metric family: HELP, TYPE and a line per (label string, value); values are
    ints or finite floats (:func:`number` formats the others).

    ``name`` is the series name, ``_total`` included for a counter (as prometheus_client
    writes the 0.0.4 format)."""
    head = f"# HELP {name} {help_text}\n# TYPE {name} {kind}\n"
    # ints and finite floats format as the format wants (str(float) is its repr)
    return head + "".join([f"{name}{lbl} {v}\n" for lbl, v in series])


class _Handler(BaseHTTPRequestHandler):
    server: _Server

    def do_GET(self) -> None:
        if self.path.split("?", 1)[0] not in ("/metrics", "/"):
            self.send_error(404, "only /metrics is served")
            return
        body = self.server.render()
        self.send_response(200)
        self.send_header("Content-Type", CONTENT_TYPE)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        pass  # a scrape every few seconds is not worth a log line


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    render: Callable[[], bytes]


class _Server6(_Server):
    address_family = socket.AF_INET6


class MetricsServer:
    """Serves ``render()`` on (host, port) from a daemon thread until :meth:`close`."""

    def __init__(self, host: str, port: int, render: Callable[[], bytes]) -> None:
        server_class = _Server6 if ":" in host else _Server
        self._server = server_class((host, port), _Handler)
        self._server.render = render
        self._thread = threading.Thread(
            target=self._server.serve_forever, name="metrics-http", daemon=True
        )
        self._thread.start()

    @property
    def port(self) -> int:
        return int(self._server.server_address[1])

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
