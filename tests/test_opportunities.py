from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import replace
from fractions import Fraction
from typing import Any

import pytest

from lnflow.analysis import (
    FailureClass,
    analyze,
    confidence,
    dominant_class,
    percentile,
    recommend,
    urgency_score,
)
from lnflow.analysis.model import (
    Action,
    AnalysisInput,
    AnalysisReport,
    AnalysisSettings,
    ChannelFailures,
    ChannelState,
    ClassStats,
    Confidence,
    FeePoint,
    Gap,
    InboundBaseline,
    RebalanceMove,
)

C = FailureClass
HOUR = 3_600 * 1_000_000_000
SINCE = 1_700_000_000 * 1_000_000_000
UNTIL = SINCE + 24 * HOUR
FIRST = SINCE + 8 * HOUR  # first failure of the window
LAST = SINCE + 20 * HOUR
GENERATED = UNTIL + 5_000_000

A = 810_000 << 40
B = 820_000 << 40
D = 830_000 << 40
FOREIGN = 999_999 << 40

SETTINGS = AnalysisSettings()


# --------------------------------------------------------------------------- factories


class Details:
    """FailureDetails backed by dicts."""

    def __init__(
        self,
        amounts: Mapping[tuple[int, FailureClass], Sequence[int]] | None = None,
        offers: Mapping[int, Sequence[tuple[int, int]]] | None = None,
        history: Mapping[int, Sequence[FeePoint]] | None = None,
    ) -> None:
        self.amounts = dict(amounts or {})
        self.offers = dict(offers or {})
        self.history = dict(history or {})
        self.calls = 0

    def amount_percentiles(
        self, chan_id: int, cls: FailureClass, percents: Sequence[int]
    ) -> Sequence[int]:
        self.calls += 1
        amounts = self.amounts.get((chan_id, cls), ())
        return tuple(percentile(amounts, p) for p in percents) if amounts else ()

    def fee_offers(self, chan_id: int) -> Sequence[tuple[int, int]]:
        self.calls += 1
        return self.offers.get(chan_id, ())

    def fee_history(self, chan_id: int) -> Sequence[FeePoint]:
        self.calls += 1
        return self.history.get(chan_id, ())


def channel(
    chan_id: int = A,
    *,
    capacity: int = 1_000_000,
    local: int = 100_000,
    remote: int | None = None,
    reserve: int = 10_000,
    fee_base: int | None = 1_000,
    fee_ppm: int | None = 500,
    max_htlc: int | None = 980_000_000,
    min_local_ratio: float | None = None,
    uptime: float | None = None,
    active: bool = True,
    closed: bool = False,
) -> ChannelState:
    return ChannelState(
        chan_id=chan_id,
        peer_pubkey=f"02{chan_id:064x}",
        peer_alias=f"peer-{chan_id >> 40}",
        capacity_sat=capacity,
        local_balance_sat=local,
        remote_balance_sat=capacity - local if remote is None else remote,
        local_reserve_sat=reserve,
        remote_reserve_sat=reserve,
        active=active,
        closed=closed,
        fee_base_msat=fee_base,
        fee_rate_ppm=fee_ppm,
        max_htlc_msat=max_htlc,
        min_local_ratio=min_local_ratio,
        uptime_ratio=uptime,
    )


def failures(
    chan_id: int = A,
    classes: Mapping[FailureClass, tuple[int, int]] | None = None,
    *,
    clusters: int | None = None,
    dedup: int | None = None,
    incoming: int = 3,
    first: int = FIRST,
    last: int = LAST,
) -> ChannelFailures:
    """``classes``: class → (failures, raw missed msat)."""
    by_class = {
        cls: ClassStats(n, missed)
        for cls, (n, missed) in (classes or {C.LIQUIDITY: (5, 500_000)}).items()
    }
    count = sum(s.failures for s in by_class.values())
    raw = sum(s.missed_msat for s in by_class.values())
    return ChannelFailures(
        chan_id=chan_id,
        failures=count,
        clusters=count if clusters is None else clusters,
        missed_raw_msat=raw,
        missed_dedup_msat=raw if dedup is None else dedup,
        incoming_channels=incoming,
        first_failure_ns=first,
        last_failure_ns=last,
        by_class=by_class,
    )


def make_input(
    channels: Sequence[ChannelState],
    fails: Sequence[ChannelFailures] = (),
    *,
    successes: Mapping[int, int] | None = None,
    inbound: Sequence[InboundBaseline] = (),
    details: Details | None = None,
    hours: int = 24,
    **extra: Any,
) -> AnalysisInput:
    return AnalysisInput(
        since_ns=SINCE,
        until_ns=SINCE + hours * HOUR,
        hours=hours,
        channels={c.chan_id: c for c in channels},
        failures={f.chan_id: f for f in fails},
        successes=dict(successes or {}),
        inbound={b.chan_id: b for b in inbound},
        details=details or Details(),
        **extra,
    )


def run(inp: AnalysisInput, settings: AnalysisSettings = SETTINGS) -> AnalysisReport:
    return analyze(inp, settings, GENERATED)


def sats(*values: int) -> list[int]:
    return [v * 1_000 for v in values]


def offer(ppm: int, amount_msat: int = 1_000_000_000, base: int = 1_000) -> tuple[int, int]:
    """A FEE_INSUFFICIENT failure whose sender offered ``ppm`` on top of our base fee."""
    return (base + ppm * amount_msat // 1_000_000, amount_msat)


def fee_points(*points: tuple[int, int]) -> tuple[FeePoint, ...]:
    return tuple(FeePoint(ts, 1_000, ppm) for ts, ppm in points)


# --------------------------------------------------------------------------- recommendation


LIQ = {C.LIQUIDITY: (5, 500_000)}
MAXH = {C.MAX_HTLC: (5, 500_000)}
FEE = {C.FEE: (5, 500_000)}
TEN = sats(*range(50_000, 550_000, 50_000))  # p50 250,000 sats, p90 450,000 sats

RECOMMEND_CASES: list[tuple[str, dict[str, Any], dict[C, tuple[int, int]], Details, Any]] = [
    # (id, channel kwargs, classes, details, (action, fee ppm, amount sat, max_htlc msat))
    (
        "liquidity-rebalance-to-half-capacity",
        {},
        LIQ,
        Details({(A, C.LIQUIDITY): TEN}),
        (Action.REBALANCE_OUTBOUND, None, 400_000, None),
    ),
    (
        "liquidity-rebalance-to-p90",
        {},
        LIQ,
        Details({(A, C.LIQUIDITY): [*TEN[:-2], 700_000_000, 800_000_000]}),
        (Action.REBALANCE_OUTBOUND, None, 600_000, None),
    ),
    (
        "liquidity-rebalance-rounds-msat-up",
        {},
        LIQ,
        Details({(A, C.LIQUIDITY): [600_000_001]}),
        (Action.REBALANCE_OUTBOUND, None, 500_001, None),
    ),
    (
        "liquidity-rebalance-floor-zero",
        {"local": 900_000},
        LIQ,
        Details({(A, C.LIQUIDITY): TEN}),
        (Action.REBALANCE_OUTBOUND, None, 0, None),
    ),
    (
        "liquidity-median-at-usable-rebalances",
        {},
        LIQ,
        Details({(A, C.LIQUIDITY): sats(500_000, 980_000, 990_000)}),
        (Action.REBALANCE_OUTBOUND, None, 890_000, None),
    ),
    (
        "liquidity-median-above-usable-increase-capacity",
        {},
        LIQ,
        Details({(A, C.LIQUIDITY): sats(1_500_000, 2_000_000, 2_500_000)}),
        (Action.INCREASE_CAPACITY, None, 2_500_000, None),
    ),
    (
        "liquidity-no-amounts-half-capacity",
        {},
        LIQ,
        Details(),
        (Action.REBALANCE_OUTBOUND, None, 400_000, None),
    ),
    (
        "max-htlc-raise-to-p90",
        {"max_htlc": 100_000_000},
        MAXH,
        Details({(A, C.MAX_HTLC): TEN}),
        (Action.RAISE_MAX_HTLC, None, None, 450_000_000),
    ),
    (
        "max-htlc-raise-capped-at-usable",
        {"max_htlc": 100_000_000},
        MAXH,
        Details({(A, C.MAX_HTLC): sats(1_500_000, 2_000_000)}),
        (Action.RAISE_MAX_HTLC, None, None, 980_000_000),
    ),
    (
        "max-htlc-at-usable-increase-capacity",
        {"max_htlc": 980_000_000},
        MAXH,
        Details({(A, C.MAX_HTLC): sats(1_500_000, 2_000_000)}),
        (Action.INCREASE_CAPACITY, None, 2_000_000, None),
    ),
    (
        "max-htlc-unknown-increase-capacity",
        {"max_htlc": None},
        MAXH,
        Details({(A, C.MAX_HTLC): [1_500_000_001]}),
        (Action.INCREASE_CAPACITY, None, 1_500_001, None),
    ),
    (
        "fee-lower-to-median-offer",
        {},
        FEE,
        Details(offers={A: [offer(300), offer(400), offer(450)]}),
        (Action.LOWER_FEES, 400, None, None),
    ),
    (
        "fee-lower-floor-seventy-percent-rounded-up",
        {"fee_ppm": 501},
        FEE,
        Details(offers={A: [offer(100), offer(100), offer(200)]}),
        (Action.LOWER_FEES, 351, None, None),
    ),
    (
        "fee-offers-below-base-floor-zero",
        {"fee_ppm": 100},
        FEE,
        Details(offers={A: [(500, 1_000_000_000), (900, 1_000_000_000)]}),
        (Action.LOWER_FEES, 70, None, None),
    ),
    (
        "fee-rise-inside-grace-investigate",
        {},
        FEE,
        Details(
            offers={A: [offer(300)]},
            history={A: fee_points((FIRST - 7 * HOUR, 100), (FIRST - 5 * HOUR, 500))},
        ),
        (Action.INVESTIGATE, None, None, None),
    ),
    (
        "fee-rise-at-grace-edge-investigate",
        {},
        FEE,
        Details(
            offers={A: [offer(300)]},
            history={A: fee_points((FIRST - 7 * HOUR, 100), (FIRST - 6 * HOUR, 500))},
        ),
        (Action.INVESTIGATE, None, None, None),
    ),
    (
        "fee-rise-during-failures-investigate",
        {},
        FEE,
        Details(
            offers={A: [offer(300)]}, history={A: fee_points((FIRST - 7 * HOUR, 100), (LAST, 500))}
        ),
        (Action.INVESTIGATE, None, None, None),
    ),
    (
        "fee-rise-before-grace-lower-fees",
        {},
        FEE,
        Details(
            offers={A: [offer(300)]},
            history={A: fee_points((FIRST - 7 * HOUR, 100), (FIRST - 6 * HOUR - 1, 500))},
        ),
        (Action.LOWER_FEES, 350, None, None),
    ),
    (
        "fee-rise-after-failures-lower-fees",
        {},
        FEE,
        Details(offers={A: [offer(300)]}, history={A: fee_points((FIRST, 100), (LAST + 1, 500))}),
        (Action.LOWER_FEES, 350, None, None),
    ),
    (
        "fee-decrease-lower-fees",
        {},
        FEE,
        Details(
            offers={A: [offer(450)]}, history={A: fee_points((FIRST - HOUR, 800), (FIRST, 500))}
        ),
        (Action.LOWER_FEES, 450, None, None),
    ),
    (
        "availability-investigate",
        {"uptime": 0.42, "active": False},
        {C.AVAILABILITY: (5, 500_000)},
        Details(),
        (Action.INVESTIGATE, None, None, None),
    ),
    (
        "policy-investigate",
        {},
        {C.POLICY: (5, 500_000), C.FEE: (1, 100_000)},
        Details(),
        (Action.INVESTIGATE, None, None, None),
    ),
    (
        "dominance-exactly-50-percent",
        {},
        {C.LIQUIDITY: (3, 5_000_000), C.FEE: (4, 3_000_000), C.OTHER: (4, 2_000_000)},
        Details({(A, C.LIQUIDITY): TEN}),
        (Action.REBALANCE_OUTBOUND, None, 400_000, None),
    ),
    (
        "dominance-49.99-percent",
        {},
        {C.LIQUIDITY: (3, 4_999_000), C.FEE: (4, 3_001_000), C.OTHER: (4, 2_000_000)},
        Details({(A, C.LIQUIDITY): TEN}),
        (Action.INVESTIGATE, None, None, None),
    ),
    (
        "dominance-by-failures-when-nothing-missed",
        {"fee_ppm": 1_000},
        {C.FEE: (4, 0), C.LIQUIDITY: (2, 0)},
        Details(),
        (Action.LOWER_FEES, 700, None, None),
    ),
    (
        "dominance-tie-lower-class-wins",
        {},
        {C.FEE: (3, 250_000), C.LIQUIDITY: (3, 250_000)},
        Details(),
        (Action.REBALANCE_OUTBOUND, None, 400_000, None),
    ),
]


@pytest.mark.parametrize(
    ("chan_kwargs", "classes", "details", "expected"),
    [case[1:] for case in RECOMMEND_CASES],
    ids=[case[0] for case in RECOMMEND_CASES],
)
def test_recommend(
    chan_kwargs: dict[str, Any],
    classes: dict[FailureClass, tuple[int, int]],
    details: Details,
    expected: tuple[Action, int | None, int | None, int | None],
) -> None:
    advice = recommend(channel(**chan_kwargs), failures(A, classes), details, SETTINGS)
    got = (
        advice.action,
        advice.suggested_fee_ppm,
        advice.suggested_amount_sat,
        advice.suggested_max_htlc_msat,
    )
    assert got == expected, advice.reason
    assert advice.reason and "\n" not in advice.reason


def test_lower_fees_min_fee_ppm_beats_low_median_and_floor() -> None:
    settings = replace(SETTINGS, min_fee_ppm=5)
    details = Details(offers={A: [offer(0), offer(1), offer(2)]})
    advice = recommend(channel(fee_ppm=1), failures(A, FEE), details, settings)
    assert (advice.action, advice.suggested_fee_ppm) == (Action.LOWER_FEES, 5)


@pytest.mark.parametrize(
    ("chan_kwargs", "classes", "details", "fragments"),
    [
        (
            {},
            {C.LIQUIDITY: (5, 1_234_000), C.FEE: (1, 266_000)},
            Details({(A, C.LIQUIDITY): TEN}),
            [
                "82% of missed fees (1,234 sats) were liquidity failures",
                "local balance 100,000 of 1,000,000 sats",
                "p90 failed amount 450,000 sats",
                "move in 400,000 sats",
            ],
        ),
        (
            {},
            FEE,
            Details(history={A: fee_points((FIRST - 7 * HOUR, 100), (FIRST - 5 * HOUR, 500))}),
            ["recent fee increase still propagating", "100 → 500 ppm"],
        ),
        (
            {},
            FEE,
            Details(offers={A: [offer(300)]}),
            ["median offered 300 ppm", "our 500 ppm", "lower to 350 ppm"],
        ),
        (
            {"uptime": 0.42, "active": False},
            {C.AVAILABILITY: (5, 500_500)},
            Details(),
            ["(500.5 sats)", "peer offline or channel disabled", "peer online 42%", "inactive"],
        ),
        (
            {},
            {C.LIQUIDITY: (3, 4_999_000), C.FEE: (4, 3_001_000), C.OTHER: (4, 2_000_000)},
            Details(),
            ["liquidity 49% (3 failures, 4,999 sats)", "fee 30%", "other 20%"],
        ),
    ],
    ids=["liquidity", "fee-propagating", "lower-fees", "availability", "class-mix"],
)
def test_reason_names_the_numbers(
    chan_kwargs: dict[str, Any],
    classes: dict[FailureClass, tuple[int, int]],
    details: Details,
    fragments: list[str],
) -> None:
    reason = recommend(channel(**chan_kwargs), failures(A, classes), details, SETTINGS).reason
    assert "\n" not in reason
    for fragment in fragments:
        assert fragment in reason


def test_details_asked_only_when_needed() -> None:
    details = Details()
    recommend(channel(), failures(A, {C.AVAILABILITY: (5, 500_000)}), details, SETTINGS)
    recommend(channel(), failures(A, {C.POLICY: (5, 500_000)}), details, SETTINGS)
    assert details.calls == 0


@pytest.mark.parametrize(
    ("by_class", "expected"),
    [
        ({}, None),
        ({C.FEE: ClassStats(0, 0)}, None),
        ({C.FEE: ClassStats(1, 300), C.LIQUIDITY: ClassStats(9, 200)}, C.FEE),
        ({C.FEE: ClassStats(2, 300), C.LIQUIDITY: ClassStats(1, 300)}, C.FEE),
        ({C.OTHER: ClassStats(2, 300), C.MAX_HTLC: ClassStats(2, 300)}, C.MAX_HTLC),
        ({C.POLICY: ClassStats(3, 0), C.FEE: ClassStats(2, 0)}, C.POLICY),
    ],
    ids=[
        "empty",
        "all-zero",
        "largest-missed",
        "missed-tie-more-failures",
        "full-tie-lower-class",
        "nothing-missed-more-failures",
    ],
)
def test_dominant_class(
    by_class: dict[FailureClass, ClassStats], expected: FailureClass | None
) -> None:
    assert dominant_class(by_class) == expected


# --------------------------------------------------------------------------- helpers


@pytest.mark.parametrize(
    ("missed_sats", "fails", "rate", "expected"),
    [
        (0, 0, 0, 0),
        (10_000, 0, 0, 40),
        (1_000_000, 0, 0, 40),
        (9_999, 0, 0, 40),  # 39.996 rounds up to the cap
        (0, 10, 0, 30),
        (0, 500, 0, 30),
        (0, 0, 1, 30),
        (1_000_000, 500, 1, 100),
        (125, 0, 0, 1),  # 0.5 → 1 (half up, not to even)
        (625, 0, 0, 3),  # 2.5 → 3
        (124.999, 0, 0, 0),
        (0, 2, Fraction(1, 60), 7),  # 6 + 0.5 exactly
        (250, 4, Fraction(1, 60), 14),  # 1 + 12 + 0.5
        (1_234.56, 15, Fraction(15, 20), 57),  # 4.938 + 30 + 22.5
    ],
    ids=[
        "zero",
        "revenue-cap",
        "revenue-saturated",
        "revenue-below-cap",
        "frequency-cap",
        "frequency-saturated",
        "rate-full",
        "total-100",
        "half-up-0.5",
        "half-up-2.5",
        "below-half",
        "rate-tie-exact",
        "all-three-tie-exact",
        "seed-like",
    ],
)
def test_urgency_score(
    missed_sats: float, fails: int, rate: float | Fraction, expected: int
) -> None:
    assert urgency_score(missed_sats, fails, rate) == expected


@pytest.mark.parametrize(
    ("values", "p", "expected"),
    [
        ([7], 50, 7),
        ([7], 90, 7),
        (list(range(1, 11)), 90, 9),
        (list(range(1, 11)), 91, 10),
        ([1, 2, 3, 4], 50, 2),
        ([4, 1, 3, 2], 50, 2),
        ([5, 1, 3], 50, 3),
        ([5, 1, 3], 100, 5),
        ([5, 1, 3], 0, 1),
        ([2, 2, 9, 9], 75, 9),
    ],
    ids=[
        "n1-p50",
        "n1-p90",
        "n10-p90",
        "n10-p91",
        "even-median-lower-middle",
        "unsorted",
        "odd-median",
        "p100-max",
        "p0-min",
        "duplicates",
    ],
)
def test_percentile(values: list[int], p: float, expected: int) -> None:
    assert percentile(values, p) == expected


@pytest.mark.parametrize(
    ("values", "p"), [([], 50), ([1], 101), ([1], -1)], ids=["empty", "over", "under"]
)
def test_percentile_rejects(values: list[int], p: float) -> None:
    with pytest.raises(ValueError):
        percentile(values, p)


@pytest.mark.parametrize(
    ("clusters", "incoming", "expected"),
    [
        (0, 0, Confidence.LOW),
        (2, 5, Confidence.LOW),
        (3, 1, Confidence.LOW),
        (50, 1, Confidence.LOW),
        (3, 2, Confidence.MEDIUM),
        (9, 3, Confidence.MEDIUM),
        (10, 2, Confidence.MEDIUM),
        (10, 3, Confidence.HIGH),
    ],
    ids=[
        "nothing",
        "two-clusters",
        "one-incoming",
        "many-clusters-one-incoming",
        "medium-floor",
        "nine-clusters",
        "two-incoming",
        "high-floor",
    ],
)
def test_confidence(clusters: int, incoming: int, expected: Confidence) -> None:
    assert confidence(clusters, incoming) is expected


# --------------------------------------------------------------------------- analyze


@pytest.mark.parametrize(
    ("count", "raw", "dedup", "reported"),
    [
        (2, 500_000, 500_000, False),
        (3, 500_000, 500_000, True),
        (3, 99_999, 99_999, False),
        (3, 100_000, 100_000, True),
        (3, 500_000, 99_999, False),
    ],
    ids=[
        "two-failures",
        "three-failures",
        "99.999-sats",
        "100-sats",
        "dedup-drives-not-raw",
    ],
)
def test_reporting_thresholds(count: int, raw: int, dedup: int, reported: bool) -> None:
    inp = make_input([channel()], [failures(A, {C.LIQUIDITY: (count, raw)}, dedup=dedup)])
    assert [o.channel_id for o in run(inp).opportunities] == ([A] if reported else [])


def test_opportunity_figures() -> None:
    fails = failures(A, {C.LIQUIDITY: (12, 3_000_000), C.FEE: (3, 500_000)}, dedup=2_000_000)
    inp = make_input(
        [channel()],
        [replace(fails, clusters=10, incoming_channels=4)],
        successes={A: 5},
        details=Details({(A, C.LIQUIDITY): TEN}),
    )
    (opp,) = run(inp).opportunities
    assert opp.rank == 1
    assert (opp.failures, opp.clusters, opp.successes) == (15, 10, 5)
    assert opp.failure_rate == 0.75
    assert (opp.missed_msat, opp.missed_raw_msat) == (2_000_000, 3_500_000)
    assert opp.missed_sats == 2_000.0
    assert opp.potential_monthly_msat == 60_000_000
    # 2,000 sats → 8, 15 failures → 30, 0.75 × 30 = 22.5: 60.5 → 61
    assert opp.urgency_score == 61
    assert opp.confidence is Confidence.HIGH
    assert opp.recommended_action is Action.REBALANCE_OUTBOUND
    assert opp.suggested_amount_sat == 400_000
    assert not opp.estimated
    assert opp.by_class == {C.LIQUIDITY: ClassStats(12, 3_000_000), C.FEE: ClassStats(3, 500_000)}
    assert (opp.capacity_sat, opp.local_balance_sat, opp.outbound_fee_ppm) == (
        1_000_000,
        100_000,
        500,
    )


def test_urgency_rate_tie_rounds_half_up_in_analyze() -> None:
    # 1 (250 sats) + 12 (4 failures) + 30 × 4/240 = 13.5 → 14
    inp = make_input([channel()], [failures(A, {C.LIQUIDITY: (4, 250_000)})], successes={A: 236})
    assert run(inp).opportunities[0].urgency_score == 14


@pytest.mark.parametrize(
    ("missed", "hours", "monthly"),
    [
        (100_000, 24, 3_000_000),
        (100_001, 1_440, 50_001),
        (100_003, 1_440, 50_002),
        (100_000, 7, 10_285_714),
    ],
    ids=["exact", "half-rounds-up", "above-half", "below-half"],
)
def test_potential_monthly(missed: int, hours: int, monthly: int) -> None:
    inp = make_input([channel()], [failures(A, {C.LIQUIDITY: (3, missed)})], hours=hours)
    assert run(inp).opportunities[0].potential_monthly_msat == monthly


def test_no_attempts_failure_rate_zero() -> None:
    inp = make_input([channel()], [failures(A, {C.LIQUIDITY: (3, 0)})])
    (opp,) = run(inp, replace(SETTINGS, min_missed_sats=0)).opportunities
    assert opp.failure_rate == 3 / 3
    zero = make_input([channel()], [failures(A, {C.LIQUIDITY: (0, 0)})])
    (opp,) = run(zero, replace(SETTINGS, min_missed_sats=0, min_failure_count=0)).opportunities
    assert (opp.failure_rate, opp.urgency_score) == (0.0, 0)


def test_ranking_urgency_then_missed_then_channel() -> None:
    # 20,000 and 15,000 sats both saturate the revenue score: urgency ties at 40 + 30 + 0
    fails = [
        failures(A, {C.LIQUIDITY: (10, 15_000_000)}),
        failures(B, {C.LIQUIDITY: (10, 20_000_000)}),
        failures(D, {C.LIQUIDITY: (10, 20_000_000)}),
        failures(FOREIGN - 1, {C.LIQUIDITY: (3, 200_000)}),
    ]
    chans = [channel(A), channel(B), channel(D), channel(FOREIGN - 1)]
    successes = {A: 10_000, B: 10_000, D: 10_000}
    report = run(make_input(chans, fails, successes=successes))
    assert [(o.rank, o.channel_id) for o in report.opportunities] == [
        (1, B),
        (2, D),
        (3, A),
        (4, FOREIGN - 1),
    ]
    assert [o.urgency_score for o in report.opportunities][:3] == [70, 70, 70]


def test_report_carries_window_and_node_totals() -> None:
    gaps = (Gap(SINCE + HOUR, SINCE + 2 * HOUR), Gap(UNTIL - HOUR, None))
    inp = make_input(
        [channel(A)],
        [failures(A), failures(FOREIGN, {C.AVAILABILITY: (40, 9_000_000)})],
        gaps=gaps,
        node_failures=45,
        node_missed_msat=9_500_000,
    )
    report = run(inp)
    assert [o.channel_id for o in report.opportunities] == [A]  # the foreign SCID is not ours
    assert (report.since_ns, report.until_ns, report.hours) == (SINCE, UNTIL, 24)
    assert report.generated_ns == GENERATED
    assert report.gaps == gaps
    assert (report.node_failures, report.node_missed_msat) == (45, 9_500_000)


def test_failures_with_unknown_amount_are_named_and_counted() -> None:
    # lnd gives mailbox add failures and malformed onions no amount: their missed fee is
    # unknown, so the reason says how many of the figures it could not count
    inp = make_input(
        [channel(A), channel(B)],
        [failures(A, {C.LIQUIDITY: (12, 900_000)}), failures(B)],
        node_failures=17,
        unknown_amount={A: 7, 0: 2},
        node_rejected=4,
    )
    report = run(inp)
    reasons = {o.channel_id: o.reason for o in report.opportunities}
    assert reasons[A].endswith("; 7 failures with unknown amount")
    assert "unknown amount" not in reasons[B]
    assert (report.node_unknown_amount, report.node_rejected) == (9, 4)


def test_rejects_empty_window() -> None:
    with pytest.raises(ValueError):
        run(make_input([channel()], hours=0))


# --------------------------------------------------------------------------- rebalance_inbound

BASELINE_PER_HOUR = 10_000  # msat, 14 days → 3,360,000 msat


def full(chan_id: int = A, ratio: float | None = 0.95, **kwargs: Any) -> ChannelState:
    return channel(chan_id, local=950_000, min_local_ratio=ratio, **kwargs)


@pytest.mark.parametrize(
    ("chan", "baseline", "window", "settings", "missed"),
    [
        (full(), 3_360_000, 40_000, SETTINGS, 200_000),
        (full(ratio=0.9), 3_360_000, 40_000, SETTINGS, 200_000),
        (full(), 1_000_000, 0, replace(SETTINGS, min_missed_sats=0), 71_428),
        (full(), 3_360_000, 500_000, replace(SETTINGS, min_missed_sats=0), 0),
        (full(), 3_360_000, 140_001, SETTINGS, None),
        (full(), 3_360_000, 140_000, SETTINGS, 100_000),
        (full(ratio=0.89), 3_360_000, 0, SETTINGS, None),
        (full(ratio=None), 3_360_000, 0, SETTINGS, None),
        (full(), 0, 0, replace(SETTINGS, min_missed_sats=0), None),
        (full(closed=True), 3_360_000, 0, SETTINGS, None),
    ],
    ids=[
        "estimate",
        "ratio-at-threshold",
        "pace-rounds-down",
        "floor-zero",
        "under-min-missed",
        "at-min-missed",
        "ratio-below-threshold",
        "no-sample",
        "no-baseline-fees",
        "closed",
    ],
)
def test_rebalance_inbound(
    chan: ChannelState,
    baseline: int,
    window: int,
    settings: AnalysisSettings,
    missed: int | None,
) -> None:
    inp = make_input([chan], inbound=[InboundBaseline(A, baseline, window)], successes={A: 4})
    opportunities = run(inp, settings).opportunities
    if missed is None:
        assert opportunities == ()
        return
    (opp,) = opportunities
    assert opp.recommended_action is Action.REBALANCE_INBOUND
    assert opp.estimated
    assert (opp.missed_msat, opp.missed_raw_msat) == (missed, missed)
    assert (opp.failures, opp.clusters, opp.successes, opp.failure_rate) == (0, 0, 4, 0.0)
    assert opp.confidence is Confidence.LOW
    assert opp.urgency_score == urgency_score(Fraction(missed, 1000), 0, 0)
    assert opp.suggested_amount_sat == 450_000  # 950,000 − 1,000,000 / 2
    assert opp.by_class == {}
    assert "\n" not in opp.reason


def test_rebalance_inbound_push_rounds_up() -> None:
    chan = channel(A, capacity=1_000_001, local=950_000, min_local_ratio=0.95)
    inp = make_input([chan], inbound=[InboundBaseline(A, 3_360_000, 0)])
    # 950,000 − 1,000,001 / 2 = 449,999.5, rounded up
    assert run(inp).opportunities[0].suggested_amount_sat == 450_000


def test_regular_opportunity_wins_over_inbound_estimate() -> None:
    inp = make_input(
        [full()],
        [failures(A, {C.FEE: (5, 300_000)})],
        inbound=[InboundBaseline(A, 3_360_000, 0)],
        details=Details(offers={A: [offer(300)]}),
    )
    (opp,) = run(inp).opportunities
    assert (opp.recommended_action, opp.estimated) == (Action.LOWER_FEES, False)


def test_inbound_estimate_when_failures_are_under_threshold() -> None:
    inp = make_input(
        [full()],
        [failures(A, {C.FEE: (1, 300_000)})],
        inbound=[InboundBaseline(A, 3_360_000, 0)],
    )
    (opp,) = run(inp).opportunities
    assert (opp.recommended_action, opp.estimated) == (Action.REBALANCE_INBOUND, True)


# --------------------------------------------------------------------------- rebalance plan


T1 = (840_000 << 40) + 1
T2 = (840_000 << 40) + 2
S1 = 850_001 << 40
S2 = 850_002 << 40
S3 = 850_003 << 40


def depleted(chan_id: int, fee_ppm: int, local: int = 100_000) -> ChannelState:
    return channel(chan_id, local=local, fee_ppm=fee_ppm)


# T1 outranks T2 (more failures). T1 needs 400,000 sats (half the capacity − 100,000);
# T2's p90 failed amount is 900,000 sats, so it needs 900,000 − its local balance.
PLAN_FAILURES = (
    failures(T1, {C.LIQUIDITY: (10, 900_000)}),
    failures(T2, {C.LIQUIDITY: (5, 900_000)}),
)
PLAN_DETAILS = Details({(T1, C.LIQUIDITY): sats(10_000), (T2, C.LIQUIDITY): sats(900_000)})


@pytest.mark.parametrize(
    ("channels_", "inbound", "share", "expected"),
    [
        (
            [depleted(T1, 501), depleted(T2, 1_000), channel(S1, local=850_000)],
            [],
            0.8,
            [RebalanceMove(T1, (S1,), 350_000, 400)],
        ),
        (
            [
                depleted(T1, 501),
                depleted(T2, 1_000),
                channel(S1, local=850_000),
                channel(S2, local=799_999),
                channel(S3, local=990_000, min_local_ratio=0.95),
            ],
            [InboundBaseline(S3, 3_360_000, 0)],
            0.8,
            [RebalanceMove(T1, (S3,), 400_000, 400), RebalanceMove(T2, (S3, S1), 440_000, 800)],
        ),
        (
            [
                depleted(T1, 1_000),
                channel(S1, local=850_000),
                channel(S3, local=790_000, min_local_ratio=0.9),
            ],
            [InboundBaseline(S3, 3_360_000, 0)],
            0.7,
            [RebalanceMove(T1, (S1, S3), 400_000, 700)],
        ),
        (
            [depleted(T1, 500), channel(S1, local=850_000, closed=True)],
            [],
            0.8,
            [],
        ),
        (
            [depleted(T1, 500), depleted(T2, 500, local=820_000)],
            [],
            0.8,
            [],
        ),
        (
            [depleted(T1, 500, local=600_000), channel(S1, local=850_000)],
            [],
            0.8,
            [],
        ),
    ],
    ids=[
        "sources-at-0.8-partial-cover",
        "largest-source-first-in-rank-order",
        "inbound-opportunity-is-a-source-exact-share",
        "closed-source-skipped",
        "target-never-a-source",
        "target-needs-nothing",
    ],
)
def test_rebalance_plan(
    channels_: list[ChannelState],
    inbound: list[InboundBaseline],
    share: float,
    expected: list[RebalanceMove],
) -> None:
    inp = make_input(channels_, PLAN_FAILURES, inbound=inbound, details=PLAN_DETAILS)
    report = run(inp, replace(SETTINGS, max_cost_share=share))
    assert list(report.rebalance_plan) == expected
    for move in report.rebalance_plan:
        assert move.target_channel_id not in move.source_channel_ids
