"""grpc status → :class:`lnflow.errors.LndError`, in one place.

:func:`classify` is pure (status code name and details in, exception out) so
the table can be tested with the exact strings grpcio reports. It returns the
error; the caller raises it ``from`` the :class:`RpcFailure` the lnd gateway
process reported (code name, details, the connection's state). The gateway's own
client (:mod:`lnflow.lnd._http2`) words its failures as grpcio 1.85 did; observed with
grpcio (details of the failed call):

* wrong tls.cert: ``UNAVAILABLE`` "failed to connect to all addresses; last
  error: UNKNOWN: ipv4:127.0.0.1:PORT: Tls handshake failed
  (TSI_PROTOCOL_FAILURE): SSL_ERROR_SSL: error:1000007d:SSL
  routines:OPENSSL_internal:CERTIFICATE_VERIFY_FAILED: self signed certificate: OK"
* host not in the certificate: ``UNAVAILABLE`` "...: Custom verification check
  failed with error: UNAUTHENTICATED: Hostname Verification Check failed."
* plaintext or non-gRPC port: ``UNAVAILABLE`` "...: Tls handshake failed
  (TSI_PROTOCOL_FAILURE): ...:WRONG_VERSION_NUMBER: Invalid certificate
  verification context: OK"
* closed port: ``UNAVAILABLE`` "failed to connect to all addresses; last error:
  UNKNOWN: ipv4:127.0.0.1:PORT: Failed to connect to remote host: Connection refused"
* unknown host: ``UNAVAILABLE`` "errors resolving HOST:PORT: [field:hostname
  lookup error:address lookup failed for HOST:PORT: Domain name not found]"
* peer accepts TCP but never answers (a frozen lnd, SIGSTOP): ``DEADLINE_EXCEEDED``
  "Deadline Exceeded" while the channel is still CONNECTING; once grpc's connect
  attempt gives up (20 s), ``UNAVAILABLE`` "...: Handshake read failed (Endpoint
  closing)": a handshake that timed out, not a certificate mismatch
* lnd frozen after the connection was made: ``DEADLINE_EXCEEDED`` on a READY channel
* server going away mid-stream: ``UNAVAILABLE`` "Cancelling all calls"

lnd itself answers auth problems with ``UNKNOWN``: "verification failed:
signature mismatch after caveat verification" (macaroon of another node or
network), "expected 1 macaroon, got 0", "permission denied" (macaroon lacks the
RPC's permission), and while starting "wallet locked, unlock it to enable full
RPC access" and similar.
"""

from __future__ import annotations

import re

from lnflow.errors import (
    LndError,
    LndRpcError,
    MacaroonRejectedError,
    NodeUnreachableError,
    TlsMismatchError,
)

from .credentials import LndCredentials

__all__ = ["RpcFailure", "classify", "from_rpc_error", "is_not_found"]

# entity:action each RPC needs (lnd rpcserver.go / router_server.go / verrpc).
PERMISSIONS = {
    "GetInfo": "info:read",
    "GetVersion": "info:read",
    "GetChanInfo": "info:read",
    "GetNodeInfo": "info:read",
    "ListChannels": "offchain:read",
    "FeeReport": "offchain:read",
    "ForwardingHistory": "offchain:read",
    "SubscribeHtlcEvents": "offchain:read",
    "UpdateChannelPolicy": "offchain:write",
    "UpdateChanStatus": "offchain:write",
}

_MACAROON_HINTS = ("macaroon", "verification failed", "signature mismatch")
_TLS_HINTS = (
    "ssl",
    "tls",
    "handshake",
    "certificate",
    "tsi_",
    "hostname verification",
)
# lnd's answers before the RPC server is fully up (rpcperms/interceptor.go).
_NOT_READY = (
    "waiting to start",
    "wallet not created",
    "wallet locked",
    "the rpc server is in the process of starting up",
    "server is still in the process of starting",
)
# A TLS handshake that never completed (the peer stopped answering), as opposed to
# one the peer answered with something we reject.
_HANDSHAKE_CUT = ("read failed", "write failed", "timed out", "endpoint closing", "deadline")
_ADDRESS_PREFIX = re.compile(r"^(?:[A-Z_]+: )?(?:ipv4|ipv6|unix|unix-abstract|vsock):\S+: ")
_MAX_REASON = 160


def _one_line(text: str, limit: int = _MAX_REASON) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _short_reason(details: str) -> str:
    """The informative tail of grpc's connection error text."""
    text = details
    if "last error: " in text:
        text = _ADDRESS_PREFIX.sub("", text.rsplit("last error: ", 1)[1])
    elif text.startswith("errors resolving"):
        tail = text.rsplit(": ", 1)[-1].strip(" []")
        text = f"cannot resolve host: {tail}"
    return _one_line(text or "no details")


def _tls_reason(details: str) -> str:
    """``CERTIFICATE_VERIFY_FAILED: self signed certificate`` out of BoringSSL's text."""
    text = _short_reason(details)
    if "OPENSSL_internal:" in text:
        text = text.rsplit("OPENSSL_internal:", 1)[1]
    if text.endswith(": OK"):
        text = text[:-4]
    return _one_line(text)


def _host(target: str) -> str:
    host = target.rsplit(":", 1)[0] if target.count(":") == 1 or "]:" in target else target
    return host.strip("[]")


def classify(
    code: str,
    details: str,
    *,
    method: str,
    credentials: LndCredentials,
    connecting: bool = False,
    established: bool = False,
    timeout_s: float | None = None,
) -> LndError:
    """Map one failed call to the :class:`LndError` an operator can act on.

    ``code`` is the grpc status code name (``"UNAVAILABLE"``); ``connecting``
    says the channel had no live connection when the call failed (turns a
    deadline into "unreachable"); ``established`` says a stream had been
    flowing (an UNAVAILABLE then means the connection was lost).
    """
    target = credentials.rpcserver
    low = details.lower()
    one = _one_line(details, 300)

    if code == "UNAUTHENTICATED" or (
        code in ("UNKNOWN", "PERMISSION_DENIED") and any(h in low for h in _MACAROON_HINTS)
    ):
        return MacaroonRejectedError(
            f"LND rejected the macaroon {credentials.macaroonpath} ({one}): "
            "use the macaroon of this node and network (--macaroonpath)"
        )
    if code == "PERMISSION_DENIED" or (code == "UNKNOWN" and low.strip() == "permission denied"):
        permission = PERMISSIONS.get(method, "a permission")
        admin = " (admin.macaroon has it)" if permission.endswith(":write") else ""
        return MacaroonRejectedError(
            f"LND refused {method}: the macaroon {credentials.macaroonpath} lacks "
            f"{permission} ({one}): pass --macaroonpath with a macaroon that grants it{admin}"
        )
    if code == "UNAVAILABLE" and "handshake" in low and any(h in low for h in _HANDSHAKE_CUT):
        return NodeUnreachableError(
            f"LND at {target} timed out: it accepted the connection but did not answer "
            f"the TLS handshake ({_short_reason(details)}): lnd is frozen, overloaded or "
            "still starting; is lnd running and is --rpcserver its gRPC port?"
        )
    if code == "UNAVAILABLE" and any(h in low for h in _TLS_HINTS):
        return _tls_error(details, credentials)
    if code == "UNKNOWN" and low.startswith(_NOT_READY):
        return NodeUnreachableError(
            f"LND at {target} is not ready ({one}): "
            "unlock its wallet (lncli unlock) or wait until lnd has started"
        )
    if code == "UNAVAILABLE":
        reason = _short_reason(details)
        if established:
            return NodeUnreachableError(
                f"lost the connection to LND at {target} ({reason}): "
                "lnd stopped or restarted; is lnd running?"
            )
        return NodeUnreachableError(
            f"cannot reach LND at {target} ({reason}): is lnd running and is --rpcserver right?"
        )
    if code == "DEADLINE_EXCEEDED":
        waited = f" within {timeout_s:g}s" if timeout_s is not None else ""
        if connecting:
            return NodeUnreachableError(
                f"cannot reach LND at {target} (no answer{waited}): "
                "is lnd running and is --rpcserver right?"
            )
        return NodeUnreachableError(
            f"LND at {target} timed out: {method} got no answer{waited} on an open "
            "connection: lnd is frozen or overloaded"
        )
    return LndRpcError(f"LND {method} failed with {code}: {one}")


def _tls_error(details: str, credentials: LndCredentials) -> TlsMismatchError:
    target = credentials.rpcserver
    cert = credentials.tlscertpath
    reason = _tls_reason(details)
    low = details.lower()
    if "hostname verification" in low:
        host = _host(target)
        return TlsMismatchError(
            f"TLS handshake with {target} failed: tls.cert at {cert} does not list '{host}' "
            f"({reason}): connect via a name the certificate lists (e.g. localhost) or add "
            f"tlsextraip/tlsextradomain={host} to lnd.conf and let lnd regenerate tls.cert"
        )
    if "wrong_version_number" in low:
        return TlsMismatchError(
            f"TLS handshake with {target} failed: the server does not speak TLS ({reason}): "
            "point --rpcserver at lnd's gRPC port (default 10009)"
        )
    if "security handshaker" in low:
        return TlsMismatchError(
            f"TLS setup for {target} failed: tls.cert at {cert} is not a usable certificate "
            f"({reason}): point --tlscertpath at the node's tls.cert"
        )
    return TlsMismatchError(
        f"TLS handshake with {target} failed: tls.cert at {cert} does not match the node's "
        f"certificate ({reason}); point --tlscertpath at the node's tls.cert"
    )


class RpcFailure(Exception):
    """One failed gRPC call as the lnd gateway reported it (grpc stays in the gateway).

    ``code`` is grpc's status code name (``"UNAVAILABLE"``), ``details`` its text,
    ``connecting`` whether the channel had no live connection when the call failed.
    The :class:`LndError` raised for it chains to it.
    """

    def __init__(self, code: str, details: str, *, connecting: bool = False) -> None:
        super().__init__(f"{code}: {details}")
        self.code = code
        self.details = details
        self.connecting = connecting


def from_rpc_error(
    exc: RpcFailure,
    *,
    method: str,
    credentials: LndCredentials,
    established: bool = False,
    timeout_s: float | None = None,
) -> LndError:
    """:func:`classify` for an :class:`RpcFailure`."""
    return classify(
        exc.code,
        exc.details,
        method=method,
        credentials=credentials,
        connecting=exc.connecting,
        established=established,
        timeout_s=timeout_s,
    )


def is_not_found(exc: RpcFailure, *needles: str) -> bool:
    """NOT_FOUND, or lnd's older UNKNOWN answers whose text says so."""
    if exc.code == "NOT_FOUND":
        return True
    details = exc.details.lower()
    return exc.code == "UNKNOWN" and any(n in details for n in needles)
