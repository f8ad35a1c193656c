"""Missed routing opportunities per outgoing channel (DESIGN §5).

:func:`analyze` turns one window's query results (:class:`AnalysisInput`) into
the ranked opportunities and the rebalance plan. It is pure: no I/O, no clock
(``generated_ns`` is passed in), and the same input gives the same report.

Conventions, so every figure can be reproduced by hand:

===========================  ==============================================================
figure                       rule
===========================  ==============================================================
failure_rate                 failures / (failures + successes); 0 when there were no attempts
missed_msat                  the deduplicated (demand cluster) figure; it drives urgency
potential_monthly_msat       missed_msat × 720 / hours, rounded half up (integer msat)
urgency_score                min(40, missed_sats/1000·4) + min(30, failures/10·30)
                             + failure_rate·30, computed exactly, rounded half up, 0–100
percentiles                  nearest rank: the smallest value with at least p % of the
                             values at or below it (the median is p50)
dominance                    a class dominates at ≥ 50 % of the channel's raw missed fee
                             (exactly 50 % counts), by failure count when nothing was missed
amounts to open or move      msat → sat rounded up; capacity / 2 rounded up
amounts a source can give    local − (local + remote) / 2 rounded down
suggested fee ppm            ⌈0.7 × current⌉; offered ppm floors ((fee − base) × 10⁶ / amount)
inbound fee (lnd ≥ 0.18)     offered ppm floors ((fee − inbound fee − base) × 10⁶ / amount),
                             the incoming channel's inbound fee as lnd computes it
                             (:func:`inbound_fee_msat`) on amount + our outbound fee
max_cost_ppm                 ⌊target's fee ppm × max_cost_share⌋ (share read as its decimal)
rebalance_inbound missed     baseline_fees × hours // (baseline_days × 24) − window fees,
                             floor 0 (integer msat, the pace rounded down)
===========================  ==============================================================

Recommendation table (the dominant class, see :func:`dominant_class`)::

    liquidity ≥ 50 %, median failed amount > usable capacity  increase_capacity  p90 amount
    liquidity ≥ 50 % otherwise                                 rebalance_outbound
        max(p90 amount, capacity / 2) − local balance, floor 0
    max_htlc ≥ 50 %, our max_htlc < usable capacity            raise_max_htlc
        min(usable capacity, p90 amount) msat
    max_htlc ≥ 50 % otherwise                                  increase_capacity  p90 amount
    fee ≥ 50 %, our ppm rose in [first failure − grace, last failure]  investigate
    fee ≥ 50 % otherwise                                       lower_fees
        max(median offered ppm, ⌈0.7 × current ppm⌉, min_fee_ppm), only when that is
        below the current ppm; else investigate (the rate is at the floor already)
    availability ≥ 50 %                                        investigate (peer/uptime)
    anything else                                              investigate (class mix)

Choices the table leaves open:

* ``rebalance_inbound`` is considered for every channel without a regular
  opportunity; its ``missed_msat`` and ``missed_raw_msat`` are the estimate, its
  failures, clusters, successes, failure rate and classes the channel's own figures of
  the window (local failures below the reporting thresholds), and its urgency follows
  the formula from them; its confidence is low (an estimate).
* A channel gets one opportunity. When a channel qualifies both for a regular
  opportunity (reported failures) and for ``rebalance_inbound``, the regular
  one is kept: it is measured, the estimate is not.
* ``rebalance_inbound`` is never suggested for a closed channel; a regular
  opportunity on a channel closed within the window is still reported (the
  revenue was missed) and says so in its reason, but is left out of the plan.
* An unknown ``max_htlc`` is not known to be below the usable capacity, so a
  dominant max_htlc class then recommends ``increase_capacity``.
* Without failed amounts (details pruned) the liquidity rule compares nothing
  and rebalances to capacity / 2; raise_max_htlc suggests the usable capacity;
  increase_capacity carries no size.
* The rebalance plan never drains one ``rebalance_outbound`` target into
  another, and lists no move for a target no source could cover.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, replace
from fractions import Fraction
from functools import partial
from itertools import pairwise
from operator import itemgetter

from lnflow.domain import MSAT_PER_SAT, sats_text

from .classify import FailureClass
from .model import (
    Action,
    AnalysisInput,
    AnalysisReport,
    AnalysisSettings,
    ChannelFailures,
    ChannelState,
    ClassStats,
    Confidence,
    FailureDetails,
    FeePoint,
    InboundBaseline,
    Opportunity,
    RebalanceMove,
    slot_init,
)
from .ranks import nearest_rank, percentile

__all__ = [
    "AMOUNT_PERCENTS",
    "Recommendation",
    "analyze",
    "confidence",
    "deciding_class",
    "dominant_class",
    "inbound_fee_msat",
    "percentile",
    "rebalance_plan",
    "recommend",
    "reported",
    "urgency_score",
]

_PPM = 1_000_000
_NS_PER_HOUR = 3_600 * 1_000_000_000
_HOURS_PER_MONTH = 720  # 30 days, as the seed's "Potential/Month"
_REVENUE_CAP = 40
_FREQUENCY_CAP = 30
_RATE_WEIGHT = 30
# urgency's revenue score is missed_sats / 1000 · 4 = missed_msat / 250 000
_MSAT_PER_REVENUE_POINT = 250_000
_REVENUE_CAP_MSAT = _REVENUE_CAP * _MSAT_PER_REVENUE_POINT

#: the percentiles of the failed amounts :func:`recommend` weighs, by deciding class
AMOUNT_PERCENTS: Mapping[FailureClass, tuple[int, ...]] = {
    FailureClass.LIQUIDITY: (50, 90),
    FailureClass.MAX_HTLC: (90,),
}


# --------------------------------------------------------------------------- arithmetic


def _div_half_up(num: int, den: int) -> int:
    """``num / den`` rounded half up, ``den > 0``."""
    return (2 * num + den) // (2 * den)


def _ceil_div(num: int, den: int) -> int:
    return -(-num // den)


def _sat_up(msat: int) -> int:
    """An amount to open or move: msat to sat, rounded up."""
    return _ceil_div(msat, MSAT_PER_SAT)


def _clamp(value: int, low: int, high: int) -> int:
    return max(low, min(high, value))


def _monthly_msat(missed_msat: int, hours: int) -> int:
    return _div_half_up(missed_msat * _HOURS_PER_MONTH, hours)


def _fmt_sats(msat: int) -> str:
    """``1234567`` msat → ``"1,234.567 sats"``; whole sats print without decimals."""
    return f"{sats_text(msat)} sats"


def _percent(part: int, whole: int) -> int:
    """Display percentage, rounded down so that 49.99 % never shows as 50 %."""
    return part * 100 // whole if whole > 0 else 0


# --------------------------------------------------------------------------- helpers


def urgency_score(
    missed_sats: float | Fraction, failures: int, failure_rate: float | Fraction
) -> int:
    """The seed's urgency, 0–100, rounded half up with exact arithmetic.

    ``min(40, missed_sats/1000·4) + min(30, failures/10·30) + failure_rate·30``.
    Floats are taken at their exact binary value; pass :class:`Fraction` for
    ratios such as 1/60 whose ties must round exactly (:func:`analyze` does).
    """
    revenue = min(Fraction(_REVENUE_CAP), Fraction(missed_sats) * 4 / 1000)
    frequency = min(_FREQUENCY_CAP, 3 * failures)
    rate = Fraction(failure_rate) * _RATE_WEIGHT
    return _clamp(math.floor(revenue + frequency + rate + Fraction(1, 2)), 0, 100)


def _urgency(missed_msat: int, failures: int, successes: int) -> int:
    """:func:`urgency_score` from the integer inputs, in integer arithmetic (fast, exact)."""
    # (min, _clamp and _div_half_up written out: this runs for every reported channel)
    attempts = failures + successes
    scale = attempts if attempts > 0 else 1
    den = _MSAT_PER_REVENUE_POINT * scale
    revenue = missed_msat if missed_msat < _REVENUE_CAP_MSAT else _REVENUE_CAP_MSAT
    frequency = 3 * failures if 3 * failures < _FREQUENCY_CAP else _FREQUENCY_CAP
    num = (
        revenue * scale
        + frequency * den
        + (_RATE_WEIGHT * failures * _MSAT_PER_REVENUE_POINT if attempts > 0 else 0)
    )
    score = (2 * num + den) // (2 * den)
    return 0 if score < 0 else 100 if score > 100 else score


def confidence(clusters: int, incoming_channels: int) -> Confidence:
    """Low below 3 clusters or from a single incoming channel; high from ≥ 10 and ≥ 3."""
    if clusters < 3 or incoming_channels <= 1:
        return Confidence.LOW
    if clusters >= 10 and incoming_channels >= 3:
        return Confidence.HIGH
    return Confidence.MEDIUM


def dominant_class(by_class: Mapping[FailureClass, ClassStats]) -> FailureClass | None:
    """The class with the largest raw missed fee; ties: more failures, then the lower class.

    None when no class has a failure or a missed fee.
    """
    best: int | None = None
    best_missed = best_failures = 0
    for cls, stats in by_class.items():
        missed, failures = stats.missed_msat, stats.failures
        if failures <= 0 and missed <= 0:
            continue
        # the key (missed, failures, -class), compared field by field
        if (
            best is None
            or missed > best_missed
            or (
                missed == best_missed
                and (failures > best_failures or (failures == best_failures and cls < best))
            )
        ):
            best, best_missed, best_failures = cls, missed, failures
    if best is None or type(best) is FailureClass:
        return best
    return FailureClass(best)


def _share(failures: ChannelFailures, cls: FailureClass) -> tuple[int, int]:
    """(part, whole) the 50 % rule weighs a class by: its raw missed fee of the channel's,
    or, when nothing was missed in fees, its failures of the channel's."""
    stats = failures.by_class[cls]
    if failures.missed_raw_msat > 0:
        return stats.missed_msat, failures.missed_raw_msat
    return stats.failures, failures.failures


def deciding_class(failures: ChannelFailures) -> FailureClass | None:
    """The dominant class if it reaches 50 % (its rule decides :func:`recommend`), else None.

    Only then does :func:`recommend` ask the details about the channel: what
    :func:`lnflow.analysis.steps.plan` requests.
    """
    cls = dominant_class(failures.by_class)
    if cls is None:
        return None
    part, whole = _share(failures, cls)
    return cls if whole > 0 and 2 * part >= whole else None


# --------------------------------------------------------------------------- recommendation


@slot_init
@dataclass(frozen=True, slots=True)
class Recommendation:
    """What :func:`recommend` says for one channel; ``reason`` is one line."""

    action: Action
    reason: str
    suggested_fee_ppm: int | None = None
    suggested_amount_sat: int | None = None
    suggested_max_htlc_msat: int | None = None


def _class_mix(by_class: Mapping[FailureClass, ClassStats], missed_raw_msat: int) -> str:
    parts = []
    for cls in sorted(by_class):
        stats = by_class[cls]
        if stats.failures <= 0 and stats.missed_msat <= 0:
            continue
        share = f"{_percent(stats.missed_msat, missed_raw_msat)}% " if missed_raw_msat else ""
        parts.append(
            f"{FailureClass(cls).label} {share}({_plural(stats.failures, 'failure')}, "
            f"{_fmt_sats(stats.missed_msat)})"
        )
    return ", ".join(parts) if parts else "no classified failures"


def _fee_rise(
    history: Sequence[FeePoint], from_ns: int, to_ns: int
) -> tuple[FeePoint, FeePoint] | None:
    """The last rise of our ppm whose later point's ts is in ``[from_ns, to_ns]``."""
    points = sorted(history, key=lambda point: point.ts_ns)
    found = None
    for before, after in pairwise(points):
        if after.fee_rate_ppm > before.fee_rate_ppm and from_ns <= after.ts_ns <= to_ns:
            found = (before, after)
    return found


def _offered_ppm(fee_msat: int, amount_msat: int, base_msat: int) -> int:
    return max(0, (fee_msat - base_msat) * _PPM // amount_msat)


# lnd caps an inbound fee rate at ±10 × 10⁶ ppm (graph/db/models/inbound_fee.go)
_MAX_INBOUND_PPM = 10 * _PPM


def inbound_fee_msat(base_msat: int, rate_ppm: int, amount_msat: int) -> int:
    """The inbound fee lnd (≥ 0.18) adds to an HTLC's required fee, as link.go does.

    ``base + rate × amount / 10⁶`` on the outgoing amount plus the outgoing channel's
    fee, the rate capped at ±10⁷ ppm and the product truncated toward zero (Go's
    integer division: a negative fee rounds up). Usually negative: a discount.
    """
    rate = max(-_MAX_INBOUND_PPM, min(_MAX_INBOUND_PPM, rate_ppm))
    product = rate * amount_msat
    share = product // _PPM if product >= 0 else -(-product // _PPM)
    return base_msat + share


@dataclass(frozen=True, slots=True)
class _Offers:
    """A channel's fee offers against our policy and the incoming channels' inbound fees."""

    offered_ppm: tuple[int, ...]  # sorted
    via_inbound: int  # offers that came in over a channel with a non-zero inbound fee
    inbound_short: int  # ... of them, those that met our outbound fee alone


def _fee_offers(
    offers: Sequence[tuple[int, int, int]],
    channel: ChannelState,
    channels: Mapping[int, ChannelState],
) -> _Offers:
    """Offered ppm of each FEE_INSUFFICIENT failure (DESIGN §5), with both policies.

    lnd requires ``outbound fee(amount) + inbound fee(amount + outbound fee)`` (link.go
    CheckHtlcForward): the part of an offer left for our outbound policy is the offer
    minus the incoming channel's inbound fee, so the offered ppm is
    ``(fee − inbound fee − our base) × 10⁶ / amount``. An offer that met our outbound
    fee alone was short on the inbound fee.
    """
    base = channel.fee_base_msat or 0
    current = channel.fee_rate_ppm
    offered = []
    via_inbound = inbound_short = 0
    for fee, amount, incoming in offers:
        if amount <= 0:
            continue
        source = channels.get(incoming)
        in_base = source.inbound_fee_base_msat if source is not None else None
        in_ppm = source.inbound_fee_rate_ppm if source is not None else None
        if not in_base and not in_ppm:
            offered.append(_offered_ppm(fee, amount, base))
            continue
        out_fee = base + amount * current // _PPM if current is not None else None
        in_fee = inbound_fee_msat(
            in_base or 0, in_ppm or 0, amount + (out_fee if out_fee is not None else fee)
        )
        via_inbound += 1
        if out_fee is not None and fee >= out_fee:
            inbound_short += 1
        offered.append(_offered_ppm(fee - in_fee, amount, base))
    return _Offers(tuple(sorted(offered)), via_inbound, inbound_short)


def _recommend_liquidity(
    channel: ChannelState, details: FailureDetails, head: str
) -> Recommendation:
    ranked = details.amount_percentiles(
        channel.chan_id, FailureClass.LIQUIDITY, AMOUNT_PERCENTS[FailureClass.LIQUIDITY]
    )
    usable_sat = channel.usable_capacity_sat
    balance = f"local balance {channel.local_balance_sat:,} of {channel.capacity_sat:,} sats"
    if not ranked:
        target_sat = _ceil_div(channel.capacity_sat, 2)
        amount = max(0, target_sat - channel.local_balance_sat)
        return Recommendation(
            Action.REBALANCE_OUTBOUND,
            f"{head}; {balance}; failed amounts unknown; move in {amount:,} sats "
            "to reach half the capacity",
            suggested_amount_sat=amount,
        )
    median, p90 = ranked
    if median > usable_sat * MSAT_PER_SAT:
        size = _sat_up(p90)
        return Recommendation(
            Action.INCREASE_CAPACITY,
            f"{head}; median failed amount {_fmt_sats(median)} exceeds usable capacity "
            f"{usable_sat:,} sats; open a {size:,} sat channel (p90 failed amount)",
            suggested_amount_sat=size,
        )
    target_sat = max(_sat_up(p90), _ceil_div(channel.capacity_sat, 2))
    amount = max(0, target_sat - channel.local_balance_sat)
    return Recommendation(
        Action.REBALANCE_OUTBOUND,
        f"{head}; {balance}; p90 failed amount {_fmt_sats(p90)}; move in {amount:,} sats",
        suggested_amount_sat=amount,
    )


def _recommend_max_htlc(
    channel: ChannelState, details: FailureDetails, head: str
) -> Recommendation:
    ranked = details.amount_percentiles(
        channel.chan_id, FailureClass.MAX_HTLC, AMOUNT_PERCENTS[FailureClass.MAX_HTLC]
    )
    p90 = ranked[0] if ranked else None
    usable_msat = channel.usable_capacity_sat * MSAT_PER_SAT
    p90_text = f"p90 failed amount {_fmt_sats(p90)}" if p90 is not None else "amounts unknown"
    ours = channel.max_htlc_msat
    if ours is not None and ours < usable_msat:
        suggested = min(usable_msat, p90) if p90 is not None else usable_msat
        return Recommendation(
            Action.RAISE_MAX_HTLC,
            f"{head}; max_htlc {_fmt_sats(ours)} below usable capacity "
            f"{_fmt_sats(usable_msat)}; {p90_text}; raise max_htlc to {_fmt_sats(suggested)}",
            suggested_max_htlc_msat=suggested,
        )
    ours_text = f"max_htlc {_fmt_sats(ours)}" if ours is not None else "max_htlc unknown"
    size = _sat_up(p90) if p90 is not None else None
    open_text = f"open a {size:,} sat channel" if size is not None else "open a larger channel"
    return Recommendation(
        Action.INCREASE_CAPACITY,
        f"{head}; {ours_text}, usable capacity {_fmt_sats(usable_msat)}; {p90_text}; {open_text}",
        suggested_amount_sat=size,
    )


def _recommend_fee(
    channel: ChannelState,
    failures: ChannelFailures,
    details: FailureDetails,
    settings: AnalysisSettings,
    head: str,
    channels: Mapping[int, ChannelState],
) -> Recommendation:
    grace_ns = settings.gossip_grace_h * _NS_PER_HOUR
    rise = _fee_rise(
        details.fee_history(channel.chan_id),
        failures.first_failure_ns - grace_ns,
        failures.last_failure_ns,
    )
    if rise is not None:
        before, after = rise
        return Recommendation(
            Action.INVESTIGATE,
            f"{head}; recent fee increase still propagating: {before.fee_rate_ppm} → "
            f"{after.fee_rate_ppm} ppm within {settings.gossip_grace_h} h before the failures",
        )
    base = channel.fee_base_msat or 0
    offers = _fee_offers(details.fee_offers(channel.chan_id), channel, channels)
    offered = offers.offered_ppm
    median = offered[nearest_rank(len(offered), 50) - 1] if offered else None
    current = channel.fee_rate_ppm
    floor_07 = _ceil_div(7 * current, 10) if current is not None else None
    suggested = max(v for v in (median, floor_07, settings.min_fee_ppm) if v is not None)
    median_text = f"median offered {median} ppm" if median is not None else "offers unknown"
    current_text = (
        f"our {current} ppm (base {base:,} msat)" if current is not None else "our fee unknown"
    )
    if offers.via_inbound:
        # which policy was short: lnd names the outgoing channel either way
        outbound_short = offers.via_inbound - offers.inbound_short
        current_text += (
            f"; {offers.via_inbound} of {_plural(len(offered), 'offer')} came in over a "
            f"channel with an inbound fee (counted in the offered ppm): "
            f"{offers.inbound_short} short on that inbound fee (our outbound fee was met), "
            f"{outbound_short} short on our outbound fee"
        )
    if current is None or suggested >= current:
        # lowering the rate cannot reach the senders: it is at the floor already
        return Recommendation(
            Action.INVESTIGATE,
            f"{head}; {median_text} vs {current_text}; fee rate already at the floor "
            f"({suggested} ppm): the base fee or the sender is the problem",
        )
    return Recommendation(
        Action.LOWER_FEES,
        f"{head}; {median_text} vs {current_text}; lower to {suggested} ppm",
        suggested_fee_ppm=suggested,
    )


def recommend(
    channel: ChannelState,
    failures: ChannelFailures,
    details: FailureDetails,
    settings: AnalysisSettings,
    *,
    channels: Mapping[int, ChannelState] | None = None,
) -> Recommendation:
    """The action for a channel with local failures, from its dominant class (DESIGN §5).

    ``channels`` (ours, by id) give the incoming channels' inbound fees, which count in
    the offered ppm of a fee failure that came in over one of them.

    ``details`` is asked for failed amounts (liquidity, max_htlc) or our fee history
    and the fee offers (fee) only when that class dominates.
    """
    cls = dominant_class(failures.by_class)
    if cls is None:
        return Recommendation(Action.INVESTIGATE, "no classified failures")
    part, whole = _share(failures, cls)
    if failures.missed_raw_msat > 0:
        head = (
            f"{_percent(part, whole)}% of missed fees ({_fmt_sats(part)}) were {cls.label} failures"
        )
    else:
        # Nothing was missed in fees (amounts unknown or zero-fee forwards): weigh
        # the classes by their failure counts instead.
        head = (
            f"{_percent(part, whole)}% of failures ({part} of {whole}, no missed fee) were "
            f"{cls.label} failures"
        )
    if whole <= 0 or 2 * part < whole:
        mix = _class_mix(failures.by_class, failures.missed_raw_msat)
        return Recommendation(Action.INVESTIGATE, f"no class reaches 50%: {mix}")
    if cls is FailureClass.LIQUIDITY:
        return _recommend_liquidity(channel, details, head)
    if cls is FailureClass.MAX_HTLC:
        return _recommend_max_htlc(channel, details, head)
    if cls is FailureClass.FEE:
        return _recommend_fee(channel, failures, details, settings, head, channels or {})
    if cls is FailureClass.AVAILABILITY:
        facts = ["peer offline or channel disabled"]
        if channel.uptime_ratio is not None:
            facts.append(f"peer online {channel.uptime_ratio:.0%} of the window")
        if not channel.active:
            facts.append("channel inactive now")
        return Recommendation(Action.INVESTIGATE, f"{head}: {'; '.join(facts)}")
    mix = _class_mix(failures.by_class, failures.missed_raw_msat)
    return Recommendation(Action.INVESTIGATE, f"{head}; failure mix: {mix}")


# --------------------------------------------------------------------------- opportunities


def _regular(
    channel: ChannelState,
    failures: ChannelFailures,
    successes: int,
    inp: AnalysisInput,
    settings: AnalysisSettings,
    urgency: int,
    *,
    rank: int,
) -> Opportunity:
    attempts = failures.failures + successes
    advice = recommend(channel, failures, inp.details, settings, channels=inp.channels)
    reason = advice.reason + ("; channel closed" if channel.closed else "")
    unknown = inp.unknown_amount.get(channel.chan_id, 0)
    if unknown:  # their missed fee is unknown, not 0: say so beside the figures
        reason += f"; {_plural(unknown, 'failure')} with unknown amount"
    missed = failures.missed_dedup_msat
    return Opportunity(
        rank=rank,
        channel_id=channel.chan_id,
        peer_pubkey=channel.peer_pubkey,
        peer_alias=channel.peer_alias,
        failures=failures.failures,
        clusters=failures.clusters,
        successes=successes,
        failure_rate=failures.failures / attempts if attempts > 0 else 0.0,
        missed_msat=missed,
        missed_raw_msat=failures.missed_raw_msat,
        potential_monthly_msat=_monthly_msat(missed, inp.hours),
        urgency_score=urgency,
        confidence=confidence(failures.clusters, failures.incoming_channels),
        recommended_action=advice.action,
        reason=reason,
        estimated=False,
        by_class=dict(sorted(failures.by_class.items())),
        capacity_sat=channel.capacity_sat,
        local_balance_sat=channel.local_balance_sat,
        outbound_fee_ppm=channel.fee_rate_ppm,
        suggested_fee_ppm=advice.suggested_fee_ppm,
        suggested_amount_sat=advice.suggested_amount_sat,
        suggested_max_htlc_msat=advice.suggested_max_htlc_msat,
    )


def _excess_up(channel: ChannelState) -> int:
    """Sats to push out to reach a local ratio of 0.5, rounded up, floor 0."""
    total = channel.local_balance_sat + channel.remote_balance_sat
    return max(0, channel.local_balance_sat - total // 2)


def _inbound(
    channel: ChannelState,
    baseline: InboundBaseline,
    failures: ChannelFailures | None,
    successes: int,
    hours: int,
    settings: AnalysisSettings,
) -> Opportunity | None:
    """``rebalance_inbound`` (estimated), or None when the channel does not qualify."""
    ratio = channel.min_local_ratio
    baseline_hours = settings.baseline_days * 24
    if (
        channel.closed
        or ratio is None
        or ratio < settings.inbound_ratio
        or baseline.baseline_fees_msat <= 0
        or baseline_hours <= 0
    ):
        return None
    expected = baseline.baseline_fees_msat * hours // baseline_hours
    missed = max(0, expected - baseline.window_fees_msat)
    if missed < settings.min_missed_sats * MSAT_PER_SAT:
        return None
    push = _excess_up(channel)
    # the channel's own figures of the window (local failures below the thresholds)
    failed = failures.failures if failures is not None else 0
    attempts = failed + successes
    reason = (
        f"local ratio stayed ≥ {settings.inbound_ratio:.0%} (lowest {ratio:.0%}); inbound "
        f"forwards earned {_fmt_sats(baseline.baseline_fees_msat)} over "
        f"{settings.baseline_days} d before the window, pace {_fmt_sats(expected)} per "
        f"{hours} h, vs {_fmt_sats(baseline.window_fees_msat)} in the window; push out "
        f"{push:,} sats to reach 50%"
    )
    return Opportunity(
        rank=0,
        channel_id=channel.chan_id,
        peer_pubkey=channel.peer_pubkey,
        peer_alias=channel.peer_alias,
        failures=failed,
        clusters=failures.clusters if failures is not None else 0,
        successes=successes,
        failure_rate=failed / attempts if attempts > 0 else 0.0,
        missed_msat=missed,
        missed_raw_msat=missed,
        potential_monthly_msat=_monthly_msat(missed, hours),
        urgency_score=_urgency(missed, failed, successes),
        confidence=Confidence.LOW,
        recommended_action=Action.REBALANCE_INBOUND,
        reason=reason,
        estimated=True,
        by_class=dict(sorted(failures.by_class.items())) if failures is not None else {},
        capacity_sat=channel.capacity_sat,
        local_balance_sat=channel.local_balance_sat,
        outbound_fee_ppm=channel.fee_rate_ppm,
        suggested_amount_sat=push,
    )


def _rank_key_of(urgency: int, missed_msat: int, chan_id: int) -> tuple[int, int, int]:
    """Most urgent first, then the most missed, then by channel id."""
    return (-urgency, -missed_msat, chan_id)


def _rank_key(opportunity: Opportunity) -> tuple[int, int, int]:
    return _rank_key_of(opportunity.urgency_score, opportunity.missed_msat, opportunity.channel_id)


def rebalance_plan(
    opportunities: Sequence[Opportunity],
    channels: Mapping[int, ChannelState],
    settings: AnalysisSettings,
) -> tuple[RebalanceMove, ...]:
    """Fill ``rebalance_outbound`` targets, in rank order, from channels with excess local.

    Sources: open channels with a local ratio ≥ ``source_ratio`` or a
    ``rebalance_inbound`` opportunity, never a ``rebalance_outbound`` target.
    Each gives ``local − (local + remote) / 2`` (rounded down), largest giver
    first (then by channel id), until the target's suggested amount is met.
    ``max_cost_ppm`` = ⌊target ppm × max_cost_share⌋ (0 when the ppm is unknown).
    """
    ranks = [o.rank for o in opportunities]
    if all(a < b for a, b in pairwise(ranks)):  # as analyze hands them out: in rank order
        ranked: Sequence[Opportunity] = opportunities
    else:
        ranked = sorted(opportunities, key=lambda o: (o.rank, _rank_key(o)))
    targets = [
        o
        for o in ranked
        if o.recommended_action is Action.REBALANCE_OUTBOUND
        and o.channel_id in channels
        and not channels[o.channel_id].closed
        and (o.suggested_amount_sat or 0) > 0
    ]
    target_ids = {o.channel_id for o in ranked if o.recommended_action is Action.REBALANCE_OUTBOUND}
    inbound_ids = {o.channel_id for o in ranked if o.recommended_action is Action.REBALANCE_INBOUND}
    available: dict[int, int] = {}
    source_ratio = settings.source_ratio
    for chan_id, channel in channels.items():
        if channel.closed or chan_id in target_ids:
            continue
        # channel.local_ratio, inline: the plan looks at every channel (~1 000)
        local = channel.local_balance_sat
        total = local + channel.remote_balance_sat
        if chan_id in inbound_ids or (total and local / total >= source_ratio):
            # what it can give and stay at or above a local ratio of 0.5
            excess = local - _ceil_div(total, 2)
            if excess > 0:
                available[chan_id] = excess
    order = sorted(available, key=lambda chan_id: (-available[chan_id], chan_id))
    # the share as written (0.8, not 0.8000000000000000444) so the floor is the expected one
    share = Fraction(str(settings.max_cost_share))
    moves = []
    first = 0  # order[:first] have nothing left to give
    for target in targets:
        need = target.suggested_amount_sat or 0
        used: list[int] = []
        covered = 0
        for chan_id in order[first:] if first else order:
            if covered >= need:
                break
            give = min(available[chan_id], need - covered)
            if give <= 0:
                continue
            available[chan_id] -= give
            covered += give
            used.append(chan_id)
        while first < len(order) and available[order[first]] == 0:
            first += 1
        if covered == 0:
            continue
        ppm = target.outbound_fee_ppm
        max_cost = math.floor(ppm * share) if ppm is not None else 0
        moves.append(RebalanceMove(target.channel_id, tuple(used), covered, max_cost))
    return tuple(moves)


def reported(
    channels: Mapping[int, ChannelState],
    failures: Mapping[int, ChannelFailures],
    settings: AnalysisSettings,
) -> Iterator[tuple[ChannelState, ChannelFailures]]:
    """Our channels whose failures reach the reporting thresholds (DESIGN §5), in the order
    of ``failures``: each gets a regular opportunity, and :func:`recommend` speaks for it."""
    min_missed_msat = settings.min_missed_sats * MSAT_PER_SAT
    for chan_id, channel_failures in failures.items():
        channel = channels.get(chan_id)
        if channel is None:  # a foreign SCID: node totals only
            continue
        if (
            channel_failures.failures < settings.min_failure_count
            or channel_failures.missed_dedup_msat < min_missed_msat
        ):
            continue
        yield channel, channel_failures


def analyze(inp: AnalysisInput, settings: AnalysisSettings, generated_ns: int) -> AnalysisReport:
    """Rank the window's missed-revenue opportunities and plan the rebalances (DESIGN §5)."""
    if inp.hours <= 0:
        raise ValueError(f"analysis window of {inp.hours} h")
    # (rank key, the opportunity given its rank): regular ones are built once their rank
    # is known, their key comes from the same integers _regular uses
    found: list[tuple[tuple[int, int, int], Callable[..., Opportunity]]] = []
    for ours, failures in reported(inp.channels, inp.failures, settings):
        missed = failures.missed_dedup_msat
        successes = inp.successes.get(ours.chan_id, 0)
        urgency = _urgency(missed, failures.failures, successes)
        key = _rank_key_of(urgency, missed, ours.chan_id)
        found.append((key, partial(_regular, ours, failures, successes, inp, settings, urgency)))
    regular_ids = {key[2] for key, _ in found}
    for chan_id, baseline in inp.inbound.items():
        channel = inp.channels.get(chan_id)
        if channel is None or chan_id in regular_ids:
            continue
        estimate = _inbound(
            channel,
            baseline,
            inp.failures.get(chan_id),
            inp.successes.get(chan_id, 0),
            inp.hours,
            settings,
        )
        if estimate is not None:
            found.append((_rank_key(estimate), partial(replace, estimate)))
    found.sort(key=itemgetter(0))
    ranked = tuple(build(rank=i) for i, (_, build) in enumerate(found, start=1))
    return AnalysisReport(
        since_ns=inp.since_ns,
        until_ns=inp.until_ns,
        hours=inp.hours,
        generated_ns=generated_ns,
        opportunities=ranked,
        rebalance_plan=rebalance_plan(ranked, inp.channels, settings),
        gaps=inp.gaps,
        node_failures=inp.node_failures,
        node_missed_msat=inp.node_missed_msat,
        node_unknown_amount=sum(inp.unknown_amount.values()),
        node_rejected=inp.node_rejected,
        node_missed_raw_msat=inp.node_missed_raw_msat,
        observed_ns=inp.observed_ns,
    )


def _plural(n: int, word: str) -> str:
    return f"{n:,} {word}" if n == 1 else f"{n:,} {word}s"
