"""plan() and decide(): the analysis around the store's one fetch, on literal records."""

from __future__ import annotations

from dataclasses import replace

import pytest

from lnflow.analysis import FailureClass, decide, plan
from lnflow.analysis.model import (
    Action,
    AmountRequest,
    AnalysisSettings,
    AnalysisSummary,
    ChannelFailures,
    ChannelState,
    ClassStats,
    DetailFacts,
    DetailRequest,
    FeePoint,
)

C = FailureClass
HOUR = 3_600 * 1_000_000_000
SINCE = 1_700_000_000 * 1_000_000_000
UNTIL = SINCE + 24 * HOUR
CHAN = 810_000 << 40
OTHER = 820_000 << 40
FOREIGN = 999_999 << 40
SETTINGS = AnalysisSettings()  # 3 failures, 100 sats, 6 h gossip grace


def channel(chan_id: int = CHAN, **kw: object) -> ChannelState:
    base: dict[str, object] = {
        "chan_id": chan_id,
        "peer_pubkey": "02" + "ab" * 32,
        "peer_alias": "peer",
        "capacity_sat": 2_000_000,
        "local_balance_sat": 100_000,
        "remote_balance_sat": 1_880_000,
        "local_reserve_sat": 10_000,
        "remote_reserve_sat": 10_000,
        "active": True,
        "closed": False,
        "fee_base_msat": 1_000,
        "fee_rate_ppm": 500,
        "max_htlc_msat": 1_000_000_000,
        "min_local_ratio": None,
    }
    return ChannelState(**(base | kw))  # type: ignore[arg-type]


def failures(
    by_class: dict[FailureClass, ClassStats], chan_id: int = CHAN, clusters: int = 5
) -> ChannelFailures:
    return ChannelFailures(
        chan_id=chan_id,
        failures=sum(s.failures for s in by_class.values()),
        clusters=clusters,
        missed_raw_msat=sum(s.missed_msat for s in by_class.values()),
        missed_dedup_msat=sum(s.missed_msat for s in by_class.values()),
        incoming_channels=3,
        first_failure_ns=SINCE + 8 * HOUR,
        last_failure_ns=SINCE + 20 * HOUR,
        by_class=by_class,
    )


def summary(*found: ChannelFailures, chans: tuple[int, ...] = (CHAN, OTHER)) -> AnalysisSummary:
    return AnalysisSummary(
        since_ns=SINCE,
        until_ns=UNTIL,
        hours=24,
        channels={c: channel(c) for c in chans},
        failures={f.chan_id: f for f in found},
        successes={},
        inbound={},
    )


MISSED = 500_000  # msat: above the 100 sats threshold


@pytest.mark.parametrize(
    ("found", "amounts", "fee_channels"),
    [
        ([failures({C.LIQUIDITY: ClassStats(5, MISSED)})], [(CHAN, C.LIQUIDITY, (50, 90), 5)], []),
        ([failures({C.MAX_HTLC: ClassStats(4, MISSED)})], [(CHAN, C.MAX_HTLC, (90,), 4)], []),
        ([failures({C.FEE: ClassStats(6, MISSED)})], [], [CHAN]),
        # exactly 50 % decides; below it, nothing is fetched (the class mix is reported)
        (
            [failures({C.MAX_HTLC: ClassStats(3, MISSED), C.FEE: ClassStats(3, MISSED)})],
            [(CHAN, C.MAX_HTLC, (90,), 3)],
            [],
        ),
        (
            [
                failures(
                    {
                        C.LIQUIDITY: ClassStats(2, MISSED),
                        C.FEE: ClassStats(2, MISSED - 1),
                        C.POLICY: ClassStats(2, MISSED - 1),
                    }
                )
            ],
            [],
            [],
        ),
        ([failures({C.AVAILABILITY: ClassStats(5, MISSED)})], [], []),
        ([failures({C.LIQUIDITY: ClassStats(2, MISSED)})], [], []),  # too few failures
        ([failures({C.LIQUIDITY: ClassStats(5, 99_999)})], [], []),  # too little missed
        ([failures({C.LIQUIDITY: ClassStats(5, MISSED)}, chan_id=FOREIGN)], [], []),
        (
            [
                failures({C.FEE: ClassStats(9, MISSED)}),
                failures({C.LIQUIDITY: ClassStats(3, MISSED)}, chan_id=OTHER),
            ],
            [(OTHER, C.LIQUIDITY, (50, 90), 3)],
            [CHAN],
        ),
    ],
    ids=[
        "liquidity",
        "max-htlc",
        "fee",
        "half-decides",
        "no-class-reaches-half",
        "availability-needs-nothing",
        "below-failures",
        "below-missed",
        "foreign",
        "two-channels",
    ],
)
def test_plan_asks_for_what_the_deciding_class_uses(
    found: list[ChannelFailures],
    amounts: list[tuple[int, FailureClass, tuple[int, ...], int]],
    fee_channels: list[int],
) -> None:
    assert plan(summary(*found), SETTINGS) == DetailRequest(
        since_ns=SINCE,
        until_ns=UNTIL,
        history_from_ns=SINCE - 6 * HOUR,
        amounts=tuple(AmountRequest(*a) for a in amounts),
        fee_channels=tuple(fee_channels),
    )


def test_decide_recommends_from_the_fetched_percentiles() -> None:
    window = summary(failures({C.LIQUIDITY: ClassStats(5, MISSED)}))
    facts = DetailFacts(percentiles={(CHAN, C.LIQUIDITY): {50: 300_000_000, 90: 1_500_000_000}})
    report = decide(window, facts, SETTINGS, UNTIL + 5)
    (opportunity,) = report.opportunities
    assert opportunity.recommended_action is Action.REBALANCE_OUTBOUND
    # max(p90 1 500 000 sat, capacity / 2) − local 100 000
    assert opportunity.suggested_amount_sat == 1_400_000
    assert report.generated_ns == UNTIL + 5
    # a median above the usable capacity: open a channel of the p90
    bigger = DetailFacts(percentiles={(CHAN, C.LIQUIDITY): {50: 2_000_000_000, 90: 3_000_000_001}})
    (opportunity,) = decide(window, bigger, SETTINGS, UNTIL).opportunities
    assert (opportunity.recommended_action, opportunity.suggested_amount_sat) == (
        Action.INCREASE_CAPACITY,
        3_000_001,
    )
    # no amount known: half the capacity
    (opportunity,) = decide(
        window, DetailFacts(percentiles={(CHAN, C.LIQUIDITY): {}}), SETTINGS, UNTIL
    ).opportunities
    assert opportunity.suggested_amount_sat == 1_000_000 - 100_000


def test_decide_reads_fee_history_and_offers_from_the_facts() -> None:
    window = summary(failures({C.FEE: ClassStats(6, MISSED)}))
    offers = ((600, 1_000_000, 0), (700, 1_000_000, 0), (800, 1_000_000, 0))
    steady = DetailFacts(
        offers={CHAN: offers}, fee_histories={CHAN: (FeePoint(SINCE - 7 * HOUR, 1_000, 500),)}
    )
    (opportunity,) = decide(window, steady, SETTINGS, UNTIL).opportunities
    # median offered: (700 − 1 000 base) floors at 0 ppm; ⌈0.7 × 500⌉ = 350 wins
    assert (opportunity.recommended_action, opportunity.suggested_fee_ppm) == (
        Action.LOWER_FEES,
        350,
    )
    risen = replace(
        steady,
        fee_histories={
            CHAN: (FeePoint(SINCE - 7 * HOUR, 1_000, 100), FeePoint(SINCE + 4 * HOUR, 1_000, 500))
        },
    )
    (opportunity,) = decide(window, risen, SETTINGS, UNTIL).opportunities
    assert opportunity.recommended_action is Action.INVESTIGATE
    assert "100 → 500 ppm" in opportunity.reason


def test_decide_on_facts_the_plan_did_not_ask_for_is_a_bug() -> None:
    window = summary(failures({C.MAX_HTLC: ClassStats(4, MISSED)}))
    with pytest.raises(KeyError):
        decide(window, DetailFacts(), SETTINGS, UNTIL)
