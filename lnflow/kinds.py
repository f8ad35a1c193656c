"""What an event was, how an attempt ended, and a gap in the stream: the records the
store counts by and status shows.

Standard library only, so ``lnflowctl status`` can name its counts without importing
the recording and analysis modules (:mod:`lnflow.domain` and :mod:`lnflow.attempts`
re-export them).
"""

from __future__ import annotations

import enum
from typing import NamedTuple

__all__ = ["EventKind", "Gap", "Outcome"]


class EventKind(enum.IntEnum):
    """Which variant of lnd's ``HtlcEvent`` oneof an event carried."""

    UNKNOWN = 0  # a variant newer than this code (kept, never dropped)
    FORWARD = 1
    FORWARD_FAIL = 2
    SETTLE = 3
    LINK_FAIL = 4
    FINAL = 5

    @property
    def label(self) -> str:
        return self.name.lower()


class Outcome(enum.IntEnum):
    PENDING = 0
    SETTLED = 1
    FAILED_LOCAL = 2
    FAILED_DOWNSTREAM = 3
    UNRESOLVED = 4
    REJECTED_LOCAL = 5  # failed back before forwarding, no reason: an HTLC interceptor

    @property
    def label(self) -> str:
        return self.name.lower()


class Gap(NamedTuple):
    """A span in which no HTLC stream was connected: failures then went unseen."""

    from_ns: int
    to_ns: int | None  # None: still disconnected
