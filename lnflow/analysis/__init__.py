"""Pure analysis over domain records: no I/O, no clocks (time is passed in)."""

from .classify import FailureClass, classify, missed_fee_msat
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
