"""lnd adapter: typed async gRPC client returning :mod:`lnflow.domain` records.

The gRPC runs in a child process (:mod:`lnflow.lnd.gateway`); this process never
imports grpc. Protobuf messages and gRPC failures never leave this package: results
are domain records, failures are :class:`lnflow.errors.LndError` subclasses whose
message names the cause and the fix.
"""

from .client import LndClient
from .credentials import LndCredentials
from .stream import HtlcStream

__all__ = ["HtlcStream", "LndClient", "LndCredentials"]
