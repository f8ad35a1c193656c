"""What the store recorded about one channel over a window, as plain records.

The what-if (:mod:`lnflow.policy.whatif`) and the measured effects
(:mod:`lnflow.policy.effects`) do their arithmetic on these; the store builds them
(:mod:`lnflow.store.policy_read`). Channel ids are unsigned SCIDs, times unix ns,
money integer msat.
"""

from __future__ import annotations

from dataclasses import dataclass

from lnflow.analysis.classify import FailureClass

__all__ = ["LocalFailure", "PolicyPoint", "SettledForward"]


@dataclass(frozen=True, slots=True)
class LocalFailure:
    """One local failure of a forward out of the channel (``forward_attempts``).

    ``resolved_ns`` is its LINK_FAIL time, the time the analysis counts it at;
    ``cluster_id`` its demand cluster (None: not clustered, e.g. no amount known).
    """

    attempt_id: int
    resolved_ns: int
    failure_class: FailureClass
    cluster_id: int | None
    incoming_chan_id: int
    incoming_amt_msat: int | None
    outgoing_amt_msat: int | None
    missed_fee_msat: int  # incoming − outgoing, floor 0; 0 when an amount is unknown


@dataclass(frozen=True, slots=True)
class SettledForward:
    """One settled forward of the ledger (``forwards``) through the channel."""

    timestamp_ns: int
    chan_id_in: int
    chan_id_out: int
    amt_in_msat: int
    amt_out_msat: int
    fee_msat: int


@dataclass(frozen=True, slots=True)
class PolicyPoint:
    """The channel as sampled at ``ts_ns``: our outbound policy and the local balance.

    Policy fields are None when the graph had no edge of ours at the time.
    """

    ts_ns: int
    local_balance_sat: int
    fee_base_msat: int | None
    fee_rate_ppm: int | None
    max_htlc_msat: int | None
