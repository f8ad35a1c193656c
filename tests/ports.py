"""A port for a server a test starts (lnflowd's /metrics, Prometheus, PostgreSQL).

Binding to port 0 picks from the kernel's ephemeral range, the same range every
outgoing connection's local port comes from: between the pick and the server's own
bind, a connection made meanwhile (the daemon's gateway reconnecting, another worker's
test) can take it, and the server then fails with EADDRINUSE. Ports below that range
are never handed out to connections; one is picked at random and checked free.
"""

from __future__ import annotations

import random
import socket
from pathlib import Path

_LOW = 20_000


def _ephemeral_start() -> int:
    try:
        return int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 32_768


def free_port() -> int:
    """A free TCP port on 127.0.0.1 outside the ephemeral range (if there is room)."""
    high = _ephemeral_start()
    if high - _LOW > 1000:
        for _ in range(100):
            port = random.randrange(_LOW, high)
            with socket.socket() as s:
                try:
                    s.bind(("127.0.0.1", port))
                except OSError:
                    continue
                return port
    with socket.socket() as s:  # no room below the range: the kernel's pick
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])
