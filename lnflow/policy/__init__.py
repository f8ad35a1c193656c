"""Fee policy rules: charge-lnd's rule language plus lnflow's evidence (DESIGN §9).

Pure: :func:`load_rules` reads the policies file (and the files it names), the rest
works on records. :func:`evaluate` matches every channel against the rules and returns
one :class:`PolicyDecision` each; :func:`apply_guards` keeps the changes the guard rails
allow and refuses the others with a reason. Talking to lnd and the store is the
caller's business. The rule language as lnflow implements it: docs/policy.md.

Modules: ``rules`` (the file), ``model`` (the records), ``evaluate`` (matching and the
strategies), ``guards`` (the guard rails).
"""

from __future__ import annotations

from .evaluate import DEFAULT_MAX_FEE_STEP_PERCENT, PROPORTIONAL_MIN_FEE_PPM_DELTA, evaluate
from .guards import (
    INBOUND_FEES_SINCE,
    STATUS_SINCE,
    ChangeRecord,
    GuardedPlan,
    GuardSettings,
    Refusal,
    apply_guards,
    fee_deltas,
)
from .model import (
    ChannelActivity,
    ChannelState,
    EdgePolicy,
    PeerNode,
    PendingHtlc,
    PolicyChange,
    PolicyDecision,
)
from .rules import (
    CRITERIA,
    DEFAULT_SECTION,
    PROPERTIES,
    Criterion,
    CriterionValue,
    Properties,
    Rules,
    Section,
    Strategy,
    load_rules,
    parse_rules,
)

__all__ = [
    "CRITERIA",
    "DEFAULT_MAX_FEE_STEP_PERCENT",
    "DEFAULT_SECTION",
    "INBOUND_FEES_SINCE",
    "PROPERTIES",
    "PROPORTIONAL_MIN_FEE_PPM_DELTA",
    "STATUS_SINCE",
    "ChangeRecord",
    "ChannelActivity",
    "ChannelState",
    "Criterion",
    "CriterionValue",
    "EdgePolicy",
    "GuardSettings",
    "GuardedPlan",
    "PeerNode",
    "PendingHtlc",
    "PolicyChange",
    "PolicyDecision",
    "Properties",
    "Refusal",
    "Rules",
    "Section",
    "Strategy",
    "apply_guards",
    "evaluate",
    "fee_deltas",
    "load_rules",
    "parse_rules",
]
