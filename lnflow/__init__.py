"""lnflow: find the routing revenue an LND node loses to failed forwards.

The seed's programmatic names load lazily (``import lnflow`` stays light)::

    from lnflow import AsyncLNDgRPCClient, HTLCMonitor, LndManageClient, OpportunityAnalyzer
    from lnflow import PolicyManager
"""

from __future__ import annotations

from typing import TYPE_CHECKING

__version__ = "0.1.0"

if TYPE_CHECKING:
    from lnflow.facades import (
        AsyncLNDgRPCClient,
        HTLCMonitor,
        LndManageClient,
        MissedOpportunity,
        OpportunityAnalyzer,
        PolicyManager,
    )

__all__ = [
    "AsyncLNDgRPCClient",
    "HTLCMonitor",
    "LndManageClient",
    "MissedOpportunity",
    "OpportunityAnalyzer",
    "PolicyManager",
    "__version__",
]

_FACADES = frozenset(__all__) - {"__version__"}


def __getattr__(name: str) -> object:
    if name in _FACADES:
        import lnflow.facades

        return getattr(lnflow.facades, name)
    raise AttributeError(f"module 'lnflow' has no attribute {name!r}")
