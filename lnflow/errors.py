"""The lnflow exception tree.

Every error an operator can cause or fix is an :class:`LnflowError` whose
``str()`` is one line naming the cause and the fix; the CLIs print it and exit
non-zero. Anything else is a bug and keeps its traceback.

    LnflowError
    ├── ConfigError              bad config file, key, value or flag
    │   └── PolicyFileError      a policies file lnflow cannot honour (file:line named)
    ├── StoreError               the SQLite store cannot be used
    │   ├── StoreTooNewError     schema newer than this code
    │   └── StoreWriteError      a write failed (disk full, read-only store, ...)
    ├── UnknownChannelError      a channel id the store has never seen
    ├── ReportFileError          a saved report that is not an lnflow analysis
    ├── ManageError              lnd-manageJ unreachable or answering nonsense
    └── LndError                 talking to LND
        ├── CertificateMissingError
        ├── MacaroonMissingError
        ├── MacaroonRejectedError
        ├── TlsMismatchError
        ├── NodeUnreachableError (the only one the daemon retries)
        └── LndRpcError          any other RPC failure
"""

from __future__ import annotations

__all__ = [
    "CertificateMissingError",
    "ConfigError",
    "LndError",
    "LndRpcError",
    "LnflowError",
    "MacaroonMissingError",
    "MacaroonRejectedError",
    "ManageError",
    "NodeUnreachableError",
    "PolicyFileError",
    "ReportFileError",
    "StoreError",
    "StoreTooNewError",
    "StoreWriteError",
    "TlsMismatchError",
    "UnknownChannelError",
]


class LnflowError(Exception):
    """Base of every error an operator can act on."""

    exit_code = 1


class ConfigError(LnflowError):
    exit_code = 2


class PolicyFileError(ConfigError):
    """A policies file (charge-lnd's rule language) that cannot be loaded as written.

    The message is one line: ``FILE:LINE: [section] key: what is wrong``.
    """


class StoreError(LnflowError):
    exit_code = 3


class StoreTooNewError(StoreError):
    pass


class StoreWriteError(StoreError):
    """A write to the store failed; ``reason`` is SQLite's own words for it."""

    def __init__(self, message: str, reason: str = "") -> None:
        super().__init__(message)
        self.reason = reason or message


class UnknownChannelError(LnflowError):
    exit_code = 2


class ReportFileError(LnflowError):
    exit_code = 2


class ManageError(LnflowError):
    exit_code = 4


class LndError(LnflowError):
    exit_code = 4


class CertificateMissingError(LndError):
    pass


class MacaroonMissingError(LndError):
    pass


class MacaroonRejectedError(LndError):
    pass


class TlsMismatchError(LndError):
    pass


class NodeUnreachableError(LndError):
    exit_code = 5


class LndRpcError(LndError):
    pass
