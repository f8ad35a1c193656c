"""lnd's gRPC address (``--rpcserver``), checked the same way by the daemon's settings and
by :class:`lnflow.lnd.LndCredentials`; no grpc import, so the settings stay light."""

from __future__ import annotations

__all__ = ["DEFAULT_RPC_PORT", "rpc_address"]

DEFAULT_RPC_PORT = 10009


def rpc_address(text: str) -> str:
    """``host:port`` from ``host``, ``host:port``, ``[v6]`` or ``[v6]:port`` (a bare host
    gets lnd's port 10009; a bare IPv6 address is left as given).

    Raises ValueError, with the fix, for an empty address or a port that is not a
    number from 1 to 65535: such an address would otherwise fail later as a misleading
    "connection refused", or silently become another node's default.
    """
    address = text.strip()
    if not address:
        raise ValueError("the lnd address is empty: give host:port, e.g. localhost:10009")
    if address.startswith("["):  # [v6] or [v6]:port
        host, closed, rest = address[1:].partition("]")
        if not closed or (rest and not rest.startswith(":")):
            raise ValueError(f"'{text}' is not [IPv6]:port: write e.g. [::1]:10009")
        if not rest:
            return f"{address}:{DEFAULT_RPC_PORT}"
        port = rest[1:]
    elif address.count(":") == 1:
        host, _, port = address.partition(":")
    elif ":" in address:  # a bare IPv6 address
        return address
    else:
        return f"{address}:{DEFAULT_RPC_PORT}"
    if not host:
        raise ValueError(f"'{text}' names no host: give host:port, e.g. localhost:10009")
    if not (port.isascii() and port.isdigit() and 1 <= int(port) <= 65_535):
        raise ValueError(
            f"'{text}' has no valid port: give a port from 1 to 65535 (lnd listens on 10009)"
        )
    return address
