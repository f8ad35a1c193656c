"""The policy engine's records: what evaluation reads per channel, and what it decides.

Fetch, then decide: the caller gathers one :class:`ChannelState` per channel (lnd's
channel list and both policies, the ledger's activity over the periods the rules ask for,
the latest snapshot's opportunity) and hands them in; nothing here reads a clock, a
store or lnd. Amounts are integers with their unit in the name.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from fractions import Fraction

from lnflow.analysis.model import Opportunity

from .rules import Strategy

__all__ = [
    "ChannelActivity",
    "ChannelState",
    "EdgePolicy",
    "PeerNode",
    "PendingHtlc",
    "PolicyChange",
    "PolicyDecision",
]

BLOCK_S = 600  # charge-lnd's estimate of a channel's age in seconds: 10 minutes a block


@dataclass(frozen=True, slots=True)
class EdgePolicy:
    """One direction's routing policy (lnd's RoutingPolicy, inbound fee included)."""

    fee_base_msat: int
    fee_rate_ppm: int
    time_lock_delta: int
    min_htlc_msat: int
    max_htlc_msat: int
    disabled: bool = False
    inbound_fee_base_msat: int = 0
    inbound_fee_rate_ppm: int = 0


@dataclass(frozen=True, slots=True)
class PendingHtlc:
    incoming: bool
    amount_sat: int
    expiration_height: int


@dataclass(frozen=True, slots=True)
class ChannelActivity:
    """Settled forwards through one channel over one period (the forwards ledger)."""

    htlcs_in: int = 0  # forwards that came in via the channel
    htlcs_out: int = 0  # forwards that went out via it
    sats_in: int = 0  # their incoming amounts
    sats_out: int = 0  # their outgoing amounts
    fees_out_msat: int = 0  # fees earned on the forwards out of it


@dataclass(frozen=True, slots=True)
class PeerNode:
    """The peer as the graph knows it (GetNodeInfo)."""

    num_channels: int
    total_capacity_sat: int


@dataclass(frozen=True, slots=True)
class ChannelState:
    """Everything the rules may ask about one of our channels."""

    chan_id: int
    peer_pubkey: str
    capacity_sat: int
    local_balance_sat: int  # settled, as ListChannels reports it
    remote_balance_sat: int
    initiator: bool
    private: bool
    active: bool
    ours: EdgePolicy | None  # None: lnd knows no edge (the channel is then left alone)
    peer: EdgePolicy | None
    commit_fee_sat: int = 0  # paid by the initiator, counted in its balance
    pending_htlcs: tuple[PendingHtlc, ...] = ()
    funding_height: int | None = None  # None: the block of the SCID
    min_htlc_floor_msat: int = 0  # local constraint: lnd refuses a lower min_htlc
    max_htlc_ceiling_msat: int | None = None  # local constraint: max pending amount
    peer_node: PeerNode | None = None
    # ledger activity per period in seconds, for every period of Rules.activity_periods_s
    activity: Mapping[int, ChannelActivity] = field(default_factory=dict)
    opportunity: Opportunity | None = None  # the channel's row of the latest snapshot
    stream_gap_s: int = 0  # longest stream gap inside the latest analysis window

    @property
    def local_total_sat(self) -> int:
        """Our side with our outgoing pending HTLCs and, if we opened, the commit fee."""
        pending = sum(h.amount_sat for h in self.pending_htlcs if not h.incoming)
        return self.local_balance_sat + pending + (self.commit_fee_sat if self.initiator else 0)

    @property
    def remote_total_sat(self) -> int:
        pending = sum(h.amount_sat for h in self.pending_htlcs if h.incoming)
        return self.remote_balance_sat + pending + (0 if self.initiator else self.commit_fee_sat)

    @property
    def ratio(self) -> Fraction | None:
        """local / (local + remote) with the totals above; None for an empty channel."""
        total = self.local_total_sat + self.remote_total_sat
        return Fraction(self.local_total_sat, total) if total else None

    def age_blocks(self, block_height: int) -> int:
        height = self.funding_height if self.funding_height is not None else self.chan_id >> 40
        return block_height - height


@dataclass(frozen=True, slots=True)
class PolicyChange:
    """The fields a decision changes; None: left as it is."""

    base_fee_msat: int | None = None
    fee_ppm: int | None = None
    min_htlc_msat: int | None = None
    max_htlc_msat: int | None = None
    time_lock_delta: int | None = None
    inbound_base_fee_msat: int | None = None
    inbound_fee_ppm: int | None = None
    disabled: bool | None = None

    @property
    def empty(self) -> bool:
        return all(getattr(self, f.name) is None for f in fields(self))

    @property
    def inbound(self) -> bool:
        return self.inbound_base_fee_msat is not None or self.inbound_fee_ppm is not None

    def describe(self, before: EdgePolicy) -> str:
        """``fee_ppm 200 → 150, max_htlc_msat 1000 → 5000``; ``no change`` when empty."""
        olds = {
            "base_fee_msat": before.fee_base_msat,
            "fee_ppm": before.fee_rate_ppm,
            "min_htlc_msat": before.min_htlc_msat,
            "max_htlc_msat": before.max_htlc_msat,
            "time_lock_delta": before.time_lock_delta,
            "inbound_base_fee_msat": before.inbound_fee_base_msat,
            "inbound_fee_ppm": before.inbound_fee_rate_ppm,
        }
        parts = [
            f"{name} {olds[name]} → {getattr(self, name)}"
            for name in olds
            if getattr(self, name) is not None
        ]
        if self.disabled is not None:
            parts.append("disable" if self.disabled else "enable")
        return ", ".join(parts) or "no change"


@dataclass(frozen=True, slots=True)
class PolicyDecision:
    """What the rules decide for one channel, before the guard rails."""

    chan_id: int
    peer_pubkey: str
    sections: tuple[str, ...]  # matched, top to bottom (non-final ones, then the final one)
    strategy: Strategy | None  # None: no section matched and there is no [default]
    before: EdgePolicy | None
    change: PolicyChange
    reason: str  # one line: the sections, the strategy, the numbers
    min_fee_ppm: int | None = None  # the bounds in force for the final section
    max_fee_ppm: int | None = None
    urgency: int = 0  # of the latest snapshot's opportunity: busier channels go first
    stream_gap_s: int = 0

    @property
    def changed(self) -> bool:
        return not self.change.empty
