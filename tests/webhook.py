"""A local HTTP server standing in for a webhook service (ntfy, Slack, ...) in tests.

``Hook(statuses=[500, 200], delay_s=0)``: records each POST as (monotonic time, path,
headers, body) in ``requests`` and answers the next status of the list (the last one
repeats); ``hold.clear()`` keeps requests waiting until ``hold.set()``; ``got`` is set at
the first request. ``url(path)`` carries user info and a token, as real webhook URLs do.
"""

from __future__ import annotations

import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

__all__ = ["Hook"]


class Hook:
    """A local HTTP server that records each POST and answers ``status`` (a list is
    consumed one status per request); ``hold`` makes it wait before answering."""

    def __init__(self, statuses: list[int] | None = None, delay_s: float = 0.0) -> None:
        self.statuses = statuses or [200]
        self.delay_s = delay_s
        self.requests: list[tuple[float, str, dict[str, str], bytes]] = []
        self.hold = threading.Event()
        self.hold.set()
        self.got = threading.Event()
        hook = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                hook.requests.append((time.monotonic(), self.path, dict(self.headers), body))
                hook.got.set()
                hook.hold.wait(30)
                time.sleep(hook.delay_s)
                status = hook.statuses.pop(0) if len(hook.statuses) > 1 else hook.statuses[0]
                self.send_response(status)
                self.send_header("Content-Length", "7")
                self.end_headers()
                self.wfile.write(b"nope/ok")

            def log_message(self, format: str, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def url(self, path: str = "/hook/SECRETTOKEN?auth=PASSWORD") -> str:
        return f"http://user:PW@127.0.0.1:{self.server.server_address[1]}{path}"

    def close(self) -> None:
        self.hold.set()
        self.server.shutdown()
        self.server.server_close()
