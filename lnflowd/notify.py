"""systemd's sd_notify protocol: one datagram to $NOTIFY_SOCKET (no-op elsewhere).

The protocol is a single sendto() of "KEY=VALUE" lines, documented in
sd_notify(3); a dependency on libsystemd would buy nothing over these lines.
"""

from __future__ import annotations

import os
import socket

__all__ = ["notify", "watchdog_enabled"]


def notify(*states: str) -> bool:
    """Send e.g. ``notify("READY=1")``; returns False when not under systemd."""
    address = os.environ.get("NOTIFY_SOCKET")
    if not address:
        return False
    if address.startswith("@"):  # abstract namespace
        address = "\0" + address[1:]
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
        try:
            sock.sendto("\n".join(states).encode(), address)
        except OSError:
            return False
    return True


def watchdog_enabled() -> bool:
    """True when systemd expects WATCHDOG=1 pings from this process."""
    usec = os.environ.get("WATCHDOG_USEC")
    pid = os.environ.get("WATCHDOG_PID")
    return bool(usec) and (pid is None or pid == str(os.getpid()))
