"""The analysis contract: what the store hands in, what the analysis hands out.

Inputs are plain query results for one window ``[since_ns, until_ns)`` of
``hours`` hours; outputs are the ranked opportunities and the rebalance plan
(DESIGN §5). Everything is integer msat/sat; ratios are floats only where
DESIGN defines a ratio (failure rate, local ratio).
"""

from __future__ import annotations

import dataclasses
import enum
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, NamedTuple, Protocol, TypeVar

from lnflow.domain import MSAT_PER_SAT, FailureClass
from lnflow.kinds import Gap  # the status reader's gap record: one Gap for both

__all__ = [
    "INCOMING_CAP",
    "Action",
    "AmountRequest",
    "AnalysisInput",
    "AnalysisReport",
    "AnalysisSettings",
    "AnalysisSummary",
    "ChannelFailures",
    "ChannelState",
    "ClassStats",
    "Confidence",
    "DetailFacts",
    "DetailRequest",
    "FailureDetails",
    "FeePoint",
    "Gap",
    "InboundBaseline",
    "Opportunity",
    "RebalanceMove",
]


_Record = TypeVar("_Record")


def slot_init(cls: type[_Record]) -> type[_Record]:
    """Give frozen, slotted dataclass ``cls`` an ``__init__`` that stores each field through
    its slot, not through ``object.__setattr__``: the same instance, about twice as fast to
    build (figures: bench/README.md, "Figures (issue 13: 24 h, the Python around the SQL)").

    For the records an analysis builds one of per channel (thousands a window). Fields
    with a plain default keep it; ``cls`` may have no default factory and no
    ``__post_init__``. Apply it above ``@dataclass``.
    """
    if "__post_init__" in cls.__dict__:
        raise TypeError(f"{cls.__name__} has a __post_init__")
    namespace: dict[str, Any] = {}
    params = ["self"]
    body = []
    for f in dataclasses.fields(cls):  # type: ignore[arg-type]
        if f.default_factory is not dataclasses.MISSING:
            raise TypeError(f"{cls.__name__}.{f.name} has a default factory")
        namespace[f"_set_{f.name}"] = cls.__dict__[f.name].__set__
        if f.default is dataclasses.MISSING:
            params.append(f.name)
        else:
            namespace[f"_default_{f.name}"] = f.default
            params.append(f"{f.name}=_default_{f.name}")
        body.append(f"    _set_{f.name}(self, {f.name})\n")
    exec(f"def __init__({', '.join(params)}):\n{''.join(body)}", namespace)
    init = namespace["__init__"]
    init.__qualname__ = f"{cls.__qualname__}.__init__"
    init.__doc__ = cls.__init__.__doc__
    cls.__init__ = init  # type: ignore[method-assign]
    return cls


# ChannelFailures.incoming_channels counts distinct incoming channels up to this many:
# confidence only tells 1, 2 and "3 or more" apart, so the store keeps no more than that.
INCOMING_CAP = 3


class Action(enum.StrEnum):
    REBALANCE_OUTBOUND = "rebalance_outbound"
    REBALANCE_INBOUND = "rebalance_inbound"
    LOWER_FEES = "lower_fees"
    INCREASE_CAPACITY = "increase_capacity"
    RAISE_MAX_HTLC = "raise_max_htlc"
    INVESTIGATE = "investigate"


class Confidence(enum.StrEnum):
    LOW = "low"
    MEDIUM = "medium"
    HIGH = "high"


@dataclass(frozen=True, slots=True)
class AnalysisSettings:
    """Thresholds of DESIGN §5 (config section [analysis])."""

    min_failure_count: int = 3
    min_missed_sats: int = 100
    gossip_grace_h: int = 6
    min_fee_ppm: int = 1
    baseline_days: int = 14
    max_cost_share: float = 0.8
    inbound_ratio: float = 0.9  # rebalance_inbound: local ratio stayed at or above this
    source_ratio: float = 0.8  # rebalance plan: sources have at least this local ratio


# --------------------------------------------------------------------------- inputs


@slot_init
@dataclass(frozen=True, slots=True)
class FeePoint:
    """Our outbound fee policy as sampled at ``ts_ns``."""

    ts_ns: int
    fee_base_msat: int
    fee_rate_ppm: int


@slot_init
@dataclass(frozen=True, slots=True)
class ChannelState:
    """One of our channels (open, or closed within the window), from the samples."""

    chan_id: int
    peer_pubkey: str
    peer_alias: str
    capacity_sat: int
    local_balance_sat: int  # latest sample
    remote_balance_sat: int
    local_reserve_sat: int
    remote_reserve_sat: int
    active: bool
    closed: bool
    fee_base_msat: int | None  # our policy, latest sample (None: no edge known)
    fee_rate_ppm: int | None
    max_htlc_msat: int | None
    # lowest local ratio among the window's samples. None: no sample in the window, or not
    # read because the latest sample's ratio is below AnalysisSettings.inbound_ratio (so
    # the lowest is too). None never qualifies for rebalance_inbound.
    min_local_ratio: float | None
    # fraction of the window the peer was online (uptime/lifetime delta), None if unknown
    uptime_ratio: float | None = None
    # our inbound fee on the channel (lnd >= 0.18), latest sample: charged on top of the
    # outgoing channel's fee for HTLCs coming in over this one; usually negative (a
    # discount). None: not known (no policy, or sampled before lnflow recorded it)
    inbound_fee_base_msat: int | None = None
    inbound_fee_rate_ppm: int | None = None

    @property
    def usable_capacity_sat(self) -> int:
        return self.capacity_sat - self.local_reserve_sat - self.remote_reserve_sat

    @property
    def local_ratio(self) -> float | None:
        total = self.local_balance_sat + self.remote_balance_sat
        return self.local_balance_sat / total if total else None


class ClassStats(NamedTuple):
    """A channel's failures of one class and their missed fee.

    A named tuple, not a frozen dataclass: the store builds one per channel and class
    (thousands a window), and a tuple is made in a fraction of the time."""

    failures: int
    missed_msat: int  # raw (not deduplicated)


@slot_init
@dataclass(frozen=True, slots=True)
class ChannelFailures:
    """Local failures whose outgoing channel is this one, in the window (from rollups)."""

    chan_id: int
    failures: int
    clusters: int
    missed_raw_msat: int
    missed_dedup_msat: int
    # distinct incoming channels among the failures, up to INCOMING_CAP (more count as it)
    incoming_channels: int
    first_failure_ns: int
    last_failure_ns: int
    by_class: Mapping[FailureClass, ClassStats]


class FailureDetails(Protocol):
    """Raw facts, fetched only for the channels whose recommendation needs them.

    Values come in no particular order: the analysis sorts what it needs sorted. Amounts
    come as percentiles, so a store can rank them where they are (a month of a busy
    node's failures is millions of values).
    """

    def amount_percentiles(
        self, chan_id: int, cls: FailureClass, percents: Sequence[int]
    ) -> Sequence[int]:
        """Nearest-rank percentiles of the outgoing amounts of the channel's local failures
        of this class (those with a known amount), one per percent (0 < p <= 100); empty
        when no amount is known.

        The nearest rank of p among n values is the ⌈p·n/100⌉-th smallest (the first for
        p·n < 100), as :func:`lnflow.analysis.opportunities.percentile`.
        """
        ...

    def fee_offers(self, chan_id: int) -> Sequence[tuple[int, int, int]]:
        """(missed fee msat, outgoing amount msat, incoming channel id) of its
        FEE_INSUFFICIENT failures (the incoming channel 0 when not known)."""
        ...

    def fee_history(self, chan_id: int) -> Sequence[FeePoint]:
        """Our fee policy on the channel from (since − gossip_grace_h) to until.

        The policy in force at the start (its last sample at or before it, else the first
        after it), then every sample whose policy differs from the one before, each at
        the time it was first seen: every rise of our ppm shows with its time.
        """
        ...


@slot_init
@dataclass(frozen=True, slots=True)
class InboundBaseline:
    """Fees of forwards that came IN via a channel (for ``rebalance_inbound``)."""

    chan_id: int
    baseline_fees_msat: int  # during the baseline_days before the window
    window_fees_msat: int  # during the window


@dataclass(frozen=True, slots=True)
class AnalysisSummary:
    """The window's figures, read from the store in one go: what :func:`~lnflow.analysis.plan`
    looks at to ask for details, and what :func:`~lnflow.analysis.decide` ranks."""

    since_ns: int
    until_ns: int
    hours: int
    channels: Mapping[int, ChannelState]
    failures: Mapping[int, ChannelFailures]  # only channels with local failures
    successes: Mapping[int, int]  # settled forwards OUT of the channel (ledger), in the window
    inbound: Mapping[int, InboundBaseline]
    gaps: tuple[Gap, ...] = ()
    # node totals: every local failure in the window, foreign SCIDs included; missed fees
    # deduplicated (demand clusters) and raw
    node_failures: int = 0
    node_missed_msat: int = 0
    # local failures lnd gave no amount for (missed fee unknown, counted as 0 above), by
    # outgoing channel (0: none), and HTLCs an interceptor rejected (no missed fee)
    unknown_amount: Mapping[int, int] = field(default_factory=dict)
    node_rejected: int = 0
    node_missed_raw_msat: int = 0
    #: ns of the window an HTLC stream was connected (None: not known)
    observed_ns: int | None = None


@slot_init
@dataclass(frozen=True, slots=True)
class AmountRequest:
    """Nearest-rank ``percents`` of the failed amounts of one channel and class.

    ``failures`` is the channel's count of failures of the class in the window: it has at
    most that many known amounts (a store may pick how to rank them by it).
    """

    chan_id: int
    failure_class: FailureClass
    percents: tuple[int, ...]
    failures: int


@dataclass(frozen=True, slots=True)
class DetailRequest:
    """Exactly the raw facts the recommendations of one window will use.

    Amounts are those of failures resolved in ``[since_ns, until_ns)``; fee offers too;
    our fee history runs from ``history_from_ns`` to ``until_ns``.
    """

    since_ns: int
    until_ns: int
    history_from_ns: int
    amounts: tuple[AmountRequest, ...] = ()
    fee_channels: tuple[int, ...] = ()  # their fee offers and our fee history


@dataclass(frozen=True, slots=True)
class DetailFacts:
    """The answers to a :class:`DetailRequest`, as plain records (a :class:`FailureDetails`).

    Asking for something that was not requested is a bug of the plan: it raises KeyError.
    """

    percentiles: Mapping[tuple[int, FailureClass], Mapping[int, int]] = field(
        default_factory=dict
    )  # (channel, class) -> percent -> amount msat; empty when no amount is known
    offers: Mapping[int, tuple[tuple[int, int, int], ...]] = field(default_factory=dict)
    fee_histories: Mapping[int, tuple[FeePoint, ...]] = field(default_factory=dict)

    def amount_percentiles(
        self, chan_id: int, cls: FailureClass, percents: Sequence[int]
    ) -> Sequence[int]:
        ranked = self.percentiles[(chan_id, cls)]
        return tuple([ranked[p] for p in percents]) if ranked else ()

    def fee_offers(self, chan_id: int) -> Sequence[tuple[int, int, int]]:
        return self.offers[chan_id]

    def fee_history(self, chan_id: int) -> Sequence[FeePoint]:
        return self.fee_histories[chan_id]


@dataclass(frozen=True, slots=True)
class AnalysisInput:
    since_ns: int
    until_ns: int
    hours: int
    channels: Mapping[int, ChannelState]
    failures: Mapping[int, ChannelFailures]  # only channels with local failures
    successes: Mapping[int, int]  # settled forwards OUT of the channel (ledger), in the window
    inbound: Mapping[int, InboundBaseline]
    details: FailureDetails
    gaps: tuple[Gap, ...] = ()
    # node totals: every local failure in the window, foreign SCIDs included; missed fees
    # deduplicated (demand clusters) and raw
    node_failures: int = 0
    node_missed_msat: int = 0
    # local failures lnd gave no amount for (missed fee unknown, counted as 0 above), by
    # outgoing channel (0: none), and HTLCs an interceptor rejected (no missed fee)
    unknown_amount: Mapping[int, int] = field(default_factory=dict)
    node_rejected: int = 0
    node_missed_raw_msat: int = 0
    #: ns of the window an HTLC stream was connected (None: not known)
    observed_ns: int | None = None


# --------------------------------------------------------------------------- outputs


@slot_init
@dataclass(frozen=True, slots=True)
class Opportunity:
    rank: int
    channel_id: int
    peer_pubkey: str
    peer_alias: str
    failures: int
    clusters: int
    successes: int
    failure_rate: float
    missed_msat: int  # deduplicated
    missed_raw_msat: int
    potential_monthly_msat: int
    urgency_score: int
    confidence: Confidence
    recommended_action: Action
    reason: str
    estimated: bool
    by_class: Mapping[FailureClass, ClassStats]
    capacity_sat: int
    local_balance_sat: int
    outbound_fee_ppm: int | None
    suggested_fee_ppm: int | None = None
    suggested_amount_sat: int | None = None
    suggested_max_htlc_msat: int | None = None

    @property
    def missed_sats(self) -> float:
        return self.missed_msat / MSAT_PER_SAT

    @property
    def potential_monthly_sats(self) -> float:
        return self.potential_monthly_msat / MSAT_PER_SAT


@dataclass(frozen=True, slots=True)
class RebalanceMove:
    target_channel_id: int
    source_channel_ids: tuple[int, ...]
    amount_sat: int
    max_cost_ppm: int  # the most the rebalance may cost to pay back


@dataclass(frozen=True, slots=True)
class AnalysisReport:
    since_ns: int
    until_ns: int
    hours: int
    generated_ns: int
    opportunities: tuple[Opportunity, ...]
    rebalance_plan: tuple[RebalanceMove, ...]
    gaps: tuple[Gap, ...] = ()
    node_failures: int = 0
    node_missed_msat: int = 0  # deduplicated
    node_missed_raw_msat: int = 0
    node_unknown_amount: int = 0  # of node_failures: missed fee unknown (not in the sums)
    node_rejected: int = 0  # HTLCs an interceptor rejected: no local failure, no missed fee
    #: ns of the window an HTLC stream was connected (None: not known, e.g. older files)
    observed_ns: int | None = None

    @property
    def observed_share(self) -> float | None:
        """The observed part of the window, 0..1 (None when not known)."""
        span = self.until_ns - self.since_ns
        if self.observed_ns is None or span <= 0:
            return None
        return min(1.0, self.observed_ns / span)
