"""Pure analysis over domain records: no I/O, no clocks (time is passed in).

The analysis' names below load on first use: ``lnflowctl opportunities`` imports
:mod:`lnflow.analysis.model` to rebuild a saved report, and importing this package
must not import the analysis itself (:mod:`.opportunities`, :mod:`.steps`) for that.
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

# (imported now: the function ``classify`` must shadow the submodule of that name)
from .classify import FailureClass, classify, missed_fee_msat

if TYPE_CHECKING:
    from .opportunities import (
        Recommendation,
        analyze,
        confidence,
        deciding_class,
        dominant_class,
        inbound_fee_msat,
        rebalance_plan,
        recommend,
        urgency_score,
    )
    from .ranks import nearest_rank, percentile
    from .steps import decide, plan

# each public name and the module that defines it
_SOURCES = {
    "Recommendation": "opportunities",
    "analyze": "opportunities",
    "confidence": "opportunities",
    "deciding_class": "opportunities",
    "dominant_class": "opportunities",
    "inbound_fee_msat": "opportunities",
    "rebalance_plan": "opportunities",
    "recommend": "opportunities",
    "urgency_score": "opportunities",
    "nearest_rank": "ranks",
    "percentile": "ranks",
    "decide": "steps",
    "plan": "steps",
}

__all__ = [
    "FailureClass",
    "Recommendation",
    "analyze",
    "classify",
    "confidence",
    "decide",
    "deciding_class",
    "dominant_class",
    "inbound_fee_msat",
    "missed_fee_msat",
    "nearest_rank",
    "percentile",
    "plan",
    "rebalance_plan",
    "recommend",
    "urgency_score",
]


def __getattr__(name: str) -> Any:
    source = _SOURCES.get(name)
    if source is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(import_module(f"{__name__}.{source}"), name)
    globals()[name] = value
    return value
