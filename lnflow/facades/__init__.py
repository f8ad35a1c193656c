"""The seed's programmatic API, as thin facades over lnflow's modules.

    from lnflow import AsyncLNDgRPCClient, HTLCMonitor, LndManageClient, OpportunityAnalyzer

=====================  =========================================  ==========================
name                   over                                       module
=====================  =========================================  ==========================
AsyncLNDgRPCClient     :class:`lnflow.lnd.LndClient`              ``facades.lnd_grpc``
HTLCMonitor            the store's writer and ingestor            ``facades.htlc_monitor``
OpportunityAnalyzer    :func:`lnflow.analysis.analyze`            ``facades.opportunity_analyzer``
PolicyManager          :mod:`lnflow.policy` (plan/apply/rollback) ``facades.policy_manager``
LndManageClient        httpx, read-only GETs                      :mod:`lnflow.manage`
=====================  =========================================  ==========================

Names load on first use, so importing this package (or ``lnflow``) pulls in no
SQLAlchemy; grpc never loads here at all (it runs in the lnd client's gateway process).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from lnflow.manage import LndManageClient

    from .htlc_monitor import HTLCMonitor
    from .lnd_grpc import AsyncLNDgRPCClient
    from .opportunity_analyzer import MissedOpportunity, OpportunityAnalyzer
    from .policy_manager import PolicyManager

__all__ = [
    "AsyncLNDgRPCClient",
    "HTLCMonitor",
    "LndManageClient",
    "MissedOpportunity",
    "OpportunityAnalyzer",
    "PolicyManager",
]

MODULES = {
    "AsyncLNDgRPCClient": "lnflow.facades.lnd_grpc",
    "HTLCMonitor": "lnflow.facades.htlc_monitor",
    "LndManageClient": "lnflow.manage",
    "MissedOpportunity": "lnflow.facades.opportunity_analyzer",
    "OpportunityAnalyzer": "lnflow.facades.opportunity_analyzer",
    "PolicyManager": "lnflow.facades.policy_manager",
}


def __getattr__(name: str) -> object:
    try:
        module = MODULES[name]
    except KeyError:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}") from None
    return getattr(importlib.import_module(module), name)
